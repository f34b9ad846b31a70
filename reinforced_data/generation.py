"""Generation: a dataset and a teacher ensemble → a reinforcement file.

For every image: decode it once, sample its K parameter sets from
``numpy.random.default_rng([seed, index])``, replay the K views as one batch (on the GPU
when there is one), let the teachers label them, keep the top-k, write the row.

Order and partners. The images are processed in *blocks* of ``block_size``: the index
order cut into fixed-size pieces (for mixing policies, a permutation seeded by
``seed`` first, so blocks mix classes). A mixed view's partner is another image of the
same block, drawn from ``default_rng([seed, index, 1])``, and one of its K stored views;
it is stored as that reference. Blocks are a function of (N, seed, block_size) alone,
so every stored byte is independent of the batch size, the number of decode workers,
the number of ranks, and of interruptions (for teachers whose output for a view does
not depend on the rest of the batch; see docs/format.md).

Ranks (``torchrun``) take contiguous ranges of blocks and each writes its own shard;
:func:`reinforced_data.store.merge` joins them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import store
from ._datasets import (RawImages, as_labels, dataset_files, dataset_fingerprint, dataset_labels, resolve_dataset,
                        to_uint8_image)
from .errors import ConfigError, FileAccessError, ReinforcedDataError, system_error_message
from .policy import Policy
from ._replay import compiled_available, replay
from .teachers import TeacherEnsemble, TeacherSpec

__all__ = ["reinforce", "Reinforcement", "Summary", "resolve_dataset", "block_order", "image_rng",
           "to_uint8_image", "default_device", "default_num_workers", "check_device"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 64
MAX_SEED = 2**63 - 1  # stored as a signed 64-bit attribute


# ---------------------------------------------------------------------- inputs
class _Decoded(torch.utils.data.Dataset):
    """Items as (index, uint8 image, label, seconds spent decoding), through the shared decode path.

    An image the decode path refuses (a :class:`ReinforcedDataError` or a missing file, both
    naming the image: ``"image 7: ... cannot be decoded"``) comes back as that error *item*
    instead of the image, so that it reaches the user as its one sentence, not wrapped in a
    DataLoader worker's traceback.
    """

    def __init__(self, dataset: Any) -> None:
        self.raw = RawImages(dataset)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int):
        t = time.perf_counter()
        try:
            img, label = self.raw[index]
        except (ReinforcedDataError, FileNotFoundError) as e:
            return index, e, -1, 0.0
        return index, img, label, time.perf_counter() - t


# ---------------------------------------------------------------------- order, seeds
def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws image ``index``'s K parameter sets."""
    return np.random.default_rng([seed, index])


def block_order(num_images: int, seed: int, mixing: bool) -> np.ndarray:
    """Processing order: the indices, permuted with ``default_rng([seed, N, 3])`` for mixing policies."""
    if not mixing:
        return np.arange(num_images, dtype=np.int64)
    return np.random.default_rng([seed, num_images, 3]).permutation(num_images).astype(np.int64)


def partners(seed: int, index: int, position: int, block: np.ndarray, params: np.ndarray,
             num_views: int) -> tuple[np.ndarray, np.ndarray]:
    """(partner image index [K], partner view [K]) of image ``index`` at ``position`` in ``block``.

    A mixed view's partner is another image of the block (itself in a one-image block)
    and one of that image's views; an unmixed view refers to itself.
    """
    m = len(block)
    rng = np.random.default_rng([seed, index, 1])
    offsets = rng.integers(1, m, size=num_views) if m > 1 else np.zeros(num_views, dtype=np.int64)
    views = rng.integers(0, num_views, size=num_views)
    p_index = block[(position + offsets) % m].astype(np.int64)
    mixed = params["mix_mode"] != 0
    p_index = np.where(mixed, p_index, index)
    p_view = np.where(mixed, views, np.arange(num_views))
    return p_index, p_view.astype(np.int64)


