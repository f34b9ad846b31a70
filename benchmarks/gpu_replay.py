#!/usr/bin/env python
"""CUDA replay: bit-exactness against the CPU op and the reference, then batch throughput.

Needs a CUDA GPU and the compiled op built with its CUDA kernels
(`pip install --no-build-isolation -e .` on a machine with a CUDA toolkit). Exits with
a clear message (status 2) when either is missing.

1. Checks: on random and photo-like sources with full policies (Policy.sample +
   _args.encode), torch.ops.reinforced_data.augment / mix / normalize on the GPU must
   give exactly the bytes of the same ops on the CPU and of the pure-PyTorch reference
   (reinforced_data._reference), including replay() end to end.
2. Timing: augment (+ normalize) of B=256 views at 224x224 from ~500x375 uint8 sources
   already on the GPU, argument rows already encoded and on the GPU; the sources contiguous
   CHW, and again as the channels-last views that decoders give (strides (1, 3W, 3), as
   torchvision.io.decode_jpeg(device="cuda") returns them). CUDA events around
   each call (which includes the op's own host work: copying args to the host,
   validation, building the per-view table), warm-up first, median over repeats.

Prints a markdown table and writes it to benchmarks/results/replay_gpu.md (--out).
Exit status: 0 all checks passed, 1 a check failed, 2 no GPU / no CUDA kernels.

    python benchmarks/gpu_replay.py
    python benchmarks/gpu_replay.py --batch 256 --repeats 50 --warmup 10
    python benchmarks/gpu_replay.py --no-check          # timing only
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import write_table  # noqa: E402

with warnings.catch_warnings():
    # replay warns at import when the compiled op is missing; main() reports that itself.
    warnings.simplefilter("ignore", RuntimeWarning)
    replay = importlib.import_module("reinforced_data.replay")  # the module (the package exports the function)
    from reinforced_data import _args, _reference  # noqa: E402
from reinforced_data.policy import Policy  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results", "replay_gpu.md")
DEVICE = "cuda"
TARGET_VIEWS_PER_S = 100_000


def fail_setup(msg: str) -> None:
    print(f"gpu_replay: {msg}", file=sys.stderr)
    sys.exit(2)


# ------------------------------------------------------------------ sources
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
    """benchmarks/_photos.py photos when scikit-image is installed, else smooth noise."""
    try:
        import _photos

        return [p.tensor.contiguous().to(device) for p in _photos.make_photos(n, seed=seed)], "scikit-image photos"
    except Exception as e:  # noqa: BLE001 - any missing optional dependency
        rng = np.random.default_rng(seed)
        choices = [(375, 500), (500, 375), (333, 500), (500, 333), (375, 500)]
        sizes = [choices[i] for i in rng.integers(0, len(choices), n)]
        return smooth_sources(sizes, seed, device), f"synthetic smooth images ({type(e).__name__}: no _photos)"


def sample_rows(images, policy, seed: int):
    rng = np.random.default_rng(seed)
    params = np.concatenate([policy.sample(rng, 1, int(i.shape[1]), int(i.shape[2])) for i in images])
    rows = _args.encode(params, policy, [(int(i.shape[1]), int(i.shape[2])) for i in images])
    return params, rows


# ------------------------------------------------------------------ checks
class Checker:
    def __init__(self):
        self.lines: list[str] = []
        self.failed = 0

    def equal(self, what: str, got: torch.Tensor, expected: torch.Tensor, rows=None) -> None:
        g, e = got.cpu(), expected.cpu()
        ok = g.shape == e.shape and g.dtype == e.dtype and torch.equal(g, e)
        if ok:
            msg = f"ok    {what}"
        else:
            self.failed += 1
            if g.shape != e.shape or g.dtype != e.dtype:
                msg = f"FAIL  {what}: {tuple(g.shape)} {g.dtype} vs {tuple(e.shape)} {e.dtype}"
            else:
                d = (g.double() - e.double()).abs().reshape(g.shape[0], -1)
                bad = torch.nonzero(d.amax(dim=1)).flatten().tolist()
                msg = (f"FAIL  {what}: {len(bad)} of {g.shape[0]} views differ (first {bad[:8]}), "
                       f"max |diff| {d.max().item():g}, {int((d > 0).sum())} values")
                if rows is not None:
                    msg += f"\n      row of view {bad[0]}: {rows[bad[0]].tolist()}"
        print(msg, flush=True)
        self.lines.append(msg)

    def error(self, what: str, e: BaseException) -> None:
        self.failed += 1
        msg = f"FAIL  {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(msg, flush=True)
        self.lines.append(msg)


def check_augment(ck: Checker, name: str, images_gpu, rows, oh: int, ow: int) -> None:
    ops = torch.ops.reinforced_data
    images_cpu = [i.cpu() for i in images_gpu]
    try:
        got = ops.augment(images_gpu, rows.to(DEVICE), oh, ow)
    except Exception as e:  # noqa: BLE001
        ck.error(f"augment {name} {oh}x{ow}: CUDA op raised", e)
        return
    torch.cuda.synchronize()
    ck.equal(f"augment {name} {oh}x{ow}: CUDA == reference", got, _reference.augment(images_cpu, rows, oh, ow), rows)
    try:
        cpu = ops.augment(images_cpu, rows, oh, ow)
    except Exception as e:  # noqa: BLE001
        ck.error(f"augment {name} {oh}x{ow}: CPU op raised", e)
        return
    ck.equal(f"augment {name} {oh}x{ow}: CUDA == CPU op", got, cpu, rows)


def run_checks(seed: int) -> Checker:
    ck = Checker()
    dev = torch.device(DEVICE)
    ops = torch.ops.reinforced_data

    # 1. ImageNet-like sources and sizes, the presets, 224 px
    photos, _ = photo_sources(24, seed, dev)
    for preset in ("rrc", "rrc_ra_re", "timm", "torchvision"):
        policy = Policy.preset(preset)
        _, rows = sample_rows(photos, policy, seed + 1)
        check_augment(ck, preset, photos, rows, *policy.output_size)

    # 2. every op at every step (4 ops per view), forced erasing, odd output sizes, odd sources
    rng = np.random.default_rng(seed + 2)
    sizes = [(int(rng.integers(1, 90)), int(rng.integers(1, 90))) for _ in range(40)] + [(1, 1), (1, 57), (64, 1)]
    small = smooth_sources(sizes, seed + 3, dev)
    small += [torch.randint(0, 256, (3, 37, 41), dtype=torch.uint8, device=dev) for _ in range(4)]  # white noise
    small.append(torch.randint(0, 256, (45, 60, 3), dtype=torch.uint8, device=dev).permute(2, 0, 1))  # strided
    small.append(torch.randint(0, 256, (3, 80, 90), dtype=torch.uint8, device=dev)[:, 5:60:2, 3:80:3])  # sliced
    for (oh, ow) in ((17, 31), (224, 224), (1, 1), (2, 5), (96, 160)):
        for preset, extra in (("rrc_ra_re", {}), ("timm", {"fill": (12, 200, 77)})):
            policy = Policy.preset(preset, output_size=(oh, ow), ra_num_ops=4, erase_prob=0.7, **extra)
            _, rows = sample_rows(small, policy, seed + oh * 1000 + ow)
            check_augment(ck, f"{preset}+4ops", small, rows, oh, ow)

    # 3. mix, normalize, and replay() end to end against the reference backend
    policy = Policy.preset("rrc_ra_re_mix")
    params, rows = sample_rows(photos, policy, seed + 4)
    partner_params, _ = sample_rows(photos[::-1], policy, seed + 5)
    try:
        for dtype, cl in ((torch.uint8, False), (torch.float32, False), (torch.float16, True), (torch.bfloat16, False),
                          (torch.float64, True)):
            got = replay.replay(photos, params, policy, out_dtype=dtype, channels_last=cl, partners=photos[::-1],
                                partner_params=partner_params, backend="compiled")
            exp = replay.replay([p.cpu() for p in photos], params, policy, out_dtype=dtype, channels_last=cl,
                                partners=[p.cpu() for p in photos[::-1]], partner_params=partner_params,
                                backend="reference")
            ck.equal(f"replay rrc_ra_re_mix -> {dtype} channels_last={cl}: CUDA == reference", got, exp)
    except Exception as e:  # noqa: BLE001
        ck.error("replay end to end", e)
    try:
        a = ops.augment(photos, rows.to(DEVICE), 224, 224)
        b = a.flip(0).contiguous()
        margs = _args.encode_mix(params, policy)
        got = ops.mix(a, b, margs.to(DEVICE))
        ck.equal("mix: CUDA == reference", got, _reference.mix(a.cpu(), b.cpu(), margs))
        ck.equal("mix: CUDA == CPU op", got, ops.mix(a.cpu(), b.cpu(), margs))
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            lut = _args.normalize_lut(policy, dtype)
            for cl in (False, True):
                got = ops.normalize(a, lut.to(DEVICE), cl)
                exp = _reference.normalize(a.cpu(), lut, cl)
                ck.equal(f"normalize {dtype} channels_last={cl}: CUDA == reference", got, exp)
                if got.stride() != exp.stride():
                    ck.error(f"normalize {dtype} channels_last={cl}", AssertionError(f"strides {got.stride()} != {exp.stride()}"))
                ck.equal(f"normalize {dtype} channels_last={cl}: CUDA == CPU op", got, ops.normalize(a.cpu(), lut, cl))
    except Exception as e:  # noqa: BLE001
        ck.error("mix / normalize", e)
    return ck


# ------------------------------------------------------------------ timing
def time_gpu(fn, warmup: int, repeats: int) -> tuple[float, float, float]:
    """(median, min, max) ms per call: CUDA events around each call, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times), max(times)


