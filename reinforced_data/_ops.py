"""The compiled replay op ``reinforced_data._C``: quiet loading, thin wrappers, fake kernels.

Importing this module tries to load ``reinforced_data._C`` (whose static initialisers
register ``torch.ops.reinforced_data.{augment, mix, augmix, normalize}``) and says nothing
either way; :func:`compiled_available` and :func:`unavailable_reason` report the outcome.
Only when a call with ``backend="auto"`` actually falls back to the pure-PyTorch
reference does the package warn, once per process tree (DataLoader workers started after
the warning stay quiet), naming the reason and how to build. ``_C`` links against torch's
libraries: load it through this module (which imports torch first), not on its own.
Set ``REINFORCED_DATA_DISABLE_COMPILED=1`` to use the reference even where ``_C`` exists.

The fake (meta) kernels registered here let ``torch.compile`` and FakeTensor tracing run
through the ops; importing ``_C`` on its own imports this module too (csrc/ops.cpp), so
the fakes are registered either way. They check the shapes, dtypes and devices that
``csrc/replay_checks.h`` checks (what does not depend on tensor values), with the same
messages; the checks on the values of the argument rows happen in the real kernels only.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import warnings
from collections.abc import Sequence

import torch

from . import _reference
from ._args import MAX_AUGMIX_CHAINS, NUM_ARGS, NUM_AUGMIX_ARGS, NUM_MIX_ARGS
from .errors import CompiledUnavailableError, ConfigError
from .policy import MAX_OUTPUT_SIZE  # the same bound as csrc/replay_checks.h

__all__ = ["BACKENDS", "DISABLE_ENV", "CompiledUnavailableError", "compiled_available", "unavailable_reason",
           "use_compiled", "augment", "mix", "augmix", "normalize"]

BACKENDS = ("auto", "compiled", "reference")
DISABLE_ENV = "REINFORCED_DATA_DISABLE_COMPILED"
BUILD_HINT = "`pip install --no-build-isolation .` from the source tree (with torch already installed)"


def _load() -> str | None:
    """Import the compiled op; None on success, else why it is unavailable. Never warns."""
    if os.environ.get(DISABLE_ENV) == "1":
        return f"disabled by {DISABLE_ENV}=1"
    try:
        importlib.import_module(f"{__package__}._C")
    except ImportError as e:  # not built, or built against another torch
        return f"{type(e).__name__}: {e}"
    return None


# Why the compiled op is unavailable, or None when it is loaded.
_COMPILED_ERROR: str | None = _load()
_warned = False
_WARNED_ENV = "_REINFORCED_DATA_FALLBACK_WARNED"
_warn_lock = threading.Lock()
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def compiled_available() -> bool:
    """True when the C++ (and, in a CUDA build, CUDA) kernels are loaded."""
    return _COMPILED_ERROR is None


def unavailable_reason() -> str | None:
    """Why the compiled kernels are not loaded (None when they are)."""
    return _COMPILED_ERROR


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    level, frame = 2, sys._getframe(2)  # 1: the function that warns, 2: its caller
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _warn_fallback() -> None:
    global _warned
    with _warn_lock:
        if _warned or os.environ.get(_WARNED_ENV) == "1":
            return
        _warned = True
        # DataLoader workers (forked or spawned) and other child processes inherit this, so a
        # process tree warns once, not once per worker.
        os.environ[_WARNED_ENV] = "1"
    warnings.warn(
        f"reinforced_data: the compiled replay kernels are unavailable ({_COMPILED_ERROR}), so "
        "backend='auto' uses the pure-PyTorch reference, which gives the same bytes but is much "
        f"slower; build the kernels for this torch with {BUILD_HINT}.",
        RuntimeWarning,
        stacklevel=_caller_stacklevel(),
    )


def use_compiled(backend: str) -> bool:
    """Whether a call with this ``backend`` runs the compiled op (warns once on an auto fallback)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not one of {BACKENDS}; pass one of those.")
    if backend == "reference":
        return False
    if _COMPILED_ERROR is None:
        return True
    if backend == "compiled":
        raise CompiledUnavailableError(
            f"backend='compiled' was requested but the compiled op is unavailable ({_COMPILED_ERROR}); "
            f"build it with {BUILD_HINT}, or pass backend='auto'.")
    _warn_fallback()
    return False


# ----------------------------------------------------------------------------- wrappers
def augment(images: Sequence[torch.Tensor], args: torch.Tensor, out_h: int, out_w: int,
            backend: str = "auto") -> torch.Tensor:
    """The ``augment`` op on already-encoded argument rows: uint8 [B, 3, out_h, out_w]."""
    if use_compiled(backend):
        return torch.ops.reinforced_data.augment(list(images), args, out_h, out_w)
    return _reference.augment(list(images), args, out_h, out_w)


