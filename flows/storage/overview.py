"""Read queries behind what people see of a campaign: ``alflow status`` and ``report``,
the dashboard's tables and figures, the Ctrl-C summary, the retrain decision and the
benchmarks (``flows.status``, ``flows.report``, ``flows.dashboard``, ``flows.interrupt``,
``flows.retraining``, ``bench``).

Every function reads in the caller's session (``flows.storage.records.reading``) and
writes nothing; rows come back as the typed models or small frozen records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.storage.models import (
    CommitteeRow,
    Evaluation,
    Generation,
    GenerationStatus,
    LabelRow,
    LabelStatus,
    Retrain,
    Score,
    StepMark,
    Structure,
    StructureSource,
)


# ---------------------------------------------------------------------- generations
@dataclass(frozen=True)
class GenerationOverview:
    """One generation as the status table shows it."""

    generation: Generation
    #: finished steps and their seconds (``StepMark``)
    steps: dict[str, float]
    #: the labels of this generation's frames by status value (every status, 0 if none)
    labels: dict[str, int]
    #: the exploring committee's error on this generation's new labels
    fresh: Evaluation | None
    #: the validation error of the committee this generation's own train step made
    validation: Evaluation | None


def generation_overviews(session: Session, campaign_id: int) -> list[GenerationOverview]:
    """Every generation of the campaign, by index, with its steps, labels and errors
    (five queries, whatever the number of generations)."""
    generations = list(session.scalars(select(Generation).where(Generation.campaign_id == campaign_id)
                                       .order_by(Generation.index)))
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for generation_id, step, seconds in session.execute(
            select(StepMark.generation_id, StepMark.step, StepMark.seconds)
            .join(Generation, Generation.id == StepMark.generation_id)
            .where(Generation.campaign_id == campaign_id)):
        steps[generation_id][step] = seconds
    labels: dict[int | None, dict[str, int]] = defaultdict(lambda: {status.value: 0 for status in LabelStatus})
    for generation_id, status, n in session.execute(
            select(Structure.generation_id, LabelRow.status, func.count())
            .join(LabelRow, LabelRow.structure_id == Structure.id)
            .where(Structure.campaign_id == campaign_id)
            .group_by(Structure.generation_id, LabelRow.status)):
        labels[generation_id][LabelStatus(status).value] = n
    fresh = {generation_id: evaluation for generation_id, evaluation in session.execute(
        select(Evaluation.generation_id, Evaluation)
        .join(Generation, Generation.id == Evaluation.generation_id)
        .where(Generation.campaign_id == campaign_id, Evaluation.label_set == "fresh")
        .order_by(Evaluation.id))}  # the latest per generation
    validation: dict[int, Evaluation] = {}
    for generation_id, evaluation in session.execute(
            select(CommitteeRow.generation_id, Evaluation)
            .join(Evaluation, Evaluation.committee_id == CommitteeRow.id)
            .outerjoin(Retrain, Retrain.committee_id == CommitteeRow.id)
            .where(CommitteeRow.campaign_id == campaign_id, Evaluation.label_set == "validation",
                   Retrain.committee_id.is_(None))
            .order_by(CommitteeRow.id)):
        validation.setdefault(generation_id, evaluation)  # the generation's first own committee
    return [GenerationOverview(g, dict(steps.get(g.id, {})), dict(labels[g.id]), fresh.get(g.id),
                               validation.get(g.id)) for g in generations]


def last_decided_index(session: Session, campaign_id: int) -> int | None:
    """The highest index of a decided (done) generation; None before any."""
    return session.scalar(select(func.max(Generation.index)).where(
        Generation.campaign_id == campaign_id, Generation.status == GenerationStatus.DONE))


def backlog_generation_index(session: Session, campaign_id: int) -> int | None:
    """The latest generation owning a pending label, else the latest generation; None
    before the campaign has one."""
    owner = session.scalar(
        select(func.max(Generation.index)).select_from(LabelRow)
        .join(Structure, Structure.id == LabelRow.structure_id)
        .join(Generation, Structure.generation_id == Generation.id)
        .where(Structure.campaign_id == campaign_id, LabelRow.status == LabelStatus.PENDING))
    if owner is not None:
        return owner
    return session.scalar(select(func.max(Generation.index)).where(Generation.campaign_id == campaign_id))


def structure_hashes(session: Session, generation_id: int) -> list[str]:
    """The content hashes of the frames a generation recorded, sorted."""
    return sorted(session.scalars(select(Structure.content_hash).where(Structure.generation_id == generation_id)))


# ---------------------------------------------------------------------- committees
def own_committee_checkpoints(session: Session, campaign_id: int) -> dict[int, str]:
    """Per generation index: the checkpoint path (as stored) of the committee that
    generation's own train step made (retrains into it left out)."""
    out: dict[int, str] = {}
    for index, path in session.execute(
            select(Generation.index, CommitteeRow.checkpoint_path)
            .join(Generation, CommitteeRow.generation_id == Generation.id)
            .outerjoin(Retrain, Retrain.committee_id == CommitteeRow.id)
            .where(CommitteeRow.campaign_id == campaign_id, Retrain.committee_id.is_(None))
            .order_by(CommitteeRow.id)):
        out.setdefault(index, path)
    return out


