"""Shards: where each rank writes (:func:`shard_path`), finding them (:func:`find_shards`),
and joining them into one file (:func:`merge`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable

import numpy as np

from ..errors import ConfigError, OutputExistsError, ReinforcementFileError, SettingsMismatchError
from .reader import ReinforcementFile
from .writer import _copy_layout, copy_rows, new_h5_file, seal_header

__all__ = ["shard_path", "find_shards", "merge"]

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
        raise ConfigError("merge needs at least one shard")
    if os.path.lexists(output) and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it")
    files: list[ReinforcementFile] = []
    try:
        for s in shards:
            files.append(ReinforcementFile(s))  # refuses incomplete shards
            h = files[-1].header
            if h.shard_world_size == 1:
                what = (f"a file merged from {h.extra['merged_from']} shards" if h.extra.get("merged_from") else
                        "a file written by a single process")
                raise ReinforcementFileError(
                    f"{s} is not a shard but {what}; merge joins the shards that ranks write "
                    "(OUT-RRRRR-of-WWWWW.h5)")
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
        with new_h5_file(tmp) as dst:
            _copy_layout(src0, dst, attrs)
            dst["labels"][:] = src0["labels"][:]
            seal_header(dst)  # the shard attribute changed: seal the merged header anew
            for f in files:
                copy_rows(f._file()["records"], dst["records"], np.flatnonzero(f.written))
            dst["written"][:] = np.ones(first.num_images, dtype=np.uint8)
            dst.flush()
            dst.attrs["complete"] = np.uint8(1)
        os.replace(tmp, output)
    finally:
        for f in files:
            f.close()
    return output
