"""The pure-PyTorch reference (reinforced_data._reference, reached through replay with
backend="reference") against torchvision, and the semantics of erase / mix / normalize.

Tolerances against torchvision are stated per op below; the reference is the spec the
compiled kernels must match bit for bit (tests/test_kernels.py), torchvision is what the
spec claims to reproduce.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import _util
from reinforced_data import _args, _reference
from reinforced_data.policy import RA_OPS, SIGNED_OPS, UNPARAMETERISED_OPS, Policy

TV_OPS = Policy().ra_ops()  # torchvision's RandAugment ops (the default family), ids 0..13 of RA_OPS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # fallback warning: see test_import_fallback.py
    from reinforced_data._replay import replay

tv2 = pytest.importorskip("torchvision.transforms.v2")
from torchvision.transforms import InterpolationMode  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

# ----------------------------------------------------------------------------------
# Tolerances vs torchvision: op -> (max |diff|, max fraction of differing uint8 values),
# nearest interpolation for the geometric ops, fill 0. The fraction is over all values
# (3 x H x W) of the test images of one (op, signed bin) case.
RA_TOLERANCE: dict[str, tuple[int, float]] = {
    "Identity": (0, 0.0),
    # exact at most bins (the presets' 9 among them); at magnitudes 0.04, 0.12, 0.20, 0.28
    # whole rows sample exactly half-way between two pixels, and torchvision's float32 grid
    # breaks those ties the other way (measured: up to 5.0 % of values at bins +-20)
    "ShearX": (255, 0.06),
    "ShearY": (255, 0.06),
    "TranslateX": (0, 0.0),
    "TranslateY": (0, 0.0),
    # nearest-neighbour ties decided differently by float32 rounding: few pixels, but the
    # difference at such a pixel is that of two neighbours (or image vs fill)
    "Rotate": (255, 0.001),
    # Brightness: the Q16 factor is searched to reproduce torchvision's map (58 of 61 bins)
    "Brightness": (1, 0.01),
    # Color / Contrast: float32 blends there, Q16 here: +-1 where x*f + o*(1-f) is within
    # float32 rounding of an integer (measured: up to 10.0 % of values for Color at bins
    # +-20, 0.05 % for Contrast at bin 9 and up to 4 % at bins +-8, +-16, +-24)
    "Color": (1, 0.12),
    "Contrast": (1, 0.05),
    "Sharpness": (0, 0.0),
    "Posterize": (0, 0.0),
    "Solarize": (0, 0.0),
    "AutoContrast": (1, 0.02),
    "Equalize": (0, 0.0),
}
# resized crop vs F.resized_crop(bilinear, antialias=True)
UPSAMPLE_TOLERANCE = (0, 0.0)
DOWNSAMPLE_TOLERANCE = (1, 0.01)  # fraction over all values of all downsampling cases

NUM_BINS = 31
RA_BINS = (1, 4, 9, 16, 20, 30)  # 9 is the presets' magnitude
# (H, W) of the test images, seeded 0, 1, 2, ...; the last is not square
RA_IMAGE_SIZES = ((224, 224), (224, 224), (224, 224), (224, 224), (168, 224))


def _ra_cases():
    for op in TV_OPS:
        if op in UNPARAMETERISED_OPS:
            yield op, 0
            continue
        for b in RA_BINS:
            yield op, b
            if op in SIGNED_OPS:
                yield op, -b


@pytest.fixture(scope="module")
def ra_images():
    return [_util.smooth_image(h, w, i) for i, (h, w) in enumerate(RA_IMAGE_SIZES)]


def _single_view_params(policy: Policy, crop, flip=0, ops=(), mags=(), erase=None, erase_seed=0):
    p = np.zeros(1, dtype=policy.param_dtype())
    p["crop"] = crop
    p["flip"] = flip
    if policy.ra_num_ops:
        p["ra_op"] = ops
        p["ra_mag"] = mags
    if erase is not None:
        p["erase"] = erase
    if policy.erase_value == "random" and policy.erase_prob > 0:
        p["erase_seed"] = erase_seed
    return p


def _reference_op(img: torch.Tensor, op: str, signed_bin: int, fill=(0, 0, 0)) -> torch.Tensor:
    """One RandAugment op through the whole replay path: identity crop, encode, augment."""
    h, w = img.shape[1:]
    policy = Policy(output_size=(h, w), ra_num_ops=1, ra_num_magnitude_bins=NUM_BINS, fill=fill)
    p = _single_view_params(policy, (0, 0, h, w), ops=[RA_OPS.index(op)], mags=[signed_bin])
    return replay([img], p, policy, backend="reference")[0]


def _torchvision_op(img: torch.Tensor, op: str, signed_bin: int, fill=None) -> torch.Tensor:
    """torchvision's own RandAugment application with the magnitude it would draw."""
    ra = tv2.RandAugment(num_magnitude_bins=NUM_BINS)
    h, w = img.shape[1:]
    mags = ra._AUGMENTATION_SPACE[op][0](NUM_BINS, h, w)
    magnitude = 0.0 if mags is None else float(mags[abs(signed_bin)]) * (-1.0 if signed_bin < 0 else 1.0)
    fill_arg = {} if fill is None else {"others": list(fill)}
    return ra._apply_image_or_video_transform(
        img, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=fill_arg
    )


