"""`--mode summary`: what a config builds, before any data or GPU is involved."""
from __future__ import annotations

from effnet.core.coerce import type_name
from effnet.core.config.model import ModelConfig, overridable_fields
from effnet.core.architecture import round_filters
from effnet.model.efficientnet import build_model, model_blocks


def count_params(model) -> tuple[int, int]:
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    total = sum(int(w.numpy().size) for w in model.weights)
    return total, trainable


def block_table(cfg: ModelConfig) -> list[str]:
    header = f"{'block':<9}{'kernel':>7}{'stride':>7}{'expand':>7}{'in':>6}{'out':>6}{'se':>5}{'drop':>7}  residual"
    lines = [header, "-" * len(header)]
    for b in model_blocks(cfg):
        se = max(1, int(b.filters_in * b.se_ratio)) if b.se_ratio > 0 else 0
        lines.append(
            f"{b.name:<9}{b.kernel_size:>7}{b.strides:>7}{b.expand_ratio:>7}{b.filters_in:>6}{b.filters_out:>6}"
            f"{se:>5}{b.drop_rate:>7.3f}  {'yes' if b.has_residual else 'no'}"
        )
    return lines


def summary_text(cfg: ModelConfig) -> str:
    model = build_model(cfg, image_size=cfg.resolution)
    total, trainable = count_params(model)
    blocks = model_blocks(cfg)
    lines = [
        f"model: efficientnet-{cfg.name}  width {cfg.width_coefficient}  depth {cfg.depth_coefficient}  "
        f"dropout {cfg.dropout_rate}  drop_connect {cfg.drop_connect_rate}",
        f"resolution: {cfg.resolution}",
        f"classes: {cfg.num_classes}",
        f"params: {total:,} total, {trainable:,} trainable, {total - trainable:,} non-trainable (BN statistics)",
        f"stem filters: {round_filters(cfg.stem_filters, cfg.width_coefficient, cfg.depth_divisor)}  "
        f"blocks: {len(blocks)}  "
        f"head filters: {round_filters(cfg.top_filters, cfg.width_coefficient, cfg.depth_divisor)}",
        "",
        *block_table(cfg),
        "",
        "--mparams keys: " + ", ".join(f"{k} ({type_name(t)})" for k, t in overridable_fields().items()),
    ]
    return "\n".join(lines)
