"""The compiled op torch.ops.reinforced_data.{augment, mix, normalize} against the
pure-PyTorch reference (bit for bit), its validation of argument rows, and the
Python-level validation in encode / replay.

Tests marked ``compiled`` skip without the compiled op, or fail with
REINFORCED_DATA_REQUIRE_COMPILED=1 (see conftest.py).
"""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import _util
from reinforced_data import _args, _reference
from reinforced_data import policy as policy_mod
from reinforced_data.policy import PRESETS, RA_OPS, SIGNED_OPS, UNPARAMETERISED_OPS, Policy

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    rmod = importlib.import_module("reinforced_data.replay")
replay = rmod.replay

REPO = Path(__file__).resolve().parents[1]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
OP_ID = {name: i for i, name in enumerate(RA_OPS)}

compiled = pytest.mark.compiled


# ------------------------------------------------------------------ layout constants
def _header_constants(path: Path) -> dict[str, int]:
    text = re.sub(r"//[^\n]*", "", path.read_text())
    out: dict[str, int] = {}
    for decl in re.findall(r"constexpr\s+(?:int|int64_t|int32_t)\s+([^;]+);", text):
        for item in decl.split(","):
            name, value = (s.strip() for s in item.split("="))
            if re.fullmatch(r"[0-9\s<>+*()-]+", value):  # literal or simple integer expression
                out[name] = int(eval(value, {"__builtins__": {}}))  # noqa: S307
            else:
                out[name] = value
    return out


def _header_enum(path: Path, name: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", path.read_text())
    body = re.search(r"enum\s+" + name + r"\s*(?::\s*\w+)?\s*\{([^}]*)\}", text, re.S)
    assert body, f"enum {name} not found in {path}"
    names = []
    for i, item in enumerate(x.strip() for x in body.group(1).split(",") if x.strip()):
        if "=" in item:
            n, v = (s.strip() for s in item.split("="))
            assert int(v) == i, f"{n} = {v}: enum values must be consecutive from 0"
            item = n
        names.append(item)
    return names


def test_layout_constants_match_header():
    c = _header_constants(REPO / "csrc" / "replay_args.h")
    names = ["CROP_TOP", "CROP_LEFT", "CROP_H", "CROP_W", "FLIP", "FILL", "ERASE_TOP", "ERASE_LEFT", "ERASE_H",
             "ERASE_W", "ERASE_VALUE", "ERASE_SEED", "NUM_OPS", "OPS", "OP_STRIDE", "NUM_ARGS", "MIX_MODE",
             "MIX_LAM", "MIX_BOX", "NUM_MIX_ARGS"]
    for n in names:
        assert n in c, f"{n} missing from csrc/replay_args.h"
        assert c[n] == getattr(_args, n), f"{n}: header {c[n]} != _args.py {getattr(_args, n)}"
    assert c["MAX_OPS"] == policy_mod.MAX_RA_OPS
    assert set(c) <= set(names) | {"MAX_OPS"}, f"header constants unknown to the test: {set(c) - set(names)}"
    ops = _header_enum(REPO / "csrc" / "replay_args.h", "Op")
    assert ops[-1] == "NUM_OP_IDS"
    assert [o.replace("_", "") for o in ops[:-1]] == [o.upper() for o in RA_OPS]


def test_other_shared_constants_match():
    checks = _header_constants(REPO / "csrc" / "replay_checks.h")
    assert checks["MAX_OUTPUT_SIZE"] == policy_mod.MAX_OUTPUT_SIZE
    math_h = _header_constants(REPO / "csrc" / "replay_math.h")
    assert math_h["WEIGHT_BITS"] == _reference.WEIGHT_BITS
    assert math_h["Q16"] == _args.Q16


# ------------------------------------------------------------------ row builders
def _row(crop, flip=0, fill=(0, 0, 0), erase=(0, 0, 0, 0), erase_value=(0, 0, 0), erase_seed=0, ops=()):
    """One augment row; ``ops`` is a list of (op id, [6 params])."""
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
        r[base + 1:base + _args.OP_STRIDE] = p
    return r


def _rows(rows) -> torch.Tensor:
    return torch.from_numpy(np.asarray(rows, dtype=np.int64).astype(np.int32)).reshape(-1, _args.NUM_ARGS)


def _random_op(g: np.random.Generator, oh: int, ow: int):
    op = RA_OPS[int(g.integers(len(RA_OPS)))]
    nb = int(g.choice([2, 10, 31]))
    b = 0 if op in UNPARAMETERISED_OPS else int(g.integers(0, nb))
    if op in SIGNED_OPS and g.random() < 0.5:
        b = -b
    return OP_ID[op], _args.op_params(op, b, nb, oh, ow)


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
                 erase_value=value, erase_seed=eseed, ops=ops)
        if g.random() < 0.3:  # garbage in the unused op slots must be ignored
            used = _args.OPS + len(ops) * _args.OP_STRIDE
            r[used:] = g.integers(INT32_MIN, INT32_MAX, _args.NUM_ARGS - used, endpoint=True)
        rows.append(r)
    return images, _rows(rows)


