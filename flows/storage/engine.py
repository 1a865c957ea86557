"""Engines for any SQLAlchemy URL, with SQLite set up for several processes at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

#: how long a SQLite connection waits for another process's write lock, s
SQLITE_BUSY_TIMEOUT_S = 30.0

#: the execution option read by the SQLite ``begin`` hook: "DEFERRED" or "IMMEDIATE"
_BEGIN_OPTION = "alflow_sqlite_begin"

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url``; extra keyword arguments go to ``create_engine``.

    For SQLite: the parent folder of a file database is created, every connection
    runs in WAL mode with ``foreign_keys=ON`` and a busy timeout of
    ``SQLITE_BUSY_TIMEOUT_S`` (other processes wait for the write lock rather than
    fail), and SQLAlchemy (not the sqlite3 driver) emits ``BEGIN``, so that every
    transaction, DDL included, is real and :func:`immediate_engine` can ask for
    ``BEGIN IMMEDIATE``.
    """
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, **kwargs)
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    _configure_sqlite(engine, wal=not in_memory)
    return engine


def immediate_engine(engine: Engine) -> Engine:
    """``engine`` whose transactions take the write lock at once (``BEGIN IMMEDIATE``).

    On SQLite, a transaction that reads and then writes (a claim, a migration) must
    hold the write lock from its first statement, or a concurrent writer makes it
    fail with "database is locked" instead of waiting. Other databases are unaffected.
    """
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's documented recipe: stop the driver from emitting BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic configuration for alflow's migrations; no alembic.ini needed.

    With ``engine``, the migration environment uses that engine's URL (commands that
    open their own connection, e.g. ``alembic.command.current``).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if engine is not None:
        url = engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def init_db(url_or_engine: str | URL | Engine) -> Engine:
    """Bring the database to the newest schema (Alembic ``upgrade head``) and return it.

    The only way alflow creates or changes its schema. Safe to call on every start and
    from several processes at once: the upgrade runs in one ``BEGIN IMMEDIATE``
    transaction on SQLite, so a second caller waits and then finds nothing to do.
    """
    if isinstance(url_or_engine, Engine):
        engine = url_or_engine
    else:
        engine = make_engine(url_or_engine)
    config = alembic_config()
    with immediate_engine(engine).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return engine
