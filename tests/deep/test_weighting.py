"""Class weightings: statistics, FAAL DRO weights, FRL multipliers (SPEC §2, §4), baseline."""

import math

import numpy as np
import pytest
import torch

import theory.dro
from deep.weighting import (
    BaselineReweight,
    FAALWeighting,
    FixedClassWeighting,
    FRLWeighting,
    UniformWeighting,
    build_weighting,
    class_mean_statistic,
    faal_statistic,
    frl_trades_loss,
    weighted_mean_loss,
)
from theory.dro import solve_kl_dro


def _numpy_class_means(values, y, num_classes, absent=-1.0):
    out = np.full(num_classes, absent)
    for c in range(num_classes):
        sel = values[y == c]
        if sel.size:
            out[c] = sel.mean()
    return out


def _kl_u_w(w):
    u = np.full(len(w), 1.0 / len(w))
    return float(np.sum(u * np.log(u / w)))


@pytest.fixture
def margins_batch():
    gen = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 4, 4, 1, 0])  # class 3 absent
    m = torch.rand(10, generator=gen, dtype=torch.float64) * 2 - 1
    return m, y


# -- class_mean_statistic -------------------------------------------------------------------------


def test_class_means_match_numpy_and_absent_is_minus_one(margins_batch):
    m, y = margins_batch
    got = class_mean_statistic(m, y, 5)
    ref = _numpy_class_means(m.numpy(), y.numpy(), 5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-14)
    assert got[3].item() == -1.0
    assert class_mean_statistic(m, y, 5, absent_value=0.25)[3].item() == 0.25


@pytest.mark.parametrize("seed", range(8))
def test_class_means_of_random_batches_with_singleton_and_absent_classes(seed):
    """Small batches over 6 classes, so that classes with one sample and absent ones occur."""
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 9))
    y = rng.integers(0, 6, size=batch)
    values = rng.normal(size=batch)
    got = class_mean_statistic(torch.from_numpy(values), torch.from_numpy(y), 6).numpy()
    np.testing.assert_allclose(got, _numpy_class_means(values, y, 6), rtol=1e-14)
    counts = np.bincount(y, minlength=6)
    singles = np.flatnonzero(counts == 1)
    np.testing.assert_array_equal(got[singles], [values[y == c][0] for c in singles])


def test_count_weighted_is_reference_objective(margins_batch):
    """Reference code: sum_c n_c p_c m_c, i.e. class sums n_c * mean_c; absent classes 0."""
    m, y = margins_batch
    got = class_mean_statistic(m, y, 5, count_weighted=True).numpy()
    counts = np.bincount(y.numpy(), minlength=5)
    means = _numpy_class_means(m.numpy(), y.numpy(), 5, absent=0.0)
    np.testing.assert_allclose(got, counts * means, rtol=1e-14, atol=1e-15)
    assert got[3] == 0.0


def test_reduce_fn_gives_statistic_of_all_ranks(margins_batch):
    m, y = margins_batch
    m2 = torch.linspace(-0.9, 0.9, 6, dtype=torch.float64)
    y2 = torch.tensor([3, 3, 0, 1, 4, 4])
    other = torch.stack(
        [
            torch.zeros(5, dtype=torch.float64).scatter_add(0, y2, m2),
            torch.zeros(5, dtype=torch.float64).scatter_add(
                0, y2, torch.ones(6, dtype=torch.float64)
            ),
        ]
    )

    def in_place_all_reduce(stacked):  # like torch.distributed.all_reduce (returns None)
        stacked += other

    got = class_mean_statistic(m, y, 5, reduce_fn=in_place_all_reduce)
    ref = _numpy_class_means(torch.cat([m, m2]).numpy(), torch.cat([y, y2]).numpy(), 5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-14)
    got2 = class_mean_statistic(m, y, 5, reduce_fn=lambda s: s + other)  # returning variant
    np.testing.assert_allclose(got2.numpy(), ref, rtol=1e-14)


