"""``[explore] bias``: campaigns explore under UDD or metadynamics, frames carry their
bias, scores stay unbiased, hills persist across generations; bad settings are refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.active_learning import active_learning
from flows.campaign import open_campaign
from flows.config import ConfigError, load_config
from flows import report
from flows.status import exploration_torsions
from flows.storage import (CommitteeRow, Generation, LabelRow, ReplicaRun, Score, Structure, StructureSource,
                           atoms_from_structure)
from nnp_core.bias import dihedrals
from nnp_core.committee import load_committee

from .conftest import write_campaign

PEROXIDE = 'molecule = "H2O2"'


def _with_bias(path: Path, explore: str) -> Path:
    """``explore``'s lines added to [explore], from its first sub-table on appended."""
    keys, bracket, table = explore.partition("\n[")
    text = path.read_text().replace("[explore]\n", f"[explore]\n{keys}\n")
    path.write_text(text + ("\n[" + table + "\n" if bracket else ""))
    return path


def _campaign(tmp_path: Path, name: str, explore: str) -> Path:
    """The tiny campaign on hydrogen peroxide (one rotatable bond: H-O-O-H) with a bias."""
    path = write_campaign(tmp_path, name=name)
    path.write_text(path.read_text().replace('molecule = "H2O"', PEROXIDE))
    return _with_bias(path, explore)


def _md_frames(session) -> list[Structure]:
    """Every explored frame, trusted or beyond trust."""
    return list(session.scalars(select(Structure).where(
        Structure.source.in_([StructureSource.MD, StructureSource.REJECTED])).order_by(Structure.id)))


def test_a_metadynamics_campaign_stores_bias_and_keeps_its_hills(prefect_harness, tmp_path, monkeypatch) -> None:
    config = _campaign(tmp_path, "tiny-metad", 'bias = "metad"\nbeyond_trust = "continue"\n[explore.metad]\nheight_eV = 0.02\npace_steps = 2')
    active_learning(config_path=str(config))
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        frames = _md_frames(session)
        assert frames and all(f.bias_energy_eV is not None and f.bias_cvs.shape == (1,) for f in frames)
        # the stored CV is the H-O-O-H dihedral of the stored positions
        torsion = ctx.config.torsion_cvs().torsions
        for f in frames[:5]:
            angle = dihedrals(torch.as_tensor(f.positions), torsion).numpy()
            np.testing.assert_allclose(f.bias_cvs, angle, atol=1e-9)
        assert any(f.bias_energy_eV > 0 for f in frames)
        runs = session.execute(select(Generation.index, ReplicaRun).join(ReplicaRun)
                               .order_by(Generation.index, ReplicaRun.replica)).all()
        hills = {(index, run.replica): run.hills.reshape(-1, 2) for index, run in runs}
        one, two = sorted({index for index, _ in runs})
        for index, run in runs:  # a hill every 2 steps the replica completed (the tiny
            # committee may drive a replica apart early: a hill as soon as possible)
            completed = run.steps if run.stop == "completed" else run.steps - 1
            before = len(hills[(one, run.replica)]) if index == two else 0
            assert len(hills[(index, run.replica)]) - before == completed // 2
        for replica in range(2):  # the second generation went on filling the first one's
            first, second = hills[(one, replica)], hills[(two, replica)]
            np.testing.assert_array_equal(second[: len(first)], first)
        assert sum(len(h) for h in hills.values()) > 0
        # scores are the unbiased committee's: re-evaluate the last frame scored at a
        # scoring step (a replica that failed between them has an infinite score)
        scored = [(f, session.scalars(select(Score).where(Score.structure_id == f.id)).one()) for f in frames]
        frame, score = [(f, s) for f, s in scored if np.isfinite(s.max_force_dev)][-1]
        row = session.get(CommitteeRow, score.committee_id)
        prediction = load_committee(ctx.resolve(row.checkpoint_path)).predict(atoms_from_structure(frame))
        assert score.max_force_dev == pytest.approx(float(prediction.max_force_dev[0]), rel=1e-9)
        assert score.energy_mean_eV == pytest.approx(float(prediction.energy_mean[0]), rel=1e-12)
        info = atoms_from_structure(frame).info
        assert info["bias_energy_eV"] == frame.bias_energy_eV
        # the report's torsion map: every explored frame at its stored CV, every label marked
        points = exploration_torsions(session, ctx.campaign_id, torsion.numpy())
        explored = np.isfinite(points["temperature_K"])
        md = [f for f in frames if f.source == StructureSource.MD]
        np.testing.assert_allclose(np.sort(points["torsions_deg"][explored & ~points["labelled"], 0]), np.sort(
            [np.degrees(f.bias_cvs[0]) for f in md if f.label is None or f.label.status != "done"]), atol=1e-9)
        assert points["labelled"].sum() == session.scalar(
            select(func.count()).select_from(LabelRow).where(LabelRow.status == "done"))
        hills = [run.hills for _, run in runs if run.replica == 0][-1].reshape(-1, 2)  # the coldest: 300 K

    drawn = {}
    original = report.exploration_map_png
    monkeypatch.setattr(report, "exploration_map_png",
                        lambda points, names, free_energy=None: drawn.update(free_energy=free_energy, names=names)
                        or original(points, names, free_energy))
    path = report.write_report(ctx)
    assert (path.parent / report.MAP).stat().st_size > 0 and report.MAP in path.read_text()
    grid, energy, temperature = drawn["free_energy"]
    assert grid.shape == (360, 1) and temperature == 300.0 and drawn["names"] == ["H2-O0-O1-H3"]
    bias = ctx.config.exploration_bias()
    bias.set_hills(0, hills)
    np.testing.assert_allclose(energy, bias.free_energy(np.radians(grid), 0), rtol=1e-12)  # -g/(g-1) V


