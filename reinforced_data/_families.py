"""Augmentation families: their op lists, their samplers' tables, and level -> kernel parameters.

A family is the library semantics a policy's RandAugment-like stage follows:

* ``"torchvision"``: torchvision's ``RandAugment`` (op bins of ``_AUGMENTATION_SPACE``);
* ``"trivialaugment"``: torchvision's ``TrivialAugmentWide`` (one op, a uniform bin of the wide table);
* ``"autoaugment"``: torchvision's ``AutoAugment(AutoAugmentPolicy.IMAGENET)``;
* ``"timm"``: timm's ``RandAugment`` (``rand_augment_transform``), configuration resolved by timm itself;
* ``"timm_autoaugment"``: timm's ``AutoAugment`` policies (``auto_augment_transform``).

A stored op id indexes the family's op list (:func:`family_ops`); index 0 is always
``Identity`` (an op that was drawn but not applied is stored as Identity). The kernels know
the ops of :data:`KERNEL_OPS`; this module maps a family op and its stored magnitude to a
kernel op id and six integer parameters, following each library's own formulas.

Nothing here imports torch or timm at import time (``policy`` imports this module).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

from .errors import ConfigError

#: The ops of the kernels, by kernel op id (csrc/replay_args.h's enum).
KERNEL_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
    "Invert", "SolarizeAdd", "Hue", "Grayscale", "GaussianBlur",
)
KERNEL_ID = {name: i for i, name in enumerate(KERNEL_OPS)}

FAMILIES = ("torchvision", "trivialaugment", "autoaugment", "timm", "timm_autoaugment")
TORCHVISION_FAMILIES = ("torchvision", "trivialaugment", "autoaugment")
TIMM_FAMILIES = ("timm", "timm_autoaugment")
#: INTERP slot values of the kernel rows.
#: the ImageNet normalisation both libraries default to (and every preset but the CIFAR ones uses)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERP_CODES = {"nearest": 0, "bilinear": 1, "bicubic": 2}

#: torchvision's RandAugment / TrivialAugmentWide op order (their ``_AUGMENTATION_SPACE`` keys).
TORCHVISION_OPS: tuple[str, ...] = KERNEL_OPS[:14]
#: The ops of torchvision's AutoAugment IMAGENET policy, after Identity (not applied).
AUTOAUGMENT_OPS: tuple[str, ...] = TORCHVISION_OPS + ("Invert",)
TV_SIGNED = frozenset(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                       "Contrast", "Sharpness"))
TV_UNPARAMETERISED = frozenset(("Identity", "AutoContrast", "Equalize", "Invert"))
GEOMETRIC_KERNEL_OPS = frozenset(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"))

#: torchvision's AutoAugmentPolicy.IMAGENET: 25 sub-policies of (op, probability, magnitude bin of 10).
AUTOAUGMENT_IMAGENET: tuple[tuple[tuple[str, float, int | None], ...], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)
AUTOAUGMENT_BINS = 10  # torchvision's AutoAugment reads its tables with 10 bins

# ------------------------------------------------------------------ AugMix (format version 5)
#: torchvision's AugMix ops (its ``_augmentation_space`` keys, in order; ``all_ops=False`` draws only the
#: first :data:`AUGMIX_BASIC_OPS`), after Identity (a chain slot beyond the chain's depth).
AUGMIX_TV_OPS: tuple[str, ...] = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Posterize",
                                  "Solarize", "AutoContrast", "Equalize", "Brightness", "Color", "Contrast",
                                  "Sharpness")
AUGMIX_BASIC_OPS = 9
AUGMIX_BINS = 10  # torchvision's AugMix._PARAMETER_MAX: its tables have 10 bins, a severity s draws bins 0..s-1
#: timm's _AUGMIX_TRANSFORMS (auto_augment.augmix_ops), each applied with probability 1.
TIMM_AUGMIX_OPS: tuple[str, ...] = (
    "AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)
MAX_AUGMIX_CHAINS = 8  # chains per view the mixing kernel takes
MAX_AUGMIX_DEPTH = 4  # a chain is one kernel row: at most policy.MAX_RA_OPS ops
AUGMIX_RANDOM_DEPTH = 3  # a random depth (-1) draws 1..3 per chain, in both libraries
AUGMIX_BITS = 15  # stored AugMix weights are Q15 (uint16): 1.0 = 2^15
AUGMIX_ONE = 1 << AUGMIX_BITS
AUGMIX_FAMILIES = ("torchvision", "timm")

# ------------------------------------------------------------------ timm
_LEVEL_DENOM = 10.0  # timm's auto_augment._LEVEL_DENOM
#: timm op names this package replays (timm.data.auto_augment.NAME_TO_OP's keys; the last three, of
#: the 3-Augment, need format version 4).
TIMM_OPS = frozenset((
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
    "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast", "ContrastIncreasing",
    "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateX",
    "TranslateY", "TranslateXRel", "TranslateYRel", "Desaturate", "GaussianBlur", "GaussianBlurRand",
))
#: timm's GaussianBlurRand draws its radius uniformly in [0.1, 2 * level / 10] (the level, clamped to
#: [0, 10], only bounds the draw): its stored magnitude is that radius in thousandths of a pixel.
BLUR_RAND_SCALE = 1000
BLUR_RAND_MAX = 2000
#: timm ops whose level function calls ``_randomly_negate`` (the stored magnitude carries the sign).
TIMM_SIGNED = frozenset(("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel",
                         "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"))
TIMM_UNPARAMETERISED = frozenset(("Identity", "AutoContrast", "Equalize", "Invert"))
#: timm ops that resample (``_check_args_tf`` draws their interpolation).
TIMM_GEOMETRIC = frozenset(("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel"))
TIMM_INTERPOLATIONS = ("bilinear", "bicubic", "random")
MAG_SCALE = 100  # timm magnitudes are stored in hundredths of a level (int16)


def canonical_config(config: Any, family: str) -> str:
    """Check a resolved timm configuration (dict or JSON text) and return its canonical JSON."""
    what = "augmix_config" if family == "timm_augmix" else "ra_config"
    if isinstance(config, str):
        try:
            config = json.loads(config) if config else {}
        except ValueError as e:
            raise ConfigError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{what}={config!r} must be a mapping (the resolved timm configuration)")
    cfg = dict(config)
    known = {"ops", "num_layers", "weights", "policy", "magnitude_std", "magnitude_noise", "magnitude_max",
             "translate_const", "translate_pct", "interpolation", "source"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"{what} has unknown key(s) {unknown}; known keys: {sorted(known)}")

    def op_entry(e: Any, where: str) -> list:
        if not (isinstance(e, (list, tuple)) and len(e) == 3):
            raise ConfigError(f"{what} {where} must be [name, probability, magnitude], got {e!r}")
        name, prob, mag = e
        if name not in TIMM_OPS:
            raise ConfigError(f"{what} {where}: timm op {name!r} cannot be replayed; supported ops: {sorted(TIMM_OPS)}")
        prob, mag = _number(prob, f"{what} {where} probability"), _number(mag, f"{what} {where} magnitude")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"{what} {where}: probability {prob} must lie in [0, 1]")
        if mag < 0:
            raise ConfigError(f"{what} {where}: magnitude {mag} must be >= 0")
        return [name, prob, mag]

    out: dict[str, Any] = {}
    if family == "timm_augmix":  # timm's AugMix ops: the list only (width, depth, alpha are Policy fields)
        ops = cfg.get("ops")
        if not isinstance(ops, (list, tuple)) or not ops:
            raise ConfigError("augmix_config['ops'] must be a non-empty list of [name, probability, magnitude]")
        out["ops"] = [op_entry(e, f"ops[{i}]") for i, e in enumerate(ops)]
        names = [e[0] for e in out["ops"]]
        if len(set(names)) != len(names):
            raise ConfigError(f"augmix_config['ops'] names an op twice: {names}")
        if any(e[1] != 1.0 for e in out["ops"]):
            raise ConfigError("augmix_config['ops']: timm's AugMix applies every drawn op (probability 1.0)")
        if set(names) & {"GaussianBlur", "GaussianBlurRand", "Desaturate"}:
            raise ConfigError(f"augmix_config['ops'] {names}: the 3-Augment ops cannot be AugMix chain ops")
        unknown = sorted(set(cfg) - known - {"ops"}) or sorted({"num_layers", "weights", "policy"} & set(cfg))
        if unknown:
            raise ConfigError(f"augmix_config has key(s) {unknown} that AugMix does not take")
    elif family == "timm":
        ops = cfg.get("ops")
        if not isinstance(ops, (list, tuple)) or not ops:
            raise ConfigError(f"{what}['ops'] must be a non-empty list of [name, probability, magnitude]")
        out["ops"] = [op_entry(e, f"ops[{i}]") for i, e in enumerate(ops)]
        names = [e[0] for e in out["ops"]]
        if len(set(names)) != len(names):
            raise ConfigError(f"{what}['ops'] names an op twice: {names}")
        n = cfg.get("num_layers", 2)
        if not (isinstance(n, int) and not isinstance(n, bool)) or n < 0:
            raise ConfigError(f"{what}['num_layers']={n!r} must be a non-negative integer")
        out["num_layers"] = n
        w = cfg.get("weights")
        if w is not None:
            if not isinstance(w, (list, tuple)) or len(w) != len(names):
                raise ConfigError(f"{what}['weights'] must hold one weight per op ({len(names)})")
            w = [_number(v, f"{what}['weights']") for v in w]
            if min(w) < 0 or sum(w) <= 0:
                raise ConfigError(f"{what}['weights']={w} must be >= 0 with a positive sum")
            total = sum(w)
            w = [v / total for v in w]
            if n > sum(v > 0 for v in w):
                raise ConfigError(f"{what}: num_layers={n} ops without replacement but only "
                                  f"{sum(v > 0 for v in w)} ops have a positive weight")
        out["weights"] = w
    elif family == "timm_autoaugment":
        pol = cfg.get("policy")
        if not isinstance(pol, (list, tuple)) or not pol:
            raise ConfigError(f"{what}['policy'] must be a non-empty list of sub-policies")
        out["policy"] = []
        for i, sp in enumerate(pol):
            if not isinstance(sp, (list, tuple)) or not sp:
                raise ConfigError(f"{what}['policy'][{i}] must be a non-empty list of ops")
            out["policy"].append([op_entry(e, f"policy[{i}][{j}]") for j, e in enumerate(sp)])
    else:  # pragma: no cover - callers pass a timm family
        raise ConfigError(f"ra_config is only used by the timm families, not {family!r}")
    noise = cfg.get("magnitude_noise")
    std = _number(cfg.get("magnitude_std", 0.0), f"{what}['magnitude_std']") if cfg.get("magnitude_std") is not None else 0.0
    if noise is None:
        noise = "gauss" if std > 0 else "none"
    if noise not in ("none", "gauss", "uniform"):
        raise ConfigError(f"{what}['magnitude_noise']={noise!r} must be 'none', 'gauss' or 'uniform'")
    if noise == "gauss" and not (std > 0 and math.isfinite(std)):
        raise ConfigError(f"{what}['magnitude_std']={std} must be a positive finite number for gauss noise")
    out["magnitude_noise"] = noise
    out["magnitude_std"] = std if noise == "gauss" else 0.0
    mmax = cfg.get("magnitude_max")
    if mmax is not None:
        mmax = _number(mmax, f"{what}['magnitude_max']")
        if not 0 < mmax <= 300:
            raise ConfigError(f"{what}['magnitude_max']={mmax} must lie in (0, 300] (int16 hundredths of a level)")
    out["magnitude_max"] = mmax
    out["translate_const"] = _number(cfg.get("translate_const", 250), f"{what}['translate_const']")
    out["translate_pct"] = _number(cfg.get("translate_pct", 0.45), f"{what}['translate_pct']")
    interp = cfg.get("interpolation", "random")
    if interp not in TIMM_INTERPOLATIONS:
        raise ConfigError(f"{what}['interpolation']={interp!r} must be one of {TIMM_INTERPOLATIONS}")
    out["interpolation"] = interp
    if cfg.get("source") is not None:
        out["source"] = str(cfg["source"])
    for k in ("translate_const", "translate_pct"):
        if not (math.isfinite(out[k]) and abs(out[k]) < 1e6):
            raise ConfigError(f"{what}['{k}']={out[k]} must be finite")
    return json.dumps(out, sort_keys=True)


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{what}={v!r} must be a number")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{what}={v} must be finite")
    return v


@lru_cache(maxsize=256)
def parse_config(text: str) -> dict:
    return json.loads(text) if text else {}


def timm_upper_bound(cfg: dict) -> float:
    """timm's clip of a level: ``magnitude_max or _LEVEL_DENOM``."""
    return cfg.get("magnitude_max") or _LEVEL_DENOM


