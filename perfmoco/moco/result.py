"""The result type every motion-correction method returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["MocoResult"]


class MocoResult(NamedTuple):
    """Motion correction of one slice series.

    Attributes
    ----------
    corrected : ndarray, shape (T, Y, X), float32
        Dynamics resampled once with ``displacement``.
    displacement : ndarray, shape (T, 2, Y, X), float32, pixels
        Pull-back field in full-FOV pixels, ``[:, 0]`` = y, ``[:, 1]`` = x:
        ``corrected[t](p) = original[t](p + displacement[t](p))``.
    reference_index : int
        Dynamic the series was aligned to.
    qc : ndarray, shape (T,), bool
        True where the residual misalignment of a frame looks large (e.g. a
        mistriggered beat); quantification may leave these frames out.
    pd_corrected : ndarray, shape (P, Y, X), float32
        PD frames corrected with the same models (``P = 0`` when none).
    pd_displacement : ndarray, shape (P, 2, Y, X), float32, pixels
    """

    corrected: np.ndarray
    displacement: np.ndarray
    reference_index: int
    qc: np.ndarray
    pd_corrected: np.ndarray
    pd_displacement: np.ndarray
