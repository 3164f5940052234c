"""fairness_benchmark.py's SLURM options without a cluster: refused values, the canonical command,
and the job's own reading of its outcome (submitit's result file, SLURM's log)."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "fairness_benchmark.py"


def _module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("fairness_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--slurm-timeout-min", "0"], "--slurm-timeout-min must be >= 1"),
        (["--slurm-gpus-per-job", "-1"], "--slurm-gpus-per-job must be >= 0"),
        (["--slurm-cpus-per-job", "0"], "--slurm-cpus-per-job must be >= 1"),
        (["--slurm-poll-s", "0"], "--slurm-poll-s must be > 0"),
    ],
)
def test_bad_slurm_options_are_refused_in_one_line(argv, message, tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--executor", "slurm", "--status", "--out",
           str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), *argv]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cancel_needs_the_slurm_executor(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--cancel", "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--cancel: only with --executor slurm" in proc.stderr


def test_where_it_runs_is_not_part_of_the_benchmarks_command():
    fb = _module()
    argv = ["--seeds", "0,1", "--executor", "slurm", "--slurm-partition", "gpu",
            "--slurm-setup=source venv/bin/activate", "--slurm-setup", "module load cuda",
            "--slurm-timeout-min", "60", "--cancel", "--epochs", "3"]  # fmt: skip
    assert fb.canonical_command(argv) == (
        "python benchmarks/fairness_benchmark.py --seeds 0,1 --epochs 3"
    )


def test_a_jobs_error_and_its_slurm_notes_are_what_the_driver_reports(tmp_path):
    """submitit's result file of a failed job gives the exception from its last line naming one;
    SLURM's own lines (slurmstepd) are shown even when they are not among the last ones."""
    pytest.importorskip("submitit")
    import slurm_executor as se

    info = {"job_id": "7", "folder": str(tmp_path)}
    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in run\n'
        "RuntimeError: deep.train exited with -15; run.log:\n    $ python -m deep.train\n"
    )
    with open(tmp_path / "7_0_result.pkl", "wb") as f:
        pickle.dump(("error", traceback), f)
    outcome = se._result(info)
    assert outcome == ("error", traceback)
    assert se._error(outcome[1]).splitlines() == [
        "RuntimeError: deep.train exited with -15; run.log:",
        "    $ python -m deep.train",
    ]
    notes = "slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-12-02T05:39:19 ***"
    (tmp_path / "7_0_log.err").write_text(notes + "\n" + "\n".join(f"line {i}" for i in range(40)))
    tail = se.log_tail(info, n=5)
    assert "CANCELLED AT" in tail and "line 39" in tail and "line 20" not in tail
    assert not se._timed_out(info, "CANCELLED", outcome)
    assert se._timed_out(info, "TIMEOUT", None)
    assert se._timed_out(info, None, ("error", "slurm_executor.TimeLimitStop: stopped"))
    assert se.log_tail({"job_id": "8", "folder": str(tmp_path)}).endswith("never started)")
