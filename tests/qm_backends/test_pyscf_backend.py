"""The PySCF backend equals PySCF itself, and its forces are its own energy's gradient."""

from __future__ import annotations

import numpy as np
import pytest
from ase.optimize import BFGS
from ase.units import Hartree

from qm_backends import get_backend
from qm_backends.pyscf_backend import PySCFBackend

from .conftest import direct_pyscf, hydroxyl, oxygen, water

E_TOL_EV = 1e-7 * Hartree  # 1e-7 Ha
F_TOL_EV_A = 1e-6

CASES = [
    pytest.param(water, dict(method="HF", basis="sto-3g"), dict(), id="water-RHF"),
    pytest.param(water, dict(method="PBE", basis="6-31g"), dict(), id="water-RKS-PBE"),
    pytest.param(water, dict(method="HF", basis="sto-3g", density_fit=False),
                 dict(density_fit=False), id="water-RHF-noDF"),
    pytest.param(hydroxyl, dict(method="HF", basis="6-31g", multiplicity=2),
                 dict(spin=1, unrestricted=True), id="OH-UHF"),
    pytest.param(oxygen, dict(method="PBE", basis="6-31g", multiplicity=3),
                 dict(spin=2, unrestricted=True), id="O2-triplet-UKS"),
]


@pytest.mark.parametrize(("make_atoms", "options", "direct_options"), CASES)
def test_label_equals_direct_pyscf(make_atoms, options, direct_options) -> None:
    atoms = make_atoms()
    label = get_backend("pyscf", **options).label(atoms)
    energy, forces, dipole = direct_pyscf(atoms, method=options["method"], basis=options["basis"],
                                          **direct_options)
    assert label.converged
    assert abs(label.energy - energy) < E_TOL_EV
    assert np.abs(label.forces - forces).max() < F_TOL_EV_A
    assert np.abs(label.dipole - dipole).max() < 1e-6
    assert label.forces.shape == (len(atoms), 3)
    assert label.n_scf_cycles == sum(a["n_cycles"] for a in label.attempts) > 0


def _fd_forces(backend: PySCFBackend, atoms, coords, step_A: float = 5e-4) -> np.ndarray:
    values = []
    for i, k in coords:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += step_A
        minus.positions[i, k] -= step_A
        values.append(-(backend.label(plus).energy - backend.label(minus).energy) / (2 * step_A))
    return np.array(values)


@pytest.mark.parametrize(
    ("make_atoms", "options"),
    [
        pytest.param(water, dict(method="HF", basis="sto-3g"), id="RHF"),
        pytest.param(water, dict(method="PBE", basis="sto-3g", grid_response=True, grid_level=2), id="RKS"),
        pytest.param(hydroxyl, dict(method="HF", basis="sto-3g", multiplicity=2), id="UHF"),
    ],
)
def test_forces_are_minus_finite_difference_gradient(make_atoms, options) -> None:
    atoms = make_atoms()
    backend = get_backend("pyscf", conv_tol_Ha=1e-12, **options)
    coords = [(0, 2), (1, 1), (len(atoms) - 1, 2)]
    analytic = backend.label(atoms).forces[tuple(zip(*coords))]
    assert np.abs(analytic - _fd_forces(backend, atoms, coords)).max() < 5e-5
    assert np.abs(analytic).max() > 0.1  # a real test: the forces are not ~0


def test_default_density_fitting_changes_the_numbers_and_level_of_theory() -> None:
    atoms = water()
    fitted = get_backend("pyscf", method="HF", basis="sto-3g")
    exact = get_backend("pyscf", method="HF", basis="sto-3g", density_fit=False)
    assert abs(fitted.label(atoms).energy - exact.label(atoms).energy) > 1e-6
    assert fitted.level_of_theory != exact.level_of_theory


def test_level_of_theory_is_canonical_and_ignores_threads_and_memory() -> None:
    a = get_backend("pyscf", method="PBE", basis="Def2-SVP", num_threads=1, max_memory_MB=1000)
    b = get_backend("pyscf", method="pbe", basis="def2-svp", num_threads=2, max_memory_MB=8000)
    assert a.level_of_theory == b.level_of_theory
    assert a.level_of_theory["basis"] == "def2-svp"
    assert list(a.level_of_theory["options"]) == sorted(a.level_of_theory["options"])
    c = get_backend("pyscf", method="PBE", basis="def2-svp", grid_level=4)
    assert c.level_of_theory != a.level_of_theory


def test_open_shell_defaults_to_unrestricted_unless_asked() -> None:
    assert get_backend("pyscf", multiplicity=2).level_of_theory["options"]["reference"] == "uks"
    assert get_backend("pyscf", multiplicity=2, restricted=True).level_of_theory["options"]["reference"] == "rks"
    assert get_backend("pyscf", method="HF").level_of_theory["options"]["reference"] == "rhf"


def test_restricted_open_shell_runs_rohf() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", multiplicity=2, restricted=True)
    result = backend.run_scf(hydroxyl())
    assert type(result.mf).__name__.startswith("DFROHF") or "ROHF" in type(result.mf).__name__
    assert result.mf.converged


@pytest.mark.parametrize("bad", [dict(method="not-a-functional"), dict(dispersion="d9"),
                                 dict(recovery=("pray",)), dict(multiplicity=0)])
def test_bad_options_fail_at_construction(bad) -> None:
    with pytest.raises(ValueError):
        get_backend("pyscf", **bad)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="conv_tol"):
        get_backend("pyscf", conv_tol=1e-8)


def test_ase_calculator_interface_and_caching() -> None:
    atoms = water()
    backend = get_backend("pyscf", method="HF", basis="sto-3g")
    atoms.calc = backend
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert atoms.get_dipole_moment().shape == (3,)
    assert backend.last_label.energy == energy
    assert np.array_equal(backend.last_label.forces, forces)
    first = backend.last_label
    atoms.get_forces()  # cached: no new label
    assert backend.last_label is first


def test_geometry_optimisation_with_ase_lowers_energy_and_forces() -> None:
    atoms = water()
    atoms.calc = get_backend("pyscf", method="HF", basis="sto-3g")
    e0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=30)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 0.05


def test_num_threads_sets_pyscf_threads() -> None:
    from pyscf import lib

    lib.num_threads(2)
    get_backend("pyscf", method="HF", basis="sto-3g", num_threads=1).label(water())
    assert lib.num_threads() == 1  # the autouse fixture restores the old value


def test_dispersion_adds_its_energy_and_forces() -> None:
    pytest.importorskip("pyscf.dispersion")
    atoms = water()
    plain = get_backend("pyscf", method="HF", basis="sto-3g", conv_tol_Ha=1e-12)
    d3 = get_backend("pyscf", method="HF", basis="sto-3g", conv_tol_Ha=1e-12, dispersion="d3bj")
    with_d3, without = d3.label(atoms), plain.label(atoms)
    e_disp = with_d3.energy - without.energy
    assert -0.5 < e_disp < -1e-3  # an intramolecular attraction of ~0.1 eV
    assert np.abs(with_d3.forces - without.forces).max() > 1e-6
    assert d3.level_of_theory["options"]["dispersion"] == "d3bj"
    coords = [(1, 1)]
    fd = _fd_forces(d3, atoms, coords)
    assert abs(with_d3.forces[1, 1] - fd[0]) < 5e-5
