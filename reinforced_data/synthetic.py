"""Built-in offline data: a small class-conditional image dataset generated from a seed.

Each class is a coloured shape (disc, square, triangle, ring, stripes, ...) drawn at a
random position and scale on a textured background with a class-specific palette, so a
small CNN can learn it and a teacher's soft labels carry real information. Used by the
tests, the demo and the examples; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["SyntheticImages", "write_image_folder"]

_SHAPES = ("disc", "square", "triangle", "ring", "hstripes", "vstripes", "cross", "diamond")


def _draw(rng: np.random.Generator, label: int, num_classes: int, height: int, width: int) -> np.ndarray:
    """One uint8 HWC image of class ``label``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    hue = label / max(num_classes, 1)
    base = np.array([np.cos(2 * np.pi * (hue + t)) for t in (0.0, 1 / 3, 2 / 3)]) * 60 + 128
    bg = rng.uniform(40, 200, size=3)
    # smooth background texture
    fx, fy = rng.uniform(0.01, 0.05, size=2)
    phase = rng.uniform(0, 2 * np.pi)
    texture = 25 * np.sin(fx * xx + fy * yy + phase)
    img = bg[None, None, :] + texture[..., None]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    r = rng.uniform(0.18, 0.35) * min(height, width)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    shape = _SHAPES[label % len(_SHAPES)]
    if shape == "disc":
        mask = dx**2 + dy**2 < 1
    elif shape == "square":
        mask = (np.abs(dx) < 0.8) & (np.abs(dy) < 0.8)
    elif shape == "triangle":
        mask = (dy < 0.8) & (dy > -0.8) & (np.abs(dx) < (dy + 0.8) * 0.6)
    elif shape == "ring":
        d = dx**2 + dy**2
        mask = (d < 1) & (d > 0.45)
    elif shape == "hstripes":
        mask = (np.abs(dx) < 1) & (np.abs(dy) < 1) & (np.sin(dy * 9) > 0)
    elif shape == "vstripes":
        mask = (np.abs(dx) < 1) & (np.abs(dy) < 1) & (np.sin(dx * 9) > 0)
    elif shape == "cross":
        mask = ((np.abs(dx) < 0.25) & (np.abs(dy) < 1)) | ((np.abs(dy) < 0.25) & (np.abs(dx) < 1))
    else:  # diamond
        mask = np.abs(dx) + np.abs(dy) < 1
    # classes beyond len(_SHAPES) differ by palette only
    colour = base + rng.normal(0, 12, size=3)
    img = np.where(mask[..., None], colour[None, None, :], img)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class SyntheticImages(torch.utils.data.Dataset):
    """A map-style dataset of generated images: ``(uint8 [3, H, W] tensor, label)``.

    Image ``i`` is a pure function of ``(seed, i)``; sizes vary per image between
    ``min_size`` and ``max_size`` (height and width drawn independently), like photos.
    ``transform`` (optional) is applied to the tensor.
    """

    def __init__(self, num_images: int = 256, num_classes: int = 8, min_size: int = 48, max_size: int = 96,
                 seed: int = 0, transform: Callable | None = None) -> None:
        if num_images < 1 or num_classes < 1:
            raise ConfigError(f"num_images={num_images} and num_classes={num_classes} must be >= 1")
        if not 8 <= min_size <= max_size:
            raise ConfigError(f"need 8 <= min_size <= max_size, got {min_size}, {max_size}")
        self.num_images, self.num_classes = num_images, num_classes
        self.min_size, self.max_size, self.seed = min_size, max_size, seed
        self.transform = transform
        # balanced labels in a seeded order
        labels = np.arange(num_images) % num_classes
        np.random.default_rng(seed).shuffle(labels)
        self.targets = labels.tolist()
        self.classes = [f"class_{c:03d}" for c in range(num_classes)]

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, index])
        h, w = rng.integers(self.min_size, self.max_size + 1, size=2)
        label = self.targets[index]
        img = torch.from_numpy(_draw(rng, label, self.num_classes, int(h), int(w))).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def write_image_folder(dataset: SyntheticImages, root: str | os.PathLike, fmt: str = "png") -> str:
    """Write the dataset as an ImageFolder tree ``root/class_xxx/000123.png``; returns root."""
    from PIL import Image

    for c in dataset.classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(len(dataset)):
        img, label = dataset[i]
        path = os.path.join(root, dataset.classes[label], f"{i:06d}.{fmt}")
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    return str(root)
