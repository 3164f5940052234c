"""FRL Appendix A.3 by simulation: classifiers trained on samples of D' (Eq. 19) against the exact
class errors of ``theory.features`` (Theorem 3, Eq. 20).

- :func:`sample_features`: (x, y) from D', x of shape (n, d + m) (robust features first).
- :func:`sample_block_sums`: the two block sums (1_d.x_rob, 1_m.x_non) of D' points, drawn directly
  (exact in distribution, O(n) whatever d and m), for classifiers w = (u 1_d, v 1_m).
- :func:`fit_two_scale_erm`: w = (u 1_d, v 1_m), b minimising the empirical class-balanced (robust)
  0-1 risk: the exact intercept sweep of ``sim.classifiers`` on a coarse-to-fine grid of directions.
  As n grows it converges to ``FeatureMixture.optimal_linear``.
- :func:`run_features_setting`: natural and robust two-scale ERM, logistic regression and
  (optionally) the MLP of ``sim.mlp``, each evaluated on fresh test points (exact robust
  correctness for linear models, PGD for the MLP), beside the exact errors of the fitted linear
  models and of the optima. The MLP is not limited to linear boundaries: on D' it can separate the
  classes by the spread of x (class +1 is K times wider in all d + m coordinates), so its errors
  are not the linear theory's.
"""

from __future__ import annotations

import numpy as np

from sim.classifiers import (
    LinearClassifier,
    fit_intercept_erm,
    fit_logistic_natural,
    fit_logistic_robust,
)
from sim.evaluation import evaluate_many_on_mixture
from theory.features import FeatureMixture

__all__ = [
    "sample_features",
    "sample_block_sums",
    "fit_two_scale_erm",
    "evaluate_on_features",
    "increase_with_ci",
    "run_features_setting",
    "format_features",
    "DEMO_SETTING",
    "run_demo_features",
]


def _params(mixture: FeatureMixture):
    if mixture.shape != ():
        raise ValueError("sampling needs scalar mixture parameters")
    return (
        int(mixture.d),
        int(mixture.m),
        float(mixture.eta),
        float(mixture.gamma),
        float(mixture.sigma),
        float(mixture.K),
    )


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return np.where(rng.random(int(n)) < 0.5, -1, 1).astype(np.int64)


def sample_features(mixture: FeatureMixture, n: int, rng: np.random.Generator):
    """``n`` points of D': x float64 (n, d + m), y int64 in {-1, +1} uniform.

    Args:
        mixture: the :class:`theory.features.FeatureMixture` D' (scalar parameters).
        n: the number of points.
        rng: the random generator.

    Returns:
        ``(x, y)``.
    """
    d, m, eta, gamma, sigma, K = _params(mixture)
    y = _labels(n, rng)
    theta = np.concatenate([np.full(d, eta), np.full(m, gamma)])
    x = rng.standard_normal((y.size, d + m))
    x *= np.where(y > 0, K * sigma, sigma)[:, None]
    x += y[:, None] * theta
    return x, y


def sample_block_sums(mixture: FeatureMixture, n: int, rng: np.random.Generator):
    """``(s, y)`` with s[:, 0] = 1_d.x_rob ~ N(y d eta, d sigma_y^2) and s[:, 1] = 1_m.x_non ~
    N(y m gamma, m sigma_y^2), independent given y: the block sums of D' points, drawn directly.

    Args:
        mixture: the :class:`theory.features.FeatureMixture` D' (scalar parameters).
        n: the number of points.
        rng: the random generator.

    Returns:
        ``(s, y)``: float64 (n, 2) and int64 (n,).
    """
    d, m, eta, gamma, sigma, K = _params(mixture)
    y = _labels(n, rng)
    scale = np.where(y > 0, K * sigma, sigma)
    s = rng.standard_normal((y.size, 2)) * scale[:, None] * np.sqrt([d, m])
    s += y[:, None] * np.array([d * eta, m * gamma])
    return s, y


