"""bench.exploration_bias: its periodic torsion distance and a quick run of every variant."""

from __future__ import annotations

import numpy as np

from bench.exploration_bias import dihedral_distance, main


def test_dihedral_distance_is_periodic() -> None:
    angles = np.array([355.0, 5.0, 130.0, 250.0, 60.0])
    np.testing.assert_allclose(dihedral_distance(angles, [0.0]), [5.0, 5.0, 130.0, 110.0, 60.0])
    np.testing.assert_allclose(dihedral_distance(angles, [0.0, 120.0, 240.0]), [5.0, 5.0, 10.0, 10.0, 60.0])


def test_quick_run_measures_every_exploration() -> None:
    text = main(["--quick"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "exploration" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "Langevin (no bias)", "UDD A=0.25 eV, B=0.005 eV (default)", "UDD A=0.5 eV, B=0.005 eV",
        "metad h=0.05 eV, pace 20 (default)", "metad h=0.02 eV, pace 50"]
    assert all(row.split(" | ")[1] == "60" for row in rows)  # 3 replicas x 40 steps / 2
