"""Datasets as generation and training see them: the one decode path, labels, identity.

The teacher labelled the pixels that :class:`RawImages` returned during generation, and a
:class:`~reinforced_data.dataset.ReinforcedDataset` replays its stored views on the pixels
that :class:`RawImages` returns during training: both go through :func:`to_uint8_image`
here, so the replayed view is the view the teacher saw.

* File-backed folders (torchvision ``DatasetFolder`` / ``ImageFolder``: ``samples`` and
  ``loader``) are read from the file path: the user's ``transform`` never runs. With the
  default (PIL) loader, 8-bit JPEGs of one or three components are decoded
  straight to a uint8 tensor by ``torchvision.io`` (:func:`decode_file`), which gives PIL's
  pixels without a PIL image or a numpy copy; every other file (CMYK, 16-bit, GIF, ...), and
  every file when the decoder is ``"pil"``, goes through the dataset's own ``loader``.
* Any other map-style dataset returning ``(image, label)`` is read through a shallow
  copy with ``transform`` (and torchvision's ``transforms``) removed when ``strip=True``;
  the caller's object is never mutated. With ``strip=False`` (generation), a dataset
  with a transform is refused: training bypasses it, so the teacher must not see it.

Images come back as uint8 ``[3, H, W]``: grayscale is expanded, an alpha channel
dropped, PIL images converted to RGB. A decoded HWC array becomes a channels-last
*view* (strides ``(1, 3W, 3)``), not a copy: the kernels read it in place.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, DatasetTypeError
from .fingerprint import IMAGE_SAMPLE_SIZE, Fingerprint, image_sample_indices, images_sha256

__all__ = [
    "resolve_dataset", "to_uint8_image", "RawImages", "dataset_labels", "as_labels", "dataset_files",
    "dataset_num_classes", "dataset_fingerprint", "image_sample_sha256", "image_sample_indices", "class_names",
    "unwrap_subsets", "RowMap", "match_rows", "matched_fingerprint",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- naming a dataset
def resolve_dataset(data: Any) -> Any:
    """An ImageFolder directory, ``"synthetic:N"`` / ``"synthetic:num_images=N,num_classes=C,..."``
    (the built-in :class:`~reinforced_data.synthetic.SyntheticImages`), or a map-style dataset."""
    if not isinstance(data, (str, os.PathLike)):
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise DatasetTypeError(
                f"the dataset must be map-style (__getitem__ and __len__); got {type(data).__name__}")
        return data
    text = os.fspath(data)
    if text.startswith("synthetic:"):
        from .synthetic import SyntheticImages

        usage = "synthetic:num_images=N,num_classes=C,min_size=S,max_size=S,seed=S"
        kwargs: dict[str, int] = {}
        for i, part in enumerate(p for p in text[len("synthetic:"):].split(",") if p):
            key, _, val = part.rpartition("=")
            key = key or ("num_images" if i == 0 else "")
            if key not in ("num_images", "num_classes", "min_size", "max_size", "seed"):
                raise ConfigError(f"{text!r}: use {usage}")
            try:
                kwargs[key] = int(val)
            except ValueError as e:  # a value that is not an integer
                raise ConfigError(f"dataset {text!r}: {e}; use synthetic:N or {usage}") from None
        try:
            return SyntheticImages(**kwargs)
        except ConfigError as e:  # a value SyntheticImages refuses
            raise ConfigError(f"dataset {text!r}: {e}; use synthetic:N or {usage}") from None
    if os.path.isdir(text):
        from torchvision.datasets import ImageFolder

        return ImageFolder(text)
    raise FileNotFoundError(f"dataset {text!r} is neither an ImageFolder directory nor synthetic:N")


# ---------------------------------------------------------------------- decoding
def to_uint8_image(img: Any, index: int) -> torch.Tensor:
    """A dataset item's image as uint8 [3, H, W] (from PIL, numpy HWC or a CHW tensor).

    A PIL image or HWC array becomes a channels-last view of the decoded pixels; a
    grayscale image is expanded to three channels and an alpha channel dropped.
    """
    if not isinstance(img, torch.Tensor):
        if isinstance(img, Image.Image):
            # ImageFolder's loader already converted to RGB: converting again would copy every pixel
            img = torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB"))).permute(2, 0, 1)
        elif isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] in (1, 3, 4):
            img = torch.from_numpy(img).permute(2, 0, 1)
        elif isinstance(img, np.ndarray):
            img = torch.from_numpy(img)
        else:
            raise DatasetTypeError(f"image {index}: the dataset returned a {type(img).__name__}; "
                            "expected a uint8 tensor or PIL image")
    if img.dtype != torch.uint8:
        raise DatasetTypeError(f"image {index} is {img.dtype}; reinforcement needs the undecorated uint8 image: "
                        "remove the dataset's transform")
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3, 4):
        raise ConfigError(f"image {index} has shape {tuple(img.shape)}; expected [3, H, W]")
    if img.shape[0] == 1:
        return img.expand(3, -1, -1).contiguous()
    if img.shape[0] == 4:
        img = img[:3]
    if img.stride(0) != 1 and not img.is_contiguous():  # neither CHW nor a channels-last view
        img = img.contiguous()
    return img


#: the decoders of file-backed datasets: ``"tensor"`` (torchvision.io where :func:`decode_file`
#: takes the file, else the dataset's loader) and ``"pil"`` (always the dataset's loader)
DECODERS = ("tensor", "pil")


def _tensor_decodable(data: np.ndarray) -> bool:
    """Whether torchvision.io decodes the file to PIL's RGB pixels: an 8-bit JPEG with one (gray)
    or three components whose size is within PIL's decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``); False for anything else (CMYK/YCCK or 12-bit JPEG, a size PIL
    refuses, PNG and other formats, damage), which the PIL loader reads or refuses. PNG stays
    with PIL: libpng inside torchvision.io crashes the process on damaged PNG data."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    i = 2
    while i + 9 < n:  # walk the marker segments up to the frame header (SOFn)
        if data[i] != 0xFF:
            return False
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = int(data[i + 5]) << 8 | int(data[i + 6]), int(data[i + 7]) << 8 | int(data[i + 8])
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and height * width > limit:
                return False
            return data[i + 4] == 8 and data[i + 9] in (1, 3)
        if marker == 0xDA or marker == 0xD9:  # scan or end before a frame header
            return False
        i += 2 + (int(data[i + 2]) << 8 | int(data[i + 3]))
    return False


