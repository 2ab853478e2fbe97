"""Curves from irregular beat times onto the uniform grid the Fermi fit needs."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

__all__ = ["resample_uniform"]


def resample_uniform(times_s, values, *, dt_s=None, t0_s=None, n=None, method="cubic"):
    """Resample curves from irregular beat times onto a uniform grid.

    Parameters
    ----------
    times_s : ndarray, shape (T,), float, s
        Increasing sample times.
    values : ndarray, shape (..., T)
        Curves sampled at ``times_s``.
    dt_s : float, keyword-only, optional
        Grid step; default the median interval of ``times_s``.
    t0_s : float, keyword-only, optional
        First grid time; default ``times_s[0]``.
    n : int, keyword-only, optional
        Number of grid points; default as many as fit within ``times_s``.
    method : {"cubic", "linear"}, keyword-only
        Cubic spline (default: linear interpolation clips the sharp AIF
        peak, which biased MBF by 2-6 % on the phantom) or linear.

    Returns
    -------
    grid : ndarray, shape (n,), float64, s
    resampled : ndarray, shape (..., n), float64
        Values outside ``times_s`` are held at the end values.
    """
    t = np.asarray(times_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or v.shape[-1] != t.size:
        raise ValueError(f"times_s (T,) must match values (..., T), got {t.shape}, {v.shape}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times_s must be strictly increasing")
    dt = float(np.median(np.diff(t))) if dt_s is None else float(dt_s)
    start = float(t[0]) if t0_s is None else float(t0_s)
    if n is None:
        n = int(np.floor((t[-1] - start) / dt + 1e-9)) + 1
    grid = start + dt * np.arange(n)
    inside = np.clip(grid, t[0], t[-1])  # hold the end values outside
    if method == "cubic" and t.size >= 4:
        return grid, CubicSpline(t, v, axis=-1)(inside)
    if method not in ("cubic", "linear"):
        raise ValueError(f"method must be 'cubic' or 'linear', got {method!r}")
    idx = np.clip(np.searchsorted(t, inside, side="right") - 1, 0, t.size - 2)
    w = np.clip((inside - t[idx]) / (t[idx + 1] - t[idx]), 0.0, 1.0)
    return grid, v[..., idx] * (1.0 - w) + v[..., idx + 1] * w
