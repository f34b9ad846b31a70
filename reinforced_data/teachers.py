"""Teacher ensembles: the models that label every reinforced view.

A :class:`TeacherEnsemble` holds one or more members, each a classifier with its own
input size and normalisation, and maps a batch of uint8 views ``[B, 3, H, W]`` (as
``replay`` makes them) to the average of the members' softmax probabilities
``[B, num_classes]`` (float32). Members come from

* a timm model name (``"convnext_base.fb_in22k_ft_in1k"``): pretrained weights through
  timm (its cache or hub) and timm's pretrained config for input size and normalisation;
* a timm model name and a local checkpoint (``"resnet50=/ckpt/teacher.pth"``: a state
  dict, bare or under ``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model``, loaded with
  ``weights_only=True``), or a checkpoint alone when it names its architecture
  (``arch``), as :func:`save_checkpoint` writes;
* a file written by ``AdaptiveEnsembleHead.save`` (``"head.pth"``): the head, its timm
  backbones rebuilt from the architectures it names;
* ``"package.module:callable"`` (optionally ``=checkpoint``), a factory returning a module;
* any ``nn.Module`` (e.g. ``reinforced_data.ensemble.AdaptiveEnsembleHead``) that maps
  normalised images to logits.

Members run in eval mode under ``torch.inference_mode``; on a GPU in channels-last
memory format under bf16 autocast. A module you pass is used in place: moved to the
ensemble's device and put in eval mode; its parameters' ``requires_grad`` is left alone.
Each member's view is normalised with its mean and std (through the lookup table replay
normalises with), then resized (bilinear, antialiased) to its input size when that
differs from the view's. Non-finite outputs raise :class:`NonFiniteOutputError` naming
the image.

Normalisation: a teacher that has its own keeps it: ``mean`` / ``std`` given here, a
checkpoint's ``data_config`` (:func:`save_checkpoint`), or the ``pretrained_cfg`` of the
module (timm models, ``AdaptiveEnsembleHead``; for a timm name, only when timm's
pretrained weights are loaded: the config of an architecture built for a checkpoint does
not describe the checkpoint's weights). Any other teacher is fed exactly what the student
gets, the view normalised with the policy's mean and std: generation binds them
(:meth:`TeacherEnsemble.bind_normalization`); a stand-alone ensemble uses ImageNet's (the
default ``Policy``'s) until then.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import _reference
from ._args import normalization_lut
from ._checkpoint import classifier_names, read_checkpoint, split_spec, state_dict_of
from .errors import ConfigError, NonFiniteOutputError
from .policy import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["TeacherSpec", "Teacher", "TeacherEnsemble", "NonFiniteOutputError", "save_checkpoint", "weights_sha256"]

log = logging.getLogger(__name__)


def _pair(v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) == 3:  # timm's (C, H, W)
        v = v[1:]
    if len(v) != 2 or min(v) < 1:
        raise ConfigError(f"input_size {v} must be one size or (height, width)")
    return v


def _triple(name: str, v: Any) -> tuple[float, float, float] | None:
    if v is None:
        return None
    v = tuple(float(x) for x in v)
    if len(v) == 1:
        v = v * 3
    if len(v) != 3:
        raise ConfigError(f"{name} needs 3 values (one per channel), got {v}")
    return v


@dataclass
class TeacherSpec:
    """How to build one teacher. :meth:`parse` reads the command-line forms.

    ``model``: a timm model name, or ``"package.module:callable"``; ``checkpoint``: a
    local weights file; ``pretrained``: load timm's pretrained weights (default: when no
    checkpoint is given); ``num_classes``: inferred from the checkpoint when omitted;
    ``input_size`` / ``mean`` / ``std``: override timm's pretrained config and the
    checkpoint's; without a ``mean`` and ``std`` of its own the teacher is fed the
    student's normalisation (the policy's; see :class:`Teacher`).
    """

    model: str | None = None
    checkpoint: str | None = None
    pretrained: bool | None = None
    num_classes: int | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @classmethod
    def parse(cls, text: str) -> "TeacherSpec":
        """``NAME`` | ``NAME=CHECKPOINT`` | ``CHECKPOINT`` | ``module:callable[=CHECKPOINT]`` | a JSON object."""
        text = text.strip()
        if text.startswith("{"):
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"teacher spec {text!r} is not valid JSON ({e})") from None
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(d) - known)
            if unknown:
                raise ConfigError(f"teacher spec has unknown key(s) {unknown}; known: {sorted(known)}")
            return cls(**d)
        model, ckpt = split_spec(text)
        return cls(model=model, checkpoint=ckpt)

    def __post_init__(self) -> None:
        self.input_size = _pair(self.input_size)
        self.mean = _triple("mean", self.mean)
        self.std = _triple("std", self.std)
        if self.model is None and self.checkpoint is None:
            raise ConfigError("a teacher needs a model name, a checkpoint, or both")
        if self.checkpoint is not None and not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(f"teacher checkpoint {self.checkpoint} does not exist")


def weights_sha256(module: nn.Module) -> str:
    """A hash of a module's state (names, dtypes, shapes and bytes), to identify a teacher."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
                     else t.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, arch: str | None = None,
                    input_size: int | Sequence[int] | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> str:
    """Save a teacher so that ``TeacherSpec.parse(path)`` rebuilds it: the state dict, the timm
    architecture name (default: ``model.pretrained_cfg['architecture']``), the class count,
    and the input size / normalisation it expects."""
    if arch is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        arch = cfg.get("architecture")
    if arch is None:
        raise ConfigError("pass arch= (a timm model name or 'module:callable') to save this model")
    if (mean is None) != (std is None):
        raise ConfigError("pass mean and std together, or neither to have the teacher fed the policy's normalisation")
    data = {
        "arch": arch,
        "state_dict": model.state_dict(),
        "num_classes": int(getattr(model, "num_classes", 0)) or None,
        "data_config": {"input_size": list(_pair(input_size)) if input_size is not None else None,
                        "mean": list(mean) if mean is not None else None,
                        "std": list(std) if std is not None else None},
    }
    torch.save(data, os.fspath(path))
    return os.fspath(path)


