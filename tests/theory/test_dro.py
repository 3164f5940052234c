"""Tests for theory.dro: exact KL-DRO weights (FAAL Eq. 1-2) and the Theorem 1 coverage bound.

References used: cvxpy (the FAAL formulation), scipy's brentq on the SPEC §2 dual written
naively, random feasible points, the closed forms of the bound, and hand computation."""

import contextlib
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy import optimize
from torch.utils._python_dispatch import TorchDispatchMode

from theory import dro
from theory.dro import (
    coverage_lower_bound,
    dro_value,
    solve_kl_dro,
    solve_kl_dro_cvxpy,
    tau_for_coverage,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)
loss_vectors = st.lists(finite, min_size=2, max_size=30).map(np.array)
taus = st.floats(1e-6, 5.0)


def kl_forward(p, w):
    """KL(p || w) = sum p (r - 1 - log r), r = w / p (no cancellation between terms; log r from
    log1p near r = 1 and from log w - log p elsewhere, which stays exact for tiny w)."""
    r = w / p
    near_one = np.abs(r - 1.0) < 0.5
    with np.errstate(divide="ignore"):  # np.where evaluates both branches
        log_r = np.where(near_one, np.log1p(r - 1.0), np.log(w) - np.log(p))
    return float(np.sum(p * ((r - 1.0) - log_r)))


def kl_reverse(w, p):
    """KL(w || p) = sum p (r log r - r + 1), r = w / p."""
    r = w / p
    return float(np.sum(p * (r * np.log(np.where(r > 0, r, 1.0)) - r + 1.0)))


def spread(losses):
    return float(np.max(losses) - np.min(losses))


# ------------------------------------------------------------------------------------------------
# forward direction, KL(u || w) <= tau
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_loop_on_cpu(enabled=True):
    """Run CPU tensors through the fixed-cost torch path (the accelerator path) instead of
    the numpy solver CPU tensors normally use."""
    old = dro._TORCH_CPU_USES_NUMPY
    dro._TORCH_CPU_USES_NUMPY = not enabled
    try:
        yield
    finally:
        dro._TORCH_CPU_USES_NUMPY = old


@pytest.fixture(params=["numpy-on-cpu", "torch-loop"])
def torch_path(request):
    """Both torch code paths: CPU tensors via numpy, and the fixed-cost torch path."""
    with torch_loop_on_cpu(request.param == "torch-loop"):
        yield request.param


@given(loss_vectors, st.floats(0.0, 5.0))
def test_weights_on_simplex(losses, tau):
    w = solve_kl_dro(losses, tau)
    assert w.shape == losses.shape and w.dtype == np.float64
    assert np.all(w > 0)
    assert abs(w.sum() - 1.0) < 1e-13


@given(loss_vectors, taus)
@example(losses=np.array([0.0, 1.0, 1.0, 1.0]), tau=5.0)
def test_constraint_active_at_optimum(losses, tau):
    assume(spread(losses) > 0)
    w = solve_kl_dro(losses, tau)
    u = np.full(losses.shape, 1.0 / losses.size)
    assert kl_forward(u, w) == pytest.approx(tau, rel=1e-10)


@given(loss_vectors)
def test_tau_zero_gives_uniform(losses):
    w = solve_kl_dro(losses, 0.0)
    assert np.array_equal(w, np.full(losses.shape, 1.0 / losses.size))


@given(finite, st.integers(1, 50), st.floats(0.0, 50.0))
def test_equal_losses_give_exact_uniform(value, num_classes, tau):
    losses = np.full(num_classes, value)
    assert np.array_equal(solve_kl_dro(losses, tau), np.full(num_classes, 1.0 / num_classes))
    batch = torch.full((3, num_classes), value)
    for torch_loop in (False, True):
        with torch_loop_on_cpu(torch_loop):
            out = solve_kl_dro(batch, tau)
        assert torch.equal(out, torch.full((3, num_classes), 1.0 / num_classes))


