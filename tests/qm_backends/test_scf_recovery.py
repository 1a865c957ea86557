"""A hard SCF recovers through the cascade or fails loudly; never an unconverged label."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ase.units import Hartree

from qm_backends import LabelFailed, get_backend
from qm_backends.guess import GuessCache

from .conftest import water

E_TOL_EV = 1e-7 * Hartree


@pytest.fixture(scope="module")
def cold_reference():
    label = get_backend("pyscf", method="HF", basis="sto-3g", reuse_guess=False).label(water())
    assert [a["strategy"] for a in label.attempts] == ["default"]
    return label


def test_tiny_max_cycle_recovers_through_the_cascade(cold_reference) -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", max_cycle=2, reuse_guess=False)
    label = backend.label(water())
    first, last = label.attempts[0], label.attempts[-1]
    assert len(label.attempts) >= 2
    assert first["strategy"] == "default" and not first["converged"] and first["n_cycles"] == 2
    assert first["error"] == "SCF did not converge"
    assert last["converged"] and label.converged
    assert all(not a["converged"] for a in label.attempts[:-1])
    assert abs(label.energy - cold_reference.energy) < E_TOL_EV
    assert np.abs(label.forces - cold_reference.forces).max() < 1e-4
    assert label.n_scf_cycles == sum(a["n_cycles"] for a in label.attempts)


def test_exhausted_cascade_raises_label_failed_with_every_attempt() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", max_cycle=1,
                          recovery_max_cycle=1, reuse_guess=False)
    with pytest.raises(LabelFailed) as info:
        backend.label(water())
    err = info.value
    strategies = [a["strategy"] for a in err.attempts]
    assert strategies == ["default", "more_cycles", "level_shift", "damping", "newton",
                          "guess:atom", "guess:huckel"]  # the user's own guess (minao) is not repeated
    assert all(not a["converged"] for a in err.attempts)
    assert "did not converge after 7 attempts" in err.reason
    assert "tried: default, more_cycles" in str(err)
    restored = pickle.loads(pickle.dumps(err))  # crosses process boundaries intact
    assert restored.attempts == err.attempts and restored.reason == err.reason


def test_no_recovery_means_one_attempt_then_label_failed() -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", max_cycle=1, recovery=(), reuse_guess=False)
    with pytest.raises(LabelFailed) as info:
        backend.label(water())
    assert [a["strategy"] for a in info.value.attempts] == ["default"]


@pytest.mark.parametrize("strategy", ["level_shift", "damping", "newton", "guess:atom", "guess:huckel"])
def test_each_recovery_strategy_converges_to_the_same_state(strategy, cold_reference) -> None:
    backend = get_backend("pyscf", method="HF", basis="sto-3g", max_cycle=1,
                          recovery=(strategy,), reuse_guess=False)
    label = backend.label(water())
    assert [a["strategy"] for a in label.attempts] == ["default", strategy]
    assert label.attempts[-1]["converged"]
    assert abs(label.energy - cold_reference.energy) < E_TOL_EV
    assert np.abs(label.forces - cold_reference.forces).max() < 1e-4
    assert np.abs(label.dipole - cold_reference.dipole).max() < 1e-5


def test_stretched_bond_never_returns_unconverged() -> None:
    atoms = water()
    atoms.positions[1] = atoms.positions[0] + 2.6 * (atoms.positions[1] - atoms.positions[0])
    backend = get_backend("pyscf", method="HF", basis="sto-3g", max_cycle=8, reuse_guess=False)
    try:
        label = backend.label(atoms)
    except LabelFailed as err:
        assert err.attempts and not any(a["converged"] for a in err.attempts)
    else:
        assert label.converged and label.attempts[-1]["converged"]
        assert np.isfinite(label.energy) and np.all(np.isfinite(label.forces))


def test_failed_reused_guess_falls_back_to_cold_start_and_cascade(monkeypatch, cold_reference) -> None:
    def poisoned(self, mf, atoms, *, max_displacement_A):
        return np.full((mf.mol.nao, mf.mol.nao), np.nan)

    monkeypatch.setattr(GuessCache, "density_for", poisoned)
    backend = get_backend("pyscf", method="HF", basis="sto-3g", max_cycle=2)
    label = backend.label(water())
    attempts = label.attempts
    assert attempts[0]["guess"] == "reuse" and not attempts[0]["converged"]
    assert attempts[1]["strategy"] == "cold_start" and attempts[1]["guess"] == "minao"
    assert not attempts[1]["converged"]  # 2 cycles are too few: the cascade goes on
    assert attempts[-1]["converged"] and attempts[-1]["strategy"] not in ("default", "cold_start")
    assert abs(label.energy - cold_reference.energy) < E_TOL_EV
