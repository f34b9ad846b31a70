"""The CUDA kernels of csrc/cuda/replay_cuda.cu, run without a GPU, against the pure-PyTorch
reference (bit for bit).

replay_cuda.cu compiled with ``RD_EMULATE`` defined uses only a few CUDA names (thread and
block indices, ``__syncthreads``, atomics, ``RD_LAUNCH``). ``cuda_emulation/emu_shim.h``
supplies them for the host: blocks run one after another and the threads of a block run
as OS threads, with a real barrier for ``__syncthreads``. ``cuda_emulation/emu_ext.cpp``
wraps the launchers as a Python extension, built here with g++ through
``torch.utils.cpp_extension.load`` into a temporary directory.

So the very kernel code that runs on a GPU is checked on every run of the suite, GPU or
not. Marked ``cuda_emulation``. Without a C++ compiler or ninja the tests skip, or FAIL when
``REINFORCED_DATA_REQUIRE_COMPILED=1`` is set (as in CI); a build error is always an error.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import _util
from conftest import unavailable
from reinforced_data import _args as A
from reinforced_data import _families as FAM
from reinforced_data import _reference as R
from reinforced_data.policy import RA_OPS, SIGNED_OPS, Policy

pytestmark = [pytest.mark.cuda_emulation, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
EMU_DIR = HERE / "cuda_emulation"
CSRC = HERE.parent / "csrc"


def build_emulation(build_dir: Path, name: str = "rd_cuda_emulation", defines: tuple[str, ...] = ()):
    """Compile emu_ext.cpp (which includes csrc/cuda/replay_cuda.cu) and import it."""
    from torch.utils.cpp_extension import load

    build_dir.mkdir(parents=True, exist_ok=True)
    flags = ["-O1", "-std=c++20", "-pthread", "-Wall", "-Wno-unused-function"]
    flags += [f"-D{d}" for d in defines]
    return load(
        name=name,
        sources=[str(EMU_DIR / "emu_ext.cpp")],
        extra_include_paths=[str(CSRC), str(EMU_DIR)],
        extra_cflags=flags,
        extra_ldflags=["-pthread"],
        build_directory=str(build_dir),
        verbose=False,
    )


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    # Only a missing tool skips; with the tools there, a build error (a kernel that no longer
    # compiles) is an error of every test here, never a skip.
    from torch.utils.cpp_extension import is_ninja_available

    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        unavailable("CUDA emulation extension unavailable: no C++ compiler found")
    if not is_ninja_available():
        unavailable("CUDA emulation extension unavailable: ninja (which torch.utils.cpp_extension.load needs) "
                    "is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_emulation(tmp_path_factory.mktemp("cuda_emulation_build"))


@pytest.fixture(autouse=True)
def _no_divergent_barriers(emu):
    before = emu.divergent()
    yield
    assert emu.divergent() == before, "a thread left a kernel while others waited at __syncthreads"


def assert_same(got: torch.Tensor, exp: torch.Tensor, what: str = "") -> None:
    assert got.shape == exp.shape and got.dtype == exp.dtype, (what, got.shape, got.dtype, exp.shape, exp.dtype)
    if not torch.equal(got, exp):
        d = (got.double() - exp.double()).abs()
        bad = torch.nonzero(d.reshape(max(d.shape[0], 1), -1).sum(1)).flatten().tolist()
        pytest.fail(f"{what}: views {bad[:10]} differ, max |diff| {d.max().item()}, "
                    f"{int((d > 0).sum())} elements", pytrace=False)


def augment_both(emu, images, rows, oh, ow, what=""):
    assert_same(emu.augment(images, rows, oh, ow), R.augment(images, rows, oh, ow), what)


# -- max_taps ---------------------------------------------------------------------------

def _true_max_taps(n: int, m: int, filter: int = 0) -> int:
    """Most source taps in the filter's support for one output index (n -> m resampling):
    |(2j+1)m - (2i+1)n| < 2s (triangle) or 4s (bicubic), s = max(n, m)."""
    s = max(n, m)
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    nz = np.abs((2 * j + 1) * m - (2 * i + 1) * n) < (2 * s if filter == 0 else 4 * s)
    return int((nz.shape[1] - np.argmax(nz[:, ::-1], 1) - np.argmax(nz, 1)).max())


@pytest.mark.parametrize("filter", [0, 1])
def test_max_taps_bounds_the_taps(emu, filter):
    pairs = [(n, m) for n in range(1, 40) for m in range(1, 40)]
    rng = np.random.default_rng(0)
    pairs += [(int(rng.integers(1, 3000)), int(rng.integers(1, 600))) for _ in range(60)]
    pairs += [(2999, 1), (1, 600), (640, 224), (224, 640)]
    too_small = [(n, m) for n, m in pairs if _true_max_taps(n, m, filter) > emu.max_taps(n, m, filter)]
    assert not too_small, too_small[:10]


# -- sampled policies --------------------------------------------------------------------

SIZES = [(40, 50), (23, 61), (64, 48), (31, 31), (9, 70), (70, 9)]


def _rows_for(images, policy, seed):
    rng = np.random.default_rng(seed)
    params = np.concatenate([policy.sample(rng, 1, img.shape[1], img.shape[2]) for img in images])
    return A.encode(params, policy, [(i.shape[1], i.shape[2]) for i in images])


@pytest.mark.parametrize("out", [(17, 31), (24, 24)])
@pytest.mark.parametrize("preset", ["rrc", "rrc_ra_re", "timm"])
def test_presets(emu, preset, out):
    imgs = _util.image_batch(SIZES, 3)
    # "timm" is timm's own recipe (two ops per view, random interpolation, noise erasing)
    kw = {"rrc": {}, "rrc_ra_re": dict(ra_num_ops=4, erase_prob=0.7), "timm": dict(erase_prob=0.7)}[preset]
    pol = Policy.preset(preset, output_size=out, **kw)
    seed = ["rrc", "rrc_ra_re", "timm"].index(preset) * 10 + out[0]
    augment_both(emu, imgs, _rows_for(imgs, pol, seed), *out, what=preset)


@pytest.mark.parametrize("preset", ["timm_train_default", "trivialaugment"])
def test_colour_jitter_policies(emu, preset):
    """ColorJitter (brightness, contrast, saturation, hue in a random order per view; RandomApply's
    identity views too), alone and after a TrivialAugmentWide op."""
    imgs = _util.image_batch(SIZES, 4)
    kw = dict(jitter_brightness=(0.5, 1.5), jitter_contrast=(0.4, 1.6), jitter_saturation=(0.0, 2.0))
    if preset == "timm_train_default":
        kw.update(jitter_hue=(-0.5, 0.5), jitter_prob=0.8, erase_prob=0.5)
    pol = Policy.preset(preset, output_size=(21, 26), **kw)
    for seed in range(3):
        augment_both(emu, imgs, _rows_for(imgs, pol, 40 + seed), 21, 26, what=f"{preset} seed {seed}")


@pytest.mark.parametrize("kw", [dict(grayscale_prob=0.5, blur_prob=0.6, solarize_prob=0.5, blur_kernel_size=9,
                                     blur_sigma=(0.1, 4.0), erase_prob=0.5),
                                dict(grayscale_prob=0.7, grayscale_formula="pil", blur_prob=1.0, blur_sigma=(0.5, 9.0),
                                     solarize_threshold=200.5, solarize_prob=0.6, jitter_brightness=(0.5, 1.5))])
def test_grayscale_blur_solarize_policies(emu, kw):
    """RandomGrayscale (both formulas), GaussianBlur (RandomApply's identity views, kernels up to 23 taps,
    reflected borders on small views) and RandomSolarize after the colour jitter."""
    imgs = _util.image_batch(SIZES, 4)
    pol = Policy(output_size=(13, 26), **kw)
    for seed in range(2):
        augment_both(emu, imgs, _rows_for(imgs, pol, 60 + seed), 13, 26, what=f"grey/blur/solarize seed {seed}")


def test_deit3_three_augment(emu):
    """timm's 3a (Solarize, PIL's grey, GaussianBlurRand's PIL-box kernel) then ColorJitter(0.3)."""
    imgs = _util.image_batch(SIZES, 4)
    pol = Policy.preset("deit3", output_size=(19, 23))
    for seed in range(3):
        augment_both(emu, imgs, _rows_for(imgs, pol, 70 + seed), 19, 23, what=f"deit3 seed {seed}")


