"""Harmonic samplers: frequencies, equipartition, Wigner energies, Eckart conditions."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from ase.vibrations import Vibrations

from nnp_core.sampling import (
    HBAR_EV_ASE_TIME,
    external_basis,
    harmonic_position_variance,
    md_sampling,
    normal_mode_sampling,
    normal_modes,
    random_displacements,
    wigner_sampling,
)

N_SAMPLES = 4000
#: sampled means must lie within this many standard errors of the analytic value
N_SIGMA = 4.0


def _emt_minimum_and_hessian(atoms: Atoms, directory) -> tuple[Atoms, np.ndarray, object]:
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=1e-5, steps=500)
    vib = Vibrations(
        atoms, name=str(directory / atoms.get_chemical_formula()), delta=0.005, nfree=4
    )
    vib.run()
    data = vib.get_vibrations()
    minimum = atoms.copy()
    return minimum, data.get_hessian_2d(), data


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """EMT 'water' at its EMT minimum: 3 atoms, nonlinear, 3 vibrational modes."""
    atoms = Atoms("H2O", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return _emt_minimum_and_hessian(atoms, tmp_path_factory.mktemp("vib_h2o"))


@pytest.fixture(scope="module")
def nitrogen(tmp_path_factory):
    """EMT N2: linear, a single vibrational mode."""
    atoms = Atoms("N2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.1]])
    return _emt_minimum_and_hessian(atoms, tmp_path_factory.mktemp("vib_n2"))


def _harmonic_energy(frames: list[Atoms], reference: Atoms, hessian: np.ndarray) -> np.ndarray:
    disp = np.stack([f.positions - reference.positions for f in frames]).reshape(len(frames), -1)
    return 0.5 * np.einsum("si,ij,sj->s", disp, hessian, disp)


def _kinetic_energy(frames: list[Atoms]) -> np.ndarray:
    return np.array([f.get_kinetic_energy() for f in frames])


def _assert_mean_close(values: np.ndarray, expected: float, per_mode_means: np.ndarray) -> None:
    """Each mode's energy is E_k·χ²₁, so the standard error of the mean is sqrt(2ΣE_k²/S)."""
    stderr = np.sqrt(2.0 * np.sum(per_mode_means**2) / values.size)
    assert abs(values.mean() - expected) < N_SIGMA * stderr, (values.mean(), expected, stderr)


def _synthetic_modes(atoms: Atoms, omega: np.ndarray, rng) -> np.ndarray:
    """Orthonormal mass-weighted vectors spanning the complement of translations/rotations."""
    external = external_basis(atoms)
    random = rng.standard_normal((3 * len(atoms), len(omega)))
    random -= external @ (external.T @ random)
    vectors, _ = np.linalg.qr(random)
    return vectors


# ------------------------------------------------------------------------- modes


@pytest.mark.parametrize("system, n_external", [("water", 6), ("nitrogen", 5)])
def test_frequencies_match_ase_vibrations(system, n_external, request):
    atoms, hessian, data = request.getfixturevalue(system)
    modes = normal_modes(atoms, hessian)
    n_vib = 3 * len(atoms) - n_external
    ase_freqs = np.sort(np.real(data.get_frequencies()))[-n_vib:]
    assert modes.n_external == n_external
    assert modes.n_modes == n_vib
    np.testing.assert_allclose(modes.frequencies_cm1, ase_freqs, rtol=1e-4)
    zpe = np.sum(HBAR_EV_ASE_TIME * modes.angular_frequencies) / 2.0
    np.testing.assert_allclose(zpe, data.get_zero_point_energy(), rtol=1e-3)


def test_modes_are_orthonormal_and_free_of_translation_and_rotation(water):
    atoms, hessian, _ = water
    modes = normal_modes(atoms, hessian)
    vectors = modes.mass_weighted_modes
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(modes.n_modes), atol=1e-12)
    np.testing.assert_allclose(vectors @ external_basis(atoms), 0.0, atol=1e-12)
    sqrt_m = np.sqrt(atoms.get_masses())[None, :, None]
    np.testing.assert_allclose(
        modes.cartesian_displacements * sqrt_m, vectors.reshape(-1, len(atoms), 3), atol=1e-12
    )


