"""`python -m bench` (or `make bench`): every figure against its reference, measured in the same run.

    python -m bench [--quick] [--skip p1p3,p2,p4,p5,p6,p7,convergence] [--json runs/bench/latest.json]

Each figure runs in its own process (a clean TensorFlow), writes JSON, and is summarised as a
ratio against its same-run reference:

    P1  training step (ours, EMA and metrics)     vs Keras fit                  target >= 0.95
    P2  train input pipeline                      vs decode-only                target >= 0.6
    P3  inference throughput / p50 latency @1     vs Keras predict              target >= 1.0
    P4  submit -> first step, preemption -> resumed step and its phases, steps lost (local Slurm, median of 3),
        on localslurm and localpyxis side by side, and what the container adds
    P5  rank SIGKILL / SIGSTOP -> resumed step, steps replayed per fault (local Slurm)
    P6  XLA step's compile vs its load from the persistent cache by a resumed attempt (B0, CPU)
    P7  one watchdog poll over 8, 64 and 512 ranks' heartbeats: growth per rank, share of the 5 s interval
    --  convergence: B0 on MNIST-5k over seeds 0-3, worst and median top-1   target >= 97%, >= 98%, 600 s each

The JSON names the machine the figures came from. --quick uses fewer steps and skips convergence.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIGURES = ("p1p3", "p2", "p4", "p5", "p6", "p7", "convergence")
# Targets of figures whose JSON key does not carry one (issue "Restart cost": P4 on the local Slurm profile).
TARGETS = {"P4 localslurm: seconds from submit to the first training step": "<= 30",
           "P4 localslurm: seconds from the preemption to the resumed step": "<= 35"}


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "gpu": "none"}


def run_module(module: str, args: list[str], out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", module, *args, "--json", str(out)], capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    if done.returncode != 0 or not out.is_file():
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.read_text())


def summary_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, what, value, target) lines of the printed table."""
    rows = []
    speed = results.get("p1p3", {})
    if "error" not in speed and speed:
        rows += [("P1", "training step vs Keras fit", f"{speed['P1 ratio (target >= 0.95)']:.2f}x", ">= 0.95"),
                 ("P3", "inference throughput @32 vs Keras predict",
                  f"{speed['P3 throughput ratio (target >= 1.0)']:.2f}x", ">= 1.0"),
                 ("P3", "p50 latency @1, Keras / ours",
                  f"{speed['P3 p50 latency ratio keras/ours (target >= 1.0)']:.2f}x", ">= 1.0")]
    pipe = results.get("p2", {})
    if "error" not in pipe and pipe:
        for name, ratio in pipe["ratio_to_decode_only"].items():
            if name != "decode-only":
                rows.append(("P2", f"{name} vs decode-only", f"{ratio:.2f}x", ">= 0.6" if name.startswith("train") else ""))
    for name in ("p4", "p5", "p6", "p7"):
        figures = results.get(name, {})
        digits = 2 if name == "p7" else 1
        if "error" not in figures and figures:
            rows += [(name.upper(), k.removeprefix(f"{name.upper()} "), f"{v:.{digits}f}", TARGETS.get(k, ""))
                     for k, v in figures.items()]
    conv = results.get("convergence", {})
    if "error" not in conv and conv:
        what = f"convergence: B0 MNIST-5k top-1 over {len(conv['runs'])} seeds: worst, median; slowest"
        rows.append(("--", what,
                     f"{100 * conv['worst_top1']:.1f}%, {100 * conv['median_top1']:.1f}%; {conv['max_seconds']:.0f} s",
                     ">= 97%, >= 98%; <= 600 s"))
    for name, value in results.items():
        if isinstance(value, dict) and "error" in value:
            rows.append((name, "did not run", value["error"], ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps; no convergence run")
    parser.add_argument("--skip", default="", help=f"comma-separated: {', '.join(FIGURES)}")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/latest.json"))
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(FIGURES)
    if unknown:
        print(f"bench: error: unknown figure(s) {', '.join(sorted(unknown))}; valid: {', '.join(FIGURES)}",
              file=sys.stderr)
        return 2
    if args.quick:
        skip.add("convergence")
    plan = {
        "p1p3": ("bench.model_speed", ["--steps", "6", "--rounds", "1"] if args.quick else ["--steps", "10"]),
        "p2": ("bench.input_pipeline", ["--images", "256", "--seconds", "4" if args.quick else "8"]),
        "p4": ("bench.preemption", []),
        "p5": ("bench.faults", []),
        "p6": ("bench.compile_cache", []),
        "p7": ("bench.watchdog_poll", ["--rounds", "10"] if args.quick else []),
        "convergence": ("bench.convergence", []),
    }
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (module, extra) in plan.items():
            if name in skip:
                continue
            print(f"== {name}: python -m {module} {' '.join(extra)}", flush=True)
            results[name] = run_module(module, extra, Path(tmp) / f"{name}.json")
    m = results["machine"]
    print(f"\nfigures on {m['host']}: {m['cpu']}, {m['cores']} cores, no GPU")
    print("| figure | what | ours | target |\n|---|---|---|---|")
    for row in summary_rows(results):
        print("| " + " | ".join(row) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
