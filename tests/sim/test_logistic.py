"""Logistic regression: scikit-learn agreement, exact l_inf worst case, gradient, robust optimum."""

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from sim.classifiers import (
    LinearClassifier,
    fit_logistic_natural,
    fit_logistic_robust,
    robust_logistic_loss,
)
from sim.data import sample_mixture
from sim.evaluation import linear_population_errors
from theory.gaussian import Mixture

FIG2 = Mixture(2, 2.0, 1.0, math.sqrt(2.0))


@pytest.fixture(scope="module")
def fig2_data():
    return sample_mixture(FIG2, 4000, np.random.default_rng(0))


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_natural_fit_agrees_with_scikit_learn(fig2_data, C):
    """eps = 0 through our L-BFGS-B objective == scikit-learn's LogisticRegression (same C)."""
    x, y = fig2_data
    ref = fit_logistic_natural(x, y, C=C)
    start = LinearClassifier(w=np.zeros(2), b=0.0)
    ours = fit_logistic_robust(x, y, eps=0.0, C=C, init=start)
    np.testing.assert_allclose(ours.w, ref.w, rtol=1e-5, atol=1e-6)
    assert ours.b == pytest.approx(ref.b, rel=1e-5, abs=1e-6)


def test_worst_case_margin_is_the_vertex_maximum():
    """For a linear model the l_inf worst case is at a vertex of the box: brute force over all 2^d
    vertices gives margin - eps ||w||_1."""
    rng = np.random.default_rng(1)
    d, eps = 4, 0.3
    w, b = rng.normal(size=d), 0.4
    clf = LinearClassifier(w=w, b=b)
    x, y = rng.normal(size=(50, d)), np.where(rng.random(50) < 0.5, -1, 1)
    vertices = np.array(list(itertools.product((-eps, eps), repeat=d)))
    worst = np.min(y[:, None] * ((x[:, None, :] + vertices[None]) @ w + b), axis=1)
    closed = y * (x @ w + b) - eps * np.abs(w).sum()
    np.testing.assert_allclose(worst, closed, atol=1e-12)
    np.testing.assert_array_equal(clf.robust_correct(x, y, eps), worst > 0)


def test_robust_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    n, d = 40, 3
    x, y = rng.normal(size=(n, d)), np.where(rng.random(n) < 0.5, -1.0, 1.0)
    eps = np.where(y > 0, 0.2, 0.35)
    sw = rng.uniform(0.5, 1.5, size=n)
    params = np.concatenate([rng.uniform(0.1, 1, d), rng.uniform(0.1, 1, d), [0.3]])

    def f(p):
        return robust_logistic_loss(p, x, y, eps, C=0.7, sample_weight=sw)[0]

    _, grad = robust_logistic_loss(params, x, y, eps, C=0.7, sample_weight=sw)
    np.testing.assert_allclose(grad, approx_fprime(params, f, 1e-7), rtol=1e-5, atol=1e-7)
    # the loss at w = w+ - w- equals the mean softplus of the brute-force worst-case margin
    w = params[:d] - params[d : 2 * d]
    l1 = params[:d].sum() + params[d : 2 * d].sum()
    margin = y * (x @ w + params[-1]) - eps * l1
    ref = (sw @ np.logaddexp(0, -margin)) / n + w @ w / (2 * 0.7 * n)
    assert f(params) == pytest.approx(ref, rel=1e-12)


def test_robust_fit_is_the_convex_optimum():
    """Against cvxpy on the same convex problem: sum softplus(-(y (w.x+b) - eps ||w||_1)) +
    ||w||^2/(2C)."""
    cp = pytest.importorskip("cvxpy")
    x, y = sample_mixture(Mixture(3, 1.0, 1.0, 2.0), 300, np.random.default_rng(3))
    eps, C = 0.4, 1.0
    w, b = cp.Variable(3), cp.Variable()
    margin = cp.multiply(y, x @ w + b) - eps * cp.norm1(w)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-margin)) + cp.sum_squares(w) / (2 * C)))
    prob.solve()
    ours = fit_logistic_robust(x, y, eps=eps, C=C)
    n = len(y)
    ours_obj = (
        n
        * robust_logistic_loss(
            np.concatenate([np.maximum(ours.w, 0), np.maximum(-ours.w, 0), [ours.b]]),
            x,
            y,
            eps,
            C=C,
        )[0]
    )
    assert ours_obj <= prob.value + 1e-6 * abs(prob.value)
    np.testing.assert_allclose(ours.w, w.value, atol=2e-3)


def test_robust_logistic_boundary_moves_toward_the_harder_class(fig2_data):
    """FRL Fig. 2 (left): the robust boundary crosses the diagonal closer to +theta; class -1's
    standard error falls and class +1's rises (exact errors of the fitted models)."""
    x, y = fig2_data
    nat = fit_logistic_natural(x, y)
    rob = fit_logistic_robust(x, y, eps=0.5, init=nat)
    assert rob.diagonal_crossing() > nat.diagonal_crossing()
    e_nat = linear_population_errors(FIG2, nat.w, nat.b, 0.5)
    e_rob = linear_population_errors(FIG2, rob.w, rob.b, 0.5)
    assert e_rob["-1"]["standard"] < e_nat["-1"]["standard"]
    assert e_rob["+1"]["standard"] > e_nat["+1"]["standard"]


def test_l2_robust_fit_reduces_its_robust_loss():
    x, y = sample_mixture(Mixture(5, 0.5, 1.0, 2.0), 2000, np.random.default_rng(4))
    nat = fit_logistic_natural(x, y)
    rob = fit_logistic_robust(x, y, eps=0.5, norm="l2", init=nat)

    def l2_loss(c):
        m = y * (x @ c.w + c.b) - 0.5 * np.linalg.norm(c.w)
        return np.mean(np.logaddexp(0, -m)) + c.w @ c.w / (2 * len(y))

    assert l2_loss(rob) < l2_loss(nat)
    # the worst case for l2 is -eps w/||w||: brute force check on one point
    xi, yi = x[0], y[0]
    worst = yi * ((xi - yi * 0.5 * rob.w / np.linalg.norm(rob.w)) @ rob.w + rob.b)
    assert rob.robust_correct(xi[None], np.array([yi]), 0.5, "l2")[0] == (worst > 0)


def test_population_errors_match_theory_for_w_one_and_monte_carlo_otherwise():
    m = Mixture(4, 0.5, 1.2, 1.7)
    for b in (-1.0, 0.3, 2.0):
        e = linear_population_errors(m, np.ones(4), b, 0.2)
        np.testing.assert_allclose(
            [e["-1"]["standard"], e["+1"]["standard"]], m.standard_errors(b), rtol=1e-12
        )
        np.testing.assert_allclose(
            [e["-1"]["robust"], e["+1"]["robust"]], m.robust_errors(b, 0.2), rtol=1e-12
        )
    w, b, eps = np.array([1.0, -0.5, 2.0, 0.3]), 0.4, 0.15
    e = linear_population_errors(m, w, b, eps)
    x, y = sample_mixture(m, 400_000, np.random.default_rng(6))
    clf = LinearClassifier(w=w, b=b)
    for c, key in ((-1, "-1"), (1, "+1")):
        sel = y == c
        k = sel.sum()
        for name, ok in (
            ("standard", clf.correct(x[sel], y[sel])),
            ("robust", clf.robust_correct(x[sel], y[sel], eps)),
        ):
            p = e[key][name]
            assert abs((~ok).mean() - p) < 5 * math.sqrt(p * (1 - p) / k)
