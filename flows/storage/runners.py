"""The campaign's runner row (``Runner``): who runs its generation loop now.

``flows.runner`` decides who is alive (same host and process, heartbeat age); these
functions read and write the row, each in a transaction of its own. :func:`claim_runner`
reads and replaces the row in one transaction that takes the write lock first (SQLite's
``BEGIN IMMEDIATE``; on PostgreSQL the row is read ``FOR UPDATE``), so of two
processes claiming a free campaign at once exactly one gets it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flows.storage.engine import immediate_engine
from flows.storage.models import Runner
from flows.storage.types import utc_now


@dataclass(frozen=True)
class RunnerInfo:
    """A campaign's runner row, detached: ``host:pid[:tag]``, started, last heartbeat (UTC)."""

    owner: str
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class RunnerClaim:
    """What :func:`claim_runner` did: ``taken``, or refused; ``other`` is the live holder
    that refused it, or the holder it replaced (None: the row was free, or already ours)."""

    taken: bool
    other: RunnerInfo | None


def _info(row: Runner | None) -> RunnerInfo | None:
    return None if row is None else RunnerInfo(row.owner, row.started_at, row.heartbeat_at)


def current_runner(engine: Engine, campaign_id: int) -> RunnerInfo | None:
    """The campaign's runner row, or None (a read; nothing is locked or written)."""
    with Session(engine) as session:
        return _info(session.get(Runner, campaign_id))


def claim_runner(engine: Engine, campaign_id: int, owner: str, *,
                 alive: Callable[[RunnerInfo], bool], now: datetime | None = None) -> RunnerClaim:
    """Take the campaign's runner row for ``owner`` unless another owner holds it and
    ``alive(holder)`` says it is alive; a holder that is not alive is replaced."""
    now = now or utc_now()
    try:
        with Session(immediate_engine(engine)) as session, session.begin():
            row = session.scalars(select(Runner).where(Runner.campaign_id == campaign_id)
                                  .with_for_update()).one_or_none()
            holder = _info(row)
            if holder is not None and holder.owner == owner:
                return RunnerClaim(True, None)
            if holder is not None and alive(holder):
                return RunnerClaim(False, holder)
            if row is not None:
                session.delete(row)
                session.flush()
            session.add(Runner(campaign_id=campaign_id, owner=owner, started_at=now, heartbeat_at=now))
    except IntegrityError:  # another process inserted the row since our read (PostgreSQL: no row to lock)
        holder = current_runner(engine, campaign_id)
        if holder is not None and holder.owner != owner:
            return RunnerClaim(False, holder)
        raise
    return RunnerClaim(True, holder)


def beat_runner(engine: Engine, campaign_id: int, owner: str, now: datetime | None = None) -> bool:
    """Renew ``owner``'s heartbeat; False when the row is not (any longer) ``owner``'s."""
    with Session(engine) as session, session.begin():
        row = session.get(Runner, campaign_id)
        if row is None or row.owner != owner:
            return False
        row.heartbeat_at = now or utc_now()
    return True


def release_runner(engine: Engine, campaign_id: int, owner: str) -> bool:
    """Delete the campaign's runner row if ``owner`` holds it; whether it did."""
    with Session(engine) as session, session.begin():
        result = session.execute(delete(Runner).where(Runner.campaign_id == campaign_id, Runner.owner == owner))
        return bool(result.rowcount)


def put_runner(engine: Engine, campaign_id: int, owner: str, *, started_at: datetime,
               heartbeat_at: datetime) -> None:
    """Write the runner row as given, whoever held it (tests, repairs by hand)."""
    with Session(engine) as session, session.begin():
        session.merge(Runner(campaign_id=campaign_id, owner=owner, started_at=started_at,
                             heartbeat_at=heartbeat_at))
