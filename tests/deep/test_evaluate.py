"""Class-wise evaluation: metrics against scikit-learn, FRL identities, AutoAttack vs PGD, the
final.json contract through the CLI, CIFAR-10-C, and CLI errors."""

from __future__ import annotations

import csv
import json
import math
import os
import stat

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import recall_score
from torch import nn

from deep.checkpoint import save_atomic
from deep.data import ImageSplit, load_dataset, stratified_subset
from deep.evaluate import (
    ATTACK_NAMES,
    build_final_json,
    classwise_accuracy,
    evaluate_model,
    frl_errors,
    main,
    write_final_json,
)
from deep.models import build_model
from deep.plots import plot_class_weights, plot_classwise
from tests.deep import fake_datasets as fake

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU run far faster single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# classwise_accuracy
# --------------------------------------------------------------------------------------------
@given(
    num_classes=st.integers(2, 7),
    data=st.data(),
)
def test_classwise_accuracy_matches_sklearn_recall(num_classes, data):
    # Unequal class counts: every class present, sizes drawn independently.
    counts = data.draw(st.lists(st.integers(1, 9), min_size=num_classes, max_size=num_classes))
    y = np.repeat(np.arange(num_classes), counts)
    pred = np.array(
        data.draw(st.lists(st.integers(0, num_classes - 1), min_size=len(y), max_size=len(y)))
    )
    order = np.array(data.draw(st.permutations(range(len(y)))))
    y, pred = y[order], pred[order]

    got = classwise_accuracy(torch.from_numpy(pred == y), torch.from_numpy(y), num_classes)
    ref = recall_score(y, pred, labels=list(range(num_classes)), average=None, zero_division=0)
    np.testing.assert_allclose(got["per_class"], ref, rtol=0, atol=1e-12)
    assert got["counts"] == list(np.bincount(y, minlength=num_classes))
    assert got["average"] == pytest.approx(float(np.mean(ref)), abs=1e-12)
    assert got["worst"] == pytest.approx(float(np.min(ref)), abs=1e-12)
    # Per-class accuracies weighted by the counts give back the pooled accuracy.
    pooled = float(np.mean(pred == y))
    assert float(np.dot(got["per_class"], got["counts"]) / len(y)) == pytest.approx(pooled)


def test_classwise_accuracy_hand_example():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    correct = torch.tensor([True, False, True, False, True, True])
    got = classwise_accuracy(correct, y, 3)
    assert got["per_class"] == [2 / 3, 0.0, 1.0]
    assert got["counts"] == [3, 1, 2]
    assert got["average"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert got["worst"] == 0.0


def test_classwise_accuracy_rejects_bad_input():
    y = torch.tensor([0, 0, 2])
    ok = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match=r"classes \[1\] have no samples"):
        classwise_accuracy(ok, y, 3)
    allowed = classwise_accuracy(ok, y, 3, allow_empty=True)
    assert allowed["per_class"] == [0.5, None, 1.0]
    assert allowed["average"] == pytest.approx(0.75) and allowed["worst"] == 0.5
    with pytest.raises(ValueError, match="outside"):
        classwise_accuracy(ok, torch.tensor([0, 3, 1]), 3)
    with pytest.raises(ValueError, match="same length"):
        classwise_accuracy(ok, torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="bool"):
        classwise_accuracy(torch.tensor([1, 0, 1]), y, 3)
    with pytest.raises(ValueError, match="num_classes"):
        classwise_accuracy(ok, y, 0)


