"""Why an attempt ended, decided in-process by the batch script's host side (jobs/host), one case per cause.

Every health file is written by the trainer's own writers (effnet/train/health.py: the heartbeat, the stop
records, the app_error record), the hang and stale records by the watchdog's own functions, and srun's
stderr as srun prints it. What the host side asks Slurm (node states, time left, requeue) is answered by
`SlurmAnswers`; tests/test_slurm_faults.py runs the same code against a real Slurm, on localslurm and
localpyxis.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from effnet.core.ledger import CAUSES, read_attempts
from effnet.core.paths import ExperimentPaths
from effnet.train.health import Heartbeat, write_app_error, write_stop
from jobs.host import attempt as host
from jobs.host.classify import Classifier
from jobs.host.slurm import Slurm

NODES = {"node[1-2]": ["node1", "node2"], "node[3-4]": ["node3", "node4"]}
PYXIS_FAILED = ["slurmstepd-node1: error: pyxis: failed to create container filesystem for image: /img.sqsh",
                "slurmstepd-node1: error: pyxis: printing enroot log file:",
                "slurmstepd-node1: error: pyxis:     [ERROR] No such file or directory: /img.sqsh",
                "slurmstepd-node1: error: spank: required plugin spank_pyxis.so: task_init() failed with rc=-1"]


class SlurmAnswers(Slurm):
    """What Slurm answers the host side in one case: nodes down (sinfo) or not running a task, slurmd
    restarts, the time left; requeue and ExcNodeList updates are recorded in `calls`."""

    def __init__(self, down=(), silent=(), restarted=None, left=1500) -> None:
        super().__init__("77")
        self.down, self.silent, self.restarted, self.left = set(down), set(silent), restarted or {}, left
        self.calls: list[str] = []

    def hostnames(self, nodelist):
        return NODES.get(nodelist, nodelist.split(",") if nodelist else [])

    def node_states(self, nodes=(), partition=""):
        return {n: "down*" if n in self.down else "allocated" for n in (nodes or ["node1", "node2", "node3", "node4"])}

    def node_runs_a_task(self, node):
        return node not in self.down and node not in self.silent

    def slurmd_starts(self, nodes):
        return {n: self.restarted.get(n, 0.0) for n in nodes}

    def time_left_s(self):
        return self.left

    def end_steps(self):
        self.calls.append("end steps")

    def requeue(self):
        self.calls.append("requeue")
        return True

    def excluded(self):
        return ""

    def exclude(self, nodelist):
        self.calls.append(f"exclude {nodelist}")
        return True


class Ranks:
    """Four ranks (2 nodes x 2) writing their health files through the trainer's writers, and the host
    side of their attempt."""

    def __init__(self, tmp_path: Path, restart: int = 0) -> None:
        self.paths = ExperimentPaths.create(tmp_path / "exp", "job")
        self.model_dir = self.paths.model_dir
        self.restart = restart
        self.beats = []
        for rank in range(4):
            beat = Heartbeat(self.model_dir, rank)
            beat.host = f"node{rank // 2 + 1}"
            self.beats.append(beat)

    def beat(self, rank: int, progress: int, step: int, age_s: float = 1.0) -> None:
        heartbeat = self.beats[rank]
        heartbeat.progress = progress
        heartbeat.set_step(step)
        heartbeat.beat()
        when = time.time() - age_s
        os.utime(heartbeat.files.heartbeat(rank), (when, when))

    def all_beat(self, progress: int, step: int) -> None:
        for rank in range(4):
            self.beat(rank, progress, step)

    def stop(self, rank: int, reason: str, **extra) -> None:
        write_stop(self.beats[rank], reason, **extra)

    def signal(self, rank: int, name: str = "SIGUSR2", checkpoint: str | None = "ckpt-8") -> None:
        write_stop(self.beats[rank], "signal", signal=name, checkpoint=checkpoint)

    def error(self, rank: int, err: BaseException) -> None:
        write_app_error(self.beats[rank], err)

    def collectives_failed(self, *ranks: int) -> None:
        """Around a rank that stopped, the others' collectives time out: each beats once more and records
        the error; srun reports rank 0's exit first."""
        for rank in ranks:
            self.beat(rank, 40, 20)
            self.error(rank, RuntimeError("HorovodInternalError: Gloo timeout"))
        self.srun("srun: error: node1: task 0: Exited with exit code 1")

    def srun(self, *lines: str) -> None:
        """What srun printed on its stderr (the batch script tees it into health/srun.err)."""
        path = self.beats[0].files.directory / "srun.err"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write("".join(line + "\n" for line in lines))

    def attempt(self, slurm: Slurm, *options: str) -> host.Attempt:
        args = host.parse_args(["--model-dir", str(self.model_dir), "--tasks-per-node=2", "--stall-s=60",
                                "--grace-s=120", "--signal-delay-s=60", "--requeue=preempted,time_limit=3",
                                "--fault-requeue=rank_crash,hang,node_failure=2", *options, "end", "0"])
        env = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_NUM_NODES": "2",
               "SLURM_JOB_PARTITION": "debug", "SLURM_RESTART_COUNT": str(self.restart)}
        a = host.Attempt(args, slurm, env)
        a.hosts = slurm.hostnames(a.nodelist)
        return a

    def classify(self, status: int, slurm: Slurm) -> host.Verdict:
        return Classifier(self.attempt(slurm), {}).classify(status, time.time())

    def watchdog_saw(self, slurm: Slurm, seconds_ago: float = 0.0) -> None:
        """One poll of the watchdog, `seconds_ago`: it notes the ranks whose heartbeat went stale."""
        a = self.attempt(slurm)
        host.mark_stale(a, a.health.heartbeats(), a.health.stops(), int(time.time() - seconds_ago))

    def watchdog_ended(self, slurm: Slurm, stalled_s: int = 65) -> None:
        a = self.attempt(slurm)
        host.end_hung_step(a, a.health.heartbeats(), a.health.stops(), int(time.time()), stalled_s, 60)


