"""The generation pipeline (step order, marks, resume) and the label-queue recovery the
loop runs on resume (``reset_dead_workers``, ``release_label``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
from ase.build import molecule

from flows import pipeline, storage
from flows.campaign import open_campaign
from flows.steps.labelling import STALE_CLAIM_HOURS, release_label, reset_dead_workers
from flows.storage import LabelStatus, StructureSource

from .conftest import write_campaign


@pytest.fixture()
def ctx(tmp_path):
    return open_campaign(write_campaign(tmp_path, name="pipeline"))


def _queue(ctx, n: int) -> list[int]:
    frames = []
    for i in range(n):
        atoms = molecule("H2O")
        atoms.positions += np.random.default_rng(i).normal(0, 0.02, atoms.positions.shape)
        frames.append(atoms)
    with storage.transaction(ctx.engine) as session:
        ids = storage.add_structures(session, ctx.campaign_id, frames, source=StructureSource.MD)
        return storage.enqueue_labels(session, ids)


def _statuses(ctx, label_ids):
    with storage.reading(ctx.engine) as session:
        return [session.get(storage.LabelRow, i).status for i in label_ids]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_reset_dead_workers_frees_only_claims_of_dead_or_stale_workers(ctx) -> None:
    dead, alive, elsewhere, stale, done = _queue(ctx, 5)
    host = socket.gethostname()
    for label_id, worker in ((dead, f"{host}:{_dead_pid()}:prefect"), (alive, f"{host}:{os.getpid()}"),
                             (elsewhere, "another-host:12:prefect"), (stale, "another-host:13"),
                             (done, f"{host}:{_dead_pid()}")):
        assert storage.claim_pending_labels(ctx.engine, ctx.campaign_id, 1, worker) == [label_id]
    with storage.transaction(ctx.engine) as session:
        session.get(storage.LabelRow, stale).claimed_at -= timedelta(hours=STALE_CLAIM_HOURS + 1)
        storage.complete_label(session, done, energy_eV=-1.0, forces_eV_A=np.zeros((3, 3)),
                               level_of_theory=ctx.config.level_of_theory())
    assert reset_dead_workers(ctx) == [dead, stale]
    assert _statuses(ctx, [dead, alive, elsewhere, stale, done]) == [
        LabelStatus.PENDING, LabelStatus.RUNNING, LabelStatus.RUNNING, LabelStatus.PENDING, LabelStatus.DONE]
    assert reset_dead_workers(ctx) == []


def test_release_label_gives_a_claim_back_and_leaves_finished_labels(ctx) -> None:
    first, second = _queue(ctx, 2)
    storage.claim_pending_labels(ctx.engine, ctx.campaign_id, 2, "me:1")
    with storage.transaction(ctx.engine) as session:
        storage.fail_label(session, second, "SCF did not converge")
    release_label(ctx, first)
    release_label(ctx, second)
    assert _statuses(ctx, [first, second]) == [LabelStatus.PENDING, LabelStatus.FAILED]
    assert storage.claim_pending_labels(ctx.engine, ctx.campaign_id, 5, "me:2") == [first]


def _recording_steps(calls: list, fail: str | None = None):
    def step(name):
        def run(index):
            calls.append((name, index))
            if name == fail:
                raise RuntimeError(f"{name} killed")
            return (False, None) if name == "decide" else name
        return run
    return {name: step(name) for name in pipeline.STEPS}


def _mark_as_it_runs(ctx, steps):
    """Each fake step writes its mark through the pipeline, as the real ones do."""
    def wrap(name, run):
        def marked(index):
            result = run(index)
            with pipeline.finishing(ctx, index, name, 0.0):
                pass
            return result
        return marked
    return {name: wrap(name, run) for name, run in steps.items()}


def test_run_generation_runs_the_steps_in_order_and_resumes_after_the_last_mark(ctx) -> None:
    calls: list = []
    with pytest.raises(RuntimeError, match="train killed"):
        pipeline.run_generation(ctx, 1, _mark_as_it_runs(ctx, _recording_steps(calls, fail="train")))
    assert [name for name, _ in calls] == list(pipeline.GENERATION[:5])
    assert set(pipeline.done_steps(ctx, 1)) == {"explore", "select", "label", "evaluate_fresh"}
    calls.clear()
    assert pipeline.run_generation(ctx, 1, _mark_as_it_runs(ctx, _recording_steps(calls))) == (False, None)
    # labelling is a queue and always drains again; finished steps are not redone
    assert calls == [("label", 1), ("train", 1), ("decide", 1)]
    calls.clear()
    pipeline.run_generation(ctx, 0, _mark_as_it_runs(ctx, _recording_steps(calls)))
    assert [name for name, _ in calls] == list(pipeline.GENERATION_0)


def test_a_step_that_fails_while_writing_leaves_neither_outputs_nor_mark(ctx) -> None:
    with pytest.raises(RuntimeError, match="disk full"):
        with pipeline.finishing(ctx, 1, "select", 0.0) as (session, generation):
            storage.record_selection(generation, {"candidate": 5, "selected": 2})
            raise RuntimeError("disk full")
    with storage.reading(ctx.engine) as session:
        row = storage.generation(session, ctx.campaign_id, 1)
        assert row.selection_counts() is None and storage.done_steps(session, row.id) == {}
    with pipeline.finishing(ctx, 1, "select", 0.0) as (session, generation):
        storage.record_selection(generation, {"candidate": 5, "selected": 2, "accurate": 3})
    with storage.reading(ctx.engine) as session:
        row = storage.generation(session, ctx.campaign_id, 1)
        assert row.selection_counts()["selected"] == 2 and row.accurate_fraction == pytest.approx(0.3)
        assert set(storage.done_steps(session, row.id)) == {"select"}
    with pytest.raises(ValueError, match="unknown step 'evaluate'"):
        with pipeline.finishing(ctx, 1, "evaluate", 0.0):
            pass
