"""replay(images, params, policy): rebuild stored augmented views from their parameters.

Dispatches to the compiled op ``torch.ops.reinforced_data.*`` (C++ on CPU tensors, CUDA
on GPU tensors) when ``reinforced_data._C`` is importable, and otherwise to the
pure-PyTorch reference in :mod:`reinforced_data._reference`, which gives the same bytes
more slowly. Order: crop-and-resize → flip → RandAugment ops → erase → (mix) → normalise.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from . import _args, _reference
from .policy import Policy

__all__ = ["replay", "mix", "augment", "normalize", "compiled_available", "BACKENDS"]

log = logging.getLogger(__name__)
BACKENDS = ("auto", "compiled", "reference")


def _load_compiled() -> str | None:
    """Import the compiled op; return None on success, else why it is unavailable."""
    if os.environ.get("REINFORCED_DATA_DISABLE_COMPILED") == "1":
        return "disabled by REINFORCED_DATA_DISABLE_COMPILED=1"
    try:
        importlib.import_module(f"{__package__}._C")  # registers torch.ops.reinforced_data.*
    except ImportError as e:  # missing, or built against another torch
        return f"{type(e).__name__}: {e}"
    return None


_COMPILED_ERROR = _load_compiled()
if _COMPILED_ERROR is not None:
    warnings.warn(
        "reinforced_data: the compiled replay kernels are unavailable "
        f"({_COMPILED_ERROR}); falling back to the pure-PyTorch reference, which gives the "
        "same bytes but is much slower. Build them for this torch with "
        "`pip install --no-build-isolation --force-reinstall .` from the source tree.",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    # Shapes only, for torch.compile / FakeTensor tracing.
    @torch.library.register_fake("reinforced_data::augment")
    def _augment_fake(images, args, out_h, out_w):
        device = images[0].device if images else args.device
        return args.new_empty((len(images), 3, out_h, out_w), dtype=torch.uint8, device=device)

    @torch.library.register_fake("reinforced_data::mix")
    def _mix_fake(a, b, args):
        return torch.empty_like(a)

    @torch.library.register_fake("reinforced_data::normalize")
    def _normalize_fake(x, lut, channels_last):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return x.new_empty(x.shape, dtype=lut.dtype).contiguous(memory_format=fmt)


def compiled_available() -> bool:
    """True when the C++ (and, in a CUDA build, CUDA) kernels are loaded."""
    return _COMPILED_ERROR is None


def _use_compiled(backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
    if backend == "compiled" and _COMPILED_ERROR is not None:
        raise RuntimeError(f"backend='compiled' requested but the compiled op is unavailable: {_COMPILED_ERROR}")
    return backend != "reference" and _COMPILED_ERROR is None


def augment(images: Sequence[torch.Tensor], args: torch.Tensor, out_h: int, out_w: int,
            backend: str = "auto") -> torch.Tensor:
    """The ``augment`` op on already-encoded argument rows: uint8 [B, 3, out_h, out_w]."""
    if _use_compiled(backend):
        return torch.ops.reinforced_data.augment(list(images), args, out_h, out_w)
    return _reference.augment(list(images), args, out_h, out_w)


def mix(a: torch.Tensor, b: torch.Tensor, args: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The ``mix`` op: MixUp / CutMix of uint8 views ``a`` with partners ``b``."""
    if _use_compiled(backend):
        return torch.ops.reinforced_data.mix(a, b, args)
    return _reference.mix(a, b, args)


def normalize(x: torch.Tensor, lut: torch.Tensor, channels_last: bool = False, backend: str = "auto") -> torch.Tensor:
    """The ``normalize`` op: ``lut[c, x]`` for uint8 x [B, C, H, W]."""
    if _use_compiled(backend):
        return torch.ops.reinforced_data.normalize(x, lut, channels_last)
    return _reference.normalize(x, lut, channels_last)


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
            raise ValueError("pass partners and partner_params together")
        # A partner contributes its own stored view, unmixed.
        partner_views = _unmixed_views(partners, partner_params, policy, backend)
        views = mix(views, partner_views, _args.encode_mix(params, policy), backend)
    elif policy.mixing and (params["mix_mode"] != 0).any():
        raise ValueError("these records are mixed views (mix_mode != 0): pass partners and partner_params")
    if out_dtype == torch.uint8:
        return views.contiguous(memory_format=torch.channels_last) if channels_last else views
    if not out_dtype.is_floating_point:
        raise ValueError(f"out_dtype must be torch.uint8 or a floating dtype, got {out_dtype}")
    return normalize(views, _lut(policy, out_dtype, device), channels_last, backend)


def _unmixed_views(images: Sequence[torch.Tensor], params: np.ndarray, policy: Policy, backend: str) -> torch.Tensor:
    """Validate the inputs and run ``augment``: uint8 views before any mixing."""
    images = list(images)
    params = np.atleast_1d(params)
    if len(images) != params.shape[0]:
        raise ValueError(f"got {len(images)} images but {params.shape[0]} parameter records")
    if not images:
        raise ValueError("replay needs at least one image")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
            got = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"images[{i}] must be a uint8 tensor of shape [3, H, W]; got {got}")
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
    # The rows stay on the CPU: every backend validates them on the host anyway.
    rows = _args.encode(params, policy, sizes)
    return augment(images, rows, *policy.output_size, backend)
