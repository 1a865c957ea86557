"""Select: sort a generation's explored frames into the trust window, filter them for
sanity and duplicates, pick a diverse subset and queue it for labelling."""

from __future__ import annotations

import logging
import time

import numpy as np

from flows import storage
from flows.pipeline import finishing
from flows.steps.decide import budget_left
from flows.steps.training import load_latest
from flows.storage import Decision, StructureSource

log = logging.getLogger(__name__)


def select_candidates(ctx, generation_index: int) -> dict[str, int]:
    """Diversity selection among this generation's MD frames (``nnp_core.selection.
    select_frames``); writes each frame's decision and queues the selected ones.

    Already-labelled frames count as chosen in the farthest-point sampling and as
    duplicates by their stored content hashes.

    Production frames (``alflow md --feed-back``, sampler ``storage.PRODUCTION_SAMPLER``)
    join the generation's explored frames. They were stored *because* they reached
    ``trust_lo``, and those beyond ``trust_hi`` are exactly the ones a user of the
    potential needs labelled, so for them ``trust_hi`` is infinite: a finite score at or
    above ``trust_hi`` is passed to the funnel just below it (``_judged_deviations``), the
    frame is a candidate and goes through the same sanity filters, duplicate check,
    farthest-point sampling and cap as every other; its reason keeps its true score.
    (Explored frames beyond ``trust_hi`` stay rejected: the MD engine already judged them.)
    Production frames the latest committee has not scored (fed back before a newer
    committee was trained) are scored by it first. They count in the generation's
    selection counts, so a generation they joined has a lower accurate fraction.

    Under a label budget (``[loop] max_labels``) the generation picks at most what is
    left of it (the hot share's reserved picks first, as always). With ``[select] stratify
    = "temperature"`` the open picks are split evenly over the exploration temperatures
    (``select_frames``' strata)."""
    from nnp_core.selection import select_frames

    start = time.perf_counter()
    sel = ctx.config.select
    committee_id, committee = load_latest(ctx)
    with finishing(ctx, generation_index, "select", start) as (session, generation):
        left = budget_left(session, ctx)
        cap = sel.max_selected_per_generation if left is None else min(sel.max_selected_per_generation, left)
        _score_production_frames(session, generation.id, committee_id, committee)
        rows = storage.scored_frames(session, generation.id, committee_id)
        counts = {d.value: 0 for d in Decision}
        if rows:
            frames = [storage.atoms_from_structure(s) for s, _ in rows]
            labelled = storage.labelled_structures(session, ctx.campaign_id)
            labelled_atoms = [storage.atoms_from_structure(s) for s in labelled]
            scores = np.array([sc.max_force_dev for _, sc in rows])
            production = np.array([s.sampler == storage.PRODUCTION_SAMPLER for s, _ in rows])
            dipole_devs = np.array([np.nan if sc.dipole_dev is None else sc.dipole_dev for _, sc in rows])
            judged = _judged_deviations(scores, production, sel.trust_hi_eV_A, dipole_devs, sel.dipole_weight)
            reference = storage.reference_structure(session, ctx.campaign_id)
            temperatures = _exploration_temperatures(rows, production)
            hot = temperatures >= max(ctx.config.explore.temperatures_K)  # NaN (no replica) is never hot
            result = select_frames(
                frames, judged,
                trust_lo_eV_A=sel.trust_lo_eV_A, trust_hi_eV_A=sel.trust_hi_eV_A,
                fingerprints=committee.fingerprints(frames),
                reference_structures=reference,
                labelled_fingerprints=committee.fingerprints(labelled_atoms) if labelled_atoms else None,
                labelled_hashes=[s.content_hash for s in labelled],
                max_selected=cap, min_distance_A=sel.min_distance_A,
                allow_bond_changes=sel.allow_bond_changes, bond_scale=sel.bond_scale,
                adaptive_trust_lo=sel.adaptive_trust_lo,
                reserved=hot, n_reserved=min(round(sel.hot_share * sel.max_selected_per_generation), cap),
                precursors=(break_precursors(rows, frames, production, reference, sel)
                            if sel.break_precursors else None),
                energies_eV=np.array([sc.energy_mean_eV for _, sc in rows]),
                strata=temperatures if sel.stratify == "temperature" else None)
            for (_, score), item, true, used in zip(rows, result.decisions, scores, judged):
                reason = item.reason if not used < true else (
                    f"production MD frame, max_force_dev {true:.3g} eV/Å >= trust_hi {sel.trust_hi_eV_A:.3g} eV/Å "
                    f"judged just below it: {item.reason}")
                if used > true:
                    reason = (f"{item.reason} (judged on max_force_dev {true:.3g} + dipole_weight x dipole_dev "
                              f"{score.dipole_dev:.3g} e·Å)")
                score.decision, score.reason = Decision(item.decision), reason
            storage.enqueue_labels(session, [rows[i][0].id for i in result.selected_indices])
            counts.update(result.counts())
        counts[Decision.REJECTED.value] += storage.count_structures(session, generation.id, StructureSource.REJECTED)
        storage.record_selection(generation, counts)
    log.info("generation %d selection: %s", generation_index, counts)
    return counts


