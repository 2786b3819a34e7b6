"""The attempt ledger: one JSON line per attempt of a job, appended by the batch script.

The batch script (`jobs.host`, run on the host with its python3) writes it after each attempt; `python -m jobs.status` reads it back here. It lives next to the trainer's model_dir:

    <experiment>/attempts.jsonl     (ExperimentPaths.attempts; raw .sub jobs: <model_dir>/../)

Each line, keys always present (null when unknown):

    job_id             the Slurm job id (a requeued job keeps it)
    attempt            SLURM_RESTART_COUNT + 1
    nodes              the attempt's SLURM_JOB_NODELIST
    start, end         unix seconds (to the ms) when the batch script started and classified the attempt
    cause              one of CAUSES
    resumed_from_step  the checkpoint step the attempt started from (0: fresh)
    last_step          the highest global step any rank reported (heartbeats, stop records)
    steps_replayed     the previous attempt's last step minus resumed_from_step, when positive
    fault_rank         the rank at fault (crash, hang, node failure), and fault_node its node
    exit_status        srun's exit status (null when the batch script itself was killed)
    action             "requeue" or "stop": what the batch script did next
    error              app_error: the rank's "ExcType: message" line
    step_end           unix time (ms) when srun returned; null when the batch script was killed
    timeline           rank 0's timeline of the attempt (effnet.core.health.TIMELINE_EVENTS), or null
    detail             how the cause was decided, in words

`restart_phases` turns two consecutive lines into where a restart's seconds went.
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

# The keys of a line, in the order the batch script (jobs.host) writes them.
LINE_KEYS = ("job_id", "attempt", "nodes", "start", "end", "cause", "resumed_from_step", "last_step", "steps_replayed",
             "fault_rank", "fault_node", "exit_status", "action", "error", "step_start", "step_end", "timeline",
             "detail")

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


def _aligned(columns: list[str] | tuple[str, ...], rows: list[dict]) -> str:
    """`rows` (column -> text) under a header line of `columns`, each column padded to its widest cell."""
    cells = [dict(zip(columns, columns)), *rows]
    widths = {c: max(len(cell[c]) for cell in cells) for c in columns}
    return "\n".join("  ".join(cell[c].ljust(widths[c]) for c in columns).rstrip() for cell in cells)


def attempts_table(rows: list[dict]) -> str:
    """The ledger as an aligned text table, one line per attempt."""
    return _aligned(COLUMNS, [table_row(r) for r in rows])


def last_error(rows: list[dict]) -> str | None:
    """The error line of the last attempt, when it ended in an app_error."""
    if rows and rows[-1].get("cause") == "app_error":
        return rows[-1].get("error") or rows[-1].get("detail") or "(no error line recorded)"
    return None


# (name, (line, key), (line, key)): a restart's phases, each from one timestamp to the next; "prev" is
# the attempt that ended, "next" the one that resumed; start, step_start (srun), step_end and end are
# the batch script's, the rest rank 0's timeline. Under Pyxis, "srun -> process" is the container's start.
RESTART_PHASES = (
    ("signal -> stop record", ("prev", "signal"), ("prev", "stop_record")),
    ("stop record -> step end", ("prev", "stop_record"), ("prev", "step_end")),
    ("step end -> job end", ("prev", "step_end"), ("prev", "end")),
    ("job end -> next start", ("prev", "end"), ("next", "start")),
    ("next start -> srun", ("next", "start"), ("next", "step_start")),
    ("srun -> process", ("next", "step_start"), ("next", "process_start")),
    ("process -> trainer", ("next", "process_start"), ("next", "trainer_start")),
    ("trainer -> restored", ("next", "trainer_start"), ("next", "restored")),
    ("restored -> first batch", ("next", "restored"), ("next", "first_batch")),
    ("first batch -> first step", ("next", "first_batch"), ("next", "first_step")),
)


def _when(row: dict, key: str) -> float | None:
    value = row.get(key) if key in ("start", "end", "step_start", "step_end") else (row.get("timeline") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def restart_phases(rows: list[dict]) -> list[dict]:
    """One dict per requeue in `rows`: attempt, cause, each RESTART_PHASES' seconds (None where a time
    is missing) and "total", from the signal (else the step's end) to the resumed attempt's first step."""
    out = []
    for prev, nxt in zip(rows, rows[1:]):
        if prev.get("action") != "requeue" or prev.get("job_id") != nxt.get("job_id"):
            continue
        lines = {"prev": prev, "next": nxt}
        phases = {"attempt": prev.get("attempt"), "cause": prev.get("cause")}
        for name, (a_line, a_key), (b_line, b_key) in RESTART_PHASES:
            a, b = _when(lines[a_line], a_key), _when(lines[b_line], b_key)
            phases[name] = None if a is None or b is None else round(b - a, 1)
        begin = _when(prev, "signal")
        begin = begin if begin is not None else _when(prev, "step_end")
        end = _when(nxt, "first_step")
        phases["total"] = None if begin is None or end is None else round(end - begin, 1)
        out.append(phases)
    return out


def restarts_table(rows: list[dict]) -> str:
    """`restart_phases(rows)` as an aligned text table (seconds), or '' when there was no requeue."""
    phases = restart_phases(rows)
    if not phases:
        return ""
    columns = ["attempt", "cause", *(name for name, _, _ in RESTART_PHASES), "total"]
    return _aligned(columns, [{c: _show(p[c]) for c in columns} for p in phases])
