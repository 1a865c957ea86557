"""Data safety: checking a campaign database before use, writing outputs without ever
destroying a file, and consistent backups of a SQLite campaign database.

- :func:`check_database_file`, :func:`check_length`: a file, whole pages?
- :func:`check_schema`: is it an alflow database at this alflow's schema (read-only)?
- :func:`check_integrity`: ``PRAGMA integrity_check`` (or ``quick_check``);
- :func:`check_before_writing`: all three before a command writes to an existing file;
- :func:`replacing`: write an output through a temporary file in its folder, renamed
  into place only once complete (no-clobber unless told to overwrite);
- :func:`backup_database`: SQLite's online backup API into a new file, checked.

Every refusal is :class:`UnusableDatabase` (a ``LookupError``) or :class:`OutputError`
(a ``ValueError``): one line, exit 2 from the CLI, and the files untouched.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, pool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from flows.storage.engine import read_only_engine

#: SQLite result codes (``sqlite3.Error.sqlite_errorname``) of a file that is no usable database
DAMAGED = {"SQLITE_NOTADB": "not a SQLite database", "SQLITE_CORRUPT": "corrupted"}


class UnusableDatabase(LookupError):
    """The campaign database cannot be used as it is: not a database, damaged, not
    alflow's, or at another schema revision. Nothing was changed."""


class OutputError(ValueError):
    """An output file that must not (it exists, it is the campaign's own config or
    database) or cannot (a folder, no permission) be written. Nothing was changed."""


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    database = parsed.database or ""
    if (parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:")
            or parsed.query.get("mode") == "memory"):
        return None
    return Path(database).expanduser()


