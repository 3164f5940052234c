"""The result files of every command that evaluates a model: ``final.json`` and ``final.csv``.

One contract for ``deep.train`` and ``deep.evaluate`` (and any other tool that reports class-wise
accuracies): :func:`build_final_json` makes the dict, :func:`write_final_json` writes both files
atomically with the usual file mode (0644 under the common umask). Keys::

    {"dataset", "model", "norm" ("linf" | "l2"), "eps", "step_size", "classes": [names],
     "results": {"clean" | "pgd20" | "cw20" | "autoattack": {"per_class", "average", "worst",
                 "counts"}},
     "frl_errors": {"standard" | "boundary" | "robust": {...}},     # when clean and pgd20 ran
     "cifar10c": {corruption: {severity: {...}}},                    # when evaluated
     "split": "test", "n_per_class": N | null, "seed": S, "checkpoint": "path/to/file.pt",
     "seconds": wall time of the evaluation, ...extra keys (e.g. "method")}

``split``, ``n_per_class``, ``seed``, ``checkpoint`` and ``seconds`` are required arguments, so
every writer states them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from deep.attacks import check_norm
from deep.checkpoint import naming_file, new_file_mode
from deep.metrics import frl_errors

__all__ = [
    "RESULT_KEYS",
    "SPLITS",
    "atomic_write_text",
    "build_final_json",
    "final_csv_text",
    "write_final_json",
]

#: CLI attack name -> key under final.json "results" (also the order results are listed in).
RESULT_KEYS = {
    "clean": "clean",
    "pgd20": "pgd20",
    "cw20": "cw20",
    "cw100": "cw100",
    "aa": "autoattack",
}

#: Data splits a result can be computed on.
SPLITS = ("test", "val", "train")


def _check_entry(entry: Mapping, where: str, num_classes: int) -> None:
    if not isinstance(entry, Mapping) or not {"per_class", "average", "worst"} <= set(entry):
        raise ValueError(f"{where} must be a dict with keys per_class, average, worst")
    if len(entry["per_class"]) != num_classes:
        raise ValueError(
            f"{where}['per_class'] has {len(entry['per_class'])} entries, expected {num_classes}"
        )


def _check_contract(split, n_per_class, seed, checkpoint, seconds) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n_per_class is not None and (
        isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1
    ):
        raise ValueError(f"n_per_class must be None or an integer >= 1, got {n_per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(checkpoint, str | os.PathLike) or not os.fspath(checkpoint):
        raise ValueError(f"checkpoint must be the checkpoint's path, got {checkpoint!r}")
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")


def build_final_json(
    *,
    dataset: str,
    model: str,
    eps: float,
    classes: Sequence[str],
    results: Mapping[str, Mapping],
    split: str,
    n_per_class: int | None,
    seed: int,
    checkpoint: str | os.PathLike,
    seconds: float,
    step_size: float | None = None,
    cifar10c: Mapping | None = None,
    norm: str = "linf",
    **extra,
) -> dict:
    """The ``final.json`` dict (stable keys; accuracies in [0, 1]; see the module docstring).

    Each result is ``{"per_class", "average" (mean over classes), "worst" (min over classes),
    "counts"}``; only the attacks that ran appear, in the order clean, pgd20, cw20, autoattack;
    ``"frl_errors"`` (:func:`deep.metrics.frl_errors`) appears when both ``clean`` and ``pgd20``
    ran. ``norm`` is the threat model of the attacks ("linf" or "l2"). ``split`` is the data
    split, ``n_per_class`` the stratified subset size (None: all of it), ``checkpoint`` the
    evaluated file's path and ``seconds`` the evaluation's wall time.
    ``extra`` keywords (e.g. ``method``) are added as top-level keys.

    Args:
        dataset: the data set's name.
        model: the architecture's name.
        eps: the attacks' budget.
        classes: the class names.
        results: ``{result key: classwise_accuracy(...)}`` (keys as in ``RESULT_KEYS``).
        split: the evaluated split (``"test"``).
        n_per_class: the stratified subset size (None: the whole split).
        seed: the attacks' seed.
        checkpoint: the evaluated checkpoint's path.
        seconds: the evaluation's wall time.
        step_size: the attacks' step.
        cifar10c: CIFAR-10-C results (:func:`deep.evaluate.evaluate_cifar10c`), if any.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The dict written to ``final.json``.

    Raises:
        ValueError: for unknown result keys or entries that break the contract.
    """
    _check_contract(split, n_per_class, seed, checkpoint, seconds)
    classes = [str(c) for c in classes]
    known = list(RESULT_KEYS.values())
    unknown = [k for k in results if k not in known]
    if unknown:
        raise ValueError(f"results: unknown keys {unknown}; allowed {', '.join(known)}")
    for key, entry in results.items():
        _check_entry(entry, f"results[{key!r}]", len(classes))
    final: dict = {
        "dataset": str(dataset),
        "model": str(model),
        "norm": check_norm(norm),
        "eps": float(eps),
    }
    if step_size is not None:
        final["step_size"] = float(step_size)
    final["classes"] = classes
    final["results"] = {k: dict(results[k]) for k in known if k in results}
    if "clean" in results and "pgd20" in results:
        final["frl_errors"] = frl_errors(results)
    if cifar10c is not None:
        for corruption, by_severity in cifar10c.items():
            for severity, entry in by_severity.items():
                _check_entry(entry, f"cifar10c[{corruption!r}][{severity!r}]", len(classes))
        final["cifar10c"] = {
            str(c): {str(s): dict(e) for s, e in by_sev.items()} for c, by_sev in cifar10c.items()
        }
    final.update(
        split=split,
        n_per_class=n_per_class,
        seed=int(seed),
        checkpoint=os.fspath(checkpoint),
        seconds=round(float(seconds), 3),
    )
    final.update(extra)
    return final


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + ``os.replace``), usual file mode;
    a file-system error names ``path`` (:func:`deep.checkpoint.naming_file`)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        named = naming_file(exc, path)
        if named is exc:
            raise
        raise named from exc


def final_csv_text(final: Mapping) -> str:
    """``final.csv``: one row per (result, class): ``result,kind,class_index,class,value,count``.

    ``result`` is a results key (``clean``, ``pgd20``, ...), ``frl_<standard|boundary|robust>``
    (kind ``error``) or ``cifar10c/<corruption>/<severity>``; ``value`` is in [0, 1].
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["result", "kind", "class_index", "class", "value", "count"])
    classes = final["classes"]

    def rows(result: str, kind: str, entry: Mapping) -> None:
        counts = entry.get("counts") or [""] * len(classes)
        for c, (name, value, count) in enumerate(zip(classes, entry["per_class"], counts)):
            writer.writerow([result, kind, c, name, "" if value is None else repr(value), count])

    for key, entry in final["results"].items():
        rows(key, "accuracy", entry)
    for key, entry in final.get("frl_errors", {}).items():
        rows(f"frl_{key}", "error", entry)
    for corruption, by_severity in final.get("cifar10c", {}).items():
        for severity, entry in by_severity.items():
            rows(f"cifar10c/{corruption}/{severity}", "accuracy", entry)
    return buf.getvalue()


