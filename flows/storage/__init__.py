"""The orchestrator's record: SQLAlchemy models, the label queue, frames in and out.

The caller owns the session and the transaction::

    engine = init_db("sqlite:///runs/ethanol/alflow.db")
    with Session(engine) as session, session.begin():
        ids = add_structures(session, campaign.id, frames, source=StructureSource.MD)

Only :func:`claim_pending_labels`, given an engine, runs its own transaction.
"""

from flows.storage.campaigns import (
    LevelOfTheoryMismatch,
    check_level_of_theory,
    ensure_campaign,
    get_campaign,
    latest_generation,
    new_generation,
    normalise_level_of_theory,
)
from flows.storage.engine import alembic_config, immediate_engine, init_db, make_engine
from flows.storage.export import export_ase_db, export_extxyz, to_dataframe
from flows.storage.frames import add_structures, atoms_from_structure, labelled_atoms
from flows.storage.labels import (
    LabelStateError,
    claim_pending_labels,
    complete_label,
    enqueue_labels,
    fail_label,
    reset_stale_running,
)
from flows.storage.models import (
    Base,
    Campaign,
    Committee,
    Decision,
    Evaluation,
    Generation,
    GenerationStatus,
    Label,
    LabelStatus,
    Runner,
    Score,
    Structure,
    StructureSource,
)

__all__ = [
    "Base",
    "Campaign",
    "Committee",
    "Decision",
    "Evaluation",
    "Generation",
    "GenerationStatus",
    "Label",
    "LabelStateError",
    "LabelStatus",
    "Runner",
    "LevelOfTheoryMismatch",
    "Score",
    "Structure",
    "StructureSource",
    "add_structures",
    "alembic_config",
    "atoms_from_structure",
    "check_level_of_theory",
    "claim_pending_labels",
    "complete_label",
    "ensure_campaign",
    "enqueue_labels",
    "export_ase_db",
    "export_extxyz",
    "fail_label",
    "get_campaign",
    "immediate_engine",
    "init_db",
    "labelled_atoms",
    "latest_generation",
    "make_engine",
    "new_generation",
    "normalise_level_of_theory",
    "reset_stale_running",
    "to_dataframe",
]
