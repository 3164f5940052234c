"""Adversarial training with class-wise fairness: one loop for every method of :mod:`deep.presets`.

``python -m deep.train`` (no arguments) trains the small CNN on scikit-learn's digits with FAAL on
PGD-AT at eps 0.1 and prints class-wise results. A training step (DESIGN.md):

    batch (x, y) -> attack (model in eval mode) -> x_adv -> forward(s) in train mode
    -> per-sample loss l_i (deep.objectives) -> class weights w (deep.weighting; FAAL's class
    statistics reduced across processes before solving) -> (C/B) sum_i w_{y_i} l_i -> backward
    -> SGD step (through AWP when the preset says so) -> metrics accumulated on the device.

After each epoch: class-wise clean and PGD-20 accuracy on the validation split (deep.evaluate),
FRL / Baseline-Reweight updates from those errors, ``metrics.jsonl``, ``last.pt`` and ``best.pt``
(best worst-class robust validation accuracy). At the end: ``final.json`` on the test set
(deep.evaluate's writer) for ``--final-checkpoint`` (best.pt by default, last.pt when there is no
validation split; or last.pt), and figures. Runs continue exactly from ``last.pt`` (``--resume``);
Ctrl-C saves and exits with status 130. Under ``torchrun`` the run is data-parallel (DDP).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from deep import distributed as dd
from deep.attacks import NORMS, pgd_attack, trades_attack
from deep.awp import make_awp
from deep.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from deep.data import (
    DATASET_NAMES,
    FRL_VAL_PER_CLASS,
    BatchLoader,
    DatasetError,
    ImageDataset,
    load_dataset,
    stratified_subset,
)
from deep.evaluate import (
    ATTACK_NAMES,
    check_budget,
    evaluate_model,
    format_table,
    frl_errors,
    write_final_json,
)
from deep.models import MODEL_NAMES, CheckpointMismatchError, build_model, load_model_state
from deep.objectives import per_sample_loss, trades_parts
from deep.plots import plot_class_weights, plot_classwise
from deep.presets import METHOD_NAMES, PRESETS, Preset
from deep.weighting import (
    FAAL_STATISTICS,
    BaselineReweight,
    FAALWeighting,
    FixedClassWeighting,
    FRLWeighting,
    UniformWeighting,
    faal_statistic,
    weighted_mean_loss,
)

__all__ = [
    "DATASET_DEFAULTS",
    "FINAL_CHECKPOINTS",
    "RESUME_OVERRIDABLE",
    "Trainer",
    "build_parser",
    "class_ratio_vector",
    "parse_class_ratios",
    "parse_tau_schedule",
    "resolve_config",
    "main",
]

CHECKPOINT_FORMAT = "robust-fairness/train-checkpoint/1"


@dataclass(frozen=True)
class DatasetDefaults:
    """Per-dataset training defaults (the papers' settings on CIFAR; small and fast otherwise)."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    schedule: str
    milestones: tuple[int, ...]
    weight_decay: float
    val_per_class: int | None  # None: deep.data's default split


#: CIFAR-10: PreAct-ResNet18, 200 epochs, lr 0.1 decayed at 100/150 (FAAL supp. C.5); FRL's
#: 300 validation images per class. CIFAR-100: ResNet-18, 100 epochs, decay at 75/90 (supp. C.7).
#: digits / Fashion-MNIST: the small CNN, short cosine schedules for CPU runs.
DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "digits": DatasetDefaults("small-cnn", 15, 64, 0.05, "cosine", (), 5e-4, None),
    "fashion-mnist": DatasetDefaults("small-cnn", 10, 128, 0.05, "cosine", (), 5e-4, 300),
    "cifar10": DatasetDefaults(
        "preact-resnet18", 200, 128, 0.1, "multistep", (100, 150), 5e-4, FRL_VAL_PER_CLASS
    ),
    "cifar100": DatasetDefaults("resnet18", 100, 128, 0.1, "multistep", (75, 90), 5e-4, 50),
    "svhn": DatasetDefaults("preact-resnet18", 100, 128, 0.01, "multistep", (50, 75), 5e-4, 300),
}

SCHEDULES = ("multistep", "cosine", "constant")

#: Options that may differ when a run is resumed (they do not change what is computed, or only
#: where / how it is reported). Every other option must match the run's config.json.
RESUME_OVERRIDABLE = frozenset(
    {
        "resume",
        "out",
        "quiet",
        "save_every",
        "log_every",
        "final_attacks",
        "final_n_per_class",
        "eval_batch_size",
        "threads",
        "data_dir",
        "download",
        "device",
        "compile",
        "debug",
        "final_checkpoint",
    }
)

#: Options added after runs were first written: the value an older config.json implies.
ADDED_OPTION_DEFAULTS = {
    "faal_statistic": "margin",
    "final_checkpoint": "best",
    "class_boundary_weight": None,
    "class_eps_scale": None,
    "norm": "linf",
    "sigma": None,
}

#: Noise level of ``--method gaussian-noise`` when ``--sigma`` is not given (Cohen et al. train
#: with 0.12, 0.25, 0.5 and 1.0 on CIFAR-10).
DEFAULT_SIGMA = 0.25

#: Checkpoint evaluated on the test set at the end (``--final-checkpoint``).
FINAL_CHECKPOINTS = ("best", "last")

#: Default evaluation of the final model on the test set ("aa" = AutoAttack, hours on a CPU).
DEFAULT_FINAL_ATTACKS = ("clean", "pgd20", "cw20")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def parse_tau_schedule(text: str) -> list[tuple[int, float]]:
    """``"0:0.025,90:0.05"`` -> ``[(0, 0.025), (90, 0.05)]`` (epoch milestones, 0-based)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            epoch_text, tau_text = item.split(":")
            out.append((int(epoch_text), float(tau_text)))
        except ValueError:
            raise ValueError(
                f"--tau-schedule: {item!r} is not EPOCH:TAU (e.g. '0:0.025,90:0.05')"
            ) from None
    return out


def parse_class_ratios(text: str, option: str) -> list[list]:
    """``"deer=2.5,3=1.5"`` -> ``[["deer", 2.5], [3, 1.5]]`` (class name or index, ratio > 0)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, ratio_text = item.rpartition("=")
        try:
            ratio = float(ratio_text)
        except ValueError:
            ratio = math.nan
        if not sep or not name.strip():
            raise ValueError(f"{option}: {item!r} is not CLASS=RATIO (e.g. 'deer=2.5' or '4=2.5')")
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"{option}: the ratio of {item!r} must be a finite number > 0")
        name = name.strip()
        out.append([int(name) if name.isdigit() else name, ratio])
    if not out:
        raise ValueError(f"{option}: give at least one CLASS=RATIO")
    classes = [c for c, _ in out]
    if len(set(classes)) != len(classes):
        raise ValueError(f"{option}: each class at most once, got {text!r}")
    return out