def mix(a: torch.Tensor, b: torch.Tensor, args: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The ``mix`` op: MixUp / CutMix of uint8 views ``a`` with partners ``b``."""
    if use_compiled(backend):
        return torch.ops.reinforced_data.mix(a, b, args)
    return _reference.mix(a, b, args)


def augmix(orig: torch.Tensor, chains: torch.Tensor, args: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The ``augmix`` op: the AugMix blend of uint8 crops [B, 3, H, W] with their chains [B, K, 3, H, W]."""
    if use_compiled(backend):
        return torch.ops.reinforced_data.augmix(orig, chains, args)
    return _reference.augmix(orig, chains, args)


def normalize(x: torch.Tensor, lut: torch.Tensor, channels_last: bool = False, backend: str = "auto") -> torch.Tensor:
    """The ``normalize`` op: ``lut[c, x]`` for uint8 x [B, C, H, W]."""
    if use_compiled(backend):
        return torch.ops.reinforced_data.normalize(x, lut, channels_last)
    return _reference.normalize(x, lut, channels_last)


# ------------------------------------------------------------------------- fake kernels
# The same checks, in the same words, as check_augment / check_mix / check_normalize in
# csrc/replay_checks.h, for everything that does not depend on tensor values.
def _augment_fake(images: list[torch.Tensor], args: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    def bad_size() -> str:
        return f"augment: out_h and out_w must lie in [1, {MAX_OUTPUT_SIZE}], got {out_h}x{out_w}"

    for size in (out_h, out_w):
        torch._check(size >= 1, bad_size)
        torch._check(size <= MAX_OUTPUT_SIZE, bad_size)
    torch._check(args.dtype == torch.int32, lambda: f"augment: args must be int32, got {args.dtype}")
    torch._check(args.dim() == 2 and args.size(1) == NUM_ARGS,
                 lambda: f"augment: args must have shape [B, {NUM_ARGS}], got {list(args.shape)}")
    torch._check(len(images) == args.size(0),
                 lambda: f"augment: got {len(images)} images but {args.size(0)} args rows")
    for b, img in enumerate(images):
        torch._check(img.dtype == torch.uint8, lambda: f"augment: images[{b}] must be uint8, got {img.dtype}")
        torch._check(img.dim() == 3 and img.size(0) == 3,
                     lambda: f"augment: images[{b}] must have shape [3, H, W], got {list(img.shape)}")
        torch._check(img.size(1) >= 1 and img.size(2) >= 1, lambda: f"augment: images[{b}] is empty: {list(img.shape)}")
        torch._check(img.device == images[0].device,
                     lambda: f"augment: images[{b}] is on {img.device}, images[0] on {images[0].device}")
    device = images[0].device if images else args.device
    return args.new_empty((len(images), 3, out_h, out_w), dtype=torch.uint8, device=device)


def _mix_fake(a: torch.Tensor, b: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    torch._check(a.dtype == torch.uint8 and b.dtype == torch.uint8,
                 lambda: f"mix: a and b must be uint8, got {a.dtype} and {b.dtype}")
    torch._check(a.dim() == 4 and b.dim() == 4 and all(x == y for x, y in zip(a.shape, b.shape)),
                 lambda: f"mix: a and b must have one shape [B, C, H, W], got {list(a.shape)} and {list(b.shape)}")
    torch._check(a.device == b.device, lambda: f"mix: a is on {a.device}, b on {b.device}")
    torch._check(args.dtype == torch.int32 and args.dim() == 2 and args.size(0) == a.size(0)
                 and args.size(1) == NUM_MIX_ARGS,
                 lambda: f"mix: args must be int32 of shape [{a.size(0)}, {NUM_MIX_ARGS}], got {args.dtype} "
                         f"{list(args.shape)}")
    if a.device.type == "cpu":  # the C++ kernel writes a contiguous batch
        return torch.empty(a.shape, dtype=a.dtype, device=a.device)
    return torch.empty_like(a)  # the CUDA kernel keeps a's memory format


def _augmix_fake(orig: torch.Tensor, chains: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    torch._check(orig.dtype == torch.uint8 and chains.dtype == torch.uint8,
                 lambda: f"augmix: orig and chains must be uint8, got {orig.dtype} and {chains.dtype}")
    torch._check(orig.dim() == 4 and chains.dim() == 5 and chains.size(0) == orig.size(0)
                 and all(x == y for x, y in zip(chains.shape[2:], orig.shape[1:])),
                 lambda: f"augmix: orig must be [B, C, H, W] and chains [B, K, C, H, W], got {list(orig.shape)} and "
                         f"{list(chains.shape)}")
    torch._check(chains.size(1) >= 1 and chains.size(1) <= MAX_AUGMIX_CHAINS,
                 lambda: f"augmix: chains must hold 1 to {MAX_AUGMIX_CHAINS} chains, got {chains.size(1)}")
    torch._check(orig.device == chains.device, lambda: f"augmix: orig is on {orig.device}, chains on {chains.device}")
    torch._check(args.dtype == torch.int32 and args.dim() == 2 and args.size(0) == orig.size(0)
                 and args.size(1) == NUM_AUGMIX_ARGS,
                 lambda: f"augmix: args must be int32 of shape [{orig.size(0)}, {NUM_AUGMIX_ARGS}], got {args.dtype} "
                         f"{list(args.shape)}")
    return torch.empty(orig.shape, dtype=orig.dtype, device=orig.device)


def _normalize_fake(x: torch.Tensor, lut: torch.Tensor, channels_last: bool) -> torch.Tensor:
    torch._check(x.dtype == torch.uint8 and x.dim() == 4,
                 lambda: f"normalize: x must be uint8 [B, C, H, W], got {x.dtype} {list(x.shape)}")
    torch._check(lut.dtype.is_floating_point and lut.dim() == 2 and lut.size(0) == x.size(1) and lut.size(1) == 256,
                 lambda: f"normalize: lut must be floating [{x.size(1)}, 256], got {lut.dtype} {list(lut.shape)}")
    torch._check(lut.device == x.device, lambda: f"normalize: lut is on {lut.device}, x on {x.device}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.new_empty(x.shape, dtype=lut.dtype).contiguous(memory_format=fmt)


if _COMPILED_ERROR is None:
    torch.library.register_fake("reinforced_data::augment")(_augment_fake)
    torch.library.register_fake("reinforced_data::mix")(_mix_fake)
    torch.library.register_fake("reinforced_data::augmix")(_augmix_fake)
    torch.library.register_fake("reinforced_data::normalize")(_normalize_fake)
