"""CLI responsiveness: ``alflow --help`` start-up and how fast Ctrl-C stops a run, this
checkout against an earlier revision (default ac2d05a, before lazy imports and
``flows.interrupt``), both run here in one go with the same virtual environment.

The earlier revision is checked out with ``git worktree`` into a temporary folder and run
as ``python -m flows.cli`` from there (its own ``flows`` package comes first on sys.path).
Ctrl-C: ``alflow run`` of a copy of ``examples/water.toml`` (HF/STO-3G), SIGINT once the
database holds 4 labels, then the time until the process has exited (capped).

    .venv/bin/python -m bench.cli_responsiveness [--base REV] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import machine_line, markdown_table, write_section

REPO = Path(__file__).resolve().parents[1]
STOP_CAP_S = 180.0


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "2",
                  "PYTHONUNBUFFERED": "1"}


def help_seconds(tree: Path, home: Path, repeats: int = 3) -> float:
    """Median wall time of ``python -m flows.cli --help`` run from ``tree``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", "--help"], cwd=tree, env=_env(home), check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _done_labels(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("select count(*) from labels where status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def ctrl_c_seconds(tree: Path, folder: Path) -> tuple[float, int, bool]:
    """(seconds from SIGINT to exit, exit code, whether stderr held a traceback) of
    ``alflow run`` of the water example, run from ``tree``, interrupted after 4 labels."""
    folder.mkdir(parents=True)
    config = folder / "water.toml"
    shutil.copy(REPO / "examples" / "water.toml", config)
    db = folder / "runs" / "water-quick" / "alflow.db"
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config)], cwd=tree,
                               env=_env(folder / "prefect-home"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and _done_labels(db) < 4:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    try:
        _, err = process.communicate(timeout=STOP_CAP_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        return STOP_CAP_S, process.returncode, "Traceback" in err
    return time.perf_counter() - sent, process.returncode, "Traceback" in err


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="ac2d05a")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            rows = []
            for label, tree in ((f"{args.base} (before)", base), ("this checkout", REPO)):
                help_s = help_seconds(tree, tmp / "home")
                stop_s, code, traceback = ctrl_c_seconds(tree, tmp / f"run-{tree.name}")
                rows.append([label, help_s, f"{stop_s:.1f}" + (" (capped, killed)" if stop_s >= STOP_CAP_S else ""),
                             code, "yes" if traceback else "no"])
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)
    table = markdown_table(["code", "`alflow --help`, s (median of 3)", "Ctrl-C to exit, s", "exit code",
                            "traceback printed"], rows)
    text = "\n".join([
        "## CLI responsiveness: `alflow --help` and Ctrl-C during `alflow run`", "",
        f"`.venv/bin/python -m bench.cli_responsiveness --base {args.base}`", "", machine_line(), "",
        "Both revisions run here, one after the other, with the same virtual environment. Ctrl-C: `alflow run` "
        "of `examples/water.toml` (HF/STO-3G), SIGINT once 4 labels are stored; seconds until the process "
        f"exited (capped at {STOP_CAP_S:.0f} s). Exit 130 is the shell's code for an interrupted command.", "",
        table,
    ])
    if not args.no_write:
        write_section("cli-responsiveness", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
