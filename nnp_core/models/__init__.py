"""Architectures, looked up by name through the registry."""

from nnp_core.models.base import StackedModule
from nnp_core.models.bpnn import BehlerParrinello
from nnp_core.models.mace import MACE
from nnp_core.models.painn import PaiNN
from nnp_core.models.registry import (
    MODEL_REGISTRY,
    Setting,
    StackedModel,
    architecture_hparams,
    architecture_names,
    architecture_settings,
    build_model,
    register_model,
)

__all__ = [
    "BehlerParrinello",
    "MACE",
    "PaiNN",
    "MODEL_REGISTRY",
    "Setting",
    "StackedModel",
    "StackedModule",
    "architecture_hparams",
    "architecture_names",
    "architecture_settings",
    "build_model",
    "register_model",
]
