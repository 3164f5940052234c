"""benchmarks/fairness_benchmark.py end to end on a tiny budget, and its resume logic."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "fairness_benchmark.py"

TINY = [
    "--dataset", "digits", "--model", "small-cnn", "--epochs", "1", "--finetune-epochs", "1",
    "--train-per-class", "12", "--val-per-class", "3", "--test-per-class", "6",
    "--aa-per-class", "1", "--seeds", "0,1", "--aa-seeds", "0", "--aa-key-seeds", "0",
    "--attack-steps", "2",
    "--batch-size", "32",
    "--scratch", "pgd-at", "--finetune", "pgd-at:faal-at", "--jobs", "2",
]  # fmt: skip


def _bench(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *TINY, "--runs", str(tmp_path / "runs"), "--out",
           str(tmp_path / "out"), *extra]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _load_module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("fairness_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_help_reads_defaults_as_they_are_typed():
    text = " ".join(_load_module().build_parser().format_help().split())
    assert "(default: 0,1,2,3,4)" in text
    assert "(default: [" not in text and "(default: (" not in text
    assert "(default: pgd-at,trades," in text


@pytest.mark.slow
def test_benchmark_end_to_end_resumes_and_reports(tmp_path):
    first = _bench(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads((tmp_path / "out" / "fairness_benchmark_digits.json").read_text())
    config = report["config"]
    for key in ("dataset", "train_size", "val_per_class", "test_size", "aa_per_class", "seeds",
                "eps", "epochs", "attack_steps"):  # fmt: skip
        assert key in config
    assert config["dataset"] == "digits" and config["seeds"] == [0, 1]
    assert config["test_size"] == 60 and config["aa_per_class"] == 1
    assert set(report["rows"]) == {"pgd-at", "pgd-at+faal-at"}

    records = tmp_path / "out" / "fairness_benchmark_digits_runs"
    for name, row in report["rows"].items():
        assert row["init"] == ("scratch" if name == "pgd-at" else "pgd-at")
        assert row["seeds"] == [0, 1] and row["cpu_seconds"] > 0
        runs = [json.loads((records / name / f"seed{s}.json").read_text()) for s in (0, 1)]
        for attack in ("clean", "pgd20", "cw20"):
            for stat in ("average", "worst"):
                values = [r["final"]["results"][attack][stat] for r in runs]
                assert math.isclose(row[attack][stat]["mean"], statistics.mean(values))
                assert math.isclose(
                    row[attack][stat]["sd"], statistics.stdev(values), abs_tol=1e-12
                )
            for r, worst_class in zip(runs, row[attack]["worst_class"]):
                per_class = r["final"]["results"][attack]["per_class"]
                assert per_class[r["final"]["classes"].index(worst_class)] == min(per_class)
        # AutoAttack only for seed 0, on the 1-per-class subset: 10 images
        assert row["autoattack"]["seeds"] == [0]
        aa = runs[0]["autoattack"]["results"]["autoattack"]
        assert sum(aa["counts"]) == 10
        assert "autoattack" not in runs[1]
        # AutoAttack is at least as strong as PGD-20 on the same images
        assert aa["average"] <= runs[0]["autoattack"]["results"]["pgd20"]["average"] + 1e-12

    # the fine-tuned runs started from their own seed's base checkpoint
    ft = json.loads((records / "pgd-at+faal-at" / "seed1.json").read_text())
    assert ft["argv"][ft["argv"].index("--seed") + 1] == "1"
    # provenance: the commit and version it was made with, and the digest of its starting point
    commit = ft["provenance"]["git_commit"]
    if commit is not None:  # inside a checkout: the commit the run was made at (HEAD or before)
        made = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO)
        assert made.returncode == 0
    assert ft["provenance"]["package_version"] and "autoattack" not in ft
    assert ft["best_ties"] == "average"  # the rule that chose its best.pt among tied epochs
    ft0 = json.loads((records / "pgd-at+faal-at" / "seed0.json").read_text())
    assert ft0["autoattack_provenance"]["git_commit"] == ft["provenance"]["git_commit"]
    init = Path(ft["provenance"]["init"]["path"])
    import hashlib

    assert ft["provenance"]["init"]["sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert init.parent.name.startswith("seed1-") and init.parent.parent.name == "pgd-at"
    assert report["provenance"]["records_without_provenance"] == 0
    # the device each run and AutoAttack ran on (one device: no provenance sentence about it)
    assert ft["provenance"]["device"] == ft0["autoattack_provenance"]["device"] == "cpu"
    assert set(report["provenance"]["devices"]) == {"cpu"}
    # and the kind of CPU, as torch and /proc/cpuinfo name it here (the test's process is the
    # benchmark's machine)
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    kinds = {ft["provenance"]["cpu_kind"], ft0["autoattack_provenance"]["cpu_kind"]}
    assert len(kinds) == 1 and kinds.pop().split("+")[0] == capability
    assert report["provenance"]["cpu_kinds"] == {ft["provenance"]["cpu_kind"]: 6}
    # paired differences against the base are the mean of per-seed differences
    diff = report["paired_differences"]["pgd-at+faal-at vs pgd-at"]["pgd20"]["worst"]
    a = [json.loads((records / "pgd-at+faal-at" / f"seed{s}.json").read_text()) for s in (0, 1)]
    b = [json.loads((records / "pgd-at" / f"seed{s}.json").read_text()) for s in (0, 1)]
    per_seed = [
        x["final"]["results"]["pgd20"]["worst"] - y["final"]["results"]["pgd20"]["worst"]
        for x, y in zip(a, b)
    ]
    assert math.isclose(diff["mean"], statistics.mean(per_seed), abs_tol=1e-12)
    markdown = (tmp_path / "out" / "fairness_benchmark_digits.md").read_text()
    assert "pgd-at → faal-at" in markdown and "Paired differences" in markdown
    figures = tmp_path / "out" / "fairness_benchmark_digits_figures"
    for attack in ("clean", "pgd20", "cw20", "autoattack"):
        assert (figures / f"fairness_benchmark_digits_pareto_{attack}.png").stat().st_size > 0
        assert (figures / f"fairness_benchmark_digits_classwise_{attack}.png").stat().st_size > 0

    # a second call finds everything done: nothing is trained again, the report is the same
    again = _bench(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "start " not in again.stdout
    assert json.loads((tmp_path / "out" / "fairness_benchmark_digits.json").read_text()) == report
    status = _bench(tmp_path, "--status")
    assert "4/4 runs recorded; 0 jobs to do" in status.stdout


def test_plan_retrains_a_recorded_base_only_when_its_checkpoint_is_needed(tmp_path):
    bench = _load_module()
    args = bench.parse_args([*TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)])
    available = ("pgd-at", "faal-at")
    rows = bench.build_rows(args, available)
    store = bench.Store(args, rows)
    by_name = {r.name: r for r in rows}

    def record(name, seed, aa=True):
        entry = {"hash": store.hash(by_name[name], seed), "final": {}}
        if aa and seed == 0:
            entry["autoattack_argv"] = bench.aa_argv(args)
        store.write(by_name[name], seed, entry)

    def jobs():
        return {(j.kind, j.row.name, j.seed) for j in bench.plan(store, rows, [0, 1], [0])}

    assert len(jobs()) == 2 * 2 + 2  # nothing recorded: 4 trainings, 2 AutoAttacks
    for name in by_name:
        for seed in (0, 1):
            record(name, seed)
    assert jobs() == set()  # all recorded: nothing to do, checkpoints or not
    # a fine-tuning record made with other options (a new row) needs the base checkpoint back
    store.record_path(by_name["pgd-at+faal-at"], 1).unlink()
    assert jobs() == {("train", "pgd-at", 1), ("train", "pgd-at+faal-at", 1)}
    # ... unless the base's run folder still holds its checkpoint
    run_dir = store.run_dir(by_name["pgd-at"], 1)
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"x")
    (run_dir / "final.json").write_text(json.dumps({"checkpoint": "best.pt"}))
    assert jobs() == {("train", "pgd-at+faal-at", 1)}
    # a missing AutoAttack result needs the model's checkpoint: retrain it, then attack
    record("pgd-at+faal-at", 0, aa=False)
    assert ("train", "pgd-at+faal-at", 0) in jobs() and ("aa", "pgd-at+faal-at", 0) in jobs()
    assert ("train", "pgd-at", 0) in jobs()  # the fine-tuning needs its base's checkpoint
    # a record written with other options (another epoch count) is not reused
    other = bench.parse_args([*TINY, "--epochs", "2", "--runs", str(tmp_path / "r"), "--out",
                              str(tmp_path)])  # fmt: skip
    assert bench.Store(other, rows).record(by_name["pgd-at"], 0) is None


def test_kill_stops_a_background_benchmark_cleanly(tmp_path):
    """Started as `nohup ... &` does (SIGINT ignored) and stopped with `kill PID`: the running job
    saves its checkpoint and its CPU time is recorded; no process is left behind."""
    import signal
    import time

    runs = tmp_path / "runs"
    cmd = [sys.executable, str(SCRIPT), *TINY, "--epochs", "400", "--seeds", "0", "--jobs", "1",
           "--runs", str(runs), "--out", str(tmp_path / "out")]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    deadline = time.time() + 120
    while not list(runs.glob("pgd-at/seed0-*/last.pt")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(runs.glob("pgd-at/seed0-*/last.pt")), "the first run never saved a checkpoint"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert "stopped train pgd-at seed 0: the next call resumes it" in out and "FAILED" not in out
    (cpu_file,) = runs.glob("pgd-at/seed0-*.cpu")
    assert float(cpu_file.read_text()) > 0
    assert not list(runs.glob("pgd-at/seed0-*.cpu-pending"))
    (run_dir,) = [p for p in runs.glob("pgd-at/seed0-*") if p.is_dir()]
    log = (run_dir.with_suffix(".log")).read_text()
    assert "interrupted at epoch" in log  # deep.train saved and said how to resume


def test_autoattack_for_every_seed_of_the_rows_of_the_question(tmp_path):
    bench = _load_module()
    argv = [*TINY, "--scratch", "pgd-at,trades", "--finetune", "pgd-at:pgd-at,faal-at,frl-rwrm",
            "--aa-key-seeds", "0,1", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path)]  # fmt: skip
    args = bench.parse_args(argv)
    rows = bench.build_rows(args, ("pgd-at", "trades", "faal-at", "frl-rwrm"))
    store = bench.Store(args, rows)
    jobs = bench.plan(store, rows, args.seeds, args.aa_seeds, args.aa_key_seeds)
    aa = {(j.row.name, j.seed) for j in jobs if j.kind == "aa"}
    key = ("pgd-at", "pgd-at+pgd-at", "pgd-at+faal-at")  # the base, its control, FAAL
    assert aa == {(n, s) for n in key for s in (0, 1)} | {("trades", 0), ("pgd-at+frl-rwrm", 0)}
    # the default: seed 0 of every row only, when --aa-key-seeds names no other seed
    args = bench.parse_args([*argv, "--aa-key-seeds", "0"])
    jobs = bench.plan(store, rows, args.seeds, args.aa_seeds, args.aa_key_seeds)
    assert {j.seed for j in jobs if j.kind == "aa"} == {0}


def test_plan_order_question_first_then_every_row_seed_by_seed(tmp_path):
    bench = _load_module()
    argv = [*TINY, "--scratch", "pgd-at,trades,faal-at",
            "--finetune", "pgd-at:pgd-at,faal-at,frl-rwrm,trades", "--seeds", "0,1,2",
            "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]  # fmt: skip
    args = bench.parse_args(argv)
    rows = bench.build_rows(args, ("pgd-at", "trades", "faal-at", "frl-rwrm"))
    jobs = bench.plan(bench.Store(args, rows), rows, args.seeds, args.aa_seeds, args.aa_key_seeds)
    trained = [(j.row.name, j.seed) for j in jobs if j.kind == "train"]
    question = {"pgd-at", "pgd-at+pgd-at", "pgd-at+faal-at"}
    n_question = 3 * len(question)
    assert {name for name, _ in trained[:n_question]} == question
    rest = trained[n_question:]
    # the other fine-tunings (cheap) before the from-scratch rows, each group seed by seed
    finetuned, scratch = rest[:6], rest[6:]
    assert finetuned == [(n, s) for s in (0, 1, 2) for n in ("pgd-at+frl-rwrm", "pgd-at+trades")]
    assert scratch == [(n, s) for s in (0, 1, 2) for n in ("trades", "faal-at")]
    assert len(trained) == len(set(trained)) == 7 * 3


def test_paired_references_control_base_pgd_at_and_trades_for_trades_losses():
    bench = _load_module()
    report = sys.modules["fairness_report"]

    def entry(row, worst_by_seed):
        records = {
            s: {"final": {"results": {"pgd20": {"average": 0.7, "worst": w}}}}
            for s, w in worst_by_seed.items()
        }
        return {"row": row, "records": records}

    Row = bench.Row
    rows = {
        "pgd-at": entry(Row("pgd-at", "pgd-at", None), {0: 0.30, 1: 0.20}),
        "trades": entry(Row("trades", "trades", None), {0: 0.40, 1: 0.35}),
        "faal-trades": entry(Row("faal-trades", "faal-trades", None), {0: 0.50, 1: 0.55, 2: 0.9}),
        "dafa-at": entry(Row("dafa-at", "dafa-at", None), {0: 0.45}),
        "pgd-at+pgd-at": entry(Row("pgd-at+pgd-at", "pgd-at", "pgd-at"), {0: 0.25, 1: 0.20}),
        "pgd-at+cfa-at": entry(Row("pgd-at+cfa-at", "cfa-at", "pgd-at"), {1: 0.40}),
    }
    out = report.paired(rows, {})
    assert set(out) == {
        "trades vs pgd-at", "faal-trades vs pgd-at", "faal-trades vs trades", "dafa-at vs pgd-at",
        "pgd-at+pgd-at vs pgd-at", "pgd-at+cfa-at vs pgd-at+pgd-at", "pgd-at+cfa-at vs pgd-at",
    }  # fmt: skip
    # paired over the seeds both rows have: seed 2 of faal-trades has no partner
    diff = out["faal-trades vs trades"]["pgd20"]["worst"]
    assert diff["n"] == 2 and math.isclose(diff["mean"], 0.15)
    assert math.isclose(diff["sd"], statistics.stdev([0.10, 0.20]))
    diff = out["pgd-at+cfa-at vs pgd-at+pgd-at"]["pgd20"]["worst"]
    assert diff["n"] == 1 and math.isclose(diff["mean"], 0.20) and diff["sd"] is None


def test_a_difference_that_is_the_same_in_every_seed_is_not_tested():
    """0.36 - 0.34 and 0.38 - 0.36 differ by float rounding only: no t-test (it would give
    p ~ 1e-16), sd 0; a difference of one image in 50 between seeds is tested."""
    from scipy import stats

    _load_module()
    report = sys.modules["fairness_report"]
    a, b = [0.36, 0.38, 0.40], [0.34, 0.36, 0.38]
    assert len({x - y for x, y in zip(a, b)}) > 1  # not equal as floats
    same = report.paired_stats(a, b)
    assert same["sd"] == 0.0 and same["p"] is None and same["ci95"] is None
    assert math.isclose(same["mean"], 0.02)
    a[2] += 1 / 50
    varied = report.paired_stats(a, b)
    assert varied["sd"] > 0 and varied["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_gain_figure_plots_each_fine_tuning_against_its_control(tmp_path):
    _load_module()
    report_module = sys.modules["fairness_report"]

    def diff(avg, worst, n=3):
        sd = None if n == 1 else 0.02
        return {"pgd20": {"average": {"mean": avg, "sd": sd, "n": n},
                          "worst": {"mean": worst, "sd": sd, "n": n}}}  # fmt: skip

    rows = {name: {"init": init, "label": name.replace("+", " → "), "method": name.split("+")[-1]}
            for name, init in (
        ("pgd-at", "scratch"), ("pgd-at+pgd-at", "pgd-at"), ("pgd-at+faal-at", "pgd-at"),
        ("trades+trades", "trades"), ("trades+cfa-trades", "trades"),
        ("trades+wat-trades", "trades"))}  # fmt: skip
    report = {
        "rows": rows,
        "paired_differences": {
            "pgd-at+pgd-at vs pgd-at": diff(0.001, -0.01),  # the control itself: not a point
            "pgd-at+faal-at vs pgd-at+pgd-at": diff(-0.013, 0.17),
            "pgd-at+faal-at vs pgd-at": diff(-0.013, 0.15),  # against the base: not this figure
            "trades+cfa-trades vs trades+trades": diff(-0.003, 0.032, n=1),
        },  # trades+wat-trades has no pair with its control yet: left out
    }
    points = report_module.gain_over_control(report, "pgd20")
    assert [(p["row"], p["base"]) for p in points] == [
        ("pgd-at+faal-at", "pgd-at"), ("trades+cfa-trades", "trades")]  # fmt: skip
    assert math.isclose(points[0]["worst"]["mean"], 17.0)
    assert math.isclose(points[0]["average"]["mean"], -1.3)
    assert points[1]["worst"]["sd"] is None and points[1]["worst"]["n"] == 1
    path = report_module._gain_figure(report, "pgd20", "PGD-20", tmp_path / "gain.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report_module._gain_figure(report, "cw20", "CW-20", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_pareto_figure_one_colour_per_method_one_marker_per_start(tmp_path):
    _load_module()
    report_module = sys.modules["fairness_report"]

    def stat(avg, worst):
        return {
            "pgd20": {"average": {"mean": avg, "sd": 0.01}, "worst": {"mean": worst, "sd": None}}
        }

    rows = {
        name: {"init": init, "method": method, "label": name, **stat(avg, worst)}
        for name, init, method, avg, worst in (
            ("pgd-at", "scratch", "pgd-at", 0.75, 0.33),
            ("faal-at", "scratch", "faal-at", 0.70, 0.46),
            ("pgd-at+pgd-at", "pgd-at", "pgd-at", 0.75, 0.32),
            ("pgd-at+faal-at", "pgd-at", "faal-at", 0.74, 0.49),
            ("trades+faal-trades", "trades", "faal-trades", 0.72, 0.52),  # base not in the report
        )
    }  # fmt: skip
    colours, markers = report_module._styles(rows)
    # a method keeps its colour whether trained from scratch or fine-tuned
    assert set(colours) == {"pgd-at", "faal-at", "faal-trades"}
    assert len(set(colours.values())) == 3
    from matplotlib.colors import to_rgb

    # twelve methods: twelve colours, none of them the Pareto front's grey
    many, _ = report_module._styles(
        {f"m{i}": {"method": f"m{i}", "init": "scratch"} for i in range(12)}
    )
    assert len({to_rgb(c) for c in many.values()}) == 12
    assert to_rgb("tab:gray") not in {to_rgb(c) for c in many.values()}
    assert (
        markers["scratch"] == "o"
        and len({markers[s] for s in ("scratch", "pgd-at", "trades")}) == 3
    )

    def width(path):  # PNG: the width is the first field of the IHDR chunk
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        return int.from_bytes(data[16:20], "big")

    report = {"rows": rows, "config": {"finetune_epochs": 2}}
    both = report_module._pareto_figure(report, rows, "pgd20", "PGD-20", tmp_path / "both.png")
    tuned = {n: r for n, r in rows.items() if r["init"] != "scratch"}
    one = report_module._pareto_figure(report, tuned, "pgd20", "PGD-20", tmp_path / "one.png")
    # from-scratch and fine-tuned rows side by side; one panel when a kind is missing
    assert width(both) == 2 * width(one)


def test_status_estimates_what_is_left_from_the_recorded_cpu_time(tmp_path, capsys):
    bench = _load_module()
    args = bench.parse_args([*TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)])
    rows = bench.build_rows(args, ("pgd-at", "faal-at"))
    store = bench.Store(args, rows)
    scratch, ft = rows[0], rows[1]
    assert scratch.init is None and ft.init == "pgd-at"
    job = bench.Job("train", scratch, 1)
    assert bench.estimate_cpu_seconds(store, job, rows, [0, 1]) is None  # nothing to go by
    bench.print_status(store, rows, bench.plan(store, rows, [0, 1], [0]))
    assert "left: no estimate yet" in capsys.readouterr().out

    entry = {"hash": store.hash(scratch, 0), "final": {}, "cpu_seconds": {"train": 600.0}}
    store.write(scratch, 0, {**entry, "cpu_seconds": {"train": 600.0, "autoattack": 90.0}})
    assert bench.estimate_cpu_seconds(store, job, rows, [0, 1]) == 600.0  # the same row
    # a fine-tuning run without a recorded fine-tuning is not estimated from a scratch run
    assert bench.estimate_cpu_seconds(store, bench.Job("train", ft, 0), rows, [0, 1]) is None
    assert bench.estimate_cpu_seconds(store, bench.Job("aa", ft, 0), rows, [0, 1]) == 90.0
    # an interrupted run with 1 of its 2 epochs done has half its time left
    run_dir = store.run_dir(scratch, 1)
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"x")
    (run_dir / "config.json").write_text(json.dumps({"epochs": 2}))
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert bench.estimate_cpu_seconds(store, job, rows, [0, 1]) == 300.0

    bench.print_status(store, rows, bench.plan(store, rows, [0, 1], [0]))
    out = capsys.readouterr().out
    assert "1/4 runs recorded" in out and "train pgd-at seed 1  [~5 CPU-min]" in out
    assert "no estimate yet" in out and "jobs without an estimate" in out

    # a call for another seed only still estimates from the folder's records
    store.write_manifest()
    args = bench.parse_args([*TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path),
                             "--seeds", "2", "--aa-seeds", "2", "--aa-key-seeds", "2"])  # fmt: skip
    only = bench.build_rows(args, ("pgd-at", "faal-at"))
    store = bench.Store(args, only)
    bench.print_status(store, only, bench.plan(store, only, [2], [2]))
    assert "train pgd-at seed 2  [~10 CPU-min]" in capsys.readouterr().out


def test_cpu_time_lost_with_a_killed_attempt_is_flagged(tmp_path, monkeypatch):
    bench = _load_module()
    import fairness_report

    args = bench.parse_args([*TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)])
    rows = bench.build_rows(args, ("pgd-at", "faal-at"))
    store = bench.Store(args, rows)
    row = rows[0]
    calls = []

    def fake_deep_train(cmd, log, threads):  # what deep.train leaves behind, and its CPU time
        calls.append(cmd)
        run_dir = Path(cmd[cmd.index("--resume" if "--resume" in cmd else "--out") + 1])
        run_dir.mkdir(parents=True, exist_ok=True)
        results = {"clean": {"average": 1.0, "worst": 1.0, "per_class": [1.0] * 10}}
        final = {"results": results, "classes": [str(c) for c in range(10)]}
        (run_dir / "final.json").write_text(json.dumps(final))
        (run_dir / "metrics.jsonl").write_text("{}\n")
        return 0, 100.0

    monkeypatch.setattr(bench, "_run_logged", fake_deep_train)
    bench.run_train(store, bench.Job("train", row, 0))  # a clean run: all its time is known
    assert "--out" in calls[-1] and store.record(row, 0)["cpu_complete"] is True
    # seed 1 was killed with a session after its first checkpoint: no CPU time came back
    killed = store.run_dir(row, 1)
    killed.mkdir(parents=True)
    (killed / "last.pt").write_bytes(b"x")
    killed.with_suffix(".cpu-pending").touch()
    bench.run_train(store, bench.Job("train", row, 1))
    assert "--resume" in calls[-1]
    record = store.record(row, 1)
    assert record["cpu_complete"] is False and record["cpu_seconds"]["train"] == 100.0

    summary = fairness_report.summarise_row({"row": row, "records": {0: store.record(row, 0),
                                                                     1: record}})  # fmt: skip
    assert summary["train_cpu_seconds_per_run"] == 100.0  # the partial run is left out
    assert summary["cpu_partial_runs"] == 1 and summary["cpu_seconds"] == 200.0
    job = bench.Job("train", row, 2)
    assert bench.estimate_cpu_seconds(store, job, rows, [0, 1, 2]) == 100.0


def test_bad_options_are_refused(tmp_path):
    for bad, message in (
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--aa-seeds", "5"], "--aa-seeds must be a subset of --seeds"),
        (["--tau-sweep", "0"], "--tau-sweep: every tau must be > 0"),
        (["--finetune", "nobase"], "is not BASE:METHOD"),
        (["--scratch", "pgd-at,no-such-method"], "--scratch: unknown method(s) no-such-method"),
        (["--finetune", "pgd-at:faal-at;trades:trades"], "base(s) trades must also be"),
        (["--dataset", "mnist"], "--dataset mnist: choose from digits, fashion-mnist"),
        (["--model", "vgg"], "--model vgg: choose from small-cnn"),
        (["--device", "gpu"], "--device gpu: choose auto, cpu, cuda"),
    ):
        result = _bench(tmp_path, *bad)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the options are known good


def test_readme_shows_the_committed_benchmark_tables():
    _load_module()
    import fairness_report

    readme = (REPO / "README.md").read_text()
    markdown = (REPO / "docs" / "results" / "fairness_benchmark.md").read_text()
    block = readme.split(fairness_report.README_START)[1].split(fairness_report.README_END)[0]
    assert block.strip() == fairness_report.table_block(markdown)
    # the JSON behind the table holds the rows the README shows
    report = json.loads((REPO / "docs" / "results" / "fairness_benchmark.json").read_text())
    for row in report["rows"].values():
        assert f"| {row['label']} | {len(row['seeds'])} |" in block


FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


def _tree_digest(root: Path, paths: list[str]) -> dict[str, str]:
    import hashlib

    out = {}
    for rel in paths:
        path = root / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_every_option_a_run_reads_is_part_of_the_protocol():
    """The deep.train and deep.evaluate options of every run, and the runs' identities, read only
    protocol options: an option outside ``PROTOCOL_FIELDS`` cannot change a number without also
    sending the run to another folder."""
    module = _load_module()
    read: set[str] = set()

    class Spy(argparse.Namespace):
        def __getattribute__(self, name):
            if not name.startswith("_"):
                read.add(name)
            return super().__getattribute__(name)

    args = module.parse_args(["--tau-sweep", "0.2"])
    spy = Spy(**vars(args))
    rows = module.build_rows(args, module._available_methods())
    by_name = {r.name: r for r in rows}
    assert any(r.init for r in rows) and any(not r.init for r in rows)
    for row in rows:
        module.run_argv(spy, row, 3)
        module.run_hash(spy, by_name, row, 3)
    module.aa_argv(spy)
    assert read and read <= set(module.PROTOCOL_FIELDS), sorted(read - set(module.PROTOCOL_FIELDS))
    # and every protocol option reaches the runs: changing it changes some run's identity
    scratch, finetune = rows[0], next(r for r in rows if r.init)
    for name in module.PROTOCOL_FIELDS:
        value = getattr(args, name)
        if name == "dataset":
            changed = "cifar10"
        elif name == "model":
            changed = "resnet18"
        elif isinstance(value, float):
            changed = value / 2
        else:
            changed = (value or 0) + 7
        other = argparse.Namespace(**{**vars(args), name: changed})
        before = [module.run_hash(args, by_name, r, 0) for r in (scratch, finetune)]
        after = [module.run_hash(other, by_name, r, 0) for r in (scratch, finetune)]
        assert before != after or module.aa_argv(args) != module.aa_argv(other), name


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="Fashion-MNIST files not installed")
def test_a_small_run_leaves_the_committed_results_untouched(tmp_path):
    """The small run a new user tries first (the committed data set, other sizes) goes to a folder
    of its own protocol; docs/ and the README stay byte-identical, and pointing it at docs/results
    is refused in one line."""
    import shutil

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True)  # fmt: skip
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    copy = tmp_path / "repo"
    for rel in files.stdout.splitlines():
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    before = _tree_digest(copy, ["docs", "README.md"])
    small = ["--epochs", "1", "--train-per-class", "20", "--val-per-class", "10",
             "--test-per-class", "10", "--aa-per-class", "1", "--scratch", "pgd-at",
             "--finetune", "pgd-at:faal-at", "--seeds", "0", "--finetune-epochs", "1",
             "--attack-steps", "2", "--jobs", "1"]  # fmt: skip
    script = copy / "benchmarks" / "fairness_benchmark.py"
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1")

    def bench(*extra):
        return subprocess.run([sys.executable, str(script), *small, *extra], cwd=copy, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    done = bench()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "differs from the committed one (epochs 5 -> 1" in done.stdout
    own = [p for p in (copy / "runs" / "fairness-benchmark").glob("fairness_benchmark-*")]
    assert len(own) == 1
    assert (own[0] / "fairness_benchmark_runs" / "pgd-at+faal-at" / "seed0.json").exists()
    report = json.loads((own[0] / "fairness_benchmark.json").read_text())
    assert set(report["rows"]) == {"pgd-at", "pgd-at+faal-at"}
    assert _tree_digest(copy, ["docs", "README.md"]) == before

    refused = bench("--out", "docs/results")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[0].startswith("python benchmarks/fairness_bench")
    assert "holds a benchmark of another protocol (epochs 5 -> 1" in refused.stderr
    assert _tree_digest(copy, ["docs", "README.md"]) == before
    # the same protocol, asked for explicitly, reuses its folder (nothing is trained again)
    again = bench("--out", str(own[0]))
    assert again.returncode == 0 and "start " not in again.stdout, again.stdout + again.stderr


def test_a_call_with_fewer_rows_or_seeds_extends_the_report_never_shrinks_it(tmp_path):
    bench = _load_module()
    base = [*TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    args = bench.parse_args(base)
    rows = bench.build_rows(args, ("pgd-at", "faal-at"))
    store = bench.Store(args, rows)
    store.write_manifest()
    for row in rows:
        for seed in (0, 1):
            store.write(row, seed, {"hash": store.hash(row, seed), "final": {}})
    # only the base row, only seed 0: both rows and both seeds stay in the report's inputs
    fewer = bench.parse_args([*base, "--finetune", "", "--seeds", "0"])
    small = bench.Store(fewer, bench.build_rows(fewer, ("pgd-at", "faal-at")))
    assert list(small.report_rows) == ["pgd-at", "pgd-at+faal-at"]
    assert small.report_seeds["seeds"] == [0, 1]
    fewer.sizes = {}
    inputs = bench.report_inputs(small)
    assert {n: sorted(e["records"]) for n, e in inputs["rows"].items()} == {
        "pgd-at": [0, 1],
        "pgd-at+faal-at": [0, 1],
    }
    assert inputs["args"].command == store.command  # the command that made all of them
    # another protocol cannot write into that folder
    other = subprocess.run(
        [sys.executable, str(SCRIPT), *base, "--epochs", "2", "--status"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert other.returncode == 2 and "epochs 1 -> 2" in other.stderr, other.stderr


def test_committed_statistics_agree_with_an_independent_recomputation():
    """Every paired difference of the committed report, recomputed from the records' per-seed
    per-class accuracies: mean, 95 % CI and p from the t distribution written out here, and Holm's
    step-down adjustment within each family, metric and statistic."""
    from scipy import stats

    out = REPO / "docs" / "results"
    report = json.loads((out / "fairness_benchmark.json").read_text())
    records = out / "fairness_benchmark_runs"
    sources = {"clean": "final", "pgd20": "final", "cw20": "final", "autoattack": "autoattack",
               "aa_subset_pgd20": "autoattack"}  # fmt: skip

    def per_seed(row, attack, stat):
        values = {}
        for path in sorted((records / row).glob("seed*.json")):
            record = json.loads(path.read_text())
            if record["seed"] not in report["rows"][row]["seeds"]:
                continue
            holder = record.get(sources[attack])
            key = "pgd20" if attack == "aa_subset_pgd20" else attack
            if holder is None or key not in holder["results"]:
                continue
            per_class = holder["results"][key]["per_class"]
            values[record["seed"]] = (min if stat == "worst" else statistics.mean)(per_class)
        return values

    expected_p: dict[tuple, list] = {}
    checked = 0
    for name, comparison in report["paired_differences"].items():
        a_row, b_row = name.split(" vs ")
        assert comparison["family"] in ("fine-tuning", "fine-tuning vs base", "from scratch")
        for attack, cells in comparison.items():
            if attack == "family":
                continue
            for stat, cell in cells.items():
                a, b = per_seed(a_row, attack, stat), per_seed(b_row, attack, stat)
                d = [a[s] - b[s] for s in sorted(set(a) & set(b))]
                n = len(d)
                assert cell["n"] == n and math.isclose(cell["mean"], statistics.mean(d),
                                                        abs_tol=1e-9)  # fmt: skip
                if n < 2 or max(d) - min(d) < 1e-9:  # one seed, or one difference: no test
                    assert cell["p"] is None and cell["ci95"] is None
                    continue
                se = statistics.stdev(d) / math.sqrt(n)
                t = statistics.mean(d) / se
                p = 2 * stats.t.sf(abs(t), n - 1)
                half = stats.t.ppf(0.975, n - 1) * se
                assert math.isclose(cell["p"], p, rel_tol=1e-7, abs_tol=1e-12)
                assert cell["ci95"][0] == pytest.approx(statistics.mean(d) - half, abs=1e-9)
                assert cell["ci95"][1] == pytest.approx(statistics.mean(d) + half, abs=1e-9)
                expected_p.setdefault((comparison["family"], attack, stat), []).append(
                    (p, cell["p_holm"])
                )
                checked += 1
    assert checked > 100
    for group in expected_p.values():  # Holm: step-down, monotone, capped at 1
        ranked = sorted(group)
        running = 0.0
        for i, (p, p_holm) in enumerate(ranked):
            running = max(running, min(1.0, (len(ranked) - i) * p))
            assert math.isclose(p_holm, running, rel_tol=1e-9)


def test_the_code_regenerates_the_committed_report_exactly():
    """The report code, run on the committed records (``--report-only`` without figures), writes
    the committed JSON and Markdown byte for byte: what the independent recomputation above checks
    is what the code computes, not only what it once wrote."""
    module = _load_module()
    import fairness_report

    out = REPO / "docs" / "results"
    args = module.parse_args(["--report-only"])
    assert Path(args.out).resolve() == out.resolve()
    store = module.Store(args, module.build_rows(args, module._available_methods()))
    inputs = module.report_inputs(store)
    _, json_text, markdown = fairness_report.report_texts(inputs["args"], inputs)
    assert json_text == (out / "fairness_benchmark.json").read_text()
    assert markdown == (out / "fairness_benchmark.md").read_text()


def test_the_summary_claims_only_what_the_holm_adjusted_tests_allow():
    """Each line of the generated summary (README and report) quotes its comparison's numbers,
    and says "higher" / "lower" exactly where the Holm-adjusted p < 0.05."""
    _load_module()
    import re

    import fairness_report

    report = json.loads((REPO / "docs" / "results" / "fairness_benchmark.json").read_text())
    summary = fairness_report.summary_markdown(report)
    readme = (REPO / "README.md").read_text()
    assert summary in readme
    labels = {n: r["label"] for n, r in report["rows"].items()}
    bullets = [ln for ln in summary.splitlines() if ln.startswith("- ")]
    diffs = report["paired_differences"]
    wanted = [n for f in ("fine-tuning", "from scratch") for n in diffs if diffs[n]["family"] == f]
    assert len(bullets) == len(wanted)
    for name, line in zip(wanted, bullets):
        a, b = name.split(" vs ")
        assert line.startswith(f"- {labels[a]} vs {labels[b]} (n = ")
        cells = report["paired_differences"][name]["pgd20"]
        for stat, word in (("worst", "worst class"), ("average", "average")):
            cell = cells[stat]
            lo, hi = (f"{round(100 * v, 1) + 0.0:+.1f}".replace("-", "−") for v in cell["ci95"])
            assert f"[{lo}, {hi}]" in line
            said = re.search(rf"[:;] {word} [^(]*\(Holm p = [0-9.e-]+: ([a-z]+)", line)
            if cell["p_holm"] < 0.05:
                assert said.group(1) == ("higher" if cell["mean"] > 0 else "lower"), line
            else:
                assert said.group(1) == "not", line
                assert f"not distinguishable at {cell['n']} seeds" in line


def test_provenance_names_records_of_several_commits_or_devices():
    _load_module()
    import fairness_report

    def record(commit, device, aa_device=None):
        made = {"git_commit": commit, "package_version": "0.1.0", "dirty": False}
        out = {"provenance": {**made, **({"device": device} if device else {})}}
        if aa_device:
            out["autoattack_provenance"] = {**made, "device": aa_device}
        return out

    one = {"a": {"records": {0: record("c1", None), 1: record("c1", "cpu", "cpu")}}}
    summary = fairness_report.provenance_summary(one)
    assert summary["devices"] == {"cpu": 2} and summary["git_commits"] == {"c1": 3}
    assert fairness_report.provenance_note({"provenance": summary}) == ""
    mixed = {"a": {"records": {0: record("c1", "cpu"), 1: record("c2", "cuda", "cuda")}}}
    note = fairness_report.provenance_note(
        {"provenance": fairness_report.provenance_summary(mixed)}
    )
    assert "2 commits (c1: 1, c2: 2" in note
    assert "made on 2 devices (cpu: 1, cuda: 2)" in note
    old = {"a": {"records": {0: record("c1", None)}}}
    assert "devices" not in fairness_report.provenance_summary(old)
    assert "cpu_kinds" not in fairness_report.provenance_summary(old)
    # CPU runs name their kind of CPU; two kinds are named, records without one are not counted
    kinds = {"a": {"records": {0: record("c1", "cpu"), 1: record("c1", "cpu", "cpu")}}}
    kinds["a"]["records"][0]["provenance"]["cpu_kind"] = "AVX512"
    kinds["a"]["records"][1]["provenance"]["cpu_kind"] = "AVX2"
    summary = fairness_report.provenance_summary(kinds)
    assert summary["cpu_kinds"] == {"AVX2": 1, "AVX512": 1} and summary["devices"] == {"cpu": 3}
    note = fairness_report.provenance_note({"provenance": summary})
    assert "made on 2 kinds of CPU (AVX2: 1, AVX512: 1)" in note and "devices" not in note
    kinds["a"]["records"][1]["provenance"]["cpu_kind"] = "AVX512"
    summary = fairness_report.provenance_summary(kinds)
    assert fairness_report.provenance_note({"provenance": summary}) == ""


def test_point_labels_are_moved_apart_until_none_overlap():
    _load_module()
    import fairness_report
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(74.9, 34.0), (75.0, 33.7), (74.8, 34.2), (75.1, 32.5), (75.2, 29.6), (73.5, 36.3)]
    ax.scatter(*zip(*points))
    ax.set_xlim(64, 76)
    ax.set_ylim(25, 55)
    labels = [ax.annotate(f"row {i} (base)", p, fontsize=6, xytext=(3, 3),
                          textcoords="offset points") for i, p in enumerate(points)]  # fmt: skip
    fig.canvas.draw()
    assert fairness_report.labels_overlap(labels) > 0  # as first drawn, the labels collide
    fairness_report.place_labels(ax, labels)
    assert fairness_report.labels_overlap(labels) == 0
    plt.close(fig)


def test_eps_as_a_fraction_reaches_the_runs_exactly(tmp_path):
    bench = _load_module()
    args = bench.parse_args([*TINY, "--eps", "8/255", "--out", str(tmp_path / "o")])
    argv = bench.scratch_argv(args)
    assert float(argv[argv.index("--eps") + 1]) == 8 / 255
    assert bench.exact_number(0.1) == "0.1"  # short values keep their form (and run identities)


KEY_ROWS = ("pgd-at", "trades", "pgd-at+pgd-at", "trades+trades", "pgd-at+faal-at",
            "trades+faal-trades")  # fmt: skip


def test_the_committed_benchmark_covers_its_protocol():
    """The committed records are the whole protocol: 20 rows, seeds 0-4 each with PGD-20 and
    CW-20 on the full 10,000-image test set, AutoAttack on 50 images per class at seeds 0, 3 and 4
    of every row and at all five seeds of the rows of the question."""
    out = REPO / "docs" / "results"
    report = json.loads((out / "fairness_benchmark.json").read_text())
    config = report["config"]
    assert config["test_size"] == 10000 and config["aa_per_class"] == 50
    assert len(report["rows"]) == 20
    for name in report["rows"]:
        final_seeds, aa_seeds = set(), set()
        for path in sorted((out / "fairness_benchmark_runs" / name).glob("seed*.json")):
            record = json.loads(path.read_text())
            results = record["final"]["results"]
            if all(sum(results[a]["counts"]) == 10000 for a in ("clean", "pgd20", "cw20")):
                final_seeds.add(record["seed"])
            aa = record.get("autoattack")
            if (
                aa
                and aa["n_per_class"] == 50
                and aa["results"]["autoattack"]["counts"] == [50] * 10
            ):
                aa_seeds.add(record["seed"])
        assert final_seeds == {0, 1, 2, 3, 4}, name
        assert aa_seeds >= ({0, 1, 2, 3, 4} if name in KEY_ROWS else {0, 3, 4}), name
