"""paper_figures: the dispatcher, the run cache, and a representative subset of the scripts.

Theory scripts are checked against the papers' closed forms computed here with scipy; the deep
scripts run for real on digits with tiny settings (1 epoch, small subsets) and their CSVs are
checked against the run folders' own final.json / class_weights.csv files.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import rel_entr
from scipy.stats import norm

import paper_figures
from paper_figures import __main__ as dispatcher
from paper_figures.common import Profile
from paper_figures.runs import (
    RunError,
    RunSpec,
    ensure_run,
    mean_std,
    read_final,
    read_metrics,
)

# Tiny deep settings shared by the tests below (so their runs are shared through the cache).
TINY = ["--quick", "--epochs", "1", "--train-per-class", "12", "--test-per-class", "6", "--quiet"]


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


# --------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------
def test_list_names_every_script_module_and_each_has_main(capsys):
    assert dispatcher.main(["list"]) == 0
    listed = capsys.readouterr().out
    helpers = {"__main__", "style", "runs", "common", "aggregate", "faal", "faal_figures",
               "faal_tables"}  # fmt: skip
    modules = {m.name for m in pkgutil.iter_modules(paper_figures.__path__)} - helpers
    assert modules == {s.name for s in dispatcher.SCRIPTS}
    for name in modules:
        assert name in listed
        assert callable(importlib.import_module(f"paper_figures.{name}").main)


def test_dispatcher_rejects_unknown_names(capsys):
    assert dispatcher.main(["no_such_figure"]) == 2
    assert "no_such_figure" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        dispatcher.main(["all", "--only", "astrology"])
    assert exc.value.code == 2


def test_bad_option_values_exit_2(tmp_path):
    from paper_figures import frl_fig1, theory_curves

    with pytest.raises(SystemExit) as exc:
        theory_curves.main(["--eps", "0.3", "--eta", "0.2", "--out", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        frl_fig1.main(["--seeds", "0,x", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_all_runs_the_selected_kinds(tmp_path):
    status = dispatcher.main(
        ["all", "--quick", "--only", "theory", "--out", str(tmp_path), "--quiet"]
    )
    assert status == 0
    assert {p.name for p in tmp_path.glob("*.png")} == {"theory_curves.png", "dro_weights.png"}


# --------------------------------------------------------------------------------------------
# theory scripts against the papers' closed forms
# --------------------------------------------------------------------------------------------
def test_theory_curves_follow_theorems_1_and_2(tmp_path):
    from paper_figures import theory_curves

    d, eta, sigma, k = 100, 0.2, 1.0, 2.0
    assert theory_curves.main(["--quick", "--out", str(tmp_path), "--quiet"]) == 0
    rows = [r for r in _rows(tmp_path / "theory_curves.csv") if r["sweep"] == "eps"]
    q = 2 * math.log(k) / (k**2 - 1)
    a = 2 / (k**2 - 1) * math.sqrt(d) * eta / sigma
    nat = {
        "-1": norm.cdf(a - k * math.sqrt(a**2 + q)),
        "+1": norm.cdf(-k * a + math.sqrt(a**2 + q)),
    }
    checked = 0
    for r in rows:
        eps = float(r["eps"])
        if r["classifier"] == "natural":
            expected = nat[r["class"]]
        else:  # FRL Theorem 2
            b = 2 / (k**2 - 1) * math.sqrt(d) * (eta - eps) / sigma
            shift = math.sqrt(d) * eps / sigma
            expected = (
                norm.cdf(b - k * math.sqrt(b**2 + q) - shift)
                if r["class"] == "-1"
                else norm.cdf(-k * b + math.sqrt(b**2 + q) - shift / k)
            )
        assert float(r["standard_error"]) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert float(r["boundary_error"]) == pytest.approx(
            float(r["robust_error"]) - float(r["standard_error"]), abs=1e-12
        )
        checked += 1
    assert checked == len(rows) > 40
    assert (tmp_path / "theory_curves.png").stat().st_size > 10_000


def test_dro_weights_are_on_the_simplex_and_use_the_whole_kl_budget(tmp_path):
    from paper_figures import dro_weights

    losses = [0.3, -0.2, -0.5, -0.9]
    argv = ["--quick", "--losses", ",".join(map(str, losses)), "--tau-max", "1.5"]
    assert dro_weights.main(argv + ["--out", str(tmp_path), "--quiet"]) == 0
    rows = _rows(tmp_path / "dro_weights.csv")
    taus = sorted({float(r["tau"]) for r in rows})
    values = []
    for tau in taus:
        w = np.array([float(r["weight_forward"]) for r in rows if float(r["tau"]) == tau])
        v = np.array([float(r["weight_reverse"]) for r in rows if float(r["tau"]) == tau])
        u = np.full(len(losses), 1 / len(losses))
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and np.all(w > 0)
        assert v.sum() == pytest.approx(1.0, abs=1e-12)
        # the losses differ, so the constraint is active at the optimum: KL(u || w) = tau, and
        # KL(w || u) = tau while tau < log C (beyond, all weight goes to the worst class)
        assert rel_entr(u, w).sum() == pytest.approx(tau, abs=1e-8)
        assert rel_entr(v, u).sum() == pytest.approx(min(tau, math.log(len(losses))), abs=1e-6)
        assert list(np.argsort(-w)) == list(
            np.argsort(-np.array(losses))
        )  # worse class, more weight
        values.append(float(w @ np.array(losses)))
    assert values[0] == pytest.approx(np.mean(losses), abs=1e-12)
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


# --------------------------------------------------------------------------------------------
# the run cache
# --------------------------------------------------------------------------------------------
def _tiny_spec(seed: int = 0, **kw) -> RunSpec:
    profile = Profile("digits", quick=True, epochs=1, train_per_class=12, test_per_class=6)
    return profile.scratch("pgd-at", seed, **kw)


def test_ensure_run_trains_once_then_reuses(cache):
    messages = []
    spec = _tiny_spec()
    run_dir = ensure_run(spec, cache, log=messages.append)
    final = read_final(run_dir)
    assert final["method"] == "pgd-at" and final["results"]["clean"]["counts"] == [6] * 10
    stamp = (run_dir / "final.json").stat().st_mtime_ns
    trained = len(messages)
    assert ensure_run(spec, cache, log=messages.append) == run_dir
    assert len(messages) == trained  # nothing trained the second time
    assert (run_dir / "final.json").stat().st_mtime_ns == stamp
    assert _tiny_spec(seed=1).key != spec.key  # another setting, another folder


def test_ensure_run_resumes_a_run_without_final_json(cache):
    spec = _tiny_spec()
    run_dir = ensure_run(spec, cache, log=None)
    before = read_final(run_dir)
    (run_dir / "final.json").unlink()  # as if interrupted after the last checkpoint
    messages = []
    assert ensure_run(spec, cache, log=messages.append) == run_dir
    assert messages[0].startswith("resuming")
    assert read_final(run_dir)["results"] == before["results"]  # same model, same attack seeds


def test_a_run_logs_plain_progress_lines_to_its_train_log(tmp_path, monkeypatch):
    import deep.config

    monkeypatch.setattr(deep.config, "DEFAULT_INTERVAL_S", 0.0)  # a line at every step
    spec = RunSpec("p", ("--dataset", "digits", "--method", "pgd-at", "--epochs", "1",
                         "--train-per-class", "5", "--batch-size", "25", "--attack-steps", "1",
                         "--final-attacks", "clean", "--final-n-per-class", "1"))  # fmt: skip
    messages = []
    run_dir = ensure_run(spec, tmp_path, log=messages.append)
    assert messages[0].endswith(f"(progress: {run_dir / 'train.log'})")
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1: step 2/2 (100.0%)" in log and "ETA" in log


def test_a_failing_run_is_one_line_with_deep_trains_message_and_leaves_the_cache(tmp_path, capsys):
    """A script whose deep.train run fails (here: CIFAR-10 files that are not there) prints one
    line with deep.train's own message, not a traceback nor deep.train's usage; the failed run
    is set aside (runs-dir/failed/) so nothing reuses or resumes it; --download and --data-dir
    reach deep.train."""
    from paper_figures import frl_fig1
    from paper_figures.runs import main_with_errors

    runs = tmp_path / "runs"
    argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "nonexistent"), "--seeds", "0",
            "--runs-dir", str(runs), "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert main_with_errors(lambda: frl_fig1.main(argv)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: deep.train failed for natural-s0")
    assert "missing file(s)" in err[0] and "usage" not in err[0] and "Traceback" not in err[0]
    assert [p.name for p in runs.iterdir()] == ["failed"]  # nothing left to reuse or resume
    (failed,) = (runs / "failed").iterdir()
    command = (failed / "train.log").read_text().splitlines()[0]
    assert f"--data-dir {tmp_path / 'nonexistent'}" in command and "--download" not in command
    assert str(failed / "train.log") in err[0]

    # --download is passed through (the digits data set is bundled: nothing to fetch).
    spec = RunSpec("dl", ("--dataset", "digits", "--method", "pgd-at", "--epochs", "0"),
                   download=True)  # fmt: skip
    assert spec.key == RunSpec("dl", spec.argv).key  # not part of the run's identity
    with pytest.raises(RunError, match="--epochs must be >= 1") as exc:
        ensure_run(spec, runs, log=None)
    assert "\n" not in str(exc.value)
    command = (runs / "failed" / spec.key / "train.log").read_text().splitlines()[0]
    assert command.endswith(" --download")


def test_run_spec_refuses_reserved_options():
    with pytest.raises(ValueError, match="--out"):
        RunSpec("x", ("--out", "somewhere"))


def test_corrupt_final_json_is_named(tmp_path):
    (tmp_path / "final.json").write_text("{not json")
    with pytest.raises(RunError, match="final.json"):
        read_final(tmp_path)


def test_mean_std_is_the_sample_standard_deviation():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert mean_std([3.0]) == (3.0, 0.0)


# --------------------------------------------------------------------------------------------
# deep scripts, for real on digits (tiny)
# --------------------------------------------------------------------------------------------
def test_frl_fig1_reports_the_runs_final_json(tmp_path, cache):
    from paper_figures import frl_fig1

    assert frl_fig1.main(TINY + ["--runs-dir", str(cache), "--out", str(tmp_path)]) == 0
    finals = {}
    for run_dir in cache.iterdir():
        if (run_dir / "final.json").exists():
            f = read_final(run_dir)
            if f.get("seed") == 0 and run_dir.name.startswith(("natural-", "pgd-at-", "trades-")):
                if f["results"]["clean"]["counts"] == [6] * 10:
                    finals[f["method"]] = f
    assert set(finals) == {"natural", "pgd-at", "trades"}
    rows = _rows(tmp_path / "frl_fig1.csv")
    assert len(rows) == 30
    for r in rows:
        errors = finals[r["method"]]["frl_errors"]
        c = int(r["class_index"])
        assert float(r["standard_error_pct"]) == pytest.approx(
            100 * errors["standard"]["per_class"][c]
        )
        assert float(r["robust_error_pct"]) == pytest.approx(100 * errors["robust"]["per_class"][c])
    table = _rows(tmp_path / "frl_table1.csv")
    assert len(table) == 10 and sum(r["selected"] == "hardest" for r in table) == 2
    for r in table:
        assert float(r["std_err_diff"]) == pytest.approx(
            float(r["std_err_pgd_at"]) - float(r["std_err_natural"])
        )
    assert (tmp_path / "frl_fig1.png").exists() and (tmp_path / "frl_table1.md").exists()


def test_faal_fig6_shows_the_logged_class_weights(tmp_path, cache):
    from paper_figures import faal_fig6

    assert faal_fig6.main(TINY + ["--runs-dir", str(cache), "--out", str(tmp_path)]) == 0
    runs = [d for d in cache.iterdir() if d.name.startswith("faal-at-from-pgd-at-s0-")]
    assert len(runs) == 1
    with (runs[0] / "class_weights.csv").open(newline="") as f:
        logged = np.array([[float(v) for v in r[2:]] for r in list(csv.reader(f))[1:]])
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    steps = sum(json.loads(line)["train"]["steps"] for line in lines if line.strip())
    assert logged.shape == (steps, 10)
    rows = _rows(tmp_path / "faal_fig6.csv")
    average = [float(r["weight"]) for r in rows if r["panel"].startswith("average")]
    np.testing.assert_allclose(average, logged.mean(axis=0), rtol=1e-12)
    assert sum(average) == pytest.approx(1.0, abs=1e-5)
    uniform = [float(r["weight"]) for r in rows if r["panel"] == "uniform"]
    assert uniform == [0.1] * 10


def test_frl_fig2_reads_the_simulation(tmp_path, cache):
    from paper_figures import frl_fig2

    assert frl_fig2.main(["--quick", "--runs-dir", str(cache), "--out", str(tmp_path),
                          "--quiet"]) == 0  # fmt: skip
    rows = _rows(tmp_path / "frl_fig2.csv")
    assert len(rows) == 4 * 2 * 3
    # the optimal linear classifiers' exact errors (FRL Thm 1-2 with d = 2, eta = 2, K = sqrt 2)
    d, eta, k, eps = 2, 2.0, math.sqrt(2.0), 0.5
    q = 2 * math.log(k) / (k**2 - 1)
    a = 2 / (k**2 - 1) * math.sqrt(d) * eta
    b = 2 / (k**2 - 1) * math.sqrt(d) * (eta - eps)
    expected = {
        ("natural", "-1"): norm.cdf(a - k * math.sqrt(a**2 + q)),
        ("natural", "+1"): norm.cdf(-k * a + math.sqrt(a**2 + q)),
        ("robust", "-1"): norm.cdf(b - k * math.sqrt(b**2 + q) - math.sqrt(d) * eps),
        ("robust", "+1"): norm.cdf(-k * b + math.sqrt(b**2 + q) - math.sqrt(d) * eps / k),
    }
    for r in rows:
        if r["metric"] == "standard":
            kind = r["classifier"].split("-")[1]
            assert float(r["theory_optimal"]) == pytest.approx(expected[(kind, r["class"])])
        assert float(r["ci_low"]) <= float(r["test_error"]) <= float(r["ci_high"])


def test_frl_fig3_runs_fixed_class_ratios_from_the_first_batch():
    from deep.train import build_parser, resolve_config
    from paper_figures.frl_fig3 import run_spec

    profile = Profile("digits", quick=True, epochs=1, train_per_class=12, test_per_class=6)
    base = _tiny_spec()
    weight = run_spec(profile, base, 0, 4, "weight", 4.5)
    eps = run_spec(profile, base, 0, 4, "eps", 2.5)
    parser = build_parser()
    cfg_w = resolve_config(parser.parse_args(list(weight.argv) + ["--init", "b.pt"]), parser)
    cfg_e = resolve_config(parser.parse_args(list(eps.argv) + ["--init", "b.pt"]), parser)
    assert cfg_w["method"] == cfg_e["method"] == "fixed-class"
    assert cfg_w["class_boundary_weight"] == [[4, 4.5]] and cfg_w["class_eps_scale"] is None
    assert cfg_e["class_eps_scale"] == [[4, 2.5]] and cfg_e["class_boundary_weight"] is None
    assert cfg_w["final_checkpoint"] == cfg_e["final_checkpoint"] == "last"
    assert cfg_w["lr"] == 0.001 and weight.init == base
    # ratio 1 is FRL's loss with uniform weights: one run serves both panels
    assert run_spec(profile, base, 0, 4, "weight", 1.0) == run_spec(profile, base, 0, 4, "eps", 1.0)
    with pytest.raises(ValueError, match="kind"):
        run_spec(profile, base, 0, 4, "margin", 2.0)


def test_frl_fig3_reports_the_target_class_errors(tmp_path, cache):
    from paper_figures import frl_fig3

    argv = TINY + ["--runs-dir", str(cache), "--out", str(tmp_path), "--target-class", "3"]
    assert frl_fig3.main(argv) == 0
    rows = _rows(tmp_path / "frl_fig3.csv")
    assert {(r["experiment"], float(r["ratio"])) for r in rows} == {
        ("weight", 1.0),
        ("weight", 2.5),
        ("weight", 4.5),
        ("eps", 1.0),
        ("eps", 2.5),
    }
    runs = {}
    for run_dir in cache.glob("fixed-*"):
        config = json.loads((run_dir / "config.json").read_text())
        if config["train_per_class"] == 12:
            runs[run_dir.name.split("-from-")[0]] = (config, read_final(run_dir))
    for r in rows:
        ratio = float(r["ratio"])
        name = "fixed-class-uniform" if ratio == 1 else f"fixed-{r['experiment']}{ratio:g}-c3"
        config, final = runs[name]
        option = "class_boundary_weight" if r["experiment"] == "weight" else "class_eps_scale"
        assert config[option] == (None if ratio == 1 else [[3, ratio]])
        assert Path(final["checkpoint"]).name == "last.pt"
        expected = 100 * final["frl_errors"][r["error"]]["per_class"][3]
        assert float(r["mean_pct"]) == pytest.approx(expected)
    (eps_dir,) = cache.glob("fixed-eps2.5-c3-*")
    for line in read_metrics(eps_dir):  # the larger budget from the first epoch on
        assert line["class_eps"][3] == pytest.approx(2.5 * line["class_eps"][0])


def test_faal_fig1_compares_the_ce_and_margin_statistics(tmp_path, cache):
    from paper_figures import faal_fig1

    assert faal_fig1.main(TINY + ["--runs-dir", str(cache), "--out", str(tmp_path)]) == 0
    finals = {}
    prefixes = {
        "faal-at-ce": "faal-at-ce-from-pgd-at-s0-",
        "faal-at": "faal-at-from-pgd-at-s0-",
        "pgd-at": "pgd-at-s0-",
    }
    for key, prefix in prefixes.items():
        dirs = [d for d in cache.glob(prefix + "*") if (d / "final.json").exists()]
        dirs = [d for d in dirs if read_final(d)["results"]["clean"]["counts"] == [6] * 10]
        assert len(dirs) == 1, prefix
        finals[key] = read_final(dirs[0])
        config = json.loads((dirs[0] / "config.json").read_text())
        assert config.get("faal_statistic", "margin") == ("ce" if key == "faal-at-ce" else "margin")
    rows = _rows(tmp_path / "faal_fig1.csv")
    assert len(rows) == 3 * (10 + 4)
    for r in rows:
        result = finals[r["method"]]["results"][r["result"]]
        if r["class_index"]:
            expected = result["per_class"][int(r["class_index"])]
        else:
            expected = result[r["scope"]]
        assert float(r["mean_pct"]) == pytest.approx(100 * expected)
    assert (tmp_path / "faal_fig1.png").stat().st_size > 10_000


def test_all_passes_the_common_options_to_deep_scripts(tmp_path, cache):
    # the runs are in the module's cache from the tests above: this reads them back
    argv = ["all", "--only", "frl_fig1,faal_fig6", "--runs-dir", str(cache), "--out", str(tmp_path)]
    assert dispatcher.main(argv + TINY) == 0
    assert {p.name for p in tmp_path.glob("*.png")} == {"frl_fig1.png", "faal_fig6.png"}
    first = _rows(tmp_path / "frl_fig1.csv")
    assert first and all(r["seeds"] == "1" for r in first)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "fashion-mnist"])
def test_every_table_row_is_a_valid_deep_train_command(dataset):
    from deep.train import build_parser, resolve_config
    from paper_figures import faal_tables, frl_tables

    profile = Profile(dataset, data_dir="DIR", seeds=(0, 1), autoattack=True)
    specs = [s for t in faal_tables.TABLES for row in faal_tables.table_rows(profile, t)
             for s in row.specs]  # fmt: skip
    specs += frl_tables.row_specs(profile, 0)
    seen = 0
    while specs:
        spec = specs.pop()
        parser = build_parser()
        argv = list(spec.argv) + (["--init", "base.pt"] if spec.init else [])
        cfg = resolve_config(parser.parse_args(argv), parser)  # exits 2 on a bad value
        assert cfg["dataset"] == dataset and "aa" in cfg["final_attacks"]
        if spec.init is not None:
            specs.append(spec.init)
            assert cfg["epochs"] in (2, 4, 6, 8, 80 if dataset != "fashion-mnist" else 10)
        seen += 1
    assert seen > 50
    wrn = faal_tables.table_rows(profile, 3)[0].specs[0].argv
    assert ("--model" in wrn) == (dataset != "fashion-mnist")
    # CFA and WAT rows of Tables 1, 4, 5, 6; CFA's evaluate the FAWA model
    for table, keys in ((1, {"cfa-trades", "wat-trades"}), (4, {"cfa-at", "cfa-trades",
                        "wat-trades"}), (5, {"cfa-at", "wat-trades"}),
                        (6, {"cfa-trades", "wat-trades"})):  # fmt: skip
        rows = [r for r in faal_tables.table_rows(profile, table) if r.key in keys]
        assert {r.key for r in rows} == keys
        for row in rows:
            argv = row.specs[0].argv
            assert ("fawa" in argv) == row.key.startswith("cfa")
            assert (row.epochs == "2") == (table == 5) and (row.specs[0].init is None) != (
                table == 5
            )
    # rows whose point is the end of training evaluate last.pt, not an earlier best.pt
    for table, wanted in ((6, lambda row: row.label in ("FAAL_AT", "FAAL_TRADES")),
                          (5, lambda row: row.key == "faal-at")):  # fmt: skip
        rows = [r for r in faal_tables.table_rows(profile, table) if wanted(r)]
        assert rows
        for row in rows:
            for spec in row.specs:
                i = spec.argv.index("--final-checkpoint")
                assert spec.argv[i + 1] == "last"


def test_table1_reads_cifar10c_columns_from_deep_evaluate(tmp_path):
    import argparse

    import torch

    from deep.checkpoint import save_atomic
    from deep.models import build_model
    from paper_figures import faal_tables
    from tests.deep.fake_datasets import write_cifar10, write_cifar10c

    write_cifar10(tmp_path / "c10", per_batch=20, n_test=30)
    write_cifar10c(tmp_path / "c10c", faal_tables.TABLE1_CORRUPTIONS, per_severity=60, seed=1)
    torch.manual_seed(0)
    model = build_model("small-cnn", 10, in_channels=3, image_size=32)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_atomic({"model_config": model.model_config, "model": model.state_dict()},
                run_dir / "best.pt")  # fmt: skip
    (run_dir / "final.json").write_text(
        json.dumps({"checkpoint": "best.pt", "classes": list("abcdefghij"), "results": {}})
    )
    args = argparse.Namespace(
        severity=5, cifar10c_dir=tmp_path / "c10c" / "CIFAR-10-C",
        data_dir=str(tmp_path / "c10"), device="cpu",
    )  # fmt: skip
    final = faal_tables._cifar10c_final(run_dir, args, None)
    assert set(final["cifar10c"]) == set(faal_tables.TABLE1_CORRUPTIONS)
    labels = np.load(tmp_path / "c10c" / "CIFAR-10-C" / "labels.npy")[-60:]
    for corruption in faal_tables.TABLE1_CORRUPTIONS:
        entry = final["cifar10c"][corruption]["5"]
        assert entry["counts"] == np.bincount(labels, minlength=10).tolist()  # severity 5 only
    # cached: a second call reads the same file back
    assert faal_tables._cifar10c_final(run_dir, args, None) == final
    # a failed evaluation (missing corruption files) names deep.evaluate's log, not a traceback
    broken = argparse.Namespace(**{**vars(args), "severity": 4, "cifar10c_dir": tmp_path / "none"})
    with pytest.raises(RunError, match=r"deep\.evaluate failed .*log: .*evaluate\.log"):
        faal_tables._cifar10c_final(run_dir, broken, None)
    # an unreadable cached result names the file and how to recompute it
    (run_dir / "cifar10c-severity5" / "final.json").write_text("{")
    with pytest.raises(RunError, match=r"cifar10c-severity5.final\.json is not readable JSON"):
        faal_tables._cifar10c_final(run_dir, args, None)


def test_model_option_sets_the_architecture_of_every_run_from_scratch(monkeypatch):
    """--model wrn-28-10 (FRL Tables 7-8): every run from scratch trains that model, fine-tunings
    inherit it from their --init run; without --model the runs (and their cache keys) are the
    script's own; `all` passes --model on to the deep scripts."""
    from paper_figures import __main__ as dispatcher
    from paper_figures import frl_tables
    from paper_figures.common import build_parser, parse_args

    parser = build_parser("frl_tables", "test")
    args = parse_args(parser, ["--dataset", "cifar10", "--data-dir", "D", "--model", "wrn-28-10"])
    assert args.profile.model == "wrn-28-10" and "wrn-28-10" in args.profile.describe()
    plain = parse_args(parser, ["--dataset", "cifar10", "--data-dir", "D"]).profile
    specs = frl_tables.row_specs(args.profile, 0)
    for spec, own in zip(specs, frl_tables.row_specs(plain, 0)):
        argv = list((spec.init or spec).argv)
        assert argv[argv.index("--model") + 1] == "wrn-28-10"
        if spec.init is not None:
            assert "--model" not in spec.argv and spec.argv == own.argv
        assert "--model" not in (own.init or own).argv
    assert specs[0].key != frl_tables.row_specs(plain, 0)[0].key
    with pytest.raises(SystemExit):
        parse_args(parser, ["--model", "vgg"])
    seen = []
    monkeypatch.setattr(dispatcher, "SCRIPTS", (dispatcher.Script("frl_tables", "deep", "x"),))
    monkeypatch.setattr(frl_tables, "main", lambda argv: seen.append(argv) or 0)
    assert dispatcher.run_all(["--model", "wrn-28-10", "--quiet"]) == 0
    assert seen and "wrn-28-10" == seen[0][seen[0].index("--model") + 1]


