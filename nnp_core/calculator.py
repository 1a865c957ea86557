"""ASE calculator for a committee: mean energy/forces plus the committee's spread."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

from nnp_core.committee import Committee


class CommitteeCalculator(Calculator):
    """Energy and forces are the committee mean (eV, eV/Å).

    ``results`` also hold ``member_energies`` (M,), ``member_forces`` (M, N, 3),
    ``force_dev`` (N,), ``max_force_dev`` (eV/Å), ``energy_dev`` (eV/√atom) and their
    calibrated versions (``calibrated_max_force_dev``, ``calibrated_energy_dev``).

    A committee with a dipole head also gives ASE's ``dipole`` (the committee mean, e·Å,
    ``atoms.get_dipole_moment()``), ``member_dipoles`` (M, 3) and ``dipole_dev`` (e·Å).
    The total charge is ``atoms.info["charge"]`` (else the sum of the initial charges).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, committee: Committee, **kwargs) -> None:
        super().__init__(**kwargs)
        self.committee = committee
        if committee.has_dipole:
            self.implemented_properties = [*type(self).implemented_properties, "dipole"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        prediction = self.committee.predict(self.atoms)
        energy = float(prediction.energy_mean[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": prediction.forces_mean,
            "member_energies": prediction.member_energies[:, 0],
            "member_forces": prediction.member_forces,
            "force_dev": prediction.force_dev,
            "max_force_dev": float(prediction.max_force_dev[0]),
            "energy_dev": float(prediction.energy_dev[0]),
            "calibrated_max_force_dev": float(prediction.calibrated_max_force_dev[0]),
            "calibrated_energy_dev": float(prediction.calibrated_energy_dev[0]),
        }
        if prediction.dipole_mean is not None:
            self.results |= {
                "dipole": prediction.dipole_mean[0],
                "member_dipoles": prediction.member_dipoles[:, 0],
                "dipole_dev": float(prediction.dipole_dev[0]),
            }
