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
import re
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from . import _families as FAM
from .errors import ConfigError, CorruptFileError
from .policy import (JITTER_COMPONENTS, JITTER_KERNEL_OPS, MAX_JITTER_FACTOR, MAX_RA_OPS, RA_OPS, RESIZE_FILTERS,
                     SIGNED_OPS, UNPARAMETERISED_OPS, Policy)

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

# --- augmix() row layout (int32; format version 5) -----------------------------------
AM_MODE, AM_CHAINS, AM_ORIG, AM_WEIGHTS = 0, 1, 2, 3  # AM_WEIGHTS: MAX_AUGMIX_CHAINS values
MAX_AUGMIX_CHAINS = FAM.MAX_AUGMIX_CHAINS
NUM_AUGMIX_ARGS = 12
AUGMIX_BITS = FAM.AUGMIX_BITS
AUGMIX_TIMM, AUGMIX_TORCHVISION, AUGMIX_BLENDED = 1, 2, 3  # AM_MODE values
assert AM_WEIGHTS + MAX_AUGMIX_CHAINS <= NUM_AUGMIX_ARGS

Q16 = 1 << 16
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
FACTOR_OPS = ("Brightness", "Color", "Contrast", "Sharpness")


def _magnitudes(op: str, num_bins: int, height: int, width: int, family: str = "torchvision") -> np.ndarray | None:
    """torchvision's magnitude table for ``op`` (float32 values, as it uses them): RandAugment's
    (and AutoAugment's) space, or TrivialAugmentWide's with ``family="trivialaugment"``."""
    return FAM.torchvision_magnitudes(family, op, num_bins, height, width)


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


def op_params(op: str, signed_bin: int, num_bins: int, height: int, width: int,
              family: str = "torchvision") -> list[int]:
    """The six integer kernel parameters of one torchvision-family op (unused ones are 0)."""
    if op == "GaussianBlur":  # not a RandAugment op: the identity kernel keeps every table row a valid row
        return pack_blur_taps(FAM.gaussian_taps(1, 0))
    table = _magnitudes(op, num_bins, height, width, family)
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
    elif op == "Solarize" and family == "augmix":  # AugMix's table holds the threshold itself (0..255)
        params[0] = int(math.ceil(mag))
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
def _op_table(num_bins: int, height: int, width: int, family: str = "torchvision") -> np.ndarray:
    """int32 [num_ops, 2*num_bins - 1, 6]: the parameters of every (op, signed bin), ops of the family's list
    (for "torchvision", every kernel op of RA_OPS: Invert and SolarizeAdd, which it never samples, get zeros)."""
    names = RA_OPS if family == "torchvision" else FAM.family_ops(family)
    table = np.zeros((len(names), 2 * num_bins - 1, 6), dtype=np.int64)
    for i, op in enumerate(names):
        for b in range(-(num_bins - 1), num_bins):
            table[i, b + num_bins - 1] = op_params(op, b, num_bins, height, width, family)
    assert np.abs(table).max() < 2**31
    return table.astype(np.int32)


