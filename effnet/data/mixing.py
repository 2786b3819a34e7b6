"""Mixup and CutMix as a plan: which partner each sample mixes with, and with what weights.

The reference's combined mode (mixup on half the batch, cutmix on the other half) is drawn
here by `mixing_plan` without touching a pixel; `blend` then mixes images or labels with it.
The plan is small enough to ship with a batch, so the input pipeline can blend the labels and
leave the images to the device (`--defer_img_mixing`), which blends them the same way.
"""
from __future__ import annotations

import tensorflow as tf

from effnet.data.seeds import seed_or_random, split_seed


def _sample_beta(batch: int | tf.Tensor, alpha: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[batch] samples of Beta(alpha, alpha) as G1 / (G1 + G2); 1 where alpha <= 0 (no mixing)."""
    alpha = tf.cast(alpha, tf.float32)
    enabled = alpha > 0.0
    safe_alpha = tf.where(enabled, alpha, 1.0)
    shape = tf.reshape(tf.cast(batch, tf.int32), [1])
    first_seed, second_seed = split_seed(seed, 2)
    first = tf.random.stateless_gamma(shape, first_seed, alpha=safe_alpha)
    second = tf.random.stateless_gamma(shape, second_seed, alpha=safe_alpha)
    return tf.where(enabled, tf.math.divide_no_nan(first, first + second), 1.0)


def mixup_weights(batch: int | tf.Tensor, alpha: float | tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
    """[batch] weights of each sample's own image, w = max(l, 1 - l), l ~ Beta(alpha, alpha).

    Keeping w >= 0.5 makes each sample dominated by its own image (all ones when alpha == 0).
    """
    weights = _sample_beta(batch, alpha, seed_or_random(seed))
    return tf.maximum(weights, 1.0 - weights)


def cutmix_masks(batch: int | tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor,
                 alpha: float | tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
    """[batch, height, width, 1] float masks, 1 inside each sample's pasted box.

    Box sides are sqrt(1 - l) of the image's, l ~ Beta(alpha, alpha), around a uniform
    random centre and clipped to the image (so the box may be smaller); no box when alpha == 0.
    """
    lambda_seed, y_seed, x_seed = split_seed(seed_or_random(seed), 3)
    ratio = tf.sqrt(1.0 - _sample_beta(batch, alpha, lambda_seed))
    shape = tf.reshape(tf.cast(batch, tf.int32), [1])

    def span(size: int | tf.Tensor, span_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        size = tf.cast(size, tf.int32)
        cut = tf.cast(ratio * tf.cast(size, tf.float32), tf.int32)
        center = tf.random.stateless_uniform(shape, span_seed, maxval=size, dtype=tf.int32)
        start = center - cut // 2
        return tf.clip_by_value(start, 0, size), tf.clip_by_value(start + cut, 0, size)

    def inside(size: int | tf.Tensor, bounds: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        positions = tf.range(tf.cast(size, tf.int32))[None, :]
        return (positions >= bounds[0][:, None]) & (positions < bounds[1][:, None])

    rows = inside(height, span(height, y_seed))
    cols = inside(width, span(width, x_seed))
    return tf.cast(rows[:, :, None, None] & cols[:, None, :, None], tf.float32)


def mixing_plan(batch: int | tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor,
                mixup_alpha: float | tf.Tensor, cutmix_alpha: float | tf.Tensor,
                seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """How to mix a batch, without touching pixels: (image_weights, label_weights, partner).

    Sample i becomes image_weights[i] * x[i] + (1 - image_weights[i]) * x[partner[i]], with
    image_weights [B, H, W, 1] and label_weights [B]. Both alphas > 0: mixup on the first half,
    cutmix on the second, each half pairing with its own reversed half; one > 0: that one on the
    whole batch; neither: weights of 1. The plan is small enough to ship with a batch so the
    blend itself can run on the device (`--defer_img_mixing`).
    """
    mixup_on = tf.cast(mixup_alpha, tf.float32) > 0.0
    cutmix_on = tf.cast(cutmix_alpha, tf.float32) > 0.0
    batch = tf.cast(batch, tf.int32)
    split = tf.where(mixup_on, tf.where(cutmix_on, batch // 2, batch), 0)
    mixup_seed, cutmix_seed = split_seed(seed_or_random(seed), 2)
    weights = mixup_weights(split, mixup_alpha, mixup_seed)
    masks = cutmix_masks(batch - split, height, width, cutmix_alpha, cutmix_seed)
    image_weights = tf.concat([
        tf.broadcast_to(weights[:, None, None, None], tf.stack([split, tf.cast(height, tf.int32),
                                                                tf.cast(width, tf.int32), 1])),
        1.0 - masks,
    ], axis=0)
    label_weights = tf.concat([weights, 1.0 - tf.reduce_mean(masks, axis=[1, 2, 3])], axis=0)
    index = tf.range(batch)
    partner = tf.where(index < split, split - 1 - index, batch - 1 + split - index)
    return image_weights, label_weights, partner


def blend(values: tf.Tensor, weights: tf.Tensor, partner: tf.Tensor) -> tf.Tensor:
    """weights * values + (1 - weights) * values[partner]; weights broadcast over trailing axes."""
    weights = tf.cast(weights, values.dtype)
    while len(weights.shape) < len(values.shape):
        weights = weights[..., None]
    return weights * values + (1 - weights) * tf.gather(values, partner)
