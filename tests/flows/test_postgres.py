"""alflow on PostgreSQL, the database for campaigns shared between hosts (docs/deploy.md).

A throw-away cluster (``postgres_helpers``) serves the module; every test gets its own
database. The tests skip when the server binaries or psycopg are missing (``.ci/run``
installs the server, ``make test`` the ``postgres`` extra).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from ase.build import molecule
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.cli import main
from flows.storage import (
    Base,
    Campaign,
    LabelRow,
    StructureSource,
    add_structures,
    alembic_config,
    claim_pending_labels,
    enqueue_labels,
    ensure_campaign,
    immediate_engine,
    init_db,
    make_engine,
)

from .conftest import write_campaign
from .postgres_helpers import PostgresCluster, postgres_cluster, why_unavailable
from .test_migrations import current_revision, schema_diffs
from .test_storage import WORKER as CLAIMER_SCRIPT

ROOT = Path(__file__).resolve().parents[2]
LABELLED = re.compile(r"labelled structure (\d+) ")
LOT = {"backend": "pyscf", "method": "pbe", "basis": "def2-svp", "charge": 0,
       "multiplicity": 1, "density_fit": True}

#: decided before any fixture: a skipped module starts no Prefect harness either
_UNAVAILABLE = why_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for this module, on a Unix socket; skips if none can run here."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture()
def pg_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database of this test's own."""
    return postgres.create_database(request.node.name)


def _counts(url: str) -> dict[str, int]:
    """Labels per status, straight from the database ({} before the schema exists)."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        with psycopg.connect(dbname=parsed.database, user=parsed.username,
                             host=parsed.query["host"], connect_timeout=10) as connection:
            rows = connection.execute("select status, count(*) from labels group by status")
            return dict(rows.fetchall())
    except psycopg.errors.UndefinedTable:
        return {}


def _done_structures(engine: Engine) -> set[int]:
    with Session(engine) as session:
        return set(session.scalars(select(LabelRow.structure_id).where(LabelRow.status == "done")))


def _postgres_campaign(folder: Path, name: str, url: str, initial_samples: int = 6) -> Path:
    """The tiny water campaign of ``conftest``, its database on PostgreSQL."""
    config = write_campaign(folder, name, initial_samples=initial_samples)
    text = config.read_text()
    header = f'name = "{name}"\n'
    assert header in text
    config.write_text(text.replace(header, f'{header}database_url = "{url}"\n', 1))
    return config


def _start_together(scripts: dict[str, list[str]], folder: Path) -> dict[str, str]:
    """Run each ``name: argv`` as its own process, release them at once, return stdouts."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    processes = {name: subprocess.Popen([sys.executable, "-c", *argv], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, argv in scripts.items()}
    deadline = time.monotonic() + 120
    while not all((folder / f"ready-{name}").exists() for name in processes):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes.values()):
            outputs = {name: p.communicate(timeout=30) for name, p in processes.items()}
            pytest.fail(f"a worker did not get ready: {outputs}")
        time.sleep(0.01)
    (folder / "go").touch()
    outputs = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outputs[name] = out
    return outputs


# -- a. migrations ---------------------------------------------------------------------------


def test_migrations_give_the_orm_schema_on_postgres(pg_url: str) -> None:
    engine = init_db(pg_url)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    assert schema_diffs(engine, Base.metadata) == []
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(engine) == head
    tables = set(Base.metadata.tables)
    init_db(engine)  # idempotent: a second start finds nothing to do
    init_db(pg_url)
    assert schema_diffs(engine, Base.metadata) == []
    assert current_revision(engine) == head
    command.downgrade(alembic_config(engine), "base")  # every revision reversible here too
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    init_db(engine)
    assert schema_diffs(engine, Base.metadata) == []
    assert tables <= set(inspect(engine).get_table_names())
    engine.dispose()


