"""AdaptiveEnsembleHead and the adaptive ensembling recipe (reinforced_data.ensemble)."""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from torch import nn

from reinforced_data import ensemble as ens
from reinforced_data import teachers
from reinforced_data.ensemble import (
    AdaptiveEnsembleHead,
    EarlyStopping,
    FeatureCache,
    adabelief,
    bagging_split,
    create_backbone,
    extract_features,
    fit_combiner,
    fit_weak_learner,
    save_backbone,
    stratified_split,
    weighted_f1,
)
from reinforced_data.synthetic import SyntheticImages

SIZE = 32  # tiny inputs keep every forward cheap


def _resnet(**kw) -> nn.Module:
    return timm.create_model("resnet10t", num_classes=0, **kw)


class _TinyNet(nn.Module):
    """A small CNN with a pooled output: the fastest possible weak learner."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@functools.lru_cache(maxsize=None)
def _images(n: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float [n, 3, SIZE, SIZE] synthetic images and their labels."""
    ds = SyntheticImages(n, num_classes, min_size=SIZE, max_size=SIZE, seed=seed)
    x = torch.stack([ds[i][0] for i in range(n)]).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(ds.targets)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle_seed: int | None = None):
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, drop_last=shuffle_seed is not None,
        shuffle=shuffle_seed is not None,
        generator=None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed))
    return loader


# --------------------------------------------------------------------------- the head


def test_head_shapes_and_trainable_parameter_count():
    b1, b2 = _resnet(), timm.create_model("efficientnet_b0", num_classes=0)
    head = AdaptiveEnsembleHead([b1, b2], num_classes=5, input_size=SIZE)
    assert head.feature_dims == [512, 1280]
    assert head.num_features == 1792
    x = torch.randn(3, 3, SIZE, SIZE)
    assert head.forward_features(x).shape == (3, 1792)
    assert head(x).shape == (3, 5)
    assert head.num_trainable_params == 5 * 1792 + 5
    backbone_params = sum(p.numel() for p in b1.parameters()) + sum(p.numel() for p in b2.parameters())
    assert head.num_params == backbone_params + 5 * 1792 + 5
    assert head.get_classifier() is head.combiner
    assert "trainable_params=8965" in repr(head)


def test_paper_configuration_has_about_100k_trainable_parameters():
    # 2 x EfficientNet-B0 (1280 features each), Oxford Pets' 37 classes.
    head = AdaptiveEnsembleHead.from_timm(["efficientnet_b0", "efficientnet_b0"], 37, pretrained=False,
                                          input_size=SIZE)
    assert head.num_trainable_params == 37 * 2560 + 37 == 94_757


def test_feature_size_from_a_dummy_forward_for_plain_modules():
    head = AdaptiveEnsembleHead([_TinyNet(4), _TinyNet(6)], num_classes=3, input_size=(3, 16, 20))
    assert head.feature_dims == [8, 12]
    assert head(torch.randn(2, 3, 16, 20)).shape == (2, 3)
    # no timm config on either backbone: ImageNet normalisation is assumed and recorded
    assert head.pretrained_cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert head.pretrained_cfg["input_size"] == (3, 16, 20)


def test_head_carries_the_data_config_its_backbones_expect():
    head = AdaptiveEnsembleHead([_resnet(), _resnet()], num_classes=4)
    cfg = resolve_data_config({}, model=head)  # what a timm-style teacher wrapper would do
    assert cfg["input_size"] == (3, 176, 176)  # resnet10t's own
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert head.default_cfg is head.pretrained_cfg
    assert head.pretrained_cfg["num_classes"] == 4
    small = AdaptiveEnsembleHead([_resnet()], num_classes=4, input_size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3)
    cfg = resolve_data_config({}, model=small)
    assert cfg["input_size"] == (3, SIZE, SIZE) and cfg["mean"] == (0.5, 0.5, 0.5)


def test_frozen_backbones_get_no_gradient_and_do_not_change():
    torch.manual_seed(0)
    head = AdaptiveEnsembleHead([_resnet(), _TinyNet()], num_classes=4, input_size=SIZE)
    before = {k: v.clone() for k, v in head.backbones.state_dict().items()}  # incl. BatchNorm statistics
    comb_before = head.combiner.weight.detach().clone()
    opt = adabelief(head.parameters(), lr=1e-2)  # even when handed every parameter
    head.train()
    assert head.training and not any(m.training for m in head.backbones.modules())
    x, y = torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 4, (8,))
    for _ in range(2):
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in head.backbones.parameters())
    after = head.backbones.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    assert not torch.equal(comb_before, head.combiner.weight)
    assert head.num_trainable_params == 4 * (512 + 16) + 4


def test_unfrozen_backbones_train():
    head = AdaptiveEnsembleHead([_TinyNet()], num_classes=2, freeze_backbones=False, input_size=SIZE)
    head.train()
    assert head.backbones[0].training
    F.cross_entropy(head(torch.randn(4, 3, SIZE, SIZE)), torch.tensor([0, 1, 0, 1])).backward()
    assert all(p.grad is not None for p in head.backbones.parameters())
    assert head.num_trainable_params == head.num_params


