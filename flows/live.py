"""What ``alflow run`` shows on a terminal: a live display of the run, Prefect's log lines
only when asked for, and a generation table that fits 80 columns.

:class:`LiveDisplay` is a sink of ``flows.progress`` drawn with ``rich.live``: the
campaign, the generation and its steps (``flows.pipeline``'s names, the running one
marked), labels done/failed of the total with an ETA, MD steps done of the total with
the replicas still running, and the training epoch with its validation loss. A line is
printed above it as each step ends (its wall time and last counts), so the scrollback
keeps the run's history; the live part disappears when the run ends and the final table
(:func:`status_table`) follows.

It hears the events raised in this process: everything under the thread task runner
(tasks run in threads of this process). Under the process or Dask task runners the
explore and train tasks run in other processes and their MD steps and epochs never
arrive; what reaches this process still shows: the generation and its steps (the flow
runs here) and the labels (``flows.tasks.label_all`` counts them from the database in
this process). Nothing polls or serves the other processes' progress.

:func:`console_logs` keeps Prefect's console handlers to warnings and errors (and the
plain progress lines of ``flows.progress``) unless ``alflow run -v``; the records still
reach Prefect's API handler, so the dashboard's logs are complete either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from flows.pipeline import steps_of

#: long steps (``flows.dashboard.Progress`` keys end in these) and their names on screen
KINDS = {"exploration": "MD", "labelling": "labels", "training": "training"}
#: the long step each pipeline step reports as
STEP_KINDS = {"explore": "exploration", "label": "labelling", "train": "training"}
BAR_WIDTH = 24


@dataclass
class _Row:
    """The latest progress of one long step: its fraction, counts and when it began."""

    description: str
    began: float
    fraction: float = 0.0
    numbers: dict[str, float] = field(default_factory=dict)


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _detail(kind: str, row: _Row, now: float) -> str:
    """The counts of a long step in words (its description and percent when it has none)."""
    n = row.numbers
    try:
        if kind == "labelling":
            done, failed, total = int(n["done"]), int(n["failed"]), int(n["total"])
            finished = done + failed
            eta = (f", ETA {_clock_text((now - row.began) / finished * (total - finished))}"
                   if 0 < finished < total else "")
            return f"{done}/{total} done, {failed} failed{eta}"
        if kind == "exploration":
            replicas = f"/{int(n['replicas'])}" if "replicas" in n else ""
            return (f"step {int(n['step'])}/{int(n['steps'])}, "
                    f"{int(n['replicas_running'])}{replicas} replicas running")
        if kind == "training":
            return f"epoch {int(n['epoch'])}/{int(n['epochs'])}, val loss {n['val_loss']:.4g}"
    except (KeyError, ValueError, ZeroDivisionError):
        pass
    return f"{row.description} {100 * row.fraction:.0f}%"


class LiveDisplay:
    """The live display of a run on ``console`` (a ``flows.progress`` sink). Use as a
    context manager: it owns a ``rich.live.Live``. Safe to feed from any thread."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic,
                 refresh_per_second: float = 4.0) -> None:
        self.console, self._clock = console, clock
        self._lock = threading.RLock()
        self._drawn: RenderableType = Text()
        self._started = clock()
        self.campaign: str | None = None
        self.generation: int | None = None
        self.current_step: str | None = None
        self._step_began = self._started
        self.rows: dict[str, _Row] = {}
        self.live = Live(self, console=console, refresh_per_second=refresh_per_second, transient=True)

    # ---------------------------------------------------------------- the sink
    def step(self, campaign: str, generation: int, step: str) -> None:
        with self._lock:
            ended = self._ended_line()
            now = self._clock()
            if generation != self.generation:
                self.rows.clear()
            self.campaign, self.generation, self.current_step, self._step_began = campaign, generation, step, now
        if ended:
            self.console.print(ended, highlight=False)
        if self.live.is_started:
            self.live.refresh()

    def numbers(self, key: str, description: str, numbers: dict[str, float]) -> None:
        with self._lock:
            self._row(key, description).numbers = numbers

    def update(self, key: str, description: str, fraction: float) -> None:
        with self._lock:
            self._row(key, description).fraction = min(max(fraction, 0.0), 1.0)

    def _row(self, key: str, description: str) -> _Row:
        what = key.rsplit("-", 1)[-1]
        kind = what if what in KINDS else key
        row = self.rows.get(kind)
        if row is None or row.description != description:
            row = self.rows[kind] = _Row(description, self._clock())
        return row

    def _ended_line(self) -> str | None:
        """The line that says the current step is over (under the lock), or None."""
        if self.current_step is None:
            return None
        kind = STEP_KINDS.get(self.current_step)
        row = self.rows.get(kind) if kind else None
        counts = f"  {escape(_detail(kind, row, self._clock()))}" if row is not None else ""
        return (f"[green]✓[/] generation {self.generation} {self.current_step:<14} "
                f"{self._clock() - self._step_began:7.1f} s{counts}")

    # ---------------------------------------------------------------- drawing
    def __rich__(self) -> RenderableType:
        # never wait long for the sink's lock: a Ctrl-C handler (flows.interrupt) may hold it
        # in the main thread while it stops the display, which draws once more
        if not self._lock.acquire(timeout=0.25):
            return self._drawn
        try:
            self._drawn = self._draw(self._clock())
        finally:
            self._lock.release()
        return self._drawn

    def _draw(self, now: float) -> RenderableType:
        header = Text.assemble(("campaign ", "dim"), (self.campaign or "(starting)", "bold"),
                               (f"  {_clock_text(now - self._started)} elapsed", "dim"))
        parts: list[RenderableType] = [header]
        if self.generation is not None:
            steps = Text(f"generation {self.generation}: ")
            order = steps_of(self.generation)
            current = order.index(self.current_step) if self.current_step in order else -1
            for i, name in enumerate(order):
                style = "green" if i < current else "bold yellow" if i == current else "dim"
                mark = "✓" if i < current else "▸" if i == current else "·"
                steps.append(f"{mark} {name}", style=style)
                steps.append(" " if i < len(order) - 1 else "")
            parts.append(steps)
        if self.rows:
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True, width=8)
            grid.add_column(width=BAR_WIDTH)
            grid.add_column(no_wrap=True, overflow="ellipsis")
            rank = {kind: i for i, kind in enumerate(KINDS)}  # pipeline order: MD, labels, training
            for kind, row in sorted(self.rows.items(), key=lambda item: rank.get(item[0], len(rank))):
                grid.add_row(KINDS.get(kind, kind[:8]),
                             ProgressBar(total=1.0, completed=row.fraction, width=BAR_WIDTH),
                             _detail(kind, row, now))
            parts.append(grid)
        return Group(*parts)

    # ---------------------------------------------------------------- lifetime
    def __enter__(self) -> LiveDisplay:
        self.live.start()
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        with self._lock:
            ended = self._ended_line() if kind is None else None
        try:
            if ended:
                self.console.print(ended, highlight=False)
        finally:
            self.close()

    def close(self) -> None:
        """Stop drawing and give the cursor back (also before a Ctrl-C exits the process)."""
        self.live.stop()

    def __repr__(self) -> str:
        return f"LiveDisplay(generation {self.generation}, step {self.current_step})"


