"""Imported apple/ml-dr files: fidelity per transform, storage, and loader speed against ml-dr's loader.

    python benchmarks/mldr.py [--photos 24] [--views 50] [--samples 300]

1. Fidelity: for each transform alone (and the mixing ones), ml-dr-style parameters on ImageNet-sized
   photos (benchmarks/_photos.py, decoded from JPEG), imported with the importer's own conversion, replayed
   by this package (compiled op, float32), against an ml-dr-style reapply built from torchvision's ops
   on the path ml-dr's generation labelled (PIL RandomResizedCrop, ToUint8, flip, tensor RandAugment,
   ToTensor, erase to 0, Normalize, MixUp then CutMix in float). Differences in uint8 levels (0-255).
2. Storage: an ml-dr source of the mixing + RandAugment + erasing configuration (views per image as given,
   top-10 of 1000 teacher-like classes), its image files and the same folder as tar.gz, against the
   imported file.
3. Loader, one core: a sample as ml-dr's loader makes it (torch.load of the image's file, one random
   sample, PIL decode, the reapply above) against ``ReinforcedDataset[i]`` on the imported file, and the
   record read alone (torch.load of the file against ``ReinforcementFile.read``).

Writes benchmarks/results/mldr.md.
"""

from __future__ import annotations

import _common  # first: this checkout's reinforced_data on sys.path

if __name__ == "__main__":  # per-core figures: pinned before torch loads (not when a test imports this module)
    _common.one_core()

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from _common import HERE, ROOT, cpu_model, publish  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))  # the ml-dr-style sources the tests build

import _mldr_util as U  # noqa: E402
from _photos import make_photos, write_image_folder  # noqa: E402

SIZE = 224
NUM_CLASSES = 1000


def _tensor(pil):
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1)


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) * torch.tensor(U.IMAGENET_STD).view(3, 1, 1) * 255).abs()


