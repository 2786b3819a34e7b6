"""Throughput and latency statistics, under the reference's keys and as true percentiles.

NVIDIA's `latency_90pct`/`95pct`/`99pct` are not percentiles: they are the mean of the
fastest 90/95/99% of batches (and `latency_pct` the mean of all but the slowest). We report
those under the same names, so tables stay comparable, and add real percentiles as
`latency_p50`/`p90`/`p95`/`p99`. All latencies are milliseconds per batch.
"""
from __future__ import annotations

import numpy as np


def trimmed_mean_ms(batch_seconds: list[float], keep_fraction: float) -> float:
    """Mean of the fastest `keep_fraction` of batches, in ms (the reference's 'latency_XXpct')."""
    ordered = np.sort(np.asarray(batch_seconds, dtype=np.float64))
    keep = max(1, int(len(ordered) * keep_fraction))
    return float(ordered[:keep].mean() * 1000.0)


def latency_stats(batch_seconds: list[float]) -> dict[str, float]:
    if not batch_seconds:
        raise ValueError("no batch timings")
    times = np.asarray(batch_seconds, dtype=np.float64)
    ordered = np.sort(times)
    all_but_slowest = ordered[:-1] if len(ordered) > 1 else ordered
    stats = {
        "latency_pct": float(all_but_slowest.mean() * 1000.0),
        "latency_90pct": trimmed_mean_ms(batch_seconds, 0.90),
        "latency_95pct": trimmed_mean_ms(batch_seconds, 0.95),
        "latency_99pct": trimmed_mean_ms(batch_seconds, 0.99),
    }
    for q in (50, 90, 95, 99):
        stats[f"latency_p{q}"] = float(np.percentile(times, q) * 1000.0)
    return stats


def throughput(examples: int, seconds: float) -> float:
    return float(examples / seconds) if seconds > 0 else float("nan")
