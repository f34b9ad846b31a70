"""The fidelity report: how close the replay is to torchvision and timm (PIL) applying the same
parameters, on a wide photo set; writes benchmarks/results/fidelity.md (and fidelity_jitter.md).

The measuring is ``benchmarks/_fidelity.py`` (which ``tests/test_fidelity.py`` imports); this script
chooses the photos, runs every case and formats the tables. The photos are three sets, measured
apart and merged: the tuning photos (``_fidelity.TUNING``: scikit-image's astronaut, chelsea, coffee
and rocket, on which the test bounds were first tuned), ImageNet-like photos (``benchmarks/_photos.py``)
and held-out photos of other kinds (``_fidelity.HELD_OUT``: other scikit-image photos, grey photos,
text, synthetic gradients with noise, saturated hues, low light; every other one JPEG-encoded at
quality 90 and cut into channels-last views as a loader decodes it). Every table is over all three;
a table per set shows where each worst case comes from.

    python benchmarks/fidelity.py --photos 24 --views 8                 # ~15-20 min on one idle core
    python benchmarks/fidelity.py --photos 24 --views 8 --part main     # without the ColorJitter tables
    python benchmarks/fidelity.py --photos 24 --views 8 --part jitter   # only the ColorJitter tables
    python benchmarks/fidelity.py --photos 24 --views 8 --part augmix   # only AugMix (fidelity_augmix.md)
"""

from __future__ import annotations

import argparse
import os
import time

import _common  # first: this checkout's reinforced_data on sys.path

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _fidelity as F  # noqa: E402  (the measuring library)
from _common import HERE, write_table  # noqa: E402
from _fidelity import ChainStat, Crop, Key, Stat, group, summary  # noqa: E402

SETS = ("tuning", "ImageNet-like", "held-out")