# ---------------------------------------------------------------------- summary
@dataclass
class Summary:
    """What a run did and where its time went (seconds)."""

    output: str
    images: int = 0  # labelled in this run
    skipped: int = 0  # already stored (resume)
    num_views: int = 0
    device: str = "cpu"
    batch_size: int = 0
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1
    seconds: dict = field(default_factory=lambda: dict.fromkeys(
        ("setup", "decode", "decode_wait", "sample", "replay", "teachers", "write", "loop", "total"), 0.0))
    # set when the ranks synchronised (reinforce(merge=True) / synchronize=True); not part of to_dict()
    ranks: list | None = field(default=None, compare=False)  # every rank's to_dict(), by rank
    merged: str | None = field(default=None, compare=False)  # the merged file, when rank 0 merged

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds["total"] if self.seconds["total"] else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["ranks"], d["merged"]  # what this rank did: stored in its file's generation record
        d["images_per_second"] = self.images_per_second
        return d

    def table(self) -> str:
        s = self.seconds
        teachers = s["teachers"] or float("nan")
        rows = [
            ("decode (in workers)" if self.num_workers else "decode", s["decode"]),
            ("waiting for decode", s["decode_wait"]) if self.num_workers else None,
            ("sample parameters", s["sample"]),
            ("replay", s["replay"]),
            ("teachers", s["teachers"]),
            ("top-k, encode, write", s["write"]),
        ]
        lines = [f"reinforced {self.images} images x {self.num_views} views in {s['total']:.1f} s "
                 f"({self.images_per_second:.1f} images/s) on {self.device}"
                 + (f", rank {self.rank}/{self.world_size}" if self.world_size > 1 else "")
                 + (f"; {self.skipped} images were already stored" if self.skipped else ""),
                 "| stage | seconds | % of teachers |", "|---|---|---|"]
        for row in rows:
            if row is not None:
                lines.append(f"| {row[0]} | {row[1]:.2f} | {100 * row[1] / teachers:.1f} |")
        overhead = s["loop"] - s["teachers"]
        lines.append(f"| **labelling loop: wall time beyond the teachers** | {overhead:.2f} | "
                     f"{100 * overhead / teachers:.1f} |")
        lines.append(f"| (setup: load teachers, scan the dataset, open the file) | {s['setup']:.2f} | |")
        return "\n".join(lines)


class _Clock:
    """Wall time per stage; on CUDA, device stages are timed with events and resolved lazily."""

    def __init__(self, device: torch.device, seconds: dict) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = seconds
        self.events: list[tuple[str, Any, Any]] = []

    def start(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, stage: str, t0) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.events.append((stage, t0, e))
        else:
            self.seconds[stage] += time.perf_counter() - t0

    def resolve(self) -> None:
        for stage, a, b in self.events:
            b.synchronize()
            self.seconds[stage] += a.elapsed_time(b) / 1000.0
        self.events.clear()


@dataclass
class _Pending:
    indices: list[int]
    params: np.ndarray  # [n, K]
    p_index: np.ndarray | None
    p_view: np.ndarray | None
    top_p: torch.Tensor
    top_i: torch.Tensor
    bad: torch.Tensor
    done: Any = None  # CUDA event recorded after the copies back to the host


def _rank_blocks(n_images: int, seed: int, mixing: bool, block_size: int, rank: int,
                 world_size: int) -> list[np.ndarray]:
    order = block_order(n_images, seed, mixing)
    nb = math.ceil(n_images / block_size)
    lo, hi = rank * nb // world_size, (rank + 1) * nb // world_size
    return [order[b * block_size:(b + 1) * block_size] for b in range(lo, hi)]


