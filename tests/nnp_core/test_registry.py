"""An architecture registered from outside nnp_core works everywhere without special cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnp_core.committee import Committee, load_committee
from nnp_core.models import (
    architecture_hparams,
    architecture_names,
    architecture_settings,
    build_model,
)
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee

from ..toy_architecture import registered_toy


@pytest.fixture()
def toy():
    with registered_toy() as cls:
        yield cls


def test_registry_lists_architectures_and_their_settings(toy) -> None:
    assert architecture_names()[:4] == ["bpnn", "mace", "mace-shallow", "painn"] and "toy" in architecture_names()
    assert set(architecture_settings("bpnn")) == {"cutoff_A", "hidden_layers"}
    assert architecture_hparams("toy", {"width": 3}) == {"cutoff_A": 3.0, "width": 3}
    assert architecture_hparams("bpnn", {"cutoff_A": 4.0}) == {
        "hidden_layers": [64, 64], "descriptor": {"cutoff_A": 4.0, "angular_cutoff_A": 3.5}}
    with pytest.raises(ValueError, match=r"'toy' has no setting\(s\) \['hidden_layers'\]"):
        architecture_hparams("toy", {"hidden_layers": [8]})
    with pytest.raises(ValueError, match="unknown model architecture 'schnet'"):
        architecture_settings("schnet")


def test_a_toy_architecture_predicts_with_autograd_forces(toy, ethanol_emt_frames) -> None:
    committee = Committee.create("toy", n_members=3, seed=1, elements=["H", "C", "O"], width=5)
    committee.model.energy_scale.fill_(0.5)
    frames = ethanol_emt_frames[:2]
    prediction = committee.predict(frames)
    n = sum(len(a) for a in frames)
    assert prediction.member_energies.shape == (3, 2) and prediction.member_forces.shape == (3, n, 3)
    assert np.ptp(prediction.member_energies, axis=0).max() > 0  # members differ
    # forces are -dE/dx: a central difference on one coordinate of the first frame
    atoms, step = frames[0].copy(), 1e-5
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[2, 1] += sign * step
        energies.append(committee.predict(moved).member_energies[:, 0])
    np.testing.assert_allclose(-(energies[0] - energies[1]) / (2 * step), prediction.member_forces[:, 2, 1],
                               atol=1e-6)
    batch = committee.make_batch(frames)
    energy, forces = committee.mean_energy_forces(batch)
    np.testing.assert_allclose(energy.numpy(), prediction.energy_mean, atol=1e-10)
    np.testing.assert_allclose(forces.numpy(), prediction.forces_mean, atol=1e-10)
    assert committee.fingerprints(frames).shape == (2, 3 * 2)


def test_a_toy_architecture_trains_saves_and_loads(toy, ethanol_emt_frames, tmp_path) -> None:
    config = TrainConfig(max_epochs=1, batch_size_frames=8, seed=0)
    committee, report = train_committee(ethanol_emt_frames, config, n_members=2, architecture="toy",
                                        model_hparams=architecture_hparams("toy", {"width": 3}))
    assert committee.architecture == "toy" and len(report.members) == 2 and report.history
    assert np.isfinite(report.val_force_mae_eV_A)
    assert float(committee.model.energy_scale) != 1.0  # fit_normalisation reached it
    loaded = load_committee(committee.save(tmp_path / "toy"))
    np.testing.assert_array_equal(loaded.predict(ethanol_emt_frames[:2]).member_forces,
                                  committee.predict(ethanol_emt_frames[:2]).member_forces)
    alone = Committee.stack([committee.member(1), committee.member(0)])
    torch.testing.assert_close(alone.model.weights["w0"], committee.model.weights["w0"].flip(0))


def test_unregistered_toy_is_unknown(ethanol_emt_frames) -> None:
    with pytest.raises(ValueError, match="unknown model architecture 'toy'"):
        build_model("toy", elements=["H"])
