"""Checkpoint files: atomic writes, loading with clear errors, rebuilding a model.

Format (a dict): ``{"model_config": {...}, "model": state_dict, ...anything else}``, where
``model_config`` is the ``model.model_config`` of :func:`deep.models.build_model`. Files are read
with ``torch.load(weights_only=True)``, which accepts tensors, dicts, lists, tuples, strings,
numbers and ``None`` but executes no pickled code; :func:`rng_state` stores random-number-generator
states in that form, so a complete training state round-trips without ``weights_only=False``.

**Integrity.** :func:`save_atomic` stores the SHA-256 digest of the serialized file with it, in the
comment of the zip archive that ``torch.save`` writes (the last bytes of the file; ``torch.load``
ignores it), and marks the dict with ``"integrity": "sha256"``. :func:`load_checkpoint` checks the
digest before unpickling anything: a changed byte anywhere in the file (disk errors, partial copies,
sync tools) is a :class:`CheckpointError` naming the file. A file without a digest (written by an
older version, or by ``torch.save`` itself) still loads, with a one-line note on stderr.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import struct
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deep.models import CheckpointMismatchError, build_model, load_model_state

__all__ = [
    "CheckpointError",
    "INTEGRITY_KEY",
    "load_checkpoint",
    "model_from_checkpoint",
    "naming_file",
    "new_file_mode",
    "resolve_checkpoint",
    "rng_state",
    "save_atomic",
    "serialize_with_digest",
    "set_rng_state",
    "verify_digest",
]

_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")

#: Key that marks a checkpoint dict written with a digest (so a damaged digest is not mistaken for
#: an older file without one).
INTEGRITY_KEY = "integrity"
_DIGEST_PREFIX = b"robust-fairness sha256 "
_DIGEST_COMMENT_LEN = len(_DIGEST_PREFIX) + 64  # the prefix and 64 hex digits
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record (22 bytes, then the comment)
_EOCD_LEN = 22
_noted_without_digest: set[str] = set()


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, truncated, or not in the expected format."""


