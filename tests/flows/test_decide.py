"""The convergence rule: accurate fraction for ``patience`` generations and the force MAE
on those generations' fresh labels, pooled; the generation limit."""

from __future__ import annotations

import pytest
from flows import storage
from flows.campaign import open_campaign
from flows.steps.decide import decide, pooled_fresh_mae
from flows.storage import GenerationStatus

from .conftest import write_campaign


def _generation(ctx, index: int, accurate: int, fresh: tuple[int, float] | None) -> None:
    """Generation ``index`` as if explored (1000 frames, ``accurate`` of them trusted)
    and labelled (``fresh`` = frames, force MAE eV/Å)."""
    with storage.transaction(ctx.engine) as session:
        generation = storage.generation(session, ctx.campaign_id, index)
        storage.record_selection(generation, {"accurate": accurate, "candidate": 1000 - accurate})
        if fresh is not None:  # scored by the committee that explored it
            committee = storage.add_committee(
                session, ctx.campaign_id, generation.id, n_members=2, architecture="bpnn", n_training_frames=1,
                training_wall_s=1.0, force_dev_scale=1.0, energy_dev_scale=1.0, calibrated_on="none",
                member_reports=[])
            storage.add_evaluation(session, committee.id, "fresh", {
                "n_frames": fresh[0], "force_mae_eV_A": fresh[1], "energy_mae_eV_atom": 0.0,
                "energy_rmse_eV_atom": 0.0, "force_rmse_eV_A": 0.0, "force_dev_spearman": None},
                generation_id=generation.id)


@pytest.fixture()
def ctx(tmp_path):
    config = write_campaign(tmp_path, name="decide")
    text = config.read_text().replace("max_generations = 2", "max_generations = 5")
    config.write_text(text + "\n[loop.convergence]\naccurate_fraction = 0.9\npatience_generations = 2\n"
                             "force_mae_target_eV_A = 0.05\n")
    return open_campaign(config)


def test_one_lucky_fresh_frame_does_not_converge_a_campaign(ctx) -> None:
    # generation 2 labelled a single frame (its window almost empty), predicted well;
    # generation 1's 18 fresh labels were not: pooled 0.0599 eV/Å, above the target
    _generation(ctx, 1, 950, (18, 0.0616))
    _generation(ctx, 2, 999, (1, 0.028))
    stop, reason = decide(ctx, 2)
    assert (stop, reason) == (False, None)
    _generation(ctx, 3, 995, (25, 0.03))
    stop, reason = decide(ctx, 3)
    assert stop and reason.startswith("converged: accurate fraction >= 0.9 for 2 generation(s)")
    assert "fresh force MAE 0.0299 <= 0.05 eV/Å (over their 26 fresh labels)" in reason
    with storage.reading(ctx.engine) as session:
        generation = storage.generation(session, ctx.campaign_id, 3)
        assert generation.converged and generation.stop_reason == reason
        assert generation.status == GenerationStatus.DONE


def test_accurate_fraction_must_hold_for_the_whole_patience(ctx) -> None:
    _generation(ctx, 1, 500, (25, 0.01))
    _generation(ctx, 2, 990, (25, 0.01))
    assert decide(ctx, 2) == (False, None)  # generation 1 trusted only half its frames
    _generation(ctx, 3, 990, None)  # nothing labelled: generation 2's labels still count
    stop, reason = decide(ctx, 3)
    assert stop and "over their 25 fresh labels" in reason


def test_the_generation_limit_stops_an_unconverged_campaign(ctx) -> None:
    for index in range(1, 6):
        _generation(ctx, index, 100, (25, 0.2))
    assert decide(ctx, 4) == (False, None)
    stop, reason = decide(ctx, 5)
    assert stop and reason == "generation limit 5 reached"
    with storage.reading(ctx.engine) as session:
        assert not storage.generation(session, ctx.campaign_id, 5).converged


def test_pooled_fresh_mae_weights_generations_by_their_labels() -> None:
    assert pooled_fresh_mae([(3, 0.1), (1, 0.5)]) == (pytest.approx(0.2), 4)
    assert pooled_fresh_mae([(0, float("nan"))]) == (None, 0)


def test_a_limit_stop_is_lifted_only_once_no_limit_is_reached() -> None:
    from types import SimpleNamespace

    from flows.steps.decide import stop_holds

    loop = SimpleNamespace(max_generations=5, max_labels=150)
    assert stop_holds("label budget 150 reached (150 labels)", 3, loop, 150)
    assert not stop_holds("label budget 150 reached (150 labels)", 3, SimpleNamespace(max_generations=5,
                                                                                     max_labels=200), 150)
    assert not stop_holds("label budget 150 reached (150 labels)", 3, SimpleNamespace(max_generations=5,
                                                                                     max_labels=None), 150)
    # the budget raised but the generation limit reached meanwhile: still stopped
    assert stop_holds("label budget 150 reached (150 labels)", 5, SimpleNamespace(max_generations=5,
                                                                                 max_labels=200), 150)
    assert stop_holds("generation limit 5 reached", 5, SimpleNamespace(max_generations=8, max_labels=150), 150)
    assert not stop_holds("generation limit 5 reached", 5, SimpleNamespace(max_generations=8, max_labels=None), 150)
    assert stop_holds("converged: accurate fraction >= 0.9", 2, SimpleNamespace(max_generations=8, max_labels=None), 0)


def test_a_half_done_generation_is_finished_on_resume_even_past_the_label_budget(tmp_path) -> None:
    """Only a new generation waits on the budget: one whose picks were queued before the
    run died (or before the budget was lowered) is labelled, trained and decided."""
    from ase.build import molecule

    from flows.active_learning import _finished
    from flows.storage import StructureSource

    config = write_campaign(tmp_path, name="over")
    config.write_text(config.read_text().replace("max_generations = 2", "max_generations = 5\nmax_labels = 12"))
    ctx = open_campaign(config)
    frames = [molecule("H2O") for _ in range(13)]
    for i, atoms in enumerate(frames):
        atoms.rattle(0.01, seed=i)
    with storage.transaction(ctx.engine) as session:
        first = storage.generation(session, ctx.campaign_id, 0)
        storage.enqueue_labels(session, storage.add_structures(
            session, ctx.campaign_id, frames[:10], source=StructureSource.INITIAL, generation_id=first.id))
        storage.finish_generation(session, first, None, converged=False)
        second = storage.generation(session, ctx.campaign_id, 1)
        storage.enqueue_labels(session, storage.add_structures(
            session, ctx.campaign_id, frames[10:], source=StructureSource.MD, generation_id=second.id))
    assert _finished(ctx) == (False, None)  # 13 labels asked for, but generation 1 is not done
    with storage.transaction(ctx.engine) as session:
        storage.finish_generation(session, storage.generation(session, ctx.campaign_id, 1), None, converged=False)
    assert _finished(ctx) == (True, "label budget 12 reached (13 labels)")
