"""Container mistakes are one line at submit, exit 2, nothing written; what Pyxis accepts is accepted.

Each case is a real `python -m jobs.submit` (not a dry run) of a profile with the localpyxis shape:
the mistake must stop it before the experiment directory exists and before sbatch is called.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools.local_slurm.image import build_image


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    if not shutil.which("mksquashfs"):
        pytest.skip("squashfs-tools is not installed (local_slurm up installs it)")
    path = tmp_path_factory.mktemp("image") / "local.sqsh"
    build_image(path)
    return path


def profile_text(tmp: Path, image: str, mounts: list[str], workdir: str = "/workspace") -> str:
    listed = ", ".join(f'"{m}"' for m in mounts)
    return f"""name = "mine"
launch = "pmix"
tasks_per_node = 2
max_nodes = 4
container_image = "{image}"
container_mounts = [{listed}]
container_workdir = "{workdir}"
container_writable = true
python = "/workspace/.venv/bin/python"
workdir = "/workspace"
data_dir = "/data"
experiments_dir = "{tmp / 'experiments'}"
"""


def submit(tmp: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    (tmp / "mine.toml").write_text(text)
    return subprocess.run([sys.executable, "-m", "jobs.submit", "--cluster", str(tmp / "mine.toml"), "--nodes", "2",
                           "smoke", *args], cwd=tmp, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("case, message", [
    ("missing image", "container_image '{tmp}/nope.sqsh': no such file"),
    ("missing mount source", "container_mounts entry '{tmp}/absent:/data:ro': the source {tmp}/absent does not exist"),
    ("relative image", "container_image 'img.sqsh': Pyxis pulls it from a registry"),
    ("relative existing file", "container_image 'image-file': Pyxis pulls it from a registry"),
    ("home image", "container_image '~/img.sqsh': a `~` path is never expanded"),
    ("relative mount source", "container_mounts entry 'data:/data:ro': the source must be an absolute path"),
    ("same destination", "container_mounts entries '{tmp}/data:/data:ro' and '{tmp}/other:/data' both mount onto /data"),
    ("workdir nowhere", "container_workdir '/nowhere': not in the image"),
])
def test_container_mistakes_are_one_line_before_anything_is_written(tmp_path, image, case, message):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    (tmp_path / "image-file").write_text("a squashfs, say")
    good = [f"{data}:/data:ro", f"{ROOT}:/workspace:ro"]
    text = {
        "missing image": profile_text(tmp_path, f"{tmp_path}/nope.sqsh", good),
        "missing mount source": profile_text(tmp_path, str(image), [f"{tmp_path}/absent:/data:ro", good[1]]),
        "relative image": profile_text(tmp_path, "img.sqsh", good),
        "relative existing file": profile_text(tmp_path, "image-file", good),
        "home image": profile_text(tmp_path, "~/img.sqsh", good),
        "relative mount source": profile_text(tmp_path, str(image), ["data:/data:ro", good[1]]),
        "same destination": profile_text(tmp_path, str(image), [*good, f"{other}:/data"]),
        "workdir nowhere": profile_text(tmp_path, str(image), good, workdir="/nowhere"),
    }[case]
    proc = submit(tmp_path, text)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], proc.stderr
    assert not (tmp_path / "experiments").exists()


def test_what_pyxis_accepts_is_accepted_and_quoted(tmp_path, image):
    """A registry image in Pyxis's syntax (`#` included) and a bare SRC mount; the `#` stays a word."""
    registry = "nvcr.io#nvidia/tensorflow:25.02-tf2-py3"
    proc = submit(tmp_path, profile_text(tmp_path, registry, ["/usr", f"{ROOT}:/workspace:ro"]), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    srun = proc.stdout[proc.stdout.index("\nsrun "):proc.stdout.index("status=$?")]
    assert f"'--container-image={registry}'" in srun
    assert "--container-mounts=/usr," in srun
    line = next(w for w in srun.splitlines() if "--container-image=" in w).strip().removesuffix("\\").strip()
    words = subprocess.run(["bash", "-c", f"printf '%s\\n' {line}"], capture_output=True, text=True).stdout
    assert words.splitlines() == [f"--container-image={registry}"]  # one word, `#` and all: no comment
    # The workdir is in the image (a file image here): accepted without a mount on it.
    ok = submit(tmp_path, profile_text(tmp_path, str(image), ["/usr", f"{ROOT}:/elsewhere:ro"]), "--dry-run")
    assert ok.returncode == 0, ok.stderr
