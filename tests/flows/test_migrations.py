"""Alembic migrations: ``upgrade head`` on an empty database gives exactly the ORM schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from flows.storage import Base, alembic_config, init_db, make_engine

ROOT = Path(__file__).resolve().parents[2]


def schema_diffs(engine: sa.Engine, metadata: sa.MetaData) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_upgrade_from_empty_gives_the_orm_schema(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path}/a.db")
    assert schema_diffs(engine, Base.metadata) == []
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(engine) == head


def test_the_schema_comparison_would_notice_a_difference(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path}/a.db")
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    sa.Table("labels", changed, sa.Column("extra_eV", sa.Float), extend_existing=True)
    diffs = schema_diffs(engine, changed)
    assert [diff[0] for diff in diffs] == ["add_column"]


def test_init_db_is_idempotent_and_downgrade_removes_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    engine = init_db(init_db(url))
    config = alembic_config(engine)
    command.downgrade(config, "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    assert current_revision(engine) is None
    init_db(engine)
    assert schema_diffs(engine, Base.metadata) == []


def test_migrations_run_from_any_working_directory(tmp_path: Path) -> None:
    code = (
        "import sys; from flows.storage import init_db; "
        "init_db(sys.argv[1]); init_db(sys.argv[1])"
    )
    databases = [tmp_path / "x.db", tmp_path / "x.db"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [  # two at once on one new file: one creates, the other waits and finds it
        subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{path}"], cwd=tmp_path,
                         stderr=subprocess.PIPE, text=True, env=env)
        for path in databases
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    assert schema_diffs(make_engine(f"sqlite:///{databases[0]}"), Base.metadata) == []


#: a campaign database made by revision 0002's code (commit 3e292b2): tiny water, HF/STO-3G,
#: generations 0-2 with the JSON metrics of that time, and one retrain (committee 4)
LEGACY = ROOT / "tests" / "flows" / "data" / "legacy-0002"


def _legacy_copy(tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "legacy"
    shutil.copytree(LEGACY, folder)
    return folder


def test_a_database_from_before_typed_records_keeps_its_history(tmp_path: Path) -> None:
    import json
    import sqlite3

    folder = _legacy_copy(tmp_path)
    old = sqlite3.connect(folder / "legacy.db")
    metrics = {index: json.loads(text) for index, text in old.execute("SELECT \"index\", metrics FROM generations")}
    training = {cid: json.loads(text) for cid, text in old.execute("SELECT id, training_metrics FROM committees")}
    counts = {table: old.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
              for table in ("structures", "labels", "scores", "evaluations", "committees")}
    old.close()
    engine = init_db(f"sqlite:///{folder / 'legacy.db'}")
    assert schema_diffs(engine, Base.metadata) == []
    from flows import storage

    with storage.reading(engine) as session:
        for table, n in counts.items():
            assert session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == n, table
        campaign_id = storage.campaign_id(session, "legacy-water")
        generations = storage.generations(session, campaign_id)
        for row in generations:
            old_metrics = metrics[row.index]
            assert storage.done_steps(session, row.id) == pytest.approx(old_metrics["steps"])
            assert (row.labels_done, row.labels_failed) == (old_metrics["labels_done"], old_metrics["labels_failed"])
            if row.index:
                assert row.selection_counts() == old_metrics["selection"]
                assert row.replica_steps == old_metrics["explore"]["replica_steps"]
                fresh = storage.evaluation(session, "fresh", generation_id=row.id)
                assert fresh.force_mae_eV_A == old_metrics["fresh"]["force_mae_eV_A"]
                assert fresh.sum_sq_force_dev == old_metrics["fresh"]["sum_sq_force_dev"]
                errors = sorted(score.max_force_error_eV_A for score in session.scalars(
                    sa.select(storage.Score).where(storage.Score.committee_id == fresh.committee_id,
                                                   storage.Score.max_force_error_eV_A.is_not(None))))
                assert errors == sorted(old_metrics["fresh"]["frames"]["max_force_error_eV_A"])
        for committee in storage.committees(session, campaign_id):
            old_training = training[committee.id]
            assert committee.n_training_frames == old_training["n_frames"]
            assert committee.force_dev_scale == old_training["calibration"]["force_dev_scale"]
            assert committee.calibrated_on == old_training["calibrated_on"]
            assert committee.member_reports == old_training["members"]
            if "retrain" in old_training:
                assert committee.retrain.new_labels == old_training["retrain"]["new_labels"]
                assert committee.retrain.previous_committee_id == old_training["retrain"]["previous_committee"]
            else:
                assert committee.retrain is None
        assert [c.id for c in storage.committees(session, campaign_id) if c.retrain] == [4]


@pytest.mark.usefixtures("prefect_harness")
def test_a_campaign_from_before_typed_records_resumes(tmp_path: Path, monkeypatch) -> None:
    """Raise the generation limit of the old campaign: it runs generation 3 on the
    upgraded database, warm-started from the retrained committee, no label computed again."""
    import sqlite3

    from flows.active_learning import active_learning

    folder = _legacy_copy(tmp_path)
    monkeypatch.chdir(folder)
    before = dict(sqlite3.connect(folder / "legacy.db").execute(
        "SELECT id, finished_at FROM labels").fetchall())
    config = folder / "legacy-water.toml"
    config.write_text(config.read_text().replace("max_generations = 2", "max_generations = 3"))
    summary = active_learning(config_path=str(config))
    assert summary["generations"] == 4 and summary["stop_reason"] == "generation limit 3 reached"
    after = dict(sqlite3.connect(folder / "legacy.db").execute("SELECT id, finished_at FROM labels").fetchall())
    assert {i: after[i] for i in before} == before  # every old label kept, none recomputed
    assert len(after) > len(before)
    assert "gen-003-c00005" in summary["latest_committee"]
