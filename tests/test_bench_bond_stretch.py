"""bench.bond_stretch: the broken-symmetry guess finds the unrestricted solution past the
Coulson-Fischer point and none before it (H2, HF/STO-3G: RHF is stable at 0.74 Å and
unstable at 2.5 Å, where UHF goes to two H atoms with <S²> near 1)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import molecule

from bench.bond_stretch import broken_symmetry_guess, pbe_point, stretched

LEVEL = {"method": "hf", "basis": "sto-3g", "charge": 0, "multiplicity": 1, "density_fit": False}


def test_restricted_is_right_near_the_minimum_and_wrong_when_dissociated() -> None:
    near = pbe_point(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), LEVEL)
    assert abs(near["uks_eV"] - near["rks_eV"]) < 1e-6 and near["uks_s2"] < 1e-6
    far = pbe_point(Atoms("H2", positions=[[0, 0, 0], [0, 0, 2.5]]), LEVEL)
    assert far["uks_eV"] < far["rks_eV"] - 1.0  # RHF's ionic component costs eVs at 2.5 Å
    assert 0.9 < far["uks_s2"] < 1.05


def test_broken_symmetry_guess_keeps_the_electron_count_and_splits_the_spins() -> None:
    rng = np.random.default_rng(0)
    coeff, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    occ = np.array([2.0, 2.0, 0, 0, 0, 0])
    alpha, beta = broken_symmetry_guess(coeff, occ)
    assert np.isclose(np.trace(alpha), 2.0) and np.isclose(np.trace(beta), 2.0)  # orthonormal basis: S = 1
    assert not np.allclose(alpha, beta)
    # the total density: the lower orbital doubly occupied, HOMO and LUMO one electron each
    c = coeff
    expected = 2 * np.outer(c[:, 0], c[:, 0]) + np.outer(c[:, 1], c[:, 1]) + np.outer(c[:, 2], c[:, 2])
    np.testing.assert_allclose(alpha + beta, expected, atol=1e-12)


def test_the_stretch_moves_only_the_hydrogen() -> None:
    ethanol = molecule("CH3CH2OH")
    bonded = [j for j in range(9) if j not in (0,) and ethanol.get_distance(0, j) < 1.2]
    assert 8 in bonded  # ase's ethanol: H8 on the methyl carbon C0, like the PBE minimum
    longer = stretched(ethanol, 1.6)
    assert np.isclose(longer.get_distance(0, 8), 1.6)
    np.testing.assert_array_equal(np.delete(longer.positions, 8, axis=0), np.delete(ethanol.positions, 8, axis=0))
