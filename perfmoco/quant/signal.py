"""Signal to [Gd]: PD surface-coil correction and saturation-recovery inversion.

The dynamics follow ``S = M0 (1 - eta exp(-TS R1))`` with
``R1 = 1/T1 + r [Gd]`` (:mod:`perfmoco.quant.model`).  ``M0`` comes from the
proton-density (PD) frames, which carry the same surface-coil shading as
the dynamics, so the coil correction and the signal model are one step:
``R1 = -ln(1 - S / M0) / TS``.  An imperfect saturation (``eta < 1``) only
adds the constant ``ln(1/eta) / TS`` to ``R1``, which cancels exactly when the
pre-contrast baseline ``R1`` is subtracted:
``[Gd](t) = (R1(t) - mean R1(baseline)) / r``.  The native T1 is therefore
needed only without PD frames (:func:`baseline_m0`), and with it ``eta``.

PD frames of a different readout (e.g. a lower flip angle) are proportional
to ``M0``: ``M0 = pd_scale * PD``.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from perfmoco.quant.model import signal_to_r1
from perfmoco.quant.resolution import half_up

__all__ = [
    "baseline_m0",
    "baseline_q",
    "bolus_arrival_index",
    "coil_motion_factors",
    "heart_near_edge",
    "m0_map",
    "pools_and_edges",
    "pre_contrast_frames",
    "saturation_efficiency",
    "signal_to_gd",
]

log = logging.getLogger(__name__)


def m0_map(pd_images, *, mask=None, sigma_px: float = 1.0, pd_scale: float = 1.0) -> np.ndarray:
    """Per-pixel ``M0`` from the PD frames, smoothed without mixing tissues.

    Parameters
    ----------
    pd_images : ndarray, shape (P, Y, X), float
        PD frames (``P >= 1``), motion-corrected like the dynamics.
    mask : ndarray, shape (Y, X), bool, keyword-only, optional
        Smooth only within this region (normalised convolution), e.g. the
        myocardium, so that blood or lung do not leak into the tissue ``M0``;
        pixels outside keep their unsmoothed value.
    sigma_px : float, keyword-only
        Gaussian SD of the smoothing, pixels (0 = none).
    pd_scale : float, keyword-only
        ``M0 / PD`` ratio of the two readouts (1 when they share flip angle
        and timing).

    Returns
    -------
    ndarray, shape (Y, X), float64
        ``M0`` in the intensity units of the dynamics.
    """
    pd = np.asarray(pd_images, dtype=np.float64)
    if pd.ndim != 3 or pd.shape[0] < 1:
        raise ValueError(f"pd_images must be (P, Y, X) with P >= 1, got shape {pd.shape}")
    if not (np.isfinite(pd_scale) and pd_scale > 0):
        raise ValueError(f"pd_scale must be positive, got {pd_scale!r}")
    m0 = (np.median(pd, axis=0) if pd.shape[0] >= 3 else pd.mean(axis=0)) * pd_scale
    if sigma_px <= 0:
        return m0
    if mask is None:
        return ndimage.gaussian_filter(m0, sigma_px)
    mk = np.asarray(mask, dtype=bool)
    if mk.shape != m0.shape:
        raise ValueError(f"mask {mk.shape} must match the PD frames {m0.shape}")
    num = ndimage.gaussian_filter(np.where(mk, m0, 0.0), sigma_px)
    den = ndimage.gaussian_filter(mk.astype(np.float64), sigma_px)
    return np.where(mk & (den > 1e-6), num / np.maximum(den, 1e-6), m0)


def baseline_m0(baseline_signal, *, ts_s: float, t1_s: float,
                efficiency: float = 1.0) -> np.ndarray:
    """``M0`` without PD frames: ``S0 / (1 - eta exp(-TS / T1))``.

    Parameters
    ----------
    baseline_signal : ndarray, any shape
        Mean pre-contrast signal.
    ts_s, t1_s : float, keyword-only
        Saturation time and native T1, s.
    efficiency : float, keyword-only
        The sequence's effective saturation efficiency ``eta`` (1: ideal).  With
        PD frames it cancels (module docstring); here it does not: at the AIF
        slice's short TS the baseline is mostly what the saturation left, and an
        ideal-saturation ``M0`` from it is several times too large
        (:func:`saturation_efficiency` measures ``eta`` on a study with PD frames).

    Returns
    -------
    ndarray, same shape, float64
        ``M0``; biased when ``efficiency`` or ``t1_s`` is not the sequence's and tissue's.
    """
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    return np.asarray(baseline_signal, np.float64) / (1.0 - efficiency * np.exp(-ts_s / t1_s))


def saturation_efficiency(baseline_signal, m0, *, ts_s: float, t1_s: float) -> float:
    """Effective saturation efficiency ``eta`` from a pre-contrast signal and its ``M0``.

    Inverts ``S0 = M0 (1 - eta exp(-TS / T1))`` for a tissue of known native T1 (the
    means over its pixels), e.g. to set ``quant.saturation_efficiency_*`` for a
    protocol that has no PD frames from one study of it that has them.

    Returns
    -------
    float
        ``eta``; NaN where ``M0`` is not positive.
    """
    s0, m = float(np.mean(baseline_signal)), float(np.mean(m0))
    if not (m > 0 and np.isfinite(s0)):
        return float("nan")
    return (1.0 - s0 / m) / float(np.exp(-ts_s / t1_s))


def bolus_arrival_index(curve, *, min_baseline: int = 2) -> int:
    """First dynamic of the bolus in a blood signal or [Gd] curve.

    The baseline level and noise come from the frames before the steepest
    rise; arrival is the last frame before the curve leaves the baseline by
    more than ``max(4 SD, 5 % of the peak enhancement)``.

    Parameters
    ----------
    curve : ndarray, shape (T,)
        Blood curve (any units).
    min_baseline : int, keyword-only
        Fewest baseline frames returned (the result is at least this).

    Returns
    -------
    int
        Number of pre-contrast frames (index of the first frame of the rise).
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size < min_baseline + 3:
        raise ValueError(f"curve must be (T,) with T >= {min_baseline + 3}, got {c.shape}")
    peak = int(np.argmax(c))
    if peak <= min_baseline:
        return min_baseline
    steep = int(np.argmax(np.diff(c[: peak + 1])))  # rise between steep and steep + 1
    pre = c[: max(steep, min_baseline)]
    level = float(np.median(pre))
    sd = 1.4826 * float(np.median(np.abs(pre - level))) if pre.size > 2 else 0.0
    thr = level + max(4.0 * sd, 0.05 * (c[peak] - level))
    above = np.flatnonzero(c[: peak + 1] > thr)
    first = int(above[0]) if above.size else peak
    return int(np.clip(first, min_baseline, peak))


