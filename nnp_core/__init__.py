"""Neural-network interatomic potentials: models, committees, training, MD, selection.

Depends on torch, ase and numpy only; units are ASE's (eV, Å, eV/Å, fs, K, amu).
"""

from nnp_core.batch import atoms_to_batch
from nnp_core.calculator import CommitteeCalculator
from nnp_core.committee import Committee, CommitteePrediction, load_committee
from nnp_core.models import MODEL_REGISTRY, build_model, register_model
from nnp_core.train_config import TrainConfig
from nnp_core.training import TrainingReport, train_committee
from nnp_core.uncertainty import Calibration, committee_statistics, fit_calibration

__all__ = [
    "MODEL_REGISTRY",
    "Calibration",
    "Committee",
    "CommitteeCalculator",
    "CommitteePrediction",
    "TrainConfig",
    "TrainingReport",
    "atoms_to_batch",
    "build_model",
    "committee_statistics",
    "fit_calibration",
    "load_committee",
    "register_model",
    "train_committee",
]
