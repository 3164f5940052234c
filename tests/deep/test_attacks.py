"""PGD / CW / TRADES attacks: budgets, modes, gradients, reproducibility, and real effect."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from torch import nn

from deep.attacks import cw_attack, cw_margin, pgd_attack, trades_attack
from deep.models import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small models on a shared CPU run much faster single-threaded
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearNet(nn.Module):
    """logits = W flatten(x) + b; gradients have a closed form for hand checks."""

    def __init__(self, shape=(1, 4, 4), classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = int(torch.tensor(shape).prod())
        self.linear = nn.Linear(d, classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(classes, d, generator=g))
            self.linear.bias.copy_(torch.randn(classes, generator=g))

    def forward(self, x):
        return self.linear(x.flatten(1))


class ModeRecorder(nn.Module):
    """A small conv net with BatchNorm that records ``self.training`` at each forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 4 * 4, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, self.bn.training))
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


ATTACKS = {
    "pgd": lambda m, x, y, **kw: pgd_attack(m, x, y, **kw),
    "cw": lambda m, x, y, **kw: cw_attack(m, x, y, **kw),
    "trades": lambda m, x, y, **kw: trades_attack(m, x, **kw),
}


def _batch(n=6, seed=0, shape=(1, 4, 4), classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _assert_in_budget(x_adv, x, eps):
    eps_b = eps.view(-1, 1, 1, 1) if isinstance(eps, torch.Tensor) else eps
    assert torch.all(x_adv >= torch.clamp(x - eps_b, min=0))
    assert torch.all(x_adv <= torch.clamp(x + eps_b, max=1))
    assert torch.all((x_adv >= 0) & (x_adv <= 1))
    dist = (x_adv.double() - x.double()).abs().flatten(1).amax(1)
    eps_t = torch.as_tensor(eps, dtype=torch.float64).expand(len(x))
    assert torch.all(dist <= eps_t + 1e-6)


# ----- budgets -----
@pytest.mark.parametrize("name", list(ATTACKS))
@given(
    eps=st.floats(0.0, 0.5),
    step=st.floats(0.0, 0.3),
    steps=st.integers(0, 4),
    seed=st.integers(0, 1000),
    per_sample=st.booleans(),
)
def test_iterates_stay_in_ball_and_box(name, eps, step, steps, seed, per_sample):
    model = LinearNet(seed=seed % 7)
    x, y = _batch(seed=seed)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels on the box boundary
    if per_sample:
        eps = torch.linspace(0, 1, len(x)) * eps
    x_adv = ATTACKS[name](
        model,
        x,
        y,
        eps=eps,
        step_size=step,
        steps=steps,
        generator=torch.Generator().manual_seed(seed),
    )
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    _assert_in_budget(x_adv, x, eps)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_zero_eps_returns_x(name):
    x, y = _batch()
    x_adv = ATTACKS[name](LinearNet(), x, y, eps=0.0, step_size=0.1, steps=3)
    assert torch.equal(x_adv, x)
    x_adv = ATTACKS[name](LinearNet(), x, y, eps=torch.zeros(len(x)), step_size=0.1, steps=3)
    assert torch.equal(x_adv, x)


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_one_step_matches_hand_computed_sign_gradient(loss):
    # x away from the box edges so nothing is clipped; step = eps per sample: x + eps_i sign(g_i)
    model = LinearNet(classes=4)
    x, y = _batch(n=4, classes=4)
    x = 0.3 + 0.4 * x
    eps = torch.tensor([0.0, 0.05, 0.1, 0.2])
    x_adv = pgd_attack(model, x, y, eps=eps, step_size=eps, steps=1, loss=loss, random_start=False)
    W = model.linear.weight.detach().double()
    z = model.linear(x.flatten(1)).detach().double()
    if loss == "ce":  # d CE / dx = W^T (softmax(z) - e_y)
        g = (torch.softmax(z, 1) - F.one_hot(y, 4).double()) @ W
    else:  # d (z_j* - z_y) / dx = W_j* - W_y, j* the best other class
        other = z.clone()
        other[torch.arange(4), y] = -float("inf")
        g = W[other.argmax(1)] - W[y]
    expected = x.double().flatten(1) + eps.double()[:, None] * g.sign()
    torch.testing.assert_close(x_adv.double().flatten(1), expected, rtol=0, atol=1e-6)
    # per-sample budgets reached exactly as given
    dist = (x_adv - x).abs().flatten(1).amax(1)
    torch.testing.assert_close(dist, eps, rtol=0, atol=1e-6)


def test_cw_margin_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 0.5]])
    y = torch.tensor([2, 0])
    torch.testing.assert_close(cw_margin(logits, y), torch.tensor([3.0 - 2.0, 0.5 - 5.0]))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(eps=-0.1, step_size=0.1, steps=1), "eps"),
        (dict(eps=float("nan"), step_size=0.1, steps=1), "eps"),
        (dict(eps=torch.tensor([0.1, -0.1, 0.1, 0.1, 0.1, 0.1]), step_size=0.1, steps=1), "eps"),
        (dict(eps=torch.full((5,), 0.1), step_size=0.1, steps=1), "eps"),
        (dict(eps=0.1, step_size=-1.0, steps=1), "step_size"),
        (dict(eps=0.1, step_size=0.1, steps=-1), "steps"),
        (dict(eps=0.1, step_size=0.1, steps=1.5), "steps"),
        (dict(eps=0.1, step_size=0.1, steps=1, loss="hinge"), "loss"),
    ],
)
def test_bad_arguments(kwargs, word):
    x, y = _batch()
    with pytest.raises(ValueError, match=word):
        pgd_attack(LinearNet(), x, y, **kwargs)


