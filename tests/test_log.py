"""The dllogger-compatible writer: exact line format, append mode, rank-0-only writes."""
from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np

from effnet.core.dllogger import DLLogger, format_log_line, format_metadata_line, format_stdout_line, parse_line


def _lines(path):
    return path.read_text().splitlines()


def test_log_line_format_and_key_order():
    now = dt.datetime(2026, 11, 28, 23, 35, 8, 649524, tzinfo=dt.timezone.utc)
    line = format_log_line(now, 9e-06, "PARAMETER", {"cfg": "b0", "seed": None, "metrics": ("accuracy", "top_5")})
    assert line == (
        'DLLL {"timestamp": "1795908908.649524", "datetime": "2026-11-28 23:35:08.649524+00:00", '
        '"elapsedtime": "9e-06", "type": "LOG", "step": "PARAMETER", '
        '"data": {"cfg": "b0", "seed": null, "metrics": ["accuracy", "top_5"]}}\n'
    )


def test_metadata_line_format_and_key_order():
    now = dt.datetime(2026, 11, 28, 23, 35, 8, 654055, tzinfo=dt.timezone.utc)
    line = format_metadata_line(now, 0.00454, "eval_loss", {"unit": None})
    assert line == (
        'DLLL {"timestamp": "1795908908.654055", "elapsedtime": "0.00454", '
        '"datetime": "2026-11-28 23:35:08.654055+00:00", "type": "METADATA", "metric": "eval_loss", '
        '"metadata": {"unit": null}}\n'
    )


def test_stdout_line_follows_the_reference():
    """`metric : value unit`; a metric whose unit is None or missing shows no unit (not "None")."""
    now = dt.datetime(2026, 11, 28, 23, 35, 8, 654167)
    meta = {"eval_loss": {"unit": None}, "avg_exp_per_second_eval": {"unit": "samples/s", "format": ":.2f"}}
    text = format_stdout_line(now, (), {"comment": "eval using EMA weights", "eval_loss": 0.95,
                                        "avg_exp_per_second_eval": 1234.5678}, meta)
    assert text == ("DLL 2026-11-28 23:35:08.654167 - () comment : eval using EMA weights "
                    "eval_loss : 0.95 avg_exp_per_second_eval : 1234.57 samples/s")
    assert "None" not in text


def test_written_lines_parse_back_exactly(tmp_path):
    path = tmp_path / "log.json"
    data = {"loss": 1.25, "np32": np.float32(0.5), "np64": np.float64(2.0), "int": np.int64(3), "arr": np.arange(3)}
    with DLLogger(path, stdout=None) as logger:
        logger.metadata("loss", {"unit": None, "format": ":.4f"})
        logger.log((0, 5), data)
        logger.log((), {"comment": "done"})
    records = [parse_line(l) for l in _lines(path)]
    assert [r["type"] for r in records] == ["METADATA", "LOG", "LOG"]
    assert list(records[0]) == ["timestamp", "elapsedtime", "datetime", "type", "metric", "metadata"]
    assert list(records[1]) == ["timestamp", "datetime", "elapsedtime", "type", "step", "data"]
    assert records[1]["step"] == [0, 5] and records[2]["step"] == []
    assert records[1]["data"] == {"loss": 1.25, "np32": 0.5, "np64": 2.0, "int": 3, "arr": [0, 1, 2]}
    for r in records:
        assert isinstance(r["timestamp"], str) and float(r["timestamp"]) > 1.7e9
        assert isinstance(r["elapsedtime"], str) and float(r["elapsedtime"]) >= 0
        dt.datetime.fromisoformat(r["datetime"])
    # Each line is exactly "DLLL " + JSON.
    for line in _lines(path):
        assert line.startswith("DLLL ") and json.loads(line[5:])


def test_append_mode_keeps_previous_runs(tmp_path):
    path = tmp_path / "log.json"
    with DLLogger(path, stdout=None) as logger:
        logger.log("PARAMETER", {"run": 1})
    with DLLogger(path, stdout=None) as logger:
        logger.log("PARAMETER", {"run": 2})
    assert [parse_line(l)["data"]["run"] for l in _lines(path)] == [1, 2]


def test_only_rank_zero_writes_by_default(tmp_path):
    out = io.StringIO()
    with DLLogger(tmp_path / "r1.json", rank=1, stdout=out) as logger:
        logger.log((), {"x": 1})
    assert not (tmp_path / "r1.json").exists() and out.getvalue() == ""
    with DLLogger(tmp_path / "r1all.json", rank=1, all_ranks=True, stdout=out) as logger:
        logger.log((), {"x": 1})
    assert len(_lines(tmp_path / "r1all.json")) == 1


def test_verbosity_routes_lines(tmp_path):
    out = io.StringIO()
    with DLLogger(tmp_path / "v.json", stdout=out) as logger:
        logger.log((0, 1), {"a": 1}, verbosity=1)   # file only (VERBOSE)
        logger.log((0, 2), {"b": 2}, verbosity=0)   # both
    assert len(_lines(tmp_path / "v.json")) == 2
    assert out.getvalue().count("DLL ") == 1 and "(0, 2) b : 2" in out.getvalue()


def test_parse_line_rejects_garbage():
    assert parse_line("hello") is None
    assert parse_line('DLLL {"truncated": ') is None
    assert parse_line("DLLL [1, 2]") is None
