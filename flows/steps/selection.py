"""Select: sort a generation's explored frames into the trust window, filter them for
sanity and duplicates, pick a diverse subset and queue it for labelling."""

from __future__ import annotations

import logging
import time

import numpy as np

from flows import storage
from flows.pipeline import finishing
from flows.steps.training import load_latest
from flows.storage import Decision, StructureSource

log = logging.getLogger(__name__)


def select_candidates(ctx, generation_index: int) -> dict[str, int]:
    """Diversity selection among this generation's MD frames (``nnp_core.selection.
    select_frames``); writes each frame's decision and queues the selected ones.

    Already-labelled frames count as chosen in the farthest-point sampling and as
    duplicates by their stored content hashes."""
    from nnp_core.selection import select_frames

    start = time.perf_counter()
    sel = ctx.config.select
    committee_id, committee = load_latest(ctx)
    with finishing(ctx, generation_index, "select", start) as (session, generation):
        rows = storage.scored_frames(session, generation.id, committee_id)
        counts = {d.value: 0 for d in Decision}
        if rows:
            frames = [storage.atoms_from_structure(s) for s, _ in rows]
            labelled = storage.labelled_structures(session, ctx.campaign_id)
            labelled_atoms = [storage.atoms_from_structure(s) for s in labelled]
            result = select_frames(
                frames, np.array([sc.max_force_dev for _, sc in rows]),
                trust_lo_eV_A=sel.trust_lo_eV_A, trust_hi_eV_A=sel.trust_hi_eV_A,
                fingerprints=committee.fingerprints(frames),
                reference_structures=storage.reference_structure(session, ctx.campaign_id),
                labelled_fingerprints=committee.fingerprints(labelled_atoms) if labelled_atoms else None,
                labelled_hashes=[s.content_hash for s in labelled],
                max_selected=sel.max_selected_per_generation, min_distance_A=sel.min_distance_A,
                allow_bond_changes=sel.allow_bond_changes, adaptive_trust_lo=sel.adaptive_trust_lo,
                energies_eV=np.array([sc.energy_mean_eV for _, sc in rows]))
            for (_, score), item in zip(rows, result.decisions):
                score.decision, score.reason = Decision(item.decision), item.reason
            storage.enqueue_labels(session, [rows[i][0].id for i in result.selected_indices])
            counts.update(result.counts())
        counts[Decision.REJECTED.value] += storage.count_structures(session, generation.id, StructureSource.REJECTED)
        storage.record_selection(generation, counts)
    log.info("generation %d selection: %s", generation_index, counts)
    return counts
