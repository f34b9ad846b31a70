#!/usr/bin/env python
"""Replay speed per policy family, each beside the library that defines it (one CPU core).

For every family the library's own transform is built first, and our policy is made from
it (or from the same arguments) in one call, so both sides run the same recipe:

  torchvision families   Policy.from_torchvision(compose) of a torchvision.transforms.v2 Compose
                         on uint8 tensors: RandomResizedCrop + flip + {RandAugment(2, 9),
                         TrivialAugmentWide, AutoAugment(IMAGENET)} + normalise + RandomErasing
  timm families          Policy.from_timm(**kwargs) beside timm.data.create_transform(**kwargs)
                         on PIL images (auto_augment "rand-m9-mstd0.5-inc1" with random
                         bilinear/bicubic interpolation and pixel-noise erasing; "original")
  colour jitter          torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1) after RRC + flip (v2, tensors);
                         timm train.py's defaults (color_jitter=0.4, no auto_augment, PIL images)
  grey / blur / solarize torchvision's RandomGrayscale(0.2), RandomApply([GaussianBlur(23)], p=0.5) and
                         RandomSolarize(128, p=0.2) after RRC + flip (v2, tensors); timm's 3a (DeiT III's
                         3-Augment) with color_jitter=0.3, bicubic, no erasing (PIL images)
  AugMix (version 5)     torchvision's AugMix() after RRC + flip (v2, tensors); timm's
                         auto_augment "augmix-m5-w4-d2" with random interpolation and pixel-noise
                         erasing (PIL images)
  the paper's            the paper's ImageNet configuration with its sequential MixUp + CutMix
                         beside the same torchvision pipeline followed by that mixing on tensors
                         (what apple/ml-dr runs); the paper's CIFAR RandomCrop(32, padding=4) +
                         flip (+ RandAugment) on 32 px sources beside torchvision

Ours replays parameters sampled beforehand (sampling is not timed: it happens once, at
generation) in batches of --batch views, float32 normalised output, from sources in the
layout a loader hands over (channels-last uint8 views); the library's views are stacked into
batches of the same size, as a DataLoader's collate would. Each row reports the median over
repeats of the thread's CPU ms per view; pipelines run in a rotating order per repeat. A
mixed view of ours replays its partner's stored view too (what training does), so it costs
two augmentations; the library mixes views it already has.

Large float32 batches (64 views at 224 px: 38.5 MB) lie past glibc's mmap threshold, so by
default every fresh batch is new memory and page-faults on first touch; on this project's
virtual machine that costs 0.4-0.6 ms per view, more than the whole replay, on both sides. The
script therefore re-runs itself with MALLOC_MMAP_THRESHOLD_ raised (freed batches are reused, as
a loader worker that sets it does); --fresh-pages measures without it (a second table).

    python benchmarks/replay_families.py                # writes benchmarks/results/replay_families.md
    python benchmarks/replay_families.py --fresh-pages  # writes .../replay_families_fresh_pages.md
    python benchmarks/replay_families.py --quick        # smoke test
    python benchmarks/replay_families.py --only AugMix,augmix --views 128 --photos 32 --repeats 3 \
        --out benchmarks/results/replay_families_v5.md    # the AugMix rows (format version 5)
"""

from __future__ import annotations

import _common  # first: this checkout's reinforced_data on sys.path

_common.one_core()  # per-core numbers: every thread pool pinned before torch / numpy load

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _photos  # noqa: E402
from _common import HERE, cpu_model, versions, write_table  # noqa: E402
from _photos import loader_layout  # noqa: E402

from reinforced_data.policy import Policy  # noqa: E402
from reinforced_data._replay import compiled_available, replay  # noqa: E402

TARGET_X = 5.0  # ours must stay at least this many times faster per core than the library
DEFAULT_OUT = os.path.join(HERE, "results", "replay_families.md")
FRESH_OUT = os.path.join(HERE, "results", "replay_families_fresh_pages.md")
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "8589934592"}
QUICK_OUT = os.path.join(HERE, ".data", "replay_families_quick.md")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Family:
    name: str
    library: str
    policy: Policy
    lib_run: Callable[[list], None]  # runs the library over its inputs, one call per view
    lib_inputs: str  # "tensor" or "pil"
    small: bool = False  # 32 px sources (CIFAR)
    mixed: bool = False


def _tv_compose(aug, size=224, erase=0.25, crop=None):
    import torchvision.transforms.v2 as T

    steps = [crop or T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()]
    if aug is not None:
        steps.append(aug)
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)]
    if erase:
        steps.append(T.RandomErasing(p=erase))
    return T.Compose(steps)


def _per_view(fn, batch: int):
    """The library's transform per view, its views stacked into batches as a loader's collate does
    (ours returns batches: both sides then pay for a float32 batch's fresh pages)."""
    def run(inputs):
        for i in range(0, len(inputs), batch):
            torch.stack([fn(x) for x in inputs[i:i + batch]])
    return run


