"""Each family's sampler against the library's own sampler.

The library's draws come from the library's own code, seeded (torchvision's transforms with
their op application recorded instead of performed, ``get_params``; timm's ``AugmentOp`` /
``RandAugment`` / ``AutoAugment`` with the op functions replaced by recorders, ``Mixup``'s
``_params_per_elem`` and ``cutmix_bbox_and_lam``). Our draws are quantised as they are stored;
the library's are mapped onto the same grid (a timm level to hundredths, a λ to 1/255) and the
two samples are compared: categorical rates with a chi-square test and a bound on the largest
rate difference, continuous values with the two-sample KS statistic against its critical value.

``measure_*`` functions return the statistics; ``python tests/test_samplers.py`` prints them.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from reinforced_data import _families as FAM
from reinforced_data.policy import Policy

scipy_stats = pytest.importorskip("scipy.stats")
torch = pytest.importorskip("torch")
v2 = pytest.importorskip("torchvision.transforms.v2")
timm_aa = pytest.importorskip("timm.data.auto_augment")
timm_mixup = pytest.importorskip("timm.data.mixup")

N_TV = 30000  # the library's draws: torchvision transforms cost ~50 us a call, timm's ~10 us
N = 40000
N_OURS = 200000  # ours are vectorised: a larger sample leaves the difference to the library's noise
P_MIN = 1e-3  # chi-square / KS p-values below this fail
RATE_TOL = 0.01  # the largest difference of a rate (op share, application rate, sign share)


# ------------------------------------------------------------------ statistics
def chi2_p(a: Counter, b: Counter) -> float:
    """p-value of the chi-square test that two samples of categories share one distribution."""
    keys = sorted(set(a) | set(b), key=repr)
    table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]], dtype=np.float64)
    if table.shape[1] < 2:
        return 1.0
    return float(scipy_stats.chi2_contingency(table)[1])


def max_rate_diff(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return max(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def ks(a, b) -> tuple[float, float, float]:
    """(statistic, p-value, critical value at P_MIN) of the two-sample KS test."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    r = scipy_stats.ks_2samp(a, b)
    n, m = len(a), len(b)
    crit = math.sqrt(-0.5 * math.log(P_MIN / 2)) * math.sqrt((n + m) / (n * m))
    return float(r.statistic), float(r.pvalue), crit


def _tv_values(family: str, names: tuple, nb: int, h: int, w: int) -> dict:
    """{(op id, stored signed bin): the magnitude torchvision passes to its op} (0.0 for ops without one)."""
    out = {}
    for i, name in enumerate(names):
        table = FAM.torchvision_magnitudes(family, name, nb, h, w)
        for b in range(-(nb - 1), nb):
            out[(i, b)] = 0.0 if table is None else float(table[abs(b)]) * (-1.0 if b < 0 else 1.0)
    return out


def _record_tv(t) -> list:
    rec: list = []

    def apply(image, transform_id, magnitude, interpolation, fill):
        rec.append((transform_id, float(magnitude)))
        return image

    t._apply_image_or_video_transform = apply
    return rec


