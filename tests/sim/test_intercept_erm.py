"""w = 1 intercept ERM (exact sweep): exactness, convergence to FRL's closed forms, Corollary 1."""

import math

import numpy as np
import pytest

from sim.classifiers import fit_intercept_erm, intercept_error_curves
from sim.data import sample_mixture, sample_projections
from sim.evaluation import evaluate_on_mixture
from theory.gaussian import Mixture

FIG2 = dict(d=2, eta=2.0, sigma=1.0, K=math.sqrt(2.0))
HIGHDIM = dict(d=100, eta=0.2, sigma=1.0, K=2.0)


def _brute_force_risk(s, y, b, shift):
    """Class-balanced robust 0-1 risk of sign(s + b), directly from the definition."""
    wrong_minus = np.mean(s[y == -1] + b + shift >= 0)
    wrong_plus = np.mean(s[y == 1] + b - shift <= 0)
    return 0.5 * (wrong_minus + wrong_plus)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_sweep_is_the_exact_minimiser(eps):
    m = Mixture(3, 0.5, 1.0, 2.0)
    s, y = sample_projections(m, 300, np.random.default_rng(5))
    clf = fit_intercept_erm(s, y, d=3, eps=eps)
    best = _brute_force_risk(s, y, clf.b, 3 * eps)
    # every breakpoint +- a tiny offset and a dense grid: nothing beats the sweep's intercept
    cands = np.concatenate([-s, -s - 3 * eps, -s + 3 * eps])
    cands = np.concatenate([cands - 1e-9, cands + 1e-9, np.linspace(-20, 20, 4001)])
    brute = min(_brute_force_risk(s, y, b, 3 * eps) for b in cands)
    assert best == pytest.approx(brute, abs=1e-12)
    # and the curves agree with the definition at each candidate intercept
    cur = intercept_error_curves(s, y, d=3, eps_minus=eps, eps_plus=eps)
    for i in range(0, cur.b.size, 37):
        r = _brute_force_risk(s, y, cur.b[i], 3 * eps)
        assert 0.5 * (cur.rob_minus[i] + cur.rob_plus[i]) == pytest.approx(r, abs=1e-12)


def _cube_root_scale(m: Mixture, b_star: float, eps: float, n: int) -> float:
    """Scale of b_hat - b* for a 0-1 risk minimiser (Kim & Pollard 1990, cube-root asymptotics).

    Near b* the empirical risk difference is R''/2 (b - b*)^2 + sqrt(a/n) W(b - b*), with W a
    two-sided Brownian motion and a = (f_- + f_+)/2, f_c = |d R_rob(c)/db| (class-mean errors with
    n/2 points per class). Rescaling gives b_hat - b* = (4a / (n R''^2))^{1/3} Z with Z =
    argmax(W(s) -
    s^2) (Chernoff's distribution, sd 0.52, tails ~ exp(-|z|^3 / 1.5)), so |Z| < 4 is certain for
    practical purposes. Derivatives by central differences of the closed-form class errors.
    """
    h = 1e-3 * math.sqrt(m.d) * m.sigma

    def errs(b):
        return np.array(m.robust_errors(b, eps))

    f = np.abs(errs(b_star + h) - errs(b_star - h)) / (2 * h)
    r2 = (errs(b_star + h).mean() - 2 * errs(b_star).mean() + errs(b_star - h).mean()) / h**2
    return (4 * f.mean() / (n * r2**2)) ** (1 / 3)


@pytest.mark.parametrize("params,eps", [(FIG2, 0.0), (FIG2, 0.5), (HIGHDIM, 0.0), (HIGHDIM, 0.1)])
def test_intercept_converges_to_the_closed_form(params, eps):
    m = Mixture(**params)
    b_star = float(m.natural_intercept() if eps == 0 else m.robust_intercept(eps))
    previous = None
    for n, seed in ((20_000, 11), (2_000_000, 12)):
        s, y = sample_projections(m, n, np.random.default_rng(seed))
        b_hat = fit_intercept_erm(s, y, d=params["d"], eps=eps).b
        scale = _cube_root_scale(m, b_star, eps, n)
        assert abs(b_hat - b_star) < 4 * scale, (n, b_hat, b_star, scale)
        previous = scale if previous is None else previous
    # the tolerance itself shrinks like n^{-1/3}: 100x more data, 100^{1/3} = 4.6x tighter
    assert scale < previous / 4


