"""A rare-event test set for ethanol at the reference level (issue 19), built once and cached.

Thermal sampling rarely visits torsional barriers or hot, strained geometries, so this
set holds three subsets (``info["subset"]``), all labelled at exactly the level of
``test.extxyz`` (the ``full`` preset's reference, PBE/def2-SVP with density fitting):

- ``hydroxyl_scan``: a **relaxed** scan of the C–C–O–H dihedral over 360° every 30°;
- ``methyl_scan``: a relaxed scan of the O–C–C–H dihedral (one methyl H) over 360°
  every 30° (the barrier is 3-fold, the scan still covers the full turn);
- ``high_energy``: frames of GFN2-xTB Langevin MD (:func:`bench._learning_data.md_frames`)
  at 1000 K and 1500 K, a few seeds, relabelled.

Relaxed scan protocol (:func:`relaxed_scan`): the reference minimum (``geometry.xyz``
optimised without constraints at the reference level, cached in ``pbe-minimum.extxyz``)
is the start; at each target angle the moving group (the atoms on the far side of the
central bond) is turned rigidly to the target, the dihedral is held there with ASE's
``FixInternals`` and every other coordinate is optimised with BFGS (fmax 0.05 eV/Å, step
cap 0.1 Å). The scan walks from the grid angle nearest the minimum's dihedral both ways
round, each point starting from the previous optimised one, so each optimisation is short.
The final geometry's own reference calculation is its label (forces unconstrained).

Every labelled frame (each scan point once optimised) is appended to
``rare-events.extxyz`` as soon as it is computed, so a killed build resumes and nothing is
labelled twice; the geometry of the optimisation under way is kept after every BFGS step
in ``rare-events-partial.extxyz`` (a killed optimisation resumes from it). Failed labels
or optimisations are listed in ``rare-events-failed.json`` and left out. Keys:
``rare-ohscan-030``, ``rare-mescan-090`` (absolute target angle), ``rare-hot1000-0007``.
Scan points also carry ``dihedral_deg`` (measured on the final geometry), ``target_deg``,
``atoms_dihedral``, ``opt_steps``, ``opt_converged`` and ``opt_fmax`` (the largest
constrained force at the end, eV/Å).

    .venv/bin/python -m bench._rare_events [--threads 2]

One PySCF calculation runs at a time, in this process, on ``--threads`` OpenMP threads; the
cheap-level MD runs in one single-threaded worker process (GFN2-xTB on 2 OpenMP threads
crawled when the machine was busy: > 15 min for what takes ~2 min on one thread).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixInternals
from ase.optimize import BFGS

from bench._learning_data import DataSpec, _single_thread, md_frames, optimised_geometry, read_cache
from nnp_core.sanity import bond_graph

CACHE_NAME = "rare-events.extxyz"
FRAMES_NAME = "rare-events-frames.extxyz"  # the unlabelled high-energy MD frames
MINIMUM_NAME = "pbe-minimum.extxyz"
PARTIAL_NAME = "rare-events-partial.extxyz"
FAILED_NAME = "rare-events-failed.json"
SUBSETS = ("hydroxyl_scan", "methyl_scan", "high_energy")


@dataclass(frozen=True)
class Scan:
    """A relaxed dihedral scan: ``atoms`` (a, b, c, d) with the group on c's side of b–c
    turned, every ``step_deg`` degrees over the full turn."""

    subset: str
    tag: str  # key part: rare-<tag>-<angle>
    atoms: tuple[int, int, int, int]
    elements: tuple[str, str, str, str]  # checked against the molecule
    step_deg: float = 30.0

    @property
    def targets(self) -> list[float]:
        return [float(a) for a in np.arange(0.0, 360.0, self.step_deg)]

    def key(self, target: float) -> str:
        return f"rare-{self.tag}-{round(target) % 360:03d}"


@dataclass(frozen=True)
class HotMD:
    """Cheap-level MD frames: ``frames_per_run`` frames every ``interval_steps`` (0.5 fs)
    after ``equilibration_steps``, one run per temperature and seed."""

    temperatures_K: tuple[float, ...] = (1000.0, 1500.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    frames_per_run: int = 8
    interval_steps: int = 100
    equilibration_steps: int = 2000


@dataclass(frozen=True)
class RarePlan:
    scans: tuple[Scan, ...]
    hot: HotMD = field(default_factory=HotMD)
    fmax_eV_A: float = 0.05  # constrained optimisations
    max_step_A: float = 0.1  # BFGS step cap
    max_opt_steps: int = 200
    minimum_fmax_eV_A: float = 0.01  # the unconstrained minimum


#: ethanol as ``ase.build.molecule("CH3CH2OH")`` numbers it (``geometry.xyz``): C0 methyl,
#: C1 methylene, O2, H3 hydroxyl, H4/H5 on C1, H6-H8 methyl (H6 anti to O)
ETHANOL = RarePlan(scans=(
    Scan("hydroxyl_scan", "ohscan", (0, 1, 2, 3), ("C", "C", "O", "H")),
    Scan("methyl_scan", "mescan", (2, 1, 0, 6), ("O", "C", "C", "H")),
))


def default_spec(with_level: bool = False) -> DataSpec:
    """The ``full`` preset's data (``bench/data/ethanol-pbe-def2svp``); with
    ``with_level`` its reference filled in from the example campaign."""
    from bench.data_efficiency import PRESETS, with_reference

    preset = PRESETS["full"]
    return (with_reference(preset) if with_level else preset).data


# ------------------------------------------------------------------------------ loading

def rare_event_set(spec: DataSpec | None = None, plan: RarePlan = ETHANOL) -> list[Atoms]:
    """The cached rare-event frames: scans in angle order, then the high-energy frames."""
    spec = spec or default_spec()
    done = read_cache(spec.folder / CACHE_NAME)
    return [done[key] for key in planned_keys(plan) if key in done]


def planned_keys(plan: RarePlan) -> list[str]:
    keys = [scan.key(t) for scan in plan.scans for t in scan.targets]
    for temperature in plan.hot.temperatures_K:
        keys += [_hot_key(temperature, k) for k in range(len(plan.hot.seeds) * plan.hot.frames_per_run)]
    return keys


def _hot_key(temperature: float, index: int) -> str:
    return f"rare-hot{temperature:g}-{index:04d}"


# --------------------------------------------------------------------------- relaxation

def moving_group(atoms: Atoms, b: int, c: int) -> np.ndarray:
    """Mask of the atoms on c's side of the bond b–c (``nnp_core.sanity.bond_graph``)."""
    neighbours: list[set[int]] = [set() for _ in range(len(atoms))]
    for i, j in bond_graph(atoms):
        neighbours[i].add(j)
        neighbours[j].add(i)
    side, stack = {c}, [c]
    while stack:
        for k in neighbours[stack.pop()]:
            if k not in side and k != b:
                side.add(k)
                stack.append(k)
    if b in side:
        raise ValueError(f"bond {b}-{c} is in a ring: no group to turn")
    mask = np.zeros(len(atoms), dtype=bool)
    mask[sorted(side)] = True
    return mask


