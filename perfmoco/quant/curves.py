"""Pixel-wise Fermi MBF of curves already converted to [Gd] (``perfmoco quantify``)."""

from __future__ import annotations

import numpy as np

from perfmoco.config import check_interpolation
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.pixels import cavity_of, core_pixels, distance_to
from perfmoco.quant.resolution import half_up, interpolation_factor

__all__ = ["quantify_curves"]


#: Time steps accepted (s): finer is a unit slip (ms) and would make the fit's delay
#: grid and convolution huge; coarser cannot sample a first pass.
DT_RANGE_S = (0.05, 10.0)
#: The AIF's rise from its first three frames to its peak, as a share of the peak, below
#: which it holds no bolus to deconvolve.
MIN_AIF_RISE = 0.2
#: The AIF's peak (mmol/l) outside which the curves are not [Gd] in mmol/l: a first-pass
#: blood peak is about 2-20 mmol/l (0.025-0.1 mmol/kg); mol/l, or signal, lies outside.
AIF_PEAK_RANGE_GD = (0.05, 200.0)


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
        For wrong shapes, empty, complex or NaN/Inf curves, a mask of other values
        than 0/1, a ``dt_s`` outside :data:`DT_RANGE_S`, an AIF without a bolus
        (:data:`MIN_AIF_RISE`), curves not in mmol/l (:data:`AIF_PEAK_RANGE_GD`) or a
        bad ``hematocrit``.
    """
    if np.iscomplexobj(tissue_gd) or np.iscomplexobj(aif_gd):
        raise ValueError("tissue_gd and aif_gd must be real [Gd] in mmol/l, got complex values")
    tis = np.asarray(tissue_gd, np.float64)
    aif = np.asarray(aif_gd, np.float64)
    if aif.ndim == 2 and 1 in aif.shape:  # a column or row vector
        aif = aif.ravel()
    if tis.ndim != 3:
        raise ValueError(f"tissue_gd must be (T, Y, X), got shape {tis.shape}")
    if aif.shape != (tis.shape[0],):
        hint = ("; tissue_gd looks like (Y, X, T): store it as (T, Y, X), e.g. "
                "numpy.moveaxis(a, -1, 0)") if aif.shape == (tis.shape[2],) else ""
        raise ValueError(f"aif_gd must be ({tis.shape[0]},) to match tissue_gd's "
                         f"{tis.shape[0]} frames, got {aif.shape}{hint}")
    if tis.size == 0:
        raise ValueError(f"tissue_gd holds no data (shape {tis.shape})")
    m = np.ones(tis.shape[1:], bool) if mask is None else _bool_mask(mask)
    if m.shape != tis.shape[1:]:
        raise ValueError(f"mask must be {tis.shape[1:]}, got {m.shape}")
    if not m.any():
        raise ValueError("mask selects no pixel")
    if not np.isfinite(aif).all():
        raise ValueError("aif_gd must not contain NaN or Inf")
    if not np.isfinite(tis[:, m]).all():  # outside the mask they do not matter
        raise ValueError("tissue_gd must not contain NaN or Inf in the pixels fitted")
    if hematocrit is not None:
        if not 0.0 <= float(hematocrit) < 0.9:
            raise ValueError(f"hematocrit must be in [0, 0.9), got {hematocrit}")
        aif = aif / (1.0 - float(hematocrit))
    if float(aif.max()) <= 0:
        raise ValueError("aif_gd has no positive values (flat AIF)")
    lo, hi = AIF_PEAK_RANGE_GD
    a_max, t_max = float(aif.max()), float(np.abs(tis[:, m]).max())
    if not lo <= a_max <= hi or t_max > hi:
        raise ValueError(f"aif_gd peaks at {a_max:.3g} and tissue_gd at {t_max:.3g}: not [Gd] "
                         f"in mmol/l (an AIF peaks at {lo:g}-{hi:g}, tissue below it)")
    if float(aif.max() - np.median(aif[:3])) < MIN_AIF_RISE * float(aif.max()):
        raise ValueError(f"aif_gd does not rise from its first frames (median "
                         f"{np.median(aif[:3]):.3g}, peak {aif.max():.3g} mmol/l): no contrast "
                         f"bolus, or the curve starts after its arrival")
    lo, hi = DT_RANGE_S
    if not lo <= float(dt_s) <= hi:
        raise ValueError(f"dt_s {dt_s!r} s: expected the curves' time step, {lo}-{hi} s (one "
                         f"frame per heartbeat is about 0.3-2 s)")
    if int(rim_px) < 1:
        raise ValueError(f"rim_px must be >= 1, got {rim_px}")
    f_px = check_interpolation(interpolation)
    _check_baselines(tis[:, m].mean(axis=1), aif)
    if f_px == 0:
        f_px = interpolation_factor(tis)
    out = np.zeros(m.shape, np.float32)
    if m.any():  # one group: delay from the mean curve, pixels within +-0.3 s of it
        curves = tis[:, m].T
        cavity = cavity_of(m)
        rim = (distance_to(cavity) <= half_up(int(rim_px) * f_px))[m]
        core = core_pixels(m, cavity, np.zeros(m.shape, int), f_px)[m]
        near = bool(spillover and rim.any())  # a ring: its cavity's blood
        one = np.zeros(len(curves), int)  # (near: the delay, then the group with its blood)
        fit, _, _ = fit_fermi_grouped(curves, aif, groups=one, delay_groups=one if near else None,
                                      dt_s=dt_s,
                                      density=density, core=core, denoise=denoise,
                                      spillover=rim if near else False, group_blood=near)
        out[m] = np.where(fit.ok, fit.mbf, np.nan)
    return out


#: The largest pre-contrast level a [Gd] curve may start at, as a share of its peak:
#: [Gd] is a change from the pre-contrast state (0 there, up to its noise).
MAX_BASELINE_SHARE = 0.1


def _check_baselines(tissue_mean: np.ndarray, aif: np.ndarray) -> None:
    """Refuse curves that do not start at 0 (their pre-contrast level kept): the fit
    would read the offset as flow (tissue +0.3 mmol/l read 4.8 for 3.2 ml/min/g).
    """
    for name, curve in (("aif_gd", aif), ("tissue_gd", tissue_mean)):
        base, peak = float(np.median(curve[:3])), float(np.max(curve))
        if peak > 0 and abs(base) > MAX_BASELINE_SHARE * peak:
            what = "the mean of the pixels fitted" if name == "tissue_gd" else "the AIF"
            raise ValueError(f"{name}: {what} starts at {base:.3g} mmol/l against a peak of "
                             f"{peak:.3g}: [Gd] curves start at 0 before the contrast arrives "
                             f"(subtract each curve's pre-contrast mean)")


def _bool_mask(mask) -> np.ndarray:
    """``mask`` as bool: True/False, or numbers that are all 0 or 1 (not NaN, not 0.5)."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    if not (np.issubdtype(m.dtype, np.number) and not np.iscomplexobj(m)
            and np.isin(m, (0, 1)).all()):
        raise ValueError("mask must hold True/False or 0/1 only (no NaN or other values)")
    return m.astype(bool)
