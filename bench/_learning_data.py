"""Reference data for the learning benchmarks, built once and cached.

Frames are sampled committee-free with a cheap level (GFN2-xTB through tblite): Langevin
MD at fixed temperatures and rigid torsion scans around an xTB-optimised geometry. They
are then labelled at the reference level (PySCF) in worker processes; every label is
appended to an extended-XYZ cache as soon as it is computed, so a killed build resumes
where it stopped and no frame is ever labelled twice. Each cached frame carries a
``key`` (``info["key"]``) naming where it came from, e.g. ``test-md600-0007``.

Temperatures are nominal: :func:`md_frames` uses ASE's ``Langevin`` with its default
``fixcm=True``, which runs a molecule this small hot (ethanol, GFN2-xTB, 600 K: mean
kinetic energy over 2000 steps 1.34x that of 600 K, and 0.95x with ``FixCom``; measured
2026-11-22). It is kept so the cached data sets stay the ones defined here;
``nnp_core.sampling.md_sampling`` uses ``FixCom``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.optimize import BFGS

from nnp_core.sanity import rotatable_bonds  # noqa: F401  (re-exported for the bench tests)
from qm_backends import get_backend

CACHE_ROOT = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Sampling:
    """How many frames at which temperatures: MD frames every ``interval_steps`` of
    0.5 fs after ``equilibration_steps``, and ``torsion_frames`` rigid torsion scans."""

    md_frames: dict[float, int]
    interval_steps: int = 100
    equilibration_steps: int = 2000
    torsion_frames: int = 0
    seed: int = 0


@dataclass(frozen=True)
class DataSpec:
    """A molecule, its reference level and the two committee-free data sets."""

    name: str
    molecule: str
    reference: dict[str, Any]  # get_backend("pyscf", **reference)
    test: Sampling
    pool: Sampling
    sampler: str = "xtb"
    root: Path | None = None  # where the cache lives; default bench/data

    @property
    def folder(self) -> Path:
        return (self.root or CACHE_ROOT) / self.name


# ----------------------------------------------------------------------------- sampling

def optimised_geometry(spec: DataSpec) -> Atoms:
    """The molecule relaxed with the sampler level (fmax 0.01 eV/Å), cached."""
    path = spec.folder / "geometry.xyz"
    if path.exists():
        return ase.io.read(path)
    atoms = molecule(spec.molecule)
    atoms.calc = get_backend(spec.sampler)
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    atoms = Atoms(atoms.numbers, atoms.positions)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, atoms)
    return atoms


def sampler_calculator(sampler: str):
    """An ASE calculator for the sampler level: tblite's own for "xtb" (no per-step
    validation: MD at the cheap level is the hot loop here), else the backend."""
    if sampler == "xtb":
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)
    return get_backend(sampler)


def md_frames(atoms: Atoms, sampler: str, temperature_K: float, n_frames: int, *,
              interval_steps: int, equilibration_steps: int, seed: int) -> list[Atoms]:
    """Frames from Langevin MD (0.5 fs, friction 0.01/fs) with the sampler level."""
    work = atoms.copy()
    work.calc = sampler_calculator(sampler)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng)
    Stationary(work)
    ZeroRotation(work)
    dyn = Langevin(work, 0.5 * units.fs, temperature_K=temperature_K, friction=0.01 / units.fs, rng=rng)
    dyn.run(equilibration_steps)
    frames = []
    for _ in range(n_frames):
        dyn.run(interval_steps)
        frames.append(Atoms(work.numbers, work.positions.copy()))
    return frames


def torsion_frames(atoms: Atoms, n_frames: int, *, seed: int, jitter_A: float = 0.03) -> list[Atoms]:
    """Rigid torsion scans: half the frames scan each rotatable bond alone on an even
    grid, the rest turn every bond by random angles; all get Gaussian jitter."""
    bonds = rotatable_bonds(atoms)
    if not bonds or n_frames == 0:
        return []
    rng = np.random.default_rng(seed)
    angles: list[list[float]] = []
    per_bond = (n_frames // 2) // len(bonds)
    for k in range(len(bonds)):
        for angle in np.linspace(0.0, 360.0, per_bond, endpoint=False):
            angles.append([angle if m == k else 0.0 for m in range(len(bonds))])
    while len(angles) < n_frames:
        angles.append(list(rng.uniform(0.0, 360.0, len(bonds))))
    frames = []
    for turn in angles:
        frame = atoms.copy()
        for (a, i, j, b, mask), delta in zip(bonds, turn):
            frame.set_dihedral(a, i, j, b, frame.get_dihedral(a, i, j, b) + delta, mask=mask)
        frame.positions += rng.normal(0.0, jitter_A, frame.positions.shape)
        frames.append(Atoms(frame.numbers, frame.positions))
    return frames


def sample(spec: DataSpec, which: str) -> list[Atoms]:
    """The unlabelled frames of set ``which`` ("test" or "pool"), each with a ``key``,
    cached in ``<which>-frames.extxyz``. The pool is shuffled (seeded) so that any
    prefix of it is a random subset."""
    path = spec.folder / f"{which}-frames.extxyz"
    if path.exists():
        return ase.io.read(path, index=":")
    frames = _sample(spec, which)
    ase.io.write(path, frames, format="extxyz")
    return frames


def _sample(spec: DataSpec, which: str) -> list[Atoms]:
    plan: Sampling = getattr(spec, which)
    atoms = optimised_geometry(spec)
    frames: list[Atoms] = []
    temperatures = sorted(plan.md_frames.items())
    with ProcessPoolExecutor(min(2, max(1, len(temperatures))), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_single_thread) as pool:
        parts = [pool.submit(md_frames, atoms, spec.sampler, temperature, n, interval_steps=plan.interval_steps,
                             equilibration_steps=plan.equilibration_steps, seed=1000 * plan.seed + t)
                 for t, (temperature, n) in enumerate(temperatures)]
        parts = [part.result() for part in parts]
    for (temperature, _), part in zip(temperatures, parts):
        for k, frame in enumerate(part):
            frame.info["key"] = f"{which}-md{temperature:g}-{k:04d}"
        frames += part
    for k, frame in enumerate(torsion_frames(atoms, plan.torsion_frames, seed=plan.seed)):
        frame.info["key"] = f"{which}-torsion-{k:04d}"
        frames.append(frame)
    if which == "pool":
        order = np.random.default_rng(plan.seed).permutation(len(frames))
        frames = [frames[i] for i in order]
    return frames


# ---------------------------------------------------------------------------- labelling

_BACKEND = None


def _single_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def _init_worker(reference: dict[str, Any], threads: int) -> None:
    global _BACKEND
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from pyscf import lib

    lib.num_threads(threads)
    _BACKEND = get_backend("pyscf", **reference)


def _label_one(frame: Atoms) -> tuple[str, Atoms | None, str]:
    try:
        labelled = _BACKEND.label(frame).to_atoms(frame)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and skipped
        return frame.info["key"], None, f"{type(exc).__name__}: {exc}"
    labelled.info["key"] = frame.info["key"]
    return frame.info["key"], labelled, ""


def read_cache(path: Path) -> dict[str, Atoms]:
    if not path.exists() or path.stat().st_size == 0:
        return {}
    return {a.info["key"]: a for a in ase.io.read(path, index=":")}


def labelled_set(spec: DataSpec, which: str, *, workers: int = 2, limit: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[Atoms]:
    """Set ``which`` (its first ``limit`` frames) labelled at the reference level,
    computing only what the cache lacks.

    Order follows :func:`sample`; frames whose label failed are listed in
    ``<which>-failed.json`` and left out."""
    return label_cached(spec, sample(spec, which)[:limit], which, workers=workers, progress=progress)


def label_cached(spec: DataSpec, frames: Sequence[Atoms], name: str, *, workers: int = 2,
                 progress: Callable[[int, int], None] | None = None) -> list[Atoms]:
    """``frames`` (each with an ``info["key"]``) labelled at ``spec``'s reference level
    in ``workers`` processes, cached in ``<name>.extxyz`` of the data folder (appended
    label by label) and failures in ``<name>-failed.json``; only what the cache lacks is
    computed. Returns the labelled frames in the order of ``frames``, failures left out."""
    path = spec.folder / f"{name}.extxyz"
    failed_path = spec.folder / f"{name}-failed.json"
    done = read_cache(path)
    failed = json.loads(failed_path.read_text()) if failed_path.exists() else {}
    todo = [f for f in frames if f.info["key"] not in done and f.info["key"] not in failed]
    if todo:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(spec.reference, threads)) as pool:
            futures = [pool.submit(_label_one, f) for f in todo]
            for n, future in enumerate(as_completed(futures), 1):
                key, labelled, error = future.result()
                if labelled is None:
                    failed[key] = error
                    failed_path.write_text(json.dumps(failed, indent=1))
                else:
                    ase.io.write(path, labelled, format="extxyz", append=True)
                    done[key] = labelled
                if progress:
                    progress(n, len(todo))
    return [done[f.info["key"]] for f in frames if f.info["key"] in done]


def take(frames: Sequence[Atoms], n: int, seed: int) -> list[Atoms]:
    """``n`` frames drawn without replacement (seeded) from ``frames``."""
    if n > len(frames):
        raise ValueError(f"asked for {n} frames from a pool of {len(frames)}")
    order = np.random.default_rng(seed).permutation(len(frames))[:n]
    return [frames[i] for i in sorted(order)]
