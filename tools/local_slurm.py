"""A real Slurm 22.05 cluster on this one machine, for the launcher's tests and for trying things.

    python -m tools.local_slurm up [--dir DIR] [--nodes 4] [--cpus 2] [--mem-mb 4000]
    python -m tools.local_slurm down [--dir DIR] [--purge]
    python -m tools.local_slurm status [--dir DIR] [--json]

`up` (as root) installs the Debian packages if they are missing, then starts munge, a private
MariaDB with slurmdbd (submitit reads job states through sacct), slurmctld and N slurmd daemons
that pose as nodes node1..nodeN. Partitions: `debug` (default, preemptable: PreemptMode=REQUEUE,
GraceTime=20 s) and `high` (PriorityTier 10, preempts debug). Requeued jobs restart within
seconds (cred_expire=10, KillWait=5). It is idempotent: what already runs is left alone.

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
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .slurm_conf import DB_NAME, DB_PASS, DB_USER, PROG, Layout, slurm_conf, slurmdbd_conf

# The one place that names the default cluster directory; tests import it, benches ask `status --json`.
DEFAULT_DIR = Path("/tmp/effnet-local-slurm")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")


class ClusterError(RuntimeError):
    pass


def say(text: str) -> None:
    print(f"local_slurm: {text}", flush=True)


# ------------------------------------------------------------------ processes and the state file


def _proc_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [0] the state, [19] the start time in clock ticks."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(daemon: dict) -> bool:
    """Running, not a zombie (PID 1 here reaps orphans slowly), and still the process `up` started:
    the recorded start time guards against a reused PID."""
    fields = _proc_fields(daemon["pid"])
    return len(fields) > 19 and fields[0] != "Z" and int(fields[19]) == daemon["start_ticks"]


@dataclass
class Cluster:
    """A layout and the daemons `up` started for it: exactly what DIR/state.json records, so `down`
    and `status` act on what runs, not on what their own flags would describe."""

    layout: Layout
    daemons: dict[str, dict] = field(default_factory=dict)  # name -> {"pid", "start_ticks"}, in start order

    @classmethod
    def load(cls, directory: Path) -> "Cluster | None":
        try:
            state = json.loads(Layout(directory).state_file.read_text())
        except FileNotFoundError:
            return None
        return cls(Layout(Path(state["dir"]), state["nodes"], state["cpus"], state["mem_mb"]), state["daemons"])

    def to_json(self) -> dict:
        lay = self.layout
        return {"dir": str(lay.dir), "conf": str(lay.conf), "nodes": lay.nodes, "cpus": lay.cpus,
                "mem_mb": lay.mem_mb, "ports": lay.ports, "daemons": self.daemons}

    def save(self) -> None:
        """Atomic, and after every start and stop: an interrupted `up` still tells `down` what to stop."""
        write_if_changed(self.layout.state_file, json.dumps(self.to_json(), indent=2) + "\n")

    def running(self, name: str) -> bool:
        return name in self.daemons and _alive(self.daemons[name])

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.layout.conf)}


def start_daemon(cluster: Cluster, name: str, argv: list[str]) -> None:
    if cluster.running(name):
        say(f"{name} already running (pid {cluster.daemons[name]['pid']})")
        return
    with open(cluster.layout.log(name), "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=cluster.env())
    cluster.daemons[name] = {"pid": proc.pid, "start_ticks": int(_proc_fields(proc.pid)[19])}
    cluster.save()
    say(f"started {name} (pid {proc.pid})")


def stop_daemon(cluster: Cluster, name: str) -> None:
    if cluster.running(name):
        pid = cluster.daemons[name]["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while cluster.running(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if cluster.running(name):
            os.kill(pid, signal.SIGKILL)
        say(f"stopped {name} (pid {pid})")
    cluster.daemons.pop(name, None)
    cluster.save()


def wait_until(what: str, check, timeout_s: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                               f"logs in {cluster.layout.dir / 'log'}")
        time.sleep(0.2)


def _ok(argv: list[str], cluster: Cluster) -> bool:
    return subprocess.run(argv, env=cluster.env(), capture_output=True, text=True).returncode == 0


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ install and configuration


def install_packages() -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    say(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


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
    if _ok(["sh", "-c", "munge -n | unmunge"], cluster):
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
    wait_until("munged", lambda: _ok(["sh", "-c", "munge -n | unmunge"], cluster), 20, cluster)


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
    wait_until("mariadb", lambda: _ok([*sql, "-e", "select 1"], cluster), 60, cluster)
    grant = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASS}'; "
             f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;")
    subprocess.run([*sql, "-e", grant], check=True)
    write_if_changed(layout.dbd_conf, slurmdbd_conf(layout), 0o600)
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
    start_daemon(cluster, "slurmdbd", ["/usr/sbin/slurmdbd", "-D"])
    wait_until(f"slurmdbd on port {ports['slurmdbd']}", lambda: _port_open(ports["slurmdbd"]), 120, cluster)


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
            _ok(["scontrol", "update", f"NodeName={name}", "State=RESUME"], cluster)
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


def up(cluster: Cluster) -> None:
    if os.geteuid() != 0:
        raise ClusterError("must run as root (it installs packages and starts system daemons)")
    install_packages()
    layout = cluster.layout
    for sub in ("etc", "state", "log", "run", *(f"spool/{n}" for n in layout.node_names)):
        (layout.dir / sub).mkdir(parents=True, exist_ok=True)
    cluster.save()
    start_munge(cluster)
    conf_changed = write_if_changed(layout.conf, slurm_conf(layout))
    start_database(cluster)
    start_daemon(cluster, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-f", str(layout.conf)])
    wait_until("slurmctld", lambda: _ok(["scontrol", "ping"], cluster), 60, cluster)
    if conf_changed:
        _ok(["scontrol", "reconfigure"], cluster)
    for node in layout.node_names:
        start_daemon(cluster, f"slurmd-{node}", ["/usr/sbin/slurmd", "-D", "-N", node, "-f", str(layout.conf)])
    resume_nodes(cluster)
    try:
        wait_until("nodes to become idle", lambda: _nodes_ready(cluster), 30, cluster)
    except ClusterError:
        _ok(["scontrol", "reconfigure"], cluster)  # nodes left 'unknown' by a slurmctld restart re-register
        resume_nodes(cluster)
        wait_until("nodes to become idle", lambda: _nodes_ready(cluster), 60, cluster)
    link_system_conf(layout)
    say(f"up: {layout.describe()}; partitions debug (preemptable) and high. export SLURM_CONF={layout.conf}")


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
        for name in reversed(list(cluster.daemons)):
            stop_daemon(cluster, name)
        _kill_leftover_steps(cluster.layout)
        unlink_system_conf(cluster.layout)
        cluster.layout.state_file.unlink()
    if purge:
        shutil.rmtree(directory, ignore_errors=True)
    say("down" + (f"; removed {directory}" if purge else ""))


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
        for name, daemon in cluster.daemons.items():
            print(f"{name:<14} {'running' if cluster.running(name) else 'stopped'} (pid {daemon['pid']})")
        if is_up:
            subprocess.run(["sinfo", "-N", "-o", "%N %P %T %c"], env=cluster.env())
    return 0 if is_up else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, help="up: slurmd nodes (default 4)")
    parser.add_argument("--cpus", type=int, help="up: CPUs per node, oversubscribing this machine (default 2)")
    parser.add_argument("--mem-mb", type=int, help="up: memory per node (default 4000)")
    parser.add_argument("--purge", action="store_true", help="down: also delete the cluster directory")
    parser.add_argument("--json", action="store_true", help="status: print the recorded state as JSON")
    args = parser.parse_args(argv)
    sizes = {"nodes": args.nodes, "cpus": args.cpus, "mem_mb": args.mem_mb}
    if args.action != "up" and any(v is not None for v in sizes.values()):
        parser.error("--nodes, --cpus and --mem-mb are for up; down and status read what up recorded")
    directory = args.dir.resolve()
    try:
        if args.action == "up":
            up(plan(directory, sizes))
        elif args.action == "down":
            down(directory, args.purge)
        else:
            return status(directory, args.json)
    except (ClusterError, subprocess.CalledProcessError) as err:
        print(f"local_slurm: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