# ------------------------------------------------------------------ augment == reference
@compiled
@pytest.mark.parametrize("out_hw", OUTPUT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_augment_random_rows_match_reference(out_hw):
    oh, ow = out_hw
    n = 6 if oh * ow > 10000 else 40
    g = np.random.default_rng(oh * 1000 + ow)
    images, rows = _random_batch(g, n, oh, ow, seed=oh + ow)
    out = torch.ops.reinforced_data.augment(images, rows, oh, ow)
    ref = _reference.augment(images, rows, oh, ow)
    _util.assert_equal_views(out, ref, rows, f"augment {oh}x{ow}")


@compiled
@pytest.mark.parametrize("out_hw", [(17, 31), (64, 64), (3, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_augment_each_op_matches_reference(out_hw):
    """Every op id at several bins and both signs, one op per view."""
    oh, ow = out_hw
    img = _util.smooth_image(50, 70, 3)
    crop = (4, 6, 40, 60)
    images, rows = [], []
    for op in RA_OPS:
        for nb in (2, 31):
            bins = [0] if op in UNPARAMETERISED_OPS else sorted({1, nb // 2, nb - 1})
            for b in bins:
                for sign in ((1, -1) if op in SIGNED_OPS else (1,)):
                    images.append(img)
                    rows.append(_row(crop, fill=(9, 99, 199), ops=[(OP_ID[op], _args.op_params(op, sign * b, nb, oh, ow))]))
    rows_t = _rows(rows)
    out = torch.ops.reinforced_data.augment(images, rows_t, oh, ow)
    _util.assert_equal_views(out, _reference.augment(images, rows_t, oh, ow), rows_t, "single ops")


@compiled
@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("out_hw", [(224, 224), (17, 31)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_augment_presets_match_reference(name, out_hw):
    policy = Policy.preset(name, output_size=out_hw)
    g = np.random.default_rng(len(name))
    sizes = [(1, 1), (5, 300), (240, 320), (333, 250), (64, 64), (100, 37), (224, 224), (50, 500)]
    images = _util.image_batch(sizes, seed=len(name))
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    rows = _args.encode(params, policy, sizes)
    out = torch.ops.reinforced_data.augment(images, rows, *out_hw)
    _util.assert_equal_views(out, _reference.augment(images, rows, *out_hw), rows, f"preset {name}")


@compiled
@pytest.mark.parametrize("name", ["rrc_ra_re_mix", "timm"])
@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.float32, torch.bfloat16], ids=str)
def test_replay_compiled_equals_reference(name, out_dtype):
    policy = Policy.preset(name, output_size=(48, 56))
    sizes = [(60, 80), (33, 33), (120, 41), (7, 9), (90, 90)]
    images = _util.image_batch(sizes, seed=31)
    partners = _util.image_batch(sizes[::-1], seed=32)
    g = np.random.default_rng(17)
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    pparams = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes[::-1]])
    kw = dict(out_dtype=out_dtype, channels_last=True)
    if policy.mixing:
        kw.update(partners=partners, partner_params=pparams)
    a = replay(images, params, policy, backend="compiled", **kw)
    b = replay(images, params, policy, backend="reference", **kw)
    _util.assert_equal_views(a, b, what=f"replay {name}")
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(replay(images, params, policy, backend="auto", **kw), a)


@compiled
def test_augment_noncontiguous_images():
    g = np.random.default_rng(2)
    base = _util.image_batch([(40, 50), (33, 60)], seed=2)
    views = [
        base[0].permute(1, 2, 0).contiguous().permute(2, 0, 1),  # HWC storage, CHW view
        base[1][:, 3:30, ::2],  # offset and strided
    ]
    assert not views[0].is_contiguous() and not views[1].is_contiguous()
    rows = _rows([_row((2, 3, 30, 40), ops=[_random_op(g, 20, 24) for _ in range(2)]),
                  _row((1, 1, 20, 25), flip=1, ops=[(OP_ID["Rotate"], _args.op_params("Rotate", 5, 31, 20, 24))])])
    out = torch.ops.reinforced_data.augment(views, rows, 20, 24)
    ref = _reference.augment([v.contiguous() for v in views], rows, 20, 24)
    _util.assert_equal_views(out, ref, rows, "non-contiguous sources")
    # args given as a non-contiguous view
    wide = torch.zeros(2, 2 * _args.NUM_ARGS, dtype=torch.int32)
    wide[:, ::2] = rows
    out2 = torch.ops.reinforced_data.augment(views, wide[:, ::2], 20, 24)
    assert torch.equal(out2, out)


# ------------------------------------------------------------------ source layouts
def source_layouts(img: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same pixels as ``img`` (uint8 [3, H, W], contiguous) in the layouts loaders and
    users hand to replay: each reads channel c, row y, column x as ``img[c, y, x]``."""
    _, h, w = img.shape
    hwc = img.permute(1, 2, 0).contiguous()
    rgba = torch.cat([hwc, torch.full_like(hwc[..., :1], 7)], 2)
    big = torch.full((3, h + 5, w + 9), 3, dtype=torch.uint8)
    big[:, 2:2 + h, 4:4 + w] = img
    gray = img[:1].expand(3, h, w)  # a gray plane seen as three channels: channel stride 0
    return {
        "channels_last": hwc.permute(2, 0, 1),  # decode_jpeg / PIL->numpy->permute: strides (1, 3W, 3)
        "channels_last_rgba_sliced": rgba.permute(2, 0, 1)[:3],  # strides (1, 4W, 4)
        "planar_view": big[:, 2:2 + h, 4:4 + w],  # row and channel strides of a bigger image
        "gray_expanded": gray,
        "column_strided": torch.stack([img, img], 3).reshape(3, h, 2 * w)[:, :, ::2],  # read from a copy
    }


def test_source_layouts_are_what_loaders_give():
    """The channels-last layout above is the one decoders hand out."""
    torchvision_io = pytest.importorskip("torchvision.io")
    img = _util.smooth_image(7, 5, 1)
    dec = torchvision_io.decode_jpeg(torchvision_io.encode_jpeg(img))
    from PIL import Image

    pil = torch.from_numpy(np.array(Image.fromarray(img.permute(1, 2, 0).numpy()))).permute(2, 0, 1)
    layouts = source_layouts(img)
    assert dec.stride() == pil.stride() == layouts["channels_last"].stride() == (1, 15, 3)
    assert layouts["channels_last_rgba_sliced"].stride() == (1, 20, 4)
    for name, v in layouts.items():
        expected = img[:1].expand(3, 7, 5) if name == "gray_expanded" else img
        assert torch.equal(v, expected), name


def _border_rows(sizes, oh, ow, g):
    """Rows whose crops touch the image's bottom-right corner (and others its top-left)."""
    rows = []
    for k, (h, w) in enumerate(sizes):
        ch, cw = max(1, h - int(g.integers(0, h))), max(1, w - int(g.integers(0, w)))
        crop = (h - ch, w - cw, ch, cw) if k % 2 == 0 else (0, 0, ch, cw)
        rows.append(_row(crop, flip=k % 3 == 1, fill=(5, 6, 7), ops=[_random_op(g, oh, ow) for _ in range(k % 3)]))
    return _rows(rows)


@compiled
@pytest.mark.parametrize("isa", ["best", "baseline"])
def test_strided_sources_replay_to_the_same_bytes(isa, monkeypatch):
    """Every source layout gives the bytes of its contiguous copy, for every preset, on odd
    and 1-pixel images, crops at the borders, outputs below and above 32 columns (the AVX2
    kernel reads rows directly from 32 output columns on), with both CPU builds."""
    if isa == "baseline":
        monkeypatch.setenv("REINFORCED_DATA_CPU_ISA", "baseline")
    g = np.random.default_rng(8)
    sizes = [(1, 1), (2, 1), (1, 7), (5, 300), (37, 53), (64, 48), (100, 37), (240, 319)]
    images = _util.image_batch(sizes, seed=8)
    gray = [i[:1].expand(3, -1, -1).contiguous() for i in images]
    layouts = [source_layouts(i) for i in images]
    for out_hw in [(40, 56), (17, 31)]:
        batches = [_border_rows(sizes, *out_hw, g)]
        for name in sorted(PRESETS):
            policy = Policy.preset(name, output_size=out_hw)
            batches.append(_args.encode(np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes]), policy, sizes))
        for rows in batches:
            ref = _reference.augment(images, rows, *out_hw)
            ref_gray = torch.ops.reinforced_data.augment(gray, rows, *out_hw)
            for layout in layouts[0]:
                srcs = [lay[layout] for lay in layouts]
                out = torch.ops.reinforced_data.augment(srcs, rows, *out_hw)
                _util.assert_equal_views(out, ref_gray if layout == "gray_expanded" else ref, rows,
                                         f"{layout} sources {out_hw}")
    # full-size views (the AVX2 row kernel on every row) against the contiguous sources
    policy = Policy.preset("rrc_ra_re")
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    rows = _args.encode(params, policy, sizes)
    want = torch.ops.reinforced_data.augment(images, rows, 224, 224)
    for layout in ("channels_last", "channels_last_rgba_sliced", "planar_view"):
        got = torch.ops.reinforced_data.augment([lay[layout] for lay in layouts], rows, 224, 224)
        _util.assert_equal_views(got, want, rows, f"{layout} sources 224x224")


@compiled
def test_strided_sources_mix_path():
    """MixUp/CutMix records replayed from channels-last images and partners."""
    policy = Policy.preset("rrc_ra_re_mix", output_size=(36, 44))
    sizes = [(60, 80), (33, 33), (1, 1), (7, 9), (90, 91)]
    images = _util.image_batch(sizes, seed=12)
    partners = _util.image_batch(sizes[::-1], seed=13)
    g = np.random.default_rng(14)
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    pparams = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes[::-1]])
    params["mix_mode"][:3] = [1, 2, 1]  # both kinds present whatever was drawn
    cl = [source_layouts(i)["channels_last"] for i in images]
    pcl = [source_layouts(i)["channels_last"] for i in partners]
    want = replay(images, params, policy, partners=partners, partner_params=pparams, backend="reference")
    got = replay(cl, params, policy, partners=pcl, partner_params=pparams, backend="compiled")
    _util.assert_equal_views(got, want, what="mix path, channels-last sources")


@compiled
def test_augment_empty_batch():
    out = torch.ops.reinforced_data.augment([], torch.zeros(0, _args.NUM_ARGS, dtype=torch.int32), 8, 9)
    assert out.shape == (0, 3, 8, 9) and out.dtype == torch.uint8


@compiled
def test_augment_is_deterministic():
    g = np.random.default_rng(77)
    images, rows = _random_batch(g, 24, 31, 17, seed=77)
    a = torch.ops.reinforced_data.augment(images, rows, 31, 17)
    b = torch.ops.reinforced_data.augment(images, rows, 31, 17)
    assert torch.equal(a, b)
    # a view does not depend on its batch
    for i in (0, 5, 23):
        single = torch.ops.reinforced_data.augment([images[i]], rows[i:i + 1], 31, 17)
        assert torch.equal(single[0], a[i]), i


# ------------------------------------------------------------------ mix / normalize
def _random_mix(g, b, h, w):
    a = torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8))
    p = torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8))
    rows = []
    for i in range(b):
        mode = i % 3
        bh, bw = int(g.integers(0, h + 1)), int(g.integers(0, w + 1))
        box = (int(g.integers(0, h - bh + 1)), int(g.integers(0, w - bw + 1)), bh, bw)
        if mode != 2 and g.random() < 0.5:
            box = (0, 0, 0, 0)
        rows.append((mode, int(g.integers(0, 256)), *box))
    return a, p, torch.tensor(rows, dtype=torch.int32)


