"""Policies from recipes: Policy.from_timm / from_torchvision, the presets, serialisation of the
version-2 fields, their validation, the kernel rows of the new families, and sample -> encode ->
reference replay of every family and preset on a photo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reinforced_data import _args as A
from reinforced_data import _families as FAM
from reinforced_data.policy import (PRESETS, V2_DEFAULTS, V3_DEFAULTS, V4_DEFAULTS, V4_PARTNER_DEFAULTS, V5_DEFAULTS,
                                    Policy)

torch = pytest.importorskip("torch")
T1 = pytest.importorskip("torchvision.transforms")
v2 = pytest.importorskip("torchvision.transforms.v2")
timm_aa = pytest.importorskip("timm.data.auto_augment")

V1_FIELDS = {"output_size", "crop_scale", "crop_ratio", "flip_prob", "ra_num_ops", "ra_magnitude",
             "ra_num_magnitude_bins", "fill", "erase_prob", "erase_scale", "erase_ratio", "erase_value", "mean",
             "std", "mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob"}


# ------------------------------------------------------------------ serialisation
def test_version1_policies_serialise_as_before():
    for name in ("rrc", "rrc_ra_re", "rrc_ra_re_mix", "torchvision", "rrc_ra_re_noise", "paper_imagenet"):
        d = Policy.preset(name).to_dict()
        assert set(d) == V1_FIELDS, name
    assert (set(V2_DEFAULTS) | set(V3_DEFAULTS) | set(V4_DEFAULTS) | set(V4_PARTNER_DEFAULTS) | set(V5_DEFAULTS)
            | V1_FIELDS == {f for f in Policy.__dataclass_fields__})
    assert Policy(**V5_DEFAULTS) == Policy() and not Policy().augmix  # version 5's: no AugMix
    assert Policy(**V4_PARTNER_DEFAULTS) == Policy()  # version 4's inline partners: partners are stored views
    assert Policy(**V2_DEFAULTS) == Policy()  # the defaults of the new fields are version 1's behaviour
    assert Policy(**V3_DEFAULTS) == Policy() and not Policy().jittering  # version 3's: no colour jitter
    assert Policy(**V4_DEFAULTS) == Policy() and not Policy().extra_ops  # version 4's: no grayscale/blur/solarize


def test_every_new_field_round_trips():
    p = Policy(output_size=(40, 48), crop_mode="padded", crop_padding=6, pad_fill=(1, 2, 3), flip_prob=0.3,
               ra_family="trivialaugment", ra_num_ops=1, ra_interpolation="bilinear", ra_prob=0.6,
               ra_num_magnitude_bins=21, mix_mode="sequential", mixup_alpha=0.5, mixup_prob=0.4, mixup_lam_div=2.0,
               cutmix_alpha=1.0, cutmix_prob=0.7, erase_prob=0.2)
    q = Policy.from_json(p.to_json())
    assert q == p and q.to_json() == p.to_json() and hash(q) == hash(p)
    assert set(p.to_dict()) - V1_FIELDS == {"crop_mode", "crop_padding", "pad_fill", "ra_family", "ra_interpolation",
                                             "ra_prob", "mix_mode", "mixup_prob", "mixup_lam_div", "cutmix_prob"}
    t = Policy.from_timm(interpolation="random", auto_augment="rand-m9-n3-mstd101-mmax12-inc1", ra_prob=0.8)
    d = json.loads(t.to_json())
    assert isinstance(d["ra_config"], dict) and d["ra_config"]["magnitude_noise"] == "uniform"
    assert Policy.from_json(t.to_json()) == t and Policy.from_dict(d) == t
    assert Policy(**{**d, "ra_config": json.dumps(d["ra_config"])}) == t  # JSON text is accepted too


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trip_and_dtype(name):
    p = Policy.preset(name)
    assert Policy.from_json(p.to_json()) == p
    s = p.sample(np.random.default_rng(0), 8, 64, 80)
    assert s.dtype == p.param_dtype()


BAD = [
    (dict(crop_mode="cropped"), "crop_mode"),
    (dict(interpolation="lanczos"), "interpolation"),
    (dict(crop_mode="padded", interpolation="bicubic"), "interpolation"),
    (dict(crop_padding=4), "crop_padding"),
    (dict(crop_mode="padded", crop_padding=-1), "crop_padding"),
    (dict(pad_fill=(0, 0, 300)), "pad_fill"),
    (dict(ra_family="augmix"), "ra_family"),
    (dict(ra_prob=1.5), "ra_prob"),
    (dict(ra_interpolation="bicubic"), "ra_interpolation"),
    (dict(ra_family="trivialaugment", ra_num_ops=2), "ra_num_ops"),
    (dict(ra_family="autoaugment", ra_num_ops=1), "ra_num_ops"),
    (dict(ra_family="timm", ra_num_ops=2), "ra_config"),
    (dict(ra_config={"ops": [["Rotate", 0.5, 9]]}), "ra_config"),
    (dict(ra_family="timm", ra_num_ops=2, ra_config={"ops": [["Cutout", 0.5, 9]]}), "Cutout"),
    (dict(ra_family="timm", ra_num_ops=2, ra_config={"ops": [["Rotate", 1.5, 9]]}), "probability"),
    (dict(ra_family="timm", ra_num_ops=5, ra_config={"ops": [["Rotate", 0.5, 9]], "num_layers": 5}), "at most 4"),
    (dict(ra_family="timm", ra_num_ops=2, ra_config={"ops": [["Rotate", 0.5, 9]], "magnitude_max": 1000}),
     "magnitude_max"),
    (dict(ra_family="timm_autoaugment", ra_num_ops=2, ra_config={"ops": [["Rotate", 0.5, 9]]}), "policy"),
    (dict(ra_family="timm", ra_num_ops=2, ra_config="{not json"), "JSON"),
    (dict(mix_mode="both"), "mix_mode"),
    (dict(mixup_prob=0.5), "mixup_prob"),
    (dict(mix_mode="sequential", mixup_lam_div=0.5), "mixup_lam_div"),
    (dict(mix_mode="sequential", mix_prob=0.5), "mix_prob"),
    (dict(mix_mode="sequential", cutmix_prob=2.0), "cutmix_prob"),
]


@pytest.mark.parametrize("kwargs,fragment", BAD, ids=[f for _, f in BAD])
def test_bad_v2_fields_are_config_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Policy(**kwargs)


def test_padded_crop_refuses_images_it_cannot_fit():
    p = Policy.preset("paper_cifar")
    with pytest.raises(ValueError, match="smaller than the 32x32 output"):
        p.sample(np.random.default_rng(0), 4, 20, 40)
    s = p.sample(np.random.default_rng(0), 4, 24, 24)  # 24 + 2 * 4 = 32: the one position
    assert (s["crop"] == [-4, -4, 32, 32]).all()


# ------------------------------------------------------------------ from_timm
def _timm_ops(config_str, hp):
    t = timm_aa.rand_augment_transform(config_str, dict(hp))
    return [[o.name, float(o.prob), float(o.magnitude)] for o in t.ops], t.num_layers


@pytest.mark.parametrize("config_str", ["rand-m9-mstd0.5-inc1", "rand-m9-mstd0.5", "rand-m7-n3-p0.3",
                                        "rand-m10-n1-mstd101", "rand-m9-mmax15-inc1", "rand-m9-tweights"])
def test_from_timm_resolves_rand_strings_as_timm(config_str):
    p = Policy.from_timm(auto_augment=config_str, interpolation="bicubic", input_size=(3, 160, 192))
    cfg = p.ra_spec()
    ops, layers = _timm_ops(config_str, dict(translate_const=int(160 * 0.45), img_mean=(124, 116, 104)))
    assert cfg["ops"] == ops and cfg["num_layers"] == layers == p.ra_num_ops
    assert cfg["interpolation"] == "bicubic" and cfg["translate_const"] == 72
    assert p.output_size == (160, 192) and p.fill == (124, 116, 104) and p.interpolation == "bicubic"
    assert (cfg["weights"] is None) == ("tweights" not in config_str)
    assert p.ra_ops()[0] == "Identity" and set(p.ra_ops()[1:]) == {o[0] for o in ops}


def test_from_timm_defaults_and_presets():
    p = Policy.from_timm()
    assert p.ra_family == "timm" and p.interpolation == "random" and p.erase_prob == 0.25
    assert p.erase_value == "random" and not p.mixing  # like timm's train.py: mixing only when asked
    m = Policy.from_timm(mixup_alpha=0.8, cutmix_alpha=1.0)
    assert m.mixing and (m.mixup_alpha, m.cutmix_alpha, m.mix_prob, m.switch_prob) == (0.8, 1.0, 1.0, 0.5)
    assert p.ra_spec()["magnitude_noise"] == "gauss" and p.ra_spec()["magnitude_std"] == 0.5
    assert Policy.preset("timm_rand_m9_mstd05_inc1") == Policy.from_timm() == Policy.preset("timm")
    aa = Policy.from_timm(auto_augment="original-mstd0.5", mixup_alpha=0, cutmix_alpha=0, re_mode="const")
    t = timm_aa.auto_augment_transform("original-mstd0.5", dict(translate_const=100, img_mean=(124, 116, 104)))
    assert aa.ra_family == "timm_autoaugment" and aa.ra_num_ops == 2
    assert aa.ra_spec()["policy"] == [[[o.name, o.prob, float(o.magnitude)] for o in sp] for sp in t.policy]
    assert aa.erase_value == (124, 116, 104)  # 'const' erases to 0 after normalisation: the mean colour
    assert Policy.from_timm(auto_augment=None, color_jitter=0).ra_num_ops == 0


@pytest.mark.parametrize("kwargs,argument", [
    (dict(vflip=0.5), "vflip"), (dict(auto_augment=None, color_jitter=(0.4, 0.4)), "color_jitter"),
    (dict(auto_augment=None, color_jitter=-0.1), "color_jitter"), (dict(auto_augment=None, color_jitter="a"), "color_jitter"),
    (dict(auto_augment=None, color_jitter=(0.4, 0.4, 0.4, 0.7)), "ColorJitter refuses"),
    (dict(force_color_jitter=True), "at most 4"),
    (dict(re_count=2), "re_count"), (dict(re_mode="rand"), "re_mode"), (dict(re_num_splits=2), "re_num_splits"),
    (dict(auto_augment="augmix-m5-w9"), "AugMix width 9"), (dict(auto_augment="augmix-m5-d5"), "AugMix depth 5"),
    (dict(auto_augment="augmix-m5", ra_prob=0.5), "ra_prob"), (dict(auto_augment="rand-m9-t3a"), "at most 4"),
    (dict(auto_augment="rand-m9-x4"), "auto_augment"), (dict(cutmix_minmax=(0.2, 0.8)), "cutmix_minmax"),
    (dict(mixup_mode="batch"), "mixup_mode"), (dict(interpolation="nearest"), "interpolation"),
    (dict(train_crop_mode="rkrc"), "train_crop_mode"), (dict(grayscale_prob=1.5), "grayscale_prob"),
    (dict(gaussian_blur_prob=-0.1), "gaussian_blur_prob"),
    (dict(auto_augment="rand-m9-n3", grayscale_prob=0.2, gaussian_blur_prob=0.1), "at most 4"), (dict(correct_lam=False), "correct_lam"),
    (dict(auto_augment="rand-m9-n5"), "at most 4"),
])
def test_from_timm_refuses_what_cannot_be_replayed(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        Policy.from_timm(**kwargs)


# ------------------------------------------------------------------ from_torchvision
@pytest.mark.parametrize("T", [T1, v2], ids=["v1", "v2"])
def test_from_torchvision_reads_the_supported_transforms(T):
    conv = [T.ToTensor()] if T is T1 else [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    norm = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    p = Policy.from_torchvision(T.Compose([
        T.RandomResizedCrop(176, scale=(0.25, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(0.3), T.RandAugment(num_ops=3, magnitude=7, interpolation=T.InterpolationMode.BILINEAR,
                                                   fill=[10, 20, 30]),
        *conv, norm, T.RandomErasing(p=0.4, value=0)]))
    assert p.output_size == (176, 176) and p.crop_scale == (0.25, 1.0) and p.interpolation == "bicubic"
    assert p.flip_prob == 0.3 and (p.ra_family, p.ra_num_ops, p.ra_magnitude) == ("torchvision", 3, 7)
    assert p.ra_interpolation == "bilinear" and p.fill == (10, 20, 30) and p.erase_prob == 0.4
    assert p.mean == (0.5, 0.4, 0.3) and p.erase_value == (128, 102, 76)  # 0 after Normalize = the mean
    ta = Policy.from_torchvision(T.Compose([T.RandomResizedCrop(224), T.TrivialAugmentWide()]))
    assert ta == Policy.preset("trivialaugment")
    aa = Policy.from_torchvision(T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.AutoAugment()]))
    assert aa == Policy.preset("autoaugment")
    cifar = Policy.from_torchvision(T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]),
                                    mean=PRESETS["paper_cifar"]["mean"], std=PRESETS["paper_cifar"]["std"])
    assert cifar == Policy.preset("paper_cifar")
    ra = Policy.from_torchvision([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                                  T.RandomApply([T.RandAugment()], p=0.5)])
    assert ra.ra_prob == 0.5 and ra.ra_num_ops == 2


@pytest.mark.parametrize("T", [T1, v2], ids=["v1", "v2"])
def test_from_torchvision_refuses_by_name(T):
    cases = [
        ([T.RandomResizedCrop(224), T.ToTensor() if T is T1 else T.ToDtype(torch.float32, scale=True), T.ColorJitter(0.4)],
         "ColorJitter after the float conversion"),
        ([T.RandomResizedCrop(224), T.ColorJitter(0.4), T.RandAugment()], "replay order"),
        ([T.RandomResizedCrop(224), T.RandAugment(), T.ColorJitter(0.4, 0.4, 0.4)], "at most 4"),
        ([T.RandomResizedCrop(224), T.ToTensor() if T is T1 else T.ToDtype(torch.float32, scale=True), T.RandomGrayscale()],
         "RandomGrayscale after the float conversion"),
        ([T.RandomResizedCrop(224), T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)], "IMAGENET"),
        ([T.RandomResizedCrop(224, interpolation=T.InterpolationMode.NEAREST)], "RandomResizedCrop"),
        ([T.RandomCrop(32, padding=4, padding_mode="reflect")], "padding_mode"),
        ([T.RandomCrop(32, padding=(1, 2))], "padding"),
        ([T.RandomCrop(32, pad_if_needed=True)], "pad_if_needed"),
        ([T.RandomHorizontalFlip()], "no RandomResizedCrop"),
        ([T.RandomResizedCrop(224), T.RandAugment(), T.RandomHorizontalFlip()], "replay order"),
        ([T.RandomResizedCrop(224), T.RandAugment(interpolation=T.InterpolationMode.BICUBIC)], "RandAugment"),
    ]
    for transforms, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            Policy.from_torchvision(T.Compose(transforms))


def test_autoaugment_imagenet_table_is_torchvisions():
    ours = [tuple(sp) for sp in FAM.AUTOAUGMENT_IMAGENET]
    assert ours == [tuple(sp) for sp in v2.AutoAugment()._policies]
    assert ours == [tuple(sp) for sp in T1.AutoAugment()._get_policies(T1.AutoAugmentPolicy.IMAGENET)]


def test_trivialaugment_table_is_torchvisions():
    space = v2.TrivialAugmentWide._AUGMENTATION_SPACE
    assert tuple(space) == FAM.TORCHVISION_OPS
    for op, (fn, signed) in space.items():
        theirs = fn(31, 50, 70)
        ours = FAM.torchvision_magnitudes("trivialaugment", op, 31, 50, 70)
        assert (theirs is None) == (ours is None), op
        if theirs is not None:
            np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=op)
        assert (op in FAM.TV_SIGNED) == signed, op


# ------------------------------------------------------------------ kernel rows of the new families
def test_torchvision_rows_unchanged_and_interp_slot():
    p = Policy(ra_num_ops=2)
    s = p.sample(np.random.default_rng(0), 300, 100, 120)
    rows = A.encode(s, p).numpy()
    assert (rows[:, A.RESIZE_FILTER] == 0).all() and (rows[:, A.PAD_FILL:A.PAD_FILL + 3] == 0).all()
    assert (rows[:, A.OPS + A.OP_INTERP::A.OP_STRIDE][:, :2] == 0).all()
    b = Policy(ra_num_ops=2, ra_interpolation="bilinear")
    rows_b = A.encode(s, b).numpy()
    geo = np.isin(rows_b[:, [A.OPS, A.OPS + A.OP_STRIDE]], [1, 2, 3, 4, 5])
    assert (rows_b[:, [A.OPS + A.OP_INTERP, A.OPS + A.OP_STRIDE + A.OP_INTERP]] == np.where(geo, 1, 0)).all()
    assert (np.delete(rows_b, [A.OPS + A.OP_INTERP, A.OPS + A.OP_STRIDE + A.OP_INTERP], 1)
            == np.delete(rows, [A.OPS + A.OP_INTERP, A.OPS + A.OP_STRIDE + A.OP_INTERP], 1)).all()


def test_resize_filter_and_pad_fill_rows():
    r = Policy(interpolation="random")
    s = r.sample(np.random.default_rng(1), 200, 100, 100)
    assert (A.encode(s, r).numpy()[:, A.RESIZE_FILTER] == s["crop_filter"]).all()
    bic = Policy(interpolation="bicubic")
    assert (A.encode(bic.sample(np.random.default_rng(1), 5, 50, 50), bic).numpy()[:, A.RESIZE_FILTER] == 1).all()
    c = Policy.preset("paper_cifar", pad_fill=(9, 8, 7))
    s = c.sample(np.random.default_rng(2), 100, 32, 32)
    rows = A.encode(s, c, [(32, 32)] * 100).numpy()
    assert (rows[:, A.PAD_FILL:A.PAD_FILL + 3] == [9, 8, 7]).all() and rows[:, A.CROP_TOP].min() < 0


def test_timm_rows_follow_timms_formulas():
    p = Policy.from_timm(auto_augment="rand-m9-n4-mstd0.5-inc1", interpolation="random")
    names = p.ra_ops()
    cfg = p.ra_spec()

    def row(name, stored):
        return A.timm_op_row(p.ra_config, name, stored, 224, 224)

    k = FAM.KERNEL_ID
    assert row("PosterizeIncreasing", 900) == (k["Posterize"], 0x80, 0, 0, 0, 0, 0)  # keeps 4 - int(3.6) = 1 bit
    assert row("SolarizeIncreasing", 900)[:2] == (k["Solarize"], 256 - int(0.9 * 256))
    assert row("SolarizeAdd", 900)[:3] == (k["SolarizeAdd"], 128, int(0.9 * 110))
    assert row("Invert", 0) == (k["Invert"], 0, 0, 0, 0, 0, 0)
    assert row("BrightnessIncreasing", -900)[1] == A._brightness_factor(1 - 0.81)
    assert row("ContrastIncreasing", 900)[1] == round(1.81 * A.Q16)
    # TranslateXRel at level 9: PIL's (1, 0, 0.405 * 224, 0, 1, 0): the source is x + 90.72, so the
    # output's centre (X2 = 0) reads the source at pixel index 111.5 + 90.72
    a0, a1, t0, a3, a4, t1 = row("TranslateXRel", 900)[1:]
    assert (a0, a1, a3, a4) == (A.Q16, 0, 0, A.Q16) and t0 / 2 ** 17 == pytest.approx(111.5 + 0.405 * 224, abs=1e-4)
    assert t1 / 2 ** 17 == pytest.approx(111.5, abs=1e-4)
    assert cfg["translate_pct"] == 0.45 and "TranslateXRel" in names


@pytest.mark.parametrize("name,stored", [("Rotate", 900), ("Rotate", -433), ("ShearX", 700), ("ShearY", -1000),
                                         ("TranslateYRel", 250), ("TranslateXRel", -900)])
def test_timm_geometric_rows_are_pils_inverse_map(name, stored):
    """Our source position (pixel-index units) equals PIL's a (x + 0.5) + b (y + 0.5) + c - 0.5 (and for y)."""
    p = Policy.from_timm(auto_augment="rand-m9-mstd0.5-inc1", interpolation="bilinear")
    h, w = 48, 64
    cfg = p.ra_spec()
    _, coeffs = FAM.timm_op_args(name, stored, cfg, h, w)
    if name == "Rotate":  # PIL's own matrix for img.rotate(deg)
        deg = stored / 100 / 10 * 30  # the stored sign is timm's _randomly_negate
        assert coeffs == pytest.approx(FAM._pil_rotate(deg, h, w))
    _, a0, a1, t0, a3, a4, t1 = A.timm_op_row(p.ra_config, name, stored, h, w)
    a, b, c, d, e, f = coeffs
    for x, y in [(0, 0), (w - 1, 0), (10, 30), (w - 1, h - 1)]:
        x2, y2 = 2 * x + 1 - w, 2 * y + 1 - h
        assert (a0 * x2 + a1 * y2 + t0) / 2 ** 17 == pytest.approx(a * (x + .5) + b * (y + .5) + c - .5, abs=2e-3)
        assert (a3 * x2 + a4 * y2 + t1) / 2 ** 17 == pytest.approx(d * (x + .5) + e * (y + .5) + f - .5, abs=2e-3)


