"""Class-wise robustness evaluation: clean, PGD-20, CW-20 and AutoAttack; FRL errors; CIFAR-10-C.

The protocol is the one FAAL and FRL report: the model in eval mode, fp32, the full test set (or a
stratified subset), l_inf budget ``eps`` (CIFAR: 8/255), step ``step_size`` (2/255); or, with
``norm="l2"``, an l_2 budget (CIFAR: 0.5, step 0.1, FRL Appendix A.1.2):

* ``clean``  — accuracy on unperturbed inputs (under ``torch.no_grad``);
* ``pgd20``  — PGD, 20 steps on cross-entropy, uniform random start;
* ``cw20``   — PGD, 20 steps on the logit margin ``max_{j != y} z_j - z_y`` (CW-inf / CW-l2), random
  start; ``cw100`` the same with 100 steps (FAAL supp. Fig. 4 evaluates with CW-100);
* ``aa``     — AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square; ``norm="Linf"`` or ``"L2"``),
  seeded; a sample counts as
  robust when AutoAttack's final prediction equals its label (AutoAttack attacks only the points
  the model classifies correctly, so a misclassified clean point is never robust).

Per-sample correctness flags stay on the device until one transfer at the end;
:func:`deep.metrics.classwise_accuracy` — the only code that turns predictions into class-wise
numbers — reduces them to per-class accuracies ("average" = mean over classes, "worst" = minimum),
and :func:`deep.metrics.frl_errors` to FRL's standard / boundary / robust errors.

``python -m deep.evaluate --checkpoint ckpt.pt --dataset cifar10`` writes ``final.json``,
``final.csv`` and ``classwise.png`` into a run directory (see :func:`build_final_json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from deep.attacks import NORMS, budget_problem, check_norm, pgd_attack
from deep.checkpoint import CheckpointError, model_from_checkpoint, resolve_checkpoint
from deep.data import (
    CIFAR10C_CORRUPTIONS,
    CIFAR10C_EXTRA_CORRUPTIONS,
    CIFAR10C_SEVERITIES,
    DATASET_NAMES,
    BatchLoader,
    ClassTooSmallError,
    DatasetError,
    ImageSplit,
    load_cifar10c,
    load_dataset,
    stratified_subset,
)
from deep.metrics import classwise_accuracy, frl_errors, summarise_per_class
from deep.models import CheckpointMismatchError
from deep.plots import RESULT_LABELS, plot_classwise
from deep.progress import DEFAULT_INTERVAL_S, Progress, add_progress_options
from deep.results import (
    RESULT_KEYS,
    build_final_json,
    check_not_a_training_run,
    final_csv_text,
    write_final_json,
)
from deep.runtime import (
    CLIParser,
    add_threads_option,
    all_or_nothing,
    apply_thread_policy,
    budget_value,
    check_output_dir,
    exit_on_file_error,
    exit_on_interrupt,
    format_budget,
    resolve_device,
)

__all__ = [
    "ATTACK_NAMES",
    "DEFAULT_ATTACKS",
    "RESULT_KEYS",
    "CIFAR10C_SEVERITIES",
    "classwise_accuracy",
    "frl_errors",
    "summarise_per_class",
    "evaluate_model",
    "evaluate_cifar10c",
    "build_final_json",
    "check_budget",
    "check_common_options",
    "check_model_fits",
    "load_cli_checkpoint",
    "load_cli_model",
    "settings_from_checkpoint",
    "training_config",
    "final_csv_text",
    "resolve_checkpoint",
    "write_final_json",
    "format_table",
    "plot_classwise",
    "main",
]

ATTACK_NAMES = ("clean", "pgd20", "cw20", "cw100", "aa")
#: What :func:`evaluate_model` and ``python -m deep.evaluate`` run when not told.
DEFAULT_ATTACKS = ("clean", "pgd20", "cw20", "aa")
ATTACK_STEPS = 20
#: Steps of each PGD-type attack (CW-100: FAAL supp. Fig. 4's evaluation).
_PGD_STEPS = {"pgd20": ATTACK_STEPS, "cw20": ATTACK_STEPS, "cw100": 100}
# Seed offsets so each attack's random start is independent of which other attacks run.
_SEED_OFFSETS = {"pgd20": 1, "cw20": 2, "aa": 3, "cw100": 4}
#: Our norm names -> pyautoattack's.
AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2"}
_ALL_CORRUPTIONS = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def _normalise_attacks(attacks: Iterable[str]) -> list[str]:
    """Validate attack names (CLI names or result keys) -> CLI names in canonical order."""
    if isinstance(attacks, str):
        attacks = [attacks]
    by_key = {v: k for k, v in RESULT_KEYS.items()}
    chosen = set()
    for name in attacks:
        name = by_key.get(name, name)
        if name not in ATTACK_NAMES:
            raise ValueError(
                f"attacks: unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}"
            )
        chosen.add(name)
    if not chosen:
        raise ValueError(f"attacks must name at least one of {', '.join(ATTACK_NAMES)}")
    return [a for a in ATTACK_NAMES if a in chosen]


def check_budget(
    eps: float, step_size: float, norm: str = "linf", input_shape: Sequence[int] | None = None
) -> tuple[float, float]:
    """Validated ``(eps, step_size)`` on the [0, 1] pixel scale: l_inf eps in [0, 1), step in
    (0, 1]; l_2 eps >= 0 and step > 0, both finite. With ``input_shape`` (C, H, W), an l_2 eps at
    or beyond the diameter sqrt(C H W) of [0, 1]^d is refused too
    (:func:`deep.attacks.budget_problem`: such a ball holds every image).

    Args:
        eps: the budget.
        step_size: the attack step.
        norm: ``"linf"`` or ``"l2"``.
        input_shape: one input's shape (C, H, W), for the l_2 diameter check.

    Returns:
        ``(eps, step_size)`` as floats.

    Raises:
        ValueError: naming the budget that is out of range.
    """
    norm = check_norm(norm)
    eps, step_size = float(eps), float(step_size)
    if input_shape is not None and eps == eps:
        problem = budget_problem(eps, norm, input_shape)
        if problem is not None:
            raise ValueError(problem)
    if norm == "linf":
        if not (0.0 <= eps < 1.0):
            hint = f": for {eps:g} levels of 0..255 write {eps:g}/255" if eps >= 1 else ""
            raise ValueError(f"eps must be in [0, 1) (l_inf, pixel scale), got {eps:g}{hint}")
        if not (0.0 < step_size <= 1.0):
            raise ValueError(f"step_size must be in (0, 1] (l_inf, pixel scale), got {step_size}")
    else:
        if not (0.0 <= eps < float("inf")):
            raise ValueError(f"eps must be finite and >= 0 (l_2, pixel scale), got {eps}")
        if not (0.0 < step_size < float("inf")):
            raise ValueError(f"step_size must be finite and > 0 (l_2), got {step_size}")
    return eps, step_size


def _make_generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _flags_over(
    loader: BatchLoader,
    flags_of_batch: Callable[[Tensor, Tensor], Tensor],
    *,
    bar: Progress,
    units_per_batch: int = 1,
) -> tuple[Tensor, Tensor]:
    """Run ``flags_of_batch(x, y) -> bool (B,)`` over the loader; concatenate on the device.

    ``bar`` counts ``units_per_batch`` units per batch (``flags_of_batch`` may advance it
    within a batch, as AutoAttack does per attack)."""
    flags, labels = [], []
    for i, (x, y) in enumerate(loader):
        flags.append(flags_of_batch(x, y))
        labels.append(y)
        bar.advance_to((i + 1) * units_per_batch)
    return torch.cat(flags), torch.cat(labels)


def _predict_correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) == y


class _AutoAttackFlags:
    """Per-sample robust flags of AutoAttack "standard" (robust = final prediction == label).

    Each call runs AutoAttack on one chunk (a batch of the loader). With a progress ``bar`` every
    attack of every chunk is one unit: the bar names the chunk and the attack running and
    advances when it ends (AutoAttack skips the attacks left once no point of the chunk is robust).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        eps: float,
        device,
        seed: int,
        norm: str = "linf",
    ):
        from pyautoattack import AutoAttack  # heavy import, only when AutoAttack runs

        self.attack = AutoAttack(
            model, norm=AUTOATTACK_NORMS[norm], eps=eps, version="standard", device=device,
            seed=int(seed),
        )  # fmt: skip
        self.attack.verbose = False
        # "standard" targets the 9 most likely other classes; with fewer classes, all of them.
        targets = min(9, num_classes - 1)
        self.attack.apgd_targeted.n_target_classes = targets
        self.attack.fab.n_target_classes = targets
        self.bar: Progress | None = None
        self.num_chunks, self.chunk = 1, 0
        aa = self.attack
        self._report(aa.apgd, lambda: f"apgd-{aa.apgd.loss}")
        self._report(aa.apgd_targeted, lambda: "apgd-t")
        self._report(aa.fab, lambda: "fab-t" if aa.fab.targeted else "fab")
        self._report(aa.square, lambda: "square")

    def follow(self, bar: Progress, num_chunks: int) -> None:
        """Report to ``bar`` (``num_chunks`` x :attr:`attacks_per_chunk` units)."""
        self.bar, self.num_chunks, self.chunk = bar, num_chunks, 0

    @property
    def attacks_per_chunk(self) -> int:
        return len(self.attack.attacks_to_run)

    def _report(self, attack_object, name: Callable[[], str]) -> None:
        """Wrap one attack object's ``perturb`` so the bar follows it (results unchanged)."""
        perturb = attack_object.perturb

        def reported(*args, **kwargs):
            if self.bar is None:
                return perturb(*args, **kwargs)
            self.bar.set_description(f"AutoAttack chunk {self.chunk + 1}/{self.num_chunks}")
            self.bar.update(0, attack=name())
            out = perturb(*args, **kwargs)
            self.bar.update(1)
            return out

        attack_object.perturb = reported

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        tracer = sys.gettrace()  # AutoAttack's dynamic-defence check clears it (coverage, pdb)
        try:
            _, y_adv = self.attack.run_standard_evaluation(x, y, batch_size=x.shape[0])
        finally:
            sys.settrace(tracer)
        self.chunk += 1
        return y_adv.to(y.device) == y


