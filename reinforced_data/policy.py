"""Augmentation policy and vectorised, seeded parameter sampling.

A :class:`Policy` says *which* augmentations a view may receive; :meth:`Policy.sample`
draws the concrete parameters of K views of one image in one call and returns them as
a numpy structured array (:meth:`Policy.param_dtype`). Every field is an integer that is
applied as it is stored: sampling quantises, replay never rounds a parameter again.

The distributions follow torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``RandAugment`` and ``RandomErasing`` and timm's ``Mixup`` (see docs/replay.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["Policy", "RA_OPS", "SIGNED_OPS", "PRESETS", "IMAGENET_MEAN", "IMAGENET_STD"]

#: RandAugment ops in torchvision's order; a stored op id indexes this tuple.
RA_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)
#: Ops whose magnitude takes a random sign (torchvision's ``signed`` flag).
SIGNED_OPS: frozenset[str] = frozenset(
    ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
     "Contrast", "Sharpness")
)
#: Ops without a magnitude (the stored magnitude is 0).
UNPARAMETERISED_OPS: frozenset[str] = frozenset(("Identity", "AutoContrast", "Equalize"))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_RA_OPS = 4  # the compiled kernels hold at most this many ops per view
MAX_OUTPUT_SIZE = 4096
MAX_SOURCE_SIZE = 65535  # crop coordinates are stored as uint16
MIN_RATIO = 1e-6  # crop_ratio / erase_ratio bounds lie in [MIN_RATIO, 1 / MIN_RATIO]
MIN_STD = 1e-6

# mix_mode values
MIX_NONE, MIX_MIXUP, MIX_CUTMIX = 0, 1, 2


@dataclass(frozen=True)
class Policy:
    """What a reinforced view may be made of. Serialisable with :meth:`to_json`.

    ``erase_value`` is a per-channel uint8 value, or ``"random"`` for per-pixel uniform
    noise drawn from the view's stored ``erase_seed`` (deterministic on every backend).
    ``fill`` is the uint8 value geometric RandAugment ops put outside the image.
    """

    output_size: tuple[int, int] = (224, 224)
    # RandomResizedCrop
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    # RandAugment (torchvision semantics); num_ops == 0 disables it
    ra_num_ops: int = 0
    ra_magnitude: int = 9
    ra_num_magnitude_bins: int = 31
    fill: tuple[int, int, int] = (0, 0, 0)
    # RandomErasing; erase_prob == 0 disables it
    erase_prob: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.33)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    erase_value: tuple[int, int, int] | str = (0, 0, 0)
    # Normalisation applied after everything else
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # MixUp / CutMix (timm's Mixup semantics): mix_prob is the chance that a view is
    # mixed at all, switch_prob the chance of CutMix when both are enabled.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        # Coerce JSON-friendly inputs (lists, ints for floats) to the declared types, so a
        # policy read back from a file compares equal; anything else is a ConfigError (a ValueError).
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), _FIELD_KINDS[f.name]))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`~reinforced_data.errors.ConfigError` (a ``ValueError``) naming the first field that is out of range."""
        for f in dataclasses.fields(self):  # NaN passes every comparison below; inf breaks sampling
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ConfigError(f"{f.name}={value} must be finite")
        h, w = self.output_size
        if not (1 <= h <= MAX_OUTPUT_SIZE and 1 <= w <= MAX_OUTPUT_SIZE):
            raise ConfigError(f"output_size {self.output_size} must be between 1 and {MAX_OUTPUT_SIZE}")
        _check_range("crop_scale", self.crop_scale, 0.0, 1.0, open_low=True)
        _check_range("crop_ratio", self.crop_ratio, 0.0, math.inf, open_low=True)
        _check_range("erase_scale", self.erase_scale, 0.0, 1.0, open_low=True)
        _check_range("erase_ratio", self.erase_ratio, 0.0, math.inf, open_low=True)
        for name in ("flip_prob", "erase_prob", "mix_prob", "switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if not 0 <= self.ra_num_ops <= MAX_RA_OPS:
            raise ConfigError(f"ra_num_ops={self.ra_num_ops} must lie in [0, {MAX_RA_OPS}]")
        if not 2 <= self.ra_num_magnitude_bins <= 128:
            raise ConfigError(f"ra_num_magnitude_bins={self.ra_num_magnitude_bins} must lie in [2, 128]")
        if not 0 <= self.ra_magnitude < self.ra_num_magnitude_bins:
            raise ConfigError(
                f"ra_magnitude={self.ra_magnitude} must lie in [0, ra_num_magnitude_bins)"
            )
        _check_uint8_triple("fill", self.fill)
        if isinstance(self.erase_value, str):
            if self.erase_value != "random":
                raise ConfigError(f"erase_value={self.erase_value!r}: use 'random' or three uint8 values")
        else:
            _check_uint8_triple("erase_value", self.erase_value)
        if min(self.std) <= 0:
            raise ConfigError(f"std={self.std} must be positive")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ConfigError("mixup_alpha and cutmix_alpha must be >= 0")
        for name in ("crop_ratio", "erase_ratio"):  # beyond these, sampled sides overflow int64
            lo, hi = getattr(self, name)
            if lo < MIN_RATIO or hi > 1.0 / MIN_RATIO:
                raise ConfigError(f"{name}={getattr(self, name)} must lie within [{MIN_RATIO:g}, {1.0 / MIN_RATIO:g}]")
        if min(self.std) < MIN_STD:
            raise ConfigError(f"std={self.std} must be at least {MIN_STD:g} (a smaller std gives infinite views)")

    @property
    def mixing(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    # ------------------------------------------------------------- serialise
    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Policy":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown policy field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls.from_dict(json.loads(text))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Policy":
        """A named configuration from :data:`PRESETS`, with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown policy preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    # ------------------------------------------------------------ parameters
    def param_dtype(self) -> np.dtype:
        """The structured dtype of one view's parameters under this policy."""
        fields: list[tuple] = [("crop", np.uint16, (4,)), ("flip", np.uint8)]
        if self.ra_num_ops:
            fields += [("ra_op", np.uint8, (self.ra_num_ops,)), ("ra_mag", np.int8, (self.ra_num_ops,))]
        if self.erase_prob > 0:
            fields += [("erase", np.uint16, (4,))]
            if self.erase_value == "random":
                fields += [("erase_seed", np.uint16)]
        if self.mixing:
            fields += [("mix_mode", np.uint8), ("mix_lam", np.uint8), ("mix_box", np.uint16, (4,))]
        return np.dtype(fields)

    def sample(self, rng: np.random.Generator, k: int, height: int, width: int) -> np.ndarray:
        """Draw the parameters of ``k`` views of one ``height`` x ``width`` image.

        Returns a structured array of shape ``(k,)`` and dtype :meth:`param_dtype`.
        The draws are a fixed sequence of vectorised calls on ``rng``, so the same
        generator state gives the same parameters on every machine.
        """
        if not (1 <= height <= MAX_SOURCE_SIZE and 1 <= width <= MAX_SOURCE_SIZE):
            raise ConfigError(f"image size {height}x{width} must be between 1 and {MAX_SOURCE_SIZE} per side")
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        out = np.zeros(k, dtype=self.param_dtype())
        out["crop"] = _sample_resized_crop(rng, k, height, width, self.crop_scale, self.crop_ratio)
        out["flip"] = rng.random(k) < self.flip_prob
        oh, ow = self.output_size
        if self.ra_num_ops:
            n = self.ra_num_ops
            ops = rng.integers(0, len(RA_OPS), size=(k, n))
            negative = rng.random((k, n)) <= 0.5
            signed = np.isin(ops, [RA_OPS.index(o) for o in SIGNED_OPS])
            has_mag = ~np.isin(ops, [RA_OPS.index(o) for o in UNPARAMETERISED_OPS])
            mag = np.where(has_mag, self.ra_magnitude, 0)
            mag = np.where(signed & negative, -mag, mag)
            out["ra_op"] = ops
            out["ra_mag"] = mag
        if self.erase_prob > 0:
            apply = rng.random(k) < self.erase_prob
            box = _sample_erase_box(rng, k, oh, ow, self.erase_scale, self.erase_ratio)
            box[~apply] = 0
            out["erase"] = box
            if self.erase_value == "random":
                out["erase_seed"] = rng.integers(0, 1 << 16, size=k)
        if self.mixing:
            mode, lam, box = _sample_mix(rng, k, oh, ow, self)
            out["mix_mode"] = mode
            out["mix_lam"] = lam
            out["mix_box"] = box
        return out


# Named configurations. "rrc" and "rrc_ra_re" are the paper's ImageNet+ variants;
# "torchvision" and "timm" mirror those libraries' ImageNet training defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "rrc": dict(),
    "rrc_ra_re": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25),
    "rrc_ra_re_mix": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25, mixup_alpha=0.2,
                          cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5),
    "torchvision": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.5),
    "timm": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25, erase_value="random"),
}


