"""Training methods as presets: each method is a combination of four parts (see DESIGN.md).

    attack (none | PGD-CE | TRADES-KL | Gaussian noise)  ->  x_adv
    objective (ce | at | trades | mart) ->  per-sample loss l_i   (deep.objectives)
    weighting (uniform | faal | frl-* | baseline | fixed-class)  -> class weights w_c (and eps_c)
    update (SGD, optionally through AWP)

Adding a method means adding one :class:`Preset` to :data:`PRESETS`; the training loop in
:mod:`deep.train` serves all of them.

References for the parts:

* PGD-AT (Madry et al. 2018): PGD on cross-entropy, CE on the adversarial example.
* TRADES (Zhang et al. 2019): KL attack, CE(clean) + beta KL(p_clean || p_adv), beta = 6.
* MART (Wang et al. 2020): KL attack (as the FAAL reference code runs it), beta = 6.
* AWP (Wu et al. 2020): adversarial weight perturbation, gamma = 5e-3.
* FAAL (CVPR 2024, supp. Algorithm 1): class weights from the KL-constrained DRO problem (Eq. 1-2)
  on the class means of the softmax margin, loss (C/B) sum_i w_{y_i} l_i (line 14).
* FRL (Xu et al. 2021, Algorithm 1, Eq. 9-11): Reweight ("rw"), Remargin ("rm") and both ("rwrm"),
  driven by class-wise validation errors once per epoch; TRADES-style loss, beta = 1.5.
* Baseline Reweight (FRL §5.1, after Agarwal et al. 2018): upweight the class with the highest
  validation robust error; PGD-AT loss.
* Gaussian-noise augmentation (Cohen et al., ICML 2019, "Certified Adversarial Robustness via
  Randomized Smoothing", §3.3 / §4): cross-entropy on ``x + N(0, sigma^2 I)`` in [0, 1] pixel space,
  the base classifier that :mod:`deep.certify` smooths (FRL Appendix A.1.3).
* Every preset runs under the l_inf or the l_2 threat model (``--norm``; FRL Appendix A.1.2): the
  norm is a property of the attack, not of the method.
* Fixed class weights (FRL §5.3, Figure 3): FRL's loss with one class's boundary-error weight and /
  or attack budget scaled by a fixed ratio (``--class-boundary-weight``, ``--class-eps-scale``).
* CFA (Wei et al., CVPR 2023): class-wise calibrated eps (CCM) from the training robust accuracy,
  on TRADES also a per-class mix of the CE and KL terms (CCR); EMA and FAWA averaged models.
* WAT (Li & Liu, AAAI 2023): exponential-weights class weights from validation costs, TRADES.
* DAFA (Lee et al., ICLR 2024): class weights from the class-probability matrix of the last warm-up
  epoch; they scale the class's budget and step, and weight the clean CE term (TRADES) or the
  adversarial CE (PGD-AT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ATTACKS", "WEIGHTINGS", "Preset", "PRESETS", "METHOD_NAMES", "get_preset"]

#: Training attacks: "none" (natural training), "pgd" (PGD on cross-entropy, uniform random
#: start), "trades" (ascent on KL(p_clean || p_adv) from x + 0.001 N(0, 1)) and
#: "gaussian" (x + N(0, sigma^2 I), no ascent: randomized smoothing's training noise).
ATTACKS = ("none", "pgd", "trades", "gaussian")

#: Class weightings of :mod:`deep.weighting`.
WEIGHTINGS = ("uniform", "faal", "frl", "baseline", "fixed-class", "cfa", "wat", "dafa")

_OBJECTIVES = ("ce", "at", "trades", "mart")
_FRL_MODES = ("rw", "rm", "rwrm")


@dataclass(frozen=True)
class Preset:
    """One training method: which attack, objective, weighting and update it combines.

    Attributes:
        name: the method's CLI name.
        attack: one of :data:`ATTACKS`.
        objective: one of ``deep.objectives.OBJECTIVES``.
        weighting: one of :data:`WEIGHTINGS`.
        awp: whether the update goes through adversarial weight perturbation.
        beta: weight of the KL term (TRADES, MART, FRL); unused by "ce" and "at".
        frl_mode: FRL variant ("rw", "rm" or "rwrm") when ``weighting == "frl"``, else None.
        description: one line for ``--help`` and the README.
    """

    name: str
    attack: str
    objective: str
    weighting: str
    awp: bool = False
    beta: float = 6.0
    frl_mode: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.objective not in _OBJECTIVES:
            raise ValueError(f"objective must be one of {_OBJECTIVES}, got {self.objective!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if (self.weighting == "frl") != (self.frl_mode is not None):
            raise ValueError("frl_mode is set exactly when weighting == 'frl'")
        if self.frl_mode is not None and self.frl_mode not in _FRL_MODES:
            raise ValueError(f"frl_mode must be one of {_FRL_MODES}, got {self.frl_mode!r}")
        if (self.attack == "none") != (self.objective == "ce"):
            raise ValueError("natural training ('ce') is exactly the preset without an attack")
        if self.two_term_loss and self.objective != "trades":
            raise ValueError(
                f"weighting {self.weighting!r} weights the two TRADES terms separately: "
                "objective must be 'trades'"
            )
        if self.weighting == "wat" and self.objective != "trades":
            raise ValueError("WAT weights the TRADES loss: objective must be 'trades'")
        if self.weighting in ("cfa", "dafa") and self.objective not in ("at", "trades"):
            raise ValueError(f"{self.weighting} runs on PGD-AT or TRADES, not {self.objective!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @property
    def needs_clean_logits(self) -> bool:
        """Whether the objective needs the clean batch's logits (TRADES, MART; "ce" only them)."""
        return self.objective in ("ce", "trades", "mart")

    @property
    def needs_adv_logits(self) -> bool:
        """Whether the objective needs the adversarial batch's logits (all but natural training)."""
        return self.objective != "ce"

    @property
    def needs_validation(self) -> bool:
        """FRL, Baseline Reweight and WAT update from the validation split; CFA's FAWA reads it."""
        return self.weighting in ("frl", "baseline", "cfa", "wat")

    @property
    def averaged_models(self) -> tuple[str, ...]:
        """Averaged models the method keeps (CFA: EMA and FAWA), each saved as ``<name>.pt``."""
        return ("ema", "fawa") if self.weighting == "cfa" else ()

    @property
    def two_term_loss(self) -> bool:
        """FRL's loss: natural and boundary (KL) terms weighted by separate class weights."""
        return self.weighting in ("frl", "fixed-class")

    @property
    def per_class_eps(self) -> bool:
        """A per-class attack budget eps_{y_i}: FRL Remargin (FRL Eq. 11), fixed class scales,
        CFA's calibrated eps, DAFA's class-scaled budget."""
        return self.frl_mode in ("rm", "rwrm") or self.weighting in ("fixed-class", "cfa", "dafa")

    def to_dict(self) -> dict:
        """JSON-able description (stored in config.json)."""
        return asdict(self)