# --------------------------------------------------------------------------------------------
# frl_errors
# --------------------------------------------------------------------------------------------
def test_frl_errors_identity_on_hand_made_results():
    results = {
        "clean": {"per_class": [0.9, 0.6, 0.75, 1.0]},
        "pgd20": {"per_class": [0.5, 0.2, 0.55, 0.7]},
    }
    e = frl_errors(results)
    np.testing.assert_allclose(e["standard"]["per_class"], [0.1, 0.4, 0.25, 0.0], atol=1e-15)
    np.testing.assert_allclose(e["robust"]["per_class"], [0.5, 0.8, 0.45, 0.3], atol=1e-15)
    np.testing.assert_allclose(e["boundary"]["per_class"], [0.4, 0.4, 0.2, 0.3], atol=1e-15)
    for c in range(4):  # FRL Eq. 7: R_rob = R_nat + R_bndy
        assert e["robust"]["per_class"][c] == pytest.approx(
            e["standard"]["per_class"][c] + e["boundary"]["per_class"][c], abs=1e-15
        )
    # Errors: average = mean over classes, worst = the largest error.
    assert e["standard"]["average"] == pytest.approx(0.75 / 4)
    assert e["standard"]["worst"] == pytest.approx(0.4)
    assert e["robust"]["worst"] == pytest.approx(0.8)
    assert e["boundary"]["average"] == pytest.approx(1.3 / 4)
    # An attack that found fewer errors than the clean pass in some class (a weak attack, or
    # another subset): the boundary error is negative there, R_rob = R_nat + R_bndy still holds.
    odd = frl_errors({"clean": {"per_class": [0.5, 0.9]}, "pgd20": {"per_class": [0.625, 0.25]}})
    assert odd["boundary"]["per_class"] == pytest.approx([-0.125, 0.65], abs=1e-15)
    assert odd["robust"]["per_class"] == pytest.approx([0.375, 0.75], abs=1e-15)
    with pytest.raises(ValueError, match="pgd20"):
        frl_errors({"clean": results["clean"]})
    with pytest.raises(ValueError, match="outside"):
        frl_errors({"clean": {"per_class": [1.5, 0.2]}, "pgd20": {"per_class": [0.1, 0.1]}})


# --------------------------------------------------------------------------------------------
# Attacks on a small trained CNN (digits, 8x8)
# --------------------------------------------------------------------------------------------
def _train(model: nn.Module, split: ImageSplit, steps: int, lr: float) -> nn.Module:
    torch.manual_seed(0)
    x, y = split.x.float() / 255.0, split.y
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def tiny_cnn(digits):
    """A one-layer CNN, 100 full-batch Adam steps (< 1 s): cheap enough for AutoAttack."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)
    )
    return _train(model, digits.train, steps=100, lr=1e-2)


@pytest.fixture(scope="module")
def small_cnn_checkpoint(digits, tmp_path_factory):
    """deep.models' small CNN, trained briefly, saved in the checkpoint format."""
    torch.manual_seed(0)
    model = build_model(
        "small-cnn", 10, in_channels=1, mean=digits.mean, std=digits.std, image_size=8
    )
    _train(model, digits.train, steps=30, lr=1e-2)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, path)
    return path, model


def test_autoattack_at_most_pgd20_on_the_same_points(digits, tiny_cnn):
    split = stratified_subset(digits.test, 10, seed=0)
    res = evaluate_model(
        tiny_cnn, split, num_classes=10, attacks=ATTACK_NAMES, eps=0.1, step_size=0.025, seed=0
    )
    assert list(res) == ["clean", "pgd20", "cw20", "cw100", "autoattack"]
    clean, pgd, aa = res["clean"], res["pgd20"], res["autoattack"]
    # A meaningful comparison: the model is accurate and PGD neither fails nor wins everywhere.
    assert clean["average"] >= 0.9
    assert 0.1 < pgd["average"] < clean["average"]
    assert aa["average"] <= pgd["average"]
    assert aa["average"] <= res["cw20"]["average"]
    # AutoAttack attacks only correctly classified points: robust implies clean-correct.
    for c in range(10):
        assert aa["per_class"][c] <= clean["per_class"][c]
        assert res["pgd20"]["counts"][c] == 10


