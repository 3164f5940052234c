"""FRL Figure 4 (Appendix A.1.3): class-wise certified errors of randomized smoothing.

FRL certifies Cohen et al.'s randomized smoothing on CIFAR-10 for several noise levels sigma and
finds the same disparity as adversarial training: the classes that are hard for standard
training ("cat", "dog") also have the largest certified errors. Here, for each sigma, a base
classifier is trained with Gaussian-noise augmentation (``deep.train --method gaussian-noise
--sigma S``, the data set's defaults otherwise, last epoch's checkpoint) and its smoothed
classifier is certified on a stratified test subset (``python -m deep.certify``, CERTIFY with
n0 = 100, alpha = 0.001). Certified standard error = 1 - certified accuracy at radius 0; certified
robust error = 1 - certified accuracy at l_2 radius 0.5 (an abstention counts as an error).

* ``frl_fig4.png``: per class, the certified standard error (left) and certified robust error at
  radius 0.5 (right), one bar per sigma (mean ± std over seeds).
* ``frl_fig4.csv``: sigma, class, certified standard / robust error and abstention rate (%).

    python -m paper_figures.frl_fig4 --quick   # digits: sigma 0.25, 0.5; n 1000, 10 images/class
    python -m paper_figures.frl_fig4           # Fashion-MNIST: sigma 0.12-1.0; n 1000, 20/class
    python -m paper_figures.frl_fig4 --dataset cifar10 --data-dir data/cifar10 --device cuda
                                               # CIFAR-10: n 100000, 50 images/class
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from deep.runtime import budget_value
from paper_figures.common import build_parser, make_logger, parse_args, write_csv
from paper_figures.runs import ensure_certified, ensure_run, main_with_errors, mean_std
from paper_figures.style import class_ticks, new_figure, save_figure

__all__ = ["ROBUST_RADIUS", "certify_options", "main", "sigmas_for"]

NAME = "frl_fig4"

#: FRL's certified robust error is at l_2 radius 0.5.
ROBUST_RADIUS = 0.5


def sigmas_for(profile) -> tuple[float, ...]:
    """Cohen et al.'s noise levels (0.12, 0.25, 0.5, 1.0); two of them with --quick."""
    return (0.25, 0.5) if profile.quick else (0.12, 0.25, 0.5, 1.0)


def certify_options(profile, sigma: float, n: int | None, per_class: int | None) -> list[str]:
    """deep.certify options: n = 100000 on CIFAR (Cohen et al.), 1000 on the CPU-sized sets."""
    n = n if n is not None else (100_000 if profile.is_cifar else 1000)
    if per_class is None:
        per_class = profile.test_per_class or (10 if profile.quick else 50 if profile.is_cifar
                                               else 20)  # fmt: skip
    options = ["--dataset", profile.dataset, "--sigma", repr(float(sigma)), "--n0", "100",
               "--n", str(n), "--alpha", "0.001", "--n-per-class", str(per_class),
               "--radii", f"0,0.25,{ROBUST_RADIUS},0.75,1.0"]  # fmt: skip
    if profile.data_dir:
        options += ["--data-dir", str(profile.data_dir)]
    return options


