"""How a running attempt tells the batch script it is alive, and why it stopped.

The trainer writes these files under its model_dir; the batch script's host side (`jobs.host`,
run with the host's python3 beside the containers) reads them with `json` and a split, under the
same names (a test pins them).

    <model_dir>/health/heartbeat.rank<N>   one line, rewritten every few seconds by a thread of rank N:
                                           "<progress> <global_step> <host> <pid> <unix time>"
                                           progress counts train steps, eval batches and saves; the
                                           file's mtime says the process is alive, progress that it
                                           is getting work done (global_step is -1 until known)
    <model_dir>/health/stop.rank<N>.json   written once when rank N stops on purpose or on an error:
                                           {"reason": "signal"|"completed"|"app_error", "rank": N,
                                            "host": ..., "global_step": N|null, "time": unix, ...}
                                           signal: "signal" (its name; null on a rank that only
                                           heard of it through the others) and "checkpoint" (the
                                           prefix written; null when the rank exited before the
                                           trainer listened, so nothing new was written);
                                           app_error: "error", "ExcType: message" on one line
    <model_dir>/health/timeline.json       rank 0's restart timeline, one JSON object rewritten as it grows:
                                           unix times of TIMELINE_EVENTS (process_start, trainer_start,
                                           restored, first_batch, first_step; signal and stop_record
                                           when a checkpoint signal stops it); the batch script copies it into the
                                           attempt's ledger line (effnet.core.ledger.restart_phases)

The batch script empties `health/` before each attempt, so what it finds there after srun
belongs to that attempt.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

HEALTH_DIRNAME = "health"
HEARTBEAT_PREFIX = "heartbeat.rank"
STOP_PREFIX = "stop.rank"
TIMELINE_FILENAME = "timeline.json"
# In the order an attempt meets them: the rank's process starts; TensorFlow and Horovod are up and the
# trainer is being built; the checkpoint is restored; the first step is done; a checkpoint signal
# arrives (or rank 0 learns of it from the others); every record of the stop is written.
TIMELINE_EVENTS = ("process_start", "trainer_start", "restored", "first_batch", "first_step", "signal", "stop_record")

StopReason = Literal["signal", "completed", "app_error"]
# Where launchers announce this process's rank (horovodrun / jobs.task, Open MPI, MPICH, PMIx, submitit's
# local executor, srun), for a rank that stops before Horovod is up; Horovod's rank is the same number.
RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SUBMITIT_LOCAL_GLOBALID",
                  "SLURM_PROCID")


@dataclass(frozen=True)
class HealthFiles:
    """The health files of one model_dir."""

    model_dir: Path

    @property
    def directory(self) -> Path:
        return Path(self.model_dir) / HEALTH_DIRNAME

    def heartbeat(self, rank: int) -> Path:
        return self.directory / f"{HEARTBEAT_PREFIX}{rank}"

    def stop(self, rank: int) -> Path:
        return self.directory / f"{STOP_PREFIX}{rank}.json"

    @property
    def timeline(self) -> Path:
        return self.directory / TIMELINE_FILENAME

    def stops(self) -> list[dict]:
        """Every rank's stop record of the current attempt."""
        out = []
        for path in sorted(self.directory.glob(f"{STOP_PREFIX}*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out


def heartbeat_line(progress: int, global_step: int, host: str, pid: int, now: float | None = None) -> str:
    return f"{progress} {global_step} {host} {pid} {time.time() if now is None else now:.3f}\n"


def launched_rank(environ: Mapping[str, str]) -> int:
    """This process's rank as its launcher announced it in `environ` (0 when none did)."""
    for key in RANK_VARIABLES:
        if (environ.get(key) or "").isdigit():
            return int(environ[key])
    return 0


def stop_record(reason: StopReason, rank: int, host: str, global_step: int | None, **extra) -> str:
    """One JSON line. `global_step` is None (null) where the rank stops before it knows one."""
    return json.dumps({"reason": reason, "rank": rank, "host": host, "global_step": global_step,
                       "time": round(time.time(), 3), **extra}) + "\n"
