"""Small apple/ml-dr-style sources built in the tests (the structure ml-dr writes, written here with torch.save),
and an ml-dr-style reapply of a sample from torchvision's own ops (what ml-dr's generation ran on each view)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

from reinforced_data.policy import IMAGENET_MEAN, IMAGENET_STD

SIZE = 32
NUM_CLASSES = 3
TOPK = 2
RA_NAMES = list(T.RandAugment()._augmentation_space(31, (SIZE, SIZE)).keys())

CONFIGS = {  # the four published ImageNet+ configurations, at a 32 px view
    "rrc": ("uint8", "random_resized_crop", "random_horizontal_flip", "to_tensor", "normalize"),
    "ra_re": ("uint8", "random_resized_crop", "random_horizontal_flip", "rand_augment", "to_tensor", "normalize",
              "random_erase"),
    "mix": ("uint8", "random_resized_crop", "random_horizontal_flip", "to_tensor", "normalize", "mixup", "cutmix"),
    "mix_ra_re": ("uint8", "random_resized_crop", "random_horizontal_flip", "rand_augment", "to_tensor", "normalize",
                  "random_erase", "mixup", "cutmix"),
}
ORDER = ("uint8", "random_resized_crop", "random_horizontal_flip", "rand_augment", "to_tensor", "random_erase",
         "normalize", "mixup", "cutmix")
ARGS = {"uint8": {"enable": True}, "random_resized_crop": {"enable": True, "size": SIZE},
        "random_horizontal_flip": {"enable": True, "p": 0.5}, "rand_augment": {"enable": True, "p": 1.0},
        "to_tensor": {"enable": True}, "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "random_erase": {"enable": True, "p": 0.5}, "mixup": {"enable": True, "alpha": 1.0, "div_by": 2.0, "p": 0.5},
        "cutmix": {"enable": True, "alpha": 1.0, "p": 0.5}}


def make_images(root: str, per_class: int = 3, seed: int = 0) -> list[tuple[str, int]]:
    """An ImageFolder of NUM_CLASSES classes: textured PNGs of several sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(NUM_CLASSES):
        os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(40, 72)), int(rng.integers(40, 72))
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([(xx * (3 + c) + yy * 2) % 256, (yy * 5 + i * 40) % 256, (xx * yy // 7) % 256], -1)
            img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
            path = os.path.join(root, f"class{c}", f"img{i}.png")
            Image.fromarray(img).save(path)
            out.append((path, c))
    return out


def config(kind: str, num_samples: int, topk: int = TOPK, size: int = SIZE, num_classes: int = NUM_CLASSES) -> dict:
    aug = {t: dict(ARGS[t]) for t in ORDER if t in CONFIGS[kind]}
    aug["random_resized_crop"]["size"] = size
    return {"dataset": "test", "num_classes": num_classes, "teacher": {"name": "test-teacher"},
            "reinforce": {"num_samples": num_samples, "topk": topk, "compress": True, "image_augmentation": aug}}


def _per_image(rs: np.random.RandomState, pil: Image.Image, names: tuple, size: int = SIZE) -> dict:
    """One image's random parameters as ml-dr's transforms draw them (torchvision's get_params)."""
    out = {}
    torch.manual_seed(int(rs.randint(1 << 30)))
    out["random_resized_crop"] = tuple(int(v) for v in T.RandomResizedCrop.get_params(pil, (0.08, 1.0),
                                                                                       (3 / 4, 4 / 3)))
    out["random_horizontal_flip"] = bool(rs.rand() < 0.5)
    if "rand_augment" in names:
        space = T.RandAugment()._augmentation_space(31, (size, size))
        ops = []
        for _ in range(2):
            op = int(rs.randint(len(RA_NAMES)))
            mags, signed = space[RA_NAMES[op]]
            mag = float(mags[9].item()) if mags.ndim > 0 else 0.0
            if signed and rs.rand() < 0.5:
                mag *= -1.0
            ops.append((op, mag))
        out["rand_augment"] = ops
    if "random_erase" in names:
        if rs.rand() < 0.5:
            i, j, h, w, _ = T.RandomErasing.get_params(torch.zeros(3, size, size), scale=(0.02, 0.33),
                                                      ratio=(0.3, 3.3), value=[0])
            out["random_erase"] = (int(i), int(j), int(h), int(w))
        else:
            out["random_erase"] = None
    return out


def make_source(root: str, kind: str, images: list[tuple[str, int]], num_samples: int = 4, seed: int = 0,
                compress: bool = True, size: int = SIZE, num_classes: int = NUM_CLASSES, topk: int = TOPK) -> str:
    """An ml-dr source folder for ``images`` (ImageFolder order) under ``kind``'s config."""
    os.makedirs(root, exist_ok=True)
    names = CONFIGS[kind]
    torch.save(config(kind, num_samples, topk, size, num_classes), os.path.join(root, "config.pth.tar"), pickle_protocol=4)
    pils = [Image.open(p).convert("RGB") for p, _ in images]
    per = [t for t in ORDER if t in names and t not in ("uint8", "to_tensor", "normalize", "mixup", "cutmix")]
    for index, (pil, (_, label)) in enumerate(zip(pils, images)):
        rs = np.random.RandomState(seed * 1000 + index)
        samples = []
        for _ in range(num_samples):
            own = _per_image(rs, pil, names, size)
            mixup = cutmix = None
            if "mixup" in names:
                if rs.rand() < 0.5:
                    mixup = np.random.RandomState(rs.randint(1 << 30)).beta(1.0, 1.0) / 2.0  # a numpy float64
                if rs.rand() < 0.5:
                    lam = np.random.RandomState(rs.randint(1 << 30)).beta(1.0, 1.0)
                    ch, cw = int(size * np.sqrt(1 - lam)), int(size * np.sqrt(1 - lam))
                    cx, cy = rs.randint(size), rs.randint(size)
                    box = (np.clip(cx - ch // 2, 0, size), np.clip(cy - cw // 2, 0, size),
                           np.clip(cx + ch // 2, 0, size), np.clip(cy + cw // 2, 0, size))
                    cutmix = [lam] + list(box)  # numpy scalars, as ml-dr's compress_params leaves them
            mixed = mixup is not None or cutmix is not None
            if mixed:
                id2 = int(rs.randint(len(images)))
                other = _per_image(rs, pils[id2], names, size)
                params = [id2] + [[own[t], other[t]] for t in per] + [mixup, cutmix]
            elif "mixup" in names:
                params = [None] + [own[t] for t in per] + [None, None]
            else:
                params = [own[t] for t in per]
            if not compress:
                params = _uncompressed(params, per, names)
            p = np.random.default_rng(seed * 7919 + index * 31 + len(samples)).dirichlet(np.ones(num_classes)) * 0.1
            p[label] += 0.6  # the teacher's top 2: the label, then the next class
            p[(label + 1) % num_classes] += 0.3
            ids = np.argpartition(p, -topk)[-topk:]
            samples.append({"params": params, "prob": (p[ids].tolist(), ids.tolist())})
        torch.save((index, samples), os.path.join(root, f"{index}.pth.tar"), pickle_protocol=4)
    return root


def _uncompressed(params: list, per: list, names: tuple) -> dict:
    out: dict = {}
    if "mixup" in names:
        id2, params = params[0], params[1:]
        if id2 is not None:
            out["id2"] = id2
        for t, v in zip(per, params):
            out[t] = tuple(v) if id2 is not None else (v,)
        out["mixup"], out["cutmix"] = params[-2], params[-1]
    else:
        for t, v in zip(per, params):
            out[t] = (v,)
    return out


def _split(params: list, names: tuple) -> tuple:
    per = [t for t in ORDER if t in names and t not in ("uint8", "to_tensor", "normalize", "mixup", "cutmix")]
    if "mixup" not in names:
        return None, dict(zip(per, params)), {}, None, None
    id2, rest = params[0], params[1:]
    if id2 is None:
        return None, dict(zip(per, rest)), {}, rest[-2], rest[-1]
    return id2, {t: v[0] for t, v in zip(per, rest)}, {t: v[1] for t, v in zip(per, rest)}, rest[-2], rest[-1]


def _view(pil: Image.Image, p: dict, size: int = SIZE, training: bool = False) -> torch.Tensor:
    """ml-dr's generation path for one image: PIL crop, ToUint8, flip, tensor RandAugment, ToTensor, erase,
    normalise (float32). ``training=True``: the path of ml-dr's training loader (dr/data.py reapplies the
    transforms in order on the PIL image: crop, flip and RandAugment on PIL, then ToTensor, erase, normalise)."""
    top, left, h, w = p["random_resized_crop"]
    x = F.resized_crop(pil, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    if not training:
        x = (F.to_tensor(x) * 255).to(torch.uint8)
    if p.get("random_horizontal_flip"):
        x = F.hflip(x)
    for op, mag in p.get("rand_augment") or []:
        x = _apply_op(x, RA_NAMES[op], mag, interpolation=InterpolationMode.NEAREST, fill=None)
    x = F.to_tensor(x) if training else (x / 255.0).to(torch.float32)
    e = p.get("random_erase")
    if e is not None:
        x[:, e[0]:e[0] + e[2], e[1]:e[1] + e[3]] = 0
    return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def mldr_reapply(pils: list, index: int, params: list, kind: str, size: int = SIZE,
                 training: bool = False) -> torch.Tensor:
    """The view ml-dr's generation labelled for one sample (float32, normalised); ``training=True``: the
    view ml-dr's own training loader makes of it (see :func:`_view`)."""
    id2, own, other, mixup, cutmix = _split(params, CONFIGS[kind])
    x = _view(pils[index], own, size, training)
    if id2 is None:
        return x
    x2 = _view(pils[id2], other, size, training)
    if mixup is not None:
        x = mixup * x + (1 - mixup) * x2
    if cutmix is not None:
        _, x1, y1, xe, ye = cutmix
        x = x.clone()
        x[:, x1:xe, y1:ye] = x2[:, x1:xe, y1:ye]
    return x
