"""The label queue: pending -> running (claimed by one worker) -> done | failed.

Every function but :func:`claim_pending_labels` given an engine works inside the
caller's session and transaction and never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from flows.storage.campaigns import check_level_of_theory, normalise_level_of_theory
from flows.storage.engine import immediate_engine
from flows.storage.frames import atoms_from_structure
from flows.storage.models import Campaign, Generation, LabelRow, LabelStatus, Structure
from flows.storage.types import utc_now


class LabelStateError(RuntimeError):
    """A label was asked to move to a state it cannot reach from where it is."""


def enqueue_labels(session: Session, structure_ids: Sequence[int]) -> list[int]:
    """One label per structure, ``pending`` if new; returns the label ids in order.

    A structure that already has a label (in any state) keeps it: a finished label is
    never computed twice, and a failed one stays quarantined. New rows are flushed.
    """
    wanted = list(dict.fromkeys(structure_ids))
    rows = session.execute(
        select(LabelRow.structure_id, LabelRow.id).where(LabelRow.structure_id.in_(wanted))
    )
    existing = {structure_id: label_id for structure_id, label_id in rows}
    new = {
        sid: LabelRow(structure_id=sid, status=LabelStatus.PENDING)
        for sid in wanted
        if sid not in existing
    }
    session.add_all(new.values())
    session.flush()
    existing.update({sid: label.id for sid, label in new.items()})
    return [existing[sid] for sid in structure_ids]


def claim_pending_labels(
    bind: Session | Engine, campaign_id: int, n: int, worker: str
) -> list[int]:
    """Mark up to ``n`` pending labels of the campaign ``running`` for ``worker``.

    Returns their ids, oldest first; no two claimers ever get the same label. Given an
    engine, the claim is its own transaction, committed on return (on SQLite a
    ``BEGIN IMMEDIATE`` one, so concurrent claimers queue for the write lock). Given a
    session, the claim joins the caller's transaction; on SQLite open that session on
    :func:`~flows.storage.engine.immediate_engine` so a concurrent claimer waits
    rather than fails with "database is locked". Other databases use
    ``SELECT ... FOR UPDATE SKIP LOCKED``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if isinstance(bind, Engine):
        with Session(immediate_engine(bind)) as session, session.begin():
            return _claim(session, campaign_id, n, worker)
    return _claim(bind, campaign_id, n, worker)


def _claim(session: Session, campaign_id: int, n: int, worker: str) -> list[int]:
    candidates = (
        select(LabelRow.id)
        .join(Structure, LabelRow.structure_id == Structure.id)
        .where(Structure.campaign_id == campaign_id, LabelRow.status == LabelStatus.PENDING)
        .order_by(LabelRow.id)
        .limit(n)
        .with_for_update(skip_locked=True, of=LabelRow)
    )
    ids = list(session.scalars(candidates))
    if not ids:
        return []
    result = session.execute(
        update(LabelRow)
        .where(LabelRow.id.in_(ids), LabelRow.status == LabelStatus.PENDING)
        .values(status=LabelStatus.RUNNING, worker=worker, claimed_at=utc_now())
    )
    claimed = result.rowcount  # type: ignore[attr-defined]
    if claimed != len(ids):
        raise LabelStateError(
            f"claimed {claimed} of {len(ids)} labels: another claimer raced this "
            "transaction; claim in one that locks (BEGIN IMMEDIATE on SQLite)"
        )
    return ids


def _label_for_update(session: Session, label_id: int, allowed: set[LabelStatus]) -> LabelRow:
    label = session.get(LabelRow, label_id)
    if label is None:
        raise LookupError(f"no label with id {label_id}")
    if label.status not in allowed:
        raise LabelStateError(
            f"label {label_id} is {label.status.value}; expected one of "
            f"{sorted(status.value for status in allowed)}"
        )
    return label


