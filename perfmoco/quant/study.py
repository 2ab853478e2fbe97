"""One motion-corrected study to MBF maps and its AHA segment table (:func:`quantify_study`)."""

from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple

import numpy as np

from perfmoco.config import QuantConfig
from perfmoco.frames import blank_frames, interpolate_frames
from perfmoco.quant.aif import MIN_PRE_FRAMES, extract_aif
from perfmoco.quant.anatomy import aha_labels, slice_anatomy
from perfmoco.quant.calibrate import blood_references
from perfmoco.quant.coil_frames import slow_frames
from perfmoco.quant.coils import tissue_baseline
from perfmoco.quant.darkrim import dark_rim_segments, name_dark_rim
from perfmoco.quant.fermi import F_BOUNDS
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.inputs import check_inputs
from perfmoco.quant.levels import study_levels
from perfmoco.quant.messages import (
    MIN_TAU0_S,
    ODD_M0,
    coil_not_followed,
    implausible_efficiency,
    implausible_shape,
    odd_slice_efficiency,
    suspect_segments,
    unmeasured_scales,
    warn,
)
from perfmoco.quant.pixels import core_pixels, delay_core, rim_pools
from perfmoco.quant.resolution import half_up
from perfmoco.quant.result import QuantResult
from perfmoco.quant.segments import display_angle, segment_pixels, segment_table
from perfmoco.quant.signal import (
    baseline_m0,
    baseline_q,
    coil_motion_factors,
    heart_near_edge,
    m0_map,
    pools_and_edges,
    pre_contrast_frames,
    saturation_efficiency,
    signal_to_gd,
)
from perfmoco.quant.spillover import pool_core, pool_signal
from perfmoco.quant.timegrid import resample_uniform
from perfmoco.study import PerfusionStudy, SliceRole, StudyError

__all__ = ["quantify_study"]

log = logging.getLogger(__name__)


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


def _frame_mask(bad, times_src, grid):
    """Grid samples whose nearest source frame is not QC-flagged."""
    if bad is None:
        return np.ones(grid.size, bool)
    idx = np.clip(np.searchsorted(times_src, grid), 1, times_src.size - 1)
    near = np.where(grid - times_src[idx - 1] < times_src[idx] - grid, idx - 1, idx)
    return ~np.asarray(bad, bool)[near]


class _Grid(NamedTuple):
    """The uniform time grid every curve is fitted on."""

    times: np.ndarray  #: s
    dt: float
    t0: float
    n: int
    aif_ok: np.ndarray  #: grid samples whose AIF frame is not QC-flagged


@dataclasses.dataclass
class _Pixels:
    """Every myocardial pixel of every slice as the fits take them: one entry per slice."""

    curves: list = dataclasses.field(default_factory=list)  # [Gd] on the grid, (N, n)
    masks: list = dataclasses.field(default_factory=list)  # grid samples fitted, (N, n)
    owners: list = dataclasses.field(default_factory=list)  # slice_index
    groups: list = dataclasses.field(default_factory=list)  # 1000 * slice + AHA segment
    dgroups: list = dataclasses.field(default_factory=list)  # delay group: the slice
    cores: list = dataclasses.field(default_factory=list)  # off the partial-volume borders
    dcores: list = dataclasses.field(default_factory=list)  # ... and the RV's blood
    rims: list = dataclasses.field(default_factory=list)  # which pool's blood (-1: none)
    base_q: list = dataclasses.field(default_factory=list)  # baseline 1 - S / M0
    ts_r: list = dataclasses.field(default_factory=list)  # TS x relaxivity
    pools: list = dataclasses.field(default_factory=list)  # the pools' S / M0 on the grid
    pool_base: list = dataclasses.field(default_factory=list)  # ... at baseline
    saturated: dict = dataclasses.field(default_factory=dict)  # per slice, (N,) bool
    dark: dict = dataclasses.field(default_factory=dict)  # per slice, (N,) bool: a dark rim
    dark_found: dict = dataclasses.field(default_factory=dict)  # per slice: segment -> fall

    def fit_inputs(self) -> dict:
        """Keyword arguments of :func:`~perfmoco.quant.grouped.fit_fermi_grouped`."""
        allm = np.concatenate(self.masks)
        spill = {"spillover": np.concatenate(self.rims), "spill_curves": np.array(self.pools),
                 "spill_signal": (np.array(self.pool_base), np.concatenate(self.base_q),
                                  np.concatenate(self.ts_r))} if self.pools else {}
        return dict(curves=np.concatenate(self.curves), groups=np.concatenate(self.groups),
                    delay_groups=np.concatenate(self.dgroups),
                    frame_mask=allm[0] if (allm == allm[0]).all() else allm,
                    core=np.concatenate(self.cores), delay_core=np.concatenate(self.dcores),
                    **spill)


