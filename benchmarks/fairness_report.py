"""Report of the robust-fairness benchmark: JSON, Markdown table and figures from the run records.

Reads only what ``fairness_benchmark.py`` stored per run (``final.json`` of ``deep.train`` on the
test set, ``deep.evaluate``'s AutoAttack ``final.json``), so every number comes from the package's
evaluator. Statistics over seeds: mean and sample standard deviation; differences between rows are
paired by seed (same seed = same validation split, same initialisation of the base, same batches),
each with its 95 % confidence interval and two-sided p-value from a paired t-test
(``scipy.stats.ttest_rel``, df = n - 1) and its Holm-adjusted p-value within its family of
comparisons (``statsmodels``' ``multipletests``), for each metric and statistic separately:

* ``fine-tuning``: each fine-tuning against its control (the base fine-tuned by its own method);
* ``fine-tuning vs base``: each fine-tuning against the base it started from;
* ``from scratch``: each from-scratch method against PGD-AT, and each method trained on a
  TRADES-style loss against TRADES.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

#: (key in the row, label, where it comes from: "final" = deep.train's final.json on the test set,
#: "aa" = deep.evaluate on the AutoAttack subset)
ATTACKS = (
    ("clean", "clean", "final", "clean"),
    ("pgd20", "PGD-20", "final", "pgd20"),
    ("cw20", "CW-20", "final", "cw20"),
    ("autoattack", "AutoAttack", "aa", "autoattack"),
    ("aa_subset_pgd20", "PGD-20 (AA subset)", "aa", "pgd20"),
)


def stem(dataset: str) -> str:
    """File stem of the report: ``fairness_benchmark`` (Fashion-MNIST) or ``..._<dataset>``."""
    return "fairness_benchmark" if dataset == "fashion-mnist" else f"fairness_benchmark_{dataset}"


def _mean_sd(values: list[float]) -> dict:
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def _result(record: dict, source: str, key: str) -> dict | None:
    holder = record.get("final") if source == "final" else record.get("autoattack")
    return None if holder is None else holder["results"].get(key)


def summarise_row(entry: dict) -> dict:
    """The JSON row: per attack average / worst (mean, sd over seeds), worst classes, per class."""
    row, records = entry["row"], entry["records"]
    out = {
        "label": row.label,
        "method": row.method,
        "init": row.init or "scratch",
        "options": list(row.options),
        "seeds": sorted(records),
    }
    cpu = 0.0
    for record in records.values():
        cpu += sum(v for v in record.get("cpu_seconds", {}).values() if v is not None)
    out["cpu_seconds"] = cpu  # all recorded CPU time (a lower bound where a run is partial)
    complete = [
        r["cpu_seconds"]["train"]
        for r in records.values()
        if r.get("cpu_complete", True) and r.get("cpu_seconds", {}).get("train")
    ]
    out["train_cpu_seconds_per_run"] = sum(complete) / len(complete) if complete else None
    out["cpu_partial_runs"] = sum(1 for r in records.values() if not r.get("cpu_complete", True))
    for name, _, source, key in ATTACKS:
        found = {s: _result(r, source, key) for s, r in sorted(records.items())}
        found = {s: v for s, v in found.items() if v is not None}
        if not found:
            continue
        classes = next(iter(records.values()))["final"]["classes"]
        per_class = [v["per_class"] for v in found.values()]
        out[name] = {
            "seeds": list(found),
            "average": _mean_sd([v["average"] for v in found.values()]),
            "worst": _mean_sd([v["worst"] for v in found.values()]),
            "worst_class": [classes[min(range(len(pc)), key=pc.__getitem__)] for pc in per_class],
            "per_class": {
                "mean": [math.fsum(col) / len(col) for col in zip(*per_class)],
                "values": per_class,
            },
        }
    return out


def _trades_loss(method: str) -> bool:
    """Whether ``method`` trains on a TRADES-style loss (its fair reference is TRADES)."""
    from deep.presets import get_preset  # light: no torch

    return get_preset(method).objective == "trades"


#: Families of comparisons: the Holm correction runs within each (for each metric and statistic).
FAMILIES = ("fine-tuning", "fine-tuning vs base", "from scratch")
#: Significance level of the report's claims (Holm-adjusted p-values).
ALPHA = 0.05


#: Paired differences (accuracies as fractions) whose spread over seeds is below this are equal:
#: a real difference between two seeds' differences is at least one image (1/50 on AutoAttack's
#: subset), while float rounding makes equal differences (0.36 - 0.34 vs 0.38 - 0.36) differ by
#: about 1e-17, which would otherwise give a t statistic of 1e15 and p = 0.
EQUAL_SPREAD = 1e-9


def paired_stats(a: list[float], b: list[float]) -> dict:
    """The paired difference ``a - b`` over seeds: ``{"mean", "sd", "n", "ci95", "p"}``.

    ``ci95`` and ``p`` come from the paired t-test (``scipy.stats.ttest_rel``, two-sided,
    df = n - 1); they are None for a single seed, and for differences that do not vary over
    seeds (spread below :data:`EQUAL_SPREAD`; sd 0: the t statistic is undefined there)."""
    from scipy import stats

    differences = [x - y for x, y in zip(a, b)]
    out = _mean_sd(differences)
    out["ci95"], out["p"] = None, None
    if out["n"] > 1 and max(differences) - min(differences) <= EQUAL_SPREAD:
        out["sd"] = 0.0
    if out["n"] > 1 and out["sd"] > 0:
        test = stats.ttest_rel(a, b)
        ci = test.confidence_interval(0.95)
        out["ci95"] = [float(ci.low), float(ci.high)]
        out["p"] = float(test.pvalue)
    return out


def metrics(comparison: dict) -> dict:
    """``{attack: {stat: cell}}`` of a comparison (its entries but ``family``)."""
    return {k: v for k, v in comparison.items() if k != "family"}


def holm(comparisons: dict) -> None:
    """Add ``p_holm`` to every statistic of ``comparisons``: Holm-adjusted within the comparison's
    family, for each metric and statistic separately (None where there is no p-value)."""
    from statsmodels.stats.multitest import multipletests

    cells: dict[tuple, list[dict]] = {}
    for comparison in comparisons.values():
        for attack, stats_ in metrics(comparison).items():
            for stat, cell in stats_.items():
                cell["p_holm"] = None
                if cell["p"] is not None:
                    cells.setdefault((comparison["family"], attack, stat), []).append(cell)
    for group in cells.values():
        adjusted = multipletests([c["p"] for c in group], alpha=ALPHA, method="holm")[1]
        for cell, value in zip(group, adjusted):
            cell["p_holm"] = float(value)


def paired(rows: dict, rows_json: dict) -> dict:
    """Paired differences (same seeds) of each fine-tuning row against its control (the base
    fine-tuned by its own method) and its base, and of each from-scratch row against PGD-AT and,
    where it trains on a TRADES-style loss, against TRADES too: ``{"<row> vs <row>": {"family":
    family, attack: {stat: paired_stats}}}`` with Holm-adjusted p-values (:func:`holm`)."""
    out = {}
    for name, entry in rows.items():
        row = entry["row"]
        refs = []
        if row.init:
            control = f"{row.init}+{row.init}"
            if name != control:
                refs.append((control, "fine-tuning"))
            refs.append((row.init, "fine-tuning vs base"))
        elif name != "pgd-at":
            refs.append(("pgd-at", "from scratch"))
            if name != "trades" and _trades_loss(row.method):
                refs.append(("trades", "from scratch"))
        for ref, family in refs:
            if ref not in rows:
                continue
            diffs = {}
            for attack, _, source, key in ATTACKS:
                seeds = sorted(set(entry["records"]) & set(rows[ref]["records"]))
                pairs = []
                for s in seeds:
                    a = _result(entry["records"][s], source, key)
                    b = _result(rows[ref]["records"][s], source, key)
                    if a is not None and b is not None:
                        pairs.append((a, b))
                if pairs:
                    diffs[attack] = {
                        stat: paired_stats([a[stat] for a, _ in pairs], [b[stat] for _, b in pairs])
                        for stat in ("average", "worst")
                    }
            if diffs:
                out[f"{name} vs {ref}"] = {"family": family, **diffs}
    holm(out)
    return out


def build_json(args, inputs: dict) -> dict:
    rows_in = {k: v for k, v in inputs["rows"].items() if v["records"]}
    any_record = next((r for v in rows_in.values() for r in v["records"].values()), None)
    sizes = getattr(args, "sizes", {})
    config = {
        "dataset": args.dataset,
        "model": args.model or None,
        "train_size": sizes.get("train_size"),
        "val_per_class": args.val_per_class,
        "test_size": sizes.get("test_size"),
        "aa_per_class": args.aa_per_class,
        "seeds": list(args.seeds),
        "aa_seeds": list(args.aa_seeds),
        "aa_key_seeds": list(getattr(args, "aa_key_seeds", [])),
        "eps": None,
        "step_size": None,
        "epochs": args.epochs,
        "lr": args.lr,
        "schedule": "cosine",
        "batch_size": args.batch_size,
        "attack_steps": args.attack_steps,
        "finetune_epochs": args.finetune_epochs,
        "finetune_lr": [args.finetune_lr, args.finetune_lr / 10],
        "selection": "best worst-class PGD-20 accuracy on the validation split",
        "command": args.command,
    }
    if any_record is not None:
        final = any_record["final"]
        config["eps"], config["step_size"] = final["eps"], final.get("step_size")
        config["model"] = final.get("model", config["model"])
        if config["test_size"] is None:
            config["test_size"] = sum(final["results"]["clean"].get("counts") or []) or None
    rows = {name: summarise_row(entry) for name, entry in rows_in.items()}
    total = sum(r["cpu_seconds"] for r in rows.values())
    return {
        "config": config,
        "provenance": provenance_summary(rows_in),
        "cpu_hours": total / 3600,
        "rows": rows,
        "paired_differences": paired(rows_in, rows),
    }


def provenance_summary(rows_in: dict) -> dict:
    """Which package versions, git commits and devices the records were made with:
    ``{"git_commits": {commit: records}, "package_versions": [...], "dirty_records",
    "records_without_provenance", "devices": {device: runs}}`` (records made before provenance
    was stored count as without; runs recorded before the device was stored are not counted in
    ``devices``, and the key is left out while no run names one; ``"cpu_kinds": {kind: runs}``
    likewise for the CPU runs that name their kind of CPU)."""
    commits: dict[str, int] = {}
    devices: dict[str, int] = {}
    cpu_kinds: dict[str, int] = {}
    versions, dirty, without = set(), 0, 0
    for entry in rows_in.values():
        for record in entry["records"].values():
            for made in (record.get("provenance"), record.get("autoattack_provenance")):
                if made is None:
                    continue
                commit = made.get("git_commit") or "unknown"
                commits[commit] = commits.get(commit, 0) + 1
                versions.add(made.get("package_version"))
                dirty += bool(made.get("dirty"))
                if made.get("device"):
                    devices[made["device"]] = devices.get(made["device"], 0) + 1
                if made.get("cpu_kind"):
                    cpu_kinds[made["cpu_kind"]] = cpu_kinds.get(made["cpu_kind"], 0) + 1
            without += "provenance" not in record
    out = {
        "git_commits": dict(sorted(commits.items())),
        "package_versions": sorted(v for v in versions if v),
        "dirty_records": dirty,
        "records_without_provenance": without,
    }
    if devices:
        out["devices"] = dict(sorted(devices.items()))
    if cpu_kinds:
        out["cpu_kinds"] = dict(sorted(cpu_kinds.items()))
    return out


def provenance_note(report: dict) -> str:
    """One sentence on the records' provenance (empty when one clean commit made them all)."""
    made = report.get("provenance") or {}
    commits, without = made.get("git_commits", {}), made.get("records_without_provenance", 0)
    parts = []
    if len(commits) > 1:
        parts.append(
            f"the records span {len(commits)} commits ("
            + ", ".join(f"{c[:10]}: {k}" for c, k in commits.items())
            + " runs or AutoAttacks)"
        )
    if without:
        parts.append(
            f"{without} records were made before the benchmark stored each record's commit"
        )
    if made.get("dirty_records"):
        parts.append(f"{made['dirty_records']} were made with uncommitted changes")
    devices = made.get("devices", {})
    if len(devices) > 1:  # floating-point order differs between devices: not bitwise comparable
        parts.append(
            f"runs and AutoAttacks were made on {len(devices)} devices ("
            + ", ".join(f"{d}: {k}" for d, k in devices.items())
            + ")"
        )
    kinds = made.get("cpu_kinds", {})
    if len(kinds) > 1:  # CPUs of two kinds sum in another order too
        parts.append(
            f"the CPU runs and AutoAttacks that name their CPU were made on {len(kinds)} kinds of "
            "CPU (" + ", ".join(f"{k}: {n}" for k, n in kinds.items()) + ")"
        )
    return ("Provenance: " + "; ".join(parts) + ".") if parts else ""


