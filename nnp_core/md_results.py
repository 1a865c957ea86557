"""What a batched MD exploration run returns: recorded frames and per-replica summaries.

Everything here is plain numpy and Python values, ready to store; :meth:`MDFrame.to_atoms`
turns a record into an ``ase.Atoms``. Units: Å, Å/fs, eV, K; deviations are the raw
committee statistics of :mod:`nnp_core.uncertainty` (``max_force_dev`` in eV/Å,
``energy_dev`` in eV/√atom).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from ase import Atoms, units


class FrameStatus(StrEnum):
    """Why a frame was recorded."""

    TRUSTED = "trusted"  # a regular record: max_force_dev below trust_hi
    REJECTED = "rejected"  # the scoring step where max_force_dev reached trust_hi
    FAILED = "failed"  # non-finite values or an energy jump (any step): the replica stopped


class StopReason(StrEnum):
    """How a replica's run ended."""

    COMPLETED = "completed"  # ran all steps
    TRUST_LIMIT = "trust_limit"  # crossed trust_hi with no restart left (or at its seed)
    NON_FINITE = "non_finite"  # NaN/inf positions, energy or forces
    ENERGY_JUMP = "energy_jump"  # potential energy changed too much in one step


@dataclass(frozen=True, eq=False)
class MDFrame:
    """One recorded frame of one replica.

    ``step`` counts integration steps of the run (0 = the start); ``restarts`` is the
    number of restarts the replica had made when the frame was recorded.
    ``potential_energy_eV`` is the committee mean, a prediction and not a label.
    Scores come from scoring steps (the record steps); a ``failed`` frame recorded
    between them has NaN ``max_force_dev`` and ``energy_dev``.
    """

    replica: int
    step: int
    restarts: int
    status: FrameStatus
    reason: str
    numbers: np.ndarray  # (N,)
    positions_A: np.ndarray  # (N, 3) Å
    velocities_A_per_fs: np.ndarray  # (N, 3) Å/fs
    temperature_K: float  # the replica's target (Langevin; its current one under replica exchange) or initial (NVE) temperature
    kinetic_temperature_K: float  # instantaneous, 3N-3 degrees of freedom (3 for N=1)
    potential_energy_eV: float
    max_force_dev: float  # eV/Å
    energy_dev: float  # eV/√atom
    #: the exploration bias the replica moved under ("" none; "udd", "metad"), its
    #: energy here (eV) and its CV values (e.g. torsions in radians)
    bias: str = ""
    bias_energy_eV: float = 0.0
    cvs: tuple[float, ...] = ()
    #: committees with a dipole head: the members' dipole spread (e·Å), else NaN
    dipole_dev: float = float("nan")

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` with positions, velocities and the record's values in ``info``.

        No calculator is attached: the committee energy is in
        ``info["committee_energy_eV"]``, so the frame is never mistaken for a labelled one.
        """
        atoms = Atoms(numbers=self.numbers, positions=self.positions_A)
        atoms.set_velocities(self.velocities_A_per_fs / units.fs)
        atoms.info.update(
            replica=self.replica,
            md_step=self.step,
            md_restarts=self.restarts,
            md_status=self.status.value,
            md_reason=self.reason,
            temperature_K=self.temperature_K,
            kinetic_temperature_K=self.kinetic_temperature_K,
            committee_energy_eV=self.potential_energy_eV,
            max_force_dev=self.max_force_dev,
            energy_dev=self.energy_dev,
        )
        if np.isfinite(self.dipole_dev):
            atoms.info["dipole_dev"] = self.dipole_dev
        if self.bias:
            atoms.info.update(bias=self.bias, bias_energy_eV=self.bias_energy_eV,
                              bias_cvs=np.asarray(self.cvs, dtype=np.float64))
        return atoms


@dataclass(frozen=True)
class ReplicaSummary:
    """How one replica's run went.

    ``mean_kinetic_temperature_K`` averages the instantaneous kinetic temperature over
    every step the replica ran (restarts included).
    """

    replica: int
    temperature_K: float
    steps_run: int
    restarts: int
    n_trusted_frames: int
    stop_reason: StopReason
    message: str
    mean_kinetic_temperature_K: float


@dataclass(frozen=True)
class ExplorationResult:
    """Recorded frames (in recording order) and one summary per replica."""

    frames: tuple[MDFrame, ...]
    replicas: tuple[ReplicaSummary, ...]
    integrator: str
    timestep_fs: float
    n_steps: int
    wall_s: float
    neighbour_rebuilds: int  # per-replica neighbour-list builds (initial ones included)
    exchange_attempts: int = 0  # replica-exchange swaps attempted (MDConfig.exchange_interval_steps)
    exchange_accepted: int = 0

    @property
    def replica_steps(self) -> int:
        """Integration steps summed over replicas (the work done)."""
        return sum(summary.steps_run for summary in self.replicas)

    @property
    def replica_steps_per_s(self) -> float:
        return self.replica_steps / self.wall_s if self.wall_s > 0 else float("inf")

    def frames_with(
        self, status: FrameStatus | str, *, replica: int | None = None
    ) -> list[MDFrame]:
        """Frames with the given status (optionally of one replica), in recording order."""
        status = FrameStatus(status)
        return [
            f for f in self.frames
            if f.status == status and (replica is None or f.replica == replica)
        ]

    def to_atoms(self, status: FrameStatus | str | None = FrameStatus.TRUSTED) -> list[Atoms]:
        """Recorded frames as Atoms (default: the trusted ones; None: all)."""
        frames = self.frames if status is None else self.frames_with(status)
        return [frame.to_atoms() for frame in frames]

    def counts(self) -> dict[str, int]:
        """Recorded frames per status; every FrameStatus is a key."""
        counts = {status.value: 0 for status in FrameStatus}
        for frame in self.frames:
            counts[frame.status.value] += 1
        return counts

    def scores(self, status: FrameStatus | str = FrameStatus.TRUSTED) -> dict[str, np.ndarray]:
        """``max_force_dev`` (eV/Å) and ``energy_dev`` (eV/√atom) of frames with ``status``."""
        frames = self.frames_with(status)
        return {
            "max_force_dev": np.array([f.max_force_dev for f in frames], dtype=np.float64),
            "energy_dev": np.array([f.energy_dev for f in frames], dtype=np.float64),
        }
