"""The measuring library of the fidelity report: how close the replay is to torchvision and timm
(PIL) applying the same parameters, on photos.

For every op the package replays, every magnitude bin (both signs) and every interpolation,
this applies the op twice to the same photo crops: once through the reference kernels
(``reinforced_data._reference.augment`` on the int32 row ``_args`` builds, which the C++ and
CUDA kernels equal bit for bit) and once through the library whose semantics it follows:

* torchvision: ``torchvision.transforms.v2`` RandAugment's own op application (uint8
  tensors; NEAREST / BILINEAR / BICUBIC for the geometric ops), ``F.resized_crop(...,
  antialias=True)`` for the resized crop;
* timm: ``timm.data.auto_augment``'s PIL functions (bilinear / bicubic, ``fillcolor``) and
  PIL's ``crop().resize()`` as ``RandomResizedCropAndInterpolation`` does.

It gathers, per case, the share of uint8 values that differ, the largest difference and the
worst single crop, and, for whole sampled views of a policy, the distribution of per-view
differences. ``tests/test_fidelity.py`` imports it and asserts bounds; ``benchmarks/fidelity.py``
(the report) measures the full tables and writes ``benchmarks/results/fidelity.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps

import _common  # noqa: F401  (this checkout's reinforced_data on sys.path)

from reinforced_data import _args as A  # noqa: E402
from reinforced_data import _reference  # noqa: E402
from reinforced_data.policy import RA_OPS, SIGNED_OPS, UNPARAMETERISED_OPS  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import timm.data.auto_augment as taa  # noqa: E402
    from torchvision.transforms import InterpolationMode  # noqa: E402
    from torchvision.transforms import v2 as tv2  # noqa: E402
    from torchvision.transforms.v2 import functional as TF  # noqa: E402

Q16 = A.Q16
NUM_BINS = 31  # torchvision's RandAugment default
TIMM_LEVELS = tuple(range(0, 11))  # timm's magnitude scale 0..10 (_LEVEL_DENOM)
TIMM_FILL = (124, 116, 104)  # timm's img_mean for ImageNet's mean (what create_transform passes)
INTERPS = {"nearest": 0, "bilinear": 1, "bicubic": 2}
TV_INTERP = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
             "bicubic": InterpolationMode.BICUBIC}
PIL_INTERP = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
              "bicubic": Image.Resampling.BICUBIC}
RESIZE_FILTERS = {"bilinear": 0, "bicubic": 1}


# ------------------------------------------------------------------ photos
@dataclass(frozen=True)
class Crop:
    """One photo crop: uint8 [3, H, W] (contiguous, or the channels-last view a loader's decode gives)
    and the same pixels as a PIL image."""

    name: str
    tensor: torch.Tensor

    @property
    def pil(self) -> Image.Image:
        return Image.fromarray(self.tensor.permute(1, 2, 0).contiguous().numpy())


#: The photos tests/test_fidelity.py's bounds were first tuned on: scikit-image's four standard RGB photos.
TUNING = ("astronaut", "chelsea", "coffee", "rocket")

#: Photos of other kinds, kept apart from :data:`TUNING` (no bound was tuned on them): what each is.
#: Every other one (in sorted order) is read as a loader reads a JPEG photo: encoded by PIL at
#: quality 90, decoded, and cut into channels-last views (its name gets ``@q90``).
HELD_OUT = {
    "hubble_deep_field": "colour photo, dark (space)",
    "immunohistochemistry": "colour photo, microscopy",
    "retina": "colour photo, dark surround",
    "motorcycle_left": "colour photo, indoor (stereo frame)",
    "camera": "grey photo (R = G = B, as convert('RGB') gives)",
    "moon": "grey photo, low contrast",
    "coins": "grey photo",
    "brick": "grey texture",
    "text": "text on a plain background, high contrast (grey)",
    "page": "scanned page of text (grey)",
    "colorwheel": "synthetic: saturated hues",
    "gradient_noise": "synthetic: smooth colour gradients with sensor-like noise",
    "low_light": "synthetic: a photo (motorcycle_right) at 15 % of its light, with noise",
}


def skimage_photos() -> dict[str, np.ndarray]:
    """The tuning photos (:data:`TUNING`): scikit-image's four standard RGB photos (in its wheel, no download)."""
    import skimage.data as data

    return {n: np.ascontiguousarray(getattr(data, n)()[:, :, :3]) for n in TUNING}


def _held_out_source(name: str) -> np.ndarray:
    import skimage.data as data

    if name == "motorcycle_left":
        return data.stereo_motorcycle()[0]
    if name == "gradient_noise":
        rng = np.random.default_rng(17)
        y, x = np.mgrid[0:480, 0:640].astype(np.float64)
        r = np.hypot(y - 300, x - 200)
        a = np.stack([40 + 180 * x / 640, 230 - 170 * y / 480, 128 + 100 * np.cos(r / 90)], axis=-1)
        return np.clip(np.round(a + rng.normal(0, 4, a.shape)), 0, 255).astype(np.uint8)
    if name == "low_light":
        rng = np.random.default_rng(18)
        a = data.stereo_motorcycle()[1].astype(np.float64) * 0.15
        return np.clip(np.round(a + rng.normal(0, 1.5, a.shape)), 0, 255).astype(np.uint8)
    a = np.asarray(getattr(data, name)())
    if a.ndim == 2:  # grey: three equal channels, as a loader's convert('RGB') gives
        a = np.repeat(a[:, :, None], 3, axis=2)
    return a[:, :, :3]


def held_out_photos(quality: int = 90) -> dict[str, np.ndarray]:
    """The :data:`HELD_OUT` photos as uint8 H x W x 3 arrays; every other one JPEG-encoded at ``quality``
    and decoded by PIL (named ``<name>@q<quality>``; :func:`photo_crops` cuts those into channels-last views)."""
    import io

    out = {}
    for i, name in enumerate(sorted(HELD_OUT)):
        a = np.ascontiguousarray(_held_out_source(name), dtype=np.uint8)
        if i % 2:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=quality)
            buf.seek(0)
            with Image.open(buf) as im:
                a = np.asarray(im.convert("RGB")).copy()
            name = f"{name}@q{quality}"
        out[name] = a
    return out