def _image_ops() -> Any:
    """torchvision's image operators (``torch.ops.image``), or None where this torchvision has none.

    They are called directly: the ``torchvision.io`` wrappers warn on every call that the image
    codecs are deprecated in favour of TorchCodec, and add Python checks this path does not need."""
    global _IMAGE_OPS
    if _IMAGE_OPS is False:
        try:
            import torchvision.io as io

            rgb = int(io.ImageReadMode.RGB.value)
            ops = torch.ops.image
            _IMAGE_OPS = (ops.read_file, ops.decode_jpeg, rgb) if io.image._has_image_ops() else None
        except (ImportError, AttributeError, RuntimeError):
            _IMAGE_OPS = None
    return _IMAGE_OPS


_IMAGE_OPS: Any = False  # not looked up yet


def decode_file(path: str) -> torch.Tensor | None:
    """The image file at ``path`` as uint8 ``[3, H, W]`` decoded by torchvision.io (a channels-last
    view of the decoder's output, as PIL's pixels come), or None when :func:`_tensor_decodable` leaves
    the file to PIL, or torchvision.io cannot read or decode it (the caller then reads it with PIL,
    which decodes it or names the error)."""
    ops = _image_ops()
    if ops is None:
        return None
    read_file, decode_jpeg, rgb = ops
    try:
        data = read_file(str(path))
        if not _tensor_decodable(data.numpy()):
            return None
        return decode_jpeg(data, rgb, False)
    except RuntimeError:
        return None


def _default_loader(loader: Any) -> bool:
    """Whether ``loader`` is torchvision's default (PIL) image loader, which :func:`decode_file` matches."""
    try:
        from torchvision import get_image_backend
        from torchvision.datasets.folder import default_loader, pil_loader
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return loader is pil_loader or (loader is default_loader and get_image_backend() == "PIL")


