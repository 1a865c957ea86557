"""Dipole heads (every architecture), their training, the calculator's dipole, the
committee's harmonic IR intensities, and dipole MD for spectra (issue 20)."""

from __future__ import annotations

import math

import importlib.util
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.spatial.transform import Rotation

from nnp_core.calculator import CommitteeCalculator
from nnp_core.committee import Committee, load_committee
from nnp_core.dipole_md import dipole_md
from nnp_core.train_config import TrainConfig
from nnp_core.training import fit_fixed_charges, train_committee

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "ethanol-pbe-def2svp"
SMALL = {"bpnn": {"hidden_layers": [16, 16]}, "painn": {"features": 16, "interactions": 2, "radial_basis": 8},
         "mace": {"num_channels": 8, "radial_MLP": [16], "correlation": 2},
         "mace-shallow": {"num_channels": 8, "radial_MLP": [16], "correlation": 2}}
ARCHITECTURES = ["bpnn", "painn"] + (["mace", "mace-shallow"] if importlib.util.find_spec("mace") else [])


def dipole_committee(architecture: str, seed: int = 3) -> Committee:
    """An untrained 3-member committee whose dipole head is not zero."""
    committee = Committee.create(architecture, n_members=3, seed=seed, elements=["H", "C", "O"], dipole=True,
                                 **SMALL[architecture])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in committee.model.weights.items():
            if "dipole" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator, dtype=weight.dtype))
        committee.model.atom_ref_charge.copy_(torch.tensor([0.2, -0.1, -0.4]))
    return committee


@pytest.fixture(scope="module")
def ethanol_pbe() -> list:
    """60 cached ethanol PBE/def2-SVP frames with energy, forces and dipole."""
    return ase.io.read(DATA / "pool.extxyz", index=":60")


