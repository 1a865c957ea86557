"""[train] warm_start = false: every generation's committee is trained from fresh weights."""

from __future__ import annotations

import numpy as np
from ase.build import molecule

from flows import storage
from flows.campaign import open_campaign
from flows.pipeline import plain_steps, run_generation
from flows.steps.training import TRAINING_SOURCES, load_latest
from flows.storage import labelled_atoms
from nnp_core.training import train_committee

from .conftest import write_campaign


def test_without_warm_start_a_generation_trains_from_scratch(tmp_path) -> None:
    config = write_campaign(tmp_path)
    config.write_text(config.read_text().replace("early_stopping_patience_epochs = 20",
                                                 "early_stopping_patience_epochs = 20\nwarm_start = false"))
    ctx = open_campaign(config)
    try:
        run_generation(ctx, 0, plain_steps(ctx))
        _, generation_0 = load_latest(ctx)
        run_generation(ctx, 1, plain_steps(ctx))
        _, generation_1 = load_latest(ctx)
        with storage.reading(ctx.engine) as session:
            frames = labelled_atoms(session, ctx.campaign_id, sources=TRAINING_SOURCES)
    finally:
        ctx.engine.dispose()
    assert any(a.info.get("generation", 0) == 1 for a in frames), "generation 1 labelled nothing"
    for atoms in frames:
        atoms.info["charge"] = 0
    settings = dict(n_members=ctx.config.committee.members, architecture=ctx.config.committee.architecture,
                    model_hparams=ctx.config.committee.network_hparams())
    scratch, _ = train_committee(frames, ctx.config.train_config(), **settings)
    warm, _ = train_committee(frames, ctx.config.train_config(), initial=generation_0, **settings)

    probe = [molecule("H2O")]
    probe[0].positions += np.random.default_rng(3).normal(0, 0.05, (3, 3))
    forces = {name: c.predict(probe).member_forces for name, c in
              (("campaign", generation_1), ("scratch", scratch), ("warm", warm))}
    np.testing.assert_allclose(forces["campaign"], forces["scratch"], rtol=0, atol=1e-9)
    # the setting matters: the warm start from generation 0 gives another committee
    assert np.abs(forces["campaign"] - forces["warm"]).max() > 1e-4
