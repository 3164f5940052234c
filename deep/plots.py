"""Figures for class-wise results; they read numbers, never compute metrics.

* :func:`plot_classwise` draws the class-wise accuracies of a ``final.json`` dict (written by
  :mod:`deep.evaluate`) as grouped bars, one group per class and one bar per attack.
* :func:`plot_class_weights` draws class weights over training (FAAL's ``w_c``, FRL's multipliers):
  one line per class over epochs, numbered from 1 as in the console and ``metrics.jsonl``.
* :func:`plot_class_weight_steps` draws the weights of every batch as a heatmap (classes x steps,
  colour = weight / uniform weight), readable for hundreds of steps where lines overlap.

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

__all__ = ["RESULT_LABELS", "plot_classwise", "plot_class_weights", "plot_class_weight_steps"]

# Legend labels for the result keys of final.json.
RESULT_LABELS = {
    "clean": "clean",
    "pgd20": "PGD-20",
    "cw20": "CW-20",
    "cw100": "CW-100",
    "autoattack": "AutoAttack",
}


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
    first: int = 1,
) -> Path:
    """Line plot of class weights over training: one line per class.

    Args:
        weights_history: array-like (T, C) (numpy array, nested list or CPU/GPU tensor); row t holds
            the C class weights at step/epoch t.
        classes: the C class names (legend; shown when C <= 20).
        path: PNG file to write.
        xlabel: label of the x axis (what a row of ``weights_history`` is).
        first: the number of the first row (1: epochs numbered from 1, as everywhere else).

    A dotted line marks the uniform weight 1/C. Returns the path written.
    """
    fig = class_weights_figure(weights_history, classes, xlabel=xlabel, title=title, first=first)
    return _save(fig, path)


def class_weights_figure(
    weights_history, classes: Sequence[str], *, xlabel: str, title: str, first: int = 1
) -> Figure:
    """The figure of :func:`plot_class_weights` (not saved)."""
    w, classes = _weights_array(weights_history, classes)
    num_steps, num_classes = w.shape
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(first, first + num_steps)
    if num_steps <= 30:
        ax.set_xticks(steps)
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
    return fig


def _weights_array(weights_history, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(T, C) float64 array from an array-like or tensor, checked against the class names."""
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
    return w, classes


def plot_class_weight_steps(
    weights_history,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    epochs: Sequence[int] | None = None,
    title: str = "class weights per batch",
) -> Path:
    """Heatmap of the class weights of every batch: one row per class, one column per step.

    Colour is ``w_c / (1/C)`` on a logarithmic diverging scale centred at 1 (uniform): red
    above uniform, blue below. ``epochs`` (the 1-based epoch of every step) draws epoch
    boundaries and labels them. Returns the path written.
    """
    from matplotlib.colors import LogNorm

    w, classes = _weights_array(weights_history, classes)
    num_steps, num_classes = w.shape
    ratio = np.clip(w * num_classes, 1e-3, None)
    spread = float(max(np.max(ratio), 1.0 / np.min(ratio), 1.5))
    fig = Figure(figsize=(min(max(6.0, 2.0 + num_steps / 40), 14.0), 1.4 + 0.28 * num_classes))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(
        ratio.T, aspect="auto", interpolation="nearest", cmap="RdBu_r",
        norm=LogNorm(vmin=1.0 / spread, vmax=spread),
        extent=(0.5, num_steps + 0.5, num_classes - 0.5, -0.5),
    )  # fmt: skip
    ax.set_yticks(np.arange(num_classes))
    ax.set_yticklabels(classes if num_classes <= 30 else [""] * num_classes, fontsize=7)
    ax.set_xlabel("step (batch)")
    if epochs is not None:
        epochs = np.asarray(list(epochs))
        if epochs.shape != (num_steps,):
            raise ValueError(
                f"epochs must give one epoch per step ({num_steps}), got {epochs.shape}"
            )
        starts = np.flatnonzero(np.diff(epochs)) + 1
        for start in starts:
            ax.axvline(start + 0.5, color="black", linewidth=0.6)
        edges = np.concatenate([[0], starts, [num_steps]])
        if len(edges) - 1 <= 40:
            top = ax.secondary_xaxis("top")
            top.set_xticks((edges[:-1] + edges[1:]) / 2 + 0.5)
            top.set_xticklabels([str(e) for e in epochs[edges[:-1]]], fontsize=7)
            top.set_xlabel("epoch", fontsize=8)
    bar = fig.colorbar(image, ax=ax, pad=0.01)
    ticks = [t for t in (0.25, 0.5, 0.67, 1.0, 1.5, 2.0, 4.0) if 1 / spread <= t <= spread]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks], minor=False)
    bar.ax.minorticks_off()
    bar.set_label("weight / uniform (1/C)", fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