@given(loss_vectors, st.lists(taus, min_size=2, max_size=5))
def test_value_above_mean_and_monotone_in_tau(losses, tau_list):
    values = [dro_value(losses, tau) for tau in sorted(tau_list)]
    tol = 1e-12 * (1.0 + np.max(np.abs(losses)))
    assert values[0] >= losses.mean() - tol
    assert np.all(np.diff(values) >= -tol)
    assert values[-1] <= losses.max() + tol


@given(loss_vectors, taus, st.floats(-1e4, 1e4), st.floats(1e-3, 1e3))
def test_invariant_to_shift_and_positive_scale(losses, tau, shift, scale):
    assume(spread(losses) > 1e-6 * (1 + np.max(np.abs(losses))))
    w = solve_kl_dro(losses, tau)
    np.testing.assert_allclose(solve_kl_dro(losses + shift, tau), w, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(solve_kl_dro(losses * scale, tau), w, rtol=1e-9, atol=1e-12)


@given(loss_vectors, taus, st.randoms(use_true_random=False))
def test_permutation_equivariant(losses, tau, rnd):
    perm = np.array(rnd.sample(range(losses.size), losses.size))
    np.testing.assert_allclose(
        solve_kl_dro(losses[perm], tau), solve_kl_dro(losses, tau)[perm], rtol=1e-12, atol=1e-15
    )


@given(loss_vectors, taus)
def test_kkt_form(losses, tau):
    """SPEC §2: w_c = lambda / (C (mu - l_c)), i.e. 1/w_c is affine in l_c with negative slope."""
    assume(spread(losses) > 1e-6 * (1 + np.max(np.abs(losses))))
    w = solve_kl_dro(losses, tau)
    inv = 1.0 / w
    slope, intercept = np.polyfit(losses, inv, 1)
    assert slope < 0
    resid = inv - (slope * losses + intercept)
    assert np.max(np.abs(resid)) <= 1e-8 * np.max(inv)
    mu = -intercept / slope  # w_c (mu - l_c) constant, mu > max l
    assert mu > losses.max()


@given(loss_vectors, taus, st.integers(0, 2**31 - 1))
def test_no_feasible_point_beats_optimum(losses, tau, seed):
    rng = np.random.default_rng(seed)
    size = losses.size
    u = np.full(size, 1.0 / size)
    best = float(losses @ solve_kl_dro(losses, tau))
    for v in rng.dirichlet(np.full(size, 0.5), size=20):
        # shrink v towards u until feasible (KL(u || .) is convex, u is feasible)
        lo, hi = 0.0, 1.0  # weight on v
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if kl_forward(u, mid * v + (1 - mid) * u) <= tau:
                lo = mid
            else:
                hi = mid
        candidate = lo * v + (1 - lo) * u
        assert float(losses @ candidate) <= best + 1e-12 * (1 + np.abs(losses).max())


@settings(max_examples=12)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=8).map(np.array), st.floats(1e-3, 2.0))
def test_matches_cvxpy_reference(losses, tau):
    assume(spread(losses) > 1e-3)
    w = solve_kl_dro(losses, tau)
    ref = solve_kl_dro_cvxpy(losses, tau)
    assert float(losses @ w) == pytest.approx(float(losses @ ref), abs=1e-6 * spread(losses))
    np.testing.assert_allclose(w, ref, atol=2e-4)
    assert float(losses @ w) >= float(losses @ ref) - 1e-6  # ours is exactly feasible and optimal


def test_matches_scipy_dual_root_for_many_classes():
    """SPEC §2 dual in its textbook form, solved by scipy's brentq, for C = 1000."""
    rng = np.random.default_rng(3)
    for tau in (0.01, 0.3, 3.0):
        losses = rng.uniform(-1, 1, size=1000)

        def h(mu, losses=losses, tau=tau):
            return np.mean(np.log(mu - losses)) + np.log(np.mean(1.0 / (mu - losses))) - tau

        top = losses.max()
        mu = optimize.brentq(h, top + 1e-12, top + 1e6, xtol=1e-15, rtol=1e-15)
        ref = (1.0 / (mu - losses)) / np.sum(1.0 / (mu - losses))
        np.testing.assert_allclose(solve_kl_dro(losses, tau), ref, rtol=1e-7)


