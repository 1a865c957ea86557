"""Analytic Hessians, harmonic frequencies and IR intensities."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr, Hartree
from pyscf import gto
from pyscf.hessian import thermo

from qm_backends import get_backend
from qm_backends.vibrations import harmonic_analysis

from .conftest import hydroxyl, water


@pytest.fixture(scope="module")
def water_hessian():
    backend = get_backend("pyscf", method="HF", basis="sto-3g", conv_tol_Ha=1e-11)
    atoms = water()
    return backend, atoms, backend.hessian(atoms)


def test_hessian_is_minus_finite_difference_of_forces(water_hessian) -> None:
    backend, atoms, hessian = water_hessian
    assert hessian.shape == (9, 9)
    assert np.allclose(hessian, hessian.T, atol=1e-4)
    step = 1e-3
    for i, k in [(0, 2), (1, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += step
        minus.positions[i, k] -= step
        row = -(backend.label(plus).forces - backend.label(minus).forces).ravel() / (2 * step)
        assert np.abs(row - hessian[3 * i + k]).max() < 2e-3  # eV/Å², of entries up to ~50


def test_frequencies_match_pyscf_harmonic_analysis(water_hessian) -> None:
    _, atoms, hessian = water_hessian
    modes = harmonic_analysis(hessian, atoms)
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis="sto-3g", verbose=0)
    hess_au = hessian.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3) / (Hartree / Bohr**2)
    reference = thermo.harmonic_analysis(mol, hess_au)["freq_wavenumber"]
    assert modes.frequencies_cm1.shape == (3,)
    assert np.allclose(modes.frequencies_cm1, np.sort(reference.real), atol=0.5)
    assert np.all(modes.frequencies_cm1 > 1500)  # bend and two stretches of water
    assert modes.modes.shape == (3, 3, 3)


def test_normal_modes_are_free_of_translation_and_rotation(water_hessian) -> None:
    _, atoms, hessian = water_hessian
    modes = harmonic_analysis(hessian, atoms)
    masses = atoms.get_masses()
    for mode in modes.modes:
        assert np.allclose((masses[:, None] * mode).sum(axis=0), 0.0, atol=1e-8)  # no net momentum
    q = modes.mass_weighted_modes
    assert np.allclose(q @ q.T, np.eye(3), atol=1e-10)


def test_hessian_shape_mismatch_is_a_value_error(water_hessian) -> None:
    with pytest.raises(ValueError, match="does not match 2 atoms"):
        harmonic_analysis(water_hessian[2], hydroxyl())


def test_co2_ir_intensities_follow_the_selection_rules() -> None:
    co2 = Atoms("CO2", positions=[[0, 0, 0], [0, 0, 1.16], [0, 0, -1.16]])
    backend = get_backend("pyscf", method="HF", basis="sto-3g", conv_tol_Ha=1e-11)
    modes = backend.vibrations(co2)
    assert modes.frequencies_cm1.shape == (4,)  # linear: 3N - 5
    assert np.all(modes.frequencies_cm1 > 0)
    intensity = modes.ir_intensities_km_mol
    symmetric_stretch = int(np.argmin(np.abs(np.abs(modes.modes[:, 0, 2]) - 0.0)
                                      + np.abs(modes.modes[:, :, :2]).sum(axis=(1, 2))))
    assert intensity[symmetric_stretch] < 1e-2  # IR-inactive by symmetry
    active = np.delete(intensity, symmetric_stretch)
    assert np.all(active > 10.0)  # the bends and the asymmetric stretch absorb
    bends = np.sort(modes.frequencies_cm1)[:2]
    assert abs(bends[0] - bends[1]) < 1.0  # degenerate bend


def test_open_shell_restricted_has_no_hessian() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", multiplicity=2, restricted=True)
    with pytest.raises(NotImplementedError, match="no analytic Hessian"):
        backend.hessian(hydroxyl())


def test_generic_ase_backend_has_no_hessian() -> None:
    with pytest.raises(NotImplementedError, match="ase.vibrations"):
        get_backend("emt").hessian(water())


def test_frequencies_helper_and_ir_from_cartesian_dipole_derivatives(water_hessian) -> None:
    """Normal-mode dipole differences equal the projection of Cartesian dipole derivatives."""
    from qm_backends.vibrations import _E2_PER_AMU_TO_KM_MOL

    backend, atoms, hessian = water_hessian
    assert np.allclose(backend.frequencies(atoms), harmonic_analysis(hessian, atoms).frequencies_cm1)
    modes = backend.vibrations(atoms)
    step = 1e-3
    apt = np.zeros((3 * len(atoms), 3))  # d(dipole)/d(x_i), e·Å/Å
    for row in range(3 * len(atoms)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions.flat[row] += step
        minus.positions.flat[row] -= step
        apt[row] = (backend.label(plus).dipole - backend.label(minus).dipole) / (2 * step)
    per_q = modes.mass_weighted_modes / np.sqrt(np.repeat(atoms.get_masses(), 3))[None, :]
    expected = ((per_q @ apt) ** 2).sum(axis=1) * _E2_PER_AMU_TO_KM_MOL
    assert np.allclose(modes.ir_intensities_km_mol, expected, rtol=2e-3, atol=0.05)
    assert _E2_PER_AMU_TO_KM_MOL == pytest.approx(974.88, abs=0.05)  # km/mol per e²/amu


def test_dispersion_enters_the_hessian(water_hessian) -> None:
    pytest.importorskip("pyscf.dispersion")
    _, atoms, plain = water_hessian
    backend = get_backend("pyscf", method="HF", basis="sto-3g", conv_tol_Ha=1e-11, dispersion="d3bj")
    hessian = backend.hessian(atoms)
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[1, 1] += 1e-3
    minus.positions[1, 1] -= 1e-3
    row = -(backend.label(plus).forces - backend.label(minus).forces).ravel() / 2e-3
    assert np.abs(hessian - plain).max() > 1e-2  # D3 changes the curvature ...
    assert np.abs(row - hessian[4]).max() < 5e-3  # ... and the analytic Hessian has it
