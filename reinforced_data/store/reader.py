"""Reading a reinforcement file: opening, format checks, :class:`ReinforcementFile`.

This is what every DataLoader worker imports, and nothing more: writing, merging and
inspecting live in :mod:`.writer`, :mod:`.shards` and :mod:`.inspect`. A file is refused
(incomplete, foreign, newer-format or corrupt) with one clear sentence, and every record
read is checked to be in range before it is returned.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import time
import zlib
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import (CorruptFileError, DatasetMismatchError, FileAccessError, FileReplacedError,
                      IncompleteFileError, NotReinforcementFileError, UnsupportedVersionError)
from .format import (DIGEST_ATTR, FORMAT_NAME, FORMAT_VERSION, IDENTITIES, Fingerprint, Header, ImageRecords, Record,
                     _attr_str, decode_identities, header_digest)

__all__ = ["ReinforcementFile", "read_header"]

log = logging.getLogger(__name__)
_WARNED_NO_DIGEST: set[str] = set()

# ---------------------------------------------------------------------- opening files
_ERRNO_IN_MESSAGE = re.compile(r"errno = (\d+)")


def _errno(e: OSError) -> int | None:
    """The system error behind an HDF5 open failure (h5py sets ``errno`` for some; the message names it)."""
    if e.errno:
        return e.errno
    m = _ERRNO_IN_MESSAGE.search(str(e))
    return int(m.group(1)) if m else None


def _raise_open_error(path: str, e: OSError, writing: bool = False) -> None:
    """Say what really stops ``path`` from opening. A file that is busy, not permitted, on a
    read-only or full file system may be perfectly good: only HDF5 failing to read the file
    itself is reported as damage, with the advice to regenerate it."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    code = _errno(e)
    how = "written" if writing else "read"
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        raise FileAccessError(
            f"{path} is in use by another process, which holds its HDF5 file lock ({msg}); wait for it or close "
            "it there, then try again") from None
    if code in (errno.EACCES, errno.EPERM):
        raise FileAccessError(f"{path} cannot be {how}: permission denied ({msg}); check its permissions") from None
    if code == errno.EROFS:
        raise FileAccessError(f"{path} lies on a read-only file system and cannot be {how}; copy it somewhere "
                              "writable") from None
    if code == errno.ENOSPC:
        raise FileAccessError(f"no space is left on the device holding {path} ({msg}); free some space, then "
                              "continue with --resume") from None
    if code is not None:
        raise FileAccessError(f"{path} cannot be opened ({msg})") from None
    if "truncated" in msg:
        raise CorruptFileError(f"{path} is truncated ({msg}); regenerate it (reinforce --overwrite)") from None
    raise CorruptFileError(f"{path} cannot be opened as HDF5 ({msg}); it is damaged, regenerate it") from None


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _marked_open_for_writing(path: str) -> bool:
    """Whether the file's superblock says a writer has it open, or died with it open.

    The HDF5 file format's superblock version 3 (what ``libver="latest"`` writes) keeps
    "file consistency flags" in its 12th byte: bit 0 is set while the file is open for
    writing, bit 2 while it is open for SWMR writing. Other versions (or a superblock after a
    user block) answer False: such a file is not written by this package.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:8] == _HDF5_SIGNATURE and head[8] >= 3 and bool(head[11] & 0b101)


def _open_h5(path: str) -> h5py.File:
    """Open ``path`` read-only; as an HDF5 SWMR reader when a writer has it open (or died so).

    A SWMR reader sees a consistent file while its writer appends to it. A plain read-only
    open of such a file is refused ("already open for write"), or, when the file has not yet
    reached the length its superblock records, reported as "truncated": neither means the
    file is damaged. A file no writer holds is opened plainly, so that HDF5 checks its length:
    a SWMR reader retries every metadata read that fails its checksum (about 100 times), which
    on a file that is really cut short takes minutes before it fails.

    The returned handle's ``swmr_mode`` is True exactly when the file was marked open for
    writing: a resuming writer (which holds the writer's lock, so no writer runs) then knows
    that the file must be recovered.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if os.path.isdir(path):
        raise NotReinforcementFileError(f"{path} is a directory, not a reinforcement file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as e:  # e.g. no permission to read it
        _raise_open_error(path, e)
    if not is_hdf5:
        raise NotReinforcementFileError(
            f"{path} is not an HDF5 file (no HDF5 signature); expected a reinforcement file")
    for attempt in range(2):
        try:
            if _marked_open_for_writing(path):
                return h5py.File(path, "r", swmr=True)
            return h5py.File(path, "r")
        except OSError as e:
            # a writer opened (or closed, shrinking the file) between the look at the flags and the open:
            # look again, once
            if attempt == 0 and ("already open for write" in str(e) or "truncated" in str(e)):
                time.sleep(0.1)
                continue
            _raise_open_error(path, e)
    raise AssertionError("unreachable")


def _stored_eof(path: str) -> int | None:
    """The file length HDF5's superblock records for ``path`` (superblock version 2 or 3, what
    ``libver="latest"`` writes: signature, version, offset size O, 3 bytes, then base address,
    extension address and end-of-file address, O bytes each, little-endian); None for other files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12 + 4 * 8)
    except OSError:
        return None
    if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] not in (2, 3) or head[9] not in (2, 4, 8):
        return None
    o = head[9]
    if len(head) < 12 + 3 * o:
        return None
    base = int.from_bytes(head[12:12 + o], "little")
    return base + int.from_bytes(head[12 + 2 * o:12 + 3 * o], "little")


class _ZeroPadded(io.RawIOBase):
    """A read-only view of a file cut short that reads as zeros from its end up to ``size``.

    HDF5 refuses to open a file shorter than its superblock says; through this view it
    opens, and whatever lay past the cut reads as zeros, which fails HDF5's checksums at
    once (metadata) or fails to inflate (chunks): the parts before the cut are readable.
    """

    def __init__(self, path: str, size: int) -> None:
        self._fh = open(path, "rb")
        self._size, self._pos = size, 0
        self._real = os.fstat(self._fh.fileno()).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        got = 0
        if self._pos < self._real:
            self._fh.seek(self._pos)
            got = self._fh.readinto(view[:min(n, self._real - self._pos)]) or 0
        view[got:n] = bytes(n - got)
        self._pos += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_cut_short(path: str) -> h5py.File | None:
    """Open read-only a file that is shorter on disk than its superblock records and that no
    writer holds (a writer stopped by a file-size limit, say, whose closing could not extend
    the file), reading what lies past its end as zeros; None for any other file.

    Only a resuming writer, which holds the writer's lock, opens files this way: it copies
    the committed rows whose chunks are whole into a clean file. Readers refuse such a file.
    """
    stored = _stored_eof(path)
    if stored is None or os.path.getsize(path) >= stored or _marked_open_for_writing(path):
        return None
    view = _ZeroPadded(path, stored)
    try:
        f = h5py.File(view, "r")
    except OSError as e:
        view.close()
        raise CorruptFileError(f"{path} is truncated (it has {os.path.getsize(path)} of its {stored} bytes) and "
                               f"its header cannot be read ({str(e).splitlines()[0]}); regenerate it "
                               "(reinforce --overwrite)") from None
    f._padded_view = view  # closed with the handle's last reference
    return f


def _truncation(f: h5py.File, path: str) -> str | None:
    """"it has X of its Y bytes" when the file on disk is shorter than HDF5's record of its length."""
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        stored, actual = int(f.id.get_filesize()), os.path.getsize(path)
        if actual < stored:
            return f"it has {actual} of its {stored} bytes"
    return None


def _check_format(f: h5py.File, path: str) -> None:
    """Format name and version, and the three datasets (opened, the small ones read): damaged
    metadata shows here as a clear error rather than later as a traceback."""
    try:
        fmt = f.attrs.get("format")
        version = int(f.attrs.get("format_version", -1))
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
        _raise_damaged(path, e, f)
    if fmt is None and all(name in f for name in ("records", "labels", "written")):
        # a reinforcement file's datasets, but its attributes cannot be found: their index is damaged
        raise CorruptFileError(f"{path} is damaged (it holds a reinforcement file's datasets, but its 'format' "
                               "attribute cannot be read); regenerate it")
    if fmt is None or _attr_str(fmt) != FORMAT_NAME:
        what = "has no 'format' attribute" if fmt is None else f"has format {_attr_str(fmt)!r}"
        raise NotReinforcementFileError(
            f"{path} is an HDF5 file but not a reinforcement file ({what}, expected {FORMAT_NAME!r})")
    if version > FORMAT_VERSION:
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
        _read_small(f, "labels", slice(0, 1))
        _read_small(f, "written")
    except (KeyError, OSError, RuntimeError, ValueError) as e:
        _raise_damaged(path, e, f)


def _read_small(f: h5py.File, name: str, sel: slice = slice(None)) -> np.ndarray:
    """``f[name][sel]``. SWMR protects HDF5's metadata, not data a writer overwrites in place:
    the ``written`` flags are rewritten at every commit, and a reader may catch a chunk half
    rewritten (it fails to inflate; never a wrong value). Read again then, a few times."""
    for attempt in range(5):
        try:
            return f[name][sel]
        except (OSError, RuntimeError, ValueError):
            if not f.swmr_mode or attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _raise_damaged(path: str, e: Exception, f: h5py.File | None = None) -> None:
    msg = " ".join(str(e).split()).strip("'\"") or type(e).__name__
    short = _truncation(f, path) if f is not None else None
    if short:
        raise CorruptFileError(f"{path} is truncated ({short}; {msg}); regenerate it (reinforce --overwrite)") from None
    raise CorruptFileError(f"{path} is damaged ({msg}); regenerate it") from None


def _check_digest(f: h5py.File, path: str, labels: np.ndarray) -> bool:
    """Check the header digest (docs/format.md): True when it matches, False when the file
    has none (written before digests: logged once); a mismatch is a :class:`CorruptFileError`."""
    try:
        stored = f.attrs.get(DIGEST_ATTR)
        actual = header_digest(f.attrs, labels)
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:  # the attributes cannot be read
        _raise_damaged(path, e, f)
    if stored is None:
        if path not in _WARNED_NO_DIGEST:
            _WARNED_NO_DIGEST.add(path)
            log.warning("%s carries no header digest (written before reinforced_data sealed headers); its header "
                        "cannot be checked for changes", path)
        return False
    if _attr_str(stored) != actual:
        raise CorruptFileError(
            f"{path}: its header was changed after it was written (digest mismatch: an attribute or the labels "
            "differ from those it was sealed with); restore the original file or regenerate it")
    return True


# ---------------------------------------------------------------------- reader
def _identity(f: h5py.File, complete: bool) -> tuple:
    """What identifies the file behind an open handle: (device, inode, size, modification time in
    ns, header digest or None, whether it was complete). See :meth:`ReinforcementFile._check_identity`."""
    st = os.fstat(f.id.get_vfd_handle())
    digest = f.attrs.get(DIGEST_ATTR)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, None if digest is None else _attr_str(digest),
            bool(complete))


class ReinforcementFile:
    """Read a reinforcement file.

    ``accept_incomplete=True`` opens a file whose generation has not finished (reading a
    row that was not written is still an error). The HDF5 handle is opened lazily in each
    process, so an instance can be handed to DataLoader workers. Every process that opens
    the file again by its path checks that it is still the file first opened (see
    :attr:`identity`); another file there is a :class:`FileReplacedError`. ``identity``
    (the :attr:`identity` of an earlier open) makes a new instance check the same.
    """

    #: a complete file whose records take at most this many bytes inflated is read whole into
    #: memory at the first record read in each process (one read instead of one per chunk)
    RECORDS_IN_MEMORY_BYTES = 16 << 20

    def __init__(self, path: str | os.PathLike, accept_incomplete: bool = False, *,
                 identity: tuple | None = None) -> None:
        self.path = os.fspath(path)
        self.accept_incomplete = accept_incomplete
        self._f: h5py.File | None = None
        self._pid = None
        #: (device, inode, size, mtime_ns, header digest, complete) of the file first opened; set below
        self.identity: tuple | None = identity
        f = self._file()
        try:
            labels = _read_small(f, "labels")
            #: whether the header carries a digest (checked here); False for files written before digests
            self.has_digest = _check_digest(f, self.path, labels)
        except CorruptFileError:
            self.close()
            raise
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
            try:
                _raise_damaged(self.path, e, f)
            finally:
                self.close()
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
        if identity is None:
            self.identity = _identity(f, self.complete)
        try:
            self.written = _read_small(f, "written").astype(bool)
            self.labels = _read_small(f, "labels").astype(np.int64)
            stats = f.attrs.get("generation")
            self.generation = json.loads(_attr_str(stats)) if stats is not None else None
        except (OSError, RuntimeError, ValueError) as e:
            try:
                _raise_damaged(self.path, e, f)
            finally:
                self.close()
        # a shard's written flags cover only its own images
        if self.complete and not accept_incomplete and h.shard_world_size == 1 and not self.written.all():
            missing = np.flatnonzero(~self.written)
            self.close()
            raise CorruptFileError(
                f"{self.path} is marked complete but {missing.size} of {h.num_images} images are not written "
                f"(first: image {int(missing[0])}); write them with `reinforced-data reinforce ... --resume`, or "
                "pass accept_incomplete=True to read what it holds")
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
            self._f = None
            f = _open_h5(self.path)
            if self.identity is not None:
                try:
                    self._check_identity(f)
                except BaseException:
                    f.close()
                    raise
            self._f = f
            self._pid = os.getpid()
            _check_format(self._f, self.path)
            self._records = self._f["records"]
            r = self._records
            # chunks that are plain deflate (as written) are read and inflated without HDF5's
            # filter pipeline, which costs more than the inflation; anything else goes through h5py
            self._direct = (r.compression == "gzip" and not r.shuffle and not r.fletcher32
                            and r.scaleoffset is None and r.id.get_create_plist().get_nfilters() == 1)
            self._all = None  # decided at the first read
        return self._f

    def _check_identity(self, f: h5py.File) -> None:
        """Refuse a file reopened by path that is not the one first opened: another inode or
        header digest, or, for a file that was complete, another size or modification time
        (a file still being written grows)."""
        dev, ino, size, mtime, digest, complete = self.identity
        now = _identity(f, complete)
        if (now[0], now[1]) != (dev, ino):
            what = "another file now lies at that path"
        elif now[4] != digest:
            what = "its header digest changed"
        elif complete and (now[2], now[3]) != (size, mtime):
            what = f"it was modified ({size} -> {now[2]} bytes)" if now[2] != size else "it was modified"
        else:
            return
        raise FileReplacedError(
            f"{self.path} was replaced after it was first opened ({what}); this process would read another file's "
            "records: restart with the file there now, or put the original back")

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
        state.pop("_all", None)  # read again in the process that needs it
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
        return self._chunks([(index, group)])[0]

    def _chunks(self, chunks: list[tuple[int, int]]) -> np.ndarray:
        """The byte planes of chunks ``(image, group)``, one row each ([len, chunk_bytes]), as :meth:`_planes`."""
        if self._f is None or self._pid != os.getpid():
            self._file()
        if self._all is None:  # a small complete file: inflate every chunk once, in this process
            self._all = False
            if self.complete and self._records.size <= self.RECORDS_IN_MEMORY_BYTES:
                with contextlib.suppress(OSError, RuntimeError):  # damage: read chunk by chunk, naming the image
                    self._all = self._records[()]
        if self._all is not False and chunks:
            at = np.asarray(chunks, dtype=np.int64).reshape(-1, 2)
            return self._all[at[:, 0], at[:, 1]]
        size = self.codec.chunk_bytes
        parts = []
        index = chunks[0][0] if chunks else -1
        try:
            read = self._records.id.read_direct_chunk if self._direct else None
            for index, group in chunks:
                if read is not None:
                    mask, data = read((index, group, 0))
                    if mask == 0:
                        data = zlib.decompress(data)
                        if len(data) != size:
                            raise OSError(f"chunk holds {len(data)} bytes, expected {size}")
                        parts.append(data)
                        continue
                parts.append(self._records[index, group].tobytes())
        except (OSError, RuntimeError, zlib.error) as e:  # h5py: RuntimeError for a damaged chunk index
            raise CorruptFileError(
                f"records of image {index} in {self.path} cannot be read ({str(e).splitlines()[0]}); "
                f"the file is truncated or damaged: {self._verify_hint}") from None
        return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(len(parts), size)

    def read_image(self, index: int) -> ImageRecords:
        """All K stored views of image ``index``."""
        index = self._check_row(index)
        c = self.codec
        recs = np.concatenate([c.from_planes(p) for p in self._chunks([(index, g) for g in range(c.chunks_per_image)])])
        recs = recs[:self.num_views]
        return self._unpack(recs, index)

    def _check_view(self, view: int) -> int:
        view = int(view)
        if not 0 <= view < self.num_views:
            raise IndexError(f"view {view} out of range for {self.num_views} views per image")
        return view

    @property
    def _verify_hint(self) -> str:
        return f"check the whole file with `reinforced-data inspect --verify {self.path}`, then regenerate it"

    def _out_of_range(self, index: int, view: int, e: Exception) -> CorruptFileError:
        return CorruptFileError(f"record ({index}, {view}) in {self.path} is out of range ({e}): the file is "
                                f"damaged; {self._verify_hint}")

    def _bad_partner(self, index: int, view: int) -> CorruptFileError:
        return CorruptFileError(f"record ({index}, {view}) in {self.path} names a partner out of range: the file is "
                                f"damaged; {self._verify_hint}")

    def read(self, index: int, view: int) -> Record:
        """Stored view ``view`` of image ``index``."""
        index = self._check_row(index)
        view = self._check_view(view)
        c = self.codec
        g, j = divmod(view, c.per_chunk)
        buf = self._planes(index, g)[j::c.per_chunk].tobytes()
        try:
            params, indices, probs, partner = c.unpack_one(buf)
        except ValueError as e:
            raise self._out_of_range(index, view, e) from None
        if partner is not None and (partner[0] >= self.num_images or partner[1] >= self.num_views):
            raise self._bad_partner(index, view)
        return Record(params, indices, probs, partner)

    def read_many(self, images: Any, views: Any) -> ImageRecords:
        """Stored view ``views[j]`` of image ``images[j]`` for every ``j``, as arrays (row ``j``).

        The batched :meth:`read`: each chunk is read and inflated once, however many of the
        records lie in it, and the records are decoded together. Errors name the first
        record (image, view) at fault, as :meth:`read` does.
        """
        images = np.asarray(images, dtype=np.int64).reshape(-1)
        views = np.asarray(views, dtype=np.int64).reshape(-1)
        if images.size != views.size:
            raise ValueError(f"got {images.size} image indices but {views.size} views; pass one view per image")
        if images.size == 1:  # one record: read() decodes it in fewer numpy calls
            rec = self.read(int(images[0]), int(views[0]))
            pi, pv = (None, None) if rec.partner is None else (np.array(rec.partner[:1]), np.array(rec.partner[1:]))
            return ImageRecords(rec.params.reshape(1), rec.indices[None], rec.probs[None], pi, pv)
        bad = (images < 0) | (images >= self.num_images)
        bad[~bad] = ~self.written[images[~bad]]
        if bad.any():
            self._check_row(int(images[bad.argmax()]))  # raises, naming it
        bad = (views < 0) | (views >= self.num_views)
        if bad.any():
            self._check_view(int(views[bad.argmax()]))
        c = self.codec
        groups, cols = np.divmod(views, c.per_chunk)
        chunks, slot = np.unique(images * c.chunks_per_image + groups, return_inverse=True)
        planes = self._chunks([divmod(key, c.chunks_per_image) for key in chunks.tolist()])
        # byte b of record j of a chunk is at b * n + j: gather each record's bytes, then see them as records
        planes = planes.reshape(chunks.size, c.record_size, c.per_chunk)
        recs = np.ascontiguousarray(planes[slot.reshape(-1), :, cols]).view(c.record_dtype).reshape(-1)
        try:
            out = c.unpack(recs)
        except ValueError:
            for j in range(recs.size):  # find the record at fault
                try:
                    c.unpack(recs[j:j + 1])
                except ValueError as e:
                    raise self._out_of_range(int(images[j]), int(views[j]), e) from None
            raise  # pragma: no cover - a batch fails only where one of its records does
        if out.partner_index is not None:
            bad = (out.partner_index >= self.num_images) | (out.partner_view >= self.num_views)
            if bad.any():
                j = int(bad.argmax())
                raise self._bad_partner(int(images[j]), int(views[j]))
        return out

    def _unpack(self, recs: np.ndarray, index: int) -> ImageRecords:
        try:
            out = self.codec.unpack(recs)
        except ValueError as e:
            raise CorruptFileError(f"records of image {index} in {self.path} are out of range ({e}): the file is "
                                   f"damaged; {self._verify_hint}") from None
        if out.partner_index is not None and (out.partner_index.max() >= self.num_images
                                              or out.partner_view.max() >= self.num_views):
            raise CorruptFileError(f"records of image {index} in {self.path} name a partner out of range: the file "
                                   f"is damaged; {self._verify_hint}")
        return out

    # -- identities
    @property
    def has_identities(self) -> bool:
        """Whether the file stores what identifies each row's image (docs/format.md, "Dataset identity")."""
        return IDENTITIES in self._file()

    def identities(self) -> list[str] | None:
        """What identifies each row's image (for folders, its path relative to the dataset root), one
        a row; None for a file without them (written before them, or from a dataset without a file
        list). Read from the file at each call; checked against the sealed fingerprint."""
        f = self._file()
        if IDENTITIES not in f:
            return None
        try:
            blob = _read_small(f, IDENTITIES)
        except (KeyError, OSError, RuntimeError, ValueError) as e:  # KeyError: its header is damaged
            _raise_damaged(self.path, e, f)
        return decode_identities(blob, self.fingerprint, self.path)

    # -- checks
    def check_dataset(self, fingerprint: Fingerprint, *, images: bool = False) -> None:
        """Raise :class:`DatasetMismatchError` unless the dataset whose ``fingerprint`` is given
        (:func:`reinforced_data._datasets.dataset_fingerprint`) is the one this file was made for.

        ``images=True`` also compares the hash of a fixed sample of decoded images (when both
        the file and the dataset carry one); a resumed generation always does. A dataset matched
        to a file's rows by identity gives its fingerprint in the file's row order
        (:func:`reinforced_data._datasets.match_rows`).
        """
        fp = fingerprint
        diffs = self.fingerprint.differences(fp, images=images)
        if fp.num_classes and fp.num_classes != self.num_classes:
            diffs.append(f"the file's teachers predict {self.num_classes} classes, the dataset has {fp.num_classes}")
        if diffs:
            hint = ""
            if "the file lists differ" in diffs and not self.has_identities:  # another order, say
                hint = ("; this file stores no identities (it was written before files held them, or they were "
                        "removed), so items are matched by "
                        "position: list the dataset in the order it was reinforced from (a folder: torchvision's "
                        "ImageFolder order), or regenerate the file")
            raise DatasetMismatchError(f"{self.path} was made for another dataset: {'; '.join(diffs)}{hint}")


def read_header(path: str | os.PathLike) -> tuple[Header, bool, np.ndarray]:
    """(header, complete, written mask) of any reinforcement file, complete or not."""
    with ReinforcementFile(path, accept_incomplete=True) as f:
        return f.header, f.complete, f.written
