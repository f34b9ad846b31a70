"""Augmentation policy and vectorised, seeded parameter sampling.

A :class:`Policy` says *which* augmentations a view may receive; :meth:`Policy.sample`
draws the concrete parameters of K views of one image in one call and returns them as
a numpy structured array (:meth:`Policy.param_dtype`). Every field is an integer that is
applied as it is stored: sampling quantises, replay never rounds a parameter again.

The distributions follow torchvision's ``RandomResizedCrop`` / ``RandomCrop``,
``RandomHorizontalFlip``, ``RandAugment`` / ``TrivialAugmentWide`` / ``AutoAugment`` and
``RandomErasing``, torchvision's and timm's ``AugMix`` (``augmix``, format version 5), timm's ``RandAugment`` /
``AutoAugment`` (``ra_family``, see
:mod:`reinforced_data._families`), timm's ``Mixup`` and apple/ml-dr's sequential MixUp + CutMix
(see docs/replay.md; tests/test_samplers.py compares each with the library's own sampler).
Fields added after format version 1 (:data:`V2_DEFAULTS`) are left out of :meth:`Policy.to_dict`
while they hold their defaults, so a policy version 1 could express serialises as before.
Policies from timm's arguments or a torchvision pipeline: :meth:`Policy.from_timm`,
:meth:`Policy.from_torchvision` (:mod:`reinforced_data.recipes`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _families as FAM
from . import _samplers as S
from .errors import ConfigError

__all__ = ["Policy", "RA_OPS", "SIGNED_OPS", "PRESETS", "IMAGENET_MEAN", "IMAGENET_STD"]

#: The kernels' ops by kernel op id: torchvision's RandAugment order (a stored op id of the
#: "torchvision" family indexes its first 14), then Invert and SolarizeAdd. Other families
#: store ids into their own op list (:meth:`Policy.ra_ops`).
RA_OPS: tuple[str, ...] = FAM.KERNEL_OPS
#: Ops whose magnitude takes a random sign (torchvision's ``signed`` flag).
SIGNED_OPS: frozenset[str] = frozenset(
    ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
     "Contrast", "Sharpness")
)
#: Ops without a magnitude (the stored magnitude is 0).
UNPARAMETERISED_OPS: frozenset[str] = frozenset(("Identity", "AutoContrast", "Equalize", "Invert"))

IMAGENET_MEAN, IMAGENET_STD = FAM.IMAGENET_MEAN, FAM.IMAGENET_STD

MAX_RA_OPS = 4  # the compiled kernels hold at most this many ops per view
MAX_OUTPUT_SIZE = 4096
MAX_SOURCE_SIZE = 65535  # crop coordinates are stored as uint16
MIN_RATIO = 1e-6  # crop_ratio / erase_ratio bounds lie in [MIN_RATIO, 1 / MIN_RATIO]
MIN_STD = 1e-6

# mix_mode values

CROP_MODES = ("resized", "padded")
CROP_INTERPOLATIONS = ("bilinear", "bicubic", "random")
RESIZE_FILTERS = {"bilinear": 0, "bicubic": 1}  # the kernels' RESIZE_FILTER values
TV_RA_INTERPOLATIONS = ("nearest", "bilinear")
MIX_MODES = ("switch", "sequential")

#: Fields added after format version 1, with the defaults that keep version-1 behaviour.
#: to_dict() leaves a field out while it holds its default, so a policy version 1 could
#: express serialises exactly as before.
V2_DEFAULTS: dict[str, Any] = {
    "crop_mode": "resized", "interpolation": "bilinear", "crop_padding": 0, "pad_fill": (0, 0, 0),
    "ra_family": "torchvision", "ra_interpolation": "nearest", "ra_prob": 1.0, "ra_config": "",
    "mix_mode": "switch", "mixup_prob": 1.0, "cutmix_prob": 1.0, "mixup_lam_div": 1.0,
}
#: Fields added in format version 3 (ColorJitter), with the defaults that turn it off; to_dict()
#: leaves them out while they hold these, so older policies serialise as before.
V3_DEFAULTS: dict[str, Any] = {
    "jitter_brightness": (1.0, 1.0), "jitter_contrast": (1.0, 1.0), "jitter_saturation": (1.0, 1.0),
    "jitter_hue": (0.0, 0.0), "jitter_prob": 1.0,
}
#: Fields added in format version 4 (RandomGrayscale, GaussianBlur, RandomSolarize), with the defaults that
#: turn them off; to_dict() leaves them out while they hold these.
V4_DEFAULTS: dict[str, Any] = {
    "grayscale_prob": 0.0, "grayscale_formula": "torchvision",
    "blur_prob": 0.0, "blur_kernel_size": 23, "blur_sigma": (0.1, 2.0),
    "solarize_prob": 0.0, "solarize_threshold": 128.0,
}
#: Fields added in format version 5 (AugMix), with the defaults that turn it off; to_dict() leaves them out
#: while they hold these.
V5_DEFAULTS: dict[str, Any] = {
    "augmix": "", "augmix_width": 3, "augmix_depth": -1, "augmix_alpha": 1.0, "augmix_severity": 3,
    "augmix_all_ops": True, "augmix_interpolation": "bilinear", "augmix_blended": False, "augmix_config": "",
}
#: AugMix chains hold at most MAX_RA_OPS ops (one kernel row each); a random depth draws 1..3 (both libraries).
AUGMIX_RANDOM_DEPTH = FAM.AUGMIX_RANDOM_DEPTH
assert FAM.MAX_AUGMIX_DEPTH == MAX_RA_OPS
GRAYSCALE_FORMULAS = ("torchvision", "pil")  # rgb_to_grayscale on tensors / PIL's convert("L")
MAX_BLUR_KERNEL = 23  # the kernels hold 12 taps: the centre and 11 on each side
MAX_BLUR_SIGMA = 65.535  # stored in thousandths of a pixel (uint16)
#: timm ops of the 3-Augment that only version-4 readers know (policy.uses_v4_ops).
V4_TIMM_OPS = frozenset(("Desaturate", "GaussianBlur", "GaussianBlurRand"))
#: ColorJitter's four adjustments, by the index torchvision's ``fn_idx`` permutation uses.
JITTER_COMPONENTS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
#: The kernel op of each adjustment (saturation is the blend with grey that Color is).
JITTER_KERNEL_OPS: tuple[str, ...] = ("Brightness", "Contrast", "Color", "Hue")
MAX_JITTER_FACTOR = 256.0  # brightness / contrast / saturation factors (Q16 in uint32: at most 2^24)
#: Fields added in format version 4 for imported files (apple/ml-dr's, :mod:`reinforced_data.mldr`), with the
#: defaults that keep earlier behaviour; to_dict() leaves them out while they hold these.
V4_PARTNER_DEFAULTS: dict[str, Any] = {"mix_partner": "stored"}
#: "stored": a mixed view's partner is another stored view (partner_index, partner_view); "inline": the
#: partner's own crop, flip, RandAugment and erasing are stored in the record itself (``partner_*`` fields),
#: as apple/ml-dr stores them.
MIX_PARTNERS = ("stored", "inline")
#: The per-image fields an inline partner repeats, each stored as ``partner_<field>``.
PARTNER_FIELDS = ("crop", "flip", "ra_op", "ra_mag", "erase")


@dataclass(frozen=True)
class Policy:
    """What a reinforced view may be made of. Serialisable with :meth:`to_json`.

    ``erase_value`` is a per-channel uint8 value, or ``"random"`` for per-pixel uniform
    noise drawn from the view's stored ``erase_seed`` (deterministic on every backend).
    ``fill`` is the uint8 value geometric RandAugment ops put outside the image.
    """

    # The fields read in the order the stages run: crop -> flip -> RandAugment-like ops -> colour
    # jitter -> grayscale / blur / solarize -> erase -> normalise -> mix. The format version that
    # added each field is noted: a file is written with the oldest version that holds its policy
    # (fields of later versions at their defaults are left out of to_dict()).
    output_size: tuple[int, int] = (224, 224)
    # Crop: "resized" (RandomResizedCrop with crop_scale / crop_ratio; filter "bilinear" / "bicubic" /
    # "random" = timm's per-view choice, stored) or "padded" (torchvision RandomCrop(output_size,
    # padding=crop_padding, fill=pad_fill)). crop_mode, interpolation, crop_padding, pad_fill: version 2.
    crop_mode: str = "resized"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    interpolation: str = "bilinear"
    crop_padding: int = 0
    pad_fill: tuple[int, int, int] = (0, 0, 0)
    # Horizontal flip
    flip_prob: float = 0.5
    # RandAugment-like ops; ra_num_ops == 0 disables them. ra_family (see reinforced_data._families),
    # ra_interpolation (the geometric ops' filter of the torchvision families), ra_prob (the chance the
    # stage runs at all) and ra_config (the resolved timm configuration, JSON text; to_dict gives it as a
    # mapping): version 2. fill: what geometric ops put outside the image.
    ra_family: str = "torchvision"
    ra_num_ops: int = 0
    ra_magnitude: int = 9
    ra_num_magnitude_bins: int = 31
    ra_interpolation: str = "nearest"
    ra_prob: float = 1.0
    ra_config: str = ""
    fill: tuple[int, int, int] = (0, 0, 0)
    # AugMix (version 5), in place of the RandAugment-like stage (ra_num_ops must be 0): augmix "torchvision"
    # (torchvision's AugMix: augmix_severity, augmix_all_ops, augmix_interpolation "nearest" / "bilinear") or
    # "timm" (timm's augmix-m*-w*-d*: augmix_config, the resolved ops, as ra_config is for RandAugment;
    # augmix_blended, its "-b1" mode); "" = off. augmix_width chains of augmix_depth ops (-1: 1..3 per
    # chain), Dirichlet(augmix_alpha) chain weights and a Beta(augmix_alpha, augmix_alpha) blend with the
    # crop; the chains' geometric ops put ``fill`` outside the image.
    augmix: str = ""
    augmix_width: int = 3
    augmix_depth: int = -1
    augmix_alpha: float = 1.0
    augmix_severity: int = 3
    augmix_all_ops: bool = True
    augmix_interpolation: str = "bilinear"
    augmix_blended: bool = False
    augmix_config: str = ""
    # ColorJitter (version 3; torchvision's semantics; timm's color_jitter builds one): factor ranges (lo, hi)
    # for brightness, contrast and saturation ((1, 1) = off), hue shift range in [-0.5, 0.5] ((0, 0) = off),
    # the four applied in a random order per view, after the RandAugment-like stage; jitter_prob is the
    # chance a view is jittered at all (timm's color_jitter_prob, a RandomApply's p).
    jitter_brightness: tuple[float, float] = (1.0, 1.0)
    jitter_contrast: tuple[float, float] = (1.0, 1.0)
    jitter_saturation: tuple[float, float] = (1.0, 1.0)
    jitter_hue: tuple[float, float] = (0.0, 0.0)
    jitter_prob: float = 1.0
    # Version 4, after the colour jitter, in this order (timm's and torchvision's SSL recipes' order):
    # RandomGrayscale (grayscale_prob; grayscale_formula "torchvision" on tensors or "pil", PIL's
    # convert("L"), which timm's PIL pipeline uses), GaussianBlur in a RandomApply (blur_prob; torchvision's
    # kernel_size and sigma range, sigma drawn per view), RandomSolarize (solarize_prob,
    # solarize_threshold: x >= threshold is inverted).
    grayscale_prob: float = 0.0
    grayscale_formula: str = "torchvision"
    blur_prob: float = 0.0
    blur_kernel_size: int = 23
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    solarize_threshold: float = 128.0
    # RandomErasing; erase_prob == 0 disables it
    erase_prob: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.33)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    erase_value: tuple[int, int, int] | str = (0, 0, 0)
    # Normalisation of float output
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Mixing. mix_mode (version 2): "switch" (timm's Mixup: mix_prob is the chance that a view is mixed at
    # all, switch_prob the chance of CutMix when both are enabled) or "sequential" (apple/ml-dr: MixUp with
    # mixup_prob and lambda = Beta(a, a) / mixup_lam_div, then CutMix with cutmix_prob, on the same
    # partner). mix_partner (version 4): where a mixed view's partner parameters live, "stored" (another
    # stored view of the partner image) or "inline" (in the record: partner_crop, partner_flip,
    # partner_ra_op/_mag, partner_erase; files imported from apple/ml-dr, see docs/mldr.md; written by
    # import-mldr, never sampled).
    mix_mode: str = "switch"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mixup_prob: float = 1.0
    cutmix_prob: float = 1.0
    mixup_lam_div: float = 1.0
    mix_partner: str = "stored"

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
            raise ConfigError(f"ra_num_ops={self.ra_num_ops} must lie in [0, {MAX_RA_OPS}] (the kernels apply at most "
                              f"{MAX_RA_OPS} ops per view)")
        if not 2 <= self.ra_num_magnitude_bins <= 128:
            raise ConfigError(f"ra_num_magnitude_bins={self.ra_num_magnitude_bins} must lie in [2, 128]")
        # only torchvision's RandAugment has a fixed magnitude; TrivialAugment draws a bin, the others use tables
        if not 0 <= self.ra_magnitude < (self.ra_num_magnitude_bins if self.ra_family == "torchvision" else 128):
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
        self._validate_v2()
        self._validate_v3()
        self._validate_v4()
        self._validate_v4_partner()
        self._validate_v5()

    def _validate_v5(self) -> None:
        if self.augmix not in ("",) + FAM.AUGMIX_FAMILIES:
            raise ConfigError(f"augmix={self.augmix!r} must be '' (off), 'torchvision' or 'timm'")
        if not self.augmix:
            changed = [k for k, v in V5_DEFAULTS.items() if k != "augmix" and getattr(self, k) != v]
            if changed:
                raise ConfigError(f"{changed[0]}={getattr(self, changed[0])!r} needs augmix='torchvision' or 'timm'")
            return
        if self.ra_num_ops:
            raise ConfigError(f"augmix={self.augmix!r} with ra_num_ops={self.ra_num_ops}: AugMix takes the place of "
                              "the RandAugment-like stage; set ra_num_ops=0")
        if not 1 <= self.augmix_width <= FAM.MAX_AUGMIX_CHAINS:
            raise ConfigError(f"augmix_width={self.augmix_width} must lie in [1, {FAM.MAX_AUGMIX_CHAINS}] (the chains "
                              "the mixing kernel takes)")
        if self.augmix_depth != -1 and not 1 <= self.augmix_depth <= MAX_RA_OPS:
            raise ConfigError(f"augmix_depth={self.augmix_depth} must be -1 (1..3 per chain) or lie in "
                              f"[1, {MAX_RA_OPS}] (the ops a kernel row holds)")
        if not 0.0 < self.augmix_alpha <= 1e3:
            raise ConfigError(f"augmix_alpha={self.augmix_alpha} must lie in (0, 1000] (Dirichlet / Beta concentration)")
        if self.mix_partner == "inline":
            raise ConfigError("mix_partner='inline' (imported ml-dr files) cannot be combined with AugMix")
        if self.augmix == "torchvision":
            if not 1 <= self.augmix_severity <= FAM.AUGMIX_BINS:
                raise ConfigError(f"augmix_severity={self.augmix_severity} must lie in [1, {FAM.AUGMIX_BINS}], as "
                                  "torchvision's AugMix requires")
            if self.augmix_interpolation not in TV_RA_INTERPOLATIONS:
                raise ConfigError(f"augmix_interpolation={self.augmix_interpolation!r} must be one of "
                                  f"{TV_RA_INTERPOLATIONS} (torchvision's tensor affine supports these)")
            if self.augmix_config or self.augmix_blended:
                raise ConfigError("augmix_config and augmix_blended are timm's (augmix='timm'); torchvision's AugMix "
                                  "takes augmix_severity / augmix_all_ops / augmix_interpolation")
        else:
            if not self.augmix_config:
                raise ConfigError("augmix='timm' needs augmix_config (timm's resolved AugMix ops; build it with "
                                  "Policy.from_timm(auto_augment='augmix-m5-w4-d2'))")
            for k in ("augmix_severity", "augmix_all_ops", "augmix_interpolation"):
                if getattr(self, k) != V5_DEFAULTS[k]:
                    raise ConfigError(f"{k}={getattr(self, k)!r} is torchvision's; timm's AugMix takes its ops, "
                                      "levels and interpolation from augmix_config")
        n = len(self.jitter_components) + len(self.extra_ops)
        if n > MAX_RA_OPS:
            raise ConfigError(f"{n} colour jitter / grayscale / blur / solarize ops after AugMix exceed the "
                              f"{MAX_RA_OPS} ops a kernel row holds")

    @property
    def augmix_ops(self) -> tuple[str, ...]:
        """The op names a stored ``am_op`` id indexes (index 0 is Identity, an unused chain slot)."""
        if self.augmix == "torchvision":
            return FAM.AUGMIX_TV_OPS
        return FAM.family_ops("timm_augmix", self.augmix_config) if self.augmix else ()

    @property
    def augmix_slots(self) -> int:
        """Op slots per chain: the fixed depth, or 3 for a random depth (1..3)."""
        return self.augmix_depth if self.augmix_depth > 0 else AUGMIX_RANDOM_DEPTH

    @property
    def augmix_random_interpolation(self) -> bool:
        return self.augmix == "timm" and FAM.parse_config(self.augmix_config)["interpolation"] == "random"

    @property
    def uses_v5(self) -> bool:
        """Whether the policy needs a version-5 reader (AugMix)."""
        return bool(self.augmix)

    def _validate_v4(self) -> None:
        for name in ("grayscale_prob", "blur_prob", "solarize_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if self.grayscale_formula not in GRAYSCALE_FORMULAS:
            raise ConfigError(f"grayscale_formula={self.grayscale_formula!r} must be one of {GRAYSCALE_FORMULAS}")
        k = self.blur_kernel_size
        if not (1 <= k <= MAX_BLUR_KERNEL and k % 2 == 1):
            raise ConfigError(f"blur_kernel_size={k} must be odd and in [1, {MAX_BLUR_KERNEL}] (the kernels hold "
                              f"{MAX_BLUR_KERNEL} taps)")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi <= MAX_BLUR_SIGMA:
            raise ConfigError(f"blur_sigma={self.blur_sigma} must be an ordered pair in (0, {MAX_BLUR_SIGMA}]")
        if not 0.0 <= self.solarize_threshold <= 256.0:
            raise ConfigError(f"solarize_threshold={self.solarize_threshold} must lie in [0, 256]")
        n = self.ra_num_ops + len(self.jitter_components) + len(self.extra_ops)
        if self.extra_ops and n > MAX_RA_OPS:
            raise ConfigError(f"ra_num_ops={self.ra_num_ops}, {len(self.jitter_components)} colour jitter "
                              f"adjustments and {'/'.join(self.extra_ops)} apply {n} ops per view; the kernels hold "
                              f"at most {MAX_RA_OPS}")

    @property
    def extra_ops(self) -> tuple[str, ...]:
        """The version-4 ops this policy draws after the colour jitter, in replay order."""
        on = (("grayscale", self.grayscale_prob), ("blur", self.blur_prob), ("solarize", self.solarize_prob))
        return tuple(name for name, p in on if p > 0)

    @property
    def uses_v4_ops(self) -> bool:
        """Whether the policy needs a version-4 reader: version-4 fields, or timm's 3-Augment ops in ra_config."""
        if self.extra_ops:
            return True
        return self.ra_family in FAM.TIMM_FAMILIES and bool(V4_TIMM_OPS & set(self.ra_ops()))

    def _validate_v4_partner(self) -> None:
        if self.mix_partner not in MIX_PARTNERS:
            raise ConfigError(f"mix_partner={self.mix_partner!r} must be one of {MIX_PARTNERS}")
        if self.mix_partner == "inline":
            if not self.mixing:
                raise ConfigError("mix_partner='inline' needs a mixing policy (MixUp or CutMix)")
            if self.crop_mode != "resized" or self.interpolation == "random" or self.ra_random_interpolation \
                    or self.jittering or self.extra_ops or self.erase_value == "random":
                raise ConfigError("mix_partner='inline' stores crop, flip, RandAugment and erasing per partner; "
                                  "it takes a resized crop with one interpolation, no colour jitter, grayscale, blur "
                                  "or solarize, and constant erasing")

    def _validate_v3(self) -> None:
        for name in ("jitter_brightness", "jitter_contrast", "jitter_saturation"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= MAX_JITTER_FACTOR:
                raise ConfigError(f"{name}={getattr(self, name)} must be an ordered pair of factors in "
                                  f"[0, {MAX_JITTER_FACTOR:g}] ((1, 1) turns it off)")
        lo, hi = self.jitter_hue
        if not -0.5 <= lo <= hi <= 0.5:
            raise ConfigError(f"jitter_hue={self.jitter_hue} must be an ordered pair in [-0.5, 0.5] ((0, 0) turns "
                              "it off)")
        if not 0.0 <= self.jitter_prob <= 1.0:
            raise ConfigError(f"jitter_prob={self.jitter_prob} must lie in [0, 1]")
        n = len(self.jitter_components)
        if n and self.ra_num_ops + n > MAX_RA_OPS:
            raise ConfigError(f"ra_num_ops={self.ra_num_ops} with {n} colour jitter adjustments applies "
                              f"{self.ra_num_ops + n} ops per view; the kernels hold at most {MAX_RA_OPS}")

    @property
    def jitter_components(self) -> tuple[int, ...]:
        """The ColorJitter adjustments this policy draws (indices into :data:`JITTER_COMPONENTS`); empty
        when it has no colour jitter. An adjustment whose range is the identity is off, as in torchvision."""
        if self.jitter_prob <= 0:
            return ()
        ranges = (self.jitter_brightness, self.jitter_contrast, self.jitter_saturation)
        on = [i for i, r in enumerate(ranges) if r != (1.0, 1.0)]
        if self.jitter_hue != (0.0, 0.0):
            on.append(3)
        return tuple(on)

    @property
    def jittering(self) -> bool:
        return bool(self.jitter_components)

    def _validate_v2(self) -> None:
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"crop_mode={self.crop_mode!r} must be one of {CROP_MODES}")
        if self.interpolation not in CROP_INTERPOLATIONS:
            raise ConfigError(f"interpolation={self.interpolation!r} must be one of {CROP_INTERPOLATIONS}")
        if self.crop_mode == "padded":
            if self.interpolation != "bilinear":
                raise ConfigError(f"interpolation={self.interpolation!r} has no effect with crop_mode='padded' "
                                  "(the crop is not resized); leave it at 'bilinear'")
            if not 0 <= self.crop_padding <= MAX_OUTPUT_SIZE:
                raise ConfigError(f"crop_padding={self.crop_padding} must lie in [0, {MAX_OUTPUT_SIZE}]")
        elif self.crop_padding != 0:
            raise ConfigError(f"crop_padding={self.crop_padding} needs crop_mode='padded' (RandomCrop); "
                              "RandomResizedCrop takes no padding")
        _check_uint8_triple("pad_fill", self.pad_fill)
        if self.ra_family not in FAM.FAMILIES:
            raise ConfigError(f"ra_family={self.ra_family!r} must be one of {FAM.FAMILIES}")
        if not 0.0 <= self.ra_prob <= 1.0:
            raise ConfigError(f"ra_prob={self.ra_prob} must lie in [0, 1]")
        if self.ra_family in FAM.TORCHVISION_FAMILIES:
            if self.ra_interpolation not in TV_RA_INTERPOLATIONS:
                raise ConfigError(f"ra_interpolation={self.ra_interpolation!r} must be one of {TV_RA_INTERPOLATIONS} "
                                  "(torchvision's tensor affine supports these)")
            if self.ra_config:
                raise ConfigError(f"ra_config is only used by the timm families, not ra_family={self.ra_family!r}")
        else:
            if self.ra_interpolation != "nearest":
                raise ConfigError(f"ra_interpolation={self.ra_interpolation!r}: the timm families take their "
                                  "interpolation from ra_config['interpolation']")
            if not self.ra_config:
                raise ConfigError(f"ra_family={self.ra_family!r} needs ra_config (the resolved timm configuration; "
                                  "build it with Policy.from_timm)")
            key = "ops" if self.ra_family == "timm" else "policy"
            if key not in FAM.parse_config(self.ra_config):
                raise ConfigError(f"ra_config of ra_family={self.ra_family!r} needs '{key}' "
                                  f"({'RandAugment ops' if key == 'ops' else 'AutoAugment sub-policies'})")
        slots = FAM.family_slots(self.ra_family, self.ra_config)
        if slots is not None and self.ra_num_ops not in (0, slots):
            raise ConfigError(f"ra_num_ops={self.ra_num_ops} must be {slots} for ra_family={self.ra_family!r} "
                              f"(or 0 to disable it)")
        if slots is not None and slots > MAX_RA_OPS:
            raise ConfigError(f"ra_family={self.ra_family!r} applies {slots} ops per view; the kernels hold at most "
                              f"{MAX_RA_OPS}")
        if self.mix_mode not in MIX_MODES:
            raise ConfigError(f"mix_mode={self.mix_mode!r} must be one of {MIX_MODES}")
        for name in ("mixup_prob", "cutmix_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if self.mixup_lam_div < 1.0:
            raise ConfigError(f"mixup_lam_div={self.mixup_lam_div} must be >= 1")
        if self.mix_mode == "switch":
            for name in ("mixup_prob", "cutmix_prob", "mixup_lam_div"):
                if getattr(self, name) != V2_DEFAULTS[name]:
                    raise ConfigError(f"{name}={getattr(self, name)} needs mix_mode='sequential'; "
                                      "mix_mode='switch' uses mix_prob and switch_prob")
        elif self.mix_prob != 1.0:
            raise ConfigError(f"mix_prob={self.mix_prob} applies to mix_mode='switch'; with mix_mode='sequential' "
                              "set mixup_prob and cutmix_prob")

    @property
    def mixing(self) -> bool:
        if self.mix_mode == "sequential":
            return (self.mixup_alpha > 0 and self.mixup_prob > 0) or (self.cutmix_alpha > 0 and self.cutmix_prob > 0)
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def ra_ops(self) -> tuple[str, ...]:
        """The op names a stored ``ra_op`` id indexes, for this policy's family (index 0 is Identity)."""
        return FAM.family_ops(self.ra_family, self.ra_config)

    def ra_spec(self) -> dict[str, Any]:
        """The resolved timm configuration (a copy), or {} for the torchvision families."""
        return json.loads(self.ra_config) if self.ra_config else {}

    @property
    def ra_signed_magnitudes(self) -> bool:
        """Whether ``ra_mag`` holds int16 hundredths of a level (timm families) rather than int8 bins."""
        return self.ra_family in FAM.TIMM_FAMILIES

    @property
    def ra_random_interpolation(self) -> bool:
        return self.ra_family in FAM.TIMM_FAMILIES and FAM.parse_config(self.ra_config)["interpolation"] == "random"

    # ------------------------------------------------------------- serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields; fields added after version 1 only where they differ from their defaults."""
        out: dict[str, Any] = {}
        for k, v in dataclasses.asdict(self).items():
            if any(k in d and v == d[k] for d in (V2_DEFAULTS, V3_DEFAULTS, V4_DEFAULTS, V4_PARTNER_DEFAULTS,
                                                   V5_DEFAULTS)):
                continue
            if k in ("ra_config", "augmix_config"):
                v = json.loads(v)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

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
    def parse(cls, policy: "Policy | str | dict") -> "Policy":
        """A :class:`Policy` from itself, a preset name, a JSON object (text or file), or a dict.

        A JSON object may name a ``"preset"`` and override some of its fields. Every problem
        is a :class:`~reinforced_data.errors.ConfigError` that names the text or file.
        """
        if isinstance(policy, cls):
            return policy
        if isinstance(policy, str):
            text = policy.strip()
            if text in PRESETS:
                return cls.preset(text)
            source = "policy"
            if not text.startswith("{"):
                if not os.path.isfile(text):
                    raise ConfigError(f"policy {text!r} is neither a preset ({', '.join(sorted(PRESETS))}), "
                                      "a JSON object, nor a JSON file")
                source = f"policy file {text}"
                try:
                    with open(text, encoding="utf-8") as f:
                        text = f.read()
                except UnicodeDecodeError:
                    raise ConfigError(f"{source} is not a text (JSON) file; give a preset name, a JSON object or a "
                                      "JSON file") from None
            try:
                policy = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{source} is not valid JSON ({e})") from None
        if not isinstance(policy, dict):
            raise ConfigError(f"a policy must be a preset name or a JSON object, not {type(policy).__name__}")
        d = dict(policy)
        preset = d.pop("preset", None)
        return cls.preset(preset, **d) if preset else cls.from_dict(d)

    @classmethod
    def from_timm(cls, *args: Any, **kwargs: Any) -> "Policy":
        """The policy of timm's ``create_transform(is_training=True, ...)`` + ``Mixup``; the arguments
        are :func:`reinforced_data.recipes.timm_fields`' (imports timm when called)."""
        from .recipes import timm_fields

        return cls(**timm_fields(*args, **kwargs))

    @classmethod
    def from_torchvision(cls, transforms: Any, **overrides: Any) -> "Policy":
        """The policy of a torchvision (v1 or v2) Compose; see :func:`reinforced_data.recipes.torchvision_fields`.
        ``overrides`` set Policy fields the transforms do not say (e.g. mixing); unknown names are refused."""
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"from_torchvision got unknown overrides {', '.join(unknown)}; pass Policy fields "
                              "(see help(Policy))")
        from .recipes import torchvision_fields

        return cls(**torchvision_fields(transforms, **overrides))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Policy":
        """A named configuration from :data:`PRESETS`, with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown policy preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    # ------------------------------------------------------------ parameters
    def param_dtype(self) -> np.dtype:
        """The structured dtype of one view's parameters under this policy."""
        crop = np.int16 if self.crop_mode == "padded" else np.uint16
        fields: list[tuple] = [("crop", crop, (4,)), ("flip", np.uint8)]
        if self.crop_mode == "resized" and self.interpolation == "random":
            fields += [("crop_filter", np.uint8)]
        if self.ra_num_ops:
            n = self.ra_num_ops
            mag = np.int16 if self.ra_signed_magnitudes else np.int8
            fields += [("ra_op", np.uint8, (n,)), ("ra_mag", mag, (n,))]
            if self.ra_random_interpolation:
                fields += [("ra_interp", np.uint8, (n,))]
        if self.augmix:  # width x slots ops, chain by chain; then the chains' weights and the crop's
            n = self.augmix_width * self.augmix_slots
            mag = np.int16 if self.augmix == "timm" else np.int8
            fields += [("am_op", np.uint8, (n,)), ("am_mag", mag, (n,))]
            if self.augmix_random_interpolation:
                fields += [("am_interp", np.uint8, (n,))]
            fields += [("am_weight", np.uint16, (self.augmix_width + 1,))]
        if self.jittering:
            fields += [("jitter_order", np.uint8), ("jitter_factor", np.uint32, (3,))]
            if 3 in self.jitter_components:
                fields += [("jitter_hue", np.int16)]
        if self.grayscale_prob > 0:
            fields += [("gray", np.uint8)]
        if self.blur_prob > 0:
            fields += [("blur_sigma", np.uint16)]
        if self.solarize_prob > 0:
            fields += [("solarize", np.uint8)]
        if self.erase_prob > 0:
            fields += [("erase", np.uint16, (4,))]
            if self.erase_value == "random":
                fields += [("erase_seed", np.uint16)]
        if self.mixing:
            fields += [("mix_mode", np.uint8), ("mix_lam", np.uint8), ("mix_box", np.uint16, (4,))]
        if self.mix_partner == "inline":  # the partner's own per-image parameters, same types and shapes
            own = dict((f[0], f[1:]) for f in fields)
            fields += [(f"partner_{name}",) + own[name] for name in PARTNER_FIELDS if name in own]
        return np.dtype(fields)

    def partner_params(self, params: np.ndarray) -> np.ndarray:
        """For ``mix_partner='inline'`` records: the partner's parameters as records of this policy's dtype
        (the per-image fields taken from the ``partner_*`` fields; mixing fields kept, unused by the partner)."""
        if self.mix_partner != "inline":
            raise ConfigError("partner_params needs a mix_partner='inline' policy; other partners are stored views")
        params = np.atleast_1d(params)
        out = params.copy()
        for name in PARTNER_FIELDS:
            if name in (params.dtype.names or ()):
                out[name] = params[f"partner_{name}"]
        return out

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
        if self.mix_partner == "inline":
            raise ConfigError("mix_partner='inline' records are imported (reinforced-data import-mldr), not sampled; "
                              "generate with mix_partner='stored'")
        out = np.zeros(k, dtype=self.param_dtype())
        oh, ow = self.output_size
        if self.crop_mode == "padded":
            out["crop"] = S.padded_crop(rng, k, height, width, oh, ow, self.crop_padding)
        else:
            out["crop"] = S.resized_crop(rng, k, height, width, self.crop_scale, self.crop_ratio)
        out["flip"] = rng.random(k) < self.flip_prob
        if "crop_filter" in out.dtype.names:  # timm's random.choice((BILINEAR, BICUBIC))
            out["crop_filter"] = rng.integers(0, 2, size=k)
        if self.ra_num_ops:
            S.randaugment(rng, k, self, out)
        if self.augmix:
            S.augmix(rng, k, self, out)
        if self.jittering:
            S.jitter(rng, k, self, out)
        if self.extra_ops:
            S.extra_ops(rng, k, self, out)
        if self.erase_prob > 0:
            apply = rng.random(k) < self.erase_prob
            box = S.erase_box(rng, k, oh, ow, self.erase_scale, self.erase_ratio)
            box[~apply] = 0
            out["erase"] = box
            if self.erase_value == "random":
                out["erase_seed"] = rng.integers(0, 1 << 16, size=k)
        if self.mixing:
            mode, lam, box = S.mix(rng, k, oh, ow, self)
            out["mix_mode"] = mode
            out["mix_lam"] = lam
            out["mix_box"] = box
        return out


