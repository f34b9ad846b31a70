"""AugMix (format version 5): timm's ``augmix-m*-w*-d*`` and torchvision's ``AugMix`` as replayable policies.

The samplers against the libraries' own draws (their transforms run with recording op functions), the
blend arithmetic against the libraries' float formulas, the three backends (reference, C++, CUDA
emulation) bit for bit on random views, the recipes, the stored fields and the refusals.
Pixels against the libraries on photos: tests/test_augmix.py's last section (bounds from
benchmarks/results/fidelity_augmix.md; docs/replay.md quotes them).
"""

from __future__ import annotations

import random
import re
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

import _util
from reinforced_data import _args as A
from reinforced_data import _families as FAM
from reinforced_data import _reference as R
from reinforced_data._replay import augmix_pipeline, replay
from reinforced_data.errors import ConfigError
from reinforced_data.policy import Policy

ONE = FAM.AUGMIX_ONE


def _tv(**kw) -> Policy:
    return Policy(augmix="torchvision", **kw)


def _timm(config: str = "augmix-m5-w4-d2", **kw) -> Policy:
    return Policy.from_timm(auto_augment=config, re_prob=kw.pop("re_prob", 0.0), **kw)


def _views(policy: Policy, sizes, seed: int, per_image: int = 3):
    imgs = _util.image_batch(sizes, seed)
    g = np.random.default_rng(seed)
    params = np.concatenate([policy.sample(g, per_image, *img.shape[1:]) for img in imgs])
    return [img for img in imgs for _ in range(per_image)], params


POLICIES = {
    "tv_default": lambda: _tv(output_size=(23, 31)),
    "tv_basic_nearest_d2": lambda: _tv(output_size=(17, 16), augmix_all_ops=False, augmix_depth=2,
                                       augmix_interpolation="nearest", augmix_severity=10, fill=(9, 200, 31),
                                       augmix_width=5, augmix_alpha=0.3),
    "tv_erase_jitter": lambda: _tv(output_size=(20, 25), erase_prob=0.7, erase_value="random",
                                   jitter_brightness=(0.6, 1.4), jitter_hue=(-0.2, 0.2), grayscale_prob=0.3),
    "timm_m5_w4_d2": lambda: _timm(input_size=(21, 27), re_prob=0.5),
    "timm_m3_w3_random_depth": lambda: _timm("augmix-m3-w3", input_size=(19, 19)),
    "timm_blended_bicubic": lambda: _timm("augmix-m9-w2-d3-b1-mstd0.5", input_size=(24, 18), interpolation="bicubic"),
    "timm_w8_d4_alpha": lambda: _timm("augmix-m10-w8-d4-a0.5", input_size=(13, 15), interpolation="bilinear"),
}


# ------------------------------------------------------------------ backends
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_compiled_equals_reference(name):
    policy = POLICIES[name]()
    sources, params = _views(policy, [(40, 53), (61, 37), (33, 33)], seed=len(name))
    sources[1] = sources[1].permute(1, 2, 0).contiguous().permute(2, 0, 1)  # a channels-last source
    want = replay(sources, params, policy, backend="reference")
    got = replay(sources, params, policy, backend="compiled")
    _util.assert_equal_views(got, want, what=name)
    fl = replay(sources, params, policy, out_dtype=torch.float32, backend="compiled")
    assert torch.equal(fl, replay(sources, params, policy, out_dtype=torch.float32, backend="reference"))


def test_every_op_id_is_replayed_identically():
    """Enough views that every op of both families (and both interpolations of timm's geometric ops) occurs."""
    for policy in (_tv(output_size=(15, 21)), _timm("augmix-m7-w4-d3", input_size=(18, 13))):
        sources, params = _views(policy, [(30, 41), (27, 27)], seed=5, per_image=24)
        ids = set(params["am_op"].reshape(-1).tolist())
        assert ids - {0} == set(range(1, len(policy.augmix_ops))), (policy.augmix, ids)
        if "am_interp" in params.dtype.names:
            assert {1, 2} <= set(params["am_interp"].reshape(-1).tolist())
        _util.assert_equal_views(replay(sources, params, policy, backend="compiled"),
                                 replay(sources, params, policy, backend="reference"), what=policy.augmix)