def new_file_mode() -> int:
    """The mode an ordinary new file gets (0o666 less the umask; 0o644 under the usual umask).

    ``tempfile.mkstemp`` creates 0o600 files; atomic writers chmod their temporary file to this so
    the result is as readable as any other file the user writes.

    Returns:
        The permission bits, an int.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def naming_file(exc: BaseException, path: str | os.PathLike) -> BaseException:
    """The error to raise when writing ``path`` failed with ``exc``: the same error naming ``path``
    when it is an ``OSError`` that names no file (a write to a full disk raises ``ENOSPC`` without
    one), else ``exc`` itself.

    Args:
        exc: the exception the write raised.
        path: the file being written.

    Returns:
        An ``OSError`` of ``exc``'s type, errno and reason with ``filename`` set to ``path``, or
        ``exc`` unchanged.
    """
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror, os.fspath(path))
    return exc


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically.

    The object is written to a temporary file in the same directory, flushed and fsynced, then
    moved over ``path`` with ``os.replace``; readers see either the old file or the complete new
    one, never a partial file. On any failure the temporary file is removed and the error re-raised
    (a file-system error naming ``path`` when it named no file, see :func:`naming_file`).
    The parent directory is created if needed. The file carries its SHA-256 digest
    (:func:`serialize_with_digest`), which :func:`load_checkpoint` verifies.

    Args:
        obj: what to save (a checkpoint dict).
        path: the destination file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(serialize_with_digest(obj))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        named = naming_file(exc, path)
        if named is exc:
            raise
        raise named from exc
    _fsync_directory(path.parent)


def serialize_with_digest(obj: Any) -> bytes:
    """``torch.save(obj)``'s bytes with their SHA-256 digest stored as the zip archive's comment.

    A dict gets ``"integrity": "sha256"`` (a new dict; ``obj`` is not changed). The digest covers
    every byte before the comment, the comment's length field included, and the comment holds the
    digest itself, so a change to any byte of the file is detected by :func:`verify_digest`.

    Args:
        obj: what to save.

    Returns:
        The file's bytes.
    """
    if isinstance(obj, dict):
        obj = {**obj, INTEGRITY_KEY: "sha256"}
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    if data[-_EOCD_LEN : -_EOCD_LEN + 4] != _EOCD or data[-2:] != b"\x00\x00":
        raise RuntimeError("torch.save wrote no zip archive without a comment; cannot add a digest")
    head = data[:-2] + struct.pack("<H", _DIGEST_COMMENT_LEN)
    return head + _DIGEST_PREFIX + hashlib.sha256(head).hexdigest().encode("ascii")


def verify_digest(data: bytes, source: str) -> bool | None:
    """Check the digest of a file's bytes written by :func:`serialize_with_digest`.

    True: the digest matches. None: the file ends without a digest comment (an older file, or a
    damaged comment: :func:`load_checkpoint` tells the two apart by :data:`INTEGRITY_KEY`). Raises
    :class:`CheckpointError` naming ``source`` when a digest is there and does not match.

    Args:
        data: the file's bytes.
        source: how to name the file in an error message.

    Returns:
        True (the digest matches) or None (no digest).
    """
    n = _DIGEST_COMMENT_LEN
    if len(data) < n + _EOCD_LEN:
        return None
    head, comment = data[:-n], data[-n:]
    if (
        not comment.startswith(_DIGEST_PREFIX)
        or head[-_EOCD_LEN : -_EOCD_LEN + 4] != _EOCD
        or head[-2:] != struct.pack("<H", n)
    ):
        return None
    if hashlib.sha256(head).hexdigest().encode("ascii") != comment[len(_DIGEST_PREFIX) :]:
        raise CheckpointError(_changed_message(source))
    return True


def _changed_message(source: str) -> str:
    return (
        f"{source} has changed since it was written (its SHA-256 digest does not match: a disk "
        "error, a partial copy or an edit); do not use it: restore it from a copy, or rerun the "
        "command that wrote it"
    )


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort; not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False
) -> dict:
    """Load a checkpoint dict written by :func:`save_atomic` (or any ``torch.save`` of a dict).

    Reads with ``weights_only=True``. ``trusted=True`` uses ``weights_only=False`` instead, which
    can run arbitrary code from the file: only for files from a source you trust that hold other
    Python objects. The file's SHA-256 digest (:func:`serialize_with_digest`) is verified before
    anything is unpickled; a file without one (an older version's) loads with a one-line note on
    stderr. Raises :class:`CheckpointError` naming the file if it is missing, changed since it was
    written, not a torch file, truncated, holds objects outside the safe set, or does not hold a
    dict.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (a device or a mapping).
        trusted: load with ``weights_only=False`` (only for files from a source you trust).

    Returns:
        The checkpoint dict.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a file")
    data = path.read_bytes()
    verified = verify_digest(data, f"checkpoint file {path}")
    if not _looks_like_torch_file(data):
        raise CheckpointError(
            f"checkpoint file {path} is not a torch file (torch.save writes a zip archive; this "
            "is something else, or truncated)"
        )
    try:
        obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and not trusted:
            raise CheckpointError(
                f"checkpoint file {path} holds Python objects outside the safe set "
                "(tensors, dicts, lists, strings, numbers), so it was not written by this "
                "package; if you trust its source, deep.checkpoint.load_checkpoint(path, "
                f"trusted=True) reads it in Python. Detail: {_first_line(exc)}"
            ) from exc
        raise CheckpointError(
            f"checkpoint file {path} is not a readable torch file (corrupt or truncated): {exc}"
        ) from exc
    except Exception as exc:  # the unpickler raises many types on garbage (IndexError, KeyError...)
        raise CheckpointError(
            f"checkpoint file {path} is not a readable torch file (corrupt or truncated): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint file {path} holds a {type(obj).__name__}, expected a dict"
        )
    marked = obj.pop(INTEGRITY_KEY, None) is not None
    if verified is None and marked:  # written with a digest that is now damaged or cut off
        raise CheckpointError(_changed_message(f"checkpoint file {path}"))
    if verified is None and str(path) not in _noted_without_digest:
        _noted_without_digest.add(str(path))
        print(
            f"note: checkpoint file {path} has no integrity digest (written by an older version); "
            "loaded unverified",
            file=sys.stderr,
            flush=True,
        )
    return obj


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself for a file; a run directory's ``best.pt`` for a folder.

    Raises ValueError naming the path when there is no such file, or the folder holds no
    ``best.pt`` (listing the checkpoints it does hold).

    Args:
        path: a checkpoint file or a ``deep.train`` run directory.

    Returns:
        The checkpoint file's path.
    """
    path = Path(path)
    if path.is_dir():
        best = path / "best.pt"
        if best.is_file():
            return best
        held = sorted(p.name for p in path.glob("*.pt"))
        hint = f"; it holds {', '.join(held)}: name one of them" if held else ""
        raise ValueError(f"{path} is a folder without best.pt{hint}")
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _looks_like_torch_file(data: bytes) -> bool:
    """A zip archive (``torch.save``'s format) or a legacy pickle stream (starts with 0x80)."""
    try:
        return zipfile.is_zipfile(io.BytesIO(data)) or data[:1] == b"\x80"
    except zipfile.BadZipFile:  # e.g. a damaged end record that claims several disks
        return False


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    informative = [ln for ln in lines if not ln.startswith("Check the documentation")]
    return (informative or lines or [type(exc).__name__])[0]


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def model_from_checkpoint(
    path_or_dict: str | os.PathLike | Mapping,
    *,
    map_location: Any = "cpu",
    model_config: Mapping | None = None,
) -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint; returns ``(model, checkpoint_dict)``.

    The architecture comes from ``model_config`` if given, else from the checkpoint's
    ``"model_config"``; it is built with ``build_model(**model_config)`` and loaded with
    :func:`deep.models.load_model_state` (``module.`` / ``_orig_mod.`` prefixes accepted). The
    weights are read from ``"model"`` (or ``"state_dict"`` / ``"model_state_dict"``); a raw state
    dict is accepted when ``model_config`` is given. The model is returned in eval mode, moved to
    ``map_location`` when that is a device. Errors name the file: :class:`CheckpointError` for a
    missing configuration or weights, :class:`deep.models.CheckpointMismatchError` for weights that
    do not fit the architecture.

    Args:
        path_or_dict: a checkpoint file, or an already loaded checkpoint dict.
        map_location: where to load the tensors (and the model, when it is a device).
        model_config: the architecture (``build_model``'s arguments), overriding the
            checkpoint's own.

    Returns:
        ``(model, checkpoint_dict)``, the model in eval mode.
    """
    if isinstance(path_or_dict, Mapping):
        ckpt = dict(path_or_dict)
        source = "the given checkpoint dict"
    else:
        ckpt = load_checkpoint(path_or_dict, map_location=map_location)
        source = f"checkpoint file {Path(path_or_dict)}"

    state = next((ckpt[k] for k in _STATE_DICT_KEYS if isinstance(ckpt.get(k), Mapping)), None)
    if state is None and _is_state_dict(ckpt):
        state = ckpt
    if state is None:
        raise CheckpointError(
            f"{source} holds no model weights (expected a key among {_STATE_DICT_KEYS} or a raw "
            f"state dict); its keys are {sorted(map(str, ckpt))[:20]}"
        )
    config = model_config if model_config is not None else ckpt.get("model_config")
    if not isinstance(config, Mapping):
        raise CheckpointError(
            f"{source} has no 'model_config'; pass model_config={{'name': ..., 'num_classes': ...}}"
        )
    try:
        model = build_model(**dict(config))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{source} has an invalid model_config {dict(config)}: {exc}"
        ) from exc
    try:
        load_model_state(model, state)
    except CheckpointMismatchError as exc:
        raise exc.with_source(source) from None
    if isinstance(map_location, str | torch.device):
        model = model.to(map_location)
    model.eval()
    return model, ckpt


def rng_state() -> dict:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators.

    Held only in types that ``torch.load(weights_only=True)`` reads (NumPy's key array as a tensor),
    so it can be stored in a checkpoint; restore with :func:`set_rng_state`.

    Returns:
        ``{"python", "numpy", "torch"}`` (and ``"cuda"`` when CUDA is available).
    """
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is what is saved)
    state = {
        "python": random.getstate(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore generator states saved by :func:`rng_state` (CUDA only where present).

    Args:
        state: the dict :func:`rng_state` returned.
    """
    try:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npd = state["numpy"]
        np.random.set_state(  # noqa: NPY002
            (
                npd["algorithm"],
                npd["keys"].cpu().numpy().astype(np.uint32),
                int(npd["pos"]),
                int(npd["has_gauss"]),
                float(npd["cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"].cpu())
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"RNG state is incomplete or malformed: {exc!r}") from exc
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