def test_projection_removes_external_contamination():
    """A synthetic Hessian with known frequencies plus stiffness along translations and
    rotations (as a Hessian taken off the minimum has) gives back exactly those frequencies."""
    rng = np.random.default_rng(3)
    atoms = Atoms("CH2O", positions=rng.normal(scale=1.0, size=(4, 3)))
    omega = np.array([0.05, 0.08, 0.1, 0.2, 0.3, 0.4])  # rad / ASE time unit
    vectors = _synthetic_modes(atoms, omega, rng)
    external = external_basis(atoms)
    mw_hessian = (
        vectors @ np.diag(omega**2) @ vectors.T
        + external @ np.diag(np.arange(1, 7) * 0.01) @ external.T
    )
    sqrt_m = np.repeat(np.sqrt(atoms.get_masses()), 3)
    hessian = sqrt_m[:, None] * mw_hessian * sqrt_m[None, :]
    modes = normal_modes(atoms, hessian.reshape(4, 3, 4, 3))
    np.testing.assert_allclose(modes.angular_frequencies, omega, rtol=1e-10)


def test_external_basis_sizes():
    assert external_basis(Atoms("H", positions=[[0, 0, 0]])).shape == (3, 3)
    assert (
        external_basis(Atoms("CO2", positions=[[0, 0, 0], [0, 0, 1.16], [0, 0, -1.16]])).shape[1]
        == 5
    )
    periodic = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=[3.6] * 3, pbc=True)
    assert external_basis(periodic).shape[1] == 3


def test_imaginary_frequency_raises_or_is_skipped(water):
    atoms, hessian, _ = water
    modes = normal_modes(atoms, hessian)
    soft = modes.mass_weighted_modes[0]
    sqrt_m = np.repeat(np.sqrt(atoms.get_masses()), 3)
    shift = 2.0 * modes.angular_frequencies[0] ** 2  # turns ω₀² into −ω₀²
    saddle = hessian - shift * np.outer(sqrt_m * soft, sqrt_m * soft)
    with pytest.raises(ValueError, match="imaginary"):
        normal_modes(atoms, saddle)
    skipped = normal_modes(atoms, saddle, skip_imaginary=True)
    assert skipped.n_skipped_imaginary == 1
    np.testing.assert_allclose(skipped.frequencies_cm1, modes.frequencies_cm1[1:], rtol=1e-8)
    tolerant = normal_modes(atoms, saddle, imaginary_tol_cm1=1.1 * modes.frequencies_cm1[0])
    np.testing.assert_allclose(tolerant.frequencies_cm1[0], -modes.frequencies_cm1[0], rtol=1e-8)
    with pytest.raises(ValueError, match="imaginary"):
        normal_mode_sampling(atoms, saddle, temperature_K=300.0, n_samples=2, seed=0)


@pytest.mark.parametrize(
    "hessian, match",
    [
        (np.zeros((8, 8)), "shape"),
        (np.full((9, 9), np.nan), "non-finite"),
        (np.triu(np.ones((9, 9))), "symmetric"),
    ],
)
def test_bad_hessian_raises(water, hessian, match):
    atoms, _, _ = water
    with pytest.raises(ValueError, match=match):
        normal_modes(atoms, hessian)


def test_single_atom_has_no_modes():
    with pytest.raises(ValueError, match="no vibrational modes"):
        normal_modes(Atoms("Cu", positions=[[0, 0, 0]]), np.zeros((3, 3)))


# ---------------------------------------------------------------------- sampling


def test_classical_samples_obey_equipartition(water):
    atoms, hessian, _ = water
    temperature_K = 300.0
    frames = normal_mode_sampling(
        atoms, hessian, temperature_K=temperature_K, n_samples=N_SAMPLES, seed=1
    )
    kt_half = units.kB * temperature_K / 2.0
    energy = _harmonic_energy(frames, atoms, hessian)
    _assert_mean_close(energy, 3 * kt_half, np.full(3, kt_half))
    assert all(not f.has("momenta") and f.calc is None for f in frames)
    assert frames[7].info == {
        "sampler": "normal_mode",
        "temperature_K": 300.0,
        "seed": 1,
        "sample_index": 7,
    }


