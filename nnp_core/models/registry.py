"""Model registry: architecture name -> class, so callers never name a class directly.

Every registered class is a *stacked* model: it holds ``n_members`` independent
parameter sets with a leading member axis and evaluates all of them in one pass.
A single model is the case ``n_members == 1``. Each class also declares its user
settings (:class:`Setting`), the keys a campaign file may give for it, and how they
become constructor arguments (:func:`architecture_hparams`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch

from nnp_core.batch import Batch


@dataclass(frozen=True)
class Setting:
    """One user setting of an architecture: a key of a campaign's ``[committee]`` table.

    ``annotation`` is the plain type (``int``, ``float``, ``list[int]``; default: the
    type of ``default``). The bounds apply to a number, or to each item of a list.
    Callers that validate (the campaign config) turn this into their own schema.
    """

    default: Any
    doc: str
    annotation: Any = None
    ge: float | None = None
    gt: float | None = None
    min_length: int | None = None

    @property
    def type(self) -> Any:
        return self.annotation if self.annotation is not None else type(self.default)


class StackedModel(Protocol):
    """What the committee, the trainer, MD and selection use of an architecture.

    A new architecture subclasses :class:`nnp_core.models.base.StackedModule` (which
    provides everything below except the items marked *own*), keeps all its trainable
    tensors in ``self.weights`` with the member axis first, and is registered with
    ``@register_model(name)``. It must provide:

    - *own* ``settings``: the user settings (:class:`Setting`) and *own*
      ``hparams_from_settings(**settings)``: constructor keyword arguments from them;
    - *own* ``__init__(*, elements, n_members, seed, dtype, **hparams)`` calling
      ``StackedModule.__init__`` with its cutoff and fingerprint width, then creating
      ``weights`` and calling ``initialise_members(seed)``;
    - *own* ``hparams()``: JSON-able constructor arguments (checkpoints rebuild from them);
    - *own* ``neighbour_cutoffs``: (pair, angle-triple) cutoffs in Å its batches need
      (angle triples are only built when the second is > 0);
    - *own* ``raw_features(batch)``: member-independent per-atom descriptors (n, D);
      training fits ``feature_mean``/``feature_std`` on them and ``fingerprints``
      (diversity selection) standardises them; the energy may or may not use them;
    - *own* ``atomic_outputs(batch, positions, species)``: the networks' dimensionless
      atomic outputs (M, n) for positions (1 or M, n, 3); the base turns them into
      energies ``atom_ref_energy[species] + energy_scale * outputs`` and forces by
      autograd (override ``forward``/``mean_energy_forces`` only for a faster path);
    - optionally ``initialise_member(member, seed)`` (default: LeCun-normal matrices,
      zero biases);
    - optionally a dipole head: accept ``dipole`` (passed on to ``StackedModule``), create
      tensors named ``dipole_*`` in ``weights`` when it is set, and override
      ``atomic_properties(batch, positions, species)`` to return latent charges (M, n)
      and, with vector features, atomic dipoles (M, n, 3) beside the energy outputs; the
      base makes the charges conserve each frame's total charge and sums the dipole.

    Buffers written by training (``fit_normalisation``): ``feature_mean``,
    ``feature_std`` (n_elements, D), ``atom_ref_energy`` (n_elements,) in eV and
    ``energy_scale`` (), eV.
    """

    architecture: ClassVar[str]
    settings: ClassVar[Mapping[str, Setting]]
    n_members: int
    elements: torch.Tensor  # buffer: atomic numbers the model knows, sorted
    cutoff: torch.Tensor  # buffer: Å
    feature_mean: torch.Tensor  # buffer (n_elements, D)
    feature_std: torch.Tensor  # buffer (n_elements, D)
    atom_ref_energy: torch.Tensor  # buffer (n_elements,), eV
    energy_scale: torch.Tensor  # buffer (), eV

    @classmethod
    def hparams_from_settings(cls, **settings: Any) -> dict[str, Any]: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def neighbour_cutoffs(self) -> tuple[float, float]: ...
    def __call__(self, batch: Batch, *, compute_forces: bool = True, create_graph: bool = False) -> dict[str, torch.Tensor]:
        """``energy`` (M, B) eV, ``atomic_energies`` (M, n), ``forces`` (M, n, 3) eV/Å."""
    def mean_energy_forces(self, batch: Batch, energy_bias: EnergyBias | None = None) -> dict[str, torch.Tensor]:
        """Committee-mean ``energy`` (B,) and ``forces`` (n, 3), detached; with
        ``energy_bias`` the forces of mean + bias and its ``bias_energy`` (B,)."""
    def species_of(self, numbers: torch.Tensor) -> torch.Tensor: ...
    def raw_features(self, batch: Batch) -> torch.Tensor: ...
    def fingerprints(self, batch: Batch) -> torch.Tensor: ...
    def hparams(self) -> dict[str, Any]: ...
    def select_members(self, indices: Sequence[int]) -> "StackedModel": ...
    def members_state_dict(self, indices: Sequence[int]) -> dict[str, torch.Tensor]: ...
    @classmethod
    def stack(cls, models: Sequence["StackedModel"]) -> "StackedModel": ...
    def parameters(self) -> Any: ...
    def state_dict(self) -> dict[str, torch.Tensor]: ...
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> Any: ...


#: a bias energy (B,) from the members' energies (M, B), differentiable (``nnp_core.bias``)
EnergyBias = Callable[[torch.Tensor], torch.Tensor]

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


def _model_class(architecture: str) -> type:
    try:
        return MODEL_REGISTRY[architecture]
    except KeyError:
        raise ValueError(
            f"unknown model architecture {architecture!r}; known: {sorted(MODEL_REGISTRY)}"
        ) from None


def build_model(architecture: str, *, n_members: int = 1, seed: int = 0, **hparams: Any) -> Any:
    """Instantiate a registered architecture with ``n_members`` members seeded by ``seed``."""
    return _model_class(architecture)(n_members=n_members, seed=seed, **hparams)


def architecture_names() -> list[str]:
    """The registered architectures, in registration order."""
    return list(MODEL_REGISTRY)


def architecture_settings(architecture: str) -> dict[str, Setting]:
    """The user settings an architecture declares, name -> :class:`Setting`."""
    return dict(getattr(_model_class(architecture), "settings", {}))


def architecture_hparams(architecture: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments (for :func:`build_model`, besides elements, members,
    seed, dtype) from user ``settings``; missing ones take their defaults.

    Raises:
        ValueError: an unknown architecture, or a setting it does not declare.
    """
    declared = architecture_settings(architecture)
    unknown = sorted(set(settings) - set(declared))
    if unknown:
        raise ValueError(f"architecture {architecture!r} has no setting(s) {unknown}; "
                         f"its settings: {sorted(declared)}")
    values = {name: copy.deepcopy(setting.default) for name, setting in declared.items()} | dict(settings)
    return _model_class(architecture).hparams_from_settings(**values)


def member_generator(seed: int, member: int) -> torch.Generator:
    """The random stream that initialises member ``member`` (independent of the committee size)."""
    state = np.random.SeedSequence([int(seed), int(member)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
