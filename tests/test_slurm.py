"""On a real SLURM (``benchmarks/slurm_cluster.sh start``): the benchmark through submitit and
``deep.train`` under ``srun``.

Skipped, with one line saying why, where no SLURM cluster answers; CI sets ``RF_SLURM_REQUIRED=1``
and starts the cluster first, and there a missing cluster fails these tests instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "fairness_benchmark.py"
DEFAULT_CONF = Path(os.environ.get("RF_SLURM_DIR", "/tmp/robust-fairness-slurm")) / "slurm.conf"

pytestmark = pytest.mark.slurm

#: The tiny benchmark of tests/test_fairness_benchmark.py, one seed: a base, its FAAL fine-tuning
#: (submitted after its base) and AutoAttack of both (after their models).
TINY = [
    "--dataset", "digits", "--model", "small-cnn", "--epochs", "1", "--finetune-epochs", "1",
    "--train-per-class", "12", "--val-per-class", "3", "--test-per-class", "6",
    "--aa-per-class", "1", "--seeds", "0", "--aa-seeds", "0", "--aa-key-seeds", "0",
    "--attack-steps", "2", "--batch-size", "32", "--scratch", "pgd-at", "--finetune",
    "pgd-at:faal-at",
]  # fmt: skip
SLURM = ["--executor", "slurm", "--slurm-poll-s", "0.5", "--slurm-timeout-min", "10"]


def _cluster_env() -> tuple[dict | None, str]:
    """(environment for SLURM's commands, '') when a cluster answers, else (None, why not)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    if "SLURM_CONF" not in env and DEFAULT_CONF.exists():
        env["SLURM_CONF"] = str(DEFAULT_CONF)
    for name in ("sbatch", "srun", "squeue", "sinfo", "scancel"):
        if shutil.which(name) is None:
            return None, f"{name} not found (apt-get install slurm-client slurmd slurmctld munge)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return None, "submitit is not installed (pip install -e '.[cluster]')"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer in 20 s; start: benchmarks/slurm_cluster.sh start"
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in states):
        why = (proc.stderr.strip().splitlines() or [f"node state {states}"])[-1]
        return (
            None,
            f"no SLURM cluster answers ({why}); start one: benchmarks/slurm_cluster.sh start",
        )
    return env, ""


@pytest.fixture(scope="module")
def slurm_env():
    env, why = _cluster_env()
    if env is None:
        if os.environ.get("RF_SLURM_REQUIRED") == "1":
            pytest.fail(f"RF_SLURM_REQUIRED=1 but {why}")
        pytest.skip(why)
    return env


def _start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _bench(tmp: Path, env: dict, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(SCRIPT), *TINY, "--runs", str(tmp / "runs"), "--out",
           str(tmp / "out"), *extra]  # fmt: skip
    return _start(cmd, env)


def _finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _read_until(proc: subprocess.Popen, text: str) -> str:
    """The driver's output up to the line that holds ``text`` (or to its end)."""
    seen = ""
    while text not in seen:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    return seen


def _records(out: Path) -> dict[str, dict]:
    """The per-run records, without what differs between two runs of the same computation: the
    times, the CPU seconds, the folders, the provenance (a commit may land in between)."""
    drop = {"seconds", "epoch_time_s", "cpu_seconds", "cpu_complete", "checkpoint"}

    def clean(value):
        if isinstance(value, dict):
            return {
                k: clean(v) for k, v in value.items() if k not in drop and "provenance" not in k
            }
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    files = sorted(out.glob("*_runs/*/seed*.json"))
    return {f"{p.parent.name}/{p.name}": clean(json.loads(p.read_text())) for p in files}


def _states(env: dict) -> dict[str, str]:
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())


