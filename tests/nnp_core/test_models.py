"""Physics of the model: exact forces, invariances, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from scipy.spatial.transform import Rotation

from nnp_core.batch import atoms_to_batch
from nnp_core.models import MODEL_REGISTRY, build_model, register_model

from .conftest import ARCHITECTURES, displaced


def _energies(committee, frames: list[Atoms]) -> np.ndarray:
    """Every member's energy of every frame (M, B), without forces."""
    batch = committee.make_batch(frames)
    return committee.model(batch, compute_forces=False)["energy"].numpy()


def test_forces_are_negative_finite_difference_gradient(any_committee) -> None:
    atoms = displaced(molecule("CH3CH2OH"), 1, 0.1, seed=1)[0]
    prediction = any_committee.predict(atoms)
    h = 1e-4
    shifted = []  # +h and -h along each (atom, axis), evaluated in one batch
    for i in range(len(atoms)):
        for k in range(3):
            for step in (h, -h):
                frame = atoms.copy()
                frame.positions[i, k] += step
                shifted.append(frame)
    energies = _energies(any_committee, shifted)
    fd = -(energies[:, 0::2] - energies[:, 1::2]).reshape(any_committee.n_members, len(atoms), 3) / (2 * h)
    assert np.abs(prediction.member_forces - fd).max() < 1e-4
    assert np.abs(prediction.forces_mean - fd.mean(0)).max() < 1e-4
    assert np.abs(fd).max() > 1e-2  # the test is not vacuous


def test_rotation_translation_invariance_and_force_covariance(any_committee) -> None:
    atoms = displaced(molecule("CH3CH2OH"), 1, 0.1, seed=2)[0]
    rotation = Rotation.random(random_state=4).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.array([3.0, -1.5, 7.0])
    p0, p1 = any_committee.predict(atoms), any_committee.predict(moved)
    np.testing.assert_allclose(p1.member_energies, p0.member_energies, atol=1e-9)
    np.testing.assert_allclose(p1.member_forces, p0.member_forces @ rotation.T, atol=1e-9)


def test_permutation_of_same_element_atoms(any_committee) -> None:
    atoms = displaced(molecule("CH3CH2OH"), 1, 0.1, seed=3)[0]
    hydrogens = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"]
    order = np.arange(len(atoms))
    order[hydrogens] = np.random.default_rng(0).permutation(hydrogens)
    assert not np.array_equal(order, np.arange(len(atoms)))
    permuted = atoms[order]
    p0, p1 = any_committee.predict(atoms), any_committee.predict(permuted)
    np.testing.assert_allclose(p1.member_energies, p0.member_energies, atol=1e-9)
    np.testing.assert_allclose(p1.member_forces, p0.member_forces[:, order], atol=1e-9)


@pytest.mark.parametrize(("architecture", "hparams", "angular_cutoff"), [
    ("bpnn", {"descriptor": {"cutoff_A": 3.0, "angular_cutoff_A": 2.0}}, 2.0),
    ("painn", {"cutoff_A": 3.0, "features": 8, "interactions": 2, "radial_basis": 6}, 0.0),
    *([("mace", dict(ARCHITECTURES["mace"], cutoff_A=3.0), 0.0)] if "mace" in ARCHITECTURES else []),
])
def test_energy_is_smooth_across_the_cutoff(architecture: str, hparams: dict, angular_cutoff: float) -> None:
    model = build_model(architecture, elements=["H"], **hparams)
    def energy(r: float) -> float:
        batch = atoms_to_batch([Atoms("H2", positions=[[0, 0, 0], [r, 0, 0]])], cutoff_A=3.0,
                               angular_cutoff_A=angular_cutoff)
        return float(model(batch, compute_forces=False)["energy"][0, 0])
    far = energy(3.5)
    assert abs(energy(3.0 - 1e-6) - far) < 1e-9
    assert abs(energy(2.5) - far) > 1e-6


def test_unknown_element_raises_clear_error(any_committee) -> None:
    with pytest.raises(ValueError, match=r"\['N'\] not in this model's elements"):
        any_committee.predict(molecule("CH3CN"))


def test_periodic_cells_are_refused(any_committee) -> None:
    atoms = molecule("H2O", vacuum=3.0)
    atoms.pbc = True
    with pytest.raises(NotImplementedError, match="periodic"):
        any_committee.predict(atoms)


def test_nan_positions_are_refused(any_committee) -> None:
    atoms = molecule("H2O")
    atoms.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        any_committee.predict(atoms)


