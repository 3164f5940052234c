"""CFA, WAT and DAFA (deep.methods): each update rule and loss against a literal port of the
official code's formula (written here from the reference code's logic) on random inputs,
hand-worked values, and the reference code's flaws not copied."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from deep import distributed as dd
from deep.attacks import pgd_attack, trades_attack
from deep.data import ImageSplit
from deep.methods.base import EpochEnd, ModelAverage, TrainBatch, classwise_sums
from deep.methods.cfa import (
    CFAMethod,
    calibrated_eps,
    calibrated_kl_weight,
    default_begin,
    default_decay,
)
from deep.methods.dafa import DAFAMethod, dafa_weights, default_warmup
from deep.methods.wat import WATMethod, wat_costs, wat_weights
from tests.deep.test_train import first_batch, make_trainer


@pytest.fixture(scope="module")
def digits():
    from deep.data import load_dataset

    return load_dataset("digits")


def _logits(batch=24, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    adv = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    clean = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, classes, (batch,), generator=g)
    return adv, clean, y


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))


def _end(model, epoch=0, val=None, **kw):
    fields = dict(
        epoch=epoch, lr=0.1, base_lr=0.1, model=model, validation=None, val=val,
        ctx=dd.DistContext(), seed=0, eval_batch_size=64, eps=0.1, step_size=0.025,
        attack_steps=2,
    )  # fmt: skip
    fields.update(kw)
    return EpochEnd(**fields)


# ------------------------------------------------------------------------------------------
# CFA
# ------------------------------------------------------------------------------------------
def test_cfa_ccm_ccr_match_the_reference_code():
    rng = np.random.default_rng(0)
    acc, eps, beta, lambda1, lambda2 = rng.uniform(0, 1, 10), 8 / 255, 6.0, 0.3, 0.7
    # literal port (PKU-ML/CFA train.py): class_eps = (ones * lambda_1 + train_robust) * eps;
    # class_beta[i] = (lambda_2 + A_i) * beta / (1 + (lambda_2 + A_i) * beta)
    ref_eps = (np.ones(10) * lambda1 + acc) * eps
    ref_beta = np.array([(lambda2 + a) * beta / (1 + (lambda2 + a) * beta) for a in acc])
    np.testing.assert_allclose(calibrated_eps(acc, eps, lambda1), ref_eps, rtol=1e-15)
    np.testing.assert_allclose(calibrated_kl_weight(acc, beta, lambda2), ref_beta, rtol=1e-15)
    method = CFAMethod(10, eps, 2 / 255, trades=True, lambda1=lambda1, lambda2=lambda2)
    np.testing.assert_allclose(method.eps_values(), np.full(10, eps))  # before `begin`
    np.testing.assert_allclose(method.kl_weight_values(), np.full(10, 6 / 7))  # beta/(1+beta)
    method.acc, method.calibrated = acc, True
    np.testing.assert_allclose(method.eps_values(), ref_eps, rtol=1e-15)
    np.testing.assert_allclose(method.kl_weight_values(), ref_beta, rtol=1e-15)
    # hand-worked: A = 0.5, lambda = 0.5 -> eps unchanged, b = 6, weight 6/7
    assert calibrated_eps([0.5], 0.1, 0.5)[0] == pytest.approx(0.1)
    assert calibrated_kl_weight([0.5], 6.0, 0.5)[0] == pytest.approx(6 / 7)


def test_cfa_trades_loss_matches_the_reference_code():
    adv, clean, y = _logits(seed=1)
    method = CFAMethod(10, 0.1, 0.025, trades=True)
    method.acc, method.calibrated = np.random.default_rng(1).uniform(0, 1, 10), True
    loss, w = method.loss(TrainBatch(None, y, adv, clean, 0, "trades", 6.0))
    # literal port of cw_trades_loss's last lines
    batch_size = len(y)
    loss_natural = F.cross_entropy(clean, y, reduction="none") / batch_size
    kl = nn.KLDivLoss(reduction="none")(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1))
    loss_robust = ((1.0 / batch_size) * kl).sum(1)
    batch_beta = torch.as_tensor(method.kl_weight_values())[y]
    expected = ((1 - batch_beta) * loss_natural + batch_beta * loss_robust).sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(w, torch.full((10,), 0.1))


def test_cfa_class_accuracy_uses_real_class_counts():
    """Unbalanced classes: A_k = correct_k / n_k (the reference's C * correct_k / N is not)."""
    method = CFAMethod(3, 0.1, 0.025, trades=False, begin=1)
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0, 2])  # class 0: 3/6, class 1: 2/3, class 2: 1/1
    logits = F.one_hot(pred, 3).double() * 5
    method.observe(TrainBatch(None, y[:5], logits[:5], None, 0, "at", 6.0))
    method.observe(TrainBatch(None, y[5:], logits[5:], None, 0, "at", 6.0))
    record = method.epoch_end(_end(_tiny_model()))
    np.testing.assert_allclose(method.acc, [3 / 6, 2 / 3, 1.0])
    assert record["cfa"]["train_robust_acc"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert method.calibrated  # begin = 1: epoch 1 uses the calibrated eps
    np.testing.assert_allclose(method.eps_values(), (0.5 + method.acc) * 0.1)
    y2 = torch.tensor([0, 1, 2, 2])
    eps = method.class_eps(y2)
    torch.testing.assert_close(eps, torch.tensor(method.eps_values()[[0, 1, 2, 2]]).float())
    # an epoch without class 2: classes 0 and 1 get their new accuracy, class 2 keeps its last one
    y3 = torch.tensor([0, 0, 1, 1])
    pred3 = torch.tensor([0, 1, 1, 1])
    method.observe(TrainBatch(None, y3, F.one_hot(pred3, 3).double() * 5, None, 1, "at", 6.0))
    method.epoch_end(_end(_tiny_model(), epoch=1))
    np.testing.assert_allclose(method.acc, [0.5, 1.0, 1.0])


def test_model_average_matches_the_reference_weight_average():
    model, other = _tiny_model(), _tiny_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    other[2].running_mean.fill_(0.7)
    avg = ModelAverage()
    avg.update(model, 0.88)  # first call copies (the reference's init=True)
    avg.update(other, 0.88)
    # literal port of utils.weight_average(model, new_model, decay_rate)
    ref, new = copy.deepcopy(model.state_dict()), other.state_dict()
    for key in ref:
        if ref[key].is_floating_point():
            expected = ref[key] * 0.88 + new[key] * (1 - 0.88)
            torch.testing.assert_close(avg.state[key], expected)
    assert int(avg.state["2.num_batches_tracked"]) == int(new["2.num_batches_tracked"])


def _val_split(n_per_class=4, classes=3):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n_per_class * classes, 1, 2, 2), generator=g, dtype=torch.uint8)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return ImageSplit(x=x, y=y)


