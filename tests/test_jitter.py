"""ColorJitter: the Hue op against torchvision, the policy's fields and their encoding, the recipes
that build it (timm's color_jitter, torchvision's ColorJitter), and the C++ kernel against the
reference on sampled jitter policies. Sampler distributions are in test_samplers.py, closeness on
photos in test_fidelity.py, the CUDA kernels in test_cuda_emulation.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import _util
from reinforced_data import _args as A
from reinforced_data import _reference as R
from reinforced_data.errors import ConfigError
from reinforced_data._samplers import JITTER_IDENTITY_ORDER
from reinforced_data.policy import Policy
from reinforced_data._replay import replay

CSRC = Path(__file__).resolve().parent.parent / "csrc"
HUE = R.KERNEL_OPS.index("Hue")


def _cube(step: int = 5) -> torch.Tensor:
    """Every step-th level of each channel: a [3, H, W] uint8 image of (256 / step)^3 colours."""
    v = torch.arange(0, 256, step)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    n = v.numel()
    return torch.stack([r.reshape(-1), g.reshape(-1), b.reshape(-1)]).reshape(3, n, n * n).to(torch.uint8)


# ------------------------------------------------------------------ the Hue op
@pytest.mark.slow
def test_cpu_threshold_constants_equal_the_formula():
    """The C++ loop decides floor(X * 255999 / (255000 * 2^16)) = xi + 1 with the constants kHueA, kHueB;
    that equals the formula's threshold for every one of the 256 values of xi (csrc/cpu/replay_cpu_kernels.h)."""
    text = (CSRC / "cpu" / "replay_cpu_kernels.h").read_text()
    a, b = (int(v) for v in re.search(r"kHueA = (\d+), kHueB = (\d+);", text).groups())
    for xi in range(256):
        exact = -(-(65536 * (255000 - 999 * xi)) // 255999)
        assert -(-(a - b * xi) >> 13) == exact, xi
        assert a - b * xi < 2**31 and (65535 << 13) + b * 255 < 2**31  # int32, as the loop computes it
    x = np.arange((255 << 16) + 1, dtype=np.int64)  # and the decision itself, for every X <= 255 * 2^16
    xi, xf = x >> 16, x & 65535
    assert np.array_equal(xi + (((xf << 13) + b * xi) >= a), x * 255999 // (255000 << 16))


@pytest.mark.parametrize("k", [0, 1, -1, 3277, -3277, 6554, 16384, -16384, 32767, -32768, 32768, 12345])
def test_hue_is_torchvisions_adjust_hue(k):
    """On every 5th level of each channel (140,608 colours), our exact evaluation equals torchvision's
    float32 adjust_hue (v2 and v1) but for +-1 on a few values, where float32 rounding crosses an integer;
    a shift of 0 is the identity (torchvision's round trip is too, thanks to its 255.999 scale)."""
    import torchvision.transforms.functional as F1
    import torchvision.transforms.v2.functional as F2

    x = _cube()
    ours = R.hue(x.long(), k)
    if k == 0:
        assert torch.equal(ours, x.long())
    for F in (F1, F2):
        theirs = F.adjust_hue(x, k / 65536).long()
        d = (ours - theirs).abs()
        assert int(d.max()) <= 1
        assert float((d > 0).double().mean()) <= 2e-4, float((d > 0).double().mean())


def test_hue_keeps_the_extreme_channels_and_greys():
    x = _cube(3).long()
    y = R.hue(x, 9000)
    assert torch.equal(y.amax(0), x.amax(0)) and torch.equal(y.amin(0), x.amin(0))
    grey = (x[0] == x[1]) & (x[1] == x[2])
    assert torch.equal(y[:, grey], x[:, grey])
    # a shift by half a turn and by minus half a turn are the same shift
    assert torch.equal(R.hue(x, 32768), R.hue(x, -32768))


@pytest.mark.slow
def test_hue_cpp_equals_reference_on_every_colour():
    import reinforced_data._C  # noqa: F401  (registers the op)

    x = _cube(5)
    H, W = x.shape[1:]
    ks = [0, 1, -1, 5461, 10923, -16384, 21845, 32767, -32768, 32768, 2000, -7777]
    rows = []
    for k in ks:
        r = np.zeros(A.NUM_ARGS, np.int64)
        r[A.CROP_H], r[A.CROP_W] = H, W
        r[A.NUM_OPS], r[A.OPS], r[A.OPS + 1] = 1, HUE, k
        rows.append(r)
    rows = torch.from_numpy(np.stack(rows).astype(np.int32))
    got = torch.ops.reinforced_data.augment([x] * len(ks), rows, H, W)
    assert torch.equal(got, R.augment([x] * len(ks), rows, H, W))


# ------------------------------------------------------------------ the policy
JITTER = dict(jitter_brightness=(0.6, 1.4), jitter_contrast=(0.6, 1.4), jitter_saturation=(0.6, 1.4),
              jitter_hue=(-0.1, 0.1))


def test_param_fields_and_encoding_follow_the_stored_order():
    p = Policy(**JITTER)
    dt = p.param_dtype()
    assert dt["jitter_order"] == np.uint8 and dt["jitter_factor"].shape == (3,) and dt["jitter_hue"] == np.int16
    assert "jitter_hue" not in Policy.preset("timm_train_default").param_dtype().names
    params = p.sample(np.random.default_rng(0), 500, 60, 80)
    rows = A.encode(params, p).numpy()
    assert (rows[:, A.NUM_OPS] == 4).all()
    kernel = {0: R.KERNEL_OPS.index("Brightness"), 1: R.KERNEL_OPS.index("Contrast"), 2: R.KERNEL_OPS.index("Color"),
              3: HUE}
    for v in range(0, 500, 37):
        order = [(int(params["jitter_order"][v]) >> (2 * j)) & 3 for j in range(4)]
        assert sorted(order) == [0, 1, 2, 3]
        values = [*params["jitter_factor"][v].tolist(), int(params["jitter_hue"][v])]
        for s, comp in enumerate(order):
            base = A.OPS + s * A.OP_STRIDE
            assert (rows[v, base], rows[v, base + 1]) == (kernel[comp], values[comp])
    f = params["jitter_factor"] / 65536
    assert f.min() >= 0.6 - 1e-5 and f.max() <= 1.4 + 1e-5
    assert np.abs(params["jitter_hue"]).max() <= 6554


def test_jitter_runs_after_the_augmentation_stage_and_identity_views_do_no_work():
    p = Policy.preset("trivialaugment", jitter_brightness=(0.5, 1.5), jitter_saturation=(0.0, 2.0), jitter_prob=0.5)
    params = p.sample(np.random.default_rng(1), 400, 60, 80)
    rows = A.encode(params, p).numpy()
    assert (rows[:, A.NUM_OPS] == 3).all()  # one TrivialAugment op, then brightness and saturation
    skipped = params["jitter_order"] == JITTER_IDENTITY_ORDER
    off = (params["jitter_factor"] == 65536).all(axis=1)
    assert 0.4 < off.mean() < 0.6 and skipped[off].all()
    later = rows[:, A.OPS + A.OP_STRIDE:A.OPS + 3 * A.OP_STRIDE:A.OP_STRIDE]
    assert (later[off] == 0).all()  # Identity: the same bytes, no work
    assert set(np.unique(later[~off])) <= {0, R.KERNEL_OPS.index("Brightness"), R.KERNEL_OPS.index("Color")}


@pytest.mark.parametrize("edit,match", [
    (lambda p: p["jitter_order"].__setitem__(0, 0), r"jitter_order'\] of view 0 .*permutation"),
    (lambda p: p["jitter_factor"].__setitem__(1, (65536, 65536, 65536 * 300)), r"jitter_factor'\] of view 1 .*Q16"),
    (lambda p: p["jitter_hue"].__setitem__(2, 5), r"does not jitter hue"),
])
def test_encode_refuses_bad_jitter_records(edit, match):
    p = Policy(jitter_brightness=(0.5, 1.5), jitter_saturation=(0.5, 1.5), jitter_contrast=(1.0, 1.0))
    params = p.sample(np.random.default_rng(2), 4, 30, 40)
    if "hue" in match:  # a record with a hue shift, replayed under a policy without hue
        full = Policy(**JITTER)
        params = full.sample(np.random.default_rng(2), 4, 30, 40)
        params["jitter_hue"][2] = 5
        with pytest.raises(ConfigError, match="policy has no colour jitter"):
            A.encode(params, Policy())
        params["jitter_factor"][:, 1] = 65536
        q = Policy(jitter_brightness=(0.5, 1.5), jitter_saturation=(0.5, 1.5))
        params["jitter_factor"][0, 1] = 70000
        with pytest.raises(ConfigError, match="does not jitter contrast"):
            A.encode(params, q)
        return
    edit(params)
    with pytest.raises(ConfigError, match=match):
        A.encode(params, p)


def test_policy_refuses_bad_jitter_fields():
    for kw, match in [(dict(jitter_brightness=(1.2, 0.8)), "jitter_brightness"),
                      (dict(jitter_contrast=(-0.1, 1.0)), "jitter_contrast"),
                      (dict(jitter_saturation=(0.0, 300.0)), "jitter_saturation"),
                      (dict(jitter_hue=(-0.6, 0.1)), "jitter_hue"), (dict(jitter_prob=1.5), "jitter_prob"),
                      (dict(ra_num_ops=2, **JITTER), "at most 4")]:
        with pytest.raises(ConfigError, match=match):
            Policy(**kw)
    assert not Policy(jitter_prob=0.0, **JITTER).jittering  # never applied: no fields, no draws


@pytest.mark.parametrize("kw", [JITTER, dict(JITTER, jitter_prob=0.6, erase_prob=0.5, erase_value="random"),
                                dict(jitter_hue=(-0.5, 0.5)), dict(jitter_saturation=(0.0, 3.0), interpolation="random")])
def test_cpp_replay_equals_reference(kw):
    p = Policy(output_size=(40, 48), **kw)
    imgs = _util.image_batch([(50, 70), (90, 64), (41, 41), (120, 90)], 5)
    imgs[1] = imgs[1].permute(1, 2, 0).contiguous().permute(2, 0, 1)  # a channels-last source, as decoders give
    params = np.concatenate([p.sample(np.random.default_rng(i), 3, *img.shape[1:]) for i, img in enumerate(imgs)])
    sources = [img for img in imgs for _ in range(3)]
    got = replay(sources, params, p, out_dtype=torch.uint8)
    assert torch.equal(got, replay(sources, params, p, out_dtype=torch.uint8, backend="reference"))


def test_sampling_is_deterministic_and_leaves_other_policies_draws_alone():
    p = Policy(**JITTER)
    a = p.sample(np.random.default_rng(9), 20, 64, 64)
    assert a.tobytes() == p.sample(np.random.default_rng(9), 20, 64, 64).tobytes()
    base = Policy.preset("rrc")  # the same policy without jitter: its crops and flips come first, unchanged
    b = base.sample(np.random.default_rng(9), 20, 64, 64)
    assert np.array_equal(a["crop"], b["crop"]) and np.array_equal(a["flip"], b["flip"])


# ------------------------------------------------------------------ the recipes
def test_from_timm_train_py_defaults():
    """timm train.py's own defaults: no --aa, --color-jitter 0.4, --reprob 0, random interpolation."""
    timm_tf = pytest.importorskip("timm.data.transforms_factory")
    p = Policy.from_timm(auto_augment=None, re_prob=0)
    assert p == Policy.preset("timm_train_default")
    t = timm_tf.transforms_imagenet_train(224, color_jitter=0.4, auto_augment=None, re_prob=0)
    cj = [x for x in t.transforms if type(x).__name__ == "ColorJitter"]
    assert len(cj) == 1 and cj[0].hue is None
    assert (p.jitter_brightness, p.jitter_contrast, p.jitter_saturation) == tuple(tuple(v) for v in
                                                                                  (cj[0].brightness, cj[0].contrast,
                                                                                   cj[0].saturation))
    four = Policy.from_timm(auto_augment=None, re_prob=0, color_jitter=(0.3, 0.2, (0.5, 1.0), 0.05),
                            color_jitter_prob=0.8)
    assert four.jitter_contrast == (0.8, 1.2) and four.jitter_saturation == (0.5, 1.0)
    assert four.jitter_hue == (-0.05, 0.05) and four.jitter_prob == 0.8
    # with auto_augment, timm leaves colour jitter out (unless forced)
    assert not Policy.from_timm().jittering
    forced = Policy.from_timm(auto_augment="rand-n1-m9", force_color_jitter=True, color_jitter=(0.4, 0.4, 0.4))
    assert forced.ra_num_ops == 1 and forced.jittering


@pytest.mark.parametrize("v", [1, 2])
def test_from_torchvision_colour_jitter(v):
    if v == 1:
        import torchvision.transforms as T
        conv = [T.ToTensor()]
    else:
        import torchvision.transforms.v2 as T
        conv = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    p = Policy.from_torchvision(T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                                           T.ColorJitter(0.4, 0.4, 0.4, 0.1), *conv,
                                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    assert p == Policy(**JITTER)
    q = Policy.from_torchvision([T.RandomResizedCrop(224), T.RandomApply([T.ColorJitter(brightness=(0.5, 0.9))], p=0.3)])
    assert q.jitter_brightness == (0.5, 0.9) and q.jitter_prob == 0.3 and q.jitter_components == (0,)