def _timm_folder(dataset: Any) -> bool:
    """A timm ``ImageDataset`` over a folder reader that returns each file as an RGB PIL image."""
    reader = getattr(dataset, "reader", None)
    return (type(dataset).__module__.startswith("timm.") and isinstance(getattr(reader, "samples", None), list)
            and not getattr(dataset, "load_bytes", False) and getattr(dataset, "input_img_mode", None) == "RGB"
            and getattr(dataset, "additional_features", None) is None and len(reader.samples) == len(dataset))


def _folder(dataset: Any) -> tuple[list, Any, str | None] | None:
    """``(samples, loader, root)`` of a file-backed dataset (samples: ``(path, label)`` per item), or None:
    torchvision ``DatasetFolder`` / ``ImageFolder`` (its ``samples`` and ``loader``) and timm's
    ``ImageDataset`` over a folder (its reader's ``samples``; it reads a file as torchvision's
    ``pil_loader`` does, ``Image.open(f).convert("RGB")``)."""
    samples = getattr(dataset, "samples", None)
    if callable(getattr(dataset, "loader", None)) and isinstance(samples, (list, tuple)) and len(samples) == len(dataset):
        return samples, dataset.loader, getattr(dataset, "root", None)
    if _timm_folder(dataset):
        from torchvision.datasets.folder import pil_loader

        return dataset.reader.samples, pil_loader, getattr(dataset.reader, "root", None)
    return None


def _file_backed(dataset: Any) -> bool:
    """A dataset of image files whose items :class:`RawImages` reads by path (see :func:`_folder`)."""
    return _folder(dataset) is not None


def _without_transform(dataset: Any) -> Any:
    """A shallow copy of ``dataset`` whose items skip its image transform (never the caller's object).

    A :class:`torch.utils.data.Subset` is copied with its inner dataset stripped.
    """
    if isinstance(dataset, torch.utils.data.Subset):
        inner = _without_transform(dataset.dataset)
        if inner is dataset.dataset:
            return dataset
        clone = copy.copy(dataset)
        clone.dataset = inner
        return clone
    if getattr(dataset, "transform", None) is None and getattr(dataset, "transforms", None) is None:
        return dataset
    clone = copy.copy(dataset)
    if hasattr(clone, "transform"):
        clone.transform = None
    if getattr(clone, "transforms", None) is not None:
        target_transform = getattr(clone, "target_transform", None)
        try:
            from torchvision.datasets.vision import StandardTransform

            clone.transforms = StandardTransform(None, target_transform) if target_transform is not None else None
        except ImportError:  # pragma: no cover - torchvision is installed with the package's extras
            clone.transforms = None
    return clone


class RawImages(torch.utils.data.Dataset):
    """Items of ``dataset`` as ``(uint8 image [3, H, W], label)``, through the one decode path.

    ``strip=True`` bypasses the dataset's own image transform (training: the user's
    dataset as they built it); ``strip=False`` reads items as they are and refuses
    transformed images (generation). ``decoder`` (file-backed datasets with the default
    loader): ``"tensor"`` decodes JPEGs with :func:`decode_file`, ``"pil"`` always calls
    the loader; both give the same pixels where the libjpeg-turbo builds agree, which a
    :class:`~reinforced_data.dataset.ReinforcedDataset` checks on the fingerprint sample.
    Errors name the index and, for files, the path.
    """

    def __init__(self, dataset: Any, strip: bool = False, decoder: str = "tensor") -> None:
        if decoder not in DECODERS:
            raise ConfigError(f"decoder={decoder!r}; choose one of {DECODERS}")
        self.dataset = dataset
        transformed = getattr(dataset, "transform", None) is not None
        self._refuse_transform = transformed and not strip
        folder = None if self._refuse_transform else _folder(dataset)
        self.files = folder is not None
        self._samples, self._loader = folder[:2] if folder else (None, None)
        self._items = dataset if (self.files or not strip) else _without_transform(dataset)
        self.decoder = decoder
        self._tensor_decode = decoder == "tensor" and self.files and _default_loader(self._loader)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def decoder_name(self) -> str | None:
        """What decodes image files: ``"torchvision.io"`` (JPEGs, the rest with PIL) or ``"PIL"``;
        None for a dataset that is not file-backed (its items are the images)."""
        return None if not self.files else "torchvision.io" if self._tensor_decode else "PIL"

    def path(self, index: int) -> str | None:
        """The file image ``index`` is read from, for file-backed datasets."""
        return str(self._samples[index][0]) if self.files else None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.files:
            path, label = self._samples[index]
            try:
                img = decode_file(path) if self._tensor_decode else None
                if img is None:
                    img = self._loader(path)
            except FileNotFoundError:
                raise FileNotFoundError(f"image {index}: {path} does not exist") from None
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL: truncated, not an image, too large
                raise ConfigError(f"image {index}: {path} cannot be decoded ({e})") from None
            return to_uint8_image(img, index), int(label)
        item = self._items[index]
        img, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, -1)
        img = to_uint8_image(img, index)
        if self._refuse_transform:  # training bypasses it, so the teacher must not see its output either
            raise DatasetTypeError(f"image {index}: the dataset applies its own transform; reinforcement reads the raw "
                            "images: remove the dataset's transform")
        return img, int(label)


