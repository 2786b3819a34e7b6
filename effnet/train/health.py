"""This rank's side of `effnet.core.health`: a heartbeat while it works, a stop record when it stops.

The batch script's watchdog reads the heartbeat's mtime (is the process alive?) and its progress
(is it getting work done?); its classifier reads the stop records to tell a requeue after a
signal, a finished run and a bug (which no retry fixes) from a crash that left no record.
Nothing here touches TensorFlow, so the CLI can report an error from before TensorFlow loads, and
the heartbeat cannot change training numerics or the data order.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from effnet.core.health import TIMELINE_EVENTS, HealthFiles, StopReason, heartbeat_line, stop_record
from effnet.core.paths import write_atomically

T = TypeVar("T")
HEARTBEAT_INTERVAL_S = 5.0
ERROR_LINE_CHARS = 300


class Heartbeat:
    """Rewrites `health/heartbeat.rank<N>` every `interval_s` from a daemon thread.

    The main thread only bumps counters (`advance`, `set_step`), so a beat never waits for it:
    a rank stuck in a collective keeps beating with frozen progress, which is what tells a hang
    from a dead process."""

    def __init__(self, model_dir: str | Path, rank: int, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.files = HealthFiles(Path(model_dir))
        self.rank = rank
        # Slurm's node name where there is one: nodes that share a host (or a container's) stay apart.
        self.host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.interval_s = interval_s
        self.progress = 0
        self.global_step: int | None = None
        self.timeline: dict[str, float] = {"process_start": process_start_time()}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def advance(self, count: int = 1) -> None:
        """One more unit of work: a train step, an eval batch or a checkpoint save."""
        self.progress += count

    def set_step(self, global_step: int) -> None:
        self.global_step = global_step

    def mark(self, event: str, at: float | None = None) -> None:
        """Note when `event` (one of TIMELINE_EVENTS) happened; rank 0 rewrites `health/timeline.json`."""
        if event not in TIMELINE_EVENTS:
            raise ValueError(f"unknown timeline event {event!r}")
        self.timeline[event] = round(time.time() if at is None else at, 3)
        if self.rank != 0:
            return
        try:
            write_atomically(self.files.timeline, json.dumps(self.timeline) + "\n")
        except OSError:
            pass

    def counting(self, batches: Iterable[T]) -> Iterator[T]:
        """`batches` unchanged, advancing once per batch consumed (eval passes)."""
        for batch in batches:
            yield batch
            self.advance()

    def beat(self) -> None:
        """Write the line now; a failed write (a full disk, say) is retried at the next beat."""
        step = -1 if self.global_step is None else self.global_step
        try:
            write_atomically(self.files.heartbeat(self.rank), heartbeat_line(self.progress, step, self.host, os.getpid()))
        except OSError:
            pass

    def start(self) -> "Heartbeat":
        # A stop record from an earlier run in this model_dir (one not started by the batch script,
        # which empties health/) would speak for this run.
        self.files.stop(self.rank).unlink(missing_ok=True)
        self.mark("trainer_start")
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-rank{self.rank}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        """Stop beating, after a last beat with the final progress (the thread is joined first: one writer)."""
        if self._thread is None:
            return
        self._stopped.set()
        self._thread.join()
        self._thread = None
        self.beat()


def process_start_time() -> float:
    """When this process started (Linux /proc), so the timeline counts interpreter start and imports too.

    Its age from /proc/uptime (hundredths), not the boot time in /proc/stat (whole seconds): the restart
    phase before it, srun's start to the process (a container's start under Pyxis), is often under one."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK")), 3)
    except (OSError, ValueError, IndexError):
        return round(time.time(), 3)


def write_stop(heartbeat: Heartbeat, reason: StopReason, **extra) -> None:
    """Write this rank's stop record, at the heartbeat's last global step.

    A failed write is reported on stderr, never raised: it must not hide why the rank stopped."""
    path = heartbeat.files.stop(heartbeat.rank)
    try:
        write_atomically(path, stop_record(reason, heartbeat.rank, heartbeat.host, heartbeat.global_step, **extra))
    except OSError as err:
        print(f"effnet: warning: could not write {path}: {err}", file=sys.stderr)


def error_line(err: BaseException) -> str:
    """'ExcType: message' on one line, cut to ERROR_LINE_CHARS (what the batch script shows)."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= ERROR_LINE_CHARS else text[:ERROR_LINE_CHARS - 3] + "..."


def write_app_error(heartbeat: Heartbeat, err: BaseException) -> None:
    write_stop(heartbeat, "app_error", error=error_line(err))
