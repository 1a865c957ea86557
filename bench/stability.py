"""Does the committee stay stable in long MD? (Fu et al.'s test: 500 K, 0.5 fs.)

Runs Langevin MD with a committee's mean force in alflow's batched engine, one replica
per seed (all seeds in one batch), no trust stopping and no restarts. Every
``--check-every`` steps each replica's frame is checked: the run of a seed *fails* at the
first frame where any bonded pair of the reference geometry (1.2 x covalent radii) is
stretched or compressed by more than 0.5 Å, or when the engine stops it for non-finite
values or an energy jump. Reports time to failure per seed.

Committees compared: the final committee of each data-efficiency campaign and, when
present, the committees trained on the whole random pool (``bench.data_efficiency``
saves them), so the two ways of collecting data are compared in one run.

    .venv/bin/python -m bench.stability [--preset full|tiny] [--ps 20] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from bench._report import BENCHMARKS_MD, machine_line, markdown_table, write_section
from nnp_core.committee import Committee, load_committee
from nnp_core.md import Integrator, MDConfig, Replica, run_md
from nnp_core.sanity import bond_graph

BOND_LIMIT_A = 0.5


@dataclass(frozen=True)
class SeedResult:
    seed: int
    failed_at_ps: float | None  # None: survived the whole run
    reason: str
    max_bond_deviation_A: float
    mean_temperature_K: float


def bond_deviation(reference: Atoms, positions: np.ndarray) -> float:
    """Largest |r_ij - r_ij^ref| over the reference geometry's bonded pairs, Å."""
    i, j = np.array(sorted(bond_graph(reference))).T
    ref = np.linalg.norm(reference.positions[i] - reference.positions[j], axis=1)
    now = np.linalg.norm(positions[i] - positions[j], axis=1)
    return float(np.max(np.abs(now - ref)))


def stability_run(committee: Committee, reference: Atoms, *, seeds: int = 5, temperature_K: float = 500.0,
                  timestep_fs: float = 0.5, n_steps: int = 40_000, check_every: int = 20,
                  friction_per_fs: float = 0.01) -> tuple[list[SeedResult], float]:
    """Time to failure of each seed; returns the results and the wall time in s."""
    replicas = [Replica(reference.copy(), temperature_K=temperature_K, friction_per_fs=friction_per_fs, seed=s)
                for s in range(seeds)]
    config = MDConfig(integrator=Integrator.LANGEVIN, timestep_fs=timestep_fs, n_steps=n_steps,
                      record_interval_steps=check_every, trust_hi_eV_A=None, max_restarts=0)
    start = time.perf_counter()
    result = run_md(committee, replicas, config=config)
    wall = time.perf_counter() - start
    out = []
    for summary in result.replicas:
        frames = sorted((f for f in result.frames if f.replica == summary.replica), key=lambda f: f.step)
        failed_step, reason, worst = None, "survived", 0.0
        for frame in frames:
            deviation = bond_deviation(reference, frame.positions_A)
            worst = max(worst, deviation) if np.isfinite(deviation) else np.inf
            if not np.isfinite(deviation) or deviation > BOND_LIMIT_A:
                failed_step, reason = frame.step, f"bond deviates {deviation:.2f} Å"
                break
        if failed_step is None and summary.stop_reason != "completed":
            failed_step, reason = summary.steps_run, f"{summary.stop_reason}: {summary.message}"
        out.append(SeedResult(summary.replica, None if failed_step is None else failed_step * timestep_fs / 1000,
                              reason, worst, summary.mean_kinetic_temperature_K))
    return out, wall


def committees_of(data_dir: Path) -> dict[str, tuple[Committee, Atoms]]:
    """The final committee of each campaign under ``data_dir`` (with the campaign's
    reference geometry) and any saved random-pool committees."""
    from flows.campaign import open_campaign
    from flows.storage import latest_committee, reading, reference_structure

    found: dict[str, tuple[Committee, Atoms]] = {}
    geometry = None
    for config_path in sorted(data_dir.glob("al*-seed*/campaign.toml")):
        ctx = open_campaign(config_path, create=False)
        with reading(ctx.engine) as session:
            row = latest_committee(session, ctx.campaign_id)
            geometry = reference_structure(session, ctx.campaign_id)
            frames, checkpoint = (row.n_training_frames, row.checkpoint_path) if row is not None else (0, None)
        if checkpoint is not None:
            found[f"active learning, {config_path.parent.name} ({frames} training frames)"] = (
                load_committee(ctx.resolve(checkpoint)), geometry)
    for path in sorted((data_dir / "committees").glob("*random-*")):
        if geometry is not None:
            found[f"random sampling, {path.name}"] = (load_committee(path), geometry)
    return found


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=("full", "tiny"), default="full")
    parser.add_argument("--ps", type=float, default=20.0, help="simulated time per seed, ps")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, help="bench.data_efficiency's data folder")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--only", nargs="+", help="run only committees whose name contains one of these")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not (args.ps > 0 and args.seeds >= 1):
        parser.error(f"--ps must be > 0 and --seeds >= 1 (got {args.ps:g} and {args.seeds})")
    from bench.data_efficiency import PRESETS

    data_dir = args.data_dir or PRESETS[args.preset].data.folder
    n_steps = int(round(args.ps * 1000 / 0.5))
    rows = []
    for name, (committee, geometry) in committees_of(data_dir).items():
        if args.only and not any(part in name for part in args.only):
            continue
        results, wall = stability_run(committee, geometry, seeds=args.seeds, n_steps=n_steps)
        survived = sum(r.failed_at_ps is None for r in results)
        rows.append([name, f"{survived}/{len(results)}",
                     ", ".join("—" if r.failed_at_ps is None else f"{r.failed_at_ps:.2f}" for r in results),
                     max(r.max_bond_deviation_A for r in results),
                     float(np.mean([r.mean_temperature_K for r in results])), wall])
        print(name, [r for r in results], flush=True)
    if not rows:
        raise SystemExit(f"no committees under {data_dir}: run bench.data_efficiency first")
    text = "\n".join([
        "## Stability: long MD with the final committees", "",
        "`.venv/bin/python -m bench.stability" + " ".join([""] + (argv if argv is not None else sys.argv[1:])) + "`", "",
        machine_line(), "",
        f"Langevin MD at 500 K, 0.5 fs, friction 0.01/fs, {args.ps:g} ps per seed, {args.seeds} seeds in one "
        f"batch, no restarts. Failure: a bonded pair of the reference geometry deviates > {BOND_LIMIT_A} Å "
        "(Fu et al.'s criterion), or non-finite values / an energy jump. Checked every 10 fs.", "",
        markdown_table(["committee", "seeds surviving", "time to failure per seed, ps (— = survived)",
                        "max bond deviation Å", "mean T K", "wall s"], rows),
    ])
    if not args.no_write:
        write_section("stability", text, path=args.out)
    print(text)
    return text


if __name__ == "__main__":
    main()