def test_timm_lut_ops_equal_pil_on_every_value():
    """Point ops (Invert, Posterize, Solarize, SolarizeAdd, Brightness) replayed equal timm's PIL op on all 256 values."""
    from PIL import Image

    from reinforced_data import _reference as R

    ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1, 1))  # [3, 1, 256]
    pil = Image.fromarray(np.ascontiguousarray(ramp.transpose(1, 2, 0)))
    p = Policy.from_timm(auto_augment="rand-m9-mstd0.5-inc1", interpolation="bilinear")
    cases = [("Invert", 0, lambda im: timm_aa.invert(im))]
    for stored in (0, 250, 500, 900, 1000):
        lv = stored / 100
        cases += [
            ("PosterizeIncreasing", stored, lambda im, lv=lv: timm_aa.posterize(im, 4 - int(lv / 10 * 4))),
            ("SolarizeIncreasing", stored, lambda im, lv=lv: timm_aa.solarize(im, 256 - min(256, int(lv / 10 * 256)))),
            ("SolarizeAdd", stored, lambda im, lv=lv: timm_aa.solarize_add(im, min(128, int(lv / 10 * 110)))),
            ("BrightnessIncreasing", stored, lambda im, lv=lv: timm_aa.brightness(im, max(0.1, 1 + lv / 10 * .9))),
            ("BrightnessIncreasing", -stored, lambda im, lv=lv: timm_aa.brightness(im, max(0.1, 1 - lv / 10 * .9))),
        ]
    for name, stored, theirs_fn in cases:
        op, *params = A.timm_op_row(p.ra_config, name, stored, 1, 256)
        ours = R.apply_op(torch.from_numpy(ramp).long(), op, params + [0], torch.zeros(3, dtype=torch.long))
        if name == "PosterizeIncreasing" and stored == 1000:
            # bits 0: Pillow >= 10 refuses ImageOps.posterize(img, 0) (timm then raises); older Pillow
            # masked every bit away. The replay keeps that meaning: black.
            with pytest.raises(ValueError):
                theirs_fn(pil)
            assert (ours == 0).all()
            continue
        theirs = np.asarray(theirs_fn(pil)).transpose(2, 0, 1)
        np.testing.assert_array_equal(ours.numpy(), theirs, err_msg=f"{name} {stored}")