def test_cw100_takes_100_ascent_steps_on_the_cw_margin(digits, tiny_cnn):
    """CW-100 (FAAL supp. Fig. 4) runs 80 more forward passes per batch than CW-20 and is at least
    as strong on a model it can attack; its result key and label are "cw100" / "CW-100"."""
    split = stratified_subset(digits.test, 5, seed=2)
    calls = []
    handle = tiny_cnn.register_forward_hook(lambda *_: calls.append(1))
    try:
        counts = {}
        for name in ("cw20", "cw100"):
            calls.clear()
            res = evaluate_model(tiny_cnn, split, num_classes=10, attacks=(name,), eps=0.1,
                                 step_size=0.01, batch_size=len(split), seed=0)  # fmt: skip
            counts[name] = (len(calls), res[name]["average"])
    finally:
        handle.remove()
    assert counts["cw100"][0] - counts["cw20"][0] == 80
    assert counts["cw100"][1] <= counts["cw20"][1] + 0.02
    from deep.plots import RESULT_LABELS

    assert RESULT_LABELS["cw100"] == "CW-100"


def test_evaluate_model_is_seeded_and_batch_independent(digits, tiny_cnn):
    split = stratified_subset(digits.test, 5, seed=1)
    kwargs = dict(num_classes=10, eps=0.1, step_size=0.025, seed=3)
    a = evaluate_model(tiny_cnn, split, attacks=("pgd20",), batch_size=64, **kwargs)
    b = evaluate_model(tiny_cnn, split, attacks=("clean", "cw20", "pgd20"), batch_size=64, **kwargs)
    assert a["pgd20"] == b["pgd20"]  # a result does not depend on which other attacks ran
    # Clean accuracy against a direct computation, for two batch sizes.
    with torch.no_grad():
        pred = tiny_cnn(split.x.float() / 255.0).argmax(1).numpy()
    ref = recall_score(split.y.numpy(), pred, average=None)
    for bs in (7, 256):
        got = evaluate_model(tiny_cnn, split, attacks=("clean",), batch_size=bs, **kwargs)
        np.testing.assert_allclose(got["clean"]["per_class"], ref, atol=1e-12)
    # The model's training mode is restored.
    tiny_cnn.train()
    evaluate_model(tiny_cnn, split, attacks=("clean",), **kwargs)
    assert tiny_cnn.training
    tiny_cnn.eval()
    with pytest.raises(ValueError, match="unknown attack 'fgsm'"):
        evaluate_model(tiny_cnn, split, attacks=("fgsm",), **kwargs)
    with pytest.raises(ValueError, match="eps"):
        evaluate_model(tiny_cnn, split, attacks=("pgd20",), num_classes=10, eps=2.0, step_size=0.1)


# --------------------------------------------------------------------------------------------
# final.json contract via the CLI
# --------------------------------------------------------------------------------------------
def _check_entry(entry, num_classes, *, worst="min"):
    assert set(entry) >= {"per_class", "average", "worst"}
    per_class = entry["per_class"]
    assert len(per_class) == num_classes
    low = 0.0 if worst == "min" else -1.0  # accuracies in [0, 1]; boundary errors in [-1, 1]
    assert all(low <= v <= 1.0 for v in per_class)
    assert entry["average"] == pytest.approx(math.fsum(per_class) / num_classes, abs=1e-12)
    assert entry["worst"] == (min(per_class) if worst == "min" else max(per_class))


