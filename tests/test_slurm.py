"""The launcher against a real Slurm 22.05 (`python -m tools.local_slurm up`): multi-node Horovod,
time-limit chaining, raw .sub scripts, cancel, a benchmark sweep. Preemption and faults:
tests/test_slurm_faults.py.

Needs root to start the cluster (make test does, and takes it down after); otherwise skipped.
Models are tiny (B0 at width/depth 0.25, 48 px) so that each job takes a minute or two on 2 cores.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.runlogs import records, train_steps
from tests.slurm_cluster import (EXPECTED_STEPS, ROOT, STAGES_STEPS, TINY, experiment, job_id_of, sacct_states, submit,
                                 wait_done, wait_for_step)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def test_multinode_job_runs_to_completion(slurm, profile, baseline):
    model_dir = baseline / "model"
    assert train_steps(model_dir) == STAGES_STEPS
    params = [r["data"] for r in records(model_dir) if r["type"] == "LOG" and r["step"] == "PARAMETER"]
    assert params[0]["world_size"] == 4 and params[0]["controller"] == "gloo"
    finals = [r["data"] for r in records(model_dir) if r["type"] == "LOG" and r["step"] == []
              and "eval_accuracy_top_1" in r["data"]]
    assert {f["comment"] for f in finals} == {"eval using original weights", "eval using EMA weights"}
    assert all(f["weights_in_sync_across_ranks"] for f in finals)
    job = (baseline / "experiment.json").read_text().split('"job_id": "')[1].split('"')[0]
    logs = [(baseline / "submitit" / f"{job}_{t}_log.out").read_text() for t in range(4)]
    for rank, text in enumerate(logs):
        assert f"rank {rank}/4 (local {rank % 2}, node {rank // 2}/2)" in text
    assert wait_done(job, slurm) == ["COMPLETED"]
    # The profile's env value was passed as data: nothing in it ran.
    assert not (profile.parent / "pwned").exists() and not (profile.parent / "pwned2").exists()
    status = subprocess.run([sys.executable, "-m", "jobs.status", str(baseline)], cwd=ROOT, env=slurm,
                            capture_output=True, text=True)
    assert status.returncode == 0 and f"job {job}" in status.stdout and "COMPLETED" in status.stdout
    logs_cli = subprocess.run([sys.executable, "-m", "jobs.logs", str(baseline), "--task", "3"], cwd=ROOT, env=slurm,
                              capture_output=True, text=True)
    assert logs_cli.returncode == 0 and "rank 3/4" in logs_cli.stdout


def _elapsed_seconds(job: str, env: dict) -> int:
    text = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], env=env, capture_output=True,
                          text=True).stdout.strip()
    parts = [int(p) for p in text.replace("-", ":").split(":")] if text else [0]
    return sum(p * m for p, m in zip(reversed(parts), (1, 60, 3600, 86400)))


def test_time_limit_requeues_before_walltime(slurm, profile):
    """The time-limit signal (USR2 60 s before the limit) checkpoints, requeues and resumes.

    To hit the limit during training whatever this machine's speed, the job starts with a long
    limit; once it trains, the limit is cut so that less than the signal delay remains, and it is
    raised again after the requeue so the next attempt can finish."""
    steps = 1000
    proc = submit(profile, "--nodes", "1", "smoke", "--name", "chained", "--time", "20", *TINY,
                  "--set", "max_epochs=1", "--set", f"steps_per_epoch={steps}", "--set", "log_steps=10",
                  "--set", "warmup_epochs=0", env=slurm)
    assert proc.returncode == 0, proc.stderr
    job = job_id_of(proc.stdout)
    # Followed from submission (the log does not exist yet) through the requeue to the end.
    following = subprocess.Popen([sys.executable, "-m", "jobs.logs", "chained", "--cluster", str(profile), "--follow"],
                                 cwd=ROOT, env=slurm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    model_dir = experiment(profile, "chained") / "model"
    wait_for_step(model_dir, (0, 20))
    limit_min = _elapsed_seconds(job, slurm) // 60 + 2  # 60-120 s left: the signal is due within a minute
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={limit_min}"], env=slurm, check=True)
    deadline = time.time() + 300
    while time.time() < deadline and "REQUEUED" not in sacct_states(job, slurm):
        time.sleep(1)
    assert "REQUEUED" in sacct_states(job, slurm), "the time-limit signal never requeued the job"
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=20"], env=slurm, check=True)
    states = wait_done(job, slurm, timeout_s=900)
    assert states[-1] == "COMPLETED" and len(states) >= 2, states
    followed, errors = following.communicate(timeout=60)  # it ends by itself when the job has
    assert following.returncode == 0, errors
    assert followed == (experiment(profile, "chained") / "submitit" / f"{job}_0_log.out").read_text()
    recs = records(model_dir)
    stops = [r["data"] for r in recs if r["type"] == "LOG" and r["data"].get("exit_code") == 75]
    assert stops and 20 <= stops[0]["global_step"] < steps
    assert train_steps(model_dir) == [(0, s) for s in range(10, steps + 1, 10)]
    batch_log = (experiment(profile, "chained") / "submitit" / f"{job}_0_log.out").read_text()
    assert "checkpointed on signal; requeue 1 of 5" in batch_log
    assert f"effnet-slurm: job {job} attempt 2" in batch_log  # appended, not truncated


def test_raw_sub_script_runs_with_plain_sbatch(slurm, profile, tmp_path):
    """As a user of NVIDIA's scripts does: plain sbatch from the checkout, the site's setting in the
    environment. Every rank's lines in the batch output carry its rank; a PARTITION the job does not run
    in ends it at once, with the line that says how to ask for it."""
    from jobs.subfiles import render_sub

    overrides = dict(arg.split("=", 1) for arg in TINY[1::2])
    script = tmp_path / "run_smoke.sub"
    script.write_text(render_sub(str(profile), "smoke", overrides))
    mine = tmp_path / "my-experiments"

    def sbatch(**environ: str) -> str:
        return subprocess.run(["sbatch", "--parsable", "-N", "1", "-o", str(tmp_path / "effnet-%x-%j.out"),
                               str(script)], cwd=ROOT, env={**slurm, **environ}, capture_output=True, text=True,
                              check=True).stdout.strip()

    job = sbatch(EXPERIMENTS_DIR=str(mine))
    output = lambda job: (tmp_path / f"effnet-effnet-smoke-{job}.out").read_text()  # noqa: E731
    assert wait_done(job, slurm) == ["COMPLETED"], output(job)[-3000:]
    assert train_steps(mine / "smoke-testslurm-1n" / "model") == EXPECTED_STEPS
    labelled = [line for line in output(job).splitlines() if re.match(r"^[01]: ", line)]
    assert {line[:3] for line in labelled} == {"0: ", "1: "}, output(job)[-3000:]
    refused = sbatch(EXPERIMENTS_DIR=str(mine), PARTITION="high")
    assert wait_done(refused, slurm) == ["FAILED"]
    assert "effnet-slurm: PARTITION=high, but this job runs in debug: submit with sbatch -p high" in output(refused)


def test_cancel_stops_a_queued_job(slurm, profile):
    # Occupy every node from the high partition so that our job has to wait.
    blocker = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "-p", "high", "-N", "4", "--wrap", "sleep 30"], env=slurm,
                             capture_output=True, text=True, check=True).stdout.strip()
    proc = submit(profile, "--nodes", "1", "smoke", "--name", "cancelled", *TINY, env=slurm)
    job = job_id_of(proc.stdout)
    out = subprocess.run([sys.executable, "-m", "jobs.cancel", "cancelled", "--cluster", str(profile)], cwd=ROOT,
                         env=slurm, capture_output=True, text=True)
    assert out.returncode == 0 and job in out.stdout, out.stderr
    assert wait_done(job, slurm) == ["CANCELLED"]
    subprocess.run(["scancel", blocker], env=slurm)


def test_benchmark_sweep_gives_a_weak_scaling_table(slurm, profile):
    proc = submit(profile, "--sweep", "nodes=1,2", "--benchmark", "smoke", "--wait", *TINY[:2],
                  "--set", "benchmark_steps=20", "--set", "benchmark_warmup_steps=3", "--set", "log_steps=5", env=slurm)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| B0 48px |")]
    assert [row.split("|")[2].strip() for row in rows] == ["2", "4"]
    assert "1.00x (100% of 1x)" in rows[0] and "% of 2x)" in rows[1]
    sweep = profile.parent / "experiments" / "sweep-smoke-bench-testslurm"
    out = subprocess.run([sys.executable, "-m", "tools.collect", str(sweep), "--table", "throughput"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and rows[1] in out.stdout
