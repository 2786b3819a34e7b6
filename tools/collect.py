"""Turn dllogger logs into the result tables of the README (and the seed's), plus plots.

    python -m tools.collect RUN_DIR... [--table accuracy|throughput|inference|all]
                            [--format md|csv|json] [--plot DIR]

A RUN_DIR is a log file, a trainer model_dir (log.json), an experiment dir (model/log.json), or
any directory holding such logs (searched recursively: a sweep, many jobs). Ours and NVIDIA's logs
share the format (nvidia.md §6). Requeue segments appended to one file are joined: the time to
train is the sum of the segments' elapsed times. Lines that are not dllogger records (truncated,
interleaved or garbage) are skipped and counted; two records glued on one line are split.

Tables, shaped like the seed README's:
- accuracy: per model and GPU count, top-1 (the better of raw and EMA weights) and time to train,
  per precision, and the time-to-train speedup of mixed precision;
- throughput: training img/s per GPU count and precision, the mixed-precision speedup, and weak
  scaling (speedup and efficiency against the smallest GPU count);
- inference: per batch size and resolution, throughput and latency: the reference's trimmed means
  ("Latency 90%" is the mean of the fastest 90% of batches) and true percentiles.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from effnet.core.dllogger import PREFIX, parse_line

PROG = "python -m tools.collect"
LOG_NAMES = ("log.json",)
_MODEL_IN_CFG = re.compile(r"\b(b[0-7])(?:_cfg)?(?:\.py)?$")


class CollectError(ValueError):
    pass


@dataclass
class RunLog:
    """One log file, parsed once: its records, split into requeue segments, and its end-of-run summaries."""
    path: Path
    records: list[dict] = field(default_factory=list)
    skipped_lines: int = 0

    def __post_init__(self) -> None:
        self._segments = _split_segments(self.records)
        self._finals = _last_final_results(self._segments)

    @property
    def name(self) -> str:
        parent = self.path.parent
        return parent.parent.name if parent.name == "model" else parent.name

    def logs(self) -> list[dict]:
        return [r for r in self.records if r.get("type") == "LOG"]

    def parameters(self) -> dict:
        """The first PARAMETER record holding the run's flags (later ones are progress or resume notes)."""
        for r in self.logs():
            data = r.get("data", {})
            if r.get("step") == "PARAMETER" and ("cfg" in data or "mode" in data):
                return data
        return {}

    def final_results(self) -> list[dict]:
        """End-of-run summaries (step == []) of the last segment that produced any."""
        return self._finals

    def segments(self) -> list[list[dict]]:
        """One list per process lifetime: a requeued run appends a new segment whose clock restarts."""
        return self._segments

    def wall_seconds(self) -> float:
        return sum(max((_float(r.get("elapsedtime")) or 0.0) for r in seg) for seg in self.segments() if seg)

    # ----- what the run was

    @property
    def model(self) -> str:
        params = self.parameters()
        if isinstance(params.get("model"), dict) and params["model"].get("name"):
            return params["model"]["name"].upper()
        match = _MODEL_IN_CFG.search(str(params.get("cfg", "")))
        return match.group(1).upper() if match else str(params.get("cfg", "?"))

    @property
    def precision(self) -> str:
        params = self.parameters()
        if params.get("use_amp"):
            return "mixed precision" if params.get("amp_dtype", "float16") == "float16" else "BF16"
        if params.get("accelerator") == "CPU":
            return "FP32"
        if "use_tf32" in params:
            return "TF32" if params["use_tf32"] else "FP32"
        return "TF32/FP32"  # NVIDIA's logs do not say which

    @property
    def ranks(self) -> int | None:
        params = self.parameters()
        if params.get("world_size"):
            return int(params["world_size"])
        for final in self.final_results():  # NVIDIA's logs: total / per-GPU throughput
            total, per = final.get("avg_exp_per_second_training"), final.get("avg_exp_per_second_training_per_GPU")
            if total and per:
                return max(1, round(total / per))
        return None


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _split_segments(records: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = []
    last = None
    for r in records:
        elapsed = _float(r.get("elapsedtime"))
        if not out or (elapsed is not None and last is not None and elapsed < last):
            out.append([])
        out[-1].append(r)
        last = elapsed if elapsed is not None else last
    return out


_SUMMARY_KEYS = ("eval_accuracy_top_1", "avg_exp_per_second_training", "avg_exp_per_second_eval")


def _last_final_results(segments: list[list[dict]]) -> list[dict]:
    finals: list[dict] = []
    for segment in segments:
        found = [r["data"] for r in segment if r.get("type") == "LOG" and r.get("step") == []
                 and any(k in r.get("data", {}) for k in _SUMMARY_KEYS)]
        finals = found or finals
    return finals


def _is_dllogger_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return PREFIX.encode() in f.read(4096)
    except OSError:
        return False


def find_logs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CollectError(f"{path}: no such file or directory")
    direct = [path / "log.json", path / "model" / "log.json"]
    for candidate in direct:
        if candidate.is_file():
            return [candidate]
    found = sorted(p for p in path.rglob("*.json") if p.is_file() and _is_dllogger_file(p))
    if not found:
        raise CollectError(f"{path}: no dllogger logs in it (looked for log.json and *.json with DLLL lines)")
    return found


def read_log(path: Path) -> RunLog:
    """One log file (or the log of one run directory)."""
    files = find_logs(path) if not path.is_file() else [path]
    records: list[dict] = []
    skipped = 0
    with open(files[0], errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            pieces = [PREFIX + p for p in line.split(PREFIX) if p.strip()] if line.count(PREFIX) > 1 else [line]
            for piece in pieces:
                record = parse_line(piece.strip())
                if record is None:
                    skipped += 1
                else:
                    records.append(record)
    return RunLog(files[0], records, skipped)


def read_runs(paths: list[Path]) -> list[RunLog]:
    files: list[Path] = []
    for p in paths:
        files += find_logs(p)
    return [read_log(f) for f in dict.fromkeys(files)]


# ------------------------------------------------------------------ tables

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


# ------------------------------------------------------------------ plots


def training_curves(run: RunLog) -> tuple[list[int], list[float], list[float]]:
    """(global step, training loss, training top-1) from the (epoch, step) progress lines."""
    steps_per_epoch = run.parameters().get("steps_per_epoch")
    for r in run.logs():
        if r.get("step") == "PARAMETER" and r["data"].get("steps_per_epoch"):
            steps_per_epoch = r["data"]["steps_per_epoch"]
    xs, losses, accs = [], [], []
    for r in run.logs():
        step, data = r.get("step"), r.get("data", {})
        if isinstance(step, list) and len(step) == 2 and "training_loss" in data:
            xs.append(step[0] * (steps_per_epoch or 0) + step[1])
            losses.append(data["training_loss"])
            accs.append(data.get("training_accuracy_top_1", float("nan")))
    return xs, losses, accs


def write_plots(runs: list[RunLog], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    rows = throughput_rows(runs)
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for column in [c for c in rows[0] if c.startswith("Throughput - ")]:
            for model in sorted({r["Model"] for r in rows}):
                pts = [(r["GPUs"], float(r[column])) for r in rows if r["Model"] == model and r.get(column)]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=f"{model} {column[len('Throughput - '):]}")
        ax.set(xlabel="GPUs (ranks)", ylabel="training img/s", title="Training throughput")
        ax.legend()
        fig.tight_layout()
        written.append(out / "throughput.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    curves = [(run, training_curves(run)) for run in runs]
    curves = [(run, c) for run, c in curves if c[0]]
    if curves:
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
        for run, (xs, losses, accs) in curves:
            loss_ax.plot(xs, losses, label=run.name)
            acc_ax.plot(xs, accs, label=run.name)
        loss_ax.set(xlabel="step", ylabel="training loss", title="Loss")
        acc_ax.set(xlabel="step", ylabel="training top-1", title="Accuracy")
        loss_ax.legend(fontsize="small")
        fig.tight_layout()
        written.append(out / "curves.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    rows = inference_rows(runs)
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for model, precision, gpus in sorted({(r["Model"], r["Precision"], r["GPUs"] or 1) for r in rows}):
            pts = sorted((int(r["Batch size"]), float(r["Latency Avg (ms)"])) for r in rows
                         if (r["Model"], r["Precision"], r["GPUs"] or 1) == (model, precision, gpus)
                         and r["Latency Avg (ms)"])
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{model} {precision} {gpus} GPU{'s' if gpus > 1 else ''}")
        ax.set(xlabel="batch size", ylabel="latency per batch (ms)", title="Inference latency", xscale="log")
        ax.legend()
        fig.tight_layout()
        written.append(out / "latency.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


README_BEGIN = "<!-- results:begin (written by python -m tools.collect --readme) -->"
README_END = "<!-- results:end -->"


def results_section(runs: list[RunLog], bench_json: Path | None) -> str:
    """The README's results: our CPU runs' tables, labelled with the machine, plus the bench figures."""
    import os
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if Path("/proc/cpuinfo").is_file() else "unknown CPU"
    parts = [f"**CPU figures from {platform.node()} ({cpu}, {os.cpu_count()} cores, no GPU).** Tiny models and "
             f"resolutions that exercise the code paths; they say nothing about ImageNet accuracy or GPU speed. "
             f"The reference numbers are NVIDIA's GPU tables in the seed README (DGX A100 / DGX-1 V100); they are "
             f"cited there, not reproduced here.", ""]
    for title, rows in (("Training accuracy", accuracy_rows(runs)), ("Training throughput", throughput_rows(runs)),
                        ("Inference", inference_rows(runs))):
        parts += [f"{title} ({', '.join(sorted({r.name for r in runs}))}):", "", format_table(rows, "md"), ""]
    if bench_json is not None:
        from bench.__main__ import summary_rows

        results = json.loads(bench_json.read_text())
        parts += [f"`python -m bench` ({results.get('started', '')}):", "", "| figure | what | ours | target |",
                  "|---|---|---|---|", *("| " + " | ".join(row) + " |" for row in summary_rows(results)), ""]
    return "\n".join(parts)


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise CollectError(f"{readme}: no results markers ({README_BEGIN} ... {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(f"{head}{README_BEGIN}\n{section}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--table", choices=(*TABLES, "all"), default="all")
    parser.add_argument("--format", choices=("md", "csv", "json"), default="md")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="also write throughput, curves and latency PNGs here")
    parser.add_argument("--readme", type=Path, metavar="FILE",
                        help="rewrite FILE's results section (between its markers) from these runs")
    parser.add_argument("--bench-json", type=Path, help="with --readme: add the figures of `python -m bench`")
    args = parser.parse_args(argv)
    try:
        runs = read_runs(args.runs)
        if args.readme:
            write_readme(args.readme, results_section(runs, args.bench_json))
            print(f"collect: wrote the results section of {args.readme}", file=sys.stderr)
            return 0
    except (CollectError, OSError) as err:
        print(f"collect: error: {err}", file=sys.stderr)
        return 2
    names = list(TABLES) if args.table == "all" else [args.table]
    outputs = {name: TABLES[name](runs) for name in names}
    if args.format == "json":
        print(json.dumps(outputs, indent=2))
    else:
        for name in names:
            if len(names) > 1 and args.format == "md":
                print(f"\n### {name}\n")
            print(format_table(outputs[name], args.format))
    if args.plot:
        for path in write_plots(runs, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    skipped = sum(r.skipped_lines for r in runs)
    print(f"collect: {len(runs)} log(s), {sum(len(r.records) for r in runs)} records, {skipped} non-dllogger "
          f"line(s) skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
