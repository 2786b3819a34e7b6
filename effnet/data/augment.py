"""AutoAugment, RandAugment, mixup and cutmix written in plain TensorFlow ops.

The EfficientNet recipes train with the augmentations of the TF Model Garden / TPU
reference (AutoAugment policy v0 for B0-B4, RandAugment for the larger models, mixup
and cutmix in some configurations). Reimplementing them here with graph-compatible
TensorFlow ops only (no PIL, no numpy, no private Keras APIs) lets them run inside
`tf.data.Dataset.map` on the input workers or inside a `tf.function` on the device,
with dynamic image sizes, and, when given a seed, as pure functions of (input, seed) so
every rank and epoch can be reproduced exactly. The pixel semantics follow PIL, which
the reference mimics: levels are in [0, 10] and scale linearly into each op's argument.

Every op is written once, for a batch uint8 [B, H, W, 3] with one argument per image
([B] tensors); a single [H, W, 3] image with scalar arguments runs as a batch of one, so
both give the same pixels. On CPUs the cost is in passes over the pixels, so ops make few
and stay in uint8 where the arithmetic allows: per-value maps are bit tricks (Invert,
Posterize, Solarize, SolarizeAdd) or one flat lookup table for all images and channels
(AutoContrast, Equalize); only the blends need float. AutoAugment and
RandAugment augment one image (`__call__`, one op switch per step) or a whole batch
(`apply_batch`, every op runs once per step on just the images that drew it).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

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


# An augmentation op as stored in OPS: fn(images uint8 [B, H, W, 3] (or one [H, W, 3] image),
# levels in [0, 10] as [B] (or a scalar), seed [2] int64 for the random choices of the whole
# batch, params) -> uint8 images of the same shape.
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


def _random_signs(values: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each of the [B] `values` negated with probability 1/2: the reference randomises every geometric direction.

    For one image the draw is the same as a scalar draw from `seed`.
    """
    flip = tf.random.stateless_uniform(tf.shape(values), seed) < 0.5
    return tf.where(flip, -values, values)


# ------------------------------------------------------------------------ batch helpers

def _on_batch(batch_op: Callable[..., tf.Tensor], image: tf.Tensor, *args: tf.Tensor | float) -> tf.Tensor:
    """Run `batch_op` (uint8 [B, H, W, 3] and [B] arguments) on a batch or on one image.

    A [H, W, 3] image with scalar arguments becomes a batch of one; a batch accepts scalar
    arguments too, applied to every image.
    """
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 3:
        out = batch_op(image[None], *(tf.reshape(arg, [1]) for arg in args))[0]
    else:
        batch = tf.shape(image)[:1]
        out = batch_op(image, *(tf.broadcast_to(arg, batch) for arg in args))
    return tf.ensure_shape(out, image.shape)


