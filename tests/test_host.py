"""The batch script's host side (jobs/host) as a program of its own: the Python it needs, the names it
shares with the trainer and the ledger, and the copy a submitted job runs."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from effnet.core import exits, health, ledger, paths
from jobs.host import records
from jobs.launcher import HOST_SIDE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_the_host_side_needs_python_3_6_and_nothing_else():
    out = subprocess.run([str(BIN / "vermin"), "-t=3.6-", "--no-tips", "--violations", "--eval-annotations",
                          str(HOST_SIDE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    flakes = subprocess.run([sys.executable, "-m", "pyflakes", str(HOST_SIDE)], capture_output=True, text=True)
    assert flakes.returncode == 0, flakes.stdout


def test_the_host_side_reads_the_files_the_trainer_writes_and_writes_the_ledger_the_launcher_reads():
    assert (records.HEALTH_DIRNAME, records.HEARTBEAT_PREFIX, records.STOP_PREFIX, records.TIMELINE_FILENAME) == (
        health.HEALTH_DIRNAME, health.HEARTBEAT_PREFIX, health.STOP_PREFIX, health.TIMELINE_FILENAME)
    assert (records.HANG_RECORD, records.ATTEMPTS_FILENAME, records.LEDGER_KEYS) == (
        ledger.HANG_RECORD, ledger.ATTEMPTS_FILENAME, ledger.LINE_KEYS)
    assert records.CHECKPOINT_INDEX == f"{paths.CHECKPOINTS_DIRNAME}/checkpoint"
    assert (records.EXIT_REQUEUE, records.EXIT_BAD_INPUT) == (exits.EXIT_REQUEUE, exits.EXIT_BAD_INPUT)


def test_a_copy_runs_anywhere_with_a_bare_python3(tmp_path):
    """What a job runs: a copy of the directory, by path, with the host's python3 in isolated mode (no venv,
    no PYTHONPATH, no user site), from another working directory."""
    copy = tmp_path / "experiment" / "host"
    shutil.copytree(HOST_SIDE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    python3 = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    model_dir = tmp_path / "experiment" / "model"
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "n1", "SLURM_JOB_NUM_NODES": "1"}
    begin = subprocess.run([python3, "-I", str(copy), "--model-dir", str(model_dir), "--tasks-per-node=1", "begin"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert begin.returncode == 0, begin.stderr
    assert (model_dir / "health" / "attempt.json").is_file()
    bad = subprocess.run([python3, "-I", str(copy), "--model-dir", str(model_dir), "--tasks-per-node=1",
                          "--requeue=preempted", "end", "0"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "expected CAUSE[,CAUSE...]=N, got 'preempted'" in bad.stderr
