"""Campaign status from the database: one row per generation, and the totals.

The queries are ``flows.storage.overview``'s; this module shapes their typed rows into
the tables ``alflow status``, ``alflow report`` and the dashboard show. Every function
reads in the caller's session (``flows.storage.records.reading(engine)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.campaign import resolve_stored_path
from flows.storage import overview, records

if TYPE_CHECKING:
    from flows.storage.records import Session

COUNT_COLUMNS = ("accurate", "candidate", "selected", "filtered", "duplicate", "rejected")


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def generation_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Per generation: labels, the selection funnel, failures, errors and timings."""
    rows = []
    for item in overview.generation_overviews(session, campaign_id):
        g, steps = item.generation, item.steps
        selection = g.selection_counts() or {}
        rows.append({
            "generation": g.index,
            "status": str(g.status),
            "labels": item.labels["done"],
            **{name: selection.get(name, 0) for name in COUNT_COLUMNS},
            "failed": item.labels["failed"],
            "fresh_force_mae_eV_A": _round(item.fresh and item.fresh.force_mae_eV_A, 4),
            "validation_force_mae_eV_A": _round(item.validation and item.validation.force_mae_eV_A, 4),
            "explore_s": round(steps.get("explore", 0.0), 1),
            "label_s": round(steps.get("label", 0.0), 1),
            "train_s": round(steps.get("train", 0.0), 1),
            "stop_reason": g.stop_reason or "",
        })
    return rows


