"""replay() end to end: the compiled backend against the reference (uint8 and float
outputs, channels-last, MixUp/CutMix partners); sources in the layouts loaders hand over
(channels-last views from decode_jpeg or PIL->numpy, sliced RGBA, views of bigger images,
expanded gray planes, column-strided slices) replay to the bytes of their contiguous
copies; replay's Python-level errors; CUDA against CPU for every preset.

Tests marked ``compiled`` skip without the compiled op, or fail with
REINFORCED_DATA_REQUIRE_COMPILED=1 (see conftest.py).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch

import _util
from _rows import OP_ID, _policy_and_params, _random_op, _row, _rows
from reinforced_data import _args, _reference
from reinforced_data.policy import PRESETS, Policy

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    rmod = importlib.import_module("reinforced_data._replay")
replay = rmod.replay

compiled = pytest.mark.compiled


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


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
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
def test_strided_sources_replay_to_the_same_bytes(monkeypatch):
    """Every source layout gives the bytes of its contiguous copy, for every preset, on odd
    and 1-pixel images, crops at the borders, outputs below and above 32 columns (the AVX2
    kernel reads rows directly from 32 output columns on), with both CPU builds."""
    g = np.random.default_rng(8)
    sizes = [(1, 1), (2, 1), (1, 7), (5, 300), (37, 53), (64, 48), (100, 37), (240, 319)]
    images = _util.image_batch(sizes, seed=8)
    gray = [i[:1].expand(3, -1, -1).contiguous() for i in images]
    layouts = [source_layouts(i) for i in images]
    for out_hw in [(40, 56), (17, 31)]:
        batches = [_border_rows(sizes, *out_hw, g)]
        for name in sorted(PRESETS):
            policy = Policy.preset(name, output_size=out_hw)
            rows = batches[0].clone()  # sources a policy refuses (padded RandomCrop below the output) keep these
            ok = []
            for i, (h, w) in enumerate(sizes):
                try:
                    ok.append((i, policy.sample(g, 1, h, w)))
                except ValueError:
                    pass
            assert ok, name
            idx = [i for i, _ in ok]
            rows[idx] = _args.encode(np.concatenate([p for _, p in ok]), policy, [sizes[i] for i in idx])
            batches.append(rows)
        for rows in batches:
            ref = _reference.augment(images, rows, *out_hw)
            for isa in ("best", "baseline"):  # REINFORCED_DATA_CPU_ISA is read at every call
                monkeypatch.setenv("REINFORCED_DATA_CPU_ISA", isa)
                ref_gray = torch.ops.reinforced_data.augment(gray, rows, *out_hw)
                for layout in layouts[0]:
                    srcs = [lay[layout] for lay in layouts]
                    out = torch.ops.reinforced_data.augment(srcs, rows, *out_hw)
                    _util.assert_equal_views(out, ref_gray if layout == "gray_expanded" else ref, rows,
                                             f"{layout} sources {out_hw} ({isa} CPU build)")
    monkeypatch.delenv("REINFORCED_DATA_CPU_ISA")
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


# ------------------------------------------------------------------ Python-level errors
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
    if policy.crop_mode == "padded":  # RandomCrop refuses sources that, padded, are still below its output
        pad, (oh, ow) = policy.crop_padding, policy.output_size
        sizes = [(h, w) for h, w in sizes if h + 2 * pad >= oh and w + 2 * pad >= ow]
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
