"""LV and RV blood pools and their peak frames, from enhancement and arrival time."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage, sparse

from perfmoco.anatomy._common import check_series, enhancement, spacing_pair
from perfmoco.anatomy.poolgrow import disk, grow_pool, grow_rv, pool_cavity
from perfmoco.study import StudyError

log = logging.getLogger(__name__)

#: Plausible area of the LV blood pool in a short-axis slice (apex .. dilated base), mm^2.
LV_AREA_MM2 = (60.0, 7000.0)
#: Plausible area of the RV blood pool, mm^2.
RV_AREA_MM2 = (30.0, 9000.0)
#: Limits of the LV wall thickness, mm.  Hypertrophied walls reach 20-30 mm (the upper
#: limit was 18: phantoms with 2.5x the usual wall, ~25 mm, kept 0.77 of it, their AHA
#: labels 89 %, a segment 1.0 ml/min/g off; 28: 0.96, 95 %, 0.18; the usual walls, thin
#: ones and breathing studies after the DL correction unchanged to the digit).
MYO_THICKNESS_MM = (3.0, 28.0)
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
    lv_cavity : ndarray, shape (Y, X), bool, optional
        ``lv_mask`` cut to :data:`perfmoco.anatomy.poolgrow.POOL_MARGIN_MM` beyond
        the blood-wall contrast edge (:func:`perfmoco.anatomy.poolgrow.pool_cavity`):
        where the wall enhances to about half the blood's (stress, the surface
        coil, small hearts) ``lv_mask`` takes it in.  The myocardial ring starts
        at its edge; ``lv_mask``, a pixel or more wider, keeps the core pixels
        and the delay fit off the blood.  None: ``lv_mask``.
    """

    lv_mask: np.ndarray
    rv_mask: np.ndarray
    lv_centre: tuple[float, float]
    peak_lv_index: int
    peak_rv_index: int
    lv_cavity: np.ndarray | None = None


