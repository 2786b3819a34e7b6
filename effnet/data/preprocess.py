"""Per-image preprocessing that matches the reference: random-crop train, center-crop eval.

Train: sample a distorted bounding box (area 5-100%, aspect 3/4-4/3, 10 attempts); when no
attempt fits, fall back to the eval center crop. Only the crop is decoded
(`decode_and_crop_jpeg`), then it is flipped at random and resized to the stage's size.
Eval: a center crop of size/(size+32) of the short side, then resize.
The 5% minimum area, the 32-pixel crop padding and the flip are ImageNet's; small images (digits,
thumbnails) need gentler crops and mirror-sensitive classes (digits, text) no flip, so all three are
parameters. Images stay 0-255 float32; the model normalises. Non-JPEG inputs (PNG in a folder) take a
full decode instead of the partial one. All randomness is stateless, from a per-example seed.
"""
from __future__ import annotations

import tensorflow as tf

CROP_PADDING = 32
AREA_RANGE = (0.05, 1.0)
ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10


def image_shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """[height, width, channels] without decoding a JPEG's pixels."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.image.extract_jpeg_shape(image_bytes),
        lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3, expand_animations=False)),
    )


def decode_crop(image_bytes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Decode only `window` = [y, x, h, w] of the image, as uint8 RGB."""
    def jpeg():
        return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def center_window(shape: tf.Tensor, image_size: int, crop_padding: int = CROP_PADDING) -> tf.Tensor:
    """The eval crop: a centred square of image_size/(image_size+crop_padding) of the shorter side."""
    height, width = shape[0], shape[1]
    ratio = image_size / (image_size + crop_padding)
    side = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    y = (height - side + 1) // 2
    x = (width - side + 1) // 2
    return tf.stack([y, x, side, side])


def random_window(shape: tf.Tensor, image_size: int, seed: tf.Tensor, min_area: float = AREA_RANGE[0],
                  crop_padding: int = CROP_PADDING) -> tf.Tensor:
    """A distorted bounding box [y, x, h, w]; the center window when sampling fails."""
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole,
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=ASPECT_RANGE,
        area_range=(min_area, AREA_RANGE[1]),
        max_attempts=MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    # The sampler returns the whole image when every attempt failed.
    failed = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
    return tf.cond(failed, lambda: center_window(shape, image_size, crop_padding), lambda: window)


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


def random_shift(image: tf.Tensor, max_shift: int, seed: tf.Tensor) -> tf.Tensor:
    """`image` moved by up to `max_shift` pixels along each axis, the uncovered border black."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded = tf.pad(image, [[max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    offset = tf.random.stateless_uniform([2], seed, maxval=2 * max_shift + 1, dtype=tf.int32)
    shifted = tf.slice(padded, tf.stack([offset[0], offset[1], 0]), tf.stack([height, width, -1]))
    return tf.ensure_shape(shifted, image.shape)


def preprocess_train(image_bytes: tf.Tensor, image_size: int, seed: tf.Tensor, min_area: float = AREA_RANGE[0],
                     crop_padding: int = CROP_PADDING, flip: bool = True, max_shift: int = 0) -> tf.Tensor:
    """Random crop, random flip (unless `flip` is False), resize, then a random shift of up to
    `max_shift` pixels: uint8 [image_size, image_size, 3]."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = random_window(image_shape(image_bytes), image_size, crop_seed, min_area, crop_padding)
    image = decode_crop(image_bytes, window)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = tf.cast(tf.round(resize(image, image_size)), tf.uint8)
    if max_shift > 0:
        # Its own seed, folded from the example's, leaves the crop and flip of every existing seed as they were.
        image = random_shift(image, max_shift, tf.random.experimental.stateless_fold_in(seed, 2))
    return image


def preprocess_eval(image_bytes: tf.Tensor, image_size: int, crop_padding: int = CROP_PADDING) -> tf.Tensor:
    """Center crop and resize: float32 0-255 [image_size, image_size, 3]."""
    image = decode_crop(image_bytes, center_window(image_shape(image_bytes), image_size, crop_padding))
    return resize(image, image_size)