def committee_evaluations(session: Session, campaign_id: int) -> list[tuple[CommitteeRow, Evaluation]]:
    """Every evaluation of every committee of the campaign, by committee id."""
    return [(committee, evaluation) for committee, evaluation in session.execute(
        select(CommitteeRow, Evaluation).join(Evaluation, Evaluation.committee_id == CommitteeRow.id)
        .where(CommitteeRow.campaign_id == campaign_id).order_by(CommitteeRow.id, Evaluation.id))]


@dataclass(frozen=True)
class RetrainRecord:
    """A retrain outside the loop: its committee, the generation it trained into, and
    that committee's validation force MAE (None before it was evaluated)."""

    retrain: Retrain
    committee: CommitteeRow
    generation_index: int | None
    validation_force_mae_eV_A: float | None


def retrain_records(session: Session, campaign_id: int) -> list[RetrainRecord]:
    """Every retrain of the campaign, by committee id."""
    validation = dict(session.execute(
        select(Evaluation.committee_id, Evaluation.force_mae_eV_A)
        .join(CommitteeRow, CommitteeRow.id == Evaluation.committee_id)
        .where(CommitteeRow.campaign_id == campaign_id, Evaluation.label_set == "validation")
        .order_by(Evaluation.id)).tuples().all())
    rows = session.execute(
        select(Retrain, CommitteeRow, Generation.index)
        .join(CommitteeRow, CommitteeRow.id == Retrain.committee_id)
        .outerjoin(Generation, Generation.id == Retrain.generation_id)
        .where(CommitteeRow.campaign_id == campaign_id).order_by(CommitteeRow.id)).all()
    return [RetrainRecord(retrain, committee, index, validation.get(committee.id))
            for retrain, committee, index in rows]


def retrain_of(session: Session, committee_id: int) -> Retrain | None:
    """The retrain record of a committee (None: trained by a generation's own step)."""
    return session.get(Retrain, committee_id)


# ---------------------------------------------------------------------- scores
def explored_deviations(session: Session, campaign_id: int) -> dict[int, list[float]]:
    """Per generation >= 1: ``max_force_dev`` (eV/Å) of every frame its exploration
    recorded, as the exploring committee (the first to score it) scored it."""
    first = (select(Score.structure_id, func.min(Score.committee_id).label("committee_id"))
             .group_by(Score.structure_id).subquery())
    rows = session.execute(
        select(Generation.index, Score.max_force_dev).select_from(Score)
        .join(first, (first.c.structure_id == Score.structure_id) & (first.c.committee_id == Score.committee_id))
        .join(Structure, Structure.id == Score.structure_id)
        .join(Generation, Generation.id == Structure.generation_id)
        .where(Structure.campaign_id == campaign_id, Structure.source == StructureSource.MD,
               Generation.index >= 1)
        .order_by(Generation.index, Score.structure_id)).all()
    out: dict[int, list[float]] = {}
    for index, deviation in rows:
        out.setdefault(index, []).append(float(deviation))
    return out


@dataclass(frozen=True)
class ExploredGeometries:
    """Every explored and every labelled frame's positions, for maps of where the
    campaign went (``flows.report.exploration_map_png``)."""

    #: (N, n_atoms, 3) positions, Å
    positions: np.ndarray
    #: (N,) generation index of each frame
    generation: np.ndarray
    #: (N,) the replica's temperature (K; NaN for frames not from MD)
    temperature_K: np.ndarray
    #: (N,) whether the frame has a finished label
    labelled: np.ndarray


