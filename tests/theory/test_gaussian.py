"""Tests of theory.gaussian (FRL §3) against independent references.

References: class errors from the definition with scipy.stats.norm (loc/scale form), the optimal
intercepts as numerical minimisers (scipy.optimize), high-precision evaluation with mpmath, and
Monte Carlo samples of the mixture with explicit worst-case perturbations.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import optimize, stats

from theory.gaussian import (
    Mixture,
    eq5_intercept,
    g,
    q,
    theorem1_A,
    theorem1_errors,
    theorem2_B,
    theorem2_errors,
)

# ------------------------------------------------------------------------------------------------
# Strategies and independent references
# ------------------------------------------------------------------------------------------------


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


# Wide ranges: a = sqrt(d) eta / sigma spans ~1e-5 .. 1e6, K from exactly 1 to 1e3.
DS = st.integers(1, 10_000)
ETAS = log_uniform(1e-3, 1e2)
SIGMAS = log_uniform(1e-2, 1e2)
KS = st.one_of(st.just(1.0), log_uniform(1e-15, 1e3).map(lambda t: 1.0 + t))
NORM = st.sampled_from(["linf", "l2"])
EPS_FRACTION = st.floats(0.0, 0.999)  # eps as a fraction of its upper limit

# Moderate ranges where the paper's printed expressions (which divide by K^2 - 1) are accurate and
# the class errors are far from underflow.
SMALL_DS = st.integers(1, 100)
MODERATE_ETAS = log_uniform(0.05, 5.0)
MODERATE_SIGMAS = log_uniform(0.2, 5.0)
MODERATE_KS = log_uniform(1.05, 50.0)


def dual_norm_of_ones(d: int, norm: str) -> float:
    """max over ||delta|| <= 1 of 1.delta (Hoelder): ||1||_1 = d for l_inf, ||1||_2 for l_2."""
    return float(d) if norm == "linf" else math.sqrt(d)


def eps_limit(d: int, eta: float, norm: str) -> float:
    return eta if norm == "linf" else math.sqrt(d) * eta


def definition_errors(d, eta, sigma, K, b, shift=0.0):
    """Class errors of sign(1.x + b) straight from FRL Eq. 2: 1.x ~ N(-/+ d eta, d sigma_y^2).

    ``shift`` = eps ||1||_*: the adversary moves 1.x by that much toward the wrong side.
    """
    err_minus = stats.norm.sf(0.0, loc=b - d * eta + shift, scale=math.sqrt(d) * sigma)
    err_plus = stats.norm.cdf(0.0, loc=b + d * eta - shift, scale=math.sqrt(d) * K * sigma)
    return err_minus, err_plus


def average_error(d, eta, sigma, K, b, shift=0.0):
    err_minus, err_plus = definition_errors(d, eta, sigma, K, b, shift)
    return 0.5 * (err_minus + err_plus)


def numerical_intercept(d, eta, sigma, K, shift=0.0):
    """Minimiser of the average (robust) error, by brentq on the sign of its derivative.

    dR/db = [pdf(u)/s - pdf(v)/(K s)] / 2 with u = (b - m)/s, v = (-b - m)/(K s); its sign is
    that of logpdf(u) - log s - logpdf(v) + log(K s) (log space, so it never underflows).
    dR/db > 0 at b = m, and < 0 for b far enough below; the minimiser is the root in between.
    """
    m = d * eta - shift
    s = math.sqrt(d) * sigma

    def slope_sign(b):
        u, v = (b - m) / s, (-b - m) / (K * s)
        return stats.norm.logpdf(u) - stats.norm.logpdf(v) + math.log(K)

    hi = m
    assert slope_sign(hi) > 0
    step = s
    lo = -m - step
    while slope_sign(lo) >= 0:
        step *= 2.0
        lo = -m - step
    scale = m + K * s
    return optimize.brentq(slope_sign, lo, hi, xtol=1e-15 * scale, rtol=4 * np.finfo(float).eps)


def mp_intercept(d, eta, sigma, K, dps=60):
    """FRL Eq. 5 as printed, in high precision (mpmath), with the K = 1 limit 0."""
    with mpmath.workdps(dps):
        d, eta, sigma, K = (mpmath.mpf(v) for v in (d, eta, sigma, K))
        if K == 1:
            return mpmath.mpf(0)
        qk = 2 * mpmath.log(K) / (K**2 - 1)
        return (K**2 + 1) / (K**2 - 1) * d * eta - K * mpmath.sqrt(
            4 * d**2 * eta**2 / (K**2 - 1) ** 2 + d * sigma**2 * qk
        )


def mp_interval(z, h):
    """P(z < N(0,1) < z + h) in high precision: interval reflected to the lower tail, and enough
    digits to survive subtracting two CDF values that agree in their first -log10(h) digits."""
    dps = 60 + int(max(0.0, -math.log10(h))) if h > 0 else 60
    with mpmath.workdps(dps):
        z, h = mpmath.mpf(z), mpmath.mpf(h)
        if z + h / 2 > 0:
            z = -z - h
        return mpmath.ncdf(z + h) - mpmath.ncdf(z)


def mp_q(K, dps=60):
    with mpmath.workdps(dps):
        K = mpmath.mpf(K)
        return mpmath.mpf(1) if K == 1 else 2 * mpmath.log(K) / (K**2 - 1)


# ------------------------------------------------------------------------------------------------
# Intercepts: closed forms vs numerical minimisers and high precision
# ------------------------------------------------------------------------------------------------


@given(DS, ETAS, SIGMAS, KS)
def test_natural_intercept_is_numerical_minimiser(d, eta, sigma, K):
    b = Mixture(d, eta, sigma, K).natural_intercept()
    b_num = numerical_intercept(d, eta, sigma, K)
    scale = d * eta + math.sqrt(d) * K * sigma
    assert_allclose(b, b_num, rtol=1e-9, atol=1e-11 * scale)


@given(DS, ETAS, SIGMAS, KS, EPS_FRACTION, NORM)
def test_robust_intercept_is_numerical_minimiser(d, eta, sigma, K, frac, norm):
    eps = frac * eps_limit(d, eta, norm)
    assume(eps < eps_limit(d, eta, norm))
    b = Mixture(d, eta, sigma, K).robust_intercept(eps, norm=norm)
    shift = eps * dual_norm_of_ones(d, norm)
    b_num = numerical_intercept(d, eta, sigma, K, shift)
    scale = d * eta + math.sqrt(d) * K * sigma
    assert_allclose(b, b_num, rtol=1e-9, atol=1e-11 * scale)


@given(SMALL_DS, MODERATE_ETAS, MODERATE_SIGMAS, st.one_of(st.just(1.0), MODERATE_KS))
def test_intercept_is_global_minimum_of_exact_average_error(d, eta, sigma, K):
    """Not just a stationary point: no b on a wide grid, nor minimize_scalar, does better."""
    mix = Mixture(d, eta, sigma, K)
    b = mix.natural_intercept()
    best = average_error(d, eta, sigma, K, b)
    span = 20.0 * (d * eta + math.sqrt(d) * K * sigma)
    grid = np.linspace(-span, span, 20_001)
    assert best <= average_error(d, eta, sigma, K, grid).min() + 1e-15
    res = optimize.minimize_scalar(
        lambda t: average_error(d, eta, sigma, K, t),
        bounds=(b - span / 100, b + span / 100),
        method="bounded",
        options={"xatol": 1e-12 * span},
    )
    assert best <= res.fun + 1e-15


@given(st.integers(1, 400), MODERATE_ETAS, MODERATE_SIGMAS, KS, EPS_FRACTION)
def test_l2_robust_intercept_is_g_at_shifted_eta(d, eta, sigma, K, frac):
    """l_2: the worst perturbation shifts 1.x by sqrt(d) eps, so b_rob = g(eta - eps / sqrt(d))."""
    eps = frac * math.sqrt(d) * eta
    b_l2 = Mixture(d, eta, sigma, K).robust_intercept(eps, norm="l2")
    eta_shifted = eta - eps / math.sqrt(d)
    assume(eta_shifted > 0)
    assert_allclose(b_l2, g(d, eta_shifted, sigma, K), rtol=1e-12, atol=1e-300)
    # ... and l_inf: b_rob = g(eta - eps) (FRL Theorem 2 / Corollary 1 proof).
    eps_inf = frac * eta
    b_inf = Mixture(d, eta, sigma, K).robust_intercept(eps_inf)
    assert_allclose(b_inf, g(d, eta - eps_inf, sigma, K), rtol=1e-12, atol=1e-300)


@given(DS, ETAS, SIGMAS, KS)
def test_intercept_matches_high_precision_eq5(d, eta, sigma, K):
    b = Mixture(d, eta, sigma, K).natural_intercept()
    ref = mp_intercept(d, eta, sigma, K, dps=120)
    assert np.isfinite(b)
    if ref == 0:
        assert b == 0.0
    else:
        assert abs(float((mpmath.mpf(b) - ref) / ref)) < 1e-12


@given(SMALL_DS, MODERATE_ETAS, MODERATE_SIGMAS, log_uniform(1.5, 50.0))
def test_printed_eq5_equals_stable_form_away_from_k1(d, eta, sigma, K):
    assert_allclose(eq5_intercept(d, eta, sigma, K), g(d, eta, sigma, K), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("delta", [1e-15, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2])
@pytest.mark.parametrize(("d", "eta", "sigma"), [(1, 0.01, 1.0), (2, 2.0, 1.0), (500, 0.3, 3.0)])
def test_k_to_one_is_continuous_and_accurate(delta, d, eta, sigma):
    K = 1.0 + delta
    mix1 = Mixture(d, eta, sigma, 1.0)
    mix = Mixture(d, eta, sigma, K)
    b = mix.natural_intercept()
    assert mix1.natural_intercept() == 0.0
    ref = mp_intercept(d, eta, sigma, K, dps=80)
    assert abs(float((mpmath.mpf(b) - ref) / ref)) < 1e-12
    # b -> 0 linearly in K - 1: b ~ (K - 1) s (a^2 - 1) / (2 a), s = sqrt(d) sigma, a = d eta / s.
    s = math.sqrt(d) * sigma
    a = d * eta / s
    if delta <= 1e-8:
        assert_allclose(b, (K - 1.0) * s * (a * a - 1.0) / (2.0 * a), rtol=1e-3)
    for eps in (0.0, 0.5 * eta):
        e1 = mix1.robust_errors(mix1.robust_intercept(eps), eps)
        e = mix.robust_errors(mix.robust_intercept(eps), eps)
        assert np.all(np.isfinite(e))
        # |db/dK| ~ s / a at K = 1, so the errors move by O((K - 1) / a).
        rtol = 20 * delta * (1.0 + 2.0 / a) + 1e-13
        assert_allclose(e, e1, rtol=rtol)
        assert_allclose(mix.boundary_errors(b, eps), mix1.boundary_errors(b, eps), rtol=rtol)


@given(KS)
def test_q_is_stable_and_matches_high_precision(K):
    got = q(K)
    ref = mp_q(K, dps=80)
    assert 0.0 <= got <= 1.0
    if ref > 1e-300:
        assert abs(float((mpmath.mpf(got) - ref) / ref)) < 1e-14
    assert q(1.0) == 1.0


@given(KS, KS)
def test_q_is_decreasing(K1, K2):
    lo, hi = sorted((K1, K2))
    assume(hi - lo > 1e-10 * hi)
    assert q(hi) < q(lo)


@given(SMALL_DS, log_uniform(1e-3, 1e2), log_uniform(1e-3, 1e2), SIGMAS, st.one_of(KS, MODERATE_KS))
def test_g_is_increasing_in_eta(d, eta1, eta2, sigma, K):
    """Corollary 1 proof: g' >= d (K - 1)^2 / (K^2 - 1) = d (K - 1)/(K + 1) > 0 for K > 1."""
    lo, hi = sorted((eta1, eta2))
    assume(hi - lo > 1e-6 * hi)
    g_lo, g_hi = g(d, lo, sigma, K), g(d, hi, sigma, K)
    slope_bound = d * (K - 1.0) / (K + 1.0)
    if K == 1.0:
        assert g_lo == g_hi == 0.0
    else:
        assert g_hi > g_lo
        assert (g_hi - g_lo) / (hi - lo) >= slope_bound * (1 - 1e-6)