def evaluate_model(
    model: nn.Module,
    split: ImageSplit,
    *,
    num_classes: int,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    eps: float,
    step_size: float,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    allow_empty: bool = False,
    progress_interval: float = DEFAULT_INTERVAL_S,
    norm: str = "linf",
) -> dict:
    """Class-wise accuracy of ``model`` on ``split`` under each attack.

    Args:
        model: classifier taking inputs in [0, 1] (normalisation inside) and returning logits.
            It is moved (in place) to ``device`` in fp32 and put in eval mode; its train/eval
            mode is restored after.
        split: the images (uint8) and labels to evaluate.
        num_classes: C; every class must occur in ``split`` unless ``allow_empty``.
        attacks: names from :data:`ATTACK_NAMES` (``"clean"``, ``"pgd20"``, ``"cw20"``,
            ``"cw100"``, ``"aa"``); by default :data:`DEFAULT_ATTACKS`, as the CLI (AutoAttack
            included: minutes on a CPU for a full test set).
        eps, step_size: budget and PGD/CW step of the ``norm`` ball on the [0, 1] pixel scale.
        batch_size: images per forward/attack batch.
        device: where to run.
        seed: seeds the random starts (each attack its own stream, so a result does not depend
            on which other attacks run) and AutoAttack; the caller's global RNG state is kept.
        progress: show progress (:class:`deep.progress.Progress`: a bar on a terminal, a plain
            line every ``progress_interval`` seconds otherwise); AutoAttack per chunk and attack.
        allow_empty: passed to :func:`classwise_accuracy` (an empty class -> ``None``).
        norm: ``"linf"`` or ``"l2"``: the threat model of PGD-20, CW-20 and AutoAttack.

    Returns:
        ``{result_key: classwise_accuracy(...)}`` in the order clean, pgd20, cw20, cw100,
        autoattack, result keys as in :data:`RESULT_KEYS` (``"aa"`` -> ``"autoattack"``).

    Example (a model of :func:`deep.models.build_model`; for a trained one,
    ``model, _ = deep.checkpoint.model_from_checkpoint("runs/<run>/best.pt")``)::

        >>> from deep.data import load_dataset, stratified_subset
        >>> from deep.evaluate import evaluate_model
        >>> from deep.models import build_model
        >>> data = load_dataset("digits")
        >>> model = build_model("small-cnn", data.num_classes, in_channels=1, mean=data.mean,
        ...                     std=data.std, image_size=data.image_size)
        >>> test = stratified_subset(data.test, 5, seed=0)  # 5 images per class
        >>> results = evaluate_model(model, test, num_classes=data.num_classes,
        ...                          attacks=("clean", "pgd20"), eps=8 / 255, step_size=2 / 255)
        >>> sorted(results), len(results["pgd20"]["per_class"])
        (['clean', 'pgd20'], 10)
        >>> results["pgd20"]["worst"] <= results["pgd20"]["average"]
        True
    """
    names = _normalise_attacks(attacks)
    eps, step_size = check_budget(eps, step_size, norm, tuple(split.x.shape[1:]))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if len(split) == 0:
        raise ValueError("split holds no samples")
    device = torch.device(device)

    was_training = model.training
    model = model.to(device=device, dtype=torch.float32).eval()
    loader = BatchLoader(split, batch_size, device=device, shuffle=False)
    results: dict[str, dict] = {}
    try:
        # Attack libraries reseed the global RNG; keep the caller's streams untouched.
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            for name in names:
                if name == "clean":

                    def flags_of(x, y):
                        return _predict_correct(model, x, y)

                elif name in _PGD_STEPS:
                    gen = _make_generator(device, seed * 1000 + _SEED_OFFSETS[name])
                    loss = "ce" if name == "pgd20" else "cw"

                    def flags_of(x, y, gen=gen, loss=loss, steps=_PGD_STEPS[name]):
                        x_adv = pgd_attack(
                            model,
                            x,
                            y,
                            eps=eps,
                            step_size=step_size,
                            steps=steps,
                            loss=loss,
                            random_start=True,
                            generator=gen,
                            norm=norm,
                        )
                        return _predict_correct(model, x_adv, y)

                else:
                    flags_of = _AutoAttackFlags(
                        model, num_classes=num_classes, eps=eps, device=device, seed=seed,
                        norm=norm,
                    )  # fmt: skip
                units, unit = (
                    (flags_of.attacks_per_chunk, "attack") if name == "aa" else (1, "batch")
                )
                bar = Progress(
                    len(loader) * units, RESULT_LABELS[RESULT_KEYS[name]], enabled=progress,
                    interval=progress_interval, unit=unit,
                )  # fmt: skip
                if name == "aa":
                    flags_of.follow(bar, len(loader))
                with bar:
                    correct, labels = _flags_over(loader, flags_of, bar=bar, units_per_batch=units)
                results[RESULT_KEYS[name]] = classwise_accuracy(
                    correct, labels, num_classes, allow_empty=allow_empty
                )
    finally:
        model.train(was_training)
    return results


