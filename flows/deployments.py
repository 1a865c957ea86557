"""Prefect deployments of a campaign: scheduled cycles, event-triggered retraining and a
labelling backlog, each deployed once per campaign (deployment name = campaign slug).

- ``al-cycle/<campaign>``: ``active_learning`` for a few more generations, on a cron schedule;
- ``retrain/<campaign>``: retrain the committee on all labels now (warm start), started by
  ``alflow.labels.added`` events once the database holds ``min_new_labels`` labels the
  latest committee has not seen (``flows.retraining``);
- ``label-backlog/<campaign>``: label the pending frames, nothing else (a labelling pool).

``al-cycle`` (through ``active_learning``, like ``alflow run``, around each training step)
and ``retrain`` (throughout) hold the campaign's committee lock (``flows.lock``, one slot),
so two of them never train the committee of one campaign at once, whoever started them
(schedule, trigger, a person).

This module holds the flows (their entrypoints are ``flows.deployments.<flow>``). The
deployment settings are ``flows.deploy_settings``, the retrain decision and task
``flows.retraining``, building and serving the deployments ``flows.serving``; their
names are re-exported here, as are the CLI's deploy options (``flows.cli``).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Completed
from pydantic import Field

from flows.active_learning import active_learning
from flows.dashboard import campaign_slug, publish_campaign  # noqa: F401 (campaign_slug: re-exported)
from flows.deploy_settings import DeploySettings, deploy_settings  # noqa: F401 (re-exported)
from flows.lock import committee_lock, ensure_lock, lock_name  # noqa: F401 (re-exported)
from flows.retraining import RetrainPlan, backlog_generation, plan_retrain, retrain_task  # noqa: F401 (re-exported)
from flows.runner import CampaignBusy, busy
from flows.serving import (  # noqa: F401 (re-exported; it imports this module's flows only when it runs)
    build_deployments,
    cmd_deploy,
    cmd_retrain,
    ensure_process_pool,
    retrain_trigger_description,
)
from flows.tasks import context, label_all, pending_labels, task_runner_for

NonNegativeInt = Annotated[int, Field(ge=0)]


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
        limit = "max_labels" if summary["stop_reason"].startswith("label budget") else "max_generations"
        message += (f"; paused deployment {paused} so its schedule stops (to go on, raise [loop] "
                    f"{limit}, then run alflow deploy again or switch the deployment on in the dashboard)")
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


# ``alflow deploy``/``alflow retrain`` options live in flows.cli (the parser is built
# without importing prefect); re-exported here for deploy/serve.py and older imports.
from flows.cli import add_deploy_arguments, add_subcommands  # noqa: E402, F401
