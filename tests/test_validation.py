"""Bad records and bad policies: each is a one-sentence ConfigError naming the field, on both backends.

Every record check lives in ``_args.encode`` / ``encode_mix`` and in ``replay``, which both
backends go through, so the compiled op and the reference refuse exactly the same rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reinforced_data import Policy
from reinforced_data.errors import ConfigError
from reinforced_data.policy import RA_OPS
from reinforced_data._replay import replay

BACKENDS = ["reference", pytest.param("compiled", marks=pytest.mark.compiled)]
SIZE = (40, 48)
OUT = (16, 20)


def _images(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8, generator=g) for _ in range(n)]


def _records(policy: Policy, n: int = 3, seed: int = 1) -> np.ndarray:
    return policy.sample(np.random.default_rng(seed), n, *SIZE)


RA = Policy.preset("rrc_ra_re", output_size=OUT)
MIX = Policy.preset("rrc_ra_re_mix", output_size=OUT)
PLAIN = Policy.preset("rrc", output_size=OUT)


def _set_op(p, view, slot, op, mag):
    p["ra_op"][view, slot] = RA_OPS.index(op)
    p["ra_mag"][view, slot] = mag


def _widened(p: np.ndarray, field: str, dtype) -> np.ndarray:
    """The same records with ``field`` stored in a wider (signed) integer type."""
    descr = [(n, dtype if n == field else p.dtype.fields[n][0].base, p.dtype.fields[n][0].shape) for n in p.dtype.names]
    out = np.zeros(p.shape, dtype=[(n, t, s) if s else (n, t) for n, t, s in descr])
    for n in p.dtype.names:
        out[n] = p[n]
    return out


def _bad_records():
    """(what, policy, make records, expected message fragment)."""
    rows = []

    def row(what, policy, edit, fragment):
        def make(policy=policy, edit=edit):
            p = _records(policy)
            out = edit(p)
            return p if out is None else out
        rows.append(pytest.param(policy, make, fragment, id=what))

    row("posterize-negative", RA, lambda p: _set_op(p, 1, 0, "Posterize", -3), r"view 1 \(slot 0\) holds -3 for Posterize")
    row("solarize-negative", RA, lambda p: _set_op(p, 2, 1, "Solarize", -9), r"view 2 \(slot 1\) holds -9 for Solarize")
    row("identity-magnitude", RA, lambda p: _set_op(p, 0, 0, "Identity", 4), r"holds 4 for Identity, whose magnitude must be 0")
    row("equalize-magnitude", RA, lambda p: _set_op(p, 0, 1, "Equalize", -1), r"for Equalize, whose magnitude must be 0")
    row("autocontrast-magnitude", RA, lambda p: _set_op(p, 1, 1, "AutoContrast", 30), r"for AutoContrast")
    row("magnitude-beyond-bins", RA, lambda p: _set_op(p, 0, 0, "Rotate", 31), r"params\['ra_mag'\] holds 31; magnitudes must lie in \(-31, 31\) \(view 0, slot 0\)")
    row("magnitude-minus-128", RA, lambda p: _set_op(p, 0, 0, "Rotate", -128), r"params\['ra_mag'\] holds -128")
    row("unknown-op", RA, lambda p: p["ra_op"].__setitem__((2, 0), 14), r"op id 14; ids must lie in \[0, 13\] \(view 2, slot 0\)")
    row("flip-2", PLAIN, lambda p: p["flip"].__setitem__(1, 2), r"params\['flip'\] must be 0 or 1; view 1 holds 2")
    row("crop-outside", PLAIN, lambda p: p["crop"].__setitem__(0, (30, 0, 20, 10)), r"params\['crop'\] of view 0 .* lies outside its 40x48 source image")
    row("crop-empty", PLAIN, lambda p: p["crop"].__setitem__(2, (0, 0, 0, 10)), r"params\['crop'\] of view 2 is \[0, 0, 0, 10\]")

    def neg_crop(p):
        q = _widened(p, "crop", np.int32)
        q["crop"][1] = (-1, 0, 10, 10)
        return q
    row("crop-negative", PLAIN, neg_crop, r"params\['crop'\] of view 1 is \[-1, 0, 10, 10\]: top and left must be >= 0")
    row("erase-outside", RA, lambda p: p["erase"].__setitem__(0, (10, 0, 7, 3)), r"params\['erase'\] of view 0 .* lies outside the 16x20 output")

    def neg_erase(p):
        q = _widened(p, "erase", np.int32)
        q["erase"][2] = (0, -2, 3, 3)
        return q
    row("erase-negative", RA, neg_erase, r"params\['erase'\] of view 2 is \[0, -2, 3, 3\]: every value must be >= 0")

    def float_crop(p):
        return _widened(p, "crop", np.float32)
    row("crop-float", PLAIN, float_crop, r"params\['crop'\] has dtype float32; it must hold integers")
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("policy,make,fragment", _bad_records())
def test_bad_record_is_refused(backend, policy, make, fragment):
    params = make()
    with pytest.raises(ConfigError, match=fragment) as err:
        replay(_images(len(params)), params, policy, backend=backend)
    assert "\n" not in str(err.value)


def _bad_mix():
    rows = []

    def row(what, edit, fragment, partners=None):
        rows.append(pytest.param(edit, fragment, partners, id=what))

    def widen_mode(p):
        q = _widened(p, "mix_mode", np.int16)
        q["mix_mode"][1] = -1
        return q

    def widen_lam(p):
        q = _widened(p, "mix_lam", np.int16)
        q["mix_mode"][0] = 1
        q["mix_lam"][0] = 256
        return q

    def neg_box(p):
        q = _widened(p, "mix_box", np.int32)
        q["mix_mode"][2] = 2
        q["mix_box"][2] = (-1, 0, 4, 4)
        return q

    def outside_box(p):
        p["mix_mode"][0] = 2
        p["mix_box"][0] = (10, 10, 8, 4)

    row("mix-mode-3", lambda p: p["mix_mode"].__setitem__(0, 3), r"params\['mix_mode'\] holds 3 \(view 0\)")
    row("mix-mode-negative", widen_mode, r"params\['mix_mode'\] holds -1 \(view 1\)")
    row("lambda-256", widen_lam, r"params\['mix_lam'\] of view 0 holds 256")
    row("mix-box-negative", neg_box, r"params\['mix_box'\] of view 2 is \[-1, 0, 4, 4\]")
    row("mix-box-outside", outside_box, r"params\['mix_box'\] of view 0 .* lies outside the 16x20 output")
    row("partner-count", lambda p: None, r"got 3 records but 2 partners and 2 partner records", partners=2)
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edit,fragment,partners", _bad_mix())
def test_bad_mix_record_is_refused(backend, edit, fragment, partners):
    params = _records(MIX)
    out = edit(params)
    params = params if out is None else out
    n = partners or len(params)
    pparams = _records(MIX, n, seed=5)
    if params.dtype != pparams.dtype:
        pparams = pparams.astype(params.dtype)
    with pytest.raises(ConfigError, match=fragment):
        replay(_images(len(params)), params, MIX, partners=_images(n, seed=3), partner_params=pparams, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_records_of_another_policy_are_refused(backend):
    params = _records(PLAIN)  # rrc records replayed under rrc_ra_re would skip RandAugment and erasing
    with pytest.raises(ConfigError, match=r"params have fields \['crop', 'flip'\] .* but this policy's records have fields \['crop', 'flip', 'ra_op', 'ra_mag', 'erase'\]"):
        replay(_images(3), params, RA, backend=backend)
    with pytest.raises(ConfigError, match="this policy's records have fields"):
        replay(_images(3), _records(RA), PLAIN, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equivalent_record_dtypes_replay_the_same_bytes(backend):
    params = _records(RA, 4)
    expected = replay(_images(4), params, RA, backend=backend)
    packed_be = params.astype(RA.param_dtype().newbyteorder(">"))
    aligned = params.astype(np.dtype(RA.param_dtype().descr, align=True))
    for other in (packed_be, aligned):
        assert other.dtype != params.dtype
        assert torch.equal(replay(_images(4), other, RA, backend=backend), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_edge_magnitudes_are_accepted(backend):
    params = _records(RA)
    nb = RA.ra_num_magnitude_bins
    _set_op(params, 0, 0, "Posterize", nb - 1)
    _set_op(params, 1, 0, "Solarize", 0)
    _set_op(params, 2, 0, "Rotate", -(nb - 1))
    _set_op(params, 2, 1, "Identity", 0)
    out = replay(_images(3), params, RA, backend=backend)
    assert out.shape == (3, 3, *OUT)


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        pytest.param(dict(mean=(NAN, 0.4, 0.4)), r"mean=\(nan, 0.4, 0.4\) must be finite", id="nan-mean"),
        pytest.param(dict(std=(INF, 0.2, 0.2)), r"std=\(inf, 0.2, 0.2\) must be finite", id="inf-std"),
        pytest.param(dict(mixup_alpha=INF), r"mixup_alpha=inf must be finite", id="inf-mixup-alpha"),
        pytest.param(dict(cutmix_alpha=NAN), r"cutmix_alpha=nan must be finite", id="nan-cutmix-alpha"),
        pytest.param(dict(crop_ratio=(0.5, INF)), r"crop_ratio=\(0.5, inf\) must be finite", id="inf-crop-ratio"),
        pytest.param(dict(erase_ratio=(0.3, INF)), r"erase_ratio=\(0.3, inf\) must be finite", id="inf-erase-ratio"),
        pytest.param(dict(flip_prob=NAN), r"flip_prob=nan must be finite", id="nan-flip-prob"),
        pytest.param(dict(crop_ratio=(1e-300, 1.0)), r"crop_ratio=.* must lie within \[1e-06, 1e\+06\]", id="tiny-crop-ratio"),
        pytest.param(dict(erase_ratio=(1.0, 1e300)), r"erase_ratio=.* must lie within", id="huge-erase-ratio"),
        pytest.param(dict(std=(1e-300, 0.2, 0.2)), r"std=.* must be at least 1e-06", id="tiny-std"),
        pytest.param(dict(std=(0.0, 0.2, 0.2)), r"std=\(0.0, 0.2, 0.2\) must be positive", id="zero-std"),  # existing message
    ],
)
def test_bad_policy_is_refused_at_construction(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        Policy(**overrides)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=fragment):  # the same check on a policy read back from a file
        Policy.from_dict({**Policy().to_dict(), **overrides})


def _row_edits():
    from reinforced_data import _args as A

    solarize, posterize = RA_OPS.index("Solarize"), RA_OPS.index("Posterize")
    op0 = A.OPS
    return [
        # boxes may reach outside the image (padded crops read the pad fill there), within 16 bits
        ("crop-top-beyond-16-bits", {A.CROP_TOP: -65536}),
        ("crop-height-beyond-16-bits", {A.CROP_H: 65536}),
        ("resize-filter-2", {A.RESIZE_FILTER: 2}),
        ("pad-fill-256", {A.PAD_FILL + 1: 256}),
        ("flip-2", {A.FLIP: 2}),
        ("fill-256", {A.FILL: 256}),
        ("erase-value-mixed", {A.ERASE_VALUE: -1}),
        ("erase-box-negative", {A.ERASE_TOP: -1, A.ERASE_H: 2, A.ERASE_W: 2}),
        ("num-ops-5", {A.NUM_OPS: 5}),
        ("op-id-19", {A.NUM_OPS: 1, op0: 19}),
        ("interp-3", {A.NUM_OPS: 1, op0: 5, op0 + A.OP_INTERP: 3}),
        ("solarize-negative-threshold", {A.NUM_OPS: 1, op0: solarize, op0 + 1: -1}),
        ("posterize-mask-256", {A.NUM_OPS: 1, op0: posterize, op0 + 1: 256}),
        ("brightness-negative-factor", {A.NUM_OPS: 1, op0: RA_OPS.index("Brightness"), op0 + 1: -5}),
    ]


@pytest.mark.compiled
@pytest.mark.parametrize("what,edit", _row_edits(), ids=[w for w, _ in _row_edits()])
def test_direct_op_calls_refuse_the_same_rows(what, edit):
    """Called directly on kernel rows, the compiled op and the reference refuse the same rows."""
    from reinforced_data import _args, _reference

    params = _records(PLAIN, 2)
    rows = _args.encode(params, PLAIN, [SIZE, SIZE])
    images = _images(2)
    assert torch.equal(torch.ops.reinforced_data.augment(images, rows, *OUT), _reference.augment(images, rows, *OUT))
    for col, value in edit.items():
        rows[1, col] = value
    with pytest.raises(RuntimeError, match=r"augment: args\[1\]"):
        torch.ops.reinforced_data.augment(images, rows, *OUT)
    with pytest.raises(RuntimeError, match=r"augment: args\[1\]"):
        _reference.augment(images, rows, *OUT)


@pytest.mark.compiled
@pytest.mark.parametrize("row", [(4, 0, 0, 0, 0, 0), (3, 0, 10, 0, 7, 2), (1, 256, 0, 0, 0, 0), (1, -1, 0, 0, 0, 0), (2, 255, -1, 0, 2, 2), (2, 0, 10, 0, 7, 2)])
def test_direct_mix_calls_refuse_the_same_rows(row):
    from reinforced_data import _reference

    a = torch.stack(_images(2, seed=1))[:, :, :OUT[0], :OUT[1]].contiguous()
    b = torch.stack(_images(2, seed=2))[:, :, :OUT[0], :OUT[1]].contiguous()
    args = torch.tensor([(0, 255, 0, 0, 0, 0), row], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"mix: args\[1\]"):
        torch.ops.reinforced_data.mix(a, b, args)
    with pytest.raises(RuntimeError, match=r"mix: args\[1\]"):
        _reference.mix(a, b, args)
