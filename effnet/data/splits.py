"""Open a run's train and eval splits for this rank and wrap them in the input pipeline.

Training, `--mode eval` and the tests open data the same way, from the same flags.
"""
from __future__ import annotations

from effnet.core.config.model import ModelConfig
from effnet.core.config.train import TrainConfig
from effnet.core.errors import ConfigError
from effnet.data.pipeline import InputPipeline, PipelineConfig
from effnet.data.readers import RecordSet, locate_split, open_split


def _check_classes(data: RecordSet, model_cfg: ModelConfig) -> None:
    if data.num_classes is not None and data.num_classes > model_cfg.num_classes:
        raise ConfigError(f"the dataset has {data.num_classes} classes but the model {model_cfg.num_classes}; "
                          f"pass --mparams num_classes={data.num_classes}")


def check_data(cfg: TrainConfig, train: bool, eval: bool) -> None:
    """Fail, naming what is missing, unless the splits that `open_data` will open are there (cheap)."""
    for split, wanted in (("train", train), ("eval", eval)):
        if wanted:
            locate_split(cfg.dataset, cfg.data_dir, split)


def open_data(cfg: TrainConfig, model_cfg: ModelConfig, train: bool, eval: bool, rank: int = 0,
              world: int = 1) -> InputPipeline:
    """The pipeline over this rank's shard of the train and/or eval split."""
    train_set = open_split(cfg.dataset, cfg.data_dir, "train", rank, world) if train else None
    eval_set = open_split(cfg.dataset, cfg.data_dir, "eval", rank, world) if eval else None
    for split in (train_set, eval_set):
        if split is not None:
            _check_classes(split, model_cfg)
    return InputPipeline(train_set, eval_set, PipelineConfig(
        batch_size=cfg.train_batch_size * cfg.grad_accum_steps, num_classes=model_cfg.num_classes,
        seed=cfg.seed or 0, rank=rank, threads=cfg.data_threads, defer_img_mixing=cfg.defer_img_mixing,
        min_crop_area=cfg.min_crop_area, crop_padding=cfg.crop_padding, random_flip=cfg.random_flip,
        random_shift=cfg.random_shift))