def test_augmix_kernel_random_rows_and_refusals():
    """The blend op alone, on random crops / chains and every mode, C++ against the reference; bad rows are
    refused by both with the same message."""
    g = np.random.default_rng(3)
    for mode in (1, 2, 3):
        for k in (1, 3, 8):
            b, h, w = 4, 7, 9
            orig = torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8))
            chains = torch.from_numpy(g.integers(0, 256, (b, k, 3, h, w), dtype=np.uint8))
            rows = torch.zeros(b, A.NUM_AUGMIX_ARGS, dtype=torch.int32)
            for i in range(b):
                wts = torch.from_numpy(FAM_quantise(g.dirichlet([0.5] * (k + (mode == 2)))))
                rows[i, A.AM_MODE], rows[i, A.AM_CHAINS] = mode, k
                rows[i, A.AM_WEIGHTS:A.AM_WEIGHTS + k] = wts[:k]
                if mode == 1:
                    rows[i, A.AM_ORIG] = int(g.integers(0, ONE + 1))
                elif mode == 2:
                    rows[i, A.AM_ORIG] = int(wts[k])
            rows[0, A.AM_WEIGHTS:A.AM_WEIGHTS + k] = 0  # extremes: every weight on one chain / on the crop
            rows[0, A.AM_WEIGHTS] = 0 if mode == 2 else ONE
            if mode == 2:
                rows[0, A.AM_ORIG] = ONE
            want = R.augmix(orig, chains, rows)
            assert torch.equal(torch.ops.reinforced_data.augmix(orig, chains, rows), want), (mode, k)
            if mode == 2:
                assert torch.equal(want[0], orig[0])
    bad = rows.clone()  # read as torchvision's weights, one unit too many
    bad[1, A.AM_MODE] = 2
    bad[1, A.AM_WEIGHTS] += 1
    for fn in (R.augmix, torch.ops.reinforced_data.augmix):
        with pytest.raises(RuntimeError, match=r"augmix: args\[1\] weights do not sum"):
            fn(orig, chains, bad)
    bad = rows.clone()
    bad[2, A.AM_MODE] = 4
    for fn in (R.augmix, torch.ops.reinforced_data.augmix):
        with pytest.raises(RuntimeError, match=r"augmix: args\[2\] mode must be 1"):
            fn(orig, chains, bad)


def FAM_quantise(values: np.ndarray) -> np.ndarray:
    from reinforced_data._samplers import quantise_weights

    return quantise_weights(values[None, :])[0]


def test_quantised_weights_sum_exactly():
    from reinforced_data._samplers import quantise_weights

    g = np.random.default_rng(0)
    for alpha in (0.05, 1.0, 30.0):
        v = g.dirichlet([alpha] * 5, size=2000)
        q = quantise_weights(v)
        assert (q.sum(axis=1) == ONE).all() and q.min() >= 0
        assert np.abs(q - v * ONE).max() < 1.0  # each within one unit of its exact value


@pytest.mark.cuda_emulation
@pytest.mark.slow
def test_cuda_emulation_equals_reference(tmp_path_factory):
    """csrc/cuda/replay_cuda.cu's augment and augmix kernels, compiled for the host (tests/cuda_emulation), on
    the whole AugMix pipeline of every policy here."""
    from test_cuda_emulation import build_emulation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emu = build_emulation(tmp_path_factory.mktemp("augmix_emulation"), name="rd_cuda_emulation_augmix")
    for name in sorted(POLICIES):
        policy = POLICIES[name]()
        sources, params = _views(policy, [(35, 44), (50, 29)], seed=len(name) + 1)
        rows = A.encode(params, policy, [tuple(s.shape[1:]) for s in sources])
        got = augmix_pipeline(sources, params, policy, rows, emu.augment, emu.augmix)
        _util.assert_equal_views(got, replay(sources, params, policy, backend="reference"), what=name)
    chains, mix = A.encode_augmix(params, policy)
    orig = torch.zeros(params.shape[0], 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="augmix: args"):
        bad = mix.clone()
        bad[0, A.AM_CHAINS] += 1
        emu.augmix(orig, torch.zeros(params.shape[0], policy.augmix_width, 3, 4, 4, dtype=torch.uint8), bad)


