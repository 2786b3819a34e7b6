"""Learning-rate schedules as pure functions of the optimizer step, wrapped for Keras.

lr rises linearly from 0 over the warmup, then decays: cosine to 0 at the last step,
or exponential in staircase steps of `decay_epochs`. A pure function of the step means a
resumed run gets exactly the rate an uninterrupted run would.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then `cosine` to 0 or `exponential` staircase decay."""

    def __init__(
        self,
        peak: float,
        total_steps: int,
        warmup_steps: int,
        decay: str = "cosine",
        decay_rate: float = 0.97,
        decay_steps: float = 1.0,
    ) -> None:
        if decay not in ("cosine", "exponential"):
            raise ValueError(f"unknown decay {decay!r}; valid: cosine, exponential")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.decay_rate = float(decay_rate)
        self.decay_steps = max(float(decay_steps), 1.0)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(self.warmup_steps)
        if self.decay == "cosine":
            span = max(float(self.total_steps - self.warmup_steps), 1.0)
            progress = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
            decayed = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        else:
            decayed = self.peak * tf.pow(self.decay_rate, tf.floor(step / self.decay_steps))
        if self.warmup_steps > 0:
            return tf.where(step < warmup, self.peak * step / warmup, decayed)
        return decayed

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
        }
