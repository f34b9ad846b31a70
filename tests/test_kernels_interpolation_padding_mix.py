"""Interpolation, padding and mixing in the kernels: the C++ kernels equal the reference bit for
bit on bilinear / bicubic geometric ops, the bicubic resize filter, padded crops,
Invert and SolarizeAdd, mix mode 3 — on random rows and on photos (scikit-image's, in the
channels-last layout decoders give and contiguous), in both CPU builds (AVX2 and baseline); the
row checks refuse the same rows with the same message on both backends; and the integer bounds
the kernels rely on hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import _util
from _rows import OP_ID, _random_batch, _random_mix, _row, _rows, _valid_row
from reinforced_data import _args as A
from reinforced_data import _reference as R

compiled = pytest.mark.compiled

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _augment(images, rows, oh, ow):
    return torch.ops.reinforced_data.augment(images, rows, oh, ow)


ISAS = ("avx2", "baseline")  # both CPU builds of the kernels (AVX2 only where the CPU has it)


@pytest.fixture(scope="module")
def photos():
    """Four scikit-image photos, each as a contiguous [3, H, W] tensor and in the channels-last
    layout decoders give (HWC memory permuted to CHW: strides (1, 3W, 3)), cut to ~200 px."""
    skdata = pytest.importorskip("skimage.data")
    out = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        hwc = torch.from_numpy(np.ascontiguousarray(getattr(skdata, name)()[::3, ::3, :3]))
        out[name] = {"channels_last": hwc.permute(2, 0, 1), "contiguous": hwc.permute(2, 0, 1).contiguous()}
    return out


def _assert_same(layouts, rows, oh, ow, what, monkeypatch):
    """The reference once, then the compiled op on each list of sources in ``layouts`` (the same
    pixels in different memory layouts) in both CPU builds."""
    exp = R.augment(next(iter(layouts.values())), rows, oh, ow)
    for isa in ISAS:
        monkeypatch.setenv("REINFORCED_DATA_CPU_ISA", isa)
        for name, images in layouts.items():
            _util.assert_equal_views(_augment(images, rows, oh, ow), exp, rows, f"{what}, {name} sources ({isa})")


# ------------------------------------------------------------------ random rows
@compiled
@pytest.mark.parametrize("out", [(17, 31), (1, 1), (3, 3), (40, 40), (64, 48)])
def test_random_rows(out, monkeypatch):
    """Random rows with padded crops, both filters, every op and interpolation (tests/_rows.py)."""
    g = np.random.default_rng(out[0] * 1000 + out[1])
    images, rows = _random_batch(g, 16, *out, seed=out[0] + out[1])
    assert (rows[:, A.RESIZE_FILTER] == 1).any() and (rows[:, A.RESIZE_FILTER] == 0).any()
    cl = [i.permute(1, 2, 0).contiguous().permute(2, 0, 1) for i in images]
    _assert_same({"contiguous": images, "channels_last": cl}, rows, *out, f"random rows {out}", monkeypatch)


# ------------------------------------------------------------------ photos
def _geometric_rows(h, w, oh, ow, interp, g):
    rows = []
    for op in GEOMETRIC:
        for mag in (-30, 14):
            p = A.op_params(op, mag, 31, oh, ow) + [interp]
            crop = (int(g.integers(0, h // 4)), int(g.integers(0, w // 4)), h // 2 + 7, w // 2 + 3)
            rows.append(_row(crop, flip=int(mag > 0), fill=(0, 128, 255), ops=[(OP_ID[op], p)],
                             resize_filter=int(g.integers(2))))
    return _rows(rows)


@compiled
@pytest.mark.parametrize("interp", [0, 1, 2])
def test_photos_geometric_interpolation(photos, interp, monkeypatch):
    g = np.random.default_rng(interp)
    oh, ow = 56, 64
    for name, img in photos.items():
        h, w = img["contiguous"].shape[1:]
        rows = _geometric_rows(h, w, oh, ow, interp, g)
        layouts = {k: [v] * len(rows) for k, v in img.items()}
        _assert_same(layouts, rows, oh, ow, f"{name} interp {interp}", monkeypatch)


@compiled
def test_photos_resize_filters_and_padding(photos, monkeypatch):
    """Bicubic and triangle resized crops (down and up), crops partly and wholly outside the photo."""
    rows_for = []
    for name, img in photos.items():
        h, w = img["contiguous"].shape[1:]
        boxes = [(0, 0, h, w), (10, 20, h // 3, w // 2), (5, 5, 40, 50), (-20, -30, h // 2, w // 2),
                 (h - 30, w - 40, 80, 90), (-100, w + 5, 60, 60), (-8, -8, h + 16, w + 16)]
        rows = _rows([_row(b, flip=k % 2, resize_filter=f, pad_fill=(k * 30, 200, 17))
                      for k, b in enumerate(boxes) for f in (0, 1)])
        rows_for.append((name, img, rows))
    for oh, ow in [(224, 224), (48, 40)]:
        for name, img, rows in rows_for:
            layouts = {k: [v] * len(rows) for k, v in img.items()}
            _assert_same(layouts, rows, oh, ow, f"{name} {oh}x{ow}", monkeypatch)


@compiled
def test_photos_new_ops(photos, monkeypatch):
    img = photos["coffee"]["channels_last"]
    h, w = img.shape[1:]
    rows = []
    for k, (t, add) in enumerate([(0, 0), (256, 255), (128, 100), (128, -100), (200, -255), (1, 255)]):
        ops = [(OP_ID["SolarizeAdd"], [t, add, 0, 0, 0, 0])]
        if k % 2:
            ops = [(OP_ID["Invert"], [0] * 6)] + ops + [(OP_ID["Rotate"], A.op_params("Rotate", 20, 31, 80, 90) + [2])]
        rows.append(_row((0, 0, h, w), ops=ops, fill=(1, 2, 3)))
    rows = _rows(rows)
    _assert_same({"channels_last": [img] * len(rows)}, rows, 80, 90, "Invert / SolarizeAdd", monkeypatch)
    plain = R.augment([img], _rows([_row((0, 0, h, w))]), 80, 90)[0].long()
    inv = R.augment([img], _rows([_row((0, 0, h, w), ops=[(OP_ID["Invert"], [0] * 6)])]), 80, 90)[0].long()
    assert torch.equal(inv, 255 - plain)
    sa = R.augment([img], rows[2:3], 80, 90)[0].long()
    assert torch.equal(sa, torch.where(plain < 128, (plain + 100).clamp(max=255), plain))


# ------------------------------------------------------------------ padded crop = torchvision's
@compiled
def test_random_crop_with_padding_is_torchvision_pad_then_crop():
    """RandomCrop(32, padding=4) on a 32 px image: the padded crop resized 32 -> 32 is exactly
    torchvision's pad + crop, for every offset, with any fill."""
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    fill = (10, 200, 99)
    padded = torch.stack([tvf.pad(img[c:c + 1], [4], fill=fill[c]) for c in range(3)]).squeeze(1)
    rows, exp = [], []
    for top in range(-4, 5):
        for left in range(-4, 5):
            rows.append(_row((top, left, 32, 32), resize_filter=(top + left) % 2, pad_fill=fill))
            exp.append(padded[:, top + 4:top + 36, left + 4:left + 36])
    rows = _rows(rows)
    exp = torch.stack(exp)
    assert torch.equal(_augment([img] * len(rows), rows, 32, 32), exp)
    assert torch.equal(R.augment([img] * len(rows), rows, 32, 32), exp)


