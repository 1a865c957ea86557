"""A campaign with a MACE committee: the whole loop (batched MD on it, its fingerprints
for selection, warm-started training, checkpoints) and ``alflow export --format
mace-model`` files that mace-torch's own calculator loads."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from flows import storage
from flows.active_learning import active_learning
from flows.campaign import open_campaign
from flows.cli import main
from flows.steps import exploration
from nnp_core.committee import load_committee
from nnp_core.md import run_md

from .conftest import write_campaign

pytest.importorskip("mace")

#: ``alflow run`` options that keep the per-label log lines the kill test counts
RUN_VERBOSE = ["-v"]

MACE_COMMITTEE = """[committee]
architecture = "mace"
members = 2
cutoff_A = 4.0
num_channels = 8
max_L = 1
correlation = 2
num_interactions = 1
radial_MLP = [16, 16]
readout_hidden = 4
"""


def _exports_equal_mace_calculator(config, committee, atoms, out) -> None:
    """``alflow export --format mace-model`` files give each member's energy and forces in
    mace-torch's own ``MACECalculator``."""
    from mace.calculators import MACECalculator

    assert main(["export", str(config), "--format", "mace-model", "--output", str(out)]) == 0
    atoms = atoms.copy()
    prediction = committee.predict([atoms])
    for member in range(committee.n_members):
        atoms.calc = MACECalculator(model_paths=str(out / f"member_{member}.model"), device="cpu",
                                    default_dtype="float64")
        assert atoms.get_potential_energy() == pytest.approx(prediction.member_energies[member, 0], abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), prediction.member_forces[member], atol=1e-5)


