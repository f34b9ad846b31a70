"""Writing a benchmark's table to benchmarks/results/ (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform


def write_table(text: str, path: str) -> None:
    """Write ``text`` (a finished markdown table) to ``path``, making its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def cpu_model() -> str:
    """The processor's name (Linux: /proc/cpuinfo's "model name"), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
