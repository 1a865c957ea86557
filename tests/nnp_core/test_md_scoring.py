"""Scoring steps: replicas move on the committee mean; all members only every k steps."""

from __future__ import annotations

import numpy as np
import torch
from ase.build import molecule

from nnp_core.batch import Batch
from nnp_core.committee import Committee
from nnp_core.md import MDConfig, Replica, run_md


class CountingCommittee(Committee):
    """Counts all-member evaluations and mean-only evaluations."""

    def __init__(self, committee: Committee) -> None:
        super().__init__(committee.model, committee.calibration)
        self.member_calls, self.mean_calls = 0, 0

    def evaluate(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.member_calls += 1
        return super().evaluate(batch)

    def mean_energy_forces(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        self.mean_calls += 1
        return super().mean_energy_forces(batch)


def test_members_are_evaluated_only_at_scoring_steps(random_committee) -> None:
    committee = CountingCommittee(random_committee)
    replicas = [Replica(molecule("CH3OH"), temperature_K=300.0, seed=s) for s in range(2)]
    result = run_md(committee, replicas, config=MDConfig(n_steps=25, record_interval_steps=10))
    assert committee.member_calls == 4  # steps 0, 10, 20 and the last, 25
    assert committee.mean_calls == 25 - 3  # every other step, the mean only
    assert [f.step for f in result.frames if f.replica == 0] == [0, 10, 20, 25]
    scores = result.scores()
    assert np.all(scores["max_force_dev"] > 0) and np.all(np.isfinite(scores["energy_dev"]))
