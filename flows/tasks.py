"""Prefect tasks: thin wrappers that open the campaign from its config path (in any
worker process) and call one step of ``flows.steps``; plus the fan-out of labels over
tasks and the task runner a config asks for.

The order of the steps and their marks belong to ``flows.pipeline``; what each step does
belongs to ``flows.steps``. Nothing here decides either.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows import storage
from flows.campaign import CampaignContext, open_campaign
from flows.config import CampaignConfig
from flows.dashboard import Progress, announce_committee, announce_labels, training_progress
from flows.lock import campaign_lock
from flows.steps.decide import decide
from flows.steps.exploration import explore
from flows.steps.initial import sample_initial
from flows.steps.labelling import finish_labelling, label_pending, retry_failed_initial_labels, worker_name
from flows.steps.selection import select_candidates
from flows.steps.training import evaluate_fresh, train_generation, warm_starts


def context(config_path: str) -> CampaignContext:
    """One campaign context per process and config file version (engines are
    thread-safe): an edited config (e.g. a raised ``max_generations``) is read anew."""
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
    ctx = context(config_path)
    counts = label_pending(ctx, max_labels=max_labels, worker=worker_name("prefect"))
    return asdict(counts)


@_no_cache(name="explore")
def explore_task(config_path: str, generation_index: int) -> dict:
    ctx = context(config_path)
    progress = Progress(ctx.name, "exploration", f"generation {generation_index}: MD")
    replicas = ctx.config.explore.replicas
    summary = explore(ctx, generation_index, progress=lambda step, total, active: progress.update(
        step / total, f"step {step}/{total}, {active} replica(s) running",
        {"step": step, "steps": total, "replicas_running": active, "replicas": replicas}))
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
    progress = training_progress(ctx, f"generation {generation_index}: committee", warm_start=warm_starts(ctx),
                                 generation_index=generation_index)
    committee_id = train_generation(ctx, generation_index, progress=progress.epoch)
    progress.finish()
    announce_committee(ctx.name, ctx.campaign_id, committee_id, str(ctx.committee_dir(generation_index, committee_id)),
                       ctx.identity)
    return committee_id


@_no_cache(name="decide")
def decide_task(config_path: str, generation_index: int) -> tuple[bool, str | None]:
    return decide(context(config_path), generation_index)


def pending_labels(ctx: CampaignContext) -> int:
    with storage.reading(ctx.engine) as session:
        return storage.label_counts(session, ctx.campaign_id)["pending"]


def label_all(config_path: str, generation_index: int) -> dict:
    """The label step over the flow's task runner: the pending labels fan out over tasks
    of ``label_batch_size`` frames each; the labelling progress (done and failed of all)
    is read from the database every ``ARTIFACT_INTERVAL_S`` while they run, so it moves
    within a batch too. Marks the step (``flows.steps.labelling.finish_labelling``)."""
    from prefect.futures import wait

    from flows.dashboard import ARTIFACT_INTERVAL_S

    ctx = context(config_path)
    start = time.perf_counter()
    if generation_index == 0:
        retry_failed_initial_labels(ctx)
    with storage.reading(ctx.engine) as session:
        label_ids = storage.pending_label_ids(session, ctx.campaign_id)
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
            progress.update(finished / pending, f"{counts['done']}/{pending} done, {counts['failed']} failed{eta}",
                            {"done": counts["done"], "failed": counts["failed"], "total": pending})

        report(totals)
        futures = [label_task.submit(config_path, batch) for _ in range(math.ceil(pending / batch))]
        while wait(futures, timeout=ARTIFACT_INTERVAL_S).not_done:
            with storage.reading(ctx.engine) as session:
                report(storage.label_counts(session, ctx.campaign_id, label_ids=label_ids))
        for future in futures:
            for key, value in future.result().items():
                totals[key] += value
        report(totals)
        progress.finish()
    announce_labels(ctx.name, ctx.campaign_id, totals["done"], ctx.identity)
    return finish_labelling(ctx, generation_index, totals, start)


def train_locked(config_path: str, generation_index: int) -> int:
    """``train_task`` holding the campaign's committee lock (``flows.lock.campaign_lock``),
    so a retrain deployment never trains the same campaign at the same time. Only
    training holds it: a run killed while exploring or labelling leaves no lock behind."""
    with campaign_lock(context(config_path).name):
        return train_task(config_path, generation_index)


def prefect_steps(config_path: str) -> dict[str, Any]:
    """The pipeline's step table (``flows.pipeline.run_generation``) as Prefect tasks."""
    return {"sample": lambda index: sample_task(config_path),
            "explore": lambda index: explore_task(config_path, index),
            "select": lambda index: select_task(config_path, index),
            "label": lambda index: label_all(config_path, index),
            "evaluate_fresh": lambda index: evaluate_fresh_task(config_path, index),
            "train": lambda index: train_locked(config_path, index),
            "decide": lambda index: decide_task(config_path, index)}


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
