"""A real Slurm 22.05 cluster on this one machine, for the launcher's tests and for trying things.

    python -m tools.local_slurm up [--dir DIR] [--nodes 4] [--cpus 2] [--mem-mb 4000] [--vendor DIR]
    python -m tools.local_slurm down [--dir DIR] [--purge]
    python -m tools.local_slurm status [--dir DIR] [--json]
    python -m tools.local_slurm image [--dir DIR]

`up` (as root) installs the Debian packages if they are missing, then starts munge, a private
MariaDB with slurmdbd (submitit reads job states through sacct), slurmctld and N slurmd daemons
that pose as nodes node1..nodeN. Partitions: `debug` (default, preemptable: PreemptMode=REQUEUE,
GraceTime=20 s) and `high` (PriorityTier 10, preempts debug). Requeued jobs restart within
seconds (cred_expire=10, KillWait=5). It is idempotent: what already runs is left alone.

Every slurmd runs in a mount namespace of its own, so that `srun --mpi=pmix` works across the
nodes of this one host. Where the vendored enroot and pyxis sources are found (`--vendor`, by
default ../shared/vendor beside the checkout), `up` also builds and enables Pyxis
(tools.local_slurm.pyxis) and writes the containers' image (tools.local_slurm.image); a slurmd
started before that setup, or outside its namespace, is restarted. Without the sources the
cluster runs without containers, and `up` says so.

`up` also restores a node that was killed (the fault tests kill a slurmd to lose a node): it
restarts every slurmd that is not running and resumes nodes left DOWN or DRAINED.

`up` records what it started in DIR/state.json (layout, ports, each daemon's PID and start time,
rewritten atomically after every start), and `down` and `status` read it: `down` stops exactly
those processes, whatever flags `up` had. `--dir` is the one way to use another directory than
DEFAULT_DIR. Clients find the cluster through SLURM_CONF=DIR/etc/slurm.conf; `up` also links
/etc/slurm/slurm.conf to it when that path is free, so plain `sbatch` works, and `down` removes
only its own link.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import pyxis
from .daemons import (Cluster, ClusterError, port_open, succeeds, install_packages, installed_package, say,
                      start_daemon, stop_daemon, wait_until, write_if_changed)
from .image import build_image, link_host_paths
from .pyxis import PyxisError
from .slurm_conf import DB_NAME, DB_PASS, DB_USER, PROG, Layout, slurm_conf, slurmdbd_conf

# The one place that names the default cluster directory; tests import it, benches ask `status --json`.
DEFAULT_DIR = Path("/tmp/effnet-local-slurm")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server", pyxis.PMIX_PACKAGE)


def link_system_conf(layout: Layout) -> None:
    """Point /etc/slurm/slurm.conf at ours when it is free (or already ours)."""
    if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == layout.conf.resolve():
        return
    if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        say(f"{SYSTEM_CONF} exists and is not ours: use SLURM_CONF={layout.conf}")
        return
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.symlink_to(layout.conf)


def unlink_system_conf(layout: Layout) -> None:
    if SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(layout.conf):
        SYSTEM_CONF.unlink()


# ------------------------------------------------------------------ daemons


def start_munge(cluster: Cluster) -> None:
    if succeeds(["sh", "-c", "munge -n | unmunge"], cluster):
        return  # a munged already answers on the default socket: share it (slurmdbd needs the default one)
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        subprocess.run(["/usr/sbin/mungekey", "--create"], check=True)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    run_dir.chmod(0o755)
    start_daemon(cluster, "munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                                     "/usr/sbin/munged", "-F"])
    wait_until("munged", lambda: succeeds(["sh", "-c", "munge -n | unmunge"], cluster), 20, cluster)


def start_database(cluster: Cluster) -> None:
    layout = cluster.layout
    datadir, run, ports = layout.dir / "db", layout.dir / "run", layout.ports
    if not (datadir / "mysql").is_dir():
        subprocess.run(["mariadb-install-db", "--user=root", f"--datadir={datadir}",
                        "--auth-root-authentication-method=socket", "--skip-test-db"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start_daemon(cluster, "mariadb", [
        "/usr/sbin/mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}", f"--socket={layout.db_socket}",
        f"--port={ports['mariadb']}", "--bind-address=127.0.0.1", f"--pid-file={run / 'mariadb.pidfile'}",
        f"--log-error={layout.dir / 'log' / 'mariadb.err'}", "--skip-log-bin", "--innodb-buffer-pool-size=64M"])
    sql = ["mariadb", f"--socket={layout.db_socket}"]
    wait_until("mariadb", lambda: succeeds([*sql, "-e", "select 1"], cluster), 60, cluster)
    grant = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASS}'; "
             f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;")
    subprocess.run([*sql, "-e", grant], check=True)
    write_if_changed(layout.dbd_conf, slurmdbd_conf(layout), 0o600)
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
    start_daemon(cluster, "slurmdbd", ["/usr/sbin/slurmdbd", "-D"])
    wait_until(f"slurmdbd on port {ports['slurmdbd']}", lambda: port_open(ports["slurmdbd"]), 120, cluster)


def _nodes_ready(cluster: Cluster) -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=cluster.env(), capture_output=True, text=True)
    states = out.stdout.split()
    return out.returncode == 0 and len(states) >= cluster.layout.nodes and all(
        s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states)


def resume_nodes(cluster: Cluster) -> None:
    """Nodes left down or drained whose slurmd runs again go back into service."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=cluster.env(), capture_output=True, text=True)
    # One line per node and partition: dict() keeps one per node.
    for name, state in dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2).items():
        if state.rstrip("*~#$@+") in ("down", "drained", "draining", "fail", "failing") and \
                cluster.running(f"slurmd-{name}"):
            succeeds(["scontrol", "update", f"NodeName={name}", "State=RESUME"], cluster)
            say(f"resumed {name} (was {state})")


