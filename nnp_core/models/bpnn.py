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
from nnp_core.models.base import AtomicOutputs, StackedModule, element_numbers
from nnp_core.models.registry import EnergyBias, Setting, register_model

#: the angular symmetry functions' cutoff is min(cutoff_A, this), Å
MAX_ANGULAR_CUTOFF_A = 3.5


@register_model("bpnn")
class BehlerParrinello(StackedModule):
    """A committee-ready BPNN: parameters carry a leading axis of ``n_members``."""

    supports_dipole = True
    settings = {
        "cutoff_A": Setting(5.2, "radial cutoff of the symmetry functions, Å (angular: "
                            f"min(cutoff_A, {MAX_ANGULAR_CUTOFF_A}))", float, gt=0),
        "hidden_layers": Setting([64, 64], "hidden-layer widths of each element's network",
                                 list[int], ge=1, min_length=1),
    }

    @classmethod
    def hparams_from_settings(cls, *, cutoff_A: float, hidden_layers: Sequence[int]) -> dict[str, Any]:
        return {"hidden_layers": hidden_layers, "descriptor": {
            "cutoff_A": cutoff_A, "angular_cutoff_A": min(cutoff_A, MAX_ANGULAR_CUTOFF_A)}}

    def __init__(
        self,
        *,
        elements: Sequence[int | str],
        n_members: int = 1,
        seed: int = 0,
        descriptor: dict[str, Any] | DescriptorSpec | None = None,
        hidden_layers: Sequence[int] = (64, 64),
        dtype: str = "float64",
        dipole: bool = False,
    ) -> None:
        spec = descriptor if isinstance(descriptor, DescriptorSpec) else DescriptorSpec(**(descriptor or {}))
        n_el = len(element_numbers(elements))
        super().__init__(elements=elements, n_members=n_members, cutoff_A=spec.cutoff_A, dtype=dtype,
                         n_raw_features=spec.n_features(n_el), dipole=dipole)
        self.hidden_layers = tuple(int(h) for h in hidden_layers)
        self.descriptor = SymmetryFunctions(spec, n_el)
        sizes = [self.descriptor.n_features, *self.hidden_layers, 1]
        for symbol in self.element_symbols:
            for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                self.weights[f"{symbol}_w{layer}"] = torch.nn.Parameter(torch.empty(n_members, n_in, n_out))
                self.weights[f"{symbol}_b{layer}"] = torch.nn.Parameter(torch.zeros(n_members, 1, n_out))
            if self.dipole_head:  # a charge from the last hidden layer; starts at zero
                self.weights[f"{symbol}_dipole_w"] = torch.nn.Parameter(torch.zeros(n_members, sizes[-2], 1))
                self.weights[f"{symbol}_dipole_b"] = torch.nn.Parameter(torch.zeros(n_members, 1, 1))
        self.initialise_members(seed)

    # ------------------------------------------------------------------ set-up
    @property
    def neighbour_cutoffs(self) -> tuple[float, float]:
        return self.descriptor.spec.cutoff_A, self.descriptor.spec.angular_cutoff_A

    @property
    def n_layers(self) -> int:
        return len(self.hidden_layers) + 1

    def initialise_member(self, member: int, seed: int) -> None:
        """LeCun-normal weights, zero biases, element by element, layer by layer (the
        dipole head stays zero: it starts as the fixed-charge model)."""
        order = [f"{symbol}_{kind}{layer}" for symbol in self.element_symbols
                 for layer in range(self.n_layers) for kind in ("w", "b")]
        self.initialise_lecun(member, seed, order)

    def hparams(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without n_members and seed)."""
        return {
            "elements": [int(z) for z in self.elements],
            "descriptor": self.descriptor.spec.to_dict(),
            "hidden_layers": list(self.hidden_layers),
            "dtype": self.dtype_name,
            **({"dipole": True} if self.dipole_head else {}),
        }

    # ------------------------------------------------------------------ forward
    def raw_features(self, batch: Batch, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Unstandardised descriptors (n, F) of the batch, or (M', n, F) for ``positions``
        (M', n, 3)."""
        species = self.species_of(batch["numbers"])
        pos = self.positions(batch) if positions is None else positions
        raw = self.descriptor(pos, species, batch["pairs"], batch["triples"])
        return raw[0] if positions is None else raw

    def _element_networks(
        self, features: torch.Tensor, species: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-element MLPs, all members at once: (M' in {1, M}, n, F) -> outputs (M, n),
        and with a dipole head the latent charges (M, n) read from the last hidden layer.

        Atoms are grouped by element with one gather (sorted by species) and split into
        contiguous blocks, rather than gathered and scattered once per element.
        """
        order = torch.argsort(species, stable=True)
        counts = torch.bincount(species, minlength=len(self.element_symbols)).tolist()
        blocks = features.index_select(1, order).expand(self.n_members, -1, -1).split(counts, dim=1)
        outputs, charges = [], []
        for symbol, h in zip(self.element_symbols, blocks):
            for layer in range(self.n_layers):
                if layer == self.n_layers - 1 and self.dipole_head:
                    q = torch.baddbmm(self.weights[f"{symbol}_dipole_b"], h, self.weights[f"{symbol}_dipole_w"])
                    charges.append(q.squeeze(-1))
                h = torch.baddbmm(self.weights[f"{symbol}_b{layer}"], h, self.weights[f"{symbol}_w{layer}"])
                if layer < self.n_layers - 1:
                    h = torch.nn.functional.silu(h)
            outputs.append(h.squeeze(-1))
        back = torch.argsort(order)
        energy = torch.cat(outputs, dim=1).index_select(1, back)
        return energy, torch.cat(charges, dim=1).index_select(1, back) if charges else None

    def atomic_outputs(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return self.atomic_properties(batch, positions, species).energy

    def atomic_properties(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> AtomicOutputs:
        features = self.standardise(self.raw_features(batch, positions), species)
        return AtomicOutputs(*self._element_networks(features, species))

    def energies_from_features(
        self, batch: Batch, features: torch.Tensor, species: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Atomic energies (M, n) and frame energies (M, B), eV, from standardised
        descriptors (1 or M, n, F)."""
        atomic = self.energies_from_outputs(self._element_networks(features, species)[0], species)
        return atomic, self.frame_energies(atomic, batch)

    def _from_features(
        self, batch: Batch, features: torch.Tensor, species: torch.Tensor, positions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``atomic_energies`` (M, n), ``energy`` (M, B) and with a dipole head ``dipole``
        (M, B, 3) from standardised descriptors (1 or M, n, F) at ``positions``."""
        outputs = AtomicOutputs(*self._element_networks(features, species))
        atomic = self.energies_from_outputs(outputs.energy, species)
        result = {"atomic_energies": atomic, "energy": self.frame_energies(atomic, batch)}
        if self.dipole_head:
            result["dipole"] = self.frame_dipoles(outputs, species, batch, positions)
        return result

    def forward(
        self, batch: Batch, *, compute_forces: bool = True, create_graph: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energies (M, B) in eV and, if asked, forces (M, n, 3) in eV/Å for every member.

        The descriptors are computed once for all members. For inference each member's
        forces are the descriptors' analytic vector-Jacobian product with that member's
        dE/dG, all members at once (:meth:`SymmetryFunctions.vjp`). ``create_graph=True``
        (training) takes the same product by autograd instead and keeps the graph, so a
        loss on forces can be differentiated with respect to the weights. (Training
        through the analytic product, with each frame's derivative tape kept between
        epochs, gave the same committee but was not faster: 0.81x at M = 1, 0.94x at
        M = 4 in ``bench.training_speed``, which keeps that path.)
        """
        if compute_forces and not create_graph:
            return self._analytic_forces(batch, mean=False)
        species = self.species_of(batch["numbers"])
        positions = self.positions(batch, 1, compute_forces)
        with torch.enable_grad() if compute_forces else torch.no_grad():
            features = self.standardise(self.raw_features(batch, positions), species)  # (1, n, F)
            stacked = features.expand(self.n_members, -1, -1)
            result = self._from_features(batch, stacked, species, positions)
            if compute_forces:
                (cotangent,) = torch.autograd.grad(result["energy"].sum(), stacked, create_graph=True)
                (grad,) = torch.autograd.grad(
                    features, positions, grad_outputs=cotangent.unsqueeze(1),
                    is_grads_batched=True, create_graph=True,
                )
                result["forces"] = -grad[:, 0]
        return result

    def mean_energy_forces(self, batch: Batch, energy_bias: EnergyBias | None = None) -> dict[str, torch.Tensor]:
        """Committee-mean energy (B,) in eV and mean forces (n, 3) in eV/Å.

        The descriptors' vector-Jacobian product is taken once, with the members' dE/dG
        averaged, instead of once per member (what MD needs between scoring steps). With a
        dipole head every member's dipole (M, B, 3) comes along. ``energy_bias``: as in
        :meth:`StackedModule.mean_energy_forces` (forces of mean + bias, ``bias_energy``).
        """
        result = self._analytic_forces(batch, mean=True, energy_bias=energy_bias)
        result["energy"], result["forces"] = result["energy"].mean(dim=0), result["forces"][0]
        del result["atomic_energies"]
        return result

    def _analytic_forces(self, batch: Batch, *, mean: bool,
                         energy_bias: EnergyBias | None = None) -> dict[str, torch.Tensor]:
        """Atomic energies (M, n), energies (M, B), dipoles (M, B, 3) with a dipole head,
        and forces, detached: (M, n, 3) per member, or (1, n, 3) of the mean energy with
        ``mean``. Autograd runs through the MLPs only; the descriptors' derivatives are
        analytic."""
        species = self.species_of(batch["numbers"])
        positions = self.positions(batch)
        with torch.no_grad():
            raw, tape = self.descriptor.evaluate(positions, species, batch["pairs"], batch["triples"])
            features = self.standardise(raw, species)
        with torch.enable_grad():
            features.requires_grad_(True)
            inputs = features if mean else features.expand(self.n_members, -1, -1)
            result = self._from_features(batch, inputs, species, positions)
            target = (result["energy"].mean(dim=0) if mean else result["energy"]).sum()
            if energy_bias is not None:
                result["bias_energy"] = energy_bias(result["energy"])
                target = target + result["bias_energy"].sum()
            (cotangent,) = torch.autograd.grad(target, inputs)
        with torch.no_grad():
            grad = self.descriptor.vjp(tape, cotangent / self.feature_std[species])  # type: ignore[arg-type]
        result = {key: value.detach() for key, value in result.items()}
        result["forces"] = -grad
        return result