# ------------------------------------------------------------------ torchvision families
def measure_torchvision(family: str, n: int = N_TV, n_ours: int = N_OURS) -> dict:
    h = w = 16
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    torch.manual_seed(0)
    if family == "torchvision":
        t, policy, nb = v2.RandAugment(num_ops=2, magnitude=9), Policy(ra_num_ops=2, ra_magnitude=9), 31
    elif family == "trivialaugment":
        t, policy, nb = v2.TrivialAugmentWide(), Policy.preset("trivialaugment"), 31
    else:
        t, policy, nb = v2.AutoAugment(), Policy.preset("autoaugment"), FAM.AUTOAUGMENT_BINS
    rec = _record_tv(t)
    theirs_views = []
    for _ in range(n):
        start = len(rec)
        t(img)
        theirs_views.append(rec[start:])
    s = policy.sample(np.random.default_rng(1), n_ours, h, w)
    names = policy.ra_ops()
    ours_views = []
    tv_family = "trivialaugment" if family == "trivialaugment" else "torchvision"
    values = _tv_values(tv_family, names, nb, h, w)
    for ops, mags in zip(s["ra_op"].tolist(), s["ra_mag"].tolist()):
        view = [(names[o], values[(o, m)]) for o, m in zip(ops, mags)]
        if family == "autoaugment":  # torchvision calls nothing for an op it does not apply
            view = [v for v in view if v[0] != "Identity"]
        ours_views.append(view)
    ours_ops = Counter(o for v in ours_views for o, _ in v)
    theirs_ops = Counter(o for v in theirs_views for o, _ in v)
    ours_joint = Counter((o, round(m, 6)) for v in ours_views for o, m in v)
    theirs_joint = Counter((o, round(m, 6)) for v in theirs_views for o, m in v)
    out = {
        "ops_p": chi2_p(ours_ops, theirs_ops), "ops_max_diff": max_rate_diff(ours_ops, theirs_ops),
        "joint_p": chi2_p(ours_joint, theirs_joint), "joint_max_diff": max_rate_diff(ours_joint, theirs_joint),
    }
    signed = [o for o in FAM.TV_SIGNED]
    ours_neg = np.mean([m < 0 for v in ours_views for o, m in v if o in signed and m != 0])
    theirs_neg = np.mean([m < 0 for v in theirs_views for o, m in v if o in signed and m != 0])
    out["negative_share"] = (float(ours_neg), float(theirs_neg))
    if family == "autoaugment":
        ours_count = Counter(len(v) for v in ours_views)
        theirs_count = Counter(len(v) for v in theirs_views)
        out["applied_p"] = chi2_p(ours_count, theirs_count)
        out["applied_max_diff"] = max_rate_diff(ours_count, theirs_count)
    if family == "trivialaugment":
        ours_mag = [abs(m) for v in ours_views for o, m in v if o == "Rotate"]
        theirs_mag = [abs(m) for v in theirs_views for o, m in v if o == "Rotate"]
        out["rotate_ks"] = ks(ours_mag, theirs_mag)
    return out


def test_autoaugment_applied_ops_match_the_table_exactly():
    """The number of applied ops per view against the probabilities of torchvision's IMAGENET table."""
    expected = np.zeros(3)
    for (_, p1, _), (_, p2, _) in FAM.AUTOAUGMENT_IMAGENET:
        expected += np.array([(1 - p1) * (1 - p2), p1 * (1 - p2) + p2 * (1 - p1), p1 * p2]) / 25
    s = Policy.preset("autoaugment").sample(np.random.default_rng(9), N_OURS, 16, 16)
    counts = np.bincount((s["ra_op"] != 0).sum(axis=1), minlength=3)
    assert scipy_stats.chisquare(counts, expected * N_OURS).pvalue > P_MIN
    assert np.abs(counts / N_OURS - expected).max() < 0.003


@pytest.mark.slow
@pytest.mark.parametrize("family", ["torchvision", "trivialaugment", "autoaugment"])
def test_torchvision_family_sampler(family):
    m = measure_torchvision(family)
    assert m["ops_p"] > P_MIN and m["ops_max_diff"] < RATE_TOL, m
    assert m["joint_p"] > P_MIN and m["joint_max_diff"] < RATE_TOL, m
    assert abs(m["negative_share"][0] - m["negative_share"][1]) < 2 * RATE_TOL, m
    if family == "autoaugment":
        assert m["applied_p"] > P_MIN and m["applied_max_diff"] < RATE_TOL, m
    if family == "trivialaugment":
        stat, p, crit = m["rotate_ks"]
        assert p > P_MIN and stat < crit, m


# ------------------------------------------------------------------ timm families
def _sign_of(name: str, args: tuple) -> int:
    """-1 where timm's _randomly_negate negated the level (read back from the op's argument)."""
    if name not in FAM.TIMM_SIGNED or not args:
        return 1
    v = args[0]
    return -1 if (v < 1.0 if name.endswith("Increasing") else v < 0) else 1


def _record_timm(ops) -> list:
    """Replace each AugmentOp's op function by a recorder of (name, level, sign, interpolation)."""
    rec: list = []
    for op in ops:
        level_fn = op.level_fn
        state: dict = {}
        if level_fn is not None:
            def wrapped(level, hparams, _fn=level_fn, _state=state):
                _state["level"] = level
                return _fn(level, hparams)
            op.level_fn = wrapped

        def aug(img, *args, _name=op.name, _state=state, **kwargs):
            interp = None
            if _name in FAM.TIMM_GEOMETRIC:  # timm's own draw of the interpolation
                interp = FAM.INTERP_CODES[FAM_PIL_NAMES[int(timm_aa._interpolation(dict(kwargs)))]]
            level = _state.pop("level", 0.0)
            rec.append((_name, level, _sign_of(_name, args), interp))
            return img

        op.aug_fn = aug
    return rec


