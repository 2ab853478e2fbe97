"""Forward models shared by the phantom (to simulate) and quantification (to fit).

Units: time s, [Gd] mmol/l, R1 1/s, MBF ml/min/g.  The Fermi impulse response
``h(t) = F (1 + exp(-k tau0)) / (1 + exp(k (t - tau0)))`` (Jerosch-Herold 1998,
normalised so that ``h(0) = F``) is the residue function scaled by flow; the
tissue concentration is ``C_t = C_aif (*) h`` (convolution in time).  MBF in
ml/min/g is ``F [1/s] * 60 / density``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "fermi_impulse",
    "gd_to_r1",
    "mbf_to_flow",
    "flow_to_mbf",
    "r1_to_gd",
    "saturation_recovery",
    "signal_to_r1",
    "tissue_curve",
]


def mbf_to_flow(mbf_ml_min_g, *, density: float = 1.05):
    """MBF in ml/min/g to the impulse-response amplitude F in 1/s."""
    return np.asarray(mbf_ml_min_g, dtype=np.float64) * density / 60.0


def flow_to_mbf(flow_per_s, *, density: float = 1.05):
    """Impulse-response amplitude F in 1/s to MBF in ml/min/g."""
    return np.asarray(flow_per_s, dtype=np.float64) * 60.0 / density


def fermi_impulse(t_s, *, flow_per_s, tau0_s, k_per_s):
    """Fermi-shaped impulse response, zero before ``t = 0``.

    Parameters
    ----------
    t_s : ndarray, shape (N,), float
        Times in s.
    flow_per_s, tau0_s, k_per_s : float or ndarray broadcastable against ``(..., 1)``
        Amplitude ``F`` (1/s), width of the plateau (s) and decay rate (1/s).

    Returns
    -------
    ndarray, shape (..., N)
        ``h(t)`` in 1/s; ``h(0) = F``.
    """
    t = np.asarray(t_s, dtype=np.float64)
    f = np.asarray(flow_per_s, dtype=np.float64)[..., None]
    tau = np.asarray(tau0_s, dtype=np.float64)[..., None]
    k = np.asarray(k_per_s, dtype=np.float64)[..., None]
    with np.errstate(over="ignore"):
        h = f * (1.0 + np.exp(-k * tau)) / (1.0 + np.exp(k * (t - tau)))
    return np.where(t >= 0, h, 0.0)


def tissue_curve(aif_gd, *, dt_s: float, flow_per_s, tau0_s, k_per_s, delay_s=0.0):
    """Tissue [Gd] from an AIF on a uniform grid: ``C_t = AIF (*) h(t - delay)``.

    Parameters
    ----------
    aif_gd : ndarray, shape (N,), mmol/l
        AIF sampled every ``dt_s`` seconds, starting at t = 0.
    dt_s : float, keyword-only
        Grid step, s.
    flow_per_s, tau0_s, k_per_s, delay_s : float or ndarray, shape (...)
        Fermi parameters and bolus delay (s) per curve.

    Returns
    -------
    ndarray, shape (..., N), mmol/l
    """
    aif = np.asarray(aif_gd, dtype=np.float64)
    n = aif.shape[0]
    t = np.arange(n) * dt_s - np.asarray(delay_s, dtype=np.float64)[..., None]
    h = fermi_impulse(t, flow_per_s=flow_per_s, tau0_s=tau0_s, k_per_s=k_per_s)
    # Causal discrete convolution via FFT, truncated to N samples.
    m = 1 << int(np.ceil(np.log2(2 * n)))
    out = np.fft.irfft(np.fft.rfft(h, m) * np.fft.rfft(aif, m), m)[..., :n]
    return out * dt_s


def gd_to_r1(gd, *, t1_s: float, relaxivity: float):
    """Longitudinal relaxation rate R1 (1/s) for a [Gd] (mmol/l)."""
    return 1.0 / t1_s + relaxivity * np.asarray(gd, dtype=np.float64)


def r1_to_gd(r1, *, t1_s: float, relaxivity: float):
    """[Gd] (mmol/l) from R1 (1/s); the inverse of :func:`gd_to_r1`."""
    return (np.asarray(r1, dtype=np.float64) - 1.0 / t1_s) / relaxivity


def saturation_recovery(r1, *, ts_s: float, m0):
    """Saturation-recovery signal ``S = M0 (1 - exp(-TS R1))`` (ideal saturation)."""
    return np.asarray(m0, dtype=np.float64) * (1.0 - np.exp(-ts_s * np.asarray(r1, np.float64)))


def signal_to_r1(signal, *, ts_s: float, m0):
    """Invert :func:`saturation_recovery`: ``R1 = -ln(1 - S/M0) / TS``.

    Ratios ``S/M0`` at or above 1 are clipped just below 1 (saturated signal).
    """
    ratio = np.asarray(signal, np.float64) / np.maximum(np.asarray(m0, np.float64), 1e-12)
    ratio = np.clip(ratio, 0.0, 0.999)
    return -np.log1p(-ratio) / ts_s