def class_ratio_vector(pairs, classes: Sequence[str], option: str) -> list[float]:
    """Per-class ratios (1 for classes not named) from :func:`parse_class_ratios`' pairs."""
    ratios = [1.0] * len(classes)
    for name, ratio in pairs or []:
        if isinstance(name, int):
            if not 0 <= name < len(classes):
                raise ValueError(f"{option}: class index {name} is not in [0, {len(classes) - 1}]")
            index = name
        elif name in classes:
            index = list(classes).index(name)
        else:
            raise ValueError(f"{option}: unknown class {name!r}; classes: {', '.join(classes)}")
        ratios[index] = float(ratio)
    return ratios


def _parse_int_list(text: str) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v]


def build_parser(*, suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The CLI. ``suppress_defaults=True`` leaves out every option not given (to detect those)."""
    parser = argparse.ArgumentParser(
        prog="python -m deep.train",
        description=(
            "Adversarial training with class-wise fairness (FAAL, FRL) on one loop. "
            "Methods: " + ", ".join(METHOD_NAMES) + ". Defaults depend on --dataset."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )

    group = [parser]

    def section(title: str) -> None:
        group[0] = parser.add_argument_group(title)

    def add(*names, **kw):
        if suppress_defaults:
            kw.pop("default", None)
        group[0].add_argument(*names, **kw)

    section("data and model")
    add("--dataset", default="digits", choices=DATASET_NAMES, help="data set")
    add("--data-dir", default=None, help="data folder (default: deep.data.default_data_dir)")
    add(
        "--download",
        action="store_true",
        help="fetch the official files into --data-dir first if they are missing (checksums "
        "verified; rank 0 only)",
    )
    add("--model", default=None, choices=MODEL_NAMES, help="architecture (default: per dataset)")
    add("--method", default="faal-at", choices=METHOD_NAMES, help="training method (preset)")
    add(
        "--val-per-class",
        type=int,
        default=None,
        help="validation images per class taken from the training set (default: per dataset; "
        "needed for best.pt and by FRL / baseline-reweight)",
    )
    add(
        "--train-per-class",
        type=int,
        default=None,
        help="train on a stratified subset of this many images per class (quick runs)",
    )
    add("--init", default=None, help="fine-tune from this checkpoint (weights only)")

    section("optimisation")
    add("--epochs", type=int, default=None, help="epochs (default: per dataset)")
    add(
        "--batch-size", type=int, default=None, help="batch size per process (default: per dataset)"
    )
    add("--lr", type=float, default=None, help="learning rate (default: per dataset)")
    add("--momentum", type=float, default=0.9, help="SGD momentum")
    add("--weight-decay", type=float, default=None, help="weight decay (default: per dataset)")
    add("--schedule", default=None, choices=SCHEDULES, help="lr schedule (per epoch)")
    add(
        "--milestones",
        default=None,
        help="multistep: comma-separated epochs where lr is multiplied by --lr-gamma",
    )
    add("--lr-gamma", type=float, default=0.1, help="multistep decay factor")
    add("--seed", type=int, default=0, help="seed of initialisation, shuffling and attacks")

    section("training attack")
    add(
        "--norm",
        default="linf",
        choices=NORMS,
        help="threat model of the training attack and of every evaluation (FRL App. A.1.2)",
    )
    add(
        "--eps",
        type=float,
        default=None,
        help="budget, [0,1] pixel scale (default: per dataset; l_2: 0.5 CIFAR, 1.0 Fashion-MNIST)",
    )
    add(
        "--step-size",
        type=float,
        default=None,
        help="attack step (default: l_inf per dataset; l_2 eps/5)",
    )
    add("--attack-steps", type=int, default=10, help="attack iterations")
    add("--beta", type=float, default=None, help="KL weight of TRADES/MART/FRL (default: preset)")
    add(
        "--sigma",
        type=float,
        default=None,
        help=f"--method gaussian-noise: noise std on the [0,1] scale (default {DEFAULT_SIGMA})",
    )

    section("FAAL")
    add("--tau", type=float, default=0.5, help="KL(u||w) budget of the class-weight DRO")
    add(
        "--tau-schedule",
        default=None,
        help="EPOCH:TAU milestones, e.g. '0:0.025,90:0.05' (FAAL supp. C.7)",
    )
    add("--faal-start-epoch", type=int, default=0, help="uniform weights before this epoch")
    add(
        "--count-weighted",
        action="store_true",
        default=False,
        help="solve the reference code's count-weighted objective sum_c n_c l_c (SPEC §2)",
    )
    add(
        "--faal-statistic",
        default="margin",
        choices=tuple(FAAL_STATISTICS),
        help="class statistic l_c of the DRO: the softmax CW margin (Alg. 1) or the "
        "cross-entropy of the adversarial examples (supp. Fig. 1); classes absent from a batch "
        "get the statistic's minimum (-1 / 0)",
    )

    section("FRL")
    add("--frl-delta", type=float, default=0.05, help="fairness tolerance tau1 = tau2")
    add("--frl-alpha1", type=float, default=0.05, help="multiplier rate a1")
    add("--frl-alpha2", type=float, default=0.2, help="remargin rate a2")
    add("--frl-lim", type=float, default=0.5, help="cap on the sum of multipliers")
    add(
        "--frl-eps-cap",
        type=float,
        default=None,
        help="cap on per-class eps (default: 2x the dataset eps = 16/255 on CIFAR)",
    )
    add("--baseline-boost", type=float, default=2.0, help="baseline-reweight: worst-class factor")

    section("fixed class weights (--method fixed-class; FRL §5.3)")
    add(
        "--class-boundary-weight",
        default=None,
        metavar="CLASS=RATIO[,...]",
        help="weigh a class's boundary (KL) error RATIO times the others' (class name or index; "
        "weights renormalised)",
    )
    add(
        "--class-eps-scale",
        default=None,
        metavar="CLASS=RATIO[,...]",
        help="train a class with attack budget RATIO x --eps (class name or index)",
    )

    section("AWP")
    add("--awp-gamma", type=float, default=5e-3, help="relative weight perturbation size")
    add("--awp-proxy-lr", type=float, default=0.1, help="proxy SGD learning rate")
    add("--awp-warmup", type=int, default=0, help="no AWP before this epoch")

    section("run")
    add("--out", default=None, help="run directory (default: runs/train-<dataset>-<method>-<time>)")
    add(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="continue the run in DIR (default: --out, else the newest matching run)",
    )
    add("--save-every", type=int, default=0, help="also checkpoint every N steps (0: per epoch)")
    add("--log-every", type=int, default=20, help="progress-bar refresh interval (steps)")
    add(
        "--final-attacks",
        default=",".join(DEFAULT_FINAL_ATTACKS),
        help="test-set evaluation: comma-separated of " + ",".join(ATTACK_NAMES),
    )
    add(
        "--final-n-per-class",
        type=int,
        default=None,
        help="evaluate the final model on a stratified test subset of this size per class",
    )
    add(
        "--final-checkpoint",
        default="best",
        choices=FINAL_CHECKPOINTS,
        help="checkpoint evaluated on the test set: best.pt (best worst-class validation PGD-20 "
        "accuracy; last.pt when there is no validation split) or last.pt (the end of training)",
    )
    add("--eval-batch-size", type=int, default=256, help="evaluation batch size")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 for the small CNN on the CPU, else torch's choice)",
    )
    add("--bf16", action="store_true", default=False, help="bfloat16 autocast for training (CUDA)")
    add("--compile", action="store_true", default=False, help="torch.compile the model")
    add(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: on for CUDA)",
    )
    add("--quiet", action="store_true", default=False, help="no progress bars")
    add("--debug", action="store_true", default=False, help="log a hash of the class weights")
    return parser


def _explicit_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options given on the command line."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def _check(parser: argparse.ArgumentParser, ok: bool, message: str) -> None:
    if not ok:
        parser.error(message)


def resolve_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """Full configuration (dataset defaults filled in; eps/step from the data set if unset).

    Invalid values end in ``parser.error`` (exit status 2) naming the option and its range.
    """
    d = DATASET_DEFAULTS[args.dataset]
    preset = PRESETS[args.method]
    cfg = dict(vars(args))
    cfg["model"] = args.model
    cfg["epochs"] = d.epochs if args.epochs is None else args.epochs
    cfg["batch_size"] = d.batch_size if args.batch_size is None else args.batch_size
    cfg["lr"] = d.lr if args.lr is None else args.lr
    cfg["weight_decay"] = d.weight_decay if args.weight_decay is None else args.weight_decay
    cfg["schedule"] = d.schedule if args.schedule is None else args.schedule
    try:
        milestones = (
            list(d.milestones) if args.milestones is None else _parse_int_list(args.milestones)
        )
    except ValueError:
        parser.error(f"--milestones must be comma-separated integers, got {args.milestones!r}")
    if cfg["schedule"] == "multistep" and not milestones:
        milestones = [cfg["epochs"] // 2, (3 * cfg["epochs"]) // 4]
    cfg["milestones"] = milestones
    cfg["val_per_class"] = d.val_per_class if args.val_per_class is None else args.val_per_class
    try:
        cfg["tau_schedule"] = (
            None if args.tau_schedule is None else parse_tau_schedule(args.tau_schedule)
        )
    except ValueError as exc:
        parser.error(str(exc))
    finals = [a.strip() for a in str(args.final_attacks).split(",") if a.strip()]
    bad = [a for a in finals if a not in ATTACK_NAMES]
    _check(parser, finals and not bad, f"--final-attacks: choose from {','.join(ATTACK_NAMES)}")
    cfg["final_attacks"] = finals
    cfg["beta"] = preset.beta if args.beta is None else args.beta
    cfg["preset"] = preset.to_dict()
    for key in ("class_boundary_weight", "class_eps_scale"):
        option = "--" + key.replace("_", "-")
        if cfg[key] is None:
            continue
        _check(
            parser,
            preset.weighting == "fixed-class",
            f"{option} needs --method fixed-class (got --method {preset.name})",
        )
        try:
            cfg[key] = parse_class_ratios(cfg[key], option)
        except ValueError as exc:
            parser.error(str(exc))

    _check(parser, cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}")
    _check(parser, cfg["batch_size"] >= 1, f"--batch-size must be >= 1, got {cfg['batch_size']}")
    _check(parser, cfg["lr"] > 0, f"--lr must be > 0, got {cfg['lr']}")
    _check(parser, 0 <= cfg["momentum"] < 1, f"--momentum must be in [0, 1), got {args.momentum}")
    _check(parser, cfg["weight_decay"] >= 0, "--weight-decay must be >= 0")
    _check(parser, args.lr_gamma > 0, f"--lr-gamma must be > 0, got {args.lr_gamma}")
    _check(parser, all(m >= 1 for m in milestones), "--milestones must be epochs >= 1")
    _check(parser, args.eps is None or args.eps > 0, f"--eps must be > 0, got {args.eps}")
    try:
        check_budget(1.0 if args.eps is None else args.eps, args.step_size or 1.0, args.norm)
    except ValueError as exc:
        parser.error(f"--eps/--step-size (--norm {args.norm}): {exc}")
    _check(
        parser,
        args.step_size is None or args.step_size > 0,
        f"--step-size must be > 0, got {args.step_size}",
    )
    if preset.attack == "gaussian":
        cfg["sigma"] = DEFAULT_SIGMA if args.sigma is None else args.sigma
        _check(
            parser,
            math.isfinite(cfg["sigma"]) and cfg["sigma"] > 0,
            f"--sigma must be a finite number > 0, got {cfg['sigma']}",
        )
    else:
        _check(parser, args.sigma is None, "--sigma needs --method gaussian-noise")
    _check(parser, args.attack_steps >= 1, f"--attack-steps must be >= 1, got {args.attack_steps}")
    _check(parser, cfg["beta"] >= 0, f"--beta must be >= 0, got {cfg['beta']}")
    _check(parser, math.isfinite(args.tau) and args.tau >= 0, f"--tau must be >= 0, got {args.tau}")
    for epoch, tau in cfg["tau_schedule"] or []:
        _check(parser, epoch >= 0 and tau >= 0, "--tau-schedule: epochs and taus must be >= 0")
    _check(parser, args.faal_start_epoch >= 0, "--faal-start-epoch must be >= 0")
    _check(parser, args.frl_delta >= 0, "--frl-delta must be >= 0")
    _check(parser, args.frl_alpha1 >= 0 and args.frl_alpha2 >= 0, "--frl-alpha1/2 must be >= 0")
    _check(parser, 0 < args.frl_lim < 1, f"--frl-lim must be in (0, 1), got {args.frl_lim}")
    _check(parser, args.frl_eps_cap is None or args.frl_eps_cap > 0, "--frl-eps-cap must be > 0")
    _check(parser, args.baseline_boost >= 1, "--baseline-boost must be >= 1")
    _check(parser, args.awp_gamma >= 0, "--awp-gamma must be >= 0")
    _check(parser, args.awp_proxy_lr > 0, "--awp-proxy-lr must be > 0")
    _check(parser, args.awp_warmup >= 0, "--awp-warmup must be >= 0")
    _check(parser, args.save_every >= 0, "--save-every must be >= 0")
    _check(parser, args.log_every >= 1, "--log-every must be >= 1")
    _check(parser, args.eval_batch_size >= 1, "--eval-batch-size must be >= 1")
    _check(parser, args.threads is None or args.threads >= 1, "--threads must be >= 1")
    for key in ("val_per_class", "train_per_class", "final_n_per_class"):
        value = cfg[key]
        _check(parser, value is None or value >= 0, f"--{key.replace('_', '-')} must be >= 0")
    if preset.needs_validation:
        _check(
            parser,
            cfg["val_per_class"] is None or cfg["val_per_class"] > 0,
            f"method {preset.name} updates from validation errors: --val-per-class must be > 0",
        )
    return cfg


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
def _build_weighting(cfg: dict, preset: Preset, classes: Sequence[str], eps: float, reduce_fn):
    num_classes = len(classes)
    if preset.weighting == "faal":
        return FAALWeighting(
            tau=cfg["tau"],
            tau_schedule=cfg["tau_schedule"],
            start_epoch=cfg["faal_start_epoch"],
            count_weighted=cfg["count_weighted"],
            num_classes=num_classes,
            base_eps=eps,
            statistic=cfg.get("faal_statistic", "margin"),
            reduce_fn=reduce_fn,
        )
    if preset.weighting == "frl":
        cap = cfg["frl_eps_cap"] if cfg["frl_eps_cap"] is not None else 2.0 * eps
        return FRLWeighting(
            num_classes,
            eps,
            mode=preset.frl_mode,
            delta0=cfg["frl_delta"],
            delta1=cfg["frl_delta"],
            alpha1=cfg["frl_alpha1"],
            alpha2=cfg["frl_alpha2"],
            lim=cfg["frl_lim"],
            eps_cap=cap,
        )
    if preset.weighting == "baseline":
        return BaselineReweight(num_classes, boost=cfg["baseline_boost"], base_eps=eps)
    if preset.weighting == "fixed-class":
        return FixedClassWeighting(
            num_classes,
            eps,
            boundary_ratios=class_ratio_vector(
                cfg.get("class_boundary_weight"), classes, "--class-boundary-weight"
            ),
            eps_scales=class_ratio_vector(cfg.get("class_eps_scale"), classes, "--class-eps-scale"),
        )
    return UniformWeighting(num_classes, base_eps=eps)


def _build_scheduler(cfg: dict, optimizer: torch.optim.Optimizer):
    if cfg["schedule"] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg["milestones"]), gamma=cfg["lr_gamma"]
        )
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


class Trainer:
    """Model, optimiser, schedule, weighting, AWP and generators of one run; one step at a time.

    ``cfg`` is :func:`resolve_config`'s dict with ``eps`` and ``step_size`` filled in. The
    training step (:meth:`train_step`) leaves its numbers on the device; :meth:`read_epoch_metrics`
    reads them once.
    """

    def __init__(
        self,
        cfg: dict,
        dataset: ImageDataset,
        ctx: dd.DistContext,
        *,
        init_model: nn.Module | None = None,
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.device = ctx.device
        self.preset: Preset = PRESETS[cfg["method"]]
        self.dataset = dataset
        self.num_classes = dataset.num_classes
        self.eps = float(cfg["eps"])
        self.step_size = float(cfg["step_size"])
        self.norm = cfg.get("norm", "linf")

        torch.manual_seed(cfg["seed"])
        model = build_model(
            cfg["model"],
            dataset.num_classes,
            in_channels=dataset.in_channels,
            mean=dataset.mean,
            std=dataset.std,
            image_size=dataset.image_size,
        )
        if init_model is not None:
            model.load_state_dict(init_model.state_dict())
        self.channels_last = bool(cfg.get("channels_last"))
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the plain module: state dicts, evaluation, AWP
        net: nn.Module = model
        if ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.attack_net: nn.Module = model
        if cfg.get("compile"):
            net = torch.compile(net)
            self.attack_net = torch.compile(model)
        self.net = net  # the training forward (DDP and/or compiled)

        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
        )
        self.scheduler = _build_scheduler(cfg, self.optimizer)
        self.weighting = _build_weighting(
            cfg, self.preset, list(dataset.classes), self.eps, dd.make_reduce_fn(ctx)
        )
        self.awp = None
        if self.preset.awp:
            reduce_fn = None
            if ctx.enabled:

                def reduce_fn(t: torch.Tensor) -> None:
                    dd.all_reduce_mean_([t], ctx)

            self.awp = make_awp(
                model, gamma=cfg["awp_gamma"], proxy_lr=cfg["awp_proxy_lr"], reduce_fn=reduce_fn
            )
        # Random starts of the training attack: one stream per rank, saved in checkpoints.
        self.attack_gen = torch.Generator(device=self.device)
        self.attack_gen.manual_seed(cfg["seed"] * 1009 + 17 + ctx.rank)
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if cfg.get("bf16")
            else contextlib.nullcontext()
        )
        self.epoch = 0
        self.step = 0  # steps done in the current epoch
        self.global_step = 0
        self.reset_epoch_metrics()
        self.last_weights: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None

    # -- one step ------------------------------------------------------------------------------
    def _adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training attack (model in eval mode inside the attack; SPEC §3)."""
        attack = self.preset.attack
        if attack == "none":
            return x
        if attack == "gaussian":  # Cohen et al. 2019: N(0, sigma^2 I) in [0, 1] pixel space
            noise = torch.randn(x.shape, generator=self.attack_gen, device=x.device)
            return x + self.cfg["sigma"] * noise
        eps = self.weighting.class_eps(y) if self.preset.per_class_eps else self.eps
        with self.autocast:
            if attack == "pgd":
                return pgd_attack(
                    self.attack_net, x, y, eps=eps, step_size=self.step_size,
                    steps=self.cfg["attack_steps"], loss="ce", generator=self.attack_gen,
                    norm=self.norm,
                )  # fmt: skip
            return trades_attack(
                self.attack_net, x, eps=eps, step_size=self.step_size,
                steps=self.cfg["attack_steps"], generator=self.attack_gen, norm=self.norm,
            )  # fmt: skip

    def _forward(self, net: nn.Module, x: torch.Tensor, x_adv: torch.Tensor):
        """(logits_adv, logits_clean) in float32; None where the objective needs none."""
        with self.autocast:
            adv = net(x_adv).float() if self.preset.needs_adv_logits else None
            clean = net(x).float() if self.preset.needs_clean_logits else None
        return adv, clean

    def _unweighted_loss(self, logits_adv, logits_clean, y) -> torch.Tensor:
        """The base method's mean loss (what AWP's proxy ascends; SPEC §3)."""
        return per_sample_loss(
            self.preset.objective, logits_adv, logits_clean, y, beta=self.cfg["beta"]
        ).mean()

    def _weighted_loss(self, logits_adv, logits_clean, y):
        """(loss, class weights): (C/B) sum_i w_{y_i} l_i, or FRL's two-term loss (SPEC §4)."""
        if self.preset.two_term_loss:
            ce_i, kl_i = trades_parts(logits_adv, logits_clean, y)
            loss = self.weighting.trades_loss(ce_i, kl_i, y, beta=self.cfg["beta"])
            return loss, self.weighting.batch_weights(None, y, self.epoch)
        loss_i = per_sample_loss(
            self.preset.objective, logits_adv, logits_clean, y, beta=self.cfg["beta"]
        )
        statistic = None
        if self.preset.weighting == "faal":  # FAAL Alg. 1 lines 9-11 (supp. C.2: margin or CE)
            logits = logits_adv if logits_adv is not None else logits_clean
            statistic = faal_statistic(self.weighting.statistic, logits, y)
        weights = self.weighting.batch_weights(statistic, y, self.epoch)
        return weighted_mean_loss(loss_i, y, weights), weights

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimisation step on the batch (x, y); metrics stay on the device."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_adv = self._adversarial(x, y)
        self.net.train()
        diff = None
        if self.awp is not None and self.epoch >= self.cfg["awp_warmup"]:

            def proxy_loss(proxy: nn.Module) -> torch.Tensor:
                return self._unweighted_loss(*self._forward(proxy, x, x_adv), y)

            diff = self.awp.calc_awp(proxy_loss)
            self.awp.perturb(diff)
        logits_adv, logits_clean = self._forward(self.net, x, x_adv)
        loss, weights = self._weighted_loss(logits_adv, logits_clean, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if diff is not None:
            self.awp.restore(diff)
        self._accumulate(loss.detach(), weights.detach(), logits_adv, logits_clean, y)
        self.last_loss, self.last_weights = loss.detach(), weights.detach()
        self.step += 1
        self.global_step += 1

    # -- metrics (on the device) ----------------------------------------------------------------
    def reset_epoch_metrics(self) -> None:
        """Zero the accumulators: [loss sum, correct adv, correct clean, n] + weight sums."""
        self._sums = torch.zeros(4 + self.num_classes, dtype=torch.float64, device=self.device)
        self._weight_steps: list[torch.Tensor] = []

    def _accumulate(self, loss, weights, logits_adv, logits_clean, y) -> None:
        batch = y.shape[0]
        zero = torch.zeros((), device=self.device)
        adv_ok = (logits_adv.argmax(1) == y).sum() if logits_adv is not None else zero
        clean_ok = (logits_clean.argmax(1) == y).sum() if logits_clean is not None else zero
        head = torch.stack(
            [loss.double() * batch, adv_ok.double(), clean_ok.double(), zero.double() + batch]
        )
        self._sums += torch.cat([head, weights.double()])
        if self.preset.weighting not in ("uniform", "fixed-class"):  # weights that change
            self._weight_steps.append(weights.float())

    def running_loss(self) -> float:
        """Mean training loss so far this epoch (one host read)."""
        loss_sum, n = self._sums[[0, 3]].tolist()
        return loss_sum / max(n, 1.0)

    def read_epoch_metrics(self) -> tuple[dict, list[list[float]]]:
        """The epoch's training metrics (summed over ranks; one read) and per-step weights."""
        sums = self._sums.clone()
        dd.all_reduce_sum_(sums, self.ctx)
        values = sums.tolist()
        loss_sum, adv_ok, clean_ok, n = values[:4]
        steps = max(self.step, 1) * self.ctx.world_size
        train = {"loss": loss_sum / max(n, 1.0), "samples": int(n), "steps": self.step}
        if self.preset.needs_adv_logits:
            train["acc_adv"] = adv_ok / max(n, 1.0)
        if self.preset.needs_clean_logits:
            train["acc_clean"] = clean_ok / max(n, 1.0)
        train["class_weights"] = [w / steps for w in values[4:]]
        history = torch.stack(self._weight_steps).tolist() if self._weight_steps else []
        return train, history

    def debug_hashes(self) -> dict:
        """SHA-256 prefixes of this epoch's per-step class weights and of the model's weights."""
        weights = torch.stack(self._weight_steps) if self._weight_steps else torch.zeros(0)
        params = torch.cat([p.detach().reshape(-1).float() for p in self.model.parameters()])
        return {"class_weights": _tensor_hash(weights), "model": _tensor_hash(params)}

    def finish_epoch(self, *, lr: float, class_eps: list[float]) -> tuple[dict, list]:
        """End the epoch: read its metrics, validate, update FRL / baseline weights, step the
        schedule. Returns the metrics.jsonl record (without the epoch time) and the per-step
        class weights of the epoch."""
        cfg, epoch, w = self.cfg, self.epoch, self.weighting
        train, weight_steps = self.read_epoch_metrics()
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train": {k: v for k, v in train.items() if k != "class_weights"},
            "class_weights": train["class_weights"],
            "class_eps": class_eps,
        }
        if isinstance(w, FAALWeighting):
            w.end_epoch()
            record["tau"] = w.tau_at(epoch)
        if cfg["debug"]:  # one entry per rank: equal when the ranks agree bit for bit
            record["debug_hashes"] = dd.all_gather_object(self.debug_hashes(), self.ctx)
        if len(self.dataset.val):
            val = self.evaluate(self.dataset.val, ("clean", "pgd20"), seed=cfg["seed"])
            keys = ("per_class", "average", "worst")
            record["val"] = {name: {k: v[k] for k in keys} for name, v in val.items()}
            if self.preset.needs_validation:
                errors = frl_errors(val)
                # FRL decays its multiplier rates with the learning rate (FRL §5.1).
                w.update_from_validation(
                    errors["standard"]["per_class"],
                    errors["boundary"]["per_class"],
                    rate_scale=lr / cfg["lr"],
                )
            if isinstance(w, FRLWeighting):
                record["frl"] = {
                    "lambda0": w.lambda0.tolist(),
                    "lambda1": w.lambda1.tolist(),
                    "lambda2": w.lambda2.tolist(),
                    "next_nat_weights": w.nat_weight_values().tolist(),
                    "next_bndy_weights": w.bndy_weight_values().tolist(),
                    "next_class_eps": w.eps_values().tolist(),
                }
            if isinstance(w, BaselineReweight):
                record["baseline_worst_class"] = w.worst_class
        if isinstance(w, FixedClassWeighting):
            record["bndy_weights"] = w.bndy_weight_values().tolist()
        self.scheduler.step()
        self.epoch += 1
        self.step = 0
        self.reset_epoch_metrics()
        return record, weight_steps

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self,
        split,
        attacks: Sequence[str],
        *,
        seed: int,
        progress: bool = False,
        model: nn.Module | None = None,
    ) -> dict:
        """Class-wise accuracies from deep.evaluate, identical on every rank (sharded under DDP).

        ``model`` defaults to the model being trained.
        """
        model = self.model if model is None else model

        def run(part):
            return evaluate_model(
                model, part, num_classes=self.num_classes, attacks=tuple(attacks),
                eps=self.eps, step_size=self.step_size, batch_size=self.cfg["eval_batch_size"],
                device=self.device, seed=seed, progress=progress, norm=self.norm,
            )  # fmt: skip

        was_training = model.training
        try:
            return dd.evaluate_across_ranks(run, split, self.num_classes, self.ctx)
        finally:
            model.train(was_training)

    def class_eps_values(self) -> list[float]:
        """Per-class training eps in use (FRL Remargin, fixed class scales; else the base eps)."""
        if self.preset.per_class_eps:
            return [float(v) for v in self.weighting.eps_values()]
        return [self.eps] * self.num_classes

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (this rank's RNG states under "rng")."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "epoch_sums": self._sums.cpu(),
            "epoch_weight_steps": (
                torch.stack(self._weight_steps).cpu() if self._weight_steps else None
            ),
            "rng": self.rng_states(),
        }
        if self.awp is not None:
            state["awp"] = self.awp.state_dict()
        return state

    def rng_states(self) -> dict:
        return {"global": rng_state(), "attack": self.attack_gen.get_state()}

    def load_state_dict(self, state: dict, rng: dict | None) -> None:
        load_model_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        if self.awp is not None:
            self.awp.load_state_dict(state["awp"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.global_step = int(state["global_step"])
        self._sums = state["epoch_sums"].to(self.device)
        steps = state.get("epoch_weight_steps")
        self._weight_steps = [] if steps is None else list(steps.to(self.device).unbind(0))
        if rng is not None:
            set_rng_state(rng["global"])
            self.attack_gen.set_state(rng["attack"])


def _tensor_hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _truncate_jsonl(path: Path, keep_epochs_below: int) -> None:
    """Drop metric lines of epochs not covered by the checkpoint being resumed."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["epoch"] <= keep_epochs_below]
    path.write_text("".join(ln + "\n" for ln in kept))


def _truncate_csv(path: Path, keep_epochs_below: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if int(r[1]) < keep_epochs_below]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def _newest_run(dataset: str, method: str) -> Path | None:
    runs = sorted(Path("runs").glob(f"train-{dataset}-{method}-*"), key=lambda p: p.stat().st_mtime)
    runs = [r for r in runs if (r / "last.pt").exists()]
    return runs[-1] if runs else None


# --------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------
class StopRequest:
    """SIGINT handler: the first Ctrl-C asks the loop to stop at the next step boundary (it then
    saves and exits with 130); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: KeyboardInterrupt is caught instead
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def _load_init(parser, path: str, cfg: dict, dataset: ImageDataset) -> nn.Module:
    """The --init model; refuses another architecture or class count (exit 2)."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        parser.error(f"--init: {exc}")
    config = ckpt.get("model_config")
    if isinstance(config, dict):
        if config.get("name") != cfg["model"]:
            parser.error(
                f"--init: {path} holds a {config.get('name')!r} model but --model is "
                f"{cfg['model']!r}"
            )
        if config.get("num_classes") != dataset.num_classes:
            parser.error(
                f"--init: {path} has {config.get('num_classes')} classes but {dataset.name} has "
                f"{dataset.num_classes}"
            )
        if config.get("in_channels") != dataset.in_channels:
            parser.error(
                f"--init: {path} expects {config.get('in_channels')} input channels but "
                f"{dataset.name} has {dataset.in_channels}"
            )
    model_config = {
        "name": cfg["model"],
        "num_classes": dataset.num_classes,
        "in_channels": dataset.in_channels,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "image_size": dataset.image_size,
    }
    try:
        model, _ = model_from_checkpoint(ckpt, model_config=model_config)
    except (CheckpointMismatchError, CheckpointError) as exc:
        parser.error(f"--init: {path}: {exc}")
    return model


def _init_model_name(parser, path: str) -> str | None:
    try:
        config = load_checkpoint(path).get("model_config")
    except CheckpointError as exc:
        parser.error(f"--init: {exc}")
    return config.get("name") if isinstance(config, dict) else None


def _resume_config(parser, argv, cfg_new: dict, run_dir: Path) -> dict:
    """The saved config, with the allowed overrides; exit 2 listing conflicting keys."""
    path = run_dir / "config.json"
    if not path.exists():
        parser.error(f"--resume: {path} does not exist (not a training run directory)")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        parser.error(f"--resume: {path} is not valid JSON: {exc}")
    saved = {**ADDED_OPTION_DEFAULTS, **saved}  # runs written before these options existed
    explicit = _explicit_options(argv)
    conflicts = []
    for key in sorted(explicit):
        if key in RESUME_OVERRIDABLE:
            continue
        if key in saved and _jsonable(cfg_new[key]) != saved[key]:
            conflicts.append(f"{key}: run has {saved[key]!r}, given {_jsonable(cfg_new[key])!r}")
    if conflicts:
        parser.error(
            f"--resume: the options given conflict with {path}: "
            + "; ".join(conflicts)
            + ". Leave them out to continue the run as configured."
        )
    merged = dict(saved)
    for key in explicit & RESUME_OVERRIDABLE:
        merged[key] = cfg_new[key]
    merged["resume"] = str(run_dir)
    merged["out"] = str(run_dir)
    return merged


def _print(ctx: dd.DistContext, *args, **kw) -> None:
    if ctx.is_main:
        print(*args, **kw, flush=True)


def main(
    argv: Sequence[str] | None = None,
    *,
    on_step_end: Callable[[Trainer], None] | None = None,
    on_epoch_end: Callable[[Trainer], None] | None = None,
) -> int:
    """Run the CLI; returns the exit status (0 done, 130 interrupted; 2 via argparse errors).

    ``on_step_end`` / ``on_epoch_end`` are called with the trainer after each step / after each
    epoch's checkpoint; raising KeyboardInterrupt there acts as Ctrl-C at that boundary.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = resolve_config(args, parser)

    ctx = dd.init_distributed(cfg["device"])
    try:
        return _run(parser, argv, cfg, ctx, on_step_end, on_epoch_end)
    finally:
        dd.shutdown(ctx)


def _set_threads(cfg: dict, ctx: dd.DistContext) -> None:
    threads = cfg["threads"]
    if threads is None and ctx.device.type == "cpu" and cfg["model"] in (None, "small-cnn"):
        # The small CNN's convolutions are too small to gain from intra-op threads; on a busy
        # 2-core machine 2 threads made a PGD step 50x slower than 1 (measured).
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)


def _open_run_dir(parser, argv, cfg: dict, ctx: dd.DistContext) -> tuple[dict, Path]:
    """The run directory (rank 0 decides, every rank learns it); on --resume, the saved config."""
    if cfg["resume"] is not None:
        run_dir = Path(cfg["resume"] or cfg["out"] or "")
        if not (cfg["resume"] or cfg["out"]):
            run_dir = _newest_run(cfg["dataset"], cfg["method"])
            if run_dir is None:
                parser.error(
                    f"--resume: no run of {cfg['dataset']}/{cfg['method']} with a last.pt "
                    "under runs/; give the run directory"
                )
        if not (run_dir / "last.pt").exists():
            parser.error(f"--resume: {run_dir / 'last.pt'} does not exist")
        cfg = _resume_config(parser, argv, cfg, run_dir)
    elif cfg["out"]:
        run_dir = Path(cfg["out"])
        if (run_dir / "last.pt").exists():
            parser.error(
                f"--out: {run_dir} already holds a run (last.pt); continue it with --resume "
                f"{run_dir} or choose another --out"
            )
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"train-{cfg['dataset']}-{cfg['method']}-{stamp}"
    run_dir = Path(dd.broadcast_object(str(run_dir), ctx))
    cfg["out"] = str(run_dir)
    return cfg, run_dir


def _load_data(parser, cfg: dict, ctx: dd.DistContext) -> ImageDataset:
    """The data set (training subset, validation split); fills in eps, step size, model."""
    preset = PRESETS[cfg["method"]]
    try:
        if cfg.get("download") and ctx.world_size > 1:  # one process fetches, the others wait
            if ctx.rank == 0:
                load_dataset(cfg["dataset"], cfg["data_dir"], download=True)
            dd.barrier(ctx)
        dataset = load_dataset(
            cfg["dataset"],
            cfg["data_dir"],
            val_per_class=cfg["val_per_class"],
            seed=cfg["seed"],
            download=bool(cfg.get("download")) and ctx.world_size == 1,
        )
    except (DatasetError, ValueError) as exc:
        parser.error(f"--dataset {cfg['dataset']}: {exc}")
    if cfg["train_per_class"]:
        dataset.train = stratified_subset(dataset.train, cfg["train_per_class"], seed=cfg["seed"])
    if preset.needs_validation and len(dataset.val) == 0:
        parser.error(f"method {preset.name} needs a validation split: set --val-per-class > 0")
    for key in ("class_boundary_weight", "class_eps_scale"):
        try:
            class_ratio_vector(cfg.get(key), dataset.classes, "--" + key.replace("_", "-"))
        except ValueError as exc:
            parser.error(str(exc))
    norm = cfg.get("norm", "linf")
    cfg["eps"], cfg["step_size"] = dataset.attack_budget(norm, cfg["eps"], cfg["step_size"])
    if cfg["channels_last"] is None:
        cfg["channels_last"] = ctx.device.type == "cuda"
    if cfg["model"] is None and cfg["init"] and cfg["resume"] is None:
        cfg["model"] = _init_model_name(parser, cfg["init"])
    if cfg["model"] is None:
        cfg["model"] = DATASET_DEFAULTS[cfg["dataset"]].model
    return dataset


def _restore(parser, trainer: Trainer, run_dir: Path, ctx: dd.DistContext) -> dict:
    """Load last.pt into the trainer (this rank's RNG streams); returns the best-score record."""
    path = run_dir / "last.pt"
    try:
        ckpt = load_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:
        parser.error(f"--resume: {exc}")
    if ckpt.get("model_config", {}).get("name") != trainer.cfg["model"]:
        parser.error(f"--resume: {path} does not hold a {trainer.cfg['model']} model")
    rngs = ckpt["rng"]
    rng = rngs[ctx.rank] if len(rngs) == ctx.world_size else None
    if rng is None:
        _print(
            ctx,
            f"note: the checkpoint comes from {len(rngs)} process(es), this run has "
            f"{ctx.world_size}: random streams restart (not an exact continuation)",
        )
    try:
        trainer.load_state_dict(ckpt["trainer"], rng)
    except (CheckpointMismatchError, KeyError, ValueError) as exc:
        parser.error(f"--resume: {path} does not fit this run: {exc}")
    if ctx.is_main:  # forget what was logged after this checkpoint
        _truncate_jsonl(run_dir / "metrics.jsonl", trainer.epoch)
        _truncate_csv(run_dir / "class_weights.csv", trainer.epoch)
    _print(ctx, f"resuming {run_dir} at epoch {trainer.epoch + 1}, step {trainer.step}")
    return dict(ckpt.get("best", {"score": -math.inf, "epoch": None}))


class _RunFiles:
    """What rank 0 writes into the run directory during training (checkpoints, metrics)."""

    def __init__(self, run_dir: Path, trainer: Trainer, loader: BatchLoader, best: dict) -> None:
        self.run_dir, self.trainer, self.loader, self.best = run_dir, trainer, loader, best
        self.ctx = trainer.ctx

    def checkpoint(self) -> dict:
        """The checkpoint dict (collective: gathers every rank's RNG streams)."""
        t = self.trainer
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": t.model.model_config,
            "model": t.model.state_dict(),
            "trainer": t.state_dict(),
            "rng": dd.all_gather_object(t.rng_states(), self.ctx),
            "loader": self.loader.state,
            "best": self.best,
            "config": _jsonable(t.cfg),
            "classes": list(t.dataset.classes),
            "epoch": t.epoch,
            "step": t.step,
        }

    def save(self, *names: str) -> None:
        ckpt = self.checkpoint()
        if self.ctx.is_main:
            for name in names or ("last.pt",):
                save_atomic(ckpt, self.run_dir / name)

    def end_of_epoch(self, record: dict, weight_steps: list[list[float]]) -> None:
        """Append the epoch's metrics; save last.pt, and best.pt on a better validation score."""
        names = ["last.pt"]
        if "val" in record and record["val"]["pgd20"]["worst"] > self.best["score"]:
            self.best.update(score=record["val"]["pgd20"]["worst"], epoch=record["epoch"])
            names.append("best.pt")
        if self.ctx.is_main:
            with (self.run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            if weight_steps:
                first = self.trainer.global_step - len(weight_steps)
                _append_weight_steps(
                    self.run_dir / "class_weights.csv", record["epoch"] - 1, weight_steps, first
                )
        self.save(*names)

    def interrupted(self) -> int:
        self.save()
        t = self.trainer
        _print(
            self.ctx,
            f"\ninterrupted at epoch {t.epoch + 1}, step {t.step}; saved "
            f"{self.run_dir / 'last.pt'}.\nResume with: python -m deep.train --resume "
            f"{self.run_dir}",
        )
        return 130


def _run(parser, argv, cfg, ctx, on_step_end, on_epoch_end) -> int:
    _set_threads(cfg, ctx)
    cfg, run_dir = _open_run_dir(parser, argv, cfg, ctx)
    dataset = _load_data(parser, cfg, ctx)
    init_model = None
    if cfg["init"] and cfg["resume"] is None:
        init_model = _load_init(parser, cfg["init"], cfg, dataset)
    trainer = Trainer(cfg, dataset, ctx, init_model=init_model)
    best = {"score": -math.inf, "epoch": None}
    if cfg["resume"] is not None:
        best = _restore(parser, trainer, run_dir, ctx)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(_jsonable(cfg), indent=2) + "\n")
    loader = BatchLoader(
        dataset.train, cfg["batch_size"], device=ctx.device, shuffle=True,
        augment=dataset.augment, seed=cfg["seed"], rank=ctx.rank, world_size=ctx.world_size,
        drop_last=True,
    )  # fmt: skip
    if len(loader) == 0:
        parser.error(
            f"--batch-size {cfg['batch_size']} exceeds the {len(dataset.train)} training images "
            f"(per process: {loader.num_samples})"
        )
    files = _RunFiles(run_dir, trainer, loader, best)
    status = _train_loop(trainer, loader, files, on_step_end, on_epoch_end)
    if status is not None:
        return status
    dd.barrier(ctx)
    return _finish(cfg, trainer, dataset, run_dir, ctx)


