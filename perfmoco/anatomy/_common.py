"""Shared helpers of :mod:`perfmoco.anatomy`: input checks and the smoothed enhancement."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def spacing_pair(spacing_mm) -> tuple[float, float]:
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
    return float(sp[0]), float(sp[1])


def check_series(images) -> np.ndarray:
    im = np.asarray(images, dtype=np.float32)
    if im.ndim != 3 or im.shape[0] < 5 or min(im.shape[1:]) < 8:
        raise ValueError(f"images must be (T, Y, X) with T >= 5, got shape {im.shape}")
    if not np.isfinite(im).all():
        raise ValueError("images contain NaN or Inf")
    return im


def enhancement(im: np.ndarray, sp: tuple[float, float]):
    """Smoothed enhancement ``E`` (T, Y, X), baseline frame count and noise SD.

    The baseline is the median of the first tenth of the frames (2-5), cut to
    the frames before the bolus (at least 1) where it reaches the RV within them (a scan
    started late: 12460 a with its first 8 dynamics cut took the RV's rise into
    the baseline and the aorta for the LV in two of three slices).
    """
    n_base = int(np.clip(im.shape[0] // 10, 2, 5))
    k = 2 if min(im.shape[1:]) >= 64 else 1  # every other row and column: the same median
    noise = 1.4826 * float(np.median(np.abs(np.diff(im[:, ::k, ::k], axis=0)))) / np.sqrt(2.0)
    n_base = min(n_base, _frames_before_bolus(im[:, ::k, ::k]))
    base = np.median(im[:n_base], axis=0)
    sig = (0.0, max(0.7, 1.5 / sp[0]), max(0.7, 1.5 / sp[1]))
    e = ndimage.gaussian_filter(im - base, sig)
    # frame-wide offsets (e.g. mistriggers), from every k-th row and column as the noise
    e -= np.median(e[:, ::k, ::k], axis=(1, 2), keepdims=True)
    # 3-frame running mean, edge frames repeated (= uniform_filter1d(e, 3, axis=0,
    # mode="nearest"), ~10x faster along this strided axis)
    p = np.concatenate([e[:1], e, e[-1:]])
    e = (p[:-2] + p[1:-1] + p[2:]) / np.float32(3.0)
    return e, n_base, noise


def _frames_before_bolus(im: np.ndarray) -> int:
    """Frames before the earliest-filling bright pixels rise for good (at least 1).

    Of the pixels that gain most over the first frame, those that peak earliest (a
    third; the RV's blood) give a mean curve; its foot is the frame after the last one
    before its peak that lies under a tenth of the way from its lowest point to the
    peak (breathing lifts a frame or two of the baseline above that: 12465 a apical).
    """
    gain = im - im[0]
    peak = gain.max(axis=0)
    top = float(np.percentile(peak, 99.5))
    bright = peak >= 0.45 * top
    if not top > 0 or bright.sum() < 3:
        return im.shape[0]
    curves = gain[:, bright]
    ttp = curves.argmax(axis=0)
    c = curves[:, ttp <= np.percentile(ttp, 33.3)].mean(axis=1)
    p = int(np.argmax(c))
    low = c[: p + 1] <= c[: p + 1].min() + 0.1 * (c[p] - c[: p + 1].min())
    return max(1, int(np.flatnonzero(low)[-1]) + 1)
