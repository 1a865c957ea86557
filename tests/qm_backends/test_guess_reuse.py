"""Guess reuse gives cold-start energies in fewer SCF cycles, and only when it should."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.units import Hartree

from qm_backends import get_backend
from qm_backends.guess import reorthonormalise

from .conftest import hydroxyl, water

E_TOL_EV = 1e-7 * Hartree


def _frames(atoms: Atoms, n: int = 4, amplitude_A: float = 0.03) -> list[Atoms]:
    """A short, smooth distortion path, like frames from one MD trajectory."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=atoms.positions.shape)
    direction /= np.linalg.norm(direction, axis=1).max()
    frames = []
    for k in range(n):
        frame = atoms.copy()
        frame.positions += amplitude_A * np.sin(k) * direction + 0.1 * k  # translation too
        frames.append(frame)
    return frames


@pytest.mark.parametrize(
    ("make_atoms", "options"),
    [
        pytest.param(water, dict(method="PBE", basis="6-31g", grid_level=1), id="RKS"),
        pytest.param(hydroxyl, dict(method="HF", basis="6-31g", multiplicity=2), id="UHF"),
    ],
)
def test_reuse_gives_cold_start_energies_in_fewer_cycles(make_atoms, options) -> None:
    frames = _frames(make_atoms())
    cold = get_backend("pyscf", reuse_guess=False, **options)
    warm = get_backend("pyscf", reuse_guess=True, **options)
    cold_labels = [cold.label(f) for f in frames]
    warm_labels = [warm.label(f) for f in frames]
    for c, w in zip(cold_labels, warm_labels):
        assert abs(c.energy - w.energy) < E_TOL_EV
        assert np.abs(c.forces - w.forces).max() < 1e-3
        assert np.abs(c.dipole - w.dipole).max() < 1e-4
    assert [w.attempts[0]["guess"] for w in warm_labels] == ["minao"] + ["reuse"] * (len(frames) - 1)
    assert all(c.attempts[0]["guess"] == "minao" for c in cold_labels)
    assert sum(w.n_scf_cycles for w in warm_labels[1:]) < sum(c.n_scf_cycles for c in cold_labels[1:])
    assert warm.level_of_theory == cold.level_of_theory


def test_no_reuse_across_molecules_or_for_far_frames() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", reuse_max_displacement_A=0.2)
    h2o = water()
    backend.label(h2o)
    nearby = h2o.copy()
    nearby.positions[1, 2] += 0.01
    assert backend.label(nearby).attempts[0]["guess"] == "reuse"
    reordered = Atoms("H2O", positions=nearby.positions[[1, 2, 0]])  # same molecule, other order
    assert backend.label(reordered).attempts[0]["guess"] == "minao"
    far = h2o.copy()
    far.positions[1] += [0.0, 0.3, 0.0]
    assert backend.label(far).attempts[0]["guess"] == "minao"


def test_changing_an_option_forgets_the_guess() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g")
    backend.label(water())
    backend.set(basis="6-31g")
    assert backend.label(water()).attempts[0]["guess"] == "minao"


def test_reorthonormalise_restores_orthonormal_occupied_orbitals() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    overlap = a @ a.T + 6 * np.eye(6)
    mo = rng.normal(size=(6, 6))
    occ = np.array([2.0, 2.0, 1.0, 0.0, 0.0, 0.0])
    new = reorthonormalise(mo, occ, overlap)
    occupied = new[:, occ > 0]
    assert np.allclose(occupied.T @ overlap @ occupied, np.eye(3))
    assert np.array_equal(new[:, occ == 0], mo[:, occ == 0])
    unrestricted = reorthonormalise(np.stack([mo, mo]), np.stack([occ, occ]), overlap)
    assert np.allclose(unrestricted[1], new)
