"""A small MLP on the FRL mixture, natural or PGD adversarial training (FRL Fig. 2, right).

Binary logit model ``f(x)``; prediction ``sign(f(x))``; loss ``log(1 + exp(-y f(x)))``. Adversarial
training replaces each training point by a PGD maximiser of that loss within the eps-ball (Madry et
al.; l_inf: signed-gradient steps, l2: normalised-gradient steps, each followed by projection). The
input space is unbounded, so there is no clipping to a box. Robust correctness on test points is
judged by the same PGD attack (a lower bound on the true robust error).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sim.classifiers import ScoreClassifier

__all__ = ["torch_threads", "make_mlp", "pgd_attack_binary", "MLPClassifier", "fit_mlp"]


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)`` and restore the previous value.

    The matrices here are tiny, so extra intra-op threads only add synchronisation cost (and on a
    busy machine a lot of it); the default everywhere in this module is one thread.

    Args:
        num_threads: torch's intra-op threads inside the block (None: unchanged).

    Yields:
        None.
    """
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_mlp(d: int, hidden: tuple[int, ...] = (64, 64)) -> nn.Sequential:
    """``d -> hidden... -> 1`` with ReLU activations (float32).

    Args:
        d: the input dimension.
        hidden: the hidden layer widths.

    Returns:
        The network, an ``nn.Sequential``.
    """
    layers: list[nn.Module] = []
    width = d
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).squeeze(-1)


def pgd_attack_binary(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    steps: int = 10,
    step_size: float | torch.Tensor | None = None,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD maximising ``log(1 + exp(-y f(x + delta)))`` over ``||delta|| <= eps``.

    ``eps`` may be a float or a tensor of shape (B,) (per-sample budgets). Default step size
    ``2.5 eps / steps``. Gradients are taken w.r.t. the input only; parameters are untouched.

    Args:
        model: a network with one output (the score f).
        x: inputs (B, d).
        y: labels (B,) in {-1, +1}.
        eps: the budget, a float or (B,).
        steps: the number of steps.
        step_size: the step; None: ``2.5 eps / steps``.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start uniformly in the ball.
        generator: the random start's generator.

    Returns:
        The detached adversarial inputs (B, d).
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    eps_t = torch.as_tensor(eps, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    alpha = 2.5 * eps_t / steps if step_size is None else torch.as_tensor(step_size, dtype=x.dtype)
    if random_start:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        delta = u * eps_t if norm == "linf" else _project_l2(u, eps_t)
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = nn.functional.softplus(-y * _logits(model, x + delta)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                delta = torch.clamp(delta + alpha * grad.sign(), -eps_t, eps_t)
            else:
                gn = grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                delta = _project_l2(delta + alpha * grad / gn, eps_t)
    return (x + delta).detach()


def _project_l2(delta: torch.Tensor, eps_t: torch.Tensor) -> torch.Tensor:
    n = delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return delta * torch.clamp(eps_t / n, max=1.0)


@dataclass
class MLPClassifier(ScoreClassifier):
    """A trained MLP with numpy-in / numpy-out helpers.

    Args:
        model: the network (one output, the score f).
        num_threads: torch threads for its forward passes (None: unchanged).
    """

    model: nn.Module

    num_threads: int | None = 1

    def decision_function(self, x: np.ndarray, batch_size: int = 200_000) -> np.ndarray:
        """The scores ``f(x)`` of the network, computed in float32 without gradients.

        Args:
            x: inputs (n, d).
            batch_size: points per forward pass.

        Returns:
            The scores ``f(x)``, float32 (n,).
        """
        out = []
        with torch.no_grad(), torch_threads(self.num_threads):
            for i in range(0, len(x), batch_size):
                out.append(
                    _logits(
                        self.model, torch.as_tensor(x[i : i + batch_size], dtype=torch.float32)
                    ).numpy()
                )
        return np.concatenate(out)

    def robust_correct(
        self,
        x: np.ndarray,
        y: np.ndarray,
        eps: float,
        norm: str = "linf",
        *,
        steps: int = 20,
        seed: int = 0,
        batch_size: int = 100_000,
    ) -> np.ndarray:
        """Correct on the clean point and on its PGD-``steps`` adversarial point
        (:func:`pgd_attack_binary` with a random start and step ``2.5 eps / steps``): an upper
        bound on the true robust correctness.

        Args:
            x: inputs (n, d).
            y: labels (n,) in {-1, +1}.
            eps: the attack budget, >= 0.
            norm: the budget's norm, ``"linf"`` or ``"l2"``.
            steps: PGD steps.
            seed: seeds the attack's random starts.
            batch_size: points attacked at once.

        Returns:
            Boolean (n,): whether each point is correct both clean and under the attack.
        """
        gen = torch.Generator().manual_seed(seed)
        out = np.empty(len(x), dtype=bool)
        with torch_threads(self.num_threads):
            self._robust_correct_into(out, x, y, eps, norm, steps, gen, batch_size)
        return out

    def _robust_correct_into(self, out, x, y, eps, norm, steps, gen, batch_size) -> None:
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32)
            yb = torch.as_tensor(y[i : i + batch_size], dtype=torch.float32)
            xa = pgd_attack_binary(
                self.model, xb, yb, eps=eps, steps=steps, norm=norm, generator=gen
            )
            with torch.no_grad():
                ok = (yb * _logits(self.model, xb) > 0) & (yb * _logits(self.model, xa) > 0)
            out[i : i + batch_size] = ok.numpy()


def fit_mlp(
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float = 0.0,
    norm: str = "linf",
    hidden: tuple[int, ...] = (64, 64),
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    pgd_steps: int = 10,
    seed: int = 0,
    num_threads: int | None = 1,
) -> MLPClassifier:
    """Full-batch Adam for ``epochs`` steps on the logistic loss; with ``eps > 0`` each step first
    replaces the batch by its PGD-``pgd_steps`` adversarial points (adversarial training).

    Runs with ``num_threads`` torch threads (None: leave torch's setting alone).

    Args:
        x: inputs (n, d).
        y: labels (n,) in {-1, +1}.
        eps: the training budget (0: natural training).
        norm: ``"linf"`` or ``"l2"``.
        hidden: the hidden layer widths.
        epochs: full-batch Adam steps.
        lr: Adam's learning rate.
        weight_decay: Adam's weight decay.
        pgd_steps: attack steps per training step.
        seed: seeds the initialisation and the attacks.
        num_threads: torch threads (None: unchanged).

    Returns:
        The trained :class:`MLPClassifier`.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    with torch_threads(num_threads):
        model = _train(x, y, eps, norm, hidden, epochs, lr, weight_decay, pgd_steps, seed)
    return MLPClassifier(model, num_threads)


def _train(x, y, eps, norm, hidden, epochs, lr, weight_decay, pgd_steps, seed) -> nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = make_mlp(x.shape[1], hidden)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        xb = xt
        if eps > 0:
            xb = pgd_attack_binary(
                model, xt, yt, eps=eps, steps=pgd_steps, norm=norm, generator=gen
            )
        loss = nn.functional.softplus(-yt * _logits(model, xb)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model