@compiled
@pytest.mark.parametrize("hw", [(1, 1), (17, 31), (224, 224)], ids=str)
def test_mix_matches_reference(hw):
    g = np.random.default_rng(hw[0])
    a, b, rows = _random_mix(g, 12 if hw[0] > 100 else 30, *hw)
    a0, b0 = a.clone(), b.clone()
    out = torch.ops.reinforced_data.mix(a, b, rows)
    _util.assert_equal_views(out, _reference.mix(a, b, rows), rows, "mix")
    assert torch.equal(a, a0) and torch.equal(b, b0), "mix must not modify its inputs"
    # channels-last inputs give the same values
    out_cl = torch.ops.reinforced_data.mix(a.contiguous(memory_format=torch.channels_last),
                                           b.contiguous(memory_format=torch.channels_last), rows)
    assert torch.equal(out_cl, out)


NORM_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@compiled
@pytest.mark.parametrize("dtype", NORM_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_matches_reference(dtype, channels_last):
    g = np.random.default_rng(5)
    x = torch.from_numpy(g.integers(0, 256, (4, 3, 17, 31), dtype=np.uint8))
    x[0].view(-1)[:256] = torch.arange(256, dtype=torch.uint8)  # every value occurs
    lut = _args.normalize_lut(Policy(), dtype)
    out = torch.ops.reinforced_data.normalize(x, lut, channels_last)
    ref = _reference.normalize(x, lut, channels_last)
    assert out.dtype == dtype
    _util.assert_equal_views(out, ref, what=f"normalize {dtype}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    # a channels-last input gives the same values
    out2 = torch.ops.reinforced_data.normalize(x.contiguous(memory_format=torch.channels_last), lut, channels_last)
    assert torch.equal(out2, out) and out2.is_contiguous(memory_format=fmt)


# ------------------------------------------------------------------ opcheck / compile
def _small_augment_inputs():
    g = np.random.default_rng(0)
    images, rows = _random_batch(g, 3, 6, 7, seed=0)
    return images, rows


@compiled
def test_opcheck_augment():
    images, rows = _small_augment_inputs()
    torch.library.opcheck(torch.ops.reinforced_data.augment.default, (images, rows, 6, 7))


@compiled
def test_opcheck_mix():
    a, b, rows = _random_mix(np.random.default_rng(1), 3, 5, 6)
    torch.library.opcheck(torch.ops.reinforced_data.mix.default, (a, b, rows))


@compiled
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_normalize(channels_last):
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8))
    lut = _args.normalize_lut(Policy(), torch.float32)
    torch.library.opcheck(torch.ops.reinforced_data.normalize.default, (x, lut, channels_last))


