"""Campaign status from the database: one row per generation, and the totals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.campaign import latest_committee
from flows.storage import Generation, Label, LabelStatus, Structure

COUNT_COLUMNS = ("accurate", "candidate", "selected", "filtered", "duplicate", "rejected")


def _labels_by_generation(session: Session, campaign_id: int) -> dict[tuple[int | None, str], int]:
    rows = session.execute(
        select(Structure.generation_id, Label.status, func.count())
        .join(Label, Label.structure_id == Structure.id)
        .where(Structure.campaign_id == campaign_id)
        .group_by(Structure.generation_id, Label.status)
    ).all()
    return {(gen, str(status)): n for gen, status, n in rows}


def generation_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Per generation: labels, the selection funnel, failures, errors and timings."""
    labels = _labels_by_generation(session, campaign_id)
    rows = []
    generations = session.scalars(
        select(Generation).where(Generation.campaign_id == campaign_id).order_by(Generation.index)
    ).all()
    for g in generations:
        metrics = g.metrics or {}
        selection = metrics.get("selection") or {}
        fresh = (metrics.get("fresh") or {}).get("force_mae_eV_A")
        validation = (metrics.get("validation") or {}).get("force_mae_eV_A")
        row: dict[str, Any] = {
            "generation": g.index,
            "status": str(g.status),
            "labels": labels.get((g.id, LabelStatus.DONE.value), 0),
            **{name: selection.get(name, 0) for name in COUNT_COLUMNS},
            "failed": labels.get((g.id, LabelStatus.FAILED.value), 0),
            "fresh_force_mae_eV_A": None if fresh is None else round(fresh, 4),
            "validation_force_mae_eV_A": None if validation is None else round(validation, 4),
            "explore_s": round(g.explore_s or 0.0, 1),
            "label_s": round(g.label_s or 0.0, 1),
            "train_s": round(g.train_s or 0.0, 1),
            "stop_reason": g.stop_reason or "",
        }
        rows.append(row)
    return rows


def campaign_status(session: Session, campaign_id: int) -> dict[str, Any]:
    """Totals for ``alflow status --json``: generations, labels, failed_labels, latest_committee."""
    counts = dict(session.execute(
        select(Label.status, func.count()).join(Structure, Structure.id == Label.structure_id)
        .where(Structure.campaign_id == campaign_id).group_by(Label.status)
    ).all())
    committee = latest_committee(session, campaign_id)
    rows = generation_rows(session, campaign_id)
    last = rows[-1] if rows else {}
    return {
        "campaign_id": campaign_id,
        "generations": rows,
        "labels": counts.get(LabelStatus.DONE, 0),
        "failed_labels": counts.get(LabelStatus.FAILED, 0),
        "pending_labels": counts.get(LabelStatus.PENDING, 0) + counts.get(LabelStatus.RUNNING, 0),
        "latest_committee": committee.checkpoint_path if committee else None,
        "finished": bool(last.get("stop_reason")),
        "stop_reason": last.get("stop_reason") or None,
    }
