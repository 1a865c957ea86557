"""Benchmark (issue 20): how to spend an IR spectrum's MD budget — few long replicas or many
short ones — and whether the replicas' 95% interval tells the truth.

The spectrum of a small molecule from NVE MD is an average over microcanonical
trajectories, each started from one draw of the canonical ensemble (Langevin
equilibration). Energy flows slowly between the modes of an isolated 9-atom molecule, so
one replica's spectrum keeps the mode energies it started with: a line's height varies
from replica to replica by more than a longer run averages away. This script measures
that, with the BPNN committee of ``bench.dipole_accuracy`` (the example's ``[committee]``
and ``[train]``, 200 random pool labels, seed 0; cached in
``bench/data/ethanol-pbe-def2svp/committees/``), at 300 K, 0.5 fs, a 2 ps hann window on
the autocorrelation (``alflow spectrum``'s defaults):

1. a reference spectrum from many replicas (``--reference R L``, default 96 × 5 ps);
2. for each split of the same MD budget, R replicas × L ps of NVE after 2 ps of Langevin
   each (``--splits``; default 8 × 20, the ``alflow spectrum`` default, 16 × 9 and 44 × 2:
   176 replica-ps each, equilibration included; ``8x20@0.002`` and ``8x20@0.0005``: the
   same 8 × 20 with a weak Langevin thermostat, γ = 0.002 or 0.0005/fs, kept on in the
   production so that each replica redraws its mode energies every ~1/γ = 0.5 or 2 ps,
   lines broadened by γ/(2πc) = 10.6 or 2.7 cm⁻¹), ``--repeats`` independent
   runs (disjoint seeds), each compared with the reference at the reference's 6 strongest
   peaks above 500 cm⁻¹. Spectra are compared normalised to equal area over 500-4000
   cm⁻¹ (so one peak's noise does not rescale the others): the peaks' relative height
   errors, the relative half-width of the run's own 95% replicas' interval there, how
   often the reference height lies inside it, and the mean absolute difference of the
   normalised spectra over 500-4000 cm⁻¹ (as a fraction of their mean).

All splits estimate the same quantity (the unbiased autocorrelation up to 2 ps has the
same expectation for any production length ≥ 2 ps), so the reference from short runs is
a fair truth for the long ones (the thermostatted runs' lines are broadened a little
more). The reference's own error is reported (its interval).

    .venv/bin/python -m bench.spectrum_sampling [--repeats 2] [--no-write]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench._report import command_line, machine_line, markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "ethanol-pbe-def2svp"
COMMITTEE_DIR = DATA / "committees" / "spectrum-sampling-bpnn-200"
EQUILIBRATION_PS = 2.0
CORRELATION_PS = 2.0
TEMPERATURE_K = 300.0
AREA_RANGE_CM1 = (500.0, 4000.0)
N_PEAKS = 6
DEFAULT_SPLITS = ("8x20", "16x9", "44x2", "8x20@0.002", "8x20@0.0005")


def committee():
    """The 200-label BPNN committee of ``bench.dipole_accuracy`` (seed 0), trained once."""
    from nnp_core.committee import load_committee

    if (COMMITTEE_DIR / "committee.json").is_file():
        return load_committee(COMMITTEE_DIR)
    from bench.dipole_accuracy import Recipe, _read, _train

    pool = _read("pool.extxyz")
    frames = [pool[i] for i in np.random.default_rng(0).choice(len(pool), 200, replace=False)]
    trained, _ = _train(frames, Recipe("bpnn", 4), 0)
    trained.save(COMMITTEE_DIR)
    return trained


def start_geometry():
    import json

    from ase import Atoms

    from bench.dipole_accuracy import HARMONIC_CACHE

    reference = json.loads(HARMONIC_CACHE.read_text())
    return Atoms(numbers=reference["numbers"], positions=reference["positions"])


def run(model, replicas: int, ps: float, seed: int, friction_per_fs: float = 0.0):
    """(spectrum, MD wall seconds) of ``replicas`` × ``ps`` ps with replica seeds seed, seed+1, ...
    (``friction_per_fs`` > 0: a weak Langevin thermostat during the production)."""
    from nnp_core.dipole_md import dipole_md
    from nnp_core.ir import committee_ir_spectrum

    trajectory = dipole_md(model, start_geometry(), temperature_K=TEMPERATURE_K, replicas=replicas,
                           equilibration_ps=EQUILIBRATION_PS, production_ps=ps, timestep_fs=0.5, seed=seed,
                           production_friction_per_fs=friction_per_fs)
    mean = trajectory.member_dipoles_eA.mean(axis=0)[None]  # the committee-mean dipole: one "member"
    spectrum = committee_ir_spectrum(mean, trajectory.timestep_fs, temperature_K=TEMPERATURE_K,
                                     correlation_ps=min(CORRELATION_PS, ps))
    return spectrum, trajectory.wall_s


def cached_reference(model, replicas: int, ps: float, seed: int):
    """:func:`run` of the reference, kept next to the committee (an hour of MD on a shared core)."""
    from nnp_core.ir import IRSpectrum

    path = COMMITTEE_DIR / f"reference-{replicas}x{ps:g}-seed{seed}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        settings = {"sampling_confidence": 0.95}
        return IRSpectrum(data["axis"], data["intensity"], None, None, None, settings, data["low"],
                          data["high"]), float(data["wall_s"])
    spectrum, wall = run(model, replicas, ps, seed)
    np.savez(path, axis=spectrum.wavenumbers_cm1, intensity=spectrum.intensity, low=spectrum.sampling_low,
             high=spectrum.sampling_high, wall_s=wall)
    return spectrum, wall


def area_normalised(spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intensity, sampling_low, sampling_high) divided by the intensity's area over AREA_RANGE_CM1."""
    axis = spectrum.wavenumbers_cm1
    keep = (axis >= AREA_RANGE_CM1[0]) & (axis <= AREA_RANGE_CM1[1])
    area = float(np.trapezoid(spectrum.intensity[keep], axis[keep]))
    return spectrum.intensity / area, spectrum.sampling_low / area, spectrum.sampling_high / area


