"""Shared helpers for the test suite: seeded synthetic images and small comparisons.

Imported by the test modules as ``import _util`` (pytest puts tests/ on sys.path since
the folder is not a package).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth_image(h: int, w: int, seed: int, sigma: float | None = None, channels: int = 3) -> torch.Tensor:
    """uint8 [channels, h, w]: gaussian-blurred uniform noise, stretched per channel to [0, 255].

    Smooth images look more like photographs than white noise does (neighbouring
    pixels are close, histograms are spread), which is what resampling and the
    RandAugment ops are designed for.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(channels, 1, h, w, generator=g, dtype=torch.float64)
    if sigma is None:
        sigma = max(h, w) / 24.0
    if sigma > 0.3 and h * w > 1:
        k = _gaussian_kernel(sigma)
        r = k.numel() // 2
        # separable blur with edge replication (works for any image size)
        x = torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate")
        x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1))
        x = torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate")
        x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1))
    x = x[:, 0]
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), x)
    # Each channel spans its own random sub-range of [0, 255] (as photographs do), so
    # that AutoContrast and Equalize have work to do.
    a = torch.randint(0, 64, (channels, 1, 1), generator=g).double()
    b = torch.randint(192, 256, (channels, 1, 1), generator=g).double()
    return (a + x * (b - a)).round().clamp(0, 255).to(torch.uint8)


def image_batch(sizes, seed: int) -> list[torch.Tensor]:
    return [smooth_image(h, w, seed * 1000 + i) for i, (h, w) in enumerate(sizes)]


def diff_stats(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """(max |a - b|, fraction of values that differ) of two integer tensors."""
    assert a.shape == b.shape, (a.shape, b.shape)
    d = (a.long() - b.long()).abs()
    return int(d.max()) if d.numel() else 0, float((d > 0).double().mean()) if d.numel() else 0.0


def assert_close_int(actual, expected, max_abs: int, max_frac: float, what: str = "") -> None:
    """Max |diff| <= max_abs and fraction of differing values <= max_frac."""
    m, f = diff_stats(actual, expected)
    assert m <= max_abs and f <= max_frac, (
        f"{what}: max |diff| = {m} (allowed {max_abs}), differing fraction = {f:.5%} "
        f"(allowed {max_frac:.5%})"
    )


def assert_equal_views(actual: torch.Tensor, expected: torch.Tensor, rows=None, what: str = "") -> None:
    """Bit-exact equality of [B, ...] batches, naming the first view that differs."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a = actual.cpu()
    e = expected.cpu()
    if a.dtype.is_floating_point:
        same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    else:
        same = a == e
    if bool(same.all()):
        return
    per_view = (~same).reshape(a.shape[0], -1).sum(dim=1)
    bad = torch.nonzero(per_view).flatten().tolist()
    v = bad[0]
    m, f = diff_stats(a[v].double(), e[v].double()) if not a.dtype.is_floating_point else (
        float((a[v].double() - e[v].double()).abs().max()), float((~same[v]).double().mean()))
    row = f"; row = {rows[v].tolist()}" if rows is not None else ""
    raise AssertionError(
        f"{what}: {len(bad)} of {a.shape[0]} views differ (first: view {v}, max |diff| = {m}, "
        f"differing fraction = {f:.4%}){row}"
    )


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
