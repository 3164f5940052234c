"""The command line and configuration of ``python -m deep.train``.

:func:`build_parser` is the CLI (options grouped per part and per method, PyTorch style);
:func:`resolve_config` fills in the per-dataset defaults (:data:`DATASET_DEFAULTS`) and the
per-method ones that depend on the run length, and validates every option (argparse errors naming
the option and its range). The training loop is :mod:`deep.train`, one step :mod:`deep.trainer`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

from deep.attacks import NORMS
from deep.data import DATASET_NAMES, FRL_VAL_PER_CLASS
from deep.evaluate import ATTACK_NAMES, check_budget
from deep.methods.frl import FRL_STEP_RULES, FRL_UPDATE_AT
from deep.models import MODEL_NAMES
from deep.presets import METHOD_NAMES, PRESETS
from deep.progress import DEFAULT_INTERVAL_S
from deep.runtime import THREADS_HELP, CLIParser, DefaultsHelpFormatter, budget_value
from deep.selection import TIE_RULES
from deep.weighting import FAAL_STATISTICS
from theory.frl import FRL_RULE_RATES, FRL_RULES

__all__ = [
    "ADDED_OPTION_DEFAULTS",
    "DATASET_DEFAULTS",
    "DEFAULT_FINAL_ATTACKS",
    "DEFAULT_SIGMA",
    "FINAL_CHECKPOINTS",
    "RESUME_OVERRIDABLE",
    "SCHEDULES",
    "DatasetDefaults",
    "build_parser",
    "class_ratio_vector",
    "explicit_options",
    "parse_class_ratios",
    "parse_tau_schedule",
    "resolve_config",
]


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
#: 300 validation images per class. CIFAR-100: ResNet-18, 100 epochs, decay at 75/90, weight decay
#: 2e-4 (FAAL supp. C.7, after WAT).
#: digits / Fashion-MNIST: the small CNN, short cosine schedules for CPU runs.
DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "digits": DatasetDefaults("small-cnn", 15, 64, 0.05, "cosine", (), 5e-4, None),
    "fashion-mnist": DatasetDefaults("small-cnn", 10, 128, 0.05, "cosine", (), 5e-4, 300),
    "cifar10": DatasetDefaults(
        "preact-resnet18", 200, 128, 0.1, "multistep", (100, 150), 5e-4, FRL_VAL_PER_CLASS
    ),
    "cifar100": DatasetDefaults("resnet18", 100, 128, 0.1, "multistep", (75, 90), 2e-4, 50),
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
        "progress_interval",
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
    "best_ties": "first",  # runs saved before --best-ties kept the first of tied epochs
    "faal_statistic": "margin",
    "frl_step_rule": "fixed",
    "frl_update_at": "epoch-end",
    "frl_rule": "official",
    "attack_start": "random",
    "final_checkpoint": "best",
    "class_boundary_weight": None,
    "class_eps_scale": None,
    "cfa_lambda1": 0.5,
    "cfa_lambda2": 0.5,
    "cfa_begin": None,
    "cfa_decay": None,
    "fawa_threshold": None,
    "wat_eta": 0.1,
    "dafa_lambda": None,
    "dafa_warmup": None,
    "dafa_min_weight": 0.05,
    "norm": "linf",
    "sigma": None,
}

#: ``--attack-start``: the PGD training attack's start (random: the package's default; zero: FAAL
#: Algorithm 1's delta = 0).
ATTACK_STARTS = ("random", "zero")

#: Noise level of ``--method gaussian-noise`` when ``--sigma`` is not given (Cohen et al. train
#: with 0.12, 0.25, 0.5 and 1.0 on CIFAR-10).
DEFAULT_SIGMA = 0.25

#: Method options and the weighting (``deep.presets``) they belong to.
METHOD_OPTIONS = {
    "cfa_lambda1": "cfa",
    "cfa_lambda2": "cfa",
    "cfa_begin": "cfa",
    "cfa_decay": "cfa",
    "fawa_threshold": "cfa",
    "wat_eta": "wat",
    "dafa_lambda": "dafa",
    "dafa_warmup": "dafa",
    "dafa_min_weight": "dafa",
}

#: Checkpoint evaluated on the test set at the end (``--final-checkpoint``).
FINAL_CHECKPOINTS = ("best", "last", "ema", "fawa")

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
    parser = CLIParser(
        prog="python -m deep.train",
        description=(
            "Adversarial training with class-wise fairness (FAAL, FRL, CFA, WAT, DAFA) on one "
            "loop. Methods: " + ", ".join(METHOD_NAMES) + ". Defaults depend on --dataset."
        ),
        formatter_class=DefaultsHelpFormatter,
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
    add(
        "--data-dir",
        default=None,
        help="data folder (default: data/<dataset>; Debian's /usr/share/datasets/fashion-mnist)",
    )
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
        help="train on a stratified subset of this many images per class, >= 1 (quick runs; "
        "default: all)",
    )
    add(
        "--init",
        default=None,
        help="fine-tune from this checkpoint (weights only), or a run folder (its best.pt)",
    )

    section("optimisation")
    add("--epochs", type=int, default=None, help="epochs (default: per dataset)")
    add(
        "--batch-size", type=int, default=None, help="batch size per process (default: per dataset)"
    )
    add("--lr", type=float, default=None, help="learning rate (default: per dataset)")
    add("--momentum", type=float, default=0.9, help="SGD momentum")
    add("--weight-decay", type=float, default=None, help="weight decay (default: per dataset)")
    add(
        "--schedule",
        default=None,
        choices=SCHEDULES,
        help="lr schedule (per epoch; default: cosine on digits and Fashion-MNIST, multistep "
        "on CIFAR and SVHN)",
    )
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
        type=budget_value,
        default=None,
        help="budget, [0,1] pixel scale, a number or a fraction such as 8/255 (default: per "
        "dataset; l_2: 0.5 CIFAR, 1.0 Fashion-MNIST)",
    )
    add(
        "--step-size",
        type=budget_value,
        default=None,
        help="attack step, e.g. 2/255 (default: l_inf per dataset; l_2 eps/5)",
    )
    add("--attack-steps", type=int, default=10, help="attack iterations")
    add(
        "--attack-start",
        default="random",
        choices=ATTACK_STARTS,
        help="start of the PGD training attack: a uniform random point of the eps-ball (random) "
        "or the clean input, delta = 0, as FAAL Algorithm 1 writes it (zero); TRADES-type "
        "attacks keep TRADES's x + 0.001 N(0, I)",
    )
    add("--beta", type=float, default=None, help="KL weight of TRADES/MART/FRL (default: preset)")
    add(
        "--sigma",
        type=budget_value,
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
        help="solve the reference code's count-weighted objective sum_c n_c l_c",
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
    add(
        "--frl-delta",
        type=float,
        default=0.05,
        help="fairness tolerance delta0 = delta1 (FRL's tau1 = tau2)",
    )
    add(
        "--frl-rule",
        default="official",
        choices=FRL_RULES,
        help="multiplier update: as the FRL reference code runs it (official) or as Algorithm 1 "
        "and Eq. 11 print it (paper: gaps to the mean minus tau, eps_c <- eps_c exp(a2 (b_c - "
        "tau)), no normalisation or clamp, a1 = a2 = 0.05)",
    )
    add(
        "--frl-alpha1",
        type=float,
        default=None,
        help="multiplier rate a1 (default: 0.05 under both rules)",
    )
    add(
        "--frl-alpha2",
        type=float,
        default=None,
        help="remargin rate a2 (default: 0.2 with --frl-rule official, 0.05 with paper)",
    )
    add("--frl-lim", type=float, default=0.5, help="cap on the sum of multipliers (official rule)")
    add(
        "--frl-eps-cap",
        type=budget_value,
        default=None,
        help="cap on per-class eps (default: 2x the dataset eps = 16/255 on CIFAR)",
    )
    add(
        "--frl-step-rule",
        default="fixed",
        choices=FRL_STEP_RULES,
        help="Remargin attack step: the dataset's --step-size (fixed) or, as the FRL reference "
        "code, the largest per-class eps in the batch / 4 (batch-max)",
    )
    add(
        "--frl-update-at",
        default="epoch-end",
        choices=FRL_UPDATE_AT,
        help="update the multipliers after each epoch's validation (epoch-end) or, as the FRL "
        "reference code, at the start of each epoch, so the first epoch is already reweighted "
        "(epoch-start)",
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

    section("CFA (--method cfa-at, cfa-trades; Wei et al. 2023)")
    add("--cfa-lambda1", type=float, default=0.5, help="CCM: eps_k = (lambda1 + A_k) eps")
    add(
        "--cfa-lambda2",
        type=float,
        default=0.5,
        help="CCR (cfa-trades): b_k = (lambda2 + A_k) beta, KL weight b_k / (1 + b_k)",
    )
    add(
        "--cfa-begin",
        type=int,
        default=None,
        help="first epoch (0-based) with calibrated eps / beta (default: 10 for runs of >= 100 "
        "epochs as in the paper, else max(1, round(epochs / 20)))",
    )
    add(
        "--cfa-decay",
        type=float,
        default=None,
        help="EMA and FAWA decay per epoch (default: 0.88, the paper's, for runs of >= 100 "
        "epochs; 0.88^(100/epochs) for shorter runs, the same window as a share of the run)",
    )
    add(
        "--fawa-threshold",
        type=float,
        default=None,
        help="FAWA averages an epoch's weights when the worst class's validation PGD accuracy "
        "reaches this (default: 0.2 AT / 0.24 TRADES; Fashion-MNIST 0.04 / 0.048)",
    )

    section("WAT (--method wat-trades; Li & Liu 2023)")
    add("--wat-eta", type=float, default=0.1, help="exponential-weights rate eta")

    section("DAFA (--method dafa-trades, dafa-at; Lee et al. 2024)")
    add(
        "--dafa-lambda",
        type=float,
        default=None,
        help="weight-shift strength (default: 1.5 on CIFAR-100, else 1.0)",
    )
    add(
        "--dafa-warmup",
        type=int,
        default=None,
        help="epochs with weights 1; the class probabilities of the last one set the weights "
        "(default: round(70/110 x epochs), at least 1 and at most epochs - 1)",
    )
    add(
        "--dafa-min-weight",
        type=float,
        default=0.05,
        help="class weights are clipped at this positive floor",
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
        "accuracy; last.pt when there is no validation split), last.pt (the end of training), "
        "ema.pt (CFA's exponential moving average) or fawa.pt (CFA's fairness-aware weight "
        "average; last.pt if no epoch reached --fawa-threshold)",
    )
    add(
        "--best-ties",
        default="average",
        choices=TIE_RULES,
        help="best.pt keeps the epoch of best worst-class validation PGD-20 accuracy; of tied "
        "epochs, the one of higher average validation accuracy, then the later one (average), "
        "or the first one (first: the rule of runs saved before this option)",
    )
    add("--eval-batch-size", type=int, default=256, help="evaluation batch size")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    add(
        "--bf16",
        action="store_true",
        default=False,
        help="bfloat16 autocast for training (meant for CUDA; on the CPU it runs, usually slower)",
    )
    add("--compile", action="store_true", default=False, help="torch.compile the model")
    add(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: on for CUDA)",
    )
    add("--quiet", action="store_true", default=False, help="no progress output")
    add(
        "--progress-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help="when stderr is not a terminal (a log file, CI, a job scheduler): seconds between "
        "plain progress lines (step, rate, ETA, running loss)",
    )
    add("--debug", action="store_true", default=False, help="log a hash of the class weights")
    return parser


def explicit_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options given on the command line."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def _check(parser: argparse.ArgumentParser, ok: bool, message: str) -> None:
    if not ok:
        parser.error(message)


def _resolve_method_defaults(cfg: dict, preset) -> None:
    """The preset's options whose defaults depend on the dataset and the run length (stored
    resolved in config.json)."""
    from deep.methods import cfa, dafa

    trades = preset.objective == "trades"
    if preset.weighting == "cfa":
        if cfg["cfa_begin"] is None:
            cfg["cfa_begin"] = cfa.default_begin(cfg["epochs"])
        if cfg["cfa_decay"] is None:
            cfg["cfa_decay"] = cfa.default_decay(cfg["epochs"])
        if cfg["fawa_threshold"] is None:
            cfg["fawa_threshold"] = cfa.default_fawa_threshold(cfg["dataset"], trades)
    if preset.weighting == "dafa":
        if cfg["dafa_lambda"] is None:
            cfg["dafa_lambda"] = dafa.default_lambda(cfg["dataset"])
        if cfg["dafa_warmup"] is None:
            cfg["dafa_warmup"] = dafa.default_warmup(cfg["epochs"])


def config_notes(cfg: dict) -> list[str]:
    """Options that are valid but will have no effect in this run, said once at its start."""
    preset = PRESETS[cfg["method"]]
    notes = []
    if preset.weighting == "faal":
        if cfg["faal_start_epoch"] >= cfg["epochs"]:
            notes.append(
                f"--faal-start-epoch {cfg['faal_start_epoch']} is not before --epochs "
                f"{cfg['epochs']}: FAAL's class weights never start (uniform weights throughout)"
            )
        late = [epoch for epoch, _ in cfg["tau_schedule"] or [] if epoch >= cfg["epochs"]]
        if late:
            notes.append(
                f"--tau-schedule: epoch(s) {', '.join(map(str, late))} come after the last epoch "
                f"({cfg['epochs'] - 1}, counting from 0) and never apply"
            )
    if preset.weighting == "fixed-class" and not (
        cfg["class_boundary_weight"] or cfg["class_eps_scale"]
    ):
        notes.append(
            "--method fixed-class without --class-boundary-weight or --class-eps-scale treats "
            "every class alike (plain TRADES)"
        )
    return notes


def resolve_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> dict:
    """Full configuration (dataset defaults filled in; eps/step from the data set if unset).

    Invalid values end in ``parser.error`` (exit status 2) naming the option and its range.
    """
    d = DATASET_DEFAULTS[args.dataset]
    preset = PRESETS[args.method]
    cfg = dict(vars(args))
    explicit = set() if argv is None else explicit_options(argv)
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
    if args.milestones is not None and "milestones" in explicit and cfg["schedule"] != "multistep":
        parser.error(f"--milestones needs --schedule multistep (the schedule is {cfg['schedule']})")
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

    for key, weighting in METHOD_OPTIONS.items():
        option = "--" + key.replace("_", "-")
        if key in explicit and preset.weighting != weighting:
            methods = [p.name for p in PRESETS.values() if p.weighting == weighting]
            parser.error(f"{option} needs --method {' or '.join(methods)} (got {preset.name})")
    _resolve_method_defaults(cfg, preset)

    _check(parser, cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}")
    _check(parser, cfg["batch_size"] >= 1, f"--batch-size must be >= 1, got {cfg['batch_size']}")
    _check(parser, cfg["lr"] > 0, f"--lr must be > 0, got {cfg['lr']}")
    _check(parser, 0 <= cfg["momentum"] < 1, f"--momentum must be in [0, 1), got {args.momentum}")
    _check(parser, cfg["weight_decay"] >= 0, "--weight-decay must be >= 0")
    _check(parser, args.lr_gamma > 0, f"--lr-gamma must be > 0, got {args.lr_gamma}")
    _check(parser, all(m >= 1 for m in milestones), "--milestones must be epochs >= 1")
    _check(parser, args.eps is None or args.eps > 0, f"--eps must be > 0, got {args.eps}")
    _check(
        parser,
        args.step_size is None or args.step_size > 0,
        f"--step-size must be > 0, got {args.step_size}",
    )
    try:
        check_budget(0.0 if args.eps is None else args.eps, args.step_size or 1.0, args.norm)
    except ValueError as exc:
        parser.error(f"--eps/--step-size (--norm {args.norm}): {exc}")
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
    _check(
        parser,
        args.attack_start == "random" or preset.attack == "pgd",
        f"--attack-start zero needs a PGD training attack (--method {preset.name} uses "
        f"{preset.attack!r}; TRADES's KL has no gradient at the clean input)",
    )
    _check(parser, cfg["beta"] >= 0, f"--beta must be >= 0, got {cfg['beta']}")
    _check(parser, math.isfinite(args.tau) and args.tau >= 0, f"--tau must be >= 0, got {args.tau}")
    for epoch, tau in cfg["tau_schedule"] or []:
        _check(parser, epoch >= 0 and tau >= 0, "--tau-schedule: epochs and taus must be >= 0")
    _check(parser, args.faal_start_epoch >= 0, "--faal-start-epoch must be >= 0")
    _check(parser, args.frl_delta >= 0, "--frl-delta must be >= 0")
    rates = FRL_RULE_RATES[args.frl_rule]
    for k, key in enumerate(("frl_alpha1", "frl_alpha2")):
        cfg[key] = rates[k] if cfg[key] is None else cfg[key]
        _check(parser, cfg[key] >= 0, f"--{key.replace('_', '-')} must be >= 0, got {cfg[key]}")
    _check(parser, 0 < args.frl_lim < 1, f"--frl-lim must be in (0, 1), got {args.frl_lim}")
    _check(parser, args.frl_eps_cap is None or args.frl_eps_cap > 0, "--frl-eps-cap must be > 0")
    _check(parser, args.baseline_boost >= 1, "--baseline-boost must be >= 1")
    _check(parser, args.cfa_lambda1 >= 0, "--cfa-lambda1 must be >= 0")
    _check(parser, args.cfa_lambda2 >= 0, "--cfa-lambda2 must be >= 0")
    _check(parser, cfg["cfa_begin"] is None or cfg["cfa_begin"] >= 1, "--cfa-begin must be >= 1")
    decay = cfg["cfa_decay"]
    _check(parser, decay is None or 0 <= decay < 1, f"--cfa-decay must be in [0, 1), got {decay}")
    threshold = cfg["fawa_threshold"]
    _check(parser, threshold is None or 0 <= threshold <= 1, "--fawa-threshold must be in [0, 1]")
    _check(parser, args.wat_eta >= 0, f"--wat-eta must be >= 0, got {args.wat_eta}")
    _check(
        parser, cfg["dafa_lambda"] is None or cfg["dafa_lambda"] >= 0, "--dafa-lambda must be >= 0"
    )
    _check(
        parser, cfg["dafa_warmup"] is None or cfg["dafa_warmup"] >= 1, "--dafa-warmup must be >= 1"
    )
    _check(parser, args.dafa_min_weight > 0, "--dafa-min-weight must be > 0")
    if cfg["final_checkpoint"] in ("ema", "fawa"):
        _check(
            parser,
            cfg["final_checkpoint"] in preset.averaged_models,
            f"--final-checkpoint {cfg['final_checkpoint']} needs a method that keeps averaged "
            f"models (cfa-at, cfa-trades); got --method {preset.name}",
        )
    _check(parser, args.awp_gamma >= 0, "--awp-gamma must be >= 0")
    _check(parser, args.awp_proxy_lr > 0, "--awp-proxy-lr must be > 0")
    _check(parser, args.awp_warmup >= 0, "--awp-warmup must be >= 0")
    _check(parser, args.save_every >= 0, "--save-every must be >= 0")
    _check(parser, args.log_every >= 1, "--log-every must be >= 1")
    _check(parser, args.eval_batch_size >= 1, "--eval-batch-size must be >= 1")
    _check(parser, args.threads is None or args.threads >= 1, "--threads must be >= 1")
    _check(parser, args.progress_interval >= 0, "--progress-interval must be >= 0 seconds")
    _check(parser, cfg["val_per_class"] is None or cfg["val_per_class"] >= 0,
           "--val-per-class must be >= 0")  # fmt: skip
    for key in ("train_per_class", "final_n_per_class"):  # None means all; 0 is an error
        value = cfg[key]
        _check(parser, value is None or value >= 1, f"--{key.replace('_', '-')} must be >= 1, "
               f"got {value} (leave it out to use every image)")  # fmt: skip
    if preset.needs_validation:
        _check(
            parser,
            cfg["val_per_class"] is None or cfg["val_per_class"] > 0,
            f"method {preset.name} updates from validation errors: --val-per-class must be > 0",
        )
    return cfg
