"""The deployments on a real ``prefect server start``: served by ``deploy/serve.py``, the
scheduled ``al-cycle`` runs generation 0, new labels trigger ``retrain`` through an event,
two retrains at once train one after the other, and the artifacts are on the flow runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from sqlalchemy import select

from flows import storage
from flows.campaign import open_campaign
from flows.deployments import campaign_slug, ensure_lock, lock_name
from flows.storage import CommitteeRow, Retrain
from tests.deploy.helpers import (
    PrefectServer,
    add_pending_frames,
    finished_run,
    serving,
    wait_until,
    write_deploy_campaign,
)

pytestmark = pytest.mark.timeout(600)
CRON = "0 3 * * 1"
NAME = "deploy-water"
MIN_NEW_LABELS = 3


@dataclass
class Served:
    server: PrefectServer
    config: Path
    log: Path
    cycle_run: Any

    def committees(self) -> list[CommitteeRow]:
        ctx = open_campaign(self.config, create=False)
        with storage.reading(ctx.engine) as session:
            return list(session.scalars(select(CommitteeRow).order_by(CommitteeRow.id)))

    def retrains(self) -> dict[int, Retrain]:
        """The retrain rows, by committee id."""
        ctx = open_campaign(self.config, create=False)
        with storage.reading(ctx.engine) as session:
            return {row.committee_id: row for row in session.scalars(select(Retrain))}

    def generation_zero(self) -> tuple[Any, ...]:
        """Generation 0's own figures: validation error, committee, training time."""
        ctx = open_campaign(self.config, create=False)
        with storage.reading(ctx.engine) as session:
            (g,) = storage.generations(session, ctx.campaign_id, last=0)
            own = storage.generation_committee(session, g.id)
            validation = storage.evaluation(session, "validation", committee_id=own.id)
            return (validation.force_mae_eV_A, own.id, storage.done_steps(session, g.id).get("train"),
                    g.status)


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The campaign's deployments served, and generation 0 run through ``al-cycle``."""
    config = write_deploy_campaign(tmp_path_factory.mktemp("served"), NAME)
    args = ["--cron", CRON, "--retrain-min-labels", str(MIN_NEW_LABELS)]
    with serving(prefect_server, config, *args) as log, prefect_server.settings():
        run = run_deployment(f"al-cycle/{NAME}", parameters={"generations": 0}, timeout=0)
        with prefect_server.client() as client:
            run = finished_run(client, run.id, timeout_s=300)
        yield Served(prefect_server, config, log, run)


def test_deployments_have_the_schedule_trigger_and_lock(served: Served) -> None:
    with served.server.settings(), served.server.client() as client:
        cycle = client.read_deployment_by_name(f"al-cycle/{NAME}")
        assert [s.schedule.cron for s in cycle.schedules] == [CRON]
        assert cycle.parameters["generations"] == 1
        assert cycle.entrypoint == "flows.deployments.al_cycle"
        retrain = client.read_deployment_by_name(f"retrain/{NAME}")
        client.read_deployment_by_name(f"label-backlog/{NAME}")
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
        trigger = automation.trigger
        assert trigger.expect == {"alflow.labels.added"} and trigger.threshold == 1
        identity = open_campaign(served.config, create=False).identity  # a twin in another database never matches
        assert trigger.match.model_dump() == {"prefect.resource.id": f"alflow.campaign.{campaign_slug(NAME)}",
                                              "alflow.campaign-identity": identity}
        assert automation.actions[0].parameters["min_new_labels"] == MIN_NEW_LABELS
        # the dashboard says what triggers it ("A custom trigger" alone otherwise)
        assert "'alflow.labels.added'" in automation.description and "after 1 event" in automation.description
        assert f"at least {MIN_NEW_LABELS} labels" in automation.description
        assert client.read_global_concurrency_limit_by_name(lock_name(NAME)).limit == 1


def test_al_cycle_runs_generation_zero_and_publishes_artifacts(served: Served) -> None:
    assert served.cycle_run.state_type.value == "COMPLETED", served.log.read_text()[-3000:]
    assert len(served.committees()) == 1
    with served.server.settings(), served.server.client() as client:
        summary = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{campaign_slug(NAME)}-summary"])))
        assert summary and f"# alflow campaign {NAME}\n" in summary[0].data
        table = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{campaign_slug(NAME)}-generations"])))
        assert table and table[0].type == "table"
        # on the run the deployment started (al-cycle), not on its active-learning subflow
        assert summary[0].flow_run_id == table[0].flow_run_id == served.cycle_run.id
        assert summary[0].data.count("](data:image/png;base64,") == 3
        assert client.read_flow_run(served.cycle_run.id).deployment_id is not None


