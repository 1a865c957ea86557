"""Benchmark: labelling MD frames of ethanol with PySCF, plain loop vs alflow's backend.

Run from the repository root::

    .venv/bin/python -m bench.labeling            # 20 frames, PBE/def2-SVP, DF (minutes)
    .venv/bin/python -m bench.labeling --quick    # 4 frames, HF/STO-3G (seconds)

Modes, all on the same frames and at the same level of theory:

(a) a plain PySCF loop written here (build, SCF, gradient, dipole), 2 threads;
(b) alflow's `PySCFBackend`, cold start every frame, 2 threads;
(c) the same backend with guess reuse from the previous frame, 2 threads;
(d) 2 worker processes x 1 thread, each labelling half the frames with guess reuse,
    against (c), which is 1 process x 2 threads.

(a), (b) and (c) run interleaved frame by frame (order rotated), so drifts in machine
load hit them alike. The frames come from Langevin MD of ethanol at 500 K driven by
the backend at HF/STO-3G, cached in bench/.cache/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from pyscf import dft, gto, lib, scf

from bench._report import machine_line, markdown_table, write_section
from qm_backends.pyscf_backend import PySCFBackend

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

CACHE = Path(__file__).resolve().parent / ".cache"
logger = logging.getLogger("bench.labeling")


@dataclass(frozen=True)
class Setup:
    """What one benchmark run labels, and how the frames are made."""

    method: str
    basis: str
    n_frames: int
    md_steps_between_frames: int
    md_equilibration_steps: int
    md_timestep_fs: float = 0.5
    temperature_K: float = 500.0


FULL = Setup(method="PBE", basis="def2-svp", n_frames=20, md_steps_between_frames=20,
             md_equilibration_steps=200)
QUICK = Setup(method="HF", basis="sto-3g", n_frames=4, md_steps_between_frames=5,
              md_equilibration_steps=10)


@dataclass
class Timings:
    """Per-frame wall and CPU seconds, SCF cycles and energies (eV) of one mode."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    energies_eV: list[float] = field(default_factory=list)

    def add(self, wall_s: float, cpu_s: float, cycles: int, energy_eV: float) -> None:
        self.wall_s.append(wall_s)
        self.cpu_s.append(cpu_s)
        self.cycles.append(cycles)
        self.energies_eV.append(energy_eV)


# ----------------------------------------------------------------------------- frames
def md_frames(setup: Setup) -> list[Atoms]:
    """Ethanol frames from Langevin MD at ``setup.temperature_K`` (HF/STO-3G forces), cached."""
    n_steps = setup.md_equilibration_steps + setup.n_frames * setup.md_steps_between_frames
    path = CACHE / (f"ethanol_{setup.temperature_K:.0f}K_{setup.md_timestep_fs}fs_"
                    f"{setup.md_equilibration_steps}+{setup.n_frames}x{setup.md_steps_between_frames}.extxyz")
    if path.exists():
        return read(path, index=":")
    atoms = molecule("CH3CH2OH")
    atoms.calc = PySCFBackend(method="HF", basis="sto-3g", reuse_guess=True, num_threads=2)
    thermalize_momenta(atoms, temperature_K=setup.temperature_K, rng=np.random.default_rng(7))
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=setup.md_timestep_fs * units.fs, temperature_K=setup.temperature_K,
                   friction=0.01 / units.fs, fixcm=False, rng=np.random.default_rng(11))
    frames: list[Atoms] = []

    def keep() -> None:
        if dyn.nsteps > setup.md_equilibration_steps and len(frames) < setup.n_frames:
            frames.append(Atoms(atoms.numbers, positions=atoms.positions.copy()))

    dyn.attach(keep, interval=setup.md_steps_between_frames)
    start = time.perf_counter()
    dyn.run(n_steps)
    logger.info("MD: %d steps in %.0f s", n_steps, time.perf_counter() - start)
    CACHE.mkdir(parents=True, exist_ok=True)
    write(path, frames)
    return frames


