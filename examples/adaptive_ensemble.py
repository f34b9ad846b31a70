#!/usr/bin/env python
"""Efficient adaptive ensembling (Bruno et al., 2023), end to end, offline.

1. Split the data into train / val / test (class-stratified), and the training set into
   N disjoint class-stratified bags (``bagging_split``).
2. Phase 1: one weak learner per bag (EfficientNet-B0 by default, ImageNet weights when
   timm can fetch them, otherwise from scratch), trained end to end with a temporary
   output layer until it overfits its bag or the epoch budget ends.
3. Phase 2: drop the output layers, freeze the backbones, cache their features once, and
   train only the linear combination layer (AdaBelief, early stopping on validation
   weighted F1), best of several seeds.
4. Test accuracy of each weak learner alone, of probability voting, and of the head.

    python examples/adaptive_ensemble.py --quick              # demo data, 64 px, a few minutes on 2 CPU cores
    python examples/adaptive_ensemble.py                      # demo data, the paper's settings (slow on CPU)
    python examples/adaptive_ensemble.py --data PATH          # any ImageFolder tree: PATH/<class>/<image>
    python examples/adaptive_ensemble.py --quick --out head.pth   # save the teacher for `reinforce`
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout without installing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="ImageFolder root (default: the package's generated demo data)")
    p.add_argument("--quick", action="store_true",
                   help="small fast run: 64 px, 640 demo images, 8 phase-1 epochs, patience 5")
    p.add_argument("--model", default="efficientnet_b0", help="timm backbone of every weak learner")
    p.add_argument("--n", type=int, default=2, help="number of weak learners / bags")
    p.add_argument("--pretrained", choices=("auto", "yes", "no"), default="auto",
                   help="ImageNet weights from timm: auto = when the hub (or a local cache) has them")
    p.add_argument("--img-size", type=int, default=None, help="input size in px (default 224, --quick 64)")
    p.add_argument("--epochs", type=int, default=None, help="phase-1 epoch budget per learner (default 50, --quick 8)")
    p.add_argument("--lr", type=float, default=None,
                   help="phase-1 learning rate (default: the paper's 5e-4 with ImageNet weights, 2e-3 from scratch)")
    p.add_argument("--target-accuracy", type=float, default=0.99, help="phase 1 stops at this training accuracy")
    p.add_argument("--seeds", type=int, default=5, help="phase-2 seeds for the combination layer")
    p.add_argument("--patience", type=int, default=None, help="phase-2 early stopping patience (default 10)")
    p.add_argument("--max-epochs-head", type=int, default=200, help="phase-2 epoch cap per seed")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-images", type=int, default=None, help="demo data size (default 1200, --quick 640)")
    p.add_argument("--num-classes", type=int, default=8, help="demo data classes")
    p.add_argument("--split", type=float, nargs=2, default=(0.15, 0.15), metavar=("VAL", "TEST"),
                   help="fractions held out for validation and test")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="save the trained AdaptiveEnsembleHead here (AdaptiveEnsembleHead.load)")
    args = p.parse_args(argv)
    args.img_size = args.img_size or (64 if args.quick else 224)
    args.epochs = args.epochs or (8 if args.quick else 50)
    args.patience = args.patience or (5 if args.quick else 10)
    args.num_images = args.num_images or (640 if args.quick else 1200)
    return args


def resolve_pretrained(choice: str) -> bool:
    """Whether to ask timm for ImageNet weights; call before timm is imported.

    When the Hugging Face hub cannot be reached, HF_HUB_OFFLINE=1 makes timm use a local
    cache at once (or fail at once) instead of retrying for a minute.
    """
    if choice == "no":
        return False
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError:
            os.environ["HF_HUB_OFFLINE"] = "1"
    return True


class Transformed(torch.utils.data.Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image."""

    def __init__(self, dataset, indices, transform) -> None:
        self.dataset, self.indices, self.transform = dataset, np.asarray(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img, label = self.dataset[int(self.indices[i])]
        return self.transform(img), label


def make_transform(size: int, mean, std, train: bool):
    from torchvision.transforms import v2

    ops = [v2.ToImage(), v2.Resize((size, size), antialias=True)]
    if train:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def load_data(args: argparse.Namespace):
    if args.data:
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(args.data)
        return ds, np.asarray(ds.targets), list(ds.classes), f"ImageFolder {args.data}"
    from reinforced_data.synthetic import SyntheticImages

    ds = SyntheticImages(args.num_images, args.num_classes, seed=args.seed)
    return ds, np.asarray(ds.targets), list(ds.classes), f"SyntheticImages({args.num_images}, {args.num_classes})"


def scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, float]:
    from reinforced_data.ensemble import weighted_f1

    return float((logits.argmax(1) == labels).float().mean()), weighted_f1(logits, labels, num_classes)


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    want_pretrained = resolve_pretrained(args.pretrained)
    from reinforced_data.ensemble import (AdaptiveEnsembleHead, bagging_split, create_backbone,
                                          extract_features, fit_combiner, fit_weak_learner, stratified_split)
    from reinforced_data.policy import IMAGENET_MEAN, IMAGENET_STD
    log = logging.getLogger("adaptive_ensemble")
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    dataset, labels, classes, data_name = load_data(args)
    k = len(classes)
    train_idx, val_idx, test_idx = stratified_split(labels, seed=args.seed, val=args.split[0], test=args.split[1])
    bags = [train_idx[b] for b in bagging_split(labels[train_idx], args.n, seed=args.seed)]
    log.info("%s: %d classes; train %d (bags of %s), val %d, test %d", data_name, k, len(train_idx),
             [len(b) for b in bags], len(val_idx), len(test_idx))

    backbones, source = [], "random init"
    for _ in range(args.n):
        if want_pretrained and source != "random init (no ImageNet weights)":
            try:
                backbones.append(create_backbone(args.model, pretrained=True))
                source = "ImageNet (timm)"
                continue
            except RuntimeError as e:
                if args.pretrained == "yes":
                    raise
                log.warning("%s; training from scratch instead", e)
                source = "random init (no ImageNet weights)"
        backbones.append(create_backbone(args.model, pretrained=False))
    lr = args.lr or (5e-4 if source == "ImageNet (timm)" else 2e-3)
    cfg = backbones[0].pretrained_cfg
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    train_tf = make_transform(args.img_size, mean, std, train=True)
    eval_tf = make_transform(args.img_size, mean, std, train=False)

    def loader(indices, transform, shuffle: bool):
        return torch.utils.data.DataLoader(
            Transformed(dataset, indices, transform), batch_size=args.batch_size, shuffle=shuffle,
            drop_last=shuffle, num_workers=args.workers,
            generator=torch.Generator().manual_seed(args.seed) if shuffle else None)

    # Phase 1: each weak learner overfits its own bag.
    fits = []
    for i, (backbone, bag) in enumerate(zip(backbones, bags)):
        log.info("phase 1, learner %d/%d: %s (%s) on %d images, lr %g", i + 1, args.n, args.model, source,
                 len(bag), lr)
        fits.append(fit_weak_learner(backbone, loader(bag, train_tf, True), k, max_epochs=args.epochs,
                                     target_accuracy=args.target_accuracy, lr=lr, device=args.device))
    t_phase1 = time.perf_counter() - t_start

    # Phase 2: frozen backbones, feature cache, the combination layer only.
    head = AdaptiveEnsembleHead([f.backbone for f in fits], k, input_size=args.img_size, mean=mean, std=std)
    t0 = time.perf_counter()
    comb = fit_combiner(head, loader(train_idx, eval_tf, False), loader(val_idx, eval_tf, False),
                        seeds=range(args.seeds), patience=args.patience, max_epochs=args.max_epochs_head,
                        device=args.device)
    t_phase2 = time.perf_counter() - t0

    # Test: every model from one pass over the test set (the learners' features are in the cache).
    test = extract_features(head, loader(test_idx, eval_tf, False), args.device)
    with torch.no_grad():
        learner_logits = [f.classifier.cpu()(feat) for f, feat in zip(fits, head.split_features(test.features))]
        results = {f"weak learner {i + 1} alone": scores(lg, test.labels, k) for i, lg in enumerate(learner_logits)}
        voting = torch.stack([lg.softmax(1) for lg in learner_logits]).mean(0)
        results["voting (mean probability)"] = scores(voting, test.labels, k)
        results["adaptive ensemble head"] = scores(head.cpu().forward_head(test.features), test.labels, k)

    print()
    print(f"data: {data_name}, {args.img_size} px; backbones: {args.n} x {args.model} ({source})")
    print(f"phase 1: {t_phase1:.0f} s, epochs {[f.epochs for f in fits]}, final train accuracy "
          f"{[round(f.train_accuracy[-1], 3) for f in fits]}, overfit {[f.overfit for f in fits]}")
    print(f"phase 2: {t_phase2:.1f} s (feature cache {comb.train_cache.seconds + comb.val_cache.seconds:.1f} s, "
          f"combination layer {comb.train_seconds:.1f} s for {len(comb.runs)} seeds); best seed {comb.best_seed}, "
          f"val weighted F1 {comb.best_val_f1:.3f}")
    print(f"trainable parameters in phase 2: {head.num_trainable_params:,} of {head.num_params:,}")
    print()
    print(f"| model (test split, {len(test)} images) | accuracy | weighted F1 |")
    print("|---|---|---|")
    for name, (acc, f1) in results.items():
        print(f"| {name} | {acc:.3f} | {f1:.3f} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.out:
        head.save(args.out)
        print(f"saved the head to {args.out}: AdaptiveEnsembleHead.load({args.out!r}), or as a teacher: "
              f"reinforced-data reinforce --teacher {args.out} ...")
    return results


if __name__ == "__main__":
    main()