def _presets() -> dict[str, Preset]:
    p = [
        Preset("natural", "none", "ce", "uniform", description="natural training on clean inputs"),
        Preset("pgd-at", "pgd", "at", "uniform", description="PGD adversarial training (Madry)"),
        Preset("trades", "trades", "trades", "uniform", description="TRADES, beta 6"),
        Preset("mart", "trades", "mart", "uniform", description="MART, beta 6"),
        Preset("at-awp", "pgd", "at", "uniform", awp=True, description="PGD-AT with AWP"),
        Preset("trades-awp", "trades", "trades", "uniform", awp=True, description="TRADES + AWP"),
        Preset("faal-at", "pgd", "at", "faal", description="FAAL on PGD-AT (supp. Alg. 1)"),
        Preset("faal-trades", "trades", "trades", "faal", description="FAAL on TRADES"),
        Preset("faal-mart", "trades", "mart", "faal", description="FAAL on MART"),
        Preset("faal-at-awp", "pgd", "at", "faal", awp=True, description="FAAL on PGD-AT + AWP"),
        Preset(
            "faal-trades-awp", "trades", "trades", "faal", awp=True, description="FAAL, TRADES, AWP"
        ),
        Preset(
            "frl-rw", "trades", "trades", "frl", beta=1.5, frl_mode="rw",
            description="FRL Reweight (Alg. 1)",
        ),
        Preset(
            "frl-rm", "trades", "trades", "frl", beta=1.5, frl_mode="rm",
            description="FRL Remargin (Eq. 11)",
        ),
        Preset(
            "frl-rwrm", "trades", "trades", "frl", beta=1.5, frl_mode="rwrm",
            description="FRL Reweight + Remargin",
        ),
        Preset(
            "baseline-reweight", "pgd", "at", "baseline",
            description="upweight the class with the highest validation robust error (FRL §5.1)",
        ),
        Preset(
            "fixed-class", "trades", "trades", "fixed-class", beta=1.5,
            description="FRL's loss with fixed per-class boundary weights / eps (FRL §5.3)",
        ),
        Preset(
            "cfa-at", "pgd", "at", "cfa",
            description="CFA on PGD-AT: class-wise calibrated eps (CCM) + FAWA (Wei et al. 2023)",
        ),
        Preset(
            "cfa-trades", "trades", "trades", "cfa",
            description="CFA on TRADES: CCM + class-wise calibrated beta (CCR) + FAWA",
        ),
        Preset(
            "wat-trades", "trades", "trades", "wat",
            description="WAT: exponential-weights class weights from validation losses",
        ),
        Preset(
            "dafa-trades", "trades", "trades", "dafa",
            description="DAFA: distance-aware class weights and class-scaled budgets",
        ),
        Preset(
            "dafa-at", "pgd", "at", "dafa",
            description="DAFA on PGD-AT (one class-scaled step per iteration)",
        ),
        Preset(
            "gaussian-noise", "gaussian", "at", "uniform",
            description="cross-entropy on x + N(0, sigma^2) (randomized smoothing; Cohen et al.)",
        ),
    ]  # fmt: skip
    return {preset.name: preset for preset in p}


#: Every training method by name.
PRESETS: dict[str, Preset] = _presets()

#: The method names, in the order of :data:`PRESETS` (the CLI's choices).
METHOD_NAMES: tuple[str, ...] = tuple(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHOD_NAMES)}; got {name!r}") from None