# ------------------------------------------------------------------ the blend's arithmetic
def test_blend_formulas_against_the_libraries_float_arithmetic():
    """The integer blends against the libraries' own float formulas on random bytes and weights: timm's
    float32 chain sum, clip and truncation, then PIL's Image.blend; torchvision's float32 mix and truncation.
    At most one level apart (weights quantised to 2^-15, truncation boundaries), on few pixels."""
    from PIL import Image

    g = np.random.default_rng(11)
    b, k, h, w = 40, 4, 16, 16
    orig = g.integers(0, 256, (b, 3, h, w), dtype=np.uint8)
    chains = g.integers(0, 256, (b, k, 3, h, w), dtype=np.uint8)
    for family in ("timm", "torchvision", "blended"):
        rows = torch.zeros(b, A.NUM_AUGMIX_ARGS, dtype=torch.int32)
        theirs = np.zeros_like(orig)
        for i in range(b):
            d = g.dirichlet([1.0] * k)
            m = float(g.beta(1.0, 1.0))
            if family == "torchvision":
                q = FAM_quantise(np.concatenate([d * (1 - m), [m]]))
                rows[i, :3] = torch.tensor([2, k, int(q[k])])
                rows[i, 3:3 + k] = torch.from_numpy(q[:k])
                wq, m0 = q[:k] / ONE, q[k] / ONE
                mix = np.float32(m0) * orig[i].astype(np.float32)
                for j in range(k):
                    mix += np.float32(wq[j]) * chains[i, j].astype(np.float32)
                theirs[i] = torch.from_numpy(mix).to(torch.uint8).numpy()
            else:
                q = FAM_quantise(d[None, :][0])
                mq = int(round(m * ONE))
                rows[i, 3:3 + k] = torch.from_numpy(q)
                wq = np.float32(q / ONE)
                mf = float(np.float32(mq / ONE))
                if family == "timm":
                    rows[i, :3] = torch.tensor([1, k, ONE - mq])
                    mixed = np.zeros((h, w, 3), dtype=np.float32)
                    for j in range(k):
                        mixed += wq[j] * chains[i, j].transpose(1, 2, 0).astype(np.float32)
                    np.clip(mixed, 0, 255.0, out=mixed)
                    out = Image.blend(Image.fromarray(orig[i].transpose(1, 2, 0)),
                                      Image.fromarray(mixed.astype(np.uint8)), mf)
                else:
                    alphas = A.blended_weights(q[None, :], np.array([ONE - mq]))[0]
                    rows[i, :3] = torch.tensor([3, k, 0])
                    rows[i, 3:3 + k] = torch.from_numpy(alphas)
                    out = Image.fromarray(orig[i].transpose(1, 2, 0))
                    ws = np.float32(q / ONE * (mq / ONE))  # timm's _calc_blended_weights, as it computes them
                    cump, rws = 1.0, []
                    for wv in ws[::-1]:
                        a = wv / cump
                        cump *= 1 - a
                        rws.append(a)
                    for j, a in enumerate(np.array(rws[::-1], dtype=np.float32)):
                        out = Image.blend(out, Image.fromarray(chains[i, j].transpose(1, 2, 0)), float(a))
                theirs[i] = np.asarray(out).transpose(2, 0, 1)
        ours = R.augmix(torch.from_numpy(orig), torch.from_numpy(chains), rows).numpy()
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        assert diff.max() <= 1, (family, diff.max())
        assert (diff > 0).mean() < {"timm": 0.02, "torchvision": 0.02, "blended": 0.05}[family], \
            (family, (diff > 0).mean())


# ------------------------------------------------------------------ samplers against the libraries
scipy_stats = pytest.importorskip("scipy.stats")
P_MIN = 1e-3
RATE_TOL = 0.012


def _chi2_p(a: Counter, b: Counter) -> float:
    keys = sorted(set(a) | set(b), key=repr)
    table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]], dtype=np.float64)
    return 1.0 if table.shape[1] < 2 else float(scipy_stats.chi2_contingency(table)[1])


