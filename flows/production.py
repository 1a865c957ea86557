"""Production MD with a campaign's latest committee (``alflow md CONFIG``), and the way
back into the loop (``--feed-back``).

The dynamics are the exploration's: ``nnp_core.md.run_md`` with the campaign's
``CampaignConfig.md_config()`` (integrator, timestep, record interval changed as asked),
all replicas in one batched run, but with ``beyond_trust = "continue"``: a production
run never stops or restarts at ``[select] trust_hi_eV_A``, it runs its full length (only
non-finite values or an energy jump stop a replica, as in exploration). Replica ``r``
starts at the campaign's reference geometry (or ``--start``) with Maxwell–Boltzmann
velocities from seed ``seed + r``.

Every recorded frame (every ``interval_steps`` steps, the first and the last) is written
to one extended XYZ file, replica after replica, each in time order, with what
``nnp_core.CommitteeCalculator`` gives for that frame: energy (committee mean, eV),
forces (eV/Å) and in ``atoms.info`` ``max_force_dev``, ``calibrated_max_force_dev``
(eV/Å), ``energy_dev``, ``calibrated_energy_dev`` (eV/√atom), plus ``time_fs``,
``md_step``, ``replica``, ``temperature_K`` (the thermostat's; the initial one for NVE)
and ``kinetic_temperature_K``; velocities are the frame's. The frames are evaluated once
more after the run (``Committee.predict``, batched): the engine moves on the mean force
but keeps no forces, and one evaluation per recorded frame is what the engine's scoring
steps cost anyway.

``--feed-back`` stores the frames with ``max_force_dev >= trust_lo`` (in the trust window
or beyond it) that the campaign does not hold yet as MD frames (sampler
``storage.PRODUCTION_SAMPLER``, no replica: they are never an exploration replica's
restart point) of the next generation to select, each with its score by the committee
that ran them, undecided. That generation's select step judges them with its own
explored frames, ``trust_hi`` lifted for them (``flows.steps.selection``), so the next
``alflow run`` labels the diverse ones. It holds the campaign's runner row while it
writes: a running campaign is never written to.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.data import chemical_symbols

from flows import storage
from flows.campaign import CampaignContext, open_campaign
from flows.config import CampaignConfig
from flows.runner import CampaignBusy, busy, campaign_runner
from flows.steps.decide import stop_holds
from flows.steps.training import load_latest
from nnp_core.committee import Committee
from nnp_core.md import (
    BeyondTrust,
    ExplorationResult,
    FrameStatus,
    Integrator,
    MDConfig,
    Replica,
    StopReason,
    run_md,
)
from nnp_core.structures import frame_hash

#: frames per ``Committee.predict`` call when the trajectory is evaluated for writing
PREDICT_CHUNK = 256
#: what the uncertainty in the file means, said once at the end of ``alflow md``
UNCERTAINTY_MEANING = (
    "max_force_dev is how much the committee's members disagree on the force of the most uncertain atom "
    "(eV/Å); calibrated_max_force_dev rescales it, from the campaign's labelled frames, to an estimate of "
    "that atom's true force error: where it is large the potential is extrapolating and its energies and "
    "forces should not be trusted.")


class MDArgumentError(ValueError):
    """An ``alflow md`` option that cannot be used (nothing was run or written)."""


@dataclass(frozen=True)
class ProductionSettings:
    """What ``alflow md`` runs; ``None`` takes the campaign's ``[explore]`` setting
    (temperature: the first of ``temperatures_K``)."""

    ps: float = 1.0
    temperature_K: float | None = None
    timestep_fs: float | None = None
    replicas: int = 1
    thermostat: str = "langevin"
    friction_per_fs: float | None = None
    seed: int = 0
    interval_steps: int | None = None
    start: Path | None = None

    def check(self) -> None:
        """Raise :class:`MDArgumentError` (one line) for a value that cannot be run."""
        problems = [
            (not math.isfinite(self.ps) or self.ps <= 0, f"--ps must be a positive length in ps, got {self.ps:g}"),
            (self.temperature_K is not None and not (math.isfinite(self.temperature_K) and self.temperature_K >= 0),
             f"--temperature must be 0 K or more, got {self.temperature_K}"),
            (self.timestep_fs is not None and not (math.isfinite(self.timestep_fs) and self.timestep_fs > 0),
             f"--timestep must be a positive number of fs, got {self.timestep_fs}"),
            (self.replicas < 1, f"--replicas must be at least 1, got {self.replicas}"),
            (self.thermostat not in {i.value for i in Integrator},
             f"--thermostat must be one of {', '.join(i.value for i in Integrator)}, got {self.thermostat!r}"),
            (self.friction_per_fs is not None and not (math.isfinite(self.friction_per_fs)
                                                       and self.friction_per_fs >= 0),
             f"--friction must be 0 or more (1/fs), got {self.friction_per_fs}"),
            (self.friction_per_fs is not None and self.thermostat == Integrator.NVE,
             "--friction applies to --thermostat langevin only (NVE has no friction)"),
            (self.interval_steps is not None and self.interval_steps < 1,
             f"--interval must be at least 1 step, got {self.interval_steps}"),
            (self.seed < 0, f"--seed must be 0 or more, got {self.seed}"),
        ]
        for bad, message in problems:
            if bad:
                raise MDArgumentError(message)


def md_config(config: CampaignConfig, settings: ProductionSettings) -> MDConfig:
    """The campaign's ``md_config()`` as production runs it: the asked integrator,
    timestep, length and record interval, and ``beyond_trust = "continue"``."""
    settings.check()
    timestep = settings.timestep_fs if settings.timestep_fs is not None else config.explore.timestep_fs
    n_steps = round(settings.ps * 1000.0 / timestep)
    if n_steps < 1:
        raise MDArgumentError(f"--ps {settings.ps:g} is shorter than one timestep of {timestep:g} fs")
    interval = settings.interval_steps or config.explore.record_interval_steps
    return dataclasses.replace(config.md_config(), integrator=Integrator(settings.thermostat), timestep_fs=timestep,
                               n_steps=n_steps, record_interval_steps=interval, beyond_trust=BeyondTrust.CONTINUE)


def replicas(config: CampaignConfig, settings: ProductionSettings, start: Atoms) -> list[Replica]:
    """One :class:`Replica` per ``settings.replicas``, all at ``start``; replica r has
    seed ``settings.seed + r``; NVE has friction 0."""
    settings.check()
    temperature = settings.temperature_K if settings.temperature_K is not None else config.explore.temperatures_K[0]
    friction = 0.0 if settings.thermostat == Integrator.NVE else (
        settings.friction_per_fs if settings.friction_per_fs is not None else config.explore.friction_per_fs)
    return [Replica(atoms=start, temperature_K=float(temperature), friction_per_fs=float(friction),
                    seed=settings.seed + r) for r in range(settings.replicas)]


def read_start(path: Path, committee: Committee) -> Atoms:
    """The last structure of ``path`` (any format ASE reads), positions and elements only.

    Raises ``FileNotFoundError``, or :class:`MDArgumentError` for a file ASE cannot
    read, a periodic structure, or an element the committee was not trained on."""
    import ase.io

    if not path.is_file():
        raise FileNotFoundError(f"--start {path}: no such file")
    try:
        read = ase.io.read(path)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for a file it cannot parse
        raise MDArgumentError(f"--start {path}: cannot read a structure ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    atoms = read[-1] if isinstance(read, list) else read  # a trajectory: its last frame
    if len(atoms) == 0:
        raise MDArgumentError(f"--start {path}: the structure has no atoms")
    if atoms.pbc.any():
        raise MDArgumentError(f"--start {path}: a periodic structure; the committee takes molecules only")
    unknown = sorted(set(atoms.numbers.tolist()) - set(committee.elements))
    if unknown:
        raise MDArgumentError(f"--start {path}: element(s) {', '.join(chemical_symbols[z] for z in unknown)} "
                              f"unknown to the committee (trained on "
                              f"{', '.join(chemical_symbols[z] for z in committee.elements)})")
    return Atoms(numbers=atoms.numbers, positions=atoms.positions)


def trajectory(committee: Committee, result: ExplorationResult) -> list[Atoms]:
    """The recorded frames (failed ones left out), replica by replica in time order, each
    with the committee's energy and forces (a ``SinglePointCalculator``) and its
    uncertainty and time in ``info`` (see the module doc)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    records = sorted((f for f in result.frames if f.status != FrameStatus.FAILED), key=lambda f: (f.replica, f.step))
    frames = []
    for first in range(0, len(records), PREDICT_CHUNK):
        chunk = records[first:first + PREDICT_CHUNK]
        atoms_list = [Atoms(numbers=f.numbers, positions=f.positions_A) for f in chunk]
        prediction = committee.predict(atoms_list)
        for i, (record, atoms, where) in enumerate(zip(chunk, atoms_list, prediction.frame_slices())):
            atoms.set_velocities(record.velocities_A_per_fs / units.fs)
            atoms.calc = SinglePointCalculator(atoms, energy=float(prediction.energy_mean[i]),
                                               forces=prediction.forces_mean[where].copy())
            atoms.info.update(
                time_fs=record.step * result.timestep_fs, md_step=record.step, replica=record.replica,
                temperature_K=record.temperature_K, kinetic_temperature_K=record.kinetic_temperature_K,
                max_force_dev=float(prediction.max_force_dev[i]),
                calibrated_max_force_dev=float(prediction.calibrated_max_force_dev[i]),
                energy_dev=float(prediction.energy_dev[i]),
                calibrated_energy_dev=float(prediction.calibrated_energy_dev[i]))
            frames.append(atoms)
    return frames


