"""FRL Appendix A.3: robust and non-robust features (the distribution D', Eq. 19) and Theorem 3.

The distribution (FRL Eq. 19): y uniform on {-1, +1}, x in R^(d+m),

    theta = (eta, ..., eta [d robust features], gamma, ..., gamma [m non-robust features]),
    x | y = -1  ~  N(-theta, sigma^2 I),        x | y = +1  ~  N(+theta, (K sigma)^2 I),   K >= 1,

with eta > eps > gamma ("robust" features are larger than the l_inf budget eps, "non-robust" ones
smaller) and m >> d. Theorem 3 (Eq. 20) says adversarial training raises the standard error of the
harder class +1 by more than that of class -1:

    R_nat(f_rob; +1) - R_nat(f_nat; +1)  >  R_nat(f_rob; -1) - R_nat(f_nat; -1).

Proof 6 *assumes* (after Tsipras et al., 2018) that f_nat uses all features and f_rob only the
robust ones, and writes the class errors with

    A = 2 / (sigma (K^2 - 1)) sqrt(m gamma^2 + d eta^2),
    B = 2 / (sigma (K^2 - 1)) sqrt(d (eta - eps)^2),
    R_nat(f_nat, -1) = Phi(A - K sqrt(A^2 + q)),   R_nat(f_nat, +1) = Phi(-K A + sqrt(A^2 + q)),
    R_nat(f_rob, -1) = Phi(B - K sqrt(B^2 + q) - sqrt(d) eps / sigma),
    R_nat(f_rob, +1) = Phi(-K B + sqrt(B^2 + q) - sqrt(d) eps / (K sigma)),      q = q(K),

then bounds the difference of the two increases below by (K + 1)((A - B) + (sqrt(B^2 + q) -
sqrt(A^2 + q))) and concludes from "A >> B".

Two layers live here, as in ``theory.gaussian``:

* the paper's expressions as printed (``theorem3_A``, ``theorem3_B``, ``theorem3_printed``,
  ``theorem3_printed_bound``);
* ``FeatureMixture``: D' itself, exact class errors of any linear classifier sign(w.x + b), and the
  optimal natural and robust linear classifiers found *numerically* (``optimal_linear``): with
  w = (u 1_d, v 1_m) the class errors are normal CDFs of (u, v, b), and the average (robust) error
  is minimised over the direction (u, v) on the unit circle and b by a grid and Brent's method, in
  log space. ``theorem3_exact`` compares the two optima class by class.

What the exact optimisation shows (checked in ``tests/theory/test_features.py``):

* Natural: the optimal w is proportional to theta (v / u = gamma / eta): f_nat uses every feature,
  with weights proportional to their scale (equal weights w = 1 would do worse), and the printed A
  is exact.
* Robust, l_inf: the worst case moves w.x by eps ||w||_1, each coordinate contributes
  abs(w_i) (theta_i - eps) at best, so the optimal w is proportional to (theta - eps)_+ : v = 0
  exactly when gamma <= eps (the paper's second assumption holds), and the printed B and the class
  errors of f_rob are exact. Hence on the whole l_inf domain of D' (K > 1, 0 <= gamma < eps < eta)
  the printed class errors equal the exact ones.
* Robust, l_2: the worst case moves w.x by eps ||w||_2, the same for every direction, so the optimal
  robust w is theta's direction again: f_rob *uses the non-robust features* (the second assumption
  fails), only the intercept moves, and, as in Corollary 1, the error of class -1 falls while that
  of class +1 rises. Eq. 20 holds there, but "every class's error increases" does not.
* Eq. 20 itself (l_inf): no counterexample on the domain (400,000 random points over d <= 1000,
  m <= 10^4, eta in [1e-3, 1e2], sigma in [1e-2, 1e2], K - 1 in [1e-10, 1e3], and Nelder-Mead
  searches for the smallest relative gap); the two sides approach each other only as K -> 1 and
  are equal at K = 1. The proof's intermediate inequality "gap > (K + 1)(...)" points the wrong
  way: gap < (K + 1)(...) at every point tried, random or searched (the smallest counterexample:
  d = m = 1, eta = 1, eps = 0.9, gamma = 0.8, sigma = 1, K = 2, gap 0.349 against 1.136).
  Its last step, "(sqrt(B^2 + q) - B) - (sqrt(A^2 + q) - A) > 0", holds iff A > B, which is true
  for every eps > 0 whatever m, so "A >> B" is not what the theorem needs; Eq. 20 holds, but
  Proof 6 does not prove it.
* "Each class's error increases" (the section's motivation, from Tsipras et al.): needs enough
  non-robust signal m gamma^2; with m = 0 (D' = D) class -1's error falls (Corollary 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.special import log_ndtr, ndtr

from theory.gaussian import (
    _as_finite,
    _check_d,
    _check_K,
    _check_K_paper,
    _check_norm,
    _check_positive,
    _check_positive_integer,
    _first_bad,
    _q_stable,
    _scalar_or_array,
    theorem2_errors,
)

__all__ = [
    "FeatureMixture",
    "LinearOptimum",
    "Theorem3Errors",
    "theorem3_A",
    "theorem3_B",
    "theorem3_exact",
    "theorem3_printed",
    "theorem3_printed_bound",
]

#: Grid sizes of the global search that brackets the optimum before Brent's method refines it.
_PHI_GRID = 361
_T_GRID = 401


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _check_m(m) -> np.ndarray:
    return _check_positive_integer(m, "m")


def _check_nonnegative(value, name: str) -> np.ndarray:
    arr = _as_finite(value, name)
    bad = ~(arr >= 0)
    if np.any(bad):
        raise ValueError(f"{name} must be >= 0 (and finite), got {_first_bad(arr, bad)}")
    return arr


def _check_printed_domain(gamma, eps, eta) -> None:
    """D' as printed: 0 <= gamma < eps < eta (elementwise)."""
    g_b, e_b, h_b = np.broadcast_arrays(gamma, eps, eta)
    bad = ~((g_b < e_b) & (e_b < h_b))
    if np.any(bad):
        raise ValueError(
            "FRL Eq. 19 needs gamma < eps < eta (non-robust features below the budget, robust ones "
            f"above), got gamma = {_first_bad(g_b, bad)}, eps = {_first_bad(e_b, bad)}, "
            f"eta = {_first_bad(h_b, bad)}"
        )


