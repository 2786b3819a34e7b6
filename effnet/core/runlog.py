"""The one reader of the trainer's dllogger `log.json` (ours and NVIDIA's: the same format).

Why one: the result tables, the launcher's status and monitor, the benchmarks and the tests all ask
the same questions of a log (which records are training steps, where a requeue restarted the clock,
which summaries are final, which steps a resumed run logged again). Spelled out at each reader, the
answers drift; here they are answered once, and `effnet.core.dllogger` (the writer) sits next to it.

A log may hold several process lifetimes appended to one file (a requeue or a resume): each starts a
new *segment*, whose `elapsedtime` restarts. A run resumed from a checkpoint older than its last
logged step logs those steps again; the later occurrence supersedes the earlier one, so a step counts
once. Lines that are not dllogger records (truncated, interleaved, garbage) are skipped and counted;
two records glued on one line are split.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from effnet.core.dllogger import PREFIX, parse_line
from effnet.core.paths import LOG_FILENAME

_MODEL_IN_CFG = re.compile(r"\b(b[0-7])(?:_cfg)?(?:\.py)?$")
_SUMMARY_KEYS = ("eval_accuracy_top_1", "avg_exp_per_second_training", "avg_exp_per_second_eval")


class RunLogError(ValueError):
    """A path holds no dllogger log (missing, or a directory without one)."""


def is_log(record: dict) -> bool:
    return record.get("type") == "LOG"


def is_train_step(record: dict) -> bool:
    """A training-progress record: a LOG whose step is [epoch, step_in_epoch]."""
    step = record.get("step")
    return is_log(record) and isinstance(step, list) and len(step) == 2


def is_stop(record: dict) -> bool:
    """The trainer's record of why it exited early (a checkpoint on a signal): its data has `exit_code`."""
    return is_log(record) and "exit_code" in record.get("data", {})


def is_eval(record: dict) -> bool:
    """An evaluation result, during training ([epoch, step]) or at the end (step [])."""
    return is_log(record) and "eval_accuracy_top_1" in record.get("data", {})


def step_key(record: dict) -> tuple[int, int]:
    """(epoch, step_in_epoch) of a training-step record."""
    epoch, step = record["step"]
    return int(epoch), int(step)


def global_step(record: dict, steps_per_epoch: int) -> int:
    epoch, step = step_key(record)
    return epoch * steps_per_epoch + step


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def split_segments(records: list[dict]) -> list[list[dict]]:
    """One list per process lifetime: a new one starts where `elapsedtime` goes backwards."""
    out: list[list[dict]] = []
    last = None
    for r in records:
        elapsed = _float(r.get("elapsedtime"))
        if not out or (elapsed is not None and last is not None and elapsed < last):
            out.append([])
        out[-1].append(r)
        last = elapsed if elapsed is not None else last
    return out


def _last_final_results(segments: list[list[dict]]) -> list[dict]:
    finals: list[dict] = []
    for segment in segments:
        found = [r["data"] for r in segment if is_log(r) and r.get("step") == []
                 and any(k in r.get("data", {}) for k in _SUMMARY_KEYS)]
        finals = found or finals
    return finals


