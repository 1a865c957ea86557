"""Reference labels: claim pending frames one at a time, label, store or quarantine.

One label per claim and one transaction per result: a killed worker loses at most the
label it was computing (left ``running``, put back to ``pending`` on resume), and a
finished label is never computed again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass

from flows import storage
from flows.backends import make_backend
from flows.campaign import CampaignContext
from flows.config import ConfigError
from flows.pipeline import finishing
from flows.storage import OperationalError, claim_pending_labels, complete_label, fail_label
from qm_backends import InvalidStructure, LabelFailed

log = logging.getLogger(__name__)


class ReferenceFailed(ConfigError):
    """The ``[reference]`` loads but cannot label this system: every generation-0 label
    failed, or the starting structure could not be optimised or its Hessian computed.
    A :class:`ConfigError` on ``reference`` (one line, exit 2 from the CLI)."""

    @classmethod
    def because(cls, ctx: CampaignContext, what: str, *, see_status: bool = True) -> "ReferenceFailed":
        _quiet_prefect_tracebacks()
        status = f"; see `alflow status {ctx.config_path}`" if see_status else ""
        return cls(ctx.config_path, [("reference", f"{what}{status}; fix [reference] and rerun")])


class _NoUserErrorTracebacks(logging.Filter):
    """Prefect logs the exception that ends a task or flow run with its traceback; a
    :class:`ConfigError` is a one-line error for the user (the CLI prints it), not a bug:
    its records keep their message and lose the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConfigError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_prefect_tracebacks() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _NoUserErrorTracebacks) for existing in logger.filters):
            logger.addFilter(_NoUserErrorTracebacks())


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class LabelCounts:
    done: int = 0
    failed: int = 0

    def __add__(self, other: "LabelCounts") -> "LabelCounts":
        return LabelCounts(self.done + other.done, self.failed + other.failed)


