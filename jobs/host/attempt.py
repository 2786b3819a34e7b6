"""Begin, watchdog and end of one attempt: `python3 <dir of this package> ...` (the batch script's calls).

    python3 DIR --model-dir MODEL_DIR --tasks-per-node N [options] begin
    python3 DIR ... watchdog &          # beside srun: ends a step that stopped progressing
    python3 DIR ... end STATUS --step-start T --step-end T
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .classify import Classifier
from .records import (CHECKPOINT_INDEX, HANG_RECORD, Attempt, Verdict, append_json, culprits, last_step, read_json,
                      read_lines, say, warn)
from .slurm import Slurm, node_is_up

# How long the requeued job may take to become pending before its ExcNodeList can be set.
EXCLUDE_TRIES = 20


def now_ms():
    return round(time.time(), 3)


def begin(a):
    """Before srun: record an attempt its batch script could not (killed from outside), empty health/,
    note the checkpoint step this attempt resumes from and the task logs' sizes (they are appended)."""
    os.makedirs(a.health.dir, exist_ok=True)
    if os.path.exists(a.health.path("attempt.json")):
        record_leftover(a)
    for name in os.listdir(a.health.dir):
        path = a.health.path(name)
        (shutil.rmtree if os.path.isdir(path) and not os.path.islink(path) else os.remove)(path)
    index = "\n".join(read_lines(os.path.join(a.args.model_dir, CHECKPOINT_INDEX)))
    resumed = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"$', index, re.M)
    sizes = {}
    for path in a.task_errs():
        try:
            sizes[path] = os.path.getsize(path)
        except OSError:
            continue
    state = {"job_id": a.job_id, "attempt": a.number, "start": now_ms(), "nodes": a.nodelist,
             "resumed": int(resumed.group(1)) if resumed else 0, "task_err_sizes": sizes}
    with open(a.health.path("attempt.json"), "w") as f:
        json.dump(state, f)
    if a.args.containers and a.number > 1:
        remove_containers(a)
    return 0


def record_leftover(a):
    """The previous attempt's batch script was killed before it recorded the attempt: record it now."""
    state = read_json(a.health.path("attempt.json")) or {}
    a.hosts = a.slurm.hostnames(state.get("nodes", ""))
    c = Classifier(a, {})
    start = state.get("start") or 0
    end = max([start] + [b.mtime for b in c.beats.values()])
    v = Verdict(last_step(c.beats, c.stops)).set(
        "killed", "its batch script was killed (scancel, a requeue from outside, a lost node)")
    node, why = c.down_node(), "is down or not responding"
    if not node:
        node, why = c.restarted_node(start), "was lost: its slurmd restarted during the attempt"
    if node:
        c.lost_node(v, node, why, end)
    elif c.signalled:
        v.set("preempted", "checkpointed on a signal; then its batch script was killed")
    a.record(v, state.get("attempt"), state.get("nodes"), start, end, state.get("resumed") or 0, None, "requeue")
    warn("attempt {} of job {} ended without its record: {}{}".format(
        state.get("attempt"), state.get("job_id"), v.cause, " ({})".format(v.fault_node) if v.fault_node else ""))
    budget = a.args.budgets.get(v.cause)
    if budget and a.used(v.cause) > budget[1] + 1:
        warn("{}: the limit of {} {}requeues is reached; not starting attempt {}".format(
            v.cause, budget[1], "fault " if budget[2] else "", a.number))
        sys.exit(1)


def remove_containers(a):
    """A requeued job keeps its id, and Pyxis names a step's container after it (pyxis_JOB.STEP): one an
    earlier attempt left (its slurmstepd died with its node) would fail this attempt's step. On every
    node of the attempt, outside any container, remove them."""
    out = a.slurm.run("srun", "--ntasks-per-node=1", "--ntasks={}".format(a.num_nodes), "--mpi=none",
                      "--kill-on-bad-exit=0", sys.executable, os.path.dirname(os.path.abspath(__file__)), "--model-dir",
                      a.args.model_dir, "--tasks-per-node", "1", "remove-containers", timeout=120)
    if out is None:
        warn("could not look for containers left by earlier attempts on " + a.nodelist)
    else:
        print(out, end="", flush=True)


