"""The committee benchmark runs in quick mode, checks its own results and reports every table."""

from __future__ import annotations

import pytest

from bench import committee_eval


def _tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``markdown`` as a list of rows keyed by the header cells."""
    tables, lines = [], markdown.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("|---"):
            headers = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                rows.append(dict(zip(headers, (cell.strip() for cell in row.strip("|").split(" | ")))))
            tables.append(rows)
    return tables


def _table_with(tables: list[list[dict[str, str]]], column: str) -> list[dict[str, str]]:
    matches = [table for table in tables if table and column in table[0]]
    assert len(matches) == 1, f"expected one table with column {column!r}"
    return matches[0]


@pytest.fixture(scope="module")
def quick_report() -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(committee_eval, "write_section",
                      lambda *args, **kwargs: pytest.fail("--no-write must not touch docs/benchmarks.md"))
        return committee_eval.main(["--quick", "--no-write"])


def test_evaluation_table_has_every_mode_and_member_count(quick_report: str) -> None:
    rows = _table_with(_tables(quick_report), "(c) frame × member loop, ms")
    assert [row["M"] for row in rows] == [str(m) for m in committee_eval.QUICK.members]
    for row in rows:
        for column in ("(a) vectorised, ms", "(a') predict incl. batching, ms", "(b) member loop, ms",
                       "(b)/(a)", "(c)/(a)", "(a) / (a at M=1)"):
            assert float(row[column]) > 0
    assert float(rows[0]["(a) / (a at M=1)"]) == 1


def test_loops_reproduce_the_vectorised_committee(quick_report: str) -> None:
    for row in _table_with(_tables(quick_report), "max |ΔF| vs (a), eV/Å"):
        assert float(row["max |ΔE| vs (a), eV"]) <= committee_eval.AGREEMENT_TOL
        assert float(row["max |ΔF| vs (a), eV/Å"]) <= committee_eval.AGREEMENT_TOL


def test_memory_and_training_tables_and_target_verdicts(quick_report: str) -> None:
    tables = _tables(quick_report)
    memory = _table_with(tables, "(c) adds, MiB")
    assert [row["M"] for row in memory] == [str(m) for m in committee_eval.QUICK.members]
    assert all(float(row["set-up peak RSS, MiB"]) > 0 for row in memory)
    training = _table_with(tables, "ratio to vectorised (mean)")
    assert [row["training"] for row in training] == ["vectorised", "one by one"]
    assert all(row["epochs"] == str(committee_eval.QUICK.train_epochs) for row in training)
    assert "The two committees agree" in quick_report
    assert quick_report.count("- Target:") == 2
    assert "python -m bench.committee_eval" in quick_report


def test_mode_outputs_agree_with_the_vectorised_committee_directly() -> None:
    prepared = committee_eval.prepare(2, committee_eval.QUICK)
    deviations = committee_eval.check_agreement(prepared)
    assert set(deviations) == {"a'", "b", "c"}
    energies, forces = committee_eval.member_arrays("c", committee_eval.MODES["c"](prepared))
    assert energies.shape == (2, committee_eval.QUICK.n_frames)
    assert forces.shape == (2, 9 * committee_eval.QUICK.n_frames, 3)
