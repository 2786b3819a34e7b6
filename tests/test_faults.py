"""The batch script's fault handling (jobs.faults_sh) without Slurm: the rendered script runs for
real under bash, with fake `srun`/`squeue`/`scontrol`/`sinfo`/`scancel` on PATH and the health
files a test prepares, and each test checks the cause, the ledger line and what was called."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet.core.ledger import (RESTART_PHASES, attempts_table, last_error, ledger_for_model_dir, read_attempts,
                                restart_phases, restarts_table)
from effnet.core.paths import ExperimentPaths
from jobs.render import JobSpec, render_sbatch

ROOT = Path(__file__).resolve().parents[1]

FAKES = {
    # Runs the command after the options; the node check (--overlap) fails for nodes in FAKE_DOWN.
    "srun": r'''echo "srun $*" >> "$FAKE_LOG"
if [[ " $* " == *" --overlap "* ]]; then
  for a in "$@"; do [[ ",${FAKE_DOWN:-}," == *",$prev,"* && $a == true ]] && exit 1; prev=$a; done
  [[ ",${FAKE_DOWN:-}," == *",$prev,"* ]] && exit 1; exit 0
fi
while [[ $# -gt 0 && $1 == --* ]]; do shift; done
"$@"; rc=$?
[ -z "${FAKE_SRUN_STDERR:-}" ] || printf '%b\n' "$FAKE_SRUN_STDERR" >&2
exit "${FAKE_SRUN_STATUS:-$rc}"''',
    "squeue": r'''echo "squeue $*" >> "$FAKE_LOG"
case " $* " in *" -s "*) echo "$SLURM_JOB_ID.batch"; echo "$SLURM_JOB_ID.0" ;; *%L*) echo "${FAKE_LEFT:-20:00}" ;; esac''',
    "scontrol": r'''echo "scontrol $*" >> "$FAKE_LOG"
case "$1 $2" in
  "show hostnames") case $3 in "node[1-2]") printf 'node1\nnode2\n' ;; "node[3-4]") printf 'node3\nnode4\n' ;;
                    *) tr ',' '\n' <<< "$3" ;; esac ;;
  "show job") echo "JobId=$SLURM_JOB_ID JobName=x ExcNodeList=(null) NodeList=node[1-2]" ;;
esac''',
    "sinfo": r'''echo "sinfo $*" >> "$FAKE_LOG"
if [ "$1 $2" = "-h -n" ]; then [[ ",${FAKE_DOWN:-}," == *",$3,"* ]] && echo "down*" || echo allocated; exit 0; fi
if [ "$3" = "-n" ]; then
  for n in ${4//,/ }; do [[ ",${FAKE_DOWN:-}," == *",$n,"* ]] && echo "$n down*" || echo "$n allocated"; done; exit 0
fi
for n in node1 node2 node3 node4; do [[ ",${FAKE_DOWN:-}," == *",$n,"* ]] && echo "$n down*" || echo "$n idle"; done''',
    "scancel": r'''echo "scancel $*" >> "$FAKE_LOG"
[ ! -f "$FAKE_PIDFILE" ] || kill -9 "$(cat "$FAKE_PIDFILE")"''',
}

# The "ranks": put the prepared health files in place (keeping their mtimes), then exit or hang.
RANKS = r'''cp -p "$FAKE_PREPARED"/* "$1/health/" 2>/dev/null
[ -z "${FAKE_TASK_ERR:-}" ] || printf '%b\n' "$FAKE_TASK_ERR_TEXT" >> "$FAKE_TASK_ERR"
if [ -n "${FAKE_ADVANCE:-}" ]; then sleep 1.5; sed -i 's/^40 /41 /' "$1/health/heartbeat.rank0"; fi
if [ -n "${FAKE_LATER:-}" ]; then sleep 2.5; cp "$FAKE_LATER"/* "$1/health/"; fi
if [ -n "${FAKE_HANG:-}" ]; then sleep 60 & echo $! > "$FAKE_PIDFILE"; wait; exit 137; fi'''


@dataclasses.dataclass
class Run:
    proc: subprocess.CompletedProcess
    calls: list[str]
    ledger: list[dict]
    health: Path

    @property
    def last(self) -> dict:
        return self.ledger[-1]

    def called(self, text: str) -> bool:
        return any(text in call for call in self.calls)


class FakeJob:
    """One batch script over fake Slurm commands; `prepared` holds the health files the ranks 'write'."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name, body in FAKES.items():
            (self.bin / name).write_text(f"#!/bin/bash\n{body}\n")
            (self.bin / name).chmod(0o755)
        self.paths = ExperimentPaths.create(tmp_path / "exp", "job")
        self.model_dir = self.paths.model_dir
        self.prepared = tmp_path / "prepared"
        self.prepared.mkdir()
        self.later = tmp_path / "later"  # what the ranks write 2.5 s into srun (FAKE_LATER)
        self.later.mkdir()
        (tmp_path / "ranks.sh").write_text(RANKS)
        self.spec = JobSpec(job_name="t", nodes=2, tasks_per_node=2, cpus_per_task=1, gpus_per_node=0,
                            mem_per_node_gb=0, time_limit_min=10, signal="USR2", signal_delay_s=60, max_requeues=3,
                            partition="debug", model_dir=str(self.model_dir), max_fault_requeues=2,
                            stall_timeout_s=60, first_step_grace_s=120, host_side=str(ROOT / "jobs" / "host"))

    def heartbeat(self, rank: int, progress: int, step: int, age_s: float = 1.0, later: bool = False) -> None:
        path = (self.later if later else self.prepared) / f"heartbeat.rank{rank}"
        now = time.time()
        path.write_text(f"{progress} {step} host{rank} {1000 + rank} {now - age_s:.3f}\n")
        os.utime(path, (now - age_s, now - age_s))

    def stop(self, rank: int, reason: str, step: int | None, age_s: float = 0.0, later: bool = False,
             **extra) -> None:
        record = {"reason": reason, "rank": rank, "host": "h", "global_step": step,
                  "time": time.time() - age_s + (3 if later else 0), **extra}
        ((self.later if later else self.prepared) / f"stop.rank{rank}.json").write_text(json.dumps(record) + "\n")

    def run(self, status: int | None = None, srun_stderr: str = "", restart: int = 0, **env) -> Run:
        spec = dataclasses.replace(self.spec, **env.pop("spec", {}))
        script = self.tmp / "job.sbatch"
        script.write_text(render_sbatch(spec, ["bash", str(self.tmp / "ranks.sh"), str(self.model_dir)]))
        log = self.tmp / "calls.log"
        log.write_text("")
        environ = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "FAKE_LOG": str(log),
                   "FAKE_PREPARED": str(self.prepared), "FAKE_PIDFILE": str(self.tmp / "rank.pid"),
                   "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_NUM_NODES": "2",
                   "SLURM_JOB_PARTITION": "debug", "SLURM_RESTART_COUNT": str(restart),
                   "FAKE_SRUN_STDERR": srun_stderr, **env}
        if status is not None:
            environ["FAKE_SRUN_STATUS"] = str(status)
        proc = subprocess.run(["bash", str(script)], env=environ, capture_output=True, text=True, timeout=60)
        ledger = read_attempts(self.paths.attempts)
        return Run(proc, log.read_text().splitlines(), ledger, self.model_dir / "health")