# Per-op magnitude range, in units of (num_bins - 1): signed ops take [-1, 1], Posterize and
# Solarize [0, 1] (their tables read the absolute bin, so a sign would be silently dropped),
# ops without a magnitude exactly 0.
def _mag_bounds(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    low = np.array([-1 if op in SIGNED_OPS else 0 for op in names], dtype=np.int64)
    high = np.array([0 if op in UNPARAMETERISED_OPS else 1 for op in names], dtype=np.int64)
    return low, high


_MAG_LOW, _MAG_HIGH = _mag_bounds(RA_OPS)
_KERNEL_GEOMETRIC = np.array([op in GEOMETRIC for op in RA_OPS])


@lru_cache(maxsize=4096)
def timm_op_row(config: str, name: str, stored: int, height: int, width: int) -> tuple[int, ...]:
    """Kernel op id and six parameters of one timm op at a stored magnitude (hundredths of a level)."""
    cfg = FAM.parse_config(config)
    kernel, arg = FAM.timm_op_args(name, stored, cfg, height, width)
    params = [0] * 6
    if kernel in GEOMETRIC:
        params = FAM.pil_affine_params(arg, height, width)
    elif kernel == "Brightness":
        params[0] = _brightness_factor(arg)  # PIL's blend with black: floor(float32(x * f)), as torchvision's
    elif kernel in FACTOR_OPS:
        params[0] = int(round(arg * Q16))
    elif kernel == "Posterize":
        bits = min(8, max(0, arg))  # timm returns the image for bits >= 8; PIL's mask for bits <= 0 is 0
        params[0] = (0xFF << (8 - bits)) & 0xFF
    elif kernel == "Solarize":
        params[0] = min(256, max(0, arg))  # PIL: x < threshold stays, else 255 - x
    elif kernel == "SolarizeAdd":
        params[0], params[1] = arg
    elif kernel == "Grayscale":
        params[0] = arg
    elif kernel == "GaussianBlur":
        params = pack_blur_taps(FAM.pil_blur_taps(int(round(arg * 1000))))
    if any(abs(v) >= 2**31 for v in params) or (kernel in FACTOR_OPS and params[0] >= 2**31):
        raise ConfigError(f"timm op {name} at level {stored / FAM.MAG_SCALE} gives kernel parameters beyond int32")
    return (FAM.KERNEL_ID[kernel], *params)


def pack_blur_taps(taps: Sequence[int]) -> list[int]:
    """GaussianBlur's six kernel parameters: the 12 Q14 taps (centre first), two 16-bit taps per int32."""
    return [int(taps[2 * j]) | (int(taps[2 * j + 1]) << 16) for j in range(6)]


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
    an error that names the view; the kernels check them again. A few records (at most
    :data:`FAST_MAX_RECORDS`, e.g. one ``dataset[i]``) go through the per-record fast path
    (:class:`_FastPlan`); more records, and any record the fast path does not accept, go
    through :func:`encode_reference`, which gives the same rows and every error message.
    """
    params = np.atleast_1d(params)
    if params.shape[0] <= FAST_MAX_RECORDS:
        plan = _fast_plan(policy, params.dtype)
        if plan is not None:
            rows = plan.encode(params, source_sizes)
            if rows is not None:
                return rows
    return encode_reference(params, policy, source_sizes)


def encode_reference(params: np.ndarray, policy: Policy,
                     source_sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """:func:`encode` vectorised over the records with numpy: the specification of the rows and of
    every refusal (the first view at fault, named)."""
    params = np.atleast_1d(params)
    b = params.shape[0]
    names = params.dtype.names or ()
    if "crop" not in names or "flip" not in names:
        raise ConfigError(f"params need fields 'crop' and 'flip'; got fields {names}")
    oh, ow = policy.output_size
    rows = np.zeros((b, NUM_ARGS), dtype=np.int64)
    crop = _ints(params, "crop", b, 4)
    rows[:, CROP_TOP:CROP_W + 1] = crop
    pad = policy.crop_padding if policy.crop_mode == "padded" else 0
    if pad == 0:
        _refuse_first(crop[:, :2] < 0, "crop", crop, "top and left must be >= 0")
    else:
        _refuse_first(crop[:, :2] < -pad, "crop", crop, f"top and left must be >= -crop_padding ({-pad})")
    if (crop[:, 2] < 1).any() or (crop[:, 3] < 1).any():
        v = int(np.flatnonzero((crop[:, 2] < 1) | (crop[:, 3] < 1))[0])
        raise ConfigError(f"params['crop'] of view {v} is {crop[v].tolist()}: height and width must be >= 1")
    if policy.crop_mode == "padded":
        _refuse_first((crop[:, 2] != oh) | (crop[:, 3] != ow), "crop", crop,
                      f"a padded crop (RandomCrop) is exactly the {oh}x{ow} output")
    if source_sizes is not None:
        sizes = np.asarray(source_sizes, dtype=np.int64).reshape(b, 2)
        bad = (crop[:, 0] + crop[:, 2] > sizes[:, 0] + pad) | (crop[:, 1] + crop[:, 3] > sizes[:, 1] + pad)
        if bad.any():
            v = int(np.flatnonzero(bad)[0])
            where = f"its {sizes[v, 0]}x{sizes[v, 1]} source image" + (f" padded by {pad}" if pad else "")
            raise ConfigError(
                f"params['crop'] of view {v} (top, left, height, width = {crop[v].tolist()}) lies outside {where}"
            )
    if "crop_filter" in names:
        filt = _ints(params, "crop_filter", b, 1)[:, 0]
        bad = (filt != 0) & (filt != 1)
        if bad.any():
            v = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"params['crop_filter'] must be 0 (bilinear) or 1 (bicubic); view {v} holds {int(filt[v])}")
        rows[:, RESIZE_FILTER] = filt
    elif policy.interpolation == "random" and policy.crop_mode == "resized":
        raise ConfigError("params have no 'crop_filter' field, but the policy draws the crop's interpolation per view")
    else:
        rows[:, RESIZE_FILTER] = RESIZE_FILTERS.get(policy.interpolation, 0)
    rows[:, PAD_FILL:PAD_FILL + 3] = policy.pad_fill
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
        if policy.ra_family in FAM.TIMM_FAMILIES:
            _encode_timm_ops(params, policy, rows, b, oh, ow)
        else:
            _encode_torchvision_ops(params, policy, rows, b, oh, ow)
    if policy.jittering or "jitter_order" in names:
        _encode_jitter(params, policy, rows, b)
    if policy.extra_ops or any(f in names for f in ("gray", "blur_sigma", "solarize")):
        _encode_extra(params, policy, rows, b)
    return torch.from_numpy(rows.astype(np.int32))


def _op_arrays(params: np.ndarray, b: int, n_names: int) -> tuple[np.ndarray, np.ndarray]:
    ops = params["ra_op"].astype(np.int64).reshape(b, -1)
    mags = params["ra_mag"].astype(np.int64).reshape(b, -1)
    n = ops.shape[1]
    if n > MAX_RA_OPS:
        raise ConfigError(f"params['ra_op'] holds {n} ops per view; at most {MAX_RA_OPS} are supported")
    bad = (ops >= n_names) | (ops < 0)
    if bad.any():  # name the offending value itself (a negative id too)
        v, s = (int(i[0]) for i in np.nonzero(bad))
        raise ConfigError(
            f"params['ra_op'] holds op id {int(ops[v, s])}; ids must lie in [0, {n_names - 1}] "
            f"(view {v}, slot {s})"
        )
    return ops, mags


def _refuse_magnitudes(ops: np.ndarray, mags: np.ndarray, names: tuple[str, ...], low: np.ndarray,
                       high: np.ndarray, what: str, unit: str = "", field: str = "ra_mag") -> None:
    """Raise a ConfigError naming the first stored magnitude outside its op's [low, high] (0 for
    ops without a magnitude); ``what`` names the op (``{op}`` is replaced), ``unit`` the scale."""
    bad = (mags < low) | (mags > high)
    if bad.any():
        v, s = (int(i[0]) for i in np.nonzero(bad))
        op = what.format(op=names[int(ops[v, s])])
        allowed = "0" if high[v, s] == 0 else f"[{int(low[v, s])}, {int(high[v, s])}]"
        raise ConfigError(
            f"params['{field}'] of view {v} (slot {s}) holds {int(mags[v, s])} for {op}, whose magnitude"
            f"{unit} must be {allowed}"
        )


def _table_slots(names: tuple[str, ...], ops: np.ndarray, mags: np.ndarray, num_bins: int, oh: int, ow: int,
                 family: str, interp_code: int) -> np.ndarray:
    """The op slots ([..., OP_STRIDE]: kernel op id, six parameters, interpolation) of the checked op ids
    ``ops`` (into ``names``) at signed bins ``mags``, from the family's table of every (op, bin)."""
    kid = np.array([FAM.KERNEL_ID[o] for o in names], dtype=np.int64)[ops]
    out = np.zeros(ops.shape + (OP_STRIDE,), dtype=np.int64)
    out[..., 0] = kid
    out[..., 1:OP_INTERP] = _op_table(num_bins, oh, ow, family)[ops, mags + num_bins - 1]
    out[..., OP_INTERP] = np.where(_KERNEL_GEOMETRIC[kid], interp_code, 0)
    return out


def _timm_slots(config: str, names: tuple[str, ...], ops: np.ndarray, mags: np.ndarray, interp: np.ndarray,
                oh: int, ow: int) -> np.ndarray:
    """The op slots ([..., OP_STRIDE]) of the checked timm op ids ``ops`` (into ``names``) at stored magnitudes
    ``mags`` with interpolation codes ``interp``: :func:`timm_op_row` once per distinct (op, magnitude)."""
    out = np.zeros(ops.shape + (OP_STRIDE,), dtype=np.int64)
    for (o, m) in set(zip(ops.reshape(-1).tolist(), mags.reshape(-1).tolist())):
        out[(ops == o) & (mags == m), :OP_INTERP] = timm_op_row(config, names[o], m, oh, ow)
    out[..., OP_INTERP] = interp
    return out


