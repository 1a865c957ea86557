"""Explore with the latest committee, then select which explored frames to label."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
from ase import Atoms
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.campaign import CampaignContext, get_or_create_generation, mark_step_done
from flows.steps.training import load_latest
from flows.storage import (
    Decision,
    Label,
    Score,
    Structure,
    StructureSource,
    add_structures,
    atoms_from_structure,
    enqueue_labels,
)
from nnp_core.md import MDConfig, Replica, run_md
from nnp_core.md_results import FrameStatus, MDFrame
from nnp_core.selection import classify_trust, select_frames
from nnp_core.structures import frame_hash

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int, int], None]


def reference_structure(session: Session, campaign_id: int) -> Atoms:
    row = session.scalars(select(Structure).where(
        Structure.campaign_id == campaign_id, Structure.sampler == "reference-geometry")).first()
    if row is None:
        raise LookupError("campaign has no reference geometry: generation 0 was not sampled")
    return atoms_from_structure(row)


def _restart_points(session: Session, ctx: CampaignContext, n_replicas: int) -> list[Atoms | None]:
    """Each replica's last trusted frame of earlier generations (None: start from the reference)."""
    points: list[Atoms | None] = [None] * n_replicas
    rows = session.scalars(select(Structure).where(
        Structure.campaign_id == ctx.campaign_id, Structure.source == StructureSource.MD,
    ).order_by(Structure.id)).all()
    for row in rows:
        if row.replica is not None and row.replica < n_replicas:
            points[row.replica] = atoms_from_structure(row)
    return points


def explore(ctx: CampaignContext, generation_index: int, *, progress: ProgressCallback | None = None) -> dict:
    """Run the replicas with the latest committee and store every recorded frame + score."""
    start = time.perf_counter()
    cfg, sel = ctx.config.explore, ctx.config.select
    committee_id, committee = load_latest(ctx)
    with Session(ctx.engine) as session:
        reference = reference_structure(session, ctx.campaign_id)
        points = _restart_points(session, ctx, cfg.replicas)
    replicas = [
        Replica(atoms=point if point is not None else reference, temperature_K=temperature,
                friction_per_fs=cfg.friction_per_fs, seed=1000 * generation_index + r,
                velocities_from_atoms=point is not None and point.get_momenta().any())
        for r, (point, temperature) in enumerate(zip(points, cfg.temperatures_K))
    ]
    md_config = MDConfig(timestep_fs=cfg.timestep_fs, n_steps=cfg.steps,
                         record_interval_steps=cfg.record_interval_steps, trust_hi_eV_A=sel.trust_hi_eV_A,
                         beyond_trust=cfg.beyond_trust, max_restarts=cfg.max_restarts)
    result = run_md(committee, replicas, config=md_config, progress=progress)
    frames = [f for f in result.frames if f.step > 0 or f.restarts > 0]  # step 0 is the known seed
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, generation_index)
        _store_frames(session, ctx, generation.id, committee_id, frames)
        summary = {"md_frames": result.counts(), "replica_steps": result.replica_steps,
                   "replica_steps_per_s": result.replica_steps_per_s,
                   "replicas": [{"replica": s.replica, "steps": s.steps_run, "restarts": s.restarts,
                                 "stop": s.stop_reason.value} for s in result.replicas]}
        mark_step_done(session, generation, "explore", time.perf_counter() - start, explore=summary)
    return summary


def _store_frames(session: Session, ctx: CampaignContext, generation_id: int, committee_id: int,
                  frames: list[MDFrame]) -> None:
    sel = ctx.config.select
    for frame in frames:
        trusted = frame.status == FrameStatus.TRUSTED
        atoms = frame.to_atoms()
        (structure_id,) = add_structures(
            session, ctx.campaign_id, [atoms], source=StructureSource.MD if trusted else StructureSource.REJECTED,
            generation_id=generation_id, sampler="md", replica=frame.replica,
            temperature_K=frame.temperature_K, md_step=frame.step)
        decision = Decision.REJECTED
        if trusted:
            decision = classify_trust([frame.max_force_dev], trust_lo_eV_A=sel.trust_lo_eV_A,
                                      trust_hi_eV_A=sel.trust_hi_eV_A)[0].decision
        session.add(Score(structure_id=structure_id, committee_id=committee_id,
                          energy_mean_eV=_storable(frame.potential_energy_eV),
                          energy_dev=_storable(frame.energy_dev), max_force_dev=_storable(frame.max_force_dev),
                          decision=Decision(decision),
                          reason=None if trusted else f"{frame.status.value}: {frame.reason}"))


def _storable(value: float) -> float:
    """A score of a failed frame may be NaN, which SQLite stores as NULL (refused: the
    columns are NOT NULL); it is stored as +inf instead, beyond any trust threshold."""
    return value if not math.isnan(value) else math.inf


def select_candidates(ctx: CampaignContext, generation_index: int) -> dict[str, int]:
    """Diversity selection among this generation's MD frames; queue the selected ones."""
    start = time.perf_counter()
    sel = ctx.config.select
    committee_id, committee = load_latest(ctx)
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, generation_index)
        rows = session.execute(select(Structure, Score).join(Score, Score.structure_id == Structure.id).where(
            Structure.generation_id == generation.id, Structure.source == StructureSource.MD,
            Score.committee_id == committee_id).order_by(Structure.id)).all()
        labelled = session.scalars(select(Structure).join(Label, Label.structure_id == Structure.id).where(
            Structure.campaign_id == ctx.campaign_id)).all()
        counts = {d.value: 0 for d in Decision}
        if rows:
            frames = [atoms_from_structure(s) for s, _ in rows]
            labelled_atoms = [atoms_from_structure(s) for s in labelled]
            result = select_frames(
                frames, np.array([sc.max_force_dev for _, sc in rows]),
                trust_lo_eV_A=sel.trust_lo_eV_A, trust_hi_eV_A=sel.trust_hi_eV_A,
                fingerprints=committee.fingerprints(frames),
                reference_structures=reference_structure(session, ctx.campaign_id),
                labelled_fingerprints=committee.fingerprints(labelled_atoms) if labelled_atoms else None,
                labelled_hashes=[frame_hash(a) for a in labelled_atoms],
                max_selected=sel.max_selected_per_generation, min_distance_A=sel.min_distance_A,
                allow_bond_changes=sel.allow_bond_changes, adaptive_trust_lo=sel.adaptive_trust_lo,
                energies_eV=np.array([sc.energy_mean_eV for _, sc in rows]))
            for (structure, score), item in zip(rows, result.decisions):
                score.decision, score.reason = Decision(item.decision), item.reason
            enqueue_labels(session, [rows[i][0].id for i in result.selected_indices])
            counts.update(result.counts())
        counts[Decision.REJECTED.value] += len(session.scalars(select(Structure.id).where(
            Structure.generation_id == generation.id, Structure.source == StructureSource.REJECTED)).all())
        mark_step_done(session, generation, "select", time.perf_counter() - start, selection=counts)
    log.info("generation %d selection: %s", generation_index, counts)
    return counts
