#!/usr/bin/env python
"""Adaptive ensembling on CPU: what the feature cache saves, and what the head buys.

On the package's generated demo data (SyntheticImages, decoded and resized once into
memory so that no row pays for decoding):

1. N weak learners (timm ``--model``, from scratch: no weights can be downloaded here) are
   trained on N disjoint class-stratified bags of the training split (phase 1).
2. Phase-2 cost, side by side in one process: one epoch of training the combination layer
   on cached features vs. the same epoch forwarding every batch through the frozen
   backbones (train and validation, as an uncached epoch must), median over ``--repeats``
   alternating repeats; plus the one-off cost of building the cache.
3. The combination layer is trained with the recipe (AdaBelief, early stopping on
   validation weighted F1, ``--seeds`` seeds) and every model is scored on the same
   held-out test split: each weak learner alone, probability voting over them, the head.
4. Parameter counts, including the paper's configuration (2 x EfficientNet-B0, 37 classes).

    python benchmarks/ensemble.py                                   # resnet10t at 48 px, a few minutes
    python benchmarks/ensemble.py --model efficientnet_b0 --img-size 64   # the paper's backbone (slow on CPU)

Writes a markdown table to benchmarks/results/ensemble.md (``--out``).
"""

from __future__ import annotations

import _common  # first: this checkout's reinforced_data on sys.path

import argparse  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _common import HERE, ROOT, machine, write_table  # noqa: E402

from reinforced_data.ensemble import (  # noqa: E402
    AdaptiveEnsembleHead,
    adabelief,
    bagging_split,
    create_backbone,
    extract_features,
    fit_combiner,
    fit_weak_learner,
    stratified_split,
    weighted_f1,
)
from reinforced_data.policy import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD  # noqa: E402
from reinforced_data.synthetic import SyntheticImages  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results", "ensemble.md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet10t", help="timm backbone of the weak learners")
    p.add_argument("--n", type=int, default=2, help="number of weak learners")
    p.add_argument("--img-size", type=int, default=48)
    p.add_argument("--num-images", type=int, default=960)
    p.add_argument("--num-classes", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10, help="phase-1 epoch budget per learner")
    p.add_argument("--lr", type=float, default=2e-3, help="phase-1 learning rate (from scratch)")
    p.add_argument("--batch-size", type=int, default=32, help="phase-1 batch size")
    p.add_argument("--head-batch-size", type=int, default=64, help="phase-2 batch size")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed phase-2 epochs of each kind")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    return p.parse_args(argv)


def load_images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """All demo images, resized to img_size and normalised, in memory."""
    ds = SyntheticImages(args.num_images, args.num_classes, seed=args.seed)
    s = args.img_size
    xs = [F.interpolate(ds[i][0][None].float(), size=(s, s), mode="bilinear", antialias=True, align_corners=False)
          for i in range(len(ds))]
    x = torch.cat(xs).div_(255)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x.contiguous(), torch.tensor(ds.targets)


