"""paper_figures.frl_theorem3 (FRL App. A.3): the CSV's printed, exact and simulated increases."""

import csv

import pytest

from paper_figures import __main__ as dispatcher
from paper_figures import frl_theorem3


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run: its output folder and its cache of rows."""
    tmp = tmp_path_factory.mktemp("frl_theorem3")
    argv = ["--quick", "--quiet", "--out", str(tmp / "a"), "--runs-dir", str(tmp / "cache")]
    assert frl_theorem3.main(argv) == 0
    return tmp


def test_frl_theorem3_quick(quick):
    assert (quick / "a" / "frl_theorem3.png").stat().st_size > 10_000
    with open(quick / "a" / "frl_theorem3.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["sweep"] for r in rows} == {"m", "gamma"}
    points = {}
    for r in rows:
        v = {k: float(r[k]) for k in ("printed", "exact", "exact_l2", "sim", "sim_ci_low",
                                       "sim_ci_high")}  # fmt: skip
        assert abs(v["printed"] - v["exact"]) < 1e-9  # l_inf: the printed forms are exact
        assert v["sim_ci_low"] <= v["sim"] <= v["sim_ci_high"]
        # the simulation's interval (3 replicates of train + test) covers the exact increase
        assert v["sim_ci_low"] - 0.005 < v["exact"] < v["sim_ci_high"] + 0.005
        points.setdefault((r["sweep"], r["m"], r["gamma"]), {})[r["class"]] = v
    for p in points.values():
        assert p["+1"]["exact"] > p["-1"]["exact"]  # Eq. 20
        assert p["-1"]["exact_l2"] < 0 < p["+1"]["exact_l2"]  # l_2: class -1's error falls


def test_frl_theorem3_reuses_its_cache_through_the_dispatcher(quick, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cached rows were not reused")

    monkeypatch.setattr(frl_theorem3, "increase_rows", fail)
    all_argv = ["all", "--only", "frl_theorem3", "--quick", "--quiet", "--out",
                str(quick / "b"), "--runs-dir", str(quick / "cache")]  # fmt: skip
    assert dispatcher.main(all_argv) == 0
    first = (quick / "a" / "frl_theorem3.csv").read_text()
    assert (quick / "b" / "frl_theorem3.csv").read_text() == first
