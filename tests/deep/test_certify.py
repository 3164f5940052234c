"""Randomized smoothing: the Clopper-Pearson bound against an exact mpmath inversion, the binomial
test against scipy, soundness and tightness of CERTIFY on a linear classifier (whose smoothed
radius is exactly its l_2 distance to the hyperplane), a constant model, abstention on ties, and
the ``python -m deep.certify`` contract."""

from __future__ import annotations

import csv
import json

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from deep.certify import (
    _binomial_test_pvalue,
    certify,
    class_counts,
    clopper_pearson_lower,
    main,
    max_certifiable_radius,
    predict,
)
from tests.deep.test_evaluate import digits, one_thread, small_cnn_checkpoint  # noqa: F401

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
def _mp_lower_bound(k: int, n: int, alpha: float) -> mpmath.mpf:
    """The p with P(Binomial(n, p) >= k) = alpha, by bisection on the exact binomial tail."""
    mpmath.mp.dps = 40

    def tail(p):
        return mpmath.fsum(
            mpmath.binomial(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)
        )

    lo, hi = mpmath.mpf(0), mpmath.mpf(1)
    for _ in range(70):  # the tail increases with p; 2^-70 is far below the tolerance
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) < alpha else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize(
    "k, n, alpha",
    [(1, 1, 0.05), (5, 10, 0.001), (10, 10, 0.001), (97, 100, 0.01), (0, 50, 0.05),
     (150, 300, 0.001), (299, 300, 1e-6)],
)  # fmt: skip
def test_clopper_pearson_lower_matches_exact_inversion(k, n, alpha):
    got = float(clopper_pearson_lower(k, n, alpha))
    expected = 0.0 if k == 0 else float(_mp_lower_bound(k, n, alpha))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_clopper_pearson_is_vectorised_and_checks_input():
    k = np.array([0, 3, 7, 10])
    np.testing.assert_allclose(
        clopper_pearson_lower(k, 10, 0.01),
        [clopper_pearson_lower(int(v), 10, 0.01) for v in k],
        rtol=0,
    )
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(3, 10, 1.5)
    with pytest.raises(ValueError, match="k <= n"):
        clopper_pearson_lower(11, 10, 0.01)


@pytest.mark.parametrize("sigma, n, alpha", [(0.25, 100, 0.001), (0.5, 1000, 0.001),
                                             (0.12, 100_000, 0.001), (1.0, 10, 0.1)])  # fmt: skip
def test_max_certifiable_radius_is_the_all_votes_bound_and_what_certify_reaches(sigma, n, alpha):
    # every vote for c_A: P(Binomial(n, p) >= n) = p^n = alpha, so p_lower = alpha^(1/n)
    expected = max(sigma * stats.norm.ppf(alpha ** (1 / n)), 0.0)
    assert max_certifiable_radius(sigma, n, alpha) == pytest.approx(expected, rel=1e-9)

    class Constant(nn.Module):  # always class 2: CERTIFY sees all n votes
        def forward(self, x):
            out = torch.zeros(x.shape[0], 4)
            out[:, 2] = 1.0
            return out

    gen = torch.Generator().manual_seed(0)
    pred, radius = certify(Constant(), torch.rand(3, 1, 4, 4), sigma=sigma, n0=5, n=n,
                           alpha=alpha, batch_size=50_000, generator=gen)  # fmt: skip
    reach = max_certifiable_radius(sigma, n, alpha)
    if reach > 0:
        assert pred.tolist() == [2, 2, 2]
    assert radius.tolist() == pytest.approx([reach] * 3, rel=1e-12)


def test_binomial_test_matches_scipy_binomtest():
    n_a = np.array([0, 1, 5, 50, 60, 70, 100, 33])
    n_b = np.array([0, 0, 5, 50, 40, 30, 0, 12])
    got = _binomial_test_pvalue(n_a, n_b)
    for a, b, p in zip(n_a, n_b, got):
        expected = 1.0 if a + b == 0 else stats.binomtest(int(a), int(a + b), 0.5).pvalue
        assert p == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------