def test_head_as_a_reinforcement_teacher():
    """How a teacher is used: eval mode, no grad, softmax over classes for a normalised batch."""
    torch.manual_seed(0)
    head = AdaptiveEnsembleHead([_resnet(), _resnet()], num_classes=6, input_size=SIZE).eval()
    uint8 = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    cfg = head.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = (uint8.float() / 255 - mean) / std
    with torch.no_grad():
        probs = head(x).softmax(dim=1)
        again = head(x).softmax(dim=1)
    assert probs.shape == (5, 6) and not probs.requires_grad
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
    assert (probs >= 0).all()
    assert torch.equal(probs, again)  # deterministic in eval mode
    # batch composition does not change a sample's output (no batch statistics in eval mode)
    with torch.no_grad():
        alone = head(x[:1]).softmax(dim=1)
    assert torch.allclose(alone, probs[:1], atol=1e-5)


def test_head_as_teacher_ensemble_member():
    torch.manual_seed(0)
    head = AdaptiveEnsembleHead([_resnet(), _TinyNet()], num_classes=5, input_size=SIZE, mean=(0.5, 0.4, 0.3),
                                std=(0.2, 0.25, 0.3))
    ensemble = teachers.TeacherEnsemble([head])
    member = ensemble.members[0]
    assert member.input_size == (SIZE, SIZE)  # read from head.pretrained_cfg, as for a timm model
    assert member.mean == pytest.approx((0.5, 0.4, 0.3)) and member.std == pytest.approx((0.2, 0.25, 0.3))
    assert ensemble.num_classes() == 5
    views = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    probs = ensemble(views)
    assert probs.shape == (4, 5) and torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    x = F.interpolate(views.float(), size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    x = (x / 255 - torch.tensor((0.5, 0.4, 0.3)).view(1, 3, 1, 1)) / torch.tensor((0.2, 0.25, 0.3)).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = head.eval()(x).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-4)
    # beside an ordinary timm classifier with the same classes
    mixed = teachers.TeacherEnsemble([head, timm.create_model("resnet10t", num_classes=5)], input_size=SIZE)
    assert mixed(views).shape == (4, 5)


def test_saved_head_file_is_a_teacher_spec(tmp_path, capsys):
    """head.save() output works as `--teacher head.pth` and in TeacherEnsemble(["head.pth"])."""
    from reinforced_data import teachers
    from reinforced_data.cli import main
    from reinforced_data.store import ReinforcementFile

    torch.manual_seed(0)
    head = AdaptiveEnsembleHead([_resnet(), _resnet()], num_classes=8, input_size=SIZE, mean=(0.5, 0.4, 0.3),
                                std=(0.2, 0.25, 0.3))
    path = str(tmp_path / "head.pth")
    head.save(path)
    from_file = teachers.TeacherEnsemble([path])
    member = from_file.members[0]
    assert member.name == "AdaptiveEnsembleHead(resnet10t + resnet10t)" and member.checkpoint == path
    assert member.input_size == (SIZE, SIZE) and member.mean == pytest.approx((0.5, 0.4, 0.3))
    from_file.bind_normalization((0.1, 0.1, 0.1), (0.9, 0.9, 0.9))  # the head keeps the normalisation it stores
    assert member.own_normalization and member.mean == pytest.approx((0.5, 0.4, 0.3))
    views = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    assert torch.allclose(from_file(views), teachers.TeacherEnsemble([head])(views), atol=1e-5)
    with pytest.raises(ValueError, match="names its own backbones"):
        teachers.TeacherEnsemble([f"resnet10t={path}"])

    out = tmp_path / "pets.h5"
    data = "synthetic:num_images=6,num_classes=8,min_size=24,max_size=40,seed=1"
    assert main(["reinforce", "--data", data, "--teacher", path, "--output-size", "32", "-K", "2", "-k", "3",
                 "-o", str(out), "--no-progress"]) == 0
    with ReinforcementFile(out) as f:
        assert f.num_images == 6 and f.num_classes == 8
        assert f.teachers[0]["name"] == "AdaptiveEnsembleHead(resnet10t + resnet10t)"


# --------------------------------------------------------------------------- bagging


def _unbalanced_labels(seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(4), [10, 7, 5, 13])
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_bagging_split_is_disjoint_covering_and_stratified(n):
    y = _unbalanced_labels()
    bags = bagging_split(y, n, seed=1)
    assert len(bags) == n
    allidx = np.concatenate(bags)
    assert len(allidx) == len(set(allidx.tolist())) == len(y)  # disjoint and covering
    sizes = [len(b) for b in bags]
    assert max(sizes) - min(sizes) <= 1  # equal size (up to one sample)
    for c, count in zip(*np.unique(y, return_counts=True)):
        per_bag = np.array([(y[b] == c).sum() for b in bags])
        assert per_bag.min() >= 1
        assert np.all(np.abs(per_bag - count / n) < 1)  # class proportions kept within one sample
    assert all(np.all(np.diff(b) > 0) for b in bags)


