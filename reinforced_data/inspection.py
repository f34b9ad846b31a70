"""What a reinforcement file holds: :func:`inspect_file` (its header and statistics over its
records), :func:`verify_file` (every chunk inflated, every record checked) and
:func:`format_inspect` (the text ``reinforced-data inspect`` prints)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .errors import ConfigError, CorruptFileError, DatasetMismatchError, ReinforcementFileError
from .store.format import Fingerprint, _sha256
from .store.reader import ReinforcementFile

__all__ = ["inspect_file", "verify_file", "format_inspect", "verdict"]


def verify_file(path: str | os.PathLike, data: Any = None, progress: bool = False, max_problems: int = 20) -> dict:
    """Check every part of a reinforcement file that can be checked without its teachers.

    The header digest (on open), the labels (in ``[0, num_classes)``, and equal to those
    the dataset fingerprint hashed), the ``complete`` flag against the ``written`` flags,
    and for every written image: each chunk read and inflated to its exact size, the
    padding after the last record zero, every record's class indices, probability codes
    and partner in range, and its parameters checked as replay checks them
    (:func:`reinforced_data._args.encode`: op ids, magnitudes, flips, crop sizes, erase
    and mix boxes inside the output). ``data`` (a dataset) adds the crop boxes checked
    against the real image sizes (each image is decoded: far slower) and the dataset's
    fingerprint. Returns ``{"ok", "problems" (the first ``max_problems``, one sentence
    each), "problem_count", "images_checked", "records_checked", "seconds",
    "us_per_record"}``.
    """
    t0 = time.perf_counter()
    problems: list[str] = []
    count = 0

    def problem(msg: str) -> None:
        nonlocal count
        count += 1
        if hint is not None:  # the advice to run this very check
            msg = msg.replace(f"; {hint}", "").replace(f": {hint}", "")
        if len(problems) < max_problems:
            problems.append(msg)

    hint = mismatch = None

    def report(images: int, records: int, opened: bool = True) -> dict:
        secs = time.perf_counter() - t0
        return {"ok": count == 0, "opened": opened, "problems": problems, "problem_count": count,
                "dataset_mismatch": mismatch,
                "images_checked": images, "records_checked": records, "seconds": secs,
                "us_per_record": 1e6 * secs / records if records else None}

    try:
        f = ReinforcementFile(path, accept_incomplete=True)
    except (ReinforcementFileError, OSError) as e:
        problem(str(e))
        return report(0, 0, opened=False)
    images = records = 0
    hint = f._verify_hint
    with f:
        h, c = f.header, f.codec
        labels = f.labels
        bad = np.flatnonzero((labels < 0) | (labels >= h.num_classes))
        if bad.size:
            i = int(bad[0])
            problem(f"{bad.size} labels lie outside [0, {h.num_classes}) (first: image {i} has label {labels[i]})")
        if _sha256(labels.astype("<i8").tobytes()) != h.fingerprint.labels_sha256:
            problem("its labels differ from those its dataset fingerprint was computed from")
        missing = np.flatnonzero(~f.written)
        if f.complete and missing.size and h.shard_world_size == 1:  # a shard holds only its own images
            problem(f"its complete flag is set but {missing.size} of {h.num_images} images are not written "
                    f"(first: image {int(missing[0])})")
        raw = mapped = identities = None
        try:
            identities = f.identities()  # checked against the sealed fingerprint
        except ReinforcementFileError as e:
            problem(str(e))
        if data is None or isinstance(data, Fingerprint):
            pass
        elif identities is None and f.has_identities:
            problem("its images cannot be matched to the dataset: the file's identities are damaged")
        else:
            from ._datasets import RawImages, match_rows, matched_fingerprint

            try:
                mapped = match_rows(data, identities, f.labels, f.path)  # None: by position
                f.check_dataset(matched_fingerprint(data, mapped), images=True)
            except DatasetMismatchError as e:  # another dataset: not damage (the verdict says WRONG DATASET)
                mismatch = str(e)
                problem(mismatch)
            else:
                raw = RawImages(data if mapped is None else mapped.base, strip=True)  # the pixels training replays on
                sizes_seen: dict[int, tuple[int, int]] = {}

                def size_of(j: int) -> tuple[int, int]:
                    """Image j's decoded size, each image decoded once (inline partners name other images)."""
                    if j not in sizes_seen:
                        sizes_seen[j] = tuple(raw[j if mapped is None else mapped.base_item(j)][0].shape[-2:])
                    return sizes_seen[j]
        rows = np.flatnonzero(f.written)
        it = rows
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(rows, desc="verify", unit="img", dynamic_ncols=True)
        K = h.num_views
        for i in it:
            i = int(i)
            images += 1
            try:
                recs = np.concatenate([c.from_planes(f._planes(i, g)) for g in range(c.chunks_per_image)])
            except CorruptFileError as e:
                problem(str(e))
                continue
            if recs.shape[0] > K and recs[K:].view(np.uint8).any():
                problem(f"image {i}: the padding after its {K} records is not zero")
            try:
                out = f._unpack(recs[:K], i)
            except CorruptFileError as e:
                problem(str(e))
                continue
            if out.indices.shape[-1] > 1:
                ranked = np.sort(out.indices, axis=-1)
                if (ranked[:, 1:] == ranked[:, :-1]).any():
                    problem(f"image {i}: a view's top-k names a class twice (its target would not be a distribution)")
            if h.prob_encoding == "float16":
                p = out.probs
                if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
                    problem(f"image {i}: a stored probability is not finite or outside [0, 1]")
                elif p.shape[-1] > 1 and (np.diff(p, axis=-1) > 0).any():
                    problem(f"image {i}: its top-k probabilities are not sorted")
            try:
                if raw is None:
                    _check_as_replay(h.policy, out.params)
                else:
                    _check_as_replay(h.policy, out.params, [size_of(i)] * K,
                                     lambda m: [size_of(int(out.partner_index[j])) for j in m])
            except (ConfigError, ValueError, OSError) as e:
                problem(f"image {i}: {' '.join(str(e).split())}")
            records += K
    return report(images, records)


