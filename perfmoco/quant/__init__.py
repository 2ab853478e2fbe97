"""Quantification: PD surface-coil correction, dual-sequence AIF, Fermi MBF maps, AHA segments.

:func:`quantify_study` turns a motion-corrected :class:`~perfmoco.study.PerfusionStudy`
into pixel-wise stress MBF maps (ml/min/g) and a 16-segment table;
:func:`quantify_curves` fits curves already converted to [Gd] (research CLI).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from perfmoco.config import QuantConfig, check_interpolation
from perfmoco.quant.aif import AifResult, extract_aif
from perfmoco.quant.anatomy import aha_labels, slice_anatomy
from perfmoco.quant.fermi import FermiFit, fit_fermi, resample_uniform
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.levels import study_levels
from perfmoco.quant.messages import (
    MIN_TAU0_S,
    coil_not_followed,
    implausible_efficiency,
    implausible_shape,
    warn,
)
from perfmoco.quant.pixels import core_pixels, delay_core, distance_to, rim_pools
from perfmoco.quant.resolution import interpolation_factor
from perfmoco.quant.result import QuantResult
from perfmoco.quant.segments import display_angle, segment_table
from perfmoco.quant.signal import (
    baseline_m0,
    baseline_q,
    coil_motion_factors,
    m0_map,
    pools_and_edges,
    pre_contrast_frames,
    saturation_efficiency,
    signal_to_gd,
)
from perfmoco.quant.spillover import pool_core, pool_signal
from perfmoco.study import PerfusionStudy, SliceRole, StudyError

__all__ = [
    "AifResult",
    "FermiFit",
    "core_pixels",
    "QuantResult",
    "fit_fermi",
    "quantify_curves",
    "quantify_study",
]

log = logging.getLogger(__name__)


def quantify_curves(tissue_gd, aif_gd, *, dt_s: float, mask=None, hematocrit=None,
                    density: float = 1.05, spillover: bool = True,
                    rim_px: int = 2, interpolation: float = 1.0,
                    denoise: bool = True) -> np.ndarray:
    """Pixel-wise Fermi MBF from [Gd] curves on a uniform grid (research use).

    The delay is fitted on the mean curve of the masked pixels away from the
    mask's borders; each pixel keeps it within +-0.3 s
    (:func:`perfmoco.quant.grouped.fit_fermi_grouped`), and starts from that
    curve's fit (for a ring with ``spillover``, one that also takes a blood
    volume out, as :func:`quantify_study`'s segment fits).  When the mask is a
    ring (a myocardium), the cavity it encloses is taken as the LV blood pool:
    as in :func:`quantify_study`, the pixels within ``rim_px`` of it may also
    take a fraction of the AIF itself (endocardial partial volume, ``spillover``).

    Parameters
    ----------
    tissue_gd : ndarray, shape (T, Y, X), float, mmol/l
        Tissue [Gd] per pixel.
    aif_gd : ndarray, shape (T,), float, mmol/l
        Blood [Gd] of the AIF on the same grid.
    dt_s : float, keyword-only
        Grid step, s.
    mask : ndarray, shape (Y, X), bool, keyword-only, optional
        Pixels to fit; default all.
    hematocrit : float, keyword-only, optional
        If given, the AIF is divided by ``1 - hematocrit`` (blood to plasma
        [Gd]) before fitting.
    density : float, keyword-only
        Tissue density, g/ml.
    spillover : bool, keyword-only
        Fit a blood-pool fraction on the pixels near the cavity of a
        ring-shaped mask (no effect for a mask without a hole).
    rim_px : int, keyword-only
        How near (pixels, chessboard distance; 1: touching it) to the cavity
        a pixel takes that fraction (``QuantConfig.spillover_rim_px``).
    interpolation : float, keyword-only
        Display pixels per acquired pixel of the maps (k-space zero-filling):
        ``rim_px`` and the core's depth are in acquired pixels.  1 (default):
        the pixels are the acquired ones; 0: read it from the curves' spectrum
        (:func:`perfmoco.quant.resolution.interpolation_factor`).
    denoise : bool, keyword-only
        Fit the curves projected onto the temporal components that stand out
        of the noise (``QuantConfig.temporal_denoise``;
        :mod:`perfmoco.quant.denoise`); needs at least 100 pixels.

    Returns
    -------
    ndarray, shape (Y, X), float32, ml/min/g
        0 outside ``mask``; NaN where the fit failed (r2 < 0.5 or at a bound).

    Raises
    ------
    ValueError
        For wrong shapes, NaN/Inf, a bad ``dt_s`` or ``hematocrit``.
    """
    tis = np.asarray(tissue_gd, np.float64)
    aif = np.asarray(aif_gd, np.float64)
    if tis.ndim != 3:
        raise ValueError(f"tissue_gd must be (T, Y, X), got shape {tis.shape}")
    if aif.shape != (tis.shape[0],):
        raise ValueError(f"aif_gd must be ({tis.shape[0]},) to match tissue_gd, got {aif.shape}")
    if not (np.isfinite(tis).all() and np.isfinite(aif).all()):
        raise ValueError("tissue_gd and aif_gd must not contain NaN or Inf")
    m = np.ones(tis.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    if m.shape != tis.shape[1:]:
        raise ValueError(f"mask must be {tis.shape[1:]}, got {m.shape}")
    if hematocrit is not None:
        if not 0.0 <= float(hematocrit) < 0.9:
            raise ValueError(f"hematocrit must be in [0, 0.9), got {hematocrit}")
        aif = aif / (1.0 - float(hematocrit))
    if float(aif.max()) <= 0:
        raise ValueError("aif_gd has no positive values (flat AIF)")
    if int(rim_px) < 1:
        raise ValueError(f"rim_px must be >= 1, got {rim_px}")
    f_px = check_interpolation(interpolation)
    if f_px == 0:
        f_px = interpolation_factor(tis)
    out = np.zeros(m.shape, np.float32)
    if m.any():  # one group: delay from the mean curve, pixels within +-0.3 s of it
        curves = tis[:, m].T
        cavity = ndimage.binary_fill_holes(m) & ~m
        rim = (distance_to(cavity) <= round(int(rim_px) * f_px))[m]
        core = core_pixels(m, cavity, np.zeros(m.shape, int), f_px)[m]
        near = bool(spillover and rim.any())  # a ring: its cavity's blood
        one = np.zeros(len(curves), int)  # (near: the delay, then the group with its blood)
        fit, _, _ = fit_fermi_grouped(curves, aif, groups=one, delay_groups=one if near else None,
                                      dt_s=dt_s,
                                      density=density, core=core, denoise=denoise,
                                      spillover=rim if near else False, group_blood=near)
        out[m] = np.where(fit.ok, fit.mbf, np.nan)
    return out


def _baseline_frames(images, pool, config: QuantConfig) -> int:
    """Pre-contrast frames of a slice: ``config.baseline_frames``, else before the pool's bolus."""
    n = config.baseline_frames or pre_contrast_frames(images[:, pool].mean(axis=1))
    return int(min(n, images.shape[0] - 3))


