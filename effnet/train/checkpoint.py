"""Checkpoints: the complete training state, written atomically, restored with fallback.

A checkpoint holds the model (weights, BN statistics, dropout RNG state), the optimizer
(slots, iteration, loss scale), the EMA shadows and a `TrainState`: global step, epoch,
steps done in the epoch, and the position in the epoch's record stream. The data pipeline is
a pure function of those, so a resumed run continues exactly where the checkpoint was taken.

TensorFlow writes the data and index files first and then atomically replaces the
`checkpoint` index file, so a save cut short leaves the previous checkpoint current (and its
`ckpt-N_temp` directory, which a training restore removes). If the newest checkpoint is
unreadable anyway, restore falls back to the one before.
"""
from __future__ import annotations

import glob
import os
import shutil
from typing import Literal

import keras
import tensorflow as tf

from effnet.core.errors import ConfigError
from effnet.core.paths import CHECKPOINTS_DIRNAME
from effnet.model import every_layer

ResumeMode = Literal["auto", "must", "never"]
CHECKPOINT_NAME = "ckpt"


class TrainState(tf.Module):
    """Counters that place a run in its schedule and its data."""

    def __init__(self) -> None:
        super().__init__(name="train_state")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.next_record = tf.Variable(0, dtype=tf.int64, trainable=False, name="next_record")
        self.skipped_records = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_records")

    def as_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name).numpy()) for name in
                ("global_step", "epoch", "step_in_epoch", "next_record", "skipped_records")}


def seed_generators(model: keras.Model) -> list[keras.random.SeedGenerator]:
    """The `keras.random.SeedGenerator`s that the model's layers hold (dropout, drop-connect), in layer order."""
    return [value for layer in every_layer(model) for value in vars(layer).values()
            if isinstance(value, keras.random.SeedGenerator)]


class RngState(tf.Module):
    """The model's Keras seed-generator states (dropout, drop-connect).

    tf.train.Checkpoint does not reach them through a Keras model, and without them a resumed
    run would draw different dropout masks from an uninterrupted one. They are found through
    the public `SeedGenerator.state` of each generator a layer holds, not by variable name.
    """

    def __init__(self, model: keras.Model) -> None:
        super().__init__(name="rng_state")
        self.states = [generator.state.value for generator in seed_generators(model)]


class Checkpointer:
    """Owns `model_dir/checkpoints`: saving (chief only), retention and resume."""

    def __init__(self, model_dir: str, objects: dict[str, object], keep: int, is_chief: bool) -> None:
        self.directory = os.path.join(model_dir, CHECKPOINTS_DIRNAME)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep,
                                                  checkpoint_name=CHECKPOINT_NAME)
        self.is_chief = is_chief

    def save(self, number: int) -> str | None:
        """Write checkpoint `number` (the global step) on the chief; others return None."""
        if not self.is_chief:
            return None
        return self.manager.save(checkpoint_number=number)

    def prefix(self, number: int) -> str:
        """The path `save(number)` writes (and returns on the chief), for ranks that did not write it."""
        return os.path.join(self.directory, f"{CHECKPOINT_NAME}-{number}")

    def available(self) -> list[str]:
        """Checkpoint prefixes, oldest first, that have both their index and data files."""
        found = []
        for prefix in self.manager.checkpoints:
            if os.path.exists(prefix + ".index"):
                found.append(prefix)
        return found

    def restore(self, mode: ResumeMode, partial: bool = False) -> str | None:
        """Restore the newest readable checkpoint. Returns its path, or None to start fresh.

        `must` without a readable checkpoint is an error; `never` ignores existing ones.
        `partial` is for eval/predict, which restore the model (and EMA) without the optimizer.
        """
        if self.is_chief and not partial:
            self._remove_cut_saves()
        if mode == "never":
            return None
        failures = []
        for prefix in reversed(self.available()):
            try:
                status = self.checkpoint.restore(prefix)
                if partial:
                    status.expect_partial()
                status.assert_existing_objects_matched()
                return prefix
            except Exception as err:  # any reader failure (DataLoss, IndexError, ...) means unreadable
                failures.append(f"{os.path.basename(prefix)}: {type(err).__name__}")
        if mode == "must":
            detail = f" (unreadable: {', '.join(failures)})" if failures else ""
            raise ConfigError(f"--resume must: no readable checkpoint in {self.directory}{detail}")
        return None

    def _remove_cut_saves(self) -> None:
        """Delete what saves cut short (a SIGKILL mid-write) left: `ckpt-N_temp` directories. Only a
        training run's chief does this, before it saves, when no other process writes here."""
        for leftover in glob.glob(os.path.join(glob.escape(self.directory), f"{CHECKPOINT_NAME}-*_temp")):
            shutil.rmtree(leftover, ignore_errors=True)


def build_optimizer_slots(optimizer: keras.optimizers.Optimizer, model: keras.Model) -> None:
    """Create the optimizer's variables now, so a restore fills them instead of deferring."""
    optimizer.build(model.trainable_variables)
