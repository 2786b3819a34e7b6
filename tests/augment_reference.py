"""The augmentation one image at a time, to check the batched product code against.

The product ops (`effnet.data.ops`) take uint8 batches with one argument per image, and the
policies (`effnet.data.policies`) augment whole batches. Here the same ops run on one
[H, W, 3] image with scalar arguments (a batch of one), AutoAugment and RandAugment augment
one image with one op switch per step, and mixup and cutmix mix a batch with its reverse, so
the tests can compare batches with images taken on their own and with PIL.
"""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from effnet.data import mixing, ops
from effnet.data.ops import OpFn, OpParams
from effnet.data.policies import AutoAugment, RandAugment


def on_batch(batch_op: Callable[..., tf.Tensor], image: tf.Tensor, *args: tf.Tensor | float) -> tf.Tensor:
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


def _image_or_batch(batch_op: Callable[..., tf.Tensor]) -> Callable[..., tf.Tensor]:
    """`batch_op` that also takes one image and scalar arguments (see `on_batch`)."""
    return lambda image, *args: on_batch(batch_op, image, *args)


autocontrast = _image_or_batch(ops.autocontrast)
equalize = _image_or_batch(ops.equalize)
invert = _image_or_batch(ops.invert)
posterize = _image_or_batch(ops.posterize)
solarize = _image_or_batch(ops.solarize)
solarize_add = _image_or_batch(ops.solarize_add)
color = _image_or_batch(ops.color)
contrast = _image_or_batch(ops.contrast)
brightness = _image_or_batch(ops.brightness)
sharpness = _image_or_batch(ops.sharpness)
rotate = _image_or_batch(ops.rotate)
shear_x = _image_or_batch(ops.shear_x)
shear_y = _image_or_batch(ops.shear_y)
translate_x = _image_or_batch(ops.translate_x)
translate_y = _image_or_batch(ops.translate_y)
cutout_at = _image_or_batch(ops.cutout_at)


def cutout(image: tf.Tensor, pad_size: tf.Tensor | int, seed: tf.Tensor) -> tf.Tensor:
    """`ops.cutout` on one image or a batch, with a scalar `pad_size` allowed."""
    return on_batch(lambda images, pads: ops.cutout(images, pads, tf.cast(seed, tf.int64)), image, pad_size)


def _op_on_image_or_batch(op: OpFn) -> OpFn:
    """An `ops.OPS` op that also takes one [H, W, 3] image with a scalar level (a batch of one)."""
    def apply(image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor, params: OpParams) -> tf.Tensor:
        seed = tf.cast(seed, tf.int64)
        return on_batch(lambda images, levels: op(images, levels, seed, params), image, level)
    return apply


# Every op of the reference, by its reference name, on one image (scalar level) or a batch.
OPS: dict[str, OpFn] = {name: _op_on_image_or_batch(op) for name, op in ops.OPS.items()}


def apply_op_at(image: tf.Tensor, index: tf.Tensor, level: tf.Tensor, seed: tf.Tensor,
                params: OpParams) -> tf.Tensor:
    """Apply to one image the op a scalar tensor index chooses (0 identity, see `policies.OP_NUMBERS`).

    One switch over all ops runs only the chosen one.
    """
    images, levels = image[None], tf.reshape(level, [1])

    def branch(op: OpFn) -> Callable[[], tf.Tensor]:
        return lambda: op(images, levels, seed, params)[0]

    branches = [lambda: image] + [branch(op) for op in ops.OPS.values()]
    return tf.ensure_shape(tf.switch_case(index, branches), image.shape)


@tf.autograph.experimental.do_not_convert
def augment_image(augmenter: AutoAugment | RandAugment, image: tf.Tensor, seed: tf.Tensor | None = None,
                  **draw_options: float | tf.Tensor) -> tf.Tensor:
    """Augment one uint8 [H, W, 3] image with `augmenter`'s draws for a single image.

    With a [2] int seed the result is a function of (image, seed), but not the augmentation
    that `apply_batch` gives the same image: the draws for one image and for [B] differ.
    `draw_options` go to `draw_steps` (RandAugment's `magnitude`).
    """
    for index, level, op_seed in augmenter.draw_steps([], seed, **draw_options):
        image = apply_op_at(image, index, level, op_seed, augmenter.params)
    return image


# ---------------------------------------------------------------- mixing with the reverse

def _reversed_order(images: tf.Tensor) -> tf.Tensor:
    """Each sample's partner in the reversed batch."""
    return tf.reverse(tf.range(tf.shape(images)[0]), [0])


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float | tf.Tensor,
          seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup of float [B, H, W, C] images and [B, classes] soft labels with the reversed batch."""
    weights = mixing.mixup_weights(tf.shape(images)[0], alpha, seed)
    partner = _reversed_order(images)
    return mixing.blend(images, weights, partner), mixing.blend(labels, weights, partner)


def cutmix(images: tf.Tensor, labels: tf.Tensor, alpha: float | tf.Tensor,
           seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix: paste a box from the reversed batch; labels weighted by the pasted area actually used."""
    shape = tf.shape(images)
    masks = mixing.cutmix_masks(shape[0], shape[1], shape[2], alpha, seed)
    partner = _reversed_order(images)
    pasted_fraction = tf.reduce_mean(masks, axis=[1, 2, 3])
    return mixing.blend(images, 1.0 - masks, partner), mixing.blend(labels, 1.0 - pasted_fraction, partner)


def apply_mixing(images: tf.Tensor, labels: tf.Tensor, mixup_alpha: float | tf.Tensor,
                 cutmix_alpha: float | tf.Tensor, seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup and/or CutMix on a batch, as the pipeline plans and blends it (see `mixing.mixing_plan`)."""
    shape = tf.shape(images)
    plan = mixing.mixing_plan(shape[0], shape[1], shape[2], mixup_alpha, cutmix_alpha, seed)
    image_weights, label_weights, partner = plan
    return mixing.blend(images, image_weights, partner), mixing.blend(labels, label_weights, partner)
