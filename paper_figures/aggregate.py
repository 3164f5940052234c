"""Reading numbers out of ``final.json`` dicts and summarising them over seeds.

Nothing here evaluates a model: every number comes from the ``final.json`` that ``deep.evaluate``
wrote for a run (``results[key]`` = class-wise accuracies with their average and worst class;
``frl_errors[kind]`` = FRL's class-wise standard / boundary / robust errors). Over seeds, a value
is reported as mean and sample standard deviation (``runs.mean_std``).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from paper_figures.runs import RunError, mean_std
from paper_figures.style import new_figure, save_figure

__all__ = [
    "RESULT_NAMES",
    "accuracy",
    "error",
    "per_class_accuracy",
    "per_class_error",
    "over_seeds",
    "per_class_over_seeds",
    "format_pm",
    "render_table",
    "write_markdown",
]

#: Column names of the result keys of final.json.
RESULT_NAMES = {
    "clean": "Clean",
    "pgd20": "PGD-20",
    "cw20": "CW-20",
    "cw100": "CW-100",
    "autoattack": "AA",
}


def _result(final: Mapping, key: str) -> Mapping:
    try:
        return final["results"][key]
    except KeyError:
        raise RunError(
            f"final.json of {final.get('method', '?')} (seed {final.get('seed', '?')}) has no "
            f"{key!r} result (it has {sorted(final.get('results', {}))}); rerun with that attack"
        ) from None


def accuracy(final: Mapping, key: str, which: str) -> float:
    """``final["results"][key][which]`` in percent (which: "average" or "worst")."""
    return 100.0 * float(_result(final, key)[which])


def per_class_accuracy(final: Mapping, key: str) -> np.ndarray:
    """Class-wise accuracy in percent."""
    return 100.0 * np.array(_result(final, key)["per_class"], dtype=np.float64)


def _errors(final: Mapping, kind: str) -> Mapping:
    try:
        return final["frl_errors"][kind]
    except KeyError:
        raise RunError(
            f"final.json of {final.get('method', '?')} has no frl_errors[{kind!r}] (needs the "
            "clean and pgd20 results)"
        ) from None


def error(final: Mapping, kind: str, which: str) -> float:
    """FRL error (kind: standard / boundary / robust; which: average / worst) in percent."""
    return 100.0 * float(_errors(final, kind)[which])


def per_class_error(final: Mapping, kind: str) -> np.ndarray:
    """Class-wise FRL error in percent."""
    return 100.0 * np.array(_errors(final, kind)["per_class"], dtype=np.float64)


def over_seeds(finals: Sequence[Mapping], getter) -> tuple[float, float, int]:
    """(mean, std, n) of ``getter(final)`` over the seeds' final.json dicts."""
    values = [getter(f) for f in finals]
    mean, std = mean_std(values)
    return mean, std, len(values)


def per_class_over_seeds(finals: Sequence[Mapping], getter) -> tuple[np.ndarray, np.ndarray]:
    """Class-wise (mean, std) arrays of ``getter(final) -> array`` over seeds."""
    stack = np.stack([np.asarray(getter(f), dtype=np.float64) for f in finals])
    std = stack.std(axis=0, ddof=1) if stack.shape[0] > 1 else np.zeros(stack.shape[1])
    return stack.mean(axis=0), std


def format_pm(mean: float, std: float, n: int, digits: int = 1) -> str:
    """``"82.3 ± 1.2"`` (or ``"82.3"`` for a single seed)."""
    return f"{mean:.{digits}f}" if n <= 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    path: str | os.PathLike,
    *,
    title: str,
    col_width: float = 1.25,
    first_width: float = 2.6,
    smoke_test: str | None = None,
) -> Path:
    """Draw a table of strings as a PNG (header bold, every other row shaded); ``smoke_test``
    as in :func:`paper_figures.style.save_figure`."""
    width = first_width + col_width * (len(header) - 1)
    lines = textwrap.wrap(title, max(40, int(width * 14)))
    title_height = 0.18 * len(lines) + 0.1
    height = title_height + 0.25 * (len(rows) + 1)
    fig = new_figure(width, height, layout=None)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    widths = [first_width / width] + [col_width / width] * (len(header) - 1)
    table = ax.table(
        cellText=[list(r) for r in rows],
        colLabels=list(header),
        colWidths=widths,
        cellLoc="center",
        bbox=(0.0, 0.0, 1.0, 1.0 - title_height / height),
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, c), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#dddddd")
        elif r % 2 == 0:
            cell.set_facecolor("#f4f4f4")
        if c == 0:
            cell.set_text_props(ha="left")
    ax.text(0.5, 1.0 - 0.05 / height, "\n".join(lines), ha="center", va="top", fontsize=8.5,
            transform=ax.transAxes)  # fmt: skip
    return save_figure(fig, path, smoke_test=smoke_test)


def write_markdown(
    header: Sequence[str], rows: Sequence[Sequence[str]], path: str | os.PathLike, *, title: str
) -> Path:
    """The same table as Markdown (for the README)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
