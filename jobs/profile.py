"""Cluster profiles: what a cluster offers and how to launch on it, as validated data.

A profile is a TOML file: one of the shipped `clusters/<name>.toml`, or any path a user passes to
`--cluster`. Every field is checked at load time: an unknown field, a wrong type, an unknown
choice or a value with shell metacharacters is a `ConfigError` naming the field and the valid
options, so a bad profile never reaches `sbatch`.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from effnet.core.coerce import coerce, field_types
from effnet.core.errors import ConfigError
from jobs.containers import profile_problem

# The checkout this launcher runs from: relative profile paths (workdir, data_dir) are relative to it,
# and ranks on the host import this checkout's packages.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The shipped profiles: clusters/ in a checkout; a wheel installs them beside jobs/ as effnet_slurm/clusters.
CLUSTERS_DIR = PROJECT_ROOT / "effnet_slurm" / "clusters"
if not CLUSTERS_DIR.is_dir():
    CLUSTERS_DIR = PROJECT_ROOT / "clusters"
DEFAULT_EXPERIMENTS_DIR = PROJECT_ROOT / "runs" / "experiments"
DEFAULT_CLUSTER = "local"

# Values that end up as words in the sbatch/srun text. They are shell-quoted when rendered anyway;
# rejecting metacharacters here turns a typo or an injection into a clear error instead.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,:@%+=/~\-]*$")
# Pyxis names a registry image [USER@][REGISTRY#]IMAGE[:TAG]: the `#` is its syntax (rendered quoted).
_SAFE_IMAGE = re.compile(r"^[A-Za-z0-9_.,:@%+=/~#\-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

GpuType = Literal["a100", "v100", "cpu"]


@dataclass(frozen=True)
class ClusterProfile:
    """One cluster. Paths named `*_dir` are as the trainer sees them (inside the container if any)."""

    name: str
    description: str = ""
    executor: Literal["slurm", "local"] = "slurm"
    launch: Literal["gloo", "pmix"] = "gloo"
    gpu_type: GpuType = "cpu"
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_per_node_gb: int = 0  # 0: all the node's memory (--mem=0)
    max_nodes: int = 1
    partition: str = ""
    account: str = ""
    qos: str = ""
    exclusive: bool = False
    time_limit_min: int = 60
    cpu_bind: str = ""
    signal: Literal["USR1", "USR2", "TERM"] = "USR2"
    signal_delay_s: int = 120
    max_requeues: int = 5  # requeues after a preemption or time-limit signal (the trainer checkpointed)
    # Unplanned faults, handled by the batch script's host side (jobs.host): a crashed rank, a hang, a lost node.
    max_fault_requeues: int = 3  # requeues after faults, per job, counted in the attempt ledger
    stall_timeout_s: int = 900  # no rank made progress for this long: a hang (0: no watchdog)
    first_step_grace_s: int = 1800  # the same before the first progress (XLA compile, data warm-up)
    checkpoint_every_min: float = 0.0  # trainer --checkpoint_every_min unless a recipe or --set gives it
    container_image: str = ""
    container_mounts: tuple[str, ...] = ()
    container_workdir: str = ""
    # A writable container root (--container-writable): Open MPI writes its session directory under /tmp, and
    # whether enroot's root is writable by default is a site's ENROOT_ROOTFS_WRITABLE, not something to rely on.
    container_writable: bool = False
    python: str = ""  # "" = the interpreter that submits (no container)
    workdir: str = ""  # "" = this project's checkout (no container)
    data_dir: str = ""
    experiments_dir: str = ""  # on the host, absolute; "" = runs/experiments in the checkout
    env: dict[str, str] = field(default_factory=dict)

    @property
    def uses_container(self) -> bool:
        return bool(self.container_image)

    @property
    def rank_data_dir(self) -> str:
        """The data directory as the ranks see it: the profile's inside a container, else under the checkout."""
        return self.data_dir if self.uses_container else host_path(self.data_dir)

    @property
    def rank_python(self) -> str:
        """The ranks' interpreter: the profile's (inside the image), else the one that submits."""
        return self.python or sys.executable

    def rank_env(self) -> dict[str, str]:
        """The environment every rank starts with: the profile's; without a container, the checkout's
        packages on PYTHONPATH (the rank task imports `jobs` and `effnet`)."""
        env = dict(self.env)
        if not self.uses_container:
            env.setdefault("PYTHONPATH", host_path(self.workdir) or str(PROJECT_ROOT))
        return env

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["container_mounts"] = list(self.container_mounts)
        return out


