"""Prefect deployments of a campaign: scheduled cycles, event-triggered retraining and a
labelling backlog, each deployed once per campaign (deployment name = campaign slug).

- ``al-cycle/<campaign>``: ``active_learning`` for a few more generations, on a cron schedule;
- ``retrain/<campaign>``: retrain the committee on all labels now (warm start), started by
  ``alflow.labels.added`` events once the database holds ``min_new_labels`` labels the
  latest committee has not seen;
- ``label-backlog/<campaign>``: label the pending frames, nothing else (a labelling pool).

``al-cycle`` (through ``active_learning``, like ``alflow run``, around each training step)
and ``retrain`` (throughout) hold the campaign's committee lock (``flows.lock``, one slot),
so two of them never train the committee of one campaign at once, whoever started them
(schedule, trigger, a person).

A retrain outside a generation trains into the latest *decided* generation: its committee
is a new ``Committee`` row of that generation, saved in its own folder
(``committees/gen-NNN-cIIIII``, keyed by its id like every committee), and the generation keeps its status, so the
``active_learning`` flow's resume logic (the step marks of unfinished generations) never
sees it. While a generation is unfinished (a killed cycle), retraining is skipped: the
cycle's own train step will train on those labels, and its fresh-label error stays honest.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron
from prefect.states import Completed
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.active_learning import publish_campaign, active_learning, context, label_all, pending_labels, task_runner_for
from flows.campaign import CampaignContext, latest_committee, open_campaign
from flows.config import ConfigError
from flows.dashboard import LABELS_ADDED, announce_committee, campaign_resource, campaign_slug, training_progress
from flows.runner import CampaignBusy, busy
from flows.lock import committee_lock, ensure_lock, lock_name  # noqa: F401 (lock_name: re-exported)
from flows.steps.training import TRAINING_SOURCES, train_generation
from flows.storage import Committee, Generation, GenerationStatus, Label, LabelStatus, Structure

log = logging.getLogger(__name__)
NonNegativeInt = Annotated[int, Field(ge=0)]


class DeploySettings(BaseSettings):
    """How a campaign is deployed. Sources, lowest first: defaults, the campaign TOML's
    ``[deploy]`` table, ``ALFLOW_DEPLOY_*`` environment variables, command-line options."""

    model_config = SettingsConfigDict(env_prefix="ALFLOW_DEPLOY_", extra="forbid")

    #: cron schedule of ``al-cycle`` (None: no schedule, run it by hand)
    cron: str | None = None
    timezone: str = "UTC"
    #: generations each scheduled ``al-cycle`` run adds
    generations_per_cycle: int = Field(1, ge=1)
    #: N: ``retrain`` trains once the committee has not seen at least this many labels
    retrain_min_new_labels: int = Field(8, ge=0)
    #: how many ``alflow.labels.added`` events start a ``retrain`` run (Prefect's threshold)
    retrain_trigger_events: int = Field(1, ge=1)
    #: the window (s) in which those events must arrive; needed when more than one
    retrain_within_s: float = Field(0.0, ge=0)
    #: no event trigger on ``retrain`` (manual and scheduled runs only)
    retrain_trigger: bool = True

    @model_validator(mode="after")
    def _window_for_several_events(self) -> DeploySettings:
        if self.retrain_trigger_events > 1 and self.retrain_within_s <= 0:
            raise ValueError("retrain_trigger_events > 1 needs retrain_within_s > 0 (the window)")
        return self


def deploy_settings(config_path: str | Path, **overrides: Any) -> DeploySettings:
    """The deployment settings of a campaign; ``overrides`` that are None are ignored.

    Raises ``ConfigError`` (with ``deploy.<key>`` paths) for unknown or invalid settings."""
    with open(config_path, "rb") as stream:
        table = dict(tomllib.load(stream).get("deploy") or {})
    prefix = DeploySettings.model_config["env_prefix"]
    from_env = {name: os.environ[variable] for name in DeploySettings.model_fields
                if (variable := f"{prefix}{name}".upper()) in os.environ}
    try:
        return DeploySettings(**{**table, **from_env, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        raise ConfigError(config_path, [(".".join(["deploy", *map(str, error["loc"])]), error["msg"])
                                        for error in exc.errors()]) from None


@flow(name="al-cycle")
def al_cycle(config_path: str, generations: NonNegativeInt = 1) -> Any:
    """Advance the campaign by up to ``generations`` generations (0: generation 0 only);
    ``active_learning`` trains holding the committee lock; the task runner is the config's
    ``[execution]`` choice.

    Once the campaign has stopped (converged, generation limit), the run says so in its
    log and in its state's name ("Stopped") and pauses its own deployment, so a schedule
    does not complete silently every period forever (deploying again, or the dashboard's
    toggle, starts it again)."""
    logger = get_run_logger()
    ctx = context(str(config_path))
    loop = active_learning.with_options(task_runner=task_runner_for(ctx.config))
    if reason := busy(ctx):
        logger.warning("%s", reason)
        return Completed(name="Skipped: campaign busy", message=reason, data={"skipped": reason})
    try:
        summary = loop(config_path=str(ctx.config_path), max_new_generations=generations)
    except CampaignBusy as refused:  # another run took the campaign since the look above
        logger.warning("%s", refused)
        return Completed(name="Skipped: campaign busy", message=str(refused), data={"skipped": str(refused)})
    if not summary.get("stop_reason"):
        return summary
    message = f"campaign {ctx.name} has stopped: {summary['stop_reason']}"
    paused = pause_own_deployment()
    if paused:
        message += (f"; paused deployment {paused} so its schedule stops (to go on, raise [loop] "
                    f"max_generations, then run alflow deploy again or switch the deployment on in the dashboard)")
    logger.warning(message)
    return Completed(name="Stopped", message=message, data=summary)


def pause_own_deployment() -> str | None:
    """Pause the deployment this flow run belongs to (Prefect deletes its scheduled runs);
    its ``flow/deployment`` name, or None outside a deployment run."""
    run = FlowRunContext.get().flow_run if FlowRunContext.get() else None
    if run is None or run.deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(run.deployment_id)
        client.pause_deployment(run.deployment_id)
        flow_name = client.read_flow(deployment.flow_id).name
    return f"{flow_name}/{deployment.name}"


@dataclass(frozen=True)
class RetrainPlan:
    """What a retrain would do: train into ``generation_index``, or skip for ``skip_reason``."""

    generation_index: int | None
    new_labels: int
    committee_id: int | None
    skip_reason: str | None = None
    #: the skipped run's state name in the dashboard, e.g. "Skipped: 2 new labels < 8"
    skip_state: str | None = None


def plan_retrain(ctx: CampaignContext, min_new_labels: int) -> RetrainPlan:
    """Count the training labels the latest committee has not seen and decide."""
    with Session(ctx.engine) as session:
        generations = session.scalars(select(Generation).where(
            Generation.campaign_id == ctx.campaign_id).order_by(Generation.index)).all()
        committee = latest_committee(session, ctx.campaign_id)
        labels = session.scalar(select(func.count()).select_from(Label).join(Structure).where(
            Structure.campaign_id == ctx.campaign_id, Label.status == LabelStatus.DONE,
            Structure.source.in_(TRAINING_SOURCES))) or 0
        decided = [g.index for g in generations if g.status == GenerationStatus.DONE]
        unfinished = [g.index for g in generations if g.status != GenerationStatus.DONE]
        seen = int((committee.training_metrics or {}).get("n_frames", 0)) if committee else 0
        committee_id = committee.id if committee else None
    new = labels - seen
    if committee_id is None or not decided:
        return RetrainPlan(None, new, None, "no committee yet: run al-cycle (generation 0) first",
                           "Skipped: no committee yet")
    if unfinished:
        return RetrainPlan(None, new, committee_id,
                           f"generation {unfinished[0]} is unfinished: the next al-cycle resumes and trains it",
                           f"Skipped: generation {unfinished[0]} unfinished")
    if new < min_new_labels:
        return RetrainPlan(None, new, committee_id,
                           f"{new} label(s) not seen by committee {committee_id}, fewer than {min_new_labels}",
                           f"Skipped: {new} new labels < {min_new_labels}")
    return RetrainPlan(max(decided), new, committee_id)


@task(name="retrain-committee", cache_policy=NO_CACHE)
def retrain_task(config_path: str, plan: RetrainPlan) -> dict:
    """Train (warm start) on all labels into ``plan.generation_index``; record and announce
    it. The retrain is a committee row of its own: the generation's figures stay its own."""
    ctx = context(config_path)
    index = plan.generation_index
    started = datetime.now(UTC)
    record = {"generation": index, "new_labels": plan.new_labels, "previous_committee": plan.committee_id,
              "started": started.isoformat()}
    progress = training_progress(ctx, f"retrain into generation {index}")
    committee_id = train_generation(ctx, index, retrain=record, progress=progress.epoch)
    progress.finish()
    finished = datetime.now(UTC)
    record["finished"] = finished.isoformat()
    with Session(ctx.engine) as session, session.begin():
        row = session.get(Committee, committee_id)
        row.training_metrics = {**(row.training_metrics or {}), "retrain": record}
    announce_committee(ctx.name, ctx.campaign_id, committee_id, str(ctx.committee_dir(index, committee_id)), ctx.identity)
    return {"committee_id": committee_id, **record}