def compare(spectrum, reference, peaks_cm1: list[float]) -> dict:
    """A run against the reference at the reference's peaks (both area-normalised)."""
    axis = reference.wavenumbers_cm1
    assert np.allclose(spectrum.wavenumbers_cm1, axis), "the runs must share the wavenumber grid"
    mine, low, high = area_normalised(spectrum)
    truth, _, _ = area_normalised(reference)
    index = [int(np.argmin(np.abs(axis - peak))) for peak in peaks_cm1]
    errors = np.abs(mine[index] - truth[index]) / truth[index]
    half = (high[index] - low[index]) / 2 / mine[index]
    inside = (low[index] <= truth[index]) & (truth[index] <= high[index])
    keep = (axis >= AREA_RANGE_CM1[0]) & (axis <= AREA_RANGE_CM1[1])
    shape = float(np.abs(mine[keep] - truth[keep]).mean() / truth[keep].mean())
    return {"errors": errors.tolist(), "half_widths": half.tolist(), "inside": inside.tolist(), "shape": shape}


def parse_split(text: str) -> tuple[int, float, float]:
    """``RxPS`` (NVE) or ``RxPS@GAMMA`` (Langevin γ in 1/fs during the production)."""
    text, _, friction = text.lower().partition("@")
    replicas, ps = text.split("x")
    return int(replicas), float(ps), float(friction or 0.0)


