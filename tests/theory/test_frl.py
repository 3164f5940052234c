"""theory.frl: FRL's multiplier update rule (FRL Algorithm 1 / Eq. 11, SPEC §4)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from theory.frl import (
    Multipliers,
    fairness_gaps,
    multiplier_weights,
    project_multipliers,
    remargin_eps,
    update_multipliers,
)

errors = st.integers(2, 12).flatmap(
    lambda c: st.tuples(
        arrays(np.float64, c, elements=st.floats(0, 1)),
        arrays(np.float64, c, elements=st.floats(-0.2, 1)),
    )
)
HP = dict(delta0=0.05, delta1=0.05, alpha1=0.05, alpha2=0.2, lim=0.5)


def test_one_update_by_hand():
    # Three classes; class 2 is the worst on both errors.
    e = np.array([0.10, 0.20, 0.60])  # mean 0.3
    b = np.array([0.20, 0.20, 0.50])  # mean 0.3
    new = update_multipliers(Multipliers.zeros(3), e, b, mode="rwrm", **HP)
    # g0 = e - 0.3 - 0.05 = (-0.25, -0.15, 0.25); g1 = b - 0.3 - 0.05 = (-0.15, -0.15, 0.15)
    np.testing.assert_allclose(new.lambda0, [0.0, 0.0, 0.05 * 0.25])
    np.testing.assert_allclose(new.lambda1, [0.0, 0.0, 2 * 0.05 * 0.15])
    np.testing.assert_allclose(new.lambda2, [-0.2 * 0.15, -0.2 * 0.15, 0.2 * 0.15])
    w0 = multiplier_weights(new.lambda0)
    np.testing.assert_allclose(w0, [1 / 3 - 0.0125 / 3, 1 / 3 - 0.0125 / 3, 1 / 3 + 0.0125 * 2 / 3])
    eps = remargin_eps(0.1, new.lambda2, cap=0.16)
    np.testing.assert_allclose(eps, [0.1 * 0.98, 0.1 * 0.98, 0.1 * np.exp(0.06)])


def test_projection_clips_then_rescales_to_lim():
    np.testing.assert_allclose(project_multipliers([-1.0, 0.2, 0.1], 0.5), [0.0, 0.2, 0.1])
    np.testing.assert_allclose(project_multipliers([0.6, -0.3, 0.4], 0.5), [0.3, 0.0, 0.2])


@given(errors, st.sampled_from(["rw", "rm", "rwrm"]), st.integers(1, 30))
def test_repeated_updates_keep_weights_a_positive_distribution(errs, mode, rounds):
    e, b = errs
    m = Multipliers.zeros(e.shape[0])
    for _ in range(rounds):
        m = update_multipliers(m, e, b, mode=mode, **HP)
    for lam in (m.lambda0, m.lambda1):
        assert np.all(lam >= 0) and lam.sum() <= HP["lim"] + 1e-12
        w = multiplier_weights(lam)
        assert abs(w.sum() - 1) < 1e-12 and np.all(w > 0)
    if mode == "rm":  # Reweight multipliers untouched
        assert not m.lambda0.any() and not m.lambda1.any()
    if mode == "rw":
        assert not m.lambda2.any()
    eps = remargin_eps(8 / 255, m.lambda2, cap=16 / 255)
    assert np.all(eps >= 0.98 * 8 / 255 - 1e-15) and np.all(eps <= 16 / 255)


@given(errors)
def test_worse_classes_get_larger_weights_and_budgets(errs):
    e, b = errs
    m = update_multipliers(Multipliers.zeros(e.shape[0]), e, b, mode="rwrm", **HP)
    g0, g1 = fairness_gaps(e, b, HP["delta0"], HP["delta1"])
    w0, w1 = multiplier_weights(m.lambda0), multiplier_weights(m.lambda1)
    # Weights (before the lim rescale ties them) and budgets are monotone in the gaps.
    for gap, w in ((g0, w0), (g1, w1), (g1, remargin_eps(0.1, m.lambda2, clamp=(0, np.inf)))):
        order = np.argsort(gap, kind="stable")
        assert np.all(np.diff(w[order]) >= -1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="mode"):
        update_multipliers(Multipliers.zeros(2), [0, 0], [0, 0], mode="x", **HP)
    with pytest.raises(ValueError, match="alpha1"):
        update_multipliers(Multipliers.zeros(2), [0, 0], [0, 0], mode="rw", **{**HP, "alpha1": -1})
    with pytest.raises(ValueError, match="lim"):
        update_multipliers(Multipliers.zeros(2), [0, 0], [0, 0], mode="rw", **{**HP, "lim": 0})


# ------------------------------------------------------------------------------------------------
# Against a literal port of the official FRL update (torch, as the reference code runs it)
# ------------------------------------------------------------------------------------------------
def _official_update(lam, class_clean_err, class_bndy_err, total_clean, total_bndy, hp, lim):
    """The reference code's epoch-start update, ported line by line for C classes: gaps from the
    class errors minus the total errors, lambda0/lambda1 step then clip-and-rescale
    (normalize_lambda), lambda2 unclipped; weights from cost_sensitive's double loop."""
    import torch

    C = class_clean_err.shape[0]  # noqa: N806
    gamma0 = class_clean_err - total_clean - hp["delta0"]
    gamma1 = class_bndy_err - total_bndy - hp["delta1"]
    lmbda0 = lam[0:C] + hp["alpha1"] * torch.clamp(gamma0, min=-1000)
    lmbda1 = lam[C : 2 * C] + hp["alpha1"] * 2 * torch.clamp(gamma1, min=-1000)
    lmbda2 = lam[2 * C : 3 * C] + hp["alpha2"] * gamma1

    def normalize_lambda(lmb):
        lmb = torch.clamp(lmb, min=0)
        if torch.sum(lmb) > lim:
            lmb = lim * lmb / torch.sum(lmb)
        return lmb

    lmbda0, lmbda1 = normalize_lambda(lmbda0), normalize_lambda(lmbda1)

    def cost_sensitive(ll):
        diff = torch.ones(C, dtype=ll.dtype) / C
        for i in range(C):
            for j in range(C):
                diff[i] = diff[i] + ((C - 1) / C * ll[i] if j == i else -1 / C * ll[j])
        return diff

    diff2 = torch.clamp(torch.exp(2 * lmbda2), min=0.98, max=3.0)
    return lmbda0, lmbda1, lmbda2, cost_sensitive(lmbda0), cost_sensitive(lmbda1), diff2


