"""Independent float64 numpy implementations of the papers' formulas."""

import numpy as np


def sinusoidal_reference(positions, width, max_wavelength=10000.0):
    """Vaswani et al. 2017: PE[p, 2i] = sin(p / w^(2i/d)), PE[p, 2i+1] = cos(...)."""
    positions = np.asarray(positions, dtype="float64")
    feature = np.arange(width)
    angles = positions[..., None] / np.power(
        float(max_wavelength), 2.0 * (feature // 2) / width
    )
    return np.where(feature % 2 == 0, np.sin(angles), np.cos(angles))
