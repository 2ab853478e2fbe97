"""Which myocardial pixels are which: the core behind the delay and segment fits, the rims
that hold some of a cavity's blood (:mod:`perfmoco.quant.spillover`).

Distances are in display pixels scaled to acquired ones where a series was
zero-filled (:mod:`perfmoco.quant.resolution`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from perfmoco.config import QuantConfig
from perfmoco.quant.resolution import half_up

__all__ = ["CORE_DIST_PX", "MIN_CORE_PX", "RV_DELAY_DIST_PX", "cavity_of", "core_pixels",
           "delay_core", "distance_to", "rim_pools"]

#: Pixels used for segment statistics and the delay fits lie at least this far
#: from the blood pools (partial volume fakes an early foot and biases MBF).
CORE_DIST_PX = 2.0
#: Core pixels a segment of a zero-filled image keeps before its core is made shallower.
MIN_CORE_PX = 8
#: The study's delay fit takes the core pixels at least this far (acquired pixels,
#: chessboard) from the RV's blood.  The RV's blood arrives seconds before the LV's, and
#: the septum's pixels near it carry some through partial volume and each resampling of
#: a moving heart, which reads as an early delay and every MBF low (fresh 12151 a after
#: the DL correction: delay 0.15 s against 0.71 s, median segment error 0.48 -> 0.37;
#: 19 cached DL corrections 0.273 -> 0.270 mean, bias -0.069 -> -0.036, split 288 ->
#: 290 of 298; small hearts 0.393 -> 0.380; motion-free noise-free 0.9 -> 1.2 %).
RV_DELAY_DIST_PX = 4.0
#: ... where a slice keeps at least this many such pixels (acquired pixels; else its
#: whole core).
MIN_DELAY_CORE_PX = 10


def rim_pools(work, reach: int, config: QuantConfig) -> np.ndarray:
    """Which cavity's blood each myocardial pixel may hold: ``0`` LV, ``1`` RV, ``-1`` none.

    Pixels within ``reach`` (chessboard distance, pixels) of the LV cavity
    (``config.blood_spillover``) or of the RV blood pool (``config.rv_spillover``)
    take the nearer one's, the LV's when equally near.
    """
    myo = work.myo
    near = np.full(int(myo.sum()), -1)
    d_lv = distance_to(cavity_of(myo))[myo]
    d_rv = distance_to(work.rv)[myo]
    if config.blood_spillover:
        near[d_lv <= reach] = 0
    if config.rv_spillover:
        near[(d_rv <= reach) & ((d_rv < d_lv) | (not config.blood_spillover))] = 1
    return near


def cavity_of(myo) -> np.ndarray:
    """What a myocardial ring encloses (its LV cavity); empty where the ring has a gap."""
    myo = np.asarray(myo, bool)
    return ndimage.binary_fill_holes(myo) & ~myo


def distance_to(region) -> np.ndarray:
    """Chessboard distance of every pixel to ``region`` (0 inside; inf without one)."""
    if not region.any():
        return np.full(region.shape, np.inf)
    return ndimage.distance_transform_cdt(~region, metric="chessboard").astype(np.float64)


def core_pixels(myo, blood, labels, scale: float = 1.0) -> np.ndarray:
    """Myocardial pixels off the partial-volume borders, for the delay and segment fits.

    A core pixel lies at least ``CORE_DIST_PX`` from the blood pools and is not
    on the myocardium's edge (city-block depth 2), both in acquired pixels:
    ``scale`` display pixels each (:mod:`perfmoco.quant.resolution`).  Where a
    zero-filled image's thin wall leaves a segment (``labels``) fewer than
    ``MIN_CORE_PX`` such pixels, that segment takes them at a smaller scale,
    down to the display pixels' (as for ``scale=1``).

    Parameters
    ----------
    myo, blood : ndarray, shape (Y, X), bool
    labels : ndarray, shape (Y, X), int
        Segment label of each pixel.
    scale : float
        Display pixels per acquired pixel, >= 1.

    Returns
    -------
    ndarray, shape (Y, X), bool
    """
    myo, blood = np.asarray(myo, bool), np.asarray(blood, bool)
    to_blood = ndimage.distance_transform_edt(~blood) if blood.any() else np.full(myo.shape, np.inf)
    depth = ndimage.distance_transform_cdt(myo, metric="taxicab")
    scales = sorted({float(scale), (float(scale) + 1.0) / 2.0, 1.0}, reverse=True)
    levels = [(depth >= 1 + half_up(f)) & (to_blood >= CORE_DIST_PX * f) & myo for f in scales]
    if len(levels) == 1:
        return levels[0]
    core = np.zeros_like(myo)
    for lab in np.unique(labels[myo]):
        seg = myo & (labels == lab)
        pick = next((c for c in levels if (c & seg).sum() >= MIN_CORE_PX), levels[-1])
        core |= pick & seg
    return core


def delay_core(core, myo, rv, scale: float = 1.0) -> np.ndarray:
    """A slice's core pixels behind the study's delay fit: those off the RV's blood and
    inside the core.

    ``core``: the myocardial pixels' core flags (an array over ``myo``'s pixels);
    ``rv``: the RV blood pool; ``scale``: display pixels per acquired pixel.  The
    pixels at least :data:`RV_DELAY_DIST_PX` from the RV, where at least
    :data:`MIN_DELAY_CORE_PX` are (else ``core`` itself), and of those the core's
    interior (its 4-neighbours core too, one acquired pixel in), where as many are.
    The core's own edge still holds a little of the blood's earlier, sharper rise
    after the resampling of a moving heart, and the delay trades off against MBF
    (tests/test_quant_delays.py: 6 % of the blood in the core's edge, clean pixels
    5.9 % low from the whole core, 1.6 % from its interior).  After the DL correction
    (segment error, median over the segments): 12790-12799 0.224 -> 0.185 (12798 b
    0.46 -> 0.25), 14 others 0.244 -> 0.235, and on the set kept out of that choice,
    12800-12807, per study between -0.03 and +0.05 (set medians 12800-12803 a 0.17 ->
    0.21, 12804-12807 b 0.13 either way); all 32: 0.210 -> 0.203.
    """
    core = np.asarray(core, bool)
    myo = np.asarray(myo, bool)
    enough = MIN_DELAY_CORE_PX * scale**2
    off_rv = distance_to(np.asarray(rv, bool)) >= RV_DELAY_DIST_PX * scale
    far = core & off_rv[myo]
    far = far if int(far.sum()) >= enough else core
    flat = np.zeros(myo.shape, bool)
    flat[myo] = core
    inner = ndimage.binary_erosion(flat, iterations=max(1, half_up(scale)))[myo] & far
    return inner if int(inner.sum()) >= enough else far
