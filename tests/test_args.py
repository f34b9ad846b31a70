"""The int32 argument rows: the layout constants that reinforced_data/_args.py and
csrc/replay_args.h (and the other shared headers) must agree on; the compiled op's
validation of rows (garbage rows raise, every field corrupted either raises or matches
the reference, targeted bad fields name the view and the field); and encode's errors,
which name the params field and the view.

Tests marked ``compiled`` skip without the compiled op, or fail with
REINFORCED_DATA_REQUIRE_COMPILED=1 (see conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import _util
from _rows import INT32_MAX, INT32_MIN, _policy_and_params, _rows, _valid_row, _with
from reinforced_data import _args, _families, _reference
from reinforced_data import policy as policy_mod
from reinforced_data.policy import RA_OPS, Policy

REPO = Path(__file__).resolve().parents[1]

compiled = pytest.mark.compiled


# ------------------------------------------------------------------ layout constants
def _header_constants(path: Path) -> dict[str, int]:
    text = re.sub(r"//[^\n]*", "", path.read_text())
    out: dict[str, int] = {}
    for decl in re.findall(r"constexpr\s+(?:int|int64_t|int32_t)\s+([^;]+);", text):
        for item in decl.split(","):
            name, value = (s.strip() for s in item.split("="))
            if re.fullmatch(r"[0-9\s<>+*()-]+", value):  # literal or simple integer expression
                out[name] = int(eval(value, {"__builtins__": {}}))  # noqa: S307
            else:
                out[name] = value
    return out


def _header_enum(path: Path, name: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", path.read_text())
    body = re.search(r"enum\s+" + name + r"\s*(?::\s*\w+)?\s*\{([^}]*)\}", text, re.S)
    assert body, f"enum {name} not found in {path}"
    names = []
    for i, item in enumerate(x.strip() for x in body.group(1).split(",") if x.strip()):
        if "=" in item:
            n, v = (s.strip() for s in item.split("="))
            assert int(v) == i, f"{n} = {v}: enum values must be consecutive from 0"
            item = n
        names.append(item)
    return names


def test_layout_constants_match_header():
    c = _header_constants(REPO / "csrc" / "replay_args.h")
    names = ["CROP_TOP", "CROP_LEFT", "CROP_H", "CROP_W", "FLIP", "FILL", "ERASE_TOP", "ERASE_LEFT", "ERASE_H",
             "ERASE_W", "ERASE_VALUE", "ERASE_SEED", "NUM_OPS", "OPS", "OP_STRIDE", "OP_INTERP", "RESIZE_FILTER", "PAD_FILL", "NUM_ARGS", "MIX_MODE",
             "MIX_LAM", "MIX_BOX", "NUM_MIX_ARGS", "AM_MODE", "AM_CHAINS", "AM_ORIG", "AM_WEIGHTS",
             "MAX_AUGMIX_CHAINS", "NUM_AUGMIX_ARGS", "AUGMIX_BITS"]
    for n in names:
        assert n in c, f"{n} missing from csrc/replay_args.h"
        assert c[n] == getattr(_args, n), f"{n}: header {c[n]} != _args.py {getattr(_args, n)}"
    assert c["MAX_OPS"] == policy_mod.MAX_RA_OPS
    assert c["BLUR_TAPS"] == _reference.BLUR_TAPS == _families.BLUR_TAPS
    assert 1 << c["BLUR_BITS"] == 1 << _reference.BLUR_BITS == _families.BLUR_ONE
    extra = {"MAX_OPS", "BLUR_TAPS", "BLUR_BITS"}
    assert set(c) <= set(names) | extra, f"header constants unknown to the test: {set(c) - set(names) - extra}"
    text = (REPO / "csrc" / "replay_args.h").read_text()
    modes = re.search(r"enum\s+AugMixMode\s*:\s*int\s*\{([^}]*)\}", text).group(1)
    assert {n.strip(): int(v) for n, v in (x.split("=") for x in modes.split(",") if x.strip())} == {
        "AUGMIX_TIMM": _args.AUGMIX_TIMM, "AUGMIX_TORCHVISION": _args.AUGMIX_TORCHVISION,
        "AUGMIX_BLENDED": _args.AUGMIX_BLENDED}
    assert 1 << c["AUGMIX_BITS"] == _families.AUGMIX_ONE and c["MAX_AUGMIX_CHAINS"] == _families.MAX_AUGMIX_CHAINS
    ops = _header_enum(REPO / "csrc" / "replay_args.h", "Op")
    assert ops[-1] == "NUM_OP_IDS"
    assert [o.replace("_", "") for o in ops[:-1]] == [o.upper() for o in _reference.KERNEL_OPS]
    assert RA_OPS == _reference.KERNEL_OPS[:len(RA_OPS)]  # a policy's op id is the kernel's
    assert _header_enum(REPO / "csrc" / "replay_args.h", "Interp")[-1] == "NUM_INTERPS"


def test_other_shared_constants_match():
    checks = _header_constants(REPO / "csrc" / "replay_checks.h")
    assert checks["MAX_OUTPUT_SIZE"] == policy_mod.MAX_OUTPUT_SIZE
    assert checks["MAX_CROP"] == _reference.MAX_CROP
    math_h = _header_constants(REPO / "csrc" / "replay_math.h")
    assert math_h["WEIGHT_BITS"] == _reference.WEIGHT_BITS
    assert math_h["Q16"] == _args.Q16


# ------------------------------------------------------------------ validation (compiled)
@compiled
def test_garbage_rows_raise():
    """Rows of random int32 in every field: a RuntimeError each time, never a crash."""
    g = np.random.default_rng(1234)
    img = [_util.smooth_image(30, 40, 1)]
    for i in range(2000):
        r = g.integers(INT32_MIN, INT32_MAX, _args.NUM_ARGS, endpoint=True)
        if i % 2:  # small values are more likely to get past the early checks
            r = g.integers(-3, 300, _args.NUM_ARGS)
        with pytest.raises(RuntimeError):
            torch.ops.reinforced_data.augment(img, _rows([r]), 12, 10)
    # a whole batch of garbage at once
    rows = _rows(g.integers(-5, 70, (500, _args.NUM_ARGS)))
    with pytest.raises(RuntimeError):
        torch.ops.reinforced_data.augment(img * 500, rows, 12, 10)


FIELD_VALUES = [INT32_MIN, -65536, -257, -2, -1, 0, 1, 2, 3, 4, 13, 14, 25, 255, 256, 4096, 65535, 65536, INT32_MAX]


@pytest.mark.slow
@compiled
def test_corrupted_fields_raise_or_match_reference():
    """Each field of a valid row set to extreme / random int32 values: either a
    RuntimeError, or (where any value is acceptable) exactly the reference output."""
    g = np.random.default_rng(99)
    img = [_util.smooth_image(30, 40, 2)]
    base = _valid_row()
    accepted = raised = 0
    for f in range(_args.NUM_ARGS):
        values = FIELD_VALUES + [int(v) for v in g.integers(INT32_MIN, INT32_MAX, 6, endpoint=True)] + \
            [int(v) for v in g.integers(-300, 300, 4)]
        for v in values:
            r = base.copy()
            r[f] = v
            rows = _rows([r])
            try:
                out = torch.ops.reinforced_data.augment(img, rows, 12, 10)
            except RuntimeError:
                raised += 1
                continue
            accepted += 1
            ref = _reference.augment(img, rows, 12, 10)
            _util.assert_equal_views(out, ref, rows, f"field {f} = {v} accepted")
    assert raised > 100 and accepted > 100  # both paths were exercised


def _expect_error(images, rows, match, oh=12, ow=10):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.reinforced_data.augment(images, _rows(rows), oh, ow)


TARGETED = [  # (description, {field: value}, message fragment)
    ("crop far below", dict(CROP_TOP=65536), r"args\[0\] crop"),
    ("crop far right", dict(CROP_LEFT=65536), r"args\[0\] crop"),
    ("crop far above", dict(CROP_TOP=-65536), r"args\[0\] crop"),
    ("crop far left", dict(CROP_LEFT=-65536), r"args\[0\] crop"),
    ("crop too high", dict(CROP_H=65536), r"args\[0\] crop"),
    ("crop too wide", dict(CROP_W=65536), r"args\[0\] crop"),
    ("crop zero height", dict(CROP_H=0), r"args\[0\] crop"),
    ("crop negative width", dict(CROP_W=-3), r"args\[0\] crop"),
    ("crop overflow", dict(CROP_TOP=INT32_MAX, CROP_H=INT32_MAX), r"args\[0\] crop"),
    ("flip 2", dict(FLIP=2), r"flip"),
    ("fill 256", dict(FILL_plus2=256), r"fill"),
    ("fill -1", dict(FILL=-1), r"fill"),
    ("erase outside", dict(ERASE_TOP=8, ERASE_H=5), r"erase box"),
    ("erase right", dict(ERASE_LEFT=5, ERASE_W=6), r"erase box"),
    ("erase negative", dict(ERASE_TOP=-1), r"erase box"),
    ("erase negative size", dict(ERASE_H=-2, ERASE_W=3), r"erase box"),
    ("erase half empty", dict(ERASE_H=0, ERASE_W=3), r"erase box"),
    ("erase overflow", dict(ERASE_LEFT=INT32_MAX, ERASE_W=INT32_MAX), r"erase box"),
    ("erase value 256", dict(ERASE_VALUE_plus1=256), r"erase value"),
    ("erase value mixed", dict(ERASE_VALUE=-1), r"erase value"),
    ("num_ops 5", dict(NUM_OPS=5), r"num_ops"),
    ("num_ops -1", dict(NUM_OPS=-1), r"num_ops"),
    ("op id 19", dict(OPS=19), r"unknown op id"),
    ("grayscale formula", dict(OPS=17, OPS_plus1=2), r"grayscale formula"),
    ("blur taps sum", dict(OPS=18, OPS_plus1=16383), r"blur taps"),
    ("blur taps negative", dict(OPS=18, OPS_plus1=-16384), r"blur taps"),
    ("hue shift", dict(OPS=16, OPS_plus1=32769), r"hue shift"),
    ("hue shift negative", dict(OPS=16, OPS_plus1=-32769), r"hue shift"),
    ("op id -1", dict(OPS=-1), r"unknown op id"),
    ("op id last slot", {"OPS_plus24": 99}, r"unknown op id"),
    ("negative factor", dict(OPS_plus1=-1), r"factor"),
    ("posterize mask", dict(OPS_plus9=256), r"posterize"),
    ("solarize threshold", dict(OPS_plus17=257), r"solarize"),
    ("solarize negative", dict(OPS_plus17=-1), r"solarize"),
    ("posterize mask not a prefix", dict(OPS_plus9=7), r"posterize mask"),
    ("interpolation 3", {"OPS_plus31": 3}, r"op 3 interpolation"),
    ("interpolation -1", {"OPS_plus31": -1}, r"op 3 interpolation"),
    ("interpolation of a colour op", dict(OPS_plus7=1), r"op 0 interpolation must be 0"),
    ("resize filter 2", dict(RESIZE_FILTER=2), r"resize filter"),
    ("resize filter -1", dict(RESIZE_FILTER=-1), r"resize filter"),
    ("pad fill 256", dict(PAD_FILL_plus2=256), r"pad fill\[2\]"),
    ("pad fill -1", dict(PAD_FILL=-1), r"pad fill\[0\]"),
]


@compiled
@pytest.mark.parametrize("desc,fields,match", TARGETED, ids=[t[0] for t in TARGETED])
def test_targeted_bad_rows(desc, fields, match):
    img = [_util.smooth_image(30, 40, 3)]
    base = _valid_row()
    assert torch.ops.reinforced_data.augment(img, _rows([base]), 12, 10).shape == (1, 3, 12, 10)
    _expect_error(img, [_with(base, **fields)], match)
    # the bad row is named by its index in a batch
    _expect_error(img * 3, [base, base, _with(base, **fields)], r"args\[2\]")


# ------------------------------------------------------------------ encode errors
ENCODE_ERRORS = [  # (mutate params in place, source sizes or None, message regex)
    (lambda p: p["crop"].__setitem__(1, (40, 0, 20, 10)), [(50, 60)] * 2, r"params\['crop'\] of view 1"),
    (lambda p: p["crop"].__setitem__(0, (0, 55, 10, 10)), [(50, 60)] * 2, r"params\['crop'\] of view 0"),
    (lambda p: p["crop"].__setitem__(0, (0, 0, 0, 10)), None, r"params\['crop'\] of view 0"),
    (lambda p: p["crop"].__setitem__(1, (0, 0, 10, 0)), None, r"params\['crop'\] of view 1"),
    (lambda p: p["flip"].__setitem__(0, 2), None, r"params\['flip'\]"),
    (lambda p: p["ra_op"].__setitem__((0, 1), 14), None, r"params\['ra_op'\]"),
    (lambda p: p["ra_mag"].__setitem__((1, 0), 31), None, r"params\['ra_mag'\]"),
    (lambda p: p["ra_mag"].__setitem__((1, 0), -31), None, r"params\['ra_mag'\]"),
    (lambda p: p["erase"].__setitem__(1, (30, 0, 5, 5)), None, r"params\['erase'\] of view 1"),
    (lambda p: p["erase"].__setitem__(0, (0, 38, 5, 5)), None, r"params\['erase'\] of view 0"),
]


@pytest.mark.parametrize("mutate,sizes,match", ENCODE_ERRORS, ids=[e[2] for e in ENCODE_ERRORS])
def test_encode_errors_name_the_field(mutate, sizes, match):
    policy, params = _policy_and_params()
    mutate(params)
    with pytest.raises(ValueError, match=match):
        _args.encode(params, policy, sizes)


def test_encode_mix_errors_name_the_field():
    policy, params = _policy_and_params()
    p = params.copy()
    p["mix_mode"][0] = 3
    with pytest.raises(ValueError, match=r"params\['mix_mode'\]"):
        _args.encode_mix(p, policy)
    p = params.copy()
    p["mix_mode"][1] = 2
    p["mix_box"][1] = (30, 0, 5, 5)
    with pytest.raises(ValueError, match=r"params\['mix_box'\] of view 1"):
        _args.encode_mix(p, policy)
    with pytest.raises(ValueError, match="mixing"):
        _args.encode_mix(Policy().sample(np.random.default_rng(0), 2, 9, 9), Policy())


def test_encode_structural_errors():
    policy = Policy(ra_num_ops=2)
    with pytest.raises(ValueError, match="crop"):
        _args.encode(np.zeros(2, dtype=[("flip", np.uint8)]), policy)
    too_many = np.zeros(1, dtype=[("crop", np.uint16, (4,)), ("flip", np.uint8), ("ra_op", np.uint8, (5,)),
                                  ("ra_mag", np.int8, (5,))])
    too_many["crop"] = (0, 0, 4, 4)
    with pytest.raises(ValueError, match=r"params\['ra_op'\]"):
        _args.encode(too_many, policy)


# ------------------------------------------------------------------ the per-record fast path
def _fast_policies() -> dict[str, Policy]:
    """Every preset, and the settings the presets leave out: torchvision RandAugment with bilinear
    geometric ops and other fills, a padded crop with its own fill, timm with a fixed interpolation
    and with mmax/ra_prob, timm's AutoAugment, colour jitter with hue, jitter after timm's ops."""
    out = {name: Policy.preset(name) for name in sorted(policy_mod.PRESETS)}
    out.update({
        "tv bilinear fills": Policy.preset("rrc_ra_re", ra_interpolation="bilinear", fill=(1, 2, 3),
                                           erase_value=(9, 8, 7), interpolation="bicubic"),
        "padded fill": Policy.preset("paper_cifar_ra_re", pad_fill=(5, 6, 7)),
        "timm bicubic": Policy.from_timm(auto_augment="rand-m9-mstd0.5", interpolation="bicubic"),
        "timm mmax": Policy.from_timm(interpolation="random", auto_augment="rand-m9-n3-mstd101-mmax12-inc1",
                                      ra_prob=0.8),
        "timm autoaugment": Policy.from_timm(auto_augment="original", re_prob=0),
        "jitter hue": Policy.from_timm(auto_augment=None, re_prob=0, color_jitter=(0.3, 0.2, (0.5, 1.0), 0.05),
                                       color_jitter_prob=0.8),
        "timm ops + jitter": Policy.from_timm(auto_augment="rand-n1-m9", force_color_jitter=True,
                                              color_jitter=(0.4, 0.4, 0.4)),
        "mixing, switch": Policy.preset("rrc_ra_re_mix", erase_value="random"),
    })
    return out


FAST_POLICIES = _fast_policies()


def _source_size(policy: Policy, g: np.random.Generator) -> tuple[int, int]:
    oh, ow = policy.output_size
    low = (oh - 2 * policy.crop_padding, ow - 2 * policy.crop_padding) if policy.crop_mode == "padded" else (1, 1)
    return int(g.integers(max(1, low[0]), 600)), int(g.integers(max(1, low[1]), 600))


def _outcome(fn):
    """("rows", tensor) or ("error", type and message) of ``fn()``."""
    try:
        return "rows", fn()
    except Exception as e:  # noqa: BLE001 - the fast path must give the very same exception
        return "error", (type(e), str(e))


def _same_outcome(got, want, what):
    assert got[0] == want[0], (what, got, want)
    if got[0] == "rows":
        assert got[1].dtype == torch.int32 and torch.equal(got[1], want[1]), what
    else:
        assert got[1] == want[1], what


@pytest.mark.parametrize("name", list(FAST_POLICIES))
def test_every_policy_has_a_fast_plan_that_encode_takes(name, monkeypatch):
    """The plan exists for the policy's records (and, without mixing, for its records with mixing
    fields) and encode uses it: with encode_reference broken, one valid record still encodes."""
    policy = FAST_POLICIES[name]
    dtypes = [policy.param_dtype()]
    if not policy.mixing:
        dtypes.append(np.dtype(policy.param_dtype().descr + [("mix_mode", "u1"), ("mix_lam", "u1"),
                                                            ("mix_box", "<u2", (4,))]))
    g = np.random.default_rng(5)
    h, w = _source_size(policy, g)
    for dtype in dtypes:
        assert _args._fast_plan(policy, dtype) is not None, dtype
    recs = policy.sample(g, 3, h, w)
    want = _args.encode_reference(recs, policy, [(h, w)] * 3)
    want_mix = _args.encode_mix_reference(recs, policy) if policy.mixing else None

    def broken(*args, **kwargs):
        raise AssertionError("encode_reference ran for a valid record")

    monkeypatch.setattr(_args, "encode_reference", broken)
    monkeypatch.setattr(_args, "encode_mix_reference", broken)
    for j in range(3):
        assert torch.equal(_args.encode(recs[j:j + 1], policy, [(h, w)]), want[j:j + 1])
        assert torch.equal(_args.encode(recs[j], policy), _args.encode(recs[j:j + 1], policy))  # a record scalar
        if want_mix is not None:
            assert torch.equal(_args.encode_mix(recs[j:j + 1], policy), want_mix[j:j + 1])
    assert torch.equal(_args.encode(recs[:2], policy, [(h, w)] * 2), want[:2])


@pytest.mark.parametrize("name", list(FAST_POLICIES))
def test_fast_rows_equal_the_reference_on_sampled_records(name):
    """Sampled records of every family, one at a time and a few at once, at many source sizes: the
    fast path's rows are encode_reference's, bit for bit (and encode_mix's for mixing policies)."""
    policy = FAST_POLICIES[name]
    g = np.random.default_rng(abs(hash(name)) % 2**32)
    for _ in range(12):
        h, w = _source_size(policy, g)
        recs = policy.sample(g, 24, h, w)
        want = _args.encode_reference(recs, policy, [(h, w)] * 24)
        plan = _args._fast_plan(policy, recs.dtype)
        for j in range(24):
            got = plan.encode(recs[j:j + 1], [(h, w)])
            assert got is not None and torch.equal(got, want[j:j + 1]), (name, j, recs[j])
            assert torch.equal(plan.encode(recs[j:j + 1], None), want[j:j + 1])
        n = _args.FAST_MAX_RECORDS
        assert torch.equal(plan.encode(recs[:n], [(h, w)] * n), want[:n])
        assert torch.equal(_args.encode(recs[:n], policy, [(h, w)] * n), want[:n])
        if policy.mixing:
            want_mix = _args.encode_mix_reference(recs, policy)
            for j in range(24):
                assert torch.equal(plan.encode_mix(recs[j:j + 1]), want_mix[j:j + 1]), (name, j, recs[j])
            assert torch.equal(_args.encode_mix(recs[:n], policy), want_mix[:n])


def _corruptions(dtype: np.dtype, g: np.random.Generator) -> list:
    """(field, element, value) to write into a record: each field's extremes, small values around
    the valid ranges, and random values of its type."""
    out = []
    for name in dtype.names:
        ft = dtype.fields[name][0]
        count = int(np.prod(ft.shape)) if ft.shape else 1
        info = np.iinfo(ft.base)
        values = {info.min, info.max, 0, 1, 2, 3, 4, 255, 256, -1, -2, -3, 31, 65535, 65536, -32768, 32768}
        values |= {int(v) for v in g.integers(-40, 300, 6)}
        values |= {int(v) for v in g.integers(info.min, info.max, 4, endpoint=True)}
        for v in sorted(values):
            if info.min <= v <= info.max:
                out.append((name, int(g.integers(count)), v))
    return out


@pytest.mark.parametrize("name", list(FAST_POLICIES))
def test_corrupted_records_give_the_reference_rows_or_its_error(name):
    """Each field of valid records set to extreme, near-range and random values (alone, and as one
    record of three): encode gives what encode_reference gives, rows or the very same error, and the
    plan itself never accepts a record the reference refuses."""
    policy = FAST_POLICIES[name]
    g = np.random.default_rng(7)
    plan_of = _args._fast_plan
    refused = accepted = 0
    for case, (field, element, value) in enumerate(_corruptions(policy.param_dtype(), g)):
        h, w = _source_size(policy, g)
        recs = policy.sample(g, 3, h, w)
        flat = recs[field].reshape(3, -1)
        flat[1, element] = value
        recs[field] = flat.reshape(recs[field].shape)
        sizes = [(h, w)] * 3 if case % 3 else None
        if case % 5 == 0 and sizes:  # a source smaller than the crop expects
            sizes[1] = (max(1, h // 3), max(1, w // 3))
        plan = plan_of(policy, recs.dtype)
        for part, part_sizes in ((recs[1:2], None if sizes is None else sizes[1:2]), (recs, sizes)):
            want = _outcome(lambda: _args.encode_reference(part, policy, part_sizes))
            got = _outcome(lambda: _args.encode(part, policy, part_sizes))
            _same_outcome(got, want, (name, field, element, value, part_sizes))
            fast = plan.encode(part, part_sizes)
            if want[0] == "error":
                refused += 1
                assert fast is None, (name, field, value)
            elif fast is not None:
                accepted += 1
                assert torch.equal(fast, want[1])
            if policy.mixing:
                want = _outcome(lambda: _args.encode_mix_reference(part, policy))
                _same_outcome(_outcome(lambda: _args.encode_mix(part, policy)), want, (name, field, value))
                if want[0] == "error":
                    assert plan.encode_mix(part) is None
    assert refused > 10 and accepted > 10  # both ways were taken


def test_records_the_fast_path_does_not_know_go_to_the_reference():
    """A layout other than the policy's (a float field, another type, a field of another policy, an
    unknown field) has no plan; encode gives the reference's rows or its error."""
    policy = Policy.preset("rrc_ra_re")
    good = policy.sample(np.random.default_rng(0), 2, 300, 400)
    floats = np.zeros(2, dtype=[("crop", np.float32, (4,)), ("flip", np.uint8), ("ra_op", np.uint8, (2,)),
                                ("ra_mag", np.int8, (2,)), ("erase", np.uint16, (4,))])
    wide = np.zeros(2, dtype=[("crop", np.int64, (4,)), ("flip", np.uint8), ("ra_op", np.int32, (2,)),
                              ("ra_mag", np.int8, (2,)), ("erase", np.uint16, (4,))])
    extra = np.zeros(2, dtype=good.dtype.descr + [("note", np.uint8)])
    for recs in (floats, wide, extra):
        for n in good.dtype.names:
            recs[n] = good[n]
    assert _args._fast_plan(policy, floats.dtype) is None and _args._fast_plan(policy, extra.dtype) is None
    with pytest.raises(ValueError, match=r"params\['crop'\] has dtype float32"):
        _args.encode(floats[:1], policy)
    assert torch.equal(_args.encode(wide[:1], policy), _args.encode_reference(good[:1], policy))
    assert torch.equal(_args.encode(extra[:1], policy), _args.encode_reference(good[:1], policy))
    big = np.zeros(1, dtype=[("crop", np.int64, (4,)), ("flip", np.uint8)])
    big["crop"] = (2**40, 0, 4, 4)  # beyond int32: whatever the reference does with it
    _same_outcome(_outcome(lambda: _args.encode(big, Policy())), _outcome(lambda: _args.encode_reference(big, Policy())),
                  "int64 crop")


def test_a_plan_that_disagrees_with_the_reference_is_not_used(monkeypatch, caplog):
    """The plan is checked against encode_reference when built: a plan giving other rows is
    dropped with a warning, and encode gives the reference's rows."""
    policy = Policy.preset("rrc_ra_re", fill=(3, 4, 5))
    row = _args._FastPlan._row

    def off_by_one(self, rec, size):
        out = row(self, rec, size)
        if out is not None:
            out[_args.FILL] += 1
        return out

    monkeypatch.setattr(_args._FastPlan, "_row", off_by_one)
    with caplog.at_level("WARNING", logger="reinforced_data._args"):
        assert _args._FastPlan.build(policy, policy.param_dtype()) is None
    assert "disagrees with encode_reference" in caplog.text


@pytest.mark.parametrize("name", ["rrc_ra_re", "paper_cifar_ra_re", "timm"])
def test_a_crop_at_the_edge_of_its_source_and_one_pixel_past_it(name):
    """The crop box against the source size, at the boundary: a source exactly as large as the crop
    needs (less the padding) encodes, one pixel smaller in either side is the reference's error."""
    policy = FAST_POLICIES[name]
    pad = policy.crop_padding
    recs = policy.sample(np.random.default_rng(3), 16, 300, 400)
    for j in range(16):
        top, left, ch, cw = (int(v) for v in recs["crop"][j])
        edge = (max(1, top + ch - pad), max(1, left + cw - pad))
        one = recs[j:j + 1]
        assert torch.equal(_args.encode(one, policy, [edge]), _args.encode_reference(one, policy, [edge]))
        for smaller in ((edge[0] - 1, edge[1]), (edge[0], edge[1] - 1)):
            if min(smaller) < 1:
                continue
            want = _outcome(lambda: _args.encode_reference(one, policy, [smaller]))
            assert want[0] == "error"
            _same_outcome(_outcome(lambda: _args.encode(one, policy, [smaller])), want, (j, smaller))


def test_a_plan_that_cannot_be_built_leaves_encode_to_the_reference(monkeypatch, caplog):
    """An exception while a plan is built or checked costs speed, never an encode: encode gives the
    reference's rows, and says once why it could not build the plan."""
    policy = Policy.preset("rrc_ra_re", fill=(6, 7, 8))
    recs = policy.sample(np.random.default_rng(2), 1, 50, 60)

    def broken(self):
        raise RuntimeError("no sampling today")

    monkeypatch.setattr(_args._FastPlan, "_agrees_with_reference", broken)
    with caplog.at_level("WARNING", logger="reinforced_data._args"):
        assert torch.equal(_args.encode(recs, policy, [(50, 60)]), _args.encode_reference(recs, policy, [(50, 60)]))
    assert "could not be built" in caplog.text and "no sampling today" in caplog.text
    assert _args._fast_plan(policy, recs.dtype) is None  # cached: not rebuilt on every call
