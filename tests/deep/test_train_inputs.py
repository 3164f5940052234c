"""deep.train as a new user runs it: --out checked first, budgets typed as 8/255 and refused
beyond the input domain, --init across data sets noted, best.pt's tie rule, resuming a last.pt
written before checkpoints carried a digest, and Ctrl-C before the first checkpoint."""

import json
import time
from pathlib import Path

import pytest
import torch

from deep import train as T
from deep.checkpoint import load_checkpoint, save_atomic
from deep.data import load_dataset
from deep.models import build_model

TINY = ["--train-per-class", "10", "--batch-size", "16", "--quiet", "--threads", "1",
        "--final-attacks", "clean", "--val-per-class", "5"]  # fmt: skip


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_out_that_is_a_file_is_refused_at_once(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    start = time.perf_counter()
    for out in (a_file, a_file / "run"):
        code, _, err = _exit(["--out", str(out), *TINY], capsys)
        assert code == 2 and err.splitlines()[0].startswith(
            f"python -m deep.train: error: --out {out}"
        )
    assert time.perf_counter() - start < 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--norm", "l2", "--eps", "8"],
            "l_2 eps 8 is at or beyond the l_2 diameter of [0, 1]^64 (1x8x8 inputs): sqrt(64) = 8",
        ),
        (["--eps", "8"], "write 8/255"),
        (["--eps", "8/2x5"], "fraction like 8/255"),
    ],
)
def test_budgets_that_cannot_be_meant_are_refused(tmp_path, capsys, argv, message):
    code, _, err = _exit(["--out", str(tmp_path / "run"), *TINY, *argv], capsys)
    assert code == 2 and message in err.splitlines()[0]
    assert not (tmp_path / "run").exists()


def test_fraction_budget_and_init_from_another_dataset(tmp_path, capsys):
    digits = load_dataset("digits")
    model = build_model("small-cnn", 10, in_channels=1, mean=digits.mean, std=digits.std,
                        image_size=8)  # fmt: skip
    other = tmp_path / "other.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict(),
                 "config": {"dataset": "fashion-mnist"}}, other)  # fmt: skip
    out = tmp_path / "run"
    argv = ["--out", str(out), *TINY, "--epochs", "1", "--eps", "8/255", "--step-size", "2/255",
            "--init", str(other), "--method", "pgd-at"]  # fmt: skip
    assert T.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"note: --init {other} was trained on fashion-mnist; fine-tuning it on digits" in printed
    assert "attack budget: linf eps 0.0313725 (8/255), step 0.00784314 (2/255)" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["eps"] == 8 / 255 and config["step_size"] == 2 / 255


def _tied_epochs(monkeypatch, averages):
    """Every epoch's worst-class validation PGD-20 accuracy is 0 and its average is given."""
    finish = T.Trainer.finish_epoch

    def tied(self, **kwargs):
        record, steps = finish(self, **kwargs)
        record["val"]["pgd20"]["worst"] = 0.0
        record["val"]["pgd20"]["average"] = averages[record["epoch"] - 1]
        return record, steps

    monkeypatch.setattr(T.Trainer, "finish_epoch", tied)


@pytest.mark.parametrize("rule, expected", [("average", 2), ("first", 1)])
def test_ties_on_the_worst_class_go_to_the_better_average(tmp_path, capsys, monkeypatch, rule,
                                                          expected):  # fmt: skip
    _tied_epochs(monkeypatch, [0.4, 0.6, 0.6 - 1e-9])
    out = tmp_path / "run"
    argv = ["--out", str(out), *TINY, "--epochs", "3", "--method", "pgd-at", "--best-ties", rule]
    assert T.main(argv) == 0
    assert load_checkpoint(out / "best.pt")["best"]["epoch"] == expected
    printed = capsys.readouterr().out
    assert "model selection: best.pt holds the epoch with the best worst-class" in printed
    tie_line = "best.pt: epoch 2 ties epoch 1 on worst-class validation PGD-20 accuracy (0.0%)"
    assert (tie_line in printed) == (rule == "average")


def test_resume_of_a_last_pt_written_without_digest(tmp_path, capsys):
    out = tmp_path / "run"

    def stop_after_first(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt

    argv = ["--out", str(out), *TINY, "--epochs", "2", "--method", "pgd-at"]
    assert T.main(argv, on_epoch_end=stop_after_first) == 130
    for name in ("last.pt", "best.pt"):  # as the previous version wrote them: torch.save, no digest
        torch.save(load_checkpoint(out / name), out / name)
    capsys.readouterr()
    assert T.main(["--resume", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: checkpoint file {out / 'last.pt'} has no integrity digest" in err
    assert load_checkpoint(out / "last.pt")["epoch"] == 2  # rewritten with a digest: no note


def test_changed_last_pt_is_refused_on_resume(tmp_path, capsys):
    out = tmp_path / "run"

    def stop(trainer):
        raise KeyboardInterrupt

    assert T.main(["--out", str(out), *TINY, "--epochs", "2"], on_epoch_end=stop) == 130
    data = bytearray((out / "last.pt").read_bytes())
    data[-100] ^= 0x04
    (out / "last.pt").write_bytes(bytes(data))
    code, _, err = _exit(["--resume", str(out)], capsys)
    assert code == 2 and "last.pt has changed since it was written" in err.splitlines()[0]


def test_ctrl_c_inside_the_first_step_leaves_no_folder(tmp_path, capsys, monkeypatch):
    def interrupted(self, x, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(T.Trainer, "train_step", interrupted)
    out = tmp_path / "runs" / "run"
    assert T.main(["--out", str(out), *TINY, "--epochs", "1"]) == 130
    assert not out.exists()
    assert "nothing was saved" in capsys.readouterr().out
    assert Path(tmp_path / "runs").is_dir()  # only the run folder itself is removed


def test_every_budget_option_takes_a_fraction():
    args = T.build_parser().parse_args(
        ["--eps", "8/255", "--step-size", "2/255", "--sigma", "64/255", "--frl-eps-cap", "16/255"]
    )
    assert (args.eps, args.step_size, args.sigma, args.frl_eps_cap) == (
        8 / 255, 2 / 255, 64 / 255, 16 / 255
    )  # fmt: skip
