"""sim.features (FRL A.3): samples of D', the two-scale 0-1 ERM, agreement of simulated and exact
class errors, and the D' table of the demo."""

import json
import math

import numpy as np
import pytest

from sim import gaussian_demo
from sim.classifiers import fit_logistic_natural, fit_logistic_robust
from sim.features import (
    evaluate_on_features,
    fit_two_scale_erm,
    sample_block_sums,
    sample_features,
)
from theory.features import FeatureMixture

MIX = dict(d=1, m=20, eta=1.0, gamma=0.3, sigma=1.0, K=2.0)
EPS = 0.5


def test_block_sums_have_the_law_of_summed_features():
    mix = FeatureMixture(**MIX)
    x, y = sample_features(mix, 100_000, np.random.default_rng(0))
    s, ys = sample_block_sums(mix, 100_000, np.random.default_rng(1))
    sums = np.stack([x[:, :1].sum(1), x[:, 1:].sum(1)], axis=1)
    for c, scale in ((-1, 1.0), (1, MIX["K"])):
        for a in (sums[y == c], s[ys == c]):
            # means c (d eta, m gamma), standard deviations sigma_c (sqrt d, sqrt m)
            se = scale * np.sqrt([1, 20]) / math.sqrt(len(a))
            assert np.all(np.abs(a.mean(0) - c * np.array([1.0, 6.0])) < 5 * se)
            assert np.allclose(a.std(0), scale * np.sqrt([1, 20]), rtol=0.02)


@pytest.mark.parametrize("eps", [0.0, EPS])
def test_two_scale_erm_approaches_the_exact_optimum(eps):
    mix = FeatureMixture(**MIX)
    s, y = sample_block_sums(mix, 100_000, np.random.default_rng(2))
    clf = fit_two_scale_erm(s, y, d=1, m=20, eps=eps)
    opt = mix.optimal_linear(eps)
    fitted = 0.5 * sum(mix.linear_errors(clf.w, clf.b, eps))
    assert 0.5 * sum(opt.robust) <= fitted < 0.5 * sum(opt.robust) + 0.003
    ratio = clf.w[1] / clf.w[0]
    assert ratio == pytest.approx(float(opt.ratio), abs=0.05)


def test_simulated_errors_agree_with_exact_errors():
    """Trained natural and robust logistic regression: the test-sample class errors lie within
    Monte Carlo error of the exact class errors of the fitted models (standard and robust)."""
    mix = FeatureMixture(**MIX)
    x, y = sample_features(mix, 3_000, np.random.default_rng(3))
    nat = fit_logistic_natural(x, y)
    fits = {"nat": nat, "rob": fit_logistic_robust(x, y, eps=EPS, init=nat)}
    tests = evaluate_on_features(fits, mix, 100_000, np.random.default_rng(4), eps=EPS)
    for name, clf in fits.items():
        for e, key in ((0.0, "standard"), (EPS, "robust")):
            for c, p in zip(("-1", "+1"), mix.linear_errors(clf.w, clf.b, e)):
                t = tests[name][c]
                assert abs(t[key]["value"] - p) < 4.5 * math.sqrt(p * (1 - p) / t["n"]) + 1e-9
    # the l_inf robust fit puts (almost) no weight on the non-robust features, the natural one does
    assert np.abs(fits["rob"].w[1:]).sum() < 0.05 * np.abs(fits["rob"].w).sum()
    assert np.abs(nat.w[1:]).sum() > 0.5 * np.abs(nat.w).sum()


def test_demo_prints_the_features_table(tmp_path, capsys):
    argv = ["--quick", "--quiet", "--parts", "features", "--settings", "fig2", "--out",
            str(tmp_path), "--n-test", "20000"]  # fmt: skip
    assert gaussian_demo.main(argv) == 0
    printed = capsys.readouterr().out
    assert "FRL A.3, D' (Eq. 19)" in printed and "Theorem 3 (Eq. 20)" in printed
    res = json.loads((tmp_path / "results.json").read_text())["features"]
    assert set(res["classifiers"]) == {
        f"{m}-{k}" for m in ("erm", "logistic") for k in ("natural", "robust")
    }
    exact = {c: res["theory"]["robust"]["standard"][c] - res["theory"]["natural"]["standard"][c]
             for c in ("-1", "+1")}  # fmt: skip
    inc = res["increase"]["erm"]
    assert inc["+1"]["value"] > inc["-1"]["value"]  # Eq. 20 on samples
    for c in ("-1", "+1"):
        half = inc[c]["ci_high"] - inc[c]["value"]
        assert abs(inc[c]["value"] - exact[c]) < 2 * half + 0.02  # + the ERM's estimation error