@compiled
def test_torch_compile_through_ops():
    images, rows = _small_augment_inputs()
    lut = _args.normalize_lut(Policy(), torch.float32)

    def f(imgs, r):
        v = rmod.augment(imgs, r, 6, 7, backend="compiled")
        return rmod.normalize(v, lut, True, backend="compiled") * 2.0

    torch._dynamo.reset()
    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = cf(images, rows)
    assert torch.equal(out, f(images, rows))
    assert out.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ validation (compiled)
def _valid_row(oh=12, ow=10):
    return _row((2, 3, 20, 25), flip=1, fill=(1, 2, 3), erase=(1, 2, 5, 6), erase_value=(7, 8, 9), erase_seed=5,
                ops=[(OP_ID["Brightness"], _args.op_params("Brightness", -9, 31, oh, ow)),
                     (OP_ID["Posterize"], _args.op_params("Posterize", 20, 31, oh, ow)),
                     (OP_ID["Solarize"], _args.op_params("Solarize", 9, 31, oh, ow)),
                     (OP_ID["Rotate"], _args.op_params("Rotate", 9, 31, oh, ow))])


@compiled
def test_garbage_rows_raise():
    """Rows of random int32 in every field: a RuntimeError each time, never a crash."""
    g = np.random.default_rng(1234)
    img = [_util.smooth_image(30, 40, 1)]
    for i in range(2000):
        r = g.integers(INT32_MIN, INT32_MAX, _args.NUM_ARGS, endpoint=True)
        if i % 2:  # small values are more likely to get past the early checks
            r = g.integers(-3, 300, _args.NUM_ARGS)
        with pytest.raises(RuntimeError):
            torch.ops.reinforced_data.augment(img, _rows([r]), 12, 10)
    # a whole batch of garbage at once
    rows = _rows(g.integers(-5, 70, (500, _args.NUM_ARGS)))
    with pytest.raises(RuntimeError):
        torch.ops.reinforced_data.augment(img * 500, rows, 12, 10)


