"""bench.hot_share (issue 19): the committed hot pool is not the rare set, keeps its bonds,
and is labelled like it; a point's training set holds exactly K hot frames."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from bench import hot_share
from bench._learning_data import take
from bench._rare_events import default_spec, rare_event_set
from nnp_core.sanity import bond_graph


@pytest.fixture(scope="module")
def hot_pool():
    path = default_spec().folder / f"{hot_share.POOL_NAME}.extxyz"
    if not path.exists():
        pytest.skip("hot pool not built (bench.hot_share)")
    return ase.io.read(path, index=":")


def test_the_hot_pool_shares_no_frame_with_the_rare_set_and_keeps_its_bonds(hot_pool) -> None:
    folder = default_spec().folder
    start = bond_graph(ase.io.read(folder / "geometry.xyz"))
    rare = [a.positions for a in rare_event_set()]
    for atoms in hot_pool:
        assert bond_graph(atoms) == start
        assert min(np.abs(atoms.positions - r).max() for r in rare) > 0.05
        assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()
    keys = [a.info["key"] for a in hot_pool]
    assert len(set(keys)) == len(keys) and all(k.startswith("hot-pool-md") for k in keys)
    assert {k.split("-")[2] for k in keys} == {"md1000", "md1500"}


def test_a_point_draws_k_hot_frames_and_the_rest_from_the_thermal_pool(hot_pool) -> None:
    thermal = [a.copy() for a in hot_pool[:40]]
    for atoms in thermal:
        atoms.info["key"] = "pool-" + atoms.info["key"]
    frames = take(thermal, 30 - 10, 0) + take(hot_pool, 10, 0)
    assert sum(a.info["key"].startswith("hot-pool") for a in frames) == 10
    assert len({a.info["key"] for a in frames}) == 30


def _point(n, k, seed, value):
    subsets = {s: {"force_mae_eV_A": value} for s in ("all", "hydroxyl_scan", "methyl_scan", "high_energy")}
    scans = {s: {"barrier_error_meV": 1.0, "relative_rmse_meV": 2.0} for s in ("hydroxyl_scan", "methyl_scan")}
    judged = {"below_trust_lo": 0.5, "past_trust_hi": 0.1, "median_max_force_error": 0.4,
              "median_max_force_dev": 0.2, "spearman": 0.7}
    return {"n_labels": n, "hot": k, "seed": seed, "thermal": {"force_mae_eV_A": value},
            "subsets": subsets, "scans": scans, "high_energy_judgement": judged}


def test_report_averages_the_seeds_of_each_mix() -> None:
    points = {hot_share.point_key(150, 50, s): _point(150, 50, s, v) for s, v in ((0, 0.07), (1, 0.09))}
    text = hot_share.report(points, {}, 100)
    assert "`.venv/bin/python -m bench.hot_share --sizes 150 --hot 50 --seeds 0 1`" in text
    assert "| 100 thermal + 50 hot (2 seeds) | 150 | 80.0 ± 10.0 | 80.0 ± 10.0 |" in text
    assert "| 100 thermal + 50 hot | 150 | 0.50 | 0.10 | 2.0 | 0.70 |" in text
    assert "### MACE" not in text


def test_mace_mixes_are_their_own_table_next_to_mace_random_draws() -> None:
    """A MACE point never joins the BPNN's mean, and its table's random rows are MACE's
    (``mace:random/``, with N = 150 shown since the K = 0 mix was not run for MACE)."""
    points = {hot_share.point_key(150, 25, 0): _point(150, 25, 0, 0.10),
              hot_share.point_key(150, 25, 0, "mace"): _point(150, 25, 0, 0.04),
              hot_share.point_key(150, 25, 1, "mace"): _point(150, 25, 1, 0.05)}
    assert hot_share.point_key(150, 25, 1, "mace") == "mace:n150/hot25/seed1"
    random = {"random/seed0/n200": _point(200, 0, 0, 0.09), "mace:random/seed0/n150": _point(150, 0, 0, 0.06),
              "mace:random/seed1/n150": _point(150, 0, 1, 0.05), "mace:random/seed0/n300": _point(300, 0, 0, 0.03)}
    text = hot_share.report(points, random, 100)
    bpnn, mace = text.split("### MACE")
    assert "`.venv/bin/python -m bench.hot_share --architecture mace --sizes 150 --hot 25 --seeds 0 1`" in text
    assert "| 125 thermal + 25 hot (1 seeds) | 150 | 100.0 | 100.0 |" in bpnn
    assert "| random thermal sampling (1 seeds) | 200 | 90.0 |" in bpnn and "sampling (2 seeds) | 150" not in bpnn
    assert "| 125 thermal + 25 hot (2 seeds) | 150 | 45.0 ± 5.0 | 45.0 ± 5.0 |" in mace
    assert "| random thermal sampling (2 seeds) | 150 | 55.0 ± 5.0 |" in mace
    assert "| random thermal sampling (1 seeds) | 300 | 30.0 |" in mace and "| 200 |" not in mace


@pytest.mark.parametrize(("argv", "message"), [
    (["--sizes", "0"], "--sizes must be positive, got 0"),
    (["--hot", "-5"], "--hot must be 0 or more, got -5"),
    (["--sizes", "20", "--hot", "25"], "--hot 25 is more than N = 20 labels"),
    (["--seeds", "-1"], "--seeds must be 0 or more, got -1"),
    (["--architecture", "nequip"], "invalid choice: 'nequip'"),
])
def test_bad_options_are_refused_in_one_line_before_any_work(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        hot_share.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
