"""The robust-fairness benchmark: every method under one protocol, class-wise, at full scale.

Which method raises the worst class, by how much, at what average cost? This script answers it with
the package's own CLIs only (``python -m deep.train``, ``python -m deep.evaluate``):

* **from scratch** — every method in ``--scratch`` (default: PGD-AT, TRADES, FAAL-AT, FAAL-TRADES,
  FRL Reweight+Remargin and every CFA / WAT / DAFA preset the package has) trained on the full
  training set minus a seeded, stratified validation split (``--val-per-class``) that chooses the
  checkpoint (best worst-class PGD-20 validation accuracy);
* **fine-tuning** (FAAL supp. Tables 2 and 5) — the PGD-AT and TRADES models fine-tuned for
  ``--finetune-epochs`` with FAAL, FRL, CFA and WAT (as FAAL supp. Table 5), and with **their own
  method** (the control that separates a fairness method's effect from the effect of more epochs),
  all with the same learning rates;
* evaluation of every model on the **full test set** (clean, PGD-20, CW-20) and AutoAttack
  ("standard") on a stratified test subset of ``--aa-per-class`` images per class, the same images
  for every model, for the seeds in ``--aa-seeds``; ``--tau-sweep`` adds FAAL fine-tuning rows at
  other tau values.

Runs go in parallel (``--jobs``, one CPU thread each). Every finished run is stored in a small
per-run record (``<out>/fairness_benchmark_runs/<row>/seed<k>.json``: the options, final.json,
metrics, AutoAttack, CPU seconds); the table, JSON and figures are rewritten from those records
after every job. Rerunning the command continues where it stopped: a run interrupted in this
checkout resumes from its ``last.pt``; a run whose record exists is not repeated unless another
run needs its checkpoint (a fine-tuning row its base, AutoAttack its model) and the checkpoint is
gone (a fresh clone), in which case the run is trained again: CPU training is deterministic, so
the same model comes back (a warning is printed if its numbers differ from the record, which is
then replaced).
A record whose options differ from the current ones is ignored (recomputed), never mixed in.

    python benchmarks/fairness_benchmark.py                       # Fashion-MNIST, ~21 CPU-hours
    python benchmarks/fairness_benchmark.py --status              # what is left, and its CPU time
    python benchmarks/fairness_benchmark.py --report-only         # rewrite table and figures
    python benchmarks/fairness_benchmark.py --dataset cifar10 --device cuda --jobs 1 ...  # GPU
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]
import fairness_report  # noqa: E402  (the aggregation and figures, next to this script)
import slurm_executor  # noqa: E402  (--executor slurm; submitit is imported only when used)

from deep.runtime import (  # noqa: E402  (light: no torch)
    CLIParser,
    DefaultsHelpFormatter,
    budget_value,
    end_quietly_on_closed_pipe,
    exit_on_file_error,
    package_version,
)

#: From-scratch methods of the benchmark, in this order; presets the package lacks are left out.
DEFAULT_SCRATCH = (
    "pgd-at",
    "trades",
    "faal-at",
    "faal-trades",
    "frl-rwrm",
    "cfa-at",
    "cfa-trades",
    "wat-trades",
    "dafa-at",
    "dafa-trades",
)
#: Fine-tuning: base -> methods (the base's own method is the control and always comes first).
DEFAULT_FINETUNE = {
    "pgd-at": ("pgd-at", "faal-at", "frl-rwrm", "cfa-at", "wat-trades"),
    "trades": ("trades", "faal-trades", "frl-rwrm", "cfa-trades", "wat-trades"),
}
#: The FAAL method used to fine-tune each base (and swept over tau with --tau-sweep).
FAAL_FOR_BASE = {"pgd-at": "faal-at", "trades": "faal-trades"}
#: Options that are part of a method as its paper evaluates it: CFA reports its FAWA model
#: (Fairness-Aware Weight Averaging over epochs whose worst validation class reaches a threshold),
#: with the paper's thresholds (0.2 AT, 0.24 TRADES): at full scale the worst Fashion-MNIST class
#: reaches them (about 0.4 PGD-20 after 5 epochs), as CIFAR-10's does.
METHOD_OPTIONS = {
    "cfa-at": ("--final-checkpoint", "fawa", "--fawa-threshold", "0.2"),
    "cfa-trades": ("--final-checkpoint", "fawa", "--fawa-threshold", "0.24"),
}


# --------------------------------------------------------------------------------------------
# Rows and runs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the table: a method trained from scratch or fine-tuned from a base row."""

    name: str
    method: str
    init: str | None = None  # base row name (fine-tuning) or None (from scratch)
    options: tuple[str, ...] = ()  # extra deep.train options of this row (e.g. --tau 0.1)

    @property
    def label(self) -> str:
        if self.init is None:
            return self.name
        tau = [v for k, v in zip(self.options, self.options[1:]) if k == "--tau"]
        return f"{self.init} → {self.method}" + (f" (tau {tau[0]})" if tau else "")


@dataclass
class Job:
    kind: str  # "train" or "aa"
    row: Row
    seed: int
    deps: list[Job] = field(default_factory=list)
    state: str = "pending"  # pending | running | done | failed

    @property
    def name(self) -> str:
        return f"{self.kind} {self.row.name} seed {self.seed}"


