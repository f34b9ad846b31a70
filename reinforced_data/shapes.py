"""The demo's data: 12 classes of drawn shapes and textures on cluttered backgrounds.

Each image holds one object (the class) at a random position, scale, rotation and colour,
over a random background (a colour gradient, a texture, noise) cluttered with smaller
distractors: strokes and small copies of other classes' shapes. Colour says nothing about
the class, some classes look alike (disc / ring / hexagon, square / diamond, the
textured patches), and crops can cut the object or keep only a distractor: a small
student has to learn shape, and a teacher's soft labels carry real information. The
images are a pure function of ``(seed, split, index)``, drawn with numpy (at twice the
size, then averaged down for smooth edges), so the demo needs no download.

:class:`~reinforced_data.synthetic.SyntheticImages` is the tests' dataset; this one is
the demo's.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["SHAPE_CLASSES", "DISTINCT_ORDER", "ShapesDataset", "draw_shape_image"]

SHAPE_CLASSES = ("disc", "ring", "hexagon", "square", "diamond", "triangle", "star", "cross",
                 "stripes", "checker", "dots", "crescent")
# the classes in an order whose first few look least alike (for runs on fewer classes)
DISTINCT_ORDER = ("disc", "square", "triangle", "star", "cross", "stripes", "checker", "crescent", "ring", "diamond",
                  "hexagon", "dots")
_SPLITS = {"train": 0, "test": 1, "val": 1, "extra": 2, "held_out": 3}


def _shape_mask(name: str, dx: np.ndarray, dy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of shape ``name`` in object coordinates (unit radius, already rotated)."""
    r = np.sqrt(dx ** 2 + dy ** 2)
    ang = np.arctan2(dy, dx)
    if name == "disc":
        return r < 0.9
    if name == "ring":
        return (r < 0.95) & (r > 0.55)
    if name == "hexagon":
        rr = 0.9 * math.cos(math.pi / 6) / np.cos((ang % (math.pi / 3)) - math.pi / 6)
        return r < rr
    if name == "square":
        return (np.abs(dx) < 0.7) & (np.abs(dy) < 0.7)
    if name == "diamond":
        return np.abs(dx) + np.abs(dy) < 0.95
    if name == "triangle":
        return (dy < 0.6) & (np.abs(dx) < (dy + 0.9) * 0.58)
    if name == "star":
        rr = 0.45 + 0.5 * (0.5 + 0.5 * np.cos(5 * ang))
        return r < rr
    if name == "cross":
        return ((np.abs(dx) < 0.28) & (np.abs(dy) < 0.9)) | ((np.abs(dy) < 0.28) & (np.abs(dx) < 0.9))
    box = (np.abs(dx) < 0.8) & (np.abs(dy) < 0.8)
    if name == "stripes":
        return box & (np.sin(dx * 11 + rng.uniform(0, 6.3)) > 0)
    if name == "checker":
        return box & ((np.floor((dx + 1) * 3.2) + np.floor((dy + 1) * 3.2)) % 2 == 0)
    if name == "dots":
        return box & ((((dx + 1) * 3.5) % 1 - 0.5) ** 2 + (((dy + 1) * 3.5) % 1 - 0.5) ** 2 < 0.09)
    if name == "crescent":
        return (r < 0.9) & ((dx - 0.4) ** 2 + (dy + 0.15) ** 2 > 0.5)
    raise ValueError(f"unknown shape {name!r}")


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour, at least some distance from ``avoid`` (so the object stays visible)."""
    for _ in range(8):
        c = rng.uniform(0, 255, size=3)
        if avoid is None or np.abs(c - avoid).sum() > 150:
            return c
    return 255 - avoid if avoid is not None else c


@functools.lru_cache(maxsize=4)
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / np.float32(s)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def draw_shape_image(rng: np.random.Generator, label: int | str, size: int = 40) -> np.ndarray:
    """One uint8 HWC image of class ``label`` (an index into :data:`SHAPE_CLASSES`, or its name)."""
    name = SHAPE_CLASSES[label] if not isinstance(label, str) else label
    s = 2 * size  # drawn at twice the size, averaged down
    yy, xx = _grid(s)
    # background: gradient between two colours, a texture, noise
    c0, c1 = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    t = np.clip((xx * math.cos(a := rng.uniform(0, 2 * math.pi)) + yy * math.sin(a) + 1) / 2, 0, 1)
    f = rng.uniform(4, 14)
    t += (rng.uniform(10, 40) / 255) * np.sin(f * (xx * math.cos(b := rng.uniform(0, math.pi)) + yy * math.sin(b))
                                              * 2 * math.pi)
    img = (c0 + (c1 - c0) * t[..., None]).astype(np.float32)
    mean_bg = img[::8, ::8].reshape(-1, 3).mean(0)
    # distractors: strokes and small shapes of any class (including this one's) behind the object
    for _ in range(rng.integers(1, 4)):
        x0, y0, x1, y1 = rng.uniform(0, 1, size=4)
        d = np.abs((y1 - y0) * xx - (x1 - x0) * yy + x1 * y0 - y1 * x0) / (math.hypot(x1 - x0, y1 - y0) + 1e-6)
        np.copyto(img, rng.uniform(0, 255, size=3).astype(np.float32), where=(d < rng.uniform(0.008, 0.02))[..., None])
    for _ in range(rng.integers(0, 3)):
        other = SHAPE_CLASSES[rng.integers(len(SHAPE_CLASSES))]
        rad = rng.uniform(0.06, 0.1)
        cx, cy = rng.uniform(0.1, 0.9, size=2)
        th = rng.uniform(0, 2 * math.pi)
        dx, dy = (xx - cx) / rad, (yy - cy) / rad
        m = _shape_mask(other, dx * math.cos(th) + dy * math.sin(th), -dx * math.sin(th) + dy * math.cos(th), rng)
        np.copyto(img, _colour(rng).astype(np.float32), where=m[..., None])
    # the object: one class, big, anywhere, rotated a little (square and diamond stay apart)
    rad = rng.uniform(0.24, 0.38)
    cx, cy = rng.uniform(rad * 0.7, 1 - rad * 0.7, size=2)
    th = rng.uniform(-0.3, 0.3) + (rng.integers(0, 6) * math.pi / 3 if name in
                                   ("disc", "ring", "hexagon", "dots") else 0.0)
    dx, dy = (xx - cx) / rad, (yy - cy) / rad
    m = _shape_mask(name, dx * math.cos(th) + dy * math.sin(th),
                    -dx * math.sin(th) + dy * math.cos(th), rng)
    img[m] = _colour(rng, mean_bg) + 8 * rng.standard_normal((int(m.sum()), 1), dtype=np.float32)
    img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    img += rng.uniform(3, 15) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


class ShapesDataset(torch.utils.data.Dataset):
    """The demo's generated dataset: ``(uint8 [3, size, size] tensor, label)`` items.

    ``split`` "train", "test" ("val" is an alias of "test"), "extra" (more training images,
    none of them in "train": the demo's teacher sees them) or "held_out" (images for choosing
    settings, in no other split) draws from separate seeds;
    labels are balanced over ``num_classes`` (<= 12; the first of :data:`SHAPE_CLASSES`, or
    the names given as ``classes``) in a seeded order. Images are drawn
    once, at construction (about 0.3 ms each), and kept in memory. ``classes`` names
    them; ``targets`` lists the labels, as in torchvision.
    """

    def __init__(self, split: str = "train", num_images: int = 2000, size: int = 40, seed: int = 0,
                 num_classes: int = len(SHAPE_CLASSES), transform: Callable | None = None,
                 classes: Sequence[str] | None = None) -> None:
        if split not in _SPLITS:
            raise ConfigError(f"split={split!r} is not one of {sorted(_SPLITS)}; use 'train', 'test', 'extra' or "
                              "'held_out'")
        if num_images < 1:
            raise ConfigError(f"num_images={num_images} must be >= 1")
        if classes is not None:
            unknown = [c for c in classes if c not in SHAPE_CLASSES]
            if unknown or len(set(classes)) != len(classes):
                raise ConfigError(f"classes={list(classes)} must be distinct names from {list(SHAPE_CLASSES)}")
            num_classes = len(classes)
        if not 2 <= num_classes <= len(SHAPE_CLASSES):
            raise ConfigError(f"num_classes={num_classes} must lie in [2, {len(SHAPE_CLASSES)}]")
        if not 16 <= size <= 256:
            raise ConfigError(f"size={size} must lie in [16, 256] pixels")
        self.split, self.size, self.seed = split, size, seed
        self.classes = list(classes) if classes is not None else list(SHAPE_CLASSES[:num_classes])
        labels = np.arange(num_images) % num_classes
        np.random.default_rng([seed, _SPLITS[split], 1 << 20]).shuffle(labels)
        self.targets = labels.tolist()
        self.transform = transform
        self.images = np.stack([
            draw_shape_image(np.random.default_rng([seed, _SPLITS[split], i]), self.classes[labels[i]], size)
            for i in range(num_images)]).transpose(0, 3, 1, 2).copy()  # [N, 3, H, W] uint8

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self.targets):
            raise IndexError(f"index {index} out of range for {len(self.targets)} images")
        img = torch.from_numpy(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def write_image_folder(self, root: str | os.PathLike) -> str:
        """Write the images as PNGs in ``root/<class>/<index>.png`` (an ImageFolder); returns root."""
        from PIL import Image

        for c in self.classes:
            os.makedirs(os.path.join(root, c), exist_ok=True)
        for i, label in enumerate(self.targets):
            Image.fromarray(self.images[i].transpose(1, 2, 0)).save(
                os.path.join(root, self.classes[label], f"{i:06d}.png"))
        return os.fspath(root)