def test_hue_every_colour(emu):
    """The hue shift on a cube of colours (every 5th level of each channel) at shifts of every sector."""
    v = torch.arange(0, 256, 5)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    cube = torch.stack([r.reshape(-1), g.reshape(-1), b.reshape(-1)]).reshape(3, 52 * 4, 52 * 13).to(torch.uint8)
    H, W = cube.shape[1:]
    rows = []
    for k in (0, 1, -1, 5461, 10923, -16384, 21845, 32767, -32768, 32768, 777):
        r = _base_row([0, 0, H, W], 0)
        r[A.NUM_OPS] = 1
        r[A.OPS] = R.KERNEL_OPS.index("Hue")
        r[A.OPS + 1] = k
        rows.append(r)
    augment_both(emu, [cube] * len(rows), torch.from_numpy(np.stack(rows).astype(np.int32)), H, W, "hue")


# -- every op, crafted rows --------------------------------------------------------------

def _base_row(crop, flip):
    r = np.zeros(A.NUM_ARGS, np.int64)
    r[A.CROP_TOP:A.CROP_W + 1] = crop
    r[A.FLIP] = flip
    r[A.FILL:A.FILL + 3] = [12, 200, 77]
    return r


def test_every_op(emu):
    """Each op alone, at extreme and middle bins of both signs, flipped or not, with erasing
    (constant and noise) on half the rows."""
    pol = Policy.preset("rrc_ra_re", output_size=(19, 27))
    oh, ow = pol.output_size
    nb = pol.ra_num_magnitude_bins
    table = A._op_table(nb, oh, ow)
    imgs = _util.image_batch([(30, 41)] * 4, 7)
    mags = [-(nb - 1), -5, 7, nb - 1]
    rows, ims = [], []
    for op in range(len(RA_OPS)):
        for k, mag in enumerate(mags):
            img = imgs[k]
            H, W = img.shape[1:]
            r = _base_row([0, 0, H, W], k % 2)
            r[A.NUM_OPS] = 1
            r[A.OPS] = op
            if RA_OPS[op] not in SIGNED_OPS:
                mag = abs(mag)
            r[A.OPS + 1:A.OPS + 7] = table[op, mag + nb - 1]
            if RA_OPS[op] == "GaussianBlur":  # a real kernel (the table holds the identity's)
                r[A.OPS + 1:A.OPS + 7] = A.pack_blur_taps(FAM.gaussian_taps(2 * k + 3, 500 * (k + 1)))
            elif RA_OPS[op] == "Grayscale":
                r[A.OPS + 1] = k % 2
            if k % 2:
                r[A.ERASE_TOP:A.ERASE_W + 1] = [2, 3, 7, 9]
                r[A.ERASE_VALUE:A.ERASE_VALUE + 3] = -1 if k == 1 else [5, 6, 7]  # -1: noise
                r[A.ERASE_SEED] = 1234 + k + 17 * op
            rows.append(r)
            ims.append(img)
    augment_both(emu, ims, torch.from_numpy(np.stack(rows).astype(np.int32)), oh, ow, "every op")