def test_encode_refuses_bad_new_fields_naming_the_view():
    t = Policy.from_timm(interpolation="random", mixup_alpha=0, cutmix_alpha=0)
    s = t.sample(np.random.default_rng(0), 6, 64, 64)
    bad = s.copy()
    bad["ra_mag"][3, 0] = 1001 if bad["ra_op"][3, 0] else 0
    bad["ra_op"][3, 0] = t.ra_ops().index("Rotate")
    bad["ra_mag"][3, 0] = 1001
    with pytest.raises(ValueError, match=r"ra_mag.*view 3.*Rotate"):
        A.encode(bad, t)
    bad = s.copy()
    bad["ra_op"][2, 1] = t.ra_ops().index("ShearX")
    bad["ra_mag"][2, 1] = 5
    bad["ra_interp"][2, 1] = 0
    with pytest.raises(ValueError, match=r"ra_interp.*view 2"):
        A.encode(bad, t)
    bad = s.copy()
    bad["crop_filter"][4] = 2
    with pytest.raises(ValueError, match=r"crop_filter.*view 4"):
        A.encode(bad, t)
    bad = s.copy()
    bad["ra_op"][1, 0] = len(t.ra_ops())
    with pytest.raises(ValueError, match=r"op id .*view 1"):
        A.encode(bad, t)
    c = Policy.preset("paper_cifar")
    s = c.sample(np.random.default_rng(0), 4, 32, 32)
    s["crop"][2, 0] = -5
    with pytest.raises(ValueError, match=r"crop.*view 2.*crop_padding"):
        A.encode(s, c)
    s["crop"][2] = [4, 0, 32, 32]
    s["crop"][1] = [5, 0, 32, 32]
    with pytest.raises(ValueError, match=r"crop.*view 1.*padded by 4"):
        A.encode(s, c, [(32, 32)] * 4)
    m = Policy.preset("paper_imagenet_mix")
    s = m.sample(np.random.default_rng(0), 50, 64, 64)
    i = int(np.flatnonzero(s["mix_mode"] == 3)[0])
    s["mix_box"][i] = [200, 0, 30, 30]
    with pytest.raises(ValueError, match=rf"mix_box.*view {i}"):
        A.encode_mix(s, m)


