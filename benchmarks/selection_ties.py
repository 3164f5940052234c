"""Which recorded runs would keep another epoch in best.pt under the tie rule of deep.selection.

A benchmark record (``docs/results/fairness_benchmark_runs/<row>/seed<k>.json``) holds the run's
per-epoch ``metrics`` (validation PGD-20 worst / average), the checkpoint its final test
numbers come from and the tie rule of its run (``best_ties``; a record without it was made
under ``first``). For each record this prints the epoch best.pt holds under ``--best-ties
first`` (runs written before the option) and under ``average`` (the default now), and flags the
records whose test numbers came from best.pt and would change:

    python benchmarks/selection_ties.py                          # the committed records
    python benchmarks/selection_ties.py runs/fairness-benchmark/*/fairness_benchmark_runs/*/*.json

Exit status 0 when no record's best.pt epoch changes, 1 when some do (listed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deep.runtime import CLIParser, end_quietly_on_closed_pipe  # noqa: E402
from deep.selection import rule_changes  # noqa: E402

DEFAULT_RECORDS = "docs/results/fairness_benchmark_runs/*/seed*.json"


def changed_records(paths: list[Path]) -> list[dict]:
    """One entry per record whose best.pt epoch differs between the two rules."""
    changed = []
    for path in paths:
        record = json.loads(path.read_text())
        if record.get("best_ties", "first") != "first":
            continue  # made under the new rule already
        first, average = rule_changes(record.get("metrics") or [])
        if first != average:
            checkpoint = str((record.get("final") or {}).get("checkpoint", ""))
            changed.append({
                "record": str(path), "epoch_first": first, "epoch_average": average,
                "final_from_best": Path(checkpoint).name == "best.pt",
            })  # fmt: skip
    return changed


def main(argv=None) -> int:
    parser = CLIParser(prog="python benchmarks/selection_ties.py", description=__doc__)
    parser.add_argument(
        "records", nargs="*", type=Path, help=f"records (default: {DEFAULT_RECORDS})"
    )
    args = parser.parse_args(argv)
    paths = args.records or sorted(REPO.glob(DEFAULT_RECORDS))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such record: {missing[0]}")
    end_quietly_on_closed_pipe()
    changed = changed_records(paths)
    for c in changed:
        effect = (
            "its final test numbers change" if c["final_from_best"] else "final not from best.pt"
        )
        print(f"{c['record']}: best.pt epoch {c['epoch_first']} -> {c['epoch_average']} ({effect})")
    print(f"{len(changed)} of {len(paths)} records keep another epoch under the new tie rule")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
