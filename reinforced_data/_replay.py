"""replay(images, params, policy): rebuild stored augmented views from their parameters.

Dispatches to the compiled op ``torch.ops.reinforced_data.*`` (C++ on CPU tensors, CUDA
on GPU tensors) when ``reinforced_data._C`` is loaded, and otherwise to the pure-PyTorch
reference in :mod:`reinforced_data._reference`, which gives the same bytes more slowly
(:mod:`reinforced_data._ops` loads the op, wraps it and warns once on a fallback).
Order: crop-and-resize → flip → RandAugment ops → erase → (mix) → normalise. An AugMix policy runs
its stage where RandAugment's runs, in four calls of the same ops (see :func:`_augmix_views`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import _args
from ._ops import _COMPILED_ERROR, BACKENDS, augment, augmix, compiled_available, mix, normalize  # noqa: F401
from .errors import ConfigError
from .policy import Policy

__all__ = ["replay", "mix", "augment", "normalize", "compiled_available", "BACKENDS"]

log = logging.getLogger(__name__)


_LUTS: dict[tuple, torch.Tensor] = {}


def _lut(policy: Policy, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (policy.mean, policy.std, dtype, str(device))
    if key not in _LUTS:
        _LUTS[key] = _args.normalize_lut(policy, dtype).to(device)
    return _LUTS[key]


def replay(
    images: Sequence[torch.Tensor],
    params: np.ndarray,
    policy: Policy,
    out_dtype: torch.dtype = torch.uint8,
    channels_last: bool = False,
    partners: Sequence[torch.Tensor] | None = None,
    partner_params: np.ndarray | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Replay one stored view per image.

    Args:
        images: B uint8 [3, H, W] source images (sizes may differ), all on one device.
        params: B records of ``policy.param_dtype()``.
        policy: the policy the records were sampled under.
        out_dtype: ``torch.uint8`` for raw pixels, or a floating dtype for views
            normalised with the policy's mean and std.
        channels_last: return the batch in channels-last memory format.
        partners, partner_params: for mixing policies, the partner image and its
            stored view for each record; the view is mixed as its ``mix_*`` fields say.
        backend: "auto" (compiled when available), "compiled" or "reference".

    Returns:
        [B, 3, out_h, out_w] tensor of ``out_dtype`` on the images' device.
    """
    views = _unmixed_views(images, params, policy, backend)
    params = np.atleast_1d(params)
    device = views.device
    if partners is not None or partner_params is not None:
        if partners is None or partner_params is None:
            raise ConfigError("pass partners and partner_params together")
        if len(partners) != params.shape[0] or np.atleast_1d(partner_params).shape[0] != params.shape[0]:
            raise ConfigError(
                f"got {params.shape[0]} records but {len(partners)} partners and "
                f"{np.atleast_1d(partner_params).shape[0]} partner records; pass one partner per record"
            )
        # A partner contributes its own stored view, unmixed.
        partner_views = _unmixed_views(partners, partner_params, policy, backend)
        views = mix(views, partner_views, _args.encode_mix(params, policy), backend)
    elif policy.mixing and (params["mix_mode"] != 0).any():
        raise ConfigError("these records are mixed views (mix_mode != 0); pass partners and partner_params.")
    if out_dtype == torch.uint8:
        return views.contiguous(memory_format=torch.channels_last) if channels_last else views
    if not out_dtype.is_floating_point:
        raise ConfigError(f"out_dtype must be torch.uint8 or a floating dtype, got {out_dtype}")
    return normalize(views, _lut(policy, out_dtype, device), channels_last, backend)


def _record_layout(dtype: np.dtype) -> list[tuple[str, tuple[int, ...]]] | None:
    """Field names and shapes of a structured dtype (padding and byte order do not matter)."""
    if dtype.names is None:
        return None
    return [(name, dtype.fields[name][0].shape) for name in dtype.names]