def test_a_mace_campaign_runs_and_exports_mace_model_files(prefect_harness, tmp_path, capsys, monkeypatch) -> None:
    """... with the shallow ensemble (one backbone, a readout head per member; the full
    committee's campaign is the kill test below), exploring in float32 (``[explore]
    dtype``) while training and storing float64."""
    architecture = "mace-shallow"
    config = write_campaign(tmp_path, name=f"tiny-water-{architecture}")
    committee_toml = MACE_COMMITTEE.replace('"mace"', f'"{architecture}"')
    text = re.sub(r"\[committee\].*?\n\n", committee_toml + "\n", config.read_text(), flags=re.S)
    text = text.replace("[explore]\n", "[explore]\ndtype = \"float32\"\n")
    config.write_text(text.replace("max_generations = 2", "max_generations = 1").replace("max_epochs = 40",
                                                                                           "max_epochs = 15"))
    md_dtypes = []

    def spy(committee, *args, **kwargs):
        md_dtypes.append(committee.dtype)
        return run_md(committee, *args, **kwargs)

    monkeypatch.setattr(exploration, "run_md", spy)
    summary = active_learning(config_path=str(config))
    assert md_dtypes and set(md_dtypes) == {torch.float32}
    ctx = open_campaign(config, create=False)
    with storage.reading(ctx.engine) as session:
        committees = storage.committees(session, ctx.campaign_id)
        generation = storage.generation(session, ctx.campaign_id, 1)
        assert [c.architecture for c in committees] == [architecture, architecture]
        assert generation.n_selected > 0 and generation.labels_done == generation.n_selected
    first = load_committee(ctx.resolve(committees[0].checkpoint_path))
    final = load_committee(summary["latest_committee"])
    assert first.dtype == final.dtype == torch.float64
    assert final.model.hparams()["num_channels"] == 8 and final.model.hparams()["avg_num_neighbors"] == 2.0
    with storage.reading(ctx.engine) as session:
        frames = storage.labelled_atoms(session, ctx.campaign_id)
    # warm-started and trained on the new labels: the members moved
    assert not np.allclose(first.predict(frames).member_forces, final.predict(frames).member_forces)

    out = tmp_path / "models"
    _exports_equal_mace_calculator(config, final, frames[-1], out)
    capsys.readouterr()
    # a second export into the same folder is refused without --force, files unchanged
    before = (out / "member_0.model").stat().st_mtime_ns
    assert main(["export", str(config), "--format", "mace-model", "--output", str(out)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (out / "member_0.model").stat().st_mtime_ns == before


def test_mace_settings_are_checked_by_the_config(tmp_path) -> None:
    from flows.config import ConfigError, load_config

    config = write_campaign(tmp_path, name="mace-settings")
    text = re.sub(r"\[committee\].*?\n\n", MACE_COMMITTEE + "\n", config.read_text(), flags=re.S)
    config.write_text(text)
    hparams = load_config(config).committee.network_hparams()
    assert hparams["num_channels"] == 8 and hparams["correlation"] == 2 and hparams["max_ell"] == 3
    config.write_text(text.replace("num_channels = 8", "num_chanels = 8"))
    with pytest.raises(ConfigError, match="num_chanels"):
        load_config(config)
    config.write_text(text.replace("max_L = 1", "max_L = -1"))
    with pytest.raises(ConfigError, match="max_L"):
        load_config(config)


def test_an_unknown_mace_setting_is_refused_by_alflow_run_in_one_line_and_the_database_is_unchanged(
        tmp_path, capsys, monkeypatch) -> None:
    import flows.active_learning

    monkeypatch.setattr(flows.active_learning, "active_learning", None)  # a refusal never reaches the flow
    config = write_campaign(tmp_path, name="mace-guarded")
    text = re.sub(r"\[committee\].*?\n\n", MACE_COMMITTEE + "\n", config.read_text(), flags=re.S)
    config.write_text(text)
    open_campaign(config).engine.dispose()
    db = tmp_path / "runs" / "mace-guarded" / "alflow.db"
    before, files = db.read_bytes(), sorted(db.parent.iterdir())
    config.write_text(text.replace("num_channels = 8", "num_chanels = 8"))
    capsys.readouterr()
    assert main(["run", str(config)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "num_chanels" in lines[0], err
    assert db.read_bytes() == before and sorted(db.parent.iterdir()) == files


def test_exporting_mace_model_files_of_a_bpnn_campaign_is_refused_in_one_line_and_writes_nothing(
        tmp_path, capsys) -> None:
    from nnp_core.committee import Committee

    config = write_campaign(tmp_path, name="bpnn-export")
    ctx = open_campaign(config)
    committee = Committee.create("bpnn", n_members=2, elements=["H", "O"], **ctx.config.committee.network_hparams())
    with storage.transaction(ctx.engine) as session:  # an untrained committee stored as the latest
        generation = storage.generation(session, ctx.campaign_id, 0)
        row = storage.add_committee(session, ctx.campaign_id, generation.id, n_members=2, architecture="bpnn",
                                    n_training_frames=0, training_wall_s=0.0, force_dev_scale=1.0,
                                    energy_dev_scale=1.0, calibrated_on="none", member_reports=[])
        row.checkpoint_path = ctx.relative(committee.save(ctx.committee_dir(0, row.id)))
    ctx.engine.dispose()
    db = tmp_path / "runs" / "bpnn-export" / "alflow.db"
    wal = db.with_name("alflow.db-wal")

    def files() -> list:  # SQLite's -wal and -shm aside: any reader of the database leaves them
        return sorted(p for p in tmp_path.rglob("*") if p.name not in ("alflow.db-wal", "alflow.db-shm"))

    before, listed = db.read_bytes(), files()
    out = tmp_path / "models"
    capsys.readouterr()
    assert main(["export", str(config), "--format", "mace-model", "--output", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert "Traceback" not in stdout + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "is 'bpnn'; --format mace-model needs [committee] architecture = \"mace\" or \"mace-shallow\"" in lines[0]
    assert not out.exists() and files() == listed and db.read_bytes() == before
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("architecture", ["mace", "mace-shallow"])
def test_a_mace_config_without_mace_torch_is_refused_in_one_line(tmp_path, monkeypatch, architecture) -> None:
    import importlib.util

    from flows.config import ConfigError, load_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mace" else real(name, *a))
    config = write_campaign(tmp_path, name="no-mace")
    committee = MACE_COMMITTEE.replace('"mace"', f'"{architecture}"')
    config.write_text(re.sub(r"\[committee\].*?\n\n", committee + "\n", config.read_text(), flags=re.S))
    with pytest.raises(ConfigError, match=r"needs mace-torch, which is not installed: pip install 'alflow\[mace\]'"):
        load_config(config)
    assert not (tmp_path / "runs").exists()  # nothing created


def test_a_killed_mace_campaign_resumes_without_computing_a_label_twice(prefect_harness, tmp_path) -> None:
    """SIGKILL once generation 0 is labelled (its MACE committee training or the first
    exploration on it): the rerun finishes the campaign, every label computed once; its
    members export as mace-torch model files."""
    import os
    import signal
    import subprocess
    import sys
    from collections import Counter

    from .test_resume_and_errors import LABELLED, ROOT, _env, _label_counts, _running_after_labels

    config = write_campaign(tmp_path, name="killed-mace")
    text = re.sub(r"\[committee\].*?\n\n", MACE_COMMITTEE + "\n", config.read_text(), flags=re.S)
    config.write_text(text.replace("max_generations = 2", "max_generations = 1").replace("max_epochs = 40",
                                                                                           "max_epochs = 15"))
    db = tmp_path / "runs" / "killed-mace" / "alflow.db"
    command = [sys.executable, "-m", "flows.cli", "run", str(config), *RUN_VERBOSE]
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        assert _running_after_labels(first, db, 10), first_log.read_text()[-3000:]  # generation 0 labelled
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    second = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    computed = Counter(int(i) for i in LABELLED.findall(first_log.read_text() + second.stdout + second.stderr))
    assert set(_label_counts(db)) == {"done"}
    assert max(computed.values()) == 1, [sid for sid, n in computed.items() if n > 1]
    ctx = open_campaign(config, create=False)
    with storage.reading(ctx.engine) as session:
        assert {c.architecture for c in storage.committees(session, ctx.campaign_id)} == {"mace"}
        assert storage.generation(session, ctx.campaign_id, 1).stop_reason == "generation limit 1 reached"
        frames = storage.labelled_atoms(session, ctx.campaign_id)
        latest = storage.latest_committee(session, ctx.campaign_id).checkpoint_path
    _exports_equal_mace_calculator(config, load_committee(ctx.resolve(latest)), frames[-1], tmp_path / "models")
