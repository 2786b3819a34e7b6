"""The layout (paths, ports) of one local Slurm cluster and the config files it runs from.

Split out of `local_slurm` so that the daemon handling there stays readable; everything here is a
pure function of a `Layout`, which `local_slurm up` records in DIR/state.json.

Timeouts are cut for tests, where real clusters keep Slurm's defaults or their own:
- SlurmdTimeout=30 (default 300, typical sites 300): a node whose slurmd stops answering is marked
  DOWN after 30-40 s (slurmctld pings every SlurmdTimeout/3), and only then are its jobs cleaned up
  and requeued (NODE_FAIL); at 300 s a job that lost a node sits in COMPLETING for 5+ minutes.
  ReturnToService=2 brings such a node back when its slurmd registers again (`local_slurm up`).
- KillWait=5 and cred_expire=10 make a requeued job start again within seconds (default 30 s and
  120 s: a requeue then takes minutes).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

PROG = "python -m tools.local_slurm"
PORT_BASE = 16800
# slurmd ports start above the daemons' ones, so any node count leaves those free.
SLURMD_PORT_BASE = PORT_BASE + 100
GRACE_TIME_S = 20
KILL_WAIT_S = 5
SLURMD_TIMEOUT_S = 30
CRED_EXPIRE_S = 10
DB_USER, DB_PASS, DB_NAME = "slurm", "slurm-local-test", "slurm_acct_db"


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
    def plugstack(self) -> Path:
        return self.dir / "etc" / "plugstack.conf"

    @property
    def mpi_conf(self) -> Path:
        return self.dir / "etc" / "mpi.conf"  # Slurm reads it beside slurm.conf

    @property
    def image(self) -> Path:
        return self.dir / "images" / "effnet-local.sqsh"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def db_socket(self) -> Path:
        return self.dir / "run" / "mysqld.sock"

    def log(self, name: str) -> Path:
        return self.dir / "log" / f"{name}.out"

    @property
    def ports(self) -> dict:
        return {"mariadb": PORT_BASE + 6, "slurmctld": PORT_BASE + 17, "slurmdbd": PORT_BASE + 19,
                "slurmd": {node: SLURMD_PORT_BASE + i for i, node in enumerate(self.node_names, 1)}}

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    def describe(self) -> str:
        return f"{self.nodes} nodes x {self.cpus} CPUs, {self.mem_mb} MB each, in {self.dir}"


def _host() -> str:
    return socket.gethostname().split(".")[0]


def slurm_conf(layout: Layout, pyxis: bool = False) -> str:
    """With `pyxis`, PlugStackConfig names our plugstack.conf by its absolute path: a client that reads this
    file through the /etc/slurm/slurm.conf link would otherwise read Debian's /etc/slurm/plugstack.conf."""
    d, ports = layout.dir, layout.ports
    first = SLURMD_PORT_BASE + 1
    plugstack = f"PlugStackConfig={layout.plugstack}\n" if pyxis else ""
    return f"""# written by {PROG}; do not edit
ClusterName=effnetlocal
SlurmctldHost={_host()}
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
SlurmdTimeout={SLURMD_TIMEOUT_S}
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={ports["slurmdbd"]}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldPort={ports["slurmctld"]}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pidfile
SlurmdPidFile={d}/run/slurmd-%n.pidfile
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmdParameters=config_overrides
{plugstack}NodeName=node[1-{layout.nodes}] NodeHostname={_host()} NodeAddr=127.0.0.1 \
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
DbdPort={layout.ports["slurmdbd"]}
SlurmUser=root
LogFile={d}/log/slurmdbd.log
PidFile={d}/run/slurmdbd.pidfile
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={layout.ports["mariadb"]}
StorageUser={DB_USER}
StoragePass={DB_PASS}
StorageLoc={DB_NAME}
"""
