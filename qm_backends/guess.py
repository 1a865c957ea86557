"""Guess reuse: start the SCF of a frame from the orbitals of a nearby previous frame.

Atom-centred basis functions move with their atoms, so the occupied orbitals of the
last frame of the same molecule are a good start for the next one once they are made
orthonormal again in the new overlap metric (Löwdin, S^-1/2 of the occupied block).
That keeps the electron count exact, which a raw density matrix from another
geometry does not.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

logger = logging.getLogger(__name__)

MAX_MOLECULES = 16


@dataclass
class _Entry:
    centred_positions_A: np.ndarray
    mo_coeff: np.ndarray
    mo_occ: np.ndarray


def _key(mf: Any, atoms: Atoms) -> tuple:
    mol = mf.mol
    return (tuple(int(z) for z in atoms.get_atomic_numbers()), mol.nao, mol.charge, mol.spin,
            str(mol.basis), type(getattr(mf, "_scf", mf)).__name__)


def _centred(atoms: Atoms) -> np.ndarray:
    positions = atoms.get_positions()
    return positions - positions.mean(axis=0)


def reorthonormalise(mo_coeff: np.ndarray, mo_occ: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """Orbitals with the occupied block Löwdin-orthonormalised in ``overlap``.

    Works per spin channel for UHF-shaped input (2, nao, nmo). Raises
    ``np.linalg.LinAlgError`` if the occupied block is (near) linearly dependent.
    """
    if mo_coeff.ndim == 3:
        return np.stack([reorthonormalise(c, o, overlap) for c, o in zip(mo_coeff, mo_occ)])
    occupied = mo_occ > 0
    c_occ = mo_coeff[:, occupied]
    metric = c_occ.T @ overlap @ c_occ
    w, v = np.linalg.eigh(metric)
    if w.min() < 1e-8:
        raise np.linalg.LinAlgError(f"occupied orbitals nearly dependent (min eigenvalue {w.min():.2e})")
    result = mo_coeff.copy()
    result[:, occupied] = c_occ @ (v / np.sqrt(w)) @ v.T
    return result


class GuessCache:
    """The last converged orbitals per molecule (atomic numbers in order, charge, spin)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

    def clear(self) -> None:
        """Forget every stored guess."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, mf: Any, atoms: Atoms) -> None:
        """Remember the converged orbitals of ``mf`` for frames like ``atoms``."""
        key = _key(mf, atoms)
        self._entries[key] = _Entry(_centred(atoms), np.array(mf.mo_coeff), np.array(mf.mo_occ))
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_MOLECULES:
            self._entries.popitem(last=False)

    def density_for(self, mf: Any, atoms: Atoms, *, max_displacement_A: float) -> np.ndarray | None:
        """A starting density for ``mf`` at ``atoms``, or None for a cold start.

        None when no frame of this molecule was seen, or some atom moved more than
        ``max_displacement_A`` (Å, after removing the centroid shift).
        """
        entry = self._entries.get(_key(mf, atoms))
        if entry is None:
            return None
        shift = np.linalg.norm(_centred(atoms) - entry.centred_positions_A, axis=1).max()
        if shift > max_displacement_A:
            logger.debug("no guess reuse: an atom moved %.3f Å > %.3f Å", shift, max_displacement_A)
            return None
        try:
            mo = reorthonormalise(entry.mo_coeff, entry.mo_occ, mf.mol.intor_symmetric("int1e_ovlp"))
        except np.linalg.LinAlgError as err:
            logger.debug("no guess reuse: %s", err)
            return None
        return mf.make_rdm1(mo, entry.mo_occ)
