"""Progress of a run: every update reaches the local sinks, the dashboard's artifact is
written sparingly, a terminal gets the live display (generation, steps, labels, MD steps,
epochs) and a table that fits 80 columns, anything else plain log lines; Prefect's own
log lines show only with ``alflow run -v``."""

from __future__ import annotations

import io
import logging
import re

import pytest
from rich.console import Console
from rich.text import Text

import flows.dashboard as dashboard
from flows.dashboard import Progress
from flows.live import LiveDisplay, status_table
from flows.progress import LogProgressSink, attached, publish, step_started, terminal_progress

from .conftest import write_campaign

ANSI = re.compile(r"\x1b\[")


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


def _screen(width: int = 80) -> Console:
    """A recorded terminal of ``width`` columns."""
    return Console(file=io.StringIO(), record=True, width=width, force_terminal=True)


def _frame(display: LiveDisplay) -> list[str]:
    """The display as drawn now on 80 columns, as plain lines."""
    console = Console(file=io.StringIO(), record=True, width=80)
    console.print(display.__rich__())
    return console.export_text().splitlines()


def test_terminal_gets_the_live_display_and_a_pipe_plain_text(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flows.progress")
    piped = io.StringIO()
    with terminal_progress(Console(file=piped, width=100)) as sink:
        assert isinstance(sink, LogProgressSink)
        step_started("w", 2, "label")
        Progress("w", "labelling", "generation 2: labels done", min_interval_s=1e9).finish()
    assert piped.getvalue() == ""  # nothing drawn: the progress goes to the log, one line a step
    assert "w: generation 2: label" in caplog.text and "w-labelling: generation 2: labels done 100%" in caplog.text
    assert not ANSI.search(caplog.text)

    screen = _screen(100)
    with terminal_progress(screen) as sink:
        assert isinstance(sink, LiveDisplay)
        step_started("w", 2, "explore")
        progress = Progress("w", "exploration", "generation 2: MD", min_interval_s=1e9)
        progress.update(0.5)
        assert sink.rows["exploration"].fraction == pytest.approx(0.5)
        progress.finish()
    drawn = screen.file.getvalue()
    assert ANSI.search(drawn) and "✓ generation 2 explore" in Text.from_ansi(drawn).plain
    publish("w-exploration", "later", 0.5)  # the display is detached and stopped: no error
    step_started("w", 2, "select")


def test_the_live_display_shows_steps_labels_with_an_eta_md_steps_and_the_epoch() -> None:
    clock, screen = Clock(), _screen()
    with LiveDisplay(screen, clock=clock, refresh_per_second=1) as display, attached(display):
        step_started("water", 1, "explore")
        Progress("water", "exploration", "generation 1: MD").update(
            0.5, "step 30/60", {"step": 30, "steps": 60, "replicas_running": 1, "replicas": 2})
        clock.now = 4.0
        step_started("water", 1, "select")
        clock.now = 10.0
        step_started("water", 1, "label")
        labels = Progress("water", "labelling", "generation 1: QM labels")
        labels.update(0.0, None, {"done": 0, "failed": 0, "total": 4})
        clock.now = 40.0
        labels.update(0.5, None, {"done": 1, "failed": 1, "total": 4})
        frame = _frame(display)
        assert frame[0].startswith("campaign water  0:40")
        assert frame[1] == "generation 1: ✓ explore ✓ select ▸ label · evaluate_fresh · train · decide"
        assert re.fullmatch(r"MD +━+ +step 30/60, 1/2 replicas running", frame[2].rstrip())
        assert re.fullmatch(r"labels +━+ +1/4 done, 1 failed, ETA 0:30", frame[3].rstrip())  # 30 s for 2 of 4
        assert max(map(len, frame)) <= 80
        clock.now = 70.0
        step_started("water", 1, "evaluate_fresh")
        step_started("water", 1, "train")
        dashboard.TrainingProgress("water", "generation 1: committee", 40).epoch(11, {"train_loss": 0.5,
                                                                                      "val_loss": 0.0123})
        assert "training" in _frame(display)[4] and "epoch 12/40, val loss 0.0123" in _frame(display)[4]
        clock.now = 75.0
    shown = screen.export_text()
    assert re.search(r"✓ generation 1 explore +4\.0 s  step 30/60, 1/2 replicas running", shown)
    assert re.search(r"✓ generation 1 label +60\.0 s  1/4 done, 1 failed", shown)
    assert re.search(r"✓ generation 1 train +5\.0 s  epoch 12/40, val loss 0.0123", shown)  # printed on exit
    step_started("water", 2, "explore")  # detached
    assert display.generation == 1


STATUS_ROW = {"generation": 12, "status": "done", "labels": 1200, "accurate": 98765, "candidate": 12,
              "selected": 300, "filtered": 4, "duplicate": 2, "rejected": 7, "failed": 25,
              "fresh_force_mae_eV_A": 1.23456, "validation_force_mae_eV_A": 0.04321,
              "explore_s": 3600.0, "label_s": 80000.0, "train_s": 7200.5, "stop_reason": ""}


def test_the_status_table_fits_80_columns_and_wide_keeps_every_column() -> None:
    status = {"labels": 123456, "failed_labels": 1234, "pending_labels": 12, "generations": [
        {**STATUS_ROW, "generation": 0, "accurate": 0, "candidate": 0, "selected": 0, "filtered": 0,
         "duplicate": 0, "rejected": 0, "fresh_force_mae_eV_A": None},
        STATUS_ROW, {**STATUS_ROW, "generation": 13, "status": "running", "validation_force_mae_eV_A": None}]}
    wide, narrow = Console(file=io.StringIO(), record=True, width=200), _screen(80)
    wide.print(status_table(status))
    narrow.print(status_table(status))
    lines = wide.export_text().splitlines()
    assert max(map(len, lines)) <= 80  # its own width, not squeezed into 80
    assert narrow.export_text().splitlines() == lines
    text = "\n".join(lines)
    assert "accurate %" in text and "meV/Å" in text
    # 98765 of 99090 frames accurate; 90800.5 s
    assert re.search(r"│ +12 │ +1200 │ +99\.7 │ +300 │ +1234\.6 │ +43\.2 │ +25:13:2[01] │", text)
    assert re.search(r"│ +13 │ .* running │", text)
    assert re.search(r"│ +0 │ +1200 │ +│ +│ +│ +43\.2 │", text)  # generation 0 selects nothing
    everything = Console(file=io.StringIO(), record=True, width=300)
    everything.print(status_table(status, wide=True))
    header = everything.export_text().splitlines()[2]
    assert all(name in header for name in ("cand", "filt", "dup", "rej", "fail", "MD s", "QM s", "train s"))


class WarnAtFirstStep:
    """A sink that logs one warning when the first step starts."""

    def __init__(self) -> None:
        self.warned = False

    def update(self, key: str, description: str, fraction: float) -> None:
        pass

    def step(self, campaign: str, generation: int, step: str) -> None:
        if not self.warned:
            self.warned = True
            logging.getLogger("flows.test_progress").warning("a warning always shows")


def test_the_live_display_follows_a_tiny_campaign(prefect_harness, tmp_path) -> None:
    from flows.active_learning import active_learning
    from flows.campaign import open_campaign
    from flows.status import campaign_status
    from flows.storage import reading

    config = write_campaign(tmp_path, "live-water", initial_samples=4)
    config.write_text(config.read_text().replace("max_generations = 2", "max_generations = 1"))
    screen = _screen()
    with terminal_progress(screen) as display:
        assert isinstance(display, LiveDisplay)
        active_learning(config_path=str(config))
    shown = screen.export_text()
    for step in ("sample", "label", "train", "decide"):
        assert re.search(rf"✓ generation 0 {step} ", shown), step
    for step in ("explore", "select", "label", "evaluate_fresh", "train", "decide"):
        assert re.search(rf"✓ generation 1 {step} ", shown), step
    assert "generation 1: ✓ explore ✓ select ✓ label ✓ evaluate_fresh ▸ train · decide" in shown
    assert re.search(r"labels +━+ +(\d+)/\1 done, 0 failed", shown)
    assert re.search(r"MD +━+ +step \d+/60, \d/2 replicas running", shown)
    assert re.search(r"epoch \d+/40, val loss \d", shown) and "campaign live-water" in shown
    ctx = open_campaign(config, create=False)
    with reading(ctx.engine) as session:
        screen.print(status_table(campaign_status(session, ctx.campaign_id, ctx.work_dir)))
    table = screen.export_text().splitlines()
    assert len(table) == 1 + 4 + 2 + 1 and max(map(len, table)) <= 80  # title, head (2 lines, 2 rules), 2 rows, rule
    assert re.search(r"│ +1 │ +\d+ │ +\d+\.\d │ +\d+ │ +\d+\.\d │ +\d+\.\d │ +\d+:\d\d │",
                     "\n".join(table))


def test_alflow_run_shows_prefect_log_lines_only_with_v(prefect_harness, tmp_path, capsys, monkeypatch) -> None:
    """Prefect's console handler (the one ``alflow run`` prints its log lines with) gets
    warnings and the plain progress lines by default, everything with ``-v``; off a
    terminal nothing has escape codes and the final table fits 80 columns."""
    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.cli import main

    handler = next(h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler))
    printed = io.StringIO()
    monkeypatch.setattr(handler, "console", Console(file=printed, width=300))
    monkeypatch.setattr(handler, "filters", [])  # the quiet filter stays for the CLI's process: not here
    config = write_campaign(tmp_path, "quiet-water", initial_samples=2)
    with attached(WarnAtFirstStep()):
        assert main(["run", str(config), "--generations", "0"]) == 0
    quiet, out = printed.getvalue(), capsys.readouterr().out
    assert "a warning always shows" in quiet
    assert "quiet-water: generation 0: sample" in quiet  # the plain progress lines
    assert "quiet-water-labelling: generation 0: QM labels 100%" in quiet
    infos = [line for line in quiet.splitlines() if "| INFO " in line]
    assert infos and all("| flows.progress - " in line for line in infos), infos
    assert "Finished in state" not in quiet
    assert not ANSI.search(quiet + out)
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table) == 6 and max(map(len, table)) <= 80 and "accurate %" in out

    assert len(handler.filters) == 1  # and keeps Prefect's lines at exit quiet

    handler.filters.clear()
    printed.seek(0)
    printed.truncate()
    assert main(["run", str(config), "--generations", "0", "-v"]) == 0  # resumes: nothing to do
    assert "Finished in state Completed()" in printed.getvalue() and not handler.filters
    assert not ANSI.search(printed.getvalue() + capsys.readouterr().out)
