"""Storage: frames round-trip bit-exactly, the label queue is safe across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flows.storage import (
    Campaign,
    Generation,
    LabelRow,
    LabelStateError,
    LabelStatus,
    LevelOfTheoryMismatch,
    Structure,
    StructureSource,
    add_structures,
    atoms_from_structure,
    claim_pending_labels,
    complete_label,
    enqueue_labels,
    ensure_campaign,
    export_ase_db,
    export_extxyz,
    fail_label,
    immediate_engine,
    init_db,
    labelled_atoms,
    generation,
    release_labels,
    running_labels,
    to_dataframe,
)
from flows.storage.types import decode_array, encode_array

ROOT = Path(__file__).resolve().parents[2]
LOT = {"backend": "pyscf", "method": "pbe", "basis": "def2-svp", "charge": 0,
       "multiplicity": 1, "density_fit": True}
MD = StructureSource.MD


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return init_db(f"sqlite:///{tmp_path}/db/alflow.db")


def make_campaign(engine: Engine, name: str = "water") -> int:
    with Session(engine) as session, session.begin():
        return ensure_campaign(session, name, config_snapshot={"k": 1}, level_of_theory=LOT).id


@pytest.fixture
def campaign_id(engine: Engine) -> int:
    return make_campaign(engine)


def frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        out.append(atoms)
    return out


def store(engine: Engine, campaign_id: int, atoms_list: list[Atoms], **kw: object) -> list[int]:
    with Session(engine) as session, session.begin():
        return add_structures(session, campaign_id, atoms_list, source=kw.pop("source", MD), **kw)


def queue(engine: Engine, campaign_id: int, n: int) -> list[int]:
    ids = store(engine, campaign_id, frames(n, seed=n))
    with Session(engine) as session, session.begin():
        return enqueue_labels(session, ids)


def test_sqlite_engine_settings(engine: Engine, tmp_path: Path) -> None:
    assert (tmp_path / "db" / "alflow.db").exists()  # parent folder created
    with engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 30000


def test_arrays_round_trip_bit_exact(engine: Engine, campaign_id: int) -> None:
    rng = np.random.default_rng(1)
    atoms = Atoms("CH3OH", positions=rng.uniform(-3, 3, (6, 3)), cell=rng.uniform(5, 9, (3, 3)),
                  pbc=[True, False, True])
    atoms.set_momenta(rng.normal(size=(6, 3)))
    (structure_id,) = store(engine, campaign_id, [atoms], replica=2, temperature_K=450.0)
    with Session(engine) as session:
        back = atoms_from_structure(session.get_one(Structure, structure_id))
    assert back.positions.tobytes() == atoms.positions.tobytes()
    assert back.cell.array.tobytes() == atoms.cell.array.tobytes()
    assert back.get_momenta().tobytes() == atoms.get_momenta().tobytes()
    assert list(back.numbers) == list(atoms.numbers) and list(back.pbc) == [True, False, True]
    assert back.info["structure_id"] == structure_id
    assert back.info["replica"] == 2 and back.info["temperature_K"] == 450.0
    assert back.info["source"] == "md"


def test_array_codec_checks_shape_and_range() -> None:
    forces = np.arange(12.0).reshape(4, 3)
    assert np.array_equal(decode_array(encode_array(forces, "f8", (-1, 3)), "f8", (-1, 3)), forces)
    with pytest.raises(ValueError, match="shape"):
        encode_array(np.zeros((4, 2)), "f8", (-1, 3))
    with pytest.raises(ValueError, match="out of range"):
        encode_array(np.array([1, 300]), "u1", (-1,))


def test_add_structures_dedups_by_content_hash(engine: Engine, campaign_id: int) -> None:
    batch = frames(3)
    nudged = batch[1].copy()
    nudged.positions += 1e-8  # below the hash's rounding: the same structure
    ids = store(engine, campaign_id, [batch[0], batch[1], batch[0], nudged])
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]
    again = store(engine, campaign_id, [batch[2], batch[1]])
    assert again[1] == ids[1] and again[0] not in ids
    other = make_campaign(engine, "other")
    assert set(store(engine, other, [batch[0]])).isdisjoint(ids)  # per campaign
    with Session(engine) as session:
        assert len(session.scalars(select(Structure)).all()) == 4


def test_add_structures_per_frame_metadata(engine: Engine, campaign_id: int) -> None:
    with Session(engine) as session, session.begin():
        generation_row = generation(session, campaign_id, 0)
        ids = add_structures(session, campaign_id, frames(3), source=MD,
                             generation_id=generation_row.id, sampler="langevin",
                             replica=np.arange(3), temperature_K=[300.0, 500.0, 700.0],
                             md_step=np.int64(40))
        rows = [session.get_one(Structure, i) for i in ids]
        assert [r.replica for r in rows] == [0, 1, 2] and {r.md_step for r in rows} == {40}
        assert [r.temperature_K for r in rows] == [300.0, 500.0, 700.0]
        with pytest.raises(ValueError, match="replica: got 2 values for 3 frames"):
            add_structures(session, campaign_id, frames(3, seed=9), source=MD, replica=[0, 1])
        bad = frames(1, seed=5)[0]
        bad.positions[0, 0] = np.nan
        with pytest.raises(ValueError, match="non-finite"):
            add_structures(session, campaign_id, [bad], source=MD)


def test_generation_is_created_once_and_its_index_is_unique(engine: Engine, campaign_id: int) -> None:
    with Session(engine) as session, session.begin():
        first = [generation(session, campaign_id, i).id for i in range(3)]
        assert [generation(session, campaign_id, i).id for i in range(3)] == first
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(Generation(campaign_id=campaign_id, index=1))


def test_resuming_a_campaign_with_another_level_of_theory_is_refused(
    engine: Engine, campaign_id: int
) -> None:
    with Session(engine) as session, session.begin():
        same = ensure_campaign(session, "water", config_snapshot={}, level_of_theory=dict(LOT))
        assert same.id == campaign_id
        with pytest.raises(LevelOfTheoryMismatch, match="basis: 'sto-3g' != 'def2-svp'"):
            ensure_campaign(session, "water", config_snapshot={},
                            level_of_theory={**LOT, "basis": "sto-3g"})


def test_label_lifecycle(engine: Engine, campaign_id: int) -> None:
    label_ids = queue(engine, campaign_id, 3)
    with Session(engine) as session, session.begin():
        structure_ids = [session.get_one(LabelRow, i).structure_id for i in label_ids]
        assert enqueue_labels(session, structure_ids) == label_ids  # idempotent
    assert claim_pending_labels(engine, campaign_id, 2, "w1") == label_ids[:2]
    forces = np.random.default_rng(0).normal(size=(3, 3))
    with Session(engine) as session, session.begin():
        complete_label(session, label_ids[0], energy_eV=-2080.5, forces_eV_A=forces,
                       dipole_eA=[0.0, 0.0, 0.4], n_scf_cycles=12,
                       attempts=[{"solver": "diis", "converged": True}], wall_s=1.5,
                       level_of_theory=dict(reversed(list(LOT.items()))))
        fail_label(session, label_ids[1], "SCF did not converge after 3 fallbacks",
                   [{"solver": "diis", "converged": False}])
    with Session(engine) as session:
        done, failed, pending = (session.get_one(LabelRow, i) for i in label_ids)
        assert (done.status, failed.status, pending.status) == ("done", "failed", "pending")
        assert done.forces_eV_A.tobytes() == forces.tobytes() and done.worker == "w1"
        assert failed.error.startswith("SCF did not converge")
        (atoms,) = labelled_atoms(session, campaign_id)
        assert atoms.get_potential_energy() == -2080.5
        assert atoms.get_forces().tobytes() == forces.tobytes()
        assert np.allclose(atoms.get_dipole_moment(), [0, 0, 0.4])
        assert atoms.info["label_id"] == label_ids[0]
    with Session(engine) as session, session.begin(), pytest.raises(LabelStateError):
        complete_label(session, label_ids[0], energy_eV=0.0, forces_eV_A=forces,
                       level_of_theory=LOT)  # never computed twice


def test_completing_with_another_level_of_theory_changes_nothing(
    engine: Engine, campaign_id: int
) -> None:
    (label_id,) = queue(engine, campaign_id, 1)
    claim_pending_labels(engine, campaign_id, 1, "w1")
    with Session(engine) as session, session.begin():  # the caller commits anyway
        with pytest.raises(LevelOfTheoryMismatch, match="method: 'hf' != 'pbe'"):
            complete_label(session, label_id, energy_eV=-1.0, forces_eV_A=np.zeros((3, 3)),
                           level_of_theory={**LOT, "method": "hf"})
        with pytest.raises(ValueError, match="non-finite"):
            complete_label(session, label_id, energy_eV=float("nan"),
                           forces_eV_A=np.zeros((3, 3)), level_of_theory=LOT)
        with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
            complete_label(session, label_id, energy_eV=-1.0, forces_eV_A=np.zeros((2, 3)),
                           level_of_theory=LOT)
    with Session(engine) as session:
        label = session.get_one(LabelRow, label_id)
        assert label.status == LabelStatus.RUNNING
        assert label.energy_eV is None and label.forces_eV_A is None
        assert label.level_of_theory is None and label.finished_at is None


WORKER = """
import json, sys, time
from pathlib import Path
from flows.storage import claim_pending_labels, make_engine
url, campaign_id, name, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
engine = make_engine(url)
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
claimed = []
while ids := claim_pending_labels(engine, campaign_id, 2, name):
    claimed.extend(ids)
    time.sleep(0.01)  # "compute" the labels, as a real worker would, before the next claim
