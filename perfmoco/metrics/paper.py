"""The paper's metrics: no ground truth needed (see ``paper-notes.md``)."""

from __future__ import annotations

import itertools
import warnings
from typing import Literal

import numpy as np

from perfmoco.metrics._common import _as_series, dice

__all__ = ["dice_around_peak", "median_mbf", "pd_sd", "segment_mbf_sd", "tic_smoothness"]


def tic_smoothness(
    images,
    *,
    centre: tuple[float, float],
    radius_px: float,
    normalise: Literal["roi", "pixel"] = "roi",
) -> float:
    """Mean SD of the 2nd temporal derivative of normalised pixel TICs in a disc.

    The time-intensity curves (TICs) of the pixels in the disc are scaled to
    0..1, the second difference along time is taken (``np.diff(n=2)``, per
    dynamic, not per second), and its SD over time is averaged over the
    pixels.  A smooth (e.g. linear) curve gives 0; motion, which makes pixels
    jump between tissues, makes it larger (paper: 0.059 without correction,
    0.015 with).

    The paper says "normalised pixel TICs" without saying how.  The default,
    ``normalise="roi"``, scales all curves together by the minimum and
    maximum over the disc and the series (as the paper normalises its images
    to 0..1): on the phantom this gives the paper's magnitudes (about 0.05
    uncorrected, 0.03 with a perfect correction, 0.01 without noise).
    ``normalise="pixel"`` scales each curve by its own range; it lets noise
    in weakly enhancing pixels dominate (about 0.25 whether corrected or not).

    Parameters
    ----------
    images : ndarray, shape (T, Y, X), float
        Dynamics (PD frames excluded), T >= 3.
    centre : tuple of 2 float, keyword-only
        ROI centre ``(y, x)`` in pixels (the LV centre).
    radius_px : float, keyword-only
        ROI radius in pixels (paper: myocardium extent + 10 px).
    normalise : {"roi", "pixel"}, keyword-only

    Returns
    -------
    float
        Dimensionless; NaN (with a warning) when the ROI's curves are flat.
    """
    im = _as_series(images, "images").astype(np.float64)
    if im.shape[0] < 3:
        raise ValueError(f"images needs at least 3 dynamics, got {im.shape[0]}")
    if not radius_px > 0:
        raise ValueError(f"radius_px must be positive, got {radius_px}")
    if normalise not in ("roi", "pixel"):
        raise ValueError(f"normalise must be 'roi' or 'pixel', got {normalise!r}")
    yy, xx = np.mgrid[0 : im.shape[1], 0 : im.shape[2]]
    roi = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= float(radius_px) ** 2
    tic = im[:, roi]  # (T, N)
    if normalise == "roi":
        lo, hi = tic.min(initial=np.inf), tic.max(initial=-np.inf)
    else:
        lo, hi = tic.min(axis=0), tic.max(axis=0)
    ok = np.atleast_1d(hi - lo > 1e-12 * max(1.0, float(np.abs(tic).max(initial=0.0))))
    if not ok.any():
        warnings.warn("tic_smoothness: no pixel with a non-flat curve in the ROI", stacklevel=2)
        return float("nan")
    if normalise == "roi":
        norm = (tic - lo) / (hi - lo)
    else:
        norm = (tic[:, ok] - lo[ok]) / (hi[ok] - lo[ok])
    return float(np.diff(norm, n=2, axis=0).std(axis=0).mean())


