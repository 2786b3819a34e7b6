"""Jobs on the local Slurm cluster for the benches that measure the launcher (P4, P5).

One place for what those benches share: where the cluster is, a profile that keeps their data and
experiments in a scratch directory, submitting a tiny smoke run, and reading its log and health
files as it trains.
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
from typing import Callable, TypeVar

from effnet.core.health import HealthFiles
from effnet.core.paths import LOG_FILENAME
from effnet.core.runlog import RunLog, global_step, is_log, is_train_step, read_log

from . import report_figures

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "mparams=num_classes=3,sync_batch_norm=false,width_coefficient=0.25,depth_coefficient=0.25"


def local_slurm_env() -> dict[str, str] | None:
    """The environment for Slurm's commands while the local cluster is up (None when it is not), as
    `tools.local_slurm status --json` reports it: that tool alone knows where its cluster lives, and
    benches do not import tools."""
    out = subprocess.run([sys.executable, "-m", "tools.local_slurm", "status", "--json"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    try:
        state = json.loads(out)
    except ValueError:
        return None
    if not state.get("up"):
        return None
    return {**os.environ, "SLURM_CONF": str(state["conf"]), "TF_CPP_MIN_LOG_LEVEL": "2"}


def write_profile(work: Path) -> Path:
    """The shipped localslurm profile, with the shipped photos and the experiments under `work`."""
    subprocess.run([sys.executable, "-m", "tools.demo_data", str(work / "data"), "--no-mnist"], cwd=ROOT, check=True,
                   capture_output=True)
    text = (ROOT / "clusters" / "localslurm.toml").read_text().replace('name = "localslurm"', 'name = "benchslurm"')
    text = text.replace('data_dir = "runs/demo-data"', f'data_dir = "{work / "data"}"')
    profile = work / "bench.toml"
    profile.write_text(text.replace('experiments_dir = "runs/experiments"', f'experiments_dir = "{work}"'))
    return profile


def submit_smoke(profile: Path, name: str, overrides: list[str], env: dict) -> str:
    """`jobs.submit --nodes 2 smoke` with `overrides` (key=value); returns the job id."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    out = subprocess.run([sys.executable, "-m", "jobs.submit", "--cluster", str(profile), "--nodes", "2", "smoke",
                          "--name", name, *sets], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return out.split("submitted job ", 1)[1].split(":", 1)[0]


def wait_until(what: str, check: Callable[[], T], timeout_s: float = 900) -> T:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def job_finished(job: str, env: dict) -> bool:
    return not subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip()


def run_log(model_dir: Path) -> RunLog:
    log = model_dir / LOG_FILENAME
    return read_log(log) if log.exists() else RunLog(log)


def logged_steps(records: list[dict], steps_per_epoch: int) -> list[tuple[float, int]]:
    """(timestamp, global step) of every logged training step, in log order (replays included)."""
    return [(float(r["timestamp"]), global_step(r, steps_per_epoch)) for r in records if is_train_step(r)]


def resumed_steps(model_dir: Path, steps_per_epoch: int, resumes: int = 1) -> list[tuple[float, int]]:
    """The steps logged after the `resumes`-th resume (a PARAMETER line naming a checkpoint); [] before."""
    records = run_log(model_dir).records
    starts = [i for i, r in enumerate(records) if is_log(r) and r["data"].get("resumed_from")]
    return logged_steps(records[starts[resumes - 1]:], steps_per_epoch) if len(starts) >= resumes else []


def rank_pid(model_dir: Path, rank: int) -> int:
    """The pid of `rank`'s process, from its heartbeat ("progress global_step host pid time")."""
    return int(HealthFiles(model_dir).heartbeat(rank).read_text().split()[3])


def bench_main(module: str, doc: str, measure: Callable[[Path, dict], dict], argv: list[str] | None) -> int:
    """`python -m bench.<module> [--json F]`: `measure(scratch_dir, slurm_env)` on the local cluster, reported."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    env = local_slurm_env()
    if env is None:
        print(f"bench.{module}: no local Slurm is up; run python -m tools.local_slurm up as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp), env)
    report_figures(figures, args.json, digits=1)
    return 0
