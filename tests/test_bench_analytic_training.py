"""The analytic-product force training that bench.training_speed compares with autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import training_speed
from bench._analytic_training import TapedFrames, train_committee_analytic
from nnp_core.committee import Committee
from nnp_core.train_config import TrainConfig
from nnp_core.training import LabelledSet, fit_normalisation, train_committee


@pytest.fixture(scope="module")
def frames() -> list:
    return training_speed.ethanol_frames(24)


def test_analytic_force_training_equals_autograd(frames) -> None:
    """The analytic-product path gives the autograd path's energies, forces and weight
    gradients, so training with it gives the same committee."""
    committee = Committee.create("bpnn", n_members=3, seed=2, elements=["H", "C", "O"], hidden_layers=[16, 16])
    model = committee.model
    data = LabelledSet.from_frames(frames, model)
    fit_normalisation(model, data)
    batch, _, _ = data.collate([0, 3, 7])
    fast = TapedFrames(model, data.frame_batches).outputs(model, batch, [0, 3, 7])
    slow = model(batch, compute_forces=True, create_graph=True)
    torch.testing.assert_close(fast["energy"], slow["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(fast["forces"], slow["forces"], rtol=0, atol=1e-10)
    params = list(model.parameters())
    grads_fast = torch.autograd.grad(fast["forces"].pow(2).sum() + fast["energy"].sum(), params)
    grads_slow = torch.autograd.grad(slow["forces"].pow(2).sum() + slow["energy"].sum(), params)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    config = TrainConfig(max_epochs=4, seed=1, batch_size_frames=8)
    with_product = train_committee_analytic(frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    with_autograd, _ = train_committee(frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    assert "forward" not in vars(with_product.model)  # the training-time forward is gone
    np.testing.assert_allclose(with_product.predict(frames[:3]).member_forces,
                               with_autograd.predict(frames[:3]).member_forces, atol=1e-8)