def test_ties_at_maximum_share_weight_equally():
    losses = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    w = solve_kl_dro(losses, 2.0)
    assert w[1] == pytest.approx(w[2], rel=1e-14) and w[1] == pytest.approx(w[4], rel=1e-14)
    assert kl_forward(np.full(5, 0.2), w) == pytest.approx(2.0, rel=1e-10)


@pytest.mark.parametrize("scale", [1e-12, 1e12])
def test_extreme_loss_scales(scale, torch_path):
    losses = np.random.default_rng(0).normal(size=20)
    ref = solve_kl_dro(losses, 0.2)
    np.testing.assert_allclose(solve_kl_dro(losses * scale, 0.2), ref, rtol=1e-10)
    out = solve_kl_dro(torch.tensor(losses * scale), 0.2).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10)


@pytest.mark.parametrize("tau", [1e-12, 1e-8])
def test_tiny_tau_constraint_exact(tau, torch_path):
    losses = np.random.default_rng(1).normal(size=50)
    u = np.full(50, 1 / 50)
    assert kl_forward(u, solve_kl_dro(losses, tau)) == pytest.approx(tau, rel=1e-6)
    w_t = solve_kl_dro(torch.tensor(losses), tau).numpy()
    np.testing.assert_allclose(w_t, solve_kl_dro(losses, tau), rtol=1e-12)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("tau", [1e-14, 1e-11])
@pytest.mark.parametrize("num_top", [1, 9])
def test_torch_loop_tiny_tau_two_loss_levels(direction, tau, num_top):
    """Tiny tau on two loss levels: the KL is ~tau while its terms are ~sqrt(tau), so a KL
    formed without care loses most digits near the root; the torch path must still agree with
    the numpy solver (and meet the constraint, checked there by the tests above)."""
    losses = np.zeros(10)
    losses[:num_top] = 1.0
    ref = solve_kl_dro(losses, tau, direction=direction)
    with torch_loop_on_cpu():
        out = solve_kl_dro(torch.tensor(losses), tau, direction=direction).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    kl = kl_forward(np.full(10, 0.1), out) if direction == "forward" else kl_reverse(out, 0.1)
    assert kl == pytest.approx(tau, rel=1e-9)


