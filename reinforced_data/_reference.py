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
#: The op ids the kernels know (csrc/replay_args.h's enum Op); RandAugment policies name a prefix of them.
KERNEL_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
    "Invert", "SolarizeAdd", "Hue", "Grayscale", "GaussianBlur",
)
assert RA_OPS == KERNEL_OPS[:len(RA_OPS)], "policy.RA_OPS must list the kernel ops in their id order"
_OP = {name: i for i, name in enumerate(KERNEL_OPS)}
MAX_CROP = (1 << 16) - 1  # crop height, width, |top| and |left| are at most this


# ------------------------------------------------------------------ resampling
def _floordiv(a: torch.Tensor, b) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def resample_weights(n: int, m: int, device=None, filter: int = 0) -> torch.Tensor:
    """[m, n] fixed-point weights resampling ``n`` input pixels to ``m`` outputs.

    With s = max(n, m), input j lies at distance d = |(2j+1)m - (2i+1)n| from output i, in
    units where the filter's unit support is D = 2s (the support widened by n/m when
    shrinking: antialias). ``filter`` 0, triangle (bilinear): raw = max(0, D - d).
    ``filter`` 1, bicubic (Keys, a = -0.5, support 2), scaled by 2 D^2 and floored:
    raw = floordiv(3d^3 - 5d^2 D + 2D^3, D) for d < D, floordiv(-d^3 + 5d^2 D - 8d D^2 + 4D^3, D)
    for D <= d < 2D, else 0 (bicubic weights can be negative). Each row is normalised to
    2**14 over the inputs in [0, n): w = floordiv(raw * 2^14 + floordiv(total, 2), total).
    """
    s = max(n, m)
    i = torch.arange(m, dtype=torch.int64, device=device)[:, None]
    j = torch.arange(n, dtype=torch.int64, device=device)[None, :]
    d = ((2 * j + 1) * m - (2 * i + 1) * n).abs()
    D = 2 * s
    if filter == 0:
        w = (D - d).clamp_min(0)
    elif filter == 1:  # int64: d < 2D <= 4 * 65535, so d^3 < 2^56
        near = _floordiv(3 * d**3 - 5 * d**2 * D + 2 * D**3, D)
        far = _floordiv(-(d**3) + 5 * d**2 * D - 8 * d * D**2 + 4 * D**3, D)
        w = torch.where(d < D, near, torch.where(d < 2 * D, far, torch.zeros_like(d)))
    else:
        raise ValueError(f"unknown resize filter {filter}")
    total = w.sum(dim=1, keepdim=True)
    return _floordiv(w * (1 << WEIGHT_BITS) + _floordiv(total, 2), total)


