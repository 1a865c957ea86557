"""Force training without differentiating through the descriptors (BPNN only), kept for
``bench.training_speed``; ``nnp_core`` trains by autograd only.

A loss on forces needs the gradient, with respect to the weights, of
F_j^m = -sum_i (dE^m/dG_i) . dG_i/dr_j. Autograd gets it by a double backward through
the descriptors (the expensive angular terms included) on every step. But training
frames never move: their descriptors G and the derivative "tape" of
:meth:`SymmetryFunctions.evaluate` are the same in every epoch, and the descriptors'
vector-Jacobian product (:meth:`SymmetryFunctions.vjp`) is linear in its cotangent.
So :class:`TapedFrames` evaluates each frame's descriptors once, and a training step
runs only the networks (with a graph) and the analytic product applied to dE/dG with
the graph kept: autograd then differentiates networks and linear index operations.
Energies, forces and the loss's weight gradients equal the autograd path's to rounding
(tests/test_bench_analytic_training.py). Memory: one descriptor evaluation's tape per
training frame.

Measured (``bench.training_speed``, ethanol, CPU): not faster than autograd
(0.81x at M=1, 0.94x at M=4): the small per-frame products cost what the double
backward saves. Hence it left ``nnp_core``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from ase import Atoms

from nnp_core.batch import Batch
from nnp_core.committee import Committee
from nnp_core.models import BehlerParrinello, build_model
from nnp_core.train_config import TrainConfig
from nnp_core.training import LabelledSet, fit_normalisation, train_members


class TapedFrames:
    """Raw descriptors (n_f, F), species and derivative tapes of each frame's batch."""

    def __init__(self, model: BehlerParrinello, frame_batches: Sequence[Batch]) -> None:
        self.raw: list[torch.Tensor] = []
        self.species: list[torch.Tensor] = []
        self.tapes: list = []
        with torch.no_grad():
            for batch in frame_batches:
                species = model.species_of(batch["numbers"])
                raw, tape = model.descriptor.evaluate(model.positions(batch), species,
                                                      batch["pairs"], batch["triples"])
                self.raw.append(raw[0])
                self.species.append(species)
                self.tapes.append(tape)

    def outputs(self, model: BehlerParrinello, batch: Batch, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Energies (M, B) and forces (M, n, 3) of frames ``indices`` (collated, in
        that order, in ``batch``), differentiable with respect to the weights."""
        species = torch.cat([self.species[i] for i in indices])
        raw = torch.cat([self.raw[i] for i in indices])
        features = model.standardise(raw, species).expand(model.n_members, -1, -1)
        features = features.detach().requires_grad_(True)
        _, energy = model.energies_from_features(batch, features, species)
        (cotangent,) = torch.autograd.grad(energy.sum(), features, create_graph=True)
        cotangent = cotangent / model.feature_std[species]  # dE/dG_raw
        forces, start = [], 0
        for i in indices:
            n = self.raw[i].shape[0]
            forces.append(-model.descriptor.vjp(self.tapes[i], cotangent[:, start:start + n]))
            start += n
        return {"energy": energy, "forces": torch.cat(forces, dim=1)}


@dataclass
class _TapedSet(LabelledSet):
    """A LabelledSet that remembers which frames it collated last."""

    last: list[int] = field(default_factory=list)

    def collate(self, indices: Sequence[int]) -> tuple[Batch, torch.Tensor, torch.Tensor]:
        self.last = list(indices)
        return super().collate(indices)


def train_committee_analytic(
    frames: Sequence[Atoms], config: TrainConfig, *, n_members: int, model_hparams: dict[str, Any]
) -> Committee:
    """``nnp_core.training.train_committee`` for a new BPNN, with the training steps'
    forces from :class:`TapedFrames` (validation and reports as usual)."""
    frames = list(frames)
    hparams = {"elements": sorted({int(z) for a in frames for z in a.numbers}), "dtype": config.dtype,
               **model_hparams}
    model = build_model("bpnn", n_members=n_members, seed=config.seed, **hparams)
    data = _TapedSet.from_frames(frames, model)
    fit_normalisation(model, data)
    taped = TapedFrames(model, data.frame_batches)
    autograd_forward = model.forward

    def forward(batch: Batch, *, compute_forces: bool = True, create_graph: bool = False) -> dict:
        if create_graph:
            return taped.outputs(model, batch, data.last)
        return autograd_forward(batch, compute_forces=compute_forces, create_graph=create_graph)

    model.forward = forward  # nn.Module.__call__ looks the instance's forward up
    try:
        train_members(model, data, config)
    finally:
        del model.forward
    return Committee(model)
