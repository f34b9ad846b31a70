"""Import apple/ml-dr's reinforced datasets (the paper's published ImageNet+ files) into one reinforcement file.

An ml-dr source is a folder holding ``config.pth.tar`` (the generation config; ``config["reinforce"]`` has
``num_samples``, ``topk`` and ``image_augmentation``) and one ``{index}.pth.tar`` per training image, a
torch-saved ``(index, samples)``: ``num_samples`` dicts ``{"params": ..., "prob": (values, class_ids)}``.
``params`` is ml-dr's compressed list (the transforms in ml-dr's fixed order, parameterless ones left out;
with mixing, first the partner's image index or None, and for a mixed sample each per-image transform holds
the pair (this image's, the partner's)) or, uncompressed, a dict by transform name.

Every sample becomes one record of this package's format (docs/format.md) under a policy built from the
config (docs/mldr.md): the crop ``(top, left, height, width)``, the flip, RandAugment ``(op, magnitude)``
as an op id and signed magnitude bin of torchvision's table, RandomErasing's box (erased to 0 before
normalisation: ``erase_value`` (0, 0, 0)), MixUp's λ and CutMix's box; a mixed sample keeps its partner's
own crop, flip, RandAugment and erasing inline (``mix_partner="inline"``, format version 4).

Pickles are read with a restricted unpickler that builds only containers, numbers, strings, bytes and
NumPy scalars (what ml-dr writes): a source cannot run code through it. (torch's own ``weights_only`` loader
refuses ml-dr's files, which are pickle protocol 4.)
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import re
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _families as FAM
from .errors import ConfigError, DatasetMismatchError, ReinforcedDataError

__all__ = ["MldrSourceError", "MldrSource", "policy_from_config", "import_mldr", "load_pickle",
           "TRANSFORM_ORDER", "RA_OP_NAMES"]

log = logging.getLogger(__name__)

#: ml-dr's transforms, in the fixed order its Compose applies (and compresses) them
TRANSFORM_ORDER = ("uint8", "resize", "center_crop", "random_crop", "random_resized_crop", "random_horizontal_flip",
                   "rand_augment", "to_tensor", "random_erase", "normalize", "mixup", "cutmix")
NO_PARAM_TRANSFORMS = frozenset(("uint8", "center_crop", "to_tensor", "normalize"))
MIXING = ("mixup", "cutmix")
#: ml-dr transforms the importer cannot express yet (the CIFAR configs' resize + padded random crop)
UNSUPPORTED = frozenset(("resize", "center_crop", "random_crop"))
#: ml-dr's RandAugment op list (torchvision's RandAugment order): a stored op index indexes it
RA_OP_NAMES = FAM.TORCHVISION_OPS
#: images per task handed to a worker process
CHUNK_IMAGES = 32
#: below this share of sampled records whose top-k holds the dataset's label, --data is refused
MIN_LABEL_IN_TOPK = 0.3
_INDEX_FILE = re.compile(r"^(\d+)\.pth\.tar$")


class MldrSourceError(ConfigError):
    """An ml-dr source that cannot be imported (not ml-dr's, a missing or damaged file, an unsupported
    config); the message names the file."""


# ---------------------------------------------------------------------- safe pickles
class _Unpickler(pickle.Unpickler):
    """Builds containers, numbers, strings and NumPy scalars only; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _np_scalar
        if module == "_codecs" and name == "encode":  # how pickle protocols 0-2 write bytes (a NumPy scalar's)
            import codecs

            return codecs.encode
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which an ml-dr file never holds")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds tensor storage, which an ml-dr file never holds")


