"""Reference labels behind one interface: ``get_backend(name, **options)``.

>>> backend = get_backend("pyscf", method="PBE", basis="def2-svp", density_fit=True,
...                       charge=0, multiplicity=1)
>>> backend.validate(atoms)          # InvalidStructure before any SCF   # doctest: +SKIP
>>> label = backend.label(atoms)     # Label in eV, eV/Å, e·Å, or LabelFailed  # doctest: +SKIP

Every backend is also an ASE Calculator (``atoms.calc = backend``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import (
    InvalidStructure,
    Label,
    LabelFailed,
    ReferenceBackend,
    canonical_level_of_theory,
    level_of_theory_key,
)

__all__ = [
    "InvalidStructure",
    "Label",
    "LabelFailed",
    "ReferenceBackend",
    "available_backends",
    "canonical_level_of_theory",
    "get_backend",
    "level_of_theory_key",
    "register_backend",
]

BackendFactory = Callable[..., ReferenceBackend]


def _pyscf(**options: Any) -> ReferenceBackend:
    from .pyscf_backend import PySCFBackend

    return PySCFBackend(**options)


def _ase(**options: Any) -> ReferenceBackend:
    from .ase_backend import make_ase_backend

    return make_ase_backend(**options)


def _emt(**options: Any) -> ReferenceBackend:
    from .ase_backend import make_emt_backend

    return make_emt_backend(**options)


def _xtb(**options: Any) -> ReferenceBackend:
    from .ase_backend import make_xtb_backend

    return make_xtb_backend(**options)


_REGISTRY: dict[str, BackendFactory] = {"pyscf": _pyscf, "ase": _ase, "emt": _emt, "xtb": _xtb}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``get_backend(name, **options)`` call ``factory(**options)``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    key = name.strip().lower()
    if key in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[key] = factory


def available_backends() -> list[str]:
    """Registered backend names, sorted."""
    return sorted(_REGISTRY)


def get_backend(name: str, **options: Any) -> ReferenceBackend:
    """A reference backend by name: "pyscf", "ase" (calculator=...), "emt", "xtb".

    Raises:
        KeyError: no backend of that name.
        ValueError, TypeError, ImportError: from the backend, for bad options or a
            missing optional package.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown backend {name!r}; available: {available_backends()}")
    return _REGISTRY[key](**options)
