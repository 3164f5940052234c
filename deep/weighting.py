"""Class weights for adversarial training: uniform, FAAL (KL-DRO), FRL (Reweight, Remargin).

Also the baseline of FRL §5.1 that upweights the worst class.

A weighting turns per-sample losses l_i into one scalar through class weights w_c (DESIGN "a method
is a combination"). The common interface:

- ``batch_weights(margins, y, epoch) -> (C,)`` class weights for this batch, on ``y``'s device;
- ``update_from_validation(std_err, bndy_err)`` once per epoch (FRL, baseline; a no-op otherwise);
- ``class_eps(y)`` per-sample attack budget (FRL Remargin, fixed class scales), else the scalar
  base budget;
- ``state_dict()`` / ``load_state_dict()`` so a run continues exactly from a checkpoint.

Sources: FAAL supp. Eq. 1-2 and Algorithm 1 lines 9-14 (SPEC §2), with the class statistic of
supp. C.2 / Figure 1 (CW margin or cross-entropy); FRL Algorithm 1 and Eq. 11 as the FRL reference
code runs them (SPEC §4); fixed per-class boundary weights and budgets of FRL §5.3 (Figure 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deep.objectives import softmax_margin
from theory.dro import solve_kl_dro
from theory.frl import (
    FRL_MODES,
    Multipliers,
    multiplier_weights,
    remargin_eps,
    update_multipliers,
)

WEIGHTING_NAMES = ("uniform", "faal", "frl", "baseline", "fixed-class")

#: FAAL's per-sample class statistic l_i (FAAL supp. C.2, Figure 1) and the value given to a class
#: absent from the batch: the statistic's minimum, so that the DRO gives that class the least
#: weight. "margin": the softmax CW margin max_{j!=y} p_j - p_y in [-1, 1] (Algorithm 1 line 11;
#: absent -1 as in supp. B); "ce": the cross-entropy -log p_y in [0, inf) (absent 0).
FAAL_STATISTICS: dict[str, float] = {"margin": -1.0, "ce": 0.0}


# --------------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------------


def _check_batch(values: torch.Tensor, y: torch.Tensor) -> None:
    if values.dim() != 1 or y.dim() != 1 or values.shape[0] != y.shape[0]:
        raise ValueError(
            "values and y must both have shape (B,), got "
            f"{tuple(values.shape)} and {tuple(y.shape)}"
        )


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    return int(num_classes)


def class_mean_statistic(
    values: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    absent_value: float = -1.0,
    count_weighted: bool = False,
    reduce_fn: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Per-class mean of a per-sample statistic, shape (C,) (FAAL Algorithm 1 lines 10-11).

    Class sums and counts come from ``scatter_add`` (no host synchronisation). A class absent from
    the batch gets ``absent_value`` (-1 in FAAL supp. B). With ``count_weighted=True`` the result is
    the class *sum* n_c * mean_c, absent classes 0: the objective the FAAL reference code solves
    (SPEC §2: ``sum_c n_c p_c m_c``).

    ``reduce_fn``, when given, receives the stacked (2, C) tensor ``[sums; counts]`` and must sum it
    across processes (e.g. ``torch.distributed.all_reduce``, in place, returning ``None``; or
    returning the reduced tensor), so every rank computes the same statistic.
    """
    _check_batch(values, y)
    num_classes = _check_num_classes(num_classes)
    dtype = values.dtype if values.is_floating_point() else torch.float32
    values = values.detach().to(dtype)
    stacked = torch.zeros(2, num_classes, dtype=dtype, device=values.device)
    stacked[0].scatter_add_(0, y, values)
    stacked[1].scatter_add_(0, y, torch.ones_like(values))
    if reduce_fn is not None:
        reduced = reduce_fn(stacked)
        if isinstance(reduced, torch.Tensor):
            stacked = reduced
    sums, counts = stacked[0], stacked[1]
    if count_weighted:
        return sums
    means = sums / counts.clamp_min(1.0)
    return torch.where(counts > 0, means, torch.full_like(means, absent_value))


