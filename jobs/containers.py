"""What Pyxis will make of a profile's container fields, checked before anything is submitted.

A container mistake otherwise surfaces on every rank as a bare exit code 1, after the job waited in
the queue. Pyxis's own rules (pyxis 0.24.0):
- an image is a squashfs file only when it starts with `/` or `.`; anything else, `img.sqsh` or
  `~/img.sqsh` included, is pulled from a registry as `[USER@][REGISTRY#]IMAGE[:TAG]` (pyxis#127);
- a mount is `SRC[:DST[:FLAGS]]` with an absolute SRC that exists on the node; a bare `SRC` mounts at
  the same path;
- the workdir must exist in the container (pyxis#119).

`profile_problem` checks what the text alone shows; `visible_problem` checks files, but only where
the submit host can see them: a path whose top-level directory (`/lustre`, `/tmp`) is not here
belongs to a filesystem only the nodes have, and is left to them.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SQUASHFS_SUFFIXES = (".sqsh", ".squashfs", ".sqfs")
MOUNT_FLAGS = {"ro", "rw", "private", "slave", "shared", "rprivate", "rslave", "rshared", "bind", "rbind",
               "nosuid", "nodev", "noexec"}


@dataclass(frozen=True)
class Mount:
    source: str
    destination: str
    flags: str = ""

    @classmethod
    def parse(cls, entry: str) -> "Mount":
        parts = entry.split(":")
        if len(parts) == 1:
            return cls(parts[0], parts[0])
        if len(parts) == 2 and set(parts[1].split("+")) <= MOUNT_FLAGS and not parts[1].startswith("/"):
            return cls(parts[0], parts[0], parts[1])  # SRC:FLAGS
        return cls(parts[0], parts[1], ":".join(parts[2:]))


def image_is_file(image: str) -> bool:
    """Pyxis's own test: a path starts with `/` or `.`; everything else names a registry image."""
    return image.startswith(("/", "."))


def mistaken_image(image: str, submit_dir: Path) -> str | None:
    """Why a value Pyxis would pull from a registry is surely meant as a file, or None."""
    if image_is_file(image):
        return None
    if image.startswith("~"):
        return "a `~` path is never expanded and would be pulled from a registry: give the absolute path"
    if image.endswith(SQUASHFS_SUFFIXES) or (submit_dir / image).is_file():
        return f"Pyxis pulls it from a registry, since it starts with neither / nor ./: write /path or ./{image}"
    return None


def profile_problem(image: str, mounts: tuple[str, ...], workdir: str) -> str | None:
    """What the fields alone show Pyxis would refuse or misread; None when nothing. `mounts` may include
    the launcher's own (the experiments directory)."""
    seen: dict[str, str] = {}
    for entry in mounts:
        mount = Mount.parse(entry)
        if not mount.source.startswith("/"):
            return f"container_mounts entry {entry!r}: the source must be an absolute path (Pyxis refuses {mount.source!r})"
        if not mount.destination.startswith("/"):
            return f"container_mounts entry {entry!r}: the destination must be an absolute path"
        destination = str(PurePosixPath(mount.destination))
        if destination in seen:
            return (f"container_mounts entries {seen[destination]!r} and {entry!r} both mount onto {destination}")
        seen[destination] = entry
    if image.startswith("~"):
        return f"container_image {image!r}: {mistaken_image(image, Path('.'))}"
    if workdir and not workdir.startswith("/"):
        return f"container_workdir {workdir!r}: must be an absolute path inside the container"
    return None


def visible(path: str) -> bool:
    """The submit host sees the filesystem that holds `path`: its top-level directory is here."""
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and Path(parts[0], parts[1]).exists()


def _in_image(image: Path, path: str) -> bool | None:
    """Whether the squashfs image holds `path`; None when that cannot be known here."""
    if not shutil.which("unsquashfs"):
        return None
    out = subprocess.run(["unsquashfs", "-l", "-d", "", str(image), path.lstrip("/")], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        return None
    return any(line.strip().rstrip("/") == path.rstrip("/") for line in out.stdout.splitlines())


def visible_problem(image: str, mounts: tuple[str, ...], workdir: str, submit_dir: Path,
                    made_mounts: tuple[str, ...] = ()) -> str | None:
    """What the submit host can see is wrong with the files the fields name; None when nothing.
    `made_mounts` are the launcher's own (the experiments directory, made at submission)."""
    if reason := mistaken_image(image, submit_dir):
        return f"container_image {image!r}: {reason}"
    image_path = (submit_dir / image) if image.startswith(".") else Path(image)
    if image_is_file(image) and visible(str(image_path.resolve())) and not image_path.is_file():
        return f"container_image {image!r}: no such file"
    for entry in mounts:
        source = Mount.parse(entry).source
        if visible(source) and not Path(source).exists():
            return f"container_mounts entry {entry!r}: the source {source} does not exist"
    destinations = [Mount.parse(m).destination for m in (*mounts, *made_mounts)]
    if workdir and not any(PurePosixPath(workdir).is_relative_to(d) for d in destinations) \
            and image_is_file(image) and image_path.is_file() and _in_image(image_path, workdir) is False:
        return f"container_workdir {workdir!r}: not in the image {image} and under no container_mounts destination"
    return None
