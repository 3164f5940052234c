"""FRL Figure 2: logistic regression and an MLP, natural vs robust, on the 2-D Gaussian mixture.

FRL's setting: theta = (2, 2), class "-1" ~ N(-theta, I), class "+1" ~ N(+theta, 2 I), eps = 0.5
(l_inf). ``sim.gaussian_demo`` fits the four classifiers and evaluates them on fresh test points;
this script runs it once into ``--runs-dir`` (reused afterwards) and reads its ``results.json`` and
its boundary figure:

* left: the decision boundaries drawn by ``sim.gaussian_demo`` (natural green, robust red; the
  robust boundary moves toward the harder class "+1");
* right: each classifier's class-wise standard and robust test error with 95% confidence
  intervals, and the optimal linear classifier's exact value (FRL Theorems 1-2).

    python -m paper_figures.frl_fig2 [--quick]

Writes ``frl_fig2.png`` and ``frl_fig2.csv`` (classifier, class, metric, value, CI, theory).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from paper_figures.common import DEFAULT_RUNS_DIR, build_parser, make_logger, parse_args, write_csv
from paper_figures.runs import RunError, main_with_errors
from paper_figures.style import BINARY_CLASS_COLORS, new_figure, save_figure

__all__ = ["ensure_sim_run", "main"]

NAME = "frl_fig2"
CLASSIFIERS = ("logistic-natural", "logistic-robust", "mlp-natural", "mlp-robust")


def ensure_sim_run(runs_dir: Path, sim_argv: Sequence[str], log=None) -> Path:
    """Run ``sim.gaussian_demo`` with ``sim_argv`` into a cached folder unless it finished."""
    key = hashlib.sha1(json.dumps(list(sim_argv)).encode()).hexdigest()[:10]
    out = Path(runs_dir) / f"sim-fig2-{key}"
    if (out / "results.json").exists():
        return out
    from sim import gaussian_demo

    out.mkdir(parents=True, exist_ok=True)
    if log is not None:
        log(f"running sim.gaussian_demo into {out} ...")
    import contextlib

    with (out / "sim.log").open("w") as fh, contextlib.redirect_stdout(fh):
        try:
            status = gaussian_demo.main([*sim_argv, "--out", str(out), "--quiet"])
        except SystemExit as exc:
            status = exc.code
    if status != 0 or not (out / "results.json").exists():
        raise RunError(f"sim.gaussian_demo failed (status {status}); see {out / 'sim.log'}")
    return out


def _read_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
        setting = results["settings"]["fig2"]
        missing = [c for c in CLASSIFIERS if c not in setting["classifiers"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunError(f"{path} is not a results.json of sim.gaussian_demo's fig2 setting "
                       f"({exc!r}); delete its folder to recompute") from None  # fmt: skip
    if missing:
        raise RunError(f"{path} lacks classifiers {missing}")
    return results


def _rows(setting: dict) -> list[tuple]:
    rows = []
    for clf in CLASSIFIERS:
        entry = setting["classifiers"][clf]
        for cls in ("-1", "+1"):
            for metric in ("standard", "robust", "boundary"):
                t = entry["test"][cls][metric]
                rows.append((clf, cls, metric, t["value"], t["ci_low"], t["ci_high"],
                             entry["theory_optimal"][cls][metric]))  # fmt: skip
    return rows


def _plot(results: dict, boundary_png: Path, path: Path) -> None:
    from matplotlib.image import imread

    setting = results["settings"]["fig2"]
    fig = new_figure(15.0, 5.2)
    grid = fig.add_gridspec(1, 3, width_ratios=[2.6, 1.0, 1.0])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(imread(boundary_png))
    ax.set_axis_off()
    ax.set_title("decision boundaries (drawn by sim.gaussian_demo)", fontsize=9)
    width = 0.38
    x = np.arange(len(CLASSIFIERS))
    for k, metric in enumerate(("standard", "robust")):
        ax = fig.add_subplot(grid[0, 1 + k])
        for j, cls in enumerate(("-1", "+1")):
            tests = [setting["classifiers"][c]["test"][cls][metric] for c in CLASSIFIERS]
            vals = np.array([100 * t["value"] for t in tests])
            err = np.array(
                [[100 * (t["value"] - t["ci_low"]) for t in tests],
                 [100 * (t["ci_high"] - t["value"]) for t in tests]]
            )  # fmt: skip
            theory = [100 * setting["classifiers"][c]["theory_optimal"][cls][metric]
                      for c in CLASSIFIERS]  # fmt: skip
            pos = x + (j - 0.5) * width
            ax.bar(pos, vals, width, color=BINARY_CLASS_COLORS[cls], label=f"class {cls}")
            ax.errorbar(pos, vals, yerr=err, fmt="none", ecolor="black", lw=1, capsize=2)
            ax.scatter(pos, theory, marker="_", s=150, color="black", zorder=3,
                       label="optimal linear (theory)" if j == 0 else None)  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels([c.replace("-", "\n") for c in CLASSIFIERS], fontsize=8)
        ax.set_ylabel(f"{metric} error (%)")
        ax.set_title(f"class-wise {metric} test error, 95% CI", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    m = setting["mixture"]
    cfg = results.get("config", {})
    fig.suptitle(
        f"FRL Fig. 2: d = {m['d']}, theta = ({m['eta']:g}, {m['eta']:g}), sigma_-1^2 = "
        f"{m['sigma'] ** 2:g}, sigma_+1^2 = {(m['K'] * m['sigma']) ** 2:g}, "
        f"eps = {setting['eps']:g}"
        f" ({setting['norm']}); {cfg.get('n_train', '?')} training points, "
        f"{cfg.get('n_test', '?')} test points",
        fontsize=10,
    )
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0], deep=False)
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                        help="cache folder for the simulation's output")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    args = parse_args(parser, argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    sim_argv = ["--settings", "fig2", "--parts", "logistic", "mlp", "--seed", str(args.seed)]
    if args.quick:
        sim_argv.append("--quick")
    log = make_logger(args.quiet)
    sim_dir = ensure_sim_run(args.runs_dir, sim_argv, log)
    results = _read_results(sim_dir / "results.json")
    boundary_png = sim_dir / "fig2_boundaries.png"
    if not boundary_png.exists():
        raise RunError(f"{boundary_png} is missing: sim.gaussian_demo did not draw the boundaries")
    csv_path = write_csv(
        args.out / f"{NAME}.csv",
        ["classifier", "class", "metric", "test_error", "ci_low", "ci_high", "theory_optimal"],
        _rows(results["settings"]["fig2"]),
    )
    png = args.out / f"{NAME}.png"
    _plot(results, boundary_png, png)
    print(png)
    print(csv_path)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