def inspect_file(path: str | os.PathLike, data: Any = None, max_images: int = 2000, verify: bool = False,
                 progress: bool = False) -> dict:
    """A summary of a reinforcement file, complete or not (see ``reinforced-data inspect``).

    Statistics (teacher top-1 agreement with the ground-truth labels, mean entropy of the
    stored top-k distributions renormalised, in nats) are taken over at most
    ``max_images`` written images, evenly spaced (0: all). ``data``: a dataset, or its
    fingerprint, to check the file against. ``verify=True`` adds ``"verify"``, the report of
    :func:`verify_file` (``progress``: its progress bar).
    """
    with ReinforcementFile(path, accept_incomplete=True) as f:
        h = f.header
        rows = np.flatnonzero(f.written)
        if max_images and rows.size > max_images:
            rows = rows[np.linspace(0, rows.size - 1, max_images).round().astype(np.int64)]
        agree = total = 0
        entropy = 0.0
        unreadable = 0
        params, images = [], []
        for i in rows:
            try:
                r = f.read_image(int(i))
            except CorruptFileError:  # counted here; --verify names each
                unreadable += 1
                continue
            params.append(r.params)
            images.append(int(i))
            agree += int((r.indices[:, 0] == f.labels[i]).sum())
            p = r.probs.astype(np.float64)
            p = p / p.sum(axis=1, keepdims=True)
            entropy += float(-(p * np.log(np.maximum(p, 1e-30))).sum())
            total += r.indices.shape[0]
        bad_params, first_bad = _check_params(h.policy, params, images)
        out = {
            "file": f.path, "format_version": h.format_version,
            # a set flag with a row unwritten is not complete (verify reports it as a problem)
            "complete": f.complete and (h.shard_world_size > 1 or bool(f.written.all())), "complete_flag": f.complete,
            "header_digest": f.has_digest,
            "images_written": int(f.written.sum()), "num_images": h.num_images, "num_views": h.num_views,
            "topk": h.topk, "num_classes": h.num_classes, "prob_encoding": h.prob_encoding,
            "policy": json.loads(h.policy.to_json()), "teachers": h.teachers, "seed": h.seed,
            "mix_block_size": h.mix_block_size, "shard": {"rank": h.shard_rank, "world_size": h.shard_world_size,
                                                          **h.extra},
            "library_version": h.library_version, "created": h.created, "file_bytes": f.file_size,
            "bytes_per_record": f.bytes_per_record, "record_bytes_uncompressed": f.codec.record_size,
            "stats_images": int(rows.size) - unreadable, "stats_unreadable_images": unreadable,
            # parameters of the sampled images checked as replay checks them (without the images' sizes)
            "stats_invalid_param_images": bad_params, "stats_first_invalid_params": first_bad,
            "teacher_top1_agreement": agree / total if total else None,
            "mean_entropy_nats": entropy / total if total else None,
            "generation": f.generation,
            "images_decoder": h.fingerprint.images_decoder,
            "source": h.source,
        }
        if data is not None:
            from ._datasets import match_rows, matched_fingerprint

            try:
                f.check_dataset(data if isinstance(data, Fingerprint) else
                                matched_fingerprint(data, match_rows(data, f.identities(), f.labels, f.path)),
                                images=True)
                out["dataset_matches"], out["dataset_mismatch"] = True, None
            except DatasetMismatchError as e:
                out["dataset_matches"], out["dataset_mismatch"] = False, str(e)
    if verify:
        out["verify"] = verify_file(path, data=data, progress=progress)
    return out


