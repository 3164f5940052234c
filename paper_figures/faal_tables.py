"""FAAL supplement Tables 1-6: average (worst-class) accuracy of each method, one script per table.

Every table runs its rows with ``deep.train`` (cached in ``--runs-dir``) and reads the test-set
class-wise accuracies of each run's ``final.json``; cells are "average (worst class)" in %, mean
± std over seeds. By default on Fashion-MNIST (small CNN, 3 seeds); ``--quick`` on digits;
with ``--dataset cifar10|cifar100 --data-dir DIR --device cuda`` the paper's settings (models,
schedules, AutoAttack). "AA" is AutoAttack when evaluated (``--autoattack``; default on CIFAR),
otherwise CW-20 and labelled so. The CFA rows (``cfa-at``, ``cfa-trades``) evaluate the FAWA model
(``--final-checkpoint fawa``, CFA's own choice; last.pt, said in the run's log, when FAWA's
threshold was never reached); WAT rows (``wat-trades``) the package's best.pt like every other row.

    Table 1  from scratch, TRADES family, CFA_TRADES, WAT_TRADES; + CIFAR-10-C corruptions with
             --cifar10c-dir
             python -m paper_figures.faal_table1 --dataset cifar10 --data-dir DIR \\
                 --cifar10c-dir data/CIFAR-10-C --device cuda
    Table 2  fine-tuning PGD-AT / TRADES models (PreAct-ResNet18 on CIFAR-10)
             python -m paper_figures.faal_table2 --dataset cifar10 --data-dir DIR --device cuda
    Table 3  fine-tuning PGD-AT / TRADES / MART / TRADES-AWP models (WRN-34-10 on CIFAR-10)
             python -m paper_figures.faal_table3 --dataset cifar10 --data-dir DIR --device cuda
    Table 4  from scratch, incl. CFA_AT, CFA_TRADES, WAT_TRADES (PreAct-ResNet18, 200 epochs)
             python -m paper_figures.faal_table4 --dataset cifar10 --data-dir DIR --device cuda
    Table 5  CFA / WAT fine-tuning for 2 epochs, FAAL_AT fine-tuning for 2, 4, 6, 8 epochs
             (WRN-34-10 PGD-AT model; each FAAL row is the model after that many epochs)
             python -m paper_figures.faal_table5 --dataset cifar10 --data-dir DIR --device cuda
    Table 6  CIFAR-100, ResNet-18: fine-tuning a TRADES model (tau 0.05); CFA_TRADES, WAT_TRADES
             and FAAL from scratch
             (switched on at 75% of the epochs with tau 0.025, raised to 0.05 at 90%; evaluated
             at the last epoch)
             python -m paper_figures.faal_table6 --dataset cifar100 --data-dir DIR --device cuda

Writes ``faal_tableN.png`` (the table), ``faal_tableN.csv`` and ``faal_tableN.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from paper_figures.aggregate import (
    RESULT_NAMES,
    accuracy,
    format_pm,
    over_seeds,
    render_table,
    write_markdown,
)
from paper_figures.common import Profile, build_parser, make_logger, parse_args, write_csv
from paper_figures.faal import FinetuneRow, accuracy_keys, finetune_rows
from paper_figures.runs import (
    RunSpec,
    ensure_cifar10c_evaluated,
    ensure_run,
    main_with_errors,
    read_final,
)

__all__ = ["TABLES", "TableRow", "table_rows", "main"]

#: What each table shows (titles follow the supplement).
TABLES = {
    1: "from scratch (TRADES family, CFA, WAT), clean / AA and CIFAR-10-C corruptions "
    "[paper: PRN-18]",
    2: "fine-tuning PGD-AT and TRADES models with FRL-RWRM or FAAL [paper: PRN-18, CIFAR-10]",
    3: "fine-tuning PGD-AT / TRADES / MART / TRADES-AWP models [paper: WRN-34-10, CIFAR-10]",
    4: "training from scratch [paper: PRN-18, CIFAR-10]",
    5: "fine-tuning with CFA, WAT, and FAAL_AT for more epochs [paper: WRN-34-10 PGD-AT model, "
    "CIFAR-10]",
    6: "fine-tuning a TRADES model (tau 0.05); CFA, WAT and FAAL from scratch [paper: ResNet-18, "
    "CIFAR-100]",
}

#: The corruptions of Table 1 (CIFAR-10-C file names).
TABLE1_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "brightness",
    "snow",
    "zoom_blur",
    "motion_blur",
    "jpeg_compression",
    "pixelate",
)


@dataclass(frozen=True)
class TableRow:
    """A row: label, method key, fine-tuning epochs ("-" for a base model), one run per seed."""

    label: str
    key: str
    epochs: str
    specs: tuple[RunSpec, ...]


def _model(profile: Profile, table: int) -> str | None:
    """WRN-34-10 for Tables 3 and 5 on CIFAR; otherwise deep.train's per-dataset default."""
    return "wrn-34-10" if table in (3, 5) and profile.is_cifar else None