# ------------------------------------------------------------------------------------------------
# Class errors: definition, paper's printed theorems, ordering results
# ------------------------------------------------------------------------------------------------


@given(DS, ETAS, SIGMAS, KS, st.floats(-3.0, 3.0), EPS_FRACTION, NORM)
def test_errors_match_definition(d, eta, sigma, K, b_rel, frac, norm):
    mix = Mixture(d, eta, sigma, K)
    b = b_rel * (d * eta + math.sqrt(d) * K * sigma)
    eps = frac * eps_limit(d, eta, norm)
    assume(eps < eps_limit(d, eta, norm))
    shift = eps * dual_norm_of_ones(d, norm)
    assert_allclose(mix.standard_errors(b), definition_errors(d, eta, sigma, K, b), rtol=1e-11)
    rob = mix.robust_errors(b, eps, norm=norm)
    assert_allclose(rob, definition_errors(d, eta, sigma, K, b, shift), rtol=1e-11)
    log_std = mix.standard_errors(b, log=True)
    assert np.all(np.isfinite(log_std))
    ref_log = (
        stats.norm.logsf(0.0, loc=b - d * eta, scale=math.sqrt(d) * sigma),
        stats.norm.logcdf(0.0, loc=b + d * eta, scale=math.sqrt(d) * K * sigma),
    )
    assert_allclose(log_std, ref_log, rtol=1e-11)