def test_bagging_split_is_seeded():
    y = _unbalanced_labels()
    a, b, c = bagging_split(y, 3, seed=7), bagging_split(y, 3, seed=7), bagging_split(y, 3, seed=8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    assert all(np.array_equal(u, v) for u, v in zip(a, bagging_split(torch.tensor(y), 3, seed=7)))


def test_stratified_split_partitions_each_class_in_proportion():
    y = _unbalanced_labels()  # class sizes 10, 7, 5, 13
    train, val, test = stratified_split(y, (0.2, 0.2), seed=4)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(y.size))  # disjoint, covering
    for c, size in enumerate([10, 7, 5, 13]):
        expect = max(1, round(0.2 * size))
        assert (y[val] == c).sum() == expect and (y[test] == c).sum() == expect
        assert (y[train] == c).sum() == size - 2 * expect
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), stratified_split(y, (0.2, 0.2), seed=4)))
    assert not np.array_equal(val, stratified_split(y, (0.2, 0.2), seed=5)[1])
    with pytest.raises(ValueError, match="class 1 has 2 samples"):
        stratified_split(np.array([0, 0, 0, 0, 1, 1]), (0.2, 0.2))
    with pytest.raises(ValueError, match="summing to less than 1"):
        stratified_split(y, (0.5, 0.5))


def test_bagging_split_by_user_grouping():
    # classes 0-1 are "cats", 2-3 are "dogs": the paper's Oxford Pets split
    y = _unbalanced_labels()
    bags = bagging_split(y, 2, groups={0: "cat", 1: "cat", 2: "dog", 3: "dog"})
    assert set(y[bags[0]].tolist()) == {0, 1} and set(y[bags[1]].tolist()) == {2, 3}
    assert sorted(np.concatenate(bags).tolist()) == list(range(len(y)))
    per_sample = ["a" if i % 3 else "b" for i in range(len(y))]
    bags = bagging_split(y, None, groups=per_sample)
    assert [len(b) for b in bags] == [per_sample.count("a"), per_sample.count("b")]
    with pytest.raises(ValueError, match="groups holds 2 groups"):
        bagging_split(y, 3, groups=per_sample)
    with pytest.raises(ValueError, match="one group per sample"):
        bagging_split(y, 2, groups=per_sample[:-1])
    with pytest.raises(ValueError, match="no group for class 3"):
        bagging_split(y, 2, groups={0: "cat", 1: "cat", 2: "dog"})


def test_bagging_split_rejects_more_bags_than_the_smallest_class():
    y = _unbalanced_labels()  # class 2 has 5 samples
    bagging_split(y, 5)
    with pytest.raises(ValueError, match=r"n=6 bags but class 2 has only 5 samples.*n <= 5"):
        bagging_split(y, 6)
    with pytest.raises(ValueError, match="positive"):
        bagging_split(y, 0)


# --------------------------------------------------------------------------- metrics and recipe


