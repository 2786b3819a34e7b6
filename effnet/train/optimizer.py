"""Build the optimizer and its schedule from a `TrainConfig`.

RMSprop here is Keras 3's, which (like TF1's and the reference's) adds epsilon inside
the square root, so epsilon=1e-3 means what it meant in the published recipes.
Under float16 mixed precision the optimizer is wrapped for dynamic loss scaling.
"""
from __future__ import annotations

import keras

from effnet.core.config.train import TrainConfig
from effnet.train.schedules import WarmupDecay


def build_schedule(cfg: TrainConfig, world_size: int, steps_per_epoch: int) -> WarmupDecay:
    """Epoch-based flags become step counts through `steps_per_epoch` (from the data or the flag)."""
    return WarmupDecay(
        peak=cfg.peak_lr(world_size),
        total_steps=cfg.max_epochs * steps_per_epoch,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        decay=cfg.lr_decay,
        decay_rate=cfg.lr_decay_rate,
        decay_steps=cfg.lr_decay_epochs * steps_per_epoch,
    )


def build_optimizer(cfg: TrainConfig, world_size: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    schedule = build_schedule(cfg, world_size, steps_per_epoch)
    if cfg.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(
            learning_rate=schedule, rho=cfg.rmsprop_rho, momentum=cfg.momentum, epsilon=cfg.opt_epsilon
        )
    else:
        opt = keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.use_amp and cfg.amp_dtype == "float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def current_learning_rate(opt: keras.optimizers.Optimizer) -> float:
    inner = getattr(opt, "inner_optimizer", opt)
    return float(inner.learning_rate)