def test_quick_figures_are_stamped_as_smoke_tests(tmp_path):
    """A --quick profile's figures carry a banner naming the data set and the budget; full-budget
    profiles get none (their PNGs are unchanged)."""
    from PIL import Image

    from paper_figures.common import Profile
    from paper_figures.style import new_figure, save_figure

    quick = Profile("digits", quick=True, train_per_class=12)
    text = quick.smoke_test
    assert text.startswith("SMOKE TEST") and "digits" in text and "4 epochs" in text
    assert "12 training images per class" in text
    assert Profile("cifar10").smoke_test is None
    sizes = {}
    for name, banner in (("plain", None), ("smoke", text)):
        fig = new_figure(6.0, 3.0)
        fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
        with Image.open(save_figure(fig, tmp_path / f"{name}.png", smoke_test=banner)) as im:
            sizes[name] = im.size
        labels = [t.get_text() for t in fig.texts]
        assert any("SMOKE TEST" in s for s in labels) == (banner is not None)
    assert sizes["smoke"][1] > sizes["plain"][1]  # the banner is drawn above the figure


def test_faal_fig4_plots_cw100_of_each_runs_checkpoint_on_its_test_images(tmp_path, cache):
    """Fig. 4's robust accuracy is the paper's CW-100, computed on the checkpoint, test images and
    attack seed of each run's final.json (checked by evaluating the checkpoints here directly)."""
    from deep.checkpoint import model_from_checkpoint
    from deep.data import load_dataset, stratified_subset
    from deep.evaluate import evaluate_model
    from paper_figures import faal_fig4

    argv = TINY + ["--runs-dir", str(cache), "--out", str(tmp_path)]
    assert faal_fig4.main(argv) == 0
    rows = _rows(tmp_path / "faal_fig4.csv")
    assert {r["result"] for r in rows} == {"clean", "cw100"}
    test = load_dataset("digits").test
    for tau in (0.0, 0.5, 1.0):
        runs = [d for d in cache.glob("faal-at-from-trades-s0-*")
                if json.loads((d / "config.json").read_text())["tau"] == tau]  # fmt: skip
        assert len(runs) == 1
        final = read_final(runs[0])
        model, _ = model_from_checkpoint(runs[0] / Path(final["checkpoint"]).name)
        images = stratified_subset(test, final["n_per_class"], seed=final["seed"])
        direct = evaluate_model(
            model, images, num_classes=10, attacks=("clean", "cw100"), eps=final["eps"],
            step_size=final["step_size"], seed=final["seed"],
        )  # fmt: skip
        assert direct["clean"]["per_class"] == final["results"]["clean"]["per_class"]
        for which in ("average", "worst"):
            (row,) = [r for r in rows if float(r["tau"]) == tau and r["result"] == "cw100"
                      and r["statistic"] == which]  # fmt: skip
            assert float(row["mean_pct"]) == pytest.approx(100 * direct["cw100"][which], abs=1e-9)
    # cached: a second call evaluates nothing again
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*/evaluate-cw100/final.json")}
    assert len(stamps) == 3
    assert faal_fig4.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*/evaluate-cw100/final.json")} == stamps
