"""`python -m effnet`: help, summary, flag parsing through fire, and one-line errors with exit 2."""
from __future__ import annotations

import pytest

import effnet.cli as cli_module
from effnet.core.runlog import read_log


def test_help_lists_every_flag(cli):
    from effnet.core.config.train import TrainConfig
    import dataclasses

    result = cli("--help")
    assert result.returncode == 0
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name}" in result.stdout


def test_summary_b4(cli):
    result = cli("--mode", "summary", "--cfg", "b4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "resolution: 380" in out
    assert "params: 19,466,816 total" in out
    assert "block7b" in out and "block7c" not in out   # 32 blocks, stage 7 has 2
    assert sum(line.startswith("block") and line[5:6].isdigit() for line in out.splitlines()) == 32


@pytest.mark.parametrize("args,message", [
    (["--mode", "summary", "--cfg", "b9"], "--cfg b9: unknown model; valid names: b0, b1"),
    (["--mode", "summary", "--mparams", "drop_rate=0.1"], "--mparams: unknown key 'drop_rate'; valid keys:"),
    (["--mode", "summary", "--mparams", "num_classes=abc"], "--mparams num_classes: expected int, got 'abc'"),
    (["--mode", "summary", "--cfg", "no/such/b0_cfg.py"], "--cfg no/such/b0_cfg.py: no such file"),
    (["--mode", "train_everything"], "--mode: 'train_everything' is not one of train_and_eval, train, eval, predict"),
    (["--mode", "summary", "--bogus_flag", "1"], "unknown flag(s) --bogus_flag"),
])
def test_bad_input_is_one_line_and_exit_2(cli, args, message):
    result = cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("effnet: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def captured(monkeypatch):
    seen = []
    monkeypatch.setattr(cli_module, "run", seen.append)
    return seen


@pytest.mark.parametrize("argv,expected", [
    (["--use_amp"], True),
    (["--nouse_amp"], False),
    (["--use_amp=false"], False),
    (["--use_amp", "true"], True),
    ([], False),
])
def test_boolean_flags_on_and_off_through_fire(captured, argv, expected):
    cli_module.entrypoint(["--mode", "summary", *argv])
    assert captured[-1].use_amp is expected


def test_values_reach_the_config_through_fire(captured):
    cli_module.entrypoint(["--mode", "benchmark", "--lr_init", "1", "--mparams", "num_classes=10,dropout_rate=0.1",
                           "--train_img_size=64", "--seed", "3", "--model_dir", "/tmp/x"])
    cfg = captured[-1]
    assert (cfg.mode, cfg.lr_init, cfg.train_img_size, cfg.seed, cfg.model_dir) == ("benchmark", 1.0, 64, 3, "/tmp/x")
    assert cfg.mparams == "num_classes=10,dropout_rate=0.1"


TINY = ["--cfg", "b0", "--mparams", "width_coefficient=0.25,depth_coefficient=0.25,num_classes=10",
        "--train_img_size", "32", "--eval_img_size", "32", "--train_batch_size", "4", "--eval_batch_size", "4",
        "--benchmark_steps", "4", "--benchmark_warmup_steps", "1", "--log_steps", "2"]


def test_benchmark_mode_logs_the_reference_keys_and_appends(cli, tmp_path):
    for precision in ("--nouse_amp", "--use_amp"):
        result = cli("--mode", "benchmark", "--model_dir", str(tmp_path), precision, *TINY)
        assert result.returncode == 0, result.stderr[-2000:]
    run = read_log(tmp_path)
    assert run.records and run.skipped_lines == 0 and len(run.segments()) == 2
    params = [r["data"] for r in run.logs() if r["step"] == "PARAMETER"]
    assert [p["use_amp"] for p in params] == [False, True]          # both runs, appended
    assert params[0]["model"]["num_classes"] == 10 and params[0]["world_size"] == 1
    assert params[0]["controller"] == "none"
    assert [r["step"] for r in run.logged_steps()] == [[0, 2], [0, 4]] * 2
    summaries = run.summaries()
    assert len(summaries) == 2
    for summary in summaries:
        for key in ("avg_exp_per_second_training", "avg_exp_per_second_training_per_GPU", "avg_exp_per_second_eval",
                    "avg_exp_per_second_eval_per_GPU", "avg_time_per_exp_eval", "latency_pct", "latency_90pct",
                    "latency_95pct", "latency_99pct", "latency_p50", "latency_p90", "latency_p95", "latency_p99"):
            assert summary[key] > 0, key
        assert summary["latency_p50"] <= summary["latency_p99"]
    units = {r["metric"]: r["metadata"].get("unit") for r in run.records if r["type"] == "METADATA"}
    assert units["avg_exp_per_second_training"] == "samples/s" and units["latency_p99"] == "ms"
