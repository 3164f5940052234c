"""Training runs behind the deep-learning figures: a cache of ``deep.train`` run directories.

A figure or table script never computes a metric itself. It names the runs it needs as
:class:`RunSpec` (``deep.train`` options; optionally "fine-tune from that other run"), and
:func:`ensure_run` makes each one exist under ``--runs-dir``:

* a run whose ``final.json`` exists is reused as it is (reruns of a script are cheap, and scripts
  that need the same run share it);
* a run with a ``last.pt`` but no ``final.json`` (interrupted) is continued with ``--resume``;
* otherwise ``deep.train`` runs in this process (its ``main(argv)``), its console output going to
  ``train.log`` in the run directory, with a plain progress line every 30 s (``tail -f`` it).

The directory name is the run's readable name plus a hash of everything that changes what is
trained and evaluated, so a changed setting never silently reuses an old result. The script then
reads ``final.json`` (test-set class-wise accuracies and FRL errors, written by ``deep.evaluate``),
``metrics.jsonl`` (per epoch) and ``class_weights.csv`` (per batch) from the run directories.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deep.runtime import FILE_SYSTEM_ERRNOS, file_error_text

__all__ = [
    "RunSpec",
    "RunError",
    "ensure_certified",
    "ensure_evaluated",
    "ensure_run",
    "ensure_runs",
    "main_with_errors",
    "read_final",
    "read_metrics",
    "read_class_weight_steps",
    "mean_std",
]


class RunError(RuntimeError):
    """A training run failed or its output files are missing or corrupt (the message names them)."""


@dataclass(frozen=True)
class RunSpec:
    """One ``deep.train`` run.

    Attributes:
        name: readable prefix of the run directory (e.g. ``"pgd-at-s0"``).
        argv: ``deep.train`` options that define the run (never ``--out``, ``--resume``,
            ``--init``, ``--quiet`` or ``--device``: those are added by :func:`ensure_run`).
        init: fine-tune from this run's evaluated checkpoint (``--init``), or None (from scratch).
        download: add ``--download`` (fetch missing data files; not part of :attr:`key`).
    """

    name: str
    argv: tuple[str, ...]
    init: RunSpec | None = field(default=None)
    #: pass ``--download`` (fetch missing data files); not part of the run's identity
    download: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        reserved = {"--out", "--resume", "--init", "--quiet", "--device"}
        bad = [a for a in self.argv if a.split("=")[0] in reserved]
        if bad:
            raise ValueError(f"RunSpec.argv must not contain {sorted(reserved)}; got {bad}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"RunSpec.name must be a plain file name, got {self.name!r}")

    @property
    def key(self) -> str:
        """Directory name: ``<name>-<hash of argv and of the init run's key>``."""
        identity = {"argv": list(self.argv), "init": None if self.init is None else self.init.key}
        identity = json.dumps(identity, sort_keys=True)
        return f"{self.name}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}"


def _error_line(log_path: Path) -> str:
    """deep.train's own message: the argparse ``error:`` line, else the log's last line."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    errors = [ln.split("error: ", 1)[1] for ln in lines if "error: " in ln]
    if errors:
        return errors[-1]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "(empty log)"


def _set_aside(run_dir: Path, runs_dir: Path) -> Path:
    """Move a failed run out of the cache, to ``<runs_dir>/failed/<its key>`` (replacing an
    older failure), so that no later script reuses or resumes it; return where it went."""
    failed = runs_dir / "failed" / run_dir.name
    if failed.exists():
        shutil.rmtree(failed)
    failed.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_dir, failed)
    return failed


def main_with_errors(main: Callable[[], int]) -> int:
    """Run a script's ``main()``; a :class:`RunError` or a file-system error (a folder that
    cannot be created, a full disk; :data:`deep.runtime.FILE_SYSTEM_ERRNOS`) becomes one
    ``error:`` line and status 1, Ctrl-C one line and status 130 (finished runs stay in the run
    cache; rerunning reuses them)."""
    try:
        return main()
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM_ERRNOS:
            raise
        print(f"error: {file_error_text(exc)}", file=sys.stderr, flush=True)
        return 1
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; finished runs are kept and reused when run again", file=sys.stderr,
              flush=True)  # fmt: skip
        return 130


def read_final(run_dir: str | os.PathLike) -> dict:
    """The run's ``final.json`` (RunError naming the file when missing or not valid JSON)."""
    path = Path(run_dir) / "final.json"
    try:
        final = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist: the run has not finished") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not a readable final.json ({exc}); delete the run folder "
                       "to recompute it") from None  # fmt: skip
    if not isinstance(final, dict) or "results" not in final or "classes" not in final:
        raise RunError(f"{path} lacks 'results'/'classes': not a final.json of deep.evaluate")
    return final


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The run's ``metrics.jsonl``: one dict per epoch (RunError naming the file if corrupt)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}, line {number}: not valid JSON ({exc})") from None
    return records


