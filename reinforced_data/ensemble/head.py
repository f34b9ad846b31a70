"""The adaptive ensemble head: N frozen backbones, their pooled features concatenated, one linear
combination layer; its file format (:meth:`AdaptiveEnsembleHead.save` / :meth:`~AdaptiveEnsembleHead.load`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._checkpoint import read_checkpoint
from ..errors import ConfigError
from ..policy import IMAGENET_MEAN, IMAGENET_STD
from .backbones import (_TIMM_KWARGS_ATTR, _TRAINED_SIZE_ATTR, _arch_of, _as_size, _pooled_dim, _rebuild_recipe, create_backbone,
                        decode_settings, stores_refs)

__all__ = ["AdaptiveEnsembleHead", "HEAD_CHECKPOINT_FORMAT"]

logger = logging.getLogger(__name__)

HEAD_CHECKPOINT_FORMAT = "reinforced_data.AdaptiveEnsembleHead"
_HEAD_CHECKPOINT_VERSION = 3  # 2: per-backbone timm_kwargs; 3: classes among them, by name (written only then)
_CFG_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "fixed_input_size")


class AdaptiveEnsembleHead(nn.Module):
    """N backbones to pooled features, concatenated, one ``nn.Linear`` to class logits.

    ``forward(x)``: normalised float images ``[B, 3, H, W]`` -> logits ``[B, num_classes]``.
    ``forward_features(x)`` gives the concatenated features ``[B, sum(feature_dims)]``,
    ``forward_head(f)`` the combination layer (timm's split). With ``freeze_backbones`` the
    backbones get ``requires_grad=False`` and stay in eval mode whatever ``train()`` is
    called with (their BatchNorm statistics do not move): only the combination layer
    learns, ``num_classes * (sum(feature_dims) + 1)`` parameters.

    Feature sizes are found with one eval-mode forward of a dummy ``input_size`` batch.
    ``pretrained_cfg`` (alias ``default_cfg``) records the input size, mean and std the
    backbones expect, from the first backbone's timm config unless given here; all
    backbones see the same batch, so their mean and std must agree. Without ``input_size``
    the size is the one the backbones were trained at by :func:`fit_weak_learner`, else the
    timm default until :func:`fit_combiner` fits the head on images of another size (it then
    records theirs).
    """

    def __init__(self, backbones: Sequence[nn.Module], num_classes: int, freeze_backbones: bool = True, *,
                 input_size: int | Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        backbones = list(backbones)
        if not backbones:
            raise ConfigError("AdaptiveEnsembleHead needs at least one backbone")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        for i, b in enumerate(backbones):
            if not isinstance(b, nn.Module):
                raise TypeError(f"backbone {i} is a {type(b).__name__}, not an nn.Module")
        self.backbones = nn.ModuleList(backbones)
        self._input_size_from = "the input_size argument"
        if input_size is None:
            trained = [(i, s) for i, b in enumerate(backbones)
                       if (s := getattr(b, _TRAINED_SIZE_ATTR, None)) is not None]
            if trained:
                input_size, self._input_size_from = trained[0][1], "the backbones' training data"
                if len({tuple(s) for _, s in trained}) > 1:
                    logger.warning("AdaptiveEnsembleHead: the backbones were trained at different image sizes %s; "
                                   "recording backbone %d's, %s (pass input_size= to choose)",
                                   [tuple(s) for _, s in trained], trained[0][0], tuple(input_size))
            else:
                self._input_size_from = "default"
        self.pretrained_cfg: dict[str, Any] = self._resolve_cfg(backbones, input_size, mean, std)
        ref = next((p for p in self.backbones.parameters()), None)
        dummy = torch.zeros(1, *self.pretrained_cfg["input_size"],
                            device=ref.device if ref is not None else None,
                            dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
        self.feature_dims: list[int] = [_pooled_dim(b, dummy, i) for i, b in enumerate(backbones)]
        self.num_features = sum(self.feature_dims)
        self.num_classes = num_classes
        self.combiner = nn.Linear(self.num_features, num_classes)
        if ref is not None:
            self.combiner.to(device=ref.device)
        self.pretrained_cfg["num_classes"] = num_classes
        self.backbones_frozen = bool(freeze_backbones)
        if self.backbones_frozen:
            self.backbones.requires_grad_(False)
            self.backbones.eval()
        logger.info("AdaptiveEnsembleHead: %d backbones, features %s -> %d classes; %s trainable parameters "
                    "of %s", len(backbones), self.feature_dims, num_classes, f"{self.num_trainable_params:,}",
                    f"{self.num_params:,}")

    @staticmethod
    def _resolve_cfg(backbones: Sequence[nn.Module], input_size: int | Sequence[int] | None,
                     mean: Sequence[float] | None, std: Sequence[float] | None) -> dict[str, Any]:
        cfgs = [(i, getattr(b, "pretrained_cfg", None) or {}) for i, b in enumerate(backbones)]
        cfgs = [(i, c) for i, c in cfgs if c]
        base = dict(cfgs[0][1]) if cfgs else {}
        if mean is None and std is None:
            for i, c in cfgs[1:]:
                for key in ("mean", "std"):
                    a, b = base.get(key), c.get(key)
                    if a is not None and b is not None and not np.allclose(a, b):
                        raise ConfigError(f"backbone {i} expects {key}={tuple(b)} but backbone {cfgs[0][0]} "
                                         f"expects {tuple(a)}; all backbones see one batch, so pass mean= and "
                                         "std= explicitly or use backbones with the same normalisation")
        cfg = {k: base[k] for k in _CFG_KEYS if k in base}
        if input_size is not None:
            cfg["input_size"] = _as_size(input_size)
        cfg.setdefault("input_size", (3, 224, 224))
        cfg["input_size"] = tuple(cfg["input_size"])
        cfg["mean"] = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", IMAGENET_MEAN)))
        cfg["std"] = tuple(float(v) for v in (std if std is not None else cfg.get("std", IMAGENET_STD)))
        cfg.setdefault("interpolation", "bicubic")
        cfg.setdefault("crop_pct", 0.875)
        archs = [_arch_of(b) or type(b).__name__ for b in backbones]
        cfg["architecture"] = "adaptive_ensemble[" + ",".join(archs) + "]"
        return cfg

    def _fitted_at(self, size: Sequence[int] | None, who: str) -> None:
        """Record the image size ``(C, H, W)`` the head was fitted on, unless the size was chosen (then warn
        when they differ): a teacher resizes every view to ``pretrained_cfg["input_size"]``."""
        if size is None:
            return
        size, have = tuple(int(v) for v in size), tuple(self.pretrained_cfg["input_size"])
        if size == have:
            return
        if self._input_size_from == "default":
            logger.info("%s: fitted on %s images; the head records that input size (it had the default %s)",
                        who, size, have)
            self.pretrained_cfg["input_size"] = size
            self._input_size_from = "training data"
        else:
            logger.warning("%s: fitted on %s images, but the head records input_size %s (from %s), so a teacher "
                           "will resize every view to %s; build the head with input_size=%s if the data's size "
                           "is meant", who, size, have, self._input_size_from, have, size[1:])

    @property
    def default_cfg(self) -> dict[str, Any]:
        """Alias of ``pretrained_cfg``, as on timm models."""
        return self.pretrained_cfg

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def num_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def get_classifier(self) -> nn.Linear:
        return self.combiner

    def train(self, mode: bool = True) -> AdaptiveEnsembleHead:
        super().train(mode)
        if self.backbones_frozen:
            self.backbones.eval()
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        """Concatenated pooled features ``[B, sum(feature_dims)]``."""
        feats = [b(x) for b in self.backbones]
        return torch.cat(feats, dim=1)

    def split_features(self, features: Tensor) -> list[Tensor]:
        """Cut concatenated features ``[B, sum(feature_dims)]`` back into one block per backbone."""
        return list(torch.split(features, self.feature_dims, dim=-1))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.combiner(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return (f"feature_dims={self.feature_dims}, num_classes={self.num_classes}, "
                f"frozen={self.backbones_frozen}, trainable_params={self.num_trainable_params}")

    # ------------------------------------------------------------------ construction and files

    @classmethod
    def from_timm(cls, names_or_checkpoints: Sequence[str | os.PathLike], num_classes: int, *,
                  pretrained: bool = True, freeze_backbones: bool = True,
                  input_size: int | Sequence[int] | None = None, **timm_kwargs: Any) -> AdaptiveEnsembleHead:
        """Build the backbones with :func:`create_backbone` (``num_classes=0``) and the head.

        Each entry is a timm name (timm's weights when ``pretrained``), ``"name=PATH"`` or a
        checkpoint path naming its architecture. ``timm_kwargs`` go to ``timm.create_model``.
        """
        if isinstance(names_or_checkpoints, (str, os.PathLike)):
            names_or_checkpoints = [names_or_checkpoints]
        backbones = [create_backbone(s, pretrained=pretrained, **timm_kwargs) for s in names_or_checkpoints]
        return cls(backbones, num_classes, freeze_backbones, input_size=input_size)

    def save(self, path: str | os.PathLike) -> None:
        """Write the head (backbones and combination layer) to one file; see :meth:`load`."""
        recipes = [_rebuild_recipe(b, i, input_size=self.pretrained_cfg["input_size"])
                   for i, b in enumerate(self.backbones)]
        archs = [a for a, _ in recipes]
        version = 3 if any(stores_refs(kw) for _, kw in recipes) else 2  # older readers refuse what they cannot read
        torch.save({"format": HEAD_CHECKPOINT_FORMAT, "version": version, "archs": archs,
                    "timm_kwargs": [kw for _, kw in recipes],
                    "feature_dims": list(self.feature_dims), "num_classes": self.num_classes,
                    "freeze_backbones": self.backbones_frozen, "pretrained_cfg": dict(self.pretrained_cfg),
                    "state_dict": self.state_dict()}, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AdaptiveEnsembleHead:
        """Rebuild a head written by :meth:`save` (timm architectures, no download), on the device
        ``map_location``."""
        try:
            device = torch.device(map_location)
        except (TypeError, RuntimeError):
            raise ConfigError(f"map_location must name a device (e.g. 'cpu', 'cuda:0'), got {map_location!r}") from None
        path = os.fspath(path)
        return cls.from_checkpoint(read_checkpoint(path, "AdaptiveEnsembleHead file"), path).to(device)

    @staticmethod
    def is_checkpoint(obj: Any) -> bool:
        """Whether a loaded checkpoint object was written by :meth:`save`."""
        return isinstance(obj, dict) and obj.get("format") == HEAD_CHECKPOINT_FORMAT

    @classmethod
    def from_checkpoint(cls, ckpt: Any, path: str = "<checkpoint>") -> AdaptiveEnsembleHead:
        """Rebuild a head from the loaded contents of a :meth:`save` file (``path`` names it in errors)."""
        import timm

        if not cls.is_checkpoint(ckpt):
            raise ConfigError(f"{path!r} is not an AdaptiveEnsembleHead checkpoint (written by head.save())")
        if int(ckpt.get("version", 0)) > _HEAD_CHECKPOINT_VERSION:
            raise ConfigError(f"{path!r} has head format version {ckpt['version']}, newer than this reinforced_data "
                             f"reads ({_HEAD_CHECKPOINT_VERSION}); upgrade reinforced_data")
        cfg = ckpt["pretrained_cfg"]
        stored = ckpt.get("timm_kwargs") or [{} for _ in ckpt["archs"]]  # version 1 files: none recorded
        kwargs = [decode_settings(kw, f"head checkpoint {path!r}") for kw in stored]
        backbones = [timm.create_model(a, pretrained=False, num_classes=0, **kw) for a, kw in zip(ckpt["archs"], kwargs)]
        for b, kw in zip(backbones, kwargs):
            setattr(b, _TIMM_KWARGS_ATTR, dict(kw))
        head = cls(backbones, int(ckpt["num_classes"]), bool(ckpt.get("freeze_backbones", True)),
                   input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"])
        if head.feature_dims != list(ckpt["feature_dims"]):
            raise ConfigError(f"head checkpoint {path!r} was trained on feature sizes {list(ckpt['feature_dims'])} "
                             f"but its backbones {ckpt['archs']} give {head.feature_dims}; the file is inconsistent")
        w = ckpt["state_dict"].get("combiner.weight")
        if w is None or tuple(w.shape) != (head.num_classes, head.num_features):
            got = None if w is None else list(w.shape)
            raise ConfigError(f"head checkpoint {path!r} has a combination layer of shape {got} but "
                             f"{[head.num_classes, head.num_features]} is needed; the file is inconsistent")
        own = head.state_dict()
        for k in sorted(set(own) | set(ckpt["state_dict"])):
            v = ckpt["state_dict"].get(k)
            if k not in own or v is None or own[k].shape != v.shape:
                raise ConfigError(f"head checkpoint {path!r} does not fit its backbones at {k!r}; "
                                 "the file is inconsistent")
        head.load_state_dict(ckpt["state_dict"], strict=True)
        head._input_size_from = f"the file {path}"
        for k in ("interpolation", "crop_pct", "crop_mode", "fixed_input_size"):
            if k in cfg:
                head.pretrained_cfg[k] = cfg[k]
        return head