def _pool_m0(s, im, pool, n_base: int, ts: float, config: QuantConfig) -> float:
    """M0 of a blood pool: its mean PD, else from its baseline and the native blood T1."""
    if s.pd_images.shape[0]:
        return float(np.asarray(s.pd_images, np.float64)[:, pool].mean()) * config.pd_scale
    return float(baseline_m0(im[:n_base, pool].mean(), ts_s=ts, t1_s=config.t1_blood_s,
                             efficiency=config.no_pd_efficiency(aif=False)[1]))


def _efficiencies(myocardium: dict, aif, *, aif_slice: bool) -> dict[str, float]:
    """The measured saturation efficiencies per sequence (``QuantResult.saturation_efficiency``)."""
    vals = [v for v in myocardium.values() if np.isfinite(v)]  # NaN: no positive M0
    out = {"highres": float(np.mean(vals))} if vals else {}
    if aif_slice and np.isfinite(aif.efficiency):
        out["aif"] = float(aif.efficiency)
    return out


def _fill_frames(images, bad):
    """Replace QC-flagged frames by linear interpolation in time (they are not fitted)."""
    if bad is None:
        return images
    b = np.asarray(bad, bool)
    if b.shape != (images.shape[0],):
        raise ValueError(f"qc flags must have shape ({images.shape[0]},), got {b.shape}")
    if not b.any() or b.all():
        return images
    idx = np.arange(b.size)
    good = idx[~b]
    j = np.clip(np.searchsorted(good, idx[b]), 1, good.size - 1)
    lo, hi = good[j - 1], good[j]
    w = np.clip((idx[b] - lo) / np.maximum(hi - lo, 1), 0.0, 1.0)[:, None, None]
    out = images.copy()
    out[b] = images[lo] * (1.0 - w) + images[hi] * w
    return out


