"""Checksum-verified, atomic download and unpacking of the official data set files.

Used by :func:`deep.data.download_dataset`.  Guarantees: a file appears under its final name only
after its MD5 matched the published one (it is streamed to a temporary file in the same folder, then
``os.replace``-d); an archive is unpacked into a temporary folder that is renamed into place; any
failure (network error, short read, checksum mismatch, interruption) removes the temporary file or
folder and raises :class:`DatasetError` saying what happened. This module imports nothing from
:mod:`deep.data` (which imports it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

__all__ = ["DatasetError", "RemoteFile", "download_verified", "extract_archive", "fetch_files"]

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0


class DatasetError(RuntimeError):
    """A data set's files are missing, truncated or corrupt; the message names file(s) and fix."""


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its URL, published MD5, and the folder it unpacks to (archives only)."""

    url: str
    md5: str
    extracts_to: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def file_md5(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_files(
    files: Sequence[RemoteFile],
    data_dir: Path,
    *,
    url_base: str | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> None:
    """Download every file into ``data_dir`` (skipping ones already present and verified) and
    unpack archives.  ``url_base`` replaces the folder part of each URL; ``checksums`` overrides
    MD5s by file name.
    """
    checksums = dict(checksums or {})
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create the data folder {data_dir}: {err}") from err
    for remote in files:
        name = remote.filename
        md5 = checksums.get(name, remote.md5)
        url = remote.url if url_base is None else url_base.rstrip("/") + "/" + name
        if remote.extracts_to is not None and (data_dir / remote.extracts_to).is_dir():
            continue  # unpacked earlier (unpacking renames a complete folder into place)
        target = data_dir / name
        if not (target.is_file() and file_md5(target) == md5):
            download_verified(url, target, md5, progress=progress)
        if remote.extracts_to is not None:
            extract_archive(target, data_dir, remote.extracts_to)


def download_verified(url: str, target: Path, md5: str, *, progress: bool = False) -> None:
    """Stream ``url`` to ``target`` via a temporary file; keep it only if its MD5 equals ``md5``."""
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as err:
        raise DatasetError(f"cannot write to {target.parent}: {err}") from err
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            expected_bytes = int(length) if length is not None else None
            with tqdm(
                total=expected_bytes,
                unit="B",
                unit_scale=True,
                desc=target.name,
                disable=not progress,
            ) as bar:
                for chunk in iter(lambda: resp.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected_bytes is not None and received != expected_bytes:
            raise DatasetError(
                f"download of {url} was interrupted after {received} of {expected_bytes} bytes; "
                f"nothing was written to {target}"
            )
        found = digest.hexdigest()
        if found != md5:
            raise DatasetError(
                f"checksum mismatch for {url}: MD5 {found}, expected {md5}; the file was discarded "
                f"and nothing was written to {target}"
            )
        os.replace(tmp, target)
    except DatasetError:
        tmp.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"download of {url} failed ({type(err).__name__}: {err}); "
            f"nothing was written to {target}"
        ) from err
    except BaseException:  # KeyboardInterrupt and the like: clean up, then let it propagate
        tmp.unlink(missing_ok=True)
        raise


def extract_archive(archive: Path, data_dir: Path, folder: str) -> None:
    """Unpack the tar ``archive``; atomically move its top-level ``folder`` into ``data_dir``."""
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extract", dir=data_dir))
    except OSError as err:
        raise DatasetError(f"cannot write to {data_dir}: {err}") from err
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                _extract_safely(tar, tmp_dir)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DatasetError(
                f"{archive}: cannot unpack the archive ({type(err).__name__}: {err})"
            ) from err
        unpacked = tmp_dir / folder
        if not unpacked.is_dir():
            raise DatasetError(f"{archive}: the archive holds no top-level folder {folder}/")
        os.replace(unpacked, data_dir / folder)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _extract_safely(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract refusing absolute paths, ``..``, links and device files (tarfile's "data" filter)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():  # Python without extraction filters
        path = Path(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"refusing to extract {member.name!r}")
    tar.extractall(dest)
