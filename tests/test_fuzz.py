"""Bounded kernel fuzz: random policies, records and image sizes; compiled bytes == reference bytes.

The fuzz runs in a subprocess (``python tests/test_fuzz.py --cases N --seed S``), so a crash
in the kernels fails this test instead of killing the pytest run. The same driver runs
under an AddressSanitizer/UBSan build of the C++ kernels in ``scripts/fuzz_asan.sh``
(``--asan-lib PATH`` loads that build instead of ``reinforced_data._C``).

Records are drawn two ways: sampled by the policy, and raw (every field uniform over its
valid range: crops anywhere in the source, every op with every magnitude it accepts, erase
and CutMix boxes anywhere in the output), so edges the sampler rarely reaches are covered.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _random_policy(g: np.random.Generator):
    from reinforced_data import Policy

    mixing = g.random() < 0.3
    return Policy(
        output_size=(int(g.integers(1, 48)), int(g.integers(1, 48))),
        ra_num_ops=int(g.integers(0, 5)),
        ra_magnitude=int(g.integers(0, 31)),
        erase_prob=float(g.choice([0.0, 0.5, 1.0])),
        erase_value="random" if g.random() < 0.3 else tuple(int(v) for v in g.integers(0, 256, 3)),
        fill=tuple(int(v) for v in g.integers(0, 256, 3)),
        mixup_alpha=0.2 if mixing else 0.0,
        cutmix_alpha=1.0 if mixing and g.random() < 0.7 else 0.0,
    )


def _raw_records(g: np.random.Generator, policy, sizes: list[tuple[int, int]]) -> np.ndarray:
    """Records with every field uniform over what ``_args.encode`` accepts."""
    from reinforced_data._args import _mag_bounds

    _MAG_LOW, _MAG_HIGH = _mag_bounds(policy.ra_ops())  # the ops of the policy's family

    b = len(sizes)
    p = np.zeros(b, dtype=policy.param_dtype())
    oh, ow = policy.output_size
    for i, (h, w) in enumerate(sizes):
        ch, cw = int(g.integers(1, h + 1)), int(g.integers(1, w + 1))
        p["crop"][i] = (g.integers(0, h - ch + 1), g.integers(0, w - cw + 1), ch, cw)
    p["flip"] = g.integers(0, 2, b)
    names = p.dtype.names
    if "ra_op" in names:
        nb = policy.ra_num_magnitude_bins
        ops = g.integers(0, len(_MAG_LOW), p["ra_op"].shape)
        lo, hi = _MAG_LOW[ops] * (nb - 1), np.where(_MAG_HIGH[ops] > 0, nb - 1, 0)
        p["ra_op"] = ops
        p["ra_mag"] = lo + np.floor(g.random(ops.shape) * (hi - lo + 1)).astype(np.int64)
    for field in ("erase", "mix_box"):
        if field in names:
            eh, ew = g.integers(0, oh + 1, b), g.integers(0, ow + 1, b)
            p[field] = np.stack([g.integers(0, oh - eh + 1), g.integers(0, ow - ew + 1), eh, ew], axis=1)
    if "erase_seed" in names:
        p["erase_seed"] = g.integers(0, 1 << 16, b)
    if "mix_mode" in names:
        p["mix_mode"] = g.integers(0, 3, b)
        p["mix_lam"] = g.integers(0, 256, b)
    return p


def _v2_fields(g: np.random.Generator, rows, sizes: list[tuple[int, int]]):
    """Kernel rows with the row-v2 fields drawn over their valid ranges, whatever the policy sampled:
    the resize filter, the pad fill, crops moved partly or wholly outside the source, the
    interpolation of geometric ops, and some op slots replaced by Invert / SolarizeAdd."""
    from reinforced_data import _args as A
    from reinforced_data._reference import KERNEL_OPS

    rows = rows.clone()
    for i, (h, w) in enumerate(sizes):
        r = rows[i]
        r[A.RESIZE_FILTER] = int(g.integers(2))
        r[A.PAD_FILL:A.PAD_FILL + 3] = torch_tensor(g.integers(0, 256, 3))
        if g.random() < 0.3:
            ch, cw = int(r[A.CROP_H]), int(r[A.CROP_W])
            r[A.CROP_TOP] = int(g.integers(-ch - 2, h + 3))
            r[A.CROP_LEFT] = int(g.integers(-cw - 2, w + 3))
        for s in range(int(r[A.NUM_OPS])):
            base = A.OPS + s * A.OP_STRIDE
            if KERNEL_OPS[int(r[base])] in A.GEOMETRIC:
                r[base + A.OP_INTERP] = int(g.integers(3))
            elif g.random() < 0.2:
                r[base:base + A.OP_STRIDE] = 0
                if g.random() < 0.5:
                    r[base] = KERNEL_OPS.index("Invert")
                else:
                    r[base] = KERNEL_OPS.index("SolarizeAdd")
                    r[base + 1], r[base + 2] = int(g.integers(0, 257)), int(g.integers(-255, 256))
    return rows


def torch_tensor(values):
    import torch

    return torch.as_tensor(np.asarray(values, dtype=np.int32))


def fuzz(cases: int, seed: int) -> int:
    """Run ``cases`` random batches; return the number of views compared. Raises on a difference."""
    import torch

    from reinforced_data import _args, _reference

    op = torch.ops.reinforced_data
    g = np.random.default_rng(seed)
    views = 0
    for case in range(cases):
        policy = _random_policy(g)
        b = int(g.integers(1, 5))
        sizes = [(int(g.integers(1, 70)), int(g.integers(1, 70))) for _ in range(b)]
        images = []
        for h, w in sizes:
            img = torch.from_numpy(g.integers(0, 256, (3, h, w), dtype=np.uint8))
            if g.random() < 0.5:  # the layout a loader hands over: channels-last strides
                img = img.permute(1, 2, 0).contiguous().permute(2, 0, 1)
            images.append(img)
        if g.random() < 0.5:
            params = np.concatenate([policy.sample(g, 1, h, w) for h, w in sizes])
        else:
            params = _raw_records(g, policy, sizes)
        oh, ow = policy.output_size
        rows = _args.encode(params, policy, sizes)
        if g.random() < 0.5:
            rows = _v2_fields(g, rows, sizes)
        got = op.augment(images, rows, oh, ow)
        want = _reference.augment(images, rows, oh, ow)
        if not torch.equal(got, want):
            raise AssertionError(f"case {case} (seed {seed}): augment differs; policy {policy.to_json()}, params {params!r}")
        if policy.mixing:
            mrows = _args.encode_mix(params, policy)
            if g.random() < 0.5:  # mode 3 (MixUp, then the CutMix box) on any row with a valid box
                mrows[:, _args.MIX_MODE] = 3
            partner = want.flip(0).contiguous()
            if not torch.equal(op.mix(got, partner, mrows), _reference.mix(want, partner, mrows)):
                raise AssertionError(f"case {case} (seed {seed}): mix differs; params {params!r}")
        views += b
    return views


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.compiled
def test_fuzz_compiled_equals_reference_in_a_subprocess():
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "test_fuzz.py"), "--cases", "300", "--seed", "20261130"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"fuzz exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "300 cases" in proc.stdout, proc.stdout
    assert time.monotonic() - start < 120


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--asan-lib", help="load this build of the op library instead of reinforced_data._C")
    args = ap.parse_args(argv)
    if args.asan_lib:
        os.environ["REINFORCED_DATA_DISABLE_COMPILED"] = "1"
        import torch

        torch.ops.load_library(args.asan_lib)
    else:
        import torch  # noqa: F401  (first: _C links against its libraries)
        import reinforced_data._C  # noqa: F401  (registers torch.ops.reinforced_data)
    start = time.monotonic()
    views = fuzz(args.cases, args.seed)
    print(f"{args.cases} cases, {views} views, 0 differences, {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
