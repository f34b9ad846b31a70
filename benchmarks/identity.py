#!/usr/bin/env python
"""What storing identities costs at ImageNet scale: bytes in the file, and the time to map a dataset.

A reinforcement file stores each row's path (docs/format.md, "Dataset identity"), and
``ReinforcedDataset`` maps the wrapped dataset's items to rows by path. This measures, on
ImageNet-like names (``nXXXXXXXX/nXXXXXXXX_NNNNN.JPEG``: 1000 random class ids, 1281
distinct random numbers in [1, 50000) per class, listed as torchvision's ImageFolder lists
them), without any image file:

* the ``identities`` dataset: raw and stored bytes per image (deflate level 6);
* ``ReinforcementFile.identities()``: reading, inflating, hashing and splitting them;
* ``_datasets.match_rows`` against the same listing (the mapping is the identity) and
  against timm's ``ImageDataset`` order (names sorted naturally: another permutation),
  on a folder-like dataset object (``samples``, ``targets``, ``loader``, ``root``), after
  ``dataset_files`` (the relative paths, which the positional fingerprint computes too).

    python benchmarks/identity.py            # writes benchmarks/results/identity.md
    python benchmarks/identity.py --quick    # 100 classes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from _results import publish  # noqa: E402


class FolderLike:
    """A folder dataset's listing (ImageFolder's attributes) without files."""

    def __init__(self, root: str, samples: list) -> None:
        self.root, self.samples = root, samples
        self.targets = [t for _, t in samples]
        self.classes = sorted({p.split("/")[-2] for p, _ in samples})

    def loader(self, path):  # pragma: no cover - never called: nothing is decoded
        raise AssertionError("decoded")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # pragma: no cover
        raise AssertionError("decoded")


def names(classes: int, per_class: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    wnids: list[str] = []
    while len(wnids) < classes:
        wnids = sorted({f"n{int(w):08d}" for w in rng.integers(1_000_000, 15_000_000, classes * 2)})[:classes]
    files, labels = [], []
    for c, w in enumerate(wnids):
        for n in sorted(f"{w}_{int(k)}.JPEG" for k in rng.choice(np.arange(1, 50000), per_class, replace=False)):
            files.append(f"{w}/{n}")
            labels.append(c)
    return files, np.asarray(labels)


def median_s(fn, repeats: int) -> tuple[float, float, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "identity.md"))
    args = ap.parse_args()
    import h5py
    import torch

    from reinforced_data import _datasets as D
    from reinforced_data.fingerprint import Fingerprint
    from reinforced_data.policy import Policy
    from reinforced_data.store import Header, ReinforcementFile, ReinforcementWriter
    from reinforced_data.store.format import IDENTITIES
    from timm.utils.misc import natural_key

    classes = 100 if args.quick else 1000
    files, labels = names(classes, 1281)
    n = len(files)
    root = "/data/imagenet/train"
    tv = FolderLike(root, [(f"{root}/{p}", int(t)) for p, t in zip(files, labels)])
    tm = FolderLike(root, sorted(tv.samples, key=lambda s: natural_key(s[0])))
    assert D.dataset_files(tv) == files and D.dataset_files(tm) != files
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "names.h5")
        header = Header(num_images=n, num_views=1, topk=1, num_classes=classes,
                        policy=Policy.preset("rrc_ra_re", output_size=(16, 16)), teachers=[],
                        fingerprint=Fingerprint.of(labels, files, classes))
        t0 = time.perf_counter()
        with ReinforcementWriter.open(path, header, labels, identities=files):
            pass
        write_s = time.perf_counter() - t0
        with h5py.File(path, "r") as h:
            stored, raw = h[IDENTITIES].id.get_storage_size(), h[IDENTITIES].size
        f = ReinforcementFile(path, accept_incomplete=True)
        read = median_s(f.identities, args.repeats)
        ids = f.identities()
        assert ids == files
        listing = median_s(lambda: D.dataset_files(tv), args.repeats)
        same = median_s(lambda: D.match_rows(tv, ids, f.labels, path), args.repeats)
        other = median_s(lambda: D.match_rows(tm, ids, f.labels, path), args.repeats)
        m = D.match_rows(tm, ids, f.labels, path)
        assert m.rows is not None and [files[r] for r in m.rows.tolist()] == D.dataset_files(tm)
        f.close()

    def fmt(t: tuple[float, float, float]) -> str:
        return f"{t[0]:.2f} ({t[1]:.2f}–{t[2]:.2f})"

    text = f"""# Identities at ImageNet scale: {n:,} ImageNet-like names, {classes} classes

Command: `python benchmarks/identity.py{' --quick' if args.quick else ''}`
Date: {datetime.datetime.now().isoformat(timespec='seconds')}; {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, h5py {h5py.__version__}; one process on a shared machine (times are noisy).

| what | figure |
|---|---|
| names, raw (UTF-8, `\\n`-joined) | {raw / n:.2f} bytes / image |
| `identities` as stored (deflate level 6, 1 MiB chunks) | **{stored / n:.2f} bytes / image** ({stored / 2**20:.2f} MiB) |
| creating the file with them (header, labels, identities; in memory, then written) | {write_s:.2f} s |
| `ReinforcementFile.identities()` (read, inflate, check the hash, split) | {fmt(read)} s |
| `dataset_files` of the folder listing (relative paths; the positional check computes them too) | {fmt(listing)} s |
| `match_rows`, ImageFolder's order (the mapping is the identity) | {fmt(same)} s |
| `match_rows`, timm's natural order (another permutation) | {fmt(other)} s |

Seconds: median (fastest–slowest) of {args.repeats} runs. `match_rows` includes `dataset_files` and
the labels check; `ReinforcedDataset` adds `identities()` and the 8 decodes of the image sample.
Held in each process after mapping (a permutation): two int32 arrays, {8 * n / 2**20:.1f} MiB.
"""
    publish(text, args.out)


if __name__ == "__main__":
    main()
