"""Policies from the recipes people already train with: timm's arguments and torchvision transforms.

``Policy.from_timm(...)`` mirrors ``timm.data.create_transform(is_training=True, ...)`` and
``timm.data.Mixup(...)``; ``Policy.from_torchvision(Compose([...]))`` reads a torchvision (v1 or
v2) pipeline. Both resolve everything random into a :class:`~reinforced_data.policy.Policy`
(timm's augmentation strings are parsed by timm itself and stored resolved, so replay never
needs timm), and refuse what the kernels cannot replay with a ConfigError naming the argument
or transform. timm and torchvision are imported only when these functions are called.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from . import _families as FAM
from .errors import ConfigError
from ._families import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["timm_fields", "torchvision_fields", "timm_ra_config", "TIMM_TRAIN_AUTO_AUGMENT"]

#: timm's training default augmentation string (train.py's ``--aa`` in its ImageNet recipes).
TIMM_TRAIN_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"


def _size(input_size: Any, name: str = "input_size") -> tuple[int, int]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return (input_size, input_size)
    if isinstance(input_size, (tuple, list)) and len(input_size) in (2, 3):
        hw = tuple(input_size[-2:])
        if all(isinstance(v, int) for v in hw):
            return hw  # type: ignore[return-value]
    raise ConfigError(f"{name}={input_size!r} must be an int, (height, width) or (channels, height, width)")


def _interp_name(value: Any, what: str) -> str:
    """A PIL / torchvision interpolation (enum, int or string) as 'nearest' / 'bilinear' / 'bicubic' / other."""
    name = getattr(value, "value", value)  # torchvision's InterpolationMode has .value strings
    if isinstance(name, str):
        return name.lower()
    try:
        from PIL import Image

        return {int(Image.Resampling.NEAREST): "nearest", int(Image.Resampling.BILINEAR): "bilinear",
                int(Image.Resampling.BICUBIC): "bicubic"}.get(int(name), str(name))
    except (TypeError, ValueError):  # pragma: no cover - unusual inputs
        raise ConfigError(f"{what}={value!r} is not an interpolation mode") from None


def timm_ra_config(auto_augment: str, hparams: dict | None = None) -> tuple[str, dict]:
    """Parse a timm augmentation string with timm itself; return (family, resolved configuration).

    ``hparams`` are the hparams ``create_transform`` passes (translate_const, img_mean, interpolation).
    """
    from timm.data import auto_augment as AA

    if not isinstance(auto_augment, str) or not auto_augment:
        raise ConfigError(f"auto_augment={auto_augment!r} must be a timm augmentation string")
    hp = dict(hparams) if hparams is not None else None
    try:
        if auto_augment.startswith("augmix"):
            family = "timm_augmix"
            t = AA.augment_and_mix_transform(auto_augment, hp)
            ops = list(t.ops)
            cfg = {"ops": [[o.name, float(o.prob), float(o.magnitude)] for o in ops]}
            augmix = {"width": int(t.width), "depth": int(t.depth), "alpha": float(t.alpha),
                      "blended": bool(t.blended)}
        elif auto_augment.startswith("rand"):
            family = "timm"
            t = AA.rand_augment_transform(auto_augment, hp)
            ops = list(t.ops)
            cfg: dict[str, Any] = {
                "ops": [[o.name, float(o.prob), float(o.magnitude)] for o in ops],
                "num_layers": int(t.num_layers),
                "weights": None if t.choice_weights is None else [float(w) for w in t.choice_weights],
            }
        else:
            family = "timm_autoaugment"
            t = AA.auto_augment_transform(auto_augment, hp)
            ops = [o for sp in t.policy for o in sp]
            cfg = {"policy": [[[o.name, float(o.prob), float(o.magnitude)] for o in sp] for sp in t.policy]}
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"auto_augment={auto_augment!r} is not a timm augmentation string timm accepts "
                          f"({type(e).__name__}: {e})") from None
    for o in ops:
        if o.name not in FAM.TIMM_OPS:
            raise ConfigError(f"auto_augment={auto_augment!r} uses timm's {o.name}, which cannot be replayed")
    first = ops[0]
    mstd = float(first.magnitude_std or 0.0)
    cfg["magnitude_noise"] = "uniform" if math.isinf(mstd) else ("gauss" if mstd > 0 else "none")
    cfg["magnitude_std"] = 0.0 if math.isinf(mstd) else mstd
    cfg["magnitude_max"] = None if first.magnitude_max is None else float(first.magnitude_max)
    cfg["translate_const"] = float(first.hparams.get("translate_const", 250))
    cfg["translate_pct"] = float(first.hparams.get("translate_pct", 0.45))
    resample = first.kwargs.get("resample")
    if isinstance(resample, (list, tuple)):
        names = sorted(_interp_name(r, "interpolation") for r in resample)
        if names != ["bicubic", "bilinear"]:
            raise ConfigError(f"auto_augment={auto_augment!r}: a random choice of {names} cannot be replayed")
        cfg["interpolation"] = "random"
    else:
        cfg["interpolation"] = _interp_name(resample, "interpolation")
        if cfg["interpolation"] not in ("bilinear", "bicubic"):
            raise ConfigError(f"interpolation={cfg['interpolation']!r}: the geometric ops replay bilinear or bicubic")
    cfg["source"] = auto_augment
    for o in ops:  # one configuration for every op, as timm builds them
        if (float(o.magnitude_std or 0.0), o.magnitude_max) != (mstd, first.magnitude_max):
            raise ConfigError(f"auto_augment={auto_augment!r}: ops with different magnitude noise cannot be replayed")
    if family == "timm_augmix":
        cfg["augmix"] = augmix  # taken out by timm_fields (Policy fields); not part of augmix_config
    return family, cfg


def _timm_augmix_fields(auto_augment: str, cfg: dict) -> dict[str, Any]:
    """Policy fields of timm's ``augmix-m*-w*-d*[-a*][-mstd*][-b1]`` resolved by timm (``timm_ra_config``)."""
    am = cfg.pop("augmix")
    width, depth, alpha = am["width"], am["depth"], am["alpha"]
    if not 1 <= width <= FAM.MAX_AUGMIX_CHAINS:
        raise ConfigError(f"auto_augment={auto_augment!r}: AugMix width {width} must lie in "
                          f"[1, {FAM.MAX_AUGMIX_CHAINS}] (the chains a view's blend takes)")
    if depth <= 0:
        depth = -1  # timm draws 1..3 per chain for any depth <= 0
    elif depth > FAM.MAX_AUGMIX_DEPTH:
        raise ConfigError(f"auto_augment={auto_augment!r}: AugMix depth {depth} must be at most {FAM.MAX_AUGMIX_DEPTH} "
                          f"(the ops a kernel row holds), or -1 for 1..{FAM.AUGMIX_RANDOM_DEPTH}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"auto_augment={auto_augment!r}: AugMix alpha {alpha} must be > 0")
    return dict(augmix="timm", augmix_config=cfg, augmix_width=width, augmix_depth=depth, augmix_alpha=alpha,
                augmix_blended=am["blended"])


def timm_fields(
    input_size: Any = 224,
    scale: Sequence[float] | None = None,
    ratio: Sequence[float] | None = None,
    hflip: float = 0.5,
    vflip: float = 0.0,
    color_jitter: Any = 0.4,
    color_jitter_prob: float | None = None,
    force_color_jitter: bool = False,
    grayscale_prob: float = 0.0,
    gaussian_blur_prob: float = 0.0,
    auto_augment: str | None = TIMM_TRAIN_AUTO_AUGMENT,
    interpolation: str = "random",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    re_prob: float = 0.25,
    re_mode: str = "pixel",
    re_count: int = 1,
    re_num_splits: int = 0,
    train_crop_mode: str | None = None,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    cutmix_minmax: Sequence[float] | None = None,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    mixup_mode: str = "elem",
    correct_lam: bool = True,
    ra_prob: float = 1.0,
    **mixup_kwargs: Any,
) -> dict[str, Any]:
    """The policy of ``timm.data.create_transform(is_training=True, ...)`` followed by ``timm.data.Mixup``,
    as ``Policy`` fields (``Policy.from_timm`` builds the policy from them).

    Arguments are timm's (``mix_prob`` is Mixup's ``prob``, ``mixup_mode`` its ``mode``), but the
    defaults are NOT ``create_transform``'s bare defaults: they are timm's ImageNet training recipe
    (``train.py``'s ``--aa rand-m9-mstd0.5-inc1``, ``--train-interpolation random``, ``--reprob 0.25``
    with ``--remode pixel``). ``train.py``'s bare defaults (no ``--aa``, ``--color-jitter 0.4``,
    ``--reprob 0``) are ``from_timm(auto_augment=None, re_prob=0)``: timm's ColorJitter(0.4, 0.4, 0.4)
    after the crop and flip (preset ``timm_train_default``). As in timm, ``color_jitter`` is used only
    without ``auto_augment`` (or with ``force_color_jitter`` or a 3-Augment string), a number jitters
    brightness, contrast and saturation, a 3- or 4-tuple sets each (the fourth is hue), and
    ``color_jitter_prob`` applies it to that share of views; ``auto_augment="3a"`` is DeiT III's 3-Augment
    (preset ``deit3`` with ``color_jitter=0.3``), ``grayscale_prob`` and ``gaussian_blur_prob`` timm's
    RandomGrayscale (PIL's grey) and RandomApply(GaussianBlur(23)); pass ``auto_augment=None, color_jitter=0``
    for no augmentation stage. Like ``train.py``, there is no
    mixing unless ``mixup_alpha`` or ``cutmix_alpha`` is given (e.g. 0.8 and 1.0, timm's DeiT-style
    recipes). ``ra_prob`` (not timm's) runs the augmentation stage on that share of views only.

    Mixup's ``num_classes`` is accepted and ignored (it does not change the views); its
    ``label_smoothing`` is a loss setting and is refused unless 0: smooth the targets in your loss
    (or ``ReinforcedDataset(label_smoothing=...)``). Every numeric argument is checked up front, and
    what cannot be replayed is refused by name.
    """
    _check_timm_numbers(dict(hflip=hflip, vflip=vflip, grayscale_prob=grayscale_prob,
                             gaussian_blur_prob=gaussian_blur_prob, re_prob=re_prob, mix_prob=mix_prob,
                             switch_prob=switch_prob, ra_prob=ra_prob,
                             **({} if color_jitter_prob is None else dict(color_jitter_prob=color_jitter_prob))),
                        dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha))
    _check_mixup_kwargs(mixup_kwargs)
    mean = _triple(mean, "mean", positive=False)
    std = _triple(std, "std", positive=True)
    oh, ow = _size(input_size)
    if train_crop_mode not in (None, "rrc"):
        raise ConfigError(f"train_crop_mode={train_crop_mode!r} cannot be replayed; use 'rrc' (RandomResizedCrop)")
    if vflip:
        raise ConfigError(f"vflip={vflip}: vertical flips cannot be replayed")
    # timm applies colour jitter only without auto_augment, unless forced or with 3-Augment
    jitter_on = color_jitter is not None and (not auto_augment or force_color_jitter or "3a" in str(auto_augment))
    jitter = _timm_color_jitter(color_jitter, color_jitter_prob) if jitter_on else {}
    # timm's SimCLR-style extras: RandomGrayscale on its PIL images (PIL's convert("L")) and
    # RandomApply([GaussianBlur(kernel_size=23)]) with torchvision's default sigma (0.1, 2.0)
    extra: dict[str, Any] = {}
    if grayscale_prob:
        extra.update(grayscale_prob=float(grayscale_prob), grayscale_formula="pil")
    if gaussian_blur_prob:
        extra.update(blur_prob=float(gaussian_blur_prob), blur_kernel_size=23, blur_sigma=(0.1, 2.0))
    if interpolation not in ("random", "bilinear", "bicubic"):
        raise ConfigError(f"interpolation={interpolation!r} cannot be replayed; use 'random', 'bilinear' or 'bicubic'")
    if re_count != 1:
        raise ConfigError(f"re_count={re_count}: only one erased box per view can be replayed")
    if re_num_splits:
        raise ConfigError(f"re_num_splits={re_num_splits}: split random erasing cannot be replayed")
    if re_mode not in ("pixel", "const"):
        raise ConfigError(f"re_mode={re_mode!r} cannot be replayed; use 'pixel' (per-pixel noise) or 'const'")
    if cutmix_minmax is not None:
        raise ConfigError(f"cutmix_minmax={cutmix_minmax!r}: min/max CutMix boxes cannot be replayed")
    if not correct_lam:
        raise ConfigError("correct_lam=False cannot be replayed: a stored CutMix λ is the box's share")
    if mixup_mode != "elem":
        raise ConfigError(f"mixup_mode={mixup_mode!r}: views are mixed per element ('elem'); per-batch or per-pair "
                          "parameters cannot be stored per view")
    img_mean = tuple(min(255, round(255 * x)) for x in mean)  # timm's aa_params['img_mean']
    fields: dict[str, Any] = dict(
        output_size=(oh, ow), crop_scale=tuple(scale or (0.08, 1.0)), crop_ratio=tuple(ratio or (3 / 4, 4 / 3)),
        flip_prob=hflip, interpolation=interpolation, mean=mean, std=std,
    )
    if auto_augment:
        hparams: dict[str, Any] = dict(translate_const=int(min(oh, ow) * 0.45), img_mean=img_mean)
        if interpolation != "random":
            from timm.data.transforms import str_to_pil_interp

            hparams["interpolation"] = str_to_pil_interp(interpolation)
        if auto_augment.startswith("augmix"):
            hparams["translate_pct"] = 0.3  # as create_transform sets it for AugMix
        family, cfg = timm_ra_config(auto_augment, hparams)
        if family == "timm_augmix":
            if ra_prob != 1.0:
                raise ConfigError(f"ra_prob={ra_prob} with AugMix cannot be replayed: AugMix runs on every view")
            fields.update(_timm_augmix_fields(auto_augment, cfg), fill=img_mean)
        else:
            fields.update(ra_family=family, ra_config=cfg, fill=img_mean, ra_prob=ra_prob,
                          ra_num_ops=FAM.family_slots(family, FAM.canonical_config(cfg, family)))
    if re_prob > 0:
        fields.update(erase_prob=re_prob, erase_scale=(0.02, 1 / 3), erase_ratio=(0.3, 1 / 0.3),
                      erase_value="random" if re_mode == "pixel" else img_mean)
    if mixup_alpha > 0 or cutmix_alpha > 0:
        fields.update(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob,
                      switch_prob=switch_prob)
    fields.update(jitter)
    fields.update(extra)
    return fields


