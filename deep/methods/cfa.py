"""CFA: Class-wise Calibrated Fair Adversarial Training (Wei et al., CVPR 2023).

The paper's three parts, each in one function or class here:

* CCM (class-wise calibrated margin, Sec. 4.1): from epoch ``begin`` on, class k is attacked with
  ``eps_k = (lambda1 + A_k) eps`` (:func:`calibrated_eps`), A_k the class's robust accuracy on the
  previous epoch's training adversarial examples (train-mode logits, real class counts);
  the step size stays the base one.
* CCR (class-wise calibrated regularisation, Sec. 4.2; TRADES only): the KL weight of class k is
  ``b_k / (1 + b_k)`` with ``b_k = (lambda2 + A_k) beta``, the CE weight ``1 - that``
  (:func:`calibrated_kl_weight`); before ``begin`` both use beta: ``beta / (1 + beta)``.
  Loss ``(1/B) sum_i [(1 - w_{y_i}) CE_i + w_{y_i} KL_i]`` (:func:`cfa_trades_loss`).
* FAWA (fairness-aware weight averaging, Sec. 4.3): after each epoch, PGD (CE, the training eps
  and step, random start, eval mode) on the validation split; if the worst class's robust
  accuracy reaches ``threshold`` the FAWA model is updated (copied the first time, then
  ``theta_F <- d theta_F + (1 - d) theta``). An EMA model is updated every epoch the same way.

Unlike the reference code: class accuracies use the real class counts; the attack runs in eval
mode (the reference's AT mode attacks in train mode, moving BatchNorm statistics); no extra
train-mode forward after the step; checkpoints are chosen on the validation split, never the test
set; when FAWA's threshold is never reached there is no FAWA model and ``--final-checkpoint fawa``
evaluates last.pt, saying so.
"""

from __future__ import annotations

import numpy as np
import torch

from deep.attacks import pgd_attack
from deep.methods.base import (
    EpochEnd,
    ModelAverage,
    TrainBatch,
    UniformWeighting,
    check_kind,
    check_positive,
    validation_class_sums,
)
from deep.objectives import trades_parts

__all__ = [
    "CFAMethod",
    "calibrated_eps",
    "calibrated_kl_weight",
    "cfa_trades_loss",
    "default_begin",
    "default_decay",
    "default_fawa_threshold",
    "from_config",
]


def calibrated_eps(acc, eps: float, lambda1: float) -> np.ndarray:
    """CCM: ``eps_k = (lambda1 + A_k) eps`` (CFA Sec. 4.1; no clipping, as in the paper).

    Args:
        acc: class accuracies A_k (C,).
        eps: the base budget.
        lambda1: CCM's offset.

    Returns:
        The per-class budgets, float64 (C,).
    """
    return (lambda1 + np.asarray(acc, dtype=np.float64)) * eps


def calibrated_kl_weight(acc, beta: float, lambda2: float) -> np.ndarray:
    """CCR: the KL weight ``b_k / (1 + b_k)``, ``b_k = (lambda2 + A_k) beta`` (CFA Sec. 4.2).

    Args:
        acc: class accuracies A_k (C,).
        beta: TRADES's beta.
        lambda2: CCR's offset.

    Returns:
        The per-class KL weights, float64 (C,).
    """
    b = (lambda2 + np.asarray(acc, dtype=np.float64)) * beta
    return b / (1.0 + b)


def cfa_trades_loss(
    ce_i: torch.Tensor, kl_i: torch.Tensor, y: torch.Tensor, kl_weights: torch.Tensor
) -> torch.Tensor:
    """``(1/B) sum_i [(1 - w_{y_i}) CE_i + w_{y_i} KL_i]`` with per-class KL weights w (C,).

    Args:
        ce_i: per-sample clean cross-entropy (B,).
        kl_i: per-sample KL(p_clean || p_adv) (B,).
        y: labels (B,).
        kl_weights: per-class KL weights (C,).

    Returns:
        The loss, a scalar tensor.
    """
    w = kl_weights.to(device=ce_i.device, dtype=ce_i.dtype)[y]
    return ((1.0 - w) * ce_i + w * kl_i).mean()


def default_begin(epochs: int) -> int:
    """CFA's ``begin``: 10 for runs of >= 100 epochs (the paper), else ``max(1, round(epochs/20))``
    (the same 5 % of a 200-epoch run; at least one epoch of statistics first).

    Args:
        epochs: the run's epochs.

    Returns:
        The first calibrated epoch (0-based).
    """
    return 10 if epochs >= 100 else max(1, round(epochs / 20))


