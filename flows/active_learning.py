"""The active-learning flow: generation after generation until the campaign converges.

The flow holds the campaign's runner lock (``flows.runner``) and, per generation, hands
the pipeline (``flows.pipeline``: step order and marks) the Prefect tasks of
``flows.tasks``; every step reads its inputs from and writes its outputs to the
database, so rerunning the flow after a crash or kill resumes where it stopped.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows import storage
from flows.campaign import CampaignContext
from flows.dashboard import publish_campaign
from flows.pipeline import done_steps, run_generation
from flows.runner import CampaignBusy, busy, campaign_runner
from flows.status import campaign_status
from flows.steps.decide import budget_left, stop_holds
from flows.steps.labelling import reset_dead_workers
from flows.steps.training import load_latest
from flows.tasks import context, label_all, pending_labels, prefect_steps, task_runner_for, train_locked

__all__ = ["active_learning", "context", "label_all", "pending_labels", "preflight", "publish_campaign",
           "task_runner_for", "train_locked"]


@flow(name="active-learning", log_prints=False)
def active_learning(config_path: str, max_new_generations: int | None = None, extend: bool = False) -> dict:
    """Run or resume the campaign of ``config_path`` until it converges or hits its limit.
    One runner per campaign (``flows.runner``: a second is refused with ``CampaignBusy``);
    training holds the campaign's committee lock (``train_locked``).

    ``max_new_generations`` stops after that many more generations (scheduled cycles).
    ``extend`` (``alflow run --generations N``): run exactly ``max_new_generations`` more
    generations even if the campaign had stopped (converged or at its limit), though
    never past its label budget (``[loop] max_labels``: raise it to label more). A campaign
    stopped at ``[loop] max_generations`` or ``max_labels`` goes on by itself once that
    limit is raised.
    """
    ctx = context(str(config_path))
    with campaign_runner(ctx):
        return _run_loop(ctx, max_new_generations, extend)


def _run_loop(ctx: CampaignContext, max_new_generations: int | None, extend: bool) -> dict:
    logger = get_run_logger()
    steps = prefect_steps(str(ctx.config_path))
    stale = reset_dead_workers(ctx)
    if stale:
        logger.info("resuming: %d label(s) left running by a dead worker put back to pending", len(stale))
    published = False
    if "decide" not in done_steps(ctx, 0):
        run_generation(ctx, 0, steps)  # a generation 0 whose labels all failed stops here, one clear error
        publish_campaign(ctx)
        published = True
    ran = 0
    stop, reason = _finished(ctx)
    if extend and max_new_generations and _budget_spent(ctx):
        logger.warning("not extending: the label budget is spent (%s); raise [loop] max_labels to label more",
                       reason or f"max_labels = {ctx.config.loop.max_labels}")
        extend, stop = False, True
    if stop and extend and max_new_generations:
        logger.info("campaign had stopped (%s); extending it by %d generation(s) as asked", reason,
                    max_new_generations)
    while (max_new_generations is None or ran < max_new_generations) and (
            not stop or (extend and max_new_generations is not None)):
        index = _next_generation_index(ctx)
        stop, reason = run_generation(ctx, index, steps) or _finished(ctx)
        ran += 1
        publish_campaign(ctx)
        published = True
        logger.info("generation %d done%s", index, f": {reason}" if reason else "")
    if not published:  # nothing new: still show this run's table and summary
        publish_campaign(ctx)
    with storage.reading(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id, ctx.work_dir)
    return {k: status[k] for k in ("labels", "failed_labels", "latest_committee")} | {
        "stop_reason": _finished(ctx)[1], "generations": len(status["generations"])}


def preflight(ctx: CampaignContext) -> None:
    """What would make a run fail at once, checked before any flow starts (one line,
    exit 2 from the CLI, instead of a failed flow run): another live runner
    (``CampaignBusy``), an unreadable latest checkpoint (``CheckpointMissing``)."""
    if reason := busy(ctx):
        raise CampaignBusy(reason)
    load_latest(ctx)


def _finished(ctx: CampaignContext) -> tuple[bool, str | None]:
    """Whether the campaign has stopped, and why, under its *current* config: a stop at
    the generation limit or the label budget no longer holds once ``[loop] max_generations``
    or ``max_labels`` was raised (``flows.steps.decide.stop_holds``)."""
    with storage.reading(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id)
        asked = storage.count_labels(session, ctx.campaign_id)
    decided = [row for row in status["generations"] if row["status"] == "done"]
    last = decided[-1] if decided else None
    budget = ctx.config.loop.max_labels
    between = all(row["status"] == "done" for row in status["generations"])  # none half-done to resume
    if decided and between and budget is not None and asked >= budget:  # also a budget lowered below it
        return True, last["stop_reason"] or f"label budget {budget} reached ({asked} labels)"
    if last is None or not last["stop_reason"]:
        return False, None
    if not stop_holds(last["stop_reason"], last["generation"], ctx.config.loop, asked):
        return False, None
    return True, last["stop_reason"]


def _budget_spent(ctx: CampaignContext) -> bool:
    with storage.reading(ctx.engine) as session:
        return budget_left(session, ctx) == 0


def _next_generation_index(ctx: CampaignContext) -> int:
    """The first generation >= 1 not marked decided."""
    with storage.reading(ctx.engine) as session:
        decided = [g.index for g in storage.generations(session, ctx.campaign_id, first=1)
                   if g.status == storage.GenerationStatus.DONE]
    return max(decided, default=0) + 1
