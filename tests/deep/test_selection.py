"""best.pt's epoch (deep.selection) against a direct statement of the rule, and the check of
recorded runs (benchmarks/selection_ties.py)."""

import json
import math
import random
import sys
from pathlib import Path

import pytest

from deep.selection import best_epoch, better, rule_changes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import selection_ties  # noqa: E402


def _record(epoch, worst, average):
    return {"epoch": epoch, "val": {"pgd20": {"worst": worst, "average": average}}}


def test_rules_against_their_direct_statement():
    """average: the epoch maximising (worst, average, epoch); first: the first epoch with the
    largest worst. Values on a coarse grid, so ties of both kinds are frequent."""
    rng = random.Random(0)
    differing = 0
    for _ in range(500):
        n = rng.randint(1, 6)
        records = [_record(e + 1, rng.choice([0.0, 0.01, 0.02]), rng.choice([0.3, 0.4, 0.5]))
                   for e in range(n)]  # fmt: skip
        keys = [(r["val"]["pgd20"]["worst"], r["val"]["pgd20"]["average"], r["epoch"])
                for r in records]  # fmt: skip
        assert best_epoch(records, "average") == max(keys)[2]
        top = max(k[0] for k in keys)
        assert best_epoch(records, "first") == min(k[2] for k in keys if k[0] == top)
        first, average = rule_changes(records)
        differing += first != average
    assert differing > 50  # the rules do differ on ties


def test_the_tie_of_the_issue_picks_the_better_average():
    """An l_2 run whose worst class stays at 0 % for 3 epochs: the last (best average) wins."""
    records = [_record(1, 0.0, 0.41), _record(2, 0.0, 0.52), _record(3, 0.0, 0.58)]
    assert rule_changes(records) == (1, 3)
    assert best_epoch([*records, {"epoch": 4, "train": {}}]) == 3  # epochs without validation
    assert best_epoch([]) is None
    old_best = {"score": 0.0, "epoch": 1}  # a record saved before "average" was kept
    assert better(records[1], old_best) and not better(records[1], old_best, "first")
    with pytest.raises(ValueError, match="rule must be one of average, first"):
        better(records[0], old_best, "last")
    assert better(records[0], {"score": -math.inf, "epoch": None}, "first")


def test_check_of_recorded_runs(tmp_path, capsys):
    tie = {"metrics": [_record(1, 0.41, 0.741), _record(2, 0.41, 0.746)],
           "final": {"checkpoint": "/runs/x/best.pt"}}  # fmt: skip
    clear = {"metrics": [_record(1, 0.3, 0.7), _record(2, 0.4, 0.6)],
             "final": {"checkpoint": "/runs/y/best.pt"}}  # fmt: skip
    (tmp_path / "tie.json").write_text(json.dumps(tie))
    (tmp_path / "clear.json").write_text(json.dumps(clear))
    assert selection_ties.main([str(tmp_path / "clear.json")]) == 0
    assert selection_ties.main([str(tmp_path / "tie.json"), str(tmp_path / "clear.json")]) == 1
    out = capsys.readouterr().out
    assert "tie.json: best.pt epoch 1 -> 2 (its final test numbers change)" in out
    assert "1 of 2 records keep another epoch" in out
    # the same tie in a record made under the new rule (its run's best_ties) is not flagged
    (tmp_path / "rerun.json").write_text(json.dumps({**tie, "best_ties": "average"}))
    assert selection_ties.main([str(tmp_path / "rerun.json")]) == 0


def test_committed_records_keep_their_epoch(capsys):
    """The benchmark guide says no committed record changes its best.pt under the tie rule."""
    records = sorted(Path(selection_ties.REPO).glob(selection_ties.DEFAULT_RECORDS))
    assert len(records) >= 60
    assert selection_ties.main([]) == 0
    assert f"0 of {len(records)} records keep another epoch" in capsys.readouterr().out
