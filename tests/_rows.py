"""Argument rows and inputs shared by test_ops.py, test_args.py and test_replay.py: builders
of augment rows (reinforced_data._args layout), random batches over many source and output
sizes, MixUp/CutMix inputs, and a valid row to corrupt field by field."""

from __future__ import annotations

import numpy as np
import torch

import _util
from reinforced_data import _args, _families
from reinforced_data._reference import KERNEL_OPS
from reinforced_data.policy import RA_OPS, SIGNED_OPS, UNPARAMETERISED_OPS, Policy

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
OP_ID = {name: i for i, name in enumerate(KERNEL_OPS)}
OPS_END = _args.OPS + _args.MAX_RA_OPS * _args.OP_STRIDE  # the op slots end here
UNUSED = _args.PAD_FILL + 3  # slots from here on are unused


def _row(crop, flip=0, fill=(0, 0, 0), erase=(0, 0, 0, 0), erase_value=(0, 0, 0), erase_seed=0, ops=(),
         resize_filter=0, pad_fill=(0, 0, 0)):
    """One augment row; ``ops`` is a list of (op id, [6 params]) or (op id, [6 params, interpolation])."""
    r = np.zeros(_args.NUM_ARGS, dtype=np.int64)
    r[_args.CROP_TOP:_args.CROP_W + 1] = crop
    r[_args.FLIP] = flip
    r[_args.FILL:_args.FILL + 3] = fill
    r[_args.ERASE_TOP:_args.ERASE_W + 1] = erase
    r[_args.ERASE_VALUE:_args.ERASE_VALUE + 3] = erase_value
    r[_args.ERASE_SEED] = erase_seed
    r[_args.NUM_OPS] = len(ops)
    for s, (op, p) in enumerate(ops):
        base = _args.OPS + s * _args.OP_STRIDE
        r[base] = op
        r[base + 1:base + 1 + len(p)] = p  # 6 parameters, optionally the interpolation
    r[_args.RESIZE_FILTER] = resize_filter
    r[_args.PAD_FILL:_args.PAD_FILL + 3] = pad_fill
    return r


def _rows(rows) -> torch.Tensor:
    return torch.from_numpy(np.asarray(rows, dtype=np.int64).astype(np.int32)).reshape(-1, _args.NUM_ARGS)


def _random_op(g: np.random.Generator, oh: int, ow: int):
    """A random kernel op with its parameters; geometric ops get a random interpolation."""
    op = KERNEL_OPS[int(g.integers(len(KERNEL_OPS)))]
    if op == "Invert":
        return OP_ID[op], [0] * 6
    if op == "SolarizeAdd":
        return OP_ID[op], [int(g.integers(0, 257)), int(g.integers(-255, 256)), 0, 0, 0, 0]
    if op == "Hue":
        return OP_ID[op], [int(g.integers(-32768, 32769)), 0, 0, 0, 0, 0]
    if op == "Grayscale":
        return OP_ID[op], [int(g.integers(0, 2)), 0, 0, 0, 0, 0]
    if op == "GaussianBlur":  # torchvision's kernel (random size and sigma) or PIL's (random radius)
        if g.random() < 0.5:
            taps = _families.gaussian_taps(int(g.choice([3, 5, 9, 23])), int(g.integers(1, 6000)))
        else:
            taps = _families.pil_blur_taps(int(g.integers(0, 5000)))
        return OP_ID[op], _args.pack_blur_taps(taps)
    nb = int(g.choice([2, 10, 31]))
    b = 0 if op in UNPARAMETERISED_OPS else int(g.integers(0, nb))
    if op in SIGNED_OPS and g.random() < 0.5:
        b = -b
    p = _args.op_params(op, b, nb, oh, ow)
    if op in _args.GEOMETRIC:
        p = p + [int(g.integers(3))]
    return OP_ID[op], p


OUTPUT_SIZES = [(17, 31), (1, 1), (1, 13), (13, 1), (2, 2), (3, 3), (40, 40), (31, 17), (64, 48), (224, 224)]


