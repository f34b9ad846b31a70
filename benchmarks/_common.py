"""What every benchmark script shares: where things are, the one-core start-up, the machine
description and writing a finished table to benchmarks/results/.

A script runs as ``python benchmarks/NAME.py`` (Python puts benchmarks/ first on ``sys.path``)
and imports this module before anything else::

    import _common  # the checkout's reinforced_data first on sys.path
    _common.one_core()  # per-core figures: before torch / numpy load
    import torch

Importing it puts the repository root first on ``sys.path``, so the benchmarks measure the
checkout they live in (its in-place build of ``reinforced_data._C``) rather than another install.
Nothing here imports torch at module level: :func:`one_core` must be able to set the thread
variables before torch loads.
"""

from __future__ import annotations

import os
import platform
import sys

__all__ = ["HERE", "ROOT", "DATA", "RESULTS", "one_core", "one_torch_thread", "cpu_model", "machine",
           "versions", "write_table", "publish"]

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/
ROOT = os.path.dirname(HERE)  # the repository root
DATA = os.path.join(HERE, ".data")  # scratch (gitignored)
RESULTS = os.path.join(HERE, "results")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: the thread pools pinned to one thread by :func:`one_core`
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


# ------------------------------------------------------------------ start-up
def one_core() -> None:
    """Per-core figures: every thread pool of this process (and of the processes it starts, which
    inherit the environment) set to one thread, then torch's intra- and inter-op pools.

    Call it before torch or numpy is imported: OpenMP, MKL and OpenBLAS read their variable once,
    when they load. (torch's own pools are set here too, so a late call still pins those.)"""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    one_torch_thread()


def one_torch_thread() -> None:
    """Pin torch's intra- and inter-op pools to one thread (per-core figures)."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or work already ran in the pool (e.g. imported into a running process)
        pass


# ------------------------------------------------------------------ the machine
def cpu_model() -> str:
    """The processor's name (``reinforced_data._machine.cpu_model``, what the demo's results name)
    with its family / model numbers, whether it runs under a hypervisor, and the vector ISA the
    kernels use (a virtual machine may report only a generic name)."""
    from reinforced_data._machine import cpu_model as name

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return name()
    flags = set(info.get("flags", "").split())
    isa = "AVX2" if "avx2" in flags else "no AVX2 (baseline kernels)"
    extra = ", ".join(x for x in (f"family {info['cpu family']}" if "cpu family" in info else "",
                                  f"model {info['model']}" if "model" in info else "",
                                  "AVX-512" if "avx512f" in flags else "") if x)
    hyper = " under a hypervisor" if "hypervisor" in flags else ""
    return f"{name()} ({extra}{hyper}; the kernels run their {isa} build)"


def machine() -> str:
    """One line naming the machine a table was measured on: the processor, the logical CPUs this
    process sees, the operating system."""
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs visible, "
            f"{platform.system()} {platform.release()}")


def versions() -> str:
    """The versions of the libraries the benchmarks compare with."""
    import numpy as np
    import PIL
    import timm
    import torch
    import torchvision

    return (f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
            f"Pillow {PIL.__version__}, numpy {np.__version__}, Python {platform.python_version()}")


# ------------------------------------------------------------------ results
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
