"""l_inf and l_2 attacks in pixel space [0, 1]: PGD on cross-entropy, CW (logit margin), TRADES-KL.

* PGD (Madry et al., ICLR 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
  Eq. 2 and §2.1): ``x <- Proj(x + step_size * sign(grad_x CE))`` from a uniform random start
  (``norm="linf"``); with ``norm="l2"`` the step follows the l_2-normalised gradient,
  ``x <- Proj(x + step_size * g / ||g||_2)``, and the random start is uniform in the l_2 ball.
* CW-l_inf: the same iteration on the margin loss of Carlini & Wagner (IEEE S&P 2017, "Towards
  Evaluating the Robustness of Neural Networks", f_6), ``max_{j != y} z_j - z_y`` on the logits, as
  the CW-20 evaluation of the FAAL and TRADES code runs it.
* TRADES (Zhang et al., ICML 2019, "Theoretically Principled Trade-off between Robustness and
  Accuracy", Algorithm 1 and Eq. 5): start ``x + 0.001 N(0, I)``, ascend ``KL(p_clean || p_adv)``.

Common behaviour:

* ``eps`` and ``step_size`` are floats or tensors of shape (B,) (per-sample budgets, e.g. FRL's
  class-wise eps), broadcast over (C, H, W).
* ``norm="linf"`` (default): every iterate (and the result) lies in
  ``[max(x - eps, 0), min(x + eps, 1)]`` exactly.
* ``norm="l2"``: every iterate lies in the box [0, 1] and has ``||x_adv - x||_2 <= eps`` (up to
  float rounding): the perturbation is scaled onto the ball, then clipped to the box. Clipping
  moves every coordinate towards ``x`` (which lies in the box), so it never leaves the ball.
* The model is put in eval mode during the attack and each submodule's mode is restored after;
  a DistributedDataParallel wrapper is bypassed (the attack needs no gradient synchronisation).
* Gradients are taken with ``torch.autograd.grad`` with respect to the input only: no parameter's
  ``.grad`` is touched. Losses are computed in float32, so attacks run under ``torch.autocast``.
* No host synchronisation inside the loop (no ``.item()``, no branching on tensor values).
* Inputs must lie in [0, 1] and budgets must mean something there (:func:`budget_problem`: an
  l_inf eps below 1, an l_2 eps below the diameter sqrt(d) of [0, 1]^d); otherwise a ValueError
  that suggests dividing by 255 (checked on the CPU; on accelerators an asynchronous device
  assertion, so no host synchronisation is added).
* ``generator`` (a ``torch.Generator``) makes the random start reproducible; the noise is drawn on
  the generator's device and moved to ``x``'s device, so a CPU generator gives the same start on
  any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTACK_LOSSES",
    "NORMS",
    "budget_problem",
    "check_norm",
    "eps_limit",
    "cw_attack",
    "cw_margin",
    "pgd_attack",
    "trades_attack",
]

ATTACK_LOSSES = ("ce", "cw")

#: Threat models: l_inf (sign-gradient steps, box projection) and l_2 (normalised-gradient
#: steps, projection onto the l_2 ball).
NORMS = ("linf", "l2")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _unwrap_ddp(model: nn.Module) -> nn.Module:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError(
            "x must be a floating-point tensor of shape (B, C, H, W) with values in [0, 1]"
        )
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "attacks need autograd and cannot run under torch.inference_mode(); use torch.no_grad()"
        )
    _check_pixel_range(x)


def _check_pixel_range(x: Tensor) -> None:
    """Inputs on the [0, 1] pixel scale (a ValueError on the CPU, a device assertion elsewhere)."""
    inside = (x >= 0).all() & (x <= 1).all()
    if x.device.type != "cpu":
        torch._assert_async(inside, "attack inputs must lie in [0, 1] (divide 0..255 by 255)")
        return
    if not bool(inside):
        low, high = float(x.min()), float(x.max())
        hint = "; images in 0..255 must be divided by 255 first" if high > 1 else ""
        raise ValueError(f"x must hold pixels in [0, 1], got values in [{low:g}, {high:g}]{hint}")


def eps_limit(norm: str, input_shape: Sequence[int]) -> float:
    """The budget at which an attack covers every image of [0, 1]^d (d = prod(input_shape)):
    l_inf 1 (the whole pixel range), l_2 the diameter sqrt(d) of the cube.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        input_shape: one input's shape, e.g. (C, H, W).

    Returns:
        The limit, a float.
    """
    d = math.prod(int(n) for n in input_shape)
    return 1.0 if check_norm(norm) == "linf" else math.sqrt(d)


def budget_problem(
    eps: float, norm: str, input_shape: Sequence[int], name: str = "eps"
) -> str | None:
    """Why ``eps`` cannot be meant as a ``norm`` budget for inputs of ``input_shape`` (C, H, W) on
    the [0, 1] scale, or None: an eps at or beyond :func:`eps_limit` (every image lies within it).
    Where the value looks like pixel units (>= 1), the message suggests ``eps/255``.

    Args:
        eps: the budget.
        norm: ``"linf"`` or ``"l2"``.
        input_shape: one input's shape (C, H, W).
        name: the option's name in the message.

    Returns:
        A one-line message, or None when ``eps`` is below the limit.
    """
    limit = eps_limit(norm, input_shape)
    if not eps >= limit:
        return None
    shape = "x".join(str(int(n)) for n in input_shape)
    if norm == "linf":
        text = f"l_inf {name} {eps:g} is >= 1, the whole [0, 1] pixel range"
    else:
        d = math.prod(int(n) for n in input_shape)
        text = (
            f"l_2 {name} {eps:g} is at or beyond the l_2 diameter of [0, 1]^{d} "
            f"({shape} inputs): sqrt({d}) = {limit:.4g}, so every image is within it"
        )
    text += "; budgets are on the [0, 1] pixel scale"
    if eps >= 1:
        text += f": for {eps:g} levels of 0..255 write {eps:g}/255 (e.g. 8/255)"
    return text


def _check_eps_limit(eps: float | Tensor, norm: str, x: Tensor) -> None:
    limit = eps_limit(norm, x.shape[1:])
    if isinstance(eps, Tensor):
        if eps.device.type != "cpu":
            torch._assert_async((eps < limit).all(), "eps beyond the input domain's range")
            return
        eps = float(eps.max())
    problem = budget_problem(eps, norm, x.shape[1:])
    if problem is not None:
        raise ValueError(problem)


def _budget(value: float | Tensor, x: Tensor, name: str) -> float | Tensor:
    """A float, or a tensor of shape (B, 1, ..., 1) on x's device and dtype; validated >= 0."""
    if isinstance(value, Tensor):
        if value.ndim == 0:
            value = value.reshape(1)
        if value.ndim != 1 or value.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"{name} must be a float or a tensor of shape ({x.shape[0]},), "
                f"got shape {tuple(value.shape)}"
            )
        value = value.detach().to(device=x.device, dtype=x.dtype)
        if value.device.type == "cpu":  # free to check; on accelerators check without a sync
            if not bool(torch.isfinite(value).all() & (value >= 0).all()):
                raise ValueError(f"{name} must be finite and >= 0 for every sample")
        else:
            torch._assert_async(torch.isfinite(value).all() & (value >= 0).all())
        return value.view(-1, *([1] * (x.ndim - 1)))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a float or a tensor, got {type(value).__name__}"
        ) from None
    if not (value >= 0 and value < float("inf")):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    return steps