def photo_crops(sources: dict[str, np.ndarray], sizes: Iterable[tuple[int, int]], per_source: int,
                seed: int = 0, scaled: bool = False) -> list[Crop]:
    """``per_source`` random crops of every size from every source photo (seeded).

    With ``scaled``, every other crop is cut larger (1 to 2.5 times) and brought to its size
    with PIL's antialiased bicubic, as a RandomResizedCrop view is: smoother than a crop at
    the photo's own scale. A crop of a JPEG-decoded source (a name with ``@q``) is the
    channels-last view a PIL-based loader hands over (strides (1, 3W, 3)); the others are contiguous.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name in sorted(sources):
        src = sources[name]
        sh, sw = src.shape[:2]
        for h, w in sizes:
            for k in range(per_source):
                f = float(rng.uniform(1.0, 2.5)) if scaled and k % 2 else 1.0
                ch, cw = min(sh, int(round(h * f))), min(sw, int(round(w * f)))
                t, l = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
                a = src[t:t + ch, l:l + cw]
                if (ch, cw) != (h, w):
                    a = np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC))
                t8 = torch.from_numpy(np.array(a)).permute(2, 0, 1)
                out.append(Crop(f"{name}[{t}:{t + ch},{l}:{l + cw}]->{h}x{w}", t8 if "@q" in name else t8.contiguous()))
    return out


# ------------------------------------------------------------------ kernel rows
def _op_id(name: str) -> int:
    return RA_OPS.index(name)


def row(h: int, w: int, ops=(), fill=(0, 0, 0), crop=None, flip=0, resize_filter=0) -> torch.Tensor:
    """One augment row (reinforced_data._args layout): ``ops`` holds (op name, 6 params, interp)."""
    r = np.zeros(A.NUM_ARGS, dtype=np.int64)
    r[A.CROP_TOP:A.CROP_W + 1] = crop if crop is not None else (0, 0, h, w)
    r[A.FLIP] = flip
    r[A.FILL:A.FILL + 3] = fill
    r[A.NUM_OPS] = len(ops)
    for s, (name, p, interp) in enumerate(ops):
        base = A.OPS + s * A.OP_STRIDE
        r[base] = _op_id(name)
        r[base + 1:base + 7] = p
        r[base + A.OP_INTERP] = interp
    if resize_filter:
        r[A.RESIZE_FILTER] = resize_filter
    return torch.from_numpy(r.astype(np.int32)).reshape(1, -1)


def ours(img: torch.Tensor, r: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The reference replay of one row on one uint8 [3, H, W] image."""
    oh, ow = (int(v) for v in (out_hw if out_hw is not None else img.shape[1:]))
    v = [int(x) for x in r[0].tolist()]
    h, w = int(img.shape[1]), int(img.shape[2])
    if v[A.CROP_TOP:A.CROP_W + 1] != [0, 0, h, w] or (oh, ow) != (h, w) or v[A.FLIP] or v[A.ERASE_H]:
        return _reference.augment([img], r, oh, ow)[0]
    # An identity crop resizes to itself exactly (one tap of weight 2^14 per output), so the
    # ops of the row are applied to the image directly: the same bytes, without the resize.
    _reference.check_augment_rows([(h, w)], r, oh, ow)
    x = img.long()
    fill = torch.tensor(v[A.FILL:A.FILL + 3], dtype=torch.int64)
    for s in range(v[A.NUM_OPS]):
        base = A.OPS + s * A.OP_STRIDE
        x = _reference.apply_op(x, v[base], v[base + 1:base + A.OP_STRIDE], fill)
    return x.to(torch.uint8)


def affine_row(m: list[float], h: int, w: int) -> list[int]:
    """The Q16 kernel parameters of PIL's affine ``m`` = (a, b, c, d, e, f).

    PIL maps the output point (x + 1/2, y + 1/2) to the input point (a(x+1/2) + b(y+1/2) + c, ...)
    in pixel-corner coordinates; the kernel's Nx / 2^17 is the input position in pixel-index
    units (pixel k centred at k), with X2 = 2x + 1 - W.
    """
    a, b, c, d, e, f = m
    q = lambda v: int(round(v * Q16))  # noqa: E731
    t0 = int(round(((a * w + b * h) / 2 + c - 0.5) * 2 * Q16))
    t1 = int(round(((d * w + e * h) / 2 + f - 0.5) * 2 * Q16))
    return [q(a), q(b), t0, q(d), q(e), t1]


def pil_rotate_matrix(degrees: float, h: int, w: int) -> list[float]:
    """The inverse affine PIL's ``Image.rotate(degrees)`` uses (about the centre, no expand)."""
    angle = -math.radians(degrees % 360.0)
    m = [round(math.cos(angle), 15), round(math.sin(angle), 15), 0.0,
         round(-math.sin(angle), 15), round(math.cos(angle), 15), 0.0]
    cx, cy = w / 2.0, h / 2.0
    m[2] = m[0] * -cx + m[1] * -cy + cx
    m[5] = m[3] * -cx + m[4] * -cy + cy
    return m


# ------------------------------------------------------------------ statistics
@dataclass
class Stat:
    """Differences of one case (an op, a bin, an interpolation, a library) over many crops."""

    values: int = 0
    differ: int = 0
    differ2: int = 0  # values differing by 2 or more
    max_abs: int = 0
    worst_frac: float = 0.0
    worst_name: str = ""
    crops: int = 0
    # where the two differ and an exact (float64) evaluation of the library's formula exists:
    # how many of the differing values each side gets right
    ours_exact: int = 0
    lib_exact: int = 0

    def add(self, a: torch.Tensor, b: torch.Tensor, name: str, exact: torch.Tensor | None = None) -> None:
        d = (a.to(torch.int16) - b.to(torch.int16)).abs()
        n = d.numel()
        k = int((d > 0).sum())
        if exact is not None and k:
            m = d > 0
            self.ours_exact += int((a[m] == exact[m]).sum())
            self.lib_exact += int((b[m] == exact[m]).sum())
        self.values += n
        self.differ += k
        self.differ2 += int((d > 1).sum())
        self.crops += 1
        if k:
            self.max_abs = max(self.max_abs, int(d.max()))
        if k / n > self.worst_frac:
            self.worst_frac, self.worst_name = k / n, name

    def merge(self, o: "Stat") -> None:
        self.values += o.values
        self.differ += o.differ
        self.differ2 += o.differ2
        self.crops += o.crops
        self.ours_exact += o.ours_exact
        self.lib_exact += o.lib_exact
        self.max_abs = max(self.max_abs, o.max_abs)
        if o.worst_frac > self.worst_frac:
            self.worst_frac, self.worst_name = o.worst_frac, o.worst_name

    @property
    def frac(self) -> float:
        return self.differ / self.values if self.values else 0.0


def merge_stats(parts: Iterable[dict]) -> dict:
    """Stats measured on several photo sets, merged per key (new Stat objects; the parts are unchanged)."""
    out: dict = {}
    for part in parts:
        for key, st in part.items():
            out.setdefault(key, Stat()).merge(st)
    return out


