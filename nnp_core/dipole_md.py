"""Dipole trajectories for IR spectra: NVT equilibration, then NVE production with every
member's dipole recorded at every step, all replicas batched.

The IR spectrum of a molecule is the Fourier transform of its dipole(-derivative)
autocorrelation along microcanonical dynamics (Gastegger, Behler & Marquetand, Chem.
Sci. 8, 6924 (2017)); :mod:`nnp_core.ir` does the transform. Here R replicas start at
one structure with their own Maxwell–Boltzmann velocities (seed ``seed + r``), are
thermalised by BAOAB Langevin dynamics for ``equilibration_ps`` (the engine of
:mod:`nnp_core.md`), then run velocity Verlet (NVE) for ``production_ps`` on the
committee-mean force. At every production step the forward pass that gives the mean
force gives every member's dipole too (:meth:`Committee.mean_pass`), so the members'
dipoles along the *same* trajectories cost no extra pass: the committee's spread in
the spectrum is the dipole model's uncertainty on these trajectories (not the spread of
trajectories each member would run).

Units: fs, ps, K, eV, Å, e·Å (ASE's internal time unit inside the integrator).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

from nnp_core.committee import Committee
from nnp_core.md import MDConfig
from nnp_core.md_engine import ReplicaEnsemble

#: progress(done_steps, total_steps), called every PROGRESS_EVERY steps and at the end
ProgressCallback = Callable[[int, int], None]
PROGRESS_EVERY = 200


@dataclass(frozen=True)
class DipoleTrajectory:
    """What :func:`dipole_md` recorded.

    ``member_dipoles_eA`` (M, R, T, 3): every member's dipole, e·Å, at every NVE
    production step (step 0, right after equilibration, included), replica by replica.
    """

    member_dipoles_eA: np.ndarray
    timestep_fs: float
    temperature_K: float
    equilibration_ps: float
    production_ps: float
    mean_temperature_K: float  # kinetic temperature averaged over the NVE production
    energy_drift_meV_per_atom_ps: float  # mean |slope| of each replica's total energy
    wall_s: float

    @property
    def n_replicas(self) -> int:
        return int(self.member_dipoles_eA.shape[1])

    @property
    def mean_dipoles_eA(self) -> np.ndarray:
        """The committee-mean dipole (R, T, 3), e·Å."""
        return self.member_dipoles_eA.mean(axis=0)


def check_options(*, temperature_K: float, replicas: int, equilibration_ps: float, production_ps: float,
                  timestep_fs: float, friction_per_fs: float) -> None:
    """Raise ValueError (one line, naming the option) for values that cannot be run."""
    problems = [
        (not (math.isfinite(temperature_K) and temperature_K > 0), f"temperature_K must be > 0, got {temperature_K}"),
        (replicas < 1, f"replicas must be at least 1, got {replicas}"),
        (not (math.isfinite(equilibration_ps) and equilibration_ps >= 0),
         f"equilibration_ps must be 0 or more, got {equilibration_ps}"),
        (not (math.isfinite(production_ps) and production_ps > 0), f"production_ps must be > 0, got {production_ps}"),
        (not (math.isfinite(timestep_fs) and timestep_fs > 0), f"timestep_fs must be > 0, got {timestep_fs}"),
        (not (math.isfinite(friction_per_fs) and friction_per_fs > 0),
         f"friction_per_fs must be > 0 (it thermalises the equilibration), got {friction_per_fs}"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(message)
    if round(production_ps * 1000.0 / timestep_fs) < 4:
        raise ValueError(f"production_ps {production_ps:g} is fewer than 4 steps of {timestep_fs:g} fs")


def dipole_md(
    committee: Committee,
    atoms: Atoms,
    *,
    temperature_K: float = 300.0,
    replicas: int = 8,
    equilibration_ps: float = 2.0,
    production_ps: float = 20.0,
    timestep_fs: float = 0.5,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    production_friction_per_fs: float = 0.0,
) -> DipoleTrajectory:
    """Equilibrate ``replicas`` copies of ``atoms`` at ``temperature_K`` (Langevin,
    BAOAB), then run them in NVE recording every member's dipole at every step.

    ``production_friction_per_fs`` > 0 keeps a weak Langevin thermostat on during the
    production (BAOAB with that friction γ): each mode's energy is redrawn every ~1/γ,
    so one replica samples many mode energies instead of the one it was equilibrated
    with, at the price of a Lorentzian broadening of every line by γ/(2πc) cm⁻¹ (FWHM;
    2.7 cm⁻¹ for 0.0005/fs). The energy drift is then not measured (NaN).

    Raises:
        ValueError: a committee without a dipole head, an option out of range, an
            element the committee lacks.
        RuntimeError: a replica's positions or energy became non-finite (the potential
            is not stable there: no spectrum can come from it).
    """
    if not committee.has_dipole:
        raise ValueError("this committee has no dipole head: train it with dipole_weight > 0")
    check_options(temperature_K=temperature_K, replicas=replicas, equilibration_ps=equilibration_ps,
                  production_ps=production_ps, timestep_fs=timestep_fs, friction_per_fs=friction_per_fs)
    if not (math.isfinite(production_friction_per_fs) and production_friction_per_fs >= 0):
        raise ValueError(f"production_friction_per_fs must be 0 (NVE) or more, got {production_friction_per_fs!r}")
    start = time.perf_counter()
    ens = ReplicaEnsemble(committee, [atoms] * replicas, temperatures_K=[temperature_K] * replicas,
                          friction_per_fs=[friction_per_fs] * replicas,
                          seeds=[seed + r for r in range(replicas)], skin_A=MDConfig().skin_A)
    n_eq = round(equilibration_ps * 1000.0 / timestep_fs)
    n_prod = round(production_ps * 1000.0 / timestep_fs)
    total, dt = n_eq + n_prod, timestep_fs * units.fs
    for r in range(replicas):
        ens.draw_velocities(r)
    ens.evaluate(score=False)
    for step in range(1, n_eq + 1):
        ens.kick(0.5 * dt)
        ens.drift(0.5 * dt)
        ens.thermostat(timestep_fs)
        ens.drift(0.5 * dt)
        _evaluate(ens, step, dipoles=False)
        ens.kick(0.5 * dt)
        if progress is not None and step % PROGRESS_EVERY == 0:
            progress(step, total)
    dipoles = np.empty((committee.n_members, replicas, n_prod + 1, 3))
    total_energy = np.empty((replicas, n_prod + 1))
    temperatures = np.empty((replicas, n_prod + 1))
    _evaluate(ens, n_eq, dipoles=True)
    _record(ens, dipoles, total_energy, temperatures, 0)
    thermostatted = production_friction_per_fs > 0
    ens.friction_per_fs = np.full(replicas, float(production_friction_per_fs))
    for step in range(1, n_prod + 1):
        ens.kick(0.5 * dt)
        if thermostatted:
            ens.drift(0.5 * dt)
            ens.thermostat(timestep_fs)
            ens.drift(0.5 * dt)
        else:
            ens.drift(dt)
        _evaluate(ens, n_eq + step, dipoles=True)
        ens.kick(0.5 * dt)
        _record(ens, dipoles, total_energy, temperatures, step)
        if progress is not None and (n_eq + step) % PROGRESS_EVERY == 0:
            progress(n_eq + step, total)
    if progress is not None:
        progress(total, total)
    time_ps = np.arange(n_prod + 1) * timestep_fs / 1000.0
    per_atom = total_energy / ens.n_atoms[:, None]
    slopes = np.polyfit(time_ps, per_atom.T, 1)[0] if n_prod >= 1 else np.zeros(replicas)
    return DipoleTrajectory(
        member_dipoles_eA=dipoles, timestep_fs=float(timestep_fs), temperature_K=float(temperature_K),
        equilibration_ps=float(equilibration_ps), production_ps=float(production_ps),
        mean_temperature_K=float(temperatures.mean()),
        energy_drift_meV_per_atom_ps=math.nan if thermostatted else float(1000.0 * np.abs(slopes).mean()),
        wall_s=time.perf_counter() - start,
    )


def _evaluate(ens: ReplicaEnsemble, step: int, *, dipoles: bool) -> None:
    bad = ens.non_finite_positions()
    if not bad:
        ens.evaluate(score=False, dipoles=dipoles)
        bad = [int(r) for r in np.flatnonzero(~ens.finite(scored=False))]
    if bad:
        raise RuntimeError(f"replica {bad[0]} became non-finite at step {step}: the committee is not "
                           "stable there (train it on more labels or lower the temperature)")


def _record(ens: ReplicaEnsemble, dipoles: np.ndarray, total_energy: np.ndarray, temperatures: np.ndarray,
            step: int) -> None:
    dipoles[:, :, step] = ens.member_dipoles
    kinetic = 0.5 * np.add.reduceat(np.sum(ens.masses * ens.velocities**2, axis=1), ens.starts)
    total_energy[:, step] = ens.energy_eV + kinetic
    temperatures[:, step] = ens.kinetic_temperatures_K()