@given(SMALL_DS, MODERATE_ETAS, MODERATE_SIGMAS, KS, st.floats(-2.0, 2.0), EPS_FRACTION, NORM)
def test_boundary_errors_are_robust_minus_standard(d, eta, sigma, K, b_rel, frac, norm):
    """FRL Eq. 7, checked in high precision (so tiny boundary errors are checked relatively)."""
    mix = Mixture(d, eta, sigma, K)
    b = b_rel * (d * eta + math.sqrt(d) * K * sigma)
    eps = frac * eps_limit(d, eta, norm)
    assume(eps < eps_limit(d, eta, norm))
    bnd = mix.boundary_errors(b, eps, norm=norm)
    rob, std = mix.robust_errors(b, eps, norm=norm), mix.standard_errors(b)
    assert_allclose(bnd, np.subtract(rob, std), rtol=1e-9, atol=1e-15)
    shift = eps * dual_norm_of_ones(d, norm)
    s = math.sqrt(d) * sigma
    ref_minus = mp_interval((b - d * eta) / s, shift / s)
    ref_plus = mp_interval((-b - d * eta) / (K * s), shift / (K * s))
    for got, ref in zip(bnd, (ref_minus, ref_plus)):
        assert got >= 0
        if ref > 1e-300:
            assert abs(float((mpmath.mpf(got) - ref) / ref)) < 1e-9


