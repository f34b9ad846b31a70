"""``reinforced-data demo``: the whole idea, end to end, on CPU in minutes, over several seeds.

1. **Teacher**: an :class:`~reinforced_data.ensemble.AdaptiveEnsembleHead` of two small
   CNNs, each trained from scratch on one of two disjoint class-stratified bags of the
   training images outside a held-out tenth and, on generated data, of more images only the
   teacher sees (phase 1), then one linear layer on their concatenated features, fitted
   with early stopping on the held-out tenth (phase 2).
2. **Reinforce**: :func:`~reinforced_data.reinforce` stores K views per training image
   (RandomResizedCrop + flip + RandAugment + RandomErasing parameters) with the teacher's
   top-k probabilities in an HDF5 file, once.
3. **Students**: one small CNN, trained three ways (:data:`ARMS`) for each of several epoch
   budgets and several seeds; for one seed every arm starts from the same initialisation:

   * *plain*: hard labels, the same augmentation drawn on the fly (fresh
     :meth:`Policy.sample` parameters every epoch, replayed in batches);
   * *online KD*: the teacher labels every on-the-fly view at every step (:class:`KDLoss`);
   * *reinforced*: :class:`~reinforced_data.ReinforcedDataset` over the file in a standard
     ``DataLoader`` (each batch fetched and replayed at once), with :class:`KDLoss`: no teacher in the loop.

   Training cost is the CPU time of the training loop (evaluation excluded). Runs are
   spread over ``jobs`` processes; each run is a pure function of its seed, so results do
   not depend on ``jobs``.

Writes ``results.md`` (per-arm mean ± std over seeds, paired differences with 95 %
intervals, the conclusions those numbers support), ``results.json`` (every run, per epoch),
``cost.png`` (accuracy against training cost), ``accuracy.png`` (test accuracy per epoch)
and ``views.png`` (training images, replayed views, the teacher's top-3) into the output
folder. The data is :class:`~reinforced_data.shapes.ShapesDataset` (generated) unless
``--data`` names an ImageFolder with ``train/`` and ``val/``. Nothing is chosen on the test
set: ``--k-sweep`` scores K on a held-out split (generated data: images of a split of their own;
an ImageFolder: the held-out tenth of the training set).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._machine import cpu_model
from .errors import ConfigError, ReinforcedDataError

__all__ = ["ARMS", "DemoSettings", "DemoResult", "Estimate", "RunResult", "SmallCNN", "StepResult", "chosen_k",
           "conclusions", "paired", "run_demo", "add_demo_parser", "main"]

log = logging.getLogger(__name__)

ARMS = ("plain", "online KD", "reinforced")


@dataclass
class DemoSettings:
    """Everything a demo run depends on: the defaults are the default run, ``quick()`` the smaller one."""

    data: str | None = None  # None: the generated ShapesDataset
    out: str = "demo_out"
    seed: int = 0  # data, teacher and reinforcement; students use seed, seed + 1, ...
    device: str = "cpu"
    epochs: tuple[int, ...] = (10, 20, 40)  # student budgets (the cost curve); the longest is the main comparison
    seeds: int = 5  # student seeds per arm and budget
    views: int = 32  # K, stored views per image: chosen with --k-sweep 8,16,32,64 on the held-out split (docs/demo.md)
    topk: int = 5  # classes kept per view
    classes: int = 6  # generated data only: how many shape classes (fewer: the least alike first)
    train_images: int = 1200  # generated data only: the students' training set
    # generated data only: more images the teacher alone trains on (a teacher that has seen more than the
    # students' training set, as a pretrained one has); 0: the teacher trains on the students' images alone
    teacher_images: int = 14400
    test_images: int = 1200
    image_size: int = 40  # generated images' side
    view_size: int = 32  # the side of the views students and teacher see
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop's own default (ImageNet's recipe)
    teacher_epochs: int = 20  # per weak learner
    teacher_width: int = 32
    teacher_lr: float = 3e-3
    student_width: int = 8  # a small student: alone it saturates well below the teacher
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.05
    # torch threads per process: these small convolutions gain little from more, and threads that
    # outnumber free cores slow them down several times (measured: 4x with two threads on a busy 2-core machine)
    threads: int | None = 1  # None or 0: torch's default
    jobs: int | None = None  # training processes; None: as many as the cores allow at `threads` each
    grid_images: int = 4
    grid_views: int = 6
    progress: bool = True
    k_sweep: tuple[int, ...] = ()  # score reinforced students using the first K of max(k_sweep) views on the held-out split

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        """The ``--quick`` preset: a smaller run (CI)."""
        base = dict(epochs=(6, 12), seeds=2, train_images=600, teacher_images=3600, test_images=600,
                    batch_size=32)
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, int):
            self.epochs = (self.epochs,)
        self.epochs = tuple(sorted({int(e) for e in self.epochs}))
        self.k_sweep = tuple(sorted({int(k) for k in self.k_sweep}))

    @property
    def main_epochs(self) -> int:
        """The budget of the main comparison: the longest."""
        return self.epochs[-1]

    def student_seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def resolved_jobs(self) -> int:
        """Training processes: 1 on a GPU or where processes cannot fork, else ``jobs`` or cores / threads."""
        if self.device != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
            return 1
        if self.jobs:
            return int(self.jobs)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores // max(1, self.threads or cores), self.seeds * len(ARMS)))

    def validate(self) -> None:
        if not 2 <= self.classes <= 12:
            raise ConfigError(f"classes={self.classes} must lie in [2, 12] (the generated shape classes)")
        for name in ("seeds", "views", "topk", "train_images", "test_images", "teacher_epochs", "batch_size",
                     "teacher_width", "student_width"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.teacher_images < 0:
            raise ConfigError(f"teacher_images={self.teacher_images} must be >= 0")
        if not self.epochs or self.epochs[0] < 1:
            raise ConfigError(f"epochs={self.epochs} must be one or more budgets >= 1")
        if self.jobs is not None and self.jobs < 0:
            raise ConfigError(f"jobs={self.jobs} must be >= 0 (0: as many as the cores allow)")
        if self.threads is not None and self.threads < 0:
            raise ConfigError(f"threads={self.threads} must be >= 0 (0: torch's choice)")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be >= 0")
        if self.view_size < 8 or self.image_size < self.view_size // 2:
            raise ConfigError(f"view_size={self.view_size} must be >= 8 and image_size={self.image_size} at least "
                              "half of it")
        if self.k_sweep and self.k_sweep[0] < 1:
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
class _Sweep:
    """The K sweep's split: its students train on ``train`` (indices of the training set) and are scored on
    ``views``/``labels``, never on the test set; ``text`` says which images those are."""

    train: np.ndarray
    views: torch.Tensor
    labels: torch.Tensor
    text: str


@dataclass
class _Data:
    train: Any  # map-style dataset of (uint8 image, label): what reinforce() and ReinforcedDataset get
    sources: list[torch.Tensor]  # decoded uint8 [3, H, W] training images
    labels: torch.Tensor  # [N] int64
    test_views: torch.Tensor  # uint8 [M, 3, S, S]: the test images, whole, resized
    test_labels: torch.Tensor
    classes: list[str]
    name: str
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # a tenth of each class
    rest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # the other training images
    extra: _Images = field(default_factory=lambda: _Images())  # images only the teacher trains on (teacher_images)
    sweep: _Sweep | None = None  # what --k-sweep trains on and scores on (set only with --k-sweep)

    def split(self, seed: int) -> None:
        """Hold out a tenth of each class (at least one image) of the training set: the teacher's
        early stopping is scored on it (and ``--k-sweep``'s on an ImageFolder), never on the test set."""
        labels = self.labels.numpy()
        rng = np.random.default_rng([seed, 11])
        self.held_out = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(labels == c))[:max(1, int(0.1 * (labels == c).sum()))]
            for c in np.unique(labels)]))
        self.rest = np.setdiff1d(np.arange(len(labels)), self.held_out)