def _apply_weights(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [..., n] (int64, uint8 values) times w [m, n] → uint8 values [..., m], rounded (floor of
    acc + 2^13 over 2^14, also for a negative acc) and clamped."""
    acc = torch.matmul(x.double(), w.double().t()).long()  # exact: integers < 2**53
    return ((acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS).clamp(0, 255)


def padded_crop(img: torch.Tensor, top: int, left: int, h: int, w: int, pad_fill=(0, 0, 0)) -> torch.Tensor:
    """int64 [C, h, w]: the box of ``img`` at (top, left); pixels of the box outside the image
    (the box may reach outside it, or lie wholly outside) take ``pad_fill[c]``."""
    H, W = img.shape[1], img.shape[2]
    if top >= 0 and left >= 0 and top + h <= H and left + w <= W:
        return img[:, top:top + h, left:left + w].long()
    fill = torch.tensor(list(pad_fill), dtype=torch.int64, device=img.device)
    out = fill[:, None, None].expand(img.shape[0], h, w).clone()
    y0, y1, x0, x1 = max(top, 0), min(top + h, H), max(left, 0), min(left + w, W)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top:y1 - top, x0 - left:x1 - left] = img[:, y0:y1, x0:x1]
    return out


def resized_crop(img: torch.Tensor, top: int, left: int, h: int, w: int, out_h: int, out_w: int,
                 flip: bool, filter: int = 0, pad_fill=(0, 0, 0)) -> torch.Tensor:
    """Crop (padded with ``pad_fill`` outside the image), resize with ``filter`` (horizontal pass,
    round to uint8, vertical pass) and optionally mirror."""
    crop = padded_crop(img, top, left, h, w, pad_fill)
    wx = resample_weights(w, out_w, img.device, filter)
    if flip:
        wx = wx.flip(0)
    tmp = _apply_weights(crop, wx)  # [C, h, out_w]
    wy = resample_weights(h, out_h, img.device, filter)
    return _apply_weights(tmp.transpose(1, 2), wy).transpose(1, 2)  # [C, out_h, out_w]


# ------------------------------------------------------------------ RandAugment
def _gray(x: torch.Tensor) -> torch.Tensor:
    """floor(0.2989 r + 0.587 g + 0.114 b) in Q16."""
    return (19589 * x[0] + 38470 * x[1] + 7471 * x[2]) >> 16


def _blend_q16(x: torch.Tensor, other: torch.Tensor, f: int) -> torch.Tensor:
    """clamp(floor(x*f + other*(1-f))) with the factor f in Q16."""
    v = x * f + other * (A.Q16 - f)
    return v.clamp(0, (256 << 16) - 1) >> 16


def cubic_weights_q11(f: torch.Tensor) -> list[torch.Tensor]:
    """Keys (a = -0.5) weights of the taps -1, 0, 1, 2 at fraction f / 2048, in Q11 (they sum to 2048)."""
    S = 2048
    wm1 = _floordiv(-(f**3) + 2 * f**2 * S - f * S**2, 2 * S**2)
    wp1 = _floordiv(-3 * f**3 + 4 * f**2 * S + f * S**2, 2 * S**2)
    wp2 = _floordiv(f**3 - f**2 * S, 2 * S**2)
    return [wm1, S - wm1 - wp1 - wp2, wp1, wp2]


def _geometric(x: torch.Tensor, p: list[int], fill: torch.Tensor) -> torch.Tensor:
    """Inverse affine map p[0:6] (Q16, centred) sampled with interpolation p[6]: 0 nearest, 1 bilinear,
    2 bicubic. Source taps outside the image read the fill."""
    interp = p[6] if len(p) > 6 else 0
    c, h, w = x.shape
    xs = 2 * torch.arange(w, device=x.device) + 1 - w
    ys = 2 * torch.arange(h, device=x.device) + 1 - h
    nx = p[0] * xs[None, :] + p[1] * ys[:, None] + p[2]  # source x in units of 2^-17 pixel
    ny = p[3] * xs[None, :] + p[4] * ys[:, None] + p[5]
    flat = x.reshape(c, -1)

    def tap(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
        inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
        idx = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)).reshape(-1)
        return torch.where(inside[None], flat[:, idx].reshape(c, h, w), fill[:, None, None])

    if interp == 0:
        return tap((nx + A.Q16) >> 17, (ny + A.Q16) >> 17)
    x0, y0 = nx >> 17, ny >> 17
    fx, fy = (nx >> 6) & 2047, (ny >> 6) & 2047  # the fraction in Q11
    if interp == 1:
        offsets, wx, wy = (0, 1), [2048 - fx, fx], [2048 - fy, fy]
    elif interp == 2:
        offsets, wx, wy = (-1, 0, 1, 2), cubic_weights_q11(fx), cubic_weights_q11(fy)
    else:
        raise ValueError(f"unknown interpolation {interp}")
    acc = torch.zeros((c, h, w), dtype=torch.int64, device=x.device)
    for j, dy in enumerate(offsets):
        for i, dx in enumerate(offsets):
            acc += (wy[j] * wx[i])[None] * tap(x0 + dx, y0 + dy)
    return ((acc + (1 << 21)) >> 22).clamp(0, 255)  # Q22 weights; >> floors negative sums too


def apply_op(x: torch.Tensor, op: int, p: list[int], fill: torch.Tensor) -> torch.Tensor:
    """One kernel op on x [3, H, W] (int64 holding uint8 values); p: its 6 parameters and interpolation."""
    name = KERNEL_OPS[op]
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
    if name == "Invert":
        return 255 - x
    if name == "SolarizeAdd":  # threshold f, addend p[1]
        return torch.where(x < f, (x + p[1]).clamp(0, 255), x)
    if name == "Hue":
        return hue(x, f)
    if name == "Grayscale":
        return grayscale(x, f)
    if name == "GaussianBlur":
        return gaussian_blur(x, blur_taps(p[:6]))
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


def hue(x: torch.Tensor, k: int) -> torch.Tensor:
    """ColorJitter's hue shift by ``k / 65536`` of a turn: torchvision's ``adjust_hue`` (RGB -> HSV,
    ``h = (h + k / 65536) mod 1``, HSV -> RGB, then ``floor(y * 255.999)`` to uint8) evaluated exactly.

    With M, m the largest and smallest channel and C = M - m, the hue times 6C is an integer N in
    [0, 6C); the shifted hue, in units of 1 / (6C * 2^16) of a turn, is H = (N * 2^16 + 6kC) mod
    (6C * 2^16), its sector i = H div (C * 2^16) and R = H mod (C * 2^16). The largest channel stays M,
    the smallest m, and the middle one is X = m + R / 2^16 (sectors 0, 2, 4) or M - R / 2^16 (1, 3, 5),
    stored as floor(X * 255999 / 255000). Grey pixels (C = 0) are unchanged."""
    r, g, b = x[0], x[1], x[2]
    hi = torch.maximum(torch.maximum(r, g), b)
    lo = torch.minimum(torch.minimum(r, g), b)
    c = hi - lo
    cs = c.clamp_min(1)
    n = torch.where(hi == r, g - b, torch.where(hi == g, 2 * c + b - r, 4 * c + r - g))
    n = torch.where(n < 0, n + 6 * c, n)
    unit = cs << 16
    h = torch.remainder((n << 16) + 6 * k * cs, 6 * unit)
    i = h // unit
    rem = h - i * unit
    mid = torch.where(i % 2 == 1, (hi << 16) - rem, (lo << 16) + rem) * 255999 // (255000 << 16)
    # torchvision's sector table: (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)
    table = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1]], device=x.device)
    which = table[i]  # [H, W, 3]: 0 the largest, 1 the middle, 2 the smallest
    vals = torch.stack([hi, mid, lo], dim=-1)
    out = torch.gather(vals, -1, which).permute(2, 0, 1)
    return torch.where((c == 0)[None], x, out)


def grayscale(x: torch.Tensor, formula: int) -> torch.Tensor:
    """Grey in all three channels: ``formula`` 0 is torchvision's ``rgb_to_grayscale`` on tensors,
    floor(0.2989 r + 0.587 g + 0.114 b) with Q16 coefficients (the grey Color and Contrast use); 1 is
    PIL's ``convert("L")``, (19595 r + 38470 g + 7471 b + 2^15) >> 16, exactly."""
    if formula == 1:
        g = (19595 * x[0] + 38470 * x[1] + 7471 * x[2] + (1 << 15)) >> 16
    else:
        g = _gray(x)
    return g[None].expand(3, -1, -1).clone()


BLUR_TAPS = 12  # a blur kernel has at most 23 taps: the centre and 11 on each side
BLUR_BITS = 14  # the taps sum to 2^14


def blur_taps(p: list[int]) -> list[int]:
    """The 12 taps (centre first) packed two per parameter, 16 bits each: ``p[j] = t[2j] | t[2j+1] << 16``."""
    return [(int(p[j]) >> (16 * h)) & 0xFFFF for j in range(6) for h in range(2)]


def blur_radius(taps: list[int]) -> int:
    """The largest distance with a non-zero tap (taps beyond it contribute nothing)."""
    return max((i for i, t in enumerate(taps) if t), default=0)


def reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """torch's ``reflect`` padding (the edge pixel is not repeated), repeated as often as needed."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def gaussian_blur(x: torch.Tensor, taps: list[int]) -> torch.Tensor:
    """Separable blur with symmetric Q14 taps (``taps[d]`` weighs distance d; they sum to 2^14 over -R..R)
    and reflected borders: the horizontal pass keeps ``(sum + 32) >> 6`` (Q8), the vertical pass
    rounds ``(sum + 2^21) >> 22``. Every intermediate fits int32 (Q8 values < 2^16, sums < 2^30)."""
    c, h, w = x.shape
    r = blur_radius(taps)
    d = torch.arange(-r, r + 1, device=x.device)
    t = torch.tensor([taps[abs(int(v))] for v in d.tolist()], dtype=torch.int64, device=x.device)
    cols = reflect_index(torch.arange(w, device=x.device)[:, None] + d[None, :], w)  # [w, 2r+1]
    hs = (x[:, :, cols] * t).sum(-1)  # [c, h, w]
    h8 = (hs + 32) >> 6
    rows = reflect_index(torch.arange(h, device=x.device)[:, None] + d[None, :], h)  # [h, 2r+1]
    acc = (h8[:, rows, :] * t[None, None, :, None]).sum(2)  # [c, h, w]
    return ((acc + (1 << 21)) >> 22).clamp(0, 255)


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
    """The row checks of ``csrc/replay_checks.h``, in its order and with its messages, so a direct
    call refuses the rows the compiled op refuses, saying the same."""
    if len(sizes) != args.shape[0]:
        raise RuntimeError(f"augment: got {len(sizes)} images but {args.shape[0]} args rows")
    for b in range(len(sizes)):
        r = [int(v) for v in args[b].tolist()]
        top, left, ch, cw = r[A.CROP_TOP:A.CROP_W + 1]
        if not (1 <= ch <= MAX_CROP and 1 <= cw <= MAX_CROP and abs(top) <= MAX_CROP and abs(left) <= MAX_CROP):
            raise RuntimeError(f"augment: args[{b}] crop (top={top}, left={left}, height={ch}, width={cw}) must have "
                               f"height and width in [1, {MAX_CROP}] and top and left in [-{MAX_CROP}, {MAX_CROP}]")
        if r[A.FLIP] not in (0, 1):
            raise RuntimeError(f"augment: args[{b}] flip must be 0 or 1, got {r[A.FLIP]}")
        if r[A.RESIZE_FILTER] not in (0, 1):
            raise RuntimeError(f"augment: args[{b}] resize filter must be 0 (triangle) or 1 (bicubic), "
                               f"got {r[A.RESIZE_FILTER]}")
        for c in range(3):
            if not 0 <= r[A.FILL + c] <= 255:
                raise RuntimeError(f"augment: args[{b}] fill[{c}] must lie in [0, 255], got {r[A.FILL + c]}")
            v = r[A.ERASE_VALUE + c]
            if not (-1 <= v <= 255 and (v < 0) == (r[A.ERASE_VALUE] < 0)):
                raise RuntimeError(f"augment: args[{b}] erase value[{c}] must lie in [0, 255] (or all three be -1), "
                                   f"got {v}")
            if not 0 <= r[A.PAD_FILL + c] <= 255:
                raise RuntimeError(f"augment: args[{b}] pad fill[{c}] must lie in [0, 255], got {r[A.PAD_FILL + c]}")
        et, el, eh, ew = r[A.ERASE_TOP:A.ERASE_W + 1]
        if (eh != 0 or ew != 0) and not (eh >= 1 and ew >= 1 and et >= 0 and el >= 0
                                         and et + eh <= out_h and el + ew <= out_w):
            raise RuntimeError(f"augment: args[{b}] erase box (top={et}, left={el}, height={eh}, width={ew}) lies "
                               f"outside the {out_h}x{out_w} output")
        if not 0 <= r[A.NUM_OPS] <= A.MAX_RA_OPS:
            raise RuntimeError(f"augment: args[{b}] num_ops must lie in [0, {A.MAX_RA_OPS}], got {r[A.NUM_OPS]}")
        for s in range(r[A.NUM_OPS]):
            base = A.OPS + s * A.OP_STRIDE
            op, p1, p2, interp = r[base], r[base + 1], r[base + 2], r[base + A.OP_INTERP]
            if not 0 <= op < len(KERNEL_OPS):
                raise RuntimeError(f"augment: args[{b}] op {s} has unknown op id {op} (ids are 0..{len(KERNEL_OPS) - 1})")
            name = KERNEL_OPS[op]
            if name in A.GEOMETRIC:
                if interp not in (0, 1, 2):
                    raise RuntimeError(f"augment: args[{b}] op {s} interpolation must be 0 (nearest), 1 (bilinear) "
                                       f"or 2 (bicubic), got {interp}")
            elif interp != 0:
                raise RuntimeError(f"augment: args[{b}] op {s} interpolation must be 0 for a non-geometric op, "
                                   f"got {interp}")
            if name in A.FACTOR_OPS and p1 < 0:
                raise RuntimeError(f"augment: args[{b}] op {s} factor must be >= 0, got {p1}")
            if name == "Posterize" and not (0 <= p1 <= 255 and ((256 - p1) & (255 - p1)) == 0):
                raise RuntimeError(f"augment: args[{b}] op {s} posterize mask must be (0xFF << (8 - bits)) & 0xFF "
                                   f"with bits in 0..8, got {p1}")
            if name == "Solarize" and not 0 <= p1 <= 256:
                raise RuntimeError(f"augment: args[{b}] op {s} solarize threshold must lie in [0, 256], got {p1}")
            if name == "Hue" and not -32768 <= p1 <= 32768:
                raise RuntimeError(f"augment: args[{b}] op {s} hue shift must lie in [-32768, 32768], got {p1}")
            if name == "Grayscale" and p1 not in (0, 1):
                raise RuntimeError(f"augment: args[{b}] op {s} grayscale formula must be 0 (torchvision) or 1 (PIL), "
                                   f"got {p1}")
            if name == "GaussianBlur":
                taps = blur_taps(r[base + 1:base + 7])
                nonneg = all(v >= 0 for v in r[base + 1:base + 7])
                total = taps[0] + 2 * sum(taps[1:])
                if not nonneg or total != 1 << BLUR_BITS:
                    raise RuntimeError(f"augment: args[{b}] op {s} blur taps must be non-negative and sum to "
                                       f"{1 << BLUR_BITS}, got sum {total}"
                                       + ("" if nonneg else " with a negative parameter"))
            if name == "SolarizeAdd":
                if not 0 <= p1 <= 256:
                    raise RuntimeError(f"augment: args[{b}] op {s} solarize_add threshold must lie in [0, 256], "
                                       f"got {p1}")
                if not -255 <= p2 <= 255:
                    raise RuntimeError(f"augment: args[{b}] op {s} solarize_add addend must lie in [-255, 255], "
                                       f"got {p2}")


def check_mix_rows(a: torch.Tensor, b: torch.Tensor, args: torch.Tensor) -> None:
    """The mix checks of ``csrc/replay_checks.h`` (the row checks with its messages)."""
    if a.shape != b.shape or args.dim() != 2 or args.shape[0] != a.shape[0]:
        raise RuntimeError(f"mix: a {tuple(a.shape)}, b {tuple(b.shape)} and args {tuple(args.shape)} do not match")
    _, _, h, w = a.shape
    for i in range(a.shape[0]):
        mode, q, top, left, bh, bw = [int(v) for v in args[i].tolist()]
        if mode not in (0, 1, 2, 3):
            raise RuntimeError(f"mix: args[{i}] mode must be 0, 1, 2 or 3, got {mode}")
        if not 0 <= q <= 255:
            raise RuntimeError(f"mix: args[{i}] lambda must lie in [0, 255], got {q}")
        if mode in (2, 3) and not (min(top, left, bh, bw) >= 0 and top + bh <= h and left + bw <= w):
            raise RuntimeError(f"mix: args[{i}] CutMix box (top={top}, left={left}, height={bh}, width={bw}) lies "
                               f"outside the {h}x{w} views")


def augment(images: list[torch.Tensor], args: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Reference of ``reinforced_data::augment``: uint8 [B, 3, out_h, out_w]."""
    check_augment_rows([(int(i.shape[1]), int(i.shape[2])) for i in images], args, out_h, out_w)
    device = args.device if not images else images[0].device
    out = torch.empty((len(images), 3, out_h, out_w), dtype=torch.uint8, device=device)
    for b, img in enumerate(images):
        r = [int(v) for v in args[b].tolist()]
        x = resized_crop(img, r[A.CROP_TOP], r[A.CROP_LEFT], r[A.CROP_H], r[A.CROP_W], out_h, out_w,
                         bool(r[A.FLIP]), r[A.RESIZE_FILTER], r[A.PAD_FILL:A.PAD_FILL + 3])
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
    """Reference of ``reinforced_data::mix``: mode 1 MixUp ``(a*q + b*(255-q) + 127) // 255``, mode 2 CutMix
    (the box pasted from b), mode 3 both (MixUp, then the box pasted from b)."""
    check_mix_rows(a, b, args)
    out = a.clone()
    for i in range(a.shape[0]):
        mode, q, top, left, h, w = [int(v) for v in args[i].tolist()]
        if mode in (1, 3):
            out[i] = ((a[i].long() * q + b[i].long() * (255 - q) + 127) // 255).to(torch.uint8)
        if mode in (2, 3):
            out[i, :, top:top + h, left:left + w] = b[i, :, top:top + h, left:left + w]
    return out


def check_augmix_rows(orig: torch.Tensor, chains: torch.Tensor, args: torch.Tensor) -> None:
    """The augmix checks of ``csrc/replay_checks.h`` (the row checks with its messages)."""
    if (orig.dim() != 4 or chains.dim() != 5 or chains.shape[0] != orig.shape[0] or chains.shape[2:] != orig.shape[1:]
            or args.dim() != 2 or args.shape[0] != orig.shape[0]):
        raise RuntimeError(f"augmix: orig {tuple(orig.shape)}, chains {tuple(chains.shape)} and args "
                           f"{tuple(args.shape)} do not match")
    k = chains.shape[1]
    one = 1 << A.AUGMIX_BITS
    for i in range(orig.shape[0]):
        r = [int(v) for v in args[i].tolist()]
        mode, n, o, w = r[A.AM_MODE], r[A.AM_CHAINS], r[A.AM_ORIG], r[A.AM_WEIGHTS:A.AM_WEIGHTS + A.MAX_AUGMIX_CHAINS]
        if mode not in (1, 2, 3):
            raise RuntimeError(f"augmix: args[{i}] mode must be 1 (timm), 2 (torchvision) or 3 (timm blended), got {mode}")
        if n != k:
            raise RuntimeError(f"augmix: args[{i}] holds {n} chains, the chains tensor {k}")
        if any(not 0 <= v <= one for v in w[:n]) or any(w[n:]) or not 0 <= o <= one:
            raise RuntimeError(f"augmix: args[{i}] weights must lie in [0, {one}] (0 beyond the chains)")
        total = sum(w[:n])
        if (mode == 1 and total != one) or (mode == 2 and total + o != one) or (mode == 3 and o != 0):
            raise RuntimeError(f"augmix: args[{i}] weights do not sum as mode {mode} needs "
                               f"(chains {total}, original {o}, one {one})")


def augmix(orig: torch.Tensor, chains: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """Reference of ``reinforced_data::augmix``: the AugMix blend of uint8 crops ``orig`` [B, 3, H, W] with their
    chains [B, K, 3, H, W] by Q15 weights (B = 2^15). Mode 1 (timm): ``m = (sum w_k a_k) >> 15``, then
    ``(o x + (B - o) m) >> 15``; mode 2 (torchvision): ``(o x + sum w_k a_k) >> 15``; mode 3 (timm blended):
    ``y = x``, then ``y = ((B - w_k) y + w_k a_k) >> 15`` chain by chain. Every sum fits int32."""
    check_augmix_rows(orig, chains, args)
    one = 1 << A.AUGMIX_BITS
    out = torch.empty_like(orig)
    for i in range(orig.shape[0]):
        r = [int(v) for v in args[i].tolist()]
        mode, n, o = r[A.AM_MODE], r[A.AM_CHAINS], r[A.AM_ORIG]
        w = r[A.AM_WEIGHTS:A.AM_WEIGHTS + n]
        x = orig[i].long()
        a = chains[i].long()
        if mode == 3:
            y = x
            for k in range(n):
                y = ((one - w[k]) * y + w[k] * a[k]) >> A.AUGMIX_BITS
        else:
            s = sum(w[k] * a[k] for k in range(n))
            if mode == 1:
                y = (o * x + (one - o) * (s >> A.AUGMIX_BITS)) >> A.AUGMIX_BITS
            else:
                y = (o * x + s) >> A.AUGMIX_BITS
        out[i] = y.to(torch.uint8)
    return out


def normalize(x: torch.Tensor, lut: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Reference of ``reinforced_data::normalize``: ``out[b, c, y, x] = lut[c, x[b, c, y, x]]``."""
    c = x.shape[1]
    offsets = (torch.arange(c, device=x.device) * 256).view(1, c, 1, 1)
    out = lut.reshape(-1)[x.long() + offsets]
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