# ------------------------------------------------------------------ RandAugment
@pytest.mark.parametrize("op,signed_bin", list(_ra_cases()), ids=lambda v: str(v))
def test_randaugment_op_matches_torchvision(ra_images, op, signed_bin):
    ours = torch.cat([_reference_op(img, op, signed_bin).flatten() for img in ra_images])
    theirs = torch.cat([_torchvision_op(img, op, signed_bin).flatten() for img in ra_images])
    max_abs, max_frac = RA_TOLERANCE[op]
    _util.assert_close_int(ours, theirs, max_abs, max_frac, f"{op} at signed bin {signed_bin}")


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"])
def test_geometric_fill_matches_torchvision(ra_images, op):
    fill = (10, 200, 77)
    img = ra_images[-1]
    ours = _reference_op(img, op, -9, fill=fill)
    theirs = _torchvision_op(img, op, -9, fill=fill)
    max_abs, max_frac = RA_TOLERANCE[op]
    _util.assert_close_int(ours, theirs, max_abs, max_frac, f"{op} with fill {fill}")
    # and the fill really shows up (a -9 bin moves content off some border)
    assert ((ours == torch.tensor(fill, dtype=torch.uint8)[:, None, None]).all(dim=0)).any()


@pytest.mark.parametrize("num_bins", [2, 10, 31])
@pytest.mark.parametrize("hw", [(224, 224), (100, 37)])
def test_magnitude_tables_match_torchvision(num_bins, hw):
    h, w = hw
    space = tv2.RandAugment._AUGMENTATION_SPACE
    for op in TV_OPS:
        theirs = space[op][0](num_bins, h, w)
        ours = _args._magnitudes(op, num_bins, h, w)
        if theirs is None:
            assert ours is None, op
            continue
        assert ours is not None, op
        np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=op)
        assert (op in SIGNED_OPS) == space[op][1], op


def test_identity_crop_is_identity(ra_images):
    for img in ra_images:
        h, w = img.shape[1:]
        policy = Policy(output_size=(h, w))
        out = replay([img], _single_view_params(policy, (0, 0, h, w)), policy, backend="reference")
        assert torch.equal(out[0], img)


# ------------------------------------------------------------------ resized crop
UPSAMPLE_CASES = [  # (source H, W), (top, left, h, w), (out_h, out_w)
    ((96, 128), (10, 20, 40, 50), (64, 80)),
    ((96, 128), (7, 3, 13, 29), (56, 31)),
    ((96, 128), (3, 4, 60, 20), (60, 40)),
    ((96, 128), (0, 0, 1, 1), (5, 7)),
    ((96, 128), (0, 0, 96, 128), (96, 128)),
    ((31, 17), (0, 0, 31, 17), (224, 224)),
    ((96, 128), (1, 2, 3, 4), (200, 300)),
]