def _slice_m0(s, w, im, near, n_lv: int, ts: float, *, config: QuantConfig, msgs, efficiency,
              fields, qc=None) -> np.ndarray:
    """Each myocardial pixel's ``M0``: its PD frames (following the coil through the
    motion, ``fields``; ``qc``: frames the coil's measurement leaves out), else the
    baseline, the native T1 and the configured efficiency.
    """
    key, eta = config.no_pd_efficiency(aif=False)
    if s.pd_images.shape[0] == 0:
        warn(msgs, f"{s.name}: no PD frames; M0 from the baseline, the native myocardial "
                    f"T1 ({config.t1_myocardium_s} s) and a saturation efficiency of {eta:g} "
                    f"({key}): MBF may be biased")
        return baseline_m0(im[:n_lv, w.myo].mean(axis=0), ts_s=ts,
                           t1_s=config.t1_myocardium_s, efficiency=eta)
    # M0 smoothed within the tissue; pixels that hold blood keep their own PD
    sp = float(np.mean(s.pixel_spacing_mm))
    tissue = w.myo.copy()
    tissue[w.myo] = near < 0
    m0 = m0_map(s.pd_images, mask=tissue, sigma_px=config.pd_smooth_mm / sp,
                pd_scale=config.pd_scale)[w.myo]
    displacements, pd_displacements = fields
    if displacements and s.slice_index in displacements:
        skipped: list[str] = []
        disp = np.asarray(displacements[s.slice_index])
        frames = {"n_frames": n_lv, "scale": w.pixel_scale, "qc": qc}  # only the one used
        measured = ({"edge_baseline": tissue_baseline(im, disp, myo=w.myo, lv_core=w.lv_core,
                                                      rv=w.rv, **frames)}
                    if heart_near_edge(w.myo.shape, w.centre, s.pixel_spacing_mm) else
                    {"baseline": slow_frames(im, disp, myo=w.myo, times_s=s.times_s, **frames)})
        m0 = m0 * coil_motion_factors(
            s.pd_images, disp, pixels=w.myo, centre=w.centre,
            spacing_mm=s.pixel_spacing_mm,
            pd_displacement=(pd_displacements or {}).get(s.slice_index),
            exclude=pools_and_edges(w.blood, w.pixel_scale), skipped=skipped, **measured)
        if skipped:
            coil_not_followed(msgs, s.name, skipped[0])
    efficiency[s.name] = saturation_efficiency(im[:n_lv, w.myo], m0, ts_s=ts,
                                               t1_s=config.t1_myocardium_s)
    log.info("%s: effective saturation efficiency %.3f (myocardium's baseline against "
             "its PD-frame M0, native T1 %s s; %s for this protocol's studies without "
             "PD frames)", s.name, efficiency[s.name], config.t1_myocardium_s, key)
    return m0


