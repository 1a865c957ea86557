"""A committee of NNPs: M members of one architecture evaluated in one batched pass."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from nnp_core.batch import Batch, atoms_to_batch
from nnp_core.device import batch_to, resolve_device
from nnp_core.models import MODEL_REGISTRY, StackedModel, build_model
from nnp_core.models.base import parameters_to_be_loaded
from nnp_core.models.registry import EnergyBias
from nnp_core.uncertainty import Calibration, CommitteeStatistics, committee_statistics, dipole_statistics

CHECKPOINT_JSON = "committee.json"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class CommitteePrediction:
    """Per-member predictions for B frames (n atoms in total) and their statistics.

    Arrays are numpy; energies in eV, forces in eV/Å; deviations raw (uncalibrated),
    with the calibrated versions alongside.
    """

    member_energies: np.ndarray  # (M, B)
    member_forces: np.ndarray  # (M, n, 3)
    n_atoms: np.ndarray  # (B,)
    energy_mean: np.ndarray  # (B,)
    forces_mean: np.ndarray  # (n, 3)
    force_dev: np.ndarray  # (n,)
    max_force_dev: np.ndarray  # (B,)
    energy_dev: np.ndarray  # (B,)
    calibration: Calibration
    #: with a dipole head (else None): e·Å
    member_dipoles: np.ndarray | None = None  # (M, B, 3)
    dipole_mean: np.ndarray | None = None  # (B, 3)
    dipole_dev: np.ndarray | None = None  # (B,)

    @property
    def calibrated_max_force_dev(self) -> np.ndarray:
        return self.max_force_dev * self.calibration.force_dev_scale

    @property
    def calibrated_energy_dev(self) -> np.ndarray:
        return self.energy_dev * self.calibration.energy_dev_scale

    def frame_slices(self) -> list[slice]:
        ends = np.cumsum(self.n_atoms)
        return [slice(int(e - n), int(e)) for e, n in zip(ends, self.n_atoms)]


class Committee:
    """M members of one architecture, held as one stacked model.

    ``evaluate`` (every member) and ``mean_energy_forces`` (the mean only, cheaper) work
    on tensors, for the MD engine and training; ``predict`` takes ASE structures and
    returns numpy arrays with the committee statistics.
    """

    def __init__(self, model: StackedModel, calibration: Calibration | None = None) -> None:
        self.model = model
        self.calibration = calibration or Calibration()

    @classmethod
    def create(cls, architecture: str = "bpnn", *, n_members: int = 4, seed: int = 0, **hparams: Any) -> "Committee":
        return cls(build_model(architecture, n_members=n_members, seed=seed, **hparams))

    # --------------------------------------------------------------- properties
    @property
    def architecture(self) -> str:
        return self.model.architecture

    @property
    def n_members(self) -> int:
        return self.model.n_members

    @property
    def elements(self) -> list[int]:
        return [int(z) for z in self.model.elements]

    @property
    def cutoff_A(self) -> float:
        return float(self.model.cutoff)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        """Where the members are evaluated (:mod:`nnp_core.device`)."""
        return self.model.elements.device

    def to(self, device: str | torch.device | None) -> "Committee":
        """This committee on ``device`` ("cpu", "cuda", "cuda:N", "auto"): a copy with its
        parameters moved (the same committee if it is already there). Batches it makes go
        there too; ``predict`` and ``fingerprints`` still return numpy arrays."""
        target = resolve_device(device)
        if target == self.device:
            return self
        model = copy.deepcopy(self.model).to(target)
        return Committee(model, self.calibration)

    @property
    def has_dipole(self) -> bool:
        """Whether the members predict the dipole (a dipole head, trained on the labels'
        dipoles when ``[train] dipole_weight`` > 0)."""
        return bool(getattr(self.model, "dipole_head", False))

    # --------------------------------------------------------------- evaluation
    def make_batch(self, frames: Sequence[Atoms], *, skin_A: float = 0.0) -> Batch:
        """Batch ``frames`` with this committee's cutoffs; unknown elements raise ValueError."""
        cutoff, angular_cutoff = self.model.neighbour_cutoffs
        batch = atoms_to_batch(
            frames, cutoff_A=cutoff, angular_cutoff_A=angular_cutoff,
            skin_A=skin_A, dtype=self.dtype,
        )
        batch = batch_to(batch, self.device)
        self.model.species_of(batch["numbers"])
        return batch

    def evaluate(self, batch: Batch) -> dict[str, torch.Tensor]:
        """All members on all frames in one pass: ``energy`` (M, B), ``forces`` (M, n, 3)
        and, with a dipole head, ``dipole`` (M, B, 3) in e·Å."""
        return self.model(batch, compute_forces=True, create_graph=False)

    def mean_pass(self, batch: Batch, energy_bias: EnergyBias | None = None) -> dict[str, torch.Tensor]:
        """Committee-mean ``energy`` (B,) and ``forces`` (n, 3), and with a dipole head
        every member's ``dipole`` (M, B, 3): one backward pass (what MD needs when it
        records dipoles). With ``energy_bias`` (members' energies (M, B) -> bias (B,),
        e.g. UDD) the forces are those of mean + bias and ``bias_energy`` (B,) is added."""
        return self.model.mean_energy_forces(batch, energy_bias)

    def mean_energy_forces(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Committee-mean energy (B,) in eV and forces (n, 3) in eV/Å, without per-member
        forces: one backward pass instead of M (what MD needs between scoring steps)."""
        output = self.model.mean_energy_forces(batch)
        return output["energy"], output["forces"]

    def statistics(self, batch: Batch, output: dict[str, torch.Tensor]) -> CommitteeStatistics:
        return committee_statistics(output["energy"], output["forces"], batch["frame"], batch["n_atoms"])

    def predict(self, frames: Sequence[Atoms] | Atoms) -> CommitteePrediction:
        """Predictions and statistics for ASE structures (numpy, eV and eV/Å)."""
        frames = [frames] if isinstance(frames, Atoms) else list(frames)
        batch = self.make_batch(frames)
        output = self.evaluate(batch)
        stats = self.statistics(batch, output)
        dipoles = {}
        if "dipole" in output:
            mean, dev = dipole_statistics(output["dipole"])
            dipoles = {"member_dipoles": _numpy(output["dipole"]), "dipole_mean": _numpy(mean),
                       "dipole_dev": _numpy(dev)}
        return CommitteePrediction(
            member_energies=_numpy(output["energy"]),
            member_forces=_numpy(output["forces"]),
            n_atoms=_numpy(batch["n_atoms"]),
            energy_mean=_numpy(stats.energy_mean),
            forces_mean=_numpy(stats.forces_mean),
            force_dev=_numpy(stats.force_dev),
            max_force_dev=_numpy(stats.max_force_dev),
            energy_dev=_numpy(stats.energy_dev),
            calibration=self.calibration,
            **dipoles,
        )

    def fingerprints(self, frames: Sequence[Atoms]) -> np.ndarray:
        """Per-frame descriptor fingerprints (B, D) for diversity selection."""
        return _numpy(self.model.fingerprints(self.make_batch(list(frames))))

    def astype(self, dtype: str) -> "Committee":
        """This committee evaluated in ``dtype`` ("float32" or "float64"): a copy with
        its parameters cast (the same committee if it already has that dtype). Exploration
        in float32 runs MACE about twice as fast (docs/benchmarks.md, mace-md-throughput);
        total energies then carry float32 rounding (~1e-7 relative, ~0.5 meV for ethanol),
        forces and deviations ~1e-6 eV/Å."""
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if dtype == self.model.dtype_name:
            return self
        model = copy.deepcopy(self.model)
        model.dtype_name = dtype
        model.to(model.dtype)
        return Committee(model, self.calibration)

    # --------------------------------------------------------------- members
    def member(self, index: int) -> "Committee":
        """A one-member committee holding a copy of member ``index``."""
        return Committee(self.model.select_members([index]), self.calibration)

    @classmethod
    def stack(cls, committees: Sequence["Committee"]) -> "Committee":
        """One committee from the members of several (same architecture and settings)."""
        architectures = {c.architecture for c in committees}
        if len(architectures) != 1:
            raise ValueError(f"cannot stack committees of different architectures {architectures}")
        model_cls = type(committees[0].model)
        return cls(model_cls.stack([c.model for c in committees]), committees[0].calibration)

    # --------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> Path:
        """Write a directory: one ``member_K.pt`` state_dict per member + ``committee.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for index in range(self.n_members):
            state = {key: value.cpu() for key, value in self.model.members_state_dict([index]).items()}
            torch.save(state, path / f"member_{index}.pt")
        meta = {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.architecture,
            "n_members": self.n_members,
            "hparams": self.model.hparams(),
            "calibration": self.calibration.to_dict(),
        }
        (path / CHECKPOINT_JSON).write_text(json.dumps(meta, indent=2))
        return path


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A host copy of ``tensor`` as numpy (a view where it already is on the CPU)."""
    return tensor.detach().cpu().numpy()


def load_committee(
    path: str | Path,
    *,
    expected_elements: Sequence[int] | None = None,
    expected_cutoff_A: float | None = None,
) -> Committee:
    """Load a committee saved by ``Committee.save``.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: unknown architecture, a member whose elements/cutoff/shapes disagree with
            the JSON or the others, or a mismatch with ``expected_elements``/``expected_cutoff_A``.
    """
    path = Path(path)
    meta_file = path / CHECKPOINT_JSON
    if not meta_file.is_file():
        raise FileNotFoundError(f"no committee checkpoint at {path} (missing {CHECKPOINT_JSON})")
    meta = json.loads(meta_file.read_text())
    if meta.get("architecture") not in MODEL_REGISTRY:
        raise ValueError(f"{meta_file}: unknown architecture {meta.get('architecture')!r}")
    members: list[StackedModel] = []
    for index in range(int(meta["n_members"])):
        # one build, copies for the other members: building a MACE member compiles its
        # e3nn modules (~3 s each), a copy does not; load_state_dict replaces every tensor
        model = (copy.deepcopy(members[0]) if members else
                 build_model(meta["architecture"], n_members=1, **meta["hparams"]))
        state = torch.load(path / f"member_{index}.pt", map_location="cpu", weights_only=True)
        _check_member_state(model, state, f"{path}/member_{index}.pt")
        model.load_state_dict(state)
        members.append(model)
    model = type(members[0]).stack(members) if len(members) > 1 else members[0]
    committee = Committee(model, Calibration(**meta.get("calibration", {})))
    if expected_elements is not None and sorted(expected_elements) != committee.elements:
        raise ValueError(
            f"{path}: committee elements {committee.elements} differ from expected "
            f"{sorted(expected_elements)}"
        )
    if expected_cutoff_A is not None and abs(expected_cutoff_A - committee.cutoff_A) > 1e-9:
        raise ValueError(f"{path}: committee cutoff {committee.cutoff_A} Å != expected {expected_cutoff_A} Å")
    return committee


def _check_member_state(model: StackedModel, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a member whose buffers (elements, cutoff) or shapes disagree with the JSON."""
    own = model.state_dict()
    for key in ("elements", "cutoff"):
        if key in state and not torch.equal(state[key].to(own[key].dtype), own[key]):
            raise ValueError(
                f"{where}: member {key} {state[key].tolist()} does not match the committee's "
                f"{own[key].tolist()}"
            )
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