def test_update_matches_a_literal_port_of_the_official_code_on_random_vectors():
    """100 random cases: C classes, a balanced validation set of m images per class (so the
    official total error, a sample mean, is the class mean), random earlier multipliers, random
    rates; every multiplier, both weight vectors and the remargin factors agree."""
    import torch

    rng = np.random.default_rng(2021)
    for case in range(100):
        C = int(rng.integers(2, 13))  # noqa: N806
        m = int(rng.integers(5, 300))
        clean_correct = rng.integers(0, m + 1, C)
        adv_correct = np.minimum(clean_correct, rng.integers(0, m + 1, C))
        std = 1 - clean_correct / m
        bndy = clean_correct / m - adv_correct / m
        total_clean = 1 - clean_correct.sum() / (C * m)
        total_bndy = (clean_correct.sum() - adv_correct.sum()) / (C * m)
        hp = dict(delta0=rng.uniform(0, 0.1), delta1=rng.uniform(0, 0.1),
                  alpha1=rng.uniform(0, 0.5), alpha2=rng.uniform(0, 2))  # fmt: skip
        lim = float(rng.uniform(0.05, 0.95))
        lam = [rng.uniform(0, 1, C) * rng.uniform(0, lim) / C for _ in range(2)]
        lam.append(rng.normal(0, 0.3, C))
        got = update_multipliers(Multipliers(*lam), std, bndy, mode="rwrm", lim=lim, **hp)

        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        ref = _official_update(
            t(np.concatenate(lam)), t(std), t(bndy), float(total_clean), float(total_bndy), hp, lim
        )
        ours = (*got, multiplier_weights(got.lambda0), multiplier_weights(got.lambda1),
                remargin_eps(1.0, got.lambda2, clamp=(0.98, 3.0)))  # fmt: skip
        for name, a, b in zip(("lambda0", "lambda1", "lambda2", "w0", "w1", "eps"), ours, ref):
            np.testing.assert_allclose(
                a, b.numpy(), rtol=1e-12, atol=1e-14, err_msg=f"{case} {name}"
            )


# ------------------------------------------------------------------------------------------------
# rule="paper": Algorithm 1 lines 7-8 and Eq. 11 as printed
# ------------------------------------------------------------------------------------------------
def _printed_rounds(std_rounds, bndy_rounds, *, tau1, tau2, a1, a2, eps):
    """Algorithm 1 and Eq. 11 written out with loops, one class at a time: phi_nat and phi_bndy
    step by a1 / a2 times (class error - mean error - tau), kept >= 0 (Eq. 10); each class's
    budget is multiplied by exp(a2 (R_bndy(f, i) - tau2)) every round."""
    C = len(std_rounds[0])  # noqa: N806
    phi_nat, phi_bndy, eps_c = [0.0] * C, [0.0] * C, [eps] * C
    for e, b in zip(std_rounds, bndy_rounds):
        mean_e, mean_b = sum(e) / C, sum(b) / C
        for i in range(C):
            phi_nat[i] = max(phi_nat[i] + a1 * (e[i] - mean_e - tau1), 0.0)
            phi_bndy[i] = max(phi_bndy[i] + a2 * (b[i] - mean_b - tau2), 0.0)
            eps_c[i] = eps_c[i] * np.exp(a2 * (b[i] - tau2))
    return np.array(phi_nat), np.array(phi_bndy), np.array(eps_c)


