"""Adversarial training with class-wise fairness: ``python -m deep.train``, one loop for every
method of :mod:`deep.presets`.

``python -m deep.train`` (no arguments) trains the small CNN on scikit-learn's digits with FAAL on
PGD-AT at eps 0.1 and prints class-wise results. The command line and configuration are
:mod:`deep.config`; one run's state and training step :mod:`deep.trainer`; the methods
:mod:`deep.methods`. This module runs the epochs and writes the run directory:

After each epoch: ``metrics.jsonl``, ``last.pt``, ``best.pt`` (best worst-class robust validation
accuracy) and the method's averaged models (CFA: ``ema.pt``, ``fawa.pt``). At the end:
``final.json`` on the test set (deep.evaluate's writer) for ``--final-checkpoint`` (best.pt by
default, last.pt when there is no validation split; or last.pt, ema.pt, fawa.pt), and figures.
Runs continue exactly from ``last.pt`` (``--resume``); Ctrl-C saves and exits with status 130.
Under ``torchrun`` the run is data-parallel (DDP).
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from deep import distributed as dd
from deep.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
    save_atomic,
)
from deep.config import (
    ADDED_OPTION_DEFAULTS,
    DATASET_DEFAULTS,
    FINAL_CHECKPOINTS,
    RESUME_OVERRIDABLE,
    build_parser,
    class_ratio_vector,
    config_notes,
    explicit_options,
    parse_class_ratios,
    parse_tau_schedule,
    resolve_config,
)
from deep.data import (
    BatchLoader,
    ClassTooSmallError,
    DatasetError,
    ImageDataset,
    default_data_dir,
    load_dataset,
    stratified_subset,
)
from deep.evaluate import check_budget, format_table
from deep.models import CheckpointMismatchError
from deep.plots import plot_class_weight_steps, plot_class_weights, plot_classwise
from deep.presets import PRESETS
from deep.progress import DEFAULT_INTERVAL_S, Progress
from deep.results import atomic_write_text, build_final_json, write_final_json
from deep.runtime import (
    apply_thread_policy,
    check_output_dir,
    exit_on_file_error,
    exit_on_interrupt,
    format_budget,
    resolve_device,
)
from deep.selection import RULE_TEXT, better, selection_key
from deep.trainer import Trainer

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
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def _truncate_csv(path: Path, keep_epochs_below: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if int(r[1]) < keep_epochs_below]
    buf = io.StringIO()
    csv.writer(buf).writerows(kept)
    atomic_write_text(path, buf.getvalue())


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
    trained_on = (ckpt.get("config") or {}).get("dataset") if isinstance(ckpt, dict) else None
    if trained_on and trained_on != dataset.name:
        print(f"note: --init {path} was trained on {trained_on}; fine-tuning it on "
              f"{dataset.name}", flush=True)  # fmt: skip
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
    explicit = explicit_options(argv)
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
    cfg = resolve_config(args, parser, argv)

    resolve_device(parser, cfg["device"])  # a bad --device is an error before anything starts
    ctx = dd.init_distributed(cfg["device"])
    try:
        with exit_on_interrupt("training", note=" before its first checkpoint; nothing was saved"):
            code = _run(parser, argv, cfg, ctx, on_step_end, on_epoch_end)
    except BaseException:
        dd.shutdown(ctx, wait=False)
        raise
    dd.shutdown(ctx)
    return code


def _set_threads(cfg: dict, ctx: dd.DistContext) -> None:
    """``--threads``, else one thread for the small CNN on the CPU (deep.runtime's policy)."""
    model = cfg["model"] or DATASET_DEFAULTS[cfg["dataset"]].model
    apply_thread_policy(cfg["threads"], ctx.device, model)


def _open_run_dir(parser, argv, cfg: dict, ctx: dd.DistContext) -> tuple[dict, Path]:
    """The run directory (rank 0 decides, every rank learns it); on --resume, the saved config."""
    # a file, a path under a file or an unwritable place: refused before any work (every rank)
    if cfg["resume"]:
        check_output_dir(parser, cfg["resume"], "--resume")
    check_output_dir(parser, cfg["out"] or "runs", "--out")
    if cfg["resume"] is not None:
        run_dir = Path(cfg["resume"] or cfg["out"] or "")
        if not (cfg["resume"] or cfg["out"]):
            run_dir = _newest_run(cfg["dataset"], cfg["method"])
            if run_dir is None:
                parser.error(
                    f"--resume without a folder looks for the newest "
                    f"runs/train-{cfg['dataset']}-{cfg['method']}-*/last.pt (deep.train's "
                    "folders when --out is not given) and found none; give the run directory: "
                    "--resume DIR"
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
    if cfg["init"] and cfg["resume"] is None:  # a run folder means its best.pt
        try:
            cfg["init"] = str(resolve_checkpoint(cfg["init"]))
        except ValueError as exc:
            parser.error(f"--init: {exc}")
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
    except DatasetError as exc:
        message = str(exc)
        prefix = f"{cfg['dataset']}: "
        parser.error(f"--dataset {cfg['dataset']}: {message.removeprefix(prefix)}")
    except ClassTooSmallError as exc:  # the validation split does not fit the training set
        parser.error(exc.describe("--val-per-class"))
    # config.json records what was used, not "the default"
    cfg["val_per_class"] = len(dataset.val) // max(len(dataset.classes), 1)
    if cfg["data_dir"] is None and cfg["dataset"] != "digits":
        cfg["data_dir"] = str(default_data_dir(cfg["dataset"]))
    if cfg["train_per_class"]:
        try:
            dataset.train = stratified_subset(
                dataset.train, cfg["train_per_class"], seed=cfg["seed"]
            )
        except ClassTooSmallError as exc:
            where = "after the validation split" if len(dataset.val) else "here"
            parser.error(exc.describe("--train-per-class", where))
    if cfg["final_n_per_class"]:  # checked now, not after hours of training
        smallest = int(torch.bincount(dataset.test.y).min())
        if cfg["final_n_per_class"] > smallest:
            parser.error(
                f"--final-n-per-class must be at most {smallest} (the test set's smallest "
                f"class), got {cfg['final_n_per_class']}"
            )
    if preset.needs_validation and len(dataset.val) == 0:
        parser.error(f"method {preset.name} needs a validation split: set --val-per-class > 0")
    for key in ("class_boundary_weight", "class_eps_scale"):
        try:
            class_ratio_vector(cfg.get(key), dataset.classes, "--" + key.replace("_", "-"))
        except ValueError as exc:
            parser.error(str(exc))
    norm = cfg.get("norm", "linf")
    cfg["eps"], cfg["step_size"] = dataset.attack_budget(norm, cfg["eps"], cfg["step_size"])
    try:
        check_budget(cfg["eps"], cfg["step_size"], norm, tuple(dataset.test.x.shape[1:]))
    except ValueError as exc:
        parser.error(f"--eps/--step-size (--norm {norm}): {exc}")
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
    ranks = ckpt.get("rank_state") or []
    try:
        trainer.load_state_dict(ckpt["trainer"], rng)
        if len(ranks) == ctx.world_size:  # saved inside an epoch by as many processes
            trainer.load_rank_state(ranks[ctx.rank])
    except (CheckpointMismatchError, KeyError, ValueError) as exc:
        parser.error(f"--resume: {path} does not fit this run: {exc}")
    if ctx.is_main:  # forget what was logged after this checkpoint
        _truncate_jsonl(run_dir / "metrics.jsonl", trainer.epoch)
        _truncate_csv(run_dir / "class_weights.csv", trainer.epoch)
    if trainer.epoch >= trainer.cfg["epochs"]:
        _print(ctx, f"{run_dir} finished training ({trainer.epoch}/{trainer.cfg['epochs']} epochs)")
    else:
        _print(ctx, f"resuming {run_dir} at epoch {trainer.epoch + 1}, step {trainer.step}")
    return _best_record(parser, run_dir)


def _best_record(parser, run_dir: Path) -> dict:
    """The best-score record of a resumed run: the one best.pt holds (none without best.pt).

    best.pt is written before last.pt, so after a kill between the two it is one epoch ahead
    of last.pt; its own record is the one that describes it. Taking it keeps the record and the
    file consistent whatever moment the previous process died at.
    """
    path = run_dir / "best.pt"
    if not path.exists():
        return {"score": -math.inf, "epoch": None}
    try:
        return dict(load_checkpoint(path, map_location="cpu")["best"])
    except (CheckpointError, KeyError) as exc:
        parser.error(f"--resume: {path} is not a checkpoint of this run ({exc}); move it away")


class _RunFiles:
    """What rank 0 writes into the run directory during training (checkpoints, metrics)."""

    def __init__(self, run_dir: Path, trainer: Trainer, loader: BatchLoader, best: dict) -> None:
        self.run_dir, self.trainer, self.loader, self.best = run_dir, trainer, loader, best
        self.ctx = trainer.ctx

    def checkpoint(self) -> dict:
        """The checkpoint dict (collective: gathers every rank's RNG streams and, inside an epoch
        under torchrun, every rank's buffers and metric sums)."""
        t = self.trainer
        mid_epoch = self.ctx.enabled and t.step > 0
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": t.model.model_config,
            "model": t.model.state_dict(),
            "trainer": t.state_dict(),
            "rng": dd.all_gather_object(t.rng_states(), self.ctx),
            **({"rank_state": dd.all_gather_object(t.rank_state(), self.ctx)} if mid_epoch else {}),
            "loader": self.loader.state,
            "best": self.best,
            "config": _jsonable(t.cfg),
            "classes": list(t.dataset.classes),
            "epoch": t.epoch,
            "step": t.step,
        }

    def save(self, *names: str) -> None:
        """Rank 0 writes the checkpoint; every rank returns once it is on disk."""
        ckpt = self.checkpoint()
        if self.ctx.is_main:
            for name in names or ("last.pt",):
                save_atomic(ckpt, self.run_dir / name)
        dd.barrier(self.ctx)

    def end_of_epoch(self, record: dict, weight_steps: list[list[float]]) -> None:
        """Append the epoch's metrics; save last.pt, and best.pt on a better validation score."""
        names = ["last.pt"]
        rule = self.trainer.cfg.get("best_ties", "first")
        if "val" in record and better(record, self.best, rule):
            worst, average = selection_key(record)
            if worst == self.best["score"]:  # a tie decided by the rule: say so in the log
                _print(self.ctx, f"best.pt: epoch {record['epoch']} ties epoch "
                       f"{self.best['epoch']} on worst-class validation PGD-20 accuracy "
                       f"({100 * worst:.1f}%) and replaces it: average {100 * average:.2f}% vs "
                       f"{100 * self.best.get('average', float('nan')):.2f}% (--best-ties "
                       f"{rule})")  # fmt: skip
            self.best.update(score=worst, average=average, epoch=record["epoch"])
            names.insert(0, "best.pt")  # best.pt first: a kill in between leaves it ahead
        if self.ctx.is_main:
            self.save_averaged_models()
            with (self.run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            if weight_steps:
                first = self.trainer.global_step - len(weight_steps)
                _append_weight_steps(
                    self.run_dir / "class_weights.csv", record["epoch"] - 1, weight_steps, first
                )
        self.save(*names)

    def save_averaged_models(self) -> None:
        """The method's averaged models (CFA: ema.pt, fawa.pt), each loadable alone."""
        t = self.trainer
        for name in t.method.averaged_model_names:
            state = t.method.averaged_state(name)
            if state is not None:
                ckpt = {"model_config": t.model.model_config, "model": state, "epoch": t.epoch}
                save_atomic(ckpt, self.run_dir / f"{name}.pt")

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
    loader = BatchLoader(
        dataset.train, cfg["batch_size"], device=ctx.device, shuffle=True,
        augment=dataset.augment, seed=cfg["seed"], rank=ctx.rank, world_size=ctx.world_size,
        drop_last=True,
    )  # fmt: skip
    if len(loader) == 0:  # checked before anything is written
        parser.error(
            f"--batch-size {cfg['batch_size']} exceeds the {len(dataset.train)} training images "
            f"(per process: {loader.num_samples})"
        )
    dropped = len(dataset.train) - len(loader) * cfg["batch_size"] * ctx.world_size
    notes = config_notes(cfg)
    if dropped > 0.1 * len(dataset.train):
        notes.append(
            f"each epoch uses {len(dataset.train) - dropped} of the {len(dataset.train)} "
            f"training images: the last, partial batch of --batch-size {cfg['batch_size']} is "
            "dropped (the shuffle changes which images)"
        )
    for text in notes if cfg["resume"] is None else []:
        _print(ctx, f"note: {text}")
    if cfg["resume"] is None:
        _print(ctx, f"attack budget: {cfg.get('norm', 'linf')} eps {format_budget(cfg['eps'])}, "
               f"step {format_budget(cfg['step_size'])}")  # fmt: skip
        if len(dataset.val):
            ties = "ties: higher average, then later epoch"
            if cfg.get("best_ties") == "first":
                ties = "ties: the first epoch"
            _print(ctx, f"model selection: {RULE_TEXT.split(';')[0]} ({ties}; --best-ties)")
    if cfg["resume"] is not None:
        best = _restore(parser, trainer, run_dir, ctx)
        if trainer.epoch >= cfg["epochs"] and (run_dir / "final.json").exists():
            _print(ctx, f"nothing to do: {run_dir / 'final.json'} holds its test results "
                   "(python -m deep.evaluate evaluates a checkpoint further)")  # fmt: skip
            return 0
    fresh_dir = not run_dir.exists()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(_jsonable(cfg), indent=2) + "\n")
        if cfg["resume"] is None:  # a run that died before its first last.pt starts over
            _truncate_jsonl(run_dir / "metrics.jsonl", 0)
            _truncate_csv(run_dir / "class_weights.csv", 0)
    files = _RunFiles(run_dir, trainer, loader, best)
    status = _train_loop(trainer, loader, files, on_step_end, on_epoch_end)
    if status is not None:
        if fresh_dir and ctx.is_main and not (run_dir / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # no checkpoint: no half-written folder
            _print(ctx, f"nothing was saved; removed {run_dir}")
        return status
    dd.barrier(ctx)
    note = f"; training is saved, python -m deep.train --resume {run_dir} evaluates it"
    with exit_on_interrupt("final evaluation", note=note):
        return _finish(cfg, trainer, dataset, run_dir, ctx)


def _train_loop(trainer: Trainer, loader: BatchLoader, files: _RunFiles, on_step_end,
                on_epoch_end) -> int | None:  # fmt: skip
    """Epochs until done (None) or interrupted (130, after saving a consistent checkpoint).

    Ctrl-C is taken at step boundaries (every step in one process; every --log-every steps,
    agreed by all ranks, under torchrun). A KeyboardInterrupt raised inside a step (a second
    Ctrl-C) leaves no consistent state, so nothing new is saved then.
    """
    cfg, ctx = trainer.cfg, trainer.ctx
    show = ctx.is_main and not cfg["quiet"]
    stop_every = cfg["log_every"] if ctx.enabled else 1
    consistent = True
    if trainer.epoch == trainer.step == 0 and getattr(
        trainer.method, "updates_before_training", False
    ):
        record = trainer.update_before_training()
        _print(ctx, "update before epoch 1 (--frl-update-at epoch-start): " + json.dumps(record))
    with StopRequest() as stop:
        try:
            while trainer.epoch < cfg["epochs"]:
                epoch, skip = trainer.epoch, trainer.step
                loader.set_epoch(epoch)  # batches depend on (seed, epoch) only
                lr = trainer.optimizer.param_groups[0]["lr"]
                class_eps = trainer.class_eps_values()
                t0 = time.perf_counter()
                bar = Progress(
                    len(loader), f"epoch {epoch + 1}/{cfg['epochs']}", enabled=show,
                    interval=cfg.get("progress_interval", DEFAULT_INTERVAL_S), initial=skip,
                )  # fmt: skip
                for i, (x, y) in enumerate(loader):
                    if i < skip:  # resuming inside the epoch
                        continue
                    consistent = False
                    trainer.train_step(x, y)
                    consistent = True
                    if bar.mode != "bar":  # a plain line reads the loss only when printed
                        bar.update(1, loss=lambda: f"{trainer.running_loss():.4f}")
                    elif trainer.step % cfg["log_every"] == 0:
                        bar.update(1, loss=f"{trainer.running_loss():.4f}")
                    else:
                        bar.update(1)
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
                noisy = PRESETS[cfg["method"]].attack == "gaussian"
                _print(ctx, _epoch_line(record, cfg["epochs"], noisy=noisy))
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


def _epoch_line(record: dict, epochs: int, *, noisy: bool = False) -> str:
    """One line per epoch; ``noisy``: the training inputs are Gaussian-noise copies, not attacks."""
    t = record["train"]
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {t['loss']:.4f}"]
    if "acc_adv" in t:
        parts.append(f"train {'noisy' if noisy else 'adv'} acc {100 * t['acc_adv']:.1f}%")
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


def _final_checkpoint(cfg: dict, run_dir: Path, ctx) -> str:
    """``--final-checkpoint``: best.pt when asked for and written (a validation split); an averaged
    model (ema.pt, fawa.pt) when written, else last.pt, saying so."""
    wanted = cfg.get("final_checkpoint", "best")
    if wanted == "best" and (run_dir / "best.pt").exists():
        return "best.pt"
    if wanted in ("ema", "fawa"):
        if (run_dir / f"{wanted}.pt").exists():
            return f"{wanted}.pt"
        _print(
            ctx,
            f"note: no {wanted}.pt (FAWA's worst-class validation threshold was never reached); "
            "evaluating last.pt instead",
        )
    return "last.pt"


def _finish(cfg: dict, trainer: Trainer, dataset: ImageDataset, run_dir: Path, ctx) -> int:
    """Evaluate the --final-checkpoint on the test set; figures, then final.json (written last:
    its presence marks a finished run), and the class-wise table."""
    chosen = run_dir / _final_checkpoint(cfg, run_dir, ctx)
    model, _ = model_from_checkpoint(chosen, map_location=ctx.device)
    test = dataset.test
    if cfg["final_n_per_class"]:
        test = stratified_subset(test, cfg["final_n_per_class"], seed=cfg["seed"])
    show = ctx.is_main and not cfg["quiet"]
    start = time.perf_counter()
    results = trainer.evaluate(
        test, cfg["final_attacks"], seed=cfg["seed"], progress=show, model=model
    )
    if not ctx.is_main:
        return 0
    final = build_final_json(
        dataset=dataset.name,
        model=cfg["model"],
        norm=trainer.norm,
        eps=trainer.eps,
        step_size=trainer.step_size,
        classes=list(dataset.classes),
        results=results,
        split="test",
        n_per_class=cfg["final_n_per_class"],
        seed=cfg["seed"],
        checkpoint=str(chosen),
        seconds=time.perf_counter() - start,
        method=cfg["method"],
    )
    plot_classwise(final, run_dir / "classwise.png", title=f"{dataset.name} / {cfg['model']} / "
                   f"{cfg['method']}: class-wise test accuracy")  # fmt: skip
    _plot_weights(run_dir, dataset.classes)
    write_final_json(run_dir, final)
    noise = f", trained with sigma {cfg['sigma']:g}" if cfg.get("sigma") is not None else ""
    print(f"\n{cfg['method']} on {dataset.name} ({cfg['model']}{noise}; attacks: {trainer.norm} "
          f"eps {trainer.eps:.4g}), {chosen.name}, class-wise test accuracy (%):")  # fmt: skip
    print(format_table(final))
    print(f"\nrun directory: {run_dir}", flush=True)
    return 0


def _plot_weights(run_dir: Path, classes: Sequence[str]) -> None:
    """class_weights.png: mean class weights per epoch (epochs numbered from 1); and, when the
    weights change per batch, class_weights_steps.png: a heatmap of every batch's weights."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    per_epoch = [json.loads(ln)["class_weights"] for ln in lines if ln.strip()]
    if per_epoch:
        plot_class_weights(
            per_epoch, classes, run_dir / "class_weights.png", xlabel="epoch",
            title="class weights (mean per epoch)", first=1,
        )  # fmt: skip
    steps_csv = run_dir / "class_weights.csv"
    if steps_csv.exists():
        with steps_csv.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        if rows:
            plot_class_weight_steps(
                [[float(v) for v in r[2:]] for r in rows], classes,
                run_dir / "class_weights_steps.png", epochs=[int(r[1]) + 1 for r in rows],
                title="class weights per batch (FAAL supp. Fig. 6)",
            )  # fmt: skip


if __name__ == "__main__":
    with exit_on_file_error("python -m deep.train", exit_with=dd.exit_process):
        code = main()
    dd.exit_process(code)
