"""Local progress of long steps (exploration MD steps, labels): sinks in this process.

The flow reports each step's progress once (``flows.dashboard.Progress``), which goes to
the Prefect dashboard and to every sink attached here. ``alflow run`` attaches a rich
progress display when its output is a terminal and plain log lines otherwise::

    with terminal_progress(Console()):
        active_learning(config_path="examples/water.toml")

A sink is anything with ``update(key, description, fraction)``; ``key`` names the step
(one per campaign and step, e.g. ``water-exploration``), ``fraction`` runs from 0 to 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

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


def publish(key: str, description: str, fraction: float) -> None:
    """Give ``fraction`` (0-1) of step ``key`` to the attached sinks; a failing sink is
    logged and skipped (a display must never stop the science)."""
    with _sinks_lock:
        sinks = list(_sinks)
    for sink in sinks:
        try:
            sink.update(key, description, fraction)
        except Exception as exc:  # noqa: BLE001
            log.debug("progress sink %r failed: %s", sink, exc)


class LogProgressSink:
    """Plain log lines (``flows.progress`` logger): one per step every ``interval_s``
    seconds at most, and one when it completes. For pipes, CI logs and files."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._last: dict[tuple[str, str], float] = {}

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


class RichProgressSink:
    """A rich progress bar per running step on ``console``; a finished step leaves one
    line above the bars. Use as a context manager (it owns a live display)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._done: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgressSink:
        self.progress.start()
        self._prefect_logs = _route_prefect_console_logs(self.progress.console)
        return self

    def __exit__(self, *exc: object) -> None:
        self._prefect_logs()
        self.progress.stop()

    def update(self, key: str, description: str, fraction: float) -> None:
        label = f"{key}: {description}"
        with self._lock:
            if (key, description) in self._done:
                return
            task = self._tasks.get((key, description))
            if task is None:
                task = self._tasks[(key, description)] = self.progress.add_task(label, total=100.0)
            self.progress.update(task, completed=100.0 * min(max(fraction, 0.0), 1.0))
            if fraction >= 1.0:
                self.progress.remove_task(task)
                self._done.add((key, description))
                self.progress.refresh()
                self.progress.console.print(f"[green]done[/] {label}")

    def __repr__(self) -> str:
        return f"RichProgressSink({len(self._tasks)} steps)"


def _route_prefect_console_logs(console: Console) -> Callable[[], None]:
    """Print Prefect's terminal log lines through ``console`` (above the live bars instead
    of through them) while the display runs; returns the function that undoes it."""
    from prefect.logging.handlers import PrefectConsoleHandler

    swapped = []
    loggers = [logging.getLogger(), *(x for x in list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if (isinstance(handler, PrefectConsoleHandler) and isinstance(getattr(handler, "console", None), Console)
                    and handler.stream.isatty()):
                swapped.append((handler, handler.console))
                handler.console = console

    def undo() -> None:
        for handler, own in swapped:
            handler.console = own

    return undo


@contextmanager
def terminal_progress(console: Console) -> Iterator[ProgressSink]:
    """A rich progress display on ``console`` if it is a terminal, plain log lines
    otherwise, attached for the ``with`` block."""
    if console.is_terminal:
        with RichProgressSink(console) as sink, attached(sink):
            yield sink
    else:
        with attached(LogProgressSink()) as sink:
            yield sink
