"""Data parallelism through Horovod, or a single process when Horovod is absent or alone.

Keras 3 variables are not `tf.Variable`s, and horovod 0.28.1's helpers expect them:
we broadcast the backing `v.value` and allreduce gradient lists with `grouped_allreduce`.
Horovod collectives reject bfloat16, so such tensors travel as float32.
"""
from __future__ import annotations

import os
from typing import Sequence

import tensorflow as tf

_hvd = None  # the horovod.tensorflow module once initialised with more than one rank


def _want_horovod() -> bool:
    """Horovod is used when a launcher started several ranks (horovodrun, mpirun, a scheduler task)."""
    size = os.environ.get("HOROVOD_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE")
    return size is not None and int(size) > 1


def init() -> None:
    """Initialise Horovod if this process is one of several ranks; else stay single-process.

    Pins one GPU per process by local rank when GPUs are visible.
    """
    global _hvd
    if _want_horovod():
        try:
            import horovod.tensorflow as hvd
        except ImportError as err:
            raise RuntimeError(f"several ranks were launched but horovod is not importable: {err}") from None
        hvd.init()
        _hvd = hvd if hvd.size() > 1 else None
    pin_gpu(local_rank())


def pin_gpu(index: int) -> None:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    gpu = gpus[index % len(gpus)]
    tf.config.set_visible_devices(gpu, "GPU")
    tf.config.experimental.set_memory_growth(gpu, True)


def accelerator() -> str:
    """What each rank computes on: "GPU" or "CPU" (collect uses it to name the precision)."""
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def active() -> bool:
    return _hvd is not None


def rank() -> int:
    return _hvd.rank() if _hvd else 0


def size() -> int:
    return _hvd.size() if _hvd else 1


def local_rank() -> int:
    if _hvd:
        return _hvd.local_rank()
    return int(os.environ.get("HOROVOD_LOCAL_RANK", os.environ.get("LOCAL_RANK", 0)))


def backing(variables: Sequence) -> list[tf.Variable]:
    """The tf.Variable behind each Keras 3 variable (tf.Variables pass through)."""
    return [v if isinstance(v, tf.Variable) else v.value for v in variables]


def allreduce_gradients(grads: Sequence[tf.Tensor | None]) -> list:
    """Average gradients across ranks in one grouped collective. Identity when single-process."""
    if not _hvd:
        return list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    tensors = [grads[i] for i in present]
    dtypes = [t.dtype for t in tensors]
    tensors = [tf.cast(t, tf.float32) if t.dtype == tf.bfloat16 else t for t in tensors]
    reduced = _hvd.grouped_allreduce(tensors, op=_hvd.Average)
    out = list(grads)
    for i, r, d in zip(present, reduced, dtypes):
        out[i] = tf.cast(r, d)
    return out


def allreduce_mean(value: tf.Tensor, name: str | None) -> tf.Tensor:
    """Mean of a tensor across ranks."""
    if not _hvd:
        return value
    return _hvd.allreduce(value, op=_hvd.Average, name=name)


def allreduce_sum(value: tf.Tensor, name: str) -> tf.Tensor:
    """Sum of a tensor across ranks (for counts and totals over a sharded set)."""
    if not _hvd:
        return value
    return _hvd.allreduce(value, op=_hvd.Sum, name=name)


def broadcast_variables(variables: Sequence, root_rank: int = 0) -> None:
    """Make every rank's variables equal to `root_rank`'s (Keras 3 and bfloat16 safe)."""
    if not _hvd:
        return
    tf_vars = backing(variables)
    plain = [v for v in tf_vars if v.dtype != tf.bfloat16]
    if plain:
        _hvd.broadcast_variables(plain, root_rank=root_rank)
    for i, v in enumerate(v for v in tf_vars if v.dtype == tf.bfloat16):
        v.assign(tf.cast(_hvd.broadcast(tf.cast(v, tf.float32), root_rank, name=f"bcast_bf16_{i}"), tf.bfloat16))


def allgather(value: tf.Tensor) -> tf.Tensor:
    """Concatenate a tensor from every rank along axis 0."""
    if not _hvd:
        return value
    return _hvd.allgather(value)


def barrier() -> None:
    if _hvd:
        _hvd.allreduce(tf.constant(0.0), name="barrier")