def _np_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"a NumPy scalar of type {dtype!r}, which an ml-dr file never holds")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def load_pickle(path: str, data: bytes | None = None) -> Any:
    """A ``torch.save``d object of an ml-dr source (zip format), read without running code from it: the file
    at ``path``, or its bytes ``data`` (a tar member; ``path`` then only names it)."""
    try:
        with zipfile.ZipFile(path if data is None else io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise MldrSourceError(f"{path} is not a torch.save file (no data.pkl inside its zip archive)")
            pkl = z.read(names[0])
    except zipfile.BadZipFile:
        raise MldrSourceError(f"{path} is truncated or not a torch.save file (not a readable zip archive)") from None
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise MldrSourceError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    try:
        return _Unpickler(io.BytesIO(pkl)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise MldrSourceError(f"{path} cannot be unpickled safely ({e})") from None


# ---------------------------------------------------------------------- config → policy
def _clean(aug: dict) -> dict:
    """ml-dr's clean_config: drop disabled transforms and the ``enable`` keys."""
    out = {}
    for name, args in aug.items():
        args = dict(args or {})
        if args.pop("enable", True):
            out[name] = args
    return out


def _pair(value: Any, name: str, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise MldrSourceError(f"{where}: {name}={value!r} must be a pair of numbers") from None
    return lo, hi


def _check_args(name: str, args: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(args) - allowed)
    if extra:
        raise MldrSourceError(f"{where}: {name} has argument(s) {extra} the importer cannot express "
                              f"(known: {sorted(allowed)})")


def policy_from_config(config: Any, where: str = "config.pth.tar"):
    """The :class:`~reinforced_data.policy.Policy` that replays an ml-dr config's ``image_augmentation``."""
    from .policy import IMAGENET_MEAN, IMAGENET_STD, Policy

    try:
        aug = _clean(config["reinforce"]["image_augmentation"])
    except (KeyError, TypeError, AttributeError):
        raise MldrSourceError(f"{where} is not an ml-dr config (no reinforce.image_augmentation)") from None
    unknown = sorted(set(aug) - set(TRANSFORM_ORDER))
    if unknown:
        raise MldrSourceError(f"{where}: unknown transform(s) {unknown} in reinforce.image_augmentation "
                              f"(ml-dr's are {list(TRANSFORM_ORDER)})")
    unsupported = sorted(set(aug) & UNSUPPORTED)
    if unsupported:
        raise MldrSourceError(f"{where}: transform(s) {unsupported} cannot be imported yet (the importer takes "
                              "random_resized_crop, random_horizontal_flip, rand_augment, random_erase, normalize, "
                              "mixup, cutmix)")
    if "random_resized_crop" not in aug:
        raise MldrSourceError(f"{where}: no random_resized_crop; the importer needs it (the view's crop)")
    kw: dict[str, Any] = {}
    rrc = aug["random_resized_crop"]
    _check_args("random_resized_crop", rrc, {"size", "scale", "ratio", "interpolation", "antialias"}, where)
    size = rrc.get("size", 224)
    size = [int(size)] * 2 if isinstance(size, (int, float)) else [int(s) for s in size]
    if len(size) == 1:
        size *= 2
    kw["output_size"] = tuple(size)
    kw["crop_scale"] = _pair(rrc.get("scale", (0.08, 1.0)), "scale", where)
    kw["crop_ratio"] = _pair(rrc.get("ratio", (3 / 4, 4 / 3)), "ratio", where)
    if rrc.get("interpolation", "bilinear") not in ("bilinear", 2) or rrc.get("antialias", True) is not True:
        raise MldrSourceError(f"{where}: random_resized_crop must use bilinear interpolation with antialiasing "
                              "(torchvision's default), the importer's crop")
    flip = aug.get("random_horizontal_flip")
    kw["flip_prob"] = float(flip.get("p", 0.5)) if flip is not None else 0.0
    ra = aug.get("rand_augment")
    if ra is not None:
        _check_args("rand_augment", ra, {"p", "num_ops", "magnitude", "num_magnitude_bins", "fill"}, where)
        if "uint8" not in aug:
            raise MldrSourceError(f"{where}: rand_augment without uint8 runs on float tensors; the importer replays "
                                  "RandAugment on uint8 views (ml-dr's configs enable uint8)")
        if ra.get("fill") not in (None, 0, [0, 0, 0], (0, 0, 0)):
            raise MldrSourceError(f"{where}: rand_augment fill={ra.get('fill')!r}; the importer takes fill 0")
        kw.update(ra_num_ops=int(ra.get("num_ops", 2)), ra_magnitude=int(ra.get("magnitude", 9)),
                  ra_num_magnitude_bins=int(ra.get("num_magnitude_bins", 31)), ra_prob=float(ra.get("p", 1.0)))
    er = aug.get("random_erase")
    if er is not None:
        _check_args("random_erase", er, {"p", "scale", "ratio", "value", "inplace"}, where)
        kw.update(erase_prob=float(er.get("p", 0.5)), erase_scale=_pair(er.get("scale", (0.02, 0.33)), "scale", where),
                  erase_ratio=_pair(er.get("ratio", (0.3, 3.3)), "ratio", where), erase_value=(0, 0, 0))
    norm = aug.get("normalize")
    if norm is not None:
        kw.update(mean=tuple(norm.get("mean", IMAGENET_MEAN)), std=tuple(norm.get("std", IMAGENET_STD)))
    else:
        kw.update(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    mixup, cutmix = aug.get("mixup"), aug.get("cutmix")
    if mixup is not None or cutmix is not None:
        kw.update(mix_mode="sequential", mix_partner="inline")
        if mixup is not None:
            _check_args("mixup", mixup, {"alpha", "p", "div_by"}, where)
            kw.update(mixup_alpha=float(mixup.get("alpha", 1.0)), mixup_prob=float(mixup.get("p", 1.0)),
                      mixup_lam_div=float(mixup.get("div_by", 1.0)))
        else:
            kw.update(mixup_prob=0.0)
        if cutmix is not None:
            _check_args("cutmix", cutmix, {"alpha", "p"}, where)
            kw.update(cutmix_alpha=float(cutmix.get("alpha", 1.0)), cutmix_prob=float(cutmix.get("p", 1.0)))
        else:
            kw.update(cutmix_prob=0.0)
    try:
        return Policy(**kw)
    except ConfigError as e:
        raise MldrSourceError(f"{where}: its augmentation cannot be expressed ({e})") from None


def _param_transforms(config: Any) -> list[str]:
    aug = _clean(config["reinforce"]["image_augmentation"])
    return [t for t in TRANSFORM_ORDER if t in aug and t not in NO_PARAM_TRANSFORMS]


# ---------------------------------------------------------------------- sources
@dataclass
class MldrSource:
    """One ml-dr source: a folder, or a ``.tar`` / ``.tar.gz`` of one (read as a stream, never extracted),
    with its config and how many samples each image file holds."""

    path: str
    config: dict
    num_samples: int
    topk: int
    transforms: list[str]
    prefix: str | None = None  # a tar source: the folder inside the archive that holds config.pth.tar

    @property
    def is_tar(self) -> bool:
        return self.prefix is not None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "MldrSource":
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
        prefix = None
        if os.path.isdir(path):
            cfg_path = os.path.join(path, "config.pth.tar")
            if not os.path.isfile(cfg_path):
                raise MldrSourceError(f"{path} is not an ml-dr source: it has no config.pth.tar")
            config = load_pickle(cfg_path)
        else:
            if not tarfile.is_tarfile(path):
                raise MldrSourceError(f"{path} is not an ml-dr source: neither a folder nor a .tar / .tar.gz archive")
            prefix, data = _tar_config(path)
            cfg_path = f"{path}:{prefix + '/' if prefix else ''}config.pth.tar"
            config = load_pickle(cfg_path, data)
        try:
            r = config["reinforce"]
            num_samples, topk = int(r["num_samples"]), int(r["topk"])
        except (KeyError, TypeError, ValueError):
            raise MldrSourceError(f"{cfg_path} is not an ml-dr config (no reinforce.num_samples / topk)") from None
        if num_samples < 1 or topk < 1:
            raise MldrSourceError(f"{cfg_path}: num_samples={num_samples} and topk={topk} must be >= 1")
        policy_from_config(config, cfg_path)  # refuses what cannot be imported, naming the file
        return cls(path, config, num_samples, topk, _param_transforms(config), prefix)

    def config_path(self) -> str:
        if self.is_tar:
            return f"{self.path}:{self.prefix + '/' if self.prefix else ''}config.pth.tar"
        return os.path.join(self.path, "config.pth.tar")

    def index_path(self, index: int) -> str:
        if self.is_tar:
            return f"{self.path}:{self.prefix + '/' if self.prefix else ''}{index}.pth.tar"
        return os.path.join(self.path, f"{index}.pth.tar")

    def count_index_files(self) -> tuple[int, int]:
        """(number of ``{index}.pth.tar`` files, largest index + 1)."""
        n, top = 0, 0
        with os.scandir(self.path) as it:
            for e in it:
                m = _INDEX_FILE.match(e.name)
                if m:
                    n += 1
                    top = max(top, int(m.group(1)) + 1)
        return n, top

    def stream(self):
        """A tar source's image files in archive order: (index, bytes), one at a time."""
        mine = (self.prefix or "").lstrip("./")
        try:
            with tarfile.open(self.path, "r|*") as t:
                for m in t:
                    folder, _, name = m.name.rpartition("/")
                    match = _INDEX_FILE.match(name)
                    if not m.isfile() or not (match or name == "config.pth.tar"):
                        continue
                    if folder.lstrip("./") != mine:  # never import part of an archive silently
                        raise MldrSourceError(
                            f"{self.path} holds more than one ml-dr folder ({mine or '.'} and {folder or '.'}); "
                            "extract it and import its folders together (reinforced-data import-mldr DIR1 DIR2 ...)")
                    if match:
                        yield int(match.group(1)), t.extractfile(m).read()
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise MldrSourceError(f"{self.path} is a damaged archive ({type(e).__name__}: {e})") from None


def _tar_config(path: str) -> tuple[str, bytes]:
    """(folder inside the archive, bytes) of a tar source's config.pth.tar, read as a stream."""
    try:
        with tarfile.open(path, "r|*") as t:
            for m in t:
                folder, _, name = m.name.rpartition("/")
                if name == "config.pth.tar" and m.isfile():
                    return folder, t.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise MldrSourceError(f"{path} is a damaged archive ({type(e).__name__}: {e})") from None
    raise MldrSourceError(f"{path} is not an ml-dr source: its archive holds no config.pth.tar")


def _jsonable(value: Any) -> Any:
    """A config as JSON (what json cannot say becomes its repr)."""
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


# ---------------------------------------------------------------------- samples → records
class _Converter:
    """ml-dr samples of one source → this package's records."""

    def __init__(self, policy: Any, source: MldrSource, num_classes: int) -> None:
        self.policy, self.source, self.num_classes = policy, source, num_classes
        self.dtype = policy.param_dtype()
        self.mixing = policy.mixing
        self.transforms = source.transforms
        self.k = source.topk
        oh, ow = policy.output_size
        self.oh, self.ow = oh, ow
        nb = policy.ra_num_magnitude_bins
        # float32 magnitude → signed bin, per op (torchvision's tables on the oh x ow view)
        self.bins: list[dict[float, int] | None] = []
        for op in RA_OP_NAMES:
            table = FAM.torchvision_magnitudes("torchvision", op, nb, oh, ow)
            if table is None:
                self.bins.append(None)
                continue
            values = {float(np.float32(v)): b for b, v in reversed(list(enumerate(np.asarray(table).tolist())))}
            if op == "Solarize":  # torchvision's table in 0..255 (uint8 thresholds), as newer releases store it
                import torch

                values.update({float(v): b for b, v in reversed(list(enumerate(
                    torch.linspace(255.0, 0.0, nb).tolist())))})
            self.bins.append(values)

    def image(self, index: int, path: str, obj: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(params [K], top-k indices [K, k], probs [K, k], partner_index [K]) of one image file."""
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[1], (list, tuple))):
            raise MldrSourceError(f"{path} is not an ml-dr image file (expected (index, samples))")
        stored, samples = obj
        if stored != index:
            raise MldrSourceError(f"{path} holds index {stored!r}, not {index}")
        K = self.source.num_samples
        if len(samples) != K:
            raise MldrSourceError(f"{path} holds {len(samples)} samples, but config.pth.tar says num_samples={K}")
        recs: list[dict] = []
        values: list = []
        ids: list = []
        partner = np.full(K, index, dtype=np.int64)
        for j, s in enumerate(samples):
            try:
                if not isinstance(s, dict) or "params" not in s or "prob" not in s:
                    raise ValueError("not a {'params', 'prob'} dict")
                rec: dict = {}
                partner[j] = self._params(s["params"], rec, index)
                recs.append(rec)
                v, i = s["prob"]
                if len(v) != self.k or len(i) != self.k:
                    raise ValueError(f"its prob holds {len(v)} values and {len(i)} classes, not topk={self.k}")
                values.append(v)
                ids.append(i)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise MldrSourceError(f"{path}: sample {j} cannot be imported ({e})") from None
        params = np.zeros(K, dtype=self.dtype)
        for name in self.dtype.names:
            zero = np.zeros(self.dtype[name].shape, dtype=np.int64).tolist() if self.dtype[name].shape else 0
            params[name] = [r.get(name, zero) for r in recs]
        try:
            v = np.asarray(values, dtype=np.float64).reshape(K, self.k)
            i = np.asarray(ids, dtype=np.int64).reshape(K, self.k)
        except (ValueError, TypeError, OverflowError) as e:
            raise MldrSourceError(f"{path}: its probabilities are not numbers ({e})") from None
        bad = ~np.isfinite(v) | (v < 0) | (v > 1)
        if bad.any():
            raise MldrSourceError(f"{path}: sample {int(np.flatnonzero(bad.any(axis=1))[0])} cannot be imported (its "
                                  "probabilities are not in [0, 1])")
        bad = (i < 0) | (i >= self.num_classes)
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=1))[0])
            raise MldrSourceError(f"{path}: sample {j} cannot be imported (a class id is {int(i[bad][0])}, outside "
                                  f"[0, {self.num_classes}))")
        same = np.sort(i, axis=1)
        same = same[:, 1:] == same[:, :-1]
        if same.any():  # a top-k never names a class twice; its probabilities would not be a distribution
            j = int(np.flatnonzero(same.any(axis=1))[0])
            raise MldrSourceError(f"{path}: sample {j} cannot be imported (its top-{self.k} names a class twice)")
        order = np.argsort(-v, axis=1, kind="stable")
        return params, np.take_along_axis(i, order, 1), np.take_along_axis(v, order, 1), partner

    def _split(self, params: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(partner index or None, own per-image values, partner per-image values) + mixing values in own."""
        own: dict[str, Any] = {}
        other: dict[str, Any] = {}
        if isinstance(params, dict):  # uncompressed: every per-image transform holds (own, partner)
            id2 = params.get("id2")
            for t in self.transforms:
                v = params.get(t)
                if t in MIXING:
                    own[t] = v
                elif isinstance(v, (tuple, list)) and len(v) in (1, 2):
                    own[t] = v[0]
                    if len(v) == 2:
                        other[t] = v[1]
                else:
                    raise ValueError(f"its {t} entry is {v!r}, not a (this image, partner) pair")
            return id2, own, other
        if not isinstance(params, (list, tuple)):
            raise ValueError(f"its params are a {type(params).__name__}, not ml-dr's list or dict")
        params = list(params)
        id2 = None
        if self.mixing:
            id2, params = params[0], params[1:]
        if len(params) != len(self.transforms):
            raise ValueError(f"its params hold {len(params)} entries for the config's {len(self.transforms)} "
                             f"transforms {self.transforms}")
        for t, v in zip(self.transforms, params):
            if t in MIXING or id2 is None:
                own[t] = v
            else:
                own[t], other[t] = v
        return id2, own, other

    def _params(self, raw: Any, out: dict, index: int) -> int:
        id2, own, other = self._split(raw)
        self._image_fields(own, out, "")
        if not self.mixing:
            return index
        mixup, cutmix = own.get("mixup"), own.get("cutmix")
        mode = (mixup is not None) + 2 * (cutmix is not None)
        lam = 255
        box = (0, 0, 0, 0)
        if cutmix is not None:
            if len(cutmix) != 5:
                raise ValueError(f"its CutMix entry holds {len(cutmix)} values, not [lambda, row0, col0, row1, col1]")
            c_lam, x1, y1, x2, y2 = (float(cutmix[0]), *(int(v) for v in cutmix[1:5]))
            if not 0.0 <= c_lam <= 1.0:  # the raw draw; the box is what is applied, and what is kept
                raise ValueError(f"its CutMix lambda {c_lam} lies outside [0, 1]")
            if not (0 <= x1 <= x2 <= self.oh and 0 <= y1 <= y2 <= self.ow):
                raise ValueError(f"its CutMix box {[x1, y1, x2, y2]} lies outside the {self.oh}x{self.ow} view")
            box = (x1, y1, x2 - x1, y2 - y1)
            lam = round((1.0 - (x2 - x1) * (y2 - y1) / float(self.oh * self.ow)) * 255)
        if mixup is not None:
            m = float(mixup)
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"its MixUp lambda {m} lies outside [0, 1]")
            lam = round(m * 255)
        out["mix_mode"] = mode
        out["mix_lam"] = lam
        out["mix_box"] = box
        if mode == 0:
            return index
        if id2 is None:
            raise ValueError("it is mixed but names no partner image")
        if not other:
            raise ValueError("it is mixed but holds no partner parameters")
        self._image_fields(other, out, "partner_")
        return int(id2)

    def _image_fields(self, vals: dict[str, Any], out: dict, prefix: str) -> None:
        rrc = vals.get("random_resized_crop")
        if rrc is None or len(rrc) != 4:
            raise ValueError(f"its {prefix or 'own '}crop is {rrc!r}, not (top, left, height, width)")
        top, left, h, w = (int(v) for v in rrc)
        if top < 0 or left < 0 or h < 1 or w < 1 or max(top + h, left + w) > 65535:
            raise ValueError(f"its {prefix or 'own '}crop {[top, left, h, w]} is not a crop box")
        out[prefix + "crop"] = (top, left, h, w)
        if "random_horizontal_flip" in self.transforms:
            out[prefix + "flip"] = bool(vals.get("random_horizontal_flip"))
        if "rand_augment" in self.transforms:
            n = self.policy.ra_num_ops
            ops = vals.get("rand_augment")
            if ops is None:  # the stage skipped (its p)
                out[prefix + "ra_op"] = [0] * n
                out[prefix + "ra_mag"] = [0] * n
            else:
                out[prefix + "ra_op"] = op_ids = [0] * n
                out[prefix + "ra_mag"] = bins = [0] * n
                if len(ops) != n:
                    raise ValueError(f"its RandAugment holds {len(ops)} ops, the config num_ops={n}")
                for s, (op, mag) in enumerate(ops):
                    op = int(op)
                    if not 0 <= op < len(RA_OP_NAMES):
                        raise ValueError(f"its RandAugment op index {op} is not one of ml-dr's {len(RA_OP_NAMES)}")
                    table = self.bins[op]
                    mag = float(mag)
                    if table is None:
                        if mag != 0.0:
                            raise ValueError(f"its {RA_OP_NAMES[op]} has magnitude {mag}; it takes none")
                        b = 0
                    else:
                        b = table.get(float(np.float32(abs(mag))))
                        if b is None:
                            raise ValueError(f"its {RA_OP_NAMES[op]} magnitude {mag} is not a bin of torchvision's "
                                             f"table ({self.policy.ra_num_magnitude_bins} bins)")
                        b = -b if mag < 0 else b
                    op_ids[s] = op
                    bins[s] = b
        if "random_erase" in self.transforms:
            e = vals.get("random_erase")
            if e is None or int(e[0]) == -1:
                out[prefix + "erase"] = (0, 0, 0, 0)
            else:
                x, y, h, w = (int(v) for v in e[:4])
                if min(x, y, h, w) < 0 or x + h > self.oh or y + w > self.ow:
                    raise ValueError(f"its {prefix or 'own '}erasing box {[x, y, h, w]} lies outside the view")
                out[prefix + "erase"] = (x, y, h, w)


def _convert_chunk(task: tuple) -> tuple:
    """Worker: load and convert the image files of ``indices`` from every source (views concatenated);
    ``blobs`` (a tar source's) holds each index's file bytes, else the files are read from the folders."""
    policy_json, sources, num_classes, indices = task[:4]
    blobs = task[4] if len(task) > 4 else None
    from .policy import Policy

    policy = Policy.from_json(policy_json)
    convs = [_Converter(policy, s, num_classes) for s in sources]
    out = []
    for n, i in enumerate(indices):
        parts = []
        for c in convs:
            path = c.source.index_path(i)
            if blobs is not None:
                obj = load_pickle(path, blobs[n])
            elif not os.path.isfile(path):
                raise MldrSourceError(f"{path} is missing: the source has no file for image {i}")
            else:
                obj = load_pickle(path)
            parts.append(c.image(i, path, obj))
        out.append(tuple(np.concatenate(p, axis=0) for p in zip(*parts)))
    return indices, out


# ---------------------------------------------------------------------- import
def import_mldr(sources: Sequence[str | os.PathLike] | str | os.PathLike, output: str | os.PathLike, data: Any, *,
                num_workers: int = 0, resume: bool = False, overwrite: bool = False,
                prob_encoding: str = "log_uint8", progress: bool = True) -> dict:
    """Import ml-dr source folder(s) into ``output`` for the dataset ``data`` (an ImageFolder path or a
    map-style dataset in the order the sources index). Several sources concatenate their views (ml-dr
    picks one source at random per sample). Returns a summary dict."""
    from . import store
    from ._datasets import dataset_files, dataset_fingerprint, dataset_labels, resolve_dataset
    from .errors import FileAccessError
    from .errors import system_error_message

    if resume and overwrite:
        raise ConfigError("pass resume or overwrite, not both")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise ConfigError("name at least one ml-dr source folder")
    if num_workers < 0:
        raise ConfigError(f"num_workers={num_workers} must be >= 0")
    seen: dict[str, str] = {}
    for s in sources:  # the same views twice would pass for twice as many
        real = os.path.realpath(s)
        if real in seen:
            raise MldrSourceError(f"{s} is named twice (as {seen[real]} too): each source is imported once")
        seen[real] = os.fspath(s)
    srcs = [MldrSource.open(s) for s in sources]
    first = srcs[0]
    aug0 = _clean(first.config["reinforce"]["image_augmentation"])
    for s in srcs[1:]:
        if _clean(s.config["reinforce"]["image_augmentation"]) != aug0 or s.topk != first.topk:
            raise MldrSourceError(f"{s.config_path()} has another image_augmentation or topk than "
                                  f"{first.config_path()}; sources imported together must share them")
    policy = policy_from_config(first.config, first.config_path())
    dataset = resolve_dataset(data)
    n = len(dataset)
    if n < 1:
        raise ConfigError("the dataset is empty")
    tar = first.is_tar
    if any(s.is_tar for s in srcs) and len(srcs) > 1:
        raise MldrSourceError(f"{next(s.path for s in srcs if s.is_tar)} is an archive: an archive is imported on "
                              "its own (read as one stream); extract the archives to import several sources together")
    for s in srcs:
        if s.is_tar:
            break
        count, top = s.count_index_files()
        if count != n or top != n:
            missing = next((i for i in range(n) if not os.path.isfile(s.index_path(i))), None)
            if missing is not None:
                raise MldrSourceError(f"{s.index_path(missing)} is missing: {s.path} holds {count} index files, "
                                      f"the dataset {n} images")
            raise DatasetMismatchError(f"{s.path} holds {count} index files (up to index {top - 1}), the dataset "
                                       f"{n} images; pass the dataset the source was made for")
    labels = dataset_labels(dataset)
    num_classes = first.config.get("num_classes") if isinstance(first.config, dict) else None
    # what identifies each row's image (folders: its path), stored as generation stores it, so that training
    # maps another listing of the same images (timm's order, a Subset) to its rows
    identities = dataset_files(dataset)
    fingerprint = dataset_fingerprint(dataset, labels, files=identities)
    num_classes = int(num_classes or fingerprint.num_classes or int(labels.max()) + 1)
    if fingerprint.num_classes is not None and fingerprint.num_classes != num_classes:
        raise DatasetMismatchError(f"the dataset has {fingerprint.num_classes} classes, but the source's teacher "
                                   f"({first.path}) predicts {num_classes}; pass the dataset the source was made for")
    if labels.max() >= num_classes:
        raise DatasetMismatchError(f"the dataset's labels reach {int(labels.max())}, but the source's teacher "
                                   f"predicts {num_classes} classes")
    K = sum(s.num_samples for s in srcs)
    k = first.topk
    if k > num_classes:
        raise MldrSourceError(f"{first.config_path()}: topk={k} exceeds its {num_classes} classes")

    # labels against the source: the dataset's label should be among the teacher's top-k on most views
    if tar:  # the archive's first files
        head = list(itertools.islice(first.stream(), 16))
        _check_tar_indices(first, [i for i, _ in head], n)
        probe = [i for i, _ in head]
        _, rows = _convert_chunk((policy.to_json(), srcs, num_classes, probe, [b for _, b in head]))
    else:
        probe = np.unique(np.linspace(0, n - 1, min(n, 16)).astype(np.int64)).tolist()
        _, rows = _convert_chunk((policy.to_json(), srcs, num_classes, probe))
    if not probe:
        raise MldrSourceError(f"{first.index_path(0)} is missing: the source holds no image files")
    hits = np.concatenate([(r[1] == labels[i]).any(axis=1) for i, r in zip(probe, rows)])
    rate = float(hits.mean())
    if rate < MIN_LABEL_IN_TOPK:
        raise DatasetMismatchError(
            f"the dataset's labels are in the source's top-{k} on only {rate:.0%} of {hits.size} sampled records "
            f"(images {probe[0]}..{probe[-1]}); the dataset is not the one {first.path} was made for, or lists its "
            "images in another order")

    teacher = first.config.get("teacher") if isinstance(first.config, dict) else None
    header = store.Header(
        num_images=n, num_views=K, topk=k, num_classes=num_classes, policy=policy,
        teachers=[{"name": f"apple/ml-dr teacher {_jsonable(teacher)}", "checkpoint": None, "input_size": None,
                   "mean": list(policy.mean), "std": list(policy.std), "weights_sha256": None}],
        fingerprint=fingerprint, prob_encoding=prob_encoding,
        source={"format": "apple/ml-dr", "paths": [s.path for s in srcs],
                "num_samples": [s.num_samples for s in srcs], "topk": k,
                "reinforce": _jsonable({kk: v for kk, v in first.config["reinforce"].items()}),
                "probabilities": f"the source's top-{k} values, stored as {prob_encoding}"})
    path = os.fspath(output)
    mode = "resume" if resume else "overwrite" if overwrite else "create"
    summary = {"output": path, "images": 0, "skipped": 0, "views": K, "label_in_topk_sampled": rate}
    try:
        writer = store.ReinforcementWriter.open(path, header, labels, mode=mode, identities=identities)
        try:
            todo = np.flatnonzero(~writer.written)
            summary["skipped"] = int(n - todo.size)
            chunks = [todo[a:a + CHUNK_IMAGES].tolist() for a in range(0, todo.size, CHUNK_IMAGES)]
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, initial=summary["skipped"], unit="img", desc=os.path.basename(path),
                           dynamic_ncols=True)
            if tar:
                tasks = _tar_tasks(policy.to_json(), first, num_classes, writer.written, n)
            else:
                tasks = ((policy.to_json(), srcs, num_classes, c) for c in chunks)
            with contextlib.ExitStack() as stack:
                if num_workers > 0:
                    # spawned, not forked: a forked worker would hold the writer's lock open (blocking --resume
                    # once the importer is killed); and each worker ends itself when the importer is gone, as
                    # it would otherwise wait on the pool's queue for ever
                    pool = stack.enter_context(ProcessPoolExecutor(
                        num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_end_with_parent,
                        initargs=(os.getpid(),)))
                    results = _bounded_map(pool, _convert_chunk, tasks, 2 * num_workers)
                else:
                    results = map(_convert_chunk, tasks)
                for indices, rows in results:
                    params = np.stack([r[0] for r in rows])
                    writer.write(indices, params, np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                                 np.stack([r[3] for r in rows]) if policy.mixing else None,
                                 np.zeros((len(indices), K), dtype=np.int64) if policy.mixing else None)
                    writer.commit()
                    summary["images"] += len(indices)
                    if bar is not None:
                        bar.update(len(indices))
            if bar is not None:
                bar.close()
            if not writer.written.all():  # an archive that lacks some image files
                writer.commit()
                missing = int(np.flatnonzero(~writer.written)[0])
                raise MldrSourceError(f"{first.index_path(missing)} is missing: the archive holds "
                                      f"{int(writer.written.sum())} of the dataset's {n} images (the rows it held are "
                                      "kept; --resume continues once the source is complete)")
            writer.finish(generation={"imported_from": "apple/ml-dr", "images": summary["images"]})
        except BaseException as e:
            with contextlib.suppress(Exception):
                writer.close()
            if isinstance(e, ConfigError) and mode != "resume" and not writer.written.any():
                # a source this run cannot import leaves no empty file behind to block the corrected rerun
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise
    except (OSError, RuntimeError) as e:
        msg = None if isinstance(e, ReinforcedDataError) or isinstance(e, FileNotFoundError) else \
            system_error_message(e, path)
        if msg is None:
            raise
        raise FileAccessError(msg) from None
    return summary


def _check_tar_indices(src: MldrSource, indices: list[int], n: int) -> None:
    if indices and max(indices) >= n:
        raise DatasetMismatchError(f"{src.index_path(max(indices))} names image {max(indices)}, but the dataset has "
                                   f"{n} images; pass the dataset the source was made for")


def _tar_tasks(policy_json: str, src: MldrSource, num_classes: int, written: np.ndarray, n: int):
    """Conversion tasks of a tar source's image files not yet written, in archive order, CHUNK_IMAGES each."""
    indices: list[int] = []
    blobs: list[bytes] = []
    seen = written.copy()
    for i, data in src.stream():
        _check_tar_indices(src, [i], n)
        if seen[i]:
            continue
        seen[i] = True
        indices.append(i)
        blobs.append(data)
        if len(indices) == CHUNK_IMAGES:
            yield policy_json, [src], num_classes, indices, blobs
            indices, blobs = [], []
    if indices:
        yield policy_json, [src], num_classes, indices, blobs


def _end_with_parent(parent: int, interval: float = 0.5) -> None:
    """Initializer of an import worker: a daemon thread ends the worker once its importer (``parent``) is gone
    (killed, say); rows already written are safe and ``--resume`` continues."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="reinforced_data-import-parent-watch", daemon=True).start()


def _bounded_map(pool: ProcessPoolExecutor, fn: Any, tasks: Any, depth: int):
    """``pool.map`` in order with at most ``depth`` tasks in flight (memory stays bounded)."""
    from collections import deque

    pending: deque = deque()
    for t in tasks:
        pending.append(pool.submit(fn, t))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
