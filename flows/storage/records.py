"""What a generation's steps found, as typed rows: step marks, exploration, selection
and label counts, committees with their calibration, evaluations, retrains.

Every function works in the caller's session and transaction (``transaction``) and
never commits; the pipeline (``flows.pipeline``) writes a step's outputs and its mark
in one transaction, so a killed run resumes at the first step without a mark.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from flows.storage.models import (
    Campaign,
    CommitteeRow,
    Decision,
    Evaluation,
    Generation,
    GenerationStatus,
    LabelRow,
    LabelStatus,
    ReplicaRun,
    Retrain,
    Score,
    StepMark,
    Structure,
    StructureSource,
)
from flows.storage.types import utc_now


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session in a transaction, committed on leaving (rolled back on an exception)."""
    with Session(engine) as session, session.begin():
        yield session


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A session for reads (no explicit transaction; nothing is written)."""
    with Session(engine) as session:
        yield session


# ---------------------------------------------------------------------- generations
def generation(session: Session, campaign_id: int, index: int) -> Generation:
    """The generation row of ``index``, created (pending) if missing (flushed)."""
    row = session.scalar(select(Generation).where(Generation.campaign_id == campaign_id,
                                                  Generation.index == index))
    if row is None:
        row = Generation(campaign_id=campaign_id, index=index, status=GenerationStatus.PENDING)
        session.add(row)
        session.flush()
    return row


def generations(session: Session, campaign_id: int, *, first: int = 0,
                last: int | None = None) -> list[Generation]:
    """The campaign's generations ``first..last`` (inclusive), by index."""
    statement = select(Generation).where(Generation.campaign_id == campaign_id, Generation.index >= first)
    if last is not None:
        statement = statement.where(Generation.index <= last)
    return list(session.scalars(statement.order_by(Generation.index)))


def done_steps(session: Session, generation_id: int) -> dict[str, float]:
    """The finished steps of a generation and their seconds."""
    return dict(session.execute(select(StepMark.step, StepMark.seconds)
                                .where(StepMark.generation_id == generation_id)).tuples().all())


def mark_step(session: Session, row: Generation, step: str, seconds: float) -> None:
    """Record that ``step`` of generation ``row`` finished after ``seconds``; the
    generation is running from its first mark on."""
    existing = session.get(StepMark, (row.id, step))
    if existing is None:
        session.add(StepMark(generation_id=row.id, step=step, seconds=round(seconds, 3)))
    else:  # a step redone (e.g. labelling resumed) adds its time
        existing.seconds = round(existing.seconds + seconds, 3)
        existing.finished_at = utc_now()
    if row.started_at is None:
        row.started_at = utc_now()
    if row.status == GenerationStatus.PENDING:
        row.status = GenerationStatus.RUNNING
    session.flush()


def finish_generation(session: Session, row: Generation, stop_reason: str | None, converged: bool) -> None:
    row.converged, row.stop_reason = converged, stop_reason
    row.status = GenerationStatus.DONE
    row.finished_at = utc_now()


def record_exploration(session: Session, row: Generation, *, replica_steps: int, replica_steps_per_s: float,
                       frames: Mapping[str, int], replicas: Sequence[Mapping[str, Any]]) -> None:
    """The exploration's totals and each replica's run (``replicas``: replica, steps, restarts, stop)."""
    row.replica_steps, row.replica_steps_per_s = replica_steps, replica_steps_per_s
    row.md_trusted = frames.get("trusted", 0)
    row.md_rejected = frames.get("rejected", 0)
    row.md_failed = frames.get("failed", 0)
    for replica in replicas:
        session.merge(ReplicaRun(generation_id=row.id, replica=replica["replica"], steps=replica["steps"],
                                 restarts=replica["restarts"], stop=replica["stop"],
                                 hills=replica.get("hills")))


