"""Benchmark (issue 19): committees on rare events that thermal sampling seldom visits.

The rare-event set of ethanol (``bench._rare_events``: relaxed PBE/def2-SVP scans of the
hydroxyl C–C–O–H and methyl O–C–C–H torsions over 360°, and GFN2-xTB MD frames at 1000 K
and 1500 K relabelled; the level of ``test.extxyz``) scores a committee per subset
(:func:`rare_event_metrics`): force MAE (per component, meV/Å) and energy MAE (meV/atom),
and along each scan the relative-energy curve (E − E_min of the scan, reference and
committee mean, each relative to its own minimum), the RMS and largest error of those
relative energies, and the barrier height (max − min along the scan) of reference and
committee.

With ``--random``: BPNN committees trained, exactly as ``bench.data_efficiency``'s
random curve (``full`` preset: same draws of the thermal pool, same training settings,
``train_and_test``), on N labels per seed, scored on the rare-event set and on the
thermal ``test.extxyz``; with ``--architecture mace`` the same draws train the ``full``
preset's MACE committee (al-mace's: 2 float32 members, lr 1e-2, EMA). Points are cached in
``bench/data/ethanol-pbe-def2svp/rare-events-results.json`` (resumable); the committees
stay in ``committees/rare-events/`` there (not committed), and every run rescores the
cached points whose committee is on disk when the rare-event set has changed. The section
``rare-events`` of docs/benchmarks.md holds the reference barriers and the tables.

    .venv/bin/python -m bench.rare_events [--random] [--architecture mace]
        [--sizes 25 50 100 200 300] [--seeds 0 1 2] [--threads N] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms, units

from bench._rare_events import ETHANOL, SUBSETS, default_spec, rare_event_set
from bench._report import machine_line, markdown_table, write_section

RESULTS_NAME = "rare-events-results.json"
SIZES = (25, 50, 100, 200, 300)
SEEDS = (0, 1, 2)
KCAL_MOL_PER_EV = 1.0 / (units.kcal / units.mol)  # 23.06
#: experimental torsion barriers of ethanol, kcal/mol (the issue's sanity figures)
EXPERIMENT_KCAL_MOL = {"hydroxyl_scan": "~1.2-1.4", "methyl_scan": "~3.3"}
SCAN_NAMES = {"hydroxyl_scan": "hydroxyl C–C–O–H", "methyl_scan": "methyl O–C–C–H"}


# ------------------------------------------------------------------------------ metrics

def scan_frames(frames: list[Atoms]) -> dict[str, list[int]]:
    """Indices of the scan frames per scan subset, in target-angle order."""
    scans: dict[str, list[int]] = defaultdict(list)
    for i, atoms in enumerate(frames):
        if "target_deg" in atoms.info:
            scans[atoms.info["subset"]].append(i)
    return {name: sorted(idx, key=lambda i: float(frames[i].info["target_deg"])) for name, idx in sorted(scans.items())}


def scan_curve(target_deg: list[float], reference_eV: np.ndarray, model_eV: np.ndarray | None = None) -> dict:
    """Relative energies along one scan (each curve minus its own minimum, meV), and
    with ``model_eV`` their RMS/max error and both barrier heights (max − min)."""
    ref = 1000.0 * (np.asarray(reference_eV) - np.min(reference_eV))
    out: dict[str, Any] = {"target_deg": [float(t) for t in target_deg], "reference_meV": ref.tolist(),
                           "barrier_reference_meV": float(ref.max()),
                           "barrier_reference_deg": float(target_deg[int(np.argmax(ref))])}
    if model_eV is not None:
        model = 1000.0 * (np.asarray(model_eV) - np.min(model_eV))
        error = model - ref
        out.update({"model_meV": model.tolist(), "relative_rmse_meV": float(np.sqrt(np.mean(error ** 2))),
                    "relative_max_error_meV": float(np.abs(error).max()),
                    "barrier_model_meV": float(model.max()),
                    "barrier_error_meV": float(model.max() - ref.max())})
    return out


def rare_event_metrics(committee: Any, frames: list[Atoms]) -> dict:
    """The committee mean against the labels of ``frames``: ``subsets`` (each subset
    and "all": ``n_frames``, ``force_mae_eV_A``, ``force_rmse_eV_A``,
    ``energy_mae_eV_atom``) and ``scans`` (each scan subset: :func:`scan_curve`)."""
    prediction = committee.predict(frames)
    slices = prediction.frame_slices()
    f_err = prediction.forces_mean - np.concatenate([a.get_forces() for a in frames])
    e_ref = np.array([a.get_potential_energy() for a in frames])
    e_err = (prediction.energy_mean - e_ref) / prediction.n_atoms
    groups: dict[str, list[int]] = defaultdict(list)
    for i, atoms in enumerate(frames):
        groups[atoms.info["subset"]].append(i)
    groups["all"] = list(range(len(frames)))
    subsets = {}
    for name, idx in groups.items():
        forces = np.concatenate([f_err[slices[i]] for i in idx])
        subsets[name] = {"n_frames": len(idx), "force_mae_eV_A": float(np.abs(forces).mean()),
                         "force_rmse_eV_A": float(np.sqrt(np.mean(forces ** 2))),
                         "energy_mae_eV_atom": float(np.abs(e_err[idx]).mean())}
    scans = {name: scan_curve([float(frames[i].info["target_deg"]) for i in idx], e_ref[idx],
                              prediction.energy_mean[idx])
             for name, idx in scan_frames(frames).items()}
    return {"subsets": subsets, "scans": scans}


def reference_barriers(frames: list[Atoms]) -> dict[str, dict]:
    """Each scan's reference relative-energy curve and barrier (meV and kcal/mol)."""
    out = {}
    for name, idx in scan_frames(frames).items():
        curve = scan_curve([float(frames[i].info["target_deg"]) for i in idx],
                           np.array([frames[i].get_potential_energy() for i in idx]))
        curve["barrier_reference_kcal_mol"] = curve["barrier_reference_meV"] / 1000.0 * KCAL_MOL_PER_EV
        curve["dihedral_deg"] = [float(frames[i].info["dihedral_deg"]) for i in idx]
        curve["opt_steps"] = [int(frames[i].info["opt_steps"]) for i in idx]
        out[name] = curve
    return out


