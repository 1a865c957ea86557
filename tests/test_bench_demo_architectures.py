"""bench.demo_architectures runs each demo campaign as it is, in a folder of its own, and
refuses bad options before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import demo_architectures

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["ethanol.toml", "ethanol-mace.toml"])
def test_the_copy_is_the_campaign_but_for_its_work_folder(name: str, tmp_path: Path) -> None:
    from flows.config import load_config

    original = load_config(ROOT / "examples" / name)
    copy = load_config(demo_architectures.campaign_copy(ROOT / "examples" / name, tmp_path / "x"))
    assert copy.campaign.work_dir == tmp_path / "x" / "run"
    assert copy.campaign.database_url == f"sqlite:///{tmp_path}/x/run/alflow.db"
    assert copy.model_copy(update={"campaign": original.campaign}) == original


@pytest.mark.parametrize("argv, message", [(["--configs", "examples/nowhere.toml"], "is not a file"),
                                           (["--threads", "0"], "--threads must be >= 1"),
                                           (["--keep", "{full}"], "is not empty"),
                                           (["--keep", "{full}/mine.txt"], "is not a folder"),
                                           (["--configs", "{full}/bad.toml"], "invalid TOML")])
def test_bad_options_are_refused_before_any_work(argv, message, capsys, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("a user's file")
    (full / "bad.toml").write_text("[campaign\nname = 1\n")
    before = (ROOT / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit) as raised:
        demo_architectures.main([a.format(full=full) for a in argv])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert (ROOT / "docs" / "benchmarks.md").read_text() == before
    assert sorted(p.name for p in full.iterdir()) == ["bad.toml", "mine.txt"]
    assert (full / "mine.txt").read_text() == "a user's file"


def test_a_failed_run_is_reported_in_one_line_and_nothing_is_written(monkeypatch, tmp_path: Path) -> None:
    def failing(config: Path, threads: int) -> tuple[float, int]:
        config.with_name("run.log").write_text("starting\nalflow: examples/ethanol.toml: PySCF did not converge\n\n")
        return 1.0, 3

    monkeypatch.setattr(demo_architectures, "run_demo", failing)
    before = (ROOT / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit) as raised:
        demo_architectures.main(["--configs", "examples/ethanol.toml", "--keep", str(tmp_path / "runs")])
    assert str(raised.value) == ("bench.demo_architectures: ethanol.toml: alflow run exited 3: "
                                 "alflow: examples/ethanol.toml: PySCF did not converge")
    assert (ROOT / "docs" / "benchmarks.md").read_text() == before