def faal_statistic(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FAAL's per-sample class statistic (B,) of the adversarial logits (see FAAL_STATISTICS)."""
    if name == "margin":
        return softmax_margin(logits, y)
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    raise ValueError(f"statistic must be one of {tuple(FAAL_STATISTICS)}, got {name!r}")


def weighted_mean_loss(
    loss_i: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """``(C/B) sum_i w_{y_i} l_i`` (FAAL Algorithm 1 line 14); weights are detached.

    With uniform weights w_c = 1/C this is the ordinary mean of ``loss_i``.
    """
    _check_batch(loss_i, y)
    if class_weights.dim() != 1:
        raise ValueError(f"class_weights must have shape (C,), got {tuple(class_weights.shape)}")
    w = class_weights.detach().to(device=loss_i.device, dtype=loss_i.dtype)
    num_classes, batch = w.shape[0], loss_i.shape[0]
    return (w[y] * loss_i).sum() * (num_classes / batch)


def normalised_weighted_loss(
    loss_i: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (the normalisation of the FRL loss, SPEC §4).

    Weights are detached; uniform weights give the ordinary mean.
    """
    _check_batch(loss_i, y)
    w = class_weights.detach().to(device=loss_i.device, dtype=loss_i.dtype)[y]
    return (w * loss_i).sum() / w.sum()


def frl_trades_loss(
    ce_i: torch.Tensor,
    kl_i: torch.Tensor,
    y: torch.Tensor,
    nat_weights: torch.Tensor,
    bndy_weights: torch.Tensor,
    *,
    beta: float = 1.5,
) -> torch.Tensor:
    """FRL's loss (SPEC §4): ``sum w0 CE / sum w0 + beta sum w1 KL / sum w1`` over the batch.

    ``ce_i``, ``kl_i`` are the two TRADES parts (:func:`deep.objectives.trades_parts`);
    ``nat_weights`` (w0) weight the natural error, ``bndy_weights`` (w1) the boundary error.
    """
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return normalised_weighted_loss(ce_i, y, nat_weights) + beta * normalised_weighted_loss(
        kl_i, y, bndy_weights
    )


def _as_error_vector(values, num_classes: int, name: str, low: float) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (num_classes,):
        raise ValueError(f"{name} must have shape ({num_classes},), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < low) or np.any(arr > 1.0):
        raise ValueError(f"{name} must be finite errors in [{low}, 1], got {arr.tolist()}")
    return arr


# --------------------------------------------------------------------------------------------------
# weightings
# --------------------------------------------------------------------------------------------------


class UniformWeighting:
    """w_c = 1/C: ordinary (unweighted) adversarial training.

    ``num_classes`` may be given here or to :meth:`batch_weights`; ``base_eps`` is what
    :meth:`class_eps` returns.
    """

    def __init__(self, num_classes: int | None = None, *, base_eps: float | None = None) -> None:
        self.num_classes = None if num_classes is None else _check_num_classes(num_classes)
        self.base_eps = base_eps

    def _classes(self, num_classes: int | None) -> int:
        if num_classes is not None:
            return _check_num_classes(num_classes)
        if self.num_classes is None:
            raise ValueError("num_classes must be given to the weighting or to batch_weights")
        return self.num_classes

    def _uniform(self, num_classes: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((num_classes,), 1.0 / num_classes, device=like.device)

    def batch_weights(
        self,
        margins: torch.Tensor | None,
        y: torch.Tensor,
        epoch: int = 0,
        *,
        num_classes: int | None = None,
    ) -> torch.Tensor:
        """Uniform weights (C,) on ``y``'s device."""
        return self._uniform(self._classes(num_classes), y)

    def update_from_validation(self, std_err, bndy_err, **_: object) -> None:
        """No-op: uniform weights do not depend on validation errors."""

    def class_eps(self, y: torch.Tensor):
        """The scalar base budget (every sample has the same eps)."""
        return self.base_eps

    def state_dict(self) -> dict:
        return {"kind": "uniform", "num_classes": self.num_classes, "base_eps": self.base_eps}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "uniform")
        self.num_classes = state["num_classes"]
        self.base_eps = state["base_eps"]


def _check_kind(state: dict, kind: str) -> None:
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state_dict is not a {kind!r} weighting state (kind={found!r})")


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
    code's objective with class sums n_c l_c (SPEC §2). ``reduce_fn`` all-reduces class sums/counts
    across processes (see :func:`class_mean_statistic`).

    The weights of every batch are averaged on device per epoch; :attr:`weight_history` holds one
    list of C floats per finished epoch (epochs in :attr:`history_epochs`), read from the device
    once per epoch.
    """

    def __init__(
        self,
        tau: float = 0.5,
        tau_schedule: Sequence[tuple[int, float]] | None = None,
        start_epoch: int = 0,
        count_weighted: bool = False,
        *,
        num_classes: int | None = None,
        base_eps: float | None = None,
        direction: str = "forward",
        statistic: str = "margin",
        reduce_fn: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
    ) -> None:
        super().__init__(num_classes, base_eps=base_eps)
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
        """The tau in force at ``epoch`` (0 before ``start_epoch``: uniform weights)."""
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
        """Worst-case class weights (C,) for this batch, on ``y``'s device, float32.

        ``margins`` holds the per-sample statistic of :attr:`statistic` (:func:`faal_statistic`).
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
        """Close the running epoch: append its mean weights to the history (one host read)."""
        if self._sum is None or self._batches == 0:
            return None
        mean = (self._sum / self._batches).tolist()
        self.weight_history.append(mean)
        self.history_epochs.append(int(self._epoch))
        self._sum, self._epoch, self._batches = None, None, 0
        return mean

    def state_dict(self) -> dict:
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
        _check_kind(state, "faal")
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


class _TwoTermWeighting(UniformWeighting):
    """Class weights of FRL's two-term loss (SPEC §4): ``w0`` for the natural CE term, ``w1`` for
    the boundary (KL) term, and per-class budgets, all held on the host as float64 numpy arrays
    (``nat_weight_values``, ``bndy_weight_values``, ``eps_values``, given by the subclass) and
    cached on each device as float32 tensors in ``self._device_cache`` (which the subclass creates
    and clears whenever its values change)."""

    def _on(self, key: str, values: np.ndarray, device: torch.device) -> torch.Tensor:
        cache_key = (key, torch.device(device))
        if cache_key not in self._device_cache:
            self._device_cache[cache_key] = torch.as_tensor(
                values, dtype=torch.float32, device=device
            )
        return self._device_cache[cache_key]

    def batch_weights(self, margins, y: torch.Tensor, epoch: int = 0, **_: object) -> torch.Tensor:
        """w0 (C,) on ``y``'s device: the natural-error weights."""
        return self._on("w0", self.nat_weight_values(), y.device)

    def bndy_weights(self, y: torch.Tensor) -> torch.Tensor:
        """w1 (C,) on ``y``'s device: the boundary-error weights."""
        return self._on("w1", self.bndy_weight_values(), y.device)

    def class_eps(self, y: torch.Tensor) -> torch.Tensor:
        """Per-sample budgets eps_{y_i}, shape (B,), on ``y``'s device."""
        return self._on("eps", self.eps_values(), y.device)[y]

    def trades_loss(
        self, ce_i: torch.Tensor, kl_i: torch.Tensor, y: torch.Tensor, *, beta: float = 1.5
    ) -> torch.Tensor:
        """FRL's training loss ``sum w0 CE / sum w0 + beta sum w1 KL / sum w1`` (SPEC §4)."""
        return frl_trades_loss(
            ce_i, kl_i, y, self.batch_weights(None, y), self.bndy_weights(y), beta=beta
        )


class FRLWeighting(_TwoTermWeighting):
    """Fair Robust Learning multipliers (FRL Algorithm 1, Eq. 11, as its reference code runs them).

    After each epoch, from class-wise validation standard errors e_c and boundary errors b_c
    (b_c = clean acc_c - PGD acc_c), with e = mean_c e_c and b = mean_c b_c (SPEC §4):

    - gaps g0_c = e_c - e - delta0, g1_c = b_c - b - delta1;
    - Reweight ("rw", "rwrm"): lambda0 <- N(lambda0 + a1 g0), lambda1 <- N(lambda1 + 2 a1 g1),
      N = clip at 0 then rescale to sum ``lim`` if the sum exceeds it; class weights
      w_c = 1/C + lambda_c - (1/C) sum_j lambda_j (w0 from lambda0 for the natural CE term, w1 from
      lambda1 for the boundary / KL term);
    - Remargin ("rm", "rwrm"): lambda2 <- lambda2 + a2 g1 (unclipped);
      eps_c = base_eps * clamp(exp(2 lambda2_c), *eps_clamp), then min(eps_c, eps_cap).

    ``update_from_validation(..., rate_scale=s)`` multiplies a1 and a2 by s (the paper decays them
    by 0.1 every 40 epochs). The training loss is :meth:`trades_loss` (SPEC §4);
    :meth:`batch_weights` returns w0, :meth:`bndy_weights` returns w1.
    """

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
    ) -> None:
        super().__init__(_check_num_classes(num_classes), base_eps=base_eps)
        if mode not in FRL_MODES:
            raise ValueError(f"mode must be one of {FRL_MODES}, got {mode!r}")
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
        self._device_cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def reweights(self) -> bool:
        return self.mode in ("rw", "rwrm")

    @property
    def remargins(self) -> bool:
        return self.mode in ("rm", "rwrm")

    def update_from_validation(self, std_err, bndy_err, *, rate_scale: float = 1.0) -> None:
        """One multiplier update from class-wise validation errors (arrays of length C)."""
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
        )
        self.updates += 1
        self._device_cache.clear()

    # -- host-side values (float64 numpy) ----------------------------------------------------------
    def nat_weight_values(self) -> np.ndarray:
        """w0 (C,): class weights of the natural CE term."""
        return multiplier_weights(self.lambda0)

    def bndy_weight_values(self) -> np.ndarray:
        """w1 (C,): class weights of the boundary (KL) term."""
        return multiplier_weights(self.lambda1)

    def eps_values(self) -> np.ndarray:
        """Per-class budgets eps_c = base_eps clamp(exp(2 lambda2_c), low, high), capped (C,)."""
        return remargin_eps(self.base_eps, self.lambda2, clamp=self.eps_clamp, cap=self.eps_cap)

    def state_dict(self) -> dict:
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
        }

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "frl")
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
        self._device_cache.clear()


