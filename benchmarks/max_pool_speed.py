"""CPU cost of ``deep.models.MaxPool2x2`` against ``nn.MaxPool2d(2)``, and what it does to a
``two-conv-cnn`` PGD-10 adversarial-training step (the step of the Fashion-MNIST benchmark).

    python benchmarks/max_pool_speed.py                  # one thread, batch 128
    python benchmarks/max_pool_speed.py --threads 2 --rounds 20

Both poolings are timed in interleaved rounds on the two pooling inputs of ``two-conv-cnn`` on
28 x 28 images (forward, and forward + backward); the training step (10 PGD steps, then
cross-entropy and SGD) is timed with each pooling in the same model. Prints medians in
milliseconds and the ratios, and checks that the two give the same output and gradient.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep.attacks import pgd_attack  # noqa: E402
from deep.models import MaxPool2x2, build_model  # noqa: E402
from deep.runtime import CLIParser, DefaultsHelpFormatter  # noqa: E402


def _median_ms(fn_ref, fn_new, rounds: int) -> tuple[float, float]:
    """Medians (ms) of the two functions, timed in alternating rounds so that a change of machine
    load falls on both."""
    fn_ref(), fn_new()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in ((fn_ref, times[0]), (fn_new, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def _pool_step(pool: nn.Module, x: torch.Tensor, grad: torch.Tensor, backward: bool):
    def step():
        inp = x.detach().requires_grad_(backward)
        out = pool(inp)
        if backward:
            out.backward(grad)

    return step


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        x_adv = pgd_attack(model, x, y, eps=0.1, step_size=0.025, steps=10)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_adv), y).backward()
        opt.step()

    return step


def main(argv=None) -> int:
    parser = CLIParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    for name in ("batch_size", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    b = args.batch_size
    print(f"CPU, {args.threads} thread(s), batch {b}, medians of {args.rounds} rounds")
    print(f"{'pooling input':<22} {'':<12} {'MaxPool2d':>10} {'MaxPool2x2':>11} {'ratio':>7}")
    for shape in ((b, 32, 28, 28), (b, 64, 14, 14)):
        x = torch.relu(torch.randn(shape, generator=gen))
        grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=gen)
        ref_in, new_in = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref_out, new_out = nn.MaxPool2d(2)(ref_in), MaxPool2x2()(new_in)
        ref_out.backward(grad)
        new_out.backward(grad)
        same = torch.equal(ref_out, new_out) and torch.equal(ref_in.grad, new_in.grad)
        for label, backward in (("forward", False), ("fwd + bwd", True)):
            old, new = _median_ms(
                _pool_step(nn.MaxPool2d(2), x, grad, backward),
                _pool_step(MaxPool2x2(), x, grad, backward),
                args.rounds,
            )
            text = "x".join(map(str, shape))
            print(f"{text:<22} {label:<12} {old:>8.2f}ms {new:>9.2f}ms {old / new:>6.2f}x")
        print(f"{'':<22} same output and gradient: {same}")

    x = torch.rand(b, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (b,), generator=gen)
    torch.manual_seed(0)
    fast = build_model("two-conv-cnn", 10, in_channels=1, image_size=28)
    ref = build_model("two-conv-cnn", 10, in_channels=1, image_size=28)
    ref.load_state_dict(fast.state_dict())
    ref.features[2], ref.features[5] = nn.MaxPool2d(2), nn.MaxPool2d(2)
    old, new = _median_ms(_train_step(ref, x, y), _train_step(fast, x, y), args.rounds)
    print(
        f"two-conv-cnn PGD-10 training step: {old:.1f} ms with nn.MaxPool2d, {new:.1f} ms with "
        f"MaxPool2x2 ({old / new:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