# ------------------------------------------------------------------------------- random

def rare_set_id(frames: list[Atoms]) -> str:
    """A short fingerprint of the rare-event set (its keys and energies): a cached point
    scored on another version of the set is rescored."""
    text = ";".join(f"{a.info['key']}:{a.get_potential_energy():.6f}" for a in frames)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def load_results(path: Path | None = None):
    """The cached points (``bench.data_efficiency.Results``, resumable) with ``drop``."""
    from bench.data_efficiency import Results

    class RareResults(Results):
        def drop(self, key: str) -> None:
            on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
            self.data = {k: v for k, v in {**self.data, **on_disk}.items() if k != key}
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            partial.replace(self.path)

    return RareResults(path or default_spec().folder / RESULTS_NAME)


def _committees_folder() -> Path:
    return default_spec().folder / "committees" / "rare-events"


#: committee name in the report per architecture key (None: the example's BPNN)
ARCHITECTURES = {None: "BPNN", "mace": "MACE"}


def _prefix(architecture: str | None) -> str:
    """The results keys' prefix of an architecture (``mace:``; none for the BPNN)."""
    return f"{architecture}:" if architecture else ""


def _architecture_of(key: str) -> str | None:
    return key.split(":", 1)[0] if ":" in key.split("/", 1)[0] else None


def _committee_path(committees: Path, architecture: str | None, seed: int, n: int) -> Path:
    return committees / f"{architecture + '-' if architecture else ''}random-seed{seed}-n{n}"


