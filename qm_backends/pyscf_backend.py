"""PySCF reference labels: HF or any DFT functional, any basis, density fitting.

`PySCFBackend` is both a `ReferenceBackend` and an ASE Calculator. Energies,
analytic forces and the dipole come from one converged SCF; an SCF that does not
converge goes through the recovery cascade of `scf_recovery`, and a frame that still
fails raises `LabelFailed` with every attempt. Units in and out are ASE's (eV, Å);
PySCF's Hartree and Bohr never leave this module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from pyscf import __version__ as pyscf_version
from pyscf import dft, gto, lib, scf

from . import vibrations
from .base import InvalidStructure, Label, LabelFailed, LabellingCalculator, canonical_level_of_theory
from .guess import GuessCache
from .scf_recovery import DEFAULT_RECOVERY, CascadeResult, check_strategies, run_cascade
from .validation import DEFAULT_MIN_DISTANCE_A, check_common

logger = logging.getLogger(__name__)

DISPERSION_MODELS = ("d3", "d3bj", "d3zero", "d3bjm", "d3zerom", "d3op", "d4")
_ECP_MIN_Z = 37  # def2 bases put an ECP on every element from Rb on


@lru_cache(maxsize=512)
def _basis_error(basis: str, symbol: str) -> str | None:
    """None if PySCF has ``basis`` for ``symbol``, else why not (cached: loading parses files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shells = gto.basis.load(basis, symbol)
        except Exception as err:  # noqa: BLE001 - PySCF raises several kinds here
            return str(err).strip() or type(err).__name__
    return None if shells else f"basis {basis} has no functions for {symbol}"


def _check_method(method: str) -> str:
    """Lower-case ``method``; raise ValueError if it is neither HF nor a known xc."""
    name = method.strip().lower()
    if name == "hf":
        return name
    try:
        dft.libxc.parse_xc(name)
    except (KeyError, ValueError) as err:
        raise ValueError(f"unknown method {method!r}: neither 'HF' nor an xc functional PySCF knows ({err})") from err
    return name


def _check_dispersion(dispersion: str | None) -> str | None:
    """Lower-case ``dispersion``; raise ValueError/ImportError if it cannot be used."""
    if dispersion is None:
        return None
    name = dispersion.strip().lower()
    if name not in DISPERSION_MODELS:
        raise ValueError(f"unknown dispersion {dispersion!r}; choose one of {DISPERSION_MODELS}")
    try:
        import pyscf.dispersion  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "dispersion corrections need the optional package pyscf-dispersion "
            "(pip install 'alflow[dispersion]' or pip install pyscf-dispersion)"
        ) from err
    return name


