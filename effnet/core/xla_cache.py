"""Where a run keeps its XLA executables between attempts, and how a rank is pointed at them.

TensorFlow's own persistent compilation cache (`--tf_xla_persistent_cache_directory` in
TF_XLA_FLAGS, read once by its C++ core) writes one file per compiled cluster, keyed by the
cluster's signature and a fingerprint of its HLO, and on a hit checks the whole HLO against the
file's. So model, stage (resolution), precision and batch are in the key by construction. What it
does not cover, this module does:

- the TensorFlow version: a directory per version, so an upgraded image never loads an
  executable built by another compiler;
- concurrent writers: a directory per rank, so no file is written by one process while another
  reads it (TensorFlow writes in place, and a rank that reads a partial file fails its step);
- a file cut short when an attempt was killed while writing it: TensorFlow would fail the step on
  it rather than recompile, so `drop_incomplete` removes such files before TensorFlow starts.

The key also holds the compiled function's name, which carries a process-wide trace counter:
`effnet.train.loop.Trainer` traces every stage's step first, in stage order, so that the name is
the same in every attempt. TensorFlow-free: the launcher calls it before TensorFlow is imported.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

XLA_FLAGS_VARIABLE = "TF_XLA_FLAGS"
CACHE_FLAG = "--tf_xla_persistent_cache_directory"
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")
_ENTRY_FIELDS = {1, 2, 3}  # XlaSerializedCacheEntry: key, hlo_module, executable


def tensorflow_version() -> str:
    """The installed TensorFlow's version, without importing it ('unknown' if no distribution says)."""
    for name in _TF_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def cache_dir(model_dir: str | Path, rank: int, tf_version: str) -> Path:
    """This rank's cache in the experiment's model directory (on the shared filesystem)."""
    return Path(model_dir) / "xla-cache" / f"tf-{tf_version}" / f"rank-{rank}"


def with_cache_flag(xla_flags: str, directory: Path) -> str:
    """TF_XLA_FLAGS with the cache directory added; a directory the user already chose is kept."""
    if CACHE_FLAG in xla_flags:
        return xla_flags
    return f"{xla_flags} {CACHE_FLAG}={directory}".strip()


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def is_complete_entry(data: bytes) -> bool:
    """Whether `data` is a whole serialized cache entry: its top-level fields parse to the last byte
    and key, HLO and executable are all there (a file cut anywhere fails one of the two)."""
    seen, at = set(), 0
    try:
        while at < len(data):
            tag, at = _varint(data, at)
            field, wire = tag >> 3, tag & 7
            if wire == 2:
                length, at = _varint(data, at)
                at += length
            elif wire == 0:
                _, at = _varint(data, at)
            elif wire in (1, 5):
                at += 8 if wire == 1 else 4
            else:
                return False
            seen.add(field)
    except ValueError:
        return False
    return at == len(data) and _ENTRY_FIELDS <= seen


def drop_incomplete(directory: Path) -> list[Path]:
    """Remove the cache files in `directory` that are not whole entries; returns what was removed."""
    removed = []
    for path in sorted(directory.glob("*.pb")) if directory.is_dir() else []:
        try:
            complete = is_complete_entry(path.read_bytes())
        except OSError:
            continue
        if not complete:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
