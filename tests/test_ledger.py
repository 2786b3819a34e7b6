"""The attempt ledger read back: where each restart's seconds went, the table, and `jobs.status`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from effnet.core.ledger import RESTART_PHASES, attempts_table, ledger_for_model_dir, restart_phases, restarts_table
from effnet.core.paths import ExperimentPaths

ROOT = Path(__file__).resolve().parents[1]


def test_restart_phases_split_a_restart_from_the_signal_to_the_first_resumed_step():
    rows = [{"job_id": "7", "attempt": 1, "start": 0, "end": 205, "step_end": 203.0, "cause": "preempted",
             "action": "requeue", "timeline": {"process_start": 2, "trainer_start": 10, "restored": 15,
                                              "first_step": 30, "signal": 200.0, "stop_record": 200.5}},
            {"job_id": "7", "attempt": 2, "start": 220, "end": 400, "step_start": 220.5, "step_end": 399.0,
             "cause": "rank_crash",
             "action": "requeue", "timeline": {"process_start": 221, "trainer_start": 230, "restored": 236,
                                              "first_batch": 240, "first_step": 250}},
            {"job_id": "7", "attempt": 3, "start": 415, "end": 500, "step_end": None, "cause": "completed",
             "action": "stop", "timeline": None}]
    first, second = restart_phases(rows)
    assert [first[name] for name, _, _ in RESTART_PHASES] == [0.5, 2.5, 2.0, 15.0, 0.5, 0.5, 9.0, 6.0, 4.0, 10.0]
    assert first["total"] == 50.0 and (first["attempt"], first["cause"]) == (1, "preempted")
    # A crash has no signal: its total runs from the step's end; the third attempt left no timeline.
    assert second["signal -> stop record"] is None and second["job end -> next start"] == 15.0
    assert second["restored -> first batch"] is None and second["total"] is None
    table = restarts_table(rows).splitlines()
    assert table[0].split()[:2] == ["attempt", "cause"] and table[1].split()[-1] == "50.0"
    assert restarts_table(rows[2:]) == ""


def test_ledger_table_and_path(tmp_path):
    paths = ExperimentPaths.create(tmp_path, "job")
    assert ledger_for_model_dir(paths.model_dir) == paths.attempts
    rows = [{"job_id": "77", "attempt": 1, "nodes": "node[1-2]", "start": 100, "end": 400, "cause": "rank_crash",
             "resumed_from_step": 0, "last_step": 35, "steps_replayed": 0, "fault_rank": 1, "fault_node": "node1",
             "exit_status": 137, "action": "requeue"}]
    table = attempts_table(rows).splitlines()
    assert table[0].split() == ["attempt", "job", "nodes", "start", "minutes", "cause", "resumed", "last", "step",
                                "replayed", "fault", "exit", "action"]
    assert "rank_crash" in table[1] and "rank 1 on node1" in table[1] and " 5.0 " in table[1]


def test_status_prints_the_ledger_and_the_last_error(tmp_path):
    paths = ExperimentPaths.create(tmp_path, "job")
    paths.record_submission({"job_id": "77", "recipe": "smoke", "cluster": "c", "nodes": 2,
                                 "submitted_at": "now", "executor": "local"})
    rows = [{"job_id": "77", "attempt": 1, "start": 100, "end": 160, "cause": "hang", "fault_rank": 3,
             "fault_node": "node2", "action": "requeue", "step_end": 158.5},
            {"job_id": "77", "attempt": 2, "start": 200, "end": 230, "step_start": 200.25, "cause": "app_error",
             "action": "stop",
             "error": "ValueError: bad \"shape\"", "timeline": {"process_start": 201, "trainer_start": 209,
                                                                "restored": 212, "first_batch": 215,
                                                                "first_step": 220.5}}]
    paths.attempts.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = subprocess.run([sys.executable, "-m", "jobs.status", str(paths.root)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(" hang " in line and "rank 3 on node2" in line and "requeue" in line for line in lines), out.stdout
    assert 'last attempt ended on an application error: ValueError: bad "shape"' in lines
    restarts = lines[lines.index(next(line for line in lines if line.startswith("restarts"))) + 2]
    assert restarts.split() == ["1", "hang", "-", "-", "1.5", "40.0", "0.2", "0.8", "8.0", "3.0", "3.0", "5.5", "62.0"], lines
