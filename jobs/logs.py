"""`python -m jobs.logs EXPERIMENT [--task N] [--err] [--job ID] [--follow]`: print a rank's log.

Task logs are opened in append mode, so one file holds every attempt of a requeued job; --follow
prints it as it grows, through requeues, until the job ends.
"""
from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path
from typing import Callable

from effnet.core.errors import ConfigError
from effnet.core.exits import exit_with
from jobs.monitor import experiment_from_cli, job_may_write

POLL_S = 1.0


def _options(parser) -> None:
    parser.add_argument("--task", type=int, default=0, help="rank whose log to print (default 0)")
    parser.add_argument("--err", action="store_true", help="print stderr instead of stdout")
    parser.add_argument("--job", help="job id (default: the latest submission)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing the log as it grows until the job ends (requeues included)")


def follow(path: Path, may_write: Callable[[], bool], poll_s: float = POLL_S) -> None:
    """Print `path` and what is appended to it, like tail -f, until `may_write()` says the job ended;
    what it wrote before it ended is printed too. The file may appear late: the task has not started."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        writing = may_write()  # asked first: a line written before the end is still read below
        if path.is_file():
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            sys.stdout.write(decoder.decode(chunk))
            sys.stdout.flush()
        if not writing:
            return
        time.sleep(poll_s)


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
        if not path.is_file() and not (args.follow and job_may_write(submissions[job_id])):
            raise ConfigError(f"{path} does not exist yet: job {job_id} has not started task {args.task}")
    except ConfigError as err:
        print(f"jobs.logs: error: {err}", file=sys.stderr)
        return 2
    if not args.follow:
        sys.stdout.write(path.read_text(errors="replace"))
        return 0
    try:
        follow(path, lambda: job_may_write(submissions[job_id]))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    exit_with(main)
