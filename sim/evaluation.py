"""Class-wise standard, robust and boundary errors (FRL Eq. 7) with binomial confidence intervals.

Empirical side: counts on a fresh test sample, Wilson score intervals (scipy ``binomtest``). A point
counts as robustly correct only if it is also correct on the clean input, so
``boundary = robust - standard`` per class and each of the three is itself a binomial proportion.

Population side for an arbitrary linear classifier ``sign(w.x + b)`` (exact; FRL §3 generalised from
w = 1): ``w.x | y=-1 ~ N(-eta sum(w), sigma^2 ||w||_2^2)`` and ``w.x | y=+1 ~ N(eta sum(w),
K^2 sigma^2 ||w||_2^2)``; the worst case of the budget moves ``w.x`` by ``eps ||w||_*`` (dual
norm), so

    R_nat(-1) = Phi((b - eta sum w) / (sigma ||w||)),
    R_rob(-1) = Phi((b - eta sum w + eps ||w||_*) / (sigma ||w||)),
    R_nat(+1) = Phi((-b - eta sum w) / (K sigma ||w||)),
    R_rob(+1) = Phi((-b - eta sum w + eps ||w||_*) / (K sigma ||w||)).

For w = 1 these are FRL's class errors (``theory.gaussian.Mixture.standard_errors`` /
``robust_errors``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr
from scipy.stats import binomtest

from sim.classifiers import dual_norm
from sim.data import iter_mixture_chunks, mixture_params

__all__ = [
    "CLASSES",
    "binomial_ci",
    "count_errors",
    "classwise_errors",
    "evaluate_on_mixture",
    "evaluate_many_on_mixture",
    "linear_population_errors",
]

CLASSES = (-1, 1)
CLASS_KEYS = {-1: "-1", 1: "+1"}


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Args:
        k: successes.
        n: trials (>= 1).
        confidence: the interval's level.

    Returns:
        ``(low, high)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 for a confidence interval, got {n}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def count_errors(y: np.ndarray, correct: np.ndarray, robust_correct: np.ndarray) -> dict:
    """Per-class counts ``{c: [n, standard errors, robust errors]}`` (robust = wrong clean or
    attacked).

    Args:
        y: labels (n,) in {-1, +1}.
        correct: bool (n,), standard correctness.
        robust_correct: bool (n,), robust correctness.

    Returns:
        ``{-1: [n, standard errors, robust errors], +1: [...]}``.
    """
    robust_wrong = ~(np.asarray(robust_correct) & np.asarray(correct))
    wrong = ~np.asarray(correct)
    return {
        c: np.array(
            [(y == c).sum(), wrong[y == c].sum(), robust_wrong[y == c].sum()], dtype=np.int64
        )
        for c in CLASSES
    }


def classwise_errors(counts: dict, confidence: float = 0.95) -> dict:
    """``{"-1"|"+1": {"n": int, "standard"|"robust"|"boundary": {"value", "ci_low",
    "ci_high"}}}``.

    Args:
        counts: :func:`count_errors`'s counts.
        confidence: the intervals' level.

    Returns:
        The errors with Wilson intervals, keyed as above.
    """
    out = {}
    for c in CLASSES:
        n, k_std, k_rob = (int(v) for v in counts[c])
        entry: dict = {"n": n}
        for name, k in (("standard", k_std), ("robust", k_rob), ("boundary", k_rob - k_std)):
            lo, hi = binomial_ci(k, n, confidence)
            entry[name] = {"value": k / n, "ci_low": lo, "ci_high": hi}
        out[CLASS_KEYS[c]] = entry
    return out


def evaluate_on_mixture(
    clf,
    mixture,
    n_test: int,
    rng: np.random.Generator,
    *,
    eps: float,
    norm: str = "linf",
    confidence: float = 0.95,
    chunk_size: int = 200_000,
    robust_kwargs: dict | None = None,
) -> dict:
    """Class-wise errors of ``clf`` on ``n_test`` fresh mixture points (drawn in chunks).

    ``clf`` needs ``correct(x, y)`` and ``robust_correct(x, y, eps, norm, **robust_kwargs)`` (exact
    for linear classifiers, PGD for the MLP).

    Args:
        clf: the classifier (``correct`` and ``robust_correct`` methods).
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.
        n_test: the number of test points.
        rng: the random generator.
        eps: the budget of the robust error.
        norm: ``"linf"`` or ``"l2"``.
        confidence: the intervals' level.
        chunk_size: the most points drawn at once.
        robust_kwargs: extra arguments of ``robust_correct``.

    Returns:
        ``{"-1"|"+1": {"n", "standard"|"robust"|"boundary": {"value", "ci_low", "ci_high"}}}``
        (Wilson intervals).
    """
    return evaluate_many_on_mixture(
        {"clf": clf},
        mixture,
        n_test,
        rng,
        eps=eps,
        norm=norm,
        confidence=confidence,
        chunk_size=chunk_size,
        robust_kwargs={"clf": robust_kwargs or {}},
    )["clf"]


def evaluate_many_on_mixture(
    classifiers: dict,
    mixture,
    n_test: int,
    rng: np.random.Generator,
    *,
    eps: float,
    norm: str = "linf",
    confidence: float = 0.95,
    chunk_size: int = 200_000,
    robust_kwargs: dict | None = None,
    max_points: dict | None = None,
    sample=None,
) -> dict:
    """:func:`evaluate_on_mixture` for several classifiers on the same test points.

    ``robust_kwargs[name]`` goes to that classifier's ``robust_correct``; ``max_points[name]``
    limits it to the first that many test points (e.g. for a costly attack). Returns ``{name:
    errors}``.

    Args:
        classifiers: ``{name: classifier}``.
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.
        n_test: the number of test points.
        rng: the random generator.
        eps: the budget of the robust error.
        norm: ``"linf"`` or ``"l2"``.
        confidence: the intervals' level.
        chunk_size: the most points drawn at once.
        robust_kwargs: ``{name: extra arguments of robust_correct}``.
        max_points: ``{name: the most test points}``.
        sample: draws the test points, ``sample(mixture, n, rng) -> (x, y)``; default
            ``sim.data.sample_mixture``.

    Returns:
        ``{name: errors}``, each as :func:`evaluate_on_mixture` returns them.
    """
    robust_kwargs = robust_kwargs or {}
    max_points = max_points or {}
    total = {name: {c: np.zeros(3, dtype=np.int64) for c in CLASSES} for name in classifiers}
    seen = 0
    for x, y in iter_mixture_chunks(mixture, n_test, rng, chunk_size=chunk_size, sample=sample):
        for name, clf in classifiers.items():
            keep = max(0, min(len(y), max_points.get(name, n_test) - seen))
            if keep == 0:
                continue
            xs, ys = x[:keep], y[:keep]
            ok = clf.correct(xs, ys)
            rob = clf.robust_correct(xs, ys, eps, norm, **robust_kwargs.get(name, {}))
            for c, v in count_errors(ys, ok, rob).items():
                total[name][c] += v
        seen += len(y)
    return {name: classwise_errors(t, confidence) for name, t in total.items()}


def linear_population_errors(mixture, w: np.ndarray, b: float, eps: float, norm: str = "linf"):
    """Exact class-wise errors of ``sign(w.x + b)`` on the mixture (see module docstring).

    Returns ``{"-1"|"+1": {"standard", "robust", "boundary"}}`` (floats).

    Args:
        mixture: a :class:`theory.gaussian.Mixture` with scalar parameters.
        w: the weights (d,).
        b: the intercept.
        eps: the budget.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``{"-1"|"+1": {"standard", "robust", "boundary"}}`` (floats).
    """
    d, eta, sigma, k = mixture_params(mixture)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (d,):
        raise ValueError(f"w must have shape ({d},), got {w.shape}")
    wn = float(np.linalg.norm(w))
    if wn == 0:
        raise ValueError("w must be non-zero")
    mean_proj = eta * w.sum()
    shift = eps * dual_norm(w, norm)
    out = {}
    for c, scale, sgn in ((-1, sigma * wn, 1.0), (1, k * sigma * wn, -1.0)):
        std = float(ndtr((sgn * b - mean_proj) / scale))
        rob = float(ndtr((sgn * b - mean_proj + shift) / scale))
        out[CLASS_KEYS[c]] = {"standard": std, "robust": rob, "boundary": rob - std}
    return out
