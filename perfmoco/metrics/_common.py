"""Shared helpers of the metrics: warping, field composition, Dice, the TIC ROI."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["compose_displacement", "dice", "roi_from_mask", "warp_series"]


def _as_series(a, name: str, *, ndim: int = 3) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr


def _check_displacement(displacement, shape: tuple[int, ...], name: str) -> np.ndarray:
    d = np.asarray(displacement, dtype=np.float64)
    want = (shape[0], 2, *shape[1:])
    if d.shape != want:
        raise ValueError(f"{name} must have shape {want}, got {d.shape}")
    return d


def warp_series(series, displacement, *, order: int = 1) -> np.ndarray:
    """Resample each frame with a pull-back displacement.

    Parameters
    ----------
    series : ndarray, shape (T, Y, X)
        Frames to warp (bool masks are warped as 0/1 floats).
    displacement : ndarray, shape (T, 2, Y, X), pixels
        ``out[t](p) = series[t](p + displacement[t](p))``; ``[:, 0]`` is y.
    order : int, keyword-only
        Spline order of the interpolation (1 = linear, 0 = nearest).

    Returns
    -------
    ndarray, shape (T, Y, X), float64
        Warped frames; samples outside the grid take the nearest edge value.
    """
    s = _as_series(series, "series").astype(np.float64)
    d = _check_displacement(displacement, s.shape, "displacement")
    grid = np.mgrid[0 : s.shape[1], 0 : s.shape[2]].astype(np.float64)
    out = np.empty_like(s)
    for t in range(s.shape[0]):
        out[t] = ndimage.map_coordinates(s[t], grid + d[t], order=order, mode="nearest")
    return out


def compose_displacement(estimated, true) -> np.ndarray:
    """Field that maps corrected pixels back to the motion-free anatomy.

    With ``original = motion_free o (id + true)`` and
    ``corrected = original o (id + estimated)``, ``corrected = motion_free o
    (id + r)`` where ``r(p) = estimated(p) + true(p + estimated(p))``.

    Parameters
    ----------
    estimated, true : ndarray, shape (T, 2, Y, X), pixels
        Correction field and true motion field (both pull-back).

    Returns
    -------
    ndarray, shape (T, 2, Y, X), float64, pixels
        The composed residual field ``r``; zero for a perfect correction to
        the motion-free position.
    """
    e = np.asarray(estimated, dtype=np.float64)
    tr = np.asarray(true, dtype=np.float64)
    if e.shape != tr.shape or e.ndim != 4 or e.shape[1] != 2:
        raise ValueError(
            f"estimated and true must both be (T, 2, Y, X), got {e.shape} and {tr.shape}"
        )
    moved_true = np.stack(
        [warp_series(tr[:, c], e) for c in range(2)], axis=1
    )  # true(p + estimated(p)), per component
    return e + moved_true


def dice(a, b) -> float:
    """Dice coefficient ``2|A & B| / (|A| + |B|)`` of two boolean masks (1.0 if both empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int((a & b).sum()) / total


#: The paper's TIC ROI margin beyond the myocardium, pixels of its high-resolution images.
TIC_MARGIN_PX = 10.0


def roi_from_mask(myo_mask, *,
                  margin_px: float = TIC_MARGIN_PX) -> tuple[tuple[float, float], float]:
    """Circular TIC ROI of the paper: LV centre and myocardium extent + margin.

    Parameters
    ----------
    myo_mask : ndarray, shape (Y, X), bool
        Myocardium mask (e.g. at peak LV, in the corrected frame).
    margin_px : float, keyword-only
        Pixels added to the myocardium extent (paper: 10).

    Returns
    -------
    centre : tuple of 2 float
        Centroid ``(y, x)`` of the mask, pixels.
    radius_px : float
        Largest distance from the centre to a mask pixel, plus ``margin_px``.
    """
    m = _as_series(myo_mask, "myo_mask", ndim=2).astype(bool)
    if not m.any():
        raise ValueError("myo_mask is empty; cannot place the TIC ROI")
    yy, xx = np.nonzero(m)
    cy, cx = float(yy.mean()), float(xx.mean())
    extent = float(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2).max())
    return (cy, cx), extent + float(margin_px)