#: Frames kept off the bolus's foot at the end of the baseline.
BASELINE_MARGIN = 1


def pre_contrast_frames(curve, *, margin: int = BASELINE_MARGIN, min_baseline: int = 2) -> int:
    """Frames to take as the pre-contrast baseline: those before the bolus, less ``margin``.

    :func:`bolus_arrival_index` finds the first frame clearly above the baseline
    (4 SD or 5 % of the peak); the frame before it may already hold a few % of
    the bolus (on noise-free phantoms the AIF's held 0.1-0.16 mmol/l, and taking
    it into the baseline read the AIF's tail 1-2 % low and MBF as much high).

    Parameters
    ----------
    curve : ndarray, shape (T,)
        Blood curve (any units).
    margin : int, keyword-only
        Frames left out before the arrival.
    min_baseline : int, keyword-only
        Fewest frames returned.

    Returns
    -------
    int
    """
    arrival = bolus_arrival_index(curve, min_baseline=min_baseline)
    return int(max(min_baseline, arrival - int(margin)))


def signal_to_gd(
    images,
    *,
    m0,
    ts_s: float,
    relaxivity: float,
    baseline: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert saturation-recovery signal to [Gd] with a pre-contrast baseline.

    Parameters
    ----------
    images : ndarray, shape (T, ...), float
        Dynamics (pixels or ROI means), in the units of ``m0``.
    m0 : ndarray, shape (...) (broadcast against one frame), keyword-only
        Equilibrium magnetisation, e.g. from :func:`m0_map`.
    ts_s : float, keyword-only
        Saturation time, s.
    relaxivity : float, keyword-only
        l/(mmol s).
    baseline : int or ndarray of int, shape (...), keyword-only
        Number of pre-contrast frames at the start (>= 1), for all pixels or
        per pixel.

    Returns
    -------
    gd : ndarray, shape (T, ...), float64, mmol/l
    saturated : ndarray, shape (...), bool
        True where ``S / M0`` reached 1 in some frame (the inversion was
        clipped; the values there are unreliable).
    """
    s = np.asarray(images, dtype=np.float64)
    m = np.asarray(m0, dtype=np.float64)
    if s.ndim < 1 or s.shape[0] < 2:
        raise ValueError(f"images must be (T, ...) with T >= 2, got shape {s.shape}")
    if not (ts_s > 0 and relaxivity > 0):
        raise ValueError(f"ts_s and relaxivity must be positive, got {ts_s}, {relaxivity}")
    ratio = s / np.where(m > 0, m, np.nan)
    saturated = ~np.all(np.isfinite(ratio) & (ratio < 0.999), axis=0)
    r1 = signal_to_r1(s, ts_s=ts_s, m0=np.where(m > 0, m, 1e-12))
    gd = (r1 - _baseline_mean(r1, baseline)) / relaxivity
    return gd, saturated


def _baseline_mean(values, baseline) -> np.ndarray:
    """Mean of ``values`` (T, ...) over each pixel's first ``baseline`` frames (int or array)."""
    n = np.broadcast_to(np.asarray(baseline), values.shape[1:])
    if n.size and not (n.min() >= 1 and n.max() < values.shape[0]):
        raise ValueError(f"baseline must be 1..{values.shape[0] - 1} frames, got {baseline}")
    if n.ndim == 0:
        return values[: int(n)].mean(axis=0)
    use = np.arange(values.shape[0]).reshape((-1,) + (1,) * n.ndim) < n
    return (values * use).sum(axis=0) / use.sum(axis=0)


def baseline_q(signal, m0, baseline) -> np.ndarray:
    """``1 - S / M0`` of each pixel's baseline (geometric mean, as :func:`signal_to_gd`
    takes the baseline).

    Parameters
    ----------
    signal : ndarray, shape (T, ...)
    m0 : ndarray, shape (...) or (T, ...)
    baseline : int or ndarray of int, shape (...)
        Pre-contrast frames (per pixel).

    Returns
    -------
    ndarray, shape (...)
    """
    s = np.asarray(signal, np.float64)
    m = np.asarray(m0, np.float64)
    return np.exp(-_baseline_mean(signal_to_r1(s, ts_s=1.0, m0=np.where(m > 0, m, 1e-12)),
                                  baseline))


def _poly_terms(u, v, degree):
    return np.stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)], -1)


