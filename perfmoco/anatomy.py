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
]

log = logging.getLogger(__name__)

#: Plausible area of the LV blood pool in one short-axis slice, mm^2
#: (apex at end-systole .. dilated base).
LV_AREA_MM2 = (60.0, 7000.0)
#: Plausible area of the RV blood pool, mm^2.
RV_AREA_MM2 = (30.0, 9000.0)
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
    t = im.shape[0]
    n_base = int(np.clip(t // 10, 2, 5))
    diffs = np.abs(np.diff(im, axis=0))
    noise = 1.4826 * float(np.median(diffs)) / np.sqrt(2.0)
    base = np.median(im[:n_base], axis=0)
    sig = (0.0, max(0.7, 1.5 / sp[0]), max(0.7, 1.5 / sp[1]))
    e = ndimage.gaussian_filter(im - base, sig)
    e = ndimage.uniform_filter1d(e, 3, axis=0, mode="nearest")
    return e, n_base, noise


def _components(mask: np.ndarray):
    lab, n = ndimage.label(mask)
    return lab, n


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
    above = e >= 0.5 * peak[None]
    first = np.argmax(above, axis=0)
    prev = np.clip(first - 1, 0, None)
    a = np.take_along_axis(e, prev[None], 0)[0]
    b = np.take_along_axis(e, first[None], 0)[0]
    frac = np.clip((0.5 * peak - a) / np.maximum(b - a, 1e-12), 0.0, 1.0)
    return np.where(first > 0, prev + frac, 0.0)


def _otsu_1d(values: np.ndarray) -> float:
    v = np.sort(values.ravel())
    if v.size < 2 or v[0] == v[-1]:
        return float(v[0]) if v.size else 0.0
    csum = np.cumsum(v)
    n = np.arange(1, v.size)
    w0, w1 = n, v.size - n
    m0 = csum[:-1] / w0
    m1 = (csum[-1] - csum[:-1]) / w1
    score = w0 * w1 * (m0 - m1) ** 2
    i = int(np.argmax(score))
    return float(0.5 * (v[i] + v[i + 1]))


def _segment_pool(frame, seed, level, *, px_area, area_range, spx):
    """Bright connected region of ``frame`` that best overlaps ``seed``."""
    for frac in (0.5, 0.6, 0.7):
        lab, n = _components(frame > frac * level)
        if n == 0:
            continue
        overlap = ndimage.sum_labels(seed, lab, index=np.arange(1, n + 1))
        k = int(np.argmax(overlap)) + 1
        if overlap[k - 1] <= 0:
            return None
        region = ndimage.binary_fill_holes(lab == k)
        r = max(1, int(round(2.0 / spx)))
        opened = ndimage.binary_opening(region, structure=_disk(r))
        lab2, n2 = _components(opened)
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
    return (yy * yy + xx * xx) <= r * r + 0.5


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
    im = _check_series(images)
    sp = _spacing(spacing_mm)
    if times_s is not None and np.shape(times_s) != (im.shape[0],):
        raise ValueError(f"times_s must have shape ({im.shape[0]},), got {np.shape(times_s)}")
    px_area = sp[0] * sp[1]
    spx = float(np.sqrt(px_area))
    e, n_base, noise = _enhancement(im, sp)
    peak = e.max(axis=0)
    top = float(np.percentile(peak, 99.5))
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
    early = cand & (th <= split)
    late = cand & (th > split)
    sep = (np.median(th[late]) - np.median(th[early])) if early.any() and late.any() else 0.0
    if sep < 1.0:  # no two arrival groups: treat everything as one (LV-like) group
        early = np.zeros_like(cand)
        late = cand
    lab, n = _components(late)
    best, best_score = 0, 0.0
    early_dist = ndimage.distance_transform_edt(~early, sampling=sp) if early.any() else None
    for k in range(1, n + 1):
        reg = lab == k
        area, fill, elong = _shape_stats(reg, px_area)
        if not (LV_AREA_MM2[0] <= area <= 2 * LV_AREA_MM2[1]) or fill < 0.3 or elong > 4.0:
            continue
        score = float(peak[reg].mean()) * min(fill, 1.0) / max(elong, 1.0) * np.sqrt(area)
        if early_dist is not None and float(early_dist[reg].min()) < 25.0:
            score *= 3.0  # the LV lies next to the RV; the aorta does not
        if score > best_score:
            best, best_score = k, score
    if best == 0:
        raise StudyError("no LV blood pool found: no compact late-enhancing region of LV size")
    seed = lab == best
    curve = e[:, seed].mean(axis=1)
    peak_lv = int(np.argmax(curve))
    frame = e[peak_lv]
    level = float(np.percentile(frame[seed], 90))
    lv = _segment_pool(frame, seed, level, px_area=px_area, area_range=LV_AREA_MM2, spx=spx)
    if lv is None:
        raise StudyError(f"no LV blood pool found at the peak-LV dynamic {peak_lv}")
    yy, xx = np.nonzero(lv)
    centre = (float(yy.mean()), float(xx.mean()))
    rv = np.zeros_like(lv)
    peak_rv = peak_lv
    if early.any():
        lab_e, n_e = _components(early)
        dist_lv = ndimage.distance_transform_edt(~seed, sampling=sp)
        near = [
            k
            for k in range(1, n_e + 1)
            if float(dist_lv[lab_e == k].min()) < 25.0
            and (lab_e == k).sum() * px_area >= RV_AREA_MM2[0]
        ]
        if near:
            sizes = [(lab_e == k).sum() for k in near]
            rseed = lab_e == near[int(np.argmax(sizes))]
            peak_rv = int(np.argmax(e[:, rseed].mean(axis=1)))
            fr = e[peak_rv]
            lvl = float(np.percentile(fr[rseed], 90))
            got = _segment_pool(fr, rseed & ~lv, lvl, px_area=px_area,
                                area_range=RV_AREA_MM2, spx=spx)
            if got is not None:
                rv = got & ~lv
    if not rv.any():
        log.info("no RV blood pool found; rv_mask is empty")
    return BloodPools(lv_mask=lv, rv_mask=rv, lv_centre=centre, peak_lv_index=peak_lv,
                      peak_rv_index=peak_rv)
