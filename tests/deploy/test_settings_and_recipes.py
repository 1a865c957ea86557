"""Deployment settings, the retrain decision, and the two registration recipes on a work
pool: ``alflow deploy CONFIG --pool`` (Python) and ``deploy/prefect.yaml`` (``prefect deploy``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest

from flows.campaign import open_campaign
from flows.config import ConfigError
from flows.dashboard import campaign_resource
from flows.deployments import DeploySettings, add_subcommands, deploy_settings, lock_name, plan_retrain
from flows.storage import CommitteeRow, GenerationStatus, complete_label, generation, transaction
from tests.deploy.helpers import REPO, PrefectServer, add_pending_frames, write_deploy_campaign


def test_settings_come_from_toml_then_environment_then_options(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[deploy]\ncron = "0 1 * * *"\nretrain_min_new_labels = 5\ngenerations_per_cycle = 2\n')
    assert deploy_settings(path).model_dump(include={"cron", "retrain_min_new_labels", "generations_per_cycle"}) \
        == {"cron": "0 1 * * *", "retrain_min_new_labels": 5, "generations_per_cycle": 2}
    monkeypatch.setenv("ALFLOW_DEPLOY_RETRAIN_MIN_NEW_LABELS", "7")
    settings = deploy_settings(path, generations_per_cycle=3, cron=None)
    assert (settings.cron, settings.retrain_min_new_labels, settings.generations_per_cycle) == ("0 1 * * *", 7, 3)
    with pytest.raises(pydantic.ValidationError, match="retrain_within_s"):
        DeploySettings(retrain_trigger_events=4)
    path.write_text("[deploy]\ncorn = '* * * * *'\n")
    with pytest.raises(ConfigError, match="deploy.corn: Extra inputs are not permitted"):
        deploy_settings(path)


def test_retrain_plan_counts_labels_the_committee_has_not_seen(tmp_path: Path) -> None:
    config = write_deploy_campaign(tmp_path, "plan-water")
    ctx = open_campaign(config)
    assert plan_retrain(ctx, 0).skip_reason.startswith("no committee yet")
    labels = add_pending_frames(config, 3, seed=3)
    with transaction(ctx.engine) as session:
        for label_id in labels:
            complete_label(session, label_id, energy_eV=-2000.0, forces_eV_A=np.zeros((3, 3)),
                           level_of_theory=ctx.config.level_of_theory())
        zero = generation(session, ctx.campaign_id, 0)
        zero.status = GenerationStatus.DONE
        session.add(CommitteeRow(campaign_id=ctx.campaign_id, generation_id=zero.id, checkpoint_path="x",
                              n_members=2, architecture="bpnn", n_training_frames=1))
        generation(session, ctx.campaign_id, 1)  # a cycle killed mid-generation
    assert "generation 1 is unfinished" in plan_retrain(ctx, 0).skip_reason
    with transaction(ctx.engine) as session:
        generation(session, ctx.campaign_id, 1).status = GenerationStatus.DONE
    assert plan_retrain(ctx, 3).skip_reason == "2 label(s) not seen by committee 1, fewer than 3"
    plan = plan_retrain(ctx, 2)
    assert (plan.skip_reason, plan.generation_index, plan.new_labels, plan.committee_id) == (None, 1, 2, 1)


def test_alflow_deploy_registers_on_a_process_pool(prefect_server: PrefectServer, tmp_path: Path) -> None:
    config = write_deploy_campaign(tmp_path, "pool-water")
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", str(config), "--pool", "alflow-test-pool", "--cron", "15 2 * * *",
                              "--generations", "2", "--retrain-events", "2", "--retrain-within-s", "600"])
    with prefect_server.settings(), prefect_server.client() as client:
        assert args.func(args) == 0
        cycle = client.read_deployment_by_name("al-cycle/pool-water")
        assert cycle.work_pool_name == "alflow-test-pool"
        assert client.read_work_pool("alflow-test-pool").type == "process"
        assert [s.schedule.cron for s in cycle.schedules] == ["15 2 * * *"] and cycle.parameters["generations"] == 2
        retrain = client.read_deployment_by_name("retrain/pool-water")
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
        assert automation.trigger.threshold == 2 and automation.trigger.within.total_seconds() == 600
        assert client.read_deployment_by_name("label-backlog/pool-water").work_pool_name == "alflow-test-pool"
        assert client.read_global_concurrency_limit_by_name(lock_name("pool-water")).limit == 1


def test_prefect_yaml_deploys_the_example(prefect_server: PrefectServer) -> None:
    """``prefect deploy --all --prefect-file deploy/prefect.yaml`` from the repository root."""
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    env = prefect_server.client_env()
    subprocess.run([*prefect, "work-pool", "create", "alflow-local", "--type", "process", "--overwrite"],
                   env=env, cwd=REPO, check=True, capture_output=True, timeout=120)
    done = subprocess.run([*prefect, "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resource = campaign_resource("water-quick", 0)["prefect.resource.id"]
    with prefect_server.settings(), prefect_server.client() as client:
        cycle = client.read_deployment_by_name("al-cycle/water-quick")
        assert cycle.work_pool_name == "alflow-local" and cycle.parameters["config_path"] == "examples/water.toml"
        assert [s.schedule.cron for s in cycle.schedules] == ["0 */6 * * *"]
        retrain = client.read_deployment_by_name("retrain/water-quick")
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
        assert automation.trigger.match.model_dump() == {"prefect.resource.id": resource}
        assert automation.trigger.expect == {"alflow.labels.added"}
        assert automation.actions[0].parameters == {"config_path": "examples/water.toml", "min_new_labels": 8}
        assert client.read_deployment_by_name("label-backlog/water-quick").pull_steps[0][
            "prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
