"""Kernel arguments: stored parameters → one int32 row per view.

The stored parameters (``Policy.param_dtype``) say *what* was sampled (an op id and a
signed magnitude bin); the kernels want *how* to apply it (a fixed-point factor, a
fixed-point inverse affine matrix). This module does that translation once, in float64
on the host, through lookup tables built per policy, and quantises the result to
integers. Every backend (reference, C++, CUDA) then runs integer arithmetic only on the
same rows, which is what makes them bit-identical. The layout is mirrored in
``csrc/replay_args.h``; keep the two in step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .errors import ConfigError
from .policy import MAX_RA_OPS, RA_OPS, SIGNED_OPS, UNPARAMETERISED_OPS, Policy

# --- augment() row layout (int32) -------------------------------------------------
CROP_TOP, CROP_LEFT, CROP_H, CROP_W = 0, 1, 2, 3
FLIP = 4
FILL = 5  # 3 values
ERASE_TOP, ERASE_LEFT, ERASE_H, ERASE_W = 8, 9, 10, 11
ERASE_VALUE = 12  # 3 values; -1 means per-pixel noise from ERASE_SEED
ERASE_SEED = 15
NUM_OPS = 16
OPS = 17  # MAX_RA_OPS slots of OP_STRIDE values: op id, 6 op parameters, interpolation
OP_STRIDE = 8
OP_INTERP = 7  # offset in an op slot: 0 nearest, 1 bilinear, 2 bicubic (geometric ops)
RESIZE_FILTER = 49  # 0 triangle (bilinear, antialiased), 1 bicubic (antialiased)
PAD_FILL = 50  # 3 values: source pixels outside the image (crops may reach outside it)
NUM_ARGS = 64
assert OPS + MAX_RA_OPS * OP_STRIDE <= RESIZE_FILTER

# --- mix() row layout (int32) -----------------------------------------------------
MIX_MODE, MIX_LAM, MIX_BOX = 0, 1, 2  # box: top, left, height, width
NUM_MIX_ARGS = 6

Q16 = 1 << 16
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
FACTOR_OPS = ("Brightness", "Color", "Contrast", "Sharpness")


def _magnitudes(op: str, num_bins: int, height: int, width: int) -> np.ndarray | None:
    """torchvision's RandAugment magnitude table for ``op`` (float32 values, as it uses them)."""
    lin = lambda hi: torch.linspace(0.0, hi, num_bins)  # noqa: E731
    table = {
        "ShearX": lin(0.3), "ShearY": lin(0.3),
        "TranslateX": lin(150.0 / 331.0 * width), "TranslateY": lin(150.0 / 331.0 * height),
        "Rotate": lin(30.0),
        "Brightness": lin(0.9), "Color": lin(0.9), "Contrast": lin(0.9), "Sharpness": lin(0.9),
        "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().int(),
        "Solarize": torch.linspace(1.0, 0.0, num_bins),
    }.get(op)
    return None if table is None else table.numpy()


