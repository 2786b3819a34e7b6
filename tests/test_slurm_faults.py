"""Faults on a real Slurm 22.05, with real Horovod ranks: a killed rank, a stopped (hung) rank, a
lost node, a diverged run and a preemption storm, each against an uninterrupted 2-node x 2-rank
smoke_stages run (AutoAugment, 32 -> 48 px at step 16, a checkpoint every 8 steps) on the same path.

The faults run where a DGX user's job runs: on localpyxis (every rank in an enroot container, `srun
--mpi=pmix`, MPI Horovod) when the local cluster has Pyxis, else on localslurm (Gloo, no container).
localslurm keeps the killed rank (the Gloo launch's own fault) and the diverged run either way. Gloo
and MPI may sum in different orders, so each path compares with its own baseline.

Every recovered run must end COMPLETED by itself, with final weights bit-equal to its baseline's,
every step logged once (the readers count a replayed step's last occurrence) and its attempt ledger
(effnet.core.ledger) saying what happened; under Pyxis every later attempt runs in fresh containers
and no container is left on any node. The profiles are as they ship (stall_timeout_s 60,
max_fault_requeues 3), with no extra flags. Needs root to start the cluster, like tests/test_slurm.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from effnet.core.health import HealthFiles
from effnet.core.ledger import restart_phases
from effnet.core.runlog import step_key
from tests.pyxis_runs import assert_fresh_containers, cluster_state, leftovers, mark_containers
from tests.runlogs import run_log, train_steps
from tests.slurm_cluster import (ROOT, STAGES_STEPS, STAGES_TINY, assert_same_weights, attempts, experiment, heartbeats,
                                 job_id_of, preempt_all_nodes, submit, wait_done, wait_for_step)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
STALL_TIMEOUT_S = 60  # clusters/localslurm.toml and localpyxis.toml


@dataclass(frozen=True)
class FaultPath:
    """Where a fault runs: the test profile, the uninterrupted run it compares with, and whether its
    ranks run in containers."""

    name: str
    profile: Path
    baseline: Path
    containers: bool

    def mark(self, model_dir: Path, marked: set[int]) -> None:
        """Mark the running ranks' containers (tests/pyxis_runs.py); none to mark without containers."""
        if self.containers:
            marked |= mark_containers(model_dir)


def _path(request, name: str) -> FaultPath:
    if name == "localslurm":
        return FaultPath(name, request.getfixturevalue("profile"), request.getfixturevalue("baseline"), False)
    run = request.getfixturevalue("pyxis_baseline")
    assert run.states == ["COMPLETED"], f"the localpyxis baseline ended {run.states}"
    return FaultPath(name, request.getfixturevalue("pyxis_profile"), run.experiment, True)


@pytest.fixture(scope="session")
def on(request, slurm) -> FaultPath:
    """localpyxis when the local cluster has Pyxis, else localslurm."""
    return _path(request, "localpyxis" if cluster_state(slurm).get("pyxis") else "localslurm")


@pytest.fixture(params=["localslurm", "localpyxis"])
def on_each(request, slurm) -> FaultPath:
    return _path(request, request.param)


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


def _recovered(job: str, exp: Path, on: FaultPath, env: dict, causes: list[str], marked: set[int]) -> list[dict]:
    """Wait for the job; check it ended COMPLETED, with `causes` in its ledger, each step once and the
    baseline's weights; under Pyxis, that its last attempt ran in containers none of the `marked`
    ranks' attempts left, and that no container is left. Returns the ledger."""
    if on.containers:
        assert_fresh_containers(exp / "model", marked)
    states = wait_done(job, env)
    rows = attempts(exp)
    assert [r["cause"] for r in rows] == causes, (states, rows, _batch_log(exp, job)[-3000:])
    assert states[-1] == "COMPLETED", states
    run = run_log(exp / "model")
    assert [step_key(r) for r in run.train_steps()] == STAGES_STEPS
    assert_same_weights(on.baseline / "model", exp / "model")
    if on.containers:
        assert leftovers(cluster_state(env)) == {}
    return rows


def test_a_killed_rank_is_requeued_and_the_run_ends_bit_equal(slurm, on_each):
    on, marked = on_each, set()
    job, exp = _start(on.profile, "rank-crash", slurm)
    wait_for_step(exp / "model", (1, 3))  # mid-epoch, in stage 1: the newest checkpoint is step 8's
    victim = heartbeats(exp / "model")[3]
    on.mark(exp / "model", marked)
    os.kill(victim.pid, signal.SIGKILL)
    crash, resumed = _recovered(job, exp, on, slurm, ["rank_crash", "completed"], marked)
    assert (crash["fault_rank"], crash["fault_node"], crash["action"]) == (3, victim.host, "requeue")
    assert resumed["resumed_from_step"] == 8 and resumed["steps_replayed"] == crash["last_step"] - 8 > 0
    # The replayed steps were logged twice; the readers count the last occurrence once.
    replays = run_log(exp / "model").superseded_steps()
    assert 0 < len(replays) <= resumed["steps_replayed"]
    assert len(train_steps(exp / "model")) == len(STAGES_STEPS) + len(replays)
    status = _status(exp, slurm)
    assert re.search(rf"rank_crash .* rank 3 on {victim.host} ", status), status
    assert "fault requeue 1 of 3" in _batch_log(exp, job)