FAM_PIL_NAMES = {2: "bilinear", 3: "bicubic", 0: "nearest"}


def _ours_timm(policy: Policy, n: int, seed: int = 3) -> list[list]:
    s = policy.sample(np.random.default_rng(seed), n, 224, 224)
    names = policy.ra_ops()
    interp = s["ra_interp"] if "ra_interp" in s.dtype.names else np.zeros_like(s["ra_op"])
    views = []
    for ops, mags, ints in zip(s["ra_op"].tolist(), s["ra_mag"].tolist(), interp.tolist()):
        views.append([(names[o], abs(m) / FAM.MAG_SCALE, -1 if m < 0 else 1, i or None)
                      for o, m, i in zip(ops, mags, ints) if o != 0])
    return views


def measure_timm(config_str: str, n: int = N, n_ours: int = N_OURS) -> dict:
    random.seed(0)
    np.random.seed(0)
    hp = dict(translate_const=100, img_mean=(124, 116, 104))
    if config_str.startswith("rand"):
        t = timm_aa.rand_augment_transform(config_str, dict(hp))
        ops = t.ops
    else:
        t = timm_aa.auto_augment_transform(config_str, dict(hp))
        ops = [o for sp in t.policy for o in sp]
    rec = _record_timm(ops)
    theirs = []
    for _ in range(n):
        start = len(rec)
        t(None)
        theirs.append(rec[start:])
    policy = Policy.from_timm(auto_augment=config_str, mixup_alpha=0, cutmix_alpha=0, re_prob=0)
    ours = _ours_timm(policy, n_ours)
    q = lambda lv: round(lv * FAM.MAG_SCALE)  # noqa: E731  our quantisation of timm's level
    ours_ops, theirs_ops = Counter(v[0] for w in ours for v in w), Counter(v[0] for w in theirs for v in w)
    slots = policy.ra_num_ops
    out = {
        "ops_p": chi2_p(ours_ops, theirs_ops), "ops_max_diff": max_rate_diff(ours_ops, theirs_ops),
        "applied_rate": (sum(map(len, ours)) / (n_ours * slots), sum(map(len, theirs)) / (n * slots)),
    }
    param = [o for o in ours_ops if o not in FAM.TIMM_UNPARAMETERISED]
    ours_lv = [q(v[1]) for w in ours for v in w if v[0] in param]
    theirs_lv = [q(v[1]) for w in theirs for v in w if v[0] in param]
    out["level_ks"] = ks(ours_lv, theirs_lv)
    out["level_mean"] = (float(np.mean(ours_lv)) / FAM.MAG_SCALE, float(np.mean(theirs_lv)) / FAM.MAG_SCALE)
    neg = lambda views: float(np.mean([v[2] < 0 for w in views for v in w  # noqa: E731
                                       if v[0] in FAM.TIMM_SIGNED and v[1] > 0]))
    out["negative_share"] = (neg(ours), neg(theirs))
    bic = lambda views: float(np.mean([v[3] == 2 for w in views for v in w  # noqa: E731
                                       if v[0] in FAM.TIMM_GEOMETRIC]))
    out["bicubic_share"] = (bic(ours), bic(theirs))
    # per op: the level distributions of the most frequent parameterised op
    top = max(param, key=lambda o: theirs_ops[o])
    out["top_op_level_ks"] = (top, *ks([q(v[1]) for w in ours for v in w if v[0] == top],
                                       [q(v[1]) for w in theirs for v in w if v[0] == top]))
    if not config_str.startswith("rand"):
        cnt_o, cnt_t = Counter(map(len, ours)), Counter(map(len, theirs))
        out["applied_p"] = chi2_p(cnt_o, cnt_t)
        out["applied_max_diff"] = max_rate_diff(cnt_o, cnt_t)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config_str", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-mstd0.5", "rand-m9-mstd101",
                                        "rand-m9-mmax15-mstd1-inc1", "original-mstd0.5", "v0"])
