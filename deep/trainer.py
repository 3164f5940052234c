"""One training run's state and step: :class:`Trainer` (model, optimiser, schedule, method, AWP).

A training step (DESIGN.md):

    batch (x, y) -> attack (model in eval mode; per-sample eps and step from the method)
    -> x_adv -> forward(s) in train mode -> method.loss (deep.methods: per-sample losses, class
    weights; FAAL's class statistics reduced across processes) -> backward -> SGD step (through
    AWP when the preset says so) -> method.observe (training statistics) -> metrics on the device.

At the end of an epoch: class-wise clean and PGD-20 accuracy on the validation split
(deep.evaluate), then ``method.epoch_end`` (FRL multipliers, CFA calibration and averaged models,
WAT weights, DAFA weights). The trainer never asks which method it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from deep import distributed as dd
from deep.attacks import pgd_attack, trades_attack
from deep.awp import make_awp
from deep.checkpoint import rng_state, set_rng_state
from deep.config import class_ratio_vector
from deep.data import ImageDataset
from deep.evaluate import evaluate_model
from deep.methods import build_method
from deep.methods.base import EpochEnd, TrainBatch
from deep.models import build_model, load_model_state
from deep.objectives import per_sample_loss
from deep.presets import PRESETS, Preset
from deep.progress import DEFAULT_INTERVAL_S

__all__ = ["Trainer"]


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
        self.method = build_method(
            cfg, self.preset, list(dataset.classes), self.eps, self.step_size,
            reduce_fn=dd.make_reduce_fn(ctx), ratio_vector=class_ratio_vector,
        )  # fmt: skip
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
        """The training attack (model in eval mode inside the attack)."""
        attack = self.preset.attack
        if attack == "none":
            return x
        if attack == "gaussian":  # Cohen et al. 2019: N(0, sigma^2 I) in [0, 1] pixel space
            noise = torch.randn(x.shape, generator=self.attack_gen, device=x.device)
            return x + self.cfg["sigma"] * noise
        eps, step = self.method.class_eps(y), self.method.class_step(y)
        with self.autocast:
            if attack == "pgd":
                return pgd_attack(
                    self.attack_net, x, y, eps=eps, step_size=step,
                    steps=self.cfg["attack_steps"], loss="ce", generator=self.attack_gen,
                    norm=self.norm, random_start=self.cfg.get("attack_start", "random") == "random",
                )  # fmt: skip
            return trades_attack(
                self.attack_net, x, eps=eps, step_size=step,
                steps=self.cfg["attack_steps"], generator=self.attack_gen, norm=self.norm,
            )  # fmt: skip

    def _forward(self, net: nn.Module, x: torch.Tensor, x_adv: torch.Tensor):
        """(logits_adv, logits_clean) in float32; None where the objective needs none."""
        with self.autocast:
            adv = net(x_adv).float() if self.preset.needs_adv_logits else None
            clean = net(x).float() if self.preset.needs_clean_logits else None
        return adv, clean

    def _unweighted_loss(self, logits_adv, logits_clean, y) -> torch.Tensor:
        """The base method's mean loss (what AWP's proxy ascends)."""
        return per_sample_loss(
            self.preset.objective, logits_adv, logits_clean, y, beta=self.cfg["beta"]
        ).mean()

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
        batch = TrainBatch(
            x, y, logits_adv, logits_clean, self.epoch, self.preset.objective, self.cfg["beta"]
        )
        loss, weights = self.method.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if diff is not None:
            self.awp.restore(diff)
        self.method.observe(batch)
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
        if self.method.weights_change:  # per-step weights for class_weights.csv
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
        """SHA-256 prefixes of this epoch's per-step class weights, the model's parameters and
        buffers (BatchNorm running statistics) and the method's state (weights, calibrated
        budgets, averaged models, statistics)."""
        weights = torch.stack(self._weight_steps) if self._weight_steps else torch.zeros(0)
        params = torch.cat([p.detach().reshape(-1).float() for p in self.model.parameters()])
        buffers = [b.detach().reshape(-1).double() for b in self.model.buffers()]
        return {
            "class_weights": _tensor_hash(weights),
            "model": _tensor_hash(params),
            "buffers": _tensor_hash(torch.cat(buffers) if buffers else torch.zeros(0)),
            "method": _state_hash(self.method.state_dict()),
        }

    def update_before_training(self) -> dict:
        """Validate the initial model and let the method update once before the first epoch
        (FRL's reference order, ``--frl-update-at epoch-start``); returns the method's record."""
        validation = self.evaluate(self.dataset.val, ("clean", "pgd20"), seed=self.cfg["seed"])
        cfg, lr = self.cfg, self.optimizer.param_groups[0]["lr"]
        end = EpochEnd(
            epoch=-1, lr=lr, base_lr=cfg["lr"], model=self.model, validation=validation,
            val=self.dataset.val, ctx=self.ctx, seed=cfg["seed"],
            eval_batch_size=cfg["eval_batch_size"], eps=self.eps, step_size=self.step_size,
            attack_steps=cfg["attack_steps"],
        )  # fmt: skip
        return self.method.epoch_end(end)

    def finish_epoch(self, *, lr: float, class_eps: list[float]) -> tuple[dict, list]:
        """End the epoch: read its metrics, validate, let the method update (``epoch_end``), step
        the schedule. Returns the metrics.jsonl record (without the epoch time) and the per-step
        class weights of the epoch."""
        cfg, epoch = self.cfg, self.epoch
        train, weight_steps = self.read_epoch_metrics()
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train": {k: v for k, v in train.items() if k != "class_weights"},
            "class_weights": train["class_weights"],
            "class_eps": class_eps,
        }
        # BatchNorm statistics differ across ranks after the last step (each saw its own batch):
        # average them so that validation, checkpoints and averaged models agree on every rank.
        dd.sync_buffers_(self.model, self.ctx)
        validation = None
        if len(self.dataset.val):
            validation = self.evaluate(self.dataset.val, ("clean", "pgd20"), seed=cfg["seed"])
            keys = ("per_class", "average", "worst")
            record["val"] = {name: {k: v[k] for k in keys} for name, v in validation.items()}
        end = EpochEnd(
            epoch=epoch, lr=lr, base_lr=cfg["lr"], model=self.model, validation=validation,
            val=self.dataset.val, ctx=self.ctx, seed=cfg["seed"],
            eval_batch_size=cfg["eval_batch_size"], eps=self.eps, step_size=self.step_size,
            attack_steps=cfg["attack_steps"], norm=self.norm,
        )  # fmt: skip
        record.update(self.method.epoch_end(end))
        if cfg["debug"]:  # one entry per rank: equal when the ranks agree bit for bit
            record["debug_hashes"] = dd.all_gather_object(self.debug_hashes(), self.ctx)
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
                progress_interval=self.cfg.get("progress_interval", DEFAULT_INTERVAL_S),
            )  # fmt: skip

        was_training = model.training
        try:
            return dd.evaluate_across_ranks(run, split, self.num_classes, self.ctx)
        finally:
            model.train(was_training)

    def class_eps_values(self) -> list[float]:
        """Per-class training eps in use (FRL Remargin, fixed class scales, CFA, DAFA; else the
        base eps)."""
        return [float(v) for v in self.method.eps_values()]

    @property
    def weighting(self):
        """The method (kept under its former name: FAAL / FRL weightings)."""
        return self.method

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (this rank's RNG states under "rng")."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.method.state_dict(),
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

    def rank_state(self) -> dict:
        """What differs between ranks inside an epoch, beyond the RNG streams: this rank's metric
        sums and its buffers (BatchNorm statistics, averaged over ranks only at the epoch end)."""
        return {
            "epoch_sums": self._sums.cpu(),
            "buffers": [b.detach().cpu() for b in self.model.buffers()],
        }

    def load_rank_state(self, state: dict) -> None:
        """Restore :meth:`rank_state` (after :meth:`load_state_dict`, which gives rank 0's)."""
        buffers = list(self.model.buffers())
        if len(state["buffers"]) != len(buffers):
            raise ValueError(f"{len(state['buffers'])} saved buffers, the model has {len(buffers)}")
        with torch.no_grad():
            for b, saved in zip(buffers, state["buffers"]):
                b.copy_(saved)
        self._sums = state["epoch_sums"].to(self.device)

    def load_state_dict(self, state: dict, rng: dict | None) -> None:
        load_model_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state["weighting"])
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


def _state_hash(state) -> str:
    """SHA-256 prefix of a state dict (nested dicts / lists of tensors, arrays and numbers)."""
    digest = hashlib.sha256()

    def feed(obj) -> None:
        if isinstance(obj, torch.Tensor):
            digest.update(obj.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                digest.update(str(key).encode())
                feed(obj[key])
        elif isinstance(obj, list | tuple):
            for item in obj:
                feed(item)
        else:
            digest.update(repr(obj).encode())

    feed(state)
    return digest.hexdigest()[:16]