def family_ops(family: str, config_text: str = "") -> tuple[str, ...]:
    """The op list a stored op id indexes (index 0 is Identity)."""
    if family in ("torchvision", "trivialaugment"):
        return TORCHVISION_OPS
    if family == "autoaugment":
        return AUTOAUGMENT_OPS
    cfg = parse_config(config_text)
    if family == "augmix":
        return AUGMIX_TV_OPS
    entries = cfg["ops"] if family in ("timm", "timm_augmix") else [e for sp in cfg["policy"] for e in sp]
    names: list[str] = ["Identity"]
    for e in entries:
        if e[0] not in names:
            names.append(e[0])
    return tuple(names)


def family_slots(family: str, config_text: str = "") -> int | None:
    """The number of op slots per view a family uses (None: ``ra_num_ops`` chooses)."""
    if family == "torchvision":
        return None
    if family == "trivialaugment":
        return 1
    if family == "autoaugment":
        return 2
    cfg = parse_config(config_text)
    if family == "timm":
        return int(cfg["num_layers"])
    return max(len(sp) for sp in cfg["policy"])


# ------------------------------------------------------------------ torchvision tables
def torchvision_magnitudes(family: str, op: str, num_bins: int, height: int, width: int):
    """The float32 magnitude table of ``op`` as torchvision (v2) reads it, or None for ops without one."""
    import torch

    lin = lambda hi: torch.linspace(0.0, hi, num_bins)  # noqa: E731
    if family == "augmix":  # torchvision's AugMix space (v1: Solarize's thresholds on the 0..255 scale)
        table = {
            "ShearX": lin(0.3), "ShearY": lin(0.3), "TranslateX": lin(width / 3.0), "TranslateY": lin(height / 3.0),
            "Rotate": lin(30.0), "Brightness": lin(0.9), "Color": lin(0.9), "Contrast": lin(0.9), "Sharpness": lin(0.9),
            "Posterize": (4 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()),
            "Solarize": torch.linspace(255.0, 0.0, num_bins),
        }.get(op)
    elif family == "trivialaugment":
        table = {
            "ShearX": lin(0.99), "ShearY": lin(0.99), "TranslateX": lin(32.0), "TranslateY": lin(32.0),
            "Rotate": lin(135.0), "Brightness": lin(0.99), "Color": lin(0.99), "Contrast": lin(0.99),
            "Sharpness": lin(0.99),
            "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 6))).round().int(),
            "Solarize": torch.linspace(1.0, 0.0, num_bins),
        }.get(op)
    else:  # RandAugment's space; AutoAugment reads the same space with 10 bins
        table = {
            "ShearX": lin(0.3), "ShearY": lin(0.3),
            "TranslateX": lin(150.0 / 331.0 * width), "TranslateY": lin(150.0 / 331.0 * height),
            "Rotate": lin(30.0),
            "Brightness": lin(0.9), "Color": lin(0.9), "Contrast": lin(0.9), "Sharpness": lin(0.9),
            "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().int(),
            "Solarize": torch.linspace(1.0, 0.0, num_bins),
        }.get(op)
    return None if table is None else table.numpy()


