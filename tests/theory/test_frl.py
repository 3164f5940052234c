"""theory.frl: FRL's multiplier update rule (FRL Algorithm 1 / Eq. 11, SPEC §4)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from theory.frl import (
    Multipliers,
    fairness_gaps,
    multiplier_weights,
    project_multipliers,
    remargin_eps,
    update_multipliers,
)

errors = st.integers(2, 12).flatmap(
    lambda c: st.tuples(
        arrays(np.float64, c, elements=st.floats(0, 1)),
        arrays(np.float64, c, elements=st.floats(-0.2, 1)),
    )
)
HP = dict(delta0=0.05, delta1=0.05, alpha1=0.05, alpha2=0.2, lim=0.5)


def test_one_update_by_hand():
    # Three classes; class 2 is the worst on both errors.
    e = np.array([0.10, 0.20, 0.60])  # mean 0.3
    b = np.array([0.20, 0.20, 0.50])  # mean 0.3
    new = update_multipliers(Multipliers.zeros(3), e, b, mode="rwrm", **HP)
    # g0 = e - 0.3 - 0.05 = (-0.25, -0.15, 0.25); g1 = b - 0.3 - 0.05 = (-0.15, -0.15, 0.15)
    np.testing.assert_allclose(new.lambda0, [0.0, 0.0, 0.05 * 0.25])
    np.testing.assert_allclose(new.lambda1, [0.0, 0.0, 2 * 0.05 * 0.15])
    np.testing.assert_allclose(new.lambda2, [-0.2 * 0.15, -0.2 * 0.15, 0.2 * 0.15])
    w0 = multiplier_weights(new.lambda0)
    np.testing.assert_allclose(w0, [1 / 3 - 0.0125 / 3, 1 / 3 - 0.0125 / 3, 1 / 3 + 0.0125 * 2 / 3])
    eps = remargin_eps(0.1, new.lambda2, cap=0.16)
    np.testing.assert_allclose(eps, [0.1 * 0.98, 0.1 * 0.98, 0.1 * np.exp(0.06)])


def test_projection_clips_then_rescales_to_lim():
    np.testing.assert_allclose(project_multipliers([-1.0, 0.2, 0.1], 0.5), [0.0, 0.2, 0.1])
    np.testing.assert_allclose(project_multipliers([0.6, -0.3, 0.4], 0.5), [0.3, 0.0, 0.2])


@given(errors, st.sampled_from(["rw", "rm", "rwrm"]), st.integers(1, 30))
def test_repeated_updates_keep_weights_a_positive_distribution(errs, mode, rounds):
    e, b = errs
    m = Multipliers.zeros(e.shape[0])
    for _ in range(rounds):
        m = update_multipliers(m, e, b, mode=mode, **HP)
    for lam in (m.lambda0, m.lambda1):
        assert np.all(lam >= 0) and lam.sum() <= HP["lim"] + 1e-12
        w = multiplier_weights(lam)
        assert abs(w.sum() - 1) < 1e-12 and np.all(w > 0)
    if mode == "rm":  # Reweight multipliers untouched
        assert not m.lambda0.any() and not m.lambda1.any()
    if mode == "rw":
        assert not m.lambda2.any()
    eps = remargin_eps(8 / 255, m.lambda2, cap=16 / 255)
    assert np.all(eps >= 0.98 * 8 / 255 - 1e-15) and np.all(eps <= 16 / 255)


@given(errors)
def test_worse_classes_get_larger_weights_and_budgets(errs):
    e, b = errs
    m = update_multipliers(Multipliers.zeros(e.shape[0]), e, b, mode="rwrm", **HP)
    g0, g1 = fairness_gaps(e, b, HP["delta0"], HP["delta1"])
    w0, w1 = multiplier_weights(m.lambda0), multiplier_weights(m.lambda1)
    # Weights (before the lim rescale ties them) and budgets are monotone in the gaps.
    for gap, w in ((g0, w0), (g1, w1), (g1, remargin_eps(0.1, m.lambda2, clamp=(0, np.inf)))):
        order = np.argsort(gap, kind="stable")
        assert np.all(np.diff(w[order]) >= -1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="mode"):
        update_multipliers(Multipliers.zeros(2), [0, 0], [0, 0], mode="x", **HP)
    with pytest.raises(ValueError, match="alpha1"):
        update_multipliers(Multipliers.zeros(2), [0, 0], [0, 0], mode="rw", **{**HP, "alpha1": -1})
    with pytest.raises(ValueError, match="lim"):
        update_multipliers(Multipliers.zeros(2), [0, 0], [0, 0], mode="rw", **{**HP, "lim": 0})
