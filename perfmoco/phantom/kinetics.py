"""Contrast kinetics: heartbeat timing, blood curves, tissue uptake, MBF maps.

All curves are computed on a fine uniform grid (``dt`` = 0.05 s, starting at
the first heartbeat of the acquisition) and sampled at the acquisition times
of each slice by linear interpolation.  The myocardium follows the shared
forward model :func:`perfmoco.quant.model.tissue_curve` with a Fermi impulse
response whose amplitude is the true pixel-wise MBF
(:func:`perfmoco.quant.model.mbf_to_flow`), applied to the LV blood curve
(the AIF, blood [Gd], no haematocrit correction).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perfmoco.config import QuantConfig
from perfmoco.quant.model import mbf_to_flow, tissue_curve

__all__ = [
    "Beats",
    "BloodCurves",
    "FINE_DT_S",
    "blood_curves",
    "draw_beats",
    "fermi_curves",
    "mbf_map",
    "sample",
    "tofts_curve",
]

#: Step of the fine time grid, s.
FINE_DT_S = 0.05
#: Scanner time-stamp tick (MRD ``acquisition_time_stamp``), s.
TICK_S = 0.0025

#: AHA segments of each coronary territory (apex 17 is not imaged).
TERRITORIES: dict[str, tuple[int, ...]] = {
    "LAD": (1, 2, 7, 8, 13, 14),
    "RCA": (3, 4, 9, 10, 15),
    "LCX": (5, 6, 11, 12, 16),
}


@dataclasses.dataclass(frozen=True)
class Beats:
    """Heartbeat timing of one acquisition.

    Attributes
    ----------
    r_peaks_s : ndarray, shape (P + T,)
        R-wave times, s from the first beat; the first ``n_pd`` beats carry
        the PD frames, the rest one dynamic each.
    n_pd : int
        Number of PD frames per slice.
    slice_offsets_s : ndarray, shape (4,)
        Acquisition delay after the R wave of high-res slices 0, 1, 2 and of the
        AIF slice (index 3), s.
    clock_s : float
        Time of day of the first R wave, s since midnight.

    All times are whole 2.5 ms ticks, as scanners stamp them.
    """

    r_peaks_s: np.ndarray
    n_pd: int
    slice_offsets_s: np.ndarray
    clock_s: float

    def times(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """PD and dynamic acquisition times (s from the first beat) of slice ``slot``."""
        t = self.r_peaks_s + self.slice_offsets_s[slot]
        return t[: self.n_pd], t[self.n_pd :]


def draw_beats(rng: np.random.Generator, n_dynamics: int) -> Beats:
    """Stress heartbeat timing: 90-110 bpm with beat-to-beat jitter and drift.

    Parameters
    ----------
    rng : numpy.random.Generator
        Seeded generator.
    n_dynamics : int
        Number of dynamics (beats after the PD frames).
    """
    n_pd = int(rng.integers(2, 4))
    n = n_pd + n_dynamics
    rr0 = 60.0 / rng.uniform(90.0, 110.0)
    drift = np.cumsum(rng.normal(0.0, 0.006, n))  # slow heart-rate wander
    drift -= drift.mean()
    rr = rr0 * (1.0 + drift + rng.normal(0.0, 0.025, n))
    rr = np.clip(rr, 0.45, 0.9)
    r_peaks = np.concatenate([[0.0], np.cumsum(rr[:-1])])
    aif_delay = rng.uniform(0.03, 0.05)
    step = rng.uniform(0.13, 0.16)  # one high-res slice readout
    offsets = np.array([aif_delay + 0.05 + step * k for k in range(3)] + [aif_delay])
    clock = float(rng.uniform(8.0, 17.0) * 3600.0)
    # time stamps as a scanner sets them: whole ticks of 2.5 ms
    r_peaks, offsets, clock = (np.round(np.asarray(v) / TICK_S) * TICK_S
                               for v in (r_peaks, offsets, clock))
    clock = float(clock)
    return Beats(r_peaks_s=r_peaks, n_pd=n_pd, slice_offsets_s=offsets, clock_s=clock)


def _gamma(t, t0, alpha, beta):
    """Unit-peak gamma variate starting at ``t0``."""
    s = np.clip((t - t0) / (alpha * beta), 0.0, None)
    return np.where(s > 0, (s * np.exp(1.0 - s)) ** alpha, 0.0)


@dataclasses.dataclass(frozen=True)
class BloodCurves:
    """Blood [Gd] on the fine grid, mmol/l.

    Attributes
    ----------
    t_s : ndarray, shape (N,)
        Fine grid, s from the first beat (``t_s[0] = 0``).
    lv, rv, aorta : ndarray, shape (N,)
        LV blood (the AIF), RV blood and descending-aorta blood [Gd].
    lv_peak_s : float
        Time of the LV first-pass peak, s.
    """

    t_s: np.ndarray
    lv: np.ndarray
    rv: np.ndarray
    aorta: np.ndarray
    lv_peak_s: float


def blood_curves(rng: np.random.Generator, *, t_end_s: float, lv_peak_s: float) -> BloodCurves:
    """Gamma-variate first pass with recirculation and a slow equilibrium phase.

    Parameters
    ----------
    rng : numpy.random.Generator
        Seeded generator.
    t_end_s : float
        End of the fine grid, s.
    lv_peak_s : float
        Wanted time of the LV first-pass peak, s from the first beat.

    Returns
    -------
    BloodCurves
        LV peak 3-6 mmol/l; the RV bolus arrives 1.2-2.5 s and peaks 2.4-4.5 s
        (a few beats) earlier: the pulmonary transit at stress.
    """
    t = np.arange(0.0, t_end_s + FINE_DT_S, FINE_DT_S)
    alpha = rng.uniform(2.0, 3.2)
    rise = rng.uniform(4.0, 6.5)  # arrival to peak, s
    beta = rise / alpha
    t0 = lv_peak_s - rise
    recirc_delay = rng.uniform(7.0, 10.0)
    recirc_amp = rng.uniform(0.08, 0.16)
    eq_amp = rng.uniform(0.12, 0.2)
    washout = rng.uniform(200.0, 400.0)

    def shape(shift, beta_scale=1.0):
        first = _gamma(t, t0 - shift, alpha, beta * beta_scale)
        second = recirc_amp * _gamma(t, t0 - shift + recirc_delay, alpha, 2.2 * beta)
        ramp = np.clip((t - (t0 - shift + recirc_delay)) / (2.5 * rise), 0.0, None)
        eq = eq_amp * (1.0 - np.exp(-ramp)) * np.exp(-np.clip(t - t0, 0, None) / washout)
        return first + second + eq

    peak = rng.uniform(3.2, 5.8)
    lv = shape(0.0)
    lv *= peak / lv.max()
    rv_lead = rng.uniform(1.2, 2.5)
    rv = shape(rv_lead, 0.7)
    rv *= peak * rng.uniform(1.2, 1.6) / rv.max()
    ao_shift = int(round(rng.uniform(0.4, 0.8) / FINE_DT_S))
    aorta = np.concatenate([np.zeros(ao_shift), lv[: len(lv) - ao_shift]])
    return BloodCurves(t_s=t, lv=lv, rv=rv, aorta=aorta, lv_peak_s=float(t[np.argmax(lv)]))


def fermi_curves(aif_gd, mbf, *, tau0_s, k_per_s, delay_s, density: float | None = None):
    """Tissue [Gd] for MBF values: :func:`tissue_curve` with a Fermi response.

    Parameters
    ----------
    aif_gd : ndarray, shape (N,)
        Blood [Gd] on the fine grid, mmol/l.
    mbf : ndarray, shape (M,)
        MBF per curve, ml/min/g.
    tau0_s, k_per_s, delay_s : float or ndarray, shape (M,)
        Fermi plateau width (s), decay rate (1/s) and bolus delay (s).
    density : float, optional
        Tissue density, g/ml (default :class:`QuantConfig`'s).

    Returns
    -------
    ndarray, shape (M, N), mmol/l
    """
    rho = QuantConfig().tissue_density if density is None else density
    flow = mbf_to_flow(np.asarray(mbf, np.float64), density=rho)
    return tissue_curve(aif_gd, dt_s=FINE_DT_S, flow_per_s=flow, tau0_s=tau0_s,
                        k_per_s=k_per_s, delay_s=delay_s)


def tofts_curve(blood_gd, *, ktrans_per_s: float, kep_per_s: float, vp: float):
    """Extended-Tofts uptake ``vp Cb + Ktrans Cb (*) exp(-kep t)`` on the fine grid, mmol/l."""
    n = blood_gd.shape[0]
    kernel = ktrans_per_s * np.exp(-kep_per_s * np.arange(n) * FINE_DT_S) * FINE_DT_S
    m = 1 << int(np.ceil(np.log2(2 * n)))
    conv = np.fft.irfft(np.fft.rfft(kernel, m) * np.fft.rfft(blood_gd, m), m)[:n]
    return vp * blood_gd + conv


def sample(curves, t_fine_s, t_s):
    """Linearly interpolate fine-grid curves ``(..., N)`` at times ``t_s`` -> ``(..., T)``."""
    pos = np.clip((np.asarray(t_s) - t_fine_s[0]) / FINE_DT_S, 0, len(t_fine_s) - 1.000001)
    i = np.floor(pos).astype(int)
    f = pos - i
    return curves[..., i] * (1.0 - f) + curves[..., i + 1] * f


def draw_defects(rng: np.random.Generator) -> list[dict]:
    """Seeded perfusion defects: territory, extent, transmurality and MBF.

    Returns
    -------
    list of dict
        Keys ``territory``, ``mbf`` (0.6-1.5 ml/min/g), ``subendo`` (None for
        transmural, else the transmural fraction 0.35-0.6 from the endocardium),
        ``keep`` (fraction 0.5-1 of the territory's arc affected), ``shift``
        (where in the arc, 0..1) and ``slices`` (affected slice indices).
    """
    n = int(rng.choice([0, 1, 1, 1, 2], p=[0.25, 0.2, 0.2, 0.15, 0.2]))
    names = rng.choice(list(TERRITORIES), size=n, replace=False)
    out = []
    for name in names:
        first = int(rng.integers(0, 2))
        out.append(
            dict(
                territory=str(name),
                mbf=float(rng.uniform(0.65, 1.45)),
                subendo=None if rng.random() < 0.5 else float(rng.uniform(0.35, 0.6)),
                keep=float(rng.uniform(0.5, 1.0)),
                shift=float(rng.uniform(0.0, 1.0)),
                slices=tuple(range(first, 3)),
            )
        )
    return out


def mbf_map(rng, labels, depth, theta, *, ant_deg, level, slice_index, defects, healthy,
            myo_label: int):
    """True stress MBF map of one slice, ml/min/g (0 outside the LV myocardium).

    Parameters
    ----------
    rng : numpy.random.Generator
        Seeded generator (smooth variation).
    labels, depth, theta : ndarray, shape (Y, X)
        From :func:`perfmoco.phantom.anatomy.render_slice`.
    ant_deg : float
        Display angle of the anterior RV insertion, degrees.
    level : {"basal", "mid", "apical"}
        Slice level (AHA segment layout).
    slice_index : int
        0, 1, 2 (which defects apply).
    defects : list of dict
        From :func:`draw_defects`.
    healthy : float
        Mean healthy stress MBF of the study, ml/min/g.
    myo_label : int
        Label value of the LV myocardium.

    Returns
    -------
    ndarray, shape (Y, X), float64
    """
    from scipy import ndimage

    myo = labels == myo_label
    field = ndimage.gaussian_filter(rng.standard_normal(labels.shape), 4.0)
    field /= max(float(field[myo].std()) if myo.any() else 1.0, 1e-9)
    # smooth regional variation (+-6%) and a mild endocardial excess at stress
    mbf = healthy * (1.0 + 0.06 * field) * (1.0 + 0.06 * (0.5 - depth))
    seg_w = 90.0 if level == "apical" else 60.0
    seg_order = ([14, 15, 16, 13] if level == "apical" else
                 [s + (6 if level == "mid" else 0) for s in (2, 3, 4, 5, 6, 1)])
    rel = (theta - ant_deg) % 360.0
    for d in defects:
        if slice_index not in d["slices"]:
            continue
        segs = [i for i, s in enumerate(seg_order) if s in TERRITORIES[d["territory"]]]
        if not segs:
            continue
        # the territory's arc (segments are contiguous, possibly across 0/360)
        starts = sorted(i * seg_w for i in segs)
        lo = starts[0]
        if len(segs) > 1 and (starts[-1] - starts[0]) > seg_w * (len(segs) - 1):
            lo = starts[-1]  # wraps
        width = seg_w * len(segs)
        span = width * d["keep"]
        a0 = lo + (width - span) * d["shift"]
        centre = (a0 + span / 2.0) % 360.0
        dist = np.abs((rel - centre + 180.0) % 360.0 - 180.0)
        w = 1.0 / (1.0 + np.exp((dist - span / 2.0) / 4.0))
        if d["subendo"] is not None:
            w = w / (1.0 + np.exp((depth - d["subendo"]) / 0.07))
        mbf = mbf * (1.0 - w) + d["mbf"] * (1.0 + 0.03 * np.clip(field, -1, 1)) * w
    return np.where(myo, np.clip(mbf, 0.3, None), 0.0)
