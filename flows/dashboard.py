"""What the Prefect dashboard shows and hears: artifacts and events of a campaign.

Artifact keys are lowercase letters, digits and dashes, derived from the campaign name.
:func:`publish_campaign` writes a campaign's tables and summary (and rewrites its report
folder) after every generation, retrain and labelling backlog.

Every artifact goes to the *dashboard run*: the root of the current flow-run tree, i.e.
the run a schedule, an automation or a person started (``al-cycle``, ``retrain``,
``label-backlog``, or ``active-learning`` under ``alflow run``), not the subflow or task
that made it, so the run in the runs list is the one that shows the science:

- ``<slug>-summary`` (markdown): status, the learning curve against the target, the
  explored frames' ``max_force_dev`` against the trust window and uncertainty against
  true error on every fresh label (PNG images embedded as data URIs), the per-generation
  table and the report's path (``alflow report`` output, rewritten at every publish);
- ``<slug>-generations`` (table): one narrow row per generation, units in the headers;
- ``<slug>-timings`` (table): seconds per step and generation;
- ``<slug>-retrains`` (table): one row per retrain outside the loop;
- ``<slug>-ir-spectrum`` (markdown): the latest ``alflow spectrum`` (``publish_spectrum``);
- ``<slug>-exploration`` / ``-labelling`` / ``-training`` (progress): the running
  step's progress, its counts in the description (MD steps, labels done/failed of
  total, epoch and losses), updated every ``ARTIFACT_INTERVAL_S`` while it runs.
"""

from __future__ import annotations

import logging
import base64
import json
import math
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event

from flows.progress import publish

log = logging.getLogger(__name__)
LABELS_ADDED = "alflow.labels.added"
COMMITTEE_TRAINED = "alflow.committee.trained"
#: a progress artifact is written at most this often (each write is an API call), s
ARTIFACT_INTERVAL_S = 2.0


def artifact_key(campaign_name: str, what: str) -> str:
    """``<campaign>-<what>`` with anything but [a-z0-9-] replaced by dashes."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{campaign_name}-{what}".lower()).strip("-")
    return re.sub(r"-{2,}", "-", slug)


def campaign_slug(campaign_name: str) -> str:
    """The campaign name in lowercase letters, digits and dashes (deployment names, keys)."""
    return artifact_key(campaign_name, "")


def campaign_resource(campaign_name: str, campaign_id: int, identity: str | None = None) -> dict[str, str]:
    """The Prefect resource of a campaign's events: ``alflow.campaign.<slug>``, and with
    ``identity`` (``flows.identity.campaign_identity``: its database and name) the label
    ``alflow.campaign-identity``, which the retrain trigger also matches, so a same-named
    campaign in another database never starts it."""
    resource = {"prefect.resource.id": f"alflow.campaign.{campaign_slug(campaign_name)}",
                "prefect.resource.name": campaign_name, "alflow.campaign-id": str(campaign_id)}
    if identity:
        resource["alflow.campaign-identity"] = identity
    return resource


def announce_labels(campaign_name: str, campaign_id: int, count: int, identity: str | None = None) -> None:
    """Emit ``alflow.labels.added`` (payload: campaign id and name, count of new labels)."""
    if count > 0:
        emit_event(event=LABELS_ADDED, resource=campaign_resource(campaign_name, campaign_id, identity),
                   payload={"campaign_id": campaign_id, "campaign": campaign_name, "count": count})


def announce_committee(campaign_name: str, campaign_id: int, committee_id: int, path: str,
                       identity: str | None = None) -> None:
    emit_event(event=COMMITTEE_TRAINED, resource=campaign_resource(campaign_name, campaign_id, identity),
               payload={"campaign_id": campaign_id, "campaign": campaign_name,
                        "committee_id": committee_id, "checkpoint": path})


def _current_flow_run_id() -> UUID | None:
    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run.flow_run_id is not None:
        return task_ctx.task_run.flow_run_id
    return flow_ctx.flow_run.id if flow_ctx is not None and flow_ctx.flow_run is not None else None


@lru_cache(maxsize=64)
def _root_flow_run(flow_run_id: UUID) -> UUID:
    """Walk up from a flow run through its parent task runs to the run nobody started
    from inside another flow."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        while run.parent_task_run_id is not None:
            parent = client.read_task_run(run.parent_task_run_id)
            if parent.flow_run_id is None:
                break
            run = client.read_flow_run(parent.flow_run_id)
    return run.id


def dashboard_run_id() -> UUID | None:
    """The flow run whose Artifacts tab shows the campaign: the root of the current run
    tree (None outside a flow or task run)."""
    current = _current_flow_run_id()
    return None if current is None else _root_flow_run(current)


