"""Small helpers on structures shared by selection and the orchestrator's storage."""

from __future__ import annotations

import hashlib

import numpy as np
from ase import Atoms

#: positions are rounded to this many decimals (Å) before hashing
HASH_DECIMALS = 5


def frame_hash(atoms: Atoms, decimals: int = HASH_DECIMALS) -> str:
    """A stable content hash of a structure: atomic numbers, positions, cell and pbc.

    Positions are rounded to ``decimals`` (Å) so that a frame read back from float64
    storage hashes like the original. Two frames with the same hash are the same
    structure for every purpose of alflow (duplicate removal, unique rows per campaign).
    """
    numbers = np.ascontiguousarray(atoms.numbers, dtype=np.int64)
    positions = np.round(np.asarray(atoms.positions, dtype=np.float64), decimals) + 0.0
    cell = np.round(np.asarray(atoms.cell.array, dtype=np.float64), decimals) + 0.0
    pbc = np.asarray(atoms.pbc, dtype=np.bool_)
    digest = hashlib.sha256()
    for array in (numbers, positions, cell, pbc):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
