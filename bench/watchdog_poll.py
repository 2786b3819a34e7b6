"""P7: the cost of one watchdog poll over every rank's heartbeat, at 8, 64 and 512 ranks (1, 8, 64 DGX nodes).

    python -m bench.watchdog_poll [--rounds N] [--dir DIR] [--json F]

The watchdog (jobs/host) reads every rank's heartbeat and stop record on each poll, every 5 s. The
heartbeats here are written by the trainer's own writer (effnet.train.health.Heartbeat), 8 ranks a
node, one rank of the last node stale; a poll is the watchdog's own `poll` (read everything, note the
stale rank). `--dir` puts the files on the filesystem to measure (a shared one, as a job's model_dir
is; default: a temporary directory). Reported: the median poll in ms per size, the cost per rank of
the largest against the smallest (linear growth: 1.0 or less), and 512 ranks' poll as a share of the
poll interval.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from effnet.train.health import Heartbeat
from jobs.host import attempt as host

from . import report_figures

SIZES = (8, 64, 512)
TASKS_PER_NODE = 8
POLL_INTERVAL_S = 5.0  # the watchdog's interval on the DGX profiles (jobs.render: min(5, stall_timeout_s // 8))


def write_ranks(model_dir: Path, ranks: int, stale_rank: int) -> None:
    """Every rank's heartbeat as the trainer writes it; `stale_rank`'s last beat was 5 minutes ago."""
    for rank in range(ranks):
        beat = Heartbeat(model_dir, rank)
        beat.host = f"node{rank // TASKS_PER_NODE + 1}"
        beat.progress = 1000
        beat.set_step(500)
        beat.beat()
    old = time.time() - 300
    os.utime(Heartbeat(model_dir, stale_rank).files.heartbeat(stale_rank), (old, old))


def host_side(model_dir: Path, ranks: int) -> host.Attempt:
    args = host.parse_args(["--model-dir", str(model_dir), f"--tasks-per-node={TASKS_PER_NODE}", "--stall-s=900",
                            "--grace-s=1800", "watchdog"])
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": str(ranks // TASKS_PER_NODE)}
    a = host.Attempt(args, None, env)
    a.hosts = [f"node{n + 1}" for n in range(ranks // TASKS_PER_NODE)]
    return a


def median_poll_ms(model_dir: Path, ranks: int, rounds: int) -> float:
    write_ranks(model_dir, ranks, stale_rank=ranks - 3)
    a = host_side(model_dir, ranks)
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        beats, _ = host.poll(a, int(time.time()))
        seconds.append(time.perf_counter() - started)
        if len(beats) != ranks:
            raise RuntimeError(f"bench.watchdog_poll: a poll read {len(beats)} heartbeats of {ranks}")
    stale = [row["rank"] for row in a.health.stale()]
    if stale != [ranks - 3]:
        raise RuntimeError(f"bench.watchdog_poll: the watchdog noted ranks {stale} stale, not {ranks - 3}")
    return 1000 * statistics.median(seconds)


def measure(root: Path, rounds: int) -> dict:
    ms = {n: median_poll_ms(root / f"{n}-ranks" / "model", n, rounds) for n in SIZES}
    small, large = SIZES[0], SIZES[-1]
    return {
        **{f"P7 ms per watchdog poll, {n} ranks": ms[n] for n in SIZES},
        f"P7 cost per rank, {large} ranks / {small} ranks (linear: <= 1.0)": (ms[large] / large) / (ms[small] / small),
        f"P7 one poll at {large} ranks, % of the {POLL_INTERVAL_S:g} s interval": 100 * ms[large] / 1000 / POLL_INTERVAL_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watchdog_poll", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--dir", type=Path, help="where to write the heartbeats (default: a temporary directory)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        figures = measure(Path(tmp), args.rounds)
    report_figures(figures, args.json, digits=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