def _add_slice(px: _Pixels, s, w, aha, on: _Grid, *, config: QuantConfig, qc, msgs,
               efficiency, fields) -> None:
    """One slice's myocardial pixels into ``px``: signal -> [Gd] -> the grid ``on``.

    ``w``: its anatomy (:func:`perfmoco.quant.anatomy.slice_anatomy`); ``aha``: its AHA
    label map; ``qc``: its QC flags or None; ``fields``: the study's displacements and
    PD displacements (or Nones).
    """
    im = interpolate_frames(np.asarray(s.images, np.float64), qc)  # QC frames: not fitted
    ts = s.saturation_time_s or config.default_saturation_time(aif=False)[1]
    # pixels within the point-spread's reach of the LV or RV cavity (acquired pixels)
    near = rim_pools(w, half_up(config.spillover_rim_px * w.pixel_scale), config)
    # pre-contrast frames: before the LV's bolus; pixels holding RV blood, before
    # the RV's (it comes seconds earlier)
    rv_core = pool_core(w.rv)
    n_lv = _baseline_frames(im, w.lv_core, config)
    n_rv = _baseline_frames(im, rv_core, config) if (near == 1).any() else None
    n_base = n_lv if n_rv is None else np.where(near == 1, min(n_rv, n_lv), n_lv)
    found, dark = dark_rim_segments(im, w.myo, aha, w.lv_core, n_lv, pixel_scale=w.pixel_scale,
                                    cavity=w.blood & ~w.rv)
    name_dark_rim(msgs, s.name, found, int(dark.sum()))
    px.dark[s.slice_index] = dark[w.myo]
    px.dark_found[s.slice_index] = found
    m0 = _slice_m0(s, w, im, near, n_lv, ts, config=config, msgs=msgs, efficiency=efficiency,
                   fields=fields, qc=qc)
    gd, sat = signal_to_gd(im[:, w.myo], m0=m0, ts_s=ts, relaxivity=config.relaxivity,
                           baseline=n_base)
    px.saturated[s.slice_index] = sat
    _, gd_u = resample_uniform(s.times_s, gd.T, dt_s=on.dt, t0_s=on.t0, n=on.n)
    fm = on.aif_ok & _frame_mask(qc, s.times_s, on.times)
    if fm.sum() < 10:
        raise StudyError(f"{s.name}: only {int(fm.sum())} frames left after motion QC")
    px.curves.append(gd_u)
    px.masks.append(np.broadcast_to(fm, gd_u.shape))
    px.owners.append(s.slice_index)
    px.groups.append(1000 * s.slice_index + aha[w.myo].astype(np.int64))  # int16 labels
    px.dgroups.append(np.full(gd_u.shape[0], s.slice_index))
    # pixels off the partial-volume borders (blood pools, epicardium); distances
    # in acquired pixels (the point-spread's reach), i.e. scaled for zero-filling
    if w.pixel_scale != 1.0:
        log.info("%s: pixel distances scaled by %.2f (images interpolated to a finer "
                 "matrix than acquired)", s.name, w.pixel_scale)
    px.cores.append(core_pixels(w.myo, w.blood, aha, w.pixel_scale)[w.myo])
    px.dcores.append(delay_core(px.cores[-1], w.myo, w.rv, w.pixel_scale))
    # pixels near a cavity hold some of its blood's signal, mixed before the [Gd]
    # conversion: fitted with the slice's own pool signal (spillover.SignalMix)
    rim = np.full(int(w.myo.sum()), -1)
    for kind, pool, nb in ((0, w.lv_core, n_lv), (1, rv_core, n_rv)):
        sig = None
        if (near == kind).any() and pool is not None and pool.any():
            sig = pool_signal(im, pool, baseline=min(nb, n_lv),
                              m0=_pool_m0(s, im, pool, nb, ts, config))
        if sig is not None:
            px.pools.append(resample_uniform(s.times_s, sig[0], dt_s=on.dt, t0_s=on.t0,
                                             n=on.n)[1])
            px.pool_base.append(sig[1])
            rim[near == kind] = len(px.pools)
    px.rims.append(rim)
    px.base_q.append(baseline_q(im[:, w.myo], m0, n_base))
    px.ts_r.append(np.full(rim.shape, ts * config.relaxivity))


