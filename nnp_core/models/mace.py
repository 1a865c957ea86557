"""MACE committees built from mace-torch's own modules (Batatia et al., NeurIPS 2022).

Every member is a ``mace.modules.ScaleShiftMACE`` built exactly as ``mace_run_train``
builds one (``RealAgnosticResidualInteractionBlock`` after a ``RealAgnosticInteractionBlock``,
Bessel radial basis with a polynomial cutoff, hidden irreps ``num_channels x (0e + 1o
+ ...)`` up to ``max_L``, SiLU gates, a ``16x0e`` non-linear readout), with the
settings users know from ``mace_run_train``: ``cutoff_A`` (``r_max``), ``num_channels``,
``max_L``, ``correlation``, ``num_interactions``. No MACE layer is written here.

How a committee of them fits alflow's stacked design: one *template* module is built
and never trained; each member's parameters (``torch.func.stack_module_state`` of M
freshly initialised MACE modules) sit in ``weights`` with the member axis first, and a
member is evaluated by ``torch.func.functional_call`` of the template with its slice.
So selecting, stacking, checkpointing and the vectorised trainer (one optimiser over the
stacked tensors, per-member losses) work unchanged; the members are evaluated one after
the other on one shared graph (``vmap`` over e3nn's generated code is not used).

The template's own E0s are zero and its scale 1, shift 0: alflow adds the per-element
reference energies (least squares) and the force-RMS energy scale that
``fit_normalisation`` fits, which is what ``mace_run_train``'s default
``rms_forces_scaling`` does; :meth:`MACE.to_mace_model` writes a member as a standard
``ScaleShiftMACE`` with those E0s and scale, loadable by
``mace.calculators.MACECalculator``.

Fingerprints for diversity selection use member-independent element-resolved
radial-basis sums (``StackedModule.radial_features``), as PaiNN's do.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnp_core.batch import Batch
from nnp_core.models.base import AtomicOutputs, StackedModule, building_to_load, element_numbers
from nnp_core.models.registry import Setting, member_generator, register_model

#: radial basis functions per neighbour element in the fingerprints
FINGERPRINT_BASIS = 8

# mace-torch and e3nn talk on every import and model build, none of it about alflow's use:
# TorchScript's note on e3nn's generated modules (2 lines per module, ~280 per demo
# generation), torch's note on the weights_only variable mace sets for e3nn's constants.
# Only these two messages are silenced.
warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level annotations",
                        category=UserWarning)
warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected",
                        category=UserWarning)


def _import_mace_modules():
    """``mace.modules``, imported without mace's print about the optional cuequivariance
    acceleration (not installed with alflow; the print is all it does)."""
    import sys

    if "mace.modules" not in sys.modules:  # the print comes once, at the first import
        with contextlib.redirect_stdout(io.StringIO()):
            import mace.modules  # noqa: F401  first: it lets e3nn 0.4.4 load its constants under torch >= 2.6
    from mace import modules
    return modules


@contextmanager
def _default_dtype(dtype: torch.dtype):
    """mace-torch and e3nn create their buffers in torch's default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _hidden_irreps(num_channels: int, max_L: int) -> str:
    """``mace_run_train``'s hidden irreps from ``--num_channels`` and ``--max_L``."""
    parities = "eo"
    return " + ".join(f"{num_channels}x{ell}{parities[ell % 2]}" for ell in range(max_L + 1))


def build_scale_shift_mace(elements: Sequence[int], *, cutoff_A: float, num_channels: int, max_L: int,
                           correlation: int, num_interactions: int, num_radial_basis: int,
                           num_cutoff_basis: int, max_ell: int, radial_MLP: Sequence[int],
                           readout_hidden: int, avg_num_neighbors: float,
                           atomic_energies: np.ndarray | None = None, scale: float = 1.0,
                           shift: float = 0.0) -> torch.nn.Module:
    """One ``ScaleShiftMACE``, built as ``mace_run_train --model MACE`` builds it."""
    try:
        modules = _import_mace_modules()
        from e3nn import o3
    except ImportError as exc:
        raise ImportError("architecture \"mace\" needs mace-torch: pip install 'alflow[mace]'") from exc

    n_el = len(elements)
    return modules.ScaleShiftMACE(
        r_max=float(cutoff_A), num_bessel=int(num_radial_basis), num_polynomial_cutoff=int(num_cutoff_basis),
        max_ell=int(max_ell), interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=int(num_interactions), num_elements=n_el,
        hidden_irreps=o3.Irreps(_hidden_irreps(int(num_channels), int(max_L))),
        MLP_irreps=o3.Irreps(f"{int(readout_hidden)}x0e"),
        atomic_energies=np.zeros(n_el) if atomic_energies is None else np.asarray(atomic_energies, dtype=float),
        avg_num_neighbors=float(avg_num_neighbors), atomic_numbers=[int(z) for z in elements],
        correlation=int(correlation), gate=modules.gate_dict["silu"], radial_MLP=[int(x) for x in radial_MLP],
        atomic_inter_scale=float(scale), atomic_inter_shift=float(shift),
    )


