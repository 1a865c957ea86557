"""Kill and resume, two labellers at once, and bad configs that change nothing."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from ase import Atoms
from ase.build import molecule
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.cli import main
from flows.storage import StructureSource, add_structures, enqueue_labels

from .conftest import TINY_CAMPAIGN, write_campaign

ROOT = Path(__file__).resolve().parents[2]
LABELLED = re.compile(r"labelled structure (\d+) ")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1",
           "PREFECT_LOGGING_EXTRA_LOGGERS": "flows,nnp_core,qm_backends", "OMP_NUM_THREADS": "1"}
    return env | (extra or {})


def _done_structures(db: Path) -> set[int]:
    connection = sqlite3.connect(db, timeout=30)
    try:
        return {row[0] for row in connection.execute("select structure_id from labels where status = 'done'")}
    finally:
        connection.close()


def _label_counts(db: Path) -> dict[str, int]:
    connection = sqlite3.connect(db, timeout=30)
    try:
        return dict(connection.execute("select status, count(*) from labels group by status").fetchall())
    except sqlite3.OperationalError:  # schema not created yet
        return {}
    finally:
        connection.close()


def _running_after_labels(process: subprocess.Popen, db: Path, n: int, timeout_s: float = 240) -> bool:
    """Wait until the run's database holds ``n`` done labels; whether it still runs then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if db.exists() and _label_counts(db).get("done", 0) >= n:
            break
        time.sleep(0.05)
    return process.poll() is None


def test_killed_run_resumes_without_computing_a_label_twice(prefect_harness, tmp_path) -> None:
    config = write_campaign(tmp_path, "killed-water", initial_samples=24)
    db = tmp_path / "runs" / "killed-water" / "alflow.db"
    command = [sys.executable, "-m", "flows.cli", "run", str(config), "-v"]  # -v: the per-label lines
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        assert _running_after_labels(first, db, 6), first_log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # mid-labelling, no chance to clean up
        first.wait()
    killed = _label_counts(db)
    done_at_kill = _done_structures(db)
    assert killed.get("pending", 0) + killed.get("running", 0) > 0, killed

    second = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    computed = Counter(int(i) for i in LABELLED.findall(first_log.read_text() + second.stdout + second.stderr))
    final = _label_counts(db)
    assert set(final) == {"done"}, final  # nothing pending, running or lost
    assert max(computed.values()) == 1, [sid for sid, n in computed.items() if n > 1]
    done = _done_structures(db)
    assert set(computed) <= done and len(done) == final["done"]
    # a label stored just before the kill may have lost its log line, never its row
    assert done - set(computed) <= done_at_kill
    assert len(done - set(computed)) <= 1
    # the second run computed exactly the labels that were not finished at the kill
    second_run = Counter(int(i) for i in LABELLED.findall(second.stdout + second.stderr))
    assert set(second_run).isdisjoint(done_at_kill)
    assert set(second_run) == done - done_at_kill
    assert killed.get("done", 0) >= 6


def test_ctrl_c_stops_at_once_says_what_was_kept_and_the_run_resumes(prefect_harness, tmp_path) -> None:
    """SIGINT mid-labelling: exit 130 within seconds, one line on what the database kept,
    no traceback, no child process left; the next run finishes with no label computed twice."""
    import psutil

    config = write_campaign(tmp_path, "interrupted-water", initial_samples=24)
    db = tmp_path / "runs" / "interrupted-water" / "alflow.db"
    command = [sys.executable, "-m", "flows.cli", "run", str(config), "-v"]  # -v: the per-label lines
    first = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert _running_after_labels(first, db, 4), first.communicate()[1][-3000:]
    children = psutil.Process(first.pid).children(recursive=True)
    first.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err[-3000:]
    assert time.monotonic() - sent < 15
    assert "interrupted: kept" in err and "resumes where it stopped" in err and "Traceback" not in err, err[-3000:]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    kept = _label_counts(db)
    done_at_stop = _done_structures(db)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # not left "Running" in Prefect
        runs = [r for r in client.read_flow_runs() if r.parameters.get("config_path") == str(config)]
    assert [r.state_type.value for r in runs] == ["CANCELLED"] and "interrupted: kept" in runs[0].state.message
    said = int(re.search(r"interrupted: kept (\d+) labels", err).group(1))
    assert 4 <= said <= kept["done"]  # a label thread may finish one more while the process exits

    second = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    computed = Counter(int(i) for i in LABELLED.findall(out + err + second.stdout + second.stderr))
    assert set(_label_counts(db)) == {"done"}
    assert max(computed.values()) == 1
    second_run = Counter(int(i) for i in LABELLED.findall(second.stdout + second.stderr))
    assert set(second_run).isdisjoint(done_at_stop)


