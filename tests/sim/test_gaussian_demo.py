"""The demo CLI: a --quick run in-process, its JSON and PNGs, and bad options (exit code 2)."""

import json
from pathlib import Path

import numpy as np
import pytest

from sim import gaussian_demo


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert gaussian_demo.main(["--quick", "--quiet", "--out", str(out)]) == 0
    return out


def test_quick_run_writes_valid_json(quick_run):
    res = json.loads((quick_run / "results.json").read_text())
    assert res["version"] == gaussian_demo.RESULTS_VERSION
    assert set(res["settings"]) == {"fig2", "highdim"}
    fig2 = res["settings"]["fig2"]
    assert fig2["mixture"]["d"] == 2 and fig2["eps"] == 0.5
    assert set(fig2["classifiers"]) == {
        f"{m}-{k}" for m in ("intercept", "logistic", "mlp") for k in ("natural", "robust")
    }
    for entry in fig2["classifiers"].values():
        for cls in ("-1", "+1"):
            for name in ("standard", "robust", "boundary"):
                e = entry["test"][cls][name]
                assert 0 <= e["ci_low"] <= e["value"] <= e["ci_high"] <= 1
    assert set(fig2["mitigation"]) == {"robust", "frl-rw", "frl-rm", "frl-rwrm", "faal"}
    assert all(r["coverage"] >= r["bound"] - 0.05 for r in res["coverage"]["rows"])


def test_quick_run_writes_small_pngs(quick_run):
    res = json.loads((quick_run / "results.json").read_text())
    assert "fig2_boundaries.png" in res["figures"] and "coverage.png" in res["figures"]
    for name in res["figures"]:
        data = (quick_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) < 200_000


