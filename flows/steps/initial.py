"""Generation 0: a reference geometry and initial frames sampled around it."""

from __future__ import annotations

import logging
import time

import numpy as np
from ase import Atoms
from ase.optimize import BFGS
from flows.backends import make_initial_md_backend
from flows.campaign import CampaignContext
from flows.pipeline import done_steps, finishing
from flows.steps.labelling import ReferenceFailed, one_line
from flows.storage import StructureSource, add_structures, enqueue_labels
from nnp_core.sampling import md_sampling, normal_mode_sampling, random_displacements, wigner_sampling
from qm_backends import InvalidStructure, LabelFailed

log = logging.getLogger(__name__)
DISPLACEMENT_STDDEV_A = 0.05


def reference_geometry(ctx: CampaignContext) -> Atoms:
    """The configured structure, optimised with the reference backend if asked.

    Raises :class:`~flows.steps.labelling.ReferenceFailed` when the reference cannot
    compute a step of the optimisation."""
    atoms = ctx.config.system.atoms().copy()
    ctx.backend.validate(atoms)
    if ctx.config.loop.optimise_first:
        atoms.calc = ctx.backend
        optimiser = BFGS(atoms, logfile=None)
        try:
            converged = optimiser.run(fmax=0.05, steps=100)
        except (LabelFailed, InvalidStructure) as exc:
            raise ReferenceFailed.because(
                ctx, f"optimising the starting structure (loop.optimise_first) failed after {optimiser.nsteps} BFGS step(s): "
                     f"{one_line(f'{type(exc).__name__}: {exc}')}", see_status=False) from None
        log.info("reference geometry optimised in %d steps (converged=%s)", optimiser.nsteps, converged)
        atoms.calc = None
    return atoms


def initial_frames(ctx: CampaignContext, atoms: Atoms, n_samples: int, *, seed: int) -> list[Atoms]:
    """``n_samples`` frames around ``atoms`` with the configured sampler.

    Normal-mode and Wigner sampling need the reference Hessian; where the backend has
    none (NotImplementedError) the sampler falls back to random displacements. MD
    sampling runs one Langevin trajectory with ``loop.initial_md_backend``.
    """
    loop = ctx.config.loop
    if loop.initial_sampler == "md":
        backend = make_initial_md_backend(ctx.config)
        # the wrapped ASE calculator where there is one (no per-step validation or copy)
        calculator = getattr(backend, "calculator", backend)
        return md_sampling(atoms, calculator, temperature_K=loop.initial_temperature_K, n_samples=n_samples,
                           seed=seed, interval_steps=loop.initial_md_interval_steps)
    if loop.initial_sampler != "displacements":
        try:
            hessian = ctx.backend.hessian(atoms)
        except NotImplementedError as exc:
            log.warning("no Hessian from the reference (%s); using random displacements", exc)
        except (LabelFailed, InvalidStructure) as exc:
            raise ReferenceFailed.because(
                ctx, f"the Hessian for loop.initial_sampler = {loop.initial_sampler!r} failed: "
                     f"{one_line(f'{type(exc).__name__}: {exc}')}", see_status=False) from None
        else:
            sampler = normal_mode_sampling if loop.initial_sampler == "normal_modes" else wigner_sampling
            return sampler(atoms, hessian, temperature_K=loop.initial_temperature_K,
                           n_samples=n_samples, seed=seed)
    return random_displacements(atoms, stddev_A=DISPLACEMENT_STDDEV_A, n_samples=n_samples, seed=seed)


def sample_initial(ctx: CampaignContext) -> dict[str, int]:
    """Store the reference geometry, training and validation frames; queue their labels.

    Idempotent: does nothing if generation 0 is already sampled (the label step retries
    failed generation-0 labels, :func:`~flows.steps.labelling.retry_failed_initial_labels`).
    Raises :class:`~flows.steps.labelling.ReferenceFailed` (no frame stored) when the
    reference cannot optimise the starting structure or compute its Hessian.
    """
    if "sample" in done_steps(ctx, 0):
        return {}
    start = time.perf_counter()
    loop = ctx.config.loop
    atoms = reference_geometry(ctx)
    n_validation = int(np.ceil(loop.validation_fraction_frames * loop.initial_samples))
    frames = initial_frames(ctx, atoms, loop.initial_samples + n_validation, seed=ctx.config.train.seed)
    train, validation = frames[: loop.initial_samples], frames[loop.initial_samples :]
    with finishing(ctx, 0, "sample", start) as (session, generation):
        sampler = loop.initial_sampler
        ref_id = add_structures(session, ctx.campaign_id, [atoms], source=StructureSource.INITIAL,
                                generation_id=generation.id, sampler="reference-geometry")
        train_ids = add_structures(session, ctx.campaign_id, train, source=StructureSource.INITIAL,
                                   generation_id=generation.id, sampler=sampler,
                                   temperature_K=loop.initial_temperature_K)
        val_ids = add_structures(session, ctx.campaign_id, validation, source=StructureSource.VALIDATION,
                                 generation_id=generation.id, sampler=sampler,
                                 temperature_K=loop.initial_temperature_K)
        enqueue_labels(session, ref_id + train_ids + val_ids)
        counts = {"initial_frames": len(set(ref_id + train_ids)), "validation_frames": len(set(val_ids))}
    log.info("generation 0: %d initial and %d validation frames queued for labelling",
             counts["initial_frames"], counts["validation_frames"])
    return counts
