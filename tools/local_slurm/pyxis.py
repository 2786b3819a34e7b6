"""Pyxis and enroot on the local cluster: built from the vendored sources, enabled, a namespace per node.

A DGX profile runs every rank in a Pyxis container and starts ranks with `srun --mpi=pmix`; this
layer gives the local cluster the same path. Neither enroot 4.1.2 nor pyxis 0.24.0 is in a package
registry, so `up` builds them from `../shared/vendor/` (or `--vendor DIR`) after checking their
sha256, and installs them under /usr/local: enroot bakes its prefix in at build time, and Pyxis's
job epilog finds `enroot` only on a default PATH. A second `up` reuses the installed build.

Four slurmd share this host, and with them enroot's data and runtime paths (Pyxis names a step's
container `pyxis_<job>.<step>` on every node) and PMIx's client directory. Paths chosen through the
environment start containers but cannot remove them (slurmstepd does not see slurmd's variables),
so the paths in `enroot.conf` and `mpi.conf` are fixed, and each slurmd runs in a mount namespace
of its own where a per-node directory is bind-mounted on them. slurmstepd and the containers
inherit that namespace; the host's view of those paths stays empty.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .slurm_conf import Layout

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENDOR = ROOT.parent / "shared" / "vendor"
ENROOT_TARBALL, PYXIS_TARBALL = "enroot-4.1.2.tar.gz", "pyxis-0.24.0.tar.gz"
PMI_HOOK = "enroot-50-slurm-pmi.sh-master-8ea147d"  # master's hook: v4.1.2's breaks on SlurmdSpoolDir=%n
VENDOR_SHA256 = {
    ENROOT_TARBALL: "817e8d551135e6f3fc311d1ee57b03fb4d30325acba732f8dea43069ca11f8d3",
    PYXIS_TARBALL: "063653ba39125ac29796cc6079701d1ec34dd4c5baf698efacc0f36bf3619681",
    PMI_HOOK: "aaf285d581d732d21f76b8752976dd7779335e35656808af689ec4af40042f68",
}
PREFIX = Path("/usr/local")
ENROOT = PREFIX / "bin" / "enroot"
PLUGIN = PREFIX / "lib" / "slurm" / "spank_pyxis.so"
ENROOT_CONF = PREFIX / "etc" / "enroot" / "enroot.conf"
HOOK = PREFIX / "etc" / "enroot" / "hooks.d" / "50-slurm-pmi.sh"  # enroot runs executable *.sh hooks only
BUILT_FROM = PREFIX / "share" / "enroot" / "effnet-built-from"  # the sums the installed build came from
# Fixed paths that every node sees as its own directory (bind mounts in its namespace).
NODE_ENROOT = Path("/var/tmp/effnet-enroot")
NODE_PMIX = Path("/var/tmp/effnet-pmix")
BUILD_PACKAGES = ("gcc", "make", "libc6-dev", "makeself", "squashfs-tools", "jq", "parallel", "libbsd-dev",
                  "libslurm-dev", "fuse-overlayfs", "squashfuse", "pigz", "zstd", "libcap2-bin")
# slurmd loads its MPI plugins when it starts: PMIx must be there before, or `mpi/pmix` cannot load it.
PMIX_PACKAGE = "libpmix2"


class PyxisError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vendored(directory: Path) -> Path | None:
    """The checked vendor directory, or None when it is not there at all; an error when it is partial or altered."""
    if not directory.is_dir():
        return None
    missing = [name for name in VENDOR_SHA256 if not (directory / name).is_file()]
    if missing:
        raise PyxisError(f"{directory} lacks {', '.join(missing)}: Pyxis needs all of {', '.join(VENDOR_SHA256)}")
    for name, want in VENDOR_SHA256.items():
        if (got := sha256(directory / name)) != want:
            raise PyxisError(f"{directory / name}: sha256 {got}, expected {want}")
    return directory


def built_from() -> str:
    return "".join(f"{VENDOR_SHA256[name]}  {name}\n" for name in (ENROOT_TARBALL, PYXIS_TARBALL))


def installed() -> bool:
    """enroot and pyxis from exactly these sources are installed (a second `up` reuses them)."""
    return ENROOT.is_file() and PLUGIN.is_file() and BUILT_FROM.is_file() and BUILT_FROM.read_text() == built_from()


def _run(argv: list[str], cwd: Path, log: Path, env: dict | None = None) -> None:
    with open(log, "ab") as out:
        status = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}).returncode
    if status != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise PyxisError(f"`{' '.join(argv)}` in {cwd} failed ({status}); the end of {log}:\n  " + "\n  ".join(tail))


def build_and_install(vendor: Path, layout: Layout) -> None:
    """Unpack (the vendor directory may be read-only), build, install under /usr/local."""
    log = layout.log("pyxis-build")
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="pyxis-build-", dir=layout.dir) as work:
        work_dir = Path(work)
        for tarball in (ENROOT_TARBALL, PYXIS_TARBALL):
            with tarfile.open(vendor / tarball) as tar:
                tar.extractall(work_dir, filter="data")
        enroot_src, pyxis_src = work_dir / "enroot-4.1.2", work_dir / "pyxis-0.24.0"
        # The musl, makeself and linux-headers submodules are empty in the archive: glibc, Debian's makeself.
        makeself = enroot_src / "deps" / "dist" / "makeself" / "bin" / "enroot-makeself"
        makeself.parent.mkdir(parents=True)
        shutil.copy2("/usr/bin/makeself", makeself)
        for dep in ("makeself", "linux-headers", "musl"):
            (enroot_src / "deps" / dep / ".stamp").touch()
        # glibc 2.36 has no strlcpy: libbsd's header, and its shared library after the partial in-tree one.
        glibc = {"FORCE_GLIBC": "1", "CPPFLAGS": "-D_GNU_SOURCE -include bsd/string.h"}
        libs = "LDLIBS=-l:libbsd.a /usr/lib/x86_64-linux-gnu/libbsd.so"
        _run(["make", f"prefix={PREFIX}", libs], enroot_src, log, glibc)
        _run(["make", "install", f"prefix={PREFIX}", libs], enroot_src, log, glibc)
        _run(["make"], pyxis_src, log)
        PLUGIN.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pyxis_src / "spank_pyxis.so", PLUGIN)
    BUILT_FROM.parent.mkdir(parents=True, exist_ok=True)
    BUILT_FROM.write_text(built_from())


def enroot_conf() -> str:
    return f"""# written by python -m tools.local_slurm; per node, {NODE_ENROOT} is a directory of its own
