"""What the ranks and the batch script write under <model_dir>/health, and the attempt ledger beside it.

The ranks' side of these files is `effnet.core.health`, the ledger line `effnet.core.ledger`'s;
tests/test_host.py pins the names here to theirs (this package imports nothing of the project).
"""
import glob
import json
import os
import re
import sys

HEALTH_DIRNAME, HEARTBEAT_PREFIX, STOP_PREFIX = "health", "heartbeat.rank", "stop.rank"
TIMELINE_FILENAME, HANG_RECORD, ATTEMPTS_FILENAME = "timeline.json", "hang.json", "attempts.jsonl"
CHECKPOINT_INDEX = os.path.join("checkpoints", "checkpoint")
EXIT_REQUEUE, EXIT_BAD_INPUT = 75, 2
# The trainer rewrites its heartbeat every ~5 s: four missed beats mean the process is not running.
HEARTBEAT_STALE_S = 20
LEDGER_KEYS = ("job_id", "attempt", "nodes", "start", "end", "cause", "resumed_from_step", "last_step",
               "steps_replayed", "fault_rank", "fault_node", "exit_status", "action", "error", "step_start",
               "step_end", "timeline", "detail")


def say(text):
    print("effnet-slurm: " + text, flush=True)


def warn(text):
    print("effnet-slurm: " + text, file=sys.stderr, flush=True)


def read_json(path):
    """The JSON object in `path`, or None (missing, half-written or not an object)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def append_json(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


class Beat:
    """One heartbeat: "<progress> <global_step> <host> <pid> <time>" and the file's mtime."""

    def __init__(self, rank, progress, step, host, mtime):
        self.rank, self.progress, self.step, self.host, self.mtime = rank, progress, step, host, mtime


class Health:
    """The files of one attempt under <model_dir>/health, read (the ranks' records) and written (ours)."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self.dir = os.path.join(model_dir, HEALTH_DIRNAME)

    def path(self, name):
        return os.path.join(self.dir, name)

    def heartbeats(self):
        beats = {}
        prefix = self.path(HEARTBEAT_PREFIX)
        for path in glob.glob(prefix + "*"):
            rank = path[len(prefix):]
            if not rank.isdigit():
                continue
            try:
                with open(path) as f:
                    words = f.readline().split()
                mtime = int(os.stat(path).st_mtime)
                beats[int(rank)] = Beat(int(rank), int(words[0]), int(words[1]), words[2], mtime)
            except (OSError, ValueError, IndexError):
                continue
        return beats

    def stops(self):
        """rank -> its stop record."""
        records = (read_json(p) for p in glob.glob(self.path(STOP_PREFIX + "*.json")))
        return {r["rank"]: r for r in records if r and isinstance(r.get("rank"), int)}

    def stale(self):
        """The ranks the watchdog saw go quiet: [{"rank", "heartbeat", "seen"}], oldest heartbeat first."""
        rows = [json.loads(line) for line in read_lines(self.path("stale")) if line.startswith("{")]
        return sorted(rows, key=lambda r: r["heartbeat"])



def last_step(beats, stops):
    """The highest global step of the heartbeats and stop records; None when none is known."""
    steps = [b.step for b in beats.values()] + [r.get("global_step") for r in stops.values()]
    steps = [s for s in steps if isinstance(s, int) and s >= 0]
    return max(steps) if steps else None


def culprits(beats, now, n_ranks, skip=(), stale_s=HEARTBEAT_STALE_S):
    """(how, ranks, detail of the first): the ranks that stopped first, of those not in `skip`: stale
    heartbeats (oldest first), else ranks without one, else those of the lowest progress."""
    live = {r: b for r, b in beats.items() if r not in skip}
    ranks = sorted((r for r, b in live.items() if now - b.mtime > stale_s), key=lambda r: (live[r].mtime, r))
    how = "stale heartbeat"
    if not ranks:
        how, ranks = "no heartbeat", [r for r in range(n_ranks) if r not in live and r not in skip]
    if not ranks and live:
        low = min(b.progress for b in live.values())
        how, ranks = "lowest progress", sorted(r for r, b in live.items() if b.progress == low)
    if not ranks:
        return "", [], ""
    first = live.get(ranks[0])
    detail = "no heartbeat" if first is None else "heartbeat {} s old, progress {}, step {}".format(
        int(now) - first.mtime, first.progress, first.step)
    return how, ranks, detail


class Verdict:
    """Why an attempt ended: a cause of effnet.core.ledger.CAUSES, the rank and node at fault, in words."""

    def __init__(self, last_step=None):
        self.cause, self.fault_rank, self.fault_node, self.error, self.detail = "", None, None, "", ""
        self.last_step = last_step

    def set(self, cause, detail="", rank=None, node=None, error=""):
        self.cause, self.detail, self.fault_rank, self.fault_node, self.error = cause, detail, rank, node, error
        return self

    def __repr__(self):
        return "Verdict({})".format(self.__dict__)


class Attempt:
    """One attempt as the host sees it: its job, its nodes, the ranks' health files, the ledger."""

    def __init__(self, args, slurm, env):
        self.args, self.slurm, self.env = args, slurm, env
        self.job_id = env.get("SLURM_JOB_ID", "")
        self.number = int(env.get("SLURM_RESTART_COUNT") or 0) + 1
        self.nodelist = env.get("SLURM_JOB_NODELIST", "")
        self.num_nodes = int(env.get("SLURM_JOB_NUM_NODES") or 1)
        self.n_ranks = self.num_nodes * args.tasks_per_node
        self.health = Health(args.model_dir)
        self.ledger = os.path.join(os.path.dirname(os.path.abspath(args.model_dir)), ATTEMPTS_FILENAME)
        self.hosts = []

    def node_of(self, rank):
        index = rank // self.args.tasks_per_node if rank is not None else len(self.hosts)
        return self.hosts[index] if index < len(self.hosts) else None

    def task_errs(self):
        """The job's task error logs (srun's --error pattern: %j this job, %t any task)."""
        pattern = self.args.task_error
        if not pattern:
            return []
        parts = re.split(r"(%j|%t)", pattern)
        return sorted(glob.glob("".join({"%j": self.job_id, "%t": "*"}.get(p, glob.escape(p)) for p in parts)))

    def ledger_rows(self):
        rows = (json.loads(line) for line in read_lines(self.ledger) if line.startswith("{"))
        return [r for r in rows if isinstance(r, dict)]

    def used(self, cause):
        """How many attempts of this job the ledger holds in `cause`'s budget group, this one included."""
        group = self.args.budgets[cause][0]
        return 1 + sum(1 for r in self.ledger_rows() if r.get("job_id") == self.job_id and r.get("cause") in group)

    def record(self, verdict, attempt, nodes, start, end, resumed, status, action, step_start=None, step_end=None):
        rows = self.ledger_rows()
        prev = rows[-1].get("last_step") if rows else None
        replayed = prev - resumed if isinstance(prev, int) and prev > resumed else 0
        row = dict(zip(LEDGER_KEYS, (
            self.job_id, attempt, nodes, start, end, verdict.cause, resumed, verdict.last_step, replayed,
            verdict.fault_rank, verdict.fault_node, status, action, verdict.error or None, step_start, step_end,
            read_json(self.health.path(TIMELINE_FILENAME)), verdict.detail)))
        append_json(self.ledger, row)
