"""Where a training run reports: the dllogger run log, TensorBoard scalars and a tqdm bar.

The loop decides what happened; this module decides where it is shown, so the loop holds no
TensorBoard or terminal code and a run without TensorBoard or a terminal takes the same path.
"""
from __future__ import annotations

import os
import sys

import tensorflow as tf

from effnet.core.dllogger import DLLogger

PROGRESS_SCALARS = ("training_loss", "training_accuracy_top_1", "learning_rate", "examples/second")
EVAL_SCALARS = ("eval_loss", "eval_accuracy_top_1", "eval_accuracy_top_5")


class TrainReporter:
    """Rank 0 writes; other ranks' calls are no-ops (the logger itself ignores them)."""

    def __init__(self, logger: DLLogger, model_dir: str, tensorboard: bool, is_chief: bool) -> None:
        self.logger = logger
        self.is_chief = is_chief
        self._writer = (tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))
                        if tensorboard and is_chief else None)

    def log(self, step, data: dict) -> None:
        self.logger.log(step, data)

    def progress(self, epoch: int, step_in_epoch: int, global_step: int, record: dict) -> None:
        """One training interval: its loss, accuracy, learning rate and throughput."""
        self.logger.log((epoch, step_in_epoch), record)
        self._scalars(global_step, {key.replace("/", "_per_"): record[key] for key in PROGRESS_SCALARS})

    def evaluation(self, epoch: int, global_step: int, results: list[dict]) -> None:
        """A between-epochs evaluation of the raw and (if any) EMA weights."""
        for result in results:
            self.logger.log((epoch,), result)
            prefix = "ema_" if "EMA" in result["comment"] else ""
            self._scalars(global_step, {prefix + key: result[key] for key in EVAL_SCALARS})

    def _scalars(self, global_step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        with self._writer.as_default(step=global_step):
            for key, value in values.items():
                tf.summary.scalar(key, value)

    def progress_bar(self, total: int, initial: int, epoch: int):
        """A tqdm bar on interactive rank-0 runs; None in logs and batch jobs."""
        if not self.is_chief or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=f"epoch {epoch}", unit="step", leave=False)
