"""FRL Figure 3: for one class, upweighting its boundary error vs enlarging its attack budget.

FRL §5.3: fine-tuning the PGD-AT model with the FRL loss (CE + 1.5 KL) where one class
("deer" on CIFAR-10) gets (a) a boundary-error (KL) weight ratio r = 1.0 ... 4.5 over the other
classes, or (b) an attack budget eps_c = r eps, r = 1.0 ... 2.5; the other classes keep weight
and budget. Upweighting trades the class's boundary error for standard error; a larger budget
lowers its boundary and robust error without raising its standard error (the reason for FRL's
Remargin).

Each run is ``deep.train --method fixed-class`` (FRL's loss, beta 1.5, with fixed class weights,
applied from the first batch): ``--class-boundary-weight CLASS=r`` for (a), ``--class-eps-scale
CLASS=r`` for (b); ratio 1 is the same run for both (FRL's loss with uniform weights). The runs
fine-tune for FRL's schedule (lr 1e-3, x0.1 half way) and are evaluated at their last epoch
(``--final-checkpoint last``): the figure shows the model each ratio trains, not an epoch chosen by
the worst-class validation accuracy.

    python -m paper_figures.frl_fig3 --quick
    python -m paper_figures.frl_fig3 --dataset cifar10 --data-dir DIR --device cuda   # "deer"

Writes ``frl_fig3.png`` and ``frl_fig3.csv`` (experiment, ratio, error kind, mean, std, seeds).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from paper_figures.aggregate import per_class_error
from paper_figures.common import Profile, build_parser, make_logger, parse_args, write_csv
from paper_figures.runs import RunSpec, ensure_run, main_with_errors, mean_std, read_final
from paper_figures.style import METRIC_COLORS, new_figure, save_figure

__all__ = ["WEIGHT_RATIOS", "EPS_RATIOS", "run_spec", "main"]

NAME = "frl_fig3"
WEIGHT_RATIOS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)
EPS_RATIOS = (1.0, 1.5, 2.0, 2.5)
#: FRL's own choice on CIFAR-10; elsewhere the PGD-AT model's worst robust class is used.
PAPER_CLASS = {"cifar10": "deer"}


def run_spec(profile: Profile, base: RunSpec, seed: int, target: int, kind: str, ratio: float):
    """The fine-tuning run giving class ``target`` a boundary-weight (``kind="weight"``) or budget
    (``kind="eps"``) ``ratio`` times the others'; ratio 1 is one run for both kinds."""
    if kind not in ("weight", "eps"):
        raise ValueError(f"kind must be 'weight' or 'eps', got {kind!r}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio must be a finite number > 0, got {ratio}")
    extra = ["--final-checkpoint", "last"]
    name = "fixed-class-uniform"
    if ratio != 1.0:
        option = "--class-boundary-weight" if kind == "weight" else "--class-eps-scale"
        extra += [option, f"{target}={float(ratio)!r}"]
        name = f"fixed-{kind}{ratio:g}-c{target}"
    return profile.frl_finetune(base, "fixed-class", seed, None, *extra, name=name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument(
        "--target-class",
        default=None,
        help="class name or index (default: 'deer' on CIFAR-10, else the PGD-AT model's class "
        "with the highest robust error)",
    )
    args = parse_args(parser, argv)
    profile = args.profile
    log = make_logger(args.quiet)

    def run(spec):
        return ensure_run(spec, args.runs_dir, device=args.device, log=log)

    bases = {s: profile.scratch("pgd-at", s) for s in profile.seeds}
    base_final = read_final(run(bases[profile.seeds[0]]))
    classes = list(base_final["classes"])
    wanted = args.target_class or PAPER_CLASS.get(profile.dataset)
    if wanted is None:
        target = int(np.argmax(base_final["frl_errors"]["robust"]["per_class"]))
    elif wanted in classes:
        target = classes.index(wanted)
    elif wanted.isdigit() and int(wanted) < len(classes):
        target = int(wanted)
    else:
        parser.error(f"--target-class must be a class name or index of {classes}, got {wanted!r}")
    weight_ratios = (1.0, 2.5, 4.5) if profile.quick else WEIGHT_RATIOS
    eps_ratios = (1.0, 2.5) if profile.quick else EPS_RATIOS

    rows, curves = [], {}
    for kind, ratios in (("weight", weight_ratios), ("eps", eps_ratios)):
        for ratio in ratios:
            finals = [
                read_final(run(run_spec(profile, bases[s], s, target, kind, ratio)))
                for s in profile.seeds
            ]
            for err in ("standard", "boundary", "robust"):
                mean, std = mean_std([per_class_error(f, err)[target] for f in finals])
                curves.setdefault((kind, err), []).append((ratio, mean, std))
                rows.append((kind, ratio, classes[target], err, mean, std, len(finals)))

    fig = new_figure(10.0, 3.8)
    titles = {
        "weight": "(a) upweight its boundary error",
        "eps": "(b) enlarge its perturbation budget",
    }
    for k, kind in enumerate(("weight", "eps")):
        ax = fig.add_subplot(1, 2, k + 1)
        for err in ("standard", "boundary", "robust"):
            pts = curves[(kind, err)]
            ax.errorbar(
                [p[0] for p in pts], [p[1] for p in pts],
                yerr=[p[2] for p in pts] if len(profile.seeds) > 1 else None,
                fmt="-o", color=METRIC_COLORS[err], label=f"{err} error", capsize=2,
            )  # fmt: skip
        ax.set_xlabel("boundary-weight ratio" if kind == "weight" else "eps ratio (eps_c / eps)")
        ax.set_ylabel(f"test error of class '{classes[target]}' (%)")
        ax.set_title(titles[kind], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"FRL Fig. 3: class '{classes[target]}', fine-tuning the PGD-AT model — "
        f"{profile.describe()}",
        fontsize=10,
    )
    png = save_figure(fig, args.out / f"{NAME}.png", smoke_test=profile.smoke_test)
    csv_path = write_csv(
        args.out / f"{NAME}.csv",
        ["experiment", "ratio", "class", "error", "mean_pct", "std_pct", "seeds"],
        rows,
    )
    print(png)
    print(csv_path)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
