"""Progressive (stage-wise) training: image size and augmentation strength per stage.

The schedule is a pure function of the epoch, so a resumed run lands in the right stage with
the right image size without remembering anything. Stage s of n runs at
linspace(base_img_size, train_img_size, n)[s] pixels, so the first stage really starts at the
base size (the reference's formula skipped it), and mixup, cutmix and the RandAugment magnitude
are interpolated the same way from their base values. Epochs split evenly; the last stage
takes the remainder.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from effnet.core.config.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    first_epoch: int
    last_epoch: int          # exclusive
    image_size: int
    mixup_alpha: float
    cutmix_alpha: float
    raug_magnitude: float

    def describe(self) -> str:
        """One line for job headers and `--dry-run`: 'epochs 0-124 at 128 px, mixup 0, ...'."""
        return (f"epochs {self.first_epoch}-{self.last_epoch - 1} at {self.image_size} px, mixup {self.mixup_alpha:g}, "
                f"cutmix {self.cutmix_alpha:g}, randaug magnitude {self.raug_magnitude:g}")


@dataclasses.dataclass(frozen=True)
class StageSchedule:
    max_epochs: int
    n_stages: int = 1
    base_img_size: int = 128
    train_img_size: int = 224
    base_mixup: float = 0.0
    mixup_alpha: float = 0.0
    base_cutmix: float = 0.0
    cutmix_alpha: float = 0.0
    base_randaug_mag: float = 5.0
    raug_magnitude: float = 10.0

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "StageSchedule":
        return cls(max_epochs=cfg.max_epochs, n_stages=cfg.n_stages, base_img_size=cfg.base_img_size,
                   train_img_size=cfg.train_img_size, base_mixup=cfg.base_mixup, mixup_alpha=cfg.mixup_alpha,
                   base_cutmix=cfg.base_cutmix, cutmix_alpha=cfg.cutmix_alpha,
                   base_randaug_mag=cfg.base_randaug_mag, raug_magnitude=cfg.raug_magnitude)

    def __post_init__(self) -> None:
        if not 1 <= self.n_stages <= self.max_epochs:
            raise ValueError(f"n_stages must be in [1, max_epochs={self.max_epochs}], got {self.n_stages}")

    def _interpolate(self, base: float, final: float, index: int) -> float:
        if self.n_stages == 1:
            return float(final)
        return float(np.linspace(base, final, self.n_stages)[index])

    def stage(self, index: int) -> Stage:
        per_stage = self.max_epochs // self.n_stages
        first = index * per_stage
        last = self.max_epochs if index == self.n_stages - 1 else first + per_stage
        return Stage(
            index=index,
            first_epoch=first,
            last_epoch=last,
            image_size=int(round(self._interpolate(self.base_img_size, self.train_img_size, index))),
            mixup_alpha=self._interpolate(self.base_mixup, self.mixup_alpha, index),
            cutmix_alpha=self._interpolate(self.base_cutmix, self.cutmix_alpha, index),
            raug_magnitude=self._interpolate(self.base_randaug_mag, self.raug_magnitude, index),
        )

    def stages(self) -> list[Stage]:
        return [self.stage(i) for i in range(self.n_stages)]

    def at_epoch(self, epoch: int) -> Stage:
        """The stage that epoch `epoch` (0-based) belongs to."""
        per_stage = self.max_epochs // self.n_stages
        return self.stage(min(epoch // per_stage, self.n_stages - 1))
