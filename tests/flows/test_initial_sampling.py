"""Generation 0 with the "md" sampler: initial frames from cheap-level (xTB) dynamics."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.steps.initial import sample_initial
from flows.storage import Structure, StructureSource
from nnp_core.sampling import md_sampling

from .conftest import write_campaign

pytest.importorskip("tblite")


def test_md_initial_frames_are_the_xtb_trajectory_and_fill_the_validation_set(tmp_path) -> None:
    path = write_campaign(tmp_path, initial_samples=4)
    path.write_text(path.read_text().replace(
        'initial_sampler = "normal_modes"',
        'initial_sampler = "md"\ninitial_temperature_K = 500\ninitial_md_backend = "xtb"\n'
        "initial_md_interval_steps = 20"))
    ctx = open_campaign(path, create=True)
    counts = sample_initial(ctx)
    assert counts == {"initial_frames": 5, "validation_frames": 2}  # + the reference geometry
    with Session(ctx.engine) as session:
        rows = session.scalars(select(Structure).where(Structure.sampler == "md").order_by(Structure.id)).all()
        reference = session.scalars(select(Structure).where(Structure.sampler == "reference-geometry")).one()
        sources = [row.source for row in rows]
        positions = [row.positions for row in rows]
        temperatures = {row.temperature_K for row in rows}
        ref_positions, numbers = reference.positions, reference.numbers
    assert sources == [StructureSource.INITIAL] * 4 + [StructureSource.VALIDATION] * 2
    assert temperatures == {500.0}
    # the same frames as GFN2-xTB Langevin dynamics from the optimised geometry, seed = train.seed
    from tblite.ase import TBLite

    direct = md_sampling(Atoms(numbers, ref_positions), TBLite(method="GFN2-xTB", charge=0, multiplicity=1, verbosity=0),
                         temperature_K=500, n_samples=6, seed=ctx.config.train.seed, interval_steps=20)
    for stored, expected in zip(positions, direct):
        np.testing.assert_allclose(stored, expected.positions, atol=1e-8)
