"""The read queries behind status, report and dashboard (``flows.storage.overview``) and
the tables ``flows.status`` shapes from them, on a hand-made campaign of typed records;
the database-URL helpers of ``flows.storage.engine``; the cached level of theory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from flows import status
from flows.storage import (
    PRODUCTION_SAMPLER,
    Decision,
    GenerationStatus,
    StructureSource,
    add_committee,
    add_evaluation,
    add_retrain,
    add_score,
    add_structures,
    complete_label,
    enqueue_labels,
    ensure_campaign,
    fail_label,
    finish_generation,
    generation,
    init_db,
    mark_step,
    reading,
    record_frame_errors,
    record_selection,
    transaction,
)
from flows.storage import overview
from flows.storage.engine import (
    check_database_url,
    database_identity,
    in_memory_sqlite,
    redact_url,
    sqlite_database,
    with_database,
)

LOT = {"method": "hf", "basis": "sto-3g"}
STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _frames(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    return frames


def _metrics(force_mae: float) -> dict[str, float]:
    return {"n_frames": 2, "energy_mae_eV_atom": 0.01, "energy_rmse_eV_atom": 0.02, "force_mae_eV_A": force_mae,
            "force_rmse_eV_A": 2 * force_mae, "force_dev_spearman": 0.5}


def _label(session, structure_ids: list[int], *, failed: int = 0) -> None:
    for i, label_id in enumerate(enqueue_labels(session, structure_ids)):
        if i < failed:
            fail_label(session, label_id, "SCF did not converge")
        else:
            complete_label(session, label_id, energy_eV=-2000.0, forces_eV_A=np.zeros((3, 3)), level_of_theory=LOT)


def _committee(session, campaign_id: int, generation_id: int, n_frames: int, scale: float = 1.0):
    row = add_committee(session, campaign_id, generation_id, n_members=2, architecture="bpnn",
                        n_training_frames=n_frames, training_wall_s=12.34, force_dev_scale=scale,
                        energy_dev_scale=1.0, calibrated_on="validation", member_reports=[])
    row.checkpoint_path = f"committees/c{row.id}"
    return row


@pytest.fixture()
def campaign(tmp_path: Path):
    """Generation 0 (decided), generation 1 (decided, fresh labels, a retrain into it),
    generation 2 (running, one pending label)."""
    engine = init_db(f"sqlite:///{tmp_path / 'alflow.db'}")
    ids: dict[str, int] = {}
    with transaction(engine) as session:
        campaign_id = ensure_campaign(session, "water", config_snapshot={}, level_of_theory=LOT).id
        g0 = generation(session, campaign_id, 0)
        _label(session, add_structures(session, campaign_id, _frames(3, 0), source=StructureSource.INITIAL,
                                       generation_id=g0.id), failed=1)
        for step, seconds in (("sample", 1.0), ("label", 2.0), ("train", 3.0)):
            mark_step(session, g0, step, seconds)
        c1 = _committee(session, campaign_id, g0.id, 2, scale=2.0)
        add_evaluation(session, c1.id, "validation", _metrics(0.1), generation_id=g0.id)
        finish_generation(session, g0, None, False)

        g1 = generation(session, campaign_id, 1)
        md = add_structures(session, campaign_id, _frames(2, 1), source=StructureSource.MD, generation_id=g1.id)
        for structure_id, deviation in zip(md, (0.1, 0.2)):
            add_score(session, structure_id, c1.id, energy_mean_eV=-2000.0, energy_dev=0.01,
                      max_force_dev=deviation, decision=Decision.SELECTED)
        record_selection(g1, {"accurate": 6, "candidate": 0, "selected": 2, "rejected": 1, "filtered": 1,
                              "duplicate": 0})
        _label(session, md)
        record_frame_errors(session, c1.id, md, [0.3, 0.5])
        add_evaluation(session, c1.id, "fresh", _metrics(0.05), generation_id=g1.id)
        for step, seconds in (("explore", 4.0), ("select", 0.5), ("label", 5.0), ("evaluate_fresh", 0.1),
                              ("train", 6.0), ("decide", 0.01)):
            mark_step(session, g1, step, seconds)
        c2 = _committee(session, campaign_id, g1.id, 4)
        add_evaluation(session, c2.id, "validation", _metrics(0.08), generation_id=g1.id)
        finish_generation(session, g1, None, False)
        c3 = _committee(session, campaign_id, g1.id, 4)  # a retrain into generation 1
        add_retrain(session, c3.id, g1.id, new_labels=2, previous_committee_id=c2.id, started_at=STARTED,
                    finished_at=STARTED + timedelta(seconds=30))
        add_evaluation(session, c3.id, "validation", _metrics(0.07), generation_id=g1.id)

        g2 = generation(session, campaign_id, 2)
        enqueue_labels(session, add_structures(session, campaign_id, _frames(1, 2), source=StructureSource.MD,
                                               generation_id=g2.id))
        mark_step(session, g2, "explore", 1.5)
        ids.update(campaign=campaign_id, c1=c1.id, c2=c2.id, c3=c3.id, g1=g1.id)
    yield engine, ids
    engine.dispose()


def test_generation_rows_read_the_typed_records(campaign) -> None:
    engine, ids = campaign
    with reading(engine) as session:
        rows = status.generation_rows(session, ids["campaign"])
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert [r["status"] for r in rows] == ["done", "done", "running"]
    assert [(r["labels"], r["failed"]) for r in rows] == [(2, 1), (2, 0), (0, 0)]
    one = rows[1]
    assert {k: one[k] for k in status.COUNT_COLUMNS} == {"accurate": 6, "candidate": 0, "selected": 2,
                                                         "filtered": 1, "duplicate": 0, "rejected": 1}
    assert rows[0]["accurate"] == 0  # generation 0 selects nothing
    # the generation's own committee's validation error, not the retrain's
    assert (one["fresh_force_mae_eV_A"], one["validation_force_mae_eV_A"]) == (0.05, 0.08)
    assert (rows[0]["fresh_force_mae_eV_A"], rows[0]["validation_force_mae_eV_A"]) == (None, 0.1)
    assert (one["explore_s"], one["label_s"], one["train_s"]) == (4.0, 5.0, 6.0)
    assert (rows[2]["explore_s"], rows[2]["train_s"]) == (1.5, 0.0)


def test_status_totals_dashboard_timings_and_retrains(campaign, tmp_path: Path) -> None:
    engine, ids = campaign
    with reading(engine) as session:
        totals = status.campaign_status(session, ids["campaign"], tmp_path)
        dashboard = status.dashboard_rows(session, ids["campaign"], 0.05)
        timings = status.timing_rows(session, ids["campaign"])
        retrains = status.retrain_rows(session, ids["campaign"])
    assert (totals["labels"], totals["failed_labels"], totals["pending_labels"]) == (4, 1, 1)
    assert totals["latest_committee"] == str(tmp_path / f"committees/c{ids['c3']}")
    assert not totals["finished"] and totals["stop_reason"] is None
    assert [r["labels so far"] for r in dashboard] == [2, 4, 4]
    assert [r["accurate %"] for r in dashboard] == [None, 60.0, None]
    assert dashboard[1]["fresh F MAE / target (meV/Å)"] == "50 / 50" and dashboard[1]["val. F MAE (meV/Å)"] == 80.0
    assert timings[1] == {"generation": 1, "MD (s)": 4.0, "QM (s)": 5.0, "QM per label (s)": 2.5,
                          "training (s)": 6.0, "total (s)": 15.0}
    assert retrains == [{"committee": ids["c3"], "generation": 1, "frames": 4, "new labels": 2,
                         "val. F MAE (meV/Å)": 70.0, "training (s)": 12.3,
                         "finished (UTC)": "2026-01-02 03:04:35"}]


def test_figure_data_learning_points_deviations_and_fresh_errors(campaign) -> None:
    engine, ids = campaign
    with reading(engine) as session:
        points = status.learning_points(session, ids["campaign"])
        deviations = status.explored_deviations(session, ids["campaign"])
        fresh = status.fresh_frame_errors(session, ids["campaign"])
    assert points == {"fresh": [(2, 0.05)], "validation": [(2, 0.1), (4, 0.08), (4, 0.07)]}
    assert deviations == {1: [0.1, 0.2]}
    assert fresh == {1: {"max_force_dev_eV_A": [0.1, 0.2],
                         "calibrated_max_force_dev_eV_A": [0.2, 0.4],  # committee 1's scale: 2
                         "max_force_error_eV_A": [0.3, 0.5]}}


def test_explored_geometries_are_the_md_frames_and_every_label(campaign) -> None:
    """Generation 0's two finished labels (not its failed one), generation 1's two labelled
    MD frames and generation 2's MD frame whose label is still pending, in id order."""
    engine, _ = campaign
    with reading(engine) as session:
        frames = overview.explored_geometries(session, campaign[1]["campaign"])
    assert frames.positions.shape == (5, 3, 3)
    assert frames.generation.tolist() == [0, 0, 1, 1, 2]
    assert frames.labelled.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(frames.positions[2], _frames(2, 1)[0].positions)


