"""Per-sample training losses (reduction "none") for the base adversarial-training methods.

Each function returns a (B,) tensor, one loss per sample, so that a class weighting
(:mod:`deep.weighting`) can combine them: FAAL Algorithm 1 line 14 uses
``L = (C/B) sum_i w_{y_i} l_i``; FRL weights the two TRADES parts separately.

Losses (as the FAAL reference code runs them):

- ``"ce"``     natural training: CE(f(x), y) on the clean input;
- ``"at"``     PGD-AT (Madry et al.): CE(f(x_adv), y);
- ``"trades"`` TRADES (Zhang et al.): CE(f(x), y) + beta KL(p_clean || p_adv);
- ``"mart"``   MART (Wang et al.): CE(f(x_adv), y) - log(1.0001 - max_{j != y} p_adv,j)
  + beta KL(p_clean || p_adv) (1 - p_clean,y).

Everything is computed from ``log_softmax`` (no ``log(softmax)``); ``1 - p_y`` is formed as
``sum_{j != y} p_j`` so it keeps full relative precision when ``p_y`` is close to 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = ("ce", "at", "trades", "mart")

#: MART's offset inside the boosted-CE term ``-log(1.0001 - p_top_wrong)`` (Wang et al. 2020).
MART_OFFSET = 1e-4

#: Default beta per objective: TRADES and MART use 6 in the FAAL reference code.
DEFAULT_BETA = 6.0


def _check_logits(logits: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if logits is None:
        raise ValueError(f"{name} is required for this objective")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"{name} must have shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    if y.dim() != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"y must have shape (B,) matching {name} (B={logits.shape[0]}), got {tuple(y.shape)}"
        )


def _wrong_class_mask(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean (B, C) mask that is False at the true class and True elsewhere."""
    mask = torch.ones_like(logits, dtype=torch.bool)
    return mask.scatter(1, y.unsqueeze(1), False)


