"""Named training recipes, and how one resolves against a cluster profile and a node count.

A recipe is data: the model, the precision, the per-GPU batch for each GPU type (the reference's
table) and the trainer flags. Resolving it picks the batch for the profile's GPU, derives the
global batch and the peak learning rate for the node count, applies `--set` overrides and checks
the result through `TrainConfig`, so a typo fails at submit time and not on the cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from effnet.core.errors import ConfigError
from effnet.core.config.nvidia import read_flags
from effnet.core.config.train import TRAIN_MODES, TrainConfig
from effnet.core.stages import Stage, StageSchedule
from jobs.profile import ClusterProfile

Precision = Literal["amp", "tf32", "fp32"]

PRECISION_FLAGS: dict[str, dict] = {
    "amp": {"use_amp": True, "use_tf32": True},
    "tf32": {"use_amp": False, "use_tf32": True},
    "fp32": {"use_amp": False, "use_tf32": False},
}

# The reference's convergence recipe (nvidia.md §2.3), shared by every GPU recipe.
REFERENCE_FLAGS = {
    "mode": "train_and_eval", "use_xla": True, "log_steps": 100, "max_epochs": 500, "save_checkpoint_freq": 5,
    "augmenter_name": "autoaugment", "lr_decay": "cosine", "lr_init": 0.005, "warmup_epochs": 5,
    "defer_img_mixing": True, "moving_average_decay": 0.9999,
    # XLA compiles the whole forward/backward pass, which the cross-replica BatchNorm allreduce would
    # break; with 32+ images per GPU, per-GPU BatchNorm statistics are what the reference trains with.
    "mparams": "sync_batch_norm=false",
}
B0_FLAGS = {**REFERENCE_FLAGS, "cfg": "b0", "train_img_size": 224, "eval_img_size": 224}
B4_FLAGS = {**REFERENCE_FLAGS, "cfg": "b4", "train_img_size": 380, "eval_img_size": 380, "mixup_alpha": 0.2}

# Per-GPU batch sizes of the reference (train = eval).
B0_BATCH = {"amp": {"a100": 1024, "v100": 512}, "tf32": {"a100": 512}, "fp32": {"a100": 512, "v100": 256}}
B4_BATCH = {"amp": {"a100": 160, "v100": 64}, "tf32": {"a100": 80}, "fp32": {"a100": 80, "v100": 32}}

# CPU smoke runs: B0 on the shipped photos from `tools.demo_data`, tiny and deterministic.
SMOKE_FLAGS = {
    "mode": "train_and_eval", "cfg": "b0", "mparams": "num_classes=3,sync_batch_norm=false,bn_momentum=0.9",
    "train_img_size": 48, "eval_img_size": 48, "skip_eval": True,
    "max_epochs": 3, "steps_per_epoch": 8, "warmup_epochs": 1, "lr_decay": "cosine", "lr_init": 0.01,
    "augmenter_name": "autoaugment", "moving_average_decay": 0.9, "log_steps": 1, "save_checkpoint_freq": 1,
    "keep_checkpoints": 2, "min_crop_area": 0.3, "seed": 0, "tensorboard": False,
}


# B0 on MNIST-5k at 48 px (tools.demo_data), one process at batch 32 or ranks adding up to 32: tuned in
# bench.convergence (its docstring says why each value, and what it reaches over seeds 0-3), which trains
# 10 epochs. Per-rank BatchNorm statistics: the cross-replica allreduce of every BN layer made a 2-rank CPU
# step ~10x slower.
MNIST_FLAGS = {
    "mode": "train_and_eval", "cfg": "b0",
    "mparams": "num_classes=10,bn_momentum=0.9,dropout_rate=0,drop_connect_rate=0,sync_batch_norm=false",
    "train_img_size": 48, "eval_img_size": 48, "optimizer": "rmsprop", "lr_init": 0.004, "warmup_epochs": 1,
    "lr_decay": "cosine", "label_smoothing": 0.0, "augmenter_name": "none", "min_crop_area": 1.0, "crop_padding": 0,
    "random_flip": False, "random_shift": 4, "moving_average_decay": 0.995, "num_epochs_between_eval": 2,
    "log_steps": 70, "export_savedmodel": False, "tensorboard": False, "max_epochs": 10,
}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    precision: Precision
    batch_per_gpu: dict[str, int]  # gpu_type -> per-rank train/eval batch
    flags: dict = field(default_factory=dict)
    # The dataset under the profile's data_dir ("" : data_dir itself, as the GPU profiles' ImageNet is):
    # a profile says where datasets live, a recipe which one it trains on.
    data_subdir: str = ""

    def batch_for(self, gpu_type: str) -> int:
        if gpu_type not in self.batch_per_gpu:
            raise ConfigError(f"recipe {self.name} has no batch size for {gpu_type} ranks; it runs on: "
                              f"{', '.join(sorted(self.batch_per_gpu))}")
        return self.batch_per_gpu[gpu_type]


def _reference_recipes() -> list[Recipe]:
    out = []
    for model, flags, table in (("b0", B0_FLAGS, B0_BATCH), ("b4", B4_FLAGS, B4_BATCH)):
        for precision, batches in table.items():
            out.append(Recipe(f"{model}_{precision}", f"EfficientNet-{model.upper()}, {precision.upper()}, "
                              f"the reference's convergence recipe", precision, batches, flags))
    # Progressive resolution: four stages growing to the final size, mixup growing with them (B4).
    out.append(Recipe("b0_amp_stages", "EfficientNet-B0, AMP, 4 resolution stages 128 -> 224 px", "amp",
                      B0_BATCH["amp"], {**B0_FLAGS, "n_stages": 4, "base_img_size": 128}))
    out.append(Recipe("b4_amp_stages", "EfficientNet-B4, AMP, 4 resolution stages 256 -> 380 px, mixup 0 -> 0.2",
                      "amp", B4_BATCH["amp"], {**B4_FLAGS, "n_stages": 4, "base_img_size": 256, "base_mixup": 0.0}))
    return out


def _smoke_recipes() -> list[Recipe]:
    cpu = {"cpu": 8}
    return [
        Recipe("smoke", "B0 on the shipped photos, 48 px, 3 epochs x 8 steps (CPU)", "fp32", cpu, SMOKE_FLAGS,
               "photos"),
        Recipe("smoke_stages", "smoke with 2 resolution stages 32 -> 48 px over 4 epochs (CPU)", "fp32", cpu,
               {**SMOKE_FLAGS, "max_epochs": 4, "n_stages": 2, "base_img_size": 32}, "photos"),
        # 2 ranks x 16 = bench.convergence's batch 32; 3 of its 10 epochs fit in about 5 minutes on 2 cores.
        Recipe("demo", "B0 on MNIST-5k, 48 px, 3 epochs: learns to over 90% in minutes (CPU)", "fp32",
               {"cpu": 16}, {**MNIST_FLAGS, "max_epochs": 3, "seed": 0}, "mnist"),
        Recipe("smoke_bench", "B0 synthetic-data benchmark, 48 px (CPU)", "fp32", cpu,
               {"mode": "benchmark", "cfg": "b0", "train_img_size": 48, "eval_img_size": 48,
                "benchmark_steps": 10, "benchmark_warmup_steps": 3, "seed": 0}),
    ]


RECIPES: dict[str, Recipe] = {r.name: r for r in _reference_recipes() + _smoke_recipes()}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`--set key=value` items; keys are trainer flags (checked later by `TrainConfig`)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set max_epochs=10")
        out[key] = value
    return out


# Flags the launcher owns: they follow from the profile and the experiment, not from the user.
LAUNCHER_FLAGS = ("model_dir", "data_dir")


@dataclass(frozen=True)
class ResolvedRecipe:
    recipe: str
    cluster: str
    nodes: int
    ranks: int
    trainer_flags: dict
    global_batch: int
    peak_lr: float
    stages: tuple[Stage, ...]
    mode: str

    @property
    def trains(self) -> bool:
        """Training modes checkpoint, beat a heartbeat and write stop records (effnet.core.health)."""
        return self.mode in TRAIN_MODES

    def show(self) -> str:
        lines = [f"recipe {self.recipe} on {self.cluster}: {self.nodes} node(s) x {self.ranks // self.nodes} "
                 f"rank(s) = {self.ranks} rank(s)",
                 f"  global batch {self.global_batch}, peak lr {self.peak_lr:g} (lr_init x global batch / 128)"]
        if self.stages:
            lines.append("  stages:")
            lines += [f"    {s.index + 1}: {s.describe()}" for s in self.stages]
        lines.append("  trainer flags:")
        lines += [f"    --{k}={v}" for k, v in self.trainer_flags.items()]
        return "\n".join(lines)


def resolve(recipe: Recipe, profile: ClusterProfile, nodes: int, overrides: dict[str, str] | None = None,
            model_dir: str = "", data_dir: str = "") -> ResolvedRecipe:
    """The trainer flags of `recipe` on `nodes` nodes of `profile`, validated."""
    if not 1 <= nodes <= profile.max_nodes:
        raise ConfigError(f"--nodes {nodes}: cluster {profile.name} allows 1 to {profile.max_nodes} node(s)")
    try:  # NVIDIA's names for our flags (--set lr_warmup_epochs=3) override ours
        overrides = read_flags(dict(overrides or {}))
    except ConfigError as err:
        raise ConfigError(f"--set: {err}") from None
    owned = sorted(set(overrides) & set(LAUNCHER_FLAGS))
    if owned:
        raise ConfigError(f"--set {', '.join(owned)}: set by the launcher from the cluster profile and the "
                          f"experiment name; change the profile or --name instead")
    batch = recipe.batch_for(profile.gpu_type)
    flags = {**recipe.flags, **PRECISION_FLAGS[recipe.precision], "train_batch_size": batch, "eval_batch_size": batch}
    if data_dir:
        flags["data_dir"] = f"{data_dir.rstrip('/')}/{recipe.data_subdir}" if recipe.data_subdir else data_dir
    if model_dir:
        flags["model_dir"] = model_dir
    flags.update(overrides)
    if flags.get("mode", "train_and_eval") in TRAIN_MODES:
        # The profile's periodic checkpoints bound what a crash loses; a recipe or --set may say otherwise.
        flags.setdefault("checkpoint_every_min", profile.checkpoint_every_min)
    try:
        config = TrainConfig.from_flags(**flags)
        stages = tuple(StageSchedule.from_config(config).stages()) if config.mode != "benchmark" else ()
    except ConfigError as err:
        raise ConfigError(f"recipe {recipe.name}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"recipe {recipe.name}: {err}") from None
    ranks = nodes * profile.tasks_per_node
    typed = {k: getattr(config, k) for k in flags}
    global_batch = config.global_batch(ranks)
    return ResolvedRecipe(recipe.name, profile.name, nodes, ranks, typed, global_batch,
                          config.peak_lr(ranks), stages, config.mode)
