"""NVIDIA's spellings: the command line of their TF2 EfficientNet `main.py`, read by this trainer.

Users arrive with NVIDIA's command lines (`python main.py --cfg config/efficientnet_v1/b0_cfg.py
--mode prediction --mparams dropout=0.5 ...`). Where their flag, mode, model file or `--mparams` key
names the same thing as one of ours, it is read as ours; where it does not, the error names what
to use instead. docs/nvidia.md maps their scripts to this project's commands.
"""
from __future__ import annotations

import re

from effnet.core.errors import ConfigError

# Their flag -> ours, where the two mean the same thing.
FLAG_ALIASES = {
    "lr_warmup_epochs": "warmup_epochs",      # the flag's real name; their README calls it --warmup_epochs
    "decay": "rmsprop_rho",
    "export_SavedModel": "export_savedmodel",
    "enable_tensorboard": "tensorboard",
    "predict_img_dir": "predict_path",        # a folder of images, or of folders of images (/infer_data/images)
    "predict_ckpt": "model_dir",              # where predict (and eval) restore the newest checkpoint from
    "predict_batch_size": "eval_batch_size",
    "predict_img_size": "eval_img_size",
}

_DALI = "DALI is not used: the tf.data pipeline decodes and augments, --defer_img_mixing moves the work to the GPU"
_NO_ADAM = "the optimizers are rmsprop and momentum (--optimizer); Adam is not offered"
_DPIPE = "images are normalized inside the model, as NVIDIA's default does; drop the flag"
_AUGMENT_CONSTANTS = "AutoAugment (policy v0) and RandAugment use NVIDIA's default constants; drop the flag"

# Their flags with no flag of the same meaning here: what to do instead.
FLAG_HINTS = {
    "train_use_dali": _DALI,
    "eval_use_dali": _DALI,
    "index_file": _DALI,
    "time_history": "throughput is always logged, every --log_steps steps; drop the flag",
    "intraop_threads": "TensorFlow's thread pools keep their defaults; --data_threads sizes the input pipeline's",
    "interop_threads": "TensorFlow's thread pools keep their defaults; --data_threads sizes the input pipeline's",
    "log_dir": "the run's parameters are the PARAMETER line of --model_dir/log.json; drop the flag",
    "data_format": "the model runs channels-last and the GPU libraries choose their layout; drop the flag",
    "run_eagerly": "the training step is always compiled (tf.function); drop the flag",
    "weights_format": "eval and predict restore checkpoints from --model_dir; the SavedModel is for serving",
    "beta_1": _NO_ADAM,
    "beta_2": _NO_ADAM,
    "lookahead": "Lookahead is not offered (NVIDIA's flag is never used either); drop the flag",
    "intratrain_eval_using_ema": "with --moving_average_decay > 0 every evaluation reports raw and EMA weights",
    "hvd_fp16_compression": "gradients are averaged across ranks uncompressed; drop the flag",
    "grad_clip_norm": "gradient clipping is not offered; drop the flag",
    "metrics": "loss, top-1 and top-5 accuracy are always reported; drop the flag",
    "resume_checkpoint": "--resume auto (the default) resumes from the newest checkpoint in --model_dir",
    "enable_checkpoint_saving": "checkpoints are always saved: --save_checkpoint_freq, --checkpoint_every_min",
    "tb_write_model_weights": "TensorBoard gets scalars only (--tensorboard); drop the flag",
    "n_repeat_eval": "each evaluation is one exact pass over the whole eval split; drop the flag",
    "benchmark": "--mode benchmark times training and inference on synthetic data",
    "num_classes": "the class count is a model field: --mparams num_classes=N",
    "train_num_examples": "the train split is counted from the data; --steps_per_epoch sets an epoch's length",
    "eval_num_examples": "the whole eval split is evaluated; drop the flag",
    "mean_subtract_in_dpipe": _DPIPE,
    "standardize_in_dpipe": _DPIPE,
    "disable_map_parallelization": "--data_threads N sizes the input pipeline's thread pool",
    "autoaugmentation_name": _AUGMENT_CONSTANTS,
    "cutout_const": _AUGMENT_CONSTANTS,
    "translate_const": _AUGMENT_CONSTANTS,
    "batch_size": "--train_batch_size and --eval_batch_size (per GPU)",
    "arch": "--cfg b0 .. b7",
}