def test_linear_molecule_samples_its_one_mode(nitrogen):
    atoms, hessian, _ = nitrogen
    frames = normal_mode_sampling(atoms, hessian, temperature_K=500.0, n_samples=N_SAMPLES, seed=2)
    kt_half = units.kB * 500.0 / 2.0
    _assert_mean_close(_harmonic_energy(frames, atoms, hessian), kt_half, np.array([kt_half]))
    bond = np.array([np.linalg.norm(f.positions[1] - f.positions[0]) for f in frames])
    assert bond.std() > 0.0
    # only the stretch moves: no bending away from the axis
    axis = atoms.positions[1] - atoms.positions[0]
    for frame in frames[:20]:
        along = frame.positions[1] - frame.positions[0]
        np.testing.assert_allclose(np.cross(along, axis), 0.0, atol=1e-12)


def _wigner_mode_energy(omega: np.ndarray, temperature_K: float) -> np.ndarray:
    """Mean potential (= mean kinetic) energy per mode: ħω/4·coth(ħω/2kT)."""
    hw = HBAR_EV_ASE_TIME * omega
    if temperature_K == 0.0:
        return hw / 4.0
    return hw / 4.0 / np.tanh(hw / (2.0 * units.kB * temperature_K))


@pytest.mark.parametrize("temperature_K", [0.0, 300.0, 30000.0])
def test_wigner_potential_and_kinetic_energies(water, temperature_K):
    atoms, hessian, _ = water
    omega = normal_modes(atoms, hessian).angular_frequencies
    frames = wigner_sampling(
        atoms, hessian, temperature_K=temperature_K, n_samples=N_SAMPLES, seed=4
    )
    per_mode = _wigner_mode_energy(omega, temperature_K)
    _assert_mean_close(_harmonic_energy(frames, atoms, hessian), per_mode.sum(), per_mode)
    _assert_mean_close(_kinetic_energy(frames), per_mode.sum(), per_mode)
    if temperature_K > 10000.0:  # classical limit: kT/2 per mode
        np.testing.assert_allclose(per_mode, units.kB * temperature_K / 2.0, rtol=0.02)


def test_quantum_position_variance_limits(water):
    atoms, hessian, _ = water
    omega = normal_modes(atoms, hessian).angular_frequencies
    hot = dict(temperature_K=1e6)
    np.testing.assert_allclose(
        harmonic_position_variance(omega, quantum=True, **hot),
        harmonic_position_variance(omega, quantum=False, **hot),
        rtol=1e-3,
    )
    # at room temperature the O-H stretches are frozen in their zero-point motion
    room_q = harmonic_position_variance(omega, temperature_K=300.0, quantum=True)
    room_c = harmonic_position_variance(omega, temperature_K=300.0, quantum=False)
    assert np.all(room_q > room_c) and room_q[-1] > 5.0 * room_c[-1]
    frames = normal_mode_sampling(
        atoms, hessian, temperature_K=0.0, n_samples=N_SAMPLES, seed=5, quantum=True
    )
    per_mode = _wigner_mode_energy(omega, 0.0)
    _assert_mean_close(_harmonic_energy(frames, atoms, hessian), per_mode.sum(), per_mode)


def test_samples_keep_centre_of_mass_and_orientation(water):
    atoms, hessian, _ = water
    masses = atoms.get_masses()
    centred = atoms.positions - atoms.get_center_of_mass()
    classical = normal_mode_sampling(atoms, hessian, temperature_K=1000.0, n_samples=50, seed=6)
    wigner = wigner_sampling(atoms, hessian, temperature_K=1000.0, n_samples=50, seed=6)
    for frame in classical + wigner:
        disp = frame.positions - atoms.positions
        assert np.abs(disp).max() > 1e-3
        np.testing.assert_allclose(
            frame.get_center_of_mass(), atoms.get_center_of_mass(), atol=1e-12
        )
        np.testing.assert_allclose(
            (masses[:, None] * np.cross(centred, disp)).sum(0), 0.0, atol=1e-12
        )
    for frame in wigner:
        momenta = frame.get_momenta()
        assert np.abs(momenta).max() > 0.0
        np.testing.assert_allclose(momenta.sum(0), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.cross(centred, momenta).sum(0), 0.0, atol=1e-12)


@pytest.mark.parametrize("sampler", [normal_mode_sampling, wigner_sampling])
def test_samples_are_reproducible_from_seed(water, sampler):
    atoms, hessian, _ = water
    first = sampler(atoms, hessian, temperature_K=300.0, n_samples=5, seed=11)
    again = sampler(atoms, hessian, temperature_K=300.0, n_samples=5, seed=11)
    other = sampler(atoms, hessian, temperature_K=300.0, n_samples=5, seed=12)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_velocities(), b.get_velocities())
        assert not np.allclose(a.positions, c.positions)
    np.testing.assert_array_equal(atoms.positions, water[0].positions)