def run_timing(batch: int, warmup: int, repeats: int, seed: int) -> tuple[list[tuple], str]:
    dev = torch.device(DEVICE)
    ops = torch.ops.reinforced_data
    n_src = min(batch, 64)
    sources, kind = photo_sources(n_src, seed, dev)
    images = [sources[i % n_src] for i in range(batch)]
    cl_sources = [s.permute(1, 2, 0).contiguous().permute(2, 0, 1) for s in sources]
    images_cl = [cl_sources[i % n_src] for i in range(batch)]
    results = []
    for preset in ("rrc", "rrc_ra_re"):
        policy = Policy.preset(preset)
        oh, ow = policy.output_size
        params, rows_cpu = sample_rows(images, policy, seed + 7)
        rows = rows_cpu.to(dev)
        lut32 = _args.normalize_lut(policy, torch.float32).to(dev)
        lut16 = _args.normalize_lut(policy, torch.bfloat16).to(dev)
        cases = [
            (f"{preset}: augment (uint8)", lambda: ops.augment(images, rows, oh, ow)),
            (f"{preset}: augment + normalize (float32)",
             lambda: ops.normalize(ops.augment(images, rows, oh, ow), lut32, False)),
            (f"{preset}: augment + normalize (bfloat16, channels_last)",
             lambda: ops.normalize(ops.augment(images, rows, oh, ow), lut16, True)),
        ]
        if preset == "rrc_ra_re":
            cases.append((f"{preset}: augment + normalize (float32), channels-last sources",
                          lambda: ops.normalize(ops.augment(images_cl, rows, oh, ow), lut32, False)))
            cases.append((f"{preset}: replay() incl. host encode (float32)",
                          lambda: replay.replay(images, params, policy, out_dtype=torch.float32, backend="compiled")))
        for name, fn in cases:
            med, lo, hi = time_gpu(fn, warmup, repeats)
            results.append((name, med, lo, hi, batch / (med / 1000.0)))
            print(f"{name}: {med:.3f} ms / batch of {batch} ({batch / (med / 1000.0):,.0f} views/s)", flush=True)
    return results, kind


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the bit-exactness checks")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    if not torch.cuda.is_available():
        fail_setup("no CUDA GPU is available (torch.cuda.is_available() is False); run this on a GPU machine.")
    if not replay.compiled_available():
        fail_setup(f"the compiled op is unavailable ({replay._COMPILED_ERROR}); build it with "
                   "`pip install --no-build-isolation -e .` on a machine with a CUDA toolkit.")
    try:
        torch.ops.reinforced_data.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8, device=DEVICE),
                                            torch.zeros(3, 256, device=DEVICE), False)
    except NotImplementedError as e:
        fail_setup("reinforced_data._C has no CUDA kernels (built without a CUDA toolkit?): "
                   + str(e).splitlines()[0])

    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    ck = None
    if not args.no_check:
        t = time.time()
        ck = run_checks(args.seed)
        print(f"checks: {'all passed' if not ck.failed else f'{ck.failed} FAILED'} ({time.time() - t:.0f} s)")
    results, kind = run_timing(args.batch, args.warmup, args.repeats, args.seed)

    lines = [
        "# CUDA replay throughput",
        "",
        f"GPU: **{gpu}**; torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"B = {args.batch} views per call, 224x224 outputs, from {kind} (~500x375 uint8, already on the GPU; "
        "contiguous CHW unless the row says channels-last: strides (1, 3W, 3), as decoders give them); "
        f"argument rows encoded beforehand and on the GPU (except the replay() row). CUDA events around each "
        f"call, {args.warmup} warm-up calls, median (min-max) over {args.repeats} calls. "
        f"Target: >= {TARGET_VIEWS_PER_S:,} views/s for augment + normalize.",
        "",
        "| pipeline | ms / batch (median) | min-max | views/s |",
        "|---|---:|---:|---:|",
    ]
    for name, med, lo, hi, vps in results:
        lines.append(f"| {name} | {med:.3f} | {lo:.3f}-{hi:.3f} | {vps:,.0f} |")
    lines.append("")
    for suffix in ("", ", channels-last sources"):
        target = [vps for name, _, _, _, vps in results if name == "rrc_ra_re: augment + normalize (float32)" + suffix]
        if target:
            verdict = "PASS" if target[0] >= TARGET_VIEWS_PER_S else "FAIL"
            lines.append(f"Target (rrc_ra_re, augment + normalize float32{suffix}, >= {TARGET_VIEWS_PER_S:,} "
                         f"views/s): **{verdict}** ({target[0]:,.0f} views/s).")
    if ck is None:
        lines.append("Bit-exactness checks: skipped (--no-check).")
    else:
        lines.append(f"Bit-exactness checks (CUDA vs CPU op vs reference): "
                     f"{'all passed' if not ck.failed else f'{ck.failed} FAILED'} ({len(ck.lines)} checks).")
        if ck.failed:
            lines += ["", "```"] + [line for line in ck.lines if line.startswith("FAIL")] + ["```"]
    lines += ["", f"Command: `python benchmarks/gpu_replay.py {' '.join(sys.argv[1:])}`".rstrip() + ""]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    write_table(text, args.out)
    print(f"wrote {args.out}")
    return 1 if ck is not None and ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
