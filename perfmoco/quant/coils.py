"""The surface coil's profile measured from a slice's aligned pre-contrast frames.

Why: after motion correction a pixel's dynamics were acquired at different
places under a fixed surface-coil profile, so its ``M0`` must follow the
profile frame by frame (:func:`perfmoco.quant.signal.coil_motion_factors`).
The profile fitted to the PD frames' ``log PD`` reads the tissues' own PD
contrast (blood, liver, chest wall, lung edges) as coil.  That matters most
for the AIF: a breathing-correlated error of 1-2 % in its blood signal shifts
its upslope and every MBF of the study.  Noise-free breathing phantoms with
the exact (cubic) correction, slices' median segment error: 12780 a -0.41 /
-0.32 / -0.16 ml/min/g and 12702 a -0.04 / +0.57 / 0.00 with the PD-fit
profile; with the phantom's true coil factors for the AIF -0.12 / -0.09 /
+0.06 (those for the high-resolution slices alone changed nothing).

Before the bolus a corrected pixel's blood is the same in every frame; what
changes is where it was acquired.  So ``log S_t(q) - mean_t log S_t(q)`` is the
profile's log at ``q + d_t(q)`` less its mean over the frames: linear in the
profile's polynomial coefficients, whatever the tissue's PD or T1.  The pool's
pre-contrast frames are fitted so (rows weighted by the signal:
``var log S ~ (sigma / S)^2``), their uncertainty taken from the frames
themselves (leave one out), and combined with the PD fit (:data:`PRIOR_SD`)
as a posterior: dark pre-contrast blood (TS 25 ms) leaves the measurement noisy,
and directions the breathing did not explore keep the PD fit.  Anything else that
changes the pool's pre-contrast signal in step with the breathing (inflow, a
receiver gain) is read as coil too.

Measured (segment error, median over the studies' segments, ml/min/g): the
noise-free cases above -0.13 / -0.05 / +0.17 and +0.08 / -0.04 / 0.00; after the
DL correction (noisy; with the delay from the core's interior,
:func:`perfmoco.quant.pixels.delay_core`), PD fit -> measured: 14 studies
12680-12787 (among them the two worst of the last sessions) 0.277 -> 0.233
(12702 a 0.36 -> 0.16, 12780 a 0.52 -> 0.30; the true coil factors 0.256: the
frames also take out what residual motion modulates in the pool), fresh
12790-12799 0.175 -> 0.174, held out of every choice here 12800-12807 0.176 ->
0.159 (12802 a 0.63 -> 0.43; no study worse by more than 0.03).  Its cost: with
the exact correction on noisy seeds 0-5 (cubic warps), where the PD fit was right,
0.156 -> 0.166.  On the high-resolution slices (myocardium and LV pool) the same
measurement is used only where their heart lies near the image's edge
(:func:`tissue_baseline`): where the PD fit stands it was not adopted, 0.244 -> 0.221
after the DL correction (an earlier form), but 12702 a's mid slice +0.57 -> +1.17
with the exact correction, noise-free.  Away from the edge the high-resolution slices
now measure it from more frames, before the bolus and after the first pass, with each
frame's residual motion a nuisance (:mod:`perfmoco.quant.coil_frames`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from perfmoco.quant.resolution import half_up

__all__ = ["MIN_BASELINE_FRAMES", "MIN_PIXELS", "MIN_SPREAD_PX", "PRIOR_SD",
           "PreContrastFrames", "baseline_coefficients", "measured_rows", "posterior",
           "tissue_baseline",
           "unflagged"]

#: Pre-contrast frames needed (fewer: the PD-frame fit alone).
MIN_BASELINE_FRAMES = 3
#: Displacement spread (pixels, SD over the frames, median over the pixels) the
#: pre-contrast frames must show; less: they cannot tell a profile.
MIN_SPREAD_PX = 0.3
#: Pixels needed.
MIN_PIXELS = 30
#: How far the PD-frame fit's coefficients may be off (log sensitivity per fitting
#: radius, i.e. per 100 mm): the spread of the prior the frames' measurement is
#: combined with.
PRIOR_SD = 0.3



class PreContrastFrames(NamedTuple):
    """Aligned pre-contrast frames that measure a coil profile (:func:`baseline_coefficients`).

    :func:`perfmoco.quant.signal.coil_motion_factors` asks any measurement of the
    profile for its ``coefficients`` (these frames, or a slice's slow frames:
    :class:`perfmoco.quant.coil_frames.SlowFrames`).
    """

    frames: np.ndarray  #: (n, Y, X)
    displacement: np.ndarray  #: (n, 2, Y, X), pixels
    region: np.ndarray  #: (Y, X), bool

    def coefficients(self, *, terms, prior):
        """:func:`baseline_coefficients` of these frames."""
        return baseline_coefficients(self.frames, self.displacement, region=self.region,
                                     terms=terms, prior=prior)

def baseline_coefficients(frames, displacement, *, region, terms, prior):
    """Log-profile coefficients from aligned pre-contrast frames.

    Parameters
    ----------
    frames : ndarray, shape (n, Y, X)
        Motion-corrected pre-contrast frames.
    displacement : ndarray, shape (n, 2, Y, X), pixels
        Their pull-back displacement (where each corrected pixel was acquired).
    region : ndarray, shape (Y, X), bool, keyword-only
        Pixels whose tissue is the same in every frame and aligned.
    terms : callable, keyword-only
        ``terms(y, x)`` -> ``(..., K)`` polynomial terms (constant first) of
        positions in pixels.
    prior : ndarray, shape (K,), keyword-only
        The PD-frame fit's coefficients.

    Returns
    -------
    ndarray, shape (K,) or None
        The coefficients (the constant the prior's: it cancels), or None where
        too few frames, pixels or too little motion.

    Raises
    ------
    ValueError
        Frames, displacement and region that do not match.
    """
    f = np.asarray(frames, np.float64)
    d = np.asarray(displacement, np.float64)
    m = np.asarray(region, bool)
    if f.ndim != 3 or d.shape != (f.shape[0], 2, *f.shape[1:]) or m.shape != f.shape[1:]:
        raise ValueError(f"frames (n, Y, X), displacement (n, 2, Y, X) and region (Y, X) "
                         f"expected, got {f.shape}, {d.shape} and {m.shape}")
    if f.shape[0] < MIN_BASELINE_FRAMES:
        return None
    rows = measured_rows(f, d, m, terms)
    if rows is None:
        return None
    y, t, w, _ = rows
    try:
        ata, atb = _normal_equations(y, t, w)
        # the noise's scale from the frames themselves (leave one out): image noise is
        # correlated between neighbouring pixels (reconstruction, each resampling), so
        # the residuals' spread would understate it; cov(c) ~ s2 (A'A)^-1
        n = y.shape[0]
        jack = np.array([_least_squares(*_normal_equations(np.delete(y, i, 0),
                                                           np.delete(t, i, 0), w))
                         for i in range(n)])
        return posterior(ata, atb, jack, prior)
    except np.linalg.LinAlgError:
        return None


def measured_rows(frames, displacement, region, terms):
    """What the frames measure the profile from, or None (fewer than :data:`MIN_PIXELS`
    usable pixels, or a displacement spread under :data:`MIN_SPREAD_PX`).

    Returns ``(log S (n, N), terms (n, N, K - 1) at the pixels' acquired positions (the
    constant cancels), weights (N,), usable pixels of the region (its pixel count,))``;
    rows are weighted by the signal, as ``var log S ~ 1 / S^2``.
    """
    s, d = frames[:, region], displacement[:, :, region]  # (n, N), (n, 2, N)
    ok = ((s > 0) & np.isfinite(s) & np.isfinite(d).all(axis=1)).all(axis=0)
    if int(ok.sum()) < MIN_PIXELS:
        return None
    s, dy, dx = s[:, ok], d[:, 0, ok], d[:, 1, ok]
    if float(np.median(np.hypot(dy.std(axis=0), dx.std(axis=0)))) < MIN_SPREAD_PX:
        return None
    yy, xx = (v[ok].astype(np.float64) for v in np.nonzero(region))
    t = terms(yy[None] + dy, xx[None] + dx)[..., 1:]
    return np.log(s), t, s.mean(axis=0), ok


def posterior(ata, atb, jack, prior):
    """The measurement combined with the PD fit (``prior``, :data:`PRIOR_SD` off) as a
    posterior: where the motion did not explore a direction the data say nothing and
    the PD fit stands.  ``jack``: the estimates with frames (or groups of them) left out
    in turn, whose spread gives the noise's scale, ``cov(c) ~ s2 (A'A)^-1``.  The
    coefficients with the prior's constant (it cancels), or None where not finite.
    """
    k = len(jack)
    dev = jack - jack.mean(axis=0)
    s2 = (k - 1) / k * float(np.trace(dev.T @ dev @ ata)) / ata.shape[0]
    p = np.asarray(prior, np.float64)
    prec = ata / max(s2, 1e-300) + np.eye(ata.shape[0]) / PRIOR_SD**2
    c = np.linalg.solve(prec, atb / max(s2, 1e-300) + p[1:] / PRIOR_SD**2)
    return np.r_[p[0], c] if np.isfinite(c).all() else None


def _normal_equations(y, t, w):
    """``A'A`` and ``A'b`` of the frames' demeaned ``log S`` ``(n, N)`` on the demeaned
    terms ``(n, N, K)``, pixel rows scaled by ``w`` ``(N,)``.
    """
    y = (y - y.mean(axis=0)) * w
    t = (t - t.mean(axis=0)) * w[:, None]
    a, b = t.reshape(-1, t.shape[-1]), y.reshape(-1)
    return a.T @ a, a.T @ b


def _least_squares(ata, atb):
    """The normal equations' solution (a whisker of ridge where a direction is unseen)."""
    return np.linalg.solve(ata + 1e-9 * np.trace(ata) * np.eye(ata.shape[0]), atb)


