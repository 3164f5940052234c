"""FRL Figure 1 and Table 1: class-wise standard and robust error of natural, PGD-AT and TRADES.

FRL §2: naturally trained models have similar errors in every class, adversarially trained ones
do not, and adversarial training raises the standard error of the classes that were already hard
most (Table 1: "cat" and "dog" vs "car" and "ship" on CIFAR-10). Here the three methods are trained
from scratch (``deep.train`` defaults per data set) for each seed; the numbers are the test-set
errors of their ``final.json`` (robust error under PGD-20 at the data set's eps).

* ``frl_fig1.png``: per method, the class-wise standard and robust error (mean ± std over seeds);
  last panel: the per-class change natural -> PGD-AT, classes sorted by natural standard error.
* ``frl_fig1.csv``: method, class, standard / robust error (mean, std).
* ``frl_table1.csv`` / ``frl_table1.md``: Table 1 for every class, the two hardest and two easiest
  classes of natural training marked.

    python -m paper_figures.frl_fig1 --quick                       # digits, 1 seed
    python -m paper_figures.frl_fig1                               # Fashion-MNIST, 3 seeds
    python -m paper_figures.frl_fig1 --dataset cifar10 --data-dir data/cifar10 --device cuda
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from paper_figures.aggregate import per_class_error, per_class_over_seeds, write_markdown
from paper_figures.common import build_parser, make_logger, parse_args, write_csv
from paper_figures.runs import ensure_run, main_with_errors, read_final
from paper_figures.style import (
    METRIC_COLORS,
    class_ticks,
    method_color,
    method_label,
    new_figure,
    save_figure,
)

__all__ = ["METHODS", "class_stats", "collect", "main", "plot", "write_class_csv"]

NAME = "frl_fig1"
METHODS = ("natural", "pgd-at", "trades")


def collect(profile, runs_dir, device=None, log=None) -> dict[str, list[dict]]:
    """final.json dicts per method (one per seed), training the missing runs."""
    finals: dict[str, list[dict]] = {}
    for method in METHODS:
        finals[method] = [
            read_final(ensure_run(profile.scratch(method, s), runs_dir, device=device, log=log))
            for s in profile.seeds
        ]
    return finals


def class_stats(finals: dict[str, list[dict]]) -> dict:
    """Per method and kind ("standard", "robust"): class-wise error mean and std over seeds (%)."""
    return {
        m: {
            kind: per_class_over_seeds(finals[m], lambda f, k=kind: per_class_error(f, k))
            for kind in ("standard", "robust")
        }
        for m in METHODS
    }


def plot(finals, classes, stats, profile, path, *, title: str) -> None:
    """Per method the class-wise standard / robust error; last panel natural -> PGD-AT."""
    n = len(classes)
    fig = new_figure(4.6 * (len(METHODS) + 1), 3.8)
    x = np.arange(n)
    width = 0.4
    for i, method in enumerate(METHODS):
        ax = fig.add_subplot(1, len(METHODS) + 1, i + 1)
        for j, kind in enumerate(("standard", "robust")):
            mean, std = stats[method][kind]
            ax.bar(x + (j - 0.5) * width, mean, width, yerr=std if len(profile.seeds) > 1 else None,
                   color=METRIC_COLORS[kind], label=f"{kind} error (avg {mean.mean():.1f}%)",
                   capsize=2)  # fmt: skip
        class_ticks(ax, classes)
        ax.set_ylim(0, 105)
        ax.set_ylabel("test error (%)")
        ax.set_title(method_label(method), color=method_color(method), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    ax = fig.add_subplot(1, len(METHODS) + 1, len(METHODS) + 1)
    order = np.argsort(-stats["natural"]["standard"][0], kind="stable")
    d_std = stats["pgd-at"]["standard"][0] - stats["natural"]["standard"][0]
    d_rob = stats["pgd-at"]["robust"][0] - stats["natural"]["robust"][0]
    ax.bar(x - 0.2, d_std[order], 0.4, color=METRIC_COLORS["standard"], label="standard error")
    ax.bar(x + 0.2, d_rob[order], 0.4, color=METRIC_COLORS["robust"], label="robust error")
    ax.axhline(0, color="black", linewidth=0.8)
    class_ticks(ax, [classes[k] for k in order])
    ax.set_ylabel("change natural -> PGD-AT (points)")
    ax.set_xlabel("classes, hardest under natural training first")
    ax.set_title("FRL Table 1: Diff. (Adv. - Nat.)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{title} — {profile.describe()}", fontsize=10)
    save_figure(fig, path, smoke_test=profile.smoke_test)


def write_class_csv(path, finals, classes, stats):
    """method, class, standard / robust error (mean, std over seeds, %), seeds."""
    rows = []
    for m in METHODS:
        for c, name in enumerate(classes):
            rows.append((m, c, name, float(stats[m]["standard"][0][c]),
                         float(stats[m]["standard"][1][c]), float(stats[m]["robust"][0][c]),
                         float(stats[m]["robust"][1][c]), len(finals[m])))  # fmt: skip
    header = ["method", "class_index", "class", "standard_error_pct", "standard_error_std",
              "robust_error_pct", "robust_error_std", "seeds"]  # fmt: skip
    return write_csv(path, header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0])
    args = parse_args(parser, argv)
    profile = args.profile
    log = make_logger(args.quiet)
    finals = collect(profile, args.runs_dir, args.device, log)
    classes = finals["natural"][0]["classes"]
    stats = class_stats(finals)
    out = args.out
    fig_csv = write_class_csv(out / f"{NAME}.csv", finals, classes, stats)
    nat_std = stats["natural"]["standard"][0]
    order = np.argsort(-nat_std, kind="stable")
    hardest, easiest = set(order[:2].tolist()), set(order[-2:].tolist())
    t_rows, md_rows = [], []
    for c in order:
        mark = "hardest" if c in hardest else ("easiest" if c in easiest else "")
        vals = [stats[m][k][0][c] for k in ("standard", "robust") for m in ("natural", "pgd-at")]
        nat_s, adv_s, nat_r, adv_r = (float(v) for v in vals)
        t_rows.append((classes[c], mark, nat_s, adv_s, adv_s - nat_s, nat_r, adv_r, adv_r - nat_r))
        md_rows.append([classes[c] + (f" ({mark})" if mark else "")]
                       + [f"{v:.1f}" for v in t_rows[-1][2:]])  # fmt: skip
    header = ["class", "selected", "std_err_natural", "std_err_pgd_at", "std_err_diff",
              "rob_err_natural", "rob_err_pgd_at", "rob_err_diff"]  # fmt: skip
    table_csv = write_csv(out / "frl_table1.csv", header, t_rows)
    md = write_markdown(
        ["class", "Std. err Nat.", "Std. err PGD-AT", "Diff.", "Rob. err Nat.", "Rob. err PGD-AT",
         "Diff."],
        md_rows,
        out / "frl_table1.md",
        title=f"FRL Table 1 (errors %, {profile.describe()})",
    )  # fmt: skip
    png = out / f"{NAME}.png"
    norm = "l2 " if profile.norm == "l2" else ""
    plot(finals, classes, stats, profile, png,
         title=f"FRL Fig. 1: class-wise standard / {norm}robust (PGD-20) test error")  # fmt: skip
    for p in (png, fig_csv, table_csv, md):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