FIELD_VALUES = [INT32_MIN, -65536, -257, -2, -1, 0, 1, 2, 3, 4, 13, 14, 25, 255, 256, 4096, 65535, 65536, INT32_MAX]


@compiled
def test_corrupted_fields_raise_or_match_reference():
    """Each field of a valid row set to extreme / random int32 values: either a
    RuntimeError, or (where any value is acceptable) exactly the reference output."""
    g = np.random.default_rng(99)
    img = [_util.smooth_image(30, 40, 2)]
    base = _valid_row()
    accepted = raised = 0
    for f in range(_args.NUM_ARGS):
        values = FIELD_VALUES + [int(v) for v in g.integers(INT32_MIN, INT32_MAX, 6, endpoint=True)] + \
            [int(v) for v in g.integers(-300, 300, 4)]
        for v in values:
            r = base.copy()
            r[f] = v
            rows = _rows([r])
            try:
                out = torch.ops.reinforced_data.augment(img, rows, 12, 10)
            except RuntimeError:
                raised += 1
                continue
            accepted += 1
            ref = _reference.augment(img, rows, 12, 10)
            _util.assert_equal_views(out, ref, rows, f"field {f} = {v} accepted")
    assert raised > 100 and accepted > 100  # both paths were exercised


def _expect_error(images, rows, match, oh=12, ow=10):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.reinforced_data.augment(images, _rows(rows), oh, ow)


def _with(row, **fields):
    r = row.copy()
    for name, value in fields.items():
        idx, _, off = name.partition("_plus")
        r[getattr(_args, idx) + (int(off) if off else 0)] = value
    return r


