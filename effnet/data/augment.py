"""AutoAugment, RandAugment, mixup and cutmix written in plain TensorFlow ops.

The EfficientNet recipes train with the augmentations of the TF Model Garden / TPU
reference (AutoAugment policy v0 for B0-B4, RandAugment for the larger models, mixup
and cutmix in some configurations). Reimplementing them here with graph-compatible
TensorFlow ops only (no PIL, no numpy, no private Keras APIs) lets them run inside
`tf.data.Dataset.map` on the input workers or inside a `tf.function` on the device,
with dynamic image sizes, and, when given a seed, as pure functions of (input, seed) so
every rank and epoch can be reproduced exactly. The pixel semantics follow PIL, which
the reference mimics: levels are in [0, 10] and scale linearly into each op's argument.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

MAX_LEVEL = 10.0
# Grey used by the reference for pixels that geometric ops and Cutout leave empty.
FILL_VALUE = 128
# ITU-R 601 luma weights (0.299, 0.587, 0.114) scaled by 2**16, as PIL's convert("L").
_LUMA_FIXED_POINT = (19595, 38470, 7471)


@dataclasses.dataclass(frozen=True)
class OpParams:
    """Pixel constants that turn a level into an amount; AutoAugment and RandAugment differ."""

    cutout_const: float = 100.0
    translate_const: float = 250.0


# An augmentation op as stored in OPS: fn(image_uint8 [H, W, 3], level in [0, 10],
# seed [2] int64 for its random choices, params) -> uint8 image of the same shape.
OpFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, OpParams], tf.Tensor]


# ----------------------------------------------------------------------------- seeds

def _seed_or_random(seed: tf.Tensor | None) -> tf.Tensor:
    """The given stateless seed as int64, or a fresh one from the global generator.

    Drawing a seed when none is given keeps a single (stateless) code path for both cases.
    """
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    return tf.cast(seed, tf.int64)


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent stateless seeds derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num), num=num)


def _random_sign(value: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`value` negated with probability 1/2: the reference randomises every geometric direction."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.where(flip, -value, value)


# ------------------------------------------------------------------------ pixel helpers

def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Clip a float image to [0, 255] and truncate to uint8, as PIL's blend does."""
    return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance: interpolate (factor in [0, 1]) or extrapolate from `degenerate` to `image`.

    factor 0 gives `degenerate`, 1 gives `image` exactly; both are float with integer values.
    """
    factor = tf.cast(factor, tf.float32)
    return _to_uint8(degenerate + factor * (image - degenerate))


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    """Luma [H, W, 1] as float, with PIL convert("L")'s 16-bit fixed-point ITU-R 601 weights."""
    weighted = tf.cast(image, tf.int32) * tf.constant(_LUMA_FIXED_POINT)
    luma = tf.bitwise.right_shift(tf.reduce_sum(weighted, axis=-1, keepdims=True) + 0x8000, 16)
    return tf.cast(luma, tf.float32)


# ------------------------------------------------------------------------ colour ops