# ---------------------------------------------------------------------- labels and identity
def as_labels(values: Any, n: int) -> np.ndarray:
    """``values`` as int64 class indices [n]; a clear error for another length or a negative label."""
    labels = np.asarray(values, dtype=np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise ConfigError(f"the dataset holds {n} items but {labels.shape[0]} labels")
    if n and labels.min() < 0:
        i = int(labels.argmin())
        raise ConfigError(f"labels must be class indices >= 0; image {i} has {int(labels[i])}")
    return labels


def dataset_labels(dataset: Any) -> np.ndarray:
    """Ground-truth labels of a map-style dataset, as int64 [N].

    Uses ``dataset.targets`` (torchvision datasets, ImageFolder, SyntheticImages) when
    present (a :class:`torch.utils.data.Subset`: its dataset's, at its indices), else reads
    every item (slow: decodes every image once).
    """
    n = len(dataset)
    if isinstance(dataset, torch.utils.data.Subset):
        inner = dataset_labels(dataset.dataset)
        return as_labels(inner[np.asarray(dataset.indices, dtype=np.int64)], n)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        folder = _folder(dataset)
        samples = folder[0] if folder else getattr(dataset, "samples", None)
        if samples is not None:
            targets = [s[1] for s in samples]
    if targets is None:
        log.warning("dataset has no .targets: reading all %d items once to collect their labels", n)
        targets = [int(dataset[i][1]) for i in range(n)]
    return as_labels(targets, n)


def dataset_files(dataset: Any) -> list[str] | None:
    """The dataset's file list (relative to its root, ``/``-separated) when it has one
    (ImageFolder's ``samples``, timm ``ImageDataset``'s reader's; a
    :class:`torch.utils.data.Subset`: its dataset's, at its indices)."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = dataset_files(dataset.dataset)
        return None if inner is None else [inner[int(i)] for i in dataset.indices]
    folder = _folder(dataset)
    samples, root = (folder[0], folder[2]) if folder else (
        getattr(dataset, "samples", None) or getattr(dataset, "imgs", None), getattr(dataset, "root", None))
    if not samples:
        return None
    paths = [str(s[0]) if isinstance(s, (tuple, list)) else str(s) for s in samples]
    if root:
        paths = [_relpath(p, os.fspath(root)) for p in paths]
    return [p.replace(os.sep, "/") for p in paths]


def _relpath(path: str, root: str) -> str:
    """``os.path.relpath(path, root)``, without its cost (two ``abspath`` calls, ~11 us a path)
    where ``path`` is ``root`` joined with plain names, as folder datasets list their files."""
    prefix = os.path.join(root, "")
    if path.startswith(prefix):
        rel = path[len(prefix):]
        if rel and all(part not in ("", ".", "..") for part in rel.split(os.sep)):
            return rel
    return os.path.relpath(path, root)


def dataset_num_classes(dataset: Any) -> int | None:
    classes = class_names(dataset)
    return len(classes) if classes is not None else None


def class_names(dataset: Any) -> list[str] | None:
    """The dataset's class names (``dataset.classes``; for timm's ``ImageDataset``, its reader's
    ``class_to_idx`` in index order) when it has them."""
    classes = getattr(dataset, "classes", None)
    if classes is None and _timm_folder(dataset):
        mapping = getattr(dataset.reader, "class_to_idx", None) or {}
        classes = sorted(mapping, key=mapping.get) if sorted(mapping.values()) == list(range(len(mapping))) else None
    return [str(c) for c in classes] if classes is not None else None


def image_sample_sha256(dataset: Any, count: int = IMAGE_SAMPLE_SIZE, decoder: str = "tensor",
                        order: np.ndarray | None = None) -> str | None:
    """The sha256 of a fixed sample of the dataset's images, decoded through :class:`RawImages`
    (its transform bypassed): for each image of :func:`image_sample_indices`, its index,
    its height and width, and its uint8 pixels in HWC order. Two datasets with the same
    labels but other pixels differ here. None when the images cannot be decoded (logged).
    ``decoder``: as :class:`RawImages`. ``order``: the dataset's items in a file's row order
    (row ``r`` is item ``order[r]``, see :class:`RowMap`): the sample is then of rows, hashed
    with the row index, as the file's was."""
    raw = RawImages(dataset, strip=True, decoder=decoder)
    at = (lambda i: i) if order is None else (lambda i: int(order[i]))
    try:
        return images_sha256((i, raw[at(i)][0].permute(1, 2, 0).numpy())
                             for i in image_sample_indices(len(dataset) if order is None else len(order), count))
    except (OSError, ValueError, TypeError, IndexError, RuntimeError) as e:
        log.warning("the dataset's images cannot be sampled for its fingerprint (%s); it is identified by its "
                    "length, labels and file list only", " ".join(str(e).split()))
        return None


