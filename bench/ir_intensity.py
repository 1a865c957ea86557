"""Benchmark (issue 20): why are the committee's C–H stretch intensities too weak?

Every committee of ``bench.dipole_accuracy`` at 200 labels (the BPNN, 2 full MACE members,
4 shallow MACE heads) gives the two strongest C–H stretch bands of ethanol 16-37% less
IR intensity than PBE/def2-SVP, while its other bands are within 20%. This separates the
two things an intensity is made of, |dμ/dQ|²:

- **the mode Q**: the committee's intensities are taken along PBE's own normal modes at
  PBE's minimum (the committee's dipole Jacobian by autograd, projected on PBE's
  Cartesian modes per unit mass-weighted amplitude), so geometry and mode shape are
  PBE's and only the dipole model differs;
- **the dipole model**: committees trained on the same random labels with different
  ``[train] dipole_weight`` (the weight of the dipole loss against forces and
  energies), and the fixed-charge baseline of the same committee (per-element charges,
  no charge flux).

    .venv/bin/python -m bench.ir_intensity [--committee bpnn] [--labels 200] [--seed 0]
        [--dipole-weights 0.01 0.1 1] [--members 4] [--epochs N] [--no-write]

Writes section ``ir-intensity-<committee>`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench._report import command_line, machine_line, markdown_table, write_section
from bench.dipole_accuracy import (COMMITTEES, Recipe, _fixed_charge_dipoles, _read, _train, harmonic_rows,
                                   reference_harmonic)


def per_unit_amplitude(modes: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Cartesian displacement per unit mass-weighted amplitude (K, 3N) of modes given as
    unit Cartesian vectors (K, 3N): d / sqrt(Σ_i m_i |d_i|²)."""
    weights = np.repeat(masses, 3)
    return modes / np.sqrt((modes**2 * weights).sum(axis=1, keepdims=True))


def intensities_along(committee, atoms, modes: np.ndarray) -> np.ndarray:
    """The committee's IR intensities (km/mol) along given modes (K, 3N per unit
    mass-weighted amplitude) at ``atoms`` (no optimisation)."""
    from nnp_core.vibrations import E2_PER_AMU_TO_KM_MOL, hessian_and_dipole_jacobian

    _, jacobian = hessian_and_dipole_jacobian(committee, atoms)
    dmu_dq = modes @ jacobian.T
    return (dmu_dq**2).sum(axis=1) * E2_PER_AMU_TO_KM_MOL


def fixed_charge_intensities(committee, atoms, modes: np.ndarray) -> np.ndarray:
    """Intensities of the committee's fixed-charge baseline along ``modes`` (central
    differences of its dipole; charges do not depend on geometry, so this is exact)."""
    from nnp_core.vibrations import E2_PER_AMU_TO_KM_MOL

    h = 1e-3
    out = []
    for mode in modes:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += h * mode.reshape(-1, 3)
        minus.positions -= h * mode.reshape(-1, 3)
        mu = _fixed_charge_dipoles(committee, [plus, minus])
        dmu_dq = (mu[0] - mu[1]) / (2 * h)
        out.append(float(dmu_dq @ dmu_dq) * E2_PER_AMU_TO_KM_MOL)
    return np.array(out)


