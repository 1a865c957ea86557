"""Which explored frames go to the expensive reference: trust window, sanity, diversity.

The funnel for one generation, each step a public function testable on its own:

1. :func:`classify_trust` — the trust window on ``max_force_dev`` (eV/Å):
   ``accurate`` / ``candidate`` / ``rejected``.
2. :func:`nnp_core.sanity.check_frame` — sanity filters on every frame not rejected
   (finite values, minimum distance, bond graph unchanged from the replica's start):
   ``filtered``, whatever its score (a molecule the committee pulled apart while its
   members agree is a hole, not an accurate frame); then, with an adaptive lower edge
   (:func:`adapt_trust_lo`, DP-GEN's ``model_devi_adapt_trust_lo``), the most uncertain
   sane accurate frames become candidates when the window holds fewer sane frames than a
   generation may select.
3. :func:`find_duplicates` — exact duplicates by :func:`nnp_core.structures.frame_hash`,
   within the batch and against labelled frames: ``duplicate``.
4. :func:`farthest_point_sampling` — diverse subset on descriptor fingerprints, with
   labelled frames counted as already chosen, up to a cap: ``selected``; candidates
   left over keep the decision ``candidate``. A reserved share of the cap may go first
   to frames of a given subset (the hottest replicas') even below trust_lo, and the
   rest of the cap may be split evenly over strata (the exploration temperatures).

:func:`select_frames` runs the whole funnel and returns one :class:`FrameDecision`
(index, decision, reason) per frame, ready to store; ``SelectionResult.counts()`` adds
up to the number of frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from ase import Atoms

from nnp_core.sanity import DEFAULT_BOND_SCALE, DEFAULT_MIN_DISTANCE_A, check_frame
from nnp_core.structures import frame_hash

#: labelled fingerprints are compared in blocks of this many rows (bounds memory)
DISTANCE_BLOCK_ROWS = 4096


class Decision(StrEnum):
    """Final fate of an explored frame in one generation's selection."""

    ACCURATE = "accurate"  # every score below its trust_lo and sane: the committee agrees
    CANDIDATE = "candidate"  # in the trust window, sane and unique, not picked (cap)
    REJECTED = "rejected"  # a score at or above its trust_hi (or non-finite)
    FILTERED = "filtered"  # not rejected but failed a sanity filter (any score below trust_hi)
    DUPLICATE = "duplicate"  # same structure as an earlier frame or a labelled one
    SELECTED = "selected"  # picked by diversity selection: goes to the reference


@dataclass(frozen=True)
class FrameDecision:
    """Decision for frame ``index`` of the batch, with a human-readable reason."""

    index: int
    decision: Decision
    reason: str


@dataclass(frozen=True)
class FpsResult:
    """Farthest-point picks: positions into the candidate array, in picking order.

    ``distances[k]`` is the standardised distance from pick k to the nearest point
    already chosen (labelled or earlier pick) at the time it was picked; ``inf`` for
    a first pick made with nothing labelled.
    """

    indices: np.ndarray
    distances: np.ndarray


@dataclass(frozen=True)
class SelectionResult:
    """Per-frame decisions of :func:`select_frames`, in frame order."""

    decisions: tuple[FrameDecision, ...]

    def counts(self) -> dict[str, int]:
        """Frames per decision; every Decision is a key and the values add up to N."""
        counts = {decision.value: 0 for decision in Decision}
        for item in self.decisions:
            counts[item.decision.value] += 1
        return counts

    def funnel(self) -> dict[str, int]:
        """Cumulative stages: explored ⊇ in_window ⊇ sane ⊇ unique ⊇ selected."""
        c = self.counts()
        unique = c[Decision.CANDIDATE] + c[Decision.SELECTED]
        sane = unique + c[Decision.DUPLICATE]
        in_window = sane + c[Decision.FILTERED]
        return {
            "explored": len(self.decisions),
            "in_window": in_window,
            "sane": sane,
            "unique": unique,
            "selected": c[Decision.SELECTED],
        }

    def indices(self, decision: Decision) -> np.ndarray:
        """Frame indices with the given decision, ascending."""
        return np.array([d.index for d in self.decisions if d.decision == decision], dtype=int)

    @property
    def selected_indices(self) -> np.ndarray:
        return self.indices(Decision.SELECTED)


