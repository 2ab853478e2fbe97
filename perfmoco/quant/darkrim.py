"""A dark rim along the endocardium, told apart from a subendocardial defect.

Many real first-pass series show a thin dark band along the endocardium while the
LV blood is at its brightest (Gibbs ringing at the bright blood's edge, the blood's
motion during the readout): read as tissue it is a subendocardial defect, by eye
and by the Fermi fit.  What tells it apart is its timing and sign: it comes as the
bolus reaches the LV cavity, before much contrast reaches the myocardium, and it
darkens the tissue *below* its own pre-contrast signal, which no contrast uptake
can do (a true defect enhances late and little, but never falls).  So each
segment's first ring of myocardium along the LV cavity is averaged (noise down by
the square root of its pixel count, where a single pixel's dip is lost in noise)
and tested for such a fall.  The product names the segments where it finds one
(``perfmoco.phantom.darkrim`` makes such a rim for the benchmark and tests).
"""

from __future__ import annotations

import numpy as np

from perfmoco.quant.messages import warn
from perfmoco.quant.pixels import cavity_of, distance_to
from perfmoco.quant.resolution import half_up

__all__ = ["dark_rim_segments", "name_dark_rim"]

#: Frames after the LV cavity's peak still searched for the rim's fall.
AFTER_PEAK = 3
#: A fall must exceed this many SDs of the ring's pre-contrast signal (3-frame means) ...
MIN_SDS = 4.0
#: ... and this fraction of its pre-contrast level (no drift of a very clean series).
MIN_FALL = 0.05
#: Ring pixels a segment needs for its mean to be tested.
MIN_PIXELS = 6


def dark_rim_segments(images, myo, aha, lv_core, n_base: int, *, pixel_scale: float = 1.0,
                      cavity=None) -> tuple[dict[int, float], np.ndarray]:
    """Segments whose endocardial ring falls below its pre-contrast signal with the bolus.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
        A slice's motion-corrected frames (signal, before any conversion).
    myo : ndarray, shape (Y, X), bool
        Its LV myocardium.
    aha : ndarray, shape (Y, X), int
        Its AHA segment labels (0 outside the myocardium).
    lv_core : ndarray, shape (Y, X), bool
        The LV cavity's blood away from its edges (the bolus's timing).
    n_base : int
        Pre-contrast frames (before the LV's bolus).
    pixel_scale : float
        Acquired pixels per image pixel's width (a zero-filled image's ring is wider).
    cavity : ndarray, shape (Y, X), bool, optional
        The LV blood pool; the ring lies next to it or to what the myocardium encloses
        (a ring with a gap, where a pool took the wall, encloses nothing).

    Returns
    -------
    found : dict of int to float
        Segment -> the ring's deepest fall (3-frame mean) as a fraction of its
        pre-contrast level, for each segment where it exceeds both :data:`MIN_SDS` noise
        SDs and :data:`MIN_FALL`.
    pixels : ndarray, shape (Y, X), bool
        The ring's pixels in those segments (their MBF is the artefact's).
    """
    none = ({}, np.zeros(myo.shape, bool))
    if n_base < 5 or lv_core is None or not lv_core.any() or not myo.any():
        return none
    inside = cavity_of(myo) | (False if cavity is None else np.asarray(cavity, bool))
    ring = myo & (distance_to(inside & ~myo) <= max(1, half_up(pixel_scale)))
    peak = int(np.argmax(images[:, lv_core].mean(axis=1)))
    stop = min(images.shape[0], peak + AFTER_PEAK + 1)
    if stop - n_base < 3:
        return none
    out = {}
    for seg in np.unique(aha[ring]):
        pix = ring & (aha == seg)
        if seg == 0 or pix.sum() < MIN_PIXELS:
            continue
        curve = images[:, pix].mean(axis=1)
        base = curve[1:n_base]  # the first frame may still approach the steady state
        # noise: the baseline's SD, at least the frame-to-frame scatter over the series
        # (a few baseline frames can happen to agree)
        scatter = 1.4826 * float(np.median(np.abs(np.diff(curve)))) / np.sqrt(2.0)
        level, sd = float(np.median(base)), max(float(np.std(base, ddof=1)), scatter)
        if level <= 0:
            continue
        means = np.convolve(curve[n_base:stop], np.ones(3) / 3, mode="valid")
        fall = level - float(means.min())
        if fall > max(MIN_SDS * sd / np.sqrt(3), MIN_FALL * level):
            out[int(seg)] = fall / level
    return out, ring & np.isin(aha, list(out))


def name_dark_rim(msgs: list[str], name: str, found: dict[int, float], pixels: int) -> None:
    """Warn of the dark rim :func:`dark_rim_segments` found in slice ``name``."""
    if not found:
        return
    segs = ", ".join(str(k) for k in sorted(found))
    warn(msgs, f"{name}: a dark rim along the endocardium of segment(s) {segs} (its signal "
               f"fell up to {100 * max(found.values()):.0f}% below the pre-contrast level as "
               "the bolus reached the LV cavity, which contrast uptake cannot do): an "
               f"artefact, not a perfusion defect; subendocardial MBF there reads low (its "
               f"{pixels} pixels flagged, left out of the segment table and the ischaemic "
               "burden)")