def _cell(stat: dict | None) -> str:
    if stat is None:
        return "–"
    sd = "" if stat["sd"] is None else f" ± {100 * stat['sd']:.1f}"
    return f"{100 * stat['mean']:.1f}{sd}"


def build_markdown(report: dict) -> str:
    c = report["config"]
    lines = [
        f"# Robust-fairness benchmark: {c['dataset']}",
        "",
        f"{c['model']}, l_inf eps {c['eps']}; from scratch: {c['epochs']} epochs, lr {c['lr']} "
        f"cosine, batch {c['batch_size']}, training attack {c['attack_steps']} steps; fine-tuning: "
        f"{c['finetune_epochs']} epochs, lr {c['finetune_lr'][0]:g} then {c['finetune_lr'][1]:g}. "
        f"Training set {c['train_size']} images (validation split {c['val_per_class']} per class "
        f"chooses the checkpoint: {c['selection']}). Clean / PGD-20 / CW-20 on "
        f"{c['test_size'] or 'the'} test images; AutoAttack (standard) on a stratified subset of "
        f"{c['aa_per_class']} images per class (the same for every model; seeds {c['aa_seeds']}"
        + (
            f", and {c['aa_key_seeds']} for the bases, controls and FAAL fine-tunings"
            if c.get("aa_key_seeds")
            else ""
        )
        + "). "
        "Accuracy in %, mean ± sd over seeds (n = the row's seeds; AutoAttack cells give their "
        "own n and the binomial standard error of one worst-class accuracy at "
        f"{c['aa_per_class']} images per class); worst = the worst class's accuracy.",
        "",
        summary_markdown(report),
        "",
    ]
    header = ["row", "seeds"]
    for _key, label, *_ in ATTACKS[:4]:
        header += [f"{label} avg", f"{label} worst"]
    header += ["worst class (PGD-20)", "CPU min/run"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"].values():
        cells = [row["label"], str(len(row["seeds"]))]
        for key, *_ in ATTACKS[:4]:
            entry = row.get(key)
            average, worst = _cell(entry and entry["average"]), _cell(entry and entry["worst"])
            if key == "autoattack" and entry:
                se = binomial_se(entry["worst"]["mean"], c["aa_per_class"])
                average += f" (n={entry['average']['n']})"
                worst += f" (n={entry['worst']['n']}, SE {100 * se:.1f})"
            cells += [average, worst]
        worst = row.get("pgd20", {}).get("worst_class", [])
        cells.append(", ".join(sorted(set(worst), key=worst.index)) or "–")
        per_run = row.get("train_cpu_seconds_per_run")
        cells.append("–" if per_run is None else f"{per_run / 60:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    diffs = report["paired_differences"]
    if diffs:
        lines += [
            "",
            "Paired differences (same seeds; percentage points: mean [95 % CI] of the per-seed "
            "differences from a paired t-test, (n) = seeds both rows have, AutoAttack over the "
            "seeds both rows have it for, with the binomial SE of one seed's worst-class "
            f"difference at {c['aa_per_class']} images per class; **bold**: Holm-adjusted "
            f"p < {ALPHA:g} within the comparison's family). A fine-tuning is compared with its "
            "control (the base fine-tuned by its own method) and its base, a from-scratch row "
            "with PGD-AT and, on a TRADES-style loss, TRADES:",
            "",
            "| comparison | family | PGD-20 avg | PGD-20 worst | CW-20 worst | AutoAttack avg | "
            "AutoAttack worst | clean avg | clean worst |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows = report["rows"]
        for name, d in diffs.items():

            def cell(attack, stat, d=d, name=name):
                s = d.get(attack, {}).get(stat)
                if s is None:
                    return "–"
                text = f"{difference_text(s)} ({s['n']})"
                if attack == "autoattack" and stat == "worst":
                    a, b = (rows[r][attack]["worst"]["mean"] for r in name.split(" vs "))
                    se = math.hypot(*(binomial_se(v, c["aa_per_class"]) for v in (a, b)))
                    text = text[:-1] + f", SE {100 * se:.1f})"
                return f"**{text}**" if significant(s) else text

            lines.append(
                f"| {comparison_label(rows, name)} | {d['family']} | {cell('pgd20', 'average')} "
                f"| {cell('pgd20', 'worst')} | {cell('cw20', 'worst')} | "
                f"{cell('autoattack', 'average')} | {cell('autoattack', 'worst')} | "
                f"{cell('clean', 'average')} | {cell('clean', 'worst')} |"
            )
    lines += [
        "",
        "CPU min/run: the mean training CPU time of one run (one thread; AutoAttack not "
        "included), over the runs whose time was fully recorded. "
        f"CPU time of the recorded runs, AutoAttack included: {report['cpu_hours']:.1f} core-hours"
        + (
            f" (at least: {partial} {'run was' if partial == 1 else 'runs were'} interrupted by "
            "a killed session, whose lost time is not counted)"
            if (partial := sum(r["cpu_partial_runs"] for r in report["rows"].values()))
            else ""
        )
        + f". Command: `{report['config']['command']}`",
        "",
    ]
    if note := provenance_note(report):
        lines += [note, ""]
    return "\n".join(lines)


def binomial_se(accuracy: float, per_class: int) -> float:
    """Binomial standard error of one class's accuracy measured on ``per_class`` images."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / per_class) if per_class else math.nan


def significant(cell: dict) -> bool:
    return cell.get("p_holm") is not None and cell["p_holm"] < ALPHA


def difference_text(cell: dict) -> str:
    """``"+17.0 [+5.8, +28.2]"`` (points; the CI where there is one)."""

    def points(value: float) -> str:
        return f"{round(100 * value, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"

    text = points(cell["mean"])
    if cell.get("ci95"):
        text += f" [{points(cell['ci95'][0])}, {points(cell['ci95'][1])}]"
    return text.replace("-", "−")


def comparison_label(rows: dict, name: str) -> str:
    """``"pgd-at → faal-at vs pgd-at → pgd-at"``: a comparison in the rows' table labels."""
    return " vs ".join(rows[r]["label"] if r in rows else r for r in name.split(" vs "))


def verdict(cell: dict) -> str:
    """What a paired difference allows one to say, at the report's level (Holm within family):
    ``"Holm p = 0.029: higher"``, ``"Holm p = 0.11: not distinguishable at 3 seeds"``."""
    if cell.get("p") is None:
        return "1 seed, no test" if cell["n"] < 2 else "no variation over seeds, no test"
    p = cell["p_holm"]
    if p < ALPHA:
        return f"Holm p = {p:.2g}: {'higher' if cell['mean'] > 0 else 'lower'}"
    return f"Holm p = {p:.2g}: not distinguishable at {cell['n']} seeds"


def _worst_classes(row: dict) -> str:
    """``"Shirt (5 of 5 seeds)"`` or ``"Shirt (4), T-shirt/top (1)"``: the PGD-20 worst class."""
    found = row.get("pgd20", {}).get("worst_class", [])
    counts = {c: found.count(c) for c in dict.fromkeys(found)}
    if len(counts) == 1:
        ((name, k),) = counts.items()
        return f"{name} ({k} of {k} seeds)"
    return ", ".join(f"{name} ({k})" for name, k in counts.items())


def summary_markdown(report: dict) -> str:
    """The benchmark's answer in words, generated from the statistics: every difference with its
    95 % CI, and "higher" / "lower" only where the Holm-adjusted p < ALPHA within its family."""
    rows, diffs, c = report["rows"], report["paired_differences"], report["config"]
    if not diffs:
        return ""
    lines = [
        f"**What the benchmark finds** ({c['dataset']}, {c['model']}). Differences in points "
        "of PGD-20 accuracy (AutoAttack where named: "
        f"{c['aa_per_class']} images per class), paired by seed: mean [95 % CI] from a paired "
        "t-test. A row is called higher or lower than another only where the Holm-adjusted "
        f"p < {ALPHA:g} within its family of comparisons.",
        "",
    ]
    bases = [n for n, r in rows.items() if r["init"] == "scratch" and f"{n}+{n}" in rows]
    if bases:
        lines.append(
            "PGD-20 worst class of the bases: "
            + "; ".join(f"{rows[b]['label']}: {_worst_classes(rows[b])}" for b in bases)
            + "."
        )
        lines.append("")
    for family, title in (
        ("fine-tuning", f"Fine-tuning for {c['finetune_epochs']} epochs, against the control "
         "(the base fine-tuned as long by its own method):"),
        ("from scratch", f"From scratch ({c['epochs']} epochs), against PGD-AT and, for methods "
         "on a TRADES-style loss, against TRADES:"),
    ):  # fmt: skip
        members = {n: d for n, d in diffs.items() if d["family"] == family and "pgd20" in d}
        if not members:
            continue
        lines.append(title)
        lines.append("")
        for name, d in members.items():
            worst, average = d["pgd20"]["worst"], d["pgd20"]["average"]
            text = (
                f"- {comparison_label(rows, name)} (n = {worst['n']}): worst class "
                f"{difference_text(worst)} ({verdict(worst)}); average "
                f"{difference_text(average)} ({verdict(average)})"
            )
            aa = d.get("autoattack", {}).get("worst")
            if aa is not None:
                text += (
                    f". AutoAttack worst class {difference_text(aa)} (n = {aa['n']}; {verdict(aa)})"
                )
            lines.append(text + ".")
        lines.append("")
    return "\n".join(lines).rstrip()


README_START = "<!-- fairness-benchmark:start -->"
README_END = "<!-- fairness-benchmark:end -->"


def table_block(markdown: str) -> str:
    """The README's part of a report's Markdown: the generated summary and the table of rows
    (from the summary's first line to the end of the first table)."""
    lines = markdown.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    start = next((i for i, ln in enumerate(lines) if ln.startswith("**What the bench")), first)
    last = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:last])


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the README's block between the benchmark markers by the report's tables."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table_block(markdown)}\n{README_END}{tail}")


