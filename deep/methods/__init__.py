"""Training methods: one module per paper, all behind the interface of :mod:`deep.methods.base`.

==============  ==============================================================================
module          methods (``weighting`` part of a preset, :mod:`deep.presets`)
==============  ==============================================================================
``base``        ``uniform``: plain PGD-AT / TRADES / MART
``faal``        ``faal``: FAAL (CVPR 2024), class-wise DRO weights per batch
``frl``         ``frl``, ``baseline``, ``fixed-class``: FRL (ICML 2021) and its baselines
``cfa``         ``cfa``: CFA (CVPR 2023), calibrated eps / TRADES beta, EMA and FAWA models
``wat``         ``wat``: WAT (AAAI 2023), exponential weights from validation costs
``dafa``        ``dafa``: DAFA (ICLR 2024), distance-aware weights, budgets and steps
==============  ==============================================================================

:func:`build_method` makes the method of a run's configuration; the training loop only calls the
interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deep.methods import cfa, dafa, faal, frl, wat
from deep.methods.base import UniformWeighting
from deep.weighting import WEIGHTING_NAMES

__all__ = ["build_method", "build_weighting"]


def build_method(
    cfg: dict,
    preset,
    classes: Sequence[str],
    eps: float,
    step_size: float,
    *,
    reduce_fn: Callable | None,
    ratio_vector: Callable,
) -> UniformWeighting:
    """The method of ``preset`` configured from ``cfg`` (:func:`deep.config.resolve_config`).

    ``reduce_fn`` sums class statistics over processes (``deep.distributed.make_reduce_fn``);
    ``ratio_vector`` turns ``CLASS=RATIO`` pairs into per-class ratios (fixed-class).

    Args:
        cfg: the resolved configuration.
        preset: the :class:`deep.presets.Preset` of ``cfg["method"]``.
        classes: the class names.
        eps: the data set's budget.
        step_size: the data set's attack step.
        reduce_fn: sums class statistics over processes (None in one process).
        ratio_vector: parses ``CLASS=RATIO`` options.

    Returns:
        The method (a :class:`deep.methods.base.UniformWeighting` or a subclass).
    """
    n = len(classes)
    kind = preset.weighting
    if kind == "faal":
        return faal.from_config(cfg, n, eps, step_size, reduce_fn)
    if kind == "frl":
        return frl.frl_from_config(cfg, preset, n, eps, step_size)
    if kind == "baseline":
        return frl.baseline_from_config(cfg, n, eps, step_size)
    if kind == "fixed-class":
        return frl.fixed_class_from_config(cfg, list(classes), eps, step_size, ratio_vector)
    if kind == "cfa":
        return cfa.from_config(cfg, preset, n, eps, step_size, reduce_fn)
    if kind == "wat":
        return wat.from_config(cfg, n, eps, step_size)
    if kind == "dafa":
        return dafa.from_config(cfg, preset, n, eps, step_size, reduce_fn)
    return UniformWeighting(n, base_eps=eps, base_step=step_size)


def build_weighting(name: str, num_classes: int, **kwargs) -> UniformWeighting:
    """A class weighting by name (uniform, faal, frl, baseline, fixed-class); ``kwargs`` go to
    its class.

    Args:
        name: ``"uniform"``, ``"faal"``, ``"frl"``, ``"baseline"`` or ``"fixed-class"``.
        num_classes: the number of classes.

    Returns:
        The weighting.
    """
    if name == "uniform":
        return UniformWeighting(num_classes, **kwargs)
    if name == "faal":
        return faal.FAALWeighting(num_classes=num_classes, **kwargs)
    if name == "frl":
        return frl.FRLWeighting(num_classes, **kwargs)
    if name == "baseline":
        return frl.BaselineReweight(num_classes, **kwargs)
    if name == "fixed-class":
        return frl.FixedClassWeighting(num_classes, **kwargs)
    raise ValueError(f"weighting must be one of {WEIGHTING_NAMES[:5]}, got {name!r}")
