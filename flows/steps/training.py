"""Train the committee of a generation and measure it: fresh labels and validation set."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy.stats import spearmanr
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.campaign import CampaignContext, get_or_create_generation, latest_committee, mark_step_done
from flows.storage import Committee as CommitteeRow
from flows.storage import Campaign, Evaluation, Generation, Structure, StructureSource, labelled_atoms
from nnp_core.committee import CHECKPOINT_JSON, Committee, load_committee
from nnp_core.training import train_committee
from nnp_core.uncertainty import Calibration

log = logging.getLogger(__name__)
TRAINING_SOURCES = (StructureSource.INITIAL, StructureSource.MD)


def evaluation_metrics(committee: Committee, frames: list[Atoms], prediction=None) -> dict[str, float]:
    """Energy (eV/atom) and force (eV/Å) MAE/RMSE of the committee mean on labelled
    ``frames``, and the Spearman rank correlation between ``max_force_dev`` and the true
    largest per-atom force error of each frame (``prediction``: the committee's, if made)."""
    prediction = committee.predict(frames) if prediction is None else prediction
    n_atoms = prediction.n_atoms
    e_ref = np.array([a.get_potential_energy() for a in frames])
    f_ref = np.concatenate([a.get_forces() for a in frames])
    e_err = (prediction.energy_mean - e_ref) / n_atoms
    f_err = prediction.forces_mean - f_ref
    atom_err = np.linalg.norm(f_err, axis=1)
    max_err = np.array([atom_err[s].max() for s in prediction.frame_slices()])
    rho = float(spearmanr(prediction.max_force_dev, max_err).statistic) if len(frames) > 2 else float("nan")
    return {
        "n_frames": len(frames),
        "energy_mae_eV_atom": float(np.abs(e_err).mean()),
        "energy_rmse_eV_atom": float(np.sqrt(np.mean(e_err**2))),
        "force_mae_eV_A": float(np.abs(f_err).mean()),
        "force_rmse_eV_A": float(np.sqrt(np.mean(f_err**2))),
        "force_dev_spearman": rho if np.isfinite(rho) else None,
    }


def frame_errors(prediction, frames: list[Atoms]) -> dict[str, list[float]]:
    """Per frame: the committee's ``max_force_dev`` (raw and calibrated) and the true
    largest per-atom force error of its mean, eV/Å (uncertainty against error plots)."""
    atom_err = np.linalg.norm(prediction.forces_mean - np.concatenate([a.get_forces() for a in frames]), axis=1)
    return {"max_force_dev_eV_A": [round(float(x), 5) for x in prediction.max_force_dev],
            "calibrated_max_force_dev_eV_A": [round(float(x), 5) for x in prediction.calibrated_max_force_dev],
            "max_force_error_eV_A": [round(float(atom_err[s].max()), 5) for s in prediction.frame_slices()]}


def _store_evaluation(session: Session, committee_id: int, label_set: str, metrics: dict) -> None:
    session.add(Evaluation(
        committee_id=committee_id, label_set=label_set, n_frames=metrics["n_frames"],
        energy_mae_eV_atom=metrics["energy_mae_eV_atom"], energy_rmse_eV_atom=metrics["energy_rmse_eV_atom"],
        force_mae_eV_A=metrics["force_mae_eV_A"], force_rmse_eV_A=metrics["force_rmse_eV_A"],
        force_dev_spearman=metrics["force_dev_spearman"],
    ))


class CheckpointMissing(LookupError):
    """A committee's checkpoint folder recorded in the database is gone or unreadable."""


def load_latest(ctx: CampaignContext) -> tuple[int, Committee] | None:
    """The campaign's newest committee (id, committee), or None before the first.

    The loop's steps only read it, so each checkpoint is loaded once per process (and
    again if its files are rewritten). Raises :class:`CheckpointMissing` (one line) when
    its checkpoint was deleted, truncated or moved out of the campaign folder."""
    with Session(ctx.engine) as session:
        row = latest_committee(session, ctx.campaign_id)
        if row is None:
            return None
        committee_id, path = row.id, str(ctx.resolve(row.checkpoint_path))
    try:
        return committee_id, _load_checkpoint(path, (Path(path) / CHECKPOINT_JSON).stat().st_mtime_ns)
    except Exception as exc:  # noqa: BLE001 - missing file, truncated JSON or tensors, bad pickle
        raise CheckpointMissing(
            f"the checkpoint of committee {committee_id} ({path}) is missing or unreadable "
            f"({exc.__class__.__name__}: {str(exc)[:120]}); restore that folder (e.g. from a backup) to "
            f"resume campaign {ctx.name!r}") from None


@lru_cache(maxsize=4)
def _load_checkpoint(path: str, written_ns: int) -> Committee:
    return load_committee(path)


def evaluate_fresh(ctx: CampaignContext, generation_index: int) -> dict | None:
    """The exploring committee's error on this generation's new labels (honest test error)."""
    start = time.perf_counter()
    latest = load_latest(ctx)
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, generation_index)
        frames = labelled_atoms(session, ctx.campaign_id, generation_ids=[generation.id],
                                sources=[StructureSource.MD])
        metrics = None
        if latest is not None and frames:
            prediction = latest[1].predict(frames)
            metrics = {**evaluation_metrics(latest[1], frames, prediction),
                       **calibration_sums(latest[1], frames, prediction),
                       "frames": frame_errors(prediction, frames)}
            _store_evaluation(session, latest[0], "fresh", metrics)
        extra = {"fresh": metrics} if metrics else {}
        mark_step_done(session, generation, "evaluate_fresh", time.perf_counter() - start, **extra)
    return metrics


