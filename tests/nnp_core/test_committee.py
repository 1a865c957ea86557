"""The committee: one batched pass equals loops; statistics; checkpoints; calculator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.optimize import BFGS
from ase.md.verlet import VelocityVerlet
from ase.units import fs

from nnp_core.calculator import CommitteeCalculator
from nnp_core.committee import Committee, load_committee
from nnp_core.uncertainty import committee_statistics, fit_calibration

from .conftest import displaced


def test_vectorised_committee_equals_loop_over_members_and_frames(any_committee) -> None:
    frames = displaced(molecule("CH3CH2OH"), 5, 0.1, seed=7) + [molecule("H2O"), molecule("CH4")]
    batched = any_committee.predict(frames)
    slices = batched.frame_slices()
    for m in range(any_committee.n_members):
        member = any_committee.member(m)
        loop = member.predict(frames)
        np.testing.assert_allclose(batched.member_energies[m], loop.member_energies[0], atol=1e-6)
        np.testing.assert_allclose(batched.member_forces[m], loop.member_forces[0], atol=1e-6)
        for f, atoms in enumerate(frames):
            single = member.predict(atoms)
            np.testing.assert_allclose(batched.member_energies[m, f], single.member_energies[0, 0], atol=1e-6)
            np.testing.assert_allclose(batched.member_forces[m, slices[f]], single.member_forces[0], atol=1e-6)


def test_statistics_follow_the_design_definitions() -> None:
    rng = np.random.default_rng(0)
    energies = rng.normal(size=(4, 2))
    forces = rng.normal(size=(4, 5, 3))
    frame, n_atoms = np.array([0, 0, 0, 1, 1]), np.array([3, 2])
    stats = committee_statistics(torch.tensor(energies), torch.tensor(forces), frame, n_atoms)
    mean_f = forces.mean(0)
    force_dev = np.sqrt(np.mean(np.sum((forces - mean_f) ** 2, axis=-1), axis=0))
    np.testing.assert_allclose(stats.force_dev.numpy(), force_dev)
    np.testing.assert_allclose(stats.max_force_dev.numpy(), [force_dev[:3].max(), force_dev[3:].max()])
    np.testing.assert_allclose(stats.energy_dev.numpy(), energies.std(0, ddof=0) / np.sqrt(n_atoms))
    np.testing.assert_allclose(stats.energy_mean.numpy(), energies.mean(0))


def test_calibration_recovers_the_error_scale() -> None:
    rng = np.random.default_rng(1)
    force_dev = rng.uniform(0.05, 0.5, size=20000)
    errors = rng.normal(size=(20000, 3)) * (2.0 * force_dev / np.sqrt(3))[:, None]
    calibration = fit_calibration(force_dev, errors)
    assert calibration.force_dev_scale == pytest.approx(2.0, rel=0.03)


def test_checkpoint_round_trip_is_exact(tmp_path, any_committee) -> None:
    frames = displaced(molecule("CH3CH2OH"), 3, 0.1, seed=9)
    path = any_committee.save(tmp_path / "committee")
    meta = json.loads((path / "committee.json").read_text())
    assert meta["n_members"] == 3 and sorted(p.name for p in path.glob("member_*.pt")) == [
        "member_0.pt", "member_1.pt", "member_2.pt"]
    loaded = load_committee(path)
    before, after = any_committee.predict(frames), loaded.predict(frames)
    np.testing.assert_array_equal(before.member_energies, after.member_energies)
    np.testing.assert_array_equal(before.member_forces, after.member_forces)
    # each member file holds exactly the state of that member selected alone
    for m in range(3):
        alone = any_committee.model.select_members([m]).state_dict()
        saved = torch.load(path / f"member_{m}.pt", weights_only=True)
        assert saved.keys() == alone.keys()
        assert all(torch.equal(saved[k], alone[k]) for k in alone)


def test_loading_a_mismatched_checkpoint_is_refused(tmp_path, random_committee) -> None:
    path = random_committee.save(tmp_path / "committee")
    other = Committee.create("bpnn", n_members=1, elements=["H", "C", "O"], descriptor={"cutoff_A": 4.0})
    torch.save(other.model.state_dict(), path / "member_1.pt")
    with pytest.raises(ValueError, match=r"member_1.pt: member cutoff 4.0"):
        load_committee(path)
    good = random_committee.save(tmp_path / "good")
    with pytest.raises(ValueError, match="elements"):
        load_committee(good, expected_elements=[1, 8])
    with pytest.raises(ValueError, match="cutoff"):
        load_committee(good, expected_cutoff_A=6.0)
    with pytest.raises(FileNotFoundError):
        load_committee(tmp_path / "nothing-here")


def test_calculator_results_hold_committee_spread(any_committee) -> None:
    atoms = displaced(molecule("CH3CH2OH"), 1, 0.1, seed=4)[0]
    atoms.calc = CommitteeCalculator(any_committee)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    results = atoms.calc.results
    assert results["member_energies"].shape == (3,)
    assert results["member_forces"].shape == (3, len(atoms), 3)
    assert energy == pytest.approx(results["member_energies"].mean())
    np.testing.assert_allclose(forces, results["member_forces"].mean(0))
    assert results["max_force_dev"] == pytest.approx(results["force_dev"].max())
    assert results["max_force_dev"] > 0 and results["energy_dev"] > 0


def test_nve_conserves_total_energy(trained_water_committee) -> None:
    atoms = molecule("H2O")
    atoms.calc = CommitteeCalculator(trained_water_committee)
    BFGS(atoms, logfile=None).run(fmax=0.01)  # start in the committee's own minimum
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.25 * fs)
    totals = []
    dyn.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
    dyn.run(400)
    totals = np.array(totals)
    kinetic_scale = 1.5 * len(atoms) * 300 * 8.617e-5
    assert np.abs(totals - totals[0]).max() < 0.02 * kinetic_scale
    assert atoms.calc.results["max_force_dev"] < 1.0  # stayed where the committee is trained
    assert abs(np.polyfit(np.arange(len(totals)), totals, 1)[0]) * len(totals) < 0.005 * kinetic_scale


def test_a_float32_copy_predicts_what_the_float64_committee_does(any_committee) -> None:
    """``astype`` (exploration in float32, ``[explore] dtype``): forces, deviations and
    relative energies to float32 precision; the float64 committee itself is untouched."""
    frames = displaced(molecule("CH3CH2OH"), 4, 0.1, seed=3)
    before = {k: v.clone() for k, v in any_committee.model.state_dict().items()}
    single = any_committee.astype("float32")
    assert single.dtype == torch.float32 and any_committee.dtype == torch.float64
    assert single.model.hparams()["dtype"] == "float32"
    assert any_committee.astype("float64") is any_committee
    exact, rounded = any_committee.predict(frames), single.predict(frames)
    scale = np.abs(exact.member_forces).max()
    np.testing.assert_allclose(rounded.member_forces, exact.member_forces, atol=1e-5 * scale)
    np.testing.assert_allclose(rounded.max_force_dev, exact.max_force_dev, atol=1e-5 * scale)
    # total energies ~ -4000 eV: float32 keeps ~1e-7 of them; differences between frames survive
    np.testing.assert_allclose(rounded.energy_mean, exact.energy_mean, rtol=3e-7)
    np.testing.assert_allclose(np.diff(rounded.energy_mean), np.diff(exact.energy_mean), atol=5e-3)
    assert all(torch.equal(v, any_committee.model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="float32"):
        any_committee.astype("float16")