def _train_loop(trainer: Trainer, loader: BatchLoader, files: _RunFiles, on_step_end,
                on_epoch_end) -> int | None:  # fmt: skip
    """Epochs until done (None) or interrupted (130, after saving a consistent checkpoint).

    Ctrl-C is taken at step boundaries (every step in one process; every --log-every steps,
    agreed by all ranks, under torchrun). A KeyboardInterrupt raised inside a step (a second
    Ctrl-C) leaves no consistent state, so nothing new is saved then.
    """
    cfg, ctx = trainer.cfg, trainer.ctx
    show_bar = ctx.is_main and not cfg["quiet"] and sys.stderr.isatty()
    stop_every = cfg["log_every"] if ctx.enabled else 1
    consistent = True
    with StopRequest() as stop:
        try:
            while trainer.epoch < cfg["epochs"]:
                epoch, skip = trainer.epoch, trainer.step
                loader.set_epoch(epoch)  # batches depend on (seed, epoch) only
                lr = trainer.optimizer.param_groups[0]["lr"]
                class_eps = trainer.class_eps_values()
                t0 = time.perf_counter()
                bar = tqdm(
                    total=len(loader), initial=skip, leave=False, dynamic_ncols=True,
                    desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not show_bar,
                )  # fmt: skip
                for i, (x, y) in enumerate(loader):
                    if i < skip:  # resuming inside the epoch
                        continue
                    consistent = False
                    trainer.train_step(x, y)
                    consistent = True
                    bar.update(1)
                    if show_bar and trainer.step % cfg["log_every"] == 0:
                        bar.set_postfix(loss=f"{trainer.running_loss():.4f}")
                    if on_step_end is not None:
                        on_step_end(trainer)
                    if cfg["save_every"] and trainer.global_step % cfg["save_every"] == 0:
                        files.save()
                    if trainer.step % stop_every == 0 and dd.any_rank(stop.requested, ctx):
                        bar.close()
                        return files.interrupted()
                bar.close()
                consistent = False
                record, weight_steps = trainer.finish_epoch(lr=lr, class_eps=class_eps)
                record["epoch_time_s"] = time.perf_counter() - t0
                files.end_of_epoch(record, weight_steps)
                consistent = True
                _print(ctx, _epoch_line(record, cfg["epochs"]))
                if on_epoch_end is not None:
                    on_epoch_end(trainer)
                if dd.any_rank(stop.requested, ctx):
                    return files.interrupted()
        except KeyboardInterrupt:
            if consistent:
                return files.interrupted()
            _print(
                ctx,
                f"\ninterrupted inside a step; the last checkpoint is {files.run_dir / 'last.pt'}"
                f" (if any). Resume with: python -m deep.train --resume {files.run_dir}",
            )
            return 130
    return None


