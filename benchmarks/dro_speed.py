"""Speed of the exact KL-DRO solver (theory.dro, FAAL Eq. 1-2) against the cvxpy reference.

Per-call time for one numpy problem (the cvxpy problem is rebuilt per call, as the FAAL reference
code does at every batch) and throughput of one batched torch call.

    python benchmarks/dro_speed.py                     # table
    python benchmarks/dro_speed.py --json out.json     # also write the numbers as JSON
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep.runtime import CLIParser, DefaultsHelpFormatter  # noqa: E402
from theory.dro import solve_kl_dro, solve_kl_dro_cvxpy  # noqa: E402


def per_call_seconds(fn, repeats: int) -> float:
    """Median of 5 timing rounds of `repeats` calls, in seconds per call."""
    fn()  # warm-up
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        rounds.append((time.perf_counter() - start) / repeats)
    return float(np.median(rounds))


def parse_args(argv=None):
    parser = CLIParser(
        description=__doc__.splitlines()[0].replace("``", ""),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100], help="C values")
    parser.add_argument("--tau", type=float, default=0.05, help="KL budget (default 0.05)")
    parser.add_argument("--batch", type=int, default=4096, help="torch batch size")
    parser.add_argument("--batch-classes", type=int, default=10, help="C for the torch batch")
    parser.add_argument("--repeats", type=int, default=200, help="calls per timing round")
    parser.add_argument("--cvxpy-repeats", type=int, default=20, help="cvxpy calls per round")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    if any(c < 2 for c in args.classes) or args.batch_classes < 2:
        parser.error("--classes / --batch-classes must be >= 2")
    if args.batch < 1 or args.repeats < 1 or args.cvxpy_repeats < 1:
        parser.error("--batch, --repeats and --cvxpy-repeats must be >= 1")
    if not args.tau > 0:
        parser.error("--tau must be > 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    results = {"tau": args.tau, "single": [], "batched": {}}
    print(f"KL-DRO solver speed (tau={args.tau}, torch threads={torch.get_num_threads()})")
    print(f"{'C':>6} {'exact [us/call]':>16} {'cvxpy [ms/call]':>16} {'speed-up':>9} {'|dw|':>9}")
    for num_classes in args.classes:
        losses = rng.uniform(-1.0, 1.0, size=num_classes)
        exact = per_call_seconds(lambda losses=losses: solve_kl_dro(losses, args.tau), args.repeats)
        ref = per_call_seconds(
            lambda losses=losses: solve_kl_dro_cvxpy(losses, args.tau), args.cvxpy_repeats
        )
        diff = float(
            np.max(np.abs(solve_kl_dro(losses, args.tau) - solve_kl_dro_cvxpy(losses, args.tau)))
        )
        row = {
            "classes": num_classes,
            "exact_us": exact * 1e6,
            "cvxpy_ms": ref * 1e3,
            "speedup": ref / exact,
            "max_abs_weight_diff": diff,
        }
        results["single"].append(row)
        print(
            f"{num_classes:>6} {row['exact_us']:>16.1f} {row['cvxpy_ms']:>16.2f} "
            f"{row['speedup']:>8.0f}x {diff:>9.1e}"
        )

    device = torch.device(args.device)
    batch = torch.as_tensor(
        rng.uniform(-1.0, 1.0, size=(args.batch, args.batch_classes)), device=device
    )

    def batched_call():
        out = solve_kl_dro(batch, args.tau)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    seconds = per_call_seconds(batched_call, max(1, args.repeats // 40))
    results["batched"] = {
        "batch": args.batch,
        "classes": args.batch_classes,
        "device": str(device),
        "ms_per_call": seconds * 1e3,
        "problems_per_s": args.batch / seconds,
    }
    print(
        f"torch batch {args.batch}x{args.batch_classes} on {device}: {seconds * 1e3:.1f} ms/call, "
        f"{args.batch / seconds:.3g} problems/s"
    )
    results["machine"] = {"platform": platform.platform(), "torch": torch.__version__}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
