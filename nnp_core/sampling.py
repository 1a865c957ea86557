"""Initial-data samplers: generation 0 before any committee exists.

Harmonic samplers start from a minimum-energy structure and its Cartesian Hessian
(eV/Å², e.g. from ``ase.vibrations.Vibrations`` or a reference code):

- :func:`normal_modes` projects translations and rotations out of the mass-weighted
  Hessian and diagonalises the rest;
- :func:`normal_mode_sampling` draws each mode's amplitude from the classical
  harmonic Boltzmann distribution (or, with ``quantum=True``, its quantum position
  distribution);
- :func:`wigner_sampling` draws positions *and* momenta from the quantum harmonic
  Wigner distribution;
- :func:`random_displacements` adds Gaussian Cartesian noise, no Hessian needed;
- :func:`md_sampling` takes frames from Langevin MD driven by any ASE calculator
  (typically a cheap level such as GFN2-xTB): anharmonic, and it turns torsions that
  harmonic sampling only shears.

Conventions. Mass-weighted coordinates are ``q_i = sqrt(m_i) x_i`` (Å·√amu). The
eigenvalues of the mass-weighted Hessian are ω² in eV/(Å²·amu), which is exactly
(1 / ASE time unit)², so ω comes out in rad per ASE time unit (ASE time unit =
Å·√(amu/eV) ≈ 10.18 fs). ħ in eV·(ASE time) is ``units._hbar * units.J * units.s``.
All samplers are deterministic functions of ``seed`` (a ``numpy.random.Generator``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from ase import Atoms, units
from ase.calculators.calculator import Calculator

#: ħ in eV · (ASE time unit)
HBAR_EV_ASE_TIME = units._hbar * units.J * units.s
#: relative asymmetry max|H - Hᵀ| / max|H| above which a Hessian is refused
HESSIAN_ASYMMETRY_TOL = 1e-2
#: singular values of the translation/rotation basis below this (relative) are dropped,
#: which is how linear molecules end up with 5 external modes instead of 6
EXTERNAL_RANK_TOL = 1e-6


@dataclass(frozen=True)
class NormalModes:
    """Vibrational normal modes of a structure, translations and rotations removed.

    Attributes:
        frequencies_cm1: (M,) wavenumbers in cm⁻¹, ascending; negative values are
            imaginary modes kept because they were within the tolerance.
        angular_frequencies: (M,) ω in rad per ASE time unit, signed like
            ``frequencies_cm1``.
        mass_weighted_modes: (M, 3N) orthonormal eigenvectors of the projected
            mass-weighted Hessian (rows).
        cartesian_displacements: (M, N, 3) Cartesian displacement (Å) produced by a
            unit mass-weighted amplitude (1 Å·√amu) along each mode: ``e / sqrt(m)``.
        masses_amu: (N,) masses used for the weighting.
        n_external: number of translations/rotations projected out (6, 5 or 3).
        n_skipped_imaginary: imaginary modes dropped by ``skip_imaginary=True``.
    """

    frequencies_cm1: np.ndarray
    angular_frequencies: np.ndarray
    mass_weighted_modes: np.ndarray
    cartesian_displacements: np.ndarray
    masses_amu: np.ndarray
    n_external: int
    n_skipped_imaginary: int = 0

    @property
    def n_modes(self) -> int:
        return int(self.frequencies_cm1.shape[0])


def angular_frequency_to_cm1(omega: np.ndarray) -> np.ndarray:
    """Convert ω (rad / ASE time unit) to wavenumbers (cm⁻¹), keeping the sign."""
    return np.asarray(omega) * HBAR_EV_ASE_TIME / units.invcm


def _check_hessian(atoms: Atoms, hessian_eV_A2: np.ndarray) -> np.ndarray:
    """Return the Hessian as a symmetric (3N, 3N) float array, or raise ValueError."""
    n_dof = 3 * len(atoms)
    hessian = np.asarray(hessian_eV_A2, dtype=np.float64)
    if hessian.shape == (len(atoms), 3, len(atoms), 3):
        hessian = hessian.reshape(n_dof, n_dof)
    if hessian.shape != (n_dof, n_dof):
        raise ValueError(
            f"hessian has shape {hessian.shape}; expected ({n_dof}, {n_dof}) or "
            f"({len(atoms)}, 3, {len(atoms)}, 3) for {len(atoms)} atoms"
        )
    if not np.all(np.isfinite(hessian)):
        raise ValueError("hessian contains non-finite values")
    scale = float(np.max(np.abs(hessian))) or 1.0
    asymmetry = float(np.max(np.abs(hessian - hessian.T))) / scale
    if asymmetry > HESSIAN_ASYMMETRY_TOL:
        raise ValueError(
            f"hessian is not symmetric: max|H - Hᵀ| / max|H| = {asymmetry:.3g} "
            f"> {HESSIAN_ASYMMETRY_TOL}"
        )
    return 0.5 * (hessian + hessian.T)


def _check_structure(atoms: Atoms) -> np.ndarray:
    """Validate positions and masses; return masses (amu)."""
    if len(atoms) == 0:
        raise ValueError("atoms is empty")
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError("atoms has non-finite positions")
    masses = np.asarray(atoms.get_masses(), dtype=np.float64)
    if np.any(~np.isfinite(masses)) or np.any(masses <= 0.0):
        raise ValueError(f"atoms has non-positive or non-finite masses: {masses}")
    return masses


def external_basis(atoms: Atoms) -> np.ndarray:
    """Orthonormal basis (3N, k) of translations and rotations in mass-weighted coords.

    Translations are ``sqrt(m_i) e_a``; rotations are ``sqrt(m_i) (e_a × (r_i - r_com))``.
    Rank-deficient directions are dropped, so k is 6 for a nonlinear molecule, 5 for a
    linear one and 3 for a single atom. For a periodic structure (any ``pbc``) rotations
    are not symmetries and only the 3 translations are returned.
    """
    masses = _check_structure(atoms)
    sqrt_m = np.sqrt(masses)
    centred = atoms.positions - np.average(atoms.positions, axis=0, weights=masses)
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_m[:, None] * axis[None, :]).ravel())
    if not np.any(atoms.pbc):
        for axis in np.eye(3):
            vectors.append((sqrt_m[:, None] * np.cross(axis, centred)).ravel())
    stacked = np.stack(vectors, axis=1)
    left, singular, _ = np.linalg.svd(stacked, full_matrices=False)
    keep = singular > EXTERNAL_RANK_TOL * singular[0]
    return left[:, keep]


def normal_modes(
    atoms: Atoms,
    hessian_eV_A2: np.ndarray,
    *,
    imaginary_tol_cm1: float = 10.0,
    skip_imaginary: bool = False,
) -> NormalModes:
    """Harmonic normal modes with translations and rotations projected out.

    The mass-weighted Hessian ``M^-1/2 H M^-1/2`` is restricted to the orthogonal
    complement of :func:`external_basis` and diagonalised there, so exactly 3N−6
    (3N−5 linear, 3N−3 periodic) modes are returned, whatever numerical noise the
    Hessian carries in its null space.

    Args:
        atoms: the reference structure (should be a minimum); masses from ``atoms``.
        hessian_eV_A2: (3N, 3N) or (N, 3, N, 3) Cartesian Hessian in eV/Å².
        imaginary_tol_cm1: imaginary modes up to this magnitude (cm⁻¹) are treated as
            numerical noise and kept, with a negative frequency.
        skip_imaginary: drop imaginary modes beyond the tolerance instead of raising.

    Raises:
        ValueError: bad Hessian shape, non-finite or asymmetric Hessian, non-finite
            positions, a structure with no vibrational modes, negative tolerance, or
            imaginary frequencies beyond ``imaginary_tol_cm1`` (unless skipped).
    """
    if not np.isfinite(imaginary_tol_cm1) or imaginary_tol_cm1 < 0.0:
        raise ValueError(f"imaginary_tol_cm1 must be >= 0, got {imaginary_tol_cm1}")
    hessian = _check_hessian(atoms, hessian_eV_A2)
    masses = _check_structure(atoms)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    mw_hessian = inv_sqrt_m[:, None] * hessian * inv_sqrt_m[None, :]

    external = external_basis(atoms)
    n_dof = hessian.shape[0]
    if external.shape[1] >= n_dof:
        raise ValueError(f"{len(atoms)} atom(s) have no vibrational modes")
    internal = scipy.linalg.null_space(external.T)
    eigenvalues, vectors = np.linalg.eigh(internal.T @ mw_hessian @ internal)
    modes = (internal @ vectors).T

    omega = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues))
    freqs_cm1 = angular_frequency_to_cm1(omega)
    imaginary = freqs_cm1 < -imaginary_tol_cm1
    n_imaginary = int(np.count_nonzero(imaginary))
    if n_imaginary and not skip_imaginary:
        raise ValueError(
            f"{n_imaginary} imaginary frequenc{'y' if n_imaginary == 1 else 'ies'} "
            f"beyond {imaginary_tol_cm1} cm⁻¹ (largest {-freqs_cm1.min():.1f}i cm⁻¹): "
            "the structure is not a minimum; optimise it or pass skip_imaginary=True"
        )
    keep = ~imaginary
    modes = modes[keep]
    return NormalModes(
        frequencies_cm1=freqs_cm1[keep],
        angular_frequencies=omega[keep],
        mass_weighted_modes=modes,
        cartesian_displacements=(modes * inv_sqrt_m[None, :]).reshape(-1, len(atoms), 3),
        masses_amu=masses,
        n_external=int(external.shape[1]),
        n_skipped_imaginary=n_imaginary,
    )


def harmonic_position_variance(
    omega: np.ndarray, *, temperature_K: float, quantum: bool
) -> np.ndarray:
    """Variance of a mass-weighted normal coordinate (Å²·amu) at ``temperature_K``.

    Classical: kT/ω². Quantum (Wigner position marginal): ħ/(2ω)·coth(ħω/2kT), which
    is ħ/(2ω) at 0 K and tends to kT/ω² at high temperature. ω > 0 (rad/ASE time).
    """
    omega = np.asarray(omega, dtype=np.float64)
    kt = units.kB * temperature_K
    if not quantum:
        return kt / omega**2
    return HBAR_EV_ASE_TIME / (2.0 * omega) * _coth_half_beta_hbar_omega(omega, kt)


def harmonic_momentum_variance(omega: np.ndarray, *, temperature_K: float) -> np.ndarray:
    """Wigner variance of a mass-weighted normal momentum: ħω/2·coth(ħω/2kT).

    The mass-weighted momentum is ``sqrt(m) v`` (Å·√amu / ASE time), so its variance is
    in eV; it equals ω² times the quantum position variance.
    """
    omega = np.asarray(omega, dtype=np.float64)
    kt = units.kB * temperature_K
    return HBAR_EV_ASE_TIME * omega / 2.0 * _coth_half_beta_hbar_omega(omega, kt)


def _coth_half_beta_hbar_omega(omega: np.ndarray, kt_eV: float) -> np.ndarray:
    """coth(ħω / 2kT), equal to 1 at kT = 0."""
    if kt_eV == 0.0:
        return np.ones_like(omega)
    return 1.0 / np.tanh(HBAR_EV_ASE_TIME * omega / (2.0 * kt_eV))


def _check_sampling_args(temperature_K: float, n_samples: int, min_frequency_cm1: float) -> None:
    if not np.isfinite(temperature_K) or temperature_K < 0.0:
        raise ValueError(f"temperature_K must be finite and >= 0, got {temperature_K}")
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    if not np.isfinite(min_frequency_cm1) or min_frequency_cm1 <= 0.0:
        raise ValueError(f"min_frequency_cm1 must be > 0, got {min_frequency_cm1}")


def _sampled_modes(modes: NormalModes, min_frequency_cm1: float) -> tuple[np.ndarray, np.ndarray]:
    """(ω, mass-weighted vectors) of the modes stiff enough to sample."""
    stiff = modes.frequencies_cm1 >= min_frequency_cm1
    return modes.angular_frequencies[stiff], modes.mass_weighted_modes[stiff]


def _to_cartesian(mass_weighted: np.ndarray, vectors: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """(S, M) normal-mode coordinates → (S, N, 3) Cartesian: Σ_k c_k e_k / sqrt(m)."""
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    return (mass_weighted @ vectors * inv_sqrt_m).reshape(mass_weighted.shape[0], -1, 3)


def _make_frame(
    atoms: Atoms, displacement_A: np.ndarray, info: dict, velocities: np.ndarray | None
) -> Atoms:
    """A calculator-free copy of ``atoms`` displaced, tagged with provenance in info."""
    frame = atoms.copy()
    frame.calc = None
    frame.positions = atoms.positions + displacement_A
    frame.set_array("momenta", None)
    if velocities is not None:
        frame.set_velocities(velocities)
    frame.info.update(info)
    return frame


def normal_mode_sampling(
    atoms: Atoms,
    hessian_eV_A2: np.ndarray,
    *,
    temperature_K: float,
    n_samples: int,
    seed: int,
    quantum: bool = False,
    min_frequency_cm1: float = 10.0,
    imaginary_tol_cm1: float = 10.0,
    skip_imaginary: bool = False,
) -> list[Atoms]:
    """Harmonic Boltzmann samples of the positions around ``atoms``.

    Each normal coordinate Q_k is drawn independently from N(0, σ_k²) with
    σ_k² = kT/ω_k² (classical) or ħ/(2ω_k)·coth(ħω_k/2kT) (``quantum=True``), and the
    frame is ``x0 + Σ_k Q_k e_k / sqrt(m)``. In a harmonic potential the mean potential
    energy is then (number of sampled modes)·kT/2 classically. Modes softer than
    ``min_frequency_cm1`` are left at zero amplitude (their harmonic amplitude is
    unbounded). Frames carry no momenta and no calculator; ``info`` records the sampler,
    temperature, seed and sample index. Displacements keep the centre of mass and, to
    first order, the orientation (Eckart conditions).

    Raises:
        ValueError: see :func:`normal_modes`; negative or non-finite temperature,
            ``n_samples < 1``, ``min_frequency_cm1 <= 0``.
    """
    _check_sampling_args(temperature_K, n_samples, min_frequency_cm1)
    modes = normal_modes(
        atoms, hessian_eV_A2, imaginary_tol_cm1=imaginary_tol_cm1, skip_imaginary=skip_imaginary
    )
    omega, vectors = _sampled_modes(modes, min_frequency_cm1)
    sigma_q = np.sqrt(
        harmonic_position_variance(omega, temperature_K=temperature_K, quantum=quantum)
    )
    rng = np.random.default_rng(seed)
    amplitudes = rng.standard_normal((int(n_samples), omega.shape[0])) * sigma_q
    displacements = _to_cartesian(amplitudes, vectors, modes.masses_amu)
    sampler = "normal_mode_quantum" if quantum else "normal_mode"
    return [
        _make_frame(atoms, disp, _info(sampler, temperature_K, seed, i), None)
        for i, disp in enumerate(displacements)
    ]


def wigner_sampling(
    atoms: Atoms,
    hessian_eV_A2: np.ndarray,
    *,
    temperature_K: float,
    n_samples: int,
    seed: int,
    min_frequency_cm1: float = 10.0,
    imaginary_tol_cm1: float = 10.0,
    skip_imaginary: bool = False,
) -> list[Atoms]:
    """Phase-space samples from the quantum harmonic Wigner distribution.

    For each mode, Q_k ~ N(0, ħ/(2ω_k)·coth(ħω_k/2kT)) and its conjugate momentum
    P_k ~ N(0, ħω_k/2·coth(ħω_k/2kT)) (mass-weighted). Positions are
    ``x0 + Σ Q_k e_k / sqrt(m)`` and velocities ``Σ P_k e_k / sqrt(m)`` (Å / ASE time,
    attached with ``set_velocities``), so the mean potential and mean kinetic energy
    are each Σ_k ħω_k/4·coth(ħω_k/2kT) — the zero-point energy over two at 0 K, kT/2
    per mode at high T. Momenta have no centre-of-mass or angular component.
    Modes softer than ``min_frequency_cm1`` are left at rest.

    Raises:
        ValueError: as :func:`normal_mode_sampling`.
    """
    _check_sampling_args(temperature_K, n_samples, min_frequency_cm1)
    modes = normal_modes(
        atoms, hessian_eV_A2, imaginary_tol_cm1=imaginary_tol_cm1, skip_imaginary=skip_imaginary
    )
    omega, vectors = _sampled_modes(modes, min_frequency_cm1)
    sigma_q = np.sqrt(harmonic_position_variance(omega, temperature_K=temperature_K, quantum=True))
    sigma_p = np.sqrt(harmonic_momentum_variance(omega, temperature_K=temperature_K))
    rng = np.random.default_rng(seed)
    shape = (int(n_samples), omega.shape[0])
    amplitudes = rng.standard_normal(shape) * sigma_q
    momenta_mw = rng.standard_normal(shape) * sigma_p
    displacements = _to_cartesian(amplitudes, vectors, modes.masses_amu)
    velocities = _to_cartesian(momenta_mw, vectors, modes.masses_amu)
    return [
        _make_frame(atoms, disp, _info("wigner", temperature_K, seed, i), vel)
        for i, (disp, vel) in enumerate(zip(displacements, velocities))
    ]


def random_displacements(
    atoms: Atoms, *, stddev_A: float, n_samples: int, seed: int
) -> list[Atoms]:
    """Frames with every Cartesian coordinate displaced by N(0, stddev_A²) (Å).

    No Hessian needed; the centre of mass moves a little (by ~stddev_A/sqrt(N)).
    Frames carry no momenta and no calculator.

    Raises:
        ValueError: negative or non-finite ``stddev_A``, ``n_samples < 1``,
            non-finite positions.
    """
    if not np.isfinite(stddev_A) or stddev_A < 0.0:
        raise ValueError(f"stddev_A must be finite and >= 0, got {stddev_A}")
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    _check_structure(atoms)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((int(n_samples), len(atoms), 3)) * stddev_A
    info = {"sampler": "random", "stddev_A": float(stddev_A), "seed": seed}
    return [
        _make_frame(atoms, disp, {**info, "sample_index": i}, None) for i, disp in enumerate(noise)
    ]


def md_sampling(
    atoms: Atoms,
    calculator: Calculator,
    *,
    temperature_K: float,
    n_samples: int,
    seed: int,
    interval_steps: int = 100,
    equilibration_steps: int | None = None,
    timestep_fs: float = 0.5,
    friction_per_fs: float = 0.01,
) -> list[Atoms]:
    """Frames every ``interval_steps`` of one Langevin trajectory at ``temperature_K``.

    Velocities start Maxwell-Boltzmann (no centre-of-mass motion or rotation); the first
    ``equilibration_steps`` (default: ``interval_steps``) are discarded. ``calculator``
    drives the dynamics only: frames carry positions and velocities, no calculator and
    no energies, and ``info`` records the sampler, temperature, seed and sample index.

    Raises:
        ValueError: negative or non-finite temperature, ``n_samples < 1``,
            ``interval_steps < 1``, a negative ``equilibration_steps``, non-finite
            positions, or a trajectory that reaches non-finite positions.
    """
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    _check_sampling_args(temperature_K, n_samples, 1.0)
    equilibration_steps = interval_steps if equilibration_steps is None else equilibration_steps
    if int(interval_steps) != interval_steps or interval_steps < 1:
        raise ValueError(f"interval_steps must be a positive integer, got {interval_steps}")
    if int(equilibration_steps) != equilibration_steps or equilibration_steps < 0:
        raise ValueError(f"equilibration_steps must be an integer >= 0, got {equilibration_steps}")
    _check_structure(atoms)
    work = atoms.copy()
    work.calc = calculator
    # FixCom rather than Langevin(fixcm=True), which runs small molecules far too hot
    # (EMT water: 5.5x the kinetic energy of the target temperature; FixCom: 0.99x)
    work.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng)
    Stationary(work)
    ZeroRotation(work)
    dyn = Langevin(work, timestep_fs * units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    dyn.run(int(equilibration_steps))
    frames = []
    for i in range(int(n_samples)):
        dyn.run(int(interval_steps))
        if not np.all(np.isfinite(work.positions)):
            raise ValueError(f"the sampling MD reached non-finite positions before frame {i}")
        frames.append(_make_frame(atoms, work.positions - atoms.positions,
                                  {**_info("md", temperature_K, seed, i), "interval_steps": int(interval_steps)},
                                  work.get_velocities()))
    return frames


def _info(sampler: str, temperature_K: float, seed: int, index: int) -> dict:
    return {
        "sampler": sampler,
        "temperature_K": float(temperature_K),
        "seed": seed,
        "sample_index": index,
    }
