"""Tests of theory.features (FRL Appendix A.3, Eq. 19-20, Theorem 3) against independent references.

References: class errors from the definition of D' with scipy.stats.norm on the full weight vector,
a brute-force grid over (direction, intercept), the FRL §3 mixture of ``theory.gaussian`` where D'
reduces to it (the natural classifier's direction theta; the l_2-robust one), Monte Carlo samples
of D', and the paper's expressions re-stated here from the text.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import stats

from tests.theory.test_gaussian import log_uniform
from theory.features import (
    FeatureMixture,
    theorem3_A,
    theorem3_B,
    theorem3_exact,
    theorem3_printed,
    theorem3_printed_bound,
)
from theory.gaussian import Mixture

DS = st.integers(1, 20)
MS = st.integers(1, 500)
ETAS = log_uniform(0.05, 5.0)
SIGMAS = log_uniform(0.2, 5.0)
KS = log_uniform(1.05, 20.0)
FRACTION = st.floats(0.02, 0.98)  # eps / eta, and gamma / eps (so gamma < eps < eta: Eq. 19)


@st.composite
def domains(draw):
    """(d, m, eta, gamma, sigma, K, eps) on the domain of FRL Eq. 19: 0 < gamma < eps < eta."""
    eta = draw(ETAS)
    eps = draw(FRACTION) * eta
    gamma = draw(FRACTION) * eps
    return draw(DS), draw(MS), eta, gamma, draw(SIGMAS), draw(KS), eps


def definition_errors(d, m, eta, gamma, sigma, K, w, b, eps=0.0, norm="linf"):
    """(R(-1), R(+1)) of sign(w.x + b) from Eq. 19: w.x | y ~ N(y theta.w, sigma_y^2 ||w||^2), the
    adversary moving it by eps ||w||_* (Hoelder) toward the wrong side."""
    theta = np.concatenate([np.full(d, eta), np.full(m, gamma)])
    wn = np.linalg.norm(w)
    shift = eps * (np.abs(w).sum() if norm == "linf" else wn)
    err_minus = stats.norm.sf(0.0, loc=b - theta @ w + shift, scale=sigma * wn)
    err_plus = stats.norm.cdf(0.0, loc=b + theta @ w - shift, scale=K * sigma * wn)
    return err_minus, err_plus


def block_weights(d, m, u, v):
    return np.concatenate([np.full(d, u), np.full(m, v)])


def paper_errors(d, m, eta, gamma, sigma, K, eps):
    """FRL Proof 6 re-stated from the text (A, B, q(K) and the four class errors)."""
    q = 2.0 * math.log(K) / (K * K - 1.0)
    A = 2.0 / (sigma * (K * K - 1.0)) * math.sqrt(m * gamma**2 + d * eta**2)
    B = 2.0 / (sigma * (K * K - 1.0)) * math.sqrt(d * (eta - eps) ** 2)
    cdf = stats.norm.cdf
    natural = (cdf(A - K * math.sqrt(A * A + q)), cdf(-K * A + math.sqrt(A * A + q)))
    robust = (
        cdf(B - K * math.sqrt(B * B + q) - math.sqrt(d) * eps / sigma),
        cdf(-K * B + math.sqrt(B * B + q) - math.sqrt(d) * eps / (K * sigma)),
    )
    return A, B, q, natural, robust


# ------------------------------------------------------------------------------------------------
# Class errors of a linear classifier
# ------------------------------------------------------------------------------------------------


@given(
    domains(), st.floats(-2, 2), st.floats(-2, 2), st.floats(-3, 3), st.sampled_from(["linf", "l2"])
)
def test_class_errors_match_definition(params, u, v, b, norm):
    d, m, eta, gamma, sigma, K, eps = params
    if u == 0 and v == 0:
        u = 1.0
    mix = FeatureMixture(d, m, eta, gamma, sigma, K)
    w = block_weights(d, m, u, v)
    for e in (0.0, eps):
        ref = definition_errors(d, m, eta, gamma, sigma, K, w, b, e, norm)
        assert_allclose(mix.class_errors(u, v, b, e, norm), ref, rtol=1e-9, atol=1e-300)
        assert_allclose(mix.linear_errors(w, b, e, norm), ref, rtol=1e-9, atol=1e-300)


def test_class_errors_match_monte_carlo():
    """Sampled points of D' with their explicit worst-case l_inf perturbation -eps y sign(w)."""
    d, m, eta, gamma, sigma, K, eps = 2, 30, 0.8, 0.2, 1.0, 2.0, 0.3
    rng = np.random.default_rng(0)
    n = 200_000
    y = np.where(rng.random(n) < 0.5, -1, 1)
    theta = np.concatenate([np.full(d, eta), np.full(m, gamma)])
    x = (
        y[:, None] * theta
        + rng.standard_normal((n, d + m)) * np.where(y > 0, K * sigma, sigma)[:, None]
    )
    mix = FeatureMixture(d, m, eta, gamma, sigma, K)
    opt = mix.optimal_linear(eps)
    w = block_weights(d, m, float(opt.u), float(opt.v)) + rng.normal(0, 0.05, d + m)
    b = float(opt.b)
    x_adv = x - eps * y[:, None] * np.sign(w)
    for pts, e in ((x, 0.0), (x_adv, eps)):
        wrong = y * (pts @ w + b) <= 0
        exact = mix.linear_errors(w, b, e)
        for c, p in zip((-1, 1), exact):
            k = wrong[y == c]
            assert abs(k.mean() - p) < 5 * math.sqrt(p * (1 - p) / k.size) + 1e-12


