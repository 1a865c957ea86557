"""Progress of long steps: every update reaches the local sinks, the dashboard's artifact
is written sparingly, a terminal gets rich bars and anything else plain log lines."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console
from rich.text import Text

import flows.dashboard as dashboard
from flows.dashboard import Progress
from flows.progress import LogProgressSink, RichProgressSink, attached, publish, terminal_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[str, str, float]] = []

    def update(self, key: str, description: str, fraction: float) -> None:
        self.updates.append((key, description, fraction))


@pytest.fixture()
def artifact_calls(monkeypatch) -> list[tuple[str, float]]:
    """Record the progress-artifact API calls instead of making them (as if in a flow run)."""
    calls: list[tuple[str, float]] = []
    monkeypatch.setattr(dashboard.FlowRunContext, "get", classmethod(lambda cls: object()))

    def create(kind: str, key: str, data: float, description: str) -> str:
        assert kind == "progress"
        calls.append(("create", data))
        return "artifact-id"

    monkeypatch.setattr(dashboard, "_create", create)
    monkeypatch.setattr(dashboard, "_update",
                        lambda artifact_id, data, description: calls.append(("update", data)))
    return calls


def test_sinks_get_every_update_and_the_artifact_only_a_few(artifact_calls) -> None:
    clock, sink = Clock(), Recorder()
    with attached(sink):
        progress = Progress("Water quick", "exploration", "generation 1: MD steps done",
                            min_interval_s=2.0, clock=clock)
        for now, fraction in [(0.5, 0.1), (2.5, 0.3), (3.0, 0.4), (4.4, 0.5), (5.0, 0.6), (5.1, 0.7)]:
            clock.now = now
            progress.update(fraction)
        progress.finish()
    publish("water-quick-exploration", "after the block", 0.9)  # detached: not recorded
    assert [u[2] for u in sink.updates] == [0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0]
    assert {u[:2] for u in sink.updates} == {("water-quick-exploration", "generation 1: MD steps done")}
    # first write at once (the dashboard shows the step as it starts), then at most every 2 s, always the 100 %
    assert artifact_calls == [("create", 10.0), ("update", 30.0), ("update", 60.0), ("update", 100.0)]
    assert [percent for percent, _ in progress.written] == [10.0, 30.0, 60.0, 100.0]


def test_the_counts_behind_the_fraction_go_to_the_artifact_description(artifact_calls, monkeypatch) -> None:
    descriptions = []
    monkeypatch.setattr(dashboard, "_update", lambda artifact_id, data, description: descriptions.append(description))
    clock = Clock()
    progress = Progress("w", "labelling", "generation 1: QM labels", min_interval_s=2.0, clock=clock)
    progress.update(0.0, "0/4 done, 0 failed")
    clock.now = 3.0
    progress.update(0.5, "1/4 done, 1 failed")
    clock.now = 3.5
    progress.update(0.75, "2/4 done, 1 failed")  # within 2 s: not written
    progress.finish()  # keeps the last written counts
    assert progress.written == [(0.0, "generation 1: QM labels: 0/4 done, 0 failed"),
                                (50.0, "generation 1: QM labels: 1/4 done, 1 failed"),
                                (100.0, "generation 1: QM labels: 1/4 done, 1 failed")]
    assert descriptions == [d for _, d in progress.written[1:]]


def test_a_short_step_writes_its_artifact_at_start_and_completion(artifact_calls) -> None:
    clock = Clock()
    progress = Progress("w", "labelling", "generation 0: labels done", clock=clock)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        clock.now += 0.1
        progress.update(fraction)
    progress.finish()
    assert artifact_calls == [("create", 0.0), ("update", 100.0)]


def test_a_failing_api_means_no_artifact_and_no_error(artifact_calls, monkeypatch) -> None:
    def refuse(**kwargs):
        raise RuntimeError("no Prefect API")

    monkeypatch.setattr(dashboard, "_create", lambda *args: refuse())
    sink = Recorder()
    with attached(sink):
        progress = Progress("w", "labelling", "labels", min_interval_s=0.0)
        progress.update(0.5)
        progress.finish()
    assert progress.artifact_id is None and progress.written == []
    assert [u[2] for u in sink.updates] == [0.5, 1.0]


def test_outside_a_run_no_artifact_is_attempted(monkeypatch) -> None:
    def must_not_call(**kwargs):
        raise AssertionError("artifact API called outside a flow run")

    monkeypatch.setattr(dashboard, "_create", lambda *args: must_not_call())
    progress = Progress("w", "labelling", "labels", min_interval_s=0.0)
    progress.update(0.5)
    progress.finish()
    assert progress.written == []


def test_plain_log_lines_are_sparse_and_say_when_a_step_is_done(caplog) -> None:
    clock = Clock()
    sink = LogProgressSink(interval_s=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger="flows.progress")
    for now, fraction in [(0, 0.0), (3, 0.2), (11, 0.5), (12, 0.6), (25, 0.9), (26, 1.0), (27, 1.0)]:
        clock.now = now
        sink.update("w-exploration", "generation 1: MD steps done", fraction)
    assert [r.getMessage() for r in caplog.records] == [
        "w-exploration: generation 1: MD steps done 50%",
        "w-exploration: generation 1: MD steps done 90%",
        "w-exploration: generation 1: MD steps done 100%",
    ]


def test_terminal_gets_rich_bars_and_a_pipe_plain_text(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flows.progress")
    piped = io.StringIO()
    with terminal_progress(Console(file=piped, width=100)) as sink:
        assert isinstance(sink, LogProgressSink)
        Progress("w", "labelling", "generation 2: labels done", min_interval_s=1e9).finish()
    assert piped.getvalue() == ""  # nothing drawn: the progress goes to the log
    assert "w-labelling: generation 2: labels done 100%" in caplog.text

    screen = io.StringIO()
    with terminal_progress(Console(file=screen, width=100, force_terminal=True)) as sink:
        assert isinstance(sink, RichProgressSink)
        progress = Progress("w", "exploration", "generation 2: MD steps done", min_interval_s=1e9)
        progress.update(0.5)
        assert sink.progress.tasks[0].percentage == pytest.approx(50.0)
        progress.finish()
    drawn = screen.getvalue()
    assert "\x1b[" in drawn and "done w-exploration: generation 2: MD steps done" in Text.from_ansi(drawn).plain
    publish("w-exploration", "later", 0.5)  # the display is detached and stopped: no error
