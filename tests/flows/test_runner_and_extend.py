"""One runner per campaign, checkpoints keyed by committee and stored relative to the
campaign folder, extending a finished campaign, and a clear error for a lost checkpoint."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.cli import main
from flows.runner import STALE_AFTER_S, CampaignBusy, acquire, busy, campaign_runner, release
from flows.steps.labelling import worker_name
from flows.storage import CommitteeRow, Generation, LabelRow, Runner, Structure
from tests.flows.conftest import write_campaign


@pytest.fixture()
def live_pid():
    """A process that is alive for the test (another "runner" on this host)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _runner_row(ctx, owner: str, heartbeat_age_s: float = 0.0) -> None:
    now = datetime.now(timezone.utc)
    with Session(ctx.engine) as session, session.begin():
        session.merge(Runner(campaign_id=ctx.campaign_id, owner=owner, started_at=now,
                             heartbeat_at=now - timedelta(seconds=heartbeat_age_s)))


def test_a_live_runner_refuses_a_second_and_a_dead_ones_claim_is_taken_over(tmp_path, live_pid) -> None:
    ctx = open_campaign(write_campaign(tmp_path))
    host = socket.gethostname()
    _runner_row(ctx, f"{host}:{live_pid}:run")
    with pytest.raises(CampaignBusy, match=f"already being run by {host}:{live_pid}:run"):
        acquire(ctx, worker_name("run"))
    assert busy(ctx) is not None
    # the same process gone: its claim is taken over
    _runner_row(ctx, f"{host}:{_dead_pid()}:run")
    assert busy(ctx) is None
    assert acquire(ctx, worker_name("run")).endswith(":run")
    release(ctx, worker_name("run"))
    # a runner on another host: refused while its heartbeat is fresh, taken over once stale
    _runner_row(ctx, "other-host:123:run", heartbeat_age_s=10)
    with pytest.raises(CampaignBusy):
        acquire(ctx, worker_name("run"))
    _runner_row(ctx, "other-host:123:run", heartbeat_age_s=STALE_AFTER_S + 10)
    assert acquire(ctx, worker_name("run")) == "other-host:123:run"
    release(ctx, worker_name("run"))
    with Session(ctx.engine) as session:
        assert session.scalar(select(func.count()).select_from(Runner)) == 0


def test_the_runner_row_is_held_for_the_block_and_released_after(tmp_path) -> None:
    ctx = open_campaign(write_campaign(tmp_path))
    with campaign_runner(ctx) as owner:
        with Session(ctx.engine) as session:
            assert session.get(Runner, ctx.campaign_id).owner == owner
    with Session(ctx.engine) as session:
        assert session.get(Runner, ctx.campaign_id) is None


def test_a_second_alflow_run_is_refused_with_one_line_and_changes_nothing(tmp_path, live_pid, capsys) -> None:
    config = write_campaign(tmp_path)
    ctx = open_campaign(config)
    _runner_row(ctx, f"{socket.gethostname()}:{live_pid}:run")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already being run by" in err and "Traceback" not in err
    with Session(ctx.engine) as session:
        assert session.scalar(select(func.count()).select_from(Generation)) == 0
        assert session.scalar(select(func.count()).select_from(LabelRow)) == 0


def test_a_finished_campaign_extends_moves_and_says_when_its_checkpoint_is_gone(
        prefect_harness, tmp_path, capsys) -> None:
    folder = tmp_path / "first"
    folder.mkdir()
    config = write_campaign(folder)
    text = config.read_text().replace("max_generations = 2", "max_generations = 1")
    config.write_text(text)
    assert main(["run", str(config)]) == 0  # generations 0 and 1, then the limit

    # the whole campaign folder moves: stored checkpoint paths are relative to work_dir
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    config = moved / config.name
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        paths = session.scalars(select(CommitteeRow.checkpoint_path).order_by(CommitteeRow.id)).all()
        assert len(paths) == 2 and not any(Path(p).is_absolute() for p in paths)
        assert len(set(paths)) == 2  # one folder per committee

    # nothing to do at the limit; --generations 1 extends it anyway, on purpose
    assert main(["run", str(config)]) == 0
    assert _generations(ctx) == [0, 1]
    assert main(["run", str(config), "--generations", "1"]) == 0
    assert _generations(ctx) == [0, 1, 2]
    # raising the limit lets the next run go on by itself, to the new limit
    config.write_text(text.replace("max_generations = 1", "max_generations = 3"))
    assert main(["run", str(config)]) == 0
    assert _generations(ctx) == [0, 1, 2, 3]
    capsys.readouterr()

    # a deleted checkpoint: one line, exit 2, before any flow starts
    with Session(ctx.engine) as session:
        latest = session.scalars(select(CommitteeRow.checkpoint_path).order_by(CommitteeRow.id.desc())).first()
    shutil.rmtree(ctx.resolve(latest))
    config.write_text(text.replace("max_generations = 1", "max_generations = 5"))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing or unreadable" in err and "Traceback" not in err
    assert _generations(ctx) == [0, 1, 2, 3]


