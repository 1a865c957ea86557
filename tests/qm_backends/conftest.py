"""Small molecules and a direct-PySCF reference for the qm_backends tests."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr, Hartree
from pyscf import dft, gto, scf


def water() -> Atoms:
    """A slightly asymmetric water, so no force component vanishes by symmetry."""
    return Atoms("OH2", positions=[[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.02, -0.771, -0.466]])


def hydroxyl() -> Atoms:
    """The OH radical (doublet)."""
    return Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.0, 0.05, 0.98]])


def oxygen() -> Atoms:
    """O2 (triplet ground state)."""
    return Atoms("O2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.21]])


@pytest.fixture
def h2o() -> Atoms:
    return water()


def direct_pyscf(atoms: Atoms, *, method: str, basis: str, charge: int = 0, spin: int = 0,
                 unrestricted: bool = False, density_fit: bool = True):
    """Energy (eV), forces (eV/Å) and dipole (e·Å) from a plain PySCF run, PySCF defaults."""
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=basis, charge=charge, spin=spin, verbose=0)
    if method.lower() == "hf":
        mf = scf.UHF(mol) if unrestricted else scf.RHF(mol)
    else:
        mf = dft.UKS(mol, xc=method) if unrestricted else dft.RKS(mol, xc=method)
    if density_fit:
        mf = mf.density_fit()
    mf.verbose = 0
    energy = mf.kernel()
    assert mf.converged
    gradient = mf.nuc_grad_method().kernel()
    dipole = mf.dip_moment(unit="AU", verbose=0)
    return energy * Hartree, -np.asarray(gradient) * Hartree / Bohr, np.asarray(dipole) * Bohr


@pytest.fixture(autouse=True)
def _one_pyscf_thread():
    """Tiny molecules gain nothing from threads, and lose a lot on a busy machine.

    The OpenMP setting is process-wide (torch sees it too), so it is restored after.
    """
    from pyscf import lib

    before = lib.num_threads()
    lib.num_threads(1)
    yield
    lib.num_threads(before)
