"""``reinforced-data demo``: the whole idea, end to end, on CPU in minutes.

1. **Teacher**: an :class:`~reinforced_data.ensemble.AdaptiveEnsembleHead` of two small
   CNNs, each trained from scratch on one of two disjoint class-stratified bags of the
   training set (phase 1), then one linear layer on their concatenated features, fitted
   on a held-out tenth of the training set for early stopping (phase 2).
2. **Reinforce**: :func:`~reinforced_data.reinforce.reinforce` stores K views per training
   image (RandomResizedCrop + flip + RandAugment + RandomErasing parameters) with the
   teacher's top-k probabilities in an HDF5 file.
3. **Students**: the same small CNN, from the same initialisation, for the same epochs,
   batch size, optimiser and schedule, three ways:

   * *plain*: hard labels, the same augmentation drawn on the fly (fresh
     :meth:`Policy.sample` parameters every epoch, replayed with
     :func:`~reinforced_data.replay.replay`);
   * *online KD*: the teacher labels every on-the-fly view during training (:class:`KDLoss`);
   * *reinforced*: :class:`~reinforced_data.dataset.ReinforcedDataset` over the file in a
     standard ``DataLoader``, with :class:`KDLoss`: no teacher in the loop.

Writes ``results.md`` (accuracy, training time, images/s), ``results.json``,
``accuracy.png`` (test accuracy per epoch) and ``views.png`` (training images, replayed
views and the teacher's top-3 labels) into the output folder. The data is
:class:`~reinforced_data.shapes.ShapesDataset` (generated) unless ``--data`` names an
ImageFolder with ``train/`` and ``val/``. Same ``--seed``, same accuracies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ReinforcedDataError

__all__ = ["DemoSettings", "DemoResult", "SmallCNN", "run_demo", "add_demo_parser", "main"]

log = logging.getLogger(__name__)

STUDENTS = ("plain", "online KD", "reinforced")


@dataclass
class DemoSettings:
    """Everything a demo run depends on. ``quick()`` and ``default()`` are the two presets."""

    data: str | None = None  # None: the generated ShapesDataset
    out: str = "demo_out"
    seed: int = 0
    device: str = "cpu"
    epochs: int = 20  # student epochs
    views: int = 32  # K, stored views per image
    topk: int = 5  # classes kept per view
    classes: int = 12  # generated data only: how many shape classes (fewer: the least alike first)
    train_images: int = 2400  # generated data only
    test_images: int = 1200
    image_size: int = 40  # generated images' side
    view_size: int = 32  # the side of the views students and teacher see
    crop_scale: tuple[float, float] = (0.25, 1.0)
    teacher_epochs: int = 30  # per weak learner
    teacher_width: int = 32
    teacher_crop_scale: tuple[float, float] = (0.35, 1.0)
    student_width: int = 16
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    # torch threads: these small convolutions gain little from more, and threads that outnumber
    # free cores slow them down several times (measured: 4x with two threads on a busy 2-core machine)
    threads: int | None = 1  # None: torch's default
    grid_images: int = 4
    grid_views: int = 6
    progress: bool = True
    k_sweep: tuple[int, ...] = ()  # also train reinforced students on the first k of max(k_sweep) stored views

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        """The ``--quick`` preset: a smaller run (CI)."""
        base = dict(epochs=14, views=16, classes=6, train_images=1200, test_images=600, teacher_epochs=30,
                    batch_size=32)
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        if not 2 <= self.classes <= 12:
            raise ConfigError(f"classes={self.classes} must lie in [2, 12] (the generated shape classes)")
        for name in ("epochs", "views", "topk", "train_images", "test_images", "teacher_epochs", "batch_size",
                     "teacher_width", "student_width"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.view_size < 8 or self.image_size < self.view_size // 2:
            raise ConfigError(f"view_size={self.view_size} must be >= 8 and image_size={self.image_size} at least "
                              "half of it")
        if any(int(k) < 1 for k in self.k_sweep):
            raise ConfigError(f"k_sweep={self.k_sweep} must hold view counts >= 1")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device {self.device!r}: use cpu or cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device} was asked for but torch sees no CUDA device; use --device cpu")


# ---------------------------------------------------------------------- models
class SmallCNN(nn.Module):
    """Five 3x3 convolutions with BatchNorm and ReLU, three of stride 2, and a global average pool.

    Cheap enough to train from scratch on CPU (the stride-2 stem does most of the saving).
    ``num_classes=0`` returns the pooled features ``[B, 4 * width]`` (a backbone for the
    ensemble head), else logits.
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(3, w, 2), *block(w, w), *block(w, 2 * w, 2), *block(2 * w, 2 * w),
                                      *block(2 * w, 4 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 4 * w
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------- data
@dataclass
class _Data:
    train: Any  # map-style dataset of (uint8 image, label): what reinforce() and ReinforcedDataset get
    sources: list[torch.Tensor]  # decoded uint8 [3, H, W] training images
    labels: torch.Tensor  # [N] int64
    test_views: torch.Tensor  # uint8 [M, 3, S, S]: the test images, whole, resized
    test_labels: torch.Tensor
    classes: list[str]
    name: str


def _load_data(s: DemoSettings, policy) -> _Data:
    from ._datasets import RawImages, class_names, dataset_labels

    if s.data is None:
        from .shapes import ShapesDataset

        from .shapes import DISTINCT_ORDER, SHAPE_CLASSES

        names = SHAPE_CLASSES if s.classes == len(SHAPE_CLASSES) else DISTINCT_ORDER[:s.classes]
        train = ShapesDataset("train", s.train_images, size=s.image_size, seed=s.seed, classes=names)
        test = ShapesDataset("test", s.test_images, size=s.image_size, seed=s.seed, classes=names)
        name = (f"generated shapes: {len(train.classes)} classes, {len(train)} train / {len(test)} test images "
                f"of {s.image_size} px")
    else:
        from torchvision.datasets import ImageFolder

        root = os.fspath(s.data)
        for sub in ("train", "val"):
            if not os.path.isdir(os.path.join(root, sub)):
                raise ConfigError(f"--data {root} has no {sub}/ folder; give an ImageFolder root with train/ and val/")
        train, test = ImageFolder(os.path.join(root, "train")), ImageFolder(os.path.join(root, "val"))
        if train.classes != test.classes:
            raise ConfigError(f"--data {root}: train/ and val/ have different class folders")
        name = f"ImageFolder {root}: {len(train.classes)} classes, {len(train)} train / {len(test)} val images"
    raw_train, raw_test = RawImages(train), RawImages(test)
    sources = [raw_train[i][0] for i in range(len(train))]
    labels = torch.as_tensor(dataset_labels(train))
    test_src = [raw_test[i][0] for i in range(len(test))]
    test_views = _whole_views(test_src, policy)
    return _Data(train, sources, labels, test_views, torch.as_tensor(dataset_labels(test)),
                 class_names(train) or [str(c) for c in range(int(labels.max()) + 1)], name)


def _whole_views(sources: Sequence[torch.Tensor], policy) -> torch.Tensor:
    """Each image whole, resized to the view size by the replay kernels (uint8)."""
    from .policy import Policy
    from .replay import replay

    plain = Policy(output_size=policy.output_size, flip_prob=0.0, mean=policy.mean, std=policy.std)
    params = np.zeros(len(sources), dtype=plain.param_dtype())
    params["crop"] = [(0, 0, int(x.shape[1]), int(x.shape[2])) for x in sources]
    out = [replay(sources[i:i + 512], params[i:i + 512], plain) for i in range(0, len(sources), 512)]
    return torch.cat(out)


def _sample_params(policy, rng: np.random.Generator, sources: Sequence[torch.Tensor]) -> np.ndarray:
    """One fresh parameter set per source image (vectorised per image size)."""
    sizes = np.array([(int(x.shape[1]), int(x.shape[2])) for x in sources])
    out = np.zeros(len(sources), dtype=policy.param_dtype())
    uniq, inverse = np.unique(sizes, axis=0, return_inverse=True)
    for u, (h, w) in enumerate(uniq):
        idx = np.flatnonzero(inverse.reshape(-1) == u)
        out[idx] = policy.sample(rng, len(idx), int(h), int(w))
    return out


class _Normalise:
    """uint8 views -> float32 normalised with the policy's mean and std."""

    def __init__(self, policy, device: torch.device) -> None:
        self.mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.scale = 1.0 / (torch.tensor(policy.std, device=device).view(1, 3, 1, 1) * 255.0)

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        return (views.float() - self.mean) * self.scale


class _OnTheFly:
    """Batches of freshly augmented views of ``indices``: every pass draws new parameters.

    Yields ``(uint8 views [B, 3, S, S], labels [B])``; with ``normalise`` float views.
    Pass ``p`` draws its order and parameters from ``default_rng([seed, tag, p])``.
    """

    def __init__(self, data: _Data, indices: np.ndarray, policy, batch_size: int, seed: int, tag: int,
                 device: torch.device, normalise: _Normalise | None = None, drop_last: bool = True,
                 bar: Any = None) -> None:
        self.data, self.indices, self.policy = data, np.asarray(indices), policy
        self.batch_size, self.seed, self.tag, self.device = batch_size, seed, tag, device
        self.normalise, self.drop_last, self.bar = normalise, drop_last, bar
        self.passes = 0
        self.replay_seconds = 0.0

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from .replay import replay

        rng = np.random.default_rng([self.seed, self.tag, self.passes])
        self.passes += 1
        order = self.indices[rng.permutation(len(self.indices))]
        srcs = [self.data.sources[i] for i in order]
        params = _sample_params(self.policy, rng, srcs)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            t0 = time.perf_counter()
            views = replay(srcs[sl], params[sl], self.policy).to(self.device)
            self.replay_seconds += time.perf_counter() - t0
            y = self.data.labels[order[sl]].to(self.device)
            if self.bar is not None:
                self.bar.update(1)
            yield (self.normalise(views) if self.normalise is not None else views), y


# ---------------------------------------------------------------------- results
@dataclass
class RunResult:
    """One trained model: test accuracy, wall time of its training, images/s, per-epoch accuracy."""

    name: str
    accuracy: float
    seconds: float
    images: int  # training images processed (views)
    history: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class DemoResult:
    settings: DemoSettings
    dataset: str
    teacher: RunResult
    students: dict[str, RunResult]
    reinforce_seconds: float
    reinforce_views_per_second: float
    file_bytes: int
    out: str
    files: dict[str, str]
    total_seconds: float = 0.0
    k_sweep: dict[int, RunResult] = field(default_factory=dict)  # K -> reinforced student
    k_sweep_reinforce_seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["teacher"]["images_per_second"] = self.teacher.images_per_second
        for k, r in self.students.items():
            d["students"][k]["images_per_second"] = r.images_per_second
        d["k_sweep"] = {str(k): dataclasses.asdict(r) for k, r in self.k_sweep.items()}
        return d


def _accuracy(model: nn.Module, views: torch.Tensor, labels: torch.Tensor, normalise: Callable,
              device: torch.device) -> float:
    was = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(views), 500):
            x = normalise(views[i:i + 500].to(device))
            correct += int((model(x).argmax(1).cpu() == labels[i:i + 500]).sum())
    model.train(was)
    return correct / len(views)