def _max_rate_diff(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return max(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def _ks_ok(a, b) -> tuple[bool, float]:
    r = scipy_stats.ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return r.pvalue > P_MIN, float(r.pvalue)


def _ours(policy: Policy, n: int, seed: int = 7) -> tuple[list, np.ndarray, np.ndarray]:
    """Our views as [[chain: [(op name, value), ...]]] (value: the stored signed magnitude), the chain weights
    [n, width] and the crop's share in the blend [n] (torchvision: m0; timm: 1 - m)."""
    s = policy.sample(np.random.default_rng(seed), n, 64, 64)
    w, d = policy.augmix_width, policy.augmix_slots
    names = policy.augmix_ops
    ops, mags = s["am_op"].reshape(n, w, d), s["am_mag"].reshape(n, w, d)
    interp = s["am_interp"].reshape(n, w, d) if "am_interp" in s.dtype.names else np.zeros_like(ops)
    views = [[[(names[o], int(m), int(i)) for o, m, i in zip(ops[v, c], mags[v, c], interp[v, c]) if o]
              for c in range(w)] for v in range(n)]
    weights = s["am_weight"].astype(np.float64) / ONE
    return views, weights[:, :w], weights[:, w]


def _record_timm_augmix(t) -> tuple[list, list]:
    """Run timm's AugMixAugment with recording op functions: per view, its chains [(name, stored level,
    interpolation code)], and its (mixing weights, m)."""
    from test_samplers import _record_timm

    rec = _record_timm(t.ops)
    marks: list = []
    weights: list = []
    basic, blended = t._apply_basic, t._apply_blended

    def wrap(fn):
        def run(img, mw, m):
            weights.append((np.asarray(mw, dtype=np.float64).copy(), float(m)))
            marks.append(len(rec))
            return fn(img, mw, m)
        return run

    t._apply_basic, t._apply_blended = wrap(basic), wrap(blended)
    return rec, marks, weights


def _timm_chains(rec, start, end, img_ids) -> list:
    """Split one view's recorded ops into chains: a chain's first op receives the crop itself."""
    chains: list = []
    for (name, level, sign, interp), first in zip(rec[start:end], img_ids[start:end]):
        if first:
            chains.append([])
        chains[-1].append((name, int(round(level * FAM.MAG_SCALE)) * sign, interp or 0))
    return chains


def measure_timm_augmix(config: str, n: int = 6000, n_ours: int = 60000) -> dict:
    from PIL import Image
    from timm.data import auto_augment as AA

    random.seed(0)
    np.random.seed(0)
    hp = dict(translate_const=100, img_mean=(124, 116, 104), translate_pct=0.3)
    t = AA.augment_and_mix_transform(config, dict(hp))
    rec, marks, weights = _record_timm_augmix(t)
    img = Image.new("RGB", (2, 2))
    firsts: list = []
    made: dict = {}  # id -> image, of every op's output (kept alive, so ids are not reused)
    for op in t.ops:  # mark which recorded call received the crop (or timm's copy of it): a chain's first op
        inner = op.aug_fn

        def aug(x, *args, _inner=inner, **kw):
            firsts.append(id(x) not in made)
            out = _inner(x, *args, **kw).copy()
            made[id(out)] = out
            return out
        op.aug_fn = aug
    theirs = []
    for _ in range(n):
        start = len(rec)
        t(img)
        theirs.append(_timm_chains(rec, start, len(rec), firsts))
        made.clear()
    policy = Policy.from_timm(auto_augment=config, re_prob=0, input_size=64)
    ours, ow, oo = _ours(policy, n_ours)
    tw = np.array([x[0] for x in weights])
    to = 1.0 - np.array([x[1] for x in weights])
    flat = lambda views: [op for v in views for c in v for op in c]  # noqa: E731
    out = {}
    oc, tc = Counter(o[0] for o in flat(ours)), Counter(o[0] for o in flat(theirs))
    out["ops"] = (_chi2_p(oc, tc), _max_rate_diff(oc, tc))
    od, td = Counter(len(c) for v in ours for c in v), Counter(len(c) for v in theirs for c in v)
    out["depth"] = (_chi2_p(od, td), _max_rate_diff(od, td))
    out["chains"] = (Counter(len(v) for v in ours), Counter(len(v) for v in theirs))
    param = [o for o in tc if o not in FAM.TIMM_UNPARAMETERISED]
    out["level"] = _ks_ok([abs(o[1]) for o in flat(ours) if o[0] in param],
                          [abs(o[1]) for o in flat(theirs) if o[0] in param])
    neg = lambda views: np.mean([o[1] < 0 for o in flat(views) if o[0] in FAM.TIMM_SIGNED and o[1]])  # noqa: E731
    out["negative"] = (float(neg(ours)), float(neg(theirs)))
    bic = lambda views: np.mean([o[2] == 2 for o in flat(views) if o[0] in FAM.TIMM_GEOMETRIC])  # noqa: E731
    out["bicubic"] = (float(bic(ours)), float(bic(theirs)))
    out["weight0"] = _ks_ok(ow[:, 0], tw[:, 0])
    out["crop_share"] = _ks_ok(oo, to)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", ["augmix-m5-w4-d2", "augmix-m3-w3", "augmix-m9-w2-mstd0.5-a0.3-b1"])
def test_timm_augmix_sampler(config):
    m = measure_timm_augmix(config)
    assert m["ops"][0] > P_MIN and m["ops"][1] < RATE_TOL, m
    assert m["depth"][0] > P_MIN and m["depth"][1] < RATE_TOL, m
    assert set(m["chains"][0]) == set(m["chains"][1]) and len(m["chains"][0]) == 1, m
    assert m["level"][0] and m["weight0"][0] and m["crop_share"][0], m
    assert abs(m["negative"][0] - m["negative"][1]) < 2 * RATE_TOL, m
    assert abs(m["bicubic"][0] - m["bicubic"][1]) < 2 * RATE_TOL, m


def measure_torchvision_augmix(kw: dict, n: int = 4000, n_ours: int = 60000) -> dict:
    import torchvision.transforms as T
    import torchvision.transforms.autoaugment as tv_aa

    torch.manual_seed(0)
    t = T.AugMix(**kw)
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    rec: list = []
    draws: list = []
    sample = t._sample_dirichlet

    def dirichlet(params):
        out = sample(params)
        draws.append(out[0].double().numpy().copy())
        return out
    t._sample_dirichlet = dirichlet
    real_apply = tv_aa._apply_op

    def apply(x, op_name, magnitude, interpolation, fill):
        rec.append((x is batch[0], op_name, float(magnitude)))
        return x.clone()
    theirs = []
    tv_aa._apply_op = apply
    try:
        for _ in range(n):
            start = len(rec)
            batch = [img.view(1, 3, 8, 8)]
            real_view = torch.Tensor.view

            def view(self, *shape, _b=batch):
                out = real_view(self, *shape)
                if self is img and len(out.shape) == 4:
                    _b[0] = out
                return out
            torch.Tensor.view = view
            try:
                t(img)
            finally:
                torch.Tensor.view = real_view
            chains: list = []
            for first, name, mag in rec[start:]:
                if first:
                    chains.append([])
                chains[-1].append((name, mag))
            theirs.append(chains)
    finally:
        tv_aa._apply_op = real_apply
    m = np.array(draws[0::2])  # [m0, m1] per view
    wts = np.array(draws[1::2]) * m[:, 1:2]
    policy = Policy.from_torchvision(T.Compose([T.RandomResizedCrop(8), t]))
    ours_raw, ow, oo = _ours(policy, n_ours)
    table = {}
    for i, name in enumerate(FAM.AUGMIX_TV_OPS):
        tab = FAM.torchvision_magnitudes("augmix", name, FAM.AUGMIX_BINS, 64, 64)
        for b in range(-(FAM.AUGMIX_BINS - 1), FAM.AUGMIX_BINS):
            table[(name, b)] = 0.0 if tab is None else float(tab[abs(b)]) * (-1.0 if b < 0 else 1.0)
    ours = [[[(o, table[(o, v)]) for o, v, _ in c] for c in view] for view in ours_raw]
    theirs = [[[(o, mag * (64 / 8) if o.startswith("Translate") else mag) for o, mag in c] for c in v]
              for v in theirs]  # torchvision drew on an 8 px image: its translations scale with the size
    flat = lambda views: [op for v in views for c in v for op in c]  # noqa: E731
    out = {}
    oc, tc = Counter(o[0] for o in flat(ours)), Counter(o[0] for o in flat(theirs))
    out["ops"] = (_chi2_p(oc, tc), _max_rate_diff(oc, tc), set(oc) == set(tc))
    oj = Counter((o, round(v, 3)) for o, v in flat(ours))
    tj = Counter((o, round(v, 3)) for o, v in flat(theirs))
    out["joint"] = (_chi2_p(oj, tj), _max_rate_diff(oj, tj), set(oj) == set(tj))
    od, td = Counter(len(c) for v in ours for c in v), Counter(len(c) for v in theirs for c in v)
    out["depth"] = (_chi2_p(od, td), _max_rate_diff(od, td))
    out["weight0"] = _ks_ok(ow[:, 0], wts[:, 0])
    out["crop_share"] = _ks_ok(oo, m[:, 0])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(), dict(severity=6, mixture_width=2, chain_depth=2, alpha=0.4, all_ops=False)])
