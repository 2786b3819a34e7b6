"""The 16 image ops of AutoAugment and RandAugment, on uint8 batches, in plain TensorFlow ops.

The EfficientNet recipes train with the augmentations of the TF Model Garden / TPU reference.
Reimplementing its ops here with graph-compatible TensorFlow ops only (no PIL, no numpy, no
private Keras APIs) lets them run inside `tf.data.Dataset.map` on the input workers or inside a
`tf.function` on the device, with dynamic image sizes, and, given a seed, as pure functions of
(input, seed). The pixel semantics follow PIL, which the reference mimics.

Every op takes a batch uint8 [B, H, W, 3] and one argument per image ([B] tensors). On CPUs the
cost is in passes over the pixels, so ops make few and stay in uint8 where the arithmetic
allows: per-value maps are bit tricks (Invert, Posterize, Solarize, SolarizeAdd) or one flat
lookup table for all images and channels (AutoContrast, Equalize); only the blends need float.
`OPS` holds every op by its reference name in the form the policies (`policies.py`) call:
levels in [0, 10] that scale linearly into each op's argument.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from effnet.data.seeds import split_seed

MAX_LEVEL = 10.0
# Grey used by the reference for pixels that geometric ops and Cutout leave empty.
FILL_VALUE = 128
# ITU-R 601 luma weights (0.299, 0.587, 0.114) scaled by 2**16, as PIL's convert("L").
_LUMA_FIXED_POINT = (19595, 38470, 7471)
# PIL's SMOOTH filter: [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, i.e. (3x3 box sum + 4 * centre) / 13.
_SMOOTH_DIVISOR = 13.0


@dataclasses.dataclass(frozen=True)
class OpParams:
    """Pixel constants that turn a level into an amount; AutoAugment and RandAugment differ."""

    cutout_const: float = 100.0
    translate_const: float = 250.0


# An augmentation op as stored in OPS: fn(images uint8 [B, H, W, 3], levels in [0, 10] [B],
# seed [2] int64 for the random choices of the whole batch, params) -> uint8 images [B, H, W, 3].
OpFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, OpParams], tf.Tensor]


# ------------------------------------------------------------------------ pixel helpers

def _per_image(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """[B] per-image values as [B, 1, 1, 1], to broadcast over each image's pixels."""
    return tf.reshape(tf.cast(values, dtype), [-1, 1, 1, 1])


def _to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Clip float images to [0, 255] and truncate to uint8, as PIL's blend does."""
    return tf.cast(tf.clip_by_value(images, 0.0, 255.0), tf.uint8)