def test_fawa_updates_only_above_the_threshold_and_falls_back_visibly():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    val = _val_split()
    never = CFAMethod(3, 0.1, 0.025, trades=False, fawa_threshold=1.0)
    record = never.epoch_end(_end(model, val=val))
    acc = np.array(record["cfa"]["fawa_val_robust_acc"])
    assert acc.min() < 1.0  # an untrained model: the threshold is not reached
    assert never.averaged_state("fawa") is None and record["cfa"]["fawa_updates"] == 0
    assert never.averaged_state("ema") is not None
    always = CFAMethod(3, 0.1, 0.025, trades=False, fawa_threshold=0.0)
    always.epoch_end(_end(model, val=val))
    assert always.fawa.updates == 1 and always.ema.updates == 1
    # the class-wise PGD accuracy is that of an independent PGD run with the same stream
    gen = torch.Generator().manual_seed(0 * 7919 + 0 * 31 + 0 + 5)
    x = val.x.float() / 255
    x_adv = pgd_attack(model, x, val.y, eps=0.1, step_size=0.025, steps=2, generator=gen)
    correct = (model(x_adv).argmax(1) == val.y).double()
    np.testing.assert_allclose(acc, [correct[val.y == c].mean() for c in range(3)])


def test_cfa_defaults_scale_with_the_run_length():
    assert default_begin(200) == 10 and default_begin(100) == 10
    assert default_begin(5) == 1 and default_begin(2) == 1 and default_begin(40) == 2
    assert default_begin(30) == 2 and default_begin(70) == 4  # 5 % of the run, rounded
    assert default_decay(200) == default_decay(100) == 0.88
    assert default_decay(4) == pytest.approx(0.88**25) and default_decay(50) == pytest.approx(
        0.88**2
    )