def _log_prob_not_true(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(1 - p_y) = logsumexp_{j != y} log p_j, free of cancellation when p_y -> 1."""
    masked = log_p.masked_fill(~_wrong_class_mask(log_p, y), float("-inf"))
    return torch.logsumexp(masked, dim=1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy -log p_y, shape (B,).

    Args:
        logits: (B, C).
        y: int64 labels (B,).

    Returns:
        The losses, (B,).
    """
    _check_logits(logits, y, "logits")
    return F.cross_entropy(logits, y, reduction="none")


def kl_clean_adv(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_clean || p_adv) = sum_j p_clean,j (log p_clean,j - log p_adv,j), shape (B,).

    The TRADES boundary term (Zhang et al. 2019; FRL §4 "KL = KL(p_clean || p_adv)").
    Gradients flow through both arguments, as in the reference implementations.

    Args:
        logits_clean: logits of the clean inputs (B, C).
        logits_adv: logits of the adversarial inputs (B, C).

    Returns:
        The divergences, (B,).
    """
    if logits_clean.shape != logits_adv.shape:
        raise ValueError(
            "logits_clean and logits_adv must have the same shape, got "
            f"{tuple(logits_clean.shape)} and {tuple(logits_adv.shape)}"
        )
    log_p_clean = F.log_softmax(logits_clean, dim=1)
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    return (log_p_clean.exp() * (log_p_clean - log_p_adv)).sum(dim=1)


def trades_parts(
    logits_adv: torch.Tensor, logits_clean: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two TRADES terms separately: (natural CE_i on clean logits, KL_i(p_clean || p_adv)).

    FRL weights them with different class weights:
    ``sum_i w0_{y_i} CE_i / sum_i w0_{y_i} + beta sum_i w1_{y_i} KL_i / sum_i w1_{y_i}``.

    Args:
        logits_adv: logits of the adversarial inputs (B, C).
        logits_clean: logits of the clean inputs (B, C).
        y: int64 labels (B,).

    Returns:
        ``(ce, kl)``, each (B,).
    """
    _check_logits(logits_clean, y, "logits_clean")
    _check_logits(logits_adv, y, "logits_adv")
    return cross_entropy(logits_clean, y), kl_clean_adv(logits_clean, logits_adv)


def mart_loss(
    logits_adv: torch.Tensor, logits_clean: torch.Tensor, y: torch.Tensor, *, beta: float
) -> torch.Tensor:
    """Per-sample MART loss (Wang et al. 2020).

    ``CE(adv) - log(1.0001 - max_{j != y} p_adv,j) + beta KL(p_clean || p_adv) (1 - p_clean,y)``.

    Args:
        logits_adv: logits of the adversarial inputs (B, C).
        logits_clean: logits of the clean inputs (B, C).
        y: int64 labels (B,).
        beta: the weight of the KL term, >= 0.

    Returns:
        The losses, (B,).
    """
    _check_logits(logits_clean, y, "logits_clean")
    _check_logits(logits_adv, y, "logits_adv")
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    ce_adv = -log_p_adv.gather(1, y.unsqueeze(1)).squeeze(1)
    wrong = _wrong_class_mask(log_p_adv, y)
    p_top_wrong = log_p_adv.masked_fill(~wrong, float("-inf")).amax(dim=1).exp()
    # log(1.0001 - p) written as log1p(1e-4 - p): accurate for small p as well.
    boosted = ce_adv - torch.log1p(MART_OFFSET - p_top_wrong)
    log_p_clean = F.log_softmax(logits_clean, dim=1)
    one_minus_p_true = _log_prob_not_true(log_p_clean, y).exp()
    kl = kl_clean_adv(logits_clean, logits_adv)
    return boosted + beta * kl * one_minus_p_true


def per_sample_loss(
    name: str,
    logits_adv: torch.Tensor | None,
    logits_clean: torch.Tensor | None,
    y: torch.Tensor,
    *,
    beta: float = DEFAULT_BETA,
) -> torch.Tensor:
    """Per-sample loss (B,) of objective ``name`` in :data:`OBJECTIVES`.

    ``"ce"`` needs only ``logits_clean``; ``"at"`` only ``logits_adv``; ``"trades"`` and ``"mart"``
    need both. ``beta`` weights the KL term of TRADES and MART (default 6; must be >= 0).

    Args:
        name: ``"ce"``, ``"at"``, ``"trades"`` or ``"mart"``.
        logits_adv: logits of the adversarial inputs (B, C), or None where not needed.
        logits_clean: logits of the clean inputs (B, C), or None where not needed.
        y: int64 labels (B,).
        beta: the KL weight of TRADES and MART.

    Returns:
        The losses, (B,).

    Raises:
        ValueError: for an unknown name, missing logits or beta < 0.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if name == "ce":
        _check_logits(logits_clean, y, "logits_clean")
        return cross_entropy(logits_clean, y)
    if name == "at":
        _check_logits(logits_adv, y, "logits_adv")
        return cross_entropy(logits_adv, y)
    if name == "trades":
        ce_i, kl_i = trades_parts(logits_adv, logits_clean, y)
        return ce_i + beta * kl_i
    return mart_loss(logits_adv, logits_clean, y, beta=beta)


def softmax_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample "CW margin" on probabilities, m_i = max_{j != y} p_j - p_y in [-1, 1].

    FAAL Algorithm 1 line 11 (supp. C.2): higher means worse; its class means are the losses of the
    class-weight DRO problem. Returned detached: the margin only selects weights.

    Args:
        logits: (B, C).
        y: int64 labels (B,).

    Returns:
        The detached margins, (B,) in [-1, 1].
    """
    _check_logits(logits, y, "logits")
    with torch.no_grad():
        p = F.softmax(logits.detach(), dim=1)
        p_true = p.gather(1, y.unsqueeze(1)).squeeze(1)
        p_top_wrong = p.masked_fill(~_wrong_class_mask(p, y), float("-inf")).amax(dim=1)
        return p_top_wrong - p_true