@pytest.mark.parametrize("eps_rel", [1e-14, 1e-10, 1e-6, 1e-3])
def test_tiny_boundary_errors_keep_relative_precision(eps_rel):
    mix = Mixture(3, 1.5, 0.7, 2.0)
    b = mix.natural_intercept()
    eps = eps_rel * 1.5
    bnd = mix.boundary_errors(b, eps)
    s = math.sqrt(3) * 0.7
    ref = (
        mp_interval((b - 3 * 1.5) / s, 3 * eps / s),
        mp_interval((-b - 3 * 1.5) / (2 * s), 3 * eps / (2 * s)),
    )
    for got, r in zip(bnd, ref):
        assert abs(float((mpmath.mpf(got) - r) / r)) < 1e-12


@given(SMALL_DS, MODERATE_ETAS, MODERATE_SIGMAS, MODERATE_KS)
def test_theorem1_formula_and_ordering(d, eta, sigma, K):
    """FRL Theorem 1: the paper's expression equals the definition at b_nat, and R(-1) < R(+1)."""
    mix = Mixture(d, eta, sigma, K)
    b = mix.natural_intercept()
    paper = theorem1_errors(d, eta, sigma, K)
    assert_allclose(paper, definition_errors(d, eta, sigma, K, b), rtol=1e-8, atol=1e-300)
    A = theorem1_A(d, eta, sigma, K)
    assert_allclose(A, 2.0 / (K * K - 1.0) * math.sqrt(d) * eta / sigma, rtol=1e-15)
    log_minus, log_plus = mix.standard_errors(b, log=True)
    assert log_minus < log_plus


