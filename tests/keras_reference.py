"""Cross-checks against keras.applications.EfficientNetB*: weight copying by layer name.

Both implementations name their weighted layers `stem_*`, `block{N}{x}_*`, `top_*` and
`predictions`, so a copy is a name lookup. keras.applications normalises with a
`Normalization` layer (7 parameters: mean 3, variance 3, count 1) left at the identity; it
gets the ImageNet normalisation by being fed pre-normalised images (see `reference_input`).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from effnet.data.shipped import shipped_photos
from effnet.model.efficientnet import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

KERAS_APPS = {f"b{i}": getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)}


def keras_reference(name: str, image_size: int, num_classes: int = 1000) -> keras.Model:
    return KERAS_APPS[name](weights=None, include_top=True, classes=num_classes,
                            input_shape=(image_size, image_size, 3), classifier_activation=None)


def randomise_weights(model: keras.Model, seed: int) -> None:
    """Give BN statistics and affine terms, and the classifier, non-trivial values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.75, 1.25, gamma.shape).astype(np.float32),
                rng.normal(0, 0.1, beta.shape).astype(np.float32),
                rng.normal(0, 0.1, mean.shape).astype(np.float32),
                rng.uniform(0.75, 1.25, var.shape).astype(np.float32),
            ])
        elif layer.name == "predictions":
            kernel, bias = layer.get_weights()
            std = 2.0 / np.sqrt(kernel.shape[0])  # logits of order 1-10
            layer.set_weights([rng.normal(0, std, kernel.shape).astype(np.float32),
                               rng.normal(0, 0.5, bias.shape).astype(np.float32)])


def reference_input(images: np.ndarray) -> np.ndarray:
    """What keras.applications must be fed to see our normalised input.

    Its unadapted Normalization layer is the identity and its Rescaling divides by 255, so we
    feed (x - mean) / std * 255, computed in float64: the layer's own mean/variance variables
    would round the ImageNet constants to float32, which alone shifts B7's logits by ~1e-4.
    """
    mean = np.asarray(IMAGENET_MEAN_RGB, np.float64)
    std = np.asarray(IMAGENET_STD_RGB, np.float64)
    dtype = np.dtype(keras.mixed_precision.global_policy().compute_dtype)
    return ((images.astype(np.float64) - mean) / std * 255.0).astype(dtype)


def copy_weights(src: keras.Model, dst: keras.Model) -> int:
    """Copy every weighted layer of `dst` from the same-named layer of `src`; returns tensors copied."""
    by_name = {l.name: l for l in src.layers}
    copied = 0
    for layer in dst.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = by_name[layer.name]
        values = other.get_weights()
        assert [w.shape for w in values] == [w.shape for w in weights], layer.name
        layer.set_weights(values)
        copied += len(values)
    return copied


def photo_batch(image_size: int) -> np.ndarray:
    """The shipped photos resized to `image_size`, 0-255 float32 RGB."""
    images = []
    for path in shipped_photos():
        img = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
        images.append(tf.image.resize(tf.cast(img, tf.float32), (image_size, image_size)).numpy())
    return np.stack(images)
