"""The replicas' sampling interval of each IR spectrum (``spectra.sampling_low`` and
``sampling_high``: the 95% confidence interval of the spectrum over its independent
replicas, ``nnp_core.ir``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Two nullable BLOB columns (NULL: one replica, or a spectrum stored before this
revision); older rows are untouched and the downgrade drops them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("sampling_low", "sampling_high")


def upgrade() -> None:
    with op.batch_alter_table("spectra") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("spectra") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
