"""
Read the benchmark's JSON: a method's worst-class gain with its CI
==================================================================

The robust-fairness benchmark (``benchmarks/fairness_benchmark.py``) writes every row's class-wise
accuracies per seed into ``docs/results/fairness_benchmark.json``. Each fine-tuning row is paired by
seed with its control, the base model fine-tuned for the same epochs by its own method. This example
computes, from the per-seed class-wise PGD-20 accuracies, each fine-tuning's gain in worst-class
accuracy over the control and its cost in average accuracy, with 95 % t intervals over the seeds.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

try:
    ROOT = Path(__file__).resolve().parents[1]
except NameError:  # run by sphinx-gallery: the working directory is examples/
    ROOT = Path.cwd().parent
report = json.loads((ROOT / "docs" / "results" / "fairness_benchmark.json").read_text())
rows = report["rows"]


def per_seed(row: str, attack: str = "pgd20") -> dict[int, tuple[float, float]]:
    """``{seed: (average, worst)}`` class-wise accuracy of a row, from its per-class values."""
    block = rows[row][attack]
    return {
        seed: (float(np.mean(values)), float(np.min(values)))
        for seed, values in zip(block["seeds"], block["per_class"]["values"])
    }


def paired(row: str, control: str, which: int) -> np.ndarray:
    """Per-seed differences row - control (which = 0: average, 1: worst), in points."""
    a, b = per_seed(row), per_seed(control)
    return np.array([100 * (a[s][which] - b[s][which]) for s in sorted(set(a) & set(b))])


def interval(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the t interval over seeds."""
    if diffs.size < 2:
        return float(diffs.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, diffs.size - 1) * diffs.std(ddof=1) / np.sqrt(diffs.size)
    return float(diffs.mean()), float(half)


# %%
# Every fine-tuning against its control
# -------------------------------------
fine_tunings = [
    (name, f"{info['init']}+{info['init']}")
    for name, info in rows.items()
    if info["init"] != "scratch" and info["method"] != info["init"]
    and f"{info['init']}+{info['init']}" in rows
]  # fmt: skip
labels, gains, costs = [], [], []
for row, control in fine_tunings:
    labels.append(rows[row]["label"])
    gains.append(interval(paired(row, control, 1)))
    costs.append(interval(paired(row, control, 0)))
    g, c = gains[-1], costs[-1]
    n = paired(row, control, 1).size
    print(f"{labels[-1]:>24}: worst {g[0]:+5.1f} ± {g[1]:4.1f}, average {c[0]:+5.1f} ± {c[1]:4.1f}"
          f"  (95 % CI, {n} seeds)")  # fmt: skip

fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
for label, (g, gh), (c, ch) in zip(labels, gains, costs):
    ax.errorbar(c, g, xerr=ch, yerr=gh, fmt="o", capsize=3, label=label)
ax.axhline(0, color="gray", lw=0.8)
ax.axvline(0, color="gray", lw=0.8)
ax.set(xlabel="average PGD-20 accuracy over the control (points)",
       ylabel="worst-class PGD-20 accuracy over the control (points)",
       title="2 epochs of fine-tuning, paired by seed (95 % CI)")  # fmt: skip
ax.legend(fontsize=7, loc="best")
plt.show()
