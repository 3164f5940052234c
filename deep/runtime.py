"""Run-time conventions shared by every command that runs a model: CPU threads and Ctrl-C.

* **Threads** (``--threads``): :func:`add_threads_option` adds the option and
  :func:`apply_thread_policy` applies it. Given explicitly, ``torch.set_num_threads(N)``. Not
  given: one thread for the small CNN on the CPU (its convolutions are too small to gain from
  intra-op threads; on a busy 2-core machine two threads made a PGD step ~50x slower than one, and
  ``deep.evaluate``'s quick start took 896 s instead of 30 s), torch's own choice otherwise.
* **Ctrl-C**: :func:`exit_on_interrupt` turns a ``KeyboardInterrupt`` into one line on stderr and
  exit status 130 (128 + SIGINT), without a traceback from deep inside an attack library;
  :func:`all_or_nothing` removes what a command wrote into its output folder when it does not
  finish, so a folder holds complete outputs or none.
* **Errors**: :class:`CLIParser` prints an argparse error first, then a one-line usage and
  "see --help" (not the full usage), and gives every command ``--version`` (which names the
  kind of CPU, :func:`cpu_kind`, as CPU runs are bitwise equal only on one kind);
  :func:`check_output_dir` refuses an ``--out`` that is a file, lies under a file or is not
  writable, before any work; :func:`exit_on_file_error` turns a file-system error met later (a
  folder that cannot be created, a full disk, a file that cannot be written) into one line naming
  the file and exit status 1, without a traceback.
* **Listings**: :func:`end_quietly_on_closed_pipe` lets a command that only prints (``--status``,
  ``list``) end silently when its reader goes away (``| head``), as Unix tools do.
* **Budgets**: :func:`budget_value` is the argparse type of every eps, step and sigma option: a
  number or a fraction ``a/b`` (``8/255``).

Usage in a command-line tool::

    parser = CLIParser(...)
    add_threads_option(parser)
    args = parser.parse_args()
    with exit_on_interrupt("evaluation"):
        apply_thread_policy(args.threads, device, model_name)
        ...
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.metadata
import math
import os
import platform
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so --help and the help formatter stay light
    import torch

__all__ = [
    "CLIParser",
    "DefaultsHelpFormatter",
    "FILE_SYSTEM_ERRNOS",
    "INTERRUPTED_EXIT",
    "SINGLE_THREAD_MODELS",
    "THREADS_HELP",
    "add_threads_option",
    "all_or_nothing",
    "apply_thread_policy",
    "budget_value",
    "check_output_dir",
    "cpu_kind",
    "default_threads",
    "end_quietly_on_closed_pipe",
    "exit_on_file_error",
    "exit_on_interrupt",
    "file_error_text",
    "format_budget",
    "output_dir_problem",
    "resolve_device",
]

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT = 130

_FILE_SYSTEM_ERRNO_NAMES = (
    "EACCES EPERM ENOENT ENOTDIR EISDIR EROFS ENOSPC EDQUOT ENAMETOOLONG ELOOP EEXIST EIO EFBIG "
    "EMFILE ENFILE"
)
#: The ``errno`` values of file-system errors that :func:`exit_on_file_error` reports in one line:
#: the user's environment, not the program, has to change (a path, a permission, free space).
FILE_SYSTEM_ERRNOS = frozenset(
    getattr(errno, name) for name in _FILE_SYSTEM_ERRNO_NAMES.split() if hasattr(errno, name)
)

#: Models that run fastest with one intra-op thread on the CPU.
SINGLE_THREAD_MODELS = frozenset({"small-cnn"})

THREADS_HELP = (
    "torch CPU threads (default: 1 for the small CNN on the CPU, where more threads only slow it "
    "down; torch's choice otherwise)"
)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows ``(default: X)`` only where it says something: not for options whose
    default is None or False (their help says what happens) nor where the help already names the
    default. A list default reads as it is typed: space-separated for ``nargs="+"``/``"*"``
    options, comma-separated otherwise."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        quiet = default is None or default is False or default == argparse.SUPPRESS
        if quiet or "default" in text:
            return text
        if isinstance(default, (list, tuple)):
            sep = " " if action.nargs in ("+", "*") or isinstance(action.nargs, int) else ","
            shown = sep.join(str(v) for v in default) or "none"
            return f"{text} (default: {shown})".replace("%", "%%")
        return super()._get_help_string(action)


def package_version() -> str | None:
    """The installed version of robust-fairness (None when the package is not installed, e.g.
    when run from a checkout without ``pip install``)."""
    try:
        return importlib.metadata.version("robust-fairness")
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_kind() -> str:
    """The kind of CPU, as far as it changes float results: torch's CPU capability (``AVX512``,
    ``AVX2``, ...), with ``+AMX`` when the CPU has AMX tiles (the ``amx_tile`` flag of
    ``/proc/cpuinfo``, with which oneDNN chooses other convolution kernels; nothing is added where
    that file is missing). Two CPUs of one kind give bitwise equal CPU runs; CPUs of two kinds sum
    in another order. Imports torch."""
    import torch

    kind = torch.backends.cpu.get_cpu_capability()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return kind + ("+AMX" if "amx_tile" in flags else "")


def version_line() -> str:
    """``robust-fairness 0.1.0 (torch 2.13.0+cpu, CUDA none, CPU AVX512, Python 3.11.7)``: what
    a bug report needs to name (the CPU by :func:`cpu_kind`). Imports torch."""
    import torch

    cuda = torch.version.cuda or "none"
    return (
        f"robust-fairness {package_version() or 'unknown (not installed)'} "
        f"(torch {torch.__version__}, CUDA {cuda}, CPU {cpu_kind()}, "
        f"Python {platform.python_version()})"
    )


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_line` and exit 0 (torch imported only then)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=None, help=None):
        # ``default`` is argparse's ``argument_default`` (e.g. SUPPRESS); --version never has one
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())  # stdout, as argparse's own "version" action
        parser.exit(0)


class CLIParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors come first: ``PROG: error: MESSAGE``, then one line
    of usage (the required options) and "see --help", instead of the full usage before the error.
    ``--help`` is unchanged; ``--version`` prints the package, torch, CUDA and Python versions
    (:func:`version_line`); the help formatter defaults to :class:`DefaultsHelpFormatter`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        if self.add_help:
            self.add_argument(
                "--version", action=_VersionAction,
                help="print the versions of robust-fairness, torch, CUDA and Python, and exit",
            )  # fmt: skip

    def short_usage(self) -> str:
        """``usage: PROG REQUIRED... [options]; see PROG --help`` on one line."""
        parts = [self.prog]
        for action in self._actions:
            if action.option_strings and action.required:
                metavar = action.metavar or action.dest.upper()
                parts.append(f"{action.option_strings[-1]} {metavar}")
            elif not action.option_strings and action.nargs != argparse.PARSER:
                parts.append(str(action.metavar or action.dest))
        return f"usage: {' '.join(parts)} [options]; see {self.prog} --help"

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        self.exit(2, f"{self.prog}: error: {message}\n{self.short_usage()}\n")


def budget_value(text: str) -> float:
    """argparse type of an eps, step or sigma: a number (``0.03``, ``1e-2``) or a fraction ``a/b``
    (``8/255``), returned as a float; anything else is an ``ArgumentTypeError``."""
    cleaned = str(text).strip()
    try:
        if "/" in cleaned:
            num, den = (part.strip() for part in cleaned.split("/"))  # ValueError unless 2
            value = float(Fraction(num) / Fraction(den))
        else:
            value = float(cleaned)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number or a fraction like 8/255, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def format_budget(value: float) -> str:
    """``0.0313725 (8/255)``: the value, and its multiple of 1/255 when that is a round one."""
    pixels = value * 255
    if value > 0 and abs(pixels - round(pixels)) < 1e-6 * max(1.0, pixels):
        return f"{value:.6g} ({round(pixels)}/255)"
    return f"{value:.6g}"


def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why no outputs can be written into folder ``path`` (None: they can), checked without
    creating anything: ``path`` is a file, lies under a file, or the folder (or the nearest
    existing folder above it) is not writable, e.g. on a read-only file system."""
    path = Path(path)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):  # judged below
        pass
    except OSError as exc:  # a name too long, a loop of links, a folder that cannot be entered
        return exc.strerror or str(exc)
    if path.exists() and not path.is_dir():
        return "is a file, not a folder; choose a folder"
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"lies under {existing}, which is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "the folder" if existing == path else f"{existing}, where it would be created,"
        return f"{where} is not writable (permissions or a read-only file system)"
    return None


