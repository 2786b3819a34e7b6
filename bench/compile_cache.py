"""P6: what the persistent XLA cache (effnet.core.xla_cache) saves an attempt that resumes.

One rank through jobs.task, which points TensorFlow at the cache: B0 (whole, at 32 px) with XLA on
CPU. A cold attempt compiles stage 1's step, is stopped by a signal after its first
steps, and a second attempt resumes in the same model directory. Each attempt's time from its
first batch to its first step (rank 0's timeline) is the step's compile, or its load from the
cache, plus one step: with XLA the trainer traced the step before. Reported: both, and the warm
one as a fraction of the cold one.

    python -m bench.compile_cache [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from effnet.core.health import HealthFiles
from effnet.core.xla_cache import cache_dir, tensorflow_version

from . import report_figures

ROOT = Path(__file__).resolve().parents[1]

TINY = "width_coefficient=0.25,depth_coefficient=0.25,num_classes=10"


def tiny_xla_flags(data: Path, model_dir: Path, mparams: str = TINY) -> dict:
    """2 epochs x 3 steps, 32 then 40 px (mixup in stage 2, so its input is float32, stage 1's uint8)."""
    return {"mode": "train", "cfg": "b0", "mparams": mparams,
            "data_dir": str(data), "model_dir": str(model_dir), "use_xla": True, "seed": 1,
            "max_epochs": 2, "steps_per_epoch": 3, "n_stages": 2, "base_img_size": 32, "train_img_size": 40,
            "train_batch_size": 4, "warmup_epochs": 0, "augmenter_name": "autoaugment", "mixup_alpha": 0.2,
            "save_checkpoint_freq": 1, "log_steps": 1, "tensorboard": False, "export_savedmodel": False}


def run_rank(flags: dict, signal_at: tuple[int, int] | None) -> subprocess.CompletedProcess:
    """Run one rank with `flags` through jobs.task, signalled as it draws batch `signal_at` = (epoch,
    index) (bench.signal_at_batch; None: never). A TF_XLA_FLAGS of the caller's is not passed on."""
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
    epoch, index = signal_at or (-1, 0)
    return subprocess.run([sys.executable, "-m", "bench.signal_at_batch", str(epoch), str(index), "rank",
                           json.dumps(flags)], cwd=ROOT, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=900)


def cache_entries(model_dir: Path) -> dict[str, int]:
    """Rank 0's cache files, name -> mtime."""
    return {p.name: p.stat().st_mtime_ns for p in cache_dir(model_dir, 0, tensorflow_version()).glob("*.pb")}


def _first_step_s(model_dir: Path) -> float:
    timeline = json.loads(HealthFiles(model_dir).timeline.read_text())
    return timeline["first_step"] - timeline["first_batch"]


def measure(work: Path) -> dict:
    subprocess.run([sys.executable, "-m", "tools.demo_data", str(work / "data")], check=True, capture_output=True)
    # The whole B0 (at 32 px): the tiny model's step compiles in about as long as its graph takes to
    # optimise, and that is not XLA's to cache.
    flags = tiny_xla_flags(work / "data" / "mnist", work / "model", mparams="num_classes=10")
    cold = run_rank(flags, (0, 1))  # stopped after its second step: stage 1's step is in the cache
    if cold.returncode != 75:
        raise RuntimeError(f"the cold attempt exited {cold.returncode}: {cold.stderr[-500:]}")
    cold_s, entries = _first_step_s(work / "model"), cache_entries(work / "model")
    warm = run_rank(flags, (1, 0))  # resumes at stage 1's third step, stopped before stage 2's first
    if warm.returncode != 75:
        raise RuntimeError(f"the warm attempt exited {warm.returncode}: {warm.stderr[-500:]}")
    if cache_entries(work / "model") != entries:
        raise RuntimeError("the resumed attempt compiled again: the cache missed")
    warm_s = _first_step_s(work / "model")
    return {"P6 first batch -> first step, cold (compile + step) s": cold_s,
            "P6 first batch -> first step, resumed (cache load + step) s": warm_s,
            "P6 resumed / cold": warm_s / cold_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile_cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp))
    report_figures(figures, args.json, digits=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
