"""Real photos that ship inside installed wheels, for tests and demos that must not download.

scikit-learn and matplotlib (both project dependencies) carry a few JPEG photographs.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

# (package, path inside the package) of each photo, in a fixed order.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_photos() -> list[Path]:
    """Paths of the shipped JPEG photos that exist in this environment (at least one expected)."""
    found = []
    for package, relative in PHOTOS:
        root = _package_dir(package)
        if root is not None and (root / relative).is_file():
            found.append(root / relative)
    if not found:
        raise FileNotFoundError("no shipped photos found: install scikit-learn or matplotlib")
    return found
