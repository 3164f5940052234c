"""Figures for class-wise results; they read numbers, never compute metrics.

* :func:`plot_classwise` draws the class-wise accuracies of a ``final.json`` dict (written by
  :mod:`deep.evaluate`) as grouped bars, one group per class and one bar per attack.
* :func:`plot_class_weights` draws class weights over training (FAAL's ``w_c``, FRL's multipliers).

Matplotlib is used through :class:`matplotlib.figure.Figure` only (no pyplot state, no GUI backend),
so plotting is safe in worker processes and tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["RESULT_LABELS", "plot_classwise", "plot_class_weights"]

# Legend labels for the result keys of final.json.
RESULT_LABELS = {"clean": "clean", "pgd20": "PGD-20", "cw20": "CW-20", "autoattack": "AutoAttack"}


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _figure_width(num_classes: int, per_class: float) -> float:
    return float(min(max(6.0, 1.2 + per_class * num_classes), 60.0))


def plot_classwise(final: Mapping, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Grouped bar chart of ``final["results"]``: per class, one bar per attack (accuracy in %).

    Args:
        final: a ``final.json`` dict: needs ``"classes"`` (names) and ``"results"`` mapping result
            keys (``clean``, ``pgd20``, ``cw20``, ``autoattack``) to ``{"per_class", "average",
            "worst"}``. ``"dataset"`` and ``"model"`` go into the default title.
        path: PNG file to write (parent folders are created).
        title: figure title; default ``"<dataset> / <model>: class-wise accuracy"``.

    Returns the path written. The legend gives each attack's average and worst-class accuracy.
    """
    classes = list(final.get("classes", []))
    results = final.get("results", {})
    if not classes:
        raise ValueError("final['classes'] must list the class names")
    if not results:
        raise ValueError("final['results'] holds no result to plot")
    for key, entry in results.items():
        if len(entry["per_class"]) != len(classes):
            raise ValueError(
                f"final['results'][{key!r}] has {len(entry['per_class'])} classes, "
                f"final['classes'] has {len(classes)}"
            )

    num_classes, num_results = len(classes), len(results)
    fig = Figure(figsize=(_figure_width(num_classes, 0.25 + 0.18 * num_results), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(num_classes, dtype=np.float64)
    width = 0.8 / num_results
    for i, (key, entry) in enumerate(results.items()):
        values = [math.nan if v is None else 100.0 * v for v in entry["per_class"]]
        label = (
            f"{RESULT_LABELS.get(key, key)} (avg {100 * entry['average']:.1f}, "
            f"worst {100 * entry['worst']:.1f})"
        )
        ax.bar(x + (i - (num_results - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x)
    rotate = num_classes > 12 or max(len(c) for c in classes) > 8
    ax.set_xticklabels(classes, rotation=60 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlim(-0.6, num_classes - 0.4)
    ax.set_ylim(0.0, 100.0)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25 if rotate else -0.1),
        ncol=min(num_results, 4),
        frameon=False,
    )
    if title is None:
        title = f"{final.get('dataset', '?')} / {final.get('model', '?')}: class-wise accuracy"
    ax.set_title(title)
    return _save(fig, path)


def plot_class_weights(
    weights_history,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    xlabel: str = "epoch",
    title: str = "class weights over training",
) -> Path:
    """Line plot of class weights over training: one line per class.

    Args:
        weights_history: array-like (T, C) (numpy array, nested list or CPU/GPU tensor); row t holds
            the C class weights at step/epoch t.
        classes: the C class names (legend; shown when C <= 20).
        path: PNG file to write.
        xlabel: label of the x axis (what a row of ``weights_history`` is).

    A dotted line marks the uniform weight 1/C. Returns the path written.
    """
    if hasattr(weights_history, "detach"):
        weights_history = weights_history.detach().cpu().numpy()
    w = np.asarray(weights_history, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] < 1:
        raise ValueError(f"weights_history must have shape (T, C) with T >= 1, got shape {w.shape}")
    classes = list(classes)
    if w.shape[1] != len(classes):
        raise ValueError(
            f"weights_history has {w.shape[1]} columns but {len(classes)} class names were given"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError("weights_history holds non-finite values")

    num_steps, num_classes = w.shape
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(num_steps)
    marker = "o" if num_steps <= 30 else None
    for c in range(num_classes):
        ax.plot(steps, w[:, c], marker=marker, markersize=3, linewidth=1.2, label=classes[c])
    ax.axhline(1.0 / num_classes, color="black", linestyle=":", linewidth=1.0, label="uniform 1/C")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("class weight")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if num_classes <= 20:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)
