"""The result tables (shaped like the seed README's) and training curves, from parsed run logs.

Pure Python and TensorFlow-free: `python -m tools.collect` prints these tables, `python -m bench.readme`
writes them into docs/results.md, and the launcher (`jobs.monitor`) prints them when a job ends.

- accuracy: per model and GPU count, top-1 (the better of raw and EMA weights) and time to train,
  per precision, and the time-to-train speedup of mixed precision;
- throughput: training img/s per GPU count and precision, the mixed-precision speedup, and weak
  scaling (speedup and efficiency against the smallest GPU count);
- inference: per batch size and resolution, throughput and latency: the reference's trimmed means
  ("Latency 90%" is the mean of the fastest 90% of batches) and true percentiles.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

from effnet.core.runlog import RunLog

PRECISION_ORDER = ("TF32", "FP32", "TF32/FP32", "BF16", "mixed precision")


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _precisions(runs: list[RunLog]) -> list[str]:
    present = {r.precision for r in runs}
    return [p for p in PRECISION_ORDER if p in present]


def accuracy_rows(runs: list[RunLog]) -> list[dict]:
    """Seed shape: GPUs | Accuracy - P | Time to train - P | Time to train speedup (P to mixed precision)."""
    trained = [r for r in runs if any("eval_accuracy_top_1" in f for f in r.final_results())
               and r.parameters().get("mode", "train_and_eval") != "eval"]
    cells: dict[tuple, dict] = defaultdict(dict)
    for run in trained:
        finals = [f for f in run.final_results() if "eval_accuracy_top_1" in f]
        best = max(finals, key=lambda f: f["eval_accuracy_top_1"])
        cells[(run.model, run.ranks)][run.precision] = {
            "top1": 100 * best["eval_accuracy_top_1"], "weights": "EMA" if "EMA" in best.get("comment", "") else "raw",
            "seconds": run.wall_seconds(), "run": run.name}
    precisions = _precisions(trained)
    rows = []
    for (model, ranks), by_precision in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        row = {"Model": model, "GPUs": ranks}
        for p in precisions:
            cell = by_precision.get(p)
            row[f"Accuracy - {p}"] = f"{cell['top1']:.2f}% ({cell['weights']})" if cell else ""
        for p in precisions:
            cell = by_precision.get(p)
            row[f"Time to train - {p}"] = _hours(cell["seconds"]) if cell else ""
        amp = by_precision.get("mixed precision")
        for p in precisions:
            if p != "mixed precision" and "mixed precision" in precisions:
                base = by_precision.get(p)
                row[f"Time to train speedup ({p} to mixed precision)"] = (
                    f"{base['seconds'] / amp['seconds']:.2f}x" if base and amp and amp["seconds"] else "")
        rows.append(row)
    return rows


def throughput_rows(runs: list[RunLog]) -> list[dict]:
    """Seed shape: GPUs | Throughput - P | Throughput speedup (P - mixed precision) | Weak scaling - P."""
    measured = [r for r in runs if any("avg_exp_per_second_training" in f for f in r.final_results())]
    rates: dict[tuple, list[float]] = defaultdict(list)
    for run in measured:
        rate = max(f["avg_exp_per_second_training"] for f in run.final_results() if "avg_exp_per_second_training" in f)
        size = run.parameters().get("train_img_size")
        rates[(f"{run.model} {size}px" if size else run.model, run.precision, run.ranks)].append(rate)
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    precisions = _precisions(measured)
    rows = []
    for model in sorted({k[0] for k in mean}):
        gpu_counts = sorted({k[2] for k in mean if k[0] == model and k[2] is not None})
        for ranks in gpu_counts:
            row = {"Model": model, "GPUs": ranks}
            for p in precisions:
                row[f"Throughput - {p}"] = _fmt(mean.get((model, p, ranks)), ".1f")
            amp = mean.get((model, "mixed precision", ranks))
            for p in precisions:
                if p != "mixed precision" and "mixed precision" in precisions:
                    base = mean.get((model, p, ranks))
                    row[f"Throughput speedup ({p} - mixed precision)"] = f"{amp / base:.2f}x" if amp and base else ""
            for p in precisions:
                counts = [n for n in gpu_counts if (model, p, n) in mean]
                here = mean.get((model, p, ranks))
                if not counts or here is None:
                    row[f"Weak scaling - {p}"] = ""
                    continue
                base_n = counts[0]
                speedup = here / mean[(model, p, base_n)]
                efficiency = speedup / (ranks / base_n)
                row[f"Weak scaling - {p}"] = f"{speedup:.2f}x ({100 * efficiency:.0f}% of {ranks // base_n}x)"
            rows.append(row)
    return rows


def inference_rows(runs: list[RunLog]) -> list[dict]:
    """Seed shape: Batch size | Resolution | Throughput Avg | Latency Avg | 90% | 95% | 99%, plus true percentiles."""
    rows = []
    for run in runs:
        params = run.parameters()
        for final in run.final_results():
            if "avg_exp_per_second_eval" not in final or "latency_pct" not in final:
                continue
            if "EMA" in final.get("comment", ""):
                continue  # same speed as the raw weights' pass
            rows.append({
                "Model": run.model, "Precision": run.precision, "GPUs": run.ranks,
                "Batch size": params.get("eval_batch_size", ""), "Resolution": params.get("eval_img_size", ""),
                "Throughput Avg": _fmt(final.get("avg_exp_per_second_eval"), ".1f"),
                "Latency Avg (ms)": _fmt(final.get("latency_pct")),
                "Latency 90% (ms)": _fmt(final.get("latency_90pct")),
                "Latency 95% (ms)": _fmt(final.get("latency_95pct")),
                "Latency 99% (ms)": _fmt(final.get("latency_99pct")),
                "p50 (ms)": _fmt(final.get("latency_p50")), "p90 (ms)": _fmt(final.get("latency_p90")),
                "p99 (ms)": _fmt(final.get("latency_p99")), "run": run.name,
            })
    return sorted(rows, key=lambda r: (r["Model"], r["Precision"], int(r["Batch size"] or 0)))


TABLES = {"accuracy": accuracy_rows, "throughput": throughput_rows, "inference": inference_rows}


def format_table(rows: list[dict], fmt: str) -> str:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if not rows:
        return "(no runs with these results)"
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def training_curves(run: RunLog) -> tuple[list[int], list[float], list[float]]:
    """(global step, training loss, training top-1) of each training step, a replayed step once."""
    steps = [r for r in run.train_steps() if "training_loss" in r.get("data", {})]
    losses = [r["data"]["training_loss"] for r in steps]
    accs = [r["data"].get("training_accuracy_top_1", float("nan")) for r in steps]
    return run.global_steps(steps), losses, accs
