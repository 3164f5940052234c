"""Check that the README's quick-start numbers are what the code prints: ``python -m
tests.readme_quickstart`` (run by ``.ci/run``; a few CPU-minutes).

The README's "Train and evaluate a network" section holds the two quick-start commands and,
each after a ``<!-- quickstart-output: ... -->`` marker, the ``average`` and ``worst`` rows of the
class-wise table that command prints. This script runs each command as written (in a temporary
folder, with the same seed) and compares the rows; it exits 1 listing every row that differs, so
a change of the numbers cannot go unnoticed in the README.

The numbers are exact on the kind of CPU they were measured on (:data:`MEASURED_ON`:
torch's ``get_cpu_capability()``, and whether the CPU has AMX tiles, with which oneDNN chooses
other convolution kernels). Another kind sums in another order: a few adversarial training steps
later the model differs, and the ``worst`` rows, one class of 50 test images (20 for
``deep.evaluate --n-per-class 20``), moved by up to 28 points between two AVX512 CPUs, one with
AMX and one without (the averages by at most 3). There the ``average`` rows must agree within
:data:`TOLERANCE` percentage points and the ``worst`` rows are not compared (the script says so).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from deep.runtime import cpu_kind

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!-- quickstart-output: (?P<command>python -m [^>]+?) -->")
ROWS = ("average", "worst")
#: The kind of CPU (:func:`cpu_kind`) that measured the README's numbers.
MEASURED_ON = "AVX512"
#: Allowed difference (percentage points) of the ``average`` rows on another kind of CPU.
TOLERANCE = 5.0


def expected_outputs(readme_text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """``[(command, {"average": [...], "worst": [...]})]`` from the README's marked blocks."""
    found = []
    for match in MARKER.finditer(readme_text):
        block = readme_text[match.end() :].split("```", 2)
        if len(block) < 3:
            raise ValueError(f"no ``` block after the marker for {match['command']!r}")
        rows = table_rows(block[1])
        if set(rows) != set(ROWS):
            raise ValueError(f"the block after {match['command']!r} lacks an average/worst row")
        found.append((match["command"].strip(), rows))
    if not found:
        raise ValueError("README.md holds no <!-- quickstart-output: ... --> marker")
    return found


def table_rows(text: str) -> dict[str, list[str]]:
    """The cells of the ``average`` and ``worst`` rows of a printed class-wise table."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in ROWS:
            rows[cells[0]] = cells[1:]
    return rows


def _close(expected: list[str], got: list[str] | None, tolerance: float) -> bool:
    if got is None or len(got) != len(expected):
        return False
    if tolerance == 0:
        return got == expected
    try:
        return all(abs(float(a) - float(b)) <= tolerance for a, b in zip(expected, got))
    except ValueError:
        return False


def differences(
    expected: dict[str, list[str]],
    printed: str,
    tolerance: float = 0.0,
    rows: tuple[str, ...] = ROWS,
) -> list[str]:
    """Human-readable differences between the README's ``rows`` and a command's output (numbers
    further apart than ``tolerance`` percentage points; 0: any difference)."""
    got = table_rows(printed)
    out = []
    for row in rows:
        if not _close(expected[row], got.get(row), tolerance):
            printed_row = " ".join(got.get(row, ["(missing)"]))
            out.append(f"  {row}: README {' '.join(expected[row])} | printed {printed_row}")
    return out


def comparison_here() -> tuple[float, tuple[str, ...]]:
    """``(tolerance, rows)``: exact and every row on the kind of CPU that measured the README's
    numbers; else the ``average`` rows within :data:`TOLERANCE` points."""
    kind = cpu_kind()
    if kind == MEASURED_ON:
        return 0.0, ROWS
    print(
        f"note: this CPU is {kind}, the README's numbers come from {MEASURED_ON}: the average rows "
        f"must agree within {TOLERANCE:g} points, the worst-class rows are not compared (one class "
        "of a few dozen images moves far when float sums run in another order)",
        flush=True,
    )
    return TOLERANCE, ("average",)


def main() -> int:
    failures = []
    tolerance, rows = comparison_here()
    with tempfile.TemporaryDirectory() as tmp:
        for command, expected in expected_outputs(README.read_text()):
            print(f"$ {command}", flush=True)
            argv = [sys.executable, *shlex.split(command)[1:]]  # "python" -> this interpreter
            proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                failures.append(f"{command} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
                continue
            diff = differences(expected, proc.stdout, tolerance, rows)
            if diff:
                failures.append(f"{command}: the README's numbers drifted\n" + "\n".join(diff))
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    print("README quick-start numbers match what the code prints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