def _random_downsample_cases(n=40, seed=7):
    g = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        H, W = (int(v) for v in g.integers(48, 320, 2))
        h, w = int(g.integers(32, H + 1)), int(g.integers(32, W + 1))
        t, l = int(g.integers(0, H - h + 1)), int(g.integers(0, W - w + 1))
        oh, ow = int(g.integers(16, h + 1)), int(g.integers(16, w + 1))
        cases.append(((H, W), (t, l, h, w), (oh, ow)))
    return cases


DOWNSAMPLE_CASES = [
    ((96, 128), (0, 0, 96, 128), (40, 56)),
    ((96, 128), (5, 9, 80, 100), (23, 37)),
    ((96, 128), (0, 0, 96, 128), (17, 31)),
    ((480, 640), (37, 80, 400, 500), (224, 224)),
] + _random_downsample_cases()


def _tv_resized_crop(img, box, out_hw, flip):
    t, l, h, w = box
    out = F.resized_crop(img, t, l, h, w, list(out_hw), interpolation=InterpolationMode.BILINEAR,
                         antialias=True)
    return F.horizontal_flip(out) if flip else out


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("case", UPSAMPLE_CASES, ids=str)
def test_resized_crop_upsampling_matches_torchvision(case, flip):
    (H, W), box, (oh, ow) = case
    img = _util.smooth_image(H, W, 11)
    ours = _reference.resized_crop(img, *box, oh, ow, flip)
    _util.assert_close_int(ours, _tv_resized_crop(img, box, (oh, ow), flip), *UPSAMPLE_TOLERANCE, str(case))


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True])
def test_resized_crop_downsampling_matches_torchvision(flip):
    ours, theirs = [], []
    for i, ((H, W), box, (oh, ow)) in enumerate(DOWNSAMPLE_CASES):
        img = _util.smooth_image(H, W, 200 + i)
        a = _reference.resized_crop(img, *box, oh, ow, flip)
        b = _tv_resized_crop(img, box, (oh, ow), flip)
        _util.assert_close_int(a, b, DOWNSAMPLE_TOLERANCE[0], 1.0, f"case {i}: {(H, W)} {box} -> {(oh, ow)}")
        ours.append(a.flatten())
        theirs.append(b.flatten())
    _util.assert_close_int(torch.cat(ours), torch.cat(theirs), *DOWNSAMPLE_TOLERANCE, "all downsampling cases")


@pytest.mark.slow
@pytest.mark.parametrize("case", UPSAMPLE_CASES[:3] + DOWNSAMPLE_CASES[:4], ids=str)
def test_resized_crop_flip_is_mirror_of_unflipped(case):
    (H, W), box, (oh, ow) = case
    img = _util.smooth_image(H, W, 12)
    flipped = _reference.resized_crop(img, *box, oh, ow, True)
    assert torch.equal(flipped, _reference.resized_crop(img, *box, oh, ow, False).flip(-1))


def test_resample_weights_rows_sum_to_one():
    for n, m in [(1, 1), (1, 7), (7, 1), (10, 10), (13, 224), (640, 224), (225, 224)]:
        w = _reference.resample_weights(n, m)
        assert w.shape == (m, n)
        assert (w >= 0).all()
        total = w.sum(dim=1)
        # each row is normalised to 2**14; rounding each weight costs at most 1/2 per tap
        taps = (w > 0).sum(dim=1)
        assert ((total - (1 << _reference.WEIGHT_BITS)).abs() <= taps).all(), (n, m, total)