#: A segment's median is taken over its core pixels (off the partial-volume borders)
#: where they reach round at least this share of its arc (in 10-degree bins about the LV
#: centre), else over all its fitted pixels.
MIN_CORE_ARC = 0.5


def segment_pixels(fitted, core, segments, angles_deg=None) -> np.ndarray:
    """The pixels a segment's median is taken over: its core pixels, or all its fitted ones.

    The core (off the partial-volume borders) stands for the segment where it
    holds at least 5 pixels and, given each pixel's angle about the LV centre
    (``angles_deg``), covers at least :data:`MIN_CORE_ARC` of the 10-degree bins
    the segment's fitted pixels cover: a core in one spot is not the segment
    (fresh phantom 11438 b: a basal anterior segment's 6 core pixels of 47, by
    the RV's tip, read 0.53 ml/min/g against a true 3.66, a defect where there
    is none; all 47: 2.43, marked unreliable by their spread).  A thin core
    along the whole arc (a zero-filled image's, a thin wall's) is kept.  Arrays
    of the myocardial pixels.
    """
    fitted = np.asarray(fitted, bool)
    use = fitted & np.asarray(core, bool)
    bins = None if angles_deg is None else (np.asarray(angles_deg) % 360.0 // 10.0).astype(int)
    for g in np.unique(segments):
        seg = fitted & (segments == g)
        own = use & seg
        thin = own.sum() < 5
        if not thin and bins is not None:
            thin = np.unique(bins[own]).size < MIN_CORE_ARC * np.unique(bins[seg]).size
        if thin:
            use |= seg
    return use


def _frame_mask(bad, times_src, grid):
    """Grid samples whose nearest source frame is not QC-flagged."""
    if bad is None:
        return np.ones(grid.size, bool)
    idx = np.clip(np.searchsorted(times_src, grid), 1, times_src.size - 1)
    near = np.where(grid - times_src[idx - 1] < times_src[idx] - grid, idx - 1, idx)
    return ~np.asarray(bad, bool)[near]


def quantify_study(study: PerfusionStudy, *, config: QuantConfig,
                   qc: dict[int, np.ndarray] | None = None,
                   displacements: dict[int, np.ndarray] | None = None,
                   pd_displacements: dict[int, np.ndarray] | None = None) -> QuantResult:
    """MBF maps and AHA segment table of a motion-corrected study.

    Parameters
    ----------
    study : PerfusionStudy
        Motion-corrected study (PD frames corrected too).
    config : QuantConfig, keyword-only
        Signal model and quantification settings.
    qc : dict of int to ndarray, shape (T,), bool, keyword-only, optional
        Per ``slice_index``, True for frames flagged by motion QC; they are
        left out of the fits when ``config.exclude_qc_frames``.
    displacements, pd_displacements : dict of int to ndarray, keyword-only, optional
        Per ``slice_index``, the motion correction's pull-back displacement of
        the dynamics ``(T, 2, Y, X)`` and of the PD frames ``(P, 2, Y, X)``,
        pixels (``MocoResult.displacement`` / ``pd_displacement``).  With
        them the PD-based ``M0`` follows the coil sensitivity that each
        corrected pixel saw in each frame
        (:func:`perfmoco.quant.signal.coil_motion_factors`); without them
        breathing motion modulates ``S / M0`` by the fixed coil profile.

    Returns
    -------
    QuantResult

    Raises
    ------
    perfmoco.study.StudyError
        Invalid study, no usable AIF (flat, no LV blood pool) or no slice
        with a myocardium.  Problems that still allow maps (missing AIF
        slice, missing PD frames, flagged pixels) are warnings instead.
    """
    study.validate()
    msgs: list[str] = []
    qc = dict(qc or {}) if config.exclude_qc_frames else {}
    by_index = {s.slice_index: s for s in study.slices}
    for key, flags in qc.items():
        if key not in by_index:
            raise ValueError(f"qc names slice {key!r}, the study has {sorted(by_index)}")
        if np.shape(flags) != (by_index[key].n_dynamics,):
            raise ValueError(f"qc flags of slice {key} must have shape "
                             f"({by_index[key].n_dynamics},), got {np.shape(flags)}")
    highres = study.highres
    src = study.aif
    if src is None:
        warn(msgs, "the study has no low-resolution AIF slice; using the LV blood pool of "
                    f"{highres[0].name} instead (flagged: MBF overestimated)")
        src = highres[0]
    aif = extract_aif(src, config=config, qc=qc.get(src.slice_index),
                      displacement=(displacements or {}).get(src.slice_index),
                      pd_displacement=(pd_displacements or {}).get(src.slice_index))
    for w in aif.warnings:
        msgs.append(w)
    dt = float(np.median(np.diff(aif.times_s)))
    t0 = max([aif.times_s[0]] + [s.times_s[0] for s in highres])
    t1 = min([aif.times_s[-1]] + [s.times_s[-1] for s in highres])
    n = int(np.floor((t1 - t0) / dt + 1e-9)) + 1
    if n < 10:
        raise StudyError(f"the slices share only {n} time points on a {dt:.2f} s grid")
    grid, aif_u = resample_uniform(aif.times_s, aif.gd, dt_s=dt, t0_s=t0, n=n)
    aif_ok = _frame_mask(qc.get(src.slice_index), aif.times_s, grid)
    # 1. anatomy per slice; 2. AHA labels
    work = slice_anatomy(highres, config, msgs)
    levels = study_levels(highres, work, config.slice_levels, msgs)
    aha_maps, ins_out = aha_labels(highres, work, levels, msgs)
    # 3. signal -> [Gd] -> uniform grid, every myocardial pixel of every slice
    curves, masks, owners, sat_all, groups, dgroups, cores, rims = [], [], [], {}, [], [], [], []
    dcores = []  # the cores' pixels away from the RV's blood: the study's delay fit
    pools: list[np.ndarray] = []  # the slices' blood pools' S / M0 on the grid ...
    pool_base, base_q, ts_r = [], [], []  # ... at baseline; each pixel's baseline 1 - S / M0
    key, eta = config.no_pd_efficiency(aif=False)
    efficiency: dict[str, float] = {}  # measured where PD frames exist, per slice
    for s in highres:
        w = work.get(s.slice_index)
        if w is None:
            continue
        im = _fill_frames(np.asarray(s.images, np.float64), qc.get(s.slice_index))
        ts = s.saturation_time_s or config.saturation_time_highres_s
        # pixels within the point-spread's reach of the LV or RV cavity (acquired pixels)
        near = rim_pools(w, round(config.spillover_rim_px * w.pixel_scale), config)
        # pre-contrast frames: before the LV's bolus; pixels holding RV blood, before
        # the RV's (it comes seconds earlier)
        rv_core = pool_core(w.rv)
        n_lv = _baseline_frames(im, w.lv_core, config)
        n_rv = _baseline_frames(im, rv_core, config) if (near == 1).any() else None
        n_base = n_lv if n_rv is None else np.where(near == 1, min(n_rv, n_lv), n_lv)
        if s.pd_images.shape[0] > 0:
            # M0 smoothed within the tissue; pixels that hold blood keep their own PD
            sp = float(np.mean(s.pixel_spacing_mm))
            tissue = w.myo.copy()
            tissue[w.myo] = near < 0
            m0 = m0_map(s.pd_images, mask=tissue, sigma_px=config.pd_smooth_mm / sp,
                        pd_scale=config.pd_scale)[w.myo]
            if displacements and s.slice_index in displacements:
                skipped: list[str] = []
                m0 = m0 * coil_motion_factors(
                    s.pd_images, displacements[s.slice_index], pixels=w.myo, centre=w.centre,
                    spacing_mm=s.pixel_spacing_mm,
                    pd_displacement=(pd_displacements or {}).get(s.slice_index),
                    exclude=pools_and_edges(w.blood, w.pixel_scale), skipped=skipped)
                if skipped:
                    coil_not_followed(msgs, s.name, skipped[0])
            efficiency[s.name] = saturation_efficiency(im[:n_lv, w.myo], m0, ts_s=ts,
                                                       t1_s=config.t1_myocardium_s)
            log.info("%s: effective saturation efficiency %.3f (myocardium's baseline against "
                     "its PD-frame M0, native T1 %s s; %s for this protocol's studies without "
                     "PD frames)", s.name, efficiency[s.name], config.t1_myocardium_s, key)
        else:
            warn(msgs, f"{s.name}: no PD frames; M0 from the baseline, the native myocardial "
                        f"T1 ({config.t1_myocardium_s} s) and a saturation efficiency of {eta:g} "
                        f"({key}): MBF may be biased")
            m0 = baseline_m0(im[:n_lv, w.myo].mean(axis=0), ts_s=ts,
                             t1_s=config.t1_myocardium_s, efficiency=eta)
        gd, sat = signal_to_gd(im[:, w.myo], m0=m0, ts_s=ts, relaxivity=config.relaxivity,
                               baseline=n_base)
        sat_all[s.slice_index] = sat
        _, gd_u = resample_uniform(s.times_s, gd.T, dt_s=dt, t0_s=t0, n=n)
        fm = aif_ok & _frame_mask(qc.get(s.slice_index), s.times_s, grid)
        if fm.sum() < 10:
            raise StudyError(f"{s.name}: only {int(fm.sum())} frames left after motion QC")
        curves.append(gd_u)
        masks.append(np.broadcast_to(fm, gd_u.shape))
        owners.append(s.slice_index)
        groups.append(1000 * s.slice_index + aha_maps[s.slice_index][w.myo])
        dgroups.append(np.full(gd_u.shape[0], s.slice_index))
        # pixels off the partial-volume borders (blood pools, epicardium); distances
        # in acquired pixels (the point-spread's reach), i.e. scaled for zero-filling
        if w.pixel_scale != 1.0:
            log.info("%s: pixel distances scaled by %.2f (images interpolated to a finer "
                     "matrix than acquired)", s.name, w.pixel_scale)
        cores.append(core_pixels(w.myo, w.blood, aha_maps[s.slice_index], w.pixel_scale)[w.myo])
        dcores.append(delay_core(cores[-1], w.myo, w.rv, w.pixel_scale))
        # pixels near a cavity hold some of its blood's signal, mixed before the [Gd]
        # conversion: fitted with the slice's own pool signal (spillover.SignalMix)
        rim = np.full(int(w.myo.sum()), -1)
        for kind, pool, nb in ((0, w.lv_core, n_lv), (1, rv_core, n_rv)):
            sig = None
            if (near == kind).any() and pool is not None and pool.any():
                sig = pool_signal(im, pool, baseline=min(nb, n_lv),
                                  m0=_pool_m0(s, im, pool, nb, ts, config))
            if sig is not None:
                pools.append(resample_uniform(s.times_s, sig[0], dt_s=dt, t0_s=t0, n=n)[1])
                pool_base.append(sig[1])
                rim[near == kind] = len(pools)
        rims.append(rim)
        base_q.append(baseline_q(im[:, w.myo], m0, n_base))
        ts_r.append(np.full(rim.shape, ts * config.relaxivity))
    measured = _efficiencies(efficiency, aif, aif_slice=src.role is SliceRole.AIF)
    implausible_efficiency(msgs, measured, pd_scale=config.pd_scale)
    allm = np.concatenate(masks)
    fm_arg = allm[0] if (allm == allm[0]).all() else allm
    spill = {"spillover": np.concatenate(rims), "spill_curves": np.array(pools),
             "spill_signal": (np.array(pool_base), np.concatenate(base_q),
                              np.concatenate(ts_r))} if pools else {}
    delay_fits: list = []
    fit, gfit, gids = fit_fermi_grouped(
        np.concatenate(curves), aif_u, groups=np.concatenate(groups), dt_s=dt,
        delay_groups=np.concatenate(dgroups), frame_mask=fm_arg, core=np.concatenate(cores),
        density=config.tissue_density, r2_min=config.r2_min,
        fast_pixels=config.fast_pixel_fit, denoise=config.temporal_denoise,
        group_blood=config.blood_spillover, delay_group_window_s=config.slice_delay_window_s,
        delay_fits=delay_fits, min_tau0_s=MIN_TAU0_S,
        group_shape_range=config.segment_shape_range or None,
        delay_core=np.concatenate(dcores), **spill)
    implausible_shape(msgs, delay_fits, {s.slice_index: s.name for s in highres})
    seg_keys = [(int(g) // 1000, int(g) % 1000) for g in gids]  # (slice, segment)
    seg_fit = dict(zip(seg_keys, map(float, gfit.mbf)))
    seg_vb = dict(zip(seg_keys, map(float, gfit.vb)))
    # 4. maps, flags and the segment table (core pixels where a segment has enough)
    mbf_maps, quality, flagged, valid, pos = {}, {}, {}, {}, 0
    for sl, cur, core in zip(owners, curves, cores):
        part = slice(pos, pos + cur.shape[0])
        pos += cur.shape[0]
        myo = work[sl].myo
        mbf, r2 = fit.mbf[part], fit.r2[part]  # rim pixels: per volume of their myocardium
        bad = ~fit.ok[part] | ~np.isfinite(mbf) | (mbf > config.max_mbf) | sat_all[sl]
        mbf_maps[sl] = np.zeros(myo.shape, np.float32)
        mbf_maps[sl][myo] = np.nan_to_num(np.clip(mbf, 0.0, None))
        quality[sl] = np.zeros(myo.shape, np.float32)
        quality[sl][myo] = r2
        flagged[sl] = np.zeros(myo.shape, bool)
        flagged[sl][myo] = bad
        aha = aha_maps[sl][myo]
        fitted = np.isfinite(mbf) & ~sat_all[sl]  # the median is robust to the MBF flags
        use = segment_pixels(fitted, core, aha, display_angle(np.argwhere(myo), work[sl].centre))
        valid[sl] = np.zeros(myo.shape, bool)
        valid[sl][myo] = use
        if bad.mean() > 0.2:
            warn(msgs, f"slice {sl}: {100 * bad.mean():.0f}% of myocardial pixels flagged "
                        "(poor fit, unphysical MBF or saturated signal)")
    rows = segment_table(mbf_maps, aha_maps, valid=valid, fit_mbf=seg_fit, fit_vb=seg_vb,
                         flagged=flagged,
                         max_se=config.segment_max_se,
                         max_flagged=config.segment_max_flagged, below=config.ischemia_mbf)
    return QuantResult(
        mbf_maps=mbf_maps, fit_quality=quality, flagged=flagged,
        myocardium={k: w.myo for k, w in work.items()}, aha=aha_maps, rv_insertion=ins_out,
        segments=rows, aif_gd=aif_u, aif_times_s=grid, warnings=msgs,
        ischemia_mbf=config.ischemia_mbf,
        saturation_efficiency=measured,
    )
