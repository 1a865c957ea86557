"""``alflow md``: production MD on the batched engine, its extended XYZ, ``--feed-back``
into the next generation, and its refusals.

One tiny trained campaign (generation 0 only, through the plain step table) serves
every test; the test that runs a generation works on a copy of it. A second config of
the same campaign (same folder and name) has a tiny trust window, so every production
frame is beyond ``trust_hi``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.cli import main
from flows.pipeline import plain_steps, run_generation
from flows.runner import acquire, release
from flows.steps.training import load_latest
from flows.storage import (
    PRODUCTION_SAMPLER,
    Generation,
    LabelRow,
    LabelStatus,
    Score,
    Structure,
    reference_structure,
)
from nnp_core.md import BeyondTrust, MDConfig, Replica, run_md

from .conftest import write_campaign

MD_ARGS = ["--ps", "0.03", "--replicas", "2", "--seed", "7", "--temperature", "400", "--interval", "4"]


def _window_config(config: Path) -> Path:
    """The same campaign with a trust window of [0.001, 0.01) eV/Å."""
    window = config.with_name("window.toml")
    window.write_text(config.read_text().replace("trust_lo_eV_A = 0.02", "trust_lo_eV_A = 0.001")
                      .replace("trust_hi_eV_A = 3.0", "trust_hi_eV_A = 0.01"))
    return window


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """A campaign with its first committee (generation 0); max_generations 1."""
    folder = tmp_path_factory.mktemp("production")
    config = write_campaign(folder)
    config.write_text(config.read_text().replace("max_generations = 2", "max_generations = 1"))
    ctx = open_campaign(config)
    run_generation(ctx, 0, plain_steps(ctx))
    ctx.engine.dispose()
    _window_config(config)
    return config


@pytest.fixture(scope="module")
def trajectory(campaign) -> tuple[Path, str]:
    """One ``alflow md`` run (tiny trust window: every frame is beyond trust_hi)."""
    output = campaign.parent / "traj.extxyz"
    before = _rows(campaign)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # the CLI's rich console writes to sys.stderr of the moment
        assert main(["md", str(campaign.with_name("window.toml")), *MD_ARGS, "--output", str(output)]) == 0
    assert _rows(campaign) == before  # md without --feed-back only reads
    return output, err.getvalue()


def _rows(config: Path) -> dict[str, int]:
    ctx = open_campaign(config, create=False)
    try:
        with Session(ctx.engine) as session:
            return {model.__name__: session.scalar(select(func.count()).select_from(model))
                    for model in (Structure, Score, LabelRow, Generation)}
    finally:
        ctx.engine.dispose()


def test_md_reproduces_the_batched_engine_and_runs_past_trust(campaign, trajectory) -> None:
    output, err = trajectory
    frames = ase.io.read(output, ":")
    ctx = open_campaign(campaign, create=False)
    try:
        _, committee = load_latest(ctx)
        with Session(ctx.engine) as session:
            start = reference_structure(session, ctx.campaign_id)
    finally:
        ctx.engine.dispose()
    config = ctx.config
    replicas = [Replica(atoms=start, temperature_K=400.0, friction_per_fs=config.explore.friction_per_fs, seed=7 + r)
                for r in range(2)]
    md = dataclasses.replace(config.md_config(), n_steps=60, record_interval_steps=4, trust_hi_eV_A=0.01,
                             beyond_trust=BeyondTrust.CONTINUE)
    assert isinstance(md, MDConfig) and md.timestep_fs == config.explore.timestep_fs
    direct = sorted(run_md(committee, replicas, config=md).frames, key=lambda f: (f.replica, f.step))
    assert [(a.info["replica"], a.info["md_step"]) for a in frames] == [(f.replica, f.step) for f in direct]
    for atoms, frame in zip(frames, direct):
        np.testing.assert_allclose(atoms.positions, frame.positions_A, rtol=0, atol=1e-8)
    # the full length although every frame is beyond trust_hi: nothing stopped or restarted
    assert len(frames) == 2 * (60 // 4 + 1) and max(a.info["time_fs"] for a in frames) == 60 * md.timestep_fs
    assert all(a.info["max_force_dev"] >= 0.01 for a in frames)
    assert f"{len(frames)} of {len(frames)} frames left the trusted region" in err and "first at 0 fs" in err


def test_the_trajectory_reads_back_with_the_committee_energy_forces_and_uncertainty(campaign, trajectory) -> None:
    output, _ = trajectory
    frames = ase.io.read(output, ":")
    ctx = open_campaign(campaign, create=False)
    try:
        _, committee = load_latest(ctx)
    finally:
        ctx.engine.dispose()
    prediction = committee.predict(frames)  # at the written positions (8 decimals, Å): ~1e-6 eV/Å off
    scale = committee.calibration.force_dev_scale
    for i, (atoms, where) in enumerate(zip(frames, prediction.frame_slices())):
        np.testing.assert_allclose(atoms.get_forces(), prediction.forces_mean[where], rtol=0, atol=1e-5)
        assert atoms.get_potential_energy() == pytest.approx(prediction.energy_mean[i], abs=1e-6)
        assert atoms.info["max_force_dev"] == pytest.approx(prediction.max_force_dev[i], abs=1e-5)
        assert atoms.info["calibrated_max_force_dev"] == pytest.approx(scale * atoms.info["max_force_dev"])
        assert atoms.info["energy_dev"] == pytest.approx(prediction.energy_dev[i], abs=1e-6)
        assert {"time_fs", "replica", "temperature_K"} <= set(atoms.info) and atoms.info["temperature_K"] == 400.0


def test_feed_back_frames_are_labelled_by_the_next_generation(prefect_harness, campaign, tmp_path, capsys) -> None:
    """Fed-back frames beyond trust_hi join generation 1 undecided (the same trajectory
    fed back twice stores them once); the next run selects and labels them: the window
    rejects every explored frame, so only they can be labelled."""
    shutil.copytree(campaign.parent, tmp_path / "copy")
    config = tmp_path / "copy" / campaign.name
    window = config.with_name("window.toml")
    md = ["md", str(window), "--ps", "0.02", "--seed", "3", "--output", str(tmp_path / "fed.extxyz"), "--feed-back"]
    assert main(md) == 0
    assert "as candidates of generation 1" in capsys.readouterr().out
    stored = _rows(config)
    assert main([*md, "--force"]) == 0
    assert "nothing stored" in capsys.readouterr().out and _rows(config) == stored
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        latest = load_latest(ctx)[0]
        rows = session.execute(select(Structure, Score, Generation.index).join(Score).join(Generation).where(
            Structure.sampler == PRODUCTION_SAMPLER)).all()
        assert rows and all(s.replica is None and sc.committee_id == latest and sc.decision is None and index == 1
                            for s, sc, index in rows)
    writer = open_campaign(config)
    with Session(writer.engine) as session, session.begin():  # as if fed back by an older committee
        session.execute(delete(Score).where(Score.structure_id.in_([s.id for s, _, _ in rows[::2]])))
    writer.engine.dispose()
    assert main(["run", str(window)]) == 0
    with Session(ctx.engine) as session:
        judged = session.scalars(select(Score.decision).where(
            Score.committee_id == latest, Score.structure_id.in_([s.id for s, _, _ in rows]))).all()
        assert len(judged) == len(rows) and None not in judged  # the select step scored the unscored ones
        labelled = session.execute(select(Structure.id, LabelRow.status).join(LabelRow).where(
            Structure.sampler == PRODUCTION_SAMPLER)).all()
        assert any(status == LabelStatus.DONE for _, status in labelled)
        reasons = session.scalars(select(Score.reason).join(Structure).where(
            Structure.sampler == PRODUCTION_SAMPLER, Score.decision == "selected")).all()
        assert len(reasons) == len(labelled) and all("production MD frame" in reason for reason in reasons)
        ids = session.scalars(select(LabelRow.structure_id)).all()
        assert len(ids) == len(set(ids))  # no frame labelled twice
    ctx.engine.dispose()


def test_refusals_are_one_line_exit_2_and_change_nothing(campaign, trajectory, tmp_path, capsys) -> None:
    output, _ = trajectory
    content = output.read_bytes()
    before = _rows(campaign)
    config = str(campaign)
    refused = {
        "--ps must be a positive": ["md", config, "--ps", "-1", "--output", str(output), "--force"],
        "--temperature must be 0 K or more": ["md", config, "--temperature", "-5", "--output", str(output),
                                              "--force"],
        "exists; pass --force": ["md", config, "--ps", "0.001", "--output", str(output)],
        "--start": ["md", config, "--start", str(tmp_path / "missing.xyz"), "--output", str(output), "--force"],
        "--friction applies to": ["md", config, "--thermostat", "nve", "--friction", "0.1", "--output",
                                  str(output), "--force"],
    }
    for expected, argv in refused.items():
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    # a campaign without a committee yet
    fresh = write_campaign(tmp_path, name="no-committee")
    open_campaign(fresh).engine.dispose()
    assert main(["md", str(fresh), "--output", str(tmp_path / "x.extxyz")]) == 2
    assert "has no committee yet" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()
    # --feed-back while another process runs the campaign
    ctx = open_campaign(campaign)
    acquire(ctx, "other-host:123:run")
    try:
        assert main(["md", config, "--feed-back", "--ps", "0.001", "--output", str(output), "--force"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "already being run by other-host:123:run" in err
    finally:
        release(ctx, "other-host:123:run")
        ctx.engine.dispose()
    assert output.read_bytes() == content and _rows(campaign) == before


def test_the_feed_back_hint_says_how_the_fed_back_frames_get_labelled(tmp_path) -> None:
    """A running campaign labels them in its next generation; a stopped one with
    ``--generations 1``; one at its label budget only once the budget is raised."""
    from ase.build import molecule

    from flows import storage
    from flows.production import run_hint
    from flows.storage import StructureSource
    from tests.flows.conftest import write_campaign

    config = write_campaign(tmp_path, "hinted")
    text = config.read_text()
    config.write_text(text.replace("max_generations = 2", "max_generations = 2\nmax_labels = 12"))
    ctx = open_campaign(config)
    with storage.transaction(ctx.engine) as session:
        generation = storage.generation(session, ctx.campaign_id, 1)
        frames = [molecule("H2O") for _ in range(12)]
        for i, atoms in enumerate(frames):  # twelve different frames (identical ones are stored once)
            atoms.rattle(0.01, seed=i)
        ids = storage.add_structures(session, ctx.campaign_id, frames, source=StructureSource.INITIAL,
                                     generation_id=generation.id)
        assert len(set(ids)) == 12
        storage.enqueue_labels(session, ids[:11])
    assert run_hint(ctx, 2, config) == f"`alflow run {config}` labels them in generation 2"
    with storage.transaction(ctx.engine) as session:
        generation = storage.generation(session, ctx.campaign_id, 1)
        storage.finish_generation(session, generation, "converged: test", converged=True)
    assert run_hint(ctx, 2, config).startswith("the campaign had stopped (converged: test): `alflow run")
    with storage.transaction(ctx.engine) as session:
        storage.enqueue_labels(session, ids[11:])
    assert run_hint(ctx, 2, config).startswith(
        "the campaign has spent its label budget (12 of [loop] max_labels = 12): raise max_labels")
