"""The attempt ledger: one JSON line per attempt of a job, appended by the batch script.

The batch script (`jobs.faults_sh`, run on the host with shell tools only) writes it after each
attempt; `python -m jobs.status` reads it back here. It lives next to the trainer's model_dir:

    <experiment>/attempts.jsonl     (ExperimentPaths.attempts; raw .sub jobs: <model_dir>/../)

Each line, keys always present (null when unknown):

    job_id             the Slurm job id (a requeued job keeps it)
    attempt            SLURM_RESTART_COUNT + 1
    nodes              the attempt's SLURM_JOB_NODELIST
    start, end         unix seconds
    cause              one of CAUSES
    resumed_from_step  the checkpoint step the attempt started from (0: fresh)
    last_step          the highest global step any rank reported (heartbeats, stop records)
    steps_replayed     the previous attempt's last step minus resumed_from_step, when positive
    fault_rank         the rank at fault (crash, hang, node failure), and fault_node its node
    exit_status        srun's exit status (null when the batch script itself was killed)
    action             "requeue" or "stop": what the batch script did next
    error              app_error: the rank's "ExcType: message" line
    detail             how the cause was decided, in words
"""
from __future__ import annotations

import json
import time
from pathlib import Path

ATTEMPTS_FILENAME = "attempts.jsonl"
# The watchdog's record of a hang, beside the trainer's health files (effnet.core.health).
HANG_RECORD = "hang.json"

SIGNAL_CAUSES = ("preempted", "time_limit")
FAULT_CAUSES = ("rank_crash", "hang", "node_failure")
# "killed": the batch script itself was killed before it could record the attempt (scancel, an
# external requeue, a preemption past its grace time); the next attempt records it from what is left.
CAUSES = (*SIGNAL_CAUSES, *FAULT_CAUSES, "app_error", "completed", "killed")

COLUMNS = ("attempt", "job", "nodes", "start", "minutes", "cause", "resumed", "last step", "replayed", "fault",
           "exit", "action")


def ledger_for_model_dir(model_dir: str | Path) -> Path:
    """Where the batch script appends the ledger of the job that trains into `model_dir`."""
    return Path(model_dir).parent / ATTEMPTS_FILENAME


def read_attempts(path: Path) -> list[dict]:
    """Every attempt recorded in `path`, oldest first; lines that are not JSON objects are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def _show(value) -> str:
    return "-" if value is None or value == "" else str(value)


def table_row(row: dict) -> dict:
    start, end = row.get("start"), row.get("end")
    minutes = f"{(end - start) / 60:.1f}" if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
    fault = None
    if row.get("fault_rank") is not None or row.get("fault_node"):
        fault = f"rank {_show(row.get('fault_rank'))} on {_show(row.get('fault_node'))}"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)) if isinstance(start, (int, float)) else None
    values = (row.get("attempt"), row.get("job_id"), row.get("nodes"), started, minutes, row.get("cause"),
              row.get("resumed_from_step"), row.get("last_step"), row.get("steps_replayed"), fault,
              row.get("exit_status"), row.get("action"))
    return {column: _show(value) for column, value in zip(COLUMNS, values)}


def attempts_table(rows: list[dict]) -> str:
    """The ledger as an aligned text table, one line per attempt."""
    cells = [dict(zip(COLUMNS, COLUMNS)), *(table_row(r) for r in rows)]
    widths = {c: max(len(cell[c]) for cell in cells) for c in COLUMNS}
    return "\n".join("  ".join(cell[c].ljust(widths[c]) for c in COLUMNS).rstrip() for cell in cells)


def last_error(rows: list[dict]) -> str | None:
    """The error line of the last attempt, when it ended in an app_error."""
    if rows and rows[-1].get("cause") == "app_error":
        return rows[-1].get("error") or rows[-1].get("detail") or "(no error line recorded)"
    return None