def _unconstrained_label(atoms: Atoms) -> Atoms:
    """A plain copy of ``atoms`` with its calculator's results at these positions
    (energy, unconstrained forces, dipole if computed) - no new calculation."""
    calc = atoms.calc
    if calc.check_state(atoms):
        raise RuntimeError("the calculator's results are not those of the final geometry")
    results: dict[str, Any] = {"energy": float(atoms.get_potential_energy()),
                               "forces": np.array(atoms.get_forces(apply_constraint=False))}
    if calc.results.get("dipole") is not None:
        results["dipole"] = np.array(calc.results["dipole"])
    out = Atoms(atoms.numbers, atoms.positions.copy())
    out.calc = SinglePointCalculator(out, **results)
    return out


def relaxed_point(start: Atoms, dihedral: tuple[int, int, int, int], target_deg: float, calc, *,
                  moving: np.ndarray, fmax: float = 0.05, max_step_A: float = 0.1, steps: int = 200,
                  on_step: Callable[[Atoms], None] | None = None) -> tuple[Atoms, int, bool, float]:
    """``start`` with the ``moving`` group turned rigidly to ``target_deg``, then
    optimised by BFGS with the dihedral held fixed (``FixInternals``).

    Returns the optimised frame carrying its calculator results (unconstrained forces),
    the BFGS steps taken, whether it converged and the final constrained max force."""
    work = Atoms(start.numbers, start.positions.copy())
    work.set_dihedral(*dihedral, target_deg, mask=moving)
    work.set_constraint(FixInternals(dihedrals_deg=[[float(target_deg), list(dihedral)]]))
    work.calc = calc
    opt = BFGS(work, maxstep=max_step_A, logfile=None)
    if on_step is not None:
        opt.attach(lambda: on_step(work), interval=1)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    fmax_final = float(np.linalg.norm(work.get_forces(), axis=1).max())
    return _unconstrained_label(work), int(opt.nsteps), converged, fmax_final