def _inverse_affine(angle: float, translate: tuple[float, float], shear: tuple[float, float],
                    center: tuple[float, float]) -> list[float]:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1), in centred coordinates."""
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -(a * math.tan(sx) + math.sin(rot))
    c = math.sin(rot - sy) / math.cos(sy)
    d = math.cos(rot) - c * math.tan(sx)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def _geometric_params(op: str, mag: float, height: int, width: int) -> list[int]:
    """Fixed-point inverse map of a geometric op on an ``height`` x ``width`` image.

    For output pixel (x, y) with X2 = 2x + 1 - W and Y2 = 2y + 1 - H, the source pixel is
    ``floor((A0*X2 + A1*Y2 + T0 + 2^16) / 2^17)`` (and likewise for y): nearest-neighbour
    sampling of torchvision's grid (align_corners=False) with the matrix in Q16.
    """
    corner = (-width * 0.5, -height * 0.5)  # torchvision's center=[0, 0] for shears/translates
    if op == "ShearX":
        m = _inverse_affine(0.0, (0, 0), (math.degrees(math.atan(mag)), 0.0), corner)
    elif op == "ShearY":
        m = _inverse_affine(0.0, (0, 0), (0.0, math.degrees(math.atan(mag))), corner)
    elif op == "TranslateX":
        m = _inverse_affine(0.0, (int(mag), 0), (0.0, 0.0), corner)
    elif op == "TranslateY":
        m = _inverse_affine(0.0, (0, int(mag)), (0.0, 0.0), corner)
    elif op == "Rotate":
        m = _inverse_affine(-mag, (0, 0), (0.0, 0.0), (0.0, 0.0))
    else:  # pragma: no cover - callers pass geometric ops only
        raise AssertionError(op)
    q = lambda v: int(round(v * Q16))  # noqa: E731
    t0 = int(round((m[2] + width * 0.5 - 0.5) * 2 * Q16))
    t1 = int(round((m[5] + height * 0.5 - 0.5) * 2 * Q16))
    return [q(m[0]), q(m[1]), t0, q(m[3]), q(m[4]), t1]


def op_params(op: str, signed_bin: int, num_bins: int, height: int, width: int) -> list[int]:
    """The six integer kernel parameters of one RandAugment op (unused ones are 0)."""
    table = _magnitudes(op, num_bins, height, width)
    params = [0] * 6
    if table is None:
        return params
    mag = float(table[abs(signed_bin)]) * (-1.0 if signed_bin < 0 else 1.0)
    if op in GEOMETRIC:
        return _geometric_params(op, mag, height, width)
    if op == "Brightness":
        params[0] = _brightness_factor(1.0 + mag)
    elif op in FACTOR_OPS:
        params[0] = int(round((1.0 + mag) * Q16))
    elif op == "Posterize":
        bits = int(mag)
        params[0] = (0xFF << (8 - bits)) & 0xFF
    elif op == "Solarize":
        # x >= 255 * m (compared in float32 by torchvision) <=> x >= ceil of that value
        params[0] = int(math.ceil(float(np.float32(255.0) * np.float32(mag))))
    return params


def _brightness_factor(factor: float, search: int = 64) -> int:
    """The Q16 factor whose map ``min(255, x*f >> 16)`` equals torchvision's uint8 brightness.

    torchvision computes ``floor(float32(x * factor))``; the nearest Q16 value of the factor
    can land on the other side of an integer product. Brightness is a map of 256 values,
    so search the Q16 values near the factor for one that reproduces torchvision's map
    exactly, closest first; if none does, keep the nearest.
    """
    x = torch.arange(256, dtype=torch.uint8)
    target = x.mul(factor).clamp_(0, 255).to(torch.uint8).to(torch.int64)
    nearest = int(round(factor * Q16))
    xs = x.to(torch.int64)
    for delta in sorted(range(-search, search + 1), key=abs):
        f = nearest + delta
        if f >= 0 and torch.equal(((xs * f) >> 16).clamp(max=255), target):
            return f
    return nearest


@lru_cache(maxsize=32)
def _op_table(num_bins: int, height: int, width: int) -> np.ndarray:
    """int32 [num_ops, 2*num_bins - 1, 6]: the parameters of every (op, signed bin)."""
    table = np.zeros((len(RA_OPS), 2 * num_bins - 1, 6), dtype=np.int64)
    for i, op in enumerate(RA_OPS):
        for b in range(-(num_bins - 1), num_bins):
            table[i, b + num_bins - 1] = op_params(op, b, num_bins, height, width)
    assert np.abs(table).max() < 2**31
    return table.astype(np.int32)


# Per-op magnitude range, in units of (num_bins - 1): signed ops take [-1, 1], Posterize and
# Solarize [0, 1] (their tables read the absolute bin, so a sign would be silently dropped),
# ops without a magnitude exactly 0.
_MAG_LOW = np.array([-1 if op in SIGNED_OPS else 0 for op in RA_OPS], dtype=np.int64)
_MAG_HIGH = np.array([0 if op in UNPARAMETERISED_OPS else 1 for op in RA_OPS], dtype=np.int64)


def _ints(params: np.ndarray, field: str, b: int, width: int) -> np.ndarray:
    """``params[field]`` as int64 [b, width]; a float or otherwise non-integer field is refused."""
    values = params[field]
    if values.dtype.kind not in "iub":
        raise ConfigError(f"params['{field}'] has dtype {values.dtype}; it must hold integers")
    return values.astype(np.int64).reshape(b, width)


def _refuse_first(bad: np.ndarray, field: str, values: np.ndarray, why: str) -> None:
    """Raise a ConfigError naming the first view whose row of ``bad`` is set."""
    bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"params['{field}'] of view {v} is {values[v].tolist()}: {why}")


def encode(params: np.ndarray, policy: Policy, source_sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """Check stored parameters and turn them into ``augment`` kernel rows ([B, NUM_ARGS] int32).

    ``source_sizes`` ((height, width) per view) lets the crop boxes be checked here with
    an error that names the view; the kernels check them again.
    """
    params = np.atleast_1d(params)
    b = params.shape[0]
    names = params.dtype.names or ()
    if "crop" not in names or "flip" not in names:
        raise ConfigError(f"params need fields 'crop' and 'flip'; got fields {names}")
    oh, ow = policy.output_size
    rows = np.zeros((b, NUM_ARGS), dtype=np.int64)
    crop = _ints(params, "crop", b, 4)
    rows[:, CROP_TOP:CROP_W + 1] = crop
    _refuse_first(crop[:, :2] < 0, "crop", crop, "top and left must be >= 0")
    if (crop[:, 2] < 1).any() or (crop[:, 3] < 1).any():
        v = int(np.flatnonzero((crop[:, 2] < 1) | (crop[:, 3] < 1))[0])
        raise ConfigError(f"params['crop'] of view {v} is {crop[v].tolist()}: height and width must be >= 1")
    if source_sizes is not None:
        sizes = np.asarray(source_sizes, dtype=np.int64).reshape(b, 2)
        bad = (crop[:, 0] + crop[:, 2] > sizes[:, 0]) | (crop[:, 1] + crop[:, 3] > sizes[:, 1])
        if bad.any():
            v = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"params['crop'] of view {v} (top, left, height, width = {crop[v].tolist()}) "
                f"lies outside its {sizes[v, 0]}x{sizes[v, 1]} source image"
            )
    flip = _ints(params, "flip", b, 1)[:, 0]
    if ((flip != 0) & (flip != 1)).any():
        v = int(np.flatnonzero((flip != 0) & (flip != 1))[0])
        raise ConfigError(f"params['flip'] must be 0 or 1; view {v} holds {int(flip[v])}")
    rows[:, FLIP] = flip
    rows[:, FILL:FILL + 3] = policy.fill
    if "erase" in names:
        box = _ints(params, "erase", b, 4)
        _refuse_first(box < 0, "erase", box, "every value must be >= 0")
        has = (box[:, 2] > 0) & (box[:, 3] > 0)
        bad = has & ((box[:, 0] + box[:, 2] > oh) | (box[:, 1] + box[:, 3] > ow))
        if bad.any():
            v = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"params['erase'] of view {v} ({box[v].tolist()}) lies outside the {oh}x{ow} output")
        rows[:, ERASE_TOP:ERASE_W + 1] = np.where(has[:, None], box, 0)
        if policy.erase_value == "random":
            seed = _ints(params, "erase_seed", b, 1)[:, 0]
            bad = (seed < 0) | (seed >= 1 << 16)
            if bad.any():
                v = int(np.flatnonzero(bad)[0])
                raise ConfigError(f"params['erase_seed'] of view {v} holds {int(seed[v])}; seeds must lie in [0, 65535]")
            rows[:, ERASE_VALUE:ERASE_VALUE + 3] = -1
            rows[:, ERASE_SEED] = seed
        else:
            rows[:, ERASE_VALUE:ERASE_VALUE + 3] = policy.erase_value
    if "ra_op" in names:
        ops = params["ra_op"].astype(np.int64).reshape(b, -1)
        mags = params["ra_mag"].astype(np.int64).reshape(b, -1)
        n = ops.shape[1]
        if n > MAX_RA_OPS:
            raise ConfigError(f"params['ra_op'] holds {n} ops per view; at most {MAX_RA_OPS} are supported")
        bad = (ops >= len(RA_OPS)) | (ops < 0)
        if bad.any():  # name the offending value itself (a negative id too)
            v, s = (int(i[0]) for i in np.nonzero(bad))
            raise ConfigError(
                f"params['ra_op'] holds op id {int(ops[v, s])}; ids must lie in [0, {len(RA_OPS) - 1}] "
                f"(view {v}, slot {s})"
            )
        nb = policy.ra_num_magnitude_bins
        bad = np.abs(mags) >= nb
        if bad.any():  # the signed value: -128 is reported as -128, not as its absolute value
            v, s = (int(i[0]) for i in np.nonzero(bad))
            raise ConfigError(
                f"params['ra_mag'] holds {int(mags[v, s])}; magnitudes must lie in (-{nb}, {nb}) (view {v}, slot {s})"
            )
        low, high = _MAG_LOW[ops], np.where(_MAG_HIGH[ops] > 0, nb - 1, 0)
        bad = (mags < low * (nb - 1)) | (mags > high)
        if bad.any():  # per op: signed ops ±(nb-1), Posterize/Solarize [0, nb-1], the rest 0
            v, s = (int(i[0]) for i in np.nonzero(bad))
            op = RA_OPS[int(ops[v, s])]
            allowed = "0" if high[v, s] == 0 else f"[{int(low[v, s]) * (nb - 1)}, {nb - 1}]"
            raise ConfigError(
                f"params['ra_mag'] of view {v} (slot {s}) holds {int(mags[v, s])} for {op}, "
                f"whose magnitude must be {allowed}"
            )
        table = _op_table(nb, oh, ow)
        rows[:, NUM_OPS] = n
        for s in range(n):
            base = OPS + s * OP_STRIDE
            rows[:, base] = ops[:, s]
            rows[:, base + 1:base + OP_INTERP] = table[ops[:, s], mags[:, s] + nb - 1]
    return torch.from_numpy(rows.astype(np.int32))


def encode_mix(params: np.ndarray, policy: Policy) -> torch.Tensor:
    """Check mixing parameters and turn them into ``mix`` kernel rows ([B, NUM_MIX_ARGS] int32)."""
    params = np.atleast_1d(params)
    if "mix_mode" not in (params.dtype.names or ()):
        raise ConfigError("params have no mixing fields; the policy has no MixUp or CutMix")
    oh, ow = policy.output_size
    b = params.shape[0]
    rows = np.zeros((b, NUM_MIX_ARGS), dtype=np.int64)
    mode = _ints(params, "mix_mode", b, 1)[:, 0]
    bad = (mode < 0) | (mode > 2)
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"params['mix_mode'] holds {int(mode[v])} (view {v}); modes are 0 (none), 1 (MixUp), 2 (CutMix)"
        )
    lam = _ints(params, "mix_lam", b, 1)[:, 0]
    bad = (lam < 0) | (lam > 255)
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"params['mix_lam'] of view {v} holds {int(lam[v])}; λ is stored in [0, 255]")
    box = _ints(params, "mix_box", b, 4)
    _refuse_first((mode == 2)[:, None] & (box < 0), "mix_box", box, "every value must be >= 0")
    bad = (mode == 2) & ((box[:, 0] + box[:, 2] > oh) | (box[:, 1] + box[:, 3] > ow))
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"params['mix_box'] of view {v} ({box[v].tolist()}) lies outside the {oh}x{ow} output")
    rows[:, MIX_MODE] = mode
    rows[:, MIX_LAM] = lam
    rows[:, MIX_BOX:MIX_BOX + 4] = np.where((mode == 2)[:, None], box, 0)
    return torch.from_numpy(rows.astype(np.int32))


def normalize_lut(policy: Policy, dtype: torch.dtype) -> torch.Tensor:
    """[3, 256] table: ``lut[c, v] = (v / 255 - mean[c]) / std[c]`` in ``dtype``."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    mean = torch.tensor(policy.mean, dtype=torch.float64)[:, None]
    std = torch.tensor(policy.std, dtype=torch.float64)[:, None]
    return ((v[None, :] - mean) / std).to(dtype)
