"""deep.distributed under ``srun``: SLURM's environment turned into torch.distributed's, and two
processes started with only SLURM's variables forming one process group (no SLURM needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deep import distributed as dd

REPO = Path(__file__).resolve().parents[2]

#: What ``srun -n 4`` over two nodes gives task 3 (SLURM 22.05; ``env`` inside ``srun``).
SRUN_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_STEP_NODELIST": "gpu[07-08]",
}


@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("vm", "vm"),
        ("gpu[07-09,12],cpu1", "gpu07"),
        ("gpu[12,07-09]", "gpu12"),  # SLURM keeps the order it was given
        ("r[2-3]n[01-04]", "r2n01"),
        ("a-b[1,3],c", "a-b1"),
        ("node-1.cluster,node-2", "node-1.cluster"),
    ],
)
def test_first_host_of_a_slurm_host_list(nodelist, first):
    assert dd.first_host(nodelist) == first


@pytest.mark.parametrize("bad", ["", "gpu[07", "gpu]07[", "a[[1]]", "a[]"])
def test_first_host_refuses_what_is_not_a_host_list(bad):
    with pytest.raises(ValueError, match="not a SLURM host list"):
        dd.first_host(bad)


def test_srun_task_gets_rank_world_size_local_rank_and_the_rendezvous():
    env = dd.slurm_environment(SRUN_TASK)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",  # task 0 runs on the first node of the step
    }
    port = int(env["MASTER_PORT"])
    assert dd.SLURM_PORT_BASE <= port < dd.SLURM_PORT_BASE + dd.SLURM_PORT_SPAN <= 65535
    # every task of the step computes the same rendezvous
    other = dd.slurm_environment({**SRUN_TASK, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    assert (other["MASTER_ADDR"], other["MASTER_PORT"]) == ("gpu07", env["MASTER_PORT"])
    # another job, or another step of the same job, meets elsewhere
    ports = {
        dd.slurm_environment({**SRUN_TASK, "SLURM_JOB_ID": str(j), "SLURM_STEP_ID": str(s)})[
            "MASTER_PORT"
        ]
        for j in (4242, 4243, 4244)
        for s in (0, 1, 2)
    }
    assert len(ports) == 9


def test_the_step_list_wins_over_the_job_list_and_given_addresses_are_kept():
    step = {**SRUN_TASK, "SLURM_STEP_NODELIST": "gpu08"}
    assert dd.slurm_environment(step)["MASTER_ADDR"] == "gpu08"
    without = {k: v for k, v in SRUN_TASK.items() if k != "SLURM_STEP_NODELIST"}
    assert dd.slurm_environment(without)["MASTER_ADDR"] == "gpu07"
    given = dd.slurm_environment({**SRUN_TASK, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"})
    assert (given["MASTER_ADDR"], given["MASTER_PORT"]) == ("10.0.0.1", "1234")


@pytest.mark.parametrize(
    "env",
    [
        {},  # not under SLURM
        {**SRUN_TASK, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"},  # one task
        {k: v for k, v in SRUN_TASK.items() if k != "SLURM_STEP_ID"},  # the batch script itself
        {**SRUN_TASK, "RANK": "0", "WORLD_SIZE": "8"},  # torchrun inside an srun step
        {**SRUN_TASK, "TORCHELASTIC_RUN_ID": "x"},
    ],
)
def test_nothing_is_added_outside_a_multi_task_srun_step(env):
    assert dd.slurm_environment(env) == {}


def test_a_bad_slurm_variable_is_named():
    with pytest.raises(ValueError, match="SLURM_PROCID"):
        dd.slurm_environment({**SRUN_TASK, "SLURM_PROCID": "three"})


_RANK = """
import torch, torch.distributed as dist
from deep import distributed as dd
ctx = dd.init_distributed("cpu")
t = torch.tensor([float(ctx.rank + 1)])
dist.all_reduce(t)
print(ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend, int(t.item()), flush=True)
dd.shutdown(ctx)
dd.exit_process(0)
"""


def test_two_processes_with_only_slurm_variables_form_one_group():
    """As ``srun -n 2`` starts them: rank, world size and rendezvous from SLURM's variables only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MASTER_PORT=str(port))
    procs = []
    for rank in (0, 1):
        task = {**SRUN_TASK, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        task.update(SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_JOB_NODELIST="127.0.0.1",
                    SLURM_STEP_NODELIST="127.0.0.1")  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RANK],
                env={**base, **task},
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # sum of rank + 1 over two ranks = 3, on both
    assert [o.split()[-5:] for o in outs] == [
        ["0", "2", "0", "gloo", "3"],
        ["1", "2", "1", "gloo", "3"],
    ]