def fit_two_scale_erm(
    s: np.ndarray,
    y: np.ndarray,
    *,
    d: int,
    m: int,
    eps: float = 0.0,
    norm: str = "linf",
    rounds: int = 3,
    points: int = 13,
) -> LinearClassifier:
    """Empirical (robust) 0-1 risk minimiser over w = (u 1_d, v 1_m), b, from block sums ``s``.

    Directions w(phi) = (cos(phi) / sqrt(d) 1_d, sin(phi) / sqrt(m) 1_m), phi in [-pi/2, pi/2]
    (u >= 0: the robust features keep their sign); for each, the intercept is the exact sweep of
    ``fit_intercept_erm`` on the projections w.x with the worst-case shift eps ||w||_*. The grid of
    ``points`` directions is refined ``rounds`` times around the best. Returns the (d + m)-vector
    classifier.

    Args:
        s: block sums (n, 2) (:func:`sample_block_sums`).
        y: labels (n,) in {-1, +1}.
        d, m: the numbers of robust and non-robust features.
        eps: the budget (0: standard risk).
        norm: ``"linf"`` or ``"l2"``.
        rounds: grid refinements.
        points: directions per grid.

    Returns:
        The :class:`sim.classifiers.LinearClassifier` on the d + m features.
    """
    s = np.asarray(s, dtype=np.float64)
    lo, hi = -np.pi / 2, np.pi / 2
    best = (np.inf, 0.0, 0.0)
    for _ in range(rounds):
        phis = np.linspace(lo, hi, points)
        for phi in phis:
            c, sn = np.cos(phi) / np.sqrt(d), np.sin(phi) / np.sqrt(m)
            proj = c * s[:, 0] + sn * s[:, 1]
            dual = d * abs(c) + m * abs(sn) if norm == "linf" else 1.0
            clf = fit_intercept_erm(proj, y, d=1, eps=eps * dual)  # d = 1: the shift is eps * dual
            margin = y * (proj + clf.b) - eps * dual
            risk = 0.5 * ((margin[y < 0] <= 0).mean() + (margin[y > 0] <= 0).mean())
            if risk < best[0]:
                best = (risk, float(phi), clf.b)
        step = phis[1] - phis[0]
        lo, hi = best[1] - step, best[1] + step
    _, phi, b = best
    w = np.concatenate([np.full(d, np.cos(phi) / np.sqrt(d)), np.full(m, np.sin(phi) / np.sqrt(m))])
    return LinearClassifier(w=w, b=float(b))