def _figures(report: dict, out: Path, prefix: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    if not rows:
        return []
    classes = None
    paths = []
    groups = {}
    for name, row in rows.items():
        groups.setdefault(row["init"], []).append(name)
    colours, _ = _styles(rows)
    for attack, label, *_ in ATTACKS[:4]:
        present = {n: r for n, r in rows.items() if attack in r}
        if not present:
            continue
        # per-class bars: one panel per group (from scratch; fine-tuned from each base)
        panels = [(g, [n for n in names if n in present]) for g, names in groups.items()]
        panels = [(g, names) for g, names in panels if names]
        fig, axes = plt.subplots(len(panels), 1, figsize=(12.5, 2.8 * len(panels)), squeeze=False)
        for ax, (group, names) in zip(axes[:, 0], panels):
            if classes is None:
                classes = _classes(report)
            width = 0.8 / len(names)
            for i, name in enumerate(names):
                values = [100 * v for v in present[name][attack]["per_class"]["mean"]]
                xs = [c + (i - (len(names) - 1) / 2) * width for c in range(len(values))]
                colour = colours[rows[name]["method"]]
                ax.bar(xs, values, width, label=rows[name]["label"], color=colour)
            ax.set_xticks(range(len(classes)), classes, fontsize=8)
            ax.set_ylim(0, 100)
            ax.set_ylabel(f"{label} acc. (%)")
            title = "from scratch" if group == "scratch" else f"fine-tuned from {group}"
            ax.set_title(f"{title}: class-wise {label} accuracy (mean over seeds)", fontsize=9)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / f"{prefix}_classwise_{attack}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
        paths.append(
            _pareto_figure(report, present, attack, label, out / f"{prefix}_pareto_{attack}.png")
        )
        gain = _gain_figure(report, attack, label, out / f"{prefix}_gain_{attack}.png")
        if gain is not None:
            paths.append(gain)
    return paths


def _styles(rows: dict) -> tuple[dict, dict]:
    """Colour per method and marker per start (``"scratch"`` or the base row), in table order, so a
    method has one colour in every panel and a marker says where its runs started."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows.values()))
    # tab10 without its grey (the Pareto front's colour), then black, then tab20's light shades
    palette = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7] + ["black"]
    palette += [plt.get_cmap("tab20")(i) for i in range(1, 20, 2) if i != 15]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    starts = list(dict.fromkeys(["scratch"] + [r["init"] for r in rows.values()]))
    markers = {s: "osD^vP"[i % 6] for i, s in enumerate(starts)}
    return colours, markers


def _pareto_figure(report: dict, present: dict, attack: str, label: str, path: Path) -> Path:
    """Average against worst-class accuracy of every row under ``attack``: from-scratch rows on
    the left, fine-tunings on the right (their bases drawn hollow for reference); one colour per
    method, one marker per start; the dashed line is the Pareto front of the points in the panel."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colours, markers = _styles(report["rows"])
    scratch = [n for n, r in present.items() if r["init"] == "scratch"]
    tuned = [n for n, r in present.items() if r["init"] != "scratch"]
    epochs = report.get("config", {}).get("finetune_epochs")
    tuned_title = f"fine-tuned for {epochs} epochs" if epochs else "fine-tuned"
    panels = [(t, names) for t, names in (("from scratch", scratch), (tuned_title, tuned)) if names]
    panel_labels = []
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 5), sharex=True, sharey=True, squeeze=False
    )

    def point(ax, row, hollow=False, text=None):
        a, w = row[attack]["average"], row[attack]["worst"]
        drawn.append((100 * a["mean"], 100 * w["mean"]))
        colour = colours[row["method"]]
        ax.errorbar(
            100 * a["mean"],
            100 * w["mean"],
            xerr=0 if hollow else 100 * (a["sd"] or 0),
            yerr=0 if hollow else 100 * (w["sd"] or 0),
            fmt=markers[row["init"]],
            color=colour,
            mfc="none" if hollow else colour,
            capsize=2,
            alpha=0.6 if hollow else 1.0,
        )
        labels.append(
            ax.annotate(
                text or row["method"],
                (100 * a["mean"], 100 * w["mean"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        )

    for ax, (title, names) in zip(axes[0], panels):
        drawn, labels = [], []
        if names is tuned:
            for base in dict.fromkeys(present[n]["init"] for n in tuned):
                if base in present:
                    point(ax, present[base], hollow=True, text=f"{base} (base)")
        for name in names:
            point(ax, present[name])
        front = _pareto(drawn)
        if len(front) > 1:
            ax.plot(*zip(*front), color="grey", lw=1, ls="--", zorder=0)
        panel_labels.append((ax, labels))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"average {label} accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"worst-class {label} accuracy (%)")
    used = {present[n]["method"] for n in present}
    method_handles = [
        Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colours.items() if m in used
    ]
    method_handles.append(Line2D([], [], color="grey", ls="--", label="Pareto front (panel)"))
    axes[0, 0].legend(handles=method_handles, fontsize=6, ncol=2, loc="best", title="method",
                      title_fontsize=7)  # fmt: skip
    starts = dict.fromkeys(present[n]["init"] for n in present)
    start_handles = [
        Line2D([], [], marker=markers[s], ls="", color="black", mfc="none",
               label="from scratch" if s == "scratch" else f"from {s}")
        for s in starts
    ]  # fmt: skip
    axes[0, -1].legend(handles=start_handles, fontsize=6, loc="best", title="start",
                       title_fontsize=7)  # fmt: skip
    fig.suptitle(f"{label}: average vs worst class (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    for ax, labels in panel_labels:
        place_labels(ax, labels)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def gain_over_control(report: dict, attack: str) -> list[dict]:
    """Each fine-tuning's paired difference from its control (the base fine-tuned by its own
    method) under ``attack``: ``{"row", "label", "base", "average", "worst"}`` with the
    ``{"mean", "sd", "n"}`` of the per-seed differences, in percentage points."""
    points = []
    for name, row in report["rows"].items():
        base = row["init"]
        if base == "scratch" or name == f"{base}+{base}":
            continue
        diff = report["paired_differences"].get(f"{name} vs {base}+{base}", {}).get(attack)
        if diff is None:
            continue
        scaled = {
            stat: {
                "mean": 100 * diff[stat]["mean"],
                "sd": None if diff[stat]["sd"] is None else 100 * diff[stat]["sd"],
                "n": diff[stat]["n"],
            }
            for stat in ("average", "worst")
        }
        points.append({"row": name, "label": row["label"], "base": base, **scaled})
    return points


def _gain_figure(report: dict, attack: str, label: str, path: Path) -> Path | None:
    """Worst-class gain against average cost of every fine-tuning over its control."""
    import matplotlib.pyplot as plt

    points = gain_over_control(report, attack)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    colours, markers = _styles(report["rows"])
    labels = []
    for pt in points:
        row = report["rows"][pt["row"]]
        single = pt["worst"]["n"] < 2
        colour = colours[row["method"]]
        ax.errorbar(
            pt["average"]["mean"],
            pt["worst"]["mean"],
            xerr=pt["average"]["sd"] or 0,
            yerr=pt["worst"]["sd"] or 0,
            fmt=markers[pt["base"]],
            color=colour,
            mfc="none" if single else colour,
            capsize=2,
            label=f"{pt['label']} (n={pt['worst']['n']}"
            + (", single seed: no spread)" if single else ")"),
        )
        labels.append(
            ax.annotate(
                pt["label"] + (" (1 seed)" if single else ""),
                (pt["average"]["mean"], pt["worst"]["mean"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"change of average {label} accuracy (points)")
    ax.set_ylabel(f"change of worst-class {label} accuracy (points)")
    ax.set_title(
        f"{label}: 2 epochs of fine-tuning against the control (the base's own method),\n"
        "paired by seed (mean ± sd of the per-seed differences)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    place_labels(ax, labels)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


#: Offsets (points) tried for a point's label, nearest first.
_LABEL_OFFSETS = [(3, 3), (3, -9), (-3, 3), (-3, -9), (6, 8), (6, -14), (-6, 8), (-6, -14),
                  (10, -3), (-10, -3), (3, 14), (3, -20), (-3, 14), (-3, -20)]  # fmt: skip


def place_labels(ax, labels: list) -> None:
    """Move each point label to the first offset (:data:`_LABEL_OFFSETS`) where it overlaps no
    label placed before it and stays inside the axes; a label with no free offset keeps the one
    that overlaps least. Call after the layout is final (``tight_layout``)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed = []

    def overlap(box, other) -> float:
        w = min(box.x1, other.x1) - max(box.x0, other.x0)
        h = min(box.y1, other.y1) - max(box.y0, other.y0)
        return max(w, 0) * max(h, 0)

    for text in labels:
        best = None
        for dx, dy in _LABEL_OFFSETS:
            ha = "left" if dx >= 0 else "right"
            text.set_position((dx, dy))
            text.set_horizontalalignment(ha)
            box = text.get_window_extent(renderer)
            cost = sum(overlap(box, other) for other in placed)
            cost += (
                box.width
                * box.height
                * (
                    box.x0 < inside.x0
                    or box.x1 > inside.x1
                    or box.y0 < inside.y0
                    or box.y1 > inside.y1
                )
            )
            if best is None or cost < best[0]:
                best = (cost, (dx, dy), ha, box)
            if cost == 0:
                break
        _, position, ha, box = best
        text.set_position(position)
        text.set_horizontalalignment(ha)
        placed.append(box)


def labels_overlap(labels: list) -> int:
    """How many pairs of ``labels`` (placed texts of one figure) overlap."""
    renderer = labels[0].figure.canvas.get_renderer() if labels else None
    boxes = [t.get_window_extent(renderer) for t in labels]
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _classes(report: dict) -> list[str]:
    return report["classes"]


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (average, worst), sorted by average."""
    front = [p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def report_texts(args, inputs: dict) -> tuple[dict, str, str]:
    """The report of ``inputs`` (:func:`build_json` plus the class names), and the texts of its
    JSON and Markdown files, exactly as :func:`write_report` writes them."""
    report = build_json(args, inputs)
    any_record = next((r for v in inputs["rows"].values() for r in v["records"].values()), None)
    report["classes"] = any_record["final"]["classes"] if any_record else []
    return report, json.dumps(report, indent=1, allow_nan=False) + "\n", build_markdown(report)


def write_report(args, inputs: dict) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the figures into ``args.out``; return the paths."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, json_text, markdown = report_texts(args, inputs)
    prefix = stem(args.dataset)
    paths = []
    for path, text in ((out / f"{prefix}.json", json_text), (out / f"{prefix}.md", markdown)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    if getattr(args, "readme", None):
        update_readme(Path(args.readme), markdown)
        paths.append(Path(args.readme))
    figures = out / f"{prefix}_figures"
    figures.mkdir(exist_ok=True)
    paths += _figures(report, figures, prefix)
    return paths