def _infer_num_classes(arch: str, sd: dict) -> int | None:
    for name in [*classifier_names(arch), "fc", "head.fc", "classifier", "head"]:
        w = sd.get(f"{name}.weight")
        if w is not None and w.dim() == 2:
            return int(w.shape[0])
    return None


def _build_from_spec(spec: TeacherSpec) -> tuple[nn.Module, dict]:
    """(model, data config) for a spec; data config keys: name, checkpoint, pretrained_cfg_describes_weights (whether
    the model's ``pretrained_cfg`` describes the weights it holds), and input_size, mean, std where known."""
    from .ensemble import AdaptiveEnsembleHead

    ckpt = read_checkpoint(spec.checkpoint, "teacher checkpoint") if spec.checkpoint else None
    data_cfg: dict = {}
    if AdaptiveEnsembleHead.is_checkpoint(ckpt):
        if spec.model is not None:
            raise ConfigError(f"{spec.checkpoint} is an AdaptiveEnsembleHead file (head.save()), which names its own "
                             f"backbones; give it without a model name, not as {spec.model}={spec.checkpoint}")
        model = AdaptiveEnsembleHead.from_checkpoint(ckpt, spec.checkpoint)
        name = "AdaptiveEnsembleHead(" + " + ".join(ckpt["archs"]) + ")"
        cfg_describes_weights = True  # the head's pretrained_cfg is the one the file stores
    else:
        name = spec.model or (ckpt.get("arch") if ckpt else None)
        if name is None:
            raise ConfigError(f"teacher checkpoint {spec.checkpoint} does not name its architecture ('arch'); "
                             "give it as NAME=CHECKPOINT")
        data_cfg.update((ckpt or {}).get("data_config") or {})
        sd = state_dict_of(ckpt) if ckpt is not None else None
        num_classes = spec.num_classes or (ckpt or {}).get("num_classes")
        if ":" in name and not name.startswith(("hf-hub:", "hf_hub:")):
            model, what = _model_from_factory(name, num_classes, spec.num_classes is not None), "the module"
            cfg_describes_weights = sd is None  # the module as its factory made it
        else:
            model, what = _timm_model(name, sd, num_classes, spec.pretrained), "timm model"
            cfg_describes_weights = sd is None and spec.pretrained is not False  # timm's pretrained weights
        if sd is not None:
            try:
                model.load_state_dict(sd)
            except RuntimeError as e:
                why = " ".join(str(e).split())
                raise ConfigError(f"checkpoint {spec.checkpoint} does not fit {what} {name!r}: "
                                 f"{why[:400]}{'...' if len(why) > 400 else ''}") from None
    for key, val in (("input_size", spec.input_size), ("mean", spec.mean), ("std", spec.std)):
        if val is not None:
            data_cfg[key] = val
    return model, {"name": name, "checkpoint": spec.checkpoint, "pretrained_cfg_describes_weights": cfg_describes_weights,
                   **{k: v for k, v in data_cfg.items() if v is not None}}


