"""``[select] dipole_weight``: frames are judged on max_force_dev + w·dipole_dev, so a
campaign aimed at spectra labels where the committee's dipole is uncertain (issue 20)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.active_learning import active_learning
from flows.campaign import open_campaign
from flows.config import ConfigError, load_config
from flows.steps.selection import _judged_deviations
from flows.storage import CommitteeRow, Score, Structure, StructureSource, atoms_from_structure
from nnp_core.committee import load_committee

from .conftest import write_campaign


def test_the_dipole_spread_raises_scores_below_trust_hi_only() -> None:
    force = np.array([0.01, 0.10, 0.29, 0.40, np.inf, 0.10])
    dipole = np.array([0.02, 0.05, 0.05, 0.05, 0.05, np.nan])
    production = np.zeros(6, dtype=bool)
    judged = _judged_deviations(force, production, 0.30, dipole, 2.0)
    np.testing.assert_allclose(judged[:2], [0.05, 0.20])
    assert judged[2] == np.nextafter(0.30, 0.0)  # capped: an uncertain dipole never rejects
    assert judged[3] == 0.40 and judged[4] == np.inf  # beyond trust_hi stays beyond
    assert judged[5] == 0.10  # unknown dipole_dev adds nothing
    np.testing.assert_array_equal(_judged_deviations(force, production, 0.30, dipole, 0.0), force)


def test_a_campaign_scores_dipoles_and_judges_with_them(prefect_harness, tmp_path) -> None:
    path = write_campaign(tmp_path, name="tiny-dipole-select")
    path.write_text(path.read_text().replace("[select]\n", "[select]\ndipole_weight = 10.0\n"))
    active_learning(config_path=str(path))
    ctx = open_campaign(path, create=False)
    with Session(ctx.engine) as session:
        rows = session.execute(select(Structure, Score).join(Score, Score.structure_id == Structure.id)
                               .where(Structure.source == StructureSource.MD)).all()
        assert rows and all(score.dipole_dev is not None for _, score in rows)
        structure, score = rows[-1]
        committee = load_committee(ctx.resolve(session.get(CommitteeRow, score.committee_id).checkpoint_path))
        expected = committee.predict(atoms_from_structure(structure)).dipole_dev[0]
        assert score.dipole_dev == pytest.approx(float(expected), rel=1e-9)
        judged = [s for _, s in rows if s.reason and "dipole_weight x dipole_dev" in s.reason]
        assert judged  # the spread entered the judgment


def test_dipole_selection_needs_a_dipole_head(tmp_path) -> None:
    path = write_campaign(tmp_path)
    text = path.read_text().replace("[select]\n", "[select]\ndipole_weight = 1.0\n")
    path.write_text(text.replace("[train]\n", "[train]\ndipole_weight = 0.0\n"))
    with pytest.raises(ConfigError, match=re.escape("select.dipole_weight needs a committee that learns dipoles")):
        load_config(path)