def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Stretch each channel so its darkest pixel is 0 and brightest 255 (PIL, cutoff 0).

    The lookup table is built in float64 like PIL's so results match it exactly; a
    constant channel is left unchanged.
    """
    def stretch(channel: tf.Tensor) -> tf.Tensor:
        values = tf.cast(channel, tf.int32)
        lo = tf.cast(tf.reduce_min(values), tf.float64)
        hi = tf.cast(tf.reduce_max(values), tf.float64)
        scale = 255.0 / tf.maximum(hi - lo, 1.0)
        lut = tf.cast(tf.clip_by_value(tf.range(256, dtype=tf.float64) * scale - lo * scale, 0.0, 255.0), tf.int32)
        return tf.where(hi > lo, tf.gather(lut, values), values)

    channels = tf.unstack(image, num=3, axis=-1)
    return tf.cast(tf.stack([stretch(c) for c in channels], axis=-1), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Histogram-equalise each channel with PIL's lookup table.

    PIL spreads the histogram without counting the brightest value's pixels, so a channel
    whose pixels nearly all share one value (step 0) is left unchanged.
    """
    def equalize_channel(channel: tf.Tensor) -> tf.Tensor:
        values = tf.cast(channel, tf.int32)
        histogram = tf.math.bincount(values, minlength=256, maxlength=256)
        last_count = tf.gather(histogram, tf.reduce_max(values))
        step = (tf.size(values) - last_count) // 255
        safe_step = tf.maximum(step, 1)
        shifted_cumsum = tf.concat([[0], tf.cumsum(histogram)[:-1]], axis=0)
        lut = tf.minimum((shifted_cumsum + safe_step // 2) // safe_step, 255)
        return tf.where(step > 0, tf.gather(lut, values), values)

    channels = tf.unstack(image, num=3, axis=-1)
    return tf.cast(tf.stack([equalize_channel(c) for c in channels], axis=-1), tf.uint8)


def invert(image: tf.Tensor) -> tf.Tensor:
    """Photographic negative."""
    return 255 - image


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Keep the `bits` most significant bits of every value (8 bits leaves the image unchanged).

    At least one bit is kept: the TF reference shifts uint8 values, and TensorFlow clamps
    such shifts to 7, so its 0-bit posterize (AutoAugment level < 2.5) gives 0/128 images
    rather than PIL's black ones. We keep that training behaviour.
    """
    shift = tf.minimum(8 - tf.cast(bits, tf.int32), 7)
    values = tf.bitwise.left_shift(tf.bitwise.right_shift(tf.cast(image, tf.int32), shift), shift)
    return tf.cast(values, tf.uint8)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Invert the pixels at or above `threshold` (256 leaves the image unchanged)."""
    values = tf.cast(image, tf.int32)
    return tf.cast(tf.where(values < tf.cast(threshold, tf.int32), values, 255 - values), tf.uint8)


def solarize_add(image: tf.Tensor, addition: tf.Tensor, threshold: int = 128) -> tf.Tensor:
    """Add `addition` (saturating) to the pixels below `threshold`."""
    values = tf.cast(image, tf.int32)
    added = tf.clip_by_value(values + tf.cast(addition, tf.int32), 0, 255)
    return tf.cast(tf.where(values < threshold, added, values), tf.uint8)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Saturation: blend with the grey version (0 grey, 1 unchanged, >1 more saturated)."""
    pixels = tf.cast(image, tf.float32)
    return _blend(tf.broadcast_to(_grayscale(image), tf.shape(pixels)), pixels, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with a flat image at the mean luma (0 flat, 1 unchanged, >1 more contrast)."""
    mean = tf.round(tf.reduce_mean(_grayscale(image)))
    pixels = tf.cast(image, tf.float32)
    return _blend(tf.fill(tf.shape(pixels), mean), pixels, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with black (0 black, 1 unchanged, >1 brighter)."""
    pixels = tf.cast(image, tf.float32)
    return _blend(tf.zeros_like(pixels), pixels, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with PIL's SMOOTH-filtered image (0 smooth, 1 unchanged, >1 sharper).

    PIL smooths with [[1,1,1],[1,5,1],[1,1,1]]/13, rounds, and copies the one-pixel border
    from the original, so border pixels never change.
    """
    pixels = tf.cast(image, tf.float32)
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.round(tf.nn.depthwise_conv2d(pixels[None], kernel, [1, 1, 1, 1], "SAME")[0])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, cols = tf.range(height)[:, None, None], tf.range(width)[None, :, None]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return _blend(tf.where(interior, smooth, pixels), pixels, factor)


def cutout(image: tf.Tensor, pad_size: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Grey out a square of side 2*pad_size around a random centre, clipped to the image."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    y_seed, x_seed = _split(seed, 2)
    center_y = tf.random.stateless_uniform([], y_seed, maxval=height, dtype=tf.int32)
    center_x = tf.random.stateless_uniform([], x_seed, maxval=width, dtype=tf.int32)
    pad = tf.cast(pad_size, tf.int32)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = ((rows >= center_y - pad) & (rows < center_y + pad)
              & (cols >= center_x - pad) & (cols < center_x + pad))
    return tf.where(inside, tf.constant(FILL_VALUE, tf.uint8), image)


# --------------------------------------------------------------------- geometric ops

def _transform(image: tf.Tensor, transform: Sequence[tf.Tensor]) -> tf.Tensor:
    """Apply a projective transform (output pixel -> input pixel map, 8 entries).

    Nearest-neighbour sampling as in the reference; pixels from outside the image are grey.
    """
    transform = tf.cast(tf.stack(transform), tf.float32)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=float(FILL_VALUE), interpolation="NEAREST", fill_mode="CONSTANT")
    return tf.ensure_shape(out[0], image.shape)


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """Rotate about the image centre by `degrees`."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0] - 1, tf.float32)
    width = tf.cast(tf.shape(image)[1] - 1, tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
    """Shear horizontally: input x = x + shear * y."""
    return _transform(image, [1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
    """Shear vertically: input y = y + shear * x."""
    return _transform(image, [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """Shift the content left by `pixels` (right when negative)."""
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """Shift the content up by `pixels` (down when negative)."""
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


# ------------------------------------------------------------ levels -> op arguments

def _scaled(level: tf.Tensor, maximum: float) -> tf.Tensor:
    """level / 10 * maximum, computed as level * maximum / 10 so whole results stay exact."""
    return tf.cast(level, tf.float32) * maximum / MAX_LEVEL


def _scaled_int(level: tf.Tensor, maximum: float) -> tf.Tensor:
    """int(level / 10 * maximum) for non-negative levels."""
    return tf.cast(tf.floor(_scaled(level, maximum)), tf.int32)


def _enhance_factor(level: tf.Tensor) -> tf.Tensor:
    """Enhancement factor in [0.1, 1.9]."""
    return _scaled(level, 1.8) + 0.1


def _level_op(op: Callable[[tf.Tensor], tf.Tensor]) -> OpFn:
    """Adapt an op that ignores the level (AutoContrast, Equalize, Invert) to OpFn."""
    def apply(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del level, seed, params
        return op(image)
    return apply


def _enhance_op(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> OpFn:
    """Adapt an enhancement op (Color, Contrast, Brightness, Sharpness) to OpFn."""
    def apply(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del seed, params
        return op(image, _enhance_factor(level))
    return apply


def _rotate_op(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Rotate up to 30 degrees with a random sign."""
    del params
    return rotate(image, _random_sign(_scaled(level, 30.0), seed))


def _shear_op(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> OpFn:
    """Adapt ShearX/ShearY: shear up to 0.3 with a random sign."""
    def apply(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del params
        return op(image, _random_sign(_scaled(level, 0.3), seed))
    return apply


def _translate_op(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> OpFn:
    """Adapt TranslateX/TranslateY: up to translate_const pixels with a random sign."""
    def apply(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        return op(image, _random_sign(_scaled(level, params.translate_const), seed))
    return apply


def _posterize_op(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Posterize to int(level / 10 * 4) bits (at least 1, see `posterize`)."""
    del seed, params
    return posterize(image, _scaled_int(level, 4.0))


def _solarize_op(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Solarize above a threshold of up to 256 (level 10 leaves the image unchanged)."""
    del seed, params
    return solarize(image, _scaled_int(level, 256.0))


def _solarize_add_op(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Brighten the dark half (< 128) by up to 110."""
    del seed, params
    return solarize_add(image, _scaled_int(level, 110.0))


def _cutout_op(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Cutout with a half-side of up to cutout_const pixels."""
    return cutout(image, _scaled_int(level, params.cutout_const), seed)


# Every op of the reference, by its reference name, as fn(image, level, seed, params).
OPS: Mapping[str, OpFn] = {
    "AutoContrast": _level_op(autocontrast),
    "Equalize": _level_op(equalize),
    "Invert": _level_op(invert),
    "Rotate": _rotate_op,
    "Posterize": _posterize_op,
    "Solarize": _solarize_op,
    "SolarizeAdd": _solarize_add_op,
    "Color": _enhance_op(color),
    "Contrast": _enhance_op(contrast),
    "Brightness": _enhance_op(brightness),
    "Sharpness": _enhance_op(sharpness),
    "ShearX": _shear_op(shear_x),
    "ShearY": _shear_op(shear_y),
    "TranslateX": _translate_op(translate_x),
    "TranslateY": _translate_op(translate_y),
    "Cutout": _cutout_op,
}


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


def _apply_op_at(image: tf.Tensor, index: tf.Tensor, level: tf.Tensor, seed: tf.Tensor,
                 params: OpParams) -> tf.Tensor:
    """Apply the op chosen by a tensor index: 0 is identity, i > 0 is the (i-1)-th op of OPS.

    One switch over all ops keeps the graph small (a few seconds less to trace) no matter
    how many (op, level) combinations a policy lists.
    """
    branches = [functools.partial(tf.identity, image)]
    branches += [functools.partial(op, image, level, seed, params) for op in OPS.values()]
    return tf.ensure_shape(tf.switch_case(index, branches), image.shape)


class AutoAugment:
    """AutoAugment with a fixed policy: one random sub-policy per image (reference v0 by default).

    Each of the sub-policy's steps then applies its op at its level with its probability.
    """

    def __init__(self, policy: str = "v0", cutout_const: float = 100, translate_const: float = 250) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {', '.join(sorted(POLICIES))}")
        self.policy = POLICIES[policy]
        self.params = OpParams(cutout_const=float(cutout_const), translate_const=float(translate_const))
        op_numbers = {name: number for number, name in enumerate(OPS, start=1)}
        # [sub-policies, steps] tables, so the chosen sub-policy is a gather, not a graph branch.
        self._op_numbers = [[op_numbers[name] for name, _, _ in sub] for sub in self.policy]
        self._probs = [[prob for _, prob, _ in sub] for sub in self.policy]
        self._levels = [[level for _, _, level in sub] for sub in self.policy]

    def __call__(self, image: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Augment one uint8 [H, W, 3] image; with a [2] int seed the result is a function of (image, seed)."""
        choice_seed, *step_seeds = _split(_seed_or_random(seed), 1 + len(self._op_numbers[0]))
        chosen = tf.random.stateless_uniform([], choice_seed, maxval=len(self.policy), dtype=tf.int32)
        op_numbers = tf.gather(tf.constant(self._op_numbers, tf.int32), chosen)
        probs = tf.gather(tf.constant(self._probs, tf.float32), chosen)
        levels = tf.gather(tf.constant(self._levels, tf.float32), chosen)
        for step, step_seed in enumerate(step_seeds):
            gate_seed, op_seed = _split(step_seed, 2)
            applied = tf.random.stateless_uniform([], gate_seed) < probs[step]
            index = tf.where(applied, op_numbers[step], 0)
            image = _apply_op_at(image, index, levels[step], op_seed, self.params)
        return image


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

    def __call__(self, image: tf.Tensor, magnitude: float | tf.Tensor | None = None,
                 seed: tf.Tensor | None = None) -> tf.Tensor:
        """Augment one uint8 [H, W, 3] image.

        `magnitude` (python float or scalar tensor) overrides the constructor's, so a
        progressive schedule can change it per stage without rebuilding the pipeline.
        """
        level = tf.cast(self.magnitude if magnitude is None else magnitude, tf.float32)
        for layer_seed in _split(_seed_or_random(seed), self.num_layers):
            choice_seed, op_seed = _split(layer_seed, 2)
            index = tf.random.stateless_uniform([], choice_seed, maxval=len(OPS) + 1, dtype=tf.int32)
            image = _apply_op_at(image, index, level, op_seed, self.params)
        return image


# -------------------------------------------------------------------- batch mixing

def _sample_beta(batch: int | tf.Tensor, alpha: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[batch] samples of Beta(alpha, alpha) as G1 / (G1 + G2); 1 where alpha <= 0 (no mixing)."""
    alpha = tf.cast(alpha, tf.float32)
    enabled = alpha > 0.0
    safe_alpha = tf.where(enabled, alpha, 1.0)
    shape = tf.reshape(tf.cast(batch, tf.int32), [1])
    first_seed, second_seed = _split(seed, 2)
    first = tf.random.stateless_gamma(shape, first_seed, alpha=safe_alpha)
    second = tf.random.stateless_gamma(shape, second_seed, alpha=safe_alpha)
    return tf.where(enabled, tf.math.divide_no_nan(first, first + second), 1.0)


def mixup_weights(batch: int | tf.Tensor, alpha: float | tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
    """[batch] weights of each sample's own image, w = max(l, 1 - l), l ~ Beta(alpha, alpha).

    Keeping w >= 0.5 makes each sample dominated by its own image (all ones when alpha == 0).
    """
    weights = _sample_beta(batch, alpha, _seed_or_random(seed))
    return tf.maximum(weights, 1.0 - weights)


def _mix(images: tf.Tensor, labels: tf.Tensor, image_weights: tf.Tensor,
         label_weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend every sample with its partner in the reversed batch.

    Written as a*x + (1-a)*x_rev so a weight of exactly 1 (or 0) returns x (or x_rev) bit for bit.
    """
    image_weights = tf.cast(image_weights, images.dtype)
    label_weights = tf.cast(label_weights, labels.dtype)[:, None]
    mixed_images = image_weights * images + (1 - image_weights) * tf.reverse(images, [0])
    mixed_labels = label_weights * labels + (1 - label_weights) * tf.reverse(labels, [0])
    return mixed_images, mixed_labels


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float | tf.Tensor,
          seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup of float [B, H, W, C] images and [B, classes] soft labels with the reversed batch."""
    weights = mixup_weights(tf.shape(images)[0], alpha, seed)
    return _mix(images, labels, weights[:, None, None, None], weights)


def cutmix_masks(batch: int | tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor,
                 alpha: float | tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
    """[batch, height, width, 1] float masks, 1 inside each sample's pasted box.

    Box sides are sqrt(1 - l) of the image's, l ~ Beta(alpha, alpha), around a uniform
    random centre and clipped to the image (so the box may be smaller); no box when alpha == 0.
    """
    lambda_seed, y_seed, x_seed = _split(_seed_or_random(seed), 3)
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


def cutmix(images: tf.Tensor, labels: tf.Tensor, alpha: float | tf.Tensor,
           seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix: paste a box from the reversed batch; labels weighted by the pasted area actually used."""
    shape = tf.shape(images)
    masks = cutmix_masks(shape[0], shape[1], shape[2], alpha, seed)
    pasted_fraction = tf.reduce_mean(masks, axis=[1, 2, 3])
    return _mix(images, labels, 1.0 - masks, 1.0 - pasted_fraction)


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
    mixup_seed, cutmix_seed = _split(_seed_or_random(seed), 2)
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


def apply_mixing(images: tf.Tensor, labels: tf.Tensor, mixup_alpha: float | tf.Tensor,
                 cutmix_alpha: float | tf.Tensor,
                 seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup and/or CutMix on a batch, as the reference's combined mode (see `mixing_plan`)."""
    shape = tf.shape(images)
    image_weights, label_weights, partner = mixing_plan(shape[0], shape[1], shape[2], mixup_alpha, cutmix_alpha, seed)
    return blend(images, image_weights, partner), blend(labels, label_weights, partner)
