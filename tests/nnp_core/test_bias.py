"""Exploration biases (nnp_core.bias) in the batched MD engine: UDD and metadynamics.

The bias forces must be the negative gradient of the bias energy (finite differences,
on scoring and on mean-only steps alike); a zero bias must leave the engine's trajectory
bit for bit as it was; metadynamics must fill an analytic double well so that its
free-energy estimate is within k_B·T of the truth; frames keep the unbiased scores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule

from nnp_core.bias import (
    Metadynamics,
    TorsionCVs,
    UncertaintyDrivenBias,
    dihedrals,
    reweighting_weights,
    rotatable_torsions,
)
from nnp_core.md import MDConfig, Replica, StopReason, run_md
from nnp_core.md_engine import ReplicaEnsemble

from .test_md import emt_water_committee, one_torch_thread, relaxed_water  # noqa: F401  (fixtures)

ETHANOL = molecule("CH3CH2OH")


def _ensemble(committee, structures, bias) -> ReplicaEnsemble:
    n = len(structures)
    return ReplicaEnsemble(committee, structures, temperatures_K=[300.0] * n, friction_per_fs=[0.01] * n,
                           seeds=list(range(n)), skin_A=0.5, bias=bias)


def _bias_energy(committee, structures, bias, positions: np.ndarray) -> float:
    """Total bias energy of the replicas at flat ``positions`` (n, 3)."""
    ens = _ensemble(committee, structures, bias)
    ens.positions[:] = positions
    ens.evaluate(score=True)
    return float(ens.bias_energy_eV.sum())


def _bias_forces(committee, structures, bias, *, score: bool) -> np.ndarray:
    """The engine's forces with the bias minus those without."""
    biased, plain = _ensemble(committee, structures, bias), _ensemble(committee, structures, None)
    biased.evaluate(score=score)
    plain.evaluate(score=True)
    return biased.forces - plain.forces


def _finite_difference(committee, structures, bias, h: float = 1e-5) -> np.ndarray:
    base = np.concatenate([a.positions for a in structures])
    grad = np.zeros_like(base)
    for i in range(base.shape[0]):
        for k in range(3):
            plus, minus = base.copy(), base.copy()
            plus[i, k] += h
            minus[i, k] -= h
            grad[i, k] = (_bias_energy(committee, structures, bias, plus)
                          - _bias_energy(committee, structures, bias, minus)) / (2 * h)
    return -grad


def _shaken(atoms: Atoms, seed: int, stddev_A: float = 0.05) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(0.0, stddev_A, atoms.positions.shape)
    return atoms


# ------------------------------------------------------------------ UDD


def test_udd_energy_is_the_formula(random_committee) -> None:
    """E_bias = A [exp(-sigma_E^2 / (M N B^2)) - 1], sigma_E^2 the members' population variance."""
    frames = [_shaken(ETHANOL, 0), _shaken(ETHANOL, 1)]
    bias = UncertaintyDrivenBias(A_eV=0.3, B_eV=0.02)
    ens = _ensemble(random_committee, frames, bias)
    ens.evaluate(score=True)
    energies = random_committee.predict(frames).member_energies  # (M, B)
    variance = energies.var(axis=0)
    expected = 0.3 * (np.exp(-variance / (random_committee.n_members * len(ETHANOL) * 0.02**2)) - 1.0)
    np.testing.assert_allclose(ens.bias_energy_eV, expected, rtol=1e-10)
    assert np.all(expected < 0) and np.all(expected > -0.3)


@pytest.mark.parametrize("score", [True, False], ids=["scoring-step", "mean-only-step"])
def test_udd_forces_are_the_negative_gradient(any_committee, score: bool) -> None:
    frames = [_shaken(ETHANOL, 2), _shaken(molecule("H2O"), 3)]
    # B chosen so that the bias is in its steep part for these untrained members
    spread = any_committee.predict(frames).energy_dev.mean() * math.sqrt(any_committee.n_members)
    bias = UncertaintyDrivenBias(A_eV=0.5, B_eV=float(spread))
    forces = _bias_forces(any_committee, frames, bias, score=score)
    expected = _finite_difference(any_committee, frames, bias)
    assert np.abs(expected).max() > 1e-3  # the bias does push
    np.testing.assert_allclose(forces, expected, atol=1e-6 * max(1.0, np.abs(expected).max()))


