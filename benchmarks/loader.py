#!/usr/bin/env python
"""DataLoader throughput over a JPEG ImageFolder: ReinforcedDataset beside timm, torchvision and decode+resize.

Every pipeline reads the same ImageNet-like JPEG folder (benchmarks/_photos.py: 1,024
crops of scikit-image's sample photos, mostly 500x375, quality 90, one class per source
photo) through a ``torch.utils.data.DataLoader`` (batch 64, shuffled, ``drop_last``) and
yields 224x224 training batches:

  (a) ours      ReinforcedDataset(ImageFolder(root), file) over a reinforcement file of
                Policy.preset("rrc_ra_re") records (RandomResizedCrop, flip, RandAugment
                n=2 m=9, RandomErasing p=0.25); float32 normalised output, and uint8
  (b) timm      ImageFolder(root, create_transform(224, is_training=True,
                auto_augment="rand-m9-n2-inc1", re_prob=0.25)), hard labels
  (c) tv v2     torchvision.io decode to a uint8 tensor, then v2 RandomResizedCrop(224,
                antialias=True), RandomHorizontalFlip, RandAugment(2, 9), ToDtype(float32,
                scale=True), Normalize, RandomErasing(0.25)
  (d) resize    decode (PIL, as ImageFolder does) and resize to 224x224, nothing else;
                uint8, and float32 normalised
  (e) tv.io     decode with torchvision.io to a uint8 tensor and resize to 224x224 with
                v2.functional.resize(antialias=True), nothing else: the fastest plain
                loader (the bound the ≥ 0.9× targets compare against); uint8, and float32

for num_workers 0, 1 and 2 side by side in one run. Each worker (and the main process)
runs torch with one intra-op thread, so a worker is one core's work. The reinforcement
file is made once (cached) by reinforce() with a tiny, cheap teacher: its labels are
meaningless, and a label's quality does not change what reading and replaying costs.

Each configuration gets its own DataLoader with persistent workers. ``--warmup`` untimed
batches warm it up (worker start, first-touch allocations). Then ``--repeats`` timed
epochs, every repeat running every configuration once in a rotating order; the workers'
memory is read after the first. A timed epoch is ``--batches`` batches drawn from a new
permutation of the folder, timed from ``iter()`` to its last batch. Beside the wall
clock, the CPU time of the main process and its workers (/proc/<pid>/stat) per image: on
a busy shared machine the wall clock also counts time spent waiting for a core, and CPU
time is the fairer per-core figure.

    python benchmarks/loader.py                 # full run, writes benchmarks/results/loader.md + .png
    python benchmarks/loader.py --quick         # smoke test (16 images), writes benchmarks/.data/loader_quick.md
"""

from __future__ import annotations

import os

# One thread per process (main and DataLoader workers): set before torch / numpy load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any, Callable  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):  # this checkout's reinforced_data, and the sibling _photos module
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Sampler  # noqa: E402

import _photos  # noqa: E402
from _results import cpu_model, one_torch_thread, write_table  # noqa: E402

one_torch_thread()

