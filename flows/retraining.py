"""Retraining outside the generation loop (the ``retrain`` deployment, ``alflow retrain``):
whether to train now (:func:`plan_retrain`), and the training task itself.

A retrain trains into the latest *decided* generation: its committee is a new
``Committee`` row of that generation with a ``Retrain`` row of its own (written by
``flows.steps.training.train_generation``), saved in its own folder
(``committees/gen-NNN-cIIIII``), and the generation keeps its status and step marks, so
the loop's resume logic never sees it. While a generation is unfinished (a killed
cycle), retraining is skipped: the cycle's own train step will train on those labels,
and its fresh-label error stays honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.storage import GenerationStatus
from flows.storage.overview import backlog_generation_index, retrain_of
from flows.storage.records import generations, label_counts, latest_committee, reading

if TYPE_CHECKING:
    from flows.campaign import CampaignContext


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
    """Count the done training labels the latest committee was not trained on
    (``Committee.n_training_frames``) and decide."""
    from flows.steps.training import TRAINING_SOURCES

    with reading(ctx.engine) as session:
        rows = generations(session, ctx.campaign_id)
        committee = latest_committee(session, ctx.campaign_id)
        labels = label_counts(session, ctx.campaign_id, sources=TRAINING_SOURCES)["done"]
        decided = [g.index for g in rows if g.status == GenerationStatus.DONE]
        unfinished = [g.index for g in rows if g.status != GenerationStatus.DONE]
        seen = committee.n_training_frames if committee is not None else 0
        committee_id = committee.id if committee is not None else None
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
    """Train (warm start) on all labels into ``plan.generation_index`` and announce it;
    ``train_generation`` records the committee and its ``Retrain`` row. Returns the
    committee id, the generation, new labels, the previous committee and when it started
    and finished (ISO 8601, UTC)."""
    from flows.tasks import context
    from flows.dashboard import announce_committee, training_progress
    from flows.steps.training import train_generation, warm_starts

    ctx = context(config_path)
    index = plan.generation_index
    started = datetime.now(UTC)
    progress = training_progress(ctx, f"retrain into generation {index}", warm_start=warm_starts(ctx),
                                 generation_index=index)
    committee_id = train_generation(ctx, index, retrain={
        "new_labels": plan.new_labels, "previous_committee": plan.committee_id, "started": started},
        progress=progress.epoch)
    progress.finish()
    with reading(ctx.engine) as session:
        record = retrain_of(session, committee_id)
        finished = record.finished_at if record is not None and record.finished_at else datetime.now(UTC)
    announce_committee(ctx.name, ctx.campaign_id, committee_id, str(ctx.committee_dir(index, committee_id)),
                       ctx.identity)
    return {"committee_id": committee_id, "generation": index, "new_labels": plan.new_labels,
            "previous_committee": plan.committee_id, "started": started.isoformat(),
            "finished": finished.isoformat()}


def backlog_generation(ctx: CampaignContext) -> int | None:
    """The generation the backlog belongs to: the latest one owning a pending label,
    else the latest generation; None before the campaign has one."""
    with reading(ctx.engine) as session:
        return backlog_generation_index(session, ctx.campaign_id)