def test_prior_generalisation_matches_cvxpy():
    rng = np.random.default_rng(5)
    losses = rng.normal(size=6)
    prior = rng.dirichlet(np.ones(6))
    w = solve_kl_dro(losses, 0.3, prior=prior)
    assert kl_forward(prior, w) == pytest.approx(0.3, rel=1e-10)
    ref = solve_kl_dro_cvxpy(losses, 0.3, prior=prior)
    np.testing.assert_allclose(w, ref, atol=2e-4)
    np.testing.assert_array_equal(solve_kl_dro(losses, 0.0, prior=prior), prior)
    wt = solve_kl_dro(torch.tensor(losses), 0.3, prior=torch.tensor(prior)).numpy()
    np.testing.assert_allclose(wt, w, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# reverse direction, KL(w || u) <= tau
# ------------------------------------------------------------------------------------------------
@given(loss_vectors, taus)
@example(losses=np.array([0.0, 1.3605948649689138e-11, -262.0]), tau=1e-06)
@example(losses=np.array([0.0, 1.3605948649689138e-11, -1.0]), tau=0.25)
def test_reverse_is_exponential_tilt_with_active_constraint(losses, tau):
    assume(spread(losses) > 1e-6 * (1 + np.max(np.abs(losses))))
    # Regime: a loss below the top is at least 1e-12 of the spread below it. Closer near-ties
    # (e.g. a gap of 1e-179) put the optimum at an astronomically large tilt, where the constraint
    # is met to ~1e-7 relative only.
    below = losses[losses < losses.max()]
    assume(below.size == 0 or losses.max() - below.max() >= 1e-12 * spread(losses))
    size = losses.size
    p_max = np.mean(losses == losses.max())
    w = solve_kl_dro(losses, tau, direction="reverse")
    assert abs(w.sum() - 1) < 1e-13 and np.all(w >= 0)
    u = np.full(size, 1.0 / size)
    if tau < -math.log(p_max) * (1 - 1e-6):
        assert kl_reverse(w, u) == pytest.approx(tau, rel=1e-9)
        # tilt: log(w_c / w_top) / (l_c - l_top) is one and the same beta >= 0 for all classes
        top = int(np.argmax(losses))
        # (classes within 1e-6 of the top loss are skipped: the ratio is ill-conditioned there)
        keep = (w > 1e-250) & (losses < losses[top] - 1e-6 * spread(losses))
        if keep.any():
            beta = np.log(w[keep] / w[top]) / (losses[keep] - losses[top])
            assert np.all(beta > 0)
            np.testing.assert_allclose(beta, beta[0], rtol=1e-7)
    else:  # face of maximal losses
        np.testing.assert_allclose(w, (losses == losses.max()) / (p_max * size), atol=1e-12)


@settings(max_examples=10)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=8).map(np.array), st.floats(1e-3, 0.6))
def test_reverse_matches_cvxpy(losses, tau):
    assume(spread(losses) > 1e-3)
    # cvxpy's tolerance cannot tell apart losses closer than ~1e-6: compare only where it can
    below = losses[losses < losses.max()]
    assume(below.size == 0 or losses.max() - below.max() > 1e-6)
    w = solve_kl_dro(losses, tau, direction="reverse")
    ref = solve_kl_dro_cvxpy(losses, tau, direction="reverse")
    assert float(losses @ w) == pytest.approx(float(losses @ ref), abs=1e-6 * spread(losses))
    np.testing.assert_allclose(w, ref, atol=2e-4)


def test_reverse_face_when_tau_exceeds_log_inverse_max_mass(torch_path):
    losses = np.array([0.0, 2.0, 2.0, 1.0])
    w = solve_kl_dro(losses, math.log(2.0) + 1e-9, direction="reverse")
    np.testing.assert_array_equal(w, [0.0, 0.5, 0.5, 0.0])
    wt = solve_kl_dro(torch.tensor(losses), 5.0, direction="reverse")
    np.testing.assert_array_equal(wt.numpy(), [0.0, 0.5, 0.5, 0.0])


# ------------------------------------------------------------------------------------------------
# the cancellation-free pieces against 50-digit references (their docstrings' accuracy claims)
# ------------------------------------------------------------------------------------------------
def _signed_logspace(lo, hi, n):
    mags = np.logspace(lo, hi, n)
    return np.concatenate([mags, -mags])


def _series_and_direct_points():
    """z in the series branch (|z| < 0.01, up to its edge) and in the direct branch beyond."""
    cut = dro._PHI_SERIES_CUTOFF
    series = np.concatenate([_signed_logspace(-12, np.log10(cut) - 1e-9, 60), [0.0]])
    direct = np.concatenate([_signed_logspace(np.log10(cut), np.log10(0.9), 30), [2.0, 50.0, 1e6]])
    return series, direct


