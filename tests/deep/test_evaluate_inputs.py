"""deep.evaluate as a new user runs it: the data set, norm and eps taken from the checkpoint's
training config, budgets typed as 8/255, a changed checkpoint or an --out that is a file refused
before any work, Ctrl-C leaving no folder, and evaluate_model's defaults equal to the CLI's."""

import inspect
import time

import pytest
import torch

from deep import evaluate
from deep.checkpoint import save_atomic
from deep.data import load_dataset
from deep.models import build_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def l2_run(digits, tmp_path_factory):
    """An untrained small CNN saved as deep.train saves best.pt: with the training config."""
    torch.manual_seed(0)
    model = build_model("small-cnn", 10, in_channels=1, mean=digits.mean, std=digits.std,
                        image_size=8)  # fmt: skip
    run = tmp_path_factory.mktemp("run")
    config = {"dataset": "digits", "norm": "l2", "eps": 0.75, "method": "pgd-at"}
    save_atomic({"model_config": model.model_config, "model": model.state_dict(),
                 "config": config}, run / "best.pt")  # fmt: skip
    return run


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_dataset_norm_and_eps_come_from_the_checkpoint(l2_run, tmp_path, capsys):
    out = tmp_path / "eval"
    final = evaluate.main(["--checkpoint", str(l2_run / "best.pt"), "--attacks", "clean,pgd20",
                           "--n-per-class", "2", "--out", str(out), "--quiet"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "from the checkpoint's training config: --dataset digits, --norm l2, --eps 0.75" in (
        printed
    )
    assert final["dataset"] == "digits" and final["norm"] == "l2" and final["eps"] == 0.75
    # An explicit flag wins, with a note; a budget of the other norm is not taken from training.
    final = evaluate.main(["--checkpoint", str(l2_run), "--norm", "linf", "--eps", "8/255",
                           "--attacks", "clean", "--n-per-class", "2", "--out",
                           str(tmp_path / "linf"), "--quiet"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "note: differs from the training run: --norm linf (training: l2)" in printed
    assert "attacks: linf eps 0.0313725 (8/255), step" in printed
    assert final["norm"] == "linf" and final["eps"] == pytest.approx(8 / 255, rel=1e-15)


def test_without_a_training_config_dataset_is_asked_for(digits, tmp_path, capsys):
    model = build_model("small-cnn", 10, in_channels=1, mean=digits.mean, std=digits.std,
                        image_size=8)  # fmt: skip
    bare = tmp_path / "bare.pt"
    save_atomic({"model_config": model.model_config, "model": model.state_dict()}, bare)
    code, _, err = _run(["--checkpoint", str(bare), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "--dataset is needed" in err.splitlines()[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--norm", "l2", "--eps", "50"],
            "beyond the l_2 diameter of [0, 1]^64 (1x8x8 inputs): sqrt(64) = 8",
        ),
        (["--norm", "l2", "--eps", "8"], "sqrt(64) = 8"),
        (["--norm", "linf", "--eps", "8"], "write 8/255"),
        (["--eps", "8/0"], "fraction like 8/255"),
    ],
)
def test_budgets_that_cannot_be_meant_are_refused(l2_run, tmp_path, capsys, argv, message):
    code, _, err = _run(["--checkpoint", str(l2_run), "--out", str(tmp_path / "o"), *argv],
                        capsys)  # fmt: skip
    assert code == 2
    assert message in err.splitlines()[0]
    assert not (tmp_path / "o").exists()


def test_changed_checkpoint_and_file_out_are_refused_at_once(l2_run, tmp_path, capsys):
    data = bytearray((l2_run / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped = tmp_path / "flip.pt"
    flipped.write_bytes(bytes(data))
    code, _, err = _run(["--checkpoint", str(flipped), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "flip.pt has changed since it was written" in err.splitlines()[0]
    a_file = tmp_path / "final.json"
    a_file.write_text("{}")
    start = time.perf_counter()
    code, _, err = _run(["--checkpoint", str(l2_run), "--out", str(a_file)], capsys)
    assert time.perf_counter() - start < 1.0
    assert code == 2 and f"--out {a_file}: is a file" in err.splitlines()[0]


def test_ctrl_c_leaves_no_run_folder(l2_run, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_model", interrupted)
    out = tmp_path / "runs" / "eval"
    code, _, err = _run(["--checkpoint", str(l2_run), "--out", str(out), "--quiet"], capsys)
    assert code == 130
    assert err.strip() == "evaluation interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_evaluate_model_defaults_match_the_cli():
    defaults = inspect.signature(evaluate.evaluate_model).parameters
    args = evaluate.build_parser().parse_args(["--checkpoint", "x.pt"])
    assert ",".join(defaults["attacks"].default) == args.attacks
    assert defaults["batch_size"].default == args.batch_size
    assert defaults["seed"].default == args.seed
    assert defaults["norm"].default == (args.norm or "linf")


def test_the_documented_example_of_evaluate_model_runs():
    import doctest

    finder = doctest.DocTestFinder()
    (test,) = [t for t in finder.find(evaluate.evaluate_model, "evaluate_model") if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test)
    assert result.failed == 0 and result.attempted == len(test.examples) == 9
