"""The AIF's [Gd] scale where its slice has no PD frames: from the LV blood after the first pass.

Why: without PD frames the AIF slice's ``M0`` comes from its baseline,
``S_pre / (1 - eta exp(-TS / T1))``, and at its short TS an efficiency ``eta`` off
by a tenth moves ``M0`` several-fold (the AIF read 0.35 mmol/l at its peak against
3.5 with the default 1 on 12928 a).  The high-resolution slices image the same
LV blood, with their own PD frames.  After the first pass its [Gd] is low and
changes slowly: there their longer TS reads it well (``S / M0`` well below 1,
where it saturates during the first pass) and the slices' different trigger times
no longer matter.  The AIF slice's ``M0`` is the one that makes its [Gd] there
equal theirs (one equation, monotonic in ``M0``: :func:`scipy.optimize.brentq`);
the efficiency it implies is what a site would set as
``quant.saturation_efficiency_aif`` (the study's summary prints it).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy.optimize import brentq

from perfmoco.config import QuantConfig
from perfmoco.quant.signal import pre_contrast_frames, saturation_efficiency, signal_to_gd

log = logging.getLogger(__name__)

__all__ = ["AifCalibration", "BloodReference", "blood_references", "calibrate_aif_m0",
           "lv_blood_reference", "tail_agreement"]

#: High-resolution blood ``S / M0`` above this reads [Gd] too close to saturation to be used.
MAX_RATIO = 0.8
#: Tail frames: after the AIF's peak, with its enhancement (signal above the
#: baseline) below this fraction of the peak's.
TAIL_FRACTION = 0.5
#: Fewest tail frames a calibration rests on.
MIN_TAIL_FRAMES = 5
#: An AIF with its own M0 whose tail [Gd] is off the high-resolution blood's by more than
#: this factor (either way) is named (:func:`tail_agreement`).
AGREEMENT = 1.2


@dataclasses.dataclass(frozen=True)
class BloodReference:
    """LV blood [Gd] of one high-resolution slice (its PD frames' ``M0``)."""

    name: str
    times_s: np.ndarray  #: (T,) s
    gd: np.ndarray  #: (T,) mmol/l
    ratio: np.ndarray  #: (T,) the blood's S / M0


@dataclasses.dataclass(frozen=True)
class AifCalibration:
    """What :func:`calibrate_aif_m0` found: the AIF's ``M0`` and how it got it."""

    m0: float
    efficiency: float  #: the effective saturation efficiency that ``M0`` implies
    frames: tuple[int, int]  #: first and last AIF dynamic used (0-based)
    slices: tuple[str, ...]  #: the high-resolution slices it rests on
    spread: float  #: relative SD of their tail [Gd] (0 with one slice)

    def describe(self, name: str) -> str:
        """One line for the study's messages."""
        return (f"{name} has no PD frames: its M0 calibrated on the LV blood of "
                f"{', '.join(self.slices)} after the first pass (dynamics {self.frames[0] + 1}-"
                f"{self.frames[1] + 1}; the slices agree within {self.spread:.0%}), an effective "
                f"saturation efficiency of {self.efficiency:.3f} (set "
                "quant.saturation_efficiency_aif to use a measured one)")


def lv_blood_reference(series, lv_core, config: QuantConfig, qc=None) -> BloodReference | None:
    """The LV blood [Gd] of a high-resolution slice with PD frames, None without them.

    ``lv_core``: the pool's core (``SliceWork.lv_core``); ``qc``: frames flagged by motion QC
    (interpolated from their neighbours).
    """
    core = None if lv_core is None else np.asarray(lv_core, bool)
    if series.pd_images.shape[0] == 0 or core is None or core.sum() < 4:
        return None
    sig = np.asarray(series.images)[:, core].mean(axis=1, dtype=np.float64)
    bad = None if qc is None else np.asarray(qc, bool)
    if bad is not None and bad.shape == sig.shape and bad.any() and (~bad).sum() >= 2:
        idx = np.arange(sig.size)  # the pool's curve interpolated, not the whole series
        sig = np.interp(idx, idx[~bad], sig[~bad])
    m0 = float(np.asarray(series.pd_images, np.float64)[:, core].mean()) * config.pd_scale
    if not (m0 > 0 and np.isfinite(sig).all() and sig.size >= 4):
        return None
    ts = series.saturation_time_s or config.default_saturation_time(aif=False)[1]
    n_base = int(min(config.baseline_frames or pre_contrast_frames(sig), sig.size - 3))
    gd, _ = signal_to_gd(sig, m0=m0, ts_s=ts, relaxivity=config.relaxivity, baseline=n_base)
    return BloodReference(series.name, np.asarray(series.times_s, np.float64), gd, sig / m0)


def blood_references(aif_series, highres, work, config: QuantConfig, qc: dict):
    """The references of :func:`calibrate_aif_m0` (an AIF slice without PD frames and
    ``quant.saturation_efficiency_aif`` not set) and :func:`tail_agreement` (else); None
    where the AIF comes from a high-resolution slice.

    ``work``: each high-resolution slice's anatomy by ``slice_index``; ``qc``: QC flags by
    ``slice_index``.
    """
    if aif_series.role.value != "aif":
        return None
    return [lv_blood_reference(s, work[s.slice_index].lv_core, config, qc.get(s.slice_index))
            for s in highres if s.slice_index in work]


def _tail(sig, times_s, references, n_base: int):
    """``(tail, per_slice, refs)``: the AIF's frames after the first pass (bool, (T,)), each
    reference's mean [Gd] over them and the references used; or why there are none.
    """
    t = np.asarray(times_s, np.float64)
    refs = [r for r in references if r is not None]
    if not refs:
        return "no high-resolution slice with PD frames and an LV blood pool"
    base = float(sig[:n_base].mean())
    peak = int(np.argmax(sig))
    rise = sig[peak] - base
    gd = np.array([np.interp(t, r.times_s, r.gd, left=np.nan, right=np.nan) for r in refs])
    ratio = np.array([np.interp(t, r.times_s, r.ratio, left=np.nan, right=np.nan)
                      for r in refs])
    tail = ((np.arange(sig.size) > peak) & (sig - base < TAIL_FRACTION * rise)
            & np.isfinite(gd).all(axis=0) & (np.nan_to_num(ratio, nan=1.0) < MAX_RATIO).all(axis=0))
    if not rise > 0 or tail.sum() < MIN_TAIL_FRAMES:
        return (f"only {int(tail.sum())} dynamics after the first pass (need {MIN_TAIL_FRAMES}) "
                "to calibrate it on the LV blood of the high-resolution slices")
    per_slice = gd[:, tail].mean(axis=1)
    if not per_slice.mean() > 0:
        return "the high-resolution slices' LV blood shows no contrast after the first pass"
    return tail, per_slice, refs


def tail_agreement(gd, signal, times_s, references, *, n_base: int) -> str | None:
    """A message where an AIF measured with its own M0 disagrees with the LV blood of the
    high-resolution slices after the first pass by more than :data:`AGREEMENT`; None where
    it agrees or there is nothing to compare with.

    Both read the same blood, so the ratio of their [Gd] there is the AIF's scale error
    (the phantom's studies: within 2 %).  Off: the AIF slice's PD frames do not read as its
    ``M0`` (another readout, ``quant.pd_scale`` is one setting for both sequences), a
    site's ``quant.saturation_efficiency_aif`` that is wrong, or a pool that holds other
    tissue; every MBF scales with the AIF's error, inversely.
    """
    sig = np.asarray(signal, np.float64)
    found = _tail(sig, times_s, references, n_base)
    if isinstance(found, str):
        return None
    tail, per_slice, refs = found
    ratio = float(np.asarray(gd, np.float64)[tail].mean() / per_slice.mean())
    log.info("AIF after the first pass: %.3f x the LV blood of %s", ratio,
             ", ".join(r.name for r in refs))
    if abs(np.log(ratio)) <= np.log(AGREEMENT):
        return None
    idx = np.flatnonzero(tail)
    return (f"the AIF's [Gd] after the first pass (dynamics {idx[0] + 1}-{idx[-1] + 1}) reads "
            f"{ratio:.2f} x the LV blood of the high-resolution slices: its PD frames may not "
            "read as its M0 (quant.pd_scale), a set quant.saturation_efficiency_aif may be "
            f"wrong, or a pool holds other tissue; MBF may be off by about 1/{ratio:.2f}")


def calibrate_aif_m0(signal, times_s, references, *, n_base: int, ts_s: float,
                     config: QuantConfig) -> AifCalibration | str:
    """The AIF slice's ``M0`` that matches its tail [Gd] to the references'.

    Parameters
    ----------
    signal : ndarray, shape (T,)
        The AIF blood pool's mean signal (motion-corrected, QC frames interpolated).
    times_s : ndarray, shape (T,)
        Its acquisition times, s (the references' clock).
    references : list of BloodReference
    n_base : int, keyword-only
        The AIF's pre-contrast frames.
    ts_s : float, keyword-only
        The AIF sequence's saturation time, s.
    config : QuantConfig, keyword-only
        Relaxivity and the native blood T1 (for the efficiency reported).

    Returns
    -------
    AifCalibration, or str
        Why no calibration was possible (a clause for the study's messages).
    """
    sig = np.asarray(signal, np.float64)
    tail = _tail(sig, times_s, references, n_base)
    if isinstance(tail, str):
        return tail
    tail, per_slice, refs = tail
    target = float(per_slice.mean())

    def excess(m0: float) -> float:
        g, _ = signal_to_gd(sig, m0=m0, ts_s=ts_s, relaxivity=config.relaxivity, baseline=n_base)
        return float(g[tail].mean()) - target

    lo, hi = 1.0001 * float(sig.max()), 1e4 * float(sig.max())
    if not (excess(lo) > 0 > excess(hi)):
        return "its tail cannot reach the high-resolution slices' LV blood [Gd]"
    m0 = float(brentq(excess, lo, hi, xtol=1e-9 * lo, rtol=1e-10))
    eta = saturation_efficiency(sig[:n_base], m0, ts_s=ts_s, t1_s=config.t1_blood_s)
    idx = np.flatnonzero(tail)
    spread = float(per_slice.std() / target) if per_slice.size > 1 else 0.0
    return AifCalibration(m0, float(eta), (int(idx[0]), int(idx[-1])),
                          tuple(r.name for r in refs), spread)
