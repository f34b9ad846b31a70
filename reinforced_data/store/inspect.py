"""What a reinforcement file holds: :func:`inspect_file` (its header and statistics over its
records) and :func:`format_inspect` (the text ``reinforced-data inspect`` prints)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import DatasetMismatchError
from .format import FORMAT_VERSION, Fingerprint
from .reader import ReinforcementFile

__all__ = ["inspect_file", "format_inspect"]


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


def format_inspect(info: dict) -> str:
    """The text ``reinforced-data inspect`` prints for :func:`inspect_file`'s summary."""
    lines = [f"file:             {info['file']}"]
    done = "yes" if info["complete"] else f"NO ({info['images_written']} of {info['num_images']} images written)"
    shard = info["shard"]
    lines += [
        f"complete:         {done}",
        f"images (N):       {info['num_images']}",
        f"views (K):        {info['num_views']}",
        f"top-k (k):        {info['topk']}",
        f"classes:          {info['num_classes']}",
        f"probabilities:    {info['prob_encoding']}",
        f"policy:           {json.dumps(info['policy'], sort_keys=True)}",
    ]
    for t in info["teachers"]:
        size = "x".join(map(str, t["input_size"])) if t.get("input_size") else "view size"
        src = f" from {t['checkpoint']}" if t.get("checkpoint") else ""
        lines.append(f"teacher:          {t['name']}{src} (input {size}, mean {t['mean']}, std {t['std']})")
    lines += [
        f"seed:             {info['seed']} (mixing block size {info['mix_block_size']})",
        "shard:            " + (f"rank {shard['rank']} of {shard['world_size']}" if shard["world_size"] > 1 else
                                f"merged from {shard['merged_from']} ranks" if shard.get("merged_from") else "single"),
        f"written by:       reinforced_data {info['library_version']} at {info['created']}",
        f"size:             {info['file_bytes']} bytes, {info['bytes_per_record']:.1f} bytes/record "
        f"({info['record_bytes_uncompressed']} uncompressed)",
    ]
    if info["teacher_top1_agreement"] is not None:
        lines += [
            f"teacher top-1 = label: {100 * info['teacher_top1_agreement']:.1f}% of views "
            f"(over {info['stats_images']} images)",
            f"mean entropy:     {info['mean_entropy_nats']:.3f} nats (top-k renormalised)",
        ]
    gen = info.get("generation") or {}
    if gen.get("seconds"):
        lines.append(f"generation:       {gen.get('images', 0)} images in {gen['seconds']['total']:.1f} s on "
                     f"{gen.get('device')}")
    if "dataset_matches" in info:
        lines.append("dataset:          matches" if info["dataset_matches"] else
                     f"dataset:          DOES NOT MATCH: {info['dataset_mismatch']}")
    return "\n".join(lines)