@pytest.fixture
def job(tmp_path) -> FakeJob:
    return FakeJob(tmp_path)


def _effnet_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("effnet-slurm: ")]


def test_completed_attempt_is_recorded_and_not_requeued(job):
    (job.model_dir / "checkpoints").mkdir(parents=True)
    (job.model_dir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-12"\n'
                                                              'all_model_checkpoint_paths: "ckpt-12"\n')
    for rank in range(4):
        job.heartbeat(rank, 30, 20)
        job.stop(rank, "completed", 20)
    run = job.run(status=0)
    assert run.proc.returncode == 0, run.proc.stderr
    assert not run.called("scontrol requeue")
    row = run.last
    assert {k: row[k] for k in ("job_id", "attempt", "nodes", "cause", "resumed_from_step", "last_step",
                                "steps_replayed", "fault_rank", "fault_node", "exit_status", "action", "error")} == {
        "job_id": "77", "attempt": 1, "nodes": "node[1-2]", "cause": "completed", "resumed_from_step": 12,
        "last_step": 20, "steps_replayed": 0, "fault_rank": None, "fault_node": None, "exit_status": 0,
        "action": "stop", "error": None}
    assert row["start"] <= row["end"] <= time.time() + 1
    assert "effnet-slurm: completed: attempt 1 reached step 20" in run.proc.stdout
    assert not (run.health / "attempt").exists()