def test_class_mean_statistic_bad_input(margins_batch):
    m, y = margins_batch
    with pytest.raises(ValueError, match="num_classes"):
        class_mean_statistic(m, y, 1)
    with pytest.raises(ValueError, match="shape"):
        class_mean_statistic(m[:3], y, 5)


# -- weighted_mean_loss ---------------------------------------------------------------------------


def test_uniform_weights_give_plain_mean():
    gen = torch.Generator().manual_seed(1)
    loss = torch.rand(37, generator=gen)
    y = torch.randint(0, 7, (37,), generator=gen)
    w = UniformWeighting(7).batch_weights(None, y, 0)
    torch.testing.assert_close(weighted_mean_loss(loss, y, w), loss.mean(), rtol=1e-6, atol=0)


def test_weighted_mean_loss_hand_value_and_detached():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = torch.tensor([0, 1, 1, 2])
    w = torch.tensor([0.5, 0.2, 0.3], requires_grad=True)
    out = weighted_mean_loss(loss, y, w)
    expected = 3 / 4 * (0.5 * 1 + 0.2 * 2 + 0.2 * 3 + 0.3 * 4)
    assert out.item() == pytest.approx(expected, rel=1e-6)
    out.backward()
    assert w.grad is None
    torch.testing.assert_close(loss.grad, 3 / 4 * torch.tensor([0.5, 0.2, 0.2, 0.3]))


# -- FAAL -----------------------------------------------------------------------------------------


def test_faal_weights_solve_dro_on_class_means(margins_batch):
    m, y = margins_batch
    faal = FAALWeighting(tau=0.3, num_classes=5)
    w = faal.batch_weights(m.float(), y, epoch=0)
    assert w.dtype == torch.float32 and w.shape == (5,)
    stats = _numpy_class_means(m.float().double().numpy(), y.numpy(), 5)
    ref = solve_kl_dro(stats, 0.3)  # numpy path, class means computed independently
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5)
    # the optimum is on the constraint boundary and w_c = lam/(mu - l_c): 1/w is affine in l
    assert _kl_u_w(w.double().numpy()) == pytest.approx(0.3, rel=1e-4)
    slope, intercept = np.polyfit(stats, 1.0 / ref, 1)
    np.testing.assert_allclose(1.0 / ref, slope * stats + intercept, rtol=1e-8)
    assert slope < 0  # higher margin (worse class) -> larger weight
    assert np.argmax(ref) == np.argmax(stats) and np.argmin(ref) == 3  # absent class: margin -1


def test_faal_statistics_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(faal_statistic("ce", logits, y).numpy(), -np.log(p[[0, 1], [0, 1]]))
    margin = [p[0, 1] - p[0, 0], p[1, 2] - p[1, 1]]  # max_{j != y} p_j - p_y
    np.testing.assert_allclose(faal_statistic("margin", logits, y).numpy(), margin)
    with pytest.raises(ValueError, match="statistic"):
        faal_statistic("hinge", logits, y)
    with pytest.raises(ValueError, match="statistic"):
        FAALWeighting(0.3, num_classes=3, statistic="hinge")


def test_faal_statistic_is_that_of_the_adversarial_logits():
    """FAAL Alg. 1 line 11: the class statistic comes from the adversarial examples' logits,
    also when the objective computes clean logits too (TRADES); the clean ones only without an
    attack."""
    from deep.methods.base import TrainBatch

    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 1])
    adv = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    clean = torch.randn(4, 3, generator=gen, dtype=torch.float64)

    def margin(logits):
        p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(axis=1, keepdims=True)
        true = p[np.arange(4), y.numpy()]
        wrong = np.where(np.eye(3, dtype=bool)[y.numpy()], -np.inf, p).max(axis=1)
        return wrong - true

    faal = FAALWeighting(0.3, num_classes=3)
    both = faal.statistic_of(TrainBatch(None, y, adv, clean, 0, "trades", 6.0))
    np.testing.assert_allclose(both.numpy(), margin(adv), rtol=1e-12)
    natural = faal.statistic_of(TrainBatch(None, y, None, clean, 0, "natural", 0.0))
    np.testing.assert_allclose(natural.numpy(), margin(clean), rtol=1e-12)


