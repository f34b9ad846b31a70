"""Policy: serialisation, validation, and the seeded parameter sampler."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _policy_util import SOURCE_SIZES, all_presets, fits, sample_all
from reinforced_data.policy import (
    MAX_RA_OPS,
    PRESETS,
    RA_OPS,
    SIGNED_OPS,
    UNPARAMETERISED_OPS,
    Policy,
)

REPO = Path(__file__).resolve().parents[1]
OUTPUT_SIZES = [(224, 224), (17, 31), (1, 1)]


# ------------------------------------------------------------------ serialisation
@pytest.mark.parametrize("name", all_presets())
def test_preset_json_round_trip(name):
    p = Policy.preset(name)
    text = p.to_json()
    q = Policy.from_json(text)
    assert q == p
    assert q.to_json() == text
    assert q.param_dtype() == p.param_dtype()
    json.loads(text)  # plain JSON


def test_custom_policy_round_trip():
    p = Policy(output_size=(17, 31), crop_scale=(0.3, 0.9), flip_prob=0.25, ra_num_ops=4, ra_magnitude=3,
               ra_num_magnitude_bins=10, fill=(1, 2, 3), erase_prob=0.7, erase_value="random",
               mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), mixup_alpha=0.4, cutmix_alpha=0.0, mix_prob=0.5)
    q = Policy.from_json(p.to_json())
    assert q == p and q.to_json() == p.to_json()
    assert Policy.from_dict(p.to_dict()) == p


def test_preset_overrides_and_unknown_preset():
    p = Policy.preset("timm", output_size=(64, 48))
    assert p.output_size == (64, 48) and p.erase_value == "random"
    with pytest.raises(ValueError, match="no_such_preset"):
        Policy.preset("no_such_preset")


def test_unknown_field_is_named():
    d = Policy().to_dict()
    d["cutmix_alhpa"] = 1.0
    with pytest.raises(ValueError, match="cutmix_alhpa"):
        Policy.from_dict(d)
    with pytest.raises(ValueError, match="cutmix_alhpa"):
        Policy.from_json(json.dumps(d))


BAD_VALUES = [
    ("output_size", (0, 224)),
    ("output_size", (224, 5000)),
    ("crop_scale", (0.5, 0.1)),
    ("crop_scale", (0.0, 1.0)),
    ("crop_scale", (0.5, 1.5)),
    ("crop_ratio", (4 / 3, 3 / 4)),
    ("crop_ratio", (0.0, 1.0)),
    ("flip_prob", 1.5),
    ("flip_prob", -0.1),
    ("erase_prob", 2.0),
    ("mix_prob", -1.0),
    ("switch_prob", 1.01),
    ("ra_num_ops", MAX_RA_OPS + 1),
    ("ra_num_ops", -1),
    ("ra_num_magnitude_bins", 1),
    ("ra_num_magnitude_bins", 129),
    ("ra_magnitude", 31),
    ("ra_magnitude", -1),
    ("fill", (0, 0, 256)),
    ("fill", (0, 0)),
    ("erase_scale", (0.5, 0.2)),
    ("erase_ratio", (0.0, 3.3)),
    ("erase_value", "zeros"),
    ("erase_value", (0, -1, 0)),
    ("std", (0.2, 0.0, 0.2)),
    ("mean", (0.5, 0.5)),
    ("mixup_alpha", -0.1),
    ("cutmix_alpha", -1.0),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=lambda v: str(v))
def test_bad_value_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=field):
        Policy(**{field: value})
    d = Policy().to_dict()
    d[field] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ValueError, match=field):
        Policy.from_json(json.dumps(d))


# Values of the wrong type, as a hand-edited JSON file would give them.
BAD_TYPES = [
    ("output_size", 224),
    ("ra_num_ops", 2.5),
    ("flip_prob", "0.5"),
    ("fill", "red"),
    ("crop_scale", None),
]


@pytest.mark.parametrize("field,value", BAD_TYPES, ids=lambda v: str(v))
def test_wrong_type_raises_value_error_naming_field(field, value):
    d = Policy().to_dict()
    d[field] = value
    with pytest.raises(ValueError, match=field):
        Policy.from_json(json.dumps(d))


# ------------------------------------------------------------------ sampling
def test_sample_same_seed_same_bytes():
    assert sample_all(1234) == sample_all(1234)


def test_sample_different_seeds_differ():
    for name in all_presets():
        p = Policy.preset(name)
        a = p.sample(np.random.default_rng(1), 32, 480, 640)
        b = p.sample(np.random.default_rng(2), 32, 480, 640)
        assert a.tobytes() != b.tobytes(), name
        assert not np.array_equal(a["crop"], b["crop"]), name


@pytest.mark.subprocess
def test_sample_same_bytes_in_another_process():
    code = (
        "import hashlib, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import _policy_util\n"
        "print(hashlib.sha256(_policy_util.sample_all(987)).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONHASHSEED": "123", "REINFORCED_DATA_DISABLE_COMPILED": "1"}
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == hashlib.sha256(sample_all(987)).hexdigest()


def test_sample_dtype_and_shape():
    for name in all_presets():
        p = Policy.preset(name)
        s = p.sample(np.random.default_rng(0), 5, 100, 120)
        assert s.shape == (5,) and s.dtype == p.param_dtype(), name
    assert set(Policy.preset("rrc").param_dtype().names) == {"crop", "flip"}
    assert set(Policy.preset("rrc_ra_re_noise").param_dtype().names) == {"crop", "flip", "ra_op", "ra_mag", "erase",
                                                                         "erase_seed"}
    # timm's recipe: random crop filter, int16 magnitudes and per-op interpolation
    timm = Policy.preset("timm").param_dtype()
    assert {"crop_filter", "ra_interp"} <= set(timm.names) and timm["ra_mag"].base == np.int16
    assert set(Policy.preset("rrc_ra_re_mix").param_dtype().names) >= {"mix_mode", "mix_lam", "mix_box"}


@pytest.mark.parametrize("k,h,w", [(0, 10, 10), (-1, 10, 10), (4, 0, 10), (4, 10, 0), (4, 70000, 10)])
def test_sample_rejects_bad_arguments(k, h, w):
    with pytest.raises(ValueError):
        Policy().sample(np.random.default_rng(0), k, h, w)


def _range_policies():
    for name in all_presets():
        for out in OUTPUT_SIZES:
            yield f"{name}-{out[0]}x{out[1]}", Policy.preset(name, output_size=out)
    yield "ra4-bins10", Policy(ra_num_ops=4, ra_magnitude=7, ra_num_magnitude_bins=10, erase_prob=1.0,
                               mixup_alpha=1.0, cutmix_alpha=0.5, mix_prob=0.7, switch_prob=0.3)
    yield "cutmix-only", Policy(cutmix_alpha=1.0, output_size=(17, 31))
    yield "mixup-only", Policy(mixup_alpha=0.2)


@pytest.mark.parametrize("policy", [p for _, p in _range_policies()], ids=[n for n, _ in _range_policies()])
def test_sampled_values_in_range(policy):
    oh, ow = policy.output_size
    g = np.random.default_rng(5)
    for h, w in SOURCE_SIZES:
        if not fits(policy, h, w):
            with pytest.raises(ValueError, match="smaller than"):
                policy.sample(g, 300, h, w)
            continue
        s = policy.sample(g, 300, h, w)
        top, left, ch, cw = (s["crop"][:, i].astype(np.int64) for i in range(4))
        assert (ch >= 1).all() and (cw >= 1).all(), (h, w)
        pad = policy.crop_padding
        assert (top + ch <= h + pad).all() and (left + cw <= w + pad).all(), (h, w)
        assert (top >= -pad).all() and (left >= -pad).all(), (h, w)
        if policy.crop_mode == "padded":
            assert (ch == oh).all() and (cw == ow).all()
        assert set(np.unique(s["flip"])) <= {0, 1}
        if "crop_filter" in s.dtype.names:
            assert set(np.unique(s["crop_filter"])) == {0, 1}
        if policy.ra_num_ops and policy.ra_family != "torchvision":
            _check_family_ranges(policy, s)
        elif policy.ra_num_ops:
            ops = s["ra_op"].astype(np.int64)
            mags = s["ra_mag"].astype(np.int64)
            assert ops.shape == (300, policy.ra_num_ops)
            assert (ops < len(RA_OPS)).all()
            assert (np.abs(mags) < policy.ra_num_magnitude_bins).all()
            unparam = np.isin(ops, [RA_OPS.index(o) for o in UNPARAMETERISED_OPS])
            signed = np.isin(ops, [RA_OPS.index(o) for o in SIGNED_OPS])
            assert (mags[unparam] == 0).all()
            assert (np.abs(mags[~unparam]) == policy.ra_magnitude).all()
            assert (mags[~signed] >= 0).all()
        if policy.erase_prob > 0:
            et, el, eh, ew = (s["erase"][:, i].astype(np.int64) for i in range(4))
            on = eh > 0
            assert ((ew > 0) == on).all(), "height and width are zero together"
            assert (et[~on] == 0).all() and (el[~on] == 0).all()
            assert (et + eh <= oh).all() and (el + ew <= ow).all()
            assert (eh[on] < oh).all() and (ew[on] < ow).all()  # torchvision's strict bound
        if policy.mixing:
            mode = s["mix_mode"].astype(np.int64)
            lam = s["mix_lam"].astype(np.int64)
            box = s["mix_box"].astype(np.int64)
            assert set(np.unique(mode)) <= ({0, 1, 2, 3} if policy.mix_mode == "sequential" else {0, 1, 2})
            assert (lam[mode == 0] == 255).all()
            assert (box[(mode != 2) & (mode != 3)] == 0).all()
            if policy.cutmix_alpha == 0:
                assert (mode < 2).all()
            if policy.mixup_alpha == 0:
                assert (mode != 1).all() and (mode != 3).all()
            both = mode == 3
            assert (box[both, 0] + box[both, 2] <= oh).all() and (box[both, 1] + box[both, 3] <= ow).all()
            assert (lam[both] <= np.ceil(255 / policy.mixup_lam_div)).all()
            cut = mode == 2
            assert (box[cut, 0] + box[cut, 2] <= oh).all() and (box[cut, 1] + box[cut, 3] <= ow).all()
            area = box[cut, 2] * box[cut, 3]
            np.testing.assert_array_equal(lam[cut], np.round((1.0 - area / (oh * ow)) * 255))


def _check_family_ranges(policy: Policy, s: np.ndarray) -> None:
    """Op ids inside the family's list, magnitudes inside its range, Identity slots carrying nothing."""
    from reinforced_data import _families as FAM

    names = policy.ra_ops()
    ops = s["ra_op"].astype(np.int64)
    mags = s["ra_mag"].astype(np.int64)
    assert ops.shape == (len(s), policy.ra_num_ops) and (ops < len(names)).all() and names[0] == "Identity"
    named = np.array(names, dtype=object)[ops]
    if policy.ra_family in FAM.TIMM_FAMILIES:
        assert s["ra_mag"].dtype == np.int16
        cap = FAM.timm_upper_bound(FAM.parse_config(policy.ra_config)) * FAM.MAG_SCALE
        signed = np.isin(named, list(FAM.TIMM_SIGNED))
        unparam = np.isin(named, list(FAM.TIMM_UNPARAMETERISED))
        radius = named == "GaussianBlurRand"  # its drawn radius in thousandths of a pixel, not a level
        assert ((mags[radius] >= 0) & (mags[radius] <= FAM.BLUR_RAND_MAX)).all()
        assert (np.abs(mags[~radius]) <= cap).all() and (mags[~signed] >= 0).all() and (mags[unparam] == 0).all()
        if "ra_interp" in s.dtype.names:
            geo = np.isin(named, list(FAM.TIMM_GEOMETRIC))
            assert set(np.unique(s["ra_interp"][geo])) <= {1, 2} and (s["ra_interp"][~geo] == 0).all()
    else:
        assert s["ra_mag"].dtype == np.int8
        nb = FAM.AUTOAUGMENT_BINS if policy.ra_family == "autoaugment" else policy.ra_num_magnitude_bins
        signed = np.isin(named, list(FAM.TV_SIGNED))
        unparam = np.isin(named, list(FAM.TV_UNPARAMETERISED))
        assert (np.abs(mags) < nb).all() and (mags[~signed] >= 0).all() and (mags[unparam] == 0).all()


