"""How far a stretched bond may go and still get a right label: restricted vs broken-symmetry
PBE along ethanol's methyl C-H stretch, with the bond filter's cutoffs and the committees.

``[select] bond_scale`` decides which frames a campaign may label: a bond counts as broken
past bond_scale x the sum of the two covalent radii (C-H: 1.28 Å at the default 1.2, 1.60 Å
at 1.5). alflow labels closed-shell molecules with restricted Kohn-Sham (RKS), which is
right only while no lower unrestricted solution exists (before the Coulson-Fischer point
of the bond). This script stretches the methyl C0-H8 bond of the PBE minimum rigidly (the H
atom moves along the bond, every other atom stays) and at each length computes, at the
reference level of ``bench/data/ethanol-pbe-def2svp`` (PBE/def2-SVP, density fitting):

- the RKS energy, as ``qm_backends.PySCFBackend`` labels it;
- UKS started from a broken-symmetry guess (the RKS HOMO and LUMO rotated by +45° in the
  α and -45° in the β orbitals), its energy and <S²>: where it ends below RKS, a restricted
  label is wrong there;
- with ``--committees``, each committee's energy relative to its own at the minimum, so
  the table shows where a committee's dissociation curve leaves PBE's.

Results are cached in ``bond-stretch.json`` next to the data (committee energies are
recomputed every run).

    .venv/bin/python -m bench.bond_stretch [--committees DIR ...] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.units import Hartree

from bench._report import command_line, machine_line, markdown_table, write_section

SECTION = "bond-stretch"
C_METHYL, H_METHYL = 0, 8
LENGTHS_A = (1.09, 1.2, 1.28, 1.4, 1.5, 1.6, 1.8, 2.0, 2.2, 2.6, 3.0)
CACHE_NAME = "bond-stretch.json"


def stretched(minimum: Atoms, length_A: float) -> Atoms:
    """``minimum`` with C0-H8 at ``length_A`` (only H8 moves, along the bond)."""
    atoms = minimum.copy()
    atoms.calc = None
    atoms.set_distance(C_METHYL, H_METHYL, length_A, fix=0)
    return atoms


def broken_symmetry_guess(mo_coeff: np.ndarray, mo_occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """α and β density matrices from closed-shell orbitals with HOMO and LUMO mixed by
    ±45° (the usual broken-symmetry start for a homolytic bond cleavage)."""
    homo = int(np.flatnonzero(mo_occ > 0)[-1])
    alpha, beta = mo_coeff.copy(), mo_coeff.copy()
    for coeff, sign in ((alpha, 1.0), (beta, -1.0)):
        h, lumo = mo_coeff[:, homo].copy(), mo_coeff[:, homo + 1].copy()
        coeff[:, homo] = (h + sign * lumo) / np.sqrt(2.0)
        coeff[:, homo + 1] = (lumo - sign * h) / np.sqrt(2.0)
    occ = (mo_occ > 0).astype(float)
    return alpha @ np.diag(occ) @ alpha.T, beta @ np.diag(occ) @ beta.T


def pbe_point(atoms: Atoms, reference: dict) -> dict:
    """RKS and broken-symmetry UKS energies (eV) and the UKS <S²> at ``atoms``."""
    from qm_backends import get_backend

    restricted = get_backend("pyscf", **reference, num_threads=1)
    unrestricted = get_backend("pyscf", **reference, restricted=False, num_threads=1)
    mol = restricted.build_mol(atoms)
    rks = restricted.build_scf(mol)
    start = time.perf_counter()
    e_rks = rks.kernel()
    if not rks.converged:
        raise RuntimeError(f"RKS did not converge for {atoms.get_chemical_formula()}")
    uks = unrestricted.build_scf(unrestricted.build_mol(atoms))
    e_uks = uks.kernel(dm0=np.array(broken_symmetry_guess(rks.mo_coeff, rks.mo_occ)))
    if not uks.converged:
        raise RuntimeError(f"broken-symmetry UKS did not converge for {atoms.get_chemical_formula()}")
    return {"rks_eV": float(e_rks * Hartree), "uks_eV": float(e_uks * Hartree),
            "uks_s2": float(uks.spin_square()[0]), "wall_s": time.perf_counter() - start}


def committee_curve(path: Path, minimum: Atoms) -> list[float]:
    """A committee's mean energy (eV) at each length, relative to the first (the minimum)."""
    from nnp_core.committee import load_committee

    prediction = load_committee(path).predict([stretched(minimum, length) for length in LENGTHS_A])
    energies = np.asarray(prediction.energy_mean, dtype=float)
    return list(energies - energies[0])


def cutoff_A(scale: float) -> float:
    return float(scale * (covalent_radii[6] + covalent_radii[1]))


def report(points: dict, curves: dict[str, list[float]], reference: dict, argv: list[str]) -> str:
    lengths = [f"{length:.2f}" for length in LENGTHS_A]
    e0 = points[lengths[0]]["rks_eV"]
    rows = []
    for key in lengths:
        p = points[key]
        row = [key, f"{p['rks_eV'] - e0:.2f}", f"{p['uks_eV'] - e0:.2f}", f"{round(1000 * (p['uks_eV'] - p['rks_eV'])):d}",
               f"{p['uks_s2']:.2f}"]
        row += [f"{curve[lengths.index(key)]:.2f}" for curve in curves.values()]
        rows.append(row)
    unstable = [float(k) for k in lengths if points[k]["uks_eV"] - points[k]["rks_eV"] < -1e-3]
    first = f"from {min(unstable):.2f} Å on" if unstable else "nowhere on this path"
    headers = ["C0-H8 (Å)", "RKS (eV)", "broken-symmetry UKS (eV)", "UKS - RKS (meV)", "UKS <S²>"]
    headers += [f"{name} (eV)" for name in curves]
    return "\n".join([
        f"Ethanol's methyl C0-H8 bond stretched rigidly from the PBE minimum, {reference['method']}/"
        f"{reference['basis']}{' (density fitting)' if reference.get('density_fit') else ''}; energies relative "
        "to the minimum's RKS energy (committees: to their own at the minimum). The bond filter calls C-H broken "
        f"past {cutoff_A(1.2):.2f} Å at `bond_scale` 1.2 (the default) and {cutoff_A(1.5):.2f} Å at 1.5. "
        f"Broken-symmetry UKS lies below RKS {first}: the restricted labels are right before that.",
        "", f"{command_line('bench.bond_stretch', [a for a in argv if a != '--no-write'])} ({machine_line()})", "",
        markdown_table(headers, rows)])


def main(argv: list[str] | None = None) -> int:
    from bench._rare_events import default_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--committees", nargs="*", type=Path, default=[],
                        help="committee folders to draw against PBE (a name=DIR form names the column)")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    import ase.io

    spec = default_spec(with_level=True)
    minimum = ase.io.read(spec.folder / "pbe-minimum.extxyz")
    cache_path = spec.folder / CACHE_NAME
    points = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for length in LENGTHS_A:
        key = f"{length:.2f}"
        if key not in points:
            points[key] = pbe_point(stretched(minimum, length), spec.reference)
            cache_path.write_text(json.dumps(points, indent=1, sort_keys=True))
        p = points[key]
        print(f"{key} Å: RKS {p['rks_eV']:.4f} UKS {p['uks_eV']:.4f} eV <S2> {p['uks_s2']:.3f}", flush=True)
    curves = {}
    for item in args.committees:
        name, _, folder = str(item).rpartition("=")
        curves[name or Path(folder).name] = committee_curve(Path(folder), minimum)
    body = report(points, curves, spec.reference, sys.argv[1:] if argv is None else argv)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
