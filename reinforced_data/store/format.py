"""The reinforcement file format, without HDF5: constants, header, records and their bytes.

docs/format.md describes every attribute, dataset and byte of a reinforcement file; this
module holds the part of it that needs no HDF5 (and imports no h5py, so it is testable
and usable on its own):

* :class:`Header`: everything a file says about itself (its HDF5 attributes), and the
  settings that must agree between a file and a resumed run, or between shards;
* :class:`RecordCodec`: records of one image ↔ the bytes of its HDF5 chunks. A chunk holds
  ``records_per_chunk`` consecutive views of one image, stored *byte-plane major* (the
  [n, R] byte matrix of the packed records, transposed to [R, n]) and deflated, with the
  sorted probabilities quantised to 8 bits in log space and delta-coded;
* :class:`Record` / :class:`ImageRecords`: one decoded view / several as arrays (all views of
  one image, or one record per (image, view) pair of a batch).
"""

from __future__ import annotations

import datetime
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ConfigError, CorruptFileError
from ..fingerprint import Fingerprint, sha256_hex as _sha256
from ..policy import V2_DEFAULTS, V3_DEFAULTS, V4_DEFAULTS, V4_PARTNER_DEFAULTS, Policy

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "V1_POLICY_FIELDS", "PROB_ENCODINGS", "LOG_RANGE", "DEFLATE_LEVEL", "TARGET_RECORDS_PER_CHUNK",
    "WRITTEN_CHUNK", "DIGEST_ATTR", "DIGEST_EXCLUDES", "header_digest", "Fingerprint", "Header", "RecordCodec",
    "Record", "ImageRecords", "smallest_uint", "IDENTITIES", "IDENTITIES_CHUNK", "encode_identities",
    "decode_identities",
]

FORMAT_NAME = "reinforced_data.reinforcement"
#: The newest version this reader knows. A file is written with the oldest version that can
#: hold it: 1 when its policy uses only the fields version 1 knew (so older readers still read
#: it), 2 when it uses only those version 2 knew, 3 when it uses only those version 3 knew (colour
#: jitter), 4 when it uses a later one (grayscale, blur, solarize; or timm's 3-Augment ops in its
#: ra_config; or inline mixing partners, files imported from apple/ml-dr), 5 when it uses AugMix (the
#: ``augmix*`` fields; records gain ``am_op``, ``am_mag``, maybe ``am_interp``, and ``am_weight``); older
#: readers then refuse it as newer, not as a bad policy.
FORMAT_VERSION = 5
#: The policy fields a version-1 reader knows.
V1_POLICY_FIELDS = frozenset((
    "output_size", "crop_scale", "crop_ratio", "flip_prob", "ra_num_ops", "ra_magnitude", "ra_num_magnitude_bins",
    "fill", "erase_prob", "erase_scale", "erase_ratio", "erase_value", "mean", "std", "mixup_alpha",
    "cutmix_alpha", "mix_prob", "switch_prob"))
#: The policy fields a version-2 reader knows.
V2_POLICY_FIELDS = V1_POLICY_FIELDS | frozenset(V2_DEFAULTS)
#: The policy fields a version-3 reader knows.
V3_POLICY_FIELDS = V2_POLICY_FIELDS | frozenset(V3_DEFAULTS)
#: The policy fields a version-4 reader knows.
V4_POLICY_FIELDS = V3_POLICY_FIELDS | frozenset(V4_DEFAULTS) | frozenset(V4_PARTNER_DEFAULTS)
#: ``log_uint8``: 8-bit codes of -ln(p) (delta-coded, see docs/format.md); ``float16``: raw halves.
PROB_ENCODINGS = ("log_uint8", "float16")
LOG_RANGE = 16.0  # log_uint8 code c means p = exp(-c * LOG_RANGE / 255); c = 255 means p <= e^-16
DEFLATE_LEVEL = 6
TARGET_RECORDS_PER_CHUNK = 32  # ~32 views a chunk: inflating one takes ~12 us; ~1.2 B/record more than 64
WRITTEN_CHUNK = 16384
#: the attribute holding the header digest (see :func:`header_digest`); files written before it have none
DIGEST_ATTR = "header_sha256"
#: attributes the digest leaves out: those a writer legitimately changes after the header is written
DIGEST_EXCLUDES = frozenset({"complete", "generation", DIGEST_ATTR})
_LOG_LUT = np.exp(np.arange(256) * (-LOG_RANGE / 255.0)).astype(np.float32)  # log_uint8 code -> probability


