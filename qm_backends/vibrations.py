"""Harmonic vibrational analysis from a Cartesian Hessian, and IR intensities.

Any backend that gives a Hessian (eV/Å²) and dipoles (e·Å) can use it; the
diagonalisation is ASE's (``ase.vibrations.VibrationsData``). Translations and rotations
are projected out exactly (5 for linear molecules), so a molecule with N atoms has
3N − 6 (or 3N − 5) modes. (``nnp_core.sampling.normal_modes`` does the same for the
samplers, with their checks; the two packages are independent.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from ase import Atoms, units
from ase.units import _amu, _c, _e, _eps0, _Nav
from ase.vibrations import VibrationsData

# IR intensity A = N_A / (12 ε0 c²) |dμ/dQ|²; with dμ/dQ in e/sqrt(amu), A in km/mol.
_E2_PER_AMU_TO_KM_MOL = _Nav * _e**2 / (12 * _eps0 * _c**2 * _amu) / 1000.0


@dataclass(frozen=True)
class VibrationalModes:
    """Harmonic modes of one structure.

    Attributes:
        frequencies_cm1: (M,) wavenumbers, cm⁻¹, ascending; an imaginary mode is
            reported as a negative number.
        modes: (M, N, 3) Cartesian displacement of each mode (mass-weighted
            eigenvector divided by sqrt(mass), normalised to unit length).
        mass_weighted_modes: (M, 3N) orthonormal eigenvectors of the mass-weighted
            Hessian, amu^1/2-weighted coordinates.
        ir_intensities_km_mol: (M,) IR intensities, km/mol, or None if not computed.
    """

    frequencies_cm1: np.ndarray
    modes: np.ndarray
    mass_weighted_modes: np.ndarray
    ir_intensities_km_mol: np.ndarray | None = None


def _rigid_body_basis(atoms: Atoms) -> np.ndarray:
    """Orthonormal mass-weighted translations and rotations, (3N, 5 or 6)."""
    masses = atoms.get_masses()
    sqrt_m = np.sqrt(masses)
    centred = atoms.get_positions() - atoms.get_center_of_mass()
    n = len(atoms)
    vectors = []
    for axis in range(3):
        t = np.zeros((n, 3))
        t[:, axis] = 1.0
        vectors.append((t * sqrt_m[:, None]).ravel())
        r = np.cross(np.eye(3)[axis], centred)  # rotation about `axis`
        vectors.append((r * sqrt_m[:, None]).ravel())
    u, s, _ = np.linalg.svd(np.array(vectors).T, full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


def harmonic_analysis(hessian_eV_A2: np.ndarray, atoms: Atoms) -> VibrationalModes:
    """Frequencies and normal modes from a (3N, 3N) Hessian in eV/Å².

    ``ase.vibrations.VibrationsData`` diagonalises the mass-weighted Hessian and
    converts units, but does not project out translations and rotations (it returns 3N
    modes, the rigid ones near zero only as far as the Hessian is exact). So they are
    projected out of the mass-weighted Hessian here and given an eigenvalue above every
    other (Gershgorin bound), which makes them ASE's last modes, dropped exactly.

    Raises:
        ValueError: the Hessian's shape does not match ``atoms``.
    """
    n = len(atoms)
    hessian = np.asarray(hessian_eV_A2, dtype=float)
    if hessian.shape != (3 * n, 3 * n):
        raise ValueError(f"Hessian shape {hessian.shape} does not match {n} atoms (expected {(3 * n, 3 * n)})")
    sqrt_m = np.repeat(np.sqrt(atoms.get_masses()), 3)
    mass_weighted = 0.5 * (hessian + hessian.T) / np.outer(sqrt_m, sqrt_m)
    rigid = _rigid_body_basis(atoms)
    internal = np.eye(3 * n) - rigid @ rigid.T
    shift = 1.0 + 2.0 * np.abs(mass_weighted).sum(axis=1).max()
    projected = internal @ mass_weighted @ internal + shift * rigid @ rigid.T
    data = VibrationsData.from_2d(atoms, projected * np.outer(sqrt_m, sqrt_m), indices=range(n))
    energies, cartesian = data.get_energies_and_modes()  # modes: eigenvector / sqrt(mass)
    keep = 3 * n - rigid.shape[1]
    energies, cartesian = energies[:keep], cartesian[:keep].reshape(keep, 3 * n)
    return VibrationalModes(
        frequencies_cm1=(energies.real - energies.imag) / units.invcm,  # imaginary: negative
        modes=(cartesian / np.linalg.norm(cartesian, axis=1, keepdims=True)).reshape(-1, n, 3),
        mass_weighted_modes=cartesian * sqrt_m[None, :],
    )


def with_ir_intensities(
    modes: VibrationalModes,
    atoms: Atoms,
    dipole_e_A: Callable[[Atoms], np.ndarray],
    *,
    step_A: float = 0.005,
) -> VibrationalModes:
    """``modes`` with IR intensities (km/mol) from central dipole differences.

    For each mode, atoms move along Q (amu^1/2·Å) so that the largest atomic
    displacement is ``step_A``; dμ/dQ = (μ(+h) − μ(−h)) / 2h and the intensity is
    N_A/(12 ε0 c²)·|dμ/dQ|². ``dipole_e_A`` maps Atoms to a dipole in e·Å.
    """
    inv_sqrt_m = 1.0 / np.sqrt(atoms.get_masses())
    intensities = []
    for q in modes.mass_weighted_modes:
        cartesian_per_Q = q.reshape(-1, 3) * inv_sqrt_m[:, None]  # Å per (amu^1/2 Å)
        h = step_A / np.linalg.norm(cartesian_per_Q, axis=1).max()
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += h * cartesian_per_Q
        minus.positions -= h * cartesian_per_Q
        dmu_dq = (np.asarray(dipole_e_A(plus)) - np.asarray(dipole_e_A(minus))) / (2 * h)
        intensities.append(float(dmu_dq @ dmu_dq) * _E2_PER_AMU_TO_KM_MOL)
    return replace(modes, ir_intensities_km_mol=np.array(intensities))