def _random_source_and_crop(g: np.random.Generator, oh: int, ow: int):
    kind = g.integers(4)
    if kind == 0:  # tiny sources, including 1x1
        h, w = (int(v) for v in g.integers(1, 6, 2))
    elif kind == 1:  # smaller than the output: upsampling
        h, w = max(1, oh // 2 + int(g.integers(0, 4))), max(1, ow // 2 + int(g.integers(0, 4)))
    else:  # larger than the output: downsampling
        h = int(g.integers(max(oh, 8), 3 * max(oh, 8)))
        w = int(g.integers(max(ow, 8), 3 * max(ow, 8)))
    if g.random() < 0.25:
        crop = (0, 0, h, w)  # the crop is the whole image
    elif g.random() < 0.2:  # a box reaching outside the image, or wholly outside it: padded
        ch, cw = int(g.integers(1, h + 9)), int(g.integers(1, w + 9))
        crop = (int(g.integers(-ch - 3, h + 4)), int(g.integers(-cw - 3, w + 4)), ch, cw)
    else:
        ch, cw = int(g.integers(1, h + 1)), int(g.integers(1, w + 1))
        crop = (int(g.integers(0, h - ch + 1)), int(g.integers(0, w - cw + 1)), ch, cw)
    return (h, w), crop


def _random_batch(g: np.random.Generator, n: int, oh: int, ow: int, seed: int):
    images, rows = [], []
    for i in range(n):
        (h, w), crop = _random_source_and_crop(g, oh, ow)
        images.append(_util.smooth_image(h, w, seed * 1000 + i, sigma=None if g.random() < 0.8 else 0.0))
        ops = [_random_op(g, oh, ow) for _ in range(int(g.integers(0, 5)))]
        kind = int(g.integers(3))
        erase, value, eseed = (0, 0, 0, 0), (0, 0, 0), 0
        if kind:
            eh, ew = int(g.integers(1, oh + 1)), int(g.integers(1, ow + 1))
            erase = (int(g.integers(0, oh - eh + 1)), int(g.integers(0, ow - ew + 1)), eh, ew)
            value = tuple(int(v) for v in g.integers(0, 256, 3)) if kind == 1 else (-1, -1, -1)
            eseed = int(g.integers(0, 1 << 16))
        r = _row(crop, flip=int(g.integers(2)), fill=tuple(int(v) for v in g.integers(0, 256, 3)), erase=erase,
                 erase_value=value, erase_seed=eseed, ops=ops, resize_filter=int(g.integers(2)),
                 pad_fill=tuple(int(v) for v in g.integers(0, 256, 3)))
        if g.random() < 0.3:  # garbage in the unused op slots and the unused tail must be ignored
            used = _args.OPS + len(ops) * _args.OP_STRIDE
            r[used:OPS_END] = g.integers(INT32_MIN, INT32_MAX, OPS_END - used, endpoint=True)
            r[UNUSED:] = g.integers(INT32_MIN, INT32_MAX, _args.NUM_ARGS - UNUSED, endpoint=True)
        rows.append(r)
    return images, _rows(rows)


def _random_mix(g, b, h, w):
    a = torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8))
    p = torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8))
    rows = []
    for i in range(b):
        mode = i % 4
        bh, bw = int(g.integers(0, h + 1)), int(g.integers(0, w + 1))
        box = (int(g.integers(0, h - bh + 1)), int(g.integers(0, w - bw + 1)), bh, bw)
        if mode < 2 and g.random() < 0.5:
            box = (0, 0, 0, 0)
        rows.append((mode, int(g.integers(0, 256)), *box))
    return a, p, torch.tensor(rows, dtype=torch.int32)


def _valid_row(oh=12, ow=10):
    return _row((2, 3, 20, 25), flip=1, fill=(1, 2, 3), erase=(1, 2, 5, 6), erase_value=(7, 8, 9), erase_seed=5,
                ops=[(OP_ID["Brightness"], _args.op_params("Brightness", -9, 31, oh, ow)),
                     (OP_ID["Posterize"], _args.op_params("Posterize", 20, 31, oh, ow)),
                     (OP_ID["Solarize"], _args.op_params("Solarize", 9, 31, oh, ow)),
                     (OP_ID["Rotate"], _args.op_params("Rotate", 9, 31, oh, ow))])


def _with(row, **fields):
    r = row.copy()
    for name, value in fields.items():
        idx, _, off = name.partition("_plus")
        r[getattr(_args, idx) + (int(off) if off else 0)] = value
    return r


def _policy_and_params(name="rrc_ra_re_mix", k=2, hw=(50, 60)):
    policy = Policy.preset(name, output_size=(32, 40))
    params = policy.sample(np.random.default_rng(0), k, *hw)
    return policy, params
