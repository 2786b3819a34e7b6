"""Stateless seeds shared by the augmentation ops, policies and batch mixing.

Everything random in augmentation draws from a [2] int64 stateless seed, so a result is a
pure function of (input, seed) and every rank and epoch can be reproduced exactly. These two
helpers are the only way the ops (`ops.py`), the policies (`policies.py`) and mixup/cutmix
(`mixing.py`) make and split seeds, so all three derive them the same way.
"""
from __future__ import annotations

import tensorflow as tf


def seed_or_random(seed: tf.Tensor | None) -> tf.Tensor:
    """The given stateless seed as int64, or a fresh one from the global generator.

    Drawing a seed when none is given keeps a single (stateless) code path for both cases.
    """
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    return tf.cast(seed, tf.int64)


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent stateless seeds derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num), num=num)