class BaselineReweight(UniformWeighting):
    """FRL's "Baseline Reweight" (after Agarwal et al. 2018; FRL §5.1): upweight the worst class.

    After each validation, the class with the highest robust error (std_err + bndy_err) gets weight
    ``boost`` times that of every other class; weights are normalised to sum 1 (mean 1/C):
    w_k = boost / (C - 1 + boost), w_c = 1 / (C - 1 + boost) otherwise. The choice is recomputed
    from each epoch's validation errors (not accumulated); before the first update weights are
    uniform. Ties go to the lowest class index.
    """

    def __init__(
        self, num_classes: int, *, boost: float = 2.0, base_eps: float | None = None
    ) -> None:
        super().__init__(_check_num_classes(num_classes), base_eps=base_eps)
        if not (math.isfinite(boost) and boost >= 1.0):
            raise ValueError(f"boost must be a finite number >= 1, got {boost}")
        self.boost = float(boost)
        self.worst_class: int | None = None
        self._device_cache: dict[torch.device, torch.Tensor] = {}

    def weight_values(self) -> np.ndarray:
        weights = np.ones(self.num_classes)
        if self.worst_class is not None:
            weights[self.worst_class] = self.boost
        return weights / weights.sum()

    def update_from_validation(self, std_err, bndy_err, **_: object) -> None:
        e = _as_error_vector(std_err, self.num_classes, "std_err", 0.0)
        b = _as_error_vector(bndy_err, self.num_classes, "bndy_err", -1.0)
        self.worst_class = int(np.argmax(e + b))
        self._device_cache.clear()

    def batch_weights(self, margins, y: torch.Tensor, epoch: int = 0, **_: object) -> torch.Tensor:
        """Class weights (C,) on ``y``'s device (copied to the device once per update)."""
        if y.device not in self._device_cache:
            self._device_cache[y.device] = torch.as_tensor(
                self.weight_values(), dtype=torch.float32, device=y.device
            )
        return self._device_cache[y.device]

    def state_dict(self) -> dict:
        return {
            "kind": "baseline",
            "num_classes": self.num_classes,
            "base_eps": self.base_eps,
            "boost": self.boost,
            "worst_class": self.worst_class,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "baseline")
        self.num_classes = int(state["num_classes"])
        self.base_eps = state["base_eps"]
        self.boost = float(state["boost"])
        self.worst_class = state["worst_class"]
        self._device_cache.clear()


