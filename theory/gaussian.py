"""FRL §3: the two-class Gaussian mixture and its optimal natural and robust linear classifiers.

The distribution (FRL Eq. 2): y uniform on {-1, +1}, theta = (eta, ..., eta) in R^d,

    x | y = -1  ~  N(-theta, sigma^2 I),        x | y = +1  ~  N(+theta, (K sigma)^2 I),   K >= 1,

so class "+1" is the harder (wider) class. For this distribution the optimal natural and the
optimal robust linear classifiers both have weight w = 1 (FRL Lemmas 1-2); they differ only in the
intercept b of f(x) = sign(1.x + b). With w = 1 the margin 1.x + b is Gaussian, so every class error
is one standard normal CDF value:

    R_nat(f, -1) = Phi((b - d eta) / (sqrt(d) sigma)),
    R_nat(f, +1) = Phi((-b - d eta) / (sqrt(d) K sigma)).

A perturbation of norm at most eps moves 1.x by at most eps ||1||_* (the dual norm): d eps for an
l_inf budget, sqrt(d) eps for an l_2 budget. The robust errors (FRL Eq. 17) therefore replace d eta
by d eta - ||1||_* eps, and the boundary errors (FRL Eq. 7) are R_rob - R_nat per class.

Two layers live here:

* ``Mixture``: validated, broadcasting, numerically stable evaluation (float64). The intercept of
  FRL Eq. 5 is evaluated in its conjugate form, which has no cancellation as K -> 1 and gives
  b = 0 at K = 1 (equal variances); class errors use ``scipy.special.ndtr`` on the (usually
  negative) argument itself, never ``1 - Phi``; log-errors use ``log_ndtr``; boundary errors are
  a normal interval probability evaluated without subtracting nearly equal CDF values.
* module functions that spell out the paper's own expressions (``q``, ``theorem1_A``,
  ``theorem1_errors``, ``theorem2_B``, ``theorem2_errors``, ``eq5_intercept``) so a reader can
  compare them line by line with FRL; ``g`` is the stable form of FRL Eq. 5.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtr

__all__ = [
    "NORMS",
    "Mixture",
    "eq5_intercept",
    "g",
    "q",
    "theorem1_A",
    "theorem1_errors",
    "theorem2_B",
    "theorem2_errors",
]

NORMS = ("linf", "l2")

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
    """The first offending value of ``arr`` (for error messages)."""
    value = np.asarray(arr)[bad].flat[0] if np.ndim(arr) else np.asarray(arr)[()]
    return repr(value.item() if hasattr(value, "item") else value)


def _as_finite(value, name: str) -> np.ndarray:
    """``value`` as a float64 array; ValueError naming ``name`` unless every element is finite."""
    if isinstance(value, (bool, np.bool_)) or np.asarray(value).dtype == np.bool_:
        raise ValueError(
            f"{name} must be a real number (or array of them), got a boolean {value!r}"
        )
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number (or array of them), got {value!r}") from exc
    finite = np.isfinite(arr)
    if not np.all(finite):
        raise ValueError(
            f"{name} must be finite (no NaN or infinity), got {_first_bad(arr, ~finite)}"
        )
    return arr


def _check_positive_integer(value, name: str) -> np.ndarray:
    arr = _as_finite(value, name)
    bad = (arr < 1) | (arr != np.floor(arr))
    if np.any(bad):
        raise ValueError(
            f"{name} must be a positive integer (1, 2, 3, ...), got {_first_bad(arr, bad)}"
        )
    return arr


def _check_d(d) -> np.ndarray:
    return _check_positive_integer(d, "d")


def _check_positive(value, name: str) -> np.ndarray:
    arr = _as_finite(value, name)
    bad = ~(arr > 0)
    if np.any(bad):
        raise ValueError(f"{name} must be > 0 (and finite), got {_first_bad(arr, bad)}")
    return arr


def _check_K(K) -> np.ndarray:
    arr = _as_finite(K, "K")
    bad = ~(arr >= 1)
    if np.any(bad):
        raise ValueError(f"K must be >= 1 (and finite), got {_first_bad(arr, bad)}")
    return arr


def _check_K_paper(K) -> np.ndarray:
    """The paper's printed expressions divide by K^2 - 1: they need K > 1 strictly."""
    arr = _as_finite(K, "K")
    bad = ~(arr > 1)
    if np.any(bad):
        raise ValueError(
            f"K must be > 1 (and finite) in the paper's printed expression, which divides by "
            f"K^2 - 1; use Mixture or g for K = 1; got {_first_bad(arr, bad)}"
        )
    return arr


