"""The real local Slurm cluster for the tests: starting it, a test profile, submitting and waiting.

Shared by tests/test_slurm.py and tests/test_slurm_faults.py through the session fixtures in
conftest.py, so one cluster and one test profile serve the whole Slurm session.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from effnet.core.health import HealthFiles
from effnet.core.ledger import read_attempts
from tests.runlogs import checkpoint_tensors, train_steps
from tools.local_slurm.cluster import DEFAULT_DIR
from tools.local_slurm.slurm_conf import Layout

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = DEFAULT_DIR
SLURM_CONF = Layout(SLURM_DIR).conf
EPOCHS, STEPS = 2, 10
TINY = ["--set", "mparams=num_classes=3,sync_batch_norm=false,width_coefficient=0.25,depth_coefficient=0.25",
        "--set", "augmenter_name=none", "--set", f"max_epochs={EPOCHS}", "--set", f"steps_per_epoch={STEPS}"]
EXPECTED_STEPS = [(e, s) for e in range(EPOCHS) for s in range(1, STEPS + 1)]
# The smoke_stages recipe as it ships (AutoAugment, 32 -> 48 px at epoch 2, 4 epochs x 8 steps, a
# checkpoint per epoch) with a tiny model: what the fault tests interrupt and compare bit for bit.
STAGES_TINY = ["--set", "mparams=num_classes=3,sync_batch_norm=false,width_coefficient=0.25,depth_coefficient=0.25"]
STAGES_STEPS = [(e, s) for e in range(4) for s in range(1, 9)]


def _slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(SLURM_CONF), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cluster_answers() -> bool:
    if not shutil.which("sinfo") or not SLURM_CONF.is_file():
        return False
    return subprocess.run(["sinfo", "-h"], env=_slurm_env(), capture_output=True, timeout=30).returncode == 0


def cluster_session():
    """The local cluster: reused when up; started (and stopped after) when we are root.

    A generator for the session fixture `slurm` in conftest.py."""
    started = False
    if not _cluster_answers():
        if os.geteuid() != 0:
            pytest.skip("real-Slurm tests need the local cluster, and starting it needs root "
                        "(sudo make test, or python -m tools.local_slurm up as root)")
        subprocess.run([sys.executable, "-m", "tools.local_slurm", "up", "--dir", str(SLURM_DIR)], check=True)
        started = True
    for var in [v for v in os.environ if v.startswith(("SLURM_", "SUBMITIT_"))]:
        os.environ.pop(var)  # a test run inside a Slurm job must not leak that job's identity
    os.environ["SLURM_CONF"] = str(SLURM_CONF)
    yield _slurm_env()
    if started:
        subprocess.run([sys.executable, "-m", "tools.local_slurm", "down", "--dir", str(SLURM_DIR)], check=False)


def make_profile(tmp_path_factory) -> Path:
    """localslurm with data and experiments in a temp dir, and an env value full of shell metacharacters."""
    tmp = tmp_path_factory.mktemp("slurm")
    text = (ROOT / "clusters" / "localslurm.toml").read_text()
    text = text.replace('experiments_dir = ""', f'experiments_dir = "{tmp / "experiments"}"')
    text = text.replace('name = "localslurm"', 'name = "testslurm"')
    subprocess.run([sys.executable, "-m", "tools.demo_data", str(tmp / "data"), "--no-mnist"], cwd=ROOT, check=True,
                   capture_output=True)
    text = text.replace('data_dir = "runs/demo-data"', f'data_dir = "{tmp / "data"}"')
    text += f'EFFNET_TEST_NOTE = "$(touch {tmp}/pwned); `touch {tmp}/pwned2`"\n'
    path = tmp / "testslurm.toml"
    path.write_text(text)
    return path


def submit(profile: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.submit", "--cluster", str(profile), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def job_id_of(out: str) -> str:
    return out.split("submitted job ", 1)[1].split(":", 1)[0]


def experiment(profile: Path, name: str) -> Path:
    return profile.parent / "experiments" / name


def sacct_states(job_id: str, env: dict) -> list[str]:
    out = subprocess.run(["sacct", "-j", job_id, "-D", "-X", "-n", "-P", "-o", "State"], env=env,
                         capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_done(job_id: str, env: dict, timeout_s: float = 900) -> list[str]:
    """Wait until the job has left the queue; return the states of its attempts (sacct)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout
        if not queued.strip():
            time.sleep(2)  # accounting lags by about a second
            return sacct_states(job_id, env)
        time.sleep(2)
    subprocess.run(["scancel", job_id], env=env)
    pytest.fail(f"job {job_id} still queued after {timeout_s} s")


def wait_for_step(model_dir: Path, step: tuple[int, int], timeout_s: float = 600) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (model_dir / "log.json").exists() and step in train_steps(model_dir):
            return
        time.sleep(0.3)
    pytest.fail(f"training never logged step {step} in {model_dir}")




@dataclass(frozen=True)
class Beat:
    """One rank's heartbeat line (effnet.core.health)."""

    rank: int
    progress: int
    global_step: int
    host: str
    pid: int


def heartbeats(model_dir: Path) -> dict[int, Beat]:
    out = {}
    for path in HealthFiles(model_dir).directory.glob("heartbeat.rank*"):
        fields = path.read_text().split()
        if len(fields) >= 4:
            rank = int(path.name.removeprefix("heartbeat.rank"))
            out[rank] = Beat(rank, int(fields[0]), int(fields[1]), fields[2], int(fields[3]))
    return out


def attempts(experiment_dir: Path) -> list[dict]:
    return read_attempts(experiment_dir / "attempts.jsonl")


def preempt_all_nodes(env: dict, seconds: int = 5) -> str:
    """A job in the high-priority partition that needs every node: it preempts whatever runs."""
    return subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "-p", "high", "-N", "4", "--wrap",
                           f"sleep {seconds}"], env=env, capture_output=True, text=True, check=True).stdout.strip()


def assert_same_weights(want_model_dir: Path, got_model_dir: Path) -> None:
    """The final checkpoints hold the same tensors, bit for bit."""
    want, got = checkpoint_tensors(want_model_dir), checkpoint_tensors(got_model_dir)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