def test_faal_ce_statistic_gives_absent_classes_its_minimum(margins_batch):
    """CE >= 0: a class absent from the batch gets 0, the least possible loss, so least weight."""
    _, y = margins_batch
    ce = torch.rand(10, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3
    faal = FAALWeighting(tau=0.3, num_classes=5, statistic="ce")
    w = faal.batch_weights(ce, y, epoch=0).double().numpy()
    stats = _numpy_class_means(ce.numpy(), y.numpy(), 5, absent=0.0)
    np.testing.assert_allclose(w, solve_kl_dro(stats, 0.3), rtol=1e-5)
    assert np.argmin(w) == 3 and _kl_u_w(w) == pytest.approx(0.3, rel=1e-4)
    state = faal.state_dict()
    assert state["statistic"] == "ce"
    restored = FAALWeighting(num_classes=5)
    restored.load_state_dict(state)
    assert restored.statistic == "ce"
    legacy = {k: v for k, v in state.items() if k != "statistic"}  # written before the option
    restored.load_state_dict(legacy)
    assert restored.statistic == "margin"


def test_faal_count_weighted(margins_batch):
    m, y = margins_batch
    w = FAALWeighting(0.3, count_weighted=True, num_classes=5).batch_weights(m, y, 0)
    counts = np.bincount(y.numpy(), minlength=5)
    stats = counts * _numpy_class_means(m.numpy(), y.numpy(), 5, absent=0.0)
    np.testing.assert_allclose(w.numpy(), solve_kl_dro(stats, 0.3), rtol=1e-5)


def test_faal_tau_zero_and_start_epoch_are_uniform(margins_batch):
    m, y = margins_batch
    uniform = torch.full((5,), 0.2)
    torch.testing.assert_close(FAALWeighting(0.0, num_classes=5).batch_weights(m, y, 3), uniform)
    late = FAALWeighting(0.5, start_epoch=2, num_classes=5)
    torch.testing.assert_close(late.batch_weights(m, y, 1), uniform)
    assert not torch.allclose(late.batch_weights(m, y, 2), uniform)


def test_faal_schedule_milestones(margins_batch):
    m, y = margins_batch
    faal = FAALWeighting(0.025, tau_schedule=[(90, 0.05)], start_epoch=75, num_classes=5)
    assert [faal.tau_at(e) for e in (0, 74, 75, 89, 90, 99)] == [0, 0, 0.025, 0.025, 0.05, 0.05]
    faal2 = FAALWeighting(0.1, tau_schedule=[(0, 0.025), (90, 0.05)], num_classes=5)
    assert faal2.tau_at(0) == 0.025 and faal2.tau_at(100) == 0.05
    for epoch, tau in ((80, 0.025), (95, 0.05)):
        w = faal.batch_weights(m, y, epoch).double().numpy()
        assert _kl_u_w(w) == pytest.approx(tau, rel=1e-3)
    with pytest.raises(ValueError, match="increasing"):
        FAALWeighting(0.1, tau_schedule=[(5, 0.1), (3, 0.2)])
    with pytest.raises(ValueError, match="tau"):
        FAALWeighting(-0.1)


def test_faal_history_is_epoch_mean_and_round_trips(margins_batch):
    m, y = margins_batch
    faal = FAALWeighting(0.4, num_classes=5)
    w_a = faal.batch_weights(m, y, 0)
    w_b = faal.batch_weights(-m, y, 0)
    w_c = faal.batch_weights(m * 0.5, y, 1)  # new epoch closes epoch 0
    assert faal.history_epochs == [0]
    np.testing.assert_allclose(faal.weight_history[0], ((w_a + w_b) / 2).numpy(), rtol=1e-6)
    state = faal.state_dict()
    other = FAALWeighting(0.1)
    other.load_state_dict(state)
    assert other.end_epoch() == pytest.approx(w_c.tolist(), rel=1e-6)
    assert other.history_epochs == [0, 1]
    torch.testing.assert_close(other.batch_weights(m, y, 2), faal.batch_weights(m, y, 2))
    with pytest.raises(ValueError, match="faal"):
        other.load_state_dict(FRLWeighting(5, 0.1).state_dict())


def test_num_classes_required():
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="num_classes"):
        FAALWeighting(0.1).batch_weights(torch.zeros(2), y, 0)
    assert FAALWeighting(0.1).batch_weights(torch.zeros(2), y, 0, num_classes=3).shape == (3,)