def _maps(fit, px: _Pixels, work, aha_maps, config: QuantConfig, msgs):
    """Per slice: the MBF map, the fit quality, the flags, the pixels each segment's
    median is taken over (core pixels where a segment has enough) and the dark rim's.
    """
    mbf_maps, quality, flagged, valid, dark, pos = {}, {}, {}, {}, {}, 0
    for sl, cur, core in zip(px.owners, px.curves, px.cores):
        part = slice(pos, pos + cur.shape[0])
        pos += cur.shape[0]
        myo = work[sl].myo
        mbf, r2 = fit.mbf[part], fit.r2[part]  # rim pixels: per volume of their myocardium
        artefact = px.saturated[sl] | px.dark[sl]
        bad = ~fit.ok[part] | ~np.isfinite(mbf) | (mbf > config.max_mbf) | artefact
        mbf_maps[sl] = np.zeros(myo.shape, np.float32)
        mbf_maps[sl][myo] = np.nan_to_num(np.clip(mbf, 0.0, None))
        quality[sl] = np.zeros(myo.shape, np.float32)
        quality[sl][myo] = r2
        flagged[sl] = np.zeros(myo.shape, bool)
        flagged[sl][myo] = bad
        aha = aha_maps[sl][myo]
        fitted = np.isfinite(mbf) & ~artefact  # the median is robust to the MBF flags
        use = segment_pixels(fitted, core, aha, display_angle(np.argwhere(myo), work[sl].centre,
                                                             work[sl].spacing_mm))
        valid[sl] = np.zeros(myo.shape, bool)
        valid[sl][myo] = use
        dark[sl] = np.zeros(myo.shape, bool)
        dark[sl][myo] = px.dark[sl]
        if bad.mean() > 0.2:
            warn(msgs, f"slice {sl}: {100 * bad.mean():.0f}% of myocardial pixels flagged "
                        "(poor fit, unphysical MBF, saturated signal or a dark rim)")
    return mbf_maps, quality, flagged, valid, dark


def _default_saturation_times(msgs, slices, config: QuantConfig) -> None:
    """Warn where a slice's header gave no saturation time and the default is used."""
    missing = [s for s in slices if not s.saturation_time_s]
    if not missing:
        return
    used = [config.default_saturation_time(aif=aif)
            for aif in sorted({s.role is SliceRole.AIF for s in missing})]
    what = " and ".join(f"{1000 * ts:g} ms ({key})" for key, ts in used)
    warn(msgs, f"no saturation time in the headers of {', '.join(s.name for s in missing)}: "
               f"{what} used; [Gd] and MBF scale with it, so set it for the protocol")