# ------------------------------------------------------------------ sample -> encode -> replay on a photo
def _photo():
    data = pytest.importorskip("skimage.data")
    return torch.from_numpy(np.ascontiguousarray(data.astronaut()[::2, ::2])).permute(2, 0, 1)  # 256x256, channels-last


FAMILY_POLICIES = {
    **{name: Policy.preset(name, output_size=(48, 40)) for name in sorted(PRESETS)},
    "timm_default": Policy.from_timm(input_size=(48, 40)),
    "timm_bicubic": Policy.from_timm(input_size=(48, 40), interpolation="bicubic", auto_augment="rand-m9-n4-mstd0.5"),
    "timm_original": Policy.from_timm(input_size=(48, 40), auto_augment="originalr-mstd0.5", mixup_alpha=0.0),
    "timm_v0": Policy.from_timm(input_size=(48, 40), auto_augment="v0", mixup_alpha=0.0, cutmix_alpha=0.0),
    "ta_bilinear": Policy(output_size=(48, 40), ra_family="trivialaugment", ra_num_ops=1,
                          ra_interpolation="bilinear", interpolation="bicubic"),
    "cifar_fill": Policy.preset("paper_cifar_ra_re", output_size=(48, 40), crop_padding=12, pad_fill=(255, 0, 128)),
}


