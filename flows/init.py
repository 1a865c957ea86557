"""``alflow init``: a commented, validated campaign TOML for one molecule.

``alflow init STRUCTURE --method M --basis B`` reads ``STRUCTURE`` (a file ``ase.io.read``
reads, or an ``ase.build.molecule`` name), chooses element- and size-aware settings
(:func:`choose_defaults`, the rules are written into the file), checks the chemistry
before anything is written, measures one reference calculation (the cost estimate) and
writes ``<name>.toml``. A molecule name stays ``[system] molecule``; a structure file
in the config's folder is referenced as is, any other is written (first frame, no cell)
as ``<config stem>.xyz`` beside the config: the campaign folder is self-contained. The
text is validated with :func:`flows.config.load_config` before it is written.

Refused with :class:`InitError` (one line, exit 2, no file written): an unknown molecule
name or unreadable file, fewer than 2 atoms, an element the basis lacks, a charge and
multiplicity no electron count allows (an odd count with multiplicity 1 suggests
``--multiplicity 2``), an unknown method, a reference calculation that fails, and an
existing output file without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from flows.storage.backup import OutputError, check_output, replacing

#: the campaign name's pattern (``flows.config.CampaignSection.name``)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: the anchor of the trust-window rule: examples/ethanol.toml, 9 atoms, 0.20 / 0.50 eV/Å
#: (measured on its 4-member BPNN, see the comment in that file)
TRUST_ANCHOR_ATOMS = 9
TRUST_LO_ANCHOR_EV_A = 0.20
TRUST_HI_ANCHOR_EV_A = 0.50

#: radial cutoff (Å) by the heaviest element's row of the periodic table
CUTOFF_BY_ROW_A = {1: 5.0, 2: 5.0, 3: 5.5, 4: 6.0}
CUTOFF_HEAVIER_A = 6.5

TEMPERATURES_K = (300, 400, 500, 600)
MEMBERS = 4
MAX_GENERATIONS = 10


class InitError(OutputError):
    """``alflow init`` refuses: the campaign file cannot be written as asked. Nothing
    was written. (An ``OutputError``: ``alflow``'s ``run_command`` prints it as one line
    and exits 2.)"""


# ----------------------------------------------------------------------------- structure


def read_structure(structure: str) -> tuple[Atoms, Path | None]:
    """The starting structure and the file it came from (None for a molecule name).

    An existing path is read with ``ase.io.read`` (first frame); anything else must be
    an ``ase.build.molecule`` name."""
    from flows.config import _build_molecule, _read_structure

    path = Path(structure).expanduser()
    looks_like_a_file = path.exists() or path.suffix != "" or os.sep in structure
    if looks_like_a_file and not path.exists():
        raise InitError(f"no such structure file: {structure} (or give an ASE molecule name such as 'H2O')")
    try:
        if path.exists():
            return _read_structure(path), path.resolve()
        return _build_molecule(structure), None
    except ValueError as exc:
        raise InitError(_first_line(str(exc))) from None


def period(z: int) -> int:
    """Row of the periodic table of atomic number ``z``."""
    for row, last in enumerate((2, 10, 18, 36, 54, 86), start=1):
        if z <= last:
            return row
    return 7


def degrees_of_freedom(atoms: Atoms) -> int:
    """Internal degrees of freedom: 3N − 6, or 3N − 5 for a linear molecule."""
    n = len(atoms)
    if n == 2:
        return 1
    positions = atoms.get_positions() - atoms.get_positions().mean(axis=0)
    singular = np.linalg.svd(positions, compute_uv=False)
    linear = singular[1] < 1e-3 * max(singular[0], 1e-12)
    return 3 * n - (5 if linear else 6)


def check_electrons(atoms: Atoms, *, charge: int, multiplicity: int, what: str) -> int:
    """The electron count; ``InitError`` if ``multiplicity`` cannot go with it."""
    n_electrons = int(atoms.numbers.sum()) - charge
    unpaired = multiplicity - 1
    if n_electrons <= 0:
        raise InitError(f"{what} has {n_electrons} electrons with charge {charge}: nothing to compute")
    if (n_electrons - unpaired) % 2 == 0 and unpaired <= n_electrons:
        return n_electrons
    if multiplicity == 1:
        raise InitError(f"{what} has {n_electrons} electrons (charge {charge}), an odd number: it is open-shell; "
                        f"pass --multiplicity 2 (a doublet) or change --charge")
    suggestion = 1 if n_electrons % 2 == 0 else 2
    raise InitError(f"multiplicity {multiplicity} is impossible for {what} with {n_electrons} electrons "
                    f"(charge {charge}); e.g. --multiplicity {suggestion}")


def check_basis(atoms: Atoms, basis: str) -> None:
    """``InitError`` naming the elements PySCF has no ``basis`` functions for."""
    from pyscf import gto

    problems = []
    symbols = sorted(set(atoms.get_chemical_symbols()), key=atomic_numbers.__getitem__)
    for symbol in symbols:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                shells = gto.basis.load(basis, symbol)
            except Exception:  # noqa: BLE001 - PySCF raises BasisNotFoundError, KeyError, ...
                shells = None
        if not shells:
            problems.append(symbol)
    if not problems:
        return
    if len(problems) == len(symbols):
        raise InitError(f"PySCF knows no basis {basis!r} for {', '.join(symbols)} (a typo? e.g. def2-SVP, "
                        f"6-31G*, cc-pVDZ, sto-3g)")
    raise InitError(f"basis {basis} has no functions for {', '.join(problems)}; choose a basis that covers "
                    f"{'it' if len(problems) == 1 else 'them'} (e.g. def2-SVP: H-La, Hf-Rn)")


# ------------------------------------------------------------------------------ defaults


@dataclass(frozen=True)
class Defaults:
    """What :func:`choose_defaults` chose for a molecule, and why (for the comments)."""

    n_atoms: int
    dof: int
    heaviest: str
    row: int
    cutoff_A: float
    trust_lo_eV_A: float
    trust_hi_eV_A: float
    initial_samples: int
    validation_frames: int
    max_selected_per_generation: int
    max_generations: int
    members: int = MEMBERS
    temperatures_K: tuple[int, ...] = TEMPERATURES_K

    @property
    def max_labels(self) -> int:
        """Labels the campaign computes at most: the reference geometry, the initial and
        validation frames, and every generation's cap."""
        return (1 + self.initial_samples + self.validation_frames
                + self.max_generations * self.max_selected_per_generation)