def tissue_baseline(images, displacement, *, myo, lv_core, rv, n_frames: int, scale: float = 1.0,
                    qc=None):
    """A high-resolution slice's ``edge_baseline`` for :func:`.signal.coil_motion_factors`.

    Only where its heart lies near the image's edge: there the PD frames' fit is
    one-sided, and the factors used to be left at 1 (M0 not following the breathing
    at all); the frames before the LV's bolus now measure the profile, that fit only
    their prior.  Away from the edge: :func:`perfmoco.quant.coil_frames.slow_frames`
    (these frames alone were not adopted there, module doc).  Tight fields of view
    (``bench_robustness.py --variants corner``), mean of the studies' segment errors,
    factors at 1 -> measured: 12851-12868 (18 studies, where the choices were made)
    0.247 -> 0.188 (about a flat prior instead of the one-sided fit 0.208; the AIF's
    measurement alone 0.225); held out
    12900-12905 0.245 -> 0.195, 5 of 6 studies better, 12902 a 0.36 -> 0.61 (its mean
    curve blood-like either way, every segment flagged unreliable).

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
        The corrected dynamics.
    displacement : ndarray, shape (T, 2, Y, X)
        Their pull-back displacement, pixels.
    myo, lv_core, rv : ndarray, shape (Y, X), bool, keyword-only
        The slice's myocardium, LV pool core and RV pool.
    n_frames : int, keyword-only
        Frames before the LV's bolus.
    scale : float, keyword-only
        Display pixels per acquired pixel (zero-filled images: 2).
    qc : ndarray, shape (T,), bool, keyword-only, optional
        Frames flagged by motion QC: left out.

    Returns
    -------
    PreContrastFrames
        ``(frames (n, Y, X), displacement (n, 2, Y, X), region (Y, X))``: the
        myocardium and LV pool core eroded by one acquired pixel (their outer
        edge, and the core's rim and holes at the endocardium), away from the RV
        (whose bolus comes first) by two.
    """
    pre = unflagged(n_frames, qc, images.shape[0])
    k = max(1, half_up(scale))
    region = ndimage.binary_erosion(np.asarray(myo, bool) | np.asarray(lv_core, bool),
                                    iterations=k)
    region &= ~ndimage.binary_dilation(np.asarray(rv, bool), iterations=2 * k)
    return PreContrastFrames(images[pre], np.asarray(displacement)[pre], region)


def unflagged(n_frames: int, qc, n_total: int) -> np.ndarray:
    """Indices of the first ``n_frames`` frames (at most ``n_total``) that motion QC
    did not flag (``qc``: ``(n_total,)`` bool, or None; another shape is ignored).
    """
    pre = np.arange(max(0, min(int(n_frames), n_total)))
    if qc is not None and np.shape(qc) == (n_total,):
        pre = pre[~np.asarray(qc, bool)[pre]]
    return pre
