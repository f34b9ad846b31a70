"""``reinforced-data show``: look at what the teacher saw.

Renders one image's stored views (replayed from their parameters, exactly as training
replays them) with the teachers' top-3 soft labels under each, as a PNG grid. For mixing
policies a second row shows each mixed view's partner: the other image's own stored view
that was mixed in. :func:`render_grid` is the renderer, also used by the demo.

    reinforced-data show train_plus.h5 --data DIR|synthetic:N --index 12 --views 8 --out grid.png
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, ReinforcedDataError

__all__ = ["Panel", "render_grid", "grid_pixels", "view_panels", "show", "add_show_parser", "top_labels"]

log = logging.getLogger(__name__)

# Each panel is PANEL_INCHES wide and PANEL_INCHES + caption lines tall, at DPI.
PANEL_INCHES = 1.6
CAPTION_INCHES = 0.17
TITLE_INCHES = 0.35
DPI = 100


@dataclass
class Panel:
    """One picture of a grid: a uint8 ``[3, H, W]`` image and the lines under it (None: empty cell)."""

    image: torch.Tensor | None
    caption: list[str] = field(default_factory=list)


def grid_pixels(rows: int, cols: int, caption_lines: int, title: bool = True) -> tuple[int, int]:
    """(width, height) in pixels of the PNG :func:`render_grid` writes for this layout."""
    w = cols * PANEL_INCHES
    h = rows * (PANEL_INCHES + caption_lines * CAPTION_INCHES) + (TITLE_INCHES if title else 0.0)
    return int(round(w * DPI)), int(round(h * DPI))


def render_grid(rows: Sequence[Sequence[Panel]], path: str | os.PathLike, title: str | None = None) -> str:
    """Write a PNG of ``rows`` of panels (a missing panel or a None image leaves a blank cell).

    Every cell has the same size, so the picture is :func:`grid_pixels` large. Uses
    matplotlib's Agg backend (no display needed). Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    rows = [list(r) for r in rows]
    if not rows or not any(rows):
        raise ConfigError("render_grid got no panels; give at least one row with one panel")
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    lines = max((len(p.caption) for r in rows for p in r), default=0)
    width, height = grid_pixels(n_rows, n_cols, lines, title is not None)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    top = 1.0 - (TITLE_INCHES * DPI / height if title is not None else 0.0)
    cell_h = top / n_rows
    cap_h = lines * CAPTION_INCHES * DPI / height
    try:
        if title is not None:
            fig.text(0.5, 1.0 - 0.5 * TITLE_INCHES * DPI / height, title, ha="center", va="center", fontsize=9)
        for r, row in enumerate(rows):
            for c, panel in enumerate(row):
                if panel is None:
                    continue
                x0 = c / n_cols
                y0 = top - (r + 1) * cell_h
                ax = fig.add_axes((x0 + 0.04 / n_cols, y0 + cap_h + 0.02 * cell_h, 0.92 / n_cols,
                                   cell_h - cap_h - 0.04 * cell_h))
                ax.set_axis_off()
                if panel.image is not None:
                    img = panel.image.detach().cpu()
                    if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
                        raise ConfigError(f"panel ({r}, {c}) holds a {img.dtype} {tuple(img.shape)} image; "
                                          "give a uint8 [3, H, W] tensor")
                    ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
                for i, text in enumerate(panel.caption):
                    fig.text(x0 + 0.5 / n_cols, y0 + cap_h - (i + 0.5) * CAPTION_INCHES * DPI / height, text,
                             ha="center", va="center", fontsize=6.5, family="monospace")
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def top_labels(indices: np.ndarray, probs: np.ndarray, names: Sequence[str] | None, n: int = 3) -> list[str]:
    """``n`` lines "name  62%" for the most probable stored classes (ids when there are no names)."""
    out = []
    for i, p in list(zip(indices.tolist(), probs.tolist()))[:n]:
        name = names[i] if names is not None and i < len(names) else f"class {i}"
        out.append(f"{name[:11]:<11} {100 * p:3.0f}%")
    return out


def _open(file: Any):
    from .store import ReinforcementFile

    if isinstance(file, ReinforcementFile):
        return file
    return ReinforcementFile(file)


