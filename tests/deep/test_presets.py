"""deep.presets: every method is a valid combination of attack, objective, weighting and AWP."""

import pytest

from deep.objectives import OBJECTIVES
from deep.presets import ATTACKS, METHOD_NAMES, PRESETS, WEIGHTINGS, Preset, get_preset
from deep.weighting import FRL_MODES, WEIGHTING_NAMES

EXPECTED_METHODS = {
    "natural", "pgd-at", "trades", "mart", "at-awp", "trades-awp", "faal-at", "faal-trades",
    "faal-mart", "faal-at-awp", "faal-trades-awp", "frl-rw", "frl-rm", "frl-rwrm",
    "baseline-reweight", "fixed-class", "cfa-at", "cfa-trades", "wat-trades", "dafa-trades",
    "dafa-at", "gaussian-noise",
}  # fmt: skip


def test_all_methods_of_the_papers_are_presets():
    assert set(METHOD_NAMES) == EXPECTED_METHODS
    assert all(PRESETS[name].name == name for name in METHOD_NAMES)


def test_parts_come_from_the_modules_that_implement_them():
    assert set(WEIGHTINGS) == set(WEIGHTING_NAMES)
    for preset in PRESETS.values():
        assert preset.attack in ATTACKS
        assert preset.objective in OBJECTIVES
        assert preset.weighting in WEIGHTINGS
        assert preset.frl_mode is None or preset.frl_mode in FRL_MODES


@pytest.mark.parametrize(
    "name, attack, objective, weighting, awp",
    [
        ("natural", "none", "ce", "uniform", False),
        ("pgd-at", "pgd", "at", "uniform", False),
        ("trades", "trades", "trades", "uniform", False),
        ("mart", "trades", "mart", "uniform", False),
        ("at-awp", "pgd", "at", "uniform", True),
        ("trades-awp", "trades", "trades", "uniform", True),
        ("faal-at", "pgd", "at", "faal", False),
        ("faal-trades", "trades", "trades", "faal", False),
        ("faal-mart", "trades", "mart", "faal", False),
        ("faal-at-awp", "pgd", "at", "faal", True),
        ("faal-trades-awp", "trades", "trades", "faal", True),
        ("frl-rw", "trades", "trades", "frl", False),
        ("frl-rm", "trades", "trades", "frl", False),
        ("frl-rwrm", "trades", "trades", "frl", False),
        ("baseline-reweight", "pgd", "at", "baseline", False),
        ("fixed-class", "trades", "trades", "fixed-class", False),
        ("cfa-at", "pgd", "at", "cfa", False),
        ("cfa-trades", "trades", "trades", "cfa", False),
        ("wat-trades", "trades", "trades", "wat", False),
        ("dafa-trades", "trades", "trades", "dafa", False),
        ("dafa-at", "pgd", "at", "dafa", False),
        ("gaussian-noise", "gaussian", "at", "uniform", False),
    ],
)
def test_preset_combination(name, attack, objective, weighting, awp):
    # SPEC §3: PGD-CE for AT variants, the TRADES-KL attack for TRADES / MART variants.
    p = get_preset(name)
    assert (p.attack, p.objective, p.weighting, p.awp) == (attack, objective, weighting, awp)


def test_derived_properties():
    assert get_preset("natural").needs_clean_logits and not get_preset("natural").needs_adv_logits
    assert not get_preset("pgd-at").needs_clean_logits and get_preset("pgd-at").needs_adv_logits
    assert get_preset("trades").needs_clean_logits and get_preset("mart").needs_clean_logits
    assert get_preset("frl-rm").per_class_eps and get_preset("frl-rwrm").per_class_eps
    assert not get_preset("frl-rw").per_class_eps
    assert get_preset("fixed-class").per_class_eps and get_preset("fixed-class").two_term_loss
    assert get_preset("fixed-class").beta == 1.5  # FRL's loss (FRL §5.3 uses FRL's settings)
    needs_val = {n for n, p in PRESETS.items() if p.needs_validation}
    assert needs_val == {
        "frl-rw", "frl-rm", "frl-rwrm", "baseline-reweight", "cfa-at", "cfa-trades", "wat-trades"
    }  # fmt: skip
    assert {n for n, p in PRESETS.items() if p.averaged_models} == {"cfa-at", "cfa-trades"}
    assert get_preset("frl-rwrm").beta == 1.5 and get_preset("trades").beta == 6.0  # SPEC §3-4


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="pgd-at"):
        get_preset("fgsm")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(attack="fgsm", objective="at", weighting="uniform"),
        dict(attack="pgd", objective="xent", weighting="uniform"),
        dict(attack="pgd", objective="at", weighting="focal"),
        dict(attack="pgd", objective="at", weighting="frl", frl_mode="rw"),  # FRL needs TRADES
        dict(attack="pgd", objective="at", weighting="fixed-class"),  # two TRADES terms
        dict(attack="trades", objective="trades", weighting="frl"),  # mode missing
        dict(attack="pgd", objective="ce", weighting="uniform"),  # natural has no attack
        dict(attack="none", objective="at", weighting="uniform"),
        dict(attack="pgd", objective="at", weighting="uniform", beta=-1.0),
    ],
)
def test_invalid_combinations_raise(kwargs):
    with pytest.raises(ValueError):
        Preset("x", **kwargs)
