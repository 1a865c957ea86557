"""bench.mace_md_throughput runs alflow's engine and ASE + MACECalculator on the MACE size
asked for, and refuses an unknown size before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import mace_md_throughput

ROOT = Path(__file__).resolve().parents[1]


def test_a_smaller_size_is_measured_with_its_own_settings() -> None:
    text = mace_md_throughput.main(["--members", "2", "--replicas", "2", "--steps", "2", "--dtypes", "float32",
                                    "--size", "L0-c2", "--no-write"])
    assert "MACE 32 channels, max_L 0, correlation 2, 2 interactions" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| mace | float32 | 2 | 2 |")]
    alflow_rate, ase_rate, speed_up = (float(v) for v in row.strip("| ").split(" | ")[4:7])
    assert alflow_rate > 0 and ase_rate > 0 and speed_up == pytest.approx(alflow_rate / ase_rate, rel=1e-3)
    small = mace_md_throughput._committee(2, size={"max_L": 0, "correlation": 2})
    default = mace_md_throughput._committee(2)
    assert sum(p.numel() for p in small.model.parameters()) < sum(p.numel() for p in default.model.parameters())


def test_an_unknown_size_is_refused_before_any_work(capsys) -> None:
    before = (ROOT / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit) as raised:
        mace_md_throughput.main(["--size", "huge"])
    assert raised.value.code == 2 and "--size: one of default, L0" in capsys.readouterr().err
    assert (ROOT / "docs" / "benchmarks.md").read_text() == before
