"""Train a committee from labelled frames (energy + forces).

Members differ by initial weights (seeded per member) and by data split: each has its
own validation frames and, with ``bootstrap``, a bootstrap resample of the rest. All
members train in one vectorised pass; each member follows the steps it would follow
alone (per-member losses, learning rates and early stopping), so the committee equals
members trained one by one (``bench.committee_eval`` keeps that loop and compares).
An architecture whose members share weights (``joint_training``, the shallow MACE
ensemble) trains them as one model instead: one validation split, the sum of the
members' losses, one learning-rate schedule and one early stop.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase import Atoms

from nnp_core.batch import Batch, atoms_to_batch, concat_batches
from nnp_core.committee import Committee
from nnp_core.device import batch_to, resolve_device
from nnp_core.models import MODEL_REGISTRY, StackedModel, build_model
from nnp_core.optim import StackedAdamW
from nnp_core.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class MemberReport:
    best_epoch: int
    epochs_run: int
    train_energy_mae_eV_atom: float
    train_force_mae_eV_A: float
    val_energy_mae_eV_atom: float
    val_force_mae_eV_A: float
    #: with a trained dipole head (else None), e·Å
    train_dipole_mae_eA: float | None = None
    val_dipole_mae_eA: float | None = None


@dataclass
class TrainingReport:
    members: list[MemberReport]
    wall_s: float
    n_frames: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def val_force_mae_eV_A(self) -> float:
        return float(np.mean([m.val_force_mae_eV_A for m in self.members]))

    @property
    def val_energy_mae_eV_atom(self) -> float:
        return float(np.mean([m.val_energy_mae_eV_atom for m in self.members]))


@dataclass
class LabelledSet:
    """Frames prepared once for training: one small batch per frame plus targets."""

    frame_batches: list[Batch]
    energies_eV: torch.Tensor  # (F,)
    forces_eV_A: list[torch.Tensor]  # per frame (n_f, 3)
    n_atoms: torch.Tensor  # (F,)
    dipoles_eA: torch.Tensor | None = None  # (F, 3), zeros where a frame has none
    has_dipole: torch.Tensor | None = None  # (F,) bool

    @classmethod
    def from_frames(cls, frames: Sequence[Atoms], model: StackedModel) -> "LabelledSet":
        (cutoff, angular_cutoff), dtype = model.neighbour_cutoffs, model.dtype
        batches, energies, forces, dipoles = [], [], [], []
        for index, atoms in enumerate(frames):
            energy, frame_forces = _reference_of(atoms, index)
            batches.append(atoms_to_batch([atoms], cutoff_A=cutoff,
                                          angular_cutoff_A=angular_cutoff, dtype=dtype))
            energies.append(energy)
            forces.append(torch.as_tensor(frame_forces, dtype=dtype))
            dipoles.append(_reference_dipole(atoms, index))
        model.species_of(torch.cat([b["numbers"] for b in batches]))
        n_atoms = torch.tensor([len(a) for a in frames])
        has_dipole = torch.tensor([d is not None for d in dipoles])
        dipole_tensor = torch.tensor(np.array([np.zeros(3) if d is None else d for d in dipoles]), dtype=dtype)
        return cls(batches, torch.tensor(energies, dtype=dtype), forces, n_atoms,
                   dipole_tensor if bool(has_dipole.any()) else None, has_dipole if bool(has_dipole.any()) else None)

    def to(self, device: torch.device) -> "LabelledSet":
        """The same frames with every tensor on ``device``."""
        def move(value):
            return None if value is None else value.to(device)

        return LabelledSet([batch_to(b, device) for b in self.frame_batches], self.energies_eV.to(device),
                           [f.to(device) for f in self.forces_eV_A], self.n_atoms.to(device),
                           move(self.dipoles_eA), move(self.has_dipole))

    def collate(self, indices: Sequence[int]) -> tuple[Batch, torch.Tensor, torch.Tensor]:
        batch = concat_batches([self.frame_batches[i] for i in indices])
        return batch, self.energies_eV[list(indices)], torch.cat([self.forces_eV_A[i] for i in indices])


def _reference_dipole(atoms: Atoms, index: int) -> np.ndarray | None:
    """The frame's reference dipole (e·Å) if its calculator holds one, else None."""
    dipole = atoms.calc.results.get("dipole") if atoms.calc is not None else None
    if dipole is None:
        return None
    dipole = np.asarray(dipole, dtype=np.float64)
    if dipole.shape != (3,) or not np.all(np.isfinite(dipole)):
        raise ValueError(f"frame {index} has a reference dipole of shape {dipole.shape} or non-finite values")
    return dipole


