"""Shared test setup: quiet TensorFlow, the repo root, and a helper to run the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m effnet ARGS` in a fresh process, as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "effnet", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def slurm():
    """The local Slurm cluster's client environment (tests/slurm_cluster.py); skips without root."""
    from tests.slurm_cluster import cluster_session

    yield from cluster_session()


@pytest.fixture(scope="session")
def pyxis_cluster(slurm) -> dict:
    """The local cluster's recorded state (status --json) when Pyxis is on; skips with the reason when not."""
    from tests.pyxis_runs import pyxis_session

    return pyxis_session(slurm)


@pytest.fixture(scope="session")
def pyxis_profile(tmp_path_factory, pyxis_cluster) -> Path:
    """The localpyxis profile with data and experiments in a temp dir (tests/pyxis_runs.py)."""
    from tests.pyxis_runs import make_pyxis_profile

    return make_pyxis_profile(tmp_path_factory, pyxis_cluster)


@pytest.fixture(scope="session")
def pyxis_baseline(slurm, pyxis_profile):
    """The uninterrupted 2-node x 2-rank smoke_stages run on localpyxis, observed while it trained: the
    Pyxis fault tests compare with its weights (Gloo and MPI may sum in different orders)."""
    from tests.pyxis_runs import observed_baseline

    return observed_baseline(pyxis_profile, slurm)


@pytest.fixture(scope="session")
def profile(tmp_path_factory):
    """The localslurm profile with data and experiments in a temp dir (tests/slurm_cluster.py)."""
    from tests.slurm_cluster import make_profile

    return make_profile(tmp_path_factory)


@pytest.fixture(scope="session")
def baseline(slurm, profile) -> Path:
    """An uninterrupted 2-node x 2-rank smoke_stages run (tests/slurm_cluster.py): the Slurm tests
    interrupt the same run in every way they can and compare its final weights with this one's."""
    from tests.slurm_cluster import STAGES_TINY, experiment, submit

    proc = submit(profile, "--nodes", "2", "smoke_stages", "--name", "baseline", "--wait", *STAGES_TINY, env=slurm)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return experiment(profile, "baseline")

@pytest.fixture(scope="session")
def mnist(tmp_path_factory) -> Path:
    """MNIST-5k from tools.demo_data, built once per session."""
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "tools.demo_data", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / "mnist"
