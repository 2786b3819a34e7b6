"""The squashfs image that the local cluster's containers run: a root of its own, nearly empty.

The real image (the project's `Dockerfile`, on the NGC TensorFlow image) holds CUDA, its own
TensorFlow and Horovod, and takes many minutes and gigabytes to build. This one holds no software at
all: `/usr`, the interpreter's prefix and the checkout are mounted read-only from the host when a
step starts (`mounts`), so the image builds in a second and the container runs the very code and
venv under test. What it does hold makes the container a container: its own `/` (`bin`, `lib`,
`lib64` and `sbin` point into the mounted `/usr`), `etc/passwd` and `etc/group`, the fixed workdir
WORKDIR where the checkout appears, and a marker file that exists only inside the image.

    python -m tools.local_slurm image [PATH]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

WORKDIR = Path("/workspace")  # the checkout, inside the container (a profile names it as its workdir)
MARKER = Path("/etc/effnet-local-image")  # only the image has it: a rank that reads it runs in the image
MARKER_TEXT = "effnet-slurm local test image 1"
ROOT = Path(__file__).resolve().parents[2]


def build_image(path: Path) -> bool:
    """Write the image at `path` (atomically) unless one with this marker is there; True when written."""
    if path.is_file() and _marker_of(path) == MARKER_TEXT:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="image-", dir=path.parent) as work:
        root = Path(work) / "root"
        for sub in ("usr", "proc", "sys", "dev", "tmp", "run", "var/tmp", "etc", "root", WORKDIR.relative_to("/")):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        for link in ("bin", "lib", "lib64", "sbin"):
            (root / link).symlink_to(f"usr/{link}")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / MARKER.relative_to("/")).write_text(MARKER_TEXT + "\n")
        partial = Path(work) / "image.sqsh"
        subprocess.run(["mksquashfs", str(root), str(partial), "-noappend", "-all-root", "-quiet", "-no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        partial.replace(path)
    return True


def _marker_of(path: Path) -> str | None:
    out = subprocess.run(["unsquashfs", "-cat", str(path), str(MARKER.relative_to("/"))], capture_output=True,
                         text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def mounts(checkout: Path = ROOT) -> list[tuple[Path, Path]]:
    """What a step mounts read-only: (host path, container path). The venv's interpreter lives under its
    base prefix, which is not under /usr on every machine."""
    base = Path(sys.base_prefix).resolve()
    pairs = [(Path("/usr"), Path("/usr"))]
    if not base.is_relative_to("/usr"):
        pairs.append((base, base))
    return [*pairs, (checkout.resolve(), WORKDIR)]


def container_mounts(checkout: Path = ROOT) -> str:
    """The `--container-mounts` value: every mount read-only."""
    return ",".join(f"{src}:{dst}:ro" for src, dst in mounts(checkout))
