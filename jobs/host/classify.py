"""Why an attempt ended: the ranks' health files, srun's status and stderr, and Slurm's view of the nodes."""
import re
import time

from .records import (EXIT_BAD_INPUT, EXIT_REQUEUE, HANG_RECORD, Verdict, culprits, last_step, read_json,
                      read_lines)
from .slurm import node_is_up

# The time-limit signal comes up to a minute early (Slurm's slack), then the trainer checkpoints.
SIGNAL_MARGIN_S = 120
START_ERROR = re.compile(r"^pyxis: .*(\[ERROR\]|failed to|couldn.t|not started)|An error occurred in MPI_Init|"
                         r"session_dir\.c|pmix_init failed")
SRUN_TASK_FAILED = re.compile(r"^srun: error: [^:]+: tasks? (\d+)")
SRUN_NODE_FAILURE = re.compile(r"^srun: error: Node failure on (\S+)")


class Classifier:
    """Why the attempt ended, from srun's status, the ranks' health files, srun's stderr and Slurm.

    How an attempt is classified: the first rule that applies (the rank that stopped first decides):
    1. status 0: completed; the ranks did not start (Pyxis, enroot, MPI_Init or PMIx lines): app_error;
    2. a `signal` stop record (or status 75), unless srun reports that a task without one failed first
       (srun --kill-on-bad-exit then ends the others with SIGTERM, which they take for a preemption):
       preempted, or time_limit when less than the signal delay + SIGNAL_MARGIN_S is left;
    3. a node srun reports lost, or sinfo down or not responding: node_failure;
    4. the watchdog's hang record (app_error if an app_error record is older), else a rank the watchdog
       saw go stale before the first app_error record: hang (the others' collectives time out around it);
    5. a rank without a stop record whose heartbeat went quiet before the first app_error record (or the
       end of srun): it crashed, the others' errors followed;
    6. the first task srun reports failed: app_error when it wrote an app_error record, else a crash;
    7. any app_error record, or exit status 2 (bad input): app_error;
    8. otherwise the rank whose heartbeat went quiet first crashed.
    A crash or hang on a node that does not answer is a node_failure; a rank_crash at the previous
    attempt's rank_crash step is an app_error.
    """

    def __init__(self, attempt, start_sizes):
        self.a, self.sizes = attempt, start_sizes
        self.beats, self.stops = attempt.health.heartbeats(), attempt.health.stops()
        self.signalled = any(r.get("reason") == "signal" for r in self.stops.values())

    def start_error(self):
        """This attempt's lines saying the ranks did not start (Pyxis's and enroot's, MPI_Init's, PMIx's)."""
        lines = []
        for path in self.a.task_errs():
            try:
                with open(path, "rb") as f:
                    f.seek(self.sizes.get(path, 0))
                    lines += f.read().decode(errors="replace").splitlines()
            except OSError:
                continue
        lines += read_lines(self.a.health.path("srun.err"))
        found = []
        for line in lines:
            line = re.sub(r"pyxis: +", "pyxis: ", re.sub(r"^(slurmstepd[^ ]*: )?(error: )?", "", line))
            if START_ERROR.search(line) and "failed with error code" not in line and line not in found:
                found.append(line)
        return "; ".join(found[:3])

    def node_answers(self, node):
        state = self.a.slurm.node_states([node]).get(node, "")
        return node_is_up(state) and self.a.slurm.node_runs_a_task(node)

    def down_node(self):
        """The first node of the attempt that sinfo reports down, failing or not responding."""
        states = self.a.slurm.node_states(self.a.hosts) if self.a.hosts else {}
        return next((n for n in self.a.hosts if n in states and not node_is_up(states[n])
                     and not states[n].startswith("drain")), None)

    def restarted_node(self, since):
        """The first node of the attempt whose slurmd started after `since`: a node lost and back before
        this attempt could start (as when the job cannot run without it) is no longer down."""
        starts = self.a.slurm.slurmd_starts(self.a.hosts) if self.a.hosts else {}
        return next((n for n in self.a.hosts if starts.get(n, 0) > int(since)), None)

    def check_node(self, v):
        """A fault on a node that does not answer is a node_failure."""
        if v.fault_node and not self.node_answers(v.fault_node):
            v.cause, v.detail = "node_failure", "{}; {} does not answer".format(v.detail, v.fault_node)
        return v

    def crash(self, v, rank, detail):
        """`rank` crashed; a node_failure when its node does not answer; an app_error when the previous
        attempt crashed at the same step (deterministic)."""
        self.check_node(v.set("rank_crash", detail, rank, self.a.node_of(rank)))
        rows = self.a.ledger_rows()
        if v.cause == "rank_crash" and rows and rows[-1].get("cause") == "rank_crash" \
                and rows[-1].get("last_step") == v.last_step:
            v.cause = "app_error"
            v.error = "rank {} crashed at step {} again: deterministic, not retried".format(
                "?" if rank is None else rank, "?" if v.last_step is None else v.last_step)
        return v

    def app_error(self, v, rank):
        return v.set("app_error", "rank {} stopped on an error".format(rank), rank, self.a.node_of(rank),
                     self.stops.get(rank, {}).get("error") or "")

    def lost_node(self, v, node, why, end, rank=None):
        """The attempt lost `node`; the rank at fault is `rank` when it ran there (srun saw it fail first),
        else the rank there whose heartbeat went quiet first."""
        v.set("node_failure", "{} {}".format(node, why), None, node)
        _, ranks, _ = culprits(self.beats, end, self.a.n_ranks, self.stops, stale_s=-1)
        for r in ([rank] if rank is not None else []) + ranks:
            if self.a.node_of(r) == node:
                v.fault_rank, v.detail = r, "{}; rank {} there stopped first".format(v.detail, r)
                break
        return v

    def signal_cause(self, v):
        left = self.a.slurm.time_left_s()
        v.set("preempted", "checkpointed on the signal" + ("" if left is None else
                                                           " with {} s of the time limit left".format(left)))
        if left is not None and left <= self.a.args.signal_delay_s + SIGNAL_MARGIN_S:
            v.cause = "time_limit"
        return v

    def classify(self, status, end):
        """The cause, rank and node at fault, and how it was decided (the rules: the class docstring)."""
        v = Verdict(last_step(self.beats, self.stops))
        if status == 0:
            return v.set("completed", "srun exited 0")
        error = self.start_error()
        if error:
            return v.set("app_error", "the ranks did not start", error=error)
        errors = sorted((int(r.get("time") or 0), rank) for rank, r in self.stops.items()
                        if r.get("reason") == "app_error")
        app_time, app_rank = errors[0] if errors else (None, None)
        srun_err = read_lines(self.a.health.path("srun.err"))
        failed = next((SRUN_TASK_FAILED.match(line) for line in srun_err if SRUN_TASK_FAILED.match(line)), None)
        first = int(failed.group(1)) if failed else None
        why = self.stops.get(first, {}).get("reason")
        if self.signalled or status == EXIT_REQUEUE:
            if first is None or why == "signal" or failed.string.endswith("exit code {}".format(EXIT_REQUEUE)):
                return self.signal_cause(v)
        lost = next((m.group(1) for m in map(SRUN_NODE_FAILURE.match, srun_err) if m), None) or self.down_node()
        if lost:
            return self.lost_node(v, lost, "is down or not responding", end, first)
        hang = read_json(self.a.health.path(HANG_RECORD))
        if hang:
            if app_time is not None and app_time <= hang["time"]:
                return self.app_error(v, app_rank)
            detail = "watchdog: no progress for {} s, {}: {}".format(hang["stalled_s"], hang["how"], hang["detail"])
            return self.check_node(v.set("hang", detail, hang["rank"], hang["node"] or None))
        stale = self.a.health.stale()
        if stale and (app_time is None or stale[0]["seen"] <= app_time):
            rank = stale[0]["rank"]
            detail = "its heartbeat stopped at {}, seen by the watchdog at {}".format(
                time.strftime("%H:%M:%S", time.localtime(stale[0]["heartbeat"])),
                time.strftime("%H:%M:%S", time.localtime(stale[0]["seen"])))
            return self.check_node(v.set("hang", detail, rank, self.a.node_of(rank)))
        how, ranks, beat = culprits(self.beats, end if app_time is None else app_time, self.a.n_ranks, self.stops)
        if how == "stale heartbeat":
            return self.crash(v, ranks[0], "its heartbeat stopped first ({} at the {})".format(
                beat, "end" if app_time is None else "first error"))
        if why == "app_error":
            return self.app_error(v, first)
        if first is not None and why is None:
            return self.crash(v, first, "srun: " + failed.string[len("srun: error: "):])
        if app_rank is not None:
            return self.app_error(v, app_rank)
        if status == EXIT_BAD_INPUT:
            return v.set("app_error", error="exit status {}: bad input (see the task logs)".format(EXIT_BAD_INPUT))
        how, ranks, beat = culprits(self.beats, end, self.a.n_ranks, self.stops, stale_s=-1)
        return self.crash(v, ranks[0] if ranks else None, "no stop record; " + (
            "its heartbeat stopped first ({} at the end)".format(beat) if ranks else ""))
