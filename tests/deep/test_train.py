"""deep.train: the training step of every preset, FAAL/FRL weights against independent
computations, exact resume (end-of-epoch and mid-epoch), Ctrl-C, config conflicts, bad input,
final.json, and a 2-process torchrun run."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deep import distributed as dd
from deep import train as T
from deep.attacks import pgd_attack, trades_attack
from deep.checkpoint import load_checkpoint, model_from_checkpoint, save_atomic
from deep.data import BatchLoader, load_dataset, stratified_subset
from deep.evaluate import evaluate_model
from deep.models import build_model
from deep.presets import METHOD_NAMES
from deep.trainer import _tensor_hash
from theory.dro import solve_kl_dro

REPO = Path(__file__).resolve().parents[2]
# A tiny run: 10 digits per class (100 images), batch 16 -> 6 steps per epoch.
TINY = ["--train-per-class", "10", "--batch-size", "16", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def make_trainer(dataset, *argv):
    parser = T.build_parser()
    cfg = T.resolve_config(parser.parse_args(list(argv)), parser)
    cfg.update(eps=dataset.eps, step_size=dataset.step_size, model="small-cnn", channels_last=False)
    return T.Trainer(cfg, dataset, dd.DistContext())


def first_batch(dataset, batch_size=16, seed=0):
    loader = BatchLoader(dataset.train, batch_size, shuffle=True, seed=seed)
    return next(iter(loader))


def run(out, *argv, **hooks):
    return T.main(["--out", str(out), *TINY, *argv], **hooks)


def state_of(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def metric_lines(path):
    lines = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
    for line in lines:
        line.pop("epoch_time_s")
    return lines


# ------------------------------------------------------------------------------------------
# One step of every preset
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_preset_trains_a_step(digits, method):
    trainer = make_trainer(digits, "--method", method, "--batch-size", "16", "--attack-steps", "2")
    before = copy.deepcopy(trainer.model.state_dict())
    x, y = first_batch(digits)
    trainer.train_step(x, y)
    after = trainer.model.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert changed, "no weight changed"
    assert math.isfinite(float(trainer.last_loss))
    w = trainer.last_weights
    assert w.shape == (10,) and torch.all(w > 0)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)
    if trainer.awp is not None:  # AWP's perturbation is removed after the step (SPEC §3)
        assert trainer.awp._saved is None


def test_uniform_step_is_a_plain_pgd_at_step(digits):
    """pgd-at through the loop equals a hand-written PGD-AT step with the mean CE loss."""
    trainer = make_trainer(digits, "--method", "pgd-at", "--attack-steps", "3", "--lr", "0.1")
    reference = copy.deepcopy(trainer.model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(123)
    trainer.attack_gen.set_state(gen.get_state())
    x, y = first_batch(digits)

    trainer.train_step(x, y)

    x_adv = pgd_attack(reference, x, y, eps=0.1, step_size=0.025, steps=3, generator=gen)
    reference.train()
    loss = F.cross_entropy(reference(x_adv), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert float(trainer.last_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
    for (name, p), q in zip(trainer.model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_cifar_weight_decay_follows_faal_supplement():
    """FAAL supp. C.5 (CIFAR-10): weight decay 5e-4; C.7 (CIFAR-100, after WAT): 2e-4."""
    parser = T.build_parser()
    for dataset, wd in (("cifar10", 5e-4), ("cifar100", 2e-4)):
        cfg = T.resolve_config(parser.parse_args(["--dataset", dataset]), parser)
        assert cfg["weight_decay"] == wd


def test_attack_start_zero_is_faal_algorithm_1s_inner_maximisation(digits):
    """--attack-start zero: the PGD training attack starts at delta = 0 (FAAL Algorithm 1 lines
    3-8, written out here for one step: delta = alpha sign(grad CE at x), clamped to [-eps, eps],
    x_adv = clip(x + delta, 0, 1)), whatever the state of the attack generator."""
    x, y = first_batch(digits)
    losses = []
    for seed in (1, 2):
        trainer = make_trainer(digits, "--method", "pgd-at", "--attack-steps", "1",
                               "--attack-start", "zero")  # fmt: skip
        trainer.attack_gen.manual_seed(seed)
        reference = copy.deepcopy(trainer.model)
        trainer.train_step(x, y)
        losses.append(float(trainer.last_loss))
    reference.eval()
    x0 = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(reference(x0), y, reduction="sum"), x0)[0]
    delta = torch.clamp(0.025 * grad.sign(), -0.1, 0.1)
    x_adv = torch.clamp(x + delta, 0, 1)
    reference.train()
    expected = float(F.cross_entropy(reference(x_adv), y).detach())
    assert losses[0] == losses[1] == pytest.approx(expected, rel=1e-5)


def _softmax_margin_numpy(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p_true = p[np.arange(len(y)), y]
    p[np.arange(len(y)), y] = -np.inf
    return p.max(axis=1) - p_true


@pytest.mark.parametrize("count_weighted", [False, True])
def test_faal_weights_solve_the_dro_of_the_batch_margins(digits, count_weighted):
    argv = ["--method", "faal-at", "--attack-steps", "3", "--tau", "0.3"]
    trainer = make_trainer(digits, *argv, *(["--count-weighted"] if count_weighted else []))
    reference = copy.deepcopy(trainer.model)
    gen = torch.Generator().manual_seed(7)
    trainer.attack_gen.set_state(gen.get_state())
    x, y = first_batch(digits, batch_size=24, seed=3)

    trainer.train_step(x, y)

    # Independent: the adversarial batch, train-mode logits, margins and class means in numpy.
    x_adv = pgd_attack(reference, x, y, eps=0.1, step_size=0.025, steps=3, generator=gen)
    reference.train()
    logits = reference(x_adv).detach().double()
    margins = _softmax_margin_numpy(logits.numpy(), y.numpy())
    labels = y.numpy()
    stats = np.full(10, -1.0)
    for c in range(10):
        members = margins[labels == c]
        if count_weighted:  # the reference code's sum_c n_c l_c, absent classes 0 (SPEC §2)
            stats[c] = members.sum()
        elif len(members):
            stats[c] = members.mean()
    expected = solve_kl_dro(stats, 0.3)
    np.testing.assert_allclose(trainer.last_weights.double().numpy(), expected, atol=2e-5)
    # The loss is (C/B) sum_i w_{y_i} CE_i with the weights (FAAL Alg. 1 line 14).
    ce = F.cross_entropy(logits, y, reduction="none").numpy()
    w = trainer.last_weights.double().numpy()
    assert float(trainer.last_loss) == pytest.approx(10 / 24 * np.sum(w[labels] * ce), rel=1e-4)


@pytest.mark.parametrize("method", ["faal-trades", "faal-mart"])
def test_faal_trades_and_mart_take_the_statistic_from_the_adversarial_logits(digits, method):
    """FAAL Alg. 1 line 11: the class statistic is the softmax margin of f(x_adv), also when the
    objective (TRADES, MART) needs the clean logits too; the clean logits' margins would give
    other weights, so feeding them fails this test."""
    trainer = make_trainer(digits, "--method", method, "--attack-steps", "3", "--tau", "0.3")
    reference = copy.deepcopy(trainer.model)
    gen = torch.Generator().manual_seed(5)
    trainer.attack_gen.set_state(gen.get_state())
    x, y = first_batch(digits, batch_size=24, seed=2)

    trainer.train_step(x, y)

    x_adv = trades_attack(reference, x, eps=0.1, step_size=0.025, steps=3, generator=gen)
    reference.train()
    labels = y.numpy()

    def weights_from(inputs):
        margins = _softmax_margin_numpy(reference(inputs).detach().double().numpy(), labels)
        stats = [margins[labels == c].mean() if np.any(labels == c) else -1.0 for c in range(10)]
        return solve_kl_dro(np.array(stats), 0.3)

    got = trainer.last_weights.double().numpy()
    np.testing.assert_allclose(got, weights_from(x_adv), atol=2e-5)
    assert np.abs(got - weights_from(x)).max() > 1e-3  # the clean logits would differ


def test_faal_ce_statistic_solves_the_dro_of_the_batch_cross_entropies(digits):
    """--faal-statistic ce (FAAL supp. Fig. 1): class means of CE(adv), an absent class gets 0."""
    trainer = make_trainer(
        digits, "--method", "faal-at", "--attack-steps", "2", "--faal-statistic", "ce"
    )
    assert trainer.weighting.statistic == "ce"
    reference = copy.deepcopy(trainer.model)
    gen = torch.Generator().manual_seed(11)
    trainer.attack_gen.set_state(gen.get_state())
    x, y = first_batch(digits, batch_size=32, seed=1)
    keep = y != 5  # class 5 absent from the batch
    x, y = x[keep], y[keep]

    trainer.train_step(x, y)

    x_adv = pgd_attack(reference, x, y, eps=0.1, step_size=0.025, steps=2, generator=gen)
    reference.train()
    logits = reference(x_adv).detach().double().numpy()
    z = logits - logits.max(axis=1, keepdims=True)
    ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y.numpy()]
    stats = np.array([ce[y.numpy() == c].mean() if c != 5 else 0.0 for c in range(10)])
    expected = solve_kl_dro(stats, 0.5)
    np.testing.assert_allclose(trainer.last_weights.double().numpy(), expected, atol=2e-5)
    assert int(np.argmin(expected)) == 5


def test_faal_start_epoch_and_tau_schedule(digits):
    trainer = make_trainer(
        digits, "--method", "faal-at", "--faal-start-epoch", "1", "--tau-schedule", "2:0.05"
    )
    assert trainer.weighting.tau_at(0) == 0.0
    assert trainer.weighting.tau_at(1) == 0.5
    assert trainer.weighting.tau_at(2) == 0.05
    x, y = first_batch(digits)
    trainer.train_step(x, y)  # epoch 0: before the start, uniform weights
    torch.testing.assert_close(trainer.last_weights, torch.full((10,), 0.1))


def test_fixed_class_ratios_apply_from_the_first_batch(digits):
    """--method fixed-class: class 3's KL term weighs 2.5x, its budget is 2x, from step one."""
    trainer = make_trainer(
        digits, "--method", "fixed-class", "--attack-steps", "6",
        "--class-boundary-weight", "3=2.5", "--class-eps-scale", "3=2",
    )  # fmt: skip
    assert trainer.class_eps_values() == [0.1] * 3 + [0.2] + [0.1] * 6
    reference = copy.deepcopy(trainer.model)
    gen = torch.Generator().manual_seed(5)
    trainer.attack_gen.set_state(gen.get_state())
    x, y = first_batch(digits, batch_size=32, seed=1)
    assert (y == 3).sum() == 5

    trainer.train_step(x, y)

    eps = torch.where(y == 3, 0.2, 0.1).double()
    x_adv = trades_attack(reference, x, eps=eps, step_size=0.025, steps=6, generator=gen)
    moved = (x_adv - x).abs().flatten(1).amax(1).double()
    assert torch.all(moved <= eps + 1e-6) and torch.any(moved[y == 3] > 0.1 + 1e-3)
    reference.train()
    adv, clean = reference(x_adv).double(), reference(x).double()
    ce = F.cross_entropy(clean, y, reduction="none")
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1)
    r = torch.where(y == 3, 2.5, 1.0).double()
    expected = ce.mean() + 1.5 * (r * kl).sum() / r.sum()  # FRL's loss, SPEC §4
    assert float(trainer.last_loss) == pytest.approx(float(expected.detach()), rel=1e-4)


