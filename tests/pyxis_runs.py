"""The local Pyxis cluster for the tests: its recorded state, the containers on its nodes, the
localpyxis test profile, and what a test can see of a rank inside a container through /proc.

Shared by tests/test_pyxis.py, tests/test_pyxis_jobs.py and tests/test_slurm_faults.py through the
session fixtures in conftest.py (`pyxis_cluster`, `pyxis_profile`, `pyxis_baseline`).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.slurm_cluster import ROOT, SLURM_DIR, STAGES_TINY, experiment, heartbeats, job_id_of, submit, \
    wait_done, wait_for_step
from tools.local_slurm import pyxis
from tools.local_slurm.image import MARKER, MARKER_TEXT

# What a test writes into a running rank's container root; a later attempt's container must not have it.
EARLIER_ATTEMPT_MARK = "/tmp/effnet-test-earlier-attempt"


def cluster_state(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "tools.local_slurm", "status", "--json", "--dir", str(SLURM_DIR)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def pyxis_session(env: dict) -> dict:
    """The cluster's recorded state, when Pyxis is on; skips with the reason when it is not.
    For the session fixture `pyxis_cluster` in conftest.py."""
    state = cluster_state(env)
    if not state.get("pyxis"):
        pytest.skip(f"Pyxis is off on the local cluster: the vendored enroot and pyxis sources are not in "
                    f"{pyxis.DEFAULT_VENDOR} (python -m tools.local_slurm up --vendor DIR)")
    return state


def slurmd_pids(state: dict) -> dict[str, int]:
    return {name.removeprefix("slurmd-"): d["pid"] for name, d in state["daemons"].items()
            if name.startswith("slurmd-") and state["running"][name]}


def leftovers(state: dict) -> dict[str, list[str]]:
    """Per node: its `pyxis_*` containers and the container mounts in its namespace.

    A node whose slurmd is dead has no namespace to ask: its containers are read from its enroot store."""
    found, alive = {}, slurmd_pids(state)
    for node in (name.removeprefix("slurmd-") for name in state["daemons"] if name.startswith("slurmd-")):
        if node in alive:
            names = [n for n in pyxis.containers(alive[node]) if n.startswith("pyxis_")]
            mountinfo = Path(f"/proc/{alive[node]}/mountinfo").read_text().splitlines()
            mounts = [line for line in mountinfo if "pyxis_" in line]
        else:
            store = Path(state["dir"]) / "nodes" / node / "enroot" / "data"
            names, mounts = sorted(p.name for p in store.glob("pyxis_*")), []
        if names or mounts:
            found[node] = names + mounts
    return found


def make_pyxis_profile(tmp_path_factory, state: dict) -> Path:
    """localpyxis with data and experiments in a temp dir: only those two site values change."""
    checkout = Path(state["dir"]) / "host" / "checkout"
    if checkout.resolve() != ROOT:
        pytest.fail(f"the local cluster mounts the checkout {checkout.resolve()}, not {ROOT}: run "
                    f"python -m tools.local_slurm up from this checkout")
    tmp = tmp_path_factory.mktemp("pyxis")
    subprocess.run([sys.executable, "-m", "tools.demo_data", str(tmp / "data"), "--no-mnist"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    text = (ROOT / "clusters" / "localpyxis.toml").read_text()
    for old, new in (('name = "localpyxis"', 'name = "testpyxis"'),
                     ('experiments_dir = ""', f'experiments_dir = "{tmp / "experiments"}"'),
                     (f"{checkout}/runs/demo-data:/data:ro", f"{tmp / 'data'}:/data:ro")):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / "testpyxis.toml"
    path.write_text(text)
    return path


def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def sees_marker(pid: int) -> bool:
    """The process's own root holds the image's marker (read through /proc, whatever its namespace)."""
    try:
        return Path(f"/proc/{pid}/root{MARKER}").read_text().strip() == MARKER_TEXT
    except OSError:
        return False


def batch_scripts(job_id: str) -> list[int]:
    """PIDs of the job's batch script (Slurm runs it as `slurm_script`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"slurm_script" in (proc / "cmdline").read_bytes() \
                    and environ_of(int(proc.name)).get("SLURM_JOB_ID") == job_id:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@dataclass(frozen=True)
class ObservedRun:
    """An uninterrupted localpyxis run, and what was seen of it while it trained."""

    experiment: Path
    job: str
    states: list[str]
    rank_environ: dict[int, dict[str, str]]  # by Horovod rank (its heartbeat)
    ranks_in_image: dict[int, bool]
    scripts_in_image: list[bool]


def observed_baseline(profile: Path, env: dict) -> ObservedRun:
    """The 2-node x 2-rank smoke_stages run on localpyxis that the Pyxis tests compare with: looked
    at through /proc while it trains, then waited for."""
    proc = submit(profile, "--nodes", "2", "smoke_stages", "--name", "baseline", "--no-wait", *STAGES_TINY, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    job, exp = job_id_of(proc.stdout), experiment(profile, "baseline")
    wait_for_step(exp / "model", (0, 2))
    beats = heartbeats(exp / "model")
    observed = ObservedRun(exp, job, [], {r: environ_of(b.pid) for r, b in beats.items()},
                           {r: sees_marker(b.pid) for r, b in beats.items()},
                           [sees_marker(pid) for pid in batch_scripts(job)])
    observed.states.extend(wait_done(job, env))
    return observed


def mark_containers(model_dir: Path) -> set[int]:
    """Write EARLIER_ATTEMPT_MARK into the container root of every running rank; their PIDs."""
    marked = set()
    for beat in heartbeats(model_dir).values():
        try:
            Path(f"/proc/{beat.pid}/root{EARLIER_ATTEMPT_MARK}").write_text("written by the test\n")
            marked.add(beat.pid)
        except OSError:
            continue
    assert marked, f"no running rank to mark in {model_dir}"
    return marked


def assert_fresh_containers(model_dir: Path, earlier: set[int], ranks: int = 4, timeout_s: float = 600) -> None:
    """Wait for `ranks` ranks that were not running before (PIDs not in `earlier`), each in the image;
    none of their roots may hold a mark written into an earlier attempt's containers."""
    deadline, seen = time.time() + timeout_s, {}
    while time.time() < deadline and len(seen) < ranks:
        for rank, beat in heartbeats(model_dir).items():
            if beat.pid in earlier or rank in seen:
                continue
            marked = Path(f"/proc/{beat.pid}/root{EARLIER_ATTEMPT_MARK}").exists()
            if sees_marker(beat.pid):  # still running, in the image: what was read is its root's
                seen[rank] = marked
        time.sleep(0.5)
    assert len(seen) == ranks, f"only ranks {sorted(seen)} of a later attempt were seen running in the image"
    assert not any(seen.values()), f"ranks in a container an earlier attempt left: {seen}"
