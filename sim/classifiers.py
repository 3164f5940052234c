"""Linear classifiers on the FRL mixture, trained naturally and robustly (FRL §3, Lemma 1, Thm 1-2).

- :func:`fit_intercept_erm`: w = 1 (optimal for the mixture, FRL Lemma 1) and the intercept chosen
  by exact minimisation of the class-balanced empirical (robust) 0-1 risk, an O(n log n) sweep over
  the sorted projections ``s = 1.x``. Under an l_inf budget eps the worst case moves ``1.x`` by
  ``||1||_1 eps = d eps`` (l2: ``||1||_2 eps = sqrt(d) eps``) toward the boundary, so a point of
  class -1 is robustly correct iff ``s + b + d eps < 0`` and one of class +1 iff
  ``s + b - d eps > 0``.
- :func:`fit_logistic_natural` (scikit-learn) and :func:`fit_logistic_robust`: the exact worst case
  of a linear model under ``||delta||_inf <= eps`` is the margin ``y (w.x + b) - eps ||w||_1`` (l2:
  ``- eps ||w||_2``); the robust logistic loss is minimised with L-BFGS-B over ``w = w+ - w-``,
  ``w+/- >= 0`` with an analytic gradient.

All linear models are returned as :class:`LinearClassifier`, whose robust correctness on a point is
exact (no attack needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

__all__ = [
    "NORMS",
    "ScoreClassifier",
    "LinearClassifier",
    "dual_norm",
    "InterceptCurves",
    "intercept_error_curves",
    "SortedProjections",
    "fit_intercept_erm",
    "fit_intercept_objective",
    "fit_logistic_natural",
    "fit_logistic_robust",
    "robust_logistic_loss",
]

NORMS = ("linf", "l2")


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def _check_eps(eps, name: str = "eps") -> float:
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")
    return eps


def dual_norm(w: np.ndarray, norm: str) -> float:
    """``max_{||delta|| <= 1} w.delta``: ``||w||_1`` for an l_inf ball, ``||w||_2`` for an l2
    ball.

    Args:
        w: the weight vector.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The dual norm, a float.
    """
    _check_norm(norm)
    w = np.asarray(w, dtype=np.float64)
    return float(np.abs(w).sum() if norm == "linf" else np.linalg.norm(w))


class ScoreClassifier:
    """A binary classifier ``sign(score(x))`` over labels {-1, +1}: the prediction and the
    standard correctness of :class:`LinearClassifier` and :class:`sim.mlp.MLPClassifier`, from
    their ``decision_function`` (a score of exactly 0 counts as an error for both classes)."""

    def decision_function(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover (abstract)
        """The scores of inputs ``x``.

        Args:
            x: inputs (n, d).

        Returns:
            The scores (n,).
        """
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``sign(score(x))``; a score of exactly 0 predicts -1.

        Args:
            x: inputs (n, d).

        Returns:
            Labels (n,) in {-1, +1}, int.
        """
        return np.where(self.decision_function(x) > 0, 1, -1)

    def correct(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Standard correctness ``y score(x) > 0`` (a score of 0 is wrong for both classes).

        Args:
            x: inputs (n, d).
            y: labels (n,) in {-1, +1}.

        Returns:
            Boolean (n,): whether each point is classified correctly.
        """
        return y * self.decision_function(x) > 0


@dataclass(frozen=True)
class LinearClassifier(ScoreClassifier):
    """``f(x) = sign(w.x + b)`` (a score of exactly 0 counts as an error for both classes).

    Args:
        w: the weights (d,).
        b: the intercept.
    """

    w: np.ndarray
    b: float

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """The scores ``w.x + b`` of inputs ``x``.

        Args:
            x: inputs (n, d).

        Returns:
            The scores ``w.x + b``, float64 (n,).
        """
        return np.asarray(x, dtype=np.float64) @ self.w + self.b

    def robust_correct(self, x: np.ndarray, y: np.ndarray, eps: float, norm: str = "linf"):
        """Exact robust correctness: ``min_{||delta|| <= eps} y (w.(x+delta) + b) > 0``, i.e.
        ``y (w.x + b) - eps ||w||_* > 0`` with ``||.||_*`` the dual norm.

        Args:
            x: inputs (n, d).
            y: labels (n,) in {-1, +1}.
            eps: the perturbation budget, >= 0.
            norm: the budget's norm, ``"linf"`` (dual ``||w||_1``) or ``"l2"`` (``||w||_2``).

        Returns:
            Boolean (n,): whether each point is correct under every perturbation of norm <= eps.
        """
        return y * self.decision_function(x) - _check_eps(eps) * dual_norm(self.w, norm) > 0

    def diagonal_crossing(self) -> float:
        """``t`` where the boundary crosses the diagonal ``x = t 1`` (``t = -b / sum(w)``); for w =
        1 this is ``-b/d``. Larger ``t`` means a boundary closer to the class +1 centre
        ``+theta``.

        Returns:
            ``t = -b / sum(w)``, a float (infinite or nan when ``sum(w) == 0``).
        """
        return float(-self.b / self.w.sum())


# ---------------------------------------------------------------------------------------------
# w = 1: exact intercept ERM by a sweep over sorted projections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InterceptCurves:
    """Class-wise empirical errors of ``sign(1.x + b)`` at every candidate intercept.

    ``b`` holds one intercept inside each interval between consecutive breakpoints of the
    piecewise-constant error functions (plus one beyond each end), so any objective built from these
    curves is minimised exactly by taking its argmin over ``b``. ``nat_*`` are standard errors,
    ``rob_*`` robust errors at the per-class training budgets; all are class means in [0, 1].
    """

    b: np.ndarray
    nat_minus: np.ndarray
    nat_plus: np.ndarray
    rob_minus: np.ndarray
    rob_plus: np.ndarray


def _projections(x_or_s: np.ndarray) -> np.ndarray:
    a = np.asarray(x_or_s, dtype=np.float64)
    return a.sum(axis=1) if a.ndim == 2 else a


def _shift(d: int, eps: float, norm: str) -> float:
    """Worst-case move of ``1.x`` under the budget: ``||1||_* eps``."""
    return d * eps if norm == "linf" else np.sqrt(d) * eps


class SortedProjections:
    """The projections ``s = 1.x`` of each class, sorted once, for repeated exact sweeps.

    ``x_or_s`` is either the (n, d) inputs or the projections (then ``d`` is required).
    """

    def __init__(self, x_or_s: np.ndarray, y: np.ndarray, *, d: int | None = None):
        x_or_s = np.asarray(x_or_s)
        if x_or_s.ndim == 2:
            d = x_or_s.shape[1] if d is None else d
        elif d is None:
            raise ValueError("d is required when projections s = 1.x are given")
        s = _projections(x_or_s)
        y = np.asarray(y)
        if s.shape != y.shape:
            raise ValueError(
                f"x and y must have the same number of samples, got {s.shape}, {y.shape}"
            )
        self.d = int(d)
        self.minus = np.sort(s[y == -1])
        self.plus = np.sort(s[y == 1])
        if self.minus.size == 0 or self.plus.size == 0:
            raise ValueError("both classes -1 and +1 must be present in y")

    def curves(self, eps_minus: float = 0.0, eps_plus: float = 0.0, norm: str = "linf"):
        """Exact class-wise error curves over all intercepts (see
        :func:`intercept_error_curves`).

        Args:
            eps_minus: the training budget of class -1 (for the ``rob_minus`` curve), >= 0.
            eps_plus: the training budget of class +1 (for the ``rob_plus`` curve), >= 0.
            norm: the budgets' norm, ``"linf"`` (shift ``d eps``) or ``"l2"`` (``sqrt(d) eps``).

        Returns:
            The :class:`InterceptCurves`: candidate intercepts ``b`` and the standard and robust
            error of each class at each, class means in [0, 1].
        """
        _check_norm(norm)
        sh_minus = _shift(self.d, _check_eps(eps_minus, "eps_minus"), norm)
        sh_plus = _shift(self.d, _check_eps(eps_plus, "eps_plus"), norm)
        s_minus, s_plus = self.minus, self.plus
        # four sorted runs: a stable sort merges them in linear time
        breaks = np.sort(
            np.concatenate([s_minus, s_plus, s_minus + sh_minus, s_plus - sh_plus]), kind="stable"
        )
        breaks = breaks[np.concatenate([[True], np.diff(breaks) > 0])]
        t = np.empty(breaks.size + 1)
        t[0], t[-1] = breaks[0] - 1.0, breaks[-1] + 1.0
        t[1:-1] = 0.5 * (breaks[:-1] + breaks[1:])

        def count_below(atoms, side):
            """#{a in atoms: a < t_j} (side "right") or #{a <= t_j} (side "left"), for every j."""
            first = np.searchsorted(t, atoms, side=side)  # first j where the atom is counted
            return np.cumsum(np.bincount(first, minlength=t.size)[: t.size])

        def err_minus(shift):  # fraction of class -1 with s + shift >= t
            return 1.0 - count_below(s_minus + shift, "right") / s_minus.size

        def err_plus(shift):  # fraction of class +1 with s - shift <= t
            return count_below(s_plus - shift, "left") / s_plus.size

        return InterceptCurves(
            b=-t,
            nat_minus=err_minus(0.0),
            nat_plus=err_plus(0.0),
            rob_minus=err_minus(sh_minus),
            rob_plus=err_plus(sh_plus),
        )


def intercept_error_curves(
    x_or_s: np.ndarray,
    y: np.ndarray,
    *,
    d: int | None = None,
    eps_minus: float = 0.0,
    eps_plus: float = 0.0,
    norm: str = "linf",
) -> InterceptCurves:
    """Exact class-wise error curves of the w = 1 family over all intercepts (O(n log n)).

    ``x_or_s`` is either the (n, d) inputs or the projections ``s = 1.x`` (then ``d`` is required).
    With ``t = -b`` the threshold on ``s``: class -1 errs iff ``s + shift_- >= t``, class +1 errs
    iff ``s - shift_+ <= t`` (shift 0 for standard errors). The breakpoints are these positions;
    the candidates are the midpoints between consecutive distinct breakpoints and one point beyond
    each end.

    Args:
        x_or_s: inputs (n, d), or projections ``s = 1.x`` (n,) with ``d`` given.
        y: labels (n,) in {-1, +1}.
        d: the dimension, needed with projections.
        eps_minus, eps_plus: the budgets of class -1 and class +1 (0: standard errors).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The :class:`InterceptCurves` (candidate intercepts and each class's error at each).
    """
    return SortedProjections(x_or_s, y, d=d).curves(eps_minus, eps_plus, norm)


def fit_intercept_objective(curves: InterceptCurves, objective: np.ndarray, d: int):
    """The w = 1 classifier at the candidate intercept minimising ``objective`` (one value per
    candidate in ``curves.b``; ties go to the first, i.e. the largest intercept).

    Args:
        curves: the error curves of :func:`intercept_error_curves`.
        objective: one value per candidate intercept.
        d: the dimension.

    Returns:
        The :class:`LinearClassifier` with w = 1 at the minimising intercept.
    """
    i = int(np.argmin(objective))
    return LinearClassifier(w=np.ones(d), b=float(curves.b[i]))


def fit_intercept_erm(
    x_or_s: np.ndarray,
    y: np.ndarray,
    *,
    eps: float = 0.0,
    norm: str = "linf",
    d: int | None = None,
    class_weights: tuple[float, float] = (0.5, 0.5),
    class_eps: tuple[float, float] | None = None,
) -> LinearClassifier:
    """w = 1 and the intercept minimising the empirical robust 0-1 risk exactly.

    Minimises ``class_weights[0] * err_-(b) + class_weights[1] * err_+(b)`` with ``err_c`` the
    class-mean robust error at budget ``eps`` (``eps = 0``: standard error), i.e. the empirical
    version of FRL's ``R_rob = 1/2 R_rob(-1) + 1/2 R_rob(+1)`` for the default weights. ``class_eps
    = (eps_-, eps_+)`` overrides ``eps`` per class (FRL Remargin). As n grows the intercept
    converges to ``Mixture.natural_intercept()`` (eps = 0) or ``Mixture.robust_intercept(eps)`` at
    the cube-root rate of 0-1 risk minimisers.

    Args:
        x_or_s: inputs (n, d), or projections ``s = 1.x`` (n,) with ``d`` given.
        y: labels (n,) in {-1, +1}.
        eps: the budget (0: standard error).
        norm: ``"linf"`` or ``"l2"``.
        d: the dimension, needed with projections.
        class_weights: ``(w_-, w_+)`` of the two class errors.
        class_eps: ``(eps_-, eps_+)``, per-class budgets overriding ``eps`` (FRL Remargin).

    Returns:
        The :class:`LinearClassifier` with w = 1 and the optimal intercept.
    """
    eps_minus, eps_plus = (eps, eps) if class_eps is None else class_eps
    curves = intercept_error_curves(
        x_or_s, y, d=d, eps_minus=eps_minus, eps_plus=eps_plus, norm=norm
    )
    wm, wp = (float(c) for c in class_weights)
    if wm < 0 or wp < 0 or wm + wp <= 0:
        raise ValueError(f"class_weights must be >= 0 and not both 0, got {class_weights}")
    objective = wm * curves.rob_minus + wp * curves.rob_plus
    d = np.asarray(x_or_s).shape[1] if np.asarray(x_or_s).ndim == 2 else d
    return fit_intercept_objective(curves, objective, d)


# ---------------------------------------------------------------------------------------------
# Logistic regression: natural (scikit-learn) and exact-worst-case robust (scipy L-BFGS-B)
# ---------------------------------------------------------------------------------------------


def fit_logistic_natural(x: np.ndarray, y: np.ndarray, *, C: float = 1.0) -> LinearClassifier:
    """scikit-learn's L2-regularised logistic regression: minimises
    ``0.5 ||w||^2 + C sum_i log(1 + exp(-y_i (w.x_i + b)))`` (intercept not penalised).

    Args:
        x: inputs (n, d).
        y: labels (n,) in {-1, +1}.
        C: the inverse regularisation strength.

    Returns:
        The fitted :class:`LinearClassifier`.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, tol=1e-10, max_iter=10_000)
    model.fit(np.asarray(x, dtype=np.float64), np.asarray(y))
    return LinearClassifier(w=model.coef_[0].astype(np.float64), b=float(model.intercept_[0]))


def robust_logistic_loss(
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    eps: np.ndarray | float,
    *,
    C: float = 1.0,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Exact l_inf robust logistic objective and its gradient in ``params = [w+, w-, b]``.

    ``(1/n) sum_i s_i log(1 + exp(-m_i)) + ||w||^2 / (2 C n)`` with ``w = w+ - w-`` and the
    worst-case margin ``m_i = y_i (w.x_i + b) - eps_i sum(w+ + w-)`` (``= ... - eps_i ||w||_1`` at
    any optimum, where ``w+ * w- = 0``). The 1/n scaling of scikit-learn's objective keeps eps = 0
    identical to it.

    Args:
        params: ``[w+, w-, b]``, length 2 d + 1.
        x: inputs (n, d).
        y: labels (n,) in {-1, +1}.
        eps: per-sample budgets (n,) or a float.
        C: the inverse regularisation strength.
        sample_weight: per-sample weights (n,); None: 1.

    Returns:
        ``(loss, gradient)``: a float and float64 (2 d + 1,).
    """
    n, d = x.shape
    wp, wm, b = params[:d], params[d : 2 * d], params[2 * d]
    w = wp - wm
    eps_i = np.broadcast_to(np.asarray(eps, dtype=np.float64), (n,))
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    margin = y * (x @ w + b) - eps_i * (wp.sum() + wm.sum())
    value = (sw @ np.logaddexp(0.0, -margin)) / n + (w @ w) / (2.0 * C * n)
    g = -sw * expit(-margin) / n  # d value / d margin_i
    gy = g * y
    gx = gy @ x
    geps = g @ eps_i
    reg = w / (C * n)
    grad = np.concatenate([gx - geps + reg, -gx - geps - reg, [gy.sum()]])
    return float(value), grad


def _robust_logistic_l2(params, x, y, eps_i, C, sw):
    n, d = x.shape
    w, b = params[:d], params[d]
    wn = np.linalg.norm(w)
    margin = y * (x @ w + b) - eps_i * wn
    value = (sw @ np.logaddexp(0.0, -margin)) / n + (w @ w) / (2.0 * C * n)
    g = -sw * expit(-margin) / n
    unit = w / wn if wn > 0 else np.zeros(d)
    grad_w = (g * y) @ x - (g @ eps_i) * unit + w / (C * n)
    return float(value), np.concatenate([grad_w, [(g * y).sum()]])


def fit_logistic_robust(
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    C: float = 1.0,
    norm: str = "linf",
    class_weights: tuple[float, float] | None = None,
    class_eps: tuple[float, float] | None = None,
    init: LinearClassifier | None = None,
) -> LinearClassifier:
    """Robust logistic regression: minimise the exact worst-case logistic loss (see
    :func:`robust_logistic_loss`; l2: margin minus ``eps ||w||_2``) with L-BFGS-B.

    ``class_weights`` ``(w_-, w_+)`` multiply each sample's loss by ``2 w_{y_i}`` (so (0.5, 0.5) is
    unweighted); ``class_eps`` gives a per-class budget (FRL Remargin). Starts from ``init`` or the
    natural scikit-learn fit.

    Args:
        x: inputs (n, d).
        y: labels (n,) in {-1, +1}.
        eps: the budget, >= 0.
        C: the inverse regularisation strength.
        norm: ``"linf"`` or ``"l2"``.
        class_weights: ``(w_-, w_+)``; None: unweighted.
        class_eps: ``(eps_-, eps_+)``; None: ``eps`` for both.
        init: the starting classifier; None: the natural fit.

    Returns:
        The fitted :class:`LinearClassifier`.
    """
    _check_norm(norm)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    eps_c = (eps, eps) if class_eps is None else class_eps
    eps_i = np.where(y > 0, _check_eps(eps_c[1], "eps_plus"), _check_eps(eps_c[0], "eps_minus"))
    cw = (0.5, 0.5) if class_weights is None else class_weights
    sw = np.where(y > 0, 2.0 * cw[1], 2.0 * cw[0])
    start = fit_logistic_natural(x, y, C=C) if init is None else init
    opts = {"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20}
    if norm == "linf":
        p0 = np.concatenate([np.maximum(start.w, 0), np.maximum(-start.w, 0), [start.b]])
        bounds = [(0.0, None)] * (2 * d) + [(None, None)]
        res = minimize(
            lambda p: robust_logistic_loss(p, x, y, eps_i, C=C, sample_weight=sw),
            p0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=opts,
        )
        w = res.x[:d] - res.x[d : 2 * d]
        b = res.x[2 * d]
    else:
        p0 = np.concatenate([start.w, [start.b]])
        res = minimize(
            _robust_logistic_l2,
            p0,
            args=(x, y, eps_i, C, sw),
            jac=True,
            method="L-BFGS-B",
            options=opts,
        )
        w, b = res.x[:d], res.x[d]
    return LinearClassifier(w=np.asarray(w, dtype=np.float64), b=float(b))