def _encode_torchvision_ops(params: np.ndarray, policy: Policy, rows: np.ndarray, b: int, oh: int, ow: int) -> None:
    family = policy.ra_family
    names = policy.ra_ops()
    ops, mags = _op_arrays(params, b, len(names))
    n = ops.shape[1]
    nb = FAM.AUTOAUGMENT_BINS if family == "autoaugment" else policy.ra_num_magnitude_bins
    bad = np.abs(mags) >= nb
    if bad.any():  # the signed value: -128 is reported as -128, not as its absolute value
        v, s = (int(i[0]) for i in np.nonzero(bad))
        raise ConfigError(
            f"params['ra_mag'] holds {int(mags[v, s])}; magnitudes must lie in (-{nb}, {nb}) (view {v}, slot {s})"
        )
    low_of, high_of = (_MAG_LOW, _MAG_HIGH) if family == "torchvision" else _mag_bounds(names)
    # per op: signed ops ±(nb-1), Posterize/Solarize [0, nb-1], the rest 0
    _refuse_magnitudes(ops, mags, names, low_of[ops] * (nb - 1), np.where(high_of[ops] > 0, nb - 1, 0), "{op}")
    rows[:, NUM_OPS] = n
    rows[:, OPS:OPS + n * OP_STRIDE] = _table_slots(names, ops, mags, nb, oh, ow, family,
                                                    FAM.INTERP_CODES[policy.ra_interpolation]).reshape(b, -1)


def _encode_timm_ops(params: np.ndarray, policy: Policy, rows: np.ndarray, b: int, oh: int, ow: int) -> None:
    names = policy.ra_ops()
    cfg = FAM.parse_config(policy.ra_config)
    ops, mags = _op_arrays(params, b, len(names))
    n = ops.shape[1]
    cap = int(round(FAM.timm_upper_bound(cfg) * FAM.MAG_SCALE))
    signed = np.array([o in FAM.TIMM_SIGNED for o in names])[ops]
    unparam = np.array([o in FAM.TIMM_UNPARAMETERISED for o in names])[ops]
    blur_rand = np.array([o == "GaussianBlurRand" for o in names])[ops]  # a radius in thousandths
    high = np.where(unparam, 0, np.where(blur_rand, FAM.BLUR_RAND_MAX, cap))
    _refuse_magnitudes(ops, mags, names, np.where(signed, -cap, 0), high, "timm's {op}",
                       " (hundredths of a level; GaussianBlurRand's: its radius in thousandths of a pixel)")
    geometric = np.array([o in FAM.TIMM_GEOMETRIC for o in names])[ops]
    if "ra_interp" in (params.dtype.names or ()):
        interp = params["ra_interp"].astype(np.int64).reshape(b, -1)
        ok = np.where(geometric, (interp == 1) | (interp == 2), interp == 0)
        if not ok.all():
            v, s = (int(i[0]) for i in np.nonzero(~ok))
            raise ConfigError(
                f"params['ra_interp'] of view {v} (slot {s}) holds {int(interp[v, s])} for {names[int(ops[v, s])]}; "
                "geometric ops take 1 (bilinear) or 2 (bicubic), the others 0"
            )
    elif cfg["interpolation"] == "random":
        raise ConfigError("params have no 'ra_interp' field, but the policy draws the ops' interpolation per op")
    else:
        interp = np.where(geometric, FAM.INTERP_CODES[cfg["interpolation"]], 0)
    rows[:, NUM_OPS] = n
    rows[:, OPS:OPS + n * OP_STRIDE] = _timm_slots(policy.ra_config, names, ops, mags, interp, oh, ow).reshape(b, -1)


def _encode_jitter(params: np.ndarray, policy: Policy, rows: np.ndarray, b: int) -> None:
    """ColorJitter's adjustments as kernel ops after the RandAugment-like stage's: the policy's enabled
    adjustments, in the view's stored order; one at its identity value (factor 2^16, hue 0) becomes
    Identity (the same bytes, no work)."""
    names = params.dtype.names or ()
    on = policy.jitter_components
    if not on:
        raise ConfigError("params have colour jitter fields, but the policy has no colour jitter")
    for field in ("jitter_order", "jitter_factor") + (("jitter_hue",) if 3 in on else ()):
        if field not in names:
            raise ConfigError(f"params have no '{field}' field, but the policy jitters "
                              f"{', '.join(JITTER_COMPONENTS[i] for i in on)}")
    packed = _ints(params, "jitter_order", b, 1)[:, 0]
    _refuse_first((packed < 0) | (packed > 255), "jitter_order", packed, "it must lie in [0, 255]")
    order = (packed[:, None] >> np.arange(0, 8, 2)) & 3  # [b, 4]
    _refuse_first(np.sort(order, axis=1) != np.arange(4), "jitter_order", order,
                  "the four 2-bit entries must be a permutation of 0..3")
    factor = _ints(params, "jitter_factor", b, 3)
    cap = int(MAX_JITTER_FACTOR) << 16
    _refuse_first((factor < 0) | (factor > cap), "jitter_factor", factor, f"factors (Q16) must lie in [0, {cap}]")
    for i in range(3):
        if i not in on:
            _refuse_first(factor[:, i] != Q16, "jitter_factor", factor,
                          f"this policy does not jitter {JITTER_COMPONENTS[i]}, whose factor must be {Q16} (1.0)")
    value = np.concatenate([factor, np.zeros((b, 1), dtype=np.int64)], axis=1)
    identity = np.array([Q16, Q16, Q16, 0])
    if 3 in on:
        hue = _ints(params, "jitter_hue", b, 1)[:, 0]
        _refuse_first((hue < -(1 << 15)) | (hue > 1 << 15), "jitter_hue", hue,
                      "the hue shift (1/65536 of a turn) must lie in [-32768, 32768]")
        value[:, 3] = hue
    enabled = np.zeros(4, dtype=bool)
    enabled[list(on)] = True
    comps = order[enabled[order]].reshape(b, len(on))  # the enabled adjustments, in the view's order
    kernel = np.array([FAM.KERNEL_ID[o] for o in JITTER_KERNEL_OPS], dtype=np.int64)
    first = int(rows[0, NUM_OPS]) if b else 0  # after the RandAugment-like stage's slots
    if first + len(on) > MAX_RA_OPS:
        raise ConfigError(f"{first} augmentation ops and {len(on)} colour jitter adjustments exceed the "
                          f"{MAX_RA_OPS} ops per view the kernels hold")
    rows[:, NUM_OPS] = first + len(on)
    idx = np.arange(b)
    for s, base in enumerate(range(OPS + first * OP_STRIDE, OPS + (first + len(on)) * OP_STRIDE, OP_STRIDE)):
        c = comps[:, s]
        v = value[idx, c]
        same = v == identity[c]
        rows[:, base] = np.where(same, 0, kernel[c])
        rows[:, base + 1] = np.where(same, 0, v)