@pytest.mark.parametrize("left, cause", [("25:00", "preempted"), ("1:30", "time_limit"), ("1-00:00:00", "preempted")])
def test_signal_stop_records_requeue_under_max_requeues(job, left, cause):
    for rank in range(4):
        job.heartbeat(rank, 9, 8)
        job.stop(rank, "signal", 8, signal="SIGUSR2", checkpoint="ckpt-8")
    run = job.run(status=75, FAKE_LEFT=left)
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.last["cause"] == cause and run.last["action"] == "requeue"
    assert f"effnet-slurm: {cause}: checkpointed on signal; requeue 1 of 3" in run.proc.stdout
    assert run.called("scontrol requeue 77") and not run.called("ExcNodeList")


def test_the_ledger_line_carries_rank_0s_timeline_and_when_srun_started_and_returned(job):
    timeline = {"process_start": 100.5, "trainer_start": 110.0, "restored": 117.25, "first_batch": 121.0,
                "first_step": 140.0, "signal": 200.0, "stop_record": 200.5}
    (job.prepared / "timeline.json").write_text(json.dumps(timeline) + "\n")
    for rank in range(4):
        job.stop(rank, "signal", 8, signal="SIGUSR2", checkpoint="ckpt-8")
    before = time.time()
    run = job.run(status=75)
    assert run.last["timeline"] == timeline
    assert before <= run.last["step_end"] <= run.last["end"] + 1 and run.last["step_end"] != int(run.last["step_end"])
    assert run.last["start"] <= run.last["step_start"] <= run.last["step_end"]


def test_a_garbled_timeline_is_recorded_as_null(job):
    (job.prepared / "timeline.json").write_text('{"process_start": 1\n')
    run = job.run(status=0)
    assert run.last["cause"] == "completed" and run.last["timeline"] is None


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


def test_signal_budget_is_counted_in_the_ledger(job):
    job.paths.root.mkdir(parents=True)
    line = {"job_id": "77", "attempt": 1, "cause": "preempted"}
    job.paths.attempts.write_text("".join(json.dumps({**line, "attempt": n}) + "\n" for n in (1, 2, 3)))
    job.stop(0, "signal", 8)
    run = job.run(status=75, restart=3)
    assert run.proc.returncode == 75
    assert not run.called("scontrol requeue")
    assert "checkpointed on signal, but the limit of 3 requeues is reached" in run.proc.stderr
    assert run.last["attempt"] == 4 and run.last["action"] == "stop"