def plan(directory: Path, sizes: dict[str, int | None]) -> Cluster:
    """The recorded cluster while any of it runs (flags given must match it), else a new one."""
    recorded = Cluster.load(directory)
    if recorded and any(recorded.running(name) for name in recorded.daemons):
        wanted = Layout(directory, **{k: v or getattr(recorded.layout, k) for k, v in sizes.items()})
        if wanted != recorded.layout:
            raise ClusterError(f"already up with {recorded.layout.describe()}; run down first to change it")
        return recorded
    return Cluster(Layout(directory, **{k: v for k, v in sizes.items() if v}))


def enable_pyxis(cluster: Cluster, vendor_dir: Path) -> None:
    """Build (or reuse) and configure enroot and pyxis when their sources are there; say so when not."""
    vendor = pyxis.vendored(vendor_dir)
    cluster.pyxis = vendor is not None
    if vendor is None:
        cluster.layout.plugstack.unlink(missing_ok=True)  # Slurm reads the plugstack.conf beside slurm.conf
        say(f"Pyxis unavailable: no vendored enroot and pyxis sources in {vendor_dir} (--vendor DIR); "
            "the cluster runs without containers")
        return
    install_packages(pyxis.BUILD_PACKAGES)
    if pyxis.installed():
        say(f"enroot and pyxis already built from {vendor}")
    else:
        started = time.monotonic()
        pyxis.build_and_install(vendor, cluster.layout)
        say(f"built enroot 4.1.2 and pyxis 0.24.0 from {vendor} in {time.monotonic() - started:.1f} s")
    write_if_changed(pyxis.ENROOT_CONF, pyxis.enroot_conf())
    pyxis.install_hook(vendor)
    write_if_changed(cluster.layout.plugstack, pyxis.plugstack_conf())
    if build_image(cluster.layout.image):
        say(f"wrote the container image {cluster.layout.image}")
    link_host_paths(cluster.layout.dir)


