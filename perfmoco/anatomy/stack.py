"""The LV of every slice of a study, checked against the other slices (geometry part).

Each slice's blood pools are found on their own (:func:`perfmoco.anatomy.find_blood_pools`),
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
position (:func:`perfmoco.moco.stack.locate_lv_stack` before the motion
correction, :func:`perfmoco.quant.quantify_study` on the corrected slices).
The new pool is taken only when it lies at most half as far from
them as the first; otherwise the slice keeps its own result.

Without any slice geometry (bare arrays, headers left at their defaults), slices
whose fields of view agree are compared on a common grid, centred and with the
same axes, as one perfusion protocol acquires them (phantom 10802 without its
geometry: the mid slice's LV was taken 45 mm off, 89 % of its MBF fits failed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from perfmoco.orientation import short_axis_axes
from perfmoco.study import SliceSeries

__all__ = ["TOLERANCE_MM", "accept", "has_directions", "in_plane_mm", "pixel_of", "stack_outliers"]

log = logging.getLogger(__name__)

#: Slices whose normals differ by more than this are not compared, degrees.
MAX_TILT_DEG = 10.0
#: Default largest distance of a slice's LV centre from the others', mm.
TOLERANCE_MM = 30.0
#: Without any geometry, slices whose fields of view (mm) agree within this share are taken
#: as one stack on a common grid (centred, same axes), as a perfusion protocol acquires them.
GRID_FOV_TOLERANCE = 0.05


def _frame(series: SliceSeries):
    """``(position, read, phase)`` in patient mm, or None without a short-axis geometry."""
    g = series.geometry
    ax = None if g is None else short_axis_axes(g)
    if ax is None:
        return None
    pos = np.asarray(g.position, np.float64)
    if not np.isfinite(pos).all():
        return None
    return pos, ax[0], ax[1]


def has_directions(geometry) -> bool:
    """Whether a geometry holds read and phase directions at all (not absent or zeroed)."""
    if geometry is None:
        return False
    d = np.array([geometry.read_dir, geometry.phase_dir], np.float64)
    return bool(np.isfinite(d).all() and (np.linalg.norm(d, axis=1) > 1e-6).all())


def _grid_frames(slices: Sequence[SliceSeries]) -> list | None:
    """Frames of a stack with no geometry at all: one common grid, or None.

    Only where no slice has read and phase directions (none, or a header's zeros) or
    all share one position and one set of directions (a default header written for
    them): a stack whose own geometry is known but not short-axis is left unchecked.

    Every slice centred at the origin with the same axes, where their fields of
    view (matrix x spacing, mm) agree within :data:`GRID_FOV_TOLERANCE` (the high-
    resolution slices and a low-resolution AIF slice of the same field of view).
    """
    geoms = [s.geometry for s in slices]
    if any(has_directions(g) for g in geoms) and not all(  # one header for all: no information
            g is not None and all(np.allclose(getattr(g, a), getattr(geoms[0], a))
                                  for a in ("position", "read_dir", "phase_dir"))
            for g in geoms):
        return None
    fovs = np.array([[n * d for n, d in zip(s.shape, s.pixel_spacing_mm)] for s in slices])
    if len(slices) < 3 or np.any(np.abs(fovs / fovs[0] - 1.0) > GRID_FOV_TOLERANCE):
        return None
    return [(np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))] * len(slices)


def in_plane_mm(series: SliceSeries, yx, basis, frame=None) -> np.ndarray | None:
    """A pixel ``(y, x)`` of a slice as 2 patient coordinates along ``basis = (read, phase)``.

    ``frame``: the slice's ``(position, read, phase)`` when not from its geometry.
    """
    fr = _frame(series) if frame is None else frame
    if fr is None:
        return None
    pos, read, phase = fr
    ny, nx = series.shape
    dy, dx = series.pixel_spacing_mm
    p = pos + (yx[1] - (nx - 1) / 2.0) * dx * read + (yx[0] - (ny - 1) / 2.0) * dy * phase
    return np.array([p @ basis[0], p @ basis[1]])


def pixel_of(series: SliceSeries, uv, basis, frame=None) -> tuple[float, float]:
    """The pixel ``(y, x)`` of a slice at in-plane patient coordinates ``uv``.

    The inverse of :func:`in_plane_mm` for a slice parallel to the basis.
    """
    pos, read, phase = _frame(series) if frame is None else frame
    ny, nx = series.shape
    dy, dx = series.pixel_spacing_mm
    # the slice's read/phase axes are (nearly) the basis: solve the 2x2 system
    a = np.array([[read @ basis[0], phase @ basis[0]], [read @ basis[1], phase @ basis[1]]])
    rel = np.asarray(uv, np.float64) - np.array([pos @ basis[0], pos @ basis[1]])
    off = np.linalg.solve(a, rel)
    return float(off[1] / dy + (ny - 1) / 2.0), float(off[0] / dx + (nx - 1) / 2.0)


def stack_outliers(slices: Sequence[SliceSeries], centres_yx: Sequence, *,
                   tolerance_mm: float = TOLERANCE_MM) -> dict:
    """Slices whose LV centre lies far from the other slices' (see the module docstring).

    Parameters
    ----------
    slices : sequence of SliceSeries
    centres_yx : sequence of (y, x) or None
        Each slice's LV centre, pixels (None: not found; left out).
    tolerance_mm : float, keyword-only
        Largest in-plane distance from the median of the others (0: no check).

    Returns
    -------
    dict
        ``index -> (near_yx, distance_mm)``: where the others put the LV, in
        that slice's pixels, and how far its own centre lies from there.
    """
    if tolerance_mm <= 0:
        return {}
    grid = _grid_frames(slices)
    if grid is not None:
        log.info("no slice geometry: the slices' LV centres compared on a common grid "
                 "(same field of view)")
        frames = [f if c is not None else None for f, c in zip(grid, centres_yx)]
    else:
        frames = [_frame(s) if c is not None else None for s, c in zip(slices, centres_yx)]
    usable = [i for i, f in enumerate(frames) if f is not None]
    if len(usable) < 3:
        return {}
    _, read0, phase0 = frames[usable[0]]
    n0 = np.cross(read0, phase0)
    cos_max = np.cos(np.deg2rad(MAX_TILT_DEG))
    usable = [i for i in usable if abs(np.cross(frames[i][1], frames[i][2]) @ n0) >= cos_max]
    if len(usable) < 3:
        return {}
    basis = (read0, phase0)
    uv = {i: in_plane_mm(slices[i], centres_yx[i], basis, frames[i]) for i in usable}
    out = {}
    for i in usable:
        others = np.array([uv[j] for j in usable if j != i])
        centre = np.median(others, axis=0)
        dist = float(np.linalg.norm(uv[i] - centre))
        if dist <= tolerance_mm:
            continue
        if np.max(np.linalg.norm(others - centre, axis=1)) > tolerance_mm:
            continue  # the others do not agree either: nothing to go by
        out[i] = (pixel_of(slices[i], centre, basis, frames[i]), dist)
    return out


def accept(series: SliceSeries, again_yx, near_yx, distance_mm: float, *,
           what: str = "the other slices' LV") -> bool:
    """Whether a pool found again near the others' LV (``what``: where ``near_yx`` comes
    from) replaces the slice's own (and log it).
    """
    sy, sx = series.pixel_spacing_mm
    moved = float(np.hypot((again_yx[0] - near_yx[0]) * sy, (again_yx[1] - near_yx[1]) * sx))
    ok = moved <= 0.5 * distance_mm  # clearly closer, not just inside the tolerance
    if ok:
        log.warning("%s: LV found %.0f mm from %s; taken instead the pool %.0f mm from it",
                    series.name, distance_mm, what, moved)
    else:
        log.warning("%s: LV found %.0f mm from %s and no pool near it; kept", series.name,
                    distance_mm, what)
    return ok
