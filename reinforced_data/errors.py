"""The package's one error family.

Every error a user can fix is a :class:`ReinforcedDataError` whose message is one
sentence saying what is wrong and what to do; the ``reinforced-data`` command prints
exactly these (and missing / existing files) as one line. Any other exception is a bug
and keeps its traceback. Classes also derive from the builtin a caller would expect
(``ValueError``, ``FileExistsError``, ``RuntimeError``), so ``except ValueError`` keeps
working.
"""

from __future__ import annotations

__all__ = [
    "ReinforcedDataError", "ConfigError", "ReinforcementFileError", "NotReinforcementFileError",
    "UnsupportedVersionError", "IncompleteFileError", "CorruptFileError", "DatasetMismatchError",
    "SettingsMismatchError", "OutputExistsError", "FileAccessError", "NonFiniteOutputError",
    "CompiledUnavailableError", "DatasetTypeError", "FileReplacedError",
]


class ReinforcedDataError(Exception):
    """Base of every error this package raises for a cause the user can fix."""


class ConfigError(ReinforcedDataError, ValueError):
    """An argument, policy or setting is invalid; the message names it."""


class DatasetTypeError(ConfigError, TypeError):
    """A dataset, or an item of it, is of a kind reinforcement cannot read (not map-style, an
    image that is not uint8 pixels, a dataset transform); also a ``TypeError``."""


# ---------------------------------------------------------------------- reinforcement files
class ReinforcementFileError(ReinforcedDataError, ValueError):
    """A reinforcement file cannot be used as asked; the message says why and what to do."""


class NotReinforcementFileError(ReinforcementFileError):
    """Not an HDF5 file, or an HDF5 file of another format."""


class UnsupportedVersionError(ReinforcementFileError):
    """Written by a newer format version than this library reads."""


class IncompleteFileError(ReinforcementFileError):
    """Generation has not finished (or was interrupted)."""


class CorruptFileError(ReinforcementFileError):
    """Truncated, damaged, or holding values out of range."""


class DatasetMismatchError(ReinforcementFileError):
    """The file was made for another dataset (length, labels, files or class count)."""


class SettingsMismatchError(ReinforcementFileError):
    """A resumed or merged file was written with other settings."""


class OutputExistsError(ReinforcementFileError, FileExistsError):
    """The output path exists and neither resume nor overwrite was asked for."""


class FileReplacedError(ReinforcementFileError):
    """Another file now lies at the path a reader (a dataset, a DataLoader worker) was built on:
    reopening it by path would read other records under the first file's header."""


class FileAccessError(ReinforcementFileError):
    """The file cannot be opened as asked now (in use by another process, no permission, a
    read-only or full file system), though it may be perfectly good; never a reason to
    regenerate it."""


# ---------------------------------------------------------------------- teachers
class NonFiniteOutputError(ReinforcedDataError, RuntimeError):
    """A teacher produced NaN or inf for a view; the message names the image and view."""


# ---------------------------------------------------------------------- the compiled op
class CompiledUnavailableError(ReinforcedDataError, RuntimeError):
    """``backend="compiled"`` was asked for but ``reinforced_data._C`` is not loaded."""