class _Quiet(logging.Filter):
    """Warnings and errors, and the plain progress lines of ``flows.progress``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == "flows.progress"


def _prefect_console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(x for x in list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(x, logging.Logger))]
    return [h for h in {id(h): h for logger in loggers for h in logger.handlers}.values()
            if isinstance(h, PrefectConsoleHandler)]


#: the filter ``alflow run`` leaves on for its process (one, however often it runs)
_PROCESS_QUIET = _Quiet()


def quiet_console_logs(quiet: logging.Filter = _PROCESS_QUIET) -> Callable[[], None]:
    """Keep Prefect's console handlers to warnings, errors and the plain progress lines
    (``alflow run`` without ``-v`` does so for the rest of its process: Prefect's lines at
    exit too); returns the function that undoes it."""
    handlers = _prefect_console_handlers()
    for handler in handlers:
        handler.addFilter(quiet)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(quiet)

    return undo


@contextmanager
def console_logs(verbose: bool, console: Console | None = None) -> Iterator[None]:
    """For the ``with`` block: Prefect's console handlers show only warnings, errors and
    progress lines unless ``verbose``; with ``console`` (a live display's), those whose
    stream is a terminal print through it, above the display instead of through it."""
    loud = quiet_console_logs(_Quiet()) if not verbose else (lambda: None)
    swapped = [(handler, handler.console) for handler in _prefect_console_handlers()
               if console is not None and isinstance(getattr(handler, "console", None), Console)
               and handler.stream.isatty()]
    for handler, _ in swapped:
        handler.console = console
    try:
        yield
    finally:
        for handler, own in swapped:
            handler.console = own
        loud()


# ------------------------------------------------------------------- the final table

#: status key -> header of ``alflow status --wide`` (every count and timing)
WIDE_COLUMNS = {
    "generation": "gen", "status": "status", "labels": "labels", "accurate": "acc",
    "candidate": "cand", "selected": "sel", "filtered": "filt", "duplicate": "dup",
    "rejected": "rej", "failed": "fail", "fresh_force_mae_eV_A": "fresh F MAE",
    "validation_force_mae_eV_A": "val F MAE", "explore_s": "MD s", "label_s": "QM s", "train_s": "train s",
}
#: the columns of the 80-column table, in order
NARROW_COLUMNS = ("gen", "labels", "accurate %", "selected", "fresh F MAE\nmeV/Å", "val F MAE\nmeV/Å", "time")
SELECTION = ("accurate", "candidate", "selected", "filtered", "duplicate", "rejected")


def _meV(value_eV: float | None) -> str:
    return "" if value_eV is None else f"{1000.0 * value_eV:.1f}"


def _narrow_row(row: dict) -> tuple[str, ...]:
    explored = sum(row.get(name) or 0 for name in SELECTION)
    seconds = sum(row.get(key) or 0.0 for key in ("explore_s", "label_s", "train_s"))
    return (str(row["generation"]), str(row["labels"]),
            f"{100.0 * row['accurate'] / explored:.1f}" if explored else "",
            str(row["selected"]) if explored else "",
            _meV(row["fresh_force_mae_eV_A"]), _meV(row["validation_force_mae_eV_A"]),
            _clock_text(seconds) if row["status"] == "done" else row["status"])


def status_table(status: dict, wide: bool = False) -> Table:
    """The generation table of ``flows.status.campaign_status``: by default the columns a
    chemist reads (labels, accurate %, selected, force errors in meV/Å, time of MD + QM
    + training), at most 80 characters wide; ``wide``: every count and timing."""
    title = (f"labels {status['labels']} done, {status['failed_labels']} failed, "
             f"{status['pending_labels']} pending")
    if wide:
        table = Table(title=f"{title} (errors in eV/Å)")
        for header in WIDE_COLUMNS.values():
            table.add_column(header, justify="right", no_wrap=True)
        for row in status["generations"]:
            table.add_row(*("" if row[key] is None else str(row[key]) for key in WIDE_COLUMNS))
        return table
    table = Table(title=title)
    for header in NARROW_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for row in status["generations"]:
        table.add_row(*_narrow_row(row))
    return table
