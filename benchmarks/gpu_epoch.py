"""Time of one PGD-10 adversarial-training epoch of PreAct-ResNet-18 on CIFAR-shaped data (GPU).

50,000 random 3x32x32 images (``train_step._synthetic_cifar``: no files needed), batch 128, so
391 training steps of ``deep.train``'s own step (``Trainer.train_step``: PGD-10 attack, forward,
backward, SGD), with the data already on the device: what is timed is the training compute, not
the data loader. Printed for float32 and for bf16 autocast, channels_last on (deep.train's CUDA
default).

    python benchmarks/gpu_epoch.py                 # cuda
    python benchmarks/gpu_epoch.py --images 2048   # a shorter epoch (scaled to 50,000)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from train_step import _sync, _synthetic_cifar, _trainer  # noqa: E402

from deep.runtime import CLIParser, DefaultsHelpFormatter  # noqa: E402


def epoch_seconds(method: str, images: int, batch: int, device, extra=()) -> float:
    """Seconds of one pass over ``images`` images, ``batch`` at a time (after 3 warm-up steps)."""
    dataset = _synthetic_cifar(images)
    trainer = _trainer(dataset, "preact-resnet18", method, batch, device, list(extra))
    x_all = dataset.train.x.to(device)
    y_all = dataset.train.y.to(device)
    for _ in range(3):
        trainer.train_step(x_all[:batch].float().div(255), y_all[:batch])
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, images, batch):
        x = x_all[start : start + batch].float().div_(255)
        trainer.train_step(x, y_all[start : start + batch])
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = CLIParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda or cuda:N")
    p.add_argument("--images", type=int, default=50_000, help="images per timed epoch")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--method", default="pgd-at", help="deep.train method (PGD-10 attack)")
    args = p.parse_args(argv)
    if args.images < args.batch_size or args.batch_size < 1:
        p.error("--images must be >= --batch-size >= 1")
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        p.error(f"--device {args.device}: needs a CUDA device (torch sees none)")
    name = torch.cuda.get_device_name(device)
    scale = 50_000 / args.images
    for label, extra in (("float32", ()), ("bf16 autocast", ("--bf16",))):
        seconds = epoch_seconds(args.method, args.images, args.batch_size, device, extra)
        print(f"PreAct-ResNet-18 {args.method} PGD-10 epoch on {name}, {label}, channels_last, "
              f"batch {args.batch_size}: {seconds * scale:.1f} s per 50,000 images "
              f"({args.images} timed)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