def default_decay(epochs: int) -> float:
    """EMA / FAWA decay per epoch: 0.88 (the paper) for runs of >= 100 epochs, else
    ``0.88 ** (100 / epochs)``: the averaging window keeps its share of the run, so a 4-epoch run
    (0.041) is not dominated by its first, least robust epochs.

    Args:
        epochs: the run's epochs.

    Returns:
        The decay per epoch.
    """
    return 0.88 ** max(1.0, 100.0 / epochs)


def default_fawa_threshold(dataset: str, trades: bool) -> float:
    """FAWA's worst-class threshold: 0.2 (AT) / 0.24 (TRADES) as in the paper (CIFAR); on
    Fashion-MNIST, whose worst class ("shirt") stays far less robust (PGD-20 about 5 % after short
    runs), 0.04 / 0.048, in the same ratio.

    Args:
        dataset: the data set's name.
        trades: whether the method is CFA-TRADES.

    Returns:
        The threshold on the worst class's validation PGD accuracy.
    """
    if dataset == "fashion-mnist":
        return 0.048 if trades else 0.04
    return 0.24 if trades else 0.2


class CFAMethod(UniformWeighting):
    """CFA on PGD-AT (``trades=False``: CCM + FAWA) or TRADES (``trades=True``: CCM + CCR + FAWA).

    ``reduce_fn`` sums the per-step class counts across processes (``deep.distributed``), so every
    rank holds the same A_k, eps_k and averaged models.

    Args:
        num_classes: the number of classes C.
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
        trades: CFA-TRADES (CCM + CCR) rather than CFA-AT (CCM).
        beta: TRADES's beta.
        lambda1: CCM's offset.
        lambda2: CCR's offset.
        begin: the first calibrated epoch (0-based).
        decay: the EMA and FAWA decay per epoch.
        fawa_threshold: FAWA averages an epoch when the worst class's validation PGD accuracy
            reaches this.
        reduce_fn: sums class counts over processes (None in one process).
    """

    kind = "cfa"
    averaged_model_names = ("ema", "fawa")

    def __init__(
        self,
        num_classes: int,
        base_eps: float,
        base_step: float,
        *,
        trades: bool,
        beta: float = 6.0,
        lambda1: float = 0.5,
        lambda2: float = 0.5,
        begin: int = 10,
        decay: float = 0.88,
        fawa_threshold: float = 0.2,
        reduce_fn=None,
    ) -> None:
        super().__init__(num_classes, base_eps=base_eps, base_step=base_step)
        self.base_eps = check_positive(base_eps, "base_eps")
        self.trades = bool(trades)
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.lambda1 = check_positive(lambda1, "lambda1", allow_zero=True)
        self.lambda2 = check_positive(lambda2, "lambda2", allow_zero=True)
        if isinstance(begin, bool) or not isinstance(begin, int) or begin < 1:
            raise ValueError(f"begin must be an integer >= 1, got {begin!r}")
        self.begin = begin
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        if not 0.0 <= fawa_threshold <= 1.0:
            raise ValueError(f"fawa_threshold must lie in [0, 1], got {fawa_threshold}")
        self.fawa_threshold = float(fawa_threshold)
        self.reduce_fn = reduce_fn
        self.acc = np.zeros(self.num_classes)  # A_k of the last finished epoch
        self.calibrated = False  # eps_k / KL weights follow A_k (from epoch `begin` on)
        self._counts: torch.Tensor | None = None  # [correct; seen] per class, this epoch
        self.ema = ModelAverage()
        self.fawa = ModelAverage()

    # -- per-class values (host, float64) ---------------------------------------------------------
    def eps_values(self) -> np.ndarray:
        """CCM's per-class training budgets in force (CFA Sec. 4.1, :func:`calibrated_eps`).

        Returns:
            float64 (C,): ``(lambda1 + A_k) eps`` once calibrated (from epoch ``begin``), the base
            budget for every class before.
        """
        if not self.calibrated:
            return np.full(self.num_classes, self.base_eps)
        return calibrated_eps(self.acc, self.base_eps, self.lambda1)

    def kl_weight_values(self) -> np.ndarray:
        """CCR's per-class KL weights in force (CFA Sec. 4.2, :func:`calibrated_kl_weight`).

        Returns:
            float64 (C,) in [0, 1): ``b_k / (1 + b_k)`` with ``b_k = (lambda2 + A_k) beta`` once
            calibrated, ``beta / (1 + beta)`` for every class before ``begin``.
        """
        acc = self.acc if self.calibrated else np.zeros(self.num_classes)
        lambda2 = self.lambda2 if self.calibrated else 1.0  # (1 + 0) beta before `begin`
        return calibrated_kl_weight(acc, self.beta, lambda2)

    # -- per batch ---------------------------------------------------------------------------------
    def class_eps(self, y: torch.Tensor):
        """CCM's per-sample budgets ``eps_{y_i} = (lambda1 + A_{y_i}) base_eps`` (CFA Sec. 4.1)
        once calibrated; the base budget before.

        Args:
            y: the batch's labels (B,) int64.

        Returns:
            A float32 tensor (B,) on ``y``'s device, or the float ``base_eps`` before ``begin``.
        """
        if not self.calibrated:
            return self.base_eps
        return self._on_device("eps", self.eps_values, y.device)[y]

    def loss(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """CFA-AT: the plain mean of the objective's loss; CFA-TRADES: :func:`cfa_trades_loss`
        with the CCR weights (:meth:`kl_weight_values`).

        Args:
            batch: the step's :class:`TrainBatch` (adversarial and, for TRADES, clean logits).

        Returns:
            ``(loss, w)``: the scalar loss and the uniform class weights (C,) for the log.
        """
        if not self.trades:
            return super().loss(batch)
        ce_i, kl_i = trades_parts(batch.logits_adv, batch.logits_clean, batch.y)
        kl_w = self._on_device("kl", self.kl_weight_values, batch.y.device)
        weights = self._uniform(self.num_classes, batch.y)
        return cfa_trades_loss(ce_i, kl_i, batch.y, kl_w), weights

    def observe(self, batch: TrainBatch) -> None:
        """Counts correct training adversarial predictions per class (for A_k), summed over
        processes by ``reduce_fn`` and added to the epoch's counts.

        Args:
            batch: the step's :class:`TrainBatch`; its train-mode adversarial logits (B, C) and
                labels (B,) are read.
        """
        y = batch.y
        counts = torch.zeros(2, self.num_classes, dtype=torch.float64, device=y.device)
        correct = (batch.logits_adv.detach().argmax(1) == y).double()
        counts[0].index_add_(0, y, correct)
        counts[1].index_add_(0, y, torch.ones_like(correct))
        if self.reduce_fn is not None:
            reduced = self.reduce_fn(counts)
            counts = reduced if isinstance(reduced, torch.Tensor) else counts
        self._counts = counts if self._counts is None else self._counts.to(counts.device) + counts

    # -- per epoch ---------------------------------------------------------------------------------
    def fawa_class_accuracy(self, end: EpochEnd) -> np.ndarray:
        """Class-wise PGD accuracy of the current model on the validation split (eval mode):
        FAWA's criterion (CFA Sec. 4.3). The attack is the run's training attack (CE, ``end.eps``,
        ``end.step_size``, ``end.attack_steps`` steps, random start, ``end.norm``).

        Args:
            end: the :class:`EpochEnd` (model, validation split, attack settings, processes).

        Returns:
            float64 (C,) in [0, 1]: the fraction of each class's validation images still
            classified correctly under the attack (0 for a class without images).
        """
        model = end.model

        def correct(x, y, gen):
            x_adv = pgd_attack(
                model, x, y, eps=end.eps, step_size=end.step_size, steps=end.attack_steps,
                generator=gen, norm=end.norm,
            )  # fmt: skip
            with torch.no_grad():
                return (model(x_adv).argmax(1) == y).double()[:, None]

        hits, counts = validation_class_sums(end, correct, self.num_classes, width=1, stream=5)
        return hits[0] / np.maximum(counts, 1.0)

    def epoch_end(self, end: EpochEnd) -> dict:
        """A_k from the epoch's counts; calibration from ``begin``; EMA; FAWA on validation.

        Sets A_k to the epoch's class-wise training robust accuracy (classes not seen keep the
        previous value), turns calibration on once ``end.epoch + 1 >= begin``, updates the EMA
        model, and the FAWA model when the worst validation class reaches ``fawa_threshold``.

        Args:
            end: the :class:`EpochEnd` (epoch, model, validation split, attack settings).

        Returns:
            ``{"cfa": {"train_robust_acc", "fawa_val_robust_acc" (with a validation split),
            "fawa_updates", "next_class_eps", "next_kl_weights" (TRADES)}}``, lists of C floats
            and a count, for ``metrics.jsonl``.
        """
        if self._counts is not None:
            correct, seen = self._counts.cpu().numpy()
            self.acc = np.where(seen > 0, correct / np.maximum(seen, 1.0), self.acc)
        self._counts = None
        self.calibrated = end.epoch + 1 >= self.begin
        self._values_changed()
        self.ema.update(end.model, self.decay)
        record = {"train_robust_acc": self.acc.tolist()}
        if end.val is not None and len(end.val):
            val_acc = self.fawa_class_accuracy(end)
            if float(val_acc.min()) >= self.fawa_threshold:
                self.fawa.update(end.model, self.decay)
            record["fawa_val_robust_acc"] = val_acc.tolist()
        record["fawa_updates"] = self.fawa.updates
        record["next_class_eps"] = self.eps_values().tolist()
        if self.trades:
            record["next_kl_weights"] = self.kl_weight_values().tolist()
        return {"cfa": record}

    def averaged_state(self, name: str) -> dict | None:
        """The EMA or FAWA model's weights.

        Args:
            name: ``"ema"`` or ``"fawa"``; KeyError otherwise.

        Returns:
            The averaged state dict, or None before its first update (FAWA: never, when the
            threshold is never reached).
        """
        if name == "ema":
            return self.ema.state
        if name == "fawa":
            return self.fawa.state
        return super().averaged_state(name)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            ``{"kind": "cfa", "num_classes", "trades", "acc"`` (A_k, C floats), ``"calibrated",
            "counts"`` (the unfinished epoch's (2, C) float64 [correct; seen] on the CPU, or
            None), ``"ema", "fawa"}`` (the averaged models, :meth:`ModelAverage.state_dict`).
        """
        return {
            "kind": "cfa",
            "num_classes": self.num_classes,
            "trades": self.trades,
            "acc": self.acc.tolist(),
            "calibrated": self.calibrated,
            "counts": None if self._counts is None else self._counts.cpu(),
            "ema": self.ema.state_dict(),
            "fawa": self.fawa.state_dict(),
        }

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`.

        Args:
            state: a ``"cfa"`` state dict of a run with the same classes and base method (AT or
                TRADES); ValueError otherwise.
            device: where to put the running counts and the averaged models.
        """
        check_kind(state, "cfa")
        if state["num_classes"] != self.num_classes or state["trades"] != self.trades:
            raise ValueError("state_dict is from a CFA run with other classes or base method")
        self.acc = np.asarray(state["acc"], dtype=np.float64)
        self.calibrated = bool(state["calibrated"])
        counts = state["counts"]
        self._counts = None if counts is None else counts.to(device)
        self.ema.load_state_dict(state["ema"], device)
        self.fawa.load_state_dict(state["fawa"], device)
        self._values_changed()


def from_config(cfg: dict, preset, num_classes: int, eps: float, step_size: float, reduce_fn):
    """CFA of a run's configuration (``--cfa-*``, ``--fawa-threshold``).

    Args:
        cfg: the resolved configuration.
        preset: the run's preset (AT or TRADES mode).
        num_classes: the number of classes.
        eps: the data set's budget.
        step_size: the data set's attack step.
        reduce_fn: sums class statistics over processes (None in one process).

    Returns:
        The :class:`CFAMethod`.
    """
    trades = preset.objective == "trades"
    threshold = cfg.get("fawa_threshold")
    if threshold is None:
        threshold = default_fawa_threshold(cfg["dataset"], trades)
    begin = cfg.get("cfa_begin")
    return CFAMethod(
        num_classes,
        eps,
        step_size,
        trades=trades,
        beta=cfg["beta"],
        lambda1=cfg["cfa_lambda1"],
        lambda2=cfg["cfa_lambda2"],
        begin=default_begin(cfg["epochs"]) if begin is None else begin,
        decay=default_decay(cfg["epochs"]) if cfg["cfa_decay"] is None else cfg["cfa_decay"],
        fawa_threshold=threshold,
        reduce_fn=reduce_fn,
    )