def test_op_chains(emu):
    """Several ops in a row (every op appears at every step across the batch)."""
    pol = Policy.preset("rrc_ra_re", output_size=(19, 27))
    oh, ow = pol.output_size
    nb = pol.ra_num_magnitude_bins
    table = A._op_table(nb, oh, ow)
    rng = np.random.default_rng(5)
    n = len(RA_OPS)
    imgs = _util.image_batch([(30, 41)] * n, 7)
    for nops in (2, 4):
        rows = []
        for k in range(n):
            H, W = imgs[k].shape[1:]
            r = _base_row([rng.integers(0, 5), rng.integers(0, 5), H - 6, W - 8], k % 2)
            r[A.NUM_OPS] = nops
            for s in range(nops):
                op = (k + 5 * s) % n
                mag = int(rng.integers(-(nb - 1), nb))
                if RA_OPS[op] not in SIGNED_OPS:
                    mag = abs(mag)
                base = A.OPS + s * A.OP_STRIDE
                r[base] = op
                r[base + 1:base + 7] = table[op, mag + nb - 1]
                if RA_OPS[op] == "GaussianBlur":  # PIL's kernel at a random radius (the table holds the identity)
                    r[base + 1:base + 7] = A.pack_blur_taps(FAM.pil_blur_taps(int(rng.integers(0, 4000))))
            rows.append(r)
        augment_both(emu, imgs, torch.from_numpy(np.stack(rows).astype(np.int32)), oh, ow, f"nops={nops}")


