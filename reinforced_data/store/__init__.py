"""The reinforcement file: one HDF5 file holding, for every image, K stored views.

Each view is one *record*: the view's augmentation parameters (``Policy.param_dtype()``),
for mixing policies a reference to the partner view (image index, view index), and the
teachers' top-k class indices and probabilities. docs/format.md describes every
attribute, dataset and byte; this package is its implementation, one concern a module:

* :mod:`.format`: constants, :class:`Fingerprint`, :class:`Header`, :class:`RecordCodec`
  (records ↔ chunk bytes), :class:`Record` / :class:`ImageRecords`. No HDF5.
* :mod:`.reader`: opening and checking a file, :class:`ReinforcementFile`,
  :func:`read_header`: what a DataLoader worker imports.
* :mod:`.writer`: the writer's lock, :class:`ReinforcementWriter`, crash recovery.
* :mod:`.shards`: :func:`shard_path`, :func:`find_shards`, :func:`merge`.

Checking a file's records as replay reads them (``inspect``, ``--verify``) decodes images and
encodes rows, so it lives above the store: :mod:`reinforced_data.inspection`.

The public names below are importable from ``reinforced_data.store``; the modules load on first use
(PEP 562), so ``import reinforced_data.store.format`` does not load h5py. The store knows
nothing of pixels or teachers: it stores what it is given and checks that what it reads is
in range.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import (CorruptFileError, DatasetMismatchError, FileAccessError, IncompleteFileError,
                      NotReinforcementFileError, OutputExistsError, ReinforcementFileError, SettingsMismatchError,
                      UnsupportedVersionError)

if TYPE_CHECKING:  # what the lazy names below resolve to, for readers and type checkers
    from .format import (FORMAT_NAME, FORMAT_VERSION, PROB_ENCODINGS, Fingerprint, Header, ImageRecords, Record,
                         RecordCodec, smallest_uint)
    from .reader import ReinforcementFile, read_header
    from .shards import find_shards, merge, shard_path
    from .writer import ReinforcementWriter

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "PROB_ENCODINGS", "ReinforcementFileError", "NotReinforcementFileError",
    "UnsupportedVersionError", "IncompleteFileError", "CorruptFileError", "DatasetMismatchError",
    "SettingsMismatchError", "OutputExistsError", "FileAccessError", "Fingerprint", "Header", "RecordCodec", "Record",
    "ImageRecords", "ReinforcementWriter", "ReinforcementFile", "merge", "shard_path", "find_shards",
    "smallest_uint", "read_header",
]

#: public name -> the module of this package that defines it
_HOME = {
    **dict.fromkeys(("FORMAT_NAME", "FORMAT_VERSION", "PROB_ENCODINGS", "Fingerprint", "Header", "RecordCodec", "Record",
                     "ImageRecords", "smallest_uint"), "format"),
    **dict.fromkeys(("ReinforcementFile", "read_header"), "reader"),
    "ReinforcementWriter": "writer",
    **dict.fromkeys(("shard_path", "find_shards", "merge"), "shards"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