def _reference_of(atoms: Atoms, index: int) -> tuple[float, np.ndarray]:
    if atoms.calc is None:
        raise ValueError(f"frame {index} has no reference energy/forces (no calculator attached)")
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any missing property is the same user error
        raise ValueError(f"frame {index} lacks a reference energy or forces: {exc}") from exc
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise ValueError(f"frame {index} has a non-finite reference energy or forces")
    return energy, forces


def member_split(n_frames: int, member: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training weights (F,) (bootstrap counts or 0/1) and validation mask (F,) of a member."""
    if n_frames < 2:
        raise ValueError(f"need at least 2 labelled frames to train, got {n_frames}")
    rng = np.random.default_rng([config.seed, member, 20251])
    order = rng.permutation(n_frames)
    n_val = min(n_frames - 1, max(1, round(config.validation_fraction * n_frames)))
    val, train = order[:n_val], order[n_val:]
    if config.bootstrap:
        weights = np.bincount(rng.choice(train, size=len(train)), minlength=n_frames)
    else:
        weights = np.zeros(n_frames, dtype=np.int64)
        weights[train] = 1
    mask = np.zeros(n_frames, dtype=bool)
    mask[val] = True
    return weights.astype(np.float64), mask


#: Each feature is divided by max(its std, FEATURE_STD_FLOOR x the largest std of that
#: element's features). Dividing by a nearly-constant feature's own tiny std (1e-6..1e-4
#: for many symmetry functions on small data) amplified its noise into inputs 10-60
#: standard deviations out on test frames, and the networks overfitted to it: ethanol,
#: 100 random frames, one member, test force MAE 338 meV/Å with the raw std against
#: 68 meV/Å with this floor (docs/benchmarks.md, data-efficiency).
FEATURE_STD_FLOOR = 0.1


def fit_normalisation(model: StackedModel, data: LabelledSet) -> None:
    """Per-element reference energies (least squares), energy scale, feature mean and
    scale (the std, floored at :data:`FEATURE_STD_FLOOR` of the element's largest)."""
    n_el = len(model.elements)
    counts = torch.zeros(len(data.frame_batches), n_el, dtype=torch.float64)
    all_species, all_features = [], []
    for f, batch in enumerate(data.frame_batches):
        species = model.species_of(batch["numbers"])
        counts[f] = torch.bincount(species, minlength=n_el).to(torch.float64)
        all_species.append(species)
        with torch.no_grad():
            all_features.append(model.raw_features(batch))
    if hasattr(model, "fit_statistics"):  # architecture-specific (MACE: avg_num_neighbors)
        model.fit_statistics(data.frame_batches)
    e0 = torch.linalg.lstsq(counts, data.energies_eV.to(torch.float64)[:, None], driver="gelsd").solution[:, 0]
    forces = torch.cat(data.forces_eV_A)
    force_rms = float(forces.pow(2).mean().sqrt())
    residual = (data.energies_eV.double() - counts @ e0) / data.n_atoms.double()
    scale = force_rms * 1.0 if force_rms > 0 else float(residual.std().clamp(min=1e-3))
    species, features = torch.cat(all_species), torch.cat(all_features)
    with torch.no_grad():
        for e in range(n_el):
            rows = features[species == e]
            if len(rows) == 0:
                continue
            model.feature_mean[e] = rows.mean(0)
            std = rows.std(0, unbiased=False) if len(rows) > 1 else torch.ones_like(rows[0])
            floor = FEATURE_STD_FLOOR * float(std.max()) if float(std.max()) > 1e-6 else 1.0
            model.feature_std[e] = std.clamp(min=floor)
        model.atom_ref_energy.copy_(e0.to(model.atom_ref_energy.dtype))
        model.energy_scale.fill_(scale)
    if getattr(model, "dipole_head", False) and data.dipoles_eA is not None:
        fit_fixed_charges(model, data)


def fit_fixed_charges(model: StackedModel, data: LabelledSet) -> None:
    """The dipole head's baseline: per-element charges q0 (``atom_ref_charge``, e) by
    least squares on the frames with a reference dipole, of the charge-conserving
    fixed-charge model mu = sum_i q0(Z_i) (r_i - r_mean) + Q r_mean (the same correction
    the head applies), and the charge scale s_q (``charge_scale``, e): the RMS residual
    dipole component divided by sqrt(mean atoms per frame), floored at 1e-3 e. The
    conservation makes q0 defined up to one constant added to every element's charge;
    least squares takes the smallest q0."""
    n_el = len(model.elements)
    rows, targets, sizes = [], [], []
    for f in torch.nonzero(data.has_dipole).flatten().tolist():
        batch = data.frame_batches[f]
        species = model.species_of(batch["numbers"])
        pos = batch["positions"].double()
        centred = pos - pos.mean(0)
        design = torch.zeros(3, n_el, dtype=torch.float64).index_add(1, species, centred.T)
        rows.append(design)
        charge = float(batch["charge"][0]) if "charge" in batch else 0.0
        targets.append(data.dipoles_eA[f].double() - charge * pos.mean(0))
        sizes.append(len(species))
    design, target = torch.cat(rows), torch.cat(targets)
    q0 = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    residual = target - design @ q0
    scale = float(residual.pow(2).mean().sqrt()) / float(np.sqrt(np.mean(sizes)))
    with torch.no_grad():
        model.atom_ref_charge.copy_(q0.to(model.atom_ref_charge.dtype))
        model.charge_scale.fill_(max(scale, 1e-3))


def member_losses(
    output: dict[str, torch.Tensor],
    energies: torch.Tensor,
    forces: torch.Tensor,
    batch: Batch,
    weights: torch.Tensor,
    config: TrainConfig,
    scale: torch.Tensor,
    dipoles: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Loss per member (M,): weighted MSE of energy per atom and of force components,
    divided by the energy scale squared; with ``dipoles`` (reference (B, 3), mask (B,),
    dipole scale ()) plus ``dipole_weight`` times the weighted MSE of the dipole
    components of the frames that have one, divided by the dipole scale squared."""
    n_atoms = batch["n_atoms"].to(energies.dtype)
    e_err = ((output["energy"] - energies) / n_atoms) ** 2  # (M, B)
    f_err = (output["forces"] - forces).pow(2).sum(-1)  # (M, n)
    f_err = f_err.new_zeros(f_err.shape[0], len(n_atoms)).index_add(1, batch["frame"], f_err)
    total_w = weights.sum(1).clamp(min=1e-12)
    e_loss = (weights * e_err).sum(1) / total_w
    f_loss = (weights * f_err).sum(1) / (3 * (weights * n_atoms).sum(1)).clamp(min=1e-12)
    loss = (config.energy_weight * e_loss + config.force_weight * f_loss) / scale**2
    if dipoles is not None and config.dipole_weight > 0 and "dipole" in output:
        reference, mask, dipole_scale = dipoles
        d_err = (output["dipole"] - reference).pow(2).mean(-1)  # (M, B)
        d_w = weights * mask.to(weights.dtype)
        d_loss = (d_w * d_err).sum(1) / d_w.sum(1).clamp(min=1e-12)
        loss = loss + config.dipole_weight * d_loss / dipole_scale**2
    return loss


def _dipole_targets(model, data: LabelledSet, chunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(reference dipoles, mask, dipole scale) of the frames ``chunk``, or None when the
    model has no dipole head or no frame has a reference dipole."""
    if data.dipoles_eA is None or not getattr(model, "dipole_head", False):
        return None
    scale = model.charge_scale * float(data.n_atoms.double().mean().sqrt())
    return data.dipoles_eA[list(chunk)], data.has_dipole[list(chunk)], scale


@dataclass
class _MemberState:
    """Early stopping and learning-rate plateau bookkeeping for all members."""

    best_loss: np.ndarray
    best_epoch: np.ndarray
    since_best: np.ndarray
    since_lr_drop: np.ndarray
    stopped: np.ndarray
    best_params: list[torch.Tensor]


def _evaluate_losses(model, data: LabelledSet, indices, weights_all, config, batch_size) -> torch.Tensor:
    total = weights_all.new_zeros(model.n_members, dtype=torch.float64)
    norm = weights_all.new_zeros(model.n_members, dtype=torch.float64)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        batch, energies, forces = data.collate(chunk)
        weights = weights_all[:, chunk]
        output = model(batch, compute_forces=True, create_graph=False)
        losses = member_losses(output, energies, forces, batch, weights, config, model.energy_scale,
                               _dipole_targets(model, data, chunk))
        total += losses.double() * weights.sum(1).double()
        norm += weights.sum(1).double()
    return total / norm.clamp(min=1e-12)


def _run_epochs(model, data: LabelledSet, train_w, val_w, config: TrainConfig, progress) -> tuple[_MemberState, list]:
    params = list(model.parameters())
    n_members = model.n_members
    optimiser = StackedAdamW(params, torch.full((n_members,), config.learning_rate),
                             weight_decay=config.weight_decay)
    state = _MemberState(np.full(n_members, np.inf), np.zeros(n_members, int), np.zeros(n_members, int),
                         np.zeros(n_members, int), np.zeros(n_members, bool), [p.detach().clone() for p in params])
    rng = np.random.default_rng([config.seed, 7])
    n_frames, history = len(data.frame_batches), []
    val_indices = [int(i) for i in np.flatnonzero(val_w.sum(0).cpu().numpy() > 0)]
    # exponential moving average of the weights (mace_run_train --ema): validated, kept
    # as the best state and returned in place of the raw weights
    ema = [p.detach().clone() for p in params] if config.ema_decay > 0 else None
    # mace_run_train's stage two: the last stage_two_epochs (or as many more once every
    # member has stopped early) on other loss weights and a lower learning rate
    stage_two = config.stage_two() if config.stage_two_epochs else None
    loss_config, epoch, end = config, 0, config.max_epochs
    while epoch < end:
        if stage_two is not None and loss_config is config and epoch == end - config.stage_two_epochs:
            _start_stage_two(state, params, ema, optimiser, stage_two)
            loss_config = stage_two
        order = rng.permutation(n_frames)
        train_sum = train_w.new_zeros(n_members, dtype=torch.float64)
        for start in range(0, n_frames, config.batch_size_frames):
            chunk = [int(i) for i in order[start : start + config.batch_size_frames]]
            batch, energies, forces = data.collate(chunk)
            output = model(batch, compute_forces=True, create_graph=True)
            losses = member_losses(output, energies, forces, batch, train_w[:, chunk], loss_config,
                                   model.energy_scale, _dipole_targets(model, data, chunk))
            grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
            optimiser.step(grads)
            if ema is not None:
                with torch.no_grad():
                    for average, p in zip(ema, params):
                        average.lerp_(p.detach(), 1.0 - config.ema_decay)
            train_sum += losses.detach().double()
        live = None
        if ema is not None:  # validate (and keep as best) the averaged weights
            with torch.no_grad():
                live = [p.detach().clone() for p in params]
                for average, p in zip(ema, params):
                    p.copy_(average)
        val_loss = _evaluate_losses(model, data, val_indices, val_w, loss_config, config.batch_size_frames).cpu().numpy()
        if getattr(model, "joint_training", False):  # one schedule and early stop for all
            val_loss = np.full(n_members, val_loss.mean())
        _update_members(state, val_loss, epoch, params, optimiser, loss_config)
        if live is not None:
            with torch.no_grad():
                for raw, p in zip(live, params):
                    p.copy_(raw)
        history.append({"epoch": epoch, "train_loss": float(train_sum.mean()) / max(1, -(-n_frames // config.batch_size_frames)),
                        "val_loss": float(val_loss.mean()), "lr": float(optimiser.lr.mean()),
                        **({"stage": 2 if loss_config is stage_two else 1} if stage_two is not None else {})})
        if progress is not None:
            progress(epoch, history[-1])
        epoch += 1
        if state.stopped.all():
            if stage_two is None or loss_config is stage_two:
                break
            end = epoch + config.stage_two_epochs  # stopped early: stage two next (as mace_run_train)
    return state, history


def _start_stage_two(state: _MemberState, params, ema, optimiser, stage_two: TrainConfig) -> None:
    """Continue from each member's best weights so far, at stage two's learning rate,
    with early stopping and the plateau schedule started afresh (the validation loss
    changes meaning with the weights)."""
    with torch.no_grad():
        for best, p in zip(state.best_params, params):
            p.copy_(best)
        for average, p in zip(ema or [], params):
            average.copy_(p)
    state.best_loss[:] = np.inf
    state.since_best[:] = 0
    state.since_lr_drop[:] = 0
    state.stopped[:] = False
    optimiser.lr[:] = stage_two.learning_rate


def _update_members(state: _MemberState, val_loss: np.ndarray, epoch: int, params, optimiser, config) -> None:
    for m in range(len(val_loss)):
        if state.stopped[m]:
            continue
        if val_loss[m] < state.best_loss[m] * (1 - 1e-4):
            state.best_loss[m], state.best_epoch[m] = val_loss[m], epoch
            state.since_best[m] = state.since_lr_drop[m] = 0
            for best, p in zip(state.best_params, params):
                if p.shape[0] == len(val_loss):
                    best[m] = p.detach()[m]
                else:  # shared by all members (joint training: they improve together)
                    best.copy_(p.detach())
            continue
        state.since_best[m] += 1
        state.since_lr_drop[m] += 1
        if state.since_lr_drop[m] >= config.lr_plateau_patience_epochs:
            optimiser.lr[m] = max(config.min_learning_rate, optimiser.lr[m] * config.lr_plateau_factor)
            state.since_lr_drop[m] = 0
        if state.since_best[m] >= config.early_stopping_patience_epochs:
            state.stopped[m] = True
            optimiser.lr[m] = 0.0


def train_members(
    model: StackedModel,
    data: LabelledSet,
    config: TrainConfig,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    members: Sequence[int] | None = None,
) -> tuple[list[MemberReport], list[dict[str, float]]]:
    """Train ``model``'s members in place, all in one pass, each on the data split of
    its index in ``members`` (default: 0..M-1), and load each member's best epoch."""
    members = range(model.n_members) if members is None else members
    if getattr(model, "joint_training", False):
        # members sharing weights (a shallow ensemble) share one validation split: the
        # shared weights would otherwise train on another member's validation frames
        members = [list(members)[0]] * model.n_members
    splits = [member_split(len(data.frame_batches), m, config) for m in members]
    dtype, device = model.dtype, model.elements.device
    train_w = torch.tensor(np.stack([w for w, _ in splits]), dtype=dtype, device=device)
    val_w = torch.tensor(np.stack([mask for _, mask in splits]), dtype=dtype, device=device)
    state, history = _run_epochs(model, data, train_w, val_w, config, progress)
    with torch.no_grad():
        for best, p in zip(state.best_params, model.parameters()):
            p.copy_(best)
    reports = _member_reports(model, data, train_w, val_w, state, len(history))
    return reports, history


def _member_reports(model, data, train_w, val_w, state, epochs_run) -> list[MemberReport]:
    indices = list(range(len(data.frame_batches)))
    batch, energies, forces = data.collate(indices)
    output = model(batch, compute_forces=True, create_graph=False)
    e_abs = ((output["energy"] - energies) / batch["n_atoms"]).abs()  # (M, F)
    f_abs = (output["forces"] - forces).abs().mean(-1)  # (M, n)
    f_frame = f_abs.new_zeros(e_abs.shape).index_add(1, batch["frame"], f_abs) / batch["n_atoms"]
    d_abs = None
    if "dipole" in output and data.dipoles_eA is not None:
        d_abs = (output["dipole"] - data.dipoles_eA).abs().mean(-1)  # (M, F)

    def dipole_mae(m: int, rows: torch.Tensor) -> float | None:
        rows = rows & data.has_dipole if d_abs is not None else rows
        return float(d_abs[m, rows].mean()) if d_abs is not None and bool(rows.any()) else None

    reports = []
    for m in range(model.n_members):
        t, v = train_w[m] > 0, val_w[m] > 0
        reports.append(MemberReport(
            best_epoch=int(state.best_epoch[m]), epochs_run=epochs_run,
            train_energy_mae_eV_atom=float(e_abs[m, t].mean()), train_force_mae_eV_A=float(f_frame[m, t].mean()),
            val_energy_mae_eV_atom=float(e_abs[m, v].mean()), val_force_mae_eV_A=float(f_frame[m, v].mean()),
            train_dipole_mae_eA=dipole_mae(m, t), val_dipole_mae_eA=dipole_mae(m, v),
        ))
    return reports


def with_dipole_head(model: StackedModel) -> StackedModel:
    """``model`` with a new dipole head (zero: the fixed-charge model until trained) and
    everything else it has kept, so a warm start can begin learning dipoles."""
    from nnp_core.models.base import parameters_to_be_loaded

    with parameters_to_be_loaded():
        new = type(model)(n_members=model.n_members, **{**model.hparams(), "dipole": True})
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    head = {"atom_ref_charge", "charge_scale"}
    if unexpected or any(key not in head and "dipole" not in key for key in missing):
        raise ValueError(f"cannot add a dipole head to this {model.architecture} model: {missing} {unexpected}")
    with torch.no_grad():
        for name, weight in new.weights.items():
            if "dipole" in name:
                weight.zero_()
    return new


def shrink_and_perturb(model: StackedModel, shrink: float, perturb: float, seed: int) -> StackedModel:
    """``model`` with every parameter θ replaced by shrink·θ + perturb·θ₀, θ₀ that of a
    fresh initialisation of the same architecture and settings seeded by ``seed`` (each
    member its own draw): Ash & Adams' shrink and perturb (NeurIPS 2020), which keeps a
    warm start's head start but gives back part of the generalisation, and here of the
    members' disagreement, that training from scratch has. Buffers (normalisation, E0,
    the dipole head's fixed charges) are kept. The model is changed in place."""
    if shrink == 1 and perturb == 0:
        return model
    fresh = build_model(model.architecture, n_members=model.n_members, seed=seed, **model.hparams())
    fresh_parameters = dict(fresh.named_parameters())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.mul_(shrink)
            if perturb:
                parameter.add_(fresh_parameters[name].to(parameter.dtype), alpha=perturb)
    return model


def train_committee(
    frames: Sequence[Atoms],
    config: TrainConfig | None = None,
    *,
    n_members: int = 4,
    architecture: str = "bpnn",
    model_hparams: dict[str, Any] | None = None,
    initial: Committee | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Committee, TrainingReport]:
    """Train a committee on labelled ``frames`` (Atoms with energy and forces attached).

    ``initial`` warm-starts from a previous committee (its members, normalisation and
    elements are kept; frames with other elements raise ValueError). Otherwise a new
    ``architecture`` is built with ``model_hparams`` (default elements: those in frames).

    Raises:
        ValueError: fewer than 2 frames, a frame without energy/forces or with non-finite
            values, an element the warm-start committee does not know.
    """
    config = config or TrainConfig()
    if initial is not None:
        config = config.for_warm_start()
    start = time.perf_counter()
    frames = list(frames)
    if initial is not None:
        base = copy.deepcopy(initial.model)
        n_members = base.n_members
        # a new fresh draw for every training set (a resumed generation draws the same)
        shrink_and_perturb(base, config.warm_start_shrink, config.warm_start_perturb, seed=config.seed + 1 + len(frames))
    else:
        hparams = dict(model_hparams or {})
        hparams.setdefault("elements", sorted({int(z) for a in frames for z in a.numbers}))
        hparams.setdefault("dtype", config.dtype)
        if config.dipole_weight > 0 and getattr(MODEL_REGISTRY.get(architecture), "supports_dipole", False):
            hparams.setdefault("dipole", True)
        base = build_model(architecture, n_members=n_members, seed=config.seed, **hparams)
    new_head = (initial is not None and config.dipole_weight > 0 and type(base).supports_dipole
                and not base.dipole_head)
    if new_head:  # a warm start from a committee trained before dipoles were asked for
        base = with_dipole_head(base)
    data = LabelledSet.from_frames(frames, base)
    if initial is None:
        fit_normalisation(base, data)
    elif new_head and data.dipoles_eA is not None:
        fit_fixed_charges(base, data)
    if config.dipole_weight > 0 and data.dipoles_eA is None and getattr(base, "dipole_head", False):
        log.info("dipole_weight %.3g: no training frame has a reference dipole; the dipole head "
                    "keeps its fixed charges", config.dipole_weight)
    device = resolve_device(config.device)
    if device.type != "cpu":  # normalisation was fitted on the host; the epochs run there
        base.to(device)
        data = data.to(device)
    reports, history = train_members(base, data, config, progress)
    base.to("cpu")  # committees are kept, saved and compared on the host
    report = TrainingReport(reports, time.perf_counter() - start, len(frames), history)
    log.info("trained %d members on %d frames in %.1f s: val force MAE %.4f eV/Å",
             n_members, len(frames), report.wall_s, report.val_force_mae_eV_A)
    calibration = initial.calibration if initial is not None else None
    return Committee(base, calibration), report