def test_timm_family_sampler(config_str):
    m = measure_timm(config_str)
    assert m["ops_p"] > P_MIN and m["ops_max_diff"] < RATE_TOL, m
    assert abs(m["applied_rate"][0] - m["applied_rate"][1]) < RATE_TOL, m
    stat, p, crit = m["level_ks"]
    assert p > P_MIN and stat < crit, m
    assert abs(m["negative_share"][0] - m["negative_share"][1]) < 2 * RATE_TOL, m
    assert abs(m["bicubic_share"][0] - m["bicubic_share"][1]) < 2 * RATE_TOL, m
    assert m["top_op_level_ks"][2] > P_MIN, m
    if "applied_p" in m:
        assert m["applied_p"] > P_MIN and m["applied_max_diff"] < RATE_TOL, m


@pytest.mark.slow
def test_timm_weighted_choice_without_replacement():
    """'tweights': np.random.choice(ops, 2, replace=False, p=weights) against our exponential clocks."""
    random.seed(1)
    np.random.seed(1)
    t = timm_aa.rand_augment_transform("rand-m9-tweights-p1.0", dict(translate_const=100, img_mean=(124, 116, 104)))
    rec = _record_timm(t.ops)
    n = N // 2
    theirs = []
    for _ in range(n):
        start = len(rec)
        t(None)
        theirs.append(tuple(v[0] for v in rec[start:]))
    policy = Policy.from_timm(auto_augment="rand-m9-tweights-p1.0", mixup_alpha=0, cutmix_alpha=0, re_prob=0)
    ours = [tuple(v[0] for v in w) for w in _ours_timm(policy, n)]
    assert all(len(set(w)) == len(w) == 2 for w in ours)
    first_o, first_t = Counter(w[0] for w in ours), Counter(w[0] for w in theirs)
    second_o, second_t = Counter(w[1] for w in ours), Counter(w[1] for w in theirs)
    assert chi2_p(first_o, first_t) > P_MIN and max_rate_diff(first_o, first_t) < RATE_TOL
    assert chi2_p(second_o, second_t) > P_MIN and max_rate_diff(second_o, second_t) < RATE_TOL


# ------------------------------------------------------------------ crops
def measure_rrc(n: int = N_TV, h: int = 333, w: int = 500) -> dict:
    torch.manual_seed(0)
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    t = v2.RandomResizedCrop(224)
    theirs = np.array([t.make_params([img]) for _ in range(n)] if hasattr(t, "make_params") else [], dtype=object)
    theirs = np.array([[p["top"], p["left"], p["height"], p["width"]] for p in theirs], dtype=np.int64)
    ours = Policy().sample(np.random.default_rng(2), n, h, w)["crop"].astype(np.int64)
    return {name: ks(ours[:, i], theirs[:, i]) for i, name in enumerate(("top", "left", "height", "width"))}


def test_resized_crop_sampler():
    for name, (stat, p, crit) in measure_rrc().items():
        assert p > P_MIN and stat < crit, (name, stat, p, crit)


def measure_padded_crop(n: int = N_TV) -> dict:
    import torchvision.transforms as T

    torch.manual_seed(0)
    padded = torch.zeros(3, 32 + 8, 32 + 8, dtype=torch.uint8)
    theirs = np.array([T.RandomCrop.get_params(padded, (32, 32))[:2] for _ in range(n)], dtype=np.int64) - 4
    ours = Policy.preset("paper_cifar").sample(np.random.default_rng(4), n, 32, 32)["crop"].astype(np.int64)
    return {"top": (Counter(ours[:, 0].tolist()), Counter(theirs[:, 0].tolist())),
            "left": (Counter(ours[:, 1].tolist()), Counter(theirs[:, 1].tolist()))}


def test_padded_crop_sampler():
    for name, (a, b) in measure_padded_crop().items():
        assert set(a) == set(b) == set(range(-4, 5)), name
        assert chi2_p(a, b) > P_MIN and max_rate_diff(a, b) < RATE_TOL, name


def test_random_crop_filter_rate():
    s = Policy(interpolation="random").sample(np.random.default_rng(5), N, 100, 100)
    random.seed(5)
    theirs = Counter(random.choice((2, 3)) for _ in range(N))  # RandomResizedCropAndInterpolation's choice
    ours = Counter((s["crop_filter"] + 2).tolist())
    assert chi2_p(ours, theirs) > P_MIN and max_rate_diff(ours, theirs) < RATE_TOL


