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
* :mod:`.inspect`: :func:`inspect_file` and its text, :func:`format_inspect`.

Every name stays importable from ``reinforced_data.store``; the modules load on first use
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
    from .format import (DEFLATE_LEVEL, FORMAT_NAME, FORMAT_VERSION, LOG_RANGE, PROB_ENCODINGS,
                         TARGET_RECORDS_PER_CHUNK, WRITTEN_CHUNK, Fingerprint, Header, ImageRecords, Record,
                         RecordCodec, smallest_uint)
    from .inspect import format_inspect, format_verify, inspect_file, verify_file
    from .reader import ReinforcementFile, read_header
    from .shards import find_shards, merge, shard_path
    from .writer import ReinforcementWriter, copy_rows

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "PROB_ENCODINGS", "ReinforcementFileError", "NotReinforcementFileError",
    "UnsupportedVersionError", "IncompleteFileError", "CorruptFileError", "DatasetMismatchError",
    "SettingsMismatchError", "OutputExistsError", "FileAccessError", "Fingerprint", "Header", "RecordCodec", "Record",
    "ImageRecords", "ReinforcementWriter", "ReinforcementFile", "merge", "shard_path", "find_shards",
    "smallest_uint", "dataset_labels", "dataset_files", "dataset_num_classes", "inspect_file", "verify_file", "read_header",
    "format_inspect",
]

#: name -> the module of this package that defines it (public names, and the private ones
#: that tests and older code reach through ``reinforced_data.store``)
_HOME = {
    **dict.fromkeys(("FORMAT_NAME", "FORMAT_VERSION", "PROB_ENCODINGS", "LOG_RANGE", "DEFLATE_LEVEL",
                     "TARGET_RECORDS_PER_CHUNK", "WRITTEN_CHUNK", "Fingerprint", "Header", "RecordCodec", "Record",
                     "ImageRecords", "smallest_uint", "DIGEST_ATTR", "DIGEST_EXCLUDES", "header_digest", "_LOG_LUT", "_attr_str", "_dtype_to_json", "_dtype_from_json",
                     "_packed_le", "_sha256"), "format"),
    **dict.fromkeys(("ReinforcementFile", "read_header", "_check_digest", "_open_h5", "_check_format", "_raise_open_error",
                     "_raise_damaged"), "reader"),
    **dict.fromkeys(("ReinforcementWriter", "copy_rows", "seal_header", "_Lock", "_copy_layout"), "writer"),
    **dict.fromkeys(("shard_path", "find_shards", "merge", "_SHARD_RE"), "shards"),
    **dict.fromkeys(("inspect_file", "format_inspect", "verify_file", "format_verify"), "inspect"),
}
#: what describes a dataset now lives in :mod:`reinforced_data._datasets` (old import paths)
_MOVED_TO_DATASETS = ("dataset_labels", "as_labels", "dataset_files", "dataset_num_classes")


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f".{home}", __name__), name)
    elif name in _MOVED_TO_DATASETS:
        value = getattr(importlib.import_module(".._datasets", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME) | set(_MOVED_TO_DATASETS))
