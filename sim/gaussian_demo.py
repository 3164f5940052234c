"""FRL §3 on the Gaussian mixture: theory vs simulation, class by class, natural vs robust training;
robust-fairness mitigations (FRL, FAAL) on the toy; FAAL Theorem 1 by simulation.

    python -m sim.gaussian_demo                 # FRL Figure 2 setting + a high-dimensional one
    python -m sim.gaussian_demo --quick         # seconds-long smoke run
    python -m sim.gaussian_demo --d 50 --eta 0.3 --K 3 --eps 0.1 --parts intercept mitigation

Writes ``results.json`` and PNG figures to ``--out`` (default ``runs/gaussian_demo-<timestamp>``).

results.json (``version`` 1):

- ``config``: the parsed options; ``wall_time_s``; ``figures``: file names written.
- ``settings.<name>`` (``fig2``, ``highdim`` or ``custom``):
  ``mixture`` {d, eta, sigma, K}, ``eps``, ``norm``;
  ``theory`` {b_nat, b_rob, natural, robust}: class errors of the optimal linear classifiers;
  ``classifiers.<model>-<natural|robust>`` (model: intercept, logistic, mlp):
  ``test.<-1|+1>.<standard|robust|boundary>`` = {value, ci_low, ci_high}, ``theory_optimal``,
  and for linear models ``b``, ``w_sum``, ``w_l2``, ``diagonal_crossing``, ``population``
  (exact class errors of the fitted model);
  ``mitigation.<robust|frl-rw|frl-rm|frl-rwrm|faal>``: ``b``, ``test``, ``test_summary`` and
  ``population`` (class errors plus worst_robust, average_robust), method extras.
- ``coverage``: {p, losses, rows: [{n, tau, C, trials, coverage, event_frequency, bound,
  chi2_event_probability, uncovered_in_event, zero_count_trials}]}.
- ``features`` (FRL A.3, D' of Eq. 19; ``sim.features``): ``params``, ``norm``, ``theory`` (exact
  optimal natural / robust linear classifiers: u, v, b, standard), ``classifiers.<erm|logistic|mlp>-
  <natural|robust>`` (``test``; linear: ``b``, ``non_robust_weight``, ``population``) and
  ``increase.<model>.<-1|+1>`` (robust minus natural standard error, with a 95% interval).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from deep.runtime import (
    CLIParser,
    DefaultsHelpFormatter,
    all_or_nothing,
    budget_value,
    check_output_dir,
    exit_on_file_error,
    exit_on_interrupt,
)
from sim.classifiers import (
    LinearClassifier,
    fit_intercept_erm,
    fit_logistic_natural,
    fit_logistic_robust,
)
from sim.coverage import simulate_dro_coverage
from sim.data import sample_mixture, sample_projections
from sim.evaluation import (
    classwise_errors,
    count_errors,
    evaluate_many_on_mixture,
    linear_population_errors,
)
from sim.mitigation import FRLSettings, run_mitigations
from theory.dro import tau_for_coverage
from theory.frl import FRL_RULES
from theory.gaussian import Mixture

__all__ = ["main", "build_parser", "PARTS", "SETTINGS", "RESULTS_VERSION"]

RESULTS_VERSION = 1
PARTS = ("intercept", "logistic", "mlp", "mitigation", "coverage", "features")
SETTINGS = {
    # FRL Figure 2: theta = (2, 2), sigma_{-1}^2 = 1, sigma_{+1}^2 = 2 (K = sqrt 2), eps = 0.5
    "fig2": {"d": 2, "eta": 2.0, "sigma": 1.0, "K": math.sqrt(2.0), "eps": 0.5},
    # high-dimensional: heavy overlap, a large class gap after robust training
    "highdim": {"d": 100, "eta": 0.2, "sigma": 1.0, "K": 2.0, "eps": 0.1},
}
COVERAGE_P = (0.5, 0.3, 0.2)
COVERAGE_LOSSES = (0.2, 0.5, 0.9)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


#: ``--quick``: the sizes of a seconds-long smoke run (options given explicitly win).
QUICK_SIZES = dict(
    n_train=2_000, n_proj=20_000, n_mitigation=5_000, n_test=20_000, mlp_train=400,
    mlp_test=5_000, mlp_epochs=30, pgd_steps=5, coverage_trials=200,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(
        prog="python -m sim.gaussian_demo",
        description=(
            "FRL's Gaussian mixture (FRL §3): class-wise standard/robust/boundary errors of "
            "natural and robust classifiers, theory vs simulation; FRL/FAAL mitigations; "
            "FAAL Theorem 1."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    g = p.add_argument_group(
        "mixture (any of these runs one custom setting: the values given, the rest from the "
        "one --settings named, else fig2)"
    )
    g.add_argument("--d", type=int, default=None, help="dimension (fig2: 2)")
    g.add_argument("--eta", type=budget_value, default=None, help="theta = (eta,...,eta) (fig2: 2)")
    g.add_argument("--sigma", type=budget_value, default=None, help="std of class -1 (fig2: 1)")
    g.add_argument(
        "--K", type=float, default=None, help="sigma_{+1}/sigma_{-1} >= 1 (fig2: sqrt 2)"
    )
    g.add_argument(
        "--eps", type=budget_value, default=None, help="attack budget, 0 <= eps < eta (fig2: 0.5)"
    )
    p.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model")
    p.add_argument(
        "--settings",
        nargs="+",
        choices=tuple(SETTINGS),
        default=list(SETTINGS),
        help="built-in settings to run; with a mixture option, the one setting it modifies",
    )
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run")
    p.add_argument(
        "--n-train",
        type=int,
        default=20_000,
        help="training points for logistic regression (the MLP uses the first --mlp-train)",
    )
    p.add_argument(
        "--n-proj",
        type=int,
        default=1_000_000,
        help="training points for the w = 1 intercept ERM (drawn as projections 1.x)",
    )
    p.add_argument(
        "--n-mitigation",
        type=int,
        default=200_000,
        help="training and, again, validation points for the mitigations (projections)",
    )
    p.add_argument("--n-test", type=int, default=200_000, help="fresh test points per setting")
    p.add_argument("--mlp-train", type=int, default=2_000, help="training points for the MLP")
    p.add_argument(
        "--mlp-test",
        type=int,
        default=50_000,
        help="test points (of --n-test) attacked with PGD for the MLP",
    )
    p.add_argument("--mlp-epochs", type=int, default=200, help="full-batch Adam steps for the MLP")
    p.add_argument(
        "--pgd-steps",
        type=int,
        default=10,
        help="PGD steps in MLP training (the test attack uses twice as many)",
    )
    p.add_argument("--tau", type=float, default=0.5, help="FAAL KL budget tau")
    p.add_argument(
        "--frl-rule",
        choices=FRL_RULES,
        default="official",
        help="FRL mitigations' multiplier update: the reference code's or Algorithm 1 / Eq. 11 "
        "as printed (theory.frl)",
    )
    p.add_argument(
        "--coverage-trials", type=int, default=2_000, help="Theorem 1 Monte Carlo trials"
    )
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the CIs")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same numbers)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a seconds-long smoke run; size options given explicitly are kept",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/gaussian_demo-YYYYmmdd-HHMMSS)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="when stderr is not a terminal: seconds between plain progress lines",
    )
    return p


def _parse(argv) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_output_dir(parser, args.out if args.out is not None else Path("runs"))
    if args.quick:  # quick sizes replace the defaults; sizes given explicitly are kept
        parser.set_defaults(**QUICK_SIZES)
        args = parser.parse_args(argv)
    for name in ("n_train", "n_proj", "n_mitigation", "n_test", "mlp_train", "mlp_test"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be >= 2, got {getattr(args, name)}")
    for name in ("mlp_epochs", "pgd_steps", "coverage_trials"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.progress_interval >= 0:
        parser.error(f"--progress-interval must be >= 0 seconds, got {args.progress_interval}")
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence must be in (0, 1), got {args.confidence}")
    if not (args.tau >= 0 and math.isfinite(args.tau)):
        parser.error(f"--tau must be a finite number >= 0, got {args.tau}")
    custom = {k: getattr(args, k) for k in ("d", "eta", "sigma", "K", "eps")}
    if any(v is not None for v in custom.values()):
        # the one setting named with --settings is the base (e.g. --settings highdim --K 3)
        base = dict(SETTINGS[args.settings[0] if len(args.settings) == 1 else "fig2"])
        base.update({k: v for k, v in custom.items() if v is not None})
        args.setting_params = {"custom": base}
    else:
        args.setting_params = {name: dict(SETTINGS[name]) for name in args.settings}
    for params in args.setting_params.values():
        _validate_setting(parser, params, args.norm)
    return args


def _validate_setting(parser, s: dict, norm: str) -> None:
    if s["d"] < 1:
        parser.error(f"--d must be an integer >= 1, got {s['d']}")
    for name in ("eta", "sigma"):
        if not (s[name] > 0 and math.isfinite(s[name])):
            parser.error(f"--{name} must be a finite number > 0, got {s[name]}")
    if not (s["K"] >= 1 and math.isfinite(s["K"])):
        parser.error(f"--K must be a finite number >= 1, got {s['K']}")
    limit = s["eta"] if norm == "linf" else math.sqrt(s["d"]) * s["eta"]
    if not (0 <= s["eps"] < limit):
        what = "eta" if norm == "linf" else "sqrt(d) * eta"
        parser.error(f"--eps must satisfy 0 <= eps < {what} = {limit:g} ({norm}), got {s['eps']}")


# ---------------------------------------------------------------------------------------------
# the experiments
# ---------------------------------------------------------------------------------------------


def _errors_dict(std, rob):
    return {
        cls: {"standard": float(a), "robust": float(r), "boundary": float(r - a)}
        for cls, a, r in (("-1", std[0], rob[0]), ("+1", std[1], rob[1]))
    }


def _theory(mixture: Mixture, eps: float, norm: str) -> dict:
    b_nat = float(mixture.natural_intercept())
    b_rob = float(mixture.robust_intercept(eps, norm))
    out = {"b_nat": b_nat, "b_rob": b_rob}
    for key, b in (("natural", b_nat), ("robust", b_rob)):
        out[key] = _errors_dict(mixture.standard_errors(b), mixture.robust_errors(b, eps, norm))
    return out


def _linear_entry(clf: LinearClassifier, mixture, eps, norm) -> dict:
    return {
        "b": clf.b,
        "w_sum": float(clf.w.sum()),
        "w_l2": float(np.linalg.norm(clf.w)),
        "diagonal_crossing": clf.diagonal_crossing(),
        "population": linear_population_errors(mixture, clf.w, clf.b, eps, norm),
    }


def _worst_avg(errs: dict) -> dict:
    rob = [errs["-1"]["robust"], errs["+1"]["robust"]]
    return {"worst_robust": max(rob), "average_robust": 0.5 * sum(rob)}


def run_setting(name, params, args, progress) -> tuple[dict, dict]:
    """All classifier and mitigation parts for one mixture. Returns (results, models for
    figures)."""
    d, eps, norm = int(params["d"]), float(params["eps"]), args.norm
    mixture = Mixture(d, params["eta"], params["sigma"], params["K"])
    k = list(SETTINGS).index(name) if name in SETTINGS else len(SETTINGS)
    rng_train = np.random.default_rng([args.seed, k, 0])
    x, y = sample_mixture(mixture, args.n_train, rng_train)
    theory = _theory(mixture, eps, norm)
    res: dict = {
        "mixture": {"d": d, "eta": params["eta"], "sigma": params["sigma"], "K": params["K"]},
        "eps": eps,
        "norm": norm,
        "theory": theory,
        "classifiers": {},
    }
    models: dict = {"x": x, "y": y}
    fits: dict = {}
    if "intercept" in args.parts:
        s_proj, y_proj = sample_projections(mixture, args.n_proj, rng_train)
        for kind, e in (("natural", 0.0), ("robust", eps)):
            fits[f"intercept-{kind}"] = fit_intercept_erm(s_proj, y_proj, d=d, eps=e, norm=norm)
        progress.update(1)
    if "logistic" in args.parts:
        nat = fit_logistic_natural(x, y)
        fits["logistic-natural"] = nat
        fits["logistic-robust"] = fit_logistic_robust(x, y, eps=eps, norm=norm, init=nat)
        progress.update(1)
    if "mlp" in args.parts:
        from sim.mlp import fit_mlp

        xm, ym = x[: args.mlp_train], y[: args.mlp_train]
        for kind, e in (("natural", 0.0), ("robust", eps)):
            fits[f"mlp-{kind}"] = fit_mlp(
                xm,
                ym,
                eps=e,
                norm=norm,
                epochs=args.mlp_epochs,
                pgd_steps=args.pgd_steps,
                seed=args.seed,
            )
        progress.update(1)
    rng_test = np.random.default_rng([args.seed, k, 1])  # the same test points for every model
    mlp_names = [n for n in fits if n.startswith("mlp")]
    tests = evaluate_many_on_mixture(
        fits,
        mixture,
        args.n_test,
        rng_test,
        eps=eps,
        norm=norm,
        confidence=args.confidence,
        robust_kwargs={n: {"steps": 2 * args.pgd_steps, "seed": args.seed} for n in mlp_names},
        max_points={n: args.mlp_test for n in mlp_names},
    )
    for clf_name, clf in fits.items():
        kind = clf_name.split("-")[1]
        entry = _linear_entry(clf, mixture, eps, norm) if isinstance(clf, LinearClassifier) else {}
        entry["test"] = tests[clf_name]
        entry["theory_optimal"] = theory[kind]
        res["classifiers"][clf_name] = entry
    models["fits"] = fits
    if "mitigation" in args.parts:
        res["mitigation"] = run_mitigation_part(mixture, d, eps, norm, args, k)
        progress.update(1)
    return res, models


def run_mitigation_part(mixture, d, eps, norm, args, k) -> dict:
    rng = np.random.default_rng([args.seed, k, 2])
    s_tr, y_tr = sample_projections(mixture, args.n_mitigation, rng)
    s_val, y_val = sample_projections(mixture, args.n_mitigation, rng)
    fitted = run_mitigations(
        s_tr,
        y_tr,
        s_val,
        y_val,
        d=d,
        eps=eps,
        tau=args.tau,
        norm=norm,
        settings=FRLSettings(rule=args.frl_rule),
    )
    shift = d * eps if norm == "linf" else math.sqrt(d) * eps
    out = {}
    for method, info in fitted.items():
        b = info["b"]
        rng_test = np.random.default_rng([args.seed, k, 3])
        s_te, y_te = sample_projections(mixture, args.n_test, rng_test)
        margin = y_te * (s_te + b)
        counts = count_errors(y_te, margin > 0, margin - shift > 0)
        test = classwise_errors(counts, args.confidence)
        pop = _errors_dict(mixture.standard_errors(b), mixture.robust_errors(b, eps, norm))
        out[method] = {
            **info,
            "test": test,
            "test_summary": _worst_avg(test_values(test)),
            "population": {**pop, **_worst_avg(pop)},
        }
    return out


def test_values(test: dict) -> dict:
    """Strip CIs: ``{"-1"|"+1": {"standard", "robust", "boundary"}}`` of point estimates."""
    return {c: {m: test[c][m]["value"] for m in ("standard", "robust", "boundary")} for c in test}


def run_coverage(args) -> dict:
    """FAAL Theorem 1 Monte Carlo on a fixed 3-class problem, over n and tau."""
    rng = np.random.default_rng([args.seed, 99])
    p, losses = np.array(COVERAGE_P), np.array(COVERAGE_LOSSES)
    rows = []
    for n in (50, 500):
        tau_hi = tau_for_coverage(0.95, n, p.size)
        taus = sorted({*np.geomspace(1e-3, tau_hi, 8).tolist(), tau_for_coverage(0.5, n, p.size)})
        for tau in taus:
            rows.append(simulate_dro_coverage(p, losses, n, tau, args.coverage_trials, rng))
    return {"p": list(COVERAGE_P), "losses": list(COVERAGE_LOSSES), "rows": rows}


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def _ci(entry: dict) -> str:
    return f"{entry['value']:.4f} [{entry['ci_low']:.4f},{entry['ci_high']:.4f}]"


def format_setting(name: str, res: dict, confidence: float) -> str:
    m, th = res["mixture"], res["theory"]
    lines = [
        f"== {name}: d={m['d']}, eta={m['eta']:g}, sigma={m['sigma']:g}, K={m['K']:.4g}, "
        f"eps={res['eps']:g} ({res['norm']}) ==",
        f"optimal intercepts: b_nat = {th['b_nat']:.4f} (FRL Eq. 5), "
        f"b_rob = {th['b_rob']:.4f} (Thm 2)",
    ]
    pct = f"{100 * confidence:g}% CI"
    if res["classifiers"]:
        lines.append(
            f"{'classifier':18s} {'cls':3s} {'b':>8s}  {'standard: sim [' + pct + ']':28s} "
            f"{'fit':>6s} {'theory':>6s}  {'robust: sim [' + pct + ']':28s} {'fit':>6s} "
            f"{'theory':>6s}  {'bndy sim':>8s} {'theory':>6s}"
        )
        for clf_name, e in res["classifiers"].items():
            for cls in ("-1", "+1"):
                t, opt = e["test"][cls], e["theory_optimal"][cls]
                fit = e.get("population", {}).get(cls)
                fs = f"{fit['standard']:6.4f}" if fit else f"{'-':>6s}"
                fr = f"{fit['robust']:6.4f}" if fit else f"{'-':>6s}"
                b = f"{e['b']:8.3f}" if "b" in e and cls == "-1" else " " * 8
                lines.append(
                    f"{clf_name if cls == '-1' else '':18s} {cls:3s} {b}  "
                    f"{_ci(t['standard']):28s} {fs} {opt['standard']:6.4f}  "
                    f"{_ci(t['robust']):28s} {fr} {opt['robust']:6.4f}  "
                    f"{t['boundary']['value']:8.4f} {opt['boundary']:6.4f}"
                )
        lines.append(
            "(sim: fresh test sample; fit: exact errors of the fitted linear model; theory: the "
            "optimal linear classifier, natural for *-natural, robust for *-robust)"
        )
    if "mitigation" in res:
        lines.append("")
        lines.append(
            f"{'mitigation':10s} {'b':>8s}  {'rob err -1: sim [' + pct + ']':30s} "
            f"{'rob err +1: sim [' + pct + ']':30s} {'worst':>7s} {'average':>7s}  "
            f"{'worst':>7s} {'average':>7s}"
        )
        lines.append(
            f"{'':10s} {'':8s}  {'':30s} {'':30s} {'(sim)':>7s} {'(sim)':>7s}  "
            f"{'(exact)':>7s} {'(exact)':>7s}"
        )
        for method, e in res["mitigation"].items():
            lines.append(
                f"{method:10s} {e['b']:8.3f}  {_ci(e['test']['-1']['robust']):30s} "
                f"{_ci(e['test']['+1']['robust']):30s} {e['test_summary']['worst_robust']:7.4f} "
                f"{e['test_summary']['average_robust']:7.4f}  "
                f"{e['population']['worst_robust']:7.4f} {e['population']['average_robust']:7.4f}"
            )
    return "\n".join(lines)


def format_coverage(cov: dict) -> str:
    lines = [
        f"== FAAL Theorem 1: P = {cov['p']}, losses = {cov['losses']} ==",
        f"{'n':>5s} {'tau':>8s} {'coverage':>9s} {'KL<=tau':>8s} {'chi2 approx':>11s} "
        f"{'bound':>7s} {'zero-count':>10s}",
    ]
    for r in cov["rows"]:
        lines.append(
            f"{r['n']:5d} {r['tau']:8.4f} {r['coverage']:9.4f} {r['event_frequency']:8.4f} "
            f"{r['chi2_event_probability']:11.4f} {r['bound']:7.4f} {r['zero_count_trials']:10d}"
        )
    lines.append(
        "(coverage: fraction of trials where the KL-DRO value >= E_P[loss]; must be >= bound)"
    )
    return "\n".join(lines)


def _figures(name, res, models, out: Path) -> list[str]:
    from sim import plots

    written = []
    fits = models["fits"]
    if res["mixture"]["d"] == 2:
        panels = {
            title: {"natural": fits[f"{key}-natural"], "robust": fits[f"{key}-robust"]}
            for key, title in (("logistic", "logistic regression"), ("mlp", "MLP"))
            if f"{key}-natural" in fits
        }
        if panels:
            title = f"FRL Fig. 2: eps = {res['eps']:g}; boundary moves toward the harder class +1"
            optimal = {"natural": res["theory"]["b_nat"], "robust": res["theory"]["b_rob"]}
            path = plots.plot_boundaries(
                models["x"],
                models["y"],
                panels,
                out / f"{name}_boundaries.png",
                title=title,
                optimal=optimal,
            )
            written.append(path.name)
    if res["classifiers"]:
        written.append(plots.plot_class_errors(res, out / f"{name}_class_errors.png").name)
    if "mitigation" in res:
        written.append(plots.plot_mitigations(res, out / f"{name}_mitigations.png").name)
    return written


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def main(argv=None) -> int:
    """CLI entry point; returns 0. Ctrl-C exits with status 130 and leaves no partial folder."""
    with exit_on_interrupt("gaussian demo", note="; nothing was written"):
        return _main(argv)


def _main(argv) -> int:
    args = _parse(argv)
    out = args.out or Path("runs") / f"gaussian_demo-{datetime.now():%Y%m%d-%H%M%S}"
    with all_or_nothing(out):  # results.json and every figure, or none of them
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    from deep.progress import Progress

    out.mkdir(parents=True, exist_ok=True)
    model_parts = [p for p in ("intercept", "logistic", "mlp", "mitigation") if p in args.parts]
    total = len(args.setting_params) * len(model_parts) + ("coverage" in args.parts)
    total += "features" in args.parts
    progress = Progress(
        total, "gaussian demo", enabled=not args.quiet, interval=args.progress_interval, unit="part"
    )
    start = time.perf_counter()
    results: dict = {
        "version": RESULTS_VERSION,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "settings": {},
        "figures": [],
    }
    reports = []
    for name, params in args.setting_params.items():
        res, models = run_setting(name, params, args, progress)
        results["settings"][name] = res
        results["figures"] += _figures(name, res, models, out)
        reports.append(format_setting(name, res, args.confidence))
    if "features" in args.parts:  # FRL A.3: D' beside D
        from sim.features import format_features, run_demo_features

        results["features"] = run_demo_features(args)
        progress.update(1)
        reports.append(format_features(results["features"], args.confidence))
    if "coverage" in args.parts:
        results["coverage"] = run_coverage(args)
        progress.update(1)
        from sim.plots import plot_coverage

        results["figures"].append(plot_coverage(results["coverage"], out / "coverage.png").name)
        reports.append(format_coverage(results["coverage"]))
    progress.close()
    results["wall_time_s"] = time.perf_counter() - start
    with open(out / "results.json", "w") as fh:
        json.dump(results, fh, indent=1, default=_json_default)
    print("\n\n".join(reports))
    print(f"\nwrote {out / 'results.json'} and {len(results['figures'])} figures to {out}")
    return 0


if __name__ == "__main__":
    with exit_on_file_error("python -m sim.gaussian_demo"):
        code = main()
    raise SystemExit(code)
