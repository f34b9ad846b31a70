"""The package's public face: ``__all__`` names the core API and every name in it resolves;
importing the package or its light modules loads neither h5py, timm nor the compiled op
(the names are imported lazily, PEP 562)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import reinforced_data

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("h5py", "timm", "reinforced_data._C")
CORE = ["Policy", "PRESETS", "replay", "ReinforcementFile", "reinforce", "merge", "TeacherEnsemble",
        "AdaptiveEnsembleHead", "ReinforcedDataset", "KDLoss", "hard_labels", "ReinforcedDataError", "ConfigError",
        "inspect_file", "compiled_available", "__version__"]
# where each name is defined
HOMES = {"Policy": "policy", "PRESETS": "policy", "replay": "_replay", "compiled_available": "_ops",
         "ReinforcementFile": "store.reader", "merge": "store.shards", "inspect_file": "inspection",
         "reinforce": "generation", "TeacherEnsemble": "teachers", "AdaptiveEnsembleHead": "ensemble.head",
         "ReinforcedDataset": "dataset", "KDLoss": "losses", "hard_labels": "losses", "ConfigError": "errors",
         "ReinforcedDataError": "errors", "__version__": "_version"}


def _python(code: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"subprocess failed:\n{res.stderr[-4000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def _loaded_after(statement: str) -> list[str]:
    return _python(f"import json, sys\n{statement}\n"
                   f"print(json.dumps([m for m in {HEAVY + ('torch',)!r} if m in sys.modules]))")


@pytest.mark.slow
@pytest.mark.subprocess
def test_import_policy_loads_neither_h5py_timm_nor_the_op():
    loaded = _loaded_after("import reinforced_data.policy\nreinforced_data.policy.Policy.preset('timm')")
    assert not set(loaded) & set(HEAVY), loaded


@pytest.mark.slow
@pytest.mark.subprocess
def test_import_package_is_light():
    loaded = _loaded_after("import reinforced_data\nreinforced_data.__version__, reinforced_data.ConfigError")
    assert loaded == [], loaded  # not even torch


@pytest.mark.slow
@pytest.mark.subprocess
def test_lazy_names_load_only_their_module():
    loaded = _loaded_after("import reinforced_data\nreinforced_data.Policy")
    assert loaded == [], loaded
    loaded = _loaded_after("import reinforced_data\nreinforced_data.replay")
    assert "torch" in loaded and "h5py" not in loaded and "timm" not in loaded, loaded


def test_all_is_the_core_api_and_dir_lists_it():
    assert sorted(reinforced_data.__all__) == sorted(CORE)
    assert len(set(reinforced_data.__all__)) == len(reinforced_data.__all__)
    assert set(reinforced_data.__all__) <= set(dir(reinforced_data))


@pytest.mark.parametrize("name", CORE)
def test_every_public_name_resolves_to_its_definition(name):
    value = getattr(reinforced_data, name)
    assert value is getattr(importlib.import_module(f"reinforced_data.{HOMES[name]}"), name)
    if name == "__version__":
        assert value.count(".") >= 2


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        reinforced_data.no_such_name  # noqa: B018
    assert not hasattr(reinforced_data, "no_such_name")


def test_no_module_is_named_like_a_public_name():
    """A submodule named like a public function would replace it on the package once imported."""
    modules = {m.name for m in pkgutil.iter_modules(reinforced_data.__path__)}
    assert "generation" in modules and not modules & set(CORE), sorted(modules & set(CORE))


def test_errors_are_one_family():
    assert issubclass(reinforced_data.ConfigError, reinforced_data.ReinforcedDataError)
    assert issubclass(reinforced_data.ConfigError, ValueError)
