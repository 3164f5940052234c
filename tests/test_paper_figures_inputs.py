"""paper_figures as a new user runs it: --out and --runs-dir checked before any work, budgets as
fractions, Ctrl-C as one line and status 130, a file-system error as one line and status 1."""

import time

import pytest

from paper_figures import __main__ as pf_main
from paper_figures import faal_fig1, frl_fig4, theory_curves
from paper_figures.runs import main_with_errors


@pytest.mark.parametrize("script", [faal_fig1.main, theory_curves.main, pf_main.run_all])
def test_out_that_is_a_file_is_refused_at_once(script, tmp_path, capsys):
    a_file = tmp_path / "figure.png"
    a_file.write_bytes(b"png")
    start = time.perf_counter()
    for option, value in (("--out", a_file), ("--out", a_file / "sub")):
        with pytest.raises(SystemExit) as exc:
            script([option, str(value), "--quick", "--quiet"])
        assert exc.value.code == 2
        first = capsys.readouterr().err.splitlines()[0]
        assert f"error: {option} {value}:" in first
    assert time.perf_counter() - start < 1.0


def test_runs_dir_under_a_file_is_refused(tmp_path, capsys):
    a_file = tmp_path / "runs"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exc:
        faal_fig1.main(["--runs-dir", str(a_file / "cache"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--runs-dir" in capsys.readouterr().err.splitlines()[0]
    assert not (tmp_path / "o").exists()


def test_budgets_as_fractions(tmp_path):
    assert theory_curves.main(["--eps", "1/10", "--out", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "theory_curves.csv").exists()
    parser = frl_fig4.build_parser("frl_fig4", "x")
    assert frl_fig4._parse_sigmas(parser, "64/255,0.5", None) == (64 / 255, 0.5)


def test_ctrl_c_is_one_line_and_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert main_with_errors(interrupted) == 130
    assert capsys.readouterr().err.strip().startswith("interrupted;")


def test_a_file_system_error_is_one_line_and_1(capsys):
    """A full disk met while writing (checked options cannot foresee it)."""

    def disk_full():
        raise OSError(28, "No space left on device")

    assert main_with_errors(disk_full) == 1
    assert capsys.readouterr().err.strip() == "error: No space left on device"

    def not_a_file_error():
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(ConnectionResetError):
        main_with_errors(not_a_file_error)