@dataclass
class ProductionRun:
    """What ``alflow md`` did, for its closing lines."""

    output: Path
    frames: list[Atoms]
    config: MDConfig
    temperature_K: float
    n_replicas: int
    trust_lo_eV_A: float
    trust_hi_eV_A: float
    stopped: list[str]
    #: --feed-back: new frames stored, the generation they joined, and how to run it
    stored: int | None = None
    generation: int | None = None
    run_hint: str = ""

    def beyond_trust(self) -> list[Atoms]:
        return [a for a in self.frames if not a.info["max_force_dev"] < self.trust_hi_eV_A]

    def summary(self) -> str:
        deviations = np.array([a.info["max_force_dev"] for a in self.frames])
        config = self.config
        spread = (f"max_force_dev median {np.median(deviations):.3g}, max {deviations.max():.3g} eV/Å"
                  if len(deviations) else "no frame")
        return (f"wrote {len(self.frames)} frames of {self.n_replicas} replica(s) x {config.n_steps} steps of "
                f"{config.timestep_fs:g} fs ({config.n_steps * config.timestep_fs / 1000:g} ps, "
                f"{config.integrator.value}, {self.temperature_K:g} K) to {self.output}; {spread} (trust_hi "
                f"{self.trust_hi_eV_A:g} eV/Å)")

    def warnings(self) -> list[str]:
        lines = list(self.stopped)
        beyond = self.beyond_trust()
        if beyond:
            first = min(beyond, key=lambda a: (a.info["time_fs"], a.info["replica"]))
            lines.append(
                f"{len(beyond)} of {len(self.frames)} frames left the trusted region (max_force_dev >= trust_hi "
                f"{self.trust_hi_eV_A:g} eV/Å), first at {first.info['time_fs']:g} fs (replica "
                f"{first.info['replica']}); their energies and forces may be wrong"
                + ("" if self.stored is not None else ": --feed-back queues them for labelling"))
        return lines

    def feed_back_line(self) -> str | None:
        if self.stored is None:
            return None
        if self.stored == 0:
            return (f"--feed-back: no new frame with max_force_dev >= trust_lo {self.trust_lo_eV_A:g} eV/Å; "
                    f"nothing stored")
        return (f"--feed-back: stored {self.stored} frame(s) with max_force_dev >= trust_lo "
                f"{self.trust_lo_eV_A:g} eV/Å as candidates of generation {self.generation}; {self.run_hint}")


