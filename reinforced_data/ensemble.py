"""Adaptive ensembling: a cheap, strong teacher built from N weak learners.

Bruno, Moroni, Martinelli, "Efficient Adaptive Ensembling for Image Classification"
(Expert Systems, 2023). N backbones (weak learners) are each trained to overfit one of N
disjoint, class-stratified bags of the training set (phase 1); their output layers are
dropped, the backbones frozen, and one linear layer is trained on the concatenation of
their pooled feature vectors (phase 2)::

    Feat_comb = W · (Feat_1 ⊕ … ⊕ Feat_N) + b

Phase 2 extracts the frozen features once into a :class:`FeatureCache`, so training the
combination layer costs seconds rather than epochs of backbone forwards.

The recipe: AdaBelief (lr 5e-4, betas (0.9, 0.999), eps 1e-16, decoupled weight decay,
no rectification), early stopping with patience 10 on validation weighted F1, several
seeds for the combination layer (best kept); the test metric is accuracy.

An :class:`AdaptiveEnsembleHead` is a plain ``nn.Module`` mapping a normalised float batch
``[B, 3, H, W]`` to logits ``[B, num_classes]``; like a timm model it carries a
``pretrained_cfg`` (input size, mean, std) so a teacher wrapper knows how to feed it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checkpoint import classifier_names, read_checkpoint, split_spec, state_dict_of
from .errors import ConfigError
from .policy import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "AdaptiveEnsembleHead",
    "CombinerFit",
    "CombinerRun",
    "EarlyStopping",
    "FeatureCache",
    "HEAD_CHECKPOINT_FORMAT",
    "WeakLearnerFit",
    "adabelief",
    "bagging_split",
    "create_backbone",
    "extract_features",
    "fit_combiner",
    "fit_weak_learner",
    "predict_logits",
    "save_backbone",
    "stratified_split",
    "weighted_f1",
]

logger = logging.getLogger(__name__)

HEAD_CHECKPOINT_FORMAT = "reinforced_data.AdaptiveEnsembleHead"
_HEAD_CHECKPOINT_VERSION = 2  # 2: per-backbone timm_kwargs
_BACKBONE_CHECKPOINT_FORMAT = "reinforced_data.backbone"

_CFG_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "fixed_input_size")

Batches = Iterable[tuple[Tensor, Tensor]]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


# --------------------------------------------------------------------------- recipe helpers


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


def bagging_split(labels: Sequence[int] | np.ndarray | Tensor, n: int | None, seed: int = 0, *,
                  groups: Sequence[Hashable] | Mapping[int, Hashable] | None = None) -> list[np.ndarray]:
    """Split sample indices into ``n`` disjoint bags, one per weak learner.

    By default the bags are class-stratified: every class's samples are shuffled (seeded) and
    dealt round-robin, so the bags cover the data, their sizes differ by at most one, and
    each class's count differs by at most one between bags. ``n`` may not exceed the
    smallest class's size, since every bag must see every class.

    ``groups`` splits by a user-given grouping instead (the paper splits Oxford Pets into
    cats and dogs): a per-sample sequence of group ids, or a mapping class -> group id. Each
    bag is then one group (bags ordered by sorted group id); ``n`` must be None or the
    number of groups. Returns sorted int64 index arrays.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if groups is not None:
        return _split_by_groups(y, n, groups)
    if n is None or n < 1:
        raise ConfigError(f"n must be a positive number of bags, got {n}")
    classes, counts = np.unique(y, return_counts=True)
    smallest = int(counts.argmin())
    if n > counts[smallest]:
        raise ConfigError(f"n={n} bags but class {classes[smallest]} has only {counts[smallest]} samples; "
                         f"every bag needs each class, so use n <= {counts[smallest]}")
    rng = np.random.default_rng(seed)
    order = []
    for c in rng.permutation(classes):  # class order shuffled so no bag is always first to get a remainder
        idx = np.flatnonzero(y == c)
        order.append(rng.permutation(idx))
    dealt = np.concatenate(order)
    bag_of = np.arange(dealt.size) % n
    return [np.sort(dealt[bag_of == b]).astype(np.int64) for b in range(n)]