def _wait(predicate, timeout: float = 120, what: str = "", proc=None) -> None:
    end = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended before {what}:\n{proc.stdout.read()}")
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_benchmark_through_slurm_gives_the_local_records(slurm_env, tmp_path):
    local = _bench(tmp_path / "local", slurm_env, "--jobs", "2")
    slurm = _bench(tmp_path / "slurm", slurm_env, *SLURM)
    code, out = _finish(slurm)
    assert code == 0, out
    code_local, out_local = _finish(local)
    assert code_local == 0, out_local
    # every run its own SLURM job; the fine-tuning after its base, AutoAttack after its model
    ids = dict(re.findall(r"submitted (.+? seed 0): SLURM job (\d+)", out))
    assert sorted(ids) == ["aa pgd-at seed 0", "aa pgd-at+faal-at seed 0", "train pgd-at seed 0",
                           "train pgd-at+faal-at seed 0"]  # fmt: skip
    folder = tmp_path / "slurm" / "runs" / "slurm"

    def dependency(name):
        script = (folder / f"{ids[name]}_submission.sh").read_text()
        found = re.findall(r"--dependency=afterok:(\S+)", script)
        return found[0].split(":") if found else []

    assert dependency("train pgd-at seed 0") == []
    assert dependency("train pgd-at+faal-at seed 0") == [ids["train pgd-at seed 0"]]
    assert dependency("aa pgd-at seed 0") == [ids["train pgd-at seed 0"]]
    assert dependency("aa pgd-at+faal-at seed 0") == [ids["train pgd-at+faal-at seed 0"]]
    for name in ids:  # the jobs really ran in SLURM: SLURM's variables in the job, by submitit
        assert (folder / f"{ids[name]}_0_result.pkl").exists(), name
    # the same records as the local runner (CPU training is deterministic), AutoAttack included
    slurm_records = _records(tmp_path / "slurm" / "out")
    assert sorted(slurm_records) == ["pgd-at+faal-at/seed0.json", "pgd-at/seed0.json"]
    assert slurm_records == _records(tmp_path / "local" / "out")
    assert "autoattack" in slurm_records["pgd-at/seed0.json"]
    # nothing left: a rerun submits nothing, --status says so
    again = _bench(tmp_path / "slurm", slurm_env, *SLURM)
    code, out = _finish(again)
    assert code == 0 and "submitted" not in out, out
    code, out = _finish(_bench(tmp_path / "slurm", slurm_env, *SLURM, "--status"))
    assert "2/2 runs recorded; 0 jobs to do" in out and "SLURM jobs: none" in out, out


