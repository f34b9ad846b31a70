"""The reinforcement file: one HDF5 file holding, for every image, K stored views.

Each view is one *record*: the view's augmentation parameters (``Policy.param_dtype()``),
for mixing policies a reference to the partner view (image index, view index), and the
teachers' top-k class indices and probabilities. docs/format.md describes every
attribute, dataset and byte; this module is its implementation:

* :class:`RecordCodec` turns records into the bytes of one HDF5 chunk and back: a chunk
  holds ``records_per_chunk`` consecutive views of one image, stored *byte-plane major*
  (the [n, R] byte matrix of the packed records, transposed to [R, n]) and deflated,
  with the sorted probabilities quantised to 8 bits in log space and delta-coded.
* :class:`ReinforcementWriter` creates or resumes a file and appends whole image rows.
  It writes in HDF5's single-writer/multiple-reader (SWMR) mode, whose ordered metadata
  writes keep the file readable after the writer dies, even by ``kill -9``; a resumed
  writer copies such a file into a clean one first. Rows are committed by a ``written``
  flag set only after their data is flushed; ``complete`` is set last.
* :class:`ReinforcementFile` reads it: one record, or all views of one image, refusing
  incomplete, foreign, newer-format or corrupt files with one clear sentence.
* :func:`merge` joins the shards written by several ranks into one file.

The store knows nothing of pixels or teachers: it stores what it is given and checks
that what it reads is in range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from .errors import (CorruptFileError, DatasetMismatchError, IncompleteFileError, NotReinforcementFileError,
                     OutputExistsError, ReinforcementFileError, SettingsMismatchError, UnsupportedVersionError)
from .policy import Policy

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "PROB_ENCODINGS", "ReinforcementFileError", "NotReinforcementFileError",
    "UnsupportedVersionError", "IncompleteFileError", "CorruptFileError", "DatasetMismatchError",
    "SettingsMismatchError", "OutputExistsError", "Fingerprint", "Header", "RecordCodec", "Record",
    "ImageRecords", "ReinforcementWriter", "ReinforcementFile", "merge", "shard_path", "find_shards",
    "smallest_uint", "dataset_labels", "dataset_files", "dataset_num_classes", "inspect_file", "read_header",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "reinforced_data.reinforcement"
FORMAT_VERSION = 1
#: ``log_uint8``: 8-bit codes of -ln(p) (delta-coded, see docs/format.md); ``float16``: raw halves.
PROB_ENCODINGS = ("log_uint8", "float16")
LOG_RANGE = 16.0  # log_uint8 code c means p = exp(-c * LOG_RANGE / 255); c = 255 means p <= e^-16
DEFLATE_LEVEL = 6
TARGET_RECORDS_PER_CHUNK = 32  # ~32 views a chunk: inflating one takes ~12 us; ~1.2 B/record more than 64
WRITTEN_CHUNK = 16384
_LOG_LUT = np.exp(np.arange(256) * (-LOG_RANGE / 255.0)).astype(np.float32)  # log_uint8 code -> probability


# ---------------------------------------------------------------------- helpers
def smallest_uint(max_value: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"{max_value} does not fit in 64 bits")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dtype_to_json(dt: np.dtype) -> list:
    """A packed structured dtype as [[name, base dtype string, shape], ...] (little-endian)."""
    out = []
    for name in dt.names:
        sub = dt.fields[name][0]
        base, shape = (sub.subdtype if sub.subdtype is not None else (sub, ()))
        out.append([name, base.newbyteorder("<").str, list(shape)])
    return out


def _dtype_from_json(fields: list) -> np.dtype:
    return np.dtype([(str(n), np.dtype(s), tuple(shape)) if shape else (str(n), np.dtype(s)) for n, s, shape in fields])


def _packed_le(dt: np.dtype) -> np.dtype:
    """The same fields, packed (no padding) and little-endian."""
    return _dtype_from_json(_dtype_to_json(dt))


_MOVED_TO_DATASETS = ("dataset_labels", "as_labels", "dataset_files", "dataset_num_classes")


def __getattr__(name: str) -> Any:
    """Old import paths: what describes a dataset now lives in :mod:`reinforced_data._datasets`."""
    if name in _MOVED_TO_DATASETS:
        from . import _datasets

        return getattr(_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- fingerprint
@dataclass(frozen=True)
class Fingerprint:
    """What identifies a dataset: its length, a hash of its labels and of its file list."""

    num_images: int
    labels_sha256: str
    files_sha256: str | None = None
    num_classes: int | None = None  # len(dataset.classes) when the dataset says

    @classmethod
    def of(cls, labels: np.ndarray, files: Sequence[str] | None = None,
           num_classes: int | None = None) -> "Fingerprint":
        labels = np.asarray(labels, dtype="<i8").reshape(-1)
        files_hash = None if files is None else _sha256("\n".join(files).encode())
        return cls(int(labels.shape[0]), _sha256(labels.tobytes()), files_hash, num_classes)

    @classmethod
    def of_dataset(cls, dataset: Any, labels: np.ndarray | None = None) -> "Fingerprint":
        """The fingerprint of a dataset (see :func:`reinforced_data._datasets.dataset_fingerprint`)."""
        from ._datasets import dataset_fingerprint

        return dataset_fingerprint(dataset, labels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def differences(self, other: "Fingerprint") -> list[str]:
        """What differs between the file's fingerprint (self) and a dataset's (other)."""
        out = []
        if self.num_images != other.num_images:
            out.append(f"the file holds {self.num_images} images, the dataset {other.num_images}")
        elif self.labels_sha256 != other.labels_sha256:
            out.append("the labels differ")
        if self.files_sha256 and other.files_sha256 and self.files_sha256 != other.files_sha256:
            out.append("the file lists differ")
        if self.num_classes and other.num_classes and self.num_classes != other.num_classes:
            out.append(f"the file's dataset has {self.num_classes} classes, this one {other.num_classes}")
        return out


# ---------------------------------------------------------------------- header
@dataclass
class Header:
    """Everything a reinforcement file says about itself (its HDF5 attributes)."""

    num_images: int
    num_views: int
    topk: int
    num_classes: int
    policy: Policy
    teachers: list[dict]
    fingerprint: Fingerprint
    seed: int = 0
    mix_block_size: int = 64
    prob_encoding: str = "log_uint8"
    records_per_chunk: int = 0  # 0: chosen from num_views
    shard_rank: int = 0
    shard_world_size: int = 1
    library_version: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)  # e.g. merged_from

    def __post_init__(self) -> None:
        for name in ("num_images", "num_views", "topk", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.topk > self.num_classes:
            raise ValueError(f"topk={self.topk} exceeds the {self.num_classes} classes the teachers predict")
        if self.prob_encoding not in PROB_ENCODINGS:
            raise ValueError(f"prob_encoding={self.prob_encoding!r}; choose one of {PROB_ENCODINGS}")
        if self.num_views > 65535:
            raise ValueError(f"num_views={self.num_views} exceeds 65535")
        if self.records_per_chunk <= 0:
            groups = math.ceil(self.num_views / TARGET_RECORDS_PER_CHUNK)
            self.records_per_chunk = math.ceil(self.num_views / groups)
        if not self.library_version:
            from . import __version__

            self.library_version = __version__
        if not self.created:
            self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    def codec(self) -> "RecordCodec":
        return RecordCodec(self.policy.param_dtype(), self.topk, self.num_classes, self.num_images,
                           self.num_views, self.policy.mixing, self.prob_encoding, self.records_per_chunk)

    # the settings that must agree between a file and a resumed run, or between shards
    def settings(self) -> dict:
        return {
            "num_images": self.num_images, "num_views": self.num_views, "topk": self.topk,
            "num_classes": self.num_classes, "policy": json.loads(self.policy.to_json()),
            # a teacher is identified by its weights, not by where its checkpoint lies
            "teachers": [{k: v for k, v in t.items() if k != "checkpoint"} for t in self.teachers],
            "fingerprint": self.fingerprint.to_dict(), "seed": self.seed,
            "mix_block_size": self.mix_block_size, "prob_encoding": self.prob_encoding,
            "records_per_chunk": self.records_per_chunk,
        }

    def mismatches(self, other: "Header") -> list[str]:
        a, b = self.settings(), other.settings()
        return [k for k in a if a[k] != b[k]]

    def to_attrs(self) -> dict[str, Any]:
        codec = self.codec()
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "num_images": self.num_images,
            "num_views": self.num_views,
            "topk": self.topk,
            "num_classes": self.num_classes,
            "policy": self.policy.to_json(),
            "teachers": json.dumps(self.teachers, sort_keys=True),
            "fingerprint": json.dumps(self.fingerprint.to_dict(), sort_keys=True),
            "seed": self.seed,
            "mix_block_size": self.mix_block_size,
            "prob_encoding": self.prob_encoding,
            "prob_log_range": LOG_RANGE,
            "records_per_chunk": self.records_per_chunk,
            "record_dtype": json.dumps(_dtype_to_json(codec.record_dtype)),
            "shard": json.dumps({"rank": self.shard_rank, "world_size": self.shard_world_size, **self.extra},
                                sort_keys=True),
            "library_version": self.library_version,
            "created": self.created,
        }

    @classmethod
    def from_attrs(cls, attrs: Any, path: str = "") -> "Header":
        try:
            shard = json.loads(_attr_str(attrs["shard"]))
            header = cls(
                num_images=int(attrs["num_images"]), num_views=int(attrs["num_views"]), topk=int(attrs["topk"]),
                num_classes=int(attrs["num_classes"]), policy=Policy.from_json(_attr_str(attrs["policy"])),
                teachers=json.loads(_attr_str(attrs["teachers"])),
                fingerprint=Fingerprint.from_dict(json.loads(_attr_str(attrs["fingerprint"]))),
                seed=int(attrs["seed"]), mix_block_size=int(attrs["mix_block_size"]),
                prob_encoding=_attr_str(attrs["prob_encoding"]), records_per_chunk=int(attrs["records_per_chunk"]),
                shard_rank=int(shard.pop("rank")), shard_world_size=int(shard.pop("world_size")),
                library_version=_attr_str(attrs["library_version"]), created=_attr_str(attrs["created"]), extra=shard,
            )
            stored = _dtype_from_json(json.loads(_attr_str(attrs["record_dtype"])))
            lr = float(attrs["prob_log_range"])
        except (KeyError, ValueError, TypeError) as e:
            raise CorruptFileError(f"{path}: its header is damaged or incomplete ({type(e).__name__}: {e})") from None
        if stored != header.codec().record_dtype or lr != LOG_RANGE:
            raise CorruptFileError(f"{path}: its record layout does not match its policy and settings")
        return header


def _attr_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------- records
@dataclass
class Record:
    """One stored view: its parameters, its partner (mixing policies) and its soft label."""

    params: np.ndarray  # structured scalar of Policy.param_dtype()
    indices: np.ndarray  # [k] int64 class indices, most probable first
    probs: np.ndarray  # [k] float32, as stored (not renormalised)
    partner: tuple[int, int] | None  # (image index, view index) of the mixing partner


@dataclass
class ImageRecords:
    """All K stored views of one image."""

    params: np.ndarray  # [K] Policy.param_dtype()
    indices: np.ndarray  # [K, k] int64
    probs: np.ndarray  # [K, k] float32
    partner_index: np.ndarray | None  # [K] int64, mixing policies only
    partner_view: np.ndarray | None  # [K] int64

    def record(self, view: int) -> Record:
        partner = None
        if self.partner_index is not None:
            partner = (int(self.partner_index[view]), int(self.partner_view[view]))
        return Record(self.params[view], self.indices[view], self.probs[view], partner)


class RecordCodec:
    """Records of one image ↔ the bytes of its chunks.

    A record is the packed little-endian struct ``record_dtype``: the policy's parameter
    fields, then (mixing policies) ``partner_index`` and ``partner_view``, then
    ``topk_indices`` [k] and ``topk_probs`` [k]. A chunk holds ``records_per_chunk`` (n)
    consecutive views of one image, zero-padded at the end of the row, as the [n, R]
    byte matrix transposed to [R, n] ("byte planes"), then deflated.
    """

    def __init__(self, param_dtype: np.dtype, topk: int, num_classes: int, num_images: int, num_views: int,
                 mixing: bool, prob_encoding: str = "log_uint8", records_per_chunk: int = 32) -> None:
        self.param_dtype = _packed_le(param_dtype)
        self.topk, self.num_classes, self.num_views = topk, num_classes, num_views
        self.mixing, self.prob_encoding = mixing, prob_encoding
        self.index_dtype = smallest_uint(max(num_classes - 1, 0))
        fields = _dtype_to_json(self.param_dtype)
        if mixing:
            fields += [["partner_index", smallest_uint(num_images - 1).str, []],
                       ["partner_view", smallest_uint(num_views - 1).str, []]]
        prob = "u1" if prob_encoding == "log_uint8" else "<f2"
        fields += [["topk_indices", self.index_dtype.newbyteorder("<").str, [topk]], ["topk_probs", prob, [topk]]]
        self.record_dtype = _dtype_from_json(fields)
        self.record_size = self.record_dtype.itemsize
        self._off = {name: self.record_dtype.fields[name][1] for name in self.record_dtype.names}
        base = {name: self.record_dtype.fields[name][0].base for name in self.record_dtype.names}
        self._idx_le, self._prob_le = base["topk_indices"], base["topk_probs"]
        self._pi_le, self._pv_le = base.get("partner_index"), base.get("partner_view")
        assert all(self._off[n] == self.param_dtype.fields[n][1] for n in self.param_dtype.names)
        # the parameter fields seen in place inside a record (for one-copy extraction)
        self._params_in_record = np.dtype({
            "names": list(self.param_dtype.names),
            "formats": [self.record_dtype.fields[n][0] for n in self.param_dtype.names],
            "offsets": [self.record_dtype.fields[n][1] for n in self.param_dtype.names],
            "itemsize": self.record_size})
        self.per_chunk = records_per_chunk
        self.chunks_per_image = math.ceil(num_views / records_per_chunk)
        self.chunk_bytes = records_per_chunk * self.record_size

    # -- probabilities
    def encode_probs(self, probs: np.ndarray) -> np.ndarray:
        """[..., k] probabilities sorted in decreasing order → stored values."""
        p = np.asarray(probs, dtype=np.float64)
        if self.prob_encoding == "float16":
            return p.astype("<f2")
        with np.errstate(divide="ignore"):
            code = np.clip(np.round(-np.log(np.maximum(p, 0.0)) * (255.0 / LOG_RANGE)), 0, 255).astype(np.int16)
        code[..., 1:] = np.diff(code, axis=-1)  # non-negative: probabilities are sorted
        return code.astype(np.uint8)

    def decode_probs(self, stored: np.ndarray) -> np.ndarray:
        if self.prob_encoding == "float16":
            return stored.astype(np.float32)
        try:
            return _LOG_LUT[np.cumsum(stored, axis=-1, dtype=np.int32)]
        except IndexError:
            raise ValueError("topk_probs codes exceed 255") from None

    # -- records
    def pack(self, params: np.ndarray, indices: np.ndarray, probs: np.ndarray,
             partner_index: np.ndarray | None = None, partner_view: np.ndarray | None = None) -> np.ndarray:
        """Records [n, K] from parameters [n, K], top-k [n, K, k] and partners [n, K]."""
        n = params.shape[0]
        rec = np.zeros((n, self.num_views), dtype=self.record_dtype)
        for name in self.param_dtype.names:
            rec[name] = params[name]
        if self.mixing:
            if partner_index is None or partner_view is None:
                raise ValueError("a mixing policy needs partner_index and partner_view for every view")
            rec["partner_index"] = partner_index
            rec["partner_view"] = partner_view
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_classes):
            raise ValueError(f"top-k class indices must lie in [0, {self.num_classes})")
        p = np.asarray(probs, dtype=np.float64)
        if not np.isfinite(p).all():
            raise ValueError("top-k probabilities must be finite")
        if p.shape[-1] > 1 and (np.diff(p, axis=-1) > 0).any():  # sort by decreasing probability
            order = np.argsort(-p, axis=-1, kind="stable")
            p = np.take_along_axis(p, order, -1)
            idx = np.take_along_axis(idx, order, -1)
        rec["topk_indices"] = idx
        rec["topk_probs"] = self.encode_probs(p)
        return rec

    def chunks(self, records: np.ndarray) -> list[bytes]:
        """The deflated chunks of one image's K records."""
        n, per = self.num_views, self.per_chunk
        out = []
        for g in range(self.chunks_per_image):
            part = records[g * per:(g + 1) * per]
            buf = np.zeros((per, self.record_size), dtype=np.uint8)
            buf[:part.shape[0]] = part.view(np.uint8).reshape(part.shape[0], self.record_size)
            out.append(zlib.compress(np.ascontiguousarray(buf.T).tobytes(), DEFLATE_LEVEL))
        del n
        return out

    def from_planes(self, planes: np.ndarray) -> np.ndarray:
        """[R * n] (or [R, n]) byte planes of one chunk → its n records."""
        planes = np.asarray(planes, dtype=np.uint8).reshape(self.record_size, self.per_chunk)
        return np.ascontiguousarray(planes.T).view(self.record_dtype).reshape(self.per_chunk)

    def unpack_one(self, buf: bytes) -> tuple[np.void, np.ndarray, np.ndarray, tuple[int, int] | None]:
        """(params, indices, probs, partner) of one record's ``record_size`` bytes, in few numpy calls."""
        k = self.topk
        params = np.frombuffer(buf, self.param_dtype, count=1)[0]  # the parameters lead the record
        indices = np.frombuffer(buf, self._idx_le, count=k, offset=self._off["topk_indices"]).astype(np.int64)
        if int(indices.max()) >= self.num_classes:
            raise ValueError(f"a top-k class index is {int(indices.max())}, beyond the {self.num_classes} classes")
        probs = self.decode_probs(np.frombuffer(buf, self._prob_le, count=k, offset=self._off["topk_probs"]))
        partner = None
        if self.mixing:
            partner = (int(np.frombuffer(buf, self._pi_le, count=1, offset=self._off["partner_index"])[0]),
                       int(np.frombuffer(buf, self._pv_le, count=1, offset=self._off["partner_view"])[0]))
        return params, indices, probs, partner

    def unpack(self, records: np.ndarray) -> ImageRecords:
        params = records.view(self._params_in_record).astype(self.param_dtype)
        indices = records["topk_indices"].astype(np.int64)
        if indices.size and indices.max() >= self.num_classes:
            raise ValueError(f"a top-k class index is {int(indices.max())}, beyond the {self.num_classes} classes")
        probs = self.decode_probs(records["topk_probs"])
        pi = pv = None
        if self.mixing:
            pi = records["partner_index"].astype(np.int64)
            pv = records["partner_view"].astype(np.int64)
        return ImageRecords(params, indices, probs, pi, pv)


