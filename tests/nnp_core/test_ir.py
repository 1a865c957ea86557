"""IR spectra from dipole time series: analytic signals with known lines, committee bands,
harmonic stick spectra, option checks and the plot."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.signal
from matplotlib.figure import Figure

from nnp_core.ir import (
    C_CM_PER_FS,
    IRSpectrum,
    committee_ir_spectrum,
    harmonic_quantum_correction,
    ir_spectrum,
    nyquist_wavenumber_cm1,
    plot_ir,
    stick_spectrum,
)

DT_FS = 0.5
N_STEPS = 20000
N_REPLICAS = 3
LINES_CM1 = np.array([1000.0, 1700.0, 3000.0])
AMPLITUDES_EA = np.array([1.0, 0.5, 0.3])


def cosine_dipoles(
    wavenumbers_cm1: np.ndarray, amplitudes_eA: np.ndarray, *, seed: int = 0, permanent_eA: float = 0.0
) -> np.ndarray:
    """(R, T, 3) dipoles: μ_x = Σ a_k cos(2π c ν̃_k t + φ_k), random φ per replica; μ_y = μ_z = const."""
    rng = np.random.default_rng(seed)
    t_fs = np.arange(N_STEPS) * DT_FS
    dipoles = np.full((N_REPLICAS, N_STEPS, 3), permanent_eA)
    for replica in range(N_REPLICAS):
        phases = rng.uniform(0.0, 2.0 * np.pi, len(wavenumbers_cm1))
        arguments = 2.0 * np.pi * C_CM_PER_FS * np.outer(wavenumbers_cm1, t_fs) + phases[:, None]
        dipoles[replica, :, 0] += (amplitudes_eA[:, None] * np.cos(arguments)).sum(axis=0)
    return dipoles


def on_grid(wavenumbers_cm1: np.ndarray, zero_padding: int = 4) -> np.ndarray:
    """Move lines onto the padded FFT grid, so peak heights carry no scalloping loss."""
    spacing = 1.0 / (zero_padding * N_STEPS * DT_FS * C_CM_PER_FS)
    return np.round(wavenumbers_cm1 / spacing) * spacing


def heights_at(wavenumbers: np.ndarray, intensity: np.ndarray, lines_cm1: np.ndarray) -> np.ndarray:
    return intensity[[int(np.argmin(np.abs(wavenumbers - line))) for line in lines_cm1]]


@pytest.fixture(scope="module")
def dipoles() -> np.ndarray:
    return cosine_dipoles(LINES_CM1, AMPLITUDES_EA)


@pytest.fixture(scope="module")
def grid_lines() -> np.ndarray:
    return on_grid(LINES_CM1)


@pytest.fixture(scope="module")
def grid_dipoles(grid_lines: np.ndarray) -> np.ndarray:
    return cosine_dipoles(grid_lines, AMPLITUDES_EA, permanent_eA=1.5)


# --- lines of an analytic signal ------------------------------------------------------


def test_peaks_sit_at_the_lines_within_one_resolution_step(dipoles: np.ndarray) -> None:
    spectrum = committee_ir_spectrum(dipoles[None], DT_FS, temperature_K=300.0, correction="none")
    resolution = spectrum.settings["resolution_cm1"]
    assert resolution == pytest.approx(1.0 / (N_STEPS * DT_FS * C_CM_PER_FS))
    assert resolution == pytest.approx(3.3356, rel=1e-4)
    peaks = spectrum.peaks(n=3)
    assert len(peaks) == 3
    positions = np.array([p[0] for p in peaks])
    np.testing.assert_allclose(positions, LINES_CM1, atol=resolution)
    assert max(p[1] for p in peaks) == pytest.approx(1.0)
    assert spectrum.intensity.max() == pytest.approx(1.0)
    assert spectrum.wavenumbers_cm1[0] == 0.0 and spectrum.wavenumbers_cm1[-1] <= 4000.0
    assert spectrum.wavenumbers_cm1[-1] > 4000.0 - resolution
    assert spectrum.band_low is None and spectrum.band_high is None and spectrum.member_intensities is None
    # the three largest maxima are the lines, nothing else comes near them
    others = spectrum.peaks(n=6)
    assert sorted(p[1] for p in others)[-4] < 0.05


def test_relative_heights_follow_amplitude_times_frequency_squared(
    grid_dipoles: np.ndarray, grid_lines: np.ndarray
) -> None:
    wavenumbers, intensity = ir_spectrum(grid_dipoles, DT_FS, temperature_K=300.0, correction="none")
    heights = heights_at(wavenumbers, intensity, grid_lines)
    omega = 2.0 * np.pi * C_CM_PER_FS * grid_lines  # rad/fs
    exact = (AMPLITUDES_EA * omega) ** 2
    np.testing.assert_allclose(heights / heights[0], exact / exact[0], rtol=0.05)
    # central differences see sin(ω dt)/dt instead of ω: with that, the agreement is far closer
    finite_difference = (AMPLITUDES_EA * np.sin(omega * DT_FS) / DT_FS) ** 2
    np.testing.assert_allclose(heights / heights[0], finite_difference / finite_difference[0], rtol=0.005)


def test_dipole_and_derivative_correlations_agree(grid_dipoles: np.ndarray, grid_lines: np.ndarray) -> None:
    common = dict(temperature_K=300.0, correction="none")
    axis_d, from_derivative = ir_spectrum(grid_dipoles, DT_FS, derivative=True, **common)
    axis_m, from_dipole = ir_spectrum(grid_dipoles, DT_FS, derivative=False, **common)
    np.testing.assert_array_equal(axis_d, axis_m)
    peaks_d, _ = scipy.signal.find_peaks(from_derivative, height=0.1)
    peaks_m, _ = scipy.signal.find_peaks(from_dipole, height=0.1)
    np.testing.assert_array_equal(peaks_d, peaks_m)
    np.testing.assert_allclose(axis_d[peaks_d], grid_lines, atol=1e-6)
    np.testing.assert_allclose(from_derivative[peaks_d], from_dipole[peaks_m], rtol=0.03)
    # with μ itself the ω² weighting is exact (no finite differences)
    omega = 2.0 * np.pi * C_CM_PER_FS * grid_lines
    exact = (AMPLITUDES_EA * omega) ** 2
    np.testing.assert_allclose(from_dipole[peaks_m], exact / exact.max(), rtol=0.005)


def test_a_single_series_is_one_replica(grid_dipoles: np.ndarray) -> None:
    one = grid_dipoles[0]
    axis_2d, intensity_2d = ir_spectrum(one, DT_FS, temperature_K=300.0)
    axis_3d, intensity_3d = ir_spectrum(one[None], DT_FS, temperature_K=300.0)
    np.testing.assert_array_equal(axis_2d, axis_3d)
    np.testing.assert_array_equal(intensity_2d, intensity_3d)


@pytest.mark.parametrize("window", ["hann", "gaussian", "none"])
def test_every_window_finds_the_lines(grid_dipoles: np.ndarray, grid_lines: np.ndarray, window: str) -> None:
    spectrum = committee_ir_spectrum(grid_dipoles[None], DT_FS, temperature_K=300.0, window=window)
    positions = np.array([p[0] for p in spectrum.peaks(n=3)])
    np.testing.assert_allclose(positions, grid_lines, atol=1e-6)
    assert spectrum.settings["window"] == window


def test_harmonic_correction_scales_by_the_quantum_factor(grid_dipoles: np.ndarray, grid_lines: np.ndarray) -> None:
    temperature_K = 300.0
    axis, classical = ir_spectrum(grid_dipoles, DT_FS, temperature_K=temperature_K, correction="none")
    _, corrected = ir_spectrum(grid_dipoles, DT_FS, temperature_K=temperature_K, correction="harmonic")
    low, high = grid_lines[0], grid_lines[2]
    x_low, x_high = (1.4387768775 * np.array([low, high]) / temperature_K)  # βħω = hcν̃/kT, hc/k in cm·K
    expected = (x_high / (1.0 - np.exp(-x_high))) / (x_low / (1.0 - np.exp(-x_low)))
    assert expected == pytest.approx(2.975, rel=1e-3)  # ≈ 14.39 / 4.84
    i_low, i_high = (int(np.argmin(np.abs(axis - w))) for w in (low, high))
    raised = (corrected[i_high] / corrected[i_low]) / (classical[i_high] / classical[i_low])
    assert raised == pytest.approx(expected, rel=1e-9)
    # and pointwise: corrected ∝ Q(ω) · classical everywhere on the axis
    ratio = corrected[1:] / (classical[1:] * harmonic_quantum_correction(axis[1:], temperature_K))
    significant = classical[1:] > 1e-6
    np.testing.assert_allclose(ratio[significant], ratio[significant][0], rtol=1e-9)


def test_quantum_factor_limits() -> None:
    q = harmonic_quantum_correction(np.array([0.0, 1e-6, 3000.0]), 300.0)
    assert q[0] == 1.0 and q[1] == pytest.approx(1.0, abs=1e-8)
    x = 1.4387768775 * 3000.0 / 300.0
    assert q[2] == pytest.approx(x / (1.0 - np.exp(-x)), rel=1e-9)


# --- committees -----------------------------------------------------------------------


def test_identical_members_collapse_the_band(grid_dipoles: np.ndarray) -> None:
    members = np.stack([grid_dipoles] * 3)
    spectrum = committee_ir_spectrum(members, DT_FS, temperature_K=300.0)
    assert spectrum.member_intensities is not None and spectrum.member_intensities.shape == (
        3,
        spectrum.wavenumbers_cm1.size,
    )
    np.testing.assert_allclose(spectrum.band_low, spectrum.intensity, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(spectrum.band_high, spectrum.intensity, rtol=1e-9, atol=1e-12)
    _, alone = ir_spectrum(grid_dipoles, DT_FS, temperature_K=300.0)
    np.testing.assert_allclose(spectrum.intensity, alone, rtol=1e-9, atol=1e-12)
    assert spectrum.settings["n_members"] == 3 and spectrum.settings["n_replicas"] == N_REPLICAS
    assert spectrum.settings["n_steps"] == N_STEPS and spectrum.settings["length_ps"] == pytest.approx(10.0)


def test_members_of_different_amplitude_bracket_the_mean(grid_dipoles: np.ndarray, grid_lines: np.ndarray) -> None:
    members = np.stack([0.8 * grid_dipoles, grid_dipoles, 1.2 * grid_dipoles])
    spectrum = committee_ir_spectrum(members, DT_FS, temperature_K=300.0, correction="none")
    assert spectrum.intensity.max() == pytest.approx(1.0)
    assert spectrum.band_low is not None and spectrum.band_high is not None
    tolerance = 1e-9
    assert np.all(spectrum.band_low <= spectrum.intensity + tolerance)
    assert np.all(spectrum.intensity <= spectrum.band_high + tolerance)
    # same normalisation for all: members scale with the amplitude squared
    heights = heights_at(spectrum.wavenumbers_cm1, spectrum.member_intensities.max(axis=0), grid_lines)
    low = heights_at(spectrum.wavenumbers_cm1, spectrum.band_low, grid_lines)
    mean = heights_at(spectrum.wavenumbers_cm1, spectrum.intensity, grid_lines)
    np.testing.assert_allclose(heights, 1.44 * mean, rtol=1e-6)
    np.testing.assert_allclose(low, 0.64 * mean, rtol=1e-6)
    assert spectrum.band_high.max() == pytest.approx(1.44)


def test_committee_needs_four_dimensions(grid_dipoles: np.ndarray) -> None:
    with pytest.raises(ValueError, match="member_dipoles_eA"):
        committee_ir_spectrum(grid_dipoles, DT_FS, temperature_K=300.0)


# --- CSV -------------------------------------------------------------------------------


def test_to_csv_writes_settings_and_columns_and_never_overwrites(grid_dipoles: np.ndarray, tmp_path) -> None:
    members = np.stack([0.9 * grid_dipoles, 1.1 * grid_dipoles])
    spectrum = committee_ir_spectrum(members, DT_FS, temperature_K=300.0, max_wavenumber_cm1=500.0)
    path = tmp_path / "ir.csv"
    spectrum.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# window=hann, zero_padding=4, correction=harmonic")
    assert lines[1] == "wavenumber_cm1,intensity,band_low,band_high,sampling_low,sampling_high"
    table = np.loadtxt(path, delimiter=",", skiprows=2)
    np.testing.assert_allclose(table[:, 0], spectrum.wavenumbers_cm1, rtol=1e-9)
    np.testing.assert_allclose(table[:, 1], spectrum.intensity, rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(table[:, 3], spectrum.band_high, rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(table[:, 4], spectrum.sampling_low, rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(table[:, 5], spectrum.sampling_high, rtol=1e-8, atol=1e-15)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        spectrum.to_csv(path)
    assert path.read_bytes() == before


def test_to_csv_without_band_writes_nan(grid_dipoles: np.ndarray, tmp_path) -> None:
    spectrum = committee_ir_spectrum(grid_dipoles[None], DT_FS, temperature_K=300.0, max_wavenumber_cm1=200.0)
    spectrum.to_csv(tmp_path / "one.csv")
    table = np.loadtxt(tmp_path / "one.csv", delimiter=",", skiprows=2)
    assert np.all(np.isnan(table[:, 2:4])) and np.all(np.isfinite(table[:, :2]))
    assert np.all(np.isfinite(table[:, 4:]))  # 3 replicas: a sampling interval
    single = committee_ir_spectrum(grid_dipoles[None, :1], DT_FS, temperature_K=300.0)
    single.to_csv(tmp_path / "single.csv")
    assert np.all(np.isnan(np.loadtxt(tmp_path / "single.csv", delimiter=",", skiprows=2)[:, 4:]))


# --- the replicas' sampling interval ---------------------------------------------------

NOISE_LINE_CM1 = 3000.0


def noisy_replicas(n_replicas: int, *, seed: int, n_steps: int = 2000) -> np.ndarray:
    """(R, T, 3): a strong cosine at 3000 cm⁻¹ with a random phase (it sets the maximum, the
    same in every replica) plus white noise in every component (a broad random background)."""
    rng = np.random.default_rng(seed)
    t_fs = np.arange(n_steps) * DT_FS
    phases = rng.uniform(0.0, 2.0 * np.pi, n_replicas)
    dipoles = 0.05 * rng.standard_normal((n_replicas, n_steps, 3))
    dipoles[..., 0] += np.cos(2.0 * np.pi * C_CM_PER_FS * NOISE_LINE_CM1 * t_fs[None, :] + phases[:, None])
    return dipoles


def sampled(dipoles: np.ndarray) -> IRSpectrum:
    return committee_ir_spectrum(dipoles[None], DT_FS, temperature_K=300.0, correction="none",
                                 correlation_ps=0.1)


def test_the_sampling_interval_is_centred_on_the_replica_mean_and_vanishes_for_identical_replicas() -> None:
    dipoles = noisy_replicas(4, seed=1)
    spectrum = sampled(dipoles)
    assert spectrum.settings["sampling_confidence"] == 0.95
    np.testing.assert_allclose((spectrum.sampling_low + spectrum.sampling_high) / 2, spectrum.intensity,
                               rtol=1e-9, atol=1e-12)
    assert np.all(spectrum.sampling_high > spectrum.sampling_low)
    identical = sampled(np.repeat(dipoles[:1], 5, axis=0))
    np.testing.assert_allclose(identical.sampling_low, identical.intensity, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(identical.sampling_high, identical.intensity, rtol=1e-9, atol=1e-12)
    one = sampled(dipoles[:1])
    assert one.sampling_low is None and one.sampling_high is None and one.settings["sampling_confidence"] is None


def test_the_sampling_interval_covers_the_many_replica_spectrum_95_percent_of_the_time() -> None:
    """60 groups of 8 replicas against the spectrum of all 480: the 95% intervals of the
    noise background (1000-2500 cm⁻¹) hold it about 95% of the time, and groups of 32
    give intervals narrower by t₇/√8 : t₃₁/√32 (about 2.3)."""
    dipoles = noisy_replicas(480, seed=2)
    truth = sampled(dipoles)
    window = (truth.wavenumbers_cm1 > 1000.0) & (truth.wavenumbers_cm1 < 2500.0)
    covered, widths = [], []
    for group in dipoles.reshape(60, 8, *dipoles.shape[1:]):
        spectrum = sampled(group)
        inside = (spectrum.sampling_low <= truth.intensity) & (truth.intensity <= spectrum.sampling_high)
        covered.append(inside[window].mean())
        widths.append((spectrum.sampling_high - spectrum.sampling_low)[window].mean())
    assert 0.90 <= np.mean(covered) <= 0.99
    wide = [(s.sampling_high - s.sampling_low)[window].mean()
            for s in map(sampled, dipoles.reshape(15, 32, *dipoles.shape[1:]))]
    assert np.mean(widths) / np.mean(wide) == pytest.approx(2.32, rel=0.15)


# --- stick spectra -------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["lorentzian", "gaussian"])
def test_a_broadened_line_keeps_its_area_and_position(shape: str) -> None:
    axis = np.linspace(0.0, 4000.0, 40001)
    broadened = stick_spectrum(np.array([1650.0]), np.array([120.0]), axis, fwhm_cm1=20.0, shape=shape)
    assert np.trapezoid(broadened, axis) == pytest.approx(120.0, rel=0.02)
    assert axis[np.argmax(broadened)] == pytest.approx(1650.0)
    half = broadened.max() / 2.0
    above = axis[broadened >= half]
    assert above[-1] - above[0] == pytest.approx(20.0, abs=0.2)  # the FWHM


def test_lines_add_with_their_km_mol_weights() -> None:
    axis = np.linspace(0.0, 4000.0, 8001)
    both = stick_spectrum(np.array([1000.0, 3000.0]), np.array([10.0, 30.0]), axis)
    first = stick_spectrum(np.array([1000.0]), np.array([10.0]), axis)
    second = stick_spectrum(np.array([3000.0]), np.array([30.0]), axis)
    np.testing.assert_allclose(both, first + second, rtol=1e-12)
    assert both[axis == 3000.0][0] == pytest.approx(3.0 * both[axis == 1000.0][0], rel=1e-3)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (dict(fwhm_cm1=0.0), "fwhm_cm1"),
        (dict(shape="voigt"), "shape"),
        (dict(intensities_km_mol=np.array([-1.0])), "intensities_km_mol"),
        (dict(intensities_km_mol=np.array([1.0, 2.0])), "intensities_km_mol"),
        (dict(frequencies_cm1=np.array([np.nan])), "frequencies_cm1"),
        (dict(wavenumbers_cm1=np.zeros((2, 2))), "wavenumbers_cm1"),
    ],
)
def test_stick_spectrum_refuses_bad_input(change: dict, name: str) -> None:
    arguments = dict(
        frequencies_cm1=np.array([1000.0]), intensities_km_mol=np.array([1.0]), wavenumbers_cm1=np.linspace(0, 4000, 11)
    ) | change
    with pytest.raises(ValueError, match=name):
        stick_spectrum(**arguments)


# --- option checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (dict(timestep_fs=0.0), "timestep_fs"),
        (dict(timestep_fs=-0.5), "timestep_fs"),
        (dict(timestep_fs=float("nan")), "timestep_fs"),
        (dict(window="blackman"), "window"),
        (dict(correction="kubo"), "correction"),
        (dict(zero_padding=0), "zero_padding"),
        (dict(zero_padding=2.5), "zero_padding"),
        (dict(temperature_K=0.0), "temperature_K"),
        (dict(temperature_K=-10.0), "temperature_K"),
        (dict(max_wavenumber_cm1=40000.0), "max_wavenumber_cm1"),  # Nyquist is 33356 cm⁻¹ at 0.5 fs
        (dict(max_wavenumber_cm1=0.0), "max_wavenumber_cm1"),
    ],
)
def test_bad_options_are_refused_by_name(change: dict, name: str) -> None:
    dipoles = np.random.default_rng(1).normal(size=(2, 64, 3))
    options = dict(timestep_fs=DT_FS, temperature_K=300.0) | change
    timestep_fs = options.pop("timestep_fs")
    with pytest.raises(ValueError, match=name):
        ir_spectrum(dipoles, timestep_fs, **options)
    with pytest.raises(ValueError, match=name):
        committee_ir_spectrum(dipoles[None], timestep_fs, **options)


def test_nyquist_is_computed_from_the_timestep() -> None:
    assert nyquist_wavenumber_cm1(0.5) == pytest.approx(33356.4095, rel=1e-8)
    dipoles = np.random.default_rng(2).normal(size=(1, 64, 3))
    ir_spectrum(dipoles, 0.5, temperature_K=300.0, max_wavenumber_cm1=nyquist_wavenumber_cm1(0.5))
    with pytest.raises(ValueError, match="max_wavenumber_cm1"):  # 5 fs: Nyquist 3336 cm⁻¹
        ir_spectrum(dipoles, 5.0, temperature_K=300.0)


def test_temperature_is_not_needed_without_the_correction() -> None:
    dipoles = np.random.default_rng(3).normal(size=(1, 64, 3))
    ir_spectrum(dipoles, DT_FS, temperature_K=0.0, correction="none")


@pytest.mark.parametrize(
    ("dipoles", "message"),
    [
        (np.zeros((1, 3, 3)), "at least 4 time samples"),
        (np.zeros(10), "shape"),
        (np.zeros((1, 10, 2)), "shape"),
        (np.where(np.arange(30).reshape(1, 10, 3) == 7, np.nan, 1.0), "non-finite"),
        (np.where(np.arange(30).reshape(1, 10, 3) == 7, np.inf, 1.0), "non-finite"),
        (np.ones((1, 10, 3)), "does not fluctuate"),
    ],
)
def test_bad_dipoles_are_refused(dipoles: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match="dipoles_eA") as error:
        ir_spectrum(dipoles, DT_FS, temperature_K=300.0)
    assert message in str(error.value)


def test_peaks_checks_its_arguments(grid_dipoles: np.ndarray) -> None:
    spectrum = committee_ir_spectrum(grid_dipoles[None], DT_FS, temperature_K=300.0)
    with pytest.raises(ValueError, match="n must"):
        spectrum.peaks(n=0)
    with pytest.raises(ValueError, match="min_separation_cm1"):
        spectrum.peaks(min_separation_cm1=-1.0)
    assert all(height < 1e-3 for _, height in spectrum.peaks(n=3, above_cm1=3500.0))
    top = spectrum.peaks(n=1)
    assert len(top) == 1 and top[0][1] == pytest.approx(1.0)


# --- plot -----------------------------------------------------------------------------


def test_plot_ir_draws_one_axes_and_saves_png(grid_dipoles: np.ndarray) -> None:
    members = np.stack([0.9 * grid_dipoles, grid_dipoles, 1.1 * grid_dipoles])
    spectrum = committee_ir_spectrum(members, DT_FS, temperature_K=300.0)
    harmonic = {
        "MACE": (np.array([1010.0, 1690.0, 3050.0]), np.array([80.0, 40.0, 20.0])),
        "DFT": (np.array([1005.0, 1710.0, 3100.0]), np.array([75.0, 45.0, 25.0])),
    }
    figure = plot_ir(spectrum, harmonic=harmonic, title="analytic test")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 1
    axes = figure.axes[0]
    assert axes.get_xlim() == pytest.approx((0.0, spectrum.wavenumbers_cm1[-1]))
    assert "cm⁻¹" in axes.get_xlabel() and axes.get_title() == "analytic test"
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert any("harmonic correction" in label and "hann window" in label for label in labels)
    assert any(label.startswith("MACE") for label in labels) and any(label.startswith("DFT") for label in labels)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_plot_ir_without_band_or_harmonic(grid_dipoles: np.ndarray) -> None:
    spectrum = committee_ir_spectrum(grid_dipoles[None], DT_FS, temperature_K=300.0)
    assert isinstance(spectrum, IRSpectrum)
    figure = plot_ir(spectrum)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert len(figure.axes) == 1 and buffer.getvalue().startswith(b"\x89PNG")


def test_a_shorter_correlation_smooths_at_a_coarser_resolution() -> None:
    """correlation_ps keeps the peak where it is, sets the resolution to 1/correlation_ps,
    and removes the long lags' noise (a smoother line between the peaks)."""
    from nnp_core.ir import committee_ir_spectrum

    rng = np.random.default_rng(1)
    dt, n = 0.5, 20001
    t = np.arange(n) * dt
    omega = 2 * np.pi * C_CM_PER_FS * 1500.0
    signal = np.cos(omega * t)[None, :, None] * np.array([1.0, 0.0, 0.0]) + 0.3 * rng.normal(size=(4, n, 3))
    full = committee_ir_spectrum(signal[None], dt, temperature_K=300.0, correction="none")
    short = committee_ir_spectrum(signal[None], dt, temperature_K=300.0, correction="none", correlation_ps=2.0)
    assert short.settings["resolution_cm1"] == pytest.approx(1.0 / (4001 * dt * C_CM_PER_FS))
    assert short.settings["correlation_ps"] == pytest.approx(2.0)
    (peak, _), = short.peaks(1)
    assert abs(peak - 1500.0) < short.settings["resolution_cm1"]

    def roughness(spectrum) -> float:
        """RMS relative deviation from a smooth (quadratic) fit where only noise absorbs."""
        away = (spectrum.wavenumbers_cm1 > 2000) & (spectrum.wavenumbers_cm1 < 3500)
        x, y = spectrum.wavenumbers_cm1[away], spectrum.intensity[away]
        smooth = np.polyval(np.polyfit(x, y, 2), x)
        return float(np.sqrt(np.mean((y / smooth - 1) ** 2)))

    assert roughness(short) < 0.6 * roughness(full)  # ~ sqrt(2 ps / 10 ps) expected
    with pytest.raises(ValueError, match="correlation_ps"):
        committee_ir_spectrum(signal[None], dt, temperature_K=300.0, correlation_ps=-1.0)