def scan_order(targets: list[float], start_deg: float) -> list[tuple[int, int | None]]:
    """(target index, index of the point it starts from; None: the minimum) for a scan
    that starts at the grid angle nearest ``start_deg`` and walks both ways round."""
    n = len(targets)
    gaps = [abs((t - start_deg + 180.0) % 360.0 - 180.0) for t in targets]
    first = int(np.argmin(gaps))
    order: list[tuple[int, int | None]] = [(first, None)]
    for k in range(1, n // 2 + 1):  # forward half way round (and the opposite point)
        order.append(((first + k) % n, (first + k - 1) % n))
    for k in range(1, n - n // 2):  # backward the rest
        order.append(((first - k) % n, (first - k + 1) % n))
    return order


def relaxed_scan(start: Atoms, scan: Scan, make_calc: Callable[[], Any], *, plan: RarePlan,
                 done: dict[str, Atoms] | None = None, failed: dict[str, str] | None = None,
                 resume: dict[str, Atoms] | None = None,
                 on_point: Callable[[str, Atoms | None, str], None] | None = None,
                 on_step: Callable[[str, Atoms], None] | None = None) -> dict[str, Atoms]:
    """The relaxed scan ``scan`` from the minimum ``start``: every target angle not yet in
    ``done`` (nor in ``failed``) is optimised from its predecessor's optimised geometry
    (``resume[key]``, a partial optimisation, wins) and passed to ``on_point(key, frame,
    error)`` right away. Returns ``done`` with the new points."""
    a, b, c, d = scan.atoms
    symbols = tuple(start.get_chemical_symbols()[i] for i in scan.atoms)
    if symbols != scan.elements:
        raise ValueError(f"scan {scan.tag}: atoms {scan.atoms} are {symbols}, expected {scan.elements}")
    moving = moving_group(start, b, c)
    done = {} if done is None else done
    failed = {} if failed is None else failed
    resume = resume or {}
    targets = scan.targets
    geometry: dict[int, Atoms] = {}
    for index, source in scan_order(targets, start.get_dihedral(a, b, c, d)):
        key = scan.key(targets[index])
        if key in done:
            geometry[index] = done[key]
            continue
        if key in failed:
            geometry[index] = geometry.get(source, start) if source is not None else start
            continue
        origin = resume[key] if key in resume else geometry.get(source, start) if source is not None else start
        calc = make_calc()
        try:
            frame, steps, converged, fmax_final = relaxed_point(
                origin, scan.atoms, targets[index], calc, moving=moving, fmax=plan.fmax_eV_A,
                max_step_A=plan.max_step_A, steps=plan.max_opt_steps,
                on_step=None if on_step is None else (lambda atoms, key=key: on_step(key, atoms)))
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and skipped
            failed[key] = f"{type(exc).__name__}: {exc}"
            geometry[index] = geometry.get(source, start) if source is not None else start
            if on_point:
                on_point(key, None, failed[key])
            continue
        measured = float(frame.get_dihedral(a, b, c, d))
        frame.info.update({"key": key, "subset": scan.subset, "target_deg": targets[index],
                           # the measured angle written next to its target (359.99 -> -0.01)
                           "dihedral_deg": targets[index] + (measured - targets[index] + 180.0) % 360.0 - 180.0,
                           "atoms_dihedral": np.array(scan.atoms), "opt_steps": steps,
                           "opt_converged": converged, "opt_fmax": fmax_final})
        done[key] = frame
        geometry[index] = frame
        if on_point:
            on_point(key, frame, "")
    return done


# ------------------------------------------------------------------------------ building

def hot_md_runs(spec: DataSpec, hot: HotMD) -> list[tuple[float, int, list[Atoms]]]:
    """(temperature, seed, frames) of one cheap-level MD run from ``geometry.xyz`` per
    temperature and seed of ``hot`` (MD seed 19 000 + 100 × temperature index + seed)."""
    start = optimised_geometry(spec)
    runs = [(t, temperature, seed) for t, temperature in enumerate(hot.temperatures_K) for seed in hot.seeds]
    # one single-threaded worker: the cheap level's OpenMP threads crawl on a busy machine
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_single_thread) as pool:
        parts = [pool.submit(md_frames, start, spec.sampler, temperature, hot.frames_per_run,
                             interval_steps=hot.interval_steps, equilibration_steps=hot.equilibration_steps,
                             seed=19_000 + 100 * t + seed) for t, temperature, seed in runs]
        return [(temperature, seed, part.result()) for (_, temperature, seed), part in zip(runs, parts)]


def hot_frames(spec: DataSpec, plan: RarePlan) -> list[Atoms]:
    """The unlabelled high-energy frames (cheap-level MD from ``geometry.xyz``), cached."""
    path = spec.folder / FRAMES_NAME
    if path.exists():
        return ase.io.read(path, index=":")
    bonds = bond_graph(optimised_geometry(spec))
    frames: list[Atoms] = []
    count: dict[float, int] = {}
    for temperature, seed, part in hot_md_runs(spec, plan.hot):
        for frame in part:
            index = count[temperature] = count.get(temperature, -1) + 1
            frame.info.update({"key": _hot_key(temperature, index), "subset": "high_energy",
                               "temperature_K": float(temperature), "md_seed": seed,
                               "bonds_intact": bond_graph(frame) == bonds})
            frames.append(frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return frames


class _Build:
    """The cache files of one build and the bookkeeping around them."""

    def __init__(self, spec: DataSpec, plan: RarePlan, threads: int, log: Callable[[str], None]) -> None:
        self.spec, self.plan, self.log = spec, plan, log
        self.folder = spec.folder
        self.path = self.folder / CACHE_NAME
        self.failed_path = self.folder / FAILED_NAME
        self.partial_path = self.folder / PARTIAL_NAME
        self.done = read_cache(self.path)
        self.failed: dict[str, str] = json.loads(self.failed_path.read_text()) if self.failed_path.exists() else {}
        self.threads = threads
        self.start = time.perf_counter()
        self._backend = None

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.start:.0f} s"

    def backend(self):
        """One reference backend for the whole build (its SCF guesses carry over)."""
        if self._backend is None:
            from qm_backends import get_backend

            self._backend = get_backend("pyscf", **self.spec.reference, num_threads=self.threads)
        return self._backend

    def store(self, key: str, frame: Atoms | None, error: str) -> None:
        if frame is None:
            self.failed[key] = error
            self.failed_path.write_text(json.dumps(self.failed, indent=1))
            self.log(f"{key}: FAILED ({error}), {self.elapsed()}")
            return
        ase.io.write(self.path, frame, format="extxyz", append=True)
        self.done[key] = frame
        self.partial_path.unlink(missing_ok=True)
        if "opt_steps" in frame.info:
            self.log(f"{key}: dihedral {frame.info['dihedral_deg']:.2f}° (target {frame.info['target_deg']:g}), "
                     f"{frame.info['opt_steps']} BFGS steps{'' if frame.info['opt_converged'] else ' (NOT converged)'}, "
                     f"E = {frame.get_potential_energy():.4f} eV, {self.elapsed()}")
        else:
            self.log(f"{key}: labelled, {self.elapsed()}")

    def save_partial(self, key: str, atoms: Atoms) -> None:
        frame = Atoms(atoms.numbers, atoms.positions.copy(), info={"key": key})
        ase.io.write(self.partial_path, frame, format="extxyz")

    def partial(self) -> dict[str, Atoms]:
        return read_cache(self.partial_path)

    def minimum(self) -> Atoms:
        """``geometry.xyz`` optimised at the reference level without constraints, cached
        (the partial geometry resumes a killed optimisation)."""
        path = self.folder / MINIMUM_NAME
        if path.exists():
            return ase.io.read(path)
        key = "rare-minimum"
        partial = self.partial()
        origin = partial[key] if key in partial else optimised_geometry(self.spec)
        work = Atoms(origin.numbers, origin.positions.copy())
        work.calc = self.backend()
        opt = BFGS(work, maxstep=self.plan.max_step_A, logfile=None)
        opt.attach(lambda: self.save_partial(key, work), interval=1)
        converged = bool(opt.run(fmax=self.plan.minimum_fmax_eV_A, steps=self.plan.max_opt_steps))
        frame = _unconstrained_label(work)
        frame.info.update({"key": key, "opt_steps": int(opt.nsteps), "opt_converged": converged})
        ase.io.write(path, frame, format="extxyz")
        self.partial_path.unlink(missing_ok=True)
        self.log(f"{key}: {opt.nsteps} BFGS steps{'' if converged else ' (NOT converged)'}, "
                 f"E = {frame.get_potential_energy():.4f} eV, {self.elapsed()}")
        return frame

    def scans(self, minimum: Atoms) -> None:
        for scan in self.plan.scans:
            relaxed_scan(minimum, scan, self.backend, plan=self.plan, done=self.done, failed=self.failed,
                         resume=self.partial(), on_point=self.store, on_step=self.save_partial)

    def hot(self) -> None:
        todo = [f for f in hot_frames(self.spec, self.plan) if f.info["key"] not in self.done
                and f.info["key"] not in self.failed]
        for frame in todo:
            key = frame.info["key"]
            try:
                labelled = self.backend().label(frame).to_atoms(frame)
            except Exception as exc:  # noqa: BLE001 - any failure is recorded and skipped
                self.store(key, None, f"{type(exc).__name__}: {exc}")
                continue
            labelled.info.update(frame.info)
            self.store(key, labelled, "")


def build(spec: DataSpec | None = None, plan: RarePlan = ETHANOL, *, threads: int = 2,
          log: Callable[[str], None] = print) -> list[Atoms]:
    """Build (or finish) the rare-event set of ``spec`` (default: the ``full`` preset's
    data at its reference level); returns :func:`rare_event_set`."""
    spec = spec or default_spec(with_level=True)
    if not spec.reference:
        raise ValueError("the spec has no reference level (use bench.data_efficiency.with_reference)")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    spec.folder.mkdir(parents=True, exist_ok=True)
    run = _Build(spec, plan, threads, log)
    log(f"rare events in {spec.folder}: {len(run.done)} frames cached, {len(run.failed)} failed; "
        f"reference {json.dumps(spec.reference)}")
    minimum = run.minimum()
    run.scans(minimum)
    run.hot()
    frames = rare_event_set(spec, plan)
    counts = {s: sum(f.info["subset"] == s for f in frames) for s in SUBSETS}
    log(f"done: {len(frames)} frames {counts}, {len(run.failed)} failed, {run.elapsed()}")
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads of the one PySCF calculation")
    parser.add_argument("--root", type=Path, help="cache root instead of bench/data (a trial build)")
    parser.add_argument("--method", help="reference method instead of the preset's (a trial build)")
    parser.add_argument("--basis", help="reference basis instead of the preset's (a trial build)")
    args = parser.parse_args(argv)
    spec = default_spec(with_level=True)
    if args.root:
        spec = replace(spec, root=args.root)
    if args.method or args.basis:
        if not args.root:
            parser.error("--method/--basis need --root: the committed cache is the preset's level")
        spec = replace(spec, reference={**spec.reference, **({"method": args.method} if args.method else {}),
                                        **({"basis": args.basis} if args.basis else {})})
    build(spec, threads=args.threads, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