def _raise_damaged(path: str, policy: Any, named: list) -> None:
    """Raise a :class:`CorruptFileError` naming the first of ``named`` ((image, stored view, its one
    record, whether it is checked as mixed)) whose values replay refuses whatever the image (a flip of 2,
    an unknown op id, AugMix weights that do not sum): damage to the file, encoded as replay encodes it."""
    from ._args import check_records, damaged_record

    for image, view, row, mixed in named:
        try:
            check_records(row, policy, mixed)
        except (ConfigError, ValueError) as e:
            raise damaged_record(path, f"image {image}", view, e) from None


def view_panels(file: Any, dataset: Any, index: int, views: int | None = 8,
                names: Sequence[str] | None = None) -> list[list[Panel]]:
    """Panels of image ``index``: the source and its first ``views`` stored views, replayed.

    Row 0: the source image, then each view with its top-3 labels. For a file written
    with a mixing policy, row 1 holds each mixed view's partner (its own stored view,
    unmixed, captioned with the partner's image and view). ``names`` defaults to the
    dataset's class names.
    """
    from ._datasets import RawImages, class_names, match_rows, matched_fingerprint
    from ._replay import replay

    f = _open(file)
    n = f.num_images
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
        raise ConfigError(f"--index {index} is out of range: {f.path} holds images 0 to {n - 1}")
    index = int(index)
    mapped = match_rows(dataset, f.identities(), f.labels, f.path)  # by identity (any listing), else by position
    if mapped is None and len(dataset) != n:
        raise ConfigError(f"the dataset holds {len(dataset)} images but {f.path} was made for {n}; "
                          "pass the dataset the file was generated from")
    f.check_dataset(matched_fingerprint(dataset, mapped))
    at = (lambda row: row) if mapped is None else mapped.base_item  # file row -> item of the decoded dataset
    k = f.num_views if views is None else int(views)
    if k < 1:
        raise ConfigError(f"--views {views} must be >= 1")
    k = min(k, f.num_views)
    names = names if names is not None else class_names(dataset)
    raw = RawImages(dataset if mapped is None else mapped.base, strip=True)
    src, label = raw[at(index)]
    recs = f.read_image(index)
    policy = f.policy
    params = recs.params[:k]
    kwargs = {}
    partners: list[tuple[int, int]] = []
    if recs.partner_index is not None:
        partners = [(int(recs.partner_index[v]), int(recs.partner_view[v])) for v in range(k)]
        cache: dict[int, torch.Tensor] = {index: src}
        pparams = []
        inline = policy.mix_partner == "inline"  # imported ml-dr files: the partner's parameters are in the record
        for v, (j, pv) in enumerate(partners):
            if j not in cache:
                cache[j] = raw[at(j)][0]
            if inline:
                pparams.append(policy.partner_params(params[v:v + 1])[0] if params["mix_mode"][v] else params[v])
            else:
                pparams.append(f.read(j, pv).params)
        kwargs = dict(partners=[cache[j] for j, _ in partners], partner_params=np.stack(pparams))
    try:
        out = replay([src] * k, params, policy, out_dtype=torch.uint8, **kwargs)
    except ConfigError:  # a record replay refuses: name it as the file's damage, else as it came
        named = [(index, v, params[v:v + 1], policy.mixing) for v in range(k)]
        if partners and policy.mix_partner != "inline":  # a partner contributes its own view, unmixed
            named += [(j, pv, kwargs["partner_params"][v:v + 1], False) for v, (j, pv) in enumerate(partners)
                      if params["mix_mode"][v]]
        _raise_damaged(f.path, policy, named)
        raise
    true = names[label] if names is not None and 0 <= label < len(names) else f"class {label}"
    head = [Panel(src, [f"image {index}", f"label: {true}"[:18], ""][:3])]
    row = head + [Panel(out[v], top_labels(recs.indices[v], recs.probs[v], names)) for v in range(k)]
    rows = [row]
    if partners and any(params["mix_mode"] != 0):
        mixed = params["mix_mode"] != 0
        unmixed = kwargs["partner_params"].copy()  # a partner contributes its own view, unmixed
        unmixed["mix_mode"] = 0
        pv_views = replay(kwargs["partners"], unmixed, policy, out_dtype=torch.uint8)
        prow: list[Panel] = [Panel(None, ["partners:", "view mixed in", ""])]
        for v in range(k):
            if mixed[v]:
                j, pv = partners[v]
                mode = int(params["mix_mode"][v])
                kind = {1: "mixup", 2: "cutmix", 3: "mixup+cutmix"}[mode]
                share = 1.0 - int(params["mix_lam"][v]) / 255.0  # the partner's share of the view
                if mode == 3:  # MixUp with weight λ, then the partner's CutMix box
                    box = params["mix_box"][v]
                    cut = float(box[2]) * float(box[3]) / float(policy.output_size[0] * policy.output_size[1])
                    share = cut + share * (1.0 - cut)
                where = f"image {j} (inline)" if policy.mix_partner == "inline" else f"image {j} view {pv}"
                prow.append(Panel(pv_views[v], [where, f"{kind} {share:.2f}", ""]))
            else:
                prow.append(Panel(None, ["(not mixed)", "", ""]))
        rows.append(prow)
    return rows


