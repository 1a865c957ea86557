"""Benchmark: committee evaluation, vectorised vs loops, and vectorised vs one-by-one training.

Run from the repository root::

    .venv/bin/python -m bench.committee_eval            # B = 16 ethanol frames, M in {1, 4, 8}
    .venv/bin/python -m bench.committee_eval --quick    # B = 2, M in {1, 2} (seconds; for tests)

Evaluation (energies and forces of every member on every frame), 2 torch threads, float64:

(a) the vectorised committee: one ``Committee.evaluate`` on the B-frame batch;
(a') the same through ``Committee.predict(frames)``, batch building and statistics included;
(b) a loop over members: each one-member committee ``committee.member(m)`` on the batch;
(c) a loop over frames and members: each member on each single-frame batch.

Batches and member copies for (a), (b), (c) are built before the timed region. The
modes run interleaved, their order rotated each repeat, so drifts in machine load hit
them alike; (b) and (c) must reproduce (a) to 1e-6 or the script stops. Peak memory is
measured per (M, mode) in a fresh child process. Training compares ``train_committee``
(all members in one pass) with :func:`train_one_by_one` on the same EMT-labelled frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from bench._report import machine_line, markdown_table, write_section
from nnp_core.sampling import random_displacements
from nnp_core.batch import Batch
from nnp_core.committee import Committee
from nnp_core.models import build_model
from nnp_core.train_config import TrainConfig
from nnp_core.training import LabelledSet, MemberReport, fit_normalisation, train_committee, train_members

logger = logging.getLogger("bench.committee_eval")
N_THREADS = 2
AGREEMENT_TOL = 1e-6  # eV and eV/Å: (b), (c) and (a') must reproduce (a) to this
TARGET_M4_OVER_M1 = 1.5  # (a) at M = 4 costs at most this many times (a) at M = 1
TARGET_LOOP_OVER_VECTORISED = 5.0  # (c) / (a) at M = 4, B = 16 is at least this


@dataclass(frozen=True)
class Setup:
    """Sizes of one benchmark run."""

    n_frames: int
    members: tuple[int, ...]
    warmup: int
    repeats: int
    memory_calls: int
    train_frames: int
    train_members: int
    train_epochs: int
    train_rounds: int
    displacement_A: float = 0.05


FULL = Setup(n_frames=16, members=(1, 4, 8), warmup=2, repeats=15, memory_calls=3,
             train_frames=64, train_members=4, train_epochs=20, train_rounds=2)
QUICK = Setup(n_frames=2, members=(1, 2), warmup=1, repeats=2, memory_calls=1,
              train_frames=8, train_members=2, train_epochs=2, train_rounds=1)


# ----------------------------------------------------------------------------- inputs
def ethanol_frames(n_frames: int, displacement_A: float, seed: int) -> list[Atoms]:
    """Ethanol with Gaussian displacements of ``displacement_A`` on every coordinate."""
    return random_displacements(molecule("CH3CH2OH"), stddev_A=displacement_A, n_samples=n_frames, seed=seed)


def label_emt(frames: list[Atoms]) -> list[Atoms]:
    """Attach ASE EMT energies and forces as SinglePointCalculator labels."""
    for atoms in frames:
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return frames


@dataclass
class Prepared:
    """A committee of M members and everything the modes need, built outside the timing."""

    committee: Committee
    frames: list[Atoms]
    batch: Batch
    single_batches: list[Batch]
    members: list[Committee]


def prepare(n_members: int, setup: Setup) -> Prepared:
    """Members are seeded per index, so member m is the same network for every M."""
    committee = Committee.create("bpnn", n_members=n_members, seed=0, elements=["H", "C", "O"])
    frames = ethanol_frames(setup.n_frames, setup.displacement_A, seed=0)
    return Prepared(committee, frames, committee.make_batch(frames),
                    [committee.make_batch([atoms]) for atoms in frames],
                    [committee.member(m) for m in range(n_members)])


# ----------------------------------------------------------------------------- modes
def _vectorised(p: Prepared):
    return p.committee.evaluate(p.batch)


def _predict(p: Prepared):
    return p.committee.predict(p.frames)


def _member_loop(p: Prepared):
    return [member.evaluate(p.batch) for member in p.members]


def _frame_member_loop(p: Prepared):
    return [[member.evaluate(single) for single in p.single_batches] for member in p.members]


MODES: dict[str, Callable[[Prepared], object]] = {
    "a": _vectorised, "a'": _predict, "b": _member_loop, "c": _frame_member_loop,
}


def member_arrays(mode: str, result) -> tuple[np.ndarray, np.ndarray]:
    """Any mode's result as member energies (M, B) in eV and forces (M, n, 3) in eV/Å."""
    if mode == "a":
        return result["energy"].numpy(), result["forces"].numpy()
    if mode == "a'":
        return result.member_energies, result.member_forces
    if mode == "b":
        return (torch.cat([r["energy"] for r in result]).numpy(),
                torch.cat([r["forces"] for r in result]).numpy())
    if mode == "c":
        energies = [torch.cat([r["energy"] for r in per_member], dim=1) for per_member in result]
        forces = [torch.cat([r["forces"] for r in per_member], dim=1) for per_member in result]
        return torch.cat(energies).numpy(), torch.cat(forces).numpy()
    raise ValueError(f"unknown mode {mode!r}")


