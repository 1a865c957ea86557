"""IR spectra of a campaign's committees (``alflow spectrum``): the ``spectra`` table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-15

Arrays are BLOBs of little-endian float64 (``flows.storage.types.NumpyArray``), times
UTC, as in 0001. A new table only: older rows are untouched and the downgrade drops it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (name, nullable) of the array columns
ARRAYS = (
    ("wavenumbers_cm1", False), ("intensity", False), ("band_low", True), ("band_high", True),
    ("harmonic_frequencies_cm1", False), ("harmonic_intensities_km_mol", False),
    ("reference_frequencies_cm1", True), ("reference_intensities_km_mol", True),
)


def upgrade() -> None:
    op.create_table(
        "spectra",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        *(sa.Column(name, sa.LargeBinary(), nullable=nullable) for name, nullable in ARRAYS),
        sa.Column("mean_temperature_K", sa.Double(), nullable=False),
        sa.Column("energy_drift_meV_per_atom_ps", sa.Double(), nullable=False),
        sa.Column("wall_s", sa.Double(), nullable=False),
        sa.Column("csv_path", sa.String(length=1024), nullable=False),
        sa.Column("png_path", sa.String(length=1024), nullable=False),
        sa.Column("harmonic_csv_path", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_spectra_campaign_id_campaigns"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["committee_id"], ["committees.id"],
                                name=op.f("fk_spectra_committee_id_committees"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spectra")),
    )
    op.create_index(op.f("ix_spectra_campaign_id"), "spectra", ["campaign_id"])
    op.create_index(op.f("ix_spectra_committee_id"), "spectra", ["committee_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_spectra_committee_id"), table_name="spectra")
    op.drop_index(op.f("ix_spectra_campaign_id"), table_name="spectra")
    op.drop_table("spectra")