def _runs_of(client: Any, deployment_name: str) -> list[Any]:
    deployment = client.read_deployment_by_name(deployment_name)
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


def test_new_labels_trigger_a_retrain_that_registers_a_committee(served: Served) -> None:
    """Labels added by the ``label-backlog`` deployment (an ``alflow.labels.added`` event)
    start ``retrain`` runs; one trains on the new labels. (Generation 0's own event also
    started one, which finds nothing new unless it runs after the backlog: either way,
    exactly one new committee.)"""
    before = served.committees()
    generation_zero = served.generation_zero()
    add_pending_frames(served.config, MIN_NEW_LABELS, seed=1)
    with served.server.settings(), served.server.client() as client:
        backlog = run_deployment(f"label-backlog/{NAME}", timeout=0)
        backlog = finished_run(client, backlog.id, timeout_s=240)
        assert backlog.state_type.value == "COMPLETED"
        wait_until(lambda: len(served.committees()) > len(before), 300, "a committee trained by a triggered retrain")
        runs = [finished_run(client, r.id, timeout_s=300) for r in _runs_of(client, f"retrain/{NAME}")]
        assert runs and all(r.state_type.value == "COMPLETED" for r in runs), served.log.read_text()[-3000:]
        assert all(r.parameters["min_new_labels"] == MIN_NEW_LABELS for r in runs)  # the trigger's parameters
        names = [r.state.name for r in runs]  # a skipped retrain never looks like a real one
        assert names.count("Completed") == 1, names
        assert all(n == "Completed" or re.fullmatch(rf"Skipped: \d+ new labels < {MIN_NEW_LABELS}", n)
                   for n in names), names
        (trained,) = [r for r in runs if r.state.name == "Completed"]
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[trained.id])))}
        assert f"{campaign_slug(NAME)}-summary" in artifacts
        retrains = artifacts[f"{campaign_slug(NAME)}-retrains"].data
        retrains = json.loads(retrains) if isinstance(retrains, str) else retrains
        assert [(row["generation"], row["new labels"]) for row in retrains] == [(0, MIN_NEW_LABELS)]
    after = served.committees()
    assert served.generation_zero() == generation_zero  # its figures stay its own committee's
    assert len(after) == len(before) + 1
    record = served.retrains()[after[-1].id]
    assert record.new_labels == MIN_NEW_LABELS and record.previous_committee_id == before[-1].id
    assert record.generation_id == after[-1].generation_id and record.finished_at >= record.started_at
    assert after[-1].generation_id == before[-1].generation_id  # trained into the decided generation
    assert after[-1].checkpoint_path != before[-1].checkpoint_path


def test_two_retrains_at_once_train_one_after_the_other(served: Served) -> None:
    before = len(served.committees())
    with served.server.settings(), served.server.client() as client:
        # Hold the campaign's committee lock while both runs start, so they are certain to
        # be running at the same time (both waiting for the lock) before either may train.
        ensure_lock(NAME)
        with concurrency(lock_name(NAME), occupy=1, strict=True):
            started = [run_deployment(f"retrain/{NAME}", parameters={"min_new_labels": 0}, timeout=0)
                       for _ in range(2)]
            wait_until(lambda: all(client.read_flow_run(run.id).state_type.value == "RUNNING"
                                   for run in started), 300, "both retrain runs running", interval_s=0.5)
        runs = [finished_run(client, run.id, timeout_s=400) for run in started]
    assert all(run.state_type.value == "COMPLETED" for run in runs), served.log.read_text()[-3000:]
    first, second = sorted(runs, key=lambda run: run.start_time)
    assert second.start_time < first.end_time, "the two runs never ran at the same time: nothing tested"
    new = served.committees()[before:]
    assert len(new) == 2
    retrains = served.retrains()
    spans = sorted((retrains[c.id].started_at, retrains[c.id].finished_at) for c in new)
    assert spans[0][1] <= spans[1][0], f"two committees trained at once: {spans}"
    assert retrains[new[1].id].previous_committee_id == new[0].id  # warm start from the first
