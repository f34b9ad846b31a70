#!/usr/bin/env python
"""Per-core CPU throughput of replaying stored augmentations, beside torchvision and timm.

Every pipeline turns the same ImageNet-like photos (benchmarks/_photos.py, built from
scikit-image's sample photos) into float32, normalised 224x224 training views with
RandomResizedCrop + horizontal flip + RandAugment(n=2, m=9) + RandomErasing(p=0.25):

  ours, compiled   replay(sources, params, Policy.preset("rrc_ra_re"), out_dtype=float32,
                   backend="compiled") on batches of --batch views, parameters sampled
                   beforehand (sampling is timed on its own and reported per view)
  ours, reference  the same on the pure-PyTorch reference backend (fewer views)
  torchvision v2   Compose([RandomResizedCrop(224, antialias=True), RandomHorizontalFlip(),
                   RandAugment(2, 9), ToDtype(float32, scale=True), Normalize, RandomErasing(0.25)])
                   on uint8 tensors, one image per call
  timm             create_transform(224, is_training=True, auto_augment="rand-m9-n2-inc1",
                   re_prob=0.25) on PIL images, one image per call

Tensor sources come in the layout a loader produces, with a row per layout:
  channels-last    torch.from_numpy(np.asarray(pil)).permute(2, 0, 1), strides (1, 3W, 3): what
                   PIL-based loaders and torchvision.io.decode_jpeg hand out (checked at start)
  contiguous       the same pixels copied to contiguous CHW

All of it runs on one core: OMP/MKL threads and torch's intra- and inter-op threads are
set to 1 (Pillow is single-threaded here). Decoding is not timed: sources are decoded
in memory beforehand. Each repeat runs every pipeline once, in a rotating order, on the
same workload (torch/random are re-seeded per repeat); a row reports the median over
repeats of the mean ms per view. See benchmarks/README.md.

    python benchmarks/replay.py                 # full run, writes benchmarks/results/replay_cpu.md
    python benchmarks/replay.py --quick         # smoke test (< 60 s)
"""

from __future__ import annotations

import os

# Per-core numbers: pin every thread pool to one thread before torch / numpy load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Benchmark the checkout this script lives in (its in-place build of reinforced_data._C),
# and find the sibling _photos module whether run as a script or with -m.
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import one_torch_thread, write_table  # noqa: E402

one_torch_thread()

import _photos  # noqa: E402

with warnings.catch_warnings():
    # replay warns at import when the compiled op is missing; this script reports it itself.
    warnings.simplefilter("ignore", RuntimeWarning)
    _replay_mod = importlib.import_module("reinforced_data._replay")
from reinforced_data import _args  # noqa: E402
from reinforced_data.policy import Policy  # noqa: E402

TARGET_MS = 0.35  # ours, compiled, float32 output, ms per view on one core
TARGET_X_TIMM = 5.0
DEFAULT_OUT = os.path.join(HERE, "results", "replay_cpu.md")
QUICK_OUT = os.path.join(HERE, ".data", "replay_cpu_quick.md")  # gitignored


# ----------------------------------------------------------------------------- setup
def compiled_status() -> tuple[bool, str]:
    """(available, reason if not)."""
    if _replay_mod.compiled_available():
        return True, ""
    why = getattr(_replay_mod, "_COMPILED_ERROR", None) or "unknown reason"
    pkg = os.path.dirname(_replay_mod.__file__)
    return False, (f"{why} (reinforced_data imported from {pkg}; build the op in place with "
                   "`pip install --no-build-isolation -e .` from the repository root)")