WORKER = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from flows.campaign import open_campaign
from flows.steps.labelling import label_pending
ctx = open_campaign(sys.argv[1])
folder = Path(sys.argv[1]).parent
(folder / f"ready-{sys.argv[2]}").touch()
while not (folder / "go").exists():  # both start labelling together (one was done before the other started)
    time.sleep(0.05)
counts = label_pending(ctx, worker=sys.argv[2])
print("counts", counts.done, counts.failed)
"""


def test_two_concurrent_labellers_never_compute_the_same_frame(tmp_path) -> None:
    config = write_campaign(tmp_path, "two-workers")
    ctx = open_campaign(config)
    frames = []
    rng = __import__("numpy").random.default_rng(0)
    for _ in range(16):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    with Session(ctx.engine) as session, session.begin():
        enqueue_labels(session, add_structures(session, ctx.campaign_id, frames, source=StructureSource.INITIAL))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(config), name], cwd=ROOT, env=_plain_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name in ("a", "b")]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{name}").exists() for name in ("a", "b")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker did not start"
        time.sleep(0.1)
    (tmp_path / "go").touch()
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    ids = [set(int(i) for i in LABELLED.findall(out)) for out in outputs]
    assert ids[0].isdisjoint(ids[1])
    assert len(ids[0]) + len(ids[1]) == 16
    assert ids[0] and ids[1], "both workers should have labelled something"


def _plain_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




@pytest.mark.parametrize(("old", "new", "words"), [
    ("trust_lo_eV_A = 0.02", "trust_lo_eV_A = 5.0", "trust_hi_eV_A"),
    ("trust_lo_eV_A = 0.02", "trust_low_eV_A = 0.02", "trust_low_eV_A"),
    ('molecule = "H2O"', 'molecule = "NotAMolecule"', "system.molecule"),
    ('basis = "sto-3g"', 'basis = "no-such-basis"', "basis"),
    ('molecule = "H2O"', 'molecule = "H2O"\nmultiplicity = 2', "multiplicity"),
    ("temperatures_K = [300, 600]", "temperatures_K = [300, -5]", "temperatures_K"),
    ('backend = "pyscf"', 'backend = "nope"', "backend"),
    ("max_epochs = 40", "max_epochs = forty", "line"),
    ('molecule = "H2O"', 'structure_file = "overlap.xyz"', "overlap"),
    ("max_generations = 2", "max_generations = 2\nmax_labels = 10", "generation 0 alone labels 10"),
    ("max_generations = 2", "max_generations = 2\nmax_labels = 0", "max_labels"),
])
def test_bad_config_fails_clearly_and_leaves_the_database_unchanged(tmp_path, capsys, old, new, words) -> None:
    good = write_campaign(tmp_path, "guarded")
    open_campaign(good).engine.dispose()
    db = tmp_path / "runs" / "guarded" / "alflow.db"
    before = _digest(db)
    Atoms("H2O", positions=[[0, 0, 0], [0.1, 0, 0], [0, 0.96, 0]]).write(tmp_path / "overlap.xyz")
    text = TINY_CAMPAIGN.format(name="guarded", initial_samples=6)
    assert old in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new))
    assert main(["run", str(bad)]) == 2
    message = capsys.readouterr().err
    assert words in message and "bad.toml" in message, message
    assert _digest(db) == before


def test_retrain_of_a_campaign_that_never_ran_fails_before_any_flow(tmp_path, capsys) -> None:
    config = write_campaign(tmp_path, "never-ran")
    assert main(["retrain", str(config)]) == 2
    assert "has no database yet" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "never-ran" / "alflow.db").exists()
    assert main(["retrain", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
