"""FRL Reweight/Remargin and FAAL on the mixture, against plain robust training."""

import math

import numpy as np
import pytest

from sim.data import sample_projections
from sim.mitigation import (
    MITIGATIONS,
    FRLMultipliers,
    FRLSettings,
    fit_faal,
    fit_plain_robust,
    run_mitigations,
)
from theory.dro import dro_value
from theory.gaussian import Mixture

FIG2 = (Mixture(2, 2.0, 1.0, math.sqrt(2.0)), 0.5)
HIGHDIM = (Mixture(100, 0.2, 1.0, 2.0), 0.1)


@pytest.fixture(scope="module")
def fitted():
    out = {}
    for name, (m, eps) in (("fig2", FIG2), ("highdim", HIGHDIM)):
        rng = np.random.default_rng(0)
        d = int(m.d)
        s, y = sample_projections(m, 200_000, rng)
        sv, yv = sample_projections(m, 200_000, rng)
        res = run_mitigations(s, y, sv, yv, d=d, eps=eps, tau=0.5)
        out[name] = {k: np.array(m.robust_errors(v["b"], eps)) for k, v in res.items()}
    return out


@pytest.mark.parametrize("setting", ["fig2", "highdim"])
def test_mitigations_do_not_raise_worst_class_robust_error(fitted, setting):
    """Exact population robust errors of the fitted intercepts. Checked for seeds 0-3 before writing
    this: every mitigation lowers the worst-class robust error; in fig2 (plain 0.044-0.049) by
    0.07-0.9 points for FRL and 0.4-0.9 for FAAL, in d = 100 (plain 0.34-0.36) by 5-11 points except
    Remargin alone (0-3 points). Asserted: no method raises it beyond 0.1 point, Reweight(+Remargin)
    and FAAL lower it, and in d = 100 by more than 4 points."""
    errs = fitted[setting]
    worst = {k: v.max() for k, v in errs.items()}
    for method in MITIGATIONS[1:]:
        assert worst[method] <= worst["robust"] + 1e-3, (method, worst)
    for method in ("frl-rw", "frl-rwrm", "faal"):
        assert worst[method] < worst["robust"], (method, worst)
    if setting == "highdim":
        for method in ("frl-rw", "frl-rwrm", "faal"):
            assert worst[method] < worst["robust"] - 0.04


@pytest.mark.parametrize("setting,params", [("fig2", FIG2), ("highdim", HIGHDIM)])
def test_average_robust_error_never_beats_the_optimal_robust_classifier(fitted, setting, params):
    m, eps = params
    best = np.mean(m.robust_errors(m.robust_intercept(eps), eps))
    for method, e in fitted[setting].items():
        assert e.mean() >= best - 1e-12, method


def test_faal_is_the_exact_minimax_over_intercepts():
    """Brute force: evaluate the DRO value of the empirical class robust errors on a dense grid of
    intercepts; no grid point beats FAAL's intercept."""
    m, eps = FIG2
    s, y = sample_projections(m, 3000, np.random.default_rng(1))
    b, w = fit_faal(s, y, d=2, eps=eps, tau=0.5)

    def class_errs(bb):
        return np.array([np.mean(s[y == -1] + bb + 1.0 >= 0), np.mean(s[y == 1] + bb - 1.0 <= 0)])

    grid = np.linspace(-4, 4, 8001)
    values = dro_value(np.stack([class_errs(g) for g in grid]), 0.5)
    assert dro_value(class_errs(b), 0.5) <= values.min() + 1e-12
    # the worst class gets the larger weight
    e = class_errs(b)
    assert (w[1] >= w[0]) == (e[1] >= e[0])


def test_frl_multiplier_updates_follow_the_reference_rules():
    """SPEC §4 by hand: lambda0 <- N(lambda0 + a1 g0), lambda1 <- N(lambda1 + 2 a1 g1),
    lambda2 <- lambda2 + a2 g1, w = 1/C + lambda - mean(lambda), eps_c = eps clamp(exp(2
    lambda2))."""
    st = FRLSettings(delta0=0.01, delta1=0.02, alpha1=0.5, alpha2=2.0, lim=0.5)
    mult = FRLMultipliers("rwrm", st)
    std, bndy = np.array([0.1, 0.3]), np.array([0.05, 0.25])
    mult.update(std, bndy)
    # g0 = std - mean - delta0 = [-0.11, 0.09]
    g1 = bndy - 0.15 - 0.02  # [-0.12, 0.08]
    np.testing.assert_allclose(mult.lambda0, [0.0, 0.5 * 0.09])
    np.testing.assert_allclose(mult.lambda1, [0.0, 2 * 0.5 * 0.08])
    np.testing.assert_allclose(mult.lambda2, 2.0 * g1)
    w0, w1 = mult.weights()
    np.testing.assert_allclose(w0, [0.5 - 0.0225, 0.5 + 0.0225])
    np.testing.assert_allclose(w1.sum(), 1.0)
    np.testing.assert_allclose(mult.class_eps(0.1), 0.1 * np.clip(np.exp(4.0 * g1), 0.98, 3.0))
    # the projection onto sum <= lim
    for _ in range(50):
        mult.update(std, bndy)
    assert mult.lambda0.sum() == pytest.approx(0.5) and mult.lambda1.sum() == pytest.approx(0.5)
    assert np.all(mult.class_eps(0.1) <= 0.2 + 1e-15)
    with pytest.raises(ValueError, match="mode"):
        FRLMultipliers("xx")


