"""Any ASE calculator behind the Label contract; its failures become LabelFailed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from qm_backends import InvalidStructure, LabelFailed, ReferenceBackend, get_backend
from qm_backends.ase_backend import ASEBackend


def _cluster() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.pbc = False
    atoms.rattle(0.05, seed=1)
    return atoms


class _Broken(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("SCF exploded in the external code")


class _NaN(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": float("nan"), "forces": np.zeros((len(self.atoms), 3))}


def test_emt_label_equals_emt_itself() -> None:
    atoms = _cluster()
    backend = get_backend("emt")
    label = backend.label(atoms)
    reference = atoms.copy()
    reference.calc = EMT()
    assert label.energy == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    assert np.allclose(label.forces, reference.get_forces(), atol=1e-12)
    assert label.dipole is None and label.converged and label.n_scf_cycles is None
    assert label.method == backend.level_of_theory
    assert label.method["backend"] == "ase" and label.method["method"] == "emt"
    assert isinstance(backend, ReferenceBackend)


def test_emt_forces_are_minus_finite_difference_gradient() -> None:
    atoms = _cluster()
    backend = get_backend("emt")
    forces = backend.label(atoms).forces
    step = 1e-4
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[2, 1] += step
    minus.positions[2, 1] -= step
    fd = -(backend.label(plus).energy - backend.label(minus).energy) / (2 * step)
    assert forces[2, 1] == pytest.approx(fd, abs=1e-5)


def test_calculator_errors_become_label_failed_with_the_message() -> None:
    backend = ASEBackend(calculator=_Broken(), name="broken")
    with pytest.raises(LabelFailed, match="SCF exploded in the external code") as info:
        backend.label(_cluster())
    (attempt,) = info.value.attempts
    assert attempt["converged"] is False and "RuntimeError" in attempt["error"]


def test_non_finite_results_become_label_failed() -> None:
    with pytest.raises(LabelFailed, match="non-finite"):
        ASEBackend(calculator=_NaN).label(_cluster())


def test_asking_for_a_missing_dipole_is_label_failed() -> None:
    with pytest.raises(LabelFailed, match="cannot compute"):
        ASEBackend(calculator=EMT, dipole=True).label(_cluster())


def test_validation_before_the_calculator_runs() -> None:
    backend = ASEBackend(calculator=_Broken(), elements=["Cu"])
    atoms = _cluster()
    atoms.positions[1] = atoms.positions[0] + 0.1
    with pytest.raises(InvalidStructure, match="overlapping"):
        backend.label(atoms)
    with pytest.raises(InvalidStructure, match=r"\['O'\] not supported"):
        backend.label(Atoms("CuO", positions=[[0, 0, 0], [0, 0, 1.9]]))
    periodic = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(InvalidStructure, match="periodic"):
        backend.validate(periodic)
    ASEBackend(calculator=EMT, molecular=False).validate(periodic)


def test_factory_backends_pickle_and_serve_as_ase_calculators() -> None:
    backend = pickle.loads(pickle.dumps(get_backend("emt")))
    atoms = _cluster()
    atoms.calc = backend
    assert atoms.get_potential_energy() == pytest.approx(backend.last_label.energy)


def test_level_of_theory_drops_non_physical_parameters() -> None:
    class _Code(Calculator):
        implemented_properties = ["energy", "forces"]

    a = ASEBackend(calculator=_Code(xc="PBE", basis="def2-SVP", nprocs=4), name="code")
    b = ASEBackend(calculator=_Code(xc="pbe", basis="def2-svp", nprocs=8), name="code")
    assert a.level_of_theory == b.level_of_theory
    assert a.level_of_theory["basis"] == "def2-svp"
    assert "nprocs" not in a.level_of_theory["options"]


def test_xtb_backend_through_tblite() -> None:
    pytest.importorskip("tblite.ase")
    water = Atoms("OH2", positions=[[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]])
    backend = get_backend("xtb", method="GFN2-xTB")
    label = backend.label(water)
    assert label.method["method"] == "gfn2-xtb"
    assert -200 < label.energy < -100  # GFN2 water is about -137 eV
    assert label.dipole is not None and abs(label.dipole[2]) > 0.1
    assert np.allclose(label.forces.sum(axis=0), 0.0, atol=1e-6)