def _model_from_factory(ref: str, num_classes: int | None, insist: bool) -> nn.Module:
    """``module:callable`` → the module it returns; ``num_classes`` is passed when the factory takes it
    (``insist``: it was asked for explicitly, so a factory that refuses it is an error)."""
    mod_name, fn_name = ref.split(":", 1)
    try:
        factory = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"teacher factory {ref!r} cannot be imported ({e})") from None
    try:
        model = factory(num_classes=num_classes) if num_classes else factory()
    except TypeError:
        if insist:
            raise
        model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"teacher factory {ref!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _timm_model(arch: str, sd: dict | None, num_classes: int | None, pretrained: bool | None) -> nn.Module:
    """A timm model: empty when weights ``sd`` will be loaded into it, else with timm's pretrained weights."""
    import timm

    if sd is not None:
        num_classes = num_classes or _infer_num_classes(arch, sd)
        kwargs = {"num_classes": num_classes} if num_classes else {}
        try:
            return timm.create_model(arch, pretrained=False, **kwargs)
        except RuntimeError as e:
            raise ConfigError(f"timm cannot build teacher {arch!r} ({e})") from None
    kwargs = {"num_classes": num_classes} if num_classes else {}
    try:
        return timm.create_model(arch, pretrained=True if pretrained is None else pretrained, **kwargs)
    except Exception as e:  # noqa: BLE001 - network, hub or name errors all end here
        raise ConfigError(
            f"timm cannot create teacher {arch!r} with pretrained weights ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); without network access pass a local "
            f"checkpoint as {arch}=PATH") from None


def _timm_data_config(model: nn.Module) -> dict:
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        return {}
    try:
        import timm

        dc = timm.data.resolve_model_data_config(model)
        return {"input_size": dc["input_size"], "mean": dc["mean"], "std": dc["std"]}
    except Exception:  # noqa: BLE001 - not a timm model after all
        return {}


