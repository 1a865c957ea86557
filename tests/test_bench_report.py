"""bench._report.write_section: each script owns one marked section of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

from bench._report import BENCHMARKS_MD, HEADER, write_section

OPEN = re.compile(r"<!-- bench:([\w.-]+) -->")
CLOSE = re.compile(r"<!-- /bench:([\w.-]+) -->")


def _markers(text: str) -> list[tuple[int, str, str]]:
    found = [(m.start(), "open", m.group(1)) for m in OPEN.finditer(text)]
    found += [(m.start(), "close", m.group(1)) for m in CLOSE.finditer(text)]
    return sorted(found)


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    write_section("a", "first A", page)
    write_section("b", "only B", page)
    write_section("a", "second A\nwith two lines", page)

    text = page.read_text()
    assert text.startswith(HEADER)
    assert "first A" not in text
    assert "<!-- bench:a -->\nsecond A\nwith two lines\n<!-- /bench:a -->" in text
    assert "<!-- bench:b -->\nonly B\n<!-- /bench:b -->" in text
    assert text.count("<!-- bench:a -->") == 1
    # a body with regex replacement syntax is written as it is
    write_section("b", r"group \1 and \g<0>", page)
    assert r"group \1 and \g<0>" in page.read_text()


def test_every_section_of_the_benchmarks_page_is_closed_before_the_next_opens() -> None:
    """An unclosed section would make its script append a second copy instead of
    replacing it (and swallow the next section on a later rewrite)."""
    markers = _markers(BENCHMARKS_MD.read_text())
    assert markers, "docs/benchmarks.md has no sections"
    names = [name for _, kind, name in markers if kind == "open"]
    assert len(names) == len(set(names)), f"sections opened twice: {sorted({n for n in names if names.count(n) > 1})}"
    current = None
    for _, kind, name in markers:
        if kind == "open":
            assert current is None, f"section {name!r} opens inside section {current!r}"
            current = name
        else:
            assert current == name, f"closing marker of {name!r} while {current!r} is open"
            current = None
    assert current is None, f"section {current!r} is never closed"


def test_command_line_names_the_module_and_its_arguments(monkeypatch) -> None:
    from bench._report import command_line

    assert command_line("bench.x", ["--a", "1"]) == "`.venv/bin/python -m bench.x --a 1`"
    # an argument with a space is quoted, so the line can be pasted into a shell
    assert command_line("bench.x", ["--c", "a b=d"]) == "`.venv/bin/python -m bench.x --c 'a b=d'`"
    assert command_line("bench.x", []) == "`.venv/bin/python -m bench.x`"
    monkeypatch.setattr("sys.argv", ["prog", "--seeds", "0"])
    assert command_line("bench.x") == "`.venv/bin/python -m bench.x --seeds 0`"
