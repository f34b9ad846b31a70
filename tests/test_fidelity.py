"""Closeness of the replay to torchvision and timm (PIL) applying the same parameters, on photos.

Crops (96 x 128 and 160 x 160, at the photos' own scale, so edges are sharp) of two photo sets kept
apart: the tuning photos (F.TUNING: scikit-image's astronaut, chelsea, coffee, rocket, on which these
bounds were first tuned) and held-out photos of other kinds (F.HELD_OUT: grey photos, text, dark and
low-light photos, saturated hues, noisy gradients; every other one JPEG-encoded at quality 90 and cut
into channels-last views, as a loader decodes it). Every op, every magnitude bin (both signs) of
torchvision's RandAugment and a sweep of timm's levels, the interpolations each library offers,
the resized crop and whole sampled views. The harness is benchmarks/_fidelity.py (whose report,
benchmarks/fidelity.py, measures the same tables on many more photos for docs/replay.md).

Every bound below is the larger of what this file's crops of both sets measured and the worst case of
the same figure (over all photo sets, or the worst set) in benchmarks/results/fidelity.md and
fidelity_jitter.md (torch 2.14, torchvision 0.29, timm 1.0.31, Pillow 13; bounds tuned on the tuning
photos alone would fail 25 of these tests on both sets, by the measured figures), plus a stated margin: shares of differing values x 1.25 (rounded up), largest
differences exact where they are 0 or 1 (a change there is a change of semantics), +25 % for
the larger ones. Where we differ because the library is the inexact one, that is asserted
directly (AutoContrast's maximum, torchvision's bilinear border), and so is the cause where the
library does something else by design (PIL's rounded grey, PIL's geometric sampling).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

pytest.importorskip("skimage")
pytest.importorskip("timm")
import _fidelity as F  # noqa: E402

pytestmark = pytest.mark.slow

MARGIN = 1.25


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small per-image ops: one intra-op thread (on a busy 2-core machine, two spin-waiting threads
    made this file 40x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def photos():
    """The tuning photos (F.TUNING: scikit-image's astronaut, chelsea, coffee, rocket)."""
    return F.skimage_photos()


@pytest.fixture(scope="module")
def held_out():
    """Photos of other kinds, kept apart from the tuning photos (F.HELD_OUT: grey photos, text, dark and
    low-light photos, saturated hues, noisy gradients; every other one JPEG q90, as channels-last views)."""
    return F.held_out_photos()


@pytest.fixture(scope="module")
def crops(photos, held_out):
    """96 x 128 and 160 x 160 crops at the photos' own scale (edges sharp): the tuning photos' first."""
    return (F.photo_crops(photos, [(96, 128), (160, 160)], 1, seed=1)
            + F.photo_crops(held_out, [(96, 128), (160, 160)], 1, seed=1))


@pytest.fixture(scope="module")
def sources(photos, held_out):
    """300 x 400 crops of every photo, the sources of the resized crop and of whole views."""
    return F.photo_crops(photos, [(300, 400)], 1, seed=2) + F.photo_crops(held_out, [(300, 400)], 1, seed=2)


def test_photo_sets_are_kept_apart(photos, held_out, crops):
    """The held-out photos share no photo with the tuning set, and the crops hold both layouts a loader gives."""
    assert set(photos) == set(F.TUNING)
    assert {n.split("@")[0] for n in held_out} == set(F.HELD_OUT)
    assert not set(F.HELD_OUT) & set(F.TUNING)
    assert any(not c.tensor.is_contiguous() for c in crops) and any(c.tensor.is_contiguous() for c in crops)


# ------------------------------------------------------------------ torchvision, RandAugment ops
# (library op, interpolation) -> (max |diff|, max share of differing values in any bin, fewest identical bins)
# over all 31 bins, both signs (61 signed bins; 31 for Posterize / Solarize, 1 for the others)
TV_NEAREST = {
    "Identity": (0, 0.0, 1), "TranslateX": (0, 0.0, 61), "TranslateY": (0, 0.0, 61),
    "Posterize": (0, 0.0, 31), "Solarize": (0, 0.0, 31), "Equalize": (0, 0.0, 1),
    # whole rows that sample exactly half-way between two pixels at shear 0.04, 0.12, 0.20, 0.28
    # (bins +-4, 12, 20, 28): torchvision's float32 grid breaks the tie the other way
    "ShearX": (255, 0.0678 * MARGIN, 53), "ShearY": (255, 0.0684 * MARGIN, 53),
    # nearest-neighbour ties decided by float32 rounding: few values, but a neighbour's (or the fill's)
    "Rotate": (255, 0.00079 * MARGIN, 5),
    "Brightness": (1, 0.0170 * MARGIN, 58),
    "Color": (1, 0.0994 * MARGIN, 1),
    "Contrast": (1, 0.00147 * MARGIN, 15),
    "Sharpness": (1, 0.0228 * MARGIN, 27),
    "AutoContrast": (1, 0.0170 * MARGIN, 0),
}
TV_BILINEAR_BINS = (4, 9, 20, 30)
# measured at TV_BILINEAR_BINS, both signs: (max |diff|, max share in any bin, max share >= 2 apart in any bin)
TV_BILINEAR = {
    "TranslateX": (0, 0.0, 0.0), "TranslateY": (0, 0.0, 0.0),
    "ShearX": (64, 0.0651 * MARGIN, 0.0061 * MARGIN), "ShearY": (64, 0.0647 * MARGIN, 0.0069 * MARGIN),
    "Rotate": (64, 0.0160 * MARGIN, 0.0120 * MARGIN),
}
# the same bins with torchvision's default fill=None (RandAugment() without a fill: zero padding, no fill
# mixed in) against ours with fill 0: (max |diff|, max share in any bin). The 64s above need an explicit fill.
TV_BILINEAR_NO_FILL = {
    "TranslateX": (0, 0.0), "TranslateY": (0, 0.0),
    "ShearX": (1, 0.0592 * MARGIN), "ShearY": (1, 0.0581 * MARGIN), "Rotate": (1, 0.00488 * MARGIN),
}


@pytest.fixture(scope="module")
def tv_nearest(crops):
    return F.group(F.measure_tv_ops(crops, exact=True))


@pytest.mark.parametrize("op", sorted(TV_NEAREST))
def test_randaugment_op_close_to_torchvision_on_photos(tv_nearest, op):
    interp = "nearest" if op in F.A.GEOMETRIC else "-"
    s = F.summary(tv_nearest[("torchvision", op, interp)])
    max_abs, max_share, min_identical = TV_NEAREST[op]
    assert s["max_abs"] <= max_abs, (op, s)
    assert s["worst_frac"] <= max_share, (op, s)
    assert s["identical"] >= min_identical, (op, s)


def test_invert_identical_to_torchvision(tv_nearest):
    assert F.summary(tv_nearest[("torchvision", "Invert", "-")])["max_abs"] == 0


def test_autocontrast_we_are_exact_torchvision_is_not(crops, tv_nearest):
    """torchvision scales by a float32 1/((hi - lo)/255) and floors: some channel maxima land on 254.
    Ours is floor((x - lo) * 255 / (hi - lo)) in integers: lo -> 0 and hi -> 255 always."""
    tv_254 = 0
    for c in crops:
        ours = F.ours_tv_op(c.tensor, "AutoContrast", 0)
        theirs = F.tv_op(c.tensor, "AutoContrast", 0)
        x = c.tensor.flatten(1)
        stretched = x.amax(1) > x.amin(1)
        assert (ours.flatten(1).amax(1)[stretched] == 255).all() and (ours.flatten(1).amin(1)[stretched] == 0).all()
        tv_254 += int((theirs.flatten(1).amax(1)[stretched] == 254).sum())
    assert tv_254 >= 1, "torchvision's AutoContrast maps no channel maximum to 254 any more"
    s = F.summary(tv_nearest[("torchvision", "AutoContrast", "-")])
    assert s["differ"] > 0 and s["ours_exact"] == s["differ"] and s["lib_exact"] == 0, s


def test_autocontrast_pil_inexact_where_we_differ(crops):
    """PIL's AutoContrast (timm's) builds its LUT as int(x * scale + offset) in float64: where it
    differs from ours, ours is the exact floor((x - lo) * 255 / (hi - lo)) and PIL's is not."""
    differ = 0
    for c in crops:
        exact = F.exact_tv_op(c.tensor, "AutoContrast", 0)
        ours = F.ours_tv_op(c.tensor, "AutoContrast", 0)
        pil = F.to_tensor(F.timm_op(c.pil, "AutoContrast", None))
        m = ours != pil
        differ += int(m.sum())
        assert torch.equal(ours, exact)
        assert not (pil[m] == exact[m]).any()
    assert differ > 0


def test_blend_ops_which_side_is_exact(tv_nearest):
    """Where Brightness / Color / Contrast / Sharpness differ by 1, either side may be the one that equals
    the exact formula (float32 products there, Q16 factors here). Contrast: torchvision's float mean is
    exact where ours (the mean grey rounded to Q16) is not; the others: each side is right in part."""
    c = F.summary(tv_nearest[("torchvision", "Contrast", "-")])
    assert c["differ"] > 0 and c["lib_exact"] == c["differ"] and c["ours_exact"] == 0, c
    for op in ("Brightness", "Color", "Sharpness"):
        s = F.summary(tv_nearest[("torchvision", op, "-")])
        assert s["ours_exact"] + s["lib_exact"] == s["differ"], (op, s)  # a 1-apart pair: one of them is exact
        assert s["ours_exact"] > 0 and s["lib_exact"] > 0, (op, s)


@pytest.fixture(scope="module")
def tv_bilinear(crops):
    return F.group(F.measure_tv_ops(crops, ops=list(F.A.GEOMETRIC), bins=TV_BILINEAR_BINS, interps=("bilinear",)))


@pytest.mark.parametrize("op", sorted(TV_BILINEAR))
def test_bilinear_geometric_close_to_torchvision(tv_bilinear, op):
    cases = tv_bilinear[("torchvision", op, "bilinear")]
    max_abs, max_share, max_share2 = TV_BILINEAR[op]
    assert max(st.max_abs for st in cases.values()) <= max_abs, op
    assert max(st.frac for st in cases.values()) <= max_share, op
    assert max(st.differ2 / st.values for st in cases.values()) <= max_share2, op


@pytest.fixture(scope="module")
def tv_bilinear_no_fill(crops):
    return F.group(F.measure_tv_ops(crops, ops=list(F.A.GEOMETRIC), bins=TV_BILINEAR_BINS, interps=("bilinear",),
                                    fill=None))


@pytest.mark.parametrize("op", sorted(TV_BILINEAR_NO_FILL))
def test_bilinear_geometric_with_torchvision_default_fill(tv_bilinear_no_fill, op):
    """Without a fill torchvision's grid_sample pads with zeros and mixes nothing in: ours with fill 0 is
    then the same interpolation, within 1 everywhere (the border band included)."""
    cases = tv_bilinear_no_fill[("torchvision", op, "bilinear")]
    max_abs, max_share = TV_BILINEAR_NO_FILL[op]
    assert max(st.max_abs for st in cases.values()) <= max_abs, op
    assert max(st.frac for st in cases.values()) <= max_share, op


@pytest.mark.parametrize("op,signed_bin", [("Rotate", 9), ("ShearX", 20), ("Rotate", -20)])
def test_bilinear_border_torchvision_applies_the_coverage_twice(crops, op, signed_bin):
    """At an output pixel whose taps are partly outside the image (coverage m < 1), torchvision's
    grid_sample gives blend = sum of the inside taps' weighted values, then mixes in the fill as
    m * blend + (1 - m) * fill: the inside is weighted by m twice. Ours is the bilinear interpolation
    of the image padded with the fill: blend + (1 - m) * fill. Inside (m = 1), they differ by at most 1."""
    fill = (124, 116, 104)
    parted = 0  # the largest difference on the border band, over all crops (a dark crop parts by little)
    for c in crops:
        ours = F.ours_tv_op(c.tensor, op, signed_bin, "bilinear", fill)
        theirs = F.tv_op(c.tensor, op, signed_bin, "bilinear", fill)
        white = torch.full_like(c.tensor, 255)
        cov = F.ours_tv_op(white, op, signed_bin, "bilinear", (0, 0, 0))[0].double() / 255
        blend = F.ours_tv_op(c.tensor, op, signed_bin, "bilinear", (0, 0, 0)).double()
        f = torch.tensor(fill, dtype=torch.float64)[:, None, None]
        # ours: blend + (1 - m) fill (to within the rounding of two separately rounded images)
        assert (ours.double() - (blend + (1 - cov) * f)).abs().max() <= 2
        # torchvision: m * blend + (1 - m) * fill
        assert (theirs.double() - torch.round(cov * blend + (1 - cov) * f)).abs().max() <= 1
        d = (ours.long() - theirs.long()).abs()
        assert d[:, cov == 1].max() <= 1
        parted = max(parted, int(d[:, (cov > 0) & (cov < 1)].max()))
    assert parted >= 16  # the border band is where they part: by (1 - m) * blend


# ------------------------------------------------------------------ timm (PIL) ops
TIMM_LEVELS_TESTED = (1, 3, 5, 7, 9, 10)
# (op, interp) -> (max |diff|, max share of differing values at any level)
TIMM = {
    ("Brightness", "-"): (0, 0.0), ("Posterize", "-"): (0, 0.0), ("Solarize", "-"): (0, 0.0),
    ("Equalize", "-"): (0, 0.0),
    # PIL's grey is rounded ((19595 r + 38470 g + 7471 b + 2^15) >> 16) and Contrast blends with its
    # rounded integer mean; ours follow torchvision (floored grey, fractional mean). On flat, low-contrast
    # photos (moon, low light) the mean's rounding and the blend's add up to 2.
    ("Color", "-"): (1, 0.666 * MARGIN), ("Contrast", "-"): (2, 0.628 * MARGIN),
    ("Sharpness", "-"): (1, 0.00677 * MARGIN),
    ("AutoContrast", "-"): (1, 0.00423 * MARGIN),
}
TIMM_NEW = {("Invert", "-"): (0, 0.0), ("SolarizeAdd", "-"): (0, 0.0)}
# Geometric, measured at levels 1, 5, 9 (both signs) on the 160 x 160 crops: (max |diff|, max share of
# differing values at any level, max share >= 2 apart at any level). PIL samples differently from the
# kernels (see test_pil_geometric_sampling_model): it truncates (about a third of values 1 lower), uses
# Keys a = -1 for bicubic, and has another border rule (the large differences, on the border band)
_TG = {
    ("ShearX", "bilinear"): (75, 0.3694, 0.0055), ("ShearX", "bicubic"): (75, 0.5056, 0.1005),
    ("ShearY", "bilinear"): (75, 0.3715, 0.0055), ("ShearY", "bicubic"): (75, 0.5062, 0.0995),
    ("TranslateX", "bilinear"): (73, 0.3512, 0.0058), ("TranslateX", "bicubic"): (74, 0.4978, 0.1057),
    ("TranslateY", "bilinear"): (73, 0.3537, 0.0058), ("TranslateY", "bicubic"): (72, 0.4989, 0.1078),
    ("Rotate", "bilinear"): (75, 0.4301, 0.0105), ("Rotate", "bicubic"): (83, 0.5621, 0.1648),
}
TIMM_GEOMETRIC = {k: (int(a * MARGIN), f * MARGIN, f2 * MARGIN) for k, (a, f, f2) in _TG.items()}


@pytest.fixture(scope="module")
def timm_stats(crops):
    ops = [op for op, _ in TIMM] + [op for op, _ in TIMM_NEW]
    stats = F.measure_timm_ops(crops, ops=ops, levels=TIMM_LEVELS_TESTED)
    F.measure_timm_ops(crops[1::2], ops=list(F.TIMM_GEOMETRIC), levels=(1, 5, 9), stats=stats)
    return F.group(stats)


@pytest.mark.parametrize("op,interp", sorted(TIMM) + sorted(TIMM_NEW) + sorted(TIMM_GEOMETRIC))
def test_timm_op_close_on_photos(timm_stats, op, interp):
    bound = {**TIMM, **TIMM_NEW, **TIMM_GEOMETRIC}[(op, interp)]
    cases = timm_stats[("timm", op, interp)]
    assert max(st.max_abs for st in cases.values()) <= bound[0], (op, interp)
    assert max(st.frac for st in cases.values()) <= bound[1], (op, interp)
    if len(bound) > 2:
        assert max(st.differ2 / st.values for st in cases.values()) <= bound[2], (op, interp)


def test_pil_grey_is_rounded(crops):
    """Why Color and Contrast differ from timm's by 1 on many values: PIL's grey rounds, torchvision's floors."""
    for c in crops[:2]:
        pil_l = torch.from_numpy(np.asarray(c.pil.convert("L")).copy()).long()
        r, g, b = c.tensor.long()
        assert torch.equal(pil_l, (19595 * r + 38470 * g + 7471 * b + (1 << 15)) >> 16)
        assert not torch.equal(pil_l, F._reference._gray(c.tensor.long()))


@pytest.mark.parametrize("op,arg", [("ShearX", 0.09), ("TranslateY", -0.135), ("Rotate", 9.0), ("Rotate", -27.0)])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_pil_geometric_sampling_model(crops, op, arg, interp):
    """timm's geometric ops (PIL's Image.transform / rotate) sample with Keys a = -1 for bicubic (not the
    -0.5 of PIL's resize), truncate instead of rounding, clamp taps to the edge and fill only where the
    sample point itself is outside: fidelity.pil_transform_model reproduces Pillow to +-1 on < 3 % (measured: up to 1.6 %)."""
    c = crops[1]
    h, w = c.tensor.shape[1:]
    m = F.timm_geometric_matrix(op, arg, h, w)
    model = F.pil_transform_model(c.tensor, m, interp, F.TIMM_FILL)
    pil = F.to_tensor(F.timm_op(c.pil, op, arg, interp))
    d = (model.long() - pil.long()).abs()
    assert d.max() <= 1 and float((d > 0).double().mean()) < 0.03
    if interp == "bicubic":  # and a = -0.5 would not be PIL's
        d5 = (F.pil_transform_model(c.tensor, m, interp, F.TIMM_FILL, a=-0.5).long() - pil.long()).abs()
        assert d5.max() >= 8


# ------------------------------------------------------------------ resized crop
# (library, filter, scaling) -> (max |diff|, share of all values, worst single crop)
RESIZE = {
    ("torchvision", "bilinear", "up"): (0, 0.0, 0.0),
    ("torchvision", "bilinear", "down"): (1, 0.00454 * MARGIN, 0.0341 * MARGIN),
    ("torchvision", "bilinear", "mixed"): (1, 0.00395 * MARGIN, 0.0161 * MARGIN),
    ("timm", "bilinear", "up"): (1, 0.00341 * MARGIN, 0.0253 * MARGIN),  # identical on these crops' boxes
    ("timm", "bilinear", "down"): (1, 0.0191 * MARGIN, 0.213 * MARGIN),
    ("timm", "bilinear", "mixed"): (1, 0.0290 * MARGIN, 0.167 * MARGIN),
}
# bicubic (Keys a = -0.5, antialiased): torchvision's antialias=True and PIL's resize use the same kernel
RESIZE_BICUBIC = {
    ("torchvision", "bicubic", "up"): (2, 0.00116 * MARGIN, 0.00268 * MARGIN),
    ("torchvision", "bicubic", "down"): (2, 0.00915 * MARGIN, 0.0260 * MARGIN),
    ("torchvision", "bicubic", "mixed"): (2, 0.00371 * MARGIN, 0.0108 * MARGIN),
    ("timm", "bicubic", "up"): (2, 0.00369 * MARGIN, 0.00706 * MARGIN),
    ("timm", "bicubic", "down"): (7, 0.0251 * MARGIN, 0.239 * MARGIN),
    ("timm", "bicubic", "mixed"): (5, 0.0367 * MARGIN, 0.188 * MARGIN),
}


@pytest.fixture(scope="module")
def resize_stats(sources):
    cases = F.resize_cases(sources, 6, [(160, 160), (64, 64)], seed=0)
    return F.measure_resize(cases, filters=("bilinear", "bicubic"))


@pytest.mark.parametrize("key", sorted(RESIZE) + sorted(RESIZE_BICUBIC), ids=str)
def test_resized_crop_close_on_photos(resize_stats, key):
    lib, filt, kind = key
    st = resize_stats[(lib, "resized crop", filt, kind)]
    max_abs, share, worst = {**RESIZE, **RESIZE_BICUBIC}[key]
    assert st.max_abs <= max_abs and st.frac <= share and st.worst_frac <= worst, (key, st)


@pytest.mark.parametrize("filt,same_order,other_order", [("bilinear", 0.172, 0.0020), ("bicubic", 0.195, 0.0053)])
def test_pil_resize_runs_the_vertical_pass_first_on_some_boxes(photos, filt, same_order, other_order):
    """Why one PIL crop differs from ours on a fifth of its values: for this box Pillow's result is our
    filter with the vertical pass first (ours and torchvision run the horizontal pass first)."""
    c = [x for x in F.photo_crops(photos, [(300, 400)], 1, seed=2) if x.name.startswith("coffee")][0]
    t, l, h, w = box = (53, 92, 239, 195)
    pil = F.pil_resized_crop(c.pil, box, (160, 160), filt)
    ours = F.ours_resized_crop(c.tensor, box, (160, 160), filt)
    vertical_first = F._reference.resized_crop(c.tensor.transpose(1, 2).contiguous(), l, t, w, h, 160, 160, False,
                                               F.RESIZE_FILTERS[filt]).transpose(1, 2).to(torch.uint8)
    assert float((ours != pil).double().mean()) >= same_order / MARGIN
    assert float((vertical_first != pil).double().mean()) <= other_order * MARGIN


# ------------------------------------------------------------------ whole views
# A view's share of differing values has a long tail on the held-out photos (a +-1 before AutoContrast,
# Solarize or Equalize on a flat or dark photo changes most of the view), so the tests bound its median
# and 90th percentile over the views rather than its largest value.
def median_p90(st: F.ChainStat) -> tuple[float, float]:
    return float(np.median(st.frac)), float(np.quantile(st.frac, 0.9))


def test_rrc_ra_re_views_close_to_torchvision(sources):
    """Whole rrc_ra_re views (RRC, flip, two RandAugment ops at bin 9, erasing) against torchvision
    applying the same records: most views differ somewhere by a little; Solarize / Equalize /
    Posterize after a +-1 resize difference, and shear ties, make a few differ by 32 or more."""
    st = F.chain_policy_rrc_ra_re(sources, 6, seed=0, output_size=(112, 112))
    assert len(st.max_abs) == 6 * len(sources)
    assert st.share(2) <= 0.530 * MARGIN
    assert st.share(32) <= 0.125 * MARGIN
    median, p90 = median_p90(st)
    assert median <= 0.00339 * MARGIN and p90 <= 0.0146 * MARGIN, (median, p90)


def test_timm_recipe_views_close_to_pil(sources):
    """Whole views of timm's recipe (rand-m9-mstd0.5-inc1, random bilinear/bicubic crop and op
    interpolation, erasing 0.25): ours against PIL applying the very rows ours replays (timm's functions
    on the row's numbers). The geometric sampling differences (PIL truncates, bicubic a = -1, border rule)
    reach most views; Solarize / Equalize / Posterize turn some into differences of 32 or more."""
    st = F.chain_policy_pil(F.timm_policy((112, 112)), sources, 6, seed=0)
    assert len(st.max_abs) == 6 * len(sources)
    assert st.share(2) <= 0.589 * MARGIN
    assert st.share(32) <= 0.344 * MARGIN
    median, p90 = median_p90(st)
    assert median <= 0.0114 * MARGIN and p90 <= 0.486 * MARGIN, (median, p90)


@pytest.mark.parametrize("preset,share2,share32,median,p90", [("trivialaugment", 0.346, 0.0938, 0.00307, 0.00898),
                                                              ("autoaugment", 0.648, 0.118, 0.00403, 0.0370)])
def test_torchvision_family_views_close_to_torchvision(sources, preset, share2, share32, median, p90):
    """Whole views of TrivialAugmentWide and AutoAugment(IMAGENET) against torchvision's own op
    function at the stored bin's magnitude of that family's table (same crop and flip): the
    resize's +-1 differences, amplified by Equalize / Solarize / Posterize, and nearest-neighbour
    ties of large rotations (TrivialAugment reaches 135 degrees) are what differ."""
    st = F.chain_policy_torchvision_family(preset, sources, 6, seed=0)
    assert len(st.max_abs) == 6 * len(sources)
    assert st.share(2) <= share2 * MARGIN
    assert st.share(32) <= share32 * MARGIN
    m, q = median_p90(st)
    assert m <= median * MARGIN and q <= p90 * MARGIN, (m, q)


# ------------------------------------------------------------------ ColorJitter
# (library, adjustment) -> (max |diff|, max share of differing values at any swept value, max share >= 2 apart),
# over fidelity.JITTER_SWEEP on the crops (ours: the Q16 factor / 1/65536-turn shift the record stores)
JITTER = {
    ("torchvision", "brightness"): (0, 0.0, 0.0),
    # identical on these crops; +-1 on 0.00053 % at one value over the report's wider set (a held-out photo)
    ("torchvision", "contrast"): (1, 0.0000053 * MARGIN, 0.0),
    # float32 blend with the floored grey: +-1 where the exact value is within rounding of an integer
    ("torchvision", "saturation"): (1, 0.000666 * MARGIN, 0.0),
    # float32 HSV round trip against ours, exact: +-1 where float32 rounding crosses an integer
    ("torchvision", "hue"): (1, 0.0000054 * MARGIN, 0.0),
    ("timm", "brightness"): (0, 0.0, 0.0),
    # PIL's Contrast blends with the rounded integer mean, its Color with the rounded grey
    ("timm", "contrast"): (1, 0.259 * MARGIN, 0.0), ("timm", "saturation"): (1, 0.690 * MARGIN, 0.0),
    # PIL's hue: 8-bit H, S and V (hue shifted by int(255 * factor) / 255 of a turn)
    ("timm", "hue"): (21, 0.243 * MARGIN, 0.139 * MARGIN),
}


@pytest.fixture(scope="module")
def jitter_stats(crops):
    return F.measure_jitter_ops(crops)


@pytest.mark.parametrize("lib,name", sorted(JITTER))
def test_colour_jitter_adjustment_close_on_photos(jitter_stats, lib, name):
    max_abs, share, share2 = JITTER[(lib, name)]
    cases = {k[3]: v for k, v in jitter_stats.items() if k[0] == lib and k[1] == name}
    assert len(cases) == len(F.JITTER_SWEEP[name])
    assert max(v.max_abs for v in cases.values()) <= max_abs
    assert max(v.differ / v.values for v in cases.values()) <= share
    assert max(v.differ2 / v.values for v in cases.values()) <= share2


@pytest.mark.parametrize("which,lib,max_abs,median", [("torchvision", "torchvision", 6, 0.00351),
                                                      ("torchvision", "pil", 24, 0.386),
                                                      ("timm", "pil", 6, 0.217), ("timm", "torchvision", 5, 0.00442)])
def test_colour_jitter_views_close(sources, which, lib, max_abs, median):
    """Whole views of ColorJitter(0.4, 0.4, 0.4, 0.1) ("torchvision") and of timm train.py's defaults
    ("timm": ColorJitter(0.4, 0.4, 0.4), random bilinear/bicubic crop) against torchvision v2 on tensors and
    against v1 on PIL images (timm's path) with the same record: the resize's +-1 differences scaled by the
    factors, PIL's rounded grey and mean, and (with hue) PIL's 8-bit HSV."""
    policy = F.jitter_policies((112, 112))[0 if which == "torchvision" else 1]
    st = F.chain_policy_jitter(policy, sources, 6, seed=0, lib=lib)
    assert len(st.max_abs) == 6 * len(sources)
    assert max(st.max_abs) <= round(max_abs * MARGIN)
    assert float(np.median(st.frac)) <= median * MARGIN