def test_cli_writes_the_final_json_contract(digits, small_cnn_checkpoint, tmp_path, capsys):
    ckpt, model = small_cnn_checkpoint
    out = tmp_path / "run"
    argv = [
        "--checkpoint",
        str(ckpt),
        "--dataset",
        "digits",
        "--attacks",
        "clean,pgd20,cw20",
        "--n-per-class",
        "8",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        "--seed",
        "1",
    ]
    umask = os.umask(0o022)
    try:
        returned = main(argv)
    finally:
        os.umask(umask)
    printed = capsys.readouterr().out
    final = json.loads((out / "final.json").read_text())
    assert final == returned
    # The one result contract (deep.results), shared with deep.train.
    assert final["split"] == "test" and final["n_per_class"] == 8 and final["seed"] == 1
    assert final["checkpoint"] == str(ckpt) and final["seconds"] > 0
    for name in ("final.json", "final.csv"):  # readable by others, like any other file
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644

    assert {"dataset", "model", "eps", "classes", "results", "frl_errors"} <= set(final)
    assert final["dataset"] == "digits" and final["model"] == "small-cnn"
    assert final["eps"] == pytest.approx(digits.eps)
    assert final["classes"] == digits.classes
    assert list(final["results"]) == ["clean", "pgd20", "cw20"]
    for entry in final["results"].values():
        _check_entry(entry, 10)
        assert entry["counts"] == [8] * 10
    for key in ("standard", "boundary", "robust"):
        _check_entry(final["frl_errors"][key], 10, worst="max")

    # Clean accuracy against scikit-learn on the same stratified subset, model run directly.
    split = stratified_subset(digits.test, 8, seed=1)
    with torch.no_grad():
        pred = model(split.x.float() / 255.0).argmax(1).numpy()
    ref = recall_score(split.y.numpy(), pred, average=None)
    np.testing.assert_allclose(final["results"]["clean"]["per_class"], ref, atol=1e-12)

    # final.csv: one row per class x result (plus FRL errors), values equal to the JSON.
    rows = list(csv.DictReader((out / "final.csv").open()))
    acc_rows = [r for r in rows if r["kind"] == "accuracy"]
    assert len(acc_rows) == 10 * 3
    for r in acc_rows:
        assert (
            float(r["value"]) == final["results"][r["result"]]["per_class"][int(r["class_index"])]
        )
    assert len([r for r in rows if r["kind"] == "error"]) == 10 * 3

    assert (out / "classwise.png").read_bytes()[:8] == PNG_MAGIC
    assert str(out) in printed and "PGD-20" in printed and "worst" in printed
    for name in digits.classes:
        assert any(line.startswith(name) for line in printed.splitlines())


def test_cli_default_out_is_a_fresh_run_dir(small_cnn_checkpoint, tmp_path, monkeypatch, capsys):
    ckpt, _ = small_cnn_checkpoint
    monkeypatch.chdir(tmp_path)
    argv = [
        "--checkpoint",
        str(ckpt),
        "--dataset",
        "digits",
        "--attacks",
        "clean",
        "--n-per-class",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ]
    main(argv)
    main(argv)
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("evaluate-digits-") for r in runs)
    assert all((r / "final.json").is_file() for r in runs)
    final = json.loads((runs[0] / "final.json").read_text())
    assert list(final["results"]) == ["clean"] and "frl_errors" not in final