@given(DS, ETAS, SIGMAS, KS)
def test_theorem1_ordering_wide_range(d, eta, sigma, K):
    """R_nat(f_nat,-1) <= R_nat(f_nat,+1) everywhere, with equality at K = 1 (log space)."""
    mix = Mixture(d, eta, sigma, K)
    log_minus, log_plus = mix.standard_errors(mix.natural_intercept(), log=True)
    assert np.isfinite(log_minus) and np.isfinite(log_plus)
    if K == 1.0:
        assert log_minus == log_plus
    else:
        assert log_minus <= log_plus + 1e-12 * abs(log_plus)


@given(SMALL_DS, MODERATE_ETAS, MODERATE_SIGMAS, MODERATE_KS, st.floats(0.0, 0.95))
def test_theorem2_formula(d, eta, sigma, K, frac):
    """FRL Theorem 2: the paper's expression equals the definition-based errors at b_rob."""
    eps = frac * eta
    b_rob = Mixture(d, eta, sigma, K).robust_intercept(eps)
    paper = theorem2_errors(d, eta, sigma, K, eps)
    assert_allclose(paper, definition_errors(d, eta, sigma, K, b_rob), rtol=1e-8, atol=1e-300)
    assert_allclose(
        theorem2_B(d, eta, sigma, K, eps), theorem1_A(d, eta - eps, sigma, K), rtol=1e-15
    )


@given(SMALL_DS, MODERATE_ETAS, MODERATE_SIGMAS, MODERATE_KS, st.floats(0.01, 0.99))
def test_corollary1(d, eta, sigma, K, frac):
    """FRL Corollary 1: b_rob < b_nat, R_nat(f_rob,-1) < R_nat(f_nat,-1), R_nat(f_rob,+1) > ..."""
    eps = frac * eta
    mix = Mixture(d, eta, sigma, K)
    b_nat, b_rob = mix.natural_intercept(), mix.robust_intercept(eps)
    assert b_rob < b_nat
    nat_minus, nat_plus = mix.standard_errors(b_nat, log=True)
    rob_minus, rob_plus = mix.standard_errors(b_rob, log=True)
    assert rob_minus < nat_minus
    assert rob_plus > nat_plus
    # The same through the paper's printed expressions.
    paper_nat = theorem1_errors(d, eta, sigma, K)
    paper_rob = theorem2_errors(d, eta, sigma, K, eps)
    assert paper_rob[0] <= paper_nat[0] and paper_rob[1] >= paper_nat[1]


