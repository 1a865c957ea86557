"""Typed training settings for a committee (units in the field names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class TrainConfig:
    """How a committee is trained.

    Loss = ``energy_weight`` * MSE(E/atom) + ``force_weight`` * MSE(F), both divided by
    the square of the fitted per-atom energy scale so the weights are dimensionless,
    + ``dipole_weight`` * MSE(dipole components) divided by the square of the dipole
    scale (the fixed-charge model's residual on the training dipoles; frames without a
    reference dipole add nothing). ``dipole_weight > 0`` gives a new committee a dipole
    head (``nnp_core.models.base.StackedModule``); with 0 the dipole plays no part.
    The default 0.01 costs the forces nothing measurable and reaches 0.012 e·Å dipole
    MAE at 100 ethanol labels (0.074 with fixed charges); 1.0 costs 20% in force MAE
    (``bench.dipole_accuracy``).
    """

    max_epochs: int = 400
    batch_size_frames: int = 32
    learning_rate: float = 3e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 1e-5
    energy_weight: float = 0.1
    force_weight: float = 1.0
    dipole_weight: float = 0.01
    validation_fraction: float = 0.1
    early_stopping_patience_epochs: int = 40
    lr_plateau_patience_epochs: int = 10
    lr_plateau_factor: float = 0.5
    bootstrap: bool = True
    #: exponential moving average of the weights, updated after every step with this
    #: decay (mace_run_train's --ema_decay 0.99); validation, early stopping and the
    #: returned members use the averaged weights. 0: off
    ema_decay: float = 0.0
    #: a warm start (training from the previous generation's committee) runs at most this
    #: many epochs instead of ``max_epochs``; None: ``max_epochs``. The previous committee
    #: already fits all but the newest labels, so a MACE campaign can cap its generations'
    #: training near the QM time they follow (``bench.warm_start_budget``)
    warm_start_max_epochs: int | None = None
    #: a warm start's (initial) learning rate; None: ``learning_rate``. A short warm start
    #: at a from-scratch rate (MACE's 1e-2) first undoes much of what the previous
    #: committee knew (``bench.warm_start_budget``)
    warm_start_learning_rate: float | None = None
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float64"

    def __post_init__(self) -> None:
        checks = {
            "max_epochs": self.max_epochs >= 1,
            "warm_start_max_epochs": self.warm_start_max_epochs is None or self.warm_start_max_epochs >= 1,
            "batch_size_frames": self.batch_size_frames >= 1,
            "learning_rate": self.learning_rate > 0,
            "warm_start_learning_rate": self.warm_start_learning_rate is None or self.warm_start_learning_rate > 0,
            "min_learning_rate": 0 <= self.min_learning_rate <= self.learning_rate,
            "weight_decay": self.weight_decay >= 0,
            "energy_weight": self.energy_weight >= 0,
            "force_weight": self.force_weight >= 0,
            "dipole_weight": self.dipole_weight >= 0,
            "validation_fraction": 0 < self.validation_fraction < 1,
            "early_stopping_patience_epochs": self.early_stopping_patience_epochs >= 1,
            "lr_plateau_patience_epochs": self.lr_plateau_patience_epochs >= 1,
            "lr_plateau_factor": 0 < self.lr_plateau_factor < 1,
            "ema_decay": 0 <= self.ema_decay < 1,
            "dtype": self.dtype in ("float32", "float64"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig field(s): {', '.join(bad)} (got {self})")
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("TrainConfig: energy_weight and force_weight cannot both be 0")

    def epochs(self, warm_start: bool) -> int:
        """The cap on epochs of a training from scratch or of a warm start."""
        if warm_start and self.warm_start_max_epochs is not None:
            return self.warm_start_max_epochs
        return self.max_epochs

    def for_warm_start(self) -> "TrainConfig":
        """These settings with a warm start's epochs and learning rate in place of
        ``max_epochs`` and ``learning_rate`` (``min_learning_rate`` kept at most that)."""
        lr = self.learning_rate if self.warm_start_learning_rate is None else self.warm_start_learning_rate
        return replace(self, max_epochs=self.epochs(warm_start=True), learning_rate=lr,
                       min_learning_rate=min(self.min_learning_rate, lr),
                       warm_start_max_epochs=None, warm_start_learning_rate=None)

    def to_dict(self) -> dict:
        return asdict(self)