def _available_methods() -> tuple[str, ...]:
    from deep.presets import METHOD_NAMES  # light: no torch

    return METHOD_NAMES


def build_rows(args, available: tuple[str, ...]) -> list[Row]:
    """The table's rows from the options (methods the package does not have are left out)."""

    def keep(method: str, option: str) -> bool:
        if method in available:
            return True
        if args.explicit_methods:
            raise SystemExit(f"{option}: unknown method {method!r}; the package has {available}")
        return False

    rows = [
        Row(m, m, None, METHOD_OPTIONS.get(m, ())) for m in args.scratch if keep(m, "--scratch")
    ]
    names = {r.name for r in rows}
    for base, methods in args.finetune.items():
        if base not in names:
            raise SystemExit(f"--finetune: base {base!r} is not a --scratch row")
        for method in methods:
            if keep(method, "--finetune"):
                rows.append(Row(f"{base}+{method}", method, base, METHOD_OPTIONS.get(method, ())))
        faal = FAAL_FOR_BASE.get(base)
        for tau in args.tau_sweep:
            if faal and faal in available:
                rows.append(Row(f"{base}+{faal}-tau{tau:g}", faal, base, ("--tau", f"{tau:g}")))
    return rows


def exact_number(value: float) -> str:
    """``value`` as an option value: short (``0.1``) where that is exact, else in full (8/255)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def scratch_argv(args) -> list[str]:
    """deep.train options shared by every from-scratch run (the protocol)."""
    argv = [
        "--dataset",
        args.dataset,
        "--epochs",
        str(args.epochs),
        "--lr",
        f"{args.lr:g}",
        "--schedule",
        "cosine",
        "--batch-size",
        str(args.batch_size),
        "--val-per-class",
        str(args.val_per_class),
        "--attack-steps",
        str(args.attack_steps),
        "--final-attacks",
        "clean,pgd20,cw20",
    ]
    if args.model:
        argv += ["--model", args.model]
    if args.eps is not None:
        argv += ["--eps", exact_number(args.eps)]
    if args.train_per_class:
        argv += ["--train-per-class", str(args.train_per_class)]
    if args.test_per_class:
        argv += ["--final-n-per-class", str(args.test_per_class)]
    return argv


def finetune_argv(args) -> list[str]:
    """Fine-tuning protocol (FAAL supp. C.5): lr ``--finetune-lr`` then a tenth of it."""
    argv = scratch_argv(args)
    for option, value in (
        ("--epochs", str(args.finetune_epochs)),
        ("--lr", f"{args.finetune_lr:g}"),
        ("--schedule", "multistep"),
    ):
        argv[argv.index(option) + 1] = value
    milestone = max(1, args.finetune_epochs // 2)
    return argv + ["--milestones", str(milestone)]


def run_argv(args, row: Row, seed: int) -> list[str]:
    base = finetune_argv(args) if row.init else scratch_argv(args)
    return [*base, "--method", row.method, "--seed", str(seed), *row.options]


def run_hash(args, rows_by_name: dict[str, Row], row: Row, seed: int) -> str:
    """Identity of a run: its deep.train options and, for fine-tuning, its base's identity."""
    identity = {"argv": run_argv(args, row, seed)}
    if row.init:
        identity["init"] = run_hash(args, rows_by_name, rows_by_name[row.init], seed)
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def aa_argv(args) -> list[str]:
    return ["--attacks", "clean,pgd20,aa", "--n-per-class", str(args.aa_per_class), "--seed", "0"]


# --------------------------------------------------------------------------------------------
# The protocol of a results folder, and the provenance of a record
# --------------------------------------------------------------------------------------------
#: The options that make two benchmarks comparable: a results folder holds one protocol only.
PROTOCOL_FIELDS = (
    "dataset",
    "model",
    "eps",
    "epochs",
    "lr",
    "batch_size",
    "attack_steps",
    "finetune_epochs",
    "finetune_lr",
    "val_per_class",
    "train_per_class",
    "test_per_class",
    "aa_per_class",
)
#: Where the package's own results live (the committed protocol).
COMMITTED_OUT = REPO / "docs" / "results"


def protocol(args) -> dict:
    """The protocol of a benchmark: every option that changes a run's numbers (not which rows or
    seeds are run, nor where or how)."""
    return {name: getattr(args, name) for name in PROTOCOL_FIELDS}


def protocol_hash(args) -> str:
    return hashlib.sha1(json.dumps(protocol(args), sort_keys=True).encode()).hexdigest()[:10]


def manifest_path(out: Path, dataset: str) -> Path:
    """``<out>/<stem>_protocol.json``: the folder's protocol and the rows and seeds it holds."""
    return Path(out) / f"{fairness_report.stem(dataset)}_protocol.json"


def read_manifest(out: Path, dataset: str) -> dict | None:
    path = manifest_path(out, dataset)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        manifest["protocol"], manifest["rows"], manifest["seeds"]  # noqa: B018  (required keys)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path} is not a benchmark protocol file ({exc!r})") from None
    return manifest