def cpu_model() -> str:
    """The CPU's model name, with family/model numbers and the vector ISA the kernels can use
    (a virtual machine may report only a generic name)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    isa = "AVX2" if "avx2" in flags else "no AVX2 (baseline kernels)"
    extra = ", ".join(x for x in (f"family {info['cpu family']}" if "cpu family" in info else "",
                                  f"model {info['model']}" if "model" in info else "",
                                  "AVX-512" if "avx512f" in flags else "") if x)
    hyper = " under a hypervisor" if "hypervisor" in flags else ""
    return f"{info.get('model name', platform.machine())} ({extra}{hyper}; the kernels run their {isa} build)"


def versions() -> str:
    import PIL
    import timm
    import torchvision

    return (f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
            f"Pillow {PIL.__version__}, numpy {np.__version__}, Python {platform.python_version()}")


@dataclass
class Row:
    """One table row: per-repeat mean ms per view, or why it could not run."""

    name: str
    io: str
    views: int = 0
    ms: list[float] = field(default_factory=list)  # wall-clock ms per view, per repeat
    cpu_ms: list[float] = field(default_factory=list)  # this thread's CPU ms per view, per repeat
    util: list[float] = field(default_factory=list)  # process CPU time / wall time, per repeat
    error: str = ""
    stage: bool = False  # an indented stage of the row above it (no views/s, no ratio)

    @property
    def median(self) -> float | None:
        return statistics.median(self.ms) if self.ms else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_ms) if self.cpu_ms else None


@dataclass
class Pipeline:
    """``run()`` processes the pipeline's whole workload once; returns {row name: (wall s, thread CPU s)}."""

    name: str
    rows: list[Row]
    run: Callable[[], dict[str, float]]


