"""The campaign's committee lock: one Prefect global concurrency limit with one slot.

Every flow that trains a campaign's committee holds ``alflow-<campaign>-committee`` while
it trains (``active_learning``, so ``alflow run`` and the ``al-cycle`` deployment, around
each training step; ``retrain`` throughout), so two of them never train one campaign at
once, whoever started them.

The slot is held through a lease that the holder renews in the background; the server
frees the slot of a holder that died (killed, node lost) once the lease runs out
(``LOCK_LEASE_S``, plus the server's repossessor interval). ``active_learning`` takes
the lock only when Prefect runs as a server (``PREFECT_API_URL`` set, as deployments
need): Prefect's ephemeral in-process server keeps leases in its own memory, so an
``alflow run`` killed while training would leave the slot taken for good in the shared
Prefect database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import MissingContextError, ObjectAlreadyExists
from prefect.settings import PREFECT_API_URL

from flows.dashboard import campaign_slug

log = logging.getLogger(__name__)
#: the lease on the committee lock is renewed in the background; a dead holder frees it after this
LOCK_LEASE_S = 60.0


def lock_name(campaign_name: str) -> str:
    return f"alflow-{campaign_slug(campaign_name)}-committee"


def ensure_lock(campaign_name: str) -> str:
    """Create (or reset to one slot) the campaign's global concurrency limit; its name."""
    name = lock_name(campaign_name)
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, 1)
        except ObjectAlreadyExists:  # created by a concurrent run between read and create
            pass
    return name


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (shown in the dashboard), or this module's outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log


@contextmanager
def committee_lock(campaign_name: str) -> Iterator[None]:
    """Hold the campaign's one committee slot for the ``with`` block, waiting for it as
    long as another run holds it."""
    name, logger = ensure_lock(campaign_name), _run_logger()
    logger.info("waiting for the committee lock %s", name)
    start = time.monotonic()
    with concurrency(name, occupy=1, lease_duration=LOCK_LEASE_S, strict=True,
                     raise_on_lease_renewal_failure=False):
        logger.info("holding the committee lock %s (waited %.1f s)", name, time.monotonic() - start)
        yield
    logger.info("released the committee lock %s", name)


def campaign_lock(campaign_name: str) -> AbstractContextManager[None]:
    """The committee lock if Prefect runs as a server (``PREFECT_API_URL`` set), else
    nothing: see the module's note on the ephemeral server."""
    if PREFECT_API_URL.value():
        return committee_lock(campaign_name)
    log.debug("ephemeral Prefect server: campaign %s runs without the committee lock", campaign_name)
    return nullcontext()
