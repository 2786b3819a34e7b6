"""Jobs on the local Slurm cluster for the benches that measure the launcher (P4, P5).

One place for what those benches share: where the cluster is and whether Pyxis is on, a profile of
either local path (localslurm, localpyxis) that keeps their data and experiments in a scratch
directory, submitting a tiny smoke run, and reading its log and health files as it trains.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Callable, TypeVar

from effnet.core.health import HealthFiles
from effnet.core.paths import LOG_FILENAME
from effnet.core.runlog import RunLog, global_step, is_log, is_train_step, read_log

from . import report_figures

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "mparams=num_classes=3,sync_batch_norm=false,width_coefficient=0.25,depth_coefficient=0.25"


def local_slurm_state() -> dict | None:
    """`tools.local_slurm status --json` while the local cluster is up (None when it is not): that tool
    alone knows where its cluster lives, and benches do not import tools."""
    out = subprocess.run([sys.executable, "-m", "tools.local_slurm", "status", "--json"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    try:
        state = json.loads(out)
    except ValueError:
        return None
    return state if state.get("up") else None


def local_slurm_env(state: dict) -> dict[str, str]:
    """The environment for Slurm's commands on the local cluster."""
    return {**os.environ, "SLURM_CONF": str(state["conf"]), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _replaced(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        if old not in text:
            raise ValueError(f"the shipped profile no longer has {old!r}")
        text = text.replace(old, new)
    return text


def write_profile(work: Path, path: str = "localslurm") -> Path:
    """The shipped `path` profile (local, localslurm or localpyxis), with the shipped photos and the
    experiments under `work`: only those site values change, so both paths run the same job."""
    data = work / "data"
    if not data.is_dir():
        subprocess.run([sys.executable, "-m", "tools.demo_data", str(data), "--no-mnist"], cwd=ROOT, check=True,
                       capture_output=True)
    text = _replaced((ROOT / "clusters" / f"{path}.toml").read_text(), (f'name = "{path}"', f'name = "bench{path}"'),
                     ('experiments_dir = ""', f'experiments_dir = "{work / path}"'))
    if path == "localpyxis":
        state = local_slurm_state() or {}
        checkout = Path(state.get("dir", "/nonexistent")) / "host" / "checkout"
        if checkout.resolve() != ROOT:
            raise SystemExit(f"bench: the local cluster's containers mount {checkout.resolve()}, not {ROOT}: "
                             f"run python -m tools.local_slurm up from this checkout")
        text = _replaced(text, (f"{checkout}/runs/demo-data:/data:ro", f"{data}:/data:ro"))
    else:
        text = _replaced(text, ('data_dir = "runs/demo-data"', f'data_dir = "{data}"'))
    profile = work / f"bench{path}.toml"
    profile.write_text(text)
    return profile


def model_dir_of(profile: Path, name: str) -> Path:
    """Where the experiment `name` submitted with `profile` keeps its model directory."""
    return Path(tomllib.loads(profile.read_text())["experiments_dir"]) / name / "model"


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
    state = local_slurm_state()
    if state is None:
        print(f"bench.{module}: no local Slurm is up; run python -m tools.local_slurm up as root", file=sys.stderr)
        return 2
    env = local_slurm_env(state)
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp), env)
    report_figures(figures, args.json, digits=1)
    return 0