def _clock() -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds)."""
    return time.perf_counter(), time.thread_time()


def _elapsed(t0: tuple[float, float], t1: tuple[float, float] | None = None) -> tuple[float, float]:
    t1 = t1 or _clock()
    return t1[0] - t0[0], t1[1] - t0[1]


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


LAYOUTS = {  # row label -> how the uint8 [3, H, W] tensor source is laid out
    "channels-last sources": "uint8 HWC view",
    "contiguous sources": "uint8 CHW",
}


def loader_layout(photo) -> torch.Tensor:
    """The photo as a PIL-based loader hands it over: a channels-last view, strides (1, 3W, 3)."""
    return torch.from_numpy(np.array(photo.pil)).permute(2, 0, 1)


def check_decoder_layout() -> str:
    """Whether torchvision.io.decode_jpeg gives the channels-last layout that loader_layout() gives."""
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError as e:
        return f"not checked ({e})"
    x = torch.zeros(3, 6, 10, dtype=torch.uint8)
    dec = decode_jpeg(encode_jpeg(x)).stride()
    from PIL import Image

    cl = loader_layout(type("P", (), {"pil": Image.new("RGB", (10, 6))})()).stride()
    return f"decode_jpeg strides {dec}, PIL→numpy→permute {cl} for a 6x10 image" + \
        ("" if dec == cl else " (DIFFERENT)")


def build_pipelines(photos, params, policy: Policy, args, compiled_ok: bool, compiled_why: str,
                    seed: int) -> list[Pipeline]:
    n_src = len(photos)
    mean, std = list(policy.mean), list(policy.std)
    oh, ow = policy.output_size
    pipes: list[Pipeline] = []
    sources = {"channels-last sources": [loader_layout(p) for p in photos],
               "contiguous sources": [p.tensor for p in photos]}
    for p, t in zip(photos, sources["channels-last sources"]):
        assert t.stride() == (1, 3 * p.size[1], 3) and torch.equal(t, p.tensor)

    def view_batches(n_views, layout):
        """Batches of (source tensors, their sizes, param records) for views 0..n_views-1.

        View i is view i // n_src of source i % n_src, so a batch mixes distinct sources
        (as a shuffled loader would) and the workload is the same for every backend.
        """
        out = []
        for r in _batches(n_views, args.batch):
            recs = np.stack([params[i % n_src][i // n_src] for i in r])
            out.append(([sources[layout][i % n_src] for i in r], [photos[i % n_src].size for i in r], recs))
        return out

    # -- ours ---------------------------------------------------------------------
    def ours(backend: str, n_views: int, label: str, layout: str):
        batches = view_batches(n_views, layout)
        f32 = Row(f"ours, {label}, {layout}", f"{LAYOUTS[layout]} → float32", n_views)
        u8 = Row(f"ours, {label}, uint8 output, {layout}", f"{LAYOUTS[layout]} → uint8", n_views)
        stages = [Row("↳ encode params (host, numpy)", "", n_views, stage=True),
                  Row("↳ augment (crop+resize, flip, RA, erase)", "→ uint8", n_views, stage=True),
                  Row("↳ normalize (LUT)", "uint8 → float32", n_views, stage=True)]
        unavailable = backend == "compiled" and not compiled_ok
        for r in (f32, u8, *stages):
            r.error = compiled_why if unavailable else ""
        if unavailable:
            return [Pipeline(f32.name, [f32, u8, *stages], lambda: {})]
        lut = _args.normalize_lut(policy, torch.float32)

        def run_f32():
            t = _clock()
            for imgs, _, recs in batches:
                _replay_mod.replay(imgs, recs, policy, out_dtype=torch.float32, backend=backend)
            return {f32.name: _elapsed(t)}

        def run_u8():
            t = _clock()
            for imgs, _, recs in batches:
                _replay_mod.replay(imgs, recs, policy, out_dtype=torch.uint8, backend=backend)
            return {u8.name: _elapsed(t)}

        def run_stages():
            # replay()'s own steps, timed apart (it also validates inputs; that is not counted here).
            acc = np.zeros((3, 2))
            for imgs, sizes, recs in batches:
                t0 = _clock()
                rows = _args.encode(recs, policy, sizes)
                t1 = _clock()
                views = _replay_mod.augment(imgs, rows, oh, ow, backend)
                t2 = _clock()
                _replay_mod.normalize(views, lut, False, backend)
                t3 = _clock()
                acc += [_elapsed(t0, t1), _elapsed(t1, t2), _elapsed(t2, t3)]
            return {s.name: tuple(a) for s, a in zip(stages, acc)}

        return [Pipeline(f32.name, [f32], run_f32), Pipeline(u8.name, [u8], run_u8),
                Pipeline(f32.name + " (stages)", stages, run_stages)]

    cl_pipes = ours("compiled", args.views, "compiled (C++)", "channels-last sources")
    pipes += cl_pipes  # float32, uint8 and the stages of float32
    pipes += ours("compiled", args.views, "compiled (C++)", "contiguous sources")[:2]
    pipes.append(ours("reference", args.ref_views, "reference (pure PyTorch)", "channels-last sources")[0])

    # -- torchvision v2 ------------------------------------------------------------
    import torchvision.transforms.v2 as T

    tv = T.Compose([
        T.RandomResizedCrop(224, antialias=True), T.RandomHorizontalFlip(),
        T.RandAugment(num_ops=2, magnitude=9), T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std), T.RandomErasing(p=0.25),
    ])
    def torchvision_pipeline(layout: str) -> Pipeline:
        row = Row(f"torchvision v2, {layout}", f"{LAYOUTS[layout]} → float32", args.views)
        inputs = [sources[layout][i % n_src] for i in range(args.views)]

        def run_tv():
            torch.manual_seed(seed)
            random.seed(seed)
            t = _clock()
            for x in inputs:
                tv(x)
            return {row.name: _elapsed(t)}

        return Pipeline(row.name, [row], run_tv)

    pipes += [torchvision_pipeline(layout) for layout in LAYOUTS]

    # -- timm ---------------------------------------------------------------------
    from timm.data import create_transform

    tm = create_transform(224, is_training=True, auto_augment="rand-m9-n2-inc1", re_prob=0.25)
    timm_row = Row("timm", "PIL → float32", args.views)
    timm_inputs = [photos[i % n_src].pil for i in range(args.views)]

    def run_timm():
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        t = _clock()
        for x in timm_inputs:
            tm(x)
        return {timm_row.name: _elapsed(t)}

    pipes.append(Pipeline(timm_row.name, [timm_row], run_timm))

    # -- collation, for reference: per-image pipelines still have to batch their views
    coll_row = Row(f"(info) torch.stack of {args.batch} float32 views", "collate, per view", args.views)
    coll_views = [torch.zeros(3, oh, ow) for _ in range(args.batch)]
    n_coll = len(_batches(args.views, args.batch))

    def run_collate():
        t = _clock()
        for _ in range(n_coll):
            torch.stack(coll_views)
        return {coll_row.name: _elapsed(t)}

    pipes.append(Pipeline(coll_row.name, [coll_row], run_collate))
    return pipes


# --------------------------------------------------------------------------- measuring
def time_sampling(policy: Policy, photos, k: int, repeats: int, seed: int) -> tuple[float, float]:
    """Median over repeats of (wall, CPU) µs per view to sample ``k`` views of each source per call."""
    wall, cpu = [], []
    for _ in range(repeats):
        rng = np.random.default_rng(seed)
        t = _clock()
        for p in photos:
            policy.sample(rng, k, *p.size)
        w, c = _elapsed(t)
        wall.append(w / (k * len(photos)) * 1e6)
        cpu.append(c / (k * len(photos)) * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def check_bit_exact(photos, params, policy: Policy, n: int) -> str:
    """Compare compiled replay from both source layouts with the reference on the first ``n``
    views (uint8 and float32)."""
    n_src = len(photos)
    imgs = [photos[i % n_src].tensor for i in range(n)]
    cl = [loader_layout(photos[i % n_src]) for i in range(n)]
    recs = np.stack([params[i % n_src][i // n_src] for i in range(n)])
    bad = []
    for dt, src in ((torch.uint8, imgs), (torch.float32, imgs), (torch.uint8, cl), (torch.float32, cl)):
        a = _replay_mod.replay(src, recs, policy, out_dtype=dt, backend="compiled")
        b = _replay_mod.replay(imgs, recs, policy, out_dtype=dt, backend="reference")
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            diff = (a.shape == b.shape) and int((a != b).sum())
            bad.append(f"{str(dt).replace('torch.', '')} ({'contiguous' if src is imgs else 'channels-last'}): {diff} of {b.numel()} values differ"
                       if diff is not False else f"{dt}: shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
    return "yes" if not bad else "NO (" + "; ".join(bad) + ")"


def measure(pipes: list[Pipeline], repeats: int) -> None:
    # Warm-up: one untimed pass each (lookup tables, first-call dispatch, allocator).
    for p in pipes:
        if p.rows[0].error:
            continue
        log(f"warm-up: {p.name}")
        try:
            p.run()
        except Exception as e:  # report, don't crash: the other rows are still worth having
            for r in p.rows:
                r.error = f"failed: {type(e).__name__}: {e}"
    live = [p for p in pipes if not p.rows[0].error]
    for rep in range(repeats):
        t0 = time.perf_counter()
        k = rep % len(live) if live else 0
        for p in live[k:] + live[:k]:  # rotate the order so slow drifts hit every pipeline alike
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            secs = p.run()
            cpu = (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)
            for r in p.rows:
                wall_s, cpu_s = secs[r.name]
                r.ms.append(wall_s / r.views * 1e3)
                r.cpu_ms.append(cpu_s / r.views * 1e3)
                r.util.append(cpu)
        log(f"repeat {rep + 1}/{repeats} done in {time.perf_counter() - t0:.1f} s")


def _loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- report
def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def table(rows: list[Row], timm: Row | None) -> str:
    out = ["| pipeline | input → output | views × repeats | ms/view (median) | min–max | CPU ms/view | views/s "
           "| × timm speed (wall / CPU) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    have_timm = timm is not None and not timm.error and timm.ms
    for r in rows:
        if r.error:
            out.append(f"| {r.name} | {r.io} | — | unavailable | — | — | — | — |")
            continue
        med = r.median
        spread = f"{min(r.ms):.3f}–{max(r.ms):.3f}" if med < 10 else f"{min(r.ms):.1f}–{max(r.ms):.1f}"
        info = r.stage or r.name.startswith("(info)")
        vps = "" if info else f"{1e3 / med:,.0f}"
        ratio = ("" if info or not have_timm else
                 f"{timm.median / med:.2f}× / {timm.cpu_median / r.cpu_median:.2f}×")
        out.append(f"| {r.name} | {r.io} | {r.views} × {len(r.ms)} | {fmt_ms(med)} | {spread} "
                   f"| {fmt_ms(r.cpu_median)} | {vps} | {ratio} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=None,
                    help="views per repeat for compiled, torchvision and timm (default 1024; --quick: 64)")
    ap.add_argument("--ref-views", type=int, default=None,
                    help="views per repeat for the slow reference backend (default views/8, at least one batch)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; --quick: 2)")
    ap.add_argument("--sources", type=int, default=None,
                    help="distinct source photos, cycled over the views (default 64; --quick: 16)")
    ap.add_argument("--batch", type=int, default=32, help="views per replay() call (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test run (well under 60 s)")
    ap.add_argument("--machine-note", default="",
                    help="a sentence about the machine for the results file (e.g. that it is shared)")
    ap.add_argument("--out", default=None,
                    help=f"markdown file to write (default {os.path.relpath(DEFAULT_OUT, ROOT)}; "
                         f"with --quick {os.path.relpath(QUICK_OUT, ROOT)}, so smoke tests never "
                         "overwrite the recorded results)")
    args = ap.parse_args(argv)
    q = args.quick
    args.views = args.views or (64 if q else 1024)
    args.repeats = args.repeats or (2 if q else 5)
    args.sources = args.sources or (16 if q else 64)
    if args.ref_views is None:
        args.ref_views = 16 if q else max(args.batch, args.views // 8)
    args.ref_views = min(args.ref_views, args.views)
    out_path = args.out or (QUICK_OUT if q else DEFAULT_OUT)
    for name in ("views", "ref_views", "repeats", "sources", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if argv is None else "benchmarks/replay.py",
                                      *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    load_start = _loadavg()
    seed = args.seed
    torch.manual_seed(seed)
    random.seed(seed)

    log(f"building {args.sources} photos from scikit-image samples")
    photos = _photos.make_photos(args.sources, seed=seed)
    policy = Policy.preset("rrc_ra_re")
    per_src = -(-args.views // len(photos))  # views per source (ceil)
    rng = np.random.default_rng(seed)
    params = [policy.sample(rng, per_src, *p.size) for p in photos]

    compiled_ok, compiled_why = compiled_status()
    if not compiled_ok:
        log(f"compiled op UNAVAILABLE: {compiled_why}")

    sample_k = time_sampling(policy, photos, per_src, args.repeats, seed)
    sample_1 = time_sampling(policy, photos, 1, args.repeats, seed)

    exact = "not checked (compiled op unavailable)"
    if compiled_ok:
        n_check = min(args.views, 8 if q else 32)
        try:
            exact = check_bit_exact(photos, params, policy, n_check) + f" ({n_check} views)"
        except Exception as e:
            exact = f"check failed: {type(e).__name__}: {e}"
        log(f"compiled == reference, bit for bit: {exact}")

    pipes = build_pipelines(photos, params, policy, args, compiled_ok, compiled_why, seed)
    measure(pipes, args.repeats)
    rows = [r for p in pipes for r in p.rows]
    # Order the table: compiled float32, its stages, compiled uint8, reference, baselines, info.
    by = {r.name: r for r in rows}
    order = ["ours, compiled (C++), channels-last sources", "↳ encode params (host, numpy)",
             "↳ augment (crop+resize, flip, RA, erase)", "↳ normalize (LUT)",
             "ours, compiled (C++), contiguous sources",
             "ours, compiled (C++), uint8 output, channels-last sources",
             "ours, compiled (C++), uint8 output, contiguous sources",
             "ours, reference (pure PyTorch), channels-last sources",
             "torchvision v2, channels-last sources", "torchvision v2, contiguous sources", "timm"]
    rows = [by[n] for n in order if n in by] + [r for r in rows if r.name not in order]
    timm = by.get("timm")
    ours = by.get("ours, compiled (C++), channels-last sources")
    ours_contiguous = by.get("ours, compiled (C++), contiguous sources")

    # --- one core really? (process CPU time over wall time; > 1 means other threads worked too)
    multi = [f"{r.name} ({max(r.util):.2f})" for r in rows if r.util and not r.stage and max(r.util) > 1.15]
    cores = ("Single-core check (process CPU time / wall time ≤ 1.15 in every repeat): "
             + ("ok." if not multi else "FAILED for " + ", ".join(multi) + ": these rows used more than one core."))

    # --- verdict: wall-clock and CPU time (they agree on an idle machine; on a busy one the
    # wall clock also counts time spent waiting for the core)
    if ours is None or ours.error or not ours.ms:
        verdict = [f"Target (ours, compiled, float32 ≤ {TARGET_MS} ms/view and ≥ {TARGET_X_TIMM:g}× timm): "
                   "NOT MEASURED: the compiled op is unavailable (see above)."]
    else:
        def yes(ok):
            return "MET" if ok else "NOT MET"
        verdict = [
            f"Target ≤ {TARGET_MS} ms/view (ours, compiled, float32, channels-last sources): wall clock {yes(ours.median <= TARGET_MS)} "
            f"({ours.median:.3f} ms), CPU time {yes(ours.cpu_median <= TARGET_MS)} ({ours.cpu_median:.3f} ms).",
        ]
        if timm is not None and timm.ms:
            xw, xc = timm.median / ours.median, timm.cpu_median / ours.cpu_median
            verdict.append(
                f"Target ≥ {TARGET_X_TIMM:g}× timm's speed on this machine: wall clock {yes(xw >= TARGET_X_TIMM)} "
                f"({xw:.2f}×; timm {timm.median:.3f} ms), CPU time {yes(xc >= TARGET_X_TIMM)} "
                f"({xc:.2f}×; timm {timm.cpu_median:.3f} ms).")
        if ours_contiguous is not None and ours_contiguous.ms:
            verdict.append(
                "Channels-last sources cost "
                f"{ours.cpu_median / ours_contiguous.cpu_median:.2f}× the CPU time of contiguous ones "
                f"({ours.cpu_median:.3f} vs {ours_contiguous.cpu_median:.3f} ms/view): the kernel reads "
                "both layouts in place.")

    load = f"Load average (1/5/15 min) at start {load_start}, at end {_loadavg()}."
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sizes = sorted({p.size for p in photos})
    lines = [
        "# Replay throughput, CPU, one core",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs visible, {platform.system()} {platform.release()}; "
        f"{versions()}; threads=1 (torch intra/inter-op, OMP, MKL); {now}. {load} "
        f"{args.machine_note}".rstrip(),
        "",
        f"Command: `{command}`{' (quick smoke-test run: too few views for reliable numbers)' if q else ''}",
        "",
        f"Workload: {len(photos)} ImageNet-like photos ({len({p.source for p in photos})} scikit-image sources, "
        f"sizes from {min(h * w for h, w in sizes) / 1e3:.0f} to {max(h * w for h, w in sizes) / 1e3:.0f} kpixel, "
        "mostly 375x500 / 500x375 / 333x500), decoded in memory beforehand, cycled over the views; "
        "tensor sources in the layout a loader hands over (channels-last sources: "
        "`torch.from_numpy(np.asarray(pil)).permute(2, 0, 1)`; "
        f"{check_decoder_layout()}) and, for comparison, as contiguous CHW copies; "
        f"224x224 output; policy `rrc_ra_re` (RandomResizedCrop, flip, RandAugment n=2 m=9, RandomErasing p=0.25); "
        f"ours in batches of {args.batch} views per replay() call, torchvision and timm one image per call. "
        f"ms/view is the median over {args.repeats} repeats of each repeat's mean; min–max is over repeats.",
        "",
        f"Compiled op: {'available' if compiled_ok else 'UNAVAILABLE: ' + compiled_why}. "
        f"Compiled == reference, bit for bit: {exact}.",
        "",
        table(rows, timm),
        "",
        f"Parameter sampling (`Policy.sample`, excluded from the rows above), wall (CPU) µs per view: "
        f"{sample_k[0]:.1f} ({sample_k[1]:.1f}) drawing {per_src} views of a photo per call, "
        f"{sample_1[0]:.1f} ({sample_1[1]:.1f}) drawing 1 view per call.",
        "",
        *[f"- {v}" for v in verdict],
        f"- {cores}",
        "",
        "Notes: the per-image baselines return unbatched views; batching them costs the (info) row "
        "on top, which is not added to their numbers. timm's RandAugment applies each of its 2 ops with "
        "probability 0.5 (and different op set), torchvision's and ours always apply both. "
        "The stage rows split ours as replay() runs it; their sum can differ slightly from the "
        "float32 row (replay also checks its inputs). CPU ms/view is this thread's CPU time: on an idle "
        "machine it equals the wall clock; on a busy one the wall clock also counts time spent waiting "
        "for the core, and the CPU column is the fairer per-core figure. On a shared machine, compare "
        "rows of one run, not runs.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_table(text, out_path)
    log(f"wrote {out_path} ({time.perf_counter() - t_start:.1f} s in all)")

    if not compiled_ok and os.environ.get("REINFORCED_DATA_REQUIRE_COMPILED") == "1":
        log("REINFORCED_DATA_REQUIRE_COMPILED=1 but the compiled op is unavailable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