class Teacher(nn.Module):
    """One member: a classifier and the preprocessing it expects.

    ``input_size`` None keeps the view's size unless the model's ``pretrained_cfg`` names
    one. ``mean`` / ``std``: the normalisation of the teacher's own, given or read from the
    model's ``pretrained_cfg`` (timm models, ``AdaptiveEnsembleHead``). Neither the config's
    input size nor its normalisation is used when ``pretrained_cfg_describes_weights`` is False
    (a config that does not describe the weights, e.g. a timm architecture built empty for a
    checkpoint: it is fed the size and normalisation its checkpoint's ``data_config`` names, else
    the view's size and the student's normalisation). Without one
    (``own_normalization`` False) the teacher is fed the student's normalisation:
    :meth:`bind_normalization` sets it (generation binds the policy's), ImageNet's until then.
    ``mean`` / ``std`` always hold the normalisation in use.
    """

    def __init__(self, model: nn.Module, name: str | None = None, input_size: int | Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 checkpoint: str | None = None, *, pretrained_cfg_describes_weights: bool = True) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"a teacher must be an nn.Module, got {type(model).__name__}")
        timm_cfg = _timm_data_config(model)
        self.model = model.eval()
        self.name = name or type(model).__name__
        self.checkpoint = checkpoint
        # timm's config (input size, normalisation) counts only where it describes the weights the model holds
        own = timm_cfg if pretrained_cfg_describes_weights else {}
        self.input_size = _pair(input_size if input_size is not None else own.get("input_size"))
        mean = mean if mean is not None else own.get("mean")
        std = std if std is not None else own.get("std")
        if (mean is None) != (std is None):
            raise ConfigError(f"teacher {self.name}: give mean and std together, or neither to feed it the "
                              "student's normalisation (the policy's mean and std)")
        self.own_normalization = mean is not None
        # the normalisation a config claims for weights this model does not hold: a hint when it is not used
        self._config_claims = None if self.own_normalization or "mean" not in timm_cfg or "std" not in timm_cfg \
            else (_triple("mean", timm_cfg["mean"]), _triple("std", timm_cfg["std"]))
        self._set_normalization(mean if mean is not None else IMAGENET_MEAN, std if std is not None else IMAGENET_STD)
        self.weights_sha256 = weights_sha256(model)

    def _set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = _triple("mean", mean)
        self.std = _triple("std", std)
        if not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
            raise ConfigError(f"teacher {self.name}: mean {self.mean} must be finite and std {self.std} finite and "
                              "positive")
        old = getattr(self, "_lut", None)
        lut = normalization_lut(self.mean, self.std, torch.float32)
        self.register_buffer("_lut", lut if old is None else lut.to(old.device), persistent=False)

    def bind_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Feed this teacher views normalised with ``mean`` / ``std`` unless it has a normalisation of its own."""
        if self.own_normalization:
            return
        self._set_normalization(mean, std)
        claims = self._config_claims
        if claims is not None and max(abs(a - b) for a, b in zip(claims[0] + claims[1], self.mean + self.std)) > 1e-6:
            log.warning("teacher %s is fed the student's normalisation (mean %s, std %s), not the mean %s, std %s its "
                        "architecture's timm config gives for other weights; if its checkpoint was trained with "
                        "those, give them as mean/std in its spec", self.name, self.mean, self.std, *claims)

    def preprocess(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] → float32, normalised as replay normalises views, then resized to the input size."""
        if views.dtype != torch.uint8:
            raise ConfigError(f"teacher {self.name} takes uint8 views [B, 3, H, W]; got {views.dtype}")
        x = _reference.normalize(views, self._lut)  # the normalize op's specification: the same table, same values
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(views))

    def describe(self) -> dict:
        """What the stored file says of this teacher: ``mean`` / ``std`` and ``input_size`` as it was fed."""
        return {"name": self.name, "checkpoint": os.path.abspath(self.checkpoint) if self.checkpoint else None,
                "input_size": list(self.input_size) if self.input_size else None, "mean": list(self.mean),
                "std": list(self.std), "weights_sha256": self.weights_sha256}


