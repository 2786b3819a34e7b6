"""The one EfficientNet v1 builder. Every variant B0-B7 is a `ModelConfig` fed to `build_model`.

Layer names follow the `stem_*`, `block{stage}{letter}_*`, `top_*` convention so that
weights can be compared with, or copied from, other implementations by name.
"""
from __future__ import annotations

from typing import Callable

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
    """BatchNorm whose training statistics are those of the global batch across ranks.

    `allreduce` averages a tensor over the ranks (equal per-rank batches). In training, each
    rank's mean and mean square go through one allreduce, as the reference's
    SyncBatchNormalization did, so N ranks x B images normalise like one process with N*B.
    Inference, and `allreduce=None`, are plain Keras BatchNorm. Only public members of
    `keras.layers.BatchNormalization` are used (moving statistics, gamma/beta, momentum, epsilon).
    """

    def __init__(self, allreduce: Callable | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.renorm:
            raise ValueError("CrossReplicaBatchNormalization does not implement batch renormalization")
        self.allreduce = allreduce

    def call(self, inputs, training=None, mask=None):
        if self.allreduce is None or mask is not None or not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        # Like Keras: float16/bfloat16 inputs are normalised in float32.
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = self.axis % len(x.shape)
        reduce = [i for i in range(len(x.shape)) if i != axis]
        local = keras.ops.stack([keras.ops.mean(x, axis=reduce), keras.ops.mean(keras.ops.square(x), axis=reduce)])
        both = self.allreduce(local)
        mean = both[0]
        variance = keras.ops.maximum(both[1] - keras.ops.square(mean), 0.0)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(keras.ops.cast(moving, x.dtype) * self.momentum + batch * (1.0 - self.momentum))
        outputs = keras.ops.batch_normalization(
            x, mean, variance, axis=axis, epsilon=self.epsilon,
            offset=keras.ops.cast(self.beta, x.dtype) if self.center else None,
            scale=keras.ops.cast(self.gamma, x.dtype) if self.scale else None,
        )
        return keras.ops.cast(outputs, self.compute_dtype)


class _Builder:
    """Makes the layers of one model: every layer gets the model's dtype policy, every BN its allreduce."""

    def __init__(self, cfg: ModelConfig, policy: keras.DTypePolicy, allreduce: Callable | None) -> None:
        self.cfg = cfg
        self.dtype = policy
        self.allreduce = allreduce if cfg.sync_batch_norm else None

    def batch_norm(self, name: str) -> keras.layers.Layer:
        kwargs = dict(momentum=self.cfg.bn_momentum, epsilon=self.cfg.bn_epsilon, dtype=self.dtype, name=name)
        if self.allreduce is None:
            return keras.layers.BatchNormalization(**kwargs)
        return CrossReplicaBatchNormalization(allreduce=self.allreduce, **kwargs)

    def conv_bn_act(self, x, filters: int, kernel_size: int, strides: int, prefix: str, activation=True):
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=conv_initializer(),
            dtype=self.dtype,
            name=f"{prefix}_conv",
        )(x)
        x = self.batch_norm(f"{prefix}_bn")(x)
        if activation:
            x = keras.layers.Activation("swish", dtype=self.dtype, name=f"{prefix}_activation")(x)
        return x

    def squeeze_excite(self, x, block: Block, filters: int):
        name, dtype = block.name, self.dtype
        filters_se = max(1, int(block.filters_in * block.se_ratio))
        se = keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype, name=f"{name}_se_squeeze")(x)
        se = keras.layers.Conv2D(
            filters_se, 1, padding="same", activation="swish",
            kernel_initializer=conv_initializer(), dtype=dtype, name=f"{name}_se_reduce",
        )(se)
        se = keras.layers.Conv2D(
            filters, 1, padding="same", activation="sigmoid",
            kernel_initializer=conv_initializer(), dtype=dtype, name=f"{name}_se_expand",
        )(se)
        return keras.layers.Multiply(dtype=dtype, name=f"{name}_se_excite")([x, se])

    def mbconv(self, x, block: Block):
        """Inverted-residual block: expand 1x1, depthwise kxk, squeeze-excite, project 1x1, drop-connect."""
        name, dtype = block.name, self.dtype
        inputs = x
        filters = block.filters_in * block.expand_ratio
        if block.expand_ratio != 1:
            x = self.conv_bn_act(x, filters, 1, 1, f"{name}_expand")
        x = keras.layers.DepthwiseConv2D(
            block.kernel_size,
            strides=block.strides,
            padding="same",
            use_bias=False,
            depthwise_initializer=conv_initializer(),
            dtype=dtype,
            name=f"{name}_dwconv",
        )(x)
        x = self.batch_norm(f"{name}_bn")(x)
        x = keras.layers.Activation("swish", dtype=dtype, name=f"{name}_activation")(x)
        if 0 < block.se_ratio <= 1:
            x = self.squeeze_excite(x, block, filters)
        x = self.conv_bn_act(x, block.filters_out, 1, 1, f"{name}_project", activation=False)
        if block.has_residual:
            if block.drop_rate > 0:
                # Drop the whole residual branch per example (stochastic depth).
                x = keras.layers.Dropout(block.drop_rate, noise_shape=(None, 1, 1, 1), dtype=dtype,
                                         name=f"{name}_drop")(x)
            x = keras.layers.Add(dtype=dtype, name=f"{name}_add")([x, inputs])
        return x


