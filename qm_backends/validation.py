"""Cheap structure checks run before any reference calculation.

Each check raises `InvalidStructure` with a message naming the problem and the
offending atoms, so a quarantined frame says why it was refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from scipy.spatial.distance import pdist

from .base import InvalidStructure

#: shortest allowed interatomic distance (Å); the same default as
#: ``nnp_core.sanity.DEFAULT_MIN_DISTANCE_A`` (which filters explored frames: the two
#: packages are independent, so each has its check)
DEFAULT_MIN_DISTANCE_A = 0.5


def check_finite_positions(atoms: Atoms) -> None:
    """Raise `InvalidStructure` for an empty structure or NaN/inf coordinates."""
    if len(atoms) == 0:
        raise InvalidStructure("empty structure: no atoms to label")
    positions = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise InvalidStructure(
            f"non-finite (NaN or inf) coordinates on atom(s) {bad.tolist()}"
        )


def check_known_elements(atoms: Atoms) -> None:
    """Raise `InvalidStructure` for dummy atoms (Z = 0) or unknown atomic numbers."""
    numbers = atoms.get_atomic_numbers()
    bad = np.flatnonzero((numbers <= 0) | (numbers >= len(chemical_symbols)))
    if bad.size:
        raise InvalidStructure(
            f"unknown element (atomic number {int(numbers[bad[0]])}) on atom(s) {bad.tolist()}"
        )


def check_min_distance(atoms: Atoms, *, min_distance_A: float = DEFAULT_MIN_DISTANCE_A) -> None:
    """Raise `InvalidStructure` when two atoms are closer than ``min_distance_A`` (Å)."""
    if len(atoms) < 2:
        return
    distances = pdist(atoms.get_positions())
    k = int(np.argmin(distances))
    if distances[k] < min_distance_A:
        rows, cols = np.triu_indices(len(atoms), k=1)  # pdist's pair order
        i, j = int(rows[k]), int(cols[k])
        raise InvalidStructure(
            f"overlapping atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}): "
            f"{distances[k]:.3f} Å apart, below the {min_distance_A} Å limit"
        )


def check_molecular(atoms: Atoms) -> None:
    """Raise `InvalidStructure` for periodic structures (molecular backends only)."""
    if np.any(atoms.get_pbc()):
        raise InvalidStructure(
            f"periodic structure (pbc={atoms.get_pbc().tolist()}): this backend is molecular"
        )


def check_charge_multiplicity(atoms: Atoms, *, charge: int, multiplicity: int) -> None:
    """Raise `InvalidStructure` if no electron configuration has this charge and spin.

    The electron count is sum(Z) − charge (an ECP removes an even number of electrons,
    so parity is unchanged); 2S = multiplicity − 1 unpaired electrons must fit and
    have the same parity as the electron count.
    """
    n_electrons = int(atoms.get_atomic_numbers().sum()) - int(charge)
    n_unpaired = int(multiplicity) - 1
    formula = atoms.get_chemical_formula()
    if multiplicity < 1:
        raise InvalidStructure(f"multiplicity must be >= 1, got {multiplicity}")
    if n_electrons < 0:
        raise InvalidStructure(f"charge {charge} leaves {n_electrons} electrons on {formula}")
    if n_unpaired > n_electrons or (n_electrons - n_unpaired) % 2:
        raise InvalidStructure(
            f"charge {charge} and multiplicity {multiplicity} are impossible for {formula}: "
            f"{n_electrons} electrons cannot have {n_unpaired} unpaired "
            f"(parity of electrons and multiplicity − 1 must match)"
        )


def check_common(
    atoms: Atoms,
    *,
    charge: int | None,
    multiplicity: int | None,
    min_distance_A: float = DEFAULT_MIN_DISTANCE_A,
    molecular: bool = True,
    check_elements: Callable[[Atoms], None] | None = None,
) -> None:
    """Run every generic check, cheapest first. Raises `InvalidStructure`.

    ``check_elements`` (a backend's own element check, e.g. basis coverage) runs
    right after the generic element check, before geometry and charge checks.
    The charge/multiplicity check is skipped when either is None.
    """
    check_finite_positions(atoms)
    check_known_elements(atoms)
    if check_elements is not None:
        check_elements(atoms)
    if molecular:
        check_molecular(atoms)
    check_min_distance(atoms, min_distance_A=min_distance_A)
    if charge is not None and multiplicity is not None:
        check_charge_multiplicity(atoms, charge=charge, multiplicity=multiplicity)
