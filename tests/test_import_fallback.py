"""reinforced_data._ops: the compiled op loads silently; without it nothing warns at import,
the first call with backend="auto" that falls back to the reference warns exactly once
(saying why and how to build), replay still gives the reference's bytes, and
backend="compiled" raises. Subprocesses, so each starts from a fresh import. Also: the
fake (meta) kernels check the shapes, dtypes and devices the C++ checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reinforced_data import _args, _ops

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, warnings
caught = {}
def phase(name, fn):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        out = fn()
    caught[name] = [w for w in ws]
    return out

def imports():
    import importlib
    import reinforced_data
    rmod = importlib.import_module("reinforced_data._replay")
    importlib.import_module("reinforced_data._replay")
    ops = importlib.import_module("reinforced_data._ops")
    return reinforced_data, rmod, ops, reinforced_data.compiled_available()
reinforced_data, rmod, ops, available = phase("import", imports)

import numpy as np, torch
from reinforced_data import Policy
policy = Policy.preset("timm", output_size=(24, 32))
g = np.random.default_rng(0)
images = [torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(h), dtype=torch.uint8)
          for h, w in [(40, 50), (30, 30)]]
params = np.concatenate([policy.sample(g, 1, 40, 50), policy.sample(g, 1, 30, 30)])
ref = phase("reference", lambda: rmod.replay(images, params, policy, out_dtype=torch.float32, backend="reference"))
out = phase("first_auto", lambda: rmod.replay(images, params, policy, out_dtype=torch.float32))
out2 = phase("more_auto", lambda: [reinforced_data.replay(images, params, policy) for _ in range(3)][-1])
def compiled():
    try:
        rmod.replay(images, params, policy, backend="compiled")
    except RuntimeError as e:
        return [type(e).__name__, str(e), isinstance(e, reinforced_data.ReinforcedDataError)]
compiled_error = phase("compiled", compiled)

# A child process started after the warning (a spawned DataLoader worker, say) stays quiet.
CHILD = '''
import json, warnings, numpy as np, torch
from reinforced_data import Policy, replay
policy = Policy.preset("timm", output_size=(24, 32))
with warnings.catch_warnings(record=True) as ws:
    warnings.simplefilter("always")
    replay([torch.zeros(3, 30, 30, dtype=torch.uint8)], policy.sample(np.random.default_rng(0), 1, 30, 30), policy)
print(json.dumps([str(w.message) for w in ws if "reinforced_data" in str(w.message)]))
'''
import subprocess, sys
child = subprocess.run([sys.executable, "-c", PRELUDE + CHILD], capture_output=True, text=True, check=True)
child_warnings = json.loads(child.stdout.strip().splitlines()[-1])

def ours(ws):
    return [{"category": w.category.__name__, "message": str(w.message), "filename": w.filename}
            for w in ws if "reinforced_data" in str(w.message)]
print(json.dumps({
    "available": available,
    "reason": ops.unavailable_reason(),
    "legacy_reason": rmod._COMPILED_ERROR,
    "warnings": {name: ours(ws) for name, ws in caught.items()},
    "shape": list(out.shape), "dtype": str(out.dtype),
    "same_as_reference": bool(torch.equal(out, ref)),
    "uint8_shape": list(out2.shape),
    "compiled_error": compiled_error,
    "child_warnings": child_warnings,
}))
"""


HIDE_COMPILED = r"""
import importlib.abc, sys
class HideCompiled(importlib.abc.MetaPathFinder):  # as if _C had never been built
    def find_spec(self, name, path=None, target=None):
        if name == "reinforced_data._C":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, HideCompiled())
"""


def _run(env_extra: dict[str, str], prelude: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (_ops.DISABLE_ENV, _ops._WARNED_ENV)}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    script = f"PRELUDE = {prelude!r}\n" + prelude + SCRIPT
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"subprocess failed:\n{res.stderr[-4000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check_fallback(r: dict, reason: str) -> None:
    assert r["available"] is False
    assert reason in r["reason"] and r["legacy_reason"] == r["reason"]
    w = r["warnings"]
    assert w["import"] == [], w["import"]  # silent at import
    assert w["reference"] == [], w["reference"]  # backend="reference" is no fallback
    assert len(w["first_auto"]) == 1, w["first_auto"]  # the first fallback warns ...
    assert w["more_auto"] == [], w["more_auto"]  # ... and only the first
    first = w["first_auto"][0]
    assert first["category"] == "RuntimeWarning"
    assert first["filename"] == "<string>", first  # points at the caller, not at the package
    msg = first["message"]
    assert reason in msg, msg  # says why it is unavailable
    assert "pip install --no-build-isolation" in msg, msg  # says how to build
    assert "reference" in msg, msg  # says what happens instead
    assert r["shape"] == [2, 3, 24, 32] and r["dtype"] == "torch.float32"
    assert r["uint8_shape"] == [2, 3, 24, 32]
    assert r["same_as_reference"]
    assert w["compiled"] == []
    name, text, ours = r["compiled_error"]
    assert name == "CompiledUnavailableError" and ours
    assert "unavailable" in text and reason in text and "pip install --no-build-isolation" in text
    assert r["child_warnings"] == []  # a child process started after the warning stays quiet