def model_blocks(cfg: ModelConfig) -> list[Block]:
    """The concrete blocks of a config, in order."""
    return scale_blocks(
        cfg.blocks, cfg.width_coefficient, cfg.depth_coefficient, cfg.depth_divisor, cfg.drop_connect_rate
    )


def build_model(cfg: ModelConfig, image_size: int | None = None, *,
                dtype_policy: str | keras.DTypePolicy = "float32", allreduce: Callable | None = None) -> keras.Model:
    """Build the network for `cfg`. Input is 0-255 RGB, NHWC; output is float32 logits.

    `image_size=None` leaves the spatial size free, so one model serves every stage of a
    progressive-resolution schedule. `dtype_policy` ("float32", "mixed_float16",
    "mixed_bfloat16", "float64", ...) is every layer's; Keras's global policy is not consulted.
    `allreduce` averages a tensor over the data-parallel ranks (`dist.batch_norm_allreduce()`);
    with it and `cfg.sync_batch_norm`, BatchNorm uses the global batch's statistics in training.
    """
    policy = keras.dtype_policies.get(dtype_policy)
    # Mixed precision keeps the input normalisation and the head in float32.
    outer = "float32" if policy.compute_dtype != policy.variable_dtype else policy
    build = _Builder(cfg, policy, allreduce)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = ImageNetNormalization(name="normalization", dtype=outer)(inputs)
    x = build.conv_bn_act(x, round_filters(cfg.stem_filters, cfg.width_coefficient, cfg.depth_divisor), 3, 2, "stem")
    for block in model_blocks(cfg):
        x = build.mbconv(x, block)
    x = build.conv_bn_act(x, round_filters(cfg.top_filters, cfg.width_coefficient, cfg.depth_divisor), 1, 1, "top")
    x = keras.layers.GlobalAveragePooling2D(dtype=policy, name="avg_pool")(x)
    if cfg.dropout_rate > 0:
        x = keras.layers.Dropout(cfg.dropout_rate, dtype=policy, name="top_dropout")(x)
    # float32 head: logits stay float32 under mixed_float16 / mixed_bfloat16.
    logits = keras.layers.Dense(cfg.num_classes, kernel_initializer=dense_initializer(), dtype=outer,
                                name="predictions")(x)
    return keras.Model(inputs, logits, name=f"efficientnet-{cfg.name}")
