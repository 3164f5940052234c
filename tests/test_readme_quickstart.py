"""The README quick-start check (tests/readme_quickstart.py, run by .ci/run): it finds every
marked block in the README and tells a drifted number from a matching one."""

from tests import readme_quickstart as Q

TABLE = """class    clean  PGD-20  CW-20
-------  -----  ------  -----
0        100.00  90.00  90.00
-------  -----  ------  -----
average   98.20   86.00   86.60
worst     96.00   54.00   56.00
"""


def test_the_readme_marks_both_quick_start_commands():
    found = Q.expected_outputs(Q.README.read_text())
    commands = [command for command, _ in found]
    assert commands[0].startswith("python -m deep.train ")
    assert commands[1].startswith("python -m deep.evaluate ")
    for _, rows in found:
        assert len(rows["average"]) == len(rows["worst"]) >= 3
        assert all(float(v) >= 0 for v in rows["average"] + rows["worst"])


def test_a_drifted_number_is_reported_and_a_match_is_not():
    text = "<!-- quickstart-output: python -m deep.train --out x -->\n```\n" + TABLE + "```\n"
    ((command, expected),) = Q.expected_outputs(text)
    assert command == "python -m deep.train --out x"
    assert Q.differences(expected, "noise\n" + TABLE) == []
    drifted = TABLE.replace("86.00   86.60", "85.80   86.60")
    (diff,) = Q.differences(expected, drifted)
    assert "average" in diff and "86.00" in diff and "85.80" in diff
    assert Q.differences(expected, "no table") != []


def test_on_another_instruction_set_a_small_drift_is_tolerated_a_large_one_is_not():
    text = "<!-- quickstart-output: python -m deep.train --out x -->\n```\n" + TABLE + "```\n"
    ((_, expected),) = Q.expected_outputs(text)
    one_image = TABLE.replace("96.00   54.00", "96.00   52.00")
    assert Q.differences(expected, one_image, Q.TOLERANCE) == []
    assert Q.differences(expected, one_image) != []  # exact where the CPU matches
    far = TABLE.replace("96.00   54.00", "96.00   40.00")
    assert Q.differences(expected, far, Q.TOLERANCE) != []
    assert Q.differences(expected, "worst 1 2\naverage 1 2 3 4", Q.TOLERANCE) != []


def test_on_another_kind_of_cpu_only_the_average_rows_are_compared(monkeypatch, capsys):
    text = "<!-- quickstart-output: python -m deep.train --out x -->\n```\n" + TABLE + "```\n"
    ((_, expected),) = Q.expected_outputs(text)
    worst_moved = TABLE.replace("96.00   54.00   56.00", "96.00   26.00   30.00")
    monkeypatch.setattr(Q, "cpu_kind", lambda: Q.MEASURED_ON + "+AMX")
    tolerance, rows = Q.comparison_here()
    assert "the worst-class rows are not compared" in capsys.readouterr().out
    assert Q.differences(expected, worst_moved, tolerance, rows) == []
    average_moved = TABLE.replace("98.20   86.00", "98.20   80.00")
    assert Q.differences(expected, average_moved, tolerance, rows) != []
    monkeypatch.setattr(Q, "cpu_kind", lambda: Q.MEASURED_ON)
    assert Q.comparison_here() == (0.0, Q.ROWS)
    assert Q.differences(expected, worst_moved, *Q.comparison_here()) != []