# Named configurations. "rrc" and "rrc_ra_re" are the paper's ImageNet+ variants;
# "torchvision" and "timm" (below) mirror those libraries' ImageNet training defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "rrc": dict(),
    "rrc_ra_re": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25),
    "rrc_ra_re_mix": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25, mixup_alpha=0.2,
                          cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5),
    "torchvision": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.5),
    # rrc_ra_re with per-pixel noise erasing (release 1 called it "timm")
    "rrc_ra_re_noise": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25, erase_value="random"),
}

CIFAR100_MEAN = (0.507075159237, 0.4865488733149, 0.440917843367)  # apple/ml-dr's CIFAR-100 configs
CIFAR100_STD = (0.267334285879, 0.2564384629170, 0.276150471325)
# timm's RandAugment ops with inc1 (auto_augment._RAND_INCREASING_TRANSFORMS), as timm resolves
# "rand-m9-mstd0.5-inc1" for a 224 px input (tests/test_recipes.py checks it against timm).
_TIMM_INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)
_TIMM_M9_MSTD05_INC1 = {
    "ops": [[name, 0.5, 9.0] for name in _TIMM_INCREASING_OPS], "num_layers": 2, "weights": None,
    "magnitude_noise": "gauss", "magnitude_std": 0.5, "magnitude_max": None, "translate_const": 100.0,
    "translate_pct": 0.45, "interpolation": "random", "source": "rand-m9-mstd0.5-inc1",
}
# timm's AutoAugment policy "3a" (auto_augment.auto_augment_policy_3a) as timm resolves it for a 224 px input
_TIMM_3A = {
    "policy": [[["Solarize", 1.0, 5.0]], [["Desaturate", 1.0, 10.0]], [["GaussianBlurRand", 1.0, 10.0]]],
    "magnitude_noise": "none", "magnitude_std": 0.0, "magnitude_max": None, "translate_const": 100.0,
    "translate_pct": 0.45, "interpolation": "bicubic", "source": "3a",
}
# timm's "augmix-m5-w4-d2" as timm resolves it for a 224 px input (create_transform sets translate_pct 0.3;
# magnitude_std defaults to inf: levels uniform in [0, 5]); tests/test_augmix.py checks it against timm
_TIMM_AUGMIX_M5_W4_D2 = {
    "ops": [[name, 1.0, 5.0] for name in FAM.TIMM_AUGMIX_OPS], "magnitude_noise": "uniform", "magnitude_std": 0.0,
    "magnitude_max": None, "translate_const": 100.0, "translate_pct": 0.3, "interpolation": "random",
    "source": "augmix-m5-w4-d2",
}
PRESETS.update({
    # The paper's (Faghri et al.) ImageNet+ configurations: RRC + flip + torchvision RandAugment(2, 9)
    # + RandomErasing(0.25); with mixing, apple/ml-dr's MixUp(α=1, p=0.5, λ/2) then CutMix(α=1, p=0.5).
    "paper_imagenet": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25),
    "paper_imagenet_mix": dict(ra_num_ops=2, ra_magnitude=9, erase_prob=0.25, mix_mode="sequential",
                               mixup_alpha=1.0, mixup_prob=0.5, mixup_lam_div=2.0, cutmix_alpha=1.0,
                               cutmix_prob=0.5),
    # CIFAR: RandomCrop(32, padding=4) + flip, with and without RandAugment(2, 9) + RandomErasing(0.25).
    "paper_cifar": dict(output_size=(32, 32), crop_mode="padded", crop_padding=4, mean=CIFAR100_MEAN,
                        std=CIFAR100_STD),
    "paper_cifar_ra_re": dict(output_size=(32, 32), crop_mode="padded", crop_padding=4, mean=CIFAR100_MEAN,
                              std=CIFAR100_STD, ra_num_ops=2, ra_magnitude=9, erase_prob=0.25),
    # timm's train recipe augmentation: RRC (random bilinear/bicubic) + flip + rand-m9-mstd0.5-inc1
    # (fill = timm's img_mean) + RandomErasing(0.25, per-pixel); no mixing.
    "timm_rand_m9_mstd05_inc1": dict(interpolation="random", ra_family="timm", ra_num_ops=2,
                                     ra_config=_TIMM_M9_MSTD05_INC1, fill=(124, 116, 104), erase_prob=0.25,
                                     erase_scale=(0.02, 1 / 3), erase_ratio=(0.3, 1 / 0.3), erase_value="random"),
    # timm train.py's own defaults (no --aa, --color-jitter 0.4, --reprob 0, random interpolation):
    # RRC + flip + torchvision's ColorJitter(0.4, 0.4, 0.4), as timm builds it.
    "timm_train_default": dict(interpolation="random", jitter_brightness=(0.6, 1.4), jitter_contrast=(0.6, 1.4),
                               jitter_saturation=(0.6, 1.4)),
    # DeiT III's 3-Augment as timm runs it (train.py --aa 3a --color-jitter 0.3 --reprob 0, bicubic): RRC + flip,
    # one of Solarize(128) / Desaturate (PIL's grey) / GaussianBlurRand (radius U(0.1, 2)) per view, then
    # ColorJitter(0.3, 0.3, 0.3) (tests/test_three_augment.py checks it against Policy.from_timm).
    "deit3": dict(interpolation="bicubic", ra_family="timm_autoaugment", ra_num_ops=1, fill=(124, 116, 104),
                  ra_config=_TIMM_3A, jitter_brightness=(0.7, 1.3), jitter_contrast=(0.7, 1.3),
                  jitter_saturation=(0.7, 1.3)),
    # timm's AugMix recipe (train.py --aa augmix-m5-w4-d2, random interpolation, --reprob 0.25 --remode pixel):
    # RRC + flip + 4 chains of 2 ops (format version 5) + RandomErasing(0.25, per-pixel).
    "augmix": dict(interpolation="random", augmix="timm", augmix_config=_TIMM_AUGMIX_M5_W4_D2, augmix_width=4,
                   augmix_depth=2, fill=(124, 116, 104), erase_prob=0.25, erase_scale=(0.02, 1 / 3),
                   erase_ratio=(0.3, 1 / 0.3), erase_value="random"),
    # torchvision's TrivialAugmentWide and AutoAugment(IMAGENET) after RRC + flip.
    "trivialaugment": dict(ra_family="trivialaugment", ra_num_ops=1),
    "autoaugment": dict(ra_family="autoaugment", ra_num_ops=2),
})
# "timm" is timm's recipe itself (release 1's "timm" preset was torchvision's RandAugment at a third
# of timm's strength; files keep their whole policy, so those files replay as they were written).
PRESETS["timm"] = PRESETS["timm_rand_m9_mstd05_inc1"]


