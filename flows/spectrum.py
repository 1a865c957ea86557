"""The IR spectrum of a campaign's latest committee (``alflow spectrum CONFIG``).

The numerics are ``nnp_core``'s: :func:`nnp_core.dipole_md.dipole_md` runs R replicas
from the campaign's reference geometry (Langevin equilibration at the temperature, then
NVE, every member's dipole at every production step, all replicas batched);
:func:`nnp_core.ir.committee_ir_spectrum` turns the dipoles into the spectrum of the
committee-mean dipole with two error bars, the members' min–max band (how much the
dipole models disagree along these trajectories) and the replicas' 95% confidence
interval (how much trajectories this long leave the lineshape uncertain); and
:func:`nnp_core.vibrations.committee_harmonic_ir` gives the committee's harmonic sticks
at its minimum nearest the reference geometry. ``--reference-harmonic`` adds the
reference backend's own harmonic IR (``.vibrations(atoms, ir=True)``) at its own
minimum (BFGS from the committee's): a reference optimisation and Hessian, minutes for a
small molecule at DFT (ethanol PBE/def2-SVP: about 5 min on 2 cores), hence off by default.

Files, in ``<work_dir>/report`` or ``--output DIR``, named by the stored spectrum's id
``N`` so that no run ever writes onto another's (or onto any existing file: a taken
name is refused): ``ir-spectrum-N.csv`` (``IRSpectrum.to_csv``: a ``# settings`` line,
then ``wavenumber_cm1,intensity,band_low,band_high,sampling_low,sampling_high``),
``ir-spectrum-N.png``
(``nnp_core.ir.plot_ir``) and ``ir-harmonic-N.csv`` (``source,frequency_cm1,
intensity_km_mol``: the committee's sticks, and the reference's with
``--reference-harmonic``). The run is a row of ``spectra`` (``flows.storage.spectra``)
and a markdown artifact ``<campaign>-ir-spectrum`` (``flows.dashboard.publish_spectrum``).

Everything that can be refused is refused before the MD runs, with nothing written
(``SpectrumArgumentError``: an option; ``SpectrumError``: no dipole head, a reference
without vibrations; ``LookupError``: no campaign or committee; ``OutputError``: the
output folder, a taken file name; ``CampaignBusy``: a run holds the campaign). The
database is read until the spectrum is computed; it is written once, in one transaction
holding the campaign's runner row (as ``alflow md --feed-back``), with the files: a
failure there removes the files this run wrote and stores nothing.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from flows import storage
from flows.campaign import CampaignContext, open_campaign
from flows.production import campaign_files
from flows.runner import CampaignBusy, busy, campaign_runner
from flows.steps.training import load_latest
from nnp_core.ir import CORRECTIONS, MIN_STEPS, WINDOWS, IRSpectrum, nyquist_wavenumber_cm1
from nnp_core.train_config import TrainConfig

#: how the committee-band and the correction are explained, once, at the end of the summary
BAND_MEANING = (
    "two error bars: the shaded band is the range of the committee members' spectra along the same trajectories "
    "(where it is wide the dipole models disagree); the dashed lines are the 95% confidence interval of the "
    "spectrum over the independent replicas (where they are far apart the trajectories are too short or too "
    "few: add --replicas or --ps). Peak heights carry both, as 'members' and 'replicas' ranges")
NO_DIPOLE_HEAD = ("this campaign's committee has no dipole head: set [train] dipole_weight > 0 "
                  f"(default {TrainConfig.dipole_weight:g}) and run `alflow retrain` or the next generation")
#: MD peaks compared with the harmonic sticks in the summary
SUMMARY_PEAKS = 6
#: the strongest production thermostat accepted, 1/fs (its lines are γ/(2πc) = 53 cm⁻¹ broader)
MAX_PRODUCTION_FRICTION = 0.01
#: warn when the replicas' 95% half-width at a summary peak exceeds this fraction of its height
SAMPLING_WARNING = 0.25
#: ... for peaks at least this high (the spectrum's maximum is 1)
SAMPLING_WARNING_HEIGHT = 0.1


def line_broadening_cm1(friction_per_fs: float) -> float:
    """FWHM (cm⁻¹) that Langevin friction γ adds to every line: γ/(2πc)."""
    from nnp_core.ir import C_CM_PER_FS

    return friction_per_fs / (2.0 * math.pi * C_CM_PER_FS)


class SpectrumError(ValueError):
    """``alflow spectrum`` cannot run (nothing was run or written)."""


class SpectrumArgumentError(SpectrumError):
    """An ``alflow spectrum`` option that cannot be used."""


@dataclass(frozen=True)
class SpectrumSettings:
    """What ``alflow spectrum`` runs (units in the names; ``ps`` is the NVE production)."""

    temperature_K: float = 300.0
    replicas: int = 8
    ps: float = 20.0
    equilibration_ps: float = 2.0
    timestep_fs: float = 0.5
    seed: int = 0
    window: str = "hann"
    correction: str = "harmonic"
    zero_padding: int = 4
    correlation_ps: float = 2.0
    max_wavenumber_cm1: float = 4000.0
    reference_harmonic: bool = False
    production_friction_per_fs: float = 0.0

    def check(self) -> None:
        """Raise :class:`SpectrumArgumentError` (one line naming the option) for a value
        that cannot be run."""
        finite_step = math.isfinite(self.timestep_fs) and self.timestep_fs > 0
        problems = [
            (not (math.isfinite(self.temperature_K) and self.temperature_K > 0),
             f"--temperature must be > 0 K, got {self.temperature_K:g}"),
            (self.replicas < 1, f"--replicas must be at least 1, got {self.replicas}"),
            (not (math.isfinite(self.ps) and self.ps > 0), f"--ps must be a positive length in ps, got {self.ps:g}"),
            (not (math.isfinite(self.equilibration_ps) and self.equilibration_ps >= 0),
             f"--equilibration-ps must be 0 or more, got {self.equilibration_ps:g}"),
            (not finite_step, f"--timestep must be a positive number of fs, got {self.timestep_fs:g}"),
            (self.seed < 0, f"--seed must be 0 or more, got {self.seed}"),
            (self.window not in WINDOWS, f"--window must be one of {', '.join(WINDOWS)}, got {self.window!r}"),
            (self.correction not in CORRECTIONS,
             f"--correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}"),
            (isinstance(self.zero_padding, bool) or not isinstance(self.zero_padding, int) or self.zero_padding < 1,
             f"--zero-padding must be a whole number, 1 or more, got {self.zero_padding}"),
            (not (math.isfinite(self.correlation_ps) and self.correlation_ps > 0),
             f"--correlation-ps must be a positive lag in ps, got {self.correlation_ps:g}"),
            (not (math.isfinite(self.max_wavenumber_cm1) and self.max_wavenumber_cm1 > 0),
             f"--max-wavenumber must be > 0 cm-1, got {self.max_wavenumber_cm1:g}"),
            (not (math.isfinite(self.production_friction_per_fs) and 0 <= self.production_friction_per_fs
                  <= MAX_PRODUCTION_FRICTION),
             f"--production-friction must be 0 (NVE) to {MAX_PRODUCTION_FRICTION:g} per fs (a weak thermostat; "
             f"more broadens every line by over 50 cm-1), got {self.production_friction_per_fs:g}"),
        ]
        for bad, message in problems:
            if bad:
                raise SpectrumArgumentError(message)
        nyquist = nyquist_wavenumber_cm1(self.timestep_fs)
        if self.max_wavenumber_cm1 > nyquist:
            raise SpectrumArgumentError(
                f"--max-wavenumber {self.max_wavenumber_cm1:g} cm-1 is above {nyquist:.0f} cm-1, the highest a "
                f"timestep of {self.timestep_fs:g} fs resolves; lower it or the --timestep")
        if self.production_steps + 1 < MIN_STEPS:
            raise SpectrumArgumentError(
                f"--ps {self.ps:g} is {self.production_steps} timestep(s) of {self.timestep_fs:g} fs; a spectrum "
                f"needs at least {MIN_STEPS - 1} (aim for 10 ps or more: the resolution is 1/length)")

    @property
    def ensemble(self) -> str:
        """How the production runs, for the summary."""
        gamma = self.production_friction_per_fs
        if gamma == 0:
            return "NVE"
        return f"Langevin at {gamma:g}/fs (lines broadened by {line_broadening_cm1(gamma):.1f} cm-1)"

    @property
    def production_steps(self) -> int:
        return round(self.ps * 1000.0 / self.timestep_fs)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SpectrumRun:
    """What ``alflow spectrum`` did, for its closing lines (and the dashboard)."""

    spectrum_id: int
    committee_id: int
    campaign: str
    settings: SpectrumSettings
    spectrum: IRSpectrum
    committee_harmonic: tuple[np.ndarray, np.ndarray]
    reference_harmonic: tuple[np.ndarray, np.ndarray] | None
    reference_name: str | None
    mean_temperature_K: float
    energy_drift_meV_per_atom_ps: float
    minimum_max_force_eV_A: float
    wall_s: float
    files: list[Path] = field(default_factory=list)
    published: bool = False

    def peak_ranges(self, wavenumber: float) -> str:
        """The members' range and the replicas' 95% interval of the spectrum at a peak,
        as text ('' when neither exists)."""
        spectrum = self.spectrum
        index = int(np.argmin(np.abs(spectrum.wavenumbers_cm1 - wavenumber)))
        parts = []
        if spectrum.band_low is not None and spectrum.band_high is not None:
            parts.append(f"members {spectrum.band_low[index]:.2f} to {spectrum.band_high[index]:.2f}")
        if spectrum.sampling_low is not None and spectrum.sampling_high is not None:
            parts.append(f"replicas {spectrum.sampling_low[index]:.2f} to {spectrum.sampling_high[index]:.2f}")
        return ", ".join(parts)

    def peak_shifts(self) -> list[tuple[float, float | None, float, float | None]]:
        """The MD spectrum's highest peaks: (MD wavenumber, nearest committee harmonic
        frequency, its intensity in km/mol, MD − harmonic), cm⁻¹, by wavenumber."""
        frequencies, intensities = self.committee_harmonic
        real = frequencies > 0  # an imaginary mode (negative) is no line
        frequencies, intensities = frequencies[real], intensities[real]
        rows = []
        for wavenumber, _ in self.spectrum.peaks(SUMMARY_PEAKS):
            if len(frequencies):
                nearest = int(np.argmin(np.abs(frequencies - wavenumber)))
                rows.append((wavenumber, float(frequencies[nearest]), float(intensities[nearest]),
                             wavenumber - float(frequencies[nearest])))
            else:
                rows.append((wavenumber, None, math.nan, None))
        return rows

    def summary_lines(self) -> list[str]:
        s, ir = self.settings, self.spectrum.settings
        lines = [
            f"IR spectrum {self.spectrum_id} of committee {self.committee_id} ({ir['n_members']} members): "
            f"{ir['n_replicas']} replica(s) x {s.ps:g} ps {s.ensemble} after {s.equilibration_ps:g} ps Langevin at "
            f"{s.temperature_K:g} K, timestep {s.timestep_fs:g} fs; resolution {ir['resolution_cm1']:.1f} cm-1",
            f"correction: {ir['correction']} "
            f"({'quantum, harmonic factor' if ir['correction'] == 'harmonic' else 'classical lineshape'}); "
            f"window: {ir['window']} over {ir['correlation_ps']:g} ps of the autocorrelation; zero padding "
            f"x{ir['zero_padding']}",
            (f"NVE: mean temperature {self.mean_temperature_K:.1f} K, energy drift "
             f"{self.energy_drift_meV_per_atom_ps:.3g} meV/atom/ps; wall time {self.wall_s:.1f} s"
             if s.production_friction_per_fs == 0 else
             f"production: mean temperature {self.mean_temperature_K:.1f} K (thermostatted: no energy drift to "
             f"check); wall time {self.wall_s:.1f} s"),
        ]
        shifts = self.peak_shifts()
        if shifts:
            lines.append("peaks (MD height [members, replicas 95%] -> nearest committee harmonic line, shift):")
            heights = dict(self.spectrum.peaks(SUMMARY_PEAKS))
            for md, harmonic, intensity, shift in shifts:
                ranges = self.peak_ranges(md)
                lines.append(f"  {md:7.1f} cm-1 height {heights[md]:.2f}" + (f" [{ranges}]" if ranges else "")
                             + " -> " + ("none" if harmonic is None else
                                         f"{harmonic:7.1f} cm-1 ({intensity:.3g} km/mol), shift {shift:+.1f} cm-1"))
        else:
            lines.append("no peak above 400 cm-1 in the MD spectrum")
        if self.reference_harmonic is not None:
            frequencies = self.reference_harmonic[0]
            lines.append(f"reference harmonic ({self.reference_name}): "
                         + ", ".join(f"{f:.0f}" for f in frequencies[frequencies > 0]) + " cm-1")
        if self.files:
            lines.append("wrote " + ", ".join(str(p) for p in self.files))
        return lines

    def sampling_spread(self) -> tuple[float, float] | None:
        """The summary peak (at least ``SAMPLING_WARNING_HEIGHT`` high) whose replicas'
        interval is widest relative to its height: (half-width / height, wavenumber);
        None with one replica or no such peak."""
        spectrum = self.spectrum
        if spectrum.sampling_low is None or spectrum.sampling_high is None:
            return None
        spreads = []
        for wavenumber, height in spectrum.peaks(SUMMARY_PEAKS):
            if height >= SAMPLING_WARNING_HEIGHT:
                index = int(np.argmin(np.abs(spectrum.wavenumbers_cm1 - wavenumber)))
                spreads.append(((spectrum.sampling_high[index] - spectrum.sampling_low[index]) / 2 / height,
                                wavenumber))
        return max(spreads) if spreads else None

    def warnings(self) -> list[str]:
        lines = []
        spread = self.sampling_spread()
        if spread is not None and spread[0] > SAMPLING_WARNING:
            lines.append(f"the replicas' 95% interval at the {spread[1]:.0f} cm-1 peak is ±{spread[0]:.0%} of its "
                         f"height: the peak heights are not settled; add --replicas (the interval narrows as "
                         f"1/sqrt(replicas)) or keep a weak thermostat on (--production-friction 0.002: on ethanol "
                         f"it narrowed ±55% to ±19% at the same cost)")
        if self.minimum_max_force_eV_A > 1e-3:
            lines.append(f"the committee's minimum was not reached (largest force {self.minimum_max_force_eV_A:.2g} "
                         f"eV/Å): its harmonic lines are approximate")
        nve = self.settings.production_friction_per_fs == 0
        if nve and abs(self.mean_temperature_K - self.settings.temperature_K) > 0.2 * self.settings.temperature_K:
            lines.append(f"the NVE runs averaged {self.mean_temperature_K:.0f} K, not {self.settings.temperature_K:g} "
                         f"K (energy drift {self.energy_drift_meV_per_atom_ps:.3g} meV/atom/ps): a large drift means "
                         f"the committee is unstable here or the --timestep too long; otherwise lengthen "
                         f"--equilibration-ps or add --replicas")
        return lines

    def markdown(self) -> str:
        """The summary for the dashboard artifact (the picture is added by ``publish_spectrum``)."""
        return "\n".join([f"# IR spectrum {self.spectrum_id} of campaign {self.campaign}", "",
                          *(f"{line}  " for line in self.summary_lines()), "", BAND_MEANING])


def run_spectrum(config_path: str | Path, settings: SpectrumSettings, *, output: Path | None = None) -> SpectrumRun:
    """Compute, write, store and publish the IR spectrum of the campaign's latest
    committee (see the module doc for what is refused, when, and what is written)."""
    from flows.dashboard import publish_spectrum
    from nnp_core.dipole_md import dipole_md
    from nnp_core.ir import committee_ir_spectrum
    from nnp_core.vibrations import committee_harmonic_ir

    settings.check()
    ctx = open_campaign(config_path, create=False)
    writer = None
    try:
        latest = load_latest(ctx)
        if latest is None:
            raise LookupError(f"campaign {ctx.name!r} has no committee yet: `alflow run {config_path}` trains "
                              f"the first (generation 0)")
        committee_id, committee = latest
        if not committee.has_dipole:
            raise SpectrumError(NO_DIPOLE_HEAD)
        backend = reference_name = None
        if settings.reference_harmonic:
            backend = ctx.backend
            if not callable(getattr(backend, "vibrations", None)):
                raise SpectrumError(f"--reference-harmonic: the reference backend {ctx.config.reference.backend!r} "
                                    f"computes no vibrations (PySCF does)")
            reference_name = f"{ctx.config.reference.method}/{getattr(ctx.config.reference, 'basis', '')}".rstrip("/")
        with storage.reading(ctx.engine) as session:
            start = storage.reference_structure(session, ctx.campaign_id)
            predicted = storage.next_spectrum_id(session)
        start = Atoms(numbers=start.numbers, positions=start.positions)
        folder = Path(output) if output is not None else ctx.work_dir / "report"
        protected = campaign_files(ctx)
        check_folder(folder)
        for path in output_files(folder, predicted):
            check_free(path, protected)
        if reason := busy(ctx):
            raise CampaignBusy(reason)
        writer = open_campaign(config_path)

        began = time.perf_counter()
        key = f"{ctx.name}-exploration"  # shown as the MD row of the live display

        def progress(done: int, total: int) -> None:
            from flows.progress import publish

            publish(key, "IR dipole MD", done / max(total, 1),
                    {"step": done, "steps": total, "replicas_running": settings.replicas,
                     "replicas": settings.replicas})

        try:
            trajectory = dipole_md(committee.to(ctx.config.explore_device()), start, temperature_K=settings.temperature_K,
                                   replicas=settings.replicas, equilibration_ps=settings.equilibration_ps,
                                   production_ps=settings.ps, timestep_fs=settings.timestep_fs, seed=settings.seed,
                                   progress=progress,
                                   production_friction_per_fs=settings.production_friction_per_fs)
            spectrum = committee_ir_spectrum(
                trajectory.member_dipoles_eA, trajectory.timestep_fs, temperature_K=settings.temperature_K,
                window=settings.window, zero_padding=settings.zero_padding, correction=settings.correction,
                correlation_ps=min(settings.correlation_ps, settings.ps),
                max_wavenumber_cm1=settings.max_wavenumber_cm1)
            harmonic = committee_harmonic_ir(committee, start)
        except (ValueError, RuntimeError) as exc:  # unstable MD, a flat dipole: one line, nothing written
            raise SpectrumError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        reference = None
        if backend is not None:
            try:
                modes = backend.vibrations(reference_minimum(backend, harmonic.minimum), ir=True)
            except Exception as exc:  # noqa: BLE001 - an SCF that fails to converge, ...: one line
                raise SpectrumError(f"--reference-harmonic: the reference Hessian failed ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}); nothing was stored") from None
            reference = (np.asarray(modes.frequencies_cm1, dtype=float),
                         np.asarray(modes.ir_intensities_km_mol, dtype=float))
        run = SpectrumRun(
            spectrum_id=0, committee_id=committee_id, campaign=ctx.name, settings=settings, spectrum=spectrum,
            committee_harmonic=(np.asarray(harmonic.frequencies_cm1, dtype=float),
                                np.asarray(harmonic.intensities_km_mol, dtype=float)),
            reference_harmonic=reference, reference_name=reference_name,
            mean_temperature_K=trajectory.mean_temperature_K,
            energy_drift_meV_per_atom_ps=trajectory.energy_drift_meV_per_atom_ps,
            minimum_max_force_eV_A=harmonic.max_force_eV_A, wall_s=time.perf_counter() - began)
        png = store(writer, run, folder, protected)
        run.published = publish_spectrum(ctx.name, png, run.markdown())
        return run
    finally:
        ctx.engine.dispose()
        if writer is not None:
            writer.engine.dispose()


#: the reference's own minimum, started from the committee's (force threshold, eV/Å; steps)
REFERENCE_FMAX_EV_A, REFERENCE_MAX_STEPS = 0.005, 200


def reference_minimum(backend: Any, start: Atoms) -> Atoms:
    """The reference method's own minimum (ASE's BFGS on the backend), started from the
    committee's minimum: harmonic frequencies are only meaningful at a stationary point
    of the method that gives them."""
    from ase.optimize import BFGS

    atoms = Atoms(numbers=start.numbers, positions=start.positions, info=dict(start.info))
    atoms.calc = backend
    BFGS(atoms, logfile=None).run(fmax=REFERENCE_FMAX_EV_A, steps=REFERENCE_MAX_STEPS)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, info=dict(atoms.info))


def output_files(folder: Path, spectrum_id: int) -> list[Path]:
    """The spectrum CSV, its PNG and the harmonic CSV of spectrum ``spectrum_id``."""
    return [folder / f"ir-spectrum-{spectrum_id}.csv", folder / f"ir-spectrum-{spectrum_id}.png",
            folder / f"ir-harmonic-{spectrum_id}.csv"]


def check_folder(folder: Path) -> None:
    from flows.storage.backup import OutputError

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output {folder} is a file; give a folder to write the spectrum's files into")


def check_free(path: Path, protected: list[Path]) -> None:
    """Refuse (``OutputError``) a file name that is taken: files are never overwritten."""
    from flows.storage.backup import OutputError, check_output

    if path.exists() or path.is_symlink():
        raise OutputError(f"{path} exists (spectra are numbered by their stored id and never overwrite a file); "
                          f"move it away or give another --output folder")
    check_output(path, overwrite=False, protected=protected)


def harmonic_csv(run: SpectrumRun) -> str:
    """``ir-harmonic-N.csv``: a ``#`` line saying where the lines come from, then
    ``source,frequency_cm1,intensity_km_mol`` (committee, then reference)."""
    lines = [f"# harmonic IR at the committee's minimum nearest the reference geometry (largest force "
             f"{run.minimum_max_force_eV_A:.2g} eV/A); committee {run.committee_id}"
             + (f"; reference {run.reference_name} at its own minimum" if run.reference_harmonic is not None else ""),
             "source,frequency_cm1,intensity_km_mol"]
    sets = [("committee", run.committee_harmonic)]
    if run.reference_harmonic is not None:
        sets.append(("reference", run.reference_harmonic))
    for source, (frequencies, intensities) in sets:
        lines += [f"{source},{f:.10g},{i:.10g}" for f, i in zip(frequencies, intensities)]
    return "\n".join(lines) + "\n"


def figure_png(run: SpectrumRun) -> bytes:
    from nnp_core.ir import plot_ir

    harmonic = {f"committee {run.committee_id}": run.committee_harmonic}
    if run.reference_harmonic is not None:
        harmonic[f"reference {run.reference_name}"] = run.reference_harmonic
    figure = plot_ir(run.spectrum, harmonic=harmonic,
                     title=f"{run.campaign}: IR spectrum {run.spectrum_id}, {run.settings.temperature_K:g} K")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def store(ctx: CampaignContext, run: SpectrumRun, folder: Path, protected: list[Path]) -> bytes:
    """Store the spectrum and write its files, in one transaction holding the campaign's
    runner row (``CampaignBusy`` if a run holds it); returns the PNG. A failure removes
    the files this call wrote and stores nothing."""
    from flows.storage.backup import replacing

    spectrum = run.spectrum
    written: list[Path] = []
    try:
        with campaign_runner(ctx, tag="spectrum"), storage.transaction(ctx.engine) as session:
            run.spectrum_id = storage.add_spectrum(
                session, ctx.campaign_id, run.committee_id,
                settings={**run.settings.as_json(), **spectrum.settings,
                          "mean_temperature_K": run.mean_temperature_K,
                          "minimum_max_force_eV_A": run.minimum_max_force_eV_A,
                          "reference": run.reference_name},
                wavenumbers_cm1=spectrum.wavenumbers_cm1, intensity=spectrum.intensity,
                band_low=spectrum.band_low, band_high=spectrum.band_high,
                sampling_low=spectrum.sampling_low, sampling_high=spectrum.sampling_high,
                harmonic_frequencies_cm1=run.committee_harmonic[0],
                harmonic_intensities_km_mol=run.committee_harmonic[1],
                reference_frequencies_cm1=None if run.reference_harmonic is None else run.reference_harmonic[0],
                reference_intensities_km_mol=None if run.reference_harmonic is None else run.reference_harmonic[1],
                mean_temperature_K=run.mean_temperature_K,
                energy_drift_meV_per_atom_ps=run.energy_drift_meV_per_atom_ps, wall_s=run.wall_s)
            csv_path, png_path, harmonic_path = output_files(folder, run.spectrum_id)
            for path in (csv_path, png_path, harmonic_path):
                check_free(path, protected)
            png = figure_png(run)
            with replacing(csv_path, protected=protected, suffix=".csv") as temporary:
                temporary.unlink()  # IRSpectrum.to_csv writes a new file only
                spectrum.to_csv(temporary)
            written.append(csv_path)
            with replacing(png_path, protected=protected, suffix=".png") as temporary:
                temporary.write_bytes(png)
            written.append(png_path)
            with replacing(harmonic_path, protected=protected, suffix=".csv") as temporary:
                temporary.write_text(harmonic_csv(run), encoding="utf-8")
            written.append(harmonic_path)
            storage.set_spectrum_files(session, run.spectrum_id, csv_path=ctx.relative(csv_path),
                                       png_path=ctx.relative(png_path), harmonic_csv_path=ctx.relative(harmonic_path))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    run.files = written
    return png
