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
                                           (["--keep", "{full}"], "is not empty")])
def test_bad_options_are_refused_before_any_work(argv, message, capsys, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("a user's file")
    before = (ROOT / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit) as raised:
        demo_architectures.main([a.format(full=full) for a in argv])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert (ROOT / "docs" / "benchmarks.md").read_text() == before
    assert [p.name for p in full.iterdir()] == ["mine.txt"] and (full / "mine.txt").read_text() == "a user's file"
