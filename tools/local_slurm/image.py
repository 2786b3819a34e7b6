"""The squashfs image that the local cluster's containers run: a root of its own, nearly empty.

The real image (the project's `Dockerfile`, on the NGC TensorFlow image) holds CUDA, its own
TensorFlow and Horovod, and takes many minutes and gigabytes to build. This one holds no software at
all: `/usr`, the interpreter's prefix and the checkout are mounted read-only from the host when a
step starts (`mounts`), so the image builds in a second and the container runs the very code and
venv under test. What it does hold makes the container a container: its own `/` (`bin`, `lib`,
`lib64` and `sbin` point into the mounted `/usr`), `etc/passwd` and `etc/group`, the fixed workdir
WORKDIR where the checkout appears, and a marker file that exists only inside the image.

The venv's interpreter is a link to its base prefix (on these machines not under /usr, and not at
the same path on every machine). That prefix is mounted at the fixed HOST_PYTHON, and the image links
the prefix's own path there, so a profile can name every mount without knowing this machine.

    python -m tools.local_slurm image [PATH]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

WORKDIR = Path("/workspace")  # the checkout, inside the container (a profile names it as its workdir)
MARKER = Path("/etc/effnet-local-image")  # only the image has it: a rank that reads it runs in the image
KEY = Path("/etc/effnet-local-image.key")  # what the image was built for: a second build with the same key is skipped
MARKER_TEXT = "effnet-slurm local test image 2"
HOST_PYTHON = Path("/opt/host-python")  # where the interpreter's base prefix is mounted
ROOT = Path(__file__).resolve().parents[2]


def build_image(path: Path) -> bool:
    """Write the image at `path` (atomically) unless one with this marker is there; True when written."""
    base = python_prefix()
    key = f"{MARKER_TEXT}\n{base}"
    if path.is_file() and _key_of(path) == key:
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
        (root / KEY.relative_to("/")).write_text(key + "\n")
        if base is not None:
            (root / base.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / base.relative_to("/")).symlink_to(HOST_PYTHON)
        partial = Path(work) / "image.sqsh"
        subprocess.run(["mksquashfs", str(root), str(partial), "-noappend", "-all-root", "-quiet", "-no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        partial.replace(path)
    return True


def _key_of(path: Path) -> str | None:
    out = subprocess.run(["unsquashfs", "-cat", str(path), str(KEY.relative_to("/"))], capture_output=True,
                         text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def python_prefix() -> Path | None:
    """The interpreter's base prefix when /usr does not hold it (then it is mounted at HOST_PYTHON)."""
    base = Path(sys.base_prefix).resolve()
    return None if base.is_relative_to("/usr") else base


def mounts(checkout: Path = ROOT) -> list[tuple[Path, Path]]:
    """What a step mounts read-only: (host path, container path)."""
    base = python_prefix()
    return [(Path("/usr"), Path("/usr")), *([(base, HOST_PYTHON)] if base else []), (checkout.resolve(), WORKDIR)]


def container_mounts(checkout: Path = ROOT) -> str:
    """The `--container-mounts` value: every mount read-only."""
    return ",".join(f"{src}:{dst}:ro" for src, dst in mounts(checkout))


def link_host_paths(directory: Path, checkout: Path = ROOT) -> dict[str, Path]:
    """`DIR/host/checkout` and `DIR/host/python`: fixed names for the checkout that ran `up` and its
    interpreter's prefix, so that a profile (clusters/localpyxis.toml) names its mounts without
    knowing this machine. Mount sources may be links: the kernel resolves them."""
    links = {"checkout": checkout.resolve(), **({"python": base} if (base := python_prefix()) else {})}
    (directory / "host").mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = directory / "host" / name
        if link.is_symlink() and link.readlink() == target:
            continue
        partial = link.with_name(f".{name}.new")
        partial.unlink(missing_ok=True)
        partial.symlink_to(target)
        partial.replace(link)
    return links
