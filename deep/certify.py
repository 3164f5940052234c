"""Randomized smoothing: certified l_2 robustness per class (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier of a base classifier f is ``g(x) = argmax_c P(f(x + e) = c)``,
``e ~ N(0, sigma^2 I)`` (Cohen et al. Eq. 1). If the top class has probability at least
``p_A > 1/2``, g is constant on the l_2 ball of radius ``sigma * Phi^-1(p_A)`` around x (their
Theorem 1 with p_B = 1 - p_A). FRL Appendix A.1.3 (Figure 4) reports the class-wise *certified
standard error* (1 - certified accuracy at radius 0) and *certified robust error* (1 - certified
accuracy at radius 0.5) of such models on CIFAR-10.

* :func:`certify` is CERTIFY (Cohen et al., Algorithm "certify" in §3.2): n0 noisy copies choose
  the class c_A, n further copies count how often f returns it, the one-sided (1 - alpha)
  Clopper-Pearson lower bound of p_A (:func:`clopper_pearson_lower`) gives the radius, and the
  smoothed classifier abstains when that bound is <= 1/2.
* :func:`predict` is PREDICT (same section): the top two classes of n noisy copies, a two-sided
  binomial test of their counts at level alpha; abstain when it does not reject equality.

Noise is drawn in batches of ``batch_size`` noisy images on the model's device from one
``torch.Generator``; one batch mixes copies of several inputs, so the model stays busy however
small n is, and there is no loop over samples. Inputs are in [0, 1]; the noise is added there,
before the model's own normalisation, and is not clipped (Cohen et al. do not clip either).

``python -m deep.certify --checkpoint CKPT --dataset NAME --sigma S`` certifies a (stratified
subset of a) test set and writes ``certify.json``, ``certify.csv`` (one row per image) and
``certify.png`` (class-wise certified accuracy at each radius).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from scipy import special, stats
from torch import Tensor, nn

from deep.data import (
    DATASET_NAMES,
    ClassTooSmallError,
    DatasetError,
    ImageSplit,
    load_dataset,
    stratified_indices,
)
from deep.evaluate import (
    check_common_options,
    check_model_fits,
    check_output_option,
    load_cli_checkpoint,
    settings_from_checkpoint,
)
from deep.metrics import classwise_accuracy, summarise_per_class
from deep.plots import plot_classwise
from deep.progress import Progress, add_progress_options
from deep.results import atomic_write_text
from deep.runtime import (
    CLIParser,
    DefaultsHelpFormatter,
    add_threads_option,
    all_or_nothing,
    apply_thread_policy,
    budget_value,
    exit_on_file_error,
    exit_on_interrupt,
    format_budget,
    resolve_device,
)

__all__ = [
    "DEFAULT_RADII",
    "certified_accuracy",
    "certify",
    "class_counts",
    "clopper_pearson_lower",
    "main",
    "predict",
]

#: Radii of certify.json's certified accuracies (FRL Figure 4 reports 0 and 0.5).
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)

#: Radius of FRL's "certified robust error" (Appendix A.1.3: l_2 radius 0.5).
FRL_ROBUST_RADIUS = 0.5


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
def clopper_pearson_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound of a binomial proportion.

    The p with ``P(Binomial(n, p) >= k) = alpha``, i.e. the alpha-quantile of Beta(k, n - k + 1)
    (0 when k = 0); Cohen et al.'s ``LowerConfBound`` (``proportion_confint(k, n,
    alpha=2*alpha, method="beta")[0]``).

    Args:
        k: successes (an integer or an array of them), 0 <= k <= n.
        n: trials, >= 1.
        alpha: the error level, in (0, 1).

    Returns:
        The lower bounds, float64 of ``k``'s shape.

    Raises:
        ValueError: for alpha outside (0, 1) or k outside [0, n].
    """
    k = np.asarray(k, dtype=np.float64)
    n = float(n)
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 1 or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k in [{k.min()}, {k.max()}], n={n}")
    safe_k = np.where(k > 0, k, 1.0)
    bound = special.betaincinv(safe_k, n - safe_k + 1.0, alpha)
    return np.where(k > 0, bound, 0.0)