# ----------------------------------------------------------------------------------------------
# The paper's expressions, spelled out
# ----------------------------------------------------------------------------------------------


def theorem3_A(d, m, eta, gamma, sigma, K):
    """A = 2 / (sigma (K^2 - 1)) sqrt(m gamma^2 + d eta^2) (FRL Proof 6, as printed; K > 1).

    Args:
        d, m: the numbers of robust and non-robust features (positive integers).
        eta, gamma: the robust and non-robust features' means (eta > 0, gamma >= 0).
        sigma, K: class -1's standard deviation and class +1's ratio to it (K > 1 for the printed
            expressions).

    Returns:
        A, float64.
    """
    d, m, eta = _check_d(d), _check_m(m), _check_positive(eta, "eta")
    gamma, sigma = _check_nonnegative(gamma, "gamma"), _check_positive(sigma, "sigma")
    K = _check_K_paper(K)
    return _scalar_or_array(2.0 / (sigma * (K * K - 1.0)) * np.sqrt(m * gamma**2 + d * eta**2))


def theorem3_B(d, eta, sigma, K, eps):
    """B = 2 / (sigma (K^2 - 1)) sqrt(d (eta - eps)^2) (FRL Proof 6, as printed; K > 1, eps < eta).

    The same B as Theorem 2's (``theory.gaussian.theorem2_B``) for the d robust features.

    Args:
        d: the number of robust features.
        eta: the robust features' mean.
        sigma, K: class -1's standard deviation and class +1's ratio to it (K > 1).
        eps: the l_inf budget, eps < eta.

    Returns:
        B, float64.
    """
    d, eta, sigma = _check_d(d), _check_positive(eta, "eta"), _check_positive(sigma, "sigma")
    K, eps = _check_K_paper(K), _check_nonnegative(eps, "eps")
    return _scalar_or_array(2.0 / (sigma * (K * K - 1.0)) * np.sqrt(d * (eta - eps) ** 2))