# --------------------------------------------------------------------------- window


def _check_window(lo: float, hi: float) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or lo >= hi:
        raise ValueError(f"max_force_dev window needs 0 <= lo < hi (finite), got lo={lo}, hi={hi}")


def _scores(values: np.ndarray | Sequence[float], name: str, n: int | None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        expected = "(n_frames,)" if n is None else f"({n},)"
        raise ValueError(f"{name} has shape {array.shape}; expected {expected}")
    return array


def classify_trust(
    max_force_dev: np.ndarray | Sequence[float],
    *,
    trust_lo_eV_A: float,
    trust_hi_eV_A: float,
) -> list[FrameDecision]:
    """Trust-window decision per frame: ``accurate``, ``candidate`` or ``rejected``.

    The window on ``max_force_dev`` (eV/Å, as defined in docs/architecture.md) is half-open,
    [lo, hi): below lo is trusted, inside is uncertain, at or above hi (or non-finite)
    is beyond trust. (A second, optional window on ``energy_dev`` was removed: no
    campaign setting reached it.)

    Raises:
        ValueError: a window without 0 <= lo < hi, a score array that is not 1-D.
    """
    _check_window(trust_lo_eV_A, trust_hi_eV_A)
    force = _scores(max_force_dev, "max_force_dev", None)
    return [_classify_one(index, float(value), trust_lo_eV_A, trust_hi_eV_A) for index, value in enumerate(force)]


def _classify_one(index: int, value: float, lo: float, hi: float) -> FrameDecision:
    if not np.isfinite(value):
        return FrameDecision(index, Decision.REJECTED, f"non-finite max_force_dev ({value})")
    if value >= hi:
        return FrameDecision(index, Decision.REJECTED, f"max_force_dev {value:.3g} eV/Å >= trust_hi {hi:.3g} eV/Å")
    if value >= lo:
        return FrameDecision(index, Decision.CANDIDATE, f"max_force_dev {value:.3g} eV/Å in [{lo:.3g}, {hi:.3g}) eV/Å")
    return FrameDecision(index, Decision.ACCURATE, f"max_force_dev {value:.3g} eV/Å < trust_lo {lo:.3g} eV/Å")


def adapt_trust_lo(decisions: list[FrameDecision], max_force_dev: np.ndarray, n_candidates: int) -> float | None:
    """Lower the trust window's lower edge until ``n_candidates`` frames are candidates.

    A committee that has learnt its own dynamics puts nearly every frame below a fixed
    trust_lo, and a campaign would stop learning while its errors are still well above
    target. When fewer than ``n_candidates`` frames lie in the window, the accurate
    frames with the largest ``max_force_dev`` become candidates (in place), as many as
    are missing; rejected frames stay rejected. Returns the new lower edge (the smallest
    promoted ``max_force_dev``), or None when nothing was promoted.
    """
    have = sum(d.decision == Decision.CANDIDATE for d in decisions)
    accurate = [d.index for d in decisions if d.decision == Decision.ACCURATE]
    missing = int(n_candidates) - have
    if missing <= 0 or not accurate:
        return None
    promoted = sorted(accurate, key=lambda i: (-max_force_dev[i], i))[:missing]
    edge = float(max_force_dev[promoted[-1]])
    for index in promoted:
        decisions[index] = FrameDecision(
            index, Decision.CANDIDATE,
            f"{decisions[index].reason}; adaptive trust_lo {edge:.3g} eV/Å: among the "
            f"{len(promoted)} most uncertain accurate frames ({have} in the window)")
    return edge


# ------------------------------------------------------------------------ diversity


def find_duplicates(
    hashes: Sequence[str],
    *,
    labelled_hashes: Iterable[str] = (),
    frame_indices: Sequence[int] | None = None,
) -> list[str | None]:
    """Per hash, a reason if it is a duplicate, else None.

    The first occurrence within the batch is kept; later ones are "duplicate of frame
    k" (k from ``frame_indices``, default positions). Any hash in ``labelled_hashes``
    is "already labelled", including its first occurrence.
    """
    indices = list(range(len(hashes))) if frame_indices is None else list(frame_indices)
    if len(indices) != len(hashes):
        raise ValueError(f"{len(hashes)} hashes but {len(indices)} frame_indices")
    labelled = set(labelled_hashes)
    first_seen: dict[str, int] = {}
    reasons: list[str | None] = []
    for index, digest in zip(indices, hashes):
        if digest in labelled:
            reasons.append(f"already labelled (hash {digest[:12]})")
        elif digest in first_seen:
            reasons.append(f"duplicate of frame {first_seen[digest]} in this batch")
        else:
            first_seen[digest] = index
            reasons.append(None)
    return reasons


def fingerprint_scale(*fingerprint_sets: np.ndarray | None) -> np.ndarray:
    """Per-dimension standard deviation (ddof=0) over all given rows; 0 becomes 1.

    This is the default scale of :func:`farthest_point_sampling`: every descriptor
    dimension weighs the same, and constant dimensions contribute no distance.
    """
    rows = [f for f in fingerprint_sets if f is not None and len(f)]
    if not rows:
        raise ValueError("fingerprint_scale needs at least one fingerprint row")
    stacked = np.vstack(rows)
    scale = stacked.std(axis=0)
    return np.where(scale > 0.0, scale, 1.0)


def _fingerprints(values: np.ndarray | Sequence, name: str, dim: int | None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        expected = "(n, D)" if dim is None else f"(n, {dim})"
        raise ValueError(f"{name} has shape {array.shape}; expected {expected}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values")
    return array


def _min_distance_to(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each row of ``points``, the Euclidean distance to its nearest row of ``others``.

    Uses |a − b|² = |a|² + |b|² − 2a·b in blocks of rows of ``others``, so memory is
    (len(points) × DISTANCE_BLOCK_ROWS) floats whatever the fingerprint dimension.
    """
    nearest = np.full(points.shape[0], np.inf)
    squared_norms = np.einsum("ij,ij->i", points, points)
    for start in range(0, others.shape[0], DISTANCE_BLOCK_ROWS):
        block = others[start : start + DISTANCE_BLOCK_ROWS]
        squared = (
            squared_norms[:, None]
            + np.einsum("ij,ij->i", block, block)[None, :]
            - 2.0 * points @ block.T
        )
        nearest = np.minimum(nearest, np.sqrt(np.maximum(squared, 0.0)).min(axis=1))
    return nearest


def farthest_point_sampling(
    fingerprints: np.ndarray,
    *,
    n_select: int,
    labelled_fingerprints: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    start_scores: np.ndarray | None = None,
) -> FpsResult:
    """Greedy farthest-point picks from ``fingerprints`` (B, D), labelled rows pre-chosen.

    Distances are Euclidean on ``fingerprint / scale``; ``scale`` (D,) defaults to
    :func:`fingerprint_scale` over candidates and labelled rows together. Each step
    picks the candidate farthest from everything chosen so far (labelled rows count
    as chosen). With nothing labelled the first pick is the highest ``start_scores``
    (default: candidate 0). Ties go to the lowest index; the result is deterministic.

    Raises:
        ValueError: non-2-D or non-finite fingerprints, mismatched D, negative
            ``n_select``, a scale with a non-positive entry, start_scores of wrong length.
    """
    points = _fingerprints(fingerprints, "fingerprints", None)
    labelled = None
    if labelled_fingerprints is not None and len(labelled_fingerprints):
        labelled = _fingerprints(labelled_fingerprints, "labelled_fingerprints", points.shape[1])
    if int(n_select) != n_select or n_select < 0:
        raise ValueError(f"n_select must be a non-negative integer, got {n_select}")
    n_pick = min(int(n_select), points.shape[0])
    if n_pick == 0:
        return FpsResult(np.zeros(0, dtype=int), np.zeros(0))
    scale = fingerprint_scale(points, labelled) if scale is None else np.asarray(scale, float)
    if scale.shape != (points.shape[1],) or not np.all(np.isfinite(scale) & (scale > 0.0)):
        raise ValueError(f"scale must be {points.shape[1]} positive finite values")
    points = points / scale
    first = 0
    if start_scores is not None:
        start = _scores(start_scores, "start_scores", points.shape[0])
        first = int(np.argmax(np.nan_to_num(start, nan=-np.inf)))
    if labelled is not None:
        first = None  # the labelled rows are the start
        nearest = _min_distance_to(points, labelled / scale)
    else:
        nearest = np.full(points.shape[0], np.inf)
    picks, pick_distances = [], []
    available = np.ones(points.shape[0], dtype=bool)
    for step in range(n_pick):
        if step == 0 and first is not None:
            pick = first
        else:
            pick = int(np.argmax(np.where(available, nearest, -np.inf)))
        picks.append(pick)
        pick_distances.append(float(nearest[pick]))
        available[pick] = False
        nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
    return FpsResult(np.array(picks, dtype=int), np.array(pick_distances))


# ----------------------------------------------------------------------- entry point


def select_frames(
    frames: Sequence[Atoms],
    max_force_dev: np.ndarray | Sequence[float],
    *,
    trust_lo_eV_A: float,
    trust_hi_eV_A: float,
    fingerprints: np.ndarray,
    reference_structures: Atoms | Sequence[Atoms] | None,
    max_selected: int,
    labelled_fingerprints: np.ndarray | None = None,
    labelled_hashes: Iterable[str] = (),
    min_distance_A: float = DEFAULT_MIN_DISTANCE_A,
    bond_scale: float = DEFAULT_BOND_SCALE,
    allow_bond_changes: bool = False,
    energies_eV: np.ndarray | Sequence[float] | None = None,
    scale: np.ndarray | None = None,
    adaptive_trust_lo: bool = False,
    reserved: np.ndarray | Sequence[bool] | None = None,
    n_reserved: int = 0,
    precursors: np.ndarray | Sequence[bool] | None = None,
    strata: np.ndarray | Sequence[float] | None = None,
) -> SelectionResult:
    """Run the whole selection funnel on one generation's explored frames.

    Order: :func:`classify_trust` → sanity (:func:`check_frame`, plus a finite
    fingerprint) on every frame not rejected (a broken frame below trust_lo is
    ``filtered``, not ``accurate``) → :func:`adapt_trust_lo` up to ``max_selected``
    candidates if ``adaptive_trust_lo`` → :func:`find_duplicates` by :func:`frame_hash`
    (within the batch and against ``labelled_hashes``) → :func:`farthest_point_sampling`
    on ``fingerprints`` (B, D) with ``labelled_fingerprints`` counted as chosen, the
    first pick (if nothing is labelled) being the highest ``max_force_dev``, up to
    ``max_selected`` picks. ``reference_structures`` (one Atoms for all frames, or one
    per frame: the replica's start) define the bond graph a frame must keep unless
    ``allow_bond_changes``; then it may be None. ``energies_eV`` (per frame, eV) are
    checked for finiteness only. ``scale`` (D,) standardises fingerprints for FPS
    (default: :func:`fingerprint_scale` of the unique candidates and labelled rows).

    **Reserved share**: with ``reserved`` (a per-frame mask, e.g. the hottest replicas'
    frames) and ``n_reserved`` > 0, up to ``n_reserved`` of the ``max_selected`` picks
    are made first among the reserved frames, *including those below trust_lo*
    (frames past trust_hi stay rejected), after the same sanity and duplicate filters,
    by farthest-point sampling from the labelled frames; the remaining picks are made
    as without it, the reserved picks counted as chosen. A committee that is
    confidently wrong in a region (its members agree on the same extrapolation) never
    puts that region's frames in the window; the reserve labels some of them anyway.
    Reserved frames that were below trust_lo and are not picked stay ``accurate`` (the
    sanity filters ran before: a hot replica that came apart is ``filtered``).

    **Bond-break precursors**: ``precursors`` (a per-frame mask: the last sane frame of a
    replica before its molecule came apart, found by the caller) are candidates whatever
    their max_force_dev below trust_hi and are picked before anything else (all of them
    that pass the filters, up to ``max_selected``, most distant first). A committee with a
    hole pulls a hot replica apart while its members agree; the broken frames fail the
    bond-graph filter, so without this the hole's entrance is never labelled.

    **Strata**: ``strata`` (per frame a number naming its stratum, e.g. the temperature of
    the replica that made it; NaN: none) splits the picks left after the precursors and
    the reserve evenly over the strata present in the batch, the remainder to the
    highest-valued strata; each stratum's quota is filled by farthest-point sampling among
    its own candidates (everything picked so far counted as chosen), highest stratum
    first. A stratum whose window holds fewer sane frames than ceil(max_selected / number
    of strata) has its most uncertain sane frames below trust_lo made candidates for its
    own quota (not picked: ``accurate`` again, as for the reserve). Quota a stratum cannot
    fill, and frames of no stratum, go to the open picks that follow. Without it every
    open pick follows the largest distances, which in a generation with hot replicas are
    nearly all theirs: the colder replicas' frames (where a biased replica crosses a
    barrier at a temperature a user runs at) are never labelled.

    Raises:
        ValueError: array lengths that differ from ``len(frames)``, bad windows (see
            :func:`classify_trust`), negative ``max_selected``, missing references
            when bond changes are not allowed, frames whose atoms differ from their
            reference, labelled fingerprints of another dimension.
    """
    n_frames = len(frames)
    force = _scores(max_force_dev, "max_force_dev", n_frames)
    prints = np.asarray(fingerprints, dtype=np.float64)
    if prints.ndim != 2 or prints.shape[0] != n_frames:
        raise ValueError(f"fingerprints has shape {prints.shape}; expected ({n_frames}, D)")
    energies = None if energies_eV is None else _scores(energies_eV, "energies_eV", n_frames)
    if int(max_selected) != max_selected or max_selected < 0:
        raise ValueError(f"max_selected must be a non-negative integer, got {max_selected}")
    references = _per_frame_references(
        reference_structures, n_frames, allow_bond_changes=allow_bond_changes
    )
    decisions = classify_trust(force, trust_lo_eV_A=trust_lo_eV_A, trust_hi_eV_A=trust_hi_eV_A)
    kept = [d.index for d in decisions if d.decision != Decision.REJECTED]
    sanity = [
        check_frame(
            frames[i],
            reference=references[i],
            energy_eV=None if energies is None else energies[i],
            min_distance_A=min_distance_A,
            bond_scale=bond_scale,
        )
        or (None if np.all(np.isfinite(prints[i])) else "non-finite fingerprint")
        for i in kept
    ]
    for index, reason in zip(kept, sanity):  # a broken molecule is never "accurate", whatever its score
        if reason is not None and decisions[index].decision == Decision.ACCURATE:
            decisions[index] = FrameDecision(index, Decision.FILTERED, f"{reason} ({decisions[index].reason})")
        elif reason is not None:
            decisions[index] = FrameDecision(index, Decision.FILTERED, reason)
    if adaptive_trust_lo:
        adapt_trust_lo(decisions, force, int(max_selected))
    n_reserved = min(int(n_reserved), int(max_selected))
    mask = _reserved_mask(reserved, n_frames, n_reserved)
    before_break = _reserved_mask(precursors, n_frames, 1, "precursors")
    stratum, levels = _strata(strata, n_frames)
    accurate_reasons = {d.index: d.reason for d in decisions
                        if (mask[d.index] or before_break[d.index]) and d.decision == Decision.ACCURATE}
    for index, reason in accurate_reasons.items():
        why = "the last sane frame before a bond broke" if before_break[index] else "in the reserved share"
        decisions[index] = FrameDecision(index, Decision.CANDIDATE, f"{reason}; {why}")
    promoted = _promote_per_stratum(decisions, force, stratum, levels, int(max_selected))
    sane = [d.index for d in decisions if d.decision == Decision.CANDIDATE]
    hashes = [frame_hash(frames[i]) for i in sane]
    duplicates = find_duplicates(hashes, labelled_hashes=labelled_hashes, frame_indices=sane)
    unique = _mark(decisions, sane, Decision.DUPLICATE, duplicates)
    if unique and scale is None and (mask.any() or before_break.any() or levels):  # one scale for every pass
        scale = fingerprint_scale(prints[unique], labelled_fingerprints)
    first = _apply_diversity(
        decisions, [i for i in unique if before_break[i]], prints, force, max_selected=int(max_selected),
        labelled_fingerprints=labelled_fingerprints, scale=scale, what="bond-break precursor",
        note_leftovers=False) if before_break.any() else []
    chosen = _with_rows(labelled_fingerprints, prints[first])
    picked = first + (_apply_diversity(
        decisions, [i for i in unique if mask[i] and decisions[i].decision == Decision.CANDIDATE], prints, force,
        max_selected=min(n_reserved, int(max_selected) - len(first)), labelled_fingerprints=chosen, scale=scale,
        what="reserved-share pick", note_leftovers=False) if mask.any() and len(first) < max_selected else [])
    open_frames = [i for i in unique if i not in accurate_reasons and decisions[i].decision == Decision.CANDIDATE]
    n_open = int(max_selected) - len(picked)
    for level, quota in zip(levels, _quotas(n_open, len(levels))):
        own = [i for i in open_frames if stratum[i] == level]
        chosen = _with_rows(labelled_fingerprints, prints[picked])
        picked += _apply_diversity(decisions, own, prints, force, max_selected=quota, labelled_fingerprints=chosen,
                                   scale=scale, what=f"stratum {level:g} pick", note_leftovers=False)
    chosen = _with_rows(labelled_fingerprints, prints[picked])
    _apply_diversity(
        decisions,
        [i for i in open_frames if i not in promoted and decisions[i].decision == Decision.CANDIDATE],
        prints,
        force,
        max_selected=int(max_selected) - len(picked),
        labelled_fingerprints=chosen,
        scale=scale,
    )
    for index, reason in accurate_reasons.items():  # below trust_lo, sane and not picked: still accurate
        if decisions[index].decision != Decision.SELECTED:
            share = "bond-break precursors" if before_break[index] else "reserved share"
            decisions[index] = FrameDecision(index, Decision.ACCURATE, f"{reason}; not picked for the {share}")
    for index, reason in promoted.items():
        if decisions[index].decision != Decision.SELECTED:
            decisions[index] = FrameDecision(
                index, Decision.ACCURATE, f"{reason}; not picked for stratum {stratum[index]:g}'s quota")
    return SelectionResult(tuple(decisions))


def _strata(strata: np.ndarray | Sequence[float] | None, n_frames: int) -> tuple[np.ndarray, list[float]]:
    """Per frame its stratum (NaN: none) and the strata present, highest first."""
    if strata is None:
        return np.full(n_frames, np.nan), []
    values = np.asarray(strata, dtype=np.float64)
    if values.shape != (n_frames,) or np.isinf(values).any():
        raise ValueError(f"strata must be {n_frames} finite numbers or NaN, got shape {values.shape}")
    return values, sorted({float(v) for v in values[np.isfinite(values)]}, reverse=True)


def _quotas(n_picks: int, n_strata: int) -> list[int]:
    """``n_picks`` split evenly over ``n_strata`` (highest first), the remainder to the first."""
    if n_strata == 0 or n_picks <= 0:
        return [0] * n_strata
    base, extra = divmod(n_picks, n_strata)
    return [base + (k < extra) for k in range(n_strata)]


def _promote_per_stratum(decisions: list[FrameDecision], force: np.ndarray, stratum: np.ndarray,
                         levels: list[float], max_selected: int) -> dict[int, str]:
    """Make the most uncertain sane accurate frames of each stratum whose window holds fewer
    than ceil(max_selected / len(levels)) candidates candidates for its quota; returns their
    former reasons by index."""
    promoted: dict[int, str] = {}
    if not levels or max_selected == 0:
        return promoted
    want = -(-max_selected // len(levels))
    for level in levels:
        own = [d for d in decisions if stratum[d.index] == level]
        missing = want - sum(d.decision == Decision.CANDIDATE for d in own)
        accurate = sorted((d for d in own if d.decision == Decision.ACCURATE), key=lambda d: -force[d.index])
        for d in accurate[:max(missing, 0)]:
            promoted[d.index] = d.reason
            decisions[d.index] = FrameDecision(
                d.index, Decision.CANDIDATE, f"{d.reason}; among stratum {level:g}'s {want} most uncertain")
    return promoted


def _reserved_mask(reserved: np.ndarray | Sequence[bool] | None, n_frames: int, n_reserved: int,
                   name: str = "reserved") -> np.ndarray:
    """The frames eligible for the reserved share (none when ``n_reserved`` is 0)."""
    if n_reserved < 0:
        raise ValueError(f"n_reserved must be a non-negative integer, got {n_reserved}")
    if reserved is None or n_reserved == 0:
        return np.zeros(n_frames, dtype=bool)
    mask = np.asarray(reserved)
    if mask.shape != (n_frames,) or mask.dtype != bool:
        raise ValueError(f"{name} must be {n_frames} booleans, got {mask.dtype} of shape {mask.shape}")
    return mask


def _with_rows(labelled: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """Labelled fingerprints with ``rows`` (picks made in an earlier pass) appended."""
    if not len(rows):
        return labelled
    if labelled is None or not len(labelled):
        return rows
    return np.concatenate([np.asarray(labelled, dtype=np.float64), rows])


def _mark(
    decisions: list[FrameDecision],
    indices: list[int],
    decision: Decision,
    reasons: list[str | None],
) -> list[int]:
    """Give ``decision`` to the frames with a reason; return the indices without one."""
    for index, reason in zip(indices, reasons):
        if reason is not None:
            decisions[index] = FrameDecision(index, decision, reason)
    return [index for index, reason in zip(indices, reasons) if reason is None]


def _per_frame_references(
    references: Atoms | Sequence[Atoms] | None, n_frames: int, *, allow_bond_changes: bool
) -> list[Atoms | None]:
    """Per frame, the structure whose bond graph it must keep (None: no check)."""
    if allow_bond_changes:
        return [None] * n_frames
    if references is None:
        raise ValueError("reference_structures are required unless allow_bond_changes=True")
    if isinstance(references, Atoms):
        return [references] * n_frames
    references = list(references)
    if len(references) != n_frames:
        raise ValueError(f"{len(references)} reference_structures for {n_frames} frames")
    return references


def _apply_diversity(
    decisions: list[FrameDecision],
    unique: list[int],
    prints: np.ndarray,
    force: np.ndarray,
    *,
    max_selected: int,
    labelled_fingerprints: np.ndarray | None,
    scale: np.ndarray | None,
    what: str = "FPS pick",
    note_leftovers: bool = True,
) -> list[int]:
    """Mark FPS picks among ``unique`` as selected (returned, in pick order); annotate
    the rest as left over (unless not ``note_leftovers``: they compete again)."""
    if not unique:
        return []
    picks = farthest_point_sampling(
        prints[unique],
        n_select=max_selected,
        labelled_fingerprints=labelled_fingerprints,
        scale=scale,
        start_scores=force[unique],
    )
    for rank, (position, distance) in enumerate(zip(picks.indices, picks.distances), start=1):
        index = unique[int(position)]
        how = "highest max_force_dev" if np.isinf(distance) else f"distance {distance:.3g}"
        reason = f"{decisions[index].reason}; {what} {rank}/{len(picks.indices)} ({how})"
        decisions[index] = FrameDecision(index, Decision.SELECTED, reason)
    for index in unique if note_leftovers else ():
        if decisions[index].decision == Decision.CANDIDATE:
            reason = f"{decisions[index].reason}; not selected: cap of {max_selected} reached"
            decisions[index] = FrameDecision(index, Decision.CANDIDATE, reason)
    return [unique[int(position)] for position in picks.indices]