# -- FRL ------------------------------------------------------------------------------------------


def test_frl_one_update_by_hand():
    """SPEC §4 step by step for C = 4, delta0 = delta1 = 0.05, a1 = 0.05, a2 = 0.2, lim = 0.5."""
    e = [0.10, 0.20, 0.30, 0.40]  # mean 0.25
    b = [0.30, 0.20, 0.20, 0.50]  # mean 0.30
    frl = FRLWeighting(4, base_eps=8 / 255, mode="rwrm")
    frl.update_from_validation(np.array(e), torch.tensor(b, dtype=torch.float64))
    # g0 = e - 0.25 - 0.05 = [-0.2, -0.1, 0.0, 0.1]; lambda0 = clip(0.05 g0) = [0, 0, 0, 0.005]
    np.testing.assert_allclose(frl.lambda0, [0, 0, 0, 0.005], atol=1e-15)
    # g1 = b - 0.30 - 0.05 = [-0.05, -0.15, -0.15, 0.15]; lambda1 = clip(2*0.05 g1) = [0,0,0,0.015]
    np.testing.assert_allclose(frl.lambda1, [0, 0, 0, 0.015], atol=1e-15)
    # lambda2 = 0.2 g1 = [-0.01, -0.03, -0.03, 0.03] (no clipping)
    np.testing.assert_allclose(frl.lambda2, [-0.01, -0.03, -0.03, 0.03], atol=1e-15)
    # w0 = 1/4 + lambda0 - 0.005/4
    np.testing.assert_allclose(
        frl.nat_weight_values(), [0.25 - 0.00125] * 3 + [0.25 + 0.005 - 0.00125], atol=1e-15
    )
    np.testing.assert_allclose(
        frl.bndy_weight_values(), [0.25 - 0.00375] * 3 + [0.25 + 0.015 - 0.00375], atol=1e-15
    )
    # eps_c = 8/255 * clamp(exp(2 lambda2), 0.98, 3): exp(-0.02) = 0.9802 (kept), exp(-0.06) -> 0.98
    expected_eps = 8 / 255 * np.array([math.exp(-0.02), 0.98, 0.98, math.exp(0.06)])
    np.testing.assert_allclose(frl.eps_values(), expected_eps, rtol=1e-14)
    y = torch.tensor([3, 0, 1, 3])
    torch.testing.assert_close(
        frl.class_eps(y), torch.tensor(expected_eps[[3, 0, 1, 3]], dtype=torch.float32)
    )
    # second update accumulates: lambda2 += 0.2 g1 again
    frl.update_from_validation(e, b)
    np.testing.assert_allclose(frl.lambda2, [-0.02, -0.06, -0.06, 0.06], atol=1e-15)
    np.testing.assert_allclose(frl.lambda1, [0, 0, 0, 0.03], atol=1e-15)