def show(file: str | os.PathLike, data: Any, index: int, views: int | None = 8,
         out: str | os.PathLike = "grid.png") -> str:
    """Render image ``index``'s stored views of ``file`` (made for ``data``) to the PNG ``out``.

    ``data`` is an ImageFolder directory, ``synthetic:N`` or a map-style dataset. Raises a
    :class:`~reinforced_data.errors.ReinforcedDataError` naming what is wrong for a file
    that is not a reinforcement file, a dataset it was not made for, or a bad index.
    Returns the PNG's path.
    """
    from ._datasets import resolve_dataset

    if isinstance(data, (str, os.PathLike)) and not str(data).startswith("synthetic:") \
            and not os.path.isdir(data):
        raise ConfigError(f"--data {os.fspath(data)} is not a directory; give the ImageFolder (or synthetic:N) "
                          "the file was generated from")
    dataset = resolve_dataset(data)  # its refusals are ConfigErrors already
    if os.path.splitext(os.fspath(out))[1].lower() != ".png":
        raise ConfigError(f"--out {os.fspath(out)}: the grid is written as PNG; give a file name ending in .png")
    if isinstance(file, (str, os.PathLike)) and not os.path.exists(file):
        raise ConfigError(f"{os.fspath(file)} does not exist; give a reinforcement file written by "
                          "`reinforced-data reinforce`")
    with _open(file) as f:
        rows = view_panels(f, dataset, index, views)
        title = f"{os.path.basename(f.path)}: image {index}, {len(rows[0]) - 1} of {f.num_views} stored views"
        path = render_grid(rows, out, title=title)
    log.info("wrote %s", path)
    return path


# ---------------------------------------------------------------------- command line
def add_show_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``show`` to a ``reinforced-data`` subparsers object; sets ``args.func(args) -> int``."""
    p = subparsers.add_parser("show", help="render one image's stored views and soft labels as a PNG",
                              description="Replay the stored views of one image of a reinforcement file and write "
                                          "them, with the teachers' top-3 labels, as a PNG grid.")
    p.add_argument("file", help="the reinforcement file (.h5)")
    p.add_argument("--data", required=True, help="the dataset the file was made for (ImageFolder or synthetic:N)")
    p.add_argument("--index", type=int, required=True, help="the image to show")
    p.add_argument("--views", type=int, default=8, help="how many stored views to show (default 8)")
    p.add_argument("--out", default="grid.png", help="the PNG to write (default grid.png)")
    p.set_defaults(func=_cmd_show)
    return p


def _cmd_show(args: argparse.Namespace) -> int:
    path = show(args.file, args.data, args.index, views=args.views, out=args.out)
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reinforced-data show`` on its own (until the command is wired into the CLI)."""
    import sys

    parser = argparse.ArgumentParser(prog="reinforced-data")
    add_show_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["show", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ReinforcedDataError, FileNotFoundError) as e:
        print(f"reinforced-data: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