def test_ra_prob_rate():
    p = Policy(ra_num_ops=2, ra_prob=0.3)
    s = p.sample(np.random.default_rng(6), N, 64, 64)
    off = (s["ra_op"] == 0).all(axis=1) & (s["ra_mag"] == 0).all(axis=1)
    # a view the stage skipped, or one that drew Identity twice (1/14^2)
    expected = 0.7 + 0.3 / 14 ** 2
    assert abs(off.mean() - expected) < RATE_TOL


# ------------------------------------------------------------------ mixing
def test_cutmix_box_is_timms_rand_bbox_with_the_same_draws():
    from reinforced_data._samplers import rand_bbox

    class NumpyGlobalDraws:  # our sampler's calls, answered by the RandomState timm's code uses
        def __init__(self, rs):
            self.rs = rs

        def integers(self, low, high, size):
            return self.rs.randint(low, high, size=size)

    for h, w in [(224, 224), (17, 31), (1, 1), (32, 32)]:
        lams = np.random.default_rng(h).beta(1.0, 1.0, size=1000)
        for i, lam in enumerate(lams):
            np.random.seed(i)
            (yl, yh, xl, xh), corrected = timm_mixup.cutmix_bbox_and_lam((3, h, w), float(lam))
            top, left, bh, bw = rand_bbox(NumpyGlobalDraws(np.random.RandomState(i)), 1, h, w, lams[i:i + 1])[0]
            assert (top, top + bh, left, left + bw) == (yl, yh, xl, xh), (h, w, lam)
            assert 1.0 - bh * bw / (h * w) == pytest.approx(corrected)