def _encode_extra(params: np.ndarray, policy: Policy, rows: np.ndarray, b: int) -> None:
    """RandomGrayscale, GaussianBlur and RandomSolarize (format version 4) as kernel ops after the colour
    jitter's, in that order; a view that did not draw one gets Identity in its slot."""
    names = params.dtype.names or ()
    fields = {"grayscale": "gray", "blur": "blur_sigma", "solarize": "solarize"}
    on = policy.extra_ops
    for op, field in fields.items():
        if field in names and op not in on:
            raise ConfigError(f"params have a '{field}' field, but the policy has no {op} (its {op}_prob is 0)")
        if op in on and field not in names:
            raise ConfigError(f"params have no '{field}' field, but the policy's {op}_prob is "
                              f"{getattr(policy, op + '_prob')}")
    first = int(rows[0, NUM_OPS]) if b else 0
    if first + len(on) > MAX_RA_OPS:
        raise ConfigError(f"{first} augmentation ops and {len(on)} grayscale/blur/solarize ops exceed the "
                          f"{MAX_RA_OPS} ops per view the kernels hold")
    rows[:, NUM_OPS] = first + len(on)
    for s, op in enumerate(on):
        base = OPS + (first + s) * OP_STRIDE
        value = _ints(params, fields[op], b, 1)[:, 0]
        if op == "blur":
            _refuse_first((value < 0) | (value > 65535), "blur_sigma", value,
                          "sigma (thousandths of a pixel) must lie in [0, 65535]; 0 = not blurred")
            rows[:, base] = np.where(value > 0, FAM.KERNEL_ID["GaussianBlur"], 0)
            for sigma in np.unique(value[value > 0]).tolist():
                sel = value == sigma
                rows[sel, base + 1:base + 7] = pack_blur_taps(FAM.gaussian_taps(policy.blur_kernel_size, sigma))
            continue
        _refuse_first((value != 0) & (value != 1), fields[op], value, "it must be 0 or 1")
        if op == "grayscale":
            rows[:, base] = np.where(value == 1, FAM.KERNEL_ID["Grayscale"], 0)
            rows[:, base + 1] = np.where(value == 1, 1 if policy.grayscale_formula == "pil" else 0, 0)
        else:  # x >= threshold (torchvision compares the float threshold) <=> x >= ceil(threshold)
            rows[:, base] = np.where(value == 1, FAM.KERNEL_ID["Solarize"], 0)
            rows[:, base + 1] = np.where(value == 1, int(math.ceil(policy.solarize_threshold)), 0)


def encode_augmix(params: np.ndarray, policy: Policy) -> tuple[torch.Tensor, torch.Tensor]:
    """Check AugMix records (format version 5) and turn them into kernel rows: the chains' ``augment`` rows
    ([B * width, NUM_ARGS] int32, view by view, chain by chain: the identity crop of the view's crop, the
    chain's ops) and the ``augmix`` mixing rows ([B, NUM_AUGMIX_ARGS] int32). The specification; there is no
    per-record fast path (an AugMix view costs far more to replay than its rows to encode)."""
    params = np.atleast_1d(params)
    if not policy.augmix:
        raise ConfigError("encode_augmix needs an AugMix policy (augmix='torchvision' or 'timm')")
    names = params.dtype.names or ()
    need = ["am_op", "am_mag", "am_weight"] + (["am_interp"] if policy.augmix_random_interpolation else [])
    for field in need:
        if field not in names:
            raise ConfigError(f"params have no '{field}' field, but the policy is AugMix ({policy.augmix})")
    b = params.shape[0]
    w, d = policy.augmix_width, policy.augmix_slots
    oh, ow = policy.output_size
    ops = _ints(params, "am_op", b, w * d)
    mags = _ints(params, "am_mag", b, w * d)
    op_names = policy.augmix_ops
    count = len(op_names) - 1
    if policy.augmix == "torchvision" and not policy.augmix_all_ops:
        count = FAM.AUGMIX_BASIC_OPS
    _refuse_first((ops < 0) | (ops > count), "am_op", ops, f"op ids must lie in [0, {count}] (0: an unused slot)")
    slot_ops = ops.reshape(b, w, d)
    # a chain's ops come first, then Identity: a chain of depth 0, or an op after an Identity, was not drawn
    first_none = np.argmax(np.concatenate([slot_ops == 0, np.ones((b, w, 1), dtype=bool)], axis=2), axis=2)
    bad = (first_none == 0)[:, :, None] | ((slot_ops != 0) & (np.arange(d)[None, None, :] > first_none[:, :, None]))
    if policy.augmix_depth > 0:
        bad |= (first_none < policy.augmix_depth)[:, :, None]
    _refuse_first(bad, "am_op", ops, f"each chain holds {policy.augmix_depth if policy.augmix_depth > 0 else '1 to 3'} "
                  "ops, then Identity (0) in its unused slots")
    rows = np.zeros((b, w, NUM_ARGS), dtype=np.int64)
    rows[:, :, CROP_H] = oh
    rows[:, :, CROP_W] = ow
    rows[:, :, FILL:FILL + 3] = policy.fill
    rows[:, :, NUM_OPS] = d
    if policy.augmix == "torchvision":
        sev = policy.augmix_severity - 1
        low_of, high_of = _mag_bounds(op_names)
        _refuse_magnitudes(ops, mags, op_names, low_of[ops] * sev, np.where(high_of[ops] > 0, sev, 0), "AugMix's {op}",
                           " (a bin of severity " + str(policy.augmix_severity) + ")", "am_mag")
        slots = _table_slots(op_names, ops, mags, FAM.AUGMIX_BINS, oh, ow, "augmix",
                             FAM.INTERP_CODES[policy.augmix_interpolation])
    else:
        cfg = FAM.parse_config(policy.augmix_config)
        cap = int(round(FAM.timm_upper_bound(cfg) * FAM.MAG_SCALE))
        signed = np.array([o in FAM.TIMM_SIGNED for o in op_names])[ops]
        unparam = np.array([o in FAM.TIMM_UNPARAMETERISED for o in op_names])[ops]
        _refuse_magnitudes(ops, mags, op_names, np.where(signed, -cap, 0), np.where(unparam, 0, cap), "timm's {op}",
                           " (hundredths of a level)", "am_mag")
        geometric = np.array([o in FAM.TIMM_GEOMETRIC for o in op_names])[ops]
        if "am_interp" in names:
            interp = _ints(params, "am_interp", b, w * d)
            ok = np.where(geometric, (interp == 1) | (interp == 2), interp == 0)
            _refuse_first(~ok, "am_interp", interp, "geometric ops take 1 (bilinear) or 2 (bicubic), the others 0")
        else:
            interp = np.where(geometric, FAM.INTERP_CODES[cfg["interpolation"]], 0)
        slots = _timm_slots(policy.augmix_config, op_names, ops, mags, interp, oh, ow)
    rows[:, :, OPS:OPS + d * OP_STRIDE] = slots.reshape(b, w, d * OP_STRIDE)
    return torch.from_numpy(rows.reshape(b * w, NUM_ARGS).astype(np.int32)), _augmix_mix_rows(params, policy, b, w)


