"""Training: phase 1 (:func:`fit_weak_learner`, one backbone overfits its bag) and phase 2 (the
frozen features cached once, :func:`extract_features`; the combination layer trained on them,
:func:`fit_combiner`)."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .backbones import _TRAINED_SIZE_ATTR, _pooled_dim
from .head import AdaptiveEnsembleHead
from .recipe import EarlyStopping, adabelief, weighted_f1

__all__ = ["Batches", "CombinerFit", "CombinerRun", "FeatureCache", "OptimizerFactory", "WeakLearnerFit",
           "extract_features", "fit_combiner", "fit_weak_learner", "predict_logits"]

logger = logging.getLogger(__name__)

Batches = Iterable[tuple[Tensor, Tensor]]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


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


def _make_optimizer(factory: OptimizerFactory, params: Any, lr: float | None, who: str) -> torch.optim.Optimizer:
    """``factory(params)``, or ``factory(params, lr=lr)`` when a learning rate is given."""
    if lr is None:
        return factory(params)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call decide
        sig = None
    if sig is not None and "lr" not in sig.parameters and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        name = getattr(factory, "__qualname__", type(factory).__name__)
        raise ConfigError(f"{who} got lr={lr} but its optimizer {name} takes no lr argument; set the rate in the "
                          "optimizer factory or drop lr=")
    return factory(params, lr=lr)


def _to_batch(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    x, y = batch[0], batch[1]
    return x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True).long()


def fit_weak_learner(backbone: nn.Module, loader: Batches, num_classes: int, *, max_epochs: int = 100,
                     target_accuracy: float | None = 0.99, max_seconds: float | None = None,
                     optimizer: OptimizerFactory = adabelief, lr: float | None = None,
                     device: str | torch.device = "cpu") -> WeakLearnerFit:
    """Phase 1: train ``backbone`` + a temporary linear output layer end to end on one bag.

    ``loader`` yields ``(images, labels)`` batches of the bag (normalised float images;
    ``drop_last=True`` avoids a final batch of one, which BatchNorm cannot train on). It is
    iterated once per epoch, so it must be re-iterable (a DataLoader or a list of batches, not
    a generator). Training stops once an epoch's training accuracy reaches ``target_accuracy``
    (the learner has overfit its bag), after ``max_epochs``, or when ``max_seconds`` have
    passed at the end of an epoch; ``target_accuracy=None`` trains the whole budget (for
    augmentation so heavy that no training accuracy is a sign of overfitting), without the
    warning a learner below its target gets. ``optimizer(params)`` builds the optimiser (the paper's
    AdaBelief); ``lr`` is passed to it as ``lr=`` (default: the factory's own, 5e-4, which
    suits pretrained backbones; from scratch a higher one such as 2e-3 trains faster). The
    backbone is left in eval mode, and remembers the image size it was trained at, which an
    :class:`AdaptiveEnsembleHead` built on it records as its input size.
    """
    if target_accuracy is not None and not 0 < target_accuracy <= 1:
        raise ConfigError(f"target_accuracy must be in (0, 1] or None, got {target_accuracy}")
    if max_epochs < 1:
        raise ConfigError(f"max_epochs must be >= 1, got {max_epochs}")
    if lr is not None and not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if max_epochs > 1 and isinstance(loader, Iterator):
        raise ConfigError(f"fit_weak_learner iterates its loader once per epoch, but got a one-shot "
                          f"{type(loader).__name__}; pass a re-iterable loader (a DataLoader or a list of batches) "
                          "or max_epochs=1")
    device = torch.device(device)
    backbone.to(device)
    classifier: nn.Linear | None = None
    opt = None
    fit = None
    start = time.perf_counter()
    skipped_single = False
    sizes: set[tuple[int, ...]] = set()
    for epoch in range(max_epochs):
        backbone.train()
        correct = seen = 0
        loss_sum = 0.0
        for batch in loader:
            x, y = _to_batch(batch, device)
            if classifier is None:  # first batch: size the output layer from the pooled features
                dim = _pooled_dim(backbone, x[:1], 0)
                classifier = nn.Linear(dim, num_classes).to(device)
                opt = _make_optimizer(optimizer, list(backbone.parameters()) + list(classifier.parameters()), lr,
                                      "fit_weak_learner")
                fit = WeakLearnerFit(backbone, classifier)
            if epoch == 0:
                sizes.add(tuple(x.shape[1:]))
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
        if fit is not None and seen == 0 and epoch > 0:
            raise ConfigError(f"the weak learner's loader yielded no batch in epoch {epoch + 1} after yielding some in "
                              "epoch 1: it must be re-iterable (a DataLoader or a list of batches, not a generator)")
        if fit is None or seen == 0:
            raise ConfigError("the weak learner's loader yielded no trainable batch (empty bag?)")
        acc = correct / seen
        fit.train_accuracy.append(acc)
        fit.train_loss.append(loss_sum / seen)
        logger.info("weak learner epoch %d: loss %.4f, train accuracy %.4f", epoch + 1, loss_sum / seen, acc)
        if target_accuracy is not None and acc >= target_accuracy:
            fit.overfit = True
            break
        if max_seconds is not None and time.perf_counter() - start >= max_seconds:
            logger.info("weak learner: time budget of %.0f s reached after %d epochs", max_seconds, epoch + 1)
            break
    assert fit is not None
    fit.seconds = time.perf_counter() - start
    backbone.eval()
    if len(sizes) == 1:  # one image size throughout: what a head on this backbone should expect
        setattr(backbone, _TRAINED_SIZE_ATTR, next(iter(sizes)))
    if target_accuracy is not None and not fit.overfit:
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
    input_size: tuple[int, ...] | None = None  # (C, H, W) of the images, when they all had one size

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
    """Phase 2's cache: the head's concatenated backbone features for every sample of ``loader``
    (and the image size they were computed at, when it was one)."""
    sizes: set[tuple[int, ...]] = set()

    class _Features(nn.Module):
        def __init__(self, h: AdaptiveEnsembleHead) -> None:
            super().__init__()
            self.h = h

        def forward(self, x: Tensor) -> Tensor:
            sizes.add(tuple(x.shape[1:]))
            return self.h.forward_features(x)

    start = time.perf_counter()
    head.to(device)
    features = _Features(head).train(head.training)  # predict_logits restores this mode afterwards
    feats, labels = predict_logits(features, loader, device)
    seconds = time.perf_counter() - start
    logger.info("feature cache: %d samples x %d features in %.1f s", feats.shape[0], feats.shape[1], seconds)
    return FeatureCache(feats.contiguous(), labels, seconds, next(iter(sizes)) if len(sizes) == 1 else None)


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
                 batch_size: int = 64, optimizer: OptimizerFactory = adabelief, lr: float | None = None,
                 device: str | torch.device = "cpu") -> CombinerFit:
    """Phase 2: train only the combination layer on cached features, best of several seeds.

    ``train`` and ``val`` are loaders of ``(images, labels)`` (their features are extracted
    once, :func:`extract_features`) or ready :class:`FeatureCache` objects. Per seed, the
    layer is re-initialised and trained with ``optimizer`` (``lr``, when given, is passed to it
    as ``lr=``; default the paper's 5e-4) on shuffled mini-batches of the cache, with early
    stopping (``patience``) on validation weighted F1; the best epoch's weights of the best
    seed are copied into ``head.combiner``. The size of the training images becomes the
    head's recorded input size when the head had only a default one (else a warning when
    they differ), so a teacher built on the head resizes views to the size it was fitted at.
    """
    if lr is not None and not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
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
    head._fitted_at(train_cache.input_size, "fit_combiner")
    xs, ys = train_cache.features.to(device), train_cache.labels.to(device)
    xv, yv = val_cache.features.to(device), val_cache.labels
    runs: list[CombinerRun] = []
    best_state: dict[str, Tensor] | None = None
    best: CombinerRun | None = None
    for seed in seeds:
        start = time.perf_counter()
        layer = _seeded_linear(head.num_features, head.num_classes, seed).to(device)
        opt = _make_optimizer(optimizer, layer.parameters(), lr, "fit_combiner")
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