def test_frl_clip_and_rescale_to_lim():
    frl = FRLWeighting(3, base_eps=0.1, mode="rw", alpha1=1.0, delta0=0.0, delta1=0.0, lim=0.5)
    # e mean 0.4: g0 = [-0.4, 0.2, 0.2] -> lambda0 = clip = [0, 0.2, 0.2], sum 0.4 <= 0.5 (kept)
    frl.update_from_validation([0.0, 0.6, 0.6], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(frl.lambda0, [0.0, 0.2, 0.2], atol=1e-15)
    # again: [0, 0.4, 0.4] sum 0.8 > 0.5 -> rescaled to [0, 0.25, 0.25]
    frl.update_from_validation([0.0, 0.6, 0.6], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(frl.lambda0, [0.0, 0.25, 0.25], atol=1e-15)
    w0 = frl.nat_weight_values()
    np.testing.assert_allclose(
        w0, [1 / 3 - 0.5 / 3, 1 / 3 + 0.25 - 0.5 / 3, 1 / 3 + 0.25 - 0.5 / 3]
    )
    assert w0.sum() == pytest.approx(1.0) and np.all(w0 > 0)
    # mode "rw" leaves eps alone; zero boundary gaps leave lambda1 at 0
    np.testing.assert_allclose(frl.eps_values(), [0.1] * 3)
    np.testing.assert_allclose(frl.lambda1, 0.0)


def test_frl_eps_clamp_and_cap():
    frl = FRLWeighting(3, base_eps=8 / 255, mode="rm", alpha2=1.0, delta1=0.0, eps_cap=16 / 255)
    # b mean 0.3: g1 = [-0.3, -0.2, 0.5]; lambda2 = g1; exp(2 lambda2) = [0.549, 0.670, 2.718]
    frl.update_from_validation([0.1, 0.1, 0.1], [0.0, 0.1, 0.8])
    # clamp -> [0.98, 0.98, 2.718]; eps -> 8/255 * that; cap 16/255 -> last becomes 16/255
    np.testing.assert_allclose(frl.eps_values(), [0.98 * 8 / 255, 0.98 * 8 / 255, 16 / 255])
    # mode "rm" keeps uniform weights
    np.testing.assert_allclose(frl.nat_weight_values(), 1 / 3)
    np.testing.assert_allclose(frl.bndy_weight_values(), 1 / 3)
    frl2 = FRLWeighting(3, base_eps=8 / 255, mode="rm", alpha2=3.0, delta1=0.0)
    frl2.update_from_validation([0.1, 0.1, 0.1], [0.0, 0.1, 0.8])  # exp(3) -> clamp at 3.0
    assert frl2.eps_values()[2] == pytest.approx(3.0 * 8 / 255)


def test_frl_rate_scale_and_validation():
    frl = FRLWeighting(2, base_eps=0.1, mode="rm", delta1=0.0)
    frl.update_from_validation([0.1, 0.1], [0.0, 0.2], rate_scale=0.1)
    np.testing.assert_allclose(frl.lambda2, [0.1 * 0.2 * -0.1, 0.1 * 0.2 * 0.1])
    with pytest.raises(ValueError, match="std_err"):
        frl.update_from_validation([0.1, 0.1, 0.1], [0.0, 0.2])
    with pytest.raises(ValueError, match="std_err"):
        frl.update_from_validation([0.1, 1.5], [0.0, 0.2])
    with pytest.raises(ValueError, match="bndy_err"):
        frl.update_from_validation([0.1, 0.1], [np.nan, 0.2])
    with pytest.raises(ValueError, match="mode"):
        FRLWeighting(2, 0.1, mode="bad")
    with pytest.raises(ValueError, match="lim"):
        FRLWeighting(2, 0.1, lim=1.0)
    with pytest.raises(ValueError, match="base_eps"):
        FRLWeighting(2, 0.0)


def test_frl_trades_loss_by_hand():
    frl = FRLWeighting(2, base_eps=0.1, mode="rw", delta0=0.0, delta1=0.0, alpha1=0.5)
    frl.update_from_validation([0.0, 0.4], [0.3, 0.1])
    # g0 = [-0.2, 0.2] -> lambda0 = [0, 0.1]; w0 = [0.5 - 0.05, 0.5 + 0.1 - 0.05] = [0.45, 0.55]
    # g1 = [0.1, -0.1] -> lambda1 = [0.1, 0];  w1 = [0.55, 0.45]
    ce = torch.tensor([1.0, 2.0, 3.0])
    kl = torch.tensor([0.5, 0.25, 1.0])
    y = torch.tensor([0, 1, 1])
    expected = (0.45 * 1 + 0.55 * 2 + 0.55 * 3) / (0.45 + 0.55 + 0.55) + 1.5 * (
        0.55 * 0.5 + 0.45 * 0.25 + 0.45 * 1.0
    ) / (0.55 + 0.45 + 0.45)
    assert frl.trades_loss(ce, kl, y, beta=1.5).item() == pytest.approx(expected, rel=1e-6)
    uniform = frl_trades_loss(ce, kl, y, torch.full((2,), 0.5), torch.full((2,), 0.5), beta=2.0)
    assert uniform.item() == pytest.approx(ce.mean().item() + 2.0 * kl.mean().item(), rel=1e-6)


def test_frl_state_round_trip():
    frl = FRLWeighting(3, base_eps=0.1, eps_cap=0.2)
    frl.update_from_validation([0.1, 0.5, 0.2], [0.3, 0.1, 0.6])
    other = FRLWeighting(3, base_eps=0.1)
    other.load_state_dict(frl.state_dict())
    for key in ("lambda0", "lambda1", "lambda2"):
        np.testing.assert_array_equal(getattr(other, key), getattr(frl, key))
    y = torch.tensor([0, 2, 1])
    torch.testing.assert_close(other.class_eps(y), frl.class_eps(y))
    torch.testing.assert_close(other.batch_weights(None, y), frl.batch_weights(None, y))
    with pytest.raises(ValueError, match="num_classes"):
        FRLWeighting(4, base_eps=0.1).load_state_dict(frl.state_dict())


# -- baseline -------------------------------------------------------------------------------------


# -- fixed class weights (FRL §5.3) ----------------------------------------------------------------


def test_fixed_class_loss_weights_and_eps_by_hand():
    fixed = FixedClassWeighting(
        3, base_eps=0.1, boundary_ratios=[1.0, 3.0, 1.0], eps_scales=[1.0, 1.0, 2.5]
    )
    np.testing.assert_allclose(fixed.bndy_weight_values(), [0.2, 0.6, 0.2])
    np.testing.assert_allclose(fixed.nat_weight_values(), [1 / 3] * 3)
    np.testing.assert_allclose(fixed.eps_values(), [0.1, 0.1, 0.25])
    y = torch.tensor([0, 2, 1, 1])
    np.testing.assert_allclose(fixed.class_eps(y).numpy(), [0.1, 0.25, 0.1, 0.1], rtol=1e-6)
    ce = torch.tensor([1.0, 2.0, 3.0, 4.0])
    kl = torch.tensor([0.5, 0.25, 1.0, 2.0])
    # mean CE + beta * (class-1 samples count 3x in the boundary term)
    expected = 2.5 + 1.5 * (0.5 + 0.25 + 3 * 1.0 + 3 * 2.0) / (1 + 1 + 3 + 3)
    assert fixed.trades_loss(ce, kl, y, beta=1.5).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(fixed.batch_weights(None, y), torch.full((3,), 1 / 3))
    # unscaled budgets: the scalar base eps, as for uniform weights
    assert FixedClassWeighting(3, 0.1, boundary_ratios=[1, 2, 1]).class_eps(y) == 0.1


def test_fixed_class_ratio_equals_frl_multipliers_with_that_ratio():
    """FRL's w1 = 1/C + lambda1 - mean(lambda1) with lambda1_k = (r - 1)/(r + C - 1) gives
    class k r times the others' weight: the same boundary weights."""
    r, c, k = 4.5, 10, 4
    frl = FRLWeighting(c, base_eps=0.1, mode="rw")
    frl.lambda1[k] = (r - 1) / (r + c - 1)
    ratios = np.ones(c)
    ratios[k] = r
    fixed = FixedClassWeighting(c, 0.1, boundary_ratios=ratios)
    np.testing.assert_allclose(fixed.bndy_weight_values(), frl.bndy_weight_values(), rtol=1e-12)


def test_fixed_class_validation_and_state():
    for bad in ([1.0, 0.0, 1.0], [1.0, math.inf, 1.0], [1.0, 2.0]):
        with pytest.raises(ValueError, match="boundary_ratios"):
            FixedClassWeighting(3, 0.1, boundary_ratios=bad)
    with pytest.raises(ValueError, match="eps_scales"):
        FixedClassWeighting(3, 0.1, eps_scales=[-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="base_eps"):
        FixedClassWeighting(3, 0.0)
    fixed = FixedClassWeighting(3, 0.1, boundary_ratios=[2, 1, 1], eps_scales=[1, 1.5, 1])
    fixed.update_from_validation([0.9, 0.1, 0.1], [0.5, 0.1, 0.1])  # nothing is learnt
    restored = FixedClassWeighting(3, 0.1)
    restored.load_state_dict(fixed.state_dict())
    np.testing.assert_allclose(restored.bndy_weight_values(), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(restored.eps_values(), [0.1, 0.15, 0.1])
    with pytest.raises(ValueError, match="fixed-class"):
        restored.load_state_dict(FRLWeighting(3, 0.1).state_dict())
    assert isinstance(build_weighting("fixed-class", 3, base_eps=0.1), FixedClassWeighting)


def test_baseline_reweight_upweights_worst_robust_class():
    base = BaselineReweight(4, boost=2.0)
    y = torch.tensor([0, 1])
    torch.testing.assert_close(base.batch_weights(None, y), torch.full((4,), 0.25))
    # robust error = std + bndy = [0.3, 0.5, 0.6, 0.4] -> class 2 (not the worst std or bndy class)
    base.update_from_validation([0.1, 0.4, 0.2, 0.3], [0.2, 0.1, 0.4, 0.1])
    torch.testing.assert_close(base.batch_weights(None, y), torch.tensor([0.2, 0.2, 0.4, 0.2]))
    again = BaselineReweight(4)
    again.load_state_dict(base.state_dict())
    assert again.worst_class == 2
    with pytest.raises(ValueError, match="boost"):
        BaselineReweight(4, boost=0.5)


def test_build_weighting():
    assert isinstance(build_weighting("faal", 10, tau=0.5), FAALWeighting)
    assert isinstance(build_weighting("frl", 10, base_eps=0.03, mode="rw"), FRLWeighting)
    assert build_weighting("uniform", 10).class_eps(torch.tensor([0])) is None
    with pytest.raises(ValueError, match="weighting"):
        build_weighting("other", 10)


def test_faal_batch_path_reads_nothing_back_to_host(monkeypatch, margins_batch):
    """No .item(), .tolist(), bool() or float() of a tensor inside batch_weights (no host sync).

    CPU tensors are normally solved by theory.dro's numpy solver (on the CPU there is no device to
    synchronise with); the accelerator path (the fixed-cost torch search) is the one checked."""
    monkeypatch.setattr(theory.dro, "_TORCH_CPU_USES_NUMPY", False)
    m, y = margins_batch
    faal = FAALWeighting(0.3, count_weighted=False, num_classes=5)
    frl = FRLWeighting(5, base_eps=0.1)

    def forbidden(*_args, **_kwargs):
        raise AssertionError("host read-back")

    for attr in ("item", "tolist", "__bool__", "__float__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    w = faal.batch_weights(m, y, 0)
    w = faal.batch_weights(m, y, 0)
    eps = frl.class_eps(y)
    monkeypatch.undo()
    assert w.shape == (5,) and eps.shape == (10,)