def _rel_err(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return np.abs(got - want) / np.maximum(np.abs(want), 1e-300)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_kl_pieces_phi_psi_match_50_digit_references(backend):
    import mpmath

    ops = dro._NumpyOps() if backend == "numpy" else dro._TorchOps()
    as_input = (lambda a: a) if backend == "numpy" else (lambda a: torch.from_numpy(a))
    series, direct = _series_and_direct_points()
    for z, tol in ((series, 2e-15), (direct, 1e-13)):  # the direct branch cancels near |z| = 0.01
        with mpmath.workdps(50):
            phi_ref = [mpmath.mpf(v) - mpmath.log1p(mpmath.mpf(v)) for v in z]
            psi_ref = [(1 + mpmath.mpf(v)) * mpmath.log1p(mpmath.mpf(v)) - mpmath.mpf(v) for v in z]
        log1p_z = np.log1p(z)
        phi = dro._phi(as_input(z), as_input(log1p_z), ops)
        psi = dro._psi(as_input(z), as_input(1.0 + z), as_input(log1p_z), ops)
        assert _rel_err(phi, [float(r) for r in phi_ref]).max() < tol
        assert _rel_err(psi, [float(r) for r in psi_ref]).max() < tol


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_asinh_matches_50_digit_reference(backend):
    import mpmath

    ops = dro._NumpyOps() if backend == "numpy" else dro._TorchOps()
    as_input = (lambda a: a) if backend == "numpy" else (lambda a: torch.from_numpy(a))
    series = np.logspace(-300, -4 - 1e-9, 80)  # the series branch, x < 1e-4
    direct = np.logspace(-4, 3, 40)  # log(x + sqrt(x^2 + 1)): rounds 1 + x near x = 1e-4
    for x, tol in ((series, 2e-16), (direct, 1e-11)):
        with mpmath.workdps(50):
            ref = [float(mpmath.asinh(mpmath.mpf(v))) for v in x]
        assert _rel_err(dro._asinh(as_input(x), ops), ref).max() < tol


# ------------------------------------------------------------------------------------------------
# torch path: batch = numpy rows, dtypes, no host sync
# ------------------------------------------------------------------------------------------------
@settings(max_examples=20)
@given(
    st.integers(1, 6),
    st.integers(2, 12),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["forward", "reverse"]),
)
def test_torch_batch_equals_numpy_rows(batch, num_classes, seed, direction):
    rng = np.random.default_rng(seed)
    losses = rng.normal(size=(batch, 2, num_classes)) * rng.choice([1e-6, 1.0, 1e6])
    losses[0, 0, :2] = losses[0, 0].max()  # a tie at the maximum
    tau = rng.uniform(0.0, 1.0, size=(batch, 2))
    rows = np.stack(
        [
            solve_kl_dro(row, t, direction=direction)
            for row, t in zip(losses.reshape(-1, num_classes), tau.ravel())
        ]
    ).reshape(losses.shape)
    np.testing.assert_allclose(solve_kl_dro(losses, tau, direction=direction), rows, atol=1e-12)
    for torch_loop in (False, True):
        with torch_loop_on_cpu(torch_loop):
            out64 = solve_kl_dro(torch.tensor(losses), torch.tensor(tau), direction=direction)
            assert out64.dtype == torch.float64
            np.testing.assert_allclose(out64.numpy(), rows, atol=1e-12)
            l32 = torch.tensor(losses, dtype=torch.float32)
            out32 = solve_kl_dro(l32, torch.tensor(tau, dtype=torch.float32), direction=direction)
            assert out32.dtype == torch.float32
            rows32 = solve_kl_dro(l32.double().numpy(), tau.astype(np.float32), direction=direction)
            np.testing.assert_allclose(out32.numpy(), rows32, atol=1e-6)


def test_torch_runs_on_meta_device_without_host_sync():
    """Meta tensors hold no data: any .item() / bool(tensor) would raise."""
    losses = torch.empty(7, 4, 10, device="meta")
    for direction in ("forward", "reverse"):
        out = solve_kl_dro(losses, 0.1, direction=direction)
        assert out.device.type == "meta" and out.shape == losses.shape
        out = solve_kl_dro(losses, torch.empty(7, 4, device="meta"), direction=direction)
        assert out.shape == losses.shape
    assert dro_value(losses, 0.1).shape == (7, 4)