def test_torchvision_augmix_sampler(kw):
    m = measure_torchvision_augmix(kw)
    assert m["ops"][0] > P_MIN and m["ops"][1] < RATE_TOL and m["ops"][2], m
    assert m["joint"][0] > P_MIN and m["joint"][1] < RATE_TOL and m["joint"][2], m
    assert m["depth"][0] > P_MIN and m["depth"][1] < RATE_TOL, m
    assert m["weight0"][0] and m["crop_share"][0], m


# ------------------------------------------------------------------ recipes
def test_from_timm_reads_timms_augmix():
    from timm.data import auto_augment as AA

    p = Policy.from_timm(auto_augment="augmix-m5-w4-d2", input_size=224)
    t = AA.augment_and_mix_transform("augmix-m5-w4-d2", dict(translate_const=100, img_mean=(124, 116, 104),
                                                              translate_pct=0.3))
    cfg = FAM.parse_config(p.augmix_config)
    assert [e[0] for e in cfg["ops"]] == [o.name for o in t.ops] == list(FAM.TIMM_AUGMIX_OPS)
    assert all(e[1:] == [1.0, 5.0] for e in cfg["ops"])
    assert cfg["magnitude_noise"] == "uniform" and cfg["translate_pct"] == 0.3 and cfg["interpolation"] == "random"
    assert (p.augmix, p.augmix_width, p.augmix_depth, p.augmix_alpha, p.augmix_blended) == ("timm", 4, 2, 1.0, False)
    assert p.ra_num_ops == 0 and p.fill == (124, 116, 104) and p.interpolation == "random"
    assert p == Policy.preset("augmix")
    q = Policy.from_timm(auto_augment="augmix-m9-w3-d0-a0.5-mstd0.7-b1", interpolation="bicubic")
    cfg = FAM.parse_config(q.augmix_config)
    assert (q.augmix_depth, q.augmix_alpha, q.augmix_blended) == (-1, 0.5, True)
    assert cfg["magnitude_noise"] == "gauss" and cfg["magnitude_std"] == 0.7 and cfg["interpolation"] == "bicubic"
    assert "am_interp" not in q.param_dtype().names and "am_interp" in p.param_dtype().names


def test_from_torchvision_reads_augmix():
    import torchvision.transforms as T
    import torchvision.transforms.v2 as v2

    for mod in (T, v2):
        p = Policy.from_torchvision(mod.Compose([
            mod.RandomResizedCrop(48), mod.RandomHorizontalFlip(),
            mod.AugMix(severity=5, mixture_width=2, chain_depth=2, alpha=0.5, all_ops=False,
                       interpolation=T.InterpolationMode.NEAREST, fill=[1, 2, 3]),
            mod.RandomErasing(0.3)]))
        assert (p.augmix, p.augmix_severity, p.augmix_width, p.augmix_depth, p.augmix_alpha, p.augmix_all_ops,
                p.augmix_interpolation, p.fill, p.erase_prob) == ("torchvision", 5, 2, 2, 0.5, False, "nearest",
                                                                  (1, 2, 3), 0.3)
        d = Policy.from_torchvision([mod.RandomResizedCrop(32), mod.AugMix()])
        assert (d.augmix_width, d.augmix_depth, d.augmix_severity, d.augmix_all_ops, d.augmix_interpolation) == \
            (3, -1, 3, True, "bilinear")
    with pytest.raises(ConfigError, match="AugMix after the float conversion"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.ToTensor(), T.AugMix()])
    with pytest.raises(ConfigError, match="mixture_width=9"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.AugMix(mixture_width=9)])
    with pytest.raises(ConfigError, match="chain_depth=5"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.AugMix(chain_depth=5)])
    with pytest.raises(ConfigError, match="interpolation='bicubic'"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.AugMix(interpolation=T.InterpolationMode.BICUBIC)])
    # a second augmentation stage is named as such, not as a later stage
    with pytest.raises(ConfigError, match="RandAugment after AugMix, in the same stage"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.AugMix(), T.RandAugment()])
    with pytest.raises(ConfigError, match="AugMix after AugMix, in the same stage"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.AugMix(), T.AugMix()])
    with pytest.raises(ConfigError, match="AugMix after a later stage"):
        Policy.from_torchvision([T.RandomResizedCrop(32), T.ColorJitter(0.4), T.AugMix()])


