"""Weights files, shared by teachers and ensemble backbones: the ``NAME=CHECKPOINT`` spec, reading
checkpoints safely (``weights_only``, also as timm writes them), finding their weights, and finding a
timm model's classifier."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["CHECKPOINT_SUFFIXES", "classifier_names", "load_checkpoint", "read_checkpoint", "split_spec",
           "state_dict_of"]

# Endings that make a spec a file path even when the file is missing (then: "does not exist", not "no such model").
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".tar", ".ckpt")


def split_spec(spec: str | os.PathLike) -> tuple[str | None, str | None]:
    """``"NAME"`` -> (name, None); ``"NAME=PATH"`` -> (name, path); ``"PATH"`` -> (None, path).

    An existing file is a path even when it contains ``=`` (``/runs/lr=0.1/model.pth``). A path
    that names no file raises ``FileNotFoundError``; so does a lone spec that looks like a file (a
    checkpoint suffix) but is not one. ``NAME`` may be a timm name (``hf-hub:`` ones included) or
    ``module:callable``: the caller decides.
    """
    s = os.fspath(spec).strip()
    if os.path.isfile(s):
        return None, s
    if "=" in s:
        name, path = s.split("=", 1)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file {path!r} (from spec {s!r}) does not exist")
        return name or None, path
    if s.endswith(CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"checkpoint file {s!r} does not exist")
    return s, None


def load_checkpoint(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, also for timm ``train.py`` checkpoints
    (they carry the run's ``argparse.Namespace``); ``.safetensors`` files through safetensors."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """:func:`load_checkpoint`, with one clear :class:`ConfigError` (naming ``what`` the file was
    meant to be) when the file cannot be read or does not hold a dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise ConfigError(f"cannot read {what} {path} ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} {path} holds a {type(obj).__name__}, expected a state dict")
    return obj


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


def classifier_names(model_or_arch: nn.Module | str) -> tuple[str, ...]:
    """The module names of a timm model's classifier (``pretrained_cfg["classifier"]``), from the
    model or from its architecture name; empty when timm does not say."""
    if isinstance(model_or_arch, str):
        import timm

        cfg = timm.models.get_pretrained_cfg(model_or_arch)
        c = cfg.classifier if cfg is not None else None
    else:
        c = (getattr(model_or_arch, "pretrained_cfg", None) or {}).get("classifier")
    if not c:
        return ()
    return (c,) if isinstance(c, str) else tuple(c)
