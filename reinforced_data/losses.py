"""Losses for training on reinforced data: :class:`KDLoss` and :func:`hard_labels`.

A target is one of three kinds, as :class:`~reinforced_data.dataset.ReinforcedDataset`
gives them (batched):

* dense: float probabilities ``[B, C]``;
* sparse: a pair ``(indices int64 [B, k], probs float [B, k])``: the listed classes get
  ``probs`` and the mass ``1 - probs.sum(1)`` is spread uniformly over the ``C - k``
  classes not listed; listed probabilities that sum to more than 1 (by at most
  :data:`MASS_TOLERANCE`), or that list every class, are renormalised to sum to 1 (as
  :class:`ReinforcedDataset` builds its targets);
* hard: class indices int64 ``[B]``.

Unless ``check_targets=False``, every batch is checked, in a few reductions and one host
synchronisation, to be what it claims to be, and a :class:`~reinforced_data.errors.ConfigError`
names the first bad row:

* dense: finite, non-negative, each row summing to 1 within :data:`MASS_TOLERANCE`;
* sparse: indices in ``[0, C)``, none listed twice; probabilities finite and non-negative,
  summing to more than 0 and at most ``1 + MASS_TOLERANCE`` (within ``MASS_TOLERANCE`` of 1
  when every class is listed);
* hard: labels in ``[0, C)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["KDLoss", "hard_labels", "kd_loss"]

#: How far from 1 a soft target's mass may be. It covers bfloat16 rounding (under 0.4 %) and
#: the stored log_uint8 codes (under 3.2 % per probability); within it a wrong mass only
#: rescales that row's gradient (KL against ``q`` is minimised at ``q / q.sum()``), while a
#: target summing to 0 or 2, or logits passed as a target, lie far outside.
MASS_TOLERANCE = 0.05


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


# ---------------------------------------------------------------------- target checks
def _refuse_out_of_bounds(bounds: Sequence[tuple[torch.Tensor, float, float]], explain: Callable[[int], str]) -> None:
    """Raise :class:`ConfigError` with ``explain(first bad row)`` unless every tensor ``[B, ...]``
    of ``bounds`` lies within its ``[low, high]`` (NaN never does). The happy path is a global
    minimum (and maximum) per tensor and one host synchronisation; the bad row is looked for only then."""
    if not len(bounds[0][0]):
        return
    capped = [(t, high) for t, _, high in bounds if high < math.inf]  # amax only where needed: big q has none
    stats = torch.stack([t.amin() for t, _, _ in bounds] + [t.amax() for t, _ in capped]).tolist()
    if all(low <= v for (_, low, _), v in zip(bounds, stats)) and \
            all(v <= high for (_, high), v in zip(capped, stats[len(bounds):])):
        return
    bad = torch.stack([(~((t >= low) & (t <= high))).reshape(len(t), -1).any(1) for t, low, high in bounds]).any(0)
    rows = bad.nonzero()  # empty only if the minima and maxima were rounded (indices past 2**24 in float32)
    if len(rows):
        raise ConfigError(explain(int(rows[0, 0])))


def _bad_probability(probs: torch.Tensor, classes: Sequence[int]) -> str | None:
    """What is wrong with one row's probabilities ``probs`` (of ``classes``) other than their sum."""
    values = probs.tolist()
    for v, j in zip(values, classes):
        if not math.isfinite(v):
            return f"gives class {j} the probability {v}"
    for v, j in zip(values, classes):
        if v < 0:
            return f"gives class {j} the negative probability {v:.4g}"
    return None


def _check_dense(q: torch.Tensor) -> None:
    mass = q.sum(1)

    def explain(r: int) -> str:
        what = _bad_probability(q[r], range(q.shape[1])) or f"sums to {float(mass[r]):.4g}, not 1"
        return f"target row {r} {what}: soft targets must be probability distributions (finite, non-negative, " \
               "summing to 1)"
    _refuse_out_of_bounds([(q, 0.0, math.inf), (mass, 1 - MASS_TOLERANCE, 1 + MASS_TOLERANCE)], explain)