def _timm_color_jitter(color_jitter: Any, color_jitter_prob: float | None) -> dict[str, Any]:
    """timm's ``color_jitter`` (a number: brightness, contrast and saturation, no hue; or a 3- or 4-tuple)
    as Policy fields, read from the ``torchvision.transforms.ColorJitter`` timm builds from it."""
    if isinstance(color_jitter, (list, tuple)):
        if len(color_jitter) not in (3, 4):
            raise ConfigError(f"color_jitter={color_jitter!r} must be a number or 3 or 4 values (brightness, "
                              "contrast, saturation[, hue]), as timm asserts")
        values = tuple(color_jitter)
    elif _is_real(color_jitter) and color_jitter >= 0:
        values = (float(color_jitter),) * 3
    else:
        raise ConfigError(f"color_jitter={color_jitter!r} must be a number >= 0 or 3 or 4 values; pass e.g. 0.4")
    from torchvision import transforms

    try:
        t = transforms.ColorJitter(*values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"color_jitter={color_jitter!r}: torchvision's ColorJitter refuses it ({e})") from None
    fields = _jitter_fields(t)
    if color_jitter_prob is not None:
        fields["jitter_prob"] = float(color_jitter_prob)
    return fields


def _jitter_fields(t: Any) -> dict[str, Any]:
    """A torchvision (v1 or v2) ColorJitter's resolved ranges as Policy fields (None: off)."""
    fields: dict[str, Any] = {}
    for attr, field in (("brightness", "jitter_brightness"), ("contrast", "jitter_contrast"),
                        ("saturation", "jitter_saturation"), ("hue", "jitter_hue")):
        value = getattr(t, attr, None)
        if value is not None:
            fields[field] = tuple(float(v) for v in value)
    return fields


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_timm_numbers(probs: dict, alphas: dict) -> None:
    """Probabilities must be finite numbers in [0, 1], alphas finite numbers >= 0 (checked before use)."""
    for name, value in probs.items():
        if not _is_real(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value!r} must be a finite number in [0, 1] (a probability); pass one "
                              "in that range")
    for name, value in alphas.items():
        if not _is_real(value) or value < 0:
            raise ConfigError(f"{name}={value!r} must be a finite number >= 0 (0 turns it off); pass one in that "
                              "range")