def test_same_seed_same_numbers(tmp_path, capsys):
    argv = [
        "--quick",
        "--quiet",
        "--settings",
        "highdim",
        "--parts",
        "intercept",
        "logistic",
        "mitigation",
    ]
    gaussian_demo.main([*argv, "--out", str(tmp_path / "a")])
    gaussian_demo.main([*argv, "--out", str(tmp_path / "b")])
    a = json.loads((tmp_path / "a" / "results.json").read_text())["settings"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["settings"]
    assert a == b
    out = capsys.readouterr().out
    assert "intercept-robust" in out and "faal" in out


@pytest.mark.parametrize(
    "argv,option",
    [
        (["--K", "0.5"], "--K"),
        (["--eps", "2.0"], "--eps"),
        (["--eps", "0.3", "--eta", "0.2"], "--eps"),
        (["--n-test", "1"], "--n-test"),
        (["--quick", "--n-test", "1"], "--n-test"),
        (["--n-train", "0"], "--n-train"),
        (["--sigma", "-1"], "--sigma"),
        (["--no-such-option"], "--no-such-option"),
        (["--parts", "everything"], "--parts"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        gaussian_demo.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[0]  # the error, before a line of usage
    assert option in err


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    argv = ["--quick", "--parts", "intercept", "--settings", "fig2", "--progress-interval", "0",
            "--out", str(tmp_path)]  # fmt: skip
    gaussian_demo.main(argv)
    assert "gaussian demo: part 1/1 (100.0%)" in capsys.readouterr().err


def test_quick_keeps_sizes_given_explicitly():
    args = gaussian_demo._parse(["--quick", "--n-test", "500", "--coverage-trials", "7"])
    assert args.n_test == 500 and args.coverage_trials == 7
    assert args.n_train == gaussian_demo.QUICK_SIZES["n_train"]  # the rest: quick sizes
    full = gaussian_demo._parse([])
    assert full.n_test == 200_000 and full.n_train == 20_000


def test_custom_setting_replaces_the_defaults(tmp_path):
    gaussian_demo.main(
        [
            "--quick",
            "--quiet",
            "--d",
            "5",
            "--eta",
            "0.5",
            "--K",
            "3",
            "--eps",
            "0.1",
            "--parts",
            "intercept",
            "--out",
            str(tmp_path),
        ]
    )
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res["settings"]) == ["custom"]
    s = res["settings"]["custom"]
    assert s["mixture"] == {"d": 5, "eta": 0.5, "sigma": 1.0, "K": 3.0}
    assert np.isfinite(s["theory"]["b_rob"])


def test_custom_setting_starts_from_the_one_setting_named(tmp_path):
    argv = ["--quick", "--quiet", "--settings", "highdim", "--K", "3", "--parts", "intercept",
            "--out", str(tmp_path)]  # fmt: skip
    gaussian_demo.main(argv)
    res = json.loads((tmp_path / "results.json").read_text())
    highdim = gaussian_demo.SETTINGS["highdim"]
    expected = {"d": highdim["d"], "eta": highdim["eta"], "sigma": highdim["sigma"], "K": 3.0}
    assert res["settings"]["custom"]["mixture"] == expected


def test_mitigation_bars_start_at_zero(tmp_path, monkeypatch):
    """Bars of errors start their axis at 0 (a truncated axis exaggerates small gaps)."""
    from sim import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    population = {"robust": (0.343, 0.230), "frl-rw": (0.289, 0.239), "faal": (0.253, 0.253)}
    setting = {
        "mixture": {"d": 100, "K": 2.0},
        "eps": 0.1,
        "mitigation": {
            name: {"population": {"worst_robust": w, "average_robust": a}}
            for name, (w, a) in population.items()
        },
    }
    plots.plot_mitigations(setting, tmp_path / "m.png")
    (fig,) = figures
    bottom, top = fig.axes[0].get_ylim()
    assert bottom == 0 and top > 0.343


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    import time

    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    start = time.perf_counter()
    for out in (a_file, a_file / "run"):
        with pytest.raises(SystemExit) as exc:
            gaussian_demo.main(["--quick", "--quiet", "--out", str(out)])
        assert exc.value.code == 2
        assert (
            capsys.readouterr()
            .err.splitlines()[0]
            .startswith(f"python -m sim.gaussian_demo: error: --out {out}: ")
        )
    assert time.perf_counter() - start < 1.0


def test_ctrl_c_leaves_no_folder_and_no_traceback(tmp_path, monkeypatch, capsys):
    """Interrupted after its figures were drawn, before results.json: one line, 130, no folder."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gaussian_demo, "run_coverage", interrupted)
    out = tmp_path / "runs" / "demo"
    with pytest.raises(SystemExit) as exc:
        gaussian_demo.main(["--quick", "--quiet", "--parts", "intercept", "coverage",
                            "--settings", "fig2", "--out", str(out)])  # fmt: skip
    assert exc.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err == "gaussian demo interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_budgets_as_fractions(tmp_path):
    out = tmp_path / "frac"
    argv = ["--quick", "--quiet", "--parts", "intercept", "--eta", "1/2", "--eps", "1/8",
            "--out", str(out)]  # fmt: skip
    assert gaussian_demo.main(argv) == 0
    custom = json.loads((out / "results.json").read_text())["settings"]["custom"]
    assert custom["eps"] == 0.125 and custom["mixture"]["eta"] == 0.5


def _drawn_figures(monkeypatch, argv, tmp_path):
    """Run the demo and keep every figure it saves: {file name: matplotlib Figure}."""
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def keep(self, path, *args, **kwargs):
        saved[Path(path).name] = self
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    assert gaussian_demo.main([*argv, "--quick", "--quiet", "--out", str(tmp_path / "o")]) == 0
    return saved


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_coverage_and_class_error_figures_have_titles_labels_and_legends_off_the_data(
    monkeypatch, tmp_path
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figs = _drawn_figures(
        monkeypatch, ["--parts", "intercept", "coverage", "--settings", "fig2"], tmp_path
    )
    coverage = figs["coverage.png"]
    (ax,) = coverage.axes
    assert "Theorem 1" in ax.get_title()
    renderer = FigureCanvasAgg(coverage).get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not _overlaps(legend, ax.get_window_extent(renderer))  # no curve is hidden
    errors = figs["fig2_class_errors.png"]
    renderer = FigureCanvasAgg(errors).get_renderer()
    assert all(a.get_legend() is None for a in errors.axes) and len(errors.legends) == 1
    legend = errors.legends[0].get_window_extent(renderer)
    for a in errors.axes:
        assert "error" in a.get_ylabel()
        assert not _overlaps(legend, a.get_window_extent(renderer))


def test_frl_rule_reaches_the_mitigations(tmp_path):
    """--frl-rule paper: the FRL mitigations update as Algorithm 1 / Eq. 11 print it (at the toy's
    delta = 0 Remargin never shrinks a budget; the official rule shrinks the better class's)."""
    argv = ["--quick", "--quiet", "--settings", "highdim", "--parts", "mitigation"]
    final = {}
    for rule in ("official", "paper"):
        out = tmp_path / rule
        assert gaussian_demo.main([*argv, "--frl-rule", rule, "--out", str(out)]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["config"]["frl_rule"] == rule
        final[rule] = results["settings"]["highdim"]["mitigation"]["frl-rm"]["final_eps_c"]
    eps = 0.1
    assert min(final["paper"]) >= eps and min(final["official"]) < eps
