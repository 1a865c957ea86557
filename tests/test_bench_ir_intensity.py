"""bench.ir_intensity: intensities along given modes equal the committee's own harmonic
intensities along its own modes, and the fixed-charge baseline's are |Σ q_i d_i|²."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch

from bench.ir_intensity import fixed_charge_intensities, intensities_along, per_unit_amplitude
from nnp_core.sampling import normal_modes
from nnp_core.vibrations import E2_PER_AMU_TO_KM_MOL, hessian_and_dipole_jacobian, intensities_km_mol
from tests.nnp_core.test_dipole import DATA, dipole_committee


@pytest.fixture(scope="module")
def ethanol():
    return ase.io.read(DATA / "geometry.xyz")


def test_intensities_along_the_committee_own_modes_equal_its_harmonic_intensities(ethanol) -> None:
    committee = dipole_committee("bpnn")
    hessian, jacobian = hessian_and_dipole_jacobian(committee, ethanol)
    modes = normal_modes(ethanol, hessian, imaginary_tol_cm1=1e9, skip_imaginary=True)
    own = modes.cartesian_displacements.reshape(modes.n_modes, -1)
    unit = own / np.linalg.norm(own, axis=1, keepdims=True)
    np.testing.assert_allclose(per_unit_amplitude(unit, ethanol.get_masses()), own, rtol=1e-10, atol=1e-12)
    expected = intensities_km_mol(modes.cartesian_displacements, jacobian)
    assert expected.max() > 1.0  # the random head gives the modes real intensity
    np.testing.assert_allclose(intensities_along(committee, ethanol, own), expected, rtol=1e-8)


def test_fixed_charge_baseline_intensities_are_those_of_its_charges(ethanol) -> None:
    committee = dipole_committee("bpnn")
    charges = np.array([{1: 0.2, 6: -0.1, 8: -0.4}[z] for z in ethanol.numbers])
    charges += (0.0 - charges.sum()) / len(charges)  # charge conservation, as the head does
    rng = np.random.default_rng(0)
    modes = rng.normal(size=(3, 3 * len(ethanol)))
    dmu_dq = np.einsum("i,kic->kc", charges, modes.reshape(3, -1, 3))
    expected = (dmu_dq**2).sum(axis=1) * E2_PER_AMU_TO_KM_MOL
    with torch.no_grad():
        got = fixed_charge_intensities(committee, ethanol, modes)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--labels", "1"], "--labels: a committee needs at least 2 frames"),
    (["--members", "1"], "--members: a committee needs at least 2 members"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--dipole-weights", "0.1", "-1"], "--dipole-weights must be finite and >= 0"),
])
def test_bad_options_are_refused_in_one_line(argv, message, capsys) -> None:
    from bench.ir_intensity import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_dipole_accuracy_refuses_a_missing_label_file(tmp_path, capsys) -> None:
    from bench.dipole_accuracy import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--al-labels", str(tmp_path / "nope.extxyz")])
    assert exit_info.value.code == 2 and "--al-labels: no such file" in capsys.readouterr().err


def test_torsion_pair_sum_does_not_depend_on_a_rotation_within_the_pair(ethanol) -> None:
    """The reference's two lowest modes rotated into each other by 30°: each committee mode
    overlaps its partner by cos 30°, the pair still spans the reference's plane, and the
    summed intensity is the reference's (the rotation only moves intensity between them)."""
    from bench.ir_intensity import torsion_pair
    from nnp_core.vibrations import committee_harmonic_ir

    committee = dipole_committee("bpnn")
    harmonic = committee_harmonic_ir(committee, ethanol, optimise=False)
    hessian, _ = hessian_and_dipole_jacobian(committee, ethanol)
    modes = normal_modes(ethanol, hessian, imaginary_tol_cm1=50.0, skip_imaginary=True)
    sqrt_m = np.sqrt(np.repeat(ethanol.get_masses(), 3))
    weighted = modes.cartesian_displacements.reshape(modes.n_modes, -1) * sqrt_m  # orthonormal rows
    low = np.argsort(harmonic.frequencies_cm1)[:2]
    angle = np.radians(30.0)
    rotated = weighted.copy()
    rotated[low[0]] = np.cos(angle) * weighted[low[0]] + np.sin(angle) * weighted[low[1]]
    rotated[low[1]] = -np.sin(angle) * weighted[low[0]] + np.cos(angle) * weighted[low[1]]
    cartesian = rotated / sqrt_m
    reference = {"frequencies_cm1": list(harmonic.frequencies_cm1),
                 "intensities_km_mol": list(intensities_along(committee, ethanol, cartesian)),
                 "modes": list(cartesian / np.linalg.norm(cartesian, axis=1, keepdims=True))}
    row = torsion_pair(committee, reference, harmonic)
    own_sum, ref_sum, change = row[4], row[5], row[6]
    assert own_sum == pytest.approx(ref_sum, rel=1e-3) and change in ("+0%", "-0%")
    assert row[7] == pytest.approx(np.cos(angle), abs=0.01) and row[8] == pytest.approx(np.cos(angle), abs=0.01)
    assert row[9] == pytest.approx(1.0, abs=1e-3)
    assert row[2] + row[3] == pytest.approx(own_sum, abs=0.2)
    assert abs(row[2] - reference["intensities_km_mol"][low[0]]) > 0.01 * own_sum  # intensity did move