def test_app_error_is_not_requeued_and_shows_its_error(job):
    for rank in range(4):
        job.heartbeat(rank, 5, 4)
    job.stop(2, "app_error", 4, error='ValueError: bad "shape" \\ here')
    run = job.run(status=1, srun_stderr="srun: error: node2: task 2: Exited with exit code 1\n"
                                        "srun: error: node1: tasks 0-1: Killed")
    assert run.proc.returncode == 1
    assert not run.called("scontrol requeue")
    assert run.last["cause"] == "app_error" and run.last["error"] == 'ValueError: bad "shape" \\ here'
    assert (run.last["fault_rank"], run.last["fault_node"]) == (2, "node2")
    assert 'effnet-slurm: app_error: rank 2 on node2: ValueError: bad "shape" \\ here; not requeued' in run.proc.stderr
    assert last_error(run.ledger) == 'ValueError: bad "shape" \\ here'


PYXIS_FAILED = ("slurmstepd-node1: error: pyxis: failed to create container filesystem for image: /img.sqsh\n"
                "slurmstepd-node1: error: pyxis: printing enroot log file:\n"
                "slurmstepd-node1: error: pyxis:     [ERROR] No such file or directory: /img.sqsh\n"
                "slurmstepd-node1: error: spank: required plugin spank_pyxis.so: task_init() failed with rc=-1")


def test_ranks_that_did_not_start_are_an_app_error_with_pyxis_words_and_only_this_attempts(job):
    """The task logs are appended across attempts: an earlier attempt's Pyxis error does not make this
    attempt's crash an app_error, and this attempt's own Pyxis error does."""
    task_err = Path(job.paths.task_log_pattern("err").replace("%j", "77").replace("%t", "0"))
    task_err.parent.mkdir(parents=True)
    task_err.write_text(PYXIS_FAILED.replace("\\n", "\n") + "\n")
    spec = {"task_error": job.paths.task_log_pattern("err")}
    for rank in range(4):
        job.heartbeat(rank, 12, 6, age_s=rank)
    crash = job.run(status=137, srun_stderr="srun: error: node1: task 1: Killed", spec=spec)
    assert crash.last["cause"] == "rank_crash", crash.last
    failed = job.run(status=1, srun_stderr="srun: error: node1: tasks 0-1: Exited with exit code 1", spec=spec,
                     restart=1, FAKE_TASK_ERR=str(task_err), FAKE_TASK_ERR_TEXT=PYXIS_FAILED)
    assert (failed.last["cause"], failed.last["action"]) == ("app_error", "stop")
    assert failed.last["error"] == ("pyxis: failed to create container filesystem for image: /img.sqsh; "
                                    "pyxis: [ERROR] No such file or directory: /img.sqsh")
    assert failed.proc.returncode == 1


def test_killed_rank_is_a_rank_crash_requeued_without_its_node(job):
    for rank in range(4):
        job.heartbeat(rank, 12, 6, age_s=rank)
    run = job.run(status=137, srun_stderr="srun: error: node1: task 1: Killed\nsrun: error: node2: tasks 2-3: Killed")
    assert run.proc.returncode == 0, run.proc.stderr
    row = run.last
    assert (row["cause"], row["fault_rank"], row["fault_node"], row["last_step"], row["action"]) == (
        "rank_crash", 1, "node1", 6, "requeue")
    assert row["detail"] == "srun: node1: task 1: Killed"
    assert run.called("srun --overlap --jobid=77 -w node1 -N1 -n1 true")
    assert run.called("scontrol requeue 77") and run.called("scontrol update JobId=77 ExcNodeList=node1")
    assert "effnet-slurm: rank_crash at step 6: rank 1 on node1 (srun: node1: task 1: Killed); fault requeue 1 of 2" \
        in run.proc.stdout


def test_srun_terminating_the_others_after_a_crash_is_no_preemption(job):
    """--kill-on-bad-exit ends the other tasks with SIGTERM: before training they record a signal stop."""
    for rank in (0, 2, 3):
        job.heartbeat(rank, 0, -1)
        job.stop(rank, "signal", None, signal="SIGTERM", checkpoint=None)
    run = job.run(status=143, srun_stderr="srun: error: node1: task 1: Killed\nsrun: error: node1: task 0: "
                                          "Terminated\nsrun: error: node2: tasks 2-3: Terminated")
    assert (run.last["cause"], run.last["fault_rank"], run.last["fault_node"]) == ("rank_crash", 1, "node1")