def evaluate_on_features(classifiers: dict, mixture: FeatureMixture, n_test: int, rng, **kwargs):
    """Class-wise errors with Wilson CIs of each classifier on the same ``n_test`` fresh points of
    D': ``sim.evaluation.evaluate_many_on_mixture`` (same keyword arguments) drawing from D',
    by default in chunks of about 32 MB.

    Args:
        classifiers: ``{name: classifier}``.
        mixture: the :class:`theory.features.FeatureMixture` D' (scalar parameters).
        n_test: the number of test points.
        rng: the random generator.
        **kwargs: passed to :func:`sim.evaluation.evaluate_many_on_mixture`.

    Returns:
        ``{name: errors}`` as :func:`sim.evaluation.evaluate_on_mixture` returns them.
    """
    kwargs.setdefault("chunk_size", max(1_000, 4_000_000 // (int(mixture.d) + int(mixture.m))))
    return evaluate_many_on_mixture(
        classifiers, mixture, n_test, rng, sample=sample_features, **kwargs
    )


def increase_with_ci(natural: dict, robust: dict, z: float = 1.96) -> dict:
    """Standard-error increase R(f_rob; c) - R(f_nat; c) per class from two test evaluations on
    independent points, with a normal-approximation interval ``value +- z * se``.

    Args:
        natural: the natural classifier's test errors.
        robust: the robust classifier's test errors.
        z: the interval's normal quantile.

    Returns:
        ``{"-1"|"+1": {"value", "ci_low", "ci_high"}}``.
    """
    out = {}
    for c in ("-1", "+1"):
        p_nat, p_rob = natural[c]["standard"]["value"], robust[c]["standard"]["value"]
        var = p_nat * (1 - p_nat) / natural[c]["n"] + p_rob * (1 - p_rob) / robust[c]["n"]
        half = z * float(np.sqrt(var))
        out[c] = {
            "value": p_rob - p_nat,
            "ci_low": p_rob - p_nat - half,
            "ci_high": p_rob - p_nat + half,
        }
    return out


def _pair(errors) -> dict:
    return {"-1": float(errors[0]), "+1": float(errors[1])}


def run_features_setting(params: dict, *, norm, sizes: dict, seed: int, confidence: float,
                         parts=("erm", "logistic", "mlp")) -> dict:  # fmt: skip
    """All of A.3 for one D': exact optima (``theory``) and classifiers trained on samples.

    ``params``: d, m, eta, gamma, sigma, K, eps. ``sizes``: n_train (logistic), n_proj (two-scale
    ERM, block sums), n_test, mlp_train, mlp_test, mlp_epochs, pgd_steps.

    Args:
        params: the mixture and budget (see above).
        norm: ``"linf"`` or ``"l2"``.
        sizes: sample sizes (see above).
        seed: the random seed.
        confidence: the intervals' level.
        parts: which classifiers to train.

    Returns:
        The setting's results (theory and simulation), JSON-able.
    """
    mixture = FeatureMixture(*(params[k] for k in ("d", "m", "eta", "gamma", "sigma", "K")))
    d, m, eps = int(params["d"]), int(params["m"]), float(params["eps"])
    optimum = {
        "natural": mixture.optimal_linear(0.0, norm),
        "robust": mixture.optimal_linear(eps, norm),
    }
    res: dict = {"params": dict(params), "norm": norm, "theory": {}, "classifiers": {}}
    for kind, opt in optimum.items():
        res["theory"][kind] = {
            "u": float(opt.u),
            "v": float(opt.v),
            "b": float(opt.b),
            "standard": _pair(opt.standard),
        }
    rng = np.random.default_rng([seed, 7, 0])
    fits: dict = {}
    if "erm" in parts:
        s, y = sample_block_sums(mixture, sizes["n_proj"], rng)
        for kind, e in (("natural", 0.0), ("robust", eps)):
            fits[f"erm-{kind}"] = fit_two_scale_erm(s, y, d=d, m=m, eps=e, norm=norm)
    x, y = sample_features(mixture, sizes["n_train"], rng)
    if "logistic" in parts:
        nat = fit_logistic_natural(x, y)
        fits["logistic-natural"] = nat
        fits["logistic-robust"] = fit_logistic_robust(x, y, eps=eps, norm=norm, init=nat)
    if "mlp" in parts:
        from sim.mlp import fit_mlp

        xm, ym = x[: sizes["mlp_train"]], y[: sizes["mlp_train"]]
        for kind, e in (("natural", 0.0), ("robust", eps)):
            fits[f"mlp-{kind}"] = fit_mlp(xm, ym, eps=e, norm=norm, epochs=sizes["mlp_epochs"],
                                          pgd_steps=sizes["pgd_steps"], seed=seed)  # fmt: skip
    mlps = [n for n in fits if n.startswith("mlp")]
    tests = evaluate_on_features(
        fits,
        mixture,
        sizes["n_test"],
        np.random.default_rng([seed, 7, 1]),
        eps=eps,
        norm=norm,
        confidence=confidence,
        robust_kwargs={n: {"steps": 2 * sizes["pgd_steps"], "seed": seed} for n in mlps},
        max_points={n: sizes["mlp_test"] for n in mlps},
    )
    for name, clf in fits.items():
        entry: dict = {"test": tests[name]}
        if isinstance(clf, LinearClassifier):
            w = clf.w
            entry.update(
                b=clf.b,
                non_robust_weight=float(np.abs(w[d:]).sum() / np.abs(w).sum()),
                population=_pair(mixture.linear_errors(w, clf.b)),
            )
        res["classifiers"][name] = entry
    res["increase"] = {
        model: increase_with_ci(tests[f"{model}-natural"], tests[f"{model}-robust"])
        for model in dict.fromkeys(n.split("-")[0] for n in fits)
    }
    return res


def format_features(res: dict, confidence: float) -> str:
    """The theory-vs-simulation table of D' (standard errors per class, and their increase).

    Args:
        res: :func:`run_features_setting`'s results.
        confidence: the intervals' level.

    Returns:
        The table as text.
    """
    p, th = res["params"], res["theory"]
    exact_inc = {
        c: th["robust"]["standard"][c] - th["natural"]["standard"][c] for c in ("-1", "+1")
    }
    lines = [
        f"== FRL A.3, D' (Eq. 19): d={p['d']}, m={p['m']}, eta={p['eta']:g}, gamma={p['gamma']:g}, "
        f"sigma={p['sigma']:g}, K={p['K']:.4g}, eps={p['eps']:g} ({res['norm']}) ==",
        "optimal linear classifiers (exact, numerical): v/u = "
        f"{th['natural']['v'] / th['natural']['u']:.4f} (natural), "
        f"{th['robust']['v'] / th['robust']['u']:.4f} (robust)",
        f"{'classifier':18s} {'cls':3s} {'std err: sim [' + f'{100 * confidence:g}% CI' + ']':30s} "
        f"{'fit':>7s} {'exact':>7s}  {'non-robust |w| share':>20s}",
    ]
    for name, e in res["classifiers"].items():
        kind = name.split("-")[1]
        for c in ("-1", "+1"):
            t = e["test"][c]["standard"]
            fit = f"{e['population'][c]:7.4f}" if "population" in e else f"{'-':>7s}"
            share = f"{e['non_robust_weight']:20.3f}" if "population" in e and c == "-1" else ""
            lines.append(
                f"{name if c == '-1' else '':18s} {c:3s} "
                f"{t['value']:.4f} [{t['ci_low']:.4f},{t['ci_high']:.4f}]{'':7s} {fit} "
                f"{th[kind]['standard'][c]:7.4f}  {share}"
            )
    lines.append("Theorem 3 (Eq. 20): increase of the standard error, robust minus natural")
    for model, inc in res["increase"].items():
        cells = [
            f"{c}: {inc[c]['value']:+.4f} [{inc[c]['ci_low']:+.4f},{inc[c]['ci_high']:+.4f}]"
            for c in ("-1", "+1")
        ]
        exact = f"exact: -1 {exact_inc['-1']:+.4f}, +1 {exact_inc['+1']:+.4f}"
        lines.append(f"{model:18s} {cells[0]}  {cells[1]}   {exact}")
    lines.append(
        "(sim: fresh test sample; fit: exact errors of the fitted linear model; exact: the optimal "
        "linear classifier of theory.features)"
    )
    if "mlp" in res["increase"]:
        lines.append(
            "(mlp: not linear; it can also use the spread of x, K times wider for class +1 in all "
            "d + m coordinates, so the linear theory does not bound its errors)"
        )
    return "\n".join(lines)


#: The D' of ``python -m sim.gaussian_demo``: few robust, many non-robust features; both classes'
#: standard errors rise under l_inf adversarial training, class +1's by far more (Eq. 20).
DEMO_SETTING = {"d": 1, "m": 50, "eta": 1.0, "gamma": 0.3, "sigma": 1.0, "K": 2.0, "eps": 0.5}


def run_demo_features(args) -> dict:
    """The D' part of ``sim.gaussian_demo`` at sizes capped so it adds seconds, not minutes.

    Args:
        args: ``sim.gaussian_demo``'s parsed options.

    Returns:
        :func:`run_features_setting`'s results for the demo's D' setting.
    """
    sizes = {
        "n_proj": min(args.n_proj, 50_000),
        "n_train": min(args.n_train, 5_000),
        "n_test": min(args.n_test, 100_000),
        "mlp_train": min(args.mlp_train, 500),
        "mlp_test": min(args.mlp_test, 10_000),
        "mlp_epochs": min(args.mlp_epochs, 100),
        "pgd_steps": args.pgd_steps,
    }
    parts = ("erm", "logistic") + (("mlp",) if "mlp" in args.parts else ())
    return run_features_setting(
        DEMO_SETTING, norm=args.norm, sizes=sizes, seed=args.seed, confidence=args.confidence,
        parts=parts,
    )  # fmt: skip