def _check_as_replay(policy: Any, params: np.ndarray, sizes: list | None = None, partner_sizes: Any = None) -> None:
    """Encode records as replay encodes them (a ConfigError where replay would refuse them): their rows,
    their mixing, and an imported mixed view's inline partner parameters. ``sizes``: the source sizes of
    the views; ``partner_sizes(m)``: those of the partners of views ``m`` (without them, boxes are checked
    against the output only)."""
    from ._args import check_records, encode

    check_records(params, policy, policy.mixing, sizes)
    if policy.mix_partner == "inline":  # a mixed view's partner parameters, in its own record
        m = np.flatnonzero(params["mix_mode"] != 0)
        if m.size:
            try:
                encode(policy.partner_params(params[m]), policy, None if partner_sizes is None else partner_sizes(m))
            except ConfigError as e:
                raise ConfigError(f"its inline partner parameters: {e}") from None


def _check_params(policy: Any, params: list[np.ndarray], images: list[int]) -> tuple[int, str | None]:
    """(how many of ``images`` hold parameters replay would refuse, the first one's problem), checking
    the records of a few hundred images at a time and, where a group fails, each of its images."""

    def check(p: np.ndarray) -> None:
        _check_as_replay(policy, p)

    bad, first = 0, None
    step = 256
    for lo in range(0, len(params), step):
        try:
            check(np.concatenate(params[lo:lo + step]))
            continue
        except (ConfigError, ValueError):
            pass
        for i, p in zip(images[lo:lo + step], params[lo:lo + step]):
            try:
                check(p)
            except (ConfigError, ValueError) as e:
                bad += 1
                if first is None:
                    first = f"image {i}: {' '.join(str(e).split())}"
    return bad, first


def verdict(info: dict) -> str:
    """The one line that ends ``reinforced-data inspect``: what the checks run found, and, when
    not every record was checked (no ``--verify``), how to check them all."""
    verify_cmd = f"`reinforced-data inspect --verify {info['file']}`"
    problems = []
    if info.get("complete_flag") and not info["complete"]:
        problems.append("its complete flag is set but images are missing")
    if info.get("stats_unreadable_images"):
        problems.append(f"{info['stats_unreadable_images']} sampled images cannot be read")
    if info.get("stats_invalid_param_images"):
        problems.append(f"{info['stats_invalid_param_images']} sampled images hold parameters replay refuses "
                        f"({info['stats_first_invalid_params']})")
    v = info.get("verify")
    damage = 0 if v is None else v["problem_count"] - (1 if v.get("dataset_mismatch") else 0)
    if damage:
        problems.append(f"{damage} problem(s) found by --verify")
    if problems:
        then = "regenerate it" if v is not None else f"run {verify_cmd} to list every problem"
        return f"verdict:          DAMAGED: {'; '.join(problems)}; {then}"
    if info.get("dataset_matches") is False or (v is not None and v.get("dataset_mismatch")):
        return "verdict:          WRONG DATASET: the file was made for another dataset (see above)"
    if not info["complete"]:
        command = "import-mldr" if info.get("source") else "reinforce"  # an imported file, or a generated one
        head = (f"verdict:          INCOMPLETE: {info['images_written']} of {info['num_images']} images written; "
                f"continue it with `reinforced-data {command} ... --resume`")
        return head + ("" if v is not None else f"; {verify_cmd} checks every record written")
    if v is not None:
        return f"verdict:          OK: every record of its {v['images_checked']} images checked"
    return (f"verdict:          readable, but only the header and {info.get('stats_images', 0)} sampled images were "
            f"checked; run {verify_cmd} to check every record")