@pytest.mark.parametrize("kw", [dict(mixture_width=2.5), dict(mixture_width=2.0), dict(chain_depth=2.5),
                                dict(chain_depth=0.5), dict(severity=2.5), dict(chain_depth="2")])
def test_from_torchvision_refuses_non_integer_augmix_arguments(kw):
    """torchvision's AugMix fails on these when it runs (range() / randint() of a float); truncating them
    would reinforce a pipeline other than the one written."""
    import torchvision.transforms as T

    t = T.AugMix(**kw)
    with pytest.raises(TypeError):
        t(torch.zeros(3, 8, 8, dtype=torch.uint8))
    (name, value), = kw.items()
    with pytest.raises(ConfigError, match=re.escape(f"AugMix({name}={value!r}) must be an integer")):
        Policy.from_torchvision([T.RandomResizedCrop(32), t])
    # what torchvision runs is taken: a bool width (range(True)), a depth <= 0 of any type (1 to 3 per chain)
    assert Policy.from_torchvision([T.RandomResizedCrop(32), T.AugMix(chain_depth=-1.0)]).augmix_depth == -1


@pytest.mark.parametrize("kw,match", [
    (dict(augmix="kornia"), "augmix='kornia'"),
    (dict(augmix_width=4), "needs augmix="),
    (dict(augmix="torchvision", ra_num_ops=2), "ra_num_ops=0"),
    (dict(augmix="torchvision", augmix_width=9), "augmix_width=9"),
    (dict(augmix="torchvision", augmix_width=0), "augmix_width=0"),
    (dict(augmix="torchvision", augmix_depth=5), "augmix_depth=5"),
    (dict(augmix="torchvision", augmix_depth=0), "augmix_depth=0"),
    (dict(augmix="torchvision", augmix_alpha=0.0), "augmix_alpha=0.0"),
    (dict(augmix="torchvision", augmix_severity=11), "augmix_severity=11"),
    (dict(augmix="torchvision", augmix_interpolation="bicubic"), "augmix_interpolation"),
    (dict(augmix="torchvision", augmix_blended=True), "augmix_blended"),
    (dict(augmix="torchvision", augmix_all_ops=1), "augmix_all_ops=1 must be true or false"),
    (dict(augmix="timm"), "augmix_config"),
    (dict(augmix="timm", augmix_config={"ops": [["Rotate", 0.5, 3.0]]}), "probability 1.0"),
    (dict(augmix="timm", augmix_config={"ops": [["Warp", 1.0, 3.0]]}), "Warp"),
    (dict(augmix="timm", augmix_config={"ops": [["Rotate", 1.0, 3.0]], "num_layers": 2}), "num_layers"),
    (dict(augmix="timm", augmix_config={"ops": [["Rotate", 1.0, 3.0]]}, augmix_severity=4), "augmix_severity"),
    (dict(augmix="torchvision", jitter_brightness=(0.5, 1.5), jitter_contrast=(0.5, 1.5),
          jitter_saturation=(0.5, 1.5), jitter_hue=(-0.1, 0.1), grayscale_prob=0.5), "at most 4"),
])
def test_policy_refuses_malformed_augmix(kw, match):
    with pytest.raises(ConfigError, match=match):
        Policy(**kw)


@pytest.mark.parametrize("config,match", [("augmix-m5-w9", "width 9"), ("augmix-m5-d5", "depth 5"),
                                          ("augmix-m5-x3", "timm accepts"), ("augmix-m5-a0", "alpha")])
def test_from_timm_refuses_malformed_augmix(config, match):
    with pytest.raises(ConfigError, match=match):
        Policy.from_timm(auto_augment=config)


