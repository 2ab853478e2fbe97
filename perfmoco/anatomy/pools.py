"""LV and RV blood pools and their peak frames, from enhancement and arrival time."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from perfmoco.anatomy._common import check_series, enhancement, spacing_pair
from perfmoco.study import StudyError

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
    im, sp = check_series(images), spacing_pair(spacing_mm)
    if times_s is not None and np.shape(times_s) != (im.shape[0],):
        raise ValueError(f"times_s must have shape ({im.shape[0]},), got {np.shape(times_s)}")
    px_area, spx = sp[0] * sp[1], float(np.sqrt(sp[0] * sp[1]))
    e, n_base, noise = enhancement(im, sp)
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