def jitter_table(stats: dict[Key, Stat]) -> str:
    lines = ["| adjustment | library | values identical (of swept) | share differing, worst value | max abs diff | "
             "share >= 2 apart, worst value |", "|---|---|---|---|---|---|"]
    for name in ("brightness", "contrast", "saturation", "hue"):
        for lib in ("torchvision", "timm"):
            cases = {k[3]: v for k, v in stats.items() if k[0] == lib and k[1] == name}
            if not cases:
                continue
            same = sum(v.differ == 0 for v in cases.values())
            worst = max(cases, key=lambda k: cases[k].differ / cases[k].values)
            worst2 = max(cases, key=lambda k: cases[k].differ2 / cases[k].values)
            lines.append(f"| {name} | {'torchvision v2' if lib == 'torchvision' else 'timm (v1 on PIL)'} | "
                         f"{same} of {len(cases)} | {_pct(cases[worst].differ / cases[worst].values)} at "
                         f"{worst / 65536:+.3f} | {max(v.max_abs for v in cases.values())} | "
                         f"{_pct(cases[worst2].differ2 / cases[worst2].values)} at {worst2 / 65536:+.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ tables
def _pct(v: float) -> str:
    if v == 0:
        return "0"
    return f"{100 * v:.3g} %" if v >= 1e-4 else f"{100 * v:.2g} %"


def ops_table(stats: dict[Key, Stat], label_name: str) -> str:
    lines = [f"| library | op | interpolation | {label_name}s | identical | worst {label_name} (share of values differing) "
             "| share over all | max abs diff | share differing by >= 2 | worst single crop |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (lib, op, interp), cases in group(stats).items():
        s = summary(cases)
        worst = "-" if s["worst_frac"] == 0 else f"{s['worst_label']:+} ({_pct(s['worst_frac'])})" \
            if isinstance(s["worst_label"], int) and op not in ("Posterize", "Solarize", "SolarizeAdd") \
            else f"{s['worst_label']} ({_pct(s['worst_frac'])})"
        lines.append(f"| {lib} | {op} | {interp} | {s['cases']} | {s['identical']} | {worst} | {_pct(s['all_frac'])} "
                     f"| {s['max_abs']} | {_pct(s['frac2'])} | {_pct(s['worst_crop'])} |")
    return "\n".join(lines)


def detail_lines(stats: dict[Key, Stat]) -> str:
    """Per case: share differing (max abs diff), only the cases that differ."""
    lines = []
    for (lib, op, interp), cases in group(stats).items():
        diff = [f"{label}: {_pct(st.frac)} ({st.max_abs})" for label, st in cases.items() if st.differ]
        if diff:
            lines.append(f"- {lib} {op} {interp}: " + "; ".join(diff))
    return "\n".join(lines)


def exact_table(stats: dict[Key, Stat]) -> str:
    lines = ["| op | values that differ | of those, ours equals the exact formula | torchvision equals it |",
             "|---|---|---|---|"]
    for (lib, op, interp), cases in group(stats).items():
        s = summary(cases)
        if lib == "torchvision" and op in ("Brightness", "Color", "Contrast", "Sharpness", "AutoContrast"):
            n = s["differ"]
            lines.append(f"| {op} | {n} | {s['ours_exact']} ({_pct(s['ours_exact'] / n) if n else '-'}) "
                         f"| {s['lib_exact']} ({_pct(s['lib_exact'] / n) if n else '-'}) |")
    return "\n".join(lines)


def resize_table(stats: dict[Key, Stat]) -> str:
    lines = ["| library | filter | scaling | crops | share of values differing | max abs diff | share differing by >= 2 "
             "| worst single crop |", "|---|---|---|---|---|---|---|---|"]
    for (lib, op, filt, kind), st in sorted(stats.items()):
        lines.append(f"| {lib} | {filt} | {kind} | {st.crops} | {_pct(st.frac)} | {st.max_abs} | "
                     f"{_pct(st.differ2 / st.values)} | {_pct(st.worst_frac)} |")
    return "\n".join(lines)


def chain_table(rows: list[tuple[str, ChainStat]]) -> str:
    lines = ["| chain | views | identical views | any value >= 2 apart | >= 8 | >= 32 | median share of values differing "
             "| worst view |", "|---|---|---|---|---|---|---|---|"]
    for name, st in rows:
        n = len(st.max_abs)
        lines.append(f"| {name} | {n} | {_pct(1 - st.share(1))} | {_pct(st.share(2))} | {_pct(st.share(8))} | "
                     f"{_pct(st.share(32))} | {_pct(float(np.median(st.frac)))} | {st.worst[0]}: {st.worst[1]} |")
    return "\n".join(lines)


def by_set_table(parts: dict[str, dict[Key, Stat]], per_case: bool = False) -> str:
    """Per photo set and case: the worst share of differing values (in any bin / level / value of the
    case; or, with ``per_case``, over the case itself) and the largest difference."""
    sets = list(parts)
    lines = ["| library | case | " + " | ".join(f"{s}: worst share (max abs diff)" for s in sets) + " |",
             "|---|---|" + "---|" * len(sets)]
    keys: dict = {}
    for part in parts.values():
        for k in part:
            keys.setdefault(k if per_case else k[:3], None)
    for gk in keys:
        cells = []
        for s in sets:
            sts = [st for k, st in parts[s].items() if (k if per_case else k[:3]) == gk]
            if not sts:
                cells.append("-")
                continue
            cells.append(f"{_pct(max(st.frac for st in sts))} ({max(st.max_abs for st in sts)})")
        lib, *rest = gk
        lines.append(f"| {lib} | {' '.join(str(x) for x in rest if x not in ('-', ''))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chain_by_set_table(rows: list[tuple[str, dict[str, ChainStat]]]) -> str:
    lines = ["| chain | " + " | ".join(f"{s}: views, >= 2 apart, >= 32 apart, largest share per view" for s in SETS)
             + " |", "|---|" + "---|" * len(SETS)]
    for name, parts in rows:
        lines.append(f"| {name} | " + " | ".join(
            f"{len(st.max_abs)}, {_pct(st.share(2))}, {_pct(st.share(32))}, {_pct(max(st.frac) if st.frac else 0)}"
            for st in (parts[s] for s in SETS)) + " |")
    return "\n".join(lines)


def merged_chain(parts: dict[str, ChainStat]) -> ChainStat:
    out = ChainStat()
    for st in parts.values():
        out = out.merge(st)
    return out


_TASKS: list = []


def _run_task(i: int):
    torch.set_num_threads(1)
    return _TASKS[i]()


def run_all(tasks: dict, jobs: int) -> dict:
    """``{key: task()}``; with ``jobs`` > 1 the tasks run in that many forked processes (each measurement is
    deterministic and independent of the others, so the results are the same)."""
    global _TASKS
    keys = list(tasks)
    _TASKS = [tasks[k] for k in keys]
    if jobs <= 1:
        return {k: f() for k, f in zip(keys, _TASKS)}
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return dict(zip(keys, pool.map(_run_task, range(len(keys)), chunksize=1)))


def photo_sets(n_photos: int) -> tuple[dict[str, list[Crop]], dict[str, list[Crop]]]:
    """(op crops, whole-view sources) per photo set (:data:`SETS`)."""
    from _photos import load_sources, make_photos

    named = F.skimage_photos()
    held = F.held_out_photos()
    imagenet_like = {f"photo{p.index}_{p.source}": p.tensor.permute(1, 2, 0).numpy()
                     for p in make_photos(n_photos, seed=0, sources=load_sources())}
    # RandAugment ops see the RandomResizedCrop output: 224 x 224 crops (half of them cut larger and
    # scaled down, as RRC views are), plus a few other sizes (torchvision's translate magnitudes scale
    # with the size) at the photos' own scale.
    crops = {
        "tuning": F.photo_crops(named, [(224, 224)], 4, seed=1, scaled=True)
        + F.photo_crops(named, [(160, 224), (96, 128)], 1, seed=3),
        "ImageNet-like": F.photo_crops(imagenet_like, [(224, 224)], 1, seed=2, scaled=True),
        "held-out": F.photo_crops(held, [(224, 224)], 2, seed=11, scaled=True)
        + F.photo_crops(held, [(160, 224), (96, 128)], 1, seed=13),
    }
    sources = {
        "tuning": F.photo_crops(named, [(400, 500)], 1, seed=4),
        "ImageNet-like": [Crop(n, torch.from_numpy(np.array(a)).permute(2, 0, 1).contiguous())
                          for n, a in imagenet_like.items()],
        "held-out": F.photo_crops(held, [(400, 500)], 1, seed=14),
    }
    return crops, sources


def photos_text(args, crops, sources) -> str:
    held = ", ".join(f"{n} ({k})" for n, k in F.HELD_OUT.items())
    return f"""Photos, in three sets measured apart and merged (every table below is over all three; the tables
"by photo set" show where each worst case comes from):

- **tuning**: scikit-image's {", ".join(F.TUNING)} (`_fidelity.TUNING`), the photos the test bounds
  were first tuned on: {len(crops["tuning"])} op crops, {len(sources["tuning"])} whole-view sources;
- **ImageNet-like**: {args.photos} photos of `benchmarks/_photos.py` (seeded crops of nine scikit-image photos
  at ImageNet's sizes): {len(crops["ImageNet-like"])} op crops, {len(sources["ImageNet-like"])} sources;
- **held-out**: photos of other kinds that no bound was tuned on (`_fidelity.HELD_OUT`): {held}; every other
  one (named `@q90`) JPEG-encoded at quality 90, decoded by PIL and cut into channels-last views, as a
  loader hands them over: {len(crops["held-out"])} op crops, {len(sources["held-out"])} sources.

Op crops: 224 x 224 (half of them cut larger and scaled down with PIL bicubic as a RandomResizedCrop view
is), and 160 x 224 and 96 x 128 crops at the photos' own scale. A share is over all uint8 values
(3 x H x W) of all crops of a case; "worst single crop" is the largest share on one crop."""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=24, help="ImageNet-like photos of benchmarks/_photos.py")
    ap.add_argument("--views", type=int, default=8, help="sampled views per photo in the whole-chain measurement")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fidelity.md"))
    ap.add_argument("--jitter-out", default=os.path.join(HERE, "results", "fidelity_jitter.md"))
    ap.add_argument("--augmix-out", default=os.path.join(HERE, "results", "fidelity_augmix.md"))
    ap.add_argument("--part", choices=("all", "main", "jitter", "augmix"), default="all",
                    help="'jitter': only the ColorJitter tables (written to --jitter-out); 'augmix': only AugMix "
                         "(--augmix-out); 'main': all but those")
    ap.add_argument("--jobs", type=int, default=1, help="processes measuring at once (each on one thread); the "
                    "figures do not depend on it")
    args = ap.parse_args(argv)
    import PIL
    import timm
    import torchvision

    torch.set_num_threads(1)
    t0 = time.time()
    crops, sources = photo_sets(args.photos)
    print(f"{sum(map(len, crops.values()))} op crops, {sum(map(len, sources.values()))} sources", flush=True)
    if args.part in ("all", "jitter"):
        jitter_main(args, crops, sources)
    if args.part in ("all", "augmix"):
        augmix_main(args, sources)
    if args.part in ("jitter", "augmix"):
        return
    chains = {
        "rrc_ra_re (RRC bilinear + flip + RandAugment n2 m9 nearest + erasing) vs torchvision v2":
            lambda src: F.chain_policy_rrc_ra_re(src, args.views, seed=6),
        "timm rand-m9-mstd0.5-inc1, random bilinear/bicubic, erasing 0.25 (Policy.from_timm) vs PIL on the same rows":
            lambda src: F.chain_policy_pil(F.timm_policy(), src, args.views, seed=7),
        "TrivialAugmentWide (preset trivialaugment) vs torchvision's op function at the stored bin":
            lambda src: F.chain_policy_torchvision_family("trivialaugment", src, args.views, seed=10,
                                                          output_size=(224, 224)),
        "AutoAugment(IMAGENET) (preset autoaugment) vs torchvision's op function at the stored bin":
            lambda src: F.chain_policy_torchvision_family("autoaugment", src, args.views, seed=12,
                                                          output_size=(224, 224)),
    }
    tasks = {}
    for s in SETS:
        c, src = crops[s], sources[s]
        tasks[("timm", s)] = lambda c=c: F.measure_timm_ops(c)
        # torchvision v2 refuses BICUBIC for tensor affine / rotate: bicubic geometric ops are compared with PIL only
        tasks[("ops", s)] = lambda c=c: F.measure_tv_ops(c, interps=("nearest", "bilinear"), exact=True)
    for s in SETS:
        c, src = crops[s], sources[s]
        tasks[("resize", s)] = lambda src=src: F.measure_resize(
            F.resize_cases(src, 4, [(224, 224), (160, 160), (96, 96)], seed=5), filters=("bilinear", "bicubic"))
        # torchvision's default fill (None: zero padding, no fill mixed in) on the bilinear geometric ops
        tasks[("nofill", s)] = lambda c=c: F.measure_tv_ops(c, ops=list(F.A.GEOMETRIC), bins=(4, 9, 20, 30),
                                                            interps=("bilinear",), fill=None)
        for name, fn in chains.items():
            tasks[("chain", name, s)] = lambda fn=fn, src=src: fn(src)
    res = run_all(tasks, args.jobs)
    ops_parts = {s: res[("ops", s)] for s in SETS}
    ops_stats = F.merge_stats(ops_parts.values())
    nofill_stats = F.merge_stats(res[("nofill", s)] for s in SETS)
    timm_parts = {s: res[("timm", s)] for s in SETS}
    timm_stats = F.merge_stats(timm_parts.values())
    resize_parts = {s: res[("resize", s)] for s in SETS}
    resize_stats = F.merge_stats(resize_parts.values())
    n_resize = sum(st.crops for k, st in resize_stats.items() if k[0] == "torchvision" and k[2] == "bilinear")
    chain_parts = [(name, {s: res[("chain", name, s)] for s in SETS}) for name in chains]
    chain = [(name, merged_chain(parts)) for name, parts in chain_parts]

    ref = "reference kernels"
    text = f"""# Fidelity: the replay against torchvision and timm (PIL) applying the same parameters

Written by `python benchmarks/fidelity.py{' --part main' if args.part == 'main' else ''} --photos {args.photos} --views {args.views}{f' --jobs {args.jobs}' if args.jobs > 1 else ''}` ({time.time() - t0:.0f} s).
torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, Pillow {PIL.__version__};
ours = the {ref} (`reinforced_data._reference`, which the C++ and CUDA kernels equal bit for bit),
one intra-op thread.

{photos_text(args, crops, sources)}

## RandAugment ops vs torchvision v2 (uint8 tensors, fill 0)

torchvision's own op application (`RandAugment._apply_image_or_video_transform`) at the magnitude of
each of its 31 bins, both signs, given an explicit fill of 0; ours: the row `_args.op_params` builds for that bin.

{ops_table(ops_stats, "bin")}

Where the two differ, which one equals the op's formula evaluated exactly (float64 on integers,
factor 1 + magnitude, grey `floor((2989 r + 5870 g + 1140 b) / 10000)`; AutoContrast
`floor((x - lo) * 255 / (hi - lo))`):

{exact_table(ops_stats)}

The bilinear geometric ops with torchvision's default fill (`fill=None`, as `RandAugment()` without a
fill: zero padding, no fill mixed in), bins 4, 9, 20, 30, both signs; ours with fill 0:

{ops_table(nofill_stats, "bin")}

By photo set (worst bin of each op; the share of values differing there, and the largest difference):

{by_set_table(ops_parts)}

Per bin (only bins that differ; share (max abs diff)):

{detail_lines(ops_stats)}

## timm's auto_augment ops (PIL) vs ours

timm's functions (`timm.data.auto_augment`) with the argument of each magnitude level 0..10 and both
signs (fill {F.TIMM_FILL}); ours: a row with the same argument (PIL's affine matrix in Q16, the factor in
Q16, Posterize bits 1..8, both Solarize threshold tables, SolarizeAdd threshold 128). Geometric ops with
PIL's bilinear and bicubic.

{ops_table(timm_stats, "level")}

By photo set:

{by_set_table(timm_parts)}

Per level (only levels that differ):

{detail_lines(timm_stats)}

## Resized crop

{n_resize} crops: RandomResizedCrop-like boxes (scale 0.08..1, ratio 3/4..4/3) of {sum(map(len, sources.values()))}
photos, each to 224, 160 and 96 px; "down"/"up": both axes shrink / grow, "mixed": one of each.
torchvision: `F.resized_crop(..., antialias=True)` on the uint8 tensor; timm: PIL's
`crop().resize()` as `RandomResizedCropAndInterpolation` does.

{resize_table(resize_stats)}

By photo set (share of values differing over the set's crops, and the largest difference):

{by_set_table(resize_parts, per_case=True)}

## Whole views

{args.views} sampled views per photo ({sum(map(len, sources.values()))} photos, 224 x 224 output), replayed by us and
applied by the library with the same parameters (the erase box compared outside only: inside, the
noise differs by design). torchvision: its functions with the stored record (RRC bilinear, flip,
RandAugment ops with nearest; TrivialAugmentWide / AutoAugment: its op function at the magnitude of the
stored bin in that family's table); timm: PIL (timm's functions: crop + resize with the row's filter,
`Image.transform` with the row's interpolation, ImageEnhance, ImageOps) applying the numbers of the
kernel row ours replays.

{chain_table(chain)}

By photo set:

{chain_by_set_table(chain_parts)}
"""
    write_table(text, args.out)
    print(text)


def jitter_main(args, crops: dict[str, list[Crop]], sources: dict[str, list[Crop]]) -> None:
    """The ColorJitter tables: each adjustment over JITTER_SWEEP on the op crops, and whole views."""
    import PIL
    import torchvision

    t0 = time.time()
    tvp, timmp = F.jitter_policies()
    chains = {
        "ColorJitter(0.4, 0.4, 0.4, 0.1) after RRC + flip vs torchvision v2":
            lambda src: F.chain_policy_jitter(tvp, src, args.views, seed=8),
        "the same vs torchvision v1 on PIL images": lambda src: F.chain_policy_jitter(tvp, src, args.views, seed=8, lib="pil"),
        "timm train.py defaults (ColorJitter(0.4, 0.4, 0.4), random bilinear/bicubic RRC) vs timm's path (PIL)":
            lambda src: F.chain_policy_jitter(timmp, src, args.views, seed=9, lib="pil"),
        "the same vs torchvision v2 on tensors": lambda src: F.chain_policy_jitter(timmp, src, args.views, seed=9),
    }
    tasks = {}
    for s in SETS:
        tasks[("ops", s)] = lambda c=crops[s]: F.measure_jitter_ops(c)
        for name, fn in chains.items():
            tasks[("chain", name, s)] = lambda fn=fn, src=sources[s]: fn(src)
    res = run_all(tasks, args.jobs)
    parts = {s: res[("ops", s)] for s in SETS}
    stats = F.merge_stats(parts.values())
    chain_parts = [(name, {s: res[("chain", name, s)] for s in SETS}) for name in chains]
    chain = [(name, merged_chain(p)) for name, p in chain_parts]
    n_crops, n_sources = sum(map(len, crops.values())), sum(map(len, sources.values()))
    text = f"""# Fidelity of ColorJitter: the replay against torchvision and timm (PIL) with the same parameters

Written by `python benchmarks/fidelity.py --part jitter --photos {args.photos} --views {args.views}{f' --jobs {args.jobs}' if args.jobs > 1 else ''}` ({time.time() - t0:.0f} s).
torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}; ours = the reference
kernels (`reinforced_data._reference`, which the C++ and CUDA kernels equal bit for bit), one intra-op thread.

{photos_text(args, crops, sources)}

## Each adjustment alone

{n_crops} op crops (as in fidelity.md). Ours: the kernel op at the stored value (factor in Q16, hue in 1/65536
of a turn); torchvision v2: `F.adjust_*` on the uint8 tensor at that value; timm's path: torchvision v1's
`F.adjust_*` on the PIL image (ImageEnhance; PIL's 8-bit HSV for hue). Swept: brightness and contrast
0.6 .. 1.4, saturation 0 .. 2, hue -0.5 .. 0.5 (_fidelity.JITTER_SWEEP). A share is over all uint8 values of
all crops at one value.

{jitter_table(stats)}

By photo set (worst swept value; share of values differing there, and the largest difference):

{by_set_table(parts)}

## Whole views

{args.views} sampled views per photo ({n_sources} photos, 224 x 224 output), replayed by us and by the
library with the same record (crop, flip, the adjustments in the stored order).

{chain_table(chain)}

By photo set:

{chain_by_set_table(chain_parts)}
"""
    write_table(text, args.jitter_out)
    print(text)


def augmix_main(args, sources: dict[str, list[Crop]]) -> None:
    """The AugMix tables: whole AugMix stages (our crop in, the view out) against the libraries' own transforms
    with their draws forced to the stored records."""
    import PIL
    import timm
    import torchvision

    from reinforced_data._ops import compiled_available

    t0 = time.time()
    backend = "compiled" if compiled_available() else "reference"
    policies = F.augmix_policies()
    tasks = {}
    for s in SETS:
        for i, (name, pol) in enumerate(policies.items()):
            tasks[(name, s)] = lambda pol=pol, src=sources[s], i=i: F.chain_policy_augmix(pol, src, args.views,
                                                                                          seed=20 + i, backend=backend)
    res = run_all(tasks, args.jobs)
    parts = [(name, {s: res[(name, s)] for s in SETS}) for name in policies]
    merged = [(name, merged_chain(p)) for name, p in parts]
    held = [(name, p["held-out"]) for name, p in parts]
    n_sources = sum(map(len, sources.values()))
    text = f"""# Fidelity of AugMix: the replay against torchvision's and timm's AugMix with the same draws

Written by `python benchmarks/fidelity.py --part augmix --photos {args.photos} --views {args.views}{f' --jobs {args.jobs}' if args.jobs > 1 else ''}` ({time.time() - t0:.0f} s).
torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, Pillow {PIL.__version__}; ours =
the {backend} kernels (equal to the reference bit for bit: tests/test_augmix.py), one intra-op thread.

{args.views} sampled views per photo ({n_sources} photos of the three sets of fidelity.md, 224 x 224 output). Each view's
AugMix stage alone: both sides start from our crop (the record's crop and flip, whose closeness fidelity.md
measures); ours replays the record (chains through the kernel ops, the Q15 integer blend); theirs is the
library's own transform (torchvision v1 `AugMix.forward` on the uint8 tensor; timm's `AugMixAugment` on the
PIL image) with its random draws answered from the record (benchmarks/_fidelity.py: `torchvision_augmix_view`,
`timm_augmix_view`), so it runs its own op functions, float chain sums and blends. The differences are the
ops' (fidelity.md's per-op tables: e.g. nearest shears' rounding ties, bilinear geometric ops, PIL's Color and
affine resampling), weighted by the chain weights, plus at most 1 from the blend's arithmetic
(tests/test_augmix.py::test_blend_formulas_against_the_libraries_float_arithmetic).

## All photo sets

{chain_table(merged)}

## Held-out photos only

{chain_table(held)}

## By photo set

{chain_by_set_table(parts)}
"""
    write_table(text, args.augmix_out)
    print(text)


if __name__ == "__main__":
    main()
