"""`python -m jobs.logs EXPERIMENT [--task N] [--err] [--job ID]`: print a rank's log.

Task logs are opened in append mode, so one file holds every attempt of a requeued job.
"""
from __future__ import annotations

import sys

from effnet.core.errors import ConfigError
from effnet.core.exits import exit_with
from jobs.monitor import experiment_from_cli


def _options(parser) -> None:
    parser.add_argument("--task", type=int, default=0, help="rank whose log to print (default 0)")
    parser.add_argument("--err", action="store_true", help="print stderr instead of stdout")
    parser.add_argument("--job", help="job id (default: the latest submission)")


def main(argv: list[str] | None = None) -> int:
    args, paths = experiment_from_cli("python -m jobs.logs", __doc__.split("\n\n")[0], argv, _options)
    try:
        submissions = {str(s["job_id"]): s for s in paths.submissions()}
        job_id = args.job or (list(submissions)[-1] if submissions else None)
        if job_id is None or job_id not in submissions:
            raise ConfigError(f"job {args.job} is not part of {paths.root}; its jobs: "
                              f"{', '.join(submissions) or 'none'}")
        ranks = submissions[job_id].get("ranks")
        if ranks is not None and not 0 <= args.task < ranks:
            raise ConfigError(f"--task {args.task}: job {job_id} has {ranks} task(s), 0 to {ranks - 1}")
        path = paths.task_log(job_id, args.task, "err" if args.err else "out")
        if not path.is_file():
            raise ConfigError(f"{path} does not exist yet: job {job_id} has not started task {args.task}")
    except ConfigError as err:
        print(f"jobs.logs: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(path.read_text(errors="replace"))
    return 0


if __name__ == "__main__":
    exit_with(main)