def test_a_preemption_that_srun_ends_early_is_still_a_preemption(job):
    for rank in range(4):
        job.heartbeat(rank, 9, 8)
    job.stop(1, "signal", 8, signal="SIGUSR2", checkpoint="ckpt-8")
    job.stop(0, "signal", 8, signal="SIGTERM", checkpoint=None)
    run = job.run(status=143, srun_stderr="srun: error: node1: task 1: Exited with exit code 75\n"
                                          "srun: error: node1: task 0: Terminated")
    assert run.last["cause"] == "preempted" and run.called("scontrol requeue 77")


def test_stopped_rank_seen_by_the_watchdog_before_the_others_time_out_is_a_hang(job):
    """kill -STOP: the others' collectives time out (app_error records); Slurm's SIGCONT at the end of the
    step revives the stopped rank, which then errors too. The watchdog saw it go quiet first."""
    for rank in range(4):
        job.heartbeat(rank, 40, 20, age_s=40 if rank == 1 else 1)
    for rank in range(4):
        job.heartbeat(rank, 40, 20, later=True)
        job.stop(rank, "app_error", 20, later=True, error="HorovodInternalError: Gloo timeout")
    run = job.run(status=1, FAKE_LATER=str(job.later), spec={"stall_timeout_s": 8, "first_step_grace_s": 16},
                  srun_stderr="srun: error: node1: task 0: Exited with exit code 1")
    assert (run.last["cause"], run.last["fault_rank"], run.last["fault_node"]) == ("hang", 1, "node1"), run.last
    assert "seen by the watchdog" in run.last["detail"] and run.called("scontrol requeue 77")


def test_rank_that_went_quiet_before_the_others_errors_is_at_fault(job):
    """A stopped rank makes its peers' collectives fail: their app_error records are consequences."""
    for rank in (0, 1, 2):
        job.heartbeat(rank, 40, 20)
        job.stop(rank, "app_error", 20, error="HorovodInternalError: Gloo timeout")
    job.heartbeat(3, 40, 20, age_s=45)
    run = job.run(status=1, srun_stderr="srun: error: node1: task 0: Exited with exit code 1")
    assert (run.last["cause"], run.last["fault_rank"], run.last["fault_node"]) == ("rank_crash", 3, "node2")
    assert run.called("scontrol requeue 77")


def test_crash_on_a_node_that_does_not_answer_is_a_node_failure(job):
    for rank in range(4):
        job.heartbeat(rank, 12, 6)
    run = job.run(status=1, srun_stderr="srun: error: node2: task 3: Killed", FAKE_DOWN="node2")
    assert (run.last["cause"], run.last["fault_rank"], run.last["fault_node"]) == ("node_failure", 3, "node2")
    assert run.called("scontrol requeue 77")
    # node2 is down already: with it excluded, node1, node3 and node4 still fit the 2-node job.
    assert run.called("scontrol update JobId=77 ExcNodeList=node2")


def test_a_lost_node_srun_reports_is_a_node_failure_despite_the_others_errors(job):
    for rank in range(4):
        job.heartbeat(rank, 12, 6)
    for rank in (0, 1):
        job.stop(rank, "app_error", 6, error="HorovodInternalError: Connection reset by peer")
    run = job.run(status=1, srun_stderr="srun: error: node1: task 1: Exited with exit code 1\n"
                                        "srun: error: node1: task 0: Terminated\nsrun: error: Node failure on node2")
    assert (run.last["cause"], run.last["fault_node"], run.last["action"]) == ("node_failure", "node2", "requeue")
    assert run.last["fault_rank"] in (2, 3)


