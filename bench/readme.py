"""Rewrite the results section of docs/results.md from run logs and, optionally, a `python -m bench` JSON.

    python -m bench.readme RUN_DIR... [--file docs/results.md] [--bench-json runs/bench/latest.json]

The section sits between the file's results markers; everything outside them is kept. It holds
the tables of `effnet.core.results` for these runs, labelled with the machine they ran on, and the
bench figures against their targets (the same table `python -m bench` prints).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from effnet.core.results import accuracy_rows, format_table, inference_rows, throughput_rows
from effnet.core.runlog import RunLog, read_runs

from .__main__ import machine, summary_rows

PROG = "python -m bench.readme"
RESULTS_FILE = Path(__file__).resolve().parents[1] / "docs" / "results.md"
RESULTS_BEGIN = f"<!-- results:begin (written by {PROG}) -->"
RESULTS_END = "<!-- results:end -->"


def results_section(runs: list[RunLog], bench_json: Path | None) -> str:
    """The results: our CPU runs' tables, labelled with the machine, plus the bench figures."""
    m = machine()
    parts = [f"**CPU figures from {m['host']} ({m['cpu']}, {m['cores']} cores, no GPU).** Tiny models and "
             f"resolutions that exercise the code paths; they say nothing about ImageNet accuracy or GPU speed. "
             f"The reference numbers are NVIDIA's GPU tables in the seed README (DGX A100 / DGX-1 V100); they are "
             f"cited there, not reproduced here.", ""]
    for title, rows in (("Training accuracy", accuracy_rows(runs)), ("Training throughput", throughput_rows(runs)),
                        ("Inference", inference_rows(runs))):
        parts += [f"{title} ({', '.join(sorted({r.name for r in runs}))}):", "", format_table(rows, "md"), ""]
    if bench_json is not None:
        results = json.loads(bench_json.read_text())
        parts += [f"`python -m bench` ({results.get('started', '')}):", "", "| figure | what | ours | target |",
                  "|---|---|---|---|", *("| " + " | ".join(row) + " |" for row in summary_rows(results)), ""]
    return "\n".join(parts)


def write_results(path: Path, section: str) -> None:
    """Replace what lies between the markers with `section`."""
    text = path.read_text()
    head, begin, rest = text.partition(RESULTS_BEGIN)
    if not begin or RESULTS_END not in rest:
        raise ValueError(f"{path}: no results markers ({RESULTS_BEGIN} ... {RESULTS_END})")
    path.write_text(f"{head}{RESULTS_BEGIN}\n{section}\n{RESULTS_END}{rest.split(RESULTS_END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--file", type=Path, default=RESULTS_FILE,
                        help="rewrite this file's results section (between its markers); default docs/results.md")
    parser.add_argument("--bench-json", type=Path, help="add the figures of `python -m bench` from this JSON")
    args = parser.parse_args(argv)
    try:
        write_results(args.file, results_section(read_runs(args.runs), args.bench_json))
    except (ValueError, OSError) as err:  # RunLogError, missing markers, a bad bench JSON
        print(f"readme: error: {err}", file=sys.stderr)
        return 2
    print(f"readme: wrote the results section of {args.file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