def dataset_fingerprint(dataset: Any, labels: np.ndarray | None = None, images: bool = True,
                        decoder: str = "tensor", files: list[str] | None = None, order: np.ndarray | None = None):
    """The :class:`~reinforced_data.fingerprint.Fingerprint` that identifies ``dataset``: its
    length, labels, file list, class count and (``images=True``) the hash of a fixed
    sample of its decoded images (:func:`image_sample_sha256`: 8 images decoded with ``decoder``).
    ``files``: its :func:`dataset_files`, when the caller has them already. ``order``: the
    fingerprint of the dataset's items in a file's row order (row ``r`` is item ``order[r]``;
    see :class:`RowMap`), which a file that stores identities compares with its own."""
    labels = dataset_labels(dataset) if labels is None else labels
    files = dataset_files(dataset) if files is None else files
    if order is not None:
        labels = np.asarray(labels)[order]
        files = None if files is None else [files[int(i)] for i in order]
    fp = Fingerprint.of(labels, files, dataset_num_classes(dataset))
    if images:
        fp = dataclasses.replace(fp, images_sha256=image_sample_sha256(dataset, decoder=decoder, order=order),
                                 images_decoder=RawImages(dataset, strip=True, decoder=decoder).decoder_name)
    return fp


# ---------------------------------------------------------------------- items by identity
def unwrap_subsets(dataset: Any) -> tuple[Any, np.ndarray | None]:
    """``(base, items)``: the dataset under any :class:`torch.utils.data.Subset` wrappers, and the
    base index of each of ``dataset``'s items (int64; None when ``dataset`` is not a Subset)."""
    items = None
    while isinstance(dataset, torch.utils.data.Subset):
        idx = np.asarray(dataset.indices, dtype=np.int64).reshape(-1)
        items = idx if items is None else idx[items]
        dataset = dataset.dataset
    return dataset, items


