"""Alembic migrations: ``upgrade head`` on an empty database gives exactly the ORM schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
