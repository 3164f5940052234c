"""The CUDA code paths: a training step against the CPU's, bf16 autocast, channels_last and
torch.compile, attacks, AutoAttack and certification on the GPU, checkpoints between CUDA and the
CPU, NCCL DDP through torchrun.

Marked ``cuda`` and skipped without a CUDA device (``benchmarks/gpu_check.sh`` runs them with
``RF_CUDA_REQUIRED=1``, where a missing GPU fails them instead).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

from deep import distributed as dd
from deep import train as T
from deep.certify import certify, class_counts
from deep.checkpoint import model_from_checkpoint
from deep.data import load_dataset, stratified_subset
from deep.evaluate import evaluate_model

REPO = Path(__file__).resolve().parents[2]

if not torch.cuda.is_available() and os.environ.get("RF_CUDA_REQUIRED") == "1":
    raise RuntimeError("RF_CUDA_REQUIRED=1 but torch sees no CUDA device")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def exact_float32():
    """Full float32 matmuls and convolutions (no TF32), so CUDA can be held to the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _trainer(dataset, device: str, method: str, *extra: str, model: str = "small-cnn"):
    parser = T.build_parser()
    argv = ["--method", method, "--batch-size", "64", "--seed", "0", *extra]
    cfg = T.resolve_config(parser.parse_args(argv), parser)
    cfg.update(eps=dataset.eps, step_size=dataset.step_size, model=model)
    if cfg.get("channels_last") is None:
        cfg["channels_last"] = False
    return T.Trainer(cfg, dataset, dd.DistContext(device=torch.device(device)))


def _batch(dataset, device: str, n: int = 64):
    x = dataset.train.x[:n].to(device).float().div_(255)
    return x, dataset.train.y[:n].to(device)


def _params(trainer) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1).cpu() for p in trainer.model.parameters()])


def _steps(trainer, dataset, steps: int = 3) -> torch.Tensor:
    before = _params(trainer)
    x, y = _batch(dataset, str(trainer.device))
    for _ in range(steps):
        trainer.train_step(x, y)
    return _params(trainer) - before


def test_natural_steps_on_cuda_match_the_cpu(digits):
    """Same seed, weights and batch: three SGD steps move the parameters the same way."""
    cpu = _steps(_trainer(digits, "cpu", "natural"), digits)
    gpu = _steps(_trainer(digits, "cuda", "natural"), digits)
    assert cpu.abs().max() > 0
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-6)


def test_pgd_at_step_on_cuda_matches_the_cpu(digits):
    """PGD-AT from a zero start (no random draw): the attack's signs can only flip where a gradient
    entry is ~0, so the updates agree to a few parts in a thousand."""
    cpu = _steps(_trainer(digits, "cpu", "pgd-at", "--attack-start", "zero"), digits, 1)
    gpu = _steps(_trainer(digits, "cuda", "pgd-at", "--attack-start", "zero"), digits, 1)
    assert torch.linalg.norm(gpu - cpu) <= 5e-3 * torch.linalg.norm(cpu)


def test_bf16_autocast_step_follows_the_float32_step(digits):
    full = _trainer(digits, "cuda", "pgd-at", "--attack-start", "zero")
    half = _trainer(digits, "cuda", "pgd-at", "--attack-start", "zero", "--bf16")
    x, y = _batch(digits, "cuda")
    with half.autocast:
        assert half.model(x).dtype == torch.bfloat16  # autocast is really on
    a, b = _steps(full, digits, 1), _steps(half, digits, 1)
    assert torch.isfinite(b).all()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0)
    assert cosine > 0.9, float(cosine)  # bf16 keeps ~3 digits: the direction, not the value


