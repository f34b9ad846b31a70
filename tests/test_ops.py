"""The compiled ops torch.ops.reinforced_data.{augment, mix, normalize}: bit for bit against
the pure-PyTorch reference (random rows over many sizes, every op, every preset), on empty
batches, deterministically; mix and normalize; opcheck (CPU, and CUDA inputs when a GPU is
present) and torch.compile; errors that name the bad argument; CUDA against CPU.

Tests marked ``compiled`` skip without the compiled op, or fail with
REINFORCED_DATA_REQUIRE_COMPILED=1 (see conftest.py).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import _reinforce_util as U
import _util
from _rows import (OP_ID, OUTPUT_SIZES, _random_batch, _random_mix, _row, _rows, _valid_row, _with)
from reinforced_data import _args, _families, _reference
from reinforced_data.policy import PRESETS, RA_OPS, SIGNED_OPS, UNPARAMETERISED_OPS, Policy

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    rmod = importlib.import_module("reinforced_data._replay")

compiled = pytest.mark.compiled


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
                    p = _args.op_params(op, sign * b, nb, oh, ow)
                    if op == "Grayscale":  # formula 0 (torchvision) and 1 (PIL)
                        p = [b % 2, 0, 0, 0, 0, 0]
                    elif op == "GaussianBlur":  # torchvision's kernel at several sizes, PIL's at several radii
                        taps = (_families.gaussian_taps(min(2 * b + 1, 23), 700 * b) if sign > 0 and nb == 31
                                else _families.pil_blur_taps(150 * b))
                        p = _args.pack_blur_taps(taps)
                    rows.append(_row(crop, fill=(9, 99, 199), ops=[(OP_ID[op], p)]))
    rows_t = _rows(rows)
    out = torch.ops.reinforced_data.augment(images, rows_t, oh, ow)
    _util.assert_equal_views(out, _reference.augment(images, rows_t, oh, ow), rows_t, "single ops")


def _samples(policy, h, w) -> bool:
    """Whether the policy samples views of an h x w source (RandomCrop with padding refuses small ones)."""
    try:
        policy.sample(np.random.default_rng(0), 1, h, w)
    except ValueError:
        return False
    return True


@compiled
@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("out_hw", [(224, 224), (17, 31)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_augment_presets_match_reference(name, out_hw):
    policy = Policy.preset(name, output_size=out_hw)
    g = np.random.default_rng(len(name))
    sizes = [(1, 1), (5, 300), (240, 320), (333, 250), (64, 64), (100, 37), (224, 224), (50, 500)]
    sizes = [s for s in sizes if _samples(policy, *s)]  # padded RandomCrop refuses sources below the output
    images = _util.image_batch(sizes, seed=len(name))
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    rows = _args.encode(params, policy, sizes)
    out = torch.ops.reinforced_data.augment(images, rows, *out_hw)
    _util.assert_equal_views(out, _reference.augment(images, rows, *out_hw), rows, f"preset {name}")


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


_C_ALONE = """
import sys, torch
import reinforced_data._C  # only the compiled module: it imports the fakes of reinforced_data._ops
assert "reinforced_data._ops" in sys.modules
assert torch._C._dispatch_pystub("reinforced_data::augment", "")[0] == "reinforced_data._ops"
images = [torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8) for _ in range(2)]
rows = torch.zeros(2, {num_args}, dtype=torch.int32)
rows[:, {crop_h}:{crop_w} + 1] = torch.tensor([9, 11], dtype=torch.int32)  # the crop: the whole image
torch.library.opcheck(torch.ops.reinforced_data.augment.default, (images, rows, 6, 7))
f = torch.compile(lambda i, r: torch.ops.reinforced_data.augment(i, r, 6, 7) + 1, backend="aot_eager",
                  fullgraph=True)