def test_udd_nve_conserves_the_biased_energy(emt_water_committee, relaxed_water) -> None:
    """A static bias: E_committee + E_bias + kinetic is a constant of NVE motion."""
    spread = emt_water_committee.predict(_shaken(relaxed_water, 0, 0.1)).energy_dev[0]
    bias = UncertaintyDrivenBias(A_eV=0.2, B_eV=float(spread) / math.sqrt(emt_water_committee.n_members))
    replicas = [Replica(relaxed_water, temperature_K=300.0, seed=seed) for seed in range(2)]
    config = MDConfig(integrator="nve", timestep_fs=0.25, n_steps=800, record_interval_steps=10)
    result = run_md(emt_water_committee, replicas, config=config, bias=bias)
    assert all(s.stop_reason == StopReason.COMPLETED for s in result.replicas)
    for replica in range(2):
        frames = [f for f in result.frames if f.replica == replica]
        kinetic = np.array([f.to_atoms().get_kinetic_energy() for f in frames])
        potential = np.array([f.potential_energy_eV for f in frames])
        bias_energy = np.array([f.bias_energy_eV for f in frames])
        assert np.ptp(bias_energy) > 0.01  # the bias works along the trajectory
        total = potential + bias_energy + kinetic
        assert np.ptp(total) < 0.05 * np.ptp(potential + bias_energy)
        # the unbiased total is not conserved: the bias does work
        assert np.ptp(potential + kinetic) > 3 * np.ptp(total)


# ------------------------------------------------------------------ metadynamics


def test_dihedral_matches_ase_and_torsions_are_the_rotatable_bonds() -> None:
    torsions = rotatable_torsions(ETHANOL)
    symbols = ETHANOL.get_chemical_symbols()
    assert sorted("".join(symbols[i] for i in t[1:3]) for t in torsions) == ["CC", "CO"]
    assert rotatable_torsions(molecule("H2O")) == []
    for seed in range(5):
        atoms = _shaken(ETHANOL, seed, 0.3)
        values = dihedrals(torch.as_tensor(atoms.positions), torch.as_tensor(torsions)).numpy()
        ase_values = [atoms.get_dihedral(*t) for t in torsions]
        np.testing.assert_allclose(np.degrees(values) % 360.0, np.array(ase_values) % 360.0, atol=1e-9)


def _metad(n_replicas: int, height_eV: float = 0.05, pace: int = 5, bias_factor: float | None = 6.0):
    return Metadynamics(TorsionCVs(rotatable_torsions(ETHANOL)), height_eV=height_eV, sigma=0.35,
                        pace_steps=pace, bias_factor=bias_factor, temperatures_K=[300.0] * n_replicas)


@pytest.mark.parametrize("score", [True, False], ids=["scoring-step", "mean-only-step"])
def test_metad_forces_are_the_negative_gradient(random_committee, score: bool) -> None:
    frames = [_shaken(ETHANOL, 4), _shaken(ETHANOL, 5)]
    bias = _metad(2)
    rng = np.random.default_rng(0)
    start = dihedrals(torch.as_tensor(frames[0].positions), torch.as_tensor(rotatable_torsions(ETHANOL))).numpy()
    for replica in range(2):  # hills near (and across the periodic edge of) each replica's CVs
        centres = start + rng.normal(0.0, 0.4, (6, 2))
        bias.set_hills(replica, np.column_stack([centres, rng.uniform(0.01, 0.05, 6)]))
    forces = _bias_forces(random_committee, frames, bias, score=score)
    expected = _finite_difference(random_committee, frames, bias)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(forces, expected, atol=1e-7)


def test_metad_hills_are_periodic() -> None:
    bias = _metad(1)
    bias.set_hills(0, np.array([[math.pi - 0.05, 0.0, 0.1]]))
    inside = bias.bias_at(torch.tensor([[-math.pi + 0.05, 0.0]], dtype=torch.float64), np.array([0]))
    # 0.1 rad apart across the edge, not 2π - 0.1
    assert float(inside) == pytest.approx(0.1 * math.exp(-0.1**2 / (2 * 0.35**2)), rel=1e-12)


