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

The package's modules, in the order the recipe uses them: :mod:`.splits` (train / val / test
and the bags), :mod:`.recipe` (optimiser, metric, early stopping), :mod:`.backbones` (timm
backbones and their files), :mod:`.head` (:class:`AdaptiveEnsembleHead` and its file),
:mod:`.fitting` (phases 1 and 2). Every public name is importable from here.
"""

from __future__ import annotations

from .backbones import create_backbone, save_backbone
from .fitting import (CombinerFit, CombinerRun, FeatureCache, WeakLearnerFit, extract_features, fit_combiner,
                      fit_weak_learner, predict_logits)
from .head import HEAD_CHECKPOINT_FORMAT, AdaptiveEnsembleHead
from .recipe import EarlyStopping, adabelief, weighted_f1
from .splits import bagging_split, stratified_split

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
