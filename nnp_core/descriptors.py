"""ANI-style atom-centred symmetry functions (Smith, Isayev & Roitberg, Chem. Sci. 2017).

Radial, for each neighbour element Z and shift R_s:
    G_R(i; Z, R_s) = sum_{j in Z} 0.25 exp(-eta_R (r_ij - R_s)^2) fc(r_ij; Rc_R)
Angular, for each unordered neighbour-element pair (Z1, Z2), angle shift theta_s and
radial shift R_s:
    G_A = 2^(1-zeta) sum_{j<k} (1 + cos(theta_ijk - theta_s))^zeta
          * exp(-eta_A ((r_ij + r_ik)/2 - R_s)^2) fc(r_ij; Rc_A) fc(r_ik; Rc_A)
with the smooth cosine cutoff fc(r; Rc) = (cos(pi r / Rc) + 1) / 2 for r < Rc, else 0.
As in TorchANI, cos(theta) is scaled by 0.95 before taking the angle so that the
derivative stays finite at 0 and 180 degrees.

All functions take positions with a leading member axis, (M, n, 3), and return
features (M, n, F): each committee member differentiates its own copy of the
positions, which gives every member exact forces from one backward pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class DescriptorSpec:
    """Hyperparameters of the symmetry functions (lengths in Å, eta in 1/Å²)."""

    cutoff_A: float = 5.2
    angular_cutoff_A: float = 3.5
    n_radial: int = 16
    eta_radial_per_A2: float = 16.0
    n_angular_radial: int = 4
    n_angular_theta: int = 8
    eta_angular_per_A2: float = 8.0
    zeta: float = 32.0
    min_shift_A: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.angular_cutoff_A <= self.cutoff_A:
            raise ValueError(
                f"need 0 < angular_cutoff_A <= cutoff_A, got {self.angular_cutoff_A}, "
                f"{self.cutoff_A}"
            )
        if min(self.n_radial, self.n_angular_radial, self.n_angular_theta) < 1:
            raise ValueError("descriptor sizes must be >= 1")

    def n_features(self, n_elements: int) -> int:
        n_pairs = n_elements * (n_elements + 1) // 2
        return n_elements * self.n_radial + n_pairs * self.n_angular_radial * self.n_angular_theta

    def to_dict(self) -> dict:
        return asdict(self)


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """(cos(pi r / cutoff) + 1) / 2 inside the cutoff, 0 outside; smooth at the cutoff."""
    inside = r < cutoff
    value = 0.5 * torch.cos(math.pi * r / cutoff) + 0.5
    return torch.where(inside, value, torch.zeros_like(value))


def _power(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """x**exponent, by repeated squaring when the exponent is a power of two (faster)."""
    if exponent >= 1 and float(exponent).is_integer() and (int(exponent) & (int(exponent) - 1)) == 0:
        for _ in range(int(exponent).bit_length() - 1):
            x = x * x
        return x
    return x**exponent


class SymmetryFunctions(torch.nn.Module):
    """Element-resolved radial + angular ANI features for ``n_elements`` species."""

    def __init__(self, spec: DescriptorSpec, n_elements: int) -> None:
        super().__init__()
        self.spec = spec
        self.n_elements = n_elements
        self.n_pairs = n_elements * (n_elements + 1) // 2
        s = spec
        self.register_buffer(
            "radial_shifts", torch.linspace(s.min_shift_A, s.cutoff_A, s.n_radial + 1)[:-1]
        )
        self.register_buffer(
            "angular_shifts",
            torch.linspace(s.min_shift_A, s.angular_cutoff_A, s.n_angular_radial + 1)[:-1],
        )
        theta = (torch.arange(s.n_angular_theta) + 0.5) * math.pi / s.n_angular_theta
        self.register_buffer("theta_cos", torch.cos(theta))
        self.register_buffer("theta_sin", torch.sin(theta))
        # index of the unordered element pair (a, b) in the angular block
        pair_index = torch.zeros(n_elements, n_elements, dtype=torch.int64)
        a, b = torch.triu_indices(n_elements, n_elements)
        pair_index[a, b] = torch.arange(len(a))
        pair_index[b, a] = torch.arange(len(a))
        self.register_buffer("pair_index", pair_index)

    @property
    def n_features(self) -> int:
        return self.spec.n_features(self.n_elements)

    def forward(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        pairs: torch.Tensor,
        triples: torch.Tensor,
    ) -> torch.Tensor:
        """Features (M, n, F) from positions (M, n, 3) and species indices (n,)."""
        radial = self._radial(positions, species, pairs)
        angular = self._angular(positions, species, triples)
        return torch.cat([radial, angular], dim=-1)

    def _radial(self, pos: torch.Tensor, species: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        s = self.spec
        n_members, n_atoms = pos.shape[0], pos.shape[1]
        i, j = pairs[0], pairs[1]
        r = torch.linalg.vector_norm(pos[:, j] - pos[:, i], dim=-1)  # (M, P)
        terms = 0.25 * torch.exp(-s.eta_radial_per_A2 * (r[..., None] - self.radial_shifts) ** 2)
        terms = terms * cosine_cutoff(r, s.cutoff_A)[..., None]  # (M, P, nR)
        out = pos.new_zeros(n_members, n_atoms * self.n_elements, s.n_radial)
        out = out.index_add(1, i * self.n_elements + species[j], terms)
        return out.reshape(n_members, n_atoms, self.n_elements * s.n_radial)

    def _angular(
        self, pos: torch.Tensor, species: torch.Tensor, triples: torch.Tensor
    ) -> torch.Tensor:
        s = self.spec
        n_members, n_atoms = pos.shape[0], pos.shape[1]
        block = s.n_angular_theta * s.n_angular_radial
        out = pos.new_zeros(n_members, n_atoms * self.n_pairs, block)
        if triples.shape[1] > 0:
            c, j, k = triples[0], triples[1], triples[2]
            v1, v2 = pos[:, j] - pos[:, c], pos[:, k] - pos[:, c]  # (M, T, 3)
            d1 = torch.linalg.vector_norm(v1, dim=-1)
            d2 = torch.linalg.vector_norm(v2, dim=-1)
            cos = 0.95 * (v1 * v2).sum(-1) / (d1 * d2)
            sin = torch.sqrt(1.0 - cos**2)
            # (1 + cos(theta - theta_s)) / 2 raised to zeta, times 2: equals 2^(1-zeta)(1+cos)^zeta
            cos_diff = cos[..., None] * self.theta_cos + sin[..., None] * self.theta_sin
            angle = 2.0 * _power((1.0 + cos_diff) / 2.0, s.zeta)  # (M, T, nTheta)
            mean_r = 0.5 * (d1 + d2)
            radial = torch.exp(-s.eta_angular_per_A2 * (mean_r[..., None] - self.angular_shifts) ** 2)
            fc = cosine_cutoff(d1, s.angular_cutoff_A) * cosine_cutoff(d2, s.angular_cutoff_A)
            terms = angle[..., :, None] * (radial * fc[..., None])[..., None, :]
            index = c * self.n_pairs + self.pair_index[species[j], species[k]]
            out = out.index_add(1, index, terms.reshape(n_members, -1, block))
        return out.reshape(n_members, n_atoms, self.n_pairs * block)
