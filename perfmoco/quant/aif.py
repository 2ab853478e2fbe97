"""Arterial input function from the low-resolution, short-TS AIF slice.

The LV blood pool is found automatically (:func:`perfmoco.anatomy.find_blood_pools`)
on the (motion-corrected) AIF slice; its core is averaged per frame and
converted to [Gd] with the PD-based saturation-recovery inversion of
:mod:`perfmoco.quant.signal`.  Optional corrections: T2* signal loss at high
[Gd] (``S = S_T1 * exp(-TE r2* [Gd])``, solved by fixed-point iteration) and
haematocrit (blood to plasma [Gd]: divide by ``1 - Hct``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from perfmoco.anatomy import find_blood_pools
from perfmoco.anatomy.shading import flattened
from perfmoco.config import QuantConfig
from perfmoco.frames import interpolate_frames
from perfmoco.quant.calibrate import AifCalibration, calibrate_aif_m0, tail_agreement
from perfmoco.quant.coils import PreContrastFrames, unflagged
from perfmoco.quant.messages import coil_not_followed, warn
from perfmoco.quant.resolution import half_up, series_interpolation
from perfmoco.quant.signal import (
    baseline_m0,
    bolus_arrival_index,
    coil_motion_factors,
    pre_contrast_frames,
    saturation_efficiency,
    signal_to_gd,
)
from perfmoco.study import SliceRole, SliceSeries, StudyError

log = logging.getLogger(__name__)

__all__ = ["AifResult", "blood_pool_core", "deepest_core", "extract_aif", "t2star_correct"]


@dataclasses.dataclass(frozen=True)
class AifResult:
    """Arterial input function of one study.

    Attributes
    ----------
    gd : ndarray, shape (T,), float64, mmol/l
        Blood [Gd] (plasma [Gd] with the haematocrit correction).
    times_s : ndarray, shape (T,), float64, s
        Acquisition times of the AIF slice's dynamics.
    arrival_index : int
        First dynamic of the bolus (the baseline ends one frame before it,
        :func:`perfmoco.quant.signal.pre_contrast_frames`).
    peak_index : int
        Dynamic of the AIF peak.
    mask : ndarray, shape (Y, X), bool
        Pixels averaged (core of the LV blood pool at peak).
    slice_index : int
        ``slice_index`` of the series the AIF came from.
    warnings : list of str
        Problems worth showing to a user (also issued as warnings).
    efficiency : float
        The sequence's effective saturation efficiency measured on the blood pool
        (its baseline against its PD-frame ``M0``, or against the ``M0`` calibrated
        without them); NaN without either.
    calibrated : bool
        Without PD frames: ``M0`` calibrated on the high-resolution slices' LV blood
        (:mod:`perfmoco.quant.calibrate`).
    off_blood : str
        With its own ``M0``: the message where its [Gd] after the first pass is off
        that blood's (:func:`perfmoco.quant.calibrate.tail_agreement`), else empty.
    """

    gd: np.ndarray
    times_s: np.ndarray
    arrival_index: int
    peak_index: int
    mask: np.ndarray
    slice_index: int
    warnings: list[str]
    efficiency: float = float("nan")
    calibrated: bool = False
    off_blood: str = ""

    @property
    def arrival_s(self) -> float:
        """Bolus arrival time, s (same clock as ``times_s``)."""
        return float(self.times_s[self.arrival_index])


#: An AIF whose bolus arrives within this many frames has too short a baseline (a warning).
MIN_PRE_FRAMES = 2
#: Depths (pixels from the mask's edge) tried for the blood-pool core, deepest first.
_CORE_DEPTHS_PX = (3.0, 2.5, 2.0, 1.5, 1.0)
#: Fewest pixels a core of a given depth must keep to be used.
_CORE_MIN_PX = 8


def deepest_core(mask, depths_px, min_px: int) -> np.ndarray | None:
    """Pixels at least ``d`` inside ``mask``: the first ``d`` of ``depths_px`` keeping ``min_px``.

    None when no depth keeps that many.
    """
    depth = ndimage.distance_transform_edt(np.asarray(mask, bool))
    return next((depth >= d for d in depths_px if (depth >= d).sum() >= min_px), None)


def blood_pool_core(images, lv_mask, peak_index: int, *, scale: float = 1.0) -> np.ndarray:
    """Core of a blood-pool mask, away from the partial-volume edge, brighter pixels at peak.

    The deepest core (pixels at least 3, 2.5, ... 1 pixel inside the mask's
    edge) that keeps 8 pixels is used: the image's point-spread function
    mixes myocardium into the pool's outer pixels and lowers the AIF peak
    (on the low-resolution AIF slice by 2-3 % with a one-pixel erosion).
    Of those, pixels darker than the 25th percentile at peak (papillary
    muscles) are dropped.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
    lv_mask : ndarray, shape (Y, X), bool
    peak_index : int
        Peak-enhancement dynamic.
    scale : float, keyword-only
        Pixels per acquired pixel (:mod:`perfmoco.quant.resolution`): the
        depths and pixel counts above are in acquired pixels.

    Returns
    -------
    ndarray, shape (Y, X), bool
        At least 4 pixels when the mask has them (else the mask itself).
    """
    mask = np.asarray(lv_mask, bool)
    core = deepest_core(mask, tuple(d * scale for d in _CORE_DEPTHS_PX),
                        half_up(_CORE_MIN_PX * scale**2))
    if core is None:
        core = deepest_core(mask, (1.0,), 4)
    if core is None:
        core = mask
    vals = np.asarray(images)[peak_index][core]
    if vals.size >= 8:  # drop papillary muscles
        core = core & (np.asarray(images)[peak_index] >= np.percentile(vals, 25))
    return core


def t2star_correct(gd, signal, *, m0, ts_s, relaxivity, te_s, r2star, baseline, n_iter=8):
    """Fixed-point T2* correction of a blood [Gd] curve.

    ``S = M0 (1 - exp(-TS R1)) exp(-TE r2* [Gd])``: the measured signal is
    divided by the T2* decay of the current [Gd] estimate and inverted again.

    Parameters
    ----------
    gd : ndarray, shape (T,), mmol/l
        [Gd] without the correction (the first estimate).
    signal : ndarray, shape (T,)
        Measured blood signal.
    m0, ts_s, relaxivity, baseline : keyword-only
        As in :func:`perfmoco.quant.signal.signal_to_gd`.
    te_s : float, keyword-only
        Echo time, s.
    r2star : float, keyword-only
        T2* relaxivity of blood, l/(mmol s).
    n_iter : int, keyword-only
        Fixed-point iterations.

    Returns
    -------
    ndarray, shape (T,), mmol/l
    """
    out = np.asarray(gd, np.float64)
    s = np.asarray(signal, np.float64)
    for _ in range(n_iter):
        decay = np.exp(-te_s * r2star * np.clip(out, 0.0, None))
        out, _ = signal_to_gd(s / decay, m0=m0, ts_s=ts_s, relaxivity=relaxivity,
                              baseline=baseline)
    return out


def extract_aif(series: SliceSeries, *, config: QuantConfig, qc=None, displacement=None,
                pd_displacement=None, blood_references=None) -> AifResult:
    """Automatic AIF in mmol/l from one (motion-corrected) slice series.

    Parameters
    ----------
    series : SliceSeries
        The low-resolution AIF slice (or, as a flagged fallback, a
        high-resolution slice: its long TS saturates the blood signal).
    config : QuantConfig, keyword-only
        Signal model constants and the AIF options.
    qc : ndarray, shape (T,), bool, keyword-only, optional
        True for frames flagged by motion QC; they are replaced by linear
        interpolation from their neighbours.
    displacement, pd_displacement : ndarray, keyword-only, optional
        The motion correction's pull-back displacement of the dynamics
        ``(T, 2, Y, X)`` and of the PD frames ``(P, 2, Y, X)``, pixels.  With
        them ``M0`` follows the coil sensitivity each frame's blood pool was
        acquired at (:func:`perfmoco.quant.signal.coil_motion_factors`):
        without, breathing against a fixed surface-coil profile modulates the
        blood signal by several % and distorts the AIF's upslope.
    blood_references : list of BloodReference, keyword-only, optional
        The high-resolution slices' LV blood.  Without PD frames and with
        ``quant.saturation_efficiency_aif`` not set: ``M0`` from their [Gd] after the
        first pass (:func:`perfmoco.quant.calibrate.calibrate_aif_m0`) instead of the
        baseline and the default efficiency (the fallback, said, where that fails).
        Otherwise the AIF is checked against them there
        (:func:`perfmoco.quant.calibrate.tail_agreement`: a message where it is off).

    Returns
    -------
    AifResult

    Raises
    ------
    perfmoco.study.StudyError
        No LV blood pool, or a flat AIF (peak below ``config.min_aif_peak_gd``).
    """
    msgs: list[str] = []
    im = np.asarray(series.images, np.float64)
    bad = None if qc is None else np.asarray(qc, bool)
    if bad is not None and not (bad.shape == im.shape[:1] and bad.any() and (~bad).sum() >= 5):
        bad = None
    # the pool found without the coils' shading, and on the frames the QC kept
    flat = interpolate_frames(flattened(series), bad)
    pools = find_blood_pools(flat, times_s=series.times_s, spacing_mm=series.pixel_spacing_mm)
    scale = series_interpolation(series, config.interpolation)
    core = blood_pool_core(flat, pools.lv_mask, pools.peak_lv_index, scale=scale)
    sig = im[:, core].mean(axis=1)
    if bad is not None:
        idx = np.arange(sig.size)
        sig = np.interp(idx, idx[~bad], sig[~bad])
    is_aif = series.role is SliceRole.AIF
    ts = series.saturation_time_s or config.default_saturation_time(aif=is_aif)[1]
    arrival = int(min(config.baseline_frames or bolus_arrival_index(sig), sig.size - 3))
    n_base = int(min(config.baseline_frames or pre_contrast_frames(sig), sig.size - 3))
    if not config.baseline_frames and arrival <= MIN_PRE_FRAMES:
        warn(msgs, f"{series.name}: the AIF's bolus arrives by dynamic {arrival + 1}, leaving "
                    f"at most {arrival} pre-contrast frames (was the scan started after the "
                    "injection?): the baselines and MBF are uncertain")
    key, eta = config.no_pd_efficiency(aif=is_aif)
    measured, cal = float("nan"), None
    if series.pd_images.shape[0] > 0:
        m0 = float(np.asarray(series.pd_images, np.float64)[:, core].mean()) * config.pd_scale
        measured = saturation_efficiency(sig[:n_base], m0, ts_s=ts, t1_s=config.t1_blood_s)
        log.info("%s: effective saturation efficiency %.3f (blood's baseline against its "
                 "PD-frame M0, native T1 %s s; %s for this protocol's studies without PD "
                 "frames)", series.name, measured, config.t1_blood_s, key)
        if displacement is not None:  # the coil sensitivity each frame's pool was seen at
            yy, xx = np.nonzero(core)
            skipped: list[str] = []
            # the profile measured where the pool's blood is the same in every frame
            pre = unflagged(n_base, qc, im.shape[0])
            region = core | ndimage.binary_erosion(pools.lv_mask, iterations=max(1, half_up(scale)))
            m0 = m0 * coil_motion_factors(
                series.pd_images, displacement, pixels=core, centre=(yy.mean(), xx.mean()),
                spacing_mm=series.pixel_spacing_mm, pd_displacement=pd_displacement,
                skipped=skipped,
                baseline=PreContrastFrames(im[pre], np.asarray(displacement)[pre], region),
            ).mean(axis=1)
            if skipped:
                coil_not_followed(msgs, series.name, skipped[0], aif=True)
    else:
        if blood_references is not None and not config.no_pd_efficiency_set(aif=is_aif):
            cal = calibrate_aif_m0(sig, series.times_s, blood_references, n_base=n_base,
                                   ts_s=ts, config=config)
        if isinstance(cal, AifCalibration):
            m0, measured = cal.m0, cal.efficiency
            warn(msgs, cal.describe(series.name))
        else:
            m0 = float(baseline_m0(sig[:n_base].mean(), ts_s=ts, t1_s=config.t1_blood_s,
                                   efficiency=eta))
            why = "" if cal is None else f" ({cal})"
            warn(msgs, f"{series.name}: no PD frames{why}; AIF M0 from the baseline, the native "
                        f"blood T1 ({config.t1_blood_s} s) and a saturation efficiency of {eta:g} "
                        f"({key}): [Gd] may be biased")
    gd, saturated = signal_to_gd(sig, m0=m0, ts_s=ts, relaxivity=config.relaxivity,
                                 baseline=n_base)
    if config.t2star_correction:
        gd = t2star_correct(gd, sig, m0=m0, ts_s=ts, relaxivity=config.relaxivity,
                            te_s=config.te_aif_s, r2star=config.r2star_blood, baseline=n_base)
    off = None if blood_references is None or isinstance(cal, AifCalibration) else \
        tail_agreement(gd, sig, series.times_s, blood_references, n_base=n_base)
    if off:
        warn(msgs, f"{series.name}: {off}")
    if saturated:
        warn(msgs, f"{series.name}: AIF signal reaches M0 (S/M0 >= 1); the peak is clipped "
                    "and MBF will be overestimated (check pd_scale / the PD frames)")
    if config.hematocrit_correction:
        if not 0.0 <= config.hematocrit < 0.9:
            raise StudyError(f"hematocrit must be in [0, 0.9), got {config.hematocrit}")
        gd = gd / (1.0 - config.hematocrit)
    peak = int(np.argmax(gd))
    base_sd = float(np.std(gd[:n_base])) if n_base > 1 else 0.0
    calibrated = isinstance(cal, AifCalibration)
    # without PD frames (or a calibration) the absolute scale is unknown
    scale_known = series.pd_images.shape[0] > 0 or calibrated
    low = scale_known and gd[peak] < config.min_aif_peak_gd
    if gd[peak] <= 0 or gd[peak] < 5.0 * base_sd or low:
        raise StudyError(
            f"{series.name}: flat AIF (peak {gd[peak]:.2f} mmol/l, baseline SD {base_sd:.2f}; "
            f"need >= {config.min_aif_peak_gd} mmol/l): no contrast bolus in the LV blood pool?"
        )
    if not is_aif:
        warn(msgs, f"AIF taken from {series.name} (no low-resolution AIF slice): the blood "
                    "signal saturates at this TS, so MBF is overestimated")
    return AifResult(gd=gd, times_s=np.asarray(series.times_s, np.float64),
                     arrival_index=arrival, peak_index=peak, mask=core,
                     slice_index=series.slice_index, warnings=msgs, efficiency=measured,
                     calibrated=calibrated, off_blood=off or "")