def test_the_report_draws_metadynamics_free_energy_only_from_hills_that_fit(tmp_path) -> None:
    """The coldest replica's hills give F = -g/(g-1) V on a 360-point torsion grid; hills
    stored for another number of torsions (the campaign file changed since), no hills, or
    no metadynamics draw no free energy instead of failing the report."""
    config = load_config(_campaign(tmp_path, "fes", 'bias = "metad"'))  # replicas at 300 and 600 K
    hills = np.array([[0.3, 0.02], [-1.0, 0.01]])
    grid, energy, temperature = report.metad_free_energy(config, [hills.ravel(), None])
    assert grid.shape == (360, 1) and temperature == 300.0
    bias = config.exploration_bias()
    bias.set_hills(0, hills)
    np.testing.assert_allclose(energy, bias.free_energy(np.radians(grid), 0), rtol=1e-12)
    assert energy.argmin() == np.argmin(np.abs(grid[:, 0] - np.degrees(0.3)))  # deepest where the big hill sits
    assert report.metad_free_energy(config, [np.ones(5), None]) is None  # 5 values: not (K, 2) hills
    assert report.metad_free_energy(config, [None, hills.ravel()]) is None  # the coldest has none
    (tmp_path / "plain").mkdir()
    plain = load_config(_campaign(tmp_path / "plain", "fes", ""))
    assert report.metad_free_energy(plain, [hills.ravel(), None]) is None


def test_a_udd_campaign_with_replica_exchange_stores_the_bias_energy(prefect_harness, tmp_path) -> None:
    config = _campaign(tmp_path, "tiny-udd",
                       'bias = "udd"\nexchange_interval_steps = 5\n[explore.udd]\nA_eV = 0.3\nB_eV = 0.005')
    active_learning(config_path=str(config))
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        frames = _md_frames(session)
        assert frames and all(f.bias_cvs is None for f in frames)
        energies = np.array([f.bias_energy_eV for f in frames if f.bias_energy_eV is not None])  # NaN: NULL
        assert np.all((energies <= 0) & (energies >= -0.3)) and energies.min() < -1e-4
        assert all(run.hills is None for run in session.scalars(select(ReplicaRun)))
        assert {f.temperature_K for f in frames} <= {300.0, 600.0}


@pytest.mark.parametrize(("explore", "match"), [
    ('bias = "metad"', "explore.metad: the starting structure has no rotatable bond"),
    ('bias = "metad"\n[explore.metad]\ntorsions = [[0, 1, 2, 9]]', "explore.metad: torsion atom index 9"),
    ('bias = "metad"\n[explore.metad]\ntorsions = [[0, 1, 2]]', "explore.metad.torsions[0]"),
    ('bias = "metad"\n[explore.metad]\nbias_factor = 1.0', "explore.metad.bias_factor"),
    ('bias = "udd"\n[explore.udd]\nB_eV = 0.0', "explore.udd.B_eV"),
    ('bias = "udd"\n[explore.udd]\nA = 1.0', "explore.udd.A: unknown field (allowed: A_eV, B_eV)"),
    ('bias = "plumed"', "explore.bias"),
    ('bias = "metad"\nexchange_interval_steps = 10\n[explore.metad]\ntorsions = [[0, 1, 2, 0]]',
     "explore: exchange_interval_steps cannot be used with bias = \"metad\""),
    ("exchange_interval_steps = -1", "explore.exchange_interval_steps"),
])
def test_bad_bias_settings_are_config_errors(tmp_path, explore: str, match: str) -> None:
    path = _with_bias(write_campaign(tmp_path), explore)  # water: no rotatable bond
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_config(path)
