"""MLP and binary PGD: exact on linear models, FRL Fig. 2 (right) boundary shift."""

import math

import numpy as np
import torch

from sim.data import sample_mixture
from sim.mlp import fit_mlp, pgd_attack_binary
from theory.gaussian import Mixture


def test_pgd_reaches_the_exact_worst_case_of_a_linear_model():
    """For f(x) = w.x + b the l_inf worst case is x - y eps sign(w); PGD must find it."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = torch.where(torch.rand(64) < 0.5, -1.0, 1.0)
    eps = torch.full((64,), 0.3)
    eps[:10] = 0.05  # per-sample budgets
    xa = pgd_attack_binary(lin, x, y, eps=eps, steps=5, generator=torch.Generator().manual_seed(1))
    w = lin.weight.detach()[0]
    exact = x - (y[:, None] * eps[:, None]) * w.sign()
    torch.testing.assert_close(xa, exact, atol=1e-6, rtol=0)
    # l2: x - y eps w / ||w||
    xa2 = pgd_attack_binary(lin, x, y, eps=0.3, steps=20, norm="l2", random_start=False)
    exact2 = x - y[:, None] * 0.3 * w / w.norm()
    torch.testing.assert_close(xa2, exact2, atol=1e-5, rtol=0)


def test_adversarial_training_moves_the_mlp_boundary_toward_the_harder_class():
    """FRL Fig. 2 (right): along the diagonal x = t 1 the robust MLP's boundary lies closer to
    +theta,
    and it is robust: PGD robust error at eps is lower than the natural MLP's on class -1."""
    m = Mixture(2, 2.0, 1.0, math.sqrt(2.0))
    x, y = sample_mixture(m, 1000, np.random.default_rng(0))
    nat = fit_mlp(x, y, epochs=150, seed=0)
    rob = fit_mlp(x, y, eps=0.5, epochs=150, pgd_steps=5, seed=0)
    t = np.linspace(-2, 2, 4001)
    diag = np.repeat(t[:, None], 2, axis=1)

    def crossing(clf):
        f = clf.decision_function(diag)
        return t[np.argmax(f > 0)]

    assert crossing(rob) > crossing(nat)
    xt, yt = sample_mixture(m, 20_000, np.random.default_rng(1))
    r_nat = ~nat.robust_correct(xt, yt, 0.5, steps=10)
    r_rob = ~rob.robust_correct(xt, yt, 0.5, steps=10)
    assert r_rob[yt == -1].mean() < r_nat[yt == -1].mean()
    # robust correctness implies clean correctness
    assert np.all(rob.correct(xt, yt)[~r_rob])


def test_training_is_reproducible():
    m = Mixture(2, 2.0, 1.0, 1.5)
    x, y = sample_mixture(m, 200, np.random.default_rng(0))
    a = fit_mlp(x, y, eps=0.3, epochs=10, seed=3).decision_function(x)
    b = fit_mlp(x, y, eps=0.3, epochs=10, seed=3).decision_function(x)
    np.testing.assert_array_equal(a, b)