def _check_norm(norm) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def _check_broadcast(arr: np.ndarray, name: str, shape: tuple[int, ...]) -> None:
    try:
        np.broadcast_shapes(arr.shape, shape)
    except ValueError as exc:
        raise ValueError(
            f"{name} of shape {arr.shape} does not broadcast against shape {shape} (the mixture "
            f"parameters, and eps where given)"
        ) from exc


def _check_eps(eps, d: np.ndarray, eta: np.ndarray, norm: str, shape=()) -> np.ndarray:
    """eps in [0, eta) for l_inf, in [0, sqrt(d) eta) for l_2 (elementwise, broadcast)."""
    arr = _as_finite(eps, "eps")
    _check_broadcast(arr, "eps", np.broadcast_shapes(shape, np.shape(d), np.shape(eta)))
    eps_b, d_b, eta_b = np.broadcast_arrays(arr, d, eta)
    negative = eps_b < 0
    if np.any(negative):
        raise ValueError(f"eps must be >= 0, got {_first_bad(eps_b, negative)}")
    if norm == "linf":
        too_big = eps_b >= eta_b
        if np.any(too_big):
            raise ValueError(
                f"eps must satisfy 0 <= eps < eta for an l_inf budget (FRL Theorem 2), got "
                f"eps = {_first_bad(eps_b, too_big)} with eta = {_first_bad(eta_b, too_big)}"
            )
    else:
        too_big = eps_b >= np.sqrt(d_b) * eta_b
        if np.any(too_big):
            raise ValueError(
                f"eps must satisfy 0 <= eps < sqrt(d) * eta for an l_2 budget, got "
                f"eps = {_first_bad(eps_b, too_big)} with sqrt(d) * eta = "
                f"{_first_bad(np.sqrt(d_b) * eta_b, too_big)}"
            )
    return arr


def _scalar_or_array(x) -> np.float64 | np.ndarray:
    """0-d results come back as numpy float64 scalars, everything else as float64 arrays."""
    return np.asarray(x, dtype=np.float64)[()]


# ----------------------------------------------------------------------------------------------
# Stable kernels (no validation; broadcast float64 arrays in, float64 arrays out)
# ----------------------------------------------------------------------------------------------


def _log1p_over(delta: np.ndarray) -> np.ndarray:
    """log(1 + delta) / delta for delta >= 0, equal to 1 at delta = 0 (no 0/0)."""
    safe = np.where(delta == 0, 1.0, delta)
    return np.where(delta == 0, 1.0, np.log1p(safe) / safe)


def _q_stable(K: np.ndarray) -> np.ndarray:
    """q(K) = 2 log K / (K^2 - 1) = [log1p(delta)/delta] * 2/(2 + delta), delta = K - 1 (exact)."""
    delta = K - 1.0
    return _log1p_over(delta) * (2.0 / (2.0 + delta))


def _one_minus_inv_k2(delta: np.ndarray) -> np.ndarray:
    """1 - 1/K^2 = delta (2 + delta) / (1 + delta)^2: accurate near K = 1, no overflow for big K."""
    return (delta / (1.0 + delta)) * ((2.0 + delta) / (1.0 + delta))


def _k2q(K: np.ndarray) -> np.ndarray:
    """K^2 q(K) = 2 log K / (1 - 1/K^2); equal to 1 at K = 1, no overflow for large K."""
    delta = K - 1.0
    u = _one_minus_inv_k2(delta)
    safe_u = np.where(u == 0, 1.0, u)
    safe_delta = np.where(delta == 0, 1.0, delta)
    return np.where(delta == 0, 1.0, 2.0 * np.log1p(safe_delta) / safe_u)