@pytest.mark.parametrize("name", sorted(FAMILY_POLICIES))
def test_sample_encode_replay_on_a_photo(name):
    from reinforced_data._replay import replay

    policy = FAMILY_POLICIES[name]
    img = _photo()
    h, w = img.shape[1:]
    if policy.crop_mode == "padded":
        img = img[:, :44, :36]  # smaller than the output: the crop reaches outside the image
        h, w = img.shape[1:]
    k = 6
    params = policy.sample(np.random.default_rng(3), k, h, w)
    kw = {}
    if policy.mixing:
        kw = dict(partners=[img.flip(2)] * k, partner_params=policy.sample(np.random.default_rng(4), k, h, w))
        kw["partner_params"]["mix_mode"] = 0
    out = replay([img] * k, params, policy, backend="reference", **kw)
    assert out.shape == (k, 3, *policy.output_size) and out.dtype == torch.uint8
    again = replay([img] * k, params, policy, backend="reference", **kw)
    assert torch.equal(out, again)
    assert len({bytes(v.numpy()) for v in out}) > 1  # views differ
    if policy.crop_mode == "padded":  # some pixels of some view come from outside the image
        fill = torch.tensor(policy.pad_fill, dtype=torch.uint8)[:, None, None]
        assert ((out == fill).all(dim=1)).any()
    from reinforced_data import _ops

    if _ops.compiled_available():  # the compiled kernels give the same bytes (kernel tests cover far more)
        assert torch.equal(replay([img] * k, params, policy, backend="compiled", **kw), out)