# ------------------------------------------------------------------ torchvision cases
def tv_magnitude(op: str, signed_bin: int, h: int, w: int) -> float:
    mags = A._magnitudes(op, NUM_BINS, h, w)
    if mags is None:
        return 0.0
    return float(mags[abs(signed_bin)]) * (-1.0 if signed_bin < 0 else 1.0)


_TV_RA = tv2.RandAugment(num_magnitude_bins=NUM_BINS)


def tv_op(img: torch.Tensor, op: str, signed_bin: int, interp: str = "nearest", fill=(0, 0, 0)) -> torch.Tensor:
    """torchvision's own RandAugment op at the magnitude of ``signed_bin``."""
    if op == "Invert":
        return TF.invert(img)
    h, w = img.shape[1:]
    return _TV_RA._apply_image_or_video_transform(
        img, op, tv_magnitude(op, signed_bin, h, w), interpolation=TV_INTERP[interp],
        fill={"others": list(fill)} if fill is not None else {})


def ours_tv_op(img: torch.Tensor, op: str, signed_bin: int, interp: str = "nearest", fill=(0, 0, 0)) -> torch.Tensor:
    """Our replay of the same op: the row ``_args.op_params`` builds for torchvision's bin. ``fill=None``
    (torchvision's default: its zero padding, no fill mixed in) is fill 0 here."""
    h, w = img.shape[1:]
    p = [0] * 6 if op == "Invert" else A.op_params(op, signed_bin, NUM_BINS, h, w)
    return ours(img, row(h, w, [(op, p, INTERPS[interp] if op in A.GEOMETRIC else 0)],
                         fill=(0, 0, 0) if fill is None else fill))


def exact_tv_op(img: torch.Tensor, op: str, signed_bin: int) -> torch.Tensor | None:
    """torchvision's formula for ``op`` evaluated exactly (float64 on integers; the nominal factor
    ``1 + magnitude`` and grey coefficients), for the ops whose result is a floor of a blend:
    what both torchvision (float32) and the replay (Q16) approximate. None for other ops."""
    if op not in ("Brightness", "Color", "Contrast", "Sharpness", "AutoContrast"):
        return None
    x = img.double()
    if op == "AutoContrast":
        lo = x.amin(dim=(1, 2), keepdim=True)
        hi = x.amax(dim=(1, 2), keepdim=True)
        return torch.where(hi > lo, torch.floor((x - lo) * 255 / (hi - lo).clamp_min(1)), x).to(torch.uint8)
    f = 1.0 + tv_magnitude(op, signed_bin, *img.shape[1:])
    if op == "Brightness":
        return torch.floor(x * f).clamp(0, 255).to(torch.uint8)
    if op in ("Color", "Contrast"):
        # integer grey: floor(2989 r + 5870 g + 1140 b) / 10000, exact
        g = torch.div(2989 * img[0].long() + 5870 * img[1].long() + 1140 * img[2].long(), 10000,
                      rounding_mode="floor").double()
        o = g[None] if op == "Color" else g.mean().expand(1, 1, 1)
        return torch.floor(x * f + o * (1 - f)).clamp(0, 255).to(torch.uint8)
    c, h, w = x.shape
    out = x.clone()
    if h > 2 and w > 2:
        s = sum(x[:, dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3)) + 4 * x[:, 1:-1, 1:-1]
        blur = torch.floor(s / 13 + 0.5)
        inner = x[:, 1:-1, 1:-1]
        out[:, 1:-1, 1:-1] = torch.floor(inner * f + blur * (1 - f)).clamp(0, 255)
    return out.to(torch.uint8)


# not torchvision RandAugment ops: SolarizeAdd (timm's), Hue (ColorJitter, measure_jitter_ops), Grayscale and
# GaussianBlur (RandomGrayscale / GaussianBlur / timm's 3a: tests/test_three_augment.py measures them)
TV_OPS = [op for op in RA_OPS if op not in ("SolarizeAdd", "Hue", "Grayscale", "GaussianBlur")]


def tv_bins(op: str, bins: Iterable[int] | None = None) -> list[int]:
    """The signed bins of ``op``: all of 0..30 (and negatives for signed ops) unless ``bins`` given."""
    if op in UNPARAMETERISED_OPS or op == "Invert":
        return [0]
    bins = list(range(NUM_BINS)) if bins is None else list(bins)
    out = []
    for b in bins:
        out.append(b)
        if op in SIGNED_OPS and b:
            out.append(-b)
    return out


# ------------------------------------------------------------------ timm (PIL) cases
def timm_cases(op: str, levels: Iterable[int] = TIMM_LEVELS) -> list[tuple[object, object]]:
    """(label, argument) pairs of timm's ``op`` over its magnitude scale 0..10, both signs.

    The argument is what timm's level-to-arg functions give at that level (its
    ``_randomly_negate`` supplying the sign); the enhance ops use the ``...Increasing``
    form 1 +- 0.9 m (the plain form, 0.1 + 1.8 m, spans the same factors). Posterize covers
    every bit count (both of timm's tables), Solarize the thresholds of both its tables.
    """
    if op in ("Invert", "AutoContrast", "Equalize"):
        return [(0, None)]
    if op == "Posterize":
        return [(bits, bits) for bits in range(1, 9)]  # Pillow refuses 0 bits (timm asks for 0 at m=10 of inc)
    if op == "Solarize":
        th = sorted({int(lv / taa._LEVEL_DENOM * 256) for lv in levels}
                    | {256 - int(lv / taa._LEVEL_DENOM * 256) for lv in levels})
        return [(t, t) for t in th]
    if op == "SolarizeAdd":
        return [(lv, int(lv / taa._LEVEL_DENOM * 110)) for lv in levels]
    scale = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 0.45, "TranslateY": 0.45, "Rotate": 30.0,
             "Brightness": 0.9, "Color": 0.9, "Contrast": 0.9, "Sharpness": 0.9}[op]
    base = 1.0 if op in ("Brightness", "Color", "Contrast", "Sharpness") else 0.0
    out = []
    for lv in levels:
        for sign in ((1, -1) if lv else (1,)):
            out.append((sign * lv, base + sign * lv / taa._LEVEL_DENOM * scale))
    return out


TIMM_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
TIMM_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
            "Sharpness", "Posterize", "Solarize", "SolarizeAdd", "Invert", "AutoContrast", "Equalize")


def timm_geometric_matrix(op: str, arg: float, h: int, w: int) -> list[float]:
    if op == "ShearX":
        return [1, arg, 0, 0, 1, 0]
    if op == "ShearY":
        return [1, 0, 0, arg, 1, 0]
    if op == "TranslateX":
        return [1, 0, arg * w, 0, 1, 0]
    if op == "TranslateY":
        return [1, 0, 0, 0, 1, arg * h]
    if op == "Rotate":
        return pil_rotate_matrix(arg, h, w)
    raise ValueError(op)


