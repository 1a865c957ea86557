"""A minimal architecture, registered only inside a test: what a new model has to write.

Atoms see their neighbours through two radial functions; an element-independent MLP
of ``width`` hidden units maps the standardised sums to an atomic output. Energies,
forces, fingerprints, member handling and checkpoints all come from StackedModule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from nnp_core.batch import Batch
from nnp_core.descriptors import cosine_cutoff
from nnp_core.models import MODEL_REGISTRY, Setting, StackedModule, register_model


class Toy(StackedModule):
    settings = {
        "cutoff_A": Setting(3.0, "neighbour cutoff, Å", float, gt=0),
        "width": Setting(4, "hidden units", int, ge=1),
    }

    def __init__(self, *, elements: Sequence[int | str], n_members: int = 1, seed: int = 0,
                 cutoff_A: float = 3.0, width: int = 4, dtype: str = "float64") -> None:
        super().__init__(elements=elements, n_members=n_members, cutoff_A=cutoff_A, dtype=dtype, n_raw_features=2)
        self.width = int(width)
        for name, shape in {"w0": (2, width), "b0": (1, width), "w1": (width, 1), "b1": (1, 1)}.items():
            self.weights[name] = torch.nn.Parameter(torch.zeros(n_members, *shape))
        self.initialise_members(seed)

    @property
    def neighbour_cutoffs(self) -> tuple[float, float]:
        return float(self.cutoff), 0.0

    def hparams(self) -> dict[str, Any]:
        return {"elements": [int(z) for z in self.elements], "cutoff_A": float(self.cutoff),
                "width": self.width, "dtype": self.dtype_name}

    def raw_features(self, batch: Batch, positions: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.positions(batch) if positions is None else positions
        i, j = batch["pairs"]
        r = torch.linalg.vector_norm(pos[:, j] - pos[:, i], dim=-1)
        g = torch.stack([torch.exp(-r), torch.ones_like(r)], dim=-1) * cosine_cutoff(r, float(self.cutoff))[..., None]
        out = g.new_zeros(pos.shape[0], pos.shape[1], 2).index_add(1, i, g)
        return out[0] if positions is None else out

    def atomic_outputs(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        x = self.standardise(self.raw_features(batch, positions), species)
        h = torch.nn.functional.silu(x @ self.weights["w0"] + self.weights["b0"])
        return (h @ self.weights["w1"] + self.weights["b1"])[..., 0]


@contextlib.contextmanager
def registered_toy(name: str = "toy") -> Iterator[type[Toy]]:
    """``Toy`` registered as ``name`` for the duration of the block."""
    register_model(name)(Toy)
    try:
        yield Toy
    finally:
        del MODEL_REGISTRY[name]