def _dedupe_steps(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(last occurrence of each training step in step order, the earlier occurrences they replaced)."""
    latest: dict[tuple[int, int], dict] = {}
    superseded: list[dict] = []
    for r in filter(is_train_step, records):
        key = step_key(r)
        if key in latest:
            superseded.append(latest[key])
        latest[key] = r
    return [latest[k] for k in sorted(latest)], superseded


@dataclass
class RunLog:
    """One log file, parsed once: its records, requeue segments, training steps and end-of-run summaries."""
    path: Path
    records: list[dict] = field(default_factory=list)
    skipped_lines: int = 0

    def __post_init__(self) -> None:
        self._segments = split_segments(self.records)
        self._finals = _last_final_results(self._segments)
        self._steps, self._superseded = _dedupe_steps(self.records)

    @property
    def name(self) -> str:
        parent = self.path.parent
        return parent.parent.name if parent.name == "model" else parent.name

    def logs(self) -> list[dict]:
        return [r for r in self.records if is_log(r)]

    def parameters(self) -> dict:
        """The first PARAMETER record holding the run's flags (later ones are progress or resume notes)."""
        for r in self.logs():
            data = r.get("data", {})
            if r.get("step") == "PARAMETER" and ("cfg" in data or "mode" in data):
                return data
        return {}

    @property
    def steps_per_epoch(self) -> int | None:
        """The latest logged steps_per_epoch (the trainer notes it at each start), else the flags'."""
        found = [r["data"]["steps_per_epoch"] for r in self.logs()
                 if r.get("step") == "PARAMETER" and r.get("data", {}).get("steps_per_epoch")]
        return found[-1] if found else self.parameters().get("steps_per_epoch")

    def logged_steps(self) -> list[dict]:
        """Every training-step record in log order, replays included."""
        return [r for r in self.records if is_train_step(r)]

    def train_steps(self) -> list[dict]:
        """The last occurrence of each (epoch, step), in step order: a replayed step counts once."""
        return self._steps

    def superseded_steps(self) -> list[dict]:
        """The earlier occurrences of steps that a later record (a replay after a crash) logged again."""
        return self._superseded

    def global_steps(self, records: Iterable[dict] | None = None) -> list[int]:
        """epoch * steps_per_epoch + step of `records` (default: train_steps())."""
        per_epoch = self.steps_per_epoch or 0
        return [global_step(r, per_epoch) for r in (self.train_steps() if records is None else records)]

    def stops(self) -> list[dict]:
        return [r for r in self.records if is_stop(r)]

    def evals(self) -> list[dict]:
        return [r for r in self.records if is_eval(r)]

    def summaries(self) -> list[dict]:
        """The data of every end-of-run record (step []), all segments."""
        return [r.get("data", {}) for r in self.logs() if r.get("step") == []]

    def final_results(self) -> list[dict]:
        """End-of-run summaries (step == []) of the last segment that produced any."""
        return self._finals

    def segments(self) -> list[list[dict]]:
        """One list per process lifetime: a requeued run appends a new segment whose clock restarts."""
        return self._segments

    def wall_seconds(self) -> float:
        return sum(max((_float(r.get("elapsedtime")) or 0.0) for r in seg) for seg in self.segments() if seg)

    # ----- what the run was

    @property
    def model(self) -> str:
        params = self.parameters()
        if isinstance(params.get("model"), dict) and params["model"].get("name"):
            return params["model"]["name"].upper()
        match = _MODEL_IN_CFG.search(str(params.get("cfg", "")))
        return match.group(1).upper() if match else str(params.get("cfg", "?"))

    @property
    def precision(self) -> str:
        params = self.parameters()
        if params.get("use_amp"):
            return "mixed precision" if params.get("amp_dtype", "float16") == "float16" else "BF16"
        if params.get("accelerator") == "CPU":
            return "FP32"
        if "use_tf32" in params:
            return "TF32" if params["use_tf32"] else "FP32"
        return "TF32/FP32"  # NVIDIA's logs do not say which

    @property
    def ranks(self) -> int | None:
        params = self.parameters()
        if params.get("world_size"):
            return int(params["world_size"])
        for final in self.final_results():  # NVIDIA's logs: total / per-GPU throughput
            total, per = final.get("avg_exp_per_second_training"), final.get("avg_exp_per_second_training_per_GPU")
            if total and per:
                return max(1, round(total / per))
        return None


def parse_records(lines: Iterable[str]) -> tuple[list[dict], int]:
    """(records, lines skipped): glued records are split, anything else unparseable is counted."""
    records: list[dict] = []
    skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        pieces = [PREFIX + p for p in line.split(PREFIX) if p.strip()] if line.count(PREFIX) > 1 else [line]
        for piece in pieces:
            record = parse_line(piece.strip())
            if record is None:
                skipped += 1
            else:
                records.append(record)
    return records, skipped


def _is_dllogger_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return PREFIX.encode() in f.read(4096)
    except OSError:
        return False


def find_logs(path: Path) -> list[Path]:
    """A log file itself; a run's log.json or model/log.json; else every dllogger file below a directory."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RunLogError(f"{path}: no such file or directory")
    for candidate in (path / LOG_FILENAME, path / "model" / LOG_FILENAME):
        if candidate.is_file():
            return [candidate]
    found = sorted(p for p in path.rglob("*.json") if p.is_file() and _is_dllogger_file(p))
    if not found:
        raise RunLogError(f"{path}: no dllogger logs in it (looked for log.json and *.json with DLLL lines)")
    return found


def read_log(path: Path) -> RunLog:
    """One log file (or the log of one run directory)."""
    file = find_logs(Path(path))[0]
    with open(file, errors="replace") as f:
        records, skipped = parse_records(f)
    return RunLog(file, records, skipped)


def read_runs(paths: Iterable[Path]) -> list[RunLog]:
    """Every log below these paths, each once."""
    files: list[Path] = []
    for p in paths:
        files += find_logs(Path(p))
    return [read_log(f) for f in dict.fromkeys(files)]
