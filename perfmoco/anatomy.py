"""Automatic localisation of the heart from the temporal signature of a perfusion series.

Nothing here depends on the intensity scale, the matrix size or the in-plane
orientation of the series: the blood pools are found from *enhancement*
(signal minus the pre-contrast baseline) and from *timing* (the right
ventricle enhances a few beats before the left), with size priors in mm.

Angles and the RV insertion points follow the convention of
:mod:`perfmoco.quant.segments` (see there).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from perfmoco.study import StudyError

__all__ = [
    "BloodPools",
    "find_blood_pools",
    "rv_insertion_points",
    "segment_myocardium",
]

log = logging.getLogger(__name__)

#: Plausible area of the LV blood pool in a short-axis slice (apex .. dilated base), mm^2.
LV_AREA_MM2 = (60.0, 7000.0)
#: Plausible area of the RV blood pool, mm^2.
RV_AREA_MM2 = (30.0, 9000.0)
#: Limits of the LV wall thickness, mm.
MYO_THICKNESS_MM = (3.0, 18.0)
#: Peak enhancement of the blood must exceed this many noise SDs.
MIN_CNR = 8.0


@dataclasses.dataclass(frozen=True)
class BloodPools:
    """Ventricular blood pools of one slice series.

    Attributes
    ----------
    lv_mask, rv_mask : ndarray, shape (Y, X), bool
        LV / RV blood pool at their peak-enhancement frames (``rv_mask`` is
        all False when no RV was found, e.g. in some apical slices).
    lv_centre : tuple of 2 float
        Centroid ``(y, x)`` of ``lv_mask`` in pixels.
    peak_lv_index, peak_rv_index : int
        Dynamic (0-based, PD frames excluded) of peak LV / RV blood signal.
    """

    lv_mask: np.ndarray
    rv_mask: np.ndarray
    lv_centre: tuple[float, float]
    peak_lv_index: int
    peak_rv_index: int


def _spacing(spacing_mm) -> tuple[float, float]:
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
    return float(sp[0]), float(sp[1])


def _check_series(images) -> np.ndarray:
    im = np.asarray(images, dtype=np.float32)
    if im.ndim != 3 or im.shape[0] < 5 or min(im.shape[1:]) < 8:
        raise ValueError(f"images must be (T, Y, X) with T >= 5, got shape {im.shape}")
    if not np.isfinite(im).all():
        raise ValueError("images contain NaN or Inf")
    return im


def _enhancement(im: np.ndarray, sp: tuple[float, float]):
    """Smoothed enhancement ``E`` (T, Y, X), baseline frame count and noise SD."""
    n_base = int(np.clip(im.shape[0] // 10, 2, 5))
    noise = 1.4826 * float(np.median(np.abs(np.diff(im, axis=0)))) / np.sqrt(2.0)
    base = np.median(im[:n_base], axis=0)
    sig = (0.0, max(0.7, 1.5 / sp[0]), max(0.7, 1.5 / sp[1]))
    e = ndimage.gaussian_filter(im - base, sig)
    e -= np.median(e, axis=(1, 2), keepdims=True)  # frame-wide offsets (e.g. mistriggers)
    e = ndimage.uniform_filter1d(e, 3, axis=0, mode="nearest")
    return e, n_base, noise


def _shape_stats(region: np.ndarray, px_area: float):
    """Area (mm^2), fill (area / moment-ellipse area) and elongation of a region."""
    yy, xx = np.nonzero(region)
    area = yy.size * px_area
    if yy.size < 3:
        return area, 0.0, np.inf
    cov = np.cov(np.stack([yy, xx]).astype(np.float64)) + np.eye(2) / 12.0
    ev = np.linalg.eigvalsh(cov)
    fill = yy.size / (4.0 * np.pi * np.sqrt(max(ev[0] * ev[1], 1e-9)))
    return area, float(fill), float(np.sqrt(ev[1] / max(ev[0], 1e-9)))


def _half_time(e: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """First (fractional) frame at which each pixel reaches half its peak."""
    first = np.argmax(e >= 0.5 * peak[None], axis=0)
    prev = np.clip(first - 1, 0, None)
    a = np.take_along_axis(e, prev[None], 0)[0]
    b = np.take_along_axis(e, first[None], 0)[0]
    frac = np.clip((0.5 * peak - a) / np.maximum(b - a, 1e-12), 0.0, 1.0)
    return np.where(first > 0, prev + frac, 0.0)


def _otsu_1d(values: np.ndarray) -> float:
    v = np.sort(values.ravel())
    if v.size < 2 or v[0] == v[-1]:
        return float(v[0]) if v.size else 0.0
    csum, w0 = np.cumsum(v), np.arange(1, v.size)
    w1 = v.size - w0
    score = w0 * w1 * (csum[:-1] / w0 - (csum[-1] - csum[:-1]) / w1) ** 2
    i = int(np.argmax(score))
    return float(0.5 * (v[i] + v[i + 1]))


def _segment_pool(frame, seed, level, *, px_area, area_range, spx):
    """Bright connected region of ``frame`` that best overlaps ``seed``."""
    for frac in (0.5, 0.6, 0.7):
        lab, n = ndimage.label(frame > frac * level)
        if n == 0:
            continue
        overlap = ndimage.sum_labels(seed, lab, index=np.arange(1, n + 1))
        k = int(np.argmax(overlap)) + 1
        if overlap[k - 1] <= 0:
            return None
        region = ndimage.binary_fill_holes(lab == k)
        lab2, n2 = ndimage.label(ndimage.binary_opening(region, _disk(max(1, round(2.0 / spx)))))
        if n2:
            ov2 = ndimage.sum_labels(seed, lab2, index=np.arange(1, n2 + 1))
            if ov2.max() > 0:
                region = lab2 == (int(np.argmax(ov2)) + 1)
        area = region.sum() * px_area
        if area <= area_range[1]:
            return region if area >= area_range[0] else None
    return None


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r + 0.5  # structuring element of radius r


def find_blood_pools(images, *, times_s=None, spacing_mm) -> BloodPools:
    """Find the LV and RV blood pools and their peak frames.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X), float
        Saturation-prepared dynamics of one slice (no PD frames), any scale.
    times_s : ndarray, shape (T,), float, keyword-only, optional
        Acquisition times in s (only checked; timing is counted in frames).
    spacing_mm : float or tuple of 2 float, keyword-only
        Pixel spacing ``(dy, dx)`` in mm, used for the size priors.

    Returns
    -------
    BloodPools

    Raises
    ------
    ValueError
        For arrays of the wrong shape or non-finite values.
    perfmoco.study.StudyError
        When no enhancing, compact LV blood pool can be found (e.g. noise).
    """
    im, sp = _check_series(images), _spacing(spacing_mm)
    if times_s is not None and np.shape(times_s) != (im.shape[0],):
        raise ValueError(f"times_s must have shape ({im.shape[0]},), got {np.shape(times_s)}")
    px_area, spx = sp[0] * sp[1], float(np.sqrt(sp[0] * sp[1]))
    e, n_base, noise = _enhancement(im, sp)
    peak = e.max(axis=0)
    top = float(np.percentile(peak, 99.5))  # robust blood enhancement
    if top <= 0 or top < MIN_CNR * max(noise, 1e-12 * max(float(np.abs(im).max()), 1e-30)):
        raise StudyError(
            f"no LV blood pool found: peak enhancement {top:.3g} is not above the noise "
            f"({noise:.3g}); is there a contrast bolus in this series?"
        )
    cand = peak > 0.45 * top
    if cand.mean() > 0.3:
        raise StudyError("no LV blood pool found: no compact enhancing region (noise-like data)")
    th = _half_time(e, peak)
    # Split the candidate pixels into early (RV) and late (LV, aorta) arrival.
    split = _otsu_1d(th[cand])
    early, late = cand & (th <= split), cand & (th > split)
    sep = (np.median(th[late]) - np.median(th[early])) if early.any() and late.any() else 0.0
    if sep < 1.0:  # no two arrival groups: treat everything as one (LV-like) group
        early, late = np.zeros_like(cand), cand
    lab, n = ndimage.label(late)
    rv_dist = None
    if early.any():  # distance to the main early (RV) region
        lab_e, _ = ndimage.label(early)
        main = lab_e == int(np.argmax(np.bincount(lab_e.ravel())[1:])) + 1
        rv_dist = ndimage.distance_transform_edt(~main, sampling=sp)
    scores, th_k = np.zeros(n + 1), np.full(n + 1, np.inf)
    r_in, r_out = _disk(max(1, round(2.0 / spx))), _disk(max(2, round(9.0 / spx)))
    for k in range(1, n + 1):
        reg = lab == k
        area, fill, elong = _shape_stats(reg, px_area)
        if not (LV_AREA_MM2[0] <= area <= 2 * LV_AREA_MM2[1]) or fill < 0.3 or elong > 4.0:
            continue
        pk = float(peak[reg].mean())
        t_pk = int(np.argmax(e[:, reg].mean(axis=1)))
        ring = ndimage.binary_dilation(reg, r_out) & ~ndimage.binary_dilation(reg, r_in)
        after = e[t_pk + 2 : t_pk + 8]
        ring_enh = float(after[:, ring].mean()) / pk if after.size and ring.any() else 0.0
        # compact, bright, enhancing wall around it (myocardium; the aorta has none)
        scores[k] = pk * min(fill, 1.0) / max(elong, 1.0) * np.sqrt(area)
        scores[k] *= 1.0 + 4.0 * float(np.clip(ring_enh, 0.0, 0.5))
        if rv_dist is not None and float(rv_dist[reg].min()) < 25.0:
            scores[k] *= 3.0  # the LV lies next to the RV; the aorta does not
        th_k[k] = float(np.median(th[reg]))
    if np.isfinite(th_k).any():  # the LV fills before the descending aorta
        scores *= np.exp(-np.clip(th_k - th_k.min(), 0.0, None) / 1.5)
    best = int(np.argmax(scores)) if scores.max() > 0 else 0
    if best == 0:
        raise StudyError("no LV blood pool found: no compact late-enhancing region of LV size")
    seed = lab == best
    peak_lv = int(np.argmax(e[:, seed].mean(axis=1)))
    rseed, peak_rv = None, peak_lv
    if early.any():  # the main early region near the LV seed is the RV
        lab_e, n_e = ndimage.label(early)
        dist_lv = ndimage.distance_transform_edt(~seed, sampling=sp)
        near = [k for k in range(1, n_e + 1) if float(dist_lv[lab_e == k].min()) < 25.0
                and (lab_e == k).sum() * px_area >= RV_AREA_MM2[0]]
        if near:
            rseed = lab_e == near[int(np.argmax([(lab_e == k).sum() for k in near]))]
            peak_rv = int(np.argmax(e[:, rseed].mean(axis=1)))
    frame = e[peak_lv]
    level = float(np.percentile(frame[seed], 90))
    core = seed
    if rseed is not None and peak_rv < peak_lv:
        # bright at the LV peak but not at the RV peak: the LV, wherever motion put it
        diff = frame - e[peak_rv]
        lab_d, n_d = ndimage.label(diff > 0.5 * level)
        if n_d:
            ov = ndimage.sum_labels(seed, lab_d, index=np.arange(1, n_d + 1))
            if ov.max() > 0:
                core = lab_d == int(np.argmax(ov)) + 1
    lv = _segment_pool(frame, core, level, px_area=px_area, area_range=LV_AREA_MM2, spx=spx)
    if lv is None:
        raise StudyError(f"no LV blood pool found at the peak-LV dynamic {peak_lv}")
    centre = tuple(float(c) for c in np.argwhere(lv).mean(axis=0))
    rv = np.zeros_like(lv)
    if rseed is not None:
        fr = e[peak_rv]
        got = _segment_pool(fr, rseed & ~lv, float(np.percentile(fr[rseed], 90)),
                            px_area=px_area, area_range=RV_AREA_MM2, spx=spx)
        if got is not None:
            rv = got & ~lv
    if not rv.any():
        log.info("no RV blood pool found; rv_mask is empty")
    return BloodPools(lv_mask=lv, rv_mask=rv, lv_centre=centre, peak_lv_index=peak_lv,
                      peak_rv_index=peak_rv)


def _circular_median(values, width):  # median filter around the circle
    return ndimage.median_filter(values, size=max(1, width), mode="wrap")


def segment_myocardium(images, pools: BloodPools, *, spacing_mm, n_angles: int = 180):
    """LV myocardium as a ring around the LV blood pool, from its enhancement.

    Along rays from the LV centre the endocardium is the edge of
    ``pools.lv_mask``; the epicardium is where the early post-peak
    enhancement drops below half of the wall's own enhancement (lung, fat,
    chest wall), where another blood pool (RV) starts, or at the thickness
    limits :data:`MYO_THICKNESS_MM`.  Both radii are smoothed around the
    circle, so a perfusion defect (weakly enhancing wall) keeps its thickness.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X), float
        Motion-corrected dynamics of one slice (no PD frames), any scale.
    pools : BloodPools
        Result of :func:`find_blood_pools` on the same series.
    spacing_mm : float or tuple of 2 float, keyword-only
        Pixel spacing ``(dy, dx)`` in mm.
    n_angles : int, keyword-only
        Number of rays.

    Returns
    -------
    ndarray, shape (Y, X), bool
        Myocardium mask (LV and RV blood pools excluded).
    """
    im, sp = _check_series(images), _spacing(spacing_mm)
    if pools.lv_mask.shape != im.shape[1:]:
        raise ValueError(f"pools are {pools.lv_mask.shape}, images are {im.shape[1:]}")
    e, _, _ = _enhancement(im, sp)
    t0 = pools.peak_lv_index
    win = e[min(t0 + 2, im.shape[0] - 1) : min(t0 + 8, im.shape[0])].mean(axis=0)
    blood = e[t0]
    blood_level = float(np.median(blood[pools.lv_mask]))
    (cy, cx), step = pools.lv_centre, 0.5 * min(sp)
    dist_lv = ndimage.distance_transform_edt(~pools.lv_mask, sampling=sp)
    r_lv = float(np.sqrt(pools.lv_mask.sum() * sp[0] * sp[1] / np.pi))
    radii = np.arange(0.0, 2.0 * r_lv + 2 * MYO_THICKNESS_MM[1], step)
    phi = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    # ray sample points in pixels; phi is counter-clockwise on screen (y down)
    coords = np.stack([cy - np.sin(phi)[:, None] * radii[None] / sp[0],
                       cx + np.cos(phi)[:, None] * radii[None] / sp[1]])
    inside_lv = ndimage.map_coordinates(pools.lv_mask.astype(np.float32), coords, order=1) > 0.5
    rv_near = ndimage.map_coordinates((pools.rv_mask).astype(np.float32), coords, order=1) > 0.25
    m = ndimage.map_coordinates(win, coords, order=1, mode="nearest")
    b = ndimage.map_coordinates(blood, coords, order=1, mode="nearest")
    dl = ndimage.map_coordinates(dist_lv, coords, order=1, mode="nearest")
    # endocardium: last sample inside the LV pool along the ray
    idx = np.arange(radii.size)
    r_endo = radii[np.max(np.where(inside_lv, idx, 0), axis=1)] + 0.5 * step
    (lo, hi), r_endo = MYO_THICKNESS_MM, _circular_median(r_endo, n_angles // 12)
    rel = radii[None] - r_endo[:, None]
    ref_zone = (rel > 1.0) & (rel < 4.5) & (dl > 0.5)
    ref = np.nan_to_num(np.nanmedian(np.where(ref_zone, m, np.nan), axis=1))
    glob = float(np.median(ref[ref > 0])) if (ref > 0).any() else 0.0
    ref = np.maximum(ref, 0.3 * glob)
    stop = (rel > lo) & ((m < 0.5 * ref[:, None]) | rv_near | (b > 0.6 * blood_level))
    stop |= rel >= hi
    first = np.argmax(stop, axis=1)
    thick = _circular_median(np.clip(radii[first] - r_endo, lo, hi), n_angles // 8)
    r_epi = r_endo + ndimage.uniform_filter1d(thick, 5, mode="wrap")
    # rasterise: pixel inside the ring if r_endo(phi) < rho <= r_epi(phi)
    yy, xx = np.mgrid[0 : im.shape[1], 0 : im.shape[2]]
    dy, dx = (yy - cy) * sp[0], (xx - cx) * sp[1]
    rho, knots = np.hypot(dy, dx), np.arange(n_angles + 1)
    ang = np.mod(np.arctan2(-dy, dx), 2 * np.pi) / (2 * np.pi) * n_angles
    myo = ((rho > np.interp(ang, knots, np.append(r_endo, r_endo[0])))
           & (rho <= np.interp(ang, knots, np.append(r_epi, r_epi[0])))
           & ~pools.lv_mask & ~pools.rv_mask)
    lab, n = ndimage.label(myo)
    if n > 1:  # keep the ring, drop specks cut off by the RV
        sizes = ndimage.sum_labels(myo, lab, index=np.arange(1, n + 1))
        myo = lab == (int(np.argmax(sizes)) + 1)
    return myo


def rv_insertion_points(myo_mask, rv_mask, lv_centre) -> np.ndarray:
    """Anterior and inferior RV insertion points on the LV epicardium.

    The arc of myocardium that borders the RV blood pool (the septum) is
    found around the LV centre; its two ends are the insertion points.
    Orientation: the series is assumed to be displayed as scanners show a
    short-axis view (not mirrored), so that going counter-clockwise *on
    screen* (y axis pointing down) from the anterior insertion point runs
    along the septum to the inferior one.  Any in-plane rotation is fine.

    Parameters
    ----------
    myo_mask, rv_mask : ndarray, shape (Y, X), bool
        LV myocardium and RV blood pool.
    lv_centre : tuple of 2 float
        ``(y, x)`` of the LV centre, pixels.

    Returns
    -------
    ndarray, shape (2, 2), float64, pixels
        ``[[y_ant, x_ant], [y_inf, x_inf]]``.

    Raises
    ------
    perfmoco.study.StudyError
        When the RV does not border the myocardium (no RV found).
    """
    myo, rv = np.asarray(myo_mask, bool), np.asarray(rv_mask, bool)
    if myo.shape != rv.shape or myo.ndim != 2:
        raise ValueError(f"myo_mask {myo.shape} and rv_mask {rv.shape} must be equal 2-D shapes")
    if not myo.any() or not rv.any():
        raise StudyError("no RV insertion points: empty myocardium or RV mask")
    cy, cx = float(lv_centre[0]), float(lv_centre[1])
    contact = myo & (ndimage.distance_transform_edt(~rv) <= 3.0)
    if contact.sum() < 3:
        raise StudyError("no RV insertion points: the RV does not border the myocardium")
    yy, xx = np.nonzero(contact)
    deg = np.mod(np.degrees(np.arctan2(-(yy - cy), xx - cx)), 360.0)
    hist = np.bincount(deg.astype(int) % 360, minlength=360) > 0
    hist = ndimage.binary_closing(np.tile(hist, 3), structure=np.ones(15))[360:720]
    if hist.all():
        raise StudyError("no RV insertion points: the RV surrounds the myocardium")
    # largest circular run of covered degrees, unrolled to start at an uncovered one
    start = int(np.argmin(hist))
    lab, _ = ndimage.label(np.roll(hist, -start))
    run = np.flatnonzero(lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    a0, a1 = float(run[0] + start), float(run[-1] + start) + 1.0  # anterior = CCW start
    myy, mxx = np.nonzero(myo)
    mang = np.mod(np.degrees(np.arctan2(-(myy - cy), mxx - cx)), 360.0)
    mrad = np.hypot(myy - cy, mxx - cx)
    pts = []
    for a in (a0, a1):
        near = np.abs((mang - a + 180.0) % 360.0 - 180.0) < 6.0
        r = float(np.percentile(mrad[near], 90)) if near.any() else float(np.median(mrad))
        pts.append([cy - r * np.sin(np.radians(a)), cx + r * np.cos(np.radians(a))])
    return np.asarray(pts, dtype=np.float64)
