"""The orchestrator's record, and the only code that queries it: SQLAlchemy models,
typed read/write functions, the label queue, frames in and out.

The caller owns the transaction, opened through this package::

    engine = init_db("sqlite:///runs/ethanol/alflow.db")
    with transaction(engine) as session:
        ids = add_structures(session, campaign.id, frames, source=StructureSource.MD)

Only :func:`claim_pending_labels`, given an engine, runs its own transaction. Nothing
outside ``flows.storage`` imports sqlalchemy (an import-linter contract).
"""

from sqlalchemy.exc import DBAPIError as DatabaseError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from flows.storage.campaigns import (
    LevelOfTheoryMismatch,
    check_level_of_theory,
    ensure_campaign,
    normalise_level_of_theory,
)
from flows.storage.engine import alembic_config, immediate_engine, init_db, make_engine
from flows.storage.export import export_ase_db, export_extxyz, to_dataframe
from flows.storage.frames import (
    PRODUCTION_SAMPLER,
    add_score,
    add_structures,
    atoms_from_structure,
    count_structures,
    frames_without_score,
    labelled_atoms,
    labelled_structures,
    last_md_frames,
    reference_structure,
    scored_frames,
    stored_hashes,
)
from flows.storage.labels import (
    LabelStateError,
    claim_pending_labels,
    complete_label,
    count_labels,
    enqueue_labels,
    fail_label,
    generation_labels,
    label_atoms,
    release_labels,
    requeue_failed_labels,
    running_labels,
)
from flows.storage.models import (
    Base,
    Campaign,
    CommitteeRow,
    Decision,
    Evaluation,
    Generation,
    GenerationStatus,
    LabelRow,
    LabelStatus,
    ReplicaRun,
    Retrain,
    Runner,
    Score,
    SpectrumRow,
    StepMark,
    Structure,
    StructureSource,
)
from flows.storage.records import (
    add_committee,
    add_evaluation,
    add_retrain,
    campaign,
    campaign_id,
    committees,
    done_steps,
    evaluation,
    finish_generation,
    fresh_evaluations,
    generation,
    generation_committee,
    generations,
    label_counts,
    latest_committee,
    mark_step,
    new_committee_pending,
    pending_label_ids,
    reading,
    record_exploration,
    replica_hills,
    record_frame_errors,
    record_labels,
    record_selection,
    set_new_committee_pending,
    transaction,
)
from flows.storage.spectra import (
    add_spectrum,
    latest_spectrum,
    next_spectrum_id,
    set_spectrum_files,
    spectra,
)
from flows.storage.types import utc_now

__all__ = [name for name in dir() if not name.startswith("_")]
