"""Open a campaign: its config, database, work folder and reference backend.

``open_campaign`` refuses, before anything is written, what would mix two campaigns: a
changed system or committee, another level of theory, another campaign's work folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from flows import storage
from flows.backends import make_backend
from flows.config import CampaignConfig, ConfigError, load_config
from flows.storage import DatabaseError, ensure_campaign, immediate_engine, init_db
from flows.storage.backup import (
    check_before_writing,
    check_database_file,
    check_schema,
    damage,
    damaged_error,
    sqlite_file,
    unwritable_error,
)
from flows.storage.engine import database_backend, read_only_engine, redact_url

log = logging.getLogger(__name__)


@dataclass
class CampaignContext:
    """Everything a step needs, rebuilt cheaply from the config path in any process."""

    config_path: Path
    config: CampaignConfig
    engine: Any  # a SQLAlchemy engine, opened through flows.storage
    campaign_id: int
    #: read-only opens: how the config differs from what the campaign was run with
    notes: list[str] = field(default_factory=list)

    @property
    def work_dir(self) -> Path:
        return Path(self.config.campaign.work_dir)

    @property
    def name(self) -> str:
        return self.config.campaign.name

    def committee_dir(self, generation_index: int, committee_id: int) -> Path:
        """The checkpoint folder of committee ``committee_id`` (trained in generation
        ``generation_index``): keyed by the committee's row id, so two trainers (a run and
        a retrain, or two campaigns sharing a work_dir) can never write into one folder."""
        return self.work_dir / "committees" / f"gen-{generation_index:03d}-c{committee_id:05d}"

    @property
    def identity(self) -> str:
        """The campaign's identity across Prefect: a hash of its database and name
        (``flows.identity.campaign_identity``; deployment tags, event resources)."""
        from flows.identity import campaign_identity

        return campaign_identity(self.config)

    def relative(self, path: str | Path) -> str:
        """``path`` as stored in the database: relative to ``work_dir`` when inside it, so
        a campaign folder can be moved (or mounted elsewhere) and still resume."""
        path = Path(path).resolve()
        try:
            return path.relative_to(Path(self.work_dir).resolve()).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        """A stored path (``relative``) as a path on this machine: relative paths are under
        ``work_dir``; absolute ones (older campaigns) are kept."""
        return resolve_stored_path(self.work_dir, stored)

    @cached_property
    def backend(self) -> Any:
        """The reference backend for the reference geometry and its Hessian (built once)."""
        return make_backend(self.config)


#: config sections a resumed campaign cannot silently take from an edited config
FIXED_SECTIONS = ("system", "committee")


def config_drift(stored: dict[str, Any], config: CampaignConfig,
                 sections: tuple[str, ...] = FIXED_SECTIONS) -> dict[str, list[str]]:
    """Per section, the settings of ``config`` that differ from the campaign's stored
    snapshot (``"members: 3 -> 4"``); keys an older snapshot lacks are not differences."""
    current = config.snapshot()
    drift: dict[str, list[str]] = {}
    for section in sections:
        old, new = stored.get(section) or {}, current.get(section) or {}
        changed = [f"{key}: {old[key]!r} -> {new.get(key)!r}" for key in sorted(old)
                   if key in new and old[key] != new[key]]
        if changed:
            drift[section] = changed
    return drift


def _refuse_or_accept_drift(campaign: Any, config: CampaignConfig, config_path: Path,
                            new_committee: bool) -> None:
    """A resumed campaign whose config changed [system] or [committee]: refuse (the
    committee is warm-started from the stored one, so the edits would be ignored), or,
    with ``new_committee``, store the new [committee] and train the next committee from
    scratch (``new_committee_pending``, read by ``train_generation``)."""
    drift = config_drift(campaign.config or {}, config)
    if "system" in drift:
        raise ConfigError(config_path, [("system", (
            f"differs from campaign {campaign.name!r}'s ({'; '.join(drift['system'])}): a campaign is one "
            f"system; restore it, or give [campaign] a new name to start another campaign"))])
    if "committee" not in drift:
        return
    if not new_committee:
        raise ConfigError(config_path, [("committee", (
            f"differs from campaign {campaign.name!r}'s ({'; '.join(drift['committee'])}): a resumed campaign "
            f"warm-starts its committee, so these edits would be ignored; restore them, or run "
            f"`alflow run {config_path} --new-committee` to train a new committee with them from the next "
            f"training on (its labels are kept)"))])
    snapshot = dict(campaign.config)
    snapshot["committee"] = config.snapshot()["committee"]
    campaign.config = snapshot
    campaign.new_committee_pending = True
    log.warning("campaign %s: new committee settings (%s); the next training starts from scratch",
                campaign.name, "; ".join(drift["committee"]))


def open_campaign(config_path: str | Path, *, create: bool = True, new_committee: bool = False) -> CampaignContext:
    """Load the config, create/upgrade the database and find (or create) the campaign.

    ``new_committee``: accept changed [committee] settings of a resumed campaign (the
    next training starts from scratch); without it they are refused (``ConfigError``), as
    is a changed [system]. ``create=False`` fills ``notes`` with those differences instead.

    ``create=False`` (status, export, report...): the database is opened read-only
    (``read_only_engine``; also on a read-only copy of a campaign) and never created,
    migrated or written; it must be an alflow database at the newest schema revision.

    Raises:
        ConfigError: a bad config (nothing is created then).
        LevelOfTheoryMismatch: the database holds this campaign at another level of theory.
        LookupError: ``create=False`` and the campaign does not exist yet.
        UnusableDatabase: (a ``LookupError``) the database file is not a SQLite database,
            is truncated or damaged, holds another application's tables, or, with
            ``create=False``, is at an older or unknown schema revision; nothing changed.
    """
    config_path = Path(config_path).resolve()
    config = load_config(config_path, writable=create)
    if not create:
        return _open_read_only(config_path, config)
    url = config.campaign.database_url
    work_dir = Path(config.campaign.work_dir)
    owner = _work_dir_owner(work_dir)
    if owner is not None and not owner.startswith(f"{config.campaign.name} created "):
        _claim_work_dir(work_dir, "", config_path)  # another campaign's folder: refused before any write
    try:
        check_before_writing(url, quick_check=False)
        # Every transaction takes SQLite's write lock at once: a read-then-write transaction
        # would otherwise fail with "database is locked" beside a concurrent writer.
        engine = immediate_engine(init_db(url))
        with storage.transaction(engine) as session:
            campaign = ensure_campaign(
                session, config.campaign.name,
                config_snapshot=config.snapshot(), level_of_theory=config.level_of_theory(),
            )
            _refuse_or_accept_drift(campaign, config, config_path, new_committee)
            campaign_id = campaign.id
            campaign_uid = f"{campaign.name} created {campaign.created_at:%Y-%m-%dT%H:%M:%S.%f}"
            if owner is not None and owner != campaign_uid:  # same name, another database: roll back
                _claim_work_dir(work_dir, campaign_uid, config_path)
    except DatabaseError as exc:
        if damage(exc):  # "file is not a database", "database disk image is malformed"
            raise damaged_error(sqlite_file(url) or url, exc) from None
        if (refusal := unwritable_error(sqlite_file(url) or url, exc)) is not None:
            raise refusal from None
        raise
    Path(config.campaign.work_dir).mkdir(parents=True, exist_ok=True)
    _claim_work_dir(Path(config.campaign.work_dir), campaign_uid, config_path)
    return CampaignContext(config_path, config, engine, campaign_id)


def _work_dir_owner(work_dir: Path) -> str | None:
    marker = work_dir / WORK_DIR_MARKER
    return (marker.read_text().strip() or None) if marker.is_file() else None


#: in a campaign's work_dir: which campaign the folder (checkpoints, reports) belongs to
WORK_DIR_MARKER = ".alflow-campaign"


def _claim_work_dir(work_dir: Path, uid: str, config_path: Path) -> None:
    """Mark ``work_dir`` as this campaign's, or refuse (``ConfigError`` on
    ``campaign.work_dir``) if another campaign's marker is there: two campaigns in one
    folder would overwrite each other's checkpoints and reports. The uid is the campaign's
    name and creation time, so a moved campaign folder is still its own."""
    marker = work_dir / WORK_DIR_MARKER
    owner = _work_dir_owner(work_dir)
    if owner is not None and owner != uid:
        raise ConfigError(config_path, [("campaign.work_dir", (
            f"{work_dir} is the folder of another campaign ({owner}); give this campaign its own "
            f"work_dir, or remove {marker} if that campaign is gone"))])
    if owner is None:
        marker.write_text(uid + "\n")


def _open_read_only(config_path: Path, config: CampaignConfig) -> CampaignContext:
    """``open_campaign(create=False)``: check the file and its schema, find the campaign;
    the database is only read."""
    url, name = config.campaign.database_url, config.campaign.name
    db_file = sqlite_file(url)
    if db_file is None and database_backend(url) == "sqlite":
        raise LookupError(f"campaign {name!r}: {url} is not a SQLite database file; an in-memory database "
                          f"holds no campaign to read")
    if db_file is not None:
        if not db_file.exists():
            raise LookupError(f"campaign {name!r} has no database yet ({db_file}); run it first")
        check_database_file(db_file)
    where = str(db_file) if db_file is not None else redact_url(url)
    engine = read_only_engine(url)
    try:
        check_schema(engine, where, str(config_path), db_file)
        with storage.transaction(engine) as session:
            campaign_id = storage.campaign_id(session, name)
    except DatabaseError as exc:
        engine.dispose()
        if damage(exc):
            raise damaged_error(where, exc) from None
        raise
    except BaseException:
        engine.dispose()
        raise
    if campaign_id is None:
        engine.dispose()
        raise LookupError(f"no campaign named {name!r} in {where}")
    return CampaignContext(config_path, config, engine, campaign_id, _read_only_notes(engine, campaign_id, config))


def _read_only_notes(engine: Any, campaign_id: int, config: CampaignConfig) -> list[str]:
    """What a read-only command shows differently from what the config says: the stored
    campaign (its level of theory, system and committee) wins."""
    from flows.storage import normalise_level_of_theory

    with storage.reading(engine) as session:
        campaign = storage.campaign(session, campaign_id)
        stored, level = dict(campaign.config or {}), normalise_level_of_theory(campaign.level_of_theory)
    notes = []
    given = normalise_level_of_theory(config.level_of_theory())
    if given != level:
        changed = [f"{k}: {level.get(k)!r} -> {given.get(k)!r}" for k in sorted(set(level) | set(given))
                   if level.get(k) != given.get(k)]
        notes.append(f"the config's [reference] differs from the campaign's ({'; '.join(changed)}): shown are "
                     f"the campaign's labels, at its stored level of theory; `alflow run` refuses this config")
    for section, changed in config_drift(stored, config).items():
        notes.append(f"the config's [{section}] differs from the campaign's ({'; '.join(changed)}): shown is the "
                     f"campaign as run; `alflow run` refuses this config"
                     + (" (or --new-committee)" if section == "committee" else ""))
    return notes


def resolve_stored_path(work_dir: str | Path, stored: str) -> Path:
    """``stored`` (a checkpoint path from the database) under ``work_dir`` if relative."""
    path = Path(stored)
    return path if path.is_absolute() else Path(work_dir) / path
