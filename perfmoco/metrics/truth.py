"""Ground-truth metrics: what the phantom knows and the paper could not measure."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from perfmoco.metrics._common import _as_series, compose_displacement, dice, warp_series

__all__ = [
    "MbfError",
    "dice_all_dynamics",
    "displacement_error_mm",
    "lv_centroid_residual_mm",
    "mbf_error",
    "pd_residual_mm",
    "true_masks_corrected",
]


def true_masks_corrected(motion_free_mask, estimated, true) -> np.ndarray:
    """Each dynamic's true mask in the corrected frame, resampled once from the anatomy.

    Warping the phantom's per-frame masks (already binarised at their moved
    position) by the correction resamples a binary raster a second time: a
    ring 2-5 pixels thick then loses or gains a boundary layer depending on
    the fractional part of each frame's shift, and even a perfect correction to
    the reference frame scores a Dice of only 0.90-0.95 (model card, "How the
    masks are scored").  Here the motion-free mask is carried through the
    composed field ``r = estimated + true o (id + estimated)``
    (:func:`compose_displacement`) in one linear resampling, the way the
    phantom renders its own masks (``warp(motion_free, true) > 0.5``): with no
    correction it gives the phantom's masks, and any two frames that the
    correction aligns give the same mask.

    Parameters
    ----------
    motion_free_mask : ndarray, shape (Y, X), bool
        The structure in the motion-free frame (e.g. ``labels == myocardium``).
    estimated : ndarray, shape (T, 2, Y, X), pixels, or None
        Correction field (pull-back); None = no correction.
    true : ndarray, shape (T, 2, Y, X), pixels
        True motion field: ``original[t](p) = motion_free[t](p + true[t](p))``.

    Returns
    -------
    ndarray, shape (T, Y, X), float64
        Soft masks in 0..1 (linear interpolation); ``> 0.5`` gives binary masks.
    """
    mf = _as_series(motion_free_mask, "motion_free_mask", ndim=2).astype(np.float64)
    r = np.asarray(true, np.float64) if estimated is None else compose_displacement(estimated, true)
    if r.ndim != 4 or r.shape[2:] != mf.shape:
        raise ValueError(f"fields of shape {r.shape} do not fit a mask of shape {mf.shape}")
    return warp_series(np.broadcast_to(mf, (r.shape[0], *mf.shape)), r)


def dice_all_dynamics(true_masks, displacement=None, *, reference_mask=None) -> float:
    """Mean Dice over all dynamics of the true masks moved by the correction.

    Parameters
    ----------
    true_masks : ndarray, shape (T, Y, X), bool
        True myocardium of each (uncorrected) dynamic.
    displacement : ndarray, shape (T, 2, Y, X), pixels, optional
        Correction field (pull-back); the masks are warped linearly and
        thresholded at 0.5.  ``None`` = no correction.
    reference_mask : ndarray, shape (Y, X), bool, keyword-only, optional
        Mask every warped frame is compared with (e.g. the warped true mask
        of the reference dynamic).  ``None``: the mean over all pairs of
        dynamics, which needs no reference.

    Returns
    -------
    float
        Mean Dice, 0..1.
    """
    m = _as_series(true_masks, "true_masks").astype(bool)
    if displacement is not None:
        m = warp_series(m, displacement) >= 0.5
    if reference_mask is not None:
        ref = np.asarray(reference_mask, dtype=bool)
        return float(np.mean([dice(f, ref) for f in m]))
    flat = m.reshape(m.shape[0], -1).astype(np.float64)
    inter = flat @ flat.T  # (T, T) overlap counts
    size = flat.sum(axis=1)
    denom = size[:, None] + size[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(denom > 0, 2.0 * inter / denom, 1.0)
    iu = np.triu_indices(m.shape[0], k=1)
    return float(d[iu].mean())


def lv_centroid_residual_mm(
    true_masks,
    displacement=None,
    *,
    spacing_mm: tuple[float, float],
    reference_index: int | None = None,
) -> np.ndarray:
    """Distance of each corrected dynamic's LV centroid from the reference, in mm.

    The centroid of the true myocardium (a ring around the LV, so its
    centroid is the LV centre) is computed on each mask after warping it
    with the correction.

    Parameters
    ----------
    true_masks : ndarray, shape (T, Y, X), bool
        True myocardium of each (uncorrected) dynamic.
    displacement : ndarray, shape (T, 2, Y, X), pixels, optional
        Correction field; ``None`` = no correction.
    spacing_mm : tuple of 2 float, keyword-only
        Pixel size ``(dy, dx)`` in mm.
    reference_index : int, keyword-only, optional
        Residuals are measured from this dynamic's centroid; ``None``: from
        the median centroid over all dynamics.

    Returns
    -------
    ndarray, shape (T,), float64, mm
        NaN for dynamics whose warped mask is empty.
    """
    m = _as_series(true_masks, "true_masks").astype(np.float64)
    if displacement is not None:
        m = warp_series(m, displacement)
    yy, xx = np.mgrid[0 : m.shape[1], 0 : m.shape[2]]
    w = m.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (m * yy).sum(axis=(1, 2)) / w
        cx = (m * xx).sum(axis=(1, 2)) / w
    if reference_index is None:
        ry, rx = np.nanmedian(cy), np.nanmedian(cx)
    else:
        if not 0 <= reference_index < m.shape[0]:
            raise ValueError(
                f"reference_index must be in 0..{m.shape[0] - 1}, got {reference_index}"
            )
        ry, rx = cy[reference_index], cx[reference_index]
    dy, dx = (float(s) for s in spacing_mm)
    return np.hypot((cy - ry) * dy, (cx - rx) * dx)


def displacement_error_mm(
    estimated,
    true,
    mask,
    *,
    spacing_mm: tuple[float, float],
    reference_index: int | None = None,
) -> float:
    """Mean residual displacement in the myocardium after correction, in mm.

    The corrected series is ``motion_free o (id + r)`` with ``r`` from
    :func:`compose_displacement`.  A correction aligns every dynamic to a
    common position, not necessarily the motion-free one, so the error of
    dynamic ``t`` at pixel ``p`` is ``|r_t(p) - r_ref(p)|`` where ``r_ref``
    is the composed field of the reference dynamic (or, with
    ``reference_index=None``, the pixel-wise mean of ``r`` over dynamics).

    Parameters
    ----------
    estimated : ndarray, shape (T, 2, Y, X), pixels
        Correction field (pull-back, DESIGN.md convention).
    true : ndarray, shape (T, 2, Y, X), pixels
        True motion field: ``original[t](p) = motion_free[t](p + true[t](p))``.
    mask : ndarray, shape (Y, X), bool
        Pixels (in the corrected frame) averaged over, e.g. the myocardium.
    spacing_mm : tuple of 2 float, keyword-only
        Pixel size ``(dy, dx)`` in mm.
    reference_index : int, keyword-only, optional

    Returns
    -------
    float
        Mean Euclidean error over mask pixels and dynamics, mm.
    """
    r = compose_displacement(estimated, true)
    m = _as_series(mask, "mask", ndim=2).astype(bool)
    if m.shape != r.shape[2:]:
        raise ValueError(f"mask is {m.shape}, displacements are {r.shape[2:]}")
    if not m.any():
        warnings.warn("displacement_error_mm: empty mask; returning NaN", stacklevel=2)
        return float("nan")
    if reference_index is None:
        ref = r.mean(axis=0)
    else:
        if not 0 <= reference_index < r.shape[0]:
            raise ValueError(
                f"reference_index must be in 0..{r.shape[0] - 1}, got {reference_index}"
            )
        ref = r[reference_index]
    err = r - ref[None]
    dy, dx = (float(s) for s in spacing_mm)
    mag = np.hypot(err[:, 0] * dy, err[:, 1] * dx)  # (T, Y, X) mm
    return float(mag[:, m].mean())


def pd_residual_mm(pd_estimated, pd_true, ref_estimated, ref_true, point_yx, *,
                   spacing_mm: tuple[float, float]) -> np.ndarray:
    """How far each corrected PD frame lies from the reference dynamic at a point, mm.

    As :func:`displacement_error_mm`, with the PD frames' own correction and true
    motion: ``|r_p(point) - r_ref(point)|`` for each PD frame ``p``, where ``r``
    composes correction and true motion (:func:`compose_displacement`).

    Parameters
    ----------
    pd_estimated, pd_true : ndarray, shape (P, 2, Y, X), pixels
        The PD frames' correction field and true motion field.
    ref_estimated, ref_true : ndarray, shape (2, Y, X), pixels
        The reference dynamic's.
    point_yx : tuple of 2 float
        Where (corrected frame, pixels), e.g. the reference myocardium's centroid.
    spacing_mm : tuple of 2 float, keyword-only

    Returns
    -------
    ndarray, shape (P,), mm
    """
    y, x = (int(round(float(v))) for v in point_yx)
    r = compose_displacement(pd_estimated, pd_true)[:, :, y, x]
    r_ref = compose_displacement(np.asarray(ref_estimated)[None], np.asarray(ref_true)[None])
    err = r - r_ref[0][:, y, x]
    dy, dx = (float(v) for v in spacing_mm)
    return np.hypot(err[:, 0] * dy, err[:, 1] * dx)


class MbfError(NamedTuple):
    """Pixel-wise MBF error against the true map, ml/min/g."""

    mean_abs: float  #: mean |estimated - true|
    bias: float  #: mean (estimated - true)
    rmse: float  #: root mean square error
    n_pixels: int  #: finite pixels compared


def mbf_error(mbf_map, true_mbf, mask) -> MbfError:
    """Compare an MBF map with the true map on the same grid.

    Parameters
    ----------
    mbf_map : ndarray, shape (Y, X), float, ml/min/g
        Estimated MBF; NaN pixels are left out.
    true_mbf : ndarray, shape (Y, X), float, ml/min/g
        True MBF moved into the frame of ``mbf_map`` (the caller aligns them,
        e.g. with the composed field of the reference dynamic).
    mask : ndarray, shape (Y, X), bool
        Pixels compared (e.g. the true myocardium in that frame).

    Returns
    -------
    MbfError
        NaNs (with a warning) when no pixel can be compared.
    """
    est = _as_series(mbf_map, "mbf_map", ndim=2).astype(np.float64)
    tru = _as_series(true_mbf, "true_mbf", ndim=2).astype(np.float64)
    m = _as_series(mask, "mask", ndim=2).astype(bool)
    if not est.shape == tru.shape == m.shape:
        raise ValueError(
            f"shapes differ: mbf_map {est.shape}, true_mbf {tru.shape}, mask {m.shape}"
        )
    sel = m & np.isfinite(est) & np.isfinite(tru)
    if not sel.any():
        warnings.warn("mbf_error: no finite pixel to compare; returning NaN", stacklevel=2)
        return MbfError(float("nan"), float("nan"), float("nan"), 0)
    diff = est[sel] - tru[sel]
    return MbfError(
        float(np.abs(diff).mean()), float(diff.mean()), float(np.sqrt((diff**2).mean())),
        int(sel.sum()),
    )
