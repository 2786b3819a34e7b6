"""The Pyxis path on the real local cluster: enroot containers on every node, `srun --mpi=pmix`, MPI Horovod.

What a `dgxa100` job does on each `srun`, proven with the project's own probe (tools.hvd_probe): 4 MPI
Horovod ranks on 2 nodes, each in a container of the local image, agree on their ranks and allreduce
correctly, and no container or mount is left on any node afterwards. The same probe under Gloo and no
container exercises the other controller of the one Horovod build. Every `srun` has a time limit and
every subprocess a timeout: a step pending on a down node or an MPI_Init waiting for PMIx fails, not hangs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.pyxis_runs import cluster_state, leftovers, slurmd_pids
from tests.test_horovod import MPI_TCP, NO_MPI, probe_records
from tools.local_slurm.image import MARKER, MARKER_TEXT, WORKDIR, container_mounts

pytestmark = [pytest.mark.slurm, pytest.mark.horovod]
# What the batch script exports for its ranks: submitit's JobEnvironment tells the scheduler by it.
RANK_ENV = {"SUBMITIT_EXECUTOR": "slurm"}


def srun(env: dict, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["srun", "-p", "debug", "-t", "3", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_every_node_has_pmix_pyxis_and_a_namespace_of_its_own(slurm, pyxis_cluster):
    listed = subprocess.run(["srun", "--mpi=list"], env=slurm, capture_output=True, text=True, timeout=60)
    assert "pmix" in listed.stdout + listed.stderr
    assert "--container-image" in subprocess.run(["srun", "--help"], env=slurm, capture_output=True, text=True,
                                                 timeout=60).stdout
    pids = slurmd_pids(cluster_state(slurm))  # now: the lost-node test restarts a slurmd
    assert len(pids) == 4
    namespaces = {os.readlink(f"/proc/{pid}/ns/mnt") for pid in pids.values()}
    assert len(namespaces) == 4 and os.readlink("/proc/self/ns/mnt") not in namespaces


def test_a_container_step_runs_on_every_node_in_the_image(slurm, pyxis_cluster):
    image = pyxis_cluster["dir"] + "/images/effnet-local.sqsh"
    proc = srun(slurm, "-N", "4", "--ntasks-per-node=1", f"--container-image={image}", "--no-container-mount-home",
                "--container-mounts=/usr:/usr:ro", "sh", "-c", f'echo "$SLURMD_NODENAME $(cat {MARKER})"')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(proc.stdout.splitlines()) == [f"node{i} {MARKER_TEXT}" for i in range(1, 5)]
    assert leftovers(cluster_state(slurm)) == {}


@pytest.mark.skipif(NO_MPI is not None, reason=NO_MPI or "")
def test_mpi_horovod_ranks_in_pyxis_containers(slurm, pyxis_cluster):
    """One srun --mpi=pmix step, 2 nodes x 2 ranks, each in a writable container of the image with the
    checkout mounted read-only at the workdir: MPI decides the ranks, and they allreduce correctly."""
    image = pyxis_cluster["dir"] + "/images/effnet-local.sqsh"
    env = {**slurm, **MPI_TCP, **RANK_ENV, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = srun(env, "--mpi=pmix", "-N", "2", "--ntasks-per-node=2", f"--container-image={image}",
                "--container-writable", f"--container-mounts={container_mounts(ROOT)}",
                f"--container-workdir={WORKDIR}", "--no-container-mount-home",
                ".venv/bin/python", "-m", "tools.hvd_probe", "--launch", "pmix", "--marker", str(MARKER))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    records = probe_records(proc.stdout)
    for rank, r in sorted(records.items()):
        print(f"rank {rank}: " + json.dumps({k: r[k] for k in ("size", "mpi", "gloo", "slurm_procid", "pmix_rank",
                                                              "sum", "marker")}))
    assert sorted(records) == [0, 1, 2, 3]
    for rank, r in records.items():
        assert (r["mpi"], r["gloo"], r["size"], r["sum"]) == (True, False, 4, 6.0)
        assert r["slurm_procid"] == r["pmix_rank"] == str(rank)
        assert r["marker"] == MARKER_TEXT
        assert "workspace" in r["root"] and Path(ROOT.parts[1]).name not in r["root"]  # the image's root
    assert leftovers(cluster_state(slurm)) == {}


def test_gloo_horovod_ranks_without_a_container(slurm):
    """The same probe on 2 nodes under the project's Gloo rendezvous (jobs.task), no container, with the
    localslurm profile's environment (its nodes share loopback)."""
    profile_env = tomllib.loads((ROOT / "clusters" / "localslurm.toml").read_text())["env"]
    proc = srun({**slurm, **profile_env, **RANK_ENV}, "-N", "2", "--ntasks-per-node=2", sys.executable, "-m",
                "tools.hvd_probe", "--launch", "gloo", "--marker", str(MARKER))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    records = probe_records(proc.stdout)
    assert sorted(records) == [0, 1, 2, 3]
    for rank, r in records.items():
        assert (r["mpi"], r["gloo"], r["size"], r["sum"]) == (False, True, 4, 6.0)
        assert r["slurm_procid"] == str(rank) and r["pmix_rank"] is None
        assert r["marker"] is None  # the host's root