def _scratch_epochs(profile: Profile) -> int:
    if profile.scratch_epochs is not None:
        return profile.scratch_epochs
    from deep.train import DATASET_DEFAULTS

    return DATASET_DEFAULTS[profile.dataset].epochs


def _rows_for_seed(profile: Profile, table: int, seed: int) -> list[FinetuneRow]:
    model = _model(profile, table)

    def scratch(method, *extra, name=None):
        return profile.scratch(method, seed, *extra, model=model, name=name)

    tau = ["--tau", repr(profile.faal_tau)]
    fawa = ["--final-checkpoint", "fawa"]
    cfa_trades = FinetuneRow("CFA_TRADES", "cfa-trades", scratch("cfa-trades", *fawa), None)
    wat_trades = FinetuneRow("WAT_TRADES", "wat-trades", scratch("wat-trades"), None)
    if table == 1:
        return [
            FinetuneRow("TRADES", "trades", scratch("trades"), None),
            cfa_trades,
            wat_trades,
            FinetuneRow("FAAL_TRADES", "faal-trades", scratch("faal-trades", *tau), None),
            FinetuneRow(
                "FAAL_TRADES-AWP", "faal-trades-awp", scratch("faal-trades-awp", *tau), None
            ),
        ]
    if table in (2, 3):
        bases = [("pgd-at", "PGD-AT"), ("trades", "TRADES")]
        if table == 3:
            bases += [("mart", "MART"), ("trades-awp", "TRADES-AWP")]
        rows = []
        for key, label in bases:
            rows += finetune_rows(profile, scratch(key), label, key, seed)
        return rows
    if table == 4:
        rows = [
            FinetuneRow("PGD-AT", "pgd-at", scratch("pgd-at"), None),
            FinetuneRow("TRADES", "trades", scratch("trades"), None),
            FinetuneRow("CFA_AT", "cfa-at", scratch("cfa-at", *fawa), None),
            cfa_trades,
            wat_trades,
        ]
        for key, label in (
            ("faal-at", "FAAL_AT"),
            ("faal-trades", "FAAL_TRADES"),
            ("faal-trades-awp", "FAAL_TRADES-AWP"),
        ):
            rows.append(FinetuneRow(label, key, scratch(key, *tau), None))
        return rows
    if table == 5:
        base = scratch("pgd-at")
        rows = [FinetuneRow("PGD-AT", "pgd-at", base, None)]
        # CFA and WAT adapted to 2 epochs of fine-tuning (supp. Sec. C.5), FAAL's schedule
        for key, label, extra in (("cfa-at", "CFA", fawa), ("wat-trades", "WAT", ())):
            spec = profile.faal_finetune(base, key, seed, *extra)
            rows.append(FinetuneRow(f"+ Fine-tune with {label}", key, spec, 2))
        for epochs in (2, 4) if profile.quick else (2, 4, 6, 8):
            # the model after that many epochs (best.pt would pick an earlier epoch)
            spec = profile.faal_finetune(
                base, "faal-at", seed, "--final-checkpoint", "last", epochs=epochs
            )
            rows.append(FinetuneRow("+ FAAL_AT", "faal-at", spec, epochs))
        return rows
    if table == 6:
        base = scratch("trades")
        rows = finetune_rows(profile, base, "TRADES", "trades", seed, frl_deltas=(0.05,), tau=0.05)
        epochs = _scratch_epochs(profile)
        start, raise_at = round(0.75 * epochs), round(0.9 * epochs)
        schedule = ["--faal-start-epoch", str(start), "--tau-schedule", f"0:0.025,{raise_at}:0.05"]
        # the end of training: best.pt may come from an epoch before FAAL switches on
        schedule += ["--final-checkpoint", "last"]
        rows += [cfa_trades, wat_trades]
        for key, label in (("faal-at", "FAAL_AT"), ("faal-trades", "FAAL_TRADES")):
            rows.append(FinetuneRow(label, key, scratch(key, *schedule, name=f"{key}-late"), None))
        return rows
    raise ValueError(f"table must be one of {sorted(TABLES)}, got {table!r}")


