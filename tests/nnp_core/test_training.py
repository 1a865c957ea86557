"""Training really learns, is deterministic, and all members in one pass equal
members trained one by one."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from nnp_core.committee import Committee
from nnp_core.train_config import TrainConfig
from nnp_core.models import build_model
from nnp_core.training import LabelledSet, fit_normalisation, shrink_and_perturb, train_committee, train_members

from .conftest import displaced


def _force_mae(committee: Committee, frames) -> float:
    prediction = committee.predict(frames)
    reference = np.concatenate([a.get_forces() for a in frames])
    return float(np.abs(prediction.forces_mean - reference).mean())


def _one_by_one(frames, config: TrainConfig, n_members: int, architecture: str = "bpnn", **hparams) -> Committee:
    """The members of ``train_committee``'s committee, each trained alone on its split."""
    elements = sorted({int(z) for a in frames for z in a.numbers})
    base = build_model(architecture, n_members=n_members, seed=config.seed, elements=elements, **hparams)
    data = LabelledSet.from_frames(frames, base)
    fit_normalisation(base, data)
    parts = [base.select_members([m]) for m in range(n_members)]
    for m, single in enumerate(parts):
        train_members(single, data, config, members=[m])
    return Committee(type(base).stack(parts))


def test_training_on_pyscf_labels_cuts_validation_force_error_fivefold(water_frames, trained_water) -> None:
    train, held_out = water_frames[:45], water_frames[45:]
    committee, report = trained_water
    untrained = Committee.create("bpnn", n_members=3, seed=0, elements=["H", "O"], hidden_layers=[32, 32])
    fit_normalisation(untrained.model, LabelledSet.from_frames(train, untrained.model))
    before, after = _force_mae(untrained, held_out), _force_mae(committee, held_out)
    assert after < before / 5, (before, after)
    assert report.val_force_mae_eV_A < before / 5
    assert len(report.members) == 3 and report.history


def test_painn_trained_on_pyscf_labels_cuts_held_out_force_error_fivefold(water_frames) -> None:
    """The message-passing architecture really trains through the same trainer, and its
    vectorised committee equals members trained one by one."""
    train, held_out = water_frames[:45], water_frames[45:]
    hparams = {"features": 16, "interactions": 2, "radial_basis": 8}
    config = TrainConfig(max_epochs=40, batch_size_frames=8, seed=0, early_stopping_patience_epochs=40,
                         learning_rate=5e-3)
    committee, report = train_committee(train, config, n_members=2, architecture="painn", model_hparams=hparams)
    untrained = Committee.create("painn", n_members=2, seed=0, elements=["H", "O"], **hparams)
    fit_normalisation(untrained.model, LabelledSet.from_frames(train, untrained.model))
    before, after = _force_mae(untrained, held_out), _force_mae(committee, held_out)
    assert committee.architecture == "painn"
    assert after < before / 5, (before, after)
    short = dataclasses.replace(config, max_epochs=3)
    together, _ = train_committee(train, short, n_members=2, architecture="painn", model_hparams=hparams)
    alone = _one_by_one(train, short, 2, "painn", **hparams)
    np.testing.assert_allclose(together.predict(held_out).member_forces, alone.predict(held_out).member_forces,
                               atol=1e-8)


def test_feature_scale_is_floored_so_near_constant_features_are_not_amplified(ethanol_emt_frames) -> None:
    """A feature that barely varies over the training frames (an unoccupied radial shell)
    must not be divided by its own tiny std: that blew inputs up 10-60x on new frames."""
    import torch

    from nnp_core.training import FEATURE_STD_FLOOR

    committee = Committee.create("bpnn", n_members=1, seed=0, elements=["H", "C", "O"], hidden_layers=[8])
    model = committee.model
    data = LabelledSet.from_frames(ethanol_emt_frames, model)
    fit_normalisation(model, data)
    species = torch.cat([model.species_of(b["numbers"]) for b in data.frame_batches])
    features = torch.cat([model.raw_features(b) for b in data.frame_batches])
    for e in range(len(model.elements)):
        raw_std = features[species == e].std(0, unbiased=False)
        floor = FEATURE_STD_FLOOR * float(raw_std.max())
        assert (raw_std < 1e-3 * float(raw_std.max())).any()  # the case exists on these frames
        torch.testing.assert_close(model.feature_std[e], raw_std.clamp(min=floor))
        torch.testing.assert_close(model.feature_mean[e], features[species == e].mean(0))