def _enhance_blend(degenerate: tf.Tensor, images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance: interpolate (factor in [0, 1]) or extrapolate from `degenerate` to `images`.

    factor ([B], one per image) 0 gives `degenerate`, 1 gives `images` exactly; both are
    float with integer values.
    """
    return _to_uint8(degenerate + _per_image(factor, tf.float32) * (images - degenerate))


def _luma(images: tf.Tensor) -> tf.Tensor:
    """Luma [B, H, W] as float, with PIL convert("L")'s 16-bit fixed-point ITU-R 601 weights.

    The weights / 2**16 are exact in float32 and every product and partial sum is a
    multiple of 2**-16 below 256, so the fixed-point sum is exact; + 0.5 and floor is PIL's
    rounding shift. Channel planes (a cheap uint8 unstack) avoid slow broadcasts over the
    innermost axis.
    """
    red, green, blue = (tf.cast(plane, tf.float32) for plane in tf.unstack(images, num=3, axis=-1))
    red_w, green_w, blue_w = (w / 65536.0 for w in _LUMA_FIXED_POINT)
    return tf.floor(red * red_w + green * green_w + blue * blue_w + 0.5)


def _channel_lut_indices(images: tf.Tensor) -> tf.Tensor:
    """int32 [B, H, W, 3]: each value plus 256 * (3 * image + channel), its entry in a flat [B * 3 * 256] table.

    One flat table serves every image and channel with a single bincount (histograms) and
    a single gather (lookup), instead of one of each per channel and image. The offsets are
    a tiled row plus a column, as broadcasting a [3] vector over the innermost axis is slow.
    """
    shape = tf.shape(images)
    channel_offsets = tf.tile(tf.constant([0, 256, 512]), shape[1:2] * shape[2:3])
    image_offsets = tf.range(shape[0]) * (3 * 256)
    offsets = channel_offsets[None, :] + image_offsets[:, None]
    values = tf.reshape(tf.cast(images, tf.int32), tf.stack([shape[0], -1]))
    return tf.reshape(values + offsets, shape)


def _lookup(tables: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Map every value through its image's and channel's uint8 table [B, 3, 256].

    `indices` come from `_channel_lut_indices`; gather_nd is the fastest single-value gather
    TensorFlow has on CPU.
    """
    return tf.gather_nd(tf.reshape(tables, [-1]), indices[..., None])


# ------------------------------------------------------------------------ colour ops

def autocontrast(images: tf.Tensor) -> tf.Tensor:
    """Stretch each channel so its darkest pixel is 0 and brightest 255 (PIL, cutoff 0).

    The lookup table is built in float64 like PIL's so results match it exactly; a
    constant channel is left unchanged.
    """
    lo = tf.cast(tf.reduce_min(images, axis=[1, 2]), tf.float64)[..., None]
    hi = tf.cast(tf.reduce_max(images, axis=[1, 2]), tf.float64)[..., None]
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    values = tf.range(256, dtype=tf.float64)
    stretched = tf.clip_by_value(values * scale - lo * scale, 0.0, 255.0)
    tables = tf.cast(tf.where(hi > lo, stretched, values), tf.uint8)
    return _lookup(tables, _channel_lut_indices(images))


def equalize(images: tf.Tensor) -> tf.Tensor:
    """Histogram-equalise each channel with PIL's lookup table.

    PIL spreads the histogram without counting the brightest value's pixels, so a channel
    whose pixels nearly all share one value (step 0) is left unchanged.
    """
    indices = _channel_lut_indices(images)
    bins = tf.shape(images)[0] * 3 * 256
    histograms = tf.reshape(tf.math.bincount(indices, minlength=bins, maxlength=bins), [-1, 3, 256])
    values = tf.range(256)
    brightest = tf.reduce_max(tf.where(histograms > 0, values, 0), axis=-1)
    last_count = tf.gather(histograms, brightest, batch_dims=2)
    step = (tf.shape(images)[1] * tf.shape(images)[2] - last_count)[..., None] // 255
    safe_step = tf.maximum(step, 1)
    shifted_cumsum = tf.cumsum(histograms, axis=-1, exclusive=True)
    tables = tf.minimum((shifted_cumsum + safe_step // 2) // safe_step, 255)
    tables = tf.cast(tf.where(step > 0, tables, values), tf.uint8)
    return _lookup(tables, indices)


def invert(images: tf.Tensor) -> tf.Tensor:
    """Photographic negative."""
    return tf.constant(255, tf.uint8) - images


def posterize(images: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Keep the `bits` most significant bits of every value (8 bits leaves an image unchanged).

    At least one bit is kept: the TF reference shifts uint8 values, and TensorFlow clamps
    such shifts to 7, so its 0-bit posterize (AutoAugment level < 2.5) gives 0/128 images
    rather than PIL's black ones. We keep that training behaviour. Computed as one AND
    with a per-image mask of the kept bits.
    """
    shift = tf.clip_by_value(8 - tf.cast(bits, tf.int32), 0, 7)
    mask = tf.bitwise.bitwise_and(tf.bitwise.left_shift(255, shift), 255)
    return tf.bitwise.bitwise_and(images, _per_image(mask, tf.uint8))


def solarize(images: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Invert the pixels at or above `threshold` (256 leaves an image unchanged).

    255 - v is v XOR 255, so this is one XOR with a mask that is 255 where v >= threshold.
    """
    threshold = tf.cast(threshold, tf.int32)
    lowest_inverted = _per_image(tf.clip_by_value(threshold, 0, 255), tf.uint8)
    inverts = _per_image(tf.where(threshold <= 255, 255, 0), tf.uint8)
    return tf.bitwise.bitwise_xor(images, tf.cast(images >= lowest_inverted, tf.uint8) * inverts)


def solarize_add(images: tf.Tensor, addition: tf.Tensor, threshold: int = 128) -> tf.Tensor:
    """Add `addition` (saturating) to the pixels below `threshold`, in uint8 arithmetic."""
    addition = tf.clip_by_value(tf.cast(addition, tf.int32), -255, 255)
    # Saturating add without overflow: clamp first to [max(-a, 0), 255 - max(a, 0)], then add
    # a modulo 256 (uint8 arithmetic wraps, which turns + (256 - |a|) into - |a|).
    low = _per_image(tf.maximum(-addition, 0), tf.uint8)
    high = _per_image(255 - tf.maximum(addition, 0), tf.uint8)
    added = tf.minimum(tf.maximum(images, low), high) + _per_image(tf.math.floormod(addition, 256), tf.uint8)
    if threshold > 255:
        return added
    below = tf.cast(images < tf.constant(max(threshold, 0), tf.uint8), tf.uint8)
    return images + below * (added - images)      # wraps back to exactly `added` where below


def color(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Saturation: blend with the grey version (0 grey, 1 unchanged, >1 more saturated)."""
    grey = tf.tile(_luma(images)[..., None], [1, 1, 1, 3])
    return _enhance_blend(grey, tf.cast(images, tf.float32), factor)


def contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with a flat image at the mean luma (0 flat, 1 unchanged, >1 more contrast).

    The luma sum is an exact integer, so the mean does not depend on summation order.
    """
    luma_sum = tf.reduce_sum(tf.cast(_luma(images), tf.int32), axis=[1, 2])
    count = tf.cast(tf.shape(images)[1] * tf.shape(images)[2], tf.float32)
    mean = tf.round(tf.cast(luma_sum, tf.float32) / count)
    return _enhance_blend(_per_image(mean, tf.float32), tf.cast(images, tf.float32), factor)


def brightness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with black (0 black, 1 unchanged, >1 brighter): 0 + f * (x - 0) is f * x exactly."""
    return _to_uint8(_per_image(factor, tf.float32) * tf.cast(images, tf.float32))


def _with_border(images: tf.Tensor, interior: tf.Tensor) -> tf.Tensor:
    """`interior` ([B, H-2, W-2, 3]) framed by the one-pixel border of `images`.

    Slicing [1:][-1:] rather than [-1:] keeps 1- and 2-pixel sides from duplicating a row.
    """
    middle_rows = images[:, 1:-1]
    middle = tf.concat([middle_rows[:, :, :1], interior, middle_rows[:, :, 1:][:, :, -1:]], axis=2)
    return tf.concat([images[:, :1], middle, images[:, 1:][:, -1:]], axis=1)


def sharpness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blend with PIL's SMOOTH-filtered image (0 smooth, 1 unchanged, >1 sharper).

    PIL smooths with [[1,1,1],[1,5,1],[1,1,1]]/13, rounds, and copies the one-pixel border
    from the original, so border pixels never change: only the interior is filtered and
    blended (with separable sums), then framed by the original border.
    """
    pixels = tf.cast(images, tf.float32)
    rows = pixels[:, :-2] + pixels[:, 1:-1] + pixels[:, 2:]
    box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
    centre = pixels[:, 1:-1, 1:-1]
    # The exact sum / 13 is never within 1/26 of a half, far beyond float error, so rounding
    # the float quotient gives PIL's integer result.
    smooth = tf.round((box + 4.0 * centre) * (1.0 / _SMOOTH_DIVISOR))
    return _with_border(images, _enhance_blend(smooth, centre, factor))


def cutout_at(images: tf.Tensor, pad_size: tf.Tensor, center_y: tf.Tensor, center_x: tf.Tensor) -> tf.Tensor:
    """Grey out a square of side 2*pad_size around (center_y, center_x) of each image, clipped to it."""
    shape = tf.shape(images)
    pad = tf.cast(pad_size, tf.int32)[:, None]

    def inside(size: tf.Tensor, center: tf.Tensor) -> tf.Tensor:
        positions = tf.range(size)[None, :]
        center = tf.cast(center, tf.int32)[:, None]
        return tf.cast((positions >= center - pad) & (positions < center + pad), tf.uint8) * 255

    # [B, H, 1] & [B, 1, W * 3] masks build the [B, H, W * 3] box with one broadcast.
    rows = inside(shape[1], center_y)[:, :, None]
    cols = tf.repeat(inside(shape[2], center_x), 3, axis=1)[:, None, :]
    box = tf.bitwise.bitwise_and(rows, cols)
    flat = tf.reshape(images, tf.stack([shape[0], shape[1], shape[2] * 3]))
    fill = tf.constant(FILL_VALUE, tf.uint8)
    # x ^ ((x ^ fill) & box): fill inside the box, x outside.
    greyed = tf.bitwise.bitwise_xor(flat, tf.bitwise.bitwise_and(tf.bitwise.bitwise_xor(flat, fill), box))
    return tf.reshape(greyed, shape)


def cutout(images: tf.Tensor, pad_size: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Grey out a square of side 2*pad_size around a uniform random centre of each image, clipped to it.

    For one image the centre is the same draw as a scalar one from `seed`.
    """
    shape = tf.shape(images)
    y_seed, x_seed = split_seed(seed, 2)
    center_y = tf.random.stateless_uniform(shape[:1], y_seed, maxval=shape[1], dtype=tf.int32)
    center_x = tf.random.stateless_uniform(shape[:1], x_seed, maxval=shape[2], dtype=tf.int32)
    return cutout_at(images, pad_size, center_y, center_x)


# --------------------------------------------------------------------- geometric ops

def _transform(images: tf.Tensor, transform: Sequence[tf.Tensor | float]) -> tf.Tensor:
    """Apply per-image projective transforms (output pixel -> input pixel map, 8 [B] entries).

    Nearest-neighbour sampling as in the reference; pixels from outside the image are grey.
    """
    batch = tf.shape(images)[:1]
    transforms = tf.stack([tf.broadcast_to(tf.cast(entry, tf.float32), batch) for entry in transform], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=float(FILL_VALUE), interpolation="NEAREST", fill_mode="CONSTANT")
    return tf.ensure_shape(out, images.shape)


def rotate(images: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """Rotate each image about its centre by its `degrees`."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(images)[1] - 1, tf.float32)
    width = tf.cast(tf.shape(images)[2] - 1, tf.float32)
    # float64 sin/cos are computed the same way at every position of a batch; float32 ones
    # are vectorised for some positions only and can differ in the last bit.
    cos = tf.cast(tf.cos(tf.cast(radians, tf.float64)), tf.float32)
    sin = tf.cast(tf.sin(tf.cast(radians, tf.float64)), tf.float32)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _transform(images, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(images: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
    """Shear horizontally: input x = x + shear * y."""
    return _transform(images, [1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(images: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
    """Shear vertically: input y = y + shear * x."""
    return _transform(images, [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])


def translate_x(images: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """Shift the content left by `pixels` (right when negative): input x = x + pixels."""
    return _transform(images, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(images: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """Shift the content up by `pixels` (down when negative): input y = y + pixels."""
    return _transform(images, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


# ------------------------------------------------------------ levels -> op arguments

def _scaled(level: tf.Tensor, maximum: float) -> tf.Tensor:
    """level / 10 * maximum, computed as level * maximum / 10 so whole results stay exact."""
    return tf.cast(level, tf.float32) * maximum / MAX_LEVEL


def _scaled_int(level: tf.Tensor, maximum: float) -> tf.Tensor:
    """int(level / 10 * maximum) for non-negative levels."""
    return tf.cast(tf.floor(_scaled(level, maximum)), tf.int32)


def _random_signs(values: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each of the [B] `values` negated with probability 1/2: the reference randomises every geometric direction.

    For one image the draw is the same as a scalar draw from `seed`.
    """
    flip = tf.random.stateless_uniform(tf.shape(values), seed) < 0.5
    return tf.where(flip, -values, values)


def _level_op(op: Callable[[tf.Tensor], tf.Tensor]) -> OpFn:
    """Adapt an op that ignores the level (AutoContrast, Equalize, Invert)."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del levels, seed, params
        return op(images)
    return apply


def _enhance_op(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> OpFn:
    """Adapt an enhancement op (Color, Contrast, Brightness, Sharpness): factor in [0.1, 1.9]."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del seed, params
        return op(images, _scaled(levels, 1.8) + 0.1)
    return apply


def _signed_op(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
               maximum: Callable[[OpParams], float]) -> OpFn:
    """Adapt a geometric op (Rotate, Shear*, Translate*): up to `maximum(params)` with a random sign."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        return op(images, _random_signs(_scaled(levels, maximum(params)), seed))
    return apply


def _posterize_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Posterize to int(level / 10 * 4) bits (at least 1, see `posterize`)."""
    del seed, params
    return posterize(images, _scaled_int(levels, 4.0))


def _solarize_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Solarize above a threshold of up to 256 (level 10 leaves the image unchanged)."""
    del seed, params
    return solarize(images, _scaled_int(levels, 256.0))


def _solarize_add_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Brighten the dark half (< 128) by up to 110."""
    del seed, params
    return solarize_add(images, _scaled_int(levels, 110.0), threshold=128)


def _cutout_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Cutout with a half-side of up to cutout_const pixels."""
    return cutout(images, _scaled_int(levels, params.cutout_const), seed)


# Every op of the reference, by its reference name, as fn(images, levels, seed, params).
OPS: Mapping[str, OpFn] = {
    "AutoContrast": _level_op(autocontrast),
    "Equalize": _level_op(equalize),
    "Invert": _level_op(invert),
    "Rotate": _signed_op(rotate, lambda params: 30.0),
    "Posterize": _posterize_op,
    "Solarize": _solarize_op,
    "SolarizeAdd": _solarize_add_op,
    "Color": _enhance_op(color),
    "Contrast": _enhance_op(contrast),
    "Brightness": _enhance_op(brightness),
    "Sharpness": _enhance_op(sharpness),
    "ShearX": _signed_op(shear_x, lambda params: 0.3),
    "ShearY": _signed_op(shear_y, lambda params: 0.3),
    "TranslateX": _signed_op(translate_x, lambda params: params.translate_const),
    "TranslateY": _signed_op(translate_y, lambda params: params.translate_const),
    "Cutout": _cutout_op,
}