def _intercept(m: np.ndarray, s: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Minimiser of Phi((b - m)/s) + Phi((-b - m)/(K s)) over b: FRL Eq. 5 in conjugate form.

    With a = m / s (m = d eta, s = sqrt(d) sigma for the natural classifier) Eq. 5 equals

        b = s (K^2 - 1) (a^2 - K^2 q) / [(K^2 + 1) a + K sqrt(4 a^2 + 2 (K^2 - 1) log K)]

    (multiply Eq. 5 by its conjugate). Numerator and denominator are divided by K^2 here so nothing
    overflows for large K, and, for a > 1, by a as well so nothing overflows for large a.
    """
    delta = K - 1.0
    u = _one_minus_inv_k2(delta)  # 1 - 1/K^2
    inv_k2 = (1.0 / K) ** 2
    log_k = np.log1p(delta)
    k2q = _k2q(K)
    a = m / s
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        # a <= 1: b = s u (a^2 - K^2 q) / [(1 + K^-2) a + sqrt(4 a^2 K^-2 + 2 u log K)]
        root = np.sqrt(4.0 * a * a * inv_k2 + 2.0 * u * log_k)
        b_small_a = s * u * (a * a - k2q) / ((1.0 + inv_k2) * a + root)
        # a > 1: the same with numerator and denominator divided by a (m = s a).
        root = np.sqrt(4.0 * inv_k2 + 2.0 * u * log_k / (a * a))
        b_large_a = m * u * (1.0 - k2q / (a * a)) / ((1.0 + inv_k2) + root)
        b = np.where(a > 1.0, b_large_a, b_small_a)
    return np.where(u == 0, 0.0, b)  # K = 1: equal variances, the boundary is the midpoint


def _short_interval(mid: np.ndarray, h: np.ndarray) -> np.ndarray:
    """P(|N(0,1) - mid| < h/2) for h (1 + |mid|) <= 1, by the Taylor series of phi about mid.

    int_{-h/2}^{h/2} phi(mid + t) dt = h phi(mid) sum_k He_2k(mid) (h/2)^2k / (2k + 1)!  (phi^(n) =
    (-1)^n He_n phi, He the probabilists' Hermite polynomials). Under the bound on h the terms fall
    faster than 4^-k / (2k + 1)! and the sum lies in [0.5, 1.5], so 10 terms give full precision.
    """
    w2 = (0.5 * h) ** 2
    he_prev, he = np.ones_like(mid), mid  # He_0, He_1
    total, coef = np.ones_like(mid), np.ones_like(mid)
    for k in range(1, 11):
        he_prev, he = he, mid * he - (2 * k - 1) * he_prev  # He_2k
        coef = coef * w2 / ((2 * k) * (2 * k + 1))
        total = total + coef * he
        he_prev, he = he, mid * he - (2 * k) * he_prev  # He_2k+1
    return h * np.exp(-0.5 * mid * mid - _LOG_SQRT_2PI) * total


def _normal_interval(z: np.ndarray, h: np.ndarray) -> np.ndarray:
    """P(z < N(0,1) < z + h) for h >= 0, to full relative precision.

    The interval is first reflected so that its midpoint is <= 0 (the normal law is symmetric).
    Short intervals (h (1 + |mid|) <= 1) use a Taylor series of the density about the midpoint.
    For long ones Phi(lo) <= exp(-0.22) Phi(hi) (the lower half of the interval lies where
    phi/Phi >= max(-t, 0.79)), so Phi(hi) - Phi(lo) loses at most a few ulps; both CDF values are
    lower-tail values from ndtr, accurate to full relative precision.
    """
    z, h = np.broadcast_arrays(np.asarray(z, np.float64), np.asarray(h, np.float64))
    mid = z + 0.5 * h
    reflect = mid > 0
    lo = np.where(reflect, -z - h, z)
    mid = np.where(reflect, -mid, mid)
    out = np.empty(z.shape, dtype=np.float64)
    short = h * (1.0 - mid) <= 1.0
    if np.any(short):
        out[short] = _short_interval(mid[short], h[short])
    long_ = ~short
    if np.any(long_):
        lo_l = lo[long_]
        out[long_] = ndtr(lo_l + h[long_]) - ndtr(lo_l)
    return out


def _dual_norm_of_ones(d: np.ndarray, norm: str) -> np.ndarray:
    """||1||_*: how far a perturbation moves 1.x per unit eps (d for l_inf, sqrt(d) for l_2)."""
    return d if norm == "linf" else np.sqrt(d)


# ----------------------------------------------------------------------------------------------
# The distribution of FRL Eq. 2
# ----------------------------------------------------------------------------------------------


class Mixture:
    """FRL Eq. 2: y = -1 ~ N(-eta 1, sigma^2 I), y = +1 ~ N(+eta 1, (K sigma)^2 I), equal priors.

    Parameters may be numpy arrays; they broadcast against each other and against the ``b`` and
    ``eps`` arguments of the methods. Every method returns float64 (a numpy float64 scalar when all
    inputs are scalars). Classifiers are f(x) = sign(1.x + b) (FRL Lemmas 1-2: the optimal natural
    and robust linear classifiers have w = 1).

    Args:
        d: dimension (a positive integer).
        eta: class-mean offset per coordinate, > 0 (the means are -eta 1 and +eta 1).
        sigma: standard deviation of class -1, > 0.
        K: ratio of class +1's standard deviation to class -1's, >= 1.

    Raises:
        ValueError: naming the parameter unless d is a positive integer, eta > 0, sigma > 0,
            K >= 1, all finite, and the four broadcast against each other.
    """

    def __init__(self, d, eta, sigma, K):
        d_arr = _check_d(d)
        eta_arr = _check_positive(eta, "eta")
        sigma_arr = _check_positive(sigma, "sigma")
        K_arr = _check_K(K)
        try:
            self._shape = np.broadcast_shapes(
                d_arr.shape, eta_arr.shape, sigma_arr.shape, K_arr.shape
            )
        except ValueError as exc:
            raise ValueError(
                "d, eta, sigma and K must broadcast against each other, got shapes "
                f"{d_arr.shape}, {eta_arr.shape}, {sigma_arr.shape}, {K_arr.shape}"
            ) from exc
        self.d = _scalar_or_array(d_arr)
        self.eta = _scalar_or_array(eta_arr)
        self.sigma = _scalar_or_array(sigma_arr)
        self.K = _scalar_or_array(K_arr)

    @property
    def shape(self) -> tuple[int, ...]:
        """Broadcast shape of the parameters."""
        return self._shape

    def __repr__(self) -> str:
        return f"Mixture(d={self.d!r}, eta={self.eta!r}, sigma={self.sigma!r}, K={self.K!r})"

    # -- helpers -------------------------------------------------------------------------------

    def _margin_mean(self, eps=None, norm: str = "linf") -> np.ndarray:
        """|E[1.x | y]| = d eta, or d eta - eps ||1||_* after the worst attack (FRL Eq. 17)."""
        m = self.d * self.eta
        if eps is None:
            return np.asarray(m, dtype=np.float64)
        return m - eps * _dual_norm_of_ones(np.asarray(self.d, np.float64), norm)

    def _scale(self) -> np.ndarray:
        """sqrt(d) sigma: the standard deviation of 1.x for class -1."""
        return np.sqrt(self.d) * self.sigma

    def _validated_eps(self, eps, norm) -> tuple[np.ndarray, str]:
        norm = _check_norm(norm)
        eps = _check_eps(eps, np.asarray(self.d), np.asarray(self.eta), norm, self.shape)
        return eps, norm

    def _class_arguments(self, b, eps=None, norm="linf"):
        """Standard normal quantiles z_-1, z_+1 with R(f, y) = Phi(z_y)."""
        b = _as_finite(b, "b")
        _check_broadcast(b, "b", np.broadcast_shapes(self.shape, np.shape(eps)))
        m = self._margin_mean(eps, norm)
        s = self._scale()
        return (b - m) / s, (-b - m) / (self.K * s)

    # -- intercepts ----------------------------------------------------------------------------

    def natural_intercept(self):
        """b_nat of FRL Eq. 5 (Theorem 1 proof, Eq. 15): minimiser of the average standard error.

        Evaluated in the conjugate form (see ``g``); b_nat = 0 at K = 1.

        Returns:
            b_nat, float64 of the mixture's shape.
        """
        return _scalar_or_array(_intercept(self._margin_mean(), self._scale(), self.K))

    def robust_intercept(self, eps, norm: str = "linf"):
        """b_rob, the minimiser of the average robust error (FRL Theorem 2, Eq. 18, Corollary 1).

        l_inf: b_rob = g(eta - eps), 0 <= eps < eta. l_2: the worst perturbation moves 1.x by
        sqrt(d) eps instead of d eps, so b_rob = g(eta - eps / sqrt(d)), 0 <= eps < sqrt(d) eta.

        Args:
            eps: the budget (float, or an array broadcast with the mixture's parameters).
            norm: ``"linf"`` or ``"l2"``.

        Returns:
            b_rob, float64.

        Raises:
            ValueError: if eps is outside its range for the norm, or norm is unknown.
        """
        eps, norm = self._validated_eps(eps, norm)
        return _scalar_or_array(_intercept(self._margin_mean(eps, norm), self._scale(), self.K))

    # -- class errors --------------------------------------------------------------------------

    def standard_errors(self, b, *, log: bool = False):
        """(R_nat(f, -1), R_nat(f, +1)) for f = sign(1.x + b) (FRL Eq. 14, per class).

        R_nat(f, -1) = Phi((b - d eta) / (sqrt(d) sigma)),
        R_nat(f, +1) = Phi((-b - d eta) / (sqrt(d) K sigma)).
        With ``log=True`` the natural logarithms (log_ndtr; finite where the errors underflow).

        Args:
            b: the intercept (float, or an array broadcast with the mixture's parameters).
            log: return log-errors.

        Returns:
            ``(err_minus, err_plus)``, float64 each.
        """
        z_minus, z_plus = self._class_arguments(b)
        cdf = log_ndtr if log else ndtr
        return _scalar_or_array(cdf(z_minus)), _scalar_or_array(cdf(z_plus))

    def robust_errors(self, b, eps, norm: str = "linf", *, log: bool = False):
        """(R_rob(f, -1), R_rob(f, +1)) under a budget eps (FRL Eq. 17, per class).

        The worst perturbation moves 1.x by eps ||1||_* toward the wrong side: d eps (l_inf) or
        sqrt(d) eps (l_2); so d eta is replaced by d eta - eps ||1||_* in ``standard_errors``.

        Args:
            b: the intercept (float, or an array broadcast with the mixture's parameters).
            eps: the budget, 0 <= eps < eta (l_inf) or < sqrt(d) eta (l_2).
            norm: ``"linf"`` or ``"l2"``.
            log: return log-errors.

        Returns:
            ``(err_minus, err_plus)``, float64 each.
        """
        eps, norm = self._validated_eps(eps, norm)
        z_minus, z_plus = self._class_arguments(b, eps, norm)
        cdf = log_ndtr if log else ndtr
        return _scalar_or_array(cdf(z_minus)), _scalar_or_array(cdf(z_plus))

    def boundary_errors(self, b, eps, norm: str = "linf"):
        """(R_bndy(f, -1), R_bndy(f, +1)) = R_rob - R_nat per class (FRL Eq. 7).

        The probability that a correctly classified point lies within eps of the boundary: a normal
        interval probability, evaluated without subtracting the two CDF values.

        Args:
            b: the intercept (float, or an array broadcast with the mixture's parameters).
            eps: the budget, as for ``robust_errors``.
            norm: ``"linf"`` or ``"l2"``.

        Returns:
            ``(bndy_minus, bndy_plus)``, float64 each, accurate even when tiny.
        """
        eps, norm = self._validated_eps(eps, norm)
        z_minus, z_plus = self._class_arguments(b)
        shift = eps * _dual_norm_of_ones(np.asarray(self.d, np.float64), norm) / self._scale()
        return (
            _scalar_or_array(_normal_interval(z_minus, shift)),
            _scalar_or_array(_normal_interval(z_plus, shift / self.K)),
        )


# ----------------------------------------------------------------------------------------------
# The paper's expressions, spelled out
# ----------------------------------------------------------------------------------------------


def q(K):
    """q(K) = 2 log K / (K^2 - 1) (FRL Theorem 1, Eq. 3); q(1) = 1 (the limit), decreasing in K.

    Evaluated as [log1p(K - 1) / (K - 1)] * 2 / (K + 1), which is accurate as K -> 1.

    Args:
        K: the standard-deviation ratio, >= 1 (float or array).

    Returns:
        q(K), float64.
    """
    return _scalar_or_array(_q_stable(_check_K(K)))


def g(d, eta, sigma, K):
    """g(eta) of FRL Eq. 5 (= b_nat; b_rob = g(eta - eps), Corollary 1 proof), stable form.

    Eq. 5 multiplied by its conjugate, with a = sqrt(d) eta / sigma:

        g = sqrt(d) sigma (K^2 - 1)(a^2 - K^2 q(K))
            / [(K^2 + 1) a + K sqrt(4 a^2 + 2 (K^2 - 1) log K)].

    No cancellation as K -> 1, g = 0 at K = 1; g > 0 exactly when a^2 > K^2 q(K).

    Args:
        d, eta, sigma, K: the mixture's parameters, as for :class:`Mixture` (pass eta - eps for
            b_rob).

    Returns:
        g, float64 (broadcast shape of the arguments).
    """
    return Mixture(d, eta, sigma, K).natural_intercept()


def eq5_intercept(d, eta, sigma, K):
    """FRL Eq. 5 exactly as printed (K > 1):

        g(eta) = (K^2 + 1)/(K^2 - 1) d eta - K sqrt(4 d^2 eta^2 / (K^2 - 1)^2 + d sigma^2 q(K)).

    Loses all precision as K -> 1 (difference of two terms of size ~ d eta / (K - 1)); use ``g``.

    Args:
        d, eta, sigma: as for :class:`Mixture`.
        K: > 1 (the printed form is 0/0 at K = 1).

    Returns:
        The printed Eq. 5, float64.
    """
    d, eta, sigma, K = (
        _check_d(d),
        _check_positive(eta, "eta"),
        _check_positive(sigma, "sigma"),
        _check_K_paper(K),
    )
    k2m1 = K * K - 1.0
    return _scalar_or_array(
        (K * K + 1.0) / k2m1 * d * eta
        - K * np.sqrt(4.0 * d**2 * eta**2 / k2m1**2 + d * sigma**2 * _q_stable(K))
    )


def theorem1_A(d, eta, sigma, K):
    """A = 2 / (K^2 - 1) * sqrt(d) eta / sigma (FRL Theorem 1, as printed; K > 1).

    Args:
        d, eta, sigma: as for :class:`Mixture`.
        K: > 1.

    Returns:
        A, float64.
    """
    d, eta, sigma, K = (
        _check_d(d),
        _check_positive(eta, "eta"),
        _check_positive(sigma, "sigma"),
        _check_K_paper(K),
    )
    return _scalar_or_array(2.0 / (K * K - 1.0) * np.sqrt(d) * eta / sigma)


def theorem1_errors(d, eta, sigma, K):
    """FRL Theorem 1 (Eq. 3), as printed: class errors of the optimal natural classifier f_nat.

    R_nat(f_nat, -1) = Phi(A - K sqrt(A^2 + q(K))),
    R_nat(f_nat, +1) = Phi(-K A + sqrt(A^2 + q(K))).

    Args:
        d, eta, sigma: as for :class:`Mixture`.
        K: > 1.

    Returns:
        ``(err_minus, err_plus)``, float64 each.
    """
    A = np.asarray(theorem1_A(d, eta, sigma, K))
    K = np.asarray(K, dtype=np.float64)
    root = np.sqrt(A * A + _q_stable(K))
    return _scalar_or_array(ndtr(A - K * root)), _scalar_or_array(ndtr(-K * A + root))


def theorem2_B(d, eta, sigma, K, eps):
    """B = 2 / (K^2 - 1) * sqrt(d) (eta - eps) / sigma (FRL Theorem 2 as printed; K > 1).

    Args:
        d, eta, sigma: as for :class:`Mixture`.
        K: > 1.
        eps: the l_inf budget, 0 <= eps < eta.

    Returns:
        B, float64.
    """
    d, eta, sigma, K = (
        _check_d(d),
        _check_positive(eta, "eta"),
        _check_positive(sigma, "sigma"),
        _check_K_paper(K),
    )
    eps = _check_eps(eps, d, eta, "linf")
    return _scalar_or_array(2.0 / (K * K - 1.0) * np.sqrt(d) * (eta - eps) / sigma)


def theorem2_errors(d, eta, sigma, K, eps):
    """FRL Theorem 2 (Eq. 4 / Eq. 16) as printed: standard class errors of the l_inf-robust f_rob.

    R_nat(f_rob, -1) = Phi(B - K sqrt(B^2 + q(K)) - sqrt(d) eps / sigma),
    R_nat(f_rob, +1) = Phi(-K B + sqrt(B^2 + q(K)) - sqrt(d) eps / (K sigma)).

    Args:
        d, eta, sigma: as for :class:`Mixture`.
        K: > 1.
        eps: the l_inf budget, 0 <= eps < eta.

    Returns:
        ``(err_minus, err_plus)``, the standard errors of f_rob, float64 each.
    """
    B = np.asarray(theorem2_B(d, eta, sigma, K, eps))
    d, sigma, K, eps = (np.asarray(v, dtype=np.float64) for v in (d, sigma, K, eps))
    root = np.sqrt(B * B + _q_stable(K))
    shift = np.sqrt(d) * eps / sigma
    return (
        _scalar_or_array(ndtr(B - K * root - shift)),
        _scalar_or_array(ndtr(-K * B + root - shift / K)),
    )