def test_bad_labels():
    x, y = _batch()
    with pytest.raises(ValueError, match="y"):
        pgd_attack(LinearNet(), x, y[:3], eps=0.1, step_size=0.1, steps=1)


def test_inference_mode_is_refused_but_no_grad_works():
    x, y = _batch()
    with torch.no_grad():
        x_adv = pgd_attack(LinearNet(), x, y, eps=0.1, step_size=0.05, steps=2)
    assert not torch.equal(x_adv, x)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        pgd_attack(LinearNet(), x, y, eps=0.1, step_size=0.05, steps=2)


# ----- modes, gradients, reproducibility -----
@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("start_training", [True, False])
def test_eval_mode_during_attack_and_modes_restored(name, start_training):
    model = ModeRecorder()
    model.train(start_training)
    model.bn.train(True)  # mixed modes must come back exactly
    x, y = _batch()
    ATTACKS[name](model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert len(model.seen) >= 3
    assert all(seen == (False, False) for seen in model.seen)
    assert model.training is start_training and model.bn.training is True
    assert model.conv.training is start_training and model.head.training is start_training


@pytest.mark.parametrize("name", list(ATTACKS))
def test_bn_statistics_untouched(name):
    model = ModeRecorder().train()
    before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    x, y = _batch()
    ATTACKS[name](model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert all(torch.equal(before[k], v) for k, v in model.bn.state_dict().items())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_no_parameter_gradients(name):
    model = ModeRecorder()
    x, y = _batch()
    ATTACKS[name](model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert all(p.grad is None for p in model.parameters())
    # existing gradients (e.g. accumulated between steps) are left as they were
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    ATTACKS[name](model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert all(torch.all(p.grad == 0.5) for p in model.parameters())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_reproducible_with_generator(name):
    model = ModeRecorder()
    x, y = _batch()

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return ATTACKS[name](model, x, y, eps=0.1, step_size=0.01, steps=2, generator=g)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_random_start_is_uniform_in_ball():
    # zero steps: the start itself, clipped to [0, 1]; on interior pixels ~ U(-eps, eps)
    x = torch.full((4000, 1, 2, 2), 0.5)
    y = torch.zeros(4000, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    delta = pgd_attack(LinearNet((1, 2, 2)), x, y, eps=0.2, step_size=0.1, steps=0, generator=g) - x
    assert delta.abs().max() <= 0.2 + 1e-7
    assert abs(delta.mean()) < 0.005  # sd of the mean: 0.2/sqrt(3)/sqrt(16000) ~ 0.001
    assert abs(delta.var() - 0.2**2 / 3) < 0.001
    no_start = pgd_attack(
        LinearNet((1, 2, 2)), x, y, eps=0.2, step_size=0.1, steps=0, random_start=False
    )
    assert torch.equal(no_start, x)


def test_autocast_runs_and_respects_budget():
    model = ModeRecorder()
    x, y = _batch()
    for name in ATTACKS:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_adv = ATTACKS[name](model, x, y, eps=0.1, step_size=0.05, steps=2)
        assert x_adv.dtype == torch.float32
        _assert_in_budget(x_adv, x, 0.1)


# ----- effect on a quickly trained digits classifier -----
@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    model = build_model("small-cnn", 10, in_channels=1, mean=[0.3], std=[0.4], image_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(8):
        order = train[torch.randperm(len(train))]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, x[test], y[test]


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_digits_model_trains(digits_model):
    model, x, y = digits_model
    assert _accuracy(model, x, y) > 0.9


def test_pgd_lowers_accuracy_and_beats_random_noise(digits_model):
    model, x, y = digits_model
    eps = 0.1
    g = torch.Generator().manual_seed(0)
    x_adv = pgd_attack(model, x, y, eps=eps, step_size=0.025, steps=20, generator=g)
    noise = torch.clamp(x + eps * (torch.randint(0, 2, x.shape, generator=g) * 2 - 1), 0, 1)
    clean_acc, adv_acc = _accuracy(model, x, y), _accuracy(model, x_adv, y)
    assert adv_acc < clean_acc - 0.15
    assert _accuracy(model, noise, y) > clean_acc - 0.05  # random corners of the ball barely hurt
    with torch.no_grad():
        loss_adv = F.cross_entropy(model(x_adv), y, reduction="none")
        loss_noise = F.cross_entropy(model(noise), y, reduction="none")
    assert loss_adv.mean() > 3 * loss_noise.mean()
    assert (loss_adv > loss_noise).float().mean() > 0.95


def test_cw_raises_margin(digits_model):
    model, x, y = digits_model
    x_adv = cw_attack(model, x, y, eps=0.1, step_size=0.025, steps=20, random_start=False)
    with torch.no_grad():
        before, after = cw_margin(model(x), y), cw_margin(model(x_adv), y)
    assert torch.all(after >= before)
    assert _accuracy(model, x_adv, y) < _accuracy(model, x, y) - 0.15


def test_trades_attack_raises_kl(digits_model):
    model, x, _ = digits_model
    g = torch.Generator().manual_seed(1)
    x_adv = trades_attack(model, x, eps=0.1, step_size=0.025, steps=10, generator=g)
    start = torch.clamp(
        x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), 0, 1
    )
    with torch.no_grad():
        p_clean = torch.softmax(model(x), 1)

        def kl(z):
            return (p_clean * (p_clean.log() - torch.log_softmax(z, 1))).sum(1)

        kl_adv, kl_start = kl(model(x_adv)), kl(model(start))
    assert kl_adv.mean() > 100 * kl_start.mean()
    assert (kl_adv > kl_start).float().mean() > 0.95


def test_starting_points_are_the_references_draws(digits_model):
    """steps=0 returns the start: TRADES' x + 0.001 N(0, I) and PGD's x + U(-eps, eps), each
    projected onto the eps-ball and [0, 1], drawn from the given generator in the same order."""
    model, x, y = digits_model
    eps = 0.1
    x_trades = trades_attack(model, x, eps=eps, step_size=0.025, steps=0,
                             generator=torch.Generator().manual_seed(3))  # fmt: skip
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    box = (torch.clamp(x - eps, min=0.0), torch.clamp(x + eps, max=1.0))
    assert torch.equal(x_trades, torch.clamp(x + 0.001 * noise, *box))
    x_pgd = pgd_attack(model, x, y, eps=eps, step_size=0.025, steps=0,
                       generator=torch.Generator().manual_seed(4))  # fmt: skip
    uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    assert torch.equal(x_pgd, torch.clamp(x + eps * uniform, *box))
    assert (x_pgd - x).abs().max() > 0.9 * eps  # the start fills the ball, not a tiny one


# --------------------------------------------------------------------------------------------
# Inputs and budgets that cannot be meant
# --------------------------------------------------------------------------------------------
def test_inputs_in_pixel_units_are_refused_with_a_hint():
    model = LinearNet()
    x = torch.rand(3, 1, 4, 4)
    y = torch.tensor([0, 1, 2])
    for attack in (
        lambda x: pgd_attack(model, x, y, eps=0.1, step_size=0.02, steps=1),
        lambda x: trades_attack(model, x, eps=0.1, step_size=0.02, steps=1),
    ):
        attack(x)  # in [0, 1]: fine
        with pytest.raises(ValueError, match=r"\[0, 1\].*divided by 255"):
            attack(x * 255)
        with pytest.raises(ValueError, match=r"got values in \[-0\.4"):
            attack(x.clamp(min=0.05) - 0.45)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_budgets_beyond_the_input_domain_are_refused(norm):
    """l_inf: eps >= 1 covers the whole pixel range; l_2: eps >= sqrt(d), the diameter of [0, 1]^d
    (here d = 16, diameter 4): the ball around any image holds every image."""
    model = LinearNet()
    x = torch.rand(3, 1, 4, 4)
    y = torch.tensor([0, 1, 2])
    limit = 1.0 if norm == "linf" else 4.0
    corner_distance = torch.linalg.vector_norm(torch.ones(16), ord=float("inf") if norm == "linf"
                                               else 2)  # fmt: skip
    assert float(corner_distance) == limit  # the limit is the distance between opposite corners
    below = limit * (1 - 1e-6)
    pgd_attack(model, x, y, eps=below, step_size=0.1, steps=1, norm=norm)
    for eps in (limit, 8.0):
        with pytest.raises(ValueError, match="pixel scale") as exc:
            pgd_attack(model, x, y, eps=eps, step_size=0.1, steps=1, norm=norm)
        assert ("8/255" in str(exc.value)) == (eps >= 1)
        if norm == "l2":
            assert "diameter of [0, 1]^16 (1x4x4 inputs): sqrt(16) = 4" in str(exc.value)
    per_sample = torch.tensor([0.1, 0.2, limit])
    with pytest.raises(ValueError, match="pixel scale"):
        trades_attack(model, x, eps=per_sample, step_size=0.1, steps=1, norm=norm)
