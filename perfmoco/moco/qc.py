"""Motion QC from the corrected series: frames unlike both of their neighbours."""

from __future__ import annotations

import numpy as np
import torch

from perfmoco.moco.ncc import gaussian_window, windowed_ncc

__all__ = ["temporal_outliers"]


def temporal_outliers(frames: torch.Tensor, *, window_sigma_px: float, ratio: float):
    """Frames that resemble neither neighbour as much as the neighbours resemble each other.

    Contrast changes smoothly from beat to beat, so after a good correction a
    frame is at least as close to each of its neighbours as the two neighbours
    (two beats apart) are to each other.  A frame left misaligned or deformed
    (e.g. mistriggered) breaks that: with ``d`` = 1 - NCC under a Gaussian
    window at the crop centre (the LV), the score of frame ``t`` is
    ``min(d(t-1, t), d(t, t+1)) / d(t-1, t+1)`` (end frames: ``d(0, 1) / d(1, 2)``).
    Measured on phantom series after the DL correction: well-corrected frames
    score at most ~1.5 (median ~0.8); about two thirds of mistriggered frames
    score above 1.6.  A frame whose neighbour is also bad (two mistriggers in
    a row) or that falls in the steep bolus upslope can score low.

    Parameters
    ----------
    frames : Tensor, shape (T, H, W)
        Corrected crops centred on the LV.
    window_sigma_px : float, keyword-only
        SD of the Gaussian window, pixels.
    ratio : float, keyword-only
        Frames scoring above this are returned.

    Returns
    -------
    flags : ndarray, shape (T,), bool
    score : ndarray, shape (T,), float64
    """
    f = frames.double()
    t_n, h, w = f.shape
    if t_n < 4:
        return np.zeros(t_n, bool), np.zeros(t_n)
    win = gaussian_window(h, w, window_sigma_px, device=f.device, dtype=f.dtype)
    d1 = (1.0 - windowed_ncc(f[:-1], f[1:], win)).cpu().numpy()  # (t, t + 1)
    d2 = (1.0 - windowed_ncc(f[:-2], f[2:], win)).cpu().numpy()  # (t - 1, t + 1)
    floor = 1e-6
    score = np.empty(t_n)
    score[1:-1] = np.minimum(d1[:-1], d1[1:]) / np.maximum(d2, floor)
    score[0] = d1[0] / max(d1[1], floor)
    score[-1] = d1[-1] / max(d1[-2], floor)
    return score > ratio, score