def protocol_differences(theirs: dict, ours: dict) -> str:
    """``"epochs 5 -> 1, lr 0.05 -> 0.1"``: how ``ours`` differs from ``theirs``."""
    keys = [k for k in PROTOCOL_FIELDS if theirs.get(k) != ours.get(k)]
    return ", ".join(f"{k.replace('_', '-')} {theirs.get(k)} -> {ours.get(k)}" for k in keys)


def resolve_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Where this benchmark's records and report go: a folder holds one protocol only.

    Without ``--out``: ``docs/results`` when the protocol is the one committed there, otherwise a
    folder of its own, ``runs/fairness-benchmark/<stem>-<protocol hash>`` (said in one line). With
    ``--out``: refused (one line) when that folder holds another protocol."""
    ours = protocol(args)
    args.out_note = None
    if args.out is None:
        committed = read_manifest(COMMITTED_OUT, args.dataset)
        if committed is not None and committed["protocol"] == ours:
            args.out = str(COMMITTED_OUT)
            return
        own = Path(args.runs) / f"{fairness_report.stem(args.dataset)}-{protocol_hash(args)}"
        args.out = str(own)
        differs = (
            f"differs from the committed one ({protocol_differences(committed['protocol'], ours)})"
            if committed is not None
            else "has no committed results"
        )
        args.out_note = f"this protocol {differs}: records, table and figures go to {own}"
        return
    theirs = read_manifest(Path(args.out), args.dataset)
    if theirs is not None and theirs["protocol"] != ours:
        own = Path(args.runs) / f"{fairness_report.stem(args.dataset)}-{protocol_hash(args)}"
        parser.error(
            f"--out {args.out} holds a benchmark of another protocol "
            f"({protocol_differences(theirs['protocol'], ours)}); give another --out (e.g. {own}) "
            "or leave --out out"
        )


@functools.cache
def provenance() -> dict:
    """The package version and the git commit the records of this process are made with
    (``"dirty": true`` when tracked files differ from that commit; None outside a checkout)."""
    version = package_version()

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"package_version": version, "git_commit": commit, "dirty": bool(dirty)}


@functools.cache
def cpu_kind_of_this_machine() -> str | None:
    """:func:`deep.runtime.cpu_kind` (``AVX512``, ``AVX512+AMX``, ...), asked of a child Python so
    that this process stays free of torch; None when the child fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from deep.runtime import cpu_kind; print(cpu_kind())"],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def device_provenance(device: str) -> dict:
    """``{"device": ...}``, with the CPU's kind for a CPU run (CPU runs are bitwise equal only
    between CPUs of one kind)."""
    if device != "cpu":
        return {"device": device}
    return {"device": device, "cpu_kind": cpu_kind_of_this_machine()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# The store of finished runs (committed) and the run folders (working files)
# --------------------------------------------------------------------------------------------
class Store:
    """The records of one results folder. ``rows`` are the rows of this call; ``report_rows`` and
    ``report_seeds`` add those the folder already holds (from its protocol file), so that a call
    with fewer rows or seeds extends the report and never shrinks it."""

    def __init__(self, args, rows: list[Row]) -> None:
        self.args = args
        manifest = read_manifest(Path(args.out), args.dataset)
        known = [Row(r["name"], r["method"], r["init"], tuple(r["options"])) for r in
                 (manifest or {}).get("rows", [])]  # fmt: skip
        current = {r.name: r for r in rows}
        self.report_rows = {**{r.name: r for r in known}, **current}
        self.rows = self.report_rows  # a fine-tuning's identity needs its base row
        seeds = {"seeds": args.seeds, "aa_seeds": args.aa_seeds, "aa_key_seeds": args.aa_key_seeds}
        self.report_seeds = {
            k: sorted(set(v) | set((manifest or {}).get(k, []))) for k, v in seeds.items()
        }
        covers = manifest is None or (
            set(current) >= {r.name for r in known}
            and all(set(v) >= set(manifest.get(k, [])) for k, v in seeds.items())
        )
        self.command = args.command if covers else manifest.get("command", args.command)
        self.records = Path(args.out) / f"{fairness_report.stem(args.dataset)}_runs"
        self.runs = Path(args.runs)
        self.lock = threading.Lock()

    def hash(self, row: Row, seed: int) -> str:
        return run_hash(self.args, self.rows, row, seed)

    def record_path(self, row: Row, seed: int) -> Path:
        return self.records / row.name / f"seed{seed}.json"

    def run_dir(self, row: Row, seed: int) -> Path:
        return self.runs / row.name / f"seed{seed}-{self.hash(row, seed)}"

    def record(self, row: Row, seed: int) -> dict | None:
        """The stored record of this run if it was made with the current options."""
        path = self.record_path(row, seed)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path} is not valid JSON ({exc}); delete it to recompute") from None
        return record if record.get("hash") == self.hash(row, seed) else None

    def has_aa(self, row: Row, seed: int) -> bool:
        record = self.record(row, seed)
        return bool(record and record.get("autoattack_argv") == aa_argv(self.args))

    def checkpoint(self, row: Row, seed: int) -> Path | None:
        """The evaluated checkpoint of the run folder, if the run folder is complete."""
        run_dir = self.run_dir(row, seed)
        final = run_dir / "final.json"
        if not final.exists():
            return None
        name = Path(json.loads(final.read_text())["checkpoint"])
        path = name if name.is_absolute() else run_dir / name.name
        return path if path.exists() else None

    def write_manifest(self) -> None:
        """Record the folder's protocol, rows and seeds (before any run writes into it)."""
        manifest = {
            "protocol": protocol(self.args),
            "rows": [
                {"name": r.name, "method": r.method, "init": r.init, "options": list(r.options)}
                for r in self.report_rows.values()
            ],
            **self.report_seeds,
            "command": self.command,
        }
        path = manifest_path(Path(self.args.out), self.args.dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(manifest, indent=1) + "\n"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def write(self, row: Row, seed: int, record: dict) -> None:
        path = self.record_path(row, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------
def key_rows(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """``(bases, key fine-tunings)``: the rows of the benchmark's question, FAAL fine-tuning of each
    base against its control (the base fine-tuned by its own method)."""
    bases = [r for r in rows if any(o.init == r.name for o in rows)]
    key = [r for r in rows if r.init and r.method in (r.init, FAAL_FOR_BASE.get(r.init))]
    return bases, [r for r in key if "--tau" not in r.options]


def plan(
    store: Store,
    rows: list[Row],
    seeds: list[int],
    aa_seeds: list[int],
    aa_key_seeds: list[int] = (),
) -> list[Job]:
    """The jobs still to do, in priority order, each with the jobs it waits for. AutoAttack for
    ``aa_seeds`` of every row and for ``aa_key_seeds`` of the bases and key fine-tunings."""
    need_train: dict[tuple[str, int], bool] = {}
    bases, key = key_rows(rows)
    key_names = {r.name for r in bases + key}

    def needs_aa(row: Row, seed: int) -> bool:
        wanted = seed in aa_seeds or (row.name in key_names and seed in aa_key_seeds)
        return wanted and store.args.aa_per_class > 0 and not store.has_aa(row, seed)

    def needs_train(row: Row, seed: int) -> bool:
        key = (row.name, seed)
        if key not in need_train:
            dependents = [r for r in rows if r.init == row.name]
            wants_ckpt = needs_aa(row, seed) or any(needs_train(r, seed) for r in dependents)
            need_train[key] = store.record(row, seed) is None or (
                wants_ckpt and store.checkpoint(row, seed) is None
            )
        return need_train[key]

    jobs: dict[tuple[str, str, int], Job] = {}

    def train_job(row: Row, seed: int) -> Job | None:
        if not needs_train(row, seed):
            return None
        key = ("train", row.name, seed)
        if key not in jobs:
            deps = []
            if row.init:
                base = train_job(store.rows[row.init], seed)
                deps = [base] if base else []
            jobs[key] = Job("train", row, seed, deps)
        return jobs[key]

    finetunes = [r for r in rows if r.init]
    # first the question the benchmark is about: FAAL fine-tuning against its control
    others = [r for r in finetunes if r not in key]
    scratch = [r for r in rows if r.init is None and r not in bases]
    # then the other rows seed by seed, so that an unfinished benchmark has every row's seed 0 (and
    # its AutoAttack) before any row's seed 1; the cheap fine-tunings before the from-scratch rows
    order = [(r, s) for s in seeds for r in bases + key]
    order += [(r, s) for s in seeds for r in others]
    order += [(r, s) for s in seeds for r in scratch]
    for row, seed in order:
        train_job(row, seed)
    out = list(jobs.values())
    for row, seed in order:
        if needs_aa(row, seed):
            train = jobs.get(("train", row.name, seed))
            out.append(Job("aa", row, seed, [train] if train else []))
    return out


def _run_logged(cmd: list[str], log: Path, threads: int) -> tuple[int, float]:
    """Run a command, appending its output to ``log``; (exit status, CPU seconds of the child)."""
    env = dict(
        os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        _CHILDREN.add(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            _CHILDREN.discard(proc)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


_CHILDREN: set[subprocess.Popen] = set()


def _tail(path: Path, n: int = 12) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + ln for ln in lines[-n:])


def run_train(store: Store, job: Job) -> None:
    args, row, seed = store.args, job.row, job.seed
    run_dir = store.run_dir(row, seed)
    log = run_dir.with_suffix(".log")
    cpu_file = run_dir.with_suffix(".cpu")
    # CPU time is added to cpu_file when deep.train exits; a process killed with the session never
    # exits, so its time is lost: "pending" marks a running attempt, "partial" a lost one.
    pending, partial = run_dir.with_suffix(".cpu-pending"), run_dir.with_suffix(".cpu-partial")
    if not (run_dir / "final.json").exists():
        cmd = [
            sys.executable,
            "-m",
            "deep.train",
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        if (run_dir / "last.pt").exists():
            cmd += ["--resume", str(run_dir)]
            if pending.exists() or not cpu_file.exists():
                partial.touch()
        else:
            if run_dir.exists():  # a run that died before its first checkpoint
                shutil.rmtree(run_dir)
            for path in (cpu_file, pending, partial):
                path.unlink(missing_ok=True)
            cmd += ["--out", str(run_dir), *run_argv(args, row, seed)]
            if row.init:
                base_ckpt = store.checkpoint(store.rows[row.init], seed)
                if base_ckpt is None:
                    raise RuntimeError(f"the checkpoint of {row.init} seed {seed} is missing")
                cmd += ["--init", str(base_ckpt)]
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        pending.touch()
        status, cpu = _run_logged(cmd, log, args.threads)
        previous = float(cpu_file.read_text()) if cpu_file.exists() else 0.0
        cpu_file.write_text(f"{previous + cpu}\n")
        pending.unlink()
        if status != 0:
            raise RuntimeError(f"deep.train exited with {status}; {log}:\n{_tail(log)}")
    final = json.loads((run_dir / "final.json").read_text())
    metrics = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]
    # the rule that chose best.pt among tied epochs (runs made before the option: "first")
    config = run_dir / "config.json"
    best_ties = (
        json.loads(config.read_text()).get("best_ties", "first") if config.exists() else None
    )
    cpu = float(cpu_file.read_text()) if cpu_file.exists() else None
    with store.lock:
        old = store.record(row, seed)
        if old is not None:  # retrained to get its checkpoint back
            if old["final"]["results"] != final["results"]:
                print(
                    f"WARNING: {row.name} seed {seed} retrained with different results than its "
                    "record (nondeterminism or changed code); the record is replaced",
                    flush=True,
                )
            else:
                return
        record = {
            "row": row.name,
            "method": row.method,
            "init": row.init,
            "seed": seed,
            "hash": store.hash(row, seed),
            "argv": run_argv(args, row, seed),
            "cpu_seconds": {"train": cpu},
            # False: an attempt was killed before it could report its CPU time (a lower bound)
            "cpu_complete": not partial.exists(),
            "final": final,
            "metrics": metrics,
            "provenance": {
                **provenance(),
                **device_provenance(args.device),
                "init": init_provenance(store, row, seed),
            },
        }
        if best_ties is not None:  # unknown without the run's config.json: read as "first"
            record["best_ties"] = best_ties
        store.write(row, seed, record)


def init_provenance(store: Store, row: Row, seed: int) -> dict | None:
    """Path and SHA-256 of the checkpoint a fine-tuning started from (None from scratch)."""
    if not row.init:
        return None
    config_file = store.run_dir(row, seed) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    path = Path(config["init"]) if config.get("init") else None
    if path is None or not path.exists():
        path = store.checkpoint(store.rows[row.init], seed)
    return {"path": str(path), "sha256": file_sha256(path) if path and path.exists() else None}


def run_aa(store: Store, job: Job) -> None:
    args, row, seed = store.args, job.row, job.seed
    ckpt = store.checkpoint(row, seed)
    if ckpt is None:
        raise RuntimeError(f"the checkpoint of {row.name} seed {seed} is missing")
    out = store.run_dir(row, seed) / f"autoattack-{args.aa_per_class}"
    log = store.run_dir(row, seed).with_suffix(".log")
    cmd = [
        sys.executable,
        "-m",
        "deep.evaluate",
        "--checkpoint",
        str(ckpt),
        "--dataset",
        args.dataset,
        "--out",
        str(out),
        "--device",
        args.device,
        *aa_argv(args),
    ]
    if args.eps is not None:
        cmd += ["--eps", exact_number(args.eps)]
    status, cpu = _run_logged(cmd, log, args.threads)
    if status != 0:
        raise RuntimeError(f"deep.evaluate exited with {status}; {log}:\n{_tail(log)}")
    final = json.loads((out / "final.json").read_text())
    with store.lock:
        record = store.record(row, seed)
        record["autoattack"] = final
        record["autoattack_argv"] = aa_argv(args)
        record["cpu_seconds"]["autoattack"] = cpu
        record["autoattack_provenance"] = {**provenance(), **device_provenance(args.device)}
        store.write(row, seed, record)


class Scheduler:
    """Runs the jobs on ``jobs`` worker threads: AutoAttack of finished models first (so a model's
    checkpoint is used while it exists), then training in plan order."""

    def __init__(self, store: Store, jobs: list[Job], workers: int, deadline: float | None):
        self.store, self.jobs, self.workers, self.deadline = store, jobs, workers, deadline
        self.cond = threading.Condition()
        self.failed: list[str] = []
        self.stopping = False

    def _next(self) -> Job | None:
        """The next runnable job, None when nothing is left to start (call with the lock)."""
        while True:
            if self.stopping or (self.deadline is not None and time.time() > self.deadline):
                return None
            for job in self.jobs:
                if job.state == "pending" and any(d.state == "failed" for d in job.deps):
                    job.state = "failed"
                    self.failed.append(f"{job.name}: a run it needs failed")
            pending = [j for j in self.jobs if j.state == "pending"]
            ready = [j for j in pending if all(d.state == "done" for d in j.deps)]
            ready.sort(key=lambda j: j.kind != "aa")  # stable: plan order within a kind
            if ready:
                ready[0].state = "running"
                return ready[0]
            if not pending or not any(j.state == "running" for j in self.jobs):
                return None
            self.cond.wait()

    def _worker(self) -> None:
        while True:
            with self.cond:
                job = self._next()
            if job is None:
                return
            t0 = time.time()
            _say(f"start {job.name}")
            try:
                (run_train if job.kind == "train" else run_aa)(self.store, job)
                state = "done"
                _say(f"done  {job.name} in {(time.time() - t0) / 60:.1f} min")
            except Exception as exc:  # a failed run must not stop the others
                if self.stopping:  # ended by Ctrl-C / kill: saved, not failed
                    state = "stopped"
                    _say(f"stopped {job.name}: the next call resumes it")
                else:
                    state = "failed"
                    self.failed.append(f"{job.name}: {exc}")
                    _say(f"FAILED {job.name}: {exc}")
            with self.cond:
                job.state = state
                self.cond.notify_all()
            if state == "done" and not self.stopping:
                with self.store.lock:
                    write_report(self.store)

    def run(self) -> None:
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        try:
            _wait_for(threads)
        except KeyboardInterrupt:
            with self.cond:
                self.stopping = True
            _say("interrupted: asking the running jobs to save and stop (Ctrl-C again to kill)")
            for proc in list(_CHILDREN):
                with_pgid(proc, signal.SIGINT)
            try:
                _wait_for(threads)  # each job records its CPU time as its process ends
            except KeyboardInterrupt:
                for proc in list(_CHILDREN):
                    with_pgid(proc, signal.SIGKILL)
            raise


def _wait_for(threads: list[threading.Thread]) -> None:
    """Until every thread has ended. Polls instead of ``Thread.join``: a join interrupted by a
    signal marks a still-running thread as ended (CPython before 3.13), so a second join would
    return at once and the runner would exit before its jobs had recorded their CPU time."""
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C, ``kill -INT`` and ``kill PID`` (SIGTERM) all stop the benchmark the same way: the
    running jobs save a checkpoint and report their CPU time, then the runner exits. A process
    started in the background by a shell (``nohup ... &``) inherits SIGINT ignored; this undoes
    that."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def with_pgid(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def data_sizes(args) -> dict:
    """Training, validation and test images of the protocol (None where the data is missing)."""
    try:
        from deep.data import load_dataset, stratified_subset

        data = load_dataset(args.dataset, None, val_per_class=args.val_per_class, seed=0)
    except Exception:  # the report can be written without the data files
        return {"train_size": None, "val_size": None, "test_size": None}
    train, test = data.train, data.test
    if args.train_per_class:
        train = stratified_subset(train, args.train_per_class, seed=0)
    if args.test_per_class:
        test = stratified_subset(test, args.test_per_class, seed=0)
    return {"train_size": len(train), "val_size": len(data.val), "test_size": len(test)}


def canonical_command(argv: list[str]) -> str:
    """The benchmark's command without the options that only say where or how it runs."""
    local = {"--runs", "--out", "--jobs", "--max-hours", "--threads", "--device", "--readme"}
    local |= slurm_executor.WHERE_OPTIONS
    flags = {"--status", "--report-only", "--cancel"}
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=")[0]
        if name in flags or (name in local and "=" in arg):
            continue
        if name in local:
            skip = True
            continue
        kept.append(arg)
    return " ".join(["python benchmarks/fairness_benchmark.py", *kept])


def report_inputs(store: Store) -> dict:
    """Everything the report needs: the config and every stored record of the folder's rows and
    seeds (those of this call and those it already held)."""
    args = store.args
    if not hasattr(args, "sizes"):
        args.sizes = data_sizes(args)
    report_args = argparse.Namespace(**{**vars(args), **store.report_seeds})
    report_args.command = store.command
    records = {}
    for row in store.report_rows.values():
        by_seed = {}
        for seed in report_args.seeds:
            record = store.record(row, seed)
            if record is not None:
                by_seed[seed] = record
        records[row.name] = {"row": row, "records": by_seed}
    return {"args": report_args, "rows": records}


def write_report(store: Store) -> list[Path]:
    """Rewrite the folder's JSON, Markdown and figures from its records."""
    inputs = report_inputs(store)
    return fairness_report.write_report(inputs["args"], inputs)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _finetune(text: str) -> dict[str, tuple[str, ...]]:
    """``"pgd-at:pgd-at,faal-at;trades:trades"`` -> ``{"pgd-at": (...), "trades": (...)}``."""
    out = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        base, sep, methods = part.partition(":")
        if not sep or not base.strip():
            raise argparse.ArgumentTypeError(f"{part!r} is not BASE:METHOD[,METHOD...]")
        out[base.strip()] = _methods(methods)
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers") from None


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(
        prog="python benchmarks/fairness_benchmark.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    g = p.add_argument_group("rows")
    g.add_argument(
        "--scratch",
        type=_methods,
        default=",".join(DEFAULT_SCRATCH),
        help="methods trained from scratch (comma-separated)",
    )
    g.add_argument(
        "--finetune",
        type=_finetune,
        default=";".join(f"{b}:{','.join(m)}" for b, m in DEFAULT_FINETUNE.items()),
        help="BASE:METHOD,...;BASE:... fine-tuning rows (the base's own method is the control)",
    )
    g.add_argument(
        "--tau-sweep",
        type=_floats,
        default=[],
        help="extra FAAL fine-tuning rows at these tau values, e.g. 0.05,0.2,1,2 (default: none)",
    )
    g.add_argument("--seeds", type=_ints, default="0,1,2,3,4", help="seeds of every row")
    g = p.add_argument_group("protocol")
    g.add_argument("--dataset", default="fashion-mnist", help="deep.train data set")
    g.add_argument("--model", default="two-conv-cnn", help="architecture ('' = the dataset's)")
    g.add_argument(
        "--eps",
        type=budget_value,
        default=None,
        help="l_inf budget, a number or a fraction like 8/255 (default: the dataset's)",
    )
    g.add_argument("--epochs", type=int, default=5, help="from-scratch epochs (cosine schedule)")
    g.add_argument("--lr", type=float, default=0.05, help="from-scratch learning rate")
    g.add_argument("--batch-size", type=int, default=128, help="batch size")
    g.add_argument("--attack-steps", type=int, default=10, help="training attack steps")
    g.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs")
    g.add_argument(
        "--finetune-lr",
        type=float,
        default=0.01,
        help="fine-tuning lr for the first half, a tenth of it after",
    )
    g.add_argument("--val-per-class", type=int, default=300, help="validation images per class")
    g.add_argument(
        "--train-per-class",
        type=int,
        default=0,
        help="training images per class (0: all; small values for smoke tests)",
    )
    g.add_argument(
        "--test-per-class",
        type=int,
        default=0,
        help="test images per class for clean/PGD-20/CW-20 (0: the full test set)",
    )
    g.add_argument(
        "--aa-per-class",
        type=int,
        default=50,
        help="AutoAttack test subset per class (same images for all; 0: none)",
    )
    g.add_argument(
        "--aa-seeds", type=_ints, default="0,3,4", help="seeds whose models get AutoAttack"
    )
    g.add_argument(
        "--aa-key-seeds",
        type=_ints,
        default="0,1,2,3,4",
        help="seeds whose base, control and FAAL fine-tuning models get AutoAttack (the paired "
        "AutoAttack answer to the benchmark's question)",
    )
    g = p.add_argument_group("execution")
    g.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    g.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument(
        "--max-hours",
        type=float,
        default=None,
        help="start no new job after this many hours (the rest continues next time)",
    )
    g.add_argument(
        "--runs",
        default=str(REPO / "runs" / "fairness-benchmark"),
        help="working run folders (checkpoints)",
    )
    g.add_argument(
        "--out",
        default=None,
        help="records, table, JSON and figures (default: docs/results for the committed protocol, "
        "else a folder of the protocol's own under --runs); a folder holds one protocol only",
    )
    g.add_argument(
        "--status",
        action="store_true",
        help="list what is done and what is left (with its estimated CPU time); exit",
    )
    g.add_argument("--report-only", action="store_true", help="rewrite the report; train nothing")
    g.add_argument(
        "--readme",
        default=None,
        help="also write the tables into this file's fairness-benchmark block (e.g. README.md)",
    )
    slurm_executor.add_options(g)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit_methods = any(a.split("=")[0] in ("--scratch", "--finetune") for a in argv)
    args.command = canonical_command(argv)
    minimums = {
        "epochs": 1,
        "finetune_epochs": 1,
        "batch_size": 1,
        "jobs": 1,
        "threads": 1,
        "attack_steps": 1,
        "val_per_class": 1,
        "train_per_class": 0,
        "test_per_class": 0,
        "aa_per_class": 0,
    }
    for name, minimum in minimums.items():
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}")
    for name in ("lr", "finetune_lr"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if not args.seeds:
        parser.error("--seeds: give at least one seed")
    explicit_aa = any(a.split("=")[0] == "--aa-seeds" for a in argv)
    if explicit_aa and any(s not in args.seeds for s in args.aa_seeds):
        parser.error("--aa-seeds must be a subset of --seeds")
    args.aa_key_seeds = [s for s in args.aa_key_seeds if s in args.seeds]
    args.aa_seeds = [s for s in args.aa_seeds if s in args.seeds]
    if any(not t > 0 for t in args.tau_sweep):
        parser.error("--tau-sweep: every tau must be > 0")
    _check_names(parser, args)
    slurm_executor.check_args(parser, args)
    resolve_out(parser, args)
    from deep.runtime import check_output_dir  # a file, under a file, unwritable: before any work

    check_output_dir(parser, args.out)
    check_output_dir(parser, args.runs, "--runs")
    return args


def _check_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Methods, data set, model and device the package knows, before any run starts."""
    from deep.data import DATASET_NAMES
    from deep.models import MODEL_NAMES
    from deep.runtime import resolve_device

    methods = _available_methods()
    for option, names in (("--scratch", args.scratch), ("--finetune", _finetune_methods(args))):
        unknown = [m for m in names if m not in methods]
        if unknown:
            parser.error(f"{option}: unknown method(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(methods)}")  # fmt: skip
    bases = [b for b in args.finetune if b not in args.scratch]
    if bases:
        parser.error(f"--finetune: base(s) {', '.join(bases)} must also be --scratch rows")
    if args.dataset not in DATASET_NAMES:
        parser.error(f"--dataset {args.dataset}: choose from {', '.join(DATASET_NAMES)}")
    if args.model and args.model not in MODEL_NAMES:
        parser.error(f"--model {args.model}: choose from {', '.join(MODEL_NAMES)}")
    resolve_device(parser, args.device)


def _finetune_methods(args: argparse.Namespace) -> list[str]:
    return [m for methods in args.finetune.values() for m in methods]


def estimate_cpu_seconds(store: Store, job: Job, rows: list[Row], seeds: list[int]) -> float | None:
    """CPU seconds ``job`` will still take, from the records made so far: the same row's mean, else
    the mean of its kind (from scratch, fine-tuning, AutoAttack), times the share of epochs an
    interrupted run has still to do. None when nothing comparable is recorded yet."""

    def spent(kind: str, row: Row) -> list[float]:
        out = []
        for seed in seeds:
            record = store.record(row, seed)
            if record and not record.get("cpu_complete", True):
                continue  # part of its time was lost with a killed session
            value = record and record["cpu_seconds"].get(
                "train" if kind == "train" else "autoattack"
            )
            if value:
                out.append(float(value))
        return out

    same = spent(job.kind, job.row)
    if not same:
        alike = [r for r in rows if job.kind == "aa" or (r.init is None) == (job.row.init is None)]
        same = [v for r in alike for v in spent(job.kind, r)]
    if not same:
        return None
    estimate = sum(same) / len(same)
    run_dir = store.run_dir(job.row, job.seed)
    if job.kind == "train" and (run_dir / "last.pt").exists():
        try:
            epochs = json.loads((run_dir / "config.json").read_text())["epochs"]
            done = len((run_dir / "metrics.jsonl").read_text().splitlines())
            estimate *= max(epochs - done, 0) / epochs
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            pass  # an unreadable partial run: the whole estimate
    return estimate


def print_status(store: Store, rows: list[Row], jobs: list[Job]) -> None:
    args = store.args
    done = sum(1 for r in rows for s in args.seeds if store.record(r, s) is not None)
    print(f"{done}/{len(rows) * len(args.seeds)} runs recorded; {len(jobs)} jobs to do:")
    total, unknown = 0.0, 0
    # estimates go by every record of the folder, not only those of this call's rows and seeds
    known_rows = list(store.report_rows.values())
    known_seeds = sorted(set(args.seeds) | set(store.report_seeds["seeds"]))
    for job in jobs:
        after = ", ".join(d.name for d in job.deps)
        cost = estimate_cpu_seconds(store, job, known_rows, known_seeds)
        total += cost or 0.0
        unknown += cost is None
        when = f"~{cost / 60:.0f} CPU-min" if cost is not None else "no estimate yet"
        print(f"  {job.name}  [{when}]" + (f"  (after {after})" if after else ""))
    if jobs and unknown == len(jobs):
        print("left: no estimate yet (no run recorded with these options to go by)")
    elif jobs:
        hours = total / 3600
        wall = hours / max(args.jobs, 1)
        text = f"left: about {hours:.1f} CPU-hours, {wall:.1f} h at --jobs {args.jobs}"
        if unknown:
            text += f" (plus {unknown} jobs without an estimate)"
        print(
            text + "; estimates are the mean CPU time of the recorded runs of the same row or kind"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = build_rows(args, _available_methods())
    store = Store(args, rows)
    jobs = plan(store, rows, args.seeds, args.aa_seeds, args.aa_key_seeds)
    if args.out_note:
        _say(args.out_note)
    if args.status:
        end_quietly_on_closed_pipe()
        print_status(store, rows, jobs)
        if args.executor == "slurm":
            slurm_executor.print_jobs(store, jobs)
        return 0
    if args.cancel:
        return slurm_executor.cancel(store, jobs)
    store.write_manifest()
    if not args.report_only and jobs:
        _say(f"{len(jobs)} jobs, {args.jobs} at a time; records in {store.records}")
        deadline = time.time() + 3600 * args.max_hours if args.max_hours else None
        stop_on_signals()
        if args.executor == "slurm":
            argv = list(sys.argv[1:] if argv is None else argv)
            report = lambda: write_report(store)  # noqa: E731
            scheduler = slurm_executor.SlurmScheduler(store, jobs, argv, report)
        else:
            scheduler = Scheduler(store, jobs, args.jobs, deadline)
        try:
            scheduler.run()
        except KeyboardInterrupt:
            write_report(store)
            return 130
        if scheduler.failed:
            write_report(store)
            print("failed:\n  " + "\n  ".join(scheduler.failed), file=sys.stderr)
            return 1
    paths = write_report(store)
    print("\n".join(f"wrote {p}" for p in paths))
    left = plan(store, rows, args.seeds, args.aa_seeds, args.aa_key_seeds)
    if left:
        print(f"{len(left)} jobs left (rerun the command to continue)")
    return 0


if __name__ == "__main__":
    with exit_on_file_error("python benchmarks/fairness_benchmark.py"):
        code = main()
    sys.exit(code)
