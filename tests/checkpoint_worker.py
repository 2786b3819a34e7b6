"""A process that writes checkpoints until it is killed (tests/test_health.py kills it mid-save).

    python -m tests.checkpoint_worker MODEL_DIR

Builds its variables and prints "ready", then waits for a line on stdin. Then it saves checkpoints
1 and 2, prints how long 2 took, prints "saving 3" and saves 3, 4, ... until it is killed.
Checkpoint N holds `values(N)` and global_step N, so a reader can tell whether what it restored is
bit-equal to a checkpoint that was written.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import tensorflow as tf

from effnet.train.checkpoint import Checkpointer, TrainState

PARTS, SIZE = 6, 4_000_000   # about 100 MB a checkpoint: a save takes long enough to be cut at several points


def values(number: int) -> list[np.ndarray]:
    rng = np.random.default_rng(number)
    return [rng.standard_normal(SIZE, dtype=np.float32) for _ in range(PARTS)]


def build(model_dir: str) -> tuple[Checkpointer, tf.Module, TrainState]:
    """The worker's checkpointer; the test builds the same to restore into."""
    weights, state = tf.Module(), TrainState()
    weights.parts = [tf.Variable(tf.zeros([SIZE]), name=f"part{i}") for i in range(PARTS)]
    return Checkpointer(model_dir, {"model": weights, "state": state}, keep=100, is_chief=True), weights, state


def main(model_dir: str) -> None:
    checkpointer, weights, state = build(model_dir)
    print("ready", flush=True)
    sys.stdin.readline()
    number = 1
    while True:
        for variable, value in zip(weights.parts, values(number)):
            variable.assign(value)
        state.global_step.assign(number)
        if number == 3:
            print("saving 3", flush=True)
        start = time.perf_counter()
        checkpointer.save(number)
        if number == 2:
            print(f"{time.perf_counter() - start:.4f}", flush=True)
        number += 1


if __name__ == "__main__":
    main(sys.argv[1])