def test_a_stopped_rank_is_ended_by_the_watchdog_and_the_run_ends_bit_equal(slurm, on):
    job, exp, marked = *_start(on.profile, "hang", slurm), set()
    wait_for_step(exp / "model", (2, 3))  # inside stage 2 (48 px): the newest checkpoint is step 16's
    victim = heartbeats(exp / "model")[2]
    on.mark(exp / "model", marked)
    os.kill(victim.pid, signal.SIGSTOP)
    stopped = time.time()
    hang, resumed = _recovered(job, exp, on, slurm, ["hang", "completed"], marked)
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


def _step_daemons(ranks: list[int]) -> set[int]:
    """The slurmstepd processes above the ranks."""
    found = set()
    for pid in ranks:
        while pid > 1 and Path(f"/proc/{pid}/comm").read_text().strip() != "slurmstepd":
            pid = _parent(pid)
        assert pid > 1, f"no slurmstepd above rank PID {pid}"
        found.add(pid)
    return found


def _partition_nodes(env: dict, nodes: str) -> None:
    subprocess.run(["scontrol", "update", "PartitionName=debug", f"Nodes={nodes}"], env=env, check=True)


def _wait_down(node: str, env: dict, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], env=env, capture_output=True,
                               text=True).stdout.split()
        if state and state[0].rstrip("*~#$@+") in ("down", "fail", "failing"):
            return
        time.sleep(1)
    pytest.fail(f"Slurm never marked {node} down")


def test_a_lost_node_comes_back_into_its_job_and_the_run_ends_bit_equal(slurm, on):
    """The job needs every node of its partition (as on a reservation of its size), so the lost node
    cannot be left out: the requeued job waits for it and runs there again, where the lost attempt's
    container stayed (its slurmstepd died with the node) under the job's own id."""
    _partition_nodes(slurm, "node[1-2]")
    try:
        job, exp = _start(on.profile, "node-failure", slurm)
        wait_for_step(exp / "model", (1, 2))
        beats, marked = heartbeats(exp / "model"), set()
        node = beats[2].host  # the job's second node: its batch script runs on the first
        on.mark(exp / "model", marked)
        ranks = [b.pid for b in beats.values() if b.host == node]
        # A node is lost the way a real one is: its slurmd, its job step's slurmstepd and its ranks all die.
        # (Under Pyxis a rank's parent is its container's init; the step's slurmstepd is above that.)
        doomed = [_slurmd_pid(node), *_step_daemons(ranks), *ranks]
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        _wait_down(node, slurm)
        if on.containers:
            assert any(name.startswith(f"pyxis_{job}") for name in leftovers(cluster_state(slurm)).get(node, [])), \
                f"no container of job {job} left on {node}"
        # The node comes back: its slurmd restarted (in the same namespace, with the same container store).
        subprocess.run([sys.executable, "-m", "tools.local_slurm", "up"], cwd=ROOT, env=slurm, check=True,
                       capture_output=True)
        lost, resumed = _recovered(job, exp, on, slurm, ["node_failure", "completed"], marked)
        assert lost["fault_node"] == node and lost["fault_rank"] in (2, 3, None), lost
        assert _hosts(resumed["nodes"], slurm) == _hosts(lost["nodes"], slurm), (lost, resumed)
        assert resumed["resumed_from_step"] == 8, resumed
        assert re.search(rf"node_failure .* on {node}\b", _status(exp, slurm))
    finally:
        _partition_nodes(slurm, "node[1-4]")
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


def test_a_preemption_storm_across_stages_resumes_bit_equal_outside_the_fault_budget(slurm, on):
    job, exp, marked = *_start(on.profile, "storm", slurm), set()
    # Three preemptions: in stage 1, early in stage 2, and as the third attempt restarts. Slurm takes
    # from one to over 20 s to act on a preempting job, so each comes where that still leaves it work
    # to stop: a third one at a step late in stage 2 once found the run completed.
    for step in [(0, 4), (2, 1)]:
        wait_for_step(exp / "model", step)
        on.mark(exp / "model", marked)
        wait_done(preempt_all_nodes(slurm), slurm)
    _restarting(job, exp, 2, slurm)
    wait_done(preempt_all_nodes(slurm), slurm)
    rows = _recovered(job, exp, on, slurm, ["preempted"] * 3 + ["completed"], marked)
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
