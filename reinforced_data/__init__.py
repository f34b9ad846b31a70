"""reinforced_data: store augmentations and teacher labels once, replay them bit-exactly.

Importing the package is cheap: it loads neither torch, h5py, timm nor the compiled op.
Each public name is imported from its module on first use (PEP 562), so
``import reinforced_data.policy`` or a DataLoader worker pays only for what it touches.
"""

from __future__ import annotations

import os

#: (pid, parent pid) of the process when the package was first imported in it, before torch and
#: everything slow: the launcher that started the process even when it died during the seconds of
#: imports that follow (see :class:`reinforced_data.distributed.ParentWatch`).
STARTED_UNDER = (os.getpid(), os.getppid())

import importlib  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from ._version import __version__
from .errors import ConfigError, ReinforcedDataError

# name -> the module that defines it (relative to this package).
_CORE = {
    "Policy": ".policy",
    "PRESETS": ".policy",
    "replay": ".replay",
    "compiled_available": "._ops",
    "ReinforcementFile": ".store",
    "merge": ".store",
    "inspect_file": ".store",
    "reinforce": ".reinforce",
    "TeacherEnsemble": ".teachers",
    "AdaptiveEnsembleHead": ".ensemble",
    "ReinforcedDataset": ".dataset",
    "KDLoss": ".losses",
    "hard_labels": ".losses",
}
# Importable from the package as before, but documented in (and headlined by) their modules.
_MORE = {
    "RA_OPS": ".policy",
    "ReinforcementWriter": ".store",
    "bagging_split": ".ensemble",
    "stratified_split": ".ensemble",
    "adabelief": ".ensemble",
    "weighted_f1": ".ensemble",
    "EarlyStopping": ".ensemble",
    "fit_weak_learner": ".ensemble",
    "fit_combiner": ".ensemble",
}
_LAZY = {**_CORE, **_MORE}

__all__ = [*_CORE, "ReinforcedDataError", "ConfigError", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(__all__))


class _Package(types.ModuleType):
    """The package module. Importing a submodule sets the package attribute of that name to
    the submodule; for ``replay`` and ``reinforce`` the public name is the function of the same
    name, so keep that (``reinforced_data.replay(...)`` works after ``import reinforced_data.replay``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}"
                and _LAZY.get(name) == f".{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
    from ._ops import compiled_available
    from .dataset import ReinforcedDataset
    from .ensemble import (AdaptiveEnsembleHead, EarlyStopping, adabelief, bagging_split, fit_combiner,
                           fit_weak_learner, stratified_split, weighted_f1)
    from .losses import KDLoss, hard_labels
    from .policy import PRESETS, RA_OPS, Policy
    from .reinforce import reinforce
    from .replay import replay
    from .store import ReinforcementFile, ReinforcementWriter, inspect_file, merge
    from .teachers import TeacherEnsemble