assert torch.equal(f(images, rows), torch.ops.reinforced_data.augment(images, rows, 6, 7) + 1)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.subprocess
@compiled
def test_importing_only_the_compiled_module_registers_the_fakes():
    """``import reinforced_data._C`` alone (a fresh process, without the package's Python modules) gives
    opcheck and torch.compile the fake kernels; the library names reinforced_data._ops as their module."""
    code = _C_ALONE.format(num_args=_args.NUM_ARGS, crop_h=_args.CROP_H, crop_w=_args.CROP_W)
    res = subprocess.run([sys.executable, "-c", code], env=U.subprocess_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.strip().splitlines()[-1] == "ok"


def _cuda_opcheck_inputs():
    images, rows = _small_augment_inputs()
    a, b, mrows = _random_mix(np.random.default_rng(1), 3, 5, 6)
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8))
    lut = _args.normalize_lut(Policy(), torch.float32)
    return [i.cuda() for i in images], rows, a.cuda(), b.cuda(), mrows, x.cuda(), lut.cuda()


@compiled
@pytest.mark.cuda
def test_opcheck_cuda():
    """opcheck on CUDA inputs: args on the device and on the CPU (both are accepted)."""
    images, rows, a, b, mrows, x, lut = _cuda_opcheck_inputs()
    ops = torch.ops.reinforced_data
    for r in (rows.cuda(), rows):
        torch.library.opcheck(ops.augment.default, (images, r, 6, 7))
    for r in (mrows.cuda(), mrows):
        torch.library.opcheck(ops.mix.default, (a, b, r))
    for cl in (False, True):
        torch.library.opcheck(ops.normalize.default, (x, lut, cl))


# ------------------------------------------------------------------ argument errors (compiled)
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
        # crops may reach outside the image (padded crops), but not past +-65535 (csrc/replay_checks.h)
        ([img], _rows([_with(row, CROP_TOP=65536)]), 12, 10, r"args\[0\] crop"),
        ([img], _rows([_with(row, CROP_LEFT=-65536)]), 12, 10, r"args\[0\] crop"),
        ([img], _rows([_with(row, CROP_H=0)]), 12, 10, r"args\[0\] crop"),
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
    bad_mode[1, 0] = 4  # modes are 0..3
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


# ------------------------------------------------------------------ CUDA
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
    # a crop reaching outside the image reads the pad fill, on CUDA as on the CPU
    src = _util.smooth_image(30, 40, 5)
    outside = _rows([_with(_valid_row(), CROP_TOP=100), _with(_valid_row(), CROP_TOP=-7, CROP_LEFT=-9)])
    _util.assert_equal_views(torch.ops.reinforced_data.augment([src.cuda()] * 2, outside.cuda(), 12, 10),
                             torch.ops.reinforced_data.augment([src] * 2, outside, 12, 10), outside,
                             "CUDA padded crops")
    # garbage rows raise on CUDA too (tops past +-65535 are refused: csrc/replay_checks.h)
    for bad in (_rows([_with(_valid_row(), CROP_TOP=65536)]), _rows([_with(_valid_row(), CROP_W=0)])):
        with pytest.raises(RuntimeError, match=r"args\[0\] crop"):
            torch.ops.reinforced_data.augment([src.cuda()], bad.cuda(), 12, 10)
    with pytest.raises(RuntimeError, match=r"images\[1\] is on"):
        torch.ops.reinforced_data.augment([src.cuda(), src], _rows([_valid_row()] * 2).cuda(), 12, 10)


@compiled
@pytest.mark.cuda
def test_cuda_ops_with_host_rows_do_not_synchronize():
    """augment, mix and normalize with argument rows on the host never wait for the stream
    (torch.cuda.set_sync_debug_mode("error") raises on any host-device synchronisation)."""
    g = np.random.default_rng(11)
    images, rows = _random_batch(g, 8, 17, 31, seed=11)
    a, b, mrows = _random_mix(g, 8, 17, 31)
    lut = _args.normalize_lut(Policy(), torch.float32)
    ga, gb, glut, gimages = a.cuda(), b.cuda(), lut.cuda(), [i.cuda() for i in images]
    ops = torch.ops.reinforced_data
    ops.mix(ga, gb, mrows)  # warm-up: module loading, first allocations
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = ops.augment(gimages, rows, 17, 31)
        mixed = ops.mix(ga, gb, mrows)
        normed = ops.normalize(mixed, glut, True)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    _util.assert_equal_views(views, ops.augment(images, rows, 17, 31), rows, "CUDA augment, host rows")
    _util.assert_equal_views(mixed, ops.mix(a, b, mrows), mrows, "CUDA mix, host rows")
    _util.assert_equal_views(normed, ops.normalize(ops.mix(a, b, mrows), lut, True), what="CUDA normalize")
