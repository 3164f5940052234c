"""l_2 evaluation: AutoAttack (norm "L2") against a direct pyautoattack call on the same points,
PGD-20 / CW-20 in l_2 against a stronger direct attack, and the CLI's ``--norm l2`` contract."""

from __future__ import annotations

import json

import pytest
import torch
from pyautoattack import AutoAttack

from deep.attacks import pgd_attack
from deep.data import L2_EPS, L2_STEP_FRACTION, stratified_subset
from deep.evaluate import check_budget, evaluate_model, main
from deep.metrics import classwise_accuracy
from tests.deep.test_evaluate import digits, one_thread, small_cnn_checkpoint, tiny_cnn  # noqa: F401


def test_l2_autoattack_agrees_with_a_direct_pyautoattack_call(digits, tiny_cnn):  # noqa: F811
    split = stratified_subset(digits.test, 2, seed=0)
    eps = 0.5
    res = evaluate_model(
        tiny_cnn, split, num_classes=10, attacks=("clean", "pgd20", "aa"), eps=eps,
        step_size=L2_STEP_FRACTION * eps, seed=5, norm="l2",
    )  # fmt: skip
    x, y = split.x.float() / 255.0, split.y
    direct = AutoAttack(tiny_cnn, norm="L2", eps=eps, version="standard", device="cpu", seed=5)
    direct.verbose = False
    _, y_adv = direct.run_standard_evaluation(x, y, batch_size=len(x))
    expected = classwise_accuracy(y_adv == y, y, 10)
    assert res["autoattack"] == expected
    # The comparison means something: some points fall, some resist; AA is the stronger attack.
    assert 0.0 < expected["average"] < res["clean"]["average"]
    assert res["autoattack"]["average"] <= res["pgd20"]["average"]
    # The l_inf ball of the same radius contains the l_2 ball: l_inf PGD can only do better.
    linf = evaluate_model(
        tiny_cnn, split, num_classes=10, attacks=("pgd20",), eps=eps, step_size=0.1, seed=5
    )
    assert linf["pgd20"]["average"] <= res["pgd20"]["average"]


def test_l2_pgd20_falls_with_eps_and_its_points_stay_in_the_ball(digits, tiny_cnn):  # noqa: F811
    split = stratified_subset(digits.test, 5, seed=2)
    kw = dict(num_classes=10, attacks=("pgd20", "cw20"), seed=0, norm="l2")
    x, y = split.x.float() / 255.0, split.y
    previous = 1.0
    for eps in (0.25, 0.5, 1.0):
        res = evaluate_model(tiny_cnn, split, eps=eps, step_size=eps / 5, **kw)
        acc = res["pgd20"]["average"]
        assert acc <= previous + 1e-12  # expected of a larger ball (seeded, so deterministic)
        previous = acc
        # The evaluation's attack, run directly: its points lie in the l_2 ball.
        g = torch.Generator().manual_seed(0)
        x_adv = pgd_attack(tiny_cnn, x, y, eps=eps, step_size=eps / 5, steps=20, generator=g,
                           norm="l2")  # fmt: skip
        assert torch.all((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-5))
    assert previous < 0.5  # eps 1.0 on 8x8 digits breaks most of an undefended model


def test_check_budget_per_norm():
    assert check_budget(2.0, 0.4, "l2") == (2.0, 0.4)
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\)"):
        check_budget(2.0, 0.4, "linf")
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        check_budget(0.5, 0.0, "l2")
    with pytest.raises(ValueError, match="norm must be one of"):
        check_budget(0.5, 0.1, "l1")


def test_cli_norm_l2_writes_norm_and_l2_defaults(digits, small_cnn_checkpoint, tmp_path, capsys):  # noqa: F811
    ckpt, _ = small_cnn_checkpoint
    out = tmp_path / "run"
    argv = ["--checkpoint", str(ckpt), "--dataset", "digits", "--attacks", "clean,pgd20",
            "--n-per-class", "3", "--out", str(out), "--device", "cpu", "--quiet",
            "--norm", "l2"]  # fmt: skip
    final = main(argv)
    assert json.loads((out / "final.json").read_text()) == final
    assert final["norm"] == "l2"
    assert final["eps"] == pytest.approx(L2_EPS["digits"])
    assert final["step_size"] == pytest.approx(L2_STEP_FRACTION * L2_EPS["digits"])
    assert "frl_errors" in final
    # An l_2 budget larger than 1 is valid; an l_inf one is not.
    main(argv[:-2] + ["--norm", "l2", "--eps", "1.5", "--attacks", "clean"])
    with pytest.raises(SystemExit):
        main(argv[:-2] + ["--norm", "linf", "--eps", "1.5"])
    assert "--eps/--step-size" in capsys.readouterr().err
    linf = main(argv[:-2] + ["--attacks", "clean"])
    assert linf["norm"] == "linf" and linf["eps"] == pytest.approx(digits.eps)
