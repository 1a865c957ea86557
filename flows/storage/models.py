"""The orchestrator's record: campaigns, generations, structures, scores, labels, models.

Units follow docs/architecture.md: eV, Å, eV/Å, s, K, e·Å. Arrays are raw little-endian bytes
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
    #: ``alflow run --new-committee`` accepted new [committee] settings: the next
    #: training starts from scratch
    new_committee_pending: Mapped[bool] = mapped_column(default=False)

    generations: Mapped[list[Generation]] = relationship(
        back_populates="campaign", order_by="Generation.index"
    )


class Generation(Base):
    """One pass of explore → select → label → train → decide, with its typed outcome.

    What each step found is a column of its own (``None`` until that step ran), and
    each finished step has a :class:`StepMark`; the committee a generation trained, its
    evaluations and any retrains are rows of their own tables."""

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
    #: exploration: MD steps of all replicas, their rate, and the recorded frames by verdict
    replica_steps: Mapped[int | None]
    replica_steps_per_s: Mapped[float | None]
    md_trusted: Mapped[int | None]
    md_rejected: Mapped[int | None]
    md_failed: Mapped[int | None]
    #: selection: this generation's explored frames by :class:`Decision`
    n_accurate: Mapped[int | None]
    n_candidate: Mapped[int | None]
    n_rejected: Mapped[int | None]
    n_filtered: Mapped[int | None]
    n_duplicate: Mapped[int | None]
    n_selected: Mapped[int | None]
    #: labelling: the labels this generation's label step finished and quarantined
    labels_done: Mapped[int | None]
    labels_failed: Mapped[int | None]
    converged: Mapped[bool] = mapped_column(default=False)
    stop_reason: Mapped[str | None] = mapped_column(Text)

    campaign: Mapped[Campaign] = relationship(back_populates="generations")
    steps: Mapped[list[StepMark]] = relationship(order_by="StepMark.finished_at")

    def selection_counts(self) -> dict[str, int] | None:
        """The selection's counts by decision value, or None before the select step."""
        if self.n_accurate is None:
            return None
        return {d.value: getattr(self, f"n_{d.value}") or 0 for d in Decision}

    @property
    def accurate_fraction(self) -> float | None:
        """Share of the explored frames the committee already trusted (None: none explored)."""
        counts = self.selection_counts()
        total = sum(counts.values()) if counts else 0
        return None if not total else counts["accurate"] / total


class StepMark(Base):
    """A finished step of a generation and its wall time: a killed run resumes at the
    first step without one (``flows.pipeline`` writes them)."""

    __tablename__ = "step_marks"

    generation_id: Mapped[int] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    seconds: Mapped[float]
    finished_at: Mapped[datetime] = mapped_column(default=utc_now)


class ReplicaRun(Base):
    """How one replica's exploration of a generation went."""

    __tablename__ = "replica_runs"

    generation_id: Mapped[int] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )
    replica: Mapped[int] = mapped_column(primary_key=True)
    steps: Mapped[int]
    restarts: Mapped[int]
    #: ``nnp_core.md_results.StopReason`` value
    stop: Mapped[str] = mapped_column(String(32))
    #: metadynamics hills of the replica after this exploration, all generations so
    #: far: rows (centre_1..centre_D in radians, height eV), flattened; NULL without metad
    hills: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))


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
    #: the exploration bias at this MD frame (eV) and its CV values (radians for
    #: torsions); NULL when explored without a bias (``[explore] bias``)
    bias_energy_eV: Mapped[float | None]
    bias_cvs: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("structures.id", ondelete="SET NULL")
    )
    #: ``nnp_core.structures.frame_hash``
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    label: Mapped[LabelRow | None] = relationship(back_populates="structure")
    generation: Mapped[Generation | None] = relationship()


