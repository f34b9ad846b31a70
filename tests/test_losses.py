"""KDLoss and hard_labels: equivalences with torch's own losses, sparse == dense, autocast, gradients,
the checks that refuse targets that are not distributions (and accept every legitimate one)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reinforced_data.errors import ConfigError
from reinforced_data.losses import KDLoss, hard_labels

B, C, K = 6, 11, 4


def soft(seed: int = 0, b: int = B, c: int = C, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, c, generator=g, dtype=dtype) * 2, 1)


def logits(seed: int = 1, b: int = B, c: int = C, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=dtype) * 3


def sparse_of(p: torch.Tensor, k: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of dense probabilities, as a reinforcement file stores them (not renormalised)."""
    probs, idx = p.topk(k, dim=1)
    return idx, probs


def dense_of(idx: torch.Tensor, probs: torch.Tensor, c: int = C) -> torch.Tensor:
    """The distribution a sparse target stands for: listed probs + residual spread uniformly."""
    k = idx.shape[1]
    rest = (1 - probs.sum(1, keepdim=True)).clamp_min(0) / (c - k) if k < c else torch.zeros(idx.shape[0], 1,
                                                                                               dtype=probs.dtype)
    return torch.full((idx.shape[0], c), 1.0, dtype=probs.dtype).mul(rest).scatter(1, idx, probs)


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_dense_equals_torch_kl_div(t):
    s, p = logits(), soft()
    want = F.kl_div(F.log_softmax(s / t, 1), p, reduction="batchmean") * t ** 2
    got = KDLoss(temperature=t)(s, p)
    torch.testing.assert_close(got, want)
    assert got.dtype == torch.float32 and got.dim() == 0


@pytest.mark.parametrize("t", [1.0, 3.0])
@pytest.mark.parametrize("k", [1, K, C])
def test_sparse_equals_dense_of_the_same_distribution(t, k):
    s = logits()
    idx, probs = sparse_of(soft(), k)
    got = KDLoss(temperature=t)(s, (idx, probs))
    want = KDLoss(temperature=t)(s, dense_of(idx, probs))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the residual really is spread: a target missing the residual differs
    if k < C:
        missing = torch.zeros(B, C).scatter(1, idx, probs)  # not a distribution: KDLoss refuses it
        other = F.kl_div(F.log_softmax(s / t, 1), missing, reduction="batchmean") * t ** 2
        assert not torch.allclose(other, want)


def test_hard_labels_give_label_smoothed_cross_entropy():
    s = logits()
    y = torch.tensor([0, 3, 10, 2, 2, 7])
    torch.testing.assert_close(KDLoss()(s, y), F.cross_entropy(s, y))
    torch.testing.assert_close(KDLoss(label_smoothing=0.1)(s, y), F.cross_entropy(s, y, label_smoothing=0.1))


@pytest.mark.parametrize("sparse", [False, True])
def test_alpha_mixes_cross_entropy_on_hard_labels(sparse):
    s, p = logits(), soft()
    target = sparse_of(p) if sparse else p
    kd = KDLoss(temperature=2.0)(s, target)
    ce = F.cross_entropy(s, p.argmax(1), label_smoothing=0.1)
    got = KDLoss(temperature=2.0, alpha=0.3, label_smoothing=0.1)(s, target)
    torch.testing.assert_close(got, 0.3 * ce + 0.7 * kd)
    torch.testing.assert_close(KDLoss(alpha=1.0)(s, target), F.cross_entropy(s, p.argmax(1)))


def test_zero_for_the_target_itself_and_positive_otherwise():
    p = soft()
    assert KDLoss()(p.log(), p).abs().item() < 1e-6
    assert KDLoss()(logits(), p).item() > 0.01


