"""Engines for any SQLAlchemy URL, with SQLite set up for several processes at once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

#: how long a SQLite connection waits for another process's write lock, s
SQLITE_BUSY_TIMEOUT_S = 30.0

#: the execution option read by the SQLite ``begin`` hook: "DEFERRED" or "IMMEDIATE"
_BEGIN_OPTION = "alflow_sqlite_begin"

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

#: the PostgreSQL advisory lock (one per database) that :func:`init_db` migrates under
POSTGRES_MIGRATION_LOCK = 0x616C666C6F77  # b"alflow"


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url``; extra keyword arguments go to ``create_engine``.

    For SQLite: the parent folder of a file database is created, every connection
    runs in WAL mode with ``foreign_keys=ON`` and a busy timeout of
    ``SQLITE_BUSY_TIMEOUT_S`` (other processes wait for the write lock rather than
    fail), and SQLAlchemy (not the sqlite3 driver) emits ``BEGIN``, so that every
    transaction, DDL included, is real and :func:`immediate_engine` can ask for
    ``BEGIN IMMEDIATE``.

    Other databases (PostgreSQL): pooled connections are checked before use
    (``pool_pre_ping``), so a server restart costs no failed transaction.
    """
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        # a database server restarts, a firewall drops idle connections: test a pooled
        # connection before use rather than fail the next claim or write
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    _configure_sqlite(engine, wal=not in_memory)
    return engine


def read_only_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine that can only read ``url``: it never creates, migrates or writes anything.

    SQLite: the file must exist (``FileNotFoundError`` otherwise) and is opened through a
    ``file:`` URI with ``mode=ro`` and ``PRAGMA query_only``; the database file is never
    written (SQLite may create the ``-wal``/``-shm`` files of a WAL database beside it).
    When the folder is read-only and no ``-wal``/``-shm`` file exists, SQLite could not
    create the ``-shm`` file a WAL database needs, so the file is opened ``immutable=1``
    (nobody can be writing it then: a writer keeps a ``-wal`` file). With a ``-wal`` file
    but no ``-shm`` in a read-only folder, opening fails ("unable to open database file").
    Transactions are plain ``BEGIN`` (deferred: one consistent snapshot, no write lock).
    PostgreSQL: read-only transactions. Other databases: a plain engine.
    """
    url = make_url(url)
    backend = url.get_backend_name()
    if backend != "sqlite":
        engine = make_engine(url, **kwargs)
        return engine.execution_options(postgresql_readonly=True) if backend == "postgresql" else engine
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory" or database.startswith("file:"):
        raise ValueError(f"read_only_engine needs a SQLite file path, not {database or 'an in-memory database'!r}")
    path = Path(database).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no SQLite database file {path}")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    folder_read_only = not os.access(path.resolve().parent, os.W_OK | os.X_OK)
    if folder_read_only and not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm")):
        uri += "&immutable=1"
    timeout = SQLITE_BUSY_TIMEOUT_S

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

    engine = create_engine(url, creator=connect, **kwargs)
    _configure_sqlite(engine, wal=False)

    @event.listens_for(engine, "connect")
    def _query_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    return engine


def checkpoint(engine: Engine, *, busy_timeout_s: float = 5.0) -> bool:
    """Copy a SQLite database's write-ahead log into the main file and empty the log
    (``PRAGMA wal_checkpoint(TRUNCATE)``), so that the ``.db`` file alone holds all
    committed data (a plain ``cp`` of it is then a complete copy, until the next write).

    Waits up to ``busy_timeout_s`` for other connections' readers and writers. True when
    the log was emptied (or there is nothing to do: not SQLite, not in WAL mode); False
    when another connection kept it from completing (the data is safe in the log, and
    SQLite checkpoints it later)."""
    if engine.url.get_backend_name() != "sqlite":
        return True
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        if connection.in_transaction:  # a pooled connection left mid-transaction: not ours to end
            return False
        if str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            return True
        before = connection.execute("PRAGMA busy_timeout").fetchone()[0]
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        try:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(before)}")
        return busy == 0
    finally:
        raw.close()


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
    from several processes (hosts) at once: the upgrade runs in one transaction that
    first takes the database's write lock (``BEGIN IMMEDIATE`` on SQLite, a
    transaction-level advisory lock on PostgreSQL), so a second caller waits and then
    finds nothing to do. Without it, PostgreSQL lets both create the same tables and
    one fails (duplicate key in ``pg_type``).
    """
    if isinstance(url_or_engine, Engine):
        engine = url_or_engine
    else:
        engine = make_engine(url_or_engine)
    config = alembic_config()
    with immediate_engine(engine).connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a table (copy, DROP, rename); with foreign keys on,
            # the DROP would run the ON DELETE actions of every table that refers to it.
            # The pragma is a no-op inside a transaction, so it is set before BEGIN, and the
            # references are checked before commit instead.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    # released at commit; READ COMMITTED (the default) then sees the winner's schema
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": POSTGRES_MIGRATION_LOCK})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
                    raise RuntimeError(f"the schema upgrade would break references: {broken[:5]}")
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")
    return engine


