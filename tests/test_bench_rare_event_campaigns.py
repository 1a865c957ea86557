"""bench.rare_event_campaigns' table: one row per generation, mean ± std over campaign seeds."""

from __future__ import annotations

from bench.rare_event_campaigns import SUBSETS, variant_rows


def _point(seed: int, generation: int, n_labels: int, force_mae: float, barrier: float, **extra) -> dict:
    subsets = {s: {"force_mae_eV_A": force_mae} for s in ("all", *SUBSETS)}
    scans = {s: {"barrier_error_meV": barrier, "relative_rmse_meV": abs(barrier)}
             for s in ("hydroxyl_scan", "methyl_scan")}
    return {"variant": "v", "seed": seed, "generation": generation, "n_labels": n_labels,
            "thermal": {"force_mae_eV_A": force_mae / 2}, "subsets": subsets, "scans": scans, **extra}


def test_one_seed_gives_one_plain_row_per_generation() -> None:
    rows = variant_rows("al-x", [_point(0, 0, 28, 0.2, -10.0), _point(0, 1, 53, 0.1, 4.0,
                                                                          stable_seeds_800K=5, stability_ps=20.0)])
    assert [r[0] for r in rows] == ["al-x generation 0", "al-x generation 1 (800 K: 5/5 stable, 20.0 ps)"]
    assert rows[0][1:4] == [28, "100.0", "200.0"]
    assert rows[1][-4] == "4.0"


def test_seeds_are_averaged_per_generation_with_their_label_range() -> None:
    points = [_point(0, 0, 28, 0.2, -10.0), _point(1, 0, 28, 0.4, 10.0),
              _point(0, 1, 53, 0.1, 4.0), _point(1, 1, 51, 0.3, 6.0),
              # the seed-0 campaign ran one generation longer
              _point(0, 2, 78, 0.05, 1.0, stable_seeds_800K=4, stability_ps=20.0)]
    rows = {r[0]: r for r in variant_rows("al-x", points)}
    g0, g1 = rows["al-x generation 0 (2 seeds)"], rows["al-x generation 1 (2 seeds)"]
    assert g0[1] == 28 and g1[1] == "51-53"
    # thermal = force/2: mean 150 ± 50 meV/Å at generation 0; rare set 300 ± 100
    assert g0[2:4] == ["150.0 ± 50.0", "300.0 ± 100.0"]
    assert g0[-4] == "0.0 ± 10.0"  # O-H barrier error, meV
    assert "al-x generation 2 (1 of 2 seeds) (800 K: 4/5 stable, 20.0 ps)" in rows
    assert rows["al-x generation 2 (1 of 2 seeds) (800 K: 4/5 stable, 20.0 ps)"][2] == "25.0"


def test_high_energy_judgement_counts_the_window_and_the_bond_filter(tmp_path) -> None:
    from types import SimpleNamespace

    import ase.io
    import numpy as np
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from bench.rare_event_campaigns import high_energy_judgement

    minimum = molecule("H2O")
    ase.io.write(tmp_path / "pbe-minimum.extxyz", minimum)
    frames = []
    for i, stretch in enumerate((0.0, 0.05, 0.1, 1.0)):  # the last one breaks an O-H bond
        atoms = minimum.copy()
        atoms.positions[1] += [0.0, stretch, 0.0]
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.full((3, 3), 0.1 * i))
        atoms.info["subset"] = "high_energy"
        frames.append(atoms)
    scan = minimum.copy()
    scan.info["subset"] = "hydroxyl_scan"
    frames.append(scan)  # not judged

    class Committee:
        def predict(self, judged):
            assert len(judged) == 4
            return SimpleNamespace(forces_mean=np.zeros((12, 3)), max_force_dev=np.array([0.1, 0.15, 0.3, 0.7]),
                                   frame_slices=lambda: [slice(3 * i, 3 * i + 3) for i in range(4)])

    judged = high_energy_judgement(Committee(), frames, tmp_path)
    assert judged["n_frames"] == 4
    assert (judged["below_trust_lo"], judged["in_window"], judged["past_trust_hi"]) == (0.5, 0.25, 0.25)
    assert judged["bond_graph_changed"] == 0.25
    # per-atom error norms 0.1·i·√3: median of (0, 0.17, 0.35, 0.52) and of the devs
    assert np.isclose(judged["median_max_force_error"], 0.15 * np.sqrt(3))
    assert np.isclose(judged["median_max_force_dev"], 0.225)
    assert np.isclose(judged["spearman"], 1.0)
    # force errors 0.1·i on every component: the broken frame (i = 3) alone, the others' mean
    assert np.isclose(judged["force_mae_bond_graph_changed_eV_A"], 0.3)
    assert np.isclose(judged["force_mae_bond_graph_kept_eV_A"], 0.1)


