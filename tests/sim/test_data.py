"""Sampling from the FRL mixture (FRL Eq. 2): moments, projections, labels, validation."""

import numpy as np
import pytest
from scipy import stats

from sim.data import iter_mixture_chunks, sample_labels, sample_mixture, sample_projections
from theory.gaussian import Mixture


def test_class_moments_match_the_definition():
    m = Mixture(3, 0.7, 1.5, 2.0)
    x, y = sample_mixture(m, 400_000, np.random.default_rng(1))
    assert x.shape == (400_000, 3) and x.dtype == np.float64
    for c, sd in ((-1, 1.5), (1, 3.0)):
        xc = x[y == c]
        se = sd / np.sqrt(len(xc))
        np.testing.assert_allclose(xc.mean(axis=0), c * 0.7, atol=5 * se)
        cov = np.cov(xc.T)
        np.testing.assert_allclose(np.diag(cov), sd**2, rtol=0.02)
        off = cov[~np.eye(3, dtype=bool)]
        assert np.all(np.abs(off) < 0.02 * sd**2)
    # labels uniform: binomial 5-sigma band
    assert abs((y == 1).mean() - 0.5) < 5 * 0.5 / np.sqrt(len(y))


def test_projections_have_the_distribution_of_one_dot_x():
    m = Mixture(50, 0.1, 1.0, 3.0)
    x, y = sample_mixture(m, 20_000, np.random.default_rng(2))
    s, ys = sample_projections(m, 20_000, np.random.default_rng(3))
    for c in (-1, 1):
        # two-sample KS between 1.x from full samples and the direct projections
        p = stats.ks_2samp(x[y == c].sum(axis=1), s[ys == c]).pvalue
        assert p > 1e-3


def test_same_seed_same_sample_and_balanced_labels():
    m = Mixture(2, 2.0, 1.0, np.sqrt(2))
    a = sample_mixture(m, 1000, np.random.default_rng(7))
    b = sample_mixture(m, 1000, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    y = sample_labels(11, np.random.default_rng(0), balanced=True)
    assert (y == -1).sum() == 5 and (y == 1).sum() == 6


def test_chunks_cover_n_points():
    m = Mixture(4, 1.0, 1.0, 1.0)
    chunks = list(iter_mixture_chunks(m, 1001, np.random.default_rng(0), chunk_size=300))
    assert [len(c[1]) for c in chunks] == [300, 300, 300, 101]


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_n_is_rejected(n):
    with pytest.raises(ValueError, match="n must be"):
        sample_mixture(Mixture(2, 1.0, 1.0, 1.0), n, np.random.default_rng(0))