# -- geometry edge cases -----------------------------------------------------------------

@pytest.mark.parametrize("out", [(17, 31), (1, 1), (2, 3), (40, 1), (64, 64)])
def test_geometry_edges(emu, out):
    """1x1 crops, crops equal to the source, up- and downsampling, tiny outputs,
    channels-last and strided sources; histogram/statistics ops on top."""
    oh, ow = out
    src = _util.smooth_image(37, 53, 11)
    noise = torch.randint(0, 256, (3, 29, 33), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cl = torch.randint(0, 256, (45, 60, 3), dtype=torch.uint8,
                       generator=torch.Generator().manual_seed(2)).permute(2, 0, 1)
    sl = torch.randint(0, 256, (3, 80, 90), dtype=torch.uint8,
                       generator=torch.Generator().manual_seed(3))[:, 5:60:2, 3:80:3]
    cases = [
        (src, [0, 0, 1, 1]), (src, [36, 52, 1, 1]), (src, [0, 0, 37, 53]), (src, [10, 20, 3, 2]),
        (noise, [0, 0, 29, 33]), (noise, [5, 5, 1, 28]), (noise, [0, 3, 29, 1]),
        (cl, [0, 0, 45, 60]), (cl, [3, 7, 20, 11]), (sl, [0, 0, sl.shape[1], sl.shape[2]]), (sl, [1, 2, 9, 13]),
    ]
    stat_ops = ["Sharpness", "Equalize", "AutoContrast", "Contrast"]
    rows, ims = [], []
    for k, (img, crop) in enumerate(cases):
        for flip in (0, 1):
            r = _base_row(crop, flip)
            r[A.NUM_OPS] = 4
            for s, op in enumerate(stat_ops[k % 4:] + stat_ops[:k % 4]):
                base = A.OPS + s * A.OP_STRIDE
                r[base] = RA_OPS.index(op)
                r[base + 1] = 65536 + 40000 * (1 if flip else -1)
            rows.append(r)
            ims.append(img)
    augment_both(emu, ims, torch.from_numpy(np.stack(rows).astype(np.int32)), oh, ow, f"edges {out}")


def _layouts(img: torch.Tensor) -> dict[str, torch.Tensor]:
    """``img``'s pixels in the layouts loaders give (see test_replay.source_layouts)."""
    _, h, w = img.shape
    hwc = img.permute(1, 2, 0).contiguous()
    big = torch.zeros(3, h + 3, w + 5, dtype=torch.uint8)
    big[:, 1:1 + h, 2:2 + w] = img
    return {
        "channels_last": hwc.permute(2, 0, 1),
        "channels_last_rgba_sliced": torch.cat([hwc, hwc[..., :1]], 2).permute(2, 0, 1)[:3],
        "planar_view": big[:, 1:1 + h, 2:2 + w],
        "column_strided": torch.stack([img, img], 3).reshape(3, h, 2 * w)[:, :, ::2],
    }


def test_strided_sources(emu):
    """Sources in every layout give the bytes of their contiguous copies (crops at the
    borders, 1-pixel images, RandAugment ops and erasing on top)."""
    sizes = [(1, 1), (2, 1), (1, 9)] + SIZES[:4]
    imgs = _util.image_batch(sizes, 21)
    pol = Policy.preset("rrc_ra_re", output_size=(13, 21), ra_num_ops=3, erase_prob=0.7)
    rows = _rows_for(imgs, pol, 22)
    for k, (h, w) in enumerate(sizes):  # even views: a crop touching the bottom-right corner
        if k % 2 == 0:
            ch, cw = int(rows[k, A.CROP_H]), int(rows[k, A.CROP_W])
            rows[k, A.CROP_TOP], rows[k, A.CROP_LEFT] = h - ch, w - cw
    exp = R.augment(imgs, rows, 13, 21)
    layouts = [_layouts(i) for i in imgs]
    for name in layouts[0]:
        assert_same(emu.augment([lay[name] for lay in layouts], rows, 13, 21), exp, f"{name} sources")


def test_empty_batch(emu):
    got = emu.augment([], torch.zeros(0, A.NUM_ARGS, dtype=torch.int32), 5, 6)
    assert_same(got, torch.empty(0, 3, 5, 6, dtype=torch.uint8), "B=0")


# -- mix and normalize -------------------------------------------------------------------

def _ab():
    g = torch.Generator().manual_seed(9)
    a = torch.randint(0, 256, (6, 3, 13, 17), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (6, 3, 13, 17), dtype=torch.uint8, generator=g)
    return a, b


def test_mix(emu):
    a, b = _ab()
    margs = torch.tensor([[0, 255, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 100, 0, 0, 0, 0], [2, 10, 2, 3, 5, 7],
                          [2, 0, 0, 0, 13, 17], [2, 200, 12, 16, 1, 1]], dtype=torch.int32)
    assert_same(emu.mix(a, b, margs), R.mix(a, b, margs), "mix")
    assert_same(emu.mix(a.contiguous(memory_format=torch.channels_last), b, margs), R.mix(a, b, margs),
                "mix channels_last")
    assert_same(emu.mix(a[:0], b[:0], margs[:0]), R.mix(a[:0], b[:0], margs[:0]), "mix empty")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_normalize(emu, dtype, channels_last):
    a, _ = _ab()
    lut = A.normalize_lut(Policy.preset("rrc"), dtype)
    got = emu.normalize(a, lut, channels_last)
    exp = R.normalize(a, lut, channels_last)
    assert_same(got, exp, f"normalize {dtype} channels_last={channels_last}")
    assert got.stride() == exp.stride()


# -- rows v2: interpolation, resize filters, padded crops, new ops, mix mode 3 -----------------

def test_random_rows_v2(emu):
    """Random rows over many sizes: padded crops, both resize filters, every interpolation and
    kernel op (tests/_rows.py draws them), against the reference."""
    from _rows import _random_batch

    g = np.random.default_rng(2026)
    for oh, ow in [(17, 31), (1, 1), (3, 3), (40, 40), (31, 17)]:
        images, rows = _random_batch(g, 10, oh, ow, seed=oh * 100 + ow)
        augment_both(emu, images, rows, oh, ow, f"random rows {oh}x{ow}")


@pytest.mark.parametrize("interp", [1, 2])
def test_geometric_interpolation(emu, interp):
    """Each geometric op at extreme and middle bins with bilinear / bicubic sampling, channels-last
    and planar sources, erasing on some rows."""
    oh, ow = 19, 27
    nb = 31
    imgs = _util.image_batch([(30, 41)] * 4, 8)
    rows, ims = [], []
    for op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        for k, mag in enumerate([-(nb - 1), -5, 7, nb - 1]):
            img = imgs[k]
            if k % 2:
                img = img.permute(1, 2, 0).contiguous().permute(2, 0, 1)
            r = _base_row([0, 0, img.shape[1], img.shape[2]], k % 2)
            r[A.NUM_OPS] = 1
            r[A.OPS] = RA_OPS.index(op)
            r[A.OPS + 1:A.OPS + 7] = A.op_params(op, mag, nb, oh, ow)
            r[A.OPS + A.OP_INTERP] = interp
            if k == 3:
                r[A.ERASE_TOP:A.ERASE_W + 1] = [2, 3, 7, 9]
                r[A.ERASE_VALUE:A.ERASE_VALUE + 3] = -1
                r[A.ERASE_SEED] = 99
            rows.append(r)
            ims.append(img)
    augment_both(emu, ims, torch.from_numpy(np.stack(rows).astype(np.int32)), oh, ow, f"interp {interp}")


@pytest.mark.parametrize("out", [(13, 21), (64, 48), (1, 1)])
def test_bicubic_and_padded_crops(emu, out):
    """Bicubic and triangle resizes, up and down, of crops inside, partly outside and wholly
    outside the source (PAD_FILL), in every source layout."""
    oh, ow = out
    src = _util.smooth_image(37, 53, 12)
    boxes = [(0, 0, 37, 53), (5, 7, 20, 11), (-4, -4, 45, 61), (-10, 30, 20, 40), (30, -6, 20, 9),
             (40, 60, 5, 5), (-50, -50, 3, 200), (0, 0, 1, 1), (36, 52, 4, 4)]
    rows = []
    for k, box in enumerate(boxes):
        for filt in (0, 1):
            r = _base_row(list(box), (k + filt) % 2)
            r[A.RESIZE_FILTER] = filt
            r[A.PAD_FILL:A.PAD_FILL + 3] = [3 * k, 255 - k, 128]
            rows.append(r)
    rows = torch.from_numpy(np.stack(rows).astype(np.int32))
    exp = R.augment([src] * len(rows), rows, oh, ow)
    for name, img in {"contiguous": src, **_layouts(src)}.items():
        assert_same(emu.augment([img] * len(rows), rows, oh, ow), exp, f"{name} sources {out}")


def test_new_ops(emu):
    """Invert and SolarizeAdd (thresholds and addends at their ends) after other ops."""
    oh, ow = 15, 22
    imgs = _util.image_batch([(30, 41)] * 6, 9)
    inv, sadd = A.OPS, A.OPS + A.OP_STRIDE
    rows = []
    for k, (t, add) in enumerate([(0, 255), (256, -255), (128, 110), (77, -3), (255, 255), (1, 0)]):
        r = _base_row([1, 2, 25, 30], k % 2)
        r[A.NUM_OPS] = 3
        r[inv] = R.KERNEL_OPS.index("Invert")
        r[sadd] = R.KERNEL_OPS.index("SolarizeAdd")
        r[sadd + 1:sadd + 3] = [t, add]
        r[A.OPS + 2 * A.OP_STRIDE] = R.KERNEL_OPS.index("Equalize")
        rows.append(r)
    augment_both(emu, imgs, torch.from_numpy(np.stack(rows).astype(np.int32)), oh, ow, "Invert, SolarizeAdd")


def test_mix_mode_3(emu):
    a, b = _ab()
    margs = torch.tensor([[3, 255, 0, 0, 0, 0], [3, 0, 0, 0, 13, 17], [3, 100, 2, 3, 5, 7], [3, 17, 12, 16, 1, 1],
                          [1, 100, 2, 3, 5, 7], [2, 100, 2, 3, 5, 7]], dtype=torch.int32)
    exp = R.mix(a, b, margs)
    assert_same(emu.mix(a, b, margs), exp, "mix mode 3")
    # mode 3 is MixUp, then the CutMix box from the same partner
    assert torch.equal(exp[2, :, 2:7, 3:10], b[2, :, 2:7, 3:10])
    assert torch.equal(exp[2, :, 8:], R.mix(a, b, margs[4:5].expand(6, 6))[2, :, 8:])
