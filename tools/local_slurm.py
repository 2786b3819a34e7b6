"""A real Slurm 22.05 cluster on this one machine, for the launcher's tests and for trying things.

    python -m tools.local_slurm up [--dir DIR] [--nodes 4] [--cpus 2] [--mem-mb 4000]
    python -m tools.local_slurm down [--dir DIR] [--purge]
    python -m tools.local_slurm status [--dir DIR]

`up` (as root) installs the Debian packages if they are missing, then starts munge, a private
MariaDB with slurmdbd (submitit reads job states through sacct), slurmctld and N slurmd daemons
that pose as nodes node1..nodeN. Partitions: `debug` (default, preemptable: PreemptMode=REQUEUE,
GraceTime=20 s) and `high` (PriorityTier 10, preempts debug). Requeued jobs restart within
seconds (cred_expire=10, KillWait=5). It is idempotent: what already runs is left alone.

Clients find the cluster through SLURM_CONF=DIR/etc/slurm.conf; `up` also links
/etc/slurm/slurm.conf to it when that path is free, so plain `sbatch` works. `down` stops only
the daemons it started (by recorded PID) and removes only its own link.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROG = "python -m tools.local_slurm"
DEFAULT_DIR = Path("/tmp/effnet-local-slurm")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
PORT_BASE = 16800
GRACE_TIME_S = 20
KILL_WAIT_S = 5
CRED_EXPIRE_S = 10
DB_USER, DB_PASS, DB_NAME = "slurm", "slurm-local-test", "slurm_acct_db"


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    """Every path and port of one local cluster."""

    dir: Path
    nodes: int = 4
    cpus: int = 2
    mem_mb: int = 4000

    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    @property
    def dbd_conf(self) -> Path:
        return self.dir / "etc" / "slurmdbd.conf"

    @property
    def db_socket(self) -> Path:
        return self.dir / "run" / "mysqld.sock"

    def pidfile(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.dir / "log" / f"{name}.out"

    @property
    def ctld_port(self) -> int:
        return PORT_BASE + 17

    @property
    def dbd_port(self) -> int:
        return PORT_BASE + 19

    @property
    def db_port(self) -> int:
        return PORT_BASE + 6

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}


def say(text: str) -> None:
    print(f"local_slurm: {text}", flush=True)


# ------------------------------------------------------------------ processes


def _alive(pid: int) -> bool:
    """Running and not a zombie (PID 1 here reaps orphans slowly)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _recorded_pid(layout: Layout, name: str) -> int | None:
    try:
        return int(layout.pidfile(name).read_text())
    except (OSError, ValueError):
        return None


def running(layout: Layout, name: str) -> bool:
    pid = _recorded_pid(layout, name)
    return pid is not None and _alive(pid)


def start_daemon(layout: Layout, name: str, argv: list[str], env: dict | None = None) -> None:
    if running(layout, name):
        say(f"{name} already running (pid {_recorded_pid(layout, name)})")
        return
    with open(layout.log(name), "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env or layout.env())
    layout.pidfile(name).write_text(str(proc.pid))
    say(f"started {name} (pid {proc.pid})")


def stop_daemon(layout: Layout, name: str) -> None:
    pid = _recorded_pid(layout, name)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        say(f"stopped {name} (pid {pid})")
    layout.pidfile(name).unlink(missing_ok=True)


def wait_until(what: str, check, timeout_s: float, layout: Layout) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}; logs in {layout.dir / 'log'}")
        time.sleep(0.2)


def _ok(argv: list[str], layout: Layout, input: str | None = None) -> bool:
    return subprocess.run(argv, env=layout.env(), capture_output=True, text=True, input=input).returncode == 0


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


def slurm_conf(layout: Layout) -> str:
    d = layout.dir
    first = PORT_BASE + 1
    return f"""# written by {PROG}; do not edit
ClusterName=effnetlocal
SlurmctldHost={socket.gethostname().split('.')[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire={CRED_EXPIRE_S}
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
ReturnToService=2
JobRequeue=1
KillWait={KILL_WAIT_S}
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={layout.dbd_port}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldPort={layout.ctld_port}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pidfile
SlurmdPidFile={d}/run/slurmd-%n.pidfile
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmdParameters=config_overrides
NodeName=node[1-{layout.nodes}] NodeHostname={socket.gethostname().split('.')[0]} NodeAddr=127.0.0.1 \
Port=[{first}-{first + layout.nodes - 1}] CPUs={layout.cpus} RealMemory={layout.mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE \
GraceTime={GRACE_TIME_S}
PartitionName=high Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
"""


def slurmdbd_conf(layout: Layout) -> str:
    d = layout.dir
    return f"""# written by {PROG}; do not edit
AuthType=auth/munge
DbdHost=localhost
DbdPort={layout.dbd_port}
SlurmUser=root
LogFile={d}/log/slurmdbd.log
PidFile={d}/run/slurmdbd.pidfile
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={layout.db_port}
StorageUser={DB_USER}
StoragePass={DB_PASS}
StorageLoc={DB_NAME}
"""


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