# ---------------------------------------------------------------------- opening files
def _raise_open_error(path: str, e: OSError) -> None:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "truncated" in msg:
        raise CorruptFileError(f"{path} is truncated ({msg}); regenerate it (reinforce --overwrite)") from None
    raise CorruptFileError(f"{path} cannot be opened as HDF5 ({msg}); it is damaged, regenerate it") from None


def _open_h5(path: str, swmr_fallback: bool = True) -> h5py.File:
    """Open read-only, falling back to SWMR reading for a file a writer holds or left open."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if os.path.isdir(path):
        raise NotReinforcementFileError(f"{path} is a directory, not a reinforcement file")
    if not h5py.is_hdf5(path):
        raise NotReinforcementFileError(
            f"{path} is not an HDF5 file (no HDF5 signature); expected a reinforcement file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        if swmr_fallback and "already open for write" in str(e):
            try:
                return h5py.File(path, "r", swmr=True)
            except OSError as e2:
                _raise_open_error(path, e2)
        _raise_open_error(path, e)
    raise AssertionError("unreachable")


def _check_format(f: h5py.File, path: str) -> None:
    """Format name and version, and the three datasets (opened, the small ones read): damaged
    metadata shows here as a clear error rather than later as a traceback."""
    try:
        fmt = f.attrs.get("format")
        version = int(f.attrs.get("format_version", -1))
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
        _raise_damaged(path, e)
    if fmt is None or _attr_str(fmt) != FORMAT_NAME:
        what = "has no 'format' attribute" if fmt is None else f"has format {_attr_str(fmt)!r}"
        raise NotReinforcementFileError(
            f"{path} is an HDF5 file but not a reinforcement file ({what}, expected {FORMAT_NAME!r})")
    if version > FORMAT_VERSION:
        from . import __version__

        raise UnsupportedVersionError(
            f"{path} has format version {version}, newer than the version {FORMAT_VERSION} that reinforced_data "
            f"{__version__} reads; upgrade reinforced_data")
    if version < 1:
        raise CorruptFileError(f"{path} has an invalid format version {version}")
    try:
        for name in ("records", "labels", "written"):
            if name not in f:
                raise CorruptFileError(f"{path} lacks its '{name}' dataset; it is damaged, regenerate it")
        f["records"].shape
        f["labels"][:1]
        f["written"][:]
    except (KeyError, OSError, RuntimeError, ValueError) as e:
        _raise_damaged(path, e)


def _raise_damaged(path: str, e: Exception) -> None:
    msg = " ".join(str(e).split()).strip("'\"") or type(e).__name__
    raise CorruptFileError(f"{path} is damaged ({msg}); regenerate it") from None


# ---------------------------------------------------------------------- reader
class ReinforcementFile:
    """Read a reinforcement file.

    ``accept_incomplete=True`` opens a file whose generation has not finished (reading a
    row that was not written is still an error). The HDF5 handle is opened lazily in each
    process, so an instance can be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike, accept_incomplete: bool = False) -> None:
        self.path = os.fspath(path)
        self.accept_incomplete = accept_incomplete
        self._f: h5py.File | None = None
        self._pid = None
        f = self._file()
        self.header = Header.from_attrs(f.attrs, self.path)
        self.codec = self.header.codec()
        h = self.header
        expected = (h.num_images, self.codec.chunks_per_image, self.codec.chunk_bytes)
        if f["records"].shape != expected or f["records"].dtype != np.uint8:
            raise CorruptFileError(
                f"{self.path}: its records dataset has shape {f['records'].shape}, expected {expected}")
        if f["labels"].shape != (h.num_images,) or f["written"].shape != (h.num_images,):
            raise CorruptFileError(f"{self.path}: its labels or written dataset does not hold {h.num_images} rows")
        self.complete = bool(int(f.attrs.get("complete", 0)))
        self.written = f["written"][:].astype(bool)
        self.labels = f["labels"][:].astype(np.int64)
        stats = f.attrs.get("generation")
        self.generation = json.loads(_attr_str(stats)) if stats is not None else None
        if not self.complete and not accept_incomplete:
            n = int(self.written.sum())
            self.close()
            raise IncompleteFileError(
                f"{self.path} is incomplete ({n} of {h.num_images} images written: generation was interrupted or "
                f"is still running); resume it with `reinforced-data reinforce ... --resume`, or pass "
                f"accept_incomplete=True to read what it holds")

    # -- properties
    num_images = property(lambda self: self.header.num_images)
    num_views = property(lambda self: self.header.num_views)
    topk = property(lambda self: self.header.topk)
    num_classes = property(lambda self: self.header.num_classes)
    policy = property(lambda self: self.header.policy)
    teachers = property(lambda self: self.header.teachers)
    fingerprint = property(lambda self: self.header.fingerprint)

    def __len__(self) -> int:
        return self.header.num_images

    @property
    def file_size(self) -> int:
        return os.path.getsize(self.path)

    @property
    def bytes_per_record(self) -> float:
        rows = int(self.written.sum())
        return self.file_size / max(rows * self.num_views, 1)

    # -- handle management (fork-safe)
    def _file(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = _open_h5(self.path)
            self._pid = os.getpid()
            _check_format(self._f, self.path)
            self._records = self._f["records"]
            r = self._records
            # chunks that are plain deflate (as written) are read and inflated without HDF5's
            # filter pipeline, which costs more than the inflation; anything else goes through h5py
            self._direct = (r.compression == "gzip" and not r.shuffle and not r.fletcher32
                            and r.scaleoffset is None and r.id.get_create_plist().get_nfilters() == 1)
        return self._f

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None

    def __enter__(self) -> "ReinforcementFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_f"] = None
        state.pop("_records", None)
        return state

    # -- reading
    def _check_row(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"image index {index} out of range for {self.num_images} images in {self.path}")
        if not self.written[index]:
            raise IncompleteFileError(f"image {index} of {self.path} has not been written yet (the file is incomplete)")
        return index

    def _planes(self, index: int, group: int) -> np.ndarray:
        """The byte planes of one chunk, flat: byte b of its record j is at ``b * n + j``."""
        if self._f is None or self._pid != os.getpid():
            self._file()
        try:
            if self._direct:
                mask, data = self._records.id.read_direct_chunk((index, group, 0))
                if mask == 0:
                    planes = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
                    if planes.size != self.codec.chunk_bytes:
                        raise OSError(f"chunk holds {planes.size} bytes, expected {self.codec.chunk_bytes}")
                    return planes
            return self._records[index, group]
        except (OSError, zlib.error) as e:
            raise CorruptFileError(
                f"records of image {index} in {self.path} cannot be read ({str(e).splitlines()[0]}); "
                "the file is truncated or damaged") from None

    def read_image(self, index: int) -> ImageRecords:
        """All K stored views of image ``index``."""
        index = self._check_row(index)
        c = self.codec
        recs = np.concatenate([c.from_planes(self._planes(index, g)) for g in range(c.chunks_per_image)])
        recs = recs[:self.num_views]
        return self._unpack(recs, index)

    def read(self, index: int, view: int) -> Record:
        """Stored view ``view`` of image ``index``."""
        index = self._check_row(index)
        view = int(view)
        if not 0 <= view < self.num_views:
            raise IndexError(f"view {view} out of range for {self.num_views} views per image")
        c = self.codec
        g, j = divmod(view, c.per_chunk)
        buf = self._planes(index, g)[j::c.per_chunk].tobytes()
        try:
            params, indices, probs, partner = c.unpack_one(buf)
        except ValueError as e:
            raise CorruptFileError(f"record ({index}, {view}) in {self.path} is out of range ({e})") from None
        if partner is not None and (partner[0] >= self.num_images or partner[1] >= self.num_views):
            raise CorruptFileError(f"record ({index}, {view}) in {self.path} names a partner out of range")
        return Record(params, indices, probs, partner)

    def _unpack(self, recs: np.ndarray, index: int) -> ImageRecords:
        try:
            out = self.codec.unpack(recs)
        except ValueError as e:
            raise CorruptFileError(f"records of image {index} in {self.path} are out of range ({e})") from None
        if out.partner_index is not None and (out.partner_index.max() >= self.num_images
                                              or out.partner_view.max() >= self.num_views):
            raise CorruptFileError(f"records of image {index} in {self.path} name a partner out of range")
        return out

    # -- checks
    def check_dataset(self, dataset: Any = None, *, fingerprint: Fingerprint | None = None) -> None:
        """Raise :class:`DatasetMismatchError` unless ``dataset`` is the one this file was made for."""
        fp = fingerprint if fingerprint is not None else Fingerprint.of_dataset(dataset)
        diffs = self.fingerprint.differences(fp)
        if fp.num_classes and fp.num_classes != self.num_classes:
            diffs.append(f"the file's teachers predict {self.num_classes} classes, the dataset has {fp.num_classes}")
        if diffs:
            raise DatasetMismatchError(f"{self.path} was made for another dataset: {'; '.join(diffs)}")