@pytest.fixture(scope="module")
def trained_dipole(ethanol_pbe) -> Committee:
    config = TrainConfig(max_epochs=150, batch_size_frames=8, dipole_weight=0.01, seed=0)
    committee, _ = train_committee(ethanol_pbe[:50], config, n_members=2, model_hparams={"hidden_layers": [24, 24]})
    return committee


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_dipole_is_translation_invariant_and_rotates_with_the_molecule(architecture) -> None:
    committee = dipole_committee(architecture)
    atoms = molecule("CH3CH2OH")
    base = committee.predict(atoms).member_dipoles[:, 0]
    moved = atoms.copy()
    moved.translate([1.5, -2.0, 0.7])
    rotation = Rotation.random(random_state=4).as_matrix()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    assert np.abs(base).max() > 0.05  # the head is not trivially zero
    np.testing.assert_allclose(committee.predict(moved).member_dipoles[:, 0], base, atol=1e-10)
    np.testing.assert_allclose(committee.predict(rotated).member_dipoles[:, 0], base @ rotation.T, atol=1e-10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_charges_sum_to_the_total_charge(architecture) -> None:
    """With total charge Q, translating by t changes the dipole by exactly Q t."""
    committee = dipole_committee(architecture)
    atoms = molecule("CH3CH2OH")
    atoms.info["charge"] = 1
    shift = np.array([0.3, -1.1, 2.0])
    moved = atoms.copy()
    moved.translate(shift)
    difference = committee.predict(moved).member_dipoles - committee.predict(atoms).member_dipoles
    np.testing.assert_allclose(difference[:, 0], np.tile(shift, (3, 1)), atol=1e-10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_members_together_equal_each_member_alone_and_survive_a_checkpoint(architecture, tmp_path) -> None:
    committee = dipole_committee(architecture)
    frames = [molecule("CH3CH2OH"), molecule("H2O")]
    together = committee.predict(frames).member_dipoles
    for m in range(committee.n_members):
        np.testing.assert_allclose(committee.member(m).predict(frames).member_dipoles[0], together[m], atol=1e-12)
    loaded = load_committee(committee.save(tmp_path / "c"))
    assert loaded.has_dipole
    np.testing.assert_allclose(loaded.predict(frames).member_dipoles, together, atol=1e-12)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_md_pass_gives_the_same_dipoles_as_a_full_evaluation(architecture) -> None:
    committee = dipole_committee(architecture)
    batch = committee.make_batch([molecule("CH3CH2OH"), molecule("CH3CH2OH")])
    full, mean = committee.evaluate(batch), committee.mean_pass(batch)
    np.testing.assert_allclose(mean["dipole"], full["dipole"], atol=1e-12)
    np.testing.assert_allclose(mean["forces"], full["forces"].mean(0), atol=1e-10)


def test_explored_frames_carry_the_committee_dipole_spread() -> None:
    """Scoring steps of exploration record ``dipole_dev`` (what ``[select] dipole_weight``
    adds to the selection score); a committee without a head records NaN."""
    from nnp_core.md import MDConfig, Replica, run_md

    replicas = [Replica(molecule("CH3CH2OH"), temperature_K=300.0, seed=s) for s in range(2)]
    config = MDConfig(n_steps=20, record_interval_steps=5)
    committee = dipole_committee("bpnn")
    frames = run_md(committee, replicas, config=config).frames
    expected = committee.predict([f.to_atoms() for f in frames]).dipole_dev
    np.testing.assert_allclose([f.dipole_dev for f in frames], expected, rtol=1e-9)
    assert frames[-1].to_atoms().info["dipole_dev"] == frames[-1].dipole_dev
    plain = Committee.create("bpnn", n_members=2, elements=["H", "C", "O"], hidden_layers=[8])
    assert all(np.isnan(f.dipole_dev) for f in run_md(plain, replicas, config=config).frames)


def test_a_model_without_a_head_has_no_dipole() -> None:
    committee = Committee.create("bpnn", n_members=2, elements=["H", "O"])
    atoms = molecule("H2O")
    assert not committee.has_dipole and committee.predict(atoms).member_dipoles is None
    atoms.calc = CommitteeCalculator(committee)
    with pytest.raises(Exception, match="dipole"):
        atoms.get_dipole_moment()


def test_calculator_gives_ase_dipole_as_the_committee_mean() -> None:
    committee = dipole_committee("bpnn")
    atoms = molecule("CH3CH2OH")
    atoms.calc = CommitteeCalculator(committee)
    dipole = atoms.get_dipole_moment()
    members = atoms.calc.results["member_dipoles"]
    np.testing.assert_allclose(dipole, members.mean(0), atol=1e-12)
    spread = np.sqrt(((members - members.mean(0)) ** 2).sum(1).mean())
    assert atoms.calc.results["dipole_dev"] == pytest.approx(spread)


def test_training_learns_the_dipole_beyond_fixed_charges(ethanol_pbe, trained_dipole) -> None:
    test = ethanol_pbe[50:]
    reference = np.array([a.get_dipole_moment() for a in test])
    learned = np.abs(trained_dipole.predict(test).dipole_mean - reference).mean()
    # the fixed-charge baseline: the same committee with its head's weights zeroed
    baseline = Committee(trained_dipole.model.select_members([0]))
    with torch.no_grad():
        for name, weight in baseline.model.weights.items():
            if "dipole" in name:
                weight.zero_()
    fixed = np.abs(baseline.predict(test).dipole_mean - reference).mean()
    assert learned < 0.5 * fixed, (learned, fixed)


def test_fixed_charges_recover_known_charges() -> None:
    """Dipoles made by fixed charges (H +0.3, O -0.6) are fitted back exactly (q0 up to
    a constant shift, which charge conservation removes)."""
    from nnp_core.training import LabelledSet
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    rng = np.random.default_rng(0)
    for _ in range(6):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        dipole = (np.array([-0.6, 0.3, 0.3])[:, None] * atoms.positions).sum(0)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((3, 3)), dipole=dipole)
        frames.append(atoms)
    committee = Committee.create("bpnn", n_members=1, elements=["H", "O"], dipole=True, hidden_layers=[4])
    fit_fixed_charges(committee.model, LabelledSet.from_frames(frames, committee.model))
    q_h, q_o = committee.model.atom_ref_charge.tolist()
    assert q_h - q_o == pytest.approx(0.9, abs=1e-10)
    np.testing.assert_allclose(committee.predict(frames).dipole_mean,
                               [a.get_dipole_moment() for a in frames], atol=1e-10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forces_do_not_change_with_a_dipole_head_at_weight_zero(architecture, ethanol_pbe) -> None:
    """dipole_weight = 0: a committee with a head trains to exactly the energies and forces of one without (and
    its head stays the fixed-charge model). MACE's edge spherical harmonics are e3nn TorchScript, whose profiling
    executor differentiates its first calls in a process 1 ulp apart from later ones (the forces of a first
    MACE training differ from a second's, head or not): an epoch first puts both compared in the same state."""
    frames, test = ethanol_pbe[:30], ethanol_pbe[50:]

    def train(epochs: int, **head) -> Committee:
        config = TrainConfig(max_epochs=epochs, batch_size_frames=8, dipole_weight=0.0, seed=1)
        return train_committee(frames, config, n_members=2, architecture=architecture,
                               model_hparams={**SMALL[architecture], **head})[0]

    if architecture.startswith("mace"):
        train(1)
    epochs = 15 if architecture == "bpnn" else 3
    plain, headed = train(epochs), train(epochs, dipole=True)
    assert not plain.has_dipole and headed.has_dipole
    assert all(not weight.any() for name, weight in headed.model.weights.items() if "dipole" in name)
    with_head, without = headed.predict(test), plain.predict(test)
    np.testing.assert_array_equal(with_head.member_energies, without.member_energies)
    np.testing.assert_array_equal(with_head.member_forces, without.member_forces)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_committee_harmonic_intensities_match_ase_finite_differences(architecture, ethanol_pbe, request, tmp_path,
                                                                     monkeypatch) -> None:
    """Autograd's Hessian and dipole Jacobian give ASE's finite-difference frequencies and intensities. BPNN: the
    trained committee; the others: 12 epochs on 16 frames, a rough model but a minimum with 15 or more modes
    above 500 cm-1 (the equality needs no accurate model). A step of 0.001 Å: the FD error goes as its square
    (with 0.005 Å a rough PaiNN's intensities are off by up to 2%)."""
    from ase.vibrations import Infrared

    from nnp_core.vibrations import committee_harmonic_ir

    if architecture == "bpnn":
        committee = request.getfixturevalue("trained_dipole")
    else:
        config = TrainConfig(max_epochs=12, batch_size_frames=4, learning_rate=0.01, dipole_weight=0.1, seed=0)
        committee, _ = train_committee(ethanol_pbe[:16], config, n_members=2, architecture=architecture,
                                       model_hparams=SMALL[architecture])
    harmonic = committee_harmonic_ir(committee, ase.io.read(DATA / "geometry.xyz"))
    assert harmonic.max_force_eV_A < 1e-3 and len(harmonic.frequencies_cm1) <= 21
    atoms = harmonic.minimum.copy()
    atoms.calc = CommitteeCalculator(committee)
    monkeypatch.chdir(tmp_path)
    infrared = Infrared(atoms, delta=0.001)
    infrared.run()
    infrared.read()
    # ASE does not project out rotations: compare the vibrations above 500 cm-1
    k = int((harmonic.frequencies_cm1 > 500).sum())
    assert k >= 15
    frequencies = infrared.get_frequencies().real[-k:]
    km_mol = infrared.intensities[-k:] * 42.255  # ASE's (D/Å)²/amu -> km/mol
    np.testing.assert_allclose(harmonic.frequencies_cm1[-k:], frequencies, rtol=5e-4)
    np.testing.assert_allclose(harmonic.intensities_km_mol[-k:], km_mol, rtol=5e-3, atol=0.01)


def test_dipole_md_records_every_member_at_every_step_and_conserves_energy(trained_dipole) -> None:
    start = ase.io.read(DATA / "geometry.xyz")
    run = dipole_md(trained_dipole, start, temperature_K=100.0, replicas=2, equilibration_ps=0.05,
                    production_ps=0.1, timestep_fs=0.25, seed=3)
    assert run.member_dipoles_eA.shape == (2, 2, 401, 3)
    assert np.isfinite(run.member_dipoles_eA).all()
    assert run.energy_drift_meV_per_atom_ps < 5.0
    again = dipole_md(trained_dipole, start, temperature_K=100.0, replicas=2, equilibration_ps=0.05,
                      production_ps=0.1, timestep_fs=0.25, seed=3)
    np.testing.assert_array_equal(again.member_dipoles_eA, run.member_dipoles_eA)


def test_a_thermostatted_production_shares_the_equilibration_and_then_redraws_energy(trained_dipole) -> None:
    start = ase.io.read(DATA / "geometry.xyz")
    options = dict(temperature_K=300.0, replicas=2, equilibration_ps=0.05, production_ps=0.1, timestep_fs=0.25,
                   seed=5)
    nve = dipole_md(trained_dipole, start, **options)
    nvt = dipole_md(trained_dipole, start, **options, production_friction_per_fs=0.05)
    # the same equilibrated start, then other dynamics
    np.testing.assert_array_equal(nvt.member_dipoles_eA[:, :, 0], nve.member_dipoles_eA[:, :, 0])
    assert not np.allclose(nvt.member_dipoles_eA[:, :, -1], nve.member_dipoles_eA[:, :, -1])
    assert np.isfinite(nvt.member_dipoles_eA).all() and math.isnan(nvt.energy_drift_meV_per_atom_ps)
    assert np.isfinite(nve.energy_drift_meV_per_atom_ps)
    zero = dipole_md(trained_dipole, start, **options, production_friction_per_fs=0.0)
    np.testing.assert_array_equal(zero.member_dipoles_eA, nve.member_dipoles_eA)  # 0 is exactly NVE


@pytest.mark.parametrize("options, message", [
    ({"temperature_K": -1.0}, "temperature_K"), ({"replicas": 0}, "replicas"),
    ({"production_ps": 0.0}, "production_ps"), ({"timestep_fs": 0.0}, "timestep_fs"),
    ({"equilibration_ps": -1.0}, "equilibration_ps"), ({"friction_per_fs": 0.0}, "friction_per_fs"),
    ({"production_friction_per_fs": -0.001}, "production_friction_per_fs"),
])
def test_dipole_md_refuses_bad_options(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        dipole_md(dipole_committee("bpnn"), molecule("CH3CH2OH"), **options)


def test_dipole_md_refuses_a_committee_without_a_dipole_head() -> None:
    with pytest.raises(ValueError, match="no dipole head"):
        dipole_md(Committee.create("bpnn", n_members=2, elements=["H", "O"]), molecule("H2O"))


def test_a_warm_start_adds_a_dipole_head_to_an_old_committee(ethanol_pbe) -> None:
    """A committee trained without dipoles gains a head (its other weights kept) when
    retrained with dipole_weight > 0."""
    frames = ethanol_pbe[:30]
    old, _ = train_committee(frames, TrainConfig(max_epochs=5, dipole_weight=0.0), n_members=2,
                             model_hparams={"hidden_layers": [16]})
    assert not old.has_dipole
    zero_epochs = TrainConfig(max_epochs=1, dipole_weight=0.01, learning_rate=1e-12, min_learning_rate=0.0)
    new, _ = train_committee(frames, zero_epochs, initial=old)
    assert new.has_dipole
    np.testing.assert_allclose(new.predict(frames).member_forces, old.predict(frames).member_forces, atol=1e-8)
    reference = np.array([a.get_dipole_moment() for a in frames])
    assert np.abs(new.predict(frames).dipole_mean - reference).mean() < 0.1
