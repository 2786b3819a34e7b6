"""P4: the launcher's restart cost on the local Slurm cluster, and what a container adds to it.

    python -m bench.preemption [--json F]        (needs `python -m tools.local_slurm up`)

The same job, side by side in one run, on both local paths: `localslurm` (Gloo, no container) and,
when Pyxis is on, `localpyxis` (every rank in an enroot container, srun --mpi=pmix, MPI Horovod).
Each submits the CPU smoke recipe (tiny B0 so a figure takes minutes) to 2 nodes x 2 ranks,
preempts it three times with a job in the `high` partition once training runs, then submits it
twice more to time the start alone. Reports medians of three, per path:
- seconds from `jobs.submit` to the first logged training step;
- seconds from the preemption (the high job's submission) to the first step of the resumed run,
  and where they went: each phase of `effnet.core.ledger.restart_phases`, from the attempt ledger
  ("srun -> process" is the container's start under Pyxis);
- steps lost per preemption (logged steps after the checkpointed one: 0 when the trainer
  checkpoints at the step boundary it stopped at), and steps logged twice;
and, with both paths, the container's cost: localpyxis minus localslurm, in seconds.
"""
from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from effnet.core.exits import EXIT_REQUEUE
from effnet.core.ledger import RESTART_PHASES, ledger_for_model_dir, read_attempts, restart_phases
from effnet.core.runlog import is_stop

from .slurm_jobs import (TINY_MODEL, bench_main, job_finished, local_slurm_state, logged_steps, model_dir_of,
                         resumed_steps, run_log, submit_smoke, wait_until, write_profile)

STEPS_PER_EPOCH = 30
PREEMPTIONS = 3
OVERRIDES = [TINY_MODEL, "augmenter_name=none", "max_epochs=2", f"steps_per_epoch={STEPS_PER_EPOCH}"]
SUBMIT = "seconds from submit to the first training step"
RESUME = "seconds from the preemption to the resumed step"


def _first_step_after_submit(profile: Path, name: str, env: dict, cancel: bool) -> tuple[str, float]:
    """Submit; return the job and the seconds to its first logged step (then cancel it if asked)."""
    model_dir = model_dir_of(profile, name)
    start = time.time()
    job = submit_smoke(profile, name, OVERRIDES, env)
    first = wait_until("the first training step",
                       lambda: logged_steps(run_log(model_dir).records, STEPS_PER_EPOCH))[0][0]
    if cancel:
        subprocess.run(["scancel", job], env=env, check=True)
        wait_until("the cancelled job to leave", lambda: job_finished(job, env))
    return job, first - start


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def measure_path(work: Path, path: str, env: dict) -> dict:
    """The figures of one path (a shipped profile's name), without the "P4" prefix."""
    profile = write_profile(work, path)
    model_dir = model_dir_of(profile, "p4")
    job, submit_s = _first_step_after_submit(profile, "p4", env, cancel=False)
    resume_s = []
    for n in range(1, PREEMPTIONS + 1):
        reached = max(s for _, s in logged_steps(run_log(model_dir).records, STEPS_PER_EPOCH)) + 3
        wait_until(f"step {reached}", lambda: any(s >= reached for _, s in logged_steps(
            run_log(model_dir).records, STEPS_PER_EPOCH)))
        preempted = time.time()
        subprocess.run(["sbatch", "--output=/dev/null", "-p", "high", "-N", "4", "--wrap", "sleep 5"], env=env,
                       check=True, capture_output=True)
        resume_s.append(wait_until("the resumed run's first step",
                                   lambda: resumed_steps(model_dir, STEPS_PER_EPOCH, n))[0][0] - preempted)
    wait_until("the job to finish", lambda: job_finished(job, env))
    submits = [submit_s] + [_first_step_after_submit(profile, f"p4-start{i}", env, cancel=True)[1] for i in (1, 2)]
    run = run_log(model_dir)
    stops = [i for i, r in enumerate(run.records) if is_stop(r) and r["data"]["exit_code"] == EXIT_REQUEUE]
    lost = [max(s for _, s in logged_steps(run.records[:i], STEPS_PER_EPOCH)) - run.records[i]["data"]["global_step"]
            for i in stops]
    phases = restart_phases(read_attempts(ledger_for_model_dir(model_dir)))
    figures = {
        SUBMIT: _median(submits),
        RESUME: _median(resume_s),
        "steps lost per preemption": _median(lost),
        "steps logged twice": len(run.superseded_steps()),
    }
    for name, _, _ in RESTART_PHASES:
        if (value := _median([p[name] for p in phases])) is not None:
            figures[f"restart phase: {name}"] = value
    return figures


def measure(work: Path, env: dict) -> dict:
    state = local_slurm_state() or {}
    paths = ["localslurm", "localpyxis"] if state.get("pyxis") else ["localslurm"]
    measured = {path: measure_path(work, path, env) for path in paths}
    figures = {f"P4 {path}: {key}": value for path, values in measured.items() for key, value in values.items()}
    if len(measured) == 2:
        container, plain = measured["localpyxis"], measured["localslurm"]
        for key in (SUBMIT, RESUME, *(f"restart phase: {name}" for name, _, _ in RESTART_PHASES)):
            if container.get(key) is not None and plain.get(key) is not None:
                figures[f"P4 container cost (localpyxis - localslurm): {key}"] = round(container[key] - plain[key], 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    return bench_main("preemption", __doc__, measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
