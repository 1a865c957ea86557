"""Bad places and a reference that cannot label: one clear line and exit 2, never a traceback.

A database URL whose driver is missing or unknown, an in-memory SQLite database, and a
work_dir or database folder that is a file or not writable are refused when the config
is loaded, before any database is created or any QM runs. A reference that fails every
generation-0 label stops the run with that reason; the failed labels stay in the
database (quarantined, with their errors) and a rerun after fixing [reference] retries them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import flows.active_learning  # noqa: F401  (Prefect sets up its log handlers now, not inside capsys)
from flows.cli import main
from flows.config import ConfigError, load_config
from flows.storage import CommitteeRow, LabelRow, LabelStatus, Structure, make_engine

from .conftest import write_campaign


def _with(config: Path, section: str, lines: str) -> Path:
    """``config`` with ``lines`` added at the top of ``[section]``."""
    text = config.read_text()
    assert f"[{section}]\n" in text
    config.write_text(text.replace(f"[{section}]\n", f"[{section}]\n{lines}\n", 1))
    return config


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting exit 2; return its one error line (no traceback anywhere)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    return errors[0]


def _refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: Path) -> str:
    """``alflow run`` and ``alflow status`` both refuse ``config`` before creating anything."""
    before = _files(tmp_path)
    line = _refused(capsys, ["run", str(config)])
    assert _refused(capsys, ["status", str(config)]) == line
    assert _files(tmp_path) == before  # no database, no work_dir, nothing
    assert not list(tmp_path.rglob("*.db"))
    return line


DRIVERS = [
    # (database_url, words the error must contain)
    ("mysql+mysqldb://u:s3cretpw@h/db", ["'MySQLdb'", "not installed", "pip install mysqlclient"]),
    ("postgresql+pg8000://u@h/db", ["'pg8000'", "not installed", "pip install pg8000"]),
    ("foo://x", ["unknown database 'foo'", "postgresql, sqlite"]),
    ("postgresql+nosuchdriver://u@h/db", ["unknown driver 'nosuchdriver' for postgresql"]),
    ("postgresql+asyncpg://u@h/db", ["asyncio driver", "synchronous"]),
]


@pytest.mark.parametrize(("url", "words"), DRIVERS, ids=[url.split(":")[0] for url, _ in DRIVERS])
def test_a_database_url_without_its_driver_is_refused_at_load(tmp_path, capsys, url, words) -> None:
    config = _with(write_campaign(tmp_path, "no-driver"), "campaign", f'database_url = "{url}"')
    line = _refused_at_load(tmp_path, capsys, config)
    assert "campaign.database_url" in line and all(word in line for word in words), line
    assert "s3cretpw" not in line  # the URL's password is never echoed


@pytest.mark.skipif(importlib.util.find_spec("psycopg2") is not None, reason="psycopg2 is installed here")
def test_plain_postgresql_url_without_psycopg2_names_both_postgres_drivers(tmp_path, capsys) -> None:
    config = _with(write_campaign(tmp_path, "no-psycopg2"), "campaign", 'database_url = "postgresql://u@h/db"')
    line = _refused_at_load(tmp_path, capsys, config)
    assert "campaign.database_url" in line and "'psycopg2'" in line, line
    assert "pip install psycopg2-binary" in line and "postgresql+psycopg://" in line, line


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///file:alflow?mode=memory&uri=true"])
def test_an_in_memory_sqlite_database_is_refused_at_load(tmp_path, capsys, url) -> None:
    config = _with(write_campaign(tmp_path, "in-memory"), "campaign", f'database_url = "{url}"')
    line = _refused_at_load(tmp_path, capsys, config)
    assert "campaign.database_url" in line and "in-memory SQLite database" in line, line
    assert "its own empty one" in line, line


@pytest.mark.parametrize(("setting", "key", "words"), [
    ('work_dir = "a-file"', "campaign.work_dir", "a-file is a file, not a folder"),
    ('work_dir = "a-file/runs/x"', "campaign.work_dir", "runs/x cannot be created: "),
    ('database_url = "sqlite:///a-file/alflow.db"', "campaign.database_url",
     "the database's folder: "),
    ('database_url = "sqlite:///a-folder"', "campaign.database_url", "a-folder is a folder"),
])
def test_a_work_dir_or_database_path_that_is_a_file_is_refused_at_load(tmp_path, capsys, setting, key,
                                                                        words) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    config = _with(write_campaign(tmp_path, "bad-place"), "campaign", setting)
    line = _refused_at_load(tmp_path, capsys, config)
    assert key in line and words in line, line
    assert line.count("campaign.") == 1, line  # one problem, one line
    assert (tmp_path / "a-file").read_text() == "not a folder\n"


def _deny_writes_to(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``os.access`` says ``folder`` is not writable (the real check, for any user: root
    may write everywhere)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize(("setting", "key"), [
    ('work_dir = "locked/runs"', "campaign.work_dir"),
    ('work_dir = "locked"', "campaign.work_dir"),
    ('database_url = "sqlite:///locked/db/alflow.db"', "campaign.database_url"),
])
def test_a_work_dir_or_database_folder_that_is_not_writable_is_refused_before_a_run(
        tmp_path, capsys, monkeypatch, setting, key) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    config = _with(write_campaign(tmp_path, "locked-out"), "campaign", setting)
    load_config(config)  # readers (status, export, report) may read a read-only campaign copy
    _deny_writes_to(monkeypatch, locked)
    with pytest.raises(ConfigError) as caught:
        load_config(config, writable=True)
    assert [where for where, _ in caught.value.problems] == [key]
    assert "cannot write in" in str(caught.value)
    before = _files(tmp_path)
    line = _refused(capsys, ["run", str(config)])
    assert key in line and f"{locked}" in line and "cannot write in" in line, line
    assert _files(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_work_dir_is_refused_before_a_run(tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    config = _with(write_campaign(tmp_path, "read-only"), "campaign", 'work_dir = "locked/runs"')
    locked.chmod(0o555)
    try:
        line = _refused(capsys, ["run", str(config)])
        assert "campaign.work_dir" in line and "cannot write in" in line, line
        assert not (locked / "runs").exists()
    finally:
        locked.chmod(0o755)


# --------------------------------------------------------------- a reference that always fails
#: converges nothing: one SCF cycle, no recovery cascade, no reused guess
FAILING_REFERENCE = "max_cycle = 1\noptions = {recovery = [], reuse_guess = false}"


def _failing_campaign(tmp_path: Path, name: str, *, optimise_first: bool) -> Path:
    config = _with(write_campaign(tmp_path, name, initial_samples=4), "reference", FAILING_REFERENCE)
    if not optimise_first:  # no QM before the labels: the frames are random displacements
        text = config.read_text().replace('initial_sampler = "normal_modes"', 'initial_sampler = "displacements"')
        config.write_text(text.replace("optimise_first = true", "optimise_first = false"))
    return config


class _Records(logging.Handler):
    """Every record of Prefect's task and flow run loggers, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


