"""`python -m jobs.submit`: submit a recipe to a cluster, or show what would be submitted.

    python -m jobs.submit --cluster dgxa100 --nodes 4 b4_amp
    python -m jobs.submit --cluster dgxa100 --nodes 4 b4_amp --dry-run     # print the sbatch script
    python -m jobs.submit --cluster local smoke                            # 2 CPU ranks here, then results
    python -m jobs.submit --show b0_amp --cluster dgx1v100 --nodes 2       # the resolved recipe

Bad input (unknown cluster, recipe or profile field, too many nodes, a malformed --set) is one
line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from effnet.config.errors import ConfigError
from jobs.profile import DEFAULT_CLUSTER, load_profile
from jobs.recipes import RECIPES, get_recipe, parse_overrides

PROG = "python -m jobs.submit"
EXIT_BAD_INPUT = 2


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
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    parser.add_argument("--show", action="store_true", help="print the resolved recipe; submit nothing")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="wait for the job and print its results (default: yes on local, no on Slurm)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from jobs.launcher import prepare

        profile = load_profile(args.cluster)
        prepared = prepare(profile, get_recipe(args.recipe), args.nodes, parse_overrides(args.overrides),
                           args.time_limit_min, args.name)
    except ConfigError as err:
        print(f"jobs.submit: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.show:
        print(prepared.resolved.show())
        return 0
    if args.dry_run:
        if profile.executor == "local":
            print(f"# cluster {profile.name} runs {profile.tasks_per_node} local process(es), no sbatch; "
                  f"the equivalent script:")
        print(prepared.sbatch_text(), end="")
        return 0
    from jobs.launcher import submit
    from jobs.monitor import describe_submission, wait_and_report

    job = submit(prepared)
    print(describe_submission(prepared, job))
    wait = args.wait if args.wait is not None else profile.executor == "local"
    return wait_and_report(prepared.paths, job) if wait else 0


if __name__ == "__main__":
    raise SystemExit(main())
