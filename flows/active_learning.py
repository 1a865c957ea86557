"""The active-learning flow: generation after generation, each step a Prefect task.

Tasks take the config path (and indices) and return small dicts; every step reads its
inputs from and writes its outputs to the database, and marks itself done in the same
transaction, so rerunning the flow after a crash or kill resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.campaign import (
    CampaignContext,
    get_or_create_generation,
    mark_step_done,
    open_campaign,
    step_done,
)
from flows.config import CampaignConfig
from flows.lock import campaign_lock
from flows.runner import CampaignBusy, busy, campaign_runner
from flows.dashboard import (
    Progress,
    announce_committee,
    announce_labels,
    png_markdown,
    publish_summary,
    publish_tables,
    training_progress,
)
from flows.report import campaign_figures, markdown_table, write_report
from flows.status import campaign_status, dashboard_rows, generation_rows, retrain_rows, timing_rows
from flows.steps.decide import decide
from flows.steps.exploration import explore, select_candidates
from flows.steps.initial import sample_initial
from flows.steps.labelling import label_pending, require_initial_labels, reset_dead_workers, worker_name
from flows.steps.training import evaluate_fresh, load_latest, train_generation
from flows.storage import Label, LabelStatus, Structure


def context(config_path: str) -> CampaignContext:
    """One campaign context per process and config file version (engines are
    thread-safe): an edited config (e.g. a raised ``max_generations``) is read anew."""
    from pathlib import Path

    path = Path(config_path).resolve()
    return _context(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _context(config_path: str, modified_ns: int) -> CampaignContext:
    return open_campaign(config_path)


def _no_cache(**kwargs: Any):
    return task(cache_policy=NO_CACHE, **kwargs)


@_no_cache(name="sample-initial")
def sample_task(config_path: str) -> dict:
    return sample_initial(context(config_path))


@_no_cache(name="label-batch", retries=2, retry_delay_seconds=10)
def label_task(config_path: str, max_labels: int) -> dict:
    counts = label_pending(context(config_path), max_labels=max_labels, worker=worker_name("prefect"))
    return asdict(counts)


@_no_cache(name="explore")
def explore_task(config_path: str, generation_index: int) -> dict:
    ctx = context(config_path)
    progress = Progress(ctx.name, "exploration", f"generation {generation_index}: MD")
    summary = explore(ctx, generation_index, progress=lambda step, total, active: progress.update(
        step / total, f"step {step}/{total}, {active} replica(s) running"))
    progress.finish()  # replicas that all stopped early never report the last step
    return summary


@_no_cache(name="select")
def select_task(config_path: str, generation_index: int) -> dict:
    return select_candidates(context(config_path), generation_index)


@_no_cache(name="evaluate-fresh")
def evaluate_fresh_task(config_path: str, generation_index: int) -> dict | None:
    return evaluate_fresh(context(config_path), generation_index)


@_no_cache(name="train-committee")
def train_task(config_path: str, generation_index: int) -> int:
    ctx = context(config_path)
    progress = training_progress(ctx, f"generation {generation_index}: committee")
    committee_id = train_generation(ctx, generation_index, progress=progress.epoch)
    progress.finish()
    announce_committee(ctx.name, ctx.campaign_id, committee_id, str(ctx.committee_dir(generation_index, committee_id)),
                       ctx.identity)
    return committee_id


@_no_cache(name="decide")
def decide_task(config_path: str, generation_index: int) -> tuple[bool, str | None]:
    return decide(context(config_path), generation_index)


def pending_labels(ctx: CampaignContext) -> int:
    with Session(ctx.engine) as session:
        return session.scalar(select(func.count()).select_from(Label).join(Structure).where(
            Structure.campaign_id == ctx.campaign_id, Label.status == LabelStatus.PENDING)) or 0


def _label_counts(ctx: CampaignContext, label_ids: list[int]) -> dict[str, int]:
    with Session(ctx.engine) as session:
        rows = session.execute(select(Label.status, func.count()).where(Label.id.in_(label_ids))
                               .group_by(Label.status)).all()
    counts = {str(status): n for status, n in rows}
    return {"done": counts.get(LabelStatus.DONE.value, 0), "failed": counts.get(LabelStatus.FAILED.value, 0)}


def label_all(config_path: str, generation_index: int) -> dict:
    """Fan the pending labels out over tasks of ``label_batch_size`` frames each; the
    labelling progress (done and failed of all) is read from the database every
    ``ARTIFACT_INTERVAL_S`` while they run, so it moves within a batch too."""
    from prefect.futures import wait

    from flows.dashboard import ARTIFACT_INTERVAL_S

    ctx = context(config_path)
    start = time.perf_counter()
    with Session(ctx.engine) as session:
        label_ids = list(session.scalars(select(Label.id).join(Structure).where(
            Structure.campaign_id == ctx.campaign_id, Label.status == LabelStatus.PENDING)))
    pending = len(label_ids)
    batch = ctx.config.execution.label_batch_size
    totals = {"done": 0, "failed": 0}
    if pending:
        progress = Progress(ctx.name, "labelling", f"generation {generation_index}: QM labels")
        began = time.monotonic()

        def report(counts: dict[str, int]) -> None:
            finished = counts["done"] + counts["failed"]
            eta = ""
            if 0 < finished < pending:
                eta = f", about {(time.monotonic() - began) / finished * (pending - finished) / 60:.0f} min left"
            progress.update(finished / pending, f"{counts['done']}/{pending} done, {counts['failed']} failed{eta}")

        report(totals)
        futures = [label_task.submit(config_path, batch) for _ in range(math.ceil(pending / batch))]
        while wait(futures, timeout=ARTIFACT_INTERVAL_S).not_done:
            report(_label_counts(ctx, label_ids))
        for future in futures:
            for key, value in future.result().items():
                totals[key] += value
        report(totals)
        progress.finish()
    announce_labels(ctx.name, ctx.campaign_id, totals["done"], ctx.identity)
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, generation_index)
        mark_step_done(session, generation, "label", time.perf_counter() - start,
                       **{f"labels_{key}": value for key, value in totals.items()})
    return totals


def publish_campaign(ctx: CampaignContext) -> None:
    """Publish the campaign to the dashboard run (``flows.dashboard``) and rewrite its
    report folder (``alflow report``), so the summary's link is always true. A failure
    here is logged, never raised: the dashboard must not stop the science."""
    import logging

    try:
        figures = campaign_figures(ctx)
        report = write_report(ctx, figures=figures)
        target = ctx.config.loop.convergence.force_mae_target_eV_A
        with Session(ctx.engine) as session:
            rows = dashboard_rows(session, ctx.campaign_id, target)
            timings = timing_rows(session, ctx.campaign_id)
            retrains = retrain_rows(session, ctx.campaign_id)
            status = campaign_status(session, ctx.campaign_id, ctx.work_dir)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).warning("campaign %s not published: %s", ctx.name, exc)
        return
    select_cfg = ctx.config.select
    publish_tables(ctx.name, rows, timings, retrains)
    publish_summary(ctx.name, "\n".join([
        f"# alflow campaign {ctx.name}", "",
        f"**Status** {status['stop_reason'] or 'running'}  ",
        f"**Labels** {status['labels']} done, {status['failed_labels']} failed, {status['pending_labels']} pending  ",
        f"**Target** fresh-label force MAE {target * 1000:g} meV/Å; trust window "
        f"{select_cfg.trust_lo_eV_A:g}-{select_cfg.trust_hi_eV_A:g} eV/Å  ",
        f"**Latest committee** `{status['latest_committee']}`", "",
        "## Force error against labels", png_markdown(figures["learning_curve.png"], "learning curve"), "",
        "## Committee disagreement of the explored frames",
        png_markdown(figures["force_dev_histogram.png"], "max_force_dev histogram"), "",
        "## Uncertainty against true error, fresh labels",
        png_markdown(figures["uncertainty_vs_error.png"], "uncertainty against error"), "",
        "## Generations", markdown_table(rows), "",
        *(["## Retrains", markdown_table(retrains), ""] if retrains else []),
        f"Report (rewritten with every update): `{report}`"]))


def run_generation(config_path: str, index: int) -> tuple[bool, str | None]:
    """Explore, select, label, evaluate on fresh labels, retrain, decide (skipping done steps)."""
    ctx = context(config_path)
    with Session(ctx.engine) as session, session.begin():
        done = dict((get_or_create_generation(session, ctx.campaign_id, index).metrics or {}).get("steps") or {})
    if "explore" not in done:
        explore_task(config_path, index)
    if "select" not in done:
        select_task(config_path, index)
    label_all(config_path, index)
    if "evaluate_fresh" not in done:
        evaluate_fresh_task(config_path, index)
    if "train" not in done:
        train_locked(config_path, index)
    return decide_task(config_path, index)


def train_locked(config_path: str, generation_index: int) -> int:
    """``train_task`` holding the campaign's committee lock (``flows.lock.campaign_lock``),
    so a retrain deployment never trains the same campaign at the same time. Only
    training holds it: a run killed while exploring or labelling leaves no lock behind."""
    with campaign_lock(context(config_path).name):
        return train_task(config_path, generation_index)


@flow(name="active-learning", log_prints=False)
def active_learning(config_path: str, max_new_generations: int | None = None, extend: bool = False) -> dict:
    """Run or resume the campaign of ``config_path`` until it converges or hits its limit.
    One runner per campaign (``flows.runner``: a second is refused with ``CampaignBusy``);
    training holds the campaign's committee lock (``train_locked``).

    ``max_new_generations`` stops after that many more generations (scheduled cycles).
    ``extend`` (``alflow run --generations N``): run exactly ``max_new_generations`` more
    generations even if the campaign had stopped (converged or at its limit). A campaign
    stopped at ``[loop] max_generations`` goes on by itself once the limit is raised.
    """
    ctx = context(str(config_path))
    with campaign_runner(ctx):
        return _run_loop(ctx, max_new_generations, extend)


def _run_loop(ctx: CampaignContext, max_new_generations: int | None, extend: bool) -> dict:
    logger = get_run_logger()
    config_path = str(ctx.config_path)
    stale = reset_dead_workers(ctx)
    if stale:
        logger.info("resuming: %d label(s) left running by a dead worker put back to pending", len(stale))
    with Session(ctx.engine) as session, session.begin():
        done0 = dict((get_or_create_generation(session, ctx.campaign_id, 0).metrics or {}).get("steps") or {})
    published = False
    if "decide" not in done0:
        if "train" not in done0:
            sample_task(config_path)
            label_all(config_path, 0)
            require_initial_labels(ctx)  # every label failed: one clear error, not a failed training
            train_locked(config_path, 0)
        decide_task(config_path, 0)  # marks generation 0 done
        publish_campaign(ctx)
        published = True
    ran = 0
    stop, reason = _finished(ctx)
    if stop and extend and max_new_generations:
        logger.info("campaign had stopped (%s); extending it by %d generation(s) as asked", reason,
                    max_new_generations)
    while (max_new_generations is None or ran < max_new_generations) and (
            not stop or (extend and max_new_generations is not None)):
        index = _next_generation_index(ctx)
        stop, reason = run_generation(config_path, index)
        ran += 1
        publish_campaign(ctx)
        published = True
        logger.info("generation %d done%s", index, f": {reason}" if reason else "")
    if not published:  # nothing new: still show this run's table and summary
        publish_campaign(ctx)
    with Session(ctx.engine) as session:
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
    the generation limit no longer holds once ``[loop] max_generations`` was raised."""
    with Session(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id)
    decided = [row for row in status["generations"] if row["status"] == "done"]
    last = decided[-1] if decided else None
    if last is None or not last["stop_reason"]:
        return False, None
    if last["stop_reason"].startswith("generation limit") and last["generation"] < ctx.config.loop.max_generations:
        return False, None
    return True, last["stop_reason"]


def _next_generation_index(ctx: CampaignContext) -> int:
    """The first generation >= 1 not marked decided."""
    with Session(ctx.engine) as session:
        rows = generation_rows(session, ctx.campaign_id)
    decided = [r["generation"] for r in rows if r["status"] == "done" and r["generation"] >= 1]
    return max(decided, default=0) + 1


def task_runner_for(config: CampaignConfig):
    """The task runner the config's ``[execution]`` section asks for."""
    execution = config.execution
    if execution.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=execution.max_workers)
    if execution.task_runner == "process":
        return ProcessPoolTaskRunner(max_workers=execution.max_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ImportError("task_runner = \"dask\" needs the [dask] extra: pip install 'alflow[dask]'") from exc
    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    return DaskTaskRunner(cluster_class=execution.dask_cluster_class or "distributed.LocalCluster",
                          cluster_kwargs=execution.cluster_kwargs)