@compiled
def test_crop_wholly_outside_is_the_pad_fill():
    img = _util.smooth_image(20, 30, 1)
    rows = _rows([_row((25, 0, 10, 10), pad_fill=(1, 2, 3), resize_filter=1), _row((-40, -40, 5, 7), pad_fill=(9, 8, 7))])
    out = _augment([img, img], rows, 6, 5)
    assert torch.equal(out[0], torch.tensor([1, 2, 3], dtype=torch.uint8)[:, None, None].expand(3, 6, 5))
    assert torch.equal(out[1], torch.tensor([9, 8, 7], dtype=torch.uint8)[:, None, None].expand(3, 6, 5))


# ------------------------------------------------------------------ mix mode 3
@compiled
@pytest.mark.parametrize("hw", [(17, 31), (224, 224)])
def test_mix_mode_3(hw):
    g = np.random.default_rng(hw[0])
    a, b, rows = _random_mix(g, 16, *hw)
    assert (rows[:, A.MIX_MODE] == 3).any()
    got = torch.ops.reinforced_data.mix(a, b, rows)
    assert torch.equal(got, R.mix(a, b, rows))
    for i in torch.nonzero(rows[:, A.MIX_MODE] == 3).flatten().tolist():
        _, q, t, l, h, w = rows[i].tolist()
        mixed = (a[i].long() * q + b[i].long() * (255 - q) + 127) // 255
        mixed[:, t:t + h, l:l + w] = b[i, :, t:t + h, l:l + w].long()
        assert torch.equal(got[i].long(), mixed)


# ------------------------------------------------------------------ refusals
def _message(fn):
    try:
        fn()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return None


FIELD_VALUES = [-65536, -65535, -1, 0, 1, 2, 3, 7, 256, 65536, 2**31 - 1]