def evaluate_cifar10c(
    model: nn.Module,
    data_dir: str | os.PathLike,
    *,
    num_classes: int = 10,
    corruptions: Sequence[str] = CIFAR10C_CORRUPTIONS,
    severities: Sequence[int] = CIFAR10C_SEVERITIES,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    n_per_class: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Clean class-wise accuracy under each CIFAR-10-C corruption and severity.

    Returns ``{corruption: {str(severity): {"per_class", "average", "worst", "counts"}}}``.
    With ``n_per_class`` every corrupted split is reduced by the same stratified subset (the
    CIFAR-10-C labels are the test labels for every corruption, so the same images are kept).

    Args:
        model: the classifier (inputs in [0, 1], returns logits).
        data_dir: the CIFAR-10-C folder (or its parent).
        num_classes: the number of classes.
        corruptions: the corruptions to evaluate.
        severities: the severities, in 1..5.
        batch_size: images per forward pass.
        device: where to run.
        n_per_class: a stratified subset of this many images per class (None: all).
        seed: the subset's seed.
        progress: show progress.

    Returns:
        ``{corruption: {str(severity): {"per_class", "average", "worst", "counts"}}}``.
    """
    unknown = [c for c in corruptions if c not in _ALL_CORRUPTIONS]
    if unknown:
        raise ValueError(
            f"corruptions: unknown {unknown}; choose from {', '.join(_ALL_CORRUPTIONS)}"
        )
    bad = [s for s in severities if s not in CIFAR10C_SEVERITIES]
    if bad:
        raise ValueError(f"severities must be in {list(CIFAR10C_SEVERITIES)}, got {bad}")
    out: dict[str, dict] = {}
    for corruption in corruptions:
        out[corruption] = {}
        for severity in severities:
            split = load_cifar10c(data_dir, corruption, int(severity))
            if n_per_class is not None:
                split = stratified_subset(split, n_per_class, seed=seed)
            result = evaluate_model(
                model,
                split,
                num_classes=num_classes,
                attacks=("clean",),
                eps=0.0,
                step_size=1.0,
                batch_size=batch_size,
                device=device,
                seed=seed,
                progress=progress,
            )
            out[corruption][str(int(severity))] = result["clean"]
    return out


# --------------------------------------------------------------------------------------------
# Console table
# --------------------------------------------------------------------------------------------
def format_table(final: Mapping) -> str:
    """A readable class-wise table (accuracies in %) with average and worst rows; FRL errors."""
    classes = final["classes"]
    keys = list(final["results"])
    headers = ["class"] + [RESULT_LABELS.get(k, k) for k in keys]
    rows = []
    for c, name in enumerate(classes):
        row = [name]
        for k in keys:
            v = final["results"][k]["per_class"][c]
            row.append("-" if v is None else f"{100 * v:.2f}")
        rows.append(row)
    rows.append(["average"] + [f"{100 * final['results'][k]['average']:.2f}" for k in keys])
    rows.append(["worst"] + [f"{100 * final['results'][k]['worst']:.2f}" for k in keys])
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]

    def fmt(row):
        return "  ".join(
            str(v).ljust(w) if i == 0 else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(row, widths))
        )

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows[:-2]]
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(r) for r in rows[-2:]]
    if "frl_errors" in final:
        e = final["frl_errors"]
        lines.append(
            "FRL errors % (average / worst class): "
            + ", ".join(
                f"{k} {100 * e[k]['average']:.2f} / {100 * e[k]['worst']:.2f}"
                for k in ("standard", "boundary", "robust")
            )
        )
    if "cifar10c" in final:
        lines.append("CIFAR-10-C clean accuracy % (average / worst class):")
        for corruption, by_severity in final["cifar10c"].items():
            parts = [
                f"s{s} {100 * e['average']:.2f} / {100 * e['worst']:.2f}"
                for s, e in by_severity.items()
            ]
            lines.append(f"  {corruption}: " + ", ".join(parts))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(
        prog="python -m deep.evaluate",
        description="Class-wise evaluation of a checkpoint: clean, PGD-20 (CE), CW-20 (margin) and "
        "AutoAttack accuracy per class, FRL errors, optional CIFAR-10-C. Writes final.json, "
        "final.csv and classwise.png into the output directory.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="checkpoint file (dict with 'model_config' and 'model'), or a deep.train run "
        "directory (its best.pt)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASET_NAMES,
        help="dataset the model was trained on (default: the one the checkpoint's training "
        "config names)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset folder (default: the dataset's default folder)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch the official files into --data-dir first if they are missing "
        "(checksums verified)",
    )
    parser.add_argument(
        "--attacks",
        default=",".join(DEFAULT_ATTACKS),
        help=f"comma-separated subset of {','.join(ATTACK_NAMES)} "
        "(default: all; aa = AutoAttack standard)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: a fresh runs/evaluate-<dataset>-<time>)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (cuda if available, else cpu), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=None,
        metavar="N",
        help="evaluate a stratified subset of N images per class (default: all)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    parser.add_argument(
        "--norm",
        default=None,
        choices=NORMS,
        help="threat model of PGD-20, CW-20 and AutoAttack (default: the training run's, from "
        "the checkpoint; else linf)",
    )
    parser.add_argument(
        "--eps",
        type=budget_value,
        default=None,
        help="budget, [0,1] pixel scale, a number or a fraction such as 8/255 (default: the "
        "training run's, from the checkpoint, at its norm; else the dataset's: CIFAR l_inf "
        "8/255, l_2 0.5)",
    )
    parser.add_argument(
        "--step-size",
        type=budget_value,
        default=None,
        help="PGD/CW step, e.g. 2/255 (default: l_inf the dataset's, 2/255 on CIFAR; l_2 eps/5)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for random starts, AutoAttack and the subset (default: 0)",
    )
    parser.add_argument(
        "--cifar10c-dir",
        type=Path,
        default=None,
        help="CIFAR-10-C folder (<corruption>.npy, labels.npy); with --dataset "
        "cifar10, also report clean class-wise accuracy under corruptions",
    )
    parser.add_argument(
        "--corruptions", default=None, help="comma-separated CIFAR-10-C corruptions (default: all)"
    )
    parser.add_argument(
        "--severities", default=None, help="comma-separated severities in 1..5 (default: 1,2,3,4,5)"
    )
    add_threads_option(parser)
    add_progress_options(parser)
    return parser


def _parse_list(parser, text: str, option: str, choices: Sequence[str]) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        parser.error(f"{option}: give at least one of {', '.join(choices)}")
    for item in items:
        if item not in choices:
            parser.error(f"{option}: invalid choice {item!r} (choose from {', '.join(choices)})")
    return list(dict.fromkeys(items))


def _fresh_run_dir(dataset: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"evaluate-{dataset}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def check_common_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 naming the option: ``--batch-size``, ``--n-per-class``, ``--threads`` and
    ``--progress-interval`` of a command that evaluates a checkpoint on a test split."""
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.n_per_class is not None and args.n_per_class < 1:
        parser.error(f"--n-per-class must be >= 1, got {args.n_per_class}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if not args.progress_interval >= 0:
        parser.error(f"--progress-interval must be >= 0 seconds, got {args.progress_interval}")


def load_cli_model(parser: argparse.ArgumentParser, checkpoint) -> tuple[nn.Module, Path, dict]:
    """``(model, checkpoint file, model_config)`` for ``--checkpoint`` (a file or a run
    directory); exit 2 naming the file when it is missing, corrupt or does not fit."""
    model, path, config, _ = load_cli_checkpoint(parser, checkpoint)
    return model, path, config


def load_cli_checkpoint(
    parser: argparse.ArgumentParser, checkpoint
) -> tuple[nn.Module, Path, dict, dict]:
    """:func:`load_cli_model` and the training run's config (:func:`training_config`)."""
    try:
        path = resolve_checkpoint(checkpoint)
    except ValueError as exc:
        parser.error(f"--checkpoint: {exc}")
    try:
        model, ckpt = model_from_checkpoint(path, map_location="cpu")
    except (CheckpointError, CheckpointMismatchError) as exc:
        parser.error(f"--checkpoint {path}: {exc}")
    config = dict(getattr(model, "model_config", {}) or {})
    return model, path, config, training_config(path, ckpt)


def training_config(path: Path, ckpt: Mapping) -> dict:
    """The deep.train configuration a checkpoint came from: its own ``"config"`` (best.pt,
    last.pt), else the ``config.json`` of its run folder (ema.pt, fawa.pt); {} when neither."""
    config = ckpt.get("config")
    if isinstance(config, Mapping):
        return dict(config)
    beside = Path(path).parent / "config.json"
    if beside.is_file() and (Path(path).parent / "last.pt").exists():
        try:
            loaded = json.loads(beside.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def settings_from_checkpoint(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    trained: Mapping,
    names: Sequence[str],
) -> None:
    """Fill the options ``names`` (of dataset, norm, eps, sigma) left out with the training run's
    values (``trained``), printing what was taken; an option given that differs from training
    gets a note. ``--dataset`` is an error when neither gives it."""
    taken, differ = [], []
    for name in names:
        given, value = getattr(args, name), trained.get(name)
        if name == "eps" and trained.get("norm", "linf") != (args.norm or "linf"):
            value = None  # a budget of another norm says nothing about this one
        if value is None:
            continue
        if given is None:
            setattr(args, name, value)
            shown = format_budget(value) if name in ("eps", "sigma") else value
            taken.append(f"--{name} {shown}")
        elif given != value:
            shown = (lambda v: format_budget(v)) if name in ("eps", "sigma") else (lambda v: v)
            differ.append(f"--{name} {shown(given)} (training: {shown(value)})")
    if taken:
        print(f"from the checkpoint's training config: {', '.join(taken)}", flush=True)
    if differ:
        print(f"note: differs from the training run: {', '.join(differ)}", flush=True)
    if "dataset" in names and args.dataset is None:
        parser.error(
            f"--dataset is needed: {args.checkpoint} does not say which data set it was trained "
            f"on (choose from {', '.join(DATASET_NAMES)})"
        )


def check_model_fits(parser: argparse.ArgumentParser, checkpoint, config: Mapping, data) -> None:
    """Exit 2 when the checkpoint's class count, channels or image size differ from ``data``'s."""
    for field, expected in (
        ("num_classes", data.num_classes),
        ("in_channels", data.in_channels),
        ("image_size", data.image_size),
    ):
        if field in config and config[field] != expected:
            parser.error(
                f"--checkpoint {checkpoint}: model has {field}={config[field]} but "
                f"{data.name} has {field}={expected}; is it a checkpoint for another dataset?"
            )


def main(argv: Sequence[str] | None = None) -> dict:
    """CLI entry point; returns the final.json dict. Ctrl-C exits with status 130."""
    with exit_on_interrupt("evaluation", note="; nothing was written"):
        return _main(argv)


def check_output_option(parser: argparse.ArgumentParser, out) -> None:
    """Before any work: ``--out`` (default: a new folder under ``runs/``) must be a writable
    folder and not a training run's folder (one line, exit 2, otherwise)."""
    check_output_dir(parser, out if out is not None else Path("runs"))
    if out is not None:
        try:
            check_not_a_training_run(out)
        except ValueError as exc:
            parser.error(f"--out: {exc}")


def _main(argv: Sequence[str] | None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_output_option(parser, args.out)

    attacks = _parse_list(parser, args.attacks, "--attacks", ATTACK_NAMES)
    check_common_options(parser, args)
    device = resolve_device(parser, args.device)
    if args.cifar10c_dir is None and (args.corruptions or args.severities):
        parser.error("--corruptions/--severities need --cifar10c-dir")
    corruptions = severities = None
    model, args.checkpoint, config, trained = load_cli_checkpoint(parser, args.checkpoint)
    settings_from_checkpoint(parser, args, trained, ("dataset", "norm", "eps"))
    args.norm = args.norm or "linf"
    if args.cifar10c_dir is not None:
        if args.dataset != "cifar10":
            parser.error(f"--cifar10c-dir needs --dataset cifar10, got {args.dataset}")
        if not args.cifar10c_dir.is_dir():
            parser.error(f"--cifar10c-dir: no such directory: {args.cifar10c_dir}")
        corruptions = (
            _parse_list(parser, args.corruptions, "--corruptions", _ALL_CORRUPTIONS)
            if args.corruptions
            else list(CIFAR10C_CORRUPTIONS)
        )
        severities = (
            [
                int(s)
                for s in _parse_list(
                    parser, args.severities, "--severities", [str(s) for s in CIFAR10C_SEVERITIES]
                )
            ]
            if args.severities
            else list(CIFAR10C_SEVERITIES)
        )

    apply_thread_policy(args.threads, device, config.get("name"))

    try:
        data = load_dataset(args.dataset, args.data_dir, download=args.download)
    except DatasetError as exc:
        parser.error(f"--dataset {args.dataset}: {exc}")
    check_model_fits(parser, args.checkpoint, config, data)

    eps, step_size = data.attack_budget(args.norm, args.eps, args.step_size)
    try:
        eps, step_size = check_budget(eps, step_size, args.norm, tuple(data.test.x.shape[1:]))
    except ValueError as exc:
        parser.error(f"--eps/--step-size: {exc}")
    print(f"attacks: {args.norm} eps {format_budget(eps)}, step {format_budget(step_size)}")

    split = data.test
    if args.n_per_class is not None:
        try:
            split = stratified_subset(split, args.n_per_class, seed=args.seed)
        except ClassTooSmallError as exc:
            parser.error(exc.describe("--n-per-class"))

    out_dir = args.out if args.out is not None else _fresh_run_dir(args.dataset)
    with all_or_nothing(out_dir):  # final.json, final.csv and classwise.png, or nothing
        return _evaluate(parser, args, model, config, data, split, out_dir, attacks, eps,
                         step_size, device, corruptions, severities)  # fmt: skip


def _evaluate(parser, args, model, config, data, split, out_dir: Path, attacks, eps, step_size,
              device, corruptions, severities) -> dict:  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {out_dir}", flush=True)
    progress = not args.quiet

    start = time.perf_counter()
    results = evaluate_model(
        model,
        split,
        num_classes=data.num_classes,
        attacks=attacks,
        eps=eps,
        step_size=step_size,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
        progress=progress,
        progress_interval=args.progress_interval,
        norm=args.norm,
    )
    cifar10c = None
    if args.cifar10c_dir is not None:
        try:
            cifar10c = evaluate_cifar10c(
                model,
                args.cifar10c_dir,
                num_classes=data.num_classes,
                corruptions=corruptions,
                severities=severities,
                batch_size=args.batch_size,
                device=device,
                n_per_class=args.n_per_class,
                seed=args.seed,
                progress=progress,
            )
        except DatasetError as exc:
            parser.error(f"--cifar10c-dir {args.cifar10c_dir}: {exc}")
    final = build_final_json(
        dataset=args.dataset,
        model=config.get("name", "unknown"),
        norm=args.norm,
        eps=eps,
        step_size=step_size,
        classes=data.classes,
        results=results,
        cifar10c=cifar10c,
        split="test",
        n_per_class=args.n_per_class,
        seed=args.seed,
        checkpoint=str(args.checkpoint),
        seconds=time.perf_counter() - start,
    )
    write_final_json(out_dir, final)
    plot_classwise(final, out_dir / "classwise.png")
    images = f"{args.n_per_class} per class" if args.n_per_class else "all"
    print(f"\n{args.checkpoint} on "
          f"{data.name} ({config.get('name', 'unknown')}; attacks: {args.norm} eps {eps:.4g}), "
          f"test images: {images}; class-wise accuracy (%):")  # fmt: skip
    print(format_table(final))
    print(f"wrote {out_dir / 'final.json'}, final.csv, classwise.png")
    return final


if __name__ == "__main__":
    with exit_on_file_error("python -m deep.evaluate"):
        main()
    sys.exit(0)