print(json.dumps(claimed))
"""


def test_two_processes_never_claim_the_same_label(
    engine: Engine, campaign_id: int, tmp_path: Path
) -> None:
    label_ids = queue(engine, campaign_id, 300)
    other = make_campaign(engine, "other")
    queue(engine, other, 5)  # not this campaign's: never claimed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WORKER, str(engine.url), str(campaign_id), name, str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        for name in ("a", "b")
    }
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{name}").exists() for name in workers):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers.values())
        time.sleep(0.01)
    (tmp_path / "go").touch()
    claimed = {}
    for name, worker in workers.items():
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        claimed[name] = json.loads(out)
    assert set(claimed["a"]).isdisjoint(claimed["b"])
    assert sorted(claimed["a"] + claimed["b"]) == sorted(label_ids)
    assert claimed["a"] and claimed["b"]  # both really ran concurrently
    with Session(engine) as session:
        for name, ids in claimed.items():
            workers_of = session.scalars(select(LabelRow.worker).where(LabelRow.id.in_(ids))).all()
            assert set(workers_of) == {name}


def test_claim_inside_the_callers_transaction(engine: Engine, campaign_id: int) -> None:
    label_ids = queue(engine, campaign_id, 4)
    with Session(immediate_engine(engine)) as session, session.begin():
        assert claim_pending_labels(session, campaign_id, 3, "w") == label_ids[:3]
        session.rollback()  # the caller's transaction: rolled back, nothing claimed
    assert claim_pending_labels(engine, campaign_id, 10, "w") == label_ids
    assert claim_pending_labels(engine, campaign_id, 10, "w") == []


def test_release_labels_puts_only_running_labels_back(engine: Engine, campaign_id: int) -> None:
    label_ids = queue(engine, campaign_id, 3)
    claim_pending_labels(engine, campaign_id, 2, "dead-worker")
    with Session(engine) as session, session.begin():
        fail_label(session, label_ids[1], "SCF did not converge")
        assert [label.id for label in running_labels(session, campaign_id)] == [label_ids[0]]
        release_labels(session, label_ids)  # the failed and the pending one are left alone
    with Session(engine) as session:
        labels = session.scalars(select(LabelRow).order_by(LabelRow.id)).all()
        assert [label.status for label in labels] == [LabelStatus.PENDING, LabelStatus.FAILED, LabelStatus.PENDING]
        assert labels[0].worker is None and labels[0].claimed_at is None
    assert claim_pending_labels(engine, campaign_id, 5, "w2") == [label_ids[0], label_ids[2]]


def label_all(engine: Engine, campaign_id: int, n: int) -> list[int]:
    label_ids = queue(engine, campaign_id, n)
    claim_pending_labels(engine, campaign_id, n, "w")
    with Session(engine) as session, session.begin():
        for k, label_id in enumerate(label_ids):
            complete_label(session, label_id, energy_eV=-100.0 - k,
                           forces_eV_A=np.full((3, 3), 0.1 * k), level_of_theory=LOT)
    return label_ids


def test_to_dataframe(engine: Engine, campaign_id: int) -> None:
    label_all(engine, campaign_id, 3)
    store(engine, make_campaign(engine, "other"), frames(2, seed=7))
    with Session(engine) as session:
        structures = to_dataframe(session, "structures", campaign_id)
        assert len(structures) == 3 and set(structures.source) == {"md"}
        assert structures.positions.iloc[0].shape == (3, 3)
        assert "positions" not in to_dataframe(session, Structure, arrays="omit").columns
        assert len(to_dataframe(session, Structure)) == 5
        labels = to_dataframe(session, LabelRow, campaign_id)
        assert list(labels.status) == ["done"] * 3
        assert labels.energy_eV.tolist() == [-100.0, -101.0, -102.0]
        assert str(labels.claimed_at.dt.tz) == "UTC"
        assert len(to_dataframe(session, "scores", campaign_id)) == 0
        assert to_dataframe(session, Campaign, campaign_id).name.tolist() == ["water"]
        with pytest.raises(ValueError, match="no table 'structure'"):
            to_dataframe(session, "structure")


def test_exports_read_back_with_ase(engine: Engine, campaign_id: int, tmp_path: Path) -> None:
    label_ids = label_all(engine, campaign_id, 3)
    with Session(engine) as session:
        expected = labelled_atoms(session, campaign_id)
        assert export_extxyz(session, campaign_id, tmp_path / "out" / "frames.xyz") == 3
        assert export_ase_db(session, campaign_id, tmp_path / "frames.db") == 3
    for path in (tmp_path / "out" / "frames.xyz", tmp_path / "frames.db"):
        back = ase.io.read(path, ":")
        assert len(back) == 3
        for original, read in zip(expected, back, strict=True):
            assert np.allclose(read.positions, original.positions, atol=1e-8)
            assert read.get_potential_energy() == pytest.approx(original.get_potential_energy())
            assert np.allclose(read.get_forces(), original.get_forces())
    xyz = ase.io.read(tmp_path / "out" / "frames.xyz", ":")
    assert [a.info["label_id"] for a in xyz] == label_ids
    assert {a.info["source"] for a in xyz} == {"md"}
    rows = list(ase.db.connect(tmp_path / "frames.db").select())
    assert [row.key_value_pairs["label_id"] for row in rows] == label_ids
    assert {row.key_value_pairs["source"] for row in rows} == {"md"}


def test_foreign_keys_are_enforced(engine: Engine, campaign_id: int) -> None:
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(LabelRow(structure_id=12345))
    label_all(engine, campaign_id, 2)
    with Session(engine) as session, session.begin():
        session.delete(session.get_one(Campaign, campaign_id))
    with Session(engine) as session:  # ON DELETE CASCADE: needs foreign_keys=ON in SQLite
        assert session.scalars(select(LabelRow)).all() == []
        assert session.scalars(select(Structure)).all() == []


def test_times_are_timezone_aware_utc(engine: Engine, campaign_id: int) -> None:
    with Session(engine) as session:
        created = session.get_one(Campaign, campaign_id).created_at
    assert created.tzinfo is not None
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)


def test_a_failed_md_frame_with_nan_scores_is_stored_as_beyond_trust(engine: Engine, campaign_id: int) -> None:
    """A replica stopped by an energy jump has NaN deviations; storing it must not fail."""
    from flows.steps.exploration import _store_frames
    from flows.storage import CommitteeRow, Generation, GenerationStatus, Score
    from nnp_core.md_results import FrameStatus, MDFrame

    water = molecule("H2O")
    failed = MDFrame(replica=0, step=7, restarts=0, status=FrameStatus.FAILED, reason="energy jump",
                     numbers=water.numbers, positions_A=water.positions, velocities_A_per_fs=np.zeros((3, 3)),
                     temperature_K=300.0, kinetic_temperature_K=900.0, potential_energy_eV=-2000.0,
                     max_force_dev=float("nan"), energy_dev=float("nan"))
    with Session(engine) as session, session.begin():
        generation = Generation(campaign_id=campaign_id, index=1, status=GenerationStatus.RUNNING)
        committee = CommitteeRow(campaign_id=campaign_id, checkpoint_path="c", n_members=2, architecture="bpnn")
        session.add_all([generation, committee])
        session.flush()
        _store_frames(session, campaign_id, generation.id, committee.id, [failed])
    with Session(engine) as session:
        (score,) = session.scalars(select(Score)).all()
        assert score.max_force_dev == float("inf") and score.energy_dev == float("inf")
        assert str(score.decision) == "rejected" and "energy jump" in score.reason