def read_header(path: str | os.PathLike) -> tuple[Header, bool, np.ndarray]:
    """(header, complete, written mask) of any reinforcement file, complete or not."""
    with ReinforcementFile(path, accept_incomplete=True) as f:
        return f.header, f.complete, f.written


# ---------------------------------------------------------------------- writer
class _Lock:
    """An exclusive advisory lock on ``path + '.lock'``, released when the process dies."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(self.fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ReinforcementFileError(
                        f"{path} is being written by another process (it holds {self.path}); wait for it or stop it"
                    ) from None
                raise
            # release() unlinks the lock file: a lock taken on a file that was unlinked meanwhile
            # excludes nobody, so take it again on the file the path names now
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self.fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


class ReinforcementWriter:
    """Create or resume a reinforcement file and append image rows to it.

    Use :meth:`open`, then :meth:`write` rows and :meth:`commit` them (a row counts as
    stored once committed), then :meth:`finish`. Rows may come in any order. The file is
    written in SWMR mode: after a crash (``kill -9`` included) every committed row is
    still there, and :meth:`open` with ``mode="resume"`` continues from them.
    """

    def __init__(self, path: str, header: Header, f: h5py.File, lock: _Lock) -> None:
        self.path, self.header, self._f, self._lock = path, header, f, lock
        self.codec = header.codec()
        self._records = f["records"]
        self._written_ds = f["written"]
        self.written = self._written_ds[:].astype(bool)
        self.was_complete = bool(int(f.attrs.get("complete", 0)))  # resumed a finished file
        self._pending: list[int] = []
        self._wrote = False

    # -- opening
    @classmethod
    def open(cls, path: str | os.PathLike, header: Header, labels: np.ndarray,
             mode: str = "create") -> "ReinforcementWriter":
        """``mode``: "create" (refuse an existing path), "overwrite", or "resume" (continue an existing
        file written with the same settings; create it when absent)."""
        path = os.fspath(path)
        if mode not in ("create", "overwrite", "resume"):
            raise ValueError(f"mode={mode!r}; choose create, overwrite or resume")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (header.num_images,):
            raise ValueError(f"labels hold {labels.shape[0]} entries for {header.num_images} images")
        if os.path.isdir(path):
            raise OutputExistsError(f"{path} is a directory; name a file for the output")
        if os.path.lexists(path) and mode == "create":
            raise OutputExistsError(f"{path} already exists; pass --resume to continue it or --overwrite to replace it")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        lock = _Lock(path)
        try:
            exists = os.path.lexists(path)  # again, under the lock: another writer may have made it meanwhile
            if exists and mode == "create":
                raise OutputExistsError(
                    f"{path} already exists; pass --resume to continue it or --overwrite to replace it")
            if exists and mode == "resume":
                f = cls._reopen(path, header, labels)
            else:
                if exists:
                    os.remove(path)
                f = cls._create(path, header, labels)
        except BaseException:
            lock.release()
            raise
        return cls(path, header, f, lock)

    @staticmethod
    def _create(path: str, header: Header, labels: np.ndarray) -> h5py.File:
        tmp = path + ".creating"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        c = header.codec()
        f = h5py.File(tmp, "w", libver="latest")
        try:
            for k, v in header.to_attrs().items():
                f.attrs[k] = v
            f.attrs["complete"] = np.uint8(0)
            f.create_dataset(
                "records", shape=(header.num_images, c.chunks_per_image, c.chunk_bytes), dtype=np.uint8,
                chunks=(1, 1, c.chunk_bytes), compression="gzip", compression_opts=DEFLATE_LEVEL)
            n = header.num_images
            f.create_dataset("labels", data=labels.astype(smallest_uint(max(int(labels.max(initial=0)), 1))),
                             chunks=(min(n, 65536),), compression="gzip")
            f.create_dataset("written", shape=(n,), dtype=np.uint8, chunks=(min(n, WRITTEN_CHUNK),),
                             compression="gzip")
            f.flush()
            f.swmr_mode = True
            f.flush()
            os.replace(tmp, path)
        except BaseException:
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        return f

    @classmethod
    def _reopen(cls, path: str, header: Header, labels: np.ndarray) -> h5py.File:
        src = _open_h5(path)  # may be a SWMR reader of a file a killed writer left open
        try:
            _check_format(src, path)
            old = Header.from_attrs(src.attrs, path)
            diffs = old.fingerprint.differences(header.fingerprint)
            if diffs:
                raise DatasetMismatchError(f"cannot resume {path}: it was made for another dataset: {'; '.join(diffs)}")
            bad = old.mismatches(header)
            if bad:
                raise SettingsMismatchError(
                    f"cannot resume {path}: it was written with other settings ({', '.join(bad)}); "
                    "use the same settings, or --overwrite to start afresh")
            if (old.shard_rank, old.shard_world_size) != (header.shard_rank, header.shard_world_size):
                raise SettingsMismatchError(
                    f"cannot resume {path}: it is shard {old.shard_rank} of {old.shard_world_size}, "
                    f"not {header.shard_rank} of {header.shard_world_size}")
            if old.library_version != header.library_version:
                log.warning("%s was started by reinforced_data %s; resuming with %s", path,
                            old.library_version, header.library_version)
            clean = not src.swmr_mode
        finally:
            src.close()
        if not clean:
            cls._recover(path)
        # Read-write and SWMR-writing in one call: opening "r+" and then switching swmr_mode on
        # would leave, if killed in between, a file marked open for writing but not for SWMR,
        # which HDF5 then refuses to open at all.
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
        try:
            f = h5py.File(h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl))
        except OSError as e:
            _raise_open_error(path, e)
        if int(f.attrs.get("complete", 0)):
            log.info("%s is already complete", path)
        return f

    @staticmethod
    def _recover(path: str) -> None:
        """Copy a file whose writer died (still marked open for SWMR writing) into a clean one."""
        log.warning("%s was left open by a writer that stopped; recovering its committed rows", path)
        tmp = path + ".recovering"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        src = h5py.File(path, "r", swmr=True)
        try:
            written = src["written"][:]
            with h5py.File(tmp, "w", libver="latest") as dst:
                _copy_layout(src, dst)
                dst["labels"][:] = src["labels"][:]
                sr, dr = src["records"], dst["records"]
                for i in np.flatnonzero(written):
                    for g in range(sr.shape[1]):
                        mask, data = sr.id.read_direct_chunk((int(i), g, 0))
                        dr.id.write_direct_chunk((int(i), g, 0), data, mask)
                dst["written"][:] = written
        finally:
            src.close()
        os.replace(tmp, path)

    # -- writing
    def write(self, indices: Sequence[int], params: np.ndarray, topk_indices: np.ndarray, topk_probs: np.ndarray,
              partner_index: np.ndarray | None = None, partner_view: np.ndarray | None = None) -> None:
        """Write the K records of each image in ``indices`` (not yet committed).

        ``params`` [n, K] (the policy's param dtype), ``topk_indices`` / ``topk_probs``
        [n, K, k], ``partner_index`` / ``partner_view`` [n, K] for mixing policies.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n, K, k = len(indices), self.header.num_views, self.header.topk
        if params.shape != (n, K) or np.shape(topk_indices) != (n, K, k) or np.shape(topk_probs) != (n, K, k):
            raise ValueError(f"write() needs params [{n}, {K}] and top-k [{n}, {K}, {k}]; got {params.shape}, "
                             f"{np.shape(topk_indices)}, {np.shape(topk_probs)}")
        if n and (indices.min() < 0 or indices.max() >= self.header.num_images):
            raise IndexError(f"image indices must lie in [0, {self.header.num_images})")
        recs = self.codec.pack(params, topk_indices, topk_probs, partner_index, partner_view)
        for row, i in enumerate(indices.tolist()):
            for g, data in enumerate(self.codec.chunks(recs[row])):
                self._records.id.write_direct_chunk((i, g, 0), data)
            self._pending.append(i)
            self._wrote = True

    def commit(self) -> None:
        """Make the rows written since the last commit durable and mark them stored."""
        if not self._pending:
            return
        self._f.flush()  # the data first ...
        rows = np.asarray(self._pending)
        self.written[rows] = True
        step = self._written_ds.chunks[0]
        for c in np.unique(rows // step).tolist():  # only the flag chunks these rows touch
            lo, hi = c * step, min((c + 1) * step, self.header.num_images)
            self._written_ds[lo:hi] = self.written[lo:hi].astype(np.uint8)
        self._f.flush()  # ... then the flags that say it is there
        self._pending.clear()

    def finish(self, expected: np.ndarray | None = None, generation: dict | None = None) -> None:
        """Commit, check that every row in ``expected`` (default: all) is stored, mark complete, close."""
        self.commit()
        rows = np.arange(self.header.num_images) if expected is None else np.asarray(expected, dtype=np.int64)
        missing = rows[~self.written[rows]]
        if missing.size:
            raise ReinforcementFileError(f"{self.path}: {missing.size} images were not written (first: {missing[0]})")
        if generation is not None and not (self.was_complete and not self._wrote):  # keep the first run's
            self._f.attrs["generation"] = json.dumps(generation, sort_keys=True)
            self._f.flush()
        self._f.attrs["complete"] = np.uint8(1)
        self._f.flush()
        self.close()

    def close(self) -> None:
        if self._f is not None:
            with contextlib.suppress(Exception):
                self.commit()
            self._f.close()
            self._f = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ReinforcementWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _copy_layout(src: h5py.File, dst: h5py.File, attrs: dict | None = None) -> None:
    """Create in ``dst`` the datasets of ``src`` (same shapes, chunks, filters), and its attributes."""
    for k, v in (attrs if attrs is not None else dict(src.attrs)).items():
        dst.attrs[k] = v
    for name in ("records", "labels", "written"):
        s = src[name]
        dst.create_dataset(name, shape=s.shape, dtype=s.dtype, chunks=s.chunks, compression=s.compression,
                           compression_opts=s.compression_opts)


# ---------------------------------------------------------------------- shards and merge
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})$")


