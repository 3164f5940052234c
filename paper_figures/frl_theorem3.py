"""FRL Appendix A.3 (Theorem 3): class-wise standard-error increase of adversarial training on D'.

D' (FRL Eq. 19) has d robust features of scale eta > eps and m non-robust ones of scale gamma < eps;
class +1 is K times wider. Theorem 3 (Eq. 20) says the optimal l_inf-robust linear classifier
raises the standard error of class +1 by more than that of class -1. Each panel shows, per class,
R_nat(f_rob; c) - R_nat(f_nat; c):

* line: the paper's printed formula (Proof 6, through A and B; ``theorem3_printed``);
* circles: the exact optimal linear classifiers, found numerically (``theory.features``
  ``FeatureMixture.optimal_linear``; equal to the printed formula for l_inf);
* squares with 95% intervals: simulation, the natural and robust 0-1 ERM over w = (u 1_d, v 1_m), b
  on samples of D' (``sim.features.fit_two_scale_erm``), evaluated on fresh samples; mean and
  Student-t interval over independent replicates (6 x 50,000 training points per point);
* dotted: the exact l_2 optimum at the same eps (f_rob keeps the non-robust features; class -1's
  error falls).

Left: against m / d at fixed gamma / eps; right: against gamma / eps at fixed m / d.

    python -m paper_figures.frl_theorem3 [--quick] [--d 1 --eta 1 --sigma 1 --K 2 --eps 0.5]

Writes ``frl_theorem3.png`` and ``frl_theorem3.csv`` (sweep, m, gamma, class, printed, exact,
exact_l2, sim, sim_ci_low, sim_ci_high); the rows are cached in ``--runs-dir`` (the full
simulation takes about a minute of CPU time) and reused when every setting matches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from deep.runtime import budget_value
from paper_figures.common import DEFAULT_RUNS_DIR, build_parser, parse_args, write_csv
from paper_figures.runs import main_with_errors
from paper_figures.style import BINARY_CLASS_COLORS, new_figure, save_figure
from sim.features import fit_two_scale_erm, sample_block_sums
from theory.features import FeatureMixture, theorem3_exact, theorem3_printed

__all__ = ["increase_rows", "main"]

NAME = "frl_theorem3"
CLASSES = ("-1", "+1")
HEADER = ("sweep", "m", "gamma", "class", "printed", "exact", "exact_l2", "sim", "sim_ci_low",
          "sim_ci_high")  # fmt: skip


def _simulated_increase(mixture, eps, n_train, n_test, replicates, rng) -> dict:
    """Increase per class of the two-scale 0-1 ERM, natural vs robust: the mean over
    ``replicates`` independent training and test samples, with a 95% Student-t interval (so the
    interval covers the training sample's variability as well as the test sample's)."""
    d, m = int(mixture.d), int(mixture.m)
    values = []
    for _ in range(replicates):
        s, y = sample_block_sums(mixture, n_train, rng)
        s_te, y_te = sample_block_sums(mixture, n_test, rng)
        err = {}
        for kind, e in (("natural", 0.0), ("robust", eps)):
            clf = fit_two_scale_erm(s, y, d=d, m=m, eps=e)
            wrong = y_te * (clf.w[0] * s_te[:, 0] + clf.w[d] * s_te[:, 1] + clf.b) <= 0
            err[kind] = np.array([wrong[y_te == c].mean() for c in (-1, 1)])
        values.append(err["robust"] - err["natural"])
    values = np.array(values)
    mean = values.mean(axis=0)
    half = stats.t.ppf(0.975, replicates - 1) * values.std(axis=0, ddof=1) / np.sqrt(replicates)
    return {
        c: {"value": float(mean[i]), "ci_low": float(mean[i] - half[i]),
            "ci_high": float(mean[i] + half[i])}
        for i, c in enumerate(CLASSES)
    }  # fmt: skip


def increase_rows(
    base: dict, m_grid, gamma_grid, *, n_train: int, n_test: int, replicates: int, seed: int = 0
):
    """Rows (sweep, m, gamma, class, printed, exact, exact_l2, sim, ci_low, ci_high).

    ``base``: d, m, eta, gamma, sigma, K, eps; the "m" sweep varies m over ``m_grid``, the "gamma"
    sweep gamma over ``gamma_grid``. ``n_train`` / ``n_test``: samples of D' per point and
    replicate (at least 2 replicates).
    """
    rng = np.random.default_rng(seed)
    rows = []
    points = [("m", {**base, "m": int(m)}) for m in m_grid]
    points += [("gamma", {**base, "gamma": float(g)}) for g in gamma_grid]
    for sweep, p in points:
        args = [p[k] for k in ("d", "m", "eta", "gamma", "sigma", "K", "eps")]
        printed = theorem3_printed(*args).increase
        exact = theorem3_exact(*args)[0].increase
        exact_l2 = theorem3_exact(*args, norm="l2")[0].increase
        mixture = FeatureMixture(*args[:-1])
        sim = _simulated_increase(mixture, p["eps"], n_train, n_test, replicates, rng)
        for i, c in enumerate(CLASSES):
            rows.append(
                (sweep, p["m"], p["gamma"], c, float(printed[i]), float(exact[i]),
                 float(exact_l2[i]), sim[c]["value"], sim[c]["ci_low"], sim[c]["ci_high"])
            )  # fmt: skip
    return rows


def _plot(rows, base: dict, path, smoke_test) -> None:
    fig = new_figure(12.0, 4.4)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for ax, sweep in zip(axes, ("m", "gamma")):
        for c in CLASSES:
            sel = [r for r in rows if r[0] == sweep and r[3] == c]
            x = np.array([r[1] / base["d"] if sweep == "m" else r[2] / base["eps"] for r in sel])
            col = BINARY_CLASS_COLORS[c]
            v = 100.0 * np.array([r[4:10] for r in sel])
            ax.plot(x, v[:, 0], "-", color=col, lw=1.5, label=f"class {c}: paper's formula")
            ax.plot(x, v[:, 1], "o", color=col, mfc="none", ms=7, label=f"class {c}: exact optimum")
            yerr = [v[:, 3] - v[:, 4], v[:, 5] - v[:, 3]]
            ax.errorbar(x, v[:, 3], yerr=yerr, fmt="s", ms=3, color=col, capsize=2,
                        label=f"class {c}: simulation (ERM, 95% CI)")  # fmt: skip
            ax.plot(x, v[:, 2], ":", color=col, lw=1.2, label=f"class {c}: exact, l_2 budget")
        ax.axhline(0.0, color="black", lw=0.6)
        ax.grid(alpha=0.3)
        ax.set_ylabel("R_nat(f_rob; c) - R_nat(f_nat; c)  (%)")
        if sweep == "m":
            ax.set_xscale("log")
            ax.set_xlabel("m / d (non-robust / robust features)")
            ax.set_title(
                f"vs m / d  (gamma / eps = {base['gamma'] / base['eps']:.2g})", fontsize=10
            )
        else:
            ax.set_xlabel("gamma / eps (scale of a non-robust feature / budget)")
            ax.set_title(f"vs gamma / eps  (m / d = {base['m'] / base['d']:g})", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7.5)
    fig.suptitle(
        f"FRL Thm 3 (Eq. 20) on D': d = {base['d']}, eta = {base['eta']:g}, sigma = "
        f"{base['sigma']:g}, K = {base['K']:g}, l_inf eps = {base['eps']:g}: class +1's standard "
        "error rises more than class -1's",
        fontsize=10,
    )
    save_figure(fig, path, smoke_test=smoke_test)


def _read_rows(path: Path) -> list[tuple]:
    """The rows of a cached CSV (written by this script), typed as ``increase_rows`` makes them."""
    with open(path, newline="") as fh:
        return [
            (r["sweep"], int(r["m"]), float(r["gamma"]), r["class"],
             *(float(r[k]) for k in HEADER[4:]))
            for r in csv.DictReader(fh)
        ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0], deep=False)
    parser.add_argument("--d", type=int, default=1, help="robust features")
    parser.add_argument("--m", type=int, default=50, help="non-robust features (gamma sweep)")
    parser.add_argument("--eta", type=float, default=1.0, help="scale of a robust feature")
    parser.add_argument(
        "--gamma", type=float, default=0.3, help="scale of a non-robust feature (m sweep)"
    )
    parser.add_argument("--sigma", type=budget_value, default=1.0, help="std of class -1")
    parser.add_argument("--K", type=float, default=2.0, help="std ratio of class +1 to -1 (> 1)")
    parser.add_argument(
        "--eps", type=budget_value, default=0.5, help="l_inf budget, gamma < eps < eta"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=DEFAULT_RUNS_DIR,
        help="cache of the computed rows (reused when every setting matches)",
    )
    args = parse_args(parser, argv)
    if args.d < 1 or args.m < 1:
        parser.error(f"--d and --m must be >= 1, got {args.d}, {args.m}")
    if not (args.sigma > 0 and args.K > 1):
        parser.error(f"--sigma must be > 0 and --K > 1, got {args.sigma}, {args.K}")
    if not 0 <= args.gamma < args.eps < args.eta:
        parser.error(
            f"need 0 <= --gamma < --eps < --eta (FRL Eq. 19), got {args.gamma}, {args.eps}, "
            f"{args.eta}"
        )
    base = {k: getattr(args, k) for k in ("d", "m", "eta", "gamma", "sigma", "K", "eps")}
    points, reps = (4, 3) if args.quick else (10, 6)
    m_grid = np.unique(np.round(np.geomspace(1, 500, points) * args.d).astype(int))
    gamma_grid = np.linspace(0.05, 0.95, points) * args.eps
    n_train, n_test = (10_000, 20_000) if args.quick else (50_000, 100_000)
    sizes = {"n_train": n_train, "n_test": n_test, "replicates": reps, "seed": args.seed}
    setting = {**base, **sizes, "m_grid": m_grid.tolist(), "gamma_grid": gamma_grid.tolist()}
    key = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    cache = args.runs_dir / f"{NAME}-{key}.csv"
    if cache.exists():
        rows = _read_rows(cache)
    else:
        rows = increase_rows(base, m_grid, gamma_grid, **sizes)
        write_csv(cache, HEADER, rows)
    csv_path = write_csv(args.out / f"{NAME}.csv", HEADER, rows)
    png = args.out / f"{NAME}.png"
    smoke = (
        f"--quick: a smoke test ({reps} x {n_train} training / {n_test} test samples per point)"
        if args.quick
        else None
    )
    _plot(rows, base, png, smoke)
    print(png)
    print(csv_path)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
