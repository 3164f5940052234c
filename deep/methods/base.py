"""The interface every training method implements, and uniform weights (plain AT / TRADES / MART).

The training loop (:mod:`deep.trainer`) never asks which method it runs; it calls these hooks:

==========================  ======================================================================
``class_eps(y)``            per-sample attack budget (float or (B,) tensor): FRL Remargin, CFA's
                            calibrated eps, DAFA's class-scaled budget
``class_step(y)``           per-sample attack step (DAFA scales it with the budget)
``loss(batch)``             ``(loss, class weights for the log)`` from the training forward: the
                            weighted per-sample loss (FAAL), two-term losses (FRL, DAFA, WAT) or a
                            per-class mix of the TRADES terms (CFA)
``observe(batch)``          training statistics after the step (CFA's class accuracy, DAFA's class
                            probabilities), summed over processes
``epoch_end(end)``          end-of-epoch update from those statistics or the validation split;
                            returns entries for ``metrics.jsonl``
``averaged_state(name)``    averaged model weights (CFA's ``"ema"`` and ``"fawa"``), or None
``state_dict()``            everything carried across batches and epochs (exact resume)
==========================  ======================================================================

Class attributes say what the loop must provide: ``weights_change`` (log per-step class weights
to ``class_weights.csv``) and ``averaged_model_names`` (checkpoints of averaged models). Which
methods need a validation split is a property of the preset (``deep.presets``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deep.objectives import per_sample_loss
from deep.weighting import _check_num_classes, weighted_mean_loss

__all__ = [
    "EpochEnd",
    "ModelAverage",
    "TrainBatch",
    "UniformWeighting",
    "check_kind",
    "classwise_sums",
    "validation_class_sums",
]


@dataclass
class TrainBatch:
    """What the loop hands a method after the training forward of one batch.

    ``logits_adv`` / ``logits_clean`` are the train-mode float32 logits (None where the objective
    needs none); ``objective`` and ``beta`` are the preset's (``deep.objectives``).
    """

    x: torch.Tensor
    y: torch.Tensor
    logits_adv: torch.Tensor | None
    logits_clean: torch.Tensor | None
    epoch: int
    objective: str
    beta: float


@dataclass
class EpochEnd:
    """What the loop offers a method at the end of epoch ``epoch`` (0-based).

    ``validation`` holds the loop's class-wise clean / PGD-20 accuracies on the validation split
    (None without one); ``val`` is that split. ``ctx`` is the ``deep.distributed`` context
    (statistics must end equal on every rank). ``attack_steps``, ``eps``, ``step_size`` and
    ``norm`` (``"linf"`` or ``"l2"``) are the run's training-attack settings.
    """

    epoch: int
    lr: float
    base_lr: float
    model: nn.Module
    validation: Mapping[str, Any] | None
    val: Any
    ctx: Any
    seed: int
    eval_batch_size: int
    eps: float
    step_size: float
    attack_steps: int
    norm: str = "linf"


def check_kind(state: dict, kind: str) -> None:
    """ValueError unless ``state`` is a state dict of a method of this ``kind``.

    Args:
        state: a method's ``state_dict()``.
        kind: the expected kind.
    """
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state_dict is not a {kind!r} weighting state (kind={found!r})")


def classwise_sums(
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    split,
    num_classes: int,
    ctx,
    *,
    width: int,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class sums of per-sample values over ``split``, shape (K, C), and class counts (C,), float64.

    ``per_sample(x, y) -> (B, K)`` with ``K = width``. Under ``torchrun`` each process takes its
    per-class shard (``deep.distributed.shard_per_class``) and the sums are added over processes,
    so every rank gets the same totals (rank 0 does all the work when a class has fewer samples
    than ranks).

    Args:
        per_sample: ``(x, y) -> (B, K)`` values.
        split: the images (an :class:`deep.data.ImageSplit`).
        num_classes: the number of classes C.
        ctx: the process group (:class:`deep.distributed.DistContext`).
        width: K.
        batch_size: images per batch.
        device: where to run.

    Returns:
        ``(sums, counts)``: float64 tensors (K, C) and (C,).
    """
    from deep import distributed as dd
    from deep.data import BatchLoader

    shard = dd.shard_per_class(split, num_classes, ctx)
    if shard is None:  # a class smaller than the number of ranks: rank 0 takes the whole split
        shard = split if ctx.is_main else type(split)(x=split.x[:0], y=split.y[:0])
    packed = torch.zeros(width + 1, num_classes, dtype=torch.float64, device=device)
    if len(shard):
        for x, y in BatchLoader(shard, batch_size, device=device, shuffle=False):
            values = per_sample(x, y).detach().double()
            packed[:width].index_add_(1, y, values.T)
            packed[width] += torch.bincount(y, minlength=num_classes).double()
    dd.all_reduce_sum_(packed, ctx)
    return packed[:width], packed[width]


