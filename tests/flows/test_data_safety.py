"""Data safety: exports never destroy a file, damaged or foreign databases are refused in
one line and left byte-identical, read-only commands open the database read-only, the
write-ahead log is checkpointed when a writing command ends, and checked online backups."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest

from flows.campaign import open_campaign
from flows.cli import build_parser, main
from flows.storage import (
    StructureSource,
    add_structures,
    complete_label,
    enqueue_labels,
    generation,
    reading,
    transaction,
)

from tests.deploy.helpers import add_pending_frames

from .conftest import write_campaign

ROOT = Path(__file__).resolve().parents[2]
N_LABELS = 4


# --- helpers -------------------------------------------------------------------------

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _labelled_campaign(folder: Path, name: str = "safe-water") -> tuple[Path, Path]:
    """A campaign with ``N_LABELS`` done labels (no flow run); its config and database,
    the engine closed (so the database file alone holds everything)."""
    config = write_campaign(folder, name)
    label_ids = add_pending_frames(config, N_LABELS, seed=3)
    ctx = open_campaign(config)
    with transaction(ctx.engine) as session:
        for label_id in label_ids:
            complete_label(session, label_id, energy_eV=-2000.0, forces_eV_A=np.zeros((3, 3)),
                           level_of_theory=ctx.config.level_of_theory())
    ctx.engine.dispose()
    db = folder / "runs" / name / "alflow.db"
    assert db.exists() and not Path(f"{db}-wal").exists()
    return config, db


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line_error(rc: int, out: str, err: str, *words: str) -> None:
    assert rc == 2, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def _count(db: Path, sql: str = "select count(*) from labels") -> int:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def _tables(db: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(row[0] for row in connection.execute("select name from sqlite_master where type = 'table'"))
    finally:
        connection.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.fixture()
def no_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """``alflow run`` must be refused before its flow starts: the flow is a stub that fails."""
    import flows.active_learning

    class Refused:
        def with_options(self, **_: object) -> Refused:
            return self

        def __call__(self, **_: object) -> None:
            raise AssertionError("the flow started on a database that should have been refused")

    monkeypatch.setattr(flows.active_learning, "active_learning", Refused())


# --- A: exports never destroy a file -------------------------------------------------

@pytest.mark.parametrize("fmt", ["extxyz", "ase-db", "csv"])
def test_export_refuses_an_existing_file_and_replaces_it_only_with_force(tmp_path, capsys, fmt) -> None:
    config, db = _labelled_campaign(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    before = _digest(db)
    _one_line_error(*_cli(capsys, "export", config, "--format", fmt, "--output", notes), "notes.txt exists", "--force")
    assert notes.read_text() == "my notes\n" and _digest(db) == before

    rc, out, err = _cli(capsys, "export", config, "--format", fmt, "--output", notes, "--force")
    assert rc == 0, out + err
    assert f"wrote {N_LABELS} rows" in out
    if fmt == "extxyz":
        assert len(ase.io.read(notes, index=":", format="extxyz")) == N_LABELS
    elif fmt == "ase-db":
        with ase.db.connect(notes, type="db") as exported:
            assert exported.count() == N_LABELS
    else:
        assert len(notes.read_text().splitlines()) == N_LABELS + 1
    assert _leftovers(tmp_path) == [] and _digest(db) == before


@pytest.mark.parametrize("fmt", ["extxyz", "ase-db", "csv"])
def test_export_never_writes_onto_the_campaign_config_or_database(tmp_path, capsys, fmt) -> None:
    config, db = _labelled_campaign(tmp_path)
    originals = {path: _digest(path) for path in (config, db)}
    for target in (config, db, Path(f"{db}-wal")):
        for force in ([], ["--force"]):
            rc, out, err = _cli(capsys, "export", config, "--format", fmt, "--output", target, *force)
            _one_line_error(rc, out, err, "campaign's own")
    assert {path: _digest(path) for path in originals} == originals
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


@pytest.mark.parametrize("fmt", ["ase-db", "csv"])
def test_export_to_a_folder_or_an_unwritable_path_fails_in_one_line(tmp_path, capsys, fmt) -> None:
    config, db = _labelled_campaign(tmp_path)
    before = _digest(db)
    folder = tmp_path / "exports"
    folder.mkdir()
    _one_line_error(*_cli(capsys, "export", config, "--format", fmt, "--output", folder, "--force"), "folder")
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file where a folder should be\n")
    _one_line_error(*_cli(capsys, "export", config, "--format", fmt, "--output", blocker / "out.db"),
                    "cannot write", "not a folder")
    assert blocker.read_text() == "a file where a folder should be\n"
    assert list(folder.iterdir()) == [] and _leftovers(tmp_path) == [] and _digest(db) == before


def test_a_failed_export_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    from flows.storage import export

    config, _ = _labelled_campaign(tmp_path)
    output = tmp_path / "frames.extxyz"
    output.write_text("the earlier export\n")

    def half_then_fail(path, frames, format):  # noqa: A002 (ase's keyword)
        Path(path).write_text("half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.ase.io, "write", half_then_fail)
    ctx = open_campaign(config, create=False)
    with reading(ctx.engine) as session, pytest.raises(RuntimeError, match="disk full"):
        export.export_extxyz(session, ctx.campaign_id, output)
    assert output.read_text() == "the earlier export\n"
    assert _leftovers(tmp_path) == []


# --- B: export refuses a database that fails the integrity check --------------------

def _break_an_index(db: Path) -> None:
    """Change one rowid in the ``ix_labels_status`` index (a leaf page): the table still
    reads, PRAGMA integrity_check fails."""
    connection = sqlite3.connect(db)
    root, = connection.execute("select rootpage from sqlite_master where name = 'ix_labels_status'").fetchone()
    page_size, = connection.execute("pragma page_size").fetchone()
    connection.close()
    data = bytearray(db.read_bytes())
    page = (root - 1) * page_size
    assert data[page] == 0x0A, "expected a leaf index page"
    first_cell = page + int.from_bytes(data[page + 8:page + 10], "big")
    payload = data[first_cell]
    assert payload < 0x80
    data[first_cell + payload] ^= 0x07  # the record's last byte: the rowid
    db.write_bytes(bytes(data))


def test_export_refuses_a_database_that_fails_the_integrity_check(tmp_path, capsys) -> None:
    config, db = _labelled_campaign(tmp_path)
    _break_an_index(db)
    assert _count(db, "select count(*) from pragma_integrity_check where integrity_check != 'ok'") > 0
    before = _digest(db)
    output = tmp_path / "frames.extxyz"
    _one_line_error(*_cli(capsys, "export", config, "--output", output), "integrity_check")
    assert not output.exists() and _digest(db) == before


# --- C: the write-ahead log is checkpointed when a writing command ends ------------

def test_after_alflow_run_the_db_file_alone_holds_all_labels(prefect_harness, tmp_path, capsys) -> None:
    config = write_campaign(tmp_path, "checkpointed-water")
    db = tmp_path / "runs" / "checkpointed-water" / "alflow.db"
    rc, out, err = _cli(capsys, "run", config, "--generations", "0")
    assert rc == 0, out[-3000:] + err[-3000:]
    copy = tmp_path / "copied.db"
    shutil.copyfile(db, copy)  # the .db file only, no -wal, no -shm
    labels = _count(db)
    assert labels > 0
    assert "labels" in _tables(copy)
    assert _count(copy) == labels
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_a_failed_run_checkpoints_too(tmp_path, capsys, monkeypatch) -> None:
    import flows.cli

    config = write_campaign(tmp_path, "failing-water")
    db = tmp_path / "runs" / "failing-water" / "alflow.db"
    engines = []

    def writes_then_fails(args) -> int:
        ctx = open_campaign(args.config)  # engine left open: the rows stay in the -wal file
        engines.append(ctx.engine)
        with transaction(ctx.engine) as session:
            zero = generation(session, ctx.campaign_id, 0)
            frames = [ctx.config.system.atoms() for _ in range(3)]
            for i, atoms in enumerate(frames):
                atoms.positions[0, 0] += 0.01 * i
            add_structures(session, ctx.campaign_id, frames, source=StructureSource.MD, generation_id=zero.id)
        raise LookupError("the run failed")

    monkeypatch.setattr(flows.cli, "cmd_run", writes_then_fails)
    try:
        _one_line_error(*_cli(capsys, "run", config), "the run failed")
        copy = tmp_path / "copied.db"
        shutil.copyfile(db, copy)
        assert _count(copy, "select count(*) from structures") == 3
    finally:
        for engine in engines:
            engine.dispose()


def test_checkpoint_moves_the_log_into_the_main_file(tmp_path) -> None:
    from flows.storage import init_db
    from flows.storage.engine import checkpoint

    db = tmp_path / "c.db"
    engine = init_db(f"sqlite:///{db}")
    with engine.begin() as connection:
        connection.exec_driver_sql("create table scratch (x)")
        connection.exec_driver_sql("insert into scratch values (1), (2)")
    assert Path(f"{db}-wal").stat().st_size > 0
    assert checkpoint(engine) is True
    assert Path(f"{db}-wal").stat().st_size == 0
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    assert _count(copy, "select count(*) from scratch") == 2
    engine.dispose()


# --- D: alflow backup ----------------------------------------------------------------

def test_backup_is_a_checked_single_file_copy_and_never_overwrites(tmp_path, capsys) -> None:
    config, db = _labelled_campaign(tmp_path)
    before = _digest(db)
    dest = tmp_path / "backups" / "safe.db"
    rc, out, err = _cli(capsys, "backup", config, dest)
    assert rc == 0, out + err
    assert "integrity_check ok" in out
    assert _count(dest) == N_LABELS
    connection = sqlite3.connect(dest)
    assert connection.execute("pragma journal_mode").fetchone()[0] == "delete"
    assert connection.execute("pragma integrity_check").fetchone()[0] == "ok"
    connection.close()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["safe.db"]

    copy_digest = _digest(dest)
    _one_line_error(*_cli(capsys, "backup", config, dest), "exists", "--force")
    assert _digest(dest) == copy_digest
    rc, out, err = _cli(capsys, "backup", config, dest, "--force")
    assert rc == 0, out + err
    for target in (config, db):
        _one_line_error(*_cli(capsys, "backup", config, target, "--force"), "campaign's own")
    _one_line_error(*_cli(capsys, "backup", config, dest.parent, "--force"), "folder")
    assert _digest(db) == before and _leftovers(dest.parent) == []


def test_backup_while_another_connection_holds_a_write_transaction(tmp_path, capsys) -> None:
    config, db = _labelled_campaign(tmp_path)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("pragma journal_mode = wal")
    writer.execute("begin immediate")
    writer.execute("update labels set status = 'failed'")
    try:
        start = time.monotonic()
        rc, out, err = _cli(capsys, "backup", config, tmp_path / "during.db")
        assert rc == 0, out + err
        assert time.monotonic() - start < 20  # not waiting for the writer
        # the last committed state, not the open transaction
        assert _count(tmp_path / "during.db", "select count(*) from labels where status = 'done'") == N_LABELS
    finally:
        writer.execute("commit")
        writer.close()
    rc, out, err = _cli(capsys, "backup", config, tmp_path / "after.db")
    assert rc == 0, out + err
    assert _count(tmp_path / "after.db", "select count(*) from labels where status = 'failed'") == N_LABELS


def test_backup_while_another_process_writes(tmp_path, capsys) -> None:
    config, db = _labelled_campaign(tmp_path)
    setup = sqlite3.connect(db)
    setup.execute("pragma journal_mode = wal")
    setup.execute("create table scratch (x blob)")
    setup.commit()
    setup.close()
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], timeout=30)\n"
        "end = time.monotonic() + 8\n"
        "while time.monotonic() < end:\n"
        "    c.execute('insert into scratch values (randomblob(2000))'); c.commit()\n"
        "print('done')\n"), str(db)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        copies = []
        for i in range(3):
            dest = tmp_path / f"live-{i}.db"
            rc, out, err = _cli(capsys, "backup", config, dest)
            assert rc == 0, out + err
            copies.append(_count(dest, "select count(*) from scratch"))
            assert _count(dest) == N_LABELS
        assert writer.poll() is None, "the writer should still be writing"
    finally:
        assert writer.communicate(timeout=60)[0].strip() == "done"
    assert copies == sorted(copies) and copies[-1] > 0
    assert _count(db, "select count(*) from scratch") >= copies[-1]


def test_backup_of_a_server_database_points_to_its_own_tools(tmp_path, capsys) -> None:
    from flows.storage.backup import UnusableDatabase, backup_database

    with pytest.raises(UnusableDatabase, match="pg_dump") as refused:
        backup_database("postgresql://al:secret@db.example/al", tmp_path / "remote.db")
    assert "secret" not in str(refused.value) and not (tmp_path / "remote.db").exists()
    pytest.importorskip("psycopg")  # the config accepts a postgresql URL only with a driver
    config = write_campaign(tmp_path, "remote-water")
    text = config.read_text().replace(
        'name = "remote-water"', 'name = "remote-water"\ndatabase_url = "postgresql+psycopg://al:secret@db.example/al"')
    config.write_text(text)
    rc, out, err = _cli(capsys, "backup", config, tmp_path / "remote.db")
    _one_line_error(rc, out, err, "pg_dump")
    assert "secret" not in err and not (tmp_path / "remote.db").exists()


# --- E: read-only opening, foreign and damaged files --------------------------------

def _older_schema(db: Path) -> str:
    """Take an alflow database one migration back; the revision it is at."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from flows.storage.engine import alembic_config, make_engine

    config = alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    previous = ScriptDirectory.from_config(config).get_revision(head).down_revision
    if previous is None:
        pytest.skip("only one migration: no older schema to test")
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, str(previous))
    engine.dispose()
    return str(previous)