@flow(name="retrain")
def retrain(config_path: str, min_new_labels: NonNegativeInt = 0) -> Any:
    """Retrain the committee on all labels now, holding the committee lock, if it has not
    seen at least ``min_new_labels`` of them (0: always). Emits ``alflow.committee.trained``
    and republishes the campaign's artifacts. Returns the plan, and the new committee's id;
    a skipped run ends in a Completed state named after the reason ("Skipped: 2 new labels
    < 8"), so it never looks like a real retrain in the runs list."""
    logger = get_run_logger()
    ctx = context(str(config_path))
    with committee_lock(ctx.name):
        plan = plan_retrain(ctx, min_new_labels)
        if plan.skip_reason:
            logger.info("retrain skipped: %s", plan.skip_reason)
            return Completed(name=plan.skip_state, message=f"retrain skipped: {plan.skip_reason}",
                             data={"committee_id": None, "new_labels": plan.new_labels,
                                   "skipped": plan.skip_reason})
        result = retrain_task(str(ctx.config_path), plan)
    logger.info("committee %d trained into generation %d on %d new label(s)",
                result["committee_id"], plan.generation_index, plan.new_labels)
    publish_campaign(ctx)
    return {**result, "skipped": None}


@flow(name="label-pending")
def label_pending_flow(config_path: str, generation_index: NonNegativeInt) -> dict:
    """Fan the pending labels out over the flow's task runner (``label_all``)."""
    return label_all(config_path, generation_index)


