"""Local progress of a run (steps, MD steps, labels, epochs): events to sinks in this process.

The flow reports each long step's progress once (``flows.dashboard.Progress``), which goes
to the Prefect dashboard and, through :func:`publish`, to every sink attached here;
``flows.pipeline.run_generation`` announces each step as it starts (:func:`step_started`).
``alflow run`` attaches the live display of ``flows.live`` when its output is a terminal
and plain log lines (:class:`LogProgressSink`) otherwise::

    with terminal_progress(Console()):
        active_learning(config_path="examples/water.toml")

A sink is anything with ``update(key, description, fraction)``; ``key`` names the long
step (one per campaign and step, e.g. ``water-exploration``), ``fraction`` runs from 0
to 1. A sink may also have ``numbers(key, description, numbers)`` (the counts behind the
fraction: ``done``/``failed``/``total`` labels, MD ``step``/``steps`` and
``replicas_running``/``replicas``, training ``epoch``/``epochs``, ``train_loss``,
``val_loss``) and ``step(campaign, generation, step)`` (a generation's step starts).

Sinks live in this process: events raised in other processes (the tasks of a process or
Dask task runner) never reach them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)
#: plain progress lines of one step are logged at most this often (and at 100 %), s
LOG_INTERVAL_S = 10.0


class ProgressSink(Protocol):
    def update(self, key: str, description: str, fraction: float) -> None: ...


_sinks: list[ProgressSink] = []
_sinks_lock = threading.Lock()


@contextmanager
def attached(sink: ProgressSink) -> Iterator[ProgressSink]:
    """Send every step's progress in this process to ``sink`` for the ``with`` block."""
    with _sinks_lock:
        _sinks.append(sink)
    try:
        yield sink
    finally:
        with _sinks_lock:
            _sinks.remove(sink)


def _each_sink(call: Callable[[ProgressSink], None]) -> None:
    with _sinks_lock:
        sinks = list(_sinks)
    for sink in sinks:
        try:
            call(sink)
        except Exception as exc:  # noqa: BLE001 - a display must never stop the science
            log.debug("progress sink %r failed: %s", sink, exc)


def publish(key: str, description: str, fraction: float, numbers: Mapping[str, float] | None = None) -> None:
    """Give ``fraction`` (0-1) of step ``key`` (and the ``numbers`` behind it, to sinks
    that take them) to the attached sinks; a failing sink is logged and skipped."""
    def send(sink: ProgressSink) -> None:
        if numbers is not None and hasattr(sink, "numbers"):
            sink.numbers(key, description, dict(numbers))
        sink.update(key, description, fraction)

    _each_sink(send)


def step_started(campaign: str, generation: int, step: str) -> None:
    """Tell the attached sinks that ``step`` of ``generation`` starts (``flows.pipeline``)."""
    _each_sink(lambda sink: sink.step(campaign, generation, step) if hasattr(sink, "step") else None)


class LogProgressSink:
    """Plain log lines (``flows.progress`` logger): one per generation step as it starts,
    and per long step one every ``interval_s`` seconds at most and one when it completes.
    For pipes, CI logs and files."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._last: dict[tuple[str, str], float] = {}

    def step(self, campaign: str, generation: int, step: str) -> None:
        log.info("%s: generation %d: %s", campaign, generation, step)

    def close(self) -> None:
        """Nothing to stop (the live display's ``close`` stops drawing)."""

    def update(self, key: str, description: str, fraction: float) -> None:
        now, step = self._clock(), (key, description)
        last = self._last.get(step)
        if last is None:  # a new step: start its clock, say nothing until there is news
            self._last[step] = now
            if fraction < 1.0:
                return
        if fraction >= 1.0:
            if last != float("inf"):
                log.info("%s: %s 100%%", key, description)
            self._last[step] = float("inf")
        elif now - last >= self.interval_s:
            log.info("%s: %s %.0f%%", key, description, 100.0 * fraction)
            self._last[step] = now


@contextmanager
def terminal_progress(console: Console, verbose: bool = False) -> Iterator[ProgressSink]:
    """The progress of a run on ``console`` for the ``with`` block: the live display of
    ``flows.live`` if it is a terminal, plain log lines otherwise. Prefect's console log
    lines and the library loggers' INFO lines show only when ``verbose``; warnings and
    errors always (``flows.live.console_logs``)."""
    from flows.live import LiveDisplay, console_logs

    if console.is_terminal:
        with LiveDisplay(console) as sink, console_logs(verbose, console), attached(sink):
            yield sink
    else:
        with console_logs(verbose), attached(LogProgressSink()) as sink:
            yield sink