def _foreign(db: Path, kind: str) -> list[str]:
    """Make ``db`` a SQLite file that is not an alflow database; the words of the refusal."""
    if kind == "zero-bytes":
        db.write_bytes(b"")
        return ["not an alflow database"]
    connection = sqlite3.connect(db)
    if kind == "empty":
        connection.execute("pragma user_version = 7")  # a valid database file with no tables
        words = ["not an alflow database"]
    elif kind == "unrelated-tables":
        connection.execute("create table notes (body text)")
        connection.execute("insert into notes values ('mine')")
        words = ["not an alflow database", "notes"]
    else:  # a revision these migrations do not know
        connection.execute("create table alembic_version (version_num varchar(32) primary key)")
        connection.execute("insert into alembic_version values ('9999_from_the_future')")
        words = ["unknown to this alflow"]
    connection.commit()
    connection.close()
    return words


@pytest.mark.parametrize("kind", ["zero-bytes", "empty", "unrelated-tables", "newer"])
def test_read_only_commands_refuse_a_foreign_sqlite_file_and_never_add_tables(tmp_path, capsys, kind) -> None:
    config = write_campaign(tmp_path, "foreign-water")
    db = tmp_path / "runs" / "foreign-water" / "alflow.db"
    db.parent.mkdir(parents=True)
    words = _foreign(db, kind)
    before, files = _digest(db), sorted(os.listdir(db.parent))
    for argv in (["status", config], ["status", config, "--json"], ["export", config, "--output", tmp_path / "x.xyz"],
                 ["report", config, "--output", tmp_path / "report"]):
        _one_line_error(*_cli(capsys, *argv), *words)
        assert _digest(db) == before, argv
        assert sorted(os.listdir(db.parent)) == files, argv  # no -wal, -shm or journal either
    assert not (tmp_path / "x.xyz").exists() and not (tmp_path / "report").exists()