# How each field is typed: "int", "float", ("int", n) / ("float", n) for n-tuples;
# erase_value also takes the string "random".
_FIELD_KINDS: dict[str, Any] = {
    "output_size": ("int", 2), "crop_scale": ("float", 2), "crop_ratio": ("float", 2), "flip_prob": "float",
    "ra_num_ops": "int", "ra_magnitude": "int", "ra_num_magnitude_bins": "int", "fill": ("int", 3),
    "erase_prob": "float", "erase_scale": ("float", 2), "erase_ratio": ("float", 2),
    "erase_value": ("int", 3), "mean": ("float", 3), "std": ("float", 3), "mixup_alpha": "float",
    "cutmix_alpha": "float", "mix_prob": "float", "switch_prob": "float",
    "crop_mode": "str", "interpolation": "str", "crop_padding": "int", "pad_fill": ("int", 3),
    "ra_family": "str", "ra_interpolation": "str", "ra_prob": "float", "ra_config": "config",
    "mix_mode": "str", "mixup_prob": "float", "cutmix_prob": "float", "mixup_lam_div": "float",
    "jitter_brightness": ("float", 2), "jitter_contrast": ("float", 2), "jitter_saturation": ("float", 2),
    "jitter_hue": ("float", 2), "jitter_prob": "float",
    "grayscale_prob": "float", "grayscale_formula": "str", "blur_prob": "float", "blur_kernel_size": "int",
    "blur_sigma": ("float", 2), "solarize_prob": "float", "solarize_threshold": "float",
    "mix_partner": "str",
    "augmix": "str", "augmix_width": "int", "augmix_depth": "int", "augmix_alpha": "float", "augmix_severity": "int",
    "augmix_all_ops": "bool", "augmix_interpolation": "str", "augmix_blended": "bool",
    "augmix_config": "augmix_config",
}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    if name == "erase_value" and isinstance(value, str):
        return value  # validate() checks it is "random"
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ConfigError(f"{name}={value!r} must be true or false")
    if kind in ("config", "augmix_config"):  # a resolved timm configuration: canonical JSON text ("" = none)
        if value is None or value == "" or value == {}:
            return ""
        try:
            cfg = json.loads(value) if isinstance(value, str) else value
        except ValueError as e:
            raise ConfigError(f"{name} is not valid JSON: {e}") from None
        if kind == "augmix_config":  # timm's resolved AugMix ops
            return FAM.canonical_config(cfg, "timm_augmix")
        # which timm family it belongs to is checked against ra_family in validate()
        family = "timm_autoaugment" if isinstance(cfg, dict) and "policy" in cfg else "timm"
        return FAM.canonical_config(cfg, family)
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