def shard_path(output: str | os.PathLike, rank: int, world_size: int) -> str:
    """``out.h5`` → ``out-00001-of-00004.h5``: where rank 1 of 4 writes its shard."""
    root, ext = os.path.splitext(os.fspath(output))
    return f"{root}-{rank:05d}-of-{world_size:05d}{ext}"


def find_shards(output: str | os.PathLike) -> list[str]:
    """The shard files written for ``output`` (all ranks of one world size)."""
    root, ext = os.path.splitext(os.fspath(output))
    d = os.path.dirname(os.path.abspath(root)) or "."
    base = os.path.basename(root)
    found: dict[int, list[str]] = {}
    for name in sorted(os.listdir(d)):
        stem, e = os.path.splitext(name)
        if e != ext or not stem.startswith(base + "-"):
            continue
        m = _SHARD_RE.search(stem)
        if m and stem[:m.start()] == base:
            found.setdefault(int(m.group(2)), []).append(os.path.join(d, name))
    if not found:
        raise FileNotFoundError(f"no shard files {base}-NNNNN-of-NNNNN{ext} found in {d}")
    if len(found) > 1:
        raise ReinforcementFileError(
            f"shards of several world sizes ({sorted(found)}) found for {output}; name the shards to merge")
    return next(iter(found.values()))


