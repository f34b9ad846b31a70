"""Weak-learner backbones: timm models with no classifier (pooled features ``[B, F]``), built from a
name or a local checkpoint (:func:`create_backbone`), written so that they can be rebuilt exactly
(:func:`save_backbone`), and measured (feature size, input size)."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checkpoint import classifier_names, read_checkpoint, split_spec, state_dict_of
from ..errors import ConfigError

__all__ = ["create_backbone", "save_backbone"]

logger = logging.getLogger(__name__)

_BACKBONE_CHECKPOINT_FORMAT = "reinforced_data.backbone"


def _arch_of(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture")


_TIMM_KWARGS_ATTR = "_reinforced_data_timm_kwargs"  # set by create_backbone, recorded by the save functions
_TRAINED_SIZE_ATTR = "_reinforced_data_trained_input_size"  # (C, H, W), set by fit_weak_learner and create_backbone

# A class or function among the timm settings is stored by name, {_REF_KEY: "module:qualname"}, and
# imported again on load only from these packages (a file never makes us import arbitrary code).
_REF_KEY = "__callable__"
_REF_PACKAGES = ("torch", "timm")


def _resolve_ref(ref: str, where: str) -> Any:
    module, _, qualname = ref.partition(":")
    if module.split(".")[0] not in _REF_PACKAGES or not qualname:
        raise ConfigError(f"{where} names {ref!r} as a timm setting; only torch and timm classes and functions "
                          "are imported from a file")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where} names {ref!r} as a timm setting, which this torch / timm does not have "
                          f"({e}); install the versions it was saved with") from None
    return obj


def _ref_of(obj: Any) -> str | None:
    """``"module:qualname"`` when ``obj`` is a torch / timm class or function importable by that name."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module.split(".")[0] not in _REF_PACKAGES:
        return None
    ref = f"{module}:{qualname}"
    try:
        return ref if _resolve_ref(ref, "") is obj else None
    except ConfigError:
        return None


def _encode_setting(name: str, value: Any, index: int) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_encode_setting(name, v, index) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and _REF_KEY not in value:
        return {k: _encode_setting(name, v, index) for k, v in value.items()}
    ref = _ref_of(value)
    if ref is not None:
        return {_REF_KEY: ref}
    raise ConfigError(f"backbone {index}: the timm setting {name}={value!r} cannot be stored in a file (only "
                      "numbers, strings, lists, dicts, and torch / timm classes or functions can); give it by name "
                      "(e.g. act_layer='silu') or as a torch.nn / timm class")


