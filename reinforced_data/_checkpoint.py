"""Reading checkpoint files safely (``weights_only``), as timm writes them too, and finding their weights."""

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


def state_dict_of(ckpt: dict) -> dict:
    """The weights in a loaded checkpoint: its EMA weights when it has them, else ``state_dict`` /
    ``model``, else the dict itself (a bare state dict); tensors only, DDP's ``module.`` prefix removed."""
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            sd = ckpt[key]
            break
    else:
        sd = ckpt
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
