"""Initial schema: campaigns, generations, structures, committees, scores, labels, evaluations.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written from the ORM of ``flows.storage.models`` with plain column types (arrays are
BLOBs of little-endian bytes, times are UTC), so this file never changes when the
Python-side types do. ``tests/flows/test_migrations.py`` checks it matches the ORM.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32, create_constraint=False)


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _fk(column: str, target: str, table: str, ondelete: str) -> sa.ForeignKeyConstraint:
    referred = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [target], name=op.f(f"fk_{table}_{column}_{referred}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("level_of_theory", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("name", name=op.f("uq_campaigns_name")),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column(
            "status", _enum("generationstatus", "pending", "running", "done", "failed"),
            nullable=False,
        ),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("explore_s", sa.Double(), nullable=True),
        sa.Column("select_s", sa.Double(), nullable=True),
        sa.Column("label_s", sa.Double(), nullable=True),
        sa.Column("train_s", sa.Double(), nullable=True),
        sa.Column("evaluate_s", sa.Double(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("converged", sa.Boolean(), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        _fk("campaign_id", "campaigns.id", "generations", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
        sa.UniqueConstraint(
            "campaign_id", "index", name=op.f("uq_generations_campaign_id_index")
        ),
    )
    op.create_table(
        "committees",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("generation_id", sa.Integer(), nullable=True),
        sa.Column("checkpoint_path", sa.String(length=1024), nullable=False),
        sa.Column("n_members", sa.Integer(), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("training_metrics", sa.JSON(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        _fk("campaign_id", "campaigns.id", "committees", "CASCADE"),
        _fk("generation_id", "generations.id", "committees", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_committees")),
    )
    op.create_index(op.f("ix_committees_campaign_id"), "committees", ["campaign_id"])
    op.create_index(op.f("ix_committees_generation_id"), "committees", ["generation_id"])
    _create_structures()
    _create_labels()
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("structure_id", sa.Integer(), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("energy_mean_eV", sa.Double(), nullable=False),
        sa.Column("energy_dev", sa.Double(), nullable=False),
        sa.Column("max_force_dev", sa.Double(), nullable=False),
        sa.Column(
            "decision",
            _enum("decision", "accurate", "candidate", "selected", "filtered", "duplicate",
                  "rejected"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        _fk("committee_id", "committees.id", "scores", "CASCADE"),
        _fk("structure_id", "structures.id", "scores", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scores")),
        sa.UniqueConstraint(
            "structure_id", "committee_id", name=op.f("uq_scores_structure_id_committee_id")
        ),
    )
    op.create_index(op.f("ix_scores_committee_id"), "scores", ["committee_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("label_set", sa.String(length=64), nullable=False),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("energy_mae_eV_atom", sa.Double(), nullable=False),
        sa.Column("energy_rmse_eV_atom", sa.Double(), nullable=False),
        sa.Column("force_mae_eV_A", sa.Double(), nullable=False),
        sa.Column("force_rmse_eV_A", sa.Double(), nullable=False),
        sa.Column("force_dev_spearman", sa.Double(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        _fk("committee_id", "committees.id", "evaluations", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint(
            "committee_id", "label_set", name=op.f("uq_evaluations_committee_id_label_set")
        ),
    )


def _create_structures() -> None:
    op.create_table(
        "structures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("generation_id", sa.Integer(), nullable=True),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("numbers", sa.LargeBinary(), nullable=False),  # uint8
        sa.Column("positions", sa.LargeBinary(), nullable=False),  # float64 (n, 3), Å
        sa.Column("cell", sa.LargeBinary(), nullable=False),  # float64 (3, 3), Å
        sa.Column("pbc", sa.LargeBinary(), nullable=False),  # bool (3,)
        sa.Column("momenta", sa.LargeBinary(), nullable=True),  # float64 (n, 3)
        sa.Column(
            "source",
            _enum("structuresource", "initial", "md", "rejected", "validation", "test"),
            nullable=False,
        ),
        sa.Column("sampler", sa.String(length=64), nullable=True),
        sa.Column("replica", sa.Integer(), nullable=True),
        sa.Column("temperature_K", sa.Double(), nullable=True),
        sa.Column("md_step", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        _fk("campaign_id", "campaigns.id", "structures", "CASCADE"),
        _fk("generation_id", "generations.id", "structures", "SET NULL"),
        _fk("parent_id", "structures.id", "structures", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_structures")),
        sa.UniqueConstraint(
            "campaign_id", "content_hash", name=op.f("uq_structures_campaign_id_content_hash")
        ),
    )
    op.create_index(op.f("ix_structures_generation_id"), "structures", ["generation_id"])


def _create_labels() -> None:
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("structure_id", sa.Integer(), nullable=False),
        sa.Column(
            "status", _enum("labelstatus", "pending", "running", "done", "failed"),
            nullable=False,
        ),
        sa.Column("energy_eV", sa.Double(), nullable=True),
        sa.Column("forces_eV_A", sa.LargeBinary(), nullable=True),  # float64 (n, 3), eV/Å
        sa.Column("dipole_eA", sa.LargeBinary(), nullable=True),  # float64 (3,), e·Å
        sa.Column("n_scf_cycles", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.JSON(), nullable=True),
        sa.Column("wall_s", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("level_of_theory", sa.JSON(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        _fk("structure_id", "structures.id", "labels", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.UniqueConstraint("structure_id", name=op.f("uq_labels_structure_id")),
    )
    op.create_index(op.f("ix_labels_status"), "labels", ["status"])


def downgrade() -> None:
    for table in (
        "evaluations", "scores", "labels", "structures", "committees", "generations",
        "campaigns",
    ):
        op.drop_table(table)