@pytest.mark.parametrize("sparse", [False, True])
def test_autocast_bf16_computes_in_float32(sparse):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, C)
    x = torch.randn(B, 16)
    p = soft()
    target = sparse_of(p) if sparse else p
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(x)
        assert out.dtype == torch.bfloat16
        got = KDLoss(temperature=2.0)(out, target)
    assert got.dtype == torch.float32
    want = KDLoss(temperature=2.0)(out.float(), target)  # the same bf16 logits, outside autocast
    torch.testing.assert_close(got, want)
    got.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_gradcheck_float64():
    s = logits(b=3, c=5, dtype=torch.float64).requires_grad_()
    p = soft(b=3, c=5, dtype=torch.float64)
    idx, probs = sparse_of(p, 2)
    y = p.argmax(1)
    assert torch.autograd.gradcheck(lambda z: KDLoss(temperature=2.0)(z, p), (s,))
    assert torch.autograd.gradcheck(lambda z: KDLoss(temperature=2.0, alpha=0.4)(z, (idx, probs)), (s,))
    assert torch.autograd.gradcheck(lambda z: KDLoss(label_smoothing=0.2)(z, y), (s,))
    assert KDLoss()(s, p).dtype == torch.float64


def test_sparse_gradient_equals_dense_gradient():
    p = soft()
    idx, probs = sparse_of(p)
    s1 = logits().requires_grad_()
    s2 = logits().requires_grad_()
    KDLoss(temperature=2.0)(s1, (idx, probs)).backward()
    KDLoss(temperature=2.0)(s2, dense_of(idx, probs)).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-5, atol=1e-7)


def test_hard_labels_of_every_kind():
    p = soft()
    torch.testing.assert_close(hard_labels(p), p.argmax(1))
    idx, probs = sparse_of(p)
    torch.testing.assert_close(hard_labels((idx, probs)), p.argmax(1))
    torch.testing.assert_close(hard_labels([idx, probs]), p.argmax(1))
    y = torch.tensor([4, 0, 1])
    assert hard_labels(y) is y or torch.equal(hard_labels(y), y)
    assert hard_labels(p[0]).item() == p[0].argmax().item()  # one sample
    assert hard_labels((idx[0], probs[0])).item() == idx[0, 0].item()
    with pytest.raises(ConfigError):
        hard_labels([1, 2, 3])


def test_sparse_targets_with_no_room_for_a_residual_are_renormalised():
    s = logits()
    p = soft()
    # every class listed (a mass within the tolerance of 1), or a little more than all of it:
    # e.g. the stored log_uint8 codes, each up to 3.2 % above the teacher's probability
    for k, scale in ((C, 0.97), (C, 1.0), (C, 1.03), (K, 1.03)):
        idx, probs = sparse_of(p, k)
        probs = probs / probs.sum(1, keepdim=True) * scale
        whole = torch.zeros(B, C).scatter(1, idx, probs / probs.sum(1, keepdim=True))
        got = KDLoss()(s, (idx, probs))
        torch.testing.assert_close(got, KDLoss()(s, whole), rtol=1e-5, atol=1e-6)
        assert got > 0
    # the target itself costs nothing, also when stored unnormalised
    idx, probs = sparse_of(p, C)
    assert abs(float(KDLoss()(torch.log(p), (idx, probs * 0.97)))) < 1e-5


