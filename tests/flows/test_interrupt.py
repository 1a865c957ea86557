"""flows.interrupt's stop path: it never waits on a database write that cannot finish."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows import interrupt


def test_stop_does_not_wait_for_a_release_blocked_on_the_write_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner row's release blocks (another writer holds SQLite's lock, up to its 30 s
    busy timeout): the stop still says what was kept, cancels the run and ends the children,
    leaving the release behind; the cleanup after it is skipped with it."""
    blocked, unblock = threading.Event(), threading.Event()
    done: list[str] = []

    def release(ctx, owner) -> None:
        blocked.set()
        unblock.wait()  # until the test ends
        done.append("release")

    monkeypatch.setattr("flows.runner.release", release)
    monkeypatch.setattr(interrupt, "RELEASE_WAIT_S", 0.2)
    monkeypatch.setattr(interrupt, "kept", lambda ctx: "interrupted: kept 3 labels")
    monkeypatch.setattr(interrupt, "_mark_cancelled", lambda line: done.append(f"cancelled: {line}"))
    monkeypatch.setattr(interrupt, "_end_children", lambda: done.append("children ended"))
    said: list[str] = []
    try:
        interrupt._stop(SimpleNamespace(config_path=Path("c.toml")), said.append, cleanup=lambda: done.append("clean"))
        assert blocked.is_set()
        assert said == ["interrupted: kept 3 labels"]
        assert done == ["cancelled: interrupted: kept 3 labels", "children ended"]
    finally:
        unblock.set()


def test_stop_releases_and_cleans_up_when_the_database_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    monkeypatch.setattr("flows.runner.release", lambda ctx, owner: done.append(f"release {owner.split('-')[0]}"))
    monkeypatch.setattr(interrupt, "kept", lambda ctx: "kept")
    monkeypatch.setattr(interrupt, "_mark_cancelled", lambda line: done.append("cancelled"))
    monkeypatch.setattr(interrupt, "_end_children", lambda: done.append("children ended"))
    interrupt._stop(SimpleNamespace(config_path=Path("c.toml")), lambda line: None, cleanup=lambda: done.append("clean"))
    assert done[1:] == ["clean", "cancelled", "children ended"] and done[0].startswith("release")
