"""One runner per campaign: a row in the campaign database, held while the generation
loop runs (``active_learning``, so ``alflow run`` and the ``al-cycle`` deployment).

Two ``alflow run`` of one config, or a run and a scheduled cycle, would otherwise both
explore, label and train the same generations. The second is refused with
:class:`CampaignBusy` (one line, exit 2 from the CLI; a ``Skipped: campaign busy`` state
for ``al-cycle``). The owner is ``host:pid:tag``, the rule the label claims use
(``flows.steps.labelling``): its row is taken over when that process is gone (same
host), or when its heartbeat (renewed every ``HEARTBEAT_S`` by a background thread) is
older than ``STALE_AFTER_S`` (a runner on another host that died or lost its node).
The lock lives in the campaign's own database, so it works with no Prefect server and
across hosts sharing a PostgreSQL database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from flows.steps.labelling import worker_is_dead, worker_name
from flows.storage.runners import RunnerInfo, beat_runner, claim_runner, current_runner, release_runner

if TYPE_CHECKING:
    from flows.campaign import CampaignContext

log = logging.getLogger(__name__)
#: the owner renews its heartbeat this often, s
HEARTBEAT_S = 30.0
#: a runner whose heartbeat is older than this is considered dead, wherever it ran, s
STALE_AFTER_S = 300.0


class CampaignBusy(RuntimeError):
    """Another live process runs this campaign's generation loop."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


#: the owner tag of a campaign's runner (``host:pid:run``)
RUN_TAG = "run"


def is_alive(holder: RunnerInfo) -> bool:
    """Whether a runner row's owner may still be running: not a process known gone on
    this host, and a heartbeat younger than ``STALE_AFTER_S``."""
    stale = _now() - _aware(holder.heartbeat_at) > timedelta(seconds=STALE_AFTER_S)
    return not (stale or worker_is_dead(holder.owner))


def _refusal(ctx: CampaignContext, holder: RunnerInfo | None, owner: str) -> str | None:
    """Why ``owner`` may not take the campaign: another owner that is alive (same host and
    process there, or a heartbeat younger than ``STALE_AFTER_S``); None otherwise."""
    if holder is None or holder.owner == owner or not is_alive(holder):
        return None
    return (f"campaign {ctx.name!r} is already being run by {holder.owner} (since "
            f"{_aware(holder.started_at):%Y-%m-%d %H:%M:%S} UTC, heartbeat "
            f"{(_now() - _aware(holder.heartbeat_at)).total_seconds():.0f} s ago); wait for it to finish or "
            f"stop it; a dead runner's claim lapses after {STALE_AFTER_S:.0f} s without heartbeat")


def busy(ctx: CampaignContext) -> str | None:
    """Why the campaign cannot be run now (a live runner holds it), or None: a read-only
    look before starting a flow; :func:`acquire` decides."""
    return _refusal(ctx, current_runner(ctx.engine, ctx.campaign_id), worker_name(RUN_TAG))


def acquire(ctx: CampaignContext, owner: str) -> str | None:
    """Take the campaign's runner row for ``owner``; the dead owner it replaced, if any.
    Raises :class:`CampaignBusy` while a live owner holds it."""
    claim = claim_runner(ctx.engine, ctx.campaign_id, owner, alive=is_alive, now=_now())
    if not claim.taken:
        raise CampaignBusy(_refusal(ctx, claim.other, owner) or f"campaign {ctx.name!r} is already being run")
    return None if claim.other is None else claim.other.owner


def release(ctx: CampaignContext, owner: str) -> None:
    release_runner(ctx.engine, ctx.campaign_id, owner)


def _beat(ctx: CampaignContext, owner: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            beat_runner(ctx.engine, ctx.campaign_id, owner, _now())
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the run goes on
            log.warning("runner heartbeat of campaign %s failed: %s", ctx.name, exc)


@contextmanager
def campaign_runner(ctx: CampaignContext, tag: str = RUN_TAG) -> Iterator[str]:
    """Hold the campaign's runner row for the ``with`` block (heartbeat in a daemon
    thread); yields the owner name. :class:`CampaignBusy` if a live runner holds it."""
    owner = worker_name(tag)
    replaced = acquire(ctx, owner)
    if replaced:
        log.info("campaign %s: took over from runner %s, which is gone", ctx.name, replaced)
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(ctx, owner, stop), name="alflow-runner-heartbeat", daemon=True)
    beat.start()
    try:
        yield owner
    finally:
        stop.set()
        beat.join(timeout=5.0)
        release(ctx, owner)
