"""State and numerics of R replicas propagated together (used by :mod:`nnp_core.md`).

All replicas' atoms live in one (n, 3) array; replica r owns rows ``slices[r]``. The
integrators work on the rows of the *active* replicas only, and the committee
evaluates all active replicas in one batched pass: the committee mean only on most
steps, every member (and so the deviations) on scoring steps.

Internal units are ASE's: Å, eV, amu and the ASE time unit (Å·√(amu/eV) ≈ 10.18 fs),
so velocities are in Å per ASE time unit and F/m needs no conversion. The public API
converts at its boundary (``timestep_fs``, Å/fs in records).

Neighbour lists: each replica keeps its own batch built with ``skin_A``; it is rebuilt
when any of its atoms has moved at least ``skin_A / 2`` since the build (then no pair
can have crossed cutoff + skin), and the active replicas' batches are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from nnp_core.batch import Batch, concat_batches, total_charge, with_positions
from nnp_core.bias import Bias
from nnp_core.committee import Committee
from nnp_core.uncertainty import dipole_statistics


def without_com_velocity(
    velocities: np.ndarray, masses: np.ndarray, starts: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """``velocities`` (k, 3) with each replica's centre-of-mass velocity removed.

    Replicas are consecutive row segments starting at ``starts`` with ``sizes`` atoms;
    ``masses`` is (k, 1). A one-atom replica is left as it is (its motion is all COM).
    """
    com = np.add.reduceat(masses * velocities, starts) / np.add.reduceat(masses, starts)
    com[sizes == 1] = 0.0
    return velocities - np.repeat(com, sizes, axis=0)


@dataclass
class Snapshot:
    """A replica's positions with what the committee said there (a restart point)."""

    positions: np.ndarray  # (N, 3) Å
    forces: np.ndarray  # (N, 3) eV/Å, committee mean
    energy_eV: float
    max_force_dev: float
    energy_dev: float
    bias_energy_eV: float = 0.0
    cvs: np.ndarray | None = None