# ------------------------------------------------------------------------------------------------
# The exact optimal linear classifiers
# ------------------------------------------------------------------------------------------------


@settings(max_examples=15)
@given(domains(), st.sampled_from(["linf", "l2"]), st.booleans())
def test_optimum_beats_a_brute_force_grid(params, norm, robust):
    """No direction and intercept on a fine grid has a lower average (robust) error."""
    d, m, eta, gamma, sigma, K, eps = params
    e = eps if robust else 0.0
    mix = FeatureMixture(d, m, eta, gamma, sigma, K)
    opt = mix.optimal_linear(e, norm)
    best = 0.5 * sum(definition_errors(d, m, eta, gamma, sigma, K,
                                       block_weights(d, m, float(opt.u), float(opt.v)),
                                       float(opt.b), e, norm))  # fmt: skip
    phi = np.linspace(-np.pi, np.pi, 181)[:, None]
    u, v = np.cos(phi) / math.sqrt(d), np.sin(phi) / math.sqrt(m)
    mean = sigma * (math.sqrt(d) * eta + math.sqrt(m) * gamma + 1.0) + 4 * K * sigma
    b = np.linspace(-mean, mean, 401)[None, :]
    w_dot = d * u * eta + m * v * gamma
    dual = d * np.abs(u) + m * np.abs(v) if norm == "linf" else np.ones_like(u)
    grid = 0.5 * (
        stats.norm.sf(0.0, loc=b - w_dot + e * dual, scale=sigma)
        + stats.norm.cdf(0.0, loc=b + w_dot - e * dual, scale=K * sigma)
    )
    assert best <= grid.min() * (1 + 1e-9)
    assert 0.5 * sum(opt.robust) == pytest.approx(best, rel=1e-9)


@settings(max_examples=25)
@given(domains())
def test_natural_optimum_is_theta_direction(params):
    """f_nat uses every feature, in proportion to its scale (v / u = gamma / eta), and its class
    errors are those of FRL §3's mixture with one coordinate of mean ||theta||_2."""
    d, m, eta, gamma, sigma, K, _ = params
    mix = FeatureMixture(d, m, eta, gamma, sigma, K)
    nat = mix.optimal_linear(0.0)
    assert float(nat.ratio) == pytest.approx(gamma / eta, rel=1e-5, abs=1e-7)
    one_d = Mixture(1, math.sqrt(d * eta**2 + m * gamma**2), sigma, K)
    assert_allclose(nat.standard, one_d.standard_errors(one_d.natural_intercept()), rtol=1e-9)


@settings(max_examples=25)
@given(domains())
def test_linf_robust_optimum_ignores_non_robust_features(params):
    """l_inf, gamma < eps: f_rob uses only the robust features (the paper's second assumption)."""
    d, m, eta, gamma, sigma, K, eps = params
    rob = FeatureMixture(d, m, eta, gamma, sigma, K).optimal_linear(eps, "linf")
    assert abs(float(rob.ratio)) < 1e-7
    robust_only = Mixture(d, eta, sigma, K)
    b = robust_only.robust_intercept(eps)
    assert_allclose(rob.standard, robust_only.standard_errors(b), rtol=1e-9)