# A linear binary classifier: its smoothed version is known in closed form
# --------------------------------------------------------------------------------------------
class Linear2(nn.Module):
    """logits (0, w.x + b): class 1 iff w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.linear = nn.Linear(w.numel(), 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.stack([torch.zeros_like(w), w]))
            self.linear.bias.copy_(torch.tensor([0.0, b]))

    def forward(self, x):
        return self.linear(x.flatten(1))


def _linear_points(sigma: float):
    """Points at l_2 distances sigma * z from the hyperplane, on both sides."""
    w = torch.tensor([1.0, -2.0, 0.5, 1.5])
    b = -float(w.sum()) / 2  # the hyperplane passes through x = 0.5
    z = torch.tensor([0.2, 0.6, 1.0, 1.5, 2.0, -0.3, -1.0, -1.8])
    x = 0.5 + (sigma * z)[:, None] * w / w.norm()
    model = Linear2(w, b)
    score = x @ w + b
    return model, x.view(-1, 1, 2, 2), score, score.abs() / w.norm()


def test_smoothed_class_probability_is_phi_of_the_scaled_score():
    # The noise is exactly N(0, sigma^2 I), unclipped: P(f(x + e) = 1) = Phi(score / (sigma |w|)).
    sigma = 0.5
    model, x, score, distance = _linear_points(sigma)
    g = torch.Generator().manual_seed(0)
    counts = class_counts(model, x, sigma=sigma, num=20_000, batch_size=7_000, generator=g)
    assert counts.shape == (8, 2) and torch.all(counts.sum(1) == 20_000)
    p1 = stats.norm.cdf((score / (sigma * model.linear.weight[1].norm())).detach().numpy())
    sd = np.sqrt(p1 * (1 - p1) / 20_000)
    assert np.all(np.abs(counts[:, 1].numpy() / 20_000 - p1) < 5 * sd + 1e-12)


def test_certify_linear_classifier_is_sound_and_tight():
    sigma = 0.5
    model, x, score, distance = _linear_points(sigma)
    g = torch.Generator().manual_seed(1)
    pred, radius = certify(model, x, sigma=sigma, n0=100, n=100_000, alpha=0.001,
                           batch_size=50_000, generator=g)  # fmt: skip
    assert pred.dtype == torch.long and radius.dtype == torch.float64
    assert torch.equal(pred, (score > 0).long())  # g(x) = sign(w.x + b)
    distance = distance.double()
    assert torch.all(radius <= distance)  # sound: never more than the exact distance
    assert torch.all(radius >= distance - 0.05 * sigma)  # tight with n = 100000


def test_constant_model_is_its_own_smoothing():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 0.0, 3.0])[None].expand(len(x), 3)

    x = torch.rand(5, 1, 3, 3)
    n, alpha, sigma = 500, 0.01, 0.3
    pred, radius = certify(Constant(), x, sigma=sigma, n0=10, n=n, alpha=alpha)
    assert torch.equal(pred, torch.full((5,), 2))
    # k = n: the lower bound is alpha^(1/n), the radius sigma * Phi^-1 of it.
    expected = sigma * stats.norm.ppf(alpha ** (1 / n))
    torch.testing.assert_close(radius, torch.full((5,), expected, dtype=torch.float64))
    assert torch.equal(predict(Constant(), x, sigma=sigma, n=50, alpha=alpha), pred)


def test_ties_abstain():
    # On the hyperplane the two classes each have probability 1/2 under the noise.
    model, _, _, _ = _linear_points(0.5)
    x = torch.full((6, 1, 2, 2), 0.5)
    g = torch.Generator().manual_seed(2)
    pred, radius = certify(model, x, sigma=0.5, n0=100, n=10_000, alpha=0.001, generator=g)
    assert torch.equal(pred, torch.full((6,), -1)) and torch.equal(radius, torch.zeros(6).double())
    assert torch.equal(predict(model, x, sigma=0.5, n=10_000, generator=g), torch.full((6,), -1))


def test_seeded_and_mode_restoring_and_bad_input():
    model, x, _, _ = _linear_points(0.5)
    model.train()
    runs = [certify(model, x, sigma=0.5, n0=10, n=300, generator=torch.Generator().manual_seed(4))
            for _ in range(2)]  # fmt: skip
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert model.training
    with pytest.raises(ValueError, match="sigma"):
        certify(model, x, sigma=0.0)
    with pytest.raises(ValueError, match="n0"):
        certify(model, x, sigma=0.5, n0=0)
    with pytest.raises(ValueError, match="alpha"):
        certify(model, x, sigma=0.5, alpha=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        certify(model, x, sigma=0.5, batch_size=0)
    with pytest.raises(ValueError, match="non-empty"):
        certify(model, x[:0], sigma=0.5)
    same = certify(model, x, sigma=np.float32(0.5), n0=10, n=300,
                   generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert torch.equal(same[0], runs[0][0])  # a numpy scalar sigma is the same sigma
    if torch.cuda.is_available():  # a generator on another device than the model
        with pytest.raises(ValueError, match="generator"):
            certify(model, x, sigma=0.5, generator=torch.Generator(device="cuda"))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_writes_certify_json_csv_and_figure(small_cnn_checkpoint, tmp_path, capsys):  # noqa: F811
    ckpt, _ = small_cnn_checkpoint
    out = tmp_path / "cert"
    argv = ["--checkpoint", str(ckpt), "--dataset", "digits", "--sigma", "0.25", "--n0", "20",
            "--n", "400", "--alpha", "0.01", "--n-per-class", "3", "--radii", "0,0.25,0.5",
            "--batch-size", "500", "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "certify.json").read_text())
    assert {
        "dataset",
        "model",
        "sigma",
        "n0",
        "n",
        "alpha",
        "classes",
        "radii",
        "n_per_class",
        "seed",
        "checkpoint",
        "seconds",
        "abstain",
        "certified_accuracy",
    } <= set(result)
    assert result["sigma"] == 0.25 and result["n"] == 400 and result["radii"] == [0.0, 0.25, 0.5]
    rows = list(csv.DictReader((out / "certify.csv").open()))
    assert len(rows) == 30 and list(rows[0]) == ["index", "label", "prediction", "radius"]
    labels = np.array([int(r["label"]) for r in rows])
    pred = np.array([int(r["prediction"]) for r in rows])
    radius = np.array([float(r["radius"]) for r in rows])
    assert np.all((pred == -1) == (radius == 0))
    # Class-wise numbers recomputed from the per-sample rows.
    for key, entry in result["certified_accuracy"].items():
        ok = (pred == labels) & (radius >= float(key))
        per_class = [ok[labels == c].mean() for c in range(10)]
        np.testing.assert_allclose(entry["per_class"], per_class, atol=1e-12)
        assert entry["worst"] == min(entry["per_class"])
    abstain = [(pred[labels == c] == -1).mean() for c in range(10)]
    np.testing.assert_allclose(result["abstain"]["per_class"], abstain, atol=1e-12)
    errors = result["certified_errors"]
    np.testing.assert_allclose(
        errors["robust"]["per_class"],
        1 - np.array(result["certified_accuracy"]["0.5"]["per_class"]),
    )
    assert result["certified_accuracy"]["0.0"]["average"] > 0.3  # the model works under noise
    assert (out / "certify.png").read_bytes()[:8] == PNG_MAGIC
    assert "certified accuracy" in capsys.readouterr().out
    # The same seed gives the same file; the rows name test-set indices of the chosen images.
    assert main(argv[:-5] + ["--out", str(tmp_path / "again"), "--device", "cpu", "--quiet"]) == 0
    assert (tmp_path / "again" / "certify.csv").read_text() == (out / "certify.csv").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [(["--sigma", "0"], "--sigma"), (["--sigma", "0.25", "--alpha", "2"], "--alpha"),
     (["--sigma", "0.25", "--radii", "0,x"], "--radii"),
     (["--sigma", "0.25", "--n-per-class", "0"], "--n-per-class"),
     (["--sigma", "0.25", "--n-per-class", "51"], "--n-per-class 51, but class")],
)  # fmt: skip
def test_cli_errors(small_cnn_checkpoint, tmp_path, capsys, extra, message):  # noqa: F811
    ckpt, _ = small_cnn_checkpoint
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(ckpt), "--dataset", "digits", "--out", str(tmp_path), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_progress_lines_run_directory_and_ctrl_c(small_cnn_checkpoint, tmp_path, capsys,  # noqa: F811
                                                     monkeypatch):  # fmt: skip
    ckpt, _ = small_cnn_checkpoint
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(ckpt.read_bytes())  # a deep.train run directory
    argv = ["--checkpoint", str(run_dir), "--dataset", "digits", "--sigma", "0.5", "--n0", "10",
            "--n", "50", "--n-per-class", "1", "--batch-size", "20", "--device", "cpu",
            "--progress-interval", "0", "--out", str(tmp_path / "cert")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err  # stderr is not a terminal here: plain lines, one per update
    assert "certify: image 10/10 (100.0%)" in err
    result = json.loads((tmp_path / "cert" / "certify.json").read_text())
    assert result["checkpoint"] == str(run_dir / "best.pt")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("deep.certify.certify", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(argv[:-1] + [str(tmp_path / "stopped")])
    assert exc.value.code == 130
    assert "certification interrupted; nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "stopped" / "certify.json").exists()