def test_the_ml_dr_presets_cutmix_box_is_ml_drs():
    """apple/ml-dr's CutMix.rand_bbox: cut = int(side * sqrt(1 - lam)), centre uniform (row, then
    column), box centre ± cut // 2 clipped to the image, so an unclipped box has even sides; the
    sequential (ml-dr) policies draw it, the switch (timm) ones keep timm's."""
    from reinforced_data._samplers import rand_bbox

    class Draws:
        def __init__(self, rs):
            self.rs = rs

        def integers(self, low, high, size):
            return self.rs.randint(low, high, size=size)

    def ml_dr_box(rs, h, w, lam):  # the formula as ml-dr states it (rows first)
        ch, cw = int(h * np.sqrt(1.0 - lam)), int(w * np.sqrt(1.0 - lam))
        r, c = rs.randint(h), rs.randint(w)
        y0, y1 = np.clip(r - ch // 2, 0, h), np.clip(r + ch // 2, 0, h)
        x0, x1 = np.clip(c - cw // 2, 0, w), np.clip(c + cw // 2, 0, w)
        return y0, x0, y1 - y0, x1 - x0

    for h, w in [(224, 224), (17, 31), (1, 1), (32, 32)]:
        lams = np.random.default_rng(h).beta(1.0, 1.0, size=500)
        for i in range(len(lams)):
            ours = rand_bbox(Draws(np.random.RandomState(i)), 1, h, w, lams[i:i + 1], even=True)[0]
            assert tuple(int(v) for v in ours) == tuple(int(v) for v in ml_dr_box(np.random.RandomState(i), h, w,
                                                                                      lams[i])), (h, w, i)
    s = Policy.preset("paper_imagenet_mix").sample(np.random.default_rng(3), 4000, 300, 400)
    box = s["mix_box"].astype(np.int64)
    cut = (s["mix_mode"] & 2) != 0
    inside = cut & (box[:, 0] > 0) & (box[:, 1] > 0) & (box[:, 0] + box[:, 2] < 224) & (box[:, 1] + box[:, 3] < 224)
    assert inside.sum() > 100 and (box[inside, 2] % 2 == 0).all() and (box[inside, 3] % 2 == 0).all()
    t = Policy.preset("rrc_ra_re_mix").sample(np.random.default_rng(3), 4000, 300, 400)
    tb = t["mix_box"].astype(np.int64)
    assert ((tb[:, 2] % 2 == 1) & (tb[:, 0] > 0)).any()  # timm's boxes: odd sides too


def measure_mixup_switch(n: int = N) -> dict:
    np.random.seed(0)
    h = w = 224
    mix = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5, mode="elem")
    lam, use_cutmix = mix._params_per_elem(n)
    mixed = lam != 1.0
    cut_lam, cut_area = [], []
    for lv in lam[mixed & use_cutmix]:
        (yl, yh, xl, xh), cl = timm_mixup.cutmix_bbox_and_lam((3, h, w), lv)
        cut_lam.append(round(cl * 255))
        cut_area.append((yh - yl) * (xh - xl))
    theirs_mode = Counter(np.where(mixed, np.where(use_cutmix, 2, 1), 0).tolist())
    policy = Policy(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.8, switch_prob=0.5)
    s = policy.sample(np.random.default_rng(7), n, 300, 300)
    mode = s["mix_mode"].astype(np.int64)
    box = s["mix_box"].astype(np.int64)
    return {
        "mode_p": chi2_p(Counter(mode.tolist()), theirs_mode),
        "mode_max_diff": max_rate_diff(Counter(mode.tolist()), theirs_mode),
        "mixup_lam_ks": ks(s["mix_lam"][mode == 1], np.round(lam[mixed & ~use_cutmix] * 255)),
        "cutmix_lam_ks": ks(s["mix_lam"][mode == 2], cut_lam),
        "cutmix_area_ks": ks(box[mode == 2, 2] * box[mode == 2, 3], cut_area),
    }


def test_mixup_switch_sampler():
    m = measure_mixup_switch()
    assert m["mode_p"] > P_MIN and m["mode_max_diff"] < RATE_TOL, m
    for k in ("mixup_lam_ks", "cutmix_lam_ks", "cutmix_area_ks"):
        stat, p, crit = m[k]
        assert p > P_MIN and stat < crit, (k, m[k])


def measure_mix_sequential(n: int = N) -> dict:
    """apple/ml-dr's MixUp.get_params / CutMix.get_params (the paper's code; not installed here, so
    its two draws are written out: ``torch.rand(1) > p`` skips, ``np.random.beta(a, a) / div_by``)."""
    torch.manual_seed(0)
    np.random.seed(0)
    theirs_mode, theirs_lam = [], []
    for _ in range(n):
        m = not (torch.rand(1) > 0.5)
        lam = np.random.beta(1.0, 1.0) / 2.0 if m else None
        c = not (torch.rand(1) > 0.5)
        if c:
            np.random.beta(1.0, 1.0)
        theirs_mode.append(int(m) + 2 * int(c))
        if m:
            theirs_lam.append(round(lam * 255))
    s = Policy.preset("paper_imagenet_mix").sample(np.random.default_rng(8), n, 300, 300)
    mode = s["mix_mode"].astype(np.int64)
    ours_lam = s["mix_lam"][(mode == 1) | (mode == 3)]
    return {
        "mode_p": chi2_p(Counter(mode.tolist()), Counter(theirs_mode)),
        "mode_max_diff": max_rate_diff(Counter(mode.tolist()), Counter(theirs_mode)),
        "mixup_lam_ks": ks(ours_lam, theirs_lam),
    }


def test_mix_sequential_sampler():
    m = measure_mix_sequential()
    assert m["mode_p"] > P_MIN and m["mode_max_diff"] < RATE_TOL, m
    stat, p, crit = m["mixup_lam_ks"]
    assert p > P_MIN and stat < crit, m


# ------------------------------------------------------------------ ColorJitter
def _library_jitter(which: str, n: int, args: tuple, p: float | None) -> list[tuple]:
    """(order, brightness, contrast, saturation, hue) of n views as the library draws them: torchvision v2's
    ``ColorJitter.make_params`` (torchvision's ``Compose``), or timm's path: torchvision v1's
    ``ColorJitter.get_params`` inside ``transforms.RandomApply(p)`` when ``color_jitter_prob`` is set (a view
    RandomApply skips is recorded with identity values, as ours stores it)."""
    import torchvision.transforms as T1

    torch.manual_seed(11)
    out = []
    if which == "v2":
        t = v2.ColorJitter(*args)
        for _ in range(n):
            d = t.make_params([])
            out.append((tuple(d["fn_idx"].tolist()), d["brightness_factor"], d["contrast_factor"],
                        d["saturation_factor"], d["hue_factor"]))
        return out
    t = T1.ColorJitter(*args)
    drawn: list = []
    t.forward = lambda img: drawn.append(t.get_params(t.brightness, t.contrast, t.saturation, t.hue)) or img
    wrapped = T1.RandomApply([t], p=p) if p is not None else t
    for _ in range(n):
        before = len(drawn)
        wrapped(None)
        if len(drawn) > before:
            fn, b, c, s_, h = drawn[-1]
            out.append((tuple(fn.tolist()), b, c, s_, h))
        else:
            out.append(((0, 1, 2, 3), None, None, None, None))
    return out


def _ours_jitter(policy: Policy, n: int, seed: int = 12) -> list[tuple]:
    s = policy.sample(np.random.default_rng(seed), n, 64, 64)
    on = policy.jitter_components
    out = []
    for v in range(n):
        order = tuple((int(s["jitter_order"][v]) >> (2 * j)) & 3 for j in range(4))
        f = [float(x) / 65536 if i in on else None for i, x in enumerate(s["jitter_factor"][v])]
        h = float(s["jitter_hue"][v]) / 65536 if 3 in on else None
        if order == (0, 1, 2, 3) and all(x in (None, 1.0) for x in f) and h in (None, 0.0):
            f, h = [None] * 3, None  # the identity record of a view RandomApply skipped
        out.append((order, *f, h))
    return out


def measure_jitter(which: str, args: tuple, p: float | None = None, n: int = N_TV, n_ours: int = N_OURS) -> dict:
    from reinforced_data.recipes import _jitter_fields
    import torchvision.transforms as T1

    theirs = _library_jitter(which, n, args, p)
    policy = Policy(**_jitter_fields(T1.ColorJitter(*args)), **({} if p is None else dict(jitter_prob=p)))
    ours = _ours_jitter(policy, n_ours)
    applied_t = Counter(r[1:] != (None,) * 4 for r in theirs)
    applied_o = Counter(r[1:] != (None,) * 4 for r in ours)
    orders_t = Counter(r[0] for r in theirs if r[1:] != (None,) * 4)
    orders_o = Counter(r[0] for r in ours if r[1:] != (None,) * 4)
    out = {"applied_p": chi2_p(applied_o, applied_t), "applied_diff": max_rate_diff(applied_o, applied_t),
           "order_p": chi2_p(orders_o, orders_t), "order_diff": max_rate_diff(orders_o, orders_t)}
    for i, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        a = [r[1 + i] for r in ours if r[1 + i] is not None]
        b = [r[1 + i] for r in theirs if r[1 + i] is not None]
        assert bool(a) == bool(b), name
        if a:
            out[f"{name}_ks"] = ks(a, b)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("which,args,p", [("v2", (0.4, 0.4, 0.4, 0.1), None), ("v1", (0.4, 0.4, 0.4), None),
                                          ("v1", (0.3, (0.5, 1.2), 0.2, 0.5), 0.8)],
                         ids=["torchvision-v2-0.4-0.1", "timm-0.4", "timm-tuple-prob0.8"])
def test_colour_jitter_sampler(which, args, p):
    """Order (24 permutations), each factor's distribution and RandomApply's rate against the library's draws."""
    m = measure_jitter(which, args, p)
    assert m["applied_p"] > P_MIN and m["applied_diff"] < RATE_TOL, m
    assert m["order_p"] > P_MIN and m["order_diff"] < RATE_TOL, m
    assert sum(k.endswith("_ks") for k in m) == (4 if len(args) == 4 else 3)
    for k, (stat, pv, crit) in ((k, v) for k, v in m.items() if k.endswith("_ks")):
        assert pv > P_MIN and stat < crit, (k, m)


if __name__ == "__main__":  # print the measured statistics
    import time

    for fam in ("torchvision", "trivialaugment", "autoaugment"):
        t0 = time.time()
        print(fam, measure_torchvision(fam), f"{time.time() - t0:.1f}s")
    for cfg in ("rand-m9-mstd0.5-inc1", "rand-m7-n3-mstd0.5", "rand-m9-mstd101", "rand-m9-mmax15-mstd1-inc1",
                "original-mstd0.5", "v0"):
        t0 = time.time()
        print(cfg, measure_timm(cfg), f"{time.time() - t0:.1f}s")
    print("rrc", measure_rrc())
    print("mixup switch", measure_mixup_switch())
    print("mix sequential", measure_mix_sequential())
    print("colour jitter v2 (0.4, 0.4, 0.4, 0.1)", measure_jitter("v2", (0.4, 0.4, 0.4, 0.1)))
    print("colour jitter timm 0.4", measure_jitter("v1", (0.4, 0.4, 0.4)))
    print("colour jitter timm tuple, prob 0.8", measure_jitter("v1", (0.3, (0.5, 1.2), 0.2, 0.5), 0.8))