def _per_image(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """[B] per-image values as [B, 1, 1, 1], to broadcast over each image's pixels."""
    return tf.reshape(tf.cast(values, dtype), [-1, 1, 1, 1])


# ------------------------------------------------------------------------ pixel helpers

def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Clip a float image to [0, 255] and truncate to uint8, as PIL's blend does."""
    return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance: interpolate (factor in [0, 1]) or extrapolate from `degenerate` to `image`.

    factor ([B], one per image) 0 gives `degenerate`, 1 gives `image` exactly; both are
    float with integer values.
    """
    return _to_uint8(degenerate + _per_image(factor, tf.float32) * (image - degenerate))


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

def _autocontrast(images: tf.Tensor) -> tf.Tensor:
    lo = tf.cast(tf.reduce_min(images, axis=[1, 2]), tf.float64)[..., None]
    hi = tf.cast(tf.reduce_max(images, axis=[1, 2]), tf.float64)[..., None]
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    values = tf.range(256, dtype=tf.float64)
    stretched = tf.clip_by_value(values * scale - lo * scale, 0.0, 255.0)
    tables = tf.cast(tf.where(hi > lo, stretched, values), tf.uint8)
    return _lookup(tables, _channel_lut_indices(images))


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Stretch each channel so its darkest pixel is 0 and brightest 255 (PIL, cutoff 0).

    The lookup table is built in float64 like PIL's so results match it exactly; a
    constant channel is left unchanged.
    """
    return _on_batch(_autocontrast, image)


def _equalize(images: tf.Tensor) -> tf.Tensor:
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


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Histogram-equalise each channel with PIL's lookup table.

    PIL spreads the histogram without counting the brightest value's pixels, so a channel
    whose pixels nearly all share one value (step 0) is left unchanged.
    """
    return _on_batch(_equalize, image)


def invert(image: tf.Tensor) -> tf.Tensor:
    """Photographic negative (of one image or a batch)."""
    return tf.constant(255, tf.uint8) - image


def _posterize(images: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    shift = tf.clip_by_value(8 - tf.cast(bits, tf.int32), 0, 7)
    mask = tf.bitwise.bitwise_and(tf.bitwise.left_shift(255, shift), 255)
    return tf.bitwise.bitwise_and(images, _per_image(mask, tf.uint8))


def posterize(image: tf.Tensor, bits: tf.Tensor | int) -> tf.Tensor:
    """Keep the `bits` most significant bits of every value (8 bits leaves the image unchanged).

    At least one bit is kept: the TF reference shifts uint8 values, and TensorFlow clamps
    such shifts to 7, so its 0-bit posterize (AutoAugment level < 2.5) gives 0/128 images
    rather than PIL's black ones. We keep that training behaviour. Computed as one AND
    with a per-image mask of the kept bits.
    """
    return _on_batch(_posterize, image, bits)


def _solarize(images: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    threshold = tf.cast(threshold, tf.int32)
    lowest_inverted = _per_image(tf.clip_by_value(threshold, 0, 255), tf.uint8)
    inverts = _per_image(tf.where(threshold <= 255, 255, 0), tf.uint8)
    return tf.bitwise.bitwise_xor(images, tf.cast(images >= lowest_inverted, tf.uint8) * inverts)


def solarize(image: tf.Tensor, threshold: tf.Tensor | int) -> tf.Tensor:
    """Invert the pixels at or above `threshold` (256 leaves the image unchanged).

    255 - v is v XOR 255, so this is one XOR with a mask that is 255 where v >= threshold.
    """
    return _on_batch(_solarize, image, threshold)


def _solarize_add(images: tf.Tensor, addition: tf.Tensor, threshold: int) -> tf.Tensor:
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


def solarize_add(image: tf.Tensor, addition: tf.Tensor | int, threshold: int = 128) -> tf.Tensor:
    """Add `addition` (saturating) to the pixels below `threshold`, in uint8 arithmetic."""
    return _on_batch(lambda images, amounts: _solarize_add(images, amounts, threshold), image, addition)


def _color(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    grey = tf.tile(_luma(images)[..., None], [1, 1, 1, 3])
    return _blend(grey, tf.cast(images, tf.float32), factor)


def color(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Saturation: blend with the grey version (0 grey, 1 unchanged, >1 more saturated)."""
    return _on_batch(_color, image, factor)


def _contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    luma_sum = tf.reduce_sum(tf.cast(_luma(images), tf.int32), axis=[1, 2])
    count = tf.cast(tf.shape(images)[1] * tf.shape(images)[2], tf.float32)
    mean = tf.round(tf.cast(luma_sum, tf.float32) / count)
    return _blend(_per_image(mean, tf.float32), tf.cast(images, tf.float32), factor)


def contrast(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with a flat image at the mean luma (0 flat, 1 unchanged, >1 more contrast).

    The luma sum is an exact integer, so the mean does not depend on summation order.
    """
    return _on_batch(_contrast, image, factor)


def _brightness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    # The blend with black: 0 + f * (x - 0) is f * x exactly.
    return _to_uint8(_per_image(factor, tf.float32) * tf.cast(images, tf.float32))


def brightness(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with black (0 black, 1 unchanged, >1 brighter)."""
    return _on_batch(_brightness, image, factor)


def _with_border(images: tf.Tensor, interior: tf.Tensor) -> tf.Tensor:
    """`interior` ([B, H-2, W-2, 3]) framed by the one-pixel border of `images`.

    Slicing [1:][-1:] rather than [-1:] keeps 1- and 2-pixel sides from duplicating a row.
    """
    middle_rows = images[:, 1:-1]
    middle = tf.concat([middle_rows[:, :, :1], interior, middle_rows[:, :, 1:][:, :, -1:]], axis=2)
    return tf.concat([images[:, :1], middle, images[:, 1:][:, -1:]], axis=1)


def _sharpness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    pixels = tf.cast(images, tf.float32)
    rows = pixels[:, :-2] + pixels[:, 1:-1] + pixels[:, 2:]
    box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
    centre = pixels[:, 1:-1, 1:-1]
    # The exact sum / 13 is never within 1/26 of a half, far beyond float error, so rounding
    # the float quotient gives PIL's integer result.
    smooth = tf.round((box + 4.0 * centre) * (1.0 / _SMOOTH_DIVISOR))
    return _with_border(images, _blend(smooth, centre, factor))


def sharpness(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with PIL's SMOOTH-filtered image (0 smooth, 1 unchanged, >1 sharper).

    PIL smooths with [[1,1,1],[1,5,1],[1,1,1]]/13, rounds, and copies the one-pixel border
    from the original, so border pixels never change: only the interior is filtered and
    blended (with separable sums), then framed by the original border.
    """
    return _on_batch(_sharpness, image, factor)


def _cutout_at(images: tf.Tensor, pad_size: tf.Tensor, center_y: tf.Tensor, center_x: tf.Tensor) -> tf.Tensor:
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


def cutout_at(image: tf.Tensor, pad_size: tf.Tensor | int, center_y: tf.Tensor | int,
              center_x: tf.Tensor | int) -> tf.Tensor:
    """Grey out a square of side 2*pad_size around (center_y, center_x), clipped to the image."""
    return _on_batch(_cutout_at, image, pad_size, center_y, center_x)


def _random_centers(images: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[B] uniform random rows and columns; for one image the same draws as scalar ones."""
    shape = tf.shape(images)
    y_seed, x_seed = _split(seed, 2)
    center_y = tf.random.stateless_uniform(shape[:1], y_seed, maxval=shape[1], dtype=tf.int32)
    center_x = tf.random.stateless_uniform(shape[:1], x_seed, maxval=shape[2], dtype=tf.int32)
    return center_y, center_x


def cutout(image: tf.Tensor, pad_size: tf.Tensor | int, seed: tf.Tensor) -> tf.Tensor:
    """Grey out a square of side 2*pad_size around a random centre (per image), clipped to the image."""
    def batch_cutout(images: tf.Tensor, pads: tf.Tensor) -> tf.Tensor:
        return _cutout_at(images, pads, *_random_centers(images, tf.cast(seed, tf.int64)))
    return _on_batch(batch_cutout, image, pad_size)


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


def _rotate(images: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
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


def rotate(image: tf.Tensor, degrees: tf.Tensor | float) -> tf.Tensor:
    """Rotate about the image centre by `degrees`."""
    return _on_batch(_rotate, image, degrees)


# The 8 transform entries of an axis-aligned op, from its [B] amounts.
_TransformMap = Callable[[tf.Tensor], list[tf.Tensor | float]]


def _shear_x_map(shear: tf.Tensor) -> list[tf.Tensor | float]:
    """Input x = x + shear * y."""
    return [1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def _shear_y_map(shear: tf.Tensor) -> list[tf.Tensor | float]:
    """Input y = y + shear * x."""
    return [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0]


def _translate_x_map(pixels: tf.Tensor) -> list[tf.Tensor | float]:
    """Input x = x + pixels."""
    return [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0]


def _translate_y_map(pixels: tf.Tensor) -> list[tf.Tensor | float]:
    """Input y = y + pixels."""
    return [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0]


def _mapped(transform_map: _TransformMap) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The batch op that transforms each image with `transform_map` of its amount."""
    return lambda images, amounts: _transform(images, transform_map(amounts))


def shear_x(image: tf.Tensor, shear: tf.Tensor | float) -> tf.Tensor:
    """Shear horizontally: input x = x + shear * y."""
    return _on_batch(_mapped(_shear_x_map), image, shear)


def shear_y(image: tf.Tensor, shear: tf.Tensor | float) -> tf.Tensor:
    """Shear vertically: input y = y + shear * x."""
    return _on_batch(_mapped(_shear_y_map), image, shear)


def translate_x(image: tf.Tensor, pixels: tf.Tensor | float) -> tf.Tensor:
    """Shift the content left by `pixels` (right when negative)."""
    return _on_batch(_mapped(_translate_x_map), image, pixels)


def translate_y(image: tf.Tensor, pixels: tf.Tensor | float) -> tf.Tensor:
    """Shift the content up by `pixels` (down when negative)."""
    return _on_batch(_mapped(_translate_y_map), image, pixels)


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


# Batch form of an OpFn: images [B, H, W, 3], levels [B], one seed [2], params.
_BatchOpFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, OpParams], tf.Tensor]


def _level_op(op: Callable[[tf.Tensor], tf.Tensor]) -> _BatchOpFn:
    """Adapt an op that ignores the level (AutoContrast, Equalize, Invert)."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del levels, seed, params
        return op(images)
    return apply


def _enhance_op(op: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> _BatchOpFn:
    """Adapt an enhancement op (Color, Contrast, Brightness, Sharpness)."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del seed, params
        return op(images, _enhance_factor(levels))
    return apply


def _rotate_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Rotate up to 30 degrees with a random sign."""
    del params
    return _rotate(images, _random_signs(_scaled(levels, 30.0), seed))


def _shear_op(transform_map: _TransformMap) -> _BatchOpFn:
    """Adapt ShearX/ShearY: shear up to 0.3 with a random sign."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        del params
        return _transform(images, transform_map(_random_signs(_scaled(levels, 0.3), seed)))
    return apply


def _translate_op(transform_map: _TransformMap) -> _BatchOpFn:
    """Adapt TranslateX/TranslateY: up to translate_const pixels with a random sign."""
    def apply(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        return _transform(images, transform_map(_random_signs(_scaled(levels, params.translate_const), seed)))
    return apply


def _posterize_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Posterize to int(level / 10 * 4) bits (at least 1, see `posterize`)."""
    del seed, params
    return _posterize(images, _scaled_int(levels, 4.0))


def _solarize_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Solarize above a threshold of up to 256 (level 10 leaves the image unchanged)."""
    del seed, params
    return _solarize(images, _scaled_int(levels, 256.0))


def _solarize_add_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Brighten the dark half (< 128) by up to 110."""
    del seed, params
    return _solarize_add(images, _scaled_int(levels, 110.0), threshold=128)


def _cutout_op(images: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
    """Cutout with a half-side of up to cutout_const pixels."""
    return _cutout_at(images, _scaled_int(levels, params.cutout_const), *_random_centers(images, seed))


# Every op of the reference, by its reference name, in batch form.
_BATCH_OPS: Mapping[str, _BatchOpFn] = {
    "AutoContrast": _level_op(_autocontrast),
    "Equalize": _level_op(_equalize),
    "Invert": _level_op(invert),
    "Rotate": _rotate_op,
    "Posterize": _posterize_op,
    "Solarize": _solarize_op,
    "SolarizeAdd": _solarize_add_op,
    "Color": _enhance_op(_color),
    "Contrast": _enhance_op(_contrast),
    "Brightness": _enhance_op(_brightness),
    "Sharpness": _enhance_op(_sharpness),
    "ShearX": _shear_op(_shear_x_map),
    "ShearY": _shear_op(_shear_y_map),
    "TranslateX": _translate_op(_translate_x_map),
    "TranslateY": _translate_op(_translate_y_map),
    "Cutout": _cutout_op,
}


def _batch_or_single(op: _BatchOpFn) -> OpFn:
    """Let a batch op also take one [H, W, 3] image with a scalar level (a batch of one)."""
    def apply(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        seed = tf.cast(seed, tf.int64)
        return _on_batch(lambda images, levels: op(images, levels, seed, params), image, level)
    return apply


# Every op of the reference, by its reference name, as fn(images, levels, seed, params).
OPS: Mapping[str, OpFn] = {name: _batch_or_single(op) for name, op in _BATCH_OPS.items()}
# Op number i > 0 is the (i-1)-th op of OPS; 0 is identity.
_OP_NUMBERS: Mapping[str, int] = {name: number for number, name in enumerate(OPS, start=1)}


# ------------------------------------------------------------------------- op dispatch

def _apply_op_at(image: tf.Tensor, index: tf.Tensor, level: tf.Tensor, seed: tf.Tensor,
                 params: OpParams) -> tf.Tensor:
    """Apply to one image the op chosen by a scalar tensor index (0 identity, see _OP_NUMBERS).

    One switch over all ops keeps the graph small (a few seconds less to trace) no matter
    how many (op, level) combinations a policy lists, and runs only the chosen op.
    """
    images, levels = image[None], tf.reshape(level, [1])

    def branch(op: _BatchOpFn) -> Callable[[], tf.Tensor]:
        return lambda: op(images, levels, seed, params)[0]

    branches = [lambda: image] + [branch(op) for op in _BATCH_OPS.values()]
    return tf.ensure_shape(tf.switch_case(index, branches), image.shape)


def _apply_ops_grouped(images: tf.Tensor, indices: tf.Tensor, levels: tf.Tensor, seed: tf.Tensor,
                       params: OpParams, candidates: Sequence[int]) -> tf.Tensor:
    """Apply to every image of a batch the op its [B] index chooses (0 identity, see _OP_NUMBERS).

    The batch is partitioned by op, each candidate op runs once on its (possibly empty)
    group, and the groups are stitched back in order: every pixel goes through one op only.
    Indices outside `candidates` (ops the caller knows cannot be drawn) act as identity.
    Each op draws from `seed` folded with its number, so groups draw independently.
    """
    group_of = [0] * (len(_BATCH_OPS) + 1)
    for group, number in enumerate(candidates, start=1):
        group_of[number] = group
    groups = tf.gather(tf.constant(group_of, tf.int32), indices)
    num_groups = len(candidates) + 1
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), groups, num_groups)
    image_groups = tf.dynamic_partition(images, groups, num_groups)
    level_groups = tf.dynamic_partition(levels, groups, num_groups)
    ops = list(_BATCH_OPS.values())
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
    `__call__` augments one image, running only the drawn op of each step; `apply_batch`
    augments a batch, each image with its own draws. Both are pure functions of (input,
    seed) but draw differently, so a seed gives an image different augmentations on the two
    paths (also for a batch of one).
    """

    def __init__(self, policy: str = "v0", cutout_const: float = 100, translate_const: float = 250) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {', '.join(sorted(POLICIES))}")
        self.policy = POLICIES[policy]
        self.params = OpParams(cutout_const=float(cutout_const), translate_const=float(translate_const))
        # [sub-policies, steps] tables, so the chosen sub-policy is a gather, not a graph branch.
        self._op_numbers = [[_OP_NUMBERS[name] for name, _, _ in sub] for sub in self.policy]
        self._probs = [[prob for _, prob, _ in sub] for sub in self.policy]
        self._levels = [[level for _, _, level in sub] for sub in self.policy]
        # Per step, the ops that step can apply: apply_batch runs only these.
        self._step_candidates = [
            sorted({_OP_NUMBERS[sub[step][0]] for sub in self.policy if sub[step][1] > 0})
            for step in range(len(self.policy[0]))]

    def _draw(self, shape: tf.Tensor | list[int], seed: tf.Tensor | None
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """Per image (`shape` [] or [B]): op numbers, probabilities, levels ([..., steps]) and one seed per step."""
        choice_seed, *step_seeds = _split(_seed_or_random(seed), 1 + len(self._op_numbers[0]))
        chosen = tf.random.stateless_uniform(shape, choice_seed, maxval=len(self.policy), dtype=tf.int32)
        op_numbers = tf.gather(tf.constant(self._op_numbers, tf.int32), chosen)
        probs = tf.gather(tf.constant(self._probs, tf.float32), chosen)
        levels = tf.gather(tf.constant(self._levels, tf.float32), chosen)
        return op_numbers, probs, levels, step_seeds

    @_no_autograph
    def __call__(self, image: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Augment one uint8 [H, W, 3] image; with a [2] int seed the result is a function of (image, seed)."""
        op_numbers, probs, levels, step_seeds = self._draw([], seed)
        for step, step_seed in enumerate(step_seeds):
            gate_seed, op_seed = _split(step_seed, 2)
            applied = tf.random.stateless_uniform([], gate_seed) < probs[step]
            index = tf.where(applied, op_numbers[step], 0)
            image = _apply_op_at(image, index, levels[step], op_seed, self.params)
        return image

    @_no_autograph
    def apply_batch(self, images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Augment a uint8 [B, H, W, 3] batch (B may be unknown), each image with its own sub-policy and gates.

        With a [2] int seed the result is a function of (images, seed).
        """
        images = _check_batch(images)
        op_numbers, probs, levels, step_seeds = self._draw(tf.shape(images)[:1], seed)
        for step, step_seed in enumerate(step_seeds):
            gate_seed, op_seed = _split(step_seed, 2)
            applied = tf.random.stateless_uniform(tf.shape(images)[:1], gate_seed) < probs[:, step]
            indices = tf.where(applied, op_numbers[:, step], 0)
            images = _apply_ops_grouped(images, indices, levels[:, step], op_seed, self.params,
                                        self._step_candidates[step])
        return images


# ---------------------------------------------------------------------- RandAugment

class RandAugment:
    """RandAugment: `num_layers` times, one of the 16 ops or identity, uniformly, at one magnitude.

    `__call__` augments one image, `apply_batch` a batch (each image drawing its own ops);
    both are pure functions of (input, magnitude, seed), but they draw differently, as in
    AutoAugment.
    """

    def __init__(self, num_layers: int = 2, magnitude: float = 10.0, cutout_const: float = 40,
                 translate_const: float = 100) -> None:
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers
        self.magnitude = magnitude
        self.params = OpParams(cutout_const=float(cutout_const), translate_const=float(translate_const))

    def _level(self, magnitude: float | tf.Tensor | None) -> tf.Tensor:
        """The level of every op: `magnitude`, or the constructor's when None."""
        return tf.cast(self.magnitude if magnitude is None else magnitude, tf.float32)

    @_no_autograph
    def __call__(self, image: tf.Tensor, magnitude: float | tf.Tensor | None = None,
                 seed: tf.Tensor | None = None) -> tf.Tensor:
        """Augment one uint8 [H, W, 3] image.

        `magnitude` (python float or scalar tensor) overrides the constructor's, so a
        progressive schedule can change it per stage without rebuilding the pipeline.
        """
        level = self._level(magnitude)
        for layer_seed in _split(_seed_or_random(seed), self.num_layers):
            choice_seed, op_seed = _split(layer_seed, 2)
            index = tf.random.stateless_uniform([], choice_seed, maxval=len(OPS) + 1, dtype=tf.int32)
            image = _apply_op_at(image, index, level, op_seed, self.params)
        return image

    @_no_autograph
    def apply_batch(self, images: tf.Tensor, seed: tf.Tensor | None = None,
                    magnitude: float | tf.Tensor | None = None) -> tf.Tensor:
        """Augment a uint8 [B, H, W, 3] batch (B may be unknown), each image with its own ops.

        `magnitude` is a scalar for the whole batch, as in `__call__`.
        """
        images = _check_batch(images)
        batch = tf.shape(images)[:1]
        levels = tf.broadcast_to(self._level(magnitude), batch)
        for layer_seed in _split(_seed_or_random(seed), self.num_layers):
            choice_seed, op_seed = _split(layer_seed, 2)
            indices = tf.random.stateless_uniform(batch, choice_seed, maxval=len(OPS) + 1, dtype=tf.int32)
            images = _apply_ops_grouped(images, indices, levels, op_seed, self.params, range(1, len(OPS) + 1))
        return images


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