# ------------------------------------------------------------------ timm: level -> PIL op arguments
def timm_op_args(name: str, stored: int, cfg: dict, height: int, width: int) -> tuple[str, Any]:
    """timm's ``LEVEL_TO_ARG`` and op function for a stored magnitude (hundredths of a level, signed).

    Returns (kernel op name, argument): the PIL affine coefficients (a, b, c, d, e, f) for
    geometric ops, an enhance factor, posterize bits, a solarize threshold, (threshold, add)
    for SolarizeAdd, or None for ops without an argument.
    """
    level = abs(stored) / MAG_SCALE
    neg = stored < 0
    sign = -1.0 if neg else 1.0
    if name in ("AutoContrast", "Equalize", "Invert", "Identity"):
        return name, None
    if name == "Rotate":
        return "Rotate", _pil_rotate(sign * (level / _LEVEL_DENOM) * 30.0, height, width)
    if name in ("ShearX", "ShearY"):
        f = sign * (level / _LEVEL_DENOM) * 0.3
        return name, (1.0, f, 0.0, 0.0, 1.0, 0.0) if name == "ShearX" else (1.0, 0.0, 0.0, f, 1.0, 0.0)
    if name in ("TranslateX", "TranslateY"):
        px = sign * (level / _LEVEL_DENOM) * float(cfg["translate_const"])
        return name, (1.0, 0.0, px, 0.0, 1.0, 0.0) if name == "TranslateX" else (1.0, 0.0, 0.0, 0.0, 1.0, px)
    if name in ("TranslateXRel", "TranslateYRel"):
        pct = sign * (level / _LEVEL_DENOM) * cfg["translate_pct"]
        if name == "TranslateXRel":
            return "TranslateX", (1.0, 0.0, pct * width, 0.0, 1.0, 0.0)
        return "TranslateY", (1.0, 0.0, 0.0, 0.0, 1.0, pct * height)
    base = name.replace("Increasing", "").replace("Original", "")
    if base in ("Color", "Contrast", "Brightness", "Sharpness"):
        if name.endswith("Increasing"):
            v = (level / _LEVEL_DENOM) * 0.9
            factor = max(0.1, 1.0 + (-v if neg else v))
        else:
            factor = (level / _LEVEL_DENOM) * 1.8 + 0.1
        return base, factor
    if base == "Posterize":
        bits = int((level / _LEVEL_DENOM) * 4)
        if name == "PosterizeIncreasing":
            bits = 4 - bits
        elif name == "PosterizeOriginal":
            bits = bits + 4
        return "Posterize", bits
    if name == "Desaturate":  # _minmax_level_to_arg(0.5, 1.0), then ImageEnhance.Color(1 - that)
        amount = max(0.5, min(1.0, 0.5 + 0.5 * level / _LEVEL_DENOM))
        factor = min(1.0, max(0.0, 1.0 - amount))
        return ("Grayscale", 1) if factor == 0.0 else ("Color", factor)  # factor 0: PIL's convert("L") exactly
    if name == "GaussianBlur":  # _minmax_level_to_arg(0.1, 2.0): PIL's GaussianBlur(radius)
        return "GaussianBlur", max(0.1, min(2.0, 0.1 + 1.9 * level / _LEVEL_DENOM))
    if name == "GaussianBlurRand":  # the radius drawn at sampling, stored in thousandths
        return "GaussianBlur", abs(stored) / BLUR_RAND_SCALE
    if name in ("Solarize", "SolarizeIncreasing"):
        thresh = min(256, int((level / _LEVEL_DENOM) * 256))
        return "Solarize", 256 - thresh if name == "SolarizeIncreasing" else thresh
    if name == "SolarizeAdd":
        return "SolarizeAdd", (128, min(128, int((level / _LEVEL_DENOM) * 110)))
    raise ConfigError(f"timm op {name!r} cannot be replayed")  # pragma: no cover - configs are checked


