"""What the Prefect dashboard shows and hears: artifacts and events of a campaign.

Artifact keys are lowercase letters, digits and dashes, derived from the campaign name.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
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


def campaign_resource(campaign_name: str, campaign_id: int) -> dict[str, str]:
    return {"prefect.resource.id": f"alflow.campaign.{campaign_slug(campaign_name)}",
            "prefect.resource.name": campaign_name, "alflow.campaign-id": str(campaign_id)}


def announce_labels(campaign_name: str, campaign_id: int, count: int) -> None:
    """Emit ``alflow.labels.added`` (payload: campaign id and name, count of new labels)."""
    if count > 0:
        emit_event(event=LABELS_ADDED, resource=campaign_resource(campaign_name, campaign_id),
                   payload={"campaign_id": campaign_id, "campaign": campaign_name, "count": count})


def announce_committee(campaign_name: str, campaign_id: int, committee_id: int, path: str) -> None:
    emit_event(event=COMMITTEE_TRAINED, resource=campaign_resource(campaign_name, campaign_id),
               payload={"campaign_id": campaign_id, "campaign": campaign_name,
                        "committee_id": committee_id, "checkpoint": path})


class Progress:
    """Progress (0-1) of one step: the Prefect progress artifact ``<campaign>-<what>`` and
    the local sinks of ``flows.progress`` (the terminal's bars or log lines).

    Local sinks get every update. The artifact costs an API call per write, so it is
    written at most every ``min_interval_s`` seconds: first once the step has run that
    long (a short step writes only its final 100 %), and always at completion. Outside a
    flow or task run (or if the API fails) there is no artifact; the step goes on regardless.
    """

    def __init__(self, campaign_name: str, what: str, description: str, *,
                 min_interval_s: float = ARTIFACT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.key, self.description = artifact_key(campaign_name, what), description
        self.min_interval_s, self._clock = min_interval_s, clock
        self.artifact_id = None
        self.written: list[float] = []  # the percentages written to the artifact, in order
        self._last_write = clock()
        self._artifact_ok = FlowRunContext.get() is not None or TaskRunContext.get() is not None

    def update(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        publish(self.key, self.description, fraction)
        now = self._clock()
        if fraction >= 1.0 or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            self._write(round(100.0 * fraction, 1))

    def finish(self) -> None:
        """The step is complete (even if its last update said less): 100 %."""
        self.update(1.0)

    def _write(self, percent: float) -> None:
        if not self._artifact_ok or (self.written and self.written[-1] == percent):
            return
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(progress=percent, key=self.key,
                                                            description=self.description)
            else:
                update_progress_artifact(self.artifact_id, progress=percent)
        except Exception as exc:  # noqa: BLE001 - the dashboard must never stop the science
            self._artifact_ok = False
            log.debug("no progress artifact: %s", exc)
            return
        self.written.append(percent)


def publish_generation_table(campaign_name: str, rows: list[dict[str, Any]]) -> None:
    create_table_artifact(table=rows, key=artifact_key(campaign_name, "generations"),
                          description=f"alflow campaign {campaign_name}: one row per generation")


def publish_summary(campaign_name: str, markdown: str) -> None:
    create_markdown_artifact(markdown=markdown, key=artifact_key(campaign_name, "summary"),
                             description=f"alflow campaign {campaign_name}: summary")
