"""Class-wise robustness on Fashion-MNIST: PGD-AT, TRADES, FAAL-AT, FRL (Reweight+Remargin), and
FAAL fine-tuning of the PGD-AT models, over several seeds; a table of average and worst-class
clean, PGD-20 and AutoAttack accuracy (mean +- sd over seeds).

Every number comes from the package's own CLIs: ``python -m deep.train`` trains and writes
``final.json`` (clean and PGD-20 on a stratified test subset, the checkpoint chosen on the
validation split's worst-class robust accuracy), ``python -m deep.evaluate --attacks aa`` runs
AutoAttack ("standard", l_inf) on a smaller stratified test subset. The fine-tuning follows FAAL on
CIFAR-10 (SPEC §3): 2 epochs from the PGD-AT model, lr 0.01 then 0.001, tau 0.5.

Two phases: all training first (the table is then written with AutoAttack "pending"), then
AutoAttack, after which the table is rewritten. CPU budget: the defaults (200 training images per
class, 8 epochs, AutoAttack on 10 images per class, 2 parallel single-thread jobs) aim at about an
hour on 2 shared cores. Runs that already finished are reused, so an interrupted table continues
where it stopped.

    python benchmarks/fashion_mnist_table.py                 # writes docs/results/fashion_mnist_*
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deep.runtime import DefaultsHelpFormatter

REPO = Path(__file__).resolve().parents[1]
FINETUNE = "pgd-at+faal-ft"  # row name of the fine-tuned models
METRICS = [
    ("clean", "clean"),
    ("pgd20", "PGD-20"),
    ("subset_pgd20", "PGD-20 (AA subset)"),
    ("autoattack", "AutoAttack (AA subset)"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    p.add_argument("--out", default=str(REPO / "docs" / "results"), help="table folder")
    p.add_argument("--runs", default=str(REPO / "runs" / "fashion-mnist-table"), help="run dirs")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--methods", default="pgd-at,trades,faal-at,frl-rwrm", help="trained methods")
    p.add_argument("--epochs", type=int, default=8, help="training epochs")
    p.add_argument("--batch-size", type=int, default=64, help="batch size")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (cosine schedule)")
    p.add_argument("--train-per-class", type=int, default=200, help="training images per class")
    p.add_argument("--val-per-class", type=int, default=30, help="validation images per class")
    p.add_argument("--test-per-class", type=int, default=100, help="clean / PGD-20 test subset")
    p.add_argument(
        "--aa-per-class", type=int, default=10, help="AutoAttack test subset (0: no AutoAttack)"
    )
    p.add_argument("--finetune-epochs", type=int, default=2, help="FAAL fine-tuning epochs")
    p.add_argument("--finetune-tau", type=float, default=0.5, help="FAAL tau when fine-tuning")
    p.add_argument("--no-finetune", action="store_true", help="skip the FAAL fine-tuning rows")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each)")
    return p


def _run(cmd: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd)}")


def _train(run_dir: Path, train_argv: list[str], lock: threading.Lock) -> dict:
    """Train (unless final.json exists; an interrupted run is resumed); return final.json."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    t0 = time.perf_counter()
    if not (run_dir / "final.json").exists():
        resume = ["--resume", str(run_dir)] if (run_dir / "last.pt").exists() else None
        cmd = [sys.executable, "-m", "deep.train", "--quiet", "--threads", "1"]
        _run(cmd + (resume or ["--out", str(run_dir), *train_argv]), log)
        with lock:
            print(f"trained {run_dir.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return json.loads((run_dir / "final.json").read_text())


def _autoattack(args, run_dir: Path, lock: threading.Lock) -> dict:
    """AutoAttack, and PGD-20 on the same images, for the checkpoint final.json evaluated.

    Both through deep.evaluate's CLI on its stratified subset (seed 0) of ``--aa-per-class`` images
    per class, so AutoAttack can be compared with PGD-20 on identical images.
    """
    final = json.loads((run_dir / "final.json").read_text())
    out = {}
    for attacks, name in (("aa", "autoattack"), ("clean,pgd20", "pgd20")):
        folder = run_dir / f"{name}-subset-{args.aa_per_class}"
        t0 = time.perf_counter()
        if not (folder / "final.json").exists():
            _run(
                [sys.executable, "-m", "deep.evaluate", "--checkpoint",
                 str(run_dir / Path(final["checkpoint"]).name), "--dataset", "fashion-mnist",
                 "--attacks",
                 attacks, "--n-per-class", str(args.aa_per_class), "--seed", "0", "--out",
                 str(folder), "--quiet"],
                run_dir.parent / f"{run_dir.name}.log",
            )  # fmt: skip
            with lock:
                print(f"{name} (subset) {run_dir.name} in {time.perf_counter() - t0:.0f}s",
                      flush=True)  # fmt: skip
        out[name] = json.loads((folder / "final.json").read_text())["results"][name]
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    runs = Path(args.runs)
    common = [
        "--dataset", "fashion-mnist", "--model", "small-cnn", "--eps", "0.1",
        "--batch-size", str(args.batch_size), "--train-per-class", str(args.train_per_class),
        "--val-per-class", str(args.val_per_class), "--final-attacks", "clean,pgd20",
        "--final-n-per-class", str(args.test_per_class),
    ]  # fmt: skip
    lock = threading.Lock()
    t0 = time.perf_counter()
    jobs: dict[tuple[str, int], Path] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # Phase 1: training (PGD-AT first, so that the fine-tuning can start early).
        futures = {}
        for method in sorted(methods, key=lambda m: m != "pgd-at"):
            for seed in seeds:
                argv_ = [*common, "--method", method, "--seed", str(seed),
                         "--epochs", str(args.epochs), "--lr", str(args.lr)]  # fmt: skip
                jobs[(method, seed)] = runs / f"{method}-seed{seed}"
                futures[(method, seed)] = pool.submit(_train, jobs[(method, seed)], argv_, lock)
        if not args.no_finetune and "pgd-at" in methods:
            for seed in seeds:

                def finetune(seed=seed):
                    futures[("pgd-at", seed)].result()
                    base = runs / f"pgd-at-seed{seed}"
                    base_ckpt = Path(
                        json.loads((base / "final.json").read_text())["checkpoint"]
                    ).name
                    argv_ = [*common, "--method", "faal-at", "--seed", str(seed),
                             "--init", str(base / base_ckpt), "--epochs",
                             str(args.finetune_epochs), "--lr", "0.01", "--schedule",
                             "multistep", "--milestones", "1", "--tau",
                             str(args.finetune_tau)]  # fmt: skip
                    return _train(runs / f"{FINETUNE}-seed{seed}", argv_, lock)

                jobs[(FINETUNE, seed)] = runs / f"{FINETUNE}-seed{seed}"
                futures[(FINETUNE, seed)] = pool.submit(finetune)
        results: dict[str, dict[int, dict]] = {}
        for (method, seed), future in futures.items():
            results.setdefault(method, {})[seed] = {"final": future.result(), "subset": None}
        write_table(args, results, seeds, time.perf_counter() - t0, argv)
        # Phase 2: AutoAttack on a stratified test subset.
        if args.aa_per_class > 0:
            aa = {key: pool.submit(_autoattack, args, path, lock) for key, path in jobs.items()}
            for (method, seed), future in aa.items():
                results[method][seed]["subset"] = future.result()
            write_table(args, results, seeds, time.perf_counter() - t0, argv)
    return 0


def write_table(args, results: dict, seeds: list[int], wall: float, argv) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method, by_seed in results.items():
        row = {"method": method, "seeds": len(by_seed)}
        for key, _ in METRICS:
            for stat in ("average", "worst"):
                values = []
                for seed in seeds:
                    r = by_seed[seed]
                    if key == "autoattack":
                        entry = r["subset"] and r["subset"]["autoattack"]
                    elif key == "subset_pgd20":
                        entry = r["subset"] and r["subset"]["pgd20"]
                    else:
                        entry = r["final"]["results"][key]
                    values.append(math.nan if entry is None else 100.0 * entry[stat])
                mean, sd = _mean_sd(values)
                row[f"{key}_{stat}_mean"], row[f"{key}_{stat}_sd"] = mean, sd
                row[f"{key}_{stat}_values"] = values
        worst_class = {}
        for seed in seeds:
            pc = by_seed[seed]["final"]["results"]["pgd20"]["per_class"]
            name = by_seed[seed]["final"]["classes"][min(range(len(pc)), key=pc.__getitem__)]
            worst_class[name] = worst_class.get(name, 0) + 1
        row["pgd20_worst_class"] = worst_class
        rows.append(row)

    command = "python benchmarks/fashion_mnist_table.py " + " ".join(argv or [])
    setup = (
        f"Fashion-MNIST, small CNN, l_inf eps 0.1 (step 0.025; PGD-10 / TRADES-10 for training); "
        f"{args.train_per_class} training images per class, {args.val_per_class} per class for "
        f"validation (best checkpoint = best worst-class PGD-20 validation accuracy), "
        f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} cosine, momentum 0.9, "
        f"wd 5e-4; seeds {','.join(map(str, seeds))}. Clean and PGD-20 on a stratified test subset "
        f"of {args.test_per_class} per class; AutoAttack (standard, l_inf 0.1) on a stratified "
        f"subset of {args.aa_per_class} per class (to bound CPU time: one image is "
        f"{100 / args.aa_per_class:.0f} points of a class's AutoAttack accuracy). "
        f"{FINETUNE}: the PGD-AT model fine-tuned with FAAL for {args.finetune_epochs} epochs "
        f"(lr 0.01 then 0.001, tau {args.finetune_tau}). Accuracies in %, mean +- sd over seeds."
    )
    header = ["method"] + [f"{label} {stat}" for _, label in METRICS for stat in ("avg", "worst")]
    lines = [
        "# Fashion-MNIST: class-wise robustness (deep.train)",
        "",
        setup,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["method"]]
        for key, _ in METRICS:
            for stat in ("average", "worst"):
                m, s = row[f"{key}_{stat}_mean"], row[f"{key}_{stat}_sd"]
                cells.append("pending" if math.isnan(m) else f"{m:.1f} ± {s:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Worst class under PGD-20 (count over seeds): "
        + "; ".join(
            f"{r['method']}: " + ", ".join(f"{k} x{v}" for k, v in r["pgd20_worst_class"].items())
            for r in rows
        ),
        "",
        f"Command: `{command.strip()}`; wall time {wall / 60:.1f} min on this machine "
        f"({args.jobs} parallel single-thread jobs; runs already present are reused, so the wall "
        "time of a resumed table covers only what was left).",
        "",
    ]
    (out / "fashion_mnist_table.md").write_text("\n".join(lines))
    with (out / "fashion_mnist_table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        keys = [k for k in rows[0] if not k.endswith("_values") and k != "pgd20_worst_class"]
        writer.writerow(keys)
        for row in rows:
            writer.writerow([row[k] for k in keys])
    payload = {"setup": setup, "command": command.strip(), "wall_time_s": wall, "rows": rows}
    text = json.dumps(payload, indent=2).replace("NaN", "null")  # pending AutoAttack
    (out / "fashion_mnist_table.json").write_text(text + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