# --------------------------------------------------------------------------------------------
# CIFAR-10-C
# --------------------------------------------------------------------------------------------
def test_cifar10c_per_corruption_and_severity(tmp_path, capsys):
    data_dir, c_dir = tmp_path / "cifar10", tmp_path / "c"
    (_, (_, y_test)) = fake.write_cifar10(data_dir, per_batch=10, n_test=60)
    assert set(y_test.tolist()) == set(range(10))
    written = fake.write_cifar10c(c_dir, ("fog", "snow"), per_severity=60, seed=2)
    labels = written["fog"][1][:60]
    assert set(labels.tolist()) == set(range(10))  # every class present in a severity block

    torch.manual_seed(0)
    model = build_model("small-cnn", 10, in_channels=3, image_size=32)
    ckpt = tmp_path / "c10.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, ckpt)
    out = tmp_path / "run"
    final = main(
        [
            "--checkpoint",
            str(ckpt),
            "--dataset",
            "cifar10",
            "--data-dir",
            str(data_dir),
            "--attacks",
            "clean",
            "--cifar10c-dir",
            str(c_dir),
            "--corruptions",
            "fog,snow",
            "--severities",
            "1,3",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    on_disk = json.loads((out / "final.json").read_text())
    assert on_disk["cifar10c"] == final["cifar10c"]
    assert set(final["cifar10c"]) == {"fog", "snow"}
    model.eval()
    for corruption in ("fog", "snow"):
        assert set(final["cifar10c"][corruption]) == {"1", "3"}
        x_all, y_all = written[corruption]
        for severity in (1, 3):
            entry = final["cifar10c"][corruption][str(severity)]
            _check_entry(entry, 10)
            rows = slice((severity - 1) * 60, severity * 60)
            with torch.no_grad():
                pred = model(torch.from_numpy(x_all[rows]).float() / 255.0).argmax(1).numpy()
            ref = recall_score(y_all[rows], pred, labels=list(range(10)), average=None)
            np.testing.assert_allclose(entry["per_class"], ref, atol=1e-12)
            assert entry["counts"] == list(np.bincount(y_all[rows], minlength=10))
    assert "fog" in capsys.readouterr().out
    csv_results = {r["result"] for r in csv.DictReader((out / "final.csv").open())}
    assert {"cifar10c/fog/1", "cifar10c/snow/3"} <= csv_results
    # A corruption file that is not there: the message names --cifar10c-dir, not --data-dir.
    argv = ["--checkpoint", str(ckpt), "--dataset", "cifar10", "--data-dir", str(data_dir),
            "--attacks", "clean", "--cifar10c-dir", str(c_dir), "--corruptions", "frost",
            "--out", str(tmp_path / "r2"), "--quiet"]  # fmt: skip
    err = _exit2(argv, capsys).strip().splitlines()[0]  # the error line, before the usage
    assert "frost.npy" in err and "point --cifar10c-dir at" in err and "--data-dir" not in err


# --------------------------------------------------------------------------------------------
# CLI errors: exit 2, message lists the choices / names the file
# --------------------------------------------------------------------------------------------
def _exit2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_cli_errors(small_cnn_checkpoint, tmp_path, capsys):
    ckpt, _ = small_cnn_checkpoint
    base = ["--out", str(tmp_path / "never"), "--device", "cpu", "--quiet"]

    err = _exit2(["--checkpoint", str(ckpt), "--dataset", "mnist"] + base, capsys)
    assert "mnist" in err and "cifar10" in err and "fashion-mnist" in err

    err = _exit2(
        ["--checkpoint", str(ckpt), "--dataset", "digits", "--attacks", "clean,fgsm"] + base, capsys
    )
    assert "fgsm" in err and all(name in err for name in ATTACK_NAMES)

    missing = tmp_path / "nope.pt"
    err = _exit2(["--checkpoint", str(missing), "--dataset", "digits"] + base, capsys)
    assert str(missing) in err

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    err = _exit2(["--checkpoint", str(corrupt), "--dataset", "digits"] + base, capsys)
    assert f"{corrupt} is not a torch file" in err and "trusted" not in err

    err = _exit2(["--checkpoint", str(ckpt), "--dataset", "digits", "--device", "gpu"] + base[:2],
                 capsys)  # fmt: skip
    assert "--device gpu: choose auto, cpu, cuda or cuda:N" in err

    run = tmp_path / "training-run"  # evaluating into a training run would replace its final.json
    run.mkdir()
    (run / "last.pt").write_bytes(ckpt.read_bytes())
    (run / "final.json").write_text("{}")
    err = _exit2(["--checkpoint", str(ckpt), "--dataset", "digits", "--out", str(run)], capsys)
    assert "holds a training run" in err and (run / "final.json").read_text() == "{}"

    other = build_model("small-cnn", 3, in_channels=1, image_size=8)
    other_path = tmp_path / "three.pt"
    save_atomic({"model_config": other.model_config, "model": other.state_dict()}, other_path)
    err = _exit2(["--checkpoint", str(other_path), "--dataset", "digits"] + base, capsys)
    assert "num_classes=3" in err and "num_classes=10" in err

    err = _exit2(
        ["--checkpoint", str(ckpt), "--dataset", "digits", "--cifar10c-dir", str(tmp_path)] + base,
        capsys,
    )
    assert "cifar10" in err

    err = _exit2(
        ["--checkpoint", str(ckpt), "--dataset", "digits", "--n-per-class", "1000"] + base, capsys
    )
    assert "--n-per-class 1000, but class" in err and "choose at most 50" in err
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------------------------
# final.json builder and plots
# --------------------------------------------------------------------------------------------
def test_build_final_json_checks_and_writes_strict_json(tmp_path):
    results = {
        "autoattack": {"per_class": [0.5, 0.25], "average": 0.375, "worst": 0.25},
        "clean": {"per_class": [1.0, 0.5], "average": 0.75, "worst": 0.5},
    }
    run = dict(split="test", n_per_class=None, seed=0, checkpoint="r/best.pt", seconds=1.5)
    final = build_final_json(
        dataset="d", model="m", eps=0.1, classes=["a", "b"], results=results, **run
    )
    assert list(final["results"]) == ["clean", "autoattack"]  # canonical order
    assert "frl_errors" not in final  # needs clean and pgd20
    assert {k: final[k] for k in run} == run
    with pytest.raises(ValueError, match="unknown keys"):
        build_final_json(
            dataset="d", model="m", eps=0.1, classes=["a", "b"], results={"aa": results["clean"]},
            **run,
        )  # fmt: skip
    with pytest.raises(ValueError, match="expected 3"):
        build_final_json(
            dataset="d", model="m", eps=0.1, classes=["a", "b", "c"], results=results, **run
        )
    with pytest.raises(TypeError, match="seconds"):  # every writer states the contract's keys
        build_final_json(dataset="d", model="m", eps=0.1, classes=["a", "b"], results=results,
                         **{k: v for k, v in run.items() if k != "seconds"})  # fmt: skip
    bad_values = [("split", "test, 100/class", "split must be one of"),
                  ("n_per_class", 0, "n_per_class"), ("seconds", -1.0, "seconds")]  # fmt: skip
    for key, value, message in bad_values:
        with pytest.raises(ValueError, match=message):
            build_final_json(dataset="d", model="m", eps=0.1, classes=["a", "b"],
                             results=results, **{**run, key: value})  # fmt: skip
    path = write_final_json(
        tmp_path, dataset="d", model="m", eps=0.1, classes=["a", "b"], results=results, **run
    )
    assert json.loads(path.read_text()) == final
    bad = {"clean": {"per_class": [float("nan"), 0.5], "average": 0.5, "worst": 0.5}}
    with pytest.raises(ValueError):
        write_final_json(
            tmp_path / "bad", dataset="d", model="m", eps=0.1, classes=["a", "b"], results=bad,
            **run,
        )  # fmt: skip
    assert not (tmp_path / "bad" / "final.json").exists()


def test_plots_write_pngs_and_validate(tmp_path):
    final = {
        "dataset": "d",
        "model": "m",
        "classes": ["cat", "dog", "ship"],
        "results": {
            "clean": {"per_class": [0.5, 0.7, 0.9], "average": 0.7, "worst": 0.5},
            "pgd20": {"per_class": [0.2, 0.3, 0.6], "average": 1.1 / 3, "worst": 0.2},
        },
    }
    path = plot_classwise(final, tmp_path / "sub" / "bars.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="classes"):
        plot_classwise({**final, "classes": ["cat", "dog"]}, tmp_path / "x.png")

    history = torch.softmax(torch.randn(6, 3), dim=1)
    path = plot_class_weights(history, final["classes"], tmp_path / "w.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="columns"):
        plot_class_weights(np.ones((4, 2)), final["classes"], tmp_path / "w2.png")
    with pytest.raises(ValueError, match="shape"):
        plot_class_weights(np.ones(3), final["classes"], tmp_path / "w3.png")


# --------------------------------------------------------------------------------------------
# Run folders, progress, threads, Ctrl-C
# --------------------------------------------------------------------------------------------
def test_checkpoint_may_be_a_run_directory(small_cnn_checkpoint, tmp_path, capsys):
    ckpt, _ = small_cnn_checkpoint
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    base = ["--dataset", "digits", "--attacks", "clean", "--n-per-class", "2", "--quiet"]
    err = _exit2(["--checkpoint", str(run_dir), "--out", str(tmp_path / "e")] + base, capsys)
    assert f"{run_dir} is a folder without best.pt" in err
    (run_dir / "last.pt").write_bytes(ckpt.read_bytes())
    err = _exit2(["--checkpoint", str(run_dir), "--out", str(tmp_path / "e")] + base, capsys)
    assert "it holds last.pt" in err
    (run_dir / "best.pt").write_bytes(ckpt.read_bytes())
    final = main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "ok")] + base)
    assert final["checkpoint"] == str(run_dir / "best.pt")


def test_threads_and_plain_progress_lines_off_a_terminal(small_cnn_checkpoint, tmp_path, capsys):
    """stderr is captured (not a terminal): one plain line per batch with --progress-interval 0;
    the small CNN runs on one thread unless --threads says otherwise."""
    ckpt, _ = small_cnn_checkpoint
    before = torch.get_num_threads()
    base = ["--checkpoint", str(ckpt), "--dataset", "digits", "--attacks", "clean,pgd20",
            "--n-per-class", "4", "--batch-size", "20", "--progress-interval", "0"]  # fmt: skip
    try:
        torch.set_num_threads(2)
        main(base + ["--out", str(tmp_path / "a")])
        assert torch.get_num_threads() == 1
        err = capsys.readouterr().err
        assert "PGD-20: batch 2/2 (100.0%)" in err and "ETA" in err
        main(base + ["--out", str(tmp_path / "b"), "--threads", "2", "--quiet"])
        assert torch.get_num_threads() == 2
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)


