"""What the Prefect dashboard shows and hears: artifacts and events of a campaign.

Artifact keys are lowercase letters, digits and dashes, derived from the campaign name.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event

log = logging.getLogger(__name__)
LABELS_ADDED = "alflow.labels.added"
COMMITTEE_TRAINED = "alflow.committee.trained"


def artifact_key(campaign_name: str, what: str) -> str:
    """``<campaign>-<what>`` with anything but [a-z0-9-] replaced by dashes."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{campaign_name}-{what}".lower()).strip("-")
    return re.sub(r"-{2,}", "-", slug)


def campaign_resource(campaign_name: str, campaign_id: int) -> dict[str, str]:
    return {"prefect.resource.id": f"alflow.campaign.{artifact_key(campaign_name, 'x')[:-2]}",
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
    """A Prefect progress artifact (0-100 %) that tolerates running outside a flow."""

    def __init__(self, campaign_name: str, what: str, description: str) -> None:
        self.artifact_id = None
        try:
            self.artifact_id = create_progress_artifact(
                progress=0.0, key=artifact_key(campaign_name, what), description=description)
        except Exception as exc:  # noqa: BLE001 - the dashboard must never stop the science
            log.debug("no progress artifact: %s", exc)

    def update(self, fraction: float) -> None:
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=round(100.0 * min(max(fraction, 0.0), 1.0), 1))


def publish_generation_table(campaign_name: str, rows: list[dict[str, Any]]) -> None:
    create_table_artifact(table=rows, key=artifact_key(campaign_name, "generations"),
                          description=f"alflow campaign {campaign_name}: one row per generation")


def publish_summary(campaign_name: str, markdown: str) -> None:
    create_markdown_artifact(markdown=markdown, key=artifact_key(campaign_name, "summary"),
                             description=f"alflow campaign {campaign_name}: summary")
