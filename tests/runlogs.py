"""Reading what a training run left behind: its dllogger records, logged steps and checkpoint.

The log is read by `effnet.core.runlog`, the one reader the tools and the launcher use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from effnet.core.paths import LOG_FILENAME
from effnet.core.runlog import RunLog, read_log, step_key


def run_log(model_dir: Path) -> RunLog:
    return read_log(model_dir / LOG_FILENAME)


def records(model_dir: Path) -> list[dict]:
    return run_log(model_dir).records


def train_steps(model_dir: Path) -> list[tuple[int, int]]:
    """Every logged (epoch, step) in log order, a replayed step as often as it was logged, so that a test
    asserting each step once catches replays (`RunLog.train_steps()` would count them once)."""
    return [step_key(r) for r in run_log(model_dir).logged_steps()]


def checkpoint_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in k and not k.startswith("save_counter")}