@settings(max_examples=25)
@given(domains())
def test_l2_robust_optimum_uses_non_robust_features(params):
    """l_2: the budget costs every direction the same, so f_rob keeps theta's direction (the second
    assumption fails) and only its intercept moves: class -1's error falls, class +1's rises."""
    d, m, eta, gamma, sigma, K, eps = params
    errs, nat, rob = theorem3_exact(d, m, eta, gamma, sigma, K, eps, "l2")
    assert float(rob.ratio) == pytest.approx(gamma / eta, rel=1e-5, abs=1e-7)
    one_d = Mixture(1, math.sqrt(d * eta**2 + m * gamma**2), sigma, K)
    b = one_d.robust_intercept(eps)  # d = 1: the l_inf and l_2 shifts are both eps
    assert_allclose(rob.standard, one_d.standard_errors(b), rtol=1e-9)
    minus, plus = errs.increase
    assert minus < 0 < plus
    assert errs.gap > 0


def test_optimal_linear_broadcasts():
    mix = FeatureMixture(2, np.array([1, 10, 100]), 1.0, 0.3, 1.0, 2.0)
    opt = mix.optimal_linear(np.array([[0.0], [0.5]]))
    assert np.shape(opt.b) == (2, 3)
    one = FeatureMixture(2, 10, 1.0, 0.3, 1.0, 2.0).optimal_linear(0.5)
    assert float(opt.b[1, 1]) == pytest.approx(float(one.b), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# The paper's expressions and Theorem 3
# ------------------------------------------------------------------------------------------------


@given(domains())
def test_printed_forms_match_the_text(params):
    A, B, _, natural, robust = paper_errors(*params)
    d, m, eta, gamma, sigma, K, eps = params
    assert float(theorem3_A(d, m, eta, gamma, sigma, K)) == pytest.approx(A, rel=1e-12)
    assert float(theorem3_B(d, eta, sigma, K, eps)) == pytest.approx(B, rel=1e-12)
    printed = theorem3_printed(*params)
    assert_allclose(printed.natural, natural, rtol=1e-9, atol=1e-300)
    assert_allclose(printed.robust, robust, rtol=1e-9, atol=1e-300)


@settings(max_examples=25)
@given(domains())
def test_printed_forms_are_exact_for_linf(params):
    """On the l_inf domain of Eq. 19 the printed class errors are those of the exact optima."""
    exact, _, _ = theorem3_exact(*params)
    printed = theorem3_printed(*params)
    assert_allclose(exact.natural, printed.natural, rtol=1e-8, atol=1e-300)
    assert_allclose(exact.robust, printed.robust, rtol=1e-8, atol=1e-300)


@settings(max_examples=300)
@given(domains())
def test_eq20_holds_on_the_linf_domain(params):
    """Eq. 20, with the paper's class errors (exact on this domain, previous test) re-stated."""
    _, _, _, natural, robust = paper_errors(*params)
    if max(natural + robust) < 1e-250:  # all four errors underflow to a tie
        return
    gap = (robust[1] - natural[1]) - (robust[0] - natural[0])
    assert gap > 0


@given(domains())
def test_proof_criterion_is_positive_whatever_m(params):
    """The last line of Proof 6 is positive iff A > B, which holds for every eps > 0, also with no
    non-robust signal (gamma -> 0): "A >> B" is not what makes it positive."""
    d, m, eta, gamma, sigma, K, eps = params
    for g in (gamma, 1e-12 * gamma):
        A, B, _, _, _ = paper_errors(d, m, eta, g, sigma, K, eps)
        assert A > B
        _, criterion = theorem3_printed_bound(d, m, eta, g, sigma, K, eps)
        assert criterion > 0


@given(domains())
def test_proof_intermediate_inequality_is_reversed(params):
    """Proof 6 claims gap > (K + 1)((A - B) + (sqrt(B^2 + q) - sqrt(A^2 + q))); on the domain the
    opposite holds (the paper's expressions re-stated here)."""
    A, B, q, natural, robust = paper_errors(*params)
    K = params[5]
    rhs = (K + 1.0) * ((A - B) + (math.sqrt(B * B + q) - math.sqrt(A * A + q)))
    gap = (robust[1] - natural[1]) - (robust[0] - natural[0])
    bound, criterion = theorem3_printed_bound(*params)
    assert float(bound) == pytest.approx(rhs, rel=1e-6, abs=1e-12)
    assert float(bound) == pytest.approx((K + 1.0) * float(criterion), rel=1e-12)
    assert gap < rhs


def test_proof_intermediate_inequality_smallest_counterexample():
    """d = m = 1 (the smallest D', documented in the module): gap 0.349 against 1.136."""
    A, B, q, natural, robust = paper_errors(1, 1, 1.0, 0.8, 1.0, 2.0, 0.9)
    rhs = 3.0 * ((A - B) + (math.sqrt(B * B + q) - math.sqrt(A * A + q)))
    gap = (robust[1] - natural[1]) - (robust[0] - natural[0])
    assert (round(gap, 3), round(rhs, 3)) == (0.349, 1.136)


def test_no_non_robust_signal_reduces_to_corollary_1():
    """gamma = 0: D' is FRL §3's mixture plus noise; class -1's error falls (Corollary 1), so
    "every class's error increases" needs non-robust signal."""
    errs, nat, _ = theorem3_exact(2, 50, 1.0, 0.0, 1.0, 2.0, 0.5)
    mix = Mixture(2, 1.0, 1.0, 2.0)
    assert_allclose(nat.standard, mix.standard_errors(mix.natural_intercept()), rtol=1e-9)
    minus, plus = errs.increase
    assert minus < 0 < plus


def test_enough_non_robust_signal_raises_both_classes():
    minus, plus = theorem3_exact(1, 200, 1.0, 0.3, 1.0, 2.0, 0.5)[0].increase
    assert 0 < minus < plus


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d=0), "d must be a positive integer"),
        (dict(m=2.5), "m must be a positive integer"),
        (dict(eta=-1.0), "eta must be > 0"),
        (dict(gamma=-0.1), "gamma must be >= 0"),
        (dict(sigma=0.0), "sigma must be > 0"),
        (dict(K=0.5), "K must be >= 1"),
        (dict(eta=float("nan")), "eta must be finite"),
    ],
)
def test_feature_mixture_validation(kwargs, match):
    params = dict(d=2, m=10, eta=1.0, gamma=0.2, sigma=1.0, K=2.0) | kwargs
    with pytest.raises(ValueError, match=match):
        FeatureMixture(**params)


