"""Run-time conventions shared by every command that runs a model: CPU threads and Ctrl-C.

* **Threads** (``--threads``): :func:`add_threads_option` adds the option and
  :func:`apply_thread_policy` applies it. Given explicitly, ``torch.set_num_threads(N)``. Not
  given: one thread for the small CNN on the CPU (its convolutions are too small to gain from
  intra-op threads; on a busy 2-core machine two threads made a PGD step ~50x slower than one, and
  ``deep.evaluate``'s quick start took 896 s instead of 30 s), torch's own choice otherwise.
* **Ctrl-C**: :func:`exit_on_interrupt` turns a ``KeyboardInterrupt`` into one line on stderr and
  exit status 130 (128 + SIGINT), without a traceback from deep inside an attack library.

Usage in a command-line tool::

    parser = argparse.ArgumentParser(...)
    add_threads_option(parser)
    args = parser.parse_args()
    with exit_on_interrupt("evaluation"):
        apply_thread_policy(args.threads, device, model_name)
        ...
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so --help and the help formatter stay light
    import torch

__all__ = [
    "DefaultsHelpFormatter",
    "INTERRUPTED_EXIT",
    "SINGLE_THREAD_MODELS",
    "THREADS_HELP",
    "add_threads_option",
    "apply_thread_policy",
    "default_threads",
    "exit_on_interrupt",
    "resolve_device",
]

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT = 130

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


@contextlib.contextmanager
def exit_on_interrupt(what: str, *, note: str = "") -> Iterator[None]:
    """On Ctrl-C inside the block: print ``"<what> interrupted<note>"`` and exit with 130."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\n{what} interrupted{note}", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT) from None


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