def _lagrangian_weights(phi, tau):
    """The weight of each class error in FRL's Lagrangian (Eq. 9 without the positive part,
    R(f) the class mean): its partial derivative, by central differences."""
    C = phi.shape[0]  # noqa: N806

    def lagrangian(r):
        return r.mean() + np.sum(phi * (r - r.mean() - tau))

    r0, h = np.full(C, 0.3), 1e-6
    return np.array(
        [(lagrangian(r0 + h * np.eye(C)[i]) - lagrangian(r0 - h * np.eye(C)[i])) / (2 * h)
         for i in range(C)]
    )  # fmt: skip


def test_paper_rule_matches_the_printed_algorithm_over_several_rounds():
    rng = np.random.default_rng(11)
    for case in range(50):
        C, rounds = int(rng.integers(2, 11)), int(rng.integers(1, 12))  # noqa: N806
        std = rng.uniform(0, 0.6, (rounds, C))
        bndy = rng.uniform(0, 0.5, (rounds, C))
        tau1, tau2 = rng.uniform(0, 0.1, 2)
        a1, a2 = rng.uniform(0, 0.3, 2)
        m = Multipliers.zeros(C)
        for e, b in zip(std, bndy):
            m = update_multipliers(
                m, e, b, mode="rwrm", delta0=tau1, delta1=tau2, alpha1=a1, alpha2=a2, lim=0.5,
                rule="paper",
            )  # fmt: skip
        phi_nat, phi_bndy, eps_c = _printed_rounds(
            std.tolist(), bndy.tolist(), tau1=tau1, tau2=tau2, a1=a1, a2=a2, eps=8 / 255
        )
        np.testing.assert_allclose(m.lambda0, phi_nat, atol=1e-14, err_msg=str(case))
        np.testing.assert_allclose(m.lambda1, phi_bndy, atol=1e-14, err_msg=str(case))
        eps = remargin_eps(8 / 255, m.lambda2, rule="paper")
        np.testing.assert_allclose(eps, eps_c, rtol=1e-12, err_msg=str(case))
        for phi in (phi_nat, phi_bndy):
            lagrangian = _lagrangian_weights(phi, tau1)
            if np.all(lagrangian >= 0):  # the Lagrangian's own weights, no clipping
                np.testing.assert_allclose(multiplier_weights(phi, "paper"), lagrangian, atol=1e-8)


@given(errors, st.integers(1, 40))
def test_paper_rule_weights_stay_a_distribution_without_normalisation(errs, rounds):
    e, b = errs
    m = Multipliers.zeros(e.shape[0])
    for _ in range(rounds):
        m = update_multipliers(m, e, b, mode="rwrm", **{**HP, "alpha2": 0.5}, rule="paper")
    for lam in (m.lambda0, m.lambda1):
        assert np.all(lam >= 0)
        w = multiplier_weights(lam, "paper")
        assert abs(w.sum() - 1) < 1e-12 and np.all(w >= 0)
        raw = multiplier_weights(lam)
        if np.all(raw >= 0):
            np.testing.assert_allclose(w, raw, atol=1e-15)
        else:  # clipped: the negative classes get 0, the others keep their order
            assert np.all(w[raw <= 0] == 0)


def test_paper_remargin_follows_the_boundary_error_not_its_gap_to_the_mean():
    """Eq. 11 enlarges every class whose boundary error exceeds tau2, even the best class; the
    official rule moves budgets by the gap to the mean (the best class's budget shrinks)."""
    e, b = np.array([0.1, 0.2, 0.3]), np.array([0.2, 0.3, 0.4])
    kw = dict(mode="rm", delta0=0.05, delta1=0.05, alpha1=0.05, alpha2=0.05, lim=0.5)
    paper = update_multipliers(Multipliers.zeros(3), e, b, **kw, rule="paper")
    official = update_multipliers(Multipliers.zeros(3), e, b, **kw)
    eps_paper = remargin_eps(1.0, paper.lambda2, rule="paper")
    eps_official = remargin_eps(1.0, official.lambda2, clamp=(0, np.inf))
    np.testing.assert_allclose(eps_paper, np.exp(0.05 * (b - 0.05)))
    assert np.all(eps_paper > 1.0)
    assert eps_official[0] < 1.0 < eps_official[2]
    assert not paper.lambda0.any() and not paper.lambda1.any()  # "rm" leaves Reweight alone


def test_paper_rule_ignores_lim_and_bad_rules_are_refused():
    e, b = np.array([0.0, 0.0, 0.9]), np.array([0.0, 0.0, 0.9])
    kw = dict(mode="rw", delta0=0.0, delta1=0.0, alpha1=1.0, alpha2=1.0)
    paper = update_multipliers(Multipliers.zeros(3), e, b, **kw, lim=0.1, rule="paper")
    np.testing.assert_allclose(paper.lambda0, [0, 0, 0.6])  # no rescale to 0.1
    with pytest.raises(ValueError, match="rule"):
        update_multipliers(Multipliers.zeros(3), e, b, **kw, lim=0.5, rule="printed")
    with pytest.raises(ValueError, match="rule"):
        multiplier_weights([0.0, 0.0], "x")
    with pytest.raises(ValueError, match="rule"):
        remargin_eps(1.0, [0.0], rule="x")