@dataclass
class Case:
    """One way an attempt ends: what the ranks and srun wrote, srun's status, Slurm's answers, the verdict."""

    name: str
    write: Callable[[Ranks, SlurmAnswers], None]
    status: int
    cause: str
    rank: int | None = None
    node: str | None = None
    says: str = ""  # in the detail, or the error of an app_error
    slurm: dict = field(default_factory=dict)


def _completed(r, s):
    r.all_beat(30, 20)
    for rank in range(4):
        r.stop(rank, "completed")


def _signalled(r, s):
    r.all_beat(9, 8)
    for rank in range(4):
        r.signal(rank)


def _signal_that_srun_ended_early(r, s):
    r.all_beat(9, 8)
    r.signal(1)
    r.signal(0, "SIGTERM", None)
    r.srun("srun: error: node1: task 1: Exited with exit code 75", "srun: error: node1: task 0: Terminated")


def _killed_rank(r, s):
    for rank in range(4):
        r.beat(rank, 12, 6, age_s=rank)
    r.srun("srun: error: node1: task 1: Killed", "srun: error: node2: tasks 2-3: Killed")


def _killed_rank_before_training(r, s):
    """srun --kill-on-bad-exit ends the others with SIGTERM: before training they record a signal stop."""
    for rank in (0, 2, 3):
        r.beat(rank, 0, -1)
        r.signal(rank, "SIGTERM", None)
    r.srun("srun: error: node1: task 1: Killed", "srun: error: node1: task 0: Terminated",
           "srun: error: node2: tasks 2-3: Terminated")


def _quiet_before_the_others_errors(r, s):
    r.beat(3, 40, 20, age_s=45)
    r.collectives_failed(0, 1, 2)


def _stopped_rank_the_watchdog_ended(r, s):
    for rank in range(4):
        r.beat(rank, 40, 20, age_s=70 if rank == 2 else 1)
    r.watchdog_ended(s)
    r.srun("srun: error: node1: tasks 0-1: Killed", "srun: error: node2: tasks 2-3: Killed")


def _stopped_rank_then_the_others_timed_out(r, s):
    """kill -STOP: the watchdog sees it go quiet, the others' collectives time out; Slurm's SIGCONT at the
    end of the step revives it, and it errors too."""
    for rank in range(4):
        r.beat(rank, 40, 20, age_s=40 if rank == 1 else 1)
    r.watchdog_saw(s, seconds_ago=5)
    r.collectives_failed(0, 1, 2, 3)