def merge(output: str | os.PathLike, shards: Iterable[str | os.PathLike] | None = None, overwrite: bool = False) -> str:
    """Join the shards that ranks wrote into one complete file at ``output``.

    Every shard must be complete and written with the same settings; together they must
    cover every image exactly once. The records are copied chunk by chunk, as stored.
    """
    output = os.fspath(output)
    shards = [os.fspath(s) for s in (find_shards(output) if shards is None else shards)]
    if not shards:
        raise ValueError("merge needs at least one shard")
    if os.path.lexists(output) and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it")
    files = [ReinforcementFile(s) for s in shards]  # refuses incomplete shards
    try:
        first = files[0].header
        world = first.shard_world_size
        for f in files[1:]:
            bad = first.mismatches(f.header)
            if bad:
                raise SettingsMismatchError(
                    f"{f.path} was written with other settings than {files[0].path}: {', '.join(bad)}")
        ranks = sorted(f.header.shard_rank for f in files)
        if any(f.header.shard_world_size != world for f in files) or ranks != list(range(world)):
            raise ReinforcementFileError(
                f"the shards cover ranks {ranks} of world sizes {sorted({f.header.shard_world_size for f in files})}; "
                f"merge needs each of the {world} ranks exactly once")
        owner = np.full(first.num_images, -1, dtype=np.int64)
        for r, f in enumerate(files):
            if (f.written & (owner >= 0)).any():
                i = int(np.flatnonzero(f.written & (owner >= 0))[0])
                raise ReinforcementFileError(f"image {i} is stored in both {files[owner[i]].path} and {f.path}")
            if not np.array_equal(f.labels, files[0].labels):
                raise SettingsMismatchError(f"{f.path} holds other labels than {files[0].path}")
            owner[f.written] = r
        if (owner < 0).any():
            raise ReinforcementFileError(
                f"the shards hold {int((owner >= 0).sum())} of {first.num_images} images (first missing: "
                f"{int(np.flatnonzero(owner < 0)[0])})")
        tmp = output + ".merging"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        src0 = files[0]._file()
        attrs = dict(src0.attrs)
        attrs["shard"] = json.dumps({"rank": 0, "world_size": 1, "merged_from": world}, sort_keys=True)
        attrs["complete"] = np.uint8(0)
        gens = [f.generation for f in files]
        attrs["generation"] = json.dumps({"merged_from_shards": gens}, sort_keys=True)
        with h5py.File(tmp, "w", libver="latest") as dst:
            _copy_layout(src0, dst, attrs)
            dst["labels"][:] = src0["labels"][:]
            dr = dst["records"]
            for f in files:
                sr = f._file()["records"]
                for i in np.flatnonzero(f.written):
                    for g in range(sr.shape[1]):
                        mask, data = sr.id.read_direct_chunk((int(i), g, 0))
                        dr.id.write_direct_chunk((int(i), g, 0), data, mask)
            dst["written"][:] = np.ones(first.num_images, dtype=np.uint8)
            dst.flush()
            dst.attrs["complete"] = np.uint8(1)
        os.replace(tmp, output)
    finally:
        for f in files:
            f.close()
    return output