def table_rows(profile: Profile, table: int) -> list[TableRow]:
    """The table's rows with one run per seed of the profile."""
    per_seed = [_rows_for_seed(profile, table, s) for s in profile.seeds]
    rows = []
    for i, first in enumerate(per_seed[0]):
        epochs = "-" if first.epochs is None else str(first.epochs)
        rows.append(TableRow(first.label, first.key, epochs, tuple(r[i].spec for r in per_seed)))
    return rows


def _cifar10c_final(run_dir: Path, args, log) -> dict:
    """Clean class-wise accuracy under Table 1's corruptions (deep.evaluate; cached per run)."""
    return ensure_cifar10c_evaluated(
        run_dir, args.cifar10c_dir, TABLE1_CORRUPTIONS, args.severity,
        data_dir=args.data_dir or None, device=args.device or None, log=log,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None, *, table: int | None = None) -> int:
    name = "faal_tables" if table is None else f"faal_table{table}"
    parser = build_parser(name, __doc__.splitlines()[0])
    if table is None:
        parser.add_argument("--table", type=int, required=True, choices=sorted(TABLES))
    if table in (None, 1):
        parser.add_argument(
            "--cifar10c-dir", type=Path, default=None,
            help="Table 1: CIFAR-10-C folder; adds its corruption columns (needs cifar10)",
        )  # fmt: skip
        parser.add_argument(
            "--severity", type=int, default=5, choices=(1, 2, 3, 4, 5),
            help="Table 1: CIFAR-10-C severity",
        )  # fmt: skip
    cifar_default = "cifar100" if table == 6 else "cifar10"
    args = parse_args(parser, argv, cifar_default=cifar_default)
    table = args.table if table is None else table
    profile = args.profile
    c10c = getattr(args, "cifar10c_dir", None)
    if c10c is not None and profile.dataset != "cifar10":
        parser.error(f"--cifar10c-dir needs --dataset cifar10, got {profile.dataset}")
    log = make_logger(args.quiet)
    rows = table_rows(profile, table)
    keys = list(accuracy_keys(profile)) if table in (2, 3) else ["clean", profile.robust_key]
    finals, c10c_finals = [], []
    for row in rows:
        dirs = [ensure_run(s, args.runs_dir, device=args.device, log=log) for s in row.specs]
        finals.append([read_final(d) for d in dirs])
        if c10c is not None:
            c10c_finals.append([_cifar10c_final(d, args, log)["cifar10c"] for d in dirs])

    header = ["method", "FT epochs"] + [RESULT_NAMES[k] for k in keys]
    if c10c is not None:
        header += [c.replace("_", " ") for c in TABLE1_CORRUPTIONS]
    csv_rows, cells = [], []
    for i, row in enumerate(rows):
        line = [row.label, row.epochs]
        for key in keys:
            parts = []
            for which in ("average", "worst"):
                mean, std, n = over_seeds(finals[i], lambda f, k=key, w=which: accuracy(f, k, w))
                csv_rows.append((row.label, row.key, row.epochs, key, which, mean, std, n))
                parts.append(format_pm(mean, std, n))
            line.append(f"{parts[0]} ({parts[1]})")
        if c10c is not None:
            for corruption in TABLE1_CORRUPTIONS:
                parts = []
                for which in ("average", "worst"):
                    values = [
                        100.0 * c[corruption][str(args.severity)][which] for c in c10c_finals[i]
                    ]
                    mean, std, n = over_seeds(values, float)
                    csv_rows.append((row.label, row.key, row.epochs,
                                     f"cifar10c/{corruption}/{args.severity}", which, mean, std,
                                     n))  # fmt: skip
                    parts.append(format_pm(mean, std, n))
                line.append(f"{parts[0]} ({parts[1]})")
        cells.append(line)
    title = (
        f"FAAL supp. Table {table}: {TABLES[table]} — average (worst-class) test accuracy %, "
        f"{profile.describe()}"
        + ("" if profile.autoattack else " (AutoAttack not evaluated: CW-20 in its place)")
    )
    out = args.out
    stem = f"faal_table{table}"
    csv_path = write_csv(
        out / f"{stem}.csv",
        ["row", "method", "ft_epochs", "result", "statistic", "mean_pct", "std_pct", "seeds"],
        csv_rows,
    )
    md = write_markdown(header, cells, out / f"{stem}.md", title=title)
    col_width = 1.9 if len(profile.seeds) > 1 else 1.3
    png = render_table(header, cells, out / f"{stem}.png", title=title, col_width=col_width,
                       smoke_test=profile.smoke_test)  # fmt: skip
    for p in (png, csv_path, md):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