def _node_srun_lost(r, s):
    for rank in range(4):
        r.beat(rank, 12, 6, age_s=30 if rank == 3 else 1)
    for rank in (0, 1):
        r.error(rank, RuntimeError("HorovodInternalError: Connection reset by peer"))
    r.srun("srun: error: node1: task 1: Exited with exit code 1", "srun: error: node1: task 0: Terminated",
           "srun: error: Node failure on node2")


def _node_down_in_sinfo(r, s):
    s.down.add("node2")
    for rank in range(4):
        r.beat(rank, 12, 6, age_s=35 if rank == 2 else 1)


def _crash_on_a_silent_node(r, s):
    s.silent.add("node2")
    r.all_beat(12, 6)
    r.srun("srun: error: node2: task 3: Killed")


def _diverged(r, s):
    r.all_beat(5, 4)
    r.error(2, FloatingPointError("training loss is nan at step 4"))
    r.srun("srun: error: node2: task 2: Exited with exit code 1", "srun: error: node1: tasks 0-1: Killed")


def _container_did_not_start(r, s):
    r.srun(*PYXIS_FAILED, "srun: error: node1: tasks 0-1: Exited with exit code 1")


def _bad_input(r, s):
    r.error(0, ValueError("--data_dir /nope: no TFRecords"))


