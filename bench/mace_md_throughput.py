"""Benchmark: MD with a MACE committee, alflow's batched engine against ASE Langevin with
mace-torch's own committee calculator (``MACECalculator(model_paths=[M files])``).

Both propagate ethanol replicas at 300 K, 0.5 fs, friction 0.01/fs on the committee-mean
force of the same M MACE members (random weights, energy scale 0.05 eV so the forces
stay small; speed does not depend on training):

- alflow: ``nnp_core.md.run_md`` with R replicas in one graph, the committee mean each
  step (members one after the other on the shared graph, one backward pass) and every
  member's forces on scoring steps (every 10 steps);
- ASE: ``ase.md.langevin.Langevin`` with ``MACECalculator`` loading the M exported member
  files (every member on every step), one replica after the other; its rate per
  replica-step does not depend on R, so it runs one replica and is scaled to R.

``--architectures mace mace-shallow`` adds the shallow ensemble (one MACE backbone, a
readout head per member): the same M member models for ASE, one backbone pass per step
for alflow. Each in float64 and float32 (``--dtypes``): alflow explores with
``Committee.astype(dtype)`` (``[explore] dtype``), ASE with ``MACECalculator(...,
default_dtype=dtype)``; every speed-up is against ASE in float64 (mace-torch's advice for
MD) and against ASE in the same dtype.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.mace_md_throughput [--members 4] [--replicas 1 4 16] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._report import machine_line, markdown_table, write_section

SETTINGS = {"cutoff_A": 5.0, "num_channels": 32, "max_L": 1, "correlation": 3, "num_interactions": 2,
            "avg_num_neighbors": 8.0}


def _committee(members: int, architecture: str = "mace", size: dict | None = None):
    """M members with random weights, ``SETTINGS`` changed by ``size`` (a
    ``bench.mace_size_cost.SIZES`` entry)."""
    from nnp_core.committee import Committee
    from nnp_core.models import build_model

    model = build_model(architecture, n_members=members, seed=0, elements=[1, 6, 8], **{**SETTINGS, **(size or {})})
    model.energy_scale.fill_(0.05)
    return Committee(model)


def _alflow_rate(committee, replicas: int, steps: int) -> float:
    from ase.build import molecule

    from nnp_core.md import MDConfig, Replica, run_md

    seeds = [Replica(atoms=molecule("CH3CH2OH"), temperature_K=300.0, friction_per_fs=0.01, seed=r)
             for r in range(replicas)]
    config = MDConfig(timestep_fs=0.5, n_steps=steps, record_interval_steps=10)
    start = time.perf_counter()
    run_md(committee, seeds, config=config)
    return replicas * steps / (time.perf_counter() - start)


def _ase_rate(paths: list[str], steps: int, dtype: str, device: str = "cpu") -> float:
    from ase import units
    from ase.build import molecule
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from mace.calculators import MACECalculator

    atoms = molecule("CH3CH2OH")
    atoms.calc = MACECalculator(model_paths=paths, device=device, default_dtype=dtype)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(0))
    dynamics = Langevin(atoms, 0.5 * units.fs, temperature_K=300.0, friction=0.01 / units.fs,
                        rng=np.random.default_rng(1))
    dynamics.run(1)  # warm-up
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtypes", nargs="+", choices=["float64", "float32"], default=["float64", "float32"])
    parser.add_argument("--architectures", nargs="+", choices=["mace", "mace-shallow"], default=["mace"],
                        help="mace: M full MACE models; mace-shallow: one backbone, M readout heads")
    parser.add_argument("--size", default="default",
                        help="a MACE size of bench.mace_size_cost (default, L0, c2, L0-c2, L0-c2-16ch)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    from bench.mace_size_cost import SIZES
    from nnp_core.models.mace import write_mace_models

    if args.size not in SIZES:
        parser.error(f"--size: one of {', '.join(SIZES)} (got {args.size!r})")
    size = {**SETTINGS, **SIZES[args.size]}
    committees = {name: _committee(args.members, name, SIZES[args.size]) for name in args.architectures}
    ase_rates = {}
    with tempfile.TemporaryDirectory() as folder:  # each member file is a full MACE either way
        paths = [str(p) for p in write_mace_models(committees[args.architectures[0]].model, Path(folder) / "models")]
        for dtype in args.dtypes:
            ase_rates[dtype] = _ase_rate(paths, args.steps, dtype)
    rows = []
    for name, committee in committees.items():
        for dtype in args.dtypes:
            explorer = committee.astype(dtype)
            _alflow_rate(explorer, 1, 2)  # warm-up
            for replicas in args.replicas:
                rate = _alflow_rate(explorer, replicas, args.steps)
                rows.append([name, dtype, replicas, args.members, rate, ase_rates[dtype], rate / ase_rates[dtype]]
                            + ([rate / ase_rates["float64"]] if "float64" in ase_rates else []))
                print(rows[-1], flush=True)
    table = markdown_table(["alflow committee", "dtype", "replicas R", "members M", "alflow replica-steps/s", "ASE + MACECalculator "
                            "replica-steps/s (same dtype)", "speed-up, same dtype"]
                           + (["speed-up vs ASE float64"] if "float64" in ase_rates else []), rows)
    command = "`OMP_NUM_THREADS=1 .venv/bin/python -m bench.mace_md_throughput " + " ".join(
        sys.argv[1:] if argv is None else argv) + "`"
    text = "\n".join([
        "## MD with a MACE committee: alflow's batched engine vs ASE + MACECalculator", "", command, "",
        machine_line(), "", table, "",
        f"Ethanol, 300 K, 0.5 fs, {args.steps} steps per run; MACE {size['num_channels']} channels, max_L "
        f"{size['max_L']}, correlation {size['correlation']}, {size['num_interactions']} interactions (weights in float64; the float32 rows cast them, as `[explore] dtype = \"float32\"` "
        "and `MACECalculator(default_dtype=\"float32\")` do). ASE runs one replica (its rate per replica-step does not depend on R) with "
        "mace-torch's committee calculator over the exported member files; alflow evaluates every member on "
        "scoring steps only (every 10 steps); `mace` runs the members one after the other on one graph, "
        "`mace-shallow` (one backbone, a readout head per member) runs the backbone once for all members "
        "(one backward pass for the mean force, one per member on scoring steps).",
    ])
    print(text)
    if not args.no_write:
        write_section("mace-md-throughput", text)
    return text


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