def _pil_rotate(degrees: float, height: int, width: int) -> tuple[float, ...]:
    """PIL's ``Image.rotate`` (expand=False, about the centre) as affine coefficients (PIL >= 5.2)."""
    angle = -math.radians(degrees % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    cx, cy = width / 2.0, height / 2.0
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return (a, b, c, d, e, f)


def pil_affine_params(coeffs: tuple[float, ...], height: int, width: int) -> list[int]:
    """PIL's inverse affine map (input = A (x + 0.5, y + 0.5) + t, pixel k covering [k, k+1])
    as the kernels' Q16 rows: with centred output coordinates X2 / 2 = x + 0.5 - W / 2, the source
    position in pixel-index units (centre of pixel k at k) is ``Nx / 2^17``."""
    a, b, c, d, e, f = coeffs
    q = 1 << 16
    r = lambda v: int(round(v * q))  # noqa: E731
    t0 = int(round((a * width / 2.0 + b * height / 2.0 + c - 0.5) * 2 * q))
    t1 = int(round((d * width / 2.0 + e * height / 2.0 + f - 0.5) * 2 * q))
    return [r(a), r(b), t0, r(d), r(e), t1]


# ------------------------------------------------------------------ blur taps
BLUR_TAPS = 12  # the kernels' taps: the centre and 11 on each side
BLUR_ONE = 1 << 14  # the taps sum to this


def quantise_taps(weights: list[float]) -> tuple[int, ...]:
    """Symmetric weights (centre first, at most 12) as Q14 taps that sum exactly to 2^14 over -R..R:
    each side tap rounded, the centre takes the rest."""
    w = list(weights)[:BLUR_TAPS]
    total = w[0] + 2 * sum(w[1:])
    side = [int(math.floor(v / total * BLUR_ONE + 0.5)) for v in w[1:]]
    taps = [BLUR_ONE - 2 * sum(side)] + side
    return tuple(taps + [0] * (BLUR_TAPS - len(taps)))


@lru_cache(maxsize=4096)
def gaussian_taps(kernel_size: int, sigma_milli: int) -> tuple[int, ...]:
    """torchvision's ``GaussianBlur(kernel_size, sigma)`` kernel (``exp(-d^2 / (2 sigma^2))`` for
    ``|d| <= kernel_size // 2``, normalised) as Q14 taps; sigma in thousandths of a pixel."""
    sigma = sigma_milli / 1000.0
    r = kernel_size // 2
    if sigma <= 0 or r == 0:
        return quantise_taps([1.0])
    return quantise_taps([math.exp(-0.5 * (d / sigma) ** 2) for d in range(r + 1)])


@lru_cache(maxsize=4096)
def pil_blur_taps(radius_milli: int) -> tuple[int, ...]:
    """PIL's ``GaussianBlur(radius)`` (``ImagingGaussianBlur``: three passes of an extended box blur whose
    radius l + a follows Gwosdek et al., as PIL computes it) as one kernel, the three boxes convolved, in Q14
    taps; beyond 11 pixels (radius >= 3.47, box radius 3) the kernel is cut and renormalised."""
    radius = radius_milli / 1000.0
    if radius <= 0:
        return quantise_taps([1.0])
    sigma2 = radius * radius / 3
    L = math.sqrt(12.0 * sigma2 + 1.0)
    lo = math.floor((L - 1.0) / 2.0)
    a = (2 * lo + 1) * (lo * (lo + 1) - 3 * sigma2) / (6 * (sigma2 - (lo + 1) * (lo + 1)))
    box = [a] + [1.0] * (2 * lo + 1) + [a]
    k = [1.0]
    for _ in range(3):
        k = [sum(k[i - j] * box[j] for j in range(len(box)) if 0 <= i - j < len(k)) for i in range(len(k) + len(box) - 1)]
    c = len(k) // 2
    return quantise_taps(k[c:])
