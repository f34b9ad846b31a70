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
import json
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
from ._datasets import RawImages, as_labels, dataset_fingerprint, dataset_labels, resolve_dataset, to_uint8_image
from .policy import PRESETS, Policy
from .replay import compiled_available, replay
from .teachers import TeacherEnsemble, TeacherSpec

__all__ = ["reinforce", "Summary", "parse_policy", "resolve_dataset", "block_order", "image_rng", "to_uint8_image"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 64


# ---------------------------------------------------------------------- inputs
def parse_policy(policy: Policy | str | dict) -> Policy:
    """A :class:`Policy` from itself, a preset name, a JSON object (text or file), or a dict.

    A JSON object may name a ``"preset"`` and override some of its fields.
    """
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        text = policy.strip()
        if text in PRESETS:
            return Policy.preset(text)
        if not text.startswith("{"):
            if not os.path.isfile(text):
                raise ValueError(f"policy {text!r} is neither a preset ({', '.join(sorted(PRESETS))}), "
                                 "a JSON object, nor a JSON file")
            with open(text) as f:
                text = f.read()
        try:
            policy = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"policy is not valid JSON ({e})") from None
    if not isinstance(policy, dict):
        raise ValueError(f"a policy must be a preset name or a JSON object, not {type(policy).__name__}")
    d = dict(policy)
    preset = d.pop("preset", None)
    return Policy.preset(preset, **d) if preset else Policy.from_dict(d)


class _Decoded(torch.utils.data.Dataset):
    """Items as (index, uint8 image, label, seconds spent decoding), through the shared decode path."""

    def __init__(self, dataset: Any) -> None:
        self.raw = RawImages(dataset)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int):
        t = time.perf_counter()
        img, label = self.raw[index]
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

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds["total"] if self.seconds["total"] else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
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