def test_budget_validation():
    mix = FeatureMixture(2, 10, 1.0, 0.2, 1.0, 2.0)
    with pytest.raises(ValueError, match="eps must satisfy 0 <= eps < eta"):
        mix.optimal_linear(1.0, "linf")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        mix.optimal_linear(-0.1)
    with pytest.raises(ValueError, match="norm must be one of"):
        mix.optimal_linear(0.1, "l1")
    with pytest.raises(ValueError, match="gamma < eps < eta"):
        theorem3_printed(2, 10, 1.0, 0.6, 1.0, 2.0, 0.5)
    with pytest.raises(ValueError, match="K must be > 1"):
        theorem3_printed(2, 10, 1.0, 0.2, 1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="shape"):
        mix.linear_errors(np.ones(3), 0.0)


@settings(max_examples=15)
@given(domains())
def test_linf_robust_optimum_above_the_budget(params):
    """gamma > eps (outside Eq. 19): each coordinate contributes |w_i| (theta_i - eps) at best
    (Hoelder), so f_rob's direction is (theta - eps)_+ and it uses both kinds of feature."""
    d, m, eta, gamma, sigma, K, eps = params
    gamma = eps + 0.5 * (eta - eps)  # between the budget and eta
    rob = FeatureMixture(d, m, eta, gamma, sigma, K).optimal_linear(eps, "linf")
    assert float(rob.ratio) == pytest.approx((gamma - eps) / (eta - eps), rel=1e-5, abs=1e-7)


def test_eq20_is_an_equality_at_K_1():
    """Equal class variances: both classes' errors change by the same amount (no strict Eq. 20)."""
    errs, _, _ = theorem3_exact(2, 30, 1.0, 0.2, 1.0, 1.0, 0.5)
    minus, plus = errs.increase
    assert plus == pytest.approx(minus, abs=1e-12)
    assert minus > 0  # at this m gamma^2 adversarial training raises both