# ---------------------------------------------------------------------- helpers
def smallest_uint(max_value: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ConfigError(f"{max_value} does not fit in 64 bits")


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


def _canonical_attr(value: Any) -> list:
    """One HDF5 attribute value, as read back by h5py, in a form that JSON serialises exactly."""
    if isinstance(value, bytes):
        return ["s", value.decode("utf-8", "surrogateescape")]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, (bool, np.bool_)):
        return ["b", bool(value)]
    if isinstance(value, (int, np.integer)):
        return ["i", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["f", float(value).hex()]
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return ["a", [_canonical_attr(v) for v in arr.reshape(-1).tolist()], list(arr.shape)]
    return ["a", arr.dtype.newbyteorder("<").str, list(arr.shape), arr.astype(arr.dtype.newbyteorder("<")).tobytes().hex()]


def header_digest(attrs: Any, labels: np.ndarray) -> str:
    """The sha256 (hex) that seals a file's header: every attribute but those in
    :data:`DIGEST_EXCLUDES`, and the labels.

    The canonical serialisation is the JSON (sorted keys, no spaces) of
    ``{"attrs": {name: [type tag, value]}, "labels_sha256": sha256 of the labels as int64
    little-endian}``, with type tags ``s`` (string), ``i`` (integer), ``f`` (float, as
    ``float.hex``), ``b`` (bool) and ``a`` (array). ``attrs``: a mapping such as
    ``h5py.File.attrs``, read back from the file.
    """
    items = {str(k): _canonical_attr(attrs[k]) for k in sorted(attrs) if k not in DIGEST_EXCLUDES}
    labels_hash = _sha256(np.ascontiguousarray(np.asarray(labels).astype("<i8").reshape(-1)).tobytes())
    payload = json.dumps({"attrs": items, "labels_sha256": labels_hash}, sort_keys=True, separators=(",", ":"))
    return _sha256(payload.encode())


# ---------------------------------------------------------------------- identities
#: the optional dataset holding each row's identity (docs/format.md, "Dataset identity")
IDENTITIES = "identities"
#: bytes per HDF5 chunk of the identities (deflated as the records are, at DEFLATE_LEVEL)
IDENTITIES_CHUNK = 1 << 20


def encode_identities(files: Sequence[str] | None) -> np.ndarray | None:
    """The bytes of the ``identities`` dataset: the file list (one identity a row) UTF-8 encoded and
    joined by ``\n``, exactly what the fingerprint's ``files_sha256`` hashes, as uint8; None when
    the list cannot identify rows (no list, a name listed twice, or one holding ``\n``)."""
    if not files or len(set(files)) != len(files) or any("\n" in name for name in files):
        return None
    return np.frombuffer("\n".join(files).encode(), dtype=np.uint8)


def decode_identities(blob: np.ndarray, fingerprint: "Fingerprint", path: str = "") -> list[str]:
    """The identities stored as :func:`encode_identities` wrote them, checked against the
    fingerprint they must hash to (which the header digest seals): a
    :class:`CorruptFileError` when they do not."""
    data = np.ascontiguousarray(blob, dtype=np.uint8).tobytes()
    if fingerprint.files_sha256 is None or _sha256(data) != fingerprint.files_sha256:
        raise CorruptFileError(f"{path}: its '{IDENTITIES}' dataset does not hash to its fingerprint's files_sha256: "
                               "the file is damaged or was edited; regenerate it")
    try:
        names = data.decode()
    except UnicodeDecodeError as e:  # pragma: no cover - the hash matched what the writer encoded
        raise CorruptFileError(f"{path}: its '{IDENTITIES}' dataset is not UTF-8 ({e})") from None
    out = names.split("\n")
    if len(out) != fingerprint.num_images or len(set(out)) != len(out):
        raise CorruptFileError(f"{path}: its '{IDENTITIES}' dataset holds {len(out)} names for "
                               f"{fingerprint.num_images} images, or a name twice; regenerate it")
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
    #: where an imported file came from (attribute ``source``, format version 4; None for generated files)
    source: dict | None = None

    def __post_init__(self) -> None:
        for name in ("num_images", "num_views", "topk", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.topk > self.num_classes:
            raise ConfigError(f"topk={self.topk} exceeds the {self.num_classes} classes the teachers predict")
        if self.prob_encoding not in PROB_ENCODINGS:
            raise ConfigError(f"prob_encoding={self.prob_encoding!r}; choose one of {PROB_ENCODINGS}")
        if self.num_views > 65535:
            raise ConfigError(f"num_views={self.num_views} exceeds 65535")
        if self.records_per_chunk <= 0:
            groups = math.ceil(self.num_views / TARGET_RECORDS_PER_CHUNK)
            self.records_per_chunk = math.ceil(self.num_views / groups)
        if not self.library_version:
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
            # an imported file's source, wherever it lies now (its paths may move between runs)
            **({"source": {k: v for k, v in self.source.items() if k != "paths"}} if self.source else {}),
        }

    def mismatches(self, other: "Header") -> list[str]:
        a, b = self.settings(), other.settings()
        a.setdefault("source", None)
        b.setdefault("source", None)
        if "images_sha256" not in a["fingerprint"] or "images_sha256" not in b["fingerprint"]:
            # a file written before the image hash matches on the rest of its fingerprint
            a["fingerprint"].pop("images_sha256", None)
            b["fingerprint"].pop("images_sha256", None)
        if a["fingerprint"].get("files_sha256") is None or b["fingerprint"].get("files_sha256") is None:
            # a Subset had no file list before identities (its fingerprint's files_sha256 is null)
            a["fingerprint"].pop("files_sha256", None)
            b["fingerprint"].pop("files_sha256", None)
        return [k for k in a if a[k] != b[k]]

    @property
    def format_version(self) -> int:
        """The version this header is written with (see :data:`FORMAT_VERSION`)."""
        fields = set(json.loads(self.policy.to_json()))
        if not fields <= V4_POLICY_FIELDS or self.policy.uses_v5:  # AugMix: version 5
            return 5
        if not fields <= V3_POLICY_FIELDS or self.policy.uses_v4_ops:  # 3-Augment: version 4
            return 4
        return 1 if fields <= V1_POLICY_FIELDS else (2 if fields <= V2_POLICY_FIELDS else 3)

    def to_attrs(self) -> dict[str, Any]:
        codec = self.codec()
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
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
            **({"source": json.dumps(self.source, sort_keys=True)} if self.source else {}),
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
                source=json.loads(_attr_str(attrs["source"])) if "source" in attrs else None,
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
    """Stored views as arrays, one row each: all K views of one image (``read_image``), or
    one (image, view) record per row (``read_many``)."""

    params: np.ndarray  # [K] Policy.param_dtype()
    indices: np.ndarray  # [K, k] int64
    probs: np.ndarray  # [K, k] float32
    partner_index: np.ndarray | None  # [K] int64, mixing policies only
    partner_view: np.ndarray | None  # [K] int64

    def record(self, view: int) -> Record:
        """Row ``view`` as a :class:`Record`."""
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
                raise ConfigError("a mixing policy needs partner_index and partner_view for every view")
            rec["partner_index"] = partner_index
            rec["partner_view"] = partner_view
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_classes):
            raise ConfigError(f"top-k class indices must lie in [0, {self.num_classes})")
        p = np.asarray(probs, dtype=np.float64)
        if not np.isfinite(p).all():
            raise ConfigError("top-k probabilities must be finite")
        if p.shape[-1] > 1 and (np.diff(p, axis=-1) > 0).any():  # sort by decreasing probability
            order = np.argsort(-p, axis=-1, kind="stable")
            p = np.take_along_axis(p, order, -1)
            idx = np.take_along_axis(idx, order, -1)
        rec["topk_indices"] = idx
        rec["topk_probs"] = self.encode_probs(p)
        return rec

    def chunks(self, records: np.ndarray) -> list[bytes]:
        """The deflated chunks of one image's K records."""
        per = self.per_chunk
        out = []
        for g in range(self.chunks_per_image):
            part = records[g * per:(g + 1) * per]
            buf = np.zeros((per, self.record_size), dtype=np.uint8)
            buf[:part.shape[0]] = part.view(np.uint8).reshape(part.shape[0], self.record_size)
            out.append(zlib.compress(np.ascontiguousarray(buf.T).tobytes(), DEFLATE_LEVEL))
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
