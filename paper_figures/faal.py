"""The runs of the FAAL supplement's experiments, shared by its figure and table scripts.

FAAL supp. C.3-C.4: a model adversarially trained without regard to fairness (PGD-AT, TRADES,
MART or TRADES-AWP) is fine-tuned for 2 epochs (lr 0.01 then 0.001) with FAAL on one of four
adversaries (AT, AT-AWP, TRADES, TRADES-AWP), or for 80 epochs with FRL-RWRM (tau 0.05 / 0.07),
for comparison. Runs of the same base model and seed are shared between scripts through the run
cache (``paper_figures.runs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from paper_figures.common import Profile
from paper_figures.runs import RunSpec

__all__ = ["FAAL_METHODS", "FinetuneRow", "finetune_rows", "accuracy_keys"]

#: FAAL with each adversary (FAAL supp. Tables 2-3, 6).
FAAL_METHODS = ("faal-at", "faal-at-awp", "faal-trades", "faal-trades-awp")


@dataclass(frozen=True)
class FinetuneRow:
    """One table row: its label, the method's style key, its run, and its fine-tuning epochs."""

    label: str
    key: str
    spec: RunSpec
    epochs: int | None  # None: the base model itself


def finetune_rows(
    profile: Profile,
    base: RunSpec,
    base_label: str,
    base_key: str,
    seed: int,
    *,
    frl_deltas=(0.05, 0.07),
    tau: float | None = None,
) -> list[FinetuneRow]:
    """The base model, FRL-RWRM fine-tuning at each delta, then FAAL with each adversary."""
    rows = [FinetuneRow(base_label, base_key, base, None)]
    for delta in frl_deltas:
        spec = profile.frl_finetune(base, "frl-rwrm", seed, delta)
        rows.append(FinetuneRow(f"+ FRL-RWRM {delta:g}", "frl-rwrm", spec, profile.frl_epochs))
    labels = {
        "faal-at": "FAAL_AT",
        "faal-at-awp": "FAAL_AT-AWP",
        "faal-trades": "FAAL_TRADES",
        "faal-trades-awp": "FAAL_TRADES-AWP",
    }
    for method in FAAL_METHODS:
        spec = profile.faal_finetune(base, method, seed, tau=tau)
        rows.append(FinetuneRow(f"+ {labels[method]}", method, spec, 2))
    return rows


def accuracy_keys(profile: Profile) -> tuple[str, ...]:
    """final.json result keys of the tables' columns: clean, PGD-20, CW-20 and "AA"."""
    keys = ["clean", "pgd20", "cw20"]
    if profile.robust_key not in keys:
        keys.append(profile.robust_key)
    return tuple(keys)