def _augmix_mix_rows(params: np.ndarray, policy: Policy, b: int, w: int) -> torch.Tensor:
    one = 1 << AUGMIX_BITS
    weight = _ints(params, "am_weight", b, w + 1)
    _refuse_first((weight < 0) | (weight > one), "am_weight", weight, f"weights (Q15) must lie in [0, {one}]")
    chains, orig = weight[:, :w], weight[:, w]
    rows = np.zeros((b, NUM_AUGMIX_ARGS), dtype=np.int64)
    rows[:, AM_CHAINS] = w
    if policy.augmix == "torchvision":
        _refuse_first(weight.sum(axis=1) != one, "am_weight", weight,
                      f"the chains' weights and the crop's must sum to {one}")
        rows[:, AM_MODE] = AUGMIX_TORCHVISION
        rows[:, AM_ORIG] = orig
        rows[:, AM_WEIGHTS:AM_WEIGHTS + w] = chains
    else:
        _refuse_first(chains.sum(axis=1) != one, "am_weight", weight, f"the chains' weights must sum to {one}")
        if policy.augmix_blended:
            rows[:, AM_MODE] = AUGMIX_BLENDED
            rows[:, AM_WEIGHTS:AM_WEIGHTS + w] = blended_weights(chains, orig)
        else:
            rows[:, AM_MODE] = AUGMIX_TIMM
            rows[:, AM_ORIG] = orig
            rows[:, AM_WEIGHTS:AM_WEIGHTS + w] = chains
    return torch.from_numpy(rows.astype(np.int32))


def blended_weights(chains: np.ndarray, orig: np.ndarray) -> np.ndarray:
    """timm's ``_calc_blended_weights`` on the stored Q15 weights, in float64, rounded to Q15: the factors of
    the blends one chain after another (``x = blend(x, chain, a)``) that give chain k the weight
    ``w_k * m`` overall (m = 1 - the crop's weight); 0 where nothing is left to blend."""
    one = float(1 << AUGMIX_BITS)
    ws = chains.astype(np.float64) / one * ((one - orig.astype(np.float64)) / one)[:, None]
    out = np.zeros_like(ws)
    cump = np.ones(ws.shape[0])
    for k in range(ws.shape[1] - 1, -1, -1):
        alpha = np.where(cump > 0, ws[:, k] / np.where(cump > 0, cump, 1.0), 0.0)
        alpha = np.clip(alpha, 0.0, 1.0)
        cump = cump * (1.0 - alpha)
        out[:, k] = alpha
    return np.round(out * one).astype(np.int64)


def check_records(params: np.ndarray, policy: Policy, mixing: bool, sizes: Sequence | None = None) -> None:
    """Encode records as replay encodes them, for their checks only (a ConfigError where replay would
    refuse them): their rows (against the source ``sizes`` where given), AugMix's chains and weights,
    and with ``mixing`` their mixing."""
    encode(params, policy, sizes)
    if policy.augmix:  # AugMix's chains and weights (format version 5)
        encode_augmix(params, policy)
    if mixing:
        encode_mix(params, policy)


def one_record_message(e: Exception) -> str:
    """The message of a replay error raised for a batch of one record, without its "view 0" (the
    position in that batch, not the stored view the caller names)."""
    msg = " ".join(str(e).split())
    msg = re.sub(r"\(view 0, (slot \d+)\)", r"(\1)", msg)
    msg = re.sub(r" \(view 0\)", "", msg)
    msg = re.sub(r"; view 0 holds", "; it holds", msg)
    return re.sub(r" of view 0\b", "", msg)


def damaged_record(path: str, image: str, view: int, e: Exception) -> CorruptFileError:
    """The error for stored view ``view`` of ``image`` (its name) in file ``path`` whose record replay
    refused with ``e`` (raised for that one record): damage to the file, naming the field."""
    msg = one_record_message(e)
    m = re.search(r"params\['(\w+)'\]", msg)
    field = m.group(1) if m else "ra_mag" if "timm op" in msg else "parameters"
    return CorruptFileError(
        f"{path} is damaged: stored view {view} of {image} holds an invalid '{field}' ({msg}); check the whole "
        f"file with `reinforced-data inspect --verify {path}`, then regenerate it")


def encode_mix(params: np.ndarray, policy: Policy) -> torch.Tensor:
    """Check mixing parameters and turn them into ``mix`` kernel rows ([B, NUM_MIX_ARGS] int32); a few
    records through the fast path, as :func:`encode`, the others through :func:`encode_mix_reference`."""
    params = np.atleast_1d(params)
    if params.shape[0] <= FAST_MAX_RECORDS:
        plan = _fast_plan(policy, params.dtype)
        if plan is not None:
            rows = plan.encode_mix(params)
            if rows is not None:
                return rows
    return encode_mix_reference(params, policy)


def encode_mix_reference(params: np.ndarray, policy: Policy) -> torch.Tensor:
    """:func:`encode_mix` vectorised over the records with numpy (the specification)."""
    params = np.atleast_1d(params)
    if "mix_mode" not in (params.dtype.names or ()):
        raise ConfigError("params have no mixing fields; the policy has no MixUp or CutMix")
    oh, ow = policy.output_size
    b = params.shape[0]
    rows = np.zeros((b, NUM_MIX_ARGS), dtype=np.int64)
    mode = _ints(params, "mix_mode", b, 1)[:, 0]
    bad = (mode < 0) | (mode > 3)
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"params['mix_mode'] holds {int(mode[v])} (view {v}); modes are 0 (none), 1 (MixUp), 2 (CutMix), "
            "3 (MixUp, then CutMix)"
        )
    if policy.mix_mode == "switch" and (mode == 3).any():
        v = int(np.flatnonzero(mode == 3)[0])
        raise ConfigError(f"params['mix_mode'] holds 3 (view {v}); mode 3 (MixUp, then CutMix) is drawn only by "
                          "mix_mode='sequential' policies; this policy's modes are 0 (none), 1 (MixUp), 2 (CutMix)")
    lam = _ints(params, "mix_lam", b, 1)[:, 0]
    bad = (lam < 0) | (lam > 255)
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"params['mix_lam'] of view {v} holds {int(lam[v])}; λ is stored in [0, 255]")
    box = _ints(params, "mix_box", b, 4)
    has_box = (mode == 2) | (mode == 3)
    _refuse_first(has_box[:, None] & (box < 0), "mix_box", box, "every value must be >= 0")
    bad = has_box & ((box[:, 0] + box[:, 2] > oh) | (box[:, 1] + box[:, 3] > ow))
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"params['mix_box'] of view {v} ({box[v].tolist()}) lies outside the {oh}x{ow} output")
    rows[:, MIX_MODE] = mode
    rows[:, MIX_LAM] = lam
    rows[:, MIX_BOX:MIX_BOX + 4] = np.where(has_box[:, None], box, 0)
    return torch.from_numpy(rows.astype(np.int32))


def normalize_lut(policy: Policy, dtype: torch.dtype) -> torch.Tensor:
    """[3, 256] table: ``lut[c, v] = (v / 255 - mean[c]) / std[c]`` in ``dtype``, with the policy's mean and std."""
    return normalization_lut(policy.mean, policy.std, dtype)


