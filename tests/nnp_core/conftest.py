"""Small labelled data sets and committees shared by the nnp_core tests."""

from __future__ import annotations

import copy
import functools
import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree

from nnp_core.committee import Committee
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee


def displaced(base: Atoms, n: int, stddev_A: float, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, stddev_A, atoms.positions.shape)
        frames.append(atoms)
    return frames


def label_emt(frames: list[Atoms]) -> list[Atoms]:
    for atoms in frames:
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return frames


def label_pyscf_hf_sto3g(frames: list[Atoms]) -> list[Atoms]:
    """Direct PySCF RHF/STO-3G labels (eV, eV/Å), independent of qm_backends."""
    from pyscf import gto, scf

    for atoms in frames:
        mol = gto.M(
            atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            basis="sto-3g", unit="Angstrom", verbose=0,
        )
        mf = scf.RHF(mol)
        energy = mf.kernel()
        assert mf.converged
        gradient = mf.nuc_grad_method().kernel()
        atoms.calc = SinglePointCalculator(
            atoms, energy=energy * Hartree, forces=-gradient * Hartree / Bohr
        )
    return frames


@pytest.fixture(scope="session")
def water_frames() -> list[Atoms]:
    """60 water geometries displaced by 0.08 Å, labelled with PySCF HF/STO-3G."""
    return label_pyscf_hf_sto3g(displaced(molecule("H2O"), 60, 0.08, seed=3))


@pytest.fixture(scope="session")
def ethanol_emt_frames() -> list[Atoms]:
    return label_emt(displaced(molecule("CH3CH2OH"), 40, 0.05, seed=5))


@pytest.fixture(scope="session")
def trained_water(water_frames):
    """(committee, report) of 3 members trained on the first 45 water frames."""
    config = TrainConfig(max_epochs=200, batch_size_frames=8, seed=0, early_stopping_patience_epochs=40)
    return train_committee(water_frames[:45], config, n_members=3, model_hparams={"hidden_layers": [32, 32]})


@pytest.fixture(scope="session")
def trained_water_committee(trained_water) -> Committee:
    return trained_water[0]


#: small settings of each registered architecture for the architecture-generic tests
ARCHITECTURES = {"bpnn": {}, "painn": {"features": 16, "interactions": 2, "radial_basis": 8}}
if importlib.util.find_spec("mace") is not None:  # MACE committees need mace-torch
    TINY_MACE = dict(cutoff_A=4.0, num_channels=4, max_L=1, correlation=2, num_interactions=1, num_radial_basis=4,
                     max_ell=2, radial_MLP=[8], readout_hidden=4)
    ARCHITECTURES.update({"mace": TINY_MACE, "mace-shallow": TINY_MACE})


@pytest.fixture()
def random_committee() -> Committee:
    """An untrained 3-member BPNN committee on H, C, O with non-trivial normalisation."""
    return _untrained("bpnn")


@pytest.fixture(params=sorted(ARCHITECTURES))
def any_committee(request) -> Committee:
    """``random_committee`` of each registered architecture (a fresh copy of one built per
    session: building a MACE committee takes seconds, copying it a tenth of one)."""
    return copy.deepcopy(_built_once(request.param))


def _untrained(architecture: str) -> Committee:
    committee = Committee.create(architecture, n_members=3, seed=11, elements=["H", "C", "O"],
                                 **ARCHITECTURES[architecture])
    model = committee.model
    model.energy_scale.fill_(0.7)
    model.atom_ref_energy.copy_(model.atom_ref_energy.new_tensor([-13.6, -1030.0, -2040.0]))
    return committee


_built_once = functools.cache(_untrained)


def assert_member_forces_are_the_negative_gradient(committee: Committee, atoms, points, h: float = 1e-5,
                                                   atol: float = 1e-7) -> None:
    """Every member's force on each (atom, axis) of ``points`` equals minus the central
    finite difference of its energy."""
    forces = committee.predict([atoms]).member_forces  # (M, n, 3)
    for atom, axis in points:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        fd = -(committee.predict([plus]).member_energies[:, 0] - committee.predict([minus]).member_energies[:, 0]) / (2 * h)
        np.testing.assert_allclose(forces[:, atom, axis], fd, atol=atol)