def check_output_dir(
    parser: argparse.ArgumentParser, path: str | os.PathLike | None, option: str = "--out"
) -> None:
    """``parser.error`` (exit 2, one line) when :func:`output_dir_problem` finds one."""
    if path is None:
        return
    problem = output_dir_problem(path)
    if problem is not None:
        parser.error(f"{option} {path}: {problem}")


def add_threads_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--threads N`` (default None: :func:`default_threads` decides)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def default_threads(device: torch.device | str, model_name: str | None) -> int | None:
    """The thread count used when ``--threads`` is not given (None: leave torch's choice)."""
    import torch

    if torch.device(device).type == "cpu" and (model_name or "small-cnn") in SINGLE_THREAD_MODELS:
        return 1
    return None


def apply_thread_policy(
    threads: int | None, device: torch.device | str, model_name: str | None
) -> int:
    """Set torch's intra-op threads (``threads``, else :func:`default_threads`); return the count.

    Raises ValueError for ``threads < 1``.
    """
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    chosen = threads if threads is not None else default_threads(device, model_name)
    if chosen is not None:
        torch.set_num_threads(int(chosen))
    return torch.get_num_threads()


def end_quietly_on_closed_pipe() -> None:
    """For a command that only prints (a listing, a status): when the reader of its output goes
    away (``| head``), end at once with status 141 (128 + SIGPIPE), as Unix tools do, instead of
    a ``BrokenPipeError`` traceback. Not for commands that train or write files."""
    if hasattr(signal, "SIGPIPE"):  # POSIX
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


