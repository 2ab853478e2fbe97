"""Display orientation of short-axis slices from their patient-space geometry.

Scanners and sites lay short-axis images out differently: the phase-encoding
axis may run anterior-posterior or left-right, and an image may be a mirror
image of the usual view.  perfmoco's networks were trained on the standard
short-axis display (anterior wall up, septum and RV on the left of the
screen, lateral wall on the right), and the AHA segments run
counter-clockwise on that display.  This module finds, from the MRD geometry
alone, the exact pixel re-ordering (transpose and flips, no interpolation)
that brings a slice to that display, and whether the slice as stored is
mirrored.

Anatomy used: the LV long axis runs from base to apex towards the patient's
left, anterior and inferior, about ``(+0.6, -0.5, -0.6)`` in LPS patient
coordinates (dextrocardia is the exception).  The standard display has image
y (down) along the posterior direction projected on the slice plane and
image x along ``down x apex``, so that ``x_dir x y_dir`` points to the apex.

Series without a usable geometry (a bare ``.npy``, a default header) can still
be turned by a multiple of 90 degrees so that the RV lies left of the LV, as on
the standard display (:func:`orientation_from_anatomy`); whether such a series
is mirrored cannot be told from the two blood pools, so it is never flipped.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from perfmoco.study import SliceGeometry

__all__ = [
    "APEX_DIRECTION_LPS",
    "Orientation",
    "canonical_orientation",
    "is_mirrored",
    "orientation_from_anatomy",
    "short_axis_axes",
]

#: Typical base-to-apex direction of the LV long axis, LPS patient coordinates.
APEX_DIRECTION_LPS = np.array([0.6, -0.5, -0.62]) / np.linalg.norm([0.6, -0.5, -0.62])
#: A slice is treated as short-axis (orientation known) only if its normal lies
#: within about 40 degrees of the typical long axis (axial, sagittal and coronal
#: slices are further away).
_MIN_AXIS_COSINE = 0.75
_ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])


@dataclasses.dataclass(frozen=True)
class Orientation:
    """A pixel re-ordering: transpose (y <-> x) first, then flips along y and x.

    ``apply`` maps stored images to the standard display; ``undo_images`` and
    ``undo_field`` map results found on the standard display back.
    """

    transpose: bool = False
    flip_y: bool = False
    flip_x: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_y or self.flip_x)

    @property
    def proper(self) -> bool:
        """True for a rotation (multiple of 90 degrees), False for a mirroring."""
        return (self.transpose + self.flip_y + self.flip_x) % 2 == 0

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Stored ``(..., Y, X)`` array -> standard display (a copy, C-contiguous)."""
        a = np.asarray(images)
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        if self.flip_y:
            a = a[..., ::-1, :]
        if self.flip_x:
            a = a[..., ::-1]
        return np.ascontiguousarray(a)

    def undo_images(self, images: np.ndarray) -> np.ndarray:
        """Standard-display ``(..., Y, X)`` array -> stored layout."""
        a = np.asarray(images)
        if self.flip_x:
            a = a[..., ::-1]
        if self.flip_y:
            a = a[..., ::-1, :]
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        return np.ascontiguousarray(a)

    def undo_field(self, field: np.ndarray) -> np.ndarray:
        """Pull-back displacement found on the standard display -> stored layout.

        Parameters
        ----------
        field : ndarray, shape (T, 2, Y', X'), pixels, ``[:, 0]`` = y

        Returns
        -------
        ndarray, shape (T, 2, Y, X)
            The same correction for the stored images: their pixels move by
            the field's vectors re-ordered and re-signed like the axes.
        """
        d = np.array(field, dtype=np.float32, copy=True)
        if self.flip_x:
            d = d[..., ::-1]
            d[:, 1] *= -1.0
        if self.flip_y:
            d = d[..., ::-1, :]
            d[:, 0] *= -1.0
        if self.transpose:
            d = np.swapaxes(d, -1, -2)[:, ::-1]
        return np.ascontiguousarray(d)

    def apply_series(self, series):
        """A :class:`~perfmoco.study.SliceSeries` re-ordered onto the standard display."""
        return series.replace(images=self.apply(series.images),
                              pd_images=self.apply(series.pd_images),
                              pixel_spacing_mm=self.spacing(series.pixel_spacing_mm))

    def undo_result(self, result):
        """A :class:`~perfmoco.moco.result.MocoResult` from the standard display, stored layout."""
        return result._replace(
            corrected=self.undo_images(result.corrected),
            displacement=self.undo_field(result.displacement),
            pd_corrected=self.undo_images(result.pd_corrected),
            pd_displacement=self.undo_field(result.pd_displacement),
        )

    def vector(self, v) -> tuple[float, float]:
        """A ``(y, x)`` vector of the stored image, on the standard display."""
        vy, vx = float(v[0]), float(v[1])
        if self.transpose:
            vy, vx = vx, vy
        return (-vy if self.flip_y else vy), (-vx if self.flip_x else vx)

    def point(self, yx, shape) -> tuple[float, float]:
        """A pixel ``(y, x)`` of a stored image of ``shape (Y, X)``, on the standard display."""
        y, x = float(yx[0]), float(yx[1])
        ny, nx = int(shape[0]), int(shape[1])
        if self.transpose:
            y, x, ny, nx = x, y, nx, ny
        return ((ny - 1) - y if self.flip_y else y), ((nx - 1) - x if self.flip_x else x)

    def spacing(self, pixel_spacing_mm) -> tuple[float, float]:
        """Pixel spacing ``(dy, dx)`` on the standard display."""
        sy, sx = (float(v) for v in pixel_spacing_mm)
        return (sx, sy) if self.transpose else (sy, sx)


