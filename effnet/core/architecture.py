"""The EfficientNet v1 architecture written as data, and the compound-scaling rules.

The seven base stages are the B0 network. Every other variant is the same table
with its filters scaled by `round_filters` and its repeats by `round_repeats`.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv stage: `repeats` blocks, the first with `strides` and the in->out filter change."""

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float = 0.25


BASE_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec(kernel_size=3, repeats=1, filters_in=32, filters_out=16, expand_ratio=1, strides=1),
    BlockSpec(kernel_size=3, repeats=2, filters_in=16, filters_out=24, expand_ratio=6, strides=2),
    BlockSpec(kernel_size=5, repeats=2, filters_in=24, filters_out=40, expand_ratio=6, strides=2),
    BlockSpec(kernel_size=3, repeats=3, filters_in=40, filters_out=80, expand_ratio=6, strides=2),
    BlockSpec(kernel_size=5, repeats=3, filters_in=80, filters_out=112, expand_ratio=6, strides=1),
    BlockSpec(kernel_size=5, repeats=4, filters_in=112, filters_out=192, expand_ratio=6, strides=2),
    BlockSpec(kernel_size=3, repeats=1, filters_in=192, filters_out=320, expand_ratio=6, strides=1),
)


def round_filters(filters: int, width_coefficient: float, divisor: int = 8) -> int:
    """Scale a filter count by the width coefficient, rounded to a multiple of `divisor`.

    Rounding never drops more than 10% below the exact product.
    """
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Scale a stage's block count by the depth coefficient, rounding up."""
    return int(math.ceil(depth_coefficient * repeats))


@dataclasses.dataclass(frozen=True)
class Block:
    """One concrete MBConv block after scaling: what the builder instantiates."""

    stage: int
    index_in_stage: int
    kernel_size: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float
    drop_rate: float

    @property
    def name(self) -> str:
        return f"block{self.stage + 1}{chr(ord('a') + self.index_in_stage)}"

    @property
    def has_residual(self) -> bool:
        return self.strides == 1 and self.filters_in == self.filters_out


def scale_blocks(
    specs: tuple[BlockSpec, ...],
    width_coefficient: float,
    depth_coefficient: float,
    depth_divisor: int = 8,
    drop_connect_rate: float = 0.2,
) -> list[Block]:
    """Expand stage specs into the list of blocks of one variant.

    The drop-connect rate rises linearly from 0 at the first block to
    `drop_connect_rate * (n - 1) / n` at the last.
    """
    repeats = [round_repeats(s.repeats, depth_coefficient) for s in specs]
    total = sum(repeats)
    blocks: list[Block] = []
    for stage, (spec, n) in enumerate(zip(specs, repeats)):
        filters_in = round_filters(spec.filters_in, width_coefficient, depth_divisor)
        filters_out = round_filters(spec.filters_out, width_coefficient, depth_divisor)
        for i in range(n):
            blocks.append(
                Block(
                    stage=stage,
                    index_in_stage=i,
                    kernel_size=spec.kernel_size,
                    filters_in=filters_in if i == 0 else filters_out,
                    filters_out=filters_out,
                    expand_ratio=spec.expand_ratio,
                    strides=spec.strides if i == 0 else 1,
                    se_ratio=spec.se_ratio,
                    drop_rate=drop_connect_rate * len(blocks) / total,
                )
            )
    return blocks
