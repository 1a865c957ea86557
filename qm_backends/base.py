"""The contract every reference backend keeps: `Label`, the errors, `ReferenceBackend`.

Units everywhere in this module are ASE's: eV, Å, eV/Å, and e·Å for dipoles.
A backend converts its own units at its boundary and hands back a `Label`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    InputError,
    all_changes,
)
from ase.calculators.singlepoint import SinglePointCalculator

__all__ = [
    "InvalidStructure",
    "Label",
    "LabelFailed",
    "LabellingCalculator",
    "ReferenceBackend",
    "canonical_level_of_theory",
    "level_of_theory_key",
]


class InvalidStructure(InputError, ValueError):
    """A structure that no reference calculation should be attempted on.

    Raised by ``validate`` before any expensive work. The message names the problem
    (unknown element, overlapping atoms, impossible charge/multiplicity, NaN ...).
    It is both an ASE ``InputError`` and a ``ValueError``.
    """


class LabelFailed(CalculationFailed):
    """Every attempt to label a frame failed; nothing was returned.

    Attributes:
        reason: one line saying why the last attempt failed.
        attempts: what was tried, one plain dict per attempt (see `Label.attempts`).
    """

    def __init__(self, reason: str, attempts: list[dict[str, Any]] | None = None) -> None:
        self.reason = reason
        self.attempts = list(attempts or [])
        tried = ", ".join(str(a.get("strategy", "?")) for a in self.attempts)
        super().__init__(f"{reason} (tried: {tried})" if tried else reason)

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.reason, self.attempts))


@dataclass
class Label:
    """One reference label of one frame, in ASE units.

    Attributes:
        energy: total energy, eV.
        forces: (N, 3) forces, eV/Å.
        dipole: (3,) dipole moment about the coordinate origin, e·Å, or None.
        converged: always True for a returned label (kept so stored rows say so).
        n_scf_cycles: SCF cycles summed over all attempts (None if the code hides it).
        wall_s: wall-clock seconds for the whole label, all attempts included.
        attempts: one plain dict per attempt, in order (strategy, guess, converged,
            n_cycles, wall_s, energy_eV, error).
        method: the level of theory (see `canonical_level_of_theory`).
    """

    energy: float
    forces: np.ndarray
    dipole: np.ndarray | None
    converged: bool
    n_scf_cycles: int | None
    wall_s: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.energy = float(self.energy)
        self.forces = np.asarray(self.forces, dtype=float).reshape(-1, 3)
        if self.dipole is not None:
            self.dipole = np.asarray(self.dipole, dtype=float).reshape(3)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (lists, floats, dicts), ready for JSON."""
        return {
            "energy": self.energy,
            "forces": self.forces.tolist(),
            "dipole": None if self.dipole is None else self.dipole.tolist(),
            "converged": bool(self.converged),
            "n_scf_cycles": self.n_scf_cycles,
            "wall_s": float(self.wall_s),
            "attempts": [dict(a) for a in self.attempts],
            "method": json.loads(json.dumps(self.method)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Label:
        """Inverse of `to_dict`."""
        dipole = data.get("dipole")
        return cls(
            energy=data["energy"],
            forces=np.asarray(data["forces"], dtype=float),
            dipole=None if dipole is None else np.asarray(dipole, dtype=float),
            converged=data["converged"],
            n_scf_cycles=data.get("n_scf_cycles"),
            wall_s=data.get("wall_s", 0.0),
            attempts=list(data.get("attempts", [])),
            method=dict(data.get("method", {})),
        )

    def to_atoms(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` carrying this label as a SinglePointCalculator."""
        labelled = atoms.copy()
        results: dict[str, Any] = {"energy": self.energy, "forces": self.forces.copy()}
        if self.dipole is not None:
            results["dipole"] = self.dipole.copy()
        labelled.calc = SinglePointCalculator(labelled, **results)
        return labelled


def _plain(value: Any) -> Any:
    """Lower-case strings, sorted dict keys, tuples as lists, numpy scalars as floats."""
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, dict):
        return {str(k).lower(): _plain(value[k]) for k in sorted(value, key=lambda k: str(k).lower())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    return value


def canonical_level_of_theory(
    *,
    backend: str,
    method: str,
    basis: str | None,
    charge: int | None,
    multiplicity: int | None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The level-of-theory dict: lower-case strings, sorted keys, JSON-safe values.

    Put only options that change the numbers into ``options`` (not threads, memory
    or convergence controls). ``charge``/``multiplicity`` are None for methods
    without electrons (force fields). Two labels may share a training set only if
    their dicts are equal.
    """
    return {
        "backend": _plain(backend),
        "method": _plain(method),
        "basis": None if basis is None else _plain(basis),
        "charge": None if charge is None else int(charge),
        "multiplicity": None if multiplicity is None else int(multiplicity),
        "options": _plain(dict(options or {})),
    }


def level_of_theory_key(method: dict[str, Any]) -> str:
    """A canonical JSON string of a level-of-theory dict, usable as a database key."""
    return json.dumps(_plain(method), sort_keys=True, separators=(",", ":"))


@runtime_checkable
class ReferenceBackend(Protocol):
    """What the orchestrator needs from a reference code.

    ``validate(atoms)`` raises `InvalidStructure` (cheap, before any SCF);
    ``label(atoms)`` returns a converged `Label` or raises `LabelFailed`.
    """

    @property
    def level_of_theory(self) -> dict[str, Any]: ...

    def validate(self, atoms: Atoms) -> None: ...

    def label(self, atoms: Atoms) -> Label: ...


class LabellingCalculator(Calculator):
    """ASE Calculator plumbing shared by the backends: results come from `label`.

    Subclasses implement ``validate``, ``_compute(atoms) -> Label`` and
    ``level_of_theory``. ``label`` adds validation, timing and the method dict.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole"]

    def validate(self, atoms: Atoms) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def level_of_theory(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute(self, atoms: Atoms) -> Label:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, atoms: Atoms) -> Label:
        """Validate, then label one frame.

        Raises:
            InvalidStructure: before any calculation, for an unusable structure.
            LabelFailed: when every attempt failed; carries the attempts.
        """
        self.validate(atoms)
        start = time.perf_counter()
        result = self._compute(atoms)
        result.wall_s = time.perf_counter() - start
        result.method = self.level_of_theory
        return result

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """ASE entry point: fills ``self.results`` (eV, eV/Å, e·Å) from `label`."""
        super().calculate(atoms, properties or ["energy"], system_changes)
        result = self.label(self.atoms)
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": result.forces.copy(),
        }
        if result.dipole is not None:
            self.results["dipole"] = result.dipole.copy()
        self.last_label = result
