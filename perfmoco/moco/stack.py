"""The LV of every slice of a study, checked against the other slices.

Each slice's blood pools are found on their own (:func:`.preprocess.locate_lv`),
which can go wrong where one slice alone is ambiguous: near the apex, where
no RV fills next to the small LV cavity, the descending aorta (round, bright,
filling just after the LV) can win.  The slices of a short-axis stack are
parallel, and the LV centres of all of them lie within a couple of
centimetres of each other in the plane (the LV long axis runs nearly along
the slice normal), while the aorta and the RV lie 4-6 cm from the LV.

So, where the geometry is known, the centres are compared in patient
coordinates: a slice whose LV lies more than ``tolerance_mm`` from the
median of the others, while the others agree with each other, is searched
again with the candidates restricted to that distance of the others'
position.  The new pool is taken only when it lies at most half as far from
them as the first; otherwise the slice keeps its own result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from perfmoco.moco.preprocess import LvLocation, locate_lv
from perfmoco.orientation import _axes
from perfmoco.study import SliceSeries

__all__ = ["in_plane_mm", "locate_lv_stack", "pixel_of"]

log = logging.getLogger(__name__)

#: Slices whose normals differ by more than this are not compared, degrees.
MAX_TILT_DEG = 10.0


def _frame(series: SliceSeries):
    """``(position, read, phase)`` in patient mm, or None without a short-axis geometry."""
    g = series.geometry
    ax = None if g is None else _axes(g)
    if ax is None:
        return None
    pos = np.asarray(g.position, np.float64)
    if not np.isfinite(pos).all():
        return None
    return pos, ax[0], ax[1]


def in_plane_mm(series: SliceSeries, yx, basis) -> np.ndarray | None:
    """A pixel ``(y, x)`` of a slice as 2 patient coordinates along ``basis = (read, phase)``."""
    fr = _frame(series)
    if fr is None:
        return None
    pos, read, phase = fr
    ny, nx = series.shape
    dy, dx = series.pixel_spacing_mm
    p = pos + (yx[1] - (nx - 1) / 2.0) * dx * read + (yx[0] - (ny - 1) / 2.0) * dy * phase
    return np.array([p @ basis[0], p @ basis[1]])


def pixel_of(series: SliceSeries, uv, basis) -> tuple[float, float]:
    """The pixel ``(y, x)`` of a slice at in-plane patient coordinates ``uv``.

    The inverse of :func:`in_plane_mm` for a slice parallel to the basis.
    """
    pos, read, phase = _frame(series)
    ny, nx = series.shape
    dy, dx = series.pixel_spacing_mm
    # the slice's read/phase axes are (nearly) the basis: solve the 2x2 system
    a = np.array([[read @ basis[0], phase @ basis[0]], [read @ basis[1], phase @ basis[1]]])
    rel = np.asarray(uv, np.float64) - np.array([pos @ basis[0], pos @ basis[1]])
    off = np.linalg.solve(a, rel)
    return float(off[1] / dy + (ny - 1) / 2.0), float(off[0] / dx + (nx - 1) / 2.0)


def locate_lv_stack(slices: Sequence[SliceSeries], *, tolerance_mm: float = 30.0,
                    locations: Sequence[LvLocation] | None = None) -> list[LvLocation]:
    """The LV of every slice, an outlier searched again near the others.

    Parameters
    ----------
    slices : sequence of SliceSeries
        The slices of one study (high-resolution and AIF alike).
    tolerance_mm : float, keyword-only
        Largest in-plane distance of a slice's LV centre from the median of
        the others' (0: no check).
    locations : sequence of LvLocation, keyword-only, optional
        Each slice's own result, when already known.

    Returns
    -------
    list of LvLocation
        One per slice, in the slices' order and pixel layout.
    """
    locs = list(locations) if locations is not None else [locate_lv(s) for s in slices]
    if tolerance_mm <= 0:
        return locs
    frames = [_frame(s) for s in slices]
    usable = [i for i, f in enumerate(frames) if f is not None]
    if len(usable) < 3:
        return locs
    _, read0, phase0 = frames[usable[0]]
    n0 = np.cross(read0, phase0)
    cos_max = np.cos(np.deg2rad(MAX_TILT_DEG))
    usable = [i for i in usable if abs(np.cross(frames[i][1], frames[i][2]) @ n0) >= cos_max]
    if len(usable) < 3:
        return locs
    basis = (read0, phase0)
    uv = {i: in_plane_mm(slices[i], locs[i].centre_yx, basis) for i in usable}
    for i in usable:
        others = np.array([uv[j] for j in usable if j != i])
        centre = np.median(others, axis=0)
        if np.linalg.norm(uv[i] - centre) <= tolerance_mm:
            continue
        if np.max(np.linalg.norm(others - centre, axis=1)) > tolerance_mm:
            continue  # the others do not agree either: nothing to go by
        near = pixel_of(slices[i], centre, basis)
        again = locate_lv(slices[i], near_yx=near, near_mm=tolerance_mm)
        moved = np.linalg.norm(in_plane_mm(slices[i], again.centre_yx, basis) - centre)
        if moved <= 0.5 * np.linalg.norm(uv[i] - centre):  # clearly closer, not just inside
            log.warning("%s: LV found %.0f mm from the other slices' LV; taken instead the "
                        "pool %.0f mm from it", slices[i].name,
                        np.linalg.norm(uv[i] - centre), moved)
            locs[i] = again
        else:
            log.warning("%s: LV found %.0f mm from the other slices' LV and no pool near "
                        "theirs; kept", slices[i].name, np.linalg.norm(uv[i] - centre))
    return locs
