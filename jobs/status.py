"""`python -m jobs.status EXPERIMENT`: every job of an experiment, every attempt, and training progress.

Attempts come from the attempt ledger the batch script appends (why each attempt ended: preempted,
time_limit, rank_crash, hang, node_failure, app_error, completed; the rank and node at fault; steps
replayed; where each restart's seconds went), and from Slurm accounting (a requeued job keeps its id and gets one row per attempt);
progress is the trainer's last logged step, which survives requeues because the log is appended.
"""
from __future__ import annotations

from effnet.core.exits import exit_with
from effnet.core.ledger import attempts_table, last_error, read_attempts, restarts_table
from effnet.core.runlog import RunLogError, read_log
from jobs.monitor import experiment_from_cli, sacct_attempts


def progress(paths) -> str:
    try:
        run = read_log(paths.root)
    except RunLogError:
        return "no trainer log yet"
    steps = [r["step"] for r in run.logged_steps()]  # log order: where the live process is, replays included
    finals = run.final_results()
    last = f"epoch {steps[-1][0]} step {steps[-1][1]}" if steps else "not started"
    return f"last logged: {last}" + ("; finished" if finals else "")


def main(argv: list[str] | None = None) -> int:
    args, paths = experiment_from_cli("python -m jobs.status", __doc__.split("\n\n")[0], argv)
    print(f"experiment {paths.root}")
    for sub in paths.submissions():
        print(f"job {sub['job_id']}: {sub['recipe']} on {sub['cluster']}, {sub['nodes']} node(s), "
              f"submitted {sub['submitted_at']}")
        if sub.get("executor") == "slurm":
            attempts = sacct_attempts(sub["job_id"])
            for n, a in enumerate(attempts, 1):
                print(f"  attempt {n}: {a['State']:<12} start {a['Start']}  end {a['End']}  "
                      f"elapsed {a['Elapsed']}  nodes {a['NodeList']}  exit {a['ExitCode']}")
            if not attempts:
                print("  (no accounting record yet)")
    ledger = read_attempts(paths.attempts)
    if ledger:
        print(f"attempts ({paths.attempts}):")
        print(attempts_table(ledger))
        if (error := last_error(ledger)) is not None:
            print(f"last attempt ended on an application error: {error}")
        if restarts := restarts_table(ledger):
            print("restarts (seconds from each event to the next; total: signal, else step end, to the first step):")
            print(restarts)
    print(progress(paths))
    return 0


if __name__ == "__main__":
    exit_with(main)