VALIDATION_FRACTION = 0.1


def choose_defaults(atoms: Atoms) -> Defaults:
    """Element- and size-aware settings (the rules are repeated in the written file).

    - ``cutoff_A``: 5.0 Å with only H-Ne, 5.5 Å with a third-row element (Na-Ar), 6.0 Å
      with K-Kr, 6.5 Å beyond: bonds to heavier atoms are longer (C-F 1.35, C-Cl 1.77,
      C-Br 1.94, C-I 2.14 Å), so the same neighbour shells need ~0.5 Å more per row.
    - trust window: ethanol's measured 0.20 / 0.50 eV/Å (9 atoms) times
      sqrt(ln N / ln 9): ``max_force_dev`` is a maximum over N atoms, and the largest
      of N similar deviations grows like sqrt(2 ln N).
    - ``initial_samples``: internal degrees of freedom + 3, between 12 and 100 (24 for
      ethanol, 12 for water: both examples' choices).
    - ``max_selected_per_generation``: half the initial samples, between 8 and 50.
    """
    n = len(atoms)
    numbers = atoms.numbers
    heaviest_z = int(numbers.max())
    row = period(heaviest_z)
    cutoff = CUTOFF_BY_ROW_A.get(row, CUTOFF_HEAVIER_A)
    scale = math.sqrt(math.log(n) / math.log(TRUST_ANCHOR_ATOMS))
    trust_lo = round(TRUST_LO_ANCHOR_EV_A * scale, 2)
    trust_hi = round(TRUST_HI_ANCHOR_EV_A * scale, 2)
    dof = degrees_of_freedom(atoms)
    initial = min(max(dof + 3, 12), 100)
    return Defaults(
        n_atoms=n, dof=dof, heaviest=chemical_symbols[heaviest_z], row=row,
        cutoff_A=cutoff, trust_lo_eV_A=trust_lo, trust_hi_eV_A=trust_hi, initial_samples=initial,
        validation_frames=math.ceil(VALIDATION_FRACTION * initial),
        max_selected_per_generation=min(max(math.ceil(initial / 2), 8), 50),
        max_generations=MAX_GENERATIONS,
    )


