"""One look for every paper figure: colours and labels per method, figure creation and saving.

Matplotlib is used through :class:`matplotlib.figure.Figure` only (no pyplot state, no GUI
backend), so the scripts run headless and inside tests. Every method keeps the same colour in every
figure; errors and accuracies are shown in percent.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

from matplotlib.figure import Figure

__all__ = [
    "METHOD_COLORS",
    "METHOD_LABELS",
    "BINARY_CLASS_COLORS",
    "METRIC_COLORS",
    "DPI",
    "method_color",
    "method_label",
    "new_figure",
    "mark_smoke_test",
    "save_figure",
    "class_ticks",
]

#: Resolution of every PNG (small files for the README gallery).
DPI = 90

#: Colour of each method (deep.presets names, plus the TRADES beta variants of FRL Table 2).
METHOD_COLORS: dict[str, str] = {
    "natural": "#7f7f7f",
    "pgd-at": "#1f77b4",
    "trades": "#ff7f0e",
    "trades-b1": "#ffbb78",
    "trades-b6": "#ff7f0e",
    "mart": "#8c564b",
    "at-awp": "#aec7e8",
    "trades-awp": "#c49c94",
    "faal-at": "#2ca02c",
    "faal-at-awp": "#98df8a",
    "faal-trades": "#17becf",
    "faal-trades-awp": "#9edae5",
    "faal-mart": "#bcbd22",
    "baseline-reweight": "#e377c2",
    "frl-rw": "#d62728",
    "frl-rm": "#9467bd",
    "frl-rwrm": "#393b79",
    "cfa-at": "#637939",
    "cfa-trades": "#8ca252",
    "wat-trades": "#843c39",
    "dafa-trades": "#7b4173",
    "dafa-at": "#a55194",
}

#: Display names (as the papers write them).
METHOD_LABELS: dict[str, str] = {
    "natural": "natural",
    "pgd-at": "PGD-AT",
    "trades": "TRADES",
    "trades-b1": "TRADES (1/λ = 1)",
    "trades-b6": "TRADES (1/λ = 6)",
    "mart": "MART",
    "at-awp": "AT-AWP",
    "trades-awp": "TRADES-AWP",
    "faal-at": "FAAL_AT",
    "faal-at-awp": "FAAL_AT-AWP",
    "faal-trades": "FAAL_TRADES",
    "faal-trades-awp": "FAAL_TRADES-AWP",
    "faal-mart": "FAAL_MART",
    "baseline-reweight": "Baseline Reweight",
    "frl-rw": "FRL (Reweight)",
    "frl-rm": "FRL (Remargin)",
    "frl-rwrm": "FRL (Reweight+Remargin)",
    "cfa-at": "CFA_AT",
    "cfa-trades": "CFA_TRADES",
    "wat-trades": "WAT_TRADES",
    "dafa-trades": "DAFA_TRADES",
    "dafa-at": "DAFA_AT",
}

#: FRL Fig. 2 colours of the two Gaussian classes (class -1 yellow, class +1 blue).
BINARY_CLASS_COLORS = {"-1": "#e6a817", "+1": "#2a6fdb"}

#: Colours of the kinds of error / accuracy (standard, boundary, robust; clean and attacks).
METRIC_COLORS = {
    "standard": "#4c72b0",
    "boundary": "#dd8452",
    "robust": "#c44e52",
    "clean": "#4c72b0",
    "pgd20": "#c44e52",
    "cw20": "#8172b3",
    "cw100": "#64347a",
    "autoattack": "#55a868",
}


def method_color(name: str) -> str:
    """Colour of a method (by its preset name; unknown names get a neutral grey)."""
    return METHOD_COLORS.get(name, "#555555")


def method_label(name: str) -> str:
    """Display label of a method (the preset name when unknown)."""
    return METHOD_LABELS.get(name, name)


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A figure of ``width`` x ``height`` inches (no pyplot; constrained layout by default)."""
    return Figure(figsize=(width, height), layout=layout)


def mark_smoke_test(fig: Figure, text: str) -> None:
    """A red banner above the figure saying it is a smoke test (``text``: the budget and data
    set), so a ``--quick`` output is never read as a reproduction."""
    width = max(30, int(fig.get_figwidth() * 13))
    box = {"facecolor": "#fff0f0", "edgecolor": "#b00000", "boxstyle": "round"}
    fig.text(0.5, 1.0, textwrap.fill(text, width), ha="center", va="bottom", fontsize=8.5,
             color="#b00000", weight="bold", bbox=box)  # fmt: skip


def save_figure(
    fig: Figure, path: str | os.PathLike, *, dpi: int = DPI, smoke_test: str | None = None
) -> Path:
    """Write ``fig`` as a palette PNG (256 colours: small files; parents created); the path.
    ``smoke_test``: stamp the figure as one first (:func:`mark_smoke_test`)."""
    from PIL import Image

    if smoke_test:
        mark_smoke_test(fig, smoke_test)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)
    return path


def class_ticks(ax, classes, *, axis: str = "x") -> None:
    """Class names as tick labels, rotated when long or many."""
    classes = [str(c) for c in classes]
    positions = range(len(classes))
    rotate = len(classes) > 12 or max((len(c) for c in classes), default=0) > 6
    if axis == "x":
        ax.set_xticks(list(positions))
        ax.set_xticklabels(
            classes, rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=8
        )
    else:
        ax.set_yticks(list(positions))
        ax.set_yticklabels(classes, fontsize=8)