def _check_sparse(indices: torch.Tensor, probs: torch.Tensor, c: int) -> None:
    k = indices.shape[1]
    mass = probs.sum(1)
    bounds = [(indices, 0, c - 1), (probs, 0.0, math.inf),
              (mass, 1 - MASS_TOLERANCE if k == c else torch.finfo(probs.dtype).tiny, 1 + MASS_TOLERANCE)]
    if k > 1:  # sorted, a class listed twice is a gap of 0
        bounds.append((indices.sort(1).values.diff(1), 1, math.inf))

    def explain(r: int) -> str:
        row = indices[r].tolist()
        outside = [j for j in row if not 0 <= j < c]
        if outside:
            what = f"lists class {outside[0]}, outside [0, {c})"
        elif len(set(row)) < k:
            what = f"lists class {next(j for j in row if row.count(j) > 1)} twice"
        else:
            what = _bad_probability(probs[r], row) or f"lists probabilities summing to {float(mass[r]):.4g}" + (
                ", not 1" if k == c else ", more than 1" if mass[r] > 1 else "")
        return (f"sparse target row {r} {what}: a sparse target lists distinct classes in [0, {c}) with finite, "
                "non-negative probabilities summing to " + ("1" if k == c else "at most 1 (the rest is spread over "
                                                            "the unlisted classes)"))
    _refuse_out_of_bounds(bounds, explain)


def _check_hard(y: torch.Tensor, c: int) -> None:
    _refuse_out_of_bounds([(y, 0, c - 1)], lambda r: (
        f"hard label row {r} is {int(y[r])}, outside [0, {c}): labels must be class indices of the logits' "
        f"{c} classes"))


def kd_loss(logits: torch.Tensor, target: Any, temperature: float = 1.0, alpha: float = 0.0,
            label_smoothing: float = 0.0, check_targets: bool = True) -> torch.Tensor:
    """Functional form of :class:`KDLoss` (which see): ``temperature`` divides the student's
    logits only, the target is used as given; ``check_targets`` refuses targets that are not
    distributions (or class indices) with a :class:`ConfigError` naming the first bad row."""
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
            y = target.long()
            if check_targets:
                _check_hard(y, c)
            return F.cross_entropy(z, y, label_smoothing=label_smoothing)
        x = z / temperature
        if _is_sparse(target):
            indices, probs = target
            if indices.shape != probs.shape or indices.dim() != 2 or indices.shape[0] != b or \
                    not 1 <= indices.shape[1] <= c:
                raise ConfigError(f"a sparse target must be (indices, probs) of one shape [{b}, k] with 1 <= k <= {c}; "
                                  f"got {tuple(indices.shape)} and {tuple(probs.shape)}")
            if indices.is_floating_point() or indices.dtype == torch.bool or not probs.is_floating_point():
                raise ConfigError(f"a sparse target is (integer class indices, float probabilities); got "
                                  f"({indices.dtype}, {probs.dtype}): are the two swapped?")
            indices, probs = indices.long(), probs.to(dt)
            if check_targets:
                _check_sparse(indices, probs.detach(), c)
            kd = _sparse_kl(x, indices, probs) / b
        elif isinstance(target, torch.Tensor):
            if target.shape != (b, c):
                raise ConfigError(f"a dense target must have the logits' shape {(b, c)}, got {tuple(target.shape)}")
            q = target.to(dt)
            if check_targets:
                _check_dense(q.detach())
            kd = F.kl_div(F.log_softmax(x, dim=1), q, reduction="batchmean")
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

    ``temperature`` T divides the *student's* logits only: the target is used as given, and
    the targets of a reinforcement file are the teachers' probabilities at T = 1. Keep
    T = 1 unless you know why; Hinton-style T = 2 to 4 here makes the student match a
    sharpened teacher (its optimum is ``logits = T * log(target)``; see docs/kd.md).

    ``check_targets`` (default True) refuses, with a one-line :class:`ConfigError` naming
    the first bad row, soft targets that are not probability distributions (finite,
    non-negative, summing to 1 within :data:`MASS_TOLERANCE`; see the module docstring for
    sparse targets) and labels outside ``[0, C)``. It costs a few reductions and one host
    synchronisation per batch; turn it off once the target pipeline is known good if that
    synchronisation matters (e.g. a small model on a GPU).
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 0.0, label_smoothing: float = 0.0,
                 check_targets: bool = True) -> None:
        super().__init__()
        if not 0 < temperature < float("inf"):
            raise ConfigError(f"temperature={temperature} must be a positive, finite number")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha={alpha} must lie in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={label_smoothing} must lie in [0, 1)")
        self.temperature, self.alpha, self.label_smoothing = float(temperature), float(alpha), float(label_smoothing)
        self.check_targets = bool(check_targets)

    def forward(self, logits: torch.Tensor, target: Any) -> torch.Tensor:
        return kd_loss(logits, target, self.temperature, self.alpha, self.label_smoothing, self.check_targets)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, alpha={self.alpha}, label_smoothing={self.label_smoothing}"
                + ("" if self.check_targets else ", check_targets=False"))
