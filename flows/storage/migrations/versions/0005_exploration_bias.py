"""Biased exploration (``[explore] bias``): each MD frame's bias energy and CV values,
and each replica's metadynamics hills.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

New nullable columns only (NULL: the frame was explored without a bias, or the replica
deposited no hills): older rows are untouched and the downgrade drops the columns.
Arrays are BLOBs of little-endian float64 (``flows.storage.types.NumpyArray``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("structures") as batch:
        batch.add_column(sa.Column("bias_energy_eV", sa.Double(), nullable=True))
        batch.add_column(sa.Column("bias_cvs", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("replica_runs") as batch:
        batch.add_column(sa.Column("hills", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replica_runs") as batch:
        batch.drop_column("hills")
    with op.batch_alter_table("structures") as batch:
        batch.drop_column("bias_cvs")
        batch.drop_column("bias_energy_eV")
