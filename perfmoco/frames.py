"""Frames of a series filled from their neighbours in time (flagged or blank frames)."""

from __future__ import annotations

import numpy as np

__all__ = ["blank_frames", "fill_non_finite", "interpolate_frames"]


def blank_frames(images) -> np.ndarray:
    """``(T,)`` bool: the frames of ``images`` ``(T, Y, X)`` that hold one value only (a
    frame lost in reconstruction or transfer, sent as zeros).
    """
    im = np.asarray(images)
    return im.max(axis=(1, 2)) <= im.min(axis=(1, 2))


def fill_non_finite(images) -> tuple[np.ndarray, np.ndarray]:
    """``images`` ``(T, Y, X)`` with their NaN / Inf pixels filled, and how many each frame
    had (``(T,)`` int; ``images`` itself where none is).

    A frame with no finite pixel becomes 0 (a lost frame: :func:`blank_frames` finds
    it); a pixel finite in no other frame becomes 0 (e.g. a background masked with NaN
    by another program); any other takes the value of the same pixel interpolated
    linearly in time between its nearest finite frames.
    """
    im = np.asarray(images)
    bad = ~np.isfinite(im)
    counts = bad.sum(axis=(1, 2))
    if not counts.any():
        return im, counts
    out = np.where(bad, 0.0, im).astype(im.dtype, copy=False)
    lost = bad.all(axis=(1, 2))
    t = np.arange(im.shape[0])
    kept = bad[~lost]  # frames that hold some signal
    some = kept.any(axis=0) & ~kept.all(axis=0)  # pixels to interpolate in time
    for y, x in zip(*np.nonzero(some)):
        good = ~bad[:, y, x]
        fill = bad[:, y, x] & ~lost
        out[fill, y, x] = np.interp(t[fill], t[good], im[good, y, x])
    return out, counts


def interpolate_frames(images, bad) -> np.ndarray:
    """``images`` with the frames ``bad`` replaced by linear interpolation in time between
    their nearest good neighbours (the nearest one's copy at either end).

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
    bad : ndarray, shape (T,), bool, or None

    Returns
    -------
    ndarray, shape (T, Y, X)
        ``images`` itself where nothing is to be filled (none bad, or all).
    """
    if bad is None:
        return images
    b = np.asarray(bad, bool)
    if b.shape != (images.shape[0],):
        raise ValueError(f"frame flags must have shape ({images.shape[0]},), got {b.shape}")
    if not b.any() or b.all():
        return images
    idx = np.arange(b.size)
    good = idx[~b]
    j = np.clip(np.searchsorted(good, idx[b]), 1, good.size - 1)
    lo, hi = good[j - 1], good[j]
    w = np.clip((idx[b] - lo) / np.maximum(hi - lo, 1), 0.0, 1.0)[:, None, None]
    out = images.copy()
    out[b] = images[lo] * (1.0 - w) + images[hi] * w
    return out