def start_munge(layout: Layout) -> None:
    if _ok(["sh", "-c", "munge -n | unmunge"], layout):
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
    start_daemon(layout, "munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                                    "/usr/sbin/munged", "-F"])
    wait_until("munged", lambda: _ok(["sh", "-c", "munge -n | unmunge"], layout), 20, layout)


def start_database(layout: Layout) -> None:
    datadir = layout.dir / "db"
    if not (datadir / "mysql").is_dir():
        subprocess.run(["mariadb-install-db", "--user=root", f"--datadir={datadir}",
                        "--auth-root-authentication-method=socket", "--skip-test-db"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start_daemon(layout, "mariadb", [
        "/usr/sbin/mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}", f"--socket={layout.db_socket}",
        f"--port={layout.db_port}", "--bind-address=127.0.0.1", f"--pid-file={layout.dir / 'run' / 'mariadb.pidfile'}",
        f"--log-error={layout.dir / 'log' / 'mariadb.err'}", "--skip-log-bin", "--innodb-buffer-pool-size=64M"])
    sql = ["mariadb", f"--socket={layout.db_socket}"]
    wait_until("mariadb", lambda: _ok([*sql, "-e", "select 1"], layout), 60, layout)
    grant = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASS}'; "
             f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;")
    subprocess.run([*sql, "-e", grant], check=True)
    write_if_changed(layout.dbd_conf, slurmdbd_conf(layout), 0o600)
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
    start_daemon(layout, "slurmdbd", ["/usr/sbin/slurmdbd", "-D"])
    wait_until(f"slurmdbd on port {layout.dbd_port}", lambda: _port_open(layout.dbd_port), 120, layout)


def _nodes_ready(layout: Layout) -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=layout.env(), capture_output=True, text=True)
    states = out.stdout.split()
    return out.returncode == 0 and len(states) >= layout.nodes and all(
        s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states)


def up(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise ClusterError("must run as root (it installs packages and starts system daemons)")
    install_packages()
    for sub in ("etc", "state", "log", "run", *(f"spool/{n}" for n in layout.node_names)):
        (layout.dir / sub).mkdir(parents=True, exist_ok=True)
    start_munge(layout)
    conf_changed = write_if_changed(layout.conf, slurm_conf(layout))
    start_database(layout)
    start_daemon(layout, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-f", str(layout.conf)])
    wait_until("slurmctld", lambda: _ok(["scontrol", "ping"], layout), 60, layout)
    if conf_changed:
        _ok(["scontrol", "reconfigure"], layout)
    for node in layout.node_names:
        start_daemon(layout, f"slurmd-{node}", ["/usr/sbin/slurmd", "-D", "-N", node, "-f", str(layout.conf)])
    try:
        wait_until("nodes to become idle", lambda: _nodes_ready(layout), 30, layout)
    except ClusterError:
        _ok(["scontrol", "reconfigure"], layout)  # nodes left 'unknown' by a slurmctld restart re-register
        wait_until("nodes to become idle", lambda: _nodes_ready(layout), 60, layout)
    link_system_conf(layout)
    say(f"up: {layout.nodes} nodes, partitions debug (preemptable) and high. export SLURM_CONF={layout.conf}")


def down(layout: Layout, purge: bool) -> None:
    if running(layout, "slurmctld"):
        env = layout.env()
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split()
        if jobs:
            subprocess.run(["scancel", *jobs], env=env, capture_output=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.strip():
                time.sleep(0.3)
    for node in layout.node_names:
        stop_daemon(layout, f"slurmd-{node}")
    for name in ("slurmctld", "slurmdbd", "mariadb", "munged"):
        stop_daemon(layout, name)
    _kill_leftover_steps(layout)
    unlink_system_conf(layout)
    if purge:
        shutil.rmtree(layout.dir, ignore_errors=True)
    say("down" + (f"; removed {layout.dir}" if purge else ""))


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


def status(layout: Layout) -> int:
    names = ["munged", "mariadb", "slurmdbd", "slurmctld", *(f"slurmd-{n}" for n in layout.node_names)]
    for name in names:
        pid = _recorded_pid(layout, name)
        print(f"{name:<14} {'running' if running(layout, name) else 'stopped'}" + (f" (pid {pid})" if pid else ""))
    if running(layout, "slurmctld"):
        subprocess.run(["sinfo", "-N", "-o", "%N %P %T %c"], env=layout.env())
    return 0 if running(layout, "slurmctld") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs per node (oversubscribes this machine)")
    parser.add_argument("--mem-mb", type=int, default=4000, help="memory per node")
    parser.add_argument("--purge", action="store_true", help="down: also delete the state directory")
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve(), args.nodes, args.cpus, args.mem_mb)
    try:
        if args.action == "up":
            up(layout)
        elif args.action == "down":
            down(layout, args.purge)
        else:
            return status(layout)
    except (ClusterError, subprocess.CalledProcessError) as err:
        print(f"local_slurm: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