def test_replay_rrc_matches_torchvision():
    """Full replay of an RRC + flip policy vs torchvision with the same boxes."""
    policy = Policy.preset("rrc", output_size=(64, 80))
    sizes = [(120, 160), (90, 70), (300, 250), (40, 50), (64, 80), (500, 375)]
    images = _util.image_batch(sizes, seed=3)
    g = np.random.default_rng(0)
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    params["flip"][:3] = [0, 1, 1]  # make sure both cases occur
    out = replay(images, params, policy, backend="reference")
    assert out.shape == (len(sizes), 3, 64, 80) and out.dtype == torch.uint8
    ours, theirs = [], []
    for i, img in enumerate(images):
        box = [int(v) for v in params["crop"][i]]
        tv = _tv_resized_crop(img, box, (64, 80), bool(params["flip"][i]))
        _util.assert_close_int(out[i], tv, DOWNSAMPLE_TOLERANCE[0], 1.0, f"view {i} box {box}")
        ours.append(out[i].flatten())
        theirs.append(tv.flatten())
    _util.assert_close_int(torch.cat(ours), torch.cat(theirs), *DOWNSAMPLE_TOLERANCE, "rrc views")


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("preset", ["rrc_ra_re", "timm"])
def test_replay_is_deterministic(preset):
    policy = Policy.preset(preset, output_size=(48, 40))
    sizes = [(64, 64), (33, 90), (120, 80), (17, 5)]
    images = _util.image_batch(sizes, seed=5)
    g = np.random.default_rng(42)
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    a = replay(images, params, policy, backend="reference")
    b = replay([img.clone() for img in images], params.copy(), policy, backend="reference")
    assert torch.equal(a, b)
    # a view does not depend on the other views of the batch
    for i in range(len(sizes)):
        single = replay([images[i]], params[i:i + 1], policy, backend="reference")
        assert torch.equal(single[0], a[i]), f"view {i} differs when replayed alone"


# ------------------------------------------------------------------ erasing
ERASE_BOX = (5, 7, 20, 30)  # top, left, height, width in the 48x64 output


def _erase_setup(erase_value):
    policy = Policy(output_size=(48, 64), erase_prob=1.0, erase_value=erase_value)
    img = _util.smooth_image(70, 90, 21)
    return policy, img


def test_erase_constant_value():
    policy, img = _erase_setup((10, 20, 30))
    crop = (3, 4, 60, 80)
    erased = replay([img], _single_view_params(policy, crop, erase=ERASE_BOX), policy, backend="reference")[0]
    plain = replay([img], _single_view_params(policy, crop, erase=(0, 0, 0, 0)), policy, backend="reference")[0]
    t, l, h, w = ERASE_BOX
    inside = torch.zeros(48, 64, dtype=torch.bool)
    inside[t:t + h, l:l + w] = True
    expected_box = torch.tensor([10, 20, 30], dtype=torch.uint8)[:, None].expand(3, h * w)
    assert torch.equal(erased[:, inside], expected_box)
    assert torch.equal(erased[:, ~inside], plain[:, ~inside])
    assert not torch.equal(plain[:, inside], erased[:, inside])
    # the no-box view is the plain resized crop
    assert torch.equal(plain, _reference.resized_crop(img, *crop, 48, 64, False))


def _fmix32_noise(seed, c, y, x, h, w):
    """Independent scalar implementation of the documented erase noise."""
    k = ((c * h + y) * w + x) ^ ((seed * 0x9E3779B9) & 0xFFFFFFFF)
    k ^= k >> 16
    k = (k * 0x85EBCA6B) & 0xFFFFFFFF
    k ^= k >> 13
    k = (k * 0xC2B2AE35) & 0xFFFFFFFF
    k ^= k >> 16
    return k & 0xFF


