"""The paper's training recipe: the AdaBelief settings, the weighted-F1 metric early stopping watches,
and the early-stopping rule itself."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["EarlyStopping", "adabelief", "weighted_f1"]


def adabelief(params: Iterable[nn.Parameter] | Iterable[dict], lr: float = 5e-4, weight_decay: float = 1e-2,
              **overrides: Any) -> torch.optim.Optimizer:
    """``timm.optim.AdaBelief`` with the paper's settings.

    lr 5e-4, betas (0.9, 0.999), eps 1e-16, decoupled (AdamW-style) weight decay, no
    rectification. The paper does not state the decay's value; 1e-2 (AdamW's default and
    AdaBelief's recommendation for ImageNet) is used unless ``weight_decay`` says otherwise.
    ``overrides`` go to ``AdaBelief`` unchanged.
    """
    from timm.optim import AdaBelief

    kwargs: dict[str, Any] = dict(lr=lr, betas=(0.9, 0.999), eps=1e-16, weight_decay=weight_decay,
                                  decoupled_decay=True, rectify=False)
    kwargs.update(overrides)
    return AdaBelief(params, **kwargs)


def weighted_f1(preds: Tensor | np.ndarray | Sequence[int], targets: Tensor | np.ndarray | Sequence[int],
                num_classes: int) -> float:
    """Support-weighted mean of the per-class F1 scores (sklearn's ``average="weighted"``).

    ``preds`` holds class indices ``[N]`` or scores ``[N, num_classes]`` (argmax is taken).
    A class never predicted has precision 0; classes absent from ``targets`` weigh nothing.
    """
    p = torch.as_tensor(np.asarray(preds) if not isinstance(preds, Tensor) else preds).detach().cpu()
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets).detach().cpu()
    if p.ndim == 2:
        if p.shape[1] != num_classes:
            raise ConfigError(f"preds has scores for {p.shape[1]} classes but num_classes={num_classes}")
        p = p.argmax(dim=1)
    if p.ndim != 1 or t.ndim != 1 or p.shape[0] != t.shape[0]:
        raise ConfigError(f"preds {tuple(p.shape)} and targets {tuple(t.shape)} must be two [N] vectors "
                         "(or preds [N, num_classes]) of the same length")
    if t.numel() == 0:
        raise ConfigError("weighted_f1 needs at least one sample")
    p, t = p.long(), t.long()
    for name, v in (("preds", p), ("targets", t)):
        bad = v[(v < 0) | (v >= num_classes)]
        if bad.numel():
            raise ConfigError(f"{name} holds class {int(bad[0])}, outside [0, {num_classes})")
    cm = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(dim=1)  # true count per class
    predicted = cm.sum(dim=0)
    denom = support + predicted  # 2TP + FP + FN
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return float((f1 * support).sum() / support.sum())


class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of a monitored metric.

    Call :meth:`step` once per epoch with the validation metric; it returns True when the
    value is a new best (save the weights then). :attr:`should_stop` turns True once
    ``patience`` epochs in a row brought no improvement larger than ``min_delta``.
    """

    def __init__(self, patience: int = 10, mode: str = "max", min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}")
        if min_delta < 0:
            raise ConfigError(f"min_delta must be >= 0, got {min_delta}")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch = -1
        self.epochs = 0
        self.bad_epochs = 0

    def step(self, value: float) -> bool:
        """Record one epoch's metric; True when it is a new best."""
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"EarlyStopping got NaN at epoch {self.epochs}; the monitored metric must be a number")
        epoch = self.epochs
        self.epochs += 1
        if self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                 else value < self.best - self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def __repr__(self) -> str:
        return (f"EarlyStopping(patience={self.patience}, mode={self.mode!r}, best={self.best}, "
                f"best_epoch={self.best_epoch}, bad_epochs={self.bad_epochs})")
