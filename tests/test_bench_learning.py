"""The learning benchmarks (data efficiency, stability) run end to end in a tiny mode:
water, HF/STO-3G labels, a few frames, a short campaign, so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from bench import data_efficiency, stability
from bench._learning_data import labelled_set, rotatable_bonds, take, torsion_frames
from bench.learning_report import (SUBSET_FIELD, curve_rows, curves, headline, labels_to_reach, retrained_with,
                                   subset_errors, subset_rows, uncertainty_metrics)
from nnp_core.committee import Committee, load_committee


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, prefect_harness) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("data-efficiency")
    data_efficiency.run("tiny", folder=folder, write=False, architecture="painn")
    text = data_efficiency.run("tiny", folder=folder, write=True, benchmarks_md=folder / "benchmarks.md")
    return folder / data_efficiency.PRESETS["tiny"].data.name, text


def test_tiny_run_writes_both_curves_and_the_report(tiny_run) -> None:
    data_dir, text = tiny_run
    results = data_efficiency.Results(data_dir / "results.json").data
    assert {"random/seed0/n4", "random/seed0/n8", "al/seed0/g0", "al/seed0/g0/campaign"} <= set(results)
    for value in results.values():
        assert np.isfinite(value["force_mae_eV_A"]) and value["force_mae_eV_A"] > 0
    al = curves(results)["al"]
    assert al[-1]["n_labels"] > al[0]["n_labels"], "the campaign's later generations added labels"
    assert al[-1]["n_labels"] >= data_efficiency.PRESETS["tiny"].al_labels
    page = (data_dir.parent / "benchmarks.md").read_text()
    assert "<!-- bench:data-efficiency -->" in page and "| random sampling | 8 |" in page
    assert "coverage of the nominal 95%" in text
    assert (data_dir.parent / "img" / "learning_curve.png").stat().st_size > 1000
    assert (data_dir / "committees" / "random-seed0-n8").is_dir()
    final = results[max((k for k in results if k.endswith("/campaign")), key=lambda k: results[k]["n_labels"])]
    assert 0 <= final["coverage_heldout"] <= 1 and final["calibration_scale_heldout"] > 0
    assert "held-out pool frames" in text
    # generations after the first also carry the coverage with the product's fresh-label calibration
    later = [v for k, v in results.items() if k.endswith("/campaign") and not k.endswith("/g0/campaign")]
    assert later and all(0 <= v["coverage_fresh"] <= 1 and v["calibration_scale_fresh"] > 0 for v in later)
    assert "calibration on fresh labels" in text
    # the campaign's last point says why it ended: its 8-label budget, spent in generation 1
    assert final is results["al/seed0/g1/campaign"] and final["stop_reason"] == "label budget"
    assert "stop_reason" not in results["al/seed0/g0/campaign"]
    assert f"Campaigns ended: seed 0 label budget at {final['n_labels']} labels (generation 1)." in text


def test_tiny_run_retrains_both_curves_with_another_architecture(tiny_run) -> None:
    """``--architecture painn`` retrains the random subsets and the campaign's labels with
    PaiNN; the campaign itself (and its committees) stays the example's."""
    data_dir, text = tiny_run
    results = data_efficiency.Results(data_dir / "results.json").data
    assert {"painn:random/seed0/n4", "painn:random/seed0/n8", "painn:al/seed0/g0"} <= set(results)
    assert not any(k.startswith("painn:") and k.endswith("/campaign") for k in results)
    for kind in ("random", "al"):
        bpnn, painn = curves(results)[kind], curves(results)["painn:" + kind]
        assert [p["n_labels"] for p in painn] == [p["n_labels"] for p in bpnn][:len(painn)]
        assert painn[0]["force_mae_eV_A"] != bpnn[0]["force_mae_eV_A"]
    assert load_committee(data_dir / "committees" / "painn-random-seed0-n8").architecture == "painn"
    assert "| PaiNN: random sampling | 8 |" in text
    assert "**PaiNN** against the example's committee" in text and "8 labels" in text


