"""FRL Tables 2-3: average and worst-class standard, boundary and robust error of each method.

Rows (FRL §5.1-5.2): PGD-AT, TRADES with 1/lambda = 1 and 6 (``--beta``), all from scratch;
Baseline Reweight and FRL Reweight / Remargin / Reweight+Remargin at tau = 0.05 and 0.07, each
fine-tuned from the PGD-AT model of the same seed (lr 1e-3, decayed x0.1 half way; 80 epochs on
CIFAR / SVHN as in the paper, 10 on Fashion-MNIST, 4 with ``--quick``). Table 2 is CIFAR-10,
Table 3 is SVHN: the same script with ``--dataset svhn``. Errors are the test-set FRL errors of
each run's ``final.json`` (robust = PGD-20), mean ± std over seeds.

    python -m paper_figures.frl_tables --quick
    python -m paper_figures.frl_tables                                   # Fashion-MNIST, 3 seeds
    python -m paper_figures.frl_tables --dataset cifar10 --data-dir data/cifar10 --device cuda
    python -m paper_figures.frl_tables --dataset svhn --data-dir data/svhn --device cuda

Writes ``frl_tables.png`` (grouped bars), ``frl_tables_table.png``, ``frl_tables.csv`` and
``frl_tables.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from paper_figures.aggregate import error, format_pm, over_seeds, render_table, write_markdown
from paper_figures.common import Profile, build_parser, make_logger, parse_args, write_csv
from paper_figures.runs import RunSpec, ensure_run, main_with_errors, read_final
from paper_figures.style import method_color, new_figure, save_figure

__all__ = ["ROWS", "row_specs", "main"]

NAME = "frl_tables"

#: (row label, style key, how the run is made)
ROWS = (
    ("PGD Adv. Training", "pgd-at", ("scratch", "pgd-at", ())),
    ("TRADES (1/λ = 1)", "trades-b1", ("scratch", "trades", ("--beta", "1"))),
    ("TRADES (1/λ = 6)", "trades-b6", ("scratch", "trades", ())),
    ("Baseline Reweight", "baseline-reweight", ("frl", "baseline-reweight", None)),
    ("FRL (Reweight, 0.05)", "frl-rw", ("frl", "frl-rw", 0.05)),
    ("FRL (Remargin, 0.05)", "frl-rm", ("frl", "frl-rm", 0.05)),
    ("FRL (Reweight+Remargin, 0.05)", "frl-rwrm", ("frl", "frl-rwrm", 0.05)),
    ("FRL (Reweight, 0.07)", "frl-rw", ("frl", "frl-rw", 0.07)),
    ("FRL (Remargin, 0.07)", "frl-rm", ("frl", "frl-rm", 0.07)),
    ("FRL (Reweight+Remargin, 0.07)", "frl-rwrm", ("frl", "frl-rwrm", 0.07)),
)
COLUMNS = (
    ("standard", "average", "Avg. Std."),
    ("standard", "worst", "Worst Std."),
    ("boundary", "average", "Avg. Bndy."),
    ("boundary", "worst", "Worst Bndy."),
    ("robust", "average", "Avg. Rob."),
    ("robust", "worst", "Worst Rob."),
)


def row_specs(profile: Profile, seed: int) -> list[RunSpec]:
    """The run of every row of :data:`ROWS` for one seed."""
    base = profile.scratch("pgd-at", seed)
    specs = []
    for _, _, (kind, method, extra) in ROWS:
        if kind == "scratch":
            name = method + (f"-beta{extra[1]}" if extra else "")
            specs.append(profile.scratch(method, seed, *extra, name=name))
        elif extra is None:  # baseline: FRL's fine-tuning schedule, no tolerance
            specs.append(profile.frl_finetune(base, method, seed, 0.05, name=method))
        else:
            specs.append(profile.frl_finetune(base, method, seed, extra))
    return specs


def _plot(stats, profile, path) -> None:
    fig = new_figure(13.0, 4.2)
    kinds = ("standard", "boundary", "robust")
    x = np.arange(len(ROWS))
    for k, kind in enumerate(kinds):
        ax = fig.add_subplot(1, 3, k + 1)
        for j, which in enumerate(("average", "worst")):
            mean = np.array([stats[i][(kind, which)][0] for i in range(len(ROWS))])
            std = np.array([stats[i][(kind, which)][1] for i in range(len(ROWS))])
            colors = [method_color(r[1]) for r in ROWS]
            ax.bar(x + (j - 0.5) * 0.4, mean, 0.4, yerr=std if len(profile.seeds) > 1 else None,
                   color=colors, alpha=0.55 if which == "average" else 1.0,
                   edgecolor="black", linewidth=0.4, capsize=2)  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels([r[0] for r in ROWS], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"{kind} error (%)")
        ax.set_title(f"{kind} error: average (light) / worst class (dark)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"FRL Tables 2-3 — {profile.describe()}", fontsize=10)
    save_figure(fig, path, smoke_test=profile.smoke_test)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(NAME, __doc__.splitlines()[0])
    args = parse_args(parser, argv)
    profile = args.profile
    log = make_logger(args.quiet)
    finals: list[list[dict]] = [[] for _ in ROWS]
    for seed in profile.seeds:
        for i, spec in enumerate(row_specs(profile, seed)):
            finals[i].append(read_final(ensure_run(spec, args.runs_dir, device=args.device,
                                                   log=log)))  # fmt: skip
    stats = [
        {(kind, which): over_seeds(f, lambda x, k=kind, w=which: error(x, k, w))
         for kind, which, _ in COLUMNS}
        for f in finals
    ]  # fmt: skip
    csv_rows, table_rows = [], []
    for i, (label, key, _) in enumerate(ROWS):
        cells = []
        for kind, which, _ in COLUMNS:
            mean, std, n = stats[i][(kind, which)]
            csv_rows.append((label, key, kind, which, mean, std, n))
            cells.append(format_pm(mean, std, n))
        table_rows.append([label] + cells)
    header = ["method"] + [c[2] for c in COLUMNS]
    title = f"FRL Tables 2-3 (errors %, test set, PGD-20) — {profile.describe()}"
    out = args.out
    csv_path = write_csv(
        out / f"{NAME}.csv",
        ["row", "method", "error", "statistic", "mean_pct", "std_pct", "seeds"],
        csv_rows,
    )
    md = write_markdown(header, table_rows, out / f"{NAME}.md", title=title)
    table_png = render_table(
        header, table_rows, out / f"{NAME}_table.png", title=title, smoke_test=profile.smoke_test
    )
    png = out / f"{NAME}.png"
    _plot(stats, profile, png)
    for p in (png, table_png, csv_path, md):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
