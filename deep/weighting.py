"""Shared pieces of the class weightings: class statistics and weighted losses.

The methods themselves (one module per paper) live in :mod:`deep.methods`: uniform weights in
``deep.methods.base``, FAAL in ``deep.methods.faal``, FRL and its baselines in ``deep.methods.frl``,
CFA, WAT and DAFA in ``deep.methods.cfa`` / ``wat`` / ``dafa``. Their classes can still be imported
from here (``from deep.weighting import FAALWeighting``).

Sources: FAAL supp. Eq. 1-2 and Algorithm 1 lines 9-14, with the class statistic of
supp. C.2 / Figure 1 (CW margin or cross-entropy); FRL's two-term loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from deep.objectives import softmax_margin
from theory.frl import FRL_MODES

__all__ = [
    "FAAL_STATISTICS",
    "FRL_MODES",
    "WEIGHTING_NAMES",
    "class_mean_statistic",
    "faal_statistic",
    "frl_trades_loss",
    "normalised_weighted_loss",
    "weighted_mean_loss",
]

#: The class weightings (the ``weighting`` part of a preset), one per module of deep.methods.
WEIGHTING_NAMES = ("uniform", "faal", "frl", "baseline", "fixed-class", "cfa", "wat", "dafa")

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
    (``sum_c n_c p_c m_c``).

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
    """``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (the normalisation of the FRL loss).

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
    """FRL's loss: ``sum w0 CE / sum w0 + beta sum w1 KL / sum w1`` over the batch.

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


#: Classes that moved to deep.methods, still importable from here.
_MOVED = {
    "UniformWeighting": "deep.methods.base",
    "FAALWeighting": "deep.methods.faal",
    "FRLWeighting": "deep.methods.frl",
    "BaselineReweight": "deep.methods.frl",
    "FixedClassWeighting": "deep.methods.frl",
    "build_weighting": "deep.methods",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'deep.weighting' has no attribute {name!r}")