def _exploration_temperatures(rows, production: np.ndarray) -> np.ndarray:
    """Per frame the temperature (K) of the replica that explored it; NaN for production
    frames and frames without one (never in the hot share, no stratum: the open picks)."""
    return np.array([np.nan if is_production or s.temperature_K is None else float(s.temperature_K)
                     for (s, _), is_production in zip(rows, production)])


def passes_filters(atoms, reference, sel) -> bool:
    """Whether a frame passes the selection's sanity filters: closest distance
    ``sel.min_distance_A`` and, unless ``sel.allow_bond_changes``, the bond graph of
    ``reference`` at ``sel.bond_scale`` (``nnp_core.sanity.check_frame``)."""
    from nnp_core.sanity import check_frame

    bonds_from = None if sel.allow_bond_changes else reference
    return check_frame(atoms, reference=bonds_from, min_distance_A=sel.min_distance_A,
                       bond_scale=sel.bond_scale) is None


def break_precursors(rows, frames, production: np.ndarray, reference, sel) -> np.ndarray:
    """Per frame: is it its replica's bond-break precursor this generation? A replica's
    precursor is its last sane frame (bond graph of ``reference`` at ``sel.bond_scale``
    unless ``sel.allow_bond_changes``, closest distance ``sel.min_distance_A``) before the longest
    run of frames that fail the sanity filters (the earliest such run on a tie): at most
    one per replica per generation, the entrance to where it came apart. A hot bond that
    flickers across the bond cutoff and back crosses it many times; each crossing is not
    a new hole. Frames of one replica are in time order by id; production frames are
    never precursors."""
    sane = np.array([passes_filters(atoms, reference, sel) for atoms in frames])
    out = np.zeros(len(frames), dtype=bool)
    previous: dict[int, int] = {}  # replica -> index of its latest frame so far
    entrance: dict[int, int] = {}  # replica -> precursor of its current broken run
    run: dict[int, int] = {}  # replica -> length of its current broken run
    best: dict[int, tuple[int, int]] = {}  # replica -> (longest run, its precursor)
    for i, (structure, _) in enumerate(rows):
        replica = structure.replica
        if production[i] or replica is None:
            continue
        j = previous.get(replica)
        if not sane[i] and j is not None and sane[j]:
            entrance[replica], run[replica] = j, 0
        if not sane[i] and replica in entrance:
            run[replica] += 1
            if run[replica] > best.get(replica, (0, -1))[0]:
                best[replica] = (run[replica], entrance[replica])
        previous[replica] = i
    for _, index in best.values():
        out[index] = True
    return out


def _judged_deviations(max_force_dev: np.ndarray, production: np.ndarray, trust_hi: float,
                       dipole_dev: np.ndarray | None = None, dipole_weight: float = 0.0) -> np.ndarray:
    """The scores the selection judges: production frames' finite scores at or above
    ``trust_hi`` become the largest float below it (a candidate, never rejected); every
    other score as stored (a non-finite one stays rejected). With ``dipole_weight`` a
    frame below ``trust_hi`` is judged on max_force_dev + dipole_weight·dipole_dev
    (an unknown dipole_dev adds nothing), capped just below ``trust_hi``: an uncertain
    dipole makes a frame a candidate sooner and ranks it higher, never rejects it."""
    judged = max_force_dev
    below = np.isfinite(max_force_dev) & (max_force_dev < trust_hi)
    if dipole_weight and dipole_dev is not None:
        raised = np.minimum(max_force_dev + dipole_weight * np.nan_to_num(dipole_dev, nan=0.0),
                            np.nextafter(trust_hi, 0.0))
        judged = np.where(below, raised, max_force_dev)
    beyond = production & np.isfinite(max_force_dev) & (max_force_dev >= trust_hi)
    return np.where(beyond, np.nextafter(trust_hi, 0.0), judged)


def _score_production_frames(session, generation_id: int, committee_id: int, committee) -> None:
    """Scores by ``committee`` for this generation's production frames it has not scored."""
    structures = storage.frames_without_score(session, generation_id, committee_id,
                                              sampler=storage.PRODUCTION_SAMPLER)
    if not structures:
        return
    prediction = committee.predict([storage.atoms_from_structure(s) for s in structures])
    dipole_devs = prediction.dipole_dev if prediction.dipole_dev is not None else [None] * len(structures)
    for structure, energy, energy_dev, deviation, dipole_dev in zip(
            structures, prediction.energy_mean, prediction.energy_dev, prediction.max_force_dev, dipole_devs):
        storage.add_score(session, structure.id, committee_id, energy_mean_eV=float(energy),
                          energy_dev=float(energy_dev), max_force_dev=float(deviation), decision=None,
                          dipole_dev=None if dipole_dev is None else float(dipole_dev))
    session.flush()
