"""Teacher ensembles: specs, checkpoints, preprocessing, averaging, non-finite outputs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import _reinforce_util as U
from reinforced_data import teachers as T


# Tiny models: one intra-op thread is fastest, and immune to a busy shared machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def views(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_spec_parsing(tmp_path):
    ckpt = tmp_path / "t.pth"
    ckpt.write_bytes(b"x")
    assert T.TeacherSpec.parse("resnet50.a1_in1k") == T.TeacherSpec(model="resnet50.a1_in1k")
    assert T.TeacherSpec.parse(f"resnet10t={ckpt}") == T.TeacherSpec(model="resnet10t", checkpoint=str(ckpt))
    assert T.TeacherSpec.parse(str(ckpt)) == T.TeacherSpec(checkpoint=str(ckpt))
    assert T.TeacherSpec.parse("pkg.mod:make") == T.TeacherSpec(model="pkg.mod:make")
    s = T.TeacherSpec.parse(json.dumps({"model": "resnet10t", "checkpoint": str(ckpt), "input_size": 64,
                                        "mean": [0.5], "std": [0.25, 0.25, 0.25]}))
    assert s.input_size == (64, 64) and s.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown key"):
        T.TeacherSpec.parse('{"modle": "x"}')
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.TeacherSpec.parse("resnet10t=/no/such/file.pth")


def test_module_member_preprocessing_and_averaging():
    a, b = U.TinyTeacher(5, seed=1), U.TinyTeacher(5, seed=2)
    ens = T.TeacherEnsemble([a, b], input_size=12, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    v = views()
    x = F.interpolate(v.float() / 255, size=(12, 12), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = (torch.softmax(a._one(x), 1) + torch.softmax(b._one(x), 1)) / 2
    got = ens(v)
    assert got.dtype == torch.float32 and got.shape == (6, 5)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got.sum(1), torch.ones(6), atol=1e-5)
    assert ens.num_classes() == 5


def test_eval_mode_no_grad_and_identity():
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(3 * 16 * 16, 4))
    m.train()
    ens = T.TeacherEnsemble(m)
    ens.train()  # stays in eval mode
    assert not m.training
    v = views()
    out = ens(v)
    assert torch.equal(out, ens(v)) and not out.requires_grad  # dropout off, no autograd
    m.train()  # the caller's module switched back to training: the teacher still runs it in eval mode
    assert torch.equal(ens(v), out) and not m.training
    assert all(p.requires_grad for p in m.parameters())  # the caller's module stays trainable
    d = ens.describe()[0]
    assert d["name"] == "Sequential" and d["input_size"] is None and len(d["weights_sha256"]) == 64
    with torch.no_grad():
        m[2].bias += 1
    assert T.weights_sha256(m) != d["weights_sha256"]


def test_nan_and_inf_outputs_name_the_image():
    t = U.TinyTeacher(4, nan_below=-100.0)  # a NaN for every view whose normalised mean is < -100: none
    ens = T.TeacherEnsemble(t)
    ens(views())
    t.nan_below = 10.0  # every view
    with pytest.raises(T.NonFiniteOutputError,
                       match=r"teacher 'TinyTeacher' produced NaN or inf for image 17 \(view 0\)"):
        probs, bad = ens.predict(views(3))
        ens.check_finite(bad, image_indices=[17, 17, 18], view_indices=[0, 1, 0])
    with pytest.raises(T.NonFiniteOutputError, match="for image 41"):
        ens(views(2), image_indices=[41, 42])

    class Inf(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[1, 2] = float("inf")
            return out

    with pytest.raises(T.NonFiniteOutputError, match="for image 8"):
        T.TeacherEnsemble(Inf())(views(2), image_indices=[7, 8])


def test_timm_checkpoint_teacher(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=6)
    path = str(tmp_path / "teacher.pth")
    T.save_checkpoint(model, path, input_size=16)
    for spec in (path, f"test_resnet={path}"):  # architecture from the checkpoint, or named
        ens = T.TeacherEnsemble(spec)
        member = ens.members[0]
        assert member.name == "test_resnet" and member.input_size == (16, 16)
        assert ens.num_classes() == 6
        v = views(4)
        with torch.no_grad():
            mean, std = (torch.tensor(c).view(1, 3, 1, 1) for c in (member.mean, member.std))
            x = (v.float() / 255 - mean) / std
            assert torch.allclose(ens(v), torch.softmax(model.eval()(x), 1), atol=1e-5)
    # a plain state dict: the class count comes from the classifier's weight
    sd_path = str(tmp_path / "sd.pth")
    torch.save({"state_dict": model.state_dict()}, sd_path)
    ens = T.TeacherEnsemble(T.TeacherSpec(model="test_resnet", checkpoint=sd_path, input_size=16))
    assert ens.num_classes() == 6 and ens.describe()[0]["weights_sha256"] == T.weights_sha256(model)
    # without an input size of its own, a checkpoint is fed the view's size, not the size timm's
    # config gives the architecture for other weights
    ens = T.TeacherEnsemble(f"test_resnet={sd_path}")
    assert ens.members[0].input_size is None and ens.describe()[0]["input_size"] is None
    assert timm.models.get_pretrained_cfg("test_resnet").input_size[1:] != (16, 16)
    with pytest.raises(ValueError, match="does not fit timm model 'resnet10t'"):
        T.TeacherEnsemble(f"resnet10t={sd_path}")
    # timm's train.py checkpoints carry the run's argparse.Namespace; a path may contain '='
    import argparse

    run_dir = tmp_path / "lr=0.1"
    run_dir.mkdir()
    train_ckpt = str(run_dir / "model_best.pth.tar")
    torch.save({"arch": "test_resnet", "state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1),
                "epoch": 3}, train_ckpt)
    for spec in (train_ckpt, f"test_resnet={train_ckpt}"):
        ens = T.TeacherEnsemble(T.TeacherSpec.parse(spec))
        assert ens.members[0].name == "test_resnet"
        assert ens.describe()[0]["weights_sha256"] == T.weights_sha256(model)


def test_timm_pretrained_name_goes_through_timm(monkeypatch):
    import timm

    calls = []
    real = timm.create_model

    def fake(name, pretrained=False, **kw):
        calls.append((name, pretrained, kw))
        if name == "offline_model":
            raise RuntimeError("Hub is unreachable")
        return real("test_resnet", pretrained=False, num_classes=3)

    monkeypatch.setattr(timm, "create_model", fake)
    ens = T.TeacherEnsemble("test_resnet.r160_in1k")
    assert calls[0] == ("test_resnet.r160_in1k", True, {})
    assert ens.members[0].input_size == tuple(timm.models.get_pretrained_cfg("test_resnet").input_size[1:])
    with pytest.raises(ValueError, match="cannot create teacher 'offline_model' with pretrained weights .* "
                                         "pass a local checkpoint as offline_model=PATH"):
        T.TeacherEnsemble("offline_model")


def test_factory_spec(tmp_path):
    t = U.tiny_teacher(7)
    path = str(tmp_path / "tiny.pth")
    T.save_checkpoint(t, path, arch="_reinforce_util:tiny_teacher")
    ens = T.TeacherEnsemble(path)
    assert ens.num_classes() == 7 and ens.members[0].name == "_reinforce_util:tiny_teacher"
    assert torch.allclose(ens(views()), T.TeacherEnsemble(t)(views()))
    with pytest.raises(ValueError, match="cannot be imported"):
        T.TeacherEnsemble("no_such_module_xyz:make")


def test_members_must_agree_on_classes():
    ens = T.TeacherEnsemble([U.TinyTeacher(4), U.TinyTeacher(5)])
    with pytest.raises(ValueError, match="different numbers of classes"):
        ens.num_classes()


@pytest.mark.cuda
def test_cuda_bf16_channels_last():
    ens = T.TeacherEnsemble(U.TinyTeacher(4), device="cuda")
    assert ens.amp and ens.channels_last
    out = ens(views().cuda())
    assert out.is_cuda and out.dtype == torch.float32
    assert torch.allclose(out.cpu(), T.TeacherEnsemble(U.TinyTeacher(4))(views()), atol=0.05)


def test_one_spec_parser_for_teachers_and_backbones(tmp_path):
    from reinforced_data._checkpoint import split_spec
    from reinforced_data.ensemble import create_backbone
    from reinforced_data.errors import ConfigError

    run = tmp_path / "lr=0.1"
    run.mkdir()
    ckpt = run / "t.pth"
    ckpt.write_bytes(b"x")
    assert split_spec("hf-hub:timm/resnet10t.a1_in1k") == ("hf-hub:timm/resnet10t.a1_in1k", None)
    assert split_spec(f"resnet10t={ckpt}") == ("resnet10t", str(ckpt))
    assert split_spec(str(ckpt)) == (None, str(ckpt))  # a path containing '='
    for missing in ("runs/missing.pth", "resnet10t=/no/such/file.pth"):  # both users get the same error
        with pytest.raises(FileNotFoundError, match="does not exist"):
            T.TeacherSpec.parse(missing)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            create_backbone(missing)
    # a file that is not a checkpoint: one ConfigError (a ValueError), as the CLI reports it
    with pytest.raises(ConfigError, match="cannot read teacher checkpoint"):
        T.TeacherEnsemble(f"resnet10t={ckpt}")
    with pytest.raises(ConfigError, match="cannot read backbone checkpoint"):
        create_backbone(f"resnet10t={ckpt}")


# ---------------------------------------------------------------------- normalisation: its own, or the student's
POLICY_MEAN, POLICY_STD = (0.8, 0.2, 0.5), (0.15, 0.6, 0.3)
OWN_MEAN, OWN_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_a_bare_member_is_fed_the_students_tensor_bit_for_bit():
    """Without a normalisation of its own a member uses ImageNet's until bound; bound to a policy's
    statistics, its input is exactly the float32 tensor replay (and ReinforcedDataset) makes of the view."""
    import numpy as np

    from reinforced_data.policy import IMAGENET_MEAN, IMAGENET_STD, Policy
    from reinforced_data._replay import replay

    ens = T.TeacherEnsemble(U.TinyTeacher(4))
    member = ens.members[0]
    assert not member.own_normalization and (member.mean, member.std) == (IMAGENET_MEAN, IMAGENET_STD)
    pol = Policy.preset("rrc_ra_re", output_size=(16, 16), mean=POLICY_MEAN, std=POLICY_STD)
    ens.bind_normalization(pol.mean, pol.std)
    assert (member.mean, member.std) == (POLICY_MEAN, POLICY_STD)
    assert (ens.describe()[0]["mean"], ens.describe()[0]["std"]) == (list(POLICY_MEAN), list(POLICY_STD))
    img = torch.randint(0, 256, (3, 24, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    params = pol.sample(np.random.default_rng(0), 8, 24, 30)
    student = replay([img] * 8, params, pol, out_dtype=torch.float32)
    assert torch.equal(member.preprocess(replay([img] * 8, params, pol)), student)
    with torch.no_grad():
        assert torch.equal(ens(replay([img] * 8, params, pol)), torch.softmax(member.model(student), 1))


def _bound(member: T.Teacher) -> tuple:
    member.bind_normalization(POLICY_MEAN, POLICY_STD)
    return member.own_normalization, member.mean, member.std, (member.describe()["mean"], member.describe()["std"])


def test_members_with_their_own_normalisation_keep_it(tmp_path, monkeypatch):
    import timm

    cfg = timm.models.get_pretrained_cfg("test_resnet")
    timm_own = (True, tuple(cfg.mean), tuple(cfg.std), (list(cfg.mean), list(cfg.std)))
    own = (True, OWN_MEAN, OWN_STD, (list(OWN_MEAN), list(OWN_STD)))
    assert _bound(T.Teacher(U.TinyTeacher(4), mean=OWN_MEAN, std=OWN_STD)) == own
    assert _bound(T.TeacherEnsemble(U.TinyTeacher(4), mean=OWN_MEAN, std=OWN_STD).members[0]) == own
    spec = json.dumps({"model": "_reinforce_util:tiny_teacher", "mean": OWN_MEAN, "std": OWN_STD})
    assert _bound(T.TeacherEnsemble(spec).members[0]) == own
    model = timm.create_model("test_resnet", num_classes=4)
    path = str(tmp_path / "t.pth")
    T.save_checkpoint(model, path, mean=OWN_MEAN, std=OWN_STD)  # its data_config
    assert _bound(T.TeacherEnsemble(path).members[0]) == own
    assert _bound(T.TeacherEnsemble(model).members[0]) == timm_own  # a module's pretrained_cfg
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: real("test_resnet", num_classes=3))
    assert _bound(T.TeacherEnsemble("test_resnet.r160_in1k").members[0]) == timm_own  # timm's pretrained weights


def test_members_without_their_own_normalisation_follow_the_policy(tmp_path, caplog):
    import timm

    follows = (False, POLICY_MEAN, POLICY_STD, (list(POLICY_MEAN), list(POLICY_STD)))
    assert _bound(T.TeacherEnsemble(U.TinyTeacher(4)).members[0]) == follows
    assert _bound(T.TeacherEnsemble("_reinforce_util:tiny_teacher").members[0]) == follows
    assert "timm config" not in caplog.text
    # a timm architecture built empty for a checkpoint: its pretrained_cfg describes other weights
    model = timm.create_model("test_resnet", num_classes=4)
    path, sd_path = str(tmp_path / "t.pth"), str(tmp_path / "sd.pth")
    T.save_checkpoint(model, path)
    torch.save({"state_dict": model.state_dict()}, sd_path)
    for spec in (path, f"test_resnet={sd_path}", T.TeacherSpec(model="test_resnet", pretrained=False)):
        member = T.TeacherEnsemble(spec).members[0]
        caplog.clear()
        assert _bound(member) == follows
        assert member.input_size is None  # the view's size: the architecture's config is for other weights
        # the normalisation timm's config claims for other weights is named, in case the checkpoint used it
        cfg = timm.models.get_pretrained_cfg("test_resnet")
        assert f"not the mean {tuple(cfg.mean)}, std {tuple(cfg.std)} its architecture's timm" in caplog.text


def test_mean_and_std_come_together():
    from reinforced_data.errors import ConfigError

    with pytest.raises(ConfigError, match="give mean and std together"):
        T.Teacher(U.TinyTeacher(4), mean=OWN_MEAN)
    with pytest.raises(ConfigError, match="give mean and std together"):
        T.TeacherEnsemble(T.TeacherSpec(model="_reinforce_util:tiny_teacher", std=OWN_STD))
    with pytest.raises(ConfigError, match="pass mean and std together"):
        T.save_checkpoint(U.TinyTeacher(4), "unused.pth", arch="_reinforce_util:tiny_teacher", mean=OWN_MEAN)


def test_non_finite_normalisation_is_refused():
    for mean, std in (((float("nan"), 0.0, 0.0), (1.0, 1.0, 1.0)), ((0.5,) * 3, (float("inf"), 1.0, 1.0))):
        with pytest.raises(T.ConfigError, match="finite"):
            T.Teacher(torch.nn.Linear(3, 2), mean=mean, std=std)
