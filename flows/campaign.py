"""Open a campaign: its config, database, work folders, reference backend and step marks.

Every step of a generation writes its outputs and its "done" mark in one transaction
(``mark_step_done``), so a killed run resumes at the first step without a mark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flows.config import CampaignConfig, load_config
from flows.storage import (
    Campaign,
    Committee,
    Generation,
    GenerationStatus,
    ensure_campaign,
    immediate_engine,
    init_db,
)

log = logging.getLogger(__name__)

STEPS = ("sample", "explore", "select", "label", "evaluate_fresh", "train", "evaluate", "decide")


@dataclass
class CampaignContext:
    """Everything a step needs, rebuilt cheaply from the config path in any process."""

    config_path: Path
    config: CampaignConfig
    engine: Engine
    campaign_id: int

    @property
    def work_dir(self) -> Path:
        return Path(self.config.campaign.work_dir)

    @property
    def name(self) -> str:
        return self.config.campaign.name

    def committee_dir(self, generation_index: int) -> Path:
        return self.work_dir / "committees" / f"gen-{generation_index:03d}"

    @cached_property
    def backend(self) -> Any:
        return self.config.make_backend()


def open_campaign(config_path: str | Path, *, create: bool = True) -> CampaignContext:
    """Load the config, create/upgrade the database and find (or create) the campaign.

    Raises:
        ConfigError: a bad config (nothing is created then).
        LevelOfTheoryMismatch: the database holds this campaign at another level of theory.
        LookupError: ``create=False`` and the campaign does not exist yet.
    """
    config_path = Path(config_path).resolve()
    config = load_config(config_path)
    if not create:
        db_file = _sqlite_file(config.campaign.database_url)
        if db_file is not None and not db_file.exists():
            raise LookupError(f"campaign {config.campaign.name!r} has no database yet ({db_file}); run it first")
    # Every transaction takes SQLite's write lock at once: a read-then-write transaction
    # would otherwise fail with "database is locked" beside a concurrent writer.
    engine = immediate_engine(init_db(config.campaign.database_url))
    with Session(engine) as session, session.begin():
        if create:
            campaign = ensure_campaign(
                session, config.campaign.name,
                config_snapshot=config.snapshot(), level_of_theory=config.level_of_theory(),
            )
        else:
            campaign = session.scalar(select(Campaign).where(Campaign.name == config.campaign.name))
            if campaign is None:
                raise LookupError(f"no campaign named {config.campaign.name!r} in {config.campaign.database_url}")
        campaign_id = campaign.id
    Path(config.campaign.work_dir).mkdir(parents=True, exist_ok=True)
    return CampaignContext(config_path, config, engine, campaign_id)


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def get_or_create_generation(session: Session, campaign_id: int, index: int) -> Generation:
    """The generation row of ``index``, created (pending) if missing."""
    generation = session.scalar(
        select(Generation).where(Generation.campaign_id == campaign_id, Generation.index == index)
    )
    if generation is None:
        generation = Generation(campaign_id=campaign_id, index=index, status=GenerationStatus.PENDING,
                                metrics={"steps": {}})
        session.add(generation)
        session.flush()
    return generation


def step_done(generation: Generation, step: str) -> bool:
    return step in ((generation.metrics or {}).get("steps") or {})


def mark_step_done(session: Session, generation: Generation, step: str, seconds: float,
                   **metrics: Any) -> None:
    """Record that ``step`` finished (in the caller's transaction) with its timing and metrics."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    data = dict(generation.metrics or {})
    steps = dict(data.get("steps") or {})
    steps[step] = round(seconds, 3)
    data["steps"] = steps
    data.update(metrics)
    generation.metrics = data
    column = {"explore": "explore_s", "select": "select_s", "label": "label_s", "train": "train_s",
              "evaluate": "evaluate_s"}.get(step)
    if column is not None:
        setattr(generation, column, (getattr(generation, column) or 0.0) + seconds)
    if generation.started_at is None:
        generation.started_at = datetime.now(timezone.utc)
    if generation.status == GenerationStatus.PENDING:
        generation.status = GenerationStatus.RUNNING


def latest_committee(session: Session, campaign_id: int) -> Committee | None:
    return session.scalars(
        select(Committee).where(Committee.campaign_id == campaign_id).order_by(Committee.id.desc()).limit(1)
    ).first()
