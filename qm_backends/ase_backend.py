"""Any ASE calculator behind the `Label` contract (EMT, xTB via tblite, ORCA, Psi4 ...).

The wrapped calculator's own units are already ASE's, so nothing is converted.
Whatever the calculator raises, and any non-finite result, becomes `LabelFailed`
carrying the calculator's message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from .base import InvalidStructure, Label, LabelFailed, LabellingCalculator, canonical_level_of_theory
from .validation import DEFAULT_MIN_DISTANCE_A, check_common

logger = logging.getLogger(__name__)

# Calculator parameters that never change the numbers.
NON_PHYSICAL_PARAMETERS = frozenset(
    {"verbosity", "verbose", "directory", "label", "command", "nprocs", "num_threads",
     "maxcore", "memory", "max_memory", "scratch", "output", "txt", "profile"}
)

CalculatorFactory = Callable[[], Calculator]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in np.asarray(value, dtype=object).tolist()]
    return repr(value)


class ASEBackend(LabellingCalculator):
    """Wrap an ASE calculator (or a zero-argument factory of one) as a reference backend.

    Keyword-only options:
        calculator: an ASE Calculator, or a callable returning a fresh one (a factory
            is safer for worker processes and for calculators that keep state).
        name: the method name recorded in `level_of_theory` (default: the
            calculator class name).
        charge, multiplicity: recorded, and used to check parity in `validate`
            (None, the default, for methods without electrons such as EMT); pass
            them to the calculator yourself if it takes them.
        dipole: also ask for the dipole ("auto": only if the calculator has it).
        molecular: refuse periodic structures in `validate`.
        min_distance_A: atoms closer than this are refused by `validate`.
        elements: if given, the element symbols the calculator can handle.
    """

    name = "ase"

    def __init__(
        self,
        *,
        calculator: Calculator | CalculatorFactory,
        name: str | None = None,
        charge: int | None = None,
        multiplicity: int | None = None,
        dipole: bool | str = "auto",
        molecular: bool = True,
        min_distance_A: float = DEFAULT_MIN_DISTANCE_A,
        elements: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self._factory: CalculatorFactory | None = None if isinstance(calculator, Calculator) else calculator
        self._calc: Calculator = calculator if isinstance(calculator, Calculator) else calculator()
        self.method_name = name or type(self._calc).__name__
        self.charge = None if charge is None else int(charge)
        self.multiplicity = None if multiplicity is None else int(multiplicity)
        self.want_dipole = dipole
        self.molecular = molecular
        self.min_distance_A = float(min_distance_A)
        self.elements = None if elements is None else frozenset(elements)

    @property
    def calculator(self) -> Calculator:
        """The wrapped calculator."""
        return self._calc

    @property
    def level_of_theory(self) -> dict[str, Any]:
        """Backend "ase", the method name, and the calculator's physical parameters."""
        params = {k: _jsonable(v) for k, v in dict(self._calc.parameters).items()
                  if k.lower() not in NON_PHYSICAL_PARAMETERS}
        params["calculator"] = type(self._calc).__name__
        return canonical_level_of_theory(
            backend=self.name, method=self.method_name, basis=params.pop("basis", None),
            charge=self.charge, multiplicity=self.multiplicity, options=params,
        )

    def validate(self, atoms: Atoms) -> None:
        """Raise `InvalidStructure` for NaN, unknown or unsupported elements, overlaps, parity."""
        check_common(atoms, charge=self.charge, multiplicity=self.multiplicity,
                     min_distance_A=self.min_distance_A, molecular=self.molecular,
                     check_elements=self._check_elements)

    def _check_elements(self, atoms: Atoms) -> None:
        if self.elements is not None:
            missing = sorted(set(atoms.get_chemical_symbols()) - self.elements)
            if missing:
                raise InvalidStructure(f"element(s) {missing} not supported by {self.method_name}")

    def _wants_dipole(self) -> bool:
        if self.want_dipole == "auto":
            return "dipole" in getattr(self._calc, "implemented_properties", ())
        return bool(self.want_dipole)

    def _compute(self, atoms: Atoms) -> Label:
        frame = atoms.copy()
        frame.calc = self._calc if self._factory is None else self._factory()
        start = time.perf_counter()
        attempt: dict[str, Any] = {"strategy": "default", "guess": None, "converged": False,
                                   "n_cycles": None, "energy_eV": None, "error": None}
        try:
            energy = float(frame.get_potential_energy())
            forces = np.array(frame.get_forces(), dtype=float)
            dipole = np.array(frame.get_dipole_moment(), dtype=float) if self._wants_dipole() else None
        except PropertyNotImplementedError as err:
            raise LabelFailed(f"{self.method_name} cannot compute a required property: {err}",
                              [self._finish(attempt, start, err)]) from err
        except Exception as err:  # noqa: BLE001 - any calculator failure is a failed label
            raise LabelFailed(f"{self.method_name} failed: {type(err).__name__}: {err}",
                              [self._finish(attempt, start, err)]) from err
        finite = np.isfinite(energy) and np.all(np.isfinite(forces))
        if dipole is not None:
            finite = finite and np.all(np.isfinite(dipole))
        if not finite:
            raise LabelFailed(f"{self.method_name} returned non-finite results",
                              [self._finish(attempt, start, "non-finite results")])
        attempt.update(converged=True, energy_eV=energy)
        return Label(energy=energy, forces=forces, dipole=dipole, converged=True, n_scf_cycles=None,
                     wall_s=0.0, attempts=[self._finish(attempt, start, None)])

    @staticmethod
    def _finish(attempt: dict[str, Any], start: float, error: Any) -> dict[str, Any]:
        if error is not None:
            attempt["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        attempt["wall_s"] = time.perf_counter() - start
        return attempt

    def hessian(self, atoms: Atoms) -> np.ndarray:
        """Not available: a generic ASE calculator has no analytic Hessian.

        Raises:
            NotImplementedError: always; use ``ase.vibrations.Vibrations`` instead.
        """
        raise NotImplementedError(
            f"{self.method_name} (generic ASE backend) has no analytic Hessian; "
            "use ase.vibrations.Vibrations for finite differences"
        )


def make_ase_backend(**options: Any) -> ASEBackend:
    """Registry factory for ``get_backend("ase", calculator=...)``."""
    return ASEBackend(**options)


def make_emt_backend(**options: Any) -> ASEBackend:
    """Registry factory for ``get_backend("emt")``: ASE's EMT, for fast tests."""
    from ase.calculators.emt import EMT

    return ASEBackend(calculator=EMT, name="emt", dipole=False, **options)


def make_xtb_backend(*, method: str = "GFN2-xTB", charge: int = 0, multiplicity: int = 1,
                     accuracy: float = 1.0, **options: Any) -> ASEBackend:
    """Registry factory for ``get_backend("xtb", method="GFN2-xTB")`` through tblite.

    Raises:
        ImportError: the optional package tblite is not installed.
    """
    try:
        from tblite.ase import TBLite
    except ImportError as err:
        raise ImportError("the xtb backend needs the optional package tblite "
                          "(pip install 'alflow[xtb]' or pip install tblite)") from err

    factory = partial(TBLite, method=method, charge=charge, multiplicity=multiplicity,
                      accuracy=accuracy, verbosity=0)  # a partial pickles to worker processes
    return ASEBackend(calculator=factory, name=method, charge=charge, multiplicity=multiplicity,
                      **options)
