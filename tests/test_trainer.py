"""The trainer end to end on real data: exact resume after a signal, modes, Horovod ranks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from effnet.core.exits import EXIT_REQUEUE
from effnet.core.health import TIMELINE_EVENTS, HealthFiles
from effnet.core.runlog import is_train_step
from tests.conftest import ROOT, run_cli
from tests.runlogs import checkpoint_tensors, records, train_steps

TINY = ["--cfg", "b0", "--mparams", "width_coefficient=0.25,depth_coefficient=0.25,num_classes=10",
        "--train_img_size", "32", "--eval_img_size", "32", "--train_batch_size", "8", "--eval_batch_size", "50",
        "--warmup_epochs", "0", "--seed", "1", "--log_steps", "1", "--notensorboard", "--noexport_savedmodel"]




def train_args(data: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["--mode", "train", "--data_dir", str(data), "--model_dir", str(model_dir), "--max_epochs", "2",
            "--steps_per_epoch", "6", "--save_checkpoint_freq", "1", "--augmenter_name", "randaugment",
            "--raug_magnitude", "9", "--mixup_alpha", "0.2", "--moving_average_decay", "0.9", *TINY, *extra]


def _logged_since(model_dir: Path, known: int) -> list[dict]:
    return records(model_dir)[known:] if (model_dir / "log.json").exists() else []


def stop_when_logged(args: list[str], model_dir: Path, step: tuple[int, int]) -> dict:
    """Train until this process logs `step`, send SIGUSR2 from outside, expect exit 75 and a `signal`
    stop record for the batch script; returns the logged stop."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    known = len(_logged_since(model_dir, 0))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "effnet", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        new = _logged_since(model_dir, known)
        if step in [tuple(r["step"]) for r in new if is_train_step(r)]:
            proc.send_signal(signal.SIGUSR2)
            break
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_REQUEUE, err[-3000:]
    return checked_stop(model_dir, started, stepped=True)


def checked_stop(model_dir: Path, started: float, stepped: bool) -> dict:
    """The logged stop of a process launched at `started` and stopped by SIGUSR2, after checking its
    stop record and rank 0's timeline (`stepped`: it took a step before the signal)."""
    stop = [r["data"] for r in records(model_dir)
            if r["type"] == "LOG" and r["data"].get("exit_code") == EXIT_REQUEUE]
    assert stop[-1]["checkpoint"].endswith(f"ckpt-{stop[-1]['global_step']}")
    [record] = HealthFiles(model_dir).stops()
    assert record["time"] >= started and (record["reason"], record["rank"], record["signal"]) == ("signal", 0, "SIGUSR2")
    assert (record["checkpoint"], record["global_step"]) == (stop[-1]["checkpoint"], stop[-1]["global_step"])
    # Rank 0's restart timeline: the start in order, then the signal (which may come while the first
    # step is still being traced) and the stop record, all between the launch and the stop record.
    timeline = json.loads(HealthFiles(model_dir).timeline.read_text())
    assert list(timeline) in (list(TIMELINE_EVENTS), [e for e in TIMELINE_EVENTS if e != "first_step"])
    assert not stepped or "first_step" in timeline
    start = [timeline[e] for e in ("process_start", "trainer_start", "restored")]
    assert start == sorted(start) and start[-1] <= timeline["signal"] <= timeline["stop_record"]
    assert started - 1 <= start[0] and max(timeline.values()) <= record["time"] + 1
    return stop[-1]


def stop_at_batch(args: list[str], model_dir: Path, epoch: int, index: int) -> dict:
    """Train with SIGUSR2 sent as batch `index` of `epoch` is drawn (bench.signal_at_batch): index 0
    stops before the epoch's first step (its pipeline start), any other after the step of that batch.
    Returns the logged stop."""
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "bench.signal_at_batch", str(epoch), str(index), "cli", *args],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == EXIT_REQUEUE, proc.stderr[-3000:]
    return checked_stop(model_dir, started, stepped=index > 0)


