"""WAT: Worst-class Adversarial Training (Li & Liu, AAAI 2023).

Class weights by exponential weights (Hedge) over C + 1 "experts": one per class and one for the
average. After each epoch, on the validation split (TRADES attack, eval mode), the cost of class
c is its mean ``CE + beta KL`` and entry C is the mean over all samples; the costs are summed over
epochs (S) and ``w = (C + 1) softmax(eta S)`` (:func:`wat_weights`, written with log-sum-exp so it
stays finite for any cumulative cost; the reference code's ``C exp(eta S) / sum exp(eta S)``
overflows and differs by the constant C / (C + 1)). The training loss is
``(1/B) sum_i (w_{y_i} + w_C) (CE_i + beta KL_i)`` (:func:`wat_loss`); the new weights apply from
the next epoch. With w = 1 in the first epoch that loss is twice TRADES, as in the reference code.

Unlike the reference code: class means use the real class counts (not N / C), and the weights and
the cost history are saved in checkpoints (an interrupted run resumes exactly).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deep.attacks import trades_attack
from deep.methods.base import (
    EpochEnd,
    TrainBatch,
    UniformWeighting,
    check_kind,
    check_positive,
    validation_class_sums,
)
from deep.objectives import kl_clean_adv, trades_parts

__all__ = ["WATMethod", "from_config", "wat_costs", "wat_loss", "wat_weights"]


def wat_weights(cumulative_cost, eta: float) -> np.ndarray:
    """``(C + 1) softmax(eta S)`` over the C + 1 entries of S, in log-sum-exp form (float64).

    Args:
        cumulative_cost: S, the summed costs (C + 1,).
        eta: the exponential-weights rate.

    Returns:
        The weights, float64 (C + 1,), summing to C + 1.
    """
    z = eta * np.asarray(cumulative_cost, dtype=np.float64)
    z = z - z.max()
    e = np.exp(z)
    return len(z) * e / e.sum()


def wat_costs(ce_sums, kl_sums, counts, beta: float) -> np.ndarray:
    """The epoch's costs (C + 1,): per class mean ``CE + beta KL``, then the overall mean.

    Args:
        ce_sums: per-class sums of the cross-entropy (C,).
        kl_sums: per-class sums of the KL term (C,).
        counts: per-class counts (C,).
        beta: TRADES's beta.

    Returns:
        float64 (C + 1,).
    """
    ce_sums, kl_sums = np.asarray(ce_sums, np.float64), np.asarray(kl_sums, np.float64)
    counts = np.asarray(counts, np.float64)
    per_class = (ce_sums + beta * kl_sums) / np.maximum(counts, 1.0)
    overall = (ce_sums.sum() + beta * kl_sums.sum()) / max(counts.sum(), 1.0)
    return np.append(per_class, overall)


def wat_loss(
    ce_i: torch.Tensor, kl_i: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, beta: float
) -> torch.Tensor:
    """``(1/B) sum_i (w_{y_i} + w_C) (CE_i + beta KL_i)``, weights (C + 1,).

    Args:
        ce_i: per-sample clean cross-entropy (B,).
        kl_i: per-sample KL(p_clean || p_adv) (B,).
        y: labels (B,).
        weights: the C + 1 weights.
        beta: TRADES's beta.

    Returns:
        The loss, a scalar tensor.
    """
    w = weights.to(device=ce_i.device, dtype=ce_i.dtype)
    return ((w[y] + w[-1]) * (ce_i + beta * kl_i)).mean()


class WATMethod(UniformWeighting):
    """WAT's class weights (C + 1 entries) and cumulative validation costs, on TRADES.

    Args:
        num_classes: the number of classes C.
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
        eta: the exponential-weights rate.
        beta: TRADES's beta.
    """

    kind = "wat"

    def __init__(
        self,
        num_classes: int,
        base_eps: float,
        base_step: float,
        *,
        eta: float = 0.1,
        beta: float = 6.0,
    ) -> None:
        super().__init__(num_classes, base_eps=base_eps, base_step=base_step)
        self.eta = check_positive(eta, "eta", allow_zero=True)
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.weights = np.ones(self.num_classes + 1)
        self.cumulative_cost = np.zeros(self.num_classes + 1)
        self.updates = 0

    def _weights_on(self, device) -> torch.Tensor:
        return self._on_device("w", lambda: self.weights, device)

    def loss(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """WAT's loss ``(1/B) sum_i (w_{y_i} + w_C) (CE_i + beta KL_i)`` (:func:`wat_loss`).

        Args:
            batch: the step's :class:`TrainBatch` (clean and TRADES-adversarial logits, labels).

        Returns:
            ``(loss, w)``: the scalar loss and, for the log, each class's effective weight
            ``w_c + w_C`` normalised to sum 1, float32 (C,).
        """
        ce_i, kl_i = trades_parts(batch.logits_adv, batch.logits_clean, batch.y)
        w = self._weights_on(batch.y.device)
        effective = w[:-1] + w[-1]
        return wat_loss(ce_i, kl_i, batch.y, w, self.beta), effective / effective.sum()

    def validation_sums(self, end: EpochEnd) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class sums of CE and KL under the TRADES attack on the validation split, and counts.

        The attack is the run's (``end.eps``, ``end.step_size``, ``end.attack_steps`` steps,
        ``end.norm``) on the model in eval mode; CE is that of the clean logits, KL is
        KL(p_clean || p_adv).

        Args:
            end: the :class:`EpochEnd` (model, validation split, attack settings, processes).

        Returns:
            ``(ce_sums, kl_sums, counts)``, float64 (C,) each, summed over processes.
        """
        model = end.model

        def ce_kl(x, y, gen):
            x_adv = trades_attack(
                model, x, eps=end.eps, step_size=end.step_size, steps=end.attack_steps,
                generator=gen, norm=end.norm,
            )  # fmt: skip
            with torch.no_grad():
                clean, adv = model(x).float(), model(x_adv).float()
                ce = F.cross_entropy(clean, y, reduction="none")
                return torch.stack([ce, kl_clean_adv(clean, adv)], dim=1)

        sums, counts = validation_class_sums(end, ce_kl, self.num_classes, width=2, stream=11)
        return sums[0], sums[1], counts

    def epoch_end(self, end: EpochEnd) -> dict:
        """One exponential-weights update from the epoch's validation costs: S += the costs
        (:func:`wat_costs`), ``w = (C + 1) softmax(eta S)``, used from the next epoch.

        Args:
            end: the :class:`EpochEnd`; without a validation split nothing changes.

        Returns:
            ``{"wat": {"val_cost", "next_weights"}}`` (lists of C + 1 floats) for
            ``metrics.jsonl``, or ``{}`` without a validation split.
        """
        if end.val is None or not len(end.val):
            return {}
        ce, kl, counts = self.validation_sums(end)
        cost = wat_costs(ce, kl, counts, self.beta)
        self.cumulative_cost = self.cumulative_cost + cost
        self.weights = wat_weights(self.cumulative_cost, self.eta)
        self.updates += 1
        self._values_changed()
        return {"wat": {"val_cost": cost.tolist(), "next_weights": self.weights.tolist()}}

    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            ``{"kind": "wat", "num_classes", "weights", "cumulative_cost", "updates"}``: the
            C + 1 weights in force and the summed validation costs S (lists of floats), and
            the number of updates.
        """
        return {
            "kind": "wat",
            "num_classes": self.num_classes,
            "weights": self.weights.tolist(),
            "cumulative_cost": self.cumulative_cost.tolist(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict` (weights, cumulative costs, update count).

        Args:
            state: a ``"wat"`` state dict with this method's ``num_classes``; ValueError
                otherwise.
            device: unused (the state is host values; accepted like CFA's and DAFA's).
        """
        check_kind(state, "wat")
        if state["num_classes"] != self.num_classes:
            raise ValueError(
                f"state_dict has {state['num_classes']} classes, not {self.num_classes}"
            )
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.cumulative_cost = np.asarray(state["cumulative_cost"], dtype=np.float64)
        self.updates = int(state["updates"])
        self._values_changed()


def from_config(cfg: dict, num_classes: int, eps: float, step_size: float) -> WATMethod:
    """WAT of a run's configuration (``--wat-eta``, ``--beta``).

    Args:
        cfg: the resolved configuration (:func:`deep.config.resolve_config`).
        num_classes: the number of classes.
        eps: the data set's budget.
        step_size: the data set's attack step.

    Returns:
        The :class:`WATMethod`.
    """
    return WATMethod(num_classes, eps, step_size, eta=cfg["wat_eta"], beta=cfg["beta"])
