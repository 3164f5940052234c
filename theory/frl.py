"""Fair Robust Learning's multiplier updates (FRL §4, Algorithm 1, Eq. 9-11).

The one place where FRL's update rules live: ``rule="official"`` (the default) as its reference
implementation runs them, ``rule="paper"`` as Algorithm 1 and Eq. 11 print them.
``deep.methods.frl`` (training networks) and ``sim.mitigation`` (the Gaussian toy) both call it.

The official rule:

From class-wise validation standard errors ``e_c`` and boundary errors ``b_c`` (FRL Eq. 7), with
``e`` and ``b`` their means over classes:

- gaps ``g0_c = e_c - e - delta0`` and ``g1_c = b_c - b - delta1`` (the constraints of Eq. 9);
- Reweight: ``lambda0 <- N(lambda0 + a1 g0)``, ``lambda1 <- N(lambda1 + 2 a1 g1)``, where ``N``
  clips at 0 and then, if the sum exceeds ``lim``, rescales it to ``lim``; the class weights are
  ``w_c = 1/C + lambda_c - (1/C) sum_j lambda_j`` (they sum to 1 and stay > 0 while ``lim < 1``);
- Remargin: ``lambda2 <- lambda2 + a2 g1`` (unclipped) and ``eps_c = eps clamp(exp(2 lambda2_c),
  0.98, 3.0)``, capped (FRL caps every budget at 16/255 on CIFAR-10).

The printed rule (``rule="paper"``; the paper's rates are ``alpha1 = alpha2 = 0.05``, FRL §5.1):

- Algorithm 1 line 7: ``phi_nat_c <- phi_nat_c + a1 (e_c - e - tau1)``; line 8:
  ``phi_bndy_c <- phi_bndy_c + a2 (b_c - b - tau2)``, each kept >= 0 (the multipliers of Eq. 10
  are non-negative); no normalisation of their sum. Class weights are the same
  ``w_c = 1/C + phi_c - (1/C) sum_j phi_j`` (the weight of ``R_nat(f, c)`` in the Lagrangian of
  Eq. 9); a weight the unnormalised multipliers drive below 0 is set to 0 and the rest rescaled to
  sum 1 (the printed rule would otherwise train the model to misclassify that class).
- Eq. 11: ``eps_c <- eps_c exp(a2 (b_c - tau2))``: the boundary error itself, not its gap to the
  mean, so every class whose boundary error exceeds ``tau2`` gets a larger budget. Kept as
  ``lambda2_c <- lambda2_c + a2 (b_c - tau2)`` and ``eps_c = eps exp(lambda2_c)`` (the same
  product of factors), with no clamp; the optional ``cap`` applies as in the official rule.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "FRL_MODES",
    "FRL_RULES",
    "FRL_RULE_RATES",
    "Multipliers",
    "check_rule",
    "fairness_gaps",
    "project_multipliers",
    "multiplier_weights",
    "update_multipliers",
    "remargin_eps",
]

FRL_MODES = ("rw", "rm", "rwrm")
#: ``official``: the FRL reference code's update; ``paper``: Algorithm 1 and Eq. 11 as printed.
FRL_RULES = ("official", "paper")
#: Default rates ``(alpha1, alpha2)`` of each rule: the reference code's, the paper's §5.1.
FRL_RULE_RATES = {"official": (0.05, 0.2), "paper": (0.05, 0.05)}


def check_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`FRL_RULES`.

    Args:
        rule: ``"official"`` or ``"paper"``.

    Returns:
        ``rule`` unchanged.

    Raises:
        ValueError: for any other value.
    """
    if rule not in FRL_RULES:
        raise ValueError(f"rule must be one of {FRL_RULES}, got {rule!r}")
    return rule


class Multipliers(NamedTuple):
    """FRL's Lagrange multipliers: ``lambda0`` (standard error), ``lambda1`` (boundary error,
    Reweight) and ``lambda2`` (boundary error, Remargin), each of shape (C,)."""

    lambda0: np.ndarray
    lambda1: np.ndarray
    lambda2: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int) -> Multipliers:
        """All three multipliers 0 (uniform weights, the base budget) for C classes.

        Args:
            num_classes: number of classes C.

        Returns:
            ``Multipliers`` whose three arrays are float64 zeros of shape (C,).
        """
        return cls(np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes))


