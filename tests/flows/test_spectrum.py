"""``alflow spectrum``: the IR spectrum of a campaign's latest committee, its files, its
row in ``spectra``, the dashboard artifact, and its refusals (one line, exit 2, the
database and the report folder unchanged).

One tiny trained water campaign (generation 0, HF/STO-3G labels with dipoles) gets two
more committees trained here: one without a dipole head (a copy of the campaign keeps
it as its latest) and one with (the latest of the campaign the spectra are run on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import shutil
import sqlite3
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import nnp_core.dipole_md
from flows import storage
from flows.campaign import open_campaign
from flows.cli import main
from flows.pipeline import plain_steps, run_generation
from flows.steps.training import TRAINING_SOURCES
from nnp_core.dipole_md import DipoleTrajectory
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee

from .conftest import write_campaign

SMALL = ["--replicas", "2", "--ps", "0.2", "--equilibration-ps", "0.02", "--timestep", "0.5"]


def _add_committee(config: Path, *, dipole_weight: float) -> None:
    """Train a committee on the campaign's labels and store it as the latest."""
    ctx = open_campaign(config)
    try:
        with storage.reading(ctx.engine) as session:
            frames = storage.labelled_atoms(session, ctx.campaign_id, sources=TRAINING_SOURCES)
        train = TrainConfig(max_epochs=30, batch_size_frames=4, dipole_weight=dipole_weight,
                            dtype=ctx.config.committee.dtype)
        committee, report = train_committee(
            frames, train, n_members=ctx.config.committee.members, architecture=ctx.config.committee.architecture,
            model_hparams=ctx.config.committee.network_hparams())
        assert committee.has_dipole == (dipole_weight > 0)
        with storage.transaction(ctx.engine) as session:
            generation = storage.generation(session, ctx.campaign_id, 0)
            row = storage.add_committee(
                session, ctx.campaign_id, generation.id, n_members=committee.n_members,
                architecture=committee.architecture, n_training_frames=len(frames), training_wall_s=report.wall_s,
                force_dev_scale=1.0, energy_dev_scale=1.0, calibrated_on="none",
                member_reports=[asdict(m) for m in report.members])
            row.checkpoint_path = ctx.relative(committee.save(ctx.committee_dir(0, row.id)))
    finally:
        ctx.engine.dispose()


@pytest.fixture(scope="module")
def campaign_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("spectrum")
    (root / "with").mkdir()
    config = write_campaign(root / "with")
    config.write_text(config.read_text().replace("max_generations = 2", "max_generations = 1")
                      .replace("max_epochs = 40", "max_epochs = 5")
                      .replace("optimise_first = true", "optimise_first = false"))
    ctx = open_campaign(config)
    run_generation(ctx, 0, plain_steps(ctx))
    ctx.engine.dispose()
    _add_committee(config, dipole_weight=0.0)
    shutil.copytree(root / "with", root / "without")
    _add_committee(config, dipole_weight=0.01)
    return config, root / "without" / config.name


@pytest.fixture(scope="module")
def campaign(campaign_pair) -> Path:
    return campaign_pair[0]


def _report(config: Path) -> Path:
    """The campaign's report folder (its work_dir is runs/<name> beside the config)."""
    return config.parent / "runs" / "tiny-water" / "report"


def _database(config: Path) -> Path:
    return config.parent / "runs" / "tiny-water" / "alflow.db"


def _dump(config: Path) -> str:
    """Every table's rows (read-only): equal dumps, an unchanged database."""
    connection = sqlite3.connect(f"file:{_database(config)}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*")) if p.is_file()} \
        if folder.is_dir() else {}


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _fake_md(committee, atoms, *, temperature_K, replicas, equilibration_ps, production_ps, timestep_fs, seed,
             progress=None, production_friction_per_fs=0.0) -> DipoleTrajectory:
    """Random dipoles in place of ``nnp_core.dipole_md`` (tested there) where a test is
    about what flows does with them: the first spectrum runs the real MD."""
    dipoles = np.random.default_rng(seed).normal(size=(committee.n_members, replicas, 64, 3))
    return DipoleTrajectory(dipoles, timestep_fs, temperature_K, equilibration_ps, production_ps,
                            temperature_K, 0.0, 0.01)


