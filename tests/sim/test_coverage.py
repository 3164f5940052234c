"""FAAL Theorem 1 by simulation (sim.coverage)."""

import numpy as np
import pytest

from sim.coverage import _dro_values, simulate_dro_coverage
from theory.dro import tau_for_coverage

P = np.array([0.5, 0.3, 0.2])
LOSSES = np.array([0.2, 0.5, 0.9])


@pytest.mark.parametrize("n", [30, 300])
def test_coverage_is_at_least_the_bound(n):
    rng = np.random.default_rng(0)
    taus = [0.003, 0.03, tau_for_coverage(0.5, n, 3), tau_for_coverage(0.9, n, 3)]
    for tau in taus:
        r = simulate_dro_coverage(P, LOSSES, n, tau, 1000, rng)
        # the bound holds for the probability; a 1000-trial frequency may undershoot it by noise,
        # so allow 4 binomial standard deviations
        slack = 4 * np.sqrt(r["bound"] * (1 - r["bound"]) / 1000)
        assert r["coverage"] >= r["bound"] - slack
        # deterministic part of the theorem: in the event KL(P_hat || P) <= tau, P is feasible
        assert r["uncovered_in_event"] == 0
        assert r["coverage"] >= r["event_frequency"]


def test_event_frequency_follows_the_chi_square_limit():
    """2n KL(P_hat || P) -> chi2_{C-1}; at n = 2000 the frequency is within Monte Carlo error."""
    r = simulate_dro_coverage(P, LOSSES, 2000, 0.001, 4000, np.random.default_rng(1))
    p = r["chi2_event_probability"]
    assert abs(r["event_frequency"] - p) < 4 * np.sqrt(p * (1 - p) / 4000) + 0.01


def _brute_force_value(p_hat, tau, grid=1500):
    """max w.l over a fine simplex grid with KL(p_hat || w) <= tau (0 log 0 = 0)."""
    a, b = np.meshgrid(np.linspace(0, 1, grid + 1), np.linspace(0, 1, grid + 1))
    w = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], axis=1)
    w = w[w[:, 2] >= 0]
    pos = p_hat > 0
    w = w[np.all(w[:, pos] > 0, axis=1)]
    kl = (p_hat[pos] * np.log(p_hat[pos] / w[:, pos])).sum(axis=1)
    return (w[kl <= tau] @ LOSSES).max()


@pytest.mark.parametrize(
    "p_hat", [[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [1.0, 0.0, 0.0], [0.5, 0.3, 0.2]]
)
def test_dro_value_with_zero_counts_is_exact(p_hat):
    p_hat = np.array(p_hat)
    v = _dro_values(LOSSES, p_hat[None], 0.2)[0]
    ref = _brute_force_value(p_hat, 0.2)
    assert ref - 1e-9 <= v <= ref + 1e-3  # the grid value is a lower bound, within grid resolution


def test_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="p must"):
        simulate_dro_coverage(np.array([0.5, 0.5, 0.0]), LOSSES, 10, 0.1, 10, rng)
    with pytest.raises(ValueError, match="n must"):
        simulate_dro_coverage(P, LOSSES, 0, 0.1, 10, rng)
