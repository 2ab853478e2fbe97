"""Growing a blood pool's mask from the seed the detector found (LV and RV).

The seed comes from a coarse grid (:mod:`perfmoco.anatomy.pools`); its edge is
set here at the image's own resolution by brightness.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["POOL_MARGIN_MM", "RV_GROW_LEVEL", "RV_GROW_REACH_MM", "disk", "grow_pool", "grow_rv",
           "pool_cavity"]

#: The RV pool is grown in its peak frame down to this share of its bright level.
RV_GROW_LEVEL = 0.3
#: ... no further than this from the pool it was grown from (a chamber is < ~90 mm long).
RV_GROW_REACH_MM = 60.0
#: The LV pool reaches at most this far (at least a pixel) beyond its blood-wall
#: contrast edge: the partial-volume rim it has always held (:func:`pool_cavity`).
POOL_MARGIN_MM = 2.0


def disk(r: int) -> np.ndarray:
    """Structuring element: the pixels within ``r`` of the centre, bool ``(2r + 1, 2r + 1)``."""
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r + 0.5  # structuring element of radius r


def grow_rv(e, frame, peak, seed, lv, spx):
    """The RV pool: grown from ``seed`` in the component's ``frame`` as any pool, and
    the rest of the chamber from the RV's own ``peak`` frame.

    In its peak frame the RV is bright and the LV and the myocardium still
    dark, so a low level (:data:`RV_GROW_LEVEL` of the seed's bright level)
    takes the whole chamber even where the surface coil or the inflow leave
    part of it at half the brightness of the rest; its rim (the partial-volume
    pixels a low level takes at its edge) is cut at half the brightness within
    5 mm, and the LV's pool is left out (and what lies further than
    :data:`RV_GROW_REACH_MM` from the seed: a leak, not the chamber).
    """
    rv = grow_pool(e[frame], seed, spx)
    pk = e[peak]
    level = float(np.percentile(pk[seed], 90))
    reach = ndimage.distance_transform_edt(~seed) * spx <= RV_GROW_REACH_MM
    lab, _ = ndimage.label(ndimage.binary_opening(pk > RV_GROW_LEVEL * level, disk(1))
                           & reach & ~lv)
    ids = np.unique(lab[seed])
    chamber = np.where(np.isin(lab, ids[ids > 0]), pk, 0.0)
    # the rim: pixels below half the chamber's brightness near them (shading spares the rest)
    near = ndimage.maximum_filter(chamber, footprint=disk(max(1, round(5.0 / spx))))
    return (rv | (chamber > 0.5 * near)) & ~lv


def _bright_and_reach(frame, seed, spx):
    """The seed's bright level (90th percentile) and the ~3 mm a pool may grow from it."""
    return (float(np.percentile(frame[seed], 90)),
            ndimage.binary_dilation(seed, disk(max(1, round(3.0 / spx)))))


def _grow(frame, seed, reach, level):
    """The pixels of ``reach`` above ``level`` connected to ``seed``, holes filled."""
    lab, _ = ndimage.label(reach & (frame > level))
    ids = np.unique(lab[seed])
    grown = np.isin(lab, ids[ids > 0])
    return ndimage.binary_fill_holes(grown) if grown.any() else seed


def grow_pool(frame, seed, spx):
    """The pool around ``seed``: pixels above half its bright level, within ~3 mm of it.

    ``seed`` may be blocky (found on a coarser grid); the level decides the edge.
    """
    bright, reach = _bright_and_reach(frame, seed, spx)
    return _grow(frame, seed, reach, 0.5 * bright)


def pool_cavity(frame, seed, pool, spx):
    """``pool`` (:func:`grow_pool` of the same ``frame`` and ``seed``) cut to at most
    :data:`POOL_MARGIN_MM` beyond the edge half-way between its bright level and
    the tissue around it.

    Where the wall itself enhances to about half the blood's (at stress; near
    the surface coil) half the bright level lies inside the wall, and the pool
    took it in.  The tissue level is the median of ``frame`` in a shell 1-3
    pixels (at least 2-6 mm) outside the pool, over its pixels below half the
    bright level (other blood pools left out); taken twice, the second time
    around the first edge.
    """
    bright, reach = _bright_and_reach(frame, seed, spx)
    edge = pool
    for _ in range(2):
        d = ndimage.distance_transform_edt(~edge) * spx
        shell = (d > max(spx, 2.0)) & (d <= max(3 * spx, 6.0)) & (frame < 0.5 * bright)
        tissue = float(np.median(frame[shell])) if shell.any() else 0.0
        edge = _grow(frame, seed, reach, 0.5 * (bright + min(max(tissue, 0.0), bright)))
    return pool & ndimage.binary_dilation(edge, disk(max(1, round(POOL_MARGIN_MM / spx))))