def test_a_campaign_without_its_folder_is_reported_from_the_cache(tmp_path) -> None:
    # campaign folders are not committed; their scored generations are, so a fresh checkout still reports them
    from bench.rare_event_campaigns import campaign_points

    cache = {"al-x/seed1/g1": _point(1, 1, 53, 0.1, 2.0), "al-x/seed1/g0": _point(1, 0, 28, 0.2, 3.0),
             "al-x/seed1/retrained-bootstrap0": {"bootstrap": False}, "al-x/seed0/g0": _point(0, 0, 28, 0.3, 1.0),
             "al-xy/seed1/g0": _point(1, 0, 28, 0.4, 1.0)}
    logged = []
    points = campaign_points("al-x", tmp_path, frames=[], test=[], cache=cache, stability_ps=0.0,
                             log=logged.append, seed=1)
    assert [p["generation"] for p in points] == [0, 1]
    assert [p["subsets"]["all"]["force_mae_eV_A"] for p in points] == [0.2, 0.1]
    assert all(p["seed"] == 1 and p["variant"] == "al-x" for p in points)
    assert "2 generations from the cache" in logged[0]
    assert campaign_points("al-z", tmp_path, [], [], cache, 0.0, log=logged.append, seed=0) == []


def test_seeds_with_different_stability_runs_each_show_their_own_duration() -> None:
    points = [_point(0, 3, 103, 0.1, 1.0, stable_seeds_800K=5, stability_ps=100.0),
              _point(1, 3, 103, 0.1, 1.0, stable_seeds_800K=4, stability_ps=20.0)]
    (name, *_), = variant_rows("al-x", points)
    assert name == "al-x generation 3 (2 seeds) (800 K: 5/5 over 100.0 ps, 4/5 over 20.0 ps stable)"


def test_equal_label_counts_take_each_seeds_nearest_generation_against_random_of_its_architecture() -> None:
    from bench.rare_event_campaigns import equal_label_rows

    points = [_point(0, 1, 53, 0.2, 5.0), _point(0, 2, 78, 0.15, 5.0), _point(0, 3, 103, 0.1, 5.0),
              _point(1, 1, 53, 0.3, 5.0), _point(1, 3, 98, 0.12, 5.0)]
    random = {"random/seed0/n100": _point(0, 0, 100, 0.1, 0.0), "random/seed1/n100": _point(1, 0, 100, 0.14, 0.0),
              "mace:random/seed0/n100": _point(0, 0, 100, 0.01, 0.0)}
    rows = equal_label_rows({"al-thermal": points}, random, sizes=(100, 200))
    campaign, base = rows  # nothing within 10% of 200 labels
    assert campaign[:4] == [100, "al-thermal", 2, "98-103"]
    assert campaign[5] == "110.0 ± 10.0"  # rare set: 100 and 120 meV/Å
    assert campaign[6] == "-8%"  # against the BPNN draws' 120, never the MACE draw's 10
    assert base[:4] == [100, "random sampling", 2, 100] and base[5] == "120.0 ± 20.0"
    # better than the only random size on both tests: more random labels than it has
    assert campaign[-2:] == ["> 100", "> 100"] and base[-2:] == ["", ""]


