"""MACE committees from mace-torch: physics of each member, the stacked-committee
machinery (select, stack, checkpoints, training) and the export that
``mace.calculators.MACECalculator`` loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from nnp_core.committee import Committee, load_committee
from nnp_core.models import build_model
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee

from .conftest import assert_member_forces_are_the_negative_gradient

pytest.importorskip("mace")

SMALL = dict(cutoff_A=4.0, num_channels=8, max_L=1, correlation=2, num_interactions=2,
             radial_MLP=[16, 16], readout_hidden=4)


@pytest.fixture(scope="module")
def committee() -> Committee:
    return Committee(build_model("mace", n_members=3, seed=1, elements=[1, 6, 8], **SMALL))


def _rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_forces_are_the_negative_gradient_of_each_members_energy(committee) -> None:
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    assert_member_forces_are_the_negative_gradient(committee, atoms, ((0, 0), (4, 1), (8, 2)))


def test_energies_are_invariant_and_forces_equivariant(committee) -> None:
    atoms = molecule("CH3CH2OH")
    reference = committee.predict([atoms])
    moved = atoms.copy()
    rotation = _rotation(3)
    moved.positions = atoms.positions @ rotation.T + np.array([1.5, -2.0, 0.3])
    order = np.random.default_rng(4).permutation(len(atoms))
    moved = moved[order]
    prediction = committee.predict([moved])
    np.testing.assert_allclose(prediction.member_energies, reference.member_energies, atol=1e-9)
    np.testing.assert_allclose(prediction.member_forces, (reference.member_forces @ rotation.T)[:, order], atol=1e-9)


def test_a_float32_copy_keeps_every_members_forces(committee) -> None:
    """Exploration in float32 (``[explore] dtype``): the template mace-torch module is cast
    with the stacked weights, and the members' forces agree with float64's."""
    frames = [molecule("CH3CH2OH"), molecule("H2O")]
    for atoms in frames:
        atoms.rattle(0.05, seed=4)
    single = committee.astype("float32")
    assert single.dtype == torch.float32 and committee.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in single.model.__dict__["_template"].parameters())
    exact, rounded = committee.predict(frames), single.predict(frames)
    scale = np.abs(exact.member_forces).max()
    np.testing.assert_allclose(rounded.member_forces, exact.member_forces, atol=1e-5 * scale)
    np.testing.assert_allclose(rounded.member_energies, exact.member_energies, atol=1e-4)


def test_members_differ_and_select_stack_and_checkpoints_keep_them(committee, tmp_path) -> None:
    atoms = molecule("CH3CH2OH")
    frames = [atoms, molecule("H2O")]
    frames[1].rattle(0.05, seed=6)
    together = committee.predict(frames)
    energies = together.member_energies[:, 0]
    assert len(set(np.round(energies, 8))) == 3, "members start from their own random weights"
    picked = Committee(committee.model.select_members([2, 0])).predict(frames)
    np.testing.assert_allclose(picked.member_energies, together.member_energies[[2, 0]], atol=1e-12)
    np.testing.assert_allclose(picked.member_forces, together.member_forces[[2, 0]], atol=1e-12)
    alone = [committee.model.select_members([i]) for i in range(3)]
    for member, model in enumerate(alone):
        prediction = Committee(model).predict(frames)
        np.testing.assert_allclose(prediction.member_energies[0], together.member_energies[member], atol=1e-12)
        np.testing.assert_allclose(prediction.member_forces[0], together.member_forces[member], atol=1e-12)
    assert np.abs(together.member_forces[0] - together.member_forces[1]).max() > 1e-3  # not vacuous
    restacked = Committee(type(committee.model).stack(alone)).predict(frames)
    np.testing.assert_allclose(restacked.member_energies, together.member_energies, atol=1e-12)
    np.testing.assert_allclose(restacked.member_forces, together.member_forces, atol=1e-12)
    loaded = load_committee(committee.save(tmp_path / "c"))
    assert loaded.architecture == "mace" and loaded.model.hparams() == committee.model.hparams()
    np.testing.assert_allclose(loaded.predict([atoms]).member_forces, committee.predict([atoms]).member_forces,
                               atol=1e-12)


def test_an_element_outside_the_committees_elements_is_named_in_one_line(committee) -> None:
    from nnp_core.batch import atoms_to_batch
    from nnp_core.calculator import CommitteeCalculator

    expected = (r"^element\(s\) \['N'\] not in this model's elements \['H', 'C', 'O'\]; "
                r"the model was not trained on them$")
    frames = [molecule("H2O"), molecule("CH3CN")]
    with pytest.raises(ValueError, match=expected):
        committee.predict(frames)
    acetonitrile = molecule("CH3CN")
    acetonitrile.calc = CommitteeCalculator(committee)
    with pytest.raises(ValueError, match=expected):
        acetonitrile.get_forces()
    # MD's mean-force pass takes batches the committee did not check
    batch = atoms_to_batch(frames, cutoff_A=committee.cutoff_A, angular_cutoff_A=0.0)
    with pytest.raises(ValueError, match=expected):
        committee.mean_energy_forces(batch)


@pytest.fixture(scope="module")
def trained(water_frames):
    config = TrainConfig(max_epochs=15, batch_size_frames=8, learning_rate=1e-2, early_stopping_patience_epochs=30)
    small = dict(SMALL, num_channels=8, num_interactions=1)
    return train_committee(water_frames[:40], config, n_members=2, architecture="mace", model_hparams=small)


def test_training_learns_the_labels_and_fits_the_neighbour_count(trained, water_frames) -> None:
    committee, report = trained
    test = water_frames[40:]
    prediction = committee.predict(test)
    errors = np.abs(prediction.forces_mean - np.concatenate([a.get_forces() for a in test])).mean()
    spread = np.abs(np.concatenate([a.get_forces() for a in test])).mean()
    assert errors < 0.5 * spread, f"force MAE {errors:.3f} eV/Å vs mean |F| {spread:.3f}"
    assert all(m.epochs_run == 15 for m in report.members)
    # water within 4 Å: every atom sees the two others
    assert committee.model.hparams()["avg_num_neighbors"] == pytest.approx(2.0)


def test_a_member_exported_as_a_mace_model_gives_its_energies_and_forces(trained, tmp_path) -> None:
    from mace.calculators import MACECalculator

    committee, _ = trained
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(5).normal(0, 0.05, atoms.positions.shape)
    prediction = committee.predict([atoms])
    for member in range(committee.n_members):
        path = tmp_path / f"member_{member}.model"
        torch.save(committee.model.to_mace_model(member), path)
        calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(prediction.member_energies[member, 0], abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), prediction.member_forces[member], atol=1e-5)


def test_nve_with_a_float32_mace_committee_conserves_energy_as_float64_does(trained) -> None:
    """``[explore] dtype = "float32"`` is only worth its speed if MD stays sound: from the
    committee's own minimum, NVE in float32 keeps the total energy as well as float64."""
    from ase.optimize import BFGS

    from nnp_core.calculator import CommitteeCalculator
    from nnp_core.md import MDConfig, Replica, run_md

    committee, _ = trained
    water = molecule("H2O")
    water.calc = CommitteeCalculator(committee)
    BFGS(water, logfile=None).run(fmax=1e-3, steps=200)
    water.calc = None
    replicas = [Replica(water, temperature_K=300.0, seed=seed) for seed in range(2)]
    config = MDConfig(integrator="nve", timestep_fs=0.25, n_steps=400, record_interval_steps=10)
    worst = {}
    for dtype in ("float64", "float32"):
        result = run_md(committee.astype(dtype), replicas, config=config)
        for replica in range(2):
            frames = [f for f in result.frames if f.replica == replica]
            assert len(frames) == 41 and all(np.isfinite(f.potential_energy_eV) for f in frames)
            total = np.array([f.potential_energy_eV + f.to_atoms().get_kinetic_energy() for f in frames])
            potential = np.array([f.potential_energy_eV for f in frames])
            assert np.ptp(total) < 0.05 * np.ptp(potential), dtype
            worst[dtype] = max(worst.get(dtype, 0.0), float(np.ptp(total)))
    # float32 rounding adds at most ~1e-4 eV of noise to a ~1e-3 eV integration error
    assert worst["float32"] < worst["float64"] + 5e-4, worst


def test_building_and_loading_a_mace_committee_prints_nothing(tmp_path) -> None:
    """The demo's terminal is not flooded by mace-torch/e3nn (TorchScript notes on every
    build, the cuequivariance print at import): a fresh interpreter, as `alflow run` is."""
    import subprocess
    import sys

    script = ("from nnp_core.committee import Committee, load_committee\n"
              "from nnp_core.models import build_model\n"
              f"c = Committee(build_model('mace', n_members=2, seed=0, elements=[1, 8], **{SMALL!r}))\n"
              f"c.save({str(tmp_path / 'c')!r}); load_committee({str(tmp_path / 'c')!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "" and done.stderr == "", (done.stdout + done.stderr)[:2000]