def pools_and_edges(pools, scale: float = 1.0) -> np.ndarray:
    """Blood-pool pixels and their partial-volume edge (2 acquired pixels), for ``exclude``."""
    mask = np.asarray(pools, bool)
    reach = max(half_up(2 * scale), 1)
    return ndimage.binary_dilation(mask, iterations=reach) if mask.any() else mask


#: :func:`coil_motion_factors` gives up where the part of its fitting disc inside the
#: image is centred further than this share of the disc's radius from the heart.
MAX_COIL_OFFSET = 0.15


#: Radius (mm) of :func:`coil_motion_factors`' fitting disc about the heart.
COIL_RADIUS_MM = 100.0


def _disc(shape, centre, spacing_mm, radius_mm: float):
    """The fitting disc's coordinates ``u, v`` (in radii about ``centre``) and the disc."""
    sy, sx = spacing_mm[0] / radius_mm, spacing_mm[1] / radius_mm
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    u, v = (yy - centre[0]) * sy, (xx - centre[1]) * sx
    return u, v, np.hypot(u, v) < 1.0


def heart_near_edge(shape, centre, spacing_mm, radius_mm: float = COIL_RADIUS_MM) -> bool:
    """Whether :func:`coil_motion_factors` (same ``radius_mm``) sees the heart of an image of
    ``shape`` near its edge, and so takes its ``edge_baseline``: for a caller that builds
    only the measurement that will be used.
    """
    return _off_centre(*_disc(shape, centre, spacing_mm, radius_mm))


