"""deep.progress and deep.runtime: plain progress lines off a terminal (rate, ETA, fields read
only when printed), the thread policy, Ctrl-C as exit 130, and --help without empty defaults."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import torch

from deep.progress import Progress, format_duration, progress_mode
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
    output_dir_problem,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_the_interval_with_rate_eta_and_lazy_fields():
    clock, stream, reads = Clock(), io.StringIO(), []

    def loss():
        reads.append(1)
        return "0.5000"

    bar = Progress(100, "epoch 1/3", interval=30.0, stream=stream, clock=clock)
    assert bar.mode == "lines"
    for _ in range(20):  # 20 steps of 2 s: lines at 30 s and 60 s only
        clock.now += 2.0
        bar.update(1, loss=loss)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and len(reads) == 1  # the loss is read only for the printed line
    clock.now += 20.0  # 60 s after the start: 21 steps done
    bar.update(1, loss=loss)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    # 21 steps in 60 s -> 0.35 step/s; 79 left -> 226 s = 3m46s.
    assert lines[1] == "epoch 1/3: step 21/100 (21.0%), 0.35 step/s, ETA 3m46s, loss 0.5000"
    bar.close()


def test_resumed_work_counts_only_new_units_and_zero_interval_prints_every_update():
    clock, stream = Clock(), io.StringIO()
    bar = Progress(10, "", interval=0, initial=6, stream=stream, clock=clock, unit="batch")
    clock.now += 4.0
    bar.update(2)
    assert stream.getvalue().strip() == "batch 8/10 (80.0%), 0.5 batch/s, ETA 4s"
    bar.advance_to(8)  # no-op
    assert len(stream.getvalue().splitlines()) == 1


def test_modes_and_durations():
    assert progress_mode(stream=Tty()) == "bar"
    assert progress_mode(stream=io.StringIO()) == "lines"
    assert progress_mode(enabled=False, stream=Tty()) == "off"
    quiet = io.StringIO()
    bar = Progress(3, "x", enabled=False, interval=0, stream=quiet)
    bar.update(3, loss=lambda: pytest.fail("a quiet bar reads nothing"))
    assert quiet.getvalue() == ""
    assert [format_duration(s) for s in (5, 95.2, 4000, float("nan"))] == [
        "5s",
        "1m35s",
        "1h06m",
        "?",
    ]
    with pytest.raises(ValueError, match="interval"):
        Progress(3, interval=-1)


def test_thread_policy():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert apply_thread_policy(None, "cpu", "small-cnn") == 1
        torch.set_num_threads(2)
        assert apply_thread_policy(None, "cpu", "preact-resnet18") == 2  # torch's choice kept
        assert apply_thread_policy(3, "cpu", "small-cnn") == 3  # explicit wins
        with pytest.raises(ValueError, match="--threads must be >= 1"):
            apply_thread_policy(0, "cpu", "small-cnn")
    finally:
        torch.set_num_threads(before)


def test_interrupt_is_one_line_and_exit_130(capsys):
    with pytest.raises(SystemExit) as exc:
        with exit_on_interrupt("evaluation", note="; nothing was written"):
            raise KeyboardInterrupt
    assert exc.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err == "evaluation interrupted; nothing was written"


def test_help_shows_only_meaningful_defaults():
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="architecture (default: per dataset)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument("--quiet", action="store_true", help="no output")
    # 0 == False in Python, yet a default of 0 says something
    parser.add_argument("--seed", type=int, default=0, help="seed")
    add_threads_option(parser)
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "learning rate (default: 0.1)" in " ".join(text.split())
    assert "seed (default: 0)" in " ".join(text.split())
    assert "(default: per dataset)" in text


@pytest.mark.parametrize("cli", ["deep.train", "deep.evaluate", "sim.gaussian_demo", "figures"])
def test_cli_help_has_no_empty_defaults_and_names_no_spec(cli):
    if cli == "figures":
        from paper_figures.common import build_parser

        parser = build_parser("frl_tables", "FRL Tables 2-3")
    else:
        module = __import__(cli, fromlist=["build_parser"])
        parser = module.build_parser()
    text = parser.format_help()
    assert "(default: None)" not in text and "SPEC" not in text
    assert "(default: [" not in text and "(default: (" not in text  # lists read as typed
    if cli.startswith("deep."):
        assert "--threads" in text and "--progress-interval" in text


# --------------------------------------------------------------------------------------------
# Errors first, output folders, budgets as typed, all-or-nothing outputs
# --------------------------------------------------------------------------------------------
def test_parser_error_comes_first_with_one_line_usage(capsys):
    parser = CLIParser(prog="python -m tool")
    parser.add_argument("--checkpoint", required=True)
    for i in range(30):
        parser.add_argument(f"--option-{i}", help="an option")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--option-1"])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "python -m tool: error: argument --option-1: expected one argument",
        "usage: python -m tool --checkpoint CHECKPOINT [options]; see python -m tool --help",
    ]
    assert "--option-29" in parser.format_help()  # --help still lists every option


@pytest.mark.parametrize(
    "text, value",
    [("8/255", 8 / 255), (" 2 / 255 ", 2 / 255), ("0.5", 0.5), ("1e-2", 0.01), ("3", 3.0)],
)
def test_budget_values_as_users_type_them(text, value):
    assert budget_value(text) == value


@pytest.mark.parametrize("text", ["8/0", "abc", "8/255/2", "inf", "nan", "", "1/x"])
def test_budget_values_that_mean_nothing_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="8/255|finite"):
        budget_value(text)


def test_budget_echo_names_the_pixel_fraction():
    assert format_budget(8 / 255) == "0.0313725 (8/255)"
    assert format_budget(0.5) == "0.5"
    assert format_budget(1.0) == "1 (255/255)"


def test_output_folder_problems_are_found_without_creating_anything(tmp_path):
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    assert "is a file" in output_dir_problem(a_file)
    assert f"lies under {a_file}" in output_dir_problem(a_file / "sub" / "dir")
    assert output_dir_problem(tmp_path / "new" / "deeper") is None
    assert output_dir_problem(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_unwritable_output_folder_is_found(tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    target = locked if not os.access(locked, os.W_OK) else Path("/proc/1/new-run")
    if os.access(target.parent if target.name == "new-run" else target, os.W_OK):
        pytest.skip("no unwritable folder available to this user")
    assert "not writable" in output_dir_problem(target)


def test_a_name_the_file_system_refuses_is_found(tmp_path):
    """A component longer than NAME_MAX (255 on Linux and macOS): os.stat raises ENAMETOOLONG."""
    problem = output_dir_problem(tmp_path / ("x" * 300) / "run")
    assert problem is not None and "too long" in problem.lower()


def _real_error(action) -> OSError:
    try:
        action()
    except OSError as exc:
        return exc
    raise AssertionError("the action did not fail")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_file_system_errors_end_in_one_line_naming_the_file(tmp_path, capsys):
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    errors = {
        "folder under a file": _real_error(lambda: (a_file / "run").mkdir(parents=True)),
        "full disk": _real_error(lambda: Path("/dev/full").write_bytes(b"x" * 65536)),
        "missing file": _real_error(lambda: (tmp_path / "none.pt").read_bytes()),
    }
    for what, error in errors.items():
        with pytest.raises(SystemExit) as ended, exit_on_file_error("python -m deep.train"):
            raise error
        assert ended.value.code == 1, what
        err = capsys.readouterr().err
        assert err.startswith("python -m deep.train: error: ") and err.count("\n") == 1, what
        assert error.strerror in err, what
        if what != "full disk":  # a write to a full disk names no file
            assert str(error.filename) in err, what
    # a caller's own way to end the process gets status 1 after the line is printed
    ends = []
    with pytest.raises(SystemExit), exit_on_file_error("prog", exit_with=ends.append):
        raise FileNotFoundError(2, "No such file or directory", "/x")
    assert ends == [1] and capsys.readouterr().err == "prog: error: No such file or directory: /x\n"
    # errors that are not the file system's keep their traceback
    for other in (ConnectionResetError(104, "Connection reset by peer"), ValueError("bad")):
        with pytest.raises(type(other)), exit_on_file_error("python -m deep.train"):
            raise other


def test_a_command_whose_folder_cannot_be_made_ends_in_one_line(tmp_path):
    """`python -m deep.train` when creating its run folder fails after the checks (a file system
    that refuses it, a full disk): the error line names the folder, exit status 1, reached through
    deep.distributed.exit_process (which ends a torchrun rank without the C++ teardown)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    script = (
        "import errno, os, pathlib, runpy, sys\n"
        "def refuse(self, *a, **k):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))\n"
        "pathlib.Path.mkdir = refuse\n"
        "import deep.distributed as dd\n"
        "ended = dd.exit_process\n"
        "def note(code):\n"
        "    print(f'exit_process({code})', file=sys.stderr, flush=True)\n"
        "    ended(code)\n"
        "dd.exit_process = note\n"
        f"sys.argv = ['deep.train', '--out', {str(out)!r}, '--epochs', '1']\n"
        "runpy.run_module('deep.train', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-2:] == [
        f"python -m deep.train: error: No space left on device: {out}",
        "exit_process(1)",
    ]
    assert not out.exists()