def write_final_json(out_dir: str | os.PathLike, final: Mapping | None = None, /, **fields) -> Path:
    """Write ``final.json`` and ``final.csv`` into ``out_dir`` (atomically); return the JSON path.

    Either pass a dict from :func:`build_final_json`, or its keyword arguments to build it here.
    JSON is strict (a NaN raises). ``final.csv`` is written first and ``final.json`` last.
    """
    if final is None:
        final = build_final_json(**fields)
    elif fields:
        raise ValueError("write_final_json takes either a final dict or its fields, not both")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "final.json"
    text = json.dumps(final, indent=2, allow_nan=False) + "\n"  # a NaN raises before any write
    atomic_write_text(out_dir / "final.csv", final_csv_text(final))
    atomic_write_text(path, text)  # last: an existing final.json means both files are complete
    return path


def check_not_a_training_run(out_dir: str | os.PathLike) -> None:
    """Raise ValueError if ``out_dir`` holds a training run (its ``last.pt``): an evaluation
    written there would replace the run's own ``final.json``, the test results of the training."""
    out = Path(out_dir)
    if (out / "last.pt").exists():
        raise ValueError(
            f"{out} holds a training run (last.pt): writing there would replace its final.json; "
            f"choose another --out, e.g. {out / 'evaluation'}"
        )
