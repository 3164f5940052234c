"""Shared command line and experiment settings of the paper-figure scripts.

Every script accepts the same options (``--quick``, ``--out``, ``--runs-dir``, ``--dataset``,
``--data-dir``, ``--seeds``, ``--device``, ``--autoattack``, ``--norm``, ``--model``,
``--quiet``). A :class:`Profile` turns them into ``deep.train`` options for the three kinds of
run the papers use:

* from scratch (``deep.train``'s per-dataset defaults: the papers' schedules on CIFAR, a short
  cosine schedule for the small CNN on digits / Fashion-MNIST);
* FAAL fine-tuning (FAAL supp. C.3: 2 epochs, lr 0.01 then 0.001, tau 0.5 on CIFAR-10 and
  Fashion-MNIST, 0.05 on CIFAR-100);
* FRL fine-tuning (FRL §5.1: lr 1e-3, decayed by 0.1 half way; 80 epochs on CIFAR, 10 on
  Fashion-MNIST, fewer with ``--quick``).

``--quick`` runs on scikit-learn's digits with one seed and few epochs: a smoke run of the whole
pipeline in minutes on a CPU, not a reproduction.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deep.models import MODEL_NAMES
from deep.runtime import CLIParser, DefaultsHelpFormatter, check_output_dir
from paper_figures.runs import RunSpec

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_RUNS_DIR",
    "Profile",
    "build_parser",
    "parse_args",
    "write_csv",
    "make_logger",
]

DEFAULT_OUT = Path("runs") / "paper_figures"
DEFAULT_RUNS_DIR = Path("runs") / "paper_figures" / "cache"

DATASETS = ("fashion-mnist", "digits", "cifar10", "cifar100", "svhn")


def build_parser(name: str, description: str, *, deep: bool = True) -> argparse.ArgumentParser:
    """The common options; ``deep=False`` for scripts that train nothing (theory, simulation)."""
    parser = CLIParser(
        prog=f"python -m paper_figures.{name}",
        description=description,
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small and fast: digits, 1 seed, few epochs (a smoke run, not a reproduction)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG and CSV")
    parser.add_argument("--quiet", action="store_true", help="print only the output paths")
    if not deep:
        return parser
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=DEFAULT_RUNS_DIR,
        help="cache of deep.train run folders (finished runs are reused)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="data set (default: fashion-mnist; digits with --quick; cifar10 when --data-dir "
        "is given)",
    )
    parser.add_argument("--data-dir", default=None, help="data folder (CIFAR: the python version)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let deep.train fetch missing data files into --data-dir (checksums verified)",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds (default: 0,1,2 where methods are compared; 0 with --quick)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: deep.train's)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of the runs from scratch (default: deep.train's per data set; 4 with --quick)",
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help="train every run on a stratified subset of this many images per class",
    )
    parser.add_argument(
        "--test-per-class",
        type=int,
        default=None,
        help="evaluate on a stratified test subset of this many images per class",
    )
    parser.add_argument(
        "--autoattack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also evaluate AutoAttack (default: on for CIFAR, off otherwise: hours on a CPU); "
        "without it, AutoAttack columns show CW-20",
    )
    parser.add_argument(
        "--norm",
        default="linf",
        choices=("linf", "l2"),
        help="threat model of every run's training attack and evaluation (l2: FRL App. A.1.2; "
        "deep.data's per-dataset l2 budgets)",
    )
    parser.add_argument(
        "--model",
        default=None,
        choices=MODEL_NAMES,
        help="architecture of every run trained from scratch (fine-tunings inherit it); e.g. "
        "wrn-28-10 for FRL Fig. 5 and Tables 5, 7-8, wrn-34-10 for FAAL Fig. 5 (default: the "
        "script's own: deep.train's per data set, WRN-34-10 where FAAL uses it on CIFAR)",
    )
    return parser


def parse_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    multi_seed: bool = True,
    cifar_default: str = "cifar10",
) -> argparse.Namespace:
    """Parse and validate; deep scripts get ``args.profile`` (exit status 2 on bad values).

    The data set defaults to digits with ``--quick``, ``cifar_default`` when ``--data-dir`` is
    given, Fashion-MNIST otherwise. ``multi_seed=False``: one seed unless ``--seeds`` is given.
    """
    args = parser.parse_args(argv)
    check_output_dir(parser, args.out)  # before any work: a file, under a file, not writable
    if hasattr(args, "runs_dir"):
        check_output_dir(parser, args.runs_dir, "--runs-dir")
    if not hasattr(args, "dataset"):
        return args
    dataset = args.dataset
    if dataset is None:
        if args.quick:
            dataset = "digits"
        else:
            dataset = cifar_default if args.data_dir else "fashion-mnist"
    if args.seeds is None:
        seeds = (0,) if (args.quick or not multi_seed) else (0, 1, 2)
    else:
        try:
            seeds = tuple(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
        except ValueError:
            parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
        if not seeds or any(s < 0 for s in seeds):
            parser.error(f"--seeds must list integers >= 0, got {args.seeds!r}")
    for option in ("epochs", "train_per_class", "test_per_class"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    autoattack = args.autoattack
    if autoattack is None:
        autoattack = dataset in ("cifar10", "cifar100", "svhn") and not args.quick
    args.profile = Profile(
        dataset=dataset,
        data_dir=args.data_dir,
        quick=bool(args.quick),
        seeds=seeds,
        autoattack=bool(autoattack),
        epochs=args.epochs,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        norm=args.norm,
        download=bool(args.download),
        model=args.model,
    )
    return args


@dataclass(frozen=True)
class Profile:
    """How big the runs are, and the ``deep.train`` options of each kind of run."""

    dataset: str
    data_dir: str | None = None
    quick: bool = False
    seeds: tuple[int, ...] = (0,)
    autoattack: bool = False
    epochs: int | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    norm: str = "linf"
    download: bool = False
    #: architecture of the runs from scratch (None: each script's choice)
    model: str | None = None

    @property
    def is_cifar(self) -> bool:
        return self.dataset in ("cifar10", "cifar100", "svhn")

    @property
    def scratch_epochs(self) -> int | None:
        """None: deep.train's per-dataset default (CIFAR-10 200, CIFAR-100 100, F-MNIST 10)."""
        if self.epochs is not None:
            return self.epochs
        return 4 if self.quick else None

    @property
    def faal_tau(self) -> float:
        """FAAL supp. C.8: 0.5 on CIFAR-10 (used for the small data sets too), 0.05 on CIFAR-100."""
        return 0.05 if self.dataset == "cifar100" else 0.5

    @property
    def frl_epochs(self) -> int:
        """FRL fine-tuning length: 80 epochs (two stages of 40) on CIFAR, scaled down otherwise."""
        if self.quick:
            return 4
        return 80 if self.is_cifar else 10

    @property
    def final_attacks(self) -> tuple[str, ...]:
        return ("clean", "pgd20", "cw20", "aa") if self.autoattack else ("clean", "pgd20", "cw20")

    @property
    def robust_key(self) -> str:
        """The final.json result shown as "AA": AutoAttack when evaluated, else CW-20."""
        return "autoattack" if self.autoattack else "cw20"

    @property
    def smoke_test(self) -> str | None:
        """With ``--quick``: the banner text of its figures (data set and budget: a smoke run of
        the pipeline, not a reproduction); None otherwise."""
        if not self.quick:
            return None
        epochs = self.scratch_epochs
        budget = [f"{self.dataset}", f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"]
        plural = "" if epochs == 1 else "s"
        budget.append(f"{epochs} epoch{plural} from scratch" if epochs else "deep.train's epochs")
        budget.append(f"FRL fine-tuning {self.frl_epochs} epochs, FAAL 2")
        if self.train_per_class:
            budget.append(f"{self.train_per_class} training images per class")
        return (
            f"SMOKE TEST (--quick: {', '.join(budget)}): checks that the pipeline runs; not a "
            "reproduction. The papers' trends need the full budget."
        )

    def describe(self) -> str:
        """One line for figure captions and CSV headers."""
        seeds = ",".join(str(s) for s in self.seeds)
        text = f"{self.dataset}, seed{'s' if len(self.seeds) > 1 else ''} {seeds}"
        if self.quick:
            text += ", --quick"
        if self.train_per_class:
            text += f", {self.train_per_class} train/class"
        if self.test_per_class:
            text += f", {self.test_per_class} test/class"
        if self.norm != "linf":
            text += f", {self.norm}"
        if self.model:
            text += f", {self.model}"
        return text

    # -- deep.train options ---------------------------------------------------------------------
    def _common(self, method: str, seed: int, model: str | None) -> list[str]:
        argv = ["--dataset", self.dataset, "--method", method, "--seed", str(seed)]
        if self.data_dir:
            argv += ["--data-dir", str(self.data_dir)]
        if model:
            argv += ["--model", model]
        argv += ["--final-attacks", ",".join(self.final_attacks)]
        if self.train_per_class:
            argv += ["--train-per-class", str(self.train_per_class)]
        if self.test_per_class:
            argv += ["--final-n-per-class", str(self.test_per_class)]
        if self.norm != "linf":  # l_inf runs keep their options (and cached folders) unchanged
            argv += ["--norm", self.norm]
        return argv

    def scratch(
        self,
        method: str,
        seed: int,
        *extra: str,
        model: str | None = None,
        name: str | None = None,
        epochs: int | None = None,
    ) -> RunSpec:
        """Training from scratch with ``method`` (a deep.presets name) and extra options; the
        profile's ``model``, when set, replaces the script's ``model``."""
        argv = self._common(method, seed, self.model or model)
        epochs = self.scratch_epochs if epochs is None else epochs
        if epochs is not None:
            argv += ["--epochs", str(epochs)]
        return RunSpec(
            f"{name or method}-s{seed}", tuple(argv) + tuple(extra), download=self.download
        )

    def faal_finetune(
        self,
        base: RunSpec,
        method: str,
        seed: int,
        *extra: str,
        tau: float | None = None,
        epochs: int = 2,
        name: str | None = None,
    ) -> RunSpec:
        """FAAL supp. C.3 fine-tuning of ``base``: lr 0.01, x0.1 half way (2 epochs: 1 + 1)."""
        argv = self._common(method, seed, None)
        argv += ["--epochs", str(epochs), "--lr", "0.01", "--schedule", "multistep"]
        argv += ["--milestones", str(max(1, epochs // 2))]
        if method.startswith("faal"):
            argv += ["--tau", repr(self.faal_tau if tau is None else float(tau))]
        label = name or method
        return RunSpec(
            f"{label}-from-{base.name}",
            tuple(argv) + tuple(extra),
            init=base,
            download=self.download,
        )

    def frl_finetune(
        self,
        base: RunSpec,
        method: str,
        seed: int,
        delta: float | None,
        *extra: str,
        epochs: int | None = None,
        name: str | None = None,
    ) -> RunSpec:
        """FRL §5.1 fine-tuning of ``base``: lr 1e-3 decayed x0.1 half way, tolerance ``delta``
        (None: a method without FRL's multiplier updates, e.g. ``fixed-class``)."""
        epochs = self.frl_epochs if epochs is None else epochs
        argv = self._common(method, seed, None)
        argv += ["--epochs", str(epochs), "--lr", "0.001", "--schedule", "multistep"]
        argv += ["--milestones", str(max(1, epochs // 2))]
        if delta is not None:
            argv += ["--frl-delta", repr(float(delta))]
        label = name or (method if delta is None else f"{method}-{delta:g}")
        return RunSpec(
            f"{label}-from-{base.name}",
            tuple(argv) + tuple(extra),
            init=base,
            download=self.download,
        )


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """Write a CSV file (parents created); floats with full precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(list(header))
        for row in rows:
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    return path


def make_logger(quiet: bool):
    """``print`` to stderr unless quiet (the output paths always go to stdout)."""
    if quiet:
        return None

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    return log