def _load_data(s: DemoSettings, policy) -> _Data:
    from ._datasets import RawImages, class_names, dataset_labels

    extra, held = _Images(), None
    if s.data is None:
        from .shapes import ShapesDataset

        from .shapes import DISTINCT_ORDER, SHAPE_CLASSES

        names = SHAPE_CLASSES if s.classes == len(SHAPE_CLASSES) else DISTINCT_ORDER[:s.classes]
        train = ShapesDataset("train", s.train_images, size=s.image_size, seed=s.seed, classes=names)
        test = ShapesDataset("test", s.test_images, size=s.image_size, seed=s.seed, classes=names)
        if s.teacher_images:
            more = ShapesDataset("extra", s.teacher_images, size=s.image_size, seed=s.seed, classes=names)
            extra = _Images(list(torch.from_numpy(more.images)), torch.as_tensor(more.targets))
        if s.k_sweep:  # generated data: as many new images as the test set, drawn like the training set
            held = ShapesDataset("held_out", s.test_images, size=s.image_size, seed=s.seed, classes=names)
        name = (f"generated shapes: {len(train.classes)} classes, {len(train)} train / {len(test)} test images "
                f"of {s.image_size} px" + (f" (and {s.teacher_images} more the teacher alone trains on)"
                                           if s.teacher_images else ""))
    else:
        from torchvision.datasets import ImageFolder

        root = os.fspath(s.data)
        for sub in ("train", "val"):
            if not os.path.isdir(os.path.join(root, sub)):
                raise ConfigError(f"--data {root} has no {sub}/ folder; give an ImageFolder root with train/ and val/")
        train, test = ImageFolder(os.path.join(root, "train")), ImageFolder(os.path.join(root, "val"))
        if train.classes != test.classes:
            raise ConfigError(f"--data {root}: train/ and val/ have different class folders")
        if len(train.classes) < 2:
            raise ConfigError(f"--data {root}: train/ has {len(train.classes)} class folder; a classifier needs at "
                              "least 2")
        name = f"ImageFolder {root}: {len(train.classes)} classes, {len(train)} train / {len(test)} val images"
    raw_train, raw_test = RawImages(train), RawImages(test)
    sources = [raw_train[i][0] for i in range(len(train))]
    labels = torch.as_tensor(dataset_labels(train))
    test_src = [raw_test[i][0] for i in range(len(test))]
    test_views = _whole_views(test_src, policy)
    data = _Data(train, sources, labels, test_views, torch.as_tensor(dataset_labels(test)),
                 class_names(train) or [str(c) for c in range(int(labels.max()) + 1)], name, extra=extra)
    data.split(s.seed)
    _check_batch(s, len(sources), f"{name}: the students' training set")
    if held is not None:  # the sweep trains on the students' training set, checked above
        data.sweep = _Sweep(np.arange(len(sources)), _whole_views(list(torch.from_numpy(held.images)), policy),
                            torch.as_tensor(held.targets), f"trained on the whole training set and scored on "
                            f"{len(held)} more generated images (a held-out split of their own, not the test set)")
    elif s.k_sweep:
        _check_batch(s, len(data.rest), f"{name}: the K sweep's training images (those outside the held-out tenth)")
        data.sweep = _Sweep(data.rest, _whole_views([sources[i] for i in data.held_out], policy),
                            labels[data.held_out], "trained on the training images outside the held-out tenth and "
                            "scored on it (not on the test set)")
    return data


def _check_batch(s: DemoSettings, size: int, what: str) -> None:
    """Refuse a set that holds less than one batch: it would train for zero steps."""
    if size < s.batch_size:
        raise ConfigError(f"{what}: {size} images, fewer than one batch of {s.batch_size} (it would train for zero "
                          "steps); the demo needs more training images")


def _whole_views(sources: Sequence[torch.Tensor], policy) -> torch.Tensor:
    """Each image whole, resized to the view size by the replay kernels (uint8)."""
    from .policy import Policy
    from ._replay import replay

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