def _parse_sigmas(parser, text: str | None, profile) -> tuple[float, ...]:
    if text is None:
        return sigmas_for(profile)
    try:
        values = tuple(budget_value(v) for v in text.split(",") if v.strip())
    except argparse.ArgumentTypeError:
        parser.error(
            f"--sigmas must be comma-separated numbers or fractions (64/255), got {text!r}"
        )
    if not values or any(not (v > 0 and np.isfinite(v)) for v in values):
        parser.error(f"--sigmas must be finite numbers > 0, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument(
        "--sigmas",
        default=None,
        help="comma-separated noise levels (default: 0.12,0.25,0.5,1.0; 0.25,0.5 with --quick)",
    )
    parser.add_argument(
        "--certify-n",
        type=int,
        default=None,
        help="estimation samples (default: 100000 on CIFAR, 1000 otherwise)",
    )
    parser.add_argument(
        "--certify-per-class",
        type=int,
        default=None,
        help="test images per class certified (default: 50 on CIFAR, 20 otherwise, 10 with "
        "--quick)",
    )
    args = parse_args(parser, argv, multi_seed=False)
    profile = replace(args.profile, norm="l2")  # validation / test attacks in the l_2 ball
    sigmas = _parse_sigmas(parser, args.sigmas, profile)
    for option in ("certify_n", "certify_per_class"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    log = make_logger(args.quiet)
    results: dict[float, list[dict]] = {}
    for sigma in sigmas:
        results[sigma] = []
        for seed in profile.seeds:
            spec = profile.scratch(
                "gaussian-noise", seed, "--sigma", repr(float(sigma)),
                "--final-attacks", "clean", "--final-checkpoint", "last",
                name=f"gaussian-noise-{sigma:g}",
            )  # fmt: skip
            run_dir = ensure_run(spec, args.runs_dir, device=args.device, log=log)
            options = certify_options(profile, sigma, args.certify_n, args.certify_per_class)
            results[sigma].append(ensure_certified(run_dir, options, device=args.device, log=log))
    classes = results[sigmas[0]][0]["classes"]
    stats = {s: _class_errors(results[s]) for s in sigmas}
    rows = []
    for s in sigmas:
        for c, name in enumerate(classes):
            rows.append((s, c, name, *(float(stats[s][k][i][c]) for k in ("standard", "robust")
                                       for i in (0, 1)),
                         float(stats[s]["abstain"][0][c]), len(results[s])))  # fmt: skip
    header = ["sigma", "class_index", "class", "cert_standard_error_pct", "cert_standard_error_std",
              "cert_robust_error_pct", "cert_robust_error_std", "abstain_pct", "seeds"]  # fmt: skip
    csv_path = write_csv(args.out / f"{NAME}.csv", header, rows)
    png = args.out / f"{NAME}.png"
    _plot(classes, stats, sigmas, profile, results[sigmas[0]][0], png)
    for p in (png, csv_path):
        print(p)
    return 0


def _class_errors(certs: list[dict]) -> dict:
    """Per kind: (mean, std) over seeds of the class-wise certified error / abstention (%)."""
    out = {}
    for kind, key in (("standard", "0.0"), ("robust", repr(ROBUST_RADIUS))):
        per_seed = np.array([[100 * (1 - a) for a in c["certified_accuracy"][key]["per_class"]]
                             for c in certs])  # fmt: skip
        out[kind] = _mean_std_columns(per_seed)
    out["abstain"] = _mean_std_columns(
        np.array([[100 * a for a in c["abstain"]["per_class"]] for c in certs])
    )
    return out


def _mean_std_columns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [mean_std(values[:, c]) for c in range(values.shape[1])]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _plot(classes, stats, sigmas, profile, example: dict, path) -> None:
    fig = new_figure(11.0, 3.9)
    x = np.arange(len(classes))
    width = 0.8 / len(sigmas)
    titles = {"standard": "certified standard error (radius 0)",
              "robust": f"certified robust error (l2 radius {ROBUST_RADIUS:g})"}  # fmt: skip
    for i, kind in enumerate(("standard", "robust")):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, s in enumerate(sigmas):
            mean, std = stats[s][kind]
            label = f"sigma {s:g} (avg {mean.mean():.1f}%, worst {mean.max():.1f}%)"
            yerr = std if len(profile.seeds) > 1 else None
            ax.bar(x + (j - (len(sigmas) - 1) / 2) * width, mean, width, yerr=yerr, capsize=2,
                   label=label)  # fmt: skip
        class_ticks(ax, classes)
        ax.set_ylim(0, 105)
        ax.set_ylabel("test error (%)")
        ax.set_title(titles[kind], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"FRL Fig. 4: randomized smoothing, class-wise certified errors — {profile.describe()}, "
        f"n {example['n']}, {example['n_per_class']} images/class",
        fontsize=10,
    )
    save_figure(fig, path, smoke_test=profile.smoke_test)


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
