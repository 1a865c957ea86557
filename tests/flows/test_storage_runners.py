"""The runner row at the storage level (``flows.storage.runners``): claim, refuse, take
over, heartbeat and release, with the liveness rule given by the caller."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.storage import ensure_campaign, init_db, transaction
from flows.storage.engine import immediate_engine
from flows.storage.runners import (
    RunnerInfo,
    beat_runner,
    claim_runner,
    current_runner,
    put_runner,
    release_runner,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture()
def campaign(tmp_path: Path):
    engine = immediate_engine(init_db(f"sqlite:///{tmp_path / 'alflow.db'}"))
    with transaction(engine) as session:
        campaign_id = ensure_campaign(session, "water", config_snapshot={}, level_of_theory={"method": "hf"}).id
    yield engine, campaign_id
    engine.dispose()


def always(_: RunnerInfo) -> bool:
    return True


def never(_: RunnerInfo) -> bool:
    return False


def test_a_free_campaign_is_claimed_and_a_live_holder_refuses_others(campaign) -> None:
    engine, campaign_id = campaign
    assert current_runner(engine, campaign_id) is None
    claim = claim_runner(engine, campaign_id, "host:1:run", alive=always, now=T0)
    assert claim.taken and claim.other is None
    assert current_runner(engine, campaign_id) == RunnerInfo("host:1:run", T0, T0)
    refused = claim_runner(engine, campaign_id, "host:2:run", alive=always, now=T0 + timedelta(seconds=5))
    assert not refused.taken and refused.other == RunnerInfo("host:1:run", T0, T0)
    assert current_runner(engine, campaign_id).owner == "host:1:run"  # unchanged
    again = claim_runner(engine, campaign_id, "host:1:run", alive=always)  # its own row: kept as it was
    assert again.taken and again.other is None and current_runner(engine, campaign_id).started_at == T0


def test_a_dead_holder_is_taken_over_and_its_row_replaced(campaign) -> None:
    engine, campaign_id = campaign
    put_runner(engine, campaign_id, "other:9:run", started_at=T0, heartbeat_at=T0)
    seen: list[RunnerInfo] = []

    def dead(holder: RunnerInfo) -> bool:
        seen.append(holder)
        return False

    later = T0 + timedelta(hours=1)
    claim = claim_runner(engine, campaign_id, "host:1:run", alive=dead, now=later)
    assert claim.taken and claim.other == RunnerInfo("other:9:run", T0, T0) and seen == [claim.other]
    assert current_runner(engine, campaign_id) == RunnerInfo("host:1:run", later, later)


def test_heartbeat_and_release_only_for_the_owner(campaign) -> None:
    engine, campaign_id = campaign
    claim_runner(engine, campaign_id, "host:1:run", alive=never, now=T0)
    assert not beat_runner(engine, campaign_id, "host:2:run", T0 + timedelta(seconds=30))
    assert beat_runner(engine, campaign_id, "host:1:run", T0 + timedelta(seconds=30))
    assert current_runner(engine, campaign_id).heartbeat_at == T0 + timedelta(seconds=30)
    assert not release_runner(engine, campaign_id, "host:2:run")
    assert current_runner(engine, campaign_id) is not None
    assert release_runner(engine, campaign_id, "host:1:run")
    assert current_runner(engine, campaign_id) is None
    assert not beat_runner(engine, campaign_id, "host:1:run")  # released: nothing to renew


def test_of_many_simultaneous_claims_exactly_one_wins(campaign) -> None:
    engine, campaign_id = campaign
    barrier, results = threading.Barrier(6), {}

    def claim(owner: str) -> None:
        barrier.wait()
        results[owner] = claim_runner(engine, campaign_id, owner, alive=always).taken

    threads = [threading.Thread(target=claim, args=(f"host:{i}:run",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [owner for owner, taken in results.items() if taken]
    assert len(results) == 6 and len(winners) == 1
    assert current_runner(engine, campaign_id).owner == winners[0]
