"""Robust-fairness mitigations on the FRL mixture, each against plain robust training.

The model family is the optimal one for the mixture (FRL Lemma 1): ``f(x) = sign(1.x + b)``, so a
"model" is an intercept and every training step is an exact minimisation over all intercepts
(:func:`sim.classifiers.intercept_error_curves`). Only ``s = 1.x`` matters, so the samples here are
projections. Methods (names as in :data:`MITIGATIONS`):

- ``robust``: plain robust ERM, ``min_b 1/2 (R_rob(-1) + R_rob(+1))`` at budget eps.
- ``frl-rw``, ``frl-rm``, ``frl-rwrm``: FRL Algorithm 1 (FRL §4.2-4.3, Eq. 9-11) as its reference
  code runs it. Starting from the plain robust model, each round evaluates class-wise
  standard errors ``e_c`` and boundary errors ``b_c`` (at eps) on a validation sample, updates the
  multipliers from the gaps ``g0_c = e_c - mean(e) - delta0``, ``g1_c = b_c - mean(b) - delta1``,
  and retrains::

      Reweight:  lambda0 <- N(lambda0 + a1 g0),  lambda1 <- N(lambda1 + 2 a1 g1)
                 (N: clip at 0, then rescale to sum ``lim`` if the sum exceeds it),
                 w_c = 1/C + lambda_c - mean(lambda)  (for both w0 and w1);
      Remargin:  lambda2 <- lambda2 + a2 g1,
                 eps_c = eps clamp(exp(2 lambda2_c), 0.98, 3.0)  (capped);
      TRAIN:     min_b  sum_c w0_c R_nat(c) + beta sum_c w1_c R_bndy(c; eps_c).

  With uniform weights, eps_c = eps and beta = 1 the training objective is exactly the average
  robust error (R_nat + R_bndy = R_rob, FRL Eq. 7), so every difference from ``robust`` is the
  multipliers'. ``FRLSettings(rule="paper")`` updates them as Algorithm 1 and Eq. 11 print it
  (:mod:`theory.frl`) instead.
- ``faal``: FAAL's objective (supp. Eq. 1-2) solved exactly on this family:
  ``min_b max_{w: KL(u || w) <= tau} sum_c w_c R_rob(c)`` with the class robust errors on the
  training sample; the inner max is :func:`theory.dro.dro_value`, evaluated at every candidate
  intercept.

Defaults differ from the CIFAR values where the toy needs it: the toy's errors are a few percent, so
``delta0 = delta1 = 0`` (the paper's 5% tolerance would never trigger) and the rates are larger
(alpha1 = 0.5, alpha2 = 2, decayed by 0.1 per stage of 10 rounds). With constant large rates the
exact inner minimisation of a weighted 0-1 objective jumps between intercepts (it can even land on
a constant classifier); the decay makes the multipliers settle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.classifiers import SortedProjections
from theory.dro import dro_value, solve_kl_dro
from theory.frl import (
    FRL_MODES,
    Multipliers,
    check_rule,
    multiplier_weights,
    remargin_eps,
    update_multipliers,
)

__all__ = [
    "MITIGATIONS",
    "FRLSettings",
    "FRLMultipliers",
    "intercept_class_errors",
    "fit_plain_robust",
    "fit_frl",
    "fit_faal",
    "run_mitigations",
]

MITIGATIONS = ("robust", "frl-rw", "frl-rm", "frl-rwrm", "faal")
NUM_CLASSES = 2


@dataclass(frozen=True)
class FRLSettings:
    """Hyper-parameters of FRL on the toy (named as in FRL's reference code).

    Args:
        delta0, delta1: the tolerances (0 on the toy, whose errors are a few percent).
        alpha1, alpha2: the Reweight and Remargin rates.
        lim: the cap on the sum of each multiplier vector.
        beta: the weight of the boundary term.
        stages: stages of rounds; the rates decay after each.
        rounds_per_stage: multiplier updates per stage.
        stage_decay: the rates' factor after each stage.
        eps_clamp: the bounds of the Remargin factor.
        eps_cap_factor: the largest per-class budget, as a multiple of eps.
        rule: ``"official"`` or ``"paper"`` (:mod:`theory.frl`).
    """

    delta0: float = 0.0
    delta1: float = 0.0
    alpha1: float = 0.5
    alpha2: float = 2.0
    lim: float = 0.5
    beta: float = 1.0
    stages: int = 3
    rounds_per_stage: int = 10
    stage_decay: float = 0.1  # the paper decays its rates by 0.1 every 40 epochs
    eps_clamp: tuple[float, float] = (0.98, 3.0)
    eps_cap_factor: float = 2.0  # the paper caps every eps at 16/255 = 2 x 8/255
    #: "official" (the reference code's update) or "paper" (Algorithm 1 and Eq. 11 as printed)
    rule: str = "official"

    def __post_init__(self):
        check_rule(self.rule)


@dataclass
class FRLMultipliers:
    """FRL's Lagrange multipliers and the class weights / class budgets they induce.

    Args:
        mode: ``"rw"``, ``"rm"`` or ``"rwrm"``.
        settings: the :class:`FRLSettings`.
        lambda0, lambda1, lambda2: the multipliers, one per class (default 0).
    """

    mode: str
    settings: FRLSettings = field(default_factory=FRLSettings)
    lambda0: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES))
    lambda1: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES))
    lambda2: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES))

    def __post_init__(self):
        if self.mode not in FRL_MODES:
            raise ValueError(f"mode must be one of {FRL_MODES}, got {self.mode!r}")

    def update(self, std_err: np.ndarray, bndy_err: np.ndarray) -> None:
        """One multiplier update from validation class errors (FRL Algorithm 1 lines 7-8, Eq.
        11), in place: the multipliers that ``mode`` selects move by the settings' rates.

        Args:
            std_err: validation standard errors ``[class -1, class +1]``, float in [0, 1].
            bndy_err: validation boundary errors at eps (FRL Eq. 7), ``[class -1, class +1]``.
        """
        self.update_scaled(std_err, bndy_err, 1.0)

    def update_scaled(self, std_err: np.ndarray, bndy_err: np.ndarray, rate_scale: float) -> None:
        """:meth:`update` with both rates multiplied by ``rate_scale`` (stage-wise decay).

        Args:
            std_err: validation standard errors ``[class -1, class +1]``, float in [0, 1].
            bndy_err: validation boundary errors at eps (FRL Eq. 7), ``[class -1, class +1]``.
            rate_scale: the factor on ``alpha1`` and ``alpha2`` (``stage_decay ** stage``), >= 0.
        """
        s = self.settings
        self.lambda0, self.lambda1, self.lambda2 = update_multipliers(
            Multipliers(self.lambda0, self.lambda1, self.lambda2),
            std_err,
            bndy_err,
            mode=self.mode,
            delta0=s.delta0,
            delta1=s.delta1,
            alpha1=s.alpha1 * rate_scale,
            alpha2=s.alpha2 * rate_scale,
            lim=s.lim,
            rule=s.rule,
        )

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w0, w1)``: ``w_c = 1/C + lambda_c - mean(lambda)`` (sum to 1).

        Returns:
            ``(w0, w1)``, float64 (C,) each, summing to 1: the weights of the standard error (from
            ``lambda0``) and of the boundary error (from ``lambda1``) of each class; under the
            paper rule negative weights are set to 0 and the rest rescaled.
        """
        rule = self.settings.rule
        return multiplier_weights(self.lambda0, rule), multiplier_weights(self.lambda1, rule)

    def class_eps(self, eps: float) -> np.ndarray:
        """``eps_c = eps clamp(exp(2 lambda2_c), lo, hi)`` (``eps exp(lambda2_c)`` under the paper
        rule), capped at ``eps_cap_factor * eps``.

        Args:
            eps: the base budget, >= 0.

        Returns:
            The per-class budgets ``[eps_-, eps_+]``, float64 (C,).
        """
        s = self.settings
        cap = s.eps_cap_factor * eps
        return remargin_eps(eps, self.lambda2, clamp=s.eps_clamp, cap=cap, rule=s.rule)


def intercept_class_errors(s, y, b, *, d, eps, norm="linf"):
    """Class-wise (standard, boundary, robust) errors of ``sign(1.x + b)`` on projections ``s``,
    each an array ``[class -1, class +1]``.

    Args:
        s: projections ``1.x`` (n,).
        y: labels (n,) in {-1, +1}.
        b: the intercept.
        d: the dimension.
        eps: the budget (a float, or per-class ``(eps_-, eps_+)``).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``(standard, boundary, robust)``, each float64 ``[class -1, class +1]``.
    """
    shift = d * eps if norm == "linf" else np.sqrt(d) * eps
    margin = y * (s + b)
    std = np.array([np.mean(margin[y == c] <= 0) for c in (-1, 1)])
    rob = np.array([np.mean(margin[y == c] - shift <= 0) for c in (-1, 1)])
    return std, rob - std, rob


def fit_plain_robust(s, y, *, d, eps, norm="linf") -> float:
    """Intercept of plain robust ERM (average robust error).

    Args:
        s: projections ``1.x`` (n,).
        y: labels (n,) in {-1, +1}.
        d: the dimension.
        eps: the budget.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The intercept, a float.
    """
    cur = _sorted(s, y, d).curves(eps, eps, norm)
    return float(cur.b[np.argmin(cur.rob_minus + cur.rob_plus)])


def _sorted(s, y, d) -> SortedProjections:
    return s if isinstance(s, SortedProjections) else SortedProjections(s, y, d=d)


def _frl_train(sorted_train: SortedProjections, *, eps_c, w0, w1, beta, norm) -> float:
    cur = sorted_train.curves(eps_c[0], eps_c[1], norm)
    objective = (
        w0[0] * cur.nat_minus
        + w0[1] * cur.nat_plus
        + beta * (w1[0] * (cur.rob_minus - cur.nat_minus) + w1[1] * (cur.rob_plus - cur.nat_plus))
    )
    return float(cur.b[np.argmin(objective)])


def fit_frl(
    s_train,
    y_train,
    s_val,
    y_val,
    *,
    d: int,
    eps: float,
    mode: str,
    settings: FRLSettings | None = None,
    norm: str = "linf",
) -> tuple[float, dict]:
    """FRL (Reweight ``rw``, Remargin ``rm`` or both ``rwrm``) on the intercept family.

    ``settings.stages`` stages of ``settings.rounds_per_stage`` rounds; the multiplier rates are
    multiplied by ``settings.stage_decay`` after each stage (as the paper decays its rates).
    Returns the final intercept and a history ``{"b", "w0", "w1", "eps_c"}`` (one entry per round).

    Args:
        s_train, y_train: training projections ``1.x`` and labels.
        s_val, y_val: validation projections and labels (the multipliers' errors).
        d: the dimension.
        eps: the budget.
        mode: ``"rw"``, ``"rm"`` or ``"rwrm"``.
        settings: tolerances, rates, stages (:class:`FRLSettings`; None: the defaults).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``(b, history)``: the final intercept and ``{"b", "w0", "w1", "eps_c"}`` per round.
    """
    settings = settings or FRLSettings()
    mult = FRLMultipliers(mode, settings)
    train = SortedProjections(s_train, y_train, d=d)
    b = fit_plain_robust(train, None, d=d, eps=eps, norm=norm)
    history: dict[str, list] = {"b": [], "w0": [], "w1": [], "eps_c": []}
    rounds = [settings.stage_decay**k for k in range(settings.stages)]
    for rate_scale in np.repeat(rounds, settings.rounds_per_stage):
        std, bndy, _ = intercept_class_errors(s_val, y_val, b, d=d, eps=eps, norm=norm)
        mult.update_scaled(std, bndy, rate_scale)
        w0, w1 = mult.weights()
        eps_c = mult.class_eps(eps)
        b = _frl_train(train, eps_c=eps_c, w0=w0, w1=w1, beta=settings.beta, norm=norm)
        for key, val in (("b", b), ("w0", w0), ("w1", w1), ("eps_c", eps_c)):
            history[key].append(np.asarray(val).tolist())
    return b, history


def fit_faal(
    s, y, *, d: int, eps: float, tau: float, norm: str = "linf"
) -> tuple[float, np.ndarray]:
    """FAAL on the intercept family: ``argmin_b dro_value([R_rob(-1; b), R_rob(+1; b)], tau)`` over
    all candidate intercepts (exact). Returns the intercept and the class weights ``w*`` there.

    Args:
        s, y: training projections ``1.x`` and labels.
        d: the dimension.
        eps: the budget.
        tau: FAAL's KL budget.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``(b, w)``: the intercept and the class weights w* there.
    """
    cur = _sorted(s, y, d).curves(eps, eps, norm)
    losses = np.stack([cur.rob_minus, cur.rob_plus], axis=-1)
    i = int(np.argmin(dro_value(losses, tau)))
    return float(cur.b[i]), solve_kl_dro(losses[i], tau)


def run_mitigations(
    s_train,
    y_train,
    s_val,
    y_val,
    *,
    d: int,
    eps: float,
    tau: float = 0.5,
    settings: FRLSettings | None = None,
    methods: tuple[str, ...] = MITIGATIONS,
    norm: str = "linf",
) -> dict:
    """Fit every method in ``methods``; returns ``{method: {"b": float, ...extra}}``.

    Args:
        s_train, y_train: training projections and labels.
        s_val, y_val: validation projections and labels (FRL's multipliers).
        d: the dimension.
        eps: the budget.
        tau: FAAL's KL budget.
        settings: FRL's settings (None: the defaults).
        methods: names from :data:`MITIGATIONS`.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``{method: {"b": float, ...}}`` (FRL adds its history, FAAL its weights).
    """
    out: dict[str, dict] = {}
    for method in methods:
        if method == "robust":
            out[method] = {"b": fit_plain_robust(s_train, y_train, d=d, eps=eps, norm=norm)}
        elif method.startswith("frl-"):
            b, hist = fit_frl(
                s_train,
                y_train,
                s_val,
                y_val,
                d=d,
                eps=eps,
                mode=method[4:],
                settings=settings,
                norm=norm,
            )
            out[method] = {
                "b": b,
                "final_w0": hist["w0"][-1],
                "final_w1": hist["w1"][-1],
                "final_eps_c": hist["eps_c"][-1],
            }
        elif method == "faal":
            b, w = fit_faal(s_train, y_train, d=d, eps=eps, tau=tau, norm=norm)
            out[method] = {"b": b, "class_weights": w.tolist(), "tau": tau}
        else:
            raise ValueError(f"unknown mitigation {method!r}; choose from {MITIGATIONS}")
    return out
