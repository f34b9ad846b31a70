"""The package's one error family.

Every error a user can fix is a :class:`ReinforcedDataError` whose message is one
sentence saying what is wrong and what to do; the ``reinforced-data`` command prints
exactly these (and missing / existing files) as one line. Any other exception is a bug
and keeps its traceback. Classes also derive from the builtin a caller would expect
(``ValueError``, ``FileExistsError``, ``RuntimeError``), so ``except ValueError`` keeps
working. :func:`system_error_message` names the system failures a user can fix (no space,
file-size limit, read-only, permission).
"""

from __future__ import annotations

import errno
import os
import re

__all__ = [
    "ReinforcedDataError", "ConfigError", "ReinforcementFileError", "NotReinforcementFileError",
    "UnsupportedVersionError", "IncompleteFileError", "CorruptFileError", "DatasetMismatchError",
    "SettingsMismatchError", "OutputExistsError", "FileAccessError", "NonFiniteOutputError",
    "CompiledUnavailableError", "DatasetTypeError", "FileReplacedError", "system_error_message",
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


# ---------------------------------------------------------------------- system errors
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)|\[Errno (\d+)\]")


def _os_errno(e: BaseException) -> int | None:
    """The system error number behind ``e``, also when HDF5 names it only in its message, or
    when a failing clean-up (closing the file) raised while handling it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = getattr(e, "errno", None)
        if isinstance(code, int) and code:
            return code
        m = _ERRNO_IN_TEXT.search(str(e))
        if m:
            return int(m.group(1) or m.group(2))
        e = e.__cause__ or e.__context__
    return None


def system_error_message(e: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """One sentence for a system failure a user can fix (no space, file-size limit, read-only,
    permission, a file where a directory should be), or None when ``e`` is none of them."""
    if not isinstance(e, (OSError, RuntimeError)):
        return None
    code = _os_errno(e)
    where = f" while writing {os.fspath(path)}" if path is not None else ""
    resume = "then continue with --resume (the rows already written are kept)"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"no space is left on the device{where} (disk full or quota reached); free some space, {resume}"
    if code == errno.EFBIG:
        return (f"the file-size limit was reached{where} (ulimit -f, or the file system's largest file); raise the "
                f"limit or write elsewhere, {resume}")
    if code == errno.EROFS:
        return f"the output{where.replace(' while writing', '')} lies on a read-only file system; write it somewhere writable"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; check the permissions of the file and its directory"
    if code == errno.ENOTDIR:
        return f"a part of the path{where.replace(' while writing', '')} is a file, not a directory"
    return None