def validation_class_sums(
    end: EpochEnd,
    per_sample: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
    num_classes: int,
    *,
    width: int,
    stream: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`classwise_sums` of ``per_sample(x, y, generator)`` over the validation split with
    ``end.model`` in eval mode (mode restored after), as float64 numpy arrays (K, C) and (C,).

    The attack generator is seeded from the run's seed, the epoch, the rank and ``stream`` (one
    stream per use), independent of the training streams: a resumed run draws the same starts.

    Args:
        end: the epoch's end (model, validation split, seed, epoch, process group).
        per_sample: ``(x, y, generator) -> (B, K)`` values.
        num_classes: the number of classes C.
        width: K.
        stream: which random stream of the epoch to use.

    Returns:
        ``(sums, counts)``: float64 numpy arrays (K, C) and (C,).
    """
    model = end.model
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(end.seed * 7919 + end.epoch * 31 + end.ctx.rank + stream)
    was_training = model.training
    model.eval()
    try:
        sums, counts = classwise_sums(
            lambda x, y: per_sample(x, y, gen), end.val, num_classes, end.ctx, width=width,
            batch_size=end.eval_batch_size, device=device,
        )  # fmt: skip
    finally:
        model.train(was_training)
    return sums.cpu().numpy(), counts.cpu().numpy()


class ModelAverage:
    """An exponential moving average of a model's whole state dict (parameters and buffers).

    ``update(model, decay)``: the first call copies the model, later ones do
    ``avg <- decay * avg + (1 - decay) * model`` on floating-point entries and copy the others
    (e.g. BatchNorm's ``num_batches_tracked``). CFA's EMA and FAWA (Wei et al. 2023, Sec. 4.3).
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None
        self.updates = 0

    def update(self, model: nn.Module, decay: float) -> None:
        """Fold the model's current state into the average (a copy on the first call).

        Args:
            model: the model being trained; its ``state_dict()`` entries are read, not changed.
            decay: the average's weight, in [0, 1] (CFA: the EMA decay, or FAWA's).
        """
        current = model.state_dict()
        if self.state is not None:  # e.g. loaded on the CPU from a checkpoint
            self.state = {k: v.to(current[k].device) for k, v in self.state.items()}
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
        else:
            for key, value in current.items():
                avg = self.state[key]
                if avg.is_floating_point():
                    avg.mul_(decay).add_(value.detach().to(avg.dtype), alpha=1.0 - decay)
                else:
                    avg.copy_(value.detach())
        self.updates += 1

    def state_dict(self) -> dict:
        """The average, for a checkpoint.

        Returns:
            ``{"state": the averaged state dict with its tensors on the CPU (None before the
            first update), "updates": the number of updates}``.
        """
        state = None if self.state is None else {k: v.cpu() for k, v in self.state.items()}
        return {"state": state, "updates": self.updates}

    def load_state_dict(self, saved: dict, device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict` (the averaged tensors and the update count).

        Args:
            saved: a :meth:`state_dict` of a ``ModelAverage``.
            device: where to put the averaged tensors (:meth:`update` moves them to the model's
                device anyway).
        """
        state = saved["state"]
        self.state = None if state is None else {k: v.to(device) for k, v in state.items()}
        self.updates = int(saved["updates"])


class UniformWeighting:
    """w_c = 1/C: ordinary (unweighted) adversarial training, and the default of every hook.

    ``num_classes`` may be given here or to :meth:`batch_weights`; ``base_eps`` / ``base_step``
    are what :meth:`class_eps` / :meth:`class_step` return.

    Every method of the package subclasses it and overrides the hooks it needs; the training loop
    (``deep.trainer``) calls only these hooks, never asks which method it runs.

    Args:
        num_classes: the number of classes C (or None, then given to :meth:`batch_weights`).
        base_eps: the data set's training budget.
        base_step: the data set's attack step.
    """

    kind = "uniform"
    weights_change = False
    averaged_model_names: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        base_eps: float | None = None,
        base_step: float | None = None,
    ) -> None:
        self.num_classes = None if num_classes is None else _check_num_classes(num_classes)
        self.base_eps = base_eps
        self.base_step = base_step
        self._device_values: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _on_device(self, key: str, values: Callable[[], Any], device) -> torch.Tensor:
        """``values()`` (per-class host values) as a float32 tensor on ``device``, computed and
        copied once until :meth:`_values_changed` (so a training step never copies them)."""
        cache_key = (key, torch.device(device))
        if cache_key not in self._device_values:
            self._device_values[cache_key] = torch.as_tensor(
                values(), dtype=torch.float32, device=device
            )
        return self._device_values[cache_key]

    def _values_changed(self) -> None:
        """Forget the device copies of :meth:`_on_device` (call whenever the values change)."""
        self._device_values.clear()

    def _classes(self, num_classes: int | None) -> int:
        if num_classes is not None:
            return _check_num_classes(num_classes)
        if self.num_classes is None:
            raise ValueError("num_classes must be given to the weighting or to batch_weights")
        return self.num_classes

    def _uniform(self, num_classes: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((num_classes,), 1.0 / num_classes, device=like.device)

    # -- per batch ---------------------------------------------------------------------------------
    def batch_weights(
        self,
        margins: torch.Tensor | None,
        y: torch.Tensor,
        epoch: int = 0,
        *,
        num_classes: int | None = None,
    ) -> torch.Tensor:
        """Uniform weights (C,) on ``y``'s device.

        Args:
            margins: the batch's per-sample statistic (unused here), (B,).
            y: labels (B,).
            epoch: the 0-based epoch.
            num_classes: C, unless given to the constructor.

        Returns:
            The class weights, a float tensor (C,) that carries no gradient.
        """
        return self._uniform(self._classes(num_classes), y)

    def statistic_of(self, batch: TrainBatch) -> torch.Tensor | None:
        """The per-sample statistic :meth:`batch_weights` reads (FAAL's margins); None here.

        Args:
            batch: the step's :class:`TrainBatch`.

        Returns:
            A (B,) tensor, or None.
        """
        return None

    def loss(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``((C/B) sum_i w_{y_i} l_i, w)`` with the objective's per-sample loss (FAAL Alg. 1
        line 14; the plain mean for uniform weights).

        Args:
            batch: the step's :class:`TrainBatch` (inputs, labels, logits, objective).

        Returns:
            ``(loss, w)``: the scalar loss to back-propagate and the class weights it used.
        """
        loss_i = per_sample_loss(
            batch.objective, batch.logits_adv, batch.logits_clean, batch.y, beta=batch.beta
        )
        weights = self.batch_weights(self.statistic_of(batch), batch.y, batch.epoch)
        return weighted_mean_loss(loss_i, batch.y, weights), weights

    def observe(self, batch: TrainBatch) -> None:
        """Training statistics after the step (none here).

        Args:
            batch: the step's :class:`TrainBatch`.
        """

    def class_eps(self, y: torch.Tensor):
        """The scalar base budget (every sample has the same eps).

        Args:
            y: the batch's labels (B,).

        Returns:
            The budget: a float here, a (B,) tensor for methods with per-class budgets.
        """
        return self.base_eps

    def class_step(self, y: torch.Tensor):
        """The scalar base step size.

        Args:
            y: the batch's labels (B,).

        Returns:
            The step: a float here, a (B,) tensor for methods with per-class steps.
        """
        return self.base_step

    def eps_values(self) -> Sequence[float]:
        """Per-class training budgets in force.

        Returns:
            C floats.
        """
        return np.full(self._classes(None), self.base_eps, dtype=np.float64)

    # -- per epoch ---------------------------------------------------------------------------------
    def update_from_validation(self, std_err, bndy_err, **_: object) -> None:
        """No-op: uniform weights do not depend on validation errors.

        Args:
            std_err: class-wise validation standard errors (C,).
            bndy_err: class-wise validation boundary errors (C,).
        """

    def epoch_end(self, end: EpochEnd) -> dict:
        """End-of-epoch update.

        Args:
            end: the :class:`EpochEnd` (model, validation split, epoch, learning rate, processes).

        Returns:
            Entries for the epoch's ``metrics.jsonl`` record (empty here).
        """
        return {}

    def averaged_state(self, name: str) -> dict | None:
        """Weights of the averaged model ``name`` (see ``averaged_model_names``), None if unset.

        Args:
            name: e.g. ``"ema"`` or ``"fawa"`` (CFA).

        Returns:
            A state dict, or None.
        """
        raise KeyError(f"{self.kind} keeps no averaged model {name!r}")

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The method's state for a checkpoint (its ``"weighting"`` entry).

        Returns:
            ``{"kind": "uniform", "num_classes", "base_eps"}``: uniform weights carry nothing
            else across batches.
        """
        return {"kind": "uniform", "num_classes": self.num_classes, "base_eps": self.base_eps}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (``num_classes`` and ``base_eps``).

        Args:
            state: a ``"uniform"`` state dict; ValueError for another kind.
        """
        check_kind(state, "uniform")
        self.num_classes = state["num_classes"]
        self.base_eps = state["base_eps"]


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless finite and > 0 (>= 0)."""
    value = float(value)
    ok = math.isfinite(value) and (value >= 0.0 if allow_zero else value > 0.0)
    if not ok:
        raise ValueError(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value}"
        )
    return value