def test_metad_deposits_well_tempered_hills_per_replica(random_committee) -> None:
    bias = _metad(2, height_eV=0.05, pace=5, bias_factor=4.0)
    replicas = [Replica(ETHANOL, temperature_K=300.0, seed=s) for s in range(2)]
    result = run_md(random_committee, replicas, config=MDConfig(n_steps=40, record_interval_steps=10), bias=bias)
    for replica in range(2):
        hills = bias.hills[replica]
        assert hills.shape == (8, 3)
        assert hills[0, 2] == pytest.approx(0.05 * math.exp(-0.0))  # nothing deposited before the first
        # each later height is h0 exp(-V(s)/(kB (gamma-1) T)) with V from the earlier hills
        for k in range(1, 8):
            earlier = Metadynamics(bias.cvs, height_eV=0.05, sigma=0.35, pace_steps=5, bias_factor=4.0,
                                   temperatures_K=[300.0])
            earlier.set_hills(0, hills[:k])
            v = float(earlier.bias_at(torch.as_tensor(hills[k : k + 1, :2]), np.array([0])))
            assert hills[k, 2] == pytest.approx(0.05 * math.exp(-v / (units.kB * 3.0 * 300.0)), rel=1e-9)
        frames = [f for f in result.frames if f.replica == replica and f.step > 0]
        assert all(f.bias == "metad" and len(f.cvs) == 2 and f.bias_energy_eV > 0 for f in frames)
    assert not np.array_equal(bias.hills[0], bias.hills[1])


class _XCoordinate:
    """The x coordinate of each frame's first atom: a 1-D, non-periodic CV."""

    periodic = False
    names = ("x",)

    def __call__(self, positions: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return positions[starts, :1]


def test_metad_rct_is_tiwary_parrinellos_integral_over_the_bias_so_far() -> None:
    """c(t) after k hills = kT ln[sum e^(g/(g-1) V/kT) / sum e^(V/((g-1) kT))] over the grid,
    with V the periodic bias of the first k hills as bias_at evaluates it."""
    bias = _metad(1, height_eV=0.05, bias_factor=6.0)
    rng = np.random.default_rng(3)
    hills = np.column_stack([rng.uniform(-math.pi, math.pi, (12, 2)), rng.uniform(0.01, 0.05, 12)])
    hills[0, :2] = [math.pi - 0.02, -math.pi + 0.01]  # a hill on the edge: it must wrap
    bias.set_hills(0, hills)
    grid = bias.grid(36)
    assert grid.shape == (36 * 36, 2) and grid.min() == -math.pi and grid.max() < math.pi
    rct = bias.rct(0)
    assert rct.shape == (13,) and rct[0] == 0.0
    beta, gamma = 1.0 / (units.kB * 300.0), 6.0
    for k in (1, 5, 12):
        partial = Metadynamics(bias.cvs, height_eV=0.05, sigma=0.35, pace_steps=1, bias_factor=gamma,
                               temperatures_K=[300.0])
        partial.set_hills(0, hills[:k])
        v = partial.bias_at(torch.as_tensor(bias.grid()), np.zeros(72 * 72, dtype=int)).numpy()
        expected = (np.log(np.exp(gamma / (gamma - 1) * beta * v).sum())
                    - np.log(np.exp(beta * v / (gamma - 1)).sum())) / beta
        assert rct[k] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="non-periodic"):
        Metadynamics(_XCoordinate(), height_eV=0.1, sigma=0.1, pace_steps=1, bias_factor=5.0,
                     temperatures_K=[300.0]).grid()


