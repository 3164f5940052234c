"""FRL: Fair Robust Learning (Xu et al., ICML 2021), and the two baselines of its experiments.

* :class:`FRLWeighting`: Reweight / Remargin multipliers from class-wise validation errors (FRL
  Algorithm 1, Eq. 9-11, as the FRL reference code runs them), with FRL's two-term
  TRADES loss ``sum w0 CE / sum w0 + beta sum w1 KL / sum w1``.
* :class:`BaselineReweight`: FRL §5.1's baseline that upweights the worst validation class.
* :class:`FixedClassWeighting`: FRL §5.3 / Figure 3, fixed per-class boundary weights and budgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from deep.methods.base import EpochEnd, TrainBatch, UniformWeighting, check_kind
from deep.metrics import frl_errors
from deep.objectives import trades_parts
from deep.weighting import _as_error_vector, _check_num_classes, frl_trades_loss
from theory.frl import (
    FRL_MODES,
    Multipliers,
    check_rule,
    multiplier_weights,
    remargin_eps,
    update_multipliers,
)

#: ``--frl-step-rule``: the package's fixed attack step, or the reference code's max eps / 4.
FRL_STEP_RULES = ("fixed", "batch-max")
#: ``--frl-update-at``: multipliers updated after each epoch, or (reference code) at its start.
FRL_UPDATE_AT = ("epoch-end", "epoch-start")

__all__ = [
    "FRL_STEP_RULES",
    "FRL_UPDATE_AT",
    "BaselineReweight",
    "FRLWeighting",
    "FixedClassWeighting",
    "baseline_from_config",
    "fixed_class_from_config",
    "frl_from_config",
]


class _TwoTermWeighting(UniformWeighting):
    """Class weights of FRL's two-term loss: ``w0`` for the natural CE term, ``w1`` for
    the boundary (KL) term, and per-class budgets, all held on the host as float64 numpy arrays
    (``nat_weight_values``, ``bndy_weight_values``, ``eps_values``, given by the subclass) and
    copied to each device once per change (:meth:`_on_device`; the subclass calls
    :meth:`_values_changed` whenever its values change)."""

    def batch_weights(self, margins, y: torch.Tensor, epoch: int = 0, **_: object) -> torch.Tensor:
        """w0 (C,) on ``y``'s device: the natural-error weights."""
        return self._on_device("w0", self.nat_weight_values, y.device)

    def bndy_weights(self, y: torch.Tensor) -> torch.Tensor:
        """w1 (C,) on ``y``'s device: the boundary-error weights."""
        return self._on_device("w1", self.bndy_weight_values, y.device)

    def class_eps(self, y: torch.Tensor) -> torch.Tensor:
        """Per-sample budgets eps_{y_i}, shape (B,), on ``y``'s device."""
        return self._on_device("eps", self.eps_values, y.device)[y]

    def loss(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """FRL's two-term loss of the batch and its natural-term weights w0."""
        ce_i, kl_i = trades_parts(batch.logits_adv, batch.logits_clean, batch.y)
        loss = self.trades_loss(ce_i, kl_i, batch.y, beta=batch.beta)
        return loss, self.batch_weights(None, batch.y, batch.epoch)

    def trades_loss(
        self, ce_i: torch.Tensor, kl_i: torch.Tensor, y: torch.Tensor, *, beta: float = 1.5
    ) -> torch.Tensor:
        """FRL's training loss ``sum w0 CE / sum w0 + beta sum w1 KL / sum w1``."""
        return frl_trades_loss(
            ce_i, kl_i, y, self.batch_weights(None, y), self.bndy_weights(y), beta=beta
        )


class FRLWeighting(_TwoTermWeighting):
    """Fair Robust Learning multipliers (FRL Algorithm 1, Eq. 11, as its reference code runs them).

    After each epoch, from class-wise validation standard errors e_c and boundary errors b_c
    (b_c = clean acc_c - PGD acc_c), with e = mean_c e_c and b = mean_c b_c:

    - gaps g0_c = e_c - e - delta0, g1_c = b_c - b - delta1;
    - Reweight ("rw", "rwrm"): lambda0 <- N(lambda0 + a1 g0), lambda1 <- N(lambda1 + 2 a1 g1),
      N = clip at 0 then rescale to sum ``lim`` if the sum exceeds it; class weights
      w_c = 1/C + lambda_c - (1/C) sum_j lambda_j (w0 from lambda0 for the natural CE term, w1 from
      lambda1 for the boundary / KL term);
    - Remargin ("rm", "rwrm"): lambda2 <- lambda2 + a2 g1 (unclipped);
      ``eps_c = base_eps * clamp(exp(2 lambda2_c), *eps_clamp)``, then ``min(eps_c, eps_cap)``.

    ``update_from_validation(..., rate_scale=s)`` multiplies a1 and a2 by s (the paper decays them
    by 0.1 every 40 epochs). The training loss is :meth:`trades_loss`;
    :meth:`batch_weights` returns w0, :meth:`bndy_weights` returns w1.

    ``rule="paper"`` updates as Algorithm 1 and Eq. 11 print it instead (:mod:`theory.frl`):
    lambda1 moves at rate a2, no normalisation to ``lim``, eps_c = base_eps exp(lambda2_c) with
    lambda2 <- lambda2 + a2 (b_c - delta1), no clamp (``eps_cap`` still applies).

    Args:
        num_classes: the number of classes C.
        base_eps: the data set's training budget.
        mode: ``"rw"``, ``"rm"`` or ``"rwrm"``.
        delta0, delta1: the tolerances (FRL's tau1, tau2).
        alpha1, alpha2: the Reweight and Remargin rates.
        lim: the cap on the sum of each multiplier vector.
        eps_cap: the largest per-class budget (None: no cap).
        eps_clamp: the bounds of the Remargin factor.
        base_step: the data set's attack step.
        step_rule: ``"fixed"`` or ``"batch-max"`` (the reference's largest budget / 4).
        update_at: ``"epoch-end"`` or ``"epoch-start"`` (the reference's order).
        rule: ``"official"`` or ``"paper"``.
    """

    kind = "frl"
    weights_change = True

    def __init__(
        self,
        num_classes: int,
        base_eps: float,
        mode: str = "rwrm",
        delta0: float = 0.05,
        delta1: float = 0.05,
        alpha1: float = 0.05,
        alpha2: float = 0.2,
        lim: float = 0.5,
        eps_cap: float | None = None,
        eps_clamp: tuple[float, float] = (0.98, 3.0),
        base_step: float | None = None,
        step_rule: str = "fixed",
        update_at: str = "epoch-end",
        rule: str = "official",
    ) -> None:
        super().__init__(_check_num_classes(num_classes), base_eps=base_eps, base_step=base_step)
        self.rule = check_rule(rule)
        if mode not in FRL_MODES:
            raise ValueError(f"mode must be one of {FRL_MODES}, got {mode!r}")
        if step_rule not in FRL_STEP_RULES:
            raise ValueError(f"step_rule must be one of {FRL_STEP_RULES}, got {step_rule!r}")
        if update_at not in FRL_UPDATE_AT:
            raise ValueError(f"update_at must be one of {FRL_UPDATE_AT}, got {update_at!r}")
        self.step_rule, self.update_at = step_rule, update_at
        base_eps = float(base_eps)
        if not (math.isfinite(base_eps) and base_eps > 0.0):
            raise ValueError(f"base_eps must be a finite number > 0, got {base_eps}")
        for name, value in (
            ("delta0", delta0),
            ("delta1", delta1),
            ("alpha1", alpha1),
            ("alpha2", alpha2),
        ):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 < lim < 1.0:
            raise ValueError(f"lim must lie in (0, 1) so every class weight stays > 0, got {lim}")
        if eps_cap is not None and not (math.isfinite(eps_cap) and eps_cap > 0.0):
            raise ValueError(f"eps_cap must be None or a finite number > 0, got {eps_cap}")
        low, high = (float(v) for v in eps_clamp)
        if not 0.0 < low <= high:
            raise ValueError(f"eps_clamp must be (low, high) with 0 < low <= high, got {eps_clamp}")
        self.base_eps = base_eps
        self.mode = mode
        self.delta0, self.delta1 = float(delta0), float(delta1)
        self.alpha1, self.alpha2 = float(alpha1), float(alpha2)
        self.lim = float(lim)
        self.eps_cap = None if eps_cap is None else float(eps_cap)
        self.eps_clamp = (low, high)
        self.lambda0 = np.zeros(self.num_classes)
        self.lambda1 = np.zeros(self.num_classes)
        self.lambda2 = np.zeros(self.num_classes)
        self.updates = 0

    @property
    def reweights(self) -> bool:
        return self.mode in ("rw", "rwrm")

    @property
    def remargins(self) -> bool:
        return self.mode in ("rm", "rwrm")

    def class_eps(self, y: torch.Tensor):
        """Per-sample budgets eps_{y_i} (B,) under Remargin; the scalar base budget otherwise.

        Args:
            y: the batch's labels (B,) int64.

        Returns:
            A float32 tensor (B,) on ``y``'s device (modes ``"rm"``, ``"rwrm"``), else the float
            ``base_eps``.
        """
        if not self.remargins:
            return self.base_eps
        return super().class_eps(y)

    def class_step(self, y: torch.Tensor):
        """The attack step: the base step ("fixed"), or, as the FRL reference code steps its
        Remargin attack, the largest per-class budget in the batch / 4 ("batch-max").

        Args:
            y: the batch's labels (B,) int64.

        Returns:
            The float ``base_step`` (``"fixed"``, or no Remargin), else a float32 tensor (B,) on
            ``y``'s device, every entry ``max_i eps_{y_i} / 4``.
        """
        if self.step_rule == "fixed" or not self.remargins:
            return self.base_step
        eps = super().class_eps(y)
        return (eps.amax() / 4).expand_as(eps)

    @property
    def updates_before_training(self) -> bool:
        """The reference code's order (``update_at="epoch-start"``): validate and update at the
        start of every epoch, so the first epoch already trains with updated multipliers. The
        update at the start of epoch e+1 is the one after epoch e, so only this first one is
        extra (:meth:`deep.trainer.Trainer.update_before_training`)."""
        return self.update_at == "epoch-start"

    def epoch_end(self, end: EpochEnd) -> dict:
        """One multiplier update from the epoch's validation errors; the rates decay with the
        learning rate (FRL §5.1). Logs the multipliers and next epoch's weights and budgets.

        Args:
            end: the :class:`EpochEnd`; ``validation`` (class-wise clean / PGD-20 accuracies),
                ``lr`` and ``base_lr`` are read. Without validation nothing is updated.

        Returns:
            ``{"frl": {"lambda0", "lambda1", "lambda2", "next_nat_weights",
            "next_bndy_weights", "next_class_eps"}}`` (lists of C floats) for ``metrics.jsonl``,
            or ``{}`` without validation.
        """
        if end.validation is None:
            return {}
        errors = frl_errors(end.validation)
        self.update_from_validation(
            errors["standard"]["per_class"],
            errors["boundary"]["per_class"],
            rate_scale=end.lr / end.base_lr,
        )
        return {
            "frl": {
                "lambda0": self.lambda0.tolist(),
                "lambda1": self.lambda1.tolist(),
                "lambda2": self.lambda2.tolist(),
                "next_nat_weights": self.nat_weight_values().tolist(),
                "next_bndy_weights": self.bndy_weight_values().tolist(),
                "next_class_eps": self.eps_values().tolist(),
            }
        }

    def update_from_validation(self, std_err, bndy_err, *, rate_scale: float = 1.0) -> None:
        """One multiplier update from class-wise validation errors (FRL Algorithm 1 lines 7-8,
        Eq. 11; :func:`theory.frl.update_multipliers`); counts it in ``updates``.

        Args:
            std_err: class-wise validation standard errors, (C,) in [0, 1] (array or tensor).
            bndy_err: class-wise validation boundary errors (FRL Eq. 7: clean accuracy minus
                PGD accuracy), (C,) in [-1, 1].
            rate_scale: the factor on ``alpha1`` and ``alpha2``, finite and >= 0
                (:meth:`epoch_end` passes ``lr / base_lr``).
        """
        e = _as_error_vector(std_err, self.num_classes, "std_err", 0.0)
        b = _as_error_vector(bndy_err, self.num_classes, "bndy_err", -1.0)
        if not (math.isfinite(rate_scale) and rate_scale >= 0.0):
            raise ValueError(f"rate_scale must be a finite number >= 0, got {rate_scale}")
        self.lambda0, self.lambda1, self.lambda2 = update_multipliers(
            Multipliers(self.lambda0, self.lambda1, self.lambda2),
            e,
            b,
            mode=self.mode,
            delta0=self.delta0,
            delta1=self.delta1,
            alpha1=self.alpha1 * rate_scale,
            alpha2=self.alpha2 * rate_scale,
            lim=self.lim,
            rule=self.rule,
        )
        self.updates += 1
        self._values_changed()

    # -- host-side values (float64 numpy) ----------------------------------------------------------
    def nat_weight_values(self) -> np.ndarray:
        """w0: class weights of the natural CE term.

        Returns:
            float64 (C,) summing to 1: ``1/C + lambda0_c - mean(lambda0)`` (under
            ``rule="paper"`` negative weights set to 0 and the rest rescaled).
        """
        return multiplier_weights(self.lambda0, self.rule)

    def bndy_weight_values(self) -> np.ndarray:
        """w1: class weights of the boundary (KL) term.

        Returns:
            float64 (C,) summing to 1: ``1/C + lambda1_c - mean(lambda1)`` (under
            ``rule="paper"`` negative weights set to 0 and the rest rescaled).
        """
        return multiplier_weights(self.lambda1, self.rule)

    def eps_values(self) -> np.ndarray:
        """Per-class budgets eps_c = base_eps clamp(exp(2 lambda2_c), low, high), capped (C);
        base_eps exp(lambda2_c), capped, under ``rule="paper"``.

        Returns:
            The budgets, float64 (C,), in the units of ``base_eps``.
        """
        return remargin_eps(
            self.base_eps, self.lambda2, clamp=self.eps_clamp, cap=self.eps_cap, rule=self.rule
        )

    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            A dict with ``"kind": "frl"``, the settings (``num_classes``, ``base_eps``, ``mode``,
            ``delta0``, ``delta1``, ``alpha1``, ``alpha2``, ``lim``, ``eps_cap``, ``eps_clamp``,
            ``step_rule``, ``update_at``, ``rule``), the multipliers ``lambda0``, ``lambda1``,
            ``lambda2`` (lists of C floats) and the number of ``updates``.
        """
        return {
            "kind": "frl",
            "num_classes": self.num_classes,
            "base_eps": self.base_eps,
            "mode": self.mode,
            "delta0": self.delta0,
            "delta1": self.delta1,
            "alpha1": self.alpha1,
            "alpha2": self.alpha2,
            "lim": self.lim,
            "eps_cap": self.eps_cap,
            "eps_clamp": list(self.eps_clamp),
            "lambda0": self.lambda0.tolist(),
            "lambda1": self.lambda1.tolist(),
            "lambda2": self.lambda2.tolist(),
            "updates": self.updates,
            "step_rule": self.step_rule,
            "update_at": self.update_at,
            "rule": self.rule,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; states without ``step_rule``, ``update_at`` or ``rule``
        (older checkpoints) get ``"fixed"``, ``"epoch-end"`` and ``"official"``.

        Args:
            state: an ``"frl"`` state dict with this weighting's ``num_classes``; ValueError
                otherwise.
        """
        check_kind(state, "frl")
        self.step_rule = state.get("step_rule", "fixed")  # states written before these options
        self.update_at = state.get("update_at", "epoch-end")
        self.rule = check_rule(state.get("rule", "official"))
        if state["num_classes"] != self.num_classes:
            raise ValueError(
                f"state_dict has num_classes={state['num_classes']}, this weighting "
                f"{self.num_classes}"
            )
        self.base_eps = float(state["base_eps"])
        self.mode = state["mode"]
        self.delta0, self.delta1 = float(state["delta0"]), float(state["delta1"])
        self.alpha1, self.alpha2 = float(state["alpha1"]), float(state["alpha2"])
        self.lim = float(state["lim"])
        self.eps_cap = state["eps_cap"]
        self.eps_clamp = tuple(state["eps_clamp"])
        for key in ("lambda0", "lambda1", "lambda2"):
            values = np.asarray(state[key], dtype=np.float64)
            if values.shape != (self.num_classes,):
                raise ValueError(f"state_dict {key} must have length {self.num_classes}")
            setattr(self, key, values)
        self.updates = int(state["updates"])
        self._values_changed()


class BaselineReweight(UniformWeighting):
    """FRL's "Baseline Reweight" (after Agarwal et al. 2018; FRL §5.1): upweight the worst class.

    After each validation, the class with the highest robust error (std_err + bndy_err) gets weight
    ``boost`` times that of every other class; weights are normalised to sum 1 (mean 1/C):
    w_k = boost / (C - 1 + boost), w_c = 1 / (C - 1 + boost) otherwise. The choice is recomputed
    from each epoch's validation errors (not accumulated); before the first update weights are
    uniform. Ties go to the lowest class index.

    Args:
        num_classes: the number of classes C.
        boost: the worst class's weight relative to each other class, >= 1.
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
    """

    kind = "baseline"
    weights_change = True

    def __init__(
        self,
        num_classes: int,
        *,
        boost: float = 2.0,
        base_eps: float | None = None,
        base_step: float | None = None,
    ) -> None:
        super().__init__(_check_num_classes(num_classes), base_eps=base_eps, base_step=base_step)
        if not (math.isfinite(boost) and boost >= 1.0):
            raise ValueError(f"boost must be a finite number >= 1, got {boost}")
        self.boost = float(boost)
        self.worst_class: int | None = None

    def weight_values(self) -> np.ndarray:
        """The class weights in force, on the host.

        Returns:
            float64 (C,) summing to 1: ``boost / (C - 1 + boost)`` for the worst class,
            ``1 / (C - 1 + boost)`` for the others; uniform before the first update.
        """
        weights = np.ones(self.num_classes)
        if self.worst_class is not None:
            weights[self.worst_class] = self.boost
        return weights / weights.sum()

    def update_from_validation(self, std_err, bndy_err, **_: object) -> None:
        """Pick the class with the highest validation robust error ``std_err + bndy_err`` (the
        lowest index on ties) as the one to upweight.

        Args:
            std_err: class-wise validation standard errors, (C,) in [0, 1].
            bndy_err: class-wise validation boundary errors (FRL Eq. 7), (C,) in [-1, 1].
        """
        e = _as_error_vector(std_err, self.num_classes, "std_err", 0.0)
        b = _as_error_vector(bndy_err, self.num_classes, "bndy_err", -1.0)
        self.worst_class = int(np.argmax(e + b))
        self._values_changed()

    def epoch_end(self, end: EpochEnd) -> dict:
        """Picks the class with the highest validation robust error for the next epoch.

        Args:
            end: the :class:`EpochEnd`; its ``validation`` accuracies are read (without them
                nothing changes).

        Returns:
            ``{"baseline_worst_class": the class index}`` for ``metrics.jsonl``, or ``{}``
            without validation.
        """
        if end.validation is None:
            return {}
        errors = frl_errors(end.validation)
        self.update_from_validation(
            errors["standard"]["per_class"], errors["boundary"]["per_class"]
        )
        return {"baseline_worst_class": self.worst_class}

    def batch_weights(self, margins, y: torch.Tensor, epoch: int = 0, **_: object) -> torch.Tensor:
        """Class weights (C,) on ``y``'s device (copied to the device once per update).

        Args:
            margins: unused (the weights come from the last validation).
            y: the batch's labels (B,); only their device is used.
            epoch: unused.

        Returns:
            :meth:`weight_values` as a float32 tensor (C,).
        """
        return self._on_device("w", self.weight_values, y.device)

    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            ``{"kind": "baseline", "num_classes", "base_eps", "boost", "worst_class"}``, the
            last class upweighted (None before the first validation).
        """
        return {
            "kind": "baseline",
            "num_classes": self.num_classes,
            "base_eps": self.base_eps,
            "boost": self.boost,
            "worst_class": self.worst_class,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (settings and the class upweighted).

        Args:
            state: a ``"baseline"`` state dict; ValueError for another kind.
        """
        check_kind(state, "baseline")
        self.num_classes = int(state["num_classes"])
        self.base_eps = state["base_eps"]
        self.boost = float(state["boost"])
        self.worst_class = state["worst_class"]
        self._values_changed()


def _check_class_ratios(values, num_classes: int, name: str) -> np.ndarray:
    arr = np.ones(num_classes) if values is None else np.asarray(values, dtype=np.float64)
    if arr.shape != (num_classes,):
        raise ValueError(f"{name} must have length {num_classes} (one per class), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0):
        raise ValueError(f"{name} must be finite numbers > 0, got {arr.tolist()}")
    return arr


class FixedClassWeighting(_TwoTermWeighting):
    """Fixed per-class boundary-error weights and attack budgets (FRL §5.3, Figure 3).

    FRL's two-term loss (:func:`frl_trades_loss`) with uniform natural weights
    w0_c = 1/C and boundary (KL) weights in the given ratios, renormalised to sum 1:
    w1_c = r_c / sum_j r_j. Only the ratios matter, since the loss normalises each term by its
    weights: ``boundary_ratios`` [1, ..., r, ..., 1] weighs one class's boundary error r times
    the others'. The training attack uses eps_c = s_c * base_eps (``eps_scales``). Nothing is
    updated from validation errors: the weights and budgets hold from the first batch on.

    Args:
        num_classes: the number of classes C.
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
        boundary_ratios: per-class weights of the boundary term (None: all 1).
        eps_scales: per-class budget factors (None: all 1).
    """

    kind = "fixed-class"

    def __init__(
        self,
        num_classes: int,
        base_eps: float,
        *,
        base_step: float | None = None,
        boundary_ratios: Sequence[float] | None = None,
        eps_scales: Sequence[float] | None = None,
    ) -> None:
        super().__init__(_check_num_classes(num_classes), base_eps=base_eps, base_step=base_step)
        base_eps = float(base_eps)
        if not (math.isfinite(base_eps) and base_eps > 0.0):
            raise ValueError(f"base_eps must be a finite number > 0, got {base_eps}")
        self.base_eps = base_eps
        self.boundary_ratios = _check_class_ratios(
            boundary_ratios, self.num_classes, "boundary_ratios"
        )
        self.eps_scales = _check_class_ratios(eps_scales, self.num_classes, "eps_scales")

    # -- host-side values (float64 numpy) ----------------------------------------------------------
    def nat_weight_values(self) -> np.ndarray:
        """w0: uniform weights of the natural CE term.

        Returns:
            float64 (C,), every entry 1/C.
        """
        return np.full(self.num_classes, 1.0 / self.num_classes)

    def bndy_weight_values(self) -> np.ndarray:
        """w1: the boundary ratios normalised to sum 1.

        Returns:
            float64 (C,): ``r_c / sum_j r_j``.
        """
        return self.boundary_ratios / self.boundary_ratios.sum()

    def eps_values(self) -> np.ndarray:
        """Per-class budgets eps_c = s_c * base_eps.

        Returns:
            float64 (C,), in the units of ``base_eps``.
        """
        return self.eps_scales * self.base_eps

    def epoch_end(self, end: EpochEnd) -> dict:
        """Logs the (fixed) boundary weights; nothing is updated.

        Args:
            end: the :class:`EpochEnd` (unused).

        Returns:
            ``{"bndy_weights": w1 as a list of C floats}`` for ``metrics.jsonl``.
        """
        return {"bndy_weights": self.bndy_weight_values().tolist()}

    def class_eps(self, y: torch.Tensor):
        """Per-sample budgets eps_{y_i} (B,) on ``y``'s device; the scalar base budget when no
        class is scaled.

        Args:
            y: the batch's labels (B,) int64.

        Returns:
            A float32 tensor (B,), or the float ``base_eps`` when every ``eps_scales`` is 1.
        """
        if np.all(self.eps_scales == 1.0):
            return self.base_eps
        return super().class_eps(y)

    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            ``{"kind": "fixed-class", "num_classes", "base_eps", "boundary_ratios",
            "eps_scales"}``, the ratios as lists of C floats; nothing changes during training.
        """
        return {
            "kind": "fixed-class",
            "num_classes": self.num_classes,
            "base_eps": self.base_eps,
            "boundary_ratios": self.boundary_ratios.tolist(),
            "eps_scales": self.eps_scales.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (budget, boundary ratios, budget factors).

        Args:
            state: a ``"fixed-class"`` state dict with this weighting's ``num_classes``;
                ValueError otherwise.
        """
        check_kind(state, "fixed-class")
        if state["num_classes"] != self.num_classes:
            raise ValueError(
                f"state_dict has num_classes={state['num_classes']}, this weighting "
                f"{self.num_classes}"
            )
        self.base_eps = float(state["base_eps"])
        self.boundary_ratios = _check_class_ratios(
            state["boundary_ratios"], self.num_classes, "boundary_ratios"
        )
        self.eps_scales = _check_class_ratios(state["eps_scales"], self.num_classes, "eps_scales")
        self._values_changed()


def frl_from_config(cfg: dict, preset, num_classes: int, eps: float, step_size: float):
    """FRL of a run's configuration (``--frl-*``); per-class eps capped at 2x eps by default.

    Args:
        cfg: the resolved configuration.
        preset: the run's preset (its FRL mode).
        num_classes: the number of classes.
        eps: the data set's budget.
        step_size: the data set's attack step.

    Returns:
        The :class:`FRLWeighting`.
    """
    cap = cfg["frl_eps_cap"] if cfg["frl_eps_cap"] is not None else 2.0 * eps
    return FRLWeighting(
        num_classes,
        eps,
        mode=preset.frl_mode,
        delta0=cfg["frl_delta"],
        delta1=cfg["frl_delta"],
        alpha1=cfg["frl_alpha1"],
        alpha2=cfg["frl_alpha2"],
        lim=cfg["frl_lim"],
        eps_cap=cap,
        base_step=step_size,
        step_rule=cfg.get("frl_step_rule", "fixed"),
        update_at=cfg.get("frl_update_at", "epoch-end"),
        rule=cfg.get("frl_rule", "official"),
    )


def baseline_from_config(cfg: dict, num_classes: int, eps: float, step_size: float):
    """Baseline Reweight of a run's configuration (``--baseline-boost``).

    Args:
        cfg: the resolved configuration (:func:`deep.config.resolve_config`).
        num_classes: the number of classes.
        eps: the data set's budget.
        step_size: the data set's attack step.

    Returns:
        The :class:`BaselineReweight`.
    """
    return BaselineReweight(
        num_classes, boost=cfg["baseline_boost"], base_eps=eps, base_step=step_size
    )


def fixed_class_from_config(
    cfg: dict, classes: Sequence[str], eps: float, step_size: float, ratio_vector
):
    """Fixed class weights of a run's configuration (``--class-boundary-weight`` /
    ``--class-eps-scale``, parsed into per-class ratios by ``ratio_vector``).

    Args:
        cfg: the resolved configuration.
        classes: the class names.
        eps: the data set's budget.
        step_size: the data set's attack step.
        ratio_vector: parses ``CLASS=RATIO`` options into per-class ratios.

    Returns:
        The :class:`FixedClassWeighting`.
    """
    return FixedClassWeighting(
        len(classes),
        eps,
        base_step=step_size,
        boundary_ratios=ratio_vector(
            cfg.get("class_boundary_weight"), classes, "--class-boundary-weight"
        ),
        eps_scales=ratio_vector(cfg.get("class_eps_scale"), classes, "--class-eps-scale"),
    )