class _Images(torch.utils.data.Dataset):
    """``(uint8 image, label)`` items of decoded images held in memory (none by default)."""

    def __init__(self, sources: Sequence[torch.Tensor] = (), labels: torch.Tensor | None = None) -> None:
        self.sources = list(sources)
        self.labels = torch.zeros(0, dtype=torch.int64) if labels is None else labels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.sources[index], int(self.labels[index])


class _Augmented(torch.utils.data.Dataset):
    """The plain and online KD students' dataset: the training set freshly augmented on the fly, fetched
    the way :class:`~reinforced_data.ReinforcedDataset` fetches it (a DataLoader calls ``__getitems__``
    with a batch of indices: the images read from the same dataset, one parameter set drawn per image,
    the batch replayed at once by the same kernels), so that the arms differ only in where the
    parameters and the labels come from. ``raw``: ``(uint8 image, label)`` items, ``labels`` theirs.
    Items are ``(uint8 view [3, S, S], label)``; epoch ``e`` draws from ``default_rng([seed, tag, e])``."""

    def __init__(self, raw: Any, labels: torch.Tensor, policy, seed: int, tag: int) -> None:
        self.raw, self.labels, self.policy = raw, labels, policy
        self.seed, self.tag = seed, tag
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, self.tag, epoch])

    def __len__(self) -> int:
        return len(self.raw)

    def __getitems__(self, indices: Sequence[int]) -> list:
        from ._replay import replay

        srcs = [self.raw[i][0] for i in indices]
        views = replay(srcs, _sample_params(self.policy, self.rng, srcs), self.policy)
        return list(zip(views.unbind(0), self.labels[list(indices)].unbind(0)))

    def __getitem__(self, index: int) -> tuple:
        return self.__getitems__([index])[0]


