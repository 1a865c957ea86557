"""Explore: run the replicas with the latest committee and store every recorded frame
with its scores.

Trust is judged once per purpose: the MD engine stops (or restarts) a replica whose
``max_force_dev`` reaches ``trust_hi`` and those frames are stored as ``rejected``; the
frames it kept are stored undecided, and the select step (``flows.steps.selection``)
alone sorts them into the trust window.

With ``[explore] bias`` the replicas move under UDD or metadynamics
(``nnp_core.bias``); each frame is stored with its bias energy and CV values, its
scores are the unbiased committee's, and a replica's metadynamics hills are stored with
its run (``replica_runs.hills``) and picked up by its next exploration, so the bias
keeps filling across generations (and a resumed exploration starts from the same hills).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np

from flows import storage
from flows.pipeline import finishing
from flows.steps.selection import passes_filters
from flows.steps.training import load_latest
from flows.storage import Decision, StructureSource
from nnp_core.md import Replica, run_md
from nnp_core.md_results import FrameStatus, MDFrame

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int, int], None]


def explore(ctx, generation_index: int, *, progress: ProgressCallback | None = None) -> dict:
    """Run the replicas with the latest committee and store every recorded frame + score.

    Each replica goes on from its newest trusted frame of earlier generations, with its
    momenta. A replica whose newest frame fails the selection's sanity filters (atoms too
    close, or the reference's bond graph changed unless ``allow_bond_changes``) came apart
    under a hole of the committee: it is reset, like a replica without frames, to the
    reference geometry with fresh velocities at its temperature (psiflow resets an unsafe
    walker to its start the same way). Going on from the fragments would waste it, and so
    would going on from its last intact frame: that frame is the hole's entrance with its
    momenta pointing in, and one campaign's 1200 K replica fell back in from it in
    every one of seven generations (docs/benchmarks.md, ``rare-event-campaigns``)."""
    start = time.perf_counter()
    cfg = ctx.config.explore
    committee_id, committee = load_latest(ctx)
    if cfg.dtype is not None:
        committee = committee.astype(cfg.dtype)
    committee = committee.to(ctx.config.explore_device())
    bias = ctx.config.exploration_bias()
    with storage.reading(ctx.engine) as session:
        reference = storage.reference_structure(session, ctx.campaign_id)
        newest = storage.last_md_frames(session, ctx.campaign_id, cfg.replicas)
        hills = storage.replica_hills(session, ctx.campaign_id, cfg.replicas) if bias is not None else []
    points = [None if point is None or not passes_filters(point, reference, ctx.config.select) else point
              for point in newest]
    for replica, (point, start_at) in enumerate(zip(newest, points)):
        if point is not None and start_at is None:
            log.warning("replica %d came apart in its last generation (its newest frame fails the sanity "
                        "filters); it starts again at the reference geometry with fresh velocities", replica)
    for replica, values in enumerate(hills):
        if values is not None and values.size % (bias.n_cvs + 1) == 0:
            bias.set_hills(replica, values.reshape(-1, bias.n_cvs + 1))
        elif values is not None:
            log.warning("replica %d: stored hills do not fit %d CVs; starting without them", replica, bias.n_cvs)
    replicas = [
        Replica(atoms=point if point is not None else reference, temperature_K=temperature,
                friction_per_fs=cfg.friction_per_fs, seed=1000 * generation_index + r,
                velocities_from_atoms=point is not None and point.get_momenta().any())
        for r, (point, temperature) in enumerate(zip(points, cfg.temperatures_K))
    ]
    result = run_md(committee, replicas, config=ctx.config.md_config(), progress=progress, bias=bias)
    frames = [f for f in result.frames if f.step > 0 or f.restarts > 0]  # step 0 is the known seed
    replica_runs = [{"replica": s.replica, "steps": s.steps_run, "restarts": s.restarts,
                     "stop": s.stop_reason.value} for s in result.replicas]
    summary = [dict(run, start="reference" if points[run["replica"]] is None else "newest frame")
               for run in replica_runs]
    for run in replica_runs:
        if bias is not None and bias.name == "metad":
            run["hills"] = bias.hills[run["replica"]].ravel()
    with finishing(ctx, generation_index, "explore", start) as (session, generation):
        _store_frames(session, ctx.campaign_id, generation.id, committee_id, frames)
        storage.record_exploration(session, generation, replica_steps=result.replica_steps,
                                   replica_steps_per_s=result.replica_steps_per_s,
                                   frames=result.counts(), replicas=replica_runs)
    return {"md_frames": result.counts(), "replica_steps": result.replica_steps,
            "replica_steps_per_s": result.replica_steps_per_s, "replicas": summary}


def _store_frames(session, campaign_id: int, generation_id: int, committee_id: int,
                  frames: list[MDFrame]) -> None:
    for frame in frames:
        trusted = frame.status == FrameStatus.TRUSTED
        (structure_id,) = storage.add_structures(
            session, campaign_id, [frame.to_atoms()],
            source=StructureSource.MD if trusted else StructureSource.REJECTED,
            generation_id=generation_id, sampler="md", replica=frame.replica,
            temperature_K=frame.temperature_K, md_step=frame.step,
            bias_energy_eV=frame.bias_energy_eV if frame.bias else None,
            bias_cvs=[np.asarray(frame.cvs, dtype=np.float64)] if frame.bias == "metad" else None)
        storage.add_score(session, structure_id, committee_id,
                          energy_mean_eV=_storable(frame.potential_energy_eV),
                          energy_dev=_storable(frame.energy_dev), max_force_dev=_storable(frame.max_force_dev),
                          dipole_dev=frame.dipole_dev,
                          decision=None if trusted else Decision.REJECTED,
                          reason=None if trusted else f"{frame.status.value}: {frame.reason}")


def _storable(value: float) -> float:
    """A score of a failed frame may be NaN, which SQLite stores as NULL (refused: the
    columns are NOT NULL); it is stored as +inf instead, beyond any trust threshold."""
    return value if not math.isnan(value) else math.inf
