"""Writing a benchmark's table to benchmarks/results/ (shared by the benchmark scripts)."""

from __future__ import annotations

import os

from reinforced_data._machine import cpu_model  # noqa: F401  (the scripts import it from here)


def one_torch_thread() -> None:
    """Pin torch's intra- and inter-op pools to one thread (per-core figures). The OMP/MKL
    variables must be set by the script itself, before torch is imported."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (e.g. imported into a running process)
        pass


def write_table(text: str, path: str) -> None:
    """Write ``text`` (a finished markdown table) to ``path``, making its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def publish(text: str, path: str) -> None:
    """Print a finished table, write it to ``path`` and say where."""
    print(text)
    write_table(text, path)
    print(f"wrote {path}")