def valid_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ClusterProfile)]


def available_clusters() -> list[str]:
    return sorted(p.stem for p in CLUSTERS_DIR.glob("*.toml"))


def _check_word(where: str, key: str, value: str) -> None:
    safe, allowed = (_SAFE_IMAGE, "_.,:@%+=/~#-") if key == "container_image" else (_SAFE_WORD, "_.,:@%+=/~-")
    if not safe.match(value):
        bad = "".join(sorted({c for c in value if not safe.match(c)}))
        raise ConfigError(f"{where}: {key} {value!r} contains shell metacharacters or spaces ({bad!r}); "
                          f"allowed are letters, digits and {allowed}")


def _checked_env(raw: object, where: str) -> dict[str, str]:
    """The [env] table: names a shell accepts, values strings. An unquoted `NCCL_SOCKET_IFNAME = 5` is
    a mistake to name, not a value to guess: the variable would hold what TOML made of it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: env: expected a table of NAME = \"value\", got {raw!r}")
    for name, value in raw.items():
        if not _ENV_NAME.match(name):
            raise ConfigError(f"{where}: env: {name!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: env: {name} = {value!r} is not a string; quote it: {name} = \"{value}\"")
    # Values are free text (quoted when rendered): NCCL/UCX settings may contain anything.
    return dict(raw)


def check_signal_fits(profile: ClusterProfile, time_limit_min: int, where: str) -> None:
    """The checkpoint signal comes signal_delay_s before the time limit: it must leave at least half of
    the job to train, or each attempt checkpoints at once and requeues, up to max_requeues."""
    limit_s = time_limit_min * 60
    if 2 * profile.signal_delay_s > limit_s:
        raise ConfigError(f"{where}: the checkpoint signal ({profile.signal}, signal_delay_s = {profile.signal_delay_s}) "
                          f"would leave less than half of a {time_limit_min}-minute job to train; give at least "
                          f"{-(-2 * profile.signal_delay_s // 60)} minutes or a smaller signal_delay_s")


def from_mapping(data: dict, where: str) -> ClusterProfile:
    """Validate a parsed TOML table into a profile; `where` names the source in errors."""
    names = valid_fields()
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(names)}")
    types = field_types(ClusterProfile)
    values: dict = {}
    for key, raw in data.items():
        tp = types[key]
        if key == "container_mounts":
            if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
                raise ConfigError(f"{where}: container_mounts: expected a list of 'SRC[:DST[:FLAGS]]' strings, got {raw!r}")
            for mount in raw:
                _check_word(where, "container_mounts entry", mount)
                if not 1 <= len(mount.split(":")) <= 3 or "" in mount.split(":"):
                    raise ConfigError(f"{where}: container_mounts entry {mount!r} is not SRC[:DST[:FLAGS]]")
            values[key] = tuple(raw)
        elif key == "env":
            values[key] = _checked_env(raw, where)
        else:
            if isinstance(raw, (dict, list)):
                raise ConfigError(f"{where}: {key}: expected {typing.get_args(tp) or getattr(tp, '__name__', tp)}, "
                                  f"got {raw!r}")
            if tp is int and isinstance(raw, bool) or tp is str and not isinstance(raw, str):
                raise ConfigError(f"{where}: {key}: expected {getattr(tp, '__name__', tp)}, got {raw!r}")
            if tp is int and not isinstance(raw, int):
                raise ConfigError(f"{where}: {key}: expected int, got {raw!r}")
            if tp is float and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
                raise ConfigError(f"{where}: {key}: expected a number, got {raw!r}")
            if tp is bool and not isinstance(raw, bool):
                raise ConfigError(f"{where}: {key}: expected true or false, got {raw!r}")
            try:
                values[key] = coerce(key, raw, tp)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            if tp is str and key not in ("description",):
                _check_word(where, key, values[key])
    if "name" not in values:
        raise ConfigError(f"{where}: the field 'name' is required")
    profile = ClusterProfile(**values)
    _check_consistency(profile, where)
    return profile


def _check_consistency(p: ClusterProfile, where: str) -> None:
    for key in ("tasks_per_node", "cpus_per_task", "max_nodes", "time_limit_min"):
        if getattr(p, key) < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {getattr(p, key)}")
    for key in ("gpus_per_node", "mem_per_node_gb", "signal_delay_s", "max_requeues", "max_fault_requeues",
                "stall_timeout_s", "first_step_grace_s", "checkpoint_every_min"):
        if getattr(p, key) < 0:
            raise ConfigError(f"{where}: {key} must be >= 0, got {getattr(p, key)}")
    check_signal_fits(p, p.time_limit_min, f"{where}: time_limit_min = {p.time_limit_min}")
    if p.experiments_dir and not Path(p.experiments_dir).is_absolute():
        raise ConfigError(f"{where}: experiments_dir {p.experiments_dir!r} is relative: give an absolute path that "
                          f"every node shares, or leave it empty for runs/experiments in this checkout "
                          f"({DEFAULT_EXPERIMENTS_DIR})")
    if p.stall_timeout_s and p.first_step_grace_s < p.stall_timeout_s:
        raise ConfigError(f"{where}: first_step_grace_s ({p.first_step_grace_s}) must be at least stall_timeout_s "
                          f"({p.stall_timeout_s}): it covers compilation and data warm-up before the first step")
    if p.gpu_type == "cpu" and p.gpus_per_node:
        raise ConfigError(f"{where}: gpu_type is cpu but gpus_per_node is {p.gpus_per_node}")
    if p.gpu_type != "cpu" and p.tasks_per_node != p.gpus_per_node:
        raise ConfigError(f"{where}: one task per GPU: tasks_per_node ({p.tasks_per_node}) must equal "
                          f"gpus_per_node ({p.gpus_per_node})")
    if p.executor == "local" and (p.uses_container or p.launch != "gloo" or p.max_nodes != 1):
        raise ConfigError(f"{where}: the local executor runs ranks as processes here: it needs launch = \"gloo\", "
                          f"max_nodes = 1 and no container_image")
    if p.uses_container and not (p.python and p.workdir):
        raise ConfigError(f"{where}: with container_image, python and workdir must name paths inside the image")
    for key in ("container_workdir", "container_writable"):
        if getattr(p, key) and not p.uses_container:
            raise ConfigError(f"{where}: {key} is set but container_image is not")
    if p.uses_container and (problem := profile_problem(p.container_image, p.container_mounts, p.container_workdir)):
        raise ConfigError(f"{where}: {problem}")


def load_profile(name_or_path: str) -> ClusterProfile:
    """A shipped profile by name, or a TOML file by path."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        if not path.is_file():
            raise ConfigError(f"cluster profile file {name_or_path} does not exist")
    else:
        path = CLUSTERS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(f"unknown cluster {name_or_path!r}; available: {', '.join(available_clusters())} "
                              f"(or pass a path to a profile .toml)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"cluster profile {path}: not valid TOML: {err}") from None
    return from_mapping(data, f"cluster profile {path.name}")


def host_path(path: str) -> str:
    """Profile paths without a container are relative to the project checkout."""
    if not path:
        return ""
    return path if Path(path).is_absolute() else str(PROJECT_ROOT / path)


def experiments_dir(profile: ClusterProfile) -> Path:
    """The absolute directory that holds this profile's experiments."""
    return Path(profile.experiments_dir) if profile.experiments_dir else DEFAULT_EXPERIMENTS_DIR
