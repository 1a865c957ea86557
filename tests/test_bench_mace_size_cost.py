"""bench.mace_size_cost trains each MACE size as the al-mace campaigns train their
committee, changing only the size's own hyperparameters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench import mace_size_cost
from bench.data_efficiency import MACE_CAMPAIGN

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(mace_size_cost.SIZES))
def test_each_size_is_the_campaigns_committee_but_for_its_own_settings(name: str) -> None:
    from flows.config import load_config

    committee, train = mace_size_cost._configs(mace_size_cost.SIZES[name], seed=2, epochs=7)
    expected = {**MACE_CAMPAIGN["committee"], **mace_size_cost.SIZES[name]}
    hparams = committee.network_hparams()
    for key in ("num_channels", "max_L", "correlation", "num_interactions", "cutoff_A"):
        assert hparams[key] == expected[key], key
    assert (committee.architecture, committee.members, committee.dtype) == ("mace", 2, "float32")
    example = load_config(ROOT / "examples" / "ethanol.toml").train_config()
    assert train == replace(example, seed=2, dtype="float32", learning_rate=1e-2, ema_decay=0.99, max_epochs=7)


def test_the_smaller_sizes_have_fewer_weights() -> None:
    from nnp_core.committee import Committee

    def weights(name: str) -> int:
        committee, _ = mace_size_cost._configs(mace_size_cost.SIZES[name], seed=0, epochs=1)
        built = Committee.create("mace", n_members=1, elements=[1, 6, 8], **committee.network_hparams())
        return sum(p.numel() for p in built.model.parameters())

    assert weights("L0-c2-16ch") < weights("L0-c2") < weights("L0") < weights("default")
    assert weights("c2") < weights("default")


@pytest.mark.parametrize("argv, message", [(["--labels", "0"], "--labels must be >= 1"),
                                           (["--new", "2", "--qm-frames", "3"], "must not exceed --new"),
                                           (["--labels", "400"], "the pool has")])
def test_bad_options_are_refused_before_any_work(argv, message, capsys) -> None:
    before = (ROOT / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit):
        mace_size_cost.main(argv)
    assert message in capsys.readouterr().err
    assert (ROOT / "docs" / "benchmarks.md").read_text() == before
