"""Progress of long work: a tqdm bar on a terminal, plain timed lines everywhere else.

Every command that runs a model reports through :class:`Progress`, so a run under ``nohup ... >
log``, CI or a job scheduler shows that it is alive: when stderr is not a terminal a line such as

    epoch 3/15: step 40/255 (15.7%), 2.31 step/s, ETA 1m30s, loss 0.4321

is written at a steady interval (``interval`` seconds, 30 by default) instead of a bar. Values
shown after the rate (the running loss, the attack in progress) are given as callables and are
only evaluated when they are shown, so a device value is read at most once per line.

Usage (also from other command-line tools)::

    from deep.progress import Progress

    with Progress(total=len(loader), desc="epoch 1/10", unit="step") as bar:
        for batch in loader:
            ...
            bar.update(1, loss=lambda: trainer.running_loss())
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from tqdm import tqdm

__all__ = [
    "DEFAULT_INTERVAL_S",
    "Progress",
    "add_progress_options",
    "format_duration",
    "progress_mode",
]

#: Seconds between two plain progress lines when stderr is not a terminal.
DEFAULT_INTERVAL_S = 30.0


def add_progress_options(parser) -> None:
    """Add ``--quiet`` and ``--progress-interval SECONDS`` to an argparse parser or group."""
    parser.add_argument("--quiet", action="store_true", default=False, help="no progress output")
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help="when stderr is not a terminal (a log file, CI, a job scheduler): seconds between "
        f"plain progress lines (default: {DEFAULT_INTERVAL_S:g})",
    )


def format_duration(seconds: float) -> str:
    """``95.2`` -> ``"1m35s"``; ``4000`` -> ``"1h06m"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_mode(*, enabled: bool = True, stream: TextIO | None = None) -> str:
    """``"bar"`` on a terminal, ``"lines"`` otherwise, ``"off"`` when not ``enabled`` (--quiet)."""
    if not enabled:
        return "off"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


class Progress:
    """Progress over ``total`` units: a tqdm bar (terminal) or a plain line every ``interval`` s.

    Args:
        total: number of units of the work (steps, batches, attack runs).
        desc: what the work is (``"epoch 3/15"``, ``"AutoAttack"``); changeable with
            :meth:`set_description`.
        enabled: False shows nothing (``--quiet``).
        interval: seconds between plain lines (first line after ``interval`` seconds too);
            0 writes a line at every update.
        initial: units already done (a resumed epoch); they do not count towards the rate.
        unit: the unit's name in plain lines.
        stream: where to write (default ``sys.stderr``); its ``isatty()`` chooses the mode.
        clock: time source (tests).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        enabled: bool = True,
        interval: float = DEFAULT_INTERVAL_S,
        initial: int = 0,
        unit: str = "step",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self._start_n = int(initial)
        self.interval = float(interval)
        self.stream = sys.stderr if stream is None else stream
        self.mode = progress_mode(enabled=enabled, stream=self.stream)
        self._clock = clock
        self._t0 = self._last_line = clock()
        self._fields: dict[str, Callable[[], object] | object] = {}
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(
                total=self.total, initial=self.n, desc=desc, leave=False, dynamic_ncols=True,
                file=self.stream,
            )  # fmt: skip

    # -- updating ------------------------------------------------------------------------------
    def update(self, n: int = 1, **fields) -> None:
        """Advance by ``n`` units; ``fields`` (values or zero-argument callables) are shown."""
        self.n += n
        self._fields.update(fields)
        if self.mode == "bar":
            self._bar.update(n)
            if fields:
                self._bar.set_postfix_str(self._field_text(), refresh=False)
        elif self.mode == "lines":
            now = self._clock()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self.write_line()

    def advance_to(self, n: int, **fields) -> None:
        """Advance to ``n`` units done (no-op when already there)."""
        if n > self.n:
            self.update(n - self.n, **fields)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description_str(desc, refresh=False)

    def rate(self) -> float:
        """Units per second since the start (units done before ``initial`` not counted)."""
        elapsed = self._clock() - self._t0
        done = self.n - self._start_n
        return done / elapsed if elapsed > 0 and done > 0 else math.nan

    def eta(self) -> float:
        """Seconds left at the current rate (NaN before the first unit)."""
        rate = self.rate()
        return max(self.total - self.n, 0) / rate if rate > 0 else math.nan

    def line(self) -> str:
        """The plain progress line (what :meth:`write_line` prints)."""
        pct = 100.0 * self.n / self.total if self.total else 100.0
        rate = self.rate()
        rate_text = "?" if not math.isfinite(rate) else f"{rate:.3g}"
        text = (
            f"{self.desc + ': ' if self.desc else ''}{self.unit} {self.n}/{self.total} "
            f"({pct:.1f}%), {rate_text} {self.unit}/s, ETA {format_duration(self.eta())}"
        )
        fields = self._field_text()
        return f"{text}, {fields}" if fields else text

    def write_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def _field_text(self) -> str:
        parts = []
        for key, value in self._fields.items():
            if callable(value):
                value = value()
            if isinstance(value, float):
                value = f"{value:.4g}"
            parts.append(f"{key} {value}")
        return ", ".join(parts)

    # -- closing -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def fields(self) -> Mapping[str, object]:
        return dict(self._fields)
