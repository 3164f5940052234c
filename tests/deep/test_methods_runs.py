"""CFA, WAT and DAFA through ``deep.train``: each preset changes training vs its base, resumes
bit-identically (epoch boundary and mid-epoch), keeps its averaged models, runs under a 2-process
torchrun with the same state on both ranks, and validates its options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deep import train as T
from deep.checkpoint import load_checkpoint
from tests.deep.test_train import (
    REPO,
    TINY,
    _free_port,
    _interrupt_at,
    assert_same_weights,
    metric_lines,
    run,
    state_of,
)

NEW = ("cfa-at", "cfa-trades", "wat-trades", "dafa-trades", "dafa-at")
BASE = {"cfa-at": "pgd-at", "cfa-trades": "trades", "wat-trades": "trades",
        "dafa-trades": "trades", "dafa-at": "pgd-at"}  # fmt: skip
# 3 epochs of 6 steps; CFA calibrates from epoch 1, DAFA's warm-up is epochs 0-1.
ARGS = ["--epochs", "3", "--attack-steps", "1", "--val-per-class", "5", "--final-attacks",
        "clean", "--final-n-per-class", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for name in NEW + ("pgd-at", "trades"):
        path = tmp_path_factory.mktemp(name)
        extra = ["--fawa-threshold", "0"] if name == "cfa-at" else []
        assert run(path, "--method", name, *ARGS, *extra) == 0
        out[name] = path
    return out


@pytest.mark.parametrize("name", NEW)
def test_preset_changes_training_vs_its_base(runs, name):
    a, b = state_of(runs[name] / "last.pt"), state_of(runs[BASE[name]] / "last.pt")
    assert any(not (a[k] == b[k]).all() for k in a), f"{name} trained like {BASE[name]}"
    config = json.loads((runs[name] / "config.json").read_text())
    lines = metric_lines(runs[name] / "metrics.jsonl")
    if name.startswith("cfa"):
        assert config["cfa_begin"] == 1 and (runs[name] / "ema.pt").exists()
        assert config["cfa_decay"] == pytest.approx(0.88 ** (100 / 3))
        assert lines[1]["class_eps"] == pytest.approx(lines[0]["cfa"]["next_class_eps"])
    if name.startswith("dafa"):
        assert config["dafa_warmup"] == 2 and config["dafa_lambda"] == 1.0
        weights = lines[1]["dafa"]["class_weights"]
        assert lines[2]["class_eps"] == pytest.approx([w * 0.1 for w in weights])
    if name == "wat-trades":
        assert lines[1]["class_weights"] != pytest.approx(lines[0]["class_weights"])


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("where", ["mid-epoch", "epoch-end"])
def test_exact_resume(runs, tmp_path, name, where):
    out = tmp_path / "run"
    extra = ["--fawa-threshold", "0"] if name == "cfa-at" else []
    if where == "mid-epoch":  # epoch 1, step 2: inside DAFA's last warm-up epoch
        rc = run(out, "--method", name, *ARGS, *extra, on_step_end=_interrupt_at(8))
        assert load_checkpoint(out / "last.pt")["step"] == 2
    else:

        def stop_after_second_epoch(trainer):
            if trainer.epoch == 2:
                raise KeyboardInterrupt

        rc = run(out, "--method", name, *ARGS, *extra, on_epoch_end=stop_after_second_epoch)
    assert rc == 130
    assert T.main(["--resume", str(out), "--quiet"]) == 0
    reference = runs[name]
    assert_same_weights(state_of(out / "last.pt"), state_of(reference / "last.pt"))
    assert metric_lines(out / "metrics.jsonl") == metric_lines(reference / "metrics.jsonl")
    for averaged in ("ema.pt", "fawa.pt"):
        assert (out / averaged).exists() == (reference / averaged).exists()
        if (reference / averaged).exists():
            assert_same_weights(state_of(out / averaged), state_of(reference / averaged))


def test_final_checkpoint_fawa_and_its_fallback(runs, tmp_path, capsys):
    final = json.loads((runs["cfa-at"] / "final.json").read_text())
    assert final["checkpoint"] == str(runs["cfa-at"] / "best.pt")
    out = tmp_path / "fawa"
    argv = ["--method", "cfa-at", *ARGS, "--epochs", "1", "--final-checkpoint", "fawa"]
    assert run(out, *argv, "--fawa-threshold", "0") == 0
    assert json.loads((out / "final.json").read_text())["checkpoint"] == str(out / "fawa.pt")
    assert load_checkpoint(out / "fawa.pt")["model_config"]["name"] == "small-cnn"
    capsys.readouterr()
    never = tmp_path / "never"
    assert run(never, *argv, "--fawa-threshold", "1") == 0
    assert not (never / "fawa.pt").exists()
    final = json.loads((never / "final.json").read_text())
    assert final["checkpoint"] == str(never / "last.pt")
    assert "no fawa.pt" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "trades", "--wat-eta", "0.2"], "--wat-eta needs --method wat-trades"),
        (["--method", "pgd-at", "--cfa-begin", "3"], "--cfa-begin needs --method cfa-at"),
        (["--method", "cfa-at", "--cfa-begin", "0"], "--cfa-begin must be >= 1"),
        (["--method", "dafa-at", "--dafa-min-weight", "0"], "--dafa-min-weight must be > 0"),
        (["--method", "cfa-at", "--cfa-decay", "1"], "--cfa-decay must be in [0, 1)"),
        (["--method", "trades", "--final-checkpoint", "ema"], "needs a method that keeps"),
        (["--method", "wat-trades", "--val-per-class", "0"], "--val-per-class must be > 0"),
    ],
)
def test_bad_method_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


_DRIVER = """
import sys
import torch.distributed as dist
from deep import distributed as dd
from deep import train as T

dd.shutdown = lambda ctx, wait=True: None  # one process group for all the runs of this driver
out, names, common = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
for name in names:
    extra = ["--fawa-threshold", "0"] if name.startswith("cfa") else []
    assert T.main(["--method", name, "--out", f"{out}/{name}", *common, *extra]) == 0
dist.barrier()  # rank 0 may still be writing
dist.destroy_process_group()
dd.exit_process(0)  # as python -m deep.train does under torchrun
"""


def test_torchrun_two_processes(tmp_path):
    """Every new preset under 2 gloo processes (one torchrun, the runs one after the other): the
    model and the method's state (weights, eps, averaged models, statistics) are bit-identical
    on both ranks after every epoch."""
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", str(driver), str(tmp_path), ",".join(NEW), *TINY,
           "--epochs", "2", "--attack-steps", "1", "--val-per-class", "4", "--debug",
           "--final-attacks", "clean", "--final-n-per-class", "2"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in NEW:
        out = tmp_path / name
        lines = metric_lines(out / "metrics.jsonl")
        assert len(lines) == 2
        for line in lines:
            first, second = line["debug_hashes"]
            assert first == second, name
            assert line["train"]["samples"] == 96  # both ranks' batches: 2 x 3 x 16
        state = load_checkpoint(out / "last.pt")["trainer"]["weighting"]
        if name.startswith("dafa"):  # warm-up 1: the weights came from both ranks' samples
            assert state["computed"] and lines[0]["dafa"]["class_weights"] != [1.0] * 10
        if name.startswith("cfa"):
            assert (out / "ema.pt").exists() and (out / "fawa.pt").exists()
