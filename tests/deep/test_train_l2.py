"""deep.train under the l_2 threat model and with Gaussian-noise augmentation: every preset
steps under l_2, the loop's step equals a hand-written l_2 PGD-AT step, per-class budgets stay in
their l_2 balls, the Gaussian-noise step equals cross-entropy on x + sigma N(0, I), and the CLI
records the norm and sigma in config.json / final.json."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from deep import distributed as dd
from deep import train as T
from deep.attacks import pgd_attack
from deep.data import L2_EPS, L2_STEP_FRACTION, load_dataset
from deep.presets import METHOD_NAMES
from tests.deep.test_train import TINY, first_batch


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def l2_trainer(dataset, *argv):
    parser = T.build_parser()
    cfg = T.resolve_config(parser.parse_args(["--norm", "l2", *argv]), parser)
    eps, step = dataset.attack_budget("l2", cfg["eps"], cfg["step_size"])
    cfg.update(eps=eps, step_size=step, model="small-cnn", channels_last=False)
    return T.Trainer(cfg, dataset, dd.DistContext())


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_preset_steps_under_l2(digits, method):
    trainer = l2_trainer(digits, "--method", method, "--batch-size", "16", "--attack-steps", "2")
    assert trainer.norm == "l2" and trainer.eps == L2_EPS["digits"]
    x, y = first_batch(digits)
    x_adv = trainer._adversarial(x, y)
    eps = trainer.method.class_eps(y)  # the method's per-sample budget (a float if uniform)
    budget = torch.as_tensor(eps, dtype=torch.float64).expand(len(x))
    if trainer.preset.attack != "gaussian":
        assert torch.all((x_adv - x).double().flatten(1).norm(dim=1) <= budget * (1 + 1e-5))
        assert torch.all((x_adv >= 0) & (x_adv <= 1))
    before = copy.deepcopy(trainer.model.state_dict())
    trainer.train_step(x, y)
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert math.isfinite(float(trainer.last_loss))


def _assert_step_matches(trainer, x, y, seed, make_inputs):
    """One loop step equals a hand-written SGD step on CE(reference(make_inputs(model, gen)))."""
    reference = copy.deepcopy(trainer.model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    trainer.attack_gen.set_state(gen.get_state())
    trainer.train_step(x, y)
    inputs = make_inputs(reference, gen)
    reference.train()
    loss = F.cross_entropy(reference(inputs), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert float(trainer.last_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
    for (name, p), q in zip(trainer.model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_l2_step_is_a_plain_l2_pgd_at_step(digits):
    trainer = l2_trainer(digits, "--method", "pgd-at", "--attack-steps", "3", "--lr", "0.1")
    x, y = first_batch(digits)
    eps = L2_EPS["digits"]

    def l2_pgd(reference, gen):
        return pgd_attack(reference, x, y, eps=eps, step_size=L2_STEP_FRACTION * eps, steps=3,
                          generator=gen, norm="l2")  # fmt: skip

    _assert_step_matches(trainer, x, y, 5, l2_pgd)


def test_fixed_class_eps_scale_reaches_the_l2_attack(digits):
    trainer = l2_trainer(digits, "--method", "fixed-class", "--class-eps-scale", "3=2.5",
                         "--attack-steps", "15")  # fmt: skip
    x, y = first_batch(digits, batch_size=64)
    dist = (trainer._adversarial(x, y) - x).flatten(1).norm(dim=1)
    eps = trainer.eps
    assert torch.all(dist[y != 3] <= eps * (1 + 1e-5))
    assert torch.all(dist[y == 3] <= 2.5 * eps * (1 + 1e-5))
    assert dist[y == 3].max() > 1.5 * eps  # the class's larger ball is used


def test_gaussian_noise_step_is_cross_entropy_on_noisy_inputs(digits):
    trainer = l2_trainer(digits, "--method", "gaussian-noise", "--sigma", "0.5", "--lr", "0.1")
    assert trainer.cfg["sigma"] == 0.5
    x, y = first_batch(digits)

    def noisy(reference, gen):  # no clipping: exact Gaussian noise
        return x + 0.5 * torch.randn(x.shape, generator=gen)

    _assert_step_matches(trainer, x, y, 9, noisy)


def test_cli_records_norm_and_sigma(tmp_path, capsys):
    out = tmp_path / "l2"
    argv = [
        "--out",
        str(out),
        *TINY,
        "--method",
        "trades",
        "--norm",
        "l2",
        "--epochs",
        "1",
        "--attack-steps",
        "2",
        "--final-attacks",
        "clean,pgd20",
        "--final-n-per-class",
        "3",
    ]
    assert T.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    final = json.loads((out / "final.json").read_text())
    assert config["norm"] == final["norm"] == "l2"
    assert config["eps"] == final["eps"] == L2_EPS["digits"]
    assert final["step_size"] == pytest.approx(L2_STEP_FRACTION * L2_EPS["digits"])
    # Resuming with another norm is a conflict (exit 2).
    with pytest.raises(SystemExit) as exc:
        T.main(["--resume", str(out), "--norm", "linf"])
    assert exc.value.code == 2
    out = tmp_path / "gauss"
    argv = [
        "--out",
        str(out),
        *TINY,
        "--method",
        "gaussian-noise",
        "--sigma",
        "0.25",
        "--epochs",
        "1",
        "--final-attacks",
        "clean",
        "--final-n-per-class",
        "3",
    ]
    capsys.readouterr()
    assert T.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["sigma"] == 0.25 and config["norm"] == "linf"
    printed = capsys.readouterr().out
    assert "train noisy acc" in printed and "train adv acc" not in printed
    assert "trained with sigma 0.25; attacks: linf eps" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "pgd-at", "--sigma", "0.25"], "--sigma needs --method gaussian-noise"),
        (["--method", "gaussian-noise", "--sigma", "0"], "--sigma must be"),
        (["--norm", "l3"], "--norm"),
        (["--eps", "1.5"], "eps must be in [0, 1)"),
    ],
)
def test_bad_norm_or_sigma_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        T.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_l2_eps_above_one_is_accepted():
    parser = T.build_parser()
    cfg = T.resolve_config(parser.parse_args(["--norm", "l2", "--eps", "1.5"]), parser)
    assert cfg["eps"] == 1.5 and cfg["norm"] == "l2"
