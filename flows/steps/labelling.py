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

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from flows.campaign import CampaignContext, get_or_create_generation
from flows.config import ConfigError
from flows.storage import (
    Label,
    LabelStatus,
    Structure,
    StructureSource,
    atoms_from_structure,
    claim_pending_labels,
    complete_label,
    fail_label,
)
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

    ``backend`` defaults to a fresh one from the config (one per worker: the SCF guess
    cache is not shared between threads).
    """
    backend = backend or ctx.config.make_backend()
    worker = worker or worker_name()
    counts = LabelCounts()
    while max_labels is None or counts.done + counts.failed < max_labels:
        claimed = claim_pending_labels(ctx.engine, ctx.campaign_id, 1, worker)
        if not claimed:
            break
        counts += _label_one(ctx, backend, claimed[0])
    return counts


def _label_one(ctx: CampaignContext, backend, label_id: int) -> LabelCounts:
    with Session(ctx.engine) as session:
        label = session.get(Label, label_id)
        atoms = atoms_from_structure(label.structure)
        structure_id = label.structure_id
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

    def store(session: Session) -> None:
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
            with Session(ctx.engine) as session, session.begin():
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
    with Session(ctx.engine) as session, session.begin():
        label = session.get(Label, label_id)
        if label is not None and label.status == LabelStatus.RUNNING:
            label.status, label.worker, label.claimed_at = LabelStatus.PENDING, None, None


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
    with Session(ctx.engine) as session, session.begin():
        running = session.scalars(select(Label).join(Structure).where(
            Structure.campaign_id == ctx.campaign_id, Label.status == LabelStatus.RUNNING)).all()
        reset = []
        for label in running:
            claimed = label.claimed_at
            if worker_is_dead(label.worker) or (claimed is not None and claimed < cutoff):
                label.status, label.worker, label.claimed_at = LabelStatus.PENDING, None, None
                reset.append(label.id)
    return reset


#: the generation-0 frames a committee trains on (the validation frames it does not)
_INITIAL_TRAINING = StructureSource.INITIAL


def _initial_labels(session: Session, ctx: CampaignContext) -> list[Label]:
    generation = get_or_create_generation(session, ctx.campaign_id, 0)
    return list(session.scalars(select(Label).join(Structure).where(
        Structure.campaign_id == ctx.campaign_id, Structure.generation_id == generation.id).order_by(Label.id)))


def require_initial_labels(ctx: CampaignContext) -> dict[str, int]:
    """Check, after generation 0 is labelled and before its committee trains, that at
    least one training frame of generation 0 has a label.

    Returns the generation-0 label counts by status. Raises :class:`ReferenceFailed`
    (exit 2 from the CLI, one line) when none does and some failed: the reference cannot
    label this system as configured, and a committee cannot be trained on nothing. The
    failed labels stay quarantined with their errors (``alflow status``, ``alflow export
    --format csv``); a rerun retries them (:func:`retry_failed_initial_labels`).
    """
    with Session(ctx.engine) as session:
        labels = _initial_labels(session, ctx)
        counts = {status.value: 0 for status in LabelStatus}
        for label in labels:
            counts[label.status.value] += 1
        trained_on = [label for label in labels if label.structure.source == _INITIAL_TRAINING]
        failed = [label for label in labels if label.status == LabelStatus.FAILED]
        if failed and not any(label.status == LabelStatus.DONE for label in trained_on):
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
    with Session(ctx.engine) as session, session.begin():
        generation = get_or_create_generation(session, ctx.campaign_id, 0)
        steps = (generation.metrics or {}).get("steps") or {}
        if "label" not in steps or "train" in steps:
            return []
        labels = _initial_labels(session, ctx)
        if any(label.status == LabelStatus.DONE and label.structure.source == _INITIAL_TRAINING
               for label in labels):
            return []
        retried = []
        for label in labels:
            if label.status == LabelStatus.FAILED:
                label.status, label.worker, label.claimed_at, label.finished_at = LabelStatus.PENDING, None, None, None
                retried.append(label.id)
    if retried:
        log.warning("retrying the %d generation-0 label(s) that failed in the last run (no training frame "
                    "of generation 0 had a label)", len(retried))
    return retried
