"""IR spectra of a campaign's committees (``alflow spectrum``): the ``spectra`` table.

The caller owns the transaction (``transaction`` to write, ``reading`` to read), and
holds the campaign's runner row while it writes (``flows.spectrum``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.storage.models import SpectrumRow


def _array(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def add_spectrum(session: Session, campaign_id: int, committee_id: int, *, settings: dict[str, Any],
                 wavenumbers_cm1: Any, intensity: Any, band_low: Any | None, band_high: Any | None,
                 sampling_low: Any | None = None, sampling_high: Any | None = None,
                 harmonic_frequencies_cm1: Any, harmonic_intensities_km_mol: Any,
                 reference_frequencies_cm1: Any | None = None, reference_intensities_km_mol: Any | None = None,
                 mean_temperature_K: float, energy_drift_meV_per_atom_ps: float, wall_s: float,
                 csv_path: str = "", png_path: str = "", harmonic_csv_path: str = "") -> int:
    """A new spectrum row (flushed); its id, which names its files (the caller sets their
    paths with :func:`set_spectrum_files` once written).

    Raises ``ValueError`` for arrays of different lengths along the axis, or a band, a
    sampling interval or a reference given by half."""
    axis = _array(wavenumbers_cm1)
    spectrum = {"intensity": _array(intensity), "band_low": _array(band_low), "band_high": _array(band_high),
                "sampling_low": _array(sampling_low), "sampling_high": _array(sampling_high)}
    for name, values in spectrum.items():
        if values is not None and values.shape != axis.shape:
            raise ValueError(f"{name} has shape {values.shape}, the wavenumber axis {axis.shape}")
    if (band_low is None) != (band_high is None):
        raise ValueError("band_low and band_high go together")
    if (sampling_low is None) != (sampling_high is None):
        raise ValueError("sampling_low and sampling_high go together")
    if (reference_frequencies_cm1 is None) != (reference_intensities_km_mol is None):
        raise ValueError("reference_frequencies_cm1 and reference_intensities_km_mol go together")
    row = SpectrumRow(
        campaign_id=campaign_id, committee_id=committee_id, settings=dict(settings), wavenumbers_cm1=axis,
        **spectrum, harmonic_frequencies_cm1=_array(harmonic_frequencies_cm1),
        harmonic_intensities_km_mol=_array(harmonic_intensities_km_mol),
        reference_frequencies_cm1=_array(reference_frequencies_cm1),
        reference_intensities_km_mol=_array(reference_intensities_km_mol),
        mean_temperature_K=float(mean_temperature_K),
        energy_drift_meV_per_atom_ps=float(energy_drift_meV_per_atom_ps), wall_s=float(wall_s),
        csv_path=csv_path, png_path=png_path, harmonic_csv_path=harmonic_csv_path)
    session.add(row)
    session.flush()
    return row.id


def set_spectrum_files(session: Session, spectrum_id: int, *, csv_path: str, png_path: str,
                       harmonic_csv_path: str) -> None:
    """Record where a spectrum's files were written."""
    row = session.get(SpectrumRow, spectrum_id)
    if row is None:
        raise LookupError(f"no spectrum {spectrum_id}")
    row.csv_path, row.png_path, row.harmonic_csv_path = csv_path, png_path, harmonic_csv_path


def spectra(session: Session, campaign_id: int) -> list[SpectrumRow]:
    """The campaign's spectra, oldest first."""
    return list(session.scalars(select(SpectrumRow).where(SpectrumRow.campaign_id == campaign_id)
                                .order_by(SpectrumRow.id)))


def latest_spectrum(session: Session, campaign_id: int) -> SpectrumRow | None:
    return session.scalars(select(SpectrumRow).where(SpectrumRow.campaign_id == campaign_id)
                           .order_by(SpectrumRow.id.desc()).limit(1)).first()


def next_spectrum_id(session: Session) -> int:
    """The id the next spectrum will most likely get (SQLite: the largest + 1; a
    PostgreSQL sequence may skip ahead): to refuse taken file names before the MD runs."""
    return int(session.scalar(select(func.max(SpectrumRow.id))) or 0) + 1