def test_registry_builds_by_name_and_refuses_unknown() -> None:
    assert "bpnn" in MODEL_REGISTRY
    with pytest.raises(ValueError, match="unknown model architecture 'nope'"):
        build_model("nope", elements=["H"])
    with pytest.raises(ValueError, match="already registered"):
        register_model("bpnn")(type("Other", (), {}))


def test_member_initialisation_does_not_depend_on_committee_size() -> None:
    small = build_model("bpnn", elements=["H", "O"], n_members=2, seed=5)
    large = build_model("bpnn", elements=["H", "O"], n_members=4, seed=5)
    for key, p in small.weights.items():
        assert torch.equal(p, large.weights[key][:2])
    assert not torch.equal(large.weights["H_w0"][0], large.weights["H_w0"][1])


def _mixed_batch(committee):
    """Displaced ethanol, water and a lone H; a skin adds pairs and triples beyond the cutoffs."""
    frames = displaced(molecule("CH3CH2OH"), 2, 0.1, seed=8) + [molecule("H2O"), Atoms("H")]
    return committee.make_batch(frames, skin_A=0.5)


def test_analytic_descriptor_vjp_equals_autograd(random_committee) -> None:
    model = random_committee.model
    batch = _mixed_batch(random_committee)
    species = model.species_of(batch["numbers"])
    args = (species, batch["pairs"], batch["triples"])
    positions = batch["positions"].unsqueeze(0).requires_grad_(True)
    features = model.descriptor(positions, *args)
    generator = torch.Generator().manual_seed(0)
    cotangents = torch.randn((3, *features.shape[1:]), generator=generator, dtype=features.dtype)
    (expected,) = torch.autograd.grad(
        features, positions, grad_outputs=cotangents.unsqueeze(1), is_grads_batched=True
    )
    with torch.no_grad():
        raw, tape = model.descriptor.evaluate(positions.detach(), *args)
        actual = model.descriptor.vjp(tape, cotangents)
    torch.testing.assert_close(raw, features.detach(), rtol=0.0, atol=1e-12)
    torch.testing.assert_close(actual, expected[:, 0], rtol=1e-10, atol=1e-10)
    assert expected.abs().max() > 1.0  # not vacuous


def test_inference_training_and_mean_forces_agree(random_committee) -> None:
    """Analytic per-member forces (inference) = autograd forces (training graph); the
    one-backward committee mean = the mean of the members."""
    model = random_committee.model
    batch = _mixed_batch(random_committee)
    inference = model(batch)
    training = model(batch, create_graph=True)
    torch.testing.assert_close(inference["forces"], training["forces"].detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inference["energy"], training["energy"].detach(), rtol=0.0, atol=1e-10)
    energy, forces = random_committee.mean_energy_forces(batch)
    torch.testing.assert_close(energy, inference["energy"].mean(0), rtol=0.0, atol=1e-10)
    torch.testing.assert_close(forces, inference["forces"].mean(0), rtol=1e-10, atol=1e-10)


def test_painn_members_are_independent_of_committee_size_and_training_graph_agrees() -> None:
    small = build_model("painn", elements=["H", "O"], n_members=2, seed=5, features=8, interactions=2)
    large = build_model("painn", elements=["H", "O"], n_members=4, seed=5, features=8, interactions=2)
    for key, p in small.weights.items():
        assert torch.equal(p, large.weights[key][:2])
    assert not torch.equal(large.weights["msg0_w0"][0], large.weights["msg0_w0"][1])
    frames = displaced(molecule("H2O"), 3, 0.1, seed=2) + [Atoms("H")]
    batch = atoms_to_batch(frames, cutoff_A=5.0, angular_cutoff_A=0.0, skin_A=0.5)
    inference, training = large(batch), large(batch, create_graph=True)
    assert training["forces"].requires_grad and not inference["forces"].requires_grad
    torch.testing.assert_close(inference["forces"], training["forces"].detach(), rtol=0.0, atol=1e-12)
    mean = large.mean_energy_forces(batch)
    torch.testing.assert_close(mean["energy"], inference["energy"].mean(0), rtol=0.0, atol=1e-10)
    torch.testing.assert_close(mean["forces"], inference["forces"].mean(0), rtol=1e-10, atol=1e-10)
    # a member's energy depends on its own weights only
    (grad,) = torch.autograd.grad(large(batch, create_graph=True)["energy"][2].sum(),
                                  large.weights["out_b1"])
    assert grad[2].abs().sum() > 0 and grad[[0, 1, 3]].abs().sum() == 0
