"""``python -m paper_figures``: list, run one, or run all of the paper figure and table scripts.

    python -m paper_figures list                     # the scripts and what each reproduces
    python -m paper_figures all --quick              # everything, small (digits, 1 seed)
    python -m paper_figures all --only theory,sim    # a kind: theory, sim, deep (or names)
    python -m paper_figures frl_fig1 --quick         # one script (= paper_figures.frl_fig1)

``all`` passes the common options (``--quick``, ``--out``, ``--runs-dir``, ``--dataset``,
``--data-dir``, ``--seeds``, ``--device``, ``--autoattack``, ``--norm``, ``--quiet``) to every
script that takes them, keeps going when one fails, and exits with status 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deep.runtime import (
    CLIParser,
    DefaultsHelpFormatter,
    check_output_dir,
    end_quietly_on_closed_pipe,
    version_line,
)
from paper_figures.common import DATASETS, DEFAULT_OUT, DEFAULT_RUNS_DIR
from paper_figures.runs import RunError, main_with_errors

__all__ = ["SCRIPTS", "Script", "main"]


@dataclass(frozen=True)
class Script:
    """A figure/table script: module ``paper_figures.<name>``, its kind and what it reproduces."""

    name: str
    kind: str  # "theory" (theory functions only), "sim" (sim.gaussian_demo), "deep" (deep.train)
    reproduces: str


SCRIPTS: tuple[Script, ...] = (
    Script("theory_curves", "theory", "FRL Thm 1-2 / Cor. 1 as curves over eps and K"),
    Script("dro_weights", "theory", "FAAL Eq. 1-2 class weights vs tau; Thm 1 bound"),
    Script("frl_fig2", "sim", "FRL Figure 2 (boundaries, natural vs robust)"),
    Script("frl_theorem3", "sim", "FRL App. A.3 Theorem 3 (D': robust / non-robust features)"),
    Script("frl_fig1", "deep", "FRL Figure 1 and Table 1 (class-wise errors, nat -> adv)"),
    Script("frl_fig3", "deep", "FRL Figure 3 (one class: upweight vs larger eps)"),
    Script("frl_tables", "deep", "FRL Tables 2-3 (avg / worst std, bndy, rob error)"),
    Script("frl_fig4", "deep", "FRL Figure 4 (randomized smoothing: class-wise certified errors)"),
    Script("frl_fig6", "deep", "FRL Figure 6 (l2 adversarial training: class-wise errors)"),
    Script("faal_fig1", "deep", "FAAL supp. Fig. 1 (CE vs CW margin as FAAL's class statistic)"),
    Script("faal_fig2", "deep", "FAAL supp. Fig. 2 (AT vs TRADES adversaries in FAAL)"),
    Script("faal_fig3", "deep", "FAAL supp. Fig. 3 (class-wise robust acc., from scratch)"),
    Script("faal_fig4", "deep", "FAAL supp. Fig. 4 (tau sweep: avg / worst clean, robust)"),
    Script("faal_fig5", "deep", "FAAL supp. Fig. 5 (class-wise acc. before / after FAAL)"),
    Script("faal_fig6", "deep", "FAAL supp. Fig. 6 (class weights per batch, average)"),
    Script("faal_fig7_10", "deep", "FAAL supp. Figs 7-10 (class-wise robust acc. per base)"),
    Script("faal_table1", "deep", "FAAL supp. Table 1 (from scratch; CIFAR-10-C)"),
    Script("faal_table2", "deep", "FAAL supp. Table 2 (fine-tuning PGD-AT / TRADES)"),
    Script("faal_table3", "deep", "FAAL supp. Table 3 (fine-tuning 4 base models)"),
    Script("faal_table4", "deep", "FAAL supp. Table 4 (training from scratch)"),
    Script("faal_table5", "deep", "FAAL supp. Table 5 (FAAL fine-tuning epochs)"),
    Script("faal_table6", "deep", "FAAL supp. Table 6 (CIFAR-100 settings)"),
)


def _by_name() -> dict[str, Script]:
    return {s.name: s for s in SCRIPTS}


def _list() -> int:
    width = max(len(s.name) for s in SCRIPTS)
    for s in SCRIPTS:
        print(f"{s.name.ljust(width)}  [{s.kind:6s}]  {s.reproduces}")
    return 0


def _all_parser() -> argparse.ArgumentParser:
    p = CLIParser(
        prog="python -m paper_figures all",
        description="Run every paper figure/table script with the same common options.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small and fast (digits, 1 seed)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and CSV files")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="run cache")
    p.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="data set of the deep scripts (default: each script's own)",
    )
    p.add_argument("--data-dir", default=None, help="data folder")
    p.add_argument("--download", action="store_true", help="fetch missing data files")
    p.add_argument("--seeds", default=None, help="comma-separated seeds")
    p.add_argument("--device", default=None, help="torch device of the deep scripts")
    p.add_argument("--epochs", type=int, default=None, help="epochs of runs from scratch")
    p.add_argument("--train-per-class", type=int, default=None, help="training subset per class")
    p.add_argument("--test-per-class", type=int, default=None, help="test subset per class")
    p.add_argument("--autoattack", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate AutoAttack too")  # fmt: skip
    p.add_argument("--norm", default=None, choices=("linf", "l2"), help="threat model of the runs")
    p.add_argument("--model", default=None, help="architecture of the runs from scratch")
    p.add_argument(
        "--only", default=None, help="comma-separated kinds (theory, sim, deep) and/or names"
    )
    p.add_argument("--skip", default=None, help="comma-separated script names to leave out")
    p.add_argument("--quiet", action="store_true", help="print only output paths")
    return p


def _select(parser, only: str | None, skip: str | None) -> list[Script]:
    names = _by_name()
    chosen = list(SCRIPTS)
    if only:
        wanted = {t.strip() for t in only.split(",") if t.strip()}
        unknown = wanted - set(names) - {"theory", "sim", "deep"}
        if unknown:
            parser.error(f"--only: unknown {sorted(unknown)}; use kinds theory/sim/deep or "
                         f"names from `python -m paper_figures list`")  # fmt: skip
        chosen = [s for s in chosen if s.name in wanted or s.kind in wanted]
    if skip:
        unwanted = {t.strip() for t in skip.split(",") if t.strip()}
        unknown = unwanted - set(names)
        if unknown:
            parser.error(f"--skip: unknown scripts {sorted(unknown)}")
        chosen = [s for s in chosen if s.name not in unwanted]
    return chosen


def _script_argv(script: Script, args: argparse.Namespace) -> list[str]:
    argv = ["--out", str(args.out)]
    if args.quick:
        argv.append("--quick")
    if args.quiet:
        argv.append("--quiet")
    if script.kind == "sim":
        argv += ["--runs-dir", str(args.runs_dir)]
    if script.kind == "deep":
        argv += ["--runs-dir", str(args.runs_dir)]
        for option in (
            "dataset",
            "data_dir",
            "seeds",
            "device",
            "epochs",
            "train_per_class",
            "test_per_class",
            "norm",
            "model",
        ):
            value = getattr(args, option)
            if value is not None:
                argv += [f"--{option.replace('_', '-')}", str(value)]
        if args.autoattack is not None:
            argv.append("--autoattack" if args.autoattack else "--no-autoattack")
        if args.download:
            argv.append("--download")
    return argv


def run_all(argv: Sequence[str]) -> int:
    parser = _all_parser()
    args = parser.parse_args(argv)
    check_output_dir(parser, args.out)  # before any script runs
    check_output_dir(parser, args.runs_dir, "--runs-dir")
    scripts = _select(parser, args.only, args.skip)
    failed = []
    for script in scripts:
        start = time.perf_counter()
        if not args.quiet:
            print(f"== {script.name}: {script.reproduces}", file=sys.stderr, flush=True)
        module = importlib.import_module(f"paper_figures.{script.name}")
        try:
            status = module.main(_script_argv(script, args))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            raise
        except RunError as exc:  # a failed training run: deep.train's message, one line
            print(f"error: {exc}", file=sys.stderr, flush=True)
            status = 1
        except Exception:  # keep going; report at the end
            traceback.print_exc()
            status = 1
        if status:
            failed.append(script.name)
        if not args.quiet:
            print(f"   {script.name}: {'FAILED' if status else 'ok'} "
                  f"({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)  # fmt: skip
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m paper_figures {list | all [options] | SCRIPT [options] | --version}\n"
        "  list    the scripts and what each reproduces\n"
        "  all     run every script (see `python -m paper_figures all --help`)\n"
        "  SCRIPT  run one script (see `python -m paper_figures SCRIPT --help`)"
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage + "\n\nscripts:")
        _list()
        return 0
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(version_line())
        return 0
    if command == "list":
        end_quietly_on_closed_pipe()
        return _list()
    if command == "all":
        return main_with_errors(lambda: run_all(rest))
    if command not in _by_name():
        print(f"python -m paper_figures: error: unknown script {command!r}; choose from: "
              + ", ".join(_by_name()), file=sys.stderr)  # fmt: skip
        print(usage.splitlines()[0] + "; see python -m paper_figures --help", file=sys.stderr)
        return 2
    module = importlib.import_module(f"paper_figures.{command}")
    return main_with_errors(lambda: module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
