"""Model registry: architecture name -> class, so callers never name a class directly.

Every registered class is a *stacked* model: it holds ``n_members`` independent
parameter sets with a leading member axis and evaluates all of them in one pass.
A single model is the case ``n_members == 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from nnp_core.batch import Batch


class StackedModel(Protocol):
    """What the committee, the trainer and the MD engine need from an architecture."""

    n_members: int
    elements: torch.Tensor  # buffer: atomic numbers the model knows, sorted
    cutoff: torch.Tensor  # buffer: Å

    def forward(self, batch: Batch, *, compute_forces: bool = True, create_graph: bool = False) -> dict[str, torch.Tensor]: ...
    def mean_energy_forces(self, batch: Batch) -> dict[str, torch.Tensor]: ...
    def hparams(self) -> dict[str, Any]: ...
    def select_members(self, indices: Sequence[int]) -> "StackedModel": ...
    def fingerprints(self, batch: Batch) -> torch.Tensor: ...


T = TypeVar("T")
MODEL_REGISTRY: dict[str, type] = {}


def register_model(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make an architecture available as ``build_model(name, ...)``."""

    def decorator(cls: type[T]) -> type[T]:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model architecture {name!r} is already registered")
        MODEL_REGISTRY[name] = cls
        cls.architecture = name  # type: ignore[attr-defined]
        return cls

    return decorator


def build_model(architecture: str, *, n_members: int = 1, seed: int = 0, **hparams: Any) -> Any:
    """Instantiate a registered architecture with ``n_members`` members seeded by ``seed``."""
    try:
        cls = MODEL_REGISTRY[architecture]
    except KeyError:
        raise ValueError(
            f"unknown model architecture {architecture!r}; known: {sorted(MODEL_REGISTRY)}"
        ) from None
    return cls(n_members=n_members, seed=seed, **hparams)


def member_generator(seed: int, member: int) -> torch.Generator:
    """The random stream that initialises member ``member`` (independent of the committee size)."""
    state = np.random.SeedSequence([int(seed), int(member)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
