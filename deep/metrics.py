"""Class-wise metrics: the one place where predictions become per-class numbers.

* :func:`classwise_accuracy` turns per-sample correctness flags into per-class accuracies
  ``acc_c = correct_c / count_c`` with their mean over classes ("average") and minimum ("worst"),
  the "Average Acc (Worst-class Acc)" of the FAAL supplement's tables (per-class denominators
  are counted, never assumed equal).
* :func:`frl_errors` turns clean and adversarial class-wise accuracies into FRL's class-wise
  standard, boundary and robust errors (FRL Eq. 7: R_rob(c) = R_nat(c) + R_bndy(c); reported as
  average and worst class in FRL Tables 2-3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["classwise_accuracy", "frl_errors", "summarise_per_class"]


def summarise_per_class(per_class: Sequence[float | None], *, worst: str = "min") -> dict:
    """``{"per_class", "average", "worst"}`` for per-class values (``None`` = empty class, skipped).

    ``average`` is the unweighted mean over classes (``math.fsum``), ``worst`` the minimum
    (``worst="min"``, for accuracies) or maximum (``worst="max"``, for errors).

    Args:
        per_class: one value per class; None marks an empty class.
        worst: ``"min"`` or ``"max"``.

    Returns:
        ``{"per_class": [...], "average": float, "worst": float}``.

    Raises:
        ValueError: for another ``worst`` or when every class is empty.
    """
    if worst not in ("min", "max"):
        raise ValueError(f"worst must be 'min' or 'max', got {worst!r}")
    present = [float(v) for v in per_class if v is not None]
    if not present:
        raise ValueError("per_class holds no value: every class is empty")
    pick = min if worst == "min" else max
    return {
        "per_class": [None if v is None else float(v) for v in per_class],
        "average": math.fsum(present) / len(present),
        "worst": pick(present),
    }


def classwise_accuracy(
    correct: torch.Tensor, y: torch.Tensor, num_classes: int, *, allow_empty: bool = False
) -> dict:
    """Per-class accuracy of per-sample correctness flags.

    Args:
        correct: bool tensor (N,), ``correct[i]`` = sample i is classified as ``y[i]`` (for a
            robust accuracy: its adversarial example is).
        y: int64 tensor (N,) of labels in ``[0, num_classes)``, on the same device as ``correct``.
        num_classes: number of classes C (>= 1).
        allow_empty: if False (default) a class without samples raises ``ValueError``; if True its
            ``per_class`` entry is ``None`` and "average"/"worst" run over the non-empty classes.

    Returns:
        ``{"per_class": [acc_c]*C, "average": mean_c acc_c, "worst": min_c acc_c,
        "counts": [n_c]*C}`` with accuracies in [0, 1] (Python floats, exact ratios of counts).

    The counting stays on the tensors' device (``scatter_add``); the only device-to-host transfer is
    one ``.tolist()`` at the end.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(correct, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("correct and y must be torch tensors")
    if correct.dim() != 1 or y.dim() != 1 or correct.shape[0] != y.shape[0]:
        raise ValueError(
            "correct and y must be 1-D tensors of the same length, got shapes "
            f"{tuple(correct.shape)} and {tuple(y.shape)}"
        )
    if correct.dtype != torch.bool:
        raise ValueError(f"correct must be a bool tensor, got dtype {correct.dtype}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y must be an integer tensor of labels, got dtype {y.dtype}")
    if correct.device != y.device:
        raise ValueError(f"correct is on {correct.device} but y is on {y.device}")

    y = y.long()
    out_of_range = (y < 0) | (y >= num_classes)
    index = y.clamp(0, num_classes - 1)
    hits = torch.zeros(num_classes, dtype=torch.long, device=y.device)
    hits.scatter_add_(0, index, (correct & ~out_of_range).long())
    counts = torch.zeros(num_classes, dtype=torch.long, device=y.device)
    counts.scatter_add_(0, index, (~out_of_range).long())
    # One transfer: [hits (C), counts (C), number of labels outside [0, C)].
    packed = torch.cat([hits, counts, out_of_range.sum().reshape(1)]).tolist()
    hits_l, counts_l, n_bad = packed[:num_classes], packed[num_classes:-1], packed[-1]

    if n_bad:
        raise ValueError(f"y holds {n_bad} label(s) outside [0, num_classes) = [0, {num_classes})")
    empty = [c for c, n in enumerate(counts_l) if n == 0]
    if empty and not allow_empty:
        raise ValueError(
            f"classes {empty} have no samples; per-class accuracy is undefined "
            "(pass allow_empty=True to report them as None)"
        )
    if len(empty) == num_classes:
        raise ValueError("no samples: every class is empty")
    per_class = [h / n if n else None for h, n in zip(hits_l, counts_l)]
    summary = summarise_per_class(per_class, worst="min")
    summary["counts"] = [int(n) for n in counts_l]
    return summary


def _per_class_of(results: Mapping, key: str) -> list[float | None]:
    if key not in results:
        raise ValueError(
            f"frl_errors needs results[{key!r}] (class-wise accuracies); got keys {sorted(results)}"
        )
    entry = results[key]
    if not isinstance(entry, Mapping) or "per_class" not in entry:
        raise ValueError(f"results[{key!r}] must be a dict with a 'per_class' list")
    values = list(entry["per_class"])
    for v in values:
        if v is not None and not (0.0 <= float(v) <= 1.0):
            raise ValueError(f"results[{key!r}]['per_class'] holds {v!r}, outside [0, 1]")
    return values


def frl_errors(results: Mapping, *, clean_key: str = "clean", robust_key: str = "pgd20") -> dict:
    """FRL's class-wise standard, boundary and robust errors (FRL Eq. 7, Tables 2-3).

    For each class c, from the class-wise accuracies ``results[clean_key]["per_class"]`` (clean)
    and ``results[robust_key]["per_class"]`` (adversarial, PGD-20 as in FRL):

    * standard error  ``R_nat(c) = 1 - acc_clean(c)``
    * robust error    ``R_rob(c) = 1 - acc_adv(c)``
    * boundary error  ``R_bdy(c) = R_rob(c) - R_nat(c) = acc_clean(c) - acc_adv(c)``
      (computed in the second form, without cancellation against 1).

    A class with ``None`` accuracy (empty) stays ``None`` and is left out of average/worst.

    Args:
        results: class-wise accuracies keyed by attack, as :func:`classwise_accuracy` returns them
            (e.g. ``final.json``'s ``results``).
        clean_key: the key of the clean accuracies.
        robust_key: the key of the adversarial accuracies.

    Returns:
        ``{"standard", "boundary", "robust"}``, each ``{"per_class", "average", "worst"}`` with
        "average" the mean over classes and "worst" the **maximum** error over classes.

    Raises:
        ValueError: when a key is missing, an accuracy is outside [0, 1] or the class counts differ.
    """
    clean = _per_class_of(results, clean_key)
    adv = _per_class_of(results, robust_key)
    if len(clean) != len(adv):
        raise ValueError(
            f"results[{clean_key!r}] has {len(clean)} classes but results[{robust_key!r}] "
            f"has {len(adv)}"
        )
    standard, robust, boundary = [], [], []
    for a_clean, a_adv in zip(clean, adv):
        if a_clean is None or a_adv is None:
            standard.append(None)
            robust.append(None)
            boundary.append(None)
            continue
        standard.append(1.0 - float(a_clean))
        robust.append(1.0 - float(a_adv))
        boundary.append(float(a_clean) - float(a_adv))
    return {
        "standard": summarise_per_class(standard, worst="max"),
        "boundary": summarise_per_class(boundary, worst="max"),
        "robust": summarise_per_class(robust, worst="max"),
    }
