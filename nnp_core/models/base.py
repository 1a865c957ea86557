"""What every stacked architecture shares: a member axis on its parameters, element
bookkeeping, per-element reference energies and an energy scale, neighbour cutoffs.

Subclasses keep *all* their trainable parameters in ``self.weights`` (a ParameterDict
whose tensors have the member axis first), so that members can be selected, stacked and
checkpointed one at a time without knowing the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ase.data import chemical_symbols

from nnp_core.models.registry import member_generator

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class StackedModule(torch.nn.Module):
    """Base of the registered architectures (see :class:`registry.StackedModel`)."""

    architecture = "base"

    def _init_common(self, elements: Sequence[int | str], n_members: int, cutoff_A: float, dtype: str) -> list[int]:
        numbers = sorted({atomic_number(e) for e in elements})
        if not numbers:
            raise ValueError("a model needs at least one element")
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not cutoff_A > 0:
            raise ValueError(f"cutoff_A must be > 0, got {cutoff_A}")
        self.n_members = n_members
        self.dtype_name = dtype
        self.register_buffer("elements", torch.tensor(numbers, dtype=torch.int64))
        self.register_buffer("cutoff", torch.tensor(float(cutoff_A), dtype=torch.float64))
        table = torch.full((119,), -1, dtype=torch.int64)
        table[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("species_table", table, persistent=False)
        self.register_buffer("atom_ref_energy", torch.zeros(len(numbers)))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.weights = torch.nn.ParameterDict()
        return numbers

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

    def _initialise_lecun(self, member: int, seed: int, skip: Sequence[str] = ()) -> None:
        """LeCun-normal matrices (fan-in = second axis), zero biases (names containing
        ``_b``), in sorted name order from the member's own random stream."""
        generator = member_generator(seed, member)
        with torch.no_grad():
            for name in sorted(self.weights):
                w = self.weights[name]
                if name in skip:
                    continue
                if "_b" in name.split(".")[-1] or w.dim() < 3:
                    w[member] = 0.0
                    continue
                sample = torch.randn(w.shape[1:], generator=generator, dtype=torch.float64)
                w[member] = (sample / w.shape[1] ** 0.5).to(w.dtype)

    def frame_energies(self, atomic: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum atomic energies (M, n) into frame energies (M, B)."""
        n_frames = batch["n_atoms"].shape[0]
        return atomic.new_zeros(atomic.shape[0], n_frames).index_add(1, batch["frame"], atomic)

    # ------------------------------------------------------------------ members
    def select_members(self, indices: Sequence[int]) -> "StackedModule":
        """A new model holding copies of the chosen members (same buffers)."""
        indices = list(indices)
        new = type(self)(n_members=len(indices), **self.hparams())
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("weights.")}
        state.update({f"weights.{k}": p.detach()[indices].clone() for k, p in self.weights.items()})
        new.load_state_dict(state)
        return new

    @classmethod
    def stack(cls, models: Sequence["StackedModule"]) -> "StackedModule":
        """One model holding all members of ``models`` (which must share everything else)."""
        first = models[0]
        for other in models[1:]:
            check_same_buffers(first, other)
        new = cls(n_members=sum(m.n_members for m in models), **first.hparams())
        state = {k: v for k, v in first.state_dict().items() if not k.startswith("weights.")}
        for key in first.weights:
            state[f"weights.{key}"] = torch.cat([m.weights[key].detach() for m in models])
        new.load_state_dict(state)
        return new


def atomic_number(element: int | str) -> int:
    if isinstance(element, str):
        if element not in chemical_symbols[1:]:
            raise ValueError(f"unknown element symbol {element!r}")
        return chemical_symbols.index(element)
    if not 1 <= int(element) <= 118:
        raise ValueError(f"invalid atomic number {element}")
    return int(element)


def check_same_buffers(a: torch.nn.Module, b: torch.nn.Module) -> None:
    if a.hparams() != b.hparams():  # type: ignore[operator]
        raise ValueError(f"members differ in hyperparameters: {a.hparams()} vs {b.hparams()}")  # type: ignore[operator]
    for name, buf in a.named_buffers():
        other = dict(b.named_buffers())[name]
        if not torch.allclose(buf.to(torch.float64), other.to(torch.float64), rtol=1e-12, atol=1e-12):
            raise ValueError(f"members differ in buffer {name!r}; they cannot form one committee")
