"""A dataset's identity: :class:`Fingerprint` and the digests it is made of.

Below both the decode path (:mod:`reinforced_data._datasets`, which computes a dataset's
fingerprint) and the store (which records it and compares it): this module decodes
nothing and imports nothing of the package. docs/format.md "Dataset identity" defines each
field.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Fingerprint", "sha256_hex", "IMAGE_SAMPLE_SIZE", "image_sample_indices", "images_sha256"]

#: how many images the fingerprint's image hash covers
IMAGE_SAMPLE_SIZE = 8


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_sample_indices(n: int, count: int = IMAGE_SAMPLE_SIZE) -> list[int]:
    """The images a fingerprint hashes: ``count`` evenly spaced indices, the first and the last included."""
    if n <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, min(count, n)).round()})


def images_sha256(images: Iterable[tuple[int, np.ndarray]]) -> str:
    """The image hash of a fingerprint: over ``(index, uint8 HWC pixels)`` pairs, each image's
    index, height and width (int64 little-endian) and its pixels."""
    h = hashlib.sha256()
    for i, hwc in images:
        hwc = np.ascontiguousarray(hwc)
        h.update(np.asarray([i, hwc.shape[0], hwc.shape[1]], dtype="<i8").tobytes())
        h.update(hwc.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a dataset: its length, a hash of its labels and of its file list, and
    a hash of a fixed sample of its decoded images (files written before it have none)."""

    num_images: int
    labels_sha256: str
    files_sha256: str | None = None
    num_classes: int | None = None  # len(dataset.classes) when the dataset says
    images_sha256: str | None = None  # images_sha256() of the decoded image_sample_indices()
    images_decoder: str | None = None  # what decoded image files: "torchvision.io" or "PIL" (None: not files)

    @classmethod
    def of(cls, labels: np.ndarray, files: Sequence[str] | None = None,
           num_classes: int | None = None) -> "Fingerprint":
        labels = np.asarray(labels, dtype="<i8").reshape(-1)
        files_hash = None if files is None else sha256_hex("\n".join(files).encode())
        return cls(int(labels.shape[0]), sha256_hex(labels.tobytes()), files_hash, num_classes)

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def differences(self, other: "Fingerprint", images: bool = True) -> list[str]:
        """What differs between the file's fingerprint (self) and a dataset's (other);
        ``images=False`` leaves the image sample hash out."""
        out = []
        if self.num_images != other.num_images:
            out.append(f"the file holds {self.num_images} images, the dataset {other.num_images}")
        elif self.labels_sha256 != other.labels_sha256:
            out.append("the labels differ")
        if self.files_sha256 and other.files_sha256 and self.files_sha256 != other.files_sha256:
            out.append("the file lists differ")
        if self.num_classes and other.num_classes and self.num_classes != other.num_classes:
            out.append(f"the file's dataset has {self.num_classes} classes, this one {other.num_classes}")
        if (images and not out and self.images_sha256 and other.images_sha256
                and self.images_sha256 != other.images_sha256):
            out.append("the images differ (a fixed sample of 8 decoded images hashes differently)")
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("images_sha256", "images_decoder"):
            if d[key] is None:  # as files written before the field say it
                del d[key]
        return d
