"""The structure the design depends on: a TensorFlow-free core and launcher, and modules of one job.

The import direction itself is checked by `lint-imports` (the contracts in `.importlinter`) in
`make test`; these tests check what a contract cannot see: what a fresh interpreter really loads.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEAVY = ("tensorflow", "keras", "horovod", "tensorflow_datasets", "matplotlib")
PRODUCT_DIRS = ("effnet", "jobs", "tools", "bench")
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize("module", ["effnet.core.config", "effnet.core.stages", "effnet.core.runlog",
                                    "effnet.core.results", "effnet.core.dllogger", "effnet.core.paths",
                                    "effnet.core.exits", "effnet.core.ledger", "jobs.submit", "jobs.status", "jobs.logs",
                                    "jobs.cancel", "jobs.render", "jobs.host.attempt", "jobs.subfiles"])
def test_importing_loads_no_ml_framework(module):
    code = (f"import sys, {module}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"{module} loads {proc.stdout.strip()}"


def _product_modules() -> list[Path]:
    return sorted(p for d in PRODUCT_DIRS for p in (ROOT / d).rglob("*.py"))


def test_modules_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in _product_modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_stay_short():
    long = {}
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
