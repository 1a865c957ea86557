"""PaiNN: polarizable atom interaction neural network (Schütt, Unke & Gastegger, ICML 2021).

An equivariant message-passing network. Each atom carries scalar features s (F,) and
vector features v (3, F); ``interactions`` rounds of

    message:  phi(s_j) * W(r_ij) -> (ds, dvv, dvs),  s_i += sum_j ds,
              v_i += sum_j v_j * dvv + dvs * r_ij / |r_ij|
    update:   a = MLP(s_i, |V v_i|) -> (avv, asv, ass),  v_i += avv * U v_i,
              s_i += asv * <U v_i, V v_i> + ass

with W(r) a linear map of sin(n pi r / rc) / r radial basis functions times a cosine
cutoff, then an atomwise MLP on s gives the atomic energy:

    E = sum_i [ E0(Z_i) + s_scale * MLP(s_i) ]

Forces are -dE/dr by autograd (:class:`StackedModule`'s ``forward``). As for every
registered architecture the parameters carry a leading member axis and all members are
evaluated in one pass.

``raw_features`` (element-resolved radial-basis sums, no angles) standardised by the
fitted ``feature_mean``/``feature_std`` are the member-independent fingerprints that
diversity selection uses; they do not enter the energy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from nnp_core.batch import Batch
from nnp_core.descriptors import cosine_cutoff, radial_basis
from nnp_core.models.base import AtomicOutputs, StackedModule, element_numbers
from nnp_core.models.registry import Setting, member_generator, register_model

#: added under the square root of |V v|² so its gradient is finite at v = 0 (all vector
#: features start at zero)
NORM_EPS = 1e-8


@register_model("painn")
class PaiNN(StackedModule):
    """A committee-ready PaiNN: parameters carry a leading axis of ``n_members``."""

    supports_dipole = True
    settings = {
        "cutoff_A": Setting(5.2, "interaction cutoff, Å", float, gt=0),
        "features": Setting(64, "scalar and vector features per atom", int, ge=1),
        "interactions": Setting(3, "message-passing rounds", int, ge=1),
        "radial_basis": Setting(20, "radial basis functions", int, ge=1),
    }

    def __init__(
        self,
        *,
        elements: Sequence[int | str],
        n_members: int = 1,
        seed: int = 0,
        cutoff_A: float = 5.0,
        features: int = 64,
        interactions: int = 3,
        radial_basis: int = 20,
        dtype: str = "float64",
        dipole: bool = False,
    ) -> None:
        if min(features, interactions, radial_basis) < 1:
            raise ValueError(
                f"features, interactions and radial_basis must be >= 1, got {features}, "
                f"{interactions}, {radial_basis}"
            )
        n_el = len(element_numbers(elements))
        super().__init__(elements=elements, n_members=n_members, cutoff_A=cutoff_A, dtype=dtype,
                         n_raw_features=n_el * int(radial_basis), dipole=dipole)
        self.n_features, self.n_interactions, self.n_basis = int(features), int(interactions), int(radial_basis)
        f, k = self.n_features, self.n_basis
        shapes: dict[str, tuple[int, ...]] = {"embedding": (n_el, f)}
        for t in range(self.n_interactions):
            shapes |= {
                f"msg{t}_w0": (f, f), f"msg{t}_b0": (1, f), f"msg{t}_w1": (f, 3 * f), f"msg{t}_b1": (1, 3 * f),
                f"msg{t}_wr": (k, 3 * f), f"msg{t}_br": (1, 3 * f),
                f"upd{t}_u": (f, f), f"upd{t}_v": (f, f),
                f"upd{t}_w0": (2 * f, f), f"upd{t}_b0": (1, f), f"upd{t}_w1": (f, 3 * f), f"upd{t}_b1": (1, 3 * f),
            }
        shapes |= {"out_w0": (f, f // 2 or 1), "out_b0": (1, f // 2 or 1), "out_w1": (f // 2 or 1, 1), "out_b1": (1, 1)}
        if self.dipole_head:  # charges from the scalar, atomic dipoles from the vector features
            shapes |= {"dipole_q_w": (f, 1), "dipole_q_b": (1, 1), "dipole_v_w": (f, 1)}
        for name, shape in shapes.items():
            self.weights[name] = torch.nn.Parameter(torch.zeros(n_members, *shape))
        self.initialise_members(seed)

    # ------------------------------------------------------------------ set-up
    def initialise_member(self, member: int, seed: int) -> None:
        """LeCun-normal matrices, zero biases, unit-normal embeddings, from the member's
        own random stream; the dipole head stays zero (it starts as the fixed-charge model)."""
        self.initialise_lecun(member, seed, skip=("embedding", "dipole_q_w", "dipole_q_b", "dipole_v_w"))
        generator = member_generator(seed + 7919, member)
        with torch.no_grad():
            emb = self.weights["embedding"]
            emb[member] = torch.randn(emb.shape[1:], generator=generator, dtype=torch.float64).to(emb.dtype)

    @property
    def neighbour_cutoffs(self) -> tuple[float, float]:
        # no angle triples: angular information travels through the vector features
        return float(self.cutoff), 0.0

    def hparams(self) -> dict[str, Any]:
        return {
            "elements": [int(z) for z in self.elements],
            "cutoff_A": float(self.cutoff),
            "features": self.n_features,
            "interactions": self.n_interactions,
            "radial_basis": self.n_basis,
            "dtype": self.dtype_name,
            **({"dipole": True} if self.dipole_head else {}),
        }

    # ------------------------------------------------------------------ network
    def _linear(self, x: torch.Tensor, name: str, bias: str | None = None) -> torch.Tensor:
        """x (M or 1, N, in) @ weights[name] (M, in, out) (+ weights[bias]) -> (M, N, out)."""
        w = self.weights[name]
        out = torch.matmul(x, w)
        return out + self.weights[bias] if bias is not None else out

    def _mlp(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        h = torch.nn.functional.silu(self._linear(x, f"{prefix}_w0", f"{prefix}_b0"))
        return self._linear(h, f"{prefix}_w1", f"{prefix}_b1")

    def atomic_outputs(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """The output MLP on the final scalar features: (M, n), from positions (1 or M, n, 3)."""
        return self.atomic_properties(batch, positions, species).energy

    def atomic_properties(self, batch: Batch, positions: torch.Tensor, species: torch.Tensor) -> AtomicOutputs:
        """The output MLP on the final scalar features (M, n); with a dipole head a
        linear charge of the scalar features (M, n) and a linear atomic dipole of the
        vector features (M, n, 3), as in the PaiNN paper's dipole model."""
        m, n, f = self.n_members, species.shape[0], self.n_features
        i, j = batch["pairs"][0], batch["pairs"][1]
        vectors = positions[:, j] - positions[:, i]  # (M', P, 3)
        r = torch.linalg.vector_norm(vectors, dim=-1)
        # vector features are held as (M, 3, n, F): the Cartesian axis leads, so that
        # (M, 3n, F) @ (M, F, F) needs no copy
        unit = (vectors / r[..., None]).transpose(1, 2)[..., None]  # (M', 3, P, 1)
        basis = radial_basis(r, self.n_basis, float(self.cutoff))  # (M', P, K)
        fc = cosine_cutoff(r, float(self.cutoff))[..., None]  # (M', P, 1)
        s = self.weights["embedding"][:, species]  # (M, n, F)
        v = s.new_zeros(m, 3, n, f)
        for t in range(self.n_interactions):
            # message
            x = self._mlp(s, f"msg{t}")[:, j] * (self._linear(basis, f"msg{t}_wr", f"msg{t}_br") * fc)
            ds, dvv, dvs = x.split(f, dim=-1)  # (M, P, F) each
            dv = v[:, :, j] * dvv[:, None] + dvs[:, None] * unit
            s = s.index_add(1, i, ds)
            v = v.index_add(2, i, dv)
            # update
            uv = self._linear(v.reshape(m, 3 * n, f), f"upd{t}_u").reshape(m, 3, n, f)
            vv = self._linear(v.reshape(m, 3 * n, f), f"upd{t}_v").reshape(m, 3, n, f)
            norm = torch.sqrt(vv.pow(2).sum(1) + NORM_EPS)
            a = self._mlp(torch.cat([s, norm], dim=-1), f"upd{t}")
            avv, asv, ass = a.split(f, dim=-1)
            v = v + avv[:, None] * uv
            s = s + asv * (uv * vv).sum(1) + ass
        energy = self._mlp(s, "out")[..., 0]  # (M, n)
        if not self.dipole_head:
            return AtomicOutputs(energy)
        charge = self._linear(s, "dipole_q_w", "dipole_q_b")[..., 0]
        dipole = self._linear(v.reshape(m, 3 * n, f), "dipole_v_w").reshape(m, 3, n).transpose(1, 2)  # (M, n, 3)
        return AtomicOutputs(energy, charge, dipole)

    # ------------------------------------------------------------------ fingerprints
    def raw_features(self, batch: Batch) -> torch.Tensor:
        """Element-resolved radial-basis sums (n, n_elements * K) (normalisation, fingerprints)."""
        return self.radial_features(batch, self.n_basis)
