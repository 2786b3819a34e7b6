"""`TrainConfig`: every run-time hyper-parameter of the trainer, in one dataclass.

Defaults are those of NVIDIA's TF2 EfficientNet command line (its `cmdline_helper.py`),
so a flag that a user knows from there means the same here. The published training
recipes (EMA 0.9999, cosine decay, lr_init 0.005, ...) are set by `jobs/recipes`, not here.
The CLI is generated from this class: each field is a `--flag`, and its help text is the
field's `help` metadata.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from effnet.core.coerce import coerce, field_types
from effnet.core.config.nvidia import read_flags
from effnet.core.errors import ConfigError
from effnet.core.exits import parse_signals
from effnet.core.paths import LOG_FILENAME

def peak_learning_rate(lr_init: float, global_batch: int) -> float:
    """The reference's linear scaling rule: lr_init is per 128 images."""
    return lr_init * global_batch / 128.0


# The modes that train: they write heartbeats and stop records, and the launcher watches them.
TRAIN_MODES = ("train", "train_and_eval")

Mode = Literal["train_and_eval", "train", "eval", "predict", "benchmark", "summary"]


def _f(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # what to run
    mode: Mode = _f("train_and_eval", "train_and_eval | train | eval | predict | benchmark (synthetic data) | "
                                      "summary (params and the block table)")
    cfg: str = _f("b0", "model config: b0..b7 or a path to a .py file defining `config = ModelConfig(...)`")
    mparams: str = _f("", "model overrides, key=value,key=value (see `--mode summary` for the keys)")
    model_dir: str = _f("runs/effnet", "directory for log.json, checkpoints/, tensorboard/ and savedmodel/")
    log_filename: str = _f(LOG_FILENAME, "dllogger JSON-lines file, relative to model_dir unless absolute")
    log_steps: int = _f(100, "log training metrics every N steps")
    seed: int | None = _f(None, "global random seed (None: nondeterministic)")
    # data
    data_dir: str | None = _f(None, "TFRecords (train-*, validation-*), class folders (train/, validation/) or a TFDS data_dir")
    dataset: str = _f("auto", "auto | tfrecord | folder | tfds:NAME (e.g. tfds:imagenet2012)")
    augmenter_name: Literal["autoaugment", "randaugment", "none"] = _f("autoaugment", "per-image augmentation")
    raug_num_layers: int = _f(2, "RandAugment: ops per image")
    raug_magnitude: float = _f(10.0, "RandAugment: magnitude (0-10) of the last stage")
    mixup_alpha: float = _f(0.0, "mixup Beta(alpha, alpha) of the last stage; 0 = off")
    cutmix_alpha: float = _f(0.0, "cutmix Beta(alpha, alpha) of the last stage; 0 = off")
    defer_img_mixing: bool = _f(False, "run AutoAugment/RandAugment and mixup/cutmix on the device instead of in the input pipeline")
    data_threads: int = _f(0, "input pipeline private thread pool size (0: TensorFlow's default pool)")
    min_crop_area: float = _f(0.05, "smallest random train crop, as a fraction of the image area")
    crop_padding: int = _f(32, "eval/predict center crop: image_size/(image_size+crop_padding) of the short side")
    random_flip: bool = _f(True, "flip training images left-right at random (off for digits, text and other "
                                 "classes that mirroring changes)")
    random_shift: int = _f(0, "shift training images by up to N pixels along each axis, at the training size, "
                              "filling with black (0 = off): translation without the crop's change of scale")
    # stage-wise training
    n_stages: int = _f(1, "progressive-resolution stages from base_img_size to train_img_size")
    base_img_size: int = _f(128, "image size of the first stage")
    base_mixup: float = _f(0.0, "mixup alpha of the first stage")
    base_cutmix: float = _f(0.0, "cutmix alpha of the first stage")
    base_randaug_mag: float = _f(5.0, "RandAugment magnitude of the first stage")
    # evaluation, checkpoints, resume
    moving_average_decay: float = _f(0.0, "EMA decay of the weights and BN statistics (0 = no EMA)")
    skip_eval: bool = _f(False, "train_and_eval: skip the per-epoch evaluation (the final one still runs)")
    num_epochs_between_eval: int = _f(1, "train_and_eval: evaluate every N epochs")
    save_checkpoint_freq: int = _f(5, "save a checkpoint every N epochs (and at the end, and on a signal)")
    checkpoint_every_min: float = _f(0.0, "minutes between checkpoints besides the per-epoch ones, bounding the "
                                          "work lost to a crash (0 = off; counts toward keep_checkpoints)")
    keep_checkpoints: int = _f(5, "how many checkpoints to keep")
    resume: Literal["auto", "must", "never"] = _f("auto", "auto: resume from the newest readable checkpoint if any; "
                                                  "must: fail without one; never: start fresh")
    checkpoint_signals: str = _f("SIGUSR2,SIGTERM", "signals that make training checkpoint and exit with status 75")
    export_savedmodel: bool = _f(True, "after training, export the better of raw/EMA weights to model_dir/savedmodel")
    tensorboard: bool = _f(True, "write TensorBoard scalars to model_dir/tensorboard")
    # predict
    predict_path: str | None = _f(None, "predict: an image file, a folder of images, or a folder of image folders")
    predict_output: str | None = _f(None, "predict: .json or .csv output path (default model_dir/predictions.json)")
    top_k: int = _f(5, "predict: classes reported per image")
    allow_random_weights: bool = _f(False, "predict/eval: run without a checkpoint (random weights)")
    # precision and compilation
    use_amp: bool = _f(False, "mixed precision: float16 compute with dynamic loss scaling (see amp_dtype)")
    amp_dtype: Literal["float16", "bfloat16"] = _f("float16", "compute dtype for --use_amp; bfloat16 needs no loss scaling")
    use_tf32: bool = _f(True, "allow TensorFloat-32 matmuls/convolutions on Ampere+ GPUs (no effect on CPU)")
    use_xla: bool = _f(False, "XLA-compile the forward/backward pass")
    memory_limit: int | None = _f(None, "cap each rank's GPU memory at N MB (None: allocate as needed)")
    # batch and image size
    train_batch_size: int = _f(32, "per-rank training batch size")
    train_img_size: int = _f(224, "training image size in pixels")
    eval_batch_size: int = _f(100, "per-rank evaluation/inference batch size")
    eval_img_size: int = _f(224, "evaluation/inference image size in pixels")
    grad_accum_steps: int = _f(1, "micro-batches accumulated per optimizer update (an N x larger batch)")
    # optimizer
    optimizer: Literal["rmsprop", "momentum"] = _f("rmsprop", "rmsprop (TF-style epsilon) or SGD with momentum")
    momentum: float = _f(0.9, "optimizer momentum")
    rmsprop_rho: float = _f(0.9, "RMSprop discounting factor (the reference calls it --decay)")
    opt_epsilon: float = _f(0.001, "optimizer epsilon")
    nesterov: bool = _f(False, "Nesterov momentum (momentum optimizer only)")
    label_smoothing: float = _f(0.1, "label smoothing for the cross-entropy loss")
    weight_decay: float = _f(5e-6, "L2 penalty wd*sum(w^2) on conv and dense kernels and biases")
    # learning-rate schedule
    lr_init: float = _f(0.008, "learning rate per 128 images: lr = lr_init * global_batch / 128")
    lr_decay: Literal["exponential", "cosine"] = _f("exponential", "decay after warmup: exponential or cosine to 0")
    lr_decay_rate: float = _f(0.97, "exponential decay factor per lr_decay_epochs")
    lr_decay_epochs: float = _f(2.4, "epochs between exponential decays")
    warmup_epochs: int = _f(5, "linear warmup epochs from 0 to the peak lr")
    max_epochs: int = _f(300, "number of training epochs (sets the schedule's length)")
    steps_per_epoch: int | None = _f(None, "optimizer updates per epoch (None: the train split's examples // global "
                                           "batch; ImageNet-1k's in benchmark mode)")
    # benchmark mode
    benchmark_steps: int = _f(50, "benchmark: timed steps for training and for inference")
    benchmark_warmup_steps: int = _f(5, "benchmark: untimed steps first (tracing, autotuning)")

    def __post_init__(self) -> None:
        positive = ["log_steps", "train_batch_size", "train_img_size", "eval_batch_size", "eval_img_size",
                    "grad_accum_steps", "max_epochs", "benchmark_steps", "raug_num_layers",
                    "n_stages", "base_img_size", "num_epochs_between_eval", "save_checkpoint_freq",
                    "keep_checkpoints", "top_k"]
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key} must be >= 1, got {getattr(self, key)}")
        non_negative = ["weight_decay", "label_smoothing", "lr_init", "warmup_epochs", "benchmark_warmup_steps",
                        "raug_magnitude", "mixup_alpha", "cutmix_alpha", "base_mixup", "base_cutmix",
                        "base_randaug_mag", "data_threads", "moving_average_decay", "crop_padding",
                        "checkpoint_every_min"]
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ConfigError(f"--{key} must be >= 0, got {getattr(self, key)}")
        for key in ("steps_per_epoch", "memory_limit"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"--{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs > self.max_epochs:
            raise ConfigError(f"--warmup_epochs ({self.warmup_epochs}) exceeds --max_epochs ({self.max_epochs})")
        if self.nesterov and self.optimizer != "momentum":
            raise ConfigError("--nesterov needs --optimizer momentum")
        if not 0 < self.min_crop_area <= 1:
            raise ConfigError(f"--min_crop_area must be in (0, 1], got {self.min_crop_area}")
        if not 0 <= self.random_shift < min(self.train_img_size, self.base_img_size):
            raise ConfigError(f"--random_shift must be in [0, image size), got {self.random_shift}")
        if self.moving_average_decay >= 1:
            raise ConfigError(f"--moving_average_decay must be in [0, 1), got {self.moving_average_decay}")
        if self.n_stages > self.max_epochs:
            raise ConfigError(f"--n_stages ({self.n_stages}) exceeds --max_epochs ({self.max_epochs})")
        if not (self.dataset in ("auto", "tfrecord", "folder") or self.dataset.startswith("tfds:")):
            raise ConfigError(f"--dataset {self.dataset!r}: valid: auto, tfrecord, folder, tfds:NAME")
        try:
            parse_signals(self.checkpoint_signals)
        except ValueError as err:
            raise ConfigError(f"--checkpoint_signals: {err}") from None

    @classmethod
    def from_flags(cls, **flags) -> "TrainConfig":
        """Build from CLI values (NVIDIA's spellings read as ours); unknown flags and ill-typed values
        raise `ConfigError`."""
        flags = read_flags(flags)
        types = field_types(cls)
        unknown = sorted(set(flags) - set(types))
        if unknown:
            raise ConfigError(f"unknown flag(s) {', '.join('--' + u for u in unknown)}; valid: {', '.join(types)}")
        return cls(**{k: coerce(f"--{k}", v, types[k]) for k, v in flags.items()})

    def global_batch(self, world_size: int) -> int:
        """Images per optimizer update across all ranks."""
        return self.train_batch_size * self.grad_accum_steps * world_size

    def peak_lr(self, world_size: int) -> float:
        return peak_learning_rate(self.lr_init, self.global_batch(world_size))


    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