MODE_ALIASES = {"prediction": "predict", "evaluate": "eval"}

MODE_HINTS = {
    "training_benchmark": "--mode benchmark times training on synthetic data; --mode train trains on --data_dir",
    "inference_benchmark": "--mode benchmark times inference on synthetic data; --mode eval reports the eval "
                           "split's throughput and latency",
}

# Their --mparams keys (config/efficientnet_v1/bN_cfg.py) -> our ModelConfig fields.
MPARAMS_ALIASES = {"dropout": "dropout_rate", "stem_base_filters": "stem_filters", "top_base_filters": "top_filters"}

_FIXED = "is fixed to NVIDIA's value in this model"
MPARAMS_HINTS = {
    "batch_norm": "use sync_batch_norm=true|false (NVIDIA's batch_norm=syncbn is sync_batch_norm=true)",
    "dtype": "the compute dtype follows --use_amp and --amp_dtype",
    "activation": f"swish {_FIXED}",
    "use_se": f"squeeze-and-excitation {_FIXED}",
    "weight_init": f"fan_out initialisation {_FIXED}",
    "input_channels": f"3 input channels {_FIXED}",
    "rescale_input": f"in-model normalisation {_FIXED}",
    "mean_rgb": f"ImageNet's mean {_FIXED}",
    "std_rgb": f"ImageNet's standard deviation {_FIXED}",
    "min_depth": f"min_depth {_FIXED}",
}

# NVIDIA's model files: config/efficientnet_v1/b0_cfg.py names the bundled b0.
_V1_CFG = re.compile(r"(?:^|[/\\])efficientnet_v1[/\\](b[0-7])_cfg\.py$")
_V2_CFG = re.compile(r"(?:^|[/\\])efficientnet_v2[/\\]\w+_cfg\.py$")


def bundled_model_for(cfg: str) -> str | None:
    """The bundled model that NVIDIA's `config/efficientnet_v1/bN_cfg.py` names, else None."""
    if _V2_CFG.search(cfg):
        raise ConfigError(f"--cfg {cfg}: EfficientNet v2 is not offered here; v1 is: --cfg b0 .. b7")
    match = _V1_CFG.search(cfg)
    return match.group(1) if match else None


def read_flags(flags: dict) -> dict:
    """`flags` with NVIDIA's names and modes read as ours; a flag with no equivalent is a ConfigError."""
    out: dict = {}
    given_as: dict[str, str] = {}
    for name, value in flags.items():
        if name in FLAG_HINTS:
            raise ConfigError(f"--{name} is NVIDIA's flag: {FLAG_HINTS[name]}")
        ours = FLAG_ALIASES.get(name, name)
        if ours in out:
            raise ConfigError(f"--{ours} is given twice, as --{given_as[ours]} and --{name}")
        out[ours], given_as[ours] = value, name
    mode = out.get("mode")
    if isinstance(mode, str):
        if mode in MODE_HINTS:
            raise ConfigError(f"--mode {mode} is NVIDIA's mode: {MODE_HINTS[mode]}")
        out["mode"] = MODE_ALIASES.get(mode, mode)
    return out


def read_mparams_key(key: str) -> str:
    """Our ModelConfig field for an `--mparams` key (NVIDIA's names read as ours)."""
    if key in MPARAMS_HINTS:
        raise ConfigError(f"--mparams {key} is a key of NVIDIA's model files: {MPARAMS_HINTS[key]}")
    return MPARAMS_ALIASES.get(key, key)
