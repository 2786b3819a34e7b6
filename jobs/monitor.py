"""Follow submitted jobs: describe, wait for, and report on them; used by submit/status/logs/cancel.

Jobs are found through the experiment directory (experiment.json lists every job id), so these
work across requeues (same job id, logs appended) and across resubmissions (new ids).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from effnet.core.paths import ExperimentPaths
from effnet.core.results import accuracy_rows, format_table, inference_rows, throughput_rows
from effnet.core.runlog import RunLogError, read_log, read_runs


def describe_submission(prepared, job) -> str:
    paths = prepared.paths
    return "\n".join([
        f"submitted job {job.job_id}: {prepared.resolved.recipe} on {prepared.profile.name}, "
        f"{prepared.resolved.nodes} node(s) x {prepared.profile.tasks_per_node} rank(s)",
        f"  experiment: {paths.root}",
        f"  trainer log: {paths.trainer_log}",
        f"  task logs:   {paths.task_log(str(job.job_id), 0)} (and .err, one per rank)",
        f"  follow with: python -m jobs.logs {paths.root} --follow",
    ])


def results_table(paths: ExperimentPaths) -> str:
    try:
        run = read_log(paths.root)
    except RunLogError as err:
        return f"(no results: {err})"
    return "\n\n".join([format_table(accuracy_rows([run]), "md"), format_table(inference_rows([run]), "md")])


def wait_and_report(paths: ExperimentPaths, job) -> int:
    """Block until the job ends; print its results table. Exit status 0 only if every rank succeeded."""
    try:
        job.results()
    except Exception as err:  # submitit raises its own job errors with the remote traceback
        print(f"job {job.job_id} failed: {err}".rstrip(), file=sys.stderr)
        print(f"  logs: {paths.task_log(str(job.job_id), 0)}", file=sys.stderr)
        return 1
    print(f"job {job.job_id} finished.")
    print(results_table(paths))
    return 0


def wait_for_sweep(sweep_dir: Path, submitted: list) -> int:
    """Wait for every job of a sweep, then print its throughput (weak-scaling) table."""
    failed = 0
    for prepared, job in submitted:
        try:
            job.results()
        except Exception as err:  # submitit's job errors carry the remote traceback
            failed += 1
            print(f"job {job.job_id} ({prepared.paths.name}) failed: {str(err).splitlines()[0]}", file=sys.stderr)
    try:
        print(format_table(throughput_rows(read_runs([sweep_dir])), "md"))
    except RunLogError as err:
        print(f"(no results: {err})")
    return 1 if failed else 0


def sacct_attempts(job_id: str) -> list[dict]:
    """One row per attempt of the job (requeues included), from accounting; [] if unavailable."""
    fields = ("JobID", "State", "Start", "End", "Elapsed", "NodeList", "ExitCode")
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-D", "-X", "--parsable2", "--noheader",
                              "-o", ",".join(fields)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


def job_may_write(submission: dict) -> bool:
    """Whether a submitted job may still write its logs: Slurm lists it (pending, running, or pending again
    after a requeue), or, on the local executor, its controller process (the job id is its pid) lives."""
    job_id = str(submission["job_id"])
    if submission.get("executor") == "local":
        try:
            os.kill(int(job_id), 0)
        except PermissionError:
            return True
        except (OSError, ValueError):
            return False
        return True
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def find_experiment(text: str, cluster: str | None = None) -> ExperimentPaths:
    """An experiment by path, or by name in the cluster's experiments_dir (default: runs/experiments)."""
    from effnet.core.errors import ConfigError
    from jobs.profile import DEFAULT_EXPERIMENTS_DIR, experiments_dir, load_profile

    path = Path(text)
    by_name = not path.is_dir() and "/" not in text
    if by_name:
        path = (experiments_dir(load_profile(cluster)) if cluster else DEFAULT_EXPERIMENTS_DIR) / text
    paths = ExperimentPaths(path.resolve())
    if not paths.metadata.is_file():
        hint = "pass the directory that jobs.submit printed"
        if by_name and not cluster:
            hint += ", or its name with the --cluster it was submitted to"
        raise ConfigError(f"{text}: not an experiment ({paths.root} has no {paths.metadata.name}); {hint}")
    return paths


def experiment_from_cli(prog: str, description: str, argv: list[str] | None, extra=None):
    """Parse the shared arguments of jobs.status / jobs.logs / jobs.cancel and find the experiment.

    Returns (args, paths); a bad experiment is one line on stderr and exit status 2."""
    import argparse

    from effnet.core.errors import ConfigError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("experiment", help="experiment directory, or its name (with --cluster)")
    parser.add_argument("--cluster", help="profile whose experiments_dir holds the named experiment")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    try:
        return args, find_experiment(args.experiment, args.cluster)
    except ConfigError as err:
        print(f"{prog.split()[-1]}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