def timm_op(pil: Image.Image, op: str, arg, interp: str = "bilinear", fill=TIMM_FILL) -> Image.Image:
    """timm's own PIL op (timm.data.auto_augment) with argument ``arg``."""
    kw = {"resample": PIL_INTERP[interp], "fillcolor": tuple(fill)}
    fn = {
        "ShearX": lambda: taa.shear_x(pil, arg, **kw), "ShearY": lambda: taa.shear_y(pil, arg, **kw),
        "TranslateX": lambda: taa.translate_x_rel(pil, arg, **kw),
        "TranslateY": lambda: taa.translate_y_rel(pil, arg, **kw),
        "Rotate": lambda: taa.rotate(pil, arg, **kw),
        "Brightness": lambda: taa.brightness(pil, arg), "Color": lambda: taa.color(pil, arg),
        "Contrast": lambda: taa.contrast(pil, arg), "Sharpness": lambda: taa.sharpness(pil, arg),
        "Posterize": lambda: taa.posterize(pil, arg), "Solarize": lambda: taa.solarize(pil, arg),
        "SolarizeAdd": lambda: taa.solarize_add(pil, arg), "Invert": lambda: taa.invert(pil),
        "AutoContrast": lambda: taa.auto_contrast(pil), "Equalize": lambda: taa.equalize(pil),
    }[op]
    return fn()


def timm_row_params(op: str, arg, h: int, w: int) -> list[int]:
    """Our kernel parameters for timm's op argument (what a timm policy's row holds)."""
    p = [0] * 6
    if op in TIMM_GEOMETRIC:
        return affine_row(timm_geometric_matrix(op, arg, h, w), h, w)
    if op == "Brightness":
        p[0] = A._brightness_factor(arg)
    elif op in ("Color", "Contrast", "Sharpness"):
        p[0] = int(round(arg * Q16))
    elif op == "Posterize":
        p[0] = (0xFF << (8 - int(arg))) & 0xFF
    elif op == "Solarize":
        p[0] = int(arg)  # PIL: x < thresh keeps x, else 255 - x
    elif op == "SolarizeAdd":
        p[0], p[1] = 128, int(arg)
    return p


def ours_timm_op(img: torch.Tensor, op: str, arg, interp: str = "bilinear", fill=TIMM_FILL) -> torch.Tensor:
    h, w = img.shape[1:]
    return ours(img, row(h, w, [(op, timm_row_params(op, arg, h, w), INTERPS[interp] if op in TIMM_GEOMETRIC else 0)],
                         fill=fill))