# ------------------------------------------------------------------------------------------
# WAT
# ------------------------------------------------------------------------------------------
def test_wat_weights_match_the_reference_code_and_stay_finite():
    rng = np.random.default_rng(2)
    costs = rng.uniform(0, 3, (5, 11))  # 5 epochs of C + 1 = 11 costs
    eta, num_classes = 0.1, 10
    # literal port: class_factor = (sum(wat_valid_cost, dim=0) * eta).exp();
    # weights = class_num * class_factor / class_factor.sum()
    factor = np.exp(costs.sum(axis=0) * eta)
    reference = num_classes * factor / factor.sum()
    ours = wat_weights(costs.sum(axis=0), eta)
    np.testing.assert_allclose(ours * num_classes / (num_classes + 1), reference, rtol=1e-13)
    assert ours.sum() == pytest.approx(11.0)
    # 10^4 epochs of large costs: the reference overflows, the log-sum-exp form does not
    huge = np.full(11, 1e4 * 50.0)
    huge[3] += 1.0
    w = wat_weights(huge, eta)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(11.0)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.all(np.isfinite(np.exp(huge * eta) / np.exp(huge * eta).sum()))
    # hand-worked: equal costs -> all weights 1
    np.testing.assert_allclose(wat_weights(np.full(11, 2.5), 0.1), np.ones(11))


def test_wat_loss_matches_the_reference_code():
    adv, clean, y = _logits(seed=4)
    method = WATMethod(10, 0.1, 0.025, beta=6.0)
    method.weights = np.random.default_rng(4).uniform(0.2, 2.0, 11)
    loss, w = method.loss(TrainBatch(None, y, adv, clean, 0, "trades", 6.0))
    # literal port of worst_class_adversarial_train.train()'s loss, nat = bndy weights
    weights = torch.as_tensor(method.weights).float().double()
    nat_i = F.cross_entropy(clean, y, reduction="none")
    bndy_i = nn.KLDivLoss(reduction="none")(F.log_softmax(adv, 1), F.softmax(clean, 1)).sum(1)
    nat = sum(nat_i[y == i].sum() * weights[i] for i in range(10))
    bndy = sum(bndy_i[y == i].sum() * weights[i] for i in range(10))
    expected = (nat + 6.0 * bndy) / len(y)
    trades = F.cross_entropy(clean, y) + 6.0 * (1.0 / len(y)) * nn.KLDivLoss(reduction="sum")(
        F.log_softmax(adv, 1), F.softmax(clean, 1)
    )
    expected = expected + trades * weights[10]
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6) and torch.all(w > 0)


def test_wat_costs_use_real_class_counts():
    """Unbalanced validation classes: the class cost is the class mean, entry C the overall mean."""
    ce, kl, counts = np.array([6.0, 1.0]), np.array([0.6, 0.2]), np.array([6, 2])
    cost = wat_costs(ce, kl, counts, beta=6.0)
    np.testing.assert_allclose(cost, [(6 + 3.6) / 6, (1 + 1.2) / 2, (7 + 4.8) / 8])


