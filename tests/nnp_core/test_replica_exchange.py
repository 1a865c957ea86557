"""Replica exchange in the batched MD engine (MDConfig.exchange_interval_steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import units
from ase.build import molecule

from nnp_core.bias import Metadynamics, TorsionCVs, UncertaintyDrivenBias
from nnp_core.md import MDConfig, Replica, _Run, run_md

from .test_md import RestrainedCommittee, one_torch_thread  # noqa: F401  (autouse fixture)

WATER = molecule("H2O")


def test_swaps_follow_the_metropolis_rule_and_rescale_velocities(random_committee) -> None:
    replicas = [Replica(WATER, temperature_K=300.0, seed=0), Replica(WATER, temperature_K=600.0, seed=1)]
    run = _Run(random_committee, replicas, MDConfig(exchange_interval_steps=1))
    run.begin()
    ens = run.ensemble
    kt = ens.kT_eV.copy()
    coefficient = 1.0 / kt[0] - 1.0 / kt[1]
    velocities = ens.velocities.copy()
    for probability in (0.3, 1.0):
        accepted = 0
        for _ in range(4000):
            ens.kT_eV[:], run.temperatures_K[:] = kt, [300.0, 600.0]
            ens.velocities[:] = velocities
            run._exchange_parity = 0
            # U_300 - U_600 such that (1/kT_300 - 1/kT_600)(U_300 - U_600) = ln p
            ens.energy_eV[:] = [math.log(probability) / coefficient, 0.0]
            run._exchange()
            if run.temperatures_K[0] == 600.0:
                accepted += 1
                np.testing.assert_allclose(ens.velocities[ens.slices[0]], velocities[ens.slices[0]] * math.sqrt(2.0))
                np.testing.assert_allclose(ens.velocities[ens.slices[1]], velocities[ens.slices[1]] / math.sqrt(2.0))
                assert list(ens.kT_eV) == [kt[1], kt[0]]
        assert accepted / 4000 == pytest.approx(probability, abs=4 * math.sqrt(probability * (1 - probability) / 4000) + 1e-12)


def test_exchanging_replicas_keep_each_temperature_sampled(random_committee) -> None:
    """Restrained water at 300 and 600 K swapping every 5 steps: at every record both
    temperatures are held, swaps happen, and frames at 600 K are twice as hot."""
    committee = RestrainedCommittee(random_committee, WATER, spring_eV_A2=20.0)
    replicas = [Replica(WATER, temperature_K=t, friction_per_fs=0.1, seed=s) for s, t in enumerate((300.0, 600.0))]
    config = MDConfig(n_steps=3000, record_interval_steps=5, exchange_interval_steps=5)
    result = run_md(committee, replicas, config=config)
    # 600 rounds; with two replicas the odd rounds have no pair
    assert result.exchange_attempts == 300 and 0 < result.exchange_accepted < 300
    by_step: dict[int, list[float]] = {}
    for frame in result.frames:
        by_step.setdefault(frame.step, []).append(frame.temperature_K)
    assert all(sorted(temps) == [300.0, 600.0] for temps in by_step.values())
    assert len({f.temperature_K for f in result.frames if f.replica == 0}) == 2  # replica 0 visited both
    for target in (300.0, 600.0):
        kinetic = [f.kinetic_temperature_K for f in result.frames if f.temperature_K == target and f.step > 500]
        assert np.mean(kinetic) == pytest.approx(target, rel=0.15)


def test_exchange_without_it_or_with_a_shared_bias_runs_and_bad_setups_are_refused(random_committee) -> None:
    replicas = [Replica(WATER, temperature_K=t, seed=s) for s, t in enumerate((300.0, 450.0, 600.0))]
    result = run_md(random_committee, replicas, config=MDConfig(n_steps=20, exchange_interval_steps=2),
                    bias=UncertaintyDrivenBias(0.1, 0.01))
    assert result.exchange_attempts == 10  # 10 rounds, one pair each (even, odd, ...)
    with pytest.raises(ValueError, match="two or more temperatures"):
        run_md(random_committee, [Replica(WATER, seed=s) for s in range(2)],
               config=MDConfig(n_steps=2, exchange_interval_steps=1))
    metad = Metadynamics(TorsionCVs([(0, 1, 2, 3)]), height_eV=0.1, sigma=0.3, pace_steps=1, bias_factor=5.0,
                         temperatures_K=[300.0, 450.0, 600.0])
    ethanol = molecule("CH3CH2OH")
    with pytest.raises(ValueError, match="metad bias is not supported"):
        run_md(random_committee, [Replica(ethanol, temperature_K=t) for t in (300.0, 450.0, 600.0)],
               config=MDConfig(n_steps=2, exchange_interval_steps=1), bias=metad)
    with pytest.raises(ValueError, match="exchange_interval_steps"):
        MDConfig(integrator="nve", exchange_interval_steps=5)
    with pytest.raises(ValueError, match="exchange_interval_steps"):
        MDConfig(exchange_interval_steps=-1)
    assert units.kB > 0
