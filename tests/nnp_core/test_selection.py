"""Selection funnel: trust window, sanity filters, duplicates, farthest-point sampling."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

import nnp_core.selection as selection
from nnp_core.sanity import (
    bond_graph,
    check_bond_graph,
    check_finite,
    check_frame,
    check_min_distance,
)
from nnp_core.selection import (
    Decision,
    classify_trust,
    farthest_point_sampling,
    find_duplicates,
    fingerprint_scale,
    select_frames,
)
from nnp_core.structures import frame_hash

LO, HI = 0.05, 0.5  # eV/Å

# ase molecule('CH3CH2OH'): C0 methyl, C1 methylene, O2, H3 on O, H4/H5 on C1, H6-H8 on C0
C_METHYL, C_ALPHA, OXYGEN, H_HYDROXYL, H_METHYL = 0, 1, 2, 3, 6


@pytest.fixture
def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def _jiggled(atoms: Atoms, n: int, seed: int = 0, scale_A: float = 0.02) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        frame = atoms.copy()
        frame.positions += rng.normal(scale=scale_A, size=frame.positions.shape)
        frames.append(frame)
    return frames


def _break_c_o_bond(frame: Atoms, extra_A: float = 1.0) -> None:
    """Move the OH group ``extra_A`` further from C1 along the C1-O2 bond."""
    direction = frame.positions[OXYGEN] - frame.positions[C_ALPHA]
    frame.positions[[OXYGEN, H_HYDROXYL]] += extra_A * direction / np.linalg.norm(direction)


def _decisions(result) -> list[Decision]:
    return [d.decision for d in result.decisions]


# ------------------------------------------------------------------------ window


def test_trust_window_edges():
    scores = [0.0, LO - 1e-9, LO, 0.2, HI - 1e-9, HI, 3.0, np.nan, np.inf]
    got = [d.decision for d in classify_trust(scores, trust_lo_eV_A=LO, trust_hi_eV_A=HI)]
    A, C, R = Decision.ACCURATE, Decision.CANDIDATE, Decision.REJECTED
    assert got == [A, A, C, C, C, R, R, R, R]
    reasons = classify_trust(scores, trust_lo_eV_A=LO, trust_hi_eV_A=HI)
    assert reasons[5].reason == "max_force_dev 0.5 eV/Å >= trust_hi 0.5 eV/Å"
    assert "non-finite max_force_dev" in reasons[7].reason
    assert [d.index for d in reasons] == list(range(len(scores)))


def test_adaptive_trust_lo_fills_the_generation_with_the_most_uncertain_accurate_frames(ethanol):
    """With a near-empty window the most uncertain accurate frames (never rejected ones)
    become candidates up to the cap; a full window is left exactly as it was."""
    frames = _jiggled(ethanol, 8)
    force = np.array([0.01, 0.04, 0.03, 0.2, 0.9, 0.045, 0.02, 0.6])  # one in [LO, HI), two beyond
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=np.arange(16.0).reshape(8, 2),
                  reference_structures=ethanol, max_selected=3)
    fixed = select_frames(frames, force, **common)
    assert fixed.selected_indices.tolist() == [3]
    adaptive = select_frames(frames, force, adaptive_trust_lo=True, **common)
    assert sorted(adaptive.selected_indices.tolist()) == [1, 3, 5]  # 0.2, then 0.045 and 0.04
    assert [adaptive.decisions[i].decision for i in (4, 7)] == [Decision.REJECTED] * 2
    assert [adaptive.decisions[i].decision for i in (0, 2, 6)] == [Decision.ACCURATE] * 3
    assert "adaptive trust_lo 0.04 eV/Å: among the 2 most uncertain accurate frames (1 in the window)" in (
        adaptive.decisions[1].reason)
    # the sanity filters run first: a broken accurate frame is filtered (not promoted, and
    # not counted accurate), and the next most uncertain sane one takes its place
    frames[5].positions[H_METHYL] = frames[5].positions[C_METHYL] + [0.3, 0.0, 0.0]
    filtered = select_frames(frames, force, adaptive_trust_lo=True, **common)
    assert filtered.decisions[5].decision == Decision.FILTERED
    assert "(max_force_dev 0.045 eV/Å < trust_lo" in filtered.decisions[5].reason
    assert sorted(filtered.selected_indices.tolist()) == [1, 2, 3]
    assert select_frames(frames, force, **common).decisions[5].decision == Decision.FILTERED
    # enough frames in the window: nothing is promoted
    busy = np.where(force < LO, force, 0.3)
    assert select_frames(frames, busy, adaptive_trust_lo=True, **common).counts() == (
        select_frames(frames, busy, **common).counts())
    decisions = classify_trust(force, trust_lo_eV_A=LO, trust_hi_eV_A=HI)
    assert selection.adapt_trust_lo(decisions, force, 1) is None  # the window already holds one
    assert selection.adapt_trust_lo(decisions, force, 20) == pytest.approx(0.01)  # every accurate frame


def test_reserved_share_picks_hot_frames_below_trust_lo_first(ethanol):
    """Frames 0-3 are the hottest replicas' (all below trust_lo but frame 3, past trust_hi);
    two of four picks go to them by diversity, the other two to the window's frames as
    without a reserve, counting the reserved picks as chosen."""
    frames = _jiggled(ethanol, 8)
    force = np.array([0.01, 0.02, 0.03, 0.9, 0.2, 0.3, 0.25, 0.04])
    prints = np.array([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [9.0, 9.0],
                       [0.0, 5.0], [0.1, 5.0], [5.0, 6.0], [2.0, 2.0]])
    hot = np.array([True, True, True, True, False, False, False, False])
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=prints, reference_structures=ethanol,
                  max_selected=4)
    plain = select_frames(frames, force, **common)
    assert sorted(plain.selected_indices.tolist()) == [4, 5, 6]  # the window holds three
    result = select_frames(frames, force, reserved=hot, n_reserved=2, **common)
    picks = result.selected_indices.tolist()
    # with nothing labelled the reserve starts at the highest max_force_dev of the sane hot
    # frames below trust_hi (frame 2, 0.03 eV/Å), then takes the farthest from it (frame 1)
    assert {1, 2} <= set(picks)
    assert "reserved-share pick 1/2 (highest max_force_dev)" in result.decisions[2].reason
    assert "in the reserved share; reserved-share pick 2/2" in result.decisions[1].reason
    # the window's two picks count the reserved ones as chosen: frame 6, then one of the
    # twins 4 and 5 (the other is left over at the cap)
    assert "FPS pick 1/2" in result.decisions[6].reason
    assert len(picks) == 4 and len(set(picks) & {4, 5}) == 1
    left = ({4, 5} - set(picks)).pop()
    assert result.decisions[left].decision == Decision.CANDIDATE
    assert "not selected: cap of 2 reached" in result.decisions[left].reason
    # a hot frame below trust_lo that was not picked stays accurate; past trust_hi stays rejected
    assert result.decisions[0].decision == Decision.ACCURATE
    assert "not picked for the reserved share" in result.decisions[0].reason
    assert result.decisions[3].decision == Decision.REJECTED
    assert result.decisions[7].decision == Decision.ACCURATE and "reserved" not in result.decisions[7].reason
    assert sum(result.counts().values()) == len(frames)
    # no reserve (n_reserved 0, or no mask): exactly the plain selection
    for kwargs in (dict(reserved=hot, n_reserved=0), dict(reserved=None, n_reserved=3)):
        assert select_frames(frames, force, **kwargs, **common).decisions == plain.decisions


def test_reserved_share_keeps_the_sanity_filters_and_the_cap(ethanol):
    frames = _jiggled(ethanol, 6)
    _break_c_o_bond(frames[0])
    force = np.array([0.01, 0.01, 0.02, 0.2, 0.3, 0.25])
    hot = np.array([True, True, True, False, False, False])
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=np.arange(12.0).reshape(6, 2),
                  reference_structures=ethanol, reserved=hot)
    result = select_frames(frames, force, n_reserved=3, max_selected=3, **common)
    # the broken frame is never picked, and is filtered (below trust_lo or not: a hot
    # replica that came apart must not count as accurate)
    assert 0 not in result.selected_indices.tolist()
    assert result.decisions[0].decision == Decision.FILTERED
    assert select_frames(frames, force, n_reserved=0, max_selected=3, **common).decisions[0].decision \
        == Decision.FILTERED
    assert sorted(result.selected_indices.tolist()) == [1, 2, 5]  # two sane hot frames, then the window
    # a reserve larger than the cap is cut to it
    assert len(select_frames(frames, force, n_reserved=9, max_selected=2, **common).selected_indices) == 2
    with pytest.raises(ValueError, match="reserved must be 6 booleans"):
        select_frames(frames, force, n_reserved=1, max_selected=2, **{**common, "reserved": [1, 0, 0, 0, 0, 0]})
    with pytest.raises(ValueError, match="n_reserved must be a non-negative integer"):
        select_frames(frames, force, n_reserved=-1, max_selected=2, **common)


def test_strata_split_the_picks_over_temperatures_even_below_trust_lo(ethanol):
    """Frames 0-3 come from 1200 K replicas (all in the window), 4-6 from 700 K (one in it),
    7-9 from 300 K (all below trust_lo), 10 has no stratum. Plain selection takes 4 of 6
    picks from the 1200 K frames; with strata each temperature gets 2 picks, the 300 K
    stratum its most uncertain frames below trust_lo, and the unpicked ones stay accurate."""
    frames = _jiggled(ethanol, 11)
    force = np.array([0.40, 0.35, 0.30, 0.45, 0.20, 0.03, 0.02, 0.04, 0.01, 0.03, 0.01])
    prints = np.array([[9.0, 9.0], [9.0, 0.0], [0.0, 9.0], [5.0, 5.0], [4.0, 4.0], [1.0, 1.0], [1.0, 2.0],
                       [2.0, 1.0], [2.0, 2.0], [3.0, 3.0], [6.0, 6.0]])
    temperatures = np.array([1200.0] * 4 + [700.0] * 3 + [300.0] * 3 + [np.nan])
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=prints, reference_structures=ethanol,
                  max_selected=6)
    plain = select_frames(frames, force, **common)
    assert sorted(plain.selected_indices.tolist()) == [0, 1, 2, 3, 4]  # the window holds five
    result = select_frames(frames, force, strata=temperatures, **common)
    picks = result.selected_indices.tolist()
    assert len(picks) == 6
    by_temperature = {t: sorted(i for i in picks if temperatures[i] == t) for t in (1200.0, 700.0, 300.0)}
    assert {t: len(v) for t, v in by_temperature.items()} == {1200.0: 2, 700.0: 2, 300.0: 2}
    # 700 K: its window frame and its most uncertain frame below trust_lo (0.03, not 0.02);
    # 300 K: ceil(6 / 3) = 2 most uncertain (0.04 and 0.03), never frame 8 (0.01)
    assert by_temperature[700.0] == [4, 5] and by_temperature[300.0] == [7, 9]
    assert "among stratum 300's 2 most uncertain; stratum 300 pick" in result.decisions[7].reason
    assert "stratum 1200 pick 1/2 (highest max_force_dev)" in result.decisions[3].reason
    # promoted but not picked: accurate again; frames without a stratum are never promoted
    assert result.decisions[6].decision == Decision.ACCURATE
    assert result.decisions[8].decision == Decision.ACCURATE and "most uncertain" not in result.decisions[8].reason
    assert result.decisions[10].decision == Decision.ACCURATE
    left = [i for i in (0, 1, 2, 3) if i not in picks]
    assert all(result.decisions[i].decision == Decision.CANDIDATE for i in left)
    assert sum(result.counts().values()) == len(frames)
    # 7 picks: the remainder goes to the hottest stratum
    seven = select_frames(frames, force, strata=temperatures, **{**common, "max_selected": 7})
    assert sum(temperatures[i] == 1200.0 for i in seven.selected_indices) == 3
    # a stratum that cannot fill its quota gives it back to the open picks: two strata of
    # quota 4, the 700 K one has 3 sane frames, its fourth pick goes to the window frame of no
    # stratum (10); the 300 K frames, now of no stratum and below trust_lo, stay accurate
    two, hot_open = temperatures.copy(), force.copy()
    two[7:10], hot_open[10] = np.nan, 0.3
    result = select_frames(frames, hot_open, strata=two, **{**common, "max_selected": 8})
    assert sorted(result.selected_indices.tolist()) == [0, 1, 2, 3, 4, 5, 6, 10]
    assert "FPS pick 1/1" in result.decisions[10].reason
    # no strata (None, or all NaN): exactly the plain selection
    for strata in (None, np.full(11, np.nan)):
        assert select_frames(frames, force, strata=strata, **common).decisions == plain.decisions
    with pytest.raises(ValueError, match="strata must be 11 finite numbers or NaN"):
        select_frames(frames, force, strata=temperatures[:5], **common)


def test_strata_come_after_the_precursors_and_the_reserve(ethanol):
    """Precursor first, then the reserve, then the rest split over the strata."""
    frames = _jiggled(ethanol, 8)
    force = np.array([0.01, 0.3, 0.25, 0.2, 0.02, 0.03, 0.01, 0.02])
    prints = np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0], [9.0, 9.0], [3.0, 3.0], [4.0, 4.0], [5.0, 0.0],
                       [0.0, 5.0]])
    temperatures = np.array([1200.0, 1200.0, 1200.0, 1200.0, 300.0, 300.0, 300.0, 300.0])
    before = np.array([False, False, False, False, False, False, True, False])
    hot = temperatures == 1200.0
    result = select_frames(frames, force, trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=prints,
                           reference_structures=ethanol, max_selected=5, precursors=before, reserved=hot,
                           n_reserved=1, strata=temperatures)
    reasons = {i: result.decisions[i].reason for i in result.selected_indices.tolist()}
    assert "bond-break precursor 1/1" in reasons[6]
    assert sum("reserved-share pick" in r for r in reasons.values()) == 1
    # 3 picks left: 2 to the 1200 K stratum, 1 to the 300 K one (its most uncertain, 0.03)
    assert sum("stratum 1200 pick" in r for r in reasons.values()) == 2
    assert [i for i, r in reasons.items() if "stratum 300 pick" in r] == [5]
    assert len(reasons) == 5


def test_bond_break_precursors_are_picked_first_even_below_trust_lo(ethanol):
    """Frame 1 is the last sane frame before a replica came apart (frames 2-3 broken, in the
    window but filtered); it is picked first though the committee calls it accurate, the
    reserve and the window fill the rest of the cap, and a precursor that is past
    trust_hi or a duplicate of a labelled frame is not labelled."""
    frames = _jiggled(ethanol, 7)
    for i in (2, 3):
        _break_c_o_bond(frames[i])
    force = np.array([0.01, 0.02, 0.3, 0.3, 0.2, 0.25, 0.9])
    prints = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 5.0], [5.0, 5.0], [9.0, 9.0]])
    before = np.array([False, True, False, False, False, False, True])
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=prints, reference_structures=ethanol)
    plain = select_frames(frames, force, max_selected=2, **common)
    assert sorted(plain.selected_indices.tolist()) == [4, 5] and plain.decisions[1].decision == Decision.ACCURATE
    assert plain.decisions[2].decision == Decision.FILTERED  # the broken frames never reach the reference
    result = select_frames(frames, force, max_selected=2, precursors=before, **common)
    assert 1 in result.selected_indices.tolist()
    assert "the last sane frame before a bond broke; bond-break precursor 1/1" in result.decisions[1].reason
    assert len(result.selected_indices) == 2 and "cap of 1 reached" in " ".join(d.reason for d in result.decisions)
    assert result.decisions[6].decision == Decision.REJECTED  # past trust_hi: the MD engine's judgement stands
    # with a reserve, the precursor comes first and the reserve gets what is left of the cap
    hot = np.array([True, True, False, False, False, False, False])
    both = select_frames(frames, force, max_selected=2, precursors=before, reserved=hot, n_reserved=2, **common)
    assert sorted(both.selected_indices.tolist()) == [0, 1]
    assert "bond-break precursor 1/1" in both.decisions[1].reason
    assert "reserved-share pick 1/1" in both.decisions[0].reason
    # already labelled: a duplicate, not picked, and called accurate again as before
    labelled = select_frames(frames, force, max_selected=2, precursors=before,
                             labelled_hashes=[frame_hash(frames[1])], **common)
    assert 1 not in labelled.selected_indices.tolist()
    assert labelled.decisions[1].decision == Decision.ACCURATE
    assert "not picked for the bond-break precursors" in labelled.decisions[1].reason
    # no precursors: exactly the plain selection
    assert select_frames(frames, force, max_selected=2, precursors=np.zeros(7, bool), **common).decisions \
        == plain.decisions
    with pytest.raises(ValueError, match="precursors must be 7 booleans"):
        select_frames(frames, force, max_selected=2, precursors=[0, 1, 0, 0, 0, 0, 0], **common)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(trust_lo_eV_A=0.5, trust_hi_eV_A=0.5), "lo < hi"),
        (dict(trust_lo_eV_A=-0.1, trust_hi_eV_A=0.5), "lo < hi"),
        (dict(trust_lo_eV_A=0.1, trust_hi_eV_A=np.nan), "lo < hi"),
    ],
)
def test_bad_windows_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classify_trust([0.1, 0.2], **kwargs)


def test_scores_must_be_one_dimensional():
    with pytest.raises(ValueError, match="max_force_dev has shape"):
        classify_trust(np.zeros((2, 2)), trust_lo_eV_A=LO, trust_hi_eV_A=HI)


# ----------------------------------------------------------------------- filters


def test_min_distance_filter(ethanol):
    assert check_min_distance(ethanol, min_distance_A=0.6) is None
    squeezed = Atoms("OH", positions=[[0, 0, 0], [0.41, 0, 0]])
    assert (
        check_min_distance(squeezed, min_distance_A=0.6) == "min_distance 0.41 Å < 0.60 Å (O0-H1)"
    )
    assert check_min_distance(squeezed, min_distance_A=0.4) is None
    # periodic images count: 0.1 Å apart across the cell face
    periodic = Atoms("H2", positions=[[0.05, 1, 1], [4.95, 1, 1]], cell=[5, 5, 5], pbc=True)
    assert "min_distance 0.10 Å" in check_min_distance(periodic, min_distance_A=0.6)
    with pytest.raises(ValueError, match="min_distance_A"):
        check_min_distance(squeezed, min_distance_A=-1.0)


def test_stretched_bond_breaks_graph(ethanol):
    stretched = ethanol.copy()
    _break_c_o_bond(stretched)
    assert check_bond_graph(stretched, ethanol) == "bond graph changed: C1-O2 broken"
    assert check_frame(stretched, reference=None) is None  # bond changes allowed
    assert "C1-O2 broken" in check_frame(stretched, reference=ethanol)


def test_new_bond_forming_is_reported(ethanol):
    hopped = ethanol.copy()
    # a methyl hydrogen moves to 1.0 Å from the oxygen, away from its carbon
    towards = hopped.positions[OXYGEN] - hopped.positions[C_METHYL]
    hopped.positions[H_METHYL] = hopped.positions[OXYGEN] + 1.0 * towards / np.linalg.norm(towards)
    reason = check_bond_graph(hopped, ethanol)
    assert reason.startswith("bond graph changed: ")
    assert "C0-H6 broken" in reason and "O2-H6 formed" in reason
    assert (OXYGEN, H_METHYL) in bond_graph(hopped) and (OXYGEN, H_METHYL) not in bond_graph(
        ethanol
    )


def test_bond_graph_needs_matching_atoms(ethanol):
    with pytest.raises(ValueError, match="differ in atoms"):
        check_bond_graph(molecule("H2O"), ethanol)
    with pytest.raises(ValueError, match="bond_scale"):
        bond_graph(ethanol, bond_scale=0.0)


def test_non_finite_filter(ethanol):
    assert check_finite(ethanol, energy_eV=-10.0) is None
    assert check_finite(ethanol, energy_eV=np.nan) == "non-finite energy (nan)"
    broken = ethanol.copy()
    broken.positions[OXYGEN, 1] = np.nan
    assert check_finite(broken) == "non-finite positions (1 atom(s), first O2)"
    # non-finite ends the check before distances are computed
    assert check_frame(broken, reference=ethanol) == "non-finite positions (1 atom(s), first O2)"


# --------------------------------------------------------------------- diversity


def test_find_duplicates_within_batch_and_against_labelled():
    reasons = find_duplicates(
        ["a", "b", "a", "c", "b"], labelled_hashes={"c"}, frame_indices=[10, 11, 12, 13, 14]
    )
    assert reasons[0] is None and reasons[1] is None
    assert reasons[2] == "duplicate of frame 10 in this batch"
    assert reasons[3].startswith("already labelled")
    assert reasons[4] == "duplicate of frame 11 in this batch"
    with pytest.raises(ValueError, match="frame_indices"):
        find_duplicates(["a"], frame_indices=[0, 1])


def test_fps_on_a_line_picks_extremes_first():
    line = np.arange(11, dtype=float)[:, None]  # 0, 1, ..., 10
    start_at_zero = np.zeros(11)
    start_at_zero[0] = 1.0
    picks = farthest_point_sampling(line, n_select=3, start_scores=start_at_zero)
    assert picks.indices.tolist() == [0, 10, 5]
    assert np.isinf(picks.distances[0])
    np.testing.assert_allclose(picks.distances[1:] * line.std(), [10.0, 5.0])
    # without scores the start is candidate 0; from the middle it goes to an end next
    assert farthest_point_sampling(line, n_select=2).indices.tolist() == [0, 10]
    middle = -np.abs(np.arange(11) - 5.0)
    assert farthest_point_sampling(line, n_select=3, start_scores=middle).indices.tolist() == [
        5,
        0,
        10,
    ]


def test_fps_on_a_grid_takes_corners_before_centre():
    grid = np.array([[x, y] for x in range(3) for y in range(3)], dtype=float)
    picks = farthest_point_sampling(grid, n_select=4, start_scores=-np.arange(9.0)).indices.tolist()
    assert picks == [0, 8, 2, 6]  # (0,0) then (2,2), then the other two corners


def test_fps_cap_and_all():
    points = np.random.default_rng(0).normal(size=(6, 3))
    assert len(farthest_point_sampling(points, n_select=4).indices) == 4
    assert sorted(farthest_point_sampling(points, n_select=99).indices.tolist()) == list(range(6))
    assert farthest_point_sampling(points, n_select=0).indices.size == 0
    with pytest.raises(ValueError, match="n_select"):
        farthest_point_sampling(points, n_select=-1)


def test_labelled_fingerprints_steer_picks_away():
    near = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    far = np.array([[5.0, 5.0], [5.1, 5.0]])
    candidates = np.vstack([near, far])
    labelled = np.array([[0.05, 0.05], [-0.1, 0.0]])
    picks = farthest_point_sampling(
        candidates, n_select=2, labelled_fingerprints=labelled, start_scores=[9, 9, 9, 0, 0]
    )
    assert picks.indices[0] in (3, 4)  # labelled data already cover the near cluster
    assert np.isfinite(picks.distances[0])
    # nothing labelled: the start is the highest score, in the near cluster
    assert farthest_point_sampling(
        candidates, n_select=1, start_scores=[9, 0, 0, 0, 0]
    ).indices.tolist() == [0]


def test_standardisation_balances_dimensions():
    # dimension 0 spans 0..1000, dimension 1 spans 0..1: raw distances ignore dimension 1
    points = np.array([[0.0, 0.0], [1000.0, 0.0], [500.0, 1.0], [1000.0, 1.0]])
    raw = farthest_point_sampling(points, n_select=3, scale=np.ones(2)).indices.tolist()
    standardised = farthest_point_sampling(points, n_select=3).indices.tolist()
    assert raw == [0, 3, 2] and standardised == [0, 3, 1]
    np.testing.assert_allclose(fingerprint_scale(points), points.std(axis=0))
    np.testing.assert_allclose(fingerprint_scale(np.ones((3, 2))), [1.0, 1.0])
    with pytest.raises(ValueError, match="scale"):
        farthest_point_sampling(points, n_select=2, scale=np.array([1.0, 0.0]))


def test_distance_to_labelled_in_blocks_is_exact(monkeypatch):
    rng = np.random.default_rng(1)
    points, labelled = rng.normal(size=(7, 3)), rng.normal(size=(10, 3))
    brute = np.linalg.norm(points[:, None] - labelled[None], axis=-1).min(axis=1)
    monkeypatch.setattr(selection, "DISTANCE_BLOCK_ROWS", 3)
    np.testing.assert_allclose(selection._min_distance_to(points, labelled), brute)


def test_bad_fingerprints_raise():
    with pytest.raises(ValueError, match="fingerprints has shape"):
        farthest_point_sampling(np.zeros(4), n_select=1)
    with pytest.raises(ValueError, match="non-finite"):
        farthest_point_sampling(np.array([[0.0], [np.nan]]), n_select=1)
    with pytest.raises(ValueError, match="labelled_fingerprints has shape"):
        farthest_point_sampling(
            np.zeros((2, 3)), n_select=1, labelled_fingerprints=np.zeros((2, 4))
        )
    with pytest.raises(ValueError, match="start_scores has shape"):
        farthest_point_sampling(np.zeros((2, 3)), n_select=1, start_scores=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least one"):
        fingerprint_scale(None, np.zeros((0, 3)))


# ------------------------------------------------------------------- entry point


def _batch(ethanol: Atoms):
    """Twelve frames, one per funnel outcome (indices in the comments)."""
    frames = _jiggled(ethanol, 12)
    frames[4].positions[H_METHYL] = frames[4].positions[C_METHYL] + [0.3, 0.0, 0.0]  # too close
    _break_c_o_bond(frames[5])
    frames[6].positions[0, 0] = np.nan  # non-finite positions
    frames[8] = frames[7].copy()  # duplicate within the batch
    force = np.array([0.01, 0.6, 0.2, 0.3, 0.3, 0.3, 0.3, 0.25, 0.25, 0.3, 0.45, 0.1])
    fingerprints = np.array([[i, i % 3] for i in range(12)], dtype=float)
    return frames, force, fingerprints


def test_select_frames_funnel(ethanol):
    frames, force, fingerprints = _batch(ethanol)
    labelled = [frame_hash(frames[9])]  # frame 9 was labelled before
    result = select_frames(
        frames,
        force,
        trust_lo_eV_A=LO,
        trust_hi_eV_A=HI,
        fingerprints=fingerprints,
        reference_structures=ethanol,
        max_selected=2,
        labelled_hashes=labelled,
    )
    D = Decision
    expected = {
        0: D.ACCURATE,
        1: D.REJECTED,
        4: D.FILTERED,
        5: D.FILTERED,
        6: D.FILTERED,
        8: D.DUPLICATE,
        9: D.DUPLICATE,
    }
    for index, decision in expected.items():
        assert result.decisions[index].decision == decision, result.decisions[index]
    unique = [2, 3, 7, 10, 11]
    assert [result.decisions[i].decision for i in unique].count(D.SELECTED) == 2
    # nothing labelled in fingerprint space: start from the highest score (frame 10), then the
    # farthest fingerprint from it among the unique candidates (frame 2)
    assert result.selected_indices.tolist() == [2, 10]
    assert "FPS pick 1/2 (highest max_force_dev)" in result.decisions[10].reason
    assert "not selected: cap of 2 reached" in result.decisions[3].reason
    assert "min_distance 0.30 Å" in result.decisions[4].reason
    assert "C1-O2 broken" in result.decisions[5].reason
    assert "non-finite positions" in result.decisions[6].reason
    assert result.decisions[8].reason == "duplicate of frame 7 in this batch"
    assert result.decisions[9].reason.startswith("already labelled")
    counts = result.counts()
    assert counts == {
        "accurate": 1,
        "candidate": 3,
        "rejected": 1,
        "filtered": 3,
        "duplicate": 2,
        "selected": 2,
    }
    assert sum(counts.values()) == len(frames)
    assert result.funnel() == {
        "explored": 12,
        "in_window": 10,
        "sane": 7,
        "unique": 5,
        "selected": 2,
    }


def test_select_frames_labelled_fingerprints_steer_away(ethanol):
    frames, force, fingerprints = _batch(ethanol)
    kwargs = dict(
        trust_lo_eV_A=LO,
        trust_hi_eV_A=HI,
        fingerprints=fingerprints,
        reference_structures=ethanol,
        max_selected=1,
    )
    assert select_frames(frames, force, **kwargs).selected_indices.tolist() == [10]
    near_ten = np.array([[10.0, 1.0], [11.0, 2.0], [9.0, 0.0]])
    steered = select_frames(frames, force, labelled_fingerprints=near_ten, **kwargs)
    assert steered.selected_indices.tolist() == [2]


def test_select_frames_energy_and_fingerprint_filters(ethanol):
    frames = _jiggled(ethanol, 4)
    force = np.full(4, 0.2)
    fingerprints = np.arange(8.0).reshape(4, 2)
    fingerprints[3, 1] = np.nan
    energies = np.array([-1.0, np.inf, -1.0, -1.0])
    result = select_frames(
        frames,
        force,
        trust_lo_eV_A=LO,
        trust_hi_eV_A=HI,
        fingerprints=fingerprints,
        reference_structures=frames,
        max_selected=10,
        energies_eV=energies,
    )
    assert _decisions(result) == [
        Decision.SELECTED,
        Decision.FILTERED,
        Decision.SELECTED,
        Decision.FILTERED,
    ]
    assert result.decisions[1].reason == "non-finite energy (inf)"
    assert result.decisions[3].reason == "non-finite fingerprint"


def test_bond_scale_sets_where_a_stretched_bond_counts_as_broken(ethanol):
    """A methyl C-H stretched to 1.4 Å (hot MD reaches it; 1.2 x the covalent radii is
    1.28 Å) is filtered at the default scale and a candidate at 1.5 (cutoff 1.6 Å); at 1.8 Å
    it is broken at both."""
    frames = _jiggled(ethanol, 3)
    for frame, length in zip(frames[1:], (1.4, 1.8)):
        frame.set_distance(C_METHYL, H_METHYL, length, fix=0)
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=np.eye(3), max_selected=5,
                  reference_structures=ethanol)
    strict = select_frames(frames, [0.2, 0.2, 0.2], **common)
    assert _decisions(strict) == [Decision.SELECTED, Decision.FILTERED, Decision.FILTERED]
    assert strict.decisions[1].reason == "bond graph changed: C0-H6 broken"
    loose = select_frames(frames, [0.2, 0.2, 0.2], bond_scale=1.5, **common)
    assert _decisions(loose) == [Decision.SELECTED, Decision.SELECTED, Decision.FILTERED]


def test_select_frames_allows_bond_changes_when_asked(ethanol):
    frames = _jiggled(ethanol, 2)
    _break_c_o_bond(frames[1])
    common = dict(trust_lo_eV_A=LO, trust_hi_eV_A=HI, fingerprints=np.eye(2), max_selected=5)
    strict = select_frames(frames, [0.2, 0.2], reference_structures=[ethanol, ethanol], **common)
    assert _decisions(strict) == [Decision.SELECTED, Decision.FILTERED]
    loose = select_frames(
        frames, [0.2, 0.2], reference_structures=None, allow_bond_changes=True, **common
    )
    assert _decisions(loose) == [Decision.SELECTED, Decision.SELECTED]


def test_select_frames_with_no_candidates(ethanol):
    frames = _jiggled(ethanol, 3)
    result = select_frames(
        frames,
        [0.0, 0.01, 0.9],
        trust_lo_eV_A=LO,
        trust_hi_eV_A=HI,
        fingerprints=np.zeros((3, 2)),
        reference_structures=ethanol,
        max_selected=3,
    )
    assert _decisions(result) == [Decision.ACCURATE, Decision.ACCURATE, Decision.REJECTED]
    assert result.selected_indices.size == 0


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(max_force_dev=[0.1, 0.2]), "max_force_dev has shape"),
        (dict(fingerprints=np.zeros((2, 2))), "fingerprints has shape"),
        (dict(max_selected=-1), "max_selected"),
        (dict(reference_structures=None), "reference_structures are required"),
        (
            dict(reference_structures=[molecule("CH3CH2OH")] * 2),
            "2 reference_structures for 3 frames",
        ),
        (dict(energies_eV=[0.0]), "energies_eV has shape"),
    ],
)
def test_select_frames_bad_input_raises(ethanol, override, match):
    args = dict(
        max_force_dev=[0.1, 0.2, 0.3],
        trust_lo_eV_A=LO,
        trust_hi_eV_A=HI,
        fingerprints=np.zeros((3, 2)),
        reference_structures=ethanol,
        max_selected=1,
    )
    args.update(override)
    with pytest.raises(ValueError, match=match):
        select_frames(_jiggled(ethanol, 3), **args)
