"""Benchmarks: each figure is a ratio against a reference measured in the same run, on this machine."""

import json
from pathlib import Path


def report_figures(figures: dict[str, float], json_path: Path | None, digits: int = 2) -> None:
    """Print one figure per line and, if asked, write them as JSON (read back by `python -m bench`)."""
    width = max(len(k) for k in figures) + 4
    for key, value in figures.items():
        print(f"{key:<{width}}{value:>10.{digits}f}")
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2))