@dataclass(frozen=True)
class Theorem3Errors:
    """Class-wise standard errors of f_nat and f_rob; ``natural`` and ``robust`` are (R(-1), R(+1)).

    ``increase`` = (R_nat(f_rob; -1) - R_nat(f_nat; -1), R_nat(f_rob; +1) - R_nat(f_nat; +1));
    ``gap`` = increase[+1] - increase[-1], positive exactly when Eq. 20 holds.
    """

    natural: tuple
    robust: tuple

    @property
    def increase(self) -> tuple:
        return tuple(_scalar_or_array(r - n) for n, r in zip(self.natural, self.robust))

    @property
    def gap(self):
        minus, plus = self.increase
        return _scalar_or_array(plus - minus)


def theorem3_printed(d, m, eta, gamma, sigma, K, eps) -> Theorem3Errors:
    """FRL Proof 6 as printed (l_inf): the class errors of f_nat (through A) and f_rob (through B).

    R_nat(f_nat, -1) = Phi(A - K sqrt(A^2 + q)),   R_nat(f_nat, +1) = Phi(-K A + sqrt(A^2 + q)),
    R_nat(f_rob, -1) = Phi(B - K sqrt(B^2 + q) - sqrt(d) eps / sigma),
    R_nat(f_rob, +1) = Phi(-K B + sqrt(B^2 + q) - sqrt(d) eps / (K sigma)).

    Needs K > 1 (the expressions divide by K^2 - 1) and gamma < eps < eta (Eq. 19).

    Args:
        d, m: the numbers of robust and non-robust features (positive integers).
        eta, gamma: the robust and non-robust features' means (eta > 0, gamma >= 0).
        sigma, K: class -1's standard deviation and class +1's ratio to it (K > 1 for the printed
            expressions).
        eps: the l_inf budget, gamma < eps < eta.

    Returns:
        The :class:`Theorem3Errors` of the printed expressions.
    """
    A = np.asarray(theorem3_A(d, m, eta, gamma, sigma, K))
    _check_printed_domain(_check_nonnegative(gamma, "gamma"), _as_finite(eps, "eps"), eta)
    K_arr = np.asarray(K, dtype=np.float64)
    root = np.sqrt(A * A + _q_stable(K_arr))
    natural = (_scalar_or_array(ndtr(A - K_arr * root)), _scalar_or_array(ndtr(-K_arr * A + root)))
    return Theorem3Errors(natural=natural, robust=theorem2_errors(d, eta, sigma, K, eps))


