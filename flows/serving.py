"""Building, registering and serving a campaign's deployments (``alflow deploy``,
``deploy/serve.py``) and ``alflow retrain``: the command-line side of
``flows.deployments``, whose flows it deploys."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prefect.client.orchestration import get_client
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.dashboard import LABELS_ADDED, campaign_resource, campaign_slug
from flows.deploy_settings import DeploySettings, deploy_settings
from flows.lock import ensure_lock

if TYPE_CHECKING:
    from flows.campaign import CampaignContext

log = logging.getLogger(__name__)


def build_deployments(ctx: CampaignContext, settings: DeploySettings) -> list[RunnerDeployment]:
    """``al-cycle``, ``retrain`` and ``label-backlog`` deployments of one campaign (not yet
    registered). Entrypoints are module paths (``flows.deployments.al_cycle``, ...), so any
    worker with alflow installed runs them. Each is tagged ``alflow-db:<identity>``
    (``flows.identity``): its campaign's database and name, which the slug alone does not
    tell apart."""
    from flows.deployments import al_cycle, label_backlog, retrain
    from flows.identity import identity_tag

    name, config_path = campaign_slug(ctx.name), str(ctx.config_path)
    common = {"tags": ["alflow", f"campaign:{name}", identity_tag(ctx.config)],
              "entrypoint_type": EntrypointType.MODULE_PATH}
    schedules = [Cron(settings.cron, timezone=settings.timezone)] if settings.cron else None
    triggers = [DeploymentEventTrigger(
        name=f"alflow {name}: retrain on new labels",
        description=retrain_trigger_description(name, settings),
        expect={LABELS_ADDED},
        match={key: value for key, value in campaign_resource(ctx.name, ctx.campaign_id, ctx.identity).items()
               if key in ("prefect.resource.id", "alflow.campaign-identity")},
        threshold=settings.retrain_trigger_events,
        within=timedelta(seconds=settings.retrain_within_s),
        parameters={"config_path": config_path, "min_new_labels": settings.retrain_min_new_labels},
    )] if settings.retrain_trigger else None
    return [
        al_cycle.to_deployment(
            name, schedules=schedules, description=f"Advance campaign {ctx.name} by generations.",
            parameters={"config_path": config_path, "generations": settings.generations_per_cycle}, **common),
        retrain.to_deployment(
            name, triggers=triggers, description=f"Retrain the committee of {ctx.name} on all its labels.",
            parameters={"config_path": config_path, "min_new_labels": 0}, **common),
        label_backlog.to_deployment(
            name, description=f"Label the pending frames of {ctx.name}.",
            parameters={"config_path": config_path}, **common),
    ]


def retrain_trigger_description(slug: str, settings: DeploySettings) -> str:
    """What the retrain automation does, in words (the dashboard shows only "A custom
    trigger" for an event trigger otherwise)."""
    events = ("1 event" if settings.retrain_trigger_events == 1
              else f"{settings.retrain_trigger_events} events within {settings.retrain_within_s:g} s")
    return (f"Starts retrain/{slug} after {events} '{LABELS_ADDED}' from resource alflow.campaign.{slug}; "
            f"the run trains only if the committee has not seen at least {settings.retrain_min_new_labels} "
            f"labels (min_new_labels), otherwise it ends as 'Skipped: N new labels < "
            f"{settings.retrain_min_new_labels}'.")


def ensure_process_pool(pool_name: str) -> None:
    """Create a ``process`` work pool named ``pool_name`` unless one exists."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool_name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=pool_name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
            log.info("created process work pool %s", pool_name)


def cmd_deploy(args: argparse.Namespace) -> int:
    """``alflow deploy CONFIG``: serve the deployments here, or register them on ``--pool``.

    Refuses (``flows.identity.DeploymentConflict``, exit 2 from the CLI) before creating or
    registering anything when the campaign slug's deployments on the server belong to
    another campaign database; redeploying the same campaign (any config path) is fine."""
    from prefect import deploy, serve

    from flows.campaign import open_campaign
    from flows.config import load_config
    from flows.identity import check_deployed_identity

    check_deployed_identity(args.config, load_config(args.config))
    ctx = open_campaign(args.config)
    settings = deploy_settings(
        ctx.config_path, cron=args.cron, timezone=args.timezone, generations_per_cycle=args.generations,
        retrain_min_new_labels=args.retrain_min_labels, retrain_trigger_events=args.retrain_events,
        retrain_within_s=args.retrain_within_s, retrain_trigger=False if args.no_retrain_trigger else None)
    deployments = build_deployments(ctx, settings)
    ensure_lock(ctx.name)
    if args.pool:
        ensure_process_pool(args.pool)
        deploy(*deployments, work_pool_name=args.pool, print_next_steps_message=False, ignore_warnings=True)
        print(f"registered {', '.join(f'{d.flow_name}/{d.name}' for d in deployments)} on pool {args.pool}; "
              f"start a worker: prefect worker start --pool {args.pool}")
        return 0
    serve(*deployments, limit=args.limit)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """``alflow retrain CONFIG``: retrain the committee now, in this process.

    The campaign must exist: a bad config or an unknown campaign fails before any flow
    run starts (``ConfigError``/``LookupError``, exit 2 from the CLI).
    """
    from flows.campaign import open_campaign
    from flows.deployments import retrain

    open_campaign(args.config, create=False)
    result = retrain(config_path=str(Path(args.config).resolve()), min_new_labels=args.min_new_labels)
    print(json.dumps(result, indent=2))
    return 0