@pytest.mark.slow
@pytest.mark.subprocess
def test_disabled_compiled_is_silent_at_import_and_warns_once_on_fallback():
    r = _run({_ops.DISABLE_ENV: "1"})
    _check_fallback(r, "REINFORCED_DATA_DISABLE_COMPILED=1")


@pytest.mark.slow
@pytest.mark.subprocess
def test_missing_compiled_is_silent_at_import_and_warns_once_on_fallback():
    r = _run({}, prelude=HIDE_COMPILED)
    _check_fallback(r, "No module named 'reinforced_data._C'")


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.compiled
def test_compiled_import_is_silent():
    r = _run({})
    assert r["available"] is True and r["reason"] is None
    assert all(ws == [] for ws in r["warnings"].values()), r["warnings"]
    assert r["same_as_reference"]
    assert r["compiled_error"] is None
    assert r["child_warnings"] == []


# ------------------------------------------------------------------------- fake kernels
def _augment_inputs(device: str = "meta", b: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    images = [torch.zeros(3, 20 + i, 30, dtype=torch.uint8, device=device) for i in range(b)]
    args = torch.zeros(b, _args.NUM_ARGS, dtype=torch.int32)
    args[:, _args.CROP_H] = args[:, _args.CROP_W] = 1  # a valid row: a 1x1 crop, nothing else
    return images, args.to(device)


def _mix_inputs(device: str = "meta") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.zeros(2, 3, 8, 9, dtype=torch.uint8, device=device)
    return a, torch.zeros_like(a), torch.zeros(2, _args.NUM_MIX_ARGS, dtype=torch.int32, device=device)


def _normalize_inputs(device: str = "meta") -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.zeros(2, 3, 8, 9, dtype=torch.uint8, device=device),
            torch.zeros(3, 256, dtype=torch.float32, device=device))


def _bad_calls(device: str) -> list[tuple[str, str, tuple]]:
    """(op, message the C++ and the fake kernel both give, args) for inputs each check refuses."""
    images, args = _augment_inputs(device)
    a, b, margs = _mix_inputs(device)
    x, lut = _normalize_inputs(device)
    return [
        ("augment", r"augment: out_h and out_w must lie in \[1, 4096\]", (images, args, 0, 8)),
        ("augment", r"augment: out_h and out_w must lie in \[1, 4096\]", (images, args, 8, 4097)),
        ("augment", r"augment: args must be int32", (images, args.long(), 8, 8)),
        ("augment", r"augment: args must have shape \[B, 64\]", (images, args[:, :63], 8, 8)),
        ("augment", r"augment: args must have shape \[B, 64\]", (images, args[0], 8, 8)),
        ("augment", r"augment: got 1 images but 2 args rows", (images[:1], args, 8, 8)),
        ("augment", r"augment: images\[1\] must be uint8", ([images[0], images[1].float()], args, 8, 8)),
        ("augment", r"augment: images\[1\] must have shape \[3, H, W\]", ([images[0], images[1][:2]], args, 8, 8)),
        ("augment", r"augment: images\[1\] must have shape \[3, H, W\]", ([images[0], images[1][None]], args, 8, 8)),
        ("augment", r"augment: images\[0\] is empty", ([images[0][:, :0], images[1]], args, 8, 8)),
        ("mix", r"mix: a and b must be uint8", (a, b.float(), margs)),
        ("mix", r"mix: a and b must have one shape", (a, b[:, :, :7], margs)),
        ("mix", r"mix: a and b must have one shape", (a[0], b[0], margs)),
        ("mix", r"mix: args must be int32 of shape \[2, 6\]", (a, b, margs.long())),
        ("mix", r"mix: args must be int32 of shape \[2, 6\]", (a, b, margs[:1])),
        ("mix", r"mix: args must be int32 of shape \[2, 6\]", (a, b, margs[:, :5])),
        ("normalize", r"normalize: x must be uint8 \[B, C, H, W\]", (x.float(), lut, False)),
        ("normalize", r"normalize: x must be uint8 \[B, C, H, W\]", (x[0], lut, False)),
        ("normalize", r"normalize: lut must be floating \[3, 256\]", (x, lut.to(torch.int32), False)),
        ("normalize", r"normalize: lut must be floating \[3, 256\]", (x, lut[:2], False)),
        ("normalize", r"normalize: lut must be floating \[3, 256\]", (x, lut[:, :255], False)),
    ]