def test_random_equivalent_labels_interpolate_the_random_curve_log_log() -> None:
    from bench.rare_event_campaigns import _rare, _thermal, random_equivalent

    random = {f"mace:random/seed{s}/n{n}": _point(s, 0, n, mae, 0.0)
              for s in (0, 1) for n, mae in ((100, 0.08), (400, 0.02))}
    random["random/seed0/n100"] = _point(0, 0, 100, 0.5, 0.0)
    # rare 80 -> 20 meV/Å between 100 and 400 labels: 40 meV/Å halfway in log-log, at 200 labels
    assert random_equivalent(random, "mace", 40.0, _rare) == "200"
    assert random_equivalent(random, "mace", 10.0, _thermal) == "400"  # thermal is half the rare error here
    assert random_equivalent(random, "mace", 90.0, _rare) == "≤ 100"
    assert random_equivalent(random, "mace", 15.0, _rare) == "> 400"
    assert random_equivalent(random, "painn", 15.0, _rare) == ""


def test_targets_are_judged_on_label_counts_not_generation_index() -> None:
    from bench.rare_event_campaigns import target_rows, within_budget

    points = [_point(0, 1, 53, 0.2, 20.0), _point(1, 1, 53, 0.2, 5.0),
              _point(0, 2, 128, 0.09, 5.0), _point(1, 2, 128, 0.13, -12.0),  # mean 110: not yet 100
              _point(0, 3, 153, 0.08, 5.0, stable_seeds_800K=5, stability_ps=20.0),
              _point(1, 3, 150, 0.1, 5.0, stable_seeds_800K=3, stability_ps=20.0)]
    random = {f"random/seed{s}/n300": _point(s, 0, 300, 0.1, 0.0) for s in (0, 1)}
    random["random/seed0/n50"] = _point(0, 0, 50, 0.16, 0.0)
    # within 150 labels seed 0 holds generation 2 (128 labels) and seed 1 generation 3 (150):
    # (90 + 100) / 2 = 95 meets 100, which a mean by generation index (110, then 90 at 153) would miss
    assert [p["generation"] for p in within_budget(points, 150)] == [2, 3]
    [row] = target_rows({"al-x": points}, random)
    assert row[:3] == ["al-x", 2, "yes: 95.0 at ≤ 150 labels (128/150) vs 100.0"]
    assert row[3] == "50: +25%"  # thermal 100 against 80 meV/Å
    assert row[4] == "128 / 53; 2/2 at the last"  # seed 1 within 10 meV at 53, out at 128, back at 150
    assert row[5] == "5/5 (20.0 ps), 3/5 (20.0 ps)"
    random["random/seed0/n150"] = _point(0, 0, 150, 0.06, 0.0)  # thermal 30: the campaigns' 153/150 hold 40 and 50
    [row] = target_rows({"al-x": points}, random)
    assert row[3] == "50: +25%, 150: +50%"  # every count random has, not only 50/100/200
    [row] = target_rows({"al-x": points[:4]}, random)
    assert row[2] == "no seed's campaign has come to 135 labels yet: seed 0 at 128, seed 1 at 128"
    assert row[5] == "not measured"
    late = [{**p, "n_labels": 153} if p["generation"] == 3 else p for p in points]
    assert target_rows({"al-x": late}, random)[0][2] == "no: 110.0 at ≤ 150 labels (128/128) vs 100.0; reached at 153 labels"
    # a seed that stopped early only counts at budgets its generations come near
    short = [p for p in late if not (p["seed"] == 0 and p["generation"] == 3)]
    assert target_rows({"al-x": short}, random)[0][2] == (
        "no: 130.0 at ≤ 150 labels (128) vs 100.0; never reached; not counted: seed 0 at 128 labels")
    # a seed that has only just started is named, never averaged in
    started = points + [_point(2, 0, 28, 0.5, 50.0)]
    assert target_rows({"al-x": started}, random)[0][2] == (
        "yes: 95.0 at ≤ 150 labels (128/150) vs 100.0; not counted: seed 2 at 28 labels")