TARGETED = [  # (description, {field: value}, message fragment)
    ("crop below", dict(CROP_TOP=11, CROP_H=20), r"args\[0\] crop"),
    ("crop right", dict(CROP_LEFT=16, CROP_W=25), r"args\[0\] crop"),
    ("crop negative top", dict(CROP_TOP=-1), r"args\[0\] crop"),
    ("crop negative left", dict(CROP_LEFT=-5), r"args\[0\] crop"),
    ("crop zero height", dict(CROP_H=0), r"args\[0\] crop"),
    ("crop negative width", dict(CROP_W=-3), r"args\[0\] crop"),
    ("crop overflow", dict(CROP_TOP=INT32_MAX, CROP_H=INT32_MAX), r"args\[0\] crop"),
    ("flip 2", dict(FLIP=2), r"flip"),
    ("fill 256", dict(FILL_plus2=256), r"fill"),
    ("fill -1", dict(FILL=-1), r"fill"),
    ("erase outside", dict(ERASE_TOP=8, ERASE_H=5), r"erase box"),
    ("erase right", dict(ERASE_LEFT=5, ERASE_W=6), r"erase box"),
    ("erase negative", dict(ERASE_TOP=-1), r"erase box"),
    ("erase negative size", dict(ERASE_H=-2, ERASE_W=3), r"erase box"),
    ("erase half empty", dict(ERASE_H=0, ERASE_W=3), r"erase box"),
    ("erase overflow", dict(ERASE_LEFT=INT32_MAX, ERASE_W=INT32_MAX), r"erase box"),
    ("erase value 256", dict(ERASE_VALUE_plus1=256), r"erase value"),
    ("erase value mixed", dict(ERASE_VALUE=-1), r"erase value"),
    ("num_ops 5", dict(NUM_OPS=5), r"num_ops"),
    ("num_ops -1", dict(NUM_OPS=-1), r"num_ops"),
    ("op id 14", dict(OPS=14), r"unknown op id"),
    ("op id -1", dict(OPS=-1), r"unknown op id"),
    ("op id last slot", {"OPS_plus21": 99}, r"unknown op id"),
    ("negative factor", dict(OPS_plus1=-1), r"factor"),
    ("posterize mask", dict(OPS_plus8=256), r"posterize"),
    ("solarize threshold", dict(OPS_plus15=257), r"solarize"),
    ("solarize negative", dict(OPS_plus15=-1), r"solarize"),
]


@compiled
@pytest.mark.parametrize("desc,fields,match", TARGETED, ids=[t[0] for t in TARGETED])
def test_targeted_bad_rows(desc, fields, match):
    img = [_util.smooth_image(30, 40, 3)]
    base = _valid_row()
    assert torch.ops.reinforced_data.augment(img, _rows([base]), 12, 10).shape == (1, 3, 12, 10)
    _expect_error(img, [_with(base, **fields)], match)
    # the bad row is named by its index in a batch
    _expect_error(img * 3, [base, base, _with(base, **fields)], r"args\[2\]")


@compiled
def test_augment_argument_errors_name_the_argument():
    img = _util.smooth_image(30, 40, 4)
    row = _valid_row()
    aug = torch.ops.reinforced_data.augment
    cases = [
        ([img, img.float()], _rows([row, row]), 12, 10, r"images\[1\].*uint8"),
        ([img, img[0]], _rows([row, row]), 12, 10, r"images\[1\].*\[3, H, W\]"),
        ([img[:2]], _rows([row]), 12, 10, r"images\[0\].*\[3, H, W\]"),
        ([torch.cat([img, img[:1]])], _rows([row]), 12, 10, r"images\[0\].*\[3, H, W\]"),
        ([img[None]], _rows([row]), 12, 10, r"images\[0\]"),
        ([img[:, :0, :]], _rows([row]), 12, 10, r"images\[0\].*empty"),
        ([img[:, :, :0]], _rows([row]), 12, 10, r"images\[0\].*empty"),
        ([img], _rows([row]).long(), 12, 10, r"args.*int32"),
        ([img], _rows([row]).float(), 12, 10, r"args.*int32"),
        ([img], _rows([row])[:, :-1], 12, 10, r"args.*shape"),
        ([img], _rows([row])[0], 12, 10, r"args.*shape"),
        ([img, img], _rows([row]), 12, 10, r"2 images but 1 args rows"),
        ([img], _rows([row, row]), 12, 10, r"1 images but 2 args rows"),
        ([img], _rows([row]), 0, 10, r"out_h"),
        ([img], _rows([row]), 12, -1, r"out_w"),
        ([img], _rows([row]), 12, 5000, r"out_w"),
    ]
    for images, rows, oh, ow, match in cases:
        with pytest.raises(RuntimeError, match=match):
            aug(images, rows, oh, ow)


@compiled
def test_mix_errors_name_the_argument():
    a, b, rows = _random_mix(np.random.default_rng(3), 3, 8, 9)
    mix = torch.ops.reinforced_data.mix
    bad_box = rows.clone()
    bad_box[2, 2:] = torch.tensor([5, 0, 4, 3])
    neg_box = rows.clone()
    neg_box[2, 2:] = torch.tensor([-1, 0, 2, 2])
    bad_mode = rows.clone()
    bad_mode[1, 0] = 3
    bad_lam = rows.clone()
    bad_lam[0, 1] = 256
    cases = [
        (a.float(), b, rows, r"a and b must be uint8"),
        (a, b.int(), rows, r"a and b must be uint8"),
        (a, b[:2], rows, r"a and b must have one shape"),
        (a[0], b[0], rows, r"a and b must have one shape"),
        (a, b, rows.long(), r"args must be int32"),
        (a, b, rows[:2], r"args must be int32 of shape"),
        (a, b, rows[:, :5], r"args must be int32 of shape"),
        (a, b, bad_box, r"args\[2\] CutMix box"),
        (a, b, neg_box, r"args\[2\] CutMix box"),
        (a, b, bad_mode, r"args\[1\] mode"),
        (a, b, bad_lam, r"args\[0\] lambda"),
    ]
    for x, y, r, match in cases:
        with pytest.raises(RuntimeError, match=match):
            mix(x, y, r)