@dataclasses.dataclass
class RowMap:
    """How the items of a dataset map to the rows of a reinforcement file that stores
    identities (see :func:`match_rows`): ``base`` is the dataset whose items are decoded (the
    wrapped dataset with its :class:`~torch.utils.data.Subset` wrappers removed), ``rows[d]``
    the file row of the wrapped dataset's item ``d`` and ``base_index[r]`` the base item that
    holds row ``r`` (a partner row included). Either is None where it is the identity."""

    base: Any
    rows: np.ndarray | None
    base_index: np.ndarray | None
    num_rows: int
    base_files: list[str] | None = dataclasses.field(default=None, repr=False)

    def base_item(self, row: int) -> int:
        """The base item that holds file row ``row``."""
        return int(row) if self.base_index is None else int(self.base_index[row])

    @property
    def order(self) -> np.ndarray:
        """The base item of every file row (int64 [num_rows])."""
        return np.arange(self.num_rows) if self.base_index is None else self.base_index.astype(np.int64)

    def fingerprint(self, decoder: str = "tensor"):
        """The base dataset's fingerprint in the file's row order, to compare with the file's."""
        return dataset_fingerprint(self.base, files=self.base_files, order=self.order, decoder=decoder)


def matched_fingerprint(dataset: Any, rows: RowMap | None, decoder: str = "tensor"):
    """``dataset``'s fingerprint as a file's rows see it: in row order when ``rows`` (from
    :func:`match_rows`) maps it by identity, else the dataset's own (by position)."""
    return dataset_fingerprint(dataset, decoder=decoder) if rows is None else rows.fingerprint(decoder)


def match_rows(dataset: Any, identities: list[str] | None, labels: np.ndarray, path: str) -> RowMap | None:
    """Map ``dataset``'s items to the rows of the file at ``path`` by identity (docs/format.md,
    "Dataset identity"): ``identities`` are the file's (one a row), ``labels`` its labels.

    None when the file or the dataset has no identities (a file written before them, a
    dataset without a file list, or one listing a file twice): items then map to rows by
    position. Otherwise every item of ``dataset`` must be a file of the file, every row of the
    file a file of the base dataset (for partner views and the image sample), and each image's
    label the file's: a :class:`DatasetMismatchError` names the first extra or missing file
    (and how many) or the first image whose label differs. Reads no image.
    """
    from .errors import DatasetMismatchError

    if identities is None:
        return None
    base, items = unwrap_subsets(dataset)
    files = dataset_files(base)
    if files is None:
        return None
    where = {name: i for i, name in enumerate(files)}
    if len(where) != len(files):  # a file listed twice: its items cannot be told apart by name
        return None
    base_index = np.fromiter((where.get(name, -1) for name in identities), dtype=np.int64, count=len(identities))
    row_of = np.full(len(files), -1, dtype=np.int64)
    row_of[base_index[base_index >= 0]] = np.flatnonzero(base_index >= 0)
    used = np.arange(len(files), dtype=np.int64) if items is None else items
    rows = row_of[used]
    problems = []
    extra = np.flatnonzero(rows < 0)
    if extra.size:
        problems.append(f"{extra.size} of the dataset's images {'is' if extra.size == 1 else 'are'} not in the "
                        f"file (first: {files[int(used[extra[0]])]})")
    missing = np.flatnonzero(base_index < 0)
    if missing.size:
        problems.append(f"{missing.size} of the file's images {'is' if missing.size == 1 else 'are'} missing from "
                        f"the dataset (first: {identities[int(missing[0])]})")
    if problems:
        raise DatasetMismatchError(f"{path} was made for another dataset: {'; '.join(problems)}")
    ours = dataset_labels(base)[base_index]
    differ = np.flatnonzero(ours != np.asarray(labels, dtype=np.int64))
    if differ.size:
        r = int(differ[0])
        raise DatasetMismatchError(
            f"{path} was made for another dataset: {differ.size} image{'s have' if differ.size > 1 else ' has'} other "
            f"labels (first: "
            f"{identities[r]} is class {int(labels[r])} in the file, {int(ours[r])} in the dataset; do the two "
            "number their classes in another order?)")
    n = len(identities)
    small = np.int32 if max(len(files), n) < 2 ** 31 else np.int64  # pickled to every spawned worker
    return RowMap(base, None if np.array_equal(rows, np.arange(rows.size)) else rows.astype(small),
                  None if np.array_equal(base_index, np.arange(n)) else base_index.astype(small), n, files)
