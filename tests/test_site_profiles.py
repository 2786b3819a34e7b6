"""The test cluster's profile is a site's copy of the production one: `localpyxis` differs from
`dgxa100` only in site values (sizes, partition, timeouts, image, mounts, paths, transport), never in
the structure of the job, so what the local Pyxis cluster proves holds for the script a DGX runs.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from effnet.core.paths import ExperimentPaths
from jobs.launcher import SUBMITIT_COMMAND, job_spec
from jobs.profile import CLUSTERS_DIR, load_profile
from jobs.recipes import get_recipe, resolve
from jobs.render import render_sbatch

# Options that a site value switches on or off: GPUs, whole nodes, CPU binding, accounting.
SITE_SWITCHED = ("gpus-per-node", "exclusive", "cpu-bind", "account", "qos")


def rendered(name: str, tmp_path: Path) -> str:
    """The script of `smoke_stages` on 2 nodes of profile `name`, with one experiments directory for both
    (the recipe is resolved once, on localpyxis: the GPU profile has no batch size for a CPU recipe)."""
    profile = dataclasses.replace(load_profile(name), experiments_dir=str(tmp_path))
    resolving = dataclasses.replace(load_profile("localpyxis"), experiments_dir=str(tmp_path))
    paths = ExperimentPaths.create(tmp_path, "same")
    resolved = resolve(get_recipe("smoke_stages"), resolving, 2, model_dir=str(paths.model_dir), data_dir="/data")
    spec = dataclasses.replace(job_spec(profile, resolved, paths, 2), header=("header",))
    return render_sbatch(spec, [profile.python, *SUBMITIT_COMMAND, str(paths.submitit_dir)])


def shape(text: str, python: str) -> list[str]:
    """The script with every site value masked: option values, numbers, the ranks' interpreter; exported
    transport variables and site-switched options left out."""
    out = []
    for line in text.replace(f"{python} -u ", "PYTHON -u ").splitlines():
        if line.startswith("export ") or any(f"--{option}" in line for option in SITE_SWITCHED):
            continue
        line = re.sub(r"(--[a-z-]+)=\S+", r"\1=V", line)
        out.append(re.sub(r"\d+", "N", line))
    return out


def test_localpyxis_and_dgxa100_have_the_same_fields(tmp_path):
    fields = {name: list(tomllib.loads((CLUSTERS_DIR / f"{name}.toml").read_text())) for name in
              ("dgxa100", "localpyxis")}
    assert fields["dgxa100"] == fields["localpyxis"]  # the same fields, in the same order


def test_localpyxis_and_dgxa100_scripts_differ_only_in_site_values(tmp_path):
    dgx, local = load_profile("dgxa100"), load_profile("localpyxis")
    dgx_text, local_text = rendered("dgxa100", tmp_path), rendered("localpyxis", tmp_path)
    assert dgx_text != local_text
    assert shape(dgx_text, dgx.python) == shape(local_text, local.python)
    for text in (dgx_text, local_text):
        srun = text[text.index("\nsrun "):text.index("status=$?")]
        for flag in ("--mpi=pmix", "--container-image=/", "--container-mounts=", "--container-workdir=",
                     "--container-writable", "--no-container-mount-home", f":{tmp_path}"):
            assert flag in srun, flag


def test_localpyxis_names_only_what_the_local_cluster_provides():
    from tools.local_slurm.cluster import DEFAULT_DIR
    from tools.local_slurm.image import HOST_PYTHON, WORKDIR
    from tools.local_slurm.slurm_conf import Layout

    profile = load_profile("localpyxis")
    assert profile.container_image == str(Layout(DEFAULT_DIR).image)
    assert profile.container_workdir == profile.workdir == str(WORKDIR)
    assert profile.python.startswith(f"{WORKDIR}/")
    destinations = [m.split(":")[1] for m in profile.container_mounts]
    assert str(HOST_PYTHON) in destinations and str(WORKDIR) in destinations and profile.data_dir in destinations
    assert all(m.endswith(":ro") for m in profile.container_mounts)


def test_the_gpu_profiles_mark_every_value_a_site_changes():
    """partition, account, binding, image, mounts, experiments and the network ([env]) say SITE."""
    site_keys = ("partition", "account", "cpu_bind", "container_image", "container_mounts", "experiments_dir",
                 "[env]", "NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "UCX_TLS")
    for name in ("dgxa100", "dgx1v100"):
        lines = (CLUSTERS_DIR / f"{name}.toml").read_text().splitlines()
        marked = [line for line in lines if line.split("=")[0].strip() in site_keys]
        assert len(marked) >= 8 and all("# SITE" in line for line in marked), [l for l in marked if "SITE" not in l]
        assert "NCCL_SOCKET_IFNAME" in lines[0] + lines[1] + lines[2] + lines[3]  # the header names the network
