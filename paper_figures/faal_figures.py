"""FAAL supplement Figures 1-10: class-wise and average / worst-class accuracy, before and after.

One script per figure (``python -m paper_figures.faal_figN``), all built from cached ``deep.train``
runs (``paper_figures.runs``) and their ``final.json`` / ``class_weights.csv``:

* Fig. 1:    FAAL_AT fine-tuning of a PGD-AT model with the cross-entropy vs the CW margin as the
             class statistic of the intermediate maximisation (supp. C.2; ``deep.train
             --faal-statistic ce|margin``): class-wise robust accuracy, and average and
             worst-class clean / robust accuracy.
* Fig. 2:    fine-tuning a PGD-AT model with FAAL_AT vs FAAL_TRADES (different adversaries):
             average and worst-class clean / PGD-20 / CW-20 / AA accuracy.
* Fig. 3:    class-wise robust accuracy of models trained from scratch (PGD-AT, TRADES, FAAL).
* Fig. 4:    tau sweep 0 -> 1 of FAAL_AT fine-tuning a TRADES model: average and worst-class
             clean and CW-100 accuracy, as the paper (deep.evaluate on each run's checkpoint).
* Fig. 5:    class-wise clean and robust accuracy of a PGD-AT model before (a) and after (b)
             FAAL_AT fine-tuning.
* Fig. 6:    FAAL's class weights for some batches of that fine-tuning, and their average.
* Figs 7-10: class-wise robust accuracy after fine-tuning PGD-AT / TRADES / MART / TRADES-AWP
             models with FAAL on each adversary (one panel per base model).

"Robust" is AutoAttack when evaluated (``--autoattack``; default on CIFAR), else CW-20 (labelled).
Bars and lines are means over seeds with ± one standard deviation.

    python -m paper_figures.faal_fig5 --quick
    python -m paper_figures.faal_fig7_10 --dataset cifar10 --data-dir DIR --device cuda
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from paper_figures.aggregate import (
    RESULT_NAMES,
    accuracy,
    over_seeds,
    per_class_accuracy,
    per_class_over_seeds,
)
from paper_figures.common import Profile, build_parser, make_logger, parse_args, write_csv
from paper_figures.faal import FAAL_METHODS, accuracy_keys
from paper_figures.runs import ensure_evaluated, ensure_run, read_class_weight_steps, read_final
from paper_figures.style import (
    METRIC_COLORS,
    class_ticks,
    method_color,
    method_label,
    new_figure,
    save_figure,
)

__all__ = ["FIGURES", "main"]

FIGURES = {
    "1": "CE vs CW margin as FAAL's class statistic, fine-tuning a PGD-AT model",
    "2": "FAAL_AT vs FAAL_TRADES fine-tuning of a PGD-AT model",
    "3": "class-wise robust accuracy, training from scratch",
    "4": "tau sweep of FAAL_AT fine-tuning a TRADES model",
    "5": "class-wise accuracy before / after FAAL_AT fine-tuning",
    "6": "FAAL class weights per batch and their average",
    "7_10": "class-wise robust accuracy after fine-tuning each base model with FAAL",
}


class _Context:
    """Parsed options, the profile, and a cached run -> final.json reader."""

    def __init__(self, args):
        self.args = args
        self.profile: Profile = args.profile
        self.log = make_logger(args.quiet)

    def run(self, spec):
        return ensure_run(spec, self.args.runs_dir, device=self.args.device, log=self.log)

    def finals(self, specs):
        return [read_final(self.run(s)) for s in specs]

    def with_results(self, run_dir, attacks) -> dict:
        """The run's final.json with ``attacks`` added (deep.evaluate on the same checkpoint,
        test images and seed; cached in the run folder)."""
        final = read_final(run_dir)
        extra = ensure_evaluated(run_dir, attacks, data_dir=self.args.data_dir,
                                 device=self.args.device, log=self.log)  # fmt: skip
        return {**final, "results": {**final["results"], **extra["results"]}}

    def robust_name(self) -> str:
        return RESULT_NAMES[self.profile.robust_key] + (
            "" if self.profile.autoattack else " (AutoAttack off)"
        )


def _grouped_class_bars(ax, classes, series, *, ylabel):
    """series: list of (label, color, mean (C,), std (C,) or None)."""
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    for i, (label, color, mean, std) in enumerate(series):
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width, mean, width, yerr=std, color=color,
            label=f"{label} (avg {mean.mean():.1f}, worst {mean.min():.1f})", capsize=1.5,
        )  # fmt: skip
    class_ticks(ax, classes)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)


def _std_or_none(std, seeds):
    return std if len(seeds) > 1 else None


# --------------------------------------------------------------------------------------------
#: FAAL supp. Fig. 1's runs: (method key, label, colour, extra deep.train options). The CW margin
#: is deep.train's default, so that run is the one Figs 2, 5 and 6 fine-tune as well.
FIG1_VARIANTS = (
    ("faal-at-ce", "+ FAAL_AT, CE statistic", "#9467bd", ("--faal-statistic", "ce")),
    ("faal-at", "+ FAAL_AT, CW margin", method_color("faal-at"), ()),
)


def figure1(ctx: _Context, stem: str):
    p = ctx.profile
    bases = [p.scratch("pgd-at", s) for s in p.seeds]
    entries = [("pgd-at", "PGD-AT model", method_color("pgd-at"), bases)]
    for key, label, color, extra in FIG1_VARIANTS:
        specs = [p.faal_finetune(b, "faal-at", s, *extra, name=key) for b, s in zip(bases, p.seeds)]
        entries.append((key, label, color, specs))
    finals = {key: ctx.finals(specs) for key, _, _, specs in entries}
    robust = p.robust_key
    fig = new_figure(13.0, 4.0)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.6, 1.0])
    rows = []
    # (a) class-wise robust accuracy
    ax = fig.add_subplot(grid[0, 0])
    series = []
    classes = finals["pgd-at"][0]["classes"]
    for key, label, color, _ in entries:
        mean, std = per_class_over_seeds(finals[key], lambda f: per_class_accuracy(f, robust))
        series.append((label, color, mean, _std_or_none(std, p.seeds)))
        rows += [(key, label, robust, name, c, float(mean[c]), float(std[c]), len(finals[key]))
                 for c, name in enumerate(classes)]  # fmt: skip
    _grouped_class_bars(ax, classes, series, ylabel=f"{ctx.robust_name()} accuracy (%)")
    ax.set_title(f"(a) class-wise {ctx.robust_name()} accuracy", fontsize=9)
    # (b) average and worst-class clean / robust accuracy
    ax = fig.add_subplot(grid[0, 1])
    groups = [(r, w) for r in ("clean", robust) for w in ("average", "worst")]
    x = np.arange(len(groups))
    width = 0.8 / len(entries)
    for i, (key, label, color, _) in enumerate(entries):
        stats = [over_seeds(finals[key], lambda f, r=r, w=w: accuracy(f, r, w)) for r, w in groups]
        rows += [(key, label, r, w, "", st[0], st[1], st[2]) for (r, w), st in zip(groups, stats)]
        ax.bar(x + (i - (len(entries) - 1) / 2) * width, [st[0] for st in stats], width,
               yerr=_std_or_none(np.array([st[1] for st in stats]), p.seeds), color=color,
               label=label, capsize=2)  # fmt: skip
    ax.set_xticks(x)
    ax.set_xticklabels([f"{RESULT_NAMES[r]}\n{w}" for r, w in groups], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_title("(b) average and worst-class accuracy", fontsize=9)
    fig.suptitle(
        f"FAAL supp. Fig. 1: CE vs CW margin in the intermediate maximisation (FAAL_AT "
        f"fine-tuning, tau {p.faal_tau:g}) — {p.describe()}",
        fontsize=10,
    )
    header = ["method", "label", "result", "scope", "class_index", "mean_pct", "std_pct", "seeds"]
    return fig, header, rows


def figure2(ctx: _Context, stem: str):
    p = ctx.profile
    methods = ("pgd-at", "faal-at", "faal-trades")
    specs = {m: [] for m in methods}
    for s in p.seeds:
        base = p.scratch("pgd-at", s)
        specs["pgd-at"].append(base)
        for m in methods[1:]:
            specs[m].append(p.faal_finetune(base, m, s))
    finals = {m: ctx.finals(specs[m]) for m in methods}
    keys = accuracy_keys(p)
    rows = []
    fig = new_figure(10.0, 3.8)
    for k, which in enumerate(("average", "worst")):
        ax = fig.add_subplot(1, 2, k + 1)
        x = np.arange(len(keys))
        for i, m in enumerate(methods):
            stats = [over_seeds(finals[m], lambda f, r=r, w=which: accuracy(f, r, w)) for r in keys]
            mean = np.array([st[0] for st in stats])
            std = np.array([st[1] for st in stats])
            rows += [(m, r, which, st[0], st[1], st[2]) for r, st in zip(keys, stats)]
            label = method_label(m) if m == "pgd-at" else f"PGD-AT + {method_label(m)}"
            ax.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=_std_or_none(std, p.seeds),
                   color=method_color(m), label=label, capsize=2)  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels([RESULT_NAMES[r] for r in keys])
        ax.set_ylabel(f"{which} {'class ' if which == 'worst' else ''}accuracy (%)")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"{which}{'-class' if which == 'worst' else ''} test accuracy", fontsize=9)
    fig.suptitle(f"FAAL supp. Fig. 2: {FIGURES['2']} — {p.describe()}", fontsize=10)
    header = ["method", "result", "statistic", "mean_pct", "std_pct", "seeds"]
    return fig, header, rows


def _classwise_figure(ctx, groups, stem, title, *, panels_per_row=2):
    """groups: list of (panel title, [(method key, label, specs)]) -> class-wise robust bars."""
    p = ctx.profile
    key = p.robust_key
    n = len(groups)
    cols = min(n, panels_per_row)
    nrows = (n + cols - 1) // cols
    fig = new_figure(6.5 * cols, 3.9 * nrows)
    rows = []
    for g, (panel, entries) in enumerate(groups):
        ax = fig.add_subplot(nrows, cols, g + 1)
        series = []
        classes = None
        for method, label, specs in entries:
            finals = ctx.finals(specs)
            classes = finals[0]["classes"]
            mean, std = per_class_over_seeds(finals, lambda f: per_class_accuracy(f, key))
            series.append((label, method_color(method), mean, _std_or_none(std, p.seeds)))
            rows += [(panel, method, label, c, name, float(mean[c]), float(std[c]), len(finals))
                     for c, name in enumerate(classes)]  # fmt: skip
        _grouped_class_bars(ax, classes, series, ylabel=f"{ctx.robust_name()} accuracy (%)")
        ax.set_title(panel, fontsize=9)
    fig.suptitle(f"{title} — {p.describe()}", fontsize=10)
    header = ["panel", "method", "label", "class_index", "class", "mean_pct", "std_pct", "seeds"]
    return fig, header, rows


def figure3(ctx: _Context, stem: str):
    p = ctx.profile
    tau = ("--tau", repr(p.faal_tau))
    entries = []
    for method in ("pgd-at", "trades", "faal-at", "faal-trades", "faal-trades-awp"):
        extra = tau if method.startswith("faal") else ()
        entries.append(
            (method, method_label(method), [p.scratch(method, s, *extra) for s in p.seeds])
        )
    title = f"FAAL supp. Fig. 3: class-wise {ctx.robust_name()} accuracy, trained from scratch"
    return _classwise_figure(ctx, [("from scratch", entries)], stem, title, panels_per_row=1)


def figure7_10(ctx: _Context, stem: str):
    p = ctx.profile
    model = "wrn-34-10" if p.is_cifar else None
    groups = []
    for fig_no, base_key in zip((7, 8, 9, 10), ("pgd-at", "trades", "mart", "trades-awp")):
        bases = [p.scratch(base_key, s, model=model) for s in p.seeds]
        entries = [(base_key, method_label(base_key), bases)]
        for m in FAAL_METHODS:
            specs = [p.faal_finetune(b, m, s) for b, s in zip(bases, p.seeds)]
            entries.append((m, f"+ {method_label(m)}", specs))
        groups.append((f"Fig. {fig_no}: fine-tuning the {method_label(base_key)} model", entries))
    title = f"FAAL supp. Figs 7-10: class-wise {ctx.robust_name()} accuracy after FAAL fine-tuning"
    return _classwise_figure(ctx, groups, stem, title)


def figure5(ctx: _Context, stem: str):
    p = ctx.profile
    bases = [p.scratch("pgd-at", s) for s in p.seeds]
    tuned = [p.faal_finetune(b, "faal-at", s) for b, s in zip(bases, p.seeds)]
    fig = new_figure(13.0, 3.9)
    rows = []
    keys = ("clean", p.robust_key)
    for k, (panel, specs) in enumerate(
        (("(a) PGD-AT model (uniform class weights)", bases),
         ("(b) fine-tuned with FAAL_AT (DRO class weights)", tuned))
    ):  # fmt: skip
        finals = ctx.finals(specs)
        classes = finals[0]["classes"]
        series = []
        for key in keys:
            mean, std = per_class_over_seeds(finals, lambda f, r=key: per_class_accuracy(f, r))
            name = RESULT_NAMES[key] if key == "clean" else ctx.robust_name()
            series.append((name, METRIC_COLORS[key], mean, _std_or_none(std, p.seeds)))
            rows += [(panel, key, c, cname, float(mean[c]), float(std[c]), len(finals))
                     for c, cname in enumerate(classes)]  # fmt: skip
        ax = fig.add_subplot(1, 2, k + 1)
        _grouped_class_bars(ax, classes, series, ylabel="test accuracy (%)")
        ax.set_title(panel, fontsize=9)
    fig.suptitle(f"FAAL supp. Fig. 5: {FIGURES['5']} — {p.describe()}", fontsize=10)
    header = ["panel", "result", "class_index", "class", "mean_pct", "std_pct", "seeds"]
    return fig, header, rows


def figure4(ctx: _Context, stem: str):
    p = ctx.profile
    taus = (0.0, 0.5, 1.0) if p.quick else (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    robust = "cw100"  # the paper's attack for this figure
    rows = []
    curves = {}
    for tau in taus:
        specs = [p.faal_finetune(p.scratch("trades", s), "faal-at", s, tau=tau) for s in p.seeds]
        finals = [ctx.with_results(ctx.run(spec), ("cw100",)) for spec in specs]
        for key in ("clean", robust):
            for which in ("average", "worst"):
                st = over_seeds(finals, lambda f, r=key, w=which: accuracy(f, r, w))
                curves.setdefault((key, which), []).append(st)
                rows.append((tau, key, which, st[0], st[1], st[2]))
    fig = new_figure(10.0, 3.8)
    for k, key in enumerate(("clean", robust)):
        ax = fig.add_subplot(1, 2, k + 1)
        for which, style in (("average", "-o"), ("worst", "--s")):
            st = curves[(key, which)]
            mean = np.array([s[0] for s in st])
            std = np.array([s[1] for s in st])
            ax.errorbar(taus, mean, yerr=_std_or_none(std, p.seeds), fmt=style,
                        color=METRIC_COLORS[key], capsize=2,
                        label=f"{which}{' class' if which == 'worst' else ''}")  # fmt: skip
        ax.set_xlabel("tau (KL budget of the class weights)")
        ax.set_ylabel(f"{RESULT_NAMES[key]} accuracy (%)")
        ax.set_title(f"{RESULT_NAMES[key]} accuracy vs tau", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"FAAL supp. Fig. 4: {FIGURES['4']} (robust: CW-100, as the paper) — {p.describe()}",
        fontsize=10,
    )
    header = ["tau", "result", "statistic", "mean_pct", "std_pct", "seeds"]
    return fig, header, rows


def figure6(ctx: _Context, stem: str):
    p = ctx.profile
    seed = p.seeds[0]
    run_dir = ctx.run(p.faal_finetune(p.scratch("pgd-at", seed), "faal-at", seed))
    classes = read_final(run_dir)["classes"]
    epochs, weights = read_class_weight_steps(run_dir)
    w = np.asarray(weights, dtype=np.float64)
    n_steps, num_classes = w.shape
    picks = np.unique(np.linspace(0, n_steps - 1, min(5, n_steps)).round().astype(int))
    panels = [("uniform", np.full(num_classes, 1.0 / num_classes), "#ff7f0e")]
    panels += [(f"batch {i + 1} (epoch {epochs[i] + 1})", w[i], "#d62728") for i in picks]
    panels.append((f"average of {n_steps} batches", w.mean(axis=0), "#2ca02c"))
    fig = new_figure(min(2.1 * len(panels), 14.0), 5.2)
    grid = fig.add_gridspec(2, len(panels), height_ratios=[1.0, 1.1])
    top = max(float(w.max()), 1.0 / num_classes) * 1.1
    rows = []
    for k, (title, values, color) in enumerate(panels):
        ax = fig.add_subplot(grid[0, k])
        ax.bar(np.arange(num_classes), values, color=color)
        ax.axhline(1.0 / num_classes, color="black", linestyle=":", linewidth=0.8)
        class_ticks(ax, classes)
        ax.set_ylim(0, top)
        ax.set_title(title, fontsize=8)
        if k == 0:
            ax.set_ylabel("class weight w_c")
        rows += [(title, c, classes[c], float(values[c])) for c in range(num_classes)]
    ax = fig.add_subplot(grid[1, :])
    for c in range(num_classes):
        ax.plot(np.arange(1, n_steps + 1), w[:, c], linewidth=0.9, label=classes[c])
    ax.axhline(1.0 / num_classes, color="black", linestyle=":", linewidth=0.8, label="uniform")
    ax.set_xlabel("training step (batch)")
    ax.set_ylabel("class weight w_c")
    ax.legend(fontsize=6, ncol=min(num_classes + 1, 6), loc="upper right")
    ax.grid(alpha=0.3)
    fig.suptitle(
        f"FAAL supp. Fig. 6: class weights learned by FAAL_AT fine-tuning a PGD-AT model "
        f"(tau {p.faal_tau:g}) — {p.dataset}, seed {seed}",
        fontsize=10,
    )
    return fig, ["panel", "class_index", "class", "weight"], rows


_BUILDERS = {
    "1": figure1,
    "2": figure2,
    "3": figure3,
    "4": figure4,
    "5": figure5,
    "6": figure6,
    "7_10": figure7_10,
}


def main(argv: Sequence[str] | None = None, *, figure: str) -> int:
    """Build FAAL supp. Figure ``figure`` ("1", "2", "3", "4", "5", "6" or "7_10")."""
    if figure not in _BUILDERS:
        raise ValueError(f"figure must be one of {sorted(_BUILDERS)}, got {figure!r}")
    stem = f"faal_fig{figure}"
    parser = build_parser(stem, f"FAAL supplement Figure {figure}: {FIGURES[figure]}.")
    args = parse_args(parser, argv, multi_seed=figure != "6")
    fig, header, rows = _BUILDERS[figure](_Context(args), stem)
    png = save_figure(fig, args.out / f"{stem}.png", smoke_test=args.profile.smoke_test)
    csv_path = write_csv(args.out / f"{stem}.csv", header, rows)
    print(png)
    print(csv_path)
    return 0
