"""AutoAugment and RandAugment: which op each image gets, and running them on a whole batch.

The EfficientNet recipes train with AutoAugment policy v0 (B0-B4) or RandAugment (larger
models), as the TF Model Garden / TPU reference does. A policy draws, per image and step, one
of the 16 ops of `ops.py` (or identity) and its level; `apply_batch` then runs every op once
per step on just the images that drew it, so a uint8 batch is augmented image by image at the
cost of a few batched ops. Given a seed, the result is a pure function of (images, seed), so
the input pipeline and the device (`--defer_img_mixing`) augment a batch identically.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from effnet.data.ops import OPS, OpParams
from effnet.data.seeds import seed_or_random, split_seed

# Op number i > 0 is the (i-1)-th op of OPS; 0 is identity.
OP_NUMBERS: Mapping[str, int] = {name: number for number, name in enumerate(OPS, start=1)}

# One step of a policy for every image (all [] for one image, or all [B]): the op number each
# image drew (0 for identity or a step whose gate stayed shut), its level in [0, 10], and the
# [2] seed for the random choices of the ops.
Step = tuple[tf.Tensor, tf.Tensor, tf.Tensor]


def _apply_ops_grouped(images: tf.Tensor, indices: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor,
                       params: OpParams, candidates: Sequence[int]) -> tf.Tensor:
    """Apply to every image of a batch the op its [B] index chooses (0 identity, see OP_NUMBERS).

    The batch is partitioned by op, each candidate op runs once on its (possibly empty)
    group, and the groups are stitched back in order: every pixel goes through one op only.
    Indices outside `candidates` (ops the caller knows cannot be drawn) act as identity.
    Each op draws from `seed` folded with its number, so groups draw independently.
    """
    group_of = [0] * (len(OPS) + 1)
    for group, number in enumerate(candidates, start=1):
        group_of[number] = group
    groups = tf.gather(tf.constant(group_of, tf.int32), indices)
    num_groups = len(candidates) + 1
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), groups, num_groups)
    image_groups = tf.dynamic_partition(images, groups, num_groups)
    level_groups = tf.dynamic_partition(levels, groups, num_groups)
    ops = list(OPS.values())
    outputs = [image_groups[0]]
    for group, number in enumerate(candidates, start=1):
        op_seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(number, tf.int64))
        outputs.append(ops[number - 1](image_groups[group], level_groups[group], op_seed, params))
    return tf.ensure_shape(tf.dynamic_stitch(positions, outputs), images.shape)


# The augmenters use no Python control flow on tensors, so AutoGraph has nothing to convert;
# skipping its source transformation of every op they call makes tracing them several times faster.
_no_autograph = tf.autograph.experimental.do_not_convert


def _check_batch(images: tf.Tensor) -> tf.Tensor:
    """`images` as a uint8 tensor of rank 4, or a clear error."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.dtype != tf.uint8:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {images.dtype.name} {images.shape}")
    return images


# --------------------------------------------------------------------- AutoAugment

# (op name, probability, level) steps; each sub-policy is applied as a whole. The
# sub-policies of one policy have the same number of steps (AutoAugment stacks them).
SubPolicy = tuple[tuple[str, float, float], ...]