def _spectra(config: Path) -> list[storage.SpectrumRow]:
    ctx = open_campaign(config, create=False)
    try:
        with storage.reading(ctx.engine) as session:
            rows = storage.spectra(session, ctx.campaign_id)
            latest = storage.latest_spectrum(session, ctx.campaign_id)
            assert (latest.id if latest else None) == (rows[-1].id if rows else None)
            session.expunge_all()
            return rows
    finally:
        ctx.engine.dispose()


@pytest.fixture(scope="module")
def first(campaign) -> tuple[str, dict[str, str]]:
    """The first spectrum: (its stdout, the report folder's files after it)."""
    code, out, err = _run(["spectrum", str(campaign), *SMALL])
    assert code == 0, err
    return out, _files(_report(campaign))


def test_a_spectrum_writes_its_files_and_one_row(campaign, first) -> None:
    out, files = first
    report = _report(campaign)
    rows = _spectra(campaign)
    assert len(rows) == 1
    row = rows[0]
    n = row.id
    assert {f"ir-spectrum-{n}.csv", f"ir-spectrum-{n}.png", f"ir-harmonic-{n}.csv"} <= set(files)
    lines = (report / f"ir-spectrum-{n}.csv").read_text().splitlines()
    assert lines[0].startswith("# ") and "window=hann" in lines[0] and "correction=harmonic" in lines[0]
    assert lines[1] == "wavenumber_cm1,intensity,band_low,band_high,sampling_low,sampling_high"
    table = np.loadtxt(report / f"ir-spectrum-{n}.csv", delimiter=",", skiprows=2)
    png = (report / f"ir-spectrum-{n}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    harmonic = (report / f"ir-harmonic-{n}.csv").read_text().splitlines()
    assert harmonic[0].startswith("# ") and harmonic[1] == "source,frequency_cm1,intensity_km_mol"
    assert len(harmonic) - 2 == len(row.harmonic_frequencies_cm1) == 3  # water: 3 modes, all committee
    assert all(line.startswith("committee,") for line in harmonic[2:])
    # the row holds what the files hold
    np.testing.assert_allclose(table[:, 0], row.wavenumbers_cm1, rtol=1e-9)
    np.testing.assert_allclose(table[:, 1], row.intensity, rtol=1e-9, atol=1e-12)
    assert row.band_low is not None and row.band_high is not None  # two members: a band
    assert row.band_low.shape == row.band_high.shape == row.intensity.shape
    assert np.all(row.band_low <= row.band_high) and row.intensity.max() == pytest.approx(1.0)
    # two replicas: their 95% interval, stored as written, centred on the spectrum
    assert row.sampling_low is not None and row.sampling_high is not None
    np.testing.assert_allclose(table[:, 4], row.sampling_low, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table[:, 5], row.sampling_high, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose((row.sampling_low + row.sampling_high) / 2, row.intensity, rtol=1e-9, atol=1e-12)
    assert np.any(row.sampling_high > row.sampling_low) and row.settings["sampling_confidence"] == 0.95
    assert row.reference_frequencies_cm1 is None and row.reference_intensities_km_mol is None
    assert row.settings["window"] == "hann" and row.settings["replicas"] == 2 and row.settings["n_replicas"] == 2
    assert row.settings["ps"] == 0.2 and row.settings["n_steps"] == 401 and row.settings["reference_harmonic"] is False
    assert np.isfinite(row.mean_temperature_K) and np.isfinite(row.energy_drift_meV_per_atom_ps) and row.wall_s > 0
    assert (row.csv_path, row.png_path, row.harmonic_csv_path) == (
        f"report/ir-spectrum-{n}.csv", f"report/ir-spectrum-{n}.png", f"report/ir-harmonic-{n}.csv")
    # the summary states the correction and the window, the NVE run and the files
    assert "correction: harmonic" in out and "window: hann" in out
    assert "mean temperature" in out and "energy drift" in out and f"ir-spectrum-{n}.png" in out
    # each peak's height with the members' range and the replicas' interval at it
    peak_lines = [line for line in out.splitlines() if "cm-1 height " in line]
    assert peak_lines and all("[members " in line and ", replicas " in line for line in peak_lines)
    assert "95% confidence interval" in out


def test_a_second_spectrum_writes_new_files_and_keeps_the_first(campaign, first, monkeypatch) -> None:
    _, before = first
    monkeypatch.setattr(nnp_core.dipole_md, "dipole_md", _fake_md)
    code, out, err = _run(["spectrum", str(campaign), *SMALL, "--ps", "0.1", "--window", "gaussian",
                           "--correction", "none", "--seed", "3"])
    assert code == 0, err
    rows = _spectra(campaign)
    assert len(rows) >= 2
    newest = rows[-1]
    after = _files(_report(campaign))
    assert {name: after[name] for name in before} == before  # the first run's files are untouched
    assert {f"ir-spectrum-{newest.id}.csv", f"ir-spectrum-{newest.id}.png",
            f"ir-harmonic-{newest.id}.csv"} <= set(after) - set(before)
    assert newest.settings["window"] == "gaussian" and newest.settings["correction"] == "none"
    assert "correction: none" in out and "window: gaussian" in out


def test_a_thermostatted_production_reaches_the_md_and_the_summary(campaign, first, monkeypatch) -> None:
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        return _fake_md(*args, **kwargs)

    monkeypatch.setattr(nnp_core.dipole_md, "dipole_md", fake)
    code, out, err = _run(["spectrum", str(campaign), *SMALL, "--ps", "0.1", "--production-friction", "0.002"])
    assert code == 0, err
    assert seen["production_friction_per_fs"] == 0.002
    assert "ps Langevin at 0.002/fs (lines broadened by 10.6 cm-1) after" in out
    assert "thermostatted: no energy drift to check" in out and "NVE: mean temperature" not in out
    assert _spectra(campaign)[-1].settings["production_friction_per_fs"] == 0.002


@pytest.mark.parametrize(("option", "message"), [
    (["--temperature", "-5"], "--temperature must be > 0 K, got -5"),
    (["--replicas", "0"], "--replicas must be at least 1"),
    (["--ps", "0"], "--ps must be a positive length"),
    (["--ps", "0.001"], "--ps 0.001 is 2 timestep(s)"),
    (["--equilibration-ps", "-1"], "--equilibration-ps must be 0 or more"),
    (["--timestep", "0"], "--timestep must be a positive number"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--window", "boxcar"], "--window must be one of hann, gaussian, none"),
    (["--correction", "quantum"], "--correction must be one of harmonic, none"),
    (["--zero-padding", "0"], "--zero-padding must be a whole number"),
    (["--correlation-ps", "0"], "--correlation-ps must be a positive lag"),
    (["--max-wavenumber", "-1"], "--max-wavenumber must be > 0"),
    (["--timestep", "5", "--max-wavenumber", "4000"], "is above 3336 cm-1"),
    (["--production-friction", "-0.001"], "--production-friction must be 0 (NVE) to 0.01 per fs"),
    (["--production-friction", "0.5"], "--production-friction must be 0 (NVE) to 0.01 per fs"),
])
def test_a_bad_option_is_one_line_and_changes_nothing(campaign, first, option, message) -> None:
    before, files = _dump(campaign), _files(_report(campaign))
    code, out, err = _run(["spectrum", str(campaign), *SMALL, *option])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert _dump(campaign) == before and _files(_report(campaign)) == files


def test_a_committee_without_a_dipole_head_is_refused(campaign_pair) -> None:
    _, without = campaign_pair
    before = _dump(without)
    code, out, err = _run(["spectrum", str(without), *SMALL])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "this campaign's committee has no dipole head: set [train] dipole_weight > 0" in err
    assert "alflow retrain" in err
    assert _dump(without) == before and not (_report(without) / "ir-spectrum-1.png").exists()


def test_a_taken_file_name_is_refused_before_the_md(campaign, first) -> None:
    """A user's file where the next spectrum's would go stays as it was."""
    report = _report(campaign)
    n = max(row.id for row in _spectra(campaign)) + 1
    mine = report / f"ir-harmonic-{n}.csv"
    mine.write_text("my own notes\n")
    try:
        before = _dump(campaign)
        code, _, err = _run(["spectrum", str(campaign), *SMALL])
        assert code == 2 and len(err.strip().splitlines()) == 1 and "exists" in err, err
        assert mine.read_text() == "my own notes\n" and not (report / f"ir-spectrum-{n}.csv").exists()
        assert _dump(campaign) == before
    finally:
        mine.unlink()


def test_a_running_campaign_is_refused(campaign, first) -> None:
    from flows.runner import acquire, release

    ctx = open_campaign(campaign)
    owner = "elsewhere:1:run"  # another host, fresh heartbeat: alive
    acquire(ctx, owner)
    try:
        before = _dump(campaign)
        code, _, err = _run(["spectrum", str(campaign), *SMALL])
        assert code == 2 and len(err.strip().splitlines()) == 1 and "already being run" in err, err
        assert _dump(campaign) == before
    finally:
        release(ctx, owner)
        ctx.engine.dispose()


def test_the_spectrum_is_published_on_the_dashboard_run(monkeypatch, caplog) -> None:
    from uuid import uuid4

    from flows import dashboard

    made = []
    monkeypatch.setattr(dashboard, "dashboard_run_id", lambda: uuid4())
    monkeypatch.setattr(dashboard, "_create", lambda *args: made.append(args) or uuid4())
    assert dashboard.publish_spectrum("Tiny Water", b"\x89PNG-bytes", "# IR spectrum 1") is True
    (kind, key, data, description), = made
    assert (kind, key) == ("markdown", "tiny-water-ir-spectrum")
    assert data.startswith("# IR spectrum 1") and "data:image/png;base64," in data and "IR spectrum" in description

    def broken(*args):
        raise RuntimeError("server down")

    monkeypatch.setattr(dashboard, "_create", broken)
    with caplog.at_level(logging.WARNING, logger="flows.dashboard"):
        assert dashboard.publish_spectrum("Tiny Water", b"png", "summary") is False
    assert "tiny-water-ir-spectrum not published: server down" in caplog.text


def test_settings_check_matches_the_defaults() -> None:
    from flows.spectrum import SpectrumArgumentError, SpectrumSettings

    SpectrumSettings().check()
    assert SpectrumSettings().as_json()["reference_harmonic"] is False
    with pytest.raises(SpectrumArgumentError, match="--temperature must be > 0 K, got -5"):
        dataclasses.replace(SpectrumSettings(), temperature_K=-5).check()


def test_storage_refuses_arrays_that_do_not_match(campaign, first) -> None:
    ctx = open_campaign(campaign)
    try:
        with pytest.raises(ValueError, match="intensity has shape"):
            with storage.transaction(ctx.engine) as session:
                storage.add_spectrum(session, ctx.campaign_id, 1, settings={}, wavenumbers_cm1=np.arange(3.0),
                                     intensity=np.arange(4.0), band_low=None, band_high=None,
                                     harmonic_frequencies_cm1=[], harmonic_intensities_km_mol=[],
                                     mean_temperature_K=300, energy_drift_meV_per_atom_ps=0, wall_s=1)
    finally:
        ctx.engine.dispose()


def test_reference_harmonic_adds_the_reference_lines(campaign, first, monkeypatch) -> None:
    """``--reference-harmonic``: the reference backend's (HF/STO-3G) harmonic IR at its
    own minimum (optimised from the committee's), in the row, the harmonic CSV and the summary. The MD is replaced
    by random dipoles here (its own tests are nnp_core's): only the reference is new."""
    monkeypatch.setattr(nnp_core.dipole_md, "dipole_md", _fake_md)
    code, out, err = _run(["spectrum", str(campaign), *SMALL, "--reference-harmonic"])
    assert code == 0, err
    row = _spectra(campaign)[-1]
    assert row.reference_frequencies_cm1 is not None and len(row.reference_frequencies_cm1) == 3
    assert np.all(row.reference_intensities_km_mol >= 0) and row.settings["reference_harmonic"] is True
    lines = (_report(campaign) / f"ir-harmonic-{row.id}.csv").read_text().splitlines()
    assert sum(line.startswith("reference,") for line in lines) == 3
    assert sum(line.startswith("committee,") for line in lines) == len(row.harmonic_frequencies_cm1)
    assert "reference harmonic (HF/sto-3g)" in out
    # at the reference's own minimum: the HF/STO-3G water frequencies (CCCBDB: 2170, 4140, 4391 cm-1)
    np.testing.assert_allclose(np.sort(row.reference_frequencies_cm1), [2170, 4140, 4391], atol=5)


def test_the_spectrum_artifact_reaches_a_real_prefect_server(prefect_harness) -> None:
    """From the CLI (no flow run) the artifact is created on the server PREFECT_API_URL
    names, and reads back with the summary and the embedded PNG."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows import dashboard

    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    assert dashboard.publish_spectrum("Harness Water", png, "# IR spectrum 7 of campaign Harness Water") is True
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["harness-water-ir-spectrum"])))
    assert artifact.type == "markdown"
    assert artifact.data.startswith("# IR spectrum 7 of campaign Harness Water")
    assert "](data:image/png;base64," in artifact.data


def _run_of(replicas: int) -> "SpectrumRun":
    """A SpectrumRun around a spectrum of ``replicas`` trajectories: a 3000 cm⁻¹ line with a
    random phase and amplitude 0.8-1.2 per replica, plus white noise, 2 members."""
    from flows.spectrum import SpectrumRun, SpectrumSettings
    from nnp_core.ir import C_CM_PER_FS, committee_ir_spectrum

    rng = np.random.default_rng(replicas)
    t_fs = np.arange(4000) * 0.5
    dipoles = 0.02 * rng.standard_normal((replicas, t_fs.size, 3))
    amplitude, phase = rng.uniform(0.8, 1.2, replicas), rng.uniform(0, 2 * np.pi, replicas)
    dipoles[..., 0] += amplitude[:, None] * np.cos(2 * np.pi * C_CM_PER_FS * 3000.0 * t_fs + phase[:, None])
    spectrum = committee_ir_spectrum(np.stack([dipoles, 1.05 * dipoles]), 0.5, temperature_K=300.0,
                                     correlation_ps=0.5)
    return SpectrumRun(spectrum_id=1, committee_id=1, campaign="c", settings=SpectrumSettings(replicas=replicas),
                       spectrum=spectrum, committee_harmonic=(np.array([3000.0]), np.array([10.0])),
                       reference_harmonic=None, reference_name=None, mean_temperature_K=300.0,
                       energy_drift_meV_per_atom_ps=0.0, minimum_max_force_eV_A=0.0, wall_s=1.0)


def test_too_few_replicas_for_settled_peak_heights_is_a_warning() -> None:
    """Replicas whose line heights differ by ±20% around the mean: with 3 of them the 95%
    interval of the mean height is wide (t₂ = 4.3) and the run says so; with 64 it is a few
    percent and it does not. The peak line shows both error bars."""
    few, many = _run_of(3), _run_of(64)
    assert few.sampling_spread()[0] > 0.25 and many.sampling_spread()[0] < 0.1
    assert abs(few.sampling_spread()[1] - 3000.0) < 20.0  # the line, not the noise
    assert any("replicas' 95% interval" in line and "add --replicas" in line for line in few.warnings())
    assert not any("replicas' 95% interval" in line for line in many.warnings())
    peak = next(line for line in many.summary_lines()
                if "cm-1 height" in line and abs(float(line.split()[0]) - 3000.0) < 20.0)
    assert "[members " in peak and ", replicas " in peak and " to " in peak
