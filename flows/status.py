"""Campaign status from the database: one row per generation, and the totals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.campaign import latest_committee, resolve_stored_path
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


def campaign_status(session: Session, campaign_id: int, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Totals for ``alflow status --json``: generations, labels, failed_labels,
    latest_committee (its checkpoint folder; under ``work_dir`` when stored relative)."""
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
        "latest_committee": (None if committee is None else committee.checkpoint_path if work_dir is None
                             else str(resolve_stored_path(work_dir, committee.checkpoint_path))),
        "finished": bool(last.get("stop_reason")),
        "stop_reason": last.get("stop_reason") or None,
    }


def _meV(value_eV: float | None) -> float | None:
    return None if value_eV is None else round(1000.0 * value_eV, 1)


def dashboard_rows(session: Session, campaign_id: int, target_eV_A: float) -> list[dict[str, Any]]:
    """One narrow row per generation for the dashboard, units in the headers: labels so
    far, accurate %, selected, failed, the fresh-label force error against the target and
    the validation force error of the generation's own committee (a retrain never changes
    it: retrains are rows of :func:`retrain_rows`)."""
    rows, so_far = [], 0
    for row, generation in zip(generation_rows(session, campaign_id), session.scalars(
            select(Generation).where(Generation.campaign_id == campaign_id).order_by(Generation.index))):
        so_far += row["labels"]
        fraction = (generation.metrics or {}).get("accurate_fraction")
        fresh = _meV(row["fresh_force_mae_eV_A"])
        rows.append({
            "generation": row["generation"],
            "labels so far": so_far,
            "accurate %": None if fraction is None else round(100.0 * fraction, 1),
            "selected": row["selected"],
            "failed": row["failed"],
            "fresh F MAE / target (meV/Å)": None if fresh is None else f"{fresh:g} / {1000 * target_eV_A:g}",
            "val. F MAE (meV/Å)": _meV(row["validation_force_mae_eV_A"]),
        })
    return rows


def timing_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Wall time of each generation's steps, s, and the QM time per label."""
    rows = []
    for row in generation_rows(session, campaign_id):
        done = row["labels"] + row["failed"]
        rows.append({"generation": row["generation"], "MD (s)": row["explore_s"], "QM (s)": row["label_s"],
                     "QM per label (s)": round(row["label_s"] / done, 1) if done else None,
                     "training (s)": row["train_s"],
                     "total (s)": round(row["explore_s"] + row["label_s"] + row["train_s"], 1)})
    return rows


def retrain_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """One row per retrain outside the loop (``retrain`` flow): committee, the generation
    it trained into, training frames, new labels and its validation force error."""
    from flows.storage import Committee, Evaluation

    validation = dict(session.execute(
        select(Evaluation.committee_id, Evaluation.force_mae_eV_A).join(Committee).where(
            Committee.campaign_id == campaign_id, Evaluation.label_set == "validation")).all())
    rows = []
    for committee in session.scalars(select(Committee).where(Committee.campaign_id == campaign_id)
                                     .order_by(Committee.id)):
        metrics = committee.training_metrics or {}
        record = metrics.get("retrain")
        if not record:
            continue
        rows.append({"committee": committee.id, "generation": record.get("generation"),
                     "frames": metrics.get("n_frames"), "new labels": record.get("new_labels"),
                     "val. F MAE (meV/Å)": _meV(validation.get(committee.id)),
                     "training (s)": None if metrics.get("wall_s") is None else round(metrics["wall_s"], 1),
                     "finished (UTC)": (record.get("finished") or "")[:19].replace("T", " ")})
    return rows


def learning_points(session: Session, campaign_id: int) -> dict[str, list[tuple[int, float]]]:
    """(training labels, force MAE eV/Å) of every committee: ``"fresh"`` (its error on the
    next generation's new labels, before it saw them) and ``"validation"``."""
    from flows.storage import Committee, Evaluation

    points: dict[str, list[tuple[int, float]]] = {"fresh": [], "validation": []}
    for committee, evaluation in session.execute(
            select(Committee, Evaluation).join(Evaluation, Evaluation.committee_id == Committee.id)
            .where(Committee.campaign_id == campaign_id).order_by(Committee.id)).all():
        if evaluation.label_set in points:
            points[evaluation.label_set].append(
                (int((committee.training_metrics or {}).get("n_frames", 0)), evaluation.force_mae_eV_A))
    return points


def explored_deviations(session: Session, campaign_id: int) -> dict[int, list[float]]:
    """Per generation >= 1: ``max_force_dev`` (eV/Å) of every frame its exploration
    recorded, as the exploring committee scored it."""
    from flows.storage import Score, StructureSource

    first = (select(Score.structure_id, func.min(Score.committee_id).label("committee_id"))
             .group_by(Score.structure_id).subquery())
    rows = session.execute(
        select(Generation.index, Score.max_force_dev).select_from(Score)
        .join(first, (first.c.structure_id == Score.structure_id) & (first.c.committee_id == Score.committee_id))
        .join(Structure, Structure.id == Score.structure_id)
        .join(Generation, Generation.id == Structure.generation_id)
        .where(Structure.campaign_id == campaign_id, Structure.source == StructureSource.MD,
               Generation.index >= 1)).all()
    out: dict[int, list[float]] = {}
    for index, deviation in rows:
        out.setdefault(index, []).append(float(deviation))
    return dict(sorted(out.items()))


def fresh_frame_errors(session: Session, campaign_id: int) -> dict[int, dict[str, list[float]]]:
    """Per generation: each fresh label's ``max_force_dev`` (raw and calibrated) and the
    true largest per-atom force error of the committee that explored it, eV/Å."""
    out = {}
    for generation in session.scalars(select(Generation).where(Generation.campaign_id == campaign_id)
                                      .order_by(Generation.index)):
        frames = ((generation.metrics or {}).get("fresh") or {}).get("frames")
        if frames and frames.get("max_force_error_eV_A"):
            out[generation.index] = frames
    return out
