"""Infrared spectra from ML molecular-dynamics dipoles, and harmonic stick spectra.

:func:`ir_spectrum` turns dipole time series (e·Å) from NVE runs into an IR lineshape;
:func:`committee_ir_spectrum` does it for every committee member and the committee-mean
dipole and returns an :class:`IRSpectrum` with two error bars: the members' band (how
much the dipole models disagree) and the replicas' 95% confidence interval (how much a
finite trajectory leaves the lineshape uncertain); :func:`stick_spectrum`
broadens harmonic frequencies and intensities (km/mol, e.g. from
``qm_backends.vibrations``) onto a wavenumber axis; :func:`plot_ir` draws both.

Method (linear response, classical). The absorption lineshape is
α(ω)n(ω) ∝ β ω² ∫ ⟨μ(0)·μ(t)⟩ cos(ωt) dt = β ∫ ⟨μ̇(0)·μ̇(t)⟩ cos(ωt) dt. The dipole
derivative μ̇ comes from central finite differences (``np.gradient``); its
autocorrelation is the unbiased (divided by the number of overlapping samples), FFT-based
estimate over all time origins, summed over the 3 Cartesian components (the dot
product) and averaged over replicas, for lags 0 … (T−1)·dt. The time-mean of the
correlated signal is removed per replica and component first (a permanent dipole does
not absorb).

Conventions chosen here:

- window: the *decaying half* of a symmetric window whose centre is lag 0 and whose
  last sample is the last lag. ``"hann"``: w(τ) = cos²(π τ / (2 τ_max)), exactly 1 at
  τ = 0 and 0 at the last lag (``scipy.signal.windows.hann(2T − 1)[T − 1:]``).
  ``"gaussian"``: exp(−τ²/(2σ²)) with σ = T/3 lags (1.1 % left at the last lag;
  ``scipy.signal.windows.gaussian``). ``"none"``: no window (rectangular, noisy tails).
- transform: the one-sided windowed function with its lag-0 value halved is zero-padded
  to ``zero_padding`` × T samples and I(ω) = 2·dt·Re rfft. That is exactly the Fourier
  transform of the even (symmetrised) correlation function, i.e. the cosine transform
  ∫_{−∞}^{∞} C(t) cos(ωt) dt (trapezoid rule at t = 0), with no constant baseline.
- finite differences scale a line at ω by (sin(ω·dt)/(ω·dt))² relative to the exact
  derivative: −0.1 % at 1000 cm⁻¹ and −2.6 % at 3000 cm⁻¹ for dt = 0.5 fs. This is left
  uncorrected (use ``derivative=False`` for the exact ω² weighting).
- correction ``"harmonic"``: multiply by Q(ω) = βħω / (1 − exp(−βħω)) (Ramírez,
  López-Ciudad, Kumar, Marx, J. Chem. Phys. 121, 3973 (2004)), Q(0) = 1.
- normalisation: intensities are in arbitrary units (β and the other constant
  prefactors are dropped), scaled so that the maximum over the whole returned axis
  (0 … ``max_wavenumber_cm1``) is 1.0.
- sampling error: every step above is linear in the correlation function, so the
  spectrum is exactly the mean of the R replicas' own spectra. With R ≥ 2 independent
  replicas the 95% confidence interval of that mean at each wavenumber is
  mean ± t₀.₉₇₅,R−1 · s/√R (s the replicas' sample standard deviation; Student's t,
  ``scipy.stats.t``). It says how far another set of R trajectories of the same length
  could move a line; the committee band says how far another dipole model could. With
  one replica there is no sampling interval (None).

Why not a library's: the maintained one with this transform is calorine's
``calorine.tools.spectra.get_ir_spectrum`` (4.1, 2026-10; ASE has harmonic IR only). With
the same conventions the two lineshapes agree to 0.1% of the maximum
(``bench.ir_against_calorine``, docs/benchmarks.md). calorine is not a dependency: PyPI has
only its source distribution, which compiles a C++ extension and pulls scikit-learn, and it
transforms one series per call, with no committee band or replicas' interval.

Units: e·Å, fs, K, cm⁻¹ (wavenumbers ν̃ = ω / (2π c)), km/mol for harmonic intensities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.constants
import scipy.fft
import scipy.signal
import scipy.special
import scipy.stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: speed of light in cm/fs
C_CM_PER_FS = scipy.constants.c * 100.0 * 1e-15
#: second radiation constant h·c/k_B in cm·K: βħω = HC_OVER_K_CM_K · ν̃ / T
HC_OVER_K_CM_K = scipy.constants.h * scipy.constants.c / scipy.constants.k * 100.0
#: σ of the Gaussian window as a fraction of the number of lags
GAUSSIAN_WINDOW_SIGMA_FRACTION = 1.0 / 3.0

WINDOWS = ("hann", "gaussian", "none")
CORRECTIONS = ("harmonic", "none")
LINE_SHAPES = ("lorentzian", "gaussian")
#: fewest time samples accepted per trajectory
MIN_STEPS = 4
#: confidence level of the replicas' sampling interval
SAMPLING_CONFIDENCE = 0.95


@dataclass(frozen=True, eq=False)
class IRSpectrum:
    """An IR spectrum from committee MD, with the spread over committee members and
    the sampling error over replicas.

    Attributes:
        wavenumbers_cm1: (K,) axis, cm⁻¹, from 0 to the requested maximum on the FFT grid.
        intensity: (K,) spectrum of the committee-mean dipole, maximum 1.0 (arb. units).
        band_low: (K,) minimum over the members' spectra at each wavenumber, or None
            with a single member.
        band_high: (K,) maximum over the members' spectra, or None with one member.
        member_intensities: (M, K) the members' spectra, or None with one member. All
            are divided by the same factor as ``intensity`` (the mean spectrum's
            unnormalised maximum), so they are comparable with it.
        settings: how it was computed: window, zero_padding, correction, derivative,
            temperature_K, timestep_fs, n_members, n_replicas, n_steps, length_ps
            (T·dt), resolution_cm1 (1 / (T·dt·c), the spacing the trajectory length
            resolves; the plotted grid is ``zero_padding`` times finer) and
            sampling_confidence (0.95, or None with one replica).
        sampling_low, sampling_high: (K,) the 95% confidence interval of ``intensity``
            over the R replicas (Student's t on their spectra; see the module doc), or
            None with one replica. Same scale as ``intensity``; the low side can dip
            below 0 where a line is barely resolved.
    """

    wavenumbers_cm1: np.ndarray
    intensity: np.ndarray
    band_low: np.ndarray | None
    band_high: np.ndarray | None
    member_intensities: np.ndarray | None
    settings: dict[str, Any]
    sampling_low: np.ndarray | None = None
    sampling_high: np.ndarray | None = None

    def to_csv(self, path: str | Path) -> None:
        """Write ``wavenumber_cm1,intensity,band_low,band_high,sampling_low,sampling_high``
        to a new file.

        The first line is a comment with the settings (``# window=hann, ...``), the
        second the column names. Without a committee band (one member) or a sampling
        interval (one replica) those columns hold ``nan``.

        Raises:
            FileExistsError: ``path`` already exists (it is never overwritten).
        """
        nan = np.full_like(self.intensity, np.nan)
        columns = [self.band_low, self.band_high, self.sampling_low, self.sampling_high]
        table = np.column_stack([self.wavenumbers_cm1, self.intensity,
                                 *(nan if column is None else column for column in columns)])
        header = ", ".join(f"{key}={value}" for key, value in self.settings.items())
        with open(path, "x", encoding="utf-8") as handle:  # "x": refuse an existing file
            handle.write(f"# {header}\n")
            handle.write("wavenumber_cm1,intensity,band_low,band_high,sampling_low,sampling_high\n")
            np.savetxt(handle, table, delimiter=",", fmt="%.10g")

    def peaks(
        self, n: int = 6, min_separation_cm1: float = 50.0, above_cm1: float = 400.0
    ) -> list[tuple[float, float]]:
        """The ``n`` highest local maxima of ``intensity`` above ``above_cm1``.

        Maxima closer than ``min_separation_cm1`` are thinned to the higher one
        (``scipy.signal.find_peaks(distance=...)``). Returns (wavenumber_cm1, height)
        pairs sorted by wavenumber; fewer than ``n`` if there are fewer maxima.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not min_separation_cm1 >= 0:
            raise ValueError(f"min_separation_cm1 must be >= 0, got {min_separation_cm1}")
        keep = self.wavenumbers_cm1 > above_cm1
        wavenumbers, intensity = self.wavenumbers_cm1[keep], self.intensity[keep]
        if intensity.size < 3:
            return []
        spacing = float(wavenumbers[1] - wavenumbers[0])
        distance = max(1, int(round(min_separation_cm1 / spacing)))
        indices, _ = scipy.signal.find_peaks(intensity, distance=distance)
        highest = indices[np.argsort(intensity[indices])[::-1][:n]]
        return [(float(wavenumbers[i]), float(intensity[i])) for i in np.sort(highest)]


def nyquist_wavenumber_cm1(timestep_fs: float) -> float:
    """Highest wavenumber (cm⁻¹) a series sampled every ``timestep_fs`` resolves: 1/(2·dt·c)."""
    return 1.0 / (2.0 * timestep_fs * C_CM_PER_FS)


def harmonic_quantum_correction(wavenumbers_cm1: np.ndarray, temperature_K: float) -> np.ndarray:
    """Q(ω) = βħω / (1 − exp(−βħω)), the harmonic quantum correction factor (Q(0) = 1)."""
    x = HC_OVER_K_CM_K * np.asarray(wavenumbers_cm1, dtype=float) / temperature_K
    return 1.0 / scipy.special.exprel(-x)  # exprel(−x) = (1 − e^{−x}) / x


def _check_options(
    timestep_fs: float,
    temperature_K: float,
    window: str,
    zero_padding: int,
    correction: str,
    max_wavenumber_cm1: float,
    correlation_ps: float | None = None,
) -> None:
    """Raise ValueError naming the first bad option."""
    if not (isinstance(timestep_fs, (int, float, np.number)) and math.isfinite(timestep_fs) and timestep_fs > 0):
        raise ValueError(f"timestep_fs must be a finite number > 0, got {timestep_fs!r}")
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if correction == "harmonic" and not (
        isinstance(temperature_K, (int, float, np.number)) and math.isfinite(temperature_K) and temperature_K > 0
    ):
        raise ValueError(f"temperature_K must be a finite number > 0 for correction='harmonic', got {temperature_K!r}")
    if isinstance(zero_padding, bool) or not isinstance(zero_padding, (int, np.integer)) or zero_padding < 1:
        raise ValueError(f"zero_padding must be an integer >= 1, got {zero_padding!r}")
    nyquist = nyquist_wavenumber_cm1(timestep_fs)
    if not (math.isfinite(max_wavenumber_cm1) and 0 < max_wavenumber_cm1 <= nyquist):
        raise ValueError(
            f"max_wavenumber_cm1 must be in (0, {nyquist:.1f}] (the Nyquist wavenumber for "
            f"timestep_fs={timestep_fs}), got {max_wavenumber_cm1!r}"
        )
    if correlation_ps is not None and not (math.isfinite(correlation_ps) and correlation_ps > 0):
        raise ValueError(f"correlation_ps must be a finite number > 0 (or None), got {correlation_ps!r}")
    if correlation_ps is not None and round(correlation_ps * 1000.0 / timestep_fs) + 1 < MIN_STEPS:
        raise ValueError(f"correlation_ps {correlation_ps} is fewer than {MIN_STEPS} lags of {timestep_fs} fs")


def _as_replicas(dipoles_eA: np.ndarray, name: str) -> np.ndarray:
    """``dipoles_eA`` as a finite (R, T, 3) float array (a (T, 3) series is R = 1)."""
    dipoles = np.asarray(dipoles_eA, dtype=float)
    if dipoles.ndim == 2:
        dipoles = dipoles[None]
    if dipoles.ndim != 3 or dipoles.shape[-1] != 3 or dipoles.shape[0] < 1:
        raise ValueError(f"{name} must have shape (R, T, 3) or (T, 3), got {np.shape(dipoles_eA)}")
    if dipoles.shape[1] < MIN_STEPS:
        raise ValueError(f"{name} needs at least {MIN_STEPS} time samples, got {dipoles.shape[1]}")
    if not np.all(np.isfinite(dipoles)):
        raise ValueError(f"{name} contains non-finite (NaN/inf) values")
    return dipoles


def _autocorrelation(signal: np.ndarray) -> np.ndarray:
    """Unbiased ⟨x(0)·x(τ)⟩ for τ = 0 … T−1 of an (R, T, 3) series, summed over components."""
    n_steps = signal.shape[1]
    x = np.moveaxis(signal - signal.mean(axis=1, keepdims=True), 1, -1)  # (R, 3, T)
    full = scipy.signal.fftconvolve(x, x[..., ::-1], mode="full", axes=-1)  # correlation, lags −(T−1) … T−1
    lags = scipy.signal.correlation_lags(n_steps, n_steps, mode="full")
    one_sided = full[..., lags >= 0].sum(axis=1).mean(axis=0)  # dot product, replica mean
    return one_sided / (n_steps - lags[lags >= 0])


def _n_lags(n_steps: int, timestep_fs: float, correlation_ps: float | None) -> int:
    """Lags 0 … n_lags−1 used: all T, or those up to ``correlation_ps``."""
    if correlation_ps is None:
        return n_steps
    return min(n_steps, round(correlation_ps * 1000.0 / timestep_fs) + 1)


def _decaying_window(window: str, n_lags: int) -> np.ndarray:
    """The decaying half (lag 0 … n_lags−1) of a symmetric window centred on lag 0."""
    if window == "hann":
        return scipy.signal.windows.hann(2 * n_lags - 1)[n_lags - 1 :]
    if window == "gaussian":
        sigma = GAUSSIAN_WINDOW_SIGMA_FRACTION * n_lags
        return scipy.signal.windows.gaussian(2 * n_lags - 1, std=sigma)[n_lags - 1 :]
    return np.ones(n_lags)


def _raw_spectrum(
    dipoles: np.ndarray,
    timestep_fs: float,
    temperature_K: float,
    window: str,
    zero_padding: int,
    correction: str,
    max_wavenumber_cm1: float,
    derivative: bool,
    correlation_ps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised spectrum of checked (R, T, 3) dipoles: (wavenumbers_cm1, intensity)."""
    n_lags = _n_lags(dipoles.shape[1], timestep_fs, correlation_ps)
    signal = np.gradient(dipoles, timestep_fs, axis=1) if derivative else dipoles
    correlation = _autocorrelation(signal)[:n_lags] * _decaying_window(window, n_lags)
    correlation[0] *= 0.5  # one-sided + half lag 0 = transform of the even function / 2
    n_fft = zero_padding * n_lags
    intensity = 2.0 * timestep_fs * scipy.fft.rfft(correlation, n=n_fft).real
    wavenumbers = scipy.fft.rfftfreq(n_fft, d=timestep_fs) / C_CM_PER_FS
    keep = wavenumbers <= max_wavenumber_cm1
    wavenumbers, intensity = wavenumbers[keep], intensity[keep]
    if not derivative:
        intensity = intensity * (2.0 * np.pi * C_CM_PER_FS * wavenumbers) ** 2  # ω² in (rad/fs)²
    if correction == "harmonic":
        intensity = intensity * harmonic_quantum_correction(wavenumbers, temperature_K)
    return wavenumbers, intensity


def _positive_maximum(intensity: np.ndarray, name: str) -> float:
    peak = float(np.max(intensity))
    if not peak > 0:
        raise ValueError(f"{name} does not fluctuate: the spectrum is zero everywhere")
    return peak


def ir_spectrum(
    dipoles_eA: np.ndarray,
    timestep_fs: float,
    *,
    temperature_K: float,
    window: str = "hann",
    zero_padding: int = 4,
    correction: str = "harmonic",
    max_wavenumber_cm1: float = 4000.0,
    derivative: bool = True,
    correlation_ps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IR lineshape of dipole time series from NVE MD (see the module docstring).

    Args:
        dipoles_eA: (R, T, 3) dipoles of R independent replicas, or (T, 3) (R = 1), e·Å,
            one sample every ``timestep_fs``.
        timestep_fs: sampling interval, fs.
        temperature_K: temperature of the runs, K (used by ``correction="harmonic"``).
        window: ``"hann"``, ``"gaussian"`` (σ = T/3 lags) or ``"none"``; its decaying
            half multiplies the one-sided correlation function.
        zero_padding: the correlation function is zero-padded to this many times its
            length before the transform (a finer grid, not a finer resolution).
        correction: ``"harmonic"`` (× βħω / (1 − e^{−βħω})) or ``"none"`` (classical).
        max_wavenumber_cm1: upper end of the returned axis; at most the Nyquist
            wavenumber 1 / (2·dt·c).
        derivative: correlate μ̇ (central differences); with False correlate μ and
            multiply the transform by ω² instead (same lineshape as dt → 0).
        correlation_ps: use the correlation function up to this lag only (the window
            then decays over it): smoother lines at a resolution of 1/correlation_ps
            (16.7 cm⁻¹ at 2 ps) instead of 1/(T·dt) with the noise of the long lags,
            which few time origins average. None: every lag.

    Returns:
        (wavenumbers_cm1, intensity): the FFT grid from 0 to ``max_wavenumber_cm1`` and
        the intensity, arbitrary units, maximum over that axis 1.0.

    Raises:
        ValueError: a bad shape, fewer than 4 samples, non-finite dipoles, or a bad
            option; the message names the argument.
    """
    _check_options(timestep_fs, temperature_K, window, zero_padding, correction, max_wavenumber_cm1,
                   correlation_ps)
    spectrum = committee_ir_spectrum(  # one member: no band
        _as_replicas(dipoles_eA, "dipoles_eA")[None], timestep_fs, temperature_K=temperature_K, window=window,
        zero_padding=zero_padding, correction=correction, max_wavenumber_cm1=max_wavenumber_cm1,
        derivative=derivative, correlation_ps=correlation_ps)
    return spectrum.wavenumbers_cm1, spectrum.intensity


def committee_ir_spectrum(
    member_dipoles_eA: np.ndarray,
    timestep_fs: float,
    *,
    temperature_K: float,
    window: str = "hann",
    zero_padding: int = 4,
    correction: str = "harmonic",
    max_wavenumber_cm1: float = 4000.0,
    derivative: bool = True,
    correlation_ps: float | None = None,
) -> IRSpectrum:
    """Spectrum of the committee-mean dipole, with the members' min–max band and the
    replicas' 95% sampling interval.

    Args:
        member_dipoles_eA: (M, R, T, 3) dipoles predicted by each of M members along the
            same R trajectories of T samples, e·Å. A single model is M = 1 (no band);
            a single trajectory is R = 1 (no sampling interval). The R trajectories
            must be independent (different seeds) for the interval to mean anything.
        timestep_fs, temperature_K, window, zero_padding, correction,
        max_wavenumber_cm1, derivative, correlation_ps: as for :func:`ir_spectrum`.

    The mean spectrum is the spectrum of the mean dipole (mean over M), not the mean of
    the members' spectra; every spectrum is divided by the mean spectrum's maximum.

    Raises:
        ValueError: as :func:`ir_spectrum`, naming ``member_dipoles_eA``.
    """
    _check_options(timestep_fs, temperature_K, window, zero_padding, correction, max_wavenumber_cm1,
                   correlation_ps)
    members = np.asarray(member_dipoles_eA, dtype=float)
    if members.ndim != 4 or members.shape[-1] != 3 or members.shape[0] < 1 or members.shape[1] < 1:
        raise ValueError(f"member_dipoles_eA must have shape (M, R, T, 3), got {np.shape(member_dipoles_eA)}")
    options = (timestep_fs, temperature_K, window, zero_padding, correction, max_wavenumber_cm1, derivative,
               correlation_ps)
    mean_dipoles = _as_replicas(members.mean(axis=0), "member_dipoles_eA")  # also checks T and finiteness
    wavenumbers, intensity = _raw_spectrum(mean_dipoles, *options)
    scale = _positive_maximum(intensity, "member_dipoles_eA")
    member_intensities = band_low = band_high = None
    if members.shape[0] > 1:
        member_intensities = np.stack([_raw_spectrum(member, *options)[1] for member in members]) / scale
        band_low, band_high = member_intensities.min(axis=0), member_intensities.max(axis=0)
    sampling_low, sampling_high = _sampling_interval(mean_dipoles, options, scale, intensity / scale)
    n_steps = members.shape[2]
    n_lags = _n_lags(n_steps, timestep_fs, correlation_ps)
    settings: dict[str, Any] = {
        "window": window,
        "zero_padding": int(zero_padding),
        "correction": correction,
        "derivative": bool(derivative),
        "temperature_K": float(temperature_K),
        "timestep_fs": float(timestep_fs),
        "n_members": int(members.shape[0]),
        "n_replicas": int(members.shape[1]),
        "n_steps": int(n_steps),
        "length_ps": n_steps * timestep_fs / 1000.0,
        "correlation_ps": (n_lags - 1) * timestep_fs / 1000.0,
        "resolution_cm1": 1.0 / (n_lags * timestep_fs * C_CM_PER_FS),
        "sampling_confidence": None if sampling_low is None else SAMPLING_CONFIDENCE,
    }
    return IRSpectrum(
        wavenumbers_cm1=wavenumbers,
        intensity=intensity / scale,
        band_low=band_low,
        band_high=band_high,
        member_intensities=member_intensities,
        settings=settings,
        sampling_low=sampling_low,
        sampling_high=sampling_high,
    )


def _sampling_interval(
    dipoles: np.ndarray, options: tuple, scale: float, intensity: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The ``SAMPLING_CONFIDENCE`` interval of the replica-mean spectrum ``intensity``
    (already divided by ``scale``) from the (R, T, 3) replicas' own spectra; (None, None)
    for R = 1."""
    n_replicas = dipoles.shape[0]
    if n_replicas < 2:
        return None, None
    spectra = np.stack([_raw_spectrum(replica[None], *options)[1] for replica in dipoles]) / scale
    t = scipy.stats.t.ppf(0.5 + SAMPLING_CONFIDENCE / 2.0, df=n_replicas - 1)
    half_width = t * spectra.std(axis=0, ddof=1) / math.sqrt(n_replicas)
    return intensity - half_width, intensity + half_width


def stick_spectrum(
    frequencies_cm1: np.ndarray,
    intensities_km_mol: np.ndarray,
    wavenumbers_cm1: np.ndarray,
    *,
    fwhm_cm1: float = 20.0,
    shape: str = "lorentzian",
) -> np.ndarray:
    """Harmonic lines broadened onto ``wavenumbers_cm1``, in (km/mol) per cm⁻¹.

    Each line is a normalised Lorentzian (``scipy.stats.cauchy``, half width fwhm/2) or
    Gaussian (``scipy.stats.norm``, σ = fwhm / (2√(2 ln 2))) centred on its frequency, times
    its intensity: the area of each line is its intensity in km/mol. Lines at negative
    (imaginary) frequencies are kept as given and usually fall off the axis.

    Raises:
        ValueError: mismatched or non-finite inputs, negative intensities, fwhm_cm1 <= 0,
            or an unknown shape.
    """
    frequencies = np.asarray(frequencies_cm1, dtype=float)
    intensities = np.asarray(intensities_km_mol, dtype=float)
    axis = np.asarray(wavenumbers_cm1, dtype=float)
    if frequencies.ndim != 1 or intensities.shape != frequencies.shape:
        raise ValueError(
            f"frequencies_cm1 and intensities_km_mol must be 1-D of equal length, got "
            f"{frequencies.shape} and {intensities.shape}"
        )
    if axis.ndim != 1:
        raise ValueError(f"wavenumbers_cm1 must be 1-D, got shape {axis.shape}")
    named = (("frequencies_cm1", frequencies), ("intensities_km_mol", intensities), ("wavenumbers_cm1", axis))
    for name, values in named:
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} contains non-finite (NaN/inf) values")
    if np.any(intensities < 0):
        raise ValueError("intensities_km_mol must be >= 0")
    if not (math.isfinite(fwhm_cm1) and fwhm_cm1 > 0):
        raise ValueError(f"fwhm_cm1 must be a finite number > 0, got {fwhm_cm1!r}")
    if shape == "lorentzian":
        profiles = scipy.stats.cauchy.pdf(axis[None, :], loc=frequencies[:, None], scale=fwhm_cm1 / 2.0)
    elif shape == "gaussian":
        sigma = fwhm_cm1 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        profiles = scipy.stats.norm.pdf(axis[None, :], loc=frequencies[:, None], scale=sigma)
    else:
        raise ValueError(f"shape must be one of {LINE_SHAPES}, got {shape!r}")
    return intensities @ profiles


def plot_ir(
    spectrum: IRSpectrum,
    *,
    harmonic: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    title: str | None = None,
) -> Figure:
    """Plot an MD spectrum with its committee band and its replicas' sampling interval
    (dashed outline), and harmonic sticks below it.

    Each harmonic set (label → (frequencies_cm1, intensities_km_mol)) is drawn as
    downward sticks in its own colour, scaled so that its largest stick reaches −1.0.
    Returns a ``matplotlib.figure.Figure`` with one axes (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    settings = spectrum.settings
    label = f"MD ({settings.get('correction')} correction, {settings.get('window')} window)"
    line = axes.plot(spectrum.wavenumbers_cm1, spectrum.intensity, color="C0", lw=1.2, label=label)[0]
    if spectrum.band_low is not None and spectrum.band_high is not None:
        axes.fill_between(
            spectrum.wavenumbers_cm1,
            spectrum.band_low,
            spectrum.band_high,
            color=line.get_color(),
            alpha=0.3,
            lw=0,
            label=f"committee range ({settings.get('n_members')} members)",
        )
    if spectrum.sampling_low is not None and spectrum.sampling_high is not None:
        confidence = settings.get("sampling_confidence") or SAMPLING_CONFIDENCE
        for edge, edge_label in ((spectrum.sampling_low, f"{confidence:.0%} interval over "
                                  f"{settings.get('n_replicas')} replicas (sampling)"), (spectrum.sampling_high, None)):
            axes.plot(spectrum.wavenumbers_cm1, edge, color="0.35", lw=0.7, ls="--", label=edge_label)
    x_max = float(spectrum.wavenumbers_cm1[-1])
    for colour_index, (name, (frequencies, intensities)) in enumerate((harmonic or {}).items(), start=1):
        frequencies = np.asarray(frequencies, dtype=float)
        intensities = np.asarray(intensities, dtype=float)
        if frequencies.ndim != 1 or intensities.shape != frequencies.shape:
            raise ValueError(f"harmonic[{name!r}] must be two 1-D arrays of equal length")
        largest = float(np.max(np.abs(intensities))) if intensities.size else 0.0
        heights = intensities / largest if largest > 0 else intensities
        axes.vlines(frequencies, 0.0, -heights, color=f"C{colour_index}", lw=1.5, label=f"{name} (harmonic)")
    if harmonic:
        axes.axhline(0.0, color="0.3", lw=0.6)
    axes.set_xlim(0.0, x_max)
    axes.set_xlabel("wavenumber (cm⁻¹)")
    axes.set_ylabel("intensity (arb. units)")
    if title is not None:
        axes.set_title(title)
    axes.legend(loc="best", fontsize="small")
    return figure
