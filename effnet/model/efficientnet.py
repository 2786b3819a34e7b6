"""The one EfficientNet v1 builder. Every variant B0-B7 is a `ModelConfig` fed to `build_model`.

Layer names follow the `stem_*`, `block{stage}{letter}_*`, `top_*` convention so that
weights can be compared with, or copied from, other implementations by name.
"""
from __future__ import annotations

import keras

from effnet.core.config.model import ModelConfig
from effnet.core.architecture import Block, round_filters, scale_blocks

# ImageNet statistics on the 0-255 scale. The model takes raw 0-255 RGB and this is
# the only place in the project where mean/std normalisation happens.
IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# He-style init with fan-out, as in the EfficientNet paper's reference code.
def conv_initializer() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def dense_initializer() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_out", distribution="uniform")


@keras.saving.register_keras_serializable(package="effnet")
class ImageNetNormalization(keras.layers.Layer):
    """(x - mean) / std per RGB channel, in the layer's dtype (float32 under mixed precision)."""

    def call(self, inputs):
        mean = keras.ops.convert_to_tensor(IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
        std = keras.ops.convert_to_tensor(IMAGENET_STD_RGB, dtype=self.compute_dtype)
        return (keras.ops.cast(inputs, self.compute_dtype) - mean) / std


@keras.saving.register_keras_serializable(package="effnet")
class CrossReplicaBatchNormalization(keras.layers.BatchNormalization):
    """BatchNorm whose training statistics are those of the global batch across Horovod ranks.

    With one process it is plain BatchNorm. With several, each rank's mean and mean square are
    averaged by one allreduce (equal per-rank batches), as the reference's SyncBatchNormalization
    did, so N ranks x B images normalise like one process with N*B.
    """

    def _moments(self, inputs, mask):
        from effnet import dist

        if mask is not None or not dist.active():
            return super()._moments(inputs, mask)
        x = keras.ops.cast(inputs, "float32")
        mean = keras.ops.mean(x, axis=self._reduction_axes)
        mean_square = keras.ops.mean(keras.ops.square(x), axis=self._reduction_axes)
        both = dist.allreduce_mean(keras.ops.stack([mean, mean_square]), name=None)
        mean, mean_square = both[0], both[1]
        return mean, keras.ops.maximum(mean_square - keras.ops.square(mean), 0.0)


def _batch_norm(cfg: ModelConfig, name: str) -> keras.layers.Layer:
    layer = CrossReplicaBatchNormalization if cfg.sync_batch_norm else keras.layers.BatchNormalization
    return layer(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, name=name)


def _conv_bn_act(x, cfg: ModelConfig, filters: int, kernel_size: int, strides: int, prefix: str, activation=True):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=f"{prefix}_conv",
    )(x)
    x = _batch_norm(cfg, f"{prefix}_bn")(x)
    if activation:
        x = keras.layers.Activation("swish", name=f"{prefix}_activation")(x)
    return x


def _mbconv(x, cfg: ModelConfig, block: Block):
    """Inverted-residual block: expand 1x1, depthwise kxk, squeeze-excite, project 1x1, drop-connect."""
    name = block.name
    inputs = x
    filters = block.filters_in * block.expand_ratio
    if block.expand_ratio != 1:
        x = _conv_bn_act(x, cfg, filters, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        block.kernel_size,
        strides=block.strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=conv_initializer(),
        name=f"{name}_dwconv",
    )(x)
    x = _batch_norm(cfg, f"{name}_bn")(x)
    x = keras.layers.Activation("swish", name=f"{name}_activation")(x)

    if 0 < block.se_ratio <= 1:
        filters_se = max(1, int(block.filters_in * block.se_ratio))
        se = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
        se = keras.layers.Conv2D(
            filters_se, 1, padding="same", activation="swish",
            kernel_initializer=conv_initializer(), name=f"{name}_se_reduce",
        )(se)
        se = keras.layers.Conv2D(
            filters, 1, padding="same", activation="sigmoid",
            kernel_initializer=conv_initializer(), name=f"{name}_se_expand",
        )(se)
        x = keras.layers.Multiply(name=f"{name}_se_excite")([x, se])

    x = _conv_bn_act(x, cfg, block.filters_out, 1, 1, f"{name}_project", activation=False)
    if block.has_residual:
        if block.drop_rate > 0:
            # Drop the whole residual branch per example (stochastic depth).
            x = keras.layers.Dropout(block.drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def model_blocks(cfg: ModelConfig) -> list[Block]:
    """The concrete blocks of a config, in order."""
    return scale_blocks(
        cfg.blocks, cfg.width_coefficient, cfg.depth_coefficient, cfg.depth_divisor, cfg.drop_connect_rate
    )


def build_model(cfg: ModelConfig, image_size: int | None = None) -> keras.Model:
    """Build the network for `cfg`. Input is 0-255 RGB, NHWC; output is float32 logits.

    `image_size=None` leaves the spatial size free, so one model serves every stage of a
    progressive-resolution schedule.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    mixed = keras.mixed_precision.global_policy().name.startswith("mixed")
    x = ImageNetNormalization(name="normalization", dtype="float32" if mixed else None)(inputs)
    x = _conv_bn_act(x, cfg, round_filters(cfg.stem_filters, cfg.width_coefficient, cfg.depth_divisor), 3, 2, "stem")
    for block in model_blocks(cfg):
        x = _mbconv(x, cfg, block)
    x = _conv_bn_act(x, cfg, round_filters(cfg.top_filters, cfg.width_coefficient, cfg.depth_divisor), 1, 1, "top")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if cfg.dropout_rate > 0:
        x = keras.layers.Dropout(cfg.dropout_rate, name="top_dropout")(x)
    # float32 head: logits stay float32 under mixed_float16 / mixed_bfloat16.
    logits = keras.layers.Dense(
        cfg.num_classes, kernel_initializer=dense_initializer(), dtype="float32" if mixed else None, name="predictions"
    )(x)
    return keras.Model(inputs, logits, name=f"efficientnet-{cfg.name}")