def replica_hills(session: Session, campaign_id: int, n_replicas: int) -> list[np.ndarray | None]:
    """Each replica's metadynamics hills (flattened rows of centres and height) as its
    newest exploration left them; None where it has deposited none yet."""
    rows = session.execute(
        select(ReplicaRun.replica, ReplicaRun.hills).join(Generation, Generation.id == ReplicaRun.generation_id)
        .where(Generation.campaign_id == campaign_id, ReplicaRun.hills.is_not(None),
               ReplicaRun.replica < n_replicas)
        .order_by(Generation.index)).all()
    hills: list[np.ndarray | None] = [None] * n_replicas
    for replica, values in rows:  # the newest generation's overwrite older ones
        hills[replica] = values
    return hills


def record_selection(row: Generation, counts: Mapping[str, int]) -> None:
    for decision in Decision:
        setattr(row, f"n_{decision.value}", int(counts.get(decision.value, 0)))


def record_labels(row: Generation, done: int, failed: int) -> None:
    """Add one labelling pass's finished and quarantined labels to the generation's."""
    row.labels_done = (row.labels_done or 0) + done
    row.labels_failed = (row.labels_failed or 0) + failed


# ---------------------------------------------------------------------- committees
def latest_committee(session: Session, campaign_id: int) -> CommitteeRow | None:
    return session.scalars(select(CommitteeRow).where(CommitteeRow.campaign_id == campaign_id)
                           .order_by(CommitteeRow.id.desc()).limit(1)).first()


def committees(session: Session, campaign_id: int) -> list[CommitteeRow]:
    return list(session.scalars(select(CommitteeRow).where(CommitteeRow.campaign_id == campaign_id)
                                .order_by(CommitteeRow.id)))


def add_committee(session: Session, campaign_id: int, generation_id: int, *, n_members: int,
                  architecture: str, n_training_frames: int, training_wall_s: float | None,
                  force_dev_scale: float, energy_dev_scale: float, calibrated_on: str,
                  member_reports: list[dict[str, Any]]) -> CommitteeRow:
    """A new committee row (flushed, so it has an id; its checkpoint path is set by the caller)."""
    row = CommitteeRow(campaign_id=campaign_id, generation_id=generation_id, checkpoint_path="",
                    n_members=n_members, architecture=architecture, n_training_frames=n_training_frames,
                    training_wall_s=training_wall_s, force_dev_scale=force_dev_scale,
                    energy_dev_scale=energy_dev_scale, calibrated_on=calibrated_on,
                    member_reports=member_reports)
    session.add(row)
    session.flush()
    return row


def generation_committee(session: Session, generation_id: int) -> CommitteeRow | None:
    """The committee a generation's own train step made (not a retrain into it)."""
    return session.scalars(select(CommitteeRow).outerjoin(Retrain, Retrain.committee_id == CommitteeRow.id).where(
        CommitteeRow.generation_id == generation_id, Retrain.committee_id.is_(None))
        .order_by(CommitteeRow.id)).first()


def add_retrain(session: Session, committee_id: int, generation_id: int | None, *, new_labels: int,
                previous_committee_id: int | None, started_at: datetime,
                finished_at: datetime | None = None) -> Retrain:
    row = Retrain(committee_id=committee_id, generation_id=generation_id, new_labels=new_labels,
                  previous_committee_id=previous_committee_id, started_at=started_at, finished_at=finished_at)
    session.add(row)
    session.flush()
    return row


# ---------------------------------------------------------------------- evaluations
EVALUATION_FIELDS = ("n_frames", "energy_mae_eV_atom", "energy_rmse_eV_atom", "force_mae_eV_A",
                     "force_rmse_eV_A", "force_dev_spearman")


def add_evaluation(session: Session, committee_id: int, label_set: str, metrics: Mapping[str, Any], *,
                   generation_id: int | None = None, sum_sq_force_error: float | None = None,
                   sum_sq_force_dev: float | None = None) -> Evaluation:
    """A committee's errors on a named label set (``metrics``: :data:`EVALUATION_FIELDS`)."""
    row = Evaluation(committee_id=committee_id, label_set=label_set, generation_id=generation_id,
                     sum_sq_force_error=sum_sq_force_error, sum_sq_force_dev=sum_sq_force_dev,
                     **{key: metrics[key] for key in EVALUATION_FIELDS})
    session.add(row)
    session.flush()
    return row