def _binomial_test_pvalue(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Two-sided binomial test of ``n_a`` successes in ``n_a + n_b`` trials against p = 1/2.

    For p = 1/2 the two-sided p-value is ``min(1, 2 P(X <= min(n_a, n_b)))`` (the distribution
    is symmetric), what ``scipy.stats.binomtest(...).pvalue`` returns, vectorised.
    """
    total = n_a + n_b
    low = np.minimum(n_a, n_b)
    p = np.where(total > 0, 2.0 * stats.binom.cdf(low, np.maximum(total, 1), 0.5), 1.0)
    return np.minimum(p, 1.0)


# --------------------------------------------------------------------------------------------
# Monte Carlo counts
# --------------------------------------------------------------------------------------------
def _model_device_dtype(model: nn.Module, x: Tensor) -> tuple[torch.device, torch.dtype]:
    """Where the model's first floating-point tensor lives and its dtype (x's for a model
    without parameters or buffers)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return x.device, x.dtype


def _check_inputs(x: Tensor, sigma: float, batch_size: int, generator, device) -> float:
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point() or len(x) == 0:
        raise ValueError("x must be a non-empty floating-point tensor (B, C, H, W) in [0, 1]")
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        sigma = math.nan
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if generator is not None and torch.device(generator.device).type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the model on {device}: create it with "
            f"torch.Generator(device={str(device)!r}) so the noise is drawn where the model runs"
        )
    return sigma


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_samples(alpha: float, **counts: int) -> None:
    for name, value in counts.items():
        _check_count(value, name)
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


