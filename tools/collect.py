"""Turn dllogger logs of training runs into the result tables of the README.

    python -m tools.collect RUN_DIR... [--format md|csv|json]

A RUN_DIR is a trainer model_dir (with log.json), an experiment dir (with model/log.json) or a
log file. Lines that are not dllogger records (truncated, interleaved, garbage) are skipped and
counted.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from effnet.log import parse_line

PROG = "python -m tools.collect"


class CollectError(ValueError):
    pass


@dataclass
class RunLog:
    path: Path
    records: list[dict] = field(default_factory=list)
    skipped_lines: int = 0

    @property
    def name(self) -> str:
        parent = self.path.parent
        return parent.parent.name if parent.name == "model" else parent.name

    def logs(self) -> list[dict]:
        return [r for r in self.records if r.get("type") == "LOG"]

    def parameters(self) -> dict:
        """The first PARAMETER record with the resolved config (later ones are resume notes)."""
        for r in self.records:
            if r.get("type") == "LOG" and r.get("step") == "PARAMETER" and "cfg" in r.get("data", {}):
                return r["data"]
        return {}

    def final_results(self) -> list[dict]:
        """The end-of-run summaries of the last segment that finished (step == [])."""
        return [r["data"] for r in self.logs() if r.get("step") == [] and "comment" in r.get("data", {})]


def find_log(path: Path) -> Path:
    for candidate in (path, path / "log.json", path / "model" / "log.json"):
        if candidate.is_file():
            return candidate
    raise CollectError(f"{path}: no log.json here (looked in {path}, {path / 'log.json'}, "
                       f"{path / 'model' / 'log.json'})")


def read_log(path: Path) -> RunLog:
    run = RunLog(find_log(path))
    with open(run.path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            record = parse_line(line.strip())
            if record is None:
                run.skipped_lines += 1
            else:
                run.records.append(record)
    return run


ACCURACY_COLUMNS = ("run", "ranks", "weights", "top-1", "top-5", "eval loss", "train img/s", "train s")


def accuracy_rows(runs: list[RunLog]) -> list[dict]:
    rows = []
    for run in runs:
        params = run.parameters()
        for result in run.final_results():
            if "eval_accuracy_top_1" not in result:
                continue
            rows.append({
                "run": run.name, "ranks": params.get("world_size", ""),
                "weights": "EMA" if "EMA" in result["comment"] else "raw",
                "top-1": f"{100 * result['eval_accuracy_top_1']:.2f}",
                "top-5": f"{100 * result['eval_accuracy_top_5']:.2f}",
                "eval loss": f"{result['eval_loss']:.4f}",
                "train img/s": f"{result['avg_exp_per_second_training']:.1f}"
                if "avg_exp_per_second_training" in result else "",
                "train s": f"{result['total_training_seconds']:.0f}" if "total_training_seconds" in result else "",
            })
    return rows


def format_table(rows: list[dict], columns: tuple[str, ...], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--format", choices=("md", "csv", "json"), default="md")
    args = parser.parse_args(argv)
    try:
        runs = [read_log(p) for p in args.runs]
    except CollectError as err:
        print(f"collect: error: {err}", file=sys.stderr)
        return 2
    print(format_table(accuracy_rows(runs), ACCURACY_COLUMNS, args.format))
    skipped = sum(r.skipped_lines for r in runs)
    if skipped:
        print(f"({skipped} non-dllogger line(s) skipped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