class CommitteeRow(Base):
    """A trained committee: where its checkpoint is, what it was trained on, its calibration."""

    __tablename__ = "committees"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk(index=True)
    generation_id: Mapped[int | None] = mapped_column(
        ForeignKey("generations.id", ondelete="SET NULL"), index=True
    )
    checkpoint_path: Mapped[str] = mapped_column(String(1024))
    n_members: Mapped[int]
    architecture: Mapped[str] = mapped_column(String(64))
    #: labelled training frames it was trained on
    n_training_frames: Mapped[int] = mapped_column(default=0)
    training_wall_s: Mapped[float | None]
    #: ``nnp_core.uncertainty.Calibration``: the scales of force_dev and energy_dev
    force_dev_scale: Mapped[float] = mapped_column(default=1.0)
    energy_dev_scale: Mapped[float] = mapped_column(default=1.0)
    #: "validation", "fresh labels of generations [..]" or "none" (kept from a warm start)
    calibrated_on: Mapped[str | None] = mapped_column(String(200))
    #: per member: epochs run, best epoch, training and validation errors
    member_reports: Mapped[list[dict[str, Any]] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    retrain: Mapped[Retrain | None] = relationship(foreign_keys="Retrain.committee_id")


class Retrain(Base):
    """A committee trained outside the loop (``alflow retrain``, the retrain deployment)
    into a finished generation: a row of its own, never a rewrite of the generation."""

    __tablename__ = "retrains"

    committee_id: Mapped[int] = mapped_column(
        ForeignKey("committees.id", ondelete="CASCADE"), primary_key=True
    )
    generation_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"))
    #: training labels the previous committee had not seen
    new_labels: Mapped[int]
    previous_committee_id: Mapped[int | None] = mapped_column(
        ForeignKey("committees.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


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
    #: the members' dipole spread, e·Å (committees with a dipole head; else NULL)
    dipole_dev: Mapped[float | None]
    #: the selection's verdict; None from exploration until the select step judges the frame
    decision: Mapped[Decision | None] = mapped_column(_enum(Decision))
    reason: Mapped[str | None] = mapped_column(Text)
    #: the true largest per-atom force error of the committee mean, eV/Å, once the
    #: frame is labelled (fresh-label evaluation of the committee that explored it)
    max_force_error_eV_A: Mapped[float | None]


class LabelRow(Base):
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
    #: "fresh": the generation whose new labels these are; "validation": the committee's generation
    generation_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"))
    n_frames: Mapped[int]
    energy_mae_eV_atom: Mapped[float]
    energy_rmse_eV_atom: Mapped[float]
    force_mae_eV_A: Mapped[float]
    force_rmse_eV_A: Mapped[float]
    #: Spearman rank correlation of max_force_dev with the true max force error
    force_dev_spearman: Mapped[float | None]
    #: sums over the frames' atoms of |F_ref - F̄|² and force_dev², eV²/Å² (pooled into
    #: calibrations, ``flows.steps.training.fresh_calibration``)
    sum_sq_force_error: Mapped[float | None]
    sum_sq_force_dev: Mapped[float | None]
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


class SpectrumRow(Base):
    """An IR spectrum of a committee (``alflow spectrum``, ``flows.spectrum``): the
    spectrum of the committee-mean dipole along NVE MD and its committee band, the
    harmonic sticks it is compared with, how the MD went, and the files written."""

    __tablename__ = "spectra"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _campaign_fk(index=True)
    committee_id: Mapped[int] = mapped_column(ForeignKey("committees.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    #: ``SpectrumSettings`` and ``nnp_core.ir.IRSpectrum.settings`` (window, correction, resolution...)
    settings: Mapped[dict[str, Any]]
    #: the axis (cm⁻¹), the mean-dipole spectrum (maximum 1) and the members' min/max (None: one member)
    wavenumbers_cm1: Mapped[np.ndarray] = mapped_column(NumpyArray("f8", (-1,)))
    intensity: Mapped[np.ndarray] = mapped_column(NumpyArray("f8", (-1,)))
    band_low: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    band_high: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    #: the 95% interval of the spectrum over the replicas (sampling error; None: one replica,
    #: or a spectrum stored before revision 0007)
    sampling_low: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    sampling_high: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    #: the committee's harmonic frequencies (cm⁻¹) and IR intensities (km/mol) at its minimum
    harmonic_frequencies_cm1: Mapped[np.ndarray] = mapped_column(NumpyArray("f8", (-1,)))
    harmonic_intensities_km_mol: Mapped[np.ndarray] = mapped_column(NumpyArray("f8", (-1,)))
    #: the reference backend's, at the same geometry (``--reference-harmonic``), else None
    reference_frequencies_cm1: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    reference_intensities_km_mol: Mapped[np.ndarray | None] = mapped_column(NumpyArray("f8", (-1,)))
    #: kinetic temperature over the NVE production (K) and its total-energy drift
    mean_temperature_K: Mapped[float]
    energy_drift_meV_per_atom_ps: Mapped[float]
    wall_s: Mapped[float]
    #: the files written (relative to work_dir when inside it)
    csv_path: Mapped[str] = mapped_column(String(1024))
    png_path: Mapped[str] = mapped_column(String(1024))
    harmonic_csv_path: Mapped[str] = mapped_column(String(1024))