POLICIES: Mapping[str, tuple[SubPolicy, ...]] = {
    "v0": (
        (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
        (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
        (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
        (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
        (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
        (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
        (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
        (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
        (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
        (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
        (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
        (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
        (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
        (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
        (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
        (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
        (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
        (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
        (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
        (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
        (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
        (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
        (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
        (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
        (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
    ),
}


class AutoAugment:
    """AutoAugment with a fixed policy: one random sub-policy per image (reference v0 by default).

    Each of the sub-policy's steps then applies its op at its level with its probability.
    """

    def __init__(self, policy: str = "v0", cutout_const: float = 100, translate_const: float = 250) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {', '.join(sorted(POLICIES))}")
        self.policy = POLICIES[policy]
        self.params = OpParams(cutout_const=float(cutout_const), translate_const=float(translate_const))
        # [sub-policies, steps] tables, so the chosen sub-policy is a gather, not a graph branch.
        self._op_numbers = [[OP_NUMBERS[name] for name, _, _ in sub] for sub in self.policy]
        self._probs = [[prob for _, prob, _ in sub] for sub in self.policy]
        self._levels = [[level for _, _, level in sub] for sub in self.policy]
        # Per step, the ops that step can apply: apply_batch runs only these.
        self._step_candidates = [
            sorted({OP_NUMBERS[sub[step][0]] for sub in self.policy if sub[step][1] > 0})
            for step in range(len(self.policy[0]))]

    def draw_steps(self, shape: tf.Tensor | list[int], seed: tf.Tensor | None = None) -> list[Step]:
        """Every step's draws for images of `shape` ([] or [B]): a sub-policy each, then per step its gate.

        With a [2] int seed the draws are a function of (shape, seed).
        """
        choice_seed, *step_seeds = split_seed(seed_or_random(seed), 1 + len(self._op_numbers[0]))
        chosen = tf.random.stateless_uniform(shape, choice_seed, maxval=len(self.policy), dtype=tf.int32)
        op_numbers = tf.gather(tf.constant(self._op_numbers, tf.int32), chosen)
        probs = tf.gather(tf.constant(self._probs, tf.float32), chosen)
        levels = tf.gather(tf.constant(self._levels, tf.float32), chosen)
        steps = []
        for step, step_seed in enumerate(step_seeds):
            gate_seed, op_seed = split_seed(step_seed, 2)
            applied = tf.random.stateless_uniform(shape, gate_seed) < probs[..., step]
            steps.append((tf.where(applied, op_numbers[..., step], 0), levels[..., step], op_seed))
        return steps

    @_no_autograph
    def apply_batch(self, images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Augment a uint8 [B, H, W, 3] batch (B may be unknown), each image with its own sub-policy and gates.

        With a [2] int seed the result is a function of (images, seed).
        """
        images = _check_batch(images)
        for step, (indices, levels, op_seed) in enumerate(self.draw_steps(tf.shape(images)[:1], seed)):
            images = _apply_ops_grouped(images, indices, levels, op_seed, self.params, self._step_candidates[step])
        return images


# ---------------------------------------------------------------------- RandAugment

class RandAugment:
    """RandAugment: `num_layers` times, one of the 16 ops or identity, uniformly, at one magnitude."""

    def __init__(self, num_layers: int = 2, magnitude: float = 10.0, cutout_const: float = 40,
                 translate_const: float = 100) -> None:
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers
        self.magnitude = magnitude
        self.params = OpParams(cutout_const=float(cutout_const), translate_const=float(translate_const))

    def draw_steps(self, shape: tf.Tensor | list[int], seed: tf.Tensor | None = None,
                   magnitude: float | tf.Tensor | None = None) -> list[Step]:
        """Every layer's draws for images of `shape` ([] or [B]), all at level `magnitude`.

        `magnitude` (python float or scalar tensor) overrides the constructor's, so a
        progressive schedule can change it per stage without rebuilding the pipeline.
        """
        levels = tf.broadcast_to(tf.cast(self.magnitude if magnitude is None else magnitude, tf.float32), shape)
        steps = []
        for layer_seed in split_seed(seed_or_random(seed), self.num_layers):
            choice_seed, op_seed = split_seed(layer_seed, 2)
            indices = tf.random.stateless_uniform(shape, choice_seed, maxval=len(OPS) + 1, dtype=tf.int32)
            steps.append((indices, levels, op_seed))
        return steps

    @_no_autograph
    def apply_batch(self, images: tf.Tensor, seed: tf.Tensor | None = None,
                    magnitude: float | tf.Tensor | None = None) -> tf.Tensor:
        """Augment a uint8 [B, H, W, 3] batch (B may be unknown), each image with its own ops.

        `magnitude` is a scalar for the whole batch (see `draw_steps`).
        """
        images = _check_batch(images)
        for indices, levels, op_seed in self.draw_steps(tf.shape(images)[:1], seed, magnitude):
            images = _apply_ops_grouped(images, indices, levels, op_seed, self.params, range(1, len(OPS) + 1))
        return images