# ---------------------------------------------------------------------- database URLs
# (for flows.config, flows.identity and the CLI: the only places outside flows.storage that
# look at a database URL, without importing SQLAlchemy themselves)

#: the pip package that provides a database driver's Python module, where the names differ
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]' (alflow's postgres extra)",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "cx_Oracle": "cx_Oracle",
    "sqlcipher3": "sqlcipher3-binary",
}


def database_driver_problem(url: str | URL) -> str | None:
    """Why SQLAlchemy cannot open ``url`` here, or None.

    Loads the dialect and imports its DBAPI module, connecting to nothing: an unknown
    database or driver, a driver module that is not installed (named, with the pip
    package to install), or an asyncio driver (alflow's engines are synchronous).
    """
    import sqlalchemy.dialects
    from sqlalchemy.exc import NoSuchModuleError

    url = make_url(url)
    drivername = url.drivername
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        backend = url.get_backend_name()
        try:
            make_url(f"{backend}://").get_dialect()
        except NoSuchModuleError:
            known = ", ".join(sorted(sqlalchemy.dialects.__all__))
            return f"unknown database {backend!r} in {drivername}:// (SQLAlchemy knows {known})"
        return f"unknown driver {url.get_driver_name()!r} for {backend} in {drivername}://"
    if getattr(dialect, "is_async", False):
        return (f"{drivername}:// is an asyncio driver; alflow needs a synchronous one "
                "(e.g. postgresql+psycopg://, sqlite:///)")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        if exc.name is None:  # the module is there but does not import (e.g. a missing C library)
            return f"the {drivername} driver cannot be imported: {exc}"
        top = exc.name.split(".")[0]
        package = DRIVER_PACKAGES.get(exc.name) or DRIVER_PACKAGES.get(top) or top
        if top == "psycopg2":
            package += f", or use psycopg 3: postgresql+psycopg://... and pip install {DRIVER_PACKAGES['psycopg']}"
        driver = drivername if "+" in drivername else f"{drivername}:// (driver {dialect.driver})"
        return f"{driver} needs the Python module {exc.name!r}, which is not installed: pip install {package}"
    return None


def check_database_url(url: str) -> str | None:
    """Why ``url`` cannot be a campaign database here, or None: not a SQLAlchemy URL, or
    a :func:`database_driver_problem`. Connects to nothing."""
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        return f"not a SQLAlchemy database URL ({exc})"
    return database_driver_problem(parsed)


def sqlite_database(url: str | URL) -> str | None:
    """The database part of a SQLite URL as written (a path, ``:memory:``, a ``file:``
    URI, or "" for none); None for other databases."""
    parsed = make_url(url)
    return (parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def in_memory_sqlite(url: str | URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (every process gets its own)."""
    database = sqlite_database(url)
    return database is not None and (database in ("", ":memory:") or database.startswith("file::memory:")
                                     or make_url(url).query.get("mode") == "memory")


def with_database(url: str | URL, database: str) -> str:
    """``url`` with its database part replaced (e.g. a SQLite path made absolute), as text."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def redact_url(url: str | URL) -> str:
    """``url`` as text with its password hidden (``***``): safe to store or show."""
    return make_url(url).render_as_string(hide_password=True)


def database_backend(url: str | URL) -> str:
    """The database of ``url``: "sqlite", "postgresql", ..."""
    return make_url(url).get_backend_name()


def database_identity(database_url: str | URL) -> str:
    """The database a URL points at, as text: backend, host, port and database (a SQLite
    file as its absolute, symlink-free path); no driver, user name, password or query, so
    two spellings of one database agree and no secret is hashed."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    database = url.database or ""
    if backend == "sqlite":
        if database in ("", ":memory:") or database.startswith("file:"):
            return f"sqlite:///{database}"
        return f"sqlite:///{os.path.realpath(Path(database).expanduser())}"
    host = (url.host or "").lower()
    port = f":{url.port}" if url.port else ""
    return f"{backend}://{host}{port}/{database}"


def checkpoint_file(path: str | Path, *, busy_timeout_s: float = 5.0) -> bool:
    """:func:`checkpoint` the SQLite database file ``path`` through a connection of its
    own (closed again: no pool is left behind). Errors (not a database, read-only) are
    raised."""
    from sqlalchemy import pool

    engine = create_engine(f"sqlite:///{Path(path)}", poolclass=pool.NullPool)
    try:
        return checkpoint(engine, busy_timeout_s=busy_timeout_s)
    finally:
        engine.dispose()