DEFAULT_OUT = os.path.join(HERE, "results", "loader.md")
QUICK_OUT = os.path.join(HERE, ".data", "loader_quick.md")  # gitignored
DEFAULT_DATA = os.path.join(HERE, ".data")
TARGET_X_TIMM = 3.0  # (a) uint8 images/s over (b)'s, per core
TARGET_X_TIMM_F32 = 2.0  # (a) float32 images/s over (b)'s, per core
TARGET_X_RESIZE = 0.9  # (a) images/s over (e)'s (same output dtype), per core
POLICY = "rrc_ra_re"


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[loader {time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the file
class CheapTeacher(nn.Module):
    """Average-pool to 4x4, then one linear layer: a classifier that costs next to nothing.

    Its labels mean nothing; the benchmark measures reading and replaying, which do not
    depend on what the labels say (top-k indices and probabilities take the same bytes).
    """

    def __init__(self, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(3 * 16, num_classes)
        with torch.no_grad():
            for p in self.fc.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(x.float(), 4).flatten(1))


def reinforcement_file(root: str, path: str, num_views: int, topk: int, seed: int) -> tuple[str, float | None]:
    """``path`` as a complete reinforcement file of ``root``; (path, seconds to write it, or None if reused)."""
    from torchvision.datasets import ImageFolder

    from reinforced_data._datasets import dataset_fingerprint
    from reinforced_data.errors import ReinforcedDataError
    from reinforced_data.policy import Policy
    from reinforced_data.generation import reinforce
    from reinforced_data.store import ReinforcementFile

    ds = ImageFolder(root)
    if os.path.exists(path):
        try:
            with ReinforcementFile(path) as f:
                f.check_dataset(dataset_fingerprint(ds))
                if (f.num_views, f.topk, f.header.seed) == (num_views, topk, seed) and \
                        f.policy.to_dict() == Policy.preset(POLICY).to_dict():
                    return path, None
        except (ReinforcedDataError, OSError) as e:
            log(f"rewriting {path}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    t = time.perf_counter()
    reinforce(ds, CheapTeacher(len(ds.classes), seed), path, policy=POLICY, num_views=num_views, topk=topk,
              seed=seed, device="cpu", progress=False, overwrite=True)
    return path, time.perf_counter() - t


def read_latency(path: str, reads: int, seed: int) -> dict[str, float]:
    """Median / p90 µs of ReinforcementFile.read(i, view) and median µs of read_image(i), random rows, warm handle."""
    from reinforced_data.store import ReinforcementFile

    rng = np.random.default_rng(seed)
    with ReinforcementFile(path) as f:
        n, k = f.num_images, f.num_views
        idx, views = rng.integers(0, n, reads), rng.integers(0, k, reads)
        for i in range(min(reads, 50)):  # open the handle, warm the code paths
            f.read(int(idx[i]), int(views[i]))
        one, whole = [], []
        for i, v in zip(idx.tolist(), views.tolist()):
            t = time.perf_counter_ns()
            f.read(i, v)
            one.append(time.perf_counter_ns() - t)
        for i in idx[: max(1, reads // 4)].tolist():
            t = time.perf_counter_ns()
            f.read_image(i)
            whole.append(time.perf_counter_ns() - t)
        bpr = f.bytes_per_record
    return {"read_us": statistics.median(one) / 1e3, "read_p90_us": float(np.percentile(one, 90)) / 1e3,
            "read_image_us": statistics.median(whole) / 1e3, "bytes_per_record": bpr, "images": n, "views": k,
            "reads": reads}


# ----------------------------------------------------------------------------- pipelines
def _decode_tensor(path: str) -> torch.Tensor:
    """A JPEG file as a uint8 [3, H, W] tensor (torchvision.io, libjpeg-turbo)."""
    import torchvision.io as io

    return io.decode_image(io.read_file(path), mode=io.ImageReadMode.RGB)


def one_thread(_worker_id: int) -> None:
    """worker_init_fn: one intra-op thread per worker, so a worker is one core's work."""
    torch.set_num_threads(1)


@dataclass
class Pipeline:
    key: str  # short name, for the chart
    name: str
    output: str
    make: Callable[[], Any] | None  # () -> dataset
    error: str = ""
    batch_replay: bool = False  # iterate dataset.loader(...) (replay per batch in the main process)


def build_pipelines(root: str, rfile: str | None, rfile_error: str) -> list[Pipeline]:
    import torchvision.transforms.v2 as T
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    from reinforced_data.policy import Policy

    pol = Policy.preset(POLICY)
    mean, std = list(pol.mean), list(pol.std)
    ours_error = rfile_error
    ReinforcedDataset = None
    if not ours_error:
        try:
            from reinforced_data.dataset import ReinforcedDataset
        except Exception as e:  # not on this checkout yet, or broken: the other rows still run
            ours_error = f"reinforced_data.dataset.ReinforcedDataset cannot be imported ({type(e).__name__}: {e})"

    def ours(dtype, batch_replay=False):
        return lambda: ReinforcedDataset(ImageFolder(root), rfile, out_dtype=dtype, batch_replay=batch_replay)

    tv = T.Compose([T.RandomResizedCrop(224, antialias=True), T.RandomHorizontalFlip(),
                    T.RandAugment(num_ops=2, magnitude=9), T.ToDtype(torch.float32, scale=True),
                    T.Normalize(mean, std), T.RandomErasing(p=0.25)])
    tm = create_transform(224, is_training=True, auto_augment="rand-m9-n2-inc1", re_prob=0.25)
    rs_u8 = T.Compose([T.Resize((224, 224), antialias=True), T.PILToTensor()])
    rs_f32 = T.Compose([T.Resize((224, 224), antialias=True), T.PILToTensor(), T.ToDtype(torch.float32, scale=True),
                        T.Normalize(mean, std)])
    io_u8 = T.Resize((224, 224), antialias=True)
    io_f32 = T.Compose([io_u8, T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    return [
        Pipeline("(a) ours f32", "(a) ReinforcedDataset", "float32 normalised, soft label",
                 ours(torch.float32) if not ours_error else None, ours_error),
        Pipeline("(a) ours u8", "(a) ReinforcedDataset, uint8", "uint8, soft label",
                 ours(torch.uint8) if not ours_error else None, ours_error),
        Pipeline("(a) batch f32", "(a) ReinforcedDataset, batch replay in the main process",
                 "float32 normalised, soft label", ours(torch.float32, True) if not ours_error else None, ours_error,
                 batch_replay=True),
        Pipeline("(b) timm", "(b) timm create_transform", "float32 normalised, hard label",
                 lambda: ImageFolder(root, transform=tm)),
        Pipeline("(c) tv v2", "(c) torchvision v2 on uint8 tensors", "float32 normalised, hard label",
                 lambda: ImageFolder(root, transform=tv, loader=_decode_tensor)),
        Pipeline("(d) resize u8", "(d) decode + resize only", "uint8, hard label",
                 lambda: ImageFolder(root, transform=rs_u8)),
        Pipeline("(d) resize f32", "(d) decode + resize + normalise", "float32 normalised, hard label",
                 lambda: ImageFolder(root, transform=rs_f32)),
        Pipeline("(e) tv.io u8", "(e) torchvision.io decode + resize only", "uint8, hard label",
                 lambda: ImageFolder(root, transform=io_u8, loader=_decode_tensor)),
        Pipeline("(e) tv.io f32", "(e) torchvision.io decode + resize + normalise", "float32 normalised, hard label",
                 lambda: ImageFolder(root, transform=io_f32, loader=_decode_tensor)),
    ]


def ours_stages(root: str, rfile: str, n: int, seed: int) -> dict[str, float]:
    """Median thread-CPU µs per image of what one (a) sample does, step by step, in this process.

    ImageFolder's loader alone (PIL decode + RGB), the decode path (a) uses
    (``RawImages``: the loader, then a uint8 [3, H, W] tensor), one ``read``, one
    single-image ``replay`` (float32 and uint8), the whole ``dataset[i]``, and (d)'s resize.
    """
    import importlib

    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    from reinforced_data._datasets import RawImages
    from reinforced_data.dataset import ReinforcedDataset
    from reinforced_data.store import ReinforcementFile

    replay = importlib.import_module("reinforced_data._replay").replay
    base = ImageFolder(root)
    raw = RawImages(ImageFolder(root), strip=True)
    ds32 = ReinforcedDataset(ImageFolder(root), rfile, out_dtype=torch.float32)
    ds8 = ReinforcedDataset(ImageFolder(root), rfile, out_dtype=torch.uint8)
    f = ReinforcementFile(rfile)
    pol = f.policy
    rs = T.Compose([T.Resize((224, 224), antialias=True), T.PILToTensor()])
    idx = np.random.default_rng(seed).permutation(len(base))[:n].tolist()
    srcs = {i: raw[i][0] for i in idx}  # as a loader has them: channels-last views of the decoded pixels
    cont = {i: s.contiguous() for i, s in srcs.items()}
    pils = {i: base.loader(base.samples[i][0]) for i in idx}
    recs = {i: np.stack([f.read(i, 0).params]) for i in idx}
    steps = {
        "ImageFolder loader (PIL decode)": lambda i: base.loader(base.samples[i][0]),
        "RawImages decode (loader → uint8 tensor)": lambda i: raw[i],
        "ReinforcementFile.read": lambda i: f.read(i, 0),
        "replay, 1 image, float32": lambda i: replay([srcs[i]], recs[i], pol, out_dtype=torch.float32),
        "replay, 1 image, uint8": lambda i: replay([srcs[i]], recs[i], pol, out_dtype=torch.uint8),
        "replay, 1 image, float32, from a contiguous copy of the source (copy not timed)":
            lambda i: replay([cont[i]], recs[i], pol, out_dtype=torch.float32),
        f"replay, one call for {min(64, len(idx))} images, float32, per image": None,
        "ReinforcedDataset[i], float32": lambda i: ds32[i],
        "ReinforcedDataset[i], uint8": lambda i: ds8[i],
        "(d) Resize((224, 224)) + PILToTensor on a decoded image": lambda i: rs(pils[i]),
    }
    out = {}
    batch_srcs = [srcs[i] for i in idx[:64]]
    batch_recs = np.concatenate([recs[i] for i in idx[:64]])
    for name, fn in steps.items():
        if fn is None:  # the batched call, for the per-call overhead of the single-image one
            replay(batch_srcs, batch_recs, pol, out_dtype=torch.float32)
            ts = []
            for _ in range(3):
                t = time.thread_time_ns()
                replay(batch_srcs, batch_recs, pol, out_dtype=torch.float32)
                ts.append((time.thread_time_ns() - t) / len(batch_srcs))
            out[name] = statistics.median(ts) / 1e3
            continue
        for i in idx[:8]:  # warm
            fn(i)
        ts = []
        for i in idx:
            t = time.thread_time_ns()
            fn(i)
            ts.append(time.thread_time_ns() - t)
        out[name] = statistics.median(ts) / 1e3
    f.close()
    return out


# ----------------------------------------------------------------------------- measuring
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def proc_mem(pid: int) -> dict[str, float]:
    """Memory of process ``pid`` in MiB: VmRSS, and USS (its private pages: what it adds to the
    machine's memory, pages it shares with the parent after fork not counted) and PSS when
    /proc/<pid>/smaps_rollup is readable."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key == "VmRSS":
                out[key] = int(rest.split()[0]) / 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            kb = {}
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Private_Clean", "Private_Dirty"):
                    kb[key] = int(rest.split()[0])
        out["USS"] = (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024
        out["PSS"] = kb["Pss"] / 1024
    except (OSError, KeyError, ValueError):
        pass
    return out


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


@dataclass
class Config:
    pipe: Pipeline
    workers: int
    loader: Any = None  # a DataLoader, or ReinforcedDataset.loader(...)
    pids: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)  # s per epoch
    cpu: list[float] = field(default_factory=list)  # CPU s per epoch, main + workers
    images: int = 0  # per epoch
    mem: list[dict[str, float]] = field(default_factory=list)  # per worker, after the first timed epoch
    error: str = ""

    @property
    def ips(self) -> float | None:
        return self.images / statistics.median(self.wall) if self.wall else None

    @property
    def cpu_ms(self) -> float | None:
        return statistics.median(self.cpu) / self.images * 1e3 if self.cpu else None


class EpochSampler(Sampler[int]):
    """A random permutation of the dataset per epoch, cut to ``limit`` indices when one is set (the warm-up)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.limit: int | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator)[:self.limit].tolist())

    def __len__(self) -> int:
        return min(self.n, self.limit or self.n)


def make_loader(ds, workers: int, batch: int, seed: int, batch_replay: bool = False):
    """A DataLoader (or, for batch replay, ``ds.loader(...)``, which wraps one) with the benchmark's settings."""
    kwargs = dict(batch_size=batch, sampler=EpochSampler(len(ds), seed), drop_last=True, num_workers=workers,
                  worker_init_fn=one_thread if workers else None, persistent_workers=workers > 0)
    if batch_replay:
        return ds.loader(device="cpu", **kwargs)
    return DataLoader(ds, **kwargs)


def run_epoch(cfg: Config) -> tuple[float, float, int]:
    """(wall s, CPU s of the main process and cfg's workers, images) of one epoch."""
    def cpu() -> float:
        return time.process_time() + sum(proc_cpu(p) for p in cfg.pids)

    gc.collect()
    c0, t0 = cpu(), time.perf_counter()
    n = 0
    for images, _ in cfg.loader:
        n += images.shape[0]
    wall = time.perf_counter() - t0
    return wall, cpu() - c0, n


def warm_up(cfg: Config, args) -> None:
    """Start the loader's (persistent) workers and run a short epoch of ``args.warmup`` batches."""
    before = _children()
    ds = cfg.pipe.make()
    cfg.loader = make_loader(ds, cfg.workers, args.batch, args.seed, cfg.pipe.batch_replay)
    sampler = cfg.loader.sampler
    sampler.limit = args.warmup * args.batch
    run_epoch(cfg)
    sampler.limit = args.batches * args.batch
    cfg.pids = sorted(_children() - before)
    if len(cfg.pids) != cfg.workers:
        raise RuntimeError(f"found {len(cfg.pids)} worker processes, expected {cfg.workers}")


def measure(configs: list[Config], args) -> None:
    for c in configs:
        if c.error:
            continue
        log(f"warm-up ({args.warmup} batches): {c.pipe.name}, num_workers={c.workers}")
        try:
            warm_up(c, args)
        except Exception as e:  # report, don't crash: the other rows are still worth having
            c.error = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log(c.error)
            release(c)
    live = [c for c in configs if not c.error]
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        k = rep % len(live) if live else 0
        for c in live[k:] + live[:k]:  # rotate, so slow drifts of a shared machine hit every row alike
            try:
                wall, cpu, n = run_epoch(c)
            except Exception as e:
                c.error = f"failed: {type(e).__name__}: {e}"
                log(c.error)
                continue
            c.wall.append(wall)
            c.cpu.append(cpu)
            c.images = n
            if rep == 0:  # the workers' memory after one (timed) epoch
                c.mem = [proc_mem(p) for p in c.pids]
        live = [c for c in live if not c.error]
        log(f"repeat {rep + 1}/{args.repeats} done in {time.perf_counter() - t0:.1f} s")
    release(*configs)
    log("workers stopped")


def release(*configs: Config) -> None:
    """Stop the loaders' persistent workers (all at once: each waits for its processes to exit)."""
    import threading

    threads = []
    for c in configs:
        dl = c.loader if isinstance(c.loader, DataLoader) else getattr(c.loader, "loader", None)
        it = getattr(dl, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            threads.append(threading.Thread(target=it._shutdown_workers))
            threads[-1].start()
        c.loader = None
    for t in threads:
        t.join()
    gc.collect()


# ----------------------------------------------------------------------------- report
def versions() -> str:
    import h5py
    import PIL
    import timm
    import torchvision

    return (f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
            f"Pillow {PIL.__version__}, h5py {h5py.__version__}, numpy {np.__version__}, "
            f"Python {platform.python_version()}")


def code_state() -> str:
    """HEAD commit, uncommitted changes under reinforced_data/ and csrc/, and when the compiled op was built."""
    import glob
    import subprocess

    parts = []
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "reinforced_data", "csrc"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if head:
            parts.append(f"commit {head}" + (f", with uncommitted changes in {len(dirty.splitlines())} file(s) "
                                             "under reinforced_data/ or csrc/" if dirty else ""))
    except (OSError, subprocess.SubprocessError):
        pass
    so = glob.glob(os.path.join(ROOT, "reinforced_data", "_C*.so"))
    if so:
        built = datetime.datetime.fromtimestamp(os.path.getmtime(so[0]), datetime.timezone.utc)
        parts.append(f"compiled op built {built:%Y-%m-%d %H:%M} UTC")
    return "; ".join(parts) or "unknown"


def _loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _find(configs: list[Config], key: str, workers: int) -> Config | None:
    for c in configs:
        if c.pipe.key == key and c.workers == workers and not c.error and c.wall:
            return c
    return None


def _ratio(a: Config | None, b: Config | None) -> tuple[float, float] | None:
    """(wall, CPU) throughput ratio a / b."""
    if a is None or b is None:
        return None
    return a.ips / b.ips, b.cpu_ms / a.cpu_ms


_SAME_OUTPUT = {"(a) ours f32": "(e) tv.io f32", "(a) ours u8": "(e) tv.io u8", "(a) batch f32": "(e) tv.io f32"}


def table(configs: list[Config]) -> str:
    out = ["| pipeline | output | workers | images/s (median) | min–max | CPU ms/image | cores busy "
           "| × (b) timm (wall / CPU) | × (e), same output (wall / CPU) | worker RSS / USS, MiB |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in sorted(configs, key=lambda c: (c.workers, configs.index(c))):
        if c.error:
            out.append(f"| {c.pipe.name} | {c.pipe.output} | {c.workers} | unavailable | — | — | — | — | — | — |")
            continue
        ips = [c.images / w for w in c.wall]
        busy = statistics.median(cp / w for cp, w in zip(c.cpu, c.wall))
        timm = _ratio(c, _find(configs, "(b) timm", c.workers)) if c.pipe.key != "(b) timm" else None
        d = _ratio(c, _find(configs, _SAME_OUTPUT[c.pipe.key], c.workers)) if c.pipe.key in _SAME_OUTPUT else None
        mem = "—" if not c.mem else " / ".join(
            f"{statistics.mean(m[k] for m in c.mem):.0f}" if all(k in m for m in c.mem) else "n/a"
            for k in ("VmRSS", "USS"))
        out.append(f"| {c.pipe.name} | {c.pipe.output} | {c.workers} | {c.ips:,.0f} | {min(ips):,.0f}–{max(ips):,.0f} "
                   f"| {c.cpu_ms:.2f} | {busy:.2f} | {f'{timm[0]:.2f}× / {timm[1]:.2f}×' if timm else ''} "
                   f"| {f'{d[0]:.2f}× / {d[1]:.2f}×' if d else ''} | {mem} |")
    return "\n".join(out)


def unavailable(configs: list[Config]) -> str:
    """Why rows are unavailable, one sentence per distinct reason."""
    why: dict[str, list[str]] = {}
    for c in configs:
        if c.error:
            why.setdefault(c.error, []).append(f"{c.pipe.name} (num_workers={c.workers})")
    return "Unavailable rows: " + "; ".join(f"{', '.join(rows)}: {e}" for e, rows in why.items()) + "."


def verdicts(configs: list[Config], workers: list[int]) -> str:
    """A markdown table: each target's ratio (wall / CPU) and whether it is met, per worker count."""
    rows = (("(a) uint8 ≥ 3× (b) timm", "(a) ours u8", "(b) timm", TARGET_X_TIMM),
            ("(a) float32 ≥ 2× (b) timm", "(a) ours f32", "(b) timm", TARGET_X_TIMM_F32),
            ("(a) float32 ≥ 0.9× (e) float32", "(a) ours f32", "(e) tv.io f32", TARGET_X_RESIZE),
            ("(a) uint8 ≥ 0.9× (e) uint8", "(a) ours u8", "(e) tv.io u8", TARGET_X_RESIZE),
            ("(a) batch replay float32 ≥ 2× (b) timm", "(a) batch f32", "(b) timm", TARGET_X_TIMM_F32),
            ("(a) batch replay float32 ≥ 0.9× (e) float32", "(a) batch f32", "(e) tv.io f32", TARGET_X_RESIZE))

    def cell(r: tuple[float, float] | None, target: float) -> str:
        if r is None:
            return "not measured"
        return " / ".join(f"{x:.2f}× {'met' if x >= target else 'NOT met'}" for x in r)

    out = ["| target | " + " | ".join(f"num_workers={w}: wall / CPU" for w in workers) + " |",
           "|---|" + "---|" * len(workers)]
    for what, x, y, target in rows:
        out.append(f"| {what} | " + " | ".join(cell(_ratio(_find(configs, x, w), _find(configs, y, w)), target)
                                               for w in workers) + " |")
    return "\n".join(out)


def error_bar(value: float, rates: list[float]) -> tuple[float, float]:
    """Lengths (below, above) of a min–max error bar around ``value``, never negative.

    ``value`` is computed another way than ``rates`` (``1e3 / cpu_ms`` against
    ``images / cpu``), so when it equals the extreme rate float rounding can put it an ulp
    outside, and matplotlib refuses a negative ``yerr``.
    """
    return max(0.0, value - min(rates)), max(0.0, max(rates) - value)


def plot(configs: list[Config], workers: list[int], path: str, title: str) -> str:
    """Grouped bar charts of images/s (wall clock) and per-core images/s (CPU time); "" or why not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        return f"chart not drawn ({type(e).__name__}: {e})"
    keys = list(dict.fromkeys(c.pipe.key for c in configs))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=False)
    width = 0.8 / len(workers)
    # bar height: the table's figure (images over the median epoch time); error bar: min–max over epochs
    panels = (("images / s, wall clock (bars: min–max over epochs)", lambda c: c.ips, lambda c, e: c.images / e[0]),
              ("per-core images / s = 1000 / CPU ms per image", lambda c: 1e3 / c.cpu_ms, lambda c, e: c.images / e[1]))
    for ax, (ylabel, value, rate) in zip(axes, panels):
        for j, w in enumerate(workers):
            xs, ys, lo, hi = [], [], [], []
            for i, k in enumerate(keys):
                c = _find(configs, k, w)
                if c is None:
                    continue
                med = value(c)
                down, up = error_bar(med, [rate(c, e) for e in zip(c.wall, c.cpu)])
                xs.append(i + (j - (len(workers) - 1) / 2) * width)
                ys.append(med)
                lo.append(down)
                hi.append(up)
            bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"num_workers={w}")
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
        ax.set_xticks(range(len(keys)), keys, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="JPEGs in the folder = images per epoch "
                    "(default 1024; --quick: 16)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 64; --quick: 8)")
    ap.add_argument("--workers", default="0,1,2", help="num_workers values, comma-separated (default 0,1,2)")
    ap.add_argument("--batches", type=int, default=None,
                    help="batches per timed epoch, drawn from a new permutation of the folder each time "
                         "(default 12; --quick: 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed epochs per configuration (default 2; --quick: 1)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed batches per configuration before its timed epochs (default 2)")
    ap.add_argument("--views", type=int, default=None, help="K, stored views per image (default 8; --quick: 2)")
    ap.add_argument("--topk", type=int, default=5, help="classes kept per view (default 5)")
    ap.add_argument("--reads", type=int, default=None, help="random reads for the latency figure (default 4000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=DEFAULT_DATA,
                    help=f"scratch folder for the photos and the file (default {os.path.relpath(DEFAULT_DATA, ROOT)})")
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test run: 16 images, 2 batches of 8 per row")
    ap.add_argument("--out", default=None,
                    help=f"markdown file to write; the chart (.png) and the per-epoch measurements (.json) go beside it (default "
                         f"{os.path.relpath(DEFAULT_OUT, ROOT)}; with --quick {os.path.relpath(QUICK_OUT, ROOT)})")
    args = ap.parse_args(argv)
    q = args.quick
    args.images = args.images or (16 if q else 1024)
    args.batch = args.batch or (8 if q else 64)
    args.repeats = args.repeats or (1 if q else 2)
    args.batches = args.batches or (2 if q else 12)
    args.views = args.views or (2 if q else 8)
    args.warmup = args.warmup or 2
    args.reads = args.reads or (100 if q else 4000)
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        ap.error(f"--workers {args.workers!r}: give integers separated by commas, e.g. 0,1,2")
    if not workers or min(workers) < 0:
        ap.error("--workers: give one or more integers >= 0")
    for name in ("images", "batch", "batches", "repeats", "warmup", "views", "topk", "reads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.images < max(args.batches, args.warmup) * args.batch:
        ap.error(f"--images ({args.images}) must hold --batches ({args.batches}) and --warmup ({args.warmup}) "
                 f"batches of {args.batch}")
    out_path = args.out or (QUICK_OUT if q else DEFAULT_OUT)
    png_path = os.path.splitext(out_path)[0] + ".png"
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if argv is None else "benchmarks/loader.py",
                                      *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    load_start = _loadavg()
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    root = os.path.join(args.data, f"loader_photos_{args.images}_s{args.seed}")
    log(f"photo folder {root} ({args.images} JPEGs; written once, then reused)")
    t = time.perf_counter()
    _photos.image_folder(root, args.images, seed=args.seed, quality=90)
    t_folder = time.perf_counter() - t
    rpath = os.path.join(args.data, f"loader_{POLICY}_{args.images}_K{args.views}_top{args.topk}_s{args.seed}.h5")
    rfile, rfile_error, t_file, lat = None, "", None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # compiled-op fallback warning; reported below
            rfile, t_file = reinforcement_file(root, rpath, args.views, args.topk, args.seed)
        lat = read_latency(rfile, args.reads, args.seed)
    except Exception as e:
        rfile_error = f"the reinforcement file could not be made ({type(e).__name__}: {e})"
        log(rfile_error)
    import importlib

    compiled = importlib.import_module("reinforced_data._replay").compiled_available()

    pipes = build_pipelines(root, rfile, rfile_error)
    stages, stages_error = {}, ""
    if not pipes[0].error:
        try:
            stages = ours_stages(root, rfile, min(args.images, 8 if q else 128), args.seed)
        except Exception as e:
            stages_error = f"{type(e).__name__}: {e}"
    configs = [Config(p, w, error=p.error) for w in workers for p in pipes]
    measure(configs, args)

    # ---- report
    sizes: dict[tuple[int, int], int] = {}
    from PIL import Image

    n_files = 0
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn.endswith(".JPEG"):
                n_files += 1
                if n_files <= 256:
                    with Image.open(os.path.join(dirpath, fn)) as im:
                        sizes[im.size[::-1]] = sizes.get(im.size[::-1], 0) + 1
    common = ", ".join(f"{h}x{w}" for (h, w), _ in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    start_method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method()
    title = (f"DataLoader throughput, {args.images} JPEGs → 224 px, batch {args.batch}, "
             f"1 thread per process; {cpu_model()}, {os.cpu_count()} CPUs{' (quick run)' if q else ''}")
    chart_error = plot(configs, workers, png_path, title)
    log("chart drawn")
    if lat is not None:
        lat_line = (f"Reinforcement file: {lat['images']} images × K={lat['views']} views, top-{args.topk}, "
                    f"policy `{POLICY}`, {lat['bytes_per_record']:.1f} bytes per record on disk; "
                    f"{'written in ' + format(t_file, '.1f') + ' s by reinforce() on the CPU' if t_file else 'reused from an earlier run'} "
                    f"(teacher: `CheapTeacher`, average pool to 4x4 + one linear layer, labels meaningless). "
                    f"`ReinforcementFile.read(i, view)`, {lat['reads']} random records on a warm handle: median "
                    f"{lat['read_us']:.1f} µs (p90 {lat['read_p90_us']:.1f} µs); `read_image(i)` (all K views): "
                    f"median {lat['read_image_us']:.1f} µs.")
    else:
        lat_line = f"Reinforcement file: unavailable: {rfile_error}."
    lines = [
        "# DataLoader throughput over a JPEG folder",
        "",
        f"Machine: {cpu_model()} ({os.cpu_count()} logical CPUs visible), {platform.system()} {platform.release()}; "
        f"{versions()}; {now}. Load average (1/5/15 min) at start {load_start}, at end {_loadavg()}. "
        "The machine is shared with other users' jobs and noisy: compare rows of one run, not runs; the CPU "
        "columns are the fairer per-core figures when the wall clock waits for a core.",
        "",
        f"Command: `{command}`{' (quick smoke-test run: too few batches for reliable numbers)' if q else ''}",
        "",
        f"Workload: an ImageFolder of {n_files} JPEGs (quality 90; {len(os.listdir(root)) - 1} classes, one per "
        f"scikit-image source photo; most common sizes {common}), made by `benchmarks/_photos.py`; 224x224 "
        f"output, batch {args.batch}; a timed epoch = {args.batches} batches ({args.batches * args.batch} images) "
        "drawn from a new random permutation of the folder, timed from `iter(loader)` to its last batch, "
        f"after {args.warmup} untimed warm-up batches (which start the workers); {args.repeats} timed epochs per "
        "row, every repeat running every row once in a rotating order. images/s is the median over the timed epochs, min–max over them. DataLoader workers: "
        f"`persistent_workers=True`, start method `{start_method}`, `worker_init_fn` sets "
        "`torch.set_num_threads(1)` (and the main process runs with 1 thread, OMP/MKL too), so one worker is "
        "one core's work. The main process only receives batches (no training step).",
        "",
        "CPU ms/image: CPU time of the main process plus its workers (/proc/<pid>/stat) per image, median over "
        "epochs; 1000 / it is the per-core throughput. cores busy: that CPU time over the wall time. "
        f"This machine has {os.cpu_count()} cores: with num_workers=2 the main process competes with the two "
        "workers for them (and other users' jobs compete with all three). Worker RSS / USS: VmRSS "
        "(/proc/<pid>/status) and USS, the worker's private pages (Private_Clean + Private_Dirty of "
        "/proc/<pid>/smaps_rollup), after its first timed epoch, mean over the workers. VmRSS also counts the "
        "pages a forked worker still shares with the main process (torch's libraries, the parent's heap); USS "
        "is what each worker adds to the machine's memory.",
        "",
        f"Compiled replay op: {'available' if compiled else 'UNAVAILABLE (ReinforcedDataset falls back to the pure-PyTorch reference)'}. "
        f"Code: {code_state()}.",
        "",
        table(configs),
        "",
        *([unavailable(configs), ""] if any(c.error for c in configs) else []),
        lat_line,
        "",
        *(["Where one (a) sample's time goes (median thread CPU µs per image, in the main process, one pass "
           f"over {min(args.images, 8 if q else 128)} images): "
           + "; ".join(f"{k} {v:,.0f}" for k, v in stages.items()) + "."] if stages else
          [f"Stage breakdown of (a): not measured ({stages_error or pipes[0].error})."]),
        "",
        "Targets, per core, measured side by side in this run (wall = images/s ratio; CPU = CPU-time-per-image "
        "ratio, the per-core one):",
        "",
        verdicts(configs, workers),
        "",
        "Rows: (a) `ReinforcedDataset(ImageFolder(root), file, out_dtype=...)` replays one stored "
        "RandomResizedCrop + flip + RandAugment(n=2, m=9) + RandomErasing(0.25) view per image and returns "
        "the teachers' dense soft label, one `replay` call per image in the worker; (a) batch replay: the same "
        "dataset with `batch_replay=True` iterated through `dataset.loader(..., device=\"cpu\")`: workers decode "
        "and read records, the main process replays each whole batch in one call (so with workers, part of the "
        "work moves to the main process, which the CPU column counts); (b) `ImageFolder(root, timm.data.create_transform(224, "
        "is_training=True, auto_augment=\"rand-m9-n2-inc1\", re_prob=0.25))`; (c) `ImageFolder(root, "
        "loader=torchvision.io.decode_image, transform=v2.Compose([RandomResizedCrop(224, antialias=True), "
        "RandomHorizontalFlip(), RandAugment(2, 9), ToDtype(float32, scale=True), Normalize, "
        "RandomErasing(0.25)]))`; (d) `ImageFolder(root, v2.Compose([Resize((224, 224), antialias=True), "
        "PILToTensor()]))` (+ `ToDtype`, `Normalize` for float32); (e) `ImageFolder(root, loader=torchvision.io "
        "decode, transform=v2.Resize((224, 224), antialias=True))` (+ `ToDtype`, `Normalize`). (b) and (d) decode "
        "with PIL (ImageFolder's loader); (c) and (e) with torchvision.io; (a) with torchvision.io for 8-bit "
        "JPEG/PNG (its default decoder, which gives PIL's pixels) and PIL for other files. timm's RandAugment applies each of its two ops "
        "with probability 0.5, so it does less work per image than (a) and (c).",
    ]
    if chart_error:
        lines += ["", f"Chart: {chart_error}."]
    else:
        lines += ["", f"![images/s]({os.path.basename(png_path)})"]
    lines += ["", f"Total run time {time.perf_counter() - t_start:.0f} s (photo folder {t_folder:.1f} s"
              f"{', file ' + format(t_file, '.1f') + ' s' if t_file else ', file reused'}; a folder and file already "
              f"made by an earlier run are reused). Per-epoch measurements: "
              f"`{os.path.splitext(os.path.basename(out_path))[0]}.json`."]
    text = "\n".join(lines)
    print(text)
    write_table(text, out_path)
    raw = {"command": command, "date": now, "images_per_epoch": args.batches * args.batch, "load_start": load_start,
           "rows": [{"pipeline": c.pipe.name, "output": c.pipe.output, "workers": c.workers, "error": c.error,
                     "epoch_wall_s": c.wall, "epoch_cpu_s": c.cpu, "images": c.images, "worker_mem_mib": c.mem}
                    for c in configs],
           "read_latency": lat, "stages_us": stages}
    with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
        json.dump(raw, f, indent=1)
    log(f"wrote {out_path}" + ("" if chart_error else f" and {png_path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