def test_metad_fills_a_double_well_and_recovers_its_free_energy() -> None:
    """Overdamped Langevin in U(x) = Eb (x^2 - 1)^2 (Eb = 5 kT): well-tempered metadynamics
    crosses the barrier and F(x) = -gamma/(gamma-1) V(x) equals U(x) within kT on [-1.2, 1.2]
    (0.83 kT here; 40 000 steps, 2000 hills). The frames themselves, reweighted with
    e^((V - c(t))/kT) (Tiwary-Parrinello), give U(x) within kT/2 (0.31 kT here) from a
    histogram; with e^(V/kT) alone (no c(t)) 0.75 kT, from a third of the effective samples."""
    temperature = 300.0
    kT = units.kB * temperature
    barrier = 5.0 * kT
    bias = Metadynamics(_XCoordinate(), height_eV=0.5 * kT, sigma=0.1, pace_steps=20, bias_factor=8.0,
                        temperatures_K=[temperature])
    rng = np.random.default_rng(0)
    diffusion_dt = 1e-3  # D dt in Å^2
    x, crossings, side = -1.0, 0, -1
    starts = torch.zeros(1, dtype=torch.long)
    frames = []  # (x, V, hills deposited) of each step's frame, as an engine records it
    for step in range(1, 40_001):
        position = torch.tensor([[x, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
        terms = bias.position_bias(position, starts, np.array([0]))
        (grad,) = torch.autograd.grad(terms.energy.sum(), position)
        force = -4.0 * barrier * x * (x * x - 1.0) - float(grad[0, 0])
        x += diffusion_dt * force / kT + math.sqrt(2.0 * diffusion_dt) * rng.standard_normal()
        if x * side < -0.5:
            crossings, side = crossings + 1, -side
        energy = terms.energy.detach().numpy()
        frames.append((float(position.detach()[0, 0]), float(energy[0]), len(bias.hills[0])))
        bias.update(step, np.array([[x]]), energy, np.array([0]))
    assert crossings >= 10  # unbiased, a 5 kT barrier would be crossed rarely
    grid = np.linspace(-1.2, 1.2, 49)
    estimate = bias.free_energy(grid[:, None], 0)
    exact = barrier * (grid**2 - 1.0) ** 2
    shift = np.mean(estimate - exact)
    assert np.max(np.abs(estimate - shift - exact)) < kT

    xs, v, hills_then = (np.array(column) for column in zip(*frames))
    rct = bias.rct(0, np.linspace(-2.0, 2.0, 401)[:, None])
    edges = np.linspace(-1.2, 1.2, 25)
    centres = 0.5 * (edges[1:] + edges[:-1])

    def histogram_error(weights: np.ndarray) -> float:
        counts, _ = np.histogram(xs, edges, weights=weights)
        deviation = -kT * np.log(counts) - barrier * (centres**2 - 1.0) ** 2
        return float(np.max(np.abs(deviation - deviation.mean())))

    with_rct = reweighting_weights(v, temperature, rct_eV=rct[hills_then])
    static = reweighting_weights(v, temperature)
    assert histogram_error(with_rct) < 0.5 * kT < histogram_error(static)
    assert 1.0 / np.sum(with_rct**2) > 2.0 / np.sum(static**2)  # Kish effective sample sizes


# ------------------------------------------------------------------ engine integration


@pytest.mark.parametrize("integrator", ["langevin", "nve"])
def test_zero_bias_leaves_the_trajectory_bit_identical(random_committee, integrator: str) -> None:
    replicas = [Replica(_shaken(ETHANOL, s, 0.02), temperature_K=300.0, seed=s) for s in range(3)]
    config = MDConfig(integrator=integrator, n_steps=60, record_interval_steps=7)
    plain = run_md(random_committee, replicas, config=config)
    for bias in (UncertaintyDrivenBias(A_eV=0.0, B_eV=0.01), _metad(3, height_eV=0.0, pace=3)):
        biased = run_md(random_committee, replicas, config=config, bias=bias)
        assert len(plain.frames) == len(biased.frames)
        for a, b in zip(plain.frames, biased.frames):
            assert np.array_equal(a.positions_A, b.positions_A)
            assert np.array_equal(a.velocities_A_per_fs, b.velocities_A_per_fs)
            assert a.potential_energy_eV == b.potential_energy_eV and a.max_force_dev == b.max_force_dev
            assert b.bias_energy_eV == 0.0


def test_biased_frames_keep_unbiased_scores_and_carry_their_bias(random_committee) -> None:
    spread = float(random_committee.predict(ETHANOL).energy_dev[0]) * math.sqrt(random_committee.n_members)
    replicas = [Replica(ETHANOL, temperature_K=300.0, seed=s) for s in range(2)]
    config = MDConfig(n_steps=30, record_interval_steps=10)
    for bias in (UncertaintyDrivenBias(A_eV=0.5, B_eV=spread), _metad(2)):
        result = run_md(random_committee, replicas, config=config, bias=bias)
        frames = [f for f in result.frames if f.step > 0]
        prediction = random_committee.predict([f.to_atoms() for f in frames])
        np.testing.assert_allclose([f.max_force_dev for f in frames], prediction.max_force_dev, rtol=1e-9)
        np.testing.assert_allclose([f.potential_energy_eV for f in frames], prediction.energy_mean, rtol=1e-12)
        np.testing.assert_allclose([f.energy_dev for f in frames], prediction.energy_dev, rtol=1e-9)
        assert all(f.bias_energy_eV != 0.0 for f in frames)
        info = frames[-1].to_atoms().info
        assert info["bias"] == bias.name and info["bias_energy_eV"] == frames[-1].bias_energy_eV
        assert len(info["bias_cvs"]) == len(bias.cv_names)


def test_bias_pushes_replicas_towards_uncertainty(random_committee) -> None:
    """UDD raises the committee disagreement the replicas visit (same seeds, same steps)."""
    spread = float(random_committee.predict(ETHANOL).energy_dev[0]) * math.sqrt(random_committee.n_members)
    replicas = [Replica(ETHANOL, temperature_K=300.0, seed=s) for s in range(4)]
    config = MDConfig(n_steps=200, record_interval_steps=10)
    plain = run_md(random_committee, replicas, config=config)
    driven = run_md(random_committee, replicas, config=config, bias=UncertaintyDrivenBias(A_eV=2.0, B_eV=spread))
    assert np.mean([f.energy_dev for f in driven.frames]) > 1.2 * np.mean([f.energy_dev for f in plain.frames])


# ------------------------------------------------------------------ reweighting and errors


def test_reweighting_recovers_the_unbiased_average() -> None:
    """x ~ exp(-(U + V)/kT) with U = k x^2/2, V = k' x^2/2: reweighted <x^2> = kT/k."""
    kT = units.kB * 300.0
    k, k_bias = 2.0, 1.0  # weights of finite variance need k_bias < k
    x = np.random.default_rng(0).normal(0.0, math.sqrt(kT / (k + k_bias)), 200_000)
    weights = reweighting_weights(0.5 * k_bias * x**2, 300.0)
    assert np.sum(weights) == pytest.approx(1.0)
    assert np.sum(weights * x**2) == pytest.approx(kT / k, rel=0.03)
    assert np.mean(x**2) == pytest.approx(kT / (k + k_bias), rel=0.03)  # unweighted: the biased one
    shifted = reweighting_weights(0.5 * k_bias * x**2, 300.0, rct_eV=np.full(x.shape, 0.7))
    np.testing.assert_allclose(shifted, weights, rtol=1e-12)  # a constant c(t) changes nothing
    with pytest.raises(ValueError, match="rct_eV has 2 value"):
        reweighting_weights(x[:3], 300.0, rct_eV=np.zeros(2))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: UncertaintyDrivenBias(A_eV=-1.0, B_eV=0.1), "A_eV"),
    (lambda: UncertaintyDrivenBias(A_eV=1.0, B_eV=0.0), "B_eV"),
    (lambda: UncertaintyDrivenBias(A_eV=float("nan"), B_eV=0.1), "A_eV"),
    (lambda: Metadynamics(TorsionCVs([(0, 1, 2, 3)]), height_eV=0.1, sigma=0.0, pace_steps=1,
                          bias_factor=5.0, temperatures_K=[300.0]), "sigma"),
    (lambda: Metadynamics(TorsionCVs([(0, 1, 2, 3)]), height_eV=0.1, sigma=0.3, pace_steps=0,
                          bias_factor=5.0, temperatures_K=[300.0]), "pace_steps"),
    (lambda: Metadynamics(TorsionCVs([(0, 1, 2, 3)]), height_eV=0.1, sigma=0.3, pace_steps=1,
                          bias_factor=1.0, temperatures_K=[300.0]), "bias_factor"),
    (lambda: Metadynamics(TorsionCVs([(0, 1, 2, 3)]), height_eV=-0.1, sigma=0.3, pace_steps=1,
                          bias_factor=5.0, temperatures_K=[300.0]), "height_eV"),
    (lambda: TorsionCVs([]), "no torsions"),
    (lambda: TorsionCVs([(0, 1, 1, 2)]), "4 different atoms"),
    (lambda: TorsionCVs([(0, 1, 2, 30)]).check(9), "out of range"),
])
def test_bad_bias_settings_are_refused(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