# ------------------------------------------------------------------ review findings: recipes refuse clearly
from reinforced_data.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("T", [T1, v2], ids=["v1", "v2"])
def test_from_torchvision_refuses_pipelines_it_cannot_replay(T):
    conv = [T.ToTensor()] if T is T1 else [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    norm = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    rrc = T.RandomResizedCrop(64)
    cases = [
        ([rrc, *conv, norm, T.Normalize((0.1, 0.1, 0.1), (0.5, 0.5, 0.5))], "only one Normalize"),
        ([rrc, norm], "Normalize on uint8"),
        ([rrc, *conv, T.RandAugment()], "RandAugment after the float"),
        ([rrc, *conv, norm, T.TrivialAugmentWide()], "TrivialAugmentWide after the float"),
        ([rrc, *conv, T.AutoAugment()], "AutoAugment after the float"),
        ([rrc, *conv, T.RandomApply([T.RandAugment()], p=0.5)], "RandAugment after the float"),
    ]
    if T is v2:
        cases.append(([rrc, T.ToImage(), T.ConvertImageDtype(torch.float32), T.RandAugment()], "RandAugment"))
    for transforms, fragment in cases:
        with pytest.raises(ConfigError, match=fragment):
            Policy.from_torchvision(T.Compose(transforms))


@pytest.mark.parametrize("T", [T1, v2], ids=["v1", "v2"])
def test_from_torchvision_mean_std_follow_the_pipelines_output(T):
    from reinforced_data._replay import replay

    conv = [T.ToTensor()] if T is T1 else [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    p = Policy.from_torchvision(T.Compose([T.RandomResizedCrop(32), *conv]))
    assert p.mean == (0.0, 0.0, 0.0) and p.std == (1.0, 1.0, 1.0)  # not ImageNet's: the pipeline gives v / 255
    img = _photo()
    params = p.sample(np.random.default_rng(0), 2, *img.shape[1:])
    u8 = replay([img] * 2, params, p, backend="reference")
    f = replay([img] * 2, params, p, backend="reference", out_dtype=torch.float32)
    assert torch.allclose(f, u8.float() / 255, atol=1e-6, rtol=0)
    # RandAugment before the conversion is fine; with a Normalize its mean / std are used
    q = Policy.from_torchvision(T.Compose([T.RandomResizedCrop(32), T.RandAugment(), *conv,
                                           T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))]))
    assert q.mean == (0.5, 0.4, 0.3) and q.ra_num_ops == 2
    # no conversion: uint8 output, Policy's defaults kept
    assert Policy.from_torchvision(T.Compose([T.RandomResizedCrop(32)])).mean == Policy().mean