@pytest.mark.parametrize("edit,match", [
    (("am_op", 0, 14), r"params\['am_op'\] of view 0 .*op ids must lie in \[0, 13\]"),
    (("am_op", 1, 0), r"params\['am_op'\] of view 1 .*Identity"),  # a chain whose first op is Identity
    (("am_mag", 2, 9), r"params\['am_mag'\] of view 2"),
    (("am_weight", 3, None), r"params\['am_weight'\] of view 3 .*sum to 32768"),
    (("am_weight", 0, "drop"), "no 'am_weight' field"),
])
def test_encode_refuses_bad_records(edit, match):
    p = _tv(output_size=(12, 12), augmix_depth=2)
    params = p.sample(np.random.default_rng(0), 4, 20, 20)
    field, view, value = edit
    if value == "drop":
        params = params[[n for n in params.dtype.names if n != field]]
    elif field == "am_weight":
        params[field][view, 0] += 1
    elif field == "am_op" and value == 0:
        params[field][view, 0] = 0
    elif field == "am_mag":
        params["am_op"][view, 0] = FAM.AUGMIX_TV_OPS.index("Rotate")
        params[field][view, 0] = value
    else:
        params[field][view, 0] = value
    with pytest.raises(ConfigError, match=match):
        A.encode_augmix(params, p)
    with pytest.raises(ConfigError, match=match.split(" .*")[0] if value != "drop" else match):
        replay([torch.zeros(3, 20, 20, dtype=torch.uint8)] * 4, params, p, backend="reference") \
            if value != "drop" else A.encode_augmix(params, p)


def test_timm_records_refuse_out_of_range_levels_and_interpolations():
    p = _timm(input_size=(12, 12))
    params = p.sample(np.random.default_rng(1), 3, 20, 20)
    bad = params.copy()
    bad["am_op"][0, 0] = p.augmix_ops.index("Rotate")
    bad["am_mag"][0, 0] = 1001
    with pytest.raises(ConfigError, match=r"am_mag'\] of view 0 .*timm's Rotate"):
        A.encode_augmix(bad, p)
    bad = params.copy()
    bad["am_op"][1, 0] = p.augmix_ops.index("Equalize")
    bad["am_mag"][1, 0] = 0
    bad["am_interp"][1, 0] = 1
    with pytest.raises(ConfigError, match=r"am_interp'\] of view 1"):
        A.encode_augmix(bad, p)


# ------------------------------------------------------------------ the store
@pytest.mark.parametrize("policy", ["augmix", "tv"])
def test_version_5_file_round_trips_and_replays(tmp_path, monkeypatch, policy):
    import h5py

    import _store_util
    from reinforced_data import store as S
    from reinforced_data.errors import UnsupportedVersionError
    from reinforced_data.store import reader as reader_mod

    pol = Policy.preset("augmix", output_size=(32, 32)) if policy == "augmix" else \
        _tv(output_size=(32, 32), erase_prob=0.25, mixup_alpha=0.2)
    header = _store_util.make_header(pol)
    assert header.format_version == 5 and S.FORMAT_VERSION == 5
    path = tmp_path / "v5.h5"
    rows = _store_util.write_file(path, header)
    with S.ReinforcementFile(path) as f:
        assert f.header.policy == pol and f.header.format_version == 5
        stored = np.stack([np.stack([f.read(i, v).params for v in range(header.num_views)])
                           for i in range(header.num_images)])
    with h5py.File(path, "r") as h:
        assert int(h.attrs["format_version"]) == 5
    assert stored.tobytes() == np.stack([rows[i][0] for i in range(header.num_images)]).tobytes()
    monkeypatch.setattr(reader_mod, "FORMAT_VERSION", 4)  # a version-4 reader refuses it as newer
    with pytest.raises(UnsupportedVersionError, match="format version 5, newer than the version 4"):
        S.ReinforcementFile(path)
    flat = np.concatenate([rows[i][0] for i in range(2)])
    flat = flat[[n for n in flat.dtype.names if not n.startswith("mix_")]] if not pol.mixing else flat
    imgs = _util.image_batch([(40, 50)] * len(flat), 2)
    if pol.mixing:
        flat = flat.copy()
        flat["mix_mode"] = 0
    got = replay(imgs, flat, pol)
    assert torch.equal(got, replay(imgs, flat, pol, backend="reference"))


def test_older_policies_keep_their_versions():
    from reinforced_data.store.format import Header

    def version(pol):
        return Header.format_version.fget(type("H", (), {"policy": pol})())

    assert version(Policy.preset("deit3")) == 4 and version(Policy.preset("rrc")) == 1
    assert version(Policy.preset("timm_train_default")) == 3 and version(_tv()) == 5
    assert Policy.from_dict(_tv(augmix_depth=2).to_dict()) == _tv(augmix_depth=2)
    assert Policy.from_json(Policy.preset("augmix").to_json()) == Policy.preset("augmix")


def test_fast_encoder_encodes_the_views_own_row_and_encode_augmix_the_rest(caplog):
    """The per-record plan is built for AugMix policies (no warning) and gives the reference's own rows
    (crop, flip, jitter, erasing); the chains and weights are encode_augmix's (the reference only)."""
    for p in (_tv(output_size=(16, 16), erase_prob=0.5, jitter_brightness=(0.5, 1.5)), Policy.preset("augmix")):
        params = p.sample(np.random.default_rng(4), 6, 30, 30)
        plan = A._fast_plan(p, params.dtype)
        assert plan is not None
        for j in range(6):
            fast = plan.encode(params[j:j + 1], [(30, 30)])
            assert fast is not None and torch.equal(fast, A.encode_reference(params[j:j + 1], p, [(30, 30)]))
    assert not caplog.records