def test_frl_paper_rule_follows_algorithm_1_and_eq_11_as_printed():
    """FRLSettings(rule="paper") by hand: phi <- max(phi + a (gap to the mean - tau), 0) with a1
    for the natural and a2 for the boundary multipliers (Algorithm 1 lines 7-8), no rescale to
    lim; eps_c <- eps_c exp(a2 (b_c - tau2)) each round (Eq. 11), capped at 2 eps."""
    st = FRLSettings(delta0=0.01, delta1=0.02, alpha1=0.5, alpha2=2.0, lim=0.05, rule="paper")
    mult = FRLMultipliers("rwrm", st)
    std, bndy = np.array([0.1, 0.3]), np.array([0.05, 0.25])
    budgets = np.full(2, 0.1)
    for k in range(3):
        mult.update(std, bndy)
        budgets = budgets * np.exp(2.0 * (bndy - 0.02))
        np.testing.assert_allclose(mult.lambda0, [0.0, (k + 1) * 0.5 * 0.09])
        np.testing.assert_allclose(mult.lambda1, [0.0, (k + 1) * 2.0 * 0.08])
        np.testing.assert_allclose(mult.class_eps(0.1), np.minimum(budgets, 0.2))
    w0, _ = mult.weights()
    np.testing.assert_allclose(w0, [0.5 - 0.135 / 2, 0.5 + 0.135 / 2])
    with pytest.raises(ValueError, match="rule"):
        FRLSettings(rule="printed")


def test_frl_paper_remargin_never_shrinks_a_budget_at_zero_tolerance():
    """Boundary errors are >= 0, so with tau2 = 0 the printed Eq. 11 only enlarges budgets (the
    official rule, driven by the gap to the mean, shrinks the better class's)."""
    m, eps = HIGHDIM
    s, y = sample_projections(m, 20_000, np.random.default_rng(4))
    sv, yv = sample_projections(m, 20_000, np.random.default_rng(5))
    for rule in ("paper", "official"):
        res = run_mitigations(s, y, sv, yv, d=100, eps=eps, methods=("frl-rm",),
                              settings=FRLSettings(rule=rule))  # fmt: skip
        final = np.array(res["frl-rm"]["final_eps_c"])
        if rule == "paper":
            assert np.all(final >= eps) and np.any(final > eps)
        else:
            assert final.min() < eps < final.max()


def test_uniform_frl_objective_is_plain_robust_training():
    """With zero multipliers (rates 0) FRL's training step is plain robust ERM (FRL Eq. 7)."""
    m, eps = HIGHDIM
    s, y = sample_projections(m, 20_000, np.random.default_rng(2))
    sv, yv = sample_projections(m, 20_000, np.random.default_rng(3))
    frozen = FRLSettings(alpha1=0.0, alpha2=0.0, stages=1, rounds_per_stage=2)
    res = run_mitigations(s, y, sv, yv, d=100, eps=eps, settings=frozen, methods=("frl-rwrm",))
    assert res["frl-rwrm"]["b"] == pytest.approx(fit_plain_robust(s, y, d=100, eps=eps))


@pytest.mark.parametrize("mode", ["rw", "rwrm"])
def test_frl_update_receives_the_class_standard_and_boundary_errors(monkeypatch, mode):
    """Each round's multiplier update gets, in this order, the validation standard error and the
    boundary error (misclassified under attack, correct without: FRL Eq. 7) of the current
    intercept, computed here from their definitions; robust errors, or the two swapped, fail."""
    import sim.mitigation as M

    m, eps = HIGHDIM
    d = int(m.d)
    rng = np.random.default_rng(3)
    s, y = sample_projections(m, 4000, rng)
    sv, yv = sample_projections(m, 3000, rng)
    seen = []
    real = M.update_multipliers

    def spy(multipliers, std_err, bndy_err, **kw):
        seen.append((np.array(std_err), np.array(bndy_err)))
        return real(multipliers, std_err, bndy_err, **kw)

    monkeypatch.setattr(M, "update_multipliers", spy)
    settings = FRLSettings(stages=2, rounds_per_stage=3)
    _, history = M.fit_frl(s, y, sv, yv, d=d, eps=eps, mode=mode, settings=settings)
    intercepts = [M.fit_plain_robust(s, y, d=d, eps=eps)] + history["b"][:-1]
    assert len(seen) == len(intercepts) == 6
    for b, (std_err, bndy_err) in zip(intercepts, seen):
        margin = yv * (sv + b)  # 1.x + b on the projections, signed by the label
        for i, c in enumerate((-1, 1)):
            cls = margin[yv == c]
            assert std_err[i] == pytest.approx(np.mean(cls <= 0), abs=1e-12)
            assert bndy_err[i] == pytest.approx(np.mean((cls > 0) & (cls <= d * eps)), abs=1e-12)
        assert np.any(bndy_err != std_err)