def test_autoattack_reports_each_attack_of_each_chunk_and_results_do_not_change(
    digits, tiny_cnn, capsys
):
    """Two chunks x 4 attacks = 8 units. At eps 0.3 APGD-CE breaks most points, so AutoAttack
    skips attacks and the bar jumps at the end of a chunk; a point left robust gets all four."""
    split = stratified_subset(digits.test, 2, seed=0)
    kwargs = dict(num_classes=10, attacks=("aa",), eps=0.3, step_size=0.025, batch_size=10, seed=0)
    quiet = evaluate_model(tiny_cnn, split, **kwargs)
    capsys.readouterr()
    shown = evaluate_model(tiny_cnn, split, progress=True, progress_interval=0, **kwargs)
    assert shown == quiet
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("AutoAttack chunk 1/2: attack 0/8 (0.0%)")
    assert "attack apgd-ce" in lines[0]
    assert any(ln.startswith("AutoAttack chunk 2/2: attack") for ln in lines)
    assert lines[-1].startswith("AutoAttack chunk 2/2: attack 8/8 (100.0%)")
    assert all("ETA" in ln for ln in lines)


def test_ctrl_c_inside_autoattack_is_one_line_and_exit_130(
    small_cnn_checkpoint, tmp_path, capsys, monkeypatch
):
    import pyautoattack

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", interrupted)
    ckpt, _ = small_cnn_checkpoint
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(ckpt), "--dataset", "digits", "--attacks", "aa",
              "--n-per-class", "1", "--out", str(tmp_path / "r"), "--quiet"])  # fmt: skip
    assert exc.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err == "evaluation interrupted; nothing was written"
    assert not (tmp_path / "r" / "final.json").exists()


def test_class_weight_figures_number_epochs_from_1_and_draw_steps_as_a_heatmap(tmp_path):
    from deep.plots import class_weights_figure, plot_class_weight_steps

    history = torch.softmax(torch.randn(15, 3), dim=1)
    fig = class_weights_figure(history, ["a", "b", "c"], xlabel="epoch", title="t")
    ticks = fig.axes[0].get_xticks()
    assert ticks[0] == 1 and ticks[-1] == 15  # as in the console and metrics.jsonl
    steps = torch.softmax(torch.randn(40, 3), dim=1)
    epochs = [1 + i // 8 for i in range(40)]
    path = plot_class_weight_steps(steps, ["a", "b", "c"], tmp_path / "s.png", epochs=epochs)
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="one epoch per step"):
        plot_class_weight_steps(steps, ["a", "b", "c"], tmp_path / "x.png", epochs=[1, 2])