FAKES = {"augment": _ops._augment_fake, "mix": _ops._mix_fake, "normalize": _ops._normalize_fake}


@pytest.mark.parametrize("case", range(len(_bad_calls("meta"))))
def test_fake_kernels_refuse_what_the_cpp_refuses(case):
    op, match, call = _bad_calls("meta")[case]
    with pytest.raises(RuntimeError, match=match):
        FAKES[op](*call)


def test_fake_kernels_give_the_output_shape_dtype_and_layout():
    images, args = _augment_inputs()
    out = _ops._augment_fake(images, args, 7, 9)
    assert out.shape == (2, 3, 7, 9) and out.dtype == torch.uint8 and out.device.type == "meta"
    a, b, margs = _mix_inputs()
    out = _ops._mix_fake(a, b, margs)
    assert out.shape == a.shape and out.dtype == torch.uint8
    x, lut = _normalize_inputs()
    for channels_last, fmt in [(False, torch.contiguous_format), (True, torch.channels_last)]:
        out = _ops._normalize_fake(x, lut.double(), channels_last)
        assert out.shape == x.shape and out.dtype == torch.float64 and out.is_contiguous(memory_format=fmt)


def test_fake_kernels_refuse_mixed_devices():
    images, args = _augment_inputs()
    with pytest.raises(RuntimeError, match=r"augment: images\[1\] is on cpu, images\[0\] on meta"):
        _ops._augment_fake([images[0], torch.zeros(3, 21, 30, dtype=torch.uint8)], args, 8, 8)
    x, lut = _normalize_inputs()
    with pytest.raises(RuntimeError, match=r"normalize: lut is on cpu, x on meta"):
        _ops._normalize_fake(x, torch.zeros(3, 256), False)


@pytest.mark.compiled
@pytest.mark.parametrize("case", range(len(_bad_calls("meta"))))
def test_registered_fake_and_cpu_kernels_refuse_alike(case):
    """The op on the CPU (C++ checks) and under FakeTensorMode (the registered fake) give one message."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    op, match, call = _bad_calls("cpu")[case]
    with pytest.raises(RuntimeError, match=match):
        getattr(torch.ops.reinforced_data, op)(*call)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_call = tuple([mode.from_tensor(t) for t in v] if isinstance(v, list)
                          else mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for v in call)
        with pytest.raises(RuntimeError, match=match):
            getattr(torch.ops.reinforced_data, op)(*fake_call)


@pytest.mark.compiled
def test_registered_fake_kernels_trace_good_inputs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    images, args = _augment_inputs("cpu")
    x, lut = _normalize_inputs("cpu")
    with FakeTensorMode() as mode:
        views = torch.ops.reinforced_data.augment([mode.from_tensor(t) for t in images], mode.from_tensor(args), 7, 9)
        assert views.shape == (2, 3, 7, 9) and views.dtype == torch.uint8
        out = torch.ops.reinforced_data.normalize(mode.from_tensor(x), mode.from_tensor(lut), True)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.compiled
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fake_kernels_match_the_cpu_kernels_under_opcheck(layout):
    """Shapes, dtypes and strides of the fake kernels agree with the C++ ones, for the layouts
    loaders produce (channels-last sources and views included)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 20, 30), generator=g, dtype=torch.uint8).contiguous(memory_format=layout)
              if layout == torch.contiguous_format else
              torch.randint(0, 256, (20, 30, 3), generator=g, dtype=torch.uint8).permute(2, 0, 1) for _ in range(2)]
    _, args = _augment_inputs("cpu")
    a = torch.randint(0, 256, (2, 3, 8, 9), generator=g, dtype=torch.uint8).contiguous(memory_format=layout)
    b = torch.randint(0, 256, (2, 3, 8, 9), generator=g, dtype=torch.uint8)
    margs = torch.zeros(2, _args.NUM_MIX_ARGS, dtype=torch.int32)
    margs[:, _args.MIX_MODE], margs[:, _args.MIX_LAM] = 1, 100
    x, lut = _normalize_inputs("cpu")
    x = x.contiguous(memory_format=layout)
    ops = torch.ops.reinforced_data
    for op, call in [(ops.augment.default, (images, args, 7, 9)), (ops.mix.default, (a, b, margs)),
                     (ops.normalize.default, (x, lut, False)), (ops.normalize.default, (x, lut, True))]:
        torch.library.opcheck(op, call, test_utils=("test_schema", "test_faketensor"))