INIT_DB = """
import sys, time
from pathlib import Path
from flows.storage import init_db, make_engine
url, name, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
engine = make_engine(url)
engine.connect().close()
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
init_db(engine)
engine.dispose()
"""


def test_concurrent_first_starts_create_the_schema_once(pg_url: str, tmp_path: Path) -> None:
    """Hosts starting at once on an empty database: one migrates, the others wait for it."""
    _start_together({name: [INIT_DB, pg_url, name, str(tmp_path)] for name in "abc"}, tmp_path)
    engine = make_engine(pg_url)
    assert schema_diffs(engine, Base.metadata) == []
    assert current_revision(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine.dispose()


# -- b. a killed run resumes ---------------------------------------------------------------


def _harness_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "flows,nnp_core,qm_backends", "OMP_NUM_THREADS": "1"}


def test_killed_run_on_postgres_resumes_without_computing_a_label_twice(
    prefect_harness, pg_url: str, tmp_path: Path
) -> None:
    config = _postgres_campaign(tmp_path, "killed-water-pg", pg_url, initial_samples=24)
    run = [sys.executable, "-m", "flows.cli", "run", str(config), "-v"]  # -v: the per-label lines
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(run, cwd=ROOT, env=_harness_env(), stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            if _counts(pg_url).get("done", 0) >= 6:
                break
            time.sleep(0.05)
        assert first.poll() is None, first_log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # mid-labelling; its connections just drop
        first.wait()
    killed = _counts(pg_url)
    engine = make_engine(pg_url)
    done_at_kill = _done_structures(engine)
    assert killed.get("pending", 0) + killed.get("running", 0) > 0, killed
    assert killed.get("done", 0) >= 6

    second = subprocess.run(run, cwd=ROOT, env=_harness_env(), capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert not (tmp_path / "runs" / "killed-water-pg" / "alflow.db").exists()  # all in Postgres
    second_out = second.stdout + second.stderr
    computed = Counter(int(i) for i in LABELLED.findall(first_log.read_text() + second_out))
    final = _counts(pg_url)
    assert set(final) == {"done"}, final  # nothing pending, running or lost
    assert max(computed.values()) == 1, [sid for sid, n in computed.items() if n > 1]
    done = _done_structures(engine)
    engine.dispose()
    assert set(computed) <= done and len(done) == final["done"]
    # a label stored just before the kill may have lost its log line, never its row
    assert done - set(computed) <= done_at_kill
    assert len(done - set(computed)) <= 1
    # the second run computed exactly the labels that were not finished at the kill
    second_run = Counter(int(i) for i in LABELLED.findall(second_out))
    assert set(second_run).isdisjoint(done_at_kill)
    assert set(second_run) == done - done_at_kill
    exported = tmp_path / "labelled.extxyz"  # and the labels come out of Postgres again
    assert main(["export", str(config), "--output", str(exported)]) == 0
    assert len(ase.io.read(exported, index=":")) == len(done)


# -- c. two hosts share one campaign's labels -------------------------------------------------

CLAIMER = CLAIMER_SCRIPT  # the SQLite test's claimer, pointed at PostgreSQL

LABELLER = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from flows.backends import make_backend
from flows.campaign import open_campaign
from flows.steps.labelling import label_pending
config, name, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
ctx = open_campaign(config)
backend = make_backend(ctx.config)
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
counts = label_pending(ctx, worker=name, backend=backend)
print("counts", counts.done, counts.failed)
"""


def _frames(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    return frames


def test_two_processes_never_claim_the_same_label_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """The queue alone, under contention: SELECT ... FOR UPDATE SKIP LOCKED, 300 labels."""
    engine = init_db(pg_url)
    with Session(engine) as session, session.begin():
        campaign_id = ensure_campaign(session, "water", config_snapshot={}, level_of_theory=LOT).id
        other_id = ensure_campaign(session, "other", config_snapshot={}, level_of_theory=LOT).id
        label_ids = enqueue_labels(session, add_structures(
            session, campaign_id, _frames(300, 1), source=StructureSource.MD))
        enqueue_labels(session, add_structures(session, other_id, _frames(5, 2),
                                               source=StructureSource.MD))  # never claimed
    outputs = _start_together(
        {name: [CLAIMER, pg_url, str(campaign_id), name, str(tmp_path)] for name in ("a", "b")},
        tmp_path)
    claimed = {name: json.loads(out) for name, out in outputs.items()}
    assert set(claimed["a"]).isdisjoint(claimed["b"])
    assert sorted(claimed["a"] + claimed["b"]) == sorted(label_ids)  # none twice, none lost
    assert claimed["a"] and claimed["b"]  # both really ran concurrently
    with Session(engine) as session:
        for name, ids in claimed.items():
            assert set(session.scalars(select(LabelRow.worker).where(LabelRow.id.in_(ids)))) == {name}
    engine.dispose()


def test_two_labellers_on_two_hosts_share_a_campaign_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """Two labelling processes (worker names of two hosts) drain one campaign's queue."""
    config = _postgres_campaign(tmp_path, "two-hosts-pg", pg_url)
    ctx = open_campaign(config)
    with Session(ctx.engine) as session, session.begin():
        structure_ids = add_structures(session, ctx.campaign_id, _frames(16, 0),
                                       source=StructureSource.INITIAL)
        enqueue_labels(session, structure_ids)
    workers = ("host-a:101", "host-b:202")
    outputs = _start_together(
        {name: [LABELLER, str(config), name, str(tmp_path)] for name in workers}, tmp_path)
    computed = {name: Counter(int(i) for i in LABELLED.findall(out)) for name, out in outputs.items()}
    a, b = (computed[name] for name in workers)
    assert max((a + b).values()) == 1  # 0 frames computed twice...
    assert set(a + b) == set(structure_ids)  # ...and 0 lost
    assert a and b, "both workers should have labelled something"
    with Session(ctx.engine) as session:
        rows = session.execute(select(LabelRow.structure_id, LabelRow.status, LabelRow.worker)).all()
    assert {status for _, status, _ in rows} == {"done"} and len(rows) == 16
    assert {sid: worker for sid, _, worker in rows} == {
        sid: name for name in workers for sid in computed[name]}
    ctx.engine.dispose()


# -- a shared server's everyday events ------------------------------------------------------


def test_a_server_restart_fails_no_claim(postgres: PostgresCluster, pg_url: str) -> None:
    """Pooled connections cut by a restart are replaced before use (pool_pre_ping)."""
    engine = init_db(pg_url)
    with Session(engine) as session, session.begin():
        campaign_id = ensure_campaign(session, "water", config_snapshot={}, level_of_theory=LOT).id
        label_ids = enqueue_labels(session, add_structures(
            session, campaign_id, _frames(2, 3), source=StructureSource.MD))
    assert claim_pending_labels(engine, campaign_id, 1, "w") == label_ids[:1]
    postgres.restart()
    assert claim_pending_labels(engine, campaign_id, 1, "w") == label_ids[1:]
    engine.dispose()


def test_concurrent_first_opens_of_a_campaign_create_it_once(pg_url: str) -> None:
    """Hosts opening a new campaign at once: one creates it, the others find it."""
    engine = immediate_engine(init_db(make_engine(pg_url, pool_size=4)))
    errors: list[BaseException] = []
    for round_ in range(5):
        barrier, ids = threading.Barrier(4), []

        def open_it(name: str = f"water-{round_}") -> None:
            barrier.wait()
            try:
                with Session(engine) as session, session.begin():
                    ids.append(ensure_campaign(session, name, config_snapshot={},
                                               level_of_theory=LOT).id)
            except Exception as exc:  # noqa: BLE001 (collected, asserted below)
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(set(ids)) <= 1
    with Session(engine) as session:
        assert len(session.scalars(select(Campaign)).all()) == 5
    engine.dispose()
    assert not errors, errors
