"""The local cluster's files that need no daemon: the vendored sources' check, the image, the Slurm config.

The daemons themselves (Pyxis enabled, containers on every node, MPI ranks in them) are tested on the
real cluster by tests/test_pyxis.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools.local_slurm import pyxis
from tools.local_slurm.image import MARKER, MARKER_TEXT, WORKDIR, build_image, container_mounts
from tools.local_slurm.slurm_conf import Layout, slurm_conf


def copy_vendor(tmp_path: Path) -> Path:
    if pyxis.vendored(pyxis.DEFAULT_VENDOR) is None:
        pytest.skip(f"no vendored enroot and pyxis sources in {pyxis.DEFAULT_VENDOR}")
    vendor = tmp_path / "vendor"
    shutil.copytree(pyxis.DEFAULT_VENDOR, vendor)
    return vendor


def test_vendored_sources_are_checked_before_use(tmp_path):
    assert pyxis.vendored(tmp_path / "absent") is None  # no sources: Pyxis is off, not an error
    vendor = copy_vendor(tmp_path)
    assert pyxis.vendored(vendor) == vendor
    with open(vendor / pyxis.PMI_HOOK, "a") as hook:
        hook.write("\n# altered\n")
    with pytest.raises(pyxis.PyxisError, match=f"{pyxis.PMI_HOOK}: sha256 .*, expected {pyxis.VENDOR_SHA256[pyxis.PMI_HOOK]}"):
        pyxis.vendored(vendor)
    (vendor / pyxis.PYXIS_TARBALL).unlink()
    with pytest.raises(pyxis.PyxisError, match=f"lacks {pyxis.PYXIS_TARBALL}"):
        pyxis.vendored(vendor)


def test_up_fails_in_one_line_on_an_altered_source(tmp_path):
    vendor = copy_vendor(tmp_path)
    (vendor / pyxis.ENROOT_TARBALL).write_bytes(b"not the release")
    proc = subprocess.run([sys.executable, "-m", "tools.local_slurm", "up", "--dir", str(tmp_path / "cluster"),
                           "--vendor", str(vendor)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if "must run as root" in proc.stderr:
        pytest.skip("up needs root")
    assert proc.returncode == 1
    assert proc.stderr.startswith("local_slurm: error: ") and f"{pyxis.ENROOT_TARBALL}: sha256" in proc.stderr
    assert "Traceback" not in proc.stderr
    state = tmp_path / "cluster" / "state.json"
    assert not state.exists() or json.loads(state.read_text())["daemons"] == {}  # it started nothing


@pytest.mark.skipif(not shutil.which("mksquashfs"), reason="squashfs-tools is not installed (local_slurm up installs it)")
def test_image_has_a_root_of_its_own_and_is_written_once(tmp_path):
    image = tmp_path / "images" / "local.sqsh"
    assert build_image(image) is True
    listing = subprocess.run(["unsquashfs", "-lls", str(image)], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()
             if line.startswith(("d", "l", "-"))}
    for path in ("bin", "lib", "usr", "proc", "tmp", str(WORKDIR).lstrip("/"), str(MARKER).lstrip("/")):
        assert f"squashfs-root/{path}" in names, path
    assert "bin -> usr/bin" in listing
    assert not any(n.startswith("squashfs-root/usr/") for n in names)  # /usr comes from the host, read-only
    written = image.stat().st_mtime_ns
    assert build_image(image) is False and image.stat().st_mtime_ns == written
    assert subprocess.run(["unsquashfs", "-cat", str(image), str(MARKER).lstrip("/")], capture_output=True,
                          text=True).stdout.strip() == MARKER_TEXT


def test_container_mounts_are_read_only_with_the_checkout_at_the_workdir():
    mounts = container_mounts(ROOT).split(",")
    assert mounts[0] == "/usr:/usr:ro" and mounts[-1] == f"{ROOT}:{WORKDIR}:ro"
    assert all(m.endswith(":ro") for m in mounts)
    assert any(m.startswith(f"{Path(sys.base_prefix).resolve()}:") or sys.base_prefix.startswith("/usr")
               for m in mounts)


def test_pyxis_is_named_by_an_absolute_plugstack_path_only_when_on():
    layout = Layout(Path("/tmp/somewhere"))
    assert f"PlugStackConfig={layout.plugstack}\n" in slurm_conf(layout, pyxis=True)
    assert "PlugStackConfig" not in slurm_conf(layout, pyxis=False)
    assert pyxis.plugstack_conf().startswith(f"required {pyxis.PLUGIN} ")
    assert "%n" not in pyxis.mpi_conf()  # PMIxCliTmpDirBase does not expand it: the namespace makes it per node