# ---------------------------------------------------------------------- inspect
def inspect_file(path: str | os.PathLike, data: Any = None, max_images: int = 2000) -> dict:
    """A summary of a reinforcement file, complete or not (see ``reinforced-data inspect``).

    Statistics (teacher top-1 agreement with the ground-truth labels, mean entropy of the
    stored top-k distributions renormalised, in nats) are taken over at most
    ``max_images`` written images, evenly spaced (0: all). ``data``: a dataset, or its
    fingerprint, to check the file against.
    """
    with ReinforcementFile(path, accept_incomplete=True) as f:
        h = f.header
        rows = np.flatnonzero(f.written)
        if max_images and rows.size > max_images:
            rows = rows[np.linspace(0, rows.size - 1, max_images).round().astype(np.int64)]
        agree = total = 0
        entropy = 0.0
        for i in rows:
            r = f.read_image(int(i))
            agree += int((r.indices[:, 0] == f.labels[i]).sum())
            p = r.probs.astype(np.float64)
            p = p / p.sum(axis=1, keepdims=True)
            entropy += float(-(p * np.log(np.maximum(p, 1e-30))).sum())
            total += r.indices.shape[0]
        out = {
            "file": f.path, "format_version": FORMAT_VERSION, "complete": f.complete,
            "images_written": int(f.written.sum()), "num_images": h.num_images, "num_views": h.num_views,
            "topk": h.topk, "num_classes": h.num_classes, "prob_encoding": h.prob_encoding,
            "policy": json.loads(h.policy.to_json()), "teachers": h.teachers, "seed": h.seed,
            "mix_block_size": h.mix_block_size, "shard": {"rank": h.shard_rank, "world_size": h.shard_world_size,
                                                          **h.extra},
            "library_version": h.library_version, "created": h.created, "file_bytes": f.file_size,
            "bytes_per_record": f.bytes_per_record, "record_bytes_uncompressed": f.codec.record_size,
            "stats_images": int(rows.size),
            "teacher_top1_agreement": agree / total if total else None,
            "mean_entropy_nats": entropy / total if total else None,
            "generation": f.generation,
        }
        if data is not None:
            try:
                f.check_dataset(fingerprint=data if isinstance(data, Fingerprint) else None,
                                dataset=None if isinstance(data, Fingerprint) else data)
                out["dataset_matches"], out["dataset_mismatch"] = True, None
            except DatasetMismatchError as e:
                out["dataset_matches"], out["dataset_mismatch"] = False, str(e)
    return out