def _append_weight_steps(path: Path, epoch: int, rows: list[list[float]], first_step: int) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "epoch"] + [f"w{c}" for c in range(len(rows[0]))])
        for i, row in enumerate(rows):
            writer.writerow([first_step + i, epoch] + [f"{v:.6g}" for v in row])


def _epoch_line(record: dict, epochs: int) -> str:
    t = record["train"]
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {t['loss']:.4f}"]
    if "acc_adv" in t:
        parts.append(f"train adv acc {100 * t['acc_adv']:.1f}%")
    if "acc_clean" in t:
        parts.append(f"train clean acc {100 * t['acc_clean']:.1f}%")
    if "val" in record:
        v = record["val"]
        parts.append(
            f"val clean {100 * v['clean']['average']:.1f}/{100 * v['clean']['worst']:.1f}, "
            f"PGD-20 {100 * v['pgd20']['average']:.1f}/{100 * v['pgd20']['worst']:.1f} (avg/worst)"
        )
    parts.append(f"{record['epoch_time_s']:.1f}s")
    return " | ".join(parts)


def _final_checkpoint(cfg: dict, run_dir: Path) -> str:
    """``--final-checkpoint``: best.pt when asked for and written (a validation split), else
    last.pt."""
    wanted = cfg.get("final_checkpoint", "best")
    if wanted == "best" and (run_dir / "best.pt").exists():
        return "best.pt"
    return "last.pt"