def test_channels_last_and_compile_give_the_plain_step(digits):
    plain = _trainer(digits, "cuda", "natural", model="preact-resnet18")
    fast = _trainer(digits, "cuda", "natural", "--channels-last", "--compile",
                    model="preact-resnet18")  # fmt: skip
    conv = next(p for p in fast.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert fast.net is not fast.model  # the compiled module trains
    a, b = _steps(plain, digits, 2), _steps(fast, digits, 2)
    assert torch.linalg.norm(b - a) <= 1e-3 * torch.linalg.norm(a)


def test_attacks_and_autoattack_on_cuda(digits):
    """Clean accuracy on CUDA is the CPU's; PGD-20 agrees up to a few images; AutoAttack on CUDA
    is at least as strong as PGD-20 and never above clean accuracy, class by class."""
    trainer = _trainer(digits, "cpu", "natural")
    x, y = _batch(digits, "cpu", 256)
    for _ in range(30):
        trainer.train_step(x, y)
    model = trainer.model
    split = stratified_subset(digits.test, 5, seed=0)
    kw = dict(num_classes=10, eps=digits.eps, step_size=digits.step_size, seed=0)
    cpu = evaluate_model(model, split, attacks=["clean", "pgd20"], device="cpu", **kw)
    gpu = evaluate_model(model, split, attacks=["clean", "pgd20", "aa"], device="cuda", **kw)
    assert gpu["clean"]["per_class"] == cpu["clean"]["per_class"]
    assert abs(gpu["pgd20"]["average"] - cpu["pgd20"]["average"]) <= 3 / len(split)
    for c in range(10):
        assert gpu["autoattack"]["per_class"][c] <= gpu["pgd20"]["per_class"][c] + 1e-12
        assert gpu["autoattack"]["per_class"][c] <= gpu["clean"]["per_class"][c] + 1e-12


class _Linear(torch.nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (class 1 on the positive side)."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), b

    def forward(self, x):
        score = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([-score, score], dim=1)


def test_certification_on_cuda_against_the_gaussian_probability():
    """For a linear classifier, P(class 1 | x + sigma N(0, I)) = Phi((w.x + b) / (sigma |w|)): the
    counts drawn on CUDA follow that binomial, and the certified radius is at most the distance
    to the hyperplane (the smoothed classifier's exact radius, sigma Phi^-1(p_top)) and close to
    it (Cohen et al. 2019, Theorem 1 and its tightness for linear classifiers)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 8, 8, generator=g, dtype=torch.float64).float()
    x = torch.rand(6, 1, 8, 8, generator=g)
    sigma, n, alpha = 0.5, 20_000, 0.001
    score = (x.flatten(1) @ w.flatten()).double()
    b = -float(score.median())
    distance = ((score + b) / w.double().norm()).numpy()
    p1 = stats.norm.cdf(distance / sigma)
    model = _Linear(w, b).cuda()
    gen = torch.Generator(device="cuda").manual_seed(1)
    counts = class_counts(model, x.cuda(), sigma=sigma, num=n, generator=gen).cpu()
    assert counts.sum(1).tolist() == [n] * len(x)
    z = (counts[:, 1].double().numpy() - n * p1) / (n * p1 * (1 - p1)) ** 0.5
    assert abs(z).max() < 5, z
    pred, radius = certify(model, x.cuda(), sigma=sigma, n0=100, n=n, alpha=alpha, generator=gen)
    for i in range(len(x)):
        p_top = max(p1[i], 1 - p1[i])
        if pred[i] < 0:  # abstains only near the boundary
            assert p_top < 0.52
            continue
        assert int(pred[i]) == int(p1[i] > 0.5)
        assert float(radius[i]) <= abs(distance[i]) + 1e-6
        slack = 6 * math.sqrt(p_top * (1 - p_top) / n) + 0.003
        assert float(radius[i]) >= sigma * stats.norm.ppf(max(0.5, p_top - slack)) - 1e-9


def test_checkpoints_move_between_cuda_and_the_cpu(digits, tmp_path):
    out = tmp_path / "gpu"
    argv = ["--method", "pgd-at", "--epochs", "1", "--train-per-class", "10", "--batch-size",
            "16", "--quiet", "--attack-steps", "2", "--final-attacks", "clean",
            "--final-n-per-class", "2", "--device", "cuda", "--out", str(out)]  # fmt: skip
    assert T.main(argv) in (0, None)
    x = digits.test.x[:32].float().div(255)
    on_cpu, _ = model_from_checkpoint(out / "last.pt", map_location="cpu")
    on_gpu, _ = model_from_checkpoint(out / "last.pt", map_location="cuda")
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())
    assert all(p.device.type == "cuda" for p in on_gpu.parameters())
    torch.testing.assert_close(on_gpu(x.cuda()).cpu(), on_cpu(x), rtol=1e-4, atol=1e-5)
    # a CPU run starts from the GPU's checkpoint (--init), a GPU run from a CPU checkpoint
    tuned = tmp_path / "cpu"
    common = argv[: argv.index("--device")]
    assert T.main([*common, "--device", "cpu", "--init", str(out / "last.pt"),
                   "--out", str(tuned)]) in (0, None)  # fmt: skip
    back = tmp_path / "back"
    assert T.main([*common, "--device", "cuda", "--init", str(tuned / "last.pt"),
                   "--out", str(back)]) in (0, None)  # fmt: skip
    for run in (tuned, back):
        assert json.loads((run / "final.json").read_text())["results"]["clean"]["average"] >= 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 CUDA devices")
def test_nccl_ddp_through_torchrun(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={port}", "-m", "deep.train", "--method", "faal-trades", "--epochs",
           "1", "--train-per-class", "20", "--batch-size", "16", "--quiet", "--attack-steps",
           "2", "--final-attacks", "clean", "--device", "cuda", "--debug", "--out",
           str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    hashes = line["debug_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # NCCL kept the two GPUs in step
    assert math.isclose(line["train"]["samples"], 2 * 16 * (200 // 32))