def stratified_split(labels: Sequence[int] | np.ndarray | Tensor, fractions: tuple[float, float] = (0.15, 0.15),
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) sorted index arrays; each class is split in the same proportions.

    ``fractions`` are the validation and test shares; every class gives at least one sample
    to each, and the rest to training (which must keep at least one).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if len(fractions) != 2 or min(fractions) < 0 or sum(fractions) >= 1:
        raise ConfigError(f"fractions must be (val, test) shares >= 0 summing to less than 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = (max(1, round(f * len(idx))) for f in fractions)
        if n_val + n_test >= len(idx):
            raise ConfigError(f"class {c} has {len(idx)} samples: too few for a train, a val and a test share")
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


def _split_by_groups(y: np.ndarray, n: int | None,
                     groups: Sequence[Hashable] | Mapping[int, Hashable]) -> list[np.ndarray]:
    if isinstance(groups, Mapping):
        missing = sorted(set(y.tolist()) - set(groups))
        if missing:
            raise ConfigError(f"groups maps classes to groups but has no group for class {missing[0]}")
        g = [groups[int(c)] for c in y]
    else:
        g = list(groups)
        if len(g) != y.size:
            raise ConfigError(f"groups has {len(g)} entries but there are {y.size} labels; give one group per sample")
    try:
        names = sorted(set(g))
    except TypeError:
        raise ConfigError("group ids must be sortable (e.g. all str or all int)") from None
    if n is not None and n != len(names):
        raise ConfigError(f"n={n} but groups holds {len(names)} groups {names[:5]}; pass n=None or n={len(names)}")
    if len(names) < 2:
        logger.warning("bagging_split: groups holds a single group, so there is one bag")
    pos = {v: i for i, v in enumerate(names)}
    g_arr = np.array([pos[v] for v in g])
    return [np.flatnonzero(g_arr == i).astype(np.int64) for i in range(len(names))]


# --------------------------------------------------------------------------- backbones


def _arch_of(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture")


_TIMM_KWARGS_ATTR = "_reinforced_data_timm_kwargs"  # set by create_backbone, recorded by the save functions


def _rebuild_recipe(backbone: nn.Module, index: int, arch: str | None = None,
                    input_size: Sequence[int] | None = None) -> tuple[str, dict]:
    """(arch, timm kwargs) that rebuild ``backbone`` with ``timm.create_model(arch, num_classes=0, **kwargs)``.

    Checked by rebuilding it and comparing features on a probe input, so that a backbone
    built with settings nobody recorded (``timm.create_model(..., global_pool="max")``
    called directly, say) is refused at save time instead of coming back different.
    """
    import timm

    arch = arch or _arch_of(backbone)
    if arch is None:
        raise ConfigError(f"backbone {index} ({type(backbone).__name__}) is not a timm model (it names no timm "
                         "architecture), so a file could not rebuild it; torch.save its state_dict() instead")
    kwargs = dict(getattr(backbone, _TIMM_KWARGS_ATTR, {}))
    try:
        rebuilt = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        rebuilt.load_state_dict(backbone.state_dict())
    except Exception as e:  # noqa: BLE001 - any failure means the recipe does not rebuild this backbone
        raise ConfigError(f"backbone {index} cannot be rebuilt as timm {arch!r} with {kwargs} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); create it with "
                         "create_backbone(spec, **timm_kwargs) so that its settings are recorded") from None
    p = next(backbone.parameters(), None)
    c, h, w = input_size or _as_size(timm.data.resolve_model_data_config(backbone)["input_size"])
    probe = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    if p is not None:
        probe, rebuilt = probe.to(p.device, p.dtype), rebuilt.to(p.device, p.dtype)
    was_training = backbone.training
    try:
        with torch.no_grad():
            want, got = backbone.eval()(probe), rebuilt.eval()(probe)
    finally:
        backbone.train(was_training)
    if want.shape != got.shape or not torch.allclose(want.float(), got.float(), rtol=1e-4, atol=1e-5):
        raise ConfigError(f"backbone {index} was built with settings that were not recorded: rebuilt as timm "
                         f"{arch!r} with {kwargs} it gives other features; create it with "
                         "create_backbone(spec, **timm_kwargs) (or AdaptiveEnsembleHead.from_timm(..., **timm_kwargs)) "
                         "so that save() records them")
    return arch, kwargs


def save_backbone(backbone: nn.Module, path: str | os.PathLike, arch: str | None = None) -> None:
    """Save a weak learner's backbone so ``create_backbone(path)`` can rebuild it.

    Writes ``{"arch", "timm_kwargs", "num_features", "state_dict"}`` (readable with
    ``weights_only=True``); ``arch`` defaults to the timm architecture the backbone was
    created from, ``timm_kwargs`` are those :func:`create_backbone` was given. Refuses a
    backbone that the recorded settings do not rebuild exactly.
    """
    arch, kwargs = _rebuild_recipe(backbone, 0, arch)
    torch.save({"format": _BACKBONE_CHECKPOINT_FORMAT, "arch": arch, "timm_kwargs": kwargs,
                "num_features": getattr(backbone, "num_features", None),
                "state_dict": backbone.state_dict()}, os.fspath(path))


def create_backbone(spec: str | os.PathLike, pretrained: bool = True, **timm_kwargs: Any) -> nn.Module:
    """A timm backbone with no classifier (``num_classes=0``): pooled features ``[B, F]``.

    ``spec`` is a timm model name (weights from timm when ``pretrained``), ``"name=PATH"``
    (weights from a local checkpoint: a state dict, a timm training checkpoint, or a file
    written by :func:`save_backbone`), or a checkpoint ``PATH`` that names its architecture
    (``save_backbone`` files and timm's train.py checkpoints do). A classifier in the file is
    ignored. Raises instead of silently falling back to random weights.
    """
    import timm

    arch, path = split_spec(spec)
    meta: dict[str, Any] = {}
    raw: dict = {}
    if path is not None:
        raw = read_checkpoint(path, "backbone checkpoint")
        meta = {k: raw[k] for k in ("arch", "num_features", "timm_kwargs")
                if k in raw and not isinstance(raw[k], Tensor)}
        if arch is None:
            arch = meta.get("arch")
            if not isinstance(arch, str):
                raise ConfigError(f"checkpoint {path!r} does not name its architecture; write the spec as 'ARCH={path}'")
    assert arch is not None
    if not timm.is_model(arch):
        hint = "it is not a file either; " if os.sep in arch else ""
        raise ConfigError(f"{arch!r} is not a timm model name; {hint}see timm.list_models()")
    use_hub = pretrained and path is None
    timm_kwargs = {**(meta.get("timm_kwargs") or {}), **timm_kwargs}  # a save_backbone file's, unless overridden
    try:
        model = timm.create_model(arch, pretrained=use_hub, num_classes=0, **timm_kwargs)
    except Exception as e:
        if not use_hub:
            raise
        raise RuntimeError(f"could not load timm's pretrained weights for {arch!r} ({type(e).__name__}); "
                           f"pass pretrained=False to start from random weights, or a local checkpoint "
                           f"'{arch}=PATH'") from e
    if path is not None:
        _load_backbone_weights(model, state_dict_of(raw), path, arch, meta)
        logger.info("backbone %s: weights from %s", arch, path)
    elif not use_hub:
        logger.info("backbone %s: random initialisation (pretrained=False)", arch)
    setattr(model, _TIMM_KWARGS_ATTR, timm_kwargs)
    return model


def _load_backbone_weights(model: nn.Module, state: dict, path: str, arch: str, meta: Mapping[str, Any]) -> None:
    nf_file, nf_model = meta.get("num_features"), getattr(model, "num_features", None)
    if nf_file is not None and nf_model is not None and int(nf_file) != int(nf_model):
        raise ConfigError(f"checkpoint {path!r} holds a backbone with {nf_file} features but {arch} has "
                         f"{nf_model}; check that {arch!r} is the architecture it was saved from")
    own = model.state_dict()
    heads = classifier_names(model)
    state = {k: v for k, v in state.items()
             if k in own or not any(k == h or k.startswith(h + ".") for h in heads)}
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if unexpected or missing:
        example = unexpected[0] if unexpected else missing[0]
        raise ConfigError(f"checkpoint {path!r} does not fit {arch}: {len(unexpected)} tensors in the file are "
                         f"not in the model and {len(missing)} model tensors are missing from the file "
                         f"(e.g. {example!r}); check that {arch!r} is the architecture it was saved from")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ConfigError(f"checkpoint {path!r} does not fit {arch}: {k!r} is {list(v.shape)} in the file "
                             f"but {list(own[k].shape)} in the model; check the architecture name")
    model.load_state_dict(state, strict=True)


def _pooled_dim(backbone: nn.Module, dummy: Tensor, index: int) -> int:
    """Feature size of ``backbone`` from one eval-mode forward; clear errors if it is not [B, F]."""
    name = type(backbone).__name__
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(dummy)
    except Exception as e:
        raise ConfigError(f"backbone {index} ({name}) failed on a {list(dummy.shape)} input "
                         f"({type(e).__name__}: {e}); check input_size") from e
    finally:
        backbone.train(was_training)
    if not isinstance(out, Tensor):
        raise ConfigError(f"backbone {index} ({name}) returns {type(out).__name__}, not a [B, F] tensor of "
                         "pooled features; wrap it so that forward returns one tensor")
    if out.ndim != 2 or out.shape[0] != dummy.shape[0]:
        raise ConfigError(f"backbone {index} ({name}) returns a {list(out.shape)} tensor, not a pooled feature "
                         "vector [B, F]; create it with a global pool and no classifier "
                         "(timm: num_classes=0, global_pool='avg')")
    dim = int(out.shape[1])
    # timm models with a pre-logits stage (MobileNetV3, GhostNet, ...) pool to head_hidden_size, not num_features
    declared = [v for v in (getattr(backbone, "num_features", None), getattr(backbone, "head_hidden_size", None))
                if isinstance(v, int)]
    if declared and dim not in declared:
        raise ConfigError(f"backbone {index} ({name}) returns {dim} values but its num_features is {declared[0]}: "
                         "it still has a classifier; create it with num_classes=0 or call reset_classifier(0)")
    return dim


def _as_size(input_size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        return (3, input_size, input_size)
    s = tuple(int(v) for v in input_size)
    if len(s) == 2:
        return (3, *s)
    if len(s) != 3:
        raise ConfigError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size}")
    return s  # type: ignore[return-value]


# --------------------------------------------------------------------------- the head


class AdaptiveEnsembleHead(nn.Module):
    """N backbones to pooled features, concatenated, one ``nn.Linear`` to class logits.

    ``forward(x)``: normalised float images ``[B, 3, H, W]`` -> logits ``[B, num_classes]``.
    ``forward_features(x)`` gives the concatenated features ``[B, sum(feature_dims)]``,
    ``forward_head(f)`` the combination layer (timm's split). With ``freeze_backbones`` the
    backbones get ``requires_grad=False`` and stay in eval mode whatever ``train()`` is
    called with (their BatchNorm statistics do not move): only the combination layer
    learns, ``num_classes * (sum(feature_dims) + 1)`` parameters.

    Feature sizes are found with one eval-mode forward of a dummy ``input_size`` batch.
    ``pretrained_cfg`` (alias ``default_cfg``) records the input size, mean and std the
    backbones expect, from the first backbone's timm config unless given here; all
    backbones see the same batch, so their mean and std must agree.
    """

    def __init__(self, backbones: Sequence[nn.Module], num_classes: int, freeze_backbones: bool = True, *,
                 input_size: int | Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        backbones = list(backbones)
        if not backbones:
            raise ConfigError("AdaptiveEnsembleHead needs at least one backbone")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        for i, b in enumerate(backbones):
            if not isinstance(b, nn.Module):
                raise TypeError(f"backbone {i} is a {type(b).__name__}, not an nn.Module")
        self.backbones = nn.ModuleList(backbones)
        self.pretrained_cfg: dict[str, Any] = self._resolve_cfg(backbones, input_size, mean, std)
        ref = next((p for p in self.backbones.parameters()), None)
        dummy = torch.zeros(1, *self.pretrained_cfg["input_size"],
                            device=ref.device if ref is not None else None,
                            dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
        self.feature_dims: list[int] = [_pooled_dim(b, dummy, i) for i, b in enumerate(backbones)]
        self.num_features = sum(self.feature_dims)
        self.num_classes = num_classes
        self.combiner = nn.Linear(self.num_features, num_classes)
        if ref is not None:
            self.combiner.to(device=ref.device)
        self.pretrained_cfg["num_classes"] = num_classes
        self.backbones_frozen = bool(freeze_backbones)
        if self.backbones_frozen:
            self.backbones.requires_grad_(False)
            self.backbones.eval()
        logger.info("AdaptiveEnsembleHead: %d backbones, features %s -> %d classes; %s trainable parameters "
                    "of %s", len(backbones), self.feature_dims, num_classes, f"{self.num_trainable_params:,}",
                    f"{self.num_params:,}")

    @staticmethod
    def _resolve_cfg(backbones: Sequence[nn.Module], input_size: int | Sequence[int] | None,
                     mean: Sequence[float] | None, std: Sequence[float] | None) -> dict[str, Any]:
        cfgs = [(i, getattr(b, "pretrained_cfg", None) or {}) for i, b in enumerate(backbones)]
        cfgs = [(i, c) for i, c in cfgs if c]
        base = dict(cfgs[0][1]) if cfgs else {}
        if mean is None and std is None:
            for i, c in cfgs[1:]:
                for key in ("mean", "std"):
                    a, b = base.get(key), c.get(key)
                    if a is not None and b is not None and not np.allclose(a, b):
                        raise ConfigError(f"backbone {i} expects {key}={tuple(b)} but backbone {cfgs[0][0]} "
                                         f"expects {tuple(a)}; all backbones see one batch, so pass mean= and "
                                         "std= explicitly or use backbones with the same normalisation")
        cfg = {k: base[k] for k in _CFG_KEYS if k in base}
        if input_size is not None:
            cfg["input_size"] = _as_size(input_size)
        cfg.setdefault("input_size", (3, 224, 224))
        cfg["input_size"] = tuple(cfg["input_size"])
        cfg["mean"] = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", IMAGENET_MEAN)))
        cfg["std"] = tuple(float(v) for v in (std if std is not None else cfg.get("std", IMAGENET_STD)))
        cfg.setdefault("interpolation", "bicubic")
        cfg.setdefault("crop_pct", 0.875)
        archs = [_arch_of(b) or type(b).__name__ for b in backbones]
        cfg["architecture"] = "adaptive_ensemble[" + ",".join(archs) + "]"
        return cfg

    @property
    def default_cfg(self) -> dict[str, Any]:
        """Alias of ``pretrained_cfg``, as on timm models."""
        return self.pretrained_cfg

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def num_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def get_classifier(self) -> nn.Linear:
        return self.combiner

    def train(self, mode: bool = True) -> AdaptiveEnsembleHead:
        super().train(mode)
        if self.backbones_frozen:
            self.backbones.eval()
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        """Concatenated pooled features ``[B, sum(feature_dims)]``."""
        feats = [b(x) for b in self.backbones]
        return torch.cat(feats, dim=1)

    def split_features(self, features: Tensor) -> list[Tensor]:
        """Cut concatenated features ``[B, sum(feature_dims)]`` back into one block per backbone."""
        return list(torch.split(features, self.feature_dims, dim=-1))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.combiner(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return (f"feature_dims={self.feature_dims}, num_classes={self.num_classes}, "
                f"frozen={self.backbones_frozen}, trainable_params={self.num_trainable_params}")

    # ------------------------------------------------------------------ construction and files

    @classmethod
    def from_timm(cls, names_or_checkpoints: Sequence[str | os.PathLike], num_classes: int, *,
                  pretrained: bool = True, freeze_backbones: bool = True,
                  input_size: int | Sequence[int] | None = None, **timm_kwargs: Any) -> AdaptiveEnsembleHead:
        """Build the backbones with :func:`create_backbone` (``num_classes=0``) and the head.

        Each entry is a timm name (timm's weights when ``pretrained``), ``"name=PATH"`` or a
        checkpoint path naming its architecture. ``timm_kwargs`` go to ``timm.create_model``.
        """
        if isinstance(names_or_checkpoints, (str, os.PathLike)):
            names_or_checkpoints = [names_or_checkpoints]
        backbones = [create_backbone(s, pretrained=pretrained, **timm_kwargs) for s in names_or_checkpoints]
        return cls(backbones, num_classes, freeze_backbones, input_size=input_size)

    def save(self, path: str | os.PathLike) -> None:
        """Write the head (backbones and combination layer) to one file; see :meth:`load`."""
        recipes = [_rebuild_recipe(b, i, input_size=self.pretrained_cfg["input_size"])
                   for i, b in enumerate(self.backbones)]
        archs = [a for a, _ in recipes]
        torch.save({"format": HEAD_CHECKPOINT_FORMAT, "version": _HEAD_CHECKPOINT_VERSION, "archs": archs,
                    "timm_kwargs": [kw for _, kw in recipes],
                    "feature_dims": list(self.feature_dims), "num_classes": self.num_classes,
                    "freeze_backbones": self.backbones_frozen, "pretrained_cfg": dict(self.pretrained_cfg),
                    "state_dict": self.state_dict()}, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AdaptiveEnsembleHead:
        """Rebuild a head written by :meth:`save` (timm architectures, no download)."""
        path = os.fspath(path)
        return cls.from_checkpoint(torch.load(path, map_location=map_location, weights_only=True), path)

    @staticmethod
    def is_checkpoint(obj: Any) -> bool:
        """Whether a loaded checkpoint object was written by :meth:`save`."""
        return isinstance(obj, dict) and obj.get("format") == HEAD_CHECKPOINT_FORMAT

    @classmethod
    def from_checkpoint(cls, ckpt: Any, path: str = "<checkpoint>") -> AdaptiveEnsembleHead:
        """Rebuild a head from the loaded contents of a :meth:`save` file (``path`` names it in errors)."""
        import timm

        if not cls.is_checkpoint(ckpt):
            raise ConfigError(f"{path!r} is not an AdaptiveEnsembleHead checkpoint (written by head.save())")
        if int(ckpt.get("version", 0)) > _HEAD_CHECKPOINT_VERSION:
            raise ConfigError(f"{path!r} has head format version {ckpt['version']}, newer than this reinforced_data "
                             f"reads ({_HEAD_CHECKPOINT_VERSION}); upgrade reinforced_data")
        cfg = ckpt["pretrained_cfg"]
        kwargs = ckpt.get("timm_kwargs") or [{} for _ in ckpt["archs"]]  # version 1 files: none recorded
        backbones = [timm.create_model(a, pretrained=False, num_classes=0, **kw) for a, kw in zip(ckpt["archs"], kwargs)]
        for b, kw in zip(backbones, kwargs):
            setattr(b, _TIMM_KWARGS_ATTR, dict(kw))
        head = cls(backbones, int(ckpt["num_classes"]), bool(ckpt.get("freeze_backbones", True)),
                   input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"])
        if head.feature_dims != list(ckpt["feature_dims"]):
            raise ConfigError(f"head checkpoint {path!r} was trained on feature sizes {list(ckpt['feature_dims'])} "
                             f"but its backbones {ckpt['archs']} give {head.feature_dims}; the file is inconsistent")
        w = ckpt["state_dict"].get("combiner.weight")
        if w is None or tuple(w.shape) != (head.num_classes, head.num_features):
            got = None if w is None else list(w.shape)
            raise ConfigError(f"head checkpoint {path!r} has a combination layer of shape {got} but "
                             f"{[head.num_classes, head.num_features]} is needed; the file is inconsistent")
        own = head.state_dict()
        for k in sorted(set(own) | set(ckpt["state_dict"])):
            v = ckpt["state_dict"].get(k)
            if k not in own or v is None or own[k].shape != v.shape:
                raise ConfigError(f"head checkpoint {path!r} does not fit its backbones at {k!r}; "
                                 "the file is inconsistent")
        head.load_state_dict(ckpt["state_dict"], strict=True)
        for k in ("interpolation", "crop_pct", "crop_mode", "fixed_input_size"):
            if k in cfg:
                head.pretrained_cfg[k] = cfg[k]
        return head


# --------------------------------------------------------------------------- phase 1


@dataclass
class WeakLearnerFit:
    """A weak learner after phase 1: its backbone and temporary output layer, and its history."""

    backbone: nn.Module
    classifier: nn.Linear
    train_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    overfit: bool = False
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.train_accuracy)

    def model(self) -> nn.Sequential:
        """Backbone + output layer: the weak learner as a classifier (for voting baselines)."""
        return nn.Sequential(self.backbone, self.classifier)


def _to_batch(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    x, y = batch[0], batch[1]
    return x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True).long()


def fit_weak_learner(backbone: nn.Module, loader: Batches, num_classes: int, *, max_epochs: int = 100,
                     target_accuracy: float = 0.99, max_seconds: float | None = None,
                     optimizer: OptimizerFactory = adabelief, device: str | torch.device = "cpu") -> WeakLearnerFit:
    """Phase 1: train ``backbone`` + a temporary linear output layer end to end on one bag.

    ``loader`` yields ``(images, labels)`` batches of the bag (normalised float images;
    ``drop_last=True`` avoids a final batch of one, which BatchNorm cannot train on).
    Training stops once an epoch's training accuracy reaches ``target_accuracy`` (the
    learner has overfit its bag), after ``max_epochs``, or when ``max_seconds`` have
    passed at the end of an epoch. The backbone is left in eval mode.
    """
    if not 0 < target_accuracy <= 1:
        raise ConfigError(f"target_accuracy must be in (0, 1], got {target_accuracy}")
    if max_epochs < 1:
        raise ConfigError(f"max_epochs must be >= 1, got {max_epochs}")
    device = torch.device(device)
    backbone.to(device)
    classifier: nn.Linear | None = None
    opt = None
    fit = None
    start = time.perf_counter()
    skipped_single = False
    for epoch in range(max_epochs):
        backbone.train()
        correct = seen = 0
        loss_sum = 0.0
        for batch in loader:
            x, y = _to_batch(batch, device)
            if classifier is None:  # first batch: size the output layer from the pooled features
                dim = _pooled_dim(backbone, x[:1], 0)
                classifier = nn.Linear(dim, num_classes).to(device)
                opt = optimizer(list(backbone.parameters()) + list(classifier.parameters()))
                fit = WeakLearnerFit(backbone, classifier)
            if x.shape[0] < 2:
                if not skipped_single:
                    logger.warning("fit_weak_learner: skipping a batch of one sample (BatchNorm cannot train "
                                   "on it); use drop_last=True")
                    skipped_single = True
                continue
            bad = y[(y < 0) | (y >= num_classes)]
            if bad.numel():
                raise ConfigError(f"labels hold class {int(bad[0])}, outside [0, {num_classes})")
            assert opt is not None and classifier is not None
            logits = classifier(backbone(x))
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"weak learner loss is {loss.item()} at epoch {epoch}; lower the "
                                         "learning rate or check the inputs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += y.shape[0]
            loss_sum += float(loss.detach()) * y.shape[0]
        if fit is None or seen == 0:
            raise ConfigError("the weak learner's loader yielded no trainable batch (empty bag?)")
        acc = correct / seen
        fit.train_accuracy.append(acc)
        fit.train_loss.append(loss_sum / seen)
        logger.info("weak learner epoch %d: loss %.4f, train accuracy %.4f", epoch + 1, loss_sum / seen, acc)
        if acc >= target_accuracy:
            fit.overfit = True
            break
        if max_seconds is not None and time.perf_counter() - start >= max_seconds:
            logger.info("weak learner: time budget of %.0f s reached after %d epochs", max_seconds, epoch + 1)
            break
    assert fit is not None
    fit.seconds = time.perf_counter() - start
    backbone.eval()
    if not fit.overfit:
        logger.warning("weak learner stopped at training accuracy %.3f, below the target %.3f (budget ended)",
                       fit.train_accuracy[-1], target_accuracy)
    return fit


# --------------------------------------------------------------------------- phase 2


@dataclass
class FeatureCache:
    """Frozen backbones' concatenated features for a data set, computed once."""

    features: Tensor  # [N, D] float32, CPU
    labels: Tensor  # [N] int64, CPU
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Batches, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Run ``model`` in eval mode over ``loader``; returns (outputs ``[N, ...]``, labels ``[N]``) on CPU."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        for batch in loader:
            x, y = _to_batch(batch, device)
            outs.append(model(x).float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ConfigError("the loader yielded no batches")
    return torch.cat(outs), torch.cat(labels)


def extract_features(head: AdaptiveEnsembleHead, loader: Batches, device: str | torch.device = "cpu") -> FeatureCache:
    """Phase 2's cache: the head's concatenated backbone features for every sample of ``loader``."""

    class _Features(nn.Module):
        def __init__(self, h: AdaptiveEnsembleHead) -> None:
            super().__init__()
            self.h = h

        def forward(self, x: Tensor) -> Tensor:
            return self.h.forward_features(x)

    start = time.perf_counter()
    head.to(device)
    features = _Features(head).train(head.training)  # predict_logits restores this mode afterwards
    feats, labels = predict_logits(features, loader, device)
    seconds = time.perf_counter() - start
    logger.info("feature cache: %d samples x %d features in %.1f s", feats.shape[0], feats.shape[1], seconds)
    return FeatureCache(feats.contiguous(), labels, seconds)


@dataclass
class CombinerRun:
    """One seed's training of the combination layer."""

    seed: int
    best_val_f1: float
    best_epoch: int
    epochs: int
    seconds: float


@dataclass
class CombinerFit:
    """Phase 2's result; the best run's weights are already in the head."""

    best_seed: int
    best_val_f1: float
    runs: list[CombinerRun]
    train_cache: FeatureCache
    val_cache: FeatureCache

    @property
    def train_seconds(self) -> float:
        return sum(r.seconds for r in self.runs)


def _seeded_linear(in_features: int, out_features: int, seed: int) -> nn.Linear:
    """``nn.Linear``'s default initialisation, drawn from its own generator (global RNG untouched)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_features, out_features, device="meta").to_empty(device="cpu")  # no default init drawn
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        layer.bias.uniform_(-bound, bound, generator=g)
    return layer


def fit_combiner(head: AdaptiveEnsembleHead, train: Batches | FeatureCache, val: Batches | FeatureCache, *,
                 seeds: Sequence[int] = (0, 1, 2, 3, 4), max_epochs: int = 200, patience: int = 10,
                 batch_size: int = 64, optimizer: OptimizerFactory = adabelief,
                 device: str | torch.device = "cpu") -> CombinerFit:
    """Phase 2: train only the combination layer on cached features, best of several seeds.

    ``train`` and ``val`` are loaders of ``(images, labels)`` (their features are extracted
    once, :func:`extract_features`) or ready :class:`FeatureCache` objects. Per seed, the
    layer is re-initialised and trained with ``optimizer`` on shuffled mini-batches of the
    cache, with early stopping (``patience``) on validation weighted F1; the best epoch's
    weights of the best seed are copied into ``head.combiner``.
    """
    if not seeds:
        raise ConfigError("fit_combiner needs at least one seed")
    if batch_size < 1 or max_epochs < 1:
        raise ConfigError(f"batch_size ({batch_size}) and max_epochs ({max_epochs}) must be >= 1")
    device = torch.device(device)
    train_cache = train if isinstance(train, FeatureCache) else extract_features(head, train, device)
    val_cache = val if isinstance(val, FeatureCache) else extract_features(head, val, device)
    for name, cache in (("train", train_cache), ("val", val_cache)):
        if cache.features.ndim != 2 or cache.features.shape[1] != head.num_features:
            raise ConfigError(f"the {name} cache has features of shape {list(cache.features.shape)} but the head "
                             f"combines {head.num_features}; extract it with this head")
        if len(cache) == 0:
            raise ConfigError(f"the {name} set is empty")
        if int(cache.labels.min()) < 0 or int(cache.labels.max()) >= head.num_classes:
            raise ConfigError(f"the {name} labels hold classes outside [0, {head.num_classes})")
    xs, ys = train_cache.features.to(device), train_cache.labels.to(device)
    xv, yv = val_cache.features.to(device), val_cache.labels
    runs: list[CombinerRun] = []
    best_state: dict[str, Tensor] | None = None
    best: CombinerRun | None = None
    for seed in seeds:
        start = time.perf_counter()
        layer = _seeded_linear(head.num_features, head.num_classes, seed).to(device)
        opt = optimizer(layer.parameters())
        stopper = EarlyStopping(patience=patience, mode="max")
        g = torch.Generator().manual_seed(seed)
        state = copy.deepcopy(layer.state_dict())
        for _ in range(max_epochs):
            layer.train()
            perm = torch.randperm(len(train_cache), generator=g).to(device)
            for i in range(0, perm.numel(), batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(layer(xs[idx]), ys[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            layer.eval()
            with torch.no_grad():
                f1 = weighted_f1(layer(xv).argmax(1).cpu(), yv, head.num_classes)
            if stopper.step(f1):
                state = copy.deepcopy(layer.state_dict())
            if stopper.should_stop:
                break
        assert stopper.best is not None
        run = CombinerRun(seed, stopper.best, stopper.best_epoch, stopper.epochs, time.perf_counter() - start)
        logger.info("combiner seed %d: best val weighted F1 %.4f at epoch %d of %d (%.2f s)", seed, run.best_val_f1,
                    run.best_epoch + 1, run.epochs, run.seconds)
        runs.append(run)
        if best is None or run.best_val_f1 > best.best_val_f1:
            best, best_state = run, state
    assert best is not None and best_state is not None
    with torch.no_grad():
        head.combiner.weight.copy_(best_state["weight"])
        head.combiner.bias.copy_(best_state["bias"])
    logger.info("combiner: kept seed %d (val weighted F1 %.4f)", best.seed, best.best_val_f1)
    return CombinerFit(best.seed, best.best_val_f1, runs, train_cache, val_cache)