def encode_settings(kwargs: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """timm settings as a file stores them (``weights_only``-loadable): classes and functions of
    torch / timm by name; anything else that is not plain data is refused with a ConfigError."""
    return {k: _encode_setting(k, v, index) for k, v in kwargs.items()}


def _decode_setting(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {_REF_KEY} and isinstance(value[_REF_KEY], str):
            return _resolve_ref(value[_REF_KEY], where)
        return {k: _decode_setting(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode_setting(v, where) for v in value)
    return value


def decode_settings(kwargs: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The inverse of :func:`encode_settings`; ``where`` names the file in errors."""
    return {k: _decode_setting(v, where) for k, v in (kwargs or {}).items()}


def stores_refs(kwargs: dict[str, Any]) -> bool:
    """Whether stored settings name a class or function (files that need format version 3 to read)."""
    def has(v: Any) -> bool:
        if isinstance(v, dict):
            return set(v) == {_REF_KEY} or any(has(x) for x in v.values())
        return isinstance(v, (list, tuple)) and any(has(x) for x in v)
    return has(kwargs)


def _rebuild_recipe(backbone: nn.Module, index: int, arch: str | None = None,
                    input_size: Sequence[int] | None = None) -> tuple[str, dict]:
    """(arch, timm kwargs as stored) that rebuild ``backbone`` with
    ``timm.create_model(arch, num_classes=0, **decode_settings(kwargs))``.

    Settings a file cannot hold are refused first (:func:`encode_settings`). Checked by rebuilding it and comparing features on a probe input, so that a backbone
    built with settings nobody recorded (``timm.create_model(..., global_pool="max")``
    called directly, say) is refused at save time instead of coming back different.
    """
    import timm

    arch = arch or _arch_of(backbone)
    if arch is None:
        raise ConfigError(f"backbone {index} ({type(backbone).__name__}) is not a timm model (it names no timm "
                         "architecture), so a file could not rebuild it; torch.save its state_dict() instead")
    stored = encode_settings(dict(getattr(backbone, _TIMM_KWARGS_ATTR, {})), index)
    kwargs = decode_settings(stored, "the file")  # rebuild from what the file will hold
    try:
        rebuilt = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        rebuilt.load_state_dict(backbone.state_dict())
    except Exception as e:  # noqa: BLE001 - any failure means the recipe does not rebuild this backbone
        raise ConfigError(f"backbone {index} cannot be rebuilt as timm {arch!r} with {kwargs} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); create it with "
                         "create_backbone(spec, **timm_kwargs) so that its settings are recorded") from None
    p = next(backbone.parameters(), None)
    c, h, w = input_size or _as_size(timm.data.resolve_model_data_config(backbone)["input_size"])
    probe = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    if p is not None:
        probe, rebuilt = probe.to(p.device, p.dtype), rebuilt.to(p.device, p.dtype)
    was_training = backbone.training
    try:
        with torch.no_grad():
            want, got = backbone.eval()(probe), rebuilt.eval()(probe)
    finally:
        backbone.train(was_training)
    if want.shape != got.shape or not torch.allclose(want.float(), got.float(), rtol=1e-4, atol=1e-5):
        raise ConfigError(f"backbone {index} was built with settings that were not recorded: rebuilt as timm "
                         f"{arch!r} with {kwargs} it gives other features; create it with "
                         "create_backbone(spec, **timm_kwargs) (or AdaptiveEnsembleHead.from_timm(..., **timm_kwargs)) "
                         "so that save() records them")
    return arch, stored


def save_backbone(backbone: nn.Module, path: str | os.PathLike, arch: str | None = None) -> None:
    """Save a weak learner's backbone so ``create_backbone(path)`` can rebuild it.

    Writes ``{"arch", "timm_kwargs", "num_features", "state_dict"}`` (readable with
    ``weights_only=True``), and ``input_size`` when :func:`fit_weak_learner` trained it at
    one size; ``arch`` defaults to the timm architecture the backbone was created from,
    ``timm_kwargs`` are those :func:`create_backbone` was given. Refuses a backbone that the
    recorded settings do not rebuild exactly.
    """
    arch, kwargs = _rebuild_recipe(backbone, 0, arch)
    data = {"format": _BACKBONE_CHECKPOINT_FORMAT, "arch": arch, "timm_kwargs": kwargs,
            "num_features": getattr(backbone, "num_features", None), "state_dict": backbone.state_dict()}
    trained = getattr(backbone, _TRAINED_SIZE_ATTR, None)
    if trained is not None:
        data["input_size"] = list(trained)
    torch.save(data, os.fspath(path))


def create_backbone(spec: str | os.PathLike, pretrained: bool = True, **timm_kwargs: Any) -> nn.Module:
    """A timm backbone with no classifier (``num_classes=0``): pooled features ``[B, F]``.

    ``spec`` is a timm model name (weights from timm when ``pretrained``), ``"name=PATH"``
    (weights from a local checkpoint: a state dict, a timm training checkpoint, or a file
    written by :func:`save_backbone`), or a checkpoint ``PATH`` that names its architecture
    (``save_backbone`` files and timm's train.py checkpoints do). A classifier in the file is
    ignored. Raises instead of silently falling back to random weights.
    """
    import timm

    arch, path = split_spec(spec)
    meta: dict[str, Any] = {}
    raw: dict = {}
    if path is not None:
        raw = read_checkpoint(path, "backbone checkpoint")
        meta = {k: raw[k] for k in ("arch", "num_features", "timm_kwargs", "input_size")
                if k in raw and not isinstance(raw[k], Tensor)}
        if arch is None:
            arch = meta.get("arch")
            if not isinstance(arch, str):
                raise ConfigError(f"checkpoint {path!r} does not name its architecture; write the spec as 'ARCH={path}'")
    assert arch is not None
    if not timm.is_model(arch):
        hint = "it is not a file either; " if os.sep in arch else ""
        raise ConfigError(f"{arch!r} is not a timm model name; {hint}see timm.list_models()")
    use_hub = pretrained and path is None
    timm_kwargs = {**decode_settings(meta.get("timm_kwargs"), f"checkpoint {path!r}"), **timm_kwargs}  # a save_backbone file's, unless overridden
    try:
        model = timm.create_model(arch, pretrained=use_hub, num_classes=0, **timm_kwargs)
    except Exception as e:
        if not use_hub:
            raise
        raise RuntimeError(f"could not load timm's pretrained weights for {arch!r} ({type(e).__name__}); "
                           f"pass pretrained=False to start from random weights, or a local checkpoint "
                           f"'{arch}=PATH'") from e
    if path is not None:
        _load_backbone_weights(model, state_dict_of(raw), path, arch, meta)
        logger.info("backbone %s: weights from %s", arch, path)
    elif not use_hub:
        logger.info("backbone %s: random initialisation (pretrained=False)", arch)
    setattr(model, _TIMM_KWARGS_ATTR, timm_kwargs)
    if meta.get("input_size") is not None:
        setattr(model, _TRAINED_SIZE_ATTR, _as_size(meta["input_size"]))
    return model


def _load_backbone_weights(model: nn.Module, state: dict, path: str, arch: str, meta: Mapping[str, Any]) -> None:
    nf_file, nf_model = meta.get("num_features"), getattr(model, "num_features", None)
    if nf_file is not None and nf_model is not None and int(nf_file) != int(nf_model):
        raise ConfigError(f"checkpoint {path!r} holds a backbone with {nf_file} features but {arch} has "
                         f"{nf_model}; check that {arch!r} is the architecture it was saved from")
    own = model.state_dict()
    heads = classifier_names(model)
    state = {k: v for k, v in state.items()
             if k in own or not any(k == h or k.startswith(h + ".") for h in heads)}
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if unexpected or missing:
        example = unexpected[0] if unexpected else missing[0]
        raise ConfigError(f"checkpoint {path!r} does not fit {arch}: {len(unexpected)} tensors in the file are "
                         f"not in the model and {len(missing)} model tensors are missing from the file "
                         f"(e.g. {example!r}); check that {arch!r} is the architecture it was saved from")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ConfigError(f"checkpoint {path!r} does not fit {arch}: {k!r} is {list(v.shape)} in the file "
                             f"but {list(own[k].shape)} in the model; check the architecture name")
    model.load_state_dict(state, strict=True)


def _pooled_dim(backbone: nn.Module, dummy: Tensor, index: int) -> int:
    """Feature size of ``backbone`` from one eval-mode forward; clear errors if it is not [B, F]."""
    name = type(backbone).__name__
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(dummy)
    except Exception as e:
        raise ConfigError(f"backbone {index} ({name}) failed on a {list(dummy.shape)} input "
                         f"({type(e).__name__}: {e}); check input_size") from e
    finally:
        backbone.train(was_training)
    if not isinstance(out, Tensor):
        raise ConfigError(f"backbone {index} ({name}) returns {type(out).__name__}, not a [B, F] tensor of "
                         "pooled features; wrap it so that forward returns one tensor")
    if out.ndim != 2 or out.shape[0] != dummy.shape[0]:
        raise ConfigError(f"backbone {index} ({name}) returns a {list(out.shape)} tensor, not a pooled feature "
                         "vector [B, F]; create it with a global pool and no classifier "
                         "(timm: num_classes=0, global_pool='avg')")
    dim = int(out.shape[1])
    # timm models with a pre-logits stage (MobileNetV3, GhostNet, ...) pool to head_hidden_size, not num_features
    declared = [v for v in (getattr(backbone, "num_features", None), getattr(backbone, "head_hidden_size", None))
                if isinstance(v, int)]
    if declared and dim not in declared:
        raise ConfigError(f"backbone {index} ({name}) returns {dim} values but its num_features is {declared[0]}: "
                         "it still has a classifier; create it with num_classes=0 or call reset_classifier(0)")
    return dim


def _as_size(input_size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        return (3, input_size, input_size)
    s = tuple(int(v) for v in input_size)
    if len(s) == 2:
        return (3, *s)
    if len(s) != 3:
        raise ConfigError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size}")
    return s  # type: ignore[return-value]