def _off_centre(u, v, region) -> bool:
    """Whether the image cuts :func:`coil_motion_factors`' fitting disc off-centre.

    A fit of the PD frames from one side of the heart (the image's edge near it: a
    tight field of view) extrapolates onto the other: fresh 11240-11247 a/b cut
    10 mm from the heart (the disc's part in the image 0.23-0.36 of its radius off
    the heart), segment error with the exact correction 0.38 with such factors,
    0.30 without them.  True where the disc's part inside the image is centred
    further than :data:`MAX_COIL_OFFSET` of its radius from ``centre``.
    """
    return bool(not region.any() or np.hypot(u[region].mean(), v[region].mean())
                > MAX_COIL_OFFSET)


def coil_motion_factors(pd_images, displacement, *, pixels, centre, spacing_mm,
                        pd_displacement=None, radius_mm: float = COIL_RADIUS_MM, degree: int = 2,
                        exclude=None, skipped: list[str] | None = None, baseline=None,
                        edge_baseline=None):
    """Change of the surface-coil sensitivity seen by motion-corrected pixels, per frame.

    The coil sensitivity stays put while the heart moves, so after motion
    correction a pixel's dynamics and its (corrected) PD value were seen at
    different coil positions.  The sensitivity is modelled as a smooth
    low-order polynomial of ``log PD`` around the heart (body pixels only,
    lung and air excluded, and ``exclude``: the blood pools, whose PD stands
    20-40 % above the wall's right where the gradient matters, so that the
    fit read part of that contrast as coil); a corrected pixel ``q`` of frame
    ``t`` was acquired at ``q + d_t(q)``, its PD at ``q + d_pd(q)``, so its factor is
    ``P(q + d_t) - P(q + d_pd)`` in the profile's log ``P``, taken in the scanner's
    coordinates: the PD fit's pixels placed where they were acquired, as the frames'
    measurement (``baseline``) places its own.  It was ``P(q + d_t - d_pd) - P(q)``:
    right for a log-linear profile, or for a PD fit alone, but with a measured profile
    off by the curvature's cross term.  With the exact correction (fresh 13131 a, 13126 b)
    the factors' per-frame error against the phantom's true coil went 0.6-1.9 % -> 0.2-1.2
    % and the segment error 0.29 -> 0.20, 0.30 -> 0.24 ml/min/g (13126 b started late,
    1.05 -> 0.26); docs/quantification.md (twenty-eighth session).

    Parameters
    ----------
    pd_images : ndarray, shape (P, Y, X)
        Motion-corrected PD frames.
    displacement : ndarray, shape (T, 2, Y, X), pixels
        Pull-back displacement of the dynamics (DESIGN.md convention).
    pixels : ndarray, shape (Y, X), bool, keyword-only
        Pixels for which the factors are wanted.
    centre : tuple of 2 float, keyword-only
        ``(y, x)`` of the heart, pixels.
    spacing_mm : tuple of 2 float, keyword-only
    pd_displacement : ndarray, shape (P, 2, Y, X), keyword-only, optional
        Displacement of the PD frames (default none).
    radius_mm : float, keyword-only
        Radius of the fitting region around ``centre``.
    degree : int, keyword-only
        Polynomial degree.
    exclude : ndarray, shape (Y, X), bool, keyword-only, optional
        Pixels left out of the fit (e.g. the blood pools and their edges).
    skipped : list of str, keyword-only, optional
        Where the factors are left at 1, the reason is appended here (for the
        study's messages).
    baseline : PreContrastFrames or SlowFrames, keyword-only, optional
        A measurement of the profile, asked for its ``coefficients``: the corrected
        pre-contrast frames ``(n, Y, X)``, their displacement ``(n, 2, Y, X)`` and the
        pixels whose tissue they show aligned and unchanged ``(Y, X)``
        (:class:`perfmoco.quant.coils.PreContrastFrames`); the profile is then
        measured from them as well (:func:`perfmoco.quant.coils.baseline_coefficients`:
        combined with the PD frames' fit, their prior; with the heart near the
        image's edge (:data:`MAX_COIL_OFFSET`), where the factors are otherwise
        left at 1, the one-sided PD fit is only that prior).  Or a high-resolution
        slice's slow frames (:class:`perfmoco.quant.coil_frames.SlowFrames`: before
        the bolus and after the first pass, residual motion a nuisance).
    edge_baseline : PreContrastFrames, keyword-only, optional
        As ``baseline``, used instead of it with the heart near the image's edge
        (the high-resolution slices' pre-contrast tissue:
        :func:`perfmoco.quant.coils.tissue_baseline`).

    Returns
    -------
    ndarray, shape (T, N), float64
        Sensitivity at frame ``t`` over sensitivity at the PD frames, for the
        ``N`` selected pixels: multiply ``M0`` by it.  All ones where the
        fitting disc's part inside the image is centred off the heart (by
        more than :data:`MAX_COIL_OFFSET` of its radius: the heart near the
        image's edge) and no ``baseline`` measures the profile, or (away from
        the edge) too few body pixels are found.
    """
    pd = np.asarray(pd_images, np.float64).mean(axis=0)
    disp = np.asarray(displacement, np.float64)
    mask = np.asarray(pixels, bool)
    if disp.ndim != 4 or disp.shape[1:] != (2, *pd.shape) or mask.shape != pd.shape:
        raise ValueError(f"displacement (T, 2, {pd.shape}) and pixels {pd.shape} expected, "
                         f"got {disp.shape} and {mask.shape}")
    sy, sx = spacing_mm[0] / radius_mm, spacing_mm[1] / radius_mm
    u, v, region = _disc(pd.shape, centre, spacing_mm, radius_mm)
    edge = _off_centre(u, v, region)
    if edge and edge_baseline is not None:
        baseline = edge_baseline
    body = region & (pd > 0.3 * np.percentile(pd[region], 95)) if region.any() else region
    if exclude is not None:
        body &= ~np.asarray(exclude, bool)
    reason = None
    if edge:
        reason = "the heart lies near the image's edge (a fit from one side only would guess)"
    elif body.sum() < 20:
        reason = f"only {int(body.sum())} body pixels near the heart in the PD frames"

    def terms(y, x):
        return _poly_terms((y - centre[0]) * sy, (x - centre[1]) * sx, degree)

    d_pd = None if pd_displacement is None else np.asarray(pd_displacement, np.float64)

    def acquired(pick, d):  # the profile's terms where ``pick``'s pixels were acquired
        if d is None:
            return _poly_terms(u[pick], v[pick], degree)
        return _poly_terms(u[pick] + d[..., 0, :] * sy, v[pick] + d[..., 1, :] * sx, degree)

    coef = np.zeros(terms(0.0, 0.0).shape[-1])
    if body.sum() >= 20:  # the PD frames' mean, where it was acquired (as the frames')
        at = None if d_pd is None else d_pd.mean(axis=0)[:, body]
        coef, *_ = np.linalg.lstsq(acquired(body, at), np.log(pd[body]), rcond=None)
    if baseline is not None and (reason is None or edge):
        # at the edge the one-sided PD fit is only the prior of the frames' measurement
        measured = baseline.coefficients(terms=terms, prior=coef)
        if measured is not None:
            coef, reason = measured, None
        elif edge:
            reason += ", and its pre-contrast frames do not measure it"
    if reason is not None:
        if skipped is not None:  # the caller reports it with the study's messages
            skipped.append(reason)
        else:
            log.info("M0 does not follow the coil sensitivity through the motion: %s", reason)
        return np.ones((disp.shape[0], int(mask.sum())))
    # frame t's pixel q was seen at q + d_t(q), its M0 (the PD frames' mean) at q + d_pd(q)
    moved = acquired(mask, disp[:, :, mask]) @ coef  # (T, N)
    if d_pd is None:
        return np.exp(moved - acquired(mask, None) @ coef)
    base = np.log(np.exp(acquired(mask, d_pd[:, :, mask]) @ coef).mean(axis=0))
    return np.exp(moved - base)
