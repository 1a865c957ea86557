"""Train the committee of a generation and measure it: fresh labels and validation set."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy.stats import spearmanr

from flows import storage
from flows.campaign import CampaignContext
from flows.pipeline import finishing
from flows.storage import StructureSource, labelled_atoms
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


def max_force_errors(prediction, frames: list[Atoms]) -> np.ndarray:
    """Per frame: the true largest per-atom force error of the committee mean, eV/Å."""
    atom_err = np.linalg.norm(prediction.forces_mean - np.concatenate([a.get_forces() for a in frames]), axis=1)
    return np.array([atom_err[s].max() for s in prediction.frame_slices()])


class CheckpointMissing(LookupError):
    """A committee's checkpoint folder recorded in the database is gone or unreadable."""


def load_latest(ctx: CampaignContext) -> tuple[int, Committee] | None:
    """The campaign's newest committee (id, committee), or None before the first.

    The loop's steps only read it, so each checkpoint is loaded once per process (and
    again if its files are rewritten). Raises :class:`CheckpointMissing` (one line) when
    its checkpoint was deleted, truncated or moved out of the campaign folder."""
    with storage.reading(ctx.engine) as session:
        row = storage.latest_committee(session, ctx.campaign_id)
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
    """The exploring committee's error on this generation's new labels (the honest test
    error), with the calibration sums and each frame's true largest force error (on the
    frame's Score by that committee)."""
    start = time.perf_counter()
    latest = load_latest(ctx)
    with finishing(ctx, generation_index, "evaluate_fresh", start) as (session, generation):
        frames = labelled_atoms(session, ctx.campaign_id, generation_ids=[generation.id],
                                sources=[StructureSource.MD])
        if latest is None or not frames:
            return None
        committee_id, committee = latest
        prediction = committee.predict(frames)
        metrics = evaluation_metrics(committee, frames, prediction)
        sums = calibration_sums(committee, frames, prediction)
        storage.add_evaluation(session, committee_id, "fresh", metrics, generation_id=generation.id, **sums)
        storage.record_frame_errors(session, committee_id, [a.info["structure_id"] for a in frames],
                                    max_force_errors(prediction, frames))
    return {**metrics, **sums}


def calibration_sums(committee: Committee, frames: list[Atoms], prediction=None) -> dict[str, float]:
    """Sums over the atoms of ``frames`` of |F_ref - F̄|² and force_dev², eV²/Å²: pooled
    over generations they give the RMS calibration scale sqrt(sum error² / sum dev²)
    (:func:`nnp_core.uncertainty.fit_calibration`)."""
    prediction = committee.predict(frames) if prediction is None else prediction
    errors = np.concatenate([a.get_forces() for a in frames]) - prediction.forces_mean
    return {"sum_sq_force_error": float(np.sum(errors**2)),
            "sum_sq_force_dev": float(np.sum(prediction.force_dev**2))}


def fresh_calibration(ctx: CampaignContext, generation_index: int,
                      n_generations: int) -> tuple[Calibration, list[int]] | None:
    """The force calibration fitted on the fresh-label errors of generations
    ``generation_index - n_generations + 1 .. generation_index`` (each scored by the
    committee that explored it, before it saw them), and those generations; None when
    none of them has any."""
    if n_generations < 1:
        return None
    with storage.reading(ctx.engine) as session:
        fresh = storage.fresh_evaluations(session, ctx.campaign_id, generation_index - n_generations + 1,
                                          generation_index)
        used = {index: {"sum_sq_force_error": e.sum_sq_force_error, "sum_sq_force_dev": e.sum_sq_force_dev}
                for index, e in fresh.items() if (e.sum_sq_force_dev or 0.0) > 0}
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


def warm_starts(ctx: CampaignContext) -> bool:
    """Whether the next training continues the latest committee (there is one, and no
    ``alflow run --new-committee`` asked for a new one)."""
    with storage.reading(ctx.engine) as session:
        return (storage.latest_committee(session, ctx.campaign_id) is not None
                and not storage.new_committee_pending(session, ctx.campaign_id))