def quantify_study(study: PerfusionStudy, *, config: QuantConfig,
                   qc: dict[int, np.ndarray] | None = None,
                   displacements: dict[int, np.ndarray] | None = None,
                   pd_displacements: dict[int, np.ndarray] | None = None,
                   lv_hints: dict[int, tuple[float, float]] | None = None) -> QuantResult:
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
    lv_hints : dict of int to (float, float), keyword-only, optional
        Per ``slice_index``, where the motion correction found the LV on the
        uncorrected series, in the corrected frame's pixels
        (:meth:`perfmoco.pipeline.StudyResult.lv_hints`): an LV found on the corrected
        series far from it is searched again there.

    Returns
    -------
    QuantResult

    Raises
    ------
    perfmoco.study.StudyError
        Invalid study, no usable AIF (flat, no LV blood pool) or no slice
        with a myocardium.  Problems that still allow maps (missing AIF
        slice, missing PD frames, flagged pixels) are warnings instead.
    ValueError
        ``qc``, ``displacements`` or ``pd_displacements`` naming a slice the study
        lacks, or of another shape than that slice's frames.
    """
    study.validate()
    msgs: list[str] = []
    given = config
    config, field_note = config.for_field_strength(study.field_strength_t)
    if field_note and config is not given:  # the T1s of the scan's field: said, no problem
        log.info("%s", field_note)
    elif field_note:
        warn(msgs, field_note)
    qc = dict(qc or {}) if config.exclude_qc_frames else {}
    by_index = {s.slice_index: s for s in study.slices}
    check_inputs(by_index, qc, displacements, pd_displacements)
    for s in study.slices:  # lost frames (blank: sent as zeros) are never fitted
        lost = blank_frames(s.images)
        if lost.any():
            qc[s.slice_index] = lost | np.asarray(qc.get(s.slice_index, lost), bool)
    highres = study.highres
    src = study.aif
    if src is None:
        warn(msgs, "the study has no low-resolution AIF slice; using the LV blood pool of "
                    f"{highres[0].name} instead (flagged: MBF overestimated)")
        src = highres[0]
    # 1. anatomy per slice (its LV blood can calibrate an AIF slice without PD frames)
    work = slice_anatomy(highres, config, msgs, lv_hints)
    aif = extract_aif(src, config=config, qc=qc.get(src.slice_index),
                      displacement=(displacements or {}).get(src.slice_index),
                      pd_displacement=(pd_displacements or {}).get(src.slice_index),
                      blood_references=blood_references(src, highres, work, config, qc))
    for w in aif.warnings:
        msgs.append(w)
    lost = np.flatnonzero(blank_frames(src.images))
    first_pass = lost[(lost >= aif.arrival_index) & (lost <= aif.peak_index + 2)]
    if first_pass.size:  # the bolus' shape there is made up by the interpolation
        warn(msgs, f"{src.name}: lost dynamics {first_pass.tolist()} fall in the AIF's first "
                   f"pass (dynamics {aif.arrival_index}-{aif.peak_index} to its peak): its "
                   "curve is interpolated there, MBF may be wrong")
    _default_saturation_times(msgs, [*highres, src] if src.role is SliceRole.AIF else highres,
                              config)
    dt = float(np.median(np.diff(aif.times_s)))
    t0 = max([aif.times_s[0]] + [s.times_s[0] for s in highres])
    t1 = min([aif.times_s[-1]] + [s.times_s[-1] for s in highres])
    n = int(np.floor((t1 - t0) / dt + 1e-9)) + 1
    if n < 10:
        raise StudyError(f"the slices share only {n} time points on a {dt:.2f} s grid")
    grid, aif_u = resample_uniform(aif.times_s, aif.gd, dt_s=dt, t0_s=t0, n=n)
    aif_ok = _frame_mask(qc.get(src.slice_index), aif.times_s, grid)
    # 2. AHA labels
    levels = study_levels(highres, work, config.slice_levels, msgs)
    aha_maps, ins_out = aha_labels(highres, work, levels, msgs)
    # 3. signal -> [Gd] -> uniform grid, every myocardial pixel of every slice
    on = _Grid(times=grid, dt=dt, t0=t0, n=n, aif_ok=aif_ok)
    px = _Pixels()
    efficiency: dict[str, float] = {}  # measured where PD frames exist, per slice
    for s in highres:
        w = work.get(s.slice_index)
        if w is not None:
            _add_slice(px, s, w, aha_maps[s.slice_index], on, config=config,
                       qc=qc.get(s.slice_index), msgs=msgs, efficiency=efficiency,
                       fields=(displacements, pd_displacements))
    measured = _efficiencies(efficiency, aif, aif_slice=src.role is SliceRole.AIF)
    pd_not_m0 = implausible_efficiency(msgs, measured, pd_scale=config.pd_scale)
    odd_m0 = set() if pd_not_m0 else odd_slice_efficiency(
        msgs, {s.slice_index: (s.name, efficiency.get(s.name, np.nan)) for s in highres})
    for i, sl in enumerate(px.owners):  # its [Gd] off: not behind the study's delay
        if sl in odd_m0:
            px.dcores[i] = np.zeros_like(px.dcores[i])
    if odd_m0:  # the sequence's efficiency, as a site reuses it: of the other slices
        measured = _efficiencies({s.name: efficiency[s.name] for s in highres
                                  if s.name in efficiency and s.slice_index not in odd_m0},
                                 aif, aif_slice=src.role is SliceRole.AIF)
    delay_fits: list = []
    fit, gfit, gids = fit_fermi_grouped(
        aif=aif_u, dt_s=dt, density=config.tissue_density, r2_min=config.r2_min,
        fast_pixels=config.fast_pixel_fit, denoise=config.temporal_denoise,
        group_blood=config.blood_spillover, delay_group_window_s=config.slice_delay_window_s,
        delay_fits=delay_fits, min_tau0_s=MIN_TAU0_S,
        group_shape_range=config.segment_shape_range or None, **px.fit_inputs())
    suspect = implausible_shape(msgs, delay_fits, {s.slice_index: s.name for s in highres})
    seg_keys = [(int(g) // 1000, int(g) % 1000) for g in gids]  # (slice, segment)
    # a segment fit on its bound did not converge on a flow (the table's fit says NaN)
    at_bound = gfit.mbf >= 0.999 * F_BOUNDS[1] * 60.0 / config.tissue_density
    seg_fit = dict(zip(seg_keys, map(float, np.where(at_bound, np.nan, gfit.mbf))))
    seg_vb = dict(zip(seg_keys, map(float, np.where(at_bound, np.nan, gfit.vb))))
    # 4. maps, flags and the segment table (core pixels where a segment has enough)
    mbf_maps, quality, flagged, valid, dark = _maps(fit, px, work, aha_maps, config, msgs)
    rows = segment_table(mbf_maps, aha_maps, valid=valid, fit_mbf=seg_fit, fit_vb=seg_vb,
                         flagged=flagged, artefact=dark,
                         max_se=config.segment_max_se,
                         max_flagged=config.segment_max_flagged, below=config.ischemia_mbf)
    for r in rows:  # the dark rim's deepest fall below the pre-contrast signal (0: none)
        r["dark_rim"] = float(px.dark_found.get(r["slice"], {}).get(r["segment"], 0.0))
    suspect_segments(rows, suspect)
    if odd_m0:
        suspect_segments(rows, odd_m0, why=ODD_M0)
    if pd_not_m0:  # problems of the study's: all its segments
        suspect_segments(rows, why="the PD frames do not read as the dynamics' M0 "
                                   "(quant.pd_scale)")
    if not config.baseline_frames and aif.arrival_index <= MIN_PRE_FRAMES:
        suspect_segments(rows, why=f"the AIF's bolus left at most {MIN_PRE_FRAMES} "
                                   "pre-contrast frames")
    if first_pass.size:  # 3 upslope frames lost: +36 % (tests/test_quant_study.py)
        suspect_segments(rows, why="the AIF lost dynamics in its first pass")
    if aif.off_blood:  # the AIF's scale or the slices': every MBF is off either way
        suspect_segments(rows, why="the AIF's [Gd] after the first pass is off the "
                                   "high-resolution slices' LV blood")
    for why, slices in unmeasured_scales(src, highres, config, aif_calibrated=aif.calibrated):
        suspect_segments(rows, slices, why=why)
    return QuantResult(
        mbf_maps=mbf_maps, fit_quality=quality, flagged=flagged,
        myocardium={k: w.myo for k, w in work.items()}, aha=aha_maps, rv_insertion=ins_out,
        segments=rows, aif_gd=aif_u, aif_times_s=grid, warnings=msgs,
        ischemia_mbf=config.ischemia_mbf,
        saturation_efficiency=measured,
    )
