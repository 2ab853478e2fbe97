"""Shared helpers of the synthetic-curve tests: a continuous-time AIF on a fine grid."""

from __future__ import annotations

import numpy as np

#: Fine time step (s) on which synthetic curves are built before sampling.
FINE = 0.05


def aif_fine(t):
    """A gamma-variate-like first pass at 5 s plus a recirculation at 14 s, mmol/l."""
    s = np.clip((t - 5.0) / 4.0, 0, None)
    r = np.clip((t - 14.0) / 6.0, 0, None)
    return 4.5 * s**3 * np.exp(3 * (1 - s)) + 0.8 * r**2 * np.exp(2 * (1 - r))