# ------------------------------------------------------------------ distributions
N = 2000


def test_rrc_area_and_aspect_distribution():
    # All attempts fit in a 400x400 image at these scales, so the area share is
    # uniform on crop_scale and the aspect log-uniform on crop_ratio (up to rounding).
    p = Policy(crop_scale=(0.25, 0.5), crop_ratio=(3 / 4, 4 / 3))
    s = p.sample(np.random.default_rng(11), N, 400, 400)
    top, left, h, w = (s["crop"][:, i].astype(np.float64) for i in range(4))
    share = h * w / (400 * 400)
    assert np.mean((share >= 0.25 * 0.98) & (share <= 0.5 * 1.02)) > 0.99
    assert abs(share.mean() - 0.375) < 0.01
    assert abs(np.median(share) - 0.375) < 0.015
    aspect = w / h
    assert np.mean((aspect >= 0.75 * 0.97) & (aspect <= 4 / 3 * 1.03)) > 0.99
    assert abs(np.mean(np.log(aspect))) < 0.02  # log-uniform on a symmetric interval
    # positions uniform over the free range
    u = top / np.maximum(400 - h, 1)
    v = left / np.maximum(400 - w, 1)
    assert abs(u.mean() - 0.5) < 0.03 and abs(v.mean() - 0.5) < 0.03


