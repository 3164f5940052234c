"""Speed of randomized-smoothing certification: noisy samples per second of ``deep.certify``.

For each model, CERTIFY (``deep.certify.certify``) runs on a few random images with n0 + n noisy
copies each, ``--batch-size`` noisy images per forward pass; the same number of plain forward
passes of a fixed batch (no noise, no counting) gives the model's own throughput. Their ratio
says how much the noise generation, the gathers and the counting cost on top of the model
(1.0 = the model is the only cost). The best of ``--repeats`` rounds is reported.

    python benchmarks/certify_speed.py                           # small CNN on the CPU
    python benchmarks/certify_speed.py --device cuda             # + PreAct-ResNet18 (CIFAR)

Prints one line per model: samples/s of certify, of the bare model, and their ratio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep.certify import certify  # noqa: E402
from deep.models import build_model  # noqa: E402
from deep.runtime import CLIParser, DefaultsHelpFormatter  # noqa: E402

#: (model, channels, image size) per benchmark case.
CASES = {
    "small-cnn-8x8": ("small-cnn", 1, 8),
    "small-cnn-28x28": ("small-cnn", 1, 28),
    "preact-resnet18-32x32": ("preact-resnet18", 3, 32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def run_case(name: str, args, device: torch.device) -> dict:
    model_name, channels, size = CASES[name]
    torch.manual_seed(0)
    model = build_model(model_name, 10, in_channels=channels, image_size=size).to(device).eval()
    x = torch.rand(args.images, channels, size, size, device=device)
    samples = args.images * (args.n0 + args.n)
    gen = torch.Generator(device=device)

    def certify_once():
        gen.manual_seed(0)
        certify(model, x, sigma=0.25, n0=args.n0, n=args.n, batch_size=args.batch_size,
                generator=gen)  # fmt: skip

    batch = torch.rand(args.batch_size, channels, size, size, device=device)
    forwards = -(-samples // args.batch_size)

    @torch.no_grad()
    def model_only():
        for _ in range(forwards):
            model(batch).argmax(1)

    certify_once()  # warm-up (allocator, kernels)
    t_cert = _best_time(certify_once, device, args.repeats)
    t_model = _best_time(model_only, device, args.repeats)
    return {
        "case": name,
        "samples": samples,
        "certify_samples_per_s": samples / t_cert,
        "model_samples_per_s": forwards * args.batch_size / t_model,
        "ratio": (forwards * args.batch_size / t_model) / (samples / t_cert),
    }


def main(argv=None) -> int:
    parser = CLIParser(
        description=__doc__.splitlines()[0].replace("``", ""),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--cases", default=None, help=f"comma-separated of {','.join(CASES)}")
    parser.add_argument("--images", type=int, default=4, help="images certified per round")
    parser.add_argument("--n0", type=int, default=100, help="selection samples per image")
    parser.add_argument("--n", type=int, default=2000, help="estimation samples per image")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cases = args.cases.split(",") if args.cases else (
        list(CASES) if device.type == "cuda" else ["small-cnn-8x8", "small-cnn-28x28"]
    )  # fmt: skip
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.images} images x (n0 {args.n0} + n {args.n})")  # fmt: skip
    for name in cases:
        r = run_case(name, args, device)
        print(f"{r['case']:24s} certify {r['certify_samples_per_s']:12,.0f} samples/s   "
              f"model alone {r['model_samples_per_s']:12,.0f} samples/s   "
              f"model/certify {r['ratio']:.3f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
