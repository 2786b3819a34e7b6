"""Horovod smoke test: 2 CPU ranks over Gloo, Keras 3 variables broadcast and allreduced; and the one
build's two controllers, Gloo and MPI, each proven by the probe (tools.hvd_probe)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.horovod


def horovodrun() -> str:
    exe = Path(sys.executable).parent / "horovodrun"
    if exe.exists():
        return str(exe)
    found = shutil.which("horovodrun")
    if not found:
        pytest.fail("horovodrun is missing: run `make setup` to build horovod")
    return found


def test_build_has_tensorflow_ops_and_gloo():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "check_horovod.py"), "0.28.1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "gloo=True" in out.stdout


# Open MPI is what `make setup` builds Horovod's MPI controller against; without it the build is Gloo-only.
NO_MPI = None if shutil.which("mpicxx") and shutil.which("mpirun") else (
    "Open MPI is not installed (as root, make setup installs Debian's openmpi-bin and libopenmpi-dev): "
    "horovod is built with Gloo only")
# Open MPI over TCP on loopback: ranks of this one host, whatever node they pose as.
MPI_TCP = {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,tcp", "OMPI_MCA_btl_tcp_if_include": "lo"}


def probe_records(stdout: str) -> dict[int, dict]:
    """Rank -> the `HVD_PROBE` record it printed (tools.hvd_probe). mpirun forwards each rank's output
    as it comes, so one rank's record may follow another's on the same line: each is read where it begins."""
    decoder = json.JSONDecoder()
    records = [decoder.raw_decode(part)[0] for part in stdout.split("HVD_PROBE ")[1:]]
    return {r["rank"]: r for r in records}


@pytest.mark.skipif(NO_MPI is not None, reason=NO_MPI or "")
def test_build_has_mpi_beside_gloo():
    out = subprocess.run([sys.executable, "-m", "tools.check_horovod", "0.28.1", "--mpi"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gloo=True, mpi=True" in out.stdout.splitlines()[-1]


@pytest.mark.skipif(NO_MPI is not None, reason=NO_MPI or "")
def test_probe_over_mpi_with_the_same_build():
    """mpirun starts 2 ranks and names the MPI controller: ranks from MPI, a correct allreduce."""
    env = {**os.environ, **MPI_TCP, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT),
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    proc = subprocess.run(["mpirun", "--oversubscribe", "-np", "2", "-x", "HOROVOD_CONTROLLER=mpi",
                           "-x", "HOROVOD_CPU_OPERATIONS=mpi", sys.executable, "-m", "tools.hvd_probe"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = probe_records(proc.stdout)
    assert sorted(records) == [0, 1]
    for rank, r in records.items():
        assert (r["mpi"], r["gloo"], r["size"], r["sum"]) == (True, False, 2, 1.0)
        assert r["ompi_rank"] == str(rank)


def test_probe_over_gloo_with_the_same_build():
    """horovodrun --gloo names Gloo: with MPI built in too, the ranks still rendezvous over Gloo."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, "-m",
                           "tools.hvd_probe"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = probe_records(proc.stdout)
    assert sorted(records) == [0, 1]
    for r in records.values():
        assert (r["mpi"], r["gloo"], r["size"], r["sum"]) == (False, True, 2, 1.0)


_RESULTS: dict = {}


def _run_two_ranks() -> dict:
    """Run the 2-rank worker once per session; both tests read its results."""
    if not _RESULTS:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable,
             str(ROOT / "tests" / "hvd_worker.py")],
            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        for line in proc.stdout.splitlines():
            if "HVD_RESULT " in line:
                record = json.loads(line.split("HVD_RESULT ", 1)[1])
                _RESULTS[record["rank"]] = record
    return _RESULTS


def test_two_gloo_ranks_agree():
    results = _run_two_ranks()
    assert sorted(results) == [0, 1]
    r0, r1 = results[0], results[1]
    assert r0["size"] == r1["size"] == 2
    assert r0["before"] != r1["before"]                        # ranks started different
    assert r0["after_bcast"] == r1["after_bcast"] == r0["before"]  # rank 0's weights won
    for r in (r0, r1):
        assert r["reduced0"] == [r["expected_mean"]] * 4 == [1.5] * 4
        assert r["reduced1"] is None
        assert r["reduced2"] == [[1.0]]                        # mean of 0 and 2
    # Different data per rank, averaged gradients: identical weights and losses everywhere.
    for a, b in zip(r0["final"], r1["final"]):
        np.testing.assert_array_equal(a, b)
    assert r0["gathered"][0] == r0["gathered"][1]
    assert r0["losses"] != [] and all(np.isfinite(r0["losses"]))


def test_two_ranks_match_one_rank_with_the_same_global_batch():
    """2 ranks x 4 photos vs 1 rank x 8 photos: same init, same examples, cross-replica BatchNorm."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), "HVD_SINGLE_PROCESS_EFFNET": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "hvd_worker.py")], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads(proc.stdout.split("HVD_RESULT ", 1)[1].splitlines()[0])["effnet_losses"]
    two = _run_two_ranks()
    assert two[0]["effnet_losses"] == two[1]["effnet_losses"]     # the allreduced loss is global
    np.testing.assert_allclose(two[0]["effnet_losses"], single, rtol=1e-3)
