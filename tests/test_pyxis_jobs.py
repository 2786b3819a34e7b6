"""The project's own job on the local Pyxis cluster: `jobs.submit --cluster localpyxis`, end to end.

A 2-node x 2-rank `smoke_stages` run (AutoAugment, 32 -> 48 px between stages) with every rank in an
enroot container of the local image, started by `srun --mpi=pmix` and initialised through MPI; the
batch script and its fault handling run on the host beside the containers.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pyxis_runs import cluster_state, leftovers
from tests.runlogs import records, train_steps
from tests.slurm_cluster import (ROOT, STAGES_STEPS, STAGES_TINY, attempts, experiment, job_id_of, sacct_states,
                                 submit, wait_done)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def test_a_localpyxis_job_runs_in_containers_to_completion(slurm, pyxis_baseline):
    """The uninterrupted run the Pyxis fault tests compare with (conftest.py), as seen while it trained:
    each rank (its heartbeat names its hvd.rank() and PID) ran in the image, with Slurm's and PMIx's
    rank equal to Horovod's; the batch script ran on the host."""
    run = pyxis_baseline
    exp, job, model_dir = run.experiment, run.job, run.experiment / "model"
    assert sorted(run.rank_environ) == [0, 1, 2, 3]
    for rank, env in run.rank_environ.items():
        assert run.ranks_in_image[rank], f"rank {rank} does not run in the image"
        assert env.get("SLURM_PROCID") == env.get("PMIX_RANK") == str(rank), (rank, env.get("PMIX_RANK"))
    assert run.scripts_in_image and not any(run.scripts_in_image)

    assert run.states == ["COMPLETED"]
    assert train_steps(model_dir) == STAGES_STEPS  # every step once
    params = [r["data"] for r in records(model_dir) if r["type"] == "LOG" and r["step"] == "PARAMETER"]
    assert params[0]["world_size"] == 4 and params[0]["controller"] == "mpi"
    assert params[0]["augmenter_name"] == "autoaugment"
    logs = [(exp / "submitit" / f"{job}_{t}_log.out").read_text() for t in range(4)]
    for rank, text in enumerate(logs):
        assert f"rank {rank}/4 (local {rank % 2}, node {rank // 2}/2)" in text
    status = subprocess.run([sys.executable, "-m", "jobs.status", str(exp)], cwd=ROOT, env=slurm,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and f"job {job}" in status.stdout and "COMPLETED" in status.stdout, status.stdout
    print(status.stdout)
    logs_cli = subprocess.run([sys.executable, "-m", "jobs.logs", str(exp), "--task", "3"], cwd=ROOT, env=slurm,
                              capture_output=True, text=True, timeout=120)
    assert logs_cli.returncode == 0 and "rank 3/4" in logs_cli.stdout
    collect = subprocess.run([sys.executable, "-m", "tools.collect", str(exp), "--table", "accuracy"], cwd=ROOT,
                             env=slurm, capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0 and "collect: 1 log(s)" in collect.stderr, collect.stdout + collect.stderr
    assert "|" in collect.stdout  # the accuracy table
    assert leftovers(cluster_state(slurm)) == {}


def node_side_profile(pyxis_profile: Path, tmp_path: Path, case: str) -> Path:
    """The test profile with its experiments in `tmp_path`, and an image of its own or a read-only root."""
    text = pyxis_profile.read_text()
    values = {k: line.split('"')[1] for line in text.splitlines() for k in ("container_image", "experiments_dir")
              if line.startswith(f"{k} = ")}
    text = text.replace(values["experiments_dir"], str(tmp_path / "experiments"))
    if case == "image gone":
        shutil.copyfile(values["container_image"], tmp_path / "img.sqsh")
        text = text.replace(values["container_image"], str(tmp_path / "img.sqsh"))
    else:
        text = text.replace("container_writable = true", "container_writable = false")
    path = tmp_path / "nodeside.toml"
    path.write_text(text)
    return path


def hold_every_node(env: dict) -> str:
    """A job on every node of `debug`, running: what is submitted next waits until it is cancelled."""
    job = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "-p", "debug", "-N", "4", "-t", "5",
                          "--wrap", "sleep 300"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.time() + 120
    while sacct_states(job, env)[:1] != ["RUNNING"]:
        assert time.time() < deadline, f"the holding job {job} never ran"
        time.sleep(1)
    return job


@pytest.mark.parametrize("case, words", [
    ("image gone", "pyxis: [ERROR] No such file or directory: {image}"),
    ("read-only root", "An error occurred in MPI_Init"),
])
def test_ranks_that_cannot_start_fail_once_with_the_lines_that_say_why(slurm, pyxis_profile, tmp_path, case, words):
    """Caught on the nodes, not at submit: an image removed after submit (Pyxis's own error), or Open MPI
    on a read-only root. One attempt, app_error with those lines, FAILED; nothing written is lost."""
    profile = node_side_profile(pyxis_profile, tmp_path, case)
    holder = hold_every_node(slurm) if case == "image gone" else None
    try:
        proc = submit(profile, "--nodes", "2", "smoke_stages", "--name", "nodeside", "--no-wait", *STAGES_TINY,
                      env=slurm)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        if holder:
            (tmp_path / "img.sqsh").unlink()
    finally:
        if holder:
            subprocess.run(["scancel", holder], env=slurm, check=True)
    job = job_id_of(proc.stdout)
    exp = experiment(profile, "nodeside")
    assert wait_done(job, slurm, timeout_s=300) == ["FAILED"]
    ledger = attempts(exp)
    expected = words.format(image=tmp_path / "img.sqsh")
    assert [a["cause"] for a in ledger] == ["app_error"] and expected in ledger[0]["error"], ledger
    status = subprocess.run([sys.executable, "-m", "jobs.status", str(exp)], cwd=ROOT, env=slurm,
                            capture_output=True, text=True, timeout=120)
    assert expected in status.stdout, status.stdout
    print(status.stdout)
    assert (exp / "experiment.json").is_file() and (exp / "submitit" / f"{job}_submitted.pkl").is_file()
    assert leftovers(cluster_state(slurm)) == {}
