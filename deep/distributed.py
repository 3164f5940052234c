"""torch.distributed helpers for :mod:`deep.train` (one process per device, launched by torchrun
or by SLURM's ``srun``).

A run is distributed when the environment holds ``WORLD_SIZE > 1`` (torchrun sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). Started by ``srun`` with several
tasks and not by torchrun, the same variables are taken from SLURM's (:func:`slurm_environment`),
so both launchers run the same code path. The backend is NCCL on CUDA and gloo on the CPU. Every
helper is a no-op (or the identity) in a single process, so the training loop calls them
unconditionally.

What is reduced across ranks, so that every rank takes the same decisions:

* FAAL's class statistics ``[sums; counts]`` (:func:`make_reduce_fn`, passed to
  ``deep.weighting.class_mean_statistic``) before the DRO weights are solved;
* the AWP weight perturbation (averaged, :func:`all_reduce_mean_`), so the perturbation and its
  exact removal are identical on every rank;
* class-wise evaluation counts (:func:`evaluate_across_ranks`), so FRL's validation errors, the best
  checkpoint and ``final.json`` are the same on every rank;
* the stop request of Ctrl-C (:func:`any_rank`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "slurm_environment",
    "first_host",
    "init_distributed",
    "shutdown",
    "exit_process",
    "make_reduce_fn",
    "all_reduce_sum_",
    "all_reduce_mean_",
    "any_rank",
    "broadcast_object",
    "sync_buffers_",
    "all_gather_object",
    "barrier",
    "shard_per_class",
    "evaluate_across_ranks",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``, the backend in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part (a process group is initialised)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int, env: dict[str, str] | None = None) -> int:
    value = (os.environ if env is None else env).get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: ``"gpu[07-09,12],cpu1"`` -> ``"gpu07"``.

    Each bracketed range contributes its first value, zero padding kept (``"r[2-3]n[01-04]"`` ->
    ``"r2n01"``), as ``scontrol show hostnames`` lists them.
    """
    entry, depth = nodelist.strip(), 0
    for i, char in enumerate(entry):  # the first entry: up to a comma outside brackets
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            entry = entry[:i]
            break
    if not entry or not re.fullmatch(r"[^\[\],]*(\[[^\[\]]+\][^\[\],]*)*", entry):
        raise ValueError(f"{nodelist!r} is not a SLURM host list")
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], entry)


#: MASTER_PORT under srun: this base plus a number derived from the job and step ids.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 20000


def slurm_environment(env: dict[str, str]) -> dict[str, str]:
    """torch.distributed's variables for a process started by ``srun`` with several tasks.

    Empty (nothing to add) when ``env`` already names the process group (torchrun sets ``RANK``
    and ``WORLD_SIZE``, also inside an ``srun`` step), when the process is not a task of an
    ``srun`` step (``SLURM_STEP_ID`` unset: the batch script itself, where ``SLURM_NTASKS`` counts
    tasks that do not exist yet), or when the step has one task. Otherwise: ``RANK`` =
    ``SLURM_PROCID``, ``WORLD_SIZE`` = the step's tasks (``SLURM_STEP_NUM_TASKS``, else
    ``SLURM_NTASKS``), ``LOCAL_RANK`` = ``SLURM_LOCALID``, ``MASTER_ADDR`` = the first host of the
    step (``SLURM_STEP_NODELIST``, else ``SLURM_JOB_NODELIST``; rank 0 runs there) and
    ``MASTER_PORT`` derived from ``SLURM_JOB_ID`` and ``SLURM_STEP_ID`` (two steps of one job do not
    collide). ``MASTER_ADDR`` / ``MASTER_PORT`` already in ``env`` are kept.
    """
    if ("RANK" in env and "WORLD_SIZE" in env) or "TORCHELASTIC_RUN_ID" in env:
        return {}
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return {}
    tasks = _env_int("SLURM_STEP_NUM_TASKS", 0, env) or _env_int("SLURM_NTASKS", 1, env)
    if tasks <= 1:
        return {}
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise ValueError("srun with several tasks but SLURM_JOB_NODELIST is not set")
    job, step = _env_int("SLURM_JOB_ID", 0, env), _env_int("SLURM_STEP_ID", 0, env)
    port = SLURM_PORT_BASE + (job * 7 + step) % SLURM_PORT_SPAN
    return {
        "RANK": str(_env_int("SLURM_PROCID", 0, env)),
        "WORLD_SIZE": str(tasks),
        "LOCAL_RANK": str(_env_int("SLURM_LOCALID", 0, env)),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodelist),
        "MASTER_PORT": env.get("MASTER_PORT") or str(port),
    }


def init_distributed(device: str = "auto") -> DistContext:
    """Initialise torch.distributed from torchrun's environment, or from SLURM's under ``srun``
    (:func:`slurm_environment`, copied into ``os.environ``), or a single-process context.

    ``device``: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Distributed on
    CUDA, each process takes ``cuda:LOCAL_RANK`` (``cuda:0`` when it sees a single GPU, as under
    ``srun --gpus-per-task=1``); on the CPU the gloo backend is used.
    """
    os.environ.update(slurm_environment(dict(os.environ)))
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    if world_size <= 1:
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return DistContext(device=dev)
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count > 1:
            raise ValueError(f"LOCAL_RANK {local_rank} but only {count} CUDA devices are visible")
        dev = torch.device("cuda", local_rank if local_rank < count else 0)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, dev, backend)


