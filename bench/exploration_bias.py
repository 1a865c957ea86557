"""Where biased exploration goes: plain Langevin vs UDD vs torsion metadynamics, same committee.

One committee (trained on random labels of the ethanol pool, PBE/def2-SVP) drives the
example campaign's exploration (`examples/ethanol.toml`: its replicas, temperatures,
steps, record interval and ``beyond_trust``) with each bias in turn, from the same
start and the same replica seeds. No label is computed: the table shows what each
exploration would hand to selection, per frame recorded:

- committee disagreement (``energy_dev`` median and 90th percentile, eV/√atom) and the
  fractions of frames in the example's trust window and beyond ``trust_hi``;
- rare geometries: the O-H torsion within 30° of cis (its barrier top) and the methyl
  torsion within 20° of eclipsed (its barrier top, 3-fold), which thermal MD at
  300-700 K rarely visits;
- the committee energy above the run's lowest (90th percentile), frames with a changed
  bond graph, and the cost: replica-steps per second relative to plain Langevin.

Run from the repository root::

    .venv/bin/python -m bench.exploration_bias            # -> docs/benchmarks.md
    .venv/bin/python -m bench.exploration_bias --quick    # tiny run, prints only
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

SECTION = "exploration-bias"
ROOT = Path(__file__).resolve().parents[1]


def variants(temperatures_K: list[float], torsions) -> list[tuple[str, object]]:
    from nnp_core.bias import Metadynamics, TorsionCVs, UncertaintyDrivenBias

    def metad(height: float, pace: int):
        return Metadynamics(TorsionCVs(torsions), height_eV=height, sigma=math.radians(20.0), pace_steps=pace,
                            bias_factor=10.0, temperatures_K=temperatures_K)

    return [
        ("Langevin (no bias)", None),
        ("UDD A=0.25 eV, B=0.005 eV (default)", UncertaintyDrivenBias(0.25, 0.005)),
        ("UDD A=0.5 eV, B=0.005 eV", UncertaintyDrivenBias(0.5, 0.005)),
        ("metad h=0.05 eV, pace 20 (default)", metad(0.05, 20)),
        ("metad h=0.02 eV, pace 50", metad(0.02, 50)),
    ]


def committee_for(n_labels: int, seed: int, folder: Path):
    """A committee trained on ``n_labels`` random pool frames (bench.data_efficiency's
    draw and training settings), cached in ``folder``."""
    from bench._learning_data import labelled_set, take
    from bench.data_efficiency import PRESETS, train_and_test, with_reference
    from nnp_core.committee import load_committee

    path = folder / f"random-seed{seed}-n{n_labels}"
    if not (path / "committee.json").exists():
        preset = with_reference(PRESETS["full"])
        pool = labelled_set(preset.data, "pool", limit=max(n_labels, preset.draw_from or 0))
        test = labelled_set(preset.data, "test")
        train_and_test(preset, take(pool, n_labels, seed), test, seed, save_to=path)
    return load_committee(path)


def dihedral_distance(angles_deg: np.ndarray, targets_deg: list[float]) -> np.ndarray:
    """Smallest periodic distance (deg) of each angle to any of ``targets_deg``."""
    diff = (angles_deg[:, None] - np.asarray(targets_deg)[None, :] + 180.0) % 360.0 - 180.0
    return np.abs(diff).min(axis=1)


def measure(committee, start, config, bias, seeds: list[int], torsions, trust: tuple[float, float]) -> dict:
    from nnp_core.md import Replica, run_md
    from nnp_core.sanity import check_bond_graph

    explore = config.explore
    rows, wall, steps = [], 0.0, 0
    for seed in seeds:
        if bias is not None and hasattr(bias, "hills"):
            bias = type(bias)(bias.cvs, height_eV=bias.height_eV, sigma=bias.sigma, pace_steps=bias.pace_steps,
                              bias_factor=bias.bias_factor, temperatures_K=bias.temperatures_K)  # no hills yet
        replicas = [Replica(start, temperature_K=t, friction_per_fs=explore.friction_per_fs, seed=1000 * seed + r)
                    for r, t in enumerate(explore.temperatures_K)]
        result = run_md(committee, replicas, config=config.md_config(), bias=bias)
        wall += result.wall_s
        steps += result.replica_steps
        rows += [f for f in result.frames if f.step > 0]
    atoms = [f.to_atoms() for f in rows]
    (methyl, hydroxyl) = torsions  # H-C-C-O, C-C-O-H
    methyl_deg = np.array([a.get_dihedral(*methyl) for a in atoms])
    hydroxyl_deg = np.array([a.get_dihedral(*hydroxyl) for a in atoms])
    energy_dev = np.array([f.energy_dev for f in rows])
    max_force_dev = np.array([f.max_force_dev for f in rows])
    energy = np.array([f.potential_energy_eV for f in rows])
    return {
        "frames": len(rows), "replica_steps_per_s": steps / wall,
        "energy_dev_median": float(np.median(energy_dev)), "energy_dev_p90": float(np.percentile(energy_dev, 90)),
        "in_window": float(np.mean((max_force_dev >= trust[0]) & (max_force_dev < trust[1]))),
        "beyond_trust": float(np.mean(max_force_dev >= trust[1])),
        "hydroxyl_cis": float(np.mean(dihedral_distance(hydroxyl_deg, [0.0]) < 30.0)),
        "methyl_eclipsed": float(np.mean(dihedral_distance(methyl_deg, [0.0, 120.0, 240.0]) < 20.0)),
        "energy_p90_eV": float(np.percentile(energy, 90) - energy.min()),
        "bonds_changed": float(np.mean([check_bond_graph(a, start) is not None for a in atoms])),
    }


def main(argv: list[str] | None = None) -> str:
    import torch

    from bench._report import machine_line, markdown_table, write_section
    from flows.config import load_config
    from nnp_core.bias import rotatable_torsions

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, default=50, help="random labels the committee is trained on")
    parser.add_argument("--seeds", type=int, default=3, help="repeats with other replica seeds")
    parser.add_argument("--quick", action="store_true", help="tiny run on an untrained committee, prints only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(ROOT / "examples" / "ethanol.toml")
    start = config.system.atoms()
    if args.quick:
        from nnp_core.committee import Committee

        committee = Committee.create("bpnn", n_members=3, elements=[1, 6, 8], seed=0)
        config = config.model_copy(update={"explore": config.explore.model_copy(update={"steps": 40})})
        seeds = [0]
    else:
        committee = committee_for(args.labels, 0, ROOT / "bench" / "data" / "ethanol-pbe-def2svp" / "committees"
                                  / "exploration-bias")
        seeds = list(range(args.seeds))
    torsions = sorted(rotatable_torsions(start), key=lambda t: start.numbers[t[2]])  # C-C bond first
    trust = (config.select.trust_lo_eV_A, config.select.trust_hi_eV_A)
    rows, baseline = [], None
    for name, bias in variants(config.explore.temperatures_K, torsions):
        begin = time.perf_counter()
        m = measure(committee, start, config, bias, seeds, torsions, trust)
        baseline = baseline or m["replica_steps_per_s"]
        print(f"{name}: {m} ({time.perf_counter() - begin:.0f} s)", flush=True)
        rows.append([name, m["frames"], m["energy_dev_median"], m["energy_dev_p90"], m["in_window"],
                     m["beyond_trust"], m["hydroxyl_cis"], m["methyl_eclipsed"], m["energy_p90_eV"],
                     m["bonds_changed"], m["replica_steps_per_s"] / baseline])
    explore = config.explore
    text = "\n".join([
        "## Where biased exploration goes (ethanol)", "",
        "`.venv/bin/python -m bench.exploration_bias`", "", machine_line(), "",
        f"One BPNN committee trained on {args.labels} random pool labels (PBE/def2-SVP) explores as "
        f"`examples/ethanol.toml` does ({explore.replicas} replicas at {explore.temperatures_K} K, "
        f"{explore.steps} steps of {explore.timestep_fs} fs, a frame every {explore.record_interval_steps} "
        f"steps, beyond_trust = {explore.beyond_trust!r}), {len(seeds)} times with other replica seeds, "
        "under each bias; no labels. Fractions are of the frames recorded; trust window "
        f"[{trust[0]}, {trust[1]}) eV/Å on max_force_dev. 'O-H cis': C-C-O-H within 30° of 0° (the "
        "hydroxyl torsion's barrier top); 'CH3 eclipsed': O-C-C-H within 20° of 0/120/240° (the methyl "
        "barrier top).", "",
        markdown_table(["exploration", "frames", "energy_dev median", "energy_dev p90", "in window",
                        "beyond trust_hi", "O-H cis", "CH3 eclipsed", "E p90 − E min (eV)", "bonds changed",
                        "speed vs Langevin"], rows),
    ])
    if not args.quick:
        write_section(SECTION, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