@register_model("mace")
class MACE(StackedModule):
    """A committee of mace-torch ``ScaleShiftMACE`` members (see the module docstring)."""

    supports_dipole = True
    settings = {
        "cutoff_A": Setting(5.0, "radial cutoff r_max, Å (mace_run_train --r_max)", float, gt=0),
        "num_channels": Setting(32, "channels per irrep (--num_channels)", int, ge=1),
        "max_L": Setting(1, "highest L of the hidden equivariant features (--max_L)", int, ge=0),
        "correlation": Setting(3, "correlation order of each product (--correlation)", int, ge=1),
        "num_interactions": Setting(2, "message-passing layers (--num_interactions)", int, ge=1),
        "num_radial_basis": Setting(8, "Bessel radial basis functions (--num_radial_basis)", int, ge=1),
        "num_cutoff_basis": Setting(5, "polynomial cutoff order (--num_cutoff_basis)", int, ge=1),
        "max_ell": Setting(3, "highest l of the edge spherical harmonics (--max_ell)", int, ge=1),
        "radial_MLP": Setting([64, 64, 64], "hidden widths of the radial MLP (--radial_MLP)", list[int],
                              ge=1, min_length=1),
        "readout_hidden": Setting(16, "scalar channels of the last readout (--MLP_irreps Nx0e)", int, ge=1),
    }

    def __init__(
        self,
        *,
        elements: Sequence[int | str],
        n_members: int = 1,
        seed: int = 0,
        cutoff_A: float = 5.0,
        num_channels: int = 32,
        max_L: int = 1,
        correlation: int = 3,
        num_interactions: int = 2,
        num_radial_basis: int = 8,
        num_cutoff_basis: int = 5,
        max_ell: int = 3,
        radial_MLP: Sequence[int] = (64, 64, 64),
        readout_hidden: int = 16,
        avg_num_neighbors: float | None = None,
        dtype: str = "float64",
        dipole: bool = False,
    ) -> None:
        numbers = element_numbers(elements)
        super().__init__(elements=numbers, n_members=n_members, cutoff_A=cutoff_A, dtype=dtype,
                         n_raw_features=len(numbers) * FINGERPRINT_BASIS, dipole=dipole)
        self.mace_settings = {
            "cutoff_A": float(cutoff_A), "num_channels": int(num_channels), "max_L": int(max_L),
            "correlation": int(correlation), "num_interactions": int(num_interactions),
            "num_radial_basis": int(num_radial_basis), "num_cutoff_basis": int(num_cutoff_basis),
            "max_ell": int(max_ell), "radial_MLP": [int(x) for x in radial_MLP],
            "readout_hidden": int(readout_hidden),
        }
        #: mean number of neighbours within the cutoff (MACE's message normalisation):
        #: fitted on the first training set (:meth:`fit_statistics`), then kept
        self.avg_num_neighbors = None if avg_num_neighbors is None else float(avg_num_neighbors)
        self.to(self.dtype)
        seeds = self._member_seeds(seed)
        with _default_dtype(self.dtype):
            # parameters about to be loaded (select, stack, checkpoint): one module for the shapes
            members = [self._new_mace(s) for s in (seeds[:1] if building_to_load() else seeds)]
        # the template is not a registered submodule: its parameters are never trained or saved
        self.__dict__["_template"] = members[0]
        params, _ = torch.func.stack_module_state(members)
        self._keys = {name: name.replace(".", "__") for name in params}
        for name, key in self._keys.items():
            value = params[name].detach()
            if value.shape[0] != n_members:
                value = value[:1].expand(n_members, *value.shape[1:])
            self.weights[key] = torch.nn.Parameter(value.clone())
        self._scalar_slices, self._vector_slices = _feature_slices(members[0])
        if self.dipole_head:  # zero: the head starts as the fixed-charge model
            n_scalars = sum(stop - start for start, stop in self._scalar_slices)
            n_vectors = sum((stop - start) // 3 for start, stop in self._vector_slices)
            self.weights["dipole_q_w"] = torch.nn.Parameter(torch.zeros(n_members, n_scalars, 1, dtype=self.dtype))
            self.weights["dipole_q_b"] = torch.nn.Parameter(torch.zeros(n_members, 1, 1, dtype=self.dtype))
            if n_vectors:
                self.weights["dipole_v_w"] = torch.nn.Parameter(torch.zeros(n_members, n_vectors, 1, dtype=self.dtype))

    @classmethod
    def missing_dependency(cls) -> str | None:
        import importlib.util

        if importlib.util.find_spec("mace") is None:
            return "needs mace-torch, which is not installed: pip install 'alflow[mace]'"
        return None

    def _member_seeds(self, seed: int) -> list[int]:
        return [int(torch.randint(2**62, (1,), generator=member_generator(seed, m))) for m in range(self.n_members)]

    def _new_mace(self, seed: int) -> torch.nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = build_scale_shift_mace([int(z) for z in self.elements], **self.mace_settings,
                                            avg_num_neighbors=self.avg_num_neighbors or 1.0)
        return module.to(self.dtype)

    def _apply(self, fn, recurse=True):  # .to(dtype) etc. reach the unregistered template too
        super()._apply(fn, recurse)
        if "_template" in self.__dict__:
            self.__dict__["_template"]._apply(fn, recurse)
        return self

    # ------------------------------------------------------------------ set-up
    @property
    def neighbour_cutoffs(self) -> tuple[float, float]:
        return float(self.cutoff), 0.0

    def hparams(self) -> dict[str, Any]:
        return {"elements": [int(z) for z in self.elements], **self.mace_settings,
                "avg_num_neighbors": self.avg_num_neighbors, "dtype": self.dtype_name,
                **({"dipole": True} if self.dipole_head else {})}

    def fit_statistics(self, batches: Sequence[Batch]) -> None:
        """The mean number of neighbours within the cutoff over the training frames'
        atoms (``mace_run_train``'s ``avg_num_neighbors``), once: a warm start keeps it."""
        if self.avg_num_neighbors is not None:
            return
        edges = atoms = 0
        for batch in batches:
            i, j = batch["pairs"]
            pos = batch["positions"].double()
            edges += int((torch.linalg.vector_norm(pos[j] - pos[i], dim=-1) < float(self.cutoff)).sum())
            atoms += int(batch["numbers"].shape[0])
        self.avg_num_neighbors = max(edges / max(atoms, 1), 1.0)
        for block in self.__dict__["_template"].interactions:
            block.avg_num_neighbors = self.avg_num_neighbors

    # ------------------------------------------------------------------ network
    def _graph(self, batch: Batch, species: torch.Tensor) -> dict[str, torch.Tensor]:
        """mace-torch's input dict for a batch (molecules: no cell, zero shifts)."""
        n_frames = batch["n_atoms"].shape[0]
        edge_index = batch["pairs"].flip(0)  # alflow (centre i, neighbour j) -> MACE (sender j, receiver i)
        zeros = {"dtype": self.dtype, "device": edge_index.device}
        return {
            "node_attrs": torch.nn.functional.one_hot(species, len(self.elements)).to(self.dtype),
            "edge_index": edge_index,
            "shifts": torch.zeros(edge_index.shape[1], 3, **zeros),
            "unit_shifts": torch.zeros(edge_index.shape[1], 3, **zeros),
            "cell": torch.zeros(n_frames, 3, 3, **zeros),
            "batch": batch["frame"],
            "ptr": torch.cat([batch["n_atoms"].new_zeros(1), torch.cumsum(batch["n_atoms"], 0)]),
        }

    def atomic_outputs(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Each member's MACE interaction energies per atom (M, n) on one shared graph."""
        return self.atomic_properties(batch, positions, species).energy

    def atomic_properties(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> AtomicOutputs:
        """Each member's MACE interaction energies per atom (M, n) on one shared graph;
        with a dipole head, a linear charge of every layer's scalar (0e) node features
        and a linear atomic dipole of the vector (1o) ones (e3nn's 1o components are x, y, z)."""
        template = self.__dict__["_template"]
        graph = self._graph(batch, species)
        energies, features = [], []
        for m in range(self.n_members):
            data = dict(graph, positions=positions[m if positions.shape[0] > 1 else 0])
            out = torch.func.functional_call(template, self.member_parameters(m), (data,),
                                             {"training": False, "compute_force": False})
            energies.append(out["node_energy"])
            features.append(out["node_feats"])
        energy = torch.stack(energies)
        if not self.dipole_head:
            return AtomicOutputs(energy)
        return self._dipole_outputs(energy, torch.stack(features))

    def _dipole_outputs(self, energy: torch.Tensor, feats: torch.Tensor) -> AtomicOutputs:
        """The dipole head on each member's node features (M, n, D)."""
        scalars = torch.cat([feats[..., a:b] for a, b in self._scalar_slices], dim=-1)
        charge = (torch.baddbmm(self.weights["dipole_q_b"], scalars, self.weights["dipole_q_w"]))[..., 0]
        if not self._vector_slices:
            return AtomicOutputs(energy, charge)
        m, n = feats.shape[0], feats.shape[1]
        vectors = torch.cat([feats[..., a:b].reshape(m, n, -1, 3) for a, b in self._vector_slices], dim=2)
        dipole = (vectors * self.weights["dipole_v_w"][:, None]).sum(2)  # (M, n, C, 3) x (M, 1, C, 1)
        return AtomicOutputs(energy, charge, dipole)

    def raw_features(self, batch: Batch) -> torch.Tensor:
        return self.radial_features(batch, FINGERPRINT_BASIS)

    def member_parameters(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s ``ScaleShiftMACE`` parameters (by mace-torch's names)."""
        return {name: self.weights[key][member] for name, key in self._keys.items()}

    # ------------------------------------------------------------------ export
    def to_mace_model(self, member: int) -> torch.nn.Module:
        """Member ``member`` as a standalone ``ScaleShiftMACE`` with alflow's E0s and
        energy scale: the file format ``mace_run_train`` writes and
        ``mace.calculators.MACECalculator`` loads (``torch.save`` the returned module)."""
        with _default_dtype(self.dtype):
            model = build_scale_shift_mace(
                [int(z) for z in self.elements], **self.mace_settings,
                avg_num_neighbors=self.avg_num_neighbors or 1.0,
                atomic_energies=self.atom_ref_energy.detach().double().cpu().numpy(),
                scale=float(self.energy_scale), shift=0.0).to(self.dtype)
        state = {name: value.detach().cpu().clone() for name, value in self.member_parameters(member).items()}
        model.load_state_dict(state, strict=False)
        return copy.deepcopy(model)


def _feature_slices(module: torch.nn.Module) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Where the scalar (0e) and vector (1o) channels sit in a MACE module's
    ``node_feats`` (every layer's product output, concatenated; e3nn's layout: each
    irrep's channels multiplicity-major, a 1o channel as its 3 components)."""
    scalars, vectors, offset = [], [], 0
    for product in module.products:
        for mul_ir in product.linear.irreps_out:
            size = mul_ir.mul * mul_ir.ir.dim
            if mul_ir.ir.l == 0 and mul_ir.ir.p == 1:
                scalars.append((offset, offset + size))
            elif mul_ir.ir.l == 1 and mul_ir.ir.p == -1:
                vectors.append((offset, offset + size))
            offset += size
    return scalars, vectors


def write_mace_models(model: MACE, folder: str | Path) -> list[Path]:
    """Each member of ``model`` as ``member_K.model`` in ``folder`` (created; its files
    must not exist): standard MACE model files (``torch.save`` of a ``ScaleShiftMACE``)
    for ``mace.calculators.MACECalculator(model_paths=...)``, LAMMPS or TorchSim."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for member in range(model.n_members):
        path = folder / f"member_{member}.model"
        if path.exists():
            raise FileExistsError(f"{path} exists")
        torch.save(model.to_mace_model(member), path)
        paths.append(path)
    return paths


@register_model("mace-shallow")
class ShallowMACE(MACE):
    """One MACE backbone shared by M readout heads: a *shallow ensemble* (Kellner &
    Ceriotti, Mach. Learn.: Sci. Technol. 2024) of mace-torch ``ScaleShiftMACE`` models.

    Member m is a complete ``ScaleShiftMACE``: the shared interaction and product blocks
    with its own ``readouts`` (every layer's linear readout and the last layer's
    non-linear one). The backbone's tensors sit in ``weights`` with a member axis of
    length 1, the heads' with length M. One backbone pass gives every member's energy,
    so the committee-mean forces MD needs between scoring steps cost one MACE forward
    and backward instead of M; each member's own forces (scoring steps, training) still
    take one backward pass per member. The members train jointly (one validation split,
    one learning-rate schedule, one early stop: :attr:`joint_training`), the backbone on
    the sum of the members' losses. Settings, export and checkpoints are MACE's; a
    member's checkpoint holds the backbone and its head.
    """

    #: the trainer treats the members as one model (see ``nnp_core.training``)
    joint_training = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._heads = {name for name in self._keys if name.startswith("readouts.")}
        self._shared_keys = {key for name, key in self._keys.items() if name not in self._heads}
        with torch.no_grad():
            for name, key in self._keys.items():
                if name not in self._heads:  # the backbone: member 0's
                    self.weights[key] = torch.nn.Parameter(self.weights[key][:1].clone())
        # every layer's slice of node_feats (each readout reads its own layer's features)
        # and its readout's parameters: (name within the readout, key in weights)
        template, offset = self.__dict__["_template"], 0
        self._layers = []
        for layer, product in enumerate(template.products):
            size = product.linear.irreps_out.dim
            prefix = f"readouts.{layer}."
            params = [(name[len(prefix):], self._keys[name]) for name in sorted(self._heads) if name.startswith(prefix)]
            self._layers.append((offset, offset + size, params))
            offset += size

    def member_parameters(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s ``ScaleShiftMACE`` parameters: the backbone and its head.
        (Selecting and stacking members keep the one backbone: :meth:`is_shared_weight`.)"""
        return {name: self.weights[key][member if name in self._heads else 0] for name, key in self._keys.items()}

    def atomic_properties(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> AtomicOutputs:
        """Every head's MACE interaction energies per atom (M, n) from one backbone pass
        (one per copy when positions hold a copy per member, as a Hessian may ask)."""
        if positions.shape[0] > 1:
            return super().atomic_properties(batch, positions, species)
        template = self.__dict__["_template"]
        data = dict(self._graph(batch, species), positions=positions[0])
        out = torch.func.functional_call(template, self.member_parameters(0), (data,),
                                         {"training": False, "compute_force": False})
        feats = out["node_feats"]  # (n, D): every layer's features
        energies = []
        for m in range(self.n_members):
            energy = 0.0
            for readout, (start, stop, params) in zip(template.readouts, self._layers):
                head = {name: self.weights[key][m] for name, key in params}
                energy = energy + torch.func.functional_call(readout, head, (feats[:, start:stop],))[:, 0]
            energies.append(energy)
        energy = torch.stack(energies)
        if not self.dipole_head:
            return AtomicOutputs(energy)
        return self._dipole_outputs(energy, feats.expand(self.n_members, -1, -1))

    def forward(self, batch: Batch, *, compute_forces: bool = True, create_graph: bool = False) -> dict[str, torch.Tensor]:
        """Every member's energies (M, B) and, if asked, forces (M, n, 3): one backbone
        pass, one backward pass per member."""
        positions = self.positions(batch, 1, compute_forces)
        with torch.enable_grad() if compute_forces else torch.no_grad():
            result = self._energies_and_dipoles(batch, positions)
            if compute_forces:
                energy = result["energy"]
                grads = [torch.autograd.grad(energy[m].sum(), positions, create_graph=create_graph,
                                             retain_graph=True)[0][0] for m in range(self.n_members)]
                result["forces"] = -torch.stack(grads)
        if not create_graph:
            result = {key: value.detach() for key, value in result.items()}
        return result

    # ------------------------------------------------------------------ members
    def is_shared_weight(self, key: str) -> bool:
        """The backbone's tensors are shared by all members; the heads' are per member."""
        return key in self._shared_keys
