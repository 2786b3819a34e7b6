"""effnet.core.runlog, the one reader of log.json: steps, replays, segments, summaries, bad lines."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from effnet.core.dllogger import format_log_line, format_metadata_line
from effnet.core.results import training_curves
from effnet.core.runlog import (RunLog, RunLogError, is_stop, is_train_step, parse_records, read_log, read_runs,
                                step_key)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def line(elapsed: float, step, data: dict) -> str:
    return format_log_line(NOW + dt.timedelta(seconds=elapsed), elapsed, step, data)


def step_line(elapsed: float, epoch: int, step: int, loss: float) -> str:
    return line(elapsed, (epoch, step), {"training_loss": loss})


def eval_line(elapsed: float, top1: float, step=()) -> str:
    return line(elapsed, step, {"comment": "eval using original weights", "eval_accuracy_top_1": top1})


PARAMS = line(0.1, "PARAMETER", {"mode": "train_and_eval", "cfg": "b0", "world_size": 2, "steps_per_epoch": 10})
# A run stopped after logging (0, 3) and (0, 4) whose checkpoint was at (0, 3): the next process
# (its clock restarts) replays (0, 4), then goes on to (0, 5) and finishes.
REPLAYED = [
    PARAMS,
    format_metadata_line(NOW, 0.2, "training_loss", {"unit": None}),
    step_line(30.0, 0, 3, 1.5),
    step_line(40.0, 0, 4, 1.4),
    line(41.0, "PARAMETER", {"exit_code": 75, "global_step": 3, "checkpoint": "ckpt-3"}),
    line(0.5, "PARAMETER", {"resumed_from": "ckpt-3", "steps_per_epoch": 10}),
    step_line(9.0, 0, 4, 1.3),
    step_line(19.0, 0, 5, 1.2),
    eval_line(25.0, 0.5),
]


def write(path: Path, lines: list[str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "log.json").write_text("".join(text if text.endswith("\n") else text + "\n" for text in lines))
    return path


def test_is_train_step_wants_a_log_with_epoch_and_step():
    assert is_train_step({"type": "LOG", "step": [0, 3], "data": {}})
    for record in ({"type": "LOG", "step": [], "data": {}}, {"type": "LOG", "step": "PARAMETER", "data": {}},
                   {"type": "LOG", "step": [0, 1, 2], "data": {}}, {"type": "METADATA", "step": [0, 3]}):
        assert not is_train_step(record)


def test_a_replayed_step_counts_once_with_its_later_values(tmp_path):
    run = read_log(write(tmp_path, REPLAYED))
    assert [step_key(r) for r in run.logged_steps()] == [(0, 3), (0, 4), (0, 4), (0, 5)]
    assert [step_key(r) for r in run.train_steps()] == [(0, 3), (0, 4), (0, 5)]
    assert [r["data"]["training_loss"] for r in run.train_steps()] == [1.5, 1.3, 1.2]
    superseded = run.superseded_steps()
    assert len(superseded) == 1 and step_key(superseded[0]) == (0, 4) and superseded[0]["data"]["training_loss"] == 1.4
    assert run.global_steps() == [3, 4, 5]
    xs, losses, accs = training_curves(run)
    assert (xs, losses, len(accs)) == ([3, 4, 5], [1.5, 1.3, 1.2], 3)


def test_segments_split_where_the_clock_restarts(tmp_path):
    run = read_log(write(tmp_path, REPLAYED))
    assert [len(s) for s in run.segments()] == [5, 4]
    assert run.wall_seconds() == pytest.approx(41.0 + 25.0)
    assert [r["data"]["global_step"] for r in run.stops()] == [3] and all(map(is_stop, run.stops()))
    assert (run.model, run.ranks, run.steps_per_epoch, run.parameters()["mode"]) == ("B0", 2, 10, "train_and_eval")


def test_final_results_come_from_the_last_segment_that_has_any(tmp_path):
    first = [PARAMS, eval_line(5.0, 0.25, step=(0, 5)), eval_line(10.0, 0.5)]
    unfinished = [step_line(1.0, 1, 1, 0.9)]
    run = read_log(write(tmp_path / "a", first + unfinished))
    assert [f["eval_accuracy_top_1"] for f in run.final_results()] == [0.5]
    assert [r["data"]["eval_accuracy_top_1"] for r in run.evals()] == [0.25, 0.5]
    rerun = read_log(write(tmp_path / "b", first + unfinished + [eval_line(2.0, 0.75)]))
    assert [f["eval_accuracy_top_1"] for f in rerun.final_results()] == [0.75]
    assert len(rerun.summaries()) == 2
    assert RunLog(tmp_path / "log.json").final_results() == [] and RunLog(tmp_path / "log.json").train_steps() == []


def test_garbage_lines_are_skipped_and_counted_and_glued_records_split():
    good = [step_line(1.0, 0, 1, 2.0), step_line(2.0, 0, 2, 1.9), step_line(3.0, 0, 3, 1.8)]
    lines = ["garbage", good[0].strip() + good[1].strip(), good[2][:30], "", "DLLL {not json", "DLLL [1, 2]",
             good[2]]
    records, skipped = parse_records(lines)
    assert skipped == 4
    assert [step_key(r) for r in records] == [(0, 1), (0, 2), (0, 3)]


def test_finding_logs(tmp_path):
    with pytest.raises(RunLogError, match="no such file"):
        read_log(tmp_path / "missing")
    with pytest.raises(RunLogError, match="no dllogger logs"):
        read_runs([tmp_path])
    write(tmp_path / "exp" / "model", REPLAYED)
    write(tmp_path / "sweep" / "n1", REPLAYED)
    write(tmp_path / "sweep" / "n2", REPLAYED)
    assert read_log(tmp_path / "exp").name == "exp"
    runs = read_runs([tmp_path / "sweep", tmp_path / "sweep" / "n1" / "log.json"])
    assert [r.name for r in runs] == ["n1", "n2"]
    assert issubclass(RunLogError, ValueError)
