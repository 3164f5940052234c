"""The benchmark's runs as SLURM jobs, through submitit (``fairness_benchmark.py --executor
slurm``).

Every job of the plan (a run from scratch, a fine-tuning, an AutoAttack evaluation) is its own
SLURM job. A fine-tuning is submitted with ``--dependency=afterok:<its base's job>``, AutoAttack
with one on its model's training job, both with ``--kill-on-invalid-dep=yes`` (a failed base
cancels what waits for it). Inside the job, :func:`run_job` rebuilds the benchmark from the
driver's command line and calls the same ``run_train`` / ``run_aa`` as the local runner, so the
per-run records land in the same place (``--out``, on the shared file system) with the same
content, and the report, ``--status`` and resumption are unchanged.

The driver follows its jobs without ``sacct`` (which needs SLURM's accounting daemon): each
submitted job leaves a small file next to its run folder (``<run>.slurm-train.json``,
``.slurm-aa.json``) with its job id; ``squeue`` says whether it is still queued or running, and
submitit's result file (or its absence) how it ended. Hence:

* rerunning the command finds the queued and running jobs again and submits only the others;
* a job that failed, was cancelled or killed is reported with the tail of its SLURM log and is
  submitted again by the next invocation;
* a job that reaches ``--slurm-timeout-min`` gets SIGINT shortly before its end (``--signal``):
  ``deep.train`` saves ``last.pt`` at the next step and stops; the driver submits the run again at
  once and the next job resumes from ``last.pt``;
* Ctrl-C (or SIGTERM) on the driver leaves the submitted jobs queued and running and prints the
  ``scancel`` command that would cancel them; ``--cancel`` cancels them.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

#: squeue states of a job that has not ended yet.
ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
}
#: Options that say where and how the benchmark runs, not what it computes.
WHERE_OPTIONS = {
    "--executor",
    "--slurm-partition",
    "--slurm-gpus-per-job",
    "--slurm-cpus-per-job",
    "--slurm-mem",
    "--slurm-timeout-min",
    "--slurm-account",
    "--slurm-setup",
    "--slurm-folder",
    "--slurm-poll-s",
}
#: Seconds a job may be gone from squeue before a missing result file means it died.
RESULT_GRACE_S = 5.0


def add_options(group) -> None:
    """The SLURM options, in ``build_parser``'s execution group."""
    group.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: --jobs processes on this machine; slurm: every run a SLURM job (submitit)",
    )
    group.add_argument(
        "--slurm-partition", default=None, help="SLURM partition (default: the default)"
    )
    group.add_argument("--slurm-gpus-per-job", type=int, default=0, help="GPUs of every SLURM job")
    group.add_argument(
        "--slurm-cpus-per-job",
        type=int,
        default=None,
        help="CPUs of every SLURM job (default: --threads)",
    )
    group.add_argument("--slurm-mem", default=None, help="memory of every SLURM job, e.g. 16G")
    group.add_argument(
        "--slurm-timeout-min",
        type=int,
        default=240,
        help="time limit of every SLURM job in minutes; a longer run continues from its last.pt "
        "in a new job",
    )
    group.add_argument("--slurm-account", default=None, help="SLURM account to charge")
    group.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        help="shell line run before each SLURM job, e.g. 'source venv/bin/activate' (repeatable)",
    )
    group.add_argument(
        "--slurm-folder", default=None, help="submitit's scripts and logs (default: <runs>/slurm)"
    )
    group.add_argument(
        "--slurm-poll-s", type=float, default=15.0, help="seconds between two squeue calls"
    )
    group.add_argument(
        "--cancel",
        action="store_true",
        help="with --executor slurm: cancel this benchmark's queued and running jobs; exit",
    )