def normalization_lut(mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """[3, 256] table: ``lut[c, v] = (v / 255 - mean[c]) / std[c]``, computed in float64 and rounded once to
    ``dtype``: the one normalisation of replayed views (and of the teachers' inputs)."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    mean = torch.tensor(tuple(mean), dtype=torch.float64)[:, None]
    std = torch.tensor(tuple(std), dtype=torch.float64)[:, None]
    return ((v[None, :] - mean) / std).to(dtype)


# --- the per-record fast path -------------------------------------------------------
# One ``dataset[i]`` encodes one record (two more for a mixed view). encode_reference's numpy
# calls cost about 1 µs each whatever the batch size, some 20-70 µs per record; a record
# read with one struct.unpack and checked with plain integer comparisons costs a few µs.
# A plan is built once per (policy, record dtype) from the same helpers (op tables, timm op
# rows) and checked against encode_reference on sampled records when built. It accepts a
# record only where encode_reference accepts it and then gives the same row; anything
# else (a value out of range, an unknown field, a layout it does not know) returns None and
# encode_reference runs instead, so every refusal keeps its message. A new record field
# is taken by the reference until the plan knows it (_FIELD_FORMATS, _FastPlan.encode).

#: Record counts up to which encode / encode_mix take the fast path: it costs about 3 µs per
#: call plus 1.5-3 µs per record, encode_reference 20-70 µs per call plus 0.2-4 µs per record
#: (measured here on one core: the two cross between 16 and 32 records).
FAST_MAX_RECORDS = 16

#: struct codes of the integer field types the plan reads.
_STRUCT_CODES = {("u", 1): "B", ("i", 1): "b", ("u", 2): "H", ("i", 2): "h", ("u", 4): "I", ("i", 4): "i",
                 ("u", 8): "Q", ("i", 8): "q", ("b", 1): "?"}
#: The fields the plan encodes, with the element count each must have (None: ra_num_ops).
_FIELD_COUNTS = {"crop": 4, "flip": 1, "crop_filter": 1, "ra_op": None, "ra_mag": None, "ra_interp": None,
                 "jitter_order": 1, "jitter_factor": 3, "jitter_hue": 1, "erase": 4, "erase_seed": 1,
                 "mix_mode": 1, "mix_lam": 1, "mix_box": 4, "gray": 1, "blur_sigma": 1, "solarize": 1,
                 "am_op": "chains", "am_mag": "chains", "am_interp": "chains", "am_weight": "weights"}
#: AugMix's fields (format version 5) are read by encode_augmix (the reference only): the plan encodes the
#: view's own row (crop, flip, what follows the stage, erasing) and only checks their sizes.

_PLANS: dict[int, list] = {}  # id(policy) -> [policy, [(dtype, plan or None), ...]]
_PLAN_CACHE_SIZE = 64


def _fast_plan(policy: Policy, dtype: np.dtype) -> "_FastPlan | None":
    """The fast plan of ``policy`` for records of ``dtype`` (None where there is none); cached by
    identity: hashing a Policy costs more than encoding a record."""
    entry = _PLANS.get(id(policy))
    if entry is not None and entry[0] is policy:
        for d, plan in entry[1]:
            if d is dtype:
                return plan
        for d, plan in entry[1]:
            if d == dtype:
                entry[1].append((dtype, plan))
                return plan
    else:
        if len(_PLANS) >= _PLAN_CACHE_SIZE:
            _PLANS.clear()
        entry = _PLANS[id(policy)] = [policy, []]  # holds the policy: its id is not reused while cached
    plan = _FastPlan.build(policy, dtype)
    entry[1].append((dtype, plan))
    return plan


class _FastPlan:
    """Per-record encoding of one policy's records of one dtype: what encode_reference does for
    one view, as straight integer code over the record's fields unpacked by one struct."""

    @classmethod
    def build(cls, policy: Policy, dtype: np.dtype) -> "_FastPlan | None":
        import logging

        try:
            plan = cls(policy, dtype)
            agrees = plan._agrees_with_reference()
        except _NoPlan:
            return None
        except Exception as e:  # noqa: BLE001 - the fast path must never fail where the reference would not
            logging.getLogger(__name__).warning("the fast row encoder could not be built for this policy (%s: %s); "
                                                "encoding with the reference (slower, same rows)", type(e).__name__, e)
            return None
        if not agrees:
            logging.getLogger(__name__).warning(
                "the fast row encoder disagrees with encode_reference for this policy; encoding with the reference "
                "(slower, same rows)")
            return None
        return plan

    def __init__(self, policy: Policy, dtype: np.dtype) -> None:
        import struct

        self.policy = policy
        names = dtype.names
        if not names or dtype.itemsize == 0:
            raise _NoPlan
        want = policy.param_dtype()
        allowed = [[(n, want.fields[n][0].shape) for n in want.names]]
        if not policy.mixing:
            allowed.append(allowed[0] + [("mix_mode", ()), ("mix_lam", ()), ("mix_box", (4,))])
        if [(n, dtype.fields[n][0].shape) for n in names] not in allowed:
            raise _NoPlan  # replay refuses it; encode_reference encodes whatever fields it has
        # one struct over the record's bytes, fields in offset order, gaps as pad bytes
        fmt, pos, at, index = "<", 0, 0, {}
        for name, (ft, offset) in sorted(((n, dtype.fields[n][:2]) for n in names), key=lambda x: x[1][1]):
            base = ft.base
            code = _STRUCT_CODES.get((base.kind, base.itemsize))
            if (code is None or name not in _FIELD_COUNTS or offset < pos or base.byteorder == ">"
                    or (base.byteorder == "=" and sys.byteorder != "little")):
                raise _NoPlan
            count = int(np.prod(ft.shape, dtype=np.int64)) if ft.shape else 1
            want_count = _FIELD_COUNTS[name]
            if want_count == "chains":
                want_count = policy.augmix_width * policy.augmix_slots if policy.augmix else -1
            elif want_count == "weights":
                want_count = policy.augmix_width + 1 if policy.augmix else -1
            if (want_count is None and count != policy.ra_num_ops) or (want_count is not None and count != want_count):
                raise _NoPlan
            fmt += "x" * (offset - pos) + code * count
            index[name] = (at, at + count)
            at += count
            pos = offset + base.itemsize * count
        if pos > dtype.itemsize:
            raise _NoPlan
        fmt += "x" * (dtype.itemsize - pos)
        self.struct = struct.Struct(fmt)
        self.dtype = dtype
        self.itemsize = dtype.itemsize
        self.index = index
        self.names = names
        oh, ow = self.output_size = policy.output_size
        self.pad = policy.crop_padding if policy.crop_mode == "padded" else 0
        self.padded = policy.crop_mode == "padded"

        # the row's constants
        row = [0] * NUM_ARGS
        if "crop_filter" not in names:
            row[RESIZE_FILTER] = RESIZE_FILTERS.get(policy.interpolation, 0)
        row[PAD_FILL:PAD_FILL + 3] = policy.pad_fill
        row[FILL:FILL + 3] = policy.fill
        self.erase_random = False
        if "erase" in names:
            if policy.erase_value == "random":
                self.erase_random = True
                row[ERASE_VALUE:ERASE_VALUE + 3] = [-1, -1, -1]
            else:
                row[ERASE_VALUE:ERASE_VALUE + 3] = policy.erase_value
        self.template = array("i", row)

        # the RandAugment-like stage: per op id, the op's magnitude bounds and its slot values
        self.ops = None
        if "ra_op" in names:
            self._plan_ops(policy, oh, ow)
        self.jitter = None
        if policy.jittering or "jitter_order" in names:
            self._plan_jitter(policy)
        self.extra = None
        if policy.extra_ops or any(f in names for f in ("gray", "blur_sigma", "solarize")):
            self._plan_extra(policy)
        self.mix_switch = policy.mix_mode == "switch"

    def _plan_ops(self, policy: Policy, oh: int, ow: int) -> None:
        names = policy.ra_ops()
        n = policy.ra_num_ops
        if n > MAX_RA_OPS:
            raise _NoPlan
        self.num_ra_ops = n
        self.timm = policy.ra_family in FAM.TIMM_FAMILIES
        if self.timm:
            cfg = FAM.parse_config(policy.ra_config)
            cap = int(round(FAM.timm_upper_bound(cfg) * FAM.MAG_SCALE))
            geometric = [o in FAM.TIMM_GEOMETRIC for o in names]
            self.random_interp = "ra_interp" in self.names
            if not self.random_interp and cfg["interpolation"] == "random":
                raise _NoPlan
            code = 0 if self.random_interp else FAM.INTERP_CODES[cfg["interpolation"]]
            # per op id: (low, high, geometric, interpolation code when fixed)
            # (GaussianBlurRand's stored magnitude is its radius in thousandths, up to BLUR_RAND_MAX)
            self.ops = [(-cap if o in FAM.TIMM_SIGNED else 0, 0 if o in FAM.TIMM_UNPARAMETERISED else
                         (FAM.BLUR_RAND_MAX if o == "GaussianBlurRand" else cap), g,
                         code if g else 0) for o, g in zip(names, geometric)]
            self.op_names = names
            self.timm_rows: dict[tuple[int, int], array] = {}
            self.ra_config = policy.ra_config
            return
        family = policy.ra_family
        nb = FAM.AUTOAUGMENT_BINS if family == "autoaugment" else policy.ra_num_magnitude_bins
        low_of, high_of = (_MAG_LOW, _MAG_HIGH) if family == "torchvision" else _mag_bounds(names)
        table = _op_table(nb, oh, ow) if family == "torchvision" else _op_table(nb, oh, ow, family)
        interp = FAM.INTERP_CODES[policy.ra_interpolation]
        self.mag_offset = nb - 1
        self.ops = []
        for o, name in enumerate(names):
            kid = FAM.KERNEL_ID[name]
            low, high = int(low_of[o]) * (nb - 1), (nb - 1 if high_of[o] > 0 else 0)
            slot_interp = interp if _KERNEL_GEOMETRIC[kid] else 0
            # entry m + nb - 1: the slot's 8 values, or None where the magnitude is refused
            self.ops.append([array("i", (kid, *table[o, m + nb - 1].tolist(), slot_interp)) if low <= m <= high
                             else None for m in range(-(nb - 1), nb)])

    def _plan_jitter(self, policy: Policy) -> None:
        on = policy.jitter_components
        need = ("jitter_order", "jitter_factor") + (("jitter_hue",) if 3 in on else ())
        if not on or any(f not in self.names for f in need):
            raise _NoPlan  # encode_reference refuses these records, with its message
        cap = int(MAX_JITTER_FACTOR) << 16
        kernel = [FAM.KERNEL_ID[o] for o in JITTER_KERNEL_OPS]
        # per component: (factor's allowed range, kernel op id, identity value)
        bounds = [((0, cap) if i in on else (Q16, Q16)) for i in range(3)]
        self.jitter = (frozenset(on), bounds, kernel, (Q16, Q16, Q16, 0), len(on), 3 in on)

    def _plan_extra(self, policy: Policy) -> None:
        """RandomGrayscale / GaussianBlur / RandomSolarize slots (format version 4), as _encode_extra."""
        fields = {"grayscale": "gray", "blur": "blur_sigma", "solarize": "solarize"}
        on = policy.extra_ops
        if any((f in self.names) != (op in on) for op, f in fields.items()):
            raise _NoPlan  # encode_reference refuses these records, with its message
        gray = (FAM.KERNEL_ID["Grayscale"], 1 if policy.grayscale_formula == "pil" else 0)
        solarize = (FAM.KERNEL_ID["Solarize"], int(math.ceil(policy.solarize_threshold)))
        self.extra = [(op, self.index[fields[op]][0], gray if op == "grayscale" else solarize) for op in on]
        self.blur_rows: dict[int, tuple] = {}
        self.blur_kernel_size = policy.blur_kernel_size

    def _extra_slots(self, row: array, rec: tuple) -> bool:
        first = row[NUM_OPS]
        if first + len(self.extra) > MAX_RA_OPS:
            return False
        base = OPS + first * OP_STRIDE
        for op, at, slot in self.extra:
            v = rec[at]
            if op == "blur":
                if not 0 <= v <= 65535:
                    return False
                if v:
                    values = self.blur_rows.get(v)
                    if values is None:
                        values = self.blur_rows[v] = (FAM.KERNEL_ID["GaussianBlur"],
                                                      *pack_blur_taps(FAM.gaussian_taps(self.blur_kernel_size, v)))
                    row[base:base + 7] = array("i", values)
            elif v == 1:
                row[base] = slot[0]
                row[base + 1] = slot[1]
            elif v != 0:
                return False
            base += OP_STRIDE
        row[NUM_OPS] = first + len(self.extra)
        return True

    def _agrees_with_reference(self) -> bool:
        """The plan's rows equal encode_reference's on records the policy samples (a guard against a
        policy setting the plan does not know of; the tests compare them on many more records)."""
        policy = self.policy
        oh, ow = policy.output_size
        g = np.random.default_rng(0)
        sizes = [(max(oh, 9) + 2 * self.pad, max(ow, 7) + 2 * self.pad), (375, 500), (500, 333)]
        for h, w in sizes:
            sampled = policy.sample(g, 16, h, w)
            recs = np.zeros(16, dtype=self.dtype)
            for n in sampled.dtype.names:
                recs[n] = sampled[n]
            want = encode_reference(recs, policy, [(h, w)] * 16)
            for j in range(16):
                got = self.encode(recs[j:j + 1], [(h, w)])
                if got is None or not torch.equal(got[0], want[j]):
                    return False
            if "mix_mode" in self.names and policy.mixing:
                want = encode_mix_reference(recs, policy)
                for j in range(16):
                    got = self.encode_mix(recs[j:j + 1])
                    if got is None or not torch.equal(got[0], want[j]):
                        return False
        return True

    def _unpack(self, params: np.ndarray) -> list[tuple] | None:
        if params.dtype.itemsize != self.itemsize:  # pragma: no cover - the plan is per dtype
            return None
        data = params.tobytes()
        st, size = self.struct, self.itemsize
        return [st.unpack_from(data, j * size) for j in range(params.shape[0])]

    def encode(self, params: np.ndarray, sizes: list[tuple[int, int]] | None) -> torch.Tensor | None:
        """encode_reference's rows for ``params`` (checked against ``sizes`` when given), or None."""
        records = self._unpack(params)
        if records is None or (sizes is not None and len(sizes) != len(records)):
            return None
        try:
            if len(records) == 1:
                out = self._row(records[0], None if sizes is None else sizes[0])
            else:
                out = array("i")
                for j, rec in enumerate(records):
                    row = self._row(rec, None if sizes is None else sizes[j])
                    if row is None:
                        return None
                    out += row
        except OverflowError:  # a value beyond int32: encode_reference decides
            return None
        return None if out is None else _int32_rows(out, len(records), NUM_ARGS)

    def _row(self, rec: tuple, size: tuple[int, int] | None) -> array | None:
        index = self.index
        row = array("i", self.template)
        a = index["crop"][0]
        top, left, ch, cw = rec[a:a + 4]
        pad = self.pad
        if top < -pad or left < -pad or ch < 1 or cw < 1:
            return None
        oh, ow = self.output_size
        if self.padded and (ch != oh or cw != ow):
            return None
        if size is not None:
            sh, sw = size
            if top + ch > int(sh) + pad or left + cw > int(sw) + pad:
                return None
        row[0] = top
        row[1] = left
        row[2] = ch
        row[3] = cw
        if "crop_filter" in index:
            f = rec[index["crop_filter"][0]]
            if f != 0 and f != 1:
                return None
            row[RESIZE_FILTER] = f
        flip = rec[index["flip"][0]]
        if flip != 0 and flip != 1:
            return None
        row[FLIP] = flip
        if "erase" in index:
            a = index["erase"][0]
            et, el, eh, ew = rec[a:a + 4]
            if et < 0 or el < 0 or eh < 0 or ew < 0:
                return None
            if eh > 0 and ew > 0:
                if et + eh > oh or el + ew > ow:
                    return None
                row[ERASE_TOP] = et
                row[ERASE_LEFT] = el
                row[ERASE_H] = eh
                row[ERASE_W] = ew
            if self.erase_random:
                seed = rec[index["erase_seed"][0]]
                if seed < 0 or seed >= 1 << 16:
                    return None
                row[ERASE_SEED] = seed
        if self.ops is not None:
            a, b = index["ra_op"]
            ops = rec[a:b]
            a = index["ra_mag"][0]
            mags = rec[a:a + len(ops)]
            row[NUM_OPS] = len(ops)
            if self.timm:
                if not self._timm_slots(row, rec, ops, mags):
                    return None
            else:
                table, off = self.ops, self.mag_offset
                base = OPS
                for o, m in zip(ops, mags):
                    if not (0 <= o < len(table) and -off <= m <= off):
                        return None
                    slot = table[o][m + off]
                    if slot is None:
                        return None
                    row[base:base + OP_STRIDE] = slot
                    base += OP_STRIDE
        if self.jitter is not None and not self._jitter_slots(row, rec):
            return None
        if self.extra is not None and not self._extra_slots(row, rec):
            return None
        return row

    def _timm_slots(self, row: array, rec: tuple, ops: tuple, mags: tuple) -> bool:
        table, cache = self.ops, self.timm_rows
        interps = None
        if self.random_interp:
            a = self.index["ra_interp"][0]
            interps = rec[a:a + len(ops)]
        base = OPS
        for s, (o, m) in enumerate(zip(ops, mags)):
            if not 0 <= o < len(table):
                return False
            low, high, geometric, interp = table[o]
            if not low <= m <= high:
                return False
            if interps is not None:
                interp = interps[s]
                if (interp != 1 and interp != 2) if geometric else interp != 0:
                    return False
            values = cache.get((o, m))
            if values is None:
                oh, ow = self.output_size
                try:
                    values = array("i", timm_op_row(self.ra_config, self.op_names[o], m, oh, ow))
                except (ConfigError, OverflowError):
                    return False
                cache[(o, m)] = values
            row[base:base + OP_INTERP] = values
            row[base + OP_INTERP] = interp
            base += OP_STRIDE
        return True

    def _jitter_slots(self, row: array, rec: tuple) -> bool:
        on, bounds, kernel, identity, count, hue_on = self.jitter
        index = self.index
        packed = rec[index["jitter_order"][0]]
        if not 0 <= packed <= 255:
            return False
        order = (packed & 3, (packed >> 2) & 3, (packed >> 4) & 3, (packed >> 6) & 3)
        if sorted(order) != [0, 1, 2, 3]:
            return False
        a = index["jitter_factor"][0]
        value = list(rec[a:a + 3])
        for v, (lo, hi) in zip(value, bounds):
            if not lo <= v <= hi:
                return False
        if hue_on:
            hue = rec[index["jitter_hue"][0]]
            if not -(1 << 15) <= hue <= 1 << 15:
                return False
            value.append(hue)
        else:
            value.append(0)
        first = row[NUM_OPS]
        if first + count > MAX_RA_OPS:
            return False
        row[NUM_OPS] = first + count
        base = OPS + first * OP_STRIDE
        for c in order:
            if c in on:
                v = value[c]
                if v != identity[c]:
                    row[base] = kernel[c]
                    row[base + 1] = v
                base += OP_STRIDE
        return True

    def encode_mix(self, params: np.ndarray) -> torch.Tensor | None:
        """encode_mix_reference's rows for ``params``, or None."""
        if "mix_mode" not in self.index:
            return None
        records = self._unpack(params)
        if records is None:
            return None
        oh, ow = self.output_size
        m, lam_at, b0 = self.index["mix_mode"][0], self.index["mix_lam"][0], self.index["mix_box"][0]
        out = array("i")
        for rec in records:
            mode, lam = rec[m], rec[lam_at]
            if not 0 <= mode <= 3 or (mode == 3 and self.mix_switch) or not 0 <= lam <= 255:
                return None
            if mode >= 2:
                t, l, h, w = rec[b0:b0 + 4]
                if t < 0 or l < 0 or h < 0 or w < 0 or t + h > oh or l + w > ow:
                    return None
                try:
                    out += array("i", (mode, lam, t, l, h, w))
                except OverflowError:
                    return None
            else:
                out += array("i", (mode, lam, 0, 0, 0, 0))
        return _int32_rows(out, len(records), NUM_MIX_ARGS)


class _NoPlan(Exception):
    """This policy / record layout has no fast plan (encode_reference handles it)."""


def _int32_rows(values: array, b: int, width: int) -> torch.Tensor:
    """The [b, width] int32 tensor over ``values`` (an array of C ints: no copy)."""
    return torch.from_numpy(np.frombuffer(values, dtype=np.int32).reshape(b, width))