def backlog_generation(ctx: CampaignContext) -> int | None:
    """The generation the backlog belongs to: the latest one owning a pending label,
    else the latest generation; None before the campaign has one."""
    with Session(ctx.engine) as session:
        owner = session.scalar(select(func.max(Generation.index)).select_from(Label).join(Structure)
                               .join(Generation, Structure.generation_id == Generation.id).where(
            Structure.campaign_id == ctx.campaign_id, Label.status == LabelStatus.PENDING))
        latest = session.scalar(select(func.max(Generation.index)).where(
            Generation.campaign_id == ctx.campaign_id))
    return owner if owner is not None else latest


@flow(name="label-backlog")
def label_backlog(config_path: str) -> dict:
    """Label the campaign's pending frames with the config's task runner, emit
    ``alflow.labels.added`` and republish the campaign's artifacts. Trains nothing."""
    logger = get_run_logger()
    ctx = context(str(config_path))
    index = backlog_generation(ctx)
    if index is None or not pending_labels(ctx):
        logger.info("no pending labels in campaign %s", ctx.name)
        return {"done": 0, "failed": 0}
    labeller = label_pending_flow.with_options(task_runner=task_runner_for(ctx.config))
    totals = labeller(str(ctx.config_path), index)
    publish_campaign(ctx)
    return totals


def build_deployments(ctx: CampaignContext, settings: DeploySettings) -> list[RunnerDeployment]:
    """``al-cycle``, ``retrain`` and ``label-backlog`` deployments of one campaign (not yet
    registered). Entrypoints are module paths, so any worker with alflow installed runs them.
    Each is tagged ``alflow-db:<identity>`` (``flows.identity``): its campaign's database and
    name, which the slug alone does not tell apart."""
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
    open_campaign(args.config, create=False)
    result = retrain(config_path=str(Path(args.config).resolve()), min_new_labels=args.min_new_labels)
    print(json.dumps(result, indent=2))
    return 0


# ``alflow deploy``/``alflow retrain`` options live in flows.cli (the parser is built
# without importing prefect); re-exported here for deploy/serve.py and older imports.
from flows.cli import add_deploy_arguments, add_subcommands  # noqa: E402, F401

