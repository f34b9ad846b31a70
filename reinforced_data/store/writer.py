"""Writing a reinforcement file: the writer's lock, :class:`ReinforcementWriter`, crash recovery.

The writer creates or resumes a file and appends whole image rows. It writes in HDF5's
single-writer/multiple-reader (SWMR) mode, whose ordered metadata writes keep the file
readable after the writer dies, even by ``kill -9``; a resumed writer copies such a file
into a clean one first. Rows are committed by a ``written`` flag set only after their data
is flushed; ``complete`` is set last.

A write the system refuses part way (a file-size limit, EFBIG) can leave the file shorter
than HDF5's own record of its length, and no longer marked open. A new file is therefore
built in memory and written out whole, and a resumed writer that finds its file cut short
recovers it as it does a killed writer's: every committed row whose chunks are whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import h5py
import numpy as np

from ..errors import (ConfigError, CorruptFileError, DatasetMismatchError, FileAccessError, OutputExistsError,
                      ReinforcementFileError, SettingsMismatchError)
from .format import (DEFLATE_LEVEL, DIGEST_ATTR, IDENTITIES, IDENTITIES_CHUNK, WRITTEN_CHUNK, Header, _sha256,
                     encode_identities, header_digest, smallest_uint)
from .reader import (_check_digest, _check_format, _open_cut_short, _open_h5, _raise_damaged, _raise_open_error,
                     _stored_eof)

__all__ = ["ReinforcementWriter", "copy_rows", "seal_header"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------- writer
class _Lock:
    """An exclusive advisory lock on ``path + '.lock'``, released when the process dies."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        while True:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
                    raise FileAccessError(
                        f"cannot create {self.path}, the lock that guards writing {path} ({e.strerror}); "
                        "write the output where files can be created") from None
                raise
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
             mode: str = "create", identities: Sequence[str] | None = None) -> "ReinforcementWriter":
        """``mode``: "create" (refuse an existing path), "overwrite", or "resume" (continue an existing
        file written with the same settings; create it when absent). ``identities``: what identifies
        each row's image (the dataset's file list, :func:`reinforced_data._datasets.dataset_files`),
        stored in a new file when it identifies every row (docs/format.md, "Dataset identity"); it
        must be the list the header's fingerprint hashed. A resumed file keeps what it has."""
        path = os.fspath(path)
        if mode not in ("create", "overwrite", "resume"):
            raise ConfigError(f"mode={mode!r}; choose create, overwrite or resume")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (header.num_images,):
            raise ConfigError(f"labels hold {labels.shape[0]} entries for {header.num_images} images")
        blob = encode_identities(identities)
        if blob is not None and (len(identities) != header.num_images
                                 or _sha256(blob.tobytes()) != header.fingerprint.files_sha256):
            raise ConfigError(f"the {len(identities)} identities given are not the file list the header's "
                              "fingerprint was computed from")
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
                f = cls._create(path, header, labels, blob)
        except BaseException:
            lock.release()
            raise
        return cls(path, header, f, lock)

    @staticmethod
    def _create(path: str, header: Header, labels: np.ndarray, identities: np.ndarray | None = None) -> h5py.File:
        # The file is built in memory and written out in one piece: HDF5 never writes it itself
        # until it is whole, so a write the system refuses (a file-size limit, a full disk) is one
        # plain OSError here, the partial file is removed, and no HDF5 handle is left half closed.
        tmp = path + ".creating"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        c = header.codec()
        with new_h5_file(os.path.basename(tmp), in_memory=True) as f:
            for k, v in header.to_attrs().items():
                set_attr(f.attrs, k, v)
            f.attrs["complete"] = np.uint8(0)
            set_attr(f.attrs, "generation", "null".ljust(GENERATION_BYTES))
            f.create_dataset(
                "records", shape=(header.num_images, c.chunks_per_image, c.chunk_bytes), dtype=np.uint8,
                chunks=(1, 1, c.chunk_bytes), compression="gzip", compression_opts=DEFLATE_LEVEL)
            n = header.num_images
            f.create_dataset("labels", data=labels.astype(smallest_uint(max(int(labels.max(initial=0)), 1))),
                             chunks=(min(n, 65536),), compression="gzip")
            f.create_dataset("written", shape=(n,), dtype=np.uint8, chunks=(min(n, WRITTEN_CHUNK),),
                             compression="gzip")
            if identities is not None:
                f.create_dataset(IDENTITIES, data=identities, chunks=(min(identities.size, IDENTITIES_CHUNK),),
                                 compression="gzip", compression_opts=DEFLATE_LEVEL)
            seal_header(f)
            f.flush()
            image = f.id.get_file_image()
        try:
            with open(tmp, "xb") as fh:
                fh.write(image)
            f = _open_swmr_writer(tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        try:
            os.replace(tmp, path)
        except BaseException:
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        return f

    @classmethod
    def _reopen(cls, path: str, header: Header, labels: np.ndarray) -> h5py.File:
        cut_short = False
        try:
            src = _open_h5(path)  # a SWMR reader of a file a killed writer left open
        except CorruptFileError:
            # a writer stopped by the system mid-write (a file-size limit) may close the file shorter than
            # its superblock says; under the writer's lock, its rows are recovered below
            src = _open_cut_short(path)
            if src is None:
                raise
            cut_short = True
        try:
            _check_format(src, path)
            try:
                labels_now = src["labels"][:]
            except (OSError, RuntimeError, ValueError) as e:
                _raise_damaged(path, e, src)
            _check_digest(src, path, labels_now)
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
            if cut_short and int(src.attrs.get("complete", 0)):
                # a finished file cut short afterwards (a copy stopped half way): not a writer's doing
                raise CorruptFileError(
                    f"{path} is truncated (it has {os.path.getsize(path)} of its {_stored_eof(path)} bytes) though "
                    "its generation finished; restore it from where it was copied, or regenerate it "
                    "(reinforce --overwrite)")
            clean = not src.swmr_mode and not cut_short
        finally:
            src.close()
        if not clean:
            cls._recover(path, cut_short)
        f = _open_swmr_writer(path)
        if int(f.attrs.get("complete", 0)):
            log.info("%s is already complete", path)
        return f

    @staticmethod
    def _recover(path: str, cut_short: bool = False) -> None:
        """Copy a file whose writer died (still marked open for SWMR writing), or that was cut
        short (a file-size limit), into a clean one: every committed row whose chunks are whole."""
        if cut_short:
            log.warning("%s is shorter than its writer left it (a file-size limit?); recovering its committed rows",
                        path)
        else:
            log.warning("%s was left open by a writer that stopped; recovering its committed rows", path)
        tmp = path + ".recovering"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        src = _open_cut_short(path) if cut_short else h5py.File(path, "r", swmr=True)
        if src is None:  # pragma: no cover - _reopen saw it cut short under the same lock
            raise CorruptFileError(f"{path} changed while it was being recovered")
        try:
            try:
                written = src["written"][:]
                labels = src["labels"][:]
                # "generation" (the run's statistics) is left out: finish() writes it again, and a
                # writer stopped while writing it (a file-size limit, say) leaves it unreadable
                attrs = {k: src.attrs[k] for k in src.attrs if k != "generation"}
            except (KeyError, OSError, RuntimeError, ValueError) as e:
                _raise_damaged(path, e, src)
            stats = None
            with contextlib.suppress(OSError, RuntimeError, ValueError, KeyError):
                stats = src.attrs.get("generation")
            with new_h5_file(tmp) as dst:
                _copy_layout(src, dst, attrs)
                if stats is not None:
                    set_attr(dst.attrs, "generation", stats)
                elif int(attrs.get("complete", 0)):  # finish() writes the statistics again
                    dst.attrs["complete"] = np.uint8(0)
                dst["labels"][:] = labels
                rows = np.flatnonzero(written)
                whole = copy_rows(src["records"], dst["records"], rows, check_bytes=src["records"].chunks[2])
                if len(whole) < len(rows):  # chunks past the end of a file cut short read as zeros
                    lost = np.setdiff1d(rows, whole)
                    log.warning("%s: %d committed rows cannot be read back (first: image %d); they will be "
                                "generated again", path, lost.size, int(lost[0]))
                    written[lost] = 0
                    dst.attrs["complete"] = np.uint8(0)
                dst["written"][:] = written
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
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
            raise ConfigError(f"write() needs params [{n}, {K}] and top-k [{n}, {K}, {k}]; got {params.shape}, "
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
            set_generation(self._f.attrs, generation)
            self._f.flush()
        if not int(self._f.attrs.get("complete", 0)):  # a finished file resumed is left byte for byte as it was
            self._f.attrs.modify("complete", np.uint8(1))
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


def _open_swmr_writer(path: str) -> h5py.File:
    """Open ``path`` read-write and SWMR-writing in one call: opening "r+" and then switching
    swmr_mode on would leave, if killed in between, a file marked open for writing but not
    for SWMR, which HDF5 then refuses to open at all."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    try:
        return h5py.File(h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl))
    except OSError as e:
        _raise_open_error(path, e, writing=True)


#: attributes the root group keeps in its object header (compact storage) before it moves them
#: to a heap of their own; a file has about 20
MAX_COMPACT_ATTRS = 64


def new_h5_file(name: str, in_memory: bool = False) -> h5py.File:
    """A new, empty HDF5 file (latest format) that keeps its attributes in the root group's object
    header, where damage fails its checksum: HDF5 keeps more than 8 attributes in a fractal heap
    by default, and one flipped bit in that heap's indirect block makes reading them loop forever.
    ``in_memory``: built in memory (the core driver, nothing written; ``get_file_image()``)."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    if in_memory:
        fapl.set_fapl_core(block_size=64 * 1024, backing_store=False)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_attr_phase_change(MAX_COMPACT_ATTRS, 0)
    fcpl.set_obj_track_times(False)  # no clock in the root group's header: rewriting a flag changes no other byte
    return h5py.File(h5py.h5f.create(os.fsencode(name), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def set_attr(attrs: h5py.AttributeManager, name: str, value: Any) -> None:
    """Set one attribute; a string is stored fixed-length (UTF-8) inside the attribute itself.
    h5py stores a ``str`` variable-length, in the file's global heap, where one damaged size
    field makes HDF5 loop forever when the attribute is read (no error, no timeout can stop it);
    readers read both kinds alike."""
    if isinstance(value, (str, bytes)):  # bytes: a string attribute read back from a file
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        value = np.array(data, dtype=h5py.string_dtype("utf-8", max(len(data), 1)))
    attrs[name] = value


#: bytes reserved for the ``generation`` statistics when a file is created ("null" until the run
#: finishes), so that finishing overwrites them in place: rewriting an attribute can move the heap
#: that holds every attribute, and a write cut short there (a full disk, a file-size limit) would
#: take the whole header with it
GENERATION_BYTES = 4096


def set_generation(attrs: h5py.AttributeManager, stats: dict | None) -> None:
    """Write the run's statistics (docs/format.md ``generation``), in place when they fit the reserved size."""
    data = json.dumps(stats, sort_keys=True).encode()
    if len(data) > GENERATION_BYTES or "generation" not in attrs or \
            attrs.get_id("generation").dtype != np.dtype(f"S{GENERATION_BYTES}"):
        set_attr(attrs, "generation", data.decode())
        return
    attr = h5py.h5a.open(attrs._id, b"generation")
    attr.write(np.array(data.ljust(GENERATION_BYTES), dtype=f"S{GENERATION_BYTES}"), mtype=attr.get_type())


def seal_header(f: h5py.File) -> str:
    """Write the header digest of an open, writable file over its attributes and labels as
    stored (docs/format.md); call it whenever a writer sets an attribute the digest covers."""
    digest = header_digest(f.attrs, f["labels"][:])
    set_attr(f.attrs, DIGEST_ATTR, digest)
    return digest


def _copy_layout(src: h5py.File, dst: h5py.File, attrs: dict | None = None) -> None:
    """Create in ``dst`` the datasets of ``src`` (same shapes, chunks, filters), and its attributes;
    the ``identities`` (when ``src`` has them), which never change, are copied whole."""
    for k, v in (attrs if attrs is not None else dict(src.attrs)).items():
        set_attr(dst.attrs, k, v)
    for name in ("records", "labels", "written"):
        s = src[name]
        dst.create_dataset(name, shape=s.shape, dtype=s.dtype, chunks=s.chunks, compression=s.compression,
                           compression_opts=s.compression_opts)
    if IDENTITIES in src:
        s = src[IDENTITIES]
        dst.create_dataset(IDENTITIES, data=s[()], chunks=s.chunks, compression=s.compression,
                           compression_opts=s.compression_opts)


def copy_rows(src: h5py.Dataset, dst: h5py.Dataset, rows: Iterable[int], check_bytes: int | None = None) -> list[int]:
    """Copy the chunks of image rows ``rows`` from one records dataset to another of the same
    layout, as stored: no re-deflating (recovery and merge). With ``check_bytes``, a row is
    copied only if each of its chunks inflates to that many bytes. Returns the rows copied."""
    copied = []
    for i in rows:
        chunks = [src.id.read_direct_chunk((int(i), g, 0)) for g in range(src.shape[1])]
        if check_bytes is not None and not all(_inflates_to(mask, data, check_bytes) for mask, data in chunks):
            continue
        for g, (mask, data) in enumerate(chunks):
            dst.id.write_direct_chunk((int(i), g, 0), data, mask)
        copied.append(int(i))
    return copied


def _inflates_to(mask: int, data: bytes, size: int) -> bool:
    try:
        return len(zlib.decompress(data) if mask == 0 else data) == size
    except zlib.error:
        return False
