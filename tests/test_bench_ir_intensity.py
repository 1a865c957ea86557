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
