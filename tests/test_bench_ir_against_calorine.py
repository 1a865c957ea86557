"""bench.ir_against_calorine: its synthetic dipoles carry the lines it claims, and bad options are refused."""

from __future__ import annotations

import numpy as np
import pytest

from bench import ir_against_calorine as bench


def test_the_synthetic_dipoles_have_their_lines_where_the_table_says() -> None:
    dipoles = bench.dipole_series(replicas=2, ps=6.0, seed=0)
    case = bench.CASES["same convention: ω²·PSD[μ], Gaussian window over 2 ps (σ = 2/3 ps), classical"]
    axis, intensity = bench.ours(dipoles, case)
    for line in (*bench.LINES_CM1, 2 * bench.LINES_CM1[0]):
        wavenumber, height = bench.peak(axis, bench.normalised(axis, intensity), line)
        assert abs(wavenumber - line) < 10.0  # a line of 8-15 cm⁻¹, 12 replica-ps of noise
        assert height > 0.01
    background = bench.normalised(axis, intensity)[(axis > 1400) & (axis < 1800)]
    assert background.max() < 0.01  # nothing but the four lines


def test_the_peak_finder_refines_between_grid_points() -> None:
    axis = np.arange(0.0, 100.0, 2.0)
    wavenumber, height = bench.peak(axis, np.exp(-((axis - 51.3) ** 2) / 50.0), 50.0)
    assert wavenumber == pytest.approx(51.3, abs=0.1)
    assert height == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("argv", [["--ps", "2"], ["--replicas", "0"]])
def test_bad_options_are_refused(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*argv, "--no-write"])
    assert exit_info.value.code == 2
    assert "--ps must be >= 4" in capsys.readouterr().err


def test_no_pypi_is_one_line_not_a_traceback(monkeypatch, tmp_path) -> None:
    import subprocess

    monkeypatch.setitem(__import__("sys").modules, "calorine", None)  # not installed
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "no network"))
    with pytest.raises(SystemExit) as exit_info:
        bench.calorine_spectra(tmp_path)
    assert str(exit_info.value).startswith("error: could not download calorine==4.1")
    assert "\n" not in str(exit_info.value)
