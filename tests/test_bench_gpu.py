"""bench.gpu runs on a GPU machine without alflow's flows (no Prefect, PySCF or
pydantic there): its copies of the example's training settings and of the MACE
committee must stay what the CPU benchmarks use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import gpu

ROOT = Path(__file__).resolve().parents[1]


def test_its_training_settings_are_the_examples() -> None:
    from flows.config import load_config

    example = load_config(ROOT / "examples" / "ethanol.toml").train_config()
    ours = gpu._train_config("float32", 150, 3, "cpu")
    assert ours == replace(example, max_epochs=150, seed=3, dtype="float32")


def test_its_mace_committee_is_the_cpu_benchmarks() -> None:
    from bench.data_efficiency import MACE_COMMITTEE

    assert {"architecture": "mace", **gpu.MACE} == MACE_COMMITTEE


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path) -> None:
    before = (ROOT / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit, match="bench.gpu needs a CUDA device"):
        gpu.main(["--epochs", "1"])
    assert (ROOT / "docs" / "benchmarks.md").read_text() == before