def test_weighted_f1_hand_computed():
    # class 0: P=1/2 R=1/2 F1=1/2; class 1: P=2/3 R=1 F1=4/5; class 2: P=1 R=1/2 F1=2/3; supports 2, 2, 2
    assert weighted_f1([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2], 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # unequal supports 3, 1, 1: F1 = 4/5, 1/2, 0 -> (3*0.8 + 0.5 + 0) / 5
    assert weighted_f1([0, 0, 1, 1, 1], [0, 0, 0, 1, 2], 3) == pytest.approx(0.58)
    assert weighted_f1([1, 0, 2], [1, 0, 2], 4) == 1.0
    assert weighted_f1([1, 1], [0, 0], 2) == 0.0


def _manual_weighted_f1(preds: list[int], targets: list[int], num_classes: int) -> float:
    total, n = 0.0, len(targets)
    for c in range(num_classes):
        tp = sum(1 for p, t in zip(preds, targets) if p == c and t == c)
        fp = sum(1 for p, t in zip(preds, targets) if p == c and t != c)
        fn = sum(1 for p, t in zip(preds, targets) if p != c and t == c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += f1 * (tp + fn)
    return total / n


@pytest.mark.parametrize("seed", range(5))
def test_weighted_f1_matches_a_manual_computation(seed):
    rng = np.random.default_rng(seed)
    k = 6
    targets = rng.integers(0, k - 1, size=200)  # class 5 never occurs
    preds = np.where(rng.random(200) < 0.6, targets, rng.integers(0, k, size=200))
    preds[preds == 3] = 4  # class 3 never predicted
    expected = _manual_weighted_f1(preds.tolist(), targets.tolist(), k)
    assert weighted_f1(torch.tensor(preds), torch.tensor(targets), k) == pytest.approx(expected, abs=1e-12)
    scores = F.one_hot(torch.tensor(preds), k).float() + 0.01 * torch.rand(200, k)
    assert weighted_f1(scores, targets, k) == pytest.approx(expected, abs=1e-12)


def test_weighted_f1_rejects_bad_input():
    with pytest.raises(ValueError, match="outside"):
        weighted_f1([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="same length"):
        weighted_f1([0, 1, 1], [0, 1], 3)
    with pytest.raises(ValueError, match="at least one"):
        weighted_f1([], [], 3)


def test_early_stopping():
    es = EarlyStopping(patience=3, mode="max")
    values = [0.5, 0.6, 0.6, 0.55, 0.7, 0.69, 0.7, 0.68]
    improved, stops = [], []
    for v in values:
        improved.append(es.step(v))
        stops.append(es.should_stop)
    assert improved == [True, True, False, False, True, False, False, False]
    assert stops == [False] * 7 + [True]  # three epochs in a row without beating 0.7
    assert es.best == 0.7 and es.best_epoch == 4
    es = EarlyStopping(patience=1, mode="min")
    assert es.step(1.0) and es.step(0.5) and not es.step(0.5) and es.should_stop
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert es.step(0.5) and not es.step(0.55) and es.step(0.65)
    with pytest.raises(ValueError, match="NaN"):
        es.step(float("nan"))
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="maximum")


def test_adabelief_has_the_papers_settings():
    from timm.optim import AdaBelief

    opt = adabelief([nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, AdaBelief)
    d = opt.defaults
    assert d["lr"] == 5e-4 and d["betas"] == (0.9, 0.999) and d["eps"] == 1e-16
    assert d["decoupled_decay"] is True and d["rectify"] is False and d["weight_decay"] > 0
    assert adabelief([nn.Parameter(torch.zeros(3))], lr=1e-3).defaults["lr"] == 1e-3


# --------------------------------------------------------------------------- phases 1 and 2


def test_fit_weak_learner_overfits_its_bag_and_stops():
    torch.manual_seed(0)
    x, y = _images(32, 2)
    x, y = x[:16], y[:16]
    fit = fit_weak_learner(_TinyNet(16), _batches(x, y, 8, shuffle_seed=0), num_classes=2, max_epochs=60,
                           target_accuracy=0.95, optimizer=lambda p: adabelief(p, lr=1e-2))
    assert fit.overfit and fit.train_accuracy[-1] >= 0.95
    assert fit.epochs < 60
    assert not fit.backbone.training
    logits, labels = ens.predict_logits(fit.model(), _batches(x, y, 16))
    assert (logits.argmax(1) == labels).float().mean() >= 0.9  # fits its bag in eval mode too
    short = fit_weak_learner(_TinyNet(), _batches(x, y, 8, shuffle_seed=0), num_classes=2, max_epochs=1,
                             target_accuracy=1.0)
    assert short.epochs == 1 and not short.overfit


def test_fit_weak_learner_without_a_target_trains_its_whole_budget_quietly(caplog):
    torch.manual_seed(0)
    x, y = _images(16, 2)
    with caplog.at_level("WARNING"):
        fit = fit_weak_learner(_TinyNet(16), _batches(x, y, 8, shuffle_seed=0), num_classes=2, max_epochs=25,
                               target_accuracy=None, optimizer=lambda p: adabelief(p, lr=1e-2))
    assert fit.epochs == 25 and not fit.overfit
    assert max(fit.train_accuracy) >= 0.95  # it would have stopped early with the default target
    assert "below the target" not in caplog.text
    with caplog.at_level("WARNING"):
        fit_weak_learner(_TinyNet(), _batches(x, y, 8, shuffle_seed=0), num_classes=2, max_epochs=1)
    assert "below the target" in caplog.text


def _clustered_cache(n: int, num_classes: int, dim: int, seed: int, spread: float = 0.4) -> FeatureCache:
    """Overlapping gaussian clusters: learnable (chance is 1 / num_classes) but not perfectly."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * spread
    labels = torch.arange(n) % num_classes
    return FeatureCache(centres[labels] + torch.randn(n, dim, generator=g), labels)


def test_fit_combiner_learns_keeps_best_seed_and_stops_early():
    head = AdaptiveEnsembleHead([_TinyNet(4), _TinyNet(4)], num_classes=4, input_size=SIZE)
    train, val = _clustered_cache(200, 4, 16, seed=1), _clustered_cache(80, 4, 16, seed=2)
    fit = fit_combiner(head, train, val, seeds=(0, 1, 2), max_epochs=300, patience=5, batch_size=32,
                       optimizer=lambda p: adabelief(p, lr=1e-2))
    assert [r.seed for r in fit.runs] == [0, 1, 2]
    f1s = [r.best_val_f1 for r in fit.runs]
    assert len(set(f1s)) > 1  # the seeds matter here, so keeping the best one is tested
    assert fit.best_val_f1 == max(f1s) > 0.5
    assert fit.best_seed == fit.runs[int(np.argmax(f1s))].seed
    assert all(r.epochs < 300 and r.epochs == r.best_epoch + 1 + 5 for r in fit.runs)  # early stopping
    with torch.no_grad():  # the head holds the best epoch's weights, not the last epoch's
        assert weighted_f1(head.forward_head(val.features), val.labels, 4) == pytest.approx(fit.best_val_f1)
    # deterministic: the same seeds give the same weights
    w = head.combiner.weight.detach().clone()
    fit_combiner(head, train, val, seeds=(0, 1, 2), max_epochs=300, patience=5, batch_size=32,
                 optimizer=lambda p: adabelief(p, lr=1e-2))
    assert torch.equal(w, head.combiner.weight)
    with pytest.raises(ValueError, match="extract it with this head"):
        fit_combiner(head, _clustered_cache(20, 4, 15, 0), val)


def test_phase_two_extracts_features_once_whatever_the_epochs_and_seeds():
    torch.manual_seed(0)
    x, y = _images(48, 4)
    head = AdaptiveEnsembleHead([_TinyNet(), _TinyNet()], num_classes=4, input_size=SIZE)
    calls = []
    for b in head.backbones:
        b.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    fit = fit_combiner(head, _batches(x[:32], y[:32], 16), _batches(x[32:], y[32:], 16), seeds=(0, 1),
                       max_epochs=15, patience=15)
    assert sum(r.epochs for r in fit.runs) == 30
    assert len(calls) == 2 * (2 + 1)  # two backbones x (2 train + 1 val batches), once
    assert sum(calls) == 2 * 48
    cache = extract_features(head, _batches(x, y, 16))
    with torch.no_grad():
        assert torch.allclose(cache.features, head.eval().forward_features(x), atol=1e-5)


@pytest.mark.slow
def test_recipe_end_to_end_with_timm_checkpoints(tmp_path):
    """Bagging -> phase 1 -> save backbones -> head from local checkpoints -> phase 2."""
    torch.manual_seed(0)
    x, y = _images(48, 4, seed=3)
    train_idx, val_idx = np.arange(32), np.arange(32, 48)
    bags = bagging_split(y[train_idx], 2, seed=0)
    paths = []
    for i, bag in enumerate(bags):
        fit = fit_weak_learner(_resnet(), _batches(x[bag], y[bag], 8, shuffle_seed=i), num_classes=4,
                               max_epochs=1)
        paths.append(tmp_path / f"learner{i}.pth")
        save_backbone(fit.backbone, paths[-1])
    head = AdaptiveEnsembleHead.from_timm([paths[0], f"resnet10t={paths[1]}"], 4, input_size=SIZE)
    saved = torch.load(paths[0], weights_only=True)["state_dict"]
    assert all(torch.equal(v, head.backbones[0].state_dict()[k]) for k, v in saved.items())
    fit = fit_combiner(head, _batches(x[train_idx], y[train_idx], 16), _batches(x[val_idx], y[val_idx], 16),
                       seeds=(0, 1), max_epochs=5)
    assert 0.0 <= fit.best_val_f1 <= 1.0 and len(fit.train_cache) == 32 and len(fit.val_cache) == 16
    # the trained head survives a save/load round trip
    head.save(tmp_path / "head.pth")
    again = AdaptiveEnsembleHead.load(tmp_path / "head.pth")
    head.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(head(x[:4]), again(x[:4]), atol=1e-5)
    assert again.pretrained_cfg["input_size"] == (3, SIZE, SIZE)
    assert again.backbones_frozen and again.num_trainable_params == head.num_trainable_params


# --------------------------------------------------------------------------- checkpoints and clear errors


def test_backbone_from_a_full_classifier_checkpoint_drops_the_classifier(tmp_path):
    model = timm.create_model("resnet10t", num_classes=7)
    torch.save(model.state_dict(), tmp_path / "clf.pth")
    backbone = create_backbone(f"resnet10t={tmp_path / 'clf.pth'}")
    own = backbone.state_dict()
    assert "fc.weight" not in own
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items() if not k.startswith("fc."))


def test_backbones_without_pooled_output_are_rejected():
    with pytest.raises(ValueError, match=r"returns a \[1, 512, 1, 1\] tensor, not a pooled feature vector"):
        AdaptiveEnsembleHead([_resnet(global_pool="")], num_classes=3, input_size=SIZE)
    with pytest.raises(ValueError, match="still has a classifier.*num_classes=0"):
        AdaptiveEnsembleHead([timm.create_model("resnet10t", num_classes=10)], num_classes=3, input_size=SIZE)

    class TwoOutputs(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x

    with pytest.raises(ValueError, match="returns tuple"):
        AdaptiveEnsembleHead([TwoOutputs()], num_classes=3, input_size=SIZE)
    with pytest.raises(ValueError, match="at least one backbone"):
        AdaptiveEnsembleHead([], num_classes=3)


def test_mismatched_feature_sizes_from_a_checkpoint_are_rejected(tmp_path):
    save_backbone(_resnet(), tmp_path / "r10.pth")  # 512 features
    with pytest.raises(ValueError, match="512 features but efficientnet_b0 has 1280"):
        create_backbone(f"efficientnet_b0={tmp_path / 'r10.pth'}")
    torch.save(_resnet().state_dict(), tmp_path / "plain.pth")  # no metadata: caught by the tensors
    with pytest.raises(ValueError, match="does not fit resnet14t"):
        create_backbone(f"resnet14t={tmp_path / 'plain.pth'}")
    with pytest.raises(ValueError, match="does not name its architecture"):
        create_backbone(tmp_path / "plain.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone(f"resnet10t={tmp_path / 'missing.pth'}")
    with pytest.raises(ValueError, match="not a timm model name"):
        create_backbone("no_such_net", pretrained=False)

    head = AdaptiveEnsembleHead([_resnet(), _resnet()], num_classes=3, input_size=SIZE)
    head.save(tmp_path / "head.pth")
    ckpt = torch.load(tmp_path / "head.pth", weights_only=True)
    ckpt["archs"] = ["resnet10t", "efficientnet_b0"]  # backbones now give 512 + 1280 features
    torch.save(ckpt, tmp_path / "bad_head.pth")
    with pytest.raises(ValueError, match=r"trained on feature sizes \[512, 512\] but its backbones"):
        AdaptiveEnsembleHead.load(tmp_path / "bad_head.pth")
    ckpt = torch.load(tmp_path / "head.pth", weights_only=True)
    ckpt["state_dict"]["combiner.weight"] = torch.zeros(3, 1000)
    torch.save(ckpt, tmp_path / "bad_comb.pth")
    with pytest.raises(ValueError, match=r"combination layer of shape \[3, 1000\]"):
        AdaptiveEnsembleHead.load(tmp_path / "bad_comb.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an AdaptiveEnsembleHead checkpoint"):
        AdaptiveEnsembleHead.load(tmp_path / "other.pth")


def test_backbones_with_different_normalisation_are_rejected():
    a = _resnet()
    b = _resnet()
    b.pretrained_cfg = dict(b.pretrained_cfg, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="backbone 1 expects mean"):
        AdaptiveEnsembleHead([a, b], num_classes=3, input_size=SIZE)
    head = AdaptiveEnsembleHead([a, b], num_classes=3, input_size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert head.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_unavailable_pretrained_weights_raise_instead_of_falling_back(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("offline")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="pass pretrained=False"):
        AdaptiveEnsembleHead.from_timm(["resnet10t"], 3, input_size=SIZE)
    assert AdaptiveEnsembleHead.from_timm(["resnet10t"], 3, pretrained=False, input_size=SIZE).num_classes == 3


def test_fit_weak_learner_rejects_bad_labels():
    x, y = _images(8, 2)
    with pytest.raises(ValueError, match="outside"):
        fit_weak_learner(_TinyNet(), _batches(x, y + 5, 4), num_classes=2, max_epochs=1)


def test_backbone_pooling_to_head_hidden_size():
    """timm models with a pre-logits stage pool to head_hidden_size, not num_features."""
    b = timm.create_model("mobilenetv3_small_050", num_classes=0)
    assert b.head_hidden_size != b.num_features
    head = AdaptiveEnsembleHead([b], num_classes=3, input_size=SIZE)
    assert head.feature_dims == [b.head_hidden_size]
    assert head(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 3)


def test_extract_features_keeps_the_heads_mode():
    head = AdaptiveEnsembleHead([_TinyNet()], num_classes=2, freeze_backbones=False, input_size=SIZE).eval()
    x, y = torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 2, (8,))
    extract_features(head, [(x, y)])
    assert not head.training and not head.backbones[0].training
    head.train()
    extract_features(head, [(x, y)])
    assert head.training and head.backbones[0].training


def test_fit_combiner_leaves_the_global_rng_alone():
    head = AdaptiveEnsembleHead([_TinyNet()], num_classes=2, input_size=SIZE)
    x, y = torch.randn(16, 3, SIZE, SIZE), torch.arange(16) % 2
    state = torch.get_rng_state()
    fit_combiner(head, [(x, y)], [(x, y)], seeds=(0, 1), max_epochs=2)
    assert torch.equal(torch.get_rng_state(), state)


def test_save_records_timm_settings(tmp_path):
    torch.manual_seed(0)
    head = AdaptiveEnsembleHead.from_timm(["resnet10t"], 3, pretrained=False, input_size=64, global_pool="max")
    head.save(tmp_path / "head.pth")
    again = AdaptiveEnsembleHead.load(tmp_path / "head.pth")
    assert again.backbones[0].global_pool.pool_type == "max"
    x = torch.randn(2, 3, 64, 64)  # 2x2 before pooling: max and avg pooling differ
    with torch.no_grad():
        assert torch.allclose(head.eval()(x), again.eval()(x), atol=1e-5)
    # the same for one backbone through save_backbone / create_backbone
    save_backbone(head.backbones[0], tmp_path / "b.pth")
    rebuilt = create_backbone(tmp_path / "b.pth")
    assert rebuilt.global_pool.pool_type == "max"
    # settings given to timm directly cannot be recorded: refused at save time, not lost silently
    direct = AdaptiveEnsembleHead([timm.create_model("resnet10t", num_classes=0, global_pool="max")], 3,
                                  input_size=64)
    with pytest.raises(ValueError, match="settings that were not recorded"):
        direct.save(tmp_path / "direct.pth")
    with pytest.raises(ValueError, match="settings that were not recorded"):
        save_backbone(direct.backbones[0], tmp_path / "direct_b.pth")


def test_head_file_missing_tensors_is_a_clear_error(tmp_path):
    head = AdaptiveEnsembleHead([_resnet()], num_classes=3, input_size=SIZE)
    head.save(tmp_path / "head.pth")
    ckpt = torch.load(tmp_path / "head.pth", weights_only=True)
    del ckpt["state_dict"]["backbones.0.conv1.0.weight"]
    torch.save(ckpt, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="does not fit its backbones at 'backbones.0.conv1.0.weight'"):
        AdaptiveEnsembleHead.load(tmp_path / "cut.pth")


def test_save_needs_timm_backbones(tmp_path):
    head = AdaptiveEnsembleHead([_TinyNet()], num_classes=2, input_size=SIZE)
    with pytest.raises(ValueError, match="not a timm model"):
        head.save(tmp_path / "h.pth")
    assert not os.path.exists(tmp_path / "h.pth")
    assert math.isfinite(float(head(torch.randn(2, 3, SIZE, SIZE)).detach().sum()))


def test_public_names_of_the_ensemble_module():
    """The package's modules re-export every public name under reinforced_data.ensemble (old import path)."""
    import reinforced_data.ensemble as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    assert {"create_backbone", "save_backbone", "AdaptiveEnsembleHead", "fit_weak_learner"} <= set(pkg.__all__)
    assert pkg.create_backbone is create_backbone and pkg.AdaptiveEnsembleHead is AdaptiveEnsembleHead


def test_load_honours_map_location(tmp_path):
    head = AdaptiveEnsembleHead([_resnet()], num_classes=3, input_size=SIZE)
    head.save(tmp_path / "head.pth")
    assert all(t.device.type == "cpu" for t in AdaptiveEnsembleHead.load(tmp_path / "head.pth").state_dict().values())
    meta = AdaptiveEnsembleHead.load(tmp_path / "head.pth", map_location="meta")  # a device every machine has
    assert all(t.device.type == "meta" for t in meta.state_dict().values())
    with pytest.raises(ValueError, match="map_location must name a device"):
        AdaptiveEnsembleHead.load(tmp_path / "head.pth", map_location={"cuda:0": "cpu"})


@pytest.mark.cuda
def test_load_onto_the_gpu(tmp_path):
    torch.manual_seed(0)
    head = AdaptiveEnsembleHead([_resnet()], num_classes=3, input_size=SIZE).eval()
    head.save(tmp_path / "head.pth")
    gpu = AdaptiveEnsembleHead.load(tmp_path / "head.pth", map_location="cuda").eval()
    assert all(t.is_cuda for t in gpu.state_dict().values())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(gpu(x.cuda()).cpu(), head(x), atol=1e-4)


def test_class_valued_timm_settings_are_stored_by_name(tmp_path):
    """act_layer=nn.SiLU used to save fine and then never load (weights_only refuses a pickled class)."""
    from reinforced_data.errors import ConfigError
    from reinforced_data.teachers import TeacherEnsemble

    torch.manual_seed(0)
    head = AdaptiveEnsembleHead.from_timm(["resnet10t"], 3, pretrained=False, input_size=SIZE, act_layer=nn.SiLU)
    head.save(tmp_path / "head.pth")
    again = AdaptiveEnsembleHead.load(tmp_path / "head.pth")
    assert isinstance(again.backbones[0].act1, nn.SiLU)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(head.eval()(x), again.eval()(x), atol=1e-5)
    again.save(tmp_path / "again.pth")  # a loaded head saves again
    views = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    assert torch.allclose(TeacherEnsemble([str(tmp_path / "head.pth")])(views), TeacherEnsemble([head])(views),
                          atol=1e-5)  # also as a --teacher file
    save_backbone(head.backbones[0], tmp_path / "b.pth")
    assert isinstance(create_backbone(tmp_path / "b.pth").act1, nn.SiLU)
    # a setting no file can name: refused at save time, nothing written
    odd = AdaptiveEnsembleHead.from_timm(["resnet10t"], 3, pretrained=False, input_size=SIZE,
                                         act_layer=functools.partial(nn.SiLU))
    with pytest.raises(ConfigError, match="act_layer=.* cannot be stored in a file"):
        odd.save(tmp_path / "odd.pth")
    assert not os.path.exists(tmp_path / "odd.pth")
    # a file naming something outside torch / timm is not imported
    ckpt = torch.load(tmp_path / "head.pth", weights_only=True)
    assert ckpt["version"] == 3 and ckpt["timm_kwargs"][0]["act_layer"] == {"__callable__": "torch.nn.modules.activation:SiLU"}
    ckpt["timm_kwargs"][0]["act_layer"] = {"__callable__": "os:system"}
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match="only torch and timm classes"):
        AdaptiveEnsembleHead.load(tmp_path / "evil.pth")


def test_head_records_the_input_size_it_was_trained_at(tmp_path, caplog):
    """Without input_size= the head used to record the backbone's timm default (176 px for resnet10t) although the
    learners were trained at 32 px, so a teacher built on it silently resized every view."""
    torch.manual_seed(0)
    x, y = _images(16, 2)
    fit = fit_weak_learner(timm.create_model("test_resnet", num_classes=0), _batches(x, y, 8, shuffle_seed=0), num_classes=2, max_epochs=1)
    head = AdaptiveEnsembleHead([fit.backbone], num_classes=2)
    assert head.pretrained_cfg["input_size"] == (3, SIZE, SIZE)
    save_backbone(fit.backbone, tmp_path / "b.pth")  # the size travels with a backbone file too
    assert AdaptiveEnsembleHead.from_timm([tmp_path / "b.pth"], 2).pretrained_cfg["input_size"] == (3, SIZE, SIZE)
    # backbones not trained here: fit_combiner records the size of the images it fits the head on
    head = AdaptiveEnsembleHead([timm.create_model("test_resnet", num_classes=0)], num_classes=2)
    assert head.pretrained_cfg["input_size"] == (3, 160, 160)  # timm's default until then
    fit_combiner(head, _batches(x, y, 8), _batches(x, y, 8), seeds=(0,), max_epochs=1)
    assert head.pretrained_cfg["input_size"] == (3, SIZE, SIZE)
    from reinforced_data.teachers import TeacherEnsemble

    assert TeacherEnsemble([head]).members[0].input_size == (SIZE, SIZE)
    # a size the user chose is kept, with a warning when the data says otherwise
    head = AdaptiveEnsembleHead([timm.create_model("test_resnet", num_classes=0)], num_classes=2, input_size=48)
    with caplog.at_level("WARNING", logger="reinforced_data.ensemble"):
        fit_combiner(head, _batches(x, y, 8), _batches(x, y, 8), seeds=(0,), max_epochs=1)
    assert head.pretrained_cfg["input_size"] == (3, 48, 48)
    assert "fitted on (3, 32, 32) images, but the head records input_size (3, 48, 48)" in caplog.text


def test_fit_weak_learner_needs_a_re_iterable_loader():
    from reinforced_data.errors import ConfigError

    x, y = _images(16, 2)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in (0, 8)]
    with pytest.raises(ConfigError, match="one-shot generator; pass a re-iterable loader"):
        fit_weak_learner(_TinyNet(), (b for b in batches), num_classes=2, max_epochs=3)
    assert fit_weak_learner(_TinyNet(), (b for b in batches), num_classes=2, max_epochs=1).epochs == 1

    class OneShot:  # re-iterable in form, but empty after the first pass
        def __init__(self):
            self.it = iter(batches)

        def __iter__(self):
            return (b for b in self.it)

    with pytest.raises(ConfigError, match="no batch in epoch 2 after yielding some in epoch 1: it must be re-iterable"):
        fit_weak_learner(_TinyNet(), OneShot(), num_classes=2, max_epochs=3, target_accuracy=1.0)


def test_fitting_helpers_take_lr():
    from reinforced_data.errors import ConfigError

    seen = []

    def factory(params, lr=5e-4):
        seen.append(lr)
        return adabelief(params, lr=lr)

    x, y = _images(16, 2)
    fit_weak_learner(_TinyNet(), _batches(x, y, 8, shuffle_seed=0), num_classes=2, max_epochs=1, optimizer=factory,
                     lr=2e-3)
    head = AdaptiveEnsembleHead([_TinyNet()], num_classes=2, input_size=SIZE)
    cache = _clustered_cache(16, 2, 16, seed=0)
    fit_combiner(head, cache, cache, seeds=(0, 1), max_epochs=1, optimizer=factory, lr=1e-2)
    fit_combiner(head, cache, cache, seeds=(0,), max_epochs=1, optimizer=factory)  # the factory's own default
    assert seen == [2e-3, 1e-2, 1e-2, 5e-4]
    fit_weak_learner(_TinyNet(), _batches(x, y, 8, shuffle_seed=0), 2, max_epochs=1, lr=1e-2)  # default AdaBelief
    fit_combiner(head, cache, cache, seeds=(0,), max_epochs=1, optimizer=torch.optim.SGD, lr=0.1)
    with pytest.raises(ConfigError, match="takes no lr argument"):
        fit_combiner(head, cache, cache, seeds=(0,), max_epochs=1, optimizer=lambda p: adabelief(p), lr=0.1)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        fit_weak_learner(_TinyNet(), _batches(x, y, 8), 2, lr=0.0)


def test_stratified_split_fractions_by_name():
    y = _unbalanced_labels()
    by_position = stratified_split(y, (0.2, 0.1), seed=4)
    by_name = stratified_split(y, val=0.2, test=0.1, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(by_position, by_name))
    train, val, test = stratified_split(y, val=0.3)  # test keeps its default share, 0.15
    assert (y[val] == 0).sum() == 3 and (y[test] == 0).sum() == 2


def test_docs_quote_the_committed_benchmark_results():
    """docs/adaptive_ensembling.md's measured figures are those of benchmarks/results/ensemble.md."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "adaptive_ensembling.md").read_text()
    results = (root / "benchmarks" / "results" / "ensemble.md").read_text()
    measured = doc[doc.index("Measured on"):doc.index("The cache trades away")]
    figures = re.findall(r"\d+\.\d+|\d+(?=×)|\d+(?= epochs)|(?<=about )\d+(?= s)", measured)
    assert len(figures) >= 8
    missing = [f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", results)]
    assert missing == [], f"figures in the docs that benchmarks/results/ensemble.md does not hold: {missing}"
    assert "- machine: " in results
