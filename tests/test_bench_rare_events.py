"""The rare-event test set of ethanol (issue 19): the committed cache, the relaxed-scan
protocol (on ethanol with ASE's EMT) and the metrics against a direct calculation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT

from bench import rare_events
from bench._rare_events import (ETHANOL, FAILED_NAME, SUBSETS, Scan, default_spec, moving_group,
                                planned_keys, rare_event_set, relaxed_point, relaxed_scan, scan_order)
from nnp_core.committee import Committee


def _angle_gap(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def frames():
    return rare_event_set()


def test_the_committed_cache_holds_every_planned_subset(frames) -> None:
    folder = default_spec().folder
    failed = json.loads((folder / FAILED_NAME).read_text()) if (folder / FAILED_NAME).exists() else {}
    keys = [a.info["key"] for a in frames]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(k for k in planned_keys(ETHANOL) if k not in failed)
    counts = {s: sum(a.info["subset"] == s for a in frames) for s in SUBSETS}
    assert counts["hydroxyl_scan"] == counts["methyl_scan"] == 12, "both scans complete"
    hot = ETHANOL.hot
    planned_hot = len(hot.temperatures_K) * len(hot.seeds) * hot.frames_per_run
    assert planned_hot == 48 and counts["high_energy"] == planned_hot - sum("hot" in k for k in failed)
    assert counts["high_energy"] >= 40
    for atoms in frames:  # labelled like test.extxyz
        assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (9, 3)
        assert np.isfinite(atoms.get_forces()).all() and atoms.get_dipole_moment().shape == (3,)


def test_each_scan_point_sits_at_its_target_dihedral(frames) -> None:
    for scan in ETHANOL.scans:
        points = [a for a in frames if a.info["subset"] == scan.subset]
        assert sorted(float(a.info["target_deg"]) for a in points) == scan.targets
        for atoms in points:
            target = float(atoms.info["target_deg"])
            assert atoms.info["key"] == scan.key(target)
            assert list(atoms.info["atoms_dihedral"]) == list(scan.atoms)
            assert _angle_gap(atoms.get_dihedral(*scan.atoms), target) < 1.0  # measured on the geometry
            assert abs(float(atoms.info["dihedral_deg"]) - target) < 1.0
            assert atoms.info["opt_converged"] and atoms.info["opt_steps"] >= 0


def test_scan_energies_are_finite_and_relative_to_their_minimum(frames) -> None:
    barriers = rare_events.reference_barriers(frames)
    assert set(barriers) == {"hydroxyl_scan", "methyl_scan"}
    for curve in barriers.values():
        relative = np.array(curve["reference_meV"])
        assert np.isfinite(relative).all() and relative.min() == 0.0 and (relative >= 0).all()
        assert curve["barrier_reference_meV"] == relative.max() > 0
    # torsion barriers of ethanol are tens to ~150 meV (experiment ~55 and ~145 meV)
    assert 20 < barriers["hydroxyl_scan"]["barrier_reference_meV"] < 120
    assert 80 < barriers["methyl_scan"]["barrier_reference_meV"] < 250


def test_metrics_equal_a_direct_calculation() -> None:
    water = molecule("H2O")
    frames = []
    for k, (subset, target) in enumerate([("hydroxyl_scan", 0.0), ("hydroxyl_scan", 30.0),
                                          ("high_energy", None)]):
        atoms = water.copy()
        atoms.positions += np.random.default_rng(k).normal(0, 0.05, atoms.positions.shape)
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms.calc = SinglePointCalculator(atoms, energy=-10.0 + 0.1 * k,
                                           forces=np.random.default_rng(10 + k).normal(0, 1, (3, 3)))
        atoms.info.update({"subset": subset, **({"target_deg": target} if target is not None else {})})
        frames.append(atoms)
    committee = Committee.create(n_members=2, seed=0, elements=[1, 8], hidden_layers=[8])
    metrics = rare_events.rare_event_metrics(committee, frames)

    prediction = committee.predict(frames)
    f_model = prediction.forces_mean.reshape(3, 3, 3)
    f_ref = np.array([a.get_forces() for a in frames])
    e_model = prediction.energy_mean
    e_ref = np.array([a.get_potential_energy() for a in frames])
    scan = metrics["subsets"]["hydroxyl_scan"]
    assert scan["n_frames"] == 2
    assert scan["force_mae_eV_A"] == pytest.approx(np.abs(f_model[:2] - f_ref[:2]).mean())
    assert scan["force_rmse_eV_A"] == pytest.approx(np.sqrt(((f_model[:2] - f_ref[:2]) ** 2).mean()))
    assert scan["energy_mae_eV_atom"] == pytest.approx(np.abs(e_model[:2] - e_ref[:2]).mean() / 3)
    assert metrics["subsets"]["high_energy"]["force_mae_eV_A"] == pytest.approx(np.abs(f_model[2] - f_ref[2]).mean())
    assert metrics["subsets"]["all"]["force_mae_eV_A"] == pytest.approx(np.abs(f_model - f_ref).mean())
    curve = metrics["scans"]["hydroxyl_scan"]
    ref = 1000 * (e_ref[:2] - e_ref[:2].min())
    model = 1000 * (e_model[:2] - e_model[:2].min())
    assert curve["target_deg"] == [0.0, 30.0]
    assert curve["reference_meV"] == pytest.approx(ref) and curve["model_meV"] == pytest.approx(model)
    assert curve["relative_rmse_meV"] == pytest.approx(np.sqrt(np.mean((model - ref) ** 2)))
    assert curve["relative_max_error_meV"] == pytest.approx(np.abs(model - ref).max())
    assert curve["barrier_reference_meV"] == pytest.approx(100.0)  # 0.1 eV apart
    assert curve["barrier_error_meV"] == pytest.approx(model.max() - ref.max())
    assert "high_energy" not in metrics["scans"]


def test_scan_order_walks_both_ways_from_the_minimum() -> None:
    targets = [float(t) for t in range(0, 360, 30)]
    order = scan_order(targets, 185.0)
    assert order[0] == (6, None)  # 180 first
    assert sorted(i for i, _ in order) == list(range(12))
    seen = set()
    for index, source in order:  # every point starts from a neighbour already done
        assert source is None or (source in seen and min(abs(index - source), 12 - abs(index - source)) == 1)
        seen.add(index)


def test_relaxed_scan_holds_the_dihedral_while_relaxing_the_rest() -> None:
    ethanol = molecule("CH3CH2OH")
    scan = Scan("hydroxyl_scan", "ohscan", (0, 1, 2, 3), ("C", "C", "O", "H"), step_deg=180.0)
    assert moving_group(ethanol, 1, 2).nonzero()[0].tolist() == [2, 3]  # O and its H turn
    plan = ETHANOL.__class__(scans=(scan,), fmax_eV_A=0.1, max_opt_steps=30)

    # one point: turned to the target, then relaxed with the dihedral held
    start = ethanol.copy()
    calc = EMT()
    frame, steps, converged, fmax = relaxed_point(start, scan.atoms, 90.0, calc, moving=moving_group(start, 1, 2),
                                                  fmax=0.1, steps=30)
    assert _angle_gap(frame.get_dihedral(*scan.atoms), 90.0) < 1e-3
    assert steps > 0 and frame.constraints == []
    rigid = start.copy()
    rigid.set_dihedral(*scan.atoms, 90.0, mask=moving_group(start, 1, 2))
    rigid.calc = EMT()
    assert frame.get_potential_energy() < rigid.get_potential_energy()  # the rest relaxed
    assert np.abs(frame.positions - rigid.positions).max() > 1e-3
    # the label is the unconstrained force of the final geometry, not the projected one
    check = frame.copy()
    check.calc = EMT()
    assert frame.get_forces() == pytest.approx(check.get_forces(), abs=1e-10)
    assert converged == (fmax < 0.1)

    # two points, resumable: a point already done is neither redone nor reported again
    reported = []
    done = relaxed_scan(ethanol, scan, EMT, plan=plan, on_point=lambda key, atoms, error: reported.append(key))
    assert sorted(done) == ["rare-ohscan-000", "rare-ohscan-180"] and len(reported) == 2
    for key, target in (("rare-ohscan-000", 0.0), ("rare-ohscan-180", 180.0)):
        assert _angle_gap(done[key].get_dihedral(*scan.atoms), target) < 1e-3
        assert done[key].info["subset"] == "hydroxyl_scan" and done[key].info["opt_steps"] >= 0
    again = []
    kept = {"rare-ohscan-180": done["rare-ohscan-180"]}
    relaxed_scan(ethanol, scan, EMT, plan=plan, done=kept, on_point=lambda key, atoms, error: again.append(key))
    assert again == ["rare-ohscan-000"]


def test_cached_points_are_rescored_on_a_new_set_and_reported(frames, tmp_path) -> None:
    """A point scored on another version of the set is rescored from its kept committee
    (or dropped when the committee is gone); the report holds both tables."""
    committee = Committee.create(n_members=2, seed=0, elements=[1, 6, 8], hidden_layers=[8])
    committee.save(tmp_path / "committees" / "random-seed0-n25")
    stale = {"n_labels": 25, "seed": 0, "thermal": {"force_mae_eV_A": 0.2}, "rare_set": "old",
             **rare_events.rare_event_metrics(committee, frames[:3])}
    results = rare_events.load_results(tmp_path / "results.json")
    results.get_or_compute("random/seed0/n25", lambda: stale)
    results.get_or_compute("random/seed1/n25", lambda: {**stale, "seed": 1})  # no committee on disk
    rare_events.rescore(frames, results, log=lambda line: None, committees=tmp_path / "committees")
    on_disk = rare_events.load_results(tmp_path / "results.json").data
    assert set(on_disk) == {"random/seed0/n25"}
    point = on_disk["random/seed0/n25"]
    assert point["rare_set"] == rare_events.rare_set_id(frames) and point["thermal"] == {"force_mae_eV_A": 0.2}
    assert point["subsets"]["all"]["n_frames"] == len(frames)
    fresh = rare_events.rare_event_metrics(committee, frames)["subsets"]
    assert point["subsets"].keys() == fresh.keys()
    for name, values in fresh.items():
        assert point["subsets"][name] == pytest.approx(values)

    text = rare_events.report(frames, on_disk, "cmd")
    assert "`.venv/bin/python -m bench.rare_events --random --sizes 25 --seeds 0`" in text
    assert "| hydroxyl C–C–O–H |" in text and "| methyl O–C–C–H |" in text
    assert "| 25 | 1 | 200.0 ± 0.0 |" in text


def test_mace_points_have_their_own_committees_commands_and_tables(frames, tmp_path) -> None:
    """``--architecture mace`` points are keyed ``mace:random/...``, rescored from their own
    committee folder (never the BPNN's of the same draw), and reported in their own tables
    next to the BPNN's, with the command that makes them."""
    bpnn = Committee.create(n_members=2, seed=0, elements=[1, 6, 8], hidden_layers=[8])
    other = Committee.create(n_members=2, seed=5, elements=[1, 6, 8], hidden_layers=[8])
    bpnn.save(tmp_path / "committees" / "random-seed0-n25")
    other.save(tmp_path / "committees" / "mace-random-seed0-n25")
    stale = {"n_labels": 25, "seed": 0, "thermal": {"force_mae_eV_A": 0.2}, "rare_set": "old",
             **rare_events.rare_event_metrics(bpnn, frames[:3])}
    results = rare_events.load_results(tmp_path / "results.json")
    results.get_or_compute("random/seed0/n25", lambda: stale)
    results.get_or_compute("mace:random/seed0/n25", lambda: {**stale, "thermal": {"force_mae_eV_A": 0.1}})
    rare_events.rescore(frames, results, log=lambda line: None, committees=tmp_path / "committees")
    on_disk = rare_events.load_results(tmp_path / "results.json").data
    assert set(on_disk) == {"random/seed0/n25", "mace:random/seed0/n25"}
    for key, committee in (("random/seed0/n25", bpnn), ("mace:random/seed0/n25", other)):
        fresh = rare_events.rare_event_metrics(committee, frames)["subsets"]["all"]["force_mae_eV_A"]
        assert on_disk[key]["subsets"]["all"]["force_mae_eV_A"] == pytest.approx(fresh)
    assert (on_disk["random/seed0/n25"]["subsets"]["all"]["force_mae_eV_A"]
            != pytest.approx(on_disk["mace:random/seed0/n25"]["subsets"]["all"]["force_mae_eV_A"]))

    text = rare_events.report(frames, on_disk, "cmd")
    assert "`.venv/bin/python -m bench.rare_events --random --sizes 25 --seeds 0`" in text
    assert "`.venv/bin/python -m bench.rare_events --random --architecture mace --sizes 25 --seeds 0`" in text
    bpnn_table, mace_table = text.split("BPNN force MAE")[1], text.split("MACE force MAE")[1]
    assert "| 25 | 1 | 200.0 ± 0.0 |" in bpnn_table.split("MACE force MAE")[0]
    assert "| 25 | 1 | 100.0 ± 0.0 |" in mace_table


def test_architecture_needs_random(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rare_events.main(["--architecture", "mace"])
    assert exit_info.value.code == 2
    assert "--architecture: only with --random" in capsys.readouterr().err
