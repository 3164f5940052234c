"""Figures of the Gaussian-mixture demo (matplotlib, Agg backend). Each reads only what it plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_boundaries", "plot_class_errors", "plot_mitigations", "plot_coverage"]

_COLORS = {-1: "#e6a817", 1: "#2a6fdb"}  # FRL Fig. 2: class -1 yellow, class +1 blue
_DPI = 90


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_boundaries(
    x,
    y,
    panels: dict,
    path: Path,
    *,
    title: str = "",
    max_points: int = 1500,
    optimal: dict | None = None,
):
    """FRL Figure 2: the two clouds and the natural (green) / robust (red) decision boundaries.

    ``panels``: ``{panel title: {"natural": clf, "robust": clf}}``; each ``clf`` has a vectorised
    ``decision_function`` on (n, 2) inputs; boundaries are its zero level set on a grid.
    ``optimal``: ``{"natural": b_nat, "robust": b_rob}`` draws the optimal linear boundaries
    ``x1 + x2 + b = 0`` (FRL Eq. 5 / Theorem 2) as dashed lines in every panel.
    """
    x = np.asarray(x)[:max_points]
    y = np.asarray(y)[:max_points]
    lo, hi = np.percentile(x, 0.5, axis=0) - 0.5, np.percentile(x, 99.5, axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (name, pair) in zip(axes[0], panels.items()):
        for c in (-1, 1):
            ax.scatter(*x[y == c].T, s=4, alpha=0.5, color=_COLORS[c], label=f"class {c:+d}")
        for kind, color in (("natural", "green"), ("robust", "red")):
            z = pair[kind].decision_function(grid).reshape(gx.shape)
            ax.contour(gx, gy, z, levels=[0.0], colors=color, linewidths=2)
            ax.plot([], [], color=color, lw=2, label=kind)
            if optimal is not None:
                xs = np.array([lo[0], hi[0]])
                ax.plot(
                    xs,
                    -xs - optimal[kind],
                    "--",
                    color=color,
                    lw=1,
                    label=f"optimal {kind} (theory)",
                )
        ax.set_title(name)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=7, markerscale=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_class_errors(setting: dict, path: Path):
    """Per classifier and class: simulated standard / robust error (bars, 95% CI) vs the optimal
    classifier's theory value (black ticks)."""
    clfs = setting["classifiers"]
    names = list(clfs)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=False)
    for ax, metric in zip(axes, ("standard", "robust")):
        width = 0.38
        for j, cls in enumerate(("-1", "+1")):
            pos = np.arange(len(names)) + (j - 0.5) * width
            vals = np.array([clfs[n]["test"][cls][metric]["value"] for n in names])
            lo = np.array([clfs[n]["test"][cls][metric]["ci_low"] for n in names])
            hi = np.array([clfs[n]["test"][cls][metric]["ci_high"] for n in names])
            th = np.array([clfs[n]["theory_optimal"][cls][metric] for n in names])
            ax.bar(pos, vals, width, color=_COLORS[int(cls)], alpha=0.8, label=f"class {cls} sim")
            ax.errorbar(pos, vals, yerr=[vals - lo, hi - vals], fmt="none", ecolor="k", lw=1)
            ax.scatter(
                pos,
                th,
                marker="_",
                s=200,
                color="k",
                zorder=3,
                label="theory (optimal)" if j == 0 else None,
            )
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric} error")
        ax.set_ylabel(f"{metric} error (test, 95% CI)")
    m = setting["mixture"]
    fig.suptitle(
        f"d={m['d']}, eta={m['eta']:g}, sigma={m['sigma']:g}, K={m['K']:.3g}, "
        f"eps={setting['eps']:g}",
        fontsize=10,
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 0.84, 1))  # the legend beside the panels, off the bars
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.845, 0.5), fontsize=8)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_mitigations(setting: dict, path: Path):
    """Worst-class and average robust error (exact population values) per mitigation."""
    mit = setting["mitigation"]
    names = list(mit)
    worst = [mit[n]["population"]["worst_robust"] for n in names]
    avg = [mit[n]["population"]["average_robust"] for n in names]
    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    bars = ax.bar(pos - 0.2, worst, 0.4, color="#c0392b", label="worst-class robust error")
    bars_avg = ax.bar(pos + 0.2, avg, 0.4, color="#7f8c8d", label="average robust error")
    for group in (bars, bars_avg):  # the values, since bars from 0 make small gaps hard to see
        ax.bar_label(group, fmt="%.3f", fontsize=6, padding=1)
    ax.set_xticks(pos)
    ax.set_xticklabels(names)
    ax.set_ylabel("robust error (exact)")
    ax.set_ylim(0.0, 1.2 * max(worst))  # bars start at 0: their lengths compare honestly
    ax.legend(fontsize=8, loc="upper right")
    m = setting["mixture"]
    ax.set_title(f"mitigations, d={m['d']}, K={m['K']:.3g}, eps={setting['eps']:g}", fontsize=10)
    return _save(fig, path)


def plot_coverage(coverage: dict, path: Path):
    """FAAL Theorem 1: coverage frequency of the KL-DRO value vs tau, against the bound."""
    from theory.dro import coverage_lower_bound

    fig, ax = plt.subplots(figsize=(8.2, 3.6))
    for n in sorted({r["n"] for r in coverage["rows"]}):
        rows = [r for r in coverage["rows"] if r["n"] == n]
        taus = [r["tau"] for r in rows]
        line = ax.plot(taus, [r["coverage"] for r in rows], "o-", label=f"n={n}: DRO covers E_P[l]")
        ax.plot(
            taus,
            [r["event_frequency"] for r in rows],
            "s:",
            color=line[0].get_color(),
            label=f"n={n}: KL(P_hat||P) <= tau",
            ms=3,
        )
        fine = np.geomspace(min(taus), max(taus), 400)
        ax.plot(
            fine,
            coverage_lower_bound(n, rows[0]["C"], fine),
            "--",
            color=line[0].get_color(),
            label=f"n={n}: bound 1-(n+1)^C e^(-n tau)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("tau (KL budget of the DRO)")
    ax.set_ylabel("frequency over trials")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(
        "FAAL Theorem 1: how often the KL-DRO value covers the true mean loss, against the bound",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # off the curves
    return _save(fig, path)