def torsion_pair(committee, reference: dict, harmonic) -> list:
    """PBE's two lowest bands are ethanol's methyl and hydroxyl torsions (251 and 289 cm⁻¹,
    both A'', 38 cm⁻¹ apart), so small errors in the Hessian rotate one into the other and
    move intensity between them. The sum of the two intensities is the squared dipole
    derivative projected on the plane the two modes span, which that rotation leaves
    unchanged. Row: the committee's frequencies and intensities of the modes matching
    PBE's two (by mass-weighted overlap), their sum against PBE's, each mode's overlap
    with its PBE partner, and the smaller singular value of the 2x2 overlap (1: the same
    plane, only rotated in it)."""
    from nnp_core.sampling import normal_modes
    from nnp_core.vibrations import hessian_and_dipole_jacobian

    hessian, _ = hessian_and_dipole_jacobian(committee, harmonic.minimum)
    modes = normal_modes(harmonic.minimum, hessian, imaginary_tol_cm1=50.0, skip_imaginary=True)
    sqrt_m = np.sqrt(np.repeat(harmonic.minimum.get_masses(), 3))
    mine = modes.cartesian_displacements.reshape(modes.n_modes, -1) * sqrt_m
    mine /= np.linalg.norm(mine, axis=1, keepdims=True)
    ref_f, ref_i = np.array(reference["frequencies_cm1"]), np.array(reference["intensities_km_mol"])
    pair = list(np.argsort(ref_f)[:2])
    ref = np.array(reference["modes"])[pair] * sqrt_m
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    overlap = np.abs(mine @ ref.T)  # (committee modes, 2)
    first = int(np.argmax(overlap[:, 0]))
    rest = overlap[:, 1].copy()
    rest[first] = -1
    second = int(np.argmax(rest))
    matched = [first, second]
    block = mine[matched] @ ref.T
    freq, inten = harmonic.frequencies_cm1, harmonic.intensities_km_mol
    total, ref_total = float(inten[matched].sum()), float(ref_i[pair].sum())
    return [*(round(float(freq[j]), 1) for j in matched), *(round(float(inten[j]), 1) for j in matched),
            round(total, 1), round(ref_total, 1), f"{100 * (total / ref_total - 1):+.0f}%",
            *(round(float(overlap[j, k]), 2) for k, j in enumerate(matched)),
            round(float(np.linalg.svd(block, compute_uv=False).min()), 3)]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--committee", choices=sorted(COMMITTEES), default="bpnn")
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dipole-weights", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default: the recipe's)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.labels < 2:
        parser.error(f"--labels: a committee needs at least 2 frames (got {args.labels})")
    if args.members < 2:
        parser.error(f"--members: a committee needs at least 2 members (got {args.members})")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1 (got {args.epochs})")
    if any(not np.isfinite(w) or w < 0 for w in args.dipole_weights):
        parser.error(f"--dipole-weights must be finite and >= 0 (got {args.dipole_weights})")
    import torch
    from ase import Atoms

    torch.set_num_threads(1)
    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    if args.labels > len(pool):
        parser.error(f"--labels: the pool has {len(pool)} frames (got {args.labels})")
    reference = reference_harmonic()
    atoms = Atoms(numbers=reference["numbers"], positions=reference["positions"])
    ref_f, ref_i = np.array(reference["frequencies_cm1"]), np.array(reference["intensities_km_mol"])
    strongest = sorted(np.argsort(ref_i)[-6:], key=lambda k: ref_f[k])
    modes = per_unit_amplitude(np.array(reference["modes"])[strongest], atoms.get_masses())
    frames = [pool[i] for i in np.random.default_rng(args.seed).choice(len(pool), args.labels, replace=False)]
    test_dipoles = np.array([a.get_dipole_moment() for a in test])
    test_forces = np.concatenate([a.get_forces() for a in test])
    recipe = Recipe(args.committee, args.members, args.epochs)

    def ratio(values: np.ndarray) -> list[str]:
        return [f"{100 * (v / r - 1):+.0f}%" for v, r in zip(values, ref_i[strongest])]

    band_names = [f"{ref_f[k]:.0f}" for k in strongest]
    along_rows, own_rows, pair_rows, fixed_row = [], [], [], None
    for weight in args.dipole_weights:
        start = time.perf_counter()
        committee, _ = _train(frames, recipe, args.seed, dipole_weight=weight)
        wall = time.perf_counter() - start
        evaluated = committee.astype("float64") if committee.dtype != torch.float64 else committee
        prediction = committee.predict(test)
        dipole_mae = float(np.abs(prediction.dipole_mean - test_dipoles).mean())
        force_mae = 1000 * float(np.abs(prediction.forces_mean - test_forces).mean())
        along = intensities_along(evaluated, atoms, modes)
        along_rows.append([weight, round(dipole_mae, 4), round(force_mae, 1), *ratio(along), round(wall)])
        print(along_rows[-1], flush=True)
        rows, harmonic = harmonic_rows(evaluated, reference)
        print("harmonic rows (PBE cm-1, committee cm-1, delta, PBE km/mol, committee km/mol, delta, overlap):", rows,
              flush=True)
        own_rows.append([weight, *(row[5] for row in rows), *(row[2] for row in rows)])
        print(own_rows[-1], flush=True)
        pair_rows.append([weight, *torsion_pair(evaluated, reference, harmonic)])
        print(pair_rows[-1], flush=True)
        if fixed_row is None:
            fixed_row = ["fixed charges (baseline of the first committee)",
                         round(float(np.abs(_fixed_charge_dipoles(committee, test) - test_dipoles).mean()), 4), "",
                         *ratio(fixed_charge_intensities(evaluated, atoms, modes)), ""]
    command = command_line("bench.ir_intensity", argv)
    text = "\n".join([
        f"## IR intensities: the mode or the dipole model? ({args.committee}, issue 20)", "", command, "",
        machine_line(), "",
        f"Committees of {args.members} ({args.committee}) trained on the same {args.labels} random pool frames "
        f"(seed {args.seed}) with different `[train] dipole_weight`; test set `test.extxyz`. Intensity error "
        f"against PBE/def2-SVP for its 6 strongest bands (cm⁻¹ at the head of each column).", "",
        "### Along PBE's normal modes at PBE's minimum (only the dipole model differs)", "",
        markdown_table(["dipole_weight", "test dipole MAE (e·Å)", "test F MAE (meV/Å)",
                        *(f"{name} cm⁻¹" for name in band_names), "training (s)"], along_rows + [fixed_row]), "",
        "### At the committee's own minimum and modes (as `dipole-ir`)", "",
        markdown_table(["dipole_weight", *(f"{name} intensity" for name in band_names),
                        *(f"{name} Δν (cm⁻¹)" for name in band_names)], own_rows), "",
        "### The two torsions at the committee's own minimum (PBE: methyl 251 cm⁻¹, 37.6 km/mol; hydroxyl "
        "289 cm⁻¹, 81.0 km/mol; both A'')", "",
        markdown_table(["dipole_weight", "methyl ν (cm⁻¹)", "hydroxyl ν (cm⁻¹)", "methyl (km/mol)",
                        "hydroxyl (km/mol)", "sum (km/mol)", "PBE sum (km/mol)", "Δ sum", "methyl overlap",
                        "hydroxyl overlap", "plane overlap"], pair_rows), "",
        "Overlaps: |mass-weighted normal mode · PBE's|; plane overlap: the smaller singular value of the 2x2 "
        "overlap matrix (1: the committee's two modes span PBE's plane, rotated within it). The sum of the two "
        "intensities does not depend on that rotation.",
    ])
    print(text)
    if not args.no_write:
        write_section(f"ir-intensity-{args.committee}", text)
    return text


if __name__ == "__main__":
    main()
