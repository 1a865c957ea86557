"""Committee statistics, defined once (docs/architecture.md, "The records").

- ``force_dev`` per atom: sqrt(mean over members of |F_i^m - F̄_i|^2), eV/Å
  (population statistics, ddof=0).
- ``max_force_dev`` per frame: the maximum of ``force_dev`` over the frame's atoms.
- ``energy_dev`` per frame: population std over members of E, divided by sqrt(n_atoms),
  eV/√atom.
- ``dipole_dev`` per frame (models with a dipole head): sqrt(mean over members of
  |mu^m - mean mu|^2), e·Å.
- Calibrated versions multiply by a scale fitted on labelled data (``Calibration``).
  The scales multiply standard deviations, so they are fitted on variances: a
  variance ratio is converted with a square root, never used directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Calibration:
    """Multiplicative scales for the raw committee deviations (dimensionless)."""

    force_dev_scale: float = 1.0
    energy_dev_scale: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class CommitteeStatistics:
    """Committee mean and spread for a batch of B frames with n atoms in total."""

    energy_mean: torch.Tensor  # (B,) eV
    energy_dev: torch.Tensor  # (B,) eV/√atom
    forces_mean: torch.Tensor  # (n, 3) eV/Å
    force_dev: torch.Tensor  # (n,) eV/Å
    max_force_dev: torch.Tensor  # (B,) eV/Å


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def committee_statistics(
    member_energies: torch.Tensor | np.ndarray,
    member_forces: torch.Tensor | np.ndarray,
    frame: torch.Tensor | np.ndarray,
    n_atoms: torch.Tensor | np.ndarray,
) -> CommitteeStatistics:
    """Mean and deviations from per-member energies (M, B) and forces (M, n, 3).

    ``frame`` (n,) gives each atom's frame index and ``n_atoms`` (B,) the atoms per frame.
    """
    energies, forces = _as_tensor(member_energies), _as_tensor(member_forces)
    frame, n_atoms = _as_tensor(frame).long(), _as_tensor(n_atoms)
    if energies.ndim != 2 or forces.ndim != 3 or forces.shape[0] != energies.shape[0]:
        raise ValueError(
            f"need member energies (M, B) and forces (M, n, 3), got {tuple(energies.shape)} "
            f"and {tuple(forces.shape)}"
        )
    forces_mean = forces.mean(dim=0)
    force_dev = ((forces - forces_mean) ** 2).sum(dim=-1).mean(dim=0).sqrt()
    max_force_dev = force_dev.new_zeros(n_atoms.shape[0]).scatter_reduce(
        0, frame, force_dev, reduce="amax", include_self=False
    )
    energy_mean = energies.mean(dim=0)
    energy_std = ((energies - energy_mean) ** 2).mean(dim=0).sqrt()
    energy_dev = energy_std / n_atoms.to(energies.dtype).sqrt()
    return CommitteeStatistics(energy_mean, energy_dev, forces_mean, force_dev, max_force_dev)


def dipole_statistics(member_dipoles: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Committee-mean dipole (B, 3) and ``dipole_dev`` (B,): sqrt(mean over members of
    |mu^m - mean mu|^2), e·Å (population statistics), from member dipoles (M, B, 3)."""
    dipoles = _as_tensor(member_dipoles)
    if dipoles.ndim != 3 or dipoles.shape[-1] != 3:
        raise ValueError(f"need member dipoles (M, B, 3), got {tuple(dipoles.shape)}")
    mean = dipoles.mean(dim=0)
    return mean, ((dipoles - mean) ** 2).sum(dim=-1).mean(dim=0).sqrt()


def fit_calibration(
    force_dev: np.ndarray,
    force_errors: np.ndarray,
    energy_dev: np.ndarray | None = None,
    energy_errors_per_sqrt_atom: np.ndarray | None = None,
) -> Calibration:
    """Scales that make the calibrated deviations match the observed errors in RMS.

    ``force_dev`` (n,) eV/Å and ``force_errors`` (n, 3) = F_ref - F̄ in eV/Å over labelled
    atoms; then mean |ΔF_i|^2 = s_F^2 * mean(force_dev_i^2). Likewise for energies with
    ``energy_errors_per_sqrt_atom`` = (E_ref - Ē) / sqrt(n_atoms), eV/√atom.
    """
    force_dev = np.asarray(force_dev, dtype=np.float64)
    force_errors = np.asarray(force_errors, dtype=np.float64).reshape(len(force_dev), 3)
    mean_var = float(np.mean(force_dev**2))
    if mean_var <= 0:
        raise ValueError("cannot calibrate: the committee's force deviations are all zero")
    force_scale = float(np.sqrt(np.mean(np.sum(force_errors**2, axis=-1)) / mean_var))
    energy_scale = 1.0
    if energy_dev is not None and energy_errors_per_sqrt_atom is not None:
        e_var = float(np.mean(np.asarray(energy_dev, dtype=np.float64) ** 2))
        if e_var > 0:
            errors = np.asarray(energy_errors_per_sqrt_atom, dtype=np.float64)
            energy_scale = float(np.sqrt(np.mean(errors**2) / e_var))
    return Calibration(force_dev_scale=force_scale, energy_dev_scale=energy_scale)
