#!/usr/bin/env python
"""CUDA replay: checks against the CPU op and the reference, then timing.

Needs a CUDA GPU and the compiled op built with its CUDA kernels
(`pip install --no-build-isolation -e .` on a machine with a CUDA toolkit); exits with a
clear message (status 2) when either is missing. ``--device cpu`` runs the very same
code on the C++ CPU op instead: the dry run the test suite runs
(tests/test_gpu_check_dry.py), so this script cannot go stale without a GPU.

1. Checks (``run_checks``), in sections, each with its own time limit and one summary
   line (``SECTION name: PASS|FAIL|SKIP ...``). Every output of the op on the device is
   compared byte for byte with the C++ CPU op on CPU copies of the same inputs; a few views
   of each case (those with the smallest crops: the reference's cost grows with the crop)
   also with the pure-PyTorch reference (reinforced_data._reference, the specification; it is
   slow, so only a subset; the test suite compares the CPU op with it on every view).

     presets        every preset at its output size, on ImageNet-like photos (half of them
                    channels-last, as decoders give them)
     ops            4 RandAugment ops per view (every op at every step), forced erasing, odd
                    output sizes, odd / strided / sliced sources; torchvision and timm
                    families, TrivialAugment, AutoAugment, padded (CIFAR) crops
     stat_ops       Contrast, AutoContrast, Equalize and Sharpness forced at every step (the
                    ops with per-view statistics and neighbourhoods), uniform images included
     mix_normalize  mix (modes 0-3, argument rows on the host and on the device), normalize
                    (4 dtypes, both layouts), replay() end to end
     augmix         AugMix views (timm's and torchvision's): crops, chains and the blend op
     large          4096x4096 sources (contiguous and channels-last) to 224 px and to large
                    outputs (4096x4096 included)
     batch1024      one call with 1024 views
     stream         the ops on a non-default stream (torch.cuda.stream(s)) whose inputs are
                    written on that stream just before the call
     devices        inputs on a second device index while device 0 is current (SKIP with one
                    device)
     sync_free      torch.cuda.set_sync_debug_mode("error") around replay() of a mixing
                    policy and around one loader batch with p < 1
                    (ReinforcedDataset.replay_batch): no host-device synchronisation

   ``--sanitize`` runs only the small ``sanitizer_views`` section (a handful of views forcing
   Contrast, AutoContrast, Equalize, Sharpness, a padded crop, and mixing): the workload
   benchmarks/gpu_check.sh runs under compute-sanitizer (memcheck and racecheck).

2. Timing (B = 256 views at 224 px from ~500x375 uint8 sources already on the device):
   per pipeline the op's GPU time (CUDA events around the call while a preceding sleep
   kernel keeps the GPU busy until the host has queued it: kernels back to back), its host
   time (until the call returns) and the pipelined rate (calls back to back); then
   ``ReinforcedDataset.loader(device="cuda")`` end to end with in-memory sources and
   ``--workers`` DataLoader workers; then, when torchvision decodes JPEGs on the GPU, decode
   + replay per image. Targets are stated in the results, not asserted.

Prints a markdown table and writes it to benchmarks/results/replay_gpu.md (--out).
Exit status: 0 all checks passed, 1 a check failed (or timing failed), 2 no GPU / no CUDA kernels.

    python benchmarks/gpu_replay.py
    python benchmarks/gpu_replay.py --checks-only
    python benchmarks/gpu_replay.py --no-check --batch 256 --repeats 50 --warmup 10
    python benchmarks/gpu_replay.py --sanitize          # under compute-sanitizer (gpu_check.sh)
    python benchmarks/gpu_replay.py --device cpu --quick  # the dry run of the tests
"""

from __future__ import annotations

import _common  # first: this checkout's reinforced_data on sys.path

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import HERE, write_table  # noqa: E402

with warnings.catch_warnings():
    # replay warns at import when the compiled op is missing; main() reports that itself.
    warnings.simplefilter("ignore", RuntimeWarning)
    replay = importlib.import_module("reinforced_data._replay")  # the module (the package exports the function)
    from reinforced_data import _args, _reference  # noqa: E402
    from reinforced_data import _families as FAM  # noqa: E402
from reinforced_data.policy import MAX_RA_OPS, PRESETS, Policy  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results", "replay_gpu.md")
TARGET_OP_VIEWS_PER_S = 300_000  # augment + normalize, float32, 224 px, on an H100
TARGET_LOADER_IMAGES_PER_S = 10_000  # loader end to end from JPEG files with GPU decode
STAT_OPS = ("Contrast", "AutoContrast", "Equalize", "Sharpness")


def fail_setup(msg: str) -> None:
    print(f"gpu_replay: {msg}", file=sys.stderr)
    sys.exit(2)


# ------------------------------------------------------------------ device
class Dev:
    """The device under test, and what differs between a GPU run and the CPU dry run
    (synchronisation, streams, the sync debug mode): no-ops on the CPU."""

    def __init__(self, name: str | torch.device) -> None:
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        self._cycles_per_ms: float | None = None

    def __str__(self) -> str:
        return "CUDA" if self.cuda else "CPU (dry run)"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def stream(self) -> tuple[torch.cuda.Stream | None, contextlib.AbstractContextManager]:
        """A new non-default stream and the context that makes it current (CPU: None, no-op)."""
        if not self.cuda:
            return None, contextlib.nullcontext()
        s = torch.cuda.Stream(self.device)
        return s, torch.cuda.stream(s)

    def sleep(self, ms: float) -> None:
        """Keep the current stream busy for about ``ms`` milliseconds (CPU: nothing)."""
        if not self.cuda or ms <= 0:
            return
        if self._cycles_per_ms is None:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(10_000_000)
            end.record()
            end.synchronize()
            self._cycles_per_ms = 10_000_000 / max(start.elapsed_time(end), 1e-3)
        torch.cuda._sleep(int(ms * self._cycles_per_ms))

    @contextlib.contextmanager
    def no_sync(self):
        """Inside, any host-device synchronisation raises (torch.cuda.set_sync_debug_mode("error"))."""
        if not self.cuda:
            yield
            return
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)


# ------------------------------------------------------------------ plans
@dataclasses.dataclass(frozen=True)
class Plan:
    """How many sources, views and sizes the checks and the timing use. QUICK (the dry run of
    the test suite) keeps every policy, family and kind of case, with fewer and smaller ones."""

    name: str = "full"
    photos: int = 24  # ImageNet-like photos
    small: int = 40  # random small sources (plus fixed edge cases)
    out_sizes: tuple[tuple[int, int], ...] = ((17, 31), (224, 224), (1, 1), (2, 5), (96, 160))
    ref_views: int = 2  # views per case also compared with the reference
    big_side: int = 4096
    big_outputs: tuple[tuple[int, int], ...] = ((1024, 768), (4096, 4096))
    big_batch: int = 1024
    loader_pool: int = 64  # distinct in-memory sources of the loader benchmark
    loader_images: int = 2048
    loader_batches: int = 24
    decode_images: int = 256


FULL = Plan()
QUICK = Plan(name="quick", photos=6, small=10, out_sizes=((17, 31), (1, 1), (96, 160)), ref_views=1, big_side=1024,
             big_outputs=((512, 384),), big_batch=96, loader_pool=8, loader_images=64, loader_batches=3,
             decode_images=8)