def dice_around_peak(
    masks,
    *,
    peak_index: int,
    n: int = 5,
    mode: Literal["pairwise", "centre"] = "pairwise",
) -> float:
    """Dice of myocardium masks over ``n`` consecutive frames around peak LV.

    The paper segments the myocardium in the 5 consecutive frames around
    peak LV and reports a Dice "over" them without saying between which
    pairs.  The default here is the mean over all ``n (n - 1) / 2`` pairs,
    which depends on no single frame; ``mode="centre"`` gives the mean Dice
    of the other frames against the centre (peak) frame.  The window is
    shifted to stay inside the series.

    Parameters
    ----------
    masks : ndarray, shape (T, Y, X), bool
        Myocardium masks of the (corrected) series.
    peak_index : int, keyword-only
        Dynamic of peak LV blood signal.
    n : int, keyword-only
        Frames in the window (paper: 5).
    mode : {"pairwise", "centre"}, keyword-only

    Returns
    -------
    float
        Mean Dice, 0..1.
    """
    m = _as_series(masks, "masks").astype(bool)
    t = m.shape[0]
    if not 2 <= n <= t:
        raise ValueError(f"n must be between 2 and the number of frames ({t}), got {n}")
    if not 0 <= peak_index < t:
        raise ValueError(f"peak_index must be in 0..{t - 1}, got {peak_index}")
    if mode not in ("pairwise", "centre"):
        raise ValueError(f"mode must be 'pairwise' or 'centre', got {mode!r}")
    start = min(max(peak_index - n // 2, 0), t - n)
    window = range(start, start + n)
    if mode == "pairwise":
        values = [dice(m[i], m[j]) for i, j in itertools.combinations(window, 2)]
    else:
        values = [dice(m[i], m[peak_index]) for i in window if i != peak_index]
    return float(np.mean(values))


def pd_sd(pd_frames, myo_mask, *, normalise: bool = True) -> float:
    """SD of proton-density pixels inside the peak-LV myocardium mask.

    Misregistered PD frames mix lung, fat and blood into the mask and raise
    the SD (paper: 0.15 uncorrected, 0.10 corrected).  Each frame is divided
    by its 99th percentile (a robust 0..1 scaling, as the paper normalises
    its images) unless ``normalise=False``; the SD over the mask pixels of
    each frame is averaged over the frames.

    Parameters
    ----------
    pd_frames : ndarray, shape (P, Y, X) or (Y, X), float
        (Corrected) PD frames.
    myo_mask : ndarray, shape (Y, X), bool
        Myocardium mask at peak LV in the same (corrected) frame.
    normalise : bool, keyword-only

    Returns
    -------
    float
        SD in units of the normalised image (or of the input); NaN with a
        warning when there are no PD frames or the mask is empty.
    """
    pd = np.asarray(pd_frames, dtype=np.float64)
    if pd.ndim == 2:
        pd = pd[None]
    pd = _as_series(pd, "pd_frames")
    mask = _as_series(myo_mask, "myo_mask", ndim=2).astype(bool)
    if mask.shape != pd.shape[1:]:
        raise ValueError(f"myo_mask is {mask.shape}, PD frames are {pd.shape[1:]}")
    if pd.shape[0] == 0 or not mask.any():
        warnings.warn("pd_sd: no PD frames or an empty mask; returning NaN", stacklevel=2)
        return float("nan")
    sds = []
    for frame in pd:
        scale = float(np.percentile(frame, 99)) if normalise else 1.0
        if scale <= 0:
            scale = 1.0
        sds.append((frame[mask] / scale).std())
    return float(np.mean(sds))


def segment_mbf_sd(mbf_map, aha, *, n_segments: int = 16) -> np.ndarray:
    """SD of pixel MBF within each AHA segment.

    Parameters
    ----------
    mbf_map : ndarray, shape (Y, X), float, ml/min/g
        Pixel-wise MBF; NaN pixels (failed fits) are ignored.
    aha : ndarray, shape (Y, X), int
        AHA segment label per pixel, 0 outside the myocardium, 1..16 inside.
    n_segments : int, keyword-only

    Returns
    -------
    ndarray, shape (n_segments,), float64, ml/min/g
        Entry ``s - 1`` is the SD of segment ``s``; NaN for segments absent
        from this slice (or with fewer than 2 finite pixels).
    """
    mbf = _as_series(mbf_map, "mbf_map", ndim=2).astype(np.float64)
    seg = _as_series(aha, "aha", ndim=2).astype(np.int64)
    if seg.shape != mbf.shape:
        raise ValueError(f"aha is {seg.shape}, mbf_map is {mbf.shape}")
    out = np.full(n_segments, np.nan)
    for s in range(1, n_segments + 1):
        v = mbf[(seg == s) & np.isfinite(mbf)]
        if v.size >= 2:
            out[s - 1] = v.std()
    return out


def median_mbf(mbf_map, mask) -> float:
    """Median MBF over the finite pixels of ``mask``.

    Parameters
    ----------
    mbf_map : ndarray, shape (Y, X), float, ml/min/g
    mask : ndarray, shape (Y, X), bool or int
        Myocardium (an AHA label map works: nonzero = inside).

    Returns
    -------
    float
        ml/min/g; NaN with a warning when the mask has no finite pixel.
    """
    mbf = _as_series(mbf_map, "mbf_map", ndim=2).astype(np.float64)
    m = _as_series(mask, "mask", ndim=2) != 0
    if m.shape != mbf.shape:
        raise ValueError(f"mask is {m.shape}, mbf_map is {mbf.shape}")
    v = mbf[m & np.isfinite(mbf)]
    if v.size == 0:
        warnings.warn("median_mbf: no finite MBF inside the mask; returning NaN", stacklevel=2)
        return float("nan")
    return float(np.median(v))
