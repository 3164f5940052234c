"""DAFA: Distance-Aware Fair Adversarial Training (Lee et al., ICLR 2024).

During the last warm-up epoch the softmax of every training sample's adversarial logits (the
train-mode training forward) is gathered; P[i] is the mean probability vector of class i. Then,
once, for every ordered pair i != j (:func:`dafa_weights`, the paper's rule):
if P[i,i] < P[j,j] (class i is harder) ``w_i += lambda P[i,j] P[j,j]``, else
``w_i -= lambda P[j,i] P[i,i]`` (what class j gained from i), so the weights keep summing to C.
From then on class y is attacked with budget ``w_y eps`` *and* step ``w_y step``, and the weight
multiplies only the clean CE term: ``(1/B) sum_i w_{y_i} CE_i + beta (1/B) sum_i KL_i``
(TRADES, :func:`dafa_trades_loss`); on PGD-AT the CE of the adversarial example.

Held as C x C class sums (not the reference's N x C buffer: the class means are the same), summed
over processes at every step, and saved in checkpoints (exact resume mid-warm-up-epoch).

Unlike the reference code: the PGD variant has no second, unscaled step (which undid the
per-class budget); weights are clipped at ``min_weight`` > 0 (a weight <= 0 would give a class no
budget or a negative loss; the clipped classes are logged); the weights are saved in checkpoints
(the reference's resume dropped them, silently turning DAFA off); no Nesterov flag inversion. The
rule above is the paper's, and the reference code's since its commit of 2024-09-02 (earlier versions
decremented with ``P[i,j] P[j,j]`` in both branches).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deep.methods.base import (
    EpochEnd,
    TrainBatch,
    UniformWeighting,
    check_kind,
    check_positive,
)
from deep.objectives import cross_entropy, kl_clean_adv

__all__ = ["DAFAMethod", "dafa_trades_loss", "dafa_weights", "default_warmup", "from_config"]


def dafa_weights(class_probs, lam: float) -> np.ndarray:
    """DAFA's class weights from the class-mean probability matrix P (C, C), float64.

    ``w_i = 1 + lam sum_{j != i} ( [P_ii < P_jj] P_ij P_jj - [P_ii >= P_jj] P_ji P_ii )``.

    Args:
        class_probs: P, the class-mean probability matrix (C, C).
        lam: the shift's strength lambda.

    Returns:
        The weights, float64 (C,), not clipped.
    """
    p = np.asarray(class_probs, dtype=np.float64)
    d = np.diag(p)
    harder = d[:, None] < d[None, :]
    gain = p * d[None, :]  # P_ij P_jj
    give = p.T * d[:, None]  # P_ji P_ii
    delta = np.where(harder, gain, -give)
    np.fill_diagonal(delta, 0.0)
    return 1.0 + lam * delta.sum(axis=1)


def dafa_trades_loss(
    logits_adv: torch.Tensor,
    logits_clean: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """``(1/B) sum_i w_{y_i} CE(f(x_i), y_i) + beta (1/B) sum_i KL_i``: w on the clean CE only.

    Args:
        logits_adv: logits of the adversarial inputs (B, C).
        logits_clean: logits of the clean inputs (B, C).
        y: labels (B,).
        weights: the class weights (C,).
        beta: TRADES's beta.

    Returns:
        The loss, a scalar tensor.
    """
    w = weights.to(device=logits_clean.device, dtype=logits_clean.dtype)[y]
    ce = cross_entropy(logits_clean, y)
    return (w * ce).mean() + beta * kl_clean_adv(logits_clean, logits_adv).mean()


def default_warmup(epochs: int) -> int:
    """DAFA's warm-up: 70 of 110 epochs in the paper; ``round(70 / 110 * epochs)`` epochs here,
    at least 1 and at most ``epochs - 1`` (so the weights are used at all).

    Args:
        epochs: the run's epochs.

    Returns:
        The warm-up's length in epochs.
    """
    return min(max(1, round(epochs * 70 / 110)), max(1, epochs - 1))


class DAFAMethod(UniformWeighting):
    """DAFA's class weights (all 1 during ``warmup`` epochs), budgets and steps.

    ``trades``: TRADES (weight on the clean CE) or PGD-AT (weighted CE of the adversarial
    example). ``reduce_fn`` sums the per-step class probability sums across processes.

    Args:
        num_classes: the number of classes C.
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
        trades: DAFA-TRADES rather than DAFA-AT.
        beta: TRADES's beta.
        lam: the shift's strength lambda.
        warmup: epochs with all weights 1.
        min_weight: the floor the weights are clipped at.
        reduce_fn: sums class probability sums over processes (None in one process).
    """

    kind = "dafa"

    def __init__(
        self,
        num_classes: int,
        base_eps: float,
        base_step: float,
        *,
        trades: bool,
        beta: float = 6.0,
        lam: float = 1.0,
        warmup: int = 70,
        min_weight: float = 0.05,
        reduce_fn=None,
    ) -> None:
        super().__init__(num_classes, base_eps=base_eps, base_step=base_step)
        self.base_eps = check_positive(base_eps, "base_eps")
        self.base_step = check_positive(base_step, "base_step")
        self.trades = bool(trades)
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.lam = check_positive(lam, "lambda", allow_zero=True)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be an integer >= 1, got {warmup!r}")
        self.warmup = warmup
        self.min_weight = check_positive(min_weight, "min_weight")
        self.reduce_fn = reduce_fn
        self.weights = np.ones(self.num_classes)
        self.computed = False
        self._sums: torch.Tensor | None = None  # (C + 1, C): probability sums; last row counts

    def _on(self, device) -> torch.Tensor:
        return self._on_device("w", lambda: self.weights, device)

    # -- per batch ---------------------------------------------------------------------------------
    def class_eps(self, y: torch.Tensor):
        """Per-sample budgets ``w_{y_i} eps`` once the weights are computed; the base budget
        during the warm-up.

        Args:
            y: the batch's labels (B,) int64.

        Returns:
            A float32 tensor (B,) on ``y``'s device, or the float ``base_eps``.
        """
        return self._on(y.device)[y] * self.base_eps if self.computed else self.base_eps

    def class_step(self, y: torch.Tensor):
        """Per-sample attack steps ``w_{y_i} step`` (scaled like the budget) once the weights are
        computed; the base step during the warm-up.

        Args:
            y: the batch's labels (B,) int64.

        Returns:
            A float32 tensor (B,) on ``y``'s device, or the float ``base_step``.
        """
        return self._on(y.device)[y] * self.base_step if self.computed else self.base_step

    def eps_values(self) -> np.ndarray:
        """DAFA's per-class training budgets in force: ``w_y eps``, as :meth:`class_eps` gives
        them per sample.

        Returns:
            float64 (C,): the class weights times the base budget (the base budget during the
            warm-up, when every weight is 1).
        """
        return self.weights * self.base_eps

    def loss(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """TRADES: :func:`dafa_trades_loss` (w on the clean CE); PGD-AT: ``(1/B) sum_i w_{y_i}
        CE(f(x'_i), y_i)`` of the adversarial examples. All weights are 1 during the warm-up.

        Args:
            batch: the step's :class:`TrainBatch` (adversarial and, for TRADES, clean logits).

        Returns:
            ``(loss, w / sum(w))``: the scalar loss and the normalised class weights (C,).
        """
        w = self._on(batch.y.device)
        if self.trades:
            loss = dafa_trades_loss(batch.logits_adv, batch.logits_clean, batch.y, w, batch.beta)
        else:
            loss = (w[batch.y] * cross_entropy(batch.logits_adv, batch.y)).mean()
        return loss, w / w.sum()

    def observe(self, batch: TrainBatch) -> None:
        """In the last warm-up epoch: class sums of the adversarial softmax and class counts,
        summed over processes by ``reduce_fn``; nothing in other epochs.

        Args:
            batch: the step's :class:`TrainBatch`; its train-mode adversarial logits (B, C),
                labels (B,) and epoch are read.
        """
        if self.computed or batch.epoch != self.warmup - 1:
            return
        y = batch.y
        p = F.softmax(batch.logits_adv.detach().double(), dim=1)
        sums = torch.zeros(self.num_classes + 1, self.num_classes, dtype=torch.float64,
                           device=y.device)  # fmt: skip
        sums[:-1].index_add_(0, y, p)
        sums[-1] = torch.bincount(y, minlength=self.num_classes).double()
        if self.reduce_fn is not None:
            reduced = self.reduce_fn(sums)
            sums = reduced if isinstance(reduced, torch.Tensor) else sums
        self._sums = sums if self._sums is None else self._sums.to(sums.device) + sums

    # -- per epoch ---------------------------------------------------------------------------------
    def epoch_end(self, end: EpochEnd) -> dict:
        """After the last warm-up epoch: the weights, once (clipped at ``min_weight``).

        P is the class-mean softmax matrix (C, C) of the epoch's sums, the weights
        :func:`dafa_weights` of P; they hold for the rest of the run.

        Args:
            end: the :class:`EpochEnd`; only its ``epoch`` is read.

        Returns:
            ``{"dafa": {"class_weights": C floats, "clipped_classes": the class indices raised
            to min_weight}}`` at that epoch for ``metrics.jsonl``, ``{}`` at every other.
        """
        if self.computed or end.epoch != self.warmup - 1 or self._sums is None:
            return {}
        sums = self._sums.cpu().numpy()
        counts = sums[-1]
        probs = sums[:-1] / np.maximum(counts, 1.0)[:, None]
        raw = dafa_weights(probs, self.lam)
        self.weights = np.maximum(raw, self.min_weight)
        self.computed = True
        self._sums = None
        self._values_changed()
        clipped = [int(c) for c in np.flatnonzero(raw < self.min_weight)]
        return {"dafa": {"class_weights": self.weights.tolist(), "clipped_classes": clipped}}

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            ``{"kind": "dafa", "num_classes", "weights"`` (C floats), ``"computed"`` (whether
            the weights are set), ``"sums"}``: the last warm-up epoch's running (C + 1, C)
            float64 probability sums and counts on the CPU, or None.
        """
        return {
            "kind": "dafa",
            "num_classes": self.num_classes,
            "weights": self.weights.tolist(),
            "computed": self.computed,
            "sums": None if self._sums is None else self._sums.cpu(),
        }

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`.

        Args:
            state: a ``"dafa"`` state dict with this method's ``num_classes``; ValueError
                otherwise.
            device: where to put the running probability sums.
        """
        check_kind(state, "dafa")
        if state["num_classes"] != self.num_classes:
            raise ValueError(
                f"state_dict has {state['num_classes']} classes, not {self.num_classes}"
            )
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.computed = bool(state["computed"])
        sums = state["sums"]
        self._sums = None if sums is None else sums.to(device)
        self._values_changed()


def default_lambda(dataset: str) -> float:
    """DAFA's lambda: 1.5 on CIFAR-100 (the paper), 1.0 elsewhere (CIFAR-10's value)."""
    return 1.5 if dataset == "cifar100" else 1.0


def from_config(cfg: dict, preset, num_classes: int, eps: float, step_size: float, reduce_fn):
    """DAFA of a run's configuration (``--dafa-*``).

    Args:
        cfg: the resolved configuration.
        preset: the run's preset (AT or TRADES mode).
        num_classes: the number of classes.
        eps: the data set's budget.
        step_size: the data set's attack step.
        reduce_fn: sums class statistics over processes (None in one process).

    Returns:
        The :class:`DAFAMethod`.
    """
    lam, warmup = cfg.get("dafa_lambda"), cfg.get("dafa_warmup")
    return DAFAMethod(
        num_classes,
        eps,
        step_size,
        trades=preset.objective == "trades",
        beta=cfg["beta"],
        lam=default_lambda(cfg["dataset"]) if lam is None else lam,
        warmup=default_warmup(cfg["epochs"]) if warmup is None else warmup,
        min_weight=cfg["dafa_min_weight"],
        reduce_fn=reduce_fn,
    )