def _ml_dr_mixing(tf, batch: int):
    """The paper's generation-time mixing on views made by ``tf``: MixUp (α=1, λ/2, p=0.5), then
    CutMix (α=1, p=0.5), each view with the next one of its batch as partner."""
    def run(inputs):
        for i in range(0, len(inputs), batch):
            views = torch.stack([tf(x) for x in inputs[i:i + batch]])
            partners = views.roll(1, 0)
            for v, p in zip(views, partners):
                if random.random() < 0.5:
                    lam = np.random.beta(1.0, 1.0) / 2.0
                    v.mul_(lam).add_(p, alpha=1.0 - lam)
                if random.random() < 0.5:
                    lam = np.random.beta(1.0, 1.0)
                    h, w = v.shape[-2:]
                    r = np.sqrt(1.0 - lam)
                    ch, cw = int(h * r), int(w * r)
                    cy, cx = np.random.randint(h), np.random.randint(w)
                    y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
                    x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
                    v[:, y0:y1, x0:x1] = p[:, y0:y1, x0:x1]
    return run


def families(batch: int) -> list[Family]:
    import torchvision.transforms.v2 as T
    from timm.data import create_transform

    out = []
    for label, aug in (("torchvision RandAugment(2, 9)", T.RandAugment(num_ops=2, magnitude=9)),
                       ("torchvision TrivialAugmentWide", T.TrivialAugmentWide()),
                       ("torchvision AutoAugment(IMAGENET)", T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))):
        tf = _tv_compose(aug)
        out.append(Family(label, "torchvision v2", Policy.from_torchvision(tf), _per_view(tf, batch), "tensor"))
    for aa in ("rand-m9-mstd0.5-inc1", "original"):
        kw = dict(input_size=224, auto_augment=aa, interpolation="random", re_prob=0.25, re_mode="pixel",
                  mean=MEAN, std=STD)
        tf = create_transform(is_training=True, **kw)
        out.append(Family(f"timm auto_augment={aa!r}", "timm", Policy.from_timm(**kw), _per_view(tf, batch), "pil"))
    tf = _tv_compose(T.RandAugment(num_ops=2, magnitude=9))
    out.append(Family("the paper's ImageNet + sequential MixUp/CutMix", "torchvision v2 + ml-dr mixing",
                      Policy.preset("paper_imagenet_mix"), _ml_dr_mixing(tf, batch), "tensor", mixed=True))
    tf = _tv_compose(T.ColorJitter(0.4, 0.4, 0.4, 0.1), erase=0.0)
    out.append(Family("torchvision ColorJitter(0.4, 0.4, 0.4, 0.1)", "torchvision v2", Policy.from_torchvision(tf),
                      _per_view(tf, batch), "tensor"))
    kw = dict(input_size=224, auto_augment=None, color_jitter=0.4, interpolation="random", re_prob=0.0,
              mean=MEAN, std=STD)  # timm train.py's defaults
    tf = create_transform(is_training=True, **kw)
    out.append(Family("timm train.py defaults (color_jitter=0.4)", "timm", Policy.from_timm(**kw),
                      _per_view(tf, batch), "pil"))
    # format version 4: torchvision's RandomGrayscale / GaussianBlur / RandomSolarize, timm's 3-Augment (DeiT III)
    for label, aug in (("torchvision RandomGrayscale(0.2)", T.RandomGrayscale(0.2)),
                       ("torchvision RandomApply([GaussianBlur(23)], p=0.5)", T.RandomApply([T.GaussianBlur(23)], p=0.5)),
                       ("torchvision RandomSolarize(128, p=0.2)", T.RandomSolarize(128, p=0.2))):
        tf = _tv_compose(aug, erase=0.0)
        out.append(Family(label, "torchvision v2", Policy.from_torchvision(tf), _per_view(tf, batch), "tensor"))
    kw = dict(input_size=224, auto_augment="3a", color_jitter=0.3, interpolation="bicubic", re_prob=0.0,
              mean=MEAN, std=STD)  # DeiT III's 3-Augment as timm's train.py runs it (preset deit3)
    tf = create_transform(is_training=True, **kw)
    out.append(Family("timm auto_augment='3a', color_jitter=0.3 (DeiT III)", "timm", Policy.from_timm(**kw),
                      _per_view(tf, batch), "pil"))
    # format version 5: AugMix, torchvision's (defaults) and timm's augmix-m5-w4-d2 (preset augmix)
    tf = _tv_compose(T.AugMix(), erase=0.0)
    out.append(Family("torchvision AugMix()", "torchvision v2", Policy.from_torchvision(tf), _per_view(tf, batch),
                      "tensor"))
    kw = dict(input_size=224, auto_augment="augmix-m5-w4-d2", interpolation="random", re_prob=0.25, re_mode="pixel",
              mean=MEAN, std=STD)
    tf = create_transform(is_training=True, **kw)
    out.append(Family("timm auto_augment='augmix-m5-w4-d2'", "timm", Policy.from_timm(**kw), _per_view(tf, batch),
                      "pil"))
    for label, aug in (("the paper's CIFAR: RandomCrop(32, padding=4) + flip", None),
                       ("the paper's CIFAR + RandAugment(2, 9) + RandomErasing", T.RandAugment(num_ops=2, magnitude=9))):
        tf = _tv_compose(aug, erase=0.25 if aug is not None else 0.0, crop=T.RandomCrop(32, padding=4))
        out.append(Family(label, "torchvision v2", Policy.from_torchvision(tf), _per_view(tf, batch), "tensor", small=True))
    return out


