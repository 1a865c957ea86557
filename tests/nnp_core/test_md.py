"""Batched committee MD: integrators, reproducibility, trust restarts, clean failures.

Bound potentials: an untrained committee is smooth but barely binds, and a lightly
trained one has holes a hot replica falls into (the very thing exploration finds).
Where a test needs a bound potential it uses :class:`RestrainedCommittee`: the random
committee plus identical harmonic springs between all atoms of a frame (an elastic
network around a reference structure), so members still disagree but nothing flies
apart. NVE runs on a small committee trained here on EMT water (module fixture, a few
seconds), near its own minimum.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import nnp_core.md_engine as md_engine
from nnp_core.batch import Batch
from nnp_core.calculator import CommitteeCalculator
from nnp_core.committee import Committee
from nnp_core.md import FrameStatus, MDConfig, Replica, StopReason, run_md
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee

from .conftest import displaced, label_emt


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Molecules of 3-9 atoms gain nothing from intra-op threads; one thread is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RestrainedCommittee(Committee):
    """A committee plus harmonic springs (``spring_eV_A2``) between every pair of atoms of
    each frame, with rest lengths from ``reference``; every frame must be that molecule.
    The springs are the same for all members, so the committee statistics are unchanged."""

    def __init__(self, committee: Committee, reference: Atoms, spring_eV_A2: float) -> None:
        super().__init__(committee.model, committee.calibration)
        self.rest_A = torch.as_tensor(reference.get_all_distances(), dtype=self.dtype)
        self.spring_eV_A2 = spring_eV_A2

    def _springs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Spring energy (B,) and forces (n, 3)."""
        n = self.rest_A.shape[0]
        positions = batch["positions"].reshape(-1, n, 3)
        vectors = positions[:, :, None, :] - positions[:, None, :, :]  # x_i - x_j
        eye = torch.eye(n, dtype=torch.bool)
        distances = torch.linalg.vector_norm(vectors, dim=-1).masked_fill(eye, 1.0)
        stretch = (distances - self.rest_A).masked_fill(eye, 0.0)
        energy = 0.25 * self.spring_eV_A2 * (stretch**2).sum(dim=(1, 2))
        forces = -self.spring_eV_A2 * ((stretch / distances)[..., None] * vectors).sum(dim=2)
        return energy, forces.reshape(-1, 3)

    def evaluate(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = super().evaluate(batch)
        energy, forces = self._springs(batch)
        return {"energy": out["energy"] + energy, "forces": out["forces"] + forces}

    def mean_energy_forces(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces = super().mean_energy_forces(batch)
        spring_energy, spring_forces = self._springs(batch)
        return energy + spring_energy, forces + spring_forces


class FaultyCommittee(Committee):
    """Corrupts frame ``frame`` of the ``at_call``-th evaluation (scoring or mean-only):
    NaN forces or +100 eV."""

    def __init__(self, committee: Committee, *, at_call: int, frame: int, fault: str) -> None:
        super().__init__(committee.model, committee.calibration)
        self.at_call, self.frame, self.fault, self.calls = at_call, frame, fault, 0

    def _corrupt(self, batch: Batch, energy: torch.Tensor, forces: torch.Tensor):
        """energy (..., B) and forces (..., n, 3), corrupted on the ``at_call``-th call."""
        self.calls += 1
        if self.calls == self.at_call:
            energy, forces = energy.clone(), forces.clone()
            if self.fault == "nan":
                forces[..., batch["frame"] == self.frame, :] = float("nan")
            else:
                energy[..., self.frame] += 100.0
        return energy, forces

    def evaluate(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = super().evaluate(batch)
        energy, forces = self._corrupt(batch, out["energy"], out["forces"])
        return {"energy": energy, "forces": forces}

    def mean_energy_forces(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self._corrupt(batch, *super().mean_energy_forces(batch))


def _relaxed(committee: Committee, atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = CommitteeCalculator(committee)
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=200)
    atoms.calc = None
    return atoms


def _total_energies(frames) -> np.ndarray:
    return np.array([f.potential_energy_eV + f.to_atoms().get_kinetic_energy() for f in frames])


def _by_replica(result, replica: int) -> list:
    return [f for f in result.frames if f.replica == replica]


@pytest.fixture(scope="module")
def emt_water_committee() -> Committee:
    """3 members trained on 60 EMT water frames displaced by 0.15 Å around EMT's minimum."""
    water = molecule("H2O")
    water.calc = EMT()
    BFGS(water, logfile=None).run(fmax=0.01)
    water.calc = None
    frames = label_emt(displaced(water, 60, 0.15, seed=1))
    config = TrainConfig(max_epochs=60, batch_size_frames=16, seed=0)
    committee, _ = train_committee(frames, config, n_members=3, model_hparams={"hidden_layers": [16]})
    return committee


@pytest.fixture(scope="module")
def relaxed_water(emt_water_committee) -> Atoms:
    return _relaxed(emt_water_committee, molecule("H2O"))


@pytest.fixture
def restrained_water(random_committee) -> RestrainedCommittee:
    return RestrainedCommittee(random_committee, molecule("H2O"), spring_eV_A2=20.0)


# ------------------------------------------------------------------ integrators


def test_nve_conserves_total_energy(emt_water_committee, relaxed_water) -> None:
    replicas = [Replica(relaxed_water, temperature_K=300.0, seed=seed) for seed in range(4)]
    config = MDConfig(integrator="nve", timestep_fs=0.5, n_steps=1000, record_interval_steps=10)
    result = run_md(emt_water_committee, replicas, config=config)
    assert all(s.stop_reason == StopReason.COMPLETED for s in result.replicas)
    n_atoms = len(relaxed_water)
    for replica in range(4):
        frames = _by_replica(result, replica)
        total = _total_energies(frames)
        potential = np.array([f.potential_energy_eV for f in frames])
        error = np.max(np.abs(total - total[0]))
        # energy flows between kinetic and potential, yet the total stays put
        assert error < 0.05 * np.ptp(potential)
        assert error < 1e-3 * n_atoms  # eV
        # no systematic drift over 500 fs: first and last tenth agree
        tenth = len(total) // 10
        assert abs(total[-tenth:].mean() - total[:tenth].mean()) < 1e-4 * n_atoms


def test_nve_single_replica_matches_ase_velocity_verlet(random_committee) -> None:
    committee = random_committee
    committee.model.energy_scale.fill_(5.0)
    config = MDConfig(integrator="nve", timestep_fs=0.5, n_steps=100, record_interval_steps=10)
    result = run_md(committee, [Replica(molecule("CH3OH"), temperature_K=500.0, seed=3)], config=config)
    start = result.frames[0].to_atoms()
    start.calc = CommitteeCalculator(committee)
    dyn = VelocityVerlet(start, timestep=0.5 * units.fs)
    ase_frames: list[tuple[np.ndarray, np.ndarray]] = []
    dyn.attach(lambda: ase_frames.append((start.positions.copy(), start.get_velocities())), interval=10)
    dyn.run(100)
    assert len(ase_frames) == len(result.frames) == 11
    moved = np.abs(result.frames[-1].positions_A - result.frames[0].positions_A).max()
    assert moved > 0.5  # Å: a real trajectory, not a few wiggles
    for (positions, velocities), frame in zip(ase_frames, result.frames):
        np.testing.assert_allclose(frame.positions_A, positions, atol=1e-9)
        np.testing.assert_allclose(frame.velocities_A_per_fs, velocities * units.fs, atol=1e-10)


def test_langevin_samples_each_replicas_temperature(restrained_water) -> None:
    """Two temperatures in one batch; strong friction (2 fs) decorrelates quickly."""
    temperatures = {200.0: range(0, 16), 700.0: range(16, 32)}
    replicas = [
        Replica(molecule("H2O"), temperature_K=t, friction_per_fs=0.5, seed=seed)
        for t, seeds in temperatures.items() for seed in seeds
    ]
    config = MDConfig(timestep_fs=0.5, n_steps=1000, record_interval_steps=2)
    result = run_md(restrained_water, replicas, config=config)
    assert all(s.stop_reason == StopReason.COMPLETED for s in result.replicas)
    dof = 3 * 3 - 3
    for target, seeds in temperatures.items():
        samples = np.array([
            [f.kinetic_temperature_K for f in _by_replica(result, r) if f.step >= 100] for r in seeds
        ])  # (replicas, records) after 50 fs of equilibration
        per_replica = samples.mean(axis=1)
        standard_error = per_replica.std(ddof=1) / np.sqrt(len(per_replica))
        assert standard_error < 0.015 * target  # the test resolves a few per cent
        assert abs(per_replica.mean() / target - 1.0) < 0.04
        # canonical fluctuations: Var(T) / T² = 2 / dof (a rescaling thermostat fails this)
        assert samples.var() / target**2 == pytest.approx(2.0 / dof, rel=0.15)
        summaries = [result.replicas[r].mean_kinetic_temperature_K for r in seeds]
        assert np.mean(summaries) == pytest.approx(target, rel=0.05)


def test_langevin_friction_damps_velocity_at_its_rate(random_committee) -> None:
    """Free atoms at 0 K (one per replica: no force, no noise, no COM removal): the
    velocity decays as v0 exp(-γ t), each replica with its own γ in 1/fs."""
    atom = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    v0_A_fs = 0.1
    atom.set_velocities([[v0_A_fs / units.fs, 0.0, 0.0]])
    frictions = [0.01, 0.04]
    replicas = [
        Replica(atom, temperature_K=0.0, friction_per_fs=g, seed=0, velocities_from_atoms=True)
        for g in frictions
    ]
    config = MDConfig(timestep_fs=0.5, n_steps=100, record_interval_steps=100)
    result = run_md(random_committee, replicas, config=config)
    for replica, gamma in enumerate(frictions):
        final = _by_replica(result, replica)[-1]
        assert final.step == 100
        expected = [v0_A_fs * np.exp(-gamma * 50.0), 0.0, 0.0]
        np.testing.assert_allclose(final.velocities_A_per_fs[0], expected, rtol=1e-9, atol=1e-15)


def test_centre_of_mass_stays_at_rest(restrained_water) -> None:
    water = molecule("H2O")
    result = run_md(restrained_water, [Replica(water, temperature_K=500.0, friction_per_fs=0.05, seed=1)],
                    config=MDConfig(n_steps=200, record_interval_steps=50))
    masses = water.get_masses()
    for frame in result.frames:
        assert np.abs(masses @ frame.velocities_A_per_fs).max() < 1e-12
    centres = [masses @ f.positions_A / masses.sum() for f in result.frames]
    np.testing.assert_allclose(centres, np.repeat(centres[:1], len(centres), axis=0), atol=1e-10)


# -------------------------------------------------------------- reproducibility


def _mixed_replicas() -> list[Replica]:
    return [
        Replica(molecule("H2O"), temperature_K=300.0, friction_per_fs=0.02, seed=7),
        Replica(molecule("CH3OH"), temperature_K=900.0, friction_per_fs=0.05, seed=8),
        Replica(molecule("CH4"), temperature_K=600.0, friction_per_fs=0.01, seed=9),
    ]


def test_batched_replicas_equal_separate_runs(random_committee) -> None:
    """Different molecules, temperatures and frictions in one batch, with restarts: each
    replica's frames equal those of a run with that replica alone."""
    config = MDConfig(n_steps=120, record_interval_steps=4, trust_hi_eV_A=0.12, max_restarts=2)
    batched = run_md(random_committee, _mixed_replicas(), config=config)
    assert sum(s.restarts for s in batched.replicas) >= 1  # restarts draw from the streams too
    for index, replica in enumerate(_mixed_replicas()):
        alone = run_md(random_committee, [replica], config=config)
        mine = _by_replica(batched, index)
        assert [(f.step, f.status) for f in mine] == [(f.step, f.status) for f in alone.frames]
        for a, b in zip(mine, alone.frames):
            np.testing.assert_allclose(a.positions_A, b.positions_A, atol=1e-9)
            np.testing.assert_allclose(a.velocities_A_per_fs, b.velocities_A_per_fs, atol=1e-9)
        assert batched.replicas[index].restarts == alone.replicas[0].restarts


def test_neighbour_list_reuse_does_not_change_the_trajectory(random_committee) -> None:
    """Hot, unbound molecules move far: a skin of 0.3 Å (rebuilt at 0.15 Å) gives the
    trajectory of rebuilding every step."""
    config = MDConfig(n_steps=150, record_interval_steps=10, skin_A=0.3)
    reused = run_md(random_committee, _mixed_replicas(), config=config)
    every_step = run_md(random_committee, _mixed_replicas(),
                        config=MDConfig(n_steps=150, record_interval_steps=10, skin_A=0.0))
    assert every_step.neighbour_rebuilds == 3 * 151
    assert 3 < reused.neighbour_rebuilds < every_step.neighbour_rebuilds / 2
    for a, b in zip(reused.frames, every_step.frames):
        np.testing.assert_allclose(a.positions_A, b.positions_A, atol=1e-9)


# ------------------------------------------------------------------------- trust


def test_replica_restarts_from_last_trusted_frame_at_first_crossing(restrained_water, monkeypatch) -> None:
    replicas = [Replica(molecule("H2O"), temperature_K=900.0, friction_per_fs=0.02, seed=s) for s in (1, 2)]
    free = run_md(restrained_water, replicas, config=MDConfig(n_steps=300, record_interval_steps=1))
    free_scores = np.array([f.max_force_dev for f in _by_replica(free, 0)])
    trust_hi = float(np.quantile(free_scores, 0.8))
    interval = 10  # trust is checked at scoring (record) steps only
    first_crossing = interval * int(np.argmax(free_scores[::interval] >= trust_hi))
    assert first_crossing > interval
    assert free_scores[first_crossing] >= trust_hi

    restarts_at: list[tuple[int, np.ndarray]] = []
    draw = md_engine.ReplicaEnsemble.draw_velocities

    def spy(self, replica: int) -> None:
        restarts_at.append((replica, self.positions[self.slices[replica]].copy()))
        draw(self, replica)

    monkeypatch.setattr(md_engine.ReplicaEnsemble, "draw_velocities", spy)
    config = MDConfig(n_steps=300, record_interval_steps=interval, trust_hi_eV_A=trust_hi, max_restarts=3)
    result = run_md(restrained_water, replicas, config=config)

    frames = _by_replica(result, 0)
    rejected = [i for i, f in enumerate(frames) if f.status == FrameStatus.REJECTED]
    first = frames[rejected[0]]
    # stops at the first scoring step beyond trust, where the free run crossed there
    assert first.step == first_crossing
    np.testing.assert_allclose(first.positions_A, _by_replica(free, 0)[first_crossing].positions_A, atol=1e-9)
    assert first.max_force_dev >= trust_hi
    assert all(f.max_force_dev < trust_hi for f in frames if f.status == FrameStatus.TRUSTED)
    # each restart puts the replica at its last trusted recorded frame
    starts = [positions for replica, positions in restarts_at if replica == 0][1:]  # [0]: step 0
    assert len(starts) == result.replicas[0].restarts >= 1
    for index, positions in zip(rejected, starts):
        last_trusted = [f for f in frames[:index] if f.status == FrameStatus.TRUSTED][-1]
        np.testing.assert_array_equal(positions, last_trusted.positions_A)
        assert f"from step {last_trusted.step}" in frames[index].reason
    summary = result.replicas[0]
    if summary.stop_reason == StopReason.TRUST_LIMIT:  # cap reached: nothing after the last rejection
        assert summary.restarts == 3 and len(rejected) == 4 and rejected[-1] == len(frames) - 1
        assert "restart limit 3 reached" in frames[-1].reason


def test_beyond_trust_continue_runs_the_free_trajectory_and_only_marks_frames(restrained_water) -> None:
    """DP-GEN-style exploration: crossings are recorded as rejected, the replica goes on
    exactly as without a trust check, and trusted frames after a crossing are kept."""
    replicas = [Replica(molecule("H2O"), temperature_K=900.0, friction_per_fs=0.02, seed=s) for s in (1, 2)]
    free = run_md(restrained_water, replicas, config=MDConfig(n_steps=200, record_interval_steps=5))
    scores = np.array([f.max_force_dev for f in free.frames])
    trust_hi = float(np.quantile(scores, 0.7))
    config = MDConfig(n_steps=200, record_interval_steps=5, trust_hi_eV_A=trust_hi, beyond_trust="continue")
    result = run_md(restrained_water, replicas, config=config)
    assert [s.stop_reason for s in result.replicas] == [StopReason.COMPLETED] * 2
    assert all(s.restarts == 0 and s.steps_run == 200 for s in result.replicas)
    assert len(result.frames) == len(free.frames)
    for a, b in zip(result.frames, free.frames):
        assert (a.replica, a.step) == (b.replica, b.step)
        np.testing.assert_allclose(a.positions_A, b.positions_A, atol=1e-9)
        expected = FrameStatus.REJECTED if b.max_force_dev >= trust_hi else FrameStatus.TRUSTED
        assert a.status == expected, (a.step, a.max_force_dev, trust_hi)
    statuses = [f.status for f in _by_replica(result, 0)]
    first_rejected = statuses.index(FrameStatus.REJECTED)
    assert FrameStatus.TRUSTED in statuses[first_rejected + 1:]  # it came back into trust
    assert "continuing" in _by_replica(result, 0)[first_rejected].reason
    # going on past trust does not go on past an energy jump
    jumpy = MDConfig(n_steps=20, record_interval_steps=1, trust_hi_eV_A=1e-9, beyond_trust="continue",
                     max_energy_jump_eV_per_atom=1e-9)
    (summary,) = run_md(restrained_water, replicas[:1], config=jumpy).replicas
    assert summary.stop_reason == StopReason.ENERGY_JUMP and summary.steps_run == 1
    with pytest.raises(ValueError, match="beyond_trust"):
        MDConfig(beyond_trust="stop")


def test_restart_cap_stops_the_replica(restrained_water) -> None:
    # the seed structure scores 0.044 eV/Å; a third of this replica's steps score above 0.05
    replica = Replica(molecule("H2O"), temperature_K=900.0, friction_per_fs=0.02, seed=3)
    config = MDConfig(n_steps=300, record_interval_steps=5, trust_hi_eV_A=0.05, max_restarts=2)
    result = run_md(restrained_water, [replica], config=config)
    summary = result.replicas[0]
    assert summary.stop_reason == StopReason.TRUST_LIMIT and summary.restarts == 2
    assert summary.steps_run < 300
    statuses = [f.status for f in result.frames]
    assert statuses.count(FrameStatus.REJECTED) == 3 and statuses[-1] == FrameStatus.REJECTED
    assert "restart limit 2 reached" in result.frames[-1].reason


def test_seed_structure_beyond_trust_stops_at_step_0(restrained_water) -> None:
    config = MDConfig(n_steps=50, trust_hi_eV_A=1e-9, max_restarts=2)
    result = run_md(restrained_water, [Replica(molecule("H2O"), seed=0)], config=config)
    summary = result.replicas[0]
    assert summary.stop_reason == StopReason.TRUST_LIMIT and summary.steps_run == 0
    assert [f.status for f in result.frames] == [FrameStatus.REJECTED]
    assert "seed structure beyond trust" in result.frames[0].reason


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("fault", "reason"), [("nan", StopReason.NON_FINITE), ("jump", StopReason.ENERGY_JUMP)]
)
def test_fault_stops_only_that_replica(random_committee, fault: str, reason: StopReason) -> None:
    replicas = [Replica(molecule("CH3OH"), temperature_K=300.0, seed=s) for s in range(3)]
    config = MDConfig(n_steps=40, record_interval_steps=5)
    clean = run_md(random_committee, replicas, config=config)
    faulty = FaultyCommittee(random_committee, at_call=13, frame=1, fault=fault)  # call 13 = step 12
    result = run_md(faulty, replicas, config=config)

    summary = result.replicas[1]
    assert summary.stop_reason == reason and summary.steps_run == 12
    last = _by_replica(result, 1)[-1]
    assert last.status == FrameStatus.FAILED and last.step == 12 and last.reason
    assert result.counts()[FrameStatus.FAILED] == 1
    for other in (0, 2):  # the others run on, unaffected
        assert result.replicas[other].stop_reason == StopReason.COMPLETED
        for a, b in zip(_by_replica(result, other), _by_replica(clean, other)):
            np.testing.assert_allclose(a.positions_A, b.positions_A, atol=1e-9)
    assert result.replica_steps == 2 * 40 + 12


# ------------------------------------------------------------------ API details


def test_records_progress_and_atoms(restrained_water) -> None:
    calls: list[tuple[int, int, int]] = []
    replicas = [Replica(molecule("H2O"), temperature_K=300.0, seed=s) for s in range(2)]
    result = run_md(restrained_water, replicas, config=MDConfig(n_steps=25, record_interval_steps=10),
                    progress=lambda *args: calls.append(args))
    assert calls == [(10, 25, 2), (20, 25, 2), (25, 25, 2)]
    assert [f.step for f in _by_replica(result, 0)] == [0, 10, 20, 25]
    atoms = result.to_atoms()[1]
    assert atoms.calc is None and atoms.info["md_status"] == "trusted"
    assert atoms.info["max_force_dev"] == result.frames[1].max_force_dev
    assert atoms.get_temperature() * 9 / 6 == pytest.approx(result.frames[1].kinetic_temperature_K)
    assert result.replica_steps == 50 and result.replica_steps_per_s > 0
    assert result.scores()["max_force_dev"].shape == (8,)


def test_setup_errors() -> None:
    with pytest.raises(ValueError, match="timestep_fs"):
        MDConfig(timestep_fs=0.0)
    with pytest.raises(ValueError, match="integrator"):
        MDConfig(integrator="leapfrog")
    with pytest.raises(ValueError, match="temperature_K"):
        Replica(molecule("H2O"), temperature_K=-1.0)
    committee = Committee.create("bpnn", n_members=2, elements=["H", "O"])
    with pytest.raises(ValueError, match="not in this model's elements"):
        run_md(committee, [Replica(molecule("CH4"))], config=MDConfig(n_steps=1))
    with pytest.raises(ValueError, match="at least one replica"):
        run_md(committee, [], config=MDConfig(n_steps=1))


@pytest.mark.slow
def test_throughput_benchmark_quick_mode(tmp_path) -> None:
    from bench.md_throughput import SECTION, main

    output = tmp_path / "benchmarks.md"
    assert main(["--quick", "--threads", "1", "--output", str(output)]) == 0
    text = output.read_text()
    assert f"<!-- bench:{SECTION} -->" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4  # R in {1, 2} x M in {1, 2}


def test_nve_in_float32_conserves_total_energy(emt_water_committee, relaxed_water) -> None:
    """Exploration in float32 (``Committee.astype``): positions and velocities stay float64
    in the integrator, so a float32 copy of the committee still conserves the energy."""
    single = emt_water_committee.astype("float32")
    replicas = [Replica(relaxed_water, temperature_K=300.0, seed=seed) for seed in range(2)]
    config = MDConfig(integrator="nve", timestep_fs=0.5, n_steps=1000, record_interval_steps=10)
    result = run_md(single, replicas, config=config)
    exact = run_md(emt_water_committee, replicas, config=config)
    n_atoms = len(relaxed_water)
    for replica in range(2):
        frames = _by_replica(result, replica)
        total = _total_energies(frames)
        potential = np.array([f.potential_energy_eV for f in frames])
        assert np.max(np.abs(total - total[0])) < 0.05 * np.ptp(potential)
        tenth = len(total) // 10
        assert abs(total[-tenth:].mean() - total[:tenth].mean()) < 1e-4 * n_atoms
        # the same trajectory as the float64 committee's for the first steps
        reference = _by_replica(exact, replica)
        np.testing.assert_allclose(frames[2].positions_A, reference[2].positions_A, atol=1e-4)
