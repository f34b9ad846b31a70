"""Markers and fixtures shared by the suite (the markers are registered in pyproject.toml).

* ``@pytest.mark.compiled``: the test needs the compiled op ``torch.ops.reinforced_data``.
  Skipped when ``reinforced_data._ops.compiled_available()`` is False, unless
  ``REINFORCED_DATA_REQUIRE_COMPILED=1`` is set (as in CI): then such a test FAILS, so a
  broken build cannot pass as a green run full of skips.
* ``@pytest.mark.cuda``: the test needs a CUDA device; skipped without one.
* ``@pytest.mark.cuda_emulation``: the CUDA kernels compiled for the host (RD_EMULATE) and
  run without a GPU; runs by default (see test_cuda_emulation.py).
* ``@pytest.mark.slow``: seconds or more; ``-m "not slow"`` leaves these out while working.
* ``@pytest.mark.subprocess``: starts other processes (a subprocess, torchrun, DataLoader
  workers).
* The ``compiled`` fixture applies the same rule as the marker, for fixtures and helpers.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

REQUIRE_COMPILED_ENV = "REINFORCED_DATA_REQUIRE_COMPILED"


def _ops_module():
    return importlib.import_module("reinforced_data._ops")


def compiled_required() -> bool:
    return os.environ.get(REQUIRE_COMPILED_ENV) == "1"


def unavailable(why: str) -> None:
    """Skip the test, or fail it when compiled code is required (as in CI)."""
    if compiled_required():
        pytest.fail(f"{why} but {REQUIRE_COMPILED_ENV}=1 is set", pytrace=False)
    pytest.skip(why)


def _require_compiled() -> None:
    ops = _ops_module()
    if not ops.compiled_available():
        unavailable(f"compiled op unavailable ({ops.unavailable_reason()})")


def pytest_runtest_setup(item):
    # Skip in setup; when the compiled op is required, let the test FAIL in its call
    # phase instead (pytest_runtest_call below), so it counts as a failure, not an error.
    if item.get_closest_marker("compiled") is not None and not compiled_required():
        _require_compiled()
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if item.get_closest_marker("compiled") is not None and compiled_required():
        _require_compiled()


@pytest.fixture
def compiled():
    """The ``torch.ops.reinforced_data`` namespace; skips (or fails, see module doc) without it."""
    _require_compiled()
    return torch.ops.reinforced_data


@pytest.fixture
def one_torch_thread():
    """Run the test with one intra-op torch thread, restoring the count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