def _rank_indices(n_images, seed, mixing, block_size, rank, world_size) -> np.ndarray:
    blocks = _rank_blocks(n_images, seed, mixing, block_size, rank, world_size)
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------- defaults
def default_device() -> torch.device:
    """Where generation runs unless told: this rank's GPU (``cuda:$LOCAL_RANK``) when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def default_num_workers(device: str | torch.device) -> int:
    """Decode processes unless told: none on the CPU (they would compete with the teachers for the
    cores), ``min(8, cores - 1)`` when the teachers run on an accelerator."""
    if torch.device(device).type == "cpu":
        return 0
    return min(8, max((os.cpu_count() or 1) - 1, 0))


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has; a :class:`ConfigError` naming it otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {str(device)!r} is not a device name torch knows; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU on this machine; "
                              "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
                              f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return dev
    backend = getattr(torch, dev.type, None)
    if dev.type != "meta" and backend is not None and callable(getattr(backend, "is_available", None)) \
            and backend.is_available():
        return dev
    raise ConfigError(f"device {str(device)!r} cannot run the teachers on this machine; use cpu or cuda[:N]")


def _teacher_ensemble(teachers: Any, device: str | torch.device | None) -> TeacherEnsemble:
    """The ensemble for ``teachers`` on ``device`` (default :func:`default_device`).

    Teacher specs are checked here for what the command line lets through (an empty spec,
    a JSON spec whose model or checkpoint is not text), so each is one clear ConfigError.
    """
    if isinstance(teachers, TeacherEnsemble):
        dev = teachers.device
        if device is not None:
            want = check_device(device)
            if want.type != dev.type or want.index not in (None, dev.index):
                raise ConfigError(f"the teacher ensemble lives on {dev}, but device={want} was asked for")
        return teachers
    dev = check_device(default_device() if device is None else device)
    if isinstance(teachers, (str, os.PathLike, nn.Module, TeacherSpec)):
        teachers = [teachers]
    members = []
    for t in teachers:
        if isinstance(t, os.PathLike):
            t = os.fspath(t)
        if isinstance(t, str):
            if not t.strip():
                raise ConfigError("a teacher spec is empty; give a timm model name, NAME=CHECKPOINT, a checkpoint "
                                  "file, module:callable or a JSON object")
            t = TeacherSpec.parse(t)
        if isinstance(t, TeacherSpec):
            for key in ("model", "checkpoint"):
                value = getattr(t, key)
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"teacher spec: {key!r} must be text (a timm name, module:callable or a "
                                      f"file path), not {type(value).__name__} {value!r}")
        members.append(t)
    return TeacherEnsemble(members, device=dev)


def _check_output_dir(output: str | os.PathLike) -> None:
    """Refuse, before any work, an output whose directory is missing or is a file."""
    parent = os.path.dirname(os.path.abspath(os.fspath(output)))
    if os.path.isdir(parent):
        return
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise ConfigError(f"cannot write {os.fspath(output)}: {probe} is a file, not a directory")
    raise ConfigError(f"cannot write {os.fspath(output)}: the directory {parent} does not exist; create it first")


# ---------------------------------------------------------------------- the pipeline
@dataclass
class _Block:
    """A mixing block of this rank: its image indices, the positions still to label, and the
    positions to decode (all of them when views mix with partners of the block)."""

    images: np.ndarray
    todo: list[int]
    need: list[int]


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This rank and the number of ranks: as given, else from torchrun's RANK / WORLD_SIZE."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} must lie in [0, world_size={world_size})")
    return rank, world_size


class Reinforcement:
    """One generation run as a pipeline of named stages.

    ``plan → decode → sample → replay → teachers → write``: :meth:`plan` lists this rank's
    blocks still to label; :meth:`decode` yields their images once each (DataLoader
    workers); :meth:`sample` draws an image's K parameter sets; :meth:`replay` makes the
    views (and their mixing partners); :meth:`teachers` labels them (asynchronously on
    CUDA); :meth:`write` checks a labelled batch and commits its rows. :meth:`run` drives
    them, keeping one batch in flight so the GPU labels batch *n + 1* while batch *n* is
    written. Construction checks every argument and builds the teachers; nothing is
    written before :meth:`run`. Arguments are those of :func:`reinforce`.
    """

    def __init__(
        self,
        dataset: Any,
        teachers: TeacherEnsemble | nn.Module | Sequence[Any] | str,
        output: str | os.PathLike,
        *,
        policy: Policy | str | dict = "rrc_ra_re",
        num_views: int = 50,
        topk: int = 10,
        seed: int = 0,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        resume: bool = False,
        overwrite: bool = False,
        block_size: int = DEFAULT_BLOCK_SIZE,
        prob_encoding: str = "log_uint8",
        rank: int | None = None,
        world_size: int | None = None,
        progress: bool = True,
        labels: Sequence[int] | None = None,
        backend: str = "auto",
    ) -> None:
        self.t_start = time.perf_counter()
        if resume and overwrite:
            raise ConfigError("pass resume or overwrite, not both")
        _check_output_dir(output)
        self.policy = policy = Policy.parse(policy)
        self.dataset = dataset = resolve_dataset(dataset)
        n_images = len(dataset)
        if n_images < 1:
            raise ConfigError("the dataset is empty")
        for name, value in (("num_views", num_views), ("topk", topk), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed={seed!r} must be an integer in [0, 2**63 - 1] (it is stored as a signed 64-bit "
                              "integer)")
        rank, world_size = _rank_and_world(rank, world_size)
        if batch_size is None:
            batch_size = max(1, 256 // num_views)
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(f"num_workers={num_workers} must be >= 0")

        # teachers and device
        self.ensemble = ensemble = _teacher_ensemble(teachers, device)
        # teachers without a normalisation of their own see the tensor the student will get
        ensemble.bind_normalization(policy.mean, policy.std)
        self.device = dev = ensemble.device
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        self.num_workers = default_num_workers(dev) if num_workers is None else num_workers
        num_classes = ensemble.num_classes(policy.output_size)

        # dataset identity
        self.labels = labels_arr = dataset_labels(dataset) if labels is None else as_labels(labels, n_images)
        if labels_arr.max() >= num_classes:
            raise store.DatasetMismatchError(
                f"the dataset's labels reach {int(labels_arr.max())} but the teachers predict {num_classes} classes")
        #: what identifies each row's image (folders: its path), stored so that training maps any
        #: listing of the same images (timm's order, a Subset) to its rows
        self.identities = dataset_files(dataset)
        fingerprint = dataset_fingerprint(dataset, labels_arr, files=self.identities)
        if fingerprint.num_classes is not None and fingerprint.num_classes != num_classes:
            raise store.DatasetMismatchError(
                f"the dataset has {fingerprint.num_classes} classes but the teachers predict {num_classes}")
        if topk > num_classes:
            raise ConfigError(f"topk={topk} exceeds the {num_classes} classes the teachers predict; "
                              f"pass topk <= {num_classes}")

        self.header = store.Header(
            num_images=n_images, num_views=num_views, topk=topk, num_classes=num_classes, policy=policy,
            teachers=ensemble.describe(), fingerprint=fingerprint, seed=seed, mix_block_size=block_size,
            prob_encoding=prob_encoding, shard_rank=rank, shard_world_size=world_size)
        self.path = store.shard_path(output, rank, world_size) if world_size > 1 else os.fspath(output)
        self.mode = "resume" if resume else "overwrite" if overwrite else "create"
        self.seed, self.block_size, self.batch_size = seed, block_size, batch_size
        self.rank, self.world_size, self.progress, self.backend = rank, world_size, progress, backend
        self.summary = Summary(output=self.path, num_views=num_views, device=str(dev), batch_size=batch_size,
                               num_workers=self.num_workers, rank=rank, world_size=world_size)
        self.secs = self.summary.seconds
        self.clock = _Clock(dev, self.secs)
        self.writer: store.ReinforcementWriter | None = None

    # ------------------------------------------------------------------ driver
    def run(self) -> Summary:
        """Open (create, resume or overwrite) the file, label every image of this rank still to
        label, and mark the file complete. Rows are committed batch by batch: an interrupted
        run keeps them and a resumed one continues after them."""
        try:
            self.writer = writer = store.ReinforcementWriter.open(self.path, self.header, self.labels,
                                                                  mode=self.mode, identities=self.identities)
            secs = self.secs
            secs["setup"] = time.perf_counter() - self.t_start
            try:
                t_loop = time.perf_counter()
                self._label(self.plan(writer.written))
                secs["loop"] = time.perf_counter() - t_loop
                secs["total"] = time.perf_counter() - self.t_start
                writer.finish(expected=_rank_indices(len(self.dataset), self.seed, self.policy.mixing,
                                                     self.block_size, self.rank, self.world_size),
                              generation={**self.summary.to_dict(), "torch": torch.__version__,
                                          "python": platform.python_version(),
                                          "compiled_replay": compiled_available()})
            except BaseException as e:
                with contextlib.suppress(Exception):  # a failing close must not hide why we stopped
                    writer.close()
                if isinstance(e, ConfigError) and self.mode != "resume" and not writer.written.any():
                    # a configuration this run cannot carry out (e.g. an image the policy cannot crop)
                    # leaves no empty file behind to block the corrected rerun
                    with contextlib.suppress(OSError):
                        os.remove(self.path)
                raise
            writer.close()
        except (OSError, RuntimeError) as e:
            msg = None if isinstance(e, ReinforcedDataError) else system_error_message(e, self.path)
            if msg is None:
                raise
            raise FileAccessError(msg) from None
        log.info("%s", self.summary.table())
        return self.summary

    def _label(self, plan: list[_Block]) -> None:
        from tqdm.auto import tqdm

        if not plan:
            log.info("%s: every image of this shard is already stored", self.path)
            return
        summary = self.summary
        total = summary.skipped + sum(len(b.todo) for b in plan)
        bar = tqdm(total=total, initial=summary.skipped, unit="img", desc=os.path.basename(self.path),
                   disable=not self.progress, dynamic_ncols=True, smoothing=0.1)
        pending: _Pending | None = None
        finishing = False
        images = self.decode(plan)

        def write_pending() -> None:
            nonlocal pending, finishing
            finishing = True
            self.write(pending)
            finishing = False
            bar.update(len(pending.indices))
            summary.images += len(pending.indices)
            pending = None

        try:
            for blk in plan:
                decoded: dict[int, torch.Tensor] = {}
                params: dict[int, np.ndarray] = {}
                for p in blk.need:
                    index, img = next(images)
                    if index != blk.images[p]:  # pragma: no cover - the sampler fixes the order
                        raise RuntimeError(f"decode order broken: got image {index}, expected {blk.images[p]}")
                    params[index] = self.sample(index, img)
                    decoded[index] = img
                for b in range(0, len(blk.todo), self.batch_size):
                    positions = blk.todo[b:b + self.batch_size]
                    views, batch = self.replay(blk, positions, decoded, params)
                    launched = self.teachers(views, batch)
                    if pending is not None:
                        write_pending()
                    pending = launched
            if pending is not None:
                write_pending()
        except BaseException:
            # Interrupted (Ctrl-C, an error elsewhere): keep the batch the teachers already labelled.
            if pending is not None and not finishing:
                with contextlib.suppress(Exception):
                    write_pending()
            raise
        finally:
            bar.close()
            self.clock.resolve()
            images.close()  # the DataLoader's workers stop here, not at interpreter exit

    # ------------------------------------------------------------------ stages
    def plan(self, written: np.ndarray) -> list[_Block]:
        """This rank's blocks that still hold unwritten images (counting the written ones as skipped)."""
        plan = []
        for blk in _rank_blocks(len(self.dataset), self.seed, self.policy.mixing, self.block_size, self.rank,
                                self.world_size):
            todo = [p for p in range(len(blk)) if not written[blk[p]]]
            self.summary.skipped += len(blk) - len(todo)
            if todo:
                plan.append(_Block(blk, todo, list(range(len(blk))) if self.policy.mixing else todo))
        return plan

    def decode(self, plan: list[_Block]):
        """Yield ``(index, uint8 image)`` for every image the plan needs, in plan order (on the
        device when it is CUDA), each decoded once through the shared decode path."""
        cuda = self.device.type == "cuda"
        order = [int(blk.images[p]) for blk in plan for p in blk.need]
        workers = self.num_workers
        loader = torch.utils.data.DataLoader(
            _Decoded(self.dataset), sampler=order, batch_size=None, num_workers=workers, pin_memory=cuda,
            prefetch_factor=max(2, math.ceil(self.block_size / workers)) if workers else None)
        it = iter(loader)
        try:
            for _ in order:
                t0 = time.perf_counter()
                index, img, label, dt = next(it)
                if isinstance(img, BaseException):
                    raise img
                self.secs["decode_wait"] += time.perf_counter() - t0
                self.secs["decode"] += dt
                if label >= 0 and label != self.labels[index]:
                    raise store.DatasetMismatchError(
                        f"image {index} has label {label} but the dataset's targets say {self.labels[index]}")
                yield index, (img.to(self.device, non_blocking=True) if cuda else img)
        finally:
            if hasattr(it, "_shutdown_workers"):  # stop the workers now, deterministically
                it._shutdown_workers()
            del it

    def sample(self, index: int, img: torch.Tensor) -> np.ndarray:
        """Image ``index``'s K parameter sets, from ``default_rng([seed, index])`` and its size."""
        t0 = time.perf_counter()
        params = self.policy.sample(image_rng(self.seed, index), self.header.num_views, int(img.shape[1]),
                                    int(img.shape[2]))
        self.secs["sample"] += time.perf_counter() - t0
        return params

    def replay(self, blk: _Block, positions: list[int], images: dict, params: dict) -> tuple[torch.Tensor, dict]:
        """The K views of each image at ``positions`` of the block (uint8 [n*K, 3, h, w]), and
        what :meth:`write` stores beside them (indices, params, mixing partners)."""
        K, seed, policy = self.header.num_views, self.seed, self.policy
        indices = [int(blk.images[p]) for p in positions]
        prm = np.stack([params[i] for i in indices])  # [n, K]
        src = [images[i] for i in indices for _ in range(K)]
        p_index = p_view = None
        kwargs = {}
        if policy.mixing:
            pairs = [partners(seed, i, p, blk.images, params[i], K) for i, p in zip(indices, positions)]
            p_index = np.stack([a for a, _ in pairs])
            p_view = np.stack([b for _, b in pairs])
            kwargs["partners"] = [images[int(j)] for j in p_index.reshape(-1)]
            kwargs["partner_params"] = np.stack([params[int(j)][int(v)] for j, v in zip(p_index.reshape(-1),
                                                                                       p_view.reshape(-1))])
        t0 = self.clock.start()
        views = replay(src, prm.reshape(-1), policy, out_dtype=torch.uint8, backend=self.backend, **kwargs)
        self.clock.stop("replay", t0)
        return views, {"indices": indices, "params": prm, "p_index": p_index, "p_view": p_view}

    def teachers(self, views: torch.Tensor, batch: dict) -> _Pending:
        """Start the teachers on the views and their top-k (asynchronous on CUDA)."""
        clock = self.clock
        t0 = clock.start()
        probs, bad = self.ensemble.predict(views)
        top_p, top_i = probs.topk(self.header.topk, dim=1)
        if top_p.is_cuda:
            top_p, top_i, bad = (t.to("cpu", non_blocking=True) for t in (top_p, top_i, bad))
        clock.stop("teachers", t0)
        done = None
        if clock.cuda:
            done = torch.cuda.Event()
            done.record()
        return _Pending(batch["indices"], batch["params"], batch["p_index"], batch["p_view"], top_p, top_i, bad, done)

    def write(self, p: _Pending) -> None:
        """Wait for a labelled batch, check its outputs are finite, and commit its rows."""
        if p.done is not None:
            p.done.synchronize()  # this batch only: the next one keeps the GPU busy meanwhile
        t0 = time.perf_counter()
        K, n = self.header.num_views, len(p.indices)
        self.ensemble.check_finite(p.bad, image_indices=np.repeat(p.indices, K), view_indices=np.tile(np.arange(K), n))
        k = p.top_i.shape[1]
        self.writer.write(p.indices, p.params, p.top_i.numpy().reshape(n, K, k), p.top_p.numpy().reshape(n, K, k),
                          p.p_index, p.p_view)
        self.writer.commit()
        self.secs["write"] += time.perf_counter() - t0