def test_label_origins_count_finished_labels_by_temperature_and_source(campaign) -> None:
    """Generation 2 gains labelled frames of a 300 K and a 1200 K replica, a fed-back
    production frame and one whose label failed: each finished label is counted once,
    under its frame's origin, failed and pending ones not at all."""
    engine, ids = campaign
    with transaction(engine) as session:
        g2 = generation(session, ids["campaign"], 2)
        frames = _frames(6, 3)
        cold = add_structures(session, ids["campaign"], frames[:2], source=StructureSource.MD, generation_id=g2.id,
                              temperature_K=300.0, replica=0)
        hot = add_structures(session, ids["campaign"], frames[2:5], source=StructureSource.MD,
                             generation_id=g2.id, temperature_K=1200.0, replica=1)
        fed = add_structures(session, ids["campaign"], frames[5:], source=StructureSource.MD, generation_id=g2.id,
                             sampler=PRODUCTION_SAMPLER, temperature_K=300.0)
        _label(session, cold + fed)
        _label(session, hot, failed=1)
    with reading(engine) as session:
        rows = status.label_origin_rows(session, ids["campaign"])
    assert rows == [
        {"generation": 0, "initial": 2, "300 K": 0, "1200 K": 0, "production": 0, "md": 0, "total": 2},
        {"generation": 1, "initial": 0, "300 K": 0, "1200 K": 0, "production": 0, "md": 2, "total": 2},
        {"generation": 2, "initial": 0, "300 K": 2, "1200 K": 2, "production": 1, "md": 0, "total": 5}]
    assert list(rows[0]) == ["generation", "initial", "300 K", "1200 K", "production", "md", "total"]


