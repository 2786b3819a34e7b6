"""Horovod smoke test: 2 CPU ranks over Gloo, Keras 3 variables broadcast and allreduced."""
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


def test_two_gloo_ranks_agree():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, str(ROOT / "tests" / "hvd_worker.py")],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        if "HVD_RESULT " in line:
            record = json.loads(line.split("HVD_RESULT ", 1)[1])
            results[record["rank"]] = record
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