def _check_mixup_kwargs(kwargs: dict) -> None:
    """timm.data.Mixup's loss-side arguments: num_classes is ignored, label_smoothing must be 0."""
    kwargs = dict(kwargs)
    num_classes = kwargs.pop("num_classes", None)
    smoothing = kwargs.pop("label_smoothing", 0.0)
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise ConfigError(f"from_timm got unknown arguments {names}; pass create_transform or Mixup arguments "
                          "(see help(Policy.from_timm))")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ConfigError(f"num_classes={num_classes!r} must be a positive int (it is ignored: it does not "
                          "change the views)")
    if not _is_real(smoothing) or smoothing != 0:
        raise ConfigError(f"label_smoothing={smoothing!r} is a loss setting and does not change the views; "
                          "leave it out here and smooth the targets in your loss "
                          "(or ReinforcedDataset(label_smoothing=...))")


def _triple(value: Any, name: str, positive: bool) -> tuple[float, float, float]:
    """mean / std: three finite numbers (std also > 0), one per RGB channel."""
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and (v > 0 or not positive) for v in vals):
        need = "three finite numbers > 0" if positive else "three finite numbers"
        raise ConfigError(f"{name}={value!r} must be {need}, one per RGB channel; pass e.g. {name}="
                          f"{IMAGENET_STD if positive else IMAGENET_MEAN}")
    return vals  # type: ignore[return-value]