def check_args(parser, args) -> None:
    """One-line errors for the SLURM options (``parse_args``)."""
    if args.executor != "slurm":
        if args.cancel:
            parser.error("--cancel: only with --executor slurm")
        return
    if args.slurm_gpus_per_job < 0:
        parser.error("--slurm-gpus-per-job must be >= 0")
    if args.slurm_cpus_per_job is not None and args.slurm_cpus_per_job < 1:
        parser.error("--slurm-cpus-per-job must be >= 1")
    if args.slurm_timeout_min < 1:
        parser.error("--slurm-timeout-min must be >= 1 (SLURM's time limits are whole minutes)")
    if not args.slurm_poll_s > 0:
        parser.error("--slurm-poll-s must be > 0")
    if args.status or args.report_only:
        return
    for command in ("sbatch", "squeue", "scancel"):
        if shutil.which(command) is None:
            parser.error(f"--executor slurm: {command} not found (is this a SLURM cluster?)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        parser.error("--executor slurm needs submitit: pip install 'robust-fairness[cluster]'")


# --------------------------------------------------------------------------------------------
# Inside the SLURM job
# --------------------------------------------------------------------------------------------
class TimeLimitStop(RuntimeError):
    """The job was told its time limit is near; the run saved its progress and stopped."""


def run_job(argv: list[str], cwd: str, kind: str, row_name: str, seed: int) -> str:
    """One job of the benchmark, in a SLURM job: ``run_train`` or ``run_aa`` of the benchmark given
    by its command line ``argv`` (run from ``cwd``), exactly as the local runner calls them."""
    os.chdir(cwd)
    import fairness_benchmark as fb

    args = fb.parse_args(argv)
    store = fb.Store(args, fb.build_rows(args, fb._available_methods()))
    job = fb.Job(kind, store.rows[row_name], seed)
    stop = []
    # SLURM sends SIGINT to every process of the job before its time limit (--signal): deep.train
    # saves and stops at the next step; this process waits for it instead of dying first.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
    try:
        (fb.run_train if kind == "train" else fb.run_aa)(store, job)
    except RuntimeError as exc:
        if stop:
            raise TimeLimitStop(f"stopped by SIGINT (time limit near): {exc}") from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return "done"


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
def job_file(store, job) -> Path:
    """Where the driver keeps the SLURM job id of ``job`` (next to its run folder)."""
    run_dir = store.run_dir(job.row, job.seed)
    return run_dir.with_name(f"{run_dir.name}.slurm-{job.kind}.json")


def _read_job(store, job) -> dict | None:
    path = job_file(store, job)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def squeue_states() -> dict[str, str]:
    """``{job id: state}`` of every job squeue lists (ended jobs stay listed for a few minutes)."""
    proc = subprocess.run(
        ["squeue", "-h", "-a", "-t", "all", "-o", "%i %T"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"squeue failed: {proc.stderr.strip()}")
    return dict(line.split()[:2] for line in proc.stdout.splitlines() if line.strip())


def _paths(info: dict):
    from submitit.core.utils import JobPaths

    return JobPaths(info["folder"], job_id=info["job_id"], task_id=0)


def _result(info: dict) -> tuple[str, str] | None:
    """submitit's outcome of a job: ("success", value) or ("error", traceback); None if none."""
    path = _paths(info).result_pickle
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def _error(traceback: str) -> str:
    """The exception of a job's traceback: from its last ``Name: message`` line to the end."""
    lines = traceback.strip().splitlines()
    starts = [i for i, ln in enumerate(lines) if re.match(r"[\w.]+(Error|Exception|Stop): ", ln)]
    return "\n".join(lines[starts[-1] if starts else -1 :])


def log_tail(info: dict, n: int = 15) -> str:
    """The last lines of the job's SLURM log (its stderr, then its stdout), after SLURM's own
    notes in it (``slurmstepd: ... CANCELLED``, ``DUE TO TIME LIMIT``, out of memory)."""
    lines = []
    paths = _paths(info)
    for path in (paths.stderr, paths.stdout):
        if Path(path).exists():
            text = Path(path).read_text(errors="replace").splitlines()
            notes = [ln for ln in text[:-n] if ln.startswith("slurmstepd")]
            lines += [f"  {path}:"] + ["    " + ln for ln in notes + text[-n:]]
    return "\n".join(lines) if lines else "  (no SLURM log: the job never started)"


def _executor(args):
    import submitit

    folder = Path(args.slurm_folder or Path(args.runs) / "slurm").resolve()
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    benchmarks = Path(__file__).resolve().parent
    path = f"{benchmarks}:{benchmarks.parent}"
    params = {
        "time": args.slurm_timeout_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": args.slurm_cpus_per_job or args.threads,
        "setup": [f"export PYTHONPATH={shlex.quote(path)}${{PYTHONPATH:+:$PYTHONPATH}}"]
        + list(args.slurm_setup),
        "stderr_to_stdout": False,
    }
    for name, value in (
        ("partition", args.slurm_partition),
        ("account", args.slurm_account),
        ("mem", args.slurm_mem),
        ("gpus_per_node", args.slurm_gpus_per_job or None),
    ):
        if value is not None:
            params[name] = value
    executor.update_parameters(**params)
    return executor


def _submit(executor, args, argv, store, job, after: list[str]) -> dict:
    # SIGINT to every process of the job shortly before its time limit (submitit's USR2 would kill
    # deep.train without a save); a failed dependency cancels the job instead of keeping it queued.
    extra = {"signal": f"INT@{min(90, 30 * args.slurm_timeout_min)}", "kill-on-invalid-dep": "yes"}
    if after:
        extra["dependency"] = "afterok:" + ":".join(after)
    executor.update_parameters(
        job_name=f"rf-{job.kind}-{job.row.name}-seed{job.seed}", additional_parameters=extra
    )
    submitted = executor.submit(run_job, argv, os.getcwd(), job.kind, job.row.name, job.seed)
    info = {
        "job_id": str(submitted.job_id),
        "folder": str(executor.folder),
        "job": job.name,
        "submitted": time.time(),
    }
    path = job_file(store, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info) + "\n")
    return info


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _progressed(store, job, info: dict) -> bool:
    """Did the job save a checkpoint of its run after it was submitted?"""
    last = store.run_dir(job.row, job.seed) / "last.pt"
    return job.kind == "train" and last.exists() and last.stat().st_mtime > info["submitted"]


def _timed_out(info: dict, state: str | None, outcome) -> bool:
    """Did the job end at its time limit (SIGINT before it, or killed by it)?"""
    if state == "TIMEOUT" or (outcome and outcome[0] == "error" and "TimeLimitStop" in outcome[1]):
        return True
    err = Path(_paths(info).stderr)
    return err.exists() and "DUE TO TIME LIMIT" in err.read_text(errors="replace")


def active_jobs(store, jobs) -> dict:
    """``{job name: (info, state)}`` of the planned jobs whose SLURM job is queued or running."""
    states = squeue_states()
    out = {}
    for job in jobs:
        info = _read_job(store, job)
        if info and states.get(info["job_id"]) in ACTIVE:
            out[job.name] = (info, states[info["job_id"]])
    return out


def print_jobs(store, jobs) -> None:
    """``--status``: the SLURM job of every planned job that has one."""
    try:
        states = squeue_states()
    except (OSError, RuntimeError) as exc:
        print(f"SLURM jobs: unknown ({exc})")
        return
    lines = []
    for job in jobs:
        info = _read_job(store, job)
        if info:
            state = states.get(info["job_id"])
            if state not in ACTIVE:
                state = (
                    f"ended without a record{f' ({state})' if state else ''}; resubmitted next time"
                )
            lines.append(f"  {job.name}: SLURM job {info['job_id']} {state}")
    print("\n".join([f"SLURM jobs ({len(lines)}):", *lines]) if lines else "SLURM jobs: none")


def cancel(store, jobs) -> int:
    """``--cancel``: scancel this benchmark's queued and running jobs."""
    ids = [info["job_id"] for info, _ in active_jobs(store, jobs).values()]
    if not ids:
        print("no queued or running SLURM job of this benchmark")
        return 0
    subprocess.run(["scancel", *ids], check=True)
    print(f"cancelled SLURM jobs {' '.join(ids)}")
    return 0


def run(store, jobs, argv: list[str], on_done) -> list[str]:
    """Submit what is neither recorded nor queued, follow every job until it ends; the failures.

    ``on_done()`` is called after each job that succeeded (the driver rewrites the report).
    Raises KeyboardInterrupt after telling how to cancel the jobs that are left running.
    """
    args = store.args
    executor = _executor(args)
    tracked = {name: info for name, (info, state) in active_jobs(store, jobs).items()}
    by_name = {job.name: job for job in jobs}
    if tracked:
        _say(f"{len(tracked)} jobs already queued or running: following them")
    for job in jobs:
        info = _read_job(store, job)
        if job.name not in tracked and info is not None:
            _say(
                f"{job.name}: SLURM job {info['job_id']} ended without a record; submitted again"
                f"\n{log_tail(info)}"
            )
    failed, ended_at = [], {}
    try:
        for job in jobs:
            if job.name not in tracked:
                after = [tracked[d.name]["job_id"] for d in job.deps if d.name in tracked]
                tracked[job.name] = _submit(executor, args, argv, store, job, after)
                waits = f" after {', '.join(after)}" if after else ""
                _say(f"submitted {job.name}: SLURM job {tracked[job.name]['job_id']}{waits}")
        pending = dict(tracked)
        while pending:
            time.sleep(args.slurm_poll_s)
            try:
                states = squeue_states()
            except (OSError, RuntimeError) as exc:  # a busy or restarting slurmctld: ask again
                _say(f"{exc}; asking again in {args.slurm_poll_s:g} s")
                continue
            for name, info in list(pending.items()):
                job = by_name[name]
                state = states.get(info["job_id"])
                if state in ACTIVE:
                    continue
                outcome = _result(info)
                if outcome is None:  # ended without its result file: killed, or not yet visible
                    first = ended_at.setdefault(info["job_id"], time.time())
                    if time.time() - first < RESULT_GRACE_S:
                        continue
                del pending[name]
                if outcome is not None and outcome[0] == "success":
                    job_file(store, job).unlink(missing_ok=True)
                    _say(f"done  {job.name} (SLURM job {info['job_id']})")
                    on_done()
                    continue
                how = state or "ended"
                if _timed_out(info, state, outcome) and _progressed(store, job, info):
                    pending[name] = tracked[name] = _submit(executor, args, argv, store, job, [])
                    new = tracked[name]["job_id"]
                    _say(f"{job.name}: SLURM job {info['job_id']} reached its time limit; "
                         f"continues from last.pt in SLURM job {new}")  # fmt: skip
                    continue
                if any(d.name in failed for d in job.deps):
                    failed.append(name)
                    _say(f"FAILED {job.name}: a run it needs failed (job {info['job_id']} {how})")
                    continue
                failed.append(name)
                error = _error(outcome[1]) if outcome else f"SLURM job {how}"
                tail = log_tail(info)
                _say(f"FAILED {job.name} (SLURM job {info['job_id']} {how}): {error}\n{tail}")
    except KeyboardInterrupt:
        left = [info["job_id"] for info, _ in active_jobs(store, jobs).values()]
        if left:
            _say(
                f"interrupted: {len(left)} SLURM jobs keep running; rerun the command to follow "
                f"them, cancel them with:  scancel {' '.join(left)}  (or rerun with --cancel)"
            )
        raise
    return [f"{name}: see its SLURM log above" for name in failed]


class SlurmScheduler:
    """The local ``Scheduler``'s interface (``run()``, then ``failed``) over :func:`run`."""

    def __init__(self, store, jobs, argv: list[str], on_done) -> None:
        self.store, self.jobs, self.argv, self.on_done = store, jobs, argv, on_done
        self.failed: list[str] = []

    def run(self) -> None:
        self.failed = run(self.store, self.jobs, self.argv, self.on_done)


if __name__ == "__main__":
    sys.exit("run benchmarks/fairness_benchmark.py --executor slurm")
