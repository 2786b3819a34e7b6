"""The plots of `python -m tools.collect --plot DIR`: throughput per GPU count, training curves, latency."""
from __future__ import annotations

from pathlib import Path

from effnet.core.results import inference_rows, throughput_rows, training_curves
from effnet.core.runlog import RunLog


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