@given(DS, ETAS, SIGMAS, KS, EPS_FRACTION)
def test_sign_of_intercept_regime(d, eta, sigma, K, frac):
    """0 < b_rob (as FRL writes) holds exactly when a^2 > K^2 q(K), a = sqrt(d)(eta - eps)/sigma."""
    eps = frac * eta
    b_rob = Mixture(d, eta, sigma, K).robust_intercept(eps)
    a = math.sqrt(d) * (eta - eps) / sigma
    k2q = K * K * q(K)
    assume(abs(a * a - k2q) > 1e-9 * max(k2q, a * a))
    if K == 1.0:
        assert b_rob == 0.0
    else:
        assert (b_rob > 0) == (a * a > k2q)


def test_negative_intercept_outside_the_regime():
    """Heavy overlap (SPEC §1): d = 4, eta = 0.15, sigma = 1, K = 9 gives b < -d eta < 0."""
    d, eta, sigma, K = 4, 0.15, 1.0, 9.0
    a = math.sqrt(d) * eta / sigma
    assert a * a < K * K * q(K)
    mix = Mixture(d, eta, sigma, K)
    b_nat = mix.natural_intercept()
    assert b_nat < -d * eta
    assert_allclose(b_nat, numerical_intercept(d, eta, sigma, K), rtol=1e-10)
    b_rob = mix.robust_intercept(0.05)
    assert b_rob < b_nat < 0