def theorem3_printed_bound(d, m, eta, gamma, sigma, K, eps):
    """The two last lines of FRL Proof 6: ``(bound, criterion)`` with

    bound     = (K + 1) ((A - B) + (sqrt(B^2 + q) - sqrt(A^2 + q))),
    criterion = (sqrt(B^2 + q) - B) - (sqrt(A^2 + q) - A),

    so bound = (K + 1) criterion (the proof's "proportional to"). The proof claims gap > bound
    (``Theorem3Errors.gap``) and criterion > 0. criterion > 0 exactly when A > B, i.e. for every
    eps > 0 (sqrt(t^2 + q) - t = q / (sqrt(t^2 + q) + t) falls with t; evaluated in that form, which
    does not cancel when A and B are large); the claimed gap > bound is false almost everywhere
    (see the module docstring).

    Args:
        d, m: the numbers of robust and non-robust features (positive integers).
        eta, gamma: the robust and non-robust features' means (eta > 0, gamma >= 0).
        sigma, K: class -1's standard deviation and class +1's ratio to it (K > 1 for the printed
            expressions).
        eps: the l_inf budget, gamma < eps < eta.

    Returns:
        ``(bound, criterion)``, float64 each.
    """
    A = np.asarray(theorem3_A(d, m, eta, gamma, sigma, K))
    _check_printed_domain(_check_nonnegative(gamma, "gamma"), _as_finite(eps, "eps"), eta)
    B = np.asarray(theorem3_B(d, eta, sigma, K, eps))
    q = _q_stable(np.asarray(K, dtype=np.float64))
    criterion = q / (np.sqrt(B * B + q) + B) - q / (np.sqrt(A * A + q) + A)
    return _scalar_or_array((np.asarray(K) + 1.0) * criterion), _scalar_or_array(criterion)


# ----------------------------------------------------------------------------------------------
# D' and its exact optimal linear classifiers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearOptimum:
    """An optimal linear classifier sign(u 1_d.x_rob + v 1_m.x_non + b) of D' (d u^2 + m v^2 = 1).

    ``standard`` and ``robust`` are its (R(-1), R(+1)) class errors (robust at the budget it was
    optimised for; equal to ``standard`` for the natural classifier). Arrays when the mixture's
    parameters are arrays.
    """

    u: np.ndarray
    v: np.ndarray
    b: np.ndarray
    standard: tuple
    robust: tuple

    @property
    def ratio(self):
        """v / u: the weight of a non-robust feature relative to a robust one."""
        return _scalar_or_array(np.asarray(self.v) / np.asarray(self.u))