class FlipLoader:
    """Shuffled mini-batches with random horizontal flips (re-iterable, seeded per epoch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        self.epoch += 1
        perm = torch.randperm(len(self.y), generator=g)
        for i in range(0, len(perm) - self.batch_size + 1, self.batch_size):  # drop_last
            idx = perm[i:i + self.batch_size]
            xb = self.x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb[flip] = xb[flip].flip(-1)
            yield xb, self.y[idx]


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]


def combiner_epoch(head: AdaptiveEnsembleHead, layer: torch.nn.Linear, opt, train, val, num_classes: int,
                   batch_size: int, g: torch.Generator, cached: bool) -> float:
    """One phase-2 epoch (train + validation F1); features from the cache or from the backbones."""
    xs, ys = train
    xv, yv = val
    layer.train()
    perm = torch.randperm(len(ys), generator=g)
    for i in range(0, len(perm), batch_size):
        idx = perm[i:i + batch_size]
        if cached:
            f = xs[idx]
        else:
            with torch.no_grad():
                f = head.forward_features(xs[idx])
        loss = F.cross_entropy(layer(f), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    layer.eval()
    with torch.no_grad():
        if cached:
            logits = layer(xv)
        else:
            logits = torch.cat([layer(head.forward_features(xv[i:i + 256])) for i in range(0, len(yv), 256)])
    return weighted_f1(logits, yv, num_classes)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_start = os.getloadavg()[0]
    t_all = time.perf_counter()

    x, y = load_images(args)
    k = args.num_classes
    tr, va, te = stratified_split(y.numpy(), seed=args.seed, val=0.15, test=0.15)
    bags = [tr[b] for b in bagging_split(y[tr], args.n, seed=args.seed)]
    print(f"data: {len(y)} images {args.img_size} px, {k} classes; train {len(tr)} (bags {[len(b) for b in bags]}), "
          f"val {len(va)}, test {len(te)}", flush=True)

    # Phase 1.
    fits = []
    for i, bag in enumerate(bags):
        backbone = create_backbone(args.model, pretrained=False)
        fit = fit_weak_learner(backbone, FlipLoader(x[bag], y[bag], args.batch_size, seed=args.seed + i), k,
                               max_epochs=args.epochs, lr=args.lr)
        fits.append(fit)
        print(f"learner {i + 1}: {fit.epochs} epochs, {fit.seconds:.0f} s, train accuracy "
              f"{fit.train_accuracy[-1]:.3f}", flush=True)
    head = AdaptiveEnsembleHead([f.backbone for f in fits], k, input_size=args.img_size)

    # The cache, built once.
    t0 = time.perf_counter()
    train_cache = extract_features(head, batches(x[tr], y[tr], 128))
    val_cache = extract_features(head, batches(x[va], y[va], 128))
    cache_s = time.perf_counter() - t0

    # Phase-2 epoch cost, cached vs uncached, alternating.
    torch.manual_seed(args.seed)
    layer = torch.nn.Linear(head.num_features, k)
    opt = adabelief(layer.parameters())
    g = torch.Generator().manual_seed(args.seed)
    times: dict[bool, list[float]] = {True: [], False: []}
    head.eval()
    for r in range(args.repeats):
        for cached in ((True, False) if r % 2 == 0 else (False, True)):
            train = (train_cache.features, train_cache.labels) if cached else (x[tr], y[tr])
            val = (val_cache.features, val_cache.labels) if cached else (x[va], y[va])
            t0 = time.perf_counter()
            combiner_epoch(head, layer, opt, train, val, k, args.head_batch_size, g, cached)
            times[cached].append(time.perf_counter() - t0)
    ep_cached, ep_uncached = statistics.median(times[True]), statistics.median(times[False])

    # Phase 2 with the recipe, then every model on the test split.
    t0 = time.perf_counter()
    comb = fit_combiner(head, train_cache, val_cache, seeds=range(args.seeds), patience=args.patience,
                        batch_size=args.head_batch_size)
    phase2_s = time.perf_counter() - t0
    total_epochs = sum(r.epochs for r in comb.runs)
    test = extract_features(head, batches(x[te], y[te], 128))
    rows = []
    with torch.no_grad():
        logits = [f.classifier(feat) for f, feat in zip(fits, head.split_features(test.features))]
        for i, lg in enumerate(logits):
            rows.append((f"weak learner {i + 1} alone (bag of {len(bags[i])})", lg))
        voting = torch.stack([lg.softmax(1) for lg in logits]).mean(0)
        rows.append(("voting: mean of the learners' probabilities", voting))
        rows.append(("adaptive ensemble head", head.forward_head(test.features)))

    # The paper's configuration, for the parameter count.
    paper = AdaptiveEnsembleHead.from_timm(["efficientnet_b0"] * 2, 37, pretrained=False, input_size=32)

    cmd = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]) if argv is None else \
        "python benchmarks/ensemble.py " + shlex.join(argv)
    lines = [
        "# Adaptive ensembling: feature cache and accuracy (CPU)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine()}; torch {torch.__version__} with {args.threads} threads, "
        f"Python {platform.python_version()}; load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        "(shared machine: compare rows of this run, not runs)",
        f"- command: `{cmd}`",
        f"- setup: {args.n} x {args.model} from scratch (no ImageNet weights offline), {args.img_size} px, "
        f"SyntheticImages({args.num_images}, {k} classes, seed {args.seed}) decoded once into memory; "
        f"stratified split train {len(tr)} / val {len(va)} / test {len(te)}; train split cut into {args.n} "
        f"class-stratified bags; phase 1: AdaBelief lr {args.lr:g}, batch {args.batch_size}, random flips, at most "
        f"{args.epochs} epochs or 99 % train accuracy; phase 2: the recipe (AdaBelief lr 5e-4, eps 1e-16, "
        f"decoupled decay, no rectification), batch {args.head_batch_size}, patience {args.patience} on val "
        f"weighted F1, best of {args.seeds} seeds",
        "",
        "## Phase 2: one epoch of training the combination layer",
        "",
        f"Median of {args.repeats} epochs each, alternating; an epoch is {len(tr)} training samples plus the "
        f"validation F1 on {len(va)}.",
        "",
        "| | seconds per epoch | ratio |",
        "|---|---|---|",
        f"| forwarding through the frozen backbones every epoch | {ep_uncached:.3f} | 1 |",
        f"| feature cache | {ep_cached:.4f} | {ep_uncached / ep_cached:.0f}x faster |",
        f"| (one-off) building the cache, train + val | {cache_s:.3f} | {cache_s / ep_uncached:.1f} uncached epochs |",
        "",
        f"The recipe's phase 2 ran {total_epochs} epochs over {args.seeds} seeds (early stopping): "
        f"{phase2_s:.2f} s on the cache, {cache_s + phase2_s:.1f} s with building it; forwarding through the "
        f"backbones instead would take about {total_epochs * ep_uncached:.0f} s "
        f"({total_epochs} x the measured uncached epoch).",
        "",
        "## Parameters",
        "",
        "| model | parameters | trainable in phase 2 |",
        "|---|---|---|",
    ]
    for i, f in enumerate(fits):
        lines.append(f"| weak learner {i + 1}: {args.model} backbone + output layer | "
                     f"{count(f.backbone) + count(f.classifier):,} | - |")
    lines += [
        f"| adaptive head: {args.n} x {args.model}, {k} classes | {head.num_params:,} | "
        f"{head.num_trainable_params:,} ({head.num_classes} x ({' + '.join(map(str, head.feature_dims))} + 1)) |",
        f"| the paper's: 2 x efficientnet_b0, 37 classes (Oxford Pets) | {paper.num_params:,} | "
        f"{paper.num_trainable_params:,} |",
        "",
        f"## Test split ({len(te)} images, {k} classes): accuracy (the paper's test metric) and weighted F1",
        "",
        "| model | accuracy | weighted F1 |",
        "|---|---|---|",
    ]
    for name, lg in rows:
        acc = float((lg.argmax(1) == test.labels).float().mean())
        lines.append(f"| {name} | {acc:.3f} | {weighted_f1(lg, test.labels, k):.3f} |")
    best = comb.runs[[r.seed for r in comb.runs].index(comb.best_seed)]
    lines += [
        "",
        f"Phase 1: {[f.epochs for f in fits]} epochs, final train accuracy "
        f"{[round(f.train_accuracy[-1], 3) for f in fits]}, {sum(f.seconds for f in fits):.0f} s. "
        f"Phase 2: val weighted F1 per seed {[round(r.best_val_f1, 3) for r in comb.runs]}, kept seed {comb.best_seed} (best epoch "
        f"{best.best_epoch + 1}). One run, one data seed: small test split, so differences of a few points are noise.",
        f"Total wall time {time.perf_counter() - t_all:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_table(text, args.out)
    print(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