def fidelity(pils: list, views: int, seed: int = 0) -> list[tuple]:
    """Rows (transform, views, mean, p99, max, share > 1 level) of replayed vs ml-dr-style views."""
    from reinforced_data.mldr import _Converter, MldrSource, policy_from_config
    from reinforced_data import replay

    cfg = U.config("mix_ra_re", 1, size=SIZE, num_classes=NUM_CLASSES)
    policy = policy_from_config(cfg)
    conv = _Converter(policy, MldrSource("bench", cfg, 1, U.TOPK, ["random_resized_crop", "random_horizontal_flip",
                                                                  "rand_augment", "random_erase", "mixup", "cutmix"]),
                      NUM_CLASSES)
    space = __import__("torchvision").transforms.RandAugment()._augmentation_space(31, (SIZE, SIZE))
    rows = [("RandomResizedCrop + flip (PIL crop vs tensor crop)", "crop")]
    rows += [(f"RandAugment {name}", name) for name in U.RA_NAMES[1:]]
    rows += [("RandomErasing (to 0 before Normalize)", "erase"), ("MixUp (λ = Beta(1,1)/2)", "mixup"),
             ("CutMix", "cutmix"), ("MixUp then CutMix", "both")]
    out = []
    rounding: list = []
    for label, what in rows:
        rs = np.random.RandomState(seed)
        diffs, own_loader = [], []
        for i, pil in enumerate(pils):
            for _ in range(views):
                own = U._per_image(rs, pil, U.CONFIGS["mix_ra_re"], SIZE)
                own["rand_augment"] = [(0, 0.0), (0, 0.0)]
                own["random_erase"] = None
                if what in U.RA_NAMES:
                    mags, signed = space[what]
                    mag = float(mags[9].item()) if mags.ndim > 0 else 0.0
                    own["rand_augment"] = [(U.RA_NAMES.index(what), -mag if signed and rs.rand() < 0.5 else mag),
                                           (0, 0.0)]
                elif what == "erase":
                    e = None
                    while e is None:  # always erased here (the source erases with its p)
                        e = U._per_image(rs, pil, ("random_erase",), SIZE).get("random_erase")
                    own["random_erase"] = e
                per = ["random_resized_crop", "random_horizontal_flip", "rand_augment", "random_erase"]
                mixup = cutmix = None
                j = i
                if what in ("mixup", "both"):
                    mixup = rs.beta(1.0, 1.0) / 2.0
                if what in ("cutmix", "both"):
                    lam = rs.beta(1.0, 1.0)
                    c = int(SIZE * np.sqrt(1 - lam))
                    cx, cy = rs.randint(SIZE), rs.randint(SIZE)
                    cutmix = [lam, *(int(np.clip(v, 0, SIZE)) for v in (cx - c // 2, cy - c // 2, cx + c // 2,
                                                                         cy + c // 2))]
                if mixup is not None or cutmix is not None:
                    j = int(rs.randint(len(pils)))
                    other = U._per_image(rs, pils[j], U.CONFIGS["mix_ra_re"], SIZE)
                    other["rand_augment"], other["random_erase"] = [(0, 0.0), (0, 0.0)], None
                    params = [j] + [[own[t], other[t]] for t in per] + [mixup, cutmix]
                else:
                    params = [None] + [own[t] for t in per] + [None, None]
                sample = {"params": params, "prob": (list(np.linspace(0.5, 0.01, U.TOPK)), list(range(U.TOPK)))}
                rec, _, _, partner = conv.image(i, "bench", (i, [sample]))
                kw = {}
                if rec["mix_mode"][0]:
                    kw = {"partners": [_tensor(pils[int(partner[0])])], "partner_params": policy.partner_params(rec)}
                elif policy.mixing:
                    kw = {"partners": [_tensor(pil)], "partner_params": rec}
                view = replay([_tensor(pil)], rec, policy, out_dtype=torch.float32, **kw)[0]
                ref = U.mldr_reapply(pils, i, params, "mix_ra_re", SIZE)
                diffs.append(_levels(view, ref).reshape(-1))
                own_loader.append(_levels(U.mldr_reapply(pils, i, params, "mix_ra_re", SIZE, training=True),
                                          ref).reshape(-1))
                if what == "mixup":  # ml-dr's own float view rounded to uint8: the part of MixUp's row any uint8 view has
                    std = torch.tensor(U.IMAGENET_STD).view(3, 1, 1)
                    levels = (ref * std + torch.tensor(U.IMAGENET_MEAN).view(3, 1, 1)) * 255
                    rounding.append((levels.round() - levels).abs().reshape(-1))
        d = torch.cat(diffs)
        t = torch.cat(own_loader)
        out.append((label, len(diffs), float(d.mean()), float(torch.quantile(d[::7], 0.99)), float(d.max()),
                    float((d > 1.01).float().mean()), float(t.mean()), float(t.max())))
        print(f"  {label}: mean {out[-1][2]:.3f}, p99 {out[-1][3]:.2f}, max {out[-1][4]:.1f}", flush=True)
        if what == "mixup":
            r = torch.cat(rounding)
            out.append(("MixUp: ml-dr's own view rounded to uint8 (the rounding alone)", len(rounding),
                        float(r.mean()), float(torch.quantile(r[::7], 0.99)), float(r.max()),
                        float((r > 1.01).float().mean()), None, None))
    return out


def _dataset(data: str):
    """The photo folder as a 1000-class dataset (the source's teacher predicts ImageNet's classes)."""
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(data)
    ds.classes = ds.classes + [f"unused{i}" for i in range(NUM_CLASSES - len(ds.classes))]
    return ds


def storage_and_speed(root: str, data: str, images: list, pils: list, views: int, samples: int) -> dict:
    from reinforced_data import ReinforcedDataset
    from reinforced_data.mldr import import_mldr
    from reinforced_data.store import ReinforcementFile

    src = os.path.join(root, "mix_ra_re")
    shutil.rmtree(src, ignore_errors=True)
    U.make_source(src, "mix_ra_re", images, num_samples=views, size=SIZE, num_classes=NUM_CLASSES, topk=10)
    files = [os.path.join(src, f"{i}.pth.tar") for i in range(len(images))]
    src_bytes = sum(os.path.getsize(f) for f in files)
    archive = os.path.join(root, "reinforced_data.tar.gz")
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="reinforced_data")
    out = os.path.join(root, "mix_ra_re.h5")
    t0 = time.perf_counter()
    import_mldr(src, out, _dataset(data), overwrite=True, progress=False)
    import_s = time.perf_counter() - t0
    f = ReinforcementFile(out)
    records = len(images) * views
    res = {"records": records, "mldr_B": src_bytes / records, "mldr_gz_B": os.path.getsize(archive) / records,
           "ours_B": f.bytes_per_record, "import_us_per_record": import_s / records * 1e6}

    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(images), samples)
    # record read alone
    t_load, t_read = [], []
    for i in picks.tolist():
        a = time.perf_counter()
        _, s = torch.load(files[i], weights_only=False)
        _ = s[int(rng.integers(0, views))]
        t_load.append(time.perf_counter() - a)
        a = time.perf_counter()
        f.read(i, int(rng.integers(0, views)))
        t_read.append(time.perf_counter() - a)
    # whole sample
    paths = [p for p, _ in images]
    t_mldr, t_ours = [], []
    ds = ReinforcedDataset(_dataset(data), out)
    ds.set_epoch(0)
    for i in picks.tolist():
        a = time.perf_counter()
        _, s = torch.load(files[i], weights_only=False)
        params = s[int(rng.integers(0, views))]["params"]
        pil = Image.open(paths[i]).convert("RGB")
        ps = {i: pil}
        if params[0] is not None:
            ps[params[0]] = Image.open(paths[params[0]]).convert("RGB")
        U.mldr_reapply(_Lazy(ps), i, params, "mix_ra_re", SIZE)
        t_mldr.append(time.perf_counter() - a)
        a = time.perf_counter()
        ds[i]
        t_ours.append(time.perf_counter() - a)
    med = lambda v: float(np.median(v)) * 1e3  # noqa: E731
    res.update(load_ms=med(t_load), read_ms=med(t_read), mldr_ms=med(t_mldr), ours_ms=med(t_ours))
    return res


class _Lazy(dict):
    def __getitem__(self, k):
        return dict.__getitem__(self, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--fidelity-views", type=int, default=4, help="views per photo and transform")
    ap.add_argument("--views", type=int, default=50, help="views per image of the storage/speed source")
    ap.add_argument("--storage-images", type=int, default=512, help="images of the storage/speed source (the photos "
                    "repeated under other names)")
    ap.add_argument("--samples", type=int, default=300, help="timed samples")
    ap.add_argument("--root", default=os.path.join(HERE, ".data", "mldr"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "mldr.md"))
    args = ap.parse_args()
    from torchvision.datasets import ImageFolder

    data = os.path.join(args.root, "photos")
    shutil.rmtree(data, ignore_errors=True)
    write_image_folder(make_photos(args.photos, seed=0), data)
    images = list(ImageFolder(data).samples)
    pils = [Image.open(p).convert("RGB") for p, _ in images]
    print("fidelity ...", flush=True)
    fid = fidelity(pils, args.fidelity_views)
    print("storage and speed ...", flush=True)
    many = os.path.join(args.root, "photos_many")
    shutil.rmtree(many, ignore_errors=True)
    for n in range(args.storage_images):
        path, _ = images[n % len(images)]
        dst = os.path.join(many, os.path.basename(os.path.dirname(path)), f"{n:05d}.JPEG")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(path, dst)
    many_images = list(ImageFolder(many).samples)
    st = storage_and_speed(args.root, many, many_images, None, args.views, args.samples)
    lines = [
        "# Imported apple/ml-dr files (benchmarks/mldr.py)",
        "",
        f"CPU: {cpu_model()}, one thread; {args.photos} ImageNet-sized photos (benchmarks/_photos.py, JPEG), "
        f"{SIZE} px views. Timings are medians on a shared, noisy machine.",
        "",
        "## Fidelity: replayed view vs ml-dr's generation path, per transform (uint8 levels)",
        "",
        f"Each row applies one transform (after RandomResizedCrop + flip) to {args.fidelity_views} views per photo; "
        "`> 1 level` is the share of pixel values that differ by more than one level. The last two columns "
        "compare ml-dr's own training loader (dr/data.py: flip and RandAugment on the PIL image) with the same "
        "generation path, for scale.",
        "",
        "| transform | views | mean | p99 | max | > 1 level | ml-dr's training loader: mean | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, n, mean, p99, mx, big, tmean, tmax in fid:
        own = "| |" if tmean is None else f"| {tmean:.3f} | {tmax:.1f} |"
        lines.append(f"| {label} | {n} | {mean:.3f} | {p99:.2f} | {mx:.1f} | {big * 100:.2f} % {own}")
    lines += [
        "",
        "## Storage and loader speed",
        "",
        f"Source: the mixing + RandAugment + erasing configuration, {args.views} views per image, top-10 of "
        f"{NUM_CLASSES} classes, {st['records']} records. Import: {st['import_us_per_record']:.0f} us per record "
        "(one process).",
        "",
        "| | bytes / record | record read, ms | sample (read + decode + views), ms |",
        "|---|---:|---:|---:|",
        f"| ml-dr's files (`torch.load` per image file; reapply with torchvision ops) | {st['mldr_B']:.1f} "
        f"({st['mldr_gz_B']:.1f} as tar.gz) | {st['load_ms']:.3f} | {st['mldr_ms']:.2f} |",
        f"| imported file (`ReinforcementFile.read`; `ReinforcedDataset[i]`, float32) | {st['ours_B']:.1f} | "
        f"{st['read_ms']:.3f} | {st['ours_ms']:.2f} |",
        f"| ratio (ml-dr / imported) | {st['mldr_B'] / st['ours_B']:.1f}x | {st['load_ms'] / st['read_ms']:.1f}x | "
        f"{st['mldr_ms'] / st['ours_ms']:.2f}x |",
    ]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