ENROOT_RUNTIME_PATH {NODE_ENROOT}/run
ENROOT_DATA_PATH {NODE_ENROOT}/data
ENROOT_CACHE_PATH {NODE_ENROOT}/cache
ENROOT_TEMP_PATH {NODE_ENROOT}/tmp
"""


def plugstack_conf() -> str:
    # container_scope=job: named containers go with the job (the epilog removes them).
    return f"required {PLUGIN} runtime_path={NODE_ENROOT}/pyxis container_scope=job\n"


def mpi_conf() -> str:
    # PMIxCliTmpDirBase does not expand %n: the fixed path is per node through the namespace.
    return f"PMIxCliTmpDirBase={NODE_PMIX}\n"


def install_hook(vendor: Path) -> None:
    HOOK.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vendor / PMI_HOOK, HOOK)
    HOOK.chmod(0o755)


def node_dirs(layout: Layout, node: str) -> tuple[Path, Path]:
    """The node's own directories, seen inside its namespace at NODE_ENROOT and NODE_PMIX."""
    base = layout.dir / "nodes" / node
    return base / "enroot", base / "pmix"


def prepare_node(layout: Layout, node: str) -> None:
    enroot_dir, pmix_dir = node_dirs(layout, node)
    for sub in ("run", "data", "cache", "tmp", "pyxis"):
        (enroot_dir / sub).mkdir(parents=True, exist_ok=True)
    pmix_dir.mkdir(parents=True, exist_ok=True)
    for mount_point in (NODE_ENROOT, NODE_PMIX):
        mount_point.mkdir(parents=True, exist_ok=True)


def in_namespace(layout: Layout, node: str, argv: list[str]) -> list[str]:
    """`argv` run in a private mount namespace with the node's directories on the fixed paths.

    The shell `exec`s argv: the PID that `up` records is slurmd's own, as the fault tests expect."""
    enroot_dir, pmix_dir = node_dirs(layout, node)
    script = (f'mount --bind "$1" {NODE_ENROOT} && mount --bind "$2" {NODE_PMIX} && shift 2 && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "node-namespace",
            str(enroot_dir), str(pmix_dir), *argv]


def own_namespace(pid: int) -> bool:
    """The process runs in a mount namespace other than this one's."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def enroot_in(pid: int, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """`enroot ARGS` in the mount namespace of process `pid` (a node's slurmd): that node's containers."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", str(ENROOT), *args], capture_output=True, text=True,
                          timeout=timeout_s)


def containers(pid: int) -> list[str]:
    out = enroot_in(pid, "list")
    return out.stdout.split() if out.returncode == 0 else []


def remove_containers(pid: int) -> list[str]:
    """Remove the node's leftover `pyxis_*` containers with `enroot remove -f`, never by deleting files:
    a container's mounts may still be live. Returns the names removed."""
    names = [name for name in containers(pid) if name.startswith("pyxis_")]
    if names:
        enroot_in(pid, "remove", "-f", *names)
    return names
