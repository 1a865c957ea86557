"""Behler-Parrinello high-dimensional NNP with ANI-style symmetry functions.

E = sum_i [ E0(Z_i) + s * NN_{Z_i}( (G_i - mu_{Z_i}) / sigma_{Z_i} ) ]
with one MLP per element, per-element reference energies E0 (least squares on the
training set), a feature standardisation (mu, sigma per element) and an energy scale s.
Forces are -dE/dr by autograd. All ``n_members`` members share the descriptors'
hyperparameters and normalisation, and differ in their MLP weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nnp_core.batch import Batch
from nnp_core.descriptors import DescriptorSpec, SymmetryFunctions
from nnp_core.models.base import DTYPES, StackedModule
from nnp_core.models.registry import member_generator, register_model

@register_model("bpnn")
class BehlerParrinello(StackedModule):
    """A committee-ready BPNN: parameters carry a leading axis of ``n_members``."""

    architecture = "bpnn"

    def __init__(
        self,
        *,
        elements: Sequence[int | str],
        n_members: int = 1,
        seed: int = 0,
        descriptor: dict[str, Any] | DescriptorSpec | None = None,
        hidden_layers: Sequence[int] = (64, 64),
        dtype: str = "float64",
    ) -> None:
        super().__init__()
        spec = descriptor if isinstance(descriptor, DescriptorSpec) else DescriptorSpec(**(descriptor or {}))
        numbers = self._init_common(elements, n_members, spec.cutoff_A, dtype)
        self.hidden_layers = tuple(int(h) for h in hidden_layers)
        self.descriptor = SymmetryFunctions(spec, len(numbers))
        n_el, n_feat = len(numbers), self.descriptor.n_features
        self.register_buffer("feature_mean", torch.zeros(n_el, n_feat))
        self.register_buffer("feature_std", torch.ones(n_el, n_feat))
        sizes = [n_feat, *self.hidden_layers, 1]
        for symbol in self.element_symbols:
            for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                self.weights[f"{symbol}_w{layer}"] = torch.nn.Parameter(torch.empty(n_members, n_in, n_out))
                self.weights[f"{symbol}_b{layer}"] = torch.nn.Parameter(torch.zeros(n_members, 1, n_out))
        self.to(DTYPES[dtype])
        for member in range(n_members):
            self.initialise_member(member, seed)

    # ------------------------------------------------------------------ set-up
    @property
    def neighbour_cutoffs(self) -> tuple[float, float]:
        return self.descriptor.spec.cutoff_A, self.descriptor.spec.angular_cutoff_A

    @property
    def n_layers(self) -> int:
        return len(self.hidden_layers) + 1

    def initialise_member(self, member: int, seed: int) -> None:
        """LeCun-normal weights, zero biases, from the member's own random stream."""
        generator = member_generator(seed, member)
        with torch.no_grad():
            for symbol in self.element_symbols:
                for layer in range(self.n_layers):
                    w = self.weights[f"{symbol}_w{layer}"]
                    fan_in = w.shape[1]
                    sample = torch.randn(w.shape[1:], generator=generator, dtype=torch.float64)
                    w[member] = (sample / fan_in**0.5).to(w.dtype)
                    self.weights[f"{symbol}_b{layer}"][member] = 0.0

    def hparams(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without n_members and seed)."""
        return {
            "elements": [int(z) for z in self.elements],
            "descriptor": self.descriptor.spec.to_dict(),
            "hidden_layers": list(self.hidden_layers),
            "dtype": self.dtype_name,
        }

    # ------------------------------------------------------------------ forward
    def features(self, batch: Batch, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised descriptors (M', n, F) for positions (M', n, 3) (default: the batch's)."""
        species = self.species_of(batch["numbers"])
        if positions is None:
            positions = batch["positions"].to(self.feature_mean.dtype).unsqueeze(0)
        raw = self.descriptor(positions, species, batch["pairs"], batch["triples"])
        return (raw - self.feature_mean[species]) / self.feature_std[species]

    def raw_features(self, batch: Batch) -> torch.Tensor:
        """Unstandardised descriptors (n, F) of the batch (for fitting the normalisation)."""
        species = self.species_of(batch["numbers"])
        pos = batch["positions"].to(self.feature_mean.dtype).unsqueeze(0)
        return self.descriptor(pos, species, batch["pairs"], batch["triples"])[0]

    def _atomic_outputs(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-element MLPs, all members at once: (M' in {1, M}, n, F) -> (M, n).

        Atoms are grouped by element with one gather (sorted by species) and split into
        contiguous blocks, rather than gathered and scattered once per element.
        """
        order = torch.argsort(species, stable=True)
        counts = torch.bincount(species, minlength=len(self.element_symbols)).tolist()
        blocks = features.index_select(1, order).expand(self.n_members, -1, -1).split(counts, dim=1)
        outputs = []
        for symbol, h in zip(self.element_symbols, blocks):
            for layer in range(self.n_layers):
                h = torch.baddbmm(self.weights[f"{symbol}_b{layer}"], h, self.weights[f"{symbol}_w{layer}"])
                if layer < self.n_layers - 1:
                    h = torch.nn.functional.silu(h)
            outputs.append(h.squeeze(-1))
        return torch.cat(outputs, dim=1).index_select(1, torch.argsort(order))

    def _member_energies(
        self, batch: Batch, features: torch.Tensor, species: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Atomic energies (M, n) and frame energies (M, B), eV, from features (1 or M, n, F)."""
        atomic = self.atom_ref_energy[species] + self.energy_scale * self._atomic_outputs(features, species)
        n_frames = batch["n_atoms"].shape[0]
        energy = atomic.new_zeros(self.n_members, n_frames).index_add(1, batch["frame"], atomic)
        return atomic, energy

    def _positions(self, batch: Batch, requires_grad: bool) -> torch.Tensor:
        """The batch's positions (1, n, 3) in the model's dtype, detached (a new leaf)."""
        positions = batch["positions"].to(self.feature_mean.dtype).detach().unsqueeze(0)
        return positions.requires_grad_(requires_grad)

    def forward(
        self, batch: Batch, *, compute_forces: bool = True, create_graph: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energies (M, B) in eV and, if asked, forces (M, n, 3) in eV/Å for every member.

        The descriptors are computed once for all members. For inference each member's
        forces are the descriptors' analytic vector-Jacobian product with that member's
        dE/dG, all members at once (:meth:`SymmetryFunctions.vjp`). ``create_graph=True``
        (training) takes the same product by autograd instead and keeps the graph, so a
        loss on forces can be differentiated with respect to the weights.
        """
        if compute_forces and not create_graph:
            atomic, energy, forces = self._analytic_forces(batch, mean=False)
            return {"energy": energy, "atomic_energies": atomic, "forces": forces}
        species = self.species_of(batch["numbers"])
        positions = self._positions(batch, compute_forces)
        with torch.enable_grad() if compute_forces else torch.no_grad():
            features = self.features(batch, positions)  # (1, n, F)
            stacked = features.expand(self.n_members, -1, -1)
            atomic, energy = self._member_energies(batch, stacked, species)
            result = {"energy": energy, "atomic_energies": atomic}
            if compute_forces:
                (cotangent,) = torch.autograd.grad(energy.sum(), stacked, create_graph=True)
                (grad,) = torch.autograd.grad(
                    features, positions, grad_outputs=cotangent.unsqueeze(1),
                    is_grads_batched=True, create_graph=True,
                )
                result["forces"] = -grad[:, 0]
        return result

    def mean_energy_forces(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Committee-mean energy (B,) in eV and mean forces (n, 3) in eV/Å.

        The descriptors' vector-Jacobian product is taken once, with the members' dE/dG
        averaged, instead of once per member (what MD needs between scoring steps).
        """
        _, energy, forces = self._analytic_forces(batch, mean=True)
        return {"energy": energy.mean(dim=0), "forces": forces[0]}

    def _analytic_forces(
        self, batch: Batch, *, mean: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atomic energies (M, n), energies (M, B) and forces, detached: (M, n, 3) per
        member, or (1, n, 3) of the mean energy with ``mean``. Autograd runs through the
        MLPs only; the descriptors' derivatives are analytic."""
        species = self.species_of(batch["numbers"])
        with torch.no_grad():
            raw, tape = self.descriptor.evaluate(
                self._positions(batch, False), species, batch["pairs"], batch["triples"]
            )
            features = (raw - self.feature_mean[species]) / self.feature_std[species]
        with torch.enable_grad():
            features.requires_grad_(True)
            inputs = features if mean else features.expand(self.n_members, -1, -1)
            atomic, energy = self._member_energies(batch, inputs, species)
            target = energy.mean(dim=0) if mean else energy
            (cotangent,) = torch.autograd.grad(target.sum(), inputs)
        with torch.no_grad():
            grad = self.descriptor.vjp(tape, cotangent / self.feature_std[species])  # type: ignore[arg-type]
        return atomic.detach(), energy.detach(), -grad

    def fingerprints(self, batch: Batch) -> torch.Tensor:
        """Per-frame fingerprints (B, n_elements * F): the mean standardised descriptor of
        each element's atoms in the frame (zeros for an absent element)."""
        with torch.no_grad():
            species = self.species_of(batch["numbers"])
            features = self.features(batch)[0]
            n_frames, n_el = batch["n_atoms"].shape[0], len(self.element_symbols)
            key = batch["frame"] * n_el + species
            sums = features.new_zeros(n_frames * n_el, features.shape[1]).index_add(0, key, features)
            counts = torch.bincount(key, minlength=n_frames * n_el).clamp(min=1).to(features.dtype)
            return (sums / counts[:, None]).reshape(n_frames, -1)
