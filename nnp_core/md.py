"""Batched molecular dynamics of R replicas driven by a committee of NNPs (exploration).

All replicas are frames of one batch: every step the committee evaluates all active
replicas in one pass. Replicas move on the committee *mean* force; every
``record_interval_steps`` steps all members are evaluated and the committee statistics
(:mod:`nnp_core.uncertainty`) score and record each replica's frame.

Integrators (``MDConfig.integrator``):

- ``"langevin"``: BAOAB splitting (Leimkuhler & Matthews, J. Chem. Phys. 138, 174102
  (2013)) with a per-replica temperature (K) and friction (1/fs). The O step draws its
  noise from the replica's own random stream and removes the replica's centre-of-mass
  momentum, so the 3N-3 internal degrees of freedom are thermostatted.
- ``"nve"``: velocity Verlet, identical step for step to ``ase.md.verlet.VelocityVerlet``.

Units: ``timestep_fs`` in fs, temperatures in K, energies in eV, lengths in Å, masses
in amu (taken from the Atoms); recorded velocities are in Å/fs.

Replicas. Each :class:`Replica` has a seed structure, a temperature, a friction and a
seed. Its initial Maxwell–Boltzmann velocities (COM motion removed), its Langevin
noise and its restart velocities all come from ``numpy.random.default_rng(seed)``, so
a replica's trajectory depends on its seed only, never on which other replicas share
the batch (up to floating-point rounding in the batched evaluation).

Recording, scoring and trust. Replicas move on the committee *mean* force, which
one backward pass gives. Every ``record_interval_steps`` steps (and at step 0 and the
last step) is a scoring step: every member is evaluated, each active replica's frame
gets its ``max_force_dev`` and ``energy_dev`` and is recorded as ``trusted``. Trust is
checked at scoring steps only: when a replica's ``max_force_dev`` reaches
``trust_hi_eV_A`` there, that frame is recorded as ``rejected`` and the replica
restarts at once from its last trusted recorded frame (its seed structure at first)
with fresh Maxwell–Boltzmann velocities; after ``max_restarts`` restarts it stops
instead. A replica whose seed structure is already beyond trust stops at step 0.
With ``MDConfig.beyond_trust = "continue"`` a crossing is recorded as ``rejected``
and the replica carries on (DP-GEN style; no restarts, no trust stop).

Replica exchange (``MDConfig.exchange_interval_steps`` > 0, Langevin only): every that
many steps, neighbouring temperatures of the active replicas (even pairs, then odd
pairs, alternately) try to swap with the Metropolis probability
min(1, exp[(1/k_B T_i − 1/k_B T_j)(U_i − U_j)]), U the committee mean energy plus a
UDD bias (a bias that differs between replicas, like metadynamics hills, is refused).
A swap exchanges the two thermostat temperatures and rescales each replica's velocities
by sqrt(T_new/T_old); frames record the temperature their replica had then. The
acceptance draws come from their own stream, seeded by all the replicas' seeds.
Smaller record intervals find crossings sooner at a higher cost per step. At *every*
step, non-finite positions, mean energy or forces, or a mean potential energy change
beyond ``max_energy_jump_eV_per_atom`` in one step, stop a replica with
a ``failed`` frame and the reason. Checks run in this order: non-finite, trust, jump.

The same dynamics through ASE (one replica at a time, any ASE integrator)::

    from ase import units
    from ase.md.langevin import Langevin
    from nnp_core.calculator import CommitteeCalculator

    atoms.calc = CommitteeCalculator(committee)
    dyn = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300.0,
                   friction=0.01 / units.fs, fixcm=False)  # friction per ASE time unit
    scores = []
    dyn.attach(lambda: scores.append(atoms.calc.results["max_force_dev"]), interval=10)
    dyn.run(1000)

``CommitteeCalculator.results`` hold ``max_force_dev`` and ``energy_dev`` after each
step; there, trust, restarts and records are the caller's. ASE's ``Langevin`` is not
BAOAB, so only ``ase.md.verlet.VelocityVerlet`` reproduces this engine step for step
(its ``"nve"``; see tests/nnp_core/test_md.py). The batched engine is much faster for
many replicas: see the ``md-throughput`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from ase import Atoms, units

from nnp_core.bias import Bias
from nnp_core.committee import Committee
from nnp_core.md_engine import ReplicaEnsemble, Snapshot
from nnp_core.md_results import ExplorationResult, FrameStatus, MDFrame, ReplicaSummary, StopReason

__all__ = [
    "BeyondTrust",
    "ExplorationResult",
    "FrameStatus",
    "Integrator",
    "MDConfig",
    "MDFrame",
    "Replica",
    "ReplicaSummary",
    "StopReason",
    "run_md",
]

log = logging.getLogger(__name__)

#: progress(step, n_steps, n_active_replicas), called every record interval and at the end
ProgressCallback = Callable[[int, int, int], None]


class Integrator(StrEnum):
    LANGEVIN = "langevin"
    NVE = "nve"


class BeyondTrust(StrEnum):
    """What a replica does at a scoring step whose ``max_force_dev`` reaches trust_hi.

    ``restart``: go back to its last trusted frame with fresh velocities (at most
    ``max_restarts`` times, then stop). ``continue``: record the frame as rejected and
    carry on (DP-GEN's exploration): the trajectory can leave the region the committee
    knows and come back, so later trusted frames lie further out. Non-finite values
    and energy jumps stop a replica in both modes.
    """

    RESTART = "restart"
    CONTINUE = "continue"


@dataclass(frozen=True)
class Replica:
    """One replica: seed structure, temperature (K), Langevin friction (1/fs), seed.

    With ``velocities_from_atoms`` the run starts from ``atoms.get_velocities()`` (COM
    motion removed) instead of Maxwell–Boltzmann velocities at ``temperature_K``;
    restarts always draw Maxwell–Boltzmann velocities. For NVE, ``temperature_K`` only
    sets the initial velocities and ``friction_per_fs`` is unused.

    Raises:
        ValueError: empty structure, negative or non-finite temperature or friction.
    """

    atoms: Atoms
    temperature_K: float = 300.0
    friction_per_fs: float = 0.01
    seed: int = 0
    velocities_from_atoms: bool = False

    def __post_init__(self) -> None:
        if len(self.atoms) == 0:
            raise ValueError("a replica needs at least one atom")
        for name in ("temperature_K", "friction_per_fs"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f"Replica.{name} must be finite and >= 0, got {value}")


@dataclass(frozen=True)
class MDConfig:
    """How replicas are propagated, recorded and stopped (units in the names).

    ``record_interval_steps`` is also the scoring interval: every member is evaluated,
    and trust checked, on record steps only. ``trust_hi_eV_A=None`` disables the trust
    check. ``skin_A`` is the neighbour-list skin: a replica's neighbours are rebuilt
    once an atom has moved ``skin_A / 2``.

    Raises:
        ValueError: non-positive timestep, record interval < 1, negative steps,
            restarts or skin, a non-positive trust_hi or energy-jump limit.
    """

    integrator: Integrator = Integrator.LANGEVIN
    timestep_fs: float = 0.5
    n_steps: int = 1000
    record_interval_steps: int = 10
    trust_hi_eV_A: float | None = None
    beyond_trust: BeyondTrust = BeyondTrust.RESTART
    max_restarts: int = 3
    skin_A: float = 0.5
    max_energy_jump_eV_per_atom: float = 1.0
    exchange_interval_steps: int = 0

    def __post_init__(self) -> None:
        if self.integrator not in set(Integrator):
            raise ValueError(
                f"invalid MDConfig integrator {self.integrator!r}; "
                f"choose from {[i.value for i in Integrator]}"
            )
        object.__setattr__(self, "integrator", Integrator(self.integrator))
        if self.beyond_trust not in set(BeyondTrust):
            raise ValueError(f"invalid MDConfig beyond_trust {self.beyond_trust!r}; "
                             f"choose from {[b.value for b in BeyondTrust]}")
        object.__setattr__(self, "beyond_trust", BeyondTrust(self.beyond_trust))
        trust = self.trust_hi_eV_A
        checks = {
            "timestep_fs": math.isfinite(self.timestep_fs) and self.timestep_fs > 0,
            "n_steps": self.n_steps >= 0,
            "record_interval_steps": self.record_interval_steps >= 1,
            "trust_hi_eV_A": trust is None or (math.isfinite(trust) and trust > 0),
            "max_restarts": self.max_restarts >= 0,
            "skin_A": math.isfinite(self.skin_A) and self.skin_A >= 0,
            "max_energy_jump_eV_per_atom": self.max_energy_jump_eV_per_atom > 0,
            "exchange_interval_steps": self.exchange_interval_steps >= 0
            and (self.exchange_interval_steps == 0 or self.integrator == Integrator.LANGEVIN),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid MDConfig field(s): {', '.join(bad)} (got {self})")


def run_md(
    committee: Committee,
    replicas: Sequence[Replica],
    *,
    config: MDConfig | None = None,
    progress: ProgressCallback | None = None,
    bias: Bias | None = None,
) -> ExplorationResult:
    """Propagate ``replicas`` together for ``config.n_steps`` steps; see the module doc.

    ``bias`` (:mod:`nnp_core.bias`: UDD or metadynamics) adds its forces to the
    committee mean's; recorded energies and scores stay unbiased, and each frame carries
    its bias energy and CV values. A metadynamics bias deposits its hills as the run
    goes (they are in ``bias.hills`` afterwards).

    Raises:
        ValueError: no replicas, or a structure with an element the committee lacks;
            replica exchange with fewer than two temperatures or with a bias that
            differs between replicas.
        NotImplementedError: a periodic structure (the models take molecules only).
    """
    config = config or MDConfig()
    if len(replicas) == 0:
        raise ValueError("run_md needs at least one replica")
    start = time.perf_counter()
    run = _Run(committee, list(replicas), config, bias)
    log.info("MD %s: %d replicas x %d members, %d steps of %.3g fs",
             config.integrator.value, len(replicas), committee.n_members,
             config.n_steps, config.timestep_fs)
    run.begin()
    step = 0
    for step in range(1, config.n_steps + 1):
        if not run.ensemble.active.any():
            break
        run.step(step)
        if progress is not None and run.is_record_step(step):
            progress(step, config.n_steps, int(run.ensemble.active.sum()))
    if progress is not None and not run.ensemble.active.any() and step < config.n_steps:
        progress(step, config.n_steps, 0)
    result = run.result(time.perf_counter() - start)
    log.info("MD done: %d replica-steps in %.2f s (%.0f /s), frames %s",
             result.replica_steps, result.wall_s, result.replica_steps_per_s, result.counts())
    return result


class _Run:
    """The control flow around a :class:`ReplicaEnsemble`: records, trust, restarts, stops."""

    def __init__(self, committee: Committee, replicas: list[Replica], config: MDConfig,
                 bias: Bias | None = None) -> None:
        self.replicas, self.config, self.bias = replicas, config, bias
        self.ensemble = ReplicaEnsemble(
            committee, [r.atoms for r in replicas],
            temperatures_K=[r.temperature_K for r in replicas],
            friction_per_fs=[r.friction_per_fs for r in replicas],
            seeds=[r.seed for r in replicas],
            skin_A=config.skin_A, bias=bias,
        )
        n = len(replicas)
        self.frames: list[MDFrame] = []
        self.restarts = np.zeros(n, dtype=np.int64)
        self.steps_run = np.zeros(n, dtype=np.int64)
        self.n_trusted = np.zeros(n, dtype=np.int64)
        self.temperature_sum_K = np.zeros(n)
        self.temperature_count = np.zeros(n, dtype=np.int64)
        self.previous_energy_eV = np.zeros(n)
        self.restart_points: list[Snapshot | None] = [None] * n
        self.restart_steps = np.zeros(n, dtype=np.int64)
        self.stopped: dict[int, tuple[StopReason, str]] = {}
        #: each replica's current thermostat temperature (replica exchange swaps them)
        self.temperatures_K = np.array([r.temperature_K for r in replicas], dtype=np.float64)
        self.exchange_attempts = self.exchange_accepted = 0
        self._exchange_parity = 0
        if config.exchange_interval_steps:
            if len(set(self.temperatures_K)) < 2:
                raise ValueError("replica exchange needs replicas at two or more temperatures")
            if bias is not None and bias.uses_positions:
                raise ValueError(f"replica exchange with a {bias.name} bias is not supported: "
                                 "each replica has its own bias")
            self.exchange_rng = np.random.default_rng([int(r.seed) for r in replicas] + [0x5EED])

    # ------------------------------------------------------------------ steps
    def is_record_step(self, step: int) -> bool:
        return step % self.config.record_interval_steps == 0 or step == self.config.n_steps

    def begin(self) -> None:
        """Initial velocities, one scoring evaluation, and the step-0 checks and records."""
        ens = self.ensemble
        for r, replica in enumerate(self.replicas):
            if replica.velocities_from_atoms:
                ens.set_velocities(r, replica.atoms.get_velocities())
            else:
                ens.draw_velocities(r)
        with np.errstate(invalid="ignore", over="ignore"):
            ens.evaluate(score=True)
            self._check(0, ens.kinetic_temperatures_K(), scored=True)
        self.previous_energy_eV[:] = ens.energy_eV

    def step(self, step: int) -> None:
        """One integration step of every active replica, then the per-replica checks.

        Record steps are the scoring steps: only there is every member evaluated.
        """
        ens, config = self.ensemble, self.config
        dt = config.timestep_fs * units.fs
        scored = self.is_record_step(step)
        self.steps_run[ens.active_ids] += 1
        with np.errstate(invalid="ignore", over="ignore"):
            ens.kick(0.5 * dt)
            if config.integrator == Integrator.LANGEVIN:
                ens.drift(0.5 * dt)
                ens.thermostat(config.timestep_fs)
                ens.drift(0.5 * dt)
            else:
                ens.drift(dt)
            no_temperatures = np.full(ens.n_replicas, np.nan)
            for r in ens.non_finite_positions():
                self._fail(r, step, StopReason.NON_FINITE, "non-finite positions", no_temperatures)
            ens.evaluate(score=scored)
            ens.kick(0.5 * dt)
            temperatures = ens.kinetic_temperatures_K()
            ids = ens.active_ids
            finite = ids[np.isfinite(temperatures[ids])]
            self.temperature_sum_K[finite] += temperatures[finite]
            self.temperature_count[finite] += 1
            self._check(step, temperatures, scored=scored)
        ids = ens.active_ids
        self.previous_energy_eV[ids] = ens.energy_eV[ids]
        if self.bias is not None:
            self.bias.update(step, ens.cvs[ids], ens.bias_energy_eV[ids], ids)
        if config.exchange_interval_steps and step % config.exchange_interval_steps == 0:
            self._exchange()

    def _exchange(self) -> None:
        """One round of replica-exchange attempts between neighbouring temperatures."""
        ens = self.ensemble
        ids = ens.active_ids
        order = ids[np.argsort(self.temperatures_K[ids], kind="stable")]
        first, self._exchange_parity = self._exchange_parity, 1 - self._exchange_parity
        for k in range(first, len(order) - 1, 2):
            i, j = int(order[k]), int(order[k + 1])
            if self.temperatures_K[i] == self.temperatures_K[j]:
                continue
            energy = ens.energy_eV + ens.bias_energy_eV
            log_p = (1.0 / ens.kT_eV[i] - 1.0 / ens.kT_eV[j]) * (energy[i] - energy[j])
            self.exchange_attempts += 1
            if log_p >= 0.0 or self.exchange_rng.random() < math.exp(log_p):
                self.exchange_accepted += 1
                ens.swap_temperatures(i, j)
                self.temperatures_K[[i, j]] = self.temperatures_K[[j, i]]

    def _check(self, step: int, temperatures: np.ndarray, *, scored: bool) -> None:
        """Per active replica, in this order: non-finite -> failed; at a scoring step, a
        trust crossing -> rejected + restart/stop; energy jump -> failed; else, at a
        scoring step, a trusted record (and restart point)."""
        ens, config = self.ensemble, self.config
        ids = ens.active_ids
        finite = ens.finite(scored)[ids]
        jump = np.abs(ens.energy_eV[ids] - self.previous_energy_eV[ids]) / ens.n_atoms[ids]
        jumped = (jump > config.max_energy_jump_eV_per_atom) & (step > 0)
        crossed = np.zeros(len(ids), dtype=bool)
        if scored and config.trust_hi_eV_A is not None:
            crossed = ens.max_force_dev[ids] >= config.trust_hi_eV_A
            if config.beyond_trust == BeyondTrust.CONTINUE:
                crossed &= ~jumped  # a replica that goes on still fails on an energy jump
        for index in np.flatnonzero(~finite | crossed | jumped | scored):
            r = int(ids[index])
            if not finite[index]:
                message = "non-finite committee energy or forces"
                self._fail(r, step, StopReason.NON_FINITE, message, temperatures)
            elif crossed[index]:
                self._reject(r, step, temperatures)
            elif jumped[index]:
                message = (f"potential energy changed by {jump[index]:.3g} eV/atom in one step "
                           f"(limit {config.max_energy_jump_eV_per_atom:.3g})")
                self._fail(r, step, StopReason.ENERGY_JUMP, message, temperatures)
            else:
                self._record(r, step, FrameStatus.TRUSTED, "", temperatures)
                self.n_trusted[r] += 1
                self.restart_points[r] = ens.snapshot(r)
                self.restart_steps[r] = step

    def _reject(self, r: int, step: int, temperatures: np.ndarray) -> None:
        ens, config = self.ensemble, self.config
        reason = (f"max_force_dev {ens.max_force_dev[r]:.3g} eV/Å >= trust_hi "
                  f"{config.trust_hi_eV_A:.3g} eV/Å")
        if config.beyond_trust == BeyondTrust.CONTINUE:
            self._record(r, step, FrameStatus.REJECTED, f"{reason}; continuing", temperatures)
            return
        point = self.restart_points[r]
        if point is None or self.restarts[r] >= config.max_restarts:
            why = "seed structure beyond trust" if point is None else (
                f"restart limit {config.max_restarts} reached")
            message = f"{reason}; {why}, replica stopped"
            self._record(r, step, FrameStatus.REJECTED, message, temperatures)
            self._stop(r, StopReason.TRUST_LIMIT, f"{why} at step {step}: {reason}")
            return
        self.restarts[r] += 1
        note = f"restart {self.restarts[r]}/{config.max_restarts} from step {self.restart_steps[r]}"
        self._record(r, step, FrameStatus.REJECTED, f"{reason}; {note}", temperatures)
        log.debug("replica %d: %s at step %d; %s", r, reason, step, note)
        ens.restore(r, point)
        ens.draw_velocities(r)

    def _fail(
        self, r: int, step: int, reason: StopReason, message: str, temperatures: np.ndarray
    ) -> None:
        self._record(r, step, FrameStatus.FAILED, message, temperatures)
        self._stop(r, reason, f"{message} at step {step}")

    def _stop(self, r: int, reason: StopReason, message: str) -> None:
        self.ensemble.deactivate(r)
        self.stopped[r] = (reason, message)
        level = logging.INFO if reason == StopReason.TRUST_LIMIT else logging.WARNING
        log.log(level, "replica %d stopped (%s): %s", r, reason.value, message)

    def _record(
        self, r: int, step: int, status: FrameStatus, reason: str, temperatures: np.ndarray
    ) -> None:
        ens = self.ensemble
        s = ens.slices[r]
        self.frames.append(MDFrame(
            replica=r, step=step, restarts=int(self.restarts[r]), status=status, reason=reason,
            numbers=ens.numbers[s].copy(), positions_A=ens.positions[s].copy(),
            velocities_A_per_fs=ens.velocities[s] * units.fs,
            temperature_K=float(self.temperatures_K[r]),
            kinetic_temperature_K=float(temperatures[r]),
            potential_energy_eV=float(ens.energy_eV[r]),
            max_force_dev=float(ens.max_force_dev[r]), energy_dev=float(ens.energy_dev[r]),
            bias=self.bias.name if self.bias is not None else "",
            bias_energy_eV=float(ens.bias_energy_eV[r]), cvs=tuple(float(v) for v in ens.cvs[r]),
            dipole_dev=float(ens.dipole_dev[r]),
        ))

    # ------------------------------------------------------------------ result
    def result(self, wall_s: float) -> ExplorationResult:
        summaries = []
        for r, replica in enumerate(self.replicas):
            reason, message = self.stopped.get(r, (StopReason.COMPLETED, "ran all steps"))
            count = self.temperature_count[r]
            mean_temperature = self.temperature_sum_K[r] / count if count else float("nan")
            summaries.append(ReplicaSummary(
                replica=r, temperature_K=float(replica.temperature_K),
                steps_run=int(self.steps_run[r]), restarts=int(self.restarts[r]),
                n_trusted_frames=int(self.n_trusted[r]), stop_reason=reason, message=message,
                mean_kinetic_temperature_K=float(mean_temperature),
            ))
        return ExplorationResult(
            frames=tuple(self.frames), replicas=tuple(summaries),
            integrator=self.config.integrator.value, timestep_fs=self.config.timestep_fs,
            n_steps=self.config.n_steps, wall_s=wall_s,
            neighbour_rebuilds=self.ensemble.neighbour_rebuilds,
            exchange_attempts=self.exchange_attempts, exchange_accepted=self.exchange_accepted,
        )