def test_from_torchvision_argument_errors_are_config_errors():
    p = Policy.from_torchvision(v2.Compose([v2.RandomResizedCrop(32), v2.ToImage(),
                                            v2.RandomErasing(p=0.3, value="random")]))
    assert p.erase_value == "random" and p.erase_prob == 0.3
    assert Policy.from_torchvision(T1.Compose([T1.RandomResizedCrop(32), T1.ToTensor(),
                                               T1.RandomErasing(value="random")])).erase_value == "random"
    single = Policy.from_torchvision(v2.RandomResizedCrop(48))
    assert single.output_size == (48, 48)
    assert Policy.from_torchvision(T1.RandomCrop(32, padding=4)).crop_mode == "padded"
    for bad, fragment in [(None, "transforms=None"), (3, "transforms=3"), ("rrc", "not a torchvision")]:
        with pytest.raises(ConfigError, match=fragment):
            Policy.from_torchvision(bad)
    with pytest.raises(ConfigError, match="foo"):
        Policy.from_torchvision(v2.Compose([v2.RandomResizedCrop(32)]), foo=2)
    assert Policy.from_torchvision(v2.RandomResizedCrop(32), mixup_alpha=0.2).mixup_alpha == 0.2


@pytest.mark.parametrize("bins", [2, 5, 31])
def test_trivialaugment_with_few_bins_replays(bins):
    from reinforced_data._replay import replay

    p = Policy.from_torchvision(v2.Compose([v2.RandomResizedCrop((48, 40)),
                                            v2.TrivialAugmentWide(num_magnitude_bins=bins)]))
    assert p.ra_family == "trivialaugment" and p.ra_num_magnitude_bins == bins
    assert Policy.from_json(p.to_json()) == p
    img = _photo()
    params = p.sample(np.random.default_rng(1), 4, *img.shape[1:])
    out = replay([img] * 4, params, p, backend="reference")
    assert out.shape == (4, 3, 48, 40) and out.dtype == torch.uint8
    with pytest.raises(ConfigError, match="ra_magnitude"):  # RandAugment's fixed magnitude is still checked
        Policy(ra_num_magnitude_bins=5, ra_magnitude=9)


