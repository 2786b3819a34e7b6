"""`python -m jobs.submit`: submit a recipe to a cluster, or show what would be submitted.

    python -m jobs.submit --cluster dgxa100 --nodes 4 b4_amp
    python -m jobs.submit --cluster dgxa100 --nodes 4 b4_amp --dry-run     # print the sbatch script
    python -m jobs.submit --cluster local smoke                            # 2 CPU ranks here, then results
    python -m jobs.submit --show b0_amp --cluster dgx1v100 --nodes 2       # the resolved recipe
    python -m jobs.submit --cluster dgxa100 --sweep nodes=1,2,4,8 --benchmark b0_amp   # weak scaling

Bad input (unknown cluster, recipe or profile field, too many nodes, a malformed --set) is one
line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from effnet.core.errors import ConfigError
from effnet.core.exits import EXIT_BAD_INPUT, exit_with
from jobs.profile import DEFAULT_CLUSTER, load_profile
from jobs.recipes import RECIPES, get_recipe, parse_overrides

PROG = "python -m jobs.submit"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog="recipes: " + ", ".join(sorted(RECIPES)))
    parser.add_argument("recipe", help="a recipe name (see below)")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER,
                        help=f"a profile in clusters/ or a path to a profile .toml (default {DEFAULT_CLUSTER})")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--time", type=int, dest="time_limit_min", help="time limit in minutes (default: profile's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a trainer flag, e.g. --set max_epochs=10 (repeatable)")
    parser.add_argument("--name", default="", help="experiment name (default RECIPE-CLUSTER-Nn); reusing a name "
                                                   "resumes from its checkpoints")
    parser.add_argument("--sweep", metavar="nodes=N,N,...", help="one job per node count, in one sweep directory "
                                                                  "that tools.collect turns into a scaling table")
    parser.add_argument("--benchmark", action="store_true",
                        help="run the recipe's model, batch and precision on synthetic data (--mode benchmark)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    parser.add_argument("--show", action="store_true", help="print the resolved recipe; submit nothing")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="wait for the job and print its results (default: yes on local, no on Slurm)")
    return parser


def parse_sweep(text: str | None, nodes: int) -> list[int]:
    if text is None:
        return [nodes]
    key, sep, values = text.partition("=")
    if key.strip() != "nodes" or not sep:
        raise ConfigError(f"--sweep {text!r}: expected nodes=N,N,... (the only sweepable key is nodes)")
    try:
        counts = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep {text!r}: node counts must be integers") from None
    if not counts or len(set(counts)) != len(counts):
        raise ConfigError(f"--sweep {text!r}: give distinct node counts")
    return sorted(counts)


def prepare_all(args, profile) -> list:
    from jobs.launcher import prepare

    recipe = get_recipe(args.recipe)
    overrides = parse_overrides(args.overrides)
    if args.benchmark:
        overrides.setdefault("mode", "benchmark")
    counts = parse_sweep(args.sweep, args.nodes)
    if args.sweep is None:
        return [prepare(profile, recipe, args.nodes, overrides, args.time_limit_min, args.name)]
    sweep = args.name or f"sweep-{recipe.name}{'-bench' if args.benchmark else ''}-{profile.name}"
    return [prepare(profile, recipe, n, overrides, args.time_limit_min, f"{sweep}/{n}n") for n in counts]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.cluster)
        jobs = prepare_all(args, profile)
    except ConfigError as err:
        print(f"jobs.submit: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.show:
        print("\n\n".join(p.resolved.show() for p in jobs))
        return 0
    if args.dry_run:
        for prepared in jobs:
            if profile.executor == "local":
                print(f"# cluster {profile.name} runs {profile.tasks_per_node} local process(es), no sbatch; "
                      f"the equivalent script:")
            print(prepared.sbatch_text(), end="")
        return 0
    from jobs.launcher import submit
    from jobs.monitor import describe_submission, wait_and_report, wait_for_sweep

    submitted = []
    for prepared in jobs:
        job = submit(prepared)
        submitted.append((prepared, job))
        print(describe_submission(prepared, job))
    wait = args.wait if args.wait is not None else profile.executor == "local"
    if not wait:
        if args.sweep:
            print(f"when done: python -m tools.collect {jobs[0].paths.root.parent} --table throughput")
        return 0
    if args.sweep:
        return wait_for_sweep(jobs[0].paths.root.parent, submitted)
    return wait_and_report(*[(p.paths, j) for p, j in submitted][0])


if __name__ == "__main__":
    exit_with(main)