class _AtenCallCounter(TorchDispatchMode):
    """Counts the aten operator calls (one kernel launch each on an accelerator, views aside)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_torch_loop_op_count_is_bounded(direction, num_classes):
    """The accelerator path launches a fixed, small number of kernels per solve (FAAL solves one
    problem per training step): at most 400 aten calls, whatever the classes or the batch."""
    losses = torch.rand(
        num_classes, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    with torch_loop_on_cpu():
        expected = solve_kl_dro(losses.numpy(), 0.1, direction=direction)
        counts = []
        for batch in ((), (5,)):
            counter = _AtenCallCounter()
            with counter:
                out = solve_kl_dro(losses.expand(*batch, num_classes), 0.1, direction=direction)
            counts.append(counter.calls)
            np.testing.assert_allclose(
                out.numpy(), np.broadcast_to(expected, out.shape), atol=1e-12
            )
    assert counts[0] == counts[1]  # fixed cost: no work that grows with the batch or the data
    assert 0 < counts[0] <= 400


def test_torch_weights_detached_and_value_gradient_is_weights(torch_path):
    losses = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    w = solve_kl_dro(losses, 0.4)
    assert not w.requires_grad
    value = dro_value(losses, 0.4)
    (grad,) = torch.autograd.grad(value, losses)
    torch.testing.assert_close(grad, w)  # Danskin: d/dl max_w w.l = w*


def test_torch_validate_flag(torch_path):
    bad = torch.tensor([0.0, float("nan")])
    with pytest.raises(ValueError, match="losses"):
        solve_kl_dro(bad, 0.1, validate=True)
    with pytest.raises(ValueError, match="tau"):
        solve_kl_dro(torch.zeros(3), torch.tensor(-1.0), validate=True)
    with pytest.raises(ValueError, match="prior"):
        solve_kl_dro(torch.zeros(2), 0.1, prior=torch.tensor([0.0, 1.0]), validate=True)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"losses": [1.0, 2.0], "tau": -0.1}, "tau"),
        ({"losses": [1.0, 2.0], "tau": float("nan")}, "tau"),
        ({"losses": [1.0, 2.0], "tau": float("inf")}, "tau"),
        ({"losses": [1.0, 2.0], "tau": "0.1"}, "tau"),
        ({"losses": [1.0, 2.0], "tau": np.array([0.1, -1.0])}, "tau"),
        ({"losses": [1.0, float("nan")], "tau": 0.1}, "losses"),
        ({"losses": [1.0, float("inf")], "tau": 0.1}, "losses"),
        ({"losses": [], "tau": 0.1}, "losses"),
        ({"losses": np.zeros((3, 0)), "tau": 0.1}, "losses"),
        ({"losses": 1.0, "tau": 0.1}, "losses"),
        ({"losses": ["a", "b"], "tau": 0.1}, "losses"),
        ({"losses": [1.0, 2.0], "tau": 0.1, "prior": [0.5, 0.6]}, "prior"),
        ({"losses": [1.0, 2.0], "tau": 0.1, "prior": [0.0, 1.0]}, "prior"),
        ({"losses": [1.0, 2.0], "tau": 0.1, "prior": [1.5, -0.5]}, "prior"),
        ({"losses": [1.0, 2.0], "tau": 0.1, "prior": [1.0]}, "prior"),
        ({"losses": [1.0, 2.0], "tau": 0.1, "prior": [float("nan"), 0.5]}, "prior"),
        ({"losses": [1.0, 2.0], "tau": 0.1, "direction": "both"}, "direction"),
        ({"losses": torch.zeros(0), "tau": 0.1}, "losses"),
        ({"losses": torch.zeros(3, dtype=torch.int64), "tau": 0.1}, "losses"),
        ({"losses": torch.zeros(3), "tau": -1.0}, "tau"),
        ({"losses": torch.zeros(3), "tau": 0.1, "prior": torch.ones(2) / 2}, "prior"),
    ],
)
def test_bad_input_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        solve_kl_dro(**kwargs)


# ------------------------------------------------------------------------------------------------
# FAAL Theorem 1 / Lemma 1 bound
# ------------------------------------------------------------------------------------------------
def test_coverage_bound_hand_values():
    assert coverage_lower_bound(100, 10, 0.1) == 0.0  # 101^10 e^-10 > 1
    n, c, tau = 10_000, 10, 0.02
    expected = 1 - 10001.0**10 * math.exp(-200.0)
    assert coverage_lower_bound(n, c, tau) == pytest.approx(expected, rel=1e-12)
    assert coverage_lower_bound(10, 2, 0.0) == 0.0
    big = coverage_lower_bound(10**6, 2, 1.0)
    assert big == 1.0  # 1 - e^{-999972}
    arr = coverage_lower_bound(10_000, 10, np.array([0.0, 0.02, 1.0]))
    assert arr.shape == (3,) and np.all(np.diff(arr) >= 0) and np.all((arr >= 0) & (arr <= 1))


@given(st.integers(1, 10**7), st.integers(2, 1000), st.floats(1e-6, 1 - 1e-6))
def test_tau_for_coverage_round_trip(n, num_classes, coverage):
    tau = tau_for_coverage(coverage, n, num_classes)
    assert coverage_lower_bound(n, num_classes, tau) >= coverage
    assert coverage_lower_bound(n, num_classes, tau * (1 - 1e-6)) <= coverage + 1e-9


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: coverage_lower_bound(0, 10, 0.1), "n"),
        (lambda: coverage_lower_bound(2.5, 10, 0.1), "n"),
        (lambda: coverage_lower_bound(True, 10, 0.1), "n"),
        (lambda: coverage_lower_bound(100, 1, 0.1), "C"),
        (lambda: coverage_lower_bound(100, 10.0, 0.1), "C"),
        (lambda: coverage_lower_bound(100, 10, -0.1), "tau"),
        (lambda: coverage_lower_bound(100, 10, float("nan")), "tau"),
        (lambda: tau_for_coverage(0.0, 100, 10), "coverage"),
        (lambda: tau_for_coverage(1.0, 100, 10), "coverage"),
        (lambda: tau_for_coverage(float("nan"), 100, 10), "coverage"),
        (lambda: tau_for_coverage(0.9, -5, 10), "n"),
        (lambda: tau_for_coverage(0.9, 100, 1), "C"),
    ],
)
def test_bound_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize(
    ("losses", "tau", "kwargs"),
    [
        ([0.0, 2.2e-311, -1.0], 0.5, {"direction": "reverse"}),  # subnormal gap below the top
        ([0.0, 5.566e-299, -1.0], 0.5, {"direction": "reverse"}),
        ([0.0, 1.0, -1.0], 1e-33, {"direction": "reverse"}),  # tau below sqrt(eps)^2
        ([0.0, 1.0], 3.218053253199143, {"prior": [2.220532494803948e-09, 0.9999999977794676]}),
    ],
)
def test_extreme_inputs_give_finite_optimal_weights(losses, tau, kwargs, torch_path):
    losses = np.array(losses)
    w = solve_kl_dro(losses, tau, **kwargs)
    assert np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    prior = np.asarray(kwargs.get("prior", np.full(losses.size, 1 / losses.size)))
    if kwargs.get("direction") == "reverse":
        kl = float(np.sum(w[w > 0] * np.log(w[w > 0] / prior[w > 0])))
    else:
        kl = kl_forward(prior, np.maximum(w, 1e-320))
    assert kl <= tau * (1 + 1e-9) + 1e-15  # feasible
    # optimal: no better than the worst-case value over the prior-tilted / face candidates
    assert float(losses @ w) >= float(losses @ prior) - 1e-12
    prior_t = torch.tensor(prior) if "prior" in kwargs else None
    kw_t = {**kwargs, "prior": prior_t} if prior_t is not None else kwargs
    wt = solve_kl_dro(torch.tensor(losses), tau, **kw_t).numpy()
    np.testing.assert_allclose(wt, w, atol=1e-12)