class FeatureMixture:
    """FRL Eq. 19: d robust features of mean +-eta, m non-robust ones of mean +-gamma; x | y = -1
    ~ N(-theta, sigma^2 I), x | y = +1 ~ N(+theta, (K sigma)^2 I), equal priors.

    Parameters may be numpy arrays that broadcast against each other. Raises ValueError naming the
    parameter unless d, m are positive integers, eta > 0, gamma >= 0, sigma > 0, K >= 1, all finite.
    (gamma < eps < eta is the paper's regime; the budget is an argument of the methods, and other
    regimes are allowed so the assumptions can be tested.)
    """

    def __init__(self, d, m, eta, gamma, sigma, K):
        arrays = (
            _check_d(d),
            _check_m(m),
            _check_positive(eta, "eta"),
            _check_nonnegative(gamma, "gamma"),
            _check_positive(sigma, "sigma"),
            _check_K(K),
        )
        try:
            self._shape = np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError as exc:
            raise ValueError(
                "d, m, eta, gamma, sigma and K must broadcast against each other, got shapes "
                + ", ".join(str(a.shape) for a in arrays)
            ) from exc
        self.d, self.m, self.eta, self.gamma, self.sigma, self.K = (
            _scalar_or_array(a) for a in arrays
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def __repr__(self) -> str:
        return (
            f"FeatureMixture(d={self.d!r}, m={self.m!r}, eta={self.eta!r}, gamma={self.gamma!r}, "
            f"sigma={self.sigma!r}, K={self.K!r})"
        )

    @property
    def theta_norm(self):
        """||theta||_2 = sqrt(d eta^2 + m gamma^2)."""
        return _scalar_or_array(np.sqrt(self.d * self.eta**2 + self.m * self.gamma**2))

    def _validated_eps(self, eps, norm: str) -> np.ndarray:
        norm = _check_norm(norm)
        eps = _check_nonnegative(eps, "eps")
        limit = self.eta if norm == "linf" else self.theta_norm
        e_b, lim_b = np.broadcast_arrays(eps, limit)
        bad = e_b >= lim_b
        if np.any(bad):
            what = "eta" if norm == "linf" else "||theta||_2 = sqrt(d eta^2 + m gamma^2)"
            raise ValueError(
                f"eps must satisfy 0 <= eps < {what} ({norm}; otherwise no linear classifier is "
                f"better than a constant), got eps = {_first_bad(e_b, bad)} with limit "
                f"{_first_bad(lim_b, bad)}"
            )
        return eps

    # -- class errors of a linear classifier ---------------------------------------------------

    def class_errors(self, u, v, b, eps=0.0, norm: str = "linf", *, log: bool = False):
        """(R(-1), R(+1)) of sign(u 1_d.x_rob + v 1_m.x_non + b), robust at budget ``eps``.

        w.x | y is N(y (d u eta + m v gamma), sigma_y^2 (d u^2 + m v^2)); the worst perturbation
        of norm eps moves it by eps ||w||_* toward the boundary (||w||_1 = d|u| + m|v| for l_inf,
        ||w||_2 for l_2). ``eps = 0``: standard errors.

        Args:
            u: weight of each of the d robust features (float or array broadcasting against the
                mixture's parameters).
            v: weight of each of the m non-robust features; (u, v) must not both be 0.
            b: the intercept.
            eps: the perturbation budget, >= 0 (0: standard errors).
            norm: the budget's norm, ``"linf"`` or ``"l2"``.
            log: return the natural logarithms of the errors (accurate where they underflow).

        Returns:
            ``(R(-1), R(+1))``: the (robust) error of class -1 and of class +1, float64 scalars or
            arrays of the broadcast shape; their logarithms when ``log=True``.
        """
        u, v, b = _as_finite(u, "u"), _as_finite(v, "v"), _as_finite(b, "b")
        norm, eps = _check_norm(norm), _check_nonnegative(eps, "eps")
        return self._errors(u, v, b, eps, norm, log)

    def _errors(self, u, v, b, eps, norm, log=False):
        d, m = np.asarray(self.d, np.float64), np.asarray(self.m, np.float64)
        scale = np.sqrt(d * u * u + m * v * v)
        if np.any(scale == 0):
            raise ValueError("the weight vector (u 1_d, v 1_m) must be non-zero")
        dual = d * np.abs(u) + m * np.abs(v) if norm == "linf" else scale
        mean = d * u * self.eta + m * v * self.gamma - eps * dual
        cdf = log_ndtr if log else ndtr
        s = self.sigma * scale
        return (
            _scalar_or_array(cdf((b - mean) / s)),
            _scalar_or_array(cdf((-b - mean) / (self.K * s))),
        )

    def linear_errors(self, w, b, eps=0.0, norm: str = "linf"):
        """(R(-1), R(+1)) of sign(w.x + b) for a full weight vector w of length d + m (scalar
        parameters only): w.x | y is N(y theta.w, sigma_y^2 ||w||^2), shifted by eps ||w||_*.

        Args:
            w: the weight vector, shape (d + m,): the d robust features first, then the m
                non-robust ones; non-zero.
            b: the intercept (float).
            eps: the perturbation budget, >= 0 (0: standard errors).
            norm: the budget's norm, ``"linf"`` (dual norm ||w||_1) or ``"l2"``.

        Returns:
            ``(R(-1), R(+1))``: the (robust) error of class -1 and of class +1, floats.
        """
        if self.shape != ():
            raise ValueError("linear_errors needs scalar mixture parameters")
        d, m = int(self.d), int(self.m)
        w = _as_finite(w, "w")
        if w.shape != (d + m,):
            raise ValueError(f"w must have shape ({d + m},) (d + m), got {w.shape}")
        norm, eps = _check_norm(norm), float(_check_nonnegative(eps, "eps"))
        wn = float(np.linalg.norm(w))
        if wn == 0:
            raise ValueError("w must be non-zero")
        dual = float(np.abs(w).sum()) if norm == "linf" else wn
        mean = float(self.eta * w[:d].sum() + self.gamma * w[d:].sum()) - eps * dual
        s = float(self.sigma) * wn
        b = float(_as_finite(b, "b"))
        return float(ndtr((b - mean) / s)), float(ndtr((-b - mean) / (float(self.K) * s)))

    # -- the optimal linear classifiers, numerically -------------------------------------------

    def optimal_linear(self, eps=0.0, norm: str = "linf") -> LinearOptimum:
        """The linear classifier minimising the average robust error at budget ``eps`` (eps = 0:
        the natural one), found numerically over w = (u 1_d, v 1_m) and b.

        For the direction w(phi) = (cos(phi) / sqrt(d) 1_d, sin(phi) / sqrt(m) 1_m) (unit norm) the
        average error is (Phi((t - r) / 1) + Phi((-t - r) / K)) / 2 in units of sigma, with
        t = b / sigma and r(phi) the robust mean of w.x over sigma. Its logarithm is minimised over
        t and phi: a grid over the whole circle and a wide range of t brackets the optimum, Brent's
        method refines phi, and for each phi the zero of the risk's derivative in t (bracketed by
        the grid) is found by Brent's root finder.

        Args:
            eps: the budget the classifier is optimised for: 0 <= eps < eta (l_inf) or
                eps < ||theta||_2 (l_2), float or array broadcasting against the mixture's
                parameters.
            norm: the budget's norm, ``"linf"`` or ``"l2"``.

        Returns:
            The :class:`LinearOptimum`: its (u, v, b) with d u^2 + m v^2 = 1, and its standard and
            robust (at ``eps``) class errors.
        """
        eps = self._validated_eps(eps, norm)
        shape = np.broadcast_shapes(self.shape, eps.shape)
        params = np.broadcast_arrays(
            self.d, self.m, self.eta, self.gamma, self.sigma, self.K, eps, subok=False
        )
        flat = [np.asarray(p, dtype=np.float64).reshape(-1) for p in params]
        phi = np.empty(flat[0].size)
        t = np.empty(flat[0].size)
        for i in range(phi.size):
            d, m, eta, gamma, sigma, K, e = (p[i] for p in flat)
            phi[i], t[i] = _optimise(d, m, eta / sigma, gamma / sigma, e / sigma, K, norm)
        phi, t = phi.reshape(shape), t.reshape(shape)
        u = np.cos(phi) / np.sqrt(np.broadcast_to(self.d, shape))
        v = np.sin(phi) / np.sqrt(np.broadcast_to(self.m, shape))
        b = t * np.broadcast_to(self.sigma, shape)
        return LinearOptimum(
            u=_scalar_or_array(u),
            v=_scalar_or_array(v),
            b=_scalar_or_array(b),
            standard=self._errors(u, v, b, 0.0, norm),
            robust=self._errors(u, v, b, eps, norm),
        )


def _robust_mean(phi, a_r, a_n, e_r, e_n, e2, norm):
    """r(phi): E[y w(phi).x] / sigma minus the worst-case shift eps ||w||_* / sigma."""
    c, s = np.cos(phi), np.sin(phi)
    mean = a_r * c + a_n * s
    return mean - (e_r * np.abs(c) + e_n * np.abs(s) if norm == "linf" else e2)


def _log_risk(t, r, K):
    """log(Phi(t - r) + Phi((-t - r) / K)): twice the average error, in log space."""
    return np.logaddexp(log_ndtr(t - r), log_ndtr((-t - r) / K))


def _t_range(r, K):
    """A range of t that contains the minimiser with a margin of 8 on both sides.

    For r > 0 the minimiser (FRL Eq. 5 in units of sigma) lies in [-K sqrt(q(K)), r), and
    K sqrt(q(K)) <= sqrt(2 log K) + 1 because q(K) <= 1.
    """
    width = np.abs(r) + np.sqrt(2.0 * np.log(K)) + 8.0
    return -width, np.abs(r) + 8.0


def _best_t(r, K):
    """min over t of ``_log_risk(t, r, K)``: a grid, then Brent's method between its neighbours."""
    lo, hi = _t_range(r, K)
    grid = np.linspace(lo, hi, _T_GRID)
    j = int(np.argmin(_log_risk(grid, r, K)))
    a, b = grid[max(j - 1, 0)], grid[min(j + 1, _T_GRID - 1)]
    if _log_density_ratio(a, r, K) < 0 < _log_density_ratio(b, r, K):
        # the derivative of the risk changes sign in [a, b]: find its zero to full precision
        xtol = 1e-15 * (1.0 + abs(r))
        t = brentq(_log_density_ratio, a, b, args=(r, K), xtol=xtol, rtol=1e-15, maxiter=500)
        return float(t), float(_log_risk(t, r, K))
    res = minimize_scalar(
        _log_risk, bounds=(a, b), args=(r, K), method="bounded", options={"xatol": 1e-13}
    )
    return float(res.x), float(res.fun)


def _log_density_ratio(t, r, K):
    """log[phi(t - r) / (phi((t + r) / K) / K)]: its sign is that of the risk's derivative in t."""
    return -0.5 * (t - r) ** 2 + 0.5 * ((t + r) / K) ** 2 + np.log(K)


def _optimise(d, m, eta, gamma, eps, K, norm):
    """(phi, t) of the optimal linear classifier in units of sigma (see ``optimal_linear``)."""
    a_r, a_n = np.sqrt(d) * eta, np.sqrt(m) * gamma
    e_r, e_n = np.sqrt(d) * eps, np.sqrt(m) * eps
    phis = np.linspace(-np.pi, np.pi, _PHI_GRID)
    r = _robust_mean(phis, a_r, a_n, e_r, e_n, eps, norm)
    lo, hi = _t_range(r, K)
    grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, _T_GRID)[None, :]
    i = int(np.argmin(_log_risk(grid, r[:, None], K).min(axis=1)))
    step = phis[1] - phis[0]

    def profile(phi):
        return _best_t(_robust_mean(phi, a_r, a_n, e_r, e_n, eps, norm), K)[1]

    res = minimize_scalar(
        profile,
        bounds=(phis[i] - step, phis[i] + step),
        method="bounded",
        options={"xatol": 1e-13},
    )
    phi = float(res.x)
    if profile(phis[i]) < res.fun:  # Brent's bounded search never evaluates the bracket's centre
        phi = float(phis[i])
    return phi, _best_t(_robust_mean(phi, a_r, a_n, e_r, e_n, eps, norm), K)[0]


# ----------------------------------------------------------------------------------------------
# Theorem 3, exactly
# ----------------------------------------------------------------------------------------------


def theorem3_exact(d, m, eta, gamma, sigma, K, eps, norm: str = "linf"):
    """Theorem 3 checked, not assumed: ``(errors, f_nat, f_rob)`` with the exact optimal natural and
    robust linear classifiers of D' (``FeatureMixture.optimal_linear``) and their class-wise
    standard errors (``Theorem3Errors``; Eq. 20 holds where ``errors.gap > 0``).

    Args:
        d, m: the numbers of robust and non-robust features (positive integers).
        eta, gamma: the robust and non-robust features' means (eta > 0, gamma >= 0).
        sigma, K: class -1's standard deviation and class +1's ratio to it (K > 1 for the printed
            expressions).
        eps: the budget.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``(errors, f_nat, f_rob)``: the :class:`Theorem3Errors` and the two optimal classifiers.
    """
    mixture = FeatureMixture(d, m, eta, gamma, sigma, K)
    nat = mixture.optimal_linear(0.0, norm)
    rob = mixture.optimal_linear(eps, norm)
    return Theorem3Errors(natural=nat.standard, robust=rob.standard), nat, rob
