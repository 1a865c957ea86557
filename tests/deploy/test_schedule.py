"""Prefect's scheduler really runs ``al-cycle``: on a server with the scheduler service on,
a ``* * * * *`` schedule creates flow runs, ``deploy/serve.py`` executes the first one,
which advances the campaign to its generation limit, ends "Stopped" and pauses its own
deployment, and the paused deployment gets no more scheduled runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.deployments import campaign_slug
from flows.storage import CommitteeRow, Generation, GenerationStatus
from tests.deploy.helpers import (
    TERMINAL,
    PrefectServer,
    finished_run,
    running_server,
    serving,
    wait_until,
    write_deploy_campaign,
)

pytestmark = pytest.mark.timeout(600)
NAME = "scheduled-water"
DEPLOYMENT = f"al-cycle/{campaign_slug(NAME)}"
SCHEDULER_LOOP_S = 5  # PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS of running_server(scheduler=True)


@dataclass
class Scheduled:
    server: PrefectServer
    config: Path
    serve_log: Path
    run: Any  # the first scheduled al-cycle run, finished
    scheduled_ahead: int  # most auto-scheduled runs waiting (Scheduled) seen before it started
    runs_after_pause: list[Any]  # the deployment's runs a few scheduler loops after it finished

    def logs(self) -> str:
        return (f"--- serve log ---\n{self.serve_log.read_text(errors='replace')[-4000:]}\n"
                f"--- server log ---\n{self.server.log.read_text(errors='replace')[-3000:]}")


def _runs_of(client: Any, deployment_id: Any) -> list[Any]:
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduled]:
    """A server of its own with the scheduler on; the campaign (limit: generation 1) served
    on an every-minute schedule, one run at a time; its first scheduled run, finished."""
    folder = tmp_path_factory.mktemp("scheduled")
    config = write_deploy_campaign(folder, NAME)
    text = config.read_text()
    assert "max_generations = 2" in text
    config.write_text(text.replace("max_generations = 2", "max_generations = 1"))
    # --limit 1: the every-minute schedule must not start a second al-cycle run while the
    # first (it may outlast a minute on a slow machine) still runs; the waiting ones are deleted
    # when it pauses the deployment. (The retrain runs its labels trigger wait their turn too.)
    args = ["--cron", "* * * * *", "--generations", "1", "--limit", "1"]
    with running_server(tmp_path_factory.mktemp("scheduler-server"), scheduler=True) as server, \
            serving(server, config, *args) as serve_log, server.settings(), server.client() as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        ahead = 0

        def started() -> Any:  # the first auto-scheduled run that left the Scheduled state
            nonlocal ahead
            runs = [r for r in _runs_of(client, deployment.id) if r.auto_scheduled]
            ahead = max(ahead, sum(r.state_type.value == "SCHEDULED" for r in runs))
            runs = [r for r in runs if r.state_type.value != "SCHEDULED"]
            return min(runs, key=lambda r: r.expected_start_time) if runs else None

        # the cron fires at the next minute boundary (<= 60 s), plus a scheduler loop and a poll
        first = wait_until(started, 150, f"a scheduled run of {DEPLOYMENT} started", interval_s=2.0)
        run = finished_run(client, first.id, timeout_s=360)
        time.sleep(3 * SCHEDULER_LOOP_S)  # a few scheduler loops after the pause
        yield Scheduled(server, config, serve_log, run, ahead, _runs_of(client, deployment.id))


def test_scheduled_run_advances_the_campaign_and_stops(scheduled: Scheduled) -> None:
    run = scheduled.run
    assert run.auto_scheduled, "the run was not created by the scheduler"
    assert run.state_type.value == "COMPLETED", f"{run.state!r}\n{scheduled.logs()}"
    assert run.state.name == "Stopped", f"{run.state!r}\n{scheduled.logs()}"
    message = run.state.message or ""
    assert "generation limit 1" in message and "paused" in message, message
    ctx = open_campaign(scheduled.config, create=False)
    with Session(ctx.engine) as session:
        generations = {g.index: g for g in session.scalars(
            select(Generation).where(Generation.campaign_id == ctx.campaign_id))}
        committees = session.scalars(select(CommitteeRow).join(Generation).where(
            Generation.campaign_id == ctx.campaign_id)).all()
        assert sorted(generations) == [0, 1]
        assert all(g.status == GenerationStatus.DONE for g in generations.values())
        assert "generation limit 1" in (generations[1].stop_reason or "")
        assert len(committees) >= 2


def test_stopped_campaign_pauses_its_schedule(scheduled: Scheduled) -> None:
    with scheduled.server.settings(), scheduled.server.client() as client:
        assert client.read_deployment_by_name(DEPLOYMENT).paused is True
    assert scheduled.scheduled_ahead >= 2, "the scheduler never queued runs ahead: nothing to delete"
    runs = scheduled.runs_after_pause
    assert [r.id for r in runs if r.state_type.value == "SCHEDULED"] == [], \
        "a paused deployment still has scheduled runs"
    others = [r for r in runs if r.id != scheduled.run.id]
    assert all(r.state_type.value in TERMINAL for r in others), \
        f"another run started: {[(r.name, r.state_type.value) for r in others]}"


def test_server_log_has_no_bulk_dml_error(scheduled: Scheduled) -> None:
    assert "Can't evaluate bulk DML" not in scheduled.server.log.read_text(errors="replace")