def calibration_sums(committee: Committee, frames: list[Atoms], prediction=None) -> dict[str, float]:
    """Sums over the atoms of ``frames`` of |F_ref - F̄|² and force_dev², eV²/Å²: pooled
    over generations they give the RMS calibration scale sqrt(sum error² / sum dev²)
    (:func:`nnp_core.uncertainty.fit_calibration`)."""
    prediction = committee.predict(frames) if prediction is None else prediction
    errors = np.concatenate([a.get_forces() for a in frames]) - prediction.forces_mean
    return {"sum_sq_force_error": float(np.sum(errors**2)),
            "sum_sq_force_dev": float(np.sum(prediction.force_dev**2))}


def fresh_calibration(session: Session, campaign_id: int, generation_index: int,
                      n_generations: int) -> tuple[Calibration, list[int]] | None:
    """The force calibration fitted on the fresh-label errors of generations
    ``generation_index - n_generations + 1 .. generation_index`` (each scored by the
    committee that explored it, before it saw them), and those generations; None when
    none of them has any."""
    if n_generations < 1:
        return None
    rows = session.execute(
        select(Generation.index, Generation.metrics).where(
            Generation.campaign_id == campaign_id,
            Generation.index > generation_index - n_generations, Generation.index <= generation_index)
    ).all()
    used = {index: (metrics or {}).get("fresh") or {} for index, metrics in rows}
    used = {index: fresh for index, fresh in used.items() if fresh.get("sum_sq_force_dev", 0.0) > 0}
    if not used:
        return None
    return pooled_calibration(list(used.values())), sorted(used)


def pooled_calibration(sums: list[dict[str, float]]) -> Calibration:
    """The force calibration of several :func:`calibration_sums` pooled (RMS over all
    their atoms)."""
    error = sum(s["sum_sq_force_error"] for s in sums)
    dev = sum(s["sum_sq_force_dev"] for s in sums)
    if dev <= 0:
        raise ValueError("cannot calibrate: the committee's force deviations are all zero")
    return Calibration(force_dev_scale=float(np.sqrt(error / dev)))