# ------------------------------------------------------------------------------------------
# Runs through the CLI
# ------------------------------------------------------------------------------------------
COMMON = ["--method", "faal-at-awp", "--epochs", "2", "--final-attacks", "clean,pgd20",
          "--final-n-per-class", "5", "--attack-steps", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert run(out, *COMMON) == 0
    return out


def test_run_directory_and_final_json(reference_run, digits):
    out = reference_run
    names = ["config.json", "metrics.jsonl", "last.pt", "best.pt", "final.json", "final.csv",
             "classwise.png", "class_weights.png", "class_weights.csv"]  # fmt: skip
    for name in names:
        assert (out / name).exists(), name
    final = json.loads((out / "final.json").read_text())
    assert {"dataset", "model", "eps", "classes", "results", "frl_errors"} <= set(final)
    assert final["dataset"] == "digits" and final["model"] == "small-cnn"
    assert final["classes"] == digits.classes and final["eps"] == pytest.approx(0.1)
    assert set(final["results"]) == {"clean", "pgd20"}
    for entry in final["results"].values():
        assert entry["counts"] == [5] * 10
        assert entry["average"] == pytest.approx(np.mean(entry["per_class"]))
        assert entry["worst"] == min(entry["per_class"])
    lines = metric_lines(out / "metrics.jsonl")
    assert [ln["epoch"] for ln in lines] == [1, 2]
    for ln in lines:
        assert {"lr", "train", "class_weights", "class_eps", "val", "tau"} <= set(ln)
        assert {"loss", "acc_adv"} <= set(ln["train"])
        assert {"clean", "pgd20"} == set(ln["val"])
        assert sum(ln["class_weights"]) == pytest.approx(1.0, abs=1e-5)
    # best.pt: the epoch with the best worst-class validation robust accuracy, loadable alone;
    # of tied epochs, the one with the higher average, then the later one.
    best = load_checkpoint(out / "best.pt")
    keys = [(ln["val"]["pgd20"]["worst"], ln["val"]["pgd20"]["average"], ln["epoch"])
            for ln in lines]  # fmt: skip
    assert best["best"]["score"] == max(keys)[0]
    assert best["best"]["epoch"] == max(keys)[2]
    model, _ = model_from_checkpoint(out / "last.pt")
    assert model.model_config["name"] == "small-cnn"
    # class_weights.csv holds one row per step, whose mean per epoch is the logged mean.
    rows = np.loadtxt(out / "class_weights.csv", delimiter=",", skiprows=1)
    for epoch, ln in enumerate(lines):
        mean = rows[rows[:, 1] == epoch][:, 2:].mean(axis=0)
        np.testing.assert_allclose(mean, ln["class_weights"], atol=1e-5)


def _interrupt_at(global_step):
    def hook(trainer):
        if trainer.global_step == global_step:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize("where", ["mid-epoch", "epoch-end"])
def test_exact_resume(reference_run, tmp_path, where):
    out = tmp_path / "run"
    if where == "mid-epoch":
        rc = run(out, *COMMON, on_step_end=_interrupt_at(4))
        assert load_checkpoint(out / "last.pt")["step"] == 4
    else:

        def stop_after_first_epoch(trainer):
            raise KeyboardInterrupt

        rc = run(out, *COMMON, on_epoch_end=stop_after_first_epoch)
        ckpt = load_checkpoint(out / "last.pt")
        assert (ckpt["epoch"], ckpt["step"]) == (1, 0)
    assert rc == 130
    assert T.main(["--resume", str(out), "--quiet"]) == 0
    assert_same_weights(state_of(out / "last.pt"), state_of(reference_run / "last.pt"))
    assert metric_lines(out / "metrics.jsonl") == metric_lines(reference_run / "metrics.jsonl")
    a = json.loads((out / "final.json").read_text())
    b = json.loads((reference_run / "final.json").read_text())
    assert a["results"] == b["results"]


def test_sigint_saves_and_exits_130(reference_run, tmp_path):
    """A real Ctrl-C (SIGINT) in a separate process: checkpoint, exit 130, resumable exactly."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "deep.train", "--out", str(out), *TINY, *COMMON,
           "--save-every", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    deadline = time.time() + 60
    while not (out / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "--resume" in output
    assert T.main(["--resume", str(out), "--quiet"]) == 0
    assert_same_weights(state_of(out / "last.pt"), state_of(reference_run / "last.pt"))


class _Killed(BaseException):
    """The process dying (nothing catches a BaseException that is not KeyboardInterrupt)."""


def _run_killed_at(monkeypatch, write_number, argv):
    """Run ``deep.train`` in-process and die just before its ``write_number``-th durable write
    (checkpoint, config.json, metrics truncation, final.csv / final.json); count the writes."""
    import deep.results as R

    writes = []

    def die_or_write(real, path, *args):
        writes.append(Path(path).name)
        if len(writes) == write_number:
            raise _Killed(Path(path).name)
        return real(*args)

    real_text = R.atomic_write_text
    monkeypatch.setattr(T, "save_atomic", lambda o, p: die_or_write(save_atomic, p, o, p))
    for module in (T, R):
        monkeypatch.setattr(
            module, "atomic_write_text", lambda p, t: die_or_write(real_text, p, p, t)
        )
    try:
        status = T.main(argv)
    except _Killed:
        status = "killed"
    monkeypatch.undo()
    return status, writes


def _assert_same_checkpoint(a, b, where=""):
    """Every tensor equal (torch.equal), every other value equal; the config (paths) aside."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - ({"config"} if where == "" else set())
        assert keys == set(b) - ({"config"} if where == "" else set()), where
        for key in keys:
            _assert_same_checkpoint(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_checkpoint(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_kill_at_any_write_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Die before each durable write in turn (the writes are atomic, so this is every instant
    that matters), continue (--resume, or the same command when no last.pt was written yet) and
    compare with an uninterrupted run: every checkpoint tensor and final.json's results equal.
    The validation scores rise over the 3 epochs, so best.pt is rewritten, the case where a kill
    between best.pt and last.pt once left a stale best.pt."""
    argv = ["--method", "pgd-at", "--epochs", "3", "--attack-steps", "1", "--final-attacks",
            "clean", "--final-n-per-class", "2", "--val-per-class", "5", *TINY]  # fmt: skip
    reference = tmp_path / "reference"
    status, writes = _run_killed_at(monkeypatch, 0, ["--out", str(reference), *argv])
    assert status == 0
    assert writes.count("best.pt") >= 2, "the test needs best.pt rewritten"
    assert writes[-1] == "final.json"
    ref_final = json.loads((reference / "final.json").read_text())
    for k in range(1, len(writes) + 1):
        out = tmp_path / f"killed-{k}"
        status, _ = _run_killed_at(monkeypatch, k, ["--out", str(out), *argv])
        assert status == "killed"
        if (out / "last.pt").exists():
            assert T.main(["--resume", str(out), "--quiet"]) == 0
        else:
            assert T.main(["--out", str(out), *argv]) == 0
        for name in ("last.pt", "best.pt"):
            _assert_same_checkpoint(load_checkpoint(out / name), load_checkpoint(reference / name))
        final = json.loads((out / "final.json").read_text())
        assert final["results"] == ref_final["results"], f"killed before write {k}: {writes[k - 1]}"
        assert metric_lines(out / "metrics.jsonl") == metric_lines(reference / "metrics.jsonl")


def test_resuming_a_finished_run_says_so(reference_run, capsys):
    before = (reference_run / "final.json").read_bytes()
    assert T.main(["--resume", str(reference_run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "finished training (2/2 epochs)" in out and "nothing to do" in out
    assert "resuming" not in out
    assert (reference_run / "final.json").read_bytes() == before


def test_resume_with_conflicting_config_is_refused(reference_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, *COMMON, on_step_end=_interrupt_at(2)) == 130
    with pytest.raises(SystemExit) as exc:
        T.main(["--resume", str(out), "--lr", "0.2", "--tau", "0.1", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "lr: run has 0.05, given 0.2" in err and "tau: run has 0.5, given 0.1" in err
    # Options that do not change the computation may differ.
    assert T.main(["--resume", str(out), "--quiet", "--save-every", "3"]) == 0


def test_faal_statistic_is_saved_and_resume_conflicts_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--method", "faal-at", "--epochs", "1", "--attack-steps", "1", "--faal-statistic",
            "ce", "--final-attacks", "clean", "--final-n-per-class", "2"]  # fmt: skip
    assert run(out, *argv, on_step_end=_interrupt_at(2)) == 130
    assert json.loads((out / "config.json").read_text())["faal_statistic"] == "ce"
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["faal_statistic"] == "ce"
    assert ckpt["trainer"]["weighting"]["statistic"] == "ce"
    with pytest.raises(SystemExit) as exc:
        T.main(["--resume", str(out), "--faal-statistic", "margin", "--quiet"])
    assert exc.value.code == 2
    assert "faal_statistic: run has 'ce', given 'margin'" in capsys.readouterr().err


def test_final_checkpoint_last_evaluates_the_end_of_training(tmp_path, digits):
    out = tmp_path / "run"
    argv = ["--method", "pgd-at", "--epochs", "2", "--attack-steps", "1", "--final-attacks",
            "clean", "--final-n-per-class", "5", "--final-checkpoint", "last"]  # fmt: skip
    assert run(out, *argv) == 0
    assert (out / "best.pt").exists()
    final = json.loads((out / "final.json").read_text())
    assert final["checkpoint"] == str(out / "last.pt")
    assert final["split"] == "test" and final["n_per_class"] == 5 and final["seed"] == 0
    assert final["seconds"] >= 0
    test = stratified_subset(digits.test, 5, seed=0)
    model, _ = model_from_checkpoint(out / "last.pt")
    result = evaluate_model(model, test, num_classes=10, attacks=("clean",), eps=0.1,
                            step_size=0.025, batch_size=256, seed=0)  # fmt: skip
    assert final["results"]["clean"]["per_class"] == result["clean"]["per_class"]
    # without a validation split there is no best.pt: the default evaluates last.pt
    out2 = tmp_path / "no-val"
    argv2 = ["--method", "natural", "--epochs", "1", "--val-per-class", "0", "--final-attacks",
             "clean", "--final-n-per-class", "2"]  # fmt: skip
    assert run(out2, *argv2) == 0
    assert not (out2 / "best.pt").exists()
    final2 = json.loads((out2 / "final.json").read_text())
    assert final2["checkpoint"] == str(out2 / "last.pt") and final2["n_per_class"] == 2


def test_frl_updates_each_epoch_from_validation_errors(tmp_path):
    """FRL multipliers and per-class eps follow SPEC §4 from the logged validation accuracies."""
    out = tmp_path / "frl"
    argv = ["--method", "frl-rwrm", "--epochs", "3", "--final-attacks", "clean",
            "--final-n-per-class", "2", "--attack-steps", "2", "--frl-alpha2", "2.0"]  # fmt: skip
    assert run(out, *argv) == 0
    lines = metric_lines(out / "metrics.jsonl")
    eps, cap, a1, a2, delta, lim = 0.1, 0.2, 0.05, 2.0, 0.05, 0.5
    lam0, lam1, lam2 = np.zeros(10), np.zeros(10), np.zeros(10)
    expected_eps = np.full(10, eps)

    def normalise(lam):
        lam = np.maximum(lam, 0.0)
        return lam * (lim / lam.sum()) if lam.sum() > lim else lam

    for ln in lines:
        np.testing.assert_allclose(ln["class_eps"], expected_eps, rtol=1e-12)
        clean = np.array(ln["val"]["clean"]["per_class"])
        robust = np.array(ln["val"]["pgd20"]["per_class"])
        e, b = 1 - clean, clean - robust
        g0, g1 = e - e.mean() - delta, b - b.mean() - delta
        scale = ln["lr"] / 0.05  # the rates decay with the learning rate (FRL §5.1)
        lam0 = normalise(lam0 + scale * a1 * g0)
        lam1 = normalise(lam1 + 2 * scale * a1 * g1)
        lam2 = lam2 + scale * a2 * g1
        np.testing.assert_allclose(ln["frl"]["lambda0"], lam0, atol=1e-12)
        np.testing.assert_allclose(ln["frl"]["lambda1"], lam1, atol=1e-12)
        np.testing.assert_allclose(ln["frl"]["lambda2"], lam2, atol=1e-12)
        w0 = 0.1 + lam0 - lam0.sum() / 10
        np.testing.assert_allclose(ln["frl"]["next_nat_weights"], w0, atol=1e-12)
        expected_eps = np.minimum(eps * np.clip(np.exp(2 * lam2), 0.98, 3.0), cap)
        np.testing.assert_allclose(ln["frl"]["next_class_eps"], expected_eps, rtol=1e-12)
    assert not np.allclose(expected_eps, eps), "the test should exercise a remargin"
    state = load_checkpoint(out / "last.pt")["trainer"]["weighting"]
    np.testing.assert_allclose(state["lambda2"], lam2, atol=1e-12)
    assert state["updates"] == 3


def test_frl_rule_paper_follows_algorithm_1_and_eq_11_as_printed(tmp_path):
    """--frl-rule paper: multipliers step by a1 / a2 (both 0.05 by default) times the gap to the
    class mean minus tau, kept >= 0 and not normalised; each budget is multiplied by
    exp(a2 (b_c - tau)) after each epoch, then capped at 2 eps. Checked against the logged
    validation accuracies, epoch by epoch."""
    out = tmp_path / "frl-paper"
    argv = ["--method", "frl-rwrm", "--epochs", "2", "--final-attacks", "clean",
            "--final-n-per-class", "2", "--attack-steps", "2", "--frl-rule", "paper"]  # fmt: skip
    assert run(out, *argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["frl_rule"] == "paper"
    assert config["frl_alpha1"] == config["frl_alpha2"] == 0.05
    phi_nat, phi_bndy, budgets = np.zeros(10), np.zeros(10), np.full(10, 0.1)
    for ln in metric_lines(out / "metrics.jsonl"):
        np.testing.assert_allclose(ln["class_eps"], np.minimum(budgets, 0.2), rtol=1e-12)
        clean = np.array(ln["val"]["clean"]["per_class"])
        e, b = 1 - clean, clean - np.array(ln["val"]["pgd20"]["per_class"])
        rate = 0.05 * ln["lr"] / 0.05  # the rates decay with the learning rate
        phi_nat = np.maximum(phi_nat + rate * (e - e.mean() - 0.05), 0.0)
        phi_bndy = np.maximum(phi_bndy + rate * (b - b.mean() - 0.05), 0.0)
        budgets = budgets * np.exp(rate * (b - 0.05))
        np.testing.assert_allclose(ln["frl"]["lambda0"], phi_nat, atol=1e-12)
        np.testing.assert_allclose(ln["frl"]["lambda1"], phi_bndy, atol=1e-12)
        np.testing.assert_allclose(ln["frl"]["next_class_eps"], np.minimum(budgets, 0.2),
                                   rtol=1e-12)  # fmt: skip
    state = load_checkpoint(out / "last.pt")["trainer"]["weighting"]
    assert state["rule"] == "paper"


def test_frl_reference_options_step_rule_and_update_before_the_first_epoch(tmp_path, digits):
    """--frl-step-rule batch-max: the attack step is the batch's largest per-class eps / 4;
    --frl-update-at epoch-start: the initial model is validated and the multipliers updated before
    epoch 1, so epoch 1 already trains with the remargined budgets computed here from that
    validation (the default order leaves epoch 1 at the base eps)."""
    from deep.methods.frl import FRLWeighting

    w = FRLWeighting(10, 0.1, mode="rwrm", base_step=0.025, step_rule="batch-max")
    w.lambda2 = np.linspace(-0.2, 0.3, 10)
    y = torch.tensor([0, 3, 3, 7])
    eps = 0.1 * np.clip(np.exp(2 * w.lambda2), 0.98, 3.0)
    step = w.class_step(y)
    assert step.shape == (4,)
    np.testing.assert_allclose(step.numpy(), eps[[0, 3, 7]].max() / 4, rtol=1e-6)
    assert FRLWeighting(10, 0.1, base_step=0.025).class_step(y) == 0.025

    argv = ["--method", "frl-rwrm", "--epochs", "1", "--final-attacks", "clean",
            "--final-n-per-class", "2", "--attack-steps", "2", "--frl-alpha2", "2.0"]  # fmt: skip
    assert run(tmp_path / "end", *argv) == 0
    (line,) = metric_lines(tmp_path / "end" / "metrics.jsonl")
    assert line["class_eps"] == [0.1] * 10
    assert run(tmp_path / "start", *argv, "--frl-update-at", "epoch-start") == 0
    (line,) = metric_lines(tmp_path / "start" / "metrics.jsonl")
    initial = make_trainer(digits, "--method", "frl-rwrm").model  # the same seed: same weights
    val = evaluate_model(initial, digits.val, num_classes=10, attacks=("clean", "pgd20"),
                         eps=0.1, step_size=0.025, seed=0)  # fmt: skip
    clean = np.array(val["clean"]["per_class"])
    b = clean - np.array(val["pgd20"]["per_class"])
    lam2 = 2.0 * (b - b.mean() - 0.05)
    expected = np.minimum(0.1 * np.clip(np.exp(2 * lam2), 0.98, 3.0), 0.2)
    np.testing.assert_allclose(line["class_eps"], expected, rtol=1e-12)
    assert not np.allclose(expected, 0.1)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "fgsm"], "pgd-at"),
        (["--model", "vgg"], "small-cnn"),
        (["--dataset", "mnist"], "fashion-mnist"),
        (["--tau", "-0.1"], "--tau"),
        (["--eps", "0"], "--eps"),
        (["--epochs", "0"], "--epochs"),
        (["--tau-schedule", "0-0.1"], "--tau-schedule"),
        (["--final-attacks", "pgd7"], "--final-attacks"),
        (["--method", "trades", "--attack-start", "zero"], "--attack-start zero needs a PGD"),
        (["--final-checkpoint", "first"], "--final-checkpoint"),
        (["--train-per-class", "0"], "--train-per-class must be >= 1, got 0"),
        (["--final-n-per-class", "0"], "--final-n-per-class must be >= 1"),
        (["--final-n-per-class", "51"], "--final-n-per-class must be at most 50"),
        (
            ["--train-per-class", "500"],
            "--train-per-class 500, but class 8 has only 104 images after",
        ),
        (["--val-per-class", "500"], "--val-per-class 500, but class 8 has only 124 images here"),
        (["--device", "gpu"], "--device gpu: choose auto, cpu, cuda or cuda:N"),
        (["--schedule", "cosine", "--milestones", "5"], "--milestones needs --schedule multistep"),
        (["--progress-interval", "-1"], "--progress-interval"),
        (["--faal-statistic", "hinge"], "--faal-statistic"),
        (["--method", "trades", "--class-boundary-weight", "3=2"], "needs --method fixed-class"),
        (["--method", "fixed-class", "--class-eps-scale", "3=0"], "must be a finite number > 0"),
        (["--method", "fixed-class", "--class-eps-scale", "3"], "is not CLASS=RATIO"),
        (["--method", "fixed-class", "--class-boundary-weight", "3=2,3=4"], "at most once"),
        (["--method", "fixed-class", "--class-boundary-weight", "cat=2"], "unknown class 'cat'"),
        (["--method", "fixed-class", "--class-eps-scale", "10=2"], "class index 10"),
    ],
)
def test_bad_input_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "--device cuda: CUDA is not available on this machine" in capsys.readouterr().err


def test_config_json_records_the_sizes_used(tmp_path):
    out = tmp_path / "run"
    argv = ["--epochs", "1", "--attack-steps", "1", "--final-attacks", "clean",
            "--final-n-per-class", "2", "--train-per-class", "10", "--batch-size", "16",
            "--quiet"]  # fmt: skip
    assert T.main(["--out", str(out), *argv]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["val_per_class"] == 20  # the digits default, written as the number used
    assert config["train_per_class"] == 10 and config["final_n_per_class"] == 2
    # a run folder given to --init means its best.pt, as --checkpoint does in deep.evaluate
    tuned = tmp_path / "tuned"
    assert T.main(["--out", str(tuned), "--init", str(out), *argv]) == 0
    assert json.loads((tuned / "config.json").read_text())["init"] == str(out / "best.pt")


def test_options_without_effect_are_noted_at_the_start(tmp_path, capsys):
    common = ["--epochs", "1", "--attack-steps", "1", "--final-attacks", "clean",
              "--final-n-per-class", "1", "--quiet"]  # fmt: skip
    argv = ["--method", "faal-at", "--faal-start-epoch", "3", "--tau-schedule", "0:0.5,4:0.1",
            "--train-per-class", "20", "--batch-size", "128", *common]  # fmt: skip
    assert T.main(["--out", str(tmp_path / "a"), *argv]) == 0
    out = capsys.readouterr().out
    assert "note: --faal-start-epoch 3 is not before --epochs 1" in out
    assert "note: --tau-schedule: epoch(s) 4 come after the last epoch" in out
    assert "note: each epoch uses 128 of the 200 training images" in out
    assert T.main(["--out", str(tmp_path / "b"), "--method", "fixed-class",
                   "--train-per-class", "5", "--batch-size", "10", *common]) == 0  # fmt: skip
    assert "without --class-boundary-weight or --class-eps-scale" in capsys.readouterr().out


def test_too_large_a_batch_is_refused_before_the_run_folder_exists(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        T.main(["--out", str(out), "--train-per-class", "2", "--batch-size", "64", "--quiet"])
    assert exc.value.code == 2
    assert "--batch-size 64 exceeds the 20 training images" in capsys.readouterr().err
    assert not out.exists()


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """Under nohup / CI / a scheduler (stderr captured here) training prints plain lines with the
    step, rate, ETA and running loss (--progress-interval 0: every step)."""
    argv = ["--method", "pgd-at", "--epochs", "1", "--attack-steps", "1", "--final-attacks",
            "clean", "--final-n-per-class", "2", "--train-per-class", "10", "--batch-size", "16",
            "--threads", "1", "--progress-interval", "0"]  # fmt: skip
    assert T.main(["--out", str(tmp_path / "run"), *argv]) == 0
    err = capsys.readouterr().err.splitlines()
    steps = [ln for ln in err if ln.startswith("epoch 1/1: step ")]
    assert [ln.split()[3] for ln in steps] == [f"{i}/6" for i in range(1, 7)]
    assert all("step/s, ETA" in ln and ", loss " in ln for ln in steps)
    assert any(ln.startswith("clean: batch 1/1 (100.0%)") for ln in err)  # final evaluation


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "preact-resnet18", "num_classes": 10, "in_channels": 1}, "preact-resnet18"),
        ({"name": "small-cnn", "num_classes": 5, "in_channels": 1}, "5 classes"),
    ],
)
def test_init_from_another_architecture_or_class_count_exits_2(tmp_path, capsys, config, message):
    model = build_model(config["name"], config["num_classes"], in_channels=1, image_size=8)
    path = tmp_path / "other.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, path)
    with pytest.raises(SystemExit) as exc:
        T.main(["--init", str(path), "--model", "small-cnn", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_fine_tuning_starts_from_init(reference_run, tmp_path):
    out = tmp_path / "ft"
    argv = ["--init", str(reference_run / "last.pt"), "--method", "faal-at", "--epochs", "1",
            "--lr", "0.01", "--schedule", "multistep", "--milestones", "1", "--tau", "0.5",
            "--final-attacks", "clean", "--final-n-per-class", "2"]  # fmt: skip

    captured = {}

    def grab(trainer):
        if trainer.global_step == 1:
            captured["lr"] = trainer.optimizer.param_groups[0]["lr"]

    assert run(out, *argv, on_step_end=grab) == 0
    assert captured["lr"] == 0.01
    init = state_of(reference_run / "last.pt")
    tuned = state_of(out / "last.pt")
    fresh_model = build_model("small-cnn", 10, in_channels=1, image_size=8)
    fresh = fresh_model.state_dict()
    params = [name for name, _ in fresh_model.named_parameters()]

    def distance(a, b):
        return sum(float((a[k] - b[k]).norm()) for k in params)

    # Moved by the fine-tuning, but stayed near the initial weights (not a fresh initialisation).
    assert 0 < distance(tuned, init) < 0.5 * distance(fresh, init)


# ------------------------------------------------------------------------------------------
# torchrun: 2 CPU processes (gloo)
# ------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "deep.train", "--method", "faal-trades-awp",
           "--epochs", "2", "--out", str(out), *TINY, "--attack-steps", "2", "--debug",
           "--final-attacks", "clean,pgd20"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("config.json", "metrics.jsonl", "last.pt", "final.json"):
        assert (out / name).exists(), name
    lines = metric_lines(out / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [1, 2]
    for line in lines:  # at every epoch end, where the model is validated and saved
        hashes = line["debug_hashes"]
        assert len(hashes) == 2
        assert hashes[0]["class_weights"] == hashes[1]["class_weights"]  # same FAAL weights
        assert hashes[0]["model"] == hashes[1]["model"]  # parameters identical
        assert hashes[0]["buffers"] == hashes[1]["buffers"]  # BatchNorm statistics too
        # Both ranks' samples were seen: 100 images, 2 ranks x 3 batches of 16.
        assert line["train"]["samples"] == 96
    assert proc.stdout.count("epoch 1/2") == 1  # only rank 0 prints
    # The saved model is the one both ranks hold: rank 0's buffers, hashed, are the saved ones.
    saved, _ = model_from_checkpoint(out / "last.pt")
    buffers = torch.cat([b.reshape(-1).double() for b in saved.buffers()])
    assert _tensor_hash(buffers) == lines[-1]["debug_hashes"][0]["buffers"]
    final = json.loads((out / "final.json").read_text())
    assert final["results"]["clean"]["counts"] == [50] * 10  # the full test set, sharded


_RESUME_DRIVER = """
import sys
import torch.distributed as dist
from deep import distributed as dd
from deep import train as T

dd.shutdown = lambda ctx, wait=True: None  # one process group for the three runs
out, common = sys.argv[1], sys.argv[2:]
assert T.main(["--out", f"{out}/whole", *common]) == 0

def stop_at_step_2(trainer):
    if trainer.global_step == 2:
        raise KeyboardInterrupt

assert T.main(["--out", f"{out}/cut", *common], on_step_end=stop_at_step_2) == 130
assert T.main(["--resume", f"{out}/cut"]) == 0
dist.barrier()
dist.destroy_process_group()
dd.exit_process(0)  # as python -m deep.train does under torchrun
"""


def test_torchrun_resume_inside_an_epoch_is_exact(tmp_path):
    """Stopped inside the first epoch under 2 processes and resumed: every rank gets back its own
    BatchNorm statistics and metric sums, so the run ends as the uninterrupted one does."""
    driver = tmp_path / "driver.py"
    driver.write_text(_RESUME_DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", str(driver), str(tmp_path), "--method", "trades",
           "--epochs", "2", *TINY, "--attack-steps", "1", "--val-per-class", "4", "--debug",
           "--final-attacks", "clean", "--final-n-per-class", "2"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    whole = metric_lines(tmp_path / "whole" / "metrics.jsonl")
    cut = metric_lines(tmp_path / "cut" / "metrics.jsonl")
    assert [m["epoch"] for m in cut] == [1, 2]
    for a, b in zip(whole, cut):
        assert a["debug_hashes"] == b["debug_hashes"], a["epoch"]  # model, buffers, method
        assert a["train"] == b["train"], a["epoch"]  # loss, accuracy, samples of both ranks


def test_shard_per_class_covers_the_split(digits):
    split = stratified_subset(digits.test, 7, seed=0)
    parts = [dd.shard_per_class(split, 10, dd.DistContext(rank=r, world_size=3)) for r in range(3)]
    seen = torch.cat([p.y for p in parts])
    assert len(seen) == len(split)
    assert torch.equal(torch.bincount(seen, minlength=10), torch.bincount(split.y, minlength=10))
    assert dd.shard_per_class(split, 10, dd.DistContext(rank=0, world_size=8)) is None


def test_merge_classwise_equals_the_whole(digits):
    from deep.evaluate import classwise_accuracy

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (60,), generator=g)
    correct = torch.rand(60, generator=g) < 0.6
    whole = classwise_accuracy(correct, y, 4)
    parts = [classwise_accuracy(correct[i::2], y[i::2], 4, allow_empty=True) for i in range(2)]
    merged = dd._merge_classwise(parts, 4)
    assert merged == whole


def test_bf16_autocast_step(digits):
    """--bf16: the step runs under autocast (here on the CPU); losses and weights stay float32."""
    trainer = make_trainer(digits, "--method", "faal-trades", "--attack-steps", "2", "--bf16")
    x, y = first_batch(digits)
    trainer.train_step(x, y)
    assert trainer.last_loss.dtype == torch.float32 and math.isfinite(float(trainer.last_loss))
    assert trainer.last_weights.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