# ----------------------------------------------------------------------------- modes
def plain_pyscf(atoms: Atoms, setup: Setup) -> tuple[int, float]:
    """(a): what a user would write with PySCF alone. Returns (SCF cycles, energy in eV)."""
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=setup.basis, verbose=0)
    mf = scf.RHF(mol) if setup.method.lower() == "hf" else dft.RKS(mol, xc=setup.method)
    mf = mf.density_fit()
    mf.verbose = 0
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError("plain PySCF did not converge")
    mf.nuc_grad_method().kernel()
    mf.dip_moment(unit="AU", verbose=0)
    return mf.cycles, energy * units.Hartree


def make_backend(setup: Setup, *, reuse_guess: bool, num_threads: int) -> PySCFBackend:
    return PySCFBackend(method=setup.method, basis=setup.basis, density_fit=True,
                        reuse_guess=reuse_guess, num_threads=num_threads)


def _timed(fn, atoms: Atoms) -> tuple[float, float, int, float]:
    """(wall s, CPU s of this process, SCF cycles, energy eV) of ``fn(atoms)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    cycles, energy = fn(atoms)
    return time.perf_counter() - wall, time.process_time() - cpu, cycles, energy


def _backend_fn(backend: PySCFBackend):
    def run(atoms: Atoms) -> tuple[int, float]:
        label = backend.label(atoms)
        return label.n_scf_cycles, label.energy

    return run


def run_interleaved(frames: list[Atoms], setup: Setup) -> dict[str, Timings]:
    """Modes (a), (b), (c) frame by frame, rotating their order each frame."""
    lib.num_threads(2)
    modes = {
        "a": lambda atoms: plain_pyscf(atoms, setup),
        "b": _backend_fn(make_backend(setup, reuse_guess=False, num_threads=2)),
        "c": _backend_fn(make_backend(setup, reuse_guess=True, num_threads=2)),
    }
    results = {name: Timings() for name in modes}
    plain_pyscf(frames[0], setup)  # warm-up: imports, basis parsing, first allocations
    for i, atoms in enumerate(frames):
        order = "abc"[i % 3:] + "abc"[: i % 3]
        for name in order:
            results[name].add(*_timed(modes[name], atoms))
        logger.info("frame %d/%d: %s", i + 1, len(frames),
                    ", ".join(f"{n} {results[n].wall_s[-1]:.2f}s" for n in "abc"))
    return results


def _worker_init() -> None:
    lib.num_threads(1)


def _label_chunk(frames: list[Atoms], setup: Setup) -> list[tuple[float, float, int, float]]:
    run = _backend_fn(make_backend(setup, reuse_guess=True, num_threads=1))
    return [_timed(run, atoms) for atoms in frames]


def run_two_workers(frames: list[Atoms], setup: Setup) -> tuple[Timings, float]:
    """(d): two single-threaded worker processes, each labelling one contiguous half."""
    half = (len(frames) + 1) // 2
    chunks = [frames[:half], frames[half:]]
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        list(pool.map(_label_chunk, [frames[:1], frames[:1]], [setup, setup]))  # start both workers
        start = time.perf_counter()
        parts = list(pool.map(_label_chunk, chunks, [setup, setup]))
        wall_s = time.perf_counter() - start
    timings = Timings()
    for part in parts:
        for row in part:
            timings.add(*row)
    return timings, wall_s


# ----------------------------------------------------------------------------- report
NAMES = {"a": "(a) plain PySCF loop", "b": "(b) alflow backend, cold",
         "c": "(c) alflow backend, guess reuse", "d": "(d) alflow backend, guess reuse"}
LAYOUT = {"a": "1 x 2", "b": "1 x 2", "c": "1 x 2", "d": "2 x 1"}


def _table(results: dict[str, Timings], two_workers: tuple[Timings, float]) -> tuple[str, dict[str, float]]:
    d_timings, d_wall = two_workers
    n = len(results["a"].wall_s)
    per_label = {k: float(np.sum(v.wall_s)) / n for k, v in results.items()} | {"d": d_wall / n}
    reference_wall = np.array(results["a"].wall_s)
    reference_energy = np.array(results["a"].energies_eV)
    rows = []
    for key in "abcd":
        timings = d_timings if key == "d" else results[key]
        paired = "-" if key == "d" else float(np.median(np.array(timings.wall_s) / reference_wall))
        rows.append([NAMES[key], LAYOUT[key], per_label[key], float(np.mean(timings.cpu_s)),
                     float(np.mean(timings.cycles)), per_label[key] / per_label["a"], paired,
                     float(np.abs(np.array(timings.energies_eV) - reference_energy).max() * 1000)])
    headers = ["mode", "processes x threads", "wall s / label", "CPU s / label", "SCF cycles / label",
               "wall ratio to (a)", "median per-frame ratio to (a)", "max abs ΔE vs (a), meV"]
    return markdown_table(headers, rows), per_label


def _paired(results: dict[str, Timings], key: str) -> str:
    """Geometric mean of the per-frame wall ratios key/(a), with its standard error."""
    logs = np.log(np.array(results[key].wall_s) / np.array(results["a"].wall_s))
    error = logs.std(ddof=1) / np.sqrt(len(logs)) if len(logs) > 1 else float("nan")
    return f"({key})/(a) = {np.exp(logs.mean()):.3f} ± {error:.3f}"


def report(setup: Setup, results: dict[str, Timings], two_workers: tuple[Timings, float],
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    """The markdown section for docs/benchmarks.md."""
    table, per_label = _table(results, two_workers)
    cpu = {k: float(np.sum(v.cpu_s)) for k, v in results.items()}
    n = len(results["a"].wall_s)
    return "\n".join([
        "## Labelling (`bench/labeling.py`)",
        "",
        f"{n} ethanol frames from Langevin MD at {setup.temperature_K:.0f} K "
        f"({setup.md_timestep_fs} fs steps, one frame every {setup.md_steps_between_frames} steps), "
        f"labelled at {setup.method}/{setup.basis} with density fitting: energy, analytic forces and dipole. "
        "(a)-(c) ran interleaved frame by frame with their order rotated; (d) is the wall time of two "
        "single-threaded worker processes sharing the frames, divided by the frame count. "
        "CPU s is the process's own CPU time (both threads; for (d), per worker).",
        "",
        table,
        "",
        f"Wall (b)/(a) = {per_label['b'] / per_label['a']:.3f}, (c)/(a) = {per_label['c'] / per_label['a']:.3f}, "
        f"(d)/(c) = {per_label['d'] / per_label['c']:.3f}; "
        f"CPU (b)/(a) = {cpu['b'] / cpu['a']:.3f}, (c)/(a) = {cpu['c'] / cpu['a']:.3f}; "
        f"per-frame wall ratios, geometric mean ± standard error: {_paired(results, 'b')}, "
        f"{_paired(results, 'c')}.",
        "",
        f"Machine: {machine_line()}; load average before {load[0][0]:.2f}, after {load[1][0]:.2f} "
        f"(the machine was {'shared with other jobs' if max(load[0][0], load[1][0]) > 1.5 else 'otherwise idle'}).",
    ])


def _save_raw(results: dict[str, Timings], two_workers: tuple[Timings, float], setup: Setup) -> None:
    raw = {k: vars(v) for k, v in results.items()} | {"d": vars(two_workers[0]), "d_wall_s": two_workers[1]}
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"labeling_{setup.method}_{setup.basis}.json").write_text(json.dumps(raw, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 frames at HF/STO-3G (for tests)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    setup = QUICK if args.quick else FULL
    frames = md_frames(setup)
    load_before = os.getloadavg()
    results = run_interleaved(frames, setup)
    two_workers = run_two_workers(frames, setup)
    _save_raw(results, two_workers, setup)
    text = report(setup, results, two_workers, (load_before, os.getloadavg()))
    print(text)  # noqa: T201 - a benchmark script's output
    if not args.no_write:
        write_section("labeling", text)


if __name__ == "__main__":
    main()