def find_blood_pools(images, *, times_s=None, spacing_mm, near_yx=None,
                     near_mm: float = 25.0) -> BloodPools:
    """Find the LV and RV blood pools and their peak frames.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X), float
        Saturation-prepared dynamics of one slice (no PD frames), any scale.
    times_s : ndarray, shape (T,), float, keyword-only, optional
        Acquisition times in s: a series sampled more coarsely than one frame every
        :data:`TUNED_FRAME_S` has its timing rules kept in seconds (default: frames).
    spacing_mm : float or tuple of 2 float, keyword-only
        Pixel spacing ``(dy, dx)`` in mm, used for the size priors.
    near_yx : tuple of 2 float, keyword-only, optional
        Where the LV is expected (pixels, e.g. from the other slices of the
        stack): only candidates centred within ``near_mm`` of it are taken.
    near_mm : float, keyword-only

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
    spx = float(np.sqrt(sp[0] * sp[1]))
    e, _, noise = enhancement(im, sp)
    peak = e.max(axis=0)
    top = float(np.percentile(peak, 99.5))  # robust blood enhancement
    if top <= 0 or top < MIN_CNR * max(noise, 1e-12 * max(float(np.abs(im).max()), 1e-30)):
        raise StudyError(
            f"no LV blood pool found: peak enhancement {top:.3g} is not above the noise "
            f"({noise:.3g}); is there a contrast bolus in this series?"
        )
    if (peak > 0.45 * top).mean() > 0.3:
        raise StudyError("no LV blood pool found: no compact enhancing region (noise-like data)")
    # the search runs at ~3.6 mm pixels (a sixth of the work at 1.8 mm); masks are refined after
    f = max(1, int(round(DETECT_PIXEL_MM / min(sp))))
    e_lo, sp_lo = _block_mean(e, f), (sp[0] * f, sp[1] * f)
    comps = _frame_components(e_lo, top, sp_lo[0] * sp_lo[1], _pace(times_s))
    near = None
    if near_yx is not None:  # in the coarse grid's mm: block i covers pixels f i .. f i + f - 1
        near = ((np.asarray(near_yx, np.float64) - (f - 1) / 2.0) / f * np.asarray(sp_lo),
                float(near_mm))
    best = _choose_lv(comps, e_lo, sp_lo, near)
    if best is None:
        raise StudyError("no LV blood pool found: no compact enhancing region of LV size "
                         "with an enhancing wall")
    lvc = comps[best]
    peak_lv = lvc.frame
    seed = _upsample(lvc.mask, f, e.shape[1:])
    lv = grow_pool(e[peak_lv], seed, spx)
    cavity = pool_cavity(e[peak_lv], seed, lv, spx)
    rv, peak_rv = np.zeros_like(lv), peak_lv
    rvc = _choose_rv(best, comps, sp_lo)
    if rvc is not None:
        peak_rv = int(np.argmax(rvc.curve))
        rv = grow_rv(e, rvc.frame, peak_rv, _upsample(rvc.mask, f, e.shape[1:]), lv, spx)
    else:
        log.info("no RV blood pool found; rv_mask is empty")
    centre = tuple(float(c) for c in np.argwhere(lv).mean(axis=0))
    return BloodPools(lv_mask=lv, rv_mask=rv, lv_centre=centre, peak_lv_index=peak_lv,
                      peak_rv_index=peak_rv, lv_cavity=cavity)


def _block_mean(e: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f`` x ``f`` pixel blocks of every frame (edge-padded)."""
    if f == 1:
        return e
    n_t, ny, nx = e.shape
    by, bx = -(-ny // f), -(-nx // f)
    ep = np.pad(e, ((0, 0), (0, by * f - ny), (0, bx * f - nx)), mode="edge")
    return ep.reshape(n_t, by, f, bx, f).mean(axis=(2, 4))


def _upsample(mask: np.ndarray, f: int, shape) -> np.ndarray:
    """A block-grid mask back on the pixel grid of ``shape``."""
    return np.repeat(np.repeat(mask, f, axis=0), f, axis=1)[: shape[0], : shape[1]]


def _shape_stats_all(region, yy, xx, n_regions: int, px_area: float) -> list:
    """Area (mm^2), fill (area / moment-ellipse area) and elongation of every region.

    ``(y, x)``: the regions' pixels (``region``: each one's region, ``0 ..
    n_regions - 1``); the moment ellipse from the pixels' covariance (plus a
    pixel's own, 1/12); fewer than 3 pixels: fill 0, elongation infinite.  The
    moments by ``np.bincount`` and the 2 x 2 eigenvalues in closed form: one pass
    instead of a covariance and an eigensolver per region (a thousand regions a study).
    """
    y, x = yy.astype(np.float64), xx.astype(np.float64)

    def total(w=None):
        return np.bincount(region, weights=w, minlength=n_regions)

    n = total()
    m = np.maximum(n, 1.0)
    sy, sx = total(y), total(x)
    dof = np.maximum(n - 1.0, 1.0)
    cyy = (total(y * y) - sy * sy / m) / dof + 1.0 / 12.0
    cxx = (total(x * x) - sx * sx / m) / dof + 1.0 / 12.0
    cxy = (total(y * x) - sy * sx / m) / dof
    half_tr, root = 0.5 * (cyy + cxx), np.sqrt(0.25 * (cyy - cxx) ** 2 + cxy * cxy)
    lo, hi = half_tr - root, half_tr + root
    fill = n / (4.0 * np.pi * np.sqrt(np.maximum(lo * hi, 1e-9)))
    elong = np.sqrt(hi / np.maximum(lo, 1e-9))
    small = n < 3
    return [(float(a) * px_area, 0.0 if s else float(f), np.inf if s else float(e))
            for a, f, e, s in zip(n, fill, elong, small)]


def _half_time(curve: np.ndarray) -> float:
    """First (fractional) index at which ``curve`` reaches half its maximum."""
    half = 0.5 * float(curve.max())
    i = int(np.argmax(curve >= half))
    if i == 0:
        return 0.0
    a, b = float(curve[i - 1]), float(curve[i])
    return i - 1 + float(np.clip((half - a) / max(b - a, 1e-12), 0.0, 1.0))


@dataclasses.dataclass
class _Component:
    """A bright connected region of one frame."""

    frame: int
    mask: np.ndarray
    curve: np.ndarray  # mean enhancement over the region, every frame
    area: float
    fill: float
    elong: float
    arrival: float  # half-peak time of ``curve``, in frames of the tuned pace (:func:`_pace`)
    candidate: bool  # at a candidate level, ``frame`` within one of the peak of ``curve``
    ring: float = 0.0  # wall enhancement after the peak, relative to the peak
    holds_later: bool | None = None  # :func:`_holds_later_pool`, once computed


#: The timing rules below count frames as tuned on series of one frame every 0.5-0.6 s
#: (stress heart rates). A series sampled more coarsely (a slow heart, every other
#: beat) counts its arrival times in frames of this many seconds, so a pulmonary
#: transit or the aorta's lag keeps its length in seconds; finer series as they are.
TUNED_FRAME_S = 0.65


def _pace(times_s) -> float:
    """Factor from a series' frames to the frames the timing rules count (>= 1)."""
    if times_s is None or len(times_s) < 2:
        return 1.0
    dt = float(np.median(np.diff(np.asarray(times_s, np.float64))))
    return max(1.0, dt / TUNED_FRAME_S) if np.isfinite(dt) and dt > 0 else 1.0


#: The pools are searched for at about this pixel size, mm (finer series are block-averaged).
DETECT_PIXEL_MM = 3.6
#: Each frame is thresholded at these fractions of the brightest blood enhancement.
LEVELS = (0.45, 0.6, 0.75)
#: A lower level at which RV-like neighbours are also looked for (never LV candidates).
NEIGHBOUR_LEVEL = 0.25
#: An RV fills at least this many frames (half-peak arrival) before the LV.
MIN_LEAD_FRAMES = 0.7
#: An LV candidate whose earlier neighbour leads it by at least this many frames (a
#: pulmonary transit) is preferred to one that fills just after its neighbour.
TRANSIT_FRAMES = 2.0
#: Only this many LV candidates (best shape and brightness first) are examined closely.
MAX_CANDIDATES = 12
#: Later-filling LV candidates are down-weighted by exp(-delay / this), frames.
ARRIVAL_SCALE_FRAMES = 3.0
#: RV neighbours are looked for in the LV candidate's frame and this many before it.
NEIGHBOUR_FRAMES = 4
#: The RV blood pool lies within this distance (mm) of the LV blood pool.
RV_LV_GAP_MM = 25.0
#: An RV's curve peaks at least this many frames before the LV's (the pulmonary transit:
#: 3-8 s; a region peaking with the LV is the RV run together with the aorta or the wall).
RV_PEAK_LEAD_FRAMES = 2


def _frame_components(e, top, px_area, pace: float = 1.0):
    """Bright regions of every frame in which the blood is bright.

    Regions are taken frame by frame, not from the peak-enhancement map:
    breathing smears that map so that the RV, the LV and the aorta run
    together in it, while each single frame is sharp.  Each region's own
    mean curve gives its arrival time, which is robust to where breathing
    moves individual pixels.
    """
    n_t, ny, nx = e.shape
    # region curves from 2x2-block means: a quarter of the work, the same curves within noise
    x2 = (nx + 1) // 2
    blocks = _block_mean(e, 2).reshape(n_t, -1)
    block_t = np.ascontiguousarray(blocks.T, dtype=np.float32)  # (blocks, T)
    n_blocks = block_t.shape[0]
    block_of = ((np.arange(ny) // 2)[:, None] * x2 + (np.arange(nx) // 2)[None]).ravel()
    bright = np.flatnonzero(np.percentile(blocks, 99.5, axis=1) > LEVELS[0] * top)
    out = []
    for t in bright:
        for lev in (NEIGHBOUR_LEVEL, *LEVELS):
            lab, n = ndimage.label(e[t] > lev * top)
            if n == 0:
                continue
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            keep = np.flatnonzero(sizes[1:] * px_area >= RV_AREA_MM2[0]) + 1
            if keep.size == 0:
                continue
            idx = np.zeros(n + 1, dtype=np.int64)
            idx[keep] = np.arange(1, keep.size + 1)
            sub = idx[lab].ravel()
            pix = np.flatnonzero(sub)
            region = sub[pix] - 1
            # pixels per (region, block) as a sparse matrix: its product with the block
            # curves runs on one thread (a dense product went to the BLAS's thread pool,
            # which, with torch's threads busy beside it, took seconds a slice)
            counts = sparse.csr_matrix((np.ones(pix.size, np.float32), (region, block_of[pix])),
                                       shape=(keep.size, n_blocks))
            curves = (counts @ block_t).T / sizes[keep][None]  # (T, regions) mean curves
            shapes = _shape_stats_all(region, pix // nx, pix % nx, keep.size, px_area)
            for j, k in enumerate(keep):
                curve = curves[:, j]
                mask = lab == k
                area, fill, elong = shapes[j]
                at_peak = abs(int(np.argmax(curve)) - t) <= 1
                out.append(_Component(int(t), mask, curve, area, fill, elong,
                                      pace * _half_time(curve), at_peak and lev >= LEVELS[0]))
    return out


def _lv_plausible(c: _Component) -> bool:
    return (c.candidate and LV_AREA_MM2[0] <= c.area <= LV_AREA_MM2[1] and c.fill >= 0.4
            and c.elong <= 3.0)


def _earlier_neighbours(k, comps, sp):
    """Components that fill clearly earlier than ``comps[k]`` and lie next to it (RV-like).

    Their curves peak :data:`RV_PEAK_LEAD_FRAMES` or more before the candidate's (the RV's
    blood peaks beats before the LV's: a region peaking with the LV, or a frame before
    it, is the RV run together with the aorta or the wall at a low level, fresh 13210 a)
    and they are seen in its frame or in the few frames before it (by the LV's peak frame
    the RV has often washed out).  A region that
    shares pixels with the candidate, or that holds a later-filling pool
    of its own frame (pools run together at low levels), is not one.
    """
    c = comps[k]
    near = [j for j, o in enumerate(comps) if c.frame - NEIGHBOUR_FRAMES <= o.frame <= c.frame
            and o.arrival <= c.arrival - MIN_LEAD_FRAMES
            and int(np.argmax(o.curve)) <= int(np.argmax(c.curve)) - RV_PEAK_LEAD_FRAMES
            and o.area >= max(RV_AREA_MM2[0], 0.25 * c.area)
            and (o.mask & c.mask).sum() < 0.2 * o.mask.sum()]
    near = [j for j in near if not _holds_later_pool(j, comps)]
    if not near:
        return []
    dist = ndimage.distance_transform_edt(~c.mask, sampling=sp)
    return [j for j in near if float(dist[comps[j].mask].min()) < RV_LV_GAP_MM]


def _holds_later_pool(j, comps) -> bool:
    """Whether ``comps[j]`` holds most of a later-filling region of its own frame (kept)."""
    o = comps[j]
    if o.holds_later is None:  # asked for each candidate it neighbours: computed once
        o.holds_later = any(m.frame == o.frame and m.arrival >= o.arrival + MIN_LEAD_FRAMES
                            and (m.mask & o.mask).sum() >= 0.5 * m.mask.sum() for m in comps)
    return o.holds_later


def _ring(c: _Component, e, spx) -> float:
    r_in, r_out = disk(max(1, round(2.0 / spx))), disk(max(2, round(9.0 / spx)))
    ring = ndimage.binary_dilation(c.mask, r_out) & ~ndimage.binary_dilation(c.mask, r_in)
    after = e[c.frame + 2 : c.frame + 8]
    pk = float(c.curve.max())
    return float(after[:, ring].mean()) / pk if after.size and ring.any() and pk > 0 else 0.0


def _choose_lv(comps, e, sp, near=None):
    """Index of the LV blood pool among the components, or None.

    The LV pool is round and bright, with an enhancing wall around it (the
    aorta has none), and in the same frame the RV, which filled a beat or
    more earlier, lies next to it.  Candidates with such a neighbour that leads
    them by a pulmonary transit (:data:`TRANSIT_FRAMES`) are preferred; among
    them the earliest wins (the aorta fills after the LV).  Without one (apex:
    no RV; a neighbour only a beat ahead is the same chamber or the LV before
    the aorta), shape, brightness and wall decide.
    ``near = (centre_mm, radius_mm)`` keeps only candidates centred within
    ``radius_mm`` of ``centre_mm`` (coarse-grid mm).
    """
    ok = [k for k, c in enumerate(comps) if _lv_plausible(c)]
    if near is not None:
        ok = [k for k in ok
              if np.hypot(*(np.argwhere(comps[k].mask).mean(axis=0) * sp - near[0])) <= near[1]]
    if not ok:
        return None
    spx = float(np.sqrt(sp[0] * sp[1]))
    score = {k: np.sqrt(float(comps[k].curve.max())) * min(comps[k].fill, 1.0)
             / max(comps[k].elong, 1.0) * np.sqrt(comps[k].area) for k in ok}
    ok = _distinct(sorted(ok, key=score.get, reverse=True), comps, sp)
    for k in ok:
        comps[k].ring = _ring(comps[k], e, spx)
        score[k] *= 1.0 + 4.0 * float(np.clip(comps[k].ring, 0.0, 0.5))
    nbrs = {k: _earlier_neighbours(k, comps, sp) for k in ok}
    paired = [k for k in ok if nbrs[k]]
    # the RV leads the LV by the pulmonary transit (several beats); a pool that fills
    # within a beat or two of its earliest neighbour is downstream of it in the same
    # chamber or vessel (a later-filling part of the RV; the aorta after the LV)
    transit = [k for k in paired
               if comps[k].arrival - min(comps[j].arrival for j in nbrs[k]) >= TRANSIT_FRAMES]
    if not transit:  # none after a transit (e.g. apex: the aorta after the LV)
        return _best(ok, score.get, comps, sp)
    paired = transit
    t0 = min(comps[k].arrival for k in paired)
    delay = {k: comps[k].arrival - t0 for k in paired}
    return _best(paired, lambda k: score[k] * np.exp(-delay[k] / ARRIVAL_SCALE_FRAMES),
                 comps, sp)


def _best(cands, key, comps, sp):
    """The best of ``cands`` by ``key``, passing over the LV run together with the RV.

    A region that holds, off its centre, a pool of its own frame which filled
    earlier is the LV and the RV joined (their centre lies on the septum); the
    LV alone is among the candidates too, so such a region is taken only when
    nothing else is left.  11203 a (basal and AIF slice) and b (AIF slice):
    20-23 mm off -> 1.1-4.4 mm; 10818 a apical 14 -> 1 mm.  An earlier-filling
    pool at the region's centre is not the RV (deep breathing moves a brighter
    core's pixels over other tissue: 10802 b apical).
    """
    alone = [k for k in cands if not _holds_earlier_pool(k, comps, sp)]
    return max(alone or cands, key=key)


def _holds_earlier_pool(k, comps, sp) -> bool:
    """Whether ``comps[k]`` holds, off its centre, a smaller region of its own frame
    that fills clearly earlier (the RV beside the LV).
    """
    c = comps[k]
    sp = np.asarray(sp, np.float64)
    centre = None
    for m in comps:
        if not (m.frame == c.frame and m.area < c.area
                and m.arrival <= c.arrival - MIN_LEAD_FRAMES
                and (m.mask & c.mask).sum() >= 0.5 * m.mask.sum()):
            continue
        if centre is None:
            centre = np.argwhere(c.mask).mean(axis=0) * sp
        off = np.hypot(*(np.argwhere(m.mask).mean(axis=0) * sp - centre))
        if off >= 0.5 * np.sqrt(c.area / np.pi):  # half the region's equivalent radius
            return True
    return False


def _distinct(order, comps, sp, radius_mm=20.0):
    """The first :data:`MAX_CANDIDATES` of ``order`` that are not near-copies of an earlier one.

    The same pool is found in several frames and at several levels; a copy
    lies within ``radius_mm`` and fills at the same time.
    """
    kept, cents = [], []
    for k in order:
        c = np.argwhere(comps[k].mask).mean(axis=0) * np.asarray(sp)
        if any(np.hypot(*(c - c2)) < radius_mm and abs(comps[k].arrival - comps[j].arrival) < 0.5
               for j, c2 in zip(kept, cents)):
            continue
        kept.append(k)
        cents.append(c)
        if len(kept) == MAX_CANDIDATES:
            break
    return kept


def _choose_rv(k, comps, sp):
    """The largest earlier-filling neighbour of the LV component, or None."""
    near = _earlier_neighbours(k, comps, sp)
    return comps[max(near, key=lambda j: comps[j].area)] if near else None