def train_generation(ctx: CampaignContext, generation_index: int, *, retrain: dict | None = None,
                     progress: Callable[[int, dict[str, float]], None] | None = None) -> int:
    """Train on all labelled training frames, warm-starting from the latest committee;
    calibrate on fresh labels of recent generations (:func:`fresh_calibration`), or on
    the validation set before there are any; save the checkpoint; record it. Returns its id.

    Calibrating on the validation frames alone (drawn from generation 0, near the start
    geometry) left the committees overconfident where they explore: 36-92% coverage of the
    nominal 95% force interval on the ethanol test set, against 85-99% with the fresh
    labels of the last 3 generations (bench.data_efficiency campaigns, docs/benchmarks.md).

    ``retrain`` (a retrain outside the loop: its record, stored as
    ``training_metrics["retrain"]``) leaves the generation's own step marks, timings and
    validation figures as they were: the retrain is a row of its own, never a silent
    rewrite of the generation. ``progress(epoch, losses)`` is called after every epoch."""
    start = time.perf_counter()
    config = ctx.config
    previous = load_latest(ctx)
    with Session(ctx.engine) as session:
        campaign = session.get(Campaign, ctx.campaign_id)
        cold_start = bool((campaign.config or {}).get("new_committee_pending"))
    if cold_start:  # `alflow run --new-committee`: the config's [committee], trained from scratch
        log.info("campaign %s: training a new committee from scratch (new [committee] settings)", ctx.name)
        previous = None
    with Session(ctx.engine) as session:
        frames = labelled_atoms(session, ctx.campaign_id, sources=TRAINING_SOURCES)
        validation = labelled_atoms(session, ctx.campaign_id, sources=[StructureSource.VALIDATION])
    committee, report = train_committee(
        frames, config.train_config(), n_members=config.committee.members,
        architecture=config.committee.architecture, model_hparams=config.committee.network_hparams(),
        initial=previous[1] if previous else None, progress=progress,
    )
    metrics = {"n_frames": len(frames), "wall_s": report.wall_s,
               "val_force_mae_eV_A": report.val_force_mae_eV_A,
               "val_energy_mae_eV_atom": report.val_energy_mae_eV_atom,
               "members": [asdict(m) for m in report.members]}
    with Session(ctx.engine) as session:
        fresh = fresh_calibration(session, ctx.campaign_id, generation_index,
                                  config.loop.calibration_generations)
    calibrated_on = "none"  # a warm start keeps its predecessor's calibration
    if fresh is not None:
        committee.calibration, used = fresh
        calibrated_on = f"fresh labels of generations {used}"
    elif len(validation) >= 2:
        committee.calibration = pooled_calibration([calibration_sums(committee, validation)])
        calibrated_on = "validation"
    validation_metrics = evaluation_metrics(committee, validation) if len(validation) >= 2 else None
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, generation_index)
        row = CommitteeRow(campaign_id=ctx.campaign_id, generation_id=generation.id,
                           checkpoint_path="", n_members=committee.n_members,
                           architecture=committee.architecture,
                           training_metrics={**metrics, "calibration": committee.calibration.to_dict(),
                                             "calibrated_on": calibrated_on,
                                             **({"retrain": retrain} if retrain is not None else {})})
        session.add(row)
        session.flush()
        # saved inside the transaction, into a folder keyed by the new row's id: no other
        # trainer can be given that id, and a crash before commit leaves only an orphan folder
        row.checkpoint_path = ctx.relative(committee.save(ctx.committee_dir(generation_index, row.id)))
        if validation_metrics is not None:
            _store_evaluation(session, row.id, "validation", validation_metrics)
        if cold_start:
            campaign = session.get(Campaign, ctx.campaign_id)
            campaign.config = {k: v for k, v in (campaign.config or {}).items() if k != "new_committee_pending"}
        if retrain is None:
            mark_step_done(session, generation, "train", time.perf_counter() - start,
                           committee_id=row.id, validation=validation_metrics,
                           n_training_frames=len(frames))
        committee_id = row.id
    log.info("generation %d: committee %d trained on %d frames (validation force MAE %s eV/Å)",
             generation_index, committee_id, len(frames),
             None if validation_metrics is None else round(validation_metrics["force_mae_eV_A"], 4))
    return committee_id