def test_held_out_calibration_matches_the_errors_in_rms(tiny_run) -> None:
    data_dir, _ = tiny_run
    committee = load_committee(data_dir / "committees" / "random-seed0-n8")
    test = ase.io.read(data_dir / "test.extxyz", index=":")
    metrics = uncertainty_metrics(committee, test, data_efficiency.COVERAGE_FACTOR, held_out=test)
    prediction = committee.predict(test)
    error = prediction.forces_mean - np.concatenate([a.get_forces() for a in test])
    scale = metrics["calibration_scale_heldout"]
    assert np.mean(np.sum(error**2, axis=1)) == pytest.approx(scale**2 * np.mean(prediction.force_dev**2))
    inside = np.linalg.norm(error, axis=1) <= data_efficiency.COVERAGE_FACTOR * scale * prediction.force_dev
    assert metrics["coverage_heldout"] == pytest.approx(np.mean(inside))
    assert "coverage_heldout" not in uncertainty_metrics(committee, test, 1.0)


def test_per_subset_errors_split_the_test_set(tiny_run) -> None:
    """Kept committees carry their force MAE per test subset (md300, md600): the
    frame-weighted mean of the subsets is the whole test set's MAE, and the report
    tables it beside the campaign committee with the nearest label count."""
    data_dir, text = tiny_run
    results = data_efficiency.Results(data_dir / "results.json").data
    test = ase.io.read(data_dir / "test.extxyz", index=":")
    counts = {name: sum(a.info["key"].split("-")[1] == name for a in test) for name in ("md300", "md600")}
    for key in ("random/seed0/n8", "painn:random/seed0/n8", "al/seed0/g1/campaign"):
        by_subset = results[key][SUBSET_FIELD]
        assert set(by_subset) == set(counts)
        pooled = sum(counts[name] * by_subset[name] for name in counts) / len(test)  # water: equal sizes
        assert pooled == pytest.approx(results[key]["force_mae_eV_A"])
    direct = subset_errors(load_committee(data_dir / "committees" / "random-seed0-n8"), test)[SUBSET_FIELD]
    assert direct == pytest.approx(results["random/seed0/n8"][SUBSET_FIELD])
    table = text.split("by test subset")[1].split("\n\n")[1].splitlines()
    assert table[0] == "| curve | labels | seeds | md300 force MAE | md600 force MAE | all |"
    # a campaign generation is tabled beside random-8 only within 15% of 8 labels (the
    # tiny campaign's generations usually hold 6 and 10)
    near = [v["n_labels"] for k, v in results.items() if k.endswith("/campaign") and abs(v["n_labels"] - 8) <= 1.2]
    expected = [["| random sampling", "8", "1"], ["| PaiNN: random sampling", "8", "1"]]
    expected += [["| active learning (campaign committee)", str(near[0]), "1"]] if near else []
    assert [row.split(" | ")[:3] for row in table[2:]] == expected
    shifted = {**results, "al/seed0/g1/campaign": {**results["al/seed0/g1/campaign"], "n_labels": 9}}
    assert subset_rows(shifted)[1][-1][:3] == ["active learning (campaign committee)", "9", 1]