@compiled
def test_normalize_errors_name_the_argument():
    x = torch.zeros(2, 3, 4, 5, dtype=torch.uint8)
    lut = _args.normalize_lut(Policy(), torch.float32)
    norm = torch.ops.reinforced_data.normalize
    cases = [
        (x.float(), lut, r"x must be uint8"),
        (x[0], lut, r"x must be uint8 \[B, C, H, W\]"),
        (x, lut.to(torch.int32), r"lut must be floating"),
        (x, lut[:, :255], r"lut must be floating \[3, 256\]"),
        (x, lut[:2], r"lut must be floating \[3, 256\]"),
        (x[:, :2], lut, r"lut must be floating \[2, 256\]"),
    ]
    for a, b, match in cases:
        with pytest.raises(RuntimeError, match=match):
            norm(a, b, False)


# ------------------------------------------------------------------ Python-level errors
def _policy_and_params(name="rrc_ra_re_mix", k=2, hw=(50, 60)):
    policy = Policy.preset(name, output_size=(32, 40))
    params = policy.sample(np.random.default_rng(0), k, *hw)
    return policy, params


ENCODE_ERRORS = [  # (mutate params in place, source sizes or None, message regex)
    (lambda p: p["crop"].__setitem__(1, (40, 0, 20, 10)), [(50, 60)] * 2, r"params\['crop'\] of view 1"),
    (lambda p: p["crop"].__setitem__(0, (0, 55, 10, 10)), [(50, 60)] * 2, r"params\['crop'\] of view 0"),
    (lambda p: p["crop"].__setitem__(0, (0, 0, 0, 10)), None, r"params\['crop'\] of view 0"),
    (lambda p: p["crop"].__setitem__(1, (0, 0, 10, 0)), None, r"params\['crop'\] of view 1"),
    (lambda p: p["flip"].__setitem__(0, 2), None, r"params\['flip'\]"),
    (lambda p: p["ra_op"].__setitem__((0, 1), 14), None, r"params\['ra_op'\]"),
    (lambda p: p["ra_mag"].__setitem__((1, 0), 31), None, r"params\['ra_mag'\]"),
    (lambda p: p["ra_mag"].__setitem__((1, 0), -31), None, r"params\['ra_mag'\]"),
    (lambda p: p["erase"].__setitem__(1, (30, 0, 5, 5)), None, r"params\['erase'\] of view 1"),
    (lambda p: p["erase"].__setitem__(0, (0, 38, 5, 5)), None, r"params\['erase'\] of view 0"),
]


@pytest.mark.parametrize("mutate,sizes,match", ENCODE_ERRORS, ids=[e[2] for e in ENCODE_ERRORS])
def test_encode_errors_name_the_field(mutate, sizes, match):
    policy, params = _policy_and_params()
    mutate(params)
    with pytest.raises(ValueError, match=match):
        _args.encode(params, policy, sizes)


def test_encode_mix_errors_name_the_field():
    policy, params = _policy_and_params()
    p = params.copy()
    p["mix_mode"][0] = 3
    with pytest.raises(ValueError, match=r"params\['mix_mode'\]"):
        _args.encode_mix(p, policy)
    p = params.copy()
    p["mix_mode"][1] = 2
    p["mix_box"][1] = (30, 0, 5, 5)
    with pytest.raises(ValueError, match=r"params\['mix_box'\] of view 1"):
        _args.encode_mix(p, policy)
    with pytest.raises(ValueError, match="mixing"):
        _args.encode_mix(Policy().sample(np.random.default_rng(0), 2, 9, 9), Policy())


def test_encode_structural_errors():
    policy = Policy(ra_num_ops=2)
    with pytest.raises(ValueError, match="crop"):
        _args.encode(np.zeros(2, dtype=[("flip", np.uint8)]), policy)
    too_many = np.zeros(1, dtype=[("crop", np.uint16, (4,)), ("flip", np.uint8), ("ra_op", np.uint8, (5,)),
                                  ("ra_mag", np.int8, (5,))])
    too_many["crop"] = (0, 0, 4, 4)
    with pytest.raises(ValueError, match=r"params\['ra_op'\]"):
        _args.encode(too_many, policy)


