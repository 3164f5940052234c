"""FAAL's class weights (supp. Eq. 1-2) as a function of the KL budget tau, and Theorem 1's bound.

For fixed class statistics l_c (by default ten softmax margins in [-1, 1], higher = worse class)
the worst-case weights w*(tau) of ``max_w sum_c w_c l_c s.t. KL(u || w) <= tau`` are computed
exactly by :func:`theory.dro.solve_kl_dro`:

* left:   w*_c(tau), one line per class (tau = 0: uniform, i.e. plain adversarial training);
* middle: the DRO value sum_c w*_c l_c for the forward constraint KL(u || w) (FAAL's) and the
  reverse one KL(w || u) (exponential tilting), against the uniform mean and the worst class;
* right:  Theorem 1 / Lemma 1 in the finite-sample form 1 - (n + 1)^C e^{-n tau}: the probability
  that the DRO value upper-bounds the mean loss under the true class distribution.

    python -m paper_figures.dro_weights [--losses -0.8,-0.6,...] [--tau-max 2]

Writes ``dro_weights.png`` and ``dro_weights.csv`` (tau, class, loss, forward and reverse weight).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from paper_figures.common import build_parser, parse_args, write_csv
from paper_figures.runs import main_with_errors
from paper_figures.style import new_figure, save_figure
from theory.dro import coverage_lower_bound, solve_kl_dro

__all__ = ["DEFAULT_LOSSES", "weight_table", "main"]

NAME = "dro_weights"

#: Ten illustrative class margins m_c = max_{j != y} p_j - p_y (FAAL Alg. 1 line 11): two hard
#: classes near the decision boundary, the rest learned with growing confidence.
DEFAULT_LOSSES = (-0.1, 0.05, -0.45, -0.5, -0.6, -0.65, -0.7, -0.75, -0.8, -0.85)


def weight_table(losses: Sequence[float], taus: Sequence[float]) -> list[tuple]:
    """Rows (tau, class, loss, w_forward, w_reverse) from :func:`theory.dro.solve_kl_dro`."""
    losses = np.asarray(losses, dtype=np.float64)
    rows = []
    for tau in taus:
        fwd = solve_kl_dro(losses, float(tau), direction="forward")
        rev = solve_kl_dro(losses, float(tau), direction="reverse")
        for c, loss in enumerate(losses):
            rows.append((float(tau), c, float(loss), float(fwd[c]), float(rev[c])))
    return rows


def _plot(rows, losses, taus, path, n_values=(100, 1000, 10000)) -> None:
    losses = np.asarray(losses, dtype=np.float64)
    num_classes = losses.size
    w_f = np.array([r[3] for r in rows]).reshape(len(taus), num_classes)
    w_r = np.array([r[4] for r in rows]).reshape(len(taus), num_classes)
    fig = new_figure(14.0, 3.9)
    ax = fig.add_subplot(1, 3, 1)
    order = np.argsort(-losses)
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0.0, 0.9, num_classes))
    for rank, c in enumerate(order):
        ax.plot(taus, w_f[:, c], color=colors[rank], label=f"class {c}: l = {losses[c]:+.2f}")
    ax.axhline(1.0 / num_classes, color="black", linestyle=":", linewidth=1, label="uniform 1/C")
    ax.set_xlabel("tau (KL budget)")
    ax.set_ylabel("class weight w*_c")
    ax.set_title("FAAL Eq. 1-2: worst-case class weights", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(1, 3, 2)
    ax.plot(taus, w_f @ losses, color="#2ca02c", label="forward KL(u || w) <= tau (FAAL)")
    ax.plot(taus, w_r @ losses, color="#9467bd", linestyle="--", label="reverse KL(w || u) <= tau")
    ax.axhline(losses.mean(), color="black", linestyle=":", linewidth=1, label="uniform mean")
    ax.axhline(losses.max(), color="#c44e52", linestyle=":", linewidth=1, label="worst class")
    ax.set_xlabel("tau (KL budget)")
    ax.set_ylabel("DRO value (worst-case mean loss)")
    ax.set_title("worst-case loss", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(1, 3, 3)
    tau_fine = np.geomspace(1e-4, max(taus), 400)
    for n in n_values:
        ax.plot(tau_fine, coverage_lower_bound(n, num_classes, tau_fine), label=f"n = {n}")
    ax.set_xlabel("tau (KL budget)")
    ax.set_xscale("log")
    ax.set_ylabel("coverage lower bound")
    ax.set_title(
        f"FAAL Thm 1: Pr(DRO value >= true mean) >= 1 - (n+1)^C e^(-n tau), C = {num_classes}",
        fontsize=8,
    )
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("KL-DRO class weights from theory.dro (exact dual solution)", fontsize=10)
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0], deep=False)
    parser.add_argument(
        "--losses",
        default=",".join(f"{v:g}" for v in DEFAULT_LOSSES),
        help="comma-separated class statistics l_c (e.g. softmax margins in [-1, 1])",
    )
    parser.add_argument("--tau-max", type=float, default=2.0, help="largest tau")
    args = parse_args(parser, argv)
    try:
        losses = [float(v) for v in args.losses.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--losses must be comma-separated numbers, got {args.losses!r}")
    if len(losses) < 2 or not np.all(np.isfinite(losses)):
        parser.error("--losses needs at least two finite numbers")
    if not (np.isfinite(args.tau_max) and args.tau_max > 0):
        parser.error(f"--tau-max must be a finite number > 0, got {args.tau_max}")
    taus = np.linspace(0.0, args.tau_max, 21 if args.quick else 81)
    rows = weight_table(losses, taus)
    csv_path = write_csv(
        args.out / f"{NAME}.csv", ["tau", "class", "loss", "weight_forward", "weight_reverse"], rows
    )
    png = args.out / f"{NAME}.png"
    _plot(rows, losses, taus, png)
    print(png)
    print(csv_path)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