# ------------------------------------------------------------------ sources
def channels_last(img: torch.Tensor) -> torch.Tensor:
    """The same pixels with strides (1, 3W, 3), as decoders return them."""
    return img.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def smooth_sources(sizes, seed: int, device) -> list[torch.Tensor]:
    """Photo-like uint8 [3, H, W] images: low-resolution noise, bilinearly upsampled."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        lo = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
        x = torch.nn.functional.interpolate(lo, size=(h, w), mode="bilinear", align_corners=False)[0]
        a = torch.randint(0, 64, (3, 1, 1), generator=g).float()
        b = torch.randint(192, 256, (3, 1, 1), generator=g).float()
        img = (a + x * (b - a)).round().clamp(0, 255).to(torch.uint8)
        out.append(img.contiguous().to(device))
    return out


def photo_sources(n: int, seed: int, device) -> tuple[list[torch.Tensor], str]:
    """benchmarks/_photos.py photos when scikit-image is installed, else smooth noise (contiguous)."""
    try:
        import _photos

        return [p.tensor.contiguous().to(device) for p in _photos.make_photos(n, seed=seed)], "scikit-image photos"
    except Exception as e:  # noqa: BLE001 - any missing optional dependency
        rng = np.random.default_rng(seed)
        choices = [(375, 500), (500, 375), (333, 500), (500, 333), (375, 500)]
        sizes = [choices[i] for i in rng.integers(0, len(choices), n)]
        return smooth_sources(sizes, seed, device), f"synthetic smooth images ({type(e).__name__}: no _photos)"


def sample_params(images, policy: Policy, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([policy.sample(rng, 1, int(i.shape[1]), int(i.shape[2])) for i in images])


def encode(images, params: np.ndarray, policy: Policy) -> torch.Tensor:
    return _args.encode(params, policy, [(int(i.shape[1]), int(i.shape[2])) for i in images])


def sample_rows(images, policy: Policy, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    params = sample_params(images, policy, seed)
    return params, encode(images, params, policy)


def samples(policy: Policy, img: torch.Tensor) -> bool:
    """Whether the policy samples views of this source (padded RandomCrop refuses small ones)."""
    try:
        policy.sample(np.random.default_rng(0), 1, int(img.shape[1]), int(img.shape[2]))
    except ValueError:
        return False
    return True


def four_ops(preset: str, **overrides) -> Policy:
    """``preset`` with MAX_RA_OPS RandAugment ops per view (timm's families take the count from
    their configuration's num_layers, which must match ra_num_ops)."""
    base = Policy.preset(preset)
    extra: dict = {"ra_num_ops": MAX_RA_OPS}
    if base.ra_family in FAM.TIMM_FAMILIES:
        extra["ra_config"] = {**FAM.parse_config(base.ra_config), "num_layers": MAX_RA_OPS}
    return Policy.preset(preset, **extra, **overrides)


def force_ops(params: np.ndarray, policy: Policy, names=STAT_OPS) -> np.ndarray:
    """``params`` with the ops ``names`` at every step: view v has names[(v + s) % len] at step s,
    with a magnitude that runs over both signs (ops without a magnitude get 0). Torchvision family."""
    assert policy.ra_family == "torchvision", policy.ra_family
    out = params.copy()
    ids = [policy.ra_ops().index(n) for n in names]
    nb = policy.ra_num_magnitude_bins
    b, n = out["ra_op"].reshape(out.shape[0], -1).shape
    for v in range(b):
        for s in range(n):
            name = names[(v + s) % len(names)]
            out["ra_op"][v, s] = ids[(v + s) % len(names)]
            signed = name in ("Contrast", "Sharpness", "Brightness", "Color")
            out["ra_mag"][v, s] = ((v * 7 + s * 3) % (2 * nb - 1)) - (nb - 1) if signed else 0
    return out


def force_mix(params: np.ndarray, policy: Policy) -> np.ndarray:
    """``params`` with every mix mode the policy draws (3 only for 'sequential'), λ over [0, 255]
    and CutMix boxes of several sizes (a whole-view box and an empty one included)."""
    out = params.copy()
    oh, ow = policy.output_size
    modes = (0, 1, 2, 3) if policy.mix_mode == "sequential" else (0, 1, 2)
    for v in range(out.shape[0]):
        out["mix_mode"][v] = modes[v % len(modes)]
        out["mix_lam"][v] = (v * 37 + 11) % 256
        k = v % 5
        if k == 0:
            box = (0, 0, oh, ow)
        elif k == 1:
            box = (oh // 2, ow // 3, 0, 0)
        else:
            bh, bw = max(1, oh * k // 7), max(1, ow * (5 - k) // 6)
            box = ((v * 13) % (oh - bh + 1), (v * 29) % (ow - bw + 1), bh, bw)
        out["mix_box"][v] = box
    return out


# ------------------------------------------------------------------ checks
class SectionTimeout(Exception):
    """A section ran past its time limit (raised between cases)."""


class Section:
    """One group of checks: counts, failures, its time and its limit, and its summary line."""

    def __init__(self, name: str, limit_s: float, dev: Dev, plan: Plan = FULL, seed: int = 0) -> None:
        self.name, self.limit_s, self.dev, self.plan, self.seed = name, limit_s, dev, plan, seed
        self.passed = 0
        self.failures: list[str] = []
        self.skipped: str | None = None
        self.stopped = False
        self.t0 = time.perf_counter()
        self.seconds: float | None = None

    @property
    def checks(self) -> int:
        return self.passed + len(self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stopped

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 if self.seconds is None else self.seconds

    def tick(self) -> None:
        """Call between cases: stops the section (a failure) once it is past its limit."""
        if time.perf_counter() - self.t0 > self.limit_s:
            raise SectionTimeout()

    def _log(self, msg: str) -> None:
        print(f"  [{self.name}] {msg}", flush=True)

    def equal(self, what: str, got: torch.Tensor, expected: torch.Tensor, rows=None) -> bool:
        g, e = got.cpu(), expected.cpu()
        ok = g.shape == e.shape and g.dtype == e.dtype and torch.equal(g, e)
        if ok:
            self.passed += 1
            self._log(f"ok    {what}")
            return True
        if g.shape != e.shape or g.dtype != e.dtype:
            msg = f"{tuple(g.shape)} {g.dtype} vs {tuple(e.shape)} {e.dtype}"
        else:
            d = (g.double() - e.double()).abs()
            d = d.reshape(d.shape[0], -1) if d.dim() > 1 else d.reshape(-1, 1)
            bad = torch.nonzero(d.amax(dim=1)).flatten().tolist()
            msg = (f"{len(bad)} of {d.shape[0]} views differ (first {bad[:8]}), max |diff| {d.max().item():g}, "
                   f"{int((d > 0).sum())} values")
            if rows is not None and bad and bad[0] < len(rows):
                msg += f"; row of view {bad[0]}: {rows[bad[0]].tolist()}"
        self.fail(what, msg)
        return False

    def true(self, what: str, cond: bool, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            self._log(f"ok    {what}")
            return True
        self.fail(what, detail or "not so")
        return False

    def fail(self, what: str, msg: str) -> None:
        line = f"{what}: {msg}"
        self.failures.append(line)
        self._log(f"FAIL  {line}")

    def error(self, what: str, e: BaseException) -> None:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        self.fail(what, f"{type(e).__name__}: {first}")

    def run(self, what: str, fn: Callable):
        """fn() (and a device sync), or None after recording what it raised as a failure."""
        try:
            out = fn()
            self.dev.sync()
            return out
        except Exception as e:  # noqa: BLE001 - every error is a failed check
            self.error(f"{what} raised", e)
            return None

    def skip(self, why: str) -> None:
        self.skipped = why
        self._log(f"skip  {why}")

    def finish(self) -> None:
        self.seconds = time.perf_counter() - self.t0

    def summary(self) -> str:
        t = f"{self.elapsed():.1f} s of {self.limit_s:.0f} s"
        if self.skipped is not None and not self.checks and not self.stopped:
            return f"SECTION {self.name}: SKIP ({self.skipped}; {t})"
        if self.ok:
            return f"SECTION {self.name}: PASS {self.checks} checks ({t})"
        why = f"{len(self.failures)} of {self.checks} checks failed"
        if self.stopped:
            why += f"; stopped at its time limit after {self.checks} checks"
        return f"SECTION {self.name}: FAIL {why} ({t})"


class Ctx:
    """What the sections share: the device, the plan, the seed and the sources (made once)."""

    def __init__(self, dev: Dev, plan: Plan, seed: int) -> None:
        self.dev, self.plan, self.seed = dev, plan, seed
        self._photos: list[torch.Tensor] | None = None
        self.photo_kind = ""
        self._tmp: tempfile.TemporaryDirectory | None = None

    def photos(self) -> list[torch.Tensor]:
        """plan.photos ImageNet-like photos on the device, every other one channels-last."""
        if self._photos is None:
            photos, self.photo_kind = photo_sources(self.plan.photos, self.seed, "cpu")
            self._photos = [(channels_last(p) if i % 2 else p).to(self.dev.device) for i, p in enumerate(photos)]
        return self._photos

    def tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gpu_replay_")
        return self._tmp.name

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


OPS = torch.ops.reinforced_data


def nviews(n: int) -> str:
    return f"{n} view" + ("" if n == 1 else "s")


def host(images) -> list[torch.Tensor]:
    return [i.cpu() for i in images]


def check_augment(sec: Section, name: str, images, rows: torch.Tensor, oh: int, ow: int, ref: int | None = None,
                  rows_on_device: bool = False, cpu_images=None) -> torch.Tensor | None:
    """augment on the device == the CPU op (every view) == the reference (the ``ref`` views with the
    smallest crops). ``cpu_images``: the same images on the CPU, when the caller has them."""
    dev = sec.dev
    r = rows.to(dev.device) if rows_on_device else rows
    what = f"augment {name} {oh}x{ow} ({len(images)} views, args on {'the device' if rows_on_device else 'the host'})"
    got = sec.run(what, lambda: OPS.augment(images, r, oh, ow))
    if got is None:
        return None
    cpu_imgs = host(images) if cpu_images is None else cpu_images
    sec.equal(f"{what}: {dev} == CPU op", got, OPS.augment(cpu_imgs, rows, oh, ow), rows)
    n = min(sec.plan.ref_views if ref is None else ref, len(images))
    if n:  # the reference's cost grows with the crop: the n views with the smallest crops
        area = rows[:, _args.CROP_H].long() * rows[:, _args.CROP_W].long()
        idx = torch.argsort(area, stable=True)[:n]
        sec.equal(f"{what}: {dev} == reference ({nviews(n)} with the smallest crops)", got[idx],
                  _reference.augment([cpu_imgs[i] for i in idx.tolist()], rows[idx], oh, ow), rows[idx])
    return got


def sec_presets(sec: Section, ctx: Ctx) -> None:
    photos = ctx.photos()
    for i, name in enumerate(sorted(PRESETS)):
        sec.tick()
        policy = Policy.preset(name)
        _, rows = sample_rows(photos, policy, ctx.seed + 100 + i)
        check_augment(sec, f"preset {name}", photos, rows, *policy.output_size, rows_on_device=i % 2 == 1)


def small_sources(ctx: Ctx) -> list[torch.Tensor]:
    """Random small sizes, 1-pixel-wide ones, white noise, a channels-last and a sliced source."""
    dev = ctx.dev.device
    rng = np.random.default_rng(ctx.seed + 2)
    sizes = [(int(rng.integers(1, 90)), int(rng.integers(1, 90))) for _ in range(ctx.plan.small)]
    sizes += [(1, 1), (1, 57), (64, 1)]
    out = smooth_sources(sizes, ctx.seed + 3, dev)
    g = torch.Generator().manual_seed(ctx.seed + 4)
    out += [torch.randint(0, 256, (3, 37, 41), dtype=torch.uint8, generator=g).to(dev) for _ in range(2)]
    out.append(torch.randint(0, 256, (45, 60, 3), dtype=torch.uint8, generator=g).to(dev).permute(2, 0, 1))
    out.append(torch.randint(0, 256, (3, 80, 90), dtype=torch.uint8, generator=g).to(dev)[:, 5:60:2, 3:80:3])
    return out


def sec_ops(sec: Section, ctx: Ctx) -> None:
    small = small_sources(ctx)
    for k, (oh, ow) in enumerate(ctx.plan.out_sizes):
        cases = [
            ("rrc_ra_re, 4 ops", four_ops("rrc_ra_re", output_size=(oh, ow), erase_prob=0.7)),
            ("rrc_ra_re_noise, 4 ops, bicubic", four_ops("rrc_ra_re_noise", output_size=(oh, ow), erase_prob=0.7,
                                                         interpolation="bicubic", ra_interpolation="bilinear")),
            ("timm, 4 ops, fill", four_ops("timm", output_size=(oh, ow), erase_prob=0.7, fill=(12, 200, 77))),
            ("trivialaugment", Policy.preset("trivialaugment", output_size=(oh, ow), erase_prob=0.7)),
            ("autoaugment", Policy.preset("autoaugment", output_size=(oh, ow), erase_prob=0.7)),
            ("paper_cifar_ra_re (padded crops), 4 ops", four_ops("paper_cifar_ra_re", output_size=(oh, ow),
                                                                  erase_prob=0.7)),
        ]
        for j, (name, policy) in enumerate(cases):
            sec.tick()
            srcs = [s for s in small if samples(policy, s)]  # RandomCrop refuses sources below its output size
            if not srcs:
                continue
            _, rows = sample_rows(srcs, policy, ctx.seed + 1000 * oh + ow + j)
            check_augment(sec, name, srcs, rows, oh, ow, rows_on_device=(j + k) % 2 == 1)


def sec_stat_ops(sec: Section, ctx: Ctx) -> None:
    dev = ctx.dev.device
    flat = [torch.full((3, 40, 50), 77, dtype=torch.uint8, device=dev),  # one value: AutoContrast/Equalize identity
            torch.zeros(3, 9, 9, dtype=torch.uint8, device=dev)]
    two = torch.zeros(3, 30, 30, dtype=torch.uint8)
    two[:, :, 15:] = 200
    flat.append(two.to(dev))
    cases = [("photos", ctx.photos(), (224, 224)), ("small", small_sources(ctx)[:12] + flat, (17, 31)),
             ("small", small_sources(ctx)[:12] + flat, (64, 80))]
    for i, (what, srcs, (oh, ow)) in enumerate(cases):
        sec.tick()
        policy = four_ops("rrc_ra_re", output_size=(oh, ow), erase_prob=0.5)
        params = force_ops(sample_params(srcs, policy, ctx.seed + 50 + i), policy)
        check_augment(sec, f"forced {'/'.join(STAT_OPS)} at every step, {what}", srcs, encode(srcs, params, policy),
                      oh, ow, ref=4, rows_on_device=i % 2 == 1)


def check_mix(sec: Section, name: str, a: torch.Tensor, b: torch.Tensor, margs: torch.Tensor,
              ref: int | None = None) -> torch.Tensor | None:
    dev = sec.dev
    got = sec.run(f"mix {name}", lambda: OPS.mix(a, b, margs))
    if got is None:
        return None
    ac, bc = a.cpu(), b.cpu()
    sec.equal(f"mix {name} (args on the host): {dev} == CPU op", got, OPS.mix(ac, bc, margs), margs)
    got_dev = sec.run(f"mix {name} (args on the device)", lambda: OPS.mix(a, b, margs.to(dev.device)))
    if got_dev is not None:
        sec.equal(f"mix {name} (args on the device) == (args on the host)", got_dev, got, margs)
    n = min(sec.plan.ref_views if ref is None else ref, a.shape[0])
    if n:
        sec.equal(f"mix {name}: {dev} == reference (first {nviews(n)})", got[:n],
                  _reference.mix(ac[:n], bc[:n], margs[:n]), margs[:n])
    return got


def sec_mix_normalize(sec: Section, ctx: Ctx) -> None:
    dev = ctx.dev
    photos = ctx.photos()
    for i, preset in enumerate(("paper_imagenet_mix", "rrc_ra_re_mix")):
        sec.tick()
        policy = Policy.preset(preset)
        oh, ow = policy.output_size
        params = force_mix(sample_params(photos, policy, ctx.seed + 4 + i), policy)
        rows = encode(photos, params, policy)
        margs = _args.encode_mix(params, policy)
        a = sec.run("augment for mix", lambda: OPS.augment(photos, rows, oh, ow))
        if a is None:
            continue
        b = a.flip(0).contiguous()
        check_mix(sec, preset, a, b, margs)
        check_mix(sec, f"{preset}, channels-last views", a.contiguous(memory_format=torch.channels_last),
                  b.contiguous(memory_format=torch.channels_last), margs, ref=0)
    sec.tick()
    a = OPS.augment(photos, sample_rows(photos, Policy.preset("rrc_ra_re"), ctx.seed + 6)[1], 224, 224)
    ac = a.cpu()
    policy = Policy.preset("rrc_ra_re")
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        lut = _args.normalize_lut(policy, dtype)
        for cl in (False, True):
            got = sec.run(f"normalize {dtype}", lambda: OPS.normalize(a, lut.to(dev.device), cl))
            if got is None:
                continue
            exp = OPS.normalize(ac, lut, cl)
            sec.equal(f"normalize {dtype} channels_last={cl}: {dev} == CPU op", got, exp)
            sec.true(f"normalize {dtype} channels_last={cl}: strides as the CPU op's", got.stride() == exp.stride(),
                     f"{got.stride()} != {exp.stride()}")
            n = sec.plan.ref_views
            sec.equal(f"normalize {dtype} channels_last={cl}: {dev} == reference (first {nviews(n)})", got[:n],
                      _reference.normalize(ac[:n], lut, cl))
    # replay() end to end: records -> rows -> augment -> (partner) mix -> normalize
    policy = Policy.preset("paper_imagenet_mix")
    params = force_mix(sample_params(photos, policy, ctx.seed + 8), policy)
    partners = photos[::-1]
    pparams = sample_params(partners, policy, ctx.seed + 9)
    hp, hq = host(photos), host(partners)
    n = sec.plan.ref_views
    for dtype, cl in ((torch.uint8, False), (torch.float32, False), (torch.float16, True), (torch.bfloat16, False),
                      (torch.float64, True)):
        sec.tick()
        kw = dict(out_dtype=dtype, channels_last=cl, backend="compiled")
        got = sec.run(f"replay() -> {dtype}", lambda: replay.replay(photos, params, policy, partners=partners,
                                                                   partner_params=pparams, **kw))
        if got is None:
            continue
        sec.equal(f"replay() paper_imagenet_mix -> {dtype} channels_last={cl}: {dev} == CPU op", got,
                  replay.replay(hp, params, policy, partners=hq, partner_params=pparams, **kw))
        if dtype in (torch.uint8, torch.float32):
            exp = replay.replay(hp[:n], params[:n], policy, partners=hq[:n], partner_params=pparams[:n],
                                out_dtype=dtype, channels_last=cl, backend="reference")
            sec.equal(f"replay() paper_imagenet_mix -> {dtype}: {dev} == reference (first {nviews(n)})", got[:n], exp)


def sec_augmix(sec: Section, ctx: Ctx) -> None:
    """AugMix views (the preset, timm's augmix-m5-w4-d2, and torchvision's AugMix()): the crops, the
    chains through ``augment`` and the blend through ``augmix`` on the device, against the CPU op."""
    import torchvision.transforms.v2 as T

    photos = ctx.photos()
    cpu_photos = [p.cpu() for p in photos]
    policies = (("augmix", Policy.preset("augmix")),
                ("torchvision AugMix()", Policy.from_torchvision(T.Compose([T.RandomResizedCrop(224), T.AugMix()]))))
    for i, (name, policy) in enumerate(policies):
        sec.tick()
        params = sample_params(photos, policy, ctx.seed + 90 + i)
        rows = encode(photos, params, policy)
        got = sec.run(f"AugMix views, {name}",
                      lambda: replay.augmix_pipeline(photos, params, policy, rows, OPS.augment, OPS.augmix))
        if got is not None:
            exp = replay.augmix_pipeline(cpu_photos, params, policy, rows, OPS.augment, OPS.augmix)
            sec.equal(f"AugMix views, {name}: {ctx.dev} == CPU op", got, exp, rows)


def sec_large(sec: Section, ctx: Ctx) -> None:
    side = ctx.plan.big_side
    big = smooth_sources([(side, side), (side, side), (side, 3), (5, side)], ctx.seed + 20, "cpu")
    big[1] = channels_last(big[1])
    big = [b.to(ctx.dev.device) for b in big]
    views = [big[i % 2] for i in range(8)] + big[2:]
    policy = Policy.preset("rrc_ra_re")
    _, rows = sample_rows(views, policy, ctx.seed + 21)
    check_augment(sec, f"{side}x{side} sources (contiguous and channels-last) and thin ones", views, rows, 224, 224,
                  ref=1)
    for i, (oh, ow) in enumerate(ctx.plan.big_outputs):
        sec.tick()
        policy = Policy.preset("rrc_ra_re", output_size=(oh, ow), erase_prob=0.5)
        _, rows = sample_rows(big[:2], policy, ctx.seed + 22 + i)
        check_augment(sec, f"{side}x{side} sources", big[:2], rows, oh, ow, ref=0, rows_on_device=i % 2 == 1)


def sec_batch(sec: Section, ctx: Ctx) -> None:
    photos = ctx.photos()
    hp = host(photos)
    n = ctx.plan.big_batch
    views = [photos[i % len(photos)] for i in range(n)]
    host_views = [hp[i % len(photos)] for i in range(n)]
    policy = Policy.preset("rrc_ra_re")
    params, rows = sample_rows(views, policy, ctx.seed + 30)
    got = check_augment(sec, f"batch of {n}", views, rows, 224, 224, ref=2, cpu_images=host_views)
    if got is None:
        return
    sec.tick()
    lut = _args.normalize_lut(policy, torch.float32)
    out = sec.run("normalize", lambda: OPS.normalize(got, lut.to(sec.dev.device), True))
    if out is not None:
        sec.equal(f"normalize float32 channels_last, batch of {n}: {sec.dev} == CPU op", out,
                  OPS.normalize(got.cpu(), lut, True))
    sec.tick()
    kw = dict(out_dtype=torch.bfloat16, backend="compiled")
    out = sec.run("replay()", lambda: replay.replay(views, params, policy, **kw))
    if out is not None:
        sec.equal(f"replay() -> bfloat16, batch of {n}: {sec.dev} == CPU op", out,
                  replay.replay(host_views, params, policy, **kw))


def sec_stream(sec: Section, ctx: Ctx) -> None:
    dev = ctx.dev
    photos = ctx.photos()[:8]
    policy = four_ops("paper_imagenet_mix")
    oh, ow = policy.output_size
    params = force_mix(force_ops(sample_params(photos, policy, ctx.seed + 40), policy), policy)
    rows = encode(photos, params, policy)
    margs = _args.encode_mix(params, policy)
    lut_host = _args.normalize_lut(policy, torch.float32)
    hp = host(photos)
    exp_a = OPS.augment(hp, rows, oh, ow)
    exp_m = OPS.mix(exp_a, exp_a.flip(0).contiguous(), margs)
    exp_n = OPS.normalize(exp_m, lut_host, False)
    dev.sync()
    s, on_s = dev.stream()
    try:
        with on_s:
            # Written on s after a sleep: an op that ran on another stream would read the 7s.
            bufs = [torch.full_like(p, 7) for p in photos]
            lut = lut_host.to(dev.device, non_blocking=True)
            dev.sleep(20)
            for b, p in zip(bufs, photos):
                b.copy_(p)
            a = OPS.augment(bufs, rows, oh, ow)
            m = OPS.mix(a, a.flip(0).contiguous(), margs)
            n = OPS.normalize(m, lut, False)
        if s is not None:
            s.synchronize()
    except Exception as e:  # noqa: BLE001
        sec.error("augment / mix / normalize on a non-default stream raised", e)
        return
    sec.equal(f"augment on a non-default stream: {dev} == CPU op", a, exp_a, rows)
    sec.equal(f"mix on a non-default stream: {dev} == CPU op", m, exp_m, margs)
    sec.equal(f"normalize on a non-default stream: {dev} == CPU op", n, exp_n)


def sec_devices(sec: Section, ctx: Ctx) -> None:
    if not ctx.dev.cuda:
        sec.skip("no CUDA device in the dry run")
        return
    count = torch.cuda.device_count()
    if count < 2:
        sec.skip(f"only {count} CUDA device")
        return
    d1 = Dev(torch.device("cuda", 1))
    hp = host(ctx.photos()[:8])
    photos = [p.to(d1.device) for p in hp]
    policy = four_ops("paper_imagenet_mix")
    oh, ow = policy.output_size
    params = force_mix(force_ops(sample_params(photos, policy, ctx.seed + 60), policy), policy)
    rows = encode(photos, params, policy)
    margs = _args.encode_mix(params, policy)
    with torch.cuda.device(0):  # device 0 current, every tensor on device 1
        sub = Section(sec.name, sec.limit_s, d1, sec.plan)
        a = check_augment(sub, "on cuda:1", photos, rows, oh, ow, ref=0)
        check_augment(sub, "on cuda:1", photos, rows, oh, ow, ref=0, rows_on_device=True)
        if a is not None:
            check_mix(sub, "on cuda:1", a, a.flip(0).contiguous(), margs, ref=0)
            sub.true("outputs on cuda:1", a.device == d1.device, str(a.device))
        kw = dict(out_dtype=torch.float32, backend="compiled")
        got = sub.run("replay() on cuda:1", lambda: replay.replay(photos, params, policy, partners=photos[::-1],
                                                                  partner_params=params[::-1], **kw))
        if got is not None:
            sub.equal("replay() on cuda:1 == CPU op", got, replay.replay(hp, params, policy, partners=hp[::-1],
                                                                         partner_params=params[::-1], **kw))
    sec.passed += sub.passed
    sec.failures += sub.failures


# -- the loader: an in-memory dataset and its reinforcement file
class InMemoryImages(torch.utils.data.Dataset):
    """``n`` items cycling over ``pool`` (uint8 [3, H, W] tensors): ``(image, label)``; ``transform``
    (the user's, for original samples) is applied when set."""

    def __init__(self, pool: list[torch.Tensor], n: int, num_classes: int = 10, transform=None) -> None:
        self.pool, self.n, self.transform = pool, n, transform
        self.targets = [i % num_classes for i in range(n)]
        self.classes = [f"c{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        img = self.pool[i % len(self.pool)]
        return (img if self.transform is None else self.transform(img)), self.targets[i]


class ResizeToFloat:
    """The transform of original samples: resize to the policy's output, float32 in [0, 1]."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(img[None].float(), size=self.size, mode="bilinear", align_corners=False)
        return x[0].div_(255.0)


class CheapTeacher(torch.nn.Module):
    """Average-pool to 4x4 and one linear layer: labels that cost next to nothing (they do not
    change what reading and replaying cost)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = torch.nn.Linear(48, num_classes)
        with torch.no_grad():
            for p in self.fc.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1))


def reinforced_file(dataset, policy: Policy, path: str, num_views: int = 2, device="cpu") -> str:
    from reinforced_data.generation import reinforce

    reinforce(dataset, CheapTeacher(len(dataset.classes)), path, policy=policy, num_views=num_views, topk=5, seed=1,
              device=device, num_workers=0, progress=False, overwrite=True)
    return path


def sec_sync_free(sec: Section, ctx: Ctx) -> None:
    from reinforced_data.dataset import ReinforcedDataset

    dev = ctx.dev
    photos = ctx.photos()[:8]
    # 1. replay() of a mixing policy (CPU records, as a training loop has them)
    policy = four_ops("paper_imagenet_mix")
    params = force_mix(force_ops(sample_params(photos, policy, ctx.seed + 70), policy), policy)
    pparams = sample_params(photos[::-1], policy, ctx.seed + 71)
    kw = dict(partners=photos[::-1], partner_params=pparams, out_dtype=torch.float32, backend="compiled")
    if sec.run("replay() warm-up (caches the LUT on the device)", lambda: replay.replay(photos, params, policy, **kw)) \
            is None:
        return
    try:
        with dev.no_sync():
            got = replay.replay(photos, params, policy, **kw)
        dev.sync()
    except RuntimeError as e:
        sec.error("replay() of a mixing policy synchronised with the host (set_sync_debug_mode('error'))", e)
    else:
        hp = host(photos)
        sec.equal(f"replay() of a mixing policy, no host-device sync: {dev} == CPU op", got,
                  replay.replay(hp, params, policy, **{**kw, "partners": hp[::-1]}))
    # 2. one batch of ReinforcedDataset.loader(device=...) with p < 1 (original samples too) and mixing
    sec.tick()
    oh, ow = 64, 64
    mpolicy = Policy.preset("rrc_ra_re_mix", output_size=(oh, ow))
    pool = [p.permute(1, 2, 0).contiguous().permute(2, 0, 1) for p in host(photos)]
    data = InMemoryImages(pool, 48, transform=ResizeToFloat((oh, ow)))
    # generation reads the raw images (a dataset without a transform); training wraps the same images with one
    path = reinforced_file(InMemoryImages(pool, 48), mpolicy, os.path.join(ctx.tmpdir(), "sync_free.h5"))
    ds = ReinforcedDataset(data, path, p=0.5, seed=3)
    ds.set_epoch(0)
    batch = next(iter(ds.loader(batch_size=24, device=dev.device).loader))  # collated (and pinned for CUDA)
    sec.true("the loader batch has reinforced, original and mixed samples",
             len(batch["reinforced"]) > 0 and len(batch["original"]) > 0 and batch["partner_params"] is not None
             and bool((batch["params"]["mix_mode"] != 0).any()),
             f"{len(batch['reinforced'])} reinforced, {len(batch['original'])} original")
    want_x, want_t = ds.replay_batch(batch, "cpu")
    if sec.run("replay_batch warm-up", lambda: ds.replay_batch(batch, dev.device)) is None:
        return
    try:
        with dev.no_sync():
            x, t = ds.replay_batch(batch, dev.device)
        dev.sync()
    except RuntimeError as e:
        sec.error("ReinforcedDataset.replay_batch (p=0.5) synchronised with the host", e)
        return
    sec.equal(f"loader batch with p < 1, no host-device sync: images {dev} == CPU", x, want_x)
    sec.equal(f"loader batch with p < 1: targets {dev} == CPU", t, want_t)


def sec_sanitizer_views(sec: Section, ctx: Ctx) -> None:
    """A handful of small views forcing the ops with per-view statistics and shared memory
    (Contrast, AutoContrast, Equalize, Sharpness), a padded crop reaching outside its source,
    and every mix mode; several blocks per view (48x80 outputs), so the cross-block atomics run."""
    dev = ctx.dev.device
    srcs = smooth_sources([(60, 90), (48, 80), (100, 70), (33, 47)], ctx.seed + 80, dev)
    srcs.append(torch.full((3, 50, 60), 91, dtype=torch.uint8, device=dev))
    srcs.append(channels_last(torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8,
                                            generator=torch.Generator().manual_seed(ctx.seed + 81))).to(dev))
    policy = four_ops("paper_imagenet_mix", output_size=(48, 80), erase_prob=0.5)
    params = force_mix(force_ops(sample_params(srcs, policy, ctx.seed + 82), policy), policy)
    a = check_augment(sec, "forced stat ops", srcs, encode(srcs, params, policy), 48, 80, ref=0)
    if a is not None:
        check_mix(sec, "modes 0-3", a, a.flip(0).contiguous(), _args.encode_mix(params, policy), ref=0)
        lut = _args.normalize_lut(policy, torch.float32)
        for cl in (False, True):
            out = sec.run("normalize", lambda: OPS.normalize(a, lut.to(sec.dev.device), cl))
            if out is not None:
                sec.equal(f"normalize channels_last={cl}: {sec.dev} == CPU op", out, OPS.normalize(a.cpu(), lut, cl))
    padded = four_ops("paper_cifar_ra_re", erase_prob=0.5)
    pp = force_ops(sample_params(srcs[:2], padded, ctx.seed + 83), padded)
    pp["crop"][0] = (-4, -4, 32, 32)
    pp["crop"][1] = (int(srcs[1].shape[1]) - 28, int(srcs[1].shape[2]) - 28, 32, 32)
    check_augment(sec, "padded crops reaching outside", srcs[:2], encode(srcs[:2], pp, padded), 32, 32, ref=0)


# name, function, time limit (s): their sum stays within the check step's limit in gpu_check.sh
SECTIONS: list[tuple[str, Callable[[Section, Ctx], None], float]] = [
    ("presets", sec_presets, 15),
    ("ops", sec_ops, 15),
    ("stat_ops", sec_stat_ops, 8),
    ("mix_normalize", sec_mix_normalize, 12),
    ("augmix", sec_augmix, 10),
    ("large", sec_large, 12),
    ("batch1024", sec_batch, 10),
    ("stream", sec_stream, 5),
    ("devices", sec_devices, 8),
    ("sync_free", sec_sync_free, 10),
]  # 105 s in all
SANITIZER_SECTION = ("sanitizer_views", sec_sanitizer_views, 60)


def run_checks(dev: Dev, plan: Plan = FULL, seed: int = 0, only: list[str] | None = None,
               limit_scale: float = 1.0, sections=None) -> list[Section]:
    """Run the check sections (``only``: those named), printing each check and each section's
    summary line; returns the sections."""
    sections = SECTIONS if sections is None else sections
    known = {name for name, _, _ in sections}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise SystemExit(f"gpu_replay: unknown section(s) {unknown}; choose from {sorted(known)}")
    ctx = Ctx(dev, plan, seed)
    out = []
    try:
        for name, fn, limit in sections:
            if only and name not in only:
                continue
            sec = Section(name, limit * limit_scale, dev, plan, seed)
            print(f"== section {name} (limit {sec.limit_s:.0f} s)", flush=True)
            try:
                fn(sec, ctx)
            except SectionTimeout:
                sec.stopped = True
            except Exception as e:  # noqa: BLE001 - a section that raises fails, the others still run
                sec.error(f"section {name} raised", e)
            sec.finish()
            print(sec.summary(), flush=True)
            out.append(sec)
    finally:
        ctx.close()
    return out


def verdict(sections: list[Section]) -> str:
    checks = sum(s.checks for s in sections)
    bad = [s.name for s in sections if not s.ok]
    skipped = [s.name for s in sections if s.skipped is not None and s.ok]
    tail = f"; skipped: {', '.join(skipped)}" if skipped else ""
    if bad:
        failed = sum(len(s.failures) for s in sections)
        return f"VERDICT checks: FAIL ({failed} of {checks} checks failed; sections {', '.join(bad)}{tail})"
    return f"VERDICT checks: PASS ({checks} checks in {len(sections)} section{'s' if len(sections) != 1 else ''}{tail})"


# ------------------------------------------------------------------ timing
def time_call(fn: Callable, dev: Dev, warmup: int, repeats: int) -> dict[str, float]:
    """GPU time (ms: kernels back to back, the host having queued the call during a sleep kernel),
    host time (ms until the call returns) and pipelined time (ms per call, calls back to back)."""
    host_ms = 0.0
    for _ in range(max(warmup, 1)):
        t = time.perf_counter()
        fn()
        host_ms = (time.perf_counter() - t) * 1000
        dev.sync()
    gpu, hosts = [], []
    for _ in range(repeats):
        if dev.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            dev.sleep(2 * host_ms + 1.0)
            start.record()
            t = time.perf_counter()
            fn()
            hosts.append((time.perf_counter() - t) * 1000)
            end.record()
            end.synchronize()
            gpu.append(start.elapsed_time(end))
            host_ms = max(host_ms, hosts[-1])
        else:
            t = time.perf_counter()
            fn()
            hosts.append((time.perf_counter() - t) * 1000)
            gpu.append(hosts[-1])
    dev.sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    dev.sync()
    return {"gpu_ms": statistics.median(gpu), "host_ms": statistics.median(hosts),
            "pipe_ms": (time.perf_counter() - t) * 1000 / repeats}


def run_op_timing(ctx: Ctx, batch: int, warmup: int, repeats: int) -> list[tuple[str, dict]]:
    dev = ctx.dev
    photos = [p.contiguous() for p in ctx.photos()]
    n_src = len(photos)
    images = [photos[i % n_src] for i in range(batch)]
    images_cl = [channels_last(photos[i % n_src]) for i in range(batch)]
    results = []
    for preset in ("rrc", "rrc_ra_re"):
        policy = Policy.preset(preset)
        oh, ow = policy.output_size
        params, rows_cpu = sample_rows(images, policy, ctx.seed + 7)
        rows = rows_cpu.to(dev.device)
        lut32 = _args.normalize_lut(policy, torch.float32).to(dev.device)
        lut16 = _args.normalize_lut(policy, torch.bfloat16).to(dev.device)
        cases = [
            (f"{preset}: augment (uint8)", lambda: OPS.augment(images, rows, oh, ow)),
            (f"{preset}: augment + normalize (float32)",
             lambda: OPS.normalize(OPS.augment(images, rows, oh, ow), lut32, False)),
            (f"{preset}: augment + normalize (bfloat16, channels_last)",
             lambda: OPS.normalize(OPS.augment(images, rows, oh, ow), lut16, True)),
        ]
        if preset == "rrc_ra_re":
            cases += [
                (f"{preset}: augment + normalize (float32), channels-last sources",
                 lambda: OPS.normalize(OPS.augment(images_cl, rows, oh, ow), lut32, False)),
                (f"{preset}: augment + normalize (float32), args on the host",
                 lambda: OPS.normalize(OPS.augment(images, rows_cpu, oh, ow), lut32, False)),
                (f"{preset}: replay() incl. host encode (float32)",
                 lambda: replay.replay(images, params, policy, out_dtype=torch.float32, backend="compiled")),
            ]
        for name, fn in cases:
            r = time_call(fn, dev, warmup, repeats)
            results.append((name, r))
            print(f"{name}: GPU {r['gpu_ms']:.3f} ms, host {r['host_ms']:.3f} ms, pipelined {r['pipe_ms']:.3f} ms "
                  f"per batch of {batch} ({batch / (r['pipe_ms'] / 1000):,.0f} views/s)", flush=True)
    mix_policy = Policy.preset("paper_imagenet_mix")
    params = force_mix(sample_params(images, mix_policy, ctx.seed + 8), mix_policy)
    pparams = sample_params(images[::-1], mix_policy, ctx.seed + 9)
    name = "paper_imagenet_mix: replay() with partners (float32)"
    r = time_call(lambda: replay.replay(images, params, mix_policy, partners=images[::-1], partner_params=pparams,
                                        out_dtype=torch.float32, backend="compiled"), dev, warmup, repeats)
    results.append((name, r))
    print(f"{name}: GPU {r['gpu_ms']:.3f} ms, host {r['host_ms']:.3f} ms, pipelined {r['pipe_ms']:.3f} ms", flush=True)
    return results


def run_loader_timing(ctx: Ctx, workers: int, batch: int) -> dict:
    """ReinforcedDataset.loader(device=...) end to end over in-memory channels-last sources."""
    from reinforced_data.dataset import ReinforcedDataset

    plan = ctx.plan
    pool = [channels_last(p.cpu()) for p in ctx.photos()[:plan.loader_pool]]
    while len(pool) < plan.loader_pool:
        pool += pool[:plan.loader_pool - len(pool)]
    data = InMemoryImages(pool, plan.loader_images)
    policy = Policy.preset("rrc_ra_re")
    t = time.perf_counter()
    # one view per image: which stored view a sample replays does not change what it costs
    path = reinforced_file(data, policy, os.path.join(ctx.tmpdir(), "loader.h5"), num_views=1, device=ctx.dev.device)
    made = time.perf_counter() - t
    ds = ReinforcedDataset(data, path, out_dtype=torch.float32)
    kw = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    loader = ds.loader(batch_size=batch, shuffle=True, num_workers=workers, device=ctx.dev.device, drop_last=True, **kw)

    def batches():  # epoch after epoch (persistent workers)
        while True:
            yield from loader

    it = batches()
    for _ in range(2):  # warm-up: worker start, first touches
        x, _ = next(it)
    ctx.dev.sync()
    n = plan.loader_batches
    t = time.perf_counter()
    for _ in range(n):
        x, _ = next(it)
    ctx.dev.sync()
    sec = time.perf_counter() - t
    it.close()
    del it, loader
    return {"images_per_s": n * batch / sec, "batches": n, "batch": batch, "workers": workers,
            "file_s": made, "shape": tuple(x.shape), "dtype": str(x.dtype)}


def run_decode_timing(ctx: Ctx, warmup: int, repeats: int) -> dict:
    """torchvision's GPU JPEG decoder on a batch of JPEGs, then replay() of the decoded images."""
    try:
        import torchvision
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError as e:
        return {"unavailable": f"torchvision is not installed ({e})"}
    if not ctx.dev.cuda:
        return {"unavailable": "no GPU decoder in the dry run"}
    photos = [p.contiguous().cpu() for p in ctx.photos()]
    datas = [encode_jpeg(photos[i % len(photos)], quality=90) for i in range(ctx.plan.decode_images)]
    try:
        decoded = decode_jpeg(datas[:2], device=ctx.dev.device)
        ctx.dev.sync()
    except Exception as e:  # noqa: BLE001 - a torchvision built without nvjpeg, say
        return {"unavailable": f"torchvision {torchvision.__version__} decode_jpeg(device='cuda') failed: "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    policy = Policy.preset("rrc_ra_re")
    decoded = decode_jpeg(datas, device=ctx.dev.device)
    params = sample_params(decoded, policy, ctx.seed + 90)
    n = len(datas)
    dec = time_call(lambda: decode_jpeg(datas, device=ctx.dev.device), ctx.dev, warmup, repeats)
    both = time_call(lambda: replay.replay(decode_jpeg(datas, device=ctx.dev.device), params, policy,
                                           out_dtype=torch.float32, backend="compiled"), ctx.dev, warmup, repeats)
    return {"images": n, "decode_ms": dec["pipe_ms"] / n, "both_ms": both["pipe_ms"] / n,
            "images_per_s": n / (both["pipe_ms"] / 1000), "strides": tuple(decoded[0].stride()),
            "torchvision": torchvision.__version__}


# ------------------------------------------------------------------ main
def results_text(args, dev: Dev, gpu: str, ops_rows, loader, decode, sections, kind) -> str:
    lines = [
        "# CUDA replay throughput" if dev.cuda else "# Replay timing: CPU dry run (not a GPU result)",
        "",
        f"GPU: **{gpu}**; torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"B = {args.batch} views per call, 224x224 outputs, from {kind} (~500x375 uint8, already on the device; "
        "contiguous CHW unless the row says channels-last: strides (1, 3W, 3), as decoders give them); argument "
        "rows encoded beforehand and on the device unless the row says otherwise. Per call: **GPU** = CUDA events "
        "around the call, the host having queued it while a sleep kernel kept the GPU busy (the kernels back to "
        "back); **host** = time until the call returns (validation, per-view table, launches); **pipelined** = "
        f"calls back to back, wall clock / calls. {args.warmup} warm-up calls, medians over {args.repeats} calls.",
        "",
        "| pipeline | GPU ms / batch | host ms / batch | pipelined ms / batch | views/s (pipelined) "
        "| views/s (GPU time only) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in ops_rows:
        lines.append(f"| {name} | {r['gpu_ms']:.3f} | {r['host_ms']:.3f} | {r['pipe_ms']:.3f} | "
                     f"{args.batch / (r['pipe_ms'] / 1000):,.0f} | {args.batch / (r['gpu_ms'] / 1000):,.0f} |")
    lines.append("")
    op = dict(ops_rows).get("rrc_ra_re: augment + normalize (float32)")
    if op is not None and not dev.cuda:
        lines.append(f"Target (augment + normalize, float32, 224 px, >= {TARGET_OP_VIEWS_PER_S:,} views/s on an H100): "
                     "not applicable to a dry run on the CPU op.")
    elif op is not None:
        vps = args.batch / (op["pipe_ms"] / 1000)
        lines.append(f"Target (augment + normalize, float32, 224 px, >= {TARGET_OP_VIEWS_PER_S:,} views/s on an "
                     f"H100; not asserted): {'met' if vps >= TARGET_OP_VIEWS_PER_S else 'NOT met'} on {gpu} "
                     f"({vps:,.0f} views/s pipelined, {args.batch / (op['gpu_ms'] / 1000):,.0f} from GPU time alone; "
                     f"host {op['host_ms']:.3f} ms per call).")
    if isinstance(loader, dict) and "images_per_s" in loader:
        lines.append(f"Loader end to end: `ReinforcedDataset.loader(device={str(dev.device)!r})`, rrc_ra_re float32 "
                     f"{loader['shape'][2]}x{loader['shape'][3]}, in-memory channels-last sources, "
                     f"{loader['workers']} workers, batch {loader['batch']}: **{loader['images_per_s']:,.0f} "
                     f"images/s** over {loader['batches']} batches.")
    else:
        lines.append(f"Loader end to end: not measured ({loader}).")
    if "images_per_s" in decode:
        lines.append(f"GPU JPEG decode (torchvision {decode['torchvision']} decode_jpeg(device='cuda'), batch of "
                     f"{decode['images']}): {decode['decode_ms'] * 1000:.1f} us per image; decode + replay() "
                     f"(rrc_ra_re float32): {decode['both_ms'] * 1000:.1f} us per image "
                     f"({decode['images_per_s']:,.0f} images/s; decoded strides {decode['strides']}).")
    else:
        lines.append(f"GPU JPEG decode + replay: not measured ({decode.get('unavailable')}).")
    rate = f"{loader['images_per_s']:,.0f}" if isinstance(loader, dict) and "images_per_s" in loader else "n/a"
    dec = f"{decode['images_per_s']:,.0f}" if "images_per_s" in decode else "n/a"
    lines.append(f"Target (loader end to end >= {TARGET_LOADER_IMAGES_PER_S:,} images/s from JPEG files with GPU "
                 "decode; not asserted): not measured as such by this script (the loader decodes on the CPU, in its "
                 f"workers); in-memory sources {rate} images/s, GPU decode + replay {dec} images/s.")
    if sections is None:
        lines.append("Bit-exactness checks: not run in this invocation (--no-check).")
    else:
        lines.append(f"Bit-exactness checks ({dev} vs CPU op everywhere, vs reference on a subset): "
                     + verdict(sections).split(": ", 1)[1] + ".")
        lines += ["", "```"] + [s.summary() for s in sections] + ["```"]
        bad = [f for s in sections for f in s.failures]
        if bad:
            lines += ["", "```"] + bad[:40] + ["```"]
    lines += ["", f"Command: `python benchmarks/gpu_replay.py {' '.join(sys.argv[1:])}`".rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (the dry run on the CPU op)")
    ap.add_argument("--quick", action="store_true", help="fewer and smaller cases (every kind still runs)")
    ap.add_argument("--batch", type=int, default=None, help="views per timed call (default 256; --quick 16)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 10; --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls (default 50; --quick 2)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers of the loader timing (default 12; "
                                                              "--quick 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the checks (timing only)")
    ap.add_argument("--checks-only", action="store_true", help="run the checks, no timing")
    ap.add_argument("--sanitize", action="store_true", help="only the small sanitizer workload (sanitizer_views)")
    ap.add_argument("--sections", default="", help="comma-separated check sections to run (default: all)")
    ap.add_argument("--limit-scale", type=float, default=1.0, help="multiply every section's time limit")
    ap.add_argument("--out", default=None, help=f"results file (default {DEFAULT_OUT}; the CPU dry run writes "
                                                "none unless given)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.batch = args.batch or (16 if quick else 256)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 10)
    args.repeats = args.repeats or (2 if quick else 50)
    args.workers = args.workers if args.workers is not None else (0 if quick else 12)
    plan = QUICK if quick else FULL

    dev = Dev(args.device)
    if not replay.compiled_available():
        fail_setup(f"the compiled op is unavailable ({replay._COMPILED_ERROR}); build it with "
                   "`pip install --no-build-isolation -e .` (with a CUDA toolkit for the GPU run).")
    if dev.cuda:
        if not torch.cuda.is_available():
            fail_setup("no CUDA GPU is available (torch.cuda.is_available() is False); run this on a GPU machine "
                       "(or pass --device cpu for the dry run on the CPU op).")
        try:
            OPS.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8, device=dev.device),
                          torch.zeros(3, 256, device=dev.device), False)
        except NotImplementedError as e:
            fail_setup("reinforced_data._C has no CUDA kernels (built without a CUDA toolkit?): "
                       + str(e).splitlines()[0])
        gpu = torch.cuda.get_device_name(dev.device)
    else:
        gpu = f"none (dry run on the CPU op, {os.cpu_count()} CPUs)"
    print(f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}; plan {plan.name}", flush=True)

    if args.sanitize:
        sections = run_checks(dev, plan, args.seed, sections=[SANITIZER_SECTION], limit_scale=args.limit_scale)
        print(verdict(sections))
        return 0 if all(s.ok for s in sections) else 1

    sections = None
    if not args.no_check:
        t = time.perf_counter()
        only = [s for s in args.sections.split(",") if s] or None
        sections = run_checks(dev, plan, args.seed, only=only, limit_scale=args.limit_scale)
        print(f"checks: {time.perf_counter() - t:.1f} s")
        print(verdict(sections), flush=True)
        if args.checks_only:
            if args.out:
                write_table("\n".join([f"GPU: {gpu}", ""] + [s.summary() for s in sections]
                                      + [verdict(sections)]) + "\n", args.out)
            return 0 if all(s.ok for s in sections) else 1

    ctx = Ctx(dev, plan, args.seed)
    status = 0
    try:
        t = time.perf_counter()
        ops_rows = run_op_timing(ctx, args.batch, args.warmup, args.repeats)
        print(f"TIMING op: done ({time.perf_counter() - t:.1f} s)", flush=True)
        t = time.perf_counter()
        try:
            loader = run_loader_timing(ctx, args.workers, args.batch)
            print(f"TIMING loader: {loader['images_per_s']:,.0f} images/s ({time.perf_counter() - t:.1f} s, file "
                  f"{loader['file_s']:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - reported in the table; the rest still runs
            loader = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"TIMING loader: FAILED {loader}", flush=True)
            status = 1
        t = time.perf_counter()
        try:
            decode = run_decode_timing(ctx, args.warmup, max(2, args.repeats // 5))
        except Exception as e:  # noqa: BLE001 - reported in the table
            decode = {"unavailable": f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            status = 1
        print(f"TIMING decode: {decode.get('images_per_s', decode.get('unavailable'))} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        kind = ctx.photo_kind
    finally:
        ctx.close()
    text = results_text(args, dev, gpu, ops_rows, loader, decode, sections, kind)
    print()
    print(text)
    out = args.out or (DEFAULT_OUT if dev.cuda else None)
    if out:
        write_table(text, out)
        print(f"wrote {out}")
    if sections is not None and not all(s.ok for s in sections):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