def to_tensor(pil: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------ resized crop
def random_boxes(h: int, w: int, n: int, rng: np.random.Generator, scale=(0.08, 1.0)) -> list[tuple[int, int, int, int]]:
    """``n`` RandomResizedCrop-like boxes (area share in ``scale``, ratio 3/4..4/3) in an h x w image."""
    out = []
    while len(out) < n:
        area = h * w * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        bw, bh = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
        if 0 < bw <= w and 0 < bh <= h:
            out.append((int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw))
    return out


def tv_resized_crop(img, box, out_hw, filt: str) -> torch.Tensor:
    t, l, h, w = box
    return TF.resized_crop(img, t, l, h, w, list(out_hw), interpolation=TV_INTERP[filt], antialias=True)


def pil_resized_crop(pil: Image.Image, box, out_hw, filt: str) -> torch.Tensor:
    """timm's RandomResizedCropAndInterpolation on a PIL image: crop, then PIL resize."""
    t, l, h, w = box
    return to_tensor(pil.crop((l, t, l + w, t + h)).resize((out_hw[1], out_hw[0]), PIL_INTERP[filt]))


def ours_resized_crop(img, box, out_hw, filt: str) -> torch.Tensor:
    h, w = img.shape[1:]
    return ours(img, row(h, w, crop=box, resize_filter=RESIZE_FILTERS[filt]), out_hw)


# ------------------------------------------------------------------ measuring
Key = tuple  # (library, op, interp, case label)


def measure_tv_ops(crops: list[Crop], ops=None, bins=None, interps=("nearest",), fill=(0, 0, 0),
                   stats: dict | None = None, exact: bool = False) -> dict[Key, Stat]:
    """torchvision vs ours per (op, interp, signed bin)."""
    stats = {} if stats is None else stats
    for op in ops or TV_OPS:
        for interp in (interps if op in A.GEOMETRIC else ("-",)):
            it = interp if interp != "-" else "nearest"
            for b in tv_bins(op, bins):
                st = stats.setdefault(("torchvision", op, interp, b), Stat())
                for c in crops:
                    st.add(ours_tv_op(c.tensor, op, b, it, fill), tv_op(c.tensor, op, b, it, fill), c.name,
                           exact_tv_op(c.tensor, op, b) if exact else None)
    return stats


def measure_timm_ops(crops: list[Crop], ops=None, levels=TIMM_LEVELS, interps=("bilinear", "bicubic"),
                     fill=TIMM_FILL, stats: dict | None = None) -> dict[Key, Stat]:
    """timm (PIL) vs ours per (op, interp, signed level)."""
    stats = {} if stats is None else stats
    pils = [c.pil for c in crops]
    for op in ops or TIMM_OPS:
        for interp in (interps if op in TIMM_GEOMETRIC else ("-",)):
            for label, arg in timm_cases(op, levels):
                st = stats.setdefault(("timm", op, interp, label), Stat())
                for c, pil in zip(crops, pils):
                    theirs = to_tensor(timm_op(pil, op, arg, interp if interp != "-" else "bilinear", fill))
                    st.add(ours_timm_op(c.tensor, op, arg, interp if interp != "-" else "bilinear", fill),
                           theirs, c.name)
    return stats


def resize_cases(crops: list[Crop], n_boxes: int, out_sizes, seed: int = 0):
    """(crop, box, out size) triples: RRC-like boxes, each resized to every size in ``out_sizes``."""
    rng = np.random.default_rng(seed)
    cases = []
    for c in crops:
        h, w = c.tensor.shape[1:]
        for box in random_boxes(h, w, n_boxes, rng):
            for o in out_sizes:
                cases.append((c, box, o))
    return cases


def measure_resize(cases, filters=("bilinear",), stats: dict | None = None) -> dict[Key, Stat]:
    """Resized crop vs torchvision (antialias=True) and PIL, split into down- and upsampling."""
    stats = {} if stats is None else stats
    for filt in filters:
        for c, box, o in cases:
            down = (box[2] >= o[0], box[3] >= o[1])
            kind = "down" if all(down) else "up" if not any(down) else "mixed"
            a = ours_resized_crop(c.tensor, box, o, filt)
            name = f"{c.name} box {box} -> {o}"
            stats.setdefault(("torchvision", "resized crop", filt, kind), Stat()).add(
                a, tv_resized_crop(c.tensor, box, o, filt), name)
            stats.setdefault(("timm", "resized crop", filt, kind), Stat()).add(
                a, pil_resized_crop(c.pil, box, o, filt), name)
    return stats


# ------------------------------------------------------------------ whole views
@dataclass
class ChainStat:
    """Per-view differences of whole replayed views against the library."""

    max_abs: list = field(default_factory=list)
    frac: list = field(default_factory=list)
    worst: tuple = (0, "")

    def add(self, a: torch.Tensor, b: torch.Tensor, name: str) -> None:
        d = (a.to(torch.int16) - b.to(torch.int16)).abs()
        m = int(d.max())
        self.max_abs.append(m)
        self.frac.append(float((d > 0).double().mean()))
        if m > self.worst[0]:
            self.worst = (m, name)

    def share(self, at_least: int) -> float:
        return float(np.mean(np.asarray(self.max_abs) >= at_least)) if self.max_abs else 0.0

    def merge(self, o: "ChainStat") -> "ChainStat":
        """The views of both (a new ChainStat)."""
        return ChainStat(self.max_abs + o.max_abs, self.frac + o.frac, max(self.worst, o.worst, key=lambda w: w[0]))


def tv_chain_view(img: torch.Tensor, p, policy, interp: str = "nearest") -> torch.Tensor:
    """torchvision applying one stored record of a RandAugment policy: resized crop, flip, ops, erase."""
    oh, ow = policy.output_size
    t, l, h, w = (int(v) for v in p["crop"])
    x = TF.resized_crop(img, t, l, h, w, [oh, ow], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if int(p["flip"]):
        x = TF.horizontal_flip(x)
    if policy.ra_num_ops:
        for op_id, b in zip(np.atleast_1d(p["ra_op"]), np.atleast_1d(p["ra_mag"])):
            x = tv_op(x, RA_OPS[int(op_id)], int(b), interp, tuple(policy.fill))
    return x


def _chain(policy, images: list[Crop], views_per_image: int, seed: int, theirs_view, describe) -> ChainStat:
    """Views of ``policy`` replayed by us (reference) beside ``theirs_view(image, record)``, the
    library applying the same record. The erase box is compared outside only (inside, both sides
    hold our noise by construction: torchvision draws its noise from another distribution)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from reinforced_data._replay import replay
    g = np.random.default_rng(seed)
    st = ChainStat()
    for c in images:
        h, w = c.tensor.shape[1:]
        params = policy.sample(g, views_per_image, h, w)
        out = replay([c.tensor] * views_per_image, params, policy, backend="reference")
        for k in range(views_per_image):
            theirs = theirs_view(c.tensor, params[k])
            a = out[k].clone()
            if "erase" in params.dtype.names:
                et, el, eh, ew = (int(v) for v in params[k]["erase"])
                if eh and ew:
                    theirs[:, et:et + eh, el:el + ew] = a[:, et:et + eh, el:el + ew]
            st.add(a, theirs, f"{c.name} view {k} ({describe(params[k])})")
    return st


def chain_policy_rrc_ra_re(images: list[Crop], views_per_image: int, seed: int = 0,
                           output_size=(224, 224)) -> ChainStat:
    """``rrc_ra_re`` views replayed by us and applied by torchvision with the same records."""
    from reinforced_data.policy import Policy

    policy = Policy.preset("rrc_ra_re", output_size=output_size)
    return _chain(policy, images, views_per_image, seed, lambda img, p: tv_chain_view(img, p, policy),
                  lambda p: "+".join(f"{RA_OPS[int(o)]}{int(m):+d}"
                                     for o, m in zip(np.atleast_1d(p["ra_op"]), np.atleast_1d(p["ra_mag"]))))


def chain_policy_torchvision_family(preset: str, images: list[Crop], views_per_image: int, seed: int = 0,
                                    output_size=(112, 112)) -> ChainStat:
    """Whole views of a torchvision family preset (``trivialaugment``, ``autoaugment``) replayed by
    us and applied by torchvision's own op function (``_apply_image_or_video_transform``) at the
    magnitude of the stored bin in that family's table, with the same crop and flip."""
    from reinforced_data import _families as FAM
    from reinforced_data.policy import Policy

    policy = Policy.preset(preset, output_size=output_size)
    names = policy.ra_ops()
    nb = FAM.AUTOAUGMENT_BINS if policy.ra_family == "autoaugment" else policy.ra_num_magnitude_bins
    oh, ow = output_size

    def applied(p):
        return [(names[int(o)], int(b)) for o, b in zip(np.atleast_1d(p["ra_op"]), np.atleast_1d(p["ra_mag"]))
                if names[int(o)] != "Identity"]

    def theirs(img, p):
        t, l, ch, cw = (int(v) for v in p["crop"])
        x = TF.resized_crop(img, t, l, ch, cw, [oh, ow], interpolation=InterpolationMode.BILINEAR, antialias=True)
        if int(p["flip"]):
            x = TF.horizontal_flip(x)
        for op, b in applied(p):
            table = FAM.torchvision_magnitudes(policy.ra_family, op, nb, oh, ow)
            mag = 0.0 if table is None else float(table[abs(b)]) * (-1.0 if b < 0 else 1.0)
            x = TF.invert(x) if op == "Invert" else _TV_RA._apply_image_or_video_transform(
                x, op, mag, interpolation=InterpolationMode.NEAREST, fill={"others": list(policy.fill)})
        return x

    return _chain(policy, images, views_per_image, seed, theirs,
                  lambda p: "+".join(f"{op}{b:+d}" for op, b in applied(p)) or "no op")


# ------------------------------------------------------------------ ColorJitter
JITTER_FUNCS = ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue")
#: the adjustments and the stored values swept per crop: factors in Q16, hue shifts in 1/65536 of a turn
JITTER_SWEEP = {
    "brightness": [39322, 45875, 52429, 58982, 72090, 78643, 85197, 91750],  # 0.6 .. 1.4
    "contrast": [39322, 45875, 52429, 58982, 72090, 78643, 85197, 91750],
    "saturation": [0, 19661, 39322, 58982, 72090, 91750, 131072],  # 0 .. 2
    "hue": [-32768, -16384, -6554, -3277, -655, 655, 3277, 6554, 16384, 32767],  # -0.5 .. 0.5
}


def _jitter_row(h: int, w: int, comp: int, value: int) -> torch.Tensor:
    from reinforced_data.policy import JITTER_KERNEL_OPS

    return row(h, w, [(JITTER_KERNEL_OPS[comp], [value, 0, 0, 0, 0, 0], 0)])


def library_jitter(x, comp: int, value: int, lib: str):
    """torchvision's adjustment ``comp`` at the stored value: v2 on the uint8 tensor, or v1 on the PIL
    image (timm's path: ImageEnhance, and PIL's 8-bit HSV for hue)."""
    arg = value / 65536
    if lib == "torchvision":
        return getattr(TF, JITTER_FUNCS[comp])(x, arg)
    import torchvision.transforms.functional as F1

    return getattr(F1, JITTER_FUNCS[comp])(x, arg)


def measure_jitter_ops(crops: list[Crop]) -> dict[Key, Stat]:
    """Each ColorJitter adjustment alone over JITTER_SWEEP, ours against torchvision v2 (uint8 tensors)
    and against v1 on PIL images (timm's path)."""
    stats: dict[Key, Stat] = {}
    for comp, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        for value in JITTER_SWEEP[name]:
            for c in crops:
                h, w = c.tensor.shape[1:]
                a = ours(c.tensor, _jitter_row(h, w, comp, value))
                label = f"{c.name} {name} {value / 65536:+.3f}"
                stats.setdefault(("torchvision", name, "", value), Stat()).add(
                    a, library_jitter(c.tensor, comp, value, "torchvision"), label)
                stats.setdefault(("timm", name, "", value), Stat()).add(
                    a, to_tensor(library_jitter(c.pil, comp, value, "pil")), label)
    return stats


def jitter_record(p, policy) -> list[tuple[int, int]]:
    """(adjustment, stored value) in the view's order, the adjustments the policy jitters only."""
    on = policy.jitter_components
    if "jitter_order" not in p.dtype.names:
        return []
    vals = [int(v) for v in p["jitter_factor"]] + [int(p["jitter_hue"]) if 3 in on else 0]
    order = [(int(p["jitter_order"]) >> (2 * j)) & 3 for j in range(4)]
    return [(c, vals[c]) for c in order if c in on]


def chain_policy_jitter(policy, images: list[Crop], views_per_image: int, seed: int = 0,
                        lib: str = "torchvision") -> ChainStat:
    """Whole views of a colour jitter policy replayed by us and by the library with the same record: the
    resized crop (torchvision ``antialias=True`` or PIL's ``crop().resize()`` with the stored filter), the
    flip, then each adjustment in the stored order (torchvision v2 on tensors, or v1 on PIL images)."""
    oh, ow = policy.output_size

    def theirs(img, p):
        t, l, ch, cw = (int(v) for v in p["crop"])
        filt = "bicubic" if ("crop_filter" in p.dtype.names and int(p["crop_filter"])) or \
            policy.interpolation == "bicubic" else "bilinear"
        if lib == "torchvision":
            x = TF.resized_crop(img, t, l, ch, cw, [oh, ow], interpolation=TV_INTERP[filt], antialias=True)
            if int(p["flip"]):
                x = TF.horizontal_flip(x)
        else:
            x = Image.fromarray(img.permute(1, 2, 0).numpy()).crop((l, t, l + cw, t + ch)).resize(
                (ow, oh), PIL_INTERP[filt])
            if int(p["flip"]):
                x = x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for comp, value in jitter_record(p, policy):
            x = library_jitter(x, comp, value, lib)
        return x if lib == "torchvision" else to_tensor(x)

    names = ("B", "C", "S", "H")
    return _chain(policy, images, views_per_image, seed, theirs,
                  lambda p: "+".join(f"{names[c]}{v / 65536:.3f}" for c, v in jitter_record(p, policy)) or "none")


def jitter_policies(output_size=(224, 224)):
    """torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1) after RRC + flip, and timm train.py's defaults."""
    from reinforced_data.policy import Policy

    return (Policy(output_size=output_size, jitter_brightness=(0.6, 1.4), jitter_contrast=(0.6, 1.4),
                   jitter_saturation=(0.6, 1.4), jitter_hue=(-0.1, 0.1)),
            Policy.preset("timm_train_default", output_size=output_size))


# ------------------------------------------------------------------ grouping
def group(stats: dict[Key, Stat]) -> dict[tuple, dict]:
    """(library, op, interp) -> {case label: Stat}."""
    out: dict[tuple, dict] = {}
    for (lib, op, interp, label), st in stats.items():
        out.setdefault((lib, op, interp), {})[label] = st
    return out


def summary(cases: dict) -> dict:
    """The figures of one (library, op, interp) over its cases."""
    total = Stat()
    for st in cases.values():
        total.merge(st)
    worst_label, worst = max(cases.items(), key=lambda kv: kv[1].frac)
    return {
        "cases": len(cases), "identical": sum(1 for st in cases.values() if st.differ == 0),
        "worst_label": worst_label, "worst_frac": worst.frac, "all_frac": total.frac,
        "max_abs": total.max_abs, "frac2": total.differ2 / total.values if total.values else 0.0,
        "worst_crop": total.worst_frac, "worst_crop_name": total.worst_name,
        "ours_exact": total.ours_exact, "lib_exact": total.lib_exact, "differ": total.differ,
        "crops": max(st.crops for st in cases.values()),
    }


# ------------------------------------------------------------------ PIL's geometric sampling, modelled
def pil_transform_model(img: torch.Tensor, m: list[float], interp: str, fill, a: float = -1.0) -> torch.Tensor:
    """What PIL's ``Image.transform(AFFINE, m)`` computes for uint8 RGB with BILINEAR / BICUBIC, in float64.

    Measured here (tests/test_fidelity.py checks it against Pillow): the output point (x + 1/2,
    y + 1/2) maps to (u, v) = m applied to it; an output pixel whose (u, v) lies outside
    [0, W) x [0, H) takes the fill; otherwise the taps around (u - 1/2, v - 1/2) are read with
    their indices clamped to the image (edge replication, never the fill), weighted with the
    triangle or Keys' cubic with ``a = -1`` (not the -0.5 of PIL's resize), and the sum is
    truncated (not rounded) to uint8.
    """
    c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    u = m[0] * (xs + 0.5) + m[1] * (ys + 0.5) + m[2]
    v = m[3] * (xs + 0.5) + m[4] * (ys + 0.5) + m[5]
    outside = (u < 0) | (u >= w) | (v < 0) | (v >= h)
    x0, y0 = torch.floor(u - 0.5), torch.floor(v - 0.5)
    dx, dy = u - 0.5 - x0, v - 0.5 - y0

    def k(t):
        t = t.abs()
        if interp == "bilinear":
            return (1 - t).clamp_min(0)
        return torch.where(t < 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                           torch.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, torch.zeros_like(t)))

    offs = (0, 1) if interp == "bilinear" else (-1, 0, 1, 2)
    p = img.double()
    acc = torch.zeros((c, h, w), dtype=torch.float64)
    for oy in offs:
        yy = (y0 + oy).clamp(0, h - 1).long()
        for ox in offs:
            xx = (x0 + ox).clamp(0, w - 1).long()
            acc += (k(oy - dy) * k(ox - dx))[None] * p[:, yy, xx]
    out = torch.trunc(acc).clamp(0, 255)
    out = torch.where(outside[None], torch.tensor(list(fill), dtype=torch.float64)[:, None, None], out)
    return out.to(torch.uint8)


# ------------------------------------------------------------------ whole views, any policy: rows -> PIL
def pil_matrix_from_row(p: list[int], h: int, w: int) -> list[float]:
    """The inverse of :func:`affine_row`: PIL's affine matrix of a geometric op's Q16 parameters."""
    a, b, d, e = p[0] / Q16, p[1] / Q16, p[3] / Q16, p[4] / Q16
    c = p[2] / (2 * Q16) + 0.5 - (a * w + b * h) / 2
    f = p[5] / (2 * Q16) + 0.5 - (d * w + e * h) / 2
    return [a, b, c, d, e, f]


def pil_apply_row(pil: Image.Image, r: list[int], out_hw: tuple[int, int]) -> Image.Image:
    """PIL (timm's functions) applying what one kernel row holds: crop + resize with the row's filter
    (``RandomResizedCropAndInterpolation``), flip, then each op with the row's parameters and
    interpolation. The erase box is left out (compare outside it)."""
    from PIL import ImageEnhance

    oh, ow = out_hw
    t, l, h, w = r[A.CROP_TOP:A.CROP_W + 1]
    filt = Image.Resampling.BICUBIC if r[A.RESIZE_FILTER] == 1 else Image.Resampling.BILINEAR
    x = pil.crop((l, t, l + w, t + h)).resize((ow, oh), filt)
    if r[A.FLIP]:
        x = x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    fill = tuple(r[A.FILL:A.FILL + 3])
    for s in range(r[A.NUM_OPS]):
        base = A.OPS + s * A.OP_STRIDE
        name = _reference.KERNEL_OPS[r[base]]
        p = r[base + 1:base + 7]
        if name in A.GEOMETRIC:
            resample = [Image.Resampling.NEAREST, Image.Resampling.BILINEAR,
                        Image.Resampling.BICUBIC][r[base + A.OP_INTERP]]
            x = x.transform(x.size, Image.Transform.AFFINE, pil_matrix_from_row(p, oh, ow), resample=resample,
                            fillcolor=fill)
        elif name in ("Brightness", "Color", "Contrast", "Sharpness"):
            x = getattr(ImageEnhance, name)(x).enhance(p[0] / Q16)
        elif name == "Posterize":
            x = x.point([v & p[0] for v in range(256)] * 3)
        elif name == "Solarize":
            x = ImageOps.solarize(x, p[0])
        elif name == "SolarizeAdd":
            x = x.point([min(255, max(0, v + p[1])) if v < p[0] else v for v in range(256)] * 3)
        elif name == "AutoContrast":
            x = ImageOps.autocontrast(x)
        elif name == "Equalize":
            x = ImageOps.equalize(x)
        elif name == "Invert":
            x = ImageOps.invert(x)
    return x


def chain_policy_pil(policy, images: list[Crop], views_per_image: int, seed: int = 0) -> ChainStat:
    """Views of ``policy`` replayed by us and by PIL (timm's path) from the same kernel rows."""
    g = np.random.default_rng(seed)
    st = ChainStat()
    oh, ow = policy.output_size
    for c in images:
        h, w = c.tensor.shape[1:]
        params = policy.sample(g, views_per_image, h, w)
        rows = A.encode(params, policy, [(h, w)] * views_per_image)
        out = _reference.augment([c.tensor] * views_per_image, rows, oh, ow)
        pil = c.pil
        for k in range(views_per_image):
            r = [int(v) for v in rows[k].tolist()]
            theirs = to_tensor(pil_apply_row(pil, r, (oh, ow)))
            a = out[k].clone()
            et, el, eh, ew = r[A.ERASE_TOP:A.ERASE_W + 1]
            if eh and ew:
                theirs[:, et:et + eh, el:el + ew] = a[:, et:et + eh, el:el + ew]
            desc = "+".join(f"{_reference.KERNEL_OPS[r[A.OPS + s * A.OP_STRIDE]]}"
                            f"/{'nlc'[r[A.OPS + s * A.OP_STRIDE + A.OP_INTERP]]}" for s in range(r[A.NUM_OPS]))
            st.add(a, theirs, f"{c.name} view {k} ({'bicubic' if r[A.RESIZE_FILTER] else 'bilinear'} crop; {desc})")
    return st


def timm_policy(output_size=(224, 224)):
    """timm's ImageNet training recipe: rand-m9-mstd0.5-inc1, random bilinear/bicubic, erasing 0.25 pixel."""
    from reinforced_data.policy import Policy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Policy.from_timm(input_size=output_size[0], auto_augment="rand-m9-mstd0.5-inc1",
                                interpolation="random", re_prob=0.25, re_mode="pixel")


# ------------------------------------------------------------------ AugMix (format version 5)
# The libraries' own AugMix transforms run on our crop with their random draws forced to a stored record:
# torchvision's AugMix.forward (v1, on the uint8 tensor) with `torch.randint` answered from the record and
# `_sample_dirichlet` (meant to be overridden in tests) returning the stored weights; timm's AugMixAugment
# (PIL) with `np.random` answered from the record and each chain op an AugmentOp at the stored level (no
# noise), interpolation and sign. Both then run every op, the float chain sums and the blends themselves.
class _Scripted:
    """A module stand-in: the names in ``overrides`` answered by it, the rest by ``module``."""

    def __init__(self, module, **overrides):
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._module, name)