def test_overview_lookups(campaign) -> None:
    engine, ids = campaign
    with reading(engine) as session:
        assert overview.last_decided_index(session, ids["campaign"]) == 1
        assert overview.backlog_generation_index(session, ids["campaign"]) == 2
        assert overview.own_committee_checkpoints(session, ids["campaign"]) == {
            0: f"committees/c{ids['c1']}", 1: f"committees/c{ids['c2']}"}
        assert overview.retrain_of(session, ids["c2"]) is None
        assert overview.retrain_of(session, ids["c3"]).previous_committee_id == ids["c2"]
        assert len(overview.structure_hashes(session, ids["g1"])) == 2
    with transaction(engine) as session:  # no pending label: the latest generation
        generation(session, ids["campaign"], 2).status = GenerationStatus.DONE
        assert overview.last_decided_index(session, ids["campaign"]) == 2


def test_database_url_helpers(tmp_path: Path) -> None:
    assert check_database_url("sqlite:///alflow.db") is None
    assert check_database_url("not a url").startswith("not a SQLAlchemy database URL")
    assert check_database_url("nosuchdb://host/db").startswith("unknown database 'nosuchdb'")
    assert check_database_url("sqlite+nosuchdriver:///x.db").startswith("unknown driver 'nosuchdriver'")
    assert sqlite_database("sqlite:///a/b.db") == "a/b.db" and sqlite_database("postgresql://h/db") is None
    assert sqlite_database("sqlite://") == "" and in_memory_sqlite("sqlite://")
    assert in_memory_sqlite("sqlite:///:memory:") and not in_memory_sqlite("sqlite:///alflow.db")
    assert not in_memory_sqlite("postgresql://h/db")
    assert with_database("sqlite:///a.db", str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    assert redact_url("postgresql+psycopg://me:secret@h/db") == "postgresql+psycopg://me:***@h/db"
    assert database_identity("postgresql+psycopg://me:secret@H:5432/db?sslmode=require") == \
        database_identity("postgresql://other@h:5432/db") == "postgresql://h:5432/db"
    (tmp_path / "real.db").touch()
    (tmp_path / "link.db").symlink_to(tmp_path / "real.db")
    assert database_identity(f"sqlite:///{tmp_path / 'link.db'}") == f"sqlite:///{(tmp_path / 'real.db').resolve()}"


def test_level_of_theory_is_built_once_per_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.backends as backends
    from flows.config import load_config

    from .conftest import write_campaign

    config = load_config(write_campaign(tmp_path))
    built = []
    monkeypatch.setattr(backends, "make_backend", lambda c: built.append(c) or pytest.fail("built again"))
    level = config.level_of_theory()  # cached while the config was validated
    assert backends.level_of_theory(config) == level and built == []
    level["method"] = "changed"  # a copy: the cache keeps its own
    assert config.level_of_theory()["method"] != "changed"