def read_class_weight_steps(run_dir: str | os.PathLike) -> tuple[list[int], list[list[float]]]:
    """Per-batch class weights from ``class_weights.csv``: (epochs (0-based), weights rows)."""
    path = Path(run_dir) / "class_weights.csv"
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise RunError(
            f"cannot read {path}: {exc} (only FAAL/FRL runs log class weights)"
        ) from None
    if not rows or rows[0][:2] != ["step", "epoch"]:
        raise RunError(f"{path}: expected a header 'step,epoch,w0,...'")
    try:
        epochs = [int(r[1]) for r in rows[1:]]
        weights = [[float(v) for v in r[2:]] for r in rows[1:]]
    except (ValueError, IndexError) as exc:
        raise RunError(f"{path}: malformed row ({exc})") from None
    return epochs, weights


def _chosen_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run's final.json was evaluated on (best.pt, else last.pt)."""
    name = Path(str(read_final(run_dir).get("checkpoint") or "best.pt")).name  # the run may move
    path = run_dir / name
    if not path.exists():
        path = run_dir / "last.pt"
    if not path.exists():
        raise RunError(f"{run_dir} holds no checkpoint (best.pt / last.pt) to fine-tune from")
    return path


def ensure_run(
    spec: RunSpec,
    runs_dir: str | os.PathLike,
    *,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Make ``spec``'s run exist under ``runs_dir`` (reuse, resume or train); return its folder.

    Raises RunError (with the end of ``train.log``) when ``deep.train`` exits with an error.
    """
    from deep import train  # heavy import only when a run is needed

    runs_dir = Path(runs_dir)
    base_dir = None
    if spec.init is not None:
        base_dir = ensure_run(spec.init, runs_dir, device=device, log=log)
    run_dir = runs_dir / spec.key
    if (run_dir / "final.json").exists():
        return run_dir
    argv = list(spec.argv)
    if base_dir is not None:
        argv += ["--init", str(_chosen_checkpoint(base_dir))]
    resuming = (run_dir / "last.pt").exists()
    argv += ["--resume", str(run_dir)] if resuming else ["--out", str(run_dir)]
    if spec.download and not resuming:
        argv += ["--download"]
    if device is not None:
        argv += ["--device", device]
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    if log is not None:
        log(f"{'resuming' if resuming else 'training'} {run_dir} ... (progress: {log_path})")
    start = time.perf_counter()
    with log_path.open("a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print("python -m deep.train " + " ".join(argv), flush=True)
        try:
            status = train.main(argv)
        except SystemExit as exc:  # argparse errors (exit status 2)
            status = exc.code if isinstance(exc.code, int) else 2
            print(exc.code if not isinstance(exc.code, int) else "", flush=True)
        except (KeyboardInterrupt, RunError):
            raise
        except Exception as exc:  # noqa: BLE001 (reported with the run and its log)
            raise RunError(
                f"deep.train raised {type(exc).__name__}: {exc} for {run_dir} (log: {log_path})"
            ) from exc
    if status == 130:
        raise KeyboardInterrupt
    if status != 0 or not (run_dir / "final.json").exists():
        message = _error_line(log_path)
        kept = _set_aside(run_dir, runs_dir)
        raise RunError(
            f"deep.train failed for {spec.name} (exit status {status}): {message} "
            f"(log: {kept / 'train.log'})"
        )
    if log is not None:
        log(f"  done in {time.perf_counter() - start:.1f}s")
    return run_dir


def ensure_runs(
    specs: Sequence[RunSpec],
    runs_dir: str | os.PathLike,
    *,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
) -> list[Path]:
    """:func:`ensure_run` for each spec, in order; their folders."""
    return [ensure_run(s, runs_dir, device=device, log=log) for s in specs]


def _run_cli_once(
    command: str,
    main: Callable[[list[str]], object],
    argv: list[str],
    out: Path,
    result: Path,
    what: str,
    log: Callable[[str], None] | None,
) -> dict:
    """Run ``main(argv)`` (console output to ``<out>/<command>.log``) unless ``result`` exists;
    return ``result`` parsed (RunError naming the log or the file when either fails)."""
    name = command.rsplit(".", 1)[-1]
    if not result.exists():
        out.mkdir(parents=True, exist_ok=True)
        if log is not None:
            log(f"{what} ...")
        log_path = out / f"{name}.log"
        with log_path.open("a") as fh, contextlib.redirect_stdout(fh), \
                contextlib.redirect_stderr(fh):  # fmt: skip
            print(f"python -m {command} " + " ".join(argv), flush=True)
            try:
                status = main(argv)
                status = status if isinstance(status, int) else 0  # deep.evaluate: its results
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 2
        if status == 130:
            raise KeyboardInterrupt
        if status != 0 or not result.exists():
            raise RunError(
                f"{command} failed for {out.parent.name} (exit status {status}): "
                f"{_error_line(log_path)} (log: {log_path})"
            )
    try:
        return json.loads(result.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{result} is not readable JSON ({exc}); delete {out} to "
                       "recompute it") from None  # fmt: skip


def ensure_certified(
    run_dir: str | os.PathLike,
    options: Sequence[str],
    *,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """``certify.json`` of ``python -m deep.certify`` on the run's evaluated checkpoint.

    ``options``: deep.certify options (``--dataset``, ``--sigma``, ``--n``, ...; not
    ``--checkpoint``, ``--out`` or ``--device``). The result lives in
    ``<run_dir>/certify-<hash of options>/`` and is reused when its certify.json exists.
    """
    from deep import certify  # heavy import only when a certification is needed

    run_dir = Path(run_dir)
    digest = hashlib.sha1(json.dumps(list(options)).encode()).hexdigest()[:10]
    out = run_dir / f"certify-{digest}"
    argv = ["--checkpoint", str(_chosen_checkpoint(run_dir)), "--out", str(out), *options]
    argv += ["--quiet"] + (["--device", device] if device is not None else [])
    what = f"certifying {run_dir.name} ({' '.join(options)})"
    return _run_cli_once("deep.certify", certify.main, argv, out, out / "certify.json", what, log)


def _data_device_options(data_dir: str | os.PathLike | None, device: str | None) -> list[str]:
    """``--data-dir`` / ``--device`` options for a deep CLI (none for None)."""
    options = [] if data_dir is None else ["--data-dir", str(data_dir)]
    return options + ([] if device is None else ["--device", device])


def ensure_evaluated(
    run_dir: str | os.PathLike,
    attacks: Sequence[str],
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """``final.json`` of ``python -m deep.evaluate --attacks <attacks>`` on the run's evaluated
    checkpoint, on the same test images and attack seed as the run's own ``final.json`` (its
    ``n_per_class`` and ``seed``): attacks the run did not evaluate at the end of training, e.g.
    CW-100 for FAAL supp. Fig. 4. Cached in ``<run_dir>/evaluate-<attacks>/``.
    """
    from deep import evaluate  # heavy import only when an evaluation is needed
    from deep.results import RESULT_KEYS

    run_dir = Path(run_dir)
    final = read_final(run_dir)
    out = run_dir / f"evaluate-{'-'.join(attacks)}"
    argv = ["--checkpoint", str(_chosen_checkpoint(run_dir)), "--attacks", ",".join(attacks),
            "--seed", str(int(final.get("seed", 0))), "--out", str(out), "--quiet"]  # fmt: skip
    if final.get("n_per_class"):
        argv += ["--n-per-class", str(int(final["n_per_class"]))]
    argv += _data_device_options(data_dir, device)
    what = f"evaluating {run_dir.name} ({', '.join(attacks)})"
    result = _run_cli_once("deep.evaluate", evaluate.main, argv, out, out / "final.json", what, log)
    wanted = {RESULT_KEYS.get(a, a) for a in attacks}
    if not isinstance(result, dict) or not wanted <= set(result.get("results", {})):
        raise RunError(f"{out / 'final.json'} lacks the results {list(attacks)}; delete {out} "
                       "to recompute it")  # fmt: skip
    return result


def ensure_cifar10c_evaluated(
    run_dir: str | os.PathLike,
    cifar10c_dir: str | os.PathLike,
    corruptions: Sequence[str],
    severity: int,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """``final.json`` of ``python -m deep.evaluate --attacks clean --corruptions ...`` on the
    run's evaluated checkpoint: clean class-wise accuracy under CIFAR-10-C ``corruptions`` at one
    ``severity`` (FAAL Table 1's corruption columns). Cached in
    ``<run_dir>/cifar10c-severity<severity>/``.
    """
    from deep import evaluate  # heavy import only when an evaluation is needed

    run_dir = Path(run_dir)
    out = run_dir / f"cifar10c-severity{severity}"
    argv = ["--checkpoint", str(_chosen_checkpoint(run_dir)), "--dataset", "cifar10",
            "--attacks", "clean", "--cifar10c-dir", str(cifar10c_dir),
            "--corruptions", ",".join(corruptions), "--severities", str(severity),
            "--out", str(out), "--quiet"]  # fmt: skip
    argv += _data_device_options(data_dir, device)
    what = f"CIFAR-10-C evaluation of {run_dir}"
    result = _run_cli_once("deep.evaluate", evaluate.main, argv, out, out / "final.json", what, log)
    if not isinstance(result, dict) or not isinstance(result.get("cifar10c"), dict):
        raise RunError(f"{out / 'final.json'} lacks the CIFAR-10-C results; delete {out} "
                       "to recompute it")  # fmt: skip
    return result


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)
