"""FRL Figure 6 (Appendix A.1.2): class-wise standard and robust error of l_2 adversarial training.

FRL repeats Figure 1 under the l_2 threat model (CIFAR-10, eps 0.5, PGD-20 with step 0.1) and sees
the same disparity: adversarial training raises the errors of the hard classes most. Here natural
training, PGD-AT and TRADES are trained from scratch with ``deep.train --norm l2`` (the runs of
``frl_fig1 --norm l2``) (the data set's
l_2 budget: 0.5 on CIFAR and digits, 1.0 on Fashion-MNIST; step eps/5) and evaluated with l_2
PGD-20 at the same budget; the numbers are their ``final.json``'s test-set errors.

* ``frl_fig6.png``: per method, the class-wise standard and l_2 robust error (mean ± std over
  seeds); last panel: the per-class change natural -> PGD-AT, hardest natural classes first.
* ``frl_fig6.csv``: method, class, standard / robust error (mean, std).

    python -m paper_figures.frl_fig6 --quick                       # digits, 1 seed
    python -m paper_figures.frl_fig6                               # Fashion-MNIST, 3 seeds
    python -m paper_figures.frl_fig6 --dataset cifar10 --data-dir data/cifar10 --device cuda
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from paper_figures.common import build_parser, make_logger, parse_args
from paper_figures.frl_fig1 import class_stats, collect, plot, write_class_csv
from paper_figures.runs import main_with_errors

__all__ = ["main"]

NAME = "frl_fig6"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0])
    args = parse_args(parser, argv)
    profile = replace(args.profile, norm="l2")  # deep.data's per-dataset l_2 budgets
    finals = collect(profile, args.runs_dir, args.device, make_logger(args.quiet))
    classes = finals["natural"][0]["classes"]
    stats = class_stats(finals)
    csv_path = write_class_csv(args.out / f"{NAME}.csv", finals, classes, stats)
    eps = finals["pgd-at"][0]["eps"]
    png = args.out / f"{NAME}.png"
    title = f"FRL Fig. 6: class-wise standard / l2 robust (PGD-20, eps {eps:g}) test error"
    plot(finals, classes, stats, profile, png, title=title)
    for p in (png, csv_path):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
