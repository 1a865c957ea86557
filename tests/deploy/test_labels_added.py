"""``alflow labels-added CONFIG [--count N]``: the ``alflow.labels.added`` event of a
labelling pass, emitted by hand, delivered before the command exits, and heard by the
``retrain`` deployment's trigger; refused without a Prefect server or a campaign."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.cli import main
from flows.dashboard import LABELS_ADDED, campaign_resource
from flows.storage import complete_label
from tests.deploy.helpers import REPO, PrefectServer, add_pending_frames, wait_until, write_deploy_campaign

pytestmark = pytest.mark.timeout(300)
NAME = "event-water"


def alflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``alflow ARGS`` in a process of its own (so the event must be out before it exits)."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def done_labels(config: Path, n: int) -> None:
    ctx = open_campaign(config)
    with Session(ctx.engine) as session, session.begin():
        for label_id in add_pending_frames(config, n, seed=5):
            complete_label(session, label_id, energy_eV=-2000.0, forces_eV_A=np.zeros((3, 3)),
                           level_of_theory=ctx.config.level_of_theory())


def events_of(client: Any, resource_id: str) -> list[Any]:
    page = client.read_events(filter=EventFilter(event=EventNameFilter(name=[LABELS_ADDED]),
                                                 resource=EventResourceFilter(id=[resource_id])),
                             limit=50)  # the client's default, 100, is over the server's maximum
    return page.events


def test_labels_added_reaches_the_server_and_starts_the_retrain_trigger(
        prefect_server: PrefectServer, tmp_path: Path) -> None:
    config = write_deploy_campaign(tmp_path, NAME)
    done_labels(config, 3)  # no committee yet: all 3 are new to it
    ctx = open_campaign(config, create=False)
    resource = campaign_resource(NAME, ctx.campaign_id, ctx.identity)  # with its database identity
    with prefect_server.settings():
        assert main(["deploy", str(config), "--pool", "alflow-events-pool", "--retrain-min-labels", "5"]) == 0
    env = prefect_server.client_env()

    done = alflow(env, "labels-added", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"emitted {LABELS_ADDED}: resource {resource['prefect.resource.id']}" in done.stdout
    assert "count 3 (done training labels, no committee yet)" in done.stdout
    assert f"a run of retrain/{NAME} once this event arrives" in done.stdout
    assert "trains if at least 5 label(s) are new to the committee (now 3)" in done.stdout

    done = alflow(env, "labels-added", str(config), "--count", "7")
    assert done.returncode == 0 and "count 7 (--count)" in done.stdout, done.stdout + done.stderr

    with prefect_server.settings(), prefect_server.client() as client:
        events = wait_until(lambda: len(found := events_of(client, resource["prefect.resource.id"])) == 2 and found,
                            60, "both alflow.labels.added events stored", interval_s=0.5)
        assert sorted(e.payload["count"] for e in events) == [3, 7]
        assert all(e.payload == {"campaign_id": ctx.campaign_id, "campaign": NAME, "count": e.payload["count"]}
                   and dict(e.resource) == resource for e in events)
        retrain = client.read_deployment_by_name(f"retrain/{NAME}")
        runs = wait_until(lambda: client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[retrain.id]))), 60, "a retrain run started by the trigger", interval_s=0.5)
        assert runs[0].parameters["min_new_labels"] == 5  # the trigger's, not the deployment's default


def test_labels_added_refuses_without_a_prefect_server(tmp_path: Path) -> None:
    config = write_deploy_campaign(tmp_path, NAME)
    open_campaign(config)
    env = {k: v for k, v in PrefectServer("", tmp_path, tmp_path).client_env().items() if k != "PREFECT_API_URL"}
    done = alflow(env, "labels-added", str(config), "--count", "2")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: PREFECT_API_URL is not set") and "ephemeral" in line


def test_labels_added_needs_an_existing_campaign_and_a_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_deploy_campaign(tmp_path, NAME)
    assert main(["labels-added", str(config)]) == 2  # never run: no database
    assert "has no database yet" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("[campaign]", "[campaign]\nnmae = 1", 1))
    assert main(["labels-added", str(bad)]) == 2
    assert "campaign.nmae" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["labels-added", str(config), "--count", "0"])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    open_campaign(config)  # a campaign with no labels: nothing to announce unless --count
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["labels-added", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing to announce" in err and "\n" not in err
