"""A real ``prefect server start`` and ``deploy/serve.py`` for the deployment tests.

Each runs in its own process group (started here, stopped here by that group's id), with
its own PREFECT_HOME and SQLite database in a temporary folder, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from tests.flows.conftest import TINY_CAMPAIGN

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 1.0) -> T:
    """Call ``check`` until it returns something truthy; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except RuntimeError:  # the checked process died: no point waiting
            raise
        except Exception as exc:  # noqa: BLE001 - not there yet (404, connection refused)
            value, last = None, exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last error: {last!r})")
        time.sleep(interval_s)


def stop_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


@dataclass
class PrefectServer:
    url: str
    folder: Path
    log: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a client process (serve, CLI): this server, a home of its own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.folder / "client-home"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="2",
                   OMP_NUM_THREADS="2", **extra)
        return env

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client at the server for the ``with`` block."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)


@contextlib.contextmanager
def running_server(folder: Path, timeout_s: float = 180.0, scheduler: bool = False) -> Iterator[PrefectServer]:
    """``prefect server start`` on 127.0.0.1 and a free port, SQLite in ``folder``.

    ``scheduler``: keep Prefect's scheduler service on, looping every 5 s, so deployment
    schedules really create flow runs (off by default: schedules are read, not run)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(folder / "server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
               PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),  # the UI's API URL
               PREFECT_SERVER_LOGGING_LEVEL="WARNING",
               # a run waiting for a concurrency slot retries within 2 s (default: up to 30 s)
               PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS="2",
               # no loop services the tests do not need (schedules are read, not run, unless `scheduler`)
               **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
                   *(() if scheduler else ("SCHEDULER",)),
                   "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP")})
    if scheduler:
        env.update(PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
                   PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5")
    log = folder / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
    server = PrefectServer(f"http://127.0.0.1:{port}", folder, log)
    try:
        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"prefect server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            return httpx.get(f"{server.api_url}/health", timeout=2.0).status_code == 200

        _wait_healthy(healthy, timeout_s)
        yield server
    finally:
        stop_group(process)


def _wait_healthy(healthy: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if healthy():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prefect server not healthy within {timeout_s:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def serving(server: PrefectServer, config: Path, *args: str, timeout_s: float = 150.0) -> Iterator[Path]:
    """``deploy/serve.py CONFIG *args`` against ``server`` until the block ends; yields its log."""
    log = config.parent / f"serve-{config.stem}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(REPO / "deploy" / "serve.py"), str(config), *args],
                                   env=server.client_env(), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=config.parent)
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"serve.py exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            return "polling for scheduled runs" in log.read_text(errors="replace")

        wait_until(ready, timeout_s, "deploy/serve.py ready")
        yield log
    finally:
        stop_group(process)


def write_deploy_campaign(folder: Path, name: str, execution: str | None = None) -> Path:
    """The tiny water campaign of the flow tests, with shorter training (and ``execution``)."""
    text = TINY_CAMPAIGN.format(name=name, initial_samples=6).replace("max_epochs = 40", "max_epochs = 12")
    if execution is not None:
        text = text[: text.index("[execution]")] + execution
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def add_pending_frames(config: Path, n: int, seed: int) -> list[int]:
    """Queue ``n`` randomly displaced copies of the campaign's molecule (as MD frames of
    generation 0, the generation created if missing) for labelling; their label ids."""
    from flows.campaign import open_campaign
    from flows.storage import StructureSource, add_structures, enqueue_labels, generation, transaction

    ctx = open_campaign(config)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = ctx.config.system.atoms()
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        frames.append(atoms)
    try:
        with transaction(ctx.engine) as session:
            ids = add_structures(session, ctx.campaign_id, frames, source=StructureSource.MD,
                                 generation_id=generation(session, ctx.campaign_id, 0).id)
            return enqueue_labels(session, ids)
    finally:
        ctx.engine.dispose()  # the database file alone holds them (no connection keeps the WAL)


def finished_run(client: Any, flow_run_id: Any, timeout_s: float) -> Any:
    """The flow run once it reached a terminal state (``TimeoutError`` otherwise)."""
    def terminal() -> Any:
        run = client.read_flow_run(flow_run_id)
        return run if run.state_type.value in TERMINAL else None

    return wait_until(terminal, timeout_s, f"flow run {flow_run_id} finished", interval_s=1.0)
