"""Sanity filters for explored frames: finite values, minimum distance, bond graph.

Each filter returns a human-readable reason when a frame fails, or None when it passes;
:func:`check_frame` runs them all. Distances in Å; bonds use ASE covalent radii
(``ase.neighborlist.natural_cutoffs``) scaled by ``bond_scale``.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import get_distances
from ase.neighborlist import natural_cutoffs, neighbor_list

#: default shortest allowed interatomic distance (Å): the campaign's
#: ``select.min_distance_A`` default and ``qm_backends.validation.DEFAULT_MIN_DISTANCE_A``,
#: which refuses such a structure before a reference calculation. The two checks stay
#: separate because nnp_core and qm_backends are independent packages, and they differ
#: in kind: this one gives a reason (a frame is filtered) and uses the minimum image.
DEFAULT_MIN_DISTANCE_A = 0.5
#: default multiplier on covalent radii (ase natural_cutoffs) defining a bond
DEFAULT_BOND_SCALE = 1.2
#: bond changes listed in a reason before the rest are summarised as "+n more"
MAX_LISTED_BOND_CHANGES = 4



def _label(atoms: Atoms, index: int) -> str:
    """Atom label: chemical symbol plus ASE's 0-based index, e.g. ``O2``."""
    return f"{atoms[index].symbol}{index}"


def check_finite(atoms: Atoms, *, energy_eV: float | None = None) -> str | None:
    """Reason if positions (or the energy, eV, when given) are not finite, else None."""
    bad = np.flatnonzero(~np.all(np.isfinite(atoms.positions), axis=1))
    if bad.size:
        return f"non-finite positions ({bad.size} atom(s), first {_label(atoms, int(bad[0]))})"
    if energy_eV is not None and not np.isfinite(energy_eV):
        return f"non-finite energy ({energy_eV})"
    return None


def check_min_distance(
    atoms: Atoms, *, min_distance_A: float = DEFAULT_MIN_DISTANCE_A
) -> str | None:
    """Reason if two atoms are closer than ``min_distance_A`` (Å, minimum image), else None.

    Raises:
        ValueError: ``min_distance_A`` negative or non-finite.
    """
    if not np.isfinite(min_distance_A) or min_distance_A < 0.0:
        raise ValueError(f"min_distance_A must be finite and >= 0, got {min_distance_A}")
    if len(atoms) < 2:
        return None
    _, distances = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    distances[np.diag_indices_from(distances)] = np.inf
    i, j = np.unravel_index(np.argmin(distances), distances.shape)
    shortest = float(distances[i, j])
    if shortest >= min_distance_A:
        return None
    pair = f"{_label(atoms, int(min(i, j)))}-{_label(atoms, int(max(i, j)))}"
    return f"min_distance {shortest:.2f} Å < {min_distance_A:.2f} Å ({pair})"


def bond_graph(
    atoms: Atoms, *, bond_scale: float = DEFAULT_BOND_SCALE
) -> frozenset[tuple[int, int]]:
    """Bonded pairs (i < j): distance < bond_scale·(r_i + r_j), covalent radii from ASE.

    Uses ``ase.neighborlist.natural_cutoffs(atoms, mult=bond_scale)``; in periodic
    cells a pair is bonded if any of its images is within the cutoff.

    Raises:
        ValueError: ``bond_scale`` not positive.
    """
    if not np.isfinite(bond_scale) or bond_scale <= 0.0:
        raise ValueError(f"bond_scale must be > 0, got {bond_scale}")
    cutoffs = natural_cutoffs(atoms, mult=bond_scale)
    first, second = neighbor_list("ij", atoms, cutoffs)
    return frozenset((int(a), int(b)) for a, b in zip(first, second) if a < b)


def rotatable_bonds(atoms: Atoms) -> list[tuple[int, int, int, int, np.ndarray]]:
    """(a, i, j, b, mask) for each rotatable bond i-j: a bond of :func:`bond_graph`
    (1.2 x the covalent radii) between two atoms that both have other neighbours and
    that is not in a ring. a-i-j-b is its dihedral (a, b: the lowest-index other
    neighbours of i and j); ``mask`` marks the atoms on j's side."""
    neighbours: list[set[int]] = [set() for _ in range(len(atoms))]
    for a, b in bond_graph(atoms):
        neighbours[a].add(b)
        neighbours[b].add(a)
    bonds = []
    for i in range(len(atoms)):
        for j in neighbours[i]:
            if j < i or len(neighbours[i]) < 2 or len(neighbours[j]) < 2:
                continue
            side, stack = {j}, [j]
            while stack:
                for k in neighbours[stack.pop()]:
                    if k not in side and not (k == i):
                        side.add(k)
                        stack.append(k)
            if i in side:  # ring bond
                continue
            a = min(neighbours[i] - {j})
            b = min(neighbours[j] - {i})
            mask = np.zeros(len(atoms), dtype=bool)
            mask[list(side)] = True
            bonds.append((a, i, j, b, mask))
    return bonds


def check_bond_graph(
    atoms: Atoms,
    reference: Atoms,
    *,
    bond_scale: float = DEFAULT_BOND_SCALE,
) -> str | None:
    """Reason naming the bonds broken/formed relative to ``reference``, else None.

    Raises:
        ValueError: ``atoms`` and ``reference`` differ in atomic numbers.
    """
    if not np.array_equal(atoms.numbers, reference.numbers):
        raise ValueError(
            f"frame {atoms.get_chemical_formula()} and reference "
            f"{reference.get_chemical_formula()} differ in atoms or their order"
        )
    reference_bonds = bond_graph(reference, bond_scale=bond_scale)
    bonds = bond_graph(atoms, bond_scale=bond_scale)
    changes = [
        f"{_label(atoms, i)}-{_label(atoms, j)} {verb}"
        for verb, pairs in (
            ("broken", reference_bonds - bonds),
            ("formed", bonds - reference_bonds),
        )
        for i, j in sorted(pairs)
    ]
    if not changes:
        return None
    listed = ", ".join(changes[:MAX_LISTED_BOND_CHANGES])
    more = len(changes) - MAX_LISTED_BOND_CHANGES
    return "bond graph changed: " + listed + (f" (+{more} more)" if more > 0 else "")


def check_frame(
    atoms: Atoms,
    *,
    reference: Atoms | None,
    energy_eV: float | None = None,
    min_distance_A: float = DEFAULT_MIN_DISTANCE_A,
    bond_scale: float = DEFAULT_BOND_SCALE,
) -> str | None:
    """All sanity filters; the joined reasons of those that fail, or None if sane.

    Non-finite values end the check (distances would be meaningless). The bond-graph
    check runs only when ``reference`` is given (pass None to allow bond changes).
    """
    reason = check_finite(atoms, energy_eV=energy_eV)
    if reason is not None:
        return reason
    reasons = [check_min_distance(atoms, min_distance_A=min_distance_A)]
    if reference is not None:
        reasons.append(check_bond_graph(atoms, reference, bond_scale=bond_scale))
    failed = [r for r in reasons if r is not None]
    return "; ".join(failed) if failed else None
