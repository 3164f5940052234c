"""FAAL Theorem 1's finite-sample bound (theory.dro.coverage_lower_bound) against the exact
multinomial probability of KL(P_hat_n || P) <= tau, found by enumerating every empirical
distribution (type) of n draws over C classes; and the method-of-types steps in between."""

import itertools
import math

import numpy as np
import pytest
from scipy.special import gammaln

from theory.dro import coverage_lower_bound, tau_for_coverage


def types(n, C):  # noqa: N803
    """Every count vector (k_1..k_C) with sum n."""
    for cuts in itertools.combinations(range(n + C - 1), C - 1):
        edges = (-1, *cuts, n + C - 1)
        yield np.array([edges[i + 1] - edges[i] - 1 for i in range(C)])


def kl(q, p):
    mask = q > 0
    return float(np.sum(q[mask] * np.log(q[mask] / p[mask])))


def log_multinomial(k, p):
    return float(gammaln(k.sum() + 1) - gammaln(k + 1).sum() + np.sum(k * np.log(p)))


def exact_miss(n, p, tau):
    """Pr(KL(P_hat_n || P) > tau), summed exactly over the types, and the number of types."""
    total, count = 0.0, 0
    for k in types(n, len(p)):
        count += 1
        if kl(k / n, p) > tau:
            total += math.exp(log_multinomial(k, p))
    return total, count


# Small n, C, where (n + 1)^C is large (10^3 .. 10^7): the polynomial factor dominates the bound.
CASES = [(40, 2), (60, 2), (30, 3), (50, 3), (24, 4)]


@pytest.mark.parametrize("n, C", CASES)
def test_bound_holds_against_exact_enumeration_where_it_is_not_vacuous(n, C):  # noqa: N803
    rng = np.random.default_rng(n * 10 + C)
    checked = 0
    for _ in range(3):
        p = rng.dirichlet(np.ones(C)) * 0.9 + 0.1 / C  # no tiny class probability
        # tau from where the bound turns positive, C log(n+1)/n, to well beyond
        tau0 = C * math.log(n + 1) / n
        for tau in tau0 * np.array([1.02, 1.2, 1.6, 2.5]):
            miss, count = exact_miss(n, p, tau)
            assert count == math.comb(n + C - 1, C - 1)
            bound = coverage_lower_bound(n, C, tau)
            assert 0 < bound < 1  # a non-vacuous bound: the exponent of (n + 1) matters here
            assert 1 - miss >= bound  # FAAL Theorem 1
            # Method of types: each type class has probability <= e^{-n KL} < e^{-n tau}, and
            # there are at most (n + 1)^C types: miss <= count e^{-n tau} <= 1 - bound.
            assert miss <= count * math.exp(-n * tau) <= (1 - bound) * (1 + 1e-12)
            checked += 1
    assert checked == 12


def test_bound_is_zero_where_the_polynomial_factor_exceeds_one_and_tight_at_large_tau():
    n, C = 30, 3
    assert coverage_lower_bound(n, C, 0.9 * C * math.log(n + 1) / n) == 0.0
    p = np.array([0.5, 0.3, 0.2])
    miss, _ = exact_miss(n, p, 1.5)
    assert 1 - miss >= coverage_lower_bound(n, C, 1.5) > 0.999
    # Without the (n + 1)^C factor the "bound" would fail: exact coverage < 1 - e^{-n tau}.
    tau = C * math.log(n + 1) / n
    miss, _ = exact_miss(n, p, tau)
    assert 1 - miss < 1 - math.exp(-n * tau)


@pytest.mark.parametrize("n, C, miss", [(1000, 2, 0.5), (200, 3, 0.25), (5000, 10, 0.8)])
def test_bound_and_its_inverse_pin_the_exponent_of_n_plus_1(n, C, miss):  # noqa: N803
    """FAAL Theorem 1 written out here: coverage >= 1 - (n + 1)^C e^{-n tau}. At the tau where the
    miss term is ``miss`` (a value away from 0 and 1), an exponent of C - 1 instead of C would
    shrink the miss term by the factor n + 1 (>= 201 here), so the bound would move by ~``miss``."""
    tau = (C * math.log(n + 1) - math.log(miss)) / n
    reference = 1.0 - float((n + 1) ** C) * math.exp(-n * tau)  # exact integer power
    assert reference == pytest.approx(1 - miss, rel=1e-12)
    assert coverage_lower_bound(n, C, tau) == pytest.approx(reference, rel=1e-12)
    wrong = 1.0 - float((n + 1) ** (C - 1)) * math.exp(-n * tau)
    assert abs(wrong - reference) > 0.9 * miss  # the two exponents differ measurably here
    # The inverse: the smallest tau whose bound reaches 1 - miss is this tau (to rounding).
    assert tau_for_coverage(1 - miss, n, C) == pytest.approx(tau, rel=1e-12)