def test_a_run_through_interruptions_cancellation_time_limit_and_a_killed_job(slurm_env, tmp_path):
    """One run, its SLURM jobs cut in every way the executor must survive, ends with every epoch
    done exactly once and one record. A job starts only while the file ``go`` exists (a
    ``--slurm-setup`` line), so the test decides when each job may run."""
    go = tmp_path / "go"
    extra = [*SLURM, "--finetune", "", "--aa-per-class", "0", "--epochs", "30",
             "--slurm-setup", f"until [ -e {go} ]; do sleep 0.2; done"]  # fmt: skip
    folder = tmp_path / "runs" / "pgd-at"
    job_file = lambda: list(folder.glob("*.slurm-train.json"))  # noqa: E731
    job_id = lambda: json.loads(job_file()[0].read_text())["job_id"]  # noqa: E731
    epochs = lambda: sum(1 for _ in folder.glob("*/metrics.jsonl") for _ in _.open())  # noqa: E731

    # Ctrl-C on the driver leaves the job queued or running and says how to cancel it
    driver = _bench(tmp_path, slurm_env, *extra)
    _wait(job_file, what="the job file", proc=driver)
    first = job_id()
    driver.send_signal(signal.SIGINT)
    code, out = _finish(driver)
    assert code == 130 and f"scancel {first}" in out, out
    assert _states(slurm_env)[first] in ("PENDING", "CONFIGURING", "RUNNING"), out
    # the next call follows it instead of submitting it again
    driver = _bench(tmp_path, slurm_env, *extra)
    seen = _read_until(driver, "following them")
    assert "1 jobs already queued or running: following them" in seen, seen
    # a killed job is reported with the tail of its SLURM log ...
    _wait(lambda: _states(slurm_env)[first] == "RUNNING", what="the job to run", proc=driver)
    subprocess.run(["scancel", first], env=slurm_env, check=True)
    code, out = _finish(driver)
    out = seen + out
    assert code == 1 and "submitted train" not in out, out
    assert f"FAILED train pgd-at seed 0 (SLURM job {first} CANCELLED)" in out, out
    assert f"{first}_0_log.err" in out and "CANCELLED AT" in out, out
    code, status = _finish(_bench(tmp_path, slurm_env, *extra, "--status"))
    assert f"SLURM job {first} ended without a record" in status, status

    # ... and submitted again by the next call. SLURM's warning before the time limit
    # (--signal=INT@..., sent here at once): deep.train saves and stops at its next step, and the
    # driver submits the run again at once
    go.touch()
    driver = _bench(tmp_path, slurm_env, *extra)
    seen = _read_until(driver, "submitted train")
    assert f"SLURM job {first} ended without a record; submitted again" in seen, seen
    _wait(lambda: job_id() != first, what="the new job file", proc=driver)
    second = job_id()
    _wait(lambda: epochs() >= 1, 300, "an epoch of the new job", proc=driver)
    go.unlink()  # the next job waits
    subprocess.run(["scancel", "--signal=INT", second], env=slurm_env, check=True)
    seen += _read_until(driver, "continues from last.pt")
    assert f"SLURM job {second} reached its time limit" in seen, seen
    _wait(lambda: job_id() != second, what="the third job file", proc=driver)
    third = job_id()
    stopped_at = epochs()
    assert 1 <= stopped_at < 30
    # Ctrl-C on the driver, then --cancel cancels what it left queued or running
    driver.send_signal(signal.SIGINT)
    code, out = _finish(driver)
    assert code == 130 and f"scancel {third}" in out, seen + out
    code, out = _finish(_bench(tmp_path, slurm_env, *extra, "--cancel"))
    assert code == 0 and f"cancelled SLURM jobs {third}" in out, out
    _wait(lambda: _states(slurm_env).get(third, "CANCELLED") == "CANCELLED", 60, "scancel")
    code, out = _finish(_bench(tmp_path, slurm_env, *extra, "--cancel"))
    assert "no queued or running SLURM job of this benchmark" in out, out
    # the last call resumes the run from its last.pt and ends it
    go.touch()
    code, out = _finish(_bench(tmp_path, slurm_env, *extra))
    assert code == 0, out
    assert f"SLURM job {third} ended without a record; submitted again" in out, out
    lines = [json.loads(ln) for ln in next(folder.glob("*/metrics.jsonl")).open()]
    assert [m["epoch"] for m in lines] == list(range(1, 31))  # every epoch once, to the end
    log = next(folder.glob("*.log")).read_text()
    assert "--resume" in log.split("$ ")[-1]
    assert list(_records(tmp_path / "out")) == ["pgd-at/seed0.json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_srun_two_tasks_trains_the_model_torchrun_trains(slurm_env, tmp_path):
    """``srun -n 2 python -m deep.train`` (rank, world size and rendezvous from SLURM's variables)
    and ``torchrun --nproc_per_node 2`` with the same options end with identical parameters."""
    options = ["-m", "deep.train", "--method", "faal-trades", "--epochs", "1",
               "--train-per-class", "10", "--batch-size", "16", "--quiet", "--threads", "1",
               "--attack-steps", "2", "--val-per-class", "4", "--final-attacks", "clean",
               "--final-n-per-class", "2", "--debug"]  # fmt: skip
    srun_cmd = ["srun", "-n", "2", "--cpus-per-task", "1", sys.executable]
    srun = _start([*srun_cmd, *options, "--out", str(tmp_path / "srun")], slurm_env)
    torchrun_cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(_free_port())]  # fmt: skip
    torchrun = _start([*torchrun_cmd, *options, "--out", str(tmp_path / "torchrun")], slurm_env)
    for proc in (srun, torchrun):
        code, out = _finish(proc, 300)
        assert code == 0, out[-3000:]
    lines = {}
    for name in ("srun", "torchrun"):
        lines[name] = [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").open()]
        hashes = lines[name][0]["debug_hashes"]
        assert len(hashes) == 2 and hashes[0] == hashes[1]  # two ranks, in step
        assert lines[name][0]["train"]["samples"] == 96  # both ranks' shards: 2 x 3 x 16
    assert lines["srun"][0]["debug_hashes"] == lines["torchrun"][0]["debug_hashes"]
    a = torch.load(tmp_path / "srun" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "torchrun" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "nodelist", ["vm", "gpu[07-09,12],cpu1", "gpu[12,07-09]", "r[2-3]n[01-04]", "a-b[1,3],c"]
)
def test_first_host_is_the_first_that_scontrol_lists(slurm_env, nodelist):
    """SLURM's own expansion of a host list is the reference for the rendezvous host."""
    from deep.distributed import first_host

    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], env=slurm_env,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert first_host(nodelist) == hosts[0]