def sidecar_files(path: Path) -> list[Path]:
    """SQLite's companions of a database file (write-ahead log, shared memory, journal)."""
    return [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal")]


def damage(exc: BaseException) -> str | None:
    """What a SQLite error says about the file ("not a SQLite database", "corrupted"),
    or None if it is another kind of error (locked, missing table, a bug...)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.DatabaseError) or isinstance(orig, sqlite3.IntegrityError):
        return None
    return DAMAGED.get(getattr(orig, "sqlite_errorname", ""))


def damaged_error(path: Path | str, exc: BaseException) -> UnusableDatabase:
    """The one-line refusal for a SQLite error that ``damage`` recognises."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if getattr(orig, "sqlite_errorname", "") == "SQLITE_NOTADB":
        return UnusableDatabase(f"{path} is not a SQLite database ({orig}); check [campaign] database_url in the "
                                f"config, or restore the file from a backup")
    return UnusableDatabase(f"{path} is {damage(exc)} ({orig}); restore it from a backup (alflow backup makes one)")


def unwritable_error(path: Path | str, exc: BaseException) -> UnusableDatabase | None:
    """The one-line refusal for a SQLite error saying the database cannot be written
    (a read-only file or folder: ``SQLITE_READONLY*``, ``SQLITE_CANTOPEN``); else None."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    name = getattr(orig, "sqlite_errorname", "") if isinstance(orig, sqlite3.Error) else ""
    if not (name.startswith("SQLITE_READONLY") or name.startswith("SQLITE_CANTOPEN")):
        return None
    return UnusableDatabase(f"cannot write {path} ({orig}): is the file or its folder read-only? alflow status, "
                            f"export, report --output DIR and backup read a read-only campaign")


def check_database_file(path: Path) -> None:
    """Refuse a folder where the database file should be.

    The file itself is never opened here, only ``stat``-ed: closing any file descriptor
    of a SQLite database releases every POSIX lock this process holds on it, those of
    its SQLite connections included (another process could then delete the write-ahead
    log under them: "disk I/O error"). SQLite itself tells a non-database
    (``SQLITE_NOTADB``) and a file shorter than its header says (``SQLITE_CORRUPT``);
    see :func:`damage` and :func:`check_length`."""
    if path.is_dir():
        raise UnusableDatabase(f"{path} is a folder, not a SQLite database file")


def check_length(connection: Any, path: Path) -> None:
    """Refuse a file that does not end on a page boundary (a copy cut short) while no
    write-ahead log holds data: SQLite database files are whole pages."""
    wal = Path(f"{path}-wal")
    size = path.stat().st_size
    if size == 0 or (wal.exists() and wal.stat().st_size > 0):
        return
    page_size = int(connection.exec_driver_sql("PRAGMA page_size").scalar() or 0)
    if page_size and size % page_size:
        raise UnusableDatabase(f"{path} is truncated ({size} bytes, not a whole number of {page_size}-byte "
                               f"pages); restore it from a backup (alflow backup makes one)")


def _tables(connection: Any) -> list[str]:
    return sorted(inspect(connection).get_table_names())


def schema_problem(connection: Any) -> tuple[str, str | None]:
    """(kind, revision) of the database behind ``connection`` against this alflow's
    migrations: kind is "current", "empty", "foreign" (tables, but no alembic_version),
    "older" or "unknown" (a revision these migrations do not have); read-only."""
    from alembic.script import ScriptDirectory

    from flows.storage.engine import alembic_config

    tables = _tables(connection)
    if "alembic_version" not in tables:
        return ("foreign" if tables else "empty"), None
    revisions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    script = ScriptDirectory.from_config(alembic_config())
    if sorted(revisions) == sorted(script.get_heads()):
        return "current", revisions[0] if revisions else None
    revision = ", ".join(revisions) or None
    if not revisions:
        return "empty", None
    try:
        for rev in revisions:
            if script.get_revision(rev) is None:
                return "unknown", revision
    except Exception:  # alembic.util.CommandError / ResolutionError: not in these migrations
        return "unknown", revision
    return "older", revision


def check_schema(engine: Engine, where: str, config: str | None = None, path: Path | None = None) -> None:
    """Refuse (``UnusableDatabase``) unless ``engine``'s database is an alflow database at
    the newest schema revision (and, given its file ``path``, whole pages); reads only."""
    from alembic.script import ScriptDirectory

    from flows.storage.engine import alembic_config

    try:
        with engine.connect() as connection:
            kind, revision = schema_problem(connection)  # reads the header first: SQLITE_NOTADB
            if path is not None:
                check_length(connection, path)
            tables = _tables(connection) if kind == "foreign" else []
    except DBAPIError as exc:
        if damage(exc):
            raise damaged_error(where, exc) from None
        raise
    head = ", ".join(ScriptDirectory.from_config(alembic_config()).get_heads())
    run = f"`alflow run {config}`" if config else "`alflow run CONFIG`"
    if kind == "empty":
        raise UnusableDatabase(f"{where} is not an alflow database (it holds no alflow tables); "
                               f"run {run} to start the campaign")
    if kind == "foreign":
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise UnusableDatabase(f"{where} is not an alflow database (no alembic_version table; it holds {shown}); "
                               f"check [campaign] database_url in the config")
    if kind == "older":
        raise UnusableDatabase(f"{where} has an older alflow schema (revision {revision}; this alflow needs {head}): "
                               f"run {run} once to upgrade it")
    if kind == "unknown":
        raise UnusableDatabase(f"{where} has schema revision {revision}, unknown to this alflow (which knows up to "
                               f"{head}): written by a newer alflow? upgrade alflow")


def check_integrity(engine: Engine, where: str, *, quick: bool = False) -> None:
    """Refuse (``UnusableDatabase``) a SQLite database that fails ``PRAGMA integrity_check``
    (``quick_check`` with ``quick``: no index contents, faster); other databases pass."""
    if engine.url.get_backend_name() != "sqlite":
        return
    pragma = "quick_check" if quick else "integrity_check"
    try:
        with engine.connect() as connection:
            problems = [str(row[0]) for row in connection.exec_driver_sql(f"PRAGMA {pragma}")]
    except DBAPIError as exc:
        if damage(exc):
            raise damaged_error(where, exc) from None
        raise
    if problems != ["ok"]:
        more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise UnusableDatabase(f"{where} fails SQLite's {pragma} ({problems[0]}{more}); "
                               f"restore it from a backup (alflow backup makes one)")


def check_before_writing(url: str | URL, *, quick_check: bool = True) -> None:
    """Before a command writes to an existing SQLite campaign database: refuse a file that
    is not a SQLite database, is truncated or damaged (``quick_check``), holds another
    application's tables, or is at a schema revision these migrations do not know.
    An empty file and an older alflow schema pass (``init_db`` creates or upgrades them).
    A read-only file or folder is refused too (SQLite would fail at the first write).
    Reads only; other databases and missing files pass."""
    path = sqlite_file(url)
    if path is None or not path.exists():
        return
    check_database_file(path)
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise UnusableDatabase(f"cannot write {path}: the file or its folder is read-only; alflow status, export, "
                               f"report --output DIR and backup read a read-only campaign")
    if path.stat().st_size == 0:
        return
    engine = read_only_engine(url, poolclass=pool.NullPool)
    try:
        try:
            with engine.connect() as connection:
                kind, revision = schema_problem(connection)
                tables = _tables(connection)
                check_length(connection, path)
        except DBAPIError as exc:
            if damage(exc):
                raise damaged_error(path, exc) from None
            raise
        if kind == "foreign":
            raise UnusableDatabase(f"{path} is not an alflow database (no alembic_version table; it holds "
                                   f"{', '.join(tables[:5])}{' ...' if len(tables) > 5 else ''}); check "
                                   f"[campaign] database_url in the config")
        if kind == "unknown":
            raise UnusableDatabase(f"{path} has schema revision {revision}, unknown to this alflow: written by a "
                                   f"newer alflow? upgrade alflow")
        if quick_check:
            check_integrity(engine, str(path), quick=True)
    finally:
        engine.dispose()


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: Path, *, overwrite: bool, protected: Iterable[Path] = ()) -> None:
    """Refuse to write ``path`` when it is one of ``protected`` (the campaign's config and
    database files: never, even with ``overwrite``), a folder, or an existing file
    without ``overwrite``."""
    for kept in protected:
        if _same_file(path, Path(kept)):
            raise OutputError(f"refusing to write {path}: it is the campaign's own {Path(kept).name}; "
                              f"choose another output path")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file path to write")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{path} exists; pass --force to replace it (or choose another output path)")


@contextmanager
def replacing(path: str | Path, *, overwrite: bool = False, protected: Iterable[Path] = (),
              suffix: str = "") -> Iterator[Path]:
    """Yield a new, empty temporary file in ``path``'s folder to write the output into;
    when the block ends without an exception, move it onto ``path`` in one rename
    (``os.replace``). ``path`` is never removed or half-written: a failure leaves it as
    it was and removes the temporary file (and SQLite's companions of it).

    Without ``overwrite`` an existing ``path`` is refused (``OutputError``), also one
    that appears while the output is written (hard link, no clobbering). ``suffix`` ends
    the temporary file's name (some writers choose a format by it, e.g. ".db").
    File system errors (no permission, a file in place of the folder) are
    ``OutputError`` too."""
    path = Path(path)
    protected = list(protected)
    check_output(path, overwrite=overwrite, protected=protected)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: {path.parent} is not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield temporary
        check_output(path, overwrite=overwrite, protected=protected)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if path appeared meanwhile
            except FileExistsError:
                raise OutputError(f"{path} exists; pass --force to replace it (or choose another output path)") from None
            except OSError:  # no hard links on this file system
                os.replace(temporary, path)
            else:
                temporary.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        for leftover in (temporary, *sidecar_files(temporary)):
            leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class BackupResult:
    source: Path
    destination: Path
    pages: int
    bytes: int


def backup_database(url: str | URL, destination: str | Path, *, overwrite: bool = False,
                    protected: Iterable[Path] = ()) -> BackupResult:
    """Copy a SQLite database to ``destination`` with SQLite's online backup API: one
    consistent snapshot (the last committed transaction), safe while another process
    writes (in WAL mode the copy does not block writers). The copy is written to a
    temporary file, made a single file (``journal_mode=DELETE``), checked with
    ``PRAGMA integrity_check`` and only then renamed onto ``destination``; without
    ``overwrite`` an existing ``destination`` is refused. The source is opened read-only.

    Raises ``UnusableDatabase`` for a URL that is not a SQLite file (use the database's
    own tools), a missing, damaged or non-database source, or a copy that fails the
    check; ``OutputError`` for a destination that cannot or must not be written."""
    source = sqlite_file(url)
    if source is None:
        shown = make_url(url).render_as_string(hide_password=True)
        raise UnusableDatabase(f"alflow backup copies SQLite database files only; back up {shown} with the "
                               f"database's own tools (PostgreSQL: pg_dump)")
    if not source.exists():
        raise LookupError(f"no database {source} to back up; run the campaign first")
    check_database_file(source)
    destination = Path(destination)
    engine = read_only_engine(url, poolclass=pool.NullPool)
    try:
        with replacing(destination, overwrite=overwrite, protected=[source, *sidecar_files(source), *protected],
                       suffix=".db") as temporary:
            try:
                raw = engine.raw_connection()
            except DBAPIError as exc:
                if damage(exc):
                    raise damaged_error(source, exc) from None
                raise
            try:
                target = sqlite3.connect(temporary)
                try:
                    raw.driver_connection.backup(target)  # all pages in one step: one read snapshot
                    target.execute("PRAGMA journal_mode = DELETE")
                    problems = [str(row[0]) for row in target.execute("PRAGMA integrity_check")]
                    pages = int(target.execute("PRAGMA page_count").fetchone()[0])
                finally:
                    target.close()
            except sqlite3.DatabaseError as exc:
                if damage(exc):
                    raise damaged_error(source, exc) from None
                raise UnusableDatabase(f"cannot back up {source}: {exc}") from None
            finally:
                raw.close()
            if problems != ["ok"]:
                raise UnusableDatabase(f"the copy of {source} fails SQLite's integrity_check ({problems[0]}); "
                                       f"nothing written to {destination}; the source is damaged: check it "
                                       f"with sqlite3 {source} 'PRAGMA integrity_check'")
    finally:
        engine.dispose()
    return BackupResult(source, destination, pages, destination.stat().st_size)
