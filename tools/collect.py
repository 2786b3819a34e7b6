"""Turn dllogger logs into the seed README's result tables, plus plots.

    python -m tools.collect RUN_DIR... [--table accuracy|throughput|inference|all]
                            [--format md|csv|json] [--plot DIR]

A RUN_DIR is a log file, a trainer model_dir (log.json), an experiment dir (model/log.json), or
any directory holding such logs (searched recursively: a sweep, many jobs). Ours and NVIDIA's logs
share the format (nvidia.md §6). Reading is `effnet.core.runlog` (requeue segments joined, garbage
lines skipped and counted), the tables are `effnet.core.results`; docs/results.md is written by
`python -m bench.readme`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from effnet.core.exits import exit_with
from effnet.core.results import TABLES, format_table
from effnet.core.runlog import RunLog, RunLogError, read_runs

from .plots import write_plots

PROG = "python -m tools.collect"


def print_tables(runs: list[RunLog], table: str, fmt: str) -> None:
    names = list(TABLES) if table == "all" else [table]
    outputs = {name: TABLES[name](runs) for name in names}
    if fmt == "json":
        print(json.dumps(outputs, indent=2))
        return
    for name in names:
        if len(names) > 1 and fmt == "md":
            print(f"\n### {name}\n")
        print(format_table(outputs[name], fmt))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--table", choices=(*TABLES, "all"), default="all")
    parser.add_argument("--format", choices=("md", "csv", "json"), default="md")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="also write throughput, curves and latency PNGs here")
    args = parser.parse_args(argv)
    try:
        runs = read_runs(args.runs)
    except (RunLogError, OSError) as err:
        print(f"collect: error: {err}", file=sys.stderr)
        return 2
    print_tables(runs, args.table, args.format)
    if args.plot:
        for path in write_plots(runs, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    skipped = sum(r.skipped_lines for r in runs)
    print(f"collect: {len(runs)} log(s), {sum(len(r.records) for r in runs)} records, {skipped} non-dllogger "
          f"line(s) skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    exit_with(main)