def test_read_only_commands_refuse_an_older_schema_without_upgrading_it(tmp_path, capsys) -> None:
    config, db = _labelled_campaign(tmp_path)
    revision = _older_schema(db)
    before = _digest(db)
    for argv in (["status", config], ["export", config, "--output", tmp_path / "x.xyz"],
                 ["report", config, "--output", tmp_path / "report"]):
        _one_line_error(*_cli(capsys, *argv), "older alflow schema", revision, "alflow run")
        assert _digest(db) == before, argv


@pytest.mark.parametrize("kind", ["unrelated-tables", "newer"])
def test_run_refuses_a_foreign_database_unchanged(tmp_path, capsys, no_flow, kind) -> None:
    config = write_campaign(tmp_path, "foreign-water")
    db = tmp_path / "runs" / "foreign-water" / "alflow.db"
    db.parent.mkdir(parents=True)
    words = _foreign(db, kind)
    before = _digest(db)
    _one_line_error(*_cli(capsys, "run", config), *words)
    assert _digest(db) == before and "campaigns" not in _tables(db)


DAMAGE = ["random-bytes", "text", "truncated", "truncated-mid-page", "garbled"]
COMMANDS = ["run", "status", "export", "report", "backup"]


def _damage(db: Path, kind: str) -> None:
    data = db.read_bytes()
    rng = np.random.default_rng(11)
    if kind == "random-bytes":
        db.write_bytes(rng.integers(0, 256, 65536, dtype=np.uint8).tobytes())
    elif kind == "text":
        db.write_text("this is not a database, it is a text file\n" * 50)
    elif kind == "truncated":  # an interrupted copy: whole pages, but too few
        db.write_bytes(data[:len(data) // 2 // 4096 * 4096])
    elif kind == "truncated-mid-page":
        db.write_bytes(data[:len(data) // 2 + 1000])
    else:  # the header page intact, everything after it overwritten
        db.write_bytes(data[:4096] + rng.integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_database_fails_in_one_line_for_every_command_and_stays_unchanged(
        tmp_path, capsys, no_flow, kind) -> None:
    config, db = _labelled_campaign(tmp_path)
    _damage(db, kind)
    before = _digest(db)
    argv = {"run": ["run", config], "status": ["status", config],
            "export": ["export", config, "--output", tmp_path / "x.extxyz"],
            "report": ["report", config, "--output", tmp_path / "report"],
            "backup": ["backup", config, tmp_path / "copy.db"]}
    for command in COMMANDS:
        rc, out, err = _cli(capsys, *argv[command])
        _one_line_error(rc, out, err, str(db))
        assert any(word in err for word in ("not a SQLite database", "truncated", "corrupted", "integrity")), err
        assert _digest(db) == before, command
    assert not (tmp_path / "x.extxyz").exists() and not (tmp_path / "copy.db").exists()
    assert _leftovers(tmp_path) == []


READ_ONLY_SCRIPT = """
import json, sys
from flows.cli import main
config, out = sys.argv[1], sys.argv[2]
rcs = {name: main(argv) for name, argv in [
    ("status", ["status", config, "--json"]),
    ("export", ["export", config, "--output", out + "/frames.extxyz"]),
    ("csv", ["export", config, "--format", "csv", "--output", out + "/labels.csv"]),
    ("report", ["report", config, "--output", out + "/report"]),
    ("backup", ["backup", config, out + "/backup.db"]),
    ("report-in-place", ["report", config]),
    ("export-in-place", ["export", config]),
    ("run", ["run", config]),
]}
print("RESULT " + json.dumps(rcs))
"""


def _without_root_override() -> list[str]:
    """A command prefix under which permission bits apply: nothing for a normal user; for
    root, ``setpriv`` dropping the capabilities that bypass them (skip if unavailable)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make files read-only")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr!r}")
    return prefix


def _chmod_read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


@pytest.mark.parametrize("wal", [False, True], ids=["checkpointed", "with-wal-files"])
def test_read_only_commands_work_on_a_read_only_copy(tmp_path, wal) -> None:
    prefix = _without_root_override()
    (tmp_path / "original").mkdir()
    config, db = _labelled_campaign(tmp_path / "original")
    keep_open = None
    if wal:  # copied while a process had recent data in the log: .db, -wal and -shm
        keep_open = sqlite3.connect(db)
        keep_open.execute("pragma wal_autocheckpoint = 0")
        keep_open.execute("update labels set worker = 'after-checkpoint'")
        keep_open.commit()
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "original", copy)
    if keep_open is not None:
        keep_open.close()
        assert Path(f"{copy / db.relative_to(tmp_path / 'original')}-wal").stat().st_size > 0
    copy_config = copy / config.name
    copy_db = copy / db.relative_to(tmp_path / "original")
    out = tmp_path / "out"
    out.mkdir()
    _chmod_read_only(copy)
    digests = {p: _digest(p) for p in copy.rglob("*") if p.is_file()}
    probe = subprocess.run([*prefix, "touch", str(copy_db.parent / "probe")], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the copy is still writable here")
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, str(copy_config), str(out)],
                                cwd=ROOT, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "MPLCONFIGDIR": str(out / "mpl")})
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout[-3000:] + result.stderr[-3000:]
    rcs = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert rcs == {"status": 0, "export": 0, "csv": 0, "report": 0, "backup": 0, "report-in-place": 2,
                   "export-in-place": 2, "run": 2}, result.stdout[-3000:] + result.stderr[-3000:]
    status, _ = json.JSONDecoder().raw_decode(result.stdout, result.stdout.index("{"))
    assert status["labels"] == N_LABELS
    assert len(ase.io.read(out / "frames.extxyz", index=":")) == N_LABELS
    assert (out / "report" / "report.md").exists()
    assert _count(out / "backup.db") == N_LABELS
    if wal:
        assert _count(out / "backup.db", "select count(*) from labels where worker = 'after-checkpoint'") == N_LABELS
    refusals = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(refusals) == 3, result.stderr
    assert "cannot write the report" in refusals[0] and "Permission denied" in refusals[1]
    assert any(words in refusals[2] for words in ("read-only", "not writable", "cannot write")), refusals[2]
    assert {p: _digest(p) for p in copy.rglob("*") if p.is_file()} == digests


# --- F, G: the command line ------------------------------------------------------------

def test_run_refuses_a_negative_generation_count(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "campaign.toml", "--generations", "-1"])
    assert exit_.value.code == 2
    assert "--generations: must be 0 or more, got -1" in capsys.readouterr().err
    assert build_parser().parse_args(["run", "campaign.toml", "--generations", "0"]).generations == 0


def test_the_parser_is_built_without_heavy_imports() -> None:
    check = ("import sys; from flows.cli import build_parser; parser = build_parser(); "
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
             "{'prefect', 'torch', 'sqlalchemy', 'ase', 'pandas', 'alembic', 'matplotlib', 'pydantic'}); "
             "print(heavy); "
             "help = parser._subparsers._group_actions[0].choices['deploy'].format_help(); "
             "assert '--cron' in help and '--pool' in help, help")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_deploy_serve_still_takes_the_deploy_options() -> None:
    from flows.cli import add_deploy_arguments
    from flows.deployments import add_deploy_arguments as reexported

    assert reexported is add_deploy_arguments
    result = subprocess.run([sys.executable, "deploy/serve.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "--retrain-min-labels" in result.stdout, result.stderr


# --- PostgreSQL: read-only commands neither migrate nor write -------------------------

@pytest.fixture(scope="module")
def pg_cluster():
    try:
        from .postgres_helpers import postgres_cluster, why_unavailable
    except ImportError:
        pytest.skip("no PostgreSQL test helpers")
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster() as cluster:
        yield cluster


def test_read_only_commands_on_postgres_never_migrate_or_write(pg_cluster, tmp_path, capsys) -> None:
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.exc import DBAPIError

    url = pg_cluster.create_database("data_safety_read_only")
    config = write_campaign(tmp_path, "pg-water")
    header = 'name = "pg-water"\n'
    config.write_text(config.read_text().replace(header, f'{header}database_url = "{url}"\n', 1))
    plain = create_engine(url)
    try:
        # an empty database: refused, and no table created
        _one_line_error(*_cli(capsys, "status", config), "not an alflow database")
        with plain.connect() as connection:
            assert inspect(connection).get_table_names() == []
        open_campaign(config).engine.dispose()  # create the campaign
        rc, out, err = _cli(capsys, "status", config, "--json")
        assert rc == 0 and json.loads(out)["labels"] == 0, out + err
        ctx = open_campaign(config, create=False)
        with pytest.raises(DBAPIError, match="read-only"), ctx.engine.begin() as connection:
            connection.execute(text("UPDATE campaigns SET name = 'renamed'"))
        ctx.engine.dispose()
        _one_line_error(*_cli(capsys, "backup", config, tmp_path / "pg.db"), "pg_dump")
    finally:
        plain.dispose()
