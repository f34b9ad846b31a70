"""The training side: :class:`ReinforcedDataset`, the one-line swap around a user's dataset.

``ReinforcedDataset(ImageFolder(traindir, train_transform), "train_plus.h5")`` returns, for
image ``i``, one stored view of it replayed from its parameters and the teachers' soft
label for exactly that view. Reinforced samples read the raw image through
:class:`reinforced_data._datasets.RawImages` (``strip=True``: the user's transform is
bypassed, the caller's dataset is never mutated), the decode path generation used, so the
replayed pixels are the pixels the teacher labelled. With probability ``1 - p`` a sample
is the *original* item instead: the user's dataset (and transform) with a one-hot,
optionally label-smoothed, target.

Items map to the file's rows by identity when the file and the dataset both have it (each
row's path: timm's ``ImageDataset``, a ``Subset`` or a re-listed folder train on a file
reinforced from ``ImageFolder``; :func:`reinforced_data._datasets.match_rows`), else by
position. ``index`` below is the item's file row: one step (``_file_rows``) maps the
wrapped dataset's indices to rows, and everything after it works on rows.

Which view (and whether a sample is original) is a hash of ``(seed, epoch, index)`` after
:meth:`ReinforcedDataset.set_epoch`, the same for any number of workers or ranks. Without
``set_epoch`` it is a hash of ``(seed, a draw from torch's default generator, index)``:
DataLoader reseeds its workers from the main process's generator every epoch (and a
persistent worker's generator moves on), so every epoch still gets new views and
``torch.manual_seed`` keeps a run reproducible.

A DataLoader fetches a batch with :meth:`ReinforcedDataset.__getitems__`, which does the
batch's work at once: the view choices (the hash vectorised over numpy uint64; without
``set_epoch``, one draw per item in order, as item by item), one read of all records
(:meth:`ReinforcementFile.read_many`), the targets, and one ``replay`` call. It returns
what ``[dataset[i] for i in indices]`` returns, bit for bit; ``dataset[i]`` is the batch
of one.

Batch replay (``batch_replay=True`` or :meth:`ReinforcedDataset.loader`): workers return
the decoded uint8 sources and their records; replay runs once per batch on ``device``
(e.g. the GPU), giving the same bytes as the per-sample path. Either way each record is
encoded (and so checked) once, by the replay; only when a replay fails are the records
checked one by one, to name a damaged record (:class:`CorruptFileError`) apart from an
image that changed (:class:`DatasetMismatchError`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from . import _args
from ._datasets import RawImages, dataset_fingerprint, image_sample_sha256, match_rows
from .errors import ConfigError, CorruptFileError, DatasetMismatchError, IncompleteFileError
from .policy import Policy
from ._replay import BACKENDS, replay
from .store import ReinforcementFile

__all__ = ["ReinforcedDataset", "ReinforcedLoader", "collate_sources", "TARGETS", "RESIDUALS"]

log = logging.getLogger(__name__)

#: the most output bytes one replay call of a batch fetch writes, and so how many decoded
#: sources a worker holds at once (see ReinforcedDataset._reinforced)
REPLAY_CALL_BYTES = 4 << 20

TARGETS = ("dense", "sparse")
RESIDUALS = ("uniform", "renormalize")

_M64 = (1 << 64) - 1


def _mix64(x: Any) -> Any:
    """splitmix64's finaliser: a well-spread 64-bit hash of a 64-bit integer, or of each of a
    uint64 array's (which wraps where the masks cut a Python integer: the same values)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class ReinforcedDataset(torch.utils.data.Dataset):
    """A user's map-style dataset with a reinforcement file: replayed views and soft targets.

    Args:
        dataset: the dataset as the training script builds it (e.g.
            ``ImageFolder(traindir, train_transform)``); items are ``(image, label)``.
        file: the reinforcement file made for it (a path or a
            :class:`~reinforced_data.store.ReinforcementFile`); it must be complete.
        p: probability that a sample is reinforced; otherwise it is the dataset's own item
            with a one-hot target.
        target: ``"dense"`` (float32 ``[num_classes]``) or ``"sparse"`` (``(indices int64
            [k], probs float32 [k])``; the mass ``1 - probs.sum()`` belongs spread
            uniformly over the classes not listed).
        residual: ``"uniform"`` (the stored top-k plus the residual mass spread uniformly
            over the other classes) or ``"renormalize"`` (the top-k rescaled to sum to 1).
        label_smoothing: smoothing of the one-hot targets of original samples.
        out_dtype: ``torch.uint8`` (raw pixels) or a floating dtype (normalised with the
            policy's mean and std).
        channels_last: replayed views in channels-last memory format.
        views: use only some stored views: an int n (the first n) or a sequence of indices.
        seed: seed of the view choice and of the ``p`` coin.
        backend: replay backend ("auto", "compiled", "reference").
        batch_replay: ``__getitem__`` returns sources and records for
            :meth:`loader`, which replays a whole batch at once.
    """

    def __init__(self, dataset: Any, file: str | os.PathLike | ReinforcementFile, *, p: float = 1.0,
                 target: str = "dense", residual: str = "uniform", label_smoothing: float = 0.0,
                 out_dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 views: int | Sequence[int] | None = None, seed: int = 0, backend: str = "auto",
                 batch_replay: bool = False) -> None:
        if not _is_number(p) or not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"p={p!r} must be a number in [0, 1] (the probability of a reinforced sample)")
        if target not in TARGETS:
            raise ConfigError(f"target={target!r}; choose one of {TARGETS}")
        if residual not in RESIDUALS:
            raise ConfigError(f"residual={residual!r}; choose one of {RESIDUALS}")
        if not _is_number(label_smoothing) or not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"label_smoothing={label_smoothing!r} must be a number in [0, 1)")
        if not isinstance(out_dtype, torch.dtype) or not (out_dtype == torch.uint8 or out_dtype.is_floating_point):
            raise ConfigError(f"out_dtype={out_dtype} must be torch.uint8 or a floating dtype")
        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r}; choose one of {BACKENDS}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or int(seed) < 0:
            raise ConfigError(f"seed={seed!r} must be an integer >= 0")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigError(f"the dataset must be map-style (__getitem__ and __len__); got {type(dataset).__name__}")

        if isinstance(file, ReinforcementFile):
            f = file
            if not f.complete:
                raise IncompleteFileError(
                    f"{f.path} is incomplete ({int(f.written.sum())} of {f.num_images} images written); "
                    "finish it with `reinforced-data reinforce ... --resume` before training on it")
        else:
            f = ReinforcementFile(file)  # refuses missing, foreign, newer-format, damaged and incomplete files
        self.dataset = dataset
        self._path = f.path
        self._identity = f.identity  # a worker reopening the path checks it finds this file
        self._file: ReinforcementFile | None = f
        self.policy: Policy = f.policy
        self.num_classes: int = f.num_classes
        self.num_views: int = f.num_views
        self.topk: int = f.topk
        self._check_dataset(f)

        if views is None:
            chosen = np.arange(f.num_views)
        elif isinstance(views, (int, np.integer)) and not isinstance(views, bool):
            if not 1 <= int(views) <= f.num_views:
                raise ConfigError(f"views={views} must lie in [1, {f.num_views}] (the file stores {f.num_views} "
                                  "views per image)")
            chosen = np.arange(int(views))
        else:
            try:
                listed = list(views)
            except TypeError:
                listed = None
            if listed is None or isinstance(views, (bool, str)) or not all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in listed):
                raise ConfigError(f"views={views!r} must be a count of stored views or a list of view indices")
            chosen = np.asarray(listed, dtype=np.int64).reshape(-1)
            if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= f.num_views:
                raise ConfigError(f"views={list(views)} must be a non-empty list of view indices in "
                                  f"[0, {f.num_views})")
            if np.unique(chosen).size != chosen.size:
                raise ConfigError(f"views={chosen.tolist()} names a view more than once")
        self.views: list[int] = [int(v) for v in chosen]
        self.p, self.target, self.residual = float(p), target, residual
        self.label_smoothing = float(label_smoothing)
        self.out_dtype, self.channels_last = out_dtype, bool(channels_last)
        self.seed, self.backend, self.batch_replay = int(seed), backend, bool(batch_replay)
        # shared memory: set_epoch reaches DataLoader workers, persistent ones included
        self._epoch = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        self._set_derived()

    def _set_derived(self) -> None:
        """Per-process helpers of :meth:`choice` (not pickled): a numpy view of the shared epoch
        (read without a tensor call) and the seed's first hash round."""
        self._epoch_np = self._epoch.numpy()
        self._seed_key = (self.seed, _mix64(self.seed))

    # ------------------------------------------------------------------ setup
    def _check_dataset(self, f: ReinforcementFile) -> None:
        """Check that the file was made for the dataset, and set how items map to file rows:
        by identity when both have identities (``_rows``: the row of each item, ``_base_index``:
        the base item of each row, None where that is the identity; ``_base``: the dataset under
        its Subsets, whose items are decoded), else by position (item i is row i)."""
        m = match_rows(self.dataset, f.identities(), f.labels, f.path)  # refuses extra or missing images, other labels
        if m is None:  # by position, today's rule
            n = len(self.dataset)
            if n != f.num_images:
                raise DatasetMismatchError(
                    f"{f.path} was made for another dataset: the file holds {f.num_images} images, the dataset {n}; "
                    "pass the dataset the file was generated from")
            self._base, self._rows, self._base_index, order, files = self.dataset, None, None, None, None
        else:
            self._base, self._rows, self._base_index, files = m.base, m.rows, m.base_index, m.base_files
            order = m.order
            log.info("%s: %d items mapped to its rows by identity", f.path, len(self.dataset))
        self._raw = RawImages(self._base, strip=True)
        fp = dataset_fingerprint(self._base, files=files, order=order)
        stored = f.fingerprint.images_sha256
        if self._raw._tensor_decode and stored and fp.images_sha256 not in (None, stored):
            # torchvision.io's pixels differ from the ones the file was made from (by the PIL loader,
            # as files written before torchvision.io decoded them, or by another build of the libraries)
            pil = image_sample_sha256(self._base, decoder="pil", order=order)
            if pil == stored:
                log.warning("%s: torchvision.io decodes the images to other pixels than the file was generated "
                            "from (another libjpeg-turbo build, or a file decoded by PIL); reading every image with "
                            "the dataset's PIL loader", f.path)
                self._raw = RawImages(self._base, strip=True, decoder="pil")
                fp = dataclasses.replace(fp, images_sha256=pil, images_decoder=self._raw.decoder_name)
        # labels, file list, class count and a sample of decoded images: one error naming the mismatch
        f.check_dataset(fp, images=True)
        top = int(f.labels.max(initial=0))
        if top >= f.num_classes:  # pragma: no cover - generation refuses such files
            raise DatasetMismatchError(f"{f.path}: a label is {top} but the teachers predict {f.num_classes} classes")

    @property
    def file(self) -> ReinforcementFile:
        """The reinforcement file (reopened lazily in each process)."""
        if self._file is None:
            self._file = ReinforcementFile(self._path, identity=self._identity)
        return self._file

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None  # reopened by path in the worker: no per-worker copy of the file's arrays
        del state["_epoch_np"], state["_seed_key"]  # a pickled numpy view would be a copy, not the shared epoch
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._set_derived()

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Make the view choice a function of ``(seed, epoch, index)`` (reaches running workers)."""
        if int(epoch) < 0:
            raise ConfigError(f"epoch={epoch} must be >= 0")
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int | None:
        e = int(self._epoch.item())
        return None if e < 0 else e

    def __repr__(self) -> str:
        return (f"ReinforcedDataset({type(self.dataset).__name__}, {self._path!r}, p={self.p}, target={self.target!r}, "
                f"residual={self.residual!r}, views={len(self.views)}/{self.num_views}, seed={self.seed})")

    # ------------------------------------------------------------------ choices
    def choice(self, index: int) -> int:
        """The stored view sample ``index`` gets now, or -1 for an original sample.

        After :meth:`set_epoch`, a function of ``(seed, epoch, index)``; otherwise it uses
        one draw from torch's default generator (so each call differs).
        """
        return int(self._choices(self._file_rows(np.array([self._index(index)], dtype=np.int64)))[0])

    def _choices(self, indices: np.ndarray, on_original: Callable[[int], None] | None = None) -> np.ndarray:
        """:meth:`choice` of each of ``indices`` (int64 array, in order), vectorised.

        Without :meth:`set_epoch`, one draw per index from torch's default generator, in
        order, as :meth:`choice` called for each. ``on_original(j)`` is called for each
        original sample ``j`` right after its draw, where the per-item path reads it: the
        dataset's transform may draw from the same generator before the next item's draw.
        """
        e = self._epoch_np.item(0)
        if e >= 0 or on_original is None or self.p >= 1.0:
            out = self._pick(indices, e if e >= 0 else None)
            if on_original is not None and self.p < 1.0:
                for j in np.flatnonzero(out < 0).tolist():
                    on_original(j)
            return out
        out = np.empty(indices.size, dtype=np.int64)
        start = 0
        while start < indices.size:  # draw for the rest; keep the draws up to the first original
            state = torch.get_rng_state()
            picked = self._pick(indices[start:], None)
            first = np.flatnonzero(picked < 0)
            stop = indices.size if not first.size else start + int(first[0]) + 1
            out[start:stop] = picked[:stop - start]
            if first.size:  # rewind the generator to just after the original's draw, then read it
                torch.set_rng_state(state)
                torch.randint(0, 1 << 62, (stop - start,))
                on_original(stop - 1)
            start = stop
        return out

    def _pick(self, indices: np.ndarray, epoch: int | None) -> np.ndarray:
        """Views (-1: original) of ``indices`` (int64) in ``epoch``, or, for None, under one draw each
        from torch's default generator: the hash of ``(seed, epoch, index)`` of the module docstring.
        The hash takes Python integers or uint64 arrays alike; a single index is hashed as an int
        (numpy's per-call cost would be most of the work)."""
        seed, k0 = self._seed_key
        if seed != self.seed:  # the seed was changed after construction
            seed, k0 = self._seed_key = (self.seed, _mix64(self.seed))
        one = indices.size == 1
        if epoch is None:  # a draw in [0, 2^62) with the top bit set: apart from any epoch
            draws = torch.randint(0, 1 << 62, indices.shape)
            epoch = (1 << 63) | (int(draws.item()) if one else draws.numpy().astype(np.uint64))
        key = _mix64(_mix64(k0 ^ epoch) ^ (int(indices[0]) if one else indices.astype(np.uint64)))
        views = self.views if one else np.asarray(self.views, dtype=np.int64)
        n = len(views)
        out = views[((_mix64(key ^ 2) >> 32) * n) >> 32] if n > 1 else views[0]
        if self.p < 1.0:
            coin = (_mix64(key ^ 1) >> 11) * (1.0 / (1 << 53)) >= self.p
            out = (-1 if coin else out) if one else np.where(coin, -1, out)
        return np.full(indices.size, out, dtype=np.int64) if np.ndim(out) == 0 else out

    def _file_rows(self, idx: np.ndarray) -> np.ndarray:
        """The file rows of the dataset's items ``idx`` (int64, in range): the one step from the
        wrapped dataset's indices to the file's. Everything after it (the view choice, records,
        partners, sources, labels) works on file rows."""
        return idx if self._rows is None else self._rows[idx].astype(np.int64)

    def _index(self, index: Any) -> int:
        try:
            i = operator.index(index)  # ints, numpy integers, one-element integer tensors; not 2.7
        except TypeError:
            raise TypeError(f"index must be an integer, got {type(index).__name__} {index!r}") from None
        n = len(self.dataset)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for the {n} images of {self._path}")
        return i

    # ------------------------------------------------------------------ targets
    def _soft_targets(self, indices: np.ndarray, probs: np.ndarray) -> list:
        """The targets of stored views (rows of ``indices`` / ``probs``, [m, k]); see the class
        docstring for the convention."""
        m, k = probs.shape
        c = self.num_classes
        s = probs.sum(axis=1, dtype=np.float64)
        # the top-k rescaled to sum to 1: asked for, all classes listed, or quantised probs summing to 1 or above
        norm = True if self.residual == "renormalize" or k == c else s >= 1.0
        if norm is True or norm.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                scaled = probs / s.astype(np.float32)[:, None]
            zero = s <= 0
            if zero.any():
                scaled[zero] = np.float32(1.0 / k)
            probs = scaled if norm is True else np.where(norm[:, None], scaled, probs)
        if self.target == "sparse":
            return list(zip(_rows(np.ascontiguousarray(indices, dtype=np.int64)),
                            _rows(np.ascontiguousarray(probs, dtype=np.float32))))
        t = np.empty((m, c), dtype=np.float32)
        # the residual mass spread over the other classes
        t[:] = 0.0 if norm is True else np.where(norm, 0.0, (1.0 - s) / (c - k)).astype(np.float32)[:, None]
        t[np.arange(m)[:, None], indices] = probs
        return _rows(t)

    def _one_hot(self, label: int) -> Any:
        c, eps = self.num_classes, self.label_smoothing
        off = eps / c
        if self.target == "sparse":
            k = self.topk
            others = np.arange(k, dtype=np.int64)
            others = np.delete(others, label) if label < k else others[:k - 1]
            idx = np.concatenate([np.array([label], dtype=np.int64), others])
            probs = np.full(k, off, dtype=np.float32)
            probs[0] = 1.0 - eps + off
            return torch.from_numpy(idx), torch.from_numpy(probs)
        t = np.full(c, off, dtype=np.float32)
        t[label] = 1.0 - eps + off
        return torch.from_numpy(t)

    # ------------------------------------------------------------------ items
    def _source(self, row: int) -> torch.Tensor:
        """The decoded image of file row ``row``."""
        return self._raw[row if self._base_index is None else int(self._base_index[row])][0]

    def _original(self, index: int) -> tuple:
        """An original sample of file row ``index``: the dataset's own item (through its transform),
        a one-hot target."""
        img = self._base[index if self._base_index is None else int(self._base_index[index])][0]
        if not isinstance(img, torch.Tensor):
            raise ConfigError(f"original samples (p={self.p}) come from the dataset's transform as "
                              f"{type(img).__name__}, but replayed views are {self.out_dtype} tensors; give the "
                              "dataset a transform that returns tensors like the replayed views")
        self._check_original(tuple(img.shape), img.dtype, exact=True)
        return img, self._one_hot(int(self.file.labels[index]))

    def _check_original(self, shape: tuple, dtype: torch.dtype, exact: bool) -> None:
        """An original sample must batch with the replayed views: same shape, and the same dtype
        (``exact``) or at least the same kind, uint8 or floating (batch replay converts)."""
        h, w = self.policy.output_size
        if shape != (3, h, w):
            raise ConfigError(f"original samples (p={self.p}) come from the dataset's transform with shape "
                              f"{shape}, but replayed views are (3, {h}, {w}); make the transform "
                              "give the policy's output size")
        if (dtype != self.out_dtype) if exact else ((self.out_dtype == torch.uint8) != (dtype == torch.uint8)):
            raise ConfigError(f"original samples (p={self.p}) come from the dataset's transform as {dtype}, "
                              f"but replayed views are {self.out_dtype}; make the transform return the same "
                              + ("dtype" if exact else "kind"))

    def _image_name(self, index: int) -> str:
        """File row ``index`` named for an error: "image i (its path)"."""
        where = self._raw.path(index if self._base_index is None else int(self._base_index[index]))
        return f"image {index}" + (f" ({where})" if where else "")

    def _replay_error(self, index: int, view: int, e: Exception) -> DatasetMismatchError:
        return DatasetMismatchError(
            f"{self._image_name(index)} does not fit stored view {view} of {self._path} "
            f"({_args.one_record_message(e)}); the image changed since the file was generated: regenerate the file "
            "(`reinforced-data inspect --verify --data ...` checks every record against the images)")

    def _check_records(self, images: np.ndarray, views: np.ndarray, params: np.ndarray,
                       partner_images: np.ndarray | None, partner_views: np.ndarray | None,
                       pparams: np.ndarray | None) -> None:
        """Raise a :class:`CorruptFileError` naming the first record (image, view, field) whose values
        no image could make valid (a flip of 2, an unknown op id, a magnitude out of range): damage
        to the file, not a changed image. The partner records of mixed views (``partner_images`` /
        ``partner_views`` / ``pparams`` at the positions whose ``mix_mode`` is not 0) are checked too.
        Runs only after a replay failed: replay encodes (and so checks) every record once."""
        mixing = self.policy.mixing
        todo = [(params, images, views, mixing)]
        if pparams is not None:  # a partner contributes its own stored view, unmixed
            m = np.flatnonzero(params["mix_mode"] != 0)
            todo.append((pparams[m], partner_images[m], partner_views[m], False))
        for rows, imgs, vws, mix in todo:
            try:
                _args.check_records(rows, self.policy, mix)
                continue
            except ConfigError:
                pass
            for j in range(rows.shape[0]):  # find the record at fault
                try:
                    _args.check_records(rows[j:j + 1], self.policy, mix)
                except ConfigError as e:
                    raise self._record_error(int(imgs[j]), int(vws[j]), e) from None

    def _record_error(self, index: int, view: int, e: Exception) -> CorruptFileError:
        return _args.damaged_record(self._path, self._image_name(index), view, e)

    def _replay(self, srcs: list, params: np.ndarray, partners: list | None, partner_params: np.ndarray | None):
        kwargs = {} if partners is None else {"partners": partners, "partner_params": partner_params}
        return replay(srcs, params, self.policy, out_dtype=self.out_dtype, channels_last=self.channels_last,
                      backend=self.backend, **kwargs)

    def _reinforced(self, images: np.ndarray, views: np.ndarray) -> list:
        """The items of stored views ``views`` of ``images``: their records read at once, targets
        made at once, and (without batch replay) the views replayed in runs of at most
        REPLAY_CALL_BYTES of output, each run's sources decoded just before it and freed after:
        glibc serves blocks of that size from memory it reuses (a block above its 32 MiB mmap
        limit, such as 64 float32 224 px views, is mapped fresh and page-faulted on every call),
        and a worker holds one run's decoded sources at a time, not the whole batch's."""
        f = self.file
        recs = f.read_many(images, views)
        params = recs.params
        pparams, mixed = None, np.zeros(len(images), dtype=bool)
        if recs.partner_index is not None and (params["mix_mode"] != 0).any():
            # the partner's own stored view is replayed and mixed in
            m = np.flatnonzero(params["mix_mode"] != 0)
            pparams = params.copy()  # an unmixed view's partner is itself (mix_mode 0 leaves it as it is)
            if self.policy.mix_partner == "inline":  # the partner's parameters are in the record (ml-dr's)
                pparams[m] = self.policy.partner_params(params[m])
            else:
                pparams[m] = f.read_many(recs.partner_index[m], recs.partner_view[m]).params
            mixed[m] = True
        # the record holding each partner's parameters: the partner's own stored view, or (inline) the mixed view's
        inline = self.policy.mix_partner == "inline"
        prec_image, prec_view = (images, views) if inline else (recs.partner_index, recs.partner_view)
        targets = self._soft_targets(recs.indices, recs.probs)

        def sources(part: slice) -> tuple[list, list]:
            """The decoded sources of the views in ``part``, and their partners' (None: not mixed)."""
            at = range(len(images))[part]
            return ([self._source(int(images[j])) for j in at],
                    [self._source(int(recs.partner_index[j])) if mixed[j] else None for j in at])

        if self.batch_replay:  # replayed (and so encoded and checked) once, by replay_batch
            srcs, psrcs = sources(slice(None))
            pimg, pview = (prec_image, prec_view) if pparams is not None else (None, None)
            return [_BatchItem((src, params[j], psrc, None if psrc is None else pparams[j], targets[j]),
                               (int(images[j]), int(views[j]), int(pimg[j]) if mixed[j] else -1,
                                int(pview[j]) if mixed[j] else -1))
                    for j, (src, psrc) in enumerate(zip(srcs, psrcs))]
        oh, ow = self.policy.output_size
        per = max(1, REPLAY_CALL_BYTES // (3 * oh * ow * torch.empty(0, dtype=self.out_dtype).element_size()))
        out: list = []
        for a in range(0, len(images), per):
            part = slice(a, a + per)
            srcs, psrcs = sources(part)
            partners = None if pparams is None else [s if p is None else p for s, p in zip(srcs, psrcs)]
            try:
                out += self._replay(srcs, params[part], partners, None if pparams is None else pparams[part]).unbind(0)
            except ValueError as e:  # name the first damaged record, else the first image that does not fit its view
                self._check_records(images, views, params, prec_image, prec_view, pparams)
                for j, (src, psrc) in enumerate(zip(srcs, psrcs), start=a):
                    try:
                        self._replay([src], params[j:j + 1], None if psrc is None else [psrc],
                                     None if psrc is None else pparams[j:j + 1])
                    except ValueError as e1:
                        raise self._replay_error(int(images[j]), int(views[j]), e1) from e1
                raise self._replay_error(int(images[a]), int(views[a]), e) from e  # pragma: no cover
        return list(zip(out, targets))

    def __getitems__(self, indices: Sequence[int]) -> list:
        """The items of ``indices`` (what DataLoader's fetcher calls for a batch): the per-item
        results of ``[self[i] for i in indices]``, with the per-batch work done at once."""
        idx = self._file_rows(np.array([self._index(i) for i in indices], dtype=np.int64))
        if not idx.size:
            return []
        items: list = [None] * idx.size

        def original(j: int) -> None:
            items[j] = self._original(int(idx[j]))

        views = self._choices(idx, original)
        if self.p >= 1.0:  # no original samples
            return self._reinforced(idx, views)
        r = np.flatnonzero(views >= 0)
        if r.size:
            for j, item in zip(r.tolist(), self._reinforced(idx[r], views[r])):
                items[j] = item
        return items

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    # ------------------------------------------------------------------ batch replay
    def loader(self, batch_size: int = 1, shuffle: bool = False, num_workers: int = 0,
               device: str | torch.device = "cpu", **dataloader_kwargs: Any) -> "ReinforcedLoader":
        """A DataLoader whose workers decode and read records and whose batches are replayed
        at once on ``device``; yields ``(images, targets)`` on ``device``.

        ``dataloader_kwargs`` go to :class:`torch.utils.data.DataLoader` (``sampler``,
        ``drop_last``, ``persistent_workers``, ``pin_memory`` (default: True for CUDA), ...).
        """
        return ReinforcedLoader(self, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                device=device, **dataloader_kwargs)

    def replay_batch(self, batch: dict, device: str | torch.device = "cpu") -> tuple[torch.Tensor, Any]:
        """Replay a batch made by :func:`collate_sources` on ``device``: ``(images, targets)``."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        targets = batch["targets"]
        targets = (tuple(t.to(device, non_blocking=cuda) for t in targets) if isinstance(targets, (list, tuple))
                   else targets.to(device, non_blocking=cuda))
        rpos, opos = batch["reinforced"], batch["original"]
        views = None
        if len(rpos):
            flat = batch["flat"].to(device, non_blocking=cuda)
            base = flat.storage_offset()
            srcs = [flat.as_strided((3, h, w), _source_strides(h, w, hwc), base + off)
                    for off, h, w, hwc in batch["layout"].tolist()]
            n = len(rpos)
            kwargs = {}
            if batch["partner_params"] is not None:
                kwargs = {"partners": [srcs[j] for j in batch["partner_ref"].tolist()],
                          "partner_params": batch["partner_params"]}
            try:
                views = replay(srcs[:n], batch["params"], self.policy, out_dtype=self.out_dtype,
                               channels_last=self.channels_last, backend=self.backend, **kwargs)
            except ValueError as e:
                where = batch.get("records")
                if where is not None and len(where) == n:  # a damaged record is damage, named, not a mismatch
                    where = where.numpy()
                    self._check_records(where[:, 0], where[:, 1], batch["params"], where[:, 2], where[:, 3],
                                        batch["partner_params"])
                raise DatasetMismatchError(f"a batch of images does not fit its stored views in {self._path} "
                                           f"({e}); the images changed since the file was generated") from e
        if not len(opos):
            return views, targets
        orig = batch["originals"].to(device, non_blocking=cuda)
        h, w = self.policy.output_size
        self._check_original(tuple(orig.shape[1:]), orig.dtype, exact=False)  # converted below
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty((len(rpos) + len(opos), 3, h, w), dtype=self.out_dtype, device=device,
                          memory_format=fmt)
        # Batch positions as index tensors on the device: from pinned memory, copied without
        # blocking the host (a copy from a Python list would wait for the training stream).
        def positions(pos: list) -> torch.Tensor:
            return torch.tensor(pos, dtype=torch.int64, pin_memory=cuda).to(device, non_blocking=cuda)

        out[positions(opos)] = orig.to(self.out_dtype)
        if views is not None:
            out[positions(rpos)] = views
        return out, targets


class _BatchItem(tuple):
    """A batch-replay item, ``(source, params, partner source, partner params, target)``, that also
    names its record: ``record`` is ``(image, stored view, partner image, partner view)`` (-1, -1
    when unmixed), which :func:`collate_sources` passes on so that :meth:`ReinforcedDataset.replay_batch`
    can name a damaged record (the worker no longer encodes the records to check them: replay does)."""

    def __new__(cls, item: tuple, record: tuple[int, int, int, int] | None = None) -> "_BatchItem":
        self = super().__new__(cls, item)
        self.record = record
        return self


def _source_strides(h: int, w: int, hwc: int) -> tuple[int, int, int]:
    """Strides of a [3, h, w] source packed at its offset of the flat batch buffer: channels-last
    (``[h, w, 3]`` bytes) or channel planes. One ``as_strided`` call, not a slice, a view and a permute."""
    return (1, 3 * w, 3) if hwc else (h * w, w, 1)


def _rows(a: np.ndarray) -> list[torch.Tensor]:
    """The rows of a numpy array as tensors sharing its memory."""
    return [torch.from_numpy(a[0])] if a.shape[0] == 1 else list(torch.from_numpy(a).unbind(0))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _shared_uint8(numel: int) -> torch.Tensor:
    """A uint8 buffer, in shared memory inside a DataLoader worker (as default_collate does)."""
    if numel == 0 or torch.utils.data.get_worker_info() is None:
        return torch.empty(numel, dtype=torch.uint8)
    elem = torch.empty(0, dtype=torch.uint8)
    storage = elem._typed_storage()._new_shared(numel, device=elem.device)
    return elem.new(storage).resize_(numel)


def collate_sources(items: list[tuple]) -> dict:
    """Collate batch-replay items: sources packed into one flat uint8 buffer (each in its own
    memory order: channels-last views stay channels-last), records stacked, targets collated."""
    from torch.utils.data import default_collate

    rpos, opos, srcs, params, pparams, prefs, originals = [], [], [], [], [], [], []
    partner_srcs: list[torch.Tensor] = []
    records: list | None = []
    for j, item in enumerate(items):
        if len(item) == 2:  # an original sample: (image through the user's transform, target)
            opos.append(j)
            originals.append(item[0])
            continue
        src, prm, psrc, pprm, _ = item
        record = getattr(item, "record", None)
        if record is None:  # an item made elsewhere: a failed replay cannot name its record
            records = None
        elif records is not None:
            records.append(record)
        rpos.append(j)
        srcs.append(src)
        params.append(prm)
        pparams.append(pprm)
        partner_srcs.append(psrc)
    mixed = any(p is not None for p in pparams)
    if mixed:  # an unmixed view's partner is itself (mix_mode 0 leaves it as it is)
        for r, (psrc, pprm) in enumerate(zip(partner_srcs, pparams)):
            if pprm is None:
                prefs.append(r)
                pparams[r] = params[r]
            else:
                prefs.append(len(srcs))
                srcs.append(psrc)
    layout, total = [], 0
    for s in srcs:
        h, w = int(s.shape[1]), int(s.shape[2])
        hwc = s.stride(0) == 1 and s.permute(1, 2, 0).is_contiguous()
        layout.append((total, h, w, int(hwc)))
        total += 3 * h * w
    flat = _shared_uint8(total)
    if srcs and all(lay[1:] == layout[0][1:] for lay in layout):  # one size, one memory order: one copy
        _, h, w, hwc = layout[0]
        if hwc:
            torch.stack([s.permute(1, 2, 0) for s in srcs], out=flat.view(len(srcs), h, w, 3))
        else:
            torch.stack(srcs, out=flat.view(len(srcs), 3, h, w))
    else:
        base = flat.storage_offset()
        for (off, h, w, hwc), s in zip(layout, srcs):
            flat.as_strided((3, h, w), _source_strides(h, w, hwc), base + off).copy_(s)
    return {
        "flat": flat,
        "layout": torch.tensor(layout, dtype=torch.int64).reshape(-1, 4),
        "params": np.array(params, dtype=params[0].dtype) if params else None,
        "partner_params": np.array(pparams, dtype=pparams[0].dtype) if mixed else None,
        "partner_ref": torch.tensor(prefs, dtype=torch.int64) if mixed else None,
        "records": torch.tensor(records, dtype=torch.int64).reshape(-1, 4) if records else None,
        "reinforced": rpos,
        "original": opos,
        "originals": default_collate(originals) if originals else None,
        "targets": default_collate([item[-1] for item in items]),
    }


class ReinforcedLoader:
    """A :class:`torch.utils.data.DataLoader` over a batch-replay :class:`ReinforcedDataset`
    that replays each batch at once on ``device``; iterating yields ``(images, targets)``."""

    def __init__(self, dataset: ReinforcedDataset, batch_size: int = 1, shuffle: bool = False,
                 num_workers: int = 0, device: str | torch.device = "cpu", **dataloader_kwargs: Any) -> None:
        if "collate_fn" in dataloader_kwargs:
            raise ConfigError("ReinforcedLoader collates sources itself; do not pass collate_fn")
        self.device = torch.device(device)
        if not dataset.batch_replay:  # a batch-replay view of the same dataset (shares its epoch)
            dataset = copy.copy(dataset)
            dataset.batch_replay = True
        self.dataset = dataset
        dataloader_kwargs.setdefault("pin_memory", self.device.type == "cuda")
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                                  num_workers=num_workers, collate_fn=collate_sources,
                                                  **dataloader_kwargs)

    sampler = property(lambda self: self.loader.sampler)
    batch_size = property(lambda self: self.loader.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """``set_epoch`` of the sampler (when it has one, e.g. DistributedSampler) and of the dataset."""
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        for batch in self.loader:
            yield self.dataset.replay_batch(batch, self.device)