def test_vectorised_training_equals_one_by_one(ethanol_emt_frames) -> None:
    config = TrainConfig(max_epochs=8, seed=3, batch_size_frames=16, early_stopping_patience_epochs=3,
                         lr_plateau_patience_epochs=2)
    hparams = {"hidden_layers": [16]}
    together, _ = train_committee(ethanol_emt_frames, config, n_members=3, model_hparams=hparams)
    alone = _one_by_one(ethanol_emt_frames, config, 3, **hparams)
    a, b = together.predict(ethanol_emt_frames[:4]), alone.predict(ethanol_emt_frames[:4])
    np.testing.assert_allclose(a.member_energies, b.member_energies, atol=1e-8)
    np.testing.assert_allclose(a.member_forces, b.member_forces, atol=1e-8)
    assert np.ptp(a.member_energies, axis=0).max() > 1e-4  # members really differ


def test_training_is_deterministic_under_a_seed(ethanol_emt_frames) -> None:
    config = TrainConfig(max_epochs=3, seed=1, batch_size_frames=16)
    first, _ = train_committee(ethanol_emt_frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    second, _ = train_committee(ethanol_emt_frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    np.testing.assert_array_equal(first.predict(ethanol_emt_frames[:3]).member_forces,
                                  second.predict(ethanol_emt_frames[:3]).member_forces)


def test_warm_start_continues_from_previous_committee(ethanol_emt_frames) -> None:
    config = TrainConfig(max_epochs=20, seed=0, batch_size_frames=16)
    first, first_report = train_committee(ethanol_emt_frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    one_epoch = dataclasses.replace(config, max_epochs=1, learning_rate=1e-4)
    warm, _ = train_committee(ethanol_emt_frames, one_epoch, initial=first)
    cold, _ = train_committee(ethanol_emt_frames, one_epoch, n_members=2, model_hparams={"hidden_layers": [16]})
    frames = ethanol_emt_frames[:10]
    assert _force_mae(warm, frames) < 0.7 * _force_mae(cold, frames)
    assert warm.n_members == 2 and first_report.members[0].best_epoch >= 0


def test_warm_start_max_epochs_caps_only_warm_starts(ethanol_emt_frames) -> None:
    """``warm_start_max_epochs`` caps a training that continues a committee; a training
    from scratch keeps ``max_epochs``. Early stopping cannot end either (patience 50)."""
    config = TrainConfig(max_epochs=4, warm_start_max_epochs=2, seed=0, batch_size_frames=16,
                         early_stopping_patience_epochs=50)
    first, first_report = train_committee(ethanol_emt_frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    _, warm_report = train_committee(ethanol_emt_frames, config, initial=first)
    assert [m.epochs_run for m in first_report.members] == [4, 4]
    assert [m.epochs_run for m in warm_report.members] == [2, 2]
    assert config.epochs(warm_start=True) == 2 and TrainConfig(max_epochs=7).epochs(warm_start=True) == 7
    tuned = dataclasses.replace(config, warm_start_learning_rate=1e-6).for_warm_start()
    assert (tuned.max_epochs, tuned.learning_rate, tuned.min_learning_rate) == (2, 1e-6, 1e-6)
    # long_warm_start_every 3: warm starts 1, 4, 7 run uncapped, the others capped
    every = dataclasses.replace(config, long_warm_start_every=3)
    assert [every.for_warm_start_number(n).epochs(warm_start=True) for n in range(1, 8)] == [4, 2, 2, 4, 2, 2, 4]
    assert config.for_warm_start_number(1) == config
    with pytest.raises(ValueError, match="long_warm_start_every"):
        TrainConfig(long_warm_start_every=0)
    with pytest.raises(ValueError, match="warm_start_max_epochs"):
        TrainConfig(warm_start_max_epochs=0)
    with pytest.raises(ValueError, match="warm_start_learning_rate"):
        TrainConfig(warm_start_learning_rate=0.0)


@pytest.mark.parametrize("architecture", ["bpnn", "painn", "mace"])
def test_shrink_and_perturb_blends_each_member_with_a_fresh_draw(architecture) -> None:
    """θ ← 0.5 θ + 0.2 θ₀ parameter by parameter, θ₀ the architecture's own fresh
    initialisation for that seed (each member a different draw); buffers untouched."""
    if architecture == "mace":
        pytest.importorskip("mace")
    settings = {"bpnn": {}, "painn": {"features": 8, "interactions": 1, "radial_basis": 6},
                "mace": {"cutoff_A": 4.0, "num_channels": 8, "max_L": 1, "correlation": 2, "num_interactions": 1,
                         "radial_MLP": [8], "readout_hidden": 4}}[architecture]
    model = build_model(architecture, n_members=2, seed=3, elements=[1, 6, 8], **settings)
    model.energy_scale.fill_(0.7)
    before = {k: v.clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    fresh = dict(build_model(architecture, n_members=2, seed=9, **model.hparams()).named_parameters())
    assert shrink_and_perturb(model, 0.5, 0.2, seed=9) is model
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter, 0.5 * before[name] + 0.2 * fresh[name])
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, buffers[name])
    # the perturbation differs between members: they are pushed apart, not together
    moved = [name for name, p in fresh.items() if p.dim() >= 2 and p[0].abs().sum() > 0]
    assert moved and any(not torch.equal(fresh[name][0], fresh[name][1]) for name in moved)
    unchanged = {k: v.clone() for k, v in model.named_parameters()}
    shrink_and_perturb(model, 1.0, 0.0, seed=9)  # a plain warm start
    assert all(torch.equal(v, unchanged[k]) for k, v in model.named_parameters())


def test_warm_start_shrinks_and_perturbs_before_training(ethanol_emt_frames) -> None:
    """``[train] warm_start_shrink/perturb`` act on the previous committee's weights at a
    warm start (a training that can hardly move them then returns about the blend), are
    seeded by the training set's size (a resumed generation draws the same), and are
    checked like every other setting."""
    config = TrainConfig(max_epochs=3, seed=0, batch_size_frames=16)
    first, _ = train_committee(ethanol_emt_frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    still = dataclasses.replace(config, max_epochs=1, learning_rate=1e-12, min_learning_rate=1e-12,
                                weight_decay=0.0, warm_start_shrink=0.6, warm_start_perturb=0.3)
    blended, _ = train_committee(ethanol_emt_frames, still, initial=first)
    expected = shrink_and_perturb(copy.deepcopy(first.model), 0.6, 0.3, seed=1 + len(ethanol_emt_frames))
    expected_parameters = dict(expected.named_parameters())
    for name, parameter in blended.model.named_parameters():
        torch.testing.assert_close(parameter, expected_parameters[name], rtol=1e-6, atol=1e-8)
    again, _ = train_committee(ethanol_emt_frames, still, initial=first)
    assert all(torch.equal(p, dict(again.model.named_parameters())[k]) for k, p in blended.model.named_parameters())
    for bad in ({"warm_start_shrink": 0.0}, {"warm_start_shrink": 1.5}, {"warm_start_perturb": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_ema_members_are_the_moving_average_of_the_weights(ethanol_emt_frames) -> None:
    """``ema_decay`` d: after one step (one batch, one epoch) the returned member is
    d * start + (1 - d) * (the member one plain step gives); d = 0 leaves training as it was."""
    config = TrainConfig(max_epochs=4, seed=0, batch_size_frames=16, dipole_weight=0.0)
    start, _ = train_committee(ethanol_emt_frames, config, n_members=2, model_hparams={"hidden_layers": [16]})
    one_step = dataclasses.replace(config, max_epochs=1, batch_size_frames=len(ethanol_emt_frames))
    plain, _ = train_committee(ethanol_emt_frames, one_step, initial=start)
    averaged, _ = train_committee(ethanol_emt_frames, dataclasses.replace(one_step, ema_decay=0.75), initial=start)
    begin, end = start.model.state_dict(), plain.model.state_dict()
    for name, value in averaged.model.state_dict().items():
        if value.is_floating_point() and name.startswith("weights"):
            np.testing.assert_allclose(value.numpy(), (0.75 * begin[name] + 0.25 * end[name]).numpy(), atol=1e-12)
    assert any(not torch.equal(begin[n], end[n]) for n in begin if n.startswith("weights"))
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_stage_two_ends_the_training_on_its_own_weights_and_rate(ethanol_emt_frames) -> None:
    """``stage_two_epochs`` (mace_run_train's stage two): the last epochs run at
    ``stage_two_learning_rate`` on the stage-two loss weights, from each member's best
    weights so far; early stopping in stage one jumps to stage two."""
    frames, hidden = ethanol_emt_frames, {"hidden_layers": [16]}
    base = TrainConfig(max_epochs=6, seed=0, batch_size_frames=16, learning_rate=3e-3, dipole_weight=0.0,
                       early_stopping_patience_epochs=50)
    stage_one, _ = train_committee(frames, dataclasses.replace(base, max_epochs=4), n_members=2, model_hparams=hidden)
    # a stage two that cannot move the weights returns stage one's best members, and its
    # validation loss is theirs on the stage-two weights (linear in them)
    val_loss = {}
    for weights in ((10.0, 1.0), (1.0, 0.0), (0.0, 1.0)):
        frozen = dataclasses.replace(base, stage_two_epochs=2, stage_two_learning_rate=1e-14,
                                     stage_two_energy_weight=weights[0], stage_two_force_weight=weights[1])
        still, report = train_committee(frames, frozen, n_members=2, model_hparams=hidden)
        assert [h["stage"] for h in report.history] == [1, 1, 1, 1, 2, 2]
        assert [h["lr"] for h in report.history[4:]] == [1e-14, 1e-14]
        np.testing.assert_allclose(still.predict(frames[:5]).member_forces,
                                   stage_one.predict(frames[:5]).member_forces, atol=1e-8)
        val_loss[weights] = report.history[-1]["val_loss"]
    assert val_loss[(10.0, 1.0)] == pytest.approx(10 * val_loss[(1.0, 0.0)] + val_loss[(0.0, 1.0)], rel=1e-6)
    assert val_loss[(1.0, 0.0)] < 0.5 * val_loss[(0.0, 1.0)]
    # no improvement for a whole patience in stage one: stage two next, then its own early stop
    stuck = dataclasses.replace(base, max_epochs=50, learning_rate=1e-14, min_learning_rate=0.0,
                                early_stopping_patience_epochs=1,
                                stage_two_epochs=5, stage_two_learning_rate=1e-14)
    _, stopped = train_committee(frames, stuck, n_members=2, model_hparams=hidden)
    assert [h["stage"] for h in stopped.history] == [1, 1, 2, 2]
    # a capped warm start keeps stage two's share of its epochs
    assert dataclasses.replace(base, max_epochs=150, stage_two_epochs=30, warm_start_max_epochs=20
                               ).for_warm_start().stage_two_epochs == 4
    with pytest.raises(ValueError, match="stage_two_epochs"):
        TrainConfig(max_epochs=10, stage_two_epochs=10)
    with pytest.raises(ValueError, match="stage_two_learning_rate"):
        TrainConfig(stage_two_learning_rate=0.0)


def test_bad_training_data_is_refused(ethanol_emt_frames, water_frames) -> None:
    unlabelled = [a.copy() for a in displaced(ethanol_emt_frames[0], 3, 0.01, seed=0)]
    with pytest.raises(ValueError, match="frame 0 has no reference"):
        train_committee(unlabelled, TrainConfig(max_epochs=1))
    with pytest.raises(ValueError, match="at least 2"):
        train_committee(ethanol_emt_frames[:1], TrainConfig(max_epochs=1))
    water_only, _ = train_committee(water_frames[:6], TrainConfig(max_epochs=1), n_members=1)
    with pytest.raises(ValueError, match=r"\['C'\] not in this model's elements"):
        train_committee(ethanol_emt_frames[:4], TrainConfig(max_epochs=1), initial=water_only)
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainConfig(validation_fraction=1.5)
