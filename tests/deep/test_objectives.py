"""Per-sample losses against hand computations with torch.nn.functional / numpy references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deep.objectives import (
    OBJECTIVES,
    kl_clean_adv,
    per_sample_loss,
    softmax_margin,
    trades_parts,
)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits_clean = torch.randn(16, 5, generator=gen, dtype=torch.float64) * 3
    logits_adv = logits_clean + torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=gen)
    return logits_adv, logits_clean, y


def test_ce_and_at_are_plain_cross_entropy(batch):
    adv, clean, y = batch
    ce = per_sample_loss("ce", None, clean, y)
    at = per_sample_loss("at", adv, None, y)
    assert ce.shape == (16,)
    torch.testing.assert_close(ce, F.cross_entropy(clean, y, reduction="none"))
    torch.testing.assert_close(at, F.cross_entropy(adv, y, reduction="none"))
    # by hand: -log softmax_y
    p = np.exp(adv.numpy()) / np.exp(adv.numpy()).sum(1, keepdims=True)
    np.testing.assert_allclose(at.numpy(), -np.log(p[np.arange(16), y.numpy()]), rtol=1e-12)


def test_trades_kl_matches_kl_div(batch):
    adv, clean, y = batch
    kl = kl_clean_adv(clean, adv)
    ref = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="none").sum(1)
    torch.testing.assert_close(kl, ref)
    assert torch.all(kl >= 0)
    # identical inputs: zero divergence
    torch.testing.assert_close(kl_clean_adv(clean, clean), torch.zeros(16, dtype=clean.dtype))


def test_trades_loss_and_parts(batch):
    adv, clean, y = batch
    ce_i, kl_i = trades_parts(adv, clean, y)
    torch.testing.assert_close(ce_i, F.cross_entropy(clean, y, reduction="none"))
    ref_kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="none").sum(1)
    torch.testing.assert_close(kl_i, ref_kl)
    total = per_sample_loss("trades", adv, clean, y)  # beta 6 by default
    torch.testing.assert_close(total, ce_i + 6.0 * ref_kl)
    torch.testing.assert_close(
        per_sample_loss("trades", adv, clean, y, beta=1.5), ce_i + 1.5 * kl_i
    )


def _mart_numpy(adv, clean, y, beta):
    """MART written out elementwise from Wang et al. 2020 / SPEC §3 in numpy."""
    out = []
    for a, c, t in zip(adv, clean, y):
        pa = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        pc = np.exp(c - c.max()) / np.exp(c - c.max()).sum()
        top_wrong = max(pa[j] for j in range(len(pa)) if j != t)
        kl = sum(pc[j] * math.log(pc[j] / pa[j]) for j in range(len(pa)))
        out.append(-math.log(pa[t]) - math.log(1.0001 - top_wrong) + beta * kl * (1 - pc[t]))
    return np.array(out)


def test_mart_matches_hand_computation(batch):
    adv, clean, y = batch
    got = per_sample_loss("mart", adv, clean, y)
    np.testing.assert_allclose(
        got.numpy(), _mart_numpy(adv.numpy(), clean.numpy(), y.numpy(), 6.0), rtol=1e-10
    )
    got2 = per_sample_loss("mart", adv, clean, y, beta=2.0)
    np.testing.assert_allclose(
        got2.numpy(), _mart_numpy(adv.numpy(), clean.numpy(), y.numpy(), 2.0), rtol=1e-10
    )


def test_mart_reference_form_with_argsort(batch):
    """The reference code picks the top wrong class with argsort; same value."""
    adv, clean, y = batch
    adv_probs = F.softmax(adv, 1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted = F.cross_entropy(adv, y, reduction="none") + F.nll_loss(
        torch.log(1.0001 - adv_probs), new_y, reduction="none"
    )
    nat_probs = F.softmax(clean, 1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs), nat_probs, reduction="none").sum(1)
    ref = boosted + 6.0 * kl * (1 - true_probs)
    torch.testing.assert_close(per_sample_loss("mart", adv, clean, y), ref)


def test_losses_are_stable_for_extreme_logits():
    y = torch.tensor([0, 1])
    clean = torch.tensor([[200.0, -200.0, 0.0], [0.0, 300.0, -300.0]])
    adv = torch.tensor([[-200.0, 200.0, 0.0], [300.0, 0.0, -300.0]])
    for name in OBJECTIVES:
        loss = per_sample_loss(name, adv, clean, y)
        assert torch.all(torch.isfinite(loss)), name
    # CE(adv) of a confidently wrong prediction is ~ the logit gap
    at = per_sample_loss("at", adv, None, y)
    torch.testing.assert_close(at, torch.tensor([400.0, 300.0]))


def test_mart_gradient_is_finite_when_confident():
    clean = torch.tensor([[50.0, 0.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[0.0, 60.0, 0.0]], requires_grad=True)
    loss = per_sample_loss("mart", adv, clean, torch.tensor([0])).sum()
    loss.backward()
    assert torch.all(torch.isfinite(clean.grad)) and torch.all(torch.isfinite(adv.grad))


def test_softmax_margin_hand_values():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]))
    y = torch.tensor([0, 0, 2])
    m = softmax_margin(logits, y)
    torch.testing.assert_close(m, torch.tensor([0.3 - 0.5, 0.6 - 0.1, 0.2 - 0.6]))
    assert not m.requires_grad


def test_softmax_margin_range(batch):
    adv, _, y = batch
    m = softmax_margin(adv * 10, y)
    assert torch.all(m >= -1) and torch.all(m <= 1)
    wrong = adv.argmax(1) != y
    assert torch.all(m[wrong] >= 0) and torch.all(m[~wrong] <= 0)


def test_gradients_flow_through_losses(batch):
    adv, clean, y = batch
    adv = adv.clone().requires_grad_(True)
    clean = clean.clone().requires_grad_(True)
    per_sample_loss("trades", adv, clean, y).sum().backward()
    assert adv.grad is not None and clean.grad is not None
    assert adv.grad.abs().sum() > 0 and clean.grad.abs().sum() > 0


def test_bad_input_raises(batch):
    adv, clean, y = batch
    with pytest.raises(ValueError, match="objective"):
        per_sample_loss("nope", adv, clean, y)
    with pytest.raises(ValueError, match="beta"):
        per_sample_loss("trades", adv, clean, y, beta=-1.0)
    with pytest.raises(ValueError, match="logits_clean"):
        per_sample_loss("trades", adv, None, y)
    with pytest.raises(ValueError, match="y must"):
        per_sample_loss("at", adv, None, y[:3])
    with pytest.raises(ValueError, match="shape"):
        kl_clean_adv(clean, adv[:, :3])