def evaluation(session: Session, label_set: str, *, generation_id: int | None = None,
               committee_id: int | None = None) -> Evaluation | None:
    """The ``label_set`` evaluation of a generation ("fresh") or of a committee."""
    statement = select(Evaluation).where(Evaluation.label_set == label_set)
    if generation_id is not None:
        statement = statement.where(Evaluation.generation_id == generation_id)
    if committee_id is not None:
        statement = statement.where(Evaluation.committee_id == committee_id)
    return session.scalars(statement.order_by(Evaluation.id.desc()).limit(1)).first()


def fresh_evaluations(session: Session, campaign_id: int, first: int, last: int) -> dict[int, Evaluation]:
    """Per generation index in ``first..last``: its fresh-label evaluation (where it has one)."""
    rows = session.execute(select(Generation.index, Evaluation).join(
        Evaluation, Evaluation.generation_id == Generation.id).where(
        Generation.campaign_id == campaign_id, Evaluation.label_set == "fresh",
        Generation.index >= first, Generation.index <= last).order_by(Evaluation.id)).all()
    return {index: row for index, row in rows}


def record_frame_errors(session: Session, committee_id: int, structure_ids: Sequence[int],
                        max_force_errors: Sequence[float]) -> None:
    """Each labelled frame's true largest force error, on the Score the committee gave it."""
    scores = {score.structure_id: score for score in session.scalars(select(Score).where(
        Score.committee_id == committee_id, Score.structure_id.in_(list(structure_ids))))}
    for structure_id, error in zip(structure_ids, max_force_errors):
        if (score := scores.get(structure_id)) is not None:
            score.max_force_error_eV_A = float(error)


# ---------------------------------------------------------------------- counts
def label_counts(session: Session, campaign_id: int, *, label_ids: Sequence[int] | None = None,
                 sources: Sequence[StructureSource] | None = None) -> dict[str, int]:
    """The campaign's labels by status value (every status present, 0 if none)."""
    statement = (select(LabelRow.status, func.count()).join(Structure, Structure.id == LabelRow.structure_id)
                 .where(Structure.campaign_id == campaign_id).group_by(LabelRow.status))
    if label_ids is not None:
        statement = statement.where(LabelRow.id.in_(list(label_ids)))
    if sources is not None:
        statement = statement.where(Structure.source.in_(list(sources)))
    counts = {status.value: 0 for status in LabelStatus}
    counts.update({str(LabelStatus(status).value): n for status, n in session.execute(statement).all()})
    return counts


def pending_label_ids(session: Session, campaign_id: int) -> list[int]:
    return list(session.scalars(select(LabelRow.id).join(Structure, Structure.id == LabelRow.structure_id).where(
        Structure.campaign_id == campaign_id, LabelRow.status == LabelStatus.PENDING).order_by(LabelRow.id)))


# ---------------------------------------------------------------------- campaigns
def campaign(session: Session, campaign_id: int) -> Campaign:
    return session.get_one(Campaign, campaign_id)


def campaign_id(session: Session, name: str) -> int | None:
    """The id of the campaign called ``name``, or None."""
    return session.scalar(select(Campaign.id).where(Campaign.name == name))


def new_committee_pending(session: Session, campaign_id: int) -> bool:
    """Whether ``alflow run --new-committee`` asked for the next training to start from scratch."""
    return bool(session.scalar(select(Campaign.new_committee_pending).where(Campaign.id == campaign_id)))


def set_new_committee_pending(session: Session, campaign_id: int, pending: bool) -> None:
    session.get_one(Campaign, campaign_id).new_committee_pending = pending