def fairness_gaps(
    std_err: np.ndarray, bndy_err: np.ndarray, delta0: float, delta1: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(g0, g1)``: how far each class's standard / boundary error exceeds the class mean plus the
    tolerance (FRL Eq. 9 constraints ``R_nat(f, c) - R_nat(f) <= tau1``, ``R_bndy(f, c) - R_bndy(f)
    <= tau2``).

    Args:
        std_err: class-wise standard errors e_c, shape (C,).
        bndy_err: class-wise boundary errors b_c (FRL Eq. 7), shape (C,).
        delta0, delta1: the tolerances (FRL's tau1, tau2).

    Returns:
        ``(g0, g1)``, float64 arrays of shape (C,): ``e_c - mean(e) - delta0`` and
        ``b_c - mean(b) - delta1``.
    """
    e = np.asarray(std_err, dtype=np.float64)
    b = np.asarray(bndy_err, dtype=np.float64)
    return e - e.mean() - delta0, b - b.mean() - delta1


def project_multipliers(lam: np.ndarray, lim: float) -> np.ndarray:
    """FRL's normalisation ``N``: clip at 0, then rescale the sum to ``lim`` if it exceeds it.

    Args:
        lam: multipliers, shape (C,).
        lim: the largest allowed sum, > 0.

    Returns:
        The projected multipliers, float64 of shape (C,), all >= 0 with sum <= ``lim``.
    """
    lam = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)
    total = lam.sum()
    return lam * (lim / total) if total > lim else lam


def multiplier_weights(lam: np.ndarray, rule: str = "official") -> np.ndarray:
    """Class weights ``w_c = 1/C + lambda_c - (1/C) sum_j lambda_j`` (sum to 1).

    ``rule="paper"``: weights below 0 (possible without the official normalisation) are set to 0
    and the others rescaled to sum 1.

    Args:
        lam: multipliers, shape (C,).
        rule: ``"official"`` or ``"paper"``.

    Returns:
        The class weights, float64 of shape (C,), summing to 1.
    """
    check_rule(rule)
    lam = np.asarray(lam, dtype=np.float64)
    w = 1.0 / lam.shape[0] + lam - lam.mean()
    if rule == "paper" and np.any(w < 0.0):
        w = np.maximum(w, 0.0)
        w = w / w.sum()
    return w


def update_multipliers(
    multipliers: Multipliers,
    std_err: np.ndarray,
    bndy_err: np.ndarray,
    *,
    mode: str,
    delta0: float,
    delta1: float,
    alpha1: float,
    alpha2: float,
    lim: float,
    rule: str = "official",
) -> Multipliers:
    """One FRL update (Algorithm 1, lines 7-8 / Eq. 11) from class-wise validation errors.

    ``mode`` "rw" updates ``lambda0, lambda1`` (Reweight), "rm" updates ``lambda2`` (Remargin),
    "rwrm" both; the others are returned unchanged. ``rule`` picks the official or the printed
    update (module docstring); ``lim`` is used by the official rule only.

    Args:
        multipliers: the current :class:`Multipliers`.
        std_err: class-wise validation standard errors, shape (C,).
        bndy_err: class-wise validation boundary errors (FRL Eq. 7), shape (C,).
        mode: ``"rw"``, ``"rm"`` or ``"rwrm"``.
        delta0, delta1: the fairness tolerances (FRL's tau1, tau2).
        alpha1, alpha2: the Reweight and Remargin rates, finite and >= 0.
        lim: the official rule's cap on the sum of each multiplier vector, > 0.
        rule: ``"official"`` or ``"paper"``.

    Returns:
        The updated :class:`Multipliers`.

    Raises:
        ValueError: naming a bad ``mode``, ``rule``, rate or ``lim``.
    """
    check_rule(rule)
    if mode not in FRL_MODES:
        raise ValueError(f"mode must be one of {FRL_MODES}, got {mode!r}")
    for name, value in (("alpha1", alpha1), ("alpha2", alpha2)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if not (math.isfinite(lim) and lim > 0.0):
        raise ValueError(f"lim must be a finite number > 0, got {lim}")
    g0, g1 = fairness_gaps(std_err, bndy_err, delta0, delta1)
    lambda0, lambda1, lambda2 = multipliers
    if rule == "paper":
        if mode in ("rw", "rwrm"):  # Algorithm 1 lines 7-8, multipliers >= 0 (Eq. 10)
            lambda0 = np.maximum(np.asarray(lambda0, dtype=np.float64) + alpha1 * g0, 0.0)
            lambda1 = np.maximum(np.asarray(lambda1, dtype=np.float64) + alpha2 * g1, 0.0)
        if mode in ("rm", "rwrm"):  # Eq. 11: the boundary error itself minus tau2
            b = np.asarray(bndy_err, dtype=np.float64)
            lambda2 = np.asarray(lambda2, dtype=np.float64) + alpha2 * (b - delta1)
        return Multipliers(lambda0, lambda1, lambda2)
    if mode in ("rw", "rwrm"):
        lambda0 = project_multipliers(lambda0 + alpha1 * g0, lim)
        lambda1 = project_multipliers(lambda1 + 2.0 * alpha1 * g1, lim)
    if mode in ("rm", "rwrm"):
        lambda2 = np.asarray(lambda2, dtype=np.float64) + alpha2 * g1
    return Multipliers(lambda0, lambda1, lambda2)


def remargin_eps(
    base_eps: float,
    lambda2: np.ndarray,
    *,
    clamp: tuple[float, float] = (0.98, 3.0),
    cap: float | None = None,
    rule: str = "official",
) -> np.ndarray:
    """Per-class budgets ``eps_c = base_eps clamp(exp(2 lambda2_c), *clamp)``, then ``min(., cap)``
    (FRL Remargin, §4.3); ``rule="paper"``: ``eps_c = base_eps exp(lambda2_c)`` (Eq. 11, no
    clamp), then ``min(., cap)``.

    Args:
        base_eps: the data set's budget.
        lambda2: the Remargin multipliers, shape (C,).
        clamp: ``(low, high)`` bounds of the official rule's factor.
        cap: the largest per-class budget (FRL: 16/255 on CIFAR-10); None for no cap.
        rule: ``"official"`` or ``"paper"``.

    Returns:
        The per-class budgets, float64 of shape (C,).
    """
    lam2 = np.asarray(lambda2, dtype=np.float64)
    if check_rule(rule) == "paper":
        factor = np.exp(lam2)
    else:
        factor = np.clip(np.exp(2.0 * lam2), *clamp)
    eps = base_eps * factor
    return eps if cap is None else np.minimum(eps, cap)