def random_points(frames: list[Atoms], results, sizes: tuple[int, ...], seeds: tuple[int, ...],
                  log: Callable[[str], None] = print, committees: Path | None = None,
                  architecture: str | None = None) -> None:
    """Committees on random pool draws (``bench.data_efficiency``'s random curve:
    same draws, settings and seeds), each scored on the thermal test set and on
    ``frames``; one cached point per seed and size. The committees are kept in
    ``committees`` (default: ``committees/rare-events/`` of the data folder, not
    committed), so that :func:`rescore` can score them on a newer version of the set.
    ``architecture``: a key of the preset's ``architectures`` (``mace``) instead of the
    example's committee; its points are keyed ``mace:random/...``."""
    from bench._learning_data import labelled_set, take
    from bench.data_efficiency import PRESETS, train_and_test, with_reference
    from nnp_core.committee import load_committee

    preset = with_reference(PRESETS["full"])
    committees = committees or _committees_folder()
    test = labelled_set(preset.data, "test")
    # the pool as data_efficiency loads it, so that the draws are the same whatever ``sizes``
    pool = labelled_set(preset.data, "pool", limit=max(*sizes, *preset.sizes))
    version = rare_set_id(frames)
    for seed in seeds:
        for n in sizes:
            key = f"{_prefix(architecture)}random/seed{seed}/n{n}"
            path = _committee_path(committees, architecture, seed, n)

            def compute(n=n, seed=seed, path=path) -> dict:
                source = pool if preset.draw_from is None else pool[:max(n, preset.draw_from)]
                thermal = train_and_test(preset, take(source, n, seed), test, seed, save_to=path,
                                         architecture=architecture)
                return {"n_labels": n, "seed": seed, "thermal": thermal, "rare_set": version,
                        **rare_event_metrics(load_committee(path), frames)}

            start = time.perf_counter()
            status = "cached" if key in results.data else "trained"
            point = results.get_or_compute(key, compute)
            log(f"{_prefix(architecture)}random seed {seed} N={n}: {_summary(point)} ({status}, "
                f"{time.perf_counter() - start:.0f} s)")


def rescore(frames: list[Atoms], results, log: Callable[[str], None] = print,
            committees: Path | None = None) -> None:
    """Score again, on ``frames``, every cached point that was scored on another version
    of the rare-event set and whose committee is still on disk; points that cannot be
    rescored are dropped (and retrained by the next ``--random`` run)."""
    from nnp_core.committee import load_committee

    committees = committees or _committees_folder()
    version = rare_set_id(frames)
    for key in sorted(results.data):
        point = results.data[key]
        if "random/" not in key or point.get("rare_set") == version:
            continue
        old = results.data.pop(key)
        path = _committee_path(committees, _architecture_of(key), old["seed"], old["n_labels"])
        if not path.is_dir():
            results.drop(key)
            log(f"{key}: scored on another rare-event set and its committee is gone: dropped")
            continue
        point = results.get_or_compute(key, lambda: {**old, "rare_set": version,
                                                     **rare_event_metrics(load_committee(path), frames)})
        log(f"{key}: rescored on the current rare-event set: {_summary(point)}")


def _summary(point: dict) -> str:
    return (f"thermal force MAE {1000 * point['thermal']['force_mae_eV_A']:.1f}, "
            + ", ".join(f"{s} {1000 * point['subsets'][s]['force_mae_eV_A']:.1f}" for s in SUBSETS
                        if s in point["subsets"]) + " meV/Å; barrier error "
            + ", ".join(f"{s} {c['barrier_error_meV']:+.0f}" for s, c in point["scans"].items()) + " meV")


# ------------------------------------------------------------------------------- report