def short_axis_axes(geometry: SliceGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Unit read, phase and apex-pointing normal, or None when the orientation is unknown."""
    read = np.asarray(geometry.read_dir, np.float64)
    phase = np.asarray(geometry.phase_dir, np.float64)
    if not (np.isfinite(read).all() and np.isfinite(phase).all()):
        return None
    nr, npf = np.linalg.norm(read), np.linalg.norm(phase)
    if nr < 1e-6 or npf < 1e-6:
        return None
    read, phase = read / nr, phase / npf
    normal = np.cross(read, phase)
    if np.linalg.norm(normal) < 0.5:  # read and phase (nearly) parallel
        return None
    normal /= np.linalg.norm(normal)
    cos = float(normal @ APEX_DIRECTION_LPS)
    if abs(cos) < _MIN_AXIS_COSINE:  # not a short-axis slice (or a default header)
        return None
    return read, phase, normal * np.sign(cos)


def is_mirrored(geometry: SliceGeometry | None) -> bool | None:
    """Whether a slice is stored as the mirror image of the standard short-axis display.

    Returns
    -------
    bool or None
        None when the geometry is missing or the slice is not short-axis.
    """
    ax = None if geometry is None else short_axis_axes(geometry)
    if ax is None:
        return None
    read, phase, apex = ax
    return bool(np.cross(read, phase) @ apex < 0.0)


def canonical_orientation(geometry: SliceGeometry | None) -> Orientation:
    """The re-ordering that shows a stored slice on the standard short-axis display.

    Of the eight transposes / flips, the one whose image axes lie closest to
    the standard display's (down: posterior, right: ``down x apex``).  The
    identity when the geometry is missing or the slice is not short-axis.
    """
    ax = None if geometry is None else short_axis_axes(geometry)
    if ax is None:
        return Orientation()
    read, phase, apex = ax
    ant = _ANTERIOR_LPS - (_ANTERIOR_LPS @ apex) * apex
    if np.linalg.norm(ant) < 1e-3:
        return Orientation()
    down = -ant / np.linalg.norm(ant)
    right = np.cross(down, apex)
    best, best_score = Orientation(), -np.inf
    for tr, fy, fx in itertools.product((False, True), repeat=3):
        y_dir = (read if tr else phase) * (-1.0 if fy else 1.0)
        x_dir = (phase if tr else read) * (-1.0 if fx else 1.0)
        score = float(y_dir @ down + x_dir @ right)
        if score > best_score + 1e-9:
            best, best_score = Orientation(tr, fy, fx), score
    return best


#: Proper rotations by 0, 90, 180 and 270 degrees as re-orderings.
_ROTATIONS = (Orientation(), Orientation(True, True, False), Orientation(False, True, True),
              Orientation(True, False, True))


def orientation_from_anatomy(lv_centre_yx, rv_centre_yx) -> Orientation:
    """The rotation by a multiple of 90 degrees that puts the RV left of the LV.

    For series whose geometry says nothing (:func:`canonical_orientation` gives
    the identity and :func:`is_mirrored` None): on the standard display the
    RV lies to the left of the LV (the septum between them), usually a little
    above; the rotation chosen leaves at most 45 degrees from that, within
    what the networks were trained for.  Never a mirroring: the two blood
    pools cannot tell a mirrored slice.

    Parameters
    ----------
    lv_centre_yx, rv_centre_yx : tuple of 2 float
        Blood-pool centres, pixels of the stored image.

    Returns
    -------
    Orientation
        A proper rotation (``Orientation.proper``); the identity when the two
        centres (nearly) coincide.
    """
    d = np.asarray(rv_centre_yx, np.float64) - np.asarray(lv_centre_yx, np.float64)
    if not np.isfinite(d).all() or np.hypot(*d) < 1.0:
        return Orientation()
    best, best_score = Orientation(), -np.inf
    for o in _ROTATIONS:
        dy, dx = o.vector(d)
        score = -dx / np.hypot(dy, dx)  # cosine to "left"
        if score > best_score + 1e-9:
            best, best_score = o, score
    return best

