"""P4: the launcher on the local Slurm cluster, measured on a real preempted job.

    python -m bench.preemption [--json F]        (needs `python -m tools.local_slurm up`)

Submits the CPU smoke recipe (tiny B0 so a figure takes minutes) to 2 nodes x 2 ranks, preempts
it with a job in the `high` partition once training runs, and reports:
- seconds from `jobs.submit` to the first logged training step;
- seconds from the preemption (the high job's submission) to the first step of the resumed run;
- steps lost per preemption: logged steps after the checkpointed one (0 when the trainer
  checkpoints at the step boundary it stopped at), and steps logged twice.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effnet.core.exits import EXIT_REQUEUE
from effnet.core.paths import LOG_FILENAME
from effnet.core.runlog import RunLog, global_step, is_log, is_stop, is_train_step, read_log

from . import report_figures

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 30
OVERRIDES = ["mparams=num_classes=3,sync_batch_norm=false,width_coefficient=0.25,depth_coefficient=0.25",
             "augmenter_name=none", "max_epochs=2", f"steps_per_epoch={STEPS_PER_EPOCH}"]


def _run(model_dir: Path) -> RunLog:
    log = model_dir / LOG_FILENAME
    return read_log(log) if log.exists() else RunLog(log)


def _steps(records: list[dict]) -> list[tuple[float, int]]:
    """(timestamp, global step) of every logged training step, in log order (replays included)."""
    return [(float(r["timestamp"]), global_step(r, STEPS_PER_EPOCH)) for r in records if is_train_step(r)]


def _wait(what: str, check, timeout_s: float = 900):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def measure(work: Path, env: dict) -> dict:
    profile = work / "bench.toml"
    text = (ROOT / "clusters" / "localslurm.toml").read_text().replace('name = "localslurm"', 'name = "benchslurm"')
    subprocess.run([sys.executable, "-m", "tools.demo_data", str(work / "data"), "--no-mnist"], cwd=ROOT, check=True,
                   capture_output=True)
    text = text.replace('data_dir = "runs/demo-data/photos"', f'data_dir = "{work / "data" / "photos"}"')
    profile.write_text(text.replace('experiments_dir = "runs/experiments"', f'experiments_dir = "{work}"'))
    model_dir = work / "p4" / "model"
    sets = [arg for o in OVERRIDES for arg in ("--set", o)]
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "jobs.submit", "--cluster", str(profile), "--nodes", "2", "smoke",
                          "--name", "p4", *sets], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    job = out.split("submitted job ", 1)[1].split(":", 1)[0]
    first = _wait("the first training step", lambda: _steps(_run(model_dir).records))[0][0]
    _wait("step 5", lambda: any(s >= 5 for _, s in _steps(_run(model_dir).records)))
    preempted = time.time()
    subprocess.run(["sbatch", "--output=/dev/null", "-p", "high", "-N", "4", "--wrap", "sleep 5"], env=env,
                   check=True, capture_output=True)

    def resumed_step():
        recs = _run(model_dir).records
        resumes = [i for i, r in enumerate(recs) if is_log(r) and r["data"].get("resumed_from")]
        return _steps(recs[resumes[0]:]) if resumes else None

    resumed_at = _wait("the resumed run's first step", resumed_step)[0][0]
    _wait("the job to finish", lambda: not subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True,
                                                           text=True).stdout.strip())
    run = _run(model_dir)
    stop_index = next(i for i, r in enumerate(run.records) if is_stop(r) and r["data"]["exit_code"] == EXIT_REQUEUE)
    stop = run.records[stop_index]["data"]
    before = [s for _, s in _steps(run.records[:stop_index])]
    return {
        "P4 seconds from submit to the first training step": first - start,
        "P4 seconds from the preemption to the resumed step": resumed_at - preempted,
        "P4 steps lost per preemption": max(before) - stop["global_step"],
        "P4 steps logged twice": len(run.superseded_steps()),
    }


def _local_slurm_conf() -> Path | None:
    """The local cluster's slurm.conf while it is up, as `tools.local_slurm status --json` reports it:
    that tool alone knows where its cluster lives, and benches do not import tools."""
    out = subprocess.run([sys.executable, "-m", "tools.local_slurm", "status", "--json"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    try:
        state = json.loads(out)
    except ValueError:
        return None
    return Path(state["conf"]) if state.get("up") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preemption", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    slurm_conf = _local_slurm_conf()
    if slurm_conf is None:
        print("bench.preemption: no local Slurm is up; run python -m tools.local_slurm up as root", file=sys.stderr)
        return 2
    env = {**os.environ, "SLURM_CONF": str(slurm_conf), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp), env)
    report_figures(figures, args.json, digits=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