def run_production(config_path: str | Path, settings: ProductionSettings, *, output: Path | None = None,
                   force: bool = False, feed_back: bool = False) -> ProductionRun:
    """Run production MD with the campaign's latest committee and write ``output``
    (default ``<work_dir>/<campaign>-md.extxyz``); with ``feed_back``, store the
    uncertain frames as candidates of the next generation.

    Everything that can be refused is refused before the MD runs, with nothing written:
    ``MDArgumentError`` (an option), ``LookupError`` (no campaign, no committee yet),
    ``FileNotFoundError`` (``--start``), ``OutputError`` (an existing output without
    ``force``, the campaign's own files), ``CampaignBusy`` (``feed_back`` while a runner
    holds the campaign). Without ``feed_back`` the database is only read."""
    from flows.storage.backup import check_output, replacing

    settings.check()
    ctx = open_campaign(config_path, create=False)
    writer = None
    try:
        config = ctx.config
        mdc = md_config(config, settings)
        latest = load_latest(ctx)
        if latest is None:
            raise LookupError(f"campaign {ctx.name!r} has no committee yet: `alflow run {config_path}` trains "
                              f"the first (generation 0)")
        committee_id, committee = latest
        if settings.start is not None:
            start = read_start(Path(settings.start), committee)
        else:
            with storage.reading(ctx.engine) as session:
                start = storage.reference_structure(session, ctx.campaign_id)
            start = Atoms(numbers=start.numbers, positions=start.positions)
        output = Path(output) if output is not None else ctx.work_dir / f"{ctx.name}-md.extxyz"
        protected = campaign_files(ctx)
        check_output(output, overwrite=force, protected=protected)
        if feed_back:
            if reason := busy(ctx):
                raise CampaignBusy(f"--feed-back: {reason}")
            writer = open_campaign(config_path)
        starts = replicas(config, settings, start)
        result = run_md(committee.to(config.explore_device()), starts, config=mdc)
        frames = trajectory(committee, result)
        with replacing(output, overwrite=force, protected=protected, suffix=".extxyz") as temporary:
            import ase.io

            ase.io.write(temporary, frames, format="extxyz")
        run = ProductionRun(
            output=output, frames=frames, config=mdc, temperature_K=starts[0].temperature_K,
            n_replicas=len(starts), trust_lo_eV_A=config.select.trust_lo_eV_A,
            trust_hi_eV_A=config.select.trust_hi_eV_A,
            stopped=[f"replica {s.replica} stopped after {s.steps_run * mdc.timestep_fs:g} fs ({s.stop_reason.value}):"
                     f" {s.message}" for s in result.replicas if s.stop_reason != StopReason.COMPLETED])
        if writer is not None:
            try:
                run.stored, run.generation = store_candidates(writer, committee_id, frames,
                                                              config.select.trust_lo_eV_A)
            except CampaignBusy as exc:
                raise CampaignBusy(f"wrote {output}, but stored no frame: {exc}") from None
            run.run_hint = run_hint(writer, run.generation, config_path)
        return run
    finally:
        ctx.engine.dispose()
        if writer is not None:
            writer.engine.dispose()