def assert_checkpoints_equal(want_dir: Path, got_dir: Path) -> None:
    want, got = checkpoint_tensors(want_dir), checkpoint_tensors(got_dir)
    assert want.keys() == got.keys() and len(want) > 100
    assert any(k.startswith("rng/") for k in want)    # dropout RNG state is part of the checkpoint
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_signal_checkpoints_exits_75_and_resume_is_exact(mnist, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    result = run_cli(*train_args(mnist, straight))
    assert result.returncode == 0, result.stderr[-3000:]

    # The stopped run also checkpoints after every step (--checkpoint_every_min): saving must not change
    # what it trains.
    periodic = ("--checkpoint_every_min", "0.0001")
    stopped_at = stop_when_logged(train_args(mnist, stopped, *periodic), stopped, (0, 3))["global_step"]
    assert 3 <= stopped_at < 12
    assert len(list((stopped / "checkpoints").glob("ckpt-*.index"))) > 1

    resumed = run_cli(*train_args(mnist, stopped, *periodic))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = train_steps(stopped)
    # Continuous: every step once, in order, across the stop (the log was appended, not truncated).
    assert steps == [(e, s) for e in range(2) for s in range(1, 7)]
    resumed_from = [r["data"]["resumed_from"] for r in records(stopped)
                    if r["type"] == "LOG" and "resumed_from" in r["data"]]
    assert resumed_from[0] == "" and resumed_from[1].endswith(f"ckpt-{stopped_at}")
    assert_checkpoints_equal(straight, stopped)


def test_resume_is_exact_after_stops_in_both_resolution_stages_with_autoaugment(mnist, tmp_path):
    """Three stops: one in stage 1 (32 px, mixup 0.1), two in stage 2 (48 px, mixup 0.2, a new trace).

    Mixup in both stages keeps the step's input float32 throughout, so an uninterrupted run traces
    stage 2 from the same function as stage 1 (what a shape-relaxed retrace got wrong; 32 -> 48 px
    is a size pair where its kernels differ from an exact trace's in the last bits).

    Each signal comes at a known batch (6 steps an epoch), so the stops are steps 2, 8 and 10: the
    last two resumes are inside stage 2, one of them in a process that traces stage 2 first."""
    def args(model_dir):
        flags = train_args(mnist, model_dir, "--augmenter_name", "autoaugment", "--n_stages", "2",
                           "--base_img_size", "32", "--base_mixup", "0.1")
        flags[flags.index("--train_img_size") + 1] = "48"
        return flags

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    result = run_cli(*args(straight))
    assert result.returncode == 0, result.stderr[-3000:]
    stops = [stop_at_batch(args(stopped), stopped, *at)["global_step"] for at in ((0, 1), (1, 1), (1, 1))]
    assert stops == [2, 8, 10], stops
    resumed = run_cli(*args(stopped))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train_steps(stopped) == [(e, s) for e in range(2) for s in range(1, 7)]
    assert_checkpoints_equal(straight, stopped)


def test_a_signal_as_an_epochs_pipeline_starts_stops_before_its_first_step(mnist, tmp_path):
    """An epoch's pipeline start and a new stage's first trace take seconds, tens of them on a loaded
    node: longer than a partition's GraceTime. A signal then stops the run before the step, on the
    epoch's own checkpoint, without writing another."""
    model_dir = tmp_path / "run"
    stop = stop_at_batch(train_args(mnist, model_dir), model_dir, 1, 0)  # checks the stop record too
    assert train_steps(model_dir) == [(0, s) for s in range(1, 7)]
    assert (stop["global_step"], stop["epoch"], stop["step_in_epoch"]) == (6, 1, 0), stop
    assert stop["checkpoint"].endswith("ckpt-6")
    # One checkpoint of step 6 (the epoch's), not saved again over itself.
    assert sorted(p.name for p in (model_dir / "checkpoints").glob("ckpt-*.index")) == ["ckpt-6.index"]


def test_heartbeat_shows_progress_and_a_finished_run_says_completed(mnist, tmp_path):
    """While it trains (and checkpoints every 6 ms), the heartbeat is rewritten and its progress counts
    every train step, eval batch and save; at the end the stop record says `completed`."""
    model_dir = tmp_path / "run"
    heartbeat = HealthFiles(model_dir).heartbeat(0)
    args = train_args(mnist, model_dir, "--mode", "train_and_eval", "--checkpoint_every_min", "0.0001",
                      "--keep_checkpoints", "100")
    proc = subprocess.Popen([sys.executable, "-m", "effnet", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seen = {}   # mtime -> (progress, global_step), as the watchdog would sample them
    while proc.poll() is None:
        try:
            seen[heartbeat.stat().st_mtime_ns] = tuple(int(v) for v in heartbeat.read_text().split()[:2])
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    beats = [seen[t] for t in sorted(seen)]
    assert len(beats) >= 3 and beats == sorted(beats) and beats[0] < beats[-1], beats
    saved = sorted(int(p.name[len("ckpt-"):-len(".index")]) for p in (model_dir / "checkpoints").glob("*.index"))
    assert {6, 12} < set(saved) <= set(range(1, 13)), saved      # saves between the per-epoch ones
    # 12 steps, 2 evaluations (after epoch 1 and the final one) of 10 batches with raw and EMA weights, the saves.
    assert tuple(int(v) for v in heartbeat.read_text().split()[:2]) == (12 + 2 * 2 * 10 + len(saved), 12)
    [record] = HealthFiles(model_dir).stops()
    assert (record["reason"], record["rank"], record["global_step"]) == ("completed", 0, 12)


def test_a_nan_loss_is_an_application_error(mnist, tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli(*train_args(mnist, model_dir, "--max_epochs", "1", "--lr_init", "1e30"))
    assert result.returncode == 1, result.stderr[-3000:]
    [record] = HealthFiles(model_dir).stops()
    assert record["reason"] == "app_error" and record["error"].startswith("FloatingPointError: training loss is ")
    assert record["error"].endswith(f"at step {record['global_step']}") and record["global_step"] < 6
    assert record["error"] in result.stderr


def test_eval_and_predict_modes_use_the_checkpoint(mnist, tmp_path):
    model_dir = tmp_path / "run"
    # Trained with RandAugment and mixup deferred to the device (the pipeline hands over uint8 batches).
    trained = run_cli(*train_args(mnist, model_dir, "--max_epochs", "1", "--defer_img_mixing"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    flags = [r["data"] for r in records(model_dir) if "defer_img_mixing" in r.get("data", {})]
    assert [f["defer_img_mixing"] for f in flags] == [True]
    result = run_cli("--mode", "eval", "--data_dir", str(mnist), "--model_dir", str(model_dir),
                     "--moving_average_decay", "0.9", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    evals = [r["data"] for r in records(model_dir) if r["type"] == "LOG" and "eval_accuracy_top_1" in r["data"]]
    assert [e["comment"] for e in evals] == ["eval using original weights", "eval using EMA weights"]
    assert all(e["eval_examples"] == 500 and e["checkpoint"].endswith("ckpt-6") for e in evals)

    images = tmp_path / "images"
    images.mkdir()
    for i, (image, _) in enumerate(tf.data.TFRecordDataset(sorted(str(p) for p in mnist.glob("validation-*")))
                                   .map(lambda r: (tf.io.parse_single_example(
                                       r, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})["image/encoded"], 0))
                                   .take(3)):
        (images / f"{i}.jpg").write_bytes(image.numpy())
    out = tmp_path / "pred.json"
    result = run_cli("--mode", "predict", "--predict_path", str(images), "--predict_output", str(out),
                     "--data_dir", str(mnist), "--model_dir", str(model_dir), "--top_k", "3", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert len(rows) == 3 and all(len(r["top_k"]) == 3 for r in rows)
    assert {t["class_name"] for r in rows for t in r["top_k"]} <= {str(d) for d in range(10)}


@pytest.mark.parametrize("args,message", [
    (["--mode", "train", "--resume", "must"], "--resume must: no readable checkpoint"),
    (["--mode", "predict", "--predict_path", "/nonexistent.jpg"], "--predict_path /nonexistent.jpg: no such file"),
    (["--mode", "eval"], "--resume must: no readable checkpoint"),
    (["--mode", "train", "--data_dir", "/no/such/dir"], "--data_dir /no/such/dir: no such directory"),
])
def test_bad_input_exits_2_with_one_line(mnist, tmp_path, args, message):
    extra = [] if "--data_dir" in args else ["--data_dir", str(mnist)]
    result = run_cli(*args, *extra, "--model_dir", str(tmp_path / "empty"), *TINY)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [next(l for l in result.stderr.splitlines() if message in l)]
    # A train mode also tells the batch script, which must not retry it: an application error.
    stops = HealthFiles(tmp_path / "empty").stops()
    if args[1] == "train":
        assert [(r["reason"], message in r["error"]) for r in stops] == [("app_error", True)]
    else:
        assert stops == []
    if "--data_dir" in args:  # found before the log opens: nothing but the stop record is written
        assert not (tmp_path / "empty" / "log.json").exists()
        assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["health"]


def _horovodrun() -> str:
    exe = Path(sys.executable).parent / "horovodrun"
    assert exe.exists(), "run `make setup` to build horovod"
    return str(exe)


@pytest.mark.horovod
def test_two_horovod_ranks_train_in_sync_and_evaluate_the_whole_split(mnist, tmp_path):
    common = ["--mode", "train_and_eval", "--data_dir", str(mnist), "--max_epochs", "1", "--steps_per_epoch", "5",
              "--augmenter_name", "none", *TINY]
    one = tmp_path / "one"
    result = run_cli(*common, "--model_dir", str(one), "--train_batch_size", "16")
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "two"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([_horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, "-m", "effnet",
                           *common, "--model_dir", str(two), "--train_batch_size", "8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def summary(model_dir):
        return [r["data"] for r in records(model_dir) if r["type"] == "LOG" and r["step"] == []][0]

    def losses(model_dir):
        return [r["data"]["training_loss"] for r in records(model_dir) if is_train_step(r)]

    params = [r["data"] for r in records(two) if r["type"] == "LOG" and r["step"] == "PARAMETER"]
    assert params[0]["world_size"] == 2                  # only rank 0 writes the log
    assert params[0]["controller"] == "gloo"
    assert summary(two)["weights_in_sync_across_ranks"] is True
    assert sorted((r["rank"], r["reason"], r["global_step"]) for r in HealthFiles(two).stops()) == [
        (0, "completed", 5), (1, "completed", 5)]
    assert all(HealthFiles(two).heartbeat(rank).read_text().split()[1] == "5" for rank in (0, 1))
    assert summary(two)["eval_examples"] == summary(one)["eval_examples"] == 500   # the whole split, once
    # Both runs learn (the 1-rank vs 2-rank loss on identical examples is checked in test_horovod.py).
    assert np.isfinite(losses(two)).all() and len(losses(two)) == len(losses(one)) == 5