def xtb_available() -> bool:
    """Whether GFN2-xTB (tblite, the ``[xtb]`` extra) can drive the initial MD."""
    import importlib.util

    return importlib.util.find_spec("tblite") is not None


# ------------------------------------------------------------------------------ estimate


@dataclass(frozen=True)
class Estimate:
    seconds_per_label: float
    n_scf_cycles: int
    threads: int
    max_labels: int

    @property
    def qm_hours(self) -> float:
        return self.max_labels * self.seconds_per_label / 3600


def measure(config: Any, max_labels: int) -> Estimate:
    """One reference energy + forces of the starting structure with the campaign's own
    backend, timed (wall clock, including PySCF's set-up of the molecule)."""
    from flows.backends import make_backend
    from qm_backends import InvalidStructure, LabelFailed

    backend = make_backend(config)
    start = time.perf_counter()
    try:
        label = backend.label(config.system.atoms())
    except (LabelFailed, InvalidStructure) as exc:
        raise InitError(f"the reference calculation of the starting structure failed "
                        f"({_first_line(f'{type(exc).__name__}: {exc}')}); the campaign could not label either") from None
    seconds = time.perf_counter() - start
    return Estimate(seconds_per_label=seconds, n_scf_cycles=int(label.n_scf_cycles or 0),
                    threads=_pyscf_threads(), max_labels=max_labels)


def _pyscf_threads() -> int:
    from pyscf import lib

    return int(lib.num_threads())


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


# ---------------------------------------------------------------------------------- text


@dataclass
class Plan:
    """Everything the TOML text is made of."""

    name: str
    what: str  # "CH3CH2OH (ASE molecule)" / "aspirin.pdb"
    formula: str
    method: str
    basis: str
    charge: int
    multiplicity: int
    n_electrons: int
    defaults: Defaults
    command: str
    molecule: str | None = None
    structure_file: str | None = None  # relative to the TOML file
    file_name: str = "campaign.toml"
    md_sampler: bool = True
    copy_from: Path | None = None  # the structure file referenced as is


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _estimate_lines(plan: Plan, estimate: Estimate | None) -> list[str]:
    d = plan.defaults
    labels = (f"1 reference geometry + {d.initial_samples} initial + {d.validation_frames} validation "
              f"+ {d.max_generations} generations x {d.max_selected_per_generation} = {d.max_labels} labels")
    level = f"{plan.method}/{plan.basis}"
    if estimate is None:
        return [
            "# Cost: not measured (alflow init --no-estimate). The campaign computes at most",
            f"#   {labels}",
            f"# of {level} energy + forces; multiply by the seconds one takes on your machine.",
        ]
    return [
        f"# Cost estimate, measured by alflow init on {estimate.threads} core(s) of this machine:",
        f"#   one {level} energy + forces of the starting structure: {estimate.seconds_per_label:.2f} s "
        f"({estimate.n_scf_cycles} SCF cycles)",
        f"#   labels at most: {labels}",
        f"#   QM time at most: {estimate.qm_hours:.3g} h ({_duration(estimate.qm_hours)}) on these cores;",
        "#   plus the BFGS optimisation of the starting structure (loop.optimise_first: one",
        "#   label per step, typically 5-20). A converged campaign stops earlier; distorted",
        "#   frames may need a few more SCF cycles than the starting structure.",
    ]