def test_rrc_default_scale_on_photo_sized_image():
    p = Policy.preset("rrc")
    s = p.sample(np.random.default_rng(12), N, 480, 640)
    h = s["crop"][:, 2].astype(np.float64)
    w = s["crop"][:, 3].astype(np.float64)
    share = h * w / (480 * 640)
    assert np.mean((share >= 0.08 * 0.95) & (share <= 1.0)) > 0.97
    assert share.min() > 0.05
    assert 0.35 < share.mean() < 0.6


def test_rrc_fallback_is_central_crop():
    # A 3x700 strip: no attempt fits a 3/4..4/3 aspect, torchvision falls back to the
    # central crop of the widest allowed aspect.
    s = Policy().sample(np.random.default_rng(0), 50, 3, 700)
    expected = [0, (700 - 4) // 2, 3, 4]  # width round(3 * 4/3) = 4
    assert (s["crop"] == expected).all(), s["crop"][:3]


def test_flip_probability():
    s = Policy().sample(np.random.default_rng(13), N, 100, 100)
    assert abs(s["flip"].mean() - 0.5) < 0.05
    assert Policy(flip_prob=0.0).sample(np.random.default_rng(0), 200, 10, 10)["flip"].sum() == 0
    assert Policy(flip_prob=1.0).sample(np.random.default_rng(0), 200, 10, 10)["flip"].all()


def test_randaugment_op_and_sign_distribution():
    p = Policy(ra_num_ops=2, ra_magnitude=9)
    s = p.sample(np.random.default_rng(14), N, 64, 64)
    ops = s["ra_op"].reshape(-1)
    family = p.ra_ops()  # torchvision's 14 RandAugment ops (RA_OPS also holds the kernels' later ops)
    assert family == RA_OPS[:14] and ops.max() < len(family)
    counts = np.bincount(ops, minlength=len(family))
    expected = ops.size / len(family)
    assert (np.abs(counts - expected) < 5 * np.sqrt(expected)).all(), counts
    signed = np.isin(ops, [RA_OPS.index(o) for o in SIGNED_OPS])
    neg = (s["ra_mag"].reshape(-1)[signed] < 0).mean()
    assert abs(neg - 0.5) < 0.05


def test_erase_and_mix_probabilities():
    p = Policy(erase_prob=0.3, mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.8, switch_prob=0.25)
    s = p.sample(np.random.default_rng(15), N, 64, 64)
    erased = (s["erase"][:, 2] > 0).mean()
    assert abs(erased - 0.3) < 0.05  # a few fail all 10 attempts: slightly below 0.3
    mode = s["mix_mode"]
    assert abs((mode != 0).mean() - 0.8) < 0.04
    assert abs((mode[mode != 0] == 2).mean() - 0.25) < 0.05
    # MixUp λ ~ Beta(0.2, 0.2): mostly close to 0 or 1, mean 1/2
    lam = s["mix_lam"][mode == 1] / 255.0
    assert abs(lam.mean() - 0.5) < 0.06
    assert np.mean((lam < 0.1) | (lam > 0.9)) > 0.5


def test_policy_is_frozen_and_hashable():
    p = Policy.preset("rrc_ra_re")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.flip_prob = 0.1  # type: ignore[misc]
    assert hash(p) == hash(Policy.from_json(p.to_json()))