def campaign_status(session: Session, campaign_id: int, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Totals for ``alflow status --json``: generations, labels, failed_labels,
    latest_committee (its checkpoint folder; under ``work_dir`` when stored relative)."""
    counts = records.label_counts(session, campaign_id)
    committee = records.latest_committee(session, campaign_id)
    rows = generation_rows(session, campaign_id)
    last = rows[-1] if rows else {}
    return {
        "campaign_id": campaign_id,
        "generations": rows,
        "labels": counts["done"],
        "failed_labels": counts["failed"],
        "pending_labels": counts["pending"] + counts["running"],
        "latest_committee": (None if committee is None else committee.checkpoint_path if work_dir is None
                             else str(resolve_stored_path(work_dir, committee.checkpoint_path))),
        "finished": bool(last.get("stop_reason")),
        "stop_reason": last.get("stop_reason") or None,
    }


def label_origin_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Per generation, its finished labels by where their frame came from: generation 0's
    samples (``initial``), ``validation`` frames, each exploration temperature (``300 K``
    ...: the replica's temperature when the frame was recorded), fed-back ``production``
    MD; one column per origin seen in the campaign, zeros where a generation has none.
    With hot replicas a campaign can take nearly all its labels from the hottest one
    (``[select] stratify`` splits them)."""
    from flows.storage.frames import PRODUCTION_SAMPLER

    counts: dict[int, dict[tuple[int, float, str], int]] = {}
    for generation, source, temperature, sampler, n in overview.label_origins(session, campaign_id):
        if sampler == PRODUCTION_SAMPLER:
            key = (3, 0.0, "production")
        elif source == "md" and temperature is not None:
            key = (2, temperature, f"{temperature:g} K")
        else:
            key = ({"initial": 0, "validation": 1}.get(source, 4), 0.0, source)
        row = counts.setdefault(generation, {})
        row[key] = row.get(key, 0) + n
    columns = sorted({key for row in counts.values() for key in row})
    return [{"generation": g, **{name: row.get((rank, t, name), 0) for rank, t, name in columns},
             "total": sum(row.values())} for g, row in sorted(counts.items())]


def _meV(value_eV: float | None) -> float | None:
    return None if value_eV is None else round(1000.0 * value_eV, 1)


def dashboard_rows(session: Session, campaign_id: int, target_eV_A: float) -> list[dict[str, Any]]:
    """One narrow row per generation for the dashboard, units in the headers: labels so
    far, accurate %, selected, failed, the fresh-label force error against the target and
    the validation force error of the generation's own committee (a retrain never changes
    it: retrains are rows of :func:`retrain_rows`)."""
    rows, so_far = [], 0
    for item in overview.generation_overviews(session, campaign_id):
        g = item.generation
        so_far += item.labels["done"]
        fraction = g.accurate_fraction
        fresh = _meV(item.fresh and item.fresh.force_mae_eV_A)
        rows.append({
            "generation": g.index,
            "labels so far": so_far,
            "accurate %": None if fraction is None else round(100.0 * fraction, 1),
            "selected": (g.selection_counts() or {}).get("selected", 0),
            "failed": item.labels["failed"],
            "fresh F MAE / target (meV/Å)": None if fresh is None else f"{fresh:g} / {1000 * target_eV_A:g}",
            "val. F MAE (meV/Å)": _meV(item.validation and item.validation.force_mae_eV_A),
        })
    return rows


def timing_rows(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Wall time of each generation's steps (their step marks), s, and the QM time per label."""
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
    rows = []
    for item in overview.retrain_records(session, campaign_id):
        committee, retrain = item.committee, item.retrain
        rows.append({"committee": committee.id, "generation": item.generation_index,
                     "frames": committee.n_training_frames, "new labels": retrain.new_labels,
                     "val. F MAE (meV/Å)": _meV(item.validation_force_mae_eV_A),
                     "training (s)": _round(committee.training_wall_s, 1),
                     "finished (UTC)": "" if retrain.finished_at is None
                     else f"{retrain.finished_at:%Y-%m-%d %H:%M:%S}"})
    return rows


def learning_points(session: Session, campaign_id: int) -> dict[str, list[tuple[int, float]]]:
    """(training labels, force MAE eV/Å) of every committee: ``"fresh"`` (its error on the
    next generation's new labels, before it saw them) and ``"validation"``."""
    points: dict[str, list[tuple[int, float]]] = {"fresh": [], "validation": []}
    for committee, evaluation in overview.committee_evaluations(session, campaign_id):
        if evaluation.label_set in points:
            points[evaluation.label_set].append((int(committee.n_training_frames), evaluation.force_mae_eV_A))
    return points


def explored_deviations(session: Session, campaign_id: int) -> dict[int, list[float]]:
    """Per generation >= 1: ``max_force_dev`` (eV/Å) of every frame its exploration
    recorded, as the exploring committee scored it."""
    return overview.explored_deviations(session, campaign_id)


def exploration_torsions(session: Session, campaign_id: int, torsions) -> dict[str, np.ndarray]:
    """Every explored and every labelled frame (``overview.explored_geometries``) at the
    dihedrals ``torsions`` (quadruples of atom indices): ``torsions_deg`` (N, D) in
    (−180°, 180°], ``generation``, ``temperature_K`` (NaN off MD) and ``labelled`` (N,)."""
    import torch

    from nnp_core.bias import dihedrals

    frames = overview.explored_geometries(session, campaign_id)
    quadruples = torch.as_tensor(np.asarray(torsions, dtype=np.int64).reshape(-1, 4))
    if len(frames.positions):
        n_frames, n_atoms = frames.positions.shape[:2]
        rows = torch.arange(n_frames)[:, None, None] * n_atoms + quadruples[None]  # (N, D, 4)
        angles = dihedrals(torch.as_tensor(frames.positions).reshape(-1, 3), rows).numpy()
    else:
        angles = np.zeros((0, len(quadruples)))
    return {"torsions_deg": np.degrees(angles), "generation": frames.generation,
            "temperature_K": frames.temperature_K, "labelled": frames.labelled}


def fresh_frame_errors(session: Session, campaign_id: int) -> dict[int, dict[str, list[float]]]:
    """Per generation: each fresh label's ``max_force_dev`` (raw and calibrated) and the
    true largest per-atom force error of the committee that explored it, eV/Å."""
    return {index: {"max_force_dev_eV_A": [f.max_force_dev for f in frames],
                    "calibrated_max_force_dev_eV_A": [f.calibrated_max_force_dev for f in frames],
                    "max_force_error_eV_A": [f.max_force_error for f in frames]}
            for index, frames in overview.fresh_frames(session, campaign_id).items() if frames}
