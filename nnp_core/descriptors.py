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
features (M, n, F). Forces need the vector-Jacobian product of the features with the
members' dE/dG: autograd gives it (training differentiates through it), and
:meth:`SymmetryFunctions.vjp` gives it analytically from a :class:`DescriptorTape` of
the forward pass, for any number of cotangents at once (all members, or their mean),
without an autograd graph through the descriptors.
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


def cosine_cutoff_derivative(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """d/dr of :func:`cosine_cutoff`: -pi/(2 cutoff) sin(pi r / cutoff) inside, 0 outside."""
    value = (-0.5 * math.pi / cutoff) * torch.sin(math.pi * r / cutoff)
    return torch.where(r < cutoff, value, torch.zeros_like(value))


def _power(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """x**exponent, by repeated squaring when the exponent is a power of two (faster)."""
    if exponent >= 1 and float(exponent).is_integer() and (int(exponent) & (int(exponent) - 1)) == 0:
        for _ in range(int(exponent).bit_length() - 1):
            x = x * x
        return x
    return x**exponent


@dataclass
class DescriptorTape:
    """Derivatives of the descriptor terms at one set of positions (leading axis 1).

    Radial, per pair (i, j): ``unit`` (1, P, 3) = (x_j - x_i) / r_ij and ``radial_slope``
    (1, P, nR) = d term / d r_ij. Angular, per triple (c, j, k) with v1 = x_j - x_c,
    v2 = x_k - x_c: the term factorises as angle(cos) (1, T, nθ) times
    ``angular_radial`` (1, T, nS) = exp(...) fc(d1) fc(d2), with their derivatives
    ``angle_slope`` (d angle / d cos), ``angular_radial_d1`` and ``angular_radial_d2``.
    """

    n_atoms: int
    pairs: torch.Tensor
    pair_index: torch.Tensor  # (P,) row of each pair's terms in the radial block
    unit: torch.Tensor
    radial_slope: torch.Tensor
    triples: torch.Tensor
    triple_index: torch.Tensor  # (T,) row of each triple's terms in the angular block
    v1: torch.Tensor
    v2: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor
    cos: torch.Tensor
    angle: torch.Tensor
    angle_slope: torch.Tensor
    angular_radial: torch.Tensor
    angular_radial_d1: torch.Tensor
    angular_radial_d2: torch.Tensor


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

    @property
    def n_radial_features(self) -> int:
        return self.n_elements * self.spec.n_radial

    def forward(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        pairs: torch.Tensor,
        triples: torch.Tensor,
    ) -> torch.Tensor:
        """Features (M, n, F) from positions (M, n, 3) and species indices (n,)."""
        return self.evaluate(positions, species, pairs, triples, tape=False)[0]

    def evaluate(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        pairs: torch.Tensor,
        triples: torch.Tensor,
        *,
        tape: bool = True,
    ) -> tuple[torch.Tensor, DescriptorTape | None]:
        """Features (M, n, F) and, with ``tape`` (positions (1, n, 3)), the derivatives
        :meth:`vjp` needs."""
        radial, radial_tape = self._radial(positions, species, pairs, tape)
        angular, angular_tape = self._angular(positions, species, triples, tape)
        features = torch.cat([radial, angular], dim=-1)
        if not tape:
            return features, None
        return features, DescriptorTape(n_atoms=positions.shape[1], **radial_tape, **angular_tape)

    def _radial(
        self, pos: torch.Tensor, species: torch.Tensor, pairs: torch.Tensor, tape: bool
    ) -> tuple[torch.Tensor, dict]:
        s = self.spec
        n_members, n_atoms = pos.shape[0], pos.shape[1]
        i, j = pairs[0], pairs[1]
        vectors = pos[:, j] - pos[:, i]
        r = torch.linalg.vector_norm(vectors, dim=-1)  # (M, P)
        shift = r[..., None] - self.radial_shifts
        gauss = 0.25 * torch.exp(-s.eta_radial_per_A2 * shift**2)  # (M, P, nR)
        fc = cosine_cutoff(r, s.cutoff_A)[..., None]
        index = i * self.n_elements + species[j]
        out = pos.new_zeros(n_members, n_atoms * self.n_elements, s.n_radial)
        out = out.index_add(1, index, gauss * fc)
        out = out.reshape(n_members, n_atoms, self.n_elements * s.n_radial)
        if not tape:
            return out, {}
        dfc = cosine_cutoff_derivative(r, s.cutoff_A)[..., None]
        slope = gauss * (dfc - 2.0 * s.eta_radial_per_A2 * shift * fc)
        return out, {"pairs": pairs, "pair_index": index, "unit": vectors / r[..., None],
                     "radial_slope": slope}

    def _angular(
        self, pos: torch.Tensor, species: torch.Tensor, triples: torch.Tensor, tape: bool
    ) -> tuple[torch.Tensor, dict]:
        s = self.spec
        n_members, n_atoms = pos.shape[0], pos.shape[1]
        block = s.n_angular_theta * s.n_angular_radial
        c, j, k = triples[0], triples[1], triples[2]
        v1, v2 = pos[:, j] - pos[:, c], pos[:, k] - pos[:, c]  # (M, T, 3)
        d1 = torch.linalg.vector_norm(v1, dim=-1)
        d2 = torch.linalg.vector_norm(v2, dim=-1)
        cos = 0.95 * (v1 * v2).sum(-1) / (d1 * d2)
        sin = torch.sqrt(1.0 - cos**2)
        # (1 + cos(theta - theta_s)) / 2 raised to zeta, times 2: equals 2^(1-zeta)(1+cos)^zeta
        base = 0.5 + 0.5 * (cos[..., None] * self.theta_cos + sin[..., None] * self.theta_sin)
        angle = 2.0 * _power(base, s.zeta)  # (M, T, nθ)
        shift = 0.5 * (d1 + d2)[..., None] - self.angular_shifts
        gauss = torch.exp(-s.eta_angular_per_A2 * shift**2)  # (M, T, nS)
        fc1, fc2 = cosine_cutoff(d1, s.angular_cutoff_A), cosine_cutoff(d2, s.angular_cutoff_A)
        radial = gauss * (fc1 * fc2)[..., None]
        terms = angle[..., :, None] * radial[..., None, :]
        index = c * self.n_pairs + self.pair_index[species[j], species[k]]
        out = pos.new_zeros(n_members, n_atoms * self.n_pairs, block)
        out = out.index_add(1, index, terms.reshape(n_members, -1, block))
        out = out.reshape(n_members, n_atoms, self.n_pairs * block)
        if not tape:
            return out, {}
        # d angle / d cos = 2 zeta base^(zeta-1) d base / d cos = zeta angle / base * d base / d cos
        # (base > 0: |theta - theta_s| < pi since |cos| <= 0.95), d sin / d cos = -cos / sin
        dbase = 0.5 * (self.theta_cos - (cos / sin)[..., None] * self.theta_sin)
        slope = s.zeta * angle / base * dbase
        dgauss = -s.eta_angular_per_A2 * shift * gauss  # d gauss / d d1 (= d / d d2)
        dfc1 = cosine_cutoff_derivative(d1, s.angular_cutoff_A)
        dfc2 = cosine_cutoff_derivative(d2, s.angular_cutoff_A)
        return out, {
            "triples": triples, "triple_index": index, "v1": v1, "v2": v2, "d1": d1, "d2": d2,
            "cos": cos, "angle": angle, "angle_slope": slope, "angular_radial": radial,
            "angular_radial_d1": dgauss * (fc1 * fc2)[..., None] + gauss * (dfc1 * fc2)[..., None],
            "angular_radial_d2": dgauss * (fc1 * fc2)[..., None] + gauss * (fc1 * dfc2)[..., None],
        }

    def vjp(self, tape: DescriptorTape, cotangent: torch.Tensor) -> torch.Tensor:
        """sum over (atom, feature) of cotangent (K, n, F) times dG/dx: (K, n, 3).

        K cotangents at once (e.g. one per committee member); equals autograd's
        vector-Jacobian product of :meth:`forward` at the tape's positions.
        """
        s, t = self.spec, tape
        k_count = cotangent.shape[0]
        n_radial = self.n_radial_features
        w = cotangent[..., :n_radial].reshape(k_count, -1, s.n_radial).index_select(1, t.pair_index)
        pair_grad = (w * t.radial_slope).sum(-1)[..., None] * t.unit  # (K, P, 3) on x_j
        grad = cotangent.new_zeros(k_count, t.n_atoms, 3)
        grad = grad.index_add(1, t.pairs[1], pair_grad).index_add(1, t.pairs[0], -pair_grad)
        if t.triples.shape[1] == 0:
            return grad
        block = cotangent[..., n_radial:].reshape(k_count, -1, s.n_angular_theta, s.n_angular_radial)
        w = block.index_select(1, t.triple_index)  # (K, T, nθ, nS)
        g_angle = (w @ t.angular_radial[..., :, None]).squeeze(-1)  # (K, T, nθ)
        g_radial = (t.angle[..., None, :] @ w).squeeze(-2)  # (K, T, nS)
        g_cos = (g_angle * t.angle_slope).sum(-1)
        g_d1 = (g_radial * t.angular_radial_d1).sum(-1)
        g_d2 = (g_radial * t.angular_radial_d2).sum(-1)
        # cos = 0.95 v1.v2 / (d1 d2): d cos / d v1 = 0.95 v2 / (d1 d2) - cos v1 / d1²
        d1d2 = (t.d1 * t.d2)[..., None]
        g_v1 = g_cos[..., None] * (0.95 * t.v2 / d1d2 - (t.cos / t.d1**2)[..., None] * t.v1)
        g_v1 = g_v1 + (g_d1 / t.d1)[..., None] * t.v1
        g_v2 = g_cos[..., None] * (0.95 * t.v1 / d1d2 - (t.cos / t.d2**2)[..., None] * t.v2)
        g_v2 = g_v2 + (g_d2 / t.d2)[..., None] * t.v2
        c, j, k = t.triples[0], t.triples[1], t.triples[2]
        return grad.index_add(1, j, g_v1).index_add(1, k, g_v2).index_add(1, c, -(g_v1 + g_v2))


def radial_basis(r: torch.Tensor, n_basis: int, cutoff_A: float) -> torch.Tensor:
    """sin(n pi r / rc) / r for n = 1..n_basis, times the cosine cutoff: (..., n_basis)."""
    n = torch.arange(1, n_basis + 1, dtype=r.dtype, device=r.device)
    r = r[..., None]
    return torch.sin(n * math.pi * r / cutoff_A) / r * cosine_cutoff(r, cutoff_A)
