"""The host side of a Slurm job's attempts: begin, watchdog, and end (classify, record, requeue).

The batch script runs it with the host's `python3`, beside the ranks (in Pyxis containers or not):
scontrol and the job's other Slurm commands exist only there, which is what lets a job requeue itself.

Why Python, not bash: the ranks' stop records are JSON, read here with `json`, not a regex; the
classification is a function tests call in-process; a poll over 512 heartbeats is 512 file reads,
not thousands of forks. Why the standard library only, in Python 3.6 syntax: it runs outside the
project's venv, on the python3 every DGX OS has (3.6 on DGX OS 4); `make test` checks both (vermin,
and an import contract in .importlinter). `jobs.submit` copies this directory beside the
experiment, so a requeued attempt runs the code its first attempt ran; the raw `.sub` scripts run
the one in the checkout they were submitted from.

The causes that requeue, and their budgets, are passed in from `effnet.core.ledger` (`--requeue`,
`--fault-requeue`); how an attempt is classified is `classify.Classifier.classify`.
"""