def test_all_or_nothing_removes_what_an_unfinished_block_added(tmp_path):
    fresh = tmp_path / "a" / "b" / "run"
    with pytest.raises(KeyboardInterrupt), all_or_nothing(fresh):
        fresh.mkdir(parents=True)
        (fresh / "fig.png").write_bytes(b"png")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # the folders made for it are gone too
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "old.txt").write_text("old")
    with pytest.raises(SystemExit), all_or_nothing(kept):
        (kept / "new.png").write_bytes(b"png")
        (kept / "sub").mkdir()
        raise SystemExit(2)
    assert [p.name for p in kept.iterdir()] == ["old.txt"]
    with all_or_nothing(kept):  # a finished block keeps everything
        (kept / "new.png").write_bytes(b"png")
    assert sorted(p.name for p in kept.iterdir()) == ["new.png", "old.txt"]


@pytest.mark.parametrize(
    "command",
    [
        ["benchmarks/fairness_benchmark.py", "--status"],
        ["-m", "paper_figures", "list"],
        ["benchmarks/selection_ties.py"],
    ],
    ids=["benchmark-status", "paper-figures-list", "selection-ties"],
)
def test_a_listing_whose_reader_went_away_ends_without_a_traceback(command):
    """`... | head`: the reader closes the pipe before the listing is printed."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, *command], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before the child has imported anything, let alone printed
    _, stderr = proc.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()
    assert proc.returncode in (0, 1, -13)  # finished, or ended by SIGPIPE as Unix tools are


# --------------------------------------------------------------------------------------------
# --version: what a bug report needs, from every command
# --------------------------------------------------------------------------------------------
def _main_of(cli: str):
    if cli == "benchmarks/fairness_benchmark.py":
        from tests.test_fairness_benchmark import _load_module

        return _load_module().main
    return __import__(cli, fromlist=["main"]).main


@pytest.mark.parametrize(
    "cli",
    ["deep.train", "deep.evaluate", "deep.certify", "sim.gaussian_demo", "paper_figures.__main__",
     "benchmarks/fairness_benchmark.py"],
)  # fmt: skip
def test_every_command_prints_its_versions(cli, capsys):
    import importlib.metadata
    import platform

    main = _main_of(cli)
    try:
        status = main(["--version"])
    except SystemExit as exc:
        status = exc.code
    assert status in (0, None)
    out = capsys.readouterr().out.strip()
    assert out == (
        f"robust-fairness {importlib.metadata.version('robust-fairness')} "
        f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, "
        f"CPU {torch.backends.cpu.get_cpu_capability()}"
        f"{'+AMX' if 'amx_tile' in _cpu_flags() else ''}, Python {platform.python_version()})"
    )


def _cpu_flags() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.read_text().split() if cpuinfo.exists() else []


def test_version_says_when_the_package_is_not_installed(monkeypatch):
    import importlib.metadata

    from deep import runtime

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert runtime.package_version() is None
    assert runtime.version_line().startswith("robust-fairness unknown (not installed) (torch ")


def test_version_line_names_the_kind_of_cpu():
    """torch's CPU capability, with +AMX exactly where /proc/cpuinfo lists AMX tiles."""
    from deep import runtime

    kind = runtime.cpu_kind()
    assert kind.startswith(torch.backends.cpu.get_cpu_capability())
    assert kind.endswith("+AMX") == ("amx_tile" in _cpu_flags())
    assert f", CPU {kind}, Python " in runtime.version_line()