def split_name(replicas: int, ps: float, friction: float) -> str:
    return f"{replicas} × {ps:g}" + (f", Langevin γ = {friction:g}/fs" if friction else " NVE")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), metavar="RxPS",
                        help="replicas x NVE ps per run (equal budgets make a fair comparison)")
    parser.add_argument("--repeats", type=int, default=2, help="independent runs of each split")
    parser.add_argument("--reference", nargs=2, type=float, default=(96, 5.0), metavar=("R", "PS"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        splits = [parse_split(text) for text in args.splits]
    except ValueError:
        parser.error(f"--splits: each is RxPS or RxPS@GAMMA (e.g. 8x20, 8x20@0.002), got {' '.join(args.splits)}")
    if any(ps < CORRELATION_PS for _, ps, _ in splits):
        parser.error(f"--splits: every run needs at least {CORRELATION_PS:g} ps of NVE (the correlation window)")
    began = time.perf_counter()
    model = committee()
    reference_replicas, reference_ps = int(args.reference[0]), float(args.reference[1])
    reference, reference_wall = cached_reference(model, reference_replicas, reference_ps, seed=100_000)
    peaks = [wavenumber for wavenumber, _ in reference.peaks(N_PEAKS, above_cm1=AREA_RANGE_CM1[0])]
    truth, truth_low, truth_high = area_normalised(reference)
    index = [int(np.argmin(np.abs(reference.wavenumbers_cm1 - peak))) for peak in peaks]
    reference_half = (truth_high[index] - truth_low[index]) / 2 / truth[index]
    print(f"reference {reference_replicas} x {reference_ps:g} ps: peaks {np.round(peaks, 0)}, 95% half-widths "
          f"{np.round(100 * reference_half, 1)}% ({reference_wall:.0f} s)", flush=True)

    rows, detail = [], []
    for split_index, (replicas, ps, friction) in enumerate(splits):
        results, walls = [], []
        for repeat in range(args.repeats):
            spectrum, wall = run(model, replicas, ps, seed=1000 * (10 * split_index + repeat + 1),
                                 friction_per_fs=friction)
            results.append(compare(spectrum, reference, peaks))
            walls.append(wall)
            print(f"{replicas} x {ps:g} ps, repeat {repeat}: {results[-1]} ({wall:.0f} s)", flush=True)
        errors = np.array([r["errors"] for r in results])  # (repeats, peaks)
        halves = np.array([r["half_widths"] for r in results])
        inside = np.array([r["inside"] for r in results])
        shapes = np.array([r["shape"] for r in results])
        budget = replicas * (EQUILIBRATION_PS + ps)
        rows.append([split_name(replicas, ps, friction), round(budget, 1), f"{100 * np.sqrt(np.mean(errors ** 2)):.1f}%",
                     f"{100 * errors.max():.0f}%", f"{100 * halves.mean():.1f}%",
                     f"{inside.sum()} of {inside.size}", f"{100 * shapes.mean():.1f}%", round(float(np.mean(walls)))])
        detail.append([split_name(replicas, ps, friction),
                       *(f"{100 * errors[:, k].mean():.0f}% (±{100 * halves[:, k].mean():.0f}%)"
                         for k in range(len(peaks)))])

    command = command_line("bench.spectrum_sampling", argv)
    text = "\n".join([
        "## IR spectrum: few long replicas or many short ones? (issue 20)", "", command, "", machine_line(), "",
        f"BPNN committee of 4 (`bench.dipole_accuracy`'s, 200 random pool labels, seed 0), ethanol at "
        f"{TEMPERATURE_K:g} K: each run is R replicas × L ps of NVE (0.5 fs) after {EQUILIBRATION_PS:g} ps of "
        f"Langevin, the committee-mean dipole's spectrum with a {CORRELATION_PS:g} ps hann window and the harmonic "
        f"correction (`alflow spectrum`'s defaults). Reference: {reference_replicas} replicas × "
        f"{reference_ps:g} ps (its own 95% half-widths at the peaks: "
        + ", ".join(f"{100 * h:.0f}%" for h in reference_half) + f"; {reference_wall:.0f} s of MD). "
        f"Each split was run {args.repeats} times with disjoint seeds; spectra compared normalised to equal area "
        f"over {AREA_RANGE_CM1[0]:g}-{AREA_RANGE_CM1[1]:g} cm⁻¹, at the reference's {len(peaks)} strongest peaks "
        f"({', '.join(f'{p:.0f}' for p in peaks)} cm⁻¹).", "",
        markdown_table(["run (R × L ps)", "MD budget (replica-ps, with equilibration)", "peak height error (RMS)",
                        "worst peak", "own 95% half-width (mean)", "reference inside own interval",
                        "spectrum difference (mean abs / mean)", "MD wall (s)"], rows), "",
        "Per peak: mean relative height error over the repeats (the run's own 95% half-width in brackets).", "",
        markdown_table(["run (R × L ps)", *(f"{p:.0f} cm⁻¹" for p in peaks)], detail), "",
        f"Total {time.perf_counter() - began:.0f} s on one thread.",
    ])
    print(text)
    if not args.no_write:
        write_section("spectrum-sampling", text)
    return text


if __name__ == "__main__":
    main()
