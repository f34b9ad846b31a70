"""Writing a benchmark's table to benchmarks/results/ (shared by the benchmark scripts)."""

from __future__ import annotations

import os


def write_table(text: str, path: str) -> None:
    """Write ``text`` (a finished markdown table) to ``path``, making its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
