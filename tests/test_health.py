"""Health files (heartbeat, stop records) and checkpoints that survive a kill mid-save.

The trainer's records in real runs are checked in tests/test_trainer.py; here are the parts, the
launcher's record for a signal before the trainer listens, and SIGKILL during checkpoint writes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from effnet.core.health import HealthFiles, launched_rank
from effnet.train.health import (ERROR_LINE_CHARS, Heartbeat, error_line, process_start_time, write_app_error,
                                 write_stop)
from tests.checkpoint_worker import build, values
from tests.conftest import ROOT


def _line(path) -> list[str]:
    return path.read_text().split()


def test_heartbeat_rewrites_its_line_and_counts_progress(tmp_path):
    heartbeat = Heartbeat(tmp_path, rank=3, interval_s=0.05)
    path = HealthFiles(tmp_path).heartbeat(3)
    heartbeat.start()
    try:
        first_mtime, first = path.stat().st_mtime_ns, _line(path)
        assert first[:2] == ["0", "-1"] and first[3] == str(os.getpid())
        heartbeat.set_step(7)
        assert list(heartbeat.counting(["a", "b"])) == ["a", "b"]   # two eval batches, passed through
        heartbeat.advance()
        deadline = time.time() + 10
        while _line(path)[:2] != ["3", "7"] and time.time() < deadline:
            time.sleep(0.02)
        assert _line(path)[:2] == ["3", "7"]
        time.sleep(0.2)     # no new work: the line is still rewritten (alive), progress stays
        assert path.stat().st_mtime_ns > first_mtime and _line(path)[:2] == ["3", "7"]
        assert float(_line(path)[4]) > float(first[4])
    finally:
        heartbeat.stop()
    heartbeat.advance()
    stopped = path.stat().st_mtime_ns
    time.sleep(0.2)
    assert path.stat().st_mtime_ns == stopped    # the thread is gone
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_stop_records_say_why_the_rank_stopped(tmp_path):
    heartbeat = Heartbeat(tmp_path, rank=1)
    heartbeat.set_step(42)
    write_stop(heartbeat, "signal", signal="SIGUSR2", checkpoint="ckpt-42")
    record = HealthFiles(tmp_path).stops()
    assert record == [{"reason": "signal", "rank": 1, "host": heartbeat.host, "global_step": 42,
                       "time": record[0]["time"], "signal": "SIGUSR2", "checkpoint": "ckpt-42"}]
    assert '"reason": "signal"' in HealthFiles(tmp_path).stop(1).read_text()   # what the batch script greps
    write_app_error(heartbeat, ValueError("bad\nthing " + "x" * 1000))
    error = HealthFiles(tmp_path).stops()[0]["error"]
    assert error.startswith("ValueError: bad thing xxx") and len(error) == ERROR_LINE_CHARS
    assert error_line(KeyError("k")) == "KeyError: 'k'"


def test_a_stop_record_that_cannot_be_written_is_reported_not_raised(tmp_path, capsys):
    (tmp_path / "health").write_text("a file where the directory should be")
    write_stop(Heartbeat(tmp_path, rank=0), "completed")
    assert "could not write" in capsys.readouterr().err


def test_process_start_time_is_when_the_process_started_to_a_tenth_of_a_second():
    """The restart phase srun -> process (a container's start) is often under a second: whole seconds
    (the boot time in /proc/stat) put the start up to a second early."""
    code = "from effnet.train.health import process_start_time; print(process_start_time())"
    for _ in range(3):
        before = time.time()
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parents[1])
        started = float(child.stdout)
        assert before - 0.1 <= started <= before + 1.0, (before, started)
    assert process_start_time() <= time.time()


def test_launched_rank_reads_the_launchers_variables():
    assert launched_rank({}) == 0
    assert launched_rank({"SLURM_PROCID": "5"}) == 5
    assert launched_rank({"SLURM_PROCID": "5", "HOROVOD_RANK": "2"}) == 2
    assert launched_rank({"SLURM_PROCID": "0", "SUBMITIT_LOCAL_GLOBALID": "3"}) == 3


def test_a_signal_before_the_trainer_listens_writes_a_signal_record_and_exits_75(tmp_path):
    # The signal comes while jobs.task works out the layout, long before the trainer would listen.
    code = ("import os, signal, time, jobs.task as task\n"
            "def layout():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "task.current_layout = layout\n"
            f"task.run_rank({{'model_dir': {str(tmp_path)!r}, 'mode': 'train'}})\n")
    env = {**os.environ, "SLURM_PROCID": "2"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.strip() == "jobs.task: SIGTERM before training started; exiting 75 for requeue"
    assert [(r["reason"], r["rank"], r["signal"], r["checkpoint"], r["global_step"])
            for r in HealthFiles(tmp_path).stops()] == [("signal", 2, "SIGTERM", None, None)]


@pytest.mark.parametrize("reason, exit_code", [("signal", 75), ("completed", 0), ("app_error", 75)])
def test_a_late_signal_keeps_the_trainers_record(tmp_path, reason, exit_code):
    # The trainer wrote its record (its checkpoint, completion or error); then, while the process ends,
    # Slurm's SIGTERM reaches the launcher's handler. It must not overwrite the record with a vaguer
    # one, and a rank that completed stays completed.
    write_stop(Heartbeat(tmp_path, rank=1), reason, checkpoint="ckpt-42")
    record = HealthFiles(tmp_path).stop(1).read_bytes()
    code = ("import os, signal, time, jobs.task as task\n"
            f"signal.signal(signal.SIGTERM, task.ExitForRequeue({str(tmp_path)!r}, 1))\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == exit_code, proc.stderr
    assert HealthFiles(tmp_path).stop(1).read_bytes() == record


def test_a_stop_record_left_by_an_earlier_run_is_cleared_when_a_rank_starts(tmp_path):
    write_stop(Heartbeat(tmp_path, rank=0), "completed")
    heartbeat = Heartbeat(tmp_path, rank=0).start()
    heartbeat.stop()
    assert HealthFiles(tmp_path).stops() == []


KILL_FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)   # of a measured save: cuts spread over one save


@pytest.fixture
def killed_mid_save(tmp_path) -> list[Path]:
    """One worker per kill point, set up side by side, then run one at a time: each saves
    checkpoints 1 and 2, reports how long 2 took, and is SIGKILLed that fraction into saving 3."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    dirs = [tmp_path / f"kill{i}" for i in range(len(KILL_FRACTIONS))]
    workers = [subprocess.Popen([sys.executable, "-m", "tests.checkpoint_worker", str(d)], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for d in dirs]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker, fraction in zip(workers, KILL_FRACTIONS):
            worker.stdin.write("go\n")
            worker.stdin.flush()
            seconds = float(worker.stdout.readline())
            assert worker.stdout.readline().strip() == "saving 3"
            time.sleep(fraction * seconds)
            assert worker.poll() is None
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    return dirs


def test_sigkill_during_checkpoint_writes_leaves_a_complete_checkpoint(killed_mid_save):
    restored, cut_dirs = [], [(d / "checkpoints" / "ckpt-3_temp").exists() for d in killed_mid_save]
    for model_dir in killed_mid_save:
        checkpointer, weights, state = build(str(model_dir))
        path = checkpointer.restore("auto")
        number = int(state.global_step.numpy())
        assert path.endswith(f"ckpt-{number}") and number >= 2, (model_dir, path)
        for variable, value in zip(weights.parts, values(number)):
            np.testing.assert_array_equal(variable.numpy(), value)
        restored.append(number)
    # Kills did land inside save 3 (they left its temporary files), and there 2 is restored; the
    # restore removed those files.
    cut = [n for was_cut, n in zip(cut_dirs, restored) if was_cut]
    assert restored[0] == 2 and cut and set(cut) == {2}, restored
    assert not [d for d in killed_mid_save if list((d / "checkpoints").glob("*_temp"))]