def worker_name(tag: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{':' + tag if tag else ''}"


def label_pending(ctx: CampaignContext, *, max_labels: int | None = None, worker: str | None = None,
                  backend=None) -> LabelCounts:
    """Label pending frames of the campaign until none is left (or ``max_labels``).

    ``backend`` defaults to a new one for this call (a batch of labels): the backend's
    SCF guess cache then serves only the frames of this batch, so a label does not
    depend on which frames another task labelled before (and threads share no state).
    """
    backend = backend or make_backend(ctx.config)
    worker = worker or worker_name()
    counts = LabelCounts()
    while max_labels is None or counts.done + counts.failed < max_labels:
        claimed = claim_pending_labels(ctx.engine, ctx.campaign_id, 1, worker)
        if not claimed:
            break
        counts += _label_one(ctx, backend, claimed[0])
    return counts


def _label_one(ctx: CampaignContext, backend, label_id: int) -> LabelCounts:
    with storage.reading(ctx.engine) as session:
        atoms = storage.label_atoms(session, label_id)
        structure_id = atoms.info["structure_id"]
    try:
        backend.validate(atoms)
        result = backend.label(atoms)
    except (InvalidStructure, LabelFailed) as exc:  # the frame's fault: quarantine it
        reason, attempts = f"{type(exc).__name__}: {exc}", getattr(exc, "attempts", None)
        _write_or_release(ctx, label_id, lambda session: fail_label(session, label_id, reason, attempts))
        log.warning("structure %d quarantined: %s", structure_id, exc)
        return LabelCounts(failed=1)
    except BaseException:  # anything else is not the frame's fault: let a retry take it
        release_label(ctx, label_id)
        raise

    def store(session) -> None:
        complete_label(
            session, label_id, energy_eV=result.energy, forces_eV_A=result.forces,
            dipole_eA=result.dipole, n_scf_cycles=result.n_scf_cycles, attempts=result.attempts,
            wall_s=result.wall_s, level_of_theory=result.method,
        )

    _write_or_release(ctx, label_id, store)
    log.info("labelled structure %d (label %d) in %.2f s, %s SCF cycles",
             structure_id, label_id, result.wall_s, result.n_scf_cycles)
    return LabelCounts(done=1)


def _write_or_release(ctx: CampaignContext, label_id: int, write, *, tries: int = 5) -> None:
    """Run ``write(session)`` in a transaction, retrying transient database errors; if it
    still fails, put the claimed label back to ``pending`` and re-raise, so a retried
    task (or another worker) labels it instead of it being stranded as ``running``."""
    for attempt in range(1, tries + 1):
        try:
            with storage.transaction(ctx.engine) as session:
                write(session)
            return
        except OperationalError as exc:
            log.warning("writing label %d failed (try %d/%d): %s", label_id, attempt, tries, exc)
            if attempt == tries:
                release_label(ctx, label_id)
                raise
            time.sleep(0.5 * attempt)


def release_label(ctx: CampaignContext, label_id: int) -> None:
    """Give a claimed (running) label back to the queue."""
    with storage.transaction(ctx.engine) as session:
        storage.release_labels(session, [label_id])


#: a claim older than this is considered abandoned even if its worker cannot be checked
STALE_CLAIM_HOURS = 12.0


def worker_is_dead(worker: str | None) -> bool:
    """True when ``worker`` ("host:pid[:tag]") ran on this host and its process is gone."""
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reset_dead_workers(ctx: CampaignContext) -> list[int]:
    """Put back to ``pending`` the running labels whose worker died (same host, process
    gone) or whose claim is older than ``STALE_CLAIM_HOURS``; a live worker's claims,
    here or on another host, are left alone. Returns the label ids reset."""
    cutoff = datetime.now(timezone.utc) - timedelta(hours=STALE_CLAIM_HOURS)
    with storage.transaction(ctx.engine) as session:
        dead = [label.id for label in storage.running_labels(session, ctx.campaign_id)
                if worker_is_dead(label.worker) or (label.claimed_at is not None and label.claimed_at < cutoff)]
        storage.release_labels(session, dead)
    return dead


def label_generation(ctx: CampaignContext, generation_index: int, *, worker: str | None = None) -> dict[str, int]:
    """The label step in this process: label every pending frame, then mark the step
    (:func:`finish_labelling`). ``flows.tasks.label_all`` fans the same out over tasks."""
    start = time.perf_counter()
    if generation_index == 0:
        retry_failed_initial_labels(ctx)
    counts = label_pending(ctx, worker=worker)
    return finish_labelling(ctx, generation_index, {"done": counts.done, "failed": counts.failed}, start)


def finish_labelling(ctx: CampaignContext, generation_index: int, totals: dict[str, int],
                     started: float) -> dict[str, int]:
    """Mark the label step with this pass's counts; after generation 0, check that a
    committee has something to train on (:func:`require_initial_labels`)."""
    with finishing(ctx, generation_index, "label", started) as (session, generation):
        storage.record_labels(generation, totals["done"], totals["failed"])
    if generation_index == 0:
        require_initial_labels(ctx)
    return totals


def require_initial_labels(ctx: CampaignContext) -> dict[str, int]:
    """Check, after generation 0 is labelled and before its committee trains, that at
    least one training frame of generation 0 has a label.

    Returns the generation-0 label counts by status. Raises :class:`ReferenceFailed`
    (exit 2 from the CLI, one line) when none does and some failed: the reference cannot
    label this system as configured, and a committee cannot be trained on nothing. The
    failed labels stay quarantined with their errors (``alflow status``, ``alflow export
    --format csv``); a rerun retries them (:func:`retry_failed_initial_labels`).
    """
    with storage.transaction(ctx.engine) as session:
        labels = storage.generation_labels(session, ctx.campaign_id, 0)
        counts = {status.value: 0 for status in storage.LabelStatus}
        for label in labels:
            counts[label.status.value] += 1
        trained_on = [label for label in labels if label.structure.source == _INITIAL_TRAINING]
        failed = [label for label in labels if label.status == storage.LabelStatus.FAILED]
        if failed and not any(label.status == storage.LabelStatus.DONE for label in trained_on):
            first = one_line(failed[0].error or "no error recorded")
            what = (f"all {len(labels)} generation-0 labels failed" if len(failed) == len(labels) else
                    f"{len(failed)} of {len(labels)} generation-0 labels failed and no training frame "
                    f"has a label")
            raise ReferenceFailed.because(ctx, f"{what} (first: {first})")
    return counts


def retry_failed_initial_labels(ctx: CampaignContext) -> list[int]:
    """Put generation 0's failed labels back to ``pending`` when the last run stopped
    because none of its training frames could be labelled (generation 0 labelled, not
    trained, no training label done): a rerun after fixing ``[reference]`` retries
    them. Anywhere else a failed label stays quarantined. Returns the label ids."""
    with storage.transaction(ctx.engine) as session:
        generation = storage.generation(session, ctx.campaign_id, 0)
        steps = storage.done_steps(session, generation.id)
        if "label" not in steps or "train" in steps:
            return []
        labels = storage.generation_labels(session, ctx.campaign_id, 0)
        if any(label.status == storage.LabelStatus.DONE and label.structure.source == _INITIAL_TRAINING
               for label in labels):
            return []
        retried = [label.id for label in labels if label.status == storage.LabelStatus.FAILED]
        storage.requeue_failed_labels(session, retried)
    if retried:
        log.warning("retrying the %d generation-0 label(s) that failed in the last run (no training frame "
                    "of generation 0 had a label)", len(retried))
    return retried


#: the generation-0 frames a committee trains on (the validation frames it does not)
_INITIAL_TRAINING = storage.StructureSource.INITIAL