def shutdown(ctx: DistContext, *, wait: bool = True) -> None:
    """Destroy the process group (if this context initialised one).

    ``wait``: meet the other ranks first. A gloo group torn down while a peer is still working
    (rank 0 writing the final files) can abort the process at exit ("terminate called without an
    active exception"). After an error the other ranks may never arrive, so skip the meeting.
    """
    if ctx.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int | None) -> None:
    """End a command-line process with ``code``. Under torchrun (``WORLD_SIZE > 1``) it ends with
    ``os._exit`` once stdout and stderr are flushed: every file is written and the process group
    destroyed by then, and the C++ teardown at interpreter exit sometimes aborted a gloo rank
    ("terminate called without an active exception", about 1 run in 12 on a loaded 2-core
    machine), turning a finished run into a failed one."""
    code = 0 if code is None else int(code)
    if _env_int("WORLD_SIZE", 1) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def all_reduce_sum_(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (asynchronous on the device stream; no host sync)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Average each tensor of ``tensors`` over ranks, in place (one flat all-reduce)."""
    if not ctx.enabled or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def sync_buffers_(module: torch.nn.Module, ctx: DistContext) -> None:
    """Make every buffer of ``module`` identical on all ranks, in place.

    Under DDP each rank's forward passes update its own BatchNorm running statistics from its
    own shard, so after a step the ranks' buffers differ. Floating-point buffers (running mean
    and variance) are averaged over ranks, the others (``num_batches_tracked``) taken from rank 0.
    Called wherever the model is evaluated or saved (the end of every epoch).
    """
    if not ctx.enabled:
        return
    buffers = list(module.buffers())
    all_reduce_mean_([b for b in buffers if b.is_floating_point()], ctx)
    for b in buffers:
        if not b.is_floating_point():
            dist.broadcast(b, src=0)


def make_reduce_fn(ctx: DistContext) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``reduce_fn`` of ``deep.weighting.class_mean_statistic``: sum ``[sums; counts]`` over ranks.

    None in a single process (nothing to reduce).
    """
    if not ctx.enabled:
        return None

    def reduce_fn(stacked: torch.Tensor) -> torch.Tensor:
        out = stacked.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    return reduce_fn


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is True on some rank (one small all-reduce; a host sync)."""
    if not ctx.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj, ctx: DistContext) -> list:
    """The list ``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.enabled:
        dist.barrier()


def shard_per_class(split, num_classes: int, ctx: DistContext):
    """This rank's share of ``split``: every ``world_size``-th sample *of each class*.

    Returns None when some class has fewer samples than ranks (then one rank must evaluate alone),
    and ``split`` itself in a single process. Shards are disjoint and cover the split.
    """
    if not ctx.enabled:
        return split
    y = split.y
    counts = torch.bincount(y, minlength=num_classes)
    if bool((counts < ctx.world_size).any()):
        return None
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        picks.append(idx[ctx.rank :: ctx.world_size])
    order = torch.sort(torch.cat(picks)).values
    return type(split)(x=split.x[order], y=y[order])


def _merge_classwise(entries: Sequence[dict], num_classes: int) -> dict:
    """One class-wise result from per-rank ones, through ``deep.metrics.classwise_accuracy``.

    Each entry holds ``per_class`` accuracies and ``counts``; the exact integer hits per class
    (``round(acc * count)``) are summed over ranks and turned into accuracies by the one function
    that defines them.
    """
    from deep.metrics import classwise_accuracy

    hits = [0] * num_classes
    counts = [0] * num_classes
    for entry in entries:
        for c in range(num_classes):
            n = int(entry["counts"][c])
            acc = entry["per_class"][c]
            counts[c] += n
            hits[c] += 0 if (n == 0 or acc is None) else int(round(float(acc) * n))
    y = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    correct = (
        torch.cat([torch.arange(n) < h for h, n in zip(hits, counts)])
        if counts
        else torch.zeros(0, dtype=torch.bool)
    )
    return classwise_accuracy(correct, y, num_classes)


def evaluate_across_ranks(evaluate_fn: Callable, split, num_classes: int, ctx: DistContext) -> dict:
    """Run ``evaluate_fn(split) -> {attack: class-wise dict}`` sharded over ranks, same on all.

    With one process this is ``evaluate_fn(split)``. Otherwise each rank evaluates its per-class
    shard and the class-wise counts are summed; if some class is too small to shard, rank 0
    evaluates the whole split and broadcasts its result.
    """
    if not ctx.enabled:
        return evaluate_fn(split)
    shard = shard_per_class(split, num_classes, ctx)
    if shard is None:
        result = evaluate_fn(split) if ctx.is_main else None
        return broadcast_object(result, ctx)
    local = evaluate_fn(shard)
    gathered = all_gather_object(local, ctx)
    return {key: _merge_classwise([g[key] for g in gathered], num_classes) for key in local}