@pytest.mark.slow
@compiled
def test_refused_rows_same_message():
    """Every field of a valid row (one with each new op and an interpolated geometric op) set to
    edge values: the compiled op and the reference either both accept it with the same bytes, or
    both refuse it with the same message."""
    base = _valid_row()
    base[A.OPS + 3 * A.OP_STRIDE + A.OP_INTERP] = 2  # Rotate, bicubic
    base[A.OPS + A.OP_STRIDE:A.OPS + 2 * A.OP_STRIDE] = [OP_ID["SolarizeAdd"], 100, -50, 0, 0, 0, 0, 0]
    base[A.OPS + 2 * A.OP_STRIDE] = OP_ID["Invert"]
    base[A.OPS + 2 * A.OP_STRIDE + 1] = 0
    base[A.RESIZE_FILTER] = 1
    base[A.PAD_FILL:A.PAD_FILL + 3] = (4, 5, 6)
    img = [_util.smooth_image(30, 40, 2)] * 2
    g = np.random.default_rng(5)
    same_refusals = accepted = 0
    for f in range(A.NUM_ARGS):
        for v in FIELD_VALUES + [int(x) for x in g.integers(-300, 300, 1)]:
            r = base.copy()
            r[f] = v
            rows = _rows([base, r])
            outs = {}

            def run(fn, key):
                outs[key] = fn(img, rows, 12, 10)

            mc = _message(lambda: run(_augment, "c"))
            mr = _message(lambda: run(R.augment, "r"))
            assert mc == mr, (f, v, mc, mr)
            if mc is None:
                accepted += 1
                _util.assert_equal_views(outs["c"], outs["r"], rows, f"field {f} = {v}")
            else:
                assert "args[1]" in mc
                same_refusals += 1
    assert same_refusals > 120 and accepted > 120


@compiled
def test_refused_mix_rows_same_message():
    a, b, rows = _random_mix(np.random.default_rng(4), 4, 9, 11)
    for col, values in enumerate([[-1, 4, 5], [-1, 256], [-1, 9, 10], [-1, 11, 12], [-1, 10], [-1, 12]]):
        for v in values:
            for mode in range(4):
                r = rows.clone()
                r[2, 0] = mode
                r[2, col] = v
                mc = _message(lambda: torch.ops.reinforced_data.mix(a, b, r))
                mr = _message(lambda: R.mix(a, b, r))
                assert mc == mr, (col, v, mode, mc, mr)


# ------------------------------------------------------------------ integer bounds
def test_bicubic_resize_weights_fit_int16_and_int32_sums():
    """The bounds the CPU passes rely on: |w| < 2^15 (int16 taps) and sum |w| < 1.3 * 2^14 per output
    (int32 accumulation), over many sizes; and every row's total is positive."""
    g = np.random.default_rng(0)
    pairs = [(n, m) for n in range(1, 25) for m in range(1, 25)]
    pairs += [(int(g.integers(1, 1500)), int(g.integers(1, 400))) for _ in range(15)] + [(65535, 3), (2, 4096)]
    for n, m in pairs:
        w = R.resample_weights(n, m, filter=1)
        assert int(w.abs().max()) < 2**15, (n, m)
        assert int(w.abs().sum(1).max()) < 1.3 * 2**14, (n, m)
        assert (w.sum(1) > 0).all(), (n, m)


def test_interpolation_weights_bound():
    """Geometric interpolation: Q11 weights sum to 2048 and 255 * (sum |w|)^2 + 2^21 < 2^31 (int32)."""
    f = torch.arange(2048)
    w = torch.stack(R.cubic_weights_q11(f))
    assert torch.equal(w.sum(0), torch.full((2048,), 2048))
    worst = int(w.abs().sum(0).max())
    assert worst <= 2562 and 255 * worst * worst + (1 << 21) < 2**31
    # the bicubic weights at f = 0 are the identity: (0, 2048, 0, 0)
    assert w[:, 0].tolist() == [0, 2048, 0, 0]


@compiled
@pytest.mark.parametrize("interp", [1, 2])
def test_row_shift_path_of_interpolated_shear_and_translate(photos, interp, monkeypatch):
    """Rows with a0 = 2^16 and a3 = 0 (ShearX, TranslateX/Y, also fractional and with a vertical
    scale) take the C++ row-shift path for bilinear/bicubic: equal to the reference, borders and
    fill included."""
    g = np.random.default_rng(10 + interp)
    img = photos["astronaut"]
    h, w = img["contiguous"].shape[1:]
    rows = []
    for k in range(12):
        a1 = int(g.integers(-40000, 40000)) if k % 3 == 0 else 0
        a4 = 65536 if k % 4 else int(g.integers(50000, 80000))
        p = [65536, a1, int(g.integers(-6e6, 6e6)), 0, a4, int(g.integers(-6e6, 6e6)), interp]
        rows.append(_row((0, 0, h, w), flip=k % 2, fill=(3, 130, 250), ops=[(OP_ID["TranslateX"], p)]))
    rows = _rows(rows)
    layouts = {k: [v] * len(rows) for k, v in img.items()}
    _assert_same(layouts, rows, 48, 40, f"row-shift interp {interp}", monkeypatch)