def campaign_files(ctx: CampaignContext) -> list[Path]:
    """The files no output may be written onto: the config and a SQLite database with its companions."""
    from flows.storage.backup import sidecar_files, sqlite_file

    database = sqlite_file(ctx.config.campaign.database_url)
    return [ctx.config_path, *([database, *sidecar_files(database)] if database is not None else [])]


def store_candidates(ctx: CampaignContext, committee_id: int, frames: list[Atoms],
                     trust_lo_eV_A: float) -> tuple[int, int]:
    """Store the frames with ``max_force_dev >= trust_lo_eV_A`` that the campaign does not
    hold yet as candidates of the next generation to select (:func:`feedback_generation`),
    with their scores by ``committee_id``; returns (frames stored, generation index).
    Holds the campaign's runner row while writing (``CampaignBusy`` if a run holds it)."""
    chosen = [a for a in frames if math.isfinite(a.info["max_force_dev"]) and a.info["max_force_dev"] >= trust_lo_eV_A]
    with campaign_runner(ctx, tag="md-feed-back"), storage.transaction(ctx.engine) as session:
        index = feedback_generation(session, ctx.campaign_id)
        hashes = [frame_hash(a) for a in chosen]
        known = storage.stored_hashes(session, ctx.campaign_id, hashes)
        new: dict[str, Atoms] = {}
        for digest, atoms in zip(hashes, chosen):
            if digest not in known:
                new.setdefault(digest, atoms)
        if not new:
            return 0, index
        fresh = list(new.values())
        generation = storage.generation(session, ctx.campaign_id, index)
        ids = storage.add_structures(
            session, ctx.campaign_id, [Atoms(numbers=a.numbers, positions=a.positions) for a in fresh],
            source=storage.StructureSource.MD, generation_id=generation.id, sampler=storage.PRODUCTION_SAMPLER,
            temperature_K=[a.info["temperature_K"] for a in fresh], md_step=[a.info["md_step"] for a in fresh])
        for structure_id, atoms in zip(ids, fresh):
            storage.add_score(session, structure_id, committee_id, energy_mean_eV=atoms.get_potential_energy(),
                              energy_dev=atoms.info["energy_dev"], max_force_dev=atoms.info["max_force_dev"],
                              decision=None)
    return len(fresh), index


def feedback_generation(session, campaign_id: int) -> int:
    """The generation whose select step will see frames stored now: the first not decided
    (as ``alflow run`` goes on), or the one after it when it has selected already."""
    rows = storage.generations(session, campaign_id, first=1)
    index = max((g.index for g in rows if g.status == storage.GenerationStatus.DONE), default=0) + 1
    current = next((g for g in rows if g.index == index), None)
    if current is not None and "select" in storage.done_steps(session, current.id):
        index += 1
    return index


def run_hint(ctx: CampaignContext, index: int, config_path: str | Path) -> str:
    """How the generation holding the fed-back frames gets run."""
    with storage.reading(ctx.engine) as session:
        decided = [g for g in storage.generations(session, ctx.campaign_id)
                   if g.status == storage.GenerationStatus.DONE]
        asked = storage.count_labels(session, ctx.campaign_id)
    last = decided[-1] if decided else None
    stopped = last is not None and bool(last.stop_reason) and stop_holds(
        last.stop_reason, last.index, ctx.config.loop, asked)
    budget = ctx.config.loop.max_labels
    if budget is not None and asked >= budget:
        return (f"the campaign has spent its label budget ({asked} of [loop] max_labels = {budget}): raise "
                f"max_labels, then `alflow run {config_path}` labels them in generation {index}")
    if stopped:
        return (f"the campaign had stopped ({last.stop_reason}): `alflow run {config_path} --generations 1` "
                f"runs generation {index} and labels them")
    return f"`alflow run {config_path}` labels them in generation {index}"