def test_labelled_cache_resumes_without_relabelling(tiny_run) -> None:
    data_dir, _ = tiny_run
    spec = data_efficiency.with_reference(data_efficiency.PRESETS["tiny"]).data
    spec = type(spec)(**{**spec.__dict__, "root": data_dir.parent})
    cache = data_dir / "test.extxyz"
    frames = ase.io.read(cache, index=":")
    ase.io.write(cache, frames[:-2], format="extxyz")  # as if killed two labels early
    calls: list[tuple[int, int]] = []
    again = labelled_set(spec, "test", workers=1, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (2, 2), "only the two missing frames are labelled"
    before = {a.info["key"]: a for a in frames}
    assert sorted(a.info["key"] for a in again) == sorted(before)
    for frame in again:
        assert np.allclose(frame.get_forces(), before[frame.info["key"]].get_forces(), atol=1e-4)  # SCF tolerance


def test_stability_runs_on_the_tiny_campaign(tiny_run, tmp_path) -> None:
    data_dir, _ = tiny_run
    out = tmp_path / "benchmarks.md"
    text = stability.main(["--preset", "tiny", "--data-dir", str(data_dir), "--ps", "0.02", "--seeds", "2",
                           "--out", str(out)])
    assert "active learning, al-seed0" in text and "random sampling, random-seed0-n8" in text
    assert "<!-- bench:stability -->" in out.read_text()


def test_bond_deviation_and_failure_detection() -> None:
    water = molecule("H2O")
    stretched = water.positions.copy()
    stretched[1] += 0.7 * (stretched[1] - stretched[0]) / np.linalg.norm(stretched[1] - stretched[0])
    assert stability.bond_deviation(water, stretched) == pytest.approx(0.7)
    # An untrained committee at 20000 K cannot hold the molecule together...
    committee = Committee.create(n_members=2, seed=0, elements=[1, 8], hidden_layers=[8])
    hot, _ = stability.stability_run(committee, water, seeds=2, temperature_K=20000, n_steps=400, check_every=5)
    assert all(r.failed_at_ps is not None and r.failed_at_ps <= 0.2 for r in hot)
    # ...while a run too short to move any bond by 0.5 Å survives.
    cold, _ = stability.stability_run(committee, water, seeds=2, temperature_K=10, n_steps=10, check_every=5)
    assert all(r.failed_at_ps is None and r.reason == "survived" for r in cold)


def test_torsion_scans_turn_the_rotatable_bonds() -> None:
    ethanol = molecule("CH3CH2OH")
    bonds = rotatable_bonds(ethanol)
    assert sorted((i, j) for _, i, j, _, _ in bonds) == [(0, 1), (1, 2)]  # C-C and C-O
    frames = torsion_frames(ethanol, 8, seed=0, jitter_A=0.0)
    a, i, j, b, _ = bonds[0]
    turned = sorted(round((f.get_dihedral(a, i, j, b) - ethanol.get_dihedral(a, i, j, b)) % 360) for f in frames[:2])
    assert turned == [0, 180]
    # rigid rotation: every bond length is kept
    assert np.allclose(np.sort(frames[-1].get_all_distances()[0]), np.sort(frames[-1].get_all_distances()[0]))
    for frame in frames:
        assert stability.bond_deviation(ethanol, frame.positions) < 1e-6


def test_labels_to_reach_interpolates_log_log() -> None:
    points = [{"n_labels": 10.0, "force_mae_eV_A": 0.4}, {"n_labels": 40.0, "force_mae_eV_A": 0.1}]
    assert labels_to_reach(points, 0.2) == pytest.approx(20.0)  # MAE ~ 1/N
    assert labels_to_reach(points, 0.5) == 10.0
    assert labels_to_reach(points, 0.05) is None
    with pytest.raises(ValueError):
        take(list(range(3)), 4, seed=0)


def test_bad_benchmark_arguments_are_refused_with_the_reason(tmp_path, capsys) -> None:
    for main, argv, words in ((data_efficiency.main, ["--sizes", "1", "10"], "at least 2 frames"),
                              (data_efficiency.main, ["--al-labels", "0"], "--al-labels"),
                              (data_efficiency.main, ["--variants", "al", "nope"], "--variants: unknown ['nope']"),
                              (data_efficiency.main, ["--architecture", "nequip"], "--architecture: unknown 'nequip'"),
                              (stability.main, ["--ps", "0"], "--ps must be > 0")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and words in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no committees under"):
        stability.main(["--data-dir", str(tmp_path), "--no-write"])
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_mace_campaigns_bpnn_retrain_is_named_so() -> None:
    """The curves retrain every campaign's labels with the example's committee (the BPNN):
    a MACE campaign's from-scratch rows say so; its own committee's rows do not."""
    preset = data_efficiency.PRESETS["full"]
    retrained = retrained_with(preset.variants, "bpnn")
    assert retrained["al-mace-metad"] == "BPNN" and "al" not in retrained and "al-metad" not in retrained
    point = {"n_labels": 50, "force_mae_eV_A": 0.1, "force_rmse_eV_A": 0.2, "energy_mae_eV_atom": 0.001}
    results = {"random/seed0/n50": point, "al-mace-metad/seed0/g1": point, "al-mace-metad/seed0/g1/campaign": point,
               "al/seed0/g1": point}
    labels = {v.name: v.name for v in preset.variants}
    rows = {row[0] for row in curve_rows(results, labels, retrained)}
    assert rows == {"random sampling", "al-mace-metad (retrained from scratch with the BPNN)",
                    "al-mace-metad (campaign committee)", "al (retrained from scratch)"}
    text = "\n".join(headline(results, preset, retrained))
    assert "active learning (retrained from scratch with the BPNN) reaches it" in text
    label = next(v.label for v in preset.variants if v.name == "al-mace-metad")
    assert f"Best {label} (retrained from scratch with the BPNN) force MAE" in text
    bpnn_campaign = data_efficiency.Variant("x", "x", {"committee": {"architecture": "bpnn"}})
    assert retrained_with([bpnn_campaign, data_efficiency.Variant("y", "y")], "mace") == {"x": "MACE"}


def test_scratch_generations_pick_the_first_generation_past_each_size() -> None:
    labels = {0: 28, 1: 53, 2: 78, 3: 103, 4: 128, 5: 153}
    assert data_efficiency.scratch_generations(labels, (25, 50, 100, 200)) == {0, 1, 3, 5}
    assert data_efficiency.scratch_generations({0: 4}, (4, 8)) == {0}
    assert data_efficiency.scratch_generations({}, (4,)) == set()


def test_a_campaign_stopped_at_its_budget_goes_on_when_the_budget_is_raised(tiny_run, tmp_path) -> None:
    """The tiny campaign stopped at its 8-label budget; a copy of it budgeted 12 labels
    (issue 19's campaigns of 200 brought to 300) resumes past its recorded stop, keeps
    every earlier label and stops again at the new budget."""
    import shutil
    from dataclasses import replace

    from flows.campaign import open_campaign
    from flows.status import campaign_status
    from flows.storage import reading

    data_dir, _ = tiny_run
    tiny = data_efficiency.PRESETS["tiny"]
    shutil.copytree(data_dir / "al-seed0", tmp_path / "al-seed0")
    wider = replace(tiny, al_labels=12, overrides={**tiny.overrides, "loop": {**tiny.overrides["loop"],
                                                                              "max_generations": 4}})
    config_path = data_efficiency.campaign_config(wider, 0, tmp_path / "al-seed0")

    def status() -> dict:
        ctx = open_campaign(config_path, create=False)
        with reading(ctx.engine) as session:
            return campaign_status(session, ctx.campaign_id)

    before = status()
    assert before["finished"] and before["stop_reason"].startswith("label budget") and before["labels"] == 8
    data_efficiency.run_campaign(config_path, 12, log=lambda line: None)
    after = status()
    assert 8 < after["labels"] <= 12 and len(after["generations"]) > len(before["generations"])
    assert after["generations"][:len(before["generations"]) - 1] == before["generations"][:-1]


@pytest.mark.parametrize("preset_name", sorted(data_efficiency.PRESETS))
def test_every_variant_and_architecture_makes_a_valid_campaign(preset_name, tmp_path) -> None:
    """Each protocol a preset can run (its variants; its architectures' committee and
    train overrides) is a config alflow accepts, with the overrides in effect."""
    from flows.config import CommitteeSection, load_config

    preset = data_efficiency.PRESETS[preset_name]
    for variant in preset.variants:
        config = load_config(data_efficiency.campaign_config(preset, 0, tmp_path / variant.name, variant))
        assert config.loop.max_labels == preset.budget_of(variant)
        for section, values in variant.overrides.items():
            model = getattr(config, section)
            for name, value in values.items():
                if not isinstance(value, dict):
                    assert getattr(model, name) == (list(value) if isinstance(value, tuple) else value), (
                        variant.name, section, name)
    base = load_config(data_efficiency.ROOT / preset.example)
    for name, architecture in preset.architectures.items():
        committee = CommitteeSection.model_validate({**base.committee.model_dump(), **architecture["committee"]})
        assert committee.architecture == architecture["committee"]["architecture"], name
        train = base.train_config()
        for key, value in architecture.get("train", {}).items():
            assert hasattr(train, key), (name, key)
