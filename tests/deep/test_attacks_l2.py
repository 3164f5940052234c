"""l_2 attacks: the ball-and-box invariant, the exact worst case of a linear model (distance to
its hyperplane), the uniform random start, and normalised-gradient steps by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from deep.attacks import cw_attack, pgd_attack, trades_attack
from tests.deep.test_attacks import LinearNet, _batch

ATTACKS = {
    "pgd": lambda m, x, y, **kw: pgd_attack(m, x, y, norm="l2", **kw),
    "cw": lambda m, x, y, **kw: cw_attack(m, x, y, norm="l2", **kw),
    "trades": lambda m, x, y, **kw: trades_attack(m, x, norm="l2", **kw),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.double().flatten(1).norm(dim=1)


@pytest.mark.parametrize("name", list(ATTACKS))
@given(
    eps=st.floats(0.0, 3.0),
    step=st.floats(0.0, 2.0),
    steps=st.integers(0, 4),
    seed=st.integers(0, 1000),
    per_sample=st.booleans(),
)
def test_l2_iterates_stay_in_ball_and_box(name, eps, step, steps, seed, per_sample):
    model = LinearNet(seed=seed % 7)
    x, y = _batch(seed=seed)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels on the box boundary
    if per_sample:
        eps = torch.linspace(0, 1, len(x)) * eps
    g = torch.Generator().manual_seed(seed)
    x_adv = ATTACKS[name](model, x, y, eps=eps, step_size=step, steps=steps, generator=g)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert torch.all((x_adv >= 0) & (x_adv <= 1))
    budget = torch.as_tensor(eps, dtype=torch.float64).expand(len(x))
    assert torch.all(_l2(x_adv - x) <= budget * (1 + 1e-6) + 1e-7)


class BinaryLinear(nn.Module):
    """logits (0, w.x + b) in float64: class 1 iff w.x + b > 0; the hyperplane is known exactly."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = w.double(), float(b)

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _linear_case(seed=0, n=8, d=16):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = 0.5 + 0.01 * torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)  # far from the box
    b = -float((x.flatten(1) @ w).mean())
    model = BinaryLinear(w, b)
    score = x.flatten(1) @ w + b
    y = (score > 0).long()
    distance = score.abs() / w.norm()  # exact l_2 distance to the hyperplane
    return model, x, y, distance, w


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("random_start", [False, True])
def test_l2_pgd_reaches_the_exact_worst_case_of_a_linear_model(loss, random_start):
    model, x, y, distance, w = _linear_case()
    assert distance.min() > 1e-4 and distance.max() < 0.2  # the box (>= 0.49 away) never binds
    sign = 2.0 * y.double() - 1.0  # +1 for class 1
    g = torch.Generator().manual_seed(1)
    # Budgets below the distance: the worst case moves the score by exactly eps ||w|| towards the
    # hyperplane, so the sample stays correct with margin |w.x + b| - eps ||w||.
    eps = 0.5 * distance
    x_adv = pgd_attack(
        model, x, y, eps=eps, step_size=eps, steps=30, loss=loss, random_start=random_start,
        generator=g, norm="l2",
    )  # fmt: skip
    score_adv = x_adv.flatten(1) @ w + model.b
    worst = sign * (x.flatten(1) @ w + model.b) - eps * w.norm()
    tol = 1e-9 if not random_start else 1e-6 * float(w.norm())
    torch.testing.assert_close(sign * score_adv, worst, rtol=0, atol=tol)
    # Budgets just above the distance: every sample is pushed across the hyperplane ...
    over = pgd_attack(
        model, x, y, eps=distance * 1.001, step_size=distance, steps=30, loss=loss,
        random_start=random_start, generator=g, norm="l2",
    )  # fmt: skip
    assert torch.all(model(over).argmax(1) != y)
    # ... and just below it, none is.
    under = pgd_attack(
        model, x, y, eps=distance * 0.999, step_size=distance, steps=30, loss=loss,
        random_start=random_start, generator=g, norm="l2",
    )  # fmt: skip
    assert torch.all(model(under).argmax(1) == y)


def test_l2_one_step_is_the_normalised_gradient():
    model = LinearNet(classes=4)
    x, y = _batch(n=4, classes=4)
    x = 0.45 + 0.1 * x
    eps = torch.tensor([0.0, 0.05, 0.1, 0.2])
    x_adv = pgd_attack(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, norm="l2")
    W = model.linear.weight.detach().double()
    z = model.linear(x.flatten(1)).detach().double()
    g = (torch.softmax(z, 1) - F.one_hot(y, 4).double()) @ W  # d CE / dx
    expected = x.double().flatten(1) + eps.double()[:, None] * g / g.norm(dim=1, keepdim=True)
    torch.testing.assert_close(x_adv.double().flatten(1), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(_l2(x_adv - x), eps.double(), rtol=0, atol=1e-6)


def test_l2_random_start_is_uniform_in_the_ball():
    # Uniform in the d-ball: the direction is isotropic and P(||delta|| <= r eps) = r^d.
    n, d, eps = 3000, 4, 0.2
    x = torch.full((n, 1, 2, 2), 0.5, dtype=torch.float64)
    y = torch.zeros(n, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    model = BinaryLinear(torch.ones(d), 0.0)
    delta = pgd_attack(model, x, y, eps=eps, step_size=0.1, steps=0, generator=g, norm="l2") - x
    radius = _l2(delta) / eps
    assert radius.max() <= 1 + 1e-12
    assert stats.kstest(radius.numpy() ** d, "uniform").pvalue > 1e-3
    unit = delta.flatten(1) / _l2(delta)[:, None]
    assert unit.mean(0).abs().max() < 4 / math.sqrt(n)  # isotropic: mean direction ~ 0
    torch.testing.assert_close(unit.T @ unit / n, torch.eye(d, dtype=torch.float64) / d, atol=0.03,
                               rtol=0)  # fmt: skip


def test_bad_norm_is_refused():
    x, y = _batch()
    with pytest.raises(ValueError, match="norm must be one of linf, l2"):
        pgd_attack(LinearNet(), x, y, eps=0.1, step_size=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError, match="norm"):
        trades_attack(LinearNet(), x, eps=0.1, step_size=0.1, steps=1, norm="L2")
