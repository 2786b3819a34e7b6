"""`python -m jobs.cancel EXPERIMENT`: cancel the experiment's jobs that are still pending or running.

Cancelling stops requeues too; the checkpoints stay, so submitting the same experiment name
again resumes from them.
"""
from __future__ import annotations

import subprocess
import sys

from effnet.core.exits import exit_with
from jobs.monitor import experiment_from_cli


def main(argv: list[str] | None = None) -> int:
    args, paths = experiment_from_cli("python -m jobs.cancel", __doc__.split("\n\n")[0], argv)
    slurm_ids = [s["job_id"] for s in paths.submissions() if s.get("executor") == "slurm"]
    if not slurm_ids:
        print("jobs.cancel: nothing to cancel (no Slurm jobs in this experiment)")
        return 0
    done = subprocess.run(["scancel", *slurm_ids], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"jobs.cancel: error: scancel failed: {done.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"cancelled job(s) {', '.join(slurm_ids)} of {paths.root}")
    return 0


if __name__ == "__main__":
    exit_with(main)
