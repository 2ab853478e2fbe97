"""A small synthetic perfusion series with known motion (tests and smoke runs).

Not the phantom (:mod:`perfmoco.phantom`): a few ellipses with bolus curves,
moved by a known pull-back displacement, so that the geometry code can be
checked exactly and the pipeline run end to end without the phantom.
"""

from __future__ import annotations

import numpy as np

from perfmoco.moco.transforms import warp
from perfmoco.study import SliceSeries

__all__ = ["synthetic_series"]


def _gamma(t: np.ndarray, t0: float, peak: float) -> np.ndarray:
    x = np.clip(t - t0, 0, None) / 3.0
    return peak * x**2 * np.exp(2 - x) / 4.0


def synthetic_series(
    *,
    n_dynamics: int = 40,
    shape: tuple[int, int] = (128, 128),
    spacing_mm: float = 2.3,
    shift_px: np.ndarray | None = None,
    n_pd: int = 2,
    scale: float = 1000.0,
    bolus_frame: int = 5,
    seed: int = 0,
) -> tuple[SliceSeries, np.ndarray, np.ndarray]:
    """A moving synthetic perfusion series.

    Parameters
    ----------
    n_dynamics : int, keyword-only
    shape : tuple of 2 int, keyword-only
        ``(Y, X)``.
    spacing_mm : float, keyword-only
        Isotropic pixel size.
    shift_px : ndarray, shape (T, 2), keyword-only, optional
        Per-frame translation of the anatomy, pixels ``(y, x)``; default a
        breathing-like sine of 4 px amplitude.
    n_pd : int, keyword-only
        PD frames (not moved).
    scale : float, keyword-only
        Intensity scale.
    bolus_frame : int, keyword-only
        The bolus enters the RV after this frame (the LV 4 frames later).
    seed : int, keyword-only

    Returns
    -------
    series : SliceSeries
    displacement : ndarray, shape (T, 2, Y, X), float32, pixels
        True pull-back: ``series.images[t](p) = motion_free[t](p + d[t](p))``.
    myo_masks : ndarray, shape (T, Y, X), bool
        Myocardium as moved.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    t = np.arange(n_dynamics, dtype=float)
    if shift_px is None:
        phase = 2 * np.pi * t / 4.3
        shift_px = np.stack([4.0 * np.sin(phase), 1.5 * np.cos(phase)], axis=1)
    shift_px = np.asarray(shift_px, float)
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    cy, cx = ny * 0.5, nx * 0.52
    r_px = 1.0 / spacing_mm
    rr = np.hypot((yy - cy) / (24 * r_px), (xx - cx) / (24 * r_px))
    lv = rr < 1.0
    myo = (rr >= 1.0) & (rr < 1.45)
    rv = np.hypot((yy - cy + 6 * r_px) / (30 * r_px), (xx - cx + 50 * r_px) / (18 * r_px)) < 1
    rv &= ~(lv | myo)
    body = np.hypot((yy - ny / 2) / (0.42 * ny), (xx - nx / 2) / (0.47 * nx)) < 1
    liver = body & (yy > cy + 40 * r_px) & (xx < cx)
    tex = 0.05 * rng.standard_normal(shape)
    c_rv = _gamma(t, bolus_frame, 4.0)
    c_lv = _gamma(t, bolus_frame + 4, 3.0)
    c_myo = 0.35 * np.convolve(c_lv, np.exp(-np.arange(20) / 6.0))[:n_dynamics] / 3.0
    base = 0.3 * body + 0.15 * liver
    free = np.empty((n_dynamics, ny, nx), np.float32)
    for k in range(n_dynamics):
        img = base + (1 + tex) * (
            lv * (0.35 + c_lv[k]) + rv * (0.35 + c_rv[k]) + myo * (0.3 + c_myo[k])
        )
        free[k] = img
    disp = np.zeros((n_dynamics, 2, ny, nx), np.float32)
    disp[:, 0] = -shift_px[:, 0, None, None]  # anatomy moved by +s: sample at p - s
    disp[:, 1] = -shift_px[:, 1, None, None]
    moved = warp(free, disp)
    masks = warp(np.repeat(myo[None].astype(np.float32), n_dynamics, 0), disp) > 0.5
    moved = scale * (moved + 0.01 * rng.standard_normal(moved.shape)).astype(np.float32)
    pd = scale * (np.repeat((2.0 * body + 1.5 * (lv | rv | myo))[None], n_pd, 0)).astype(np.float32)
    times = np.cumsum(np.full(n_dynamics, 0.6))
    series = SliceSeries(
        images=np.abs(moved),
        times_s=times,
        pixel_spacing_mm=(spacing_mm, spacing_mm),
        pd_images=pd + rng.standard_normal(pd.shape).astype(np.float32),
        pd_times_s=np.arange(n_pd) * 0.6 - 2.0,
    )
    return series, disp, masks
