"""P4: the launcher on the local Slurm cluster, measured on a real preempted job.

    python -m bench.preemption [--json F]        (needs `python -m tools.local_slurm up`)

Submits the CPU smoke recipe (tiny B0 so a figure takes minutes) to 2 nodes x 2 ranks, preempts
it with a job in the `high` partition once training runs, and reports:
- seconds from `jobs.submit` to the first logged training step;
- seconds from the preemption (the high job's submission) to the first step of the resumed run;
- steps lost per preemption: logged steps after the checkpointed one (0 when the trainer
  checkpoints at the step boundary it stopped at), and steps logged twice.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from effnet.core.exits import EXIT_REQUEUE
from effnet.core.runlog import is_stop

from .slurm_jobs import (TINY_MODEL, bench_main, job_finished, logged_steps, resumed_steps, run_log, submit_smoke,
                         wait_until, write_profile)

STEPS_PER_EPOCH = 30
OVERRIDES = [TINY_MODEL, "augmenter_name=none", "max_epochs=2", f"steps_per_epoch={STEPS_PER_EPOCH}"]


def measure(work: Path, env: dict) -> dict:
    profile = write_profile(work)
    model_dir = work / "p4" / "model"
    start = time.time()
    job = submit_smoke(profile, "p4", OVERRIDES, env)
    first = wait_until("the first training step",
                       lambda: logged_steps(run_log(model_dir).records, STEPS_PER_EPOCH))[0][0]
    wait_until("step 5", lambda: any(s >= 5 for _, s in logged_steps(run_log(model_dir).records, STEPS_PER_EPOCH)))
    preempted = time.time()
    subprocess.run(["sbatch", "--output=/dev/null", "-p", "high", "-N", "4", "--wrap", "sleep 5"], env=env,
                   check=True, capture_output=True)
    resumed_at = wait_until("the resumed run's first step", lambda: resumed_steps(model_dir, STEPS_PER_EPOCH))[0][0]
    wait_until("the job to finish", lambda: job_finished(job, env))
    run = run_log(model_dir)
    stop_index = next(i for i, r in enumerate(run.records) if is_stop(r) and r["data"]["exit_code"] == EXIT_REQUEUE)
    stop = run.records[stop_index]["data"]
    before = [s for _, s in logged_steps(run.records[:stop_index], STEPS_PER_EPOCH)]
    return {
        "P4 seconds from submit to the first training step": first - start,
        "P4 seconds from the preemption to the resumed step": resumed_at - preempted,
        "P4 steps lost per preemption": max(before) - stop["global_step"],
        "P4 steps logged twice": len(run.superseded_steps()),
    }


def main(argv: list[str] | None = None) -> int:
    return bench_main("preemption", __doc__, measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
