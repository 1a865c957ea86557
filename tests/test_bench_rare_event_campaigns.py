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
