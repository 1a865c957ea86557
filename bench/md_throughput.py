"""Batched committee MD (alflow) against ASE Langevin + CommitteeCalculator, replica by replica.

Both sides do the same work per replica-step: ethanol, an untrained (random-initialised)
M-member BPNN committee, every member evaluated every step (the mean force moves the
atoms, the spread is the trust score), Langevin at 300 K, 0.5 fs, friction 0.01/fs.

- alflow: ``nnp_core.md.run_md`` with R replicas in one batch (default 0.5 Å skin).
- ASE: ``ase.md.langevin.Langevin`` with ``CommitteeCalculator``, one replica after the
  other. ASE's cost per replica-step does not depend on R, so it runs
  ``min(R, ase_max_replicas)`` replicas for fewer steps and its rate is scaled to R
  replicas (stated in the table's notes).

Memory: each (engine, M) runs in a fresh process; after imports and a 3-step warm-up the
process's peak RSS (``resource.getrusage(...).ru_maxrss``) is read, then R grows
1 -> 64 and the peak-RSS growth over that baseline is reported after each R. It covers
numpy arrays, torch tensors, autograd buffers and the allocator's caches alike.

Run from the repository root::

    .venv/bin/python -m bench.md_throughput            # full grid -> docs/benchmarks.md
    .venv/bin/python -m bench.md_throughput --quick    # tiny sizes, prints only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SECTION = "md-throughput"
TEMPERATURE_K = 300.0
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
FULL = {"replicas": [1, 4, 16, 64], "members": [1, 4, 8], "engine_steps": 30,
        "ase_steps": 20, "ase_max_replicas": 2}
QUICK = {"replicas": [1, 2], "members": [1, 2], "engine_steps": 3,
         "ase_steps": 2, "ase_max_replicas": 1}

log = logging.getLogger("bench.md_throughput")


# ----------------------------------------------------------------- worker side


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _alflow_rate(committee, n_replicas: int, n_steps: int) -> float:
    from ase.build import molecule

    from nnp_core.md import MDConfig, Replica, run_md

    replicas = [
        Replica(molecule("CH3CH2OH"), temperature_K=TEMPERATURE_K,
                friction_per_fs=FRICTION_PER_FS, seed=seed)
        for seed in range(n_replicas)
    ]
    config = MDConfig(timestep_fs=TIMESTEP_FS, n_steps=n_steps, record_interval_steps=10)
    return run_md(committee, replicas, config=config).replica_steps_per_s


def _ase_rate(committee, n_replicas: int, n_steps: int) -> float:
    import numpy as np
    from ase import units
    from ase.build import molecule
    from ase.md.langevin import Langevin

    from nnp_core.calculator import CommitteeCalculator

    start = time.perf_counter()
    for seed in range(n_replicas):
        rng = np.random.default_rng(seed)
        atoms = molecule("CH3CH2OH")
        sigma = np.sqrt(units.kB * TEMPERATURE_K / atoms.get_masses())[:, None]
        atoms.set_velocities(sigma * rng.standard_normal((len(atoms), 3)))
        atoms.calc = CommitteeCalculator(committee)
        dyn = Langevin(atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
                       friction=FRICTION_PER_FS / units.fs, fixcm=False, rng=rng)
        dyn.run(n_steps)
    return n_replicas * n_steps / (time.perf_counter() - start)


def worker(engine: str, n_members: int, replicas: list[int], sizes: dict, threads: int) -> list[dict]:
    """One engine, one committee size, R ascending: rate and peak-RSS growth per R."""
    import torch

    from nnp_core.committee import Committee

    torch.set_num_threads(threads)
    committee = Committee.create("bpnn", n_members=n_members, seed=0, elements=["H", "C", "O"])
    measure = _alflow_rate if engine == "alflow" else _ase_rate
    measure(committee, 1, 3)  # warm-up: lazy imports and first-call costs
    baseline = _peak_rss_mib()
    rows = []
    for n_replicas in replicas:
        if engine == "alflow":
            rate = measure(committee, n_replicas, sizes["engine_steps"])
        else:
            rate = measure(committee, min(n_replicas, sizes["ase_max_replicas"]), sizes["ase_steps"])
        rows.append({"replicas": n_replicas, "members": n_members, "rate": rate,
                     "peak_rss_growth_mib": _peak_rss_mib() - baseline})
    return rows


# ----------------------------------------------------------------- parent side


def _run_worker(engine: str, n_members: int, sizes: dict, threads: int) -> list[dict]:
    spec = json.dumps({"engine": engine, "members": n_members, "sizes": sizes, "threads": threads})
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, "-m", "bench.md_throughput", "--worker", spec],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{engine} worker (M={n_members}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _saturation(rows: list[dict]) -> str:
    """Smallest R after which the next (4x larger) R gains < 25% alflow throughput."""
    for a, b in zip(rows, rows[1:]):
        if b["alflow"] < 1.25 * a["alflow"]:
            return f"R = {a['replicas']}"
    return f"not reached by R = {rows[-1]['replicas']}"


def run(sizes: dict, threads: int) -> tuple[list[dict], str]:
    """Measure the grid; return the rows and the markdown section."""
    from bench._report import machine_line, markdown_table

    rows, saturation = [], []
    for n_members in sizes["members"]:
        ours = _run_worker("alflow", n_members, sizes, threads)
        theirs = _run_worker("ase", n_members, sizes, threads)
        block = [
            {"replicas": a["replicas"], "members": n_members, "alflow": a["rate"], "ase": b["rate"],
             "ratio": a["rate"] / b["rate"], "alflow_mib": a["peak_rss_growth_mib"],
             "ase_mib": b["peak_rss_growth_mib"]}
            for a, b in zip(ours, theirs)
        ]
        rows += block
        saturation.append(f"M = {n_members}: {_saturation(block)}")
        log.info("M=%d done: %s", n_members, [round(r["ratio"], 1) for r in block])
    table = markdown_table(
        ["R replicas", "M members", "alflow replica-steps/s", "ASE replica-steps/s",
         "ratio", "alflow peak RSS growth (MiB)", "ASE peak RSS growth (MiB)"],
        [[r["replicas"], r["members"], r["alflow"], r["ase"], r["ratio"], r["alflow_mib"], r["ase_mib"]]
         for r in rows],
    )
    text = "\n".join([
        "## MD throughput: batched committee MD vs ASE Langevin, one replica at a time",
        "",
        "Written by `bench/md_throughput.py`. Ethanol, random-initialised BPNN committee "
        f"(default descriptor), Langevin {TEMPERATURE_K:g} K, {TIMESTEP_FS:g} fs, friction "
        f"{FRICTION_PER_FS:g}/fs; every member evaluated every step on both sides. alflow: "
        f"`run_md` with R replicas in one batch, {sizes['engine_steps']} steps. ASE: "
        f"`Langevin` + `CommitteeCalculator`, min(R, {sizes['ase_max_replicas']}) replicas x "
        f"{sizes['ase_steps']} steps run one after another, rate scaled to R (its cost per "
        "replica-step does not depend on R). Peak RSS growth: `ru_maxrss` of a fresh process "
        "per (engine, M) after a warm-up, then R = 1, 4, ... in turn (numpy, torch and "
        "allocator caches alike; ~1 MiB resolution).",
        "",
        f"Machine: {machine_line()}, {threads} thread(s) for torch; shared with other jobs, "
        "so absolute rates are noisy and the ratios are the result.",
        "",
        table,
        "",
        "alflow throughput saturates (next 4x in R gains < 25%) at: " + "; ".join(saturation) + ".",
    ])
    return rows, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes; print, do not write docs")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch threads in each worker (default: 2)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the section to this markdown file (default: docs/benchmarks.md "
                             "unless --quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        rows = worker(spec["engine"], spec["members"], spec["sizes"]["replicas"], spec["sizes"], spec["threads"])
        print(json.dumps(rows))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench._report import BENCHMARKS_MD, write_section

    _, text = run(QUICK if args.quick else FULL, args.threads)
    print(text)
    output = args.output or (None if args.quick else BENCHMARKS_MD)
    if output is not None:
        write_section(SECTION, text, path=output)
        log.info("wrote section %r to %s", SECTION, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
