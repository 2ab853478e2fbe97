"""Bare slice series for offline research use: ``.npy`` ``(T, Y, X)`` and NIfTI.

Such files carry no PD frames or acquisition times.  A NIfTI keeps its pixel
spacing (in the unit its header names), its geometry and time step, which a
corrected NIfTI written after it keeps too (:func:`write_series` with ``like``);
an ``.npy`` has no spacing: :data:`ASSUMED_SPACING_MM` unless one is given.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from perfmoco.io.paths import PIXEL_SPACING_RANGE_MM, check_pixel_spacing, input_file, suffix_of
from perfmoco.study import SliceSeries, StudyError

__all__ = ["ASSUMED_SPACING_MM", "NiftiSource", "load_npy", "read_series",
           "spacing_note", "write_series"]

log = logging.getLogger(__name__)

#: Pixel size (mm) taken for a series whose file gives none: a typical stress perfusion
#: image's (reconstructed pixels of about 1.4-2.5 mm).  The networks see the heart at
#: its size in mm, so a far-off guess (1 mm for 1.8 mm pixels) spoils the correction.
ASSUMED_SPACING_MM = 2.0

#: Factors from a NIfTI header's spatial unit to mm.
_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}


@dataclasses.dataclass(frozen=True)
class NiftiSource:
    """Where a series read from NIfTI came from: its affine and header (geometry, units,
    time step), and whether its volume had a singleton z axis ``(X, Y, 1, T)``.
    """

    affine: np.ndarray
    header: object
    singleton_z: bool
    spacing_assumed: bool = False


def load_npy(path: str | Path) -> np.ndarray:
    """A numeric (or boolean) ``.npy`` array, or a :class:`StudyError` naming the file."""
    path = input_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except EOFError:
        raise StudyError(f"{path}: empty or cut short (not a whole .npy array)") from None
    except (ValueError, OSError) as exc:
        what = ("holds Python objects or is another kind of file" if "pickle" in str(exc)
                else str(exc))
        raise StudyError(f"{path}: not a numeric .npy array ({what})") from None
    if not isinstance(arr, np.ndarray):  # np.load opens an .npz archive as a mapping
        arr.close()
        raise StudyError(f"{path}: an .npz archive of several arrays, not one .npy array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise StudyError(f"{path}: pixels must be numbers, got dtype {arr.dtype}")
    return arr


def _nifti(path: Path, given: float | None):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        vol = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many error types for bad files
        raise StudyError(f"{path}: not a readable NIfTI file ({exc})") from None
    singleton = vol.ndim == 4 and vol.shape[2] == 1
    if singleton:
        vol = vol[:, :, 0, :]
    if vol.ndim != 3:
        raise StudyError(f"{path}: expected a (X, Y, T) or (X, Y, 1, T) series, got shape "
                         f"{vol.shape}")
    unit = img.header.get_xyzt_units()[0]
    zooms = [float(z) for z in img.header.get_zooms()[:2]]
    assumed = False
    if given:
        spacing = (given, given)
    elif unit == "unknown" and zooms == [1.0, 1.0]:  # nothing said: as an .npy's
        spacing, assumed = (ASSUMED_SPACING_MM,) * 2, True
    else:
        dx, dy = (z * _TO_MM.get(unit, 1.0) for z in zooms)
        lo, hi = PIXEL_SPACING_RANGE_MM
        if not all(lo <= v <= hi for v in (dx, dy)):
            raise StudyError(f"{path}: its header gives pixels of {zooms[0]:g} x {zooms[1]:g} "
                             f"{unit if unit != 'unknown' else '(no unit)'}, {dx:g} x {dy:g} mm, "
                             f"outside {lo}-{hi} mm; give the pixel size with --pixel-spacing MM")
        spacing = (dy, dx)
    source = NiftiSource(np.asarray(img.affine, float), img.header.copy(), singleton, assumed)
    return vol.transpose(2, 1, 0), spacing, source  # NIfTI (x, y, t) -> ours (T, Y, X)


def _check_axes(path: Path, arr: np.ndarray, nifti: bool) -> None:
    """Refuse a series whose time axis looks stored in a spatial one's place: read as
    ``(T, Y, X)``, a square image of far fewer dynamics than rows would be many dynamics of
    a narrow image (a ``(Y, X, T)`` array; a NIfTI volume stored ``(T, Y, X)``).
    """
    t, y, x = arr.shape
    if t == y and x <= 0.7 * t:  # (a series of as many dynamics as rows, 128 x 96: let be)
        stored = arr.shape[::-1] if nifti else arr.shape
        want = "NIfTI series are (X, Y, T) or (X, Y, 1, T)" if nifti else (
            "store it as (T, Y, X), e.g. numpy.moveaxis(a, -1, 0)")
        raise StudyError(f"{path}: shape {stored} reads as {t} dynamics of a {y} x {x} image; "
                         f"it looks like a {y} x {t} image of {x} dynamics stored with its axes "
                         f"in another order: {want}")


def read_series(
    path: str | Path, *, pixel_spacing_mm: float | None = None, frame_interval_s: float = 1.0,
    notes: list[str] | None = None,
) -> SliceSeries:
    """A bare slice series from ``.npy`` ``(T, Y, X)`` or NIfTI ``(X, Y[, 1], T)``.

    Dynamics are taken ``frame_interval_s`` apart.  Pixel spacing: ``pixel_spacing_mm``
    where given, else a NIfTI header's (converted to mm from its unit; refused when out
    of range), else :data:`ASSUMED_SPACING_MM`, said (:func:`spacing_note`) in
    ``notes`` where given (a study's notes), else as a logged warning.
    """
    path = input_file(path)
    pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
    suffix = suffix_of(path)
    source = None
    if suffix == ".npy":
        arr = load_npy(path)
        spacing = (pixel_spacing_mm or ASSUMED_SPACING_MM,) * 2
        assumed = pixel_spacing_mm is None
    elif suffix in (".nii", ".nii.gz"):
        arr, spacing, source = _nifti(path, pixel_spacing_mm)
        assumed = source.spacing_assumed
    else:
        raise StudyError(f"{path}: unknown series format {suffix!r} (use .npy, .nii, .nii.gz)")
    if arr.ndim != 3:
        raise StudyError(f"{path}: expected a (T, Y, X) series, got shape {arr.shape}")
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    if not np.issubdtype(arr.dtype, np.number):
        raise StudyError(f"{path}: pixels must be numbers, got dtype {arr.dtype}")
    _check_axes(path, arr, nifti=suffix != ".npy")
    if assumed and notes is not None:
        notes.append(spacing_note(path))
    elif assumed:
        log.warning("%s", spacing_note(path))
    times = np.arange(arr.shape[0]) * frame_interval_s
    return SliceSeries(images=arr, times_s=times, pixel_spacing_mm=spacing, source=source)


def spacing_note(path: str | Path) -> str:
    """What is said where a series file gives no pixel spacing."""
    return (f"{Path(path).name}: no pixel spacing given; {ASSUMED_SPACING_MM:g} mm assumed "
            "(a typical perfusion pixel; give the true one with --pixel-spacing MM: the "
            "correction sees the heart at its size in mm)")


def write_series(path: str | Path, images: np.ndarray, *, pixel_spacing_mm=(1.0, 1.0),
                 like: object = None) -> None:
    """Write a ``(T, Y, X)`` (or ``(T, 2, Y, X)`` for ``.npy``) array as npy or NIfTI.

    ``like``: the :class:`NiftiSource` of the series read: a NIfTI output keeps its
    geometry (affine), units, time step and axis layout; float32 pixels.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix_of(path)
    images = np.asarray(images, dtype=np.float32)
    if suffix == ".npy":
        np.save(path, images)
    elif suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        if images.ndim != 3:
            raise StudyError(f"{path}: NIfTI output needs a (T, Y, X) array, got {images.shape}")
        vol = images.transpose(2, 1, 0)  # ours (T, Y, X) -> NIfTI (x, y, t)
        if isinstance(like, NiftiSource):
            if like.singleton_z:
                vol = vol[:, :, None, :]
            header = like.header.copy()
            header.set_data_dtype(np.float32)
            header["scl_slope"], header["scl_inter"] = 1.0, 0.0  # pixels as written
            nib.save(nib.Nifti1Image(vol, like.affine, header=header), str(path))
        else:
            dy, dx = pixel_spacing_mm
            img = nib.Nifti1Image(vol, np.diag([dx, dy, 1.0, 1.0]))
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, str(path))
    else:
        raise StudyError(f"{path}: unknown output format {suffix!r} (use .npy, .nii, .nii.gz)")
