"""What every stacked architecture shares: a member axis on its parameters, element
bookkeeping, per-element reference energies and an energy scale, feature
standardisation and fingerprints, LeCun initialisation, energies summed per frame and
forces by autograd.

Subclasses keep *all* their trainable parameters in ``self.weights`` (a ParameterDict
whose tensors have the member axis first), so that members can be selected, stacked and
checkpointed one at a time without knowing the architecture. What a subclass must add
is listed in :class:`nnp_core.models.registry.StackedModel`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, NamedTuple

import torch
from ase.data import chemical_symbols

from nnp_core.batch import Batch
from nnp_core.descriptors import radial_basis
from nnp_core.models.registry import EnergyBias, Setting, member_generator

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: the latent charges' scale s_q (e) before training fits it: q = q0(Z) + s_q * output
DEFAULT_CHARGE_SCALE_E = 0.1

#: set while a model is built only to receive parameters (selecting, stacking, loading a
#: checkpoint): an architecture whose initialisation is costly (MACE builds one
#: mace-torch module per member) may then allocate its parameters without drawing them
_PARAMETERS_TO_BE_LOADED: ContextVar[bool] = ContextVar("parameters_to_be_loaded", default=False)


@contextmanager
def parameters_to_be_loaded() -> Iterator[None]:
    token = _PARAMETERS_TO_BE_LOADED.set(True)
    try:
        yield
    finally:
        _PARAMETERS_TO_BE_LOADED.reset(token)


def building_to_load() -> bool:
    """True while the model being built will have its parameters loaded."""
    return _PARAMETERS_TO_BE_LOADED.get()


class AtomicOutputs(NamedTuple):
    """What an architecture's networks give per atom, all members at once.

    ``energy`` (M, n) dimensionless (scaled and shifted into eV by the base);
    ``charge`` (M, n) dimensionless latent charges and ``dipole`` (M, n, 3)
    dimensionless atomic dipoles (equivariant, architectures with vector features), both
    None without a dipole head. The base turns them into a frame dipole (e·Å), see
    :meth:`StackedModule.frame_dipoles`.
    """

    energy: torch.Tensor
    charge: torch.Tensor | None = None
    dipole: torch.Tensor | None = None


class StackedModule(torch.nn.Module):
    """Base of the registered architectures (see :class:`registry.StackedModel`)."""

    architecture: ClassVar[str] = "base"
    #: the user settings (keys of a campaign's [committee] table) of this architecture
    settings: ClassVar[Mapping[str, Setting]] = {}
    #: whether the constructor takes ``dipole=True`` (a dipole head, see ``__init__``)
    supports_dipole: ClassVar[bool] = False

    def __init__(
        self, *, elements: Sequence[int | str], n_members: int, cutoff_A: float, dtype: str, n_raw_features: int,
        dipole: bool = False,
    ) -> None:
        """Buffers for ``elements`` and ``n_raw_features`` fingerprint features per atom,
        and an empty ``weights``; the subclass then fills ``weights`` (with its dipole
        head's tensors, named ``dipole_*``, if ``dipole``) and calls
        :meth:`initialise_members`.

        With ``dipole`` the model also predicts the molecular dipole (e·Å): latent
        atomic charges q_i = q0(Z_i) + s_q * output_i, made to sum to each frame's total
        charge Q by q_i += (Q - sum q) / N, give mu = sum q_i r_i (+ s_q * sum of atomic
        dipoles where the architecture has vector features). q0 per element
        (``atom_ref_charge``, the fixed-charge model fitted on the training dipoles) and
        s_q (``charge_scale``, e) are buffers, as E0 and the energy scale are.
        """
        super().__init__()
        numbers = element_numbers(elements)
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not cutoff_A > 0:
            raise ValueError(f"cutoff_A must be > 0, got {cutoff_A}")
        self.n_members = n_members
        self.dtype_name = dtype
        n_el = len(numbers)
        self.register_buffer("elements", torch.tensor(numbers, dtype=torch.int64))
        self.register_buffer("cutoff", torch.tensor(float(cutoff_A), dtype=torch.float64))
        table = torch.full((119,), -1, dtype=torch.int64)
        table[torch.tensor(numbers)] = torch.arange(n_el)
        self.register_buffer("species_table", table, persistent=False)
        self.register_buffer("atom_ref_energy", torch.zeros(n_el))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.register_buffer("feature_mean", torch.zeros(n_el, n_raw_features))
        self.register_buffer("feature_std", torch.ones(n_el, n_raw_features))
        self.dipole_head = bool(dipole)
        if self.dipole_head:
            self.register_buffer("atom_ref_charge", torch.zeros(n_el))
            self.register_buffer("charge_scale", torch.tensor(DEFAULT_CHARGE_SCALE_E))
        self.weights = torch.nn.ParameterDict()

    @classmethod
    def missing_dependency(cls) -> str | None:
        """What must be installed before this architecture can be built (one line), or
        None; checked when a campaign's config is loaded."""
        return None

    @classmethod
    def hparams_from_settings(cls, **settings: Any) -> dict[str, Any]:
        """Constructor keyword arguments from the user settings (default: the same)."""
        return dict(settings)

    # ------------------------------------------------------------------ properties
    @property
    def element_symbols(self) -> list[str]:
        return [chemical_symbols[int(z)] for z in self.elements]

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    @property
    def neighbour_cutoffs(self) -> tuple[float, float]:
        """(pair cutoff, angle-triple cutoff) in Å that batches for this model need."""
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without n_members and seed)."""
        raise NotImplementedError

    def species_of(self, numbers: torch.Tensor) -> torch.Tensor:
        """Element indices of ``numbers``; raises ValueError for an element the model lacks."""
        if numbers.numel() and (numbers.min() < 1 or numbers.max() > 118):
            raise ValueError(f"invalid atomic numbers in batch: {sorted(set(numbers.tolist()))}")
        species = self.species_table[numbers]
        if (species < 0).any():
            unknown = sorted({chemical_symbols[int(z)] for z in numbers[species < 0]})
            raise ValueError(
                f"element(s) {unknown} not in this model's elements {self.element_symbols}; "
                "the model was not trained on them"
            )
        return species

    # ------------------------------------------------------------------ initialisation
    def initialise_members(self, seed: int) -> None:
        """Cast to the model's dtype and initialise every member from its own stream."""
        self.to(self.dtype)
        for member in range(self.n_members):
            self.initialise_member(member, seed)

    def initialise_member(self, member: int, seed: int) -> None:
        self.initialise_lecun(member, seed)

    def initialise_lecun(
        self, member: int, seed: int, order: Sequence[str] | None = None, skip: Sequence[str] = ()
    ) -> None:
        """LeCun-normal matrices (fan-in = second axis), zero biases (names containing
        ``_b``, or tensors of one axis besides the members), drawn in ``order`` (default:
        sorted names) from the member's own random stream; ``skip`` is left alone."""
        generator = member_generator(seed, member)
        with torch.no_grad():
            for name in order if order is not None else sorted(self.weights):
                w = self.weights[name]
                if name in skip:
                    continue
                if "_b" in name.split(".")[-1] or w.dim() < 3:
                    w[member] = 0.0
                    continue
                sample = torch.randn(w.shape[1:], generator=generator, dtype=torch.float64)
                w[member] = (sample / w.shape[1] ** 0.5).to(w.dtype)

    # ------------------------------------------------------------------ energies and forces
    def atomic_outputs(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """The networks' dimensionless atomic outputs (M, n) for positions (1 or M, n, 3)."""
        raise NotImplementedError

    def atomic_properties(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> AtomicOutputs:
        """Energy outputs and, with a dipole head, latent charges and atomic dipoles
        (:class:`AtomicOutputs`); an architecture with a dipole head overrides this
        (default: :meth:`atomic_outputs`, no dipole)."""
        return AtomicOutputs(self.atomic_outputs(batch, positions, species))

    def atomic_energies(self, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        """Atomic energies (M, n), eV, from positions (1 or M, n, 3)."""
        species = self.species_of(batch["numbers"])
        return self.energies_from_outputs(self.atomic_outputs(batch, positions, species), species)

    def energies_from_outputs(self, outputs: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """E_i = E0(Z_i) + s * output_i: atomic energies (M, n) in eV."""
        return self.atom_ref_energy[species] + self.energy_scale * outputs

    def frame_energies(self, atomic: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum atomic energies (M, n) into frame energies (M, B)."""
        n_frames = batch["n_atoms"].shape[0]
        return atomic.new_zeros(atomic.shape[0], n_frames).index_add(1, batch["frame"], atomic)

    def frame_dipoles(self, outputs: AtomicOutputs, species: torch.Tensor, batch: Batch,
                      positions: torch.Tensor) -> torch.Tensor:
        """Each member's dipole (M, B, 3), e·Å, from the dipole head's outputs: charges
        q0(Z) + s_q * q made to sum to the frame's charge, times positions (1 or M, n, 3),
        plus s_q times the atomic dipoles if the architecture gives them."""
        if outputs.charge is None:
            raise ValueError(f"this {self.architecture} model has no dipole head")
        frame, n_frames = batch["frame"], batch["n_atoms"].shape[0]
        charges = self.atom_ref_charge[species] + self.charge_scale * outputs.charge  # (M, n)
        total = batch.get("charge")
        target = charges.new_zeros(n_frames) if total is None else total.to(charges.dtype)
        excess = charges.new_zeros(charges.shape[0], n_frames).index_add(1, frame, charges) - target
        charges = charges - (excess / batch["n_atoms"].to(charges.dtype))[:, frame]
        atomic = charges[..., None] * positions  # (M, n, 3)
        if outputs.dipole is not None:
            atomic = atomic + self.charge_scale * outputs.dipole
        return atomic.new_zeros(atomic.shape[0], n_frames, 3).index_add(1, frame, atomic)

    def positions(self, batch: Batch, copies: int = 1, requires_grad: bool = False) -> torch.Tensor:
        """The batch's positions (copies, n, 3) in the model's dtype, detached (a new leaf)."""
        positions = batch["positions"].to(self.dtype).detach().unsqueeze(0)
        if copies > 1:
            positions = positions.expand(copies, -1, -1).clone()
        return positions.requires_grad_(requires_grad)

    def _energies_and_dipoles(self, batch: Batch, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Atomic energies (M, n), frame energies (M, B) and, with a dipole head, the
        dipoles (M, B, 3) for positions (1 or M, n, 3)."""
        species = self.species_of(batch["numbers"])
        outputs = self.atomic_properties(batch, positions, species)
        atomic = self.energies_from_outputs(outputs.energy, species)
        result = {"atomic_energies": atomic, "energy": self.frame_energies(atomic, batch)}
        if self.dipole_head:
            result["dipole"] = self.frame_dipoles(outputs, species, batch, positions)
        return result

    def forward(
        self, batch: Batch, *, compute_forces: bool = True, create_graph: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energies (M, B) in eV, if asked forces (M, n, 3) in eV/Å, and with a dipole
        head dipoles (M, B, 3) in e·Å, for every member.

        Positions are copied once per member, so one backward pass gives every member's
        forces. ``create_graph=True`` (training) keeps the graph of the forces so that a
        loss on them can be differentiated with respect to the weights.
        """
        positions = self.positions(batch, self.n_members, compute_forces)
        with torch.enable_grad() if compute_forces else torch.no_grad():
            result = self._energies_and_dipoles(batch, positions)
            if compute_forces:
                (grad,) = torch.autograd.grad(result["energy"].sum(), positions, create_graph=create_graph)
                result["forces"] = -grad
        if not create_graph:
            result = {key: value.detach() for key, value in result.items()}
        return result

    def mean_energy_forces(self, batch: Batch, energy_bias: EnergyBias | None = None) -> dict[str, torch.Tensor]:
        """Committee-mean energy (B,) in eV and forces (n, 3) in eV/Å: one backward pass
        through the shared positions (what MD needs between scoring steps); with a dipole
        head also every member's dipole (M, B, 3), e·Å (the forward pass gives them).

        ``energy_bias`` maps the members' energies (M, B) to a bias energy (B,) (e.g.
        :class:`nnp_core.bias.UncertaintyDrivenBias`): the forces are then those of
        mean + bias, from the same backward pass, and ``bias_energy`` (B,) is returned."""
        positions = self.positions(batch, 1, True)
        with torch.enable_grad():
            result = self._energies_and_dipoles(batch, positions)
            energy = result["energy"].mean(dim=0)
            target = energy.sum()
            if energy_bias is not None:
                bias = energy_bias(result["energy"])
                target = target + bias.sum()
            (grad,) = torch.autograd.grad(target, positions)
        out = {"energy": energy.detach(), "forces": -grad[0]}
        if energy_bias is not None:
            out["bias_energy"] = bias.detach()
        if "dipole" in result:
            out["dipole"] = result["dipole"].detach()
        return out

    # ------------------------------------------------------------------ fingerprints
    def raw_features(self, batch: Batch) -> torch.Tensor:
        """Member-independent per-atom descriptors (n, D) (normalisation, fingerprints)."""
        raise NotImplementedError

    def radial_features(self, batch: Batch, n_basis: int) -> torch.Tensor:
        """Element-resolved radial-basis sums (n, n_elements * n_basis): for each
        neighbour element, the sum over its atoms within the cutoff of
        ``descriptors.radial_basis`` (member-independent; PaiNN's and MACE's fingerprints)."""
        species = self.species_of(batch["numbers"])
        i, j = batch["pairs"][0], batch["pairs"][1]
        pos = batch["positions"].to(self.dtype)
        r = torch.linalg.vector_norm(pos[j] - pos[i], dim=-1)
        basis = radial_basis(r, n_basis, float(self.cutoff))
        n_el = len(self.elements)
        out = pos.new_zeros(species.shape[0] * n_el, n_basis)
        out = out.index_add(0, i * n_el + species[j], basis)
        return out.reshape(species.shape[0], n_el * n_basis)

    def standardise(self, raw: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """(raw - mean) / std per element, with the fitted ``feature_mean``/``feature_std``."""
        return (raw - self.feature_mean[species]) / self.feature_std[species]

    def fingerprints(self, batch: Batch) -> torch.Tensor:
        """Per-frame fingerprints (B, n_elements * D): the mean standardised raw features
        of each element's atoms in the frame (zeros for an absent element)."""
        with torch.no_grad():
            species = self.species_of(batch["numbers"])
            features = self.standardise(self.raw_features(batch), species)
            n_frames, n_el = batch["n_atoms"].shape[0], len(self.elements)
            key = batch["frame"] * n_el + species
            sums = features.new_zeros(n_frames * n_el, features.shape[1]).index_add(0, key, features)
            counts = torch.bincount(key, minlength=n_frames * n_el).clamp(min=1).to(features.dtype)
            return (sums / counts[:, None]).reshape(n_frames, -1)

    # ------------------------------------------------------------------ members
    def is_shared_weight(self, key: str) -> bool:
        """Whether ``weights[key]`` is shared by all members (a member axis of length 1,
        e.g. the shallow MACE ensemble's backbone); such a model sets ``joint_training``."""
        return False

    def select_members(self, indices: Sequence[int]) -> "StackedModule":
        """A new model holding copies of the chosen members (same buffers and shared weights)."""
        indices = list(indices)
        with parameters_to_be_loaded():
            new = type(self)(n_members=len(indices), **self.hparams())
        new.load_state_dict(self.members_state_dict(indices))
        return new

    def members_state_dict(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The state dict ``select_members(indices)`` would have, without building that
        model (a MACE member's build compiles its e3nn modules: seconds)."""
        indices = list(indices)
        state = {k: v.clone() for k, v in self.state_dict().items() if not k.startswith("weights.")}
        state.update({f"weights.{k}": (p.detach() if self.is_shared_weight(k) else p.detach()[indices]).clone()
                      for k, p in self.weights.items()})
        return state

    @classmethod
    def stack(cls, models: Sequence["StackedModule"]) -> "StackedModule":
        """One model holding all members of ``models`` (which must share everything else,
        shared weights included)."""
        first = models[0]
        for other in models[1:]:
            check_same_buffers(first, other)
            for key in first.weights:
                if first.is_shared_weight(key) and not torch.equal(first.weights[key], other.weights[key]):
                    raise ValueError(f"the members of a {first.architecture} committee share the weights "
                                     f"{key!r}; these differ in them")
        with parameters_to_be_loaded():
            new = cls(n_members=sum(m.n_members for m in models), **first.hparams())
        state = {k: v for k, v in first.state_dict().items() if not k.startswith("weights.")}
        for key in first.weights:
            state[f"weights.{key}"] = (first.weights[key].detach() if first.is_shared_weight(key)
                                       else torch.cat([m.weights[key].detach() for m in models]))
        new.load_state_dict(state)
        return new


def element_numbers(elements: Sequence[int | str]) -> list[int]:
    """Sorted unique atomic numbers of ``elements`` (symbols or numbers)."""
    numbers = sorted({atomic_number(e) for e in elements})
    if not numbers:
        raise ValueError("a model needs at least one element")
    return numbers


def atomic_number(element: int | str) -> int:
    if isinstance(element, str):
        if element not in chemical_symbols[1:]:
            raise ValueError(f"unknown element symbol {element!r}")
        return chemical_symbols.index(element)
    if not 1 <= int(element) <= 118:
        raise ValueError(f"invalid atomic number {element}")
    return int(element)


def check_same_buffers(a: StackedModule, b: StackedModule) -> None:
    if a.hparams() != b.hparams():
        raise ValueError(f"members differ in hyperparameters: {a.hparams()} vs {b.hparams()}")
    for name, buf in a.named_buffers():
        other = dict(b.named_buffers())[name]
        if not torch.allclose(buf.to(torch.float64), other.to(torch.float64), rtol=1e-12, atol=1e-12):
            raise ValueError(f"members differ in buffer {name!r}; they cannot form one committee")