def _check_class_ratios(values, num_classes: int, name: str) -> np.ndarray:
    arr = np.ones(num_classes) if values is None else np.asarray(values, dtype=np.float64)
    if arr.shape != (num_classes,):
        raise ValueError(f"{name} must have length {num_classes} (one per class), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0):
        raise ValueError(f"{name} must be finite numbers > 0, got {arr.tolist()}")
    return arr


class FixedClassWeighting(_TwoTermWeighting):
    """Fixed per-class boundary-error weights and attack budgets (FRL §5.3, Figure 3).

    FRL's two-term loss (SPEC §4, :func:`frl_trades_loss`) with uniform natural weights
    w0_c = 1/C and boundary (KL) weights in the given ratios, renormalised to sum 1:
    w1_c = r_c / sum_j r_j. Only the ratios matter, since the loss normalises each term by its
    weights: ``boundary_ratios`` [1, ..., r, ..., 1] weighs one class's boundary error r times
    the others'. The training attack uses eps_c = s_c * base_eps (``eps_scales``). Nothing is
    updated from validation errors: the weights and budgets hold from the first batch on.
    """

    def __init__(
        self,
        num_classes: int,
        base_eps: float,
        *,
        boundary_ratios: Sequence[float] | None = None,
        eps_scales: Sequence[float] | None = None,
    ) -> None:
        super().__init__(_check_num_classes(num_classes), base_eps=base_eps)
        base_eps = float(base_eps)
        if not (math.isfinite(base_eps) and base_eps > 0.0):
            raise ValueError(f"base_eps must be a finite number > 0, got {base_eps}")
        self.base_eps = base_eps
        self.boundary_ratios = _check_class_ratios(
            boundary_ratios, self.num_classes, "boundary_ratios"
        )
        self.eps_scales = _check_class_ratios(eps_scales, self.num_classes, "eps_scales")
        self._device_cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    # -- host-side values (float64 numpy) ----------------------------------------------------------
    def nat_weight_values(self) -> np.ndarray:
        """w0 (C,): uniform weights of the natural CE term."""
        return np.full(self.num_classes, 1.0 / self.num_classes)

    def bndy_weight_values(self) -> np.ndarray:
        """w1 (C,): the boundary ratios normalised to sum 1."""
        return self.boundary_ratios / self.boundary_ratios.sum()

    def eps_values(self) -> np.ndarray:
        """Per-class budgets eps_c = s_c * base_eps (C,)."""
        return self.eps_scales * self.base_eps

    def class_eps(self, y: torch.Tensor):
        """Per-sample budgets eps_{y_i} (B,) on ``y``'s device; the scalar base budget when no
        class is scaled."""
        if np.all(self.eps_scales == 1.0):
            return self.base_eps
        return super().class_eps(y)

    def state_dict(self) -> dict:
        return {
            "kind": "fixed-class",
            "num_classes": self.num_classes,
            "base_eps": self.base_eps,
            "boundary_ratios": self.boundary_ratios.tolist(),
            "eps_scales": self.eps_scales.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "fixed-class")
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
        self._device_cache.clear()


def build_weighting(name: str, num_classes: int, **kwargs) -> UniformWeighting:
    """A weighting by name (one of :data:`WEIGHTING_NAMES`); ``kwargs`` go to its class."""
    if name == "uniform":
        return UniformWeighting(num_classes, **kwargs)
    if name == "faal":
        return FAALWeighting(num_classes=num_classes, **kwargs)
    if name == "frl":
        return FRLWeighting(num_classes, **kwargs)
    if name == "baseline":
        return BaselineReweight(num_classes, **kwargs)
    if name == "fixed-class":
        return FixedClassWeighting(num_classes, **kwargs)
    raise ValueError(f"weighting must be one of {WEIGHTING_NAMES}, got {name!r}")
