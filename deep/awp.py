"""Adversarial weight perturbation (AWP; Wu, Xia and Wang, NeurIPS 2020), as FAAL's code runs it.

One training step with AWP:

1. ``diff = awp.calc_awp(loss_fn)``: a proxy copy of the model (same weights) takes one SGD step
   that *ascends* the unweighted training loss; for every weight tensor with >= 2 dimensions whose
   name contains "weight" (convolution and linear kernels; not BN or biases), with
   dw = w_proxy - w, ``diff = gamma * ||w|| / (||dw|| + 1e-20) * dw`` (relative size gamma per
   layer);
2. ``awp.perturb(diff)``: w <- w + diff;
3. forward/backward of the (weighted) loss and the optimiser step on the perturbed weights;
4. ``awp.restore(diff)``: remove the perturbation, keeping the optimiser's update.

:meth:`AWP.restore` returns the weights to ``w_original + (optimiser update)``; with no update in
between it gives back the original weights bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

#: Guard against a zero proxy step, as in the reference implementation.
AWP_EPS = 1e-20


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying module of a DistributedDataParallel / DataParallel / torch.compile wrapper.

    Args:
        model: a module, possibly wrapped.

    Returns:
        The innermost module.
    """
    while True:
        if isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def perturbed_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters AWP perturbs: ndim >= 2 and "weight" in the name.

    Args:
        model: the network.

    Returns:
        The parameter names, in ``named_parameters`` order.
    """
    return [
        name
        for name, param in unwrap_model(model).named_parameters()
        if param.dim() >= 2 and "weight" in name
    ]


class AWP:
    """Adversarial weight perturbation with a proxy model and its optimiser.

    ``proxy`` must have the model's architecture (e.g. ``copy.deepcopy(model)``); ``proxy_optim``
    is an optimiser over the proxy's parameters (plain SGD, lr 0.1; with plain SGD the
    learning rate cancels in the normalised ``diff``). ``gamma`` (5e-3) is the layer-wise relative
    size of the perturbation. ``reduce_fn``, when given, is applied in place to each dw before
    normalising (e.g. an all-reduce average) so all processes perturb their replicas identically.
    """

    def __init__(
        self,
        model: nn.Module,
        proxy: nn.Module,
        proxy_optim: torch.optim.Optimizer,
        gamma: float = 5e-3,
        *,
        reduce_fn: Callable[[torch.Tensor], object] | None = None,
    ) -> None:
        if not (isinstance(gamma, (int, float)) and gamma >= 0.0 and gamma < float("inf")):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.model = model
        self.proxy = unwrap_model(proxy)
        self.proxy_optim = proxy_optim
        self.gamma = float(gamma)
        self.reduce_fn = reduce_fn
        self.names = perturbed_parameter_names(model)
        proxy_names = {name for name, _ in self.proxy.named_parameters()}
        missing = [name for name in self.names if name not in proxy_names]
        if missing:
            raise ValueError(f"proxy lacks the model's parameters {missing[:5]}")
        self._saved: dict[str, torch.Tensor] | None = None

    def _params(self, module: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(unwrap_model(module).named_parameters())
        return {name: params[name] for name in self.names}

    def calc_awp(self, *args) -> dict[str, torch.Tensor]:
        """Weight perturbation ``diff`` (name -> tensor) that ascends the training loss.

        Either ``calc_awp(loss_fn)`` with ``loss_fn(proxy) -> scalar`` (the unweighted loss of the
        current batch computed with the proxy), or ``calc_awp(x, y, loss_fn)`` with
        ``loss_fn(proxy(x), y) -> scalar``. The proxy runs in train mode, as in the reference.

        The proxy is reset to the model's weights, takes one optimiser step on ``-loss``, and
        for each perturbed parameter ``diff = gamma ||w|| / (||dw|| + 1e-20) dw`` with
        ``dw = w_proxy - w`` (all-reduced by ``reduce_fn`` first). The model is not changed.

        Args:
            *args: ``(loss_fn,)`` or ``(x, y, loss_fn)``: the batch's inputs (B, C, H, W) in
                [0, 1], labels (B,) int64, and the loss as above; ValueError for another count.

        Returns:
            ``{parameter name: perturbation}`` for :func:`perturbed_parameter_names`, each
            tensor of the parameter's shape, dtype and device (relative norm ``gamma``).
        """
        if len(args) == 1:
            (loss_fn,) = args

            def proxy_loss() -> torch.Tensor:
                return loss_fn(self.proxy)

        elif len(args) == 3:
            x, y, loss_fn = args

            def proxy_loss() -> torch.Tensor:
                return loss_fn(self.proxy(x), y)

        else:
            raise ValueError("calc_awp takes (loss_fn) or (x, y, loss_fn)")
        self.proxy.load_state_dict(unwrap_model(self.model).state_dict())
        self.proxy.train()
        loss = proxy_loss()
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError("loss_fn must return a scalar tensor")
        self.proxy_optim.zero_grad(set_to_none=True)
        (-loss).backward()
        self.proxy_optim.step()
        self.proxy_optim.zero_grad(set_to_none=True)
        diff: dict[str, torch.Tensor] = {}
        model_params = self._params(self.model)
        proxy_params = self._params(self.proxy)
        with torch.no_grad():
            for name in self.names:
                w = model_params[name]
                dw = proxy_params[name].detach() - w
                if self.reduce_fn is not None:
                    self.reduce_fn(dw)
                diff[name] = (self.gamma * w.norm() / (dw.norm() + AWP_EPS)) * dw
        return diff

    def perturb(self, diff: dict[str, torch.Tensor]) -> None:
        """w <- w + diff (remembering w so that :meth:`restore` is exact).

        Args:
            diff: the perturbation of :meth:`calc_awp` (``{parameter name: tensor}``).

        Raises:
            RuntimeError: when the last perturbation was not restored.
        """
        if self._saved is not None:
            raise RuntimeError("perturb called twice without restore")
        params = self._params(self.model)
        saved = {}
        with torch.no_grad():
            for name, delta in diff.items():
                saved[name] = params[name].detach().clone()
                params[name].add_(delta)
        self._saved = saved

    def restore(self, diff: dict[str, torch.Tensor]) -> None:
        """Remove the perturbation: w <- w_original + (w - (w_original + diff)).

        The bracket is the optimiser's update since :meth:`perturb` (zero when there was none, in
        which case the original weights come back exactly).

        Args:
            diff: the perturbation passed to the preceding :meth:`perturb`.

        Raises:
            RuntimeError: without a preceding :meth:`perturb`.
        """
        if self._saved is None:
            raise RuntimeError("restore called without a preceding perturb")
        params = self._params(self.model)
        with torch.no_grad():
            for name, delta in diff.items():
                original = self._saved[name]
                update = params[name] - (original + delta)
                params[name].copy_(original + update)
        self._saved = None

    def state_dict(self) -> dict:
        """Proxy optimiser state and gamma (the proxy's weights are reloaded every step).

        Returns:
            ``{"gamma": float, "proxy_optim": the proxy optimiser's state_dict()}`` (the
            checkpoint's ``"awp"`` entry).
        """
        return {"gamma": self.gamma, "proxy_optim": self.proxy_optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`: gamma and the proxy optimiser's state.

        Args:
            state: a dict with ``"gamma"`` and ``"proxy_optim"``; ValueError without
                ``"proxy_optim"``.
        """
        if not isinstance(state, dict) or "proxy_optim" not in state:
            raise ValueError("AWP state_dict must be a dict with key 'proxy_optim'")
        self.gamma = float(state["gamma"])
        self.proxy_optim.load_state_dict(state["proxy_optim"])


def make_awp(
    model: nn.Module,
    *,
    gamma: float = 5e-3,
    proxy_lr: float = 0.1,
    reduce_fn: Callable[[torch.Tensor], object] | None = None,
) -> AWP:
    """AWP with a deep copy of ``model`` as proxy and plain SGD (lr ``proxy_lr``) for it.

    Args:
        model: the network.
        gamma: the relative size of the weight perturbation.
        proxy_lr: the proxy's SGD learning rate.
        reduce_fn: averages the perturbation over processes (None in one process).

    Returns:
        The :class:`AWP`.
    """
    if not proxy_lr > 0.0:
        raise ValueError(f"proxy_lr must be > 0, got {proxy_lr}")
    proxy = copy.deepcopy(unwrap_model(model))
    proxy_optim = torch.optim.SGD(proxy.parameters(), lr=proxy_lr)
    return AWP(model, proxy, proxy_optim, gamma=gamma, reduce_fn=reduce_fn)