@pytest.mark.parametrize("backend", ["reference", pytest.param("compiled", marks=pytest.mark.compiled)])
def test_replay_python_errors(backend):
    policy, params = _policy_and_params("rrc_ra_re", k=2, hw=(50, 60))
    params["crop"][1] = (20, 0, 30, 30)  # fits 50x60, not 40x60
    imgs = _util.image_batch([(50, 60), (50, 60)], seed=1)
    cases = [
        (dict(images=imgs[:1]), r"1 images but 2 parameter records"),
        (dict(images=[imgs[0], imgs[1].float()]), r"images\[1\] must be a uint8"),
        (dict(images=[imgs[0], imgs[1][:2]]), r"images\[1\] must be a uint8 tensor of shape \[3, H, W\]"),
        (dict(images=[imgs[0], imgs[1].numpy()]), r"images\[1\]"),
        (dict(images=[imgs[0], imgs[1][:, :40]]), r"params\['crop'\] of view 1"),
        (dict(out_dtype=torch.int32), r"out_dtype"),
        (dict(backend="fast"), r"backend='fast'"),
        (dict(partners=imgs), r"partners and partner_params together"),
    ]
    for kw, match in cases:
        args = dict(images=imgs, params=params, policy=policy, backend=backend)
        args.update(kw)
        with pytest.raises(ValueError, match=match):
            replay(**args)
    with pytest.raises(ValueError, match="at least one image"):
        replay([], params[:0], policy, backend=backend)


def test_replay_mixed_records_need_partners():
    policy, params = _policy_and_params("rrc_ra_re_mix", k=4)
    params["mix_mode"][0] = 1
    imgs = _util.image_batch([(50, 60)] * 4, seed=2)
    with pytest.raises(ValueError, match="partners"):
        replay(imgs, params, policy, backend="reference")


# ------------------------------------------------------------------ CUDA
@compiled
@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_cuda_matches_cpu_presets(name):
    policy = Policy.preset(name)
    sizes = [(1, 1), (5, 300), (240, 320), (333, 250), (64, 64), (100, 37), (224, 224), (500, 375)] * 2
    images = _util.image_batch(sizes, seed=41)
    partners = _util.image_batch(sizes[::-1], seed=42)
    g = np.random.default_rng(43)
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    pparams = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes[::-1]])
    rows = _args.encode(params, policy, sizes)
    cpu = torch.ops.reinforced_data.augment(images, rows, *policy.output_size)
    gpu = torch.ops.reinforced_data.augment([i.cuda() for i in images], rows.cuda(), *policy.output_size)
    assert gpu.is_cuda
    _util.assert_equal_views(gpu, cpu, rows, f"CUDA augment {name}")
    kw = dict(partners=partners, partner_params=pparams) if policy.mixing else {}
    kw_gpu = dict(partners=[p.cuda() for p in partners], partner_params=pparams) if policy.mixing else {}
    for dtype in (torch.uint8, torch.float32, torch.float16, torch.bfloat16):
        a = replay(images, params, policy, out_dtype=dtype, channels_last=True, backend="compiled", **kw)
        b = replay([i.cuda() for i in images], params, policy, out_dtype=dtype, channels_last=True,
                   backend="compiled", **kw_gpu)
        assert b.is_cuda and b.is_contiguous(memory_format=torch.channels_last)
        _util.assert_equal_views(b, a, what=f"CUDA replay {name} {dtype}")


@compiled
@pytest.mark.cuda
def test_cuda_random_rows_mix_normalize():
    g = np.random.default_rng(7)
    for oh, ow in [(17, 31), (1, 1), (224, 224), (3, 3)]:
        images, rows = _random_batch(g, 12, oh, ow, seed=oh)
        cpu = torch.ops.reinforced_data.augment(images, rows, oh, ow)
        gpu = torch.ops.reinforced_data.augment([i.cuda() for i in images], rows.cuda(), oh, ow)
        _util.assert_equal_views(gpu, cpu, rows, f"CUDA augment {oh}x{ow}")
    a, b, rows = _random_mix(g, 20, 17, 31)
    _util.assert_equal_views(torch.ops.reinforced_data.mix(a.cuda(), b.cuda(), rows.cuda()),
                             torch.ops.reinforced_data.mix(a, b, rows), rows, "CUDA mix")
    for dtype in NORM_DTYPES:
        lut = _args.normalize_lut(Policy(), dtype)
        for cl in (False, True):
            _util.assert_equal_views(torch.ops.reinforced_data.normalize(a.cuda(), lut.cuda(), cl),
                                     torch.ops.reinforced_data.normalize(a, lut, cl), what=f"CUDA normalize {dtype}")
    # garbage rows raise on CUDA too
    src = _util.smooth_image(30, 40, 5)
    bad = _rows([_with(_valid_row(), CROP_TOP=100)])
    with pytest.raises(RuntimeError, match=r"args\[0\] crop"):
        torch.ops.reinforced_data.augment([src.cuda()], bad.cuda(), 12, 10)
    with pytest.raises(RuntimeError, match=r"images\[1\] is on"):
        torch.ops.reinforced_data.augment([src.cuda(), src], _rows([_valid_row()] * 2).cuda(), 12, 10)