def remove_containers_here(job_id, node):
    listed = subprocess.run(["enroot", "list"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            universal_newlines=True).stdout
    for name in listed.split():
        if re.match(r"pyxis_{}[._]".format(re.escape(job_id)), name):
            gone = subprocess.run(["enroot", "remove", "-f", name], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0
            (say if gone else warn)("{}: {} {}, left by an earlier attempt".format(
                node, "removed" if gone else "could not remove", name))
    return 0


def watchdog(a):
    """Beside srun (killed when srun returns): note ranks whose heartbeat goes stale (health/stale, for
    the classifier), and end the step when no rank's progress advanced for the stall timeout (the grace
    before the first progress, and after a rank completed: rank 0 may still export a SavedModel)."""
    if a.args.stall_s <= 0:
        return 0
    since, best, progressed = int(time.time()), -1, False
    while True:
        time.sleep(a.args.poll_s)
        now = int(time.time())
        beats, stops = poll(a, now)
        top = max([b.progress for b in beats.values()] + [-1])
        if top > best:
            if best >= 0:
                progressed, since = True, now
            best = top
        finishing = any(r.get("reason") == "completed" for r in stops.values())
        limit = a.args.stall_s if progressed and not finishing else a.args.grace_s
        if now - since >= limit:
            return end_hung_step(a, beats, stops, now, now - since, limit)


def poll(a, now):
    """One look at every rank: its heartbeat and stop record; the ranks gone quiet are noted."""
    beats, stops = a.health.heartbeats(), a.health.stops()
    mark_stale(a, beats, stops, now)
    return beats, stops


def mark_stale(a, beats, stops, now):
    """Slurm's SIGCONT and SIGTERM at the end of the step revive a stopped rank, and its heartbeat: the
    classifier learns from here which ranks had gone quiet while the others still beat."""
    how, ranks, _ = culprits(beats, now, a.n_ranks, stops)
    if how != "stale heartbeat":
        return
    seen = {r["rank"] for r in a.health.stale()}
    for rank in ranks:
        if rank not in seen:
            append_json(a.health.path("stale"), {"rank": rank, "heartbeat": beats[rank].mtime, "seen": now})


def end_hung_step(a, beats, stops, now, stalled_s, limit_s):
    """Write the hang record, say which ranks stopped first, end the job step."""
    how, ranks, detail = culprits(beats, now, a.n_ranks, stops)
    nodes = [a.node_of(r) or "" for r in ranks]
    record = {"cause": "hang", "time": now, "stalled_s": stalled_s, "limit_s": limit_s, "how": how,
              "rank": ranks[0] if ranks else None, "node": nodes[0] if nodes else "", "ranks": ranks,
              "nodes": nodes, "global_step": max([b.step for b in beats.values()] + [-1]), "detail": detail}
    with open(a.health.path(HANG_RECORD), "w") as f:
        json.dump(record, f)
    warn("hang: no progress for {} s (limit {} s); stopped first: rank(s) {} on {} ({}{}); ending the job step".format(
        stalled_s, limit_s, ",".join(map(str, ranks)) or "?", ", ".join(nodes), how,
        "; rank {}: {}".format(ranks[0], detail) if ranks else ""))
    a.slurm.end_steps()
    return 0


def end(a, status, step_start, step_end):
    """After srun: classify the attempt, append its ledger line, then requeue or end the job."""
    state = read_json(a.health.path("attempt.json")) or {}
    end_time = now_ms()
    v = Classifier(a, state.get("task_err_sizes") or {}).classify(status, end_time)
    _, budget, fault = a.args.budgets.get(v.cause, ((), 0, True))
    used = a.used(v.cause) if budget > 0 else 0
    action = "requeue" if 0 < used <= budget else "stop"
    a.record(v, a.number, a.nodelist, state.get("start"), end_time, state.get("resumed") or 0, status, action,
             step_start, step_end)
    if state:
        os.remove(a.health.path("attempt.json"))
    where = " rank {}{}".format(v.fault_rank, " on " + v.fault_node if v.fault_node else "") \
        if v.fault_rank is not None else ""
    failed = status or 1
    at = " at step {}".format(v.last_step) if v.last_step is not None else ""
    if v.cause == "completed":
        say("completed: attempt {}{}".format(a.number, " reached step {}".format(v.last_step) if at else ""))
        return 0
    if v.cause == "app_error":
        warn("app_error{}: {}; not requeued".format(":" + where if where else "", v.error or
                                                      "exit status {}".format(status)))
        return failed
    signal_cause = not fault
    what = "{}: checkpointed on signal".format(v.cause) if signal_cause else "{}{}{} ({})".format(
        v.cause, at, ":" + where if where else "", v.detail)
    kind = "" if signal_cause else "fault "
    if action == "requeue":
        say("{}; {}requeue {} of {}".format(what, kind, used, budget))
        return requeue(a, status, None if signal_cause else v.fault_node)
    warn("{}{} the limit of {} {}requeues is reached".format(what, ", but" if signal_cause else ";", budget, kind))
    return status if signal_cause else failed


def requeue(a, status, node=None):
    """Requeue this job, then keep `node` out of its next attempts."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue signals this script too: stay to exclude
    if not a.slurm.requeue():
        warn("scontrol requeue {} failed".format(a.job_id))
        return status or 1
    if node:
        exclude(a, node)
    return 0


def exclude(a, node):
    """Add `node` to the pending job's ExcNodeList while the partition keeps enough usable nodes."""
    old = a.slurm.excluded()
    new = old + "," + node if old else node
    out = set(a.slurm.hostnames(new))
    states = a.slurm.node_states(partition=a.env.get("SLURM_JOB_PARTITION", ""))
    usable = sum(1 for n, s in states.items() if n not in out and node_is_up(s))
    if usable < a.num_nodes:
        warn("not excluding {}: partition {} would keep {} usable node(s) for {}".format(
            node, a.env.get("SLURM_JOB_PARTITION", "?"), usable, a.num_nodes))
        return
    for _ in range(EXCLUDE_TRIES):
        if a.slurm.exclude(new):
            say("{} excluded from the next attempts (ExcNodeList={})".format(node, new))
            return
        time.sleep(1)
    warn("could not exclude {} (scontrol update JobId={} ExcNodeList={} failed)".format(node, a.job_id, new))


def budget_arg(fault):
    def parse(text):
        causes, sep, count = text.rpartition("=")
        if not sep or not causes or not count.isdigit():
            raise argparse.ArgumentTypeError("expected CAUSE[,CAUSE...]=N, got {!r}".format(text))
        return tuple(causes.split(",")), int(count), fault
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="attempt.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="the trainer's; health/ in it, the ledger beside it")
    parser.add_argument("--tasks-per-node", type=int, required=True)
    parser.add_argument("--stall-s", type=int, default=0, help="end a step without progress this long (0: never)")
    parser.add_argument("--grace-s", type=int, default=0, help="... before the first progress, and while finishing")
    parser.add_argument("--poll-s", type=float, default=5.0)
    parser.add_argument("--signal-delay-s", type=int, default=0, help="sbatch --signal's @delay")
    parser.add_argument("--task-error", default="", help="srun's --error pattern (%%j, %%t), if not srun's stderr")
    parser.add_argument("--containers", action="store_true", help="ranks run in Pyxis containers")
    parser.add_argument("--requeue", type=budget_arg(False), action="append", default=[], metavar="CAUSES=N",
                        help="causes requeued while the job has had at most N of them (a checkpoint on a signal)")
    parser.add_argument("--fault-requeue", type=budget_arg(True), action="append", default=[], metavar="CAUSES=N",
                        help="the same for faults: the requeued job leaves the node at fault out")
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    commands.add_parser("begin")
    commands.add_parser("watchdog")
    ending = commands.add_parser("end")
    ending.add_argument("status", type=int, help="srun's exit status")
    ending.add_argument("--step-start", type=float)
    ending.add_argument("--step-end", type=float)
    commands.add_parser("remove-containers", help="(run by begin on every node)")
    args = parser.parse_args(argv)
    args.budgets = {cause: (group, n, fault) for group, n, fault in args.requeue + args.fault_requeue
                    for cause in group}
    return args


def main(argv=None, env=None):
    args = parse_args(argv)
    env = os.environ if env is None else env
    if args.command == "remove-containers":
        return remove_containers_here(env.get("SLURM_JOB_ID", ""), env.get("SLURMD_NODENAME", ""))
    a = Attempt(args, Slurm(env.get("SLURM_JOB_ID", "")), env)
    if args.command == "begin":
        return begin(a)
    a.hosts = a.slurm.hostnames(a.nodelist)
    if args.command == "watchdog":
        return watchdog(a)
    return end(a, args.status, args.step_start, args.step_end)


if __name__ == "__main__":
    sys.exit(main())
