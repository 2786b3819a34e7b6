"""Faults on a real Slurm 22.05, with real Horovod ranks: a killed rank, a stopped (hung) rank, a
lost node, a diverged run and a preemption storm, each against the same 2-node x 2-rank
smoke_stages run (AutoAugment, 32 -> 48 px at step 16, a checkpoint every 8 steps).

Every recovered run must end COMPLETED by itself, with final weights bit-equal to the
uninterrupted `baseline`'s, and its attempt ledger (effnet.core.ledger) must say what happened.
The profile is localslurm as it ships (stall_timeout_s 60, max_fault_requeues 3), with no extra
flags. Needs root to start the cluster, like tests/test_slurm.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet.core.health import HealthFiles
from effnet.core.ledger import restart_phases
from effnet.core.runlog import step_key
from tests.runlogs import run_log, train_steps
from tests.slurm_cluster import (ROOT, STAGES_STEPS, STAGES_TINY, assert_same_weights, attempts, experiment, heartbeats,
                                 job_id_of, preempt_all_nodes, submit, wait_done, wait_for_step)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
STALL_TIMEOUT_S = 60  # clusters/localslurm.toml


def _start(profile: Path, name: str, env: dict, *flags: str) -> tuple[str, Path]:
    proc = submit(profile, "--nodes", "2", "smoke_stages", "--name", name, *STAGES_TINY, *flags, env=env)
    assert proc.returncode == 0, proc.stderr
    return job_id_of(proc.stdout), experiment(profile, name)


def _status(exp: Path, env: dict) -> str:
    out = subprocess.run([sys.executable, "-m", "jobs.status", str(exp)], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _batch_log(exp: Path, job: str) -> str:
    return (exp / "submitit" / f"{job}_0_log.out").read_text() + (exp / "submitit" / f"{job}_0_log.err").read_text()


def _hosts(nodelist: str, env: dict) -> list[str]:
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def _recovered(job: str, exp: Path, baseline: Path, env: dict, causes: list[str]) -> list[dict]:
    """Wait for the job; check it ended COMPLETED, with `causes` in its ledger, each step once and the
    baseline's weights. Returns the ledger."""
    states = wait_done(job, env)
    rows = attempts(exp)
    assert [r["cause"] for r in rows] == causes, (states, rows, _batch_log(exp, job)[-3000:])
    assert states[-1] == "COMPLETED", states
    run = run_log(exp / "model")
    assert [step_key(r) for r in run.train_steps()] == STAGES_STEPS
    assert_same_weights(baseline / "model", exp / "model")
    return rows


def test_a_killed_rank_is_requeued_and_the_run_ends_bit_equal(slurm, profile, baseline):
    job, exp = _start(profile, "rank-crash", slurm)
    wait_for_step(exp / "model", (1, 3))  # mid-epoch, in stage 1: the newest checkpoint is step 8's
    victim = heartbeats(exp / "model")[3]
    os.kill(victim.pid, signal.SIGKILL)
    crash, resumed = _recovered(job, exp, baseline, slurm, ["rank_crash", "completed"])
    assert (crash["fault_rank"], crash["fault_node"], crash["action"]) == (3, victim.host, "requeue")
    assert resumed["resumed_from_step"] == 8 and resumed["steps_replayed"] == crash["last_step"] - 8 > 0
    # The replayed steps were logged twice; the readers count the last occurrence once.
    replays = run_log(exp / "model").superseded_steps()
    assert 0 < len(replays) <= resumed["steps_replayed"]
    assert len(train_steps(exp / "model")) == len(STAGES_STEPS) + len(replays)
    status = _status(exp, slurm)
    assert re.search(rf"rank_crash .* rank 3 on {victim.host} ", status), status
    assert "fault requeue 1 of 3" in _batch_log(exp, job)


def test_a_stopped_rank_is_ended_by_the_watchdog_and_the_run_ends_bit_equal(slurm, profile, baseline):
    job, exp = _start(profile, "hang", slurm)
    wait_for_step(exp / "model", (2, 3))  # inside stage 2 (48 px): the newest checkpoint is step 16's
    victim = heartbeats(exp / "model")[2]
    os.kill(victim.pid, signal.SIGSTOP)
    stopped = time.time()
    hang, resumed = _recovered(job, exp, baseline, slurm, ["hang", "completed"])
    assert (hang["fault_rank"], hang["fault_node"], hang["action"]) == (2, victim.host, "requeue")
    assert hang["end"] - stopped <= STALL_TIMEOUT_S + 30, hang  # ended within the stall timeout and a margin
    assert resumed["resumed_from_step"] == 16
    # The stopped rank's node was excluded: the run came back on the other nodes.
    assert victim.host not in _hosts(resumed["nodes"], slurm), resumed
    assert f"{victim.host} excluded from the next attempts" in _batch_log(exp, job)
    assert re.search(rf" hang .* rank 2 on {victim.host} ", _status(exp, slurm))


