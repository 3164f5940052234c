"""Class-wise error counts and Wilson intervals."""

import math

import numpy as np
import pytest

from sim.evaluation import binomial_ci, classwise_errors, count_errors


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (500, 1000), (999, 1000)])
def test_wilson_interval_matches_the_formula(k, n):
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = binomial_ci(k, n, 0.95)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-12)


def test_robust_counts_include_clean_errors_and_boundary_is_the_difference():
    y = np.array([-1, -1, -1, 1, 1, 1, 1])
    correct = np.array([True, False, True, True, True, False, True])
    robust = np.array([True, True, False, False, True, False, True])  # robust but wrong: not robust
    counts = count_errors(y, correct, robust)
    np.testing.assert_array_equal(counts[-1], [3, 1, 2])
    np.testing.assert_array_equal(counts[1], [4, 1, 2])
    res = classwise_errors(counts)
    assert res["+1"]["boundary"]["value"] == pytest.approx(0.25)
    for cls in ("-1", "+1"):
        for name in ("standard", "robust", "boundary"):
            e = res[cls][name]
            assert e["ci_low"] <= e["value"] <= e["ci_high"]