@pytest.mark.parametrize(
    "params,eps", [(FIG2, 0.5), (HIGHDIM, 0.1), (dict(d=4, eta=0.15, sigma=1.0, K=9.0), 0.05)]
)
def test_corollary1_robust_boundary_moves_toward_the_harder_class(params, eps):
    """b_rob < b_nat (FRL Corollary 1 proof): R_nat(-1) falls and R_nat(+1) rises, for fitted
    models."""
    m = Mixture(**params)
    s, y = sample_projections(m, 1_000_000, np.random.default_rng(3))
    nat = fit_intercept_erm(s, y, d=params["d"])
    rob = fit_intercept_erm(s, y, d=params["d"], eps=eps)
    assert rob.b < nat.b
    e_nat, e_rob = m.standard_errors(nat.b), m.standard_errors(rob.b)
    assert e_rob[0] < e_nat[0] and e_rob[1] > e_nat[1]


@pytest.mark.parametrize("params,eps", [(FIG2, 0.5), (HIGHDIM, 0.1)])
def test_class_errors_on_fresh_data_match_theory_within_ci(params, eps):
    """Test-sample class errors (exact robust correctness per point) vs the closed form at the
    fitted
    intercept: every 99.9% Wilson interval contains the theory value."""
    m = Mixture(**params)
    x, y = sample_mixture(m, 20_000, np.random.default_rng(21))
    for e_train in (0.0, eps):
        clf = fit_intercept_erm(x, y, eps=e_train)
        res = evaluate_on_mixture(
            clf, m, 300_000, np.random.default_rng(22), eps=eps, confidence=0.999
        )
        std = m.standard_errors(clf.b)
        rob = m.robust_errors(clf.b, eps)
        for i, cls in enumerate(("-1", "+1")):
            for name, val in (
                ("standard", std[i]),
                ("robust", rob[i]),
                ("boundary", rob[i] - std[i]),
            ):
                ci = res[cls][name]
                assert ci["ci_low"] <= val <= ci["ci_high"], (e_train, cls, name, ci, val)


def test_class_weights_and_class_eps_move_the_intercept_as_expected():
    m = Mixture(**FIG2)
    s, y = sample_projections(m, 200_000, np.random.default_rng(4))
    plain = fit_intercept_erm(s, y, d=2, eps=0.5)
    # more weight on class +1 -> fewer +1 errors -> larger intercept (predict +1 more often)
    heavier_plus = fit_intercept_erm(s, y, d=2, eps=0.5, class_weights=(0.3, 0.7))
    assert heavier_plus.b > plain.b
    # a larger training budget for class +1 only (Remargin) also favours class +1
    remargin = fit_intercept_erm(s, y, d=2, class_eps=(0.5, 0.8))
    assert remargin.b > plain.b


def test_l2_budget_uses_sqrt_d_shift():
    m = Mixture(**HIGHDIM)
    s, y = sample_projections(m, 1_000_000, np.random.default_rng(8))
    # l2 budget eps equals an l_inf budget eps / sqrt(d) for w = 1
    a = fit_intercept_erm(s, y, d=100, eps=1.0, norm="l2").b
    b = fit_intercept_erm(s, y, d=100, eps=0.1, norm="linf").b
    assert a == pytest.approx(b, abs=1e-9)
    b_star = float(m.robust_intercept(1.0, norm="l2"))
    assert abs(a - b_star) < 4 * _cube_root_scale(m, b_star, 0.1, 1_000_000)
