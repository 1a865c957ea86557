"""A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl on a Unix socket only.

The server binaries come from the system (Debian's ``postgresql`` package puts them in
``/usr/lib/postgresql/<version>/bin``; ``.ci/run`` installs it); the driver is psycopg 3
(alflow's ``postgres`` extra). Without either, the tests that need the cluster skip.

``initdb`` refuses to run as root, so as root the cluster runs as the ``postgres`` system
user, in a temporary folder that user owns. Nothing listens on TCP: clients connect
through the socket in that folder, with ``trust`` authentication.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and pg_ctl, else PATH's, else None."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def why_unavailable() -> str | None:
    """Why a cluster cannot be started here (a skip reason), or None if it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if find_pg_bindir() is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin "
                "or on PATH; apt-get install postgresql")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as another user"
        try:
            import pwd

            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"running as root and there is no {SUPERUSER!r} system user to run PostgreSQL"
    return None


@dataclass
class PostgresCluster:
    """A running throw-away cluster; :meth:`create_database` gives each test its own."""

    bindir: Path
    base: Path
    run_as: str | None  # the system user the server runs as, when we are root
    databases: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database``: psycopg 3 over the Unix socket, no password."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres", **kwargs):
        import psycopg

        return psycopg.connect(dbname=database, user=SUPERUSER, host=str(self.socket_dir), **kwargs)

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE`` a new one (a unique, valid name from ``name``); its URL."""
        stem = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:40] or "db"
        database = f"{stem}_{len(self.databases)}"
        with self.connect(autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        self.databases.append(database)
        return self.url(database)

    def _run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(arg) for arg in args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env |= {"LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(command, cwd=self.base, env=env, capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{log[-3000:]}")
        return result

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.run_as:
            shutil.chown(self.base, self.run_as)
            shutil.chown(self.socket_dir, self.run_as)
        self._run(self.bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self._pg_ctl("start")

    def restart(self) -> None:
        """Restart the server (``-m fast``): every client's connection is cut."""
        self._pg_ctl("restart", "-m", "fast")

    def _pg_ctl(self, action: str, *args: str) -> None:
        # Unix socket only; durability traded for speed (a test cluster, killed at the end).
        options = (f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run(self.bindir / "pg_ctl", action, *args, "-w", "-t", "60", "-D", self.data_dir,
                  "-l", self.log_file, "-o", options)

    def stop(self) -> None:
        self._run(self.bindir / "pg_ctl", "stop", "-w", "-m", "immediate", "-D", self.data_dir)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster in a fresh temporary folder; stop it and remove the folder after."""
    bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError(why_unavailable() or "no PostgreSQL binaries")
    run_as = SUPERUSER if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: pytest-of-root is 0700 and the server runs as postgres.
    # Short, too: a Unix socket's path is limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="alflow-pg-"))
    cluster = PostgresCluster(bindir, base, run_as)
    try:
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
