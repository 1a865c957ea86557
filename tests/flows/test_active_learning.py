"""The whole loop under Prefect: counts in the database agree, the report exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

from flows.active_learning import active_learning
from flows.campaign import open_campaign
from flows.cli import main
from flows.progress import attached
from flows.report import write_report
from flows.status import generation_rows, label_origin_rows
from flows.storage import (
    CommitteeRow,
    Evaluation,
    Generation,
    LabelRow,
    LabelStatus,
    Score,
    Structure,
    StructureSource,
    atoms_from_structure,
    labelled_atoms,
)
from nnp_core.committee import load_committee
from nnp_core.uncertainty import fit_calibration

from .conftest import write_campaign


def _count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where))


class ProgressRecorder:
    def __init__(self) -> None:
        self.fractions: dict[tuple[str, str], list[float]] = {}

    def update(self, key: str, description: str, fraction: float) -> None:
        self.fractions.setdefault((key, description), []).append(fraction)


def test_a_painn_campaign_explores_selects_and_trains(prefect_harness, tmp_path) -> None:
    """The whole loop with the message-passing committee: batched MD on it, its
    fingerprints for diversity selection, warm-started training, checkpoints."""
    config = write_campaign(tmp_path, name="tiny-water-painn", architecture="painn")
    summary = active_learning(config_path=str(config))
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as s:
        committees = s.scalars(select(CommitteeRow).order_by(CommitteeRow.id)).all()
        assert [c.architecture for c in committees] == ["painn"] * 3
        explored = _count(s, Structure, Structure.source.in_([StructureSource.MD, StructureSource.REJECTED]))
        assert explored > 0 and _count(s, Score) == explored
        assert _count(s, Score, Score.decision == "selected") > 0
    final = load_committee(summary["latest_committee"])
    assert final.architecture == "painn" and final.model.hparams()["features"] == 8
    first = load_committee(ctx.resolve(committees[0].checkpoint_path))
    with Session(ctx.engine) as s:
        frames = labelled_atoms(s, ctx.campaign_id)
    assert summary["labels"] == len(frames)
    assert not np.allclose(first.predict(frames).member_forces, final.predict(frames).member_forces)


def _one_generation_with_an_empty_window(tmp_path, name: str, select_lines: str):
    """Generation 1 of the tiny campaign with the trust window [2.999, 3.0) eV/Å (almost
    no frame in it) and ``select_lines`` added to [select]: its MD frames' (max_force_dev,
    decision, reason, temperature_K) and the temperatures of those labelled."""
    config = write_campaign(tmp_path, name=name)
    text = config.read_text().replace("trust_lo_eV_A = 0.02", f"trust_lo_eV_A = 2.999\n{select_lines}")
    config.write_text(text.replace("max_generations = 2", "max_generations = 1"))
    active_learning(config_path=str(config))
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as s:
        generation = s.scalars(select(Generation).where(Generation.index == 1)).one()
        of_generation = (Structure.generation_id == generation.id, Structure.source == StructureSource.MD)
        rows = s.execute(select(Score.max_force_dev, Score.decision, Score.reason, Structure.temperature_K).join(
            Structure, Structure.id == Score.structure_id).where(*of_generation)).all()
        fresh = s.scalars(select(Structure.temperature_K).join(
            LabelRow, LabelRow.structure_id == Structure.id).where(*of_generation)).all()
    return rows, fresh


def test_adaptive_trust_lo_keeps_labelling_when_the_window_is_empty(prefect_harness, tmp_path) -> None:
    """With ``adaptive_trust_lo`` a generation whose window is (almost) empty still labels
    its cap, taking the most uncertain trusted frames for what the window lacks."""
    rows, fresh = _one_generation_with_an_empty_window(tmp_path, "tiny-water-adaptive", "adaptive_trust_lo = true")
    in_window = sum(2.999 <= dev < 3.0 for dev, _, _, _ in rows)
    selected = [(dev, reason) for dev, decision, reason, _ in rows if decision == "selected"]
    promoted = [dev for dev, reason in selected if "adaptive trust_lo" in reason]
    accurate = [dev for dev, decision, _, _ in rows if decision == "accurate"]
    assert len(selected) == len(fresh) == 3
    assert len(promoted) == 3 - min(in_window, 3) >= 1
    assert all(dev < 2.999 for dev in promoted)
    assert min(promoted) >= max(accurate), "the promoted frames are the most uncertain trusted ones"


def test_hot_share_labels_the_hottest_replicas_frames_the_window_passes_over(prefect_harness, tmp_path) -> None:
    """With ``hot_share`` 2/3 of the 3 picks a generation whose window is (almost) empty
    still labels two frames of the 600 K replica, below trust_lo, and they stay the only
    frames taken from below the window."""
    rows, fresh = _one_generation_with_an_empty_window(tmp_path, "tiny-water-hot", "hot_share = 0.67")
    reserved = [(dev, t) for dev, decision, reason, t in rows if decision == "selected" and "reserved-share" in reason]
    assert len(reserved) == 2 and all(t == 600.0 and dev < 2.999 for dev, t in reserved)
    others = [dev for dev, decision, reason, _ in rows if decision == "selected" and "reserved-share" not in reason]
    assert all(2.999 <= dev < 3.0 for dev in others), "without adaptive trust_lo the rest comes from the window"
    assert len(fresh) == 2 + len(others)
    # the 600 K frames below trust_lo that were not picked are still counted accurate
    assert any(d == "accurate" and "not picked for the reserved share" in r for _, d, r, _ in rows)
    assert not any("reserved" in r for _, d, r, t in rows if t == 300.0)


def test_stratify_labels_every_temperature_when_the_window_is_empty(prefect_harness, tmp_path) -> None:
    """With ``stratify = "temperature"`` the 3 picks of a generation whose window is (almost)
    empty are split over the 600 K and 300 K replicas (2 + 1), each from its own most
    uncertain frames; the 300 K frames that were made candidates and not picked are
    accurate again."""
    rows, fresh = _one_generation_with_an_empty_window(tmp_path, "tiny-water-strata", 'stratify = "temperature"')
    selected = [(dev, reason, t) for dev, decision, reason, t in rows if decision == "selected"]
    assert len(selected) == len(fresh) == 3 and sorted(fresh) == [300.0, 600.0, 600.0]
    assert sorted(t for _, _, t in selected) == [300.0, 600.0, 600.0]
    (cold_dev, cold_reason, _), = [s for s in selected if s[2] == 300.0]
    assert "stratum 300 pick 1/1" in cold_reason
    cold = sorted((dev for dev, _, _, t in rows if t == 300.0), reverse=True)
    assert cold_dev >= cold[1], "the 300 K pick is one of its stratum's 2 most uncertain frames"
    assert sum("not picked for stratum 300's quota" in r for _, d, r, t in rows if d == "accurate") == 1


def _check_fresh_calibration(session, campaign_id, generations, committees, work_dir) -> None:
    """Committee g's force scale = RMS(error) / RMS(force_dev) of the committees before
    it on the fresh MD labels of generations g-2..g (generation 0's: the validation fit)."""
    assert committees[0].calibrated_on == "validation"
    for g in (1, 2):
        errors, devs = [], []
        for h in range(max(1, g - 2), g + 1):
            fresh = labelled_atoms(session, campaign_id, generation_ids=[generations[h].id],
                                   sources=[StructureSource.MD])
            if fresh:
                prediction = load_committee(work_dir / committees[h - 1].checkpoint_path).predict(fresh)
                errors.append(np.concatenate([a.get_forces() for a in fresh]) - prediction.forces_mean)
                devs.append(prediction.force_dev)
        scale = load_committee(work_dir / committees[g].checkpoint_path).calibration.force_dev_scale
        if not errors:
            assert committees[g].calibrated_on == "validation"
            continue
        expected = fit_calibration(np.concatenate(devs), np.concatenate(errors)).force_dev_scale
        assert scale == pytest.approx(expected, rel=1e-9)
        assert committees[g].calibrated_on.startswith("fresh labels of generations")
        assert committees[g].force_dev_scale == pytest.approx(scale)


def test_tiny_campaign_end_to_end(prefect_harness, tiny_campaign, capsys) -> None:
    # generation 1's warm start is a long one, generation 2's capped at 2 epochs
    tiny_campaign.write_text(tiny_campaign.read_text().replace(
        "early_stopping_patience_epochs = 20", "early_stopping_patience_epochs = 20\nwarm_start_max_epochs = 2\n"
        "long_warm_start_every = 2"))
    recorder = ProgressRecorder()
    with attached(recorder):
        summary = active_learning(config_path=str(tiny_campaign))
    # exploration and training report progress in every generation, labelling in every one with labels to do
    explored = {("tiny-water-exploration", f"generation {g}: MD") for g in (1, 2)}
    trained = {("tiny-water-training", f"generation {g}: committee") for g in (0, 1, 2)}
    labelled = {("tiny-water-labelling", f"generation {g}: QM labels") for g in (0, 1, 2)}
    assert explored | trained | {("tiny-water-labelling", "generation 0: QM labels")} <= set(recorder.fractions)
    assert set(recorder.fractions) <= explored | labelled | trained
    for fractions in recorder.fractions.values():
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with get_client(sync_client=True) as client:
        latest = {}
        for what in ("exploration", "labelling", "training", "summary", "generations", "timings"):
            (latest[what],) = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=[f"tiny-water-{what}"])))
        for what in ("exploration", "labelling", "training"):
            assert latest[what].type == "progress" and float(latest[what].data) == 100.0
        # the counts behind the percentages, all labels of the last labelling pass done
        assert re.fullmatch(r"generation \d: QM labels: (\d+)/\1 done, 0 failed", latest["labelling"].description)
        assert "step 60/60" in latest["exploration"].description
        assert "epoch" in latest["training"].description and "validation loss" in latest["training"].description
        # the figures are in the summary, on the run a person started (the flow itself here)
        assert latest["summary"].data.count("](data:image/png;base64,") == 3
        assert "## Labels by where their frame came from" in latest["summary"].data
        runs = {latest[what].flow_run_id for what in latest}
        assert len(runs) == 1 and client.read_flow_run(runs.pop()).parent_task_run_id is None
        rows = latest["generations"].data
        rows = json.loads(rows) if isinstance(rows, str) else rows
        assert [row["generation"] for row in rows] == [0, 1, 2]
        assert {"labels so far", "accurate %", "fresh F MAE / target (meV/Å)", "val. F MAE (meV/Å)"} <= set(rows[0])
    ctx = open_campaign(tiny_campaign, create=False)
    with Session(ctx.engine) as s:
        generations = s.scalars(select(Generation).order_by(Generation.index)).all()
        assert [g.index for g in generations] == [0, 1, 2]
        assert all(str(g.status) == "done" for g in generations)
        assert generations[-1].stop_reason == "generation limit 2 reached"
        # every structure that was queued got exactly one finished label
        n_labels = _count(s, LabelRow)
        assert _count(s, LabelRow, LabelRow.status == LabelStatus.DONE) + _count(
            s, LabelRow, LabelRow.status == LabelStatus.FAILED) == n_labels == summary["labels"] + summary["failed_labels"]
        assert _count(s, Structure, Structure.source == StructureSource.INITIAL) == 7  # 6 + reference
        assert _count(s, Structure, Structure.source == StructureSource.VALIDATION) == 3
        md = _count(s, Structure, Structure.source.in_([StructureSource.MD, StructureSource.REJECTED]))
        assert md > 0 and _count(s, Score) == md  # one score per explored frame
        selected = _count(s, Score, Score.decision == "selected")
        assert 0 < selected <= 2 * 3
        assert n_labels == 10 + selected  # initial + validation + selected, nothing else
        committees = s.scalars(select(CommitteeRow).order_by(CommitteeRow.id)).all()
        assert len(committees) == 3
        epochs = [{m["epochs_run"] for m in c.member_reports} for c in committees]
        assert min(epochs[0]) > 20 and min(epochs[1]) > 20 and epochs[2] == {2}, epochs
        assert _count(s, Evaluation, Evaluation.label_set == "validation") == 3
        assert _count(s, Evaluation, Evaluation.label_set == "fresh") >= 1
        # the typed records of every generation: step marks in order, counts that add up
        assert [m.step for m in generations[0].steps] == ["sample", "label", "train", "decide"]
        for g in generations[1:]:
            assert [m.step for m in g.steps] == ["explore", "select", "label", "evaluate_fresh", "train", "decide"]
            assert sum(g.selection_counts().values()) == _count(s, Structure, Structure.generation_id == g.id, Structure.source.in_(
                [StructureSource.MD, StructureSource.REJECTED])) <= g.md_trusted + g.md_rejected + g.md_failed
            assert g.n_selected == g.labels_done + g.labels_failed and g.replica_steps > 0
        assert _count(s, Score, Score.decision.is_(None)) == 0  # every explored frame judged by select
        # each fresh label's true error sits on the score the exploring committee gave it
        assert _count(s, Score, Score.max_force_error_eV_A.is_not(None)) == sum(g.labels_done for g in generations[1:])
        # stored relative to work_dir (a moved campaign folder still resumes), keyed by committee id
        assert all(not Path(c.checkpoint_path).is_absolute() for c in committees)
        assert [Path(c.checkpoint_path).name for c in committees] == [
            f"gen-{g:03d}-c{c.id:05d}" for g, c in zip(range(3), committees)]
        latest = str(ctx.resolve(committees[-1].checkpoint_path))
        _check_fresh_calibration(s, ctx.campaign_id, generations, committees, ctx.work_dir)
    committee = load_committee(latest)
    assert committee.n_members == 2 and committee.elements == [1, 8]
    assert summary["latest_committee"] == latest

    report = write_report(ctx)
    for name in ("report.md", "learning_curve.png", "force_dev_histogram.png", "uncertainty_vs_error.png", "parity.png"):
        assert (report.parent / name).stat().st_size > 0
    assert not (report.parent / "exploration_map.png").exists()  # water: no torsion to map
    # the labels' origins: generation 0's samples and validation frames, then the 300 K and
    # 600 K replicas' frames
    with Session(ctx.engine) as s:
        origins, rows = label_origin_rows(s, ctx.campaign_id), generation_rows(s, ctx.campaign_id)
    assert [o["total"] for o in origins] == [r["labels"] for r in rows if r["labels"]]
    assert origins[0]["initial"] > 0 and origins[0]["validation"] > 0
    assert origins[0]["initial"] + origins[0]["validation"] == origins[0]["total"]
    assert all(o["initial"] == o["validation"] == 0 for o in origins[1:])
    assert {k for o in origins for k in o} <= {"generation", "initial", "validation", "300 K", "600 K", "total"}
    assert sum(o.get("300 K", 0) + o.get("600 K", 0) for o in origins) == sum(o["total"] for o in origins[1:])
    assert "| generation | initial |" in report.read_text()

    assert main(["status", str(tiny_campaign), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {"generations", "labels", "failed_labels", "latest_committee"} <= set(status)
    assert len(status["generations"]) == 3 and status["latest_committee"] == latest

    out = tiny_campaign.parent / "frames.extxyz"
    assert main(["export", str(tiny_campaign), "--format", "extxyz", "--output", str(out)]) == 0
    frames = ase.io.read(out, index=":")
    assert len(frames) == summary["labels"]
    assert np.isfinite(frames[0].get_forces()).all()

    # running it again does nothing new: the campaign is finished
    again = active_learning(config_path=str(tiny_campaign))
    assert again["labels"] == summary["labels"] and again["generations"] == 3


def test_break_precursors_label_the_last_sane_frame_before_a_replica_fails_the_filters(prefect_harness,
                                                                                       tmp_path) -> None:
    """With ``break_precursors`` (and ``min_distance_A`` 0.98 Å, just under HF/STO-3G's O-H
    bond of 0.99 Å, so that water's O-H vibration takes its frames in and out of the sanity
    filters many times a generation; at 0.95 Å only the hottest few frames failed, and on
    some machines none did) a generation whose window
    is (almost) empty labels the frames just before a replica's frame failed a filter,
    whatever their max_force_dev."""
    rows, fresh = _one_generation_with_an_empty_window(
        tmp_path, "tiny-water-precursors", "break_precursors = true\nmin_distance_A = 0.98")
    picked = [(dev, r) for dev, d, r, _ in rows if d == "selected" and "bond-break precursor" in r]
    assert picked and all(dev < 2.999 and "the last sane frame before a bond broke" in r for dev, r in picked)
    assert len(fresh) == len([d for _, d, _, _ in rows if d == "selected"]) <= 3
    from nnp_core.sanity import check_frame

    ctx = open_campaign(tmp_path / "tiny-water-precursors.toml", create=False)
    with Session(ctx.engine) as s:
        generation = s.scalars(select(Generation).where(Generation.index == 1)).one()
        frames = s.execute(select(Structure, Score).join(Score, Score.structure_id == Structure.id).where(
            Structure.generation_id == generation.id, Structure.source == StructureSource.MD
        ).order_by(Structure.id)).all()
        reference = atoms_from_structure(s.scalars(select(Structure).where(
            Structure.sampler == "reference-geometry")).one())
        for i, (structure, score) in enumerate(frames):
            if "bond-break precursor" not in (score.reason or ""):
                continue
            after = next(st for st, _ in frames[i + 1:] if st.replica == structure.replica)
            assert check_frame(atoms_from_structure(structure), reference=reference, min_distance_A=0.98) is None
            assert check_frame(atoms_from_structure(after), reference=reference, min_distance_A=0.98) is not None