def _teacher_accuracy(teacher, views: torch.Tensor, labels: torch.Tensor) -> float:
    correct = 0
    for i in range(0, len(views), 500):
        probs, _ = teacher.predict(views[i:i + 500])
        correct += int((probs.argmax(1).cpu() == labels[i:i + 500]).sum())
    return correct / len(views)


def _bar(total: int, desc: str, enabled: bool, unit: str = "it"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- step 1: teacher
def build_teacher(s: DemoSettings, data: _Data, policy, device: torch.device):
    """The AdaptiveEnsembleHead of two weak learners; returns (TeacherEnsemble, RunResult)."""
    from .ensemble import AdaptiveEnsembleHead, adabelief, bagging_split, fit_combiner, fit_weak_learner
    from .teachers import Teacher, TeacherEnsemble

    labels = data.labels.numpy()
    rng = np.random.default_rng([s.seed, 11])
    val = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max(1, int(0.1 * (labels == c).sum()))]
                                  for c in np.unique(labels)]))
    rest = np.setdiff1d(np.arange(len(labels)), val)
    bags = [rest[b] for b in bagging_split(labels[rest], 2, seed=s.seed)]
    num_classes = len(data.classes)
    norm = _Normalise(policy, device)
    # the weak learners overfit their bags under light augmentation (crops and flips): from scratch, the
    # students' RandAugment + RandomErasing would leave them far weaker in the same time
    teacher_policy = dataclasses.replace(policy, ra_num_ops=0, erase_prob=0.0, crop_scale=s.teacher_crop_scale)
    t0 = time.perf_counter()
    seen = 0
    backbones = []
    steps = sum(len(b) // s.batch_size for b in bags) * s.teacher_epochs
    with _bar(steps, "1/3 teacher: weak learners", s.progress, "batch") as bar:
        for i, bag in enumerate(bags):
            torch.manual_seed(s.seed * 1000 + 100 + i)
            backbone = SmallCNN(0, s.teacher_width)
            batches = _OnTheFly(data, bag, teacher_policy, s.batch_size, s.seed, 20 + i, device, norm, bar=bar)
            fit = fit_weak_learner(backbone, batches, num_classes, max_epochs=s.teacher_epochs, target_accuracy=0.99,
                                   optimizer=lambda p: adabelief(p, lr=s.lr, weight_decay=s.weight_decay),
                                   device=device)
            bar.update(len(batches) * (s.teacher_epochs - fit.epochs))  # stopped early: skip its remaining steps
            seen += fit.epochs * len(batches) * s.batch_size
            backbones.append(fit.backbone)
        head = AdaptiveEnsembleHead(backbones, num_classes, input_size=(3, s.view_size, s.view_size),
                                    mean=policy.mean, std=policy.std).to(device)
        plain = [(norm(data_views.to(device)), y) for data_views, y in
                 _chunks(_whole_views([data.sources[i] for i in rest], policy), data.labels[rest], 500)]
        held = [(norm(v.to(device)), y) for v, y in
                _chunks(_whole_views([data.sources[i] for i in val], policy), data.labels[val], 500)]
        combiner = fit_combiner(head, plain, held, seeds=(0, 1, 2), max_epochs=100, patience=10, device=device)
    seconds = time.perf_counter() - t0
    head.eval()
    teacher = TeacherEnsemble([Teacher(head, name="AdaptiveEnsembleHead(2 x SmallCNN)", input_size=None,
                                       mean=policy.mean, std=policy.std)], device=device, amp=False,
                              channels_last=False)
    acc = _teacher_accuracy(teacher, data.test_views, data.test_labels)
    note = (f"2 x SmallCNN(width {s.teacher_width}) on disjoint bags of {len(bags[0])}/{len(bags[1])} images, "
            f"{', '.join(str(f) for f in [s.teacher_epochs])} epochs each; combiner val F1 {combiner.best_val_f1:.3f}")
    _say(f"[1/3] teacher: test accuracy {acc:.4f} in {seconds:.1f} s ({seen / seconds:.0f} images/s)")
    return teacher, RunResult("teacher", acc, seconds, seen, note=note)


def _chunks(views: torch.Tensor, labels: torch.Tensor, n: int):
    return [(views[i:i + n], labels[i:i + n]) for i in range(0, len(views), n)]


# ---------------------------------------------------------------------- step 2: reinforce
def reinforce_step(s: DemoSettings, data: _Data, teacher, policy, path: str) -> tuple[float, float, int]:
    from .reinforce import reinforce

    if os.path.exists(path):
        os.remove(path)
    t0 = time.perf_counter()
    summary = reinforce(data.train, teacher, path, policy=policy, num_views=s.views, topk=min(s.topk, len(data.classes)),
                        seed=s.seed, device=s.device, progress=s.progress)
    seconds = time.perf_counter() - t0
    size = os.path.getsize(path)
    views = len(data.sources) * s.views
    _say(f"[2/3] reinforced {len(data.sources)} images x {s.views} views in {seconds:.1f} s "
         f"({views / seconds:.0f} views/s); {path}: {size / 1024:.0f} KiB ({summary.images} images labelled)")
    return seconds, views / seconds, size


# ---------------------------------------------------------------------- step 3: students
def _optimiser(model: nn.Module, s: DemoSettings, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    return opt, sched


def train_student(kind: str, s: DemoSettings, data: _Data, policy, device: torch.device, teacher=None,
                  file: str | None = None, views: int | None = None) -> RunResult:
    """Train the student one of three ways (``kind`` in :data:`STUDENTS`); the same init for all."""
    from .losses import KDLoss

    torch.manual_seed(s.seed * 1000 + 1)
    model = SmallCNN(len(data.classes), s.student_width).to(device)
    norm = _Normalise(policy, device)
    n = len(data.sources)
    steps_per_epoch = n // s.batch_size
    opt, sched = _optimiser(model, s, steps_per_epoch * s.epochs)
    loss_fn = KDLoss()
    history: list[float] = []
    train_seconds = 0.0
    label = kind if views is None else f"{kind} (K={views})"
    if kind == "reinforced":
        from .dataset import ReinforcedDataset

        # batch replay: the DataLoader collates sources and stored records, replay runs once per batch
        ds = ReinforcedDataset(data.train, file, out_dtype=torch.float32, seed=s.seed, views=views,
                               batch_replay=True)
        g = torch.Generator().manual_seed(s.seed)
        loader: Any = ds.loader(batch_size=s.batch_size, shuffle=True, drop_last=True, num_workers=0, device=device,
                                generator=g)
    else:
        if kind not in STUDENTS:
            raise ConfigError(f"unknown student {kind!r}; choose one of {STUDENTS}")
        loader = _OnTheFly(data, np.arange(n), policy, s.batch_size, s.seed, 30, device)
    with _bar(steps_per_epoch * s.epochs, f"3/3 student: {label}", s.progress, "batch") as bar:
        for epoch in range(s.epochs):
            model.train()
            t0 = time.perf_counter()
            if kind == "reinforced":
                ds.set_epoch(epoch)
            for x, target in loader:
                if kind == "online KD":
                    views_u8 = x
                    x = norm(views_u8)
                    target, bad = teacher.predict(views_u8)
                    teacher.check_finite(bad)
                    target = target.clone()  # out of inference mode, for autograd
                elif kind == "plain":
                    x = norm(x)
                x = x.to(device, non_blocking=True)
                target = target.to(device) if isinstance(target, torch.Tensor) else target
                loss = loss_fn(model(x), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
            train_seconds += time.perf_counter() - t0
            history.append(_accuracy(model, data.test_views, data.test_labels, norm, device))
            bar.set_postfix_str(f"epoch {epoch + 1}: test {history[-1]:.3f}")
    r = RunResult(label, history[-1], train_seconds, steps_per_epoch * s.batch_size * s.epochs, history)
    _say(f"[3/3] student {label}: test accuracy {r.accuracy:.4f} after {s.epochs} epochs, "
         f"{r.seconds:.1f} s training ({r.images_per_second:.0f} images/s)")
    return r


# ---------------------------------------------------------------------- outputs
def results_table(result: DemoResult) -> str:
    """The markdown table of test accuracy, training wall time and images/s."""
    s = result.settings
    plain = result.students.get("plain")
    lines = ["| model | test accuracy | training time (s) | time vs plain | images/s |", "|---|---|---|---|---|"]
    for r in [result.teacher, *result.students.values()]:
        rel = f"{r.seconds / plain.seconds:.2f}x" if plain is not None and plain.seconds > 0 else ""
        name = "teacher (AdaptiveEnsembleHead, 2 weak learners)" if r is result.teacher else f"student: {r.name}"
        lines.append(f"| {name} | {100 * r.accuracy:.2f}% | {r.seconds:.1f} | {rel} | {r.images_per_second:.0f} |")
    if result.k_sweep:
        lines += ["", f"Reinforced student against K (the first K of {max(result.k_sweep)} stored views per image, "
                  f"reinforced in {result.k_sweep_reinforce_seconds:.1f} s; same student, epochs and seed):", "",
                  "| K | test accuracy | vs plain | vs online KD |", "|---|---|---|---|"]
        online = result.students.get("online KD")
        for k, r in sorted(result.k_sweep.items()):
            dp = f"{100 * (r.accuracy - plain.accuracy):+.2f}" if plain is not None else ""
            do = f"{100 * (r.accuracy - online.accuracy):+.2f}" if online is not None else ""
            lines.append(f"| {k} | {100 * r.accuracy:.2f}% | {dp} | {do} |")
    lines += ["", f"Reinforcement: {s.views} views per image, top-{s.topk}, in {result.reinforce_seconds:.1f} s "
              f"({result.reinforce_views_per_second:.0f} views/s), file {result.file_bytes / 1024:.0f} KiB. "
              f"Students: SmallCNN(width {s.student_width}), {s.epochs} epochs, batch {s.batch_size}, AdamW "
              f"lr {s.lr} cosine, same initialisation; views {s.view_size} px, RandomResizedCrop"
              f"(scale {s.crop_scale[0]:g}-{s.crop_scale[1]:g}) + flip + RandAugment(2, 9) + RandomErasing(0.25)."]
    return "\n".join(lines)


def plot_accuracy(result: DemoResult, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for r in result.students.values():
            ax.plot(range(1, len(r.history) + 1), [100 * a for a in r.history], marker="o", ms=3, label=r.name)
        ax.axhline(100 * result.teacher.accuracy, color="gray", ls="--", lw=1, label="teacher")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"students on {result.dataset.split(':')[0]} (seed {result.settings.seed})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def views_grid(s: DemoSettings, data: _Data, file: str, path: str) -> str:
    """A few training images (one per class), their first stored views and the teacher's top-3."""
    from .show import Panel, render_grid, view_panels
    from .store import ReinforcementFile

    picked: list[int] = []
    labels = data.labels.tolist()
    for i, y in enumerate(labels):
        if y not in [labels[j] for j in picked]:
            picked.append(i)
        if len(picked) == s.grid_images:
            break
    rows: list[list[Panel]] = []
    with ReinforcementFile(file) as f:
        for i in picked:
            rows.append(view_panels(f, data.train, i, s.grid_views, names=data.classes)[0])
    return render_grid(rows, path, title=f"training images, {s.grid_views} of their {s.views} stored views, "
                                         "teacher's top-3 labels")


# ---------------------------------------------------------------------- the run
def run_demo(out: str | os.PathLike = "demo_out", *, data: str | None = None, quick: bool = False, seed: int = 0,
             device: str = "cpu", epochs: int | None = None, views: int | None = None,
             settings: DemoSettings | None = None, **overrides: Any) -> DemoResult:
    """Run the demo; returns its :class:`DemoResult` (the files are in ``result.out``).

    ``overrides`` set any other :class:`DemoSettings` field (``train_images=...``).
    """
    if settings is None:
        kw: dict[str, Any] = dict(out=os.fspath(out), data=data, seed=seed, device=device)
        if epochs is not None:
            kw["epochs"] = epochs
        if views is not None:
            kw["views"] = views
        kw.update(overrides)
        settings = DemoSettings.quick(**kw) if quick else DemoSettings(**kw)
    s = settings
    s.validate()
    from .policy import Policy

    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    if s.threads:  # None or 0: torch's default
        torch.set_num_threads(s.threads)
    os.makedirs(s.out, exist_ok=True)
    device_t = torch.device(s.device)
    try:
        policy = Policy.preset("rrc_ra_re", output_size=(s.view_size, s.view_size), crop_scale=s.crop_scale)
        t0 = time.perf_counter()
        dat = _load_data(s, policy)
        _say(f"data: {dat.name} (ready in {time.perf_counter() - t0:.1f} s)")
        teacher, teacher_run = build_teacher(s, dat, policy, device_t)
        file = os.path.join(s.out, "train_reinforced.h5")
        r_seconds, r_rate, size = reinforce_step(s, dat, teacher, policy, file)
        students = {
            "plain": train_student("plain", s, dat, policy, device_t),
            "online KD": train_student("online KD", s, dat, policy, device_t, teacher=teacher),
            "reinforced": train_student("reinforced", s, dat, policy, device_t, file=file),
        }
        sweep: dict[int, RunResult] = {}
        sweep_seconds = 0.0
        if s.k_sweep:
            kmax = max(s.k_sweep)
            sweep_file = file
            if kmax != s.views:
                sweep_file = os.path.join(s.out, f"train_reinforced_K{kmax}.h5")
                sweep_seconds = reinforce_step(dataclasses.replace(s, views=kmax), dat, teacher, policy, sweep_file)[0]
            else:
                sweep_seconds = r_seconds
            for k in sorted(set(s.k_sweep)):
                if sweep_file == file and k == s.views:  # the main reinforced student, already trained
                    sweep[k] = students["reinforced"]
                    continue
                sweep[k] = train_student("reinforced", s, dat, policy, device_t, file=sweep_file, views=k)
        files = {"table": os.path.join(s.out, "results.md"), "json": os.path.join(s.out, "results.json"),
                 "plot": os.path.join(s.out, "accuracy.png"), "grid": os.path.join(s.out, "views.png"),
                 "reinforcement": file}
        result = DemoResult(s, dat.name, teacher_run, students, r_seconds, r_rate, size, os.path.abspath(s.out), files,
                            k_sweep=sweep, k_sweep_reinforce_seconds=sweep_seconds)
        plot_accuracy(result, files["plot"])
        views_grid(s, dat, file, files["grid"])
        result.total_seconds = time.perf_counter() - t_start
        table = results_table(result)
        header = (f"# reinforced-data demo\n\n{dat.name}; seed {s.seed}; device {s.device}, "
                  f"{torch.get_num_threads()} torch threads; total {result.total_seconds:.0f} s "
                  f"(python {platform.python_version()}, torch {torch.__version__}).\n\n")
        with open(files["table"], "w") as fh:
            fh.write(header + table + "\n")
        with open(files["json"], "w") as fh:
            json.dump(result.to_dict(), fh, indent=2)
    finally:
        torch.set_num_threads(threads)
    _say("\n" + table + "\n")
    _say(f"demo done in {result.total_seconds:.0f} s; outputs in {result.out}")
    return result


# ---------------------------------------------------------------------- command line
def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to a ``reinforced-data`` subparsers object; sets ``args.func(args) -> int``."""
    p = subparsers.add_parser(
        "demo", help="build a teacher, reinforce a dataset, train a student three ways, compare",
        description="End to end on CPU in minutes: an adaptive-ensemble teacher, a reinforcement file, and the same "
                    "student trained plainly, with online distillation, and on the reinforced data. Writes a table, "
                    "an accuracy plot and a grid of stored views into --out.")
    p.add_argument("--data", help="an ImageFolder root with train/ and val/ (default: generated shapes)")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--quick", action="store_true", help="a smaller run (about a minute or two)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--epochs", type=int, help="student epochs (default 20; --quick 14)")
    p.add_argument("--views", type=int, help="K, stored views per image (default 32; --quick 16)")
    p.add_argument("--train-images", type=int, help=argparse.SUPPRESS)
    p.add_argument("--test-images", type=int, help=argparse.SUPPRESS)
    p.add_argument("--teacher-epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help="torch threads (default 1; 0: torch's choice)")
    p.add_argument("--k-sweep", type=_ints, metavar="K,K,...", help="also train reinforced students on the first K of "
                   "max(K) stored views, for each K (accuracy against K)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)
    return p


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers separated by commas, e.g. 8,16,32")
    return values


def _cmd_demo(args: argparse.Namespace) -> int:
    extra = {k: getattr(args, k) for k in ("train_images", "test_images", "teacher_epochs", "threads", "k_sweep")
             if getattr(args, k, None) is not None}
    run_demo(args.out, data=args.data, quick=args.quick, seed=args.seed, device=args.device, epochs=args.epochs,
             views=args.views, progress=not args.no_progress, **extra)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reinforced-data demo`` on its own (until the command is wired into the CLI)."""
    parser = argparse.ArgumentParser(prog="reinforced-data")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="reinforced-data: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (ReinforcedDataError, FileNotFoundError) as e:
        print(f"reinforced-data: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
