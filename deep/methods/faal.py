"""FAAL: class-wise distributionally adversarial weights (FAAL, CVPR 2024, supp. Eq. 1-2, Alg. 1).

One module for the paper's update rule: per batch, the class means of a per-sample statistic of the
adversarial logits (the softmax CW margin of Algorithm 1 line 11, or the cross-entropy of supp.
C.2 / Fig. 1) are the losses of ``max_w sum_c w_c l_c s.t. KL(u || w) <= tau``, solved exactly by
:func:`theory.dro.solve_kl_dro`; the loss is ``(C/B) sum_i w_{y_i} l_i`` (line 14).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from deep.methods.base import EpochEnd, TrainBatch, UniformWeighting, check_kind
from deep.weighting import FAAL_STATISTICS, class_mean_statistic, faal_statistic
from theory.dro import solve_kl_dro

__all__ = ["FAALWeighting", "from_config"]


def _check_tau(tau, name: str = "tau") -> float:
    tau = float(tau)
    if not (math.isfinite(tau) and tau >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {tau}")
    return tau


class FAALWeighting(UniformWeighting):
    """FAAL class-wise distributionally adversarial weights (FAAL supp. Eq. 2, Algorithm 1 l. 9-14).

    For each batch: the class means of a per-sample statistic (``statistic``, see
    :data:`FAAL_STATISTICS`: the softmax CW margin by default, absent classes -1; or the
    cross-entropy, absent classes 0; computed by :func:`faal_statistic`) are the losses l_c of
    ``max_w sum_c w_c l_c  s.t.  KL(u || w) <= tau`` solved exactly on device by
    :func:`theory.dro.solve_kl_dro` (no host synchronisation).

    ``tau_schedule`` is a list of ``(epoch, tau)`` milestones: from that epoch (0-based) on, that
    tau is used (e.g. ``[(75, 0.025), (90, 0.05)]``, FAAL supp. C.7); before the first milestone
    ``tau``.
    Before ``start_epoch`` the weights are uniform. ``count_weighted=True`` solves the reference
    code's objective with class sums n_c l_c. ``reduce_fn`` all-reduces class sums/counts
    across processes (see :func:`class_mean_statistic`).

    The weights of every batch are averaged on device per epoch; :attr:`weight_history` holds one
    list of C floats per finished epoch (epochs in :attr:`history_epochs`), read from the device
    once per epoch.

    Args:
        tau: the KL budget (FAAL: 0.5 on CIFAR-10, 0.05 on CIFAR-100), >= 0.
        tau_schedule: ``[(epoch, tau), ...]`` milestones replacing ``tau`` from those epochs.
        start_epoch: uniform weights before this epoch.
        count_weighted: solve the reference code's objective sum_c n_c l_c instead of Eq. 1.
        num_classes: the number of classes C.
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
        direction: the KL direction, ``"forward"`` (FAAL) or ``"reverse"``.
        statistic: the class statistic, ``"margin"`` (Algorithm 1) or ``"ce"`` (supp. Fig. 1).
        reduce_fn: all-reduces class sums and counts over processes (None in one process).
    """

    kind = "faal"
    weights_change = True

    def __init__(
        self,
        tau: float = 0.5,
        tau_schedule: Sequence[tuple[int, float]] | None = None,
        start_epoch: int = 0,
        count_weighted: bool = False,
        *,
        num_classes: int | None = None,
        base_eps: float | None = None,
        base_step: float | None = None,
        direction: str = "forward",
        statistic: str = "margin",
        reduce_fn: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
    ) -> None:
        super().__init__(num_classes, base_eps=base_eps, base_step=base_step)
        self.tau = _check_tau(tau)
        self.statistic = self._check_statistic(statistic)
        self.tau_schedule = self._check_schedule(tau_schedule)
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be an integer >= 0, got {start_epoch!r}")
        self.start_epoch = start_epoch
        self.count_weighted = bool(count_weighted)
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        self.direction = direction
        self.reduce_fn = reduce_fn
        self.weight_history: list[list[float]] = []
        self.history_epochs: list[int] = []
        self._epoch: int | None = None
        self._sum: torch.Tensor | None = None
        self._batches = 0

    @staticmethod
    def _check_statistic(statistic) -> str:
        if statistic not in FAAL_STATISTICS:
            raise ValueError(
                f"statistic must be one of {tuple(FAAL_STATISTICS)}, got {statistic!r}"
            )
        return statistic

    @staticmethod
    def _check_schedule(schedule) -> list[tuple[int, float]]:
        if schedule is None:
            return []
        out: list[tuple[int, float]] = []
        for item in schedule:
            if len(item) != 2:
                raise ValueError(f"tau_schedule entries must be (epoch, tau) pairs, got {item!r}")
            epoch, tau = item
            if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
                raise ValueError(f"tau_schedule epochs must be integers >= 0, got {epoch!r}")
            out.append((int(epoch), _check_tau(tau, "tau_schedule tau")))
        epochs = [e for e, _ in out]
        if epochs != sorted(set(epochs)):
            raise ValueError(f"tau_schedule epochs must be strictly increasing, got {epochs}")
        return out

    def tau_at(self, epoch: int) -> float:
        """The tau in force at ``epoch`` (0 before ``start_epoch``: uniform weights).

        Args:
            epoch: the 0-based epoch.

        Returns:
            The KL budget: 0 before ``start_epoch``, else the value of the last ``tau_schedule``
            milestone at or before ``epoch`` (``tau`` before the first).
        """
        if epoch < self.start_epoch:
            return 0.0
        tau = self.tau
        for milestone, value in self.tau_schedule:
            if epoch >= milestone:
                tau = value
        return tau

    def batch_weights(
        self,
        margins: torch.Tensor,
        y: torch.Tensor,
        epoch: int = 0,
        *,
        num_classes: int | None = None,
    ) -> torch.Tensor:
        """Worst-case class weights (C,) for this batch, on ``y``'s device, float32 (FAAL supp.
        Eq. 2, Algorithm 1 lines 10-13); also adds them to the epoch's running mean.

        Args:
            margins: the per-sample statistic of :attr:`statistic` (:func:`faal_statistic`), (B,)
                float: softmax CW margins in [-1, 1] or cross-entropies >= 0.
            y: labels (B,) int64.
            epoch: the 0-based epoch (selects tau, :meth:`tau_at`; a new epoch closes the last
                one's history).
            num_classes: C, unless given to the constructor.

        Returns:
            The class weights, float32 (C,), on the simplex (>= 0, summing to 1); uniform where
            tau is 0.
        """
        num_classes = self._classes(num_classes)
        tau = self.tau_at(epoch)
        if tau == 0.0:
            weights = self._uniform(num_classes, y)
        else:
            stats = class_mean_statistic(
                margins,
                y,
                num_classes,
                absent_value=FAAL_STATISTICS[self.statistic],
                count_weighted=self.count_weighted,
                reduce_fn=self.reduce_fn,
            )
            weights = solve_kl_dro(stats.double(), tau, direction=self.direction).float()
        self._record(weights, epoch)
        return weights

    def statistic_of(self, batch: TrainBatch) -> torch.Tensor:
        """FAAL Alg. 1 lines 9-11: the per-sample statistic of the adversarial logits (supp. C.2:
        margin or CE; the clean logits for natural training).

        Args:
            batch: the step's :class:`TrainBatch` (its logits and labels are read).

        Returns:
            The detached statistic (B,): softmax CW margins in [-1, 1] or cross-entropies.
        """
        logits = batch.logits_adv if batch.logits_adv is not None else batch.logits_clean
        return faal_statistic(self.statistic, logits, batch.y)

    def epoch_end(self, end: EpochEnd) -> dict:
        """Closes the epoch's weight history (:meth:`end_epoch`); logs the tau in force.

        Args:
            end: the :class:`EpochEnd`; only its ``epoch`` is read.

        Returns:
            ``{"tau": the tau in force at this epoch}`` for ``metrics.jsonl``.
        """
        self.end_epoch()
        return {"tau": self.tau_at(end.epoch)}

    # -- history -----------------------------------------------------------------------------------
    def _record(self, weights: torch.Tensor, epoch: int) -> None:
        if self._epoch is not None and epoch != self._epoch:
            self.end_epoch()
        if self._sum is None:
            self._epoch = epoch
            self._sum = torch.zeros_like(weights)
            self._batches = 0
        self._sum += weights.detach()
        self._batches += 1

    def end_epoch(self) -> list[float] | None:
        """Close the running epoch: append its mean weights to the history (one host read).

        Returns:
            The epoch's mean class weights (C floats), or None when no batch was weighted since
            the last call.
        """
        if self._sum is None or self._batches == 0:
            return None
        mean = (self._sum / self._batches).tolist()
        self.weight_history.append(mean)
        self.history_epochs.append(int(self._epoch))
        self._sum, self._epoch, self._batches = None, None, 0
        return mean

    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            A dict with ``"kind": "faal"``, the settings (``num_classes``, ``base_eps``, ``tau``,
            ``tau_schedule``, ``start_epoch``, ``count_weighted``, ``direction``,
            ``statistic``), the finished epochs' mean weights (``weight_history``,
            ``history_epochs``) and ``running``: the unfinished epoch's ``{"epoch", "sum" (C,)
            CPU tensor, "batches"}`` or None, so a run resumed mid-epoch logs the same means.
        """
        running = None
        if self._sum is not None:
            running = {
                "epoch": self._epoch,
                "sum": self._sum.detach().cpu(),
                "batches": self._batches,
            }
        return {
            "kind": "faal",
            "num_classes": self.num_classes,
            "base_eps": self.base_eps,
            "tau": self.tau,
            "tau_schedule": [list(m) for m in self.tau_schedule],
            "start_epoch": self.start_epoch,
            "count_weighted": self.count_weighted,
            "direction": self.direction,
            "statistic": self.statistic,
            "weight_history": [list(w) for w in self.weight_history],
            "history_epochs": list(self.history_epochs),
            "running": running,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a state without ``statistic`` (older checkpoints) uses the
        margin.

        Args:
            state: a ``"faal"`` state dict; ValueError for another kind.
        """
        check_kind(state, "faal")
        self.num_classes = state["num_classes"]
        self.base_eps = state["base_eps"]
        self.tau = _check_tau(state["tau"])
        self.tau_schedule = self._check_schedule(state["tau_schedule"])
        self.start_epoch = int(state["start_epoch"])
        self.count_weighted = bool(state["count_weighted"])
        self.direction = state["direction"]
        # checkpoints written before the CE statistic existed used the margin
        self.statistic = self._check_statistic(state.get("statistic", "margin"))
        self.weight_history = [list(w) for w in state["weight_history"]]
        self.history_epochs = list(state["history_epochs"])
        running = state.get("running")
        if running is None:
            self._sum, self._epoch, self._batches = None, None, 0
        else:
            self._sum = running["sum"].clone()
            self._epoch = running["epoch"]
            self._batches = int(running["batches"])


def from_config(cfg: dict, num_classes: int, eps: float, step_size: float, reduce_fn):
    """The FAAL weighting of a run's configuration (``--tau``, ``--tau-schedule``, ...).

    Args:
        cfg: the resolved configuration (:func:`deep.config.resolve_config`).
        num_classes: the number of classes.
        eps: the data set's budget.
        step_size: the data set's attack step.
        reduce_fn: sums class statistics over processes (None in one process).

    Returns:
        The :class:`FAALWeighting`.
    """
    return FAALWeighting(
        tau=cfg["tau"],
        tau_schedule=cfg["tau_schedule"],
        start_epoch=cfg["faal_start_epoch"],
        count_weighted=cfg["count_weighted"],
        num_classes=num_classes,
        base_eps=eps,
        base_step=step_size,
        statistic=cfg.get("faal_statistic", "margin"),
        reduce_fn=reduce_fn,
    )