@pytest.fixture()
def run_logs():
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.lines
    for logger in loggers:
        logger.removeHandler(handler)


def _labels(db: Path) -> list[tuple[str, str | None, str]]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        with Session(engine) as session:
            rows = session.execute(select(LabelRow.status, LabelRow.error, Structure.source).join(Structure)
                                   .order_by(LabelRow.id)).all()
            committees = session.scalars(select(CommitteeRow)).all()
    finally:
        engine.dispose()
    assert committees == []
    return [(str(status), error, str(source)) for status, error, source in rows]


def test_every_generation0_label_failing_stops_the_run_clearly_and_keeps_the_evidence(
        prefect_harness, tmp_path, capsys, run_logs) -> None:
    config = _failing_campaign(tmp_path, "never-converges", optimise_first=False)
    line = _refused(capsys, ["run", str(config)])
    db = tmp_path / "runs" / "never-converges" / "alflow.db"
    labels = _labels(db)
    n = len(labels)
    assert n == 1 + 4 + 2  # the start geometry, 4 training and 2 validation frames
    assert re.search(rf"reference: all {n} generation-0 labels failed \(first: LabelFailed: SCF did not "
                     r"converge after 1 attempts", line), line
    assert f"see `alflow status {config}`; fix [reference] and rerun" in line, line
    assert "a model needs at least one element" not in line
    assert not any("Traceback" in entry for entry in run_logs), run_logs
    # the failed labels stay quarantined, each with its error
    assert {status for status, _, _ in labels} == {LabelStatus.FAILED.value}
    assert all(error and error.startswith("LabelFailed: SCF did not converge") for _, error, _ in labels)

    # a rerun with the same broken reference fails the same way (and computes them again)
    assert _refused(capsys, ["run", str(config)]) == line
    assert len(_labels(db)) == n

    # fixed [reference] (convergence settings: the level of theory is the same): a rerun
    # retries the quarantined labels and trains generation 0
    config.write_text(config.read_text().replace(FAILING_REFERENCE + "\n", ""))
    assert main(["run", str(config), "--generations", "0"]) == 0, capsys.readouterr().err[-3000:]
    engine = make_engine(f"sqlite:///{db}")
    try:
        with Session(engine) as session:
            statuses = session.scalars(select(LabelRow.status)).all()
            assert len(session.scalars(select(CommitteeRow)).all()) == 1
    finally:
        engine.dispose()
    assert len(statuses) == n and set(statuses) == {LabelStatus.DONE}


def test_a_reference_that_cannot_optimise_the_start_stops_before_any_frame_is_stored(
        prefect_harness, tmp_path, capsys, run_logs) -> None:
    config = _failing_campaign(tmp_path, "cannot-optimise", optimise_first=True)
    line = _refused(capsys, ["run", str(config)])
    assert "reference: optimising the starting structure (loop.optimise_first) failed" in line, line
    assert "LabelFailed: SCF did not converge after 1 attempts" in line and "fix [reference] and rerun" in line
    assert not any("Traceback" in entry for entry in run_logs), run_logs
    assert _labels(tmp_path / "runs" / "cannot-optimise" / "alflow.db") == []