class TeacherEnsemble(nn.Module):
    """Average of the members' probabilities for uint8 views.

    ``members``: teacher specs (strings or :class:`TeacherSpec`), :class:`Teacher`
    objects, or plain ``nn.Module`` classifiers (which get ``input_size`` / ``mean`` /
    ``std`` from these arguments, or their ``pretrained_cfg``). A member without a
    normalisation of its own is fed the student's: :meth:`bind_normalization` (generation
    binds the policy's mean and std), ImageNet's until then.
    ``amp`` (bf16 autocast) and ``channels_last`` default to True on CUDA devices.
    """

    def __init__(self, members: Sequence[nn.Module | Teacher | TeacherSpec | str] | nn.Module | str,
                 device: str | torch.device | None = None, input_size: int | Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 amp: bool | None = None, channels_last: bool | None = None) -> None:
        super().__init__()
        if isinstance(members, (nn.Module, str, TeacherSpec)) and not isinstance(members, TeacherEnsemble):
            members = [members]
        if isinstance(members, TeacherEnsemble):
            members = list(members.members)
        if not members:
            raise ConfigError("a teacher ensemble needs at least one teacher")
        built = []
        for m in members:
            if isinstance(m, Teacher):
                built.append(m)
                continue
            if isinstance(m, str):
                m = TeacherSpec.parse(m)
            if isinstance(m, TeacherSpec):
                model, cfg = _build_from_spec(m)
                built.append(Teacher(model, name=cfg["name"], input_size=cfg.get("input_size", input_size),
                                     mean=cfg.get("mean", mean), std=cfg.get("std", std), checkpoint=cfg["checkpoint"],
                                     pretrained_cfg_describes_weights=cfg["pretrained_cfg_describes_weights"]))
            elif isinstance(m, nn.Module):
                built.append(Teacher(m, input_size=input_size, mean=mean, std=std))
            else:
                raise TypeError(f"cannot make a teacher of a {type(m).__name__}")
        self.members = nn.ModuleList(built)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        cuda = self.device.type == "cuda"
        self.amp = cuda if amp is None else amp
        self.channels_last = cuda if channels_last is None else channels_last
        self.to(self.device)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self.eval()
        self._num_classes: int | None = None

    def train(self, mode: bool = True) -> "TeacherEnsemble":  # teachers always stay in eval mode
        return super().train(False)

    def describe(self) -> list[dict]:
        return [m.describe() for m in self.members]

    def bind_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Feed the members without a normalisation of their own views normalised with ``mean`` / ``std``: the
        tensor a student gets from ``ReinforcedDataset`` under a policy with these statistics."""
        for m in self.members:
            m.bind_normalization(mean, std)
            size = "x".join(map(str, m.input_size)) + " px" if m.input_size else "the view's size"
            log.info("teacher %s: fed views at %s, normalised with mean %s, std %s (%s)", m.name, size, m.mean,
                     m.std, "its own" if m.own_normalization else "the student's")

    def num_classes(self, view_size: Sequence[int] = (32, 32)) -> int:
        """The number of classes every member predicts (one dummy forward, then cached)."""
        if self._num_classes is None:
            x = torch.zeros((1, 3, *_pair(tuple(view_size))), dtype=torch.uint8, device=self.device)
            counts = []
            with torch.inference_mode():
                for m in self.members:
                    out = self._run(m, x)
                    if out.dim() != 2:
                        raise ConfigError(
                            f"teacher {m.name} returns shape {tuple(out.shape)}; expected [batch, classes]")
                    counts.append(int(out.shape[1]))
            if len(set(counts)) != 1:
                names = ", ".join(f"{m.name}: {c}" for m, c in zip(self.members, counts))
                raise ConfigError(f"the teachers predict different numbers of classes ({names})")
            self._num_classes = counts[0]
        return self._num_classes

    def _run(self, member: Teacher, views: torch.Tensor) -> torch.Tensor:
        if member.model.training:  # the caller's module, switched to train mode since: teachers run in eval mode
            member.model.eval()
        x = member.preprocess(views)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return member.model(x).float()

    @torch.inference_mode()
    def predict(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [B, C] float32, non-finite mask [members, B] bool), without synchronising."""
        if views.dtype != torch.uint8 or views.dim() != 4 or views.shape[1] != 3:
            raise ConfigError(f"teachers take uint8 views [B, 3, H, W]; got {views.dtype} {tuple(views.shape)}")
        views = views.to(self.device, non_blocking=True)
        probs = None
        bad = []
        for m in self.members:
            logits = self._run(m, views)
            bad.append(~torch.isfinite(logits).all(dim=1))
            p = torch.softmax(logits, dim=1)
            probs = p if probs is None else probs + p
        return probs / len(self.members), torch.stack(bad)

    def check_finite(self, bad: torch.Tensor, image_indices: Sequence[int] | None = None,
                     view_indices: Sequence[int] | None = None) -> None:
        """Raise :class:`NonFiniteOutputError` naming the first image whose view got NaN or inf."""
        bad = bad.cpu()
        if not bool(bad.any()):
            return
        member, row = [int(v) for v in torch.nonzero(bad)[0]]
        where = f"view {row} of the batch"
        if image_indices is not None:
            where = f"image {int(image_indices[row])}"
            if view_indices is not None:
                where += f" (view {int(view_indices[row])})"
        raise NonFiniteOutputError(
            f"teacher {self.members[member].name!r} produced NaN or inf for {where}; generation stopped")

    def forward(self, views: torch.Tensor, image_indices: Sequence[int] | None = None) -> torch.Tensor:
        """Averaged probabilities [B, C] (float32); raises on non-finite teacher outputs."""
        probs, bad = self.predict(views)
        self.check_finite(bad, image_indices)
        return probs