def test_erase_noise_semantics():
    policy, img = _erase_setup("random")
    crop = (0, 0, 70, 90)
    t, l, h, w = ERASE_BOX

    def view(seed, box=ERASE_BOX):
        p = _single_view_params(policy, crop, erase=box, erase_seed=seed)
        return replay([img], p, policy, backend="reference")[0]

    a1, a2, b = view(1), view(1), view(2)
    plain = view(1, box=(0, 0, 0, 0))
    assert torch.equal(a1, a2), "same seed must give the same noise"
    box_a, box_b = a1[:, t:t + h, l:l + w], b[:, t:t + h, l:l + w]
    assert float((box_a != box_b).double().mean()) > 0.9, "different seeds should give different noise"
    outside = torch.ones(48, 64, dtype=torch.bool)
    outside[t:t + h, l:l + w] = False
    assert torch.equal(a1[:, outside], plain[:, outside])
    assert torch.equal(b[:, outside], plain[:, outside])
    # looks like uniform noise
    assert len(torch.unique(box_a)) > 200
    assert abs(float(box_a.double().mean()) - 127.5) < 8
    # it is the documented hash of the absolute output position
    for c, y, x in [(0, t, l), (1, t + 3, l + 11), (2, t + h - 1, l + w - 1)]:
        assert int(a1[c, y, x]) == _fmix32_noise(1, c, y, x, 48, 64), (c, y, x)
    for seed in (0, 1, 65535):
        noise = _reference.erase_noise(seed, 3, 48, 64)
        for c, y, x in [(0, 0, 0), (2, 47, 63), (1, 20, 33)]:
            assert int(noise[c, y, x]) == _fmix32_noise(seed, c, y, x, 48, 64)


# ------------------------------------------------------------------ mixing
def _mix_rows(*rows):
    return torch.tensor(rows, dtype=torch.int32)


def test_mixup_hand_computed():
    # out = (a*q + b*(255-q) + 127) // 255, worked out by hand:
    #   a=200, b=100, q=64:  (12800 + 19100 + 127) // 255 = 32027 // 255 = 125
    #   a=0,   b=255, q=128: (0 + 32385 + 127) // 255     = 32512 // 255 = 127
    #   a=10,  b=250, q=1:   (10 + 63500 + 127) // 255    = 63637 // 255 = 249
    #   a=255, b=0,   q=254: (64770 + 0 + 127) // 255     = 64897 // 255 = 254
    pairs = [(200, 100, 64, 125), (0, 255, 128, 127), (10, 250, 1, 249), (255, 0, 254, 254)]
    a = torch.zeros(len(pairs), 3, 2, 2, dtype=torch.uint8)
    b = torch.zeros_like(a)
    rows = []
    for i, (va, vb, q, _) in enumerate(pairs):
        a[i] = va
        b[i] = vb
        rows.append((1, q, 0, 0, 0, 0))
    out = _reference.mix(a, b, _mix_rows(*rows))
    for i, (*_, expected) in enumerate(pairs):
        assert (out[i] == expected).all(), (pairs[i], out[i].flatten().tolist())
    # q = 255 keeps a, q = 0 gives b
    x = _util.smooth_image(9, 11, 1)[None]
    y = _util.smooth_image(9, 11, 2)[None]
    assert torch.equal(_reference.mix(x, y, _mix_rows((1, 255, 0, 0, 0, 0))), x)
    assert torch.equal(_reference.mix(x, y, _mix_rows((1, 0, 0, 0, 0, 0))), y)


def test_cutmix_and_no_mix():
    a = _util.smooth_image(20, 30, 3)[None].repeat(3, 1, 1, 1)
    b = _util.smooth_image(20, 30, 4)[None].repeat(3, 1, 1, 1)
    rows = _mix_rows((2, 0, 2, 3, 4, 5), (0, 100, 2, 3, 4, 5), (2, 255, 0, 0, 20, 30))
    out = _reference.mix(a, b, rows)
    box = torch.zeros(20, 30, dtype=torch.bool)
    box[2:6, 3:8] = True
    assert torch.equal(out[0][:, box], b[0][:, box])
    assert torch.equal(out[0][:, ~box], a[0][:, ~box])
    assert torch.equal(out[1], a[1]), "mode 0 leaves the view alone"
    assert torch.equal(out[2], b[2]), "a full-size box pastes the whole partner"
    assert torch.equal(a, _util.smooth_image(20, 30, 3)[None].repeat(3, 1, 1, 1)), "inputs are not modified"


