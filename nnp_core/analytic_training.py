"""Force training without differentiating through the descriptors.

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
(tested). Memory: one descriptor evaluation's tape per training frame.

Measured (``bench.training_speed``, ethanol, CPU): not faster than autograd here
(0.81x at M=1, 0.94x at M=4): the small per-frame products cost what the double
backward saves. Hence ``TrainConfig.analytic_forces`` is off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nnp_core.batch import Batch


def supports(model: torch.nn.Module) -> bool:
    """Whether the model's descriptors have an analytic product (the BPNN's do)."""
    descriptor = getattr(model, "descriptor", None)
    return (hasattr(descriptor, "evaluate") and hasattr(descriptor, "vjp")
            and hasattr(model, "_member_energies") and hasattr(model, "species_of"))


class TapedFrames:
    """Raw descriptors (n_f, F), species and derivative tapes of each frame's batch."""

    def __init__(self, model: torch.nn.Module, frame_batches: Sequence[Batch]) -> None:
        self.raw: list[torch.Tensor] = []
        self.species: list[torch.Tensor] = []
        self.tapes: list = []
        dtype = model.feature_mean.dtype
        with torch.no_grad():
            for batch in frame_batches:
                species = model.species_of(batch["numbers"])
                raw, tape = model.descriptor.evaluate(batch["positions"].to(dtype).unsqueeze(0), species,
                                                      batch["pairs"], batch["triples"])
                self.raw.append(raw[0])
                self.species.append(species)
                self.tapes.append(tape)

    def outputs(self, model: torch.nn.Module, batch: Batch, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Energies (M, B) and forces (M, n, 3) of frames ``indices`` (collated, in
        that order, in ``batch``), differentiable with respect to the weights."""
        species = torch.cat([self.species[i] for i in indices])
        std = model.feature_std[species]
        raw = torch.cat([self.raw[i] for i in indices])
        features = ((raw - model.feature_mean[species]) / std).expand(model.n_members, -1, -1)
        features = features.detach().requires_grad_(True)
        _, energy = model._member_energies(batch, features, species)
        (cotangent,) = torch.autograd.grad(energy.sum(), features, create_graph=True)
        cotangent = cotangent / std  # dE/dG_raw
        forces, start = [], 0
        for i in indices:
            n = self.raw[i].shape[0]
            forces.append(-model.descriptor.vjp(self.tapes[i], cotangent[:, start:start + n]))
            start += n
        return {"energy": energy, "forces": torch.cat(forces, dim=1)}
