"""Data parallelism: one process alone (`Ranks`) or one of several Horovod ranks (`HorovodRanks`).

The entry point chooses, once, by calling `init(horovod=...)`; nothing here reads the
environment on import or decides on its own. `launched_ranks(os.environ)` tells the entry point
how many ranks its launcher (horovodrun, mpirun, a Slurm task) announced. `init` returns the
chosen `Ranks` and makes it the process's, which the module-level helpers (`rank()`,
`allreduce_sum()`, ...) then use; until `init` is called the process is a single one.

Keras 3 variables are not `tf.Variable`s, and horovod 0.28.1's helpers expect them:
we broadcast the backing `v.value` and allreduce gradient lists with `grouped_allreduce`.
Horovod collectives reject bfloat16, so such tensors travel as float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import tensorflow as tf

# Where launchers announce the number of ranks: horovodrun / jobs.task, Open MPI, MPICH and Slurm's PMI.
SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


class Ranks:
    """The ranks of a run, and their collectives. This base is a process alone: every collective is the identity."""

    active = False
    controller = "none"  # how the ranks reach each other: "mpi" or "gloo" (Horovod's), or none
    rank = 0
    size = 1
    local_rank = 0

    def batch_norm_allreduce(self) -> Callable[[tf.Tensor], tf.Tensor] | None:
        """What `build_model(allreduce=...)` needs for cross-replica BatchNorm: None, local statistics."""
        return None

    def allreduce_gradients(self, grads: Sequence[tf.Tensor | None]) -> list:
        return list(grads)

    def allreduce_mean(self, value: tf.Tensor, name: str | None = None) -> tf.Tensor:
        return value

    def allreduce_sum(self, value: tf.Tensor, name: str) -> tf.Tensor:
        return value

    def broadcast_variables(self, variables: Sequence, root_rank: int = 0) -> None:
        return None

    def allgather(self, value: tf.Tensor) -> tf.Tensor:
        return value

    def barrier(self) -> None:
        return None


class HorovodRanks(Ranks):
    """This process is one of `size` Horovod ranks (an initialised `horovod.tensorflow` module)."""

    active = True

    def __init__(self, hvd) -> None:
        self._hvd = hvd
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        self.controller = "mpi" if hvd.mpi_enabled() else "gloo"

    def batch_norm_allreduce(self) -> Callable[[tf.Tensor], tf.Tensor]:
        return self.allreduce_mean

    def allreduce_gradients(self, grads: Sequence[tf.Tensor | None]) -> list:
        """Average gradients across ranks in one grouped collective; None entries stay None."""
        present = [i for i, g in enumerate(grads) if g is not None]
        tensors = [grads[i] for i in present]
        dtypes = [t.dtype for t in tensors]
        tensors = [tf.cast(t, tf.float32) if t.dtype == tf.bfloat16 else t for t in tensors]
        reduced = self._hvd.grouped_allreduce(tensors, op=self._hvd.Average)
        out = list(grads)
        for i, r, d in zip(present, reduced, dtypes):
            out[i] = tf.cast(r, d)
        return out

    def allreduce_mean(self, value: tf.Tensor, name: str | None = None) -> tf.Tensor:
        return self._hvd.allreduce(value, op=self._hvd.Average, name=name)

    def allreduce_sum(self, value: tf.Tensor, name: str) -> tf.Tensor:
        """Sum across ranks (for counts and totals over a sharded set)."""
        return self._hvd.allreduce(value, op=self._hvd.Sum, name=name)

    def broadcast_variables(self, variables: Sequence, root_rank: int = 0) -> None:
        """Make every rank's variables equal to `root_rank`'s (Keras 3 and bfloat16 safe)."""
        tf_vars = backing(variables)
        plain = [v for v in tf_vars if v.dtype != tf.bfloat16]
        if plain:
            self._hvd.broadcast_variables(plain, root_rank=root_rank)
        for i, v in enumerate(v for v in tf_vars if v.dtype == tf.bfloat16):
            wide = self._hvd.broadcast(tf.cast(v, tf.float32), root_rank, name=f"bcast_bf16_{i}")
            v.assign(tf.cast(wide, tf.bfloat16))

    def allgather(self, value: tf.Tensor) -> tf.Tensor:
        """Concatenate a tensor from every rank along axis 0."""
        return self._hvd.allgather(value)

    def barrier(self) -> None:
        self._hvd.allreduce(tf.constant(0.0), name="barrier")


_ranks: Ranks = Ranks()  # the process's ranks; replaced only by init()


def launched_ranks(environ: Mapping[str, str]) -> int:
    """How many ranks the launcher announced in `environ` (1 when none did)."""
    for key in SIZE_VARIABLES:
        if environ.get(key):
            return int(environ[key])
    return 1


def init(horovod: bool, memory_limit_mb: int | None = None) -> Ranks:
    """Choose this process's ranks and pin its GPU; returns them.

    `horovod=True` initialises Horovod (an error if it is not importable); with only one rank
    the process still runs as a single one. Pins one GPU per process by local rank, its memory
    capped at `memory_limit_mb` or grown as needed.
    """
    global _ranks
    _ranks = _init_horovod() if horovod else Ranks()
    pin_gpu(_ranks.local_rank, memory_limit_mb)
    return _ranks


def _init_horovod() -> Ranks:
    try:
        import horovod.tensorflow as hvd
    except ImportError as err:
        raise RuntimeError(f"several ranks were launched but horovod is not importable: {err}") from None
    hvd.init()
    return HorovodRanks(hvd) if hvd.size() > 1 else Ranks()


def current() -> Ranks:
    """The ranks `init` chose (a single process before it is called)."""
    return _ranks


@dataclass(frozen=True)
class GpuSetting:
    """How a rank configures its GPU: the one it sees, and its memory (a cap, or growth)."""

    gpu: tf.config.PhysicalDevice
    memory: list[tf.config.LogicalDeviceConfiguration] | None  # None: grow as needed


def gpu_setting(gpus: Sequence[tf.config.PhysicalDevice], local_rank: int,
                memory_limit_mb: int | None) -> GpuSetting | None:
    """The GPU a rank takes (by local rank) and its memory: one logical device of `memory_limit_mb`
    MB, as NVIDIA's --memory_limit, or growth on demand. None on a machine without GPUs."""
    if not gpus:
        return None
    memory = None if memory_limit_mb is None else [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
    return GpuSetting(gpus[local_rank % len(gpus)], memory)


def pin_gpu(local_rank: int, memory_limit_mb: int | None = None) -> None:
    setting = gpu_setting(tf.config.list_physical_devices("GPU"), local_rank, memory_limit_mb)
    if setting is None:
        return
    tf.config.set_visible_devices(setting.gpu, "GPU")
    if setting.memory is None:
        tf.config.experimental.set_memory_growth(setting.gpu, True)
    else:
        tf.config.set_logical_device_configuration(setting.gpu, setting.memory)


def accelerator() -> str:
    """What each rank computes on: "GPU" or "CPU" (collect uses it to name the precision)."""
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def backing(variables: Sequence) -> list[tf.Variable]:
    """The tf.Variable behind each Keras 3 variable (tf.Variables pass through)."""
    return [v if isinstance(v, tf.Variable) else v.value for v in variables]


# Module-level forms of the current ranks' members, for code that is not handed a `Ranks`.

def active() -> bool:
    return _ranks.active


def rank() -> int:
    return _ranks.rank


def controller() -> str:
    return _ranks.controller


def size() -> int:
    return _ranks.size


def local_rank() -> int:
    return _ranks.local_rank


def batch_norm_allreduce() -> Callable[[tf.Tensor], tf.Tensor] | None:
    return _ranks.batch_norm_allreduce()


def allreduce_gradients(grads: Sequence[tf.Tensor | None]) -> list:
    return _ranks.allreduce_gradients(grads)


def allreduce_mean(value: tf.Tensor, name: str | None = None) -> tf.Tensor:
    return _ranks.allreduce_mean(value, name)


def allreduce_sum(value: tf.Tensor, name: str) -> tf.Tensor:
    return _ranks.allreduce_sum(value, name)


def broadcast_variables(variables: Sequence, root_rank: int = 0) -> None:
    _ranks.broadcast_variables(variables, root_rank)


def allgather(value: tf.Tensor) -> tf.Tensor:
    return _ranks.allgather(value)


def barrier() -> None:
    _ranks.barrier()
