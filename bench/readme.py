"""Rewrite the README's results section from run logs and, optionally, a `python -m bench` JSON.

    python -m bench.readme RUN_DIR... --readme README.md [--bench-json runs/bench/latest.json]

The section sits between the README's results markers; everything outside them is kept. It holds
the tables of `effnet.core.results` for these runs, labelled with the machine they ran on, and the
bench figures against their targets (the same table `python -m bench` prints).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from effnet.core.results import accuracy_rows, format_table, inference_rows, throughput_rows
from effnet.core.runlog import RunLog, read_runs

from .__main__ import machine, summary_rows

PROG = "python -m bench.readme"
README_BEGIN = f"<!-- results:begin (written by {PROG}) -->"
README_END = "<!-- results:end -->"
# Any begin marker, including the one an older writer left (its text named that writer).
_BEGIN = re.compile(r"<!-- results:begin\b.*?-->")


def results_section(runs: list[RunLog], bench_json: Path | None) -> str:
    """The README's results: our CPU runs' tables, labelled with the machine, plus the bench figures."""
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


def write_readme(readme: Path, section: str) -> None:
    """Replace what lies between the markers with `section` (and the begin marker with ours)."""
    text = readme.read_text()
    begin = _BEGIN.search(text)
    if begin is None or README_END not in text[begin.end():]:
        raise ValueError(f"{readme}: no results markers ({README_BEGIN} ... {README_END})")
    tail = text[begin.end():].split(README_END, 1)[1]
    readme.write_text(f"{text[:begin.start()]}{README_BEGIN}\n{section}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--readme", type=Path, metavar="FILE", required=True,
                        help="rewrite FILE's results section (between its markers) from these runs")
    parser.add_argument("--bench-json", type=Path, help="add the figures of `python -m bench` from this JSON")
    args = parser.parse_args(argv)
    try:
        write_readme(args.readme, results_section(read_runs(args.runs), args.bench_json))
    except (ValueError, OSError) as err:  # RunLogError, missing markers, a bad bench JSON
        print(f"readme: error: {err}", file=sys.stderr)
        return 2
    print(f"readme: wrote the results section of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
