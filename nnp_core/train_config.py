"""Typed training settings for a committee (units in the field names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from nnp_core.device import DEVICE_PATTERN


@dataclass(frozen=True)
class TrainConfig:
    """How a committee is trained.

    Loss = ``energy_weight`` * MSE(E/atom) + ``force_weight`` * MSE(F), both divided by
    the square of the fitted per-atom energy scale so the weights are dimensionless,
    + ``dipole_weight`` * MSE(dipole components) divided by the square of the dipole
    scale (the fixed-charge model's residual on the training dipoles; frames without a
    reference dipole add nothing). ``dipole_weight > 0`` gives a new committee a dipole
    head (``nnp_core.models.base.StackedModule``); with 0 the dipole plays no part.
    The default 0.1 costs the forces nothing measurable on ethanol (BPNN, 50 and 200
    labels: 99.9 vs 100.2 and 33.7 vs 33.7 meV/Å with 0.01) and fits the dipole better
    than 0.01 did (0.0155 vs 0.0200 e·Å at 50 labels, 0.0053 vs 0.0066 at 200; 0.074
    with fixed charges), which brings the harmonic IR intensities nearer PBE's; 1.0
    costs 23% in force MAE (``bench.ir_intensity``, ``bench.dipole_accuracy``).
    """

    max_epochs: int = 400
    batch_size_frames: int = 32
    learning_rate: float = 3e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 1e-5
    energy_weight: float = 0.1
    force_weight: float = 1.0
    dipole_weight: float = 0.1
    validation_fraction: float = 0.1
    early_stopping_patience_epochs: int = 40
    lr_plateau_patience_epochs: int = 10
    lr_plateau_factor: float = 0.5
    bootstrap: bool = True
    #: exponential moving average of the weights, updated after every step with this
    #: decay (mace_run_train's --ema_decay 0.99); validation, early stopping and the
    #: returned members use the averaged weights. 0: off
    ema_decay: float = 0.0
    #: train each generation's committee from the previous one (True), or from scratch
    #: with fresh weights (False, as DP-GEN does unless told to reuse a model): warm-started
    #: members inherit each other's agreement; on ethanol's hot frames the campaigns' own
    #: committees were 2.5-3.4x overconfident, their labels retrained from scratch 1.9-2.3x
    #: (``bench.rare_event_campaigns --retrain``)
    warm_start: bool = True
    #: shrink and perturb (Ash & Adams, NeurIPS 2020) at every warm start: each member's
    #: parameters become ``warm_start_shrink`` x the previous committee's plus
    #: ``warm_start_perturb`` x a fresh initialisation of its own (drawn anew for every
    #: training set size), so the members keep most of what they knew but lose part of
    #: the agreement they inherited. 1 and 0: a plain warm start
    warm_start_shrink: float = 1.0
    warm_start_perturb: float = 0.0
    #: a warm start (training from the previous generation's committee) runs at most this
    #: many epochs instead of ``max_epochs``; None: ``max_epochs``. The previous committee
    #: already fits all but the newest labels, so a MACE campaign can cap its generations'
    #: training near the QM time they follow (``bench.warm_start_budget``)
    warm_start_max_epochs: int | None = None
    #: a warm start's (initial) learning rate; None: ``learning_rate``. A short warm start
    #: at a from-scratch rate (MACE's 1e-2) first undoes much of what the previous
    #: committee knew (``bench.warm_start_budget``)
    warm_start_learning_rate: float | None = None
    #: with the two caps above: warm starts number 1, 1 + N, 1 + 2N, ... of a campaign
    #: (its generations 1, 1 + N, ...) are long ones, without the caps; those in between
    #: fine-tune the last long one (``for_warm_start_number``). None: every warm start capped
    long_warm_start_every: int | None = None
    #: mace_run_train's "stage two" (``--swa``): the last this many epochs of the cap (or
    #: as many more once every member has stopped early) train on the stage-two loss
    #: weights at ``stage_two_learning_rate``, starting from each member's best weights so
    #: far, with early stopping started afresh on the stage-two validation loss. 0: off
    stage_two_epochs: int = 0
    #: stage two's weights (mace_run_train: energy 1000 and forces 100 after 1 and 100, the
    #: energy's share 1000x; here 10 and 1 after 0.1 and 1, 100x)
    stage_two_energy_weight: float = 10.0
    stage_two_force_weight: float = 1.0
    stage_two_learning_rate: float = 1e-3
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float64"
    #: where the epochs run ("cpu", "cuda", "cuda:N", "auto": :mod:`nnp_core.device`);
    #: the trained committee comes back to the host either way
    device: str = "cpu"

    def __post_init__(self) -> None:
        checks = {
            "max_epochs": self.max_epochs >= 1,
            "warm_start_max_epochs": self.warm_start_max_epochs is None or self.warm_start_max_epochs >= 1,
            "warm_start_shrink": 0 < self.warm_start_shrink <= 1,
            "warm_start_perturb": self.warm_start_perturb >= 0,
            "batch_size_frames": self.batch_size_frames >= 1,
            "learning_rate": self.learning_rate > 0,
            "warm_start_learning_rate": self.warm_start_learning_rate is None or self.warm_start_learning_rate > 0,
            "long_warm_start_every": self.long_warm_start_every is None or self.long_warm_start_every >= 1,
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
            "stage_two_epochs": 0 <= self.stage_two_epochs < self.max_epochs,
            "stage_two_energy_weight": self.stage_two_energy_weight >= 0,
            "stage_two_force_weight": self.stage_two_force_weight >= 0,
            "stage_two_learning_rate": self.stage_two_learning_rate > 0,
            "dtype": self.dtype in ("float32", "float64"),
            "device": isinstance(self.device, str) and bool(DEVICE_PATTERN.match(self.device)),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig field(s): {', '.join(bad)} (got {self})")
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("TrainConfig: energy_weight and force_weight cannot both be 0")
        if self.stage_two_epochs and self.stage_two_energy_weight == 0 and self.stage_two_force_weight == 0:
            raise ValueError("TrainConfig: stage_two_energy_weight and stage_two_force_weight cannot both be 0")

    def epochs(self, warm_start: bool) -> int:
        """The cap on epochs of a training from scratch or of a warm start."""
        if warm_start and self.warm_start_max_epochs is not None:
            return self.warm_start_max_epochs
        return self.max_epochs

    def for_warm_start(self) -> "TrainConfig":
        """These settings with a warm start's epochs and learning rate in place of
        ``max_epochs`` and ``learning_rate`` (``min_learning_rate`` kept at most that,
        ``stage_two_epochs`` scaled with the epochs)."""
        lr = self.learning_rate if self.warm_start_learning_rate is None else self.warm_start_learning_rate
        epochs = self.epochs(warm_start=True)
        # a capped warm start keeps stage two's share of the epochs
        stage_two = min(epochs - 1, round(self.stage_two_epochs * epochs / self.max_epochs))
        return replace(self, max_epochs=epochs, learning_rate=lr, stage_two_epochs=stage_two,
                       min_learning_rate=min(self.min_learning_rate, lr),
                       warm_start_max_epochs=None, warm_start_learning_rate=None)

    def for_warm_start_number(self, number: int) -> "TrainConfig":
        """These settings for a campaign's ``number``-th warm start (1: the first, its
        generation 1): without the warm-start caps when it is a long one
        (``long_warm_start_every``)."""
        every = self.long_warm_start_every
        if every is not None and number >= 1 and (number - 1) % every == 0:
            return replace(self, warm_start_max_epochs=None, warm_start_learning_rate=None)
        return self

    def stage_two(self) -> "TrainConfig":
        """These settings with stage two's loss weights and learning rate."""
        lr = self.stage_two_learning_rate
        return replace(self, energy_weight=self.stage_two_energy_weight, force_weight=self.stage_two_force_weight,
                       learning_rate=lr, min_learning_rate=min(self.min_learning_rate, lr), stage_two_epochs=0)

    def to_dict(self) -> dict:
        return asdict(self)