@contextlib.contextmanager
def exit_on_interrupt(what: str, *, note: str = "") -> Iterator[None]:
    """On Ctrl-C inside the block: print ``"<what> interrupted<note>"`` and exit with 130."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\n{what} interrupted{note}", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT) from None


def file_error_text(exc: OSError) -> str:
    """``"No such file or directory: /proc/x"``: the error's reason and the file(s) it names
    (``exc.filename``, ``exc.filename2``; a full disk met while writing names none)."""
    reason = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return reason
    return f"{reason}: {' -> '.join(names)}"


@contextlib.contextmanager
def exit_on_file_error(
    prog: str, exit_with: Callable[[int], object] | None = None
) -> Iterator[None]:
    """Turn a file-system error inside the block (an ``OSError`` whose ``errno`` is in
    :data:`FILE_SYSTEM_ERRNOS`) into ``"<prog>: error: <reason>: <file>"`` on stderr and exit
    status 1. Other exceptions, and other ``OSError`` values (a lost network connection between
    ranks, say), pass through with their traceback.

    Args:
        prog: The command's name, first on the error line.
        exit_with: Called with 1 after the line is printed (``deep.distributed.exit_process`` under
            torchrun, so that a rank whose disk is full ends the way a finished rank does);
            ``None`` raises ``SystemExit(1)``.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM_ERRNOS:
            raise
        print(f"{prog}: error: {file_error_text(exc)}", file=sys.stderr, flush=True)
        if exit_with is not None:
            exit_with(1)
        raise SystemExit(1) from None


@contextlib.contextmanager
def all_or_nothing(folder: str | os.PathLike) -> Iterator[Path]:
    """Write a command's outputs into ``folder`` inside the block; if the block does not finish
    (Ctrl-C, an error), remove what it added: the folder itself when it did not exist before
    (and the folders above it made for it), else the files and folders that appeared in it.
    Files it replaced are not restored."""
    folder = Path(folder)
    existed = folder.is_dir()
    before = set(folder.iterdir()) if existed else set()
    top = folder  # the highest folder that the block will create
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        yield folder
    except BaseException:
        if not existed:
            shutil.rmtree(top, ignore_errors=True)
        elif folder.is_dir():
            for entry in set(folder.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def resolve_device(parser: argparse.ArgumentParser, text: str) -> torch.device:
    """``--device``: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N".

    Anything else, or CUDA on a machine without it, ends in ``parser.error`` (exit status 2).
    """
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        parser.error(f"--device {text}: choose auto, cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {text}: choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {text}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            parser.error(f"--device {text}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device