CASES = [
    Case("completed", _completed, 0, "completed", says="srun exited 0"),
    Case("preempted", _signalled, 75, "preempted", says="with 1500 s of the time limit left"),
    Case("time_limit", _signalled, 75, "time_limit", slurm={"left": 90}),
    Case("preempted, srun ended the others", _signal_that_srun_ended_early, 143, "preempted"),
    Case("rank_crash, srun saw it", _killed_rank, 137, "rank_crash", 1, "node1", "srun: node1: task 1: Killed"),
    Case("rank_crash, the others terminated", _killed_rank_before_training, 143, "rank_crash", 1, "node1"),
    Case("rank_crash, quiet first", _quiet_before_the_others_errors, 1, "rank_crash", 3, "node2",
         "its heartbeat stopped first"),
    Case("hang, the watchdog ended it", _stopped_rank_the_watchdog_ended, 137, "hang", 2, "node2",
         "watchdog: no progress for 65 s, stale heartbeat"),
    Case("hang, seen before the others' errors", _stopped_rank_then_the_others_timed_out, 1, "hang", 1, "node1",
         "seen by the watchdog"),
    Case("node_failure, srun lost it", _node_srun_lost, 1, "node_failure", 3, "node2", "node2 is down"),
    Case("node_failure, sinfo down", _node_down_in_sinfo, 137, "node_failure", 2, "node2"),
    Case("node_failure, no answer", _crash_on_a_silent_node, 137, "node_failure", 3, "node2", "does not answer"),
    Case("app_error", _diverged, 1, "app_error", 2, "node2", "FloatingPointError: training loss is nan at step 4"),
    Case("app_error, no container", _container_did_not_start, 1, "app_error",
         says="pyxis: failed to create container filesystem for image: /img.sqsh; "
              "pyxis: [ERROR] No such file or directory: /img.sqsh"),
    Case("app_error, bad input", _bad_input, 2, "app_error", 0, "node1", "ValueError: --data_dir /nope"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_cause_from_the_trainers_records(tmp_path, case):
    ranks, slurm = Ranks(tmp_path), SlurmAnswers(**case.slurm)
    case.write(ranks, slurm)
    verdict = ranks.classify(case.status, slurm)
    assert (verdict.cause, verdict.fault_rank, verdict.fault_node) == (case.cause, case.rank, case.node), verdict
    assert case.says in (verdict.error if case.cause == "app_error" else verdict.detail), verdict
    assert verdict.cause in CAUSES


@pytest.fixture
def term_restored():
    """`end` ignores SIGTERM before it requeues (the requeue signals the batch script); not in pytest."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_the_same_crash_at_the_same_step_twice_is_an_app_error(tmp_path, capsys, term_restored):
    first, second = Ranks(tmp_path), Ranks(tmp_path, restart=1)
    slurm = SlurmAnswers()
    for ranks in (first, second):
        a = ranks.attempt(slurm)
        host.begin(a)
        _killed_rank(ranks, slurm)
        status = host.end(a, 137, None, None)
    rows = read_attempts(first.paths.attempts)
    assert [(r["attempt"], r["cause"], r["last_step"], r["action"]) for r in rows] == [
        (1, "rank_crash", 6, "requeue"), (2, "app_error", 6, "stop")]
    assert rows[1]["error"] == "rank 1 crashed at step 6 again: deterministic, not retried"
    assert status == 137 and slurm.calls == ["requeue", "exclude node1"]
    assert "app_error: rank 1 on node1: rank 1 crashed at step 6 again" in capsys.readouterr().err


@pytest.mark.parametrize("restarted", [False, True])
def test_an_attempt_whose_batch_script_was_killed_is_recorded_by_the_next(tmp_path, capsys, restarted):
    """Killed from outside (scancel, a requeue): `killed`. Its node lost and back before the next attempt
    (its slurmd restarted since): a node_failure there."""
    lost = Ranks(tmp_path)
    slurm = SlurmAnswers()
    host.begin(lost.attempt(slurm))
    started = json.loads((lost.model_dir / "health" / "attempt.json").read_text())["start"]
    for rank in range(4):
        lost.beat(rank, 10, 5, age_s=50 if rank == 2 else 2)
    if restarted:
        slurm.restarted = {"node2": started + 30}
    host.begin(Ranks(tmp_path, restart=1).attempt(slurm))
    row = read_attempts(lost.paths.attempts)[0]
    assert (row["attempt"], row["exit_status"], row["action"], row["last_step"]) == (1, None, "requeue", 5)
    if restarted:
        assert (row["cause"], row["fault_rank"], row["fault_node"]) == ("node_failure", 2, "node2")
        assert row["detail"].startswith("node2 was lost: its slurmd restarted during the attempt; rank 2")
    else:
        assert (row["cause"], row["fault_rank"], row["fault_node"]) == ("killed", None, None)
    assert "attempt 1 of job 77 ended without its record" in capsys.readouterr().err


def _ledger(ranks: Ranks, *causes: str) -> None:
    ranks.paths.root.mkdir(parents=True, exist_ok=True)
    ranks.paths.attempts.write_text("".join(json.dumps({"job_id": "77", "attempt": n, "cause": c, "last_step": n})
                                            + "\n" for n, c in enumerate(causes, 1)))


@pytest.mark.parametrize("before, write, status, requeued, says", [
    ((), _signalled, 75, True, "preempted: checkpointed on signal; requeue 1 of 3"),
    (("preempted",) * 3, _signalled, 75, False, "preempted: checkpointed on signal, but the limit of 3 requeues"),
    (("preempted",) * 3 + ("hang",), _killed_rank, 137, True, "; fault requeue 2 of 2"),
    (("hang", "preempted", "node_failure"), _killed_rank, 137, False, "; the limit of 2 fault requeues is reached"),
])
def test_each_group_of_causes_requeues_within_its_own_budget(tmp_path, capsys, term_restored, before, write, status,
                                                            requeued, says):
    ranks, slurm = Ranks(tmp_path, restart=len(before)), SlurmAnswers()
    _ledger(ranks, *before)
    a = ranks.attempt(slurm)
    host.begin(a)
    write(ranks, slurm)
    code = host.end(a, status, 10.5, 20.25)
    out = capsys.readouterr()
    row = read_attempts(ranks.paths.attempts)[-1]
    assert (row["attempt"], row["action"], row["step_start"], row["step_end"]) == (
        len(before) + 1, "requeue" if requeued else "stop", 10.5, 20.25)
    assert says in out.out + out.err
    assert code == (0 if requeued else status)
    fault = write is _killed_rank
    assert slurm.calls == (["requeue"] + (["exclude node1"] if fault else []) if requeued else [])
    if before == ("preempted",) * 3 + ("hang",):
        assert row["steps_replayed"] == 4 - 0  # the previous line's last step (4), resumed from 0


def test_no_node_is_excluded_when_the_partition_would_keep_too_few(tmp_path, capsys, term_restored):
    ranks, slurm = Ranks(tmp_path), SlurmAnswers()
    a = ranks.attempt(slurm)
    host.begin(a)
    slurm.down |= {"node3", "node4"}
    _killed_rank(ranks, slurm)
    assert host.end(a, 137, None, None) == 0
    assert slurm.calls == ["requeue"]
    assert "not excluding node1: partition debug would keep 1 usable node(s) for 2" in capsys.readouterr().err


def test_the_ledger_line_has_rank_0s_timeline_and_the_attempts_checkpoint(tmp_path, term_restored):
    ranks, slurm = Ranks(tmp_path), SlurmAnswers()
    ranks.paths.checkpoints.mkdir(parents=True)
    (ranks.paths.checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-12"\n'
                                                        'all_model_checkpoint_paths: "ckpt-12"\n')
    a = ranks.attempt(slurm)
    host.begin(a)
    for event in ("restored", "first_batch", "first_step"):
        ranks.beats[0].mark(event)
    _completed(ranks, slurm)
    assert host.end(a, 0, None, None) == 0
    row = read_attempts(ranks.paths.attempts)[-1]
    assert (row["cause"], row["resumed_from_step"], row["last_step"], row["error"]) == ("completed", 12, 20, None)
    assert set(row["timeline"]) == {"process_start", "restored", "first_batch", "first_step"}
    assert not (ranks.model_dir / "health" / "attempt.json").exists()


@pytest.mark.parametrize("finishing", [False, True])
def test_the_watchdog_ends_a_stalled_step_and_names_the_stopped_rank(tmp_path, finishing):
    """Ranks 0, 2 and 3 beat (their thread runs; their progress is stuck in a collective), rank 1 is
    stopped: its heartbeat is old. No progress: the grace (3 s) ends the step, naming rank 1."""
    ranks, slurm = Ranks(tmp_path), SlurmAnswers()
    a = ranks.attempt(slurm, "--stall-s=2", "--grace-s=3", "--poll-s=0.3")
    host.begin(a)
    ranks.beat(1, 40, 20, age_s=300)
    if finishing:
        ranks.stop(1, "completed")
    alive = [ranks.beats[r] for r in (0, 2, 3)]
    for beat in alive:
        beat.interval_s, beat.progress = 0.2, 40
        beat.set_step(20)
        beat.start()
    try:
        assert host.watchdog(a) == 0
    finally:
        for beat in alive:
            beat.stop()
    record = json.loads((ranks.model_dir / "health" / "hang.json").read_text())
    assert record["limit_s"] == 3 and record["stalled_s"] >= 3 and slurm.calls == ["end steps"]
    if finishing:  # a rank that wrote its stop record stopped on purpose: never named
        assert (record["how"], record["ranks"]) == ("lowest progress", [0, 2, 3])
    else:
        assert (record["how"], record["rank"], record["node"], record["global_step"]) == (
            "stale heartbeat", 1, "node1", 20)


def test_a_stale_rank_is_named_among_512(tmp_path):
    """64 DGX nodes of 8 ranks: one poll notes the one rank whose heartbeat went quiet, and the hang record and
    the verdict name it and its node (bench.watchdog_poll times the same poll)."""
    from bench.watchdog_poll import host_side, write_ranks

    model_dir = tmp_path / "model"
    write_ranks(model_dir, 512, stale_rank=317)
    a = host_side(model_dir, 512)
    a.slurm = SlurmAnswers()
    beats, stops = host.poll(a, int(time.time()))
    assert len(beats) == 512 and [row["rank"] for row in a.health.stale()] == [317]
    host.end_hung_step(a, beats, stops, int(time.time()), 910, 900)
    record = json.loads((model_dir / "health" / "hang.json").read_text())
    assert (record["how"], record["ranks"], record["node"]) == ("stale heartbeat", [317], "node40")
    verdict = Classifier(a, {}).classify(137, time.time())
    assert (verdict.cause, verdict.fault_rank, verdict.fault_node) == ("hang", 317, "node40")


def test_a_lost_attempt_past_the_fault_budget_starts_no_other(tmp_path, capsys):
    """The third lost node of a job whose budget is 2: recorded, and the next attempt does not start."""
    lost, slurm = Ranks(tmp_path, restart=2), SlurmAnswers(down=["node2"])
    _ledger(lost, "node_failure", "node_failure")
    host.begin(lost.attempt(slurm))
    lost.all_beat(10, 5)
    with pytest.raises(SystemExit) as stopped:
        host.begin(Ranks(tmp_path, restart=3).attempt(slurm))
    assert stopped.value.code == 1
    assert [r["cause"] for r in read_attempts(lost.paths.attempts)] == ["node_failure"] * 3
    assert "node_failure: the limit of 2 fault requeues is reached; not starting attempt 4" in capsys.readouterr().err