def augmix_crop(img: torch.Tensor, record, policy) -> torch.Tensor:
    """The crop AugMix receives in the replay (``augment``'s crop and flip of the record, no ops)."""
    oh, ow = policy.output_size
    rows = A.encode(np.atleast_1d(record), policy, [tuple(img.shape[1:])])
    rows[:, A.NUM_OPS] = 0
    rows[:, A.ERASE_TOP:A.ERASE_W + 1] = 0
    return _reference.augment([img], rows, oh, ow)[0]


def _record_chains(record, policy) -> list[list[tuple[int, int, int]]]:
    w, d = policy.augmix_width, policy.augmix_slots
    ops = np.asarray(record["am_op"]).reshape(w, d)
    mags = np.asarray(record["am_mag"]).reshape(w, d)
    interp = np.asarray(record["am_interp"]).reshape(w, d) if "am_interp" in record.dtype.names else np.zeros((w, d))
    return [[(int(o), int(m), int(i)) for o, m, i in zip(ops[c], mags[c], interp[c]) if o] for c in range(w)]


def torchvision_augmix_view(crop: torch.Tensor, record, policy) -> torch.Tensor:
    """torchvision's AugMix (v1) on ``crop`` with its draws forced to ``record``."""
    import torchvision.transforms as T
    import torchvision.transforms.autoaugment as tv_aa
    from reinforced_data import _families as FAM

    t = T.AugMix(severity=policy.augmix_severity, mixture_width=policy.augmix_width, chain_depth=policy.augmix_depth,
                 alpha=policy.augmix_alpha, all_ops=policy.augmix_all_ops,
                 interpolation=TV_INTERP[policy.augmix_interpolation], fill=list(policy.fill))
    one = float(FAM.AUGMIX_ONE)
    weight = np.asarray(record["am_weight"], dtype=np.float64) / one
    m0 = weight[-1]
    chain_w = weight[:-1] / (1.0 - m0) if m0 < 1.0 else np.full(policy.augmix_width, 1.0 / policy.augmix_width)
    dirichlet = [torch.tensor([[m0, 1.0 - m0]], dtype=torch.float32), torch.tensor(chain_w[None, :], dtype=torch.float32)]
    t._sample_dirichlet = lambda params: dirichlet.pop(0)
    script: list[int] = []
    for chain in _record_chains(record, policy):
        if policy.augmix_depth <= 0:
            script.append(len(chain))
        for o, m, _ in chain:
            name = FAM.AUGMIX_TV_OPS[o]
            script.append(o - 1)
            if name not in FAM.TV_UNPARAMETERISED:
                script.append(abs(m))
            if name in FAM.TV_SIGNED:
                script.append(1 if m < 0 else 0)
    answers = iter(script)
    saved = tv_aa.torch
    tv_aa.torch = _Scripted(torch, randint=lambda *a, **k: torch.tensor([next(answers)]))
    try:
        out = t(crop.clone())
    finally:
        tv_aa.torch = saved
    assert next(answers, None) is None and not dirichlet, "torchvision drew another sequence than the record's"
    return out


