"""Campaigns and generations: create, resume, and guard the level of theory."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flows.storage.models import Campaign


class LevelOfTheoryMismatch(ValueError):
    """A result or a resumed campaign uses a different reference method than stored."""


def normalise_level_of_theory(level_of_theory: dict[str, Any]) -> dict[str, Any]:
    """``level_of_theory`` as stored in JSON: keys sorted, tuples as lists.

    Raises ``TypeError`` if it is not JSON-serialisable.
    """
    return json.loads(json.dumps(level_of_theory, sort_keys=True))


def check_level_of_theory(
    expected: dict[str, Any], given: dict[str, Any], *, what: str
) -> None:
    """Raise :class:`LevelOfTheoryMismatch` naming each differing key, or return."""
    expected = normalise_level_of_theory(expected)
    given = normalise_level_of_theory(given)
    if expected == given:
        return
    keys = sorted(set(expected) | set(given))
    differences = [
        f"{key}: {given.get(key, '<missing>')!r} != {expected.get(key, '<missing>')!r}"
        for key in keys
        if expected.get(key, "<missing>") != given.get(key, "<missing>")
    ]
    raise LevelOfTheoryMismatch(
        f"{what} has a different level of theory than the campaign "
        f"({'; '.join(differences)}; given != campaign)"
    )


def ensure_campaign(
    session: Session,
    name: str,
    *,
    config_snapshot: dict[str, Any],
    level_of_theory: dict[str, Any],
) -> Campaign:
    """The campaign called ``name``, created if new (flushed, so it has an id).

    Resuming keeps the stored config snapshot. Raises :class:`LevelOfTheoryMismatch` if
    the campaign exists with another level of theory: its labels would be mixed.
    """
    campaign = session.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()
    if campaign is None:
        campaign = Campaign(
            name=name,
            config=config_snapshot,
            level_of_theory=normalise_level_of_theory(level_of_theory),
        )
        try:
            with session.begin_nested():  # a savepoint: the caller's transaction survives
                session.add(campaign)
        except IntegrityError:
            # Created by a concurrent caller since the SELECT (PostgreSQL has no
            # database-wide write lock to serialise them, as SQLite's BEGIN IMMEDIATE does).
            campaign = session.scalars(select(Campaign).where(Campaign.name == name)).one()
        else:
            return campaign
    check_level_of_theory(
        campaign.level_of_theory, level_of_theory, what=f"the config of campaign {name!r}"
    )
    return campaign
