"""Pure-PyTorch replay: the readable specification of every op.

Integer arithmetic throughout (int64 tensors, or float64 where every value is an
integer below 2**53, which is exact whatever the summation order), so this runs on any
device and gives exactly the bytes the C++ and CUDA kernels give. docs/replay.md states
the same formulas in prose. Argument rows come from :mod:`reinforced_data._args`.
"""

from __future__ import annotations

import torch

from . import _args as A
from .policy import RA_OPS

WEIGHT_BITS = 14  # resampling weights are normalised to sum to ~2**14
_OP = {name: i for i, name in enumerate(RA_OPS)}


# ------------------------------------------------------------------ resampling
def resample_weights(n: int, m: int, device=None) -> torch.Tensor:
    """[m, n] fixed-point weights resampling ``n`` input pixels to ``m`` outputs.

    Triangle (bilinear) filter, widened by n/m when shrinking (antialias). With
    s = max(n, m), input j contributes to output i with the integer weight
    ``max(0, 2s - |(2j+1)m - (2i+1)n|)``; each row is then normalised to 2**14 with
    round-half-up integer division.
    """
    s = max(n, m)
    i = torch.arange(m, dtype=torch.int64, device=device)[:, None]
    j = torch.arange(n, dtype=torch.int64, device=device)[None, :]
    w = (2 * s - ((2 * j + 1) * m - (2 * i + 1) * n).abs()).clamp_min(0)
    total = w.sum(dim=1, keepdim=True)
    return torch.div((w << WEIGHT_BITS) + total // 2, total, rounding_mode="floor")


def _apply_weights(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [..., n] (int64, uint8 values) times w [m, n] → uint8 values [..., m], rounded and clamped."""
    acc = torch.matmul(x.double(), w.double().t()).long()  # exact: integers < 2**53
    return ((acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS).clamp(0, 255)


def resized_crop(img: torch.Tensor, top: int, left: int, h: int, w: int, out_h: int, out_w: int,
                 flip: bool) -> torch.Tensor:
    """Crop, resize (horizontal pass, round to uint8, vertical pass) and optionally mirror."""
    crop = img[:, top:top + h, left:left + w].long()
    wx = resample_weights(w, out_w, img.device)
    if flip:
        wx = wx.flip(0)
    tmp = _apply_weights(crop, wx)  # [C, h, out_w]
    wy = resample_weights(h, out_h, img.device)
    return _apply_weights(tmp.transpose(1, 2), wy).transpose(1, 2)  # [C, out_h, out_w]


# ------------------------------------------------------------------ RandAugment
def _gray(x: torch.Tensor) -> torch.Tensor:
    """floor(0.2989 r + 0.587 g + 0.114 b) in Q16."""
    return (19589 * x[0] + 38470 * x[1] + 7471 * x[2]) >> 16


def _blend_q16(x: torch.Tensor, other: torch.Tensor, f: int) -> torch.Tensor:
    """clamp(floor(x*f + other*(1-f))) with the factor f in Q16."""
    v = x * f + other * (A.Q16 - f)
    return v.clamp(0, (256 << 16) - 1) >> 16


def _geometric(x: torch.Tensor, p: list[int], fill: torch.Tensor) -> torch.Tensor:
    c, h, w = x.shape
    xs = 2 * torch.arange(w, device=x.device) + 1 - w
    ys = 2 * torch.arange(h, device=x.device) + 1 - h
    sx = (p[0] * xs[None, :] + p[1] * ys[:, None] + p[2] + A.Q16) >> 17
    sy = (p[3] * xs[None, :] + p[4] * ys[:, None] + p[5] + A.Q16) >> 17
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    idx = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)).reshape(-1)
    out = x.reshape(c, -1)[:, idx].reshape(c, h, w)
    return torch.where(inside[None], out, fill[:, None, None])


def apply_op(x: torch.Tensor, op: int, p: list[int], fill: torch.Tensor) -> torch.Tensor:
    """One RandAugment op on x [3, H, W] (int64 holding uint8 values)."""
    name = RA_OPS[op]
    if name == "Identity":
        return x
    if name in A.GEOMETRIC:
        return _geometric(x, p, fill)
    f = p[0]
    if name == "Brightness":
        return ((x * f) >> 16).clamp(0, 255)
    if name == "Color":
        return _blend_q16(x, _gray(x)[None], f)
    if name == "Contrast":
        g = _gray(x)
        n = g.numel()
        mean_q16 = (g.sum() * A.Q16 + n // 2) // n
        # x*f + mean*(1-f) in Q32, floored, clamped
        v = x * f * A.Q16 + mean_q16 * (A.Q16 - f)
        return v.clamp(0, (256 << 32) - 1) >> 32
    if name == "Sharpness":
        c, h, w = x.shape
        if h <= 2 or w <= 2:
            return x
        s = sum(x[:, dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3))
        s = s + 4 * x[:, 1:-1, 1:-1]  # centre weight 5 of 13
        blur = (2 * s + 13) // 26  # round(s / 13); never a tie since 13 is odd
        out = x.clone()
        inner = x[:, 1:-1, 1:-1]
        v = inner * A.Q16 + (A.Q16 - f) * (blur - inner)
        out[:, 1:-1, 1:-1] = v.clamp(0, (256 << 16) - 1) >> 16
        return out
    if name == "Posterize":
        return x & f
    if name == "Solarize":
        return torch.where(x >= f, 255 - x, x)
    if name == "AutoContrast":
        lo = x.amin(dim=(1, 2), keepdim=True)
        hi = x.amax(dim=(1, 2), keepdim=True)
        span = (hi - lo).clamp_min(1)
        return torch.where(hi > lo, (x - lo) * 255 // span, x)
    if name == "Equalize":
        out = x.clone()
        for ch in range(x.shape[0]):
            flat = x[ch].reshape(-1)
            hist = torch.bincount(flat, minlength=256)
            last = int(torch.nonzero(hist)[-1])
            step = (flat.numel() - int(hist[last])) // 255
            if step == 0:
                continue
            cum = hist.cumsum(0)
            lut = torch.zeros(256, dtype=torch.int64, device=x.device)
            lut[1:] = ((cum[:-1] + step // 2) // step).clamp(0, 255)
            out[ch] = lut[x[ch]]
        return out
    raise ValueError(f"unknown RandAugment op id {op}")


# ------------------------------------------------------------------ erasing
def erase_noise(seed: int, c: int, h: int, w: int, device=None) -> torch.Tensor:
    """Per-pixel uint8 noise: murmur3's 32-bit finaliser of ((c*H + y)*W + x) ^ (seed*0x9E3779B9)."""
    m32 = 0xFFFFFFFF
    key = torch.arange(c * h * w, dtype=torch.int64, device=device).reshape(c, h, w)
    k = key ^ ((seed * 0x9E3779B9) & m32)
    k = k ^ (k >> 16)
    k = (k * 0x85EBCA6B) & m32
    k = k ^ (k >> 13)
    k = (k * 0xC2B2AE35) & m32
    k = k ^ (k >> 16)
    return k & 0xFF


# ------------------------------------------------------------------ the ops
def check_augment_rows(sizes: list[tuple[int, int]], args: torch.Tensor, out_h: int, out_w: int) -> None:
    """The row checks of ``csrc/replay_checks.h``, so a direct call refuses the rows the compiled op refuses."""
    if len(sizes) != args.shape[0]:
        raise RuntimeError(f"augment: got {len(sizes)} images but {args.shape[0]} args rows")
    for b, (h, w) in enumerate(sizes):
        r = [int(v) for v in args[b].tolist()]
        top, left, ch, cw = r[A.CROP_TOP:A.CROP_W + 1]
        if not (ch >= 1 and cw >= 1 and top >= 0 and left >= 0 and top + ch <= h and left + cw <= w):
            raise RuntimeError(f"augment: args[{b}] crop ({top}, {left}, {ch}, {cw}) lies outside images[{b}] of size {h}x{w}")
        if r[A.FLIP] not in (0, 1):
            raise RuntimeError(f"augment: args[{b}] flip must be 0 or 1, got {r[A.FLIP]}")
        fill, value = r[A.FILL:A.FILL + 3], r[A.ERASE_VALUE:A.ERASE_VALUE + 3]
        if any(not 0 <= v <= 255 for v in fill):
            raise RuntimeError(f"augment: args[{b}] fill must lie in [0, 255], got {fill}")
        if value != [-1, -1, -1] and any(not 0 <= v <= 255 for v in value):
            raise RuntimeError(f"augment: args[{b}] erase value must lie in [0, 255] (or all three be -1), got {value}")
        et, el, eh, ew = r[A.ERASE_TOP:A.ERASE_W + 1]
        if (eh != 0 or ew != 0) and not (eh >= 1 and ew >= 1 and et >= 0 and el >= 0
                                         and et + eh <= out_h and el + ew <= out_w):
            raise RuntimeError(f"augment: args[{b}] erase box ({et}, {el}, {eh}, {ew}) lies outside the {out_h}x{out_w} output")
        if not 0 <= r[A.NUM_OPS] <= A.MAX_RA_OPS:
            raise RuntimeError(f"augment: args[{b}] num_ops must lie in [0, {A.MAX_RA_OPS}], got {r[A.NUM_OPS]}")
        for s in range(r[A.NUM_OPS]):
            op, p1 = r[A.OPS + s * A.OP_STRIDE], r[A.OPS + s * A.OP_STRIDE + 1]
            if not 0 <= op < len(RA_OPS):
                raise RuntimeError(f"augment: args[{b}] op {s} has unknown op id {op}")
            name = RA_OPS[op]
            if name in A.FACTOR_OPS and p1 < 0:
                raise RuntimeError(f"augment: args[{b}] op {s} factor must be >= 0, got {p1}")
            if name == "Posterize" and not 0 <= p1 <= 255:
                raise RuntimeError(f"augment: args[{b}] op {s} posterize mask must lie in [0, 255], got {p1}")
            if name == "Solarize" and not 0 <= p1 <= 256:
                raise RuntimeError(f"augment: args[{b}] op {s} solarize threshold must lie in [0, 256], got {p1}")


def check_mix_rows(a: torch.Tensor, b: torch.Tensor, args: torch.Tensor) -> None:
    """The mix checks of ``csrc/replay_checks.h``."""
    if a.shape != b.shape or args.dim() != 2 or args.shape[0] != a.shape[0]:
        raise RuntimeError(f"mix: a {tuple(a.shape)}, b {tuple(b.shape)} and args {tuple(args.shape)} do not match")
    _, _, h, w = a.shape
    for i in range(a.shape[0]):
        mode, q, top, left, bh, bw = [int(v) for v in args[i].tolist()]
        if mode not in (0, 1, 2):
            raise RuntimeError(f"mix: args[{i}] mode must be 0, 1 or 2, got {mode}")
        if not 0 <= q <= 255:
            raise RuntimeError(f"mix: args[{i}] lambda must lie in [0, 255], got {q}")
        if mode == 2 and not (min(top, left, bh, bw) >= 0 and top + bh <= h and left + bw <= w):
            raise RuntimeError(f"mix: args[{i}] box ({top}, {left}, {bh}, {bw}) lies outside the {h}x{w} views")


def augment(images: list[torch.Tensor], args: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Reference of ``reinforced_data::augment``: uint8 [B, 3, out_h, out_w]."""
    check_augment_rows([(int(i.shape[1]), int(i.shape[2])) for i in images], args, out_h, out_w)
    device = args.device if not images else images[0].device
    out = torch.empty((len(images), 3, out_h, out_w), dtype=torch.uint8, device=device)
    for b, img in enumerate(images):
        r = [int(v) for v in args[b].tolist()]
        x = resized_crop(img, r[A.CROP_TOP], r[A.CROP_LEFT], r[A.CROP_H], r[A.CROP_W], out_h, out_w,
                         bool(r[A.FLIP]))
        fill = torch.tensor(r[A.FILL:A.FILL + 3], dtype=torch.int64, device=device)
        for s in range(r[A.NUM_OPS]):
            base = A.OPS + s * A.OP_STRIDE
            x = apply_op(x, r[base], r[base + 1:base + A.OP_STRIDE], fill)
        et, el, eh, ew = r[A.ERASE_TOP:A.ERASE_W + 1]
        if eh > 0 and ew > 0:
            if r[A.ERASE_VALUE] < 0:
                noise = erase_noise(r[A.ERASE_SEED], 3, out_h, out_w, device)
                x[:, et:et + eh, el:el + ew] = noise[:, et:et + eh, el:el + ew]
            else:
                value = torch.tensor(r[A.ERASE_VALUE:A.ERASE_VALUE + 3], dtype=torch.int64, device=device)
                x[:, et:et + eh, el:el + ew] = value[:, None, None]
        out[b] = x.to(torch.uint8)
    return out


def mix(a: torch.Tensor, b: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """Reference of ``reinforced_data::mix``: MixUp ``(a*q + b*(255-q) + 127) // 255`` or CutMix box paste."""
    check_mix_rows(a, b, args)
    out = a.clone()
    for i in range(a.shape[0]):
        mode, q, top, left, h, w = [int(v) for v in args[i].tolist()]
        if mode == 1:
            out[i] = ((a[i].long() * q + b[i].long() * (255 - q) + 127) // 255).to(torch.uint8)
        elif mode == 2:
            out[i, :, top:top + h, left:left + w] = b[i, :, top:top + h, left:left + w]
    return out


def normalize(x: torch.Tensor, lut: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Reference of ``reinforced_data::normalize``: ``out[b, c, y, x] = lut[c, x[b, c, y, x]]``."""
    c = x.shape[1]
    offsets = (torch.arange(c, device=x.device) * 256).view(1, c, 1, 1)
    out = lut.reshape(-1)[x.long() + offsets]
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