def test_frl_figure2_setting_is_in_the_positive_regime():
    """FRL Fig. 2: d = 2, theta = (2, 2), sigma_-1^2 = 1, sigma_+1^2 = 2, eps = 0.5."""
    mix = Mixture(2, 2.0, 1.0, math.sqrt(2.0))
    b_nat, b_rob = mix.natural_intercept(), mix.robust_intercept(0.5)
    assert 0 < b_rob < b_nat < 2 * 2.0
    assert_allclose(b_nat, numerical_intercept(2, 2.0, 1.0, math.sqrt(2.0)), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Monte Carlo
# ------------------------------------------------------------------------------------------------


def _within_binomial_ci(p_hat, p, n, z=5.0):
    return abs(p_hat - p) <= z * math.sqrt(p * (1 - p) / n) + 1.0 / n


@pytest.mark.parametrize(
    ("d", "eta", "sigma", "K", "eps", "norm"),
    [
        (2, 2.0, 1.0, math.sqrt(2.0), 0.5, "linf"),
        (3, 0.5, 1.0, 2.0, 0.2, "linf"),
        (5, 0.4, 1.0, 3.0, 0.6, "l2"),
    ],
)
def test_monte_carlo_class_errors(d, eta, sigma, K, eps, norm):
    n = 200_000
    rng = np.random.default_rng(1234)
    x_minus = -eta + sigma * rng.standard_normal((n, d))
    x_plus = eta + K * sigma * rng.standard_normal((n, d))
    mix = Mixture(d, eta, sigma, K)
    # Explicit worst-case perturbation for w = 1: l_inf: eps * sign(w); l_2: eps * w / ||w||_2.
    delta = eps * (np.ones(d) if norm == "linf" else np.ones(d) / math.sqrt(d))
    for b in (mix.natural_intercept(), mix.robust_intercept(eps, norm=norm), -0.3):
        std = mix.standard_errors(b)
        rob = mix.robust_errors(b, eps, norm=norm)
        bnd = mix.boundary_errors(b, eps, norm=norm)
        wrong_minus = x_minus.sum(axis=1) + b > 0
        wrong_plus = x_plus.sum(axis=1) + b < 0
        wrong_minus_adv = (x_minus + delta).sum(axis=1) + b > 0
        wrong_plus_adv = (x_plus - delta).sum(axis=1) + b < 0
        empirical = {
            "std": (wrong_minus.mean(), wrong_plus.mean()),
            "rob": (wrong_minus_adv.mean(), wrong_plus_adv.mean()),
            "bnd": ((wrong_minus_adv & ~wrong_minus).mean(), (wrong_plus_adv & ~wrong_plus).mean()),
        }
        for key, exact in (("std", std), ("rob", rob), ("bnd", bnd)):
            for p_hat, p in zip(empirical[key], exact):
                assert _within_binomial_ci(p_hat, p, n), (key, b, p_hat, p)


# ------------------------------------------------------------------------------------------------
# API: broadcasting, types, grid size
# ------------------------------------------------------------------------------------------------


def test_scalars_in_give_numpy_float64_scalars_out():
    mix = Mixture(2, 2.0, 1.0, 2**0.5)
    for value in (
        mix.natural_intercept(),
        mix.robust_intercept(0.5),
        *mix.standard_errors(0.1),
        *mix.robust_errors(0.1, 0.5, norm="l2"),
        *mix.boundary_errors(0.1, 0.5),
        q(2.0),
        *theorem1_errors(2, 2.0, 1.0, 2.0),
    ):
        assert type(value) is np.float64
    assert mix.shape == ()


def test_broadcasting_shapes_and_elementwise_agreement():
    d = np.array([1, 2, 7])[:, None, None]
    eta = np.array([0.5, 1.0, 3.0, 4.0])[None, :, None]
    K = np.array([1.0, 1.5])[None, None, :]
    mix = Mixture(d, eta, 1.3, K)
    assert mix.shape == (3, 4, 2)
    b = mix.natural_intercept()
    assert b.shape == (3, 4, 2) and b.dtype == np.float64
    eps = np.array([0.0, 0.1, 0.4])[:, None, None, None]
    b_rob = mix.robust_intercept(eps)
    assert b_rob.shape == (3, 3, 4, 2)
    err = mix.robust_errors(b_rob, eps, norm="l2")
    assert err[0].shape == err[1].shape == (3, 3, 4, 2)
    for idx in [(0, 0, 0, 0), (2, 1, 3, 1), (1, 2, 2, 0)]:
        e, i, j, k = idx
        single = Mixture(int(d[i, 0, 0]), float(eta[0, j, 0]), 1.3, float(K[0, 0, k]))
        assert_allclose(b_rob[idx], single.robust_intercept(float(eps[e, 0, 0, 0])), rtol=1e-15)
        b_single = single.robust_intercept(float(eps[e, 0, 0, 0]))
        assert_allclose(
            err[1][idx],
            single.robust_errors(b_single, float(eps[e, 0, 0, 0]), norm="l2")[1],
            rtol=1e-15,
        )


def test_million_point_grid_evaluates():
    eta = np.linspace(0.01, 3.0, 1000)[:, None]
    K = np.linspace(1.0, 10.0, 1000)[None, :]
    mix = Mixture(10, eta, 1.0, K)
    b = mix.robust_intercept(0.5 * eta)
    std = mix.standard_errors(b)
    rob = mix.robust_errors(b, 0.5 * eta)
    bnd = mix.boundary_errors(b, 0.5 * eta)
    for arr in (b, *std, *rob, *bnd):
        assert arr.shape == (1000, 1000)
        assert np.all(np.isfinite(arr))
    assert np.all((0 <= std[0]) & (std[0] <= rob[0]) & (rob[0] <= 1))


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

GOOD = {"d": 2, "eta": 1.0, "sigma": 1.0, "K": 2.0}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("d", 0),
        ("d", -3),
        ("d", 2.5),
        ("d", np.nan),
        ("d", np.inf),
        ("d", [1, 0]),
        ("d", True),
        ("d", "two"),
        ("eta", 0.0),
        ("eta", -1.0),
        ("eta", np.nan),
        ("eta", np.inf),
        ("eta", [1.0, -1.0]),
        ("sigma", 0.0),
        ("sigma", -2.0),
        ("sigma", np.nan),
        ("sigma", -np.inf),
        ("K", 0.999),
        ("K", 0.0),
        ("K", np.nan),
        ("K", np.inf),
        ("K", [1.0, 0.5]),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(name, value):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        Mixture(**{**GOOD, name: value})


def test_incompatible_shapes_raise():
    with pytest.raises(ValueError, match="broadcast"):
        Mixture(2, np.ones(3), np.ones(4), 2.0)
    with pytest.raises(ValueError, match="eps"):
        Mixture(2, np.ones(3), 1.0, 2.0).robust_intercept(np.full(4, 0.1))
    with pytest.raises(ValueError, match="eps"):  # eps must also fit sigma's and K's shape
        Mixture(2, 1.0, np.ones(3), 2.0).robust_intercept(np.full(4, 0.1))
    with pytest.raises(ValueError, match=r"\bb\b"):
        Mixture(2, 1.0, 1.0, np.full(3, 2.0)).standard_errors(np.zeros(4))
    with pytest.raises(ValueError, match=r"\bb\b"):
        Mixture(2, 1.0, 1.0, 2.0).robust_errors(np.zeros(4), np.full(3, 0.1))


@pytest.mark.parametrize(
    ("eps", "norm", "pattern"),
    [
        (-0.1, "linf", "eps"),
        (1.0, "linf", "eps"),
        (1.5, "linf", "eps"),
        (np.nan, "linf", "eps"),
        (np.inf, "l2", "eps"),
        (math.sqrt(2.0), "l2", "eps"),
        ([0.1, 1.2], "linf", "eps"),
        (0.1, "l1", "norm"),
        (0.1, "Linf", "norm"),
        (0.1, None, "norm"),
    ],
)
def test_bad_eps_or_norm_raise(eps, norm, pattern):
    mix = Mixture(**GOOD)  # eta = 1, d = 2: l_inf needs eps < 1, l_2 needs eps < sqrt(2)
    for call in (
        lambda: mix.robust_intercept(eps, norm=norm),
        lambda: mix.robust_errors(0.0, eps, norm=norm),
        lambda: mix.boundary_errors(0.0, eps, norm=norm),
    ):
        with pytest.raises(ValueError, match=pattern):
            call()


def test_l2_allows_eps_beyond_eta_up_to_sqrt_d_eta():
    mix = Mixture(4, 1.0, 1.0, 2.0)
    assert np.isfinite(mix.robust_intercept(1.9, norm="l2"))
    with pytest.raises(ValueError, match="eps"):
        mix.robust_intercept(2.0, norm="l2")


@pytest.mark.parametrize("b", [np.nan, np.inf, -np.inf, [0.0, np.nan], "x"])
def test_bad_intercept_raises(b):
    mix = Mixture(**GOOD)
    with pytest.raises(ValueError, match=r"\bb\b"):
        mix.standard_errors(b)
    with pytest.raises(ValueError, match=r"\bb\b"):
        mix.robust_errors(b, 0.1)
    with pytest.raises(ValueError, match=r"\bb\b"):
        mix.boundary_errors(b, 0.1)


def test_paper_expressions_validate_their_inputs():
    with pytest.raises(ValueError, match=r"\bK\b"):
        theorem1_errors(2, 1.0, 1.0, 1.0)  # printed form divides by K^2 - 1
    with pytest.raises(ValueError, match=r"\bK\b"):
        eq5_intercept(2, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="eps"):
        theorem2_errors(2, 1.0, 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match=r"\bsigma\b"):
        theorem2_B(2, 1.0, -1.0, 2.0, 0.1)
    with pytest.raises(ValueError, match=r"\bd\b"):
        theorem1_A(0, 1.0, 1.0, 2.0)
    with pytest.raises(ValueError, match=r"\bK\b"):
        q(0.5)
    with pytest.raises(ValueError, match=r"\bK\b"):
        q(np.nan)
