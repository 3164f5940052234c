"""Adversarial weight perturbation (SPEC §3) on a small CPU model."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deep.awp import AWP, make_awp, perturbed_parameter_names


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=gen)
    return x, y


def _ce(model, x, y):
    return F.cross_entropy(model(x), y)


def test_only_multi_dim_weights_are_perturbed(data):
    model = _model()
    assert perturbed_parameter_names(model) == ["0.weight", "4.weight"]
    awp = make_awp(model, gamma=5e-3)
    x, y = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diff = awp.calc_awp(lambda proxy: _ce(proxy, x, y))
    assert set(diff) == {"0.weight", "4.weight"}
    awp.perturb(diff)
    after = model.state_dict()
    for key in before:  # biases, BN weight/bias and BN buffers untouched
        if key not in diff:
            assert torch.equal(before[key], after[key]), key
        else:
            assert not torch.equal(before[key], after[key]), key
    awp.restore(diff)


def test_perturbation_norm_is_gamma_times_weight_norm(data):
    model = _model()
    x, y = data
    gamma = 5e-3
    awp = make_awp(model, gamma=gamma)
    diff = awp.calc_awp(lambda proxy: _ce(proxy, x, y))
    params = dict(model.named_parameters())
    for name, delta in diff.items():
        expected = gamma * params[name].norm()
        torch.testing.assert_close(delta.norm(), expected, rtol=1e-10, atol=0)


def test_direction_is_the_loss_gradient(data):
    """Plain SGD on -loss moves the proxy along +grad: diff = gamma ||w|| grad / ||grad||."""
    model = _model()
    x, y = data
    awp = make_awp(model, gamma=1e-2)
    diff = awp.calc_awp(lambda proxy: _ce(proxy, x, y))
    reference = copy.deepcopy(model).train()
    ref_params = dict(reference.named_parameters())
    grads = torch.autograd.grad(_ce(reference, x, y), [ref_params[n] for n in diff])
    for (name, delta), g in zip(diff.items(), grads):
        expected = 1e-2 * ref_params[name].detach().norm() * g / g.norm()
        torch.testing.assert_close(delta, expected, rtol=1e-8, atol=1e-14)
    assert all(p.grad is None for p in model.parameters())  # the model's grads are not touched


def test_perturbed_loss_is_higher(data):
    model = _model().train()
    x, y = data
    awp = make_awp(model, gamma=5e-3)
    with torch.no_grad():
        clean_loss = _ce(model, x, y).item()
    diff = awp.calc_awp(lambda proxy: _ce(proxy, x, y))
    awp.perturb(diff)
    with torch.no_grad():
        perturbed_loss = _ce(model, x, y).item()
    awp.restore(diff)
    assert perturbed_loss > clean_loss


def test_restore_is_exact_without_step_and_keeps_optimiser_update(data):
    model = _model().float()
    x, y = data
    x = x.float()
    awp = make_awp(model, gamma=5e-3)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    diff = awp.calc_awp(lambda proxy: _ce(proxy, x, y))
    awp.perturb(diff)
    awp.restore(diff)
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key  # bit for bit
    # with an optimiser step in between, restore keeps the step and removes the perturbation
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    awp.perturb(diff)
    perturbed = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    _ce(model, x, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    awp.restore(diff)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), start[name] - 0.5 * grads[name])
        if name in diff:  # the gradient was taken at the perturbed weights
            assert not torch.equal(perturbed[name], start[name])


def test_call_forms_agree_and_wrapped_model(data):
    x, y = data
    model = _model()
    wrapped = nn.DataParallel(model)  # any wrapper exposing .module (as DDP does)
    awp_a = make_awp(wrapped, gamma=5e-3)
    awp_b = make_awp(model, gamma=5e-3)
    diff_a = awp_a.calc_awp(x, y, F.cross_entropy)
    diff_b = awp_b.calc_awp(lambda proxy: _ce(proxy, x, y))
    assert diff_a.keys() == diff_b.keys()
    for name in diff_a:
        torch.testing.assert_close(diff_a[name], diff_b[name])
    start = model[0].weight.detach().clone()
    awp_a.perturb(diff_a)  # acts on the wrapped module's parameters
    torch.testing.assert_close(model[0].weight.detach(), start + diff_a["0.weight"])
    awp_a.restore(diff_a)
    assert torch.equal(model[0].weight.detach(), start)
    with pytest.raises(ValueError, match="calc_awp"):
        awp_a.calc_awp(x, y)


def test_misuse_raises(data):
    model = _model()
    x, y = data
    awp = make_awp(model)
    diff = awp.calc_awp(lambda proxy: _ce(proxy, x, y))
    with pytest.raises(RuntimeError, match="restore"):
        awp.restore(diff)
    awp.perturb(diff)
    with pytest.raises(RuntimeError, match="perturb"):
        awp.perturb(diff)
    awp.restore(diff)
    with pytest.raises(ValueError, match="gamma"):
        make_awp(model, gamma=-1.0)
    with pytest.raises(ValueError, match="scalar"):
        awp.calc_awp(lambda proxy: F.cross_entropy(proxy(x), y, reduction="none"))


def test_state_dict_round_trip(data):
    x, y = data
    model = _model()
    proxy = copy.deepcopy(model)
    awp = AWP(model, proxy, torch.optim.SGD(proxy.parameters(), lr=0.1, momentum=0.9), gamma=0.01)
    awp.calc_awp(lambda p: _ce(p, x, y))
    state = awp.state_dict()
    proxy2 = copy.deepcopy(model)
    awp2 = AWP(model, proxy2, torch.optim.SGD(proxy2.parameters(), lr=0.1, momentum=0.9))
    awp2.load_state_dict(state)
    assert awp2.gamma == 0.01
    buffers = [s["momentum_buffer"] for s in awp.proxy_optim.state_dict()["state"].values()]
    buffers2 = [s["momentum_buffer"] for s in awp2.proxy_optim.state_dict()["state"].values()]
    assert len(buffers) == len(buffers2) > 0
    for a, b in zip(buffers, buffers2):
        assert torch.equal(a, b)
    # the next perturbation is the same for both (same momentum state)
    d1 = awp.calc_awp(lambda p: _ce(p, x, y))
    d2 = awp2.calc_awp(lambda p: _ce(p, x, y))
    for name in d1:
        torch.testing.assert_close(d1[name], d2[name])