# ------------------------------------------------------------------ pixels against the libraries, on photos
def _fidelity():
    import os
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import _fidelity as F
    return F


def test_forced_library_draws_reproduce_exact_ops():
    """The harness itself: with only ops our kernels reproduce exactly (PIL's solarize and posterize), timm's
    own AugMixAugment run on the stored draws gives our view, at most 1 apart (blended: the sequential blends'
    float factors). Would fail if the forced draws, weights or chain order were misread."""
    import json

    F = _fidelity()
    base = Policy.preset("augmix", output_size=(48, 56), erase_prob=0.0)
    cfg = json.loads(base.augmix_config)
    cfg["ops"] = [e for e in cfg["ops"] if e[0] in ("SolarizeIncreasing", "PosterizeIncreasing")]
    crops = F.photo_crops(F.skimage_photos(), [(90, 110)], 1, seed=1)
    for blended, bound in ((False, 0), (True, 1)):
        p = Policy.from_dict({**base.to_dict(), "augmix_config": cfg, "augmix_blended": blended})
        st = F.chain_policy_augmix(p, crops, 6, seed=3, backend="compiled")
        assert max(st.max_abs) <= bound, (blended, st.max_abs)


# Bounds: the larger of this sample's figure and benchmarks/results/fidelity_augmix.md's worst photo set
# (docs/replay.md quotes the report): share of views with a value >= 32 apart, median share of values differing.
# This sample (4 tuning photos x 4 views): tv 0 / 0.88 %, timm 12.5 % / 22.3 %, blended 12.5 % / 21.8 %; the
# report's worst set: tv 6.25 % / 0.47 % (all sets), timm 8.65 % / 17.4 %, blended 9.38 % / 18.7 %.
AUGMIX_BOUNDS = {"torchvision": (0.0625, 0.009), "timm": (0.125, 0.23), "timm blended": (0.125, 0.22)}


@pytest.mark.slow
def test_whole_augmix_views_against_the_libraries_on_photos():
    F = _fidelity()
    sources = F.photo_crops(F.skimage_photos(), [(400, 500)], 1, seed=4)
    for i, (name, policy) in enumerate(F.augmix_policies().items()):
        st = F.chain_policy_augmix(policy, sources, 4, seed=20 + i, backend="compiled")
        key = "torchvision" if policy.augmix == "torchvision" else ("timm blended" if policy.augmix_blended else "timm")
        far, median = AUGMIX_BOUNDS[key]
        assert st.share(32) <= far and float(np.median(st.frac)) <= median, (name, st.share(32), np.median(st.frac),
                                                                           st.worst)


def test_verify_and_the_dataset_name_a_damaged_augmix_record(tmp_path, monkeypatch):
    """A stored AugMix record whose weights no longer sum (damage) is named by verify and by the dataset."""
    import _store_util
    from reinforced_data import ReinforcedDataset
    from reinforced_data import inspection
    from reinforced_data.errors import CorruptFileError

    pol = _tv(output_size=(16, 16))
    header = _store_util.make_header(pol)
    real = _store_util.make_rows

    def damaged(h, indices, seed=0):
        params, *rest = real(h, indices, seed)
        if list(indices) == [5]:
            params["am_weight"][0, 3, 0] += 7  # image 5, view 3
        return (params, *rest)

    monkeypatch.setattr(_store_util, "make_rows", damaged)
    path = tmp_path / "damaged.h5"
    _store_util.write_file(path, header)
    text = inspection.format_verify(inspection.verify_file(path))
    assert "am_weight" in text and "ok:" not in text, text

    class Images:
        targets = [i % _store_util.C for i in range(header.num_images)]

        def __len__(self):
            return header.num_images

        def __getitem__(self, i):
            return torch.zeros(3, 40, 50, dtype=torch.uint8), self.targets[i]

    ds = ReinforcedDataset(Images(), path)
    ds[4]  # an intact image replays
    with pytest.raises(CorruptFileError, match=r"view 3 of image 5 holds an invalid 'am_weight'"):
        for _ in range(60):  # view 3 of image 5 comes up among the views drawn
            ds[5]


def test_mixed_augmix_views_replay_identically():
    """MixUp / CutMix over AugMix views: each partner contributes its own stored AugMix view."""
    p = _tv(output_size=(20, 22), mixup_alpha=0.4, cutmix_alpha=1.0, erase_prob=0.3)
    sources, params = _views(p, [(41, 37), (30, 52)], seed=8, per_image=4)
    assert set(params["mix_mode"].tolist()) >= {1, 2}
    order = [(i + 3) % len(sources) for i in range(len(sources))]
    kw = dict(partners=[sources[j] for j in order], partner_params=params[order])
    got = replay(sources, params, p, backend="compiled", **kw)
    want = replay(sources, params, p, backend="reference", **kw)
    _util.assert_equal_views(got, want, what="mixed AugMix views")
    alone = replay(sources, params, p, backend="reference", partners=sources, partner_params=params)
    assert not torch.equal(alone, want)  # the partners' views took part
