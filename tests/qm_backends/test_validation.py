"""Every bad input raises InvalidStructure naming the problem, before any SCF runs."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from qm_backends import InvalidStructure, get_backend
from qm_backends.pyscf_backend import PySCFBackend

from .conftest import water


def _nan_water() -> Atoms:
    atoms = water()
    atoms.positions[1, 0] = np.nan
    return atoms


def _overlapping_water() -> Atoms:
    atoms = water()
    atoms.positions[2] = atoms.positions[0] + [0.0, 0.0, 0.3]
    return atoms


def _periodic_water() -> Atoms:
    atoms = water()
    atoms.set_cell([5.0, 5.0, 5.0])
    atoms.pbc = True
    return atoms


BAD = [
    pytest.param(_nan_water, {}, r"non-finite.*atom\(s\) \[1\]", id="nan"),
    pytest.param(lambda: Atoms(), {}, "empty", id="empty"),
    pytest.param(_overlapping_water, {}, r"overlapping atoms 0 \(O\) and 2 \(H\): 0\.300 Å", id="overlap"),
    pytest.param(lambda: Atoms("XH", positions=[[0, 0, 0], [0, 0, 1]]), {}, "unknown element", id="dummy-atom"),
    pytest.param(lambda: Atoms("XeH", positions=[[0, 0, 0], [0, 0, 1.7]]), {},
                 "element Xe is not available in basis sto-3g", id="element-not-in-basis"),
    pytest.param(water, {"multiplicity": 2}, r"impossible.*10 electrons cannot have 1 unpaired", id="parity"),
    pytest.param(water, {"charge": 1}, r"charge 1 and multiplicity 1 are impossible", id="charge-parity"),
    pytest.param(water, {"charge": 11}, "leaves -1 electrons", id="too-positive"),
    pytest.param(lambda: Atoms("H", positions=[[0, 0, 0]]), {"multiplicity": 4}, "impossible", id="too-many-unpaired"),
    pytest.param(_periodic_water, {}, "periodic", id="periodic"),
]


@pytest.fixture
def no_scf(monkeypatch):
    """Any SCF started during the test fails it."""

    def forbidden(*args, **kwargs):
        pytest.fail("an SCF was started for an invalid structure")

    monkeypatch.setattr(PySCFBackend, "run_scf", forbidden)


@pytest.mark.parametrize(("make_atoms", "options", "message"), BAD)
def test_validate_and_label_refuse_bad_structures_before_scf(make_atoms, options, message, no_scf) -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", **options)
    atoms = make_atoms()
    with pytest.raises(InvalidStructure, match=message):
        backend.validate(atoms)
    with pytest.raises(InvalidStructure, match=message):
        backend.label(atoms)


def test_invalid_structure_is_a_value_error_and_an_ase_input_error(no_scf) -> None:
    from ase.calculators.calculator import InputError

    atoms = _overlapping_water()
    atoms.calc = get_backend("pyscf", method="HF", basis="sto-3g")
    with pytest.raises(ValueError):
        atoms.get_potential_energy()
    with pytest.raises(InputError):
        atoms.calc.validate(atoms)


def test_good_structures_pass_validation() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g")
    backend.validate(water())
    get_backend("pyscf", method="HF", basis="sto-3g", multiplicity=2).validate(
        Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]]))
    get_backend("pyscf", method="HF", basis="sto-3g", charge=-1).validate(
        Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]]))


def test_min_distance_is_an_option(no_scf) -> None:
    atoms = water()
    strict = get_backend("pyscf", method="HF", basis="sto-3g", min_distance_A=1.0)
    with pytest.raises(InvalidStructure, match="below the 1.0 Å limit"):
        strict.validate(atoms)
