"""Sampling from the FRL Gaussian mixture (FRL §3, Eq. 2).

    y uniform on {-1, +1};  x | y=-1 ~ N(-theta, sigma^2 I);  x | y=+1 ~ N(+theta, (K sigma)^2 I),
    theta = (eta, ..., eta) in R^d.

The functions take any object with scalar attributes ``d``, ``eta``, ``sigma``, ``K`` (normally a
``theory.gaussian.Mixture``) and a seeded ``numpy.random.Generator``. Everything is vectorised; for
classifiers whose weight is the all-ones vector, :func:`sample_projections` draws ``1.x`` directly
(it is exactly N(+-d eta, d sigma_y^2)), so millions of points cost no more than in d = 1.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = [
    "mixture_params",
    "sample_labels",
    "sample_mixture",
    "sample_projections",
    "iter_mixture_chunks",
]


def mixture_params(mixture) -> tuple[int, float, float, float]:
    """Return ``(d, eta, sigma, K)`` as Python scalars, validated (d >= 1, sigma > 0, K >= 1).

    Args:
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.

    Returns:
        ``(d, eta, sigma, K)``: an int and three floats.

    Raises:
        ValueError: for d < 1, sigma <= 0 or K < 1.
    """
    d = int(np.asarray(mixture.d))
    eta = float(np.asarray(mixture.eta))
    sigma = float(np.asarray(mixture.sigma))
    k = float(np.asarray(mixture.K))
    if d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not k >= 1:
        raise ValueError(f"K must be >= 1, got {k}")
    return d, eta, sigma, k


def _check_n(n) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


def sample_labels(n: int, rng: np.random.Generator, *, balanced: bool = False) -> np.ndarray:
    """Labels in {-1, +1} (int64), uniform at random, or exactly half each when ``balanced``.

    With ``balanced=True`` the first ``n // 2`` labels are -1 and the rest +1 (the extra point of an
    odd ``n`` goes to +1); order does not matter to any estimator here.

    Args:
        n: the number of labels.
        rng: the random generator.
        balanced: exactly half of each class.

    Returns:
        int64 labels (n,) in {-1, +1}.
    """
    n = _check_n(n)
    if balanced:
        y = np.ones(n, dtype=np.int64)
        y[: n // 2] = -1
        return y
    return np.where(rng.random(n) < 0.5, -1, 1).astype(np.int64)


def sample_mixture(
    mixture, n: int, rng: np.random.Generator, *, balanced: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points ``(x, y)`` from the mixture: x float64 of shape (n, d), y int64 in {-1,
    +1}.

    Args:
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.
        n: the number of points.
        rng: the random generator.
        balanced: exactly half of each class.

    Returns:
        ``(x, y)``: float64 (n, d) and int64 (n,) in {-1, +1}.
    """
    d, eta, sigma, k = mixture_params(mixture)
    y = sample_labels(n, rng, balanced=balanced)
    scale = np.where(y > 0, k * sigma, sigma)
    x = rng.standard_normal((y.size, d))
    x *= scale[:, None]
    x += (eta * y)[:, None]
    return x, y


def sample_projections(
    mixture, n: int, rng: np.random.Generator, *, balanced: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(s, y)`` with ``s = 1.x`` for ``(x, y)`` from the mixture, without forming ``x``.

    ``1.x | y`` is N(y d eta, d sigma_y^2) with sigma_{-1} = sigma, sigma_{+1} = K sigma, so this is
    exact in distribution and costs O(n) whatever d is.

    Args:
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.
        n: the number of points.
        rng: the random generator.
        balanced: exactly half of each class.

    Returns:
        ``(s, y)``: float64 (n,) projections ``1.x`` and int64 (n,) labels.
    """
    d, eta, sigma, k = mixture_params(mixture)
    y = sample_labels(n, rng, balanced=balanced)
    scale = np.where(y > 0, k * sigma, sigma) * np.sqrt(d)
    s = rng.standard_normal(y.size) * scale + d * eta * y
    return s, y


def iter_mixture_chunks(
    mixture, n: int, rng: np.random.Generator, *, chunk_size: int = 200_000, sample=None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``n`` mixture points in chunks of at most ``chunk_size`` (bounded memory for large
    d).

    Args:
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.
        n: the number of points in all.
        rng: the random generator.
        chunk_size: the most points per chunk.
        sample: ``sample(mixture, n, rng) -> (x, y)``; default :func:`sample_mixture` (another
            distribution, e.g. ``sim.features.sample_features`` for FRL's D').

    Yields:
        ``(x, y)`` chunks as ``sample`` returns them.
    """
    n = _check_n(n)
    chunk_size = _check_n(chunk_size)
    done = 0
    while done < n:
        m = min(chunk_size, n - done)
        yield (sample_mixture if sample is None else sample)(mixture, m, rng)
        done += m
