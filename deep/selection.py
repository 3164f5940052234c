"""Which epoch ``best.pt`` holds: the model-selection rule of ``deep.train``.

``deep.train`` keeps the epoch with the best *worst-class* PGD-20 accuracy on its validation
split (the fairness criterion both papers report; FRL checks class-wise errors on a separate
validation set, Algorithm 1 steps 5-6). The worst class moves in steps of
1/(images per class) and often stays put (an l_2 Fashion-MNIST run whose worst class is at 0 % in
every epoch), so ties are common; the rule for them (``--best-ties``):

* ``average`` (default): the higher average-over-classes PGD-20 validation accuracy, then the later
  epoch;
* ``first``: the earliest epoch keeps its place (the rule of runs written before the option).

:func:`best_epoch` applies a rule to a run's ``metrics.jsonl`` records and :func:`rule_changes`
says whether the two rules pick different epochs (the check of recorded benchmark runs:
``python benchmarks/selection_ties.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["TIE_RULES", "best_epoch", "better", "rule_changes", "selection_key", "RULE_TEXT"]

#: ``--best-ties`` choices.
TIE_RULES = ("average", "first")

#: The rule in words, for ``--help`` and the run's log.
RULE_TEXT = (
    "best.pt holds the epoch with the best worst-class PGD-20 validation accuracy; ties go to the "
    "higher average validation accuracy, then the later epoch (--best-ties average), or stay with "
    "the first epoch (--best-ties first)"
)


def selection_key(record: Mapping) -> tuple[float, float]:
    """``(worst, average)`` PGD-20 validation accuracy of one epoch's metrics record."""
    val = record["val"]["pgd20"]
    return float(val["worst"]), float(val["average"])


def better(record: Mapping, best: Mapping, rule: str = "average") -> bool:
    """Whether epoch ``record`` replaces the best so far, ``best`` = ``{"score": worst,
    "average": average, "epoch": e}`` (``score`` -inf before the first epoch; a record without
    ``"average"``, written before it was kept, counts as -inf)."""
    if rule not in TIE_RULES:
        raise ValueError(f"rule must be one of {', '.join(TIE_RULES)}, got {rule!r}")
    worst, average = selection_key(record)
    if worst != best["score"] or rule == "first":
        return worst > best["score"]
    return average >= best.get("average", -math.inf)  # equal average: the later epoch


def best_epoch(records: Iterable[Mapping], rule: str = "average") -> int | None:
    """The epoch ``best.pt`` ends up holding after ``records`` (a run's metrics, in order);
    None without validation metrics."""
    best: dict = {"score": -math.inf, "epoch": None}
    for record in records:
        if "val" in record and better(record, best, rule):
            worst, average = selection_key(record)
            best = {"score": worst, "average": average, "epoch": record["epoch"]}
    return best["epoch"]


def rule_changes(records: Iterable[Mapping]) -> tuple[int | None, int | None]:
    """``(epoch under "first", epoch under "average")``: they differ where a tie decides."""
    records = list(records)
    return best_epoch(records, "first"), best_epoch(records, "average")
