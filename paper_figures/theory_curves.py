"""FRL Theorems 1-2 and Corollary 1 as curves: class-wise errors of the optimal classifiers.

For the Gaussian mixture of FRL Eq. 2 (class "+1" K times wider than class "-1") the optimal
natural classifier f_nat = sign(1.x + b_nat) (Eq. 5) and the optimal l_inf-robust one
f_rob = sign(1.x + b_rob), b_rob = g(eta - eps) (Theorem 2), are evaluated exactly with
:class:`theory.gaussian.Mixture`:

* left:   standard error of each class for f_nat and f_rob as eps grows (Corollary 1: robust
  training lowers the easy class' error and raises the hard class' one);
* middle: robust error of each class for f_rob as eps grows;
* right:  standard error of each class as K grows, at a fixed eps (Theorem 1: K = 1 is fair).

    python -m paper_figures.theory_curves [--d 100 --eta 0.2 --sigma 1 --K 2 --eps 0.1]

Writes ``theory_curves.png`` and ``theory_curves.csv`` (sweep, eps, K, classifier, class,
standard / robust / boundary error). These are the theory module's own outputs: nothing is fitted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from deep.runtime import budget_value
from paper_figures.common import build_parser, parse_args, write_csv
from paper_figures.runs import main_with_errors
from paper_figures.style import BINARY_CLASS_COLORS, new_figure, save_figure
from theory.gaussian import Mixture

__all__ = ["class_error_table", "main"]

NAME = "theory_curves"


def class_error_table(d: int, eta: float, sigma: float, K: float, eps_grid, K_grid, eps_k: float):
    """Rows (sweep, eps, K, classifier, class, standard, robust, boundary) from theory.gaussian.

    ``eps_grid``: budgets for the eps sweep at this K; ``K_grid``: ratios for the K sweep at
    budget ``eps_k``. The natural classifier's robust/boundary errors are at the same eps.
    """
    rows = []

    def add(sweep, mixture, eps, k_value):
        b = {"natural": mixture.natural_intercept(), "robust": mixture.robust_intercept(eps)}
        for clf, intercept in b.items():
            std = mixture.standard_errors(intercept)
            rob = mixture.robust_errors(intercept, eps)
            bnd = mixture.boundary_errors(intercept, eps)
            for i, cls in enumerate(("-1", "+1")):
                rows.append(
                    (sweep, float(eps), float(k_value), clf, cls,
                     float(std[i]), float(rob[i]), float(bnd[i]))
                )  # fmt: skip

    mixture = Mixture(d, eta, sigma, K)
    for eps in eps_grid:
        add("eps", mixture, eps, K)
    for k_value in K_grid:
        add("K", Mixture(d, eta, sigma, k_value), eps_k, k_value)
    return rows


def _plot(rows, params: dict, path) -> None:
    fig = new_figure(13.0, 3.9)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    styles = {"natural": "--", "robust": "-"}

    def series(sweep, clf, cls, column):
        sel = [r for r in rows if r[0] == sweep and r[3] == clf and r[4] == cls]
        x = [r[1] if sweep == "eps" else r[2] for r in sel]
        return np.array(x), 100.0 * np.array([r[column] for r in sel])

    for cls in ("-1", "+1"):
        color = BINARY_CLASS_COLORS[cls]
        for clf in ("natural", "robust"):
            x, y = series("eps", clf, cls, 5)
            axes[0].plot(x, y, styles[clf], color=color, label=f"class {cls}, f_{clf[:3]}")
            x, y = series("K", clf, cls, 5)
            axes[2].plot(x, y, styles[clf], color=color, label=f"class {cls}, f_{clf[:3]}")
        x, y = series("eps", "robust", cls, 6)
        axes[1].plot(x, y, "-", color=color, label=f"class {cls}, f_rob")
        x, y = series("eps", "natural", cls, 6)
        axes[1].plot(x, y, "--", color=color, label=f"class {cls}, f_nat")
    p = params
    axes[0].set_title(f"standard error vs eps (K = {p['K']:g})", fontsize=10)
    axes[1].set_title(f"robust error vs eps (K = {p['K']:g})", fontsize=10)
    axes[2].set_title(f"standard error vs K (eps = {p['eps']:g})", fontsize=10)
    xlabels = ("eps (l_inf budget)", "eps (l_inf budget)", "K = sigma_+1 / sigma_-1")
    for ax, xlabel in zip(axes, xlabels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"FRL Thm 1-2, Cor. 1: optimal linear classifiers on the Gaussian mixture "
        f"(d = {p['d']}, eta = {p['eta']:g}, sigma = {p['sigma']:g}); exact, from theory.gaussian",
        fontsize=10,
    )
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0], deep=False)
    parser.add_argument("--d", type=int, default=100, help="dimension")
    parser.add_argument("--eta", type=float, default=0.2, help="class mean +-(eta,...,eta)")
    parser.add_argument("--sigma", type=budget_value, default=1.0, help="std of class -1")
    parser.add_argument("--K", type=float, default=2.0, help="std ratio of class +1 to -1 (>= 1)")
    parser.add_argument("--eps", type=budget_value, default=0.1, help="budget of the K sweep")
    parser.add_argument("--k-max", type=float, default=4.0, help="largest K of the K sweep")
    args = parse_args(parser, argv)
    if args.d < 1:
        parser.error(f"--d must be >= 1, got {args.d}")
    if not (args.eta > 0 and args.sigma > 0):
        parser.error("--eta and --sigma must be > 0")
    if not args.K >= 1 or not args.k_max > 1:
        parser.error(f"--K must be >= 1 and --k-max > 1, got {args.K}, {args.k_max}")
    if not 0 <= args.eps < args.eta:
        parser.error(f"--eps must be in [0, eta) = [0, {args.eta:g}), got {args.eps}")
    points = 25 if args.quick else 101
    eps_grid = np.linspace(0.0, 0.9 * args.eta, points)
    k_grid = np.linspace(1.0, args.k_max, points)
    params = {"d": args.d, "eta": args.eta, "sigma": args.sigma, "K": args.K, "eps": args.eps}
    rows = class_error_table(args.d, args.eta, args.sigma, args.K, eps_grid, k_grid, args.eps)
    out = args.out
    csv_path = write_csv(
        out / f"{NAME}.csv",
        ["sweep", "eps", "K", "classifier", "class", "standard_error", "robust_error",
         "boundary_error"],
        rows,
    )  # fmt: skip
    png = out / f"{NAME}.png"
    _plot(rows, params, png)
    print(png)
    print(csv_path)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