def render(plan: Plan, estimate: Estimate | None) -> str:
    """The commented campaign TOML."""
    d = plan.defaults
    formula = "" if plan.formula in plan.what else f", {plan.formula}"
    temps = ", ".join(str(t) for t in d.temperatures_K)
    if plan.molecule is not None:
        system_source = [f"molecule = {_toml_str(plan.molecule)}   # an ase.build.molecule name "
                         f"(or structure_file = \"...\", a file ase.io.read reads)"]
    else:
        how = "read as is" if plan.copy_from is not None else "its first frame, written by alflow init"
        system_source = [f"structure_file = {_toml_str(str(plan.structure_file))}   # {plan.what}: {how};",
                         "#                                   relative to this file's folder"]
    if plan.md_sampler:
        initial = [
            "# Generation 0 from GFN2-xTB Langevin MD (tblite, the [xtb] extra) at 500 K, a frame every",
            "# 50 fs: on ethanol its 28 labels gave a test force MAE of 174 meV/Å against 345-382 from",
            "# harmonic normal modes (bench.data_efficiency); no reference Hessian is needed.",
            "initial_sampler = \"md\"",
            "initial_md_backend = \"xtb\"",
            "initial_temperature_K = 500",
            "initial_md_interval_steps = 100",
        ]
    else:
        initial = [
            "# Generation 0 from harmonic normal modes of the reference Hessian at 300 K (one Hessian",
            "# at the reference level, several labels' worth). With tblite installed (the [xtb] extra)",
            "# initial_sampler = \"md\" with initial_md_backend = \"xtb\" samples better and needs no Hessian.",
            "initial_sampler = \"normal_modes\"",
            "initial_temperature_K = 300",
        ]
    lines = [
        f"# Campaign {plan.name!r}: {plan.what}{formula} ({d.n_atoms} atoms, {d.dof} internal degrees of",
        f"# freedom, {plan.n_electrons} electrons) at {plan.method}/{plan.basis}, charge {plan.charge}, "
        f"multiplicity {plan.multiplicity}.",
        f"# Written by `{plan.command}`",
        f"# and validated with flows.config.load_config. Run:  alflow run {plan.file_name}",
        "# Units are in the names: Å, eV, eV/Å, fs, K. docs/your-molecule.md says what to change.",
        "#",
        *_estimate_lines(plan, estimate),
        "",
        "[campaign]",
        "# The campaign's name (its folder, database and Prefect deployments go by it) and places.",
        f"name = {_toml_str(plan.name)}",
        f"# work_dir = \"runs/{plan.name}\"  (the default; a relative path is resolved against this file's",
        "# folder); database_url defaults to sqlite:///<work_dir>/alflow.db",
        "",
        "[system]",
        "# The starting structure, its total charge (e) and spin multiplicity (2S+1).",
        *system_source,
        f"charge = {plan.charge}",
        f"multiplicity = {plan.multiplicity}",
        "",
        "[reference]",
        "# The level of theory of every label (energy + forces): PySCF, HF or any functional libxc",
        "# knows, any basis PySCF has; density fitting (RI) for J/K and gradients (docs/qm_backends.md).",
        "backend = \"pyscf\"",
        f"method = {_toml_str(plan.method)}",
        f"basis = {_toml_str(plan.basis)}",
        "density_fit = true",
        "conv_tol_Ha = 1e-9              # SCF energy convergence, Hartree",
        "max_cycle = 150",
        "# [reference.options]             # backend-specific extras, e.g. dispersion = \"d3bj\"",
        "",
        "[committee]",
        f"# {d.members} Behler-Parrinello networks trained on the same labels; their disagreement",
        "# (max_force_dev, eV/Å) is the uncertainty that drives exploration and selection.",
        f"# cutoff_A: how far (Å) each atom sees. 5.0 Å with only H-Ne, 5.5 with Na-Ar, 6.0 with",
        "# K-Kr, 6.5 beyond: bonds to heavier atoms are longer (C-F 1.35, C-Cl 1.77, C-Br 1.94,",
        f"# C-I 2.14 Å), so the same neighbour shells need ~0.5 Å more per row. Heaviest here: {d.heaviest}",
        f"# (row {d.row}). A larger cutoff costs more per atom (neighbours grow as cutoff³).",
        "# Other architectures (docs/benchmarks.md): \"mace\" (M mace-torch MACE models: 2-3x fewer",
        "# labels for the same error, far slower to train on a CPU) or \"mace-shallow\" (one MACE",
        "# backbone, a readout head per member: its MD costs one MACE pass, not M); their settings",
        "# are mace_run_train's (num_channels, max_L, correlation, num_interactions; no hidden_layers).",
        "architecture = \"bpnn\"",
        f"members = {d.members}",
        f"cutoff_A = {d.cutoff_A}",
        "hidden_layers = [64, 64]",
        "dtype = \"float64\"",
        "",
        "[explore]",
        "# Langevin MD on the committee's mean forces, one replica per temperature (K), each",
        "# `steps` x `timestep_fs` long per generation (2000 x 0.5 fs = 1 ps); a frame is scored every",
        "# record_interval_steps. Past trust_hi a replica goes on and the frame is only marked",
        "# (\"continue\", DP-GEN): with \"restart\" young committees kept every label near the start.",
        f"replicas = {len(d.temperatures_K)}",
        f"temperatures_K = [{temps}]",
        "steps = 2000",
        "timestep_fs = 0.5",
        "record_interval_steps = 10",
        "friction_per_fs = 0.01",
        "beyond_trust = \"continue\"",
        "# To go where thermal MD rarely goes, add a bias (scores stay unbiased; see",
        "# docs/your-molecule.md): bias = \"udd\" (towards committee disagreement, [explore.udd])",
        "# or bias = \"metad\" (metadynamics on every rotatable torsion, [explore.metad]).",
        "",
        "[select]",
        "# Trust window on max_force_dev (eV/Å): below trust_lo a frame is \"accurate\" (not",
        "# labelled), from trust_lo to trust_hi a candidate, above trust_hi not trusted.",
        "# Rule: ethanol's measured 0.20 / 0.50 (9 atoms, examples/ethanol.toml) times",
        f"# sqrt(ln N / ln 9) for N = {d.n_atoms} atoms: max_force_dev is a maximum over atoms, and the",
        "# largest of N similar deviations grows like sqrt(2 ln N). If after a few generations",
        "# `alflow status` shows almost no accurate frames, raise trust_lo (see docs/your-molecule.md).",
        f"trust_lo_eV_A = {d.trust_lo_eV_A}",
        f"trust_hi_eV_A = {d.trust_hi_eV_A}",
        f"# at most this many labels per generation: half the initial samples, 8 to 50",
        f"max_selected_per_generation = {d.max_selected_per_generation}",
        "min_distance_A = 0.6             # frames with atoms closer than this (Å) are dropped",
        "allow_bond_changes = false",
        "# bonded while closer than bond_scale x the sum of covalent radii (1.2: a C-H bond is",
        "# broken past 1.28 Å); frames whose bond graph changed are never labelled",
        "bond_scale = 1.2",
        "",
        "[train]",
        "# Each member: Adam on energy (per atom) and force errors, early stopping on a held-out",
        "# tenth; every member sees all frames (no bootstrap: better on ethanol, 57 vs 77 meV/Å).",
        "max_epochs = 400",
        "batch_size_frames = 8",
        "learning_rate = 3e-3",
        "min_learning_rate = 1e-5",
        "energy_weight = 0.1",
        "force_weight = 1.0",
        "dipole_weight = 0.1              # learn the labels' dipoles too (alflow spectrum); 0: no dipole",
        "validation_fraction = 0.1",
        "early_stopping_patience_epochs = 50",
        "# ema_decay = 0.99               # moving average of the weights; with architecture = \"mace\"",
        "#                                  # use it and learning_rate = 1e-2 (docs/benchmarks.md)",
        "seed = 0",
        "bootstrap = false",
        "# device = \"auto\"               # train on a GPU where torch sees one ([explore] device:",
        "#                                  # the MD's, default this); \"cpu\" by default",
        "",
        "[loop]",
        f"# initial_samples: internal degrees of freedom + 3 = {d.dof + 3}, kept within 12-100 (the",
        "# examples: 24 for ethanol, 12 for water); validation_fraction_frames more are held out",
        f"# ({d.validation_frames} here) as the fixed validation set.",
        f"initial_samples = {d.initial_samples}",
        *initial,
        "optimise_first = true            # BFGS at the reference level first (fmax 0.05 eV/Å)",
        f"max_generations = {d.max_generations}",
        f"# max_labels = {d.max_labels}            # a label budget (every QM label, generation 0's "
        "included):",
        "#                                 # the generation reaching it picks only what is left",
        f"validation_fraction_frames = {VALIDATION_FRACTION}",
        "calibration_generations = 3",
        "",
        "[loop.convergence]",
        "# Stop when this fraction of explored frames was accurate for patience_generations",
        "# generations in a row and the force MAE (eV/Å) on their fresh labels is under target.",
        "accurate_fraction = 0.90",
        "patience_generations = 2",
        "force_mae_target_eV_A = 0.05",
        "",
        "[execution]",
        "# One PySCF calculation already uses every core of a small machine: one label at a",
        "# time. On a cluster raise max_workers or use task_runner = \"dask\" (docs/deploy.md).",
        "task_runner = \"thread\"",
        "max_workers = 1",
        "label_batch_size = 4",
        "",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- command


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text.strip()


def _default_name(structure: str, source: Path | None) -> str:
    raw = source.stem if source is not None else structure
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-._")
    return name or "campaign"


def _validated(plan: Plan, text: str, atoms: Atoms) -> Any:
    """``text`` loaded by ``load_config`` from a scratch folder laid out like the output
    (the structure file beside it); ``InitError`` if it does not validate."""
    from flows.config import ConfigError, load_config

    with tempfile.TemporaryDirectory(prefix="alflow-init-") as scratch:
        config_path = Path(scratch) / f"{plan.name}.toml"
        config_path.write_text(text)
        if plan.copy_from is not None:
            shutil.copyfile(plan.copy_from, Path(scratch) / plan.copy_from.name)
        elif plan.structure_file is not None:
            _write_xyz(atoms, Path(scratch) / plan.structure_file)
        try:
            return load_config(config_path)
        except ConfigError as exc:
            problems = "; ".join(f"{where}: {what}" if where else what for where, what in exc.problems)
            raise InitError(f"the campaign file does not validate: {_first_line(problems)}") from None


def _write_xyz(atoms: Atoms, path: Path) -> None:
    import ase.io

    molecule = Atoms(numbers=atoms.numbers, positions=atoms.positions)  # no cell, no calculator
    ase.io.write(path, molecule, format="xyz")


def init_campaign(structure: str, *, method: str, basis: str, name: str | None = None, charge: int = 0,
                  multiplicity: int = 1, output: str | Path | None = None, force: bool = False,
                  estimate: bool = True, say: Callable[[str], None] = print) -> tuple[Path, Path | None, Estimate | None]:
    """Write the campaign file (and structure) for ``structure``; see the module docstring.

    Returns the config path, the structure file written (or None) and the estimate."""
    command = "alflow init " + shlex.join(
        [structure, "--method", method, "--basis", basis] + (["--name", name] if name else [])
        + (["--charge", str(charge)] if charge else [])
        + (["--multiplicity", str(multiplicity)] if multiplicity != 1 else []))
    atoms, source = read_structure(structure)
    what = source.name if source is not None else f"{structure} (an ASE molecule name)"
    if len(atoms) < 2:
        raise InitError(f"{what} has 1 atom: a single atom has no forces to learn")
    if name is None:
        name = _default_name(structure, source)
    elif not NAME_PATTERN.match(name) or len(name) > 200:
        raise InitError(f"--name {name!r}: use letters, digits, '_', '.', '-', starting with a letter or digit")
    config_path = Path(output).expanduser() if output is not None else Path(f"{name}.toml")
    structure_path, copy_from = _structure_place(atoms, source, config_path)
    protected = [source] if source is not None else []
    check_output(config_path, overwrite=force, protected=protected)
    if structure_path is not None and copy_from is None:
        check_output(structure_path, overwrite=force, protected=protected)
    formula = atoms.get_chemical_formula()
    subject = structure if source is None else f"{source.name} ({formula})"
    n_electrons = check_electrons(atoms, charge=charge, multiplicity=multiplicity, what=subject)
    check_basis(atoms, basis)
    _check_method(method, basis)
    if structure_path is not None and copy_from is None and atoms.pbc.any():
        say(f"note: the cell of {source.name} is dropped: the campaign treats {formula} as an isolated molecule")
    plan = Plan(name=name, what=what, formula=formula, method=method, basis=basis, charge=charge,
                multiplicity=multiplicity, n_electrons=n_electrons, defaults=choose_defaults(atoms),
                command=command, molecule=structure if source is None else None,
                structure_file=structure_path.name if structure_path is not None else None,
                file_name=config_path.name, md_sampler=xtb_available(), copy_from=copy_from)
    try:
        config = _validated(plan, render(plan, None), atoms)
    except InitError as exc:
        if not (plan.md_sampler and "initial_md_backend" in str(exc)):
            raise
        plan.md_sampler = False  # xTB cannot run this molecule: harmonic normal modes instead
        say("note: GFN2-xTB cannot drive the initial MD of this molecule; using initial_sampler = \"normal_modes\"")
        config = _validated(plan, render(plan, None), atoms)
    measured = None
    if estimate:
        say(f"timing one {method}/{basis} energy + forces of {formula} (skip with --no-estimate) ...")
        measured = measure(config, plan.defaults.max_labels)
    text = render(plan, measured)
    _validated(plan, text, atoms)
    written = structure_path is not None and copy_from is None
    if written:
        with replacing(structure_path, overwrite=force, protected=protected) as scratch:
            _write_xyz(atoms, scratch)
    try:
        with replacing(config_path, overwrite=force, protected=protected) as scratch:
            scratch.write_text(text)
    except BaseException:
        if written and not force:
            structure_path.unlink(missing_ok=True)  # ours: it did not exist before
        raise
    return config_path, structure_path if written else None, measured


def _structure_place(atoms: Atoms, source: Path | None, config_path: Path) -> tuple[Path | None, Path | None]:
    """Where the campaign's structure file lies and, when it is the input file itself, that
    file (referenced as is, nothing written). A file in the config's folder is referenced
    as is unless it is periodic; anything else is written, first frame only and without a
    cell, as ``<config stem>.xyz`` beside the config."""
    if source is None:
        return None, None
    if source.parent == config_path.expanduser().resolve().parent and not atoms.pbc.any():
        return config_path.parent / source.name, source
    target = config_path.with_suffix(".xyz")
    if target.resolve() == source:
        raise InitError(f"{source.name} is periodic and is where the campaign's structure file would go; "
                        f"give --output a file in another folder")
    return target, None


def _check_method(method: str, basis: str) -> None:
    from qm_backends import get_backend

    try:
        get_backend("pyscf", method=method, basis=basis)
    except (ValueError, TypeError, KeyError) as exc:
        raise InitError(_first_line(str(exc))) from None


def cmd_init(args: argparse.Namespace, console: Any) -> int:
    """``alflow init``: write the campaign file, print what was written and the estimate."""
    say = lambda line: console.print(line, highlight=False, markup=False)  # noqa: E731
    config_path, structure_path, measured = init_campaign(
        args.structure, method=args.method, basis=args.basis, name=args.name, charge=args.charge,
        multiplicity=args.multiplicity, output=args.output, force=args.force, estimate=not args.no_estimate,
        say=say)
    say(f"wrote {config_path}" + (f" and {structure_path}" if structure_path is not None else ""))
    if measured is not None:
        say(f"one label: {measured.seconds_per_label:.2f} s on {measured.threads} core(s); at most "
            f"{measured.max_labels} labels = {measured.qm_hours:.3g} h of QM ({_duration(measured.qm_hours)}, "
            f"plus the optimisation of the starting structure)")
    say(f"next: alflow run {config_path}")
    return 0