def complete_label(
    session: Session,
    label_id: int,
    *,
    energy_eV: float,
    forces_eV_A: np.ndarray,
    dipole_eA: np.ndarray | None = None,
    n_scf_cycles: int | None = None,
    attempts: list[dict[str, Any]] | None = None,
    wall_s: float | None = None,
    level_of_theory: dict[str, Any],
) -> None:
    """Store a converged reference result: energy (eV), forces (eV/Å), dipole (e·Å).

    Every check runs before anything changes, so a refused result leaves the row as
    it was. Raises :class:`~flows.storage.campaigns.LevelOfTheoryMismatch` if
    ``level_of_theory`` differs from the campaign's, ``ValueError`` for non-finite
    values or forces not shaped (n_atoms, 3), :class:`LabelStateError` unless the label
    is pending or running, ``LookupError`` for an unknown id.
    """
    label = _label_for_update(session, label_id, {LabelStatus.PENDING, LabelStatus.RUNNING})
    structure = session.get_one(Structure, label.structure_id)
    campaign = session.get_one(Campaign, structure.campaign_id)
    check_level_of_theory(campaign.level_of_theory, level_of_theory, what=f"label {label_id}")
    forces = np.asarray(forces_eV_A, dtype=np.float64)
    if forces.shape != (structure.n_atoms, 3):
        raise ValueError(f"forces of shape {forces.shape}, expected ({structure.n_atoms}, 3)")
    dipole = None if dipole_eA is None else np.asarray(dipole_eA, dtype=np.float64)
    if dipole is not None and dipole.shape != (3,):
        raise ValueError(f"dipole of shape {dipole.shape}, expected (3,)")
    values = [np.asarray(energy_eV, dtype=np.float64), forces]
    if dipole is not None:
        values.append(dipole)
    if not all(np.all(np.isfinite(value)) for value in values):
        raise ValueError(f"label {label_id}: non-finite energy, forces or dipole refused")
    label.status = LabelStatus.DONE
    label.energy_eV = float(energy_eV)
    label.forces_eV_A = forces
    label.dipole_eA = dipole
    label.n_scf_cycles = n_scf_cycles
    label.attempts = attempts
    label.wall_s = wall_s
    label.error = None
    label.level_of_theory = normalise_level_of_theory(level_of_theory)
    label.finished_at = utc_now()
    session.flush()


def fail_label(
    session: Session,
    label_id: int,
    reason: str,
    attempts: list[dict[str, Any]] | None = None,
    *,
    wall_s: float | None = None,
) -> None:
    """Quarantine a label whose calculation failed for good, with the reason.

    Raises :class:`LabelStateError` unless the label is pending or running.
    """
    label = _label_for_update(session, label_id, {LabelStatus.PENDING, LabelStatus.RUNNING})
    label.status = LabelStatus.FAILED
    label.error = reason
    label.attempts = attempts
    label.wall_s = wall_s
    label.finished_at = utc_now()
    session.flush()


def label_atoms(session: Session, label_id: int) -> Atoms:
    """The frame of label ``label_id`` (no results attached), for the worker that claimed it."""
    label = session.get(LabelRow, label_id)
    if label is None:
        raise LookupError(f"no label with id {label_id}")
    return atoms_from_structure(label.structure)


def running_labels(session: Session, campaign_id: int) -> list[LabelRow]:
    """The campaign's claimed (running) labels, with their worker and claim time."""
    return list(session.scalars(select(LabelRow).join(Structure, LabelRow.structure_id == Structure.id).where(
        Structure.campaign_id == campaign_id, LabelRow.status == LabelStatus.RUNNING).order_by(LabelRow.id)))


def release_labels(session: Session, label_ids: Sequence[int]) -> None:
    """Put claimed (running) labels back to ``pending``; others are left as they are."""
    if label_ids:
        session.execute(update(LabelRow).where(LabelRow.id.in_(list(label_ids)), LabelRow.status == LabelStatus.RUNNING)
                        .values(status=LabelStatus.PENDING, worker=None, claimed_at=None))


def requeue_failed_labels(session: Session, label_ids: Sequence[int]) -> None:
    """Put quarantined (failed) labels back to ``pending`` to be computed again."""
    if label_ids:
        session.execute(update(LabelRow).where(LabelRow.id.in_(list(label_ids)), LabelRow.status == LabelStatus.FAILED)
                        .values(status=LabelStatus.PENDING, worker=None, claimed_at=None, finished_at=None))


def generation_labels(session: Session, campaign_id: int, generation_index: int) -> list[LabelRow]:
    """The labels of a generation's frames (any state), by id, with their structures."""
    return list(session.scalars(select(LabelRow).join(Structure, LabelRow.structure_id == Structure.id).join(
        Generation, Generation.id == Structure.generation_id).where(
        Structure.campaign_id == campaign_id, Generation.index == generation_index).order_by(LabelRow.id)))


def count_labels(session: Session, campaign_id: int) -> int:
    """Labels the campaign has asked for, in any state (pending, running, done or
    failed): what counts against ``[loop] max_labels``."""
    return session.scalar(select(func.count()).select_from(LabelRow).join(
        Structure, LabelRow.structure_id == Structure.id).where(Structure.campaign_id == campaign_id))
