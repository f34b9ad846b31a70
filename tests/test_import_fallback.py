"""Import without the compiled op: one RuntimeWarning that says how to build it, replay
still works through the reference, backend="compiled" raises. Run in subprocesses so the
environment variable takes effect at import time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import reinforced_data
    import importlib
    rmod = importlib.import_module("reinforced_data.replay")
    importlib.import_module("reinforced_data.replay")  # a second import must not warn again
    import numpy as np, torch
    from reinforced_data import Policy
    policy = Policy.preset("timm", output_size=(24, 32))
    g = np.random.default_rng(0)
    images = [torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(h), dtype=torch.uint8)
              for h, w in [(40, 50), (30, 30)]]
    params = np.concatenate([policy.sample(g, 1, 40, 50), policy.sample(g, 1, 30, 30)])
    out = rmod.replay(images, params, policy, out_dtype=torch.float32)
    ref = rmod.replay(images, params, policy, out_dtype=torch.float32, backend="reference")
    out2 = reinforced_data.replay(images, params, policy)  # the package-level entry point
    try:
        rmod.replay(images, params, policy, backend="compiled")
        compiled_error = None
    except RuntimeError as e:
        compiled_error = str(e)
ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "reinforced_data" in str(w.message)]
print(json.dumps({
    "available": rmod.compiled_available(),
    "warnings": [str(w.message) for w in ours],
    "other_warnings": [f"{w.category.__name__}: {w.message}" for w in caught if w not in ours],
    "shape": list(out.shape), "dtype": str(out.dtype),
    "same_as_reference": bool(torch.equal(out, ref)),
    "uint8_shape": list(out2.shape),
    "compiled_error": compiled_error,
}))
"""


def _run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "REINFORCED_DATA_DISABLE_COMPILED"}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"subprocess failed:\n{res.stderr[-4000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_disabled_compiled_warns_once_and_falls_back():
    r = _run({"REINFORCED_DATA_DISABLE_COMPILED": "1"})
    assert r["available"] is False
    assert len(r["warnings"]) == 1, r["warnings"]
    msg = r["warnings"][0]
    assert "pip install --no-build-isolation" in msg, msg  # says how to build
    assert "REINFORCED_DATA_DISABLE_COMPILED" in msg, msg  # says why it is unavailable
    assert "reference" in msg, msg  # says what happens instead
    assert r["shape"] == [2, 3, 24, 32] and r["dtype"] == "torch.float32"
    assert r["uint8_shape"] == [2, 3, 24, 32]
    assert r["same_as_reference"]
    assert r["compiled_error"] is not None and "unavailable" in r["compiled_error"]


@pytest.mark.compiled
def test_compiled_import_is_silent():
    r = _run({})
    assert r["available"] is True
    assert r["warnings"] == [], r["warnings"]
    assert r["same_as_reference"]
    assert r["compiled_error"] is None