def test_replay_with_partners_is_mix_of_views():
    policy = Policy.preset("rrc_ra_re_mix", output_size=(32, 40))
    sizes = [(50, 60), (64, 64), (40, 90), (80, 30), (45, 45), (70, 50)]
    images = _util.image_batch(sizes, seed=8)
    partners = _util.image_batch(sizes[::-1], seed=9)
    g = np.random.default_rng(3)
    params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
    pparams = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes[::-1]])
    params["mix_mode"][:3] = [0, 1, 2]
    params["mix_lam"][:3] = [255, 77, 200]
    params["mix_box"][:3] = [(0, 0, 0, 0), (0, 0, 0, 0), (4, 5, 10, 12)]
    out = replay(images, params, policy, partners=partners, partner_params=pparams, backend="reference")
    unmixed = dataclasses.replace(policy, mixup_alpha=0.0, cutmix_alpha=0.0)
    views = replay(images, params, unmixed, backend="reference")
    pviews = replay(partners, pparams, unmixed, backend="reference")
    expected = _reference.mix(views, pviews, _args.encode_mix(params, policy))
    assert torch.equal(out, expected)
    assert torch.equal(out[0], views[0])
    assert not torch.equal(out[1], views[1])


def test_cutmix_lambda_is_box_share():
    policy = Policy.preset("rrc_ra_re_mix", output_size=(32, 48), switch_prob=1.0)
    p = policy.sample(np.random.default_rng(0), 500, 100, 100)
    cut = p["mix_mode"] == 2
    assert cut.sum() > 400
    area = p["mix_box"][cut, 2].astype(float) * p["mix_box"][cut, 3]
    np.testing.assert_array_equal(p["mix_lam"][cut], np.round((1 - area / (32 * 48)) * 255).astype(np.uint8))


# ------------------------------------------------------------------ normalize
NORM_RTOL = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8,
             torch.float64: 2.0 ** -52}


@pytest.mark.parametrize("dtype", list(NORM_RTOL), ids=str)
def test_normalize_values(dtype):
    policy = Policy.preset("rrc", output_size=(24, 40), mean=(0.5, 0.25, 0.75), std=(0.2, 0.3, 0.1))
    sizes = [(50, 60), (31, 77)]
    images = _util.image_batch(sizes, seed=10)
    params = np.concatenate([policy.sample(np.random.default_rng(i), 1, h, w) for i, (h, w) in enumerate(sizes)])
    u8 = replay(images, params, policy, backend="reference")
    out = replay(images, params, policy, out_dtype=dtype, backend="reference")
    assert out.dtype == dtype and out.shape == u8.shape
    mean = torch.tensor(policy.mean, dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(policy.std, dtype=torch.float64)[None, :, None, None]
    expected = (u8.double() / 255.0 - mean) / std
    err = (out.double() - expected).abs()
    bound = expected.abs() * NORM_RTOL[dtype] * 1.0001 + 1e-30
    assert (err <= bound).all(), f"max relative error {float((err / expected.abs().clamp_min(1e-30)).max()):.3e}"
    # every value of every channel: the lookup table itself
    lut = _args.normalize_lut(policy, dtype)
    v = torch.arange(256, dtype=torch.float64) / 255.0
    exp_lut = (v[None] - mean[0, :, :, 0]) / std[0, :, :, 0]
    assert ((lut.double() - exp_lut).abs() <= exp_lut.abs() * NORM_RTOL[dtype] * 1.0001 + 1e-30).all()


@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.float32], ids=str)
def test_channels_last_output(out_dtype):
    policy = Policy.preset("rrc_ra_re", output_size=(20, 28))
    sizes = [(50, 60), (31, 77), (40, 40)]
    images = _util.image_batch(sizes, seed=12)
    params = np.concatenate([policy.sample(np.random.default_rng(i), 1, h, w) for i, (h, w) in enumerate(sizes)])
    cl = replay(images, params, policy, out_dtype=out_dtype, channels_last=True, backend="reference")
    plain = replay(images, params, policy, out_dtype=out_dtype, channels_last=False, backend="reference")
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    assert plain.is_contiguous()
    assert torch.equal(cl, plain)
