"""The trained model outside training: restore the newest checkpoint for `--mode eval` and `predict`.

Both modes restore the same way (raw and, with EMA, averaged weights; random weights only when
asked), so they live here rather than in the training loop.
"""
from __future__ import annotations

from effnet import dist
from effnet.core.config.model import ModelConfig
from effnet.core.config.train import TrainConfig
from effnet.core.dllogger import DLLogger
from effnet.core.errors import ConfigError
from effnet.data.splits import open_data
from effnet.model.efficientnet import build_model
from effnet.train.checkpoint import Checkpointer
from effnet.train.ema import ExponentialMovingAverage
from effnet.train.evaluate import evaluate_raw_and_ema, make_inference_fn
from effnet.train.precision import policy_name


def restore_for_inference(cfg: TrainConfig, model_cfg: ModelConfig):
    """Model (and EMA) from the newest checkpoint, for eval and predict; (model, ema, path)."""
    model = build_model(model_cfg, dtype_policy=policy_name(cfg.use_amp, cfg.amp_dtype))  # inference: no BN allreduce
    ema = ExponentialMovingAverage(model, cfg.moving_average_decay) if cfg.moving_average_decay else None
    objects = {"model": model, **({"ema": ema} if ema is not None else {})}
    checkpoints = Checkpointer(cfg.model_dir, objects, cfg.keep_checkpoints, is_chief=False)
    if cfg.resume == "never" and not cfg.allow_random_weights:
        raise ConfigError(f"--mode {cfg.mode} with --resume never needs --allow_random_weights")
    path = checkpoints.restore("auto" if cfg.allow_random_weights else "must", partial=True)
    return model, ema, path


def evaluate_checkpoint(cfg: TrainConfig, model_cfg: ModelConfig, logger: DLLogger) -> list[dict]:
    """`--mode eval`: the newest checkpoint's raw and (with EMA) averaged weights on the eval split."""
    data = open_data(cfg, model_cfg, train=False, eval=True, rank=dist.rank(), world=dist.size())
    model, ema, path = restore_for_inference(cfg, model_cfg)
    infer = make_inference_fn(model, cfg.use_xla)
    results = evaluate_raw_and_ema(infer, ema, lambda: data.eval(cfg.eval_img_size, cfg.eval_batch_size),
                                   checkpoint=path or "random weights")
    for result in results:
        logger.log((), result)
    return results
