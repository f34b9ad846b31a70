"""reinforced_data: store augmentations and teacher labels once, replay them bit-exactly.

Importing the package is cheap: it loads neither torch, h5py, timm nor the compiled op.
Each public name is imported from its module on first use (PEP 562), so
``import reinforced_data.policy`` or a DataLoader worker pays only for what it touches.
"""

from __future__ import annotations

from ._started import STARTED_UNDER  # first: the process's parent before the slow imports  # noqa: F401

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from ._version import __version__
from .errors import ConfigError, ReinforcedDataError

# name -> the module that defines it (relative to this package).
_CORE = {
    "Policy": ".policy",
    "PRESETS": ".policy",
    "replay": "._replay",
    "compiled_available": "._ops",
    "ReinforcementFile": ".store",
    "merge": ".store",
    "inspect_file": ".inspection",
    "reinforce": ".generation",
    "TeacherEnsemble": ".teachers",
    "AdaptiveEnsembleHead": ".ensemble",
    "ReinforcedDataset": ".dataset",
    "KDLoss": ".losses",
    "hard_labels": ".losses",
}
__all__ = [*_CORE, "ReinforcedDataError", "ConfigError", "__version__"]


def __getattr__(name: str) -> Any:
    module = _CORE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
    from ._ops import compiled_available
    from ._replay import replay
    from .dataset import ReinforcedDataset
    from .ensemble import AdaptiveEnsembleHead
    from .generation import reinforce
    from .inspection import inspect_file
    from .losses import KDLoss, hard_labels
    from .policy import PRESETS, Policy
    from .store import ReinforcementFile, merge
    from .teachers import TeacherEnsemble