def test_bad_arguments_and_shapes_are_clear_errors():
    for kw in ({"temperature": 0.0}, {"temperature": float("inf")}, {"temperature": float("nan")},
               {"alpha": 1.5}, {"label_smoothing": 1.0}):
        with pytest.raises(ConfigError):
            KDLoss(**kw)
    s = logits()
    with pytest.raises(ConfigError, match="dense target"):
        KDLoss()(s, soft(c=C + 1))
    with pytest.raises(ConfigError, match="hard labels"):
        KDLoss()(s, torch.zeros(B + 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="sparse target"):
        KDLoss()(s, (torch.zeros(B, 2, dtype=torch.long), torch.zeros(B, 3)))


# ---------------------------------------------------------------------- target checks
def refused(s: torch.Tensor, target, *words: str, **kw) -> str:
    """The ConfigError (a ValueError) KDLoss raises for ``target``: one line, holding ``words``."""
    with pytest.raises(ConfigError) as e:
        KDLoss(**kw)(s, target)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def bad_row(target: torch.Tensor, row: int, values) -> torch.Tensor:
    target = target.clone()
    target[row] = torch.as_tensor(values, dtype=target.dtype)
    return target


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_dense_targets_that_are_not_distributions_are_refused_naming_the_row(alpha):
    s, p = logits(), soft()
    zero = torch.zeros(C)
    refused(s, bad_row(p, 3, zero), "target row 3 ", "sums to 0, not 1", "probability distributions", alpha=alpha)
    refused(s, bad_row(p, 3, 2 * p[3]), "target row 3 ", "sums to 2, not 1", alpha=alpha)
    neg = p[3].clone()
    neg[0] += neg[1] + 0.25
    neg[1] = -0.25  # still summing to 1
    refused(s, bad_row(p, 3, neg), "target row 3 ", "class 1 the negative probability -0.25", alpha=alpha)
    refused(s, bad_row(p, 3, zero.index_fill(0, torch.tensor([4]), float("nan"))), "target row 3 ",
            "class 4 the probability nan", alpha=alpha)
    refused(s, bad_row(p, 3, zero.index_fill(0, torch.tensor([0]), float("inf"))), "target row 3 ", "inf")
    # the first bad row is named, also on a target of another dtype
    refused(s, bad_row(bad_row(p, 4, zero), 2, zero).half(), "target row 2 ")
    refused(s, torch.zeros(B, C), "target row 0 ")
    # top-k of the teacher without the residual spread: a mass far from 1
    idx, probs = sparse_of(p, 2)
    refused(s, torch.zeros(B, C).scatter(1, idx, probs), "target row", "not 1")


@pytest.mark.parametrize("k", [K, C])
def test_sparse_targets_that_are_not_distributions_are_refused_naming_the_row(k):
    s = logits()
    idx, probs = sparse_of(soft(), k)
    with_row = lambda t, v: bad_row(t, 3, v)  # noqa: E731
    zero, two = ("summing to 0:", "summing to 2, more than 1") if k < C else ("summing to 0, not 1",
                                                                              "summing to 2, not 1")
    refused(s, (idx, with_row(probs, torch.zeros(k))), "sparse target row 3 ", zero)
    refused(s, (idx, with_row(probs, torch.full((k,), 2.0 / k))), "sparse target row 3 ", two)
    neg = probs[3].clone()
    neg[1] = -0.01
    refused(s, (idx, with_row(probs, neg)), "sparse target row 3 ", f"class {int(idx[3, 1])} the negative")
    refused(s, (idx, with_row(probs, neg.fill_(float("nan")))), "sparse target row 3 ", "probability nan")
    refused(s, (idx, with_row(probs, neg.fill_(float("inf")))), "sparse target row 3 ", "probability inf")
    # indices: outside [0, C), or a class listed twice
    for wrong in (C, -1):
        out = idx[3].clone()
        out[-1] = wrong
        refused(s, (with_row(idx, out), probs), "sparse target row 3 ", f"class {wrong}, outside [0, {C})")
    twice = idx[3].clone()
    twice[-1] = twice[0]
    refused(s, (with_row(idx, twice), probs), "sparse target row 3 ", f"class {int(twice[0])} twice", alpha=0.5)


def test_hard_labels_outside_the_classes_are_refused_naming_the_row():
    s = logits()
    for wrong in (C, -1, -100):
        y = torch.tensor([0, 3, 10, 2, wrong, 7])
        refused(s, y, f"hard label row 4 is {wrong}, outside [0, {C})")


def quantised_log_uint8(p: torch.Tensor) -> torch.Tensor:
    """Probabilities as the default store's 8-bit log codes give them back (each up to 3.2 % off)."""
    step = 16.0 / 255
    return torch.exp(-torch.round(-torch.log(p) / step) * step)


def dataset_target(idx: torch.Tensor, stored: torch.Tensor, c: int) -> torch.Tensor:
    """A dense target built as ReinforcedDataset builds it from the stored top-k (float32)."""
    stored = stored.float()
    mass = stored.double().sum(1, keepdim=True)
    k = idx.shape[1]
    whole = (mass >= 1) | (k == c)
    probs = torch.where(whole, stored / mass.float(), stored)
    rest = torch.where(whole, 0.0, (1 - mass) / max(c - k, 1)).float()
    return rest.expand(-1, c).clone().scatter_(1, idx, probs)


@pytest.mark.parametrize("c,k", [(1000, 10), (C, K), (C, C)])
def test_legitimate_targets_pass(c, k):
    """What ReinforcedDataset gives (float16 or log_uint8 top-k, residual spread or renormalised; smoothed
    one-hot), mixed (MixUp, CutMix), in half precision, and stored sparse top-k as it is."""
    g = torch.Generator().manual_seed(0)
    b = 64
    s = torch.randn(b, c, generator=g)
    # flat to very confident teachers: top-k mass from well below 1 to 1 (quantised above it)
    teacher = torch.softmax(torch.randn(b, c, generator=g) * torch.linspace(0.1, 30, b)[:, None], 1)
    probs, idx = teacher.topk(k, dim=1)
    targets = []
    for stored in (probs.half(), quantised_log_uint8(probs)):
        dense = dataset_target(idx, stored, c)
        mass = stored.float().sum(1, keepdim=True)
        targets += [dense, (idx, stored.float()), (idx, torch.where(mass >= 1, stored.float() / mass, stored.float()))]
        lam = torch.rand(b, 1, generator=g)
        targets += [lam * dense + (1 - lam) * dense.flip(0), 0.3 * dense + 0.7 * dense.roll(1, 0)]  # MixUp, CutMix
        targets += [dense.half(), dense.bfloat16(), torch.softmax(torch.randn(b, c, generator=g).bfloat16() * 5, 1)]
    eps = 0.1
    one_hot = torch.full((b, c), eps / c).scatter_(1, teacher.argmax(1, keepdim=True), 1 - eps + eps / c)
    targets += [one_hot, torch.where(torch.arange(b)[:, None] % 2 == 0, one_hot, targets[0])]  # p < 1
    targets += [teacher.argmax(1)]
    for target in targets:
        for kw in ({}, {"temperature": 2.0, "alpha": 0.3}):
            assert torch.isfinite(KDLoss(**kw)(s, target))


@pytest.mark.parametrize("encoding", ["float16", "log_uint8"])
def test_targets_of_a_reinforcement_file_pass(tmp_path, encoding):
    import _reinforce_util as U
    from torch.utils.data import DataLoader

    from reinforced_data.dataset import ReinforcedDataset
    from reinforced_data.policy import Policy
    from reinforced_data.generation import reinforce
    from reinforced_data.synthetic import SyntheticImages

    classes, path = 5, str(tmp_path / "t.h5")
    data = SyntheticImages(16, classes, 16, 16, seed=1)  # originals batch with the uint8 views as they are
    reinforce(data, U.TinyTeacher(classes), path, policy=Policy.preset("rrc_ra_re_mix", output_size=(16, 16)),
              num_views=2, topk=3, progress=False, prob_encoding=encoding)
    s = torch.randn(16, classes)
    for target in ("dense", "sparse"):
        for residual in ("uniform", "renormalize"):
            ds = ReinforcedDataset(data, path, p=0.75, target=target, residual=residual, label_smoothing=0.1,
                                   out_dtype=torch.uint8, seed=0)
            _, batch = next(iter(DataLoader(ds, batch_size=16)))
            assert torch.isfinite(KDLoss(alpha=0.2)(s, batch))


def test_check_targets_false_skips_the_check():
    s, p = logits(), soft()
    assert "check_targets=False" in repr(KDLoss(check_targets=False))
    refused(s, 2 * p, "sums to 2")
    # KL(2p || s) = 2 KL(p || s) + 2 log 2: computed as asked, unchecked
    torch.testing.assert_close(KDLoss(check_targets=False)(s, 2 * p), 2 * KDLoss()(s, p) + 2 * math.log(2))


def test_sparse_targets_need_integer_indices_and_float_probabilities():
    logits = torch.zeros(4, 5)
    idx, probs = torch.tensor([[2], [1], [0], [3]]), torch.full((4, 1), 0.9)
    for bad in ((idx.float() + 0.7, probs), (probs, idx), (idx, idx)):
        with pytest.raises(ConfigError, match="are the two swapped"):
            KDLoss()(logits, bad)
    assert torch.isfinite(KDLoss()(logits, (idx, probs)))
