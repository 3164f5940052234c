"""Check that the README's quick-start numbers are what the code prints: ``python -m
tests.readme_quickstart`` (run by ``.ci/run``; a few CPU-minutes).

The README's "Train and evaluate a network" section holds the two quick-start commands and,
each after a ``<!-- quickstart-output: ... -->`` marker, the ``average`` and ``worst`` rows of the
class-wise table that command prints. This script runs each command as written (in a temporary
folder, with the same seed) and compares the rows; it exits 1 listing every row that differs, so
a change of the numbers cannot go unnoticed in the README.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!-- quickstart-output: (?P<command>python -m [^>]+?) -->")
ROWS = ("average", "worst")


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


def differences(expected: dict[str, list[str]], printed: str) -> list[str]:
    """Human-readable differences between the README's rows and a command's output."""
    got = table_rows(printed)
    out = []
    for row in ROWS:
        if got.get(row) != expected[row]:
            printed_row = " ".join(got.get(row, ["(missing)"]))
            out.append(f"  {row}: README {' '.join(expected[row])} | printed {printed_row}")
    return out


def main() -> int:
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for command, expected in expected_outputs(README.read_text()):
            print(f"$ {command}", flush=True)
            argv = [sys.executable, *shlex.split(command)[1:]]  # "python" -> this interpreter
            proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                failures.append(f"{command} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
                continue
            diff = differences(expected, proc.stdout)
            if diff:
                failures.append(f"{command}: the README's numbers drifted\n" + "\n".join(diff))
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    print("README quick-start numbers match what the code prints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
