"""Write one benchmark's section of docs/benchmarks.md, leaving the others alone.

Each script owns the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``.
"""

from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script named in it; rerun the script to refresh it.\n"
    "Ratios compare two ways of doing the same work in one run, so they hold on a noisy "
    "machine better than absolute times do.\n"
)


def machine_line() -> str:
    """One line naming the machine a table was measured on."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that made a table, as a markdown code span: ``module`` run with
    ``argv`` (None: this process's own arguments)."""
    import shlex
    import sys

    arguments = sys.argv[1:] if argv is None else argv
    return "`" + " ".join([".venv/bin/python -m", module, shlex.join(arguments)]).rstrip() + "`"


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table; floats are written with 4 significant digits."""

    def fmt(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of the benchmarks page with ``body``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
