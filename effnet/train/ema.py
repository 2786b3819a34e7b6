"""Exponential moving average of the weights, BatchNorm statistics included.

decay_t = min(decay, (1 + t) / (10 + t)) where t counts updates, so early averages follow
the fast-moving weights instead of the random init. The shadows are tf.Variables in a
tf.Module, so they are part of every checkpoint; `swapped()` puts them into the model for
evaluation and swaps back afterwards.
"""
from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


def averaged_variables(model: keras.Model) -> list:
    """Trainable weights and BN moving statistics: every floating-point model variable.

    Integer variables (dropout seed-generator states) are not weights and are skipped.
    """
    return [v for v in model.variables if tf.as_dtype(v.dtype).is_floating]


class ExponentialMovingAverage(tf.Module):
    def __init__(self, model: keras.Model, decay: float) -> None:
        super().__init__(name="ema")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._sources = averaged_variables(model)
        self.shadows = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name="shadow")
                        for v in self._sources]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")

    def current_decay(self) -> tf.Tensor:
        t = tf.cast(self.updates, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + t) / (10.0 + t))

    @tf.function
    def update(self) -> None:
        decay = self.current_decay()
        for shadow, source in zip(self.shadows, self._sources):
            value = tf.cast(tf.convert_to_tensor(source), shadow.dtype)
            shadow.assign(decay * shadow + (1.0 - decay) * value)
        self.updates.assign_add(1)

    def _swap(self) -> None:
        for shadow, source in zip(self.shadows, self._sources):
            current = tf.identity(tf.convert_to_tensor(source))
            source.assign(tf.cast(shadow, source.dtype))
            shadow.assign(tf.cast(current, shadow.dtype))

    @contextlib.contextmanager
    def swapped(self):
        """Evaluate with the averaged weights inside the block; the raw ones come back after."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def copy_to_model(self) -> None:
        """Overwrite the model with the averages (for exporting the EMA weights)."""
        for shadow, source in zip(self.shadows, self._sources):
            source.assign(tf.cast(shadow, source.dtype))