def _slurmd_pid(node: str) -> int:
    out = subprocess.run(["pgrep", "-f", f"slurmd -D -N {node} "], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, f"slurmd of {node}: {out}"
    return int(out[0])


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_lost_node_is_left_out_and_the_run_ends_bit_equal(slurm, profile, baseline):
    job, exp = _start(profile, "node-failure", slurm)
    wait_for_step(exp / "model", (1, 2))
    beats = heartbeats(exp / "model")
    node = beats[2].host  # the job's second node: its batch script runs on the first
    ranks = [b.pid for b in beats.values() if b.host == node]
    # A node is lost the way a real one is: its slurmd, its job step's slurmstepd and its ranks all die.
    doomed = [_slurmd_pid(node), *{_parent(pid) for pid in ranks}, *ranks]
    try:
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        lost, resumed = _recovered(job, exp, baseline, slurm, ["node_failure", "completed"])
        assert lost["fault_node"] == node and lost["fault_rank"] in (2, 3), lost
        assert node not in _hosts(resumed["nodes"], slurm) and resumed["resumed_from_step"] == 8, resumed
        assert re.search(rf"node_failure .* on {node} ", _status(exp, slurm))
    finally:
        # The node comes back for the tests after this one: its slurmd restarted, the node resumed.
        subprocess.run([sys.executable, "-m", "tools.local_slurm", "up"], cwd=ROOT, env=slurm, check=True,
                       capture_output=True)


def test_a_diverged_run_fails_after_one_attempt_with_its_error(slurm, profile):
    job, exp = _start(profile, "diverged", slurm, "--set", "lr_init=1e30")
    assert wait_done(job, slurm) == ["FAILED"]
    rows = attempts(exp)
    assert [(r["cause"], r["action"]) for r in rows] == [("app_error", "stop")], rows
    assert re.fullmatch(r"FloatingPointError: training loss is (nan|inf) at step \d+", rows[0]["error"]), rows
    assert f"last attempt ended on an application error: {rows[0]['error']}" in _status(exp, slurm)
    assert "not requeued" in _batch_log(exp, job)


def _restarting(job: str, exp: Path, restarts: int, env: dict) -> None:
    """Wait until attempt `restarts` + 1 of `job` runs and its ranks have started (rank 0's timeline)."""
    timeline = HealthFiles(exp / "model").timeline
    deadline = time.time() + 300
    while time.time() < deadline:
        job_line = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True,
                                  text=True).stdout
        try:
            started = "stop_record" not in json.loads(timeline.read_text())
        except (OSError, ValueError):
            started = False
        if f"Restarts={restarts} " in job_line and "JobState=RUNNING" in job_line and started:
            return
        time.sleep(0.3)
    pytest.fail(f"attempt {restarts + 1} of job {job} never started")


def test_a_preemption_storm_across_stages_resumes_bit_equal_outside_the_fault_budget(slurm, profile, baseline):
    job, exp = _start(profile, "storm", slurm)
    # Three preemptions: in stage 1, early in stage 2, and as the third attempt restarts. Slurm takes
    # from one to over 20 s to act on a preempting job, so each comes where that still leaves it work
    # to stop: a third one at a step late in stage 2 once found the run completed.
    for step in [(0, 4), (2, 1)]:
        wait_for_step(exp / "model", step)
        wait_done(preempt_all_nodes(slurm), slurm)
    _restarting(job, exp, 2, slurm)
    wait_done(preempt_all_nodes(slurm), slurm)
    rows = _recovered(job, exp, baseline, slurm, ["preempted"] * 3 + ["completed"])
    resumed = [r["resumed_from_step"] for r in rows]
    assert resumed[0] == 0 and any(16 < s < 32 for s in resumed), resumed  # a resume inside stage 2
    # Checkpointed at the step it stopped: nothing replayed, every step logged exactly once.
    assert [r["steps_replayed"] for r in rows] == [0] * 4
    assert train_steps(exp / "model") == STAGES_STEPS
    log = _batch_log(exp, job)
    assert "requeue 3 of 5" in log and "fault requeue" not in log
    # No exit tail: the job step ends seconds after rank 0's stop record, not at the partition's
    # GraceTime (20 s), when Slurm would SIGKILL a rank that lingers. (An attempt whose batch script
    # Slurm killed at the GraceTime, as when the signal lands while a loaded node traces a step, has no
    # step end to measure; the next attempt recorded it from its stop records.)
    tails = [phase["stop record -> step end"] for phase in restart_phases(rows)]
    measured = [tail for tail in tails if tail is not None]
    assert measured and all(0 <= tail <= 10 for tail in measured), restart_phases(rows)
