"""Harmonic IR spectrum of a committee: its minimum, Hessian and dipole derivatives.

The committee-mean energy is minimised (ASE's BFGS on :class:`CommitteeCalculator`),
its Cartesian Hessian and the Jacobian of the committee-mean dipole are taken by
autograd at the minimum (exact derivatives of the model, no step size), the normal
modes come from :func:`nnp_core.sampling.normal_modes` (translations and rotations
projected out), and each mode's IR intensity is

    A_k = N_A / (12 eps0 c^2) |d mu / d Q_k|^2,   d mu / d Q_k = J . (e_k / sqrt(m)),

in km/mol (the double-harmonic approximation, as quantum-chemistry codes report it).
``ase.vibrations.Infrared`` on the same calculator (finite differences) gives the same
numbers (``tests/nnp_core/test_dipole.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.units import _amu, _c, _e, _eps0, _Nav

from nnp_core.calculator import CommitteeCalculator
from nnp_core.committee import Committee
from nnp_core.sampling import normal_modes

#: IR intensity in km/mol per (e / sqrt(amu))^2 of dmu/dQ
E2_PER_AMU_TO_KM_MOL = _Nav * _e**2 / (12 * _eps0 * _c**2 * _amu) / 1000.0


@dataclass(frozen=True)
class HarmonicIR:
    """Harmonic frequencies (cm⁻¹, ascending; imaginary ones negative) and IR
    intensities (km/mol) of the committee at ``minimum`` (whose largest remaining
    committee-mean force is ``max_force_eV_A``)."""

    frequencies_cm1: np.ndarray
    intensities_km_mol: np.ndarray
    minimum: Atoms
    max_force_eV_A: float


def hessian_and_dipole_jacobian(committee: Committee, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """The committee-mean energy's Cartesian Hessian (3N, 3N), eV/Å², and the
    committee-mean dipole's Jacobian (3, 3N), e, at ``atoms``, by autograd."""
    if not committee.has_dipole:
        raise ValueError("this committee has no dipole head: it has no IR intensities")
    model = committee.model
    batch = committee.make_batch([atoms])
    x0 = batch["positions"].to(committee.dtype).reshape(-1).detach()

    def energy(x: torch.Tensor) -> torch.Tensor:
        return model._energies_and_dipoles(batch, x.reshape(1, -1, 3))["energy"].mean()

    def dipole(x: torch.Tensor) -> torch.Tensor:
        return model._energies_and_dipoles(batch, x.reshape(1, -1, 3))["dipole"].mean(dim=0)[0]

    hessian = torch.autograd.functional.hessian(energy, x0)
    jacobian = torch.autograd.functional.jacobian(dipole, x0)
    return hessian.detach().double().cpu().numpy(), jacobian.detach().double().cpu().numpy()


def intensities_km_mol(modes_cartesian: np.ndarray, dipole_jacobian: np.ndarray) -> np.ndarray:
    """IR intensities (K,), km/mol, of modes given as the Cartesian displacement per
    unit mass-weighted amplitude (K, N, 3) (``NormalModes.cartesian_displacements``)."""
    dmu_dq = modes_cartesian.reshape(len(modes_cartesian), -1) @ dipole_jacobian.T  # (K, 3)
    return (dmu_dq**2).sum(axis=1) * E2_PER_AMU_TO_KM_MOL


def committee_harmonic_ir(
    committee: Committee, atoms: Atoms, *, optimise: bool = True, fmax_eV_A: float = 1e-3, max_steps: int = 1000
) -> HarmonicIR:
    """The committee's harmonic IR spectrum at its minimum nearest ``atoms`` (or at
    ``atoms`` itself with ``optimise=False``).

    Raises:
        ValueError: a committee without a dipole head, or a structure with an element
            the committee lacks.
    """
    from ase.optimize import BFGS

    if not committee.has_dipole:
        raise ValueError("this committee has no dipole head: it has no IR intensities")
    minimum = Atoms(numbers=atoms.numbers, positions=atoms.positions, info=dict(atoms.info))
    minimum.calc = CommitteeCalculator(committee)
    if optimise:
        BFGS(minimum, logfile=None).run(fmax=fmax_eV_A, steps=max_steps)
    max_force = float(np.linalg.norm(minimum.get_forces(), axis=1).max())
    hessian, jacobian = hessian_and_dipole_jacobian(committee, minimum)
    modes = normal_modes(minimum, hessian, imaginary_tol_cm1=50.0, skip_imaginary=True)
    result = Atoms(numbers=minimum.numbers, positions=minimum.positions, info=dict(minimum.info))
    return HarmonicIR(modes.frequencies_cm1, intensities_km_mol(modes.cartesian_displacements, jacobian),
                      result, max_force)
