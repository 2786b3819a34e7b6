"""P5: recovery from unplanned faults on the local Slurm cluster, measured on one real job.

    python -m bench.faults [--json F]        (needs `python -m tools.local_slurm up`)

Submits the CPU smoke recipe (tiny B0, 3 epochs x 15 steps, a checkpoint per epoch) to 2 nodes x
2 ranks on the localslurm profile as it ships, then:
1. SIGKILLs rank 3 at step 20: srun ends the step, the batch script records a rank_crash and
   requeues; reported: seconds from the kill to the first step logged by the resumed attempt;
2. SIGSTOPs rank 2 of the resumed attempt at step 35: the ranks' collectives time out or the
   watchdog ends the step after the profile's stall_timeout_s; reported likewise;
3. the steps each fault made the run replay (from the attempt ledger: last step reached minus
   the checkpoint resumed from).
"""
from __future__ import annotations

import os
import signal
import time
import tomllib
from pathlib import Path

from effnet.core.ledger import ledger_for_model_dir, read_attempts

from .slurm_jobs import (TINY_MODEL, bench_main, job_finished, logged_steps, model_dir_of, rank_pid, resumed_steps,
                         run_log, submit_smoke, wait_until, write_profile)

STEPS_PER_EPOCH = 15
OVERRIDES = [TINY_MODEL, "augmenter_name=none", "max_epochs=3", f"steps_per_epoch={STEPS_PER_EPOCH}"]
# (signal, rank, global step to reach first): each after the previous fault's resume.
FAULTS = ((signal.SIGKILL, 3, 20), (signal.SIGSTOP, 2, 35))


def _reached(model_dir: Path, step: int, resumes: int):
    steps = resumed_steps(model_dir, STEPS_PER_EPOCH, resumes) if resumes else \
        logged_steps(run_log(model_dir).records, STEPS_PER_EPOCH)
    return any(s >= step for _, s in steps)


def measure(work: Path, env: dict) -> dict:
    profile = write_profile(work)
    stall_s = tomllib.loads(profile.read_text())["stall_timeout_s"]
    model_dir = model_dir_of(profile, "p5")
    job = submit_smoke(profile, "p5", OVERRIDES, env)
    seconds = []
    for resumes, (sig, rank, step) in enumerate(FAULTS):
        wait_until(f"step {step}", lambda: _reached(model_dir, step, resumes))
        os.kill(rank_pid(model_dir, rank), sig)
        fault = time.time()
        resumed = wait_until("the resumed step", lambda: resumed_steps(model_dir, STEPS_PER_EPOCH, resumes + 1))
        seconds.append(resumed[0][0] - fault)
    wait_until("the job to finish", lambda: job_finished(job, env))
    ledger = read_attempts(ledger_for_model_dir(model_dir))
    causes = [row["cause"] for row in ledger]
    if causes != ["rank_crash", "hang", "completed"]:
        raise RuntimeError(f"bench.faults: expected a rank_crash, a hang and completion; the ledger says {causes}")
    replayed = [row["steps_replayed"] for row in ledger[1:]]
    return {
        "P5 seconds from a rank SIGKILL to the resumed step": seconds[0],
        f"P5 seconds from a rank SIGSTOP to the resumed step (stall_timeout_s {stall_s})": seconds[1],
        "P5 steps replayed per fault (checkpoint every epoch of 15 steps)": sum(replayed) / len(replayed),
    }


def main(argv: list[str] | None = None) -> int:
    return bench_main("faults", __doc__, measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