def test_no_exclusion_when_the_partition_would_be_too_small(job):
    for rank in range(4):
        job.heartbeat(rank, 12, 6)
    run = job.run(status=137, srun_stderr="srun: error: node1: task 0: Killed", FAKE_DOWN="node3,node4")
    assert run.last["cause"] == "rank_crash" and run.called("scontrol requeue 77")
    assert not run.called("ExcNodeList=")
    assert "not excluding node1: partition debug would keep 1 usable node(s) for 2" in run.proc.stderr


def test_second_crash_at_the_same_step_is_an_app_error(job):
    job.paths.root.mkdir(parents=True)
    job.paths.attempts.write_text(json.dumps({"job_id": "77", "attempt": 1, "cause": "rank_crash",
                                              "last_step": 6}) + "\n")
    for rank in range(4):
        job.heartbeat(rank, 12, 6)
    run = job.run(status=137, srun_stderr="srun: error: node1: task 1: Killed", restart=1)
    assert run.proc.returncode == 137 and not run.called("scontrol requeue")
    assert run.last["cause"] == "app_error" and "crashed at step 6 again" in run.last["error"]


def test_fault_budget_is_separate_and_counted_in_the_ledger(job):
    job.paths.root.mkdir(parents=True)
    rows = [("preempted", 1), ("hang", 2), ("preempted", 3), ("node_failure", 4)]
    job.paths.attempts.write_text("".join(json.dumps({"job_id": "77", "attempt": n, "cause": c, "last_step": n})
                                          + "\n" for c, n in rows))
    for rank in range(4):
        job.heartbeat(rank, 12, 9)
    run = job.run(status=137, srun_stderr="srun: error: node1: task 1: Killed", restart=4)
    assert run.proc.returncode == 137 and not run.called("scontrol requeue")
    assert "the limit of 2 fault requeues is reached" in run.proc.stderr
    assert run.last["action"] == "stop" and run.last["steps_replayed"] == 4


def test_watchdog_ends_a_hung_step_and_names_the_stopped_rank(job):
    for rank in (0, 2, 3):
        job.heartbeat(rank, 40, 20)
    job.heartbeat(1, 40, 20, age_s=300)
    start = time.time()
    run = job.run(FAKE_HANG="1", spec={"stall_timeout_s": 2, "first_step_grace_s": 3})
    assert time.time() - start < 20
    hang = json.loads((run.health / "hang.json").read_text())
    assert (hang["how"], hang["rank"], hang["node"], hang["ranks"], hang["global_step"]) == (
        "stale heartbeat", 1, "node1", [1], 20)
    assert run.called("scancel --signal=KILL 77.0") and not run.called("77.batch")
    assert (run.last["cause"], run.last["fault_rank"], run.last["fault_node"], run.last["exit_status"]) == (
        "hang", 1, "node1", 137)
    assert run.called("scontrol requeue 77") and run.called("ExcNodeList=node1")
    lines = _effnet_lines(run.proc)
    assert any(line.startswith("effnet-slurm: hang: no progress for ") and "rank(s) 1 on node1" in line
               for line in lines), lines


def test_watchdog_names_the_slowest_ranks_when_all_beat(job):
    job.heartbeat(0, 40, 20)
    job.heartbeat(1, 40, 20)
    job.heartbeat(2, 38, 20)
    job.heartbeat(3, 40, 20)
    run = job.run(FAKE_HANG="1", spec={"stall_timeout_s": 2, "first_step_grace_s": 3})
    hang = json.loads((run.health / "hang.json").read_text())
    assert (hang["how"], hang["ranks"], hang["nodes"]) == ("lowest progress", [2], ["node2"])