@torch.no_grad()
def class_counts(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    num: int,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """``counts[i, c]`` = how many of ``num`` noisy copies ``x[i] + N(0, sigma^2 I)`` the base
    classifier (argmax of ``model``'s logits, eval mode) assigns to class c; int64 (B, C).

    The B * num noisy images are processed ``batch_size`` at a time in one flat order (copy j of
    input i is image ``i * num + j``), so a batch can hold copies of several inputs. The model's
    train/eval mode is restored afterwards. ``num_classes`` defaults to the logits' width.
    """
    num = _check_count(num, "num")
    device, dtype = _model_device_dtype(model, x)
    sigma = _check_inputs(x, sigma, batch_size, generator, device)
    x = x.detach().to(device=device, dtype=dtype)
    b = x.shape[0]
    total = b * num
    counts = None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            owner = torch.arange(start, stop, device=device) // num
            noise = torch.randn(
                (stop - start, *x.shape[1:]), generator=generator, device=device, dtype=x.dtype
            )
            logits = model(x[owner] + sigma * noise)
            pred = logits.argmax(dim=1)
            if counts is None:
                c = int(num_classes) if num_classes is not None else logits.shape[1]
                counts = torch.zeros(b, c, dtype=torch.long, device=device)
            counts.view(-1).index_add_(0, owner * c + pred, torch.ones_like(pred))
    finally:
        model.train(was_training)
    return counts


def certify(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """CERTIFY (Cohen et al. 2019, §3.2) for a batch ``x`` (B, C, H, W) in [0, 1].

    1. ``n0`` noisy copies per input: the most frequent class c_A (ties: the smallest index).
    2. ``n`` fresh copies: the count k_A of c_A; p_A >= ``clopper_pearson_lower(k_A, n, alpha)``
       with probability >= 1 - alpha.
    3. If that bound is <= 1/2, abstain (prediction -1, radius 0); else predict c_A with radius
       ``sigma * Phi^-1(p_A_lower)``: the smoothed classifier is constant on that l_2 ball.

    Noise is drawn on the model's device (``generator`` must live there).

    Args:
        model: the base classifier f (returns logits; normalisation inside).
        x: the inputs, (B, C, H, W) in [0, 1] (any shape the model accepts).
        sigma: the noise level, > 0.
        n0: noisy copies per input that select the class c_A.
        n: noisy copies per input that estimate p_A.
        alpha: the failure probability of the certificate, in (0, 1).
        batch_size: noisy images per forward pass (copies of several inputs are mixed).
        generator: the noise's random generator (None: torch's default).

    Returns:
        ``(pred, radius)`` on ``x``'s device: int64 (B,) predictions with -1 for abstain, and
        float64 (B,) certified l_2 radii (0 where it abstains).
    """
    _check_samples(alpha, n0=n0, n=n)
    kw = dict(sigma=sigma, batch_size=batch_size, generator=generator)
    selection = class_counts(model, x, num=n0, **kw)
    c_a = selection.argmax(dim=1)
    estimation = class_counts(model, x, num=n, num_classes=selection.shape[1], **kw)
    k_a = estimation.gather(1, c_a[:, None]).squeeze(1).cpu().numpy()
    p_lower = clopper_pearson_lower(k_a, n, alpha)
    certified = p_lower > 0.5
    radius = np.where(certified, sigma * special.ndtri(np.where(certified, p_lower, 0.75)), 0.0)
    pred = torch.where(torch.as_tensor(certified, device=c_a.device), c_a, torch.full_like(c_a, -1))
    return pred.to(x.device), torch.as_tensor(radius, dtype=torch.float64, device=x.device)


def predict(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PREDICT (Cohen et al. 2019, §3.2): the smoothed classifier's prediction, or -1 (abstain).

    The top two classes of ``n`` noisy copies, counts n_A >= n_B; a two-sided binomial test of
    n_A out of n_A + n_B against 1/2; return c_A if its p-value is <= alpha, else abstain. The
    probability of returning a class other than g(x) is at most alpha (their Theorem 2).

    Args:
        model: the base classifier f (returns logits).
        x: the inputs, (B, C, H, W) in [0, 1].
        sigma: the noise level, > 0.
        n: noisy copies per input.
        alpha: the test's level, in (0, 1).
        batch_size: noisy images per forward pass.
        generator: the noise's random generator (None: torch's default).

    Returns:
        int64 (B,) predictions on ``x``'s device, -1 where PREDICT abstains.
    """
    _check_samples(alpha, n=n)
    counts = class_counts(model, x, sigma=sigma, num=n, batch_size=batch_size, generator=generator)
    top = counts.topk(2, dim=1)
    n_a, n_b = (top.values[:, i].cpu().numpy() for i in (0, 1))
    accept = torch.as_tensor(_binomial_test_pvalue(n_a, n_b) <= alpha, device=counts.device)
    c_a = top.indices[:, 0]
    return torch.where(accept, c_a, torch.full_like(c_a, -1)).to(x.device)


# --------------------------------------------------------------------------------------------
# Class-wise summaries (certify.json)
# --------------------------------------------------------------------------------------------
def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` samples: every one of them votes for c_A,
    so p_A's lower bound is ``clopper_pearson_lower(n, n, alpha)`` and the radius
    ``sigma * Phi^-1`` of it (Cohen et al. 2019, Theorem 1).

    Args:
        sigma: the noise level.
        n: noisy copies per input.
        alpha: the failure probability of the certificate.

    Returns:
        The radius ``sigma * Phi^-1(alpha^(1/n))`` (0 when even n votes out of n certify nothing).
    """
    p_lower = float(clopper_pearson_lower(np.array([n]), n, alpha)[0])
    return sigma * float(special.ndtri(p_lower)) if p_lower > 0.5 else 0.0


def certified_accuracy(
    pred: Tensor, radius: Tensor, labels: Tensor, num_classes: int, radii: Sequence[float]
) -> dict:
    """``{str(r): classwise_accuracy(...)}``: the share of each class that CERTIFY classifies
    correctly with a certified radius >= r (Cohen et al.'s "certified test set accuracy").

    Args:
        pred: CERTIFY's predictions (B,), -1 = abstain (an abstention counts as an error).
        radius: the certified radii (B,).
        labels: the true labels (B,).
        num_classes: the number of classes C.
        radii: the radii r to report.

    Returns:
        ``{repr(float(r)): {"per_class", "average", "worst", "counts"}}`` per radius.
    """
    labels = labels.to(pred.device)
    radius = radius.to(pred.device)
    out = {}
    for r in radii:
        flags = (pred == labels) & (radius >= float(r))
        out[_radius_key(r)] = classwise_accuracy(flags, labels, num_classes)
    return out


def _radius_key(r: float) -> str:
    return repr(float(r))


def abstain_rates(pred: Tensor, labels: Tensor, num_classes: int) -> dict:
    """``{"per_class", "average"}``: the share of each class on which CERTIFY abstains."""
    entry = classwise_accuracy(pred == -1, labels.to(pred.device), num_classes)
    return {"per_class": entry["per_class"], "average": entry["average"]}


def certify_csv_text(indices: Sequence[int], labels, pred, radius) -> str:
    """``certify.csv``: ``index,label,prediction,radius`` per image (prediction -1 = abstain)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["index", "label", "prediction", "radius"])
    for row in zip(indices, labels, pred, radius):
        writer.writerow([int(row[0]), int(row[1]), int(row[2]), repr(float(row[3]))])
    return buf.getvalue()


def frl_certified_errors(accuracy: dict) -> dict:
    """FRL Figure 4's class-wise certified standard error (radius 0) and, when radius 0.5 was
    certified, certified robust error: 1 - certified accuracy, worst = the largest error."""
    out = {}
    for name, r in (("standard", 0.0), ("robust", FRL_ROBUST_RADIUS)):
        entry = accuracy.get(_radius_key(r))
        if entry is not None:
            out[name] = summarise_per_class([1.0 - v for v in entry["per_class"]], worst="max")
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _parse_radii(text: str) -> list[float]:
    try:
        radii = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"--radii must be comma-separated numbers, got {text!r}") from None
    if not radii or any(not (math.isfinite(r) and r >= 0) for r in radii):
        raise ValueError(f"--radii must be finite numbers >= 0, got {text!r}")
    return sorted(set(radii))


def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(
        prog="python -m deep.certify",
        description="Randomized smoothing (Cohen et al. 2019): certify a checkpoint's smoothed "
        "classifier on a test set; class-wise certified accuracy at each l_2 radius and "
        "abstention rates. Writes certify.json, certify.csv and certify.png.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="checkpoint file, or a deep.train run directory (its best.pt)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASET_NAMES,
        help="data set (default: the one the checkpoint's training config names)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder")
    parser.add_argument(
        "--sigma",
        default=None,
        type=budget_value,
        help="noise std on the [0,1] pixel scale, a number or a fraction such as 64/255 "
        "(default: the training run's, for a --method gaussian-noise checkpoint)",
    )
    parser.add_argument("--n0", type=int, default=100, help="selection samples per image")
    parser.add_argument("--n", type=int, default=100_000, help="estimation samples per image")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=None,
        metavar="K",
        help="certify a stratified subset of K test images per class (default: all)",
    )
    parser.add_argument(
        "--radii",
        default=",".join(str(r) for r in DEFAULT_RADII),
        help="comma-separated l_2 radii of the certified accuracies",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="noisy images per forward pass"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the subset")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_threads_option(parser)
    add_progress_options(parser)
    return parser


def _validate(parser, args) -> list[float]:
    if args.sigma is not None and not (math.isfinite(args.sigma) and args.sigma > 0):
        parser.error(f"--sigma must be a finite number > 0, got {args.sigma}")
    if args.n0 < 1 or args.n < 1:
        parser.error(f"--n0 and --n must be >= 1, got {args.n0} and {args.n}")
    if not (0 < args.alpha < 1):
        parser.error(f"--alpha must be in (0, 1), got {args.alpha}")
    check_common_options(parser, args)
    try:
        return _parse_radii(args.radii)
    except ValueError as exc:
        parser.error(str(exc))


def _load(parser, args):
    model, args.checkpoint, config, trained = load_cli_checkpoint(parser, args.checkpoint)
    settings_from_checkpoint(parser, args, trained, ("dataset", "sigma"))
    if args.sigma is None:
        parser.error(
            f"--sigma is needed: {args.checkpoint} was not trained with Gaussian noise "
            "(--method gaussian-noise), so it names no noise level; e.g. --sigma 0.25"
        )
    try:
        data = load_dataset(args.dataset, args.data_dir)
    except (DatasetError, ValueError) as exc:
        parser.error(f"--dataset {args.dataset}: {exc}")
    check_model_fits(parser, args.checkpoint, config, data)
    split, indices = data.test, np.arange(len(data.test))
    if args.n_per_class is not None:
        try:
            indices = stratified_indices(split, args.n_per_class, seed=args.seed)
        except ClassTooSmallError as exc:
            parser.error(exc.describe("--n-per-class"))
        split = split.subset(indices)
    return model, config, data, split, indices


def _certify_split(model, split: ImageSplit, args, device, generator) -> tuple[Tensor, Tensor]:
    """CERTIFY over the split, a few images at a time (each with n0 + n noisy copies)."""
    per_step = max(1, args.batch_size // args.n0)  # a selection round fills about one batch
    preds, radii = [], []
    with Progress(len(split), "certify", enabled=not args.quiet, interval=args.progress_interval,
                  unit="image") as bar:  # fmt: skip
        for first in range(0, len(split), per_step):
            x = split.x[first : first + per_step].to(device).float() / 255.0
            pred, radius = certify(
                model, x, sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                batch_size=args.batch_size, generator=generator,
            )  # fmt: skip
            preds.append(pred.cpu())
            radii.append(radius.cpu())
            bar.update(len(x))
    return torch.cat(preds), torch.cat(radii)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status 0 (Ctrl-C exits with status 130)."""
    with exit_on_interrupt("certification", note="; nothing was written"):
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_output_option(parser, args.out)
    radii = _validate(parser, args)
    device = resolve_device(parser, args.device)
    model, config, data, split, indices = _load(parser, args)
    apply_thread_policy(args.threads, device, config.get("name"))
    model = model.to(device=device, dtype=torch.float32).eval()
    out = args.out or Path("runs") / (
        f"certify-{args.dataset}-sigma{args.sigma:g}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    with all_or_nothing(out):  # certify.json, certify.csv and certify.png, or nothing
        return _certify_to(args, model, config, data, split, indices, radii, device, out)


def _certify_to(args, model, config, data, split, indices, radii, device, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {out}", flush=True)
    print(f"noise: sigma {format_budget(args.sigma)}", flush=True)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    start = time.perf_counter()
    pred, radius = _certify_split(model, split, args, device, generator)
    seconds = time.perf_counter() - start
    accuracy = certified_accuracy(pred, radius, split.y, data.num_classes, radii)
    result = {
        "dataset": data.name,
        "model": config.get("name", "unknown"),
        "sigma": args.sigma,
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "classes": list(data.classes),
        "radii": radii,
        "split": "test",
        "n_per_class": args.n_per_class,
        "seed": args.seed,
        "checkpoint": str(args.checkpoint),
        "seconds": round(seconds, 3),
        "abstain": abstain_rates(pred, split.y, data.num_classes),
        "certified_accuracy": accuracy,
        "certified_errors": frl_certified_errors(accuracy),
    }
    atomic_write_text(
        out / "certify.csv",
        certify_csv_text(indices, split.y.tolist(), pred.tolist(), radius.tolist()),
    )
    atomic_write_text(out / "certify.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    plot_classwise(
        {"classes": result["classes"],
         "results": {f"radius {r:g}": accuracy[_radius_key(r)] for r in radii}},
        out / "certify.png",
        title=f"{data.name} / {result['model']}: certified accuracy, sigma {args.sigma:g}",
    )  # fmt: skip
    print(_table(result))
    reach = max_certifiable_radius(args.sigma, args.n, args.alpha)
    beyond = [r for r in radii if r > reach]
    if beyond:
        print(
            f"note: with --n {args.n} (alpha {args.alpha:g}, sigma {args.sigma:g}) no radius above "
            f"{reach:.3f} can be certified, so the accuracy at radius "
            f"{', '.join(f'{r:g}' for r in beyond)} is 0 by construction; raise --n to reach it"
        )
    print(f"wrote {out / 'certify.json'}, certify.csv, certify.png")
    return 0


def _table(result: dict) -> str:
    """Class-wise certified accuracy (%) at each radius, and the abstention rate."""
    keys = [_radius_key(r) for r in result["radii"]]
    header = ["class"] + [f"r={float(k):g}" for k in keys] + ["abstain"]
    rows = []
    for c, name in enumerate(result["classes"]):
        acc = [f"{100 * result['certified_accuracy'][k]['per_class'][c]:.1f}" for k in keys]
        rows.append([name, *acc, f"{100 * result['abstain']['per_class'][c]:.1f}"])
    for label in ("average", "worst"):
        acc = [f"{100 * result['certified_accuracy'][k][label]:.1f}" for k in keys]
        abstain = f"{100 * result['abstain']['average']:.1f}" if label == "average" else ""
        rows.append([label, *acc, abstain])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in
                       enumerate(zip(row, widths))) for row in [header, *rows]]  # fmt: skip
    return "certified accuracy (%) by l_2 radius:\n" + "\n".join(lines)


if __name__ == "__main__":
    with exit_on_file_error("python -m deep.certify"):
        code = main()
    sys.exit(code)
