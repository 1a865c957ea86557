"""bench.spectrum_sampling: runs are compared with the reference normalised to equal area,
at the reference's peaks, with hand-computed errors, interval widths and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from bench.spectrum_sampling import area_normalised, compare, parse_split
from nnp_core.ir import IRSpectrum


def spectrum(heights: dict[float, float], half: float = 0.0, scale: float = 1.0) -> IRSpectrum:
    """Triangles of the given heights on a 0-4000 cm⁻¹ grid (spacing 10), times ``scale``,
    with a sampling interval of ± ``half`` × the intensity."""
    axis = np.arange(0.0, 4000.0 + 5.0, 10.0)
    intensity = np.zeros_like(axis)
    for centre, height in heights.items():
        intensity += height * np.clip(1.0 - np.abs(axis - centre) / 50.0, 0.0, None)
    intensity *= scale
    return IRSpectrum(axis, intensity, None, None, None, {}, intensity * (1 - half), intensity * (1 + half))


def test_area_normalisation_removes_the_scale() -> None:
    one, three = spectrum({1000.0: 1.0, 3000.0: 0.5}), spectrum({1000.0: 1.0, 3000.0: 0.5}, scale=3.0)
    for a, b in zip(area_normalised(one), area_normalised(three)):
        np.testing.assert_allclose(a, b)
    intensity, _, _ = area_normalised(one)
    keep = (one.wavenumbers_cm1 >= 500) & (one.wavenumbers_cm1 <= 4000)
    assert np.trapezoid(intensity[keep], one.wavenumbers_cm1[keep]) == pytest.approx(1.0)


def test_compare_measures_errors_at_the_reference_peaks() -> None:
    reference = spectrum({1000.0: 1.0, 3000.0: 1.0})
    # the run's 3000 peak is 1.5x too high; at equal area the 1000 peak is then 0.8 and the 3000 peak 1.2
    run = spectrum({1000.0: 1.0, 3000.0: 1.5}, half=0.2, scale=7.0)
    result = compare(run, reference, [1000.0, 3000.0])
    np.testing.assert_allclose(result["errors"], [0.2, 0.2])
    np.testing.assert_allclose(result["half_widths"], [0.2, 0.2])
    # its own interval: 0.8 ± 0.16 misses the reference's 1.0, 1.2 ± 0.24 holds it
    assert result["inside"] == [False, True]
    identical = compare(reference, reference, [1000.0, 3000.0])
    assert identical["errors"] == [0.0, 0.0] and identical["shape"] == 0.0 and identical["inside"] == [True, True]
    assert result["shape"] > 0.1


def test_parse_split() -> None:
    assert parse_split("8x20") == (8, 20.0, 0.0) and parse_split("32X3.5") == (32, 3.5, 0.0)
    assert parse_split("8x20@0.002") == (8, 20.0, 0.002)