def test_wat_epoch_end_accumulates_validation_costs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    val = _val_split()
    method = WATMethod(3, 0.1, 0.025, eta=0.5, beta=6.0)
    first = method.epoch_end(_end(model, val=val))["wat"]
    second = method.epoch_end(_end(model, epoch=1, val=val))["wat"]
    total = np.array(first["val_cost"]) + np.array(second["val_cost"])
    np.testing.assert_allclose(method.cumulative_cost, total)
    np.testing.assert_allclose(method.weights, wat_weights(total, 0.5))
    # costs from an independent TRADES attack with the same stream (epoch 0)
    gen = torch.Generator().manual_seed(11)
    x = val.x.float() / 255
    x_adv = trades_attack(model, x, eps=0.1, step_size=0.025, steps=2, generator=gen)
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    ce = F.cross_entropy(clean, val.y, reduction="none").double()
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1).double()
    cost = ce + 6.0 * kl
    expected = [float(cost[val.y == c].mean()) for c in range(3)] + [float(cost.mean())]
    np.testing.assert_allclose(first["val_cost"], expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# DAFA
# ------------------------------------------------------------------------------------------
def _paper_rule(p, lam):
    """DAFA's pairwise update written as loops."""
    c = len(p)
    w = np.ones(c)
    for i in range(c):
        for j in range(c):
            if i == j:
                continue
            if p[i, i] < p[j, j]:
                w[i] += lam * p[i, j] * p[j, j]
            else:
                w[i] -= lam * p[j, i] * p[i, i]
    return w


def test_dafa_weights_hand_worked_and_against_loops():
    p = np.array([[0.8, 0.2], [0.4, 0.6]])  # class 1 is harder (0.6 < 0.8)
    np.testing.assert_allclose(dafa_weights(p, 1.0), [1 - 0.4 * 0.8, 1 + 0.4 * 0.8])
    # equal diagonals: neither is harder, so each takes the else-branch and gives (the reference's
    # "if P[i,i] < P[j,j] ... else ..."); no weight is gained
    tied = np.array([[0.7, 0.3], [0.1, 0.7]])
    np.testing.assert_allclose(dafa_weights(tied, 1.0), [1 - 0.1 * 0.7, 1 - 0.3 * 0.7])
    rng = np.random.default_rng(5)
    for lam in (1.0, 1.5):
        logits = rng.normal(size=(10, 10)) + 3 * np.eye(10)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(dafa_weights(probs, lam), _paper_rule(probs, lam), rtol=1e-13)
        assert dafa_weights(probs, lam).sum() == pytest.approx(10.0)  # weight moves, not created


def test_dafa_class_probabilities_and_clipping():
    method = DAFAMethod(3, 0.1, 0.025, trades=True, warmup=2, lam=5.0, min_weight=0.05)
    logits = torch.tensor([[4.0, 0, 0], [3.0, 1, 0], [0, 0.5, 0], [0, 0, 0.2]]).double()
    y = torch.tensor([0, 0, 1, 2])
    method.observe(TrainBatch(None, y, logits, logits, 0, "trades", 6.0))  # not the last warm-up
    assert method._sums is None
    method.observe(TrainBatch(None, y[:2], logits[:2], logits[:2], 1, "trades", 6.0))
    method.observe(TrainBatch(None, y[2:], logits[2:], logits[2:], 1, "trades", 6.0))
    record = method.epoch_end(_end(_tiny_model(), epoch=1))["dafa"]
    p = F.softmax(logits, 1).numpy()
    probs = np.stack([p[:2].mean(0), p[2], p[3]])
    raw = _paper_rule(probs, 5.0)
    np.testing.assert_allclose(method.weights, np.maximum(raw, 0.05))
    assert record["clipped_classes"] == [int(c) for c in np.flatnonzero(raw < 0.05)]
    assert record["clipped_classes"], "the example should exercise the clipping"
    assert np.all(method.weights > 0) and method.computed


def test_dafa_loss_matches_the_reference_code():
    adv, clean, y = _logits(seed=6)
    method = DAFAMethod(10, 0.1, 0.025, trades=True)
    method.weights = np.random.default_rng(6).uniform(0.5, 1.5, 10)
    loss, _ = method.loss(TrainBatch(None, y, adv, clean, 0, "trades", 6.0))
    # literal port of losses.trades_loss's loss
    mask = torch.as_tensor(method.weights).float()[y].double()
    loss_natural = (nn.CrossEntropyLoss(reduction="none")(clean, y) * mask).mean()
    robust = nn.KLDivLoss(reduction="sum")(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1))
    expected = loss_natural + 6.0 * robust / len(y)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    at = DAFAMethod(10, 0.1, 0.025, trades=False)
    at.weights = method.weights
    loss_at, _ = at.loss(TrainBatch(None, y, adv, None, 0, "at", 6.0))
    expected_at = (nn.CrossEntropyLoss(reduction="none")(adv, y) * mask).mean()
    assert float(loss_at) == pytest.approx(float(expected_at), rel=1e-6)


