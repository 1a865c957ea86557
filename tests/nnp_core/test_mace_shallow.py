"""The shallow MACE ensemble (``architecture = "mace-shallow"``): one mace-torch
backbone, M readout heads. Each member is a complete MACE (physics, export), the
members together equal each member alone, the MD pass runs the backbone once, and the
members train as one model."""

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
    model = build_model("mace-shallow", n_members=3, seed=1, elements=[1, 6, 8], **SMALL)
    model.energy_scale.fill_(0.7)
    return Committee(model)


def _ethanol(seed: int = 0):
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(seed).normal(0, 0.05, atoms.positions.shape)
    return atoms


def _backbone_and_heads(model) -> tuple[dict, dict]:
    heads = {k: v for k, v in model.weights.items() if k.startswith(("readouts", "dipole_"))}
    backbone = {k: v for k, v in model.weights.items() if k not in heads}
    return backbone, heads


def test_one_backbone_and_a_head_per_member(committee) -> None:
    backbone, heads = _backbone_and_heads(committee.model)
    assert backbone and heads
    assert all(w.shape[0] == 1 for w in backbone.values())
    assert all(w.shape[0] == 3 for w in heads.values())
    energies = committee.predict([_ethanol()]).member_energies[:, 0]
    assert len(set(np.round(energies, 8))) == 3, "heads start from their own random weights"


def test_forces_are_the_negative_gradient_of_each_members_energy(committee) -> None:
    atoms = _ethanol()
    assert_member_forces_are_the_negative_gradient(committee, atoms, ((0, 0), (4, 1), (8, 2)))


def test_energies_are_invariant_and_forces_equivariant(committee) -> None:
    atoms = _ethanol(1)
    reference = committee.predict([atoms])
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.array([1.5, -2.0, 0.3])
    order = np.random.default_rng(4).permutation(len(atoms))
    prediction = committee.predict([moved[order]])
    np.testing.assert_allclose(prediction.member_energies, reference.member_energies, atol=1e-9)
    np.testing.assert_allclose(prediction.member_forces, (reference.member_forces @ rotation.T)[:, order], atol=1e-9)


def test_members_together_equal_each_member_alone(committee) -> None:
    """The one-backbone pass equals running each member's full MACE (backbone + its
    head) on its own, through select, stack and a checkpoint."""
    frames = [_ethanol(2), molecule("H2O")]
    together = committee.predict(frames)
    for member in range(3):
        alone = Committee(committee.model.select_members([member])).predict(frames)
        np.testing.assert_allclose(alone.member_energies[0], together.member_energies[member], atol=1e-10)
        np.testing.assert_allclose(alone.member_forces[0], together.member_forces[member], atol=1e-10)
    model = committee.model
    restacked = type(model).stack([model.select_members([2]), model.select_members([0, 1])])
    np.testing.assert_allclose(Committee(restacked).predict(frames).member_forces,
                               together.member_forces[[2, 0, 1]], atol=1e-10)
    # positions copied per member (what a Hessian asks for) give the same energies
    batch = committee.make_batch(frames)
    species = model.species_of(batch["numbers"])
    copies = model.atomic_properties(batch, model.positions(batch, 3), species).energy
    shared = model.atomic_properties(batch, model.positions(batch, 1), species).energy
    torch.testing.assert_close(copies, shared, atol=1e-12, rtol=0)


def test_checkpoints_keep_the_members_and_refuse_two_backbones(committee, tmp_path) -> None:
    frames = [_ethanol(3)]
    loaded = load_committee(committee.save(tmp_path / "c"))
    assert loaded.architecture == "mace-shallow" and loaded.model.hparams() == committee.model.hparams()
    np.testing.assert_allclose(loaded.predict(frames).member_forces, committee.predict(frames).member_forces,
                               atol=1e-12)
    other = build_model("mace-shallow", n_members=2, seed=2, elements=[1, 6, 8], **SMALL)
    other.load_state_dict({k: v for k, v in committee.model.state_dict().items() if "readouts" not in k},
                          strict=False)  # the same buffers, heads of its own: stackable
    Committee.stack([committee, Committee(other)])
    other.weights["node_embedding__linear__weight"].data.add_(0.1)
    with pytest.raises(ValueError, match="share the weights"):
        Committee.stack([committee, Committee(other)])


def test_the_md_pass_runs_the_backbone_once(committee, monkeypatch) -> None:
    """What the shallow ensemble is for: the committee-mean forces between scoring steps
    cost one MACE pass, not one per member, and equal the mean of the members' forces."""
    frames = [_ethanol(4), _ethanol(5)]
    batch = committee.make_batch(frames)
    template = committee.model.__dict__["_template"]
    calls = []
    real = type(template).forward
    monkeypatch.setattr(type(template), "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    energy, forces = committee.mean_energy_forces(batch)
    assert len(calls) == 1
    full = committee.evaluate(batch)
    assert len(calls) == 2, "every member's forces: still one backbone pass"
    torch.testing.assert_close(forces, full["forces"].mean(0), atol=1e-10, rtol=0)
    torch.testing.assert_close(energy, full["energy"].mean(0), atol=1e-10, rtol=0)


def test_a_float32_copy_keeps_every_members_forces(committee) -> None:
    frames = [_ethanol(6)]
    single = committee.astype("float32")
    exact, rounded = committee.predict(frames), single.predict(frames)
    scale = np.abs(exact.member_forces).max()
    np.testing.assert_allclose(rounded.member_forces, exact.member_forces, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def trained(water_frames):
    config = TrainConfig(max_epochs=15, batch_size_frames=8, learning_rate=1e-2, early_stopping_patience_epochs=30,
                         ema_decay=0.9)
    small = dict(SMALL, num_interactions=1)
    return train_committee(water_frames[:40], config, n_members=3, architecture="mace-shallow", model_hparams=small)


def test_members_train_as_one_model_and_learn_the_labels(trained, water_frames) -> None:
    committee, report = trained
    assert len({m.best_epoch for m in report.members}) == 1, "one early stop for all members"
    assert len({m.val_force_mae_eV_A for m in report.members}) == 3, "one validation split, three heads"
    backbone, heads = _backbone_and_heads(committee.model)
    assert all(w.shape[0] == 1 for w in backbone.values()) and all(w.shape[0] == 3 for w in heads.values())
    test = water_frames[40:]
    prediction = committee.predict(test)
    reference = np.concatenate([a.get_forces() for a in test])
    errors = np.abs(prediction.forces_mean - reference).mean()
    assert errors < 0.5 * np.abs(reference).mean(), errors
    assert np.all(prediction.max_force_dev > 0)
    # a warm start continues from the trained backbone and heads
    warm, _ = train_committee(water_frames[:44], TrainConfig(max_epochs=2), initial=committee)
    assert warm.architecture == "mace-shallow" and warm.n_members == 3


def test_a_member_exported_as_a_mace_model_gives_its_energies_and_forces(trained, tmp_path) -> None:
    from mace.calculators import MACECalculator

    from nnp_core.models.mace import write_mace_models

    committee, _ = trained
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(5).normal(0, 0.05, atoms.positions.shape)
    prediction = committee.predict([atoms])
    paths = write_mace_models(committee.model, tmp_path / "models")
    for member, path in enumerate(paths):
        atoms.calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
        assert atoms.get_potential_energy() == pytest.approx(prediction.member_energies[member, 0], abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), prediction.member_forces[member], atol=1e-5)
