"""Where a replica goes on next generation: its newest frame, unless that frame fails the
selection's sanity filters. A committee with a hole can pull a hot replica's molecule
apart while its members agree; every later frame of that replica is then filtered out
by the bond-graph check, so going on from the fragments wastes the replica for the rest
of the campaign (a MACE campaign at 1200 K: 833 of its 1000 frames per generation), and
going on from its last intact frame sends it back into the hole with the momenta that
took it there (another: seven generations in a row, all 1000 frames broken each). Such a
replica starts again at the reference geometry with fresh velocities."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from flows import storage
from flows.campaign import open_campaign
from flows.steps import exploration
from flows.storage import StructureSource

from .conftest import write_campaign


class _Committee:
    """What the explore step asks of the committee before its MD: where it runs."""

    def __init__(self) -> None:
        self.devices: list[str] = []

    def to(self, device: str) -> "_Committee":
        self.devices.append(device)
        return self


def _water(seed: int, broken: bool = False):
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(seed).normal(0, 0.02, atoms.positions.shape)
    if broken:
        atoms.positions[1] += [2.5, 0.0, 0.0]  # an O-H bond gone, no atoms too close
    atoms.set_momenta(np.random.default_rng(100 + seed).normal(0, 1.0, (3, 3)))
    return atoms


@pytest.fixture()
def ctx(tmp_path):
    ctx = open_campaign(write_campaign(tmp_path, name="replica-start"))
    with storage.transaction(ctx.engine) as session:
        storage.add_structures(session, ctx.campaign_id, [molecule("H2O")], source=StructureSource.INITIAL,
                               sampler="reference-geometry")
    return ctx


def _store(ctx, frames, replica: int) -> None:
    with storage.transaction(ctx.engine) as session:
        storage.add_structures(session, ctx.campaign_id, frames, source=StructureSource.MD, replica=replica)


def test_the_newest_frame_of_each_replica_with_its_momenta(ctx) -> None:
    frames = [_water(i) for i in range(3)]
    _store(ctx, frames[:2], replica=0)
    _store(ctx, frames[2:], replica=1)
    _store(ctx, [_water(9)], replica=0)  # stored later: replica 0's newest
    with storage.reading(ctx.engine) as session:
        points = storage.last_md_frames(session, ctx.campaign_id, 3)
    np.testing.assert_array_equal(points[0].positions, _water(9).positions)
    np.testing.assert_array_equal(points[0].get_momenta(), _water(9).get_momenta())
    np.testing.assert_array_equal(points[1].positions, frames[2].positions)
    assert points[2] is None


def test_a_replica_that_came_apart_starts_again_at_the_reference(ctx, monkeypatch, caplog) -> None:
    """The explore step judges each replica's newest frame with the selection's sanity
    filters (bond graph of the reference, closest distance): an intact one is the start,
    with its momenta; a broken one sends the replica back to the reference geometry with
    fresh velocities, not to its last intact frame (the hole's entrance)."""
    intact = _water(0)
    _store(ctx, [_water(4), intact], replica=0)
    _store(ctx, [_water(5), _water(1, broken=True), _water(2, broken=True)], replica=1)
    started = {}

    class Stop(Exception):
        pass

    def run_md(committee, replicas, **kw):
        started["replicas"] = replicas
        raise Stop

    committee = _Committee()
    monkeypatch.setattr(exploration, "load_latest", lambda ctx: (1, committee))
    monkeypatch.setattr(exploration, "run_md", run_md)
    with pytest.raises(Stop), caplog.at_level("WARNING"):
        exploration.explore(ctx, 1)
    first, second = started["replicas"]
    np.testing.assert_array_equal(first.atoms.positions, intact.positions)
    assert first.velocities_from_atoms
    np.testing.assert_allclose(second.atoms.positions, molecule("H2O").positions)
    assert not second.velocities_from_atoms
    assert "replica 1 came apart in its last generation" in caplog.text and "replica 0" not in caplog.text
    assert committee.devices == ["cpu"]  # [explore] device, default [train] device


def test_with_bond_changes_allowed_the_fragments_are_a_start(tmp_path, monkeypatch) -> None:
    path = write_campaign(tmp_path, name="bonds-allowed")
    path.write_text(path.read_text().replace("[select]\n", "[select]\nallow_bond_changes = true\n"))
    ctx = open_campaign(path)
    with storage.transaction(ctx.engine) as session:
        storage.add_structures(session, ctx.campaign_id, [molecule("H2O")], source=StructureSource.INITIAL,
                               sampler="reference-geometry")
    broken = _water(1, broken=True)
    _store(ctx, [_water(0), broken], replica=0)
    started = {}

    def run_md(committee, replicas, **kw):
        started["replicas"] = replicas
        raise RuntimeError("stop")

    monkeypatch.setattr(exploration, "load_latest", lambda ctx: (1, _Committee()))
    monkeypatch.setattr(exploration, "run_md", run_md)
    with pytest.raises(RuntimeError, match="stop"):
        exploration.explore(ctx, 1)
    np.testing.assert_array_equal(started["replicas"][0].atoms.positions, broken.positions)


def test_break_precursors_are_one_per_replica_before_its_longest_break(tmp_path) -> None:
    """Frames of three replicas interleaved by id: replica 0 breaks for two frames (after its
    frame at index 2), comes back and breaks for one (after 7): one precursor, before the
    longer break; replica 2 flickers for one frame, then breaks for two (after 12): its
    precursor is before the later, longer break; replica 1 never breaks; a production frame
    is never a precursor."""
    from types import SimpleNamespace

    from flows.config import load_config
    from flows.steps.selection import break_precursors

    sel = load_config(write_campaign(tmp_path, name="precursors")).select
    plan = [(0, False), (1, False), (0, False), (1, False), (0, True), (0, True), (1, False), (0, False),
            (0, True), (None, True), (2, False), (2, True), (2, False), (2, True), (2, True), (0, False)]
    frames = [_water(i, broken=broken) for i, (_, broken) in enumerate(plan)]
    rows = [(SimpleNamespace(replica=replica), None) for replica, _ in plan]
    production = np.array([replica is None for replica, _ in plan])
    out = break_precursors(rows, frames, production, molecule("H2O"), sel)
    assert np.flatnonzero(out).tolist() == [2, 12]
    # a tie between two breaks of one length: the earliest
    tie = [(0, False), (0, True), (0, False), (0, True)]
    out = break_precursors([(SimpleNamespace(replica=r), None) for r, _ in tie],
                           [_water(i, broken=b) for i, (_, b) in enumerate(tie)],
                           np.zeros(len(tie), dtype=bool), molecule("H2O"), sel)
    assert np.flatnonzero(out).tolist() == [0]
    # bonds allowed to change: only collisions count, and these fragments do not collide
    allowed = sel.model_copy(update={"allow_bond_changes": True})
    assert not break_precursors(rows, frames, production, molecule("H2O"), allowed).any()


def _stretched_water(length_A: float):
    atoms = molecule("H2O")
    atoms.set_distance(0, 1, length_A, fix=0)
    return atoms


def test_bond_scale_moves_the_wall_a_precursor_and_a_restart_stand_on(tmp_path) -> None:
    """O-H stretched to 1.3 Å: broken at the default bond_scale 1.2 (cutoff 1.16 Å), intact
    at 1.5 (1.46 Å). A replica going 0.97 -> 1.3 -> 3.4 Å: its precursor is the 0.97 Å frame
    by default and the stretched frame on the dissociation's wall at 1.5; that frame is
    also a start for the next generation at 1.5 and not at 1.2."""
    from types import SimpleNamespace

    from flows.config import load_config
    from flows.steps.selection import break_precursors, passes_filters

    sel = load_config(write_campaign(tmp_path, name="bond-scale")).select
    assert sel.bond_scale == 1.2
    wide = sel.model_copy(update={"bond_scale": 1.5})
    frames = [_stretched_water(length) for length in (0.97, 1.3, 3.4)]
    rows = [(SimpleNamespace(replica=0), None)] * 3
    production = np.zeros(3, dtype=bool)
    reference = molecule("H2O")
    assert [passes_filters(f, reference, sel) for f in frames] == [True, False, False]
    assert [passes_filters(f, reference, wide) for f in frames] == [True, True, False]
    assert np.flatnonzero(break_precursors(rows, frames, production, reference, sel)).tolist() == [0]
    assert np.flatnonzero(break_precursors(rows, frames, production, reference, wide)).tolist() == [1]
