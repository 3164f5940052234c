"""deep.certify as a new user runs it: data set and sigma from the checkpoint's training config,
sigma typed as a fraction, --out checked before any work, Ctrl-C leaving no folder."""

import json
import time

import pytest
import torch

from deep.certify import main
from deep.checkpoint import save_atomic
from deep.data import load_dataset
from deep.models import build_model

FAST = ["--n0", "10", "--n", "50", "--n-per-class", "1", "--batch-size", "20", "--device", "cpu",
        "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """A small CNN saved as deep.train --method gaussian-noise saves it: with its config."""
    digits = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("small-cnn", 10, in_channels=1, mean=digits.mean, std=digits.std,
                        image_size=8)  # fmt: skip
    run = tmp_path_factory.mktemp("noise-run")
    config = {"dataset": "digits", "method": "gaussian-noise", "sigma": 0.25, "norm": "linf"}
    save_atomic({"model_config": model.model_config, "model": model.state_dict(),
                 "config": config}, run / "best.pt")  # fmt: skip
    return run


def test_dataset_and_sigma_come_from_the_checkpoint(noise_run, tmp_path, capsys):
    assert main(["--checkpoint", str(noise_run), "--out", str(tmp_path / "c"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "from the checkpoint's training config: --dataset digits, --sigma 0.25" in out
    result = json.loads((tmp_path / "c" / "certify.json").read_text())
    assert result["dataset"] == "digits" and result["sigma"] == 0.25
    argv = ["--checkpoint", str(noise_run), "--sigma", "64/255", "--out", str(tmp_path / "d")]
    assert main(argv + FAST) == 0
    out = capsys.readouterr().out
    assert "note: differs from the training run: --sigma 0.25098 (64/255) (training: 0.25)" in out
    assert "noise: sigma 0.25098 (64/255)" in out
    assert json.loads((tmp_path / "d" / "certify.json").read_text())["sigma"] == 64 / 255


def test_a_checkpoint_without_noise_level_asks_for_sigma(noise_run, tmp_path, capsys):
    ckpt = torch.load(noise_run / "best.pt", weights_only=True)
    ckpt["config"] = {"dataset": "digits", "method": "pgd-at", "sigma": None}
    save_atomic(ckpt, tmp_path / "at.pt")
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(tmp_path / "at.pt"), "--out", str(tmp_path / "o"), *FAST])
    assert exc.value.code == 2
    assert "--sigma is needed" in capsys.readouterr().err.splitlines()[0]
    assert not (tmp_path / "o").exists()


def test_out_file_refused_at_once_and_ctrl_c_leaves_nothing(noise_run, tmp_path, capsys,
                                                            monkeypatch):  # fmt: skip
    a_file = tmp_path / "certify.json"
    a_file.write_text("{}")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(noise_run), "--out", str(a_file / "sub"), *FAST])
    assert time.perf_counter() - start < 1.0
    assert exc.value.code == 2
    assert f"lies under {a_file}, which is a file" in capsys.readouterr().err.splitlines()[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("deep.certify.certify", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(noise_run), "--out", str(tmp_path / "runs" / "c"), *FAST])
    assert exc.value.code == 130
    assert capsys.readouterr().err.strip() == "certification interrupted; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certify.json"]
