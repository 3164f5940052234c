"""paper_figures.frl_theorem3 (FRL App. A.3): the CSV's printed, exact and simulated increases."""

import csv

from paper_figures import frl_theorem3


def test_frl_theorem3_quick(tmp_path):
    assert frl_theorem3.main(["--quick", "--quiet", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "frl_theorem3.png").stat().st_size > 10_000
    with open(tmp_path / "frl_theorem3.csv") as fh:
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