def format_inspect(info: dict) -> str:
    """The text ``reinforced-data inspect`` prints for :func:`inspect_file`'s summary."""
    lines = [f"file:             {info['file']}"]
    done = "yes" if info["complete"] else f"NO ({info['images_written']} of {info['num_images']} images written)"
    if info.get("complete_flag") and not info["complete"]:
        done = (f"NO: its complete flag is set, but only {info['images_written']} of {info['num_images']} images "
                "are written (damaged)")
    shard = info["shard"]
    lines += [
        f"complete:         {done}",
        f"images (N):       {info['num_images']}",
        f"views (K):        {info['num_views']}",
        f"top-k (k):        {info['topk']}",
        f"classes:          {info['num_classes']}",
        f"probabilities:    {info['prob_encoding']}",
        "header digest:    " + ("sha256, matches" if info.get("header_digest") else
                                "none (written before header digests: its header cannot be checked)"),
        f"policy:           {json.dumps(info['policy'], sort_keys=True)}",
    ]
    # what each teacher was fed: its input size (null: the view's) and the normalisation it stored
    policy = info["policy"]
    view_size = ("x".join(map(str, policy["output_size"])) + " = the view's" if policy.get("output_size")
                 else "view size")
    for t in info["teachers"]:
        size = "x".join(map(str, t["input_size"])) if t.get("input_size") else view_size
        norm = f"mean {t.get('mean')}, std {t.get('std')}"
        if policy.get("mean") is not None and [t.get("mean"), t.get("std")] == [policy["mean"], policy.get("std")]:
            norm += " = the policy's, as the student's views"
        src = f" from {t['checkpoint']}" if t.get("checkpoint") else ""
        lines.append(f"teacher:          {t.get('name')}{src} (input {size}, {norm})")
    lines += [
        *([f"imported from:    {info['source'].get('format')}: {', '.join(info['source'].get('paths', []))} "
           f"(num_samples {info['source'].get('num_samples')}, top-{info['source'].get('topk')})"]
          if info.get("source") else []),
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
    if info.get("stats_unreadable_images"):
        lines.append(f"UNREADABLE:       {info['stats_unreadable_images']} of the images sampled for statistics "
                     "cannot be read (damaged); run inspect --verify")
    gen = info.get("generation") or {}
    if gen.get("seconds"):
        lines.append(f"generation:       {gen.get('images', 0)} images in {gen['seconds']['total']:.1f} s on "
                     f"{gen.get('device')}")
    if info.get("images_decoder"):
        lines.append(f"image decoder:    {info['images_decoder']} (what decoded the image files at generation)")
    if "dataset_matches" in info:
        lines.append("dataset:          matches" if info["dataset_matches"] else
                     f"dataset:          DOES NOT MATCH: {info['dataset_mismatch']}")
    if info.get("stats_invalid_param_images"):
        lines.append(f"INVALID:          {info['stats_invalid_param_images']} of the images sampled for statistics "
                     f"hold parameters replay refuses (first: {info['stats_first_invalid_params']}); run inspect "
                     "--verify")
    if "verify" in info:
        lines += format_verify(info["verify"]).splitlines()
    lines.append(verdict(info))
    return "\n".join(lines)


def format_verify(v: dict) -> str:
    """The lines ``inspect --verify`` prints for :func:`verify_file`'s report."""
    cost = f", {v['us_per_record']:.1f} us/record" if v.get("us_per_record") else ""
    head = (f"verify:           ok: {v['images_checked']} images, {v['records_checked']} records checked in "
            f"{v['seconds']:.2f} s{cost}" if v["ok"] else
            f"verify:           FAILED: {v['problem_count']} problem(s) in {v['images_checked']} images checked")
    lines = [head] + [f"problem:          {p}" for p in v["problems"]]
    if v["problem_count"] > len(v["problems"]):
        lines.append(f"problem:          ... and {v['problem_count'] - len(v['problems'])} more")
    if not v.get("opened", True):  # nothing else will be printed: this is the verdict
        lines.append("verdict:          UNREADABLE: the file cannot be opened (the problem above says why)")
    return "\n".join(lines)