def _pm(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = scale * np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def random_rows(results: dict[str, dict], architecture: str | None = None
                ) -> tuple[tuple[list[str], list[list]], tuple[list[str], list[list]]]:
    """Two tables, mean ± std over seeds per label count: force (and hot-frame energy)
    errors per subset, and the scan errors (barrier, relative energies), of one
    architecture's points."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for key, value in results.items():
        if key.startswith(f"{_prefix(architecture)}random/"):
            groups[int(value["n_labels"])].append(value)
    scans = sorted({s for points in groups.values() for p in points for s in p["scans"]})
    forces = (["labels", "seeds", "thermal test", "rare set (all)", *(f"{s}" for s in SUBSETS),
               "high_energy energy MAE meV/atom"], [])
    barriers = (["labels", "seeds"] + [f"{SCAN_NAMES.get(s, s)} {what}" for s in scans
                                       for what in ("barrier", "barrier error", "rel. E RMSE", "rel. E max error")],
                [])
    for n, points in sorted(groups.items()):
        row = [n, len(points), _pm([p["thermal"]["force_mae_eV_A"] for p in points], 1000)]
        row.append(_pm([p["subsets"]["all"]["force_mae_eV_A"] for p in points], 1000))
        row += [_pm([p["subsets"][s]["force_mae_eV_A"] for p in points], 1000) if all(s in p["subsets"] for p in points)
                else "" for s in SUBSETS]
        row.append(_pm([p["subsets"]["high_energy"]["energy_mae_eV_atom"] for p in points], 1000)
                   if all("high_energy" in p["subsets"] for p in points) else "")
        forces[1].append(row)
        row = [n, len(points)]
        for s in scans:
            row += [_pm([p["scans"][s][f] for p in points], 1.0, 0)
                    for f in ("barrier_model_meV", "barrier_error_meV", "relative_rmse_meV", "relative_max_error_meV")]
        barriers[1].append(row)
    return forces, barriers


def random_commands(results: dict[str, dict]) -> list[str]:
    """The ``--random`` runs that give the cached points: per architecture, sizes
    grouped by their seeds."""
    seeds: dict[tuple[str, int], set[int]] = defaultdict(set)
    for key, value in results.items():
        if "random/" in key:
            seeds[(_architecture_of(key) or "", int(value["n_labels"]))].add(int(value["seed"]))
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = defaultdict(list)
    for (architecture, n), mine in sorted(seeds.items()):
        groups[(architecture, tuple(sorted(mine)))].append(n)
    return [f".venv/bin/python -m bench.rare_events --random" + (f" --architecture {arch}" if arch else "")
            + f" --sizes {' '.join(map(str, sizes))} --seeds {' '.join(map(str, group))}"
            for (arch, group), sizes in groups.items()]


def report(frames: list[Atoms], results: dict[str, dict], command: str) -> str:
    counts = {s: sum(a.info["subset"] == s for a in frames) for s in SUBSETS}
    hot = [a for a in frames if a.info["subset"] == "high_energy"]
    barriers = reference_barriers(frames)
    spec, plan = default_spec(), ETHANOL.hot
    lines = [
        "## Rare events: torsion barriers and hot frames (ethanol, PBE/def2-SVP)", "",
        " and ".join(f"`{c}`" for c in random_commands(results) or [command]), "",
        machine_line(), "",
        f"Rare-event set (`bench/data/{spec.name}/rare-events.extxyz`, built by `.venv/bin/python -m "
        "bench._rare_events`), labelled at the level of the thermal test set: relaxed scans (every other "
        "coordinate optimised with the dihedral held by ASE `FixInternals`, BFGS to fmax 0.05 eV/Å, each point "
        "from its neighbour) of the hydroxyl C–C–O–H and methyl O–C–C–H dihedrals every 30° over 360° "
        f"({counts['hydroxyl_scan']} and {counts['methyl_scan']} points), and {counts['high_energy']} frames of "
        "GFN2-xTB Langevin MD at "
        + " and ".join(f"{t:g} K" for t in sorted({float(a.info['temperature_K']) for a in hot}))
        + f" (nominal; {len(plan.seeds)} seeds each, a frame every {plan.interval_steps * 0.5:g} fs after "
        f"{plan.equilibration_steps * 0.5 / 1000:g} ps), relabelled"
        + (f" ({sum(not a.info.get('bonds_intact', True) for a in hot)} of them with a bond stretched past "
           "`nnp_core.sanity.bond_graph`'s 1.2 × covalent radii)"
           if any(not a.info.get("bonds_intact", True) for a in hot) else "") + ".", "",
        "Reference barriers (max − min of each relaxed scan):", "",
        markdown_table(["torsion", "barrier meV", "barrier kcal/mol", "minimum at", "maximum at",
                        "experiment kcal/mol", "BFGS steps per point (0°, 30°, ...)"],
                       [[SCAN_NAMES.get(name, name), f"{c['barrier_reference_meV']:.1f}",
                         f"{c['barrier_reference_kcal_mol']:.2f}",
                         f"{c['target_deg'][int(np.argmin(c['reference_meV']))]:g}°", f"{c['barrier_reference_deg']:g}°",
                         EXPERIMENT_KCAL_MOL.get(name, ""), " ".join(map(str, c["opt_steps"]))]
                        for name, c in barriers.items()]), "",
        "Relative energies along the scans (meV, reference):", "",
        markdown_table(["dihedral", *(SCAN_NAMES.get(n, n) for n in barriers)],
                       [[f"{t:g}°", *(f"{c['reference_meV'][k]:.1f}" for c in barriers.values())]
                        for k, t in enumerate(next(iter(barriers.values()))["target_deg"])] if barriers else []), "",
    ]
    for architecture, name in ARCHITECTURES.items():
        (force_header, force_rows), (scan_header, scan_rows) = random_rows(results, architecture)
        if not force_rows:
            continue
        lines += [
            "`--random`: BPNN committees trained from scratch on N random thermal pool labels (the draws and "
            "seeds of `bench.data_efficiency`'s random curve, trained by its `train_and_test` with the current "
            "`[committee]` and `[train]` of `examples/ethanol.toml`, so the thermal column is re-measured here "
            "rather than copied from the data-efficiency table), mean ± std over seeds. Force MAE per component "
            "(thermal test: `test.extxyz`). Scan columns: the committee's barrier (max − min along the scan), "
            "its error against the reference barrier, and the RMS and largest error of the relative energies "
            "along the scan (each curve relative to its own minimum)." if architecture is None else
            f"`--random --architecture {architecture}`: the same draws, seeds and columns with the {name} "
            "committee of `bench.data_efficiency`'s al-mace campaigns (2 float32 members, 32 channels, max_L 1, "
            "r_max 5 Å, correlation 3, 2 interactions; lr 1e-2, EMA 0.99, at most 100 epochs), from scratch.", "",
            f"{name} force MAE (meV/Å) by subset:", "",
            markdown_table(force_header, force_rows), "",
            f"{name} torsion scans (meV; reference barriers above):", "",
            markdown_table(scan_header, scan_rows), "",
        ]
    return "\n".join(lines)


def run(*, random: bool = False, sizes: tuple[int, ...] = SIZES, seeds: tuple[int, ...] = SEEDS,
        architecture: str | None = None, write: bool = True, benchmarks_md: Path | None = None, log: Callable[[str], None] = print,
        command: str = ".venv/bin/python -m bench.rare_events") -> str:
    spec = default_spec()
    frames = rare_event_set(spec)
    if not frames:
        raise SystemExit(f"no rare-event frames in {spec.folder}: run .venv/bin/python -m bench._rare_events")
    results = load_results(spec.folder / RESULTS_NAME)
    rescore(frames, results, log)
    if random:
        random_points(frames, results, sizes, seeds, log, architecture=architecture)
    text = report(frames, results.data, command)
    if write:
        write_section("rare-events", text, **({"path": benchmarks_md} if benchmarks_md else {}))
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random", action="store_true", help="train (or read) the random-draw committees")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--architecture", choices=[a for a in ARCHITECTURES if a],
                        help="train the random draws' committees with this architecture (default: the example's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="print, don't touch docs/")
    args = parser.parse_args(argv)
    if min(args.sizes) < 2:
        parser.error(f"--sizes: a committee needs at least 2 frames (got {args.sizes})")
    if args.architecture and not args.random:
        parser.error("--architecture: only with --random (it picks the random draws' committee)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    command = ".venv/bin/python -m bench.rare_events" + (
        " --random" + (f" --architecture {args.architecture}" if args.architecture else "")
        + f" --sizes {' '.join(map(str, args.sizes))} --seeds {' '.join(map(str, args.seeds))}"
        if args.random else "")
    text = run(random=args.random, sizes=tuple(args.sizes), seeds=tuple(args.seeds),
               architecture=args.architecture, write=not args.no_write,
               log=lambda line: print(line, flush=True), command=command)
    print(text)
    return text


if __name__ == "__main__":
    main()