def _check_record_dtype(params: np.ndarray, policy: Policy) -> None:
    """Refuse records sampled under another policy (their fields would be silently ignored)."""
    want = policy.param_dtype()
    got = _record_layout(params.dtype)
    allowed = [_record_layout(want)]
    if not policy.mixing:  # the same policy's mixed records replay as their unmixed views
        allowed.append(allowed[0] + [("mix_mode", ()), ("mix_lam", ()), ("mix_box", (4,))])
    if got not in allowed:
        names = f"fields {list(params.dtype.names)}" if params.dtype.names else f"dtype {params.dtype}"
        raise ConfigError(
            f"params have {names} ({params.dtype}) but this policy's records have fields {list(want.names)} "
            f"({want}); replay the records under the policy they were sampled with (the file's policy)"
        )


def _unmixed_views(images: Sequence[torch.Tensor], params: np.ndarray, policy: Policy, backend: str) -> torch.Tensor:
    """Validate the inputs and run ``augment``: uint8 views before any mixing."""
    images = list(images)
    params = np.atleast_1d(params)
    _check_record_dtype(params, policy)
    if len(images) != params.shape[0]:
        raise ConfigError(f"got {len(images)} images but {params.shape[0]} parameter records")
    if not images:
        raise ConfigError("replay needs at least one image")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
            got = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise ConfigError(f"images[{i}] must be a uint8 tensor of shape [3, H, W]; got {got}")
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
    # The rows stay on the CPU: every backend validates them on the host anyway.
    rows = _args.encode(params, policy, sizes)
    if policy.augmix:
        return _augmix_views(images, params, policy, rows, backend)
    return augment(images, rows, *policy.output_size, backend)


def _augmix_views(images: list[torch.Tensor], params: np.ndarray, policy: Policy, rows: torch.Tensor,
                  backend: str) -> torch.Tensor:
    return augmix_pipeline(images, params, policy, rows,
                           lambda imgs, r, oh, ow: augment(imgs, r, oh, ow, backend),
                           lambda orig, chains, r: augmix(orig, chains, r, backend))


def augmix_pipeline(images: list[torch.Tensor], params: np.ndarray, policy: Policy, rows: torch.Tensor,
                    augment: Callable, augmix: Callable) -> torch.Tensor:
    """AugMix views from the ops every backend has (``augment`` / ``augmix``: one backend's ``augment`` and
    ``augmix``): ``augment`` crops and flips (no ops, no erasing); ``augment`` runs each chain's ops on its view's
    crop (an identity crop: the resampling weights of an n -> n resize are exact, so the crop enters unchanged);
    ``augmix`` blends the chains with the crop; a last ``augment`` (the identity crop again) applies what
    follows the stage (colour jitter, grayscale / blur / solarize, erasing). ``rows``: ``encode``'s rows."""
    oh, ow = policy.output_size
    first = rows.clone()
    first[:, _args.NUM_OPS] = 0
    first[:, _args.ERASE_TOP:_args.ERASE_W + 1] = 0
    crops = augment(images, first, oh, ow)
    chain_rows, mix_rows = _args.encode_augmix(params, policy)
    width = policy.augmix_width
    sources = [crops[i] for i in range(crops.shape[0]) for _ in range(width)]
    chains = augment(sources, chain_rows, oh, ow).view(crops.shape[0], width, 3, oh, ow)
    views = augmix(crops, chains, mix_rows)
    rest = rows[:, _args.NUM_OPS] > 0
    rest |= (rows[:, _args.ERASE_H] > 0) & (rows[:, _args.ERASE_W] > 0)
    if not bool(rest.any()):
        return views
    last = rows.clone()
    last[:, _args.CROP_TOP:_args.CROP_W + 1] = torch.tensor([0, 0, oh, ow], dtype=last.dtype)
    last[:, _args.FLIP] = 0
    last[:, _args.RESIZE_FILTER] = 0
    return augment(list(views), last, oh, ow)