class PySCFBackend(LabellingCalculator):
    """Reference labels from PySCF, usable as an ASE Calculator.

    Keyword-only options (all stored in ``self.parameters``):
        method: "HF" or any xc functional PySCF knows ("PBE", "B3LYP", "wB97X" ...).
        basis: any basis PySCF knows ("def2-svp", "6-31g*" ...).
        charge, multiplicity: total charge (e) and 2S + 1.
        restricted: None picks RHF/RKS for singlets and UHF/UKS otherwise; True asks
            for RHF/RKS (ROHF/ROKS when open-shell); False asks for UHF/UKS.
        density_fit: density fitting (on by default); auxbasis None is PySCF's
            matching choice for the basis and functional.
        dispersion: None or "d3bj", "d3zero", "d4", ... (needs pyscf-dispersion).
        grid_level: DFT integration grid level (PySCF's 0-9).
        grid_response: include the grid-weight derivatives in DFT forces, so forces
            are exactly −dE/dx (PySCF's default, False, is off by ~1e-4 eV/Å).
        conv_tol_Ha: SCF energy convergence threshold, Hartree.
        max_cycle: SCF cycles of the first attempt.
        init_guess: cold-start guess ("minao", "atom", "huckel", "1e", ...).
        recovery: recovery strategy names (see `scf_recovery`); () for none.
        recovery_max_cycle: cycle limit for each recovery attempt (None: max(2 * max_cycle, 100)).
        reuse_guess: start from the orbitals of the previous frame of the same molecule.
        reuse_max_displacement_A: reuse only if no atom moved more than this (Å,
            after removing the shift of the centroid).
        max_memory_MB: PySCF's memory limit, MB.
        num_threads: OpenMP threads for PySCF (process-wide); None leaves it alone.
        min_distance_A: atoms closer than this are refused by `validate`.
    """

    name = "pyscf"
    default_parameters: dict[str, Any] = {
        "method": "PBE", "basis": "def2-svp", "charge": 0, "multiplicity": 1,
        "restricted": None, "density_fit": True, "auxbasis": None, "dispersion": None,
        "grid_level": 3, "grid_response": False, "conv_tol_Ha": 1e-9, "max_cycle": 50, "init_guess": "minao",
        "recovery": DEFAULT_RECOVERY, "recovery_max_cycle": None, "reuse_guess": True,
        "reuse_max_displacement_A": 1.0, "max_memory_MB": 4000, "num_threads": None,
        "min_distance_A": DEFAULT_MIN_DISTANCE_A,
    }

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.default_parameters) - {"label", "directory", "atoms"}
        if unknown:
            raise TypeError(f"unknown PySCFBackend options {sorted(unknown)}")
        super().__init__(**options)
        self._guesses = GuessCache()
        self._check_parameters()

    def set(self, **kwargs: Any) -> dict[str, Any]:
        """ASE's ``set``; a changed option also drops the reused guess."""
        changed = super().set(**kwargs)
        if changed:
            self._check_parameters()
            if hasattr(self, "_guesses"):
                self._guesses.clear()
        return changed

    def _check_parameters(self) -> None:
        p = self.parameters
        p.method = _check_method(p.method)
        p.basis = str(p.basis).strip().lower()
        p.dispersion = _check_dispersion(p.dispersion)
        p.recovery = check_strategies(p.recovery)
        if int(p.multiplicity) < 1:
            raise ValueError(f"multiplicity must be >= 1, got {p.multiplicity}")

    # ------------------------------------------------------------------ identity
    @property
    def restricted(self) -> bool:
        """Whether the SCF is spin-restricted (RHF/RKS/ROHF/ROKS)."""
        p = self.parameters
        return (int(p.multiplicity) == 1) if p.restricted is None else bool(p.restricted)

    @property
    def level_of_theory(self) -> dict[str, Any]:
        """Canonical dict of everything that changes the numbers (not threads or memory)."""
        p = self.parameters
        options: dict[str, Any] = {
            "reference": ("r" if self.restricted else "u") + ("hf" if p.method == "hf" else "ks"),
            "density_fit": bool(p.density_fit),
            "auxbasis": (p.auxbasis or "pyscf-default") if p.density_fit else None,
            "dispersion": p.dispersion,
        }
        if p.method != "hf":
            options["grid_level"] = int(p.grid_level)
            options["grid_response"] = bool(p.grid_response)
        return canonical_level_of_theory(
            backend=self.name, method=p.method, basis=p.basis, charge=int(p.charge),
            multiplicity=int(p.multiplicity), options=options,
        )

    # ---------------------------------------------------------------- validation
    def validate(self, atoms: Atoms) -> None:
        """Raise `InvalidStructure` for anything PySCF cannot or should not run.

        Checks: no atoms, NaN/inf coordinates, unknown elements, periodic cells,
        atoms closer than ``min_distance_A``, impossible charge/multiplicity, and
        elements the basis does not cover. Runs no SCF.
        """
        p = self.parameters
        check_common(atoms, charge=int(p.charge), multiplicity=int(p.multiplicity),
                     min_distance_A=float(p.min_distance_A), check_elements=self._check_basis)

    def _check_basis(self, atoms: Atoms) -> None:
        basis = self.parameters.basis
        for symbol in sorted(set(atoms.get_chemical_symbols())):
            problem = _basis_error(basis, symbol)
            if problem is not None:
                raise InvalidStructure(f"element {symbol} is not available in basis {basis}: {problem}")

    # ------------------------------------------------------------------ building
    def build_mol(self, atoms: Atoms) -> gto.Mole:
        """The PySCF molecule for ``atoms`` (Å in, quiet, ECPs for heavy def2 atoms)."""
        p = self.parameters
        mol = gto.Mole()
        mol.atom = [(s, tuple(x)) for s, x in zip(atoms.get_chemical_symbols(), atoms.get_positions())]
        mol.unit = "Angstrom"
        mol.basis = p.basis
        if p.basis.startswith("def2") and atoms.get_atomic_numbers().max() >= _ECP_MIN_Z:
            mol.ecp = p.basis
        mol.charge = int(p.charge)
        mol.spin = int(p.multiplicity) - 1
        mol.verbose = 0
        mol.output = None
        mol.max_memory = float(p.max_memory_MB)
        mol.build(dump_input=False, parse_arg=False)
        return mol

    def build_scf(self, mol: gto.Mole) -> Any:
        """A configured, not yet run SCF object for ``mol`` (HF or KS, R/RO/U, DF)."""
        p = self.parameters
        open_shell = mol.spin != 0
        if p.method == "hf":
            cls = (scf.ROHF if open_shell else scf.RHF) if self.restricted else scf.UHF
            mf = cls(mol)
        else:
            cls = (dft.ROKS if open_shell else dft.RKS) if self.restricted else dft.UKS
            mf = cls(mol, xc=p.method)
            mf.grids.level = int(p.grid_level)
        if p.dispersion is not None:
            mf.disp = p.dispersion
        if p.density_fit:
            mf = mf.density_fit(auxbasis=p.auxbasis)  # None: PySCF's choice for basis and xc
        mf.conv_tol = float(p.conv_tol_Ha)
        mf.max_cycle = int(p.max_cycle)
        mf.init_guess = str(p.init_guess)
        mf.max_memory = float(p.max_memory_MB)
        mf.verbose = 0
        return mf

    # ------------------------------------------------------------------- running
    def run_scf(self, atoms: Atoms, *, conv_tol_Ha: float | None = None) -> CascadeResult:
        """A converged SCF for ``atoms`` (no validation), through the recovery cascade.

        Raises:
            InvalidStructure: PySCF refused to build the molecule.
            LabelFailed: every attempt failed; carries the attempts.
        """
        p = self.parameters
        if p.num_threads:
            lib.num_threads(int(p.num_threads))
        try:
            mol = self.build_mol(atoms)
        except (RuntimeError, KeyError, ValueError) as err:
            raise InvalidStructure(f"PySCF cannot build this molecule: {type(err).__name__}: {err}") from err
        mf = self.build_scf(mol)
        if conv_tol_Ha is not None:
            mf.conv_tol = float(conv_tol_Ha)
        dm_reuse = None
        if p.reuse_guess:
            dm_reuse = self._guesses.density_for(mf, atoms, max_displacement_A=float(p.reuse_max_displacement_A))
        recovery_max_cycle = p.recovery_max_cycle or max(2 * int(p.max_cycle), 100)
        result = run_cascade(mf, recovery=p.recovery, recovery_max_cycle=int(recovery_max_cycle),
                             dm_reuse=dm_reuse, on_fail=LabelFailed)
        if p.reuse_guess:
            self._guesses.store(result.mf, atoms)
        return result

    def _compute(self, atoms: Atoms) -> Label:
        result = self.run_scf(atoms)
        mf = result.mf
        try:
            gradients = mf.nuc_grad_method().set(verbose=0)
            if self.parameters.method != "hf":
                gradients.grid_response = bool(self.parameters.grid_response)
            grad_Ha_Bohr = gradients.kernel()
            dipole_au = mf.dip_moment(unit="AU", verbose=0)
        except Exception as err:  # noqa: BLE001 - a post-SCF failure is a failed label
            raise LabelFailed(f"gradient or dipole failed: {type(err).__name__}: {err}", result.attempts) from err
        forces = -np.asarray(grad_Ha_Bohr) * (Hartree / Bohr)
        if not np.all(np.isfinite(forces)):
            raise LabelFailed("non-finite forces from a converged SCF", result.attempts)
        return Label(
            energy=float(mf.e_tot) * Hartree, forces=forces,
            dipole=np.asarray(dipole_au) * Bohr, converged=True,
            n_scf_cycles=result.n_scf_cycles, wall_s=0.0, attempts=result.attempts,
        )

    # --------------------------------------------------------------- vibrations
    def hessian(self, atoms: Atoms) -> np.ndarray:
        """Analytic Hessian of the energy, (3N, 3N), eV/Å², from PySCF.

        Raises:
            InvalidStructure: as `validate`.
            LabelFailed: the SCF did not converge.
            NotImplementedError: PySCF has no analytic Hessian for this method
                (ROHF/ROKS, some functionals or density-fitting combinations).
        """
        self.validate(atoms)
        if self.restricted and int(self.parameters.multiplicity) > 1:
            raise NotImplementedError(
                f"PySCF {pyscf_version} has no analytic Hessian for restricted open-shell "
                "(ROHF/ROKS) references; use restricted=False (UHF/UKS)"
            )
        mf = self.run_scf(atoms).mf
        try:
            hess = mf.Hessian().set(verbose=0).kernel()
        except (NotImplementedError, AttributeError, TypeError) as err:
            raise NotImplementedError(
                f"PySCF {pyscf_version} has no analytic Hessian for {type(mf).__name__} "
                f"with {self.parameters.method}: {err}"
            ) from err
        n = len(atoms)
        return np.asarray(hess).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * (Hartree / Bohr**2)

    def frequencies(self, atoms: Atoms) -> np.ndarray:
        """Harmonic wavenumbers, cm⁻¹ (3N − 6 or 3N − 5; imaginary ones negative). Raises as `hessian`."""
        return vibrations.harmonic_analysis(self.hessian(atoms), atoms).frequencies_cm1

    def vibrations(self, atoms: Atoms, *, ir: bool = True, ir_step_A: float = 0.005,
                   ir_conv_tol_Ha: float = 1e-11) -> vibrations.VibrationalModes:
        """Harmonic frequencies (cm⁻¹), normal modes and IR intensities (km/mol).

        IR intensities come from central differences of the dipole along each
        normal mode (largest atomic step ``ir_step_A``), with SCFs converged to
        ``ir_conv_tol_Ha``. Raises as `hessian`.
        """
        modes = vibrations.harmonic_analysis(self.hessian(atoms), atoms)
        if not ir:
            return modes

        def dipole_e_A(displaced: Atoms) -> np.ndarray:
            mf = self.run_scf(displaced, conv_tol_Ha=ir_conv_tol_Ha).mf
            return np.asarray(mf.dip_moment(unit="AU", verbose=0)) * Bohr

        return vibrations.with_ir_intensities(modes, atoms, dipole_e_A, step_A=ir_step_A)


__all__: Sequence[str] = ["DISPERSION_MODELS", "PySCFBackend"]