def timm_augmix_view(crop: torch.Tensor, record, policy) -> torch.Tensor:
    """timm's AugMixAugment (PIL) on ``crop`` with its draws forced to ``record``."""
    from reinforced_data import _families as FAM

    cfg = FAM.parse_config(policy.augmix_config)
    names = policy.augmix_ops
    hp = dict(translate_const=cfg["translate_const"], translate_pct=cfg["translate_pct"], img_mean=tuple(policy.fill),
              magnitude_std=0)
    if cfg["magnitude_max"]:
        hp["magnitude_max"] = cfg["magnitude_max"]
    fixed = None if cfg["interpolation"] == "random" else cfg["interpolation"]

    class Forced:
        def __init__(self, o: int, m: int, i: int):
            h = dict(hp, interpolation=PIL_INTERP[fixed or {1: "bilinear", 2: "bicubic"}.get(i, "bilinear")])
            self.op = taa.AugmentOp(names[o], prob=1.0, magnitude=abs(m) / FAM.MAG_SCALE, hparams=h)
            self.negative = m < 0

        def __call__(self, img):
            saved = taa._randomly_negate
            taa._randomly_negate = (lambda v: -v) if self.negative else (lambda v: v)
            try:
                return self.op(img)
            finally:
                taa._randomly_negate = saved

    chains = [[Forced(*s) for s in chain] for chain in _record_chains(record, policy)]
    one = float(FAM.AUGMIX_ONE)
    weight = np.asarray(record["am_weight"], dtype=np.float64) / one
    queue: list = [weight[:-1], 1.0 - weight[-1]]
    depths = [len(c) for c in chains]
    rnd = _Scripted(np.random, dirichlet=lambda *a, **k: queue.pop(0), beta=lambda *a, **k: queue.pop(0),
                    randint=lambda *a, **k: depths.pop(0), choice=lambda ops, depth, replace=True: chains.pop(0))
    t = taa.AugMixAugment([], alpha=policy.augmix_alpha, width=policy.augmix_width,
                          depth=policy.augmix_depth if policy.augmix_depth > 0 else -1, blended=policy.augmix_blended)
    saved = taa.np
    taa.np = _Scripted(np, random=rnd)
    try:
        out = t(Image.fromarray(crop.permute(1, 2, 0).contiguous().numpy()))
    finally:
        taa.np = saved
    assert not chains and not queue, "timm drew another sequence than the record's"
    return to_tensor(out)