# ---------------------------------------------------------------- samplers
def _sample_resized_crop(rng, k, height, width, scale, ratio, attempts=10) -> np.ndarray:
    """torchvision's RandomResizedCrop.make_params, ``attempts`` tries per view at once."""
    area = height * width
    target = area * rng.uniform(scale[0], scale[1], size=(k, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(k, attempts)))
    w = np.round(np.sqrt(target * aspect)).astype(np.int64)
    h = np.round(np.sqrt(target / aspect)).astype(np.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(k), first]
    h = h[np.arange(k), first]
    w = w[np.arange(k), first]
    # Central fallback crop (torchvision's), used where no attempt fitted.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    h = np.where(found, h, fh)
    w = np.where(found, w, fw)
    u = rng.random((k, 2))
    top = np.where(found, np.floor(u[:, 0] * (height - h + 1)), (height - fh) // 2)
    left = np.where(found, np.floor(u[:, 1] * (width - w + 1)), (width - fw) // 2)
    return np.stack([top, left, h, w], axis=1).astype(np.uint16)


def _sample_erase_box(rng, k, height, width, scale, ratio, attempts=10) -> np.ndarray:
    """torchvision's RandomErasing.make_params; a view with no fitting attempt gets no box."""
    area = height * width
    target = area * rng.uniform(scale[0], scale[1], size=(k, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(k, attempts)))
    h = np.round(np.sqrt(target * aspect)).astype(np.int64)
    w = np.round(np.sqrt(target / aspect)).astype(np.int64)
    ok = (h < height) & (w < width) & (h > 0) & (w > 0)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(k), first]
    h = np.where(found, h[np.arange(k), first], 0)
    w = np.where(found, w[np.arange(k), first], 0)
    u = rng.random((k, 2))
    top = np.floor(u[:, 0] * (height - h + 1))
    left = np.floor(u[:, 1] * (width - w + 1))
    box = np.stack([top, left, h, w], axis=1).astype(np.uint16)
    box[~found] = 0
    return box


def _sample_mix(rng, k, height, width, policy: Policy):
    """timm's Mixup per-sample draws: mode, this view's weight λ (quantised to 1/255), box."""
    mixed = rng.random(k) < policy.mix_prob
    if policy.mixup_alpha > 0 and policy.cutmix_alpha > 0:
        cut = rng.random(k) < policy.switch_prob
    else:
        cut = np.full(k, policy.cutmix_alpha > 0)
    alpha = np.where(cut, policy.cutmix_alpha, policy.mixup_alpha)
    lam = rng.beta(np.maximum(alpha, 1e-6), np.maximum(alpha, 1e-6))
    # CutMix box (timm's rand_bbox): size from sqrt(1 - lam), centre uniform, clipped.
    cut_rat = np.sqrt(1.0 - lam)
    ch = (height * cut_rat).astype(np.int64)
    cw = (width * cut_rat).astype(np.int64)
    cy = rng.integers(0, height, size=k)
    cx = rng.integers(0, width, size=k)
    y0 = np.clip(cy - ch // 2, 0, height)
    y1 = np.clip(cy + ch // 2, 0, height)
    x0 = np.clip(cx - cw // 2, 0, width)
    x1 = np.clip(cx + cw // 2, 0, width)
    box = np.stack([y0, x0, y1 - y0, x1 - x0], axis=1)
    # CutMix's λ is the share of the view that stays its own (timm's correct_lam).
    cut_lam = 1.0 - (box[:, 2] * box[:, 3]) / float(height * width)
    lam = np.where(cut, cut_lam, lam)
    mode = np.where(mixed, np.where(cut, MIX_CUTMIX, MIX_MIXUP), MIX_NONE)
    box[mode != MIX_CUTMIX] = 0
    lam_q = np.where(mode == MIX_NONE, 255, np.round(lam * 255))
    return mode.astype(np.uint8), lam_q.astype(np.uint8), box.astype(np.uint16)


# How each field is typed: "int", "float", ("int", n) / ("float", n) for n-tuples;
# erase_value also takes the string "random".
_FIELD_KINDS: dict[str, Any] = {
    "output_size": ("int", 2), "crop_scale": ("float", 2), "crop_ratio": ("float", 2), "flip_prob": "float",
    "ra_num_ops": "int", "ra_magnitude": "int", "ra_num_magnitude_bins": "int", "fill": ("int", 3),
    "erase_prob": "float", "erase_scale": ("float", 2), "erase_ratio": ("float", 2),
    "erase_value": ("int", 3), "mean": ("float", 3), "std": ("float", 3), "mixup_alpha": "float",
    "cutmix_alpha": "float", "mix_prob": "float", "switch_prob": "float",
}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    if name == "erase_value" and isinstance(value, str):
        return value  # validate() checks it is "random"
    if isinstance(kind, tuple):
        base, n = kind
        if not isinstance(value, (tuple, list)) or len(value) != n:
            raise ConfigError(f"{name}={value!r} must be a sequence of {n} {base}s")
        return tuple(_coerce(name, v, base) for v in value)
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if kind == "int" and numeric and float(value).is_integer():
        return int(value)
    if kind == "float" and numeric:
        return float(value)
    raise ConfigError(f"{name}={value!r} must be {'an integer' if kind == 'int' else 'a number'}")


def _check_range(name, pair, low, high, open_low=False):
    if len(pair) != 2 or not (pair[0] <= pair[1]):
        raise ConfigError(f"{name}={pair} must be an ordered pair (low, high)")
    if (pair[0] <= low if open_low else pair[0] < low) or pair[1] > high:
        raise ConfigError(f"{name}={pair} must lie in {'(' if open_low else '['}{low}, {high}]")


def _check_uint8_triple(name, values):
    if any(not 0 <= v <= 255 for v in values):
        raise ConfigError(f"{name}={values} must be three integers in [0, 255]")
