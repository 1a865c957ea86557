"""Turn ASE structures into the tensors a model reads.

A batch is a dict of tensors (keys below); frames of different sizes are concatenated
along the atom axis and ``frame`` says which frame each atom belongs to.

=============  ===========  =====================================================
key            shape        meaning
=============  ===========  =====================================================
``numbers``    (n,)         atomic numbers (int64)
``positions``  (n, 3)       Cartesian positions, Å
``frame``      (n,)         frame index of each atom (int64)
``n_atoms``    (B,)         atoms per frame (int64)
``pairs``      (2, P)       directed neighbour pairs (i, j), i != j, r_ij < cutoff+skin
``triples``    (3, T)       angle triples (centre, j, k), j < k, both within the
                            angular cutoff+skin of the centre
``charge``     (B,)         total charge of each frame, e (``atoms.info["charge"]``,
                            else the sum of the initial charges; 0 for a molecule
                            without either): what the dipole heads conserve
=============  ===========  =====================================================
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

Batch = dict[str, torch.Tensor]


def _frame_neighbours(
    positions: np.ndarray, cutoff_A: float, angular_cutoff_A: float
) -> tuple[np.ndarray, np.ndarray]:
    """Directed pairs within ``cutoff_A`` and triples within ``angular_cutoff_A`` of one frame."""
    n = len(positions)
    distances = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    i, j = np.nonzero(distances < cutoff_A)
    pairs = np.stack([i, j]).astype(np.int64)
    # angle triples: for each centre, all unordered pairs of its angular neighbours
    close = distances < angular_cutoff_A
    empty = np.zeros(0, dtype=np.int64)
    centres, js, ks = [empty], [empty], [empty]
    for centre in range(n):
        neigh = np.flatnonzero(close[centre])
        a, b = _unordered_pairs(len(neigh))
        centres.append(np.full(len(a), centre))
        js.append(neigh[a])
        ks.append(neigh[b])
    triples = np.stack([np.concatenate(centres), np.concatenate(js), np.concatenate(ks)])
    return pairs, triples.astype(np.int64)


@functools.lru_cache(maxsize=256)
def _unordered_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b), a < b < n, in row-major order (``np.triu_indices(n, 1)``), cached."""
    a, b = np.triu_indices(n, k=1)
    a.flags.writeable = b.flags.writeable = False
    return a, b


def check_structure(atoms: Atoms) -> None:
    """Raise a clear error for structures the models cannot take.

    Raises:
        NotImplementedError: periodic boundary conditions (molecules only for now).
        ValueError: empty structure or non-finite positions.
    """
    if len(atoms) == 0:
        raise ValueError("empty structure: no atoms")
    if np.any(atoms.pbc):
        raise NotImplementedError(
            "periodic cells are not supported yet by alflow's models; pass molecules "
            f"(pbc=False), got pbc={atoms.pbc.tolist()}"
        )
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError("structure has non-finite (NaN/inf) positions")


def atoms_to_batch(
    frames: Sequence[Atoms],
    *,
    cutoff_A: float,
    angular_cutoff_A: float | None = None,
    skin_A: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Batch:
    """Build one batch from ``frames``.

    Pairs and triples are found within the cutoffs plus ``skin_A`` so that a batch can be
    reused while atoms move less than ``skin_A / 2``; the models switch off anything
    beyond their cutoff smoothly, so extra pairs never change a result.
    """
    if len(frames) == 0:
        raise ValueError("atoms_to_batch needs at least one frame")
    angular_cutoff_A = cutoff_A if angular_cutoff_A is None else angular_cutoff_A
    numbers, positions, frame, pairs, triples, n_atoms, charges = [], [], [], [], [], [], []
    offset = 0
    for index, atoms in enumerate(frames):
        check_structure(atoms)
        pos = np.asarray(atoms.positions, dtype=np.float64)
        p, t = _frame_neighbours(pos, cutoff_A + skin_A, angular_cutoff_A + skin_A)
        numbers.append(atoms.numbers)
        positions.append(pos)
        frame.append(np.full(len(atoms), index))
        pairs.append(p + offset)
        triples.append(t + offset)
        n_atoms.append(len(atoms))
        charges.append(total_charge(atoms))
        offset += len(atoms)
    return {
        "numbers": torch.as_tensor(np.concatenate(numbers), dtype=torch.int64),
        "positions": torch.as_tensor(np.concatenate(positions), dtype=dtype),
        "frame": torch.as_tensor(np.concatenate(frame), dtype=torch.int64),
        "n_atoms": torch.as_tensor(n_atoms, dtype=torch.int64),
        "pairs": torch.as_tensor(np.concatenate(pairs, axis=1), dtype=torch.int64),
        "triples": torch.as_tensor(np.concatenate(triples, axis=1), dtype=torch.int64),
        "charge": torch.as_tensor(charges, dtype=dtype),
    }


def total_charge(atoms: Atoms) -> float:
    """The total charge of ``atoms`` in e: ``atoms.info["charge"]`` if set, else the sum
    of the initial (per-atom) charges."""
    if "charge" in atoms.info:
        charge = float(atoms.info["charge"])
    else:
        charge = float(np.sum(atoms.get_initial_charges()))
    if not np.isfinite(charge):
        raise ValueError(f"structure has a non-finite total charge {charge}")
    return charge


def with_positions(batch: Batch, positions: torch.Tensor) -> Batch:
    """A shallow copy of ``batch`` with new positions (same atoms, neighbours kept)."""
    new = dict(batch)
    new["positions"] = positions
    return new


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Concatenate batches into one (frame and atom indices shifted)."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in batches[0]}
    atom_offset, frame_offset = 0, 0
    for batch in batches:
        n = batch["numbers"].shape[0]
        out["numbers"].append(batch["numbers"])
        out["positions"].append(batch["positions"])
        out["frame"].append(batch["frame"] + frame_offset)
        out["n_atoms"].append(batch["n_atoms"])
        out["pairs"].append(batch["pairs"] + atom_offset)
        out["triples"].append(batch["triples"] + atom_offset)
        if "charge" in out:
            out["charge"].append(batch["charge"])
        atom_offset += n
        frame_offset += batch["n_atoms"].shape[0]
    cat_dim = {"pairs": 1, "triples": 1}
    return {k: torch.cat(v, dim=cat_dim.get(k, 0)) for k, v in out.items()}