def measure(fam: Family, photos, args, rng) -> tuple[list[float], list[float]]:
    """Per repeat: (ours CPU ms per view, library CPU ms per view)."""
    srcs = [loader_layout(p) for p in photos]
    pils = [p.pil for p in photos]
    if fam.small:
        small = [p.pil.resize((32, 32)) for p in photos]
        srcs = [torch.from_numpy(np.array(s)).permute(2, 0, 1) for s in small]
        pils = small
    n = args.views
    idx = [i % len(srcs) for i in range(n)]
    params = [fam.policy.sample(rng, 1, int(srcs[i].shape[1]), int(srcs[i].shape[2]))[0] for i in idx]
    batches = []
    for b0 in range(0, n, args.batch):
        r = list(range(b0, min(n, b0 + args.batch)))
        recs = np.stack([params[i] for i in r])
        kw = {}
        if fam.mixed:
            part = [(i + 1) % n for i in r]
            kw = dict(partners=[srcs[idx[j]] for j in part], partner_params=np.stack([params[j] for j in part]))
        batches.append(([srcs[idx[i]] for i in r], recs, kw))
    lib_inputs = [srcs[i] if fam.lib_inputs == "tensor" else pils[i] for i in idx]

    def ours():
        for imgs, recs, kw in batches:
            replay(imgs, recs, fam.policy, out_dtype=torch.float32, backend="compiled", **kw)

    def lib():
        fam.lib_run(lib_inputs)

    o, lb = [], []
    for rep in range(args.repeats):
        torch.manual_seed(rep)
        random.seed(rep)
        np.random.seed(rep)
        order = [(ours, o), (lib, lb)][:: 1 if rep % 2 == 0 else -1]
        for fn, acc in order:
            t = time.thread_time()
            fn()
            acc.append((time.thread_time() - t) * 1e3 / n)
    return o, lb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="few views and repeats; writes under benchmarks/.data")
    ap.add_argument("--fresh-pages", action="store_true",
                    help="keep glibc's default mmap threshold: every float32 batch is fresh memory")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="only the families whose name contains this text (or one of these, comma-separated)")
    args = ap.parse_args(argv)
    if not args.fresh_pages and any(os.environ.get(k) != v for k, v in MMAP_ENV.items()):
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], {**os.environ, **MMAP_ENV})
    if args.quick:
        args.views, args.repeats, args.photos = 32, 1, 8
    out = args.out or (QUICK_OUT if args.quick else FRESH_OUT if args.fresh_pages else DEFAULT_OUT)
    if not compiled_available():
        print("the compiled op is not built; build it in place first (pip install --no-build-isolation -e .)")
        return 1
    photos = _photos.make_photos(args.photos, seed=0)
    rng = np.random.default_rng(0)
    lines = [
        "# Replay per policy family, beside the library that defines it (one CPU core)",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_model()}; {versions()}.",
        f"`python benchmarks/replay_families.py{' --quick' if args.quick else ''}`: {args.views} views of "
        f"{args.photos} ImageNet-like photos (benchmarks/_photos.py; 32 px copies for CIFAR), float32 normalised "
        f"output, batches of {args.batch}, median of {args.repeats} repeats of this thread's CPU ms per view. "
        "Ours: channels-last uint8 sources, compiled C++ kernels, parameters sampled beforehand. "
        f"Target: ours at least {TARGET_X:g}x faster than the library. Memory: "
        + ("glibc's default mmap threshold (every float32 batch is fresh memory and page-faults)."
           if args.fresh_pages else "MALLOC_MMAP_THRESHOLD_ raised (freed batches are reused; run with "
           "--fresh-pages for the default)."),
        "",
        "| family | library | ours ms/view | library ms/view | library / ours | target met |",
        "|---|---|---|---|---|---|",
    ]
    worst = None
    for fam in families(args.batch):
        if args.only and not any(o in fam.name for o in args.only.split(",")):
            continue
        o, lb = measure(fam, photos, args, rng)
        mo, ml = statistics.median(o), statistics.median(lb)
        ratio = ml / mo
        worst = ratio if worst is None else min(worst, ratio)
        lines.append(f"| {fam.name} | {fam.library} | {mo:.3f} | {ml:.3f} | {ratio:.2f}x | "
                     f"{'yes' if ratio >= TARGET_X else '**no**'} |")
        print(lines[-1], flush=True)
    lines += ["", f"Lowest ratio: {worst:.2f}x (target {TARGET_X:g}x)."]
    write_table("\n".join(lines), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