@pytest.mark.parametrize("finishing", [False, True])
def test_watchdog_limit_is_the_stall_timeout_after_progress_and_the_grace_while_finishing(job, finishing):
    for rank in range(4):
        job.heartbeat(rank, 40, 20)
    if finishing:
        job.stop(1, "completed", 20)
    run = job.run(FAKE_HANG="1", FAKE_ADVANCE="1", spec={"stall_timeout_s": 2, "first_step_grace_s": 5})
    hang = json.loads((run.health / "hang.json").read_text())
    assert hang["limit_s"] == (5 if finishing else 2) and hang["stalled_s"] >= hang["limit_s"]
    # A rank that wrote its stop record stopped on purpose: never named.
    assert hang["how"] == "lowest progress" and hang["ranks"] == ([2, 3] if finishing else [1, 2, 3])


def test_an_attempt_killed_from_outside_is_recorded_by_the_next(job):
    """The batch script died with its node: the next attempt records it from the health files."""
    health = job.model_dir / "health"
    health.mkdir(parents=True)
    (health / "attempt.json").write_text(json.dumps({"job_id": "77", "attempt": 1, "start": int(time.time()) - 100,
                                                     "nodes": "node[3-4]", "resumed": 0}))
    for rank, age in ((0, 2), (1, 2), (2, 50), (3, 2)):
        path = health / f"heartbeat.rank{rank}"
        path.write_text(f"10 5 h {rank} 0\n")
        os.utime(path, (time.time() - age, time.time() - age))
    for rank in range(4):
        job.stop(rank, "completed", 9)
    run = job.run(status=0, restart=1, FAKE_DOWN="node4")
    first, second = run.ledger
    assert (first["attempt"], first["cause"], first["fault_rank"], first["fault_node"], first["exit_status"]) == (
        1, "node_failure", 2, "node4", None)
    assert first["nodes"] == "node[3-4]" and first["last_step"] == 5
    assert (second["attempt"], second["cause"]) == (2, "completed")
    assert "effnet-slurm: attempt 1 of job 77 ended without its record: node_failure (node4)" in run.proc.stderr


def test_ledger_table_and_path(job):
    assert ledger_for_model_dir(job.model_dir) == job.paths.attempts
    rows = [{"job_id": "77", "attempt": 1, "nodes": "node[1-2]", "start": 100, "end": 400, "cause": "rank_crash",
             "resumed_from_step": 0, "last_step": 35, "steps_replayed": 0, "fault_rank": 1, "fault_node": "node1",
             "exit_status": 137, "action": "requeue"}]
    table = attempts_table(rows).splitlines()
    assert table[0].split() == ["attempt", "job", "nodes", "start", "minutes", "cause", "resumed", "last", "step",
                                "replayed", "fault", "exit", "action"]
    assert "rank_crash" in table[1] and "rank 1 on node1" in table[1] and " 5.0 " in table[1]


def test_status_prints_the_ledger_and_the_last_error(job):
    job.paths.record_submission({"job_id": "77", "recipe": "smoke", "cluster": "c", "nodes": 2,
                                 "submitted_at": "now", "executor": "local"})
    rows = [{"job_id": "77", "attempt": 1, "start": 100, "end": 160, "cause": "hang", "fault_rank": 3,
             "fault_node": "node2", "action": "requeue", "step_end": 158.5},
            {"job_id": "77", "attempt": 2, "start": 200, "end": 230, "step_start": 200.25, "cause": "app_error",
             "action": "stop",
             "error": "ValueError: bad \"shape\"", "timeline": {"process_start": 201, "trainer_start": 209,
                                                                "restored": 212, "first_batch": 215,
                                                                "first_step": 220.5}}]
    job.paths.attempts.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = subprocess.run([sys.executable, "-m", "jobs.status", str(job.paths.root)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(" hang " in line and "rank 3 on node2" in line and "requeue" in line for line in lines), out.stdout
    assert 'last attempt ended on an application error: ValueError: bad "shape"' in lines
    restarts = lines[lines.index(next(line for line in lines if line.startswith("restarts"))) + 2]
    assert restarts.split() == ["1", "hang", "-", "-", "1.5", "40.0", "0.2", "0.8", "8.0", "3.0", "3.0", "5.5", "62.0"], lines
