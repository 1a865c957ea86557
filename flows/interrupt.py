"""Ctrl-C during ``alflow run``: stop within a second and say what was kept.

Without this, SIGINT reaches Prefect's engine, which waits for running tasks (a PySCF
calculation or a training epoch cannot be interrupted from another thread) and logs a
traceback per task: about a minute and eight tracebacks. Every step of a generation
commits its outputs and its "done" mark in one transaction and labels are claimed in the
database, so stopping the process at any point is as safe as the SIGKILL the resume tests
already survive: the handler says what the database holds, ends the process's children
(the ephemeral Prefect server, task-runner workers), marks the flow run Cancelled,
releases the campaign's runner row and exits with 130 (128 + SIGINT), the shell's code for an interrupted command.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: exit status of a command stopped by Ctrl-C
INTERRUPTED = 130
#: how long the stop waits for the runner row's release and the cleanup (database writes)
RELEASE_WAIT_S = 5.0


def kept(ctx: Any) -> str:
    """One line on what the campaign's database holds now."""
    from flows.storage.overview import last_decided_index
    from flows.storage.records import label_counts, reading

    with reading(ctx.engine) as session:
        labels = label_counts(session, ctx.campaign_id)
        decided = last_decided_index(session, ctx.campaign_id)
    done, failed, pending = labels["done"], labels["failed"], labels["pending"] + labels["running"]
    last = "no generation finished yet" if decided is None else f"generations up to {decided} finished"
    return (f"interrupted: kept {done} labels ({failed} failed, {pending} still to compute) and {last}; "
            f"`alflow run {ctx.config_path}` resumes where it stopped")


def _mark_cancelled(message: str, timeout_s: float = 5.0) -> None:
    """Put the flow run this (main) thread is in into a Cancelled state with ``message``,
    so Prefect does not show it Running forever; given up after ``timeout_s``."""
    from prefect.context import FlowRunContext

    run_context = FlowRunContext.get()
    if run_context is None or run_context.flow_run is None:
        return
    flow_run_id = run_context.flow_run.id

    def cancel() -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)

    worker = threading.Thread(target=cancel, daemon=True)
    worker.start()
    worker.join(timeout_s)


def _end_children() -> None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=3)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def _stop(ctx: Any, say: Callable[[str], None], cleanup: Callable[[], None] | None) -> None:
    """Say what was kept, release the runner row, clean up, mark the run Cancelled, end the children."""
    try:
        kept_line = kept(ctx)
    except Exception as exc:  # noqa: BLE001 - still stop
        kept_line = (f"interrupted ({exc.__class__.__name__} while reading the database); "
                     f"`alflow run {ctx.config_path}` resumes where it stopped")
    say(kept_line)

    def release_and_clean() -> None:
        try:
            from flows.runner import RUN_TAG, release
            from flows.steps.labelling import worker_name

            release(ctx, worker_name(RUN_TAG))
            if cleanup is not None:
                cleanup()
        except Exception:  # noqa: BLE001
            pass

    # both write to the database: a writer holding its lock (a starved labelling thread,
    # or this very thread, interrupted inside a transaction) would keep them waiting for
    # SQLite's busy timeout (30 s) while the user waits; a runner row left behind is
    # taken over once its heartbeat is stale, and the WAL is checkpointed later
    worker = threading.Thread(target=release_and_clean, name="alflow-stop-release", daemon=True)
    worker.start()
    worker.join(RELEASE_WAIT_S)
    _mark_cancelled(kept_line)
    _end_children()


@contextmanager
def stop_on_ctrl_c(ctx: Any, say: Callable[[str], None], cleanup: Callable[[], None] | None = None
                   ) -> Iterator[None]:
    """For the ``with`` block, Ctrl-C (SIGINT) or SIGTERM says what was kept (``say``), runs
    ``cleanup`` (e.g. checkpoint the SQLite WAL), ends the children and exits 130 at once."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread (e.g. a run started from a thread)
        return

    def handler(signum: int, frame: Any) -> None:
        # Nothing may stop the stopping: Prefect's timeouts raise from SIGALRM (a
        # CancelledError, a BaseException, once left a run going against a dead server),
        # and a second Ctrl-C would re-enter. Both are blocked, and the process exits 130
        # whatever the steps below raise.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT, signal.SIGTERM})
        try:
            _stop(ctx, say, cleanup)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
