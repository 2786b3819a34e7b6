"""Reading what a training run left behind: its dllogger records, logged steps and checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from effnet.core.dllogger import parse_line


def records(model_dir: Path) -> list[dict]:
    return [r for r in map(parse_line, (model_dir / "log.json").read_text().splitlines()) if r]


def train_steps(model_dir: Path) -> list[tuple[int, int]]:
    return [tuple(r["step"]) for r in records(model_dir)
            if r["type"] == "LOG" and isinstance(r["step"], list) and len(r["step"]) == 2]


def checkpoint_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in k and not k.startswith("save_counter")}