def _check_labels(y: Tensor, x: Tensor) -> Tensor:
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},)")
    return y.to(device=x.device, dtype=torch.long)


def check_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`NORMS`; ValueError naming the choices otherwise.

    Args:
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``norm`` unchanged.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def _noise(
    kind: str, x: Tensor, generator: torch.Generator | None
) -> Tensor:  # "uniform" in [-1, 1) or "normal"
    device = generator.device if generator is not None else x.device
    if kind == "uniform":
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype) * 2 - 1
    else:
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return noise.to(x.device)


def _l2_norm(t: Tensor) -> Tensor:
    """Per-sample l_2 norm of a (B, ...) tensor, shaped (B, 1, ..., 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def _random_start(norm: str, x: Tensor, eps, generator: torch.Generator | None) -> Tensor:
    """``x`` plus a point drawn uniformly from the eps-ball of ``norm`` (before the box).

    l_inf: ``U(-eps, eps)`` per coordinate. l_2: a uniform direction (a normalised Gaussian) times
    ``eps * U^(1/d)``, d = C*H*W, which is uniform in the ball's volume.
    """
    if norm == "linf":
        return x + eps * _noise("uniform", x, generator)
    direction = _noise("normal", x, generator)
    direction = direction / _l2_norm(direction).clamp_min(1e-12)
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape[0], generator=generator, device=device, dtype=x.dtype).to(x.device)
    radius = u.pow(1.0 / x[0].numel()).view(-1, *([1] * (x.ndim - 1)))
    return x + eps * radius * direction


def _projector(norm: str, x: Tensor, eps) -> Callable[[Tensor], Tensor]:
    """The map onto (eps-ball around x) then [0, 1] for ``norm``."""
    if norm == "linf":
        lower = torch.clamp(x - eps, min=0.0)
        upper = torch.clamp(x + eps, max=1.0)
        return lambda x_adv: torch.clamp(x_adv, min=lower, max=upper)

    def project_l2(x_adv: Tensor) -> Tensor:
        delta = x_adv - x
        scale = torch.clamp(eps / _l2_norm(delta).clamp_min(1e-12), max=1.0)
        return torch.clamp(x + delta * scale, 0.0, 1.0)

    return project_l2


def _ascent_direction(norm: str, grad: Tensor) -> Tensor:
    """sign(g) for l_inf (steepest ascent in l_inf); g / ||g||_2 per sample for l_2."""
    if norm == "linf":
        return grad.sign()
    return grad / _l2_norm(grad).clamp_min(1e-12)


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample logit margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017); shape (B,).

    Positive iff the sample is misclassified (ties aside).

    Args:
        logits: (B, C) with C >= 2.
        y: int64 labels (B,).

    Returns:
        The margins, (B,) in the logits' dtype.
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true_logit


def _ascent(
    model: nn.Module,
    x: Tensor,
    x_start: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    norm: str,
) -> Tensor:
    """Projected steepest ascent of ``norm`` on ``loss_fn(logits)`` (a scalar) from ``x_start``."""
    project = _projector(norm, x, eps)
    x_adv = project(x_start).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv).float())
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project(x_adv.detach() + step_size * _ascent_direction(norm, grad))
    return x_adv.detach()


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------
def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    loss: str = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    norm: str = "linf",
) -> Tensor:
    """PGD (Madry et al. 2018, Eq. 2): maximise ``loss`` within the ``norm`` eps-ball and [0, 1].

    ``loss="ce"``: cross-entropy (summed over the batch, so each sample ascends its own loss);
    ``loss="cw"``: the logit margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017).
    ``random_start``: start from a uniform point of the eps-ball (l_inf: ``x + U(-eps, eps)``;
    l_2: uniform in the ball's volume), projected to [0, 1]; else from ``x``.
    ``norm``: ``"linf"`` (sign-gradient steps; the result lies in
    ``[max(x-eps,0), min(x+eps,1)]``) or ``"l2"`` (steps along ``g / ||g||_2``; the result has
    ``||x_adv - x||_2 <= eps`` and lies in [0, 1]).

    Args:
        model: the classifier (inputs in [0, 1], returns logits); run in eval mode, its modes
            restored after.
        x: clean inputs (B, C, H, W) in [0, 1].
        y: labels (B,).
        eps: the budget, a float or a (B,) tensor of per-sample budgets.
        step_size: the step, a float or a (B,) tensor.
        steps: the number of steps (>= 0).
        loss: ``"ce"`` or ``"cw"``.
        random_start: start from a uniform point of the ball instead of ``x``.
        generator: the random start's generator (None: torch's default).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The detached adversarial batch, shape and dtype of ``x``.

    Raises:
        ValueError: for inputs outside [0, 1], bad labels, a negative or oversized budget, or an
            unknown ``loss`` / ``norm``.
    """
    _check_input(x)
    norm = check_norm(norm)
    y = _check_labels(y, x)
    eps = _budget(eps, x, "eps")
    _check_eps_limit(eps, norm, x)
    step_size = _budget(step_size, x, "step_size")
    steps = _check_steps(steps)
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be one of {ATTACK_LOSSES}, got {loss!r}")
    x = x.detach()
    x_start = _random_start(norm, x, eps, generator) if random_start else x

    if loss == "ce":

        def loss_fn(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits, y, reduction="sum")

    else:

        def loss_fn(logits: Tensor) -> Tensor:
            return cw_margin(logits, y).sum()

    net = _unwrap_ddp(model)
    with _eval_mode(net):
        return _ascent(net, x, x_start, loss_fn, eps, step_size, steps, norm)


def cw_attack(model: nn.Module, x: Tensor, y: Tensor, **kwargs) -> Tensor:
    """CW-l_inf / CW-l_2: :func:`pgd_attack` with ``loss="cw"`` (logit margin; Carlini & Wagner
    2017); ``norm=`` chooses the threat model.

    Args:
        model, x, y: as for :func:`pgd_attack`.
        **kwargs: the other arguments of :func:`pgd_attack` (not ``loss``).

    Returns:
        The detached adversarial batch.
    """
    if "loss" in kwargs:
        raise ValueError("cw_attack always uses loss='cw'; call pgd_attack to choose the loss")
    return pgd_attack(model, x, y, loss="cw", **kwargs)


def trades_attack(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    norm: str = "linf",
) -> Tensor:
    """TRADES inner maximisation (Zhang et al. 2019, Algorithm 1): ascend ``KL(p_clean || p_adv)``.

    Starts at ``x + 0.001 N(0, I)`` (projected to the eps-ball and [0, 1]); the clean probabilities
    are computed once, in eval mode, without gradient; the KL divergence is summed over the batch.
    Needs no labels. ``norm="l2"`` takes normalised-gradient steps and projects onto the l_2 ball
    (as the TRADES reference code's l_2 variant does).

    Args:
        model: the classifier (inputs in [0, 1], returns logits).
        x: clean inputs (B, C, H, W) in [0, 1].
        eps: the budget, a float or a (B,) tensor (FRL Remargin's per-class budgets).
        step_size: the step, a float or a (B,) tensor.
        steps: the number of steps (>= 0).
        generator: the start's noise generator (None: torch's default).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        The detached adversarial batch, shape and dtype of ``x``.
    """
    _check_input(x)
    norm = check_norm(norm)
    eps = _budget(eps, x, "eps")
    _check_eps_limit(eps, norm, x)
    step_size = _budget(step_size, x, "step_size")
    steps = _check_steps(steps)
    x = x.detach()
    x_start = x + 0.001 * _noise("normal", x, generator)
    net = _unwrap_ddp(model)
    with _eval_mode(net):
        with torch.no_grad():
            p_clean = F.softmax(net(x).float(), dim=1)

        def loss_fn(logits: Tensor) -> Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum")

        return _ascent(net, x, x_start, loss_fn, eps, step_size, steps, norm)