# ------------------------------------------------------------------ torchvision
def _fill3(value: Any, what: str) -> tuple[int, int, int]:
    if value is None:
        return (0, 0, 0)
    if isinstance(value, dict):
        raise ConfigError(f"{what}={value!r}: a per-type fill dictionary cannot be replayed; pass one value")
    vals = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or any(float(v) != int(v) or not 0 <= int(v) <= 255 for v in vals):
        raise ConfigError(f"{what}={value!r} must be a uint8 value or three")
    return tuple(int(v) for v in vals)  # type: ignore[return-value]


_STAGES = ("crop", "flip", "augment", "jitter", "grayscale", "blur", "solarize", "erase")


def torchvision_fields(transforms: Any, **overrides: Any) -> dict[str, Any]:
    """The ``Policy`` fields (``Policy.from_torchvision`` builds the policy from them) of a torchvision
    (v1 or v2) ``Compose`` (or list) of RandomResizedCrop / RandomCrop,
    RandomHorizontalFlip, RandAugment / TrivialAugmentWide / AutoAugment(IMAGENET) / AugMix, ColorJitter (each
    optionally in a RandomApply), RandomGrayscale, GaussianBlur (optionally in a RandomApply), RandomSolarize
    (these three after ColorJitter, in this order), RandomErasing, Normalize and the conversions (ToTensor, PILToTensor, ToImage,
    ToDtype, ConvertImageDtype). One transform alone is read as a one-element pipeline. Anything else is
    refused by name, and so is what torchvision would not run or what replay would not reproduce: two
    Normalize, Normalize on uint8 data, RandAugment / TrivialAugmentWide / AutoAugment after the float
    conversion (they must see the uint8 image), and ColorJitter there too. ``overrides`` set Policy fields the transforms do not
    say (e.g. mixing); unknown names are refused.

    mean / std: from the Normalize. Without a Normalize but with a float conversion (ToTensor,
    ToDtype(float, scale=True), ConvertImageDtype(float)) the pipeline returns ``v / 255``, so mean is
    (0, 0, 0) and std (1, 1, 1): ``replay`` with a float ``out_dtype`` gives exactly those values.
    Without any conversion the pipeline returns uint8 images: mean / std keep Policy's (ImageNet)
    defaults, and ``replay(..., out_dtype=torch.uint8)`` gives what the pipeline gives.
    """
    if transforms is None:
        raise ConfigError("transforms=None: pass a torchvision Compose, a list of transforms or one transform")
    if type(transforms).__name__ == "Compose":
        seq = list(transforms.transforms)
    elif isinstance(transforms, (list, tuple)):
        seq = list(transforms)
    elif type(transforms).__module__.startswith("torchvision."):
        seq = [transforms]
    else:
        raise ConfigError(f"transforms={transforms!r} is not a torchvision transform; pass a torchvision "
                          "Compose, a list of transforms or one transform")
    fields: dict[str, Any] = {}
    stage = -1  # the replay order: crop, flip, augment, erase (normalisation is applied last anyway)
    dtype = "uint8"  # what RandomErasing's value is measured in: uint8, float in [0, 1], normalised
    erase_value: Any = None
    seen_crop = False
    seen_normalize = False
    converted = False  # whether a tensor conversion came before (else the images may be PIL's)

    order = "crop, flip, augmentation, colour jitter, grayscale, blur, solarize, erasing"
    last = ""  # the transform that took the current stage

    def advance(name: str, t: Any) -> None:
        nonlocal stage, last
        i = _STAGES.index(name)
        if i == stage:
            raise ConfigError(f"{type(t).__name__} after {last}, in the same stage: a view replays at most one "
                              f"transform of each stage, in the order {order}")
        if i < stage:
            raise ConfigError(f"{type(t).__name__} after a later stage: the replay order is {order}")
        stage, last = i, type(t).__name__

    for t in seq:
        name = type(t).__name__
        if name == "RandomApply":
            inner = list(getattr(t, "transforms", []))
            if len(inner) != 1 or type(inner[0]).__name__ not in ("RandAugment", "TrivialAugmentWide", "AutoAugment",
                                                                  "ColorJitter", "GaussianBlur"):
                raise ConfigError("RandomApply can only wrap one RandAugment, TrivialAugmentWide, AutoAugment, "
                                  "ColorJitter or GaussianBlur")
            inner_name = type(inner[0]).__name__
            fields[{"ColorJitter": "jitter_prob", "GaussianBlur": "blur_prob"}.get(inner_name, "ra_prob")] = float(t.p)
            t, name = inner[0], inner_name
        if name == "RandomResizedCrop":
            advance("crop", t)
            seen_crop = True
            interp = _interp_name(t.interpolation, "RandomResizedCrop.interpolation")
            if interp not in ("bilinear", "bicubic"):
                raise ConfigError(f"RandomResizedCrop(interpolation={interp!r}) cannot be replayed; use bilinear or bicubic")
            if getattr(t, "antialias", True) is False:
                raise ConfigError("RandomResizedCrop(antialias=False) cannot be replayed (the kernels antialias)")
            fields.update(output_size=_size(list(t.size) if len(t.size) == 2 else t.size[0], "RandomResizedCrop.size"),
                          crop_scale=tuple(t.scale), crop_ratio=tuple(t.ratio), interpolation=interp)
        elif name == "RandomCrop":
            advance("crop", t)
            seen_crop = True
            pad = t.padding
            if pad is None:
                pad = 0
            if not isinstance(pad, int):
                pads = list(pad)
                if len(set(pads)) != 1:
                    raise ConfigError(f"RandomCrop(padding={t.padding!r}): only the same padding on every side "
                                      "can be replayed")
                pad = int(pads[0])
            if t.pad_if_needed:
                raise ConfigError("RandomCrop(pad_if_needed=True) cannot be replayed")
            if t.padding_mode != "constant":
                raise ConfigError(f"RandomCrop(padding_mode={t.padding_mode!r}) cannot be replayed; use 'constant'")
            fill = t.fill
            if isinstance(fill, dict):  # v2 keeps a per-type dictionary; one value for every type is fine
                values = {repr(v) for v in fill.values()}
                if len(values) != 1:
                    raise ConfigError(f"RandomCrop(fill={fill!r}) cannot be replayed; pass one value")
                fill = next(iter(fill.values()))
            fields.update(output_size=_size(list(t.size), "RandomCrop.size"), crop_mode="padded",
                          crop_padding=pad, pad_fill=_fill3(fill, "RandomCrop.fill"))
        elif name == "RandomHorizontalFlip":
            advance("flip", t)
            fields["flip_prob"] = float(t.p)
        elif name == "AugMix":
            advance("augment", t)
            if dtype != "uint8":
                raise ConfigError("AugMix after the float conversion or Normalize cannot be replayed (torchvision would "
                                  "run it on float data); put AugMix before ToTensor / ToDtype / Normalize")
            interp = _interp_name(t.interpolation, "AugMix.interpolation")
            if interp not in ("nearest", "bilinear"):
                raise ConfigError(f"AugMix(interpolation={interp!r}) cannot be replayed; use nearest or bilinear")
            fill = getattr(t, "fill", None)
            if isinstance(fill, dict):
                values = list(fill.values())
                if len({repr(v) for v in values}) != 1:
                    raise ConfigError(f"AugMix(fill={fill!r}) cannot be replayed; pass one value")
                fill = values[0]
            deep = not isinstance(t.chain_depth, numbers.Real) or t.chain_depth > 0  # else 1 to 3 per chain
            for arg in ("mixture_width", "severity") + (("chain_depth",) if deep else ()):
                if not isinstance(getattr(t, arg), numbers.Integral):  # torchvision fails on it (range / randint)
                    raise ConfigError(f"AugMix({arg}={getattr(t, arg)!r}) must be an integer; torchvision's AugMix "
                                      "fails on it")
            width, depth = int(t.mixture_width), int(t.chain_depth) if deep else -1
            if not 1 <= width <= FAM.MAX_AUGMIX_CHAINS:
                raise ConfigError(f"AugMix(mixture_width={width}) cannot be replayed; the blend takes 1 to "
                                  f"{FAM.MAX_AUGMIX_CHAINS} chains")
            if depth > FAM.MAX_AUGMIX_DEPTH:
                raise ConfigError(f"AugMix(chain_depth={depth}) cannot be replayed; a chain holds at most "
                                  f"{FAM.MAX_AUGMIX_DEPTH} ops (or -1: 1 to 3)")
            if not (_is_real(t.alpha) and t.alpha > 0):
                raise ConfigError(f"AugMix(alpha={t.alpha!r}) must be > 0")
            fields.update(augmix="torchvision", augmix_width=width, augmix_depth=depth if depth > 0 else -1,
                          augmix_alpha=float(t.alpha), augmix_severity=int(t.severity),
                          augmix_all_ops=bool(t.all_ops), augmix_interpolation=interp, fill=_fill3(fill, "AugMix.fill"))
        elif name in ("RandAugment", "TrivialAugmentWide", "AutoAugment"):
            advance("augment", t)
            if dtype != "uint8":
                raise ConfigError(f"{name} after the float conversion or Normalize cannot be replayed (torchvision "
                                  f"would run it on float data); put {name} before ToTensor / ToDtype / Normalize, "
                                  "while the image is uint8")
            interp = _interp_name(t.interpolation, f"{name}.interpolation")
            if interp not in ("nearest", "bilinear"):
                raise ConfigError(f"{name}(interpolation={interp!r}) cannot be replayed; use nearest or bilinear")
            fill = getattr(t, "fill", None)
            if isinstance(fill, dict):
                values = list(fill.values())
                if len({repr(v) for v in values}) != 1:
                    raise ConfigError(f"{name}(fill={fill!r}) cannot be replayed; pass one value")
                fill = values[0]
            fields.update(ra_interpolation=interp, fill=_fill3(fill, f"{name}.fill"))
            if name == "RandAugment":
                fields.update(ra_family="torchvision", ra_num_ops=int(t.num_ops), ra_magnitude=int(t.magnitude),
                              ra_num_magnitude_bins=int(t.num_magnitude_bins))
            elif name == "TrivialAugmentWide":
                fields.update(ra_family="trivialaugment", ra_num_ops=1,
                              ra_num_magnitude_bins=int(t.num_magnitude_bins))  # a random bin: no ra_magnitude
            else:
                if getattr(t.policy, "value", t.policy) != "imagenet":
                    raise ConfigError(f"AutoAugment(policy={t.policy}) cannot be replayed; use AutoAugmentPolicy.IMAGENET")
                fields.update(ra_family="autoaugment", ra_num_ops=2)
        elif name == "ColorJitter":
            advance("jitter", t)
            if dtype != "uint8":
                raise ConfigError("ColorJitter after the float conversion or Normalize cannot be replayed (torchvision "
                                  "would jitter float data); put ColorJitter before ToTensor / ToDtype / Normalize, "
                                  "while the image is uint8")
            fields.update(_jitter_fields(t))
        elif name == "RandomGrayscale":
            advance("grayscale", t)
            if dtype != "uint8":
                raise ConfigError("RandomGrayscale after the float conversion or Normalize cannot be replayed; put it "
                                  "before ToTensor / ToDtype / Normalize, while the image is uint8")
            # before any conversion the dataset's PIL images are greyed by PIL's convert("L")
            fields.update(grayscale_prob=float(t.p), grayscale_formula="torchvision" if converted else "pil")
        elif name == "GaussianBlur":
            advance("blur", t)
            if dtype != "uint8":
                raise ConfigError("GaussianBlur after the float conversion or Normalize cannot be replayed (torchvision "
                                  "would keep float values); put it before ToTensor / ToDtype / Normalize")
            ks = [int(v) for v in (t.kernel_size if isinstance(t.kernel_size, (list, tuple)) else [t.kernel_size] * 2)]
            if len(set(ks)) != 1:
                raise ConfigError(f"GaussianBlur(kernel_size={t.kernel_size!r}): only square kernels can be replayed")
            sigma = tuple(float(v) for v in t.sigma) if isinstance(t.sigma, (list, tuple)) else (float(t.sigma),) * 2
            fields.update(blur_kernel_size=ks[0], blur_sigma=sigma)
            fields.setdefault("blur_prob", 1.0)
        elif name == "RandomSolarize":
            advance("solarize", t)
            if dtype != "uint8":
                raise ConfigError("RandomSolarize after the float conversion or Normalize cannot be replayed (its "
                                  "threshold would be on the float scale); put it before ToTensor / ToDtype / Normalize")
            fields.update(solarize_prob=float(t.p), solarize_threshold=float(t.threshold))
        elif name == "RandomErasing":
            advance("erase", t)
            if getattr(t, "inplace", False) not in (False, True):  # pragma: no cover - attribute shape
                pass
            fields.update(erase_prob=float(t.p), erase_scale=tuple(t.scale), erase_ratio=tuple(t.ratio))
            value = "random" if t.value is None else t.value  # v2 stores value='random' as None
            erase_value = (value, dtype)
        elif name == "Normalize":
            if seen_normalize:
                raise ConfigError("Normalize appears twice: only one Normalize can be replayed; keep one "
                                  "(its mean and std)")
            if dtype == "uint8":
                raise ConfigError("Normalize on uint8 data: torchvision refuses it; put ToTensor or "
                                  "ToDtype(torch.float32, scale=True) before Normalize")
            seen_normalize = True
            fields.update(mean=tuple(float(m) for m in t.mean), std=tuple(float(s) for s in t.std))
            if getattr(t, "inplace", False):
                pass
            dtype = "normalised"
        elif name in ("ToTensor",):
            dtype = "float"
            converted = True
        elif name in ("PILToTensor", "ToImage"):
            dtype = "uint8"
            converted = True
        elif name in ("ToDtype", "ConvertImageDtype"):
            import torch

            target = getattr(t, "dtype", None)
            if isinstance(target, dict):
                target = next(iter(target.values()))
            scale = getattr(t, "scale", True) if name == "ToDtype" else True
            if target is not None and getattr(target, "is_floating_point", False):
                if not scale:
                    raise ConfigError(f"{name}(scale=False) to a float type cannot be replayed (values stay 0..255)")
                dtype = "float"
            elif target == torch.uint8:
                dtype = "uint8"
        else:
            raise ConfigError(f"{name} cannot be replayed; supported: RandomResizedCrop, RandomCrop, "
                              "RandomHorizontalFlip, RandAugment, TrivialAugmentWide, AutoAugment(IMAGENET), AugMix, "
                              "ColorJitter, RandomGrayscale, GaussianBlur, RandomSolarize, RandomErasing, Normalize, "
                              "ToTensor, PILToTensor, ToImage, ToDtype")
    if not seen_crop:
        raise ConfigError("the transforms have no RandomResizedCrop or RandomCrop; a view needs one")
    if not seen_normalize and dtype == "float":  # the pipeline returns v / 255: replay's float output
        fields.update(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    if erase_value is not None:
        value, where = erase_value
        mean = fields.get("mean", IMAGENET_MEAN)
        std = fields.get("std", IMAGENET_STD)
        fields["erase_value"] = _erase_value(value, where, mean, std)
    fields.update(overrides)
    return fields


def _erase_value(value: Any, where: str, mean: Sequence[float], std: Sequence[float]) -> Any:
    """RandomErasing's value as the uint8 pixel it stands for, given where in the pipeline it erases."""
    if isinstance(value, str):
        if value != "random":
            raise ConfigError(f"RandomErasing(value={value!r}) cannot be replayed")
        return "random"  # torchvision draws normal noise; replayed as uniform uint8 noise (docs/replay.md)
    vals = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ConfigError(f"RandomErasing(value={value!r}) must be one value or three")
    if where == "normalised":
        px = [(v * s + m) * 255 for v, m, s in zip(vals, mean, std)]
    elif where == "float":
        px = [v * 255 for v in vals]
    else:
        px = list(vals)
    out = tuple(int(round(v)) for v in px)
    if any(not 0 <= v <= 255 for v in out):
        raise ConfigError(f"RandomErasing(value={value!r}) is the pixel {out}, outside [0, 255]")
    return out