def explored_geometries(session: Session, campaign_id: int) -> ExploredGeometries:
    """The exploration's frames (``md``) and every labelled frame of any source
    (generation 0's samples, validation frames, fed-back production frames), by id."""
    done = select(LabelRow.structure_id).where(LabelRow.status == LabelStatus.DONE).subquery()
    rows = session.execute(
        select(Structure.positions, Generation.index, Structure.temperature_K, done.c.structure_id)
        .join(Generation, Generation.id == Structure.generation_id)
        .outerjoin(done, done.c.structure_id == Structure.id)
        .where(Structure.campaign_id == campaign_id,
               (Structure.source == StructureSource.MD) | done.c.structure_id.is_not(None))
        .order_by(Structure.id)).all()
    if not rows:
        return ExploredGeometries(np.zeros((0, 0, 3)), np.zeros(0, dtype=int), np.zeros(0), np.zeros(0, dtype=bool))
    return ExploredGeometries(
        positions=np.stack([np.asarray(r[0], dtype=np.float64) for r in rows]),
        generation=np.array([r[1] for r in rows], dtype=int),
        temperature_K=np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64),
        labelled=np.array([r[3] is not None for r in rows], dtype=bool))


def label_origins(session: Session, campaign_id: int) -> list[tuple[int, str, float | None, str | None, int]]:
    """Finished labels counted by generation and by where their frame came from:
    (generation index, source, temperature_K or None, sampler, count) rows grouped on the
    frame's source, its replica's temperature (exploration frames) and its sampler
    (``frames.PRODUCTION_SAMPLER`` for fed-back production MD), by generation."""
    rows = session.execute(
        select(Generation.index, Structure.source, Structure.temperature_K, Structure.sampler, func.count())
        .join(Structure, Structure.generation_id == Generation.id)
        .join(LabelRow, LabelRow.structure_id == Structure.id)
        .where(Structure.campaign_id == campaign_id, LabelRow.status == LabelStatus.DONE)
        .group_by(Generation.index, Structure.source, Structure.temperature_K, Structure.sampler)
        .order_by(Generation.index)).all()
    return [(int(g), str(source), None if t is None else float(t), sampler, int(n))
            for g, source, t, sampler, n in rows]


@dataclass(frozen=True)
class FreshFrame:
    """A fresh label as the committee that explored it scored it, eV/Å."""

    max_force_dev: float
    #: ``max_force_dev`` times that committee's ``force_dev_scale``
    calibrated_max_force_dev: float
    #: the true largest per-atom force error of that committee's mean
    max_force_error: float


def fresh_frames(session: Session, campaign_id: int) -> dict[int, list[FreshFrame]]:
    """Per generation index: each of its fresh labels, scored by the committee of its
    fresh-label evaluation (the one that explored it), by structure id."""
    fresh = (select(Evaluation.generation_id, func.max(Evaluation.id).label("id"))
             .where(Evaluation.label_set == "fresh", Evaluation.generation_id.is_not(None))
             .group_by(Evaluation.generation_id).subquery())
    rows = session.execute(
        select(Generation.index, Score.max_force_dev, CommitteeRow.force_dev_scale, Score.max_force_error_eV_A)
        .select_from(Evaluation)
        .join(fresh, fresh.c.id == Evaluation.id)
        .join(Generation, Generation.id == Evaluation.generation_id)
        .join(CommitteeRow, CommitteeRow.id == Evaluation.committee_id)
        .join(Score, Score.committee_id == Evaluation.committee_id)
        .join(Structure, (Structure.id == Score.structure_id) & (Structure.generation_id == Generation.id))
        .where(Generation.campaign_id == campaign_id, Score.max_force_error_eV_A.is_not(None))
        .order_by(Generation.index, Structure.id)).all()
    out: dict[int, list[FreshFrame]] = {}
    for index, deviation, scale, error in rows:
        out.setdefault(index, []).append(FreshFrame(float(deviation), float(deviation) * float(scale or 1.0),
                                                    float(error)))
    return out