# ---------------------------------------------------------------------- main entry
def reinforce(
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
    num_workers: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    prob_encoding: str = "log_uint8",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    labels: Sequence[int] | None = None,
    backend: str = "auto",
) -> Summary:
    """Write a reinforcement file for ``dataset`` (see the module docstring).

    Args:
        dataset: an ImageFolder path, ``"synthetic:N"``, or a map-style dataset whose items
            are ``(image, label)`` with a uint8 image (tensor [3, H, W] or PIL).
        teachers: a :class:`TeacherEnsemble`, an ``nn.Module``, or teacher specs
            (see :class:`~reinforced_data.teachers.TeacherSpec`).
        output: the file to write; with several ranks, each writes
            :func:`~reinforced_data.store.shard_path` of it.
        policy: a :class:`Policy`, preset name, or JSON.
        num_views: K, views per image. topk: k, classes kept per view.
        seed: the seed of every draw. batch_size: images per teacher batch (each
            contributes K views; default: about 256 views). device: default CUDA when
            available. num_workers: decode processes.
        resume / overwrite: what to do when ``output`` exists (default: refuse).
        block_size: images per mixing block (part of the file's identity).
        prob_encoding: "log_uint8" (default) or "float16".
        rank / world_size: default from the RANK / WORLD_SIZE environment (torchrun).
        labels: ground-truth labels, when the dataset has no ``targets``.
        backend: replay backend ("auto", "compiled", "reference").
    """
    t_start = time.perf_counter()
    if resume and overwrite:
        raise ValueError("pass resume or overwrite, not both")
    policy = parse_policy(policy)
    dataset = resolve_dataset(dataset)
    n_images = len(dataset)
    if n_images < 1:
        raise ValueError("the dataset is empty")
    if num_views < 1 or topk < 1 or block_size < 1 or seed < 0:
        raise ValueError("num_views, topk and block_size must be >= 1 and seed >= 0")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
    if batch_size is None:
        batch_size = max(1, 256 // num_views)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")

    # teachers and device
    if isinstance(teachers, TeacherEnsemble):
        ensemble = teachers
        dev = ensemble.device
        want = torch.device(device) if device is not None else dev
        if want.type != dev.type or want.index not in (None, dev.index):
            raise ValueError(f"the teacher ensemble lives on {ensemble.device}, but device={want} was asked for")
    else:
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if isinstance(teachers, (str, nn.Module, TeacherSpec)):
            teachers = [teachers]
        ensemble = TeacherEnsemble(list(teachers), device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    num_classes = ensemble.num_classes(policy.output_size)

    # dataset identity
    labels_arr = dataset_labels(dataset) if labels is None else as_labels(labels, n_images)
    if labels_arr.max() >= num_classes:
        raise store.DatasetMismatchError(
            f"the dataset's labels reach {int(labels_arr.max())} but the teachers predict {num_classes} classes")
    fingerprint = dataset_fingerprint(dataset, labels_arr)
    if fingerprint.num_classes is not None and fingerprint.num_classes != num_classes:
        raise store.DatasetMismatchError(
            f"the dataset has {fingerprint.num_classes} classes but the teachers predict {num_classes}")
    if topk > num_classes:
        raise ValueError(f"topk={topk} exceeds the {num_classes} classes the teachers predict; "
                         f"pass topk <= {num_classes}")

    header = store.Header(
        num_images=n_images, num_views=num_views, topk=topk, num_classes=num_classes, policy=policy,
        teachers=ensemble.describe(), fingerprint=fingerprint, seed=seed, mix_block_size=block_size,
        prob_encoding=prob_encoding, shard_rank=rank, shard_world_size=world_size)
    path = store.shard_path(output, rank, world_size) if world_size > 1 else os.fspath(output)
    mode = "resume" if resume else "overwrite" if overwrite else "create"
    writer = store.ReinforcementWriter.open(path, header, labels_arr, mode=mode)
    summary = Summary(output=path, num_views=num_views, device=str(dev), batch_size=batch_size,
                      num_workers=num_workers, rank=rank, world_size=world_size)
    summary.seconds["setup"] = time.perf_counter() - t_start
    try:
        t_loop = time.perf_counter()
        _run(dataset, ensemble, writer, policy, labels_arr, summary, seed=seed, block_size=block_size,
             batch_size=batch_size, num_workers=num_workers, rank=rank, world_size=world_size, device=dev,
             progress=progress, backend=backend)
        summary.seconds["loop"] = time.perf_counter() - t_loop
        summary.seconds["total"] = time.perf_counter() - t_start
        writer.finish(expected=_rank_indices(n_images, seed, policy.mixing, block_size, rank, world_size),
                      generation={**summary.to_dict(), "torch": torch.__version__, "python": platform.python_version(),
                                  "compiled_replay": compiled_available()})
    finally:
        writer.close()
    log.info("%s", summary.table())
    return summary


def _rank_blocks(n_images: int, seed: int, mixing: bool, block_size: int, rank: int,
                 world_size: int) -> list[np.ndarray]:
    order = block_order(n_images, seed, mixing)
    nb = math.ceil(n_images / block_size)
    lo, hi = rank * nb // world_size, (rank + 1) * nb // world_size
    return [order[b * block_size:(b + 1) * block_size] for b in range(lo, hi)]


def _rank_indices(n_images, seed, mixing, block_size, rank, world_size) -> np.ndarray:
    blocks = _rank_blocks(n_images, seed, mixing, block_size, rank, world_size)
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def _run(dataset, ensemble: TeacherEnsemble, writer: store.ReinforcementWriter, policy: Policy, labels: np.ndarray,
         summary: Summary, *, seed, block_size, batch_size, num_workers, rank, world_size, device, progress, backend):
    from tqdm.auto import tqdm

    K, k = writer.header.num_views, writer.header.topk
    mixing = policy.mixing
    written = writer.written
    plan, decode_list = [], []
    for blk in _rank_blocks(len(dataset), seed, mixing, block_size, rank, world_size):
        todo = [p for p in range(len(blk)) if not written[blk[p]]]
        summary.skipped += len(blk) - len(todo)
        if todo:
            need = list(range(len(blk))) if mixing else todo
            plan.append((blk, todo, need))
            decode_list += [int(blk[p]) for p in need]
    total = summary.skipped + sum(len(t) for _, t, _ in plan)
    if not plan:
        log.info("%s: every image of this shard is already stored", writer.path)
        return

    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        _Decoded(dataset), sampler=decode_list, batch_size=None, num_workers=num_workers, pin_memory=cuda,
        prefetch_factor=max(2, math.ceil(block_size / num_workers)) if num_workers else None)
    it = iter(loader)
    secs = summary.seconds
    clock = _Clock(device, secs)
    bar = tqdm(total=total, initial=summary.skipped, unit="img", desc=os.path.basename(writer.path),
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    pending: _Pending | None = None
    finishing = False

    def finish_pending() -> None:
        nonlocal pending, finishing
        finishing = True
        _finish(pending, writer, ensemble, clock, secs, K)
        finishing = False
        bar.update(len(pending.indices))
        summary.images += len(pending.indices)
        pending = None

    try:
        for blk, todo, need in plan:
            images: dict[int, torch.Tensor] = {}
            params: dict[int, np.ndarray] = {}
            for p in need:
                t0 = time.perf_counter()
                index, img, label, dt = next(it)
                secs["decode_wait"] += time.perf_counter() - t0
                secs["decode"] += dt
                if index != blk[p]:  # pragma: no cover - the sampler fixes the order
                    raise RuntimeError(f"decode order broken: got image {index}, expected {blk[p]}")
                if label >= 0 and label != labels[index]:
                    raise store.DatasetMismatchError(
                        f"image {index} has label {label} but the dataset's targets say {labels[index]}")
                t0 = time.perf_counter()
                params[index] = policy.sample(image_rng(seed, index), K, int(img.shape[1]), int(img.shape[2]))
                secs["sample"] += time.perf_counter() - t0
                images[index] = img.to(device, non_blocking=True) if cuda else img
            for b in range(0, len(todo), batch_size):
                positions = todo[b:b + batch_size]
                launched = _launch(blk, positions, images, params, ensemble, policy, seed, K, k, clock, backend)
                if pending is not None:
                    finish_pending()
                pending = launched
        if pending is not None:
            finish_pending()
    except BaseException:
        # Interrupted (Ctrl-C, an error elsewhere): keep the batch the teachers already labelled.
        if pending is not None and not finishing:
            with contextlib.suppress(Exception):
                finish_pending()
        raise
    finally:
        bar.close()
        clock.resolve()
        del it


def _launch(blk, positions, images, params, ensemble, policy, seed, K, k, clock, backend) -> _Pending:
    """Replay the views of these images and start the teachers (asynchronous on CUDA)."""
    indices = [int(blk[p]) for p in positions]
    prm = np.stack([params[i] for i in indices])  # [n, K]
    src = [images[i] for i in indices for _ in range(K)]
    p_index = p_view = None
    kwargs = {}
    if policy.mixing:
        pairs = [partners(seed, i, p, blk, params[i], K) for i, p in zip(indices, positions)]
        p_index = np.stack([a for a, _ in pairs])
        p_view = np.stack([b for _, b in pairs])
        kwargs["partners"] = [images[int(j)] for j in p_index.reshape(-1)]
        kwargs["partner_params"] = np.stack([params[int(j)][int(v)] for j, v in zip(p_index.reshape(-1),
                                                                                   p_view.reshape(-1))])
    t0 = clock.start()
    views = replay(src, prm.reshape(-1), policy, out_dtype=torch.uint8, backend=backend, **kwargs)
    clock.stop("replay", t0)
    t0 = clock.start()
    probs, bad = ensemble.predict(views)
    top_p, top_i = probs.topk(k, dim=1)
    if top_p.is_cuda:
        top_p, top_i, bad = (t.to("cpu", non_blocking=True) for t in (top_p, top_i, bad))
    clock.stop("teachers", t0)
    done = None
    if clock.cuda:
        done = torch.cuda.Event()
        done.record()
    return _Pending(indices, prm, p_index, p_view, top_p, top_i, bad, done)


def _finish(p: _Pending, writer, ensemble: TeacherEnsemble, clock: _Clock, secs: dict, K: int) -> None:
    """Wait for a launched batch, check it, and write its rows."""
    if p.done is not None:
        p.done.synchronize()  # this batch only: the next one keeps the GPU busy meanwhile
    t0 = time.perf_counter()
    n = len(p.indices)
    ensemble.check_finite(p.bad, image_indices=np.repeat(p.indices, K), view_indices=np.tile(np.arange(K), n))
    k = p.top_i.shape[1]
    writer.write(p.indices, p.params, p.top_i.numpy().reshape(n, K, k), p.top_p.numpy().reshape(n, K, k),
                 p.p_index, p.p_view)
    writer.commit()
    secs["write"] += time.perf_counter() - t0
