"""Reading checkpoint files safely (``weights_only``), as timm writes them too."""

from __future__ import annotations

import argparse
from typing import Any

import torch


def load_checkpoint(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, also for timm ``train.py`` checkpoints
    (they carry the run's ``argparse.Namespace``); ``.safetensors`` files through safetensors."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)