def train_generation(ctx: CampaignContext, generation_index: int, *, retrain: dict | None = None,
                     progress: Callable[[int, dict[str, float]], None] | None = None) -> int:
    """Train on all labelled training frames, warm-starting from the latest committee
    (from fresh weights with ``[train] warm_start = false``);
    calibrate on fresh labels of recent generations (:func:`fresh_calibration`), or on
    the validation set before there are any; save the checkpoint; record it. Returns its id.

    Calibrating on the validation frames alone (drawn from generation 0, near the start
    geometry) left the committees overconfident where they explore: 36-92% coverage of the
    nominal 95% force interval on the ethanol test set, against 85-99% with the fresh
    labels of the last 3 generations (bench.data_efficiency campaigns, docs/benchmarks.md).

    ``retrain`` (a retrain outside the loop: ``new_labels``, ``previous_committee``,
    ``started``) is recorded as a :class:`~flows.storage.Retrain` row and leaves the
    generation's step marks as they were: the retrain is a committee of its own, never a
    silent rewrite of the generation. ``progress(epoch, losses)`` is called after every epoch."""
    start = time.perf_counter()
    config = ctx.config
    previous = load_latest(ctx)
    with storage.reading(ctx.engine) as session:
        cold_start = storage.new_committee_pending(session, ctx.campaign_id)
        frames = labelled_atoms(session, ctx.campaign_id, sources=TRAINING_SOURCES)
        validation = labelled_atoms(session, ctx.campaign_id, sources=[StructureSource.VALIDATION])
    for atoms in frames + validation:  # the total charge the dipole head conserves
        atoms.info["charge"] = config.system.charge
    if cold_start:  # `alflow run --new-committee`: the config's [committee], trained from scratch
        log.info("campaign %s: training a new committee from scratch (new [committee] settings)", ctx.name)
        previous = None
    elif not config.train.warm_start:  # every generation from fresh weights
        previous = None
    # generation g's warm start is the campaign's g-th ([train] long_warm_start_every)
    committee, report = train_committee(
        frames, config.train_config().for_warm_start_number(generation_index), n_members=config.committee.members,
        architecture=config.committee.architecture, model_hparams=config.committee.network_hparams(),
        initial=previous[1] if previous else None, progress=progress,
    )
    fresh = fresh_calibration(ctx, generation_index, config.loop.calibration_generations)
    calibrated_on = "none"  # a warm start keeps its predecessor's calibration
    # one prediction of the validation frames serves the calibration and the errors
    validation_prediction = committee.predict(validation) if len(validation) >= 2 else None
    if fresh is not None:
        committee.calibration, used = fresh
        calibrated_on = f"fresh labels of generations {used}"
    elif validation_prediction is not None:
        committee.calibration = pooled_calibration([calibration_sums(committee, validation, validation_prediction)])
        calibrated_on = "validation"
    validation_metrics = None
    if validation_prediction is not None:
        validation_metrics = evaluation_metrics(committee, validation, validation_prediction)
    with _writing(ctx, generation_index, "train" if retrain is None else None, start) as (session, generation):
        row = storage.add_committee(
            session, ctx.campaign_id, generation.id, n_members=committee.n_members,
            architecture=committee.architecture, n_training_frames=len(frames), training_wall_s=report.wall_s,
            force_dev_scale=committee.calibration.force_dev_scale,
            energy_dev_scale=committee.calibration.energy_dev_scale, calibrated_on=calibrated_on,
            member_reports=[asdict(m) for m in report.members])
        # saved inside the transaction, into a folder keyed by the new row's id: no other
        # trainer can be given that id, and a crash before commit leaves only an orphan folder
        row.checkpoint_path = ctx.relative(committee.save(ctx.committee_dir(generation_index, row.id)))
        if validation_metrics is not None:
            storage.add_evaluation(session, row.id, "validation", validation_metrics, generation_id=generation.id)
        if cold_start:
            storage.set_new_committee_pending(session, ctx.campaign_id, False)
        if retrain is not None:
            storage.add_retrain(session, row.id, generation.id, new_labels=retrain["new_labels"],
                                previous_committee_id=retrain.get("previous_committee"),
                                started_at=retrain["started"], finished_at=storage.utc_now())
        committee_id = row.id
    log.info("generation %d: committee %d trained on %d frames (validation force MAE %s eV/Å)",
             generation_index, committee_id, len(frames),
             None if validation_metrics is None else round(validation_metrics["force_mae_eV_A"], 4))
    return committee_id


@contextmanager
def _writing(ctx: CampaignContext, generation_index: int, step: str | None, start: float):
    """The pipeline's step transaction (``step`` marked), or for a retrain (``step``
    None: no mark) a plain transaction."""
    if step is not None:
        with finishing(ctx, generation_index, step, start) as pair:
            yield pair
        return
    with storage.transaction(ctx.engine) as session:
        yield session, storage.generation(session, ctx.campaign_id, generation_index)
