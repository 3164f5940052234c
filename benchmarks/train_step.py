"""Cost of FAAL's intermediate maximisation: time per training step of ``faal-at`` / ``pgd-at``.

Both steps run the same PGD-10 attack, forward and backward through the same model on the same
batch; ``faal-at`` adds the softmax margins, their class means (scatter_add) and the exact
KL-DRO class weights (``theory.dro.solve_kl_dro`` on the device, no host synchronisation). The
two steps are timed in interleaved rounds and compared by their medians (target: ratio <= 1.02).

    python benchmarks/train_step.py                       # digits small CNN on the CPU
    python benchmarks/train_step.py --device cuda         # + PreAct-ResNet18, CIFAR-sized batch

Prints the per-step medians, the ratio, and the time of the weight computation alone.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep import distributed as dd  # noqa: E402
from deep import train as T  # noqa: E402
from deep.data import Augment, ImageDataset, ImageSplit, load_dataset  # noqa: E402
from deep.objectives import softmax_margin  # noqa: E402
from deep.runtime import CLIParser, DefaultsHelpFormatter  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic_cifar(n: int) -> ImageDataset:
    """Random CIFAR-shaped data (timing only; no files needed)."""
    g = torch.Generator().manual_seed(0)
    split = ImageSplit(
        x=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        y=torch.arange(n) % 10,
    )
    return ImageDataset(
        name="cifar10", classes=[str(c) for c in range(10)], train=split, val=split, test=split,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616), augment=Augment(0, False),
        eps=8 / 255, step_size=2 / 255,
    )  # fmt: skip


def _trainer(dataset: ImageDataset, model: str, method: str, batch: int, device, extra):
    parser = T.build_parser()
    argv = ["--method", method, "--batch-size", str(batch), "--seed", "0", *extra]
    cfg = T.resolve_config(parser.parse_args(argv), parser)
    cfg.update(
        eps=dataset.eps, step_size=dataset.step_size, model=model,
        channels_last=device.type == "cuda",
    )  # fmt: skip
    return T.Trainer(cfg, dataset, dd.DistContext(device=device))


def time_ratio(dataset, model, device, *, batch, rounds, steps, extra=()) -> dict:
    x = dataset.train.x[:batch].to(device).float().div_(255)
    y = dataset.train.y[:batch].to(device)
    # "pgd-at (A/A)" is a second pgd-at trainer: its ratio to pgd-at is the noise floor.
    methods = {"pgd-at": "pgd-at", "faal-at": "faal-at", "pgd-at (A/A)": "pgd-at"}
    trainers = {k: _trainer(dataset, model, m, batch, device, extra) for k, m in methods.items()}
    times = {m: [] for m in trainers}
    for trainer in trainers.values():  # warm-up (allocator, first-call overheads)
        for _ in range(2):
            trainer.train_step(x, y)
    # Every round starts all trainers from the same weights, so they time the same model states.
    start = {k: copy.deepcopy(t.model.state_dict()) for k, t in trainers.items() if k == "pgd-at"}
    _sync(device)
    for r in range(rounds):
        names = list(trainers)  # rotate, so each method takes every position equally often
        order = names[r % len(names) :] + names[: r % len(names)]
        for method in order:
            trainer = trainers[method]
            trainer.model.load_state_dict(start["pgd-at"])
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(x, y)
            _sync(device)
            times[method].append((time.perf_counter() - t0) / steps)
    med = {m: statistics.median(v) for m, v in times.items()}

    # The weight computation alone (margins -> class means -> DRO), on adversarial logits.
    faal = trainers["faal-at"]
    with torch.no_grad():
        logits = faal.model(x)
    n = 200
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        faal.weighting.batch_weights(softmax_margin(logits, y), y, 0)
    _sync(device)
    weights_s = (time.perf_counter() - t0) / n
    return {
        "pgd_at_s": med["pgd-at"],
        "faal_at_s": med["faal-at"],
        "ratio": med["faal-at"] / med["pgd-at"],
        "aa_ratio": med["pgd-at (A/A)"] / med["pgd-at"],
        "weights_only_s": weights_s,
        "rounds": rounds,
        "steps_per_round": steps,
    }


def main(argv=None) -> int:
    p = CLIParser(
        description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=5, help="steps per round")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cases = [("digits small-cnn", load_dataset("digits"), "small-cnn", torch.device("cpu"))]
    if device.type == "cuda":
        cases.append(("CIFAR-shaped preact-resnet18", _synthetic_cifar(4096), "preact-resnet18",
                      device))  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), batch {args.batch_size}, "
          f"PGD-10, {args.rounds} interleaved rounds x {args.steps} steps, medians")  # fmt: skip
    for name, dataset, model, dev in cases:
        extra = ["--bf16"] if (args.bf16 and dev.type == "cuda") else []
        r = time_ratio(dataset, model, dev, batch=args.batch_size, rounds=args.rounds,
                       steps=args.steps, extra=extra)  # fmt: skip
        print(
            f"{name} on {dev}: pgd-at {1e3 * r['pgd_at_s']:.2f} ms/step, faal-at "
            f"{1e3 * r['faal_at_s']:.2f} ms/step, ratio faal-at/pgd-at = {r['ratio']:.4f} "
            f"(target <= 1.02; A/A noise floor {r['aa_ratio']:.4f}); FAAL weights alone "
            f"{1e3 * r['weights_only_s']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