def start_slurmd(cluster: Cluster, node: str) -> None:
    """slurmd in its own mount namespace; one started with another setup, or outside a namespace, is restarted."""
    name, setup = f"slurmd-{node}", {"namespace": True, "pyxis": cluster.pyxis,
                                     "pmix": installed_package(pyxis.PMIX_PACKAGE)}
    if cluster.running(name) and (cluster.daemons[name].get("setup") != setup
                                  or not pyxis.own_namespace(cluster.daemons[name]["pid"])):
        say(f"{name} was started with another setup: restarting it with {setup}")
        stop_daemon(cluster, name)
    pyxis.prepare_node(cluster.layout, node)
    argv = ["/usr/sbin/slurmd", "-D", "-N", node, "-f", str(cluster.layout.conf)]
    start_daemon(cluster, name, pyxis.in_namespace(cluster.layout, node, argv), setup=setup)


def check_pyxis(cluster: Cluster) -> None:
    out = subprocess.run(["srun", "--help"], env=cluster.env(), capture_output=True, text=True)
    if "--container-image" not in out.stdout:
        raise ClusterError(f"Pyxis is configured ({cluster.layout.plugstack}) but `srun --help` does not list "
                           f"--container-image: {out.stderr.strip()[-300:]}")


def up(cluster: Cluster, vendor_dir: Path = pyxis.DEFAULT_VENDOR) -> None:
    if os.geteuid() != 0:
        raise ClusterError("must run as root (it installs packages and starts system daemons)")
    install_packages(PACKAGES)
    layout = cluster.layout
    for sub in ("etc", "state", "log", "run", *(f"spool/{n}" for n in layout.node_names)):
        (layout.dir / sub).mkdir(parents=True, exist_ok=True)
    cluster.save()
    enable_pyxis(cluster, vendor_dir)
    cluster.save()
    write_if_changed(layout.mpi_conf, pyxis.mpi_conf())
    start_munge(cluster)
    fresh = not cluster.running("slurmctld")
    conf_changed = write_if_changed(layout.conf, slurm_conf(layout, pyxis=cluster.pyxis))
    start_database(cluster)
    start_daemon(cluster, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-f", str(layout.conf)])
    wait_until("slurmctld", lambda: succeeds(["scontrol", "ping"], cluster), 60, cluster)
    if conf_changed:
        succeeds(["scontrol", "reconfigure"], cluster)
    for node in layout.node_names:
        start_slurmd(cluster, node)
    if fresh and cluster.pyxis:
        remove_leftover_containers(cluster)  # a cluster stopped uncleanly: its job ids start again at 1
    resume_nodes(cluster)
    try:
        wait_until("nodes to become idle", lambda: _nodes_ready(cluster), 30, cluster)
    except ClusterError:
        succeeds(["scontrol", "reconfigure"], cluster)  # nodes left 'unknown' by a slurmctld restart re-register
        resume_nodes(cluster)
        wait_until("nodes to become idle", lambda: _nodes_ready(cluster), 60, cluster)
    link_system_conf(layout)
    if cluster.pyxis:
        check_pyxis(cluster)
    say(f"up: {layout.describe()}; partitions debug (preemptable) and high; Pyxis {'on' if cluster.pyxis else 'off'}."
        f" export SLURM_CONF={layout.conf}")


def _cancel_jobs(cluster: Cluster) -> None:
    env = cluster.env()

    def queued() -> list[str]:
        return subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split()

    if jobs := queued():
        subprocess.run(["scancel", *jobs], env=env, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and queued():
            time.sleep(0.3)


def down(directory: Path, purge: bool) -> None:
    """Stop what DIR/state.json says `up` started, newest first, whatever flags `up` was given."""
    cluster = Cluster.load(directory)
    if cluster is None:
        say(f"nothing recorded in {Layout(directory).state_file}: nothing to stop")
    else:
        if cluster.running("slurmctld"):
            _cancel_jobs(cluster)
        if cluster.pyxis:
            remove_leftover_containers(cluster)
        for name in reversed(list(cluster.daemons)):
            stop_daemon(cluster, name)
        _kill_leftover_steps(cluster.layout)
        unlink_system_conf(cluster.layout)
        cluster.layout.state_file.unlink()
    if purge:
        shutil.rmtree(directory, ignore_errors=True)
    say("down" + (f"; removed {directory}" if purge else ""))


def slurmd_pids(cluster: Cluster) -> dict[str, int]:
    """Node -> the PID of its running slurmd, whose mount namespace holds that node's containers."""
    return {node: cluster.daemons[f"slurmd-{node}"]["pid"] for node in cluster.layout.node_names
            if cluster.running(f"slurmd-{node}")}


def remove_leftover_containers(cluster: Cluster) -> None:
    for node, pid in slurmd_pids(cluster).items():
        if removed := pyxis.remove_containers(pid):
            say(f"{node}: removed leftover containers {' '.join(removed)}")


def _kill_leftover_steps(layout: Layout) -> None:
    """slurmstepd processes of this cluster (spooled under our dir) that outlived their slurmd."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "slurmstepd":
                continue
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(layout.dir)):
            os.kill(int(proc.name), signal.SIGKILL)


def status(directory: Path, as_json: bool) -> int:
    """What DIR/state.json records and whether it runs; --json for programs (bench asks this way)."""
    cluster = Cluster.load(directory)
    is_up = cluster is not None and cluster.running("slurmctld")
    if as_json:
        info = cluster.to_json() if cluster else {"dir": str(directory), "conf": str(Layout(directory).conf)}
        info["running"] = {name: cluster.running(name) for name in cluster.daemons} if cluster else {}
        print(json.dumps({**info, "up": is_up}, indent=2))
    elif cluster is None:
        print(f"no cluster recorded in {directory}")
    else:
        print(cluster.layout.describe())
        print(f"Pyxis {'on' if cluster.pyxis else 'off'}" + (f" (image {cluster.layout.image})" if cluster.pyxis else ""))
        for name, daemon in cluster.daemons.items():
            print(f"{name:<14} {'running' if cluster.running(name) else 'stopped'} (pid {daemon['pid']})")
        if is_up:
            subprocess.run(["sinfo", "-N", "-o", "%N %P %T %c"], env=cluster.env())
    return 0 if is_up else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status", "image"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, help="up: slurmd nodes (default 4)")
    parser.add_argument("--cpus", type=int, help="up: CPUs per node, oversubscribing this machine (default 2)")
    parser.add_argument("--mem-mb", type=int, help="up: memory per node (default 4000)")
    parser.add_argument("--vendor", type=Path, default=pyxis.DEFAULT_VENDOR,
                        help=f"up: the vendored enroot and pyxis sources (default {pyxis.DEFAULT_VENDOR})")
    parser.add_argument("--purge", action="store_true", help="down: also delete the cluster directory")
    parser.add_argument("--json", action="store_true", help="status: print the recorded state as JSON")
    args = parser.parse_args(argv)
    sizes = {"nodes": args.nodes, "cpus": args.cpus, "mem_mb": args.mem_mb}
    if args.action != "up" and any(v is not None for v in sizes.values()):
        parser.error("--nodes, --cpus and --mem-mb are for up; down and status read what up recorded")
    directory = args.dir.resolve()
    try:
        if args.action == "up":
            up(plan(directory, sizes), args.vendor.resolve())
        elif args.action == "image":
            image = Layout(directory).image
            say(f"{'wrote' if build_image(image) else 'up to date:'} {image}")
        elif args.action == "down":
            down(directory, args.purge)
        else:
            return status(directory, args.json)
    except (ClusterError, PyxisError, subprocess.CalledProcessError) as err:
        print(f"local_slurm: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