# ---------------------------------------------------------------------- main entry
def reinforce(
    dataset: Any,
    teachers: TeacherEnsemble | nn.Module | Sequence[Any] | str,
    output: str | os.PathLike,
    *,
    merge: bool = False,
    synchronize: bool | None = None,
    **settings: Any,
) -> Summary:
    """Write a reinforcement file for ``dataset`` (see the module docstring).

    The keyword arguments besides ``merge`` and ``synchronize`` are :class:`Reinforcement`'s
    (its signature is theirs, defaults included; ``inspect.signature(reinforce)`` shows them all).

    Args:
        dataset: an ImageFolder path, ``"synthetic:N"``, or a map-style dataset whose items
            are ``(image, label)`` with a uint8 image (tensor [3, H, W] or PIL).
        teachers: a :class:`TeacherEnsemble`, an ``nn.Module``, or teacher specs
            (see :class:`~reinforced_data.teachers.TeacherSpec`). A teacher without a
            normalisation of its own (a plain module, say) is fed the views normalised with
            the policy's mean and std, exactly as ``ReinforcedDataset`` gives them to the student.
        output: the file to write; with several ranks, each writes
            :func:`~reinforced_data.store.shard_path` of it.
        policy: a :class:`Policy`, preset name, or JSON.
        num_views: K, views per image. topk: k, classes kept per view.
        seed: the seed of every draw, in [0, 2**63 - 1]. batch_size: images per teacher
            batch (each contributes K views; default: about 256 views). device: default
            :func:`default_device`. num_workers: decode processes (default
            :func:`default_num_workers`).
        resume / overwrite: what to do when ``output`` exists (default: refuse).
        block_size: images per mixing block (part of the file's identity).
        prob_encoding: "log_uint8" (default) or "float16".
        rank / world_size: default from the RANK / WORLD_SIZE environment (torchrun).
        labels: ground-truth labels, when the dataset has no ``targets``.
        backend: replay backend ("auto", "compiled", "reference").
        merge: with several ranks running together (torchrun), wait for every rank, then
            rank 0 merges the shards into ``output`` (see :mod:`reinforced_data.distributed`).
        synchronize: wait for every rank and gather their summaries (``Summary.ranks``)
            without merging; implied by ``merge``. Without either, ranks never talk to each
            other (each writes its shard; :func:`~reinforced_data.store.merge` joins them).

    Returns:
        This rank's :class:`Summary`; after ``merge``/``synchronize`` also every rank's
        (``ranks``) and the merged file (``merged``, on every rank).
    """
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"reinforce() got unexpected keyword argument(s) {', '.join(unknown)}")
    rank, world_size = _rank_and_world(settings.get("rank"), settings.get("world_size"))

    def run() -> Summary:
        return Reinforcement(dataset, teachers, output, **settings).run()

    if world_size <= 1 or not (merge or synchronize):
        return run()
    from . import distributed

    return distributed.run_ranks(run, output, rank=rank, world_size=world_size, merge=merge,
                                 overwrite=bool(settings.get("overwrite") or settings.get("resume")))


#: :class:`Reinforcement`'s keyword arguments and defaults: the settings of a run, written once
_SETTINGS = {name: p.default for name, p in inspect.signature(Reinforcement).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}
_run_params = [p for p in inspect.signature(reinforce).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
reinforce.__signature__ = inspect.signature(reinforce).replace(parameters=_run_params + [
    p for p in inspect.signature(Reinforcement).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY])
del _run_params