def test_random_displacements():
    atoms = Atoms("H2O", positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])
    frames = random_displacements(atoms, stddev_A=0.05, n_samples=2000, seed=0)
    disp = np.stack([f.positions - atoms.positions for f in frames])
    assert abs(disp.std() - 0.05) < 0.002 and abs(disp.mean()) < 0.002
    again = random_displacements(atoms, stddev_A=0.05, n_samples=3, seed=0)
    np.testing.assert_array_equal(again[2].positions, frames[2].positions)
    still = random_displacements(atoms, stddev_A=0.0, n_samples=2, seed=0)
    np.testing.assert_array_equal(still[1].positions, atoms.positions)
    assert frames[0].info["sampler"] == "random"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature_K=-1.0, n_samples=2, seed=0), "temperature_K"),
        (dict(temperature_K=np.nan, n_samples=2, seed=0), "temperature_K"),
        (dict(temperature_K=300.0, n_samples=0, seed=0), "n_samples"),
        (dict(temperature_K=300.0, n_samples=2, seed=0, min_frequency_cm1=0.0), "min_frequency"),
    ],
)
def test_bad_sampling_arguments_raise(water, kwargs, match):
    atoms, hessian, _ = water
    for sampler in (normal_mode_sampling, wigner_sampling):
        with pytest.raises(ValueError, match=match):
            sampler(atoms, hessian, **kwargs)


def test_bad_random_displacement_arguments_raise():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    with pytest.raises(ValueError, match="stddev_A"):
        random_displacements(atoms, stddev_A=-0.1, n_samples=2, seed=0)
    with pytest.raises(ValueError, match="n_samples"):
        random_displacements(atoms, stddev_A=0.1, n_samples=1.5, seed=0)
    atoms.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        random_displacements(atoms, stddev_A=0.1, n_samples=2, seed=0)


# ------------------------------------------------------------------------- MD sampling


def test_md_samples_hold_the_temperature_and_are_reproducible(water):
    atoms, _, _ = water
    frames = md_sampling(atoms, EMT(), temperature_K=600.0, n_samples=400, seed=3, interval_steps=10,
                         friction_per_fs=0.1)
    # Langevin keeps the centre of mass fixed: 3N - 3 momenta, each kT/2 on average
    kinetic = _kinetic_energy(frames)
    expected = 0.5 * (3 * len(atoms) - 3) * units.kB * 600.0
    assert abs(kinetic.mean() - expected) < 0.15 * expected, (kinetic.mean(), expected)
    # an MD trajectory, not noise around the minimum: successive frames differ, the
    # centre of mass stays put, and every frame is calculator-free with provenance
    assert not np.allclose(frames[0].positions, frames[1].positions)
    assert np.allclose(frames[-1].get_center_of_mass(), atoms.get_center_of_mass(), atol=1e-6)
    assert frames[5].calc is None and frames[5].info["sampler"] == "md"
    assert frames[5].info["sample_index"] == 5 and frames[5].info["temperature_K"] == 600.0
    again = md_sampling(atoms, EMT(), temperature_K=600.0, n_samples=6, seed=3, interval_steps=10,
                        friction_per_fs=0.1)
    np.testing.assert_allclose(again[5].positions, frames[5].positions)
    other = md_sampling(atoms, EMT(), temperature_K=600.0, n_samples=1, seed=4, interval_steps=10)
    assert not np.allclose(other[0].positions, frames[0].positions)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature_K=-5.0, n_samples=2, seed=0), "temperature_K"),
        (dict(temperature_K=300.0, n_samples=0, seed=0), "n_samples"),
        (dict(temperature_K=300.0, n_samples=2, seed=0, interval_steps=0), "interval_steps"),
        (dict(temperature_K=300.0, n_samples=2, seed=0, equilibration_steps=-1), "equilibration_steps"),
    ],
)
def test_bad_md_sampling_arguments_raise(water, kwargs, match):
    atoms, _, _ = water
    with pytest.raises(ValueError, match=match):
        md_sampling(atoms, EMT(), **kwargs)
