"""Label serialisation, the level-of-theory dict and the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms

import qm_backends
from qm_backends import (
    Label,
    available_backends,
    canonical_level_of_theory,
    get_backend,
    level_of_theory_key,
    register_backend,
)


def _label() -> Label:
    return Label(
        energy=-2039.8, forces=np.arange(9.0).reshape(3, 3), dipole=np.array([0.0, 0.0, -0.36]),
        converged=True, n_scf_cycles=12, wall_s=0.3,
        attempts=[{"strategy": "default", "converged": False}, {"strategy": "newton", "converged": True}],
        method=canonical_level_of_theory(backend="pyscf", method="PBE", basis="Def2-SVP", charge=0,
                                         multiplicity=1, options={"density_fit": True}),
    )


def test_label_round_trips_through_json() -> None:
    label = _label()
    text = json.dumps(label.to_dict())
    back = Label.from_dict(json.loads(text))
    assert back.energy == label.energy and back.n_scf_cycles == 12
    assert np.array_equal(back.forces, label.forces) and np.array_equal(back.dipole, label.dipole)
    assert back.attempts == label.attempts and back.method == label.method
    no_dipole = Label.from_dict({**label.to_dict(), "dipole": None})
    assert no_dipole.dipole is None


def test_label_to_atoms_is_a_single_point_frame() -> None:
    atoms = Atoms("OH2", positions=np.eye(3))
    labelled = _label().to_atoms(atoms)
    assert labelled.get_potential_energy() == -2039.8
    assert np.array_equal(labelled.get_forces(), np.arange(9.0).reshape(3, 3))
    assert labelled.get_dipole_moment()[2] == -0.36
    assert atoms.calc is None


def test_level_of_theory_is_canonical() -> None:
    a = canonical_level_of_theory(backend="PySCF", method="PBE", basis="Def2-SVP", charge=0, multiplicity=1,
                                  options={"Grid_Level": 3, "density_fit": True, "auxbasis": "Def2-Universal-JFit"})
    b = canonical_level_of_theory(backend="pyscf", method="pbe", basis="def2-svp", charge=0, multiplicity=1,
                                  options={"density_fit": True, "auxbasis": "def2-universal-jfit", "grid_level": 3})
    assert a == b and level_of_theory_key(a) == level_of_theory_key(b)
    assert list(a["options"]) == ["auxbasis", "density_fit", "grid_level"]
    c = dict(b, charge=1)
    assert level_of_theory_key(c) != level_of_theory_key(b)


def test_registry() -> None:
    assert {"pyscf", "ase", "emt", "xtb"} <= set(available_backends())
    with pytest.raises(KeyError, match="unknown backend 'gaussian'"):
        get_backend("gaussian")
    with pytest.raises(ValueError, match="already registered"):
        register_backend("pyscf", lambda **_: None)
    register_backend("my-emt", lambda **options: get_backend("emt", **options))
    try:
        assert get_backend("MY-EMT").level_of_theory["method"] == "emt"
    finally:
        qm_backends._REGISTRY.pop("my-emt")


def test_pyscf_backend_from_registry_has_the_issue_signature() -> None:
    backend = get_backend("pyscf", method="PBE", basis="def2-svp", density_fit=True, charge=0, multiplicity=1)
    lot = backend.level_of_theory
    assert (lot["backend"], lot["method"], lot["basis"], lot["charge"], lot["multiplicity"]) == (
        "pyscf", "pbe", "def2-svp", 0, 1)
    assert lot["options"]["density_fit"] is True
