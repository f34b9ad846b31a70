"""A small, deterministic, ImageNet-like photo set built offline from scikit-image's sample photos.

ImageNet training images are JPEG photos of mostly 500x375 / 375x500 / 500x333 pixels
(the longer side is usually 500). This module cuts seeded random crops, with the aspect
ratio of a typical ImageNet size, out of the RGB photos that ship with scikit-image
(no download), optionally mirrors them, and rescales them to that size. The same seed
gives the same pixels on every machine (numpy's PCG64 and Pillow's resampling are
deterministic).

    from _photos import make_photos, write_image_folder
    photos = make_photos(64, seed=0)        # list[Photo]
    photos[0].tensor                        # uint8 [3, H, W], contiguous
    photos[0].pil                           # PIL.Image, mode "RGB"
    write_image_folder(photos, "benchmarks/.data/photos")   # <root>/<source>/<i>.JPEG
    root = image_folder("benchmarks/.data/photos_1024", 1024)  # written once, then reused

``iter_photos`` yields the same photos one at a time (a large folder never sits in
memory whole). Run ``python benchmarks/_photos.py --out DIR [-n N] [--seed S]`` to write the JPEG
ImageFolder from the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = ["Photo", "SOURCES", "SIZES", "load_sources", "iter_photos", "make_photos", "loader_layout",
           "write_image_folder", "image_folder"]

#: RGB photos that scikit-image ships inside its wheel (no pooch / network needed).
#: ``chelsea`` and ``cat`` are the same picture, so only one is used; the synthetic
#: ``colorwheel`` and ``logo`` are left out because they are not photos.
SOURCES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "motorcycle_left", "motorcycle_right",
)

#: (height, width, weight): common ImageNet-1k train sizes, landscape first.
SIZES: tuple[tuple[int, int, float], ...] = (
    (375, 500, 0.40), (500, 375, 0.12), (333, 500, 0.12), (500, 333, 0.05),
    (500, 500, 0.06), (334, 500, 0.05), (400, 500, 0.04), (300, 400, 0.04),
    (480, 640, 0.04), (357, 500, 0.03), (281, 500, 0.03), (450, 600, 0.02),
)


@dataclass(frozen=True)
class Photo:
    """One derived photo: where it came from, and its pixels in both forms."""

    source: str
    index: int
    tensor: torch.Tensor  # uint8 [3, H, W], contiguous
    pil: Image.Image  # mode "RGB", same pixels

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


def _load(name: str) -> np.ndarray:
    import skimage.data as data

    if name == "motorcycle_left":
        return data.stereo_motorcycle()[0]
    if name == "motorcycle_right":
        return data.stereo_motorcycle()[1]
    return getattr(data, name)()


def load_sources(names: tuple[str, ...] | list[str] = SOURCES) -> dict[str, np.ndarray]:
    """The named scikit-image photos as uint8 HxWx3 arrays; unavailable ones are skipped with a warning."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            a = np.asarray(_load(name))
        except Exception as e:  # e.g. a file that needs pooch in another scikit-image release
            warnings.warn(f"_photos: skipping scikit-image photo {name!r}: {type(e).__name__}: {e}")
            continue
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] < 3:
            warnings.warn(f"_photos: skipping {name!r}: not a uint8 RGB image ({a.dtype} {a.shape})")
            continue
        out[name] = np.ascontiguousarray(a[:, :, :3])
    if not out:
        raise RuntimeError("no scikit-image RGB sample photo could be loaded")
    return out


def make_photos(n: int = 64, seed: int = 0, sources: dict[str, np.ndarray] | None = None,
                min_crop: float = 0.45) -> list[Photo]:
    """``n`` deterministic ImageNet-like RGB photos.

    Photo i comes from source ``i % len(sources)`` (so every source is used evenly), gets
    a size drawn from :data:`SIZES`, a crop of that aspect ratio covering a random
    ``min_crop``..1 share of the largest such crop in the source, at a random place, a
    mirror with probability 1/2, and an antialiased bicubic rescale to the drawn size.
    """
    return list(iter_photos(n, seed, sources, min_crop))


def iter_photos(n: int = 64, seed: int = 0, sources: dict[str, np.ndarray] | None = None,
                min_crop: float = 0.45) -> Iterator[Photo]:
    """The photos of :func:`make_photos` (same pixels), made one at a time."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    sources = load_sources() if sources is None else sources
    names = sorted(sources)
    rng = np.random.default_rng(seed)
    weights = np.array([s[2] for s in SIZES])
    weights = weights / weights.sum()
    for i in range(n):
        name = names[i % len(names)]
        src = sources[name]
        sh, sw = src.shape[:2]
        th, tw, _ = SIZES[int(rng.choice(len(SIZES), p=weights))]
        # Largest crop of the target aspect ratio, then a random share of it.
        ratio = tw / th
        ch, cw = (sh, sh * ratio) if sh * ratio <= sw else (sw / ratio, sw)
        f = np.sqrt(rng.uniform(min_crop, 1.0))
        ch, cw = max(1, int(round(ch * f))), max(1, int(round(cw * f)))
        ch, cw = min(ch, sh), min(cw, sw)
        top = int(rng.integers(0, sh - ch + 1))
        left = int(rng.integers(0, sw - cw + 1))
        crop = Image.fromarray(src[top:top + ch, left:left + cw])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = crop.resize((tw, th), Image.Resampling.BICUBIC, reducing_gap=None)
        t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
        yield Photo(source=name, index=i, tensor=t, pil=img)


def loader_layout(photo: Photo) -> torch.Tensor:
    """The photo as a PIL-based loader hands it over: a channels-last view, strides (1, 3W, 3)."""
    return torch.from_numpy(np.array(photo.pil)).permute(2, 0, 1)


def write_image_folder(photos: Iterable[Photo], root: str, quality: int = 90) -> list[str]:
    """Write ``photos`` as a torchvision ImageFolder of JPEGs: ``root/<source>/<index>.JPEG``.

    Returns the written paths. Existing files of the same name are overwritten.
    """
    paths = []
    for p in photos:
        d = os.path.join(root, p.source)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{p.index:06d}.JPEG")
        p.pil.save(path, format="JPEG", quality=quality)
        paths.append(path)
    return paths


_STAMP = ".photos.json"


def image_folder(root: str, n: int, seed: int = 0, quality: int = 90) -> str:
    """``root`` as the JPEG ImageFolder of ``n`` photos (``seed``, ``quality``); written on first use.

    A stamp file in ``root`` records what was written: a folder whose stamp matches is
    reused as it is; one with another stamp is replaced; an existing folder without a
    stamp is refused (it is not one of ours). The photos are made and written one at a
    time into ``root + ".tmp"``, renamed to ``root`` when complete. Returns ``root``.
    """
    want = {"n": int(n), "seed": int(seed), "quality": int(quality), "sources": list(SOURCES),
            "sizes": [list(s) for s in SIZES], "version": 1}
    stamp = os.path.join(root, _STAMP)
    if os.path.exists(root):
        try:
            with open(stamp) as f:
                if json.load(f) == want:
                    return root
        except FileNotFoundError:
            raise FileExistsError(f"{root} exists but was not written by image_folder(); "
                                  "remove it or pick another folder") from None
        except (OSError, ValueError):
            pass
        shutil.rmtree(root)
    tmp = root.rstrip(os.sep) + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    write_image_folder(iter_photos(n, seed), tmp, quality)
    with open(os.path.join(tmp, _STAMP), "w") as f:
        json.dump(want, f)
    os.rename(tmp, root)
    return root
