"""A dllogger-compatible writer, so our logs feed every tool that reads NVIDIA's `log.json`.

Format (NVIDIA/dllogger `JSONStreamBackend` and `StdOutBackend`):
- LOG:      `DLLL {"timestamp", "datetime", "elapsedtime", "type": "LOG", "step", "data"}`
- METADATA: `DLLL {"timestamp", "elapsedtime", "datetime", "type": "METADATA", "metric", "metadata"}`
  (note the different key order). `timestamp` and `elapsedtime` are strings of floats.
- stdout:   `DLL <local datetime> - <step> <metric> : <value> <unit> ...`

Unlike dllogger, the file is always opened in append mode (a resumed run never loses the
previous segment's lines), each line is flushed as it is written (a preempted run keeps
everything it logged), and numpy/TF scalars are converted instead of raising.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO

PREFIX = "DLLL "

Step = str | tuple | list


def _plain(value: Any) -> Any:
    """Convert numpy / TensorFlow scalars and arrays into JSON-serialisable Python values."""
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)


def format_log_line(now: dt.datetime, elapsed: float, step: Step, data: dict) -> str:
    record = {
        "timestamp": str(now.timestamp()),
        "datetime": str(now.astimezone()),
        "elapsedtime": str(elapsed),
        "type": "LOG",
        "step": _plain(step),
        "data": _plain(data),
    }
    return PREFIX + json.dumps(record) + "\n"


def format_metadata_line(now: dt.datetime, elapsed: float, metric: str, metadata: dict) -> str:
    record = {
        "timestamp": str(now.timestamp()),
        "elapsedtime": str(elapsed),
        "datetime": str(now.astimezone()),
        "type": "METADATA",
        "metric": metric,
        "metadata": _plain(metadata),
    }
    return PREFIX + json.dumps(record) + "\n"


def format_stdout_line(now: dt.datetime, step: Step, data: dict, metadata: dict[str, dict]) -> str:
    parts = []
    for metric, value in data.items():
        meta = metadata.get(metric) or {}
        fmt = meta.get("format")
        shown = ("{" + fmt + "}").format(value) if fmt and isinstance(value, (int, float)) else value
        # A metric without a unit (its metadata says None) shows none, not the word "None".
        parts.append(f"{metric} : {shown} {meta['unit']}" if meta.get("unit") else f"{metric} : {shown}")
    return f"DLL {now} - {step} " + " ".join(parts)


def parse_line(line: str) -> dict | None:
    """Parse one `DLLL ` line back into its record; None for anything else."""
    if not line.startswith(PREFIX):
        return None
    try:
        record = json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "type" in record else None


# Units of the metrics the trainer reports, as NVIDIA's code declares them.
STANDARD_METADATA: dict[str, dict] = {
    **{k: {"unit": "samples/s", "format": ":.2f"} for k in (
        "avg_exp_per_second_training", "avg_exp_per_second_training_per_GPU",
        "avg_exp_per_second_eval", "avg_exp_per_second_eval_per_GPU")},
    **{k: {"unit": "ms"} for k in (
        "avg_time_per_exp_eval", "latency_pct", "latency_90pct", "latency_95pct", "latency_99pct",
        "latency_p50", "latency_p90", "latency_p95", "latency_p99")},
    **{k: {"unit": None} for k in (
        "eval_loss", "eval_accuracy_top_1", "eval_accuracy_top_5",
        "training_loss", "training_accuracy_top_1", "training_accuracy_top_5")},
    "learning_rate": {"unit": None},
    "examples/second": {"unit": "img/s", "format": ":.2f"},
}


class DLLogger:
    """Writes dllogger lines to a JSON file and to stdout. Only rank 0 writes unless `all_ranks`.

    `verbosity` follows dllogger: a `log(..., verbosity=v)` call reaches the file when
    v <= file_verbosity (default 1, VERBOSE) and stdout when v <= stdout_verbosity (default 0).
    """

    def __init__(
        self,
        path: str | Path | None,
        rank: int = 0,
        all_ranks: bool = False,
        stdout: TextIO | None = sys.stdout,
        file_verbosity: int = 1,
        stdout_verbosity: int = 0,
    ) -> None:
        self.enabled = rank == 0 or all_ranks
        self.start = dt.datetime.now()
        self.file_verbosity = file_verbosity
        self.stdout_verbosity = stdout_verbosity
        self.stdout = stdout if self.enabled else None
        self.metadata_cache: dict[str, dict] = {}
        self._file: TextIO | None = None
        if self.enabled and path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # append: a resume never truncates

    def _elapsed(self, now: dt.datetime) -> float:
        return (now - self.start).total_seconds()

    def metadata(self, metric: str, metadata: dict) -> None:
        self.metadata_cache[metric] = dict(metadata)
        if self._file is not None:
            now = dt.datetime.now()
            self._file.write(format_metadata_line(now, self._elapsed(now), metric, metadata))
            self._file.flush()

    def standard_metadata(self) -> None:
        for metric, meta in STANDARD_METADATA.items():
            self.metadata(metric, meta)

    def log(self, step: Step, data: dict, verbosity: int = 0) -> None:
        if not self.enabled:
            return
        now = dt.datetime.now()
        if self._file is not None and verbosity <= self.file_verbosity:
            self._file.write(format_log_line(now, self._elapsed(now), step, data))
            self._file.flush()
        if self.stdout is not None and verbosity <= self.stdout_verbosity:
            print(format_stdout_line(now, step if isinstance(step, str) else tuple(step), data, self.metadata_cache),
                  file=self.stdout, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "DLLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