def _loader(dataset: Any, indices: np.ndarray, batch_size: int, order_seed: int) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` visiting ``indices`` in whole batches, in a random order drawn from
    ``order_seed`` (a new order each pass)."""
    sampler = torch.utils.data.SubsetRandomSampler(np.asarray(indices).tolist(),
                                                   generator=torch.Generator().manual_seed(order_seed))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


class _OnTheFly:
    """Batches of freshly augmented views of ``indices`` of ``raw`` in a random order (``order_seed``), through
    a DataLoader over :class:`_Augmented`: pass ``p`` draws its parameters from ``default_rng([seed, tag, p])``.

    Yields ``(uint8 views [B, 3, S, S], labels [B])``; with ``normalise`` float views.
    """

    def __init__(self, raw: Any, labels: torch.Tensor, indices: np.ndarray, policy, batch_size: int, seed: int,
                 tag: int, order_seed: int, normalise: _Normalise | None = None) -> None:
        self.dataset = _Augmented(raw, labels, policy, seed, tag)
        self.loader = _loader(self.dataset, indices, batch_size, order_seed)
        self.normalise, self.passes = normalise, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.dataset.set_epoch(self.passes)
        self.passes += 1
        for views, labels in self.loader:
            yield (self.normalise(views) if self.normalise is not None else views), labels


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


# ---------------------------------------------------------------------- parallel runs
_SHARED: dict[str, Any] = {}  # what forked training processes inherit (set before the pool starts)


def _in_child(task: tuple[Callable, tuple]) -> Any:
    fn, args = task
    threads = _SHARED.get("threads")
    if threads:
        torch.set_num_threads(threads)
    return fn(*args)


def _parallel(fn: Callable, tasks: Sequence[tuple], jobs: int, shared: dict[str, Any],
              done: Callable[[Any], None] = lambda r: None) -> list[Any]:
    """``[fn(*t) for t in tasks]`` over ``jobs`` forked processes (in this process when 1), calling
    ``done(result)`` as each finishes. ``fn`` reads what it needs from ``_SHARED``, set to ``shared``."""
    _SHARED.clear()
    _SHARED.update(shared)
    try:
        if jobs <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(fn(*t))
                done(out[-1])
            return out
        ctx = multiprocessing.get_context("fork")
        results: list[Any] = [None] * len(tasks)
        pool = concurrent.futures.ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=ctx,
                                                      initializer=_worker_start, initargs=(os.getpid(),))
        previous = _exit_on_sigterm()
        try:
            futures = {pool.submit(_in_child, (fn, t)): i for i, t in enumerate(tasks)}
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = fut.result()
                done(results[futures[fut]])
        except concurrent.futures.process.BrokenProcessPool:
            _stop(pool)
            raise ReinforcedDataError("a training process of the demo died (killed, or out of memory?); run it "
                                      "again, with --jobs 1 to train in this process") from None
        except BaseException:  # Ctrl-C, SIGTERM or a failed run: stop now, not after every queued run
            _stop(pool)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        pool.shutdown()
        return results
    finally:
        _SHARED.clear()


def _exit_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit(143) in this process, so that the pool is stopped on the way out
    instead of its workers being left waiting for work; returns the handler to restore (None: not the
    main thread, where no handler can be set)."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None
    return signal.SIG_DFL if previous is None else previous  # None: a handler set outside Python


def _worker_start(parent: int) -> None:
    """Pool initializer: a worker ends with the demo's process, however that ends (on Linux the kernel
    kills it when its parent dies, SIGKILL included), and SIGTERM ends it at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _stop(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


class _Clock:
    """CPU seconds of this process (all its threads) and wall seconds, from construction."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def read(self) -> tuple[float, float]:
        return time.process_time() - self.cpu0, time.perf_counter() - self.wall0


@dataclass
class StepResult:
    """A one-time step (the teacher, the reinforcement): what it reached and what it cost."""

    accuracy: float | None
    cpu_seconds: float
    wall_seconds: float
    note: str = ""


# ---------------------------------------------------------------------- step 1: teacher
def _weak_learner(i: int, bag: np.ndarray):
    s, pool, classes, policy, device = (_SHARED[k] for k in ("settings", "pool", "classes", "policy", "device"))
    from .ensemble import adabelief, fit_weak_learner

    torch.manual_seed(s.seed * 1000 + 100 + i)
    # trained on the students' augmentation: a teacher is only as good as its labels of the views it labels
    # (trained on crops and flips alone it was confidently wrong on many heavily augmented views)
    batches = _OnTheFly(pool, pool.labels, bag, policy, s.batch_size, s.seed, 20 + i,
                        order_seed=s.seed * 1000 + 20 + i, normalise=_Normalise(policy, device))
    clock = _Clock()
    fit = fit_weak_learner(SmallCNN(0, s.teacher_width), batches, classes, max_epochs=s.teacher_epochs,
                           target_accuracy=None, device=device,
                           optimizer=lambda p: adabelief(p, lr=s.teacher_lr, weight_decay=s.weight_decay))
    return fit.backbone, fit.epochs, clock.read()[0]


def build_teacher(s: DemoSettings, data: _Data, policy, device: torch.device, jobs: int = 1):
    """The AdaptiveEnsembleHead of two weak learners (trained in parallel when ``jobs`` > 1);
    returns (TeacherEnsemble, StepResult)."""
    from .ensemble import AdaptiveEnsembleHead, bagging_split, fit_combiner
    from .teachers import Teacher, TeacherEnsemble

    # the teacher's images: the training images outside the held-out split, and the extra ones if any
    pool = _Images(data.sources + data.extra.sources, torch.cat([data.labels, data.extra.labels]))
    val, num_classes = data.held_out, len(data.classes)
    rest = np.concatenate([data.rest, len(data.sources) + np.arange(len(data.extra))])
    bags = [rest[b] for b in bagging_split(pool.labels.numpy()[rest], 2, seed=s.seed)]
    for bag in bags:
        _check_batch(s, len(bag), f"{data.name}: each of the teacher's two bags (half of the training images "
                                  "outside the held-out tenth and the extra ones)")
    norm = _Normalise(policy, device)
    clock = _Clock()
    with _bar(len(bags), "1/3 teacher: weak learners", s.progress, "learner") as bar:
        fits = _parallel(_weak_learner, list(enumerate(bags)), jobs,
                         dict(settings=s, pool=pool, classes=num_classes, policy=policy, device=device,
                              threads=s.threads),
                         done=lambda r: bar.update(1))
    head = AdaptiveEnsembleHead([f[0] for f in fits], num_classes, input_size=(3, s.view_size, s.view_size),
                                mean=policy.mean, std=policy.std).to(device)
    plain = [(norm(v.to(device)), y) for v, y in
             _chunks(_whole_views([pool.sources[i] for i in rest], policy), pool.labels[rest], 500)]
    held = [(norm(v.to(device)), y) for v, y in
            _chunks(_whole_views([data.sources[i] for i in val], policy), data.labels[val], 500)]
    combiner = fit_combiner(head, plain, held, seeds=(0, 1, 2), max_epochs=100, patience=10, device=device)
    cpu, wall = clock.read()
    cpu += sum(f[2] for f in fits) if jobs > 1 and len(fits) > 1 else 0.0  # the learners' processes
    head.eval()
    teacher = TeacherEnsemble([Teacher(head, name="AdaptiveEnsembleHead(2 x SmallCNN)", input_size=None,
                                       mean=policy.mean, std=policy.std)], device=device, amp=False,
                              channels_last=False)
    acc = _teacher_accuracy(teacher, data.test_views, data.test_labels)
    note = (f"2 x SmallCNN(width {s.teacher_width}) on disjoint bags of {len(bags[0])}/{len(bags[1])} images, "
            f"{'/'.join(str(f[1]) for f in fits)} epochs; combiner held-out F1 {combiner.best_val_f1:.3f}")
    _say(f"[1/3] teacher: test accuracy {acc:.4f}; {cpu:.1f} CPU s ({wall:.1f} s wall); {note}")
    return teacher, StepResult(acc, cpu, wall, note)


def _chunks(views: torch.Tensor, labels: torch.Tensor, n: int):
    return [(views[i:i + n], labels[i:i + n]) for i in range(0, len(views), n)]


# ---------------------------------------------------------------------- step 2: reinforce
def reinforce_step(s: DemoSettings, data: _Data, teacher, policy, path: str) -> tuple[StepResult, int]:
    """Reinforce the training set once into ``path``; returns (its cost, the file's size in bytes)."""
    from .generation import reinforce

    if os.path.exists(path):
        os.remove(path)
    clock = _Clock()
    summary = reinforce(data.train, teacher, path, policy=policy, num_views=s.views, topk=min(s.topk, len(data.classes)),
                        seed=s.seed, device=s.device, progress=s.progress)
    cpu, wall = clock.read()
    size = os.path.getsize(path)
    note = f"{len(data.sources)} images x {s.views} views, top-{min(s.topk, len(data.classes))}"
    _say(f"[2/3] reinforced {note} in {cpu:.1f} CPU s ({wall:.1f} s wall); {path}: {size / 1024:.0f} KiB "
         f"({summary.images} images labelled)")
    return StepResult(None, cpu, wall, note), size


# ---------------------------------------------------------------------- step 3: students
@dataclass
class RunResult:
    """One trained student: its accuracy after each epoch and the cost of its training loop."""

    arm: str
    seed: int
    epochs: int
    accuracy: float  # after the last epoch, on the evaluation split
    cpu_seconds: float  # training loop only (evaluation excluded)
    wall_seconds: float
    images: int  # training views processed
    history: list[float] = field(default_factory=list)  # accuracy after each epoch
    views: int | None = None  # K the reinforced student drew from (None: all stored views)
    evaluated_on: str = "test"  # or "held-out" (the K sweep)


def _optimiser(model: nn.Module, s: DemoSettings, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    return opt, sched


def train_student(arm: str, seed: int, epochs: int, views: int | None = None, held_out: bool = False) -> RunResult:
    """Train the student one way (``arm`` in :data:`ARMS`) for ``epochs``; reads the rest from ``_SHARED``.

    ``held_out``: train and score on the K sweep's split (``data.sweep``) instead of the training and test sets."""
    s, data, policy, device = (_SHARED[k] for k in ("settings", "data", "policy", "device"))
    from .losses import KDLoss

    if arm not in ARMS:
        raise ConfigError(f"unknown student {arm!r}; choose one of {ARMS}")
    torch.manual_seed(seed * 1000 + 1)  # the same initialisation for every arm of one seed
    model = SmallCNN(len(data.classes), s.student_width).to(device)
    norm = _Normalise(policy, device)
    if held_out:
        indices, eval_views, eval_labels = data.sweep.train, data.sweep.views, data.sweep.labels
    else:
        indices, eval_views, eval_labels = np.arange(len(data.sources)), data.test_views, data.test_labels
    steps_per_epoch = len(indices) // s.batch_size
    opt, sched = _optimiser(model, s, steps_per_epoch * epochs)
    loss_fn = KDLoss()
    history: list[float] = []
    cpu = wall = 0.0
    if arm == "reinforced":
        from .dataset import ReinforcedDataset

        # the one-line swap: a plain DataLoader, which fetches each batch through __getitems__ (its
        # records read at once, its views replayed in one call)
        ds = ReinforcedDataset(data.train, _SHARED["file"], out_dtype=torch.float32, seed=seed, views=views)
        loader: Any = _loader(ds, indices, s.batch_size, seed)
    else:  # the same images in the same order, fetched the same way, freshly augmented
        from ._datasets import RawImages

        loader = _OnTheFly(RawImages(data.train), data.labels, indices, policy, s.batch_size, seed, 30,
                           order_seed=seed)
    teacher = _SHARED.get("teacher")
    for epoch in range(epochs):
        model.train()
        clock = _Clock()
        if arm == "reinforced":
            ds.set_epoch(epoch)
        for x, target in loader:
            if arm == "online KD":
                target, bad = teacher.predict(x)
                teacher.check_finite(bad)
                target = target.clone()  # out of inference mode, for autograd
            if arm != "reinforced":
                x = norm(x)
            x = x.to(device, non_blocking=True)
            target = target.to(device) if isinstance(target, torch.Tensor) else target
            loss = loss_fn(model(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        c, w = clock.read()
        cpu, wall = cpu + c, wall + w
        history.append(_accuracy(model, eval_views, eval_labels, norm, device))
    return RunResult(arm, seed, epochs, history[-1], cpu, wall, steps_per_epoch * s.batch_size * epochs, history,
                     views, "held-out" if held_out else "test")


# ---------------------------------------------------------------------- statistics
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class Estimate:
    """Mean of per-seed values with their standard deviation and a 95 % t interval of the mean."""

    mean: float
    std: float  # sample standard deviation (0 for one seed)
    low: float  # 95 % interval of the mean (equal to the mean for one seed: no interval)
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        v = [float(x) for x in values]
        mean = statistics.fmean(v)
        if len(v) < 2:
            return cls(mean, 0.0, mean, mean, len(v))
        sd = statistics.stdev(v)
        half = (_T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96) * sd / math.sqrt(len(v))
        return cls(mean, sd, mean - half, mean + half, len(v))

    def points(self, fmt: str = "{:.2f}") -> str:
        """``mean ± std`` in percentage points."""
        return f"{fmt.format(100 * self.mean)} ± {fmt.format(100 * self.std)}"

    def interval(self) -> str:
        """``+d.dd [low, high]`` in percentage points (no interval for one seed)."""
        if self.n < 2:
            return f"{100 * self.mean:+.2f} (one seed: no interval)"
        return f"{100 * self.mean:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"


def k_estimates(sweep: Sequence[RunResult]) -> dict[int, Estimate]:
    """Held-out accuracy over seeds for each K of a K sweep, in increasing K."""
    return {k: Estimate.of([r.accuracy for r in sweep if r.views == k]) for k in sorted({r.views for r in sweep})}


def chosen_k(sweep: Sequence[RunResult]) -> int:
    """The smallest K whose mean held-out accuracy lies within one standard error of the best K's mean
    (the one-standard-error rule: a larger K costs more reinforcement and must earn it)."""
    est = k_estimates(sweep)
    best = max(est.values(), key=lambda e: e.mean)
    return min(k for k, e in est.items() if e.mean >= best.mean - best.std / math.sqrt(best.n))


def _runs(runs: Sequence[RunResult], arm: str, epochs: int, evaluated_on: str = "test") -> dict[int, RunResult]:
    return {r.seed: r for r in runs if r.arm == arm and r.epochs == epochs and r.evaluated_on == evaluated_on}


def paired(runs: Sequence[RunResult], a: str, b: str, epochs: int) -> Estimate:
    """Per-seed accuracy differences ``a - b`` at ``epochs`` (the same seeds, the same initialisation)."""
    ra, rb = _runs(runs, a, epochs), _runs(runs, b, epochs)
    seeds = sorted(set(ra) & set(rb))
    return Estimate.of([ra[k].accuracy - rb[k].accuracy for k in seeds])


def summarise(runs: Sequence[RunResult], arm: str, epochs: int) -> dict[str, Estimate]:
    """Accuracy and CPU seconds of one arm at one budget, over its seeds."""
    rs = list(_runs(runs, arm, epochs).values())
    return {"accuracy": Estimate.of([r.accuracy for r in rs]), "cpu_seconds": Estimate.of([r.cpu_seconds for r in rs])}


@dataclass
class DemoResult:
    settings: DemoSettings
    dataset: str
    machine: str
    teacher: StepResult
    reinforcement: StepResult
    file_bytes: int
    runs: list[RunResult]
    out: str
    files: dict[str, str]
    jobs: int = 1
    k_sweep: list[RunResult] = field(default_factory=list)  # reinforced students scored on the held-out split
    k_sweep_split: str = ""  # which images the K sweep trained on and was scored on
    total_seconds: float = 0.0

    def summary(self, arm: str, epochs: int | None = None) -> dict[str, Estimate]:
        return summarise(self.runs, arm, epochs or self.settings.main_epochs)

    def paired(self, a: str, b: str, epochs: int | None = None) -> Estimate:
        return paired(self.runs, a, b, epochs or self.settings.main_epochs)

    def break_even(self) -> float | None:
        """Trainings after which reinforcing once and training reinforced costs less CPU time than online
        KD (None when a reinforced training costs as much as an online KD one or more)."""
        e = self.settings.main_epochs
        kd, rf = self.summary("online KD", e)["cpu_seconds"].mean, self.summary("reinforced", e)["cpu_seconds"].mean
        return self.reinforcement.cpu_seconds / (kd - rf) if kd > rf else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["summary"] = {arm: {str(e): {k: dataclasses.asdict(v) for k, v in self.summary(arm, e).items()}
                              for e in self.settings.epochs} for arm in ARMS}
        d["chosen_k"] = chosen_k(self.k_sweep) if self.k_sweep else None
        d["paired"] = {f"reinforced - {b}": {str(e): dataclasses.asdict(self.paired("reinforced", b, e))
                                             for e in self.settings.epochs} for b in ("plain", "online KD")}
        return d


# ---------------------------------------------------------------------- conclusions and outputs
def _at_equal_cost(result: DemoResult) -> list[tuple[int, float, float, int, float, float]]:
    """For each online KD budget: (its epochs, its mean accuracy, its mean cost, the longest reinforced budget
    whose mean cost is no higher, that budget's mean accuracy, its mean cost)."""
    out = []
    eps = result.settings.epochs
    for e in eps:
        kd = result.summary("online KD", e)
        cheaper = [f for f in eps if result.summary("reinforced", f)["cpu_seconds"].mean <= kd["cpu_seconds"].mean]
        if cheaper:
            f = cheaper[-1]
            rf = result.summary("reinforced", f)
            out.append((e, kd["accuracy"].mean, kd["cpu_seconds"].mean, f, rf["accuracy"].mean,
                        rf["cpu_seconds"].mean))
    return out


def conclusions(result: DemoResult) -> list[str]:
    """What the measured numbers support, each sentence computed from them (never written by hand)."""
    s = result.settings
    e = s.main_epochs
    lines = []
    vs_plain, vs_kd = result.paired("reinforced", "plain"), result.paired("reinforced", "online KD")
    if vs_plain.n >= 2:
        verdict = ("above plain: the whole interval is above 0" if vs_plain.low > 0 else
                   "below plain: the whole interval is below 0" if vs_plain.high < 0 else
                   "not distinguishable from plain at this number of seeds: the interval contains 0")
    else:
        verdict = "one seed: no conclusion"
    lines.append(f"Reinforced − plain at {e} epochs: {vs_plain.interval()} points (mean [95 % interval] over "
                 f"{vs_plain.n} paired seeds): {verdict}.")
    if vs_kd.n >= 2:
        verdict = ("within 1 point of online KD or above it: the whole interval is above −1" if vs_kd.low > -0.01 else
                   "below online KD by more than 1 point: the whole interval is below −1" if vs_kd.high < -0.01 else
                   ("the mean is within 1 point of online KD or above it, but the interval reaches below −1: not "
                    "shown at this number of seeds") if vs_kd.mean >= -0.01 else
                   ("the mean is more than 1 point below online KD, but the interval reaches above −1: not shown "
                    "at this number of seeds"))
    else:
        verdict = "one seed: no conclusion"
    lines.append(f"Reinforced − online KD at {e} epochs: {vs_kd.interval()} points: {verdict}.")
    cost = {arm: result.summary(arm, e)["cpu_seconds"].mean for arm in ARMS}
    if cost["plain"] > 0:
        lines.append(f"Training cost at {e} epochs (CPU s per run, mean): plain {cost['plain']:.1f}, online KD "
                     f"{cost['online KD']:.1f} ({cost['online KD'] / cost['plain']:.2f}× plain), reinforced "
                     f"{cost['reinforced']:.1f} ({cost['reinforced'] / cost['plain']:.2f}× plain).")
    for kd_e, kd_acc, kd_cost, rf_e, rf_acc, rf_cost in _at_equal_cost(result):
        word = "above" if rf_acc > kd_acc else "below" if rf_acc < kd_acc else "level with"
        short = (f"; that is reinforced's longest budget, at {rf_cost / kd_cost:.2f}× the cost: no reinforced run "
                 "here costs as much" if rf_e == s.epochs[-1] and rf_cost < 0.9 * kd_cost else "")
        lines.append(f"At no more CPU time than online KD's {kd_e} epochs ({kd_cost:.1f} s), reinforced "
                     f"({rf_e} epochs, {rf_cost:.1f} s) reaches {100 * rf_acc:.2f} %, {word} online KD's "
                     f"{100 * kd_acc:.2f} %{short}.")
    be = result.break_even()
    lines.append(f"The one-time reinforcement cost {result.reinforcement.cpu_seconds:.1f} CPU s: "
                 + (("it is paid back against online KD within the first training" if be <= 1 else
                     f"it is paid back against online KD after {be:.1f} trainings") + f" of {e} epochs."
                    if be is not None else "a reinforced training costs no less than an online KD one, so it is "
                                           "never paid back in CPU time."))
    if len(s.epochs) >= 2:
        a, b = s.epochs[-2], s.epochs[-1]
        d = result.summary("plain", b)["accuracy"].mean - result.summary("plain", a)["accuracy"].mean
        lines.append(f"Plain from {a} to {b} epochs: {100 * d:+.2f} points (mean)"
                     + (": plain has levelled off." if abs(d) < 0.01 else ": plain is still changing."))
    return lines


def results_table(result: DemoResult) -> str:
    """The markdown tables: per arm and budget mean ± std over seeds, paired differences, costs, conclusions."""
    s = result.settings
    e = s.main_epochs
    plain_cost = result.summary("plain", e)["cpu_seconds"].mean
    lines = [f"Students at {e} epochs, {s.seeds} seeds ({', '.join(map(str, s.student_seeds()))}): test accuracy "
             "mean ± std and training cost (CPU seconds of the training loop per run).", "",
             "| model | test accuracy (%) | per seed (%) | training CPU s | cost vs plain |", "|---|---|---|---|---|",
             f"| teacher (AdaptiveEnsembleHead, 2 weak learners; once) | {100 * result.teacher.accuracy:.2f} | | "
             f"{result.teacher.cpu_seconds:.1f} | |"]
    for arm in ARMS:
        sm = result.summary(arm, e)
        per = ", ".join(f"{100 * r.accuracy:.2f}" for _, r in sorted(_runs(result.runs, arm, e).items()))
        rel = f"{sm['cpu_seconds'].mean / plain_cost:.2f}x" if plain_cost > 0 else ""
        lines.append(f"| student: {arm} | {sm['accuracy'].points()} | {per} | {sm['cpu_seconds'].mean:.1f} | {rel} |")
    lines += ["", "Paired differences (same seed, same initialisation), percentage points, mean [95 % t interval]:", "",
              "| epochs | reinforced − plain | reinforced − online KD |", "|---|---|---|"]
    for ep in s.epochs:
        lines.append(f"| {ep} | {result.paired('reinforced', 'plain', ep).interval()} | "
                     f"{result.paired('reinforced', 'online KD', ep).interval()} |")
    lines += ["", "Accuracy against cost (mean over seeds; the curves of cost.png):", "",
              "| epochs | " + " | ".join(f"{arm}: accuracy (%), CPU s" for arm in ARMS) + " |",
              "|---|" + "---|" * len(ARMS)]
    for ep in s.epochs:
        cells = []
        for arm in ARMS:
            sm = result.summary(arm, ep)
            cells.append(f"{sm['accuracy'].points()}, {sm['cpu_seconds'].mean:.1f}")
        lines.append(f"| {ep} | " + " | ".join(cells) + " |")
    if result.k_sweep:
        lines += ["", f"K sweep: reinforced students on the first K of {max(s.views, *s.k_sweep)} stored views, "
                  f"{result.k_sweep_split}, {e} epochs:",
                  "", "| K | held-out accuracy (%) |", "|---|---|"]
        for k, acc in k_estimates(result.k_sweep).items():
            lines.append(f"| {k} | {acc.points()} |")
        lines += ["", f"K chosen by the one-standard-error rule on the held-out split (the smallest K whose mean is "
                  f"within one standard error of the best mean): {chosen_k(result.k_sweep)}."]
    lines += ["", "Conclusions (computed from the numbers above):", ""]
    lines += [f"- {c}" for c in conclusions(result)]
    lines += ["", f"Reinforcement: {result.reinforcement.note} in {result.reinforcement.cpu_seconds:.1f} CPU s, "
              f"file {result.file_bytes / 1024:.0f} KiB. Teacher: {result.teacher.note}. Students: "
              f"SmallCNN(width {s.student_width}), batch {s.batch_size}, AdamW lr {s.lr} cosine, KDLoss (T = 1) for "
              f"the distilled arms; views {s.view_size} px, RandomResizedCrop(scale {s.crop_scale[0]:g}-"
              f"{s.crop_scale[1]:g}) + flip + RandAugment(2, 9) + RandomErasing(0.25)."]
    return "\n".join(lines)


_COLOURS = {"plain": "tab:blue", "online KD": "tab:orange", "reinforced": "tab:green"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    return plt


def plot_accuracy(result: DemoResult, path: str) -> str:
    """Test accuracy per epoch at the main budget: mean over seeds, min–max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for arm in ARMS:
            hist = np.array([r.history for r in _runs(result.runs, arm, result.settings.main_epochs).values()]) * 100
            x = np.arange(1, hist.shape[1] + 1)
            ax.plot(x, hist.mean(0), marker="o", ms=2, color=_COLOURS[arm], label=f"{arm} (mean)")
            ax.fill_between(x, hist.min(0), hist.max(0), color=_COLOURS[arm], alpha=0.15)
        ax.axhline(100 * result.teacher.accuracy, color="gray", ls="--", lw=1, label="teacher")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{result.settings.seeds} seeds; band: min–max over seeds", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_cost(result: DemoResult, path: str) -> str:
    """Accuracy against training CPU seconds: one curve per arm over the budgets (mean ± std over seeds);
    the reinforced curve also shifted right by the one-time reinforcement cost."""
    plt = _pyplot()
    s = result.settings
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        for arm in ARMS:
            sm = [result.summary(arm, e) for e in s.epochs]
            x = [m["cpu_seconds"].mean for m in sm]
            y = [100 * m["accuracy"].mean for m in sm]
            ax.errorbar(x, y, yerr=[100 * m["accuracy"].std for m in sm], marker="o", ms=4, capsize=3,
                        color=_COLOURS[arm], label=arm)
            for xi, yi, e in zip(x, y, s.epochs):
                ax.annotate(f"{e} ep", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7,
                            color=_COLOURS[arm])
            if arm == "reinforced":
                r, be = result.reinforcement.cpu_seconds, result.break_even()
                pays = ("never pays back against online KD" if be is None else
                        "paid back against online KD within one training" if be <= 1 else
                        f"paid back against online KD after {be:.1f} trainings")
                ax.plot([xi + r for xi in x], y, ls="--", marker="o", ms=3, color=_COLOURS[arm], alpha=0.6,
                        label=f"reinforced + the one-time reinforcement ({r:.0f} s;\n{pays})")
        ax.axhline(100 * result.teacher.accuracy, color="gray", ls=":", lw=1, label="teacher")
        ax.set_xlabel("training cost per run (CPU seconds, mean over seeds)")
        ax.set_ylabel("test accuracy (%, mean ± std over seeds)")
        ax.set_title(f"accuracy against training cost: {s.seeds} seeds, epoch budgets "
                     f"{', '.join(map(str, s.epochs))}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
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
             device: str = "cpu", epochs: int | Sequence[int] | None = None, views: int | None = None,
             seeds: int | None = None, settings: DemoSettings | None = None, **overrides: Any) -> DemoResult:
    """Run the demo; returns its :class:`DemoResult` (the files are in ``result.out``).

    ``overrides`` set any other :class:`DemoSettings` field (``train_images=...``).
    """
    if settings is None:
        kw: dict[str, Any] = dict(out=os.fspath(out), data=data, seed=seed, device=device)
        for key, value in (("epochs", epochs), ("views", views), ("seeds", seeds)):
            if value is not None:
                kw[key] = tuple(value) if key == "epochs" and not isinstance(value, int) else value
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
    jobs = s.resolved_jobs()
    try:
        policy = Policy.preset("rrc_ra_re", output_size=(s.view_size, s.view_size), crop_scale=s.crop_scale)
        t0 = time.perf_counter()
        dat = _load_data(s, policy)
        _say(f"data: {dat.name} (ready in {time.perf_counter() - t0:.1f} s); {jobs} training process(es) of "
             f"{torch.get_num_threads()} torch thread(s)")
        teacher, teacher_run = build_teacher(s, dat, policy, device_t, jobs)
        file = os.path.join(s.out, "train_reinforced.h5")
        reinforcement, size = reinforce_step(s, dat, teacher, policy, file)
        shared = dict(settings=s, data=dat, policy=policy, device=device_t, teacher=teacher, file=file,
                      threads=s.threads)
        # longest first, so the processes finish together
        tasks = sorted([(arm, sd, e) for e in s.epochs for sd in s.student_seeds() for arm in ARMS],
                       key=lambda t: -t[2])
        with _bar(sum(t[2] for t in tasks), "3/3 students", s.progress, "epoch") as bar:
            def done(r: RunResult) -> None:
                bar.update(r.epochs)
                _say(f"[3/3] {r.arm}, seed {r.seed}, {r.epochs} epochs: test accuracy {r.accuracy:.4f}, "
                     f"{r.cpu_seconds:.1f} CPU s")
            runs = _parallel(train_student, tasks, jobs, shared, done)
        sweep: list[RunResult] = []
        if s.k_sweep:
            kmax = s.k_sweep[-1]
            if kmax > s.views:  # else the sweep reads the first K of the main file's views
                shared["file"] = os.path.join(s.out, f"train_reinforced_K{kmax}.h5")
                reinforce_step(dataclasses.replace(s, views=kmax), dat, teacher, policy, shared["file"])
            tasks = [("reinforced", sd, s.main_epochs, k, True) for k in s.k_sweep for sd in s.student_seeds()]
            with _bar(len(tasks), "K sweep (held-out split)", s.progress, "run") as bar:
                sweep = _parallel(train_student, tasks, jobs, shared, lambda r: bar.update(1))
        files = {name: os.path.join(s.out, name) for name in
                 ("results.md", "results.json", "cost.png", "accuracy.png", "views.png")}
        files["reinforcement"] = file
        if shared["file"] != file:
            files["k_sweep_reinforcement"] = shared["file"]
        result = DemoResult(s, dat.name, cpu_model(), teacher_run, reinforcement, size, runs, os.path.abspath(s.out),
                            files, jobs, sweep, dat.sweep.text if dat.sweep else "")
        plot_cost(result, files["cost.png"])
        plot_accuracy(result, files["accuracy.png"])
        views_grid(s, dat, file, files["views.png"])
        result.total_seconds = time.perf_counter() - t_start
        table = results_table(result)
        header = (f"# reinforced-data demo\n\n{dat.name}; seed {s.seed}; device {s.device} ({result.machine}), "
                  f"{jobs} training process(es) of {torch.get_num_threads()} torch thread(s); total "
                  f"{result.total_seconds:.0f} s (python {platform.python_version()}, torch {torch.__version__}).\n\n")
        with open(files["results.md"], "w") as fh:
            fh.write(header + table + "\n")
        with open(files["results.json"], "w") as fh:
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
        "demo", help="build a teacher, reinforce a dataset, train a student three ways over several seeds, compare",
        description="End to end on CPU in minutes: an adaptive-ensemble teacher, a reinforcement file, and the same "
                    "student trained plainly, with online distillation, and on the reinforced data, for several "
                    "epoch budgets and seeds. Writes a table (mean ± std, paired differences with 95 % intervals), "
                    "accuracy against training cost, accuracy per epoch and a grid of stored views into --out.")
    p.add_argument("--data", help="an ImageFolder root with train/ and val/ (default: generated shapes)")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--quick", action="store_true", help="a smaller run (about a minute or two)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, teacher and reinforcement (default 0)")
    p.add_argument("--seeds", type=int, help="student seeds per arm and budget (default 5; --quick 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--epochs", type=_ints, metavar="E[,E...]",
                   help="student epoch budgets, the longest the main comparison (default 10,20,40; --quick 6,12)")
    p.add_argument("--views", type=int, help="K, stored views per image (default 32, chosen by --k-sweep on the held-out split)")
    p.add_argument("--train-images", type=int, help=argparse.SUPPRESS)
    p.add_argument("--test-images", type=int, help=argparse.SUPPRESS)
    p.add_argument("--teacher-epochs", type=int, help="epochs per weak learner of the teacher (default 20)")
    p.add_argument("--teacher-images", type=int, help="generated data: more images the teacher alone trains on "
                   "(default 14400, --quick 3600; 0: the students' images alone)")
    p.add_argument("--threads", type=int, help="torch threads per process (default 1; 0: torch's choice)")
    p.add_argument("--jobs", type=int, help="training processes (default: cores / threads)")
    p.add_argument("--k-sweep", type=_ints, metavar="K,K,...",
                   help="also train reinforced students on the first K of max(K, --views) stored views, for each K, "
                   "and score them on a held-out split (generated data: images of their own; --data: the held-out "
                   "tenth of the training set)")
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
    extra = {k: getattr(args, k) for k in ("train_images", "test_images", "teacher_epochs", "teacher_images",
                                           "threads", "jobs", "k_sweep") if getattr(args, k, None) is not None}
    run_demo(args.out, data=args.data, quick=args.quick, seed=args.seed, device=args.device, epochs=args.epochs,
             views=args.views, seeds=args.seeds, progress=not args.no_progress, **extra)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reinforced-data demo`` on its own."""
    parser = argparse.ArgumentParser(prog="reinforced-data")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="reinforced-data: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (ReinforcedDataError, FileNotFoundError) as e:
        print(f"reinforced-data: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reinforced-data: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