class ReplicaEnsemble:
    """Positions, velocities and committee forces of R replicas, and their random streams.

    Args:
        committee: evaluates all active replicas in one batched pass.
        structures: one seed structure per replica (copied).
        temperatures_K: (R,) Maxwell–Boltzmann / thermostat temperature of each replica.
        friction_per_fs: (R,) Langevin friction of each replica, 1/fs.
        seeds: (R,) seed of each replica's own ``numpy.random.Generator``.
        skin_A: neighbour-list skin, Å.
        bias: an exploration bias (:mod:`nnp_core.bias`) added to the forces the
            replicas move on; energies and scores stay the unbiased committee's.
    """

    def __init__(
        self,
        committee: Committee,
        structures: Sequence[Atoms],
        *,
        temperatures_K: Sequence[float],
        friction_per_fs: Sequence[float],
        seeds: Sequence[int],
        skin_A: float,
        bias: Bias | None = None,
    ) -> None:
        self.committee = committee
        self.bias = bias
        self.skin_A = float(skin_A)
        self.structures = [atoms.copy() for atoms in structures]
        sizes = np.array([len(a) for a in self.structures], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.slices = [slice(int(s), int(s + n)) for s, n in zip(self.starts, sizes)]
        self.n_atoms = sizes
        self.numbers = np.concatenate([a.numbers for a in self.structures])
        self.charges = [total_charge(a) for a in self.structures]  # e, what dipole heads conserve
        self.masses = np.concatenate([a.get_masses() for a in self.structures])[:, None]
        self.kT_eV = units.kB * np.asarray(temperatures_K, dtype=np.float64)
        self.friction_per_fs = np.asarray(friction_per_fs, dtype=np.float64)
        self.rngs = [np.random.default_rng(int(seed)) for seed in seeds]
        self.dof = np.where(sizes > 1, 3 * sizes - 3, 3 * sizes)
        n, n_replicas = int(sizes.sum()), len(self.structures)
        self.positions = np.concatenate([a.positions for a in self.structures]).astype(np.float64)
        self.velocities = np.zeros((n, 3))
        self.forces = np.zeros((n, 3))
        self.energy_eV = np.zeros(n_replicas)
        self.max_force_dev = np.zeros(n_replicas)
        self.energy_dev = np.zeros(n_replicas)
        #: ``dipole_dev`` (e·Å) at the last scoring step, committees with a dipole head
        self.dipole_dev = np.full(n_replicas, np.nan)
        #: each replica's bias energy (eV) and CV values (R, D) at the last evaluation
        self.bias_energy_eV = np.zeros(n_replicas)
        self.cvs = np.full((n_replicas, len(bias.cv_names) if bias else 0), np.nan)
        #: every member's dipole (M, R, 3), e·Å, after ``evaluate(..., dipoles=True)``
        self.member_dipoles = np.full((committee.n_members, n_replicas, 3), np.nan)
        self.active = np.ones(n_replicas, dtype=bool)
        self._batches: list[Batch | None] = [None] * n_replicas
        self._built_at = self.positions.copy()
        self._batch: Batch | None = None
        self.neighbour_rebuilds = 0  # per-replica neighbour-list builds, initial ones included
        self._set_active_rows()

    # ------------------------------------------------------------------ replicas
    @property
    def n_replicas(self) -> int:
        return len(self.structures)

    @property
    def active_ids(self) -> np.ndarray:
        return np.flatnonzero(self.active)

    def deactivate(self, replica: int) -> None:
        """Stop propagating ``replica`` (its state is kept as it is)."""
        self.active[replica] = False
        self._set_active_rows()

    def _set_active_rows(self) -> None:
        ids = self.active_ids
        self._rows = (
            np.concatenate([np.arange(self.slices[r].start, self.slices[r].stop) for r in ids])
            if len(ids) else np.zeros(0, dtype=np.int64)
        )
        ends = np.cumsum(self.n_atoms[ids])
        self._segment_starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self._batch = None

    def _per_atom(self, values: np.ndarray) -> np.ndarray:
        """Per-replica values (R,) of the active replicas repeated onto their rows (k, 1)."""
        ids = self.active_ids
        return np.repeat(values[ids], self.n_atoms[ids])[:, None]

    # ---------------------------------------------------------------- velocities
    def draw_velocities(self, replica: int) -> None:
        """Maxwell–Boltzmann velocities from the replica's stream, its COM motion removed."""
        s = self.slices[replica]
        sigma = np.sqrt(self.kT_eV[replica] / self.masses[s])
        noise = self.rngs[replica].standard_normal((s.stop - s.start, 3))
        self.set_velocities(replica, sigma * noise)

    def set_velocities(self, replica: int, velocities: np.ndarray) -> None:
        """Given velocities (N, 3) in ASE units, COM motion removed."""
        s, first = self.slices[replica], np.zeros(1, dtype=np.int64)
        sizes = self.n_atoms[replica : replica + 1]
        self.velocities[s] = without_com_velocity(velocities, self.masses[s], first, sizes)

    def swap_temperatures(self, i: int, j: int) -> None:
        """Exchange the thermostat temperatures of replicas ``i`` and ``j``, each one's
        velocities rescaled by sqrt(T_new / T_old) (replica exchange)."""
        kt_i, kt_j = self.kT_eV[i], self.kT_eV[j]
        self.velocities[self.slices[i]] *= np.sqrt(kt_j / kt_i)
        self.velocities[self.slices[j]] *= np.sqrt(kt_i / kt_j)
        self.kT_eV[i], self.kT_eV[j] = kt_j, kt_i

    def kinetic_temperatures_K(self) -> np.ndarray:
        """Instantaneous kinetic temperature (R,) of every replica, K (3N-3 dof; 3 if N=1)."""
        per_atom = np.sum(self.masses * self.velocities**2, axis=1)
        kinetic = 0.5 * np.add.reduceat(per_atom, self.starts)
        return 2.0 * kinetic / (self.dof * units.kB)

    # ---------------------------------------------------------------- integrator
    def kick(self, dt: float) -> None:
        """v += dt F / m on the active replicas (dt in ASE time units)."""
        rows = self._rows
        self.velocities[rows] += dt * self.forces[rows] / self.masses[rows]

    def drift(self, dt: float) -> None:
        """x += dt v on the active replicas."""
        rows = self._rows
        self.positions[rows] += dt * self.velocities[rows]

    def thermostat(self, dt_fs: float) -> None:
        """Exact Ornstein–Uhlenbeck step (BAOAB's O) over ``dt_fs``, then COM motion removed.

        v <- c v + sqrt((1 - c²) kT / m) ξ with c = exp(-γ dt); ξ from each replica's own
        stream, so a replica's noise does not depend on which others are in the batch.
        Removing the COM momentum projects the noise orthogonally (mass-weighted), so the
        3N-3 internal degrees of freedom are sampled exactly.
        """
        rows, ids = self._rows, self.active_ids
        if len(ids) == 0:
            return
        noise = np.concatenate([self.rngs[r].standard_normal((self.n_atoms[r], 3)) for r in ids])
        c = np.exp(-self.friction_per_fs * dt_fs)
        m = self.masses[rows]
        sigma = np.sqrt((1.0 - self._per_atom(c) ** 2) * self._per_atom(self.kT_eV) / m)
        v = self._per_atom(c) * self.velocities[rows] + sigma * noise
        self.velocities[rows] = without_com_velocity(v, m, self._segment_starts, self.n_atoms[ids])

    # ---------------------------------------------------------------- committee
    def non_finite_positions(self) -> list[int]:
        """Active replicas with a NaN/inf position."""
        finite = np.isfinite(self.positions).all(axis=1)
        return [int(r) for r in self.active_ids if not finite[self.slices[r]].all()]

    def finite(self, scored: bool) -> np.ndarray:
        """(R,) whether each replica's energy, forces, velocities (and scores, if
        ``scored``) are all finite."""
        per_atom = np.isfinite(self.forces).all(axis=1) & np.isfinite(self.velocities).all(axis=1)
        ok = np.logical_and.reduceat(per_atom, self.starts) & np.isfinite(self.energy_eV)
        if scored:
            ok &= np.isfinite(self.max_force_dev) & np.isfinite(self.energy_dev)
        return ok

    def evaluate(self, *, score: bool, dipoles: bool = False) -> None:
        """Committee mean energy and forces of every active replica, and with ``score``
        every member's forces and the deviations (one batched pass either way); with
        ``dipoles`` (a committee with a dipole head) every member's dipole too, in
        ``member_dipoles`` (the forward pass gives them at no extra backward pass).

        Without ``score`` only the mean is computed (one backward pass instead of M) and
        the active replicas' ``max_force_dev`` and ``energy_dev`` are NaN (not known).

        With a bias, ``forces`` are the committee mean's plus the bias's. A bias on the
        members' energies (UDD) comes from the same backward pass as the mean between
        scoring steps, and from the members' forces on scoring steps; a bias on the
        positions (metadynamics) from one autograd pass over the active positions.
        """
        if not self.active.any():
            return
        rows, ids = self._rows, self.active_ids
        positions = torch.from_numpy(self.positions[rows]).to(self.committee.device, self.committee.dtype)
        batch = with_positions(self._active_batch(), positions)
        bias = self.bias
        on_members = None
        if bias is not None and bias.uses_member_energies:
            n_atoms = batch["n_atoms"]
            on_members = lambda energies: bias.member_energy_bias(energies, n_atoms)  # noqa: E731
        bias_energy = torch.zeros(len(ids), dtype=self.committee.dtype, device=self.committee.device)
        if score:
            output = self.committee.evaluate(batch)
            stats = self.committee.statistics(batch, output)
            energy, forces = stats.energy_mean, stats.forces_mean
            self.max_force_dev[ids] = stats.max_force_dev.to(torch.float64).cpu().numpy()
            self.energy_dev[ids] = stats.energy_dev.to(torch.float64).cpu().numpy()
            if "dipole" in output:
                self.dipole_dev[ids] = dipole_statistics(output["dipole"])[1].to(torch.float64).cpu().numpy()
            if on_members is not None:
                member_energies = output["energy"].detach().requires_grad_(True)
                with torch.enable_grad():
                    bias_energy = on_members(member_energies)
                    (weights,) = torch.autograd.grad(bias_energy.sum(), member_energies)
                # -dE_bias/dx = sum_m (dE_bias/dE_m) F_m
                forces = forces + (weights[:, batch["frame"], None] * output["forces"]).sum(dim=0)
                bias_energy = bias_energy.detach()
        else:
            if dipoles or on_members is not None:
                output = self.committee.mean_pass(batch, on_members)
                energy, forces = output["energy"], output["forces"]
                bias_energy = output.get("bias_energy", bias_energy)
            else:
                energy, forces = self.committee.mean_energy_forces(batch)
            self.max_force_dev[ids] = np.nan
            self.energy_dev[ids] = np.nan
            self.dipole_dev[ids] = np.nan
        if dipoles:
            if "dipole" not in output:
                raise ValueError("this committee has no dipole head: it cannot record dipoles")
            self.member_dipoles[:, ids] = output["dipole"].to(torch.float64).cpu().numpy()
        if bias is not None and bias.uses_positions:  # on the host: a few CVs per replica
            leaf = positions.detach().cpu().clone().requires_grad_(True)
            starts = torch.from_numpy(self._segment_starts)
            with torch.enable_grad():
                terms = bias.position_bias(leaf, starts, ids)
                (grad,) = torch.autograd.grad(terms.energy.sum(), leaf)
            forces = forces - grad.to(forces.device)
            bias_energy = bias_energy + terms.energy.detach().to(bias_energy.device)
            self.cvs[ids] = terms.cvs.to(torch.float64).cpu().numpy()
        self.forces[rows] = forces.to(torch.float64).cpu().numpy()
        self.energy_eV[ids] = energy.to(torch.float64).cpu().numpy()
        self.bias_energy_eV[ids] = bias_energy.to(torch.float64).cpu().numpy()

    def _active_batch(self) -> Batch:
        """The active replicas' batch, rebuilding the neighbours of replicas that moved."""
        ids, rows = self.active_ids, self._rows
        moved = np.sum((self.positions[rows] - self._built_at[rows]) ** 2, axis=1)
        largest = np.maximum.reduceat(moved, self._segment_starts)
        limit = (0.5 * self.skin_A) ** 2
        stale = [int(r) for r, d in zip(ids, largest) if self._batches[r] is None or d >= limit]
        for r in stale:
            s = self.slices[r]
            frame = Atoms(numbers=self.numbers[s], positions=self.positions[s], info={"charge": self.charges[r]})
            self._batches[r] = self.committee.make_batch([frame], skin_A=self.skin_A)
            self._built_at[s] = self.positions[s]
            self.neighbour_rebuilds += 1
        if stale or self._batch is None:
            self._batch = concat_batches([self._batches[r] for r in ids])  # type: ignore[misc]
        return self._batch

    # ---------------------------------------------------------------- snapshots
    def snapshot(self, replica: int) -> Snapshot:
        s = self.slices[replica]
        return Snapshot(
            self.positions[s].copy(), self.forces[s].copy(), float(self.energy_eV[replica]),
            float(self.max_force_dev[replica]), float(self.energy_dev[replica]),
            float(self.bias_energy_eV[replica]), self.cvs[replica].copy(),
        )

    def restore(self, replica: int, snapshot: Snapshot) -> None:
        """Put ``replica`` back at ``snapshot`` (forces included); velocities are not touched."""
        s = self.slices[replica]
        self.positions[s] = snapshot.positions
        self.forces[s] = snapshot.forces
        self.energy_eV[replica] = snapshot.energy_eV
        self.max_force_dev[replica] = snapshot.max_force_dev
        self.energy_dev[replica] = snapshot.energy_dev
        self.bias_energy_eV[replica] = snapshot.bias_energy_eV
        if snapshot.cvs is not None:
            self.cvs[replica] = snapshot.cvs
        self._batches[replica] = None
        self._batch = None
