"""FAAL Theorem 1 by simulation: how often the KL-DRO value upper-bounds the true expected loss.

Setting (FAAL supp. Theorem 1 / Lemma 1): the true class distribution is P over C classes
with class losses l. From n draws we get the empirical distribution P_hat. The DRO value

    V(P_hat) = max_{w in simplex, KL(P_hat || w) <= tau} sum_c w_c l_c

upper-bounds E_P[l] = sum_c P_c l_c whenever P itself is feasible, i.e. whenever KL(P_hat || P) <=
tau, and the method of types gives Pr(KL(P_hat || P) > tau) <= (n+1)^C e^{-n tau}. So the coverage
frequency Pr(V >= E_P[l]) must be at least ``theory.dro.coverage_lower_bound(n, C, tau)``.

Zero counts: a class never drawn has P_hat_c = 0, and ``solve_kl_dro`` needs a strictly positive
prior. Such classes do not enter KL(P_hat || w), so the DRO may move mass m to them freely; it puts
it on the unobserved class of largest loss l_u, and what is left, (1 - m) v with v on the observed
set S, must satisfy KL(P_hat_S || v) <= tau + log(1 - m). Hence

    V = max_{0 <= m <= 1 - e^{-tau}}  m l_u + (1 - m) V_S(tau + log(1 - m)),

a concave 1-D problem (partial maximisation of a linear objective over a convex set), solved with a
bounded scalar search per such trial; V_S is ``dro_value`` on S with prior P_hat_S. The theorem's
event ``KL(P_hat || P) <= tau`` is evaluated exactly (0 log 0 = 0) and reported too; every trial in
the event must be covered (P is then feasible).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import xlogy
from scipy.stats import chi2

from theory.dro import coverage_lower_bound, dro_value

__all__ = ["simulate_dro_coverage"]

_TOL = 1e-10  # relative slack for "V >= E_P[l]" (the dual solve is exact to ~machine precision)


def _value_on_support(sub_l: np.ndarray, prior: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """V_S for rows of ``prior`` (on the observed set S) at per-row budgets ``tau``."""
    if sub_l.size == 1:  # one observed class: the only w on S is that class
        return np.full(prior.shape[0], sub_l[0])
    return dro_value(np.broadcast_to(sub_l, prior.shape), tau, prior=prior)


def _dro_values(losses: np.ndarray, p_hat: np.ndarray, tau: float) -> np.ndarray:
    """Exact V for each row of ``p_hat`` (see the module docstring for rows with zero counts)."""
    values = np.empty(p_hat.shape[0])
    support = p_hat > 0
    patterns, inverse = np.unique(support, axis=0, return_inverse=True)
    for k, pattern in enumerate(patterns):
        rows = np.flatnonzero(inverse.ravel() == k)
        sub_l = losses[pattern]
        prior = p_hat[np.ix_(rows, np.flatnonzero(pattern))]
        if pattern.all():
            values[rows] = _value_on_support(sub_l, prior, np.full(rows.size, tau))
            continue
        l_u = losses[~pattern].max()
        m_max = -np.expm1(-tau)
        for row, pr in zip(rows, prior):

            def neg_value(m, pr=pr, l_u=l_u, sub_l=sub_l):
                budget = np.array([tau + np.log1p(-m)])
                return -(m * l_u + (1.0 - m) * _value_on_support(sub_l, pr[None], budget)[0])

            if m_max <= 0:
                values[row] = -neg_value(0.0)
                continue
            res = minimize_scalar(
                neg_value, bounds=(0.0, m_max), method="bounded", options={"xatol": 1e-12}
            )
            values[row] = max(-res.fun, -neg_value(0.0), -neg_value(m_max))
    return values


def simulate_dro_coverage(
    p: np.ndarray,
    losses: np.ndarray,
    n: int,
    tau: float,
    trials: int,
    rng: np.random.Generator,
) -> dict:
    """Monte Carlo of FAAL Theorem 1 for one (n, tau).

    Returns a dict with ``coverage`` (fraction of trials with V >= E_P[l]), ``event_frequency``
    (fraction with KL(P_hat || P) <= tau), ``bound`` (``coverage_lower_bound(n, C, tau)``),
    ``chi2_event_probability`` (the large-n approximation Pr(chi2_{C-1} <= 2 n tau) of the event),
    ``uncovered_in_event`` (must be 0), ``zero_count_trials``, ``trials``, ``n``, ``tau``, ``C``.

    Args:
        p: the true class distribution P (C,).
        losses: the class losses (C,).
        n: samples per trial.
        tau: the KL budget.
        trials: the number of trials.
        rng: the random generator.

    Returns:
        The dict described above.
    """
    p = np.asarray(p, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or np.any(p <= 0) or abs(p.sum() - 1) > 1e-12:
        raise ValueError("p must be a strictly positive probability vector with >= 2 classes")
    if losses.shape != p.shape:
        raise ValueError(f"losses must have shape {p.shape}, got {losses.shape}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    num_classes = p.size
    counts = rng.multinomial(int(n), p, size=int(trials))
    p_hat = counts / n
    kl = xlogy(p_hat, p_hat).sum(axis=1) - p_hat @ np.log(p)
    event = kl <= tau
    true_mean = float(p @ losses)
    values = _dro_values(losses, p_hat, float(tau))
    covered = values >= true_mean - _TOL * max(1.0, abs(true_mean))
    return {
        "n": int(n),
        "tau": float(tau),
        "C": num_classes,
        "trials": int(trials),
        "coverage": float(covered.mean()),
        "event_frequency": float(event.mean()),
        "bound": float(coverage_lower_bound(int(n), num_classes, float(tau))),
        "chi2_event_probability": float(chi2.cdf(2.0 * n * tau, num_classes - 1)),
        "uncovered_in_event": int((event & ~covered).sum()),
        "zero_count_trials": int((counts == 0).any(axis=1).sum()),
    }