def test_a_campaign_that_has_just_started_has_no_points_yet(tmp_path, monkeypatch) -> None:
    import bench.data_efficiency
    from bench.rare_event_campaigns import campaign_points

    folder = tmp_path / "al-x-seed1"
    folder.mkdir()
    (folder / "alflow.db").write_bytes(b"")
    monkeypatch.setattr(bench.data_efficiency, "campaign_frames", lambda path: ([], {}))
    logged = []
    assert campaign_points("al-x", tmp_path, [], [], {}, 0.0, log=logged.append, seed=1) == []
    assert "no committee yet" in logged[0]


def test_retraining_a_campaigns_labels_uses_the_recipe_of_its_architectures_random_draws(tmp_path,
                                                                                         monkeypatch) -> None:
    """A MACE campaign's labels are retrained as the MACE random draws were (``mace``), a
    BPNN campaign's as the BPNN draws; only labels up to the last committee's generation,
    bootstrap only where asked, results cached per campaign and bootstrap."""
    from ase import Atoms

    import bench.data_efficiency
    import bench.rare_events
    import nnp_core.committee
    from bench import rare_event_campaigns

    labelled = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], info={"generation": g}) for g in (0, 0, 1, 2)]
    calls = []

    def fake_train(preset, frames, test, seed, save_to=None, architecture=None, train_changes=None):
        calls.append((len(frames), seed, architecture, train_changes))
        return {"force_mae_eV_A": 0.02}

    monkeypatch.setattr(bench.data_efficiency, "campaign_frames", lambda path: (labelled, {0: "c0", 1: "c1"}))
    monkeypatch.setattr(bench.data_efficiency, "train_and_test", fake_train)
    monkeypatch.setattr(nnp_core.committee, "load_committee", lambda path: "retrained")
    monkeypatch.setattr(bench.rare_events, "rare_event_metrics", lambda committee, frames: {
        "subsets": {"all": {"force_mae_eV_A": 0.04}}, "scans": {}})
    monkeypatch.setattr(rare_event_campaigns, "high_energy_judgement", lambda committee, frames, data_dir: {})
    for variant in ("al-mace-stretch", "al-thermal"):
        (tmp_path / f"{variant}-seed1").mkdir()
        (tmp_path / f"{variant}-seed1" / "alflow.db").write_bytes(b"")
    cache, saved = {}, []
    mace = rare_event_campaigns.retrained_points("al-mace-stretch", 1, tmp_path, [], [], cache, saved.append,
                                                 log=lambda line: None, bootstraps=(False,))
    assert calls == [(3, 1, "mace", {"bootstrap": False})]
    assert [p["architecture"] for p in mace] == ["mace"] and mace[0]["n_labels"] == 3
    assert saved == ["al-mace-stretch/seed1/retrained-bootstrap0"]
    bpnn = rare_event_campaigns.retrained_points("al-thermal", 1, tmp_path, [], [], cache, saved.append,
                                                 log=lambda line: None)
    assert calls[1:] == [(3, 1, None, {"bootstrap": False}), (3, 1, None, {"bootstrap": True})]
    assert [p["bootstrap"] for p in bpnn] == [False, True] and {p["architecture"] for p in bpnn} == {"bpnn"}
    # cached: asking again trains nothing
    rare_event_campaigns.retrained_points("al-mace-stretch", 1, tmp_path, [], [], cache, saved.append,
                                          log=lambda line: None, bootstraps=(False,))
    assert len(calls) == 3


def test_no_bootstrap_without_retrain_is_refused_in_one_line(capsys) -> None:
    import pytest

    from bench.rare_event_campaigns import main

    with pytest.raises(SystemExit) as stopped:
        main(["--no-bootstrap", "--no-write"])
    assert stopped.value.code == 2
    assert "--no-bootstrap only applies with --retrain" in capsys.readouterr().err.splitlines()[-1]
