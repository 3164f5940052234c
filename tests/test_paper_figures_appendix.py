"""paper_figures for FRL Appendix A.1: Figure 6 (l_2 adversarial training) and Figure 4
(randomized smoothing), run for real on digits with tiny settings; their CSVs are checked
against the run folders' own final.json / certify.json files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from paper_figures.common import Profile
from paper_figures.runs import read_final
from tests.test_paper_figures import TINY


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def test_frl_fig6_reports_l2_runs(tmp_path, cache):
    from paper_figures import frl_fig6

    assert frl_fig6.main(TINY + ["--runs-dir", str(cache), "--out", str(tmp_path)]) == 0
    finals = {}
    for run_dir in cache.iterdir():
        if (run_dir / "final.json").exists():
            final = read_final(run_dir)
            if final["method"] in ("natural", "pgd-at", "trades"):
                finals[final["method"]] = final
    assert set(finals) == {"natural", "pgd-at", "trades"}
    for final in finals.values():
        assert final["norm"] == "l2" and final["eps"] == 0.5  # digits' l_2 budget
        config = json.loads((Path(cache) / _run_of(cache, final) / "config.json").read_text())
        assert config["norm"] == "l2"
    rows = _rows(tmp_path / "frl_fig6.csv")
    assert len(rows) == 30
    for r in rows:
        errors = finals[r["method"]]["frl_errors"]
        c = int(r["class_index"])
        assert float(r["standard_error_pct"]) == pytest.approx(
            100 * errors["standard"]["per_class"][c]
        )
        assert float(r["robust_error_pct"]) == pytest.approx(100 * errors["robust"]["per_class"][c])
    assert (tmp_path / "frl_fig6.png").exists()


def _run_of(cache: Path, final: dict) -> str:
    for run_dir in Path(cache).iterdir():
        if (run_dir / "final.json").exists() and read_final(run_dir) == final:
            return run_dir.name
    raise AssertionError("no run holds this final.json")


def test_frl_fig4_reports_certify_json(tmp_path, cache):
    from paper_figures import frl_fig4

    argv = TINY + ["--runs-dir", str(cache), "--out", str(tmp_path), "--sigmas", "0.25,0.5",
                   "--certify-n", "60"]  # fmt: skip
    assert frl_fig4.main(argv) == 0
    certs = {}
    for path in cache.glob("gaussian-noise-*/certify-*/certify.json"):
        cert = json.loads(path.read_text())
        certs[cert["sigma"]] = cert
        config = json.loads((path.parents[1] / "config.json").read_text())
        assert config["method"] == "gaussian-noise" and config["sigma"] == cert["sigma"]
        assert cert["n"] == 60 and cert["n_per_class"] == 6 and cert["n0"] == 100
    assert set(certs) == {0.25, 0.5}
    rows = _rows(tmp_path / "frl_fig4.csv")
    assert len(rows) == 20
    for r in rows:
        cert, c = certs[float(r["sigma"])], int(r["class_index"])
        acc = cert["certified_accuracy"]
        assert float(r["cert_standard_error_pct"]) == pytest.approx(
            100 * (1 - acc["0.0"]["per_class"][c])
        )
        assert float(r["cert_robust_error_pct"]) == pytest.approx(
            100 * (1 - acc["0.5"]["per_class"][c])
        )
        assert float(r["abstain_pct"]) == pytest.approx(100 * cert["abstain"]["per_class"][c])
    assert (tmp_path / "frl_fig4.png").exists()
    # A second call reuses the runs and the certifications (nothing is recomputed).
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("gaussian-noise-*/certify-*/*.json")}
    assert frl_fig4.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_frl_fig4_certify_options_follow_the_profile():
    from paper_figures.frl_fig4 import certify_options, sigmas_for

    quick = Profile("digits", quick=True)
    cifar = Profile("cifar10", data_dir="data/cifar10")
    assert sigmas_for(quick) == (0.25, 0.5) and sigmas_for(cifar) == (0.12, 0.25, 0.5, 1.0)
    options = certify_options(cifar, 0.25, None, None)
    assert options[options.index("--n") + 1] == "100000"
    assert options[options.index("--n-per-class") + 1] == "50"
    assert options[options.index("--data-dir") + 1] == "data/cifar10"
    from deep.certify import build_parser

    build_parser().parse_args(["--checkpoint", "x.pt", *options])  # a valid deep.certify call


def test_norm_option_reaches_every_run_and_keeps_linf_runs_unchanged():
    linf = Profile("digits", quick=True)
    l2 = Profile("digits", quick=True, norm="l2")
    assert "--norm" not in linf.scratch("pgd-at", 0).argv  # cached l_inf runs keep their folders
    spec = l2.scratch("pgd-at", 0)
    assert spec.argv[spec.argv.index("--norm") + 1] == "l2"
    assert spec.key != linf.scratch("pgd-at", 0).key
    from paper_figures import __main__ as dispatcher

    args = dispatcher._all_parser().parse_args(["--quick", "--norm", "l2"])
    script = next(s for s in dispatcher.SCRIPTS if s.name == "frl_tables")
    argv = dispatcher._script_argv(script, args)
    assert argv[argv.index("--norm") + 1] == "l2"


def test_a_failed_certification_is_one_line_with_deep_certify_s_message(tmp_path):
    from deep.checkpoint import save_atomic
    from deep.models import build_model
    from paper_figures.runs import RunError, ensure_certified

    model = build_model("small-cnn", 10, in_channels=1, image_size=8)
    save_atomic({"model_config": model.model_config, "model": model.state_dict()},
                tmp_path / "best.pt")  # fmt: skip
    (tmp_path / "final.json").write_text('{"checkpoint": "best.pt", "classes": [], "results": {}}')
    with pytest.raises(RunError) as info:
        ensure_certified(tmp_path, ["--dataset", "digits", "--sigma", "-1"], log=None)
    message = str(info.value)
    assert "\n" not in message and "deep.certify failed" in message and "--sigma" in message
    assert not list(tmp_path.glob("certify-*/certify.json"))  # nothing cached as a result