def check_agreement(p: Prepared) -> dict[str, tuple[float, float]]:
    """Max |ΔE| (eV) and |ΔF| (eV/Å) of every mode against (a); raises if any exceeds the tolerance."""
    energies, forces = member_arrays("a", MODES["a"](p))
    deviations = {}
    for mode in ("a'", "b", "c"):
        e, f = member_arrays(mode, MODES[mode](p))
        if e.shape != energies.shape or f.shape != forces.shape:
            raise RuntimeError(f"mode ({mode}) returned shapes {e.shape}, {f.shape}; (a) {energies.shape}, {forces.shape}")
        deviations[mode] = (float(np.abs(e - energies).max()), float(np.abs(f - forces).max()))
        if max(deviations[mode]) > AGREEMENT_TOL:
            raise RuntimeError(f"mode ({mode}) disagrees with (a) at M={p.committee.n_members}: "
                               f"max |ΔE| {deviations[mode][0]:.3g} eV, max |ΔF| {deviations[mode][1]:.3g} eV/Å")
    return deviations


def time_modes(p: Prepared, setup: Setup) -> dict[str, list[float]]:
    """Seconds per call of every mode: ``setup.repeats`` interleaved calls after warm-up."""
    names = list(MODES)
    for _ in range(setup.warmup):
        for name in names:
            MODES[name](p)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(setup.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            MODES[name](p)
            times[name].append(time.perf_counter() - start)
    return times


# ----------------------------------------------------------------------------- memory
def _maxrss_MiB() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _memory_child(n_members: int, mode: str, setup: Setup) -> tuple[float, float, float]:
    """In a fresh process, peak RSS in MiB: after imports and set-up; what a first tiny call
    (one member, one frame) adds; what ``setup.memory_calls`` calls of ``mode`` add on top."""
    torch.set_num_threads(N_THREADS)
    prepared = prepare(n_members, setup)
    after_setup = _maxrss_MiB()
    prepared.members[0].evaluate(prepared.single_batches[0])  # lazy loads, thread pools
    after_first = _maxrss_MiB()
    for _ in range(setup.memory_calls):
        MODES[mode](prepared)
    return after_setup, after_first - after_setup, _maxrss_MiB() - after_first


def measure_memory(setup: Setup) -> dict[tuple[int, str], tuple[float, float, float]]:
    """One fresh forkserver child per (M, mode); the server preloads the libraries only."""
    from bench import committee_eval as this  # by its import name, also when run as __main__

    context = get_context("forkserver")
    context.set_forkserver_preload(["torch", "ase.build", "ase.calculators.emt", "nnp_core.training"])
    keys = [(m, mode) for m in setup.members for mode in ("a", "b", "c")]
    with ProcessPoolExecutor(max_workers=2, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {key: pool.submit(this._memory_child, key[0], key[1], setup) for key in keys}
        return {key: future.result() for key, future in futures.items()}


# ----------------------------------------------------------------------------- training
@dataclass
class TrainingRuns:
    """Wall seconds of every round of one way of training, and the epochs each ran."""

    wall_s: list[float] = dataclasses.field(default_factory=list)
    epochs: list[int] = dataclasses.field(default_factory=list)


def train_one_by_one(frames: list[Atoms], config: TrainConfig, n_members: int) -> tuple[Committee, list[MemberReport]]:
    """What ``train_committee`` does for a new BPNN committee, but training the members
    one after another (each on its own data split) and stacking them at the end: the
    loop that training all members in one pass replaced."""
    elements = sorted({int(z) for a in frames for z in a.numbers})
    base = build_model("bpnn", n_members=n_members, seed=config.seed, elements=elements, dtype=config.dtype)
    data = LabelledSet.from_frames(frames, base)
    fit_normalisation(base, data)
    parts, reports = [], []
    for m in range(n_members):
        single = base.select_members([m])
        reports += train_members(single, data, config, members=[m])[0]
        parts.append(single)
    return Committee(type(base).stack(parts) if n_members > 1 else parts[0]), reports


def compare_training(setup: Setup) -> tuple[dict[str, TrainingRuns], float, float]:
    """Vectorised and one-by-one training with identical settings, in rounds of alternating
    order (ABBA...); returns the runs and the max |ΔE| (eV) and |ΔF| (eV/Å) between the
    two committees of the last round on the training frames."""
    frames = label_emt(ethanol_frames(setup.train_frames, setup.displacement_A, seed=1))
    config = TrainConfig(max_epochs=setup.train_epochs, seed=0,
                         early_stopping_patience_epochs=setup.train_epochs + 1)
    ways = [("vectorised", True), ("one by one", False)]
    runs = {name: TrainingRuns() for name, _ in ways}
    predictions = {}
    for round_ in range(setup.train_rounds):
        for name, vectorised in ways if round_ % 2 == 0 else ways[::-1]:
            start = time.perf_counter()
            if vectorised:
                committee, report = train_committee(frames, config, n_members=setup.train_members)
                members = report.members
            else:
                committee, members = train_one_by_one(frames, config, setup.train_members)
            runs[name].wall_s.append(time.perf_counter() - start)
            runs[name].epochs.append(min(m.epochs_run for m in members))
            predictions[name] = committee.predict(frames)
            logger.info("training %s, round %d: %.1f s", name, round_ + 1, runs[name].wall_s[-1])
    a, b = (predictions[name] for name, _ in ways)
    return (runs, float(np.abs(a.member_energies - b.member_energies).max()),
            float(np.abs(a.member_forces - b.member_forces).max()))


# ----------------------------------------------------------------------------- report
def _verdict(measured: float, ok: bool) -> str:
    return f"measured {measured:.2f}× — **{'met' if ok else 'not met'}**"


def evaluation_tables(setup: Setup, times, deviations, memory) -> tuple[str, str, dict[int, dict[str, float]]]:
    """Markdown tables of time per call (with ratios) and memory; and the medians in seconds."""
    med = {m: {mode: statistics.median(t) for mode, t in times[m].items()} for m in setup.members}
    m1 = med[min(setup.members)]["a"]
    rows = [[m, *(1000 * med[m][k] for k in ("a", "a'", "b", "c")), med[m]["b"] / med[m]["a"],
             med[m]["c"] / med[m]["a"], med[m]["a"] / m1,
             max(d[0] for d in deviations[m].values()), max(d[1] for d in deviations[m].values())]
            for m in setup.members]
    time_table = markdown_table(
        ["M", "(a) vectorised, ms", "(a') predict incl. batching, ms", "(b) member loop, ms",
         "(c) frame × member loop, ms", "(b)/(a)", "(c)/(a)", "(a) / (a at M=1)",
         "max |ΔE| vs (a), eV", "max |ΔF| vs (a), eV/Å"], rows)
    memory_rows = [[m, *memory[(m, "a")][:2], *(memory[(m, k)][2] for k in ("a", "b", "c"))]
                   for m in setup.members]
    memory_table = markdown_table(["M", "set-up peak RSS, MiB", "first tiny call adds, MiB", "(a) adds, MiB",
                                   "(b) adds, MiB", "(c) adds, MiB"], memory_rows)
    return time_table, memory_table, med


def target_lines(setup: Setup, med: dict[int, dict[str, float]]) -> list[str]:
    """Each target next to its measured value, met or not (or why it was not measured)."""
    lines = [f"- Target: (a) at M = 4 costs ≤ {TARGET_M4_OVER_M1}× (a) at M = 1 per batch: "]
    if 4 in med and 1 in med:
        ratio = med[4]["a"] / med[1]["a"]
        lines[0] += _verdict(ratio, ratio <= TARGET_M4_OVER_M1) + "."
    else:
        lines[0] += "not measured (this run has no M = 4)."
    lines.append(f"- Target: vectorised ≥ {TARGET_LOOP_OVER_VECTORISED:g}× faster than the frame × member "
                 f"loop at M = 4, B = 16, {N_THREADS} threads, i.e. (c)/(a) ≥ {TARGET_LOOP_OVER_VECTORISED:g}: ")
    if 4 in med and setup.n_frames == 16:
        ratio = med[4]["c"] / med[4]["a"]
        lines[1] += _verdict(ratio, ratio >= TARGET_LOOP_OVER_VECTORISED) + "."
    else:
        lines[1] += "not measured (this run has no M = 4 at B = 16)."
    return lines


def training_table(runs: dict[str, TrainingRuns]) -> str:
    mean = {name: float(np.mean(run.wall_s)) for name, run in runs.items()}
    rows = [[name, mean[name], min(run.wall_s), min(run.epochs), mean[name] / min(run.epochs),
             mean[name] / mean["vectorised"]] for name, run in runs.items()]
    return markdown_table(["training", "wall s (mean)", "wall s (min)", "epochs", "s / epoch (mean)",
                           "ratio to vectorised (mean)"], rows)


def report(setup: Setup, evaluation, memory, training, load: tuple[float, float]) -> str:
    """The markdown section for docs/benchmarks.md."""
    times, deviations = evaluation
    runs, train_de, train_df = training
    time_table, memory_table, med = evaluation_tables(setup, times, deviations, memory)
    agree = "agree" if max(train_de, train_df) <= AGREEMENT_TOL else "**DIFFER**"
    return "\n".join([
        "## Committee evaluation and training (`bench/committee_eval.py`)",
        "",
        f"Energies and forces of every member of a default BPNN committee (float64) on B = {setup.n_frames} "
        f"ethanol frames (displaced {setup.displacement_A} Å), {N_THREADS} torch threads. "
        f"Reproduce: `.venv/bin/python -m bench.committee_eval`. Machine: {machine_line()}; "
        f"load average {load[0]:.2f} before, {load[1]:.2f} after "
        f"({'shared machine, absolute times are noisy' if max(load) > 1.5 else 'otherwise idle'}).",
        "",
        f"Time per call (all M members on all B frames), median of {setup.repeats} interleaved calls after "
        f"{setup.warmup} warm-up rounds. Batches and member copies are built before the timed region for "
        "(a), (b) and (c); (a') is `Committee.predict(frames)`, which also builds the batch, computes "
        f"the committee statistics and converts to numpy. (b) and (c) reproduce (a) to {AGREEMENT_TOL:g} "
        "(checked every run; the last two columns).",
        "",
        time_table,
        "",
        "Memory: peak resident set (`ru_maxrss`) of a fresh child process per (M, mode). Set-up peak: after "
        "importing torch and building the committee, batches and member copies. First tiny call: one member "
        "on one frame, which pays the one-off costs (lazy library loading, thread pools). Mode columns: how "
        f"far {setup.memory_calls} call(s) of that mode raise the peak further, i.e. its working memory. "
        "Memory freed earlier can be reused, so these are lower bounds.",
        "",
        memory_table,
        "",
        f"Training, M = {setup.train_members}, on {setup.train_frames} EMT-labelled ethanol frames, "
        f"{setup.train_epochs} epochs each (early stopping cannot trigger), default `TrainConfig` otherwise; "
        f"{setup.train_rounds} round(s) of each, order alternating (vectorised first in odd rounds); "
        "wall time includes data preparation.",
        "",
        training_table(runs),
        "",
        f"The two committees {agree}: max |ΔE| {train_de:.3g} eV, max |ΔF| {train_df:.3g} eV/Å "
        f"on the training frames (tolerance {AGREEMENT_TOL:g}).",
        "",
        *target_lines(setup, med),
    ])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 2, M in {1, 2}, 2 training epochs (for tests)")
    parser.add_argument("--no-write", action="store_true", help="print the markdown, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(N_THREADS)
    setup = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    times, deviations = {}, {}
    for n_members in setup.members:
        prepared = prepare(n_members, setup)
        deviations[n_members] = check_agreement(prepared)
        times[n_members] = time_modes(prepared, setup)
        logger.info("M=%d: median (a) %.1f ms, (c) %.1f ms", n_members,
                    1000 * statistics.median(times[n_members]["a"]), 1000 * statistics.median(times[n_members]["c"]))
    training = compare_training(setup)
    start = time.perf_counter()
    memory = measure_memory(setup)
    logger.info("memory: %d child processes in %.1f s", len(memory), time.perf_counter() - start)
    text = report(setup, (times, deviations), memory, training, (load_before, os.getloadavg()[0]))
    print(text)  # noqa: T201 - a benchmark script's output
    if not args.no_write:
        write_section("committee-eval", text)
    return text


if __name__ == "__main__":
    main()
