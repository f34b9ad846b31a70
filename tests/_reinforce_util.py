"""Helpers for the reinforcement tests: a tiny deterministic teacher and small datasets.

Imported as ``import _reinforce_util`` by the test modules, and by subprocesses through
the teacher spec ``_reinforce_util:tiny_teacher`` with ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)


class TinyTeacher(nn.Module):
    """A seeded two-layer CNN classifier on normalised images.

    It runs each sample on its own, so its output for a view does not depend on the rest
    of the batch (real convolution kernels do not promise that). ``delay`` seconds of
    sleep per forward make generation slow enough to be interrupted in tests;
    ``nan_below`` makes the output NaN for views whose mean pixel is below that value.
    """

    def __init__(self, num_classes: int = 8, seed: int = 0, delay: float = 0.0, nan_below: float | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12 * 4, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.num_classes = num_classes
        self.delay = delay
        self.nan_below = nan_below
        self.calls = 0
        self.views_seen = 0

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)
        return 3.0 * self.fc(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.views_seen += x.shape[0]
        if self.delay:
            import time

            time.sleep(self.delay)
        out = torch.cat([self._one(x[i:i + 1]) for i in range(x.shape[0])])
        if self.nan_below is not None:
            low = x.mean(dim=(1, 2, 3)) < self.nan_below
            out = torch.where(low[:, None], torch.full_like(out, float("nan")), out)
        return out


def tiny_teacher(num_classes: int = 8) -> TinyTeacher:
    """Factory for the spec ``_reinforce_util:tiny_teacher`` (delay from $TINY_TEACHER_DELAY)."""
    return TinyTeacher(num_classes=num_classes, delay=float(os.environ.get("TINY_TEACHER_DELAY", "0")))


def subprocess_env(**extra: str) -> dict:
    """Environment for running ``python -m reinforced_data`` on this checkout with the helpers importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO_DIR, TESTS_DIR] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


PYTHON = sys.executable