def chain_policy_augmix(policy, images: list[Crop], views_per_image: int, seed: int = 0,
                        backend: str = "reference") -> ChainStat:
    """AugMix views replayed by us beside the library's AugMix on the same crop with the same record (the
    AugMix stage alone: both start from our crop, whose closeness fidelity.md measures)."""
    from reinforced_data._replay import replay

    lib = torchvision_augmix_view if policy.augmix == "torchvision" else timm_augmix_view
    g = np.random.default_rng(seed)
    st = ChainStat()
    for c in images:
        h, w = c.tensor.shape[1:]
        params = policy.sample(g, views_per_image, h, w)
        out = replay([c.tensor] * views_per_image, params, policy, backend=backend)
        for k in range(views_per_image):
            theirs = lib(augmix_crop(c.tensor, params[k], policy), params[k], policy)
            names = policy.augmix_ops
            desc = " | ".join("+".join(names[o] for o, _, _ in chain) for chain in _record_chains(params[k], policy))
            st.add(out[k], theirs, f"{c.name} view {k} ({desc})")
    return st


def augmix_policies(output_size=(224, 224)) -> dict:
    """The AugMix policies of the report: torchvision's AugMix() defaults, timm's augmix-m5-w4-d2 (random
    bilinear / bicubic) and its blended mode."""
    from reinforced_data.policy import Policy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "torchvision AugMix() (severity 3, width 3, depth 1-3, bilinear) vs torchvision v1's AugMix":
                Policy(augmix="torchvision", output_size=output_size),
            "timm augmix-m5-w4-d2 (random bilinear/bicubic) vs timm's AugMixAugment (PIL)":
                Policy.from_timm(input_size=output_size, auto_augment="augmix-m5-w4-d2", re_prob=0),
            "timm augmix-m3-w3-b1 (blended, depth 1-3) vs timm's AugMixAugment (PIL)":
                Policy.from_timm(input_size=output_size, auto_augment="augmix-m3-w3-b1", re_prob=0),
        }
