"""The members' dipole spread with each score (``scores.dipole_dev``, e·Å), which
``[select] dipole_weight`` adds to the selection score.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A nullable column (NULL: a committee without a dipole head, or a frame scored before
this revision); older rows are untouched and the downgrade drops it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("dipole_dev", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("dipole_dev")
