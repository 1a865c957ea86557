"""The orchestrator's record: campaigns, generations, structures, scores, labels, models.

Units follow DESIGN.md: eV, Å, eV/Å, s, K, e·Å. Arrays are raw little-endian bytes
(:class:`~flows.storage.types.NumpyArray`) that read back as numpy arrays, bit-exact.
The schema is created only by the Alembic migrations in ``flows/storage/migrations``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Double,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column, relationship

from flows.storage.types import NumpyArray, UTCDateTime, utc_now
from nnp_core.selection import Decision as SelectionDecision

#: constraint names the same on every database, so migrations can refer to them
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every alflow table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        # explicit: SQLAlchemy 2.1 maps float to Double, 2.0 to Float; the migrations say Double
        float: Double(),
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[dict[str, Any]]: JSON(),
    }


class GenerationStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class LabelStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class StructureSource(enum.StrEnum):
    """Where a frame came from."""

    INITIAL = "initial"  #: sampled around the starting structure
    MD = "md"  #: recorded during exploration
    REJECTED = "rejected"  #: the frame that stopped a replica (beyond trust_hi)
    VALIDATION = "validation"  #: drawn for the fixed validation set
    TEST = "test"  #: supplied by the user for testing only


# Decision is defined once, by the selection code that makes the decisions.
Decision = SelectionDecision


def _enum(enum_type: type[enum.Enum]) -> Enum:
    """A portable VARCHAR enum column storing the members' values."""
    return Enum(
        enum_type,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def _campaign_fk(*, index: bool) -> MappedColumn[int]:
    """The owning campaign; ``index=False`` where a unique constraint leads with it."""
    return mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=index)


class Campaign(Base):
    """One active-learning run: a system, a reference method and its settings."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    #: ``CampaignConfig.snapshot()`` at creation
    config: Mapped[dict[str, Any]]
    #: the reference method; every label must carry exactly this dict
    level_of_theory: Mapped[dict[str, Any]]

    generations: Mapped[list[Generation]] = relationship(
        back_populates="campaign", order_by="Generation.index"
    )


class Generation(Base):
    """One pass of explore → select → label → train → evaluate."""

    __tablename__ = "generations"
    __table_args__ = (UniqueConstraint("campaign_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk(index=False)
    index: Mapped[int]
    status: Mapped[GenerationStatus] = mapped_column(
        _enum(GenerationStatus), default=GenerationStatus.PENDING
    )
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    explore_s: Mapped[float | None]
    select_s: Mapped[float | None]
    label_s: Mapped[float | None]
    train_s: Mapped[float | None]
    evaluate_s: Mapped[float | None]
    metrics: Mapped[dict[str, Any] | None]
    converged: Mapped[bool] = mapped_column(default=False)
    stop_reason: Mapped[str | None] = mapped_column(Text)

    campaign: Mapped[Campaign] = relationship(back_populates="generations")


class Structure(Base):
    """A frame: numbers, positions (Å), cell (Å), pbc, and where it came from."""

    __tablename__ = "structures"
    __table_args__ = (UniqueConstraint("campaign_id", "content_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk(index=False)
    generation_id: Mapped[int | None] = mapped_column(
        ForeignKey("generations.id", ondelete="SET NULL"), index=True
    )
    n_atoms: Mapped[int]
    numbers: Mapped[np.ndarray] = mapped_column(NumpyArray("u1", (-1,)))
    positions: Mapped[np.ndarray] = mapped_column(NumpyArray("f8", (-1, 3)))
    cell: Mapped[np.ndarray] = mapped_column(NumpyArray("f8", (3, 3)))
    pbc: Mapped[np.ndarray] = mapped_column(NumpyArray("?", (3,)))
    #: ASE momenta (amu·Å/(ASE time unit)) when the frame is a restart point
    momenta: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1, 3)))
    source: Mapped[StructureSource] = mapped_column(_enum(StructureSource))
    sampler: Mapped[str | None] = mapped_column(String(64))
    replica: Mapped[int | None]
    temperature_K: Mapped[float | None]
    md_step: Mapped[int | None]
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("structures.id", ondelete="SET NULL")
    )
    #: ``nnp_core.structures.frame_hash``
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    label: Mapped[Label | None] = relationship(back_populates="structure")
    generation: Mapped[Generation | None] = relationship()


class Committee(Base):
    """A trained committee: where its checkpoint is and how training went."""

    __tablename__ = "committees"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk(index=True)
    generation_id: Mapped[int | None] = mapped_column(
        ForeignKey("generations.id", ondelete="SET NULL"), index=True
    )
    checkpoint_path: Mapped[str] = mapped_column(String(1024))
    n_members: Mapped[int]
    architecture: Mapped[str] = mapped_column(String(64))
    training_metrics: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Score(Base):
    """A committee's verdict on one frame."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("structure_id", "committee_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("structures.id", ondelete="CASCADE"))
    committee_id: Mapped[int] = mapped_column(
        ForeignKey("committees.id", ondelete="CASCADE"), index=True
    )
    #: committee-mean energy, eV
    energy_mean_eV: Mapped[float]
    #: std over members of E / sqrt(n_atoms), eV/√atom
    energy_dev: Mapped[float]
    #: max over atoms of the per-atom force deviation, eV/Å (the selection score)
    max_force_dev: Mapped[float]
    decision: Mapped[Decision] = mapped_column(_enum(Decision))
    reason: Mapped[str | None] = mapped_column(Text)


class Label(Base):
    """A reference calculation of one frame, from queue to result (or quarantine)."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    structure_id: Mapped[int] = mapped_column(
        ForeignKey("structures.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[LabelStatus] = mapped_column(
        _enum(LabelStatus), default=LabelStatus.PENDING, index=True
    )
    energy_eV: Mapped[float | None]
    forces_eV_A: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1, 3)))
    dipole_eA: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (3,)))
    n_scf_cycles: Mapped[int | None] = mapped_column(Integer)
    #: one entry per SCF attempt (settings tried, outcome), written by the backend
    attempts: Mapped[list[dict[str, Any]] | None]
    wall_s: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    level_of_theory: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    structure: Mapped[Structure] = relationship(back_populates="label")


class Evaluation(Base):
    """A committee's errors on a named set of labels (``"fresh"``, ``"validation"``)."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("committee_id", "label_set"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    committee_id: Mapped[int] = mapped_column(ForeignKey("committees.id", ondelete="CASCADE"))
    label_set: Mapped[str] = mapped_column(String(64))
    n_frames: Mapped[int]
    energy_mae_eV_atom: Mapped[float]
    energy_rmse_eV_atom: Mapped[float]
    force_mae_eV_A: Mapped[float]
    force_rmse_eV_A: Mapped[float]
    #: Spearman rank correlation of max_force_dev with the true max force error
    force_dev_spearman: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Runner(Base):
    """Who runs a campaign's generation loop now (one row per campaign at most): the
    process ``host:pid[:tag]``, when it started and its last heartbeat. A second runner
    is refused while the owner is alive; the row of an owner that died (same host,
    process gone, or no heartbeat for long) is taken over."""

    __tablename__ = "runners"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utc_now)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utc_now)