def _generations(ctx) -> list[int]:
    with Session(ctx.engine) as session:
        return list(session.scalars(select(Generation.index).where(
            Generation.campaign_id == ctx.campaign_id).order_by(Generation.index)))


def test_changed_committee_settings_are_refused_noted_or_taken_on_purpose(prefect_harness, tmp_path, capsys) -> None:
    import hashlib

    from nnp_core.committee import load_committee

    config = write_campaign(tmp_path)
    text = config.read_text()
    assert main(["run", str(config), "--generations", "0"]) == 0  # generation 0: a 2-member committee
    ctx = open_campaign(config, create=False)
    db = Path(ctx.config.campaign.database_url.removeprefix("sqlite:///"))
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    capsys.readouterr()

    config.write_text(text.replace("members = 2", "members = 3"))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "committee" in err and "members: 2 -> 3" in err and "--new-committee" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest  # nothing written
    assert main(["status", str(config)]) == 0  # read-only commands say what they show
    assert "note: the config's [committee] differs" in capsys.readouterr().err

    config.write_text(text.replace('molecule = "H2O"', 'molecule = "NH3"'))
    assert main(["run", str(config)]) == 2
    assert "system" in capsys.readouterr().err
    config.write_text(text.replace('basis = "sto-3g"', 'basis = "6-31g"'))
    assert main(["status", str(config)]) == 0
    assert "note: the config's [reference] differs" in capsys.readouterr().err

    config.write_text(text.replace("members = 2", "members = 3"))
    assert main(["run", str(config), "--new-committee", "--generations", "1"]) == 0
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        paths = session.scalars(select(CommitteeRow.checkpoint_path).order_by(CommitteeRow.id)).all()
    assert [load_committee(ctx.resolve(p)).n_members for p in paths] == [2, 3]  # the new one, from scratch
    assert main(["run", str(config), "--generations", "0"]) == 0  # the new settings are the campaign's now


def test_two_campaigns_never_share_a_work_dir(tmp_path, capsys) -> None:
    first = write_campaign(tmp_path, "first-water")
    second = write_campaign(tmp_path, "second-water")
    shared = 'work_dir = "shared"\n'
    for path, db in ((first, "first.db"), (second, "second.db")):
        text = path.read_text().replace('[campaign]\n', f'[campaign]\n{shared}database_url = "sqlite:///{db}"\n')
        path.write_text(text)
    ctx = open_campaign(first)
    assert (ctx.work_dir / ".alflow-campaign").read_text().startswith("first-water created ")
    assert main(["run", str(second)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "campaign.work_dir" in err and "another campaign (first-water" in err
    open_campaign(first)  # its own folder: fine, also when opened again


def test_a_label_budget_trims_the_last_generation_stops_and_goes_on_once_raised(
        prefect_harness, tmp_path, capsys) -> None:
    """``[loop] max_labels``: every label asked for counts (generation 0's 10 included); the
    generation that reaches the budget picks only what is left; ``--generations`` does not
    spend past it; raising it lets the next run go on by itself."""
    config = write_campaign(tmp_path, "budgeted")
    text = config.read_text().replace("max_generations = 2", "max_generations = 6\nmax_labels = 12")
    config.write_text(text)
    assert main(["run", str(config)]) == 0
    ctx = open_campaign(config, create=False)
    assert _generations(ctx) == [0, 1]  # 10 + 2 of generation 1's 3 picks
    assert _labels_per_generation(ctx) == {0: 10, 1: 2}
    with Session(ctx.engine) as session:
        reason = session.scalar(select(Generation.stop_reason).where(Generation.index == 1))
    assert reason == "label budget 12 reached (12 labels)"
    with get_client(sync_client=True) as client:  # the dashboard's summary says how much is spent
        (summary,) = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=["budgeted-summary"])))
    assert "**Status** label budget 12 reached (12 labels)" in summary.data
    assert "; label budget 12 of 12 spent" in summary.data
    capsys.readouterr()
    assert main(["status", str(config)]) == 0
    assert "label budget: 12 of 12 spent ([loop] max_labels)" in capsys.readouterr().out

    capsys.readouterr()
    assert main(["run", str(config), "--generations", "1"]) == 0  # no generation past the budget
    assert _generations(ctx) == [0, 1] and _labels_per_generation(ctx) == {0: 10, 1: 2}
    assert "stopped: label budget 12 reached (12 labels)" in capsys.readouterr().out

    config.write_text(text.replace("max_labels = 12", "max_labels = 16"))
    assert main(["run", str(config)]) == 0
    assert _labels_per_generation(ctx) == {0: 10, 1: 2, 2: 3, 3: 1}
    with Session(ctx.engine) as session:
        assert session.scalar(select(func.count()).select_from(LabelRow)) == 16


def _labels_per_generation(ctx) -> dict[int, int]:
    with Session(ctx.engine) as session:
        rows = session.execute(select(Generation.index, func.count(LabelRow.id)).join(
            Structure, Structure.generation_id == Generation.id).join(
            LabelRow, LabelRow.structure_id == Structure.id).where(
            Generation.campaign_id == ctx.campaign_id).group_by(Generation.index)).all()
    return dict(rows)
