"""KDLoss and hard_labels: equivalences with torch's own losses, sparse == dense, autocast, gradients."""

from __future__ import annotations

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
        other = KDLoss(temperature=t)(s, torch.zeros(B, C).scatter(1, idx, probs))
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
    for k, scale in ((C, 0.8), (C, 1.0), (K, 1.3)):  # every class listed (any mass), or more than all of it
        idx, probs = sparse_of(p, k)
        probs = probs / probs.sum(1, keepdim=True) * scale
        whole = torch.zeros(B, C).scatter(1, idx, probs / probs.sum(1, keepdim=True))
        got = KDLoss()(s, (idx, probs))
        torch.testing.assert_close(got, KDLoss()(s, whole), rtol=1e-5, atol=1e-6)
        assert got > 0
    # the target itself costs nothing, also when stored unnormalised
    idx, probs = sparse_of(p, C)
    assert abs(float(KDLoss()(torch.log(p), (idx, probs * 0.8)))) < 1e-5


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