def _finish(cfg: dict, trainer: Trainer, dataset: ImageDataset, run_dir: Path, ctx) -> int:
    """Evaluate the --final-checkpoint on the test set; final.json, figures, class-wise table."""
    chosen = _final_checkpoint(cfg, run_dir)
    model, _ = model_from_checkpoint(run_dir / chosen, map_location=ctx.device)
    test = dataset.test
    if cfg["final_n_per_class"]:
        test = stratified_subset(test, cfg["final_n_per_class"], seed=cfg["seed"])
    show = ctx.is_main and not cfg["quiet"] and sys.stderr.isatty()
    results = trainer.evaluate(
        test, cfg["final_attacks"], seed=cfg["seed"], progress=show, model=model
    )
    if not ctx.is_main:
        return 0
    final_path = write_final_json(
        run_dir,
        dataset=dataset.name,
        model=cfg["model"],
        norm=trainer.norm,
        eps=trainer.eps,
        step_size=trainer.step_size,
        classes=list(dataset.classes),
        results=results,
        method=cfg["method"],
        checkpoint=chosen,
        split="test" if not cfg["final_n_per_class"] else f"test, {cfg['final_n_per_class']}/class",
        seed=cfg["seed"],
    )
    final = json.loads(final_path.read_text())
    plot_classwise(final, run_dir / "classwise.png", title=f"{dataset.name} / {cfg['model']} / "
                   f"{cfg['method']}: class-wise test accuracy")  # fmt: skip
    _plot_weights(run_dir, dataset.classes)
    print(f"\n{cfg['method']} on {dataset.name} ({cfg['model']}, {trainer.norm} eps "
          f"{trainer.eps:.4g}), "
          f"{chosen}, class-wise test accuracy (%):")  # fmt: skip
    print(format_table(final))
    print(f"\nrun directory: {run_dir}", flush=True)
    return 0


def _plot_weights(run_dir: Path, classes: Sequence[str]) -> None:
    """class_weights.png: per-epoch mean class weights (and per-step ones when logged)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    per_epoch = [json.loads(ln)["class_weights"] for ln in lines if ln.strip()]
    if per_epoch:
        plot_class_weights(
            per_epoch, classes, run_dir / "class_weights.png", xlabel="epoch",
            title="class weights (mean per epoch)",
        )  # fmt: skip
    steps_csv = run_dir / "class_weights.csv"
    if steps_csv.exists():
        with steps_csv.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        if rows:
            plot_class_weights(
                [[float(v) for v in r[2:]] for r in rows], classes,
                run_dir / "class_weights_steps.png", xlabel="step",
                title="class weights per batch (FAAL supp. Fig. 6)",
            )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