def _create(kind: str, key: str, data: Any, description: str) -> UUID | None:
    """Create an artifact on the dashboard run; its id (None outside a run)."""
    flow_run_id = dashboard_run_id()
    if flow_run_id is None:
        return None
    with get_client(sync_client=True) as client:
        return client.create_artifact(ArtifactCreate(
            type=kind, key=key, description=description, data=data, flow_run_id=flow_run_id)).id


def _update(artifact_id: UUID, data: Any, description: str) -> None:
    with get_client(sync_client=True) as client:
        client.update_artifact(artifact_id, ArtifactUpdate(data=data, description=description))


def _safe(kind: str, key: str, data: Any, description: str) -> None:
    try:
        _create(kind, key, data, description)
    except Exception as exc:  # noqa: BLE001 - the dashboard must never stop the science
        log.warning("artifact %s not published: %s", key, exc)


class Progress:
    """Progress of one step: the Prefect progress artifact ``<campaign>-<what>`` (its
    description carries the counts: "12/40 labels done, 1 failed") and the local sinks
    of ``flows.progress`` (the terminal's bars or log lines).

    Local sinks get every update. The artifact costs an API call per write: it is created
    at the first update (so the dashboard shows the step as soon as it starts), then
    updated at most every ``min_interval_s`` seconds, and always at completion. Outside a
    flow or task run (or if the API fails) there is no artifact; the step goes on regardless.
    """

    def __init__(self, campaign_name: str, what: str, description: str, *,
                 min_interval_s: float = ARTIFACT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.key, self.description = artifact_key(campaign_name, what), description
        self.min_interval_s, self._clock = min_interval_s, clock
        self.artifact_id = None
        self.written: list[tuple[float, str]] = []  # (percent, description) written, in order
        self._last_write = -math.inf
        self._artifact_ok = FlowRunContext.get() is not None or TaskRunContext.get() is not None

    def update(self, fraction: float, detail: str | None = None, numbers: dict[str, float] | None = None) -> None:
        """``fraction`` (0-1) done; ``detail`` the counts behind it, shown in the dashboard;
        ``numbers`` the same counts for the local sinks (``flows.progress.publish``)."""
        fraction = min(max(fraction, 0.0), 1.0)
        publish(self.key, self.description, fraction, numbers)
        now = self._clock()
        if fraction >= 1.0 or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            self._write(round(100.0 * fraction, 1), f"{self.description}: {detail}" if detail else self.description)

    def finish(self, detail: str | None = None) -> None:
        """The step is complete (even if its last update said less): 100 %."""
        self.update(1.0, detail or (self.written[-1][1].removeprefix(f"{self.description}: ")
                                    if self.written and self.written[-1][1] != self.description else None))

    def _write(self, percent: float, description: str) -> None:
        if not self._artifact_ok or (self.written and self.written[-1] == (percent, description)):
            return
        try:
            if self.artifact_id is None:
                self.artifact_id = _create("progress", self.key, percent, description)
                if self.artifact_id is None:
                    self._artifact_ok = False
                    return
            else:
                _update(self.artifact_id, percent, description)
        except Exception as exc:  # noqa: BLE001 - the dashboard must never stop the science
            self._artifact_ok = False
            log.debug("no progress artifact: %s", exc)
            return
        self.written.append((percent, description))


class TrainingProgress(Progress):
    """Progress of committee training: epochs of ``max_epochs`` (early stopping may end it
    sooner), the latest training and validation loss in the description."""

    def __init__(self, campaign_name: str, description: str, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(campaign_name, "training", description, **kwargs)
        self.max_epochs = max_epochs

    def epoch(self, epoch: int, losses: dict[str, float]) -> None:
        train_loss, val_loss = losses.get("train_loss", float("nan")), losses.get("val_loss", float("nan"))
        self.update((epoch + 1) / self.max_epochs,
                    f"epoch {epoch + 1}/{self.max_epochs}, training loss {train_loss:.4g}, "
                    f"validation loss {val_loss:.4g}",
                    {"epoch": epoch + 1, "epochs": self.max_epochs, "train_loss": train_loss, "val_loss": val_loss})


def training_progress(ctx: Any, description: str, *, warm_start: bool = True,
                      generation_index: int = 0) -> TrainingProgress:
    """The training progress of a campaign context (``flows.campaign.CampaignContext``);
    ``warm_start``: the training continues a previous committee (``[train]
    warm_start_max_epochs`` caps it unless generation ``generation_index`` is a long one)."""
    config = ctx.config.train_config().for_warm_start_number(generation_index)
    return TrainingProgress(ctx.name, description, config.epochs(warm_start))


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG as a markdown image with a data URI (the Prefect UI renders it)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def publish_tables(campaign_name: str, generations: list[dict[str, Any]], timings: list[dict[str, Any]],
                   retrains: list[dict[str, Any]]) -> None:
    """The generation, timing and retrain tables of a campaign on the dashboard run."""
    for what, rows, text in (("generations", generations, "one row per generation"),
                             ("timings", timings, "wall time of each generation's steps"),
                             ("retrains", retrains, "one row per retrain outside the loop")):
        if rows or what != "retrains":
            _safe("table", artifact_key(campaign_name, what), json.dumps(rows),
                  f"alflow campaign {campaign_name}: {text}")


def publish_summary(campaign_name: str, markdown: str) -> None:
    _safe("markdown", artifact_key(campaign_name, "summary"), markdown,
          f"alflow campaign {campaign_name}: summary")


def publish_spectrum(campaign_name: str, png_bytes: bytes, summary_markdown: str) -> bool:
    """The IR spectrum of ``alflow spectrum`` (``flows.spectrum``) as the markdown artifact
    ``<slug>-ir-spectrum``: the summary and the plot. Inside a flow run it goes to the
    dashboard run; outside one (the CLI) it is a keyed artifact of no run, and only when
    ``PREFECT_API_URL`` names a server (no ephemeral server is started for a picture).
    Whether it was published; a failure is logged, never raised."""
    key = artifact_key(campaign_name, "ir-spectrum")
    markdown = "\n".join([summary_markdown, "", png_markdown(png_bytes, "IR spectrum")])
    description = f"alflow campaign {campaign_name}: IR spectrum"
    try:
        if dashboard_run_id() is not None:
            return _create("markdown", key, markdown, description) is not None
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return False
        with get_client(sync_client=True) as client:
            client.create_artifact(ArtifactCreate(type="markdown", key=key, description=description, data=markdown))
        return True
    except Exception as exc:  # noqa: BLE001 - the dashboard must never stop the science
        log.warning("artifact %s not published: %s", key, exc)
        return False


def publish_campaign(ctx: Any) -> None:
    """Publish the campaign to the dashboard run (``flows.dashboard``) and rewrite its
    report folder (``alflow report``), so the summary's link is always true. A failure
    here is logged, never raised: the dashboard must not stop the science."""
    from flows import storage
    from flows.report import MAP, campaign_figures, markdown_table, write_report
    from flows.status import campaign_status, dashboard_rows, label_origin_rows, retrain_rows, timing_rows

    try:
        figures = campaign_figures(ctx)
        report = write_report(ctx, figures=figures)
        target = ctx.config.loop.convergence.force_mae_target_eV_A
        with storage.reading(ctx.engine) as session:
            rows = dashboard_rows(session, ctx.campaign_id, target)
            timings = timing_rows(session, ctx.campaign_id)
            retrains = retrain_rows(session, ctx.campaign_id)
            status = campaign_status(session, ctx.campaign_id, ctx.work_dir)
            origins = label_origin_rows(session, ctx.campaign_id)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).warning("campaign %s not published: %s", ctx.name, exc)
        return
    select_cfg = ctx.config.select
    publish_tables(ctx.name, rows, timings, retrains)
    publish_summary(ctx.name, "\n".join([
        f"# alflow campaign {ctx.name}", "",
        f"**Status** {status['stop_reason'] or 'running'}  ",
        f"**Labels** {status['labels']} done, {status['failed_labels']} failed, {status['pending_labels']} pending"
        + (f"; label budget {status['labels'] + status['failed_labels'] + status['pending_labels']} of "
           f"{ctx.config.loop.max_labels} spent  " if ctx.config.loop.max_labels else "  "),
        f"**Target** fresh-label force MAE {target * 1000:g} meV/Å; trust window "
        f"{select_cfg.trust_lo_eV_A:g}-{select_cfg.trust_hi_eV_A:g} eV/Å  ",
        f"**Latest committee** `{status['latest_committee']}`", "",
        "## Force error against labels", png_markdown(figures["learning_curve.png"], "learning curve"), "",
        "## Committee disagreement of the explored frames",
        png_markdown(figures["force_dev_histogram.png"], "max_force_dev histogram"), "",
        "## Uncertainty against true error, fresh labels",
        png_markdown(figures["uncertainty_vs_error.png"], "uncertainty against error"), "",
        *(["## Where exploration went in torsion space, and what was labelled",
           png_markdown(figures[MAP], "exploration map"), ""] if MAP in figures else []),
        "## Generations", markdown_table(rows), "",
        "## Labels by where their frame came from (exploration: the replica's temperature)",
        markdown_table(origins), "",
        *(["## Retrains", markdown_table(retrains), ""] if retrains else []),
        f"Report (rewritten with every update): `{report}`"]))
