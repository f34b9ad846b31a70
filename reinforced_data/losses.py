"""Losses for training on reinforced data: :class:`KDLoss` and :func:`hard_labels`.

A target is one of three kinds, as :class:`~reinforced_data.dataset.ReinforcedDataset`
gives them (batched):

* dense: float probabilities ``[B, C]``;
* sparse: a pair ``(indices int64 [B, k], probs float [B, k])``: the listed classes get
  ``probs`` and the mass ``1 - probs.sum(1)`` is spread uniformly over the ``C - k``
  classes not listed; listed probabilities that sum to more than 1, or that list every
  class, are renormalised to sum to 1 (as :class:`ReinforcedDataset` builds its targets);
* hard: class indices int64 ``[B]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["KDLoss", "hard_labels", "kd_loss"]


def _is_sparse(target: Any) -> bool:
    return isinstance(target, (tuple, list)) and len(target) == 2 and all(isinstance(t, torch.Tensor) for t in target)


def hard_labels(target: Any) -> torch.Tensor:
    """Class indices of a dense, sparse or hard target (e.g. for train-time top-1 accuracy).

    Dense ``[..., C]`` → argmax over classes; sparse ``(indices, probs)`` → the first
    listed index (targets are stored most probable first); hard labels → as they are.
    """
    if _is_sparse(target):
        indices, _ = target
        return indices[..., 0].long()
    if isinstance(target, torch.Tensor):
        if target.is_floating_point():
            return target.argmax(dim=-1)
        return target.long()
    raise ConfigError(f"a target must be a tensor or an (indices, probs) pair, not {type(target).__name__}")


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for float64 logits


def _sparse_kl(x: torch.Tensor, indices: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of KL(q || softmax(x)), q = listed probs + uniform residual; no [B, C] target."""
    c, k = x.shape[1], indices.shape[1]
    mass = probs.sum(1)
    # no class left to take a residual, or more than all the mass: the listed classes are the
    # whole distribution (as ReinforcedDataset builds such targets), so renormalise them
    whole = (mass > 1.0) if k < c else torch.ones_like(mass, dtype=torch.bool)
    probs = torch.where(whole[:, None], probs / mass.clamp_min(torch.finfo(probs.dtype).tiny)[:, None], probs)
    lse = torch.logsumexp(x, dim=1)  # [B]
    logs_listed = x.gather(1, indices) - lse[:, None]  # [B, k]
    if k < c:
        u = (1.0 - probs.sum(1)).clamp_min(0.0) / (c - k)  # [B] probability of each unlisted class
        logs_unlisted = x.sum(1) - c * lse - logs_listed.sum(1)  # sum of log s_j over unlisted j
        neg_entropy = torch.xlogy(probs, probs).sum(1) + (c - k) * torch.xlogy(u, u)
        cross = (probs * logs_listed).sum(1) + u * logs_unlisted
    else:
        neg_entropy = torch.xlogy(probs, probs).sum(1)
        cross = (probs * logs_listed).sum(1)
    return (neg_entropy - cross).sum()


def kd_loss(logits: torch.Tensor, target: Any, temperature: float = 1.0, alpha: float = 0.0,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """Functional form of :class:`KDLoss`."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ConfigError(f"logits must be a [batch, classes] tensor, got "
                          f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    b, c = logits.shape
    dt = _compute_dtype(logits)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.to(dt)
        if isinstance(target, torch.Tensor) and not target.is_floating_point():
            if target.shape != (b,):
                raise ConfigError(f"hard labels must have shape [{b}], got {tuple(target.shape)}")
            return F.cross_entropy(z, target.long(), label_smoothing=label_smoothing)
        x = z / temperature
        if _is_sparse(target):
            indices, probs = target
            if indices.shape != probs.shape or indices.dim() != 2 or indices.shape[0] != b or indices.shape[1] > c:
                raise ConfigError(f"a sparse target must be (indices, probs) of one shape [{b}, k<={c}]; got "
                                  f"{tuple(indices.shape)} and {tuple(probs.shape)}")
            kd = _sparse_kl(x, indices.long(), probs.to(dt)) / b
        elif isinstance(target, torch.Tensor):
            if target.shape != (b, c):
                raise ConfigError(f"a dense target must have the logits' shape {(b, c)}, got {tuple(target.shape)}")
            kd = F.kl_div(F.log_softmax(x, dim=1), target.to(dt), reduction="batchmean")
        else:
            raise ConfigError(f"a target must be a tensor or an (indices, probs) pair, not {type(target).__name__}")
        kd = kd * (temperature ** 2)
        if alpha == 0.0:
            return kd
        ce = F.cross_entropy(z, hard_labels(target), label_smoothing=label_smoothing)
        return alpha * ce + (1.0 - alpha) * kd


class KDLoss(nn.Module):
    """Knowledge-distillation loss on soft targets: ``KL(target || softmax(logits / T)) * T**2``
    ('batchmean'), optionally mixed with cross-entropy on the hard labels:
    ``alpha * CE + (1 - alpha) * KD``.

    Targets may be dense probabilities ``[B, C]``, sparse ``(indices [B, k], probs [B, k])``
    (computed without building a ``[B, C]`` target) or hard labels ``[B]`` (then it is
    cross-entropy with ``label_smoothing``). Computed in float32 (float64 for float64
    logits), also under autocast. ``label_smoothing`` applies to the cross-entropy on hard
    labels only.
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0 < temperature < float("inf"):
            raise ConfigError(f"temperature={temperature} must be a positive, finite number")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha={alpha} must lie in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={label_smoothing} must lie in [0, 1)")
        self.temperature, self.alpha, self.label_smoothing = float(temperature), float(alpha), float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: Any) -> torch.Tensor:
        return kd_loss(logits, target, self.temperature, self.alpha, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, label_smoothing={self.label_smoothing}"