@pytest.mark.parametrize("kwargs,argument", [
    (dict(mixup_alpha=-1), "mixup_alpha"), (dict(mixup_alpha=float("nan")), "mixup_alpha"),
    (dict(cutmix_alpha=float("inf")), "cutmix_alpha"), (dict(mix_prob=5), "mix_prob"),
    (dict(switch_prob=-3), "switch_prob"), (dict(re_prob=-1), "re_prob"), (dict(re_prob=float("nan")), "re_prob"),
    (dict(ra_prob=7, auto_augment=None, color_jitter=0), "ra_prob"), (dict(hflip=2), "hflip"),
    (dict(vflip=float("nan")), "vflip"), (dict(mean=(0.5,)), "mean"), (dict(std=(0.5, 0.5)), "std"),
    (dict(std=(0.5, 0.0, 0.5)), "std"), (dict(mean=(0.5, float("nan"), 0.5)), "mean"), (dict(mean=None), "mean"),
    (dict(label_smoothing=0.1), "label_smoothing"), (dict(num_classes=0), "num_classes"),
    (dict(foo=2), "foo"), (dict(prob=0.5), "prob"),
])
def test_from_timm_validates_every_argument_up_front(kwargs, argument):
    with pytest.raises(ConfigError, match=argument):
        Policy.from_timm(**kwargs)


def test_from_timm_accepts_mixups_loss_arguments_that_do_not_change_views():
    p = Policy.from_timm(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=1000, label_smoothing=0.0)
    assert p == Policy.from_timm(mixup_alpha=0.8, cutmix_alpha=1.0)
    from reinforced_data.recipes import timm_fields

    assert "rand-m9-mstd0.5-inc1" in timm_fields.__doc__ and "timm_train_default" in timm_fields.__doc__