@pytest.mark.parametrize("method", ["dafa-trades", "dafa-at"])
def test_dafa_attack_scales_budget_and_step(digits, method):
    trainer = make_trainer(digits, "--method", method, "--attack-steps", "3")
    trainer.method.weights = np.linspace(0.5, 1.5, 10)
    trainer.method.computed = True
    x, y = first_batch(digits, batch_size=32, seed=2)
    gen = torch.Generator().manual_seed(9)
    trainer.attack_gen.set_state(gen.get_state())
    x_adv = trainer._adversarial(x, y)
    w = torch.as_tensor(trainer.method.weights).float()[y]
    if method == "dafa-trades":
        ref = trades_attack(trainer.model, x, eps=w * 0.1, step_size=w * 0.025, steps=3,
                            generator=gen)  # fmt: skip
    else:
        ref = pgd_attack(trainer.model, x, y, eps=w * 0.1, step_size=w * 0.025, steps=3,
                         generator=gen)  # fmt: skip
    torch.testing.assert_close(x_adv, ref)
    moved = (x_adv - x).abs().flatten(1).amax(1)
    assert torch.all(moved <= w * 0.1 + 1e-6)  # the class budget holds: no unscaled second step


def test_dafa_warmup_default_scales_with_the_run_length():
    assert default_warmup(110) == 70 and default_warmup(5) == 3
    assert default_warmup(2) == 1 and default_warmup(1) == 1


# ------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------
def test_classwise_sums_counts_every_sample_once():
    val = _val_split(n_per_class=5)
    sums, counts = classwise_sums(
        lambda x, y: torch.stack([torch.ones(len(y)), y.double()], 1), val, 3,
        dd.DistContext(), width=2, batch_size=4, device=torch.device("cpu"),
    )  # fmt: skip
    np.testing.assert_allclose(counts.numpy(), [5, 5, 5])
    np.testing.assert_allclose(sums.numpy(), [[5, 5, 5], [0, 5, 10]])


@pytest.mark.parametrize("name", ["cfa-at", "cfa-trades", "wat-trades", "dafa-trades", "dafa-at"])
def test_method_state_round_trips(digits, name):
    trainer = make_trainer(digits, "--method", name, "--attack-steps", "1", "--epochs", "2")
    x, y = first_batch(digits)
    trainer.train_step(x, y)
    state = copy.deepcopy(trainer.method.state_dict())
    again = make_trainer(digits, "--method", name, "--attack-steps", "1", "--epochs", "2")
    again.method.load_state_dict(state)
    assert repr(again.method.state_dict()) == repr(state)
    other = "faal-at" if name != "faal-at" else "pgd-at"
    with pytest.raises(ValueError, match="state_dict"):
        make_trainer(digits, "--method", other).method.load_state_dict(state)
